// The enricher example in JavaScript (ComponentizeJS), the same handler as
// the Rust `plugins/enrich` and `plugins/python-enrich`: for each message it
// asks the `lookup` subject (config, default `lookup`) with the payload and
// answers `<payload>+<the lookup's reply>` when the message asks for a
// reply. No responder, no answer in time or no connection: the message is
// retried; a subject `request_allow` does not grant: rejected.
//
// It exports `handler` only (world `plugin`): a request blocks the call
// either way, so batches would save little here.
//
// Build: `bash scripts/build-polyglot.sh js-enrich` (see docs/javascript.md).

import { request } from 'wasmgate:plugin/requester@0.1.5';
import { get } from 'wasmgate:plugin/config@0.1.5';

// `<wit-case>: <detail>`, the same text as the Rust SDK's.
function describeRequestError(error) {
  switch (error?.tag) {
    case 'no-responders':
    case 'timed-out':
      return error.tag;
    case 'invalid-subject':
    case 'invalid-header':
    case 'forbidden':
    case 'unavailable':
      return `${error.tag}: ${error.val}`;
    case 'payload-too-large':
      return `payload-too-large: max ${error.val} bytes`;
    default:
      return String(error);
  }
}

const RETRY = new Set(['no-responders', 'timed-out', 'unavailable']);

let lookup;
let timeoutMs;

function handle(msg) {
  lookup ??= get('lookup') ?? 'lookup';
  timeoutMs ??= Number(get('timeout_ms') ?? '1000');
  let answer;
  try {
    answer = request(lookup, msg.payload, [], timeoutMs);
  } catch (e) {
    if (e?.payload === undefined) throw e; // not a WIT error: a bug, let it trap
    // `payload` is the error variant.
    const error = e.payload;
    const reason = `request failed: ${describeRequestError(error)}`;
    throw { tag: RETRY.has(error?.tag) ? 'retry' : 'reject', val: reason };
  }
  const both = new Uint8Array(msg.payload.length + 1 + answer.payload.length);
  both.set(msg.payload, 0);
  both[msg.payload.length] = 0x2b; // '+'
  both.set(answer.payload, msg.payload.length + 1);
  return msg.replyTo !== undefined ? both : undefined;
}

export const handler = { handle };

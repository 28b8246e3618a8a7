// The uppercase example handler in JavaScript (ComponentizeJS).
//
// Upper-cases each payload (ASCII), publishes it to `<prefix>.<subject>`
// (`prefix` from the plugin's config, default `out`) with the incoming
// headers, and replies with the same bytes when the message has a reply-to
// subject. A publish the host refuses rejects the message
// (`publish failed: ...`). Same behaviour as the Rust `plugins/uppercase` and
// `plugins/python-uppercase`.
//
// Build: `bash scripts/build-polyglot.sh` (see docs/javascript.md).

import { log } from 'wasmgate:plugin/log@0.1.4';
import { enabled } from 'wasmgate:plugin/log-filter@0.1.4';
import { publish } from 'wasmgate:plugin/publisher@0.1.4';
import { get } from 'wasmgate:plugin/config@0.1.4';

// ASCII letters only, like Rust's to_ascii_uppercase and Python's bytes.upper().
function asciiUpper(bytes) {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    out[i] = b >= 0x61 && b <= 0x7a ? b - 0x20 : b;
  }
  return out;
}

// `<wit-case>: <detail>`, the same text as the Rust SDK's.
function describePublishError(error) {
  switch (error?.tag) {
    case 'invalid-subject':
    case 'forbidden':
    case 'unavailable':
      return `${error.tag}: ${error.val}`;
    case 'payload-too-large':
      return `payload-too-large: max ${error.val} bytes`;
    default:
      return String(error);
  }
}

// The `wasmgate:plugin/handler` export. Returning a value is `ok(...)`
// (`undefined` is `none`); throwing a plain `{ tag, val }` object is
// `err(handle-error)`. Throwing an `Error` traps.
// Asked once per instance: whether the gateway records `debug` lines, so
// that a line it would drop is never built (like the Rust SDK's macros).
let debugEnabled;

export const handler = {
  handle(msg) {
    debugEnabled ??= enabled('debug');
    const prefix = get('prefix') ?? 'out';
    const upper = asciiUpper(msg.payload);
    const target = `${prefix}.${msg.subject}`;
    if (debugEnabled) {
      log('debug', `${msg.subject} -> ${target} (${upper.length} bytes)`);
    }
    try {
      publish(target, upper, msg.headers);
    } catch (e) {
      if (e?.payload === undefined) throw e; // not a WIT error: a bug, let it trap
      // An imported function's WIT error arrives as an exception whose
      // `payload` is the error variant.
      throw { tag: 'reject', val: `publish failed: ${describePublishError(e.payload)}` };
    }
    return msg.replyTo !== undefined ? upper : undefined;
  },
};

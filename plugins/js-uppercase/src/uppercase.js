// The uppercase example handler in JavaScript (ComponentizeJS).
//
// Upper-cases each payload (ASCII), publishes it to `<prefix>.<subject>`
// (`prefix` from the plugin's config, default `out`) with the incoming
// headers, and replies with the same bytes when the message has a reply-to
// subject. A publish the host refuses rejects the message
// (`publish failed: ...`). Same behaviour as the Rust `plugins/uppercase` and
// `plugins/python-uppercase`.
//
// It exports `batch-handler` too (world `batch-plugin`): the gateway hands
// it up to 128 messages per call, and the batch helper below runs `handle`
// for each, so a message pays for one crossing into the engine per batch,
// not one each. The helper is self-contained: copy it into your handler
// (componentize-js takes one module).
//
// Build: `bash scripts/build-polyglot.sh` (see docs/javascript.md).

import { log } from 'wasmgate:plugin/log@0.1.5';
import { enabled } from 'wasmgate:plugin/log-filter@0.1.5';
import { publish as publishNow } from 'wasmgate:plugin/publisher@0.1.5';
import { get } from 'wasmgate:plugin/config@0.1.5';

// ASCII letters only, like Rust's to_ascii_uppercase and Python's bytes.upper().
// Text that is all ASCII goes through the engine's own string functions: a
// loop over the bytes runs in the interpreter at ~200 ns a byte (measured:
// 26 of the 50 µs this handler took per 128-byte message).
const ALL_ASCII = /^[\x00-\x7f]*$/;
const asText = new TextDecoder('utf-8', { ignoreBOM: true });
const asBytes = new TextEncoder();
function asciiUpper(bytes) {
  const text = asText.decode(bytes);
  if (text.length === bytes.length && ALL_ASCII.test(text)) {
    return asBytes.encode(text.toUpperCase());
  }
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

// Asked once per instance: whether the gateway records `debug` lines, so
// that a line it would drop is never built (like the Rust SDK's macros),
// and the config (fixed for an instance's life: a changed config reloads
// the plugin, with new instances). Each import call costs a crossing.
let debugEnabled;
let prefix;

// The handler. Returning a value is `ok(...)` (`undefined` is `none`);
// throwing a plain `{ tag, val }` object is `err(handle-error)`. Throwing an
// `Error` traps.
function handle(msg) {
  debugEnabled ??= enabled('debug');
  prefix ??= get('prefix') ?? 'out';
  const upper = asciiUpper(msg.payload);
  const target = `${prefix}.${msg.subject}`;
  if (debugEnabled) {
    log('debug', `${msg.subject} -> ${target} (${upper.length} bytes)`);
  }
  publish(target, upper, msg.headers);
  return msg.replyTo !== undefined ? upper : undefined;
}

// ---- the batch helper: copy from here to the end into your handler ------
//
// `publish(subject, payload, headers)`: inside a batch the publish travels
// in the batch's results and the host checks it when the call returns (a
// refused one rejects its message with `publish failed: <case>: <detail>`,
// as below); outside one it is the import, and a refused publish rejects
// the message the same way.
let outbox = null; // the current batch message's publishes, or null

function publish(subject, payload, headers) {
  if (outbox !== null) {
    outbox.push([subject, headers, payload]);
    return;
  }
  try {
    publishNow(subject, payload, headers);
  } catch (e) {
    if (e?.payload === undefined) throw e; // not a WIT error: a bug, let it trap
    // An imported function's WIT error arrives as an exception whose
    // `payload` is the error variant.
    throw { tag: 'reject', val: `publish failed: ${describePublishError(e.payload)}` };
  }
}

// The batch encoding is in wit/batch-handler.wit: little-endian u32
// lengths and counts, 0xFFFFFFFF for none.
const NONE = 0xffffffff;
// `ignoreBOM`: a subject or header that starts with U+FEFF keeps it.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
const toUtf8 = new TextEncoder();

function decodeBatch(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const u32 = () => {
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const u64 = () => {
    const v = view.getBigUint64(at, true);
    at += 8;
    return v;
  };
  const raw = () => {
    const n = u32();
    const b = bytes.subarray(at, at + n);
    at += n;
    return b;
  };
  const str = () => utf8.decode(raw());
  const count = u32();
  const messages = new Array(count);
  for (let i = 0; i < count; i++) {
    const subject = str();
    let replyTo;
    if (view.getUint32(at, true) === NONE) at += 4;
    else replyTo = str();
    const n = u32();
    const headers = new Array(n);
    for (let h = 0; h < n; h++) headers[h] = [str(), str()];
    const payload = raw();
    let jetstream;
    if (view.getUint32(at, true) === NONE) at += 4;
    else {
      jetstream = {
        stream: str(),
        consumer: str(),
        streamSequence: u64(),
        consumerSequence: u64(),
        delivered: u64(),
        pending: u64(),
        publishedMs: u64(),
      };
    }
    messages[i] = { msg: { subject, payload, headers, replyTo }, jetstream };
  }
  return messages;
}

// A growing little-endian buffer for the results.
class Writer {
  constructor(size) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.at = 0;
  }
  room(n) {
    if (this.at + n <= this.bytes.length) return;
    const bigger = new Uint8Array(Math.max(this.bytes.length * 2, this.at + n));
    bigger.set(this.bytes.subarray(0, this.at));
    this.bytes = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(v) {
    this.room(1);
    this.bytes[this.at++] = v;
  }
  u32(v) {
    this.room(4);
    this.view.setUint32(this.at, v, true);
    this.at += 4;
  }
  raw(b) {
    this.u32(b.length);
    this.room(b.length);
    this.bytes.set(b, this.at);
    this.at += b.length;
  }
  str(s) {
    // At most 3 bytes per UTF-16 unit; written in place, no copy.
    this.room(4 + s.length * 3);
    const { written } = toUtf8.encodeInto(s, this.bytes.subarray(this.at + 4));
    this.view.setUint32(this.at, written, true);
    this.at += 4 + written;
  }
  done() {
    return this.bytes.subarray(0, this.at);
  }
}

function handleBatch(batch) {
  const messages = decodeBatch(batch);
  const w = new Writer(batch.length + 64);
  w.u32(messages.length);
  for (const { msg, jetstream } of messages) {
    current = jetstream;
    outbox = [];
    let reply;
    try {
      reply = handle(msg);
    } catch (e) {
      outbox = null;
      current = undefined;
      // `err(retry)` / `err(reject)`; anything else is a bug: trap, and the
      // host runs the batch's messages again one at a time.
      if (e?.tag === 'retry' || e?.tag === 'reject') {
        w.u8(e.tag === 'retry' ? 1 : 2);
        w.str(String(e.val));
        continue;
      }
      throw e;
    }
    w.u8(0);
    w.u32(outbox.length);
    for (const [subject, headers, payload] of outbox) {
      w.str(subject);
      w.u32(headers?.length ?? 0);
      for (const [k, v] of headers ?? []) {
        w.str(k);
        w.str(v);
      }
      w.raw(payload);
    }
    if (reply === undefined) w.u32(NONE);
    else w.raw(reply);
    outbox = null;
    current = undefined;
  }
  return w.done();
}

// The JetStream metadata of the message in hand inside a batch, as
// `delivery.jetstream()` gives it outside one (which answers `undefined`
// inside a batch): use this in a handler that needs it.
let current;
// eslint-disable-next-line no-unused-vars
function jetstreamOfBatchMessage() {
  return current;
}

export const handler = { handle: (msg) => { outbox = null; return handle(msg); } };
export const batchHandler = { handleBatch };

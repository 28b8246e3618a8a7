"""The uppercase example handler in Python (componentize-py).

Upper-cases each payload (ASCII), publishes it to `<prefix>.<subject>`
(`prefix` from the plugin's config, default `out`) with the incoming headers,
and replies with the same bytes when the message has a reply-to subject. A
publish the host refuses rejects the message (`publish failed: ...`). Same
behaviour as the Rust `plugins/uppercase` and `plugins/js-uppercase`.

It exports `batch-handler` too (world `batch-plugin`): the gateway hands it
up to 128 messages per call and the batch helper below runs `handle` for each,
so a message pays for one crossing into the interpreter per batch, not one
each. The helper is self-contained: copy it into your handler.

Build: `bash scripts/build-polyglot.sh` (see docs/python.md).
"""

import struct
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, log_filter, publisher
from wit_world.imports.types import (
    HandleError_Reject,
    HandleError_Retry,
    Message,
    PublishError,
    PublishError_Forbidden,
    PublishError_InvalidSubject,
    PublishError_PayloadTooLarge,
    PublishError_Unavailable,
)


def describe_publish_error(error: PublishError) -> str:
    """`<wit-case>: <detail>`, the same text as the Rust SDK's."""
    if isinstance(error, PublishError_InvalidSubject):
        return f"invalid-subject: {error.value}"
    if isinstance(error, PublishError_PayloadTooLarge):
        return f"payload-too-large: max {error.value} bytes"
    if isinstance(error, PublishError_Forbidden):
        return f"forbidden: {error.value}"
    if isinstance(error, PublishError_Unavailable):
        return f"unavailable: {error.value}"
    return repr(error)


# Asked once per instance: whether the gateway records `debug` lines, so that
# a line it would drop is never formatted (like the Rust SDK's macros).
_debug_enabled: Optional[bool] = None


def handle(msg: Message) -> Optional[bytes]:
    """The handler. Returning bytes or None is `ok(...)`; raising
    Err(HandleError_Retry/Reject(...)) is `err(...)`; any other exception
    traps."""
    global _debug_enabled
    if _debug_enabled is None:
        _debug_enabled = log_filter.enabled(log.Level.DEBUG)
    prefix = config.get("prefix") or "out"
    upper = msg.payload.upper()  # bytes.upper() changes ASCII letters only
    target = f"{prefix}.{msg.subject}"
    if _debug_enabled:
        log.log(log.Level.DEBUG, f"{msg.subject} -> {target} ({len(upper)} bytes)")
    publish(target, upper, msg.headers)
    return upper if msg.reply_to is not None else None


# ---- the batch helper: copy from here to the end into your handler --------
#
# `publish(subject, payload, headers)`: inside a batch the publish travels in
# the batch's results and the host checks it when the call returns (a refused
# one rejects its message with `publish failed: <case>: <detail>`, as below);
# outside one it is the import, and a refused publish rejects the message the
# same way.

_outbox: Optional[List[Tuple[str, List[Tuple[str, str]], bytes]]] = None
# The JetStream metadata of the message in hand inside a batch, as
# `delivery.jetstream()` gives it outside one (which answers None inside a
# batch): (stream, consumer, stream_sequence, consumer_sequence, delivered,
# pending, published_ms), or None for a core message.
current_jetstream: Optional[tuple] = None


def publish(subject: str, payload: bytes, headers: List[Tuple[str, str]]) -> None:
    if _outbox is not None:
        _outbox.append((subject, headers, payload))
        return
    try:
        publisher.publish(subject, payload, headers)
    except Err as e:
        # A WIT error result is raised as Err(value); raising Err(handle-error)
        # returns it from `handle`.
        reason = describe_publish_error(e.value)
        raise Err(HandleError_Reject(f"publish failed: {reason}"))


class Handler(exports.Handler):
    """The `wasmgate:plugin/handler` export: componentize-py looks for a
    class named after the exported interface."""

    def handle(self, msg: Message) -> Optional[bytes]:
        global _outbox
        _outbox = None
        return handle(msg)


# The batch encoding is in wit/batch-handler.wit: little-endian u32 lengths
# and counts, 0xFFFFFFFF for none.
_NONE = 0xFFFFFFFF
_u32 = struct.Struct("<I")
_js = struct.Struct("<QQQQQ")


def _decode(batch: bytes):
    view = memoryview(batch)
    at = 0

    def u32() -> int:
        nonlocal at
        (v,) = _u32.unpack_from(view, at)
        at += 4
        return v

    def raw() -> bytes:
        nonlocal at
        n = u32()
        b = bytes(view[at : at + n])
        at += n
        return b

    def text() -> str:
        nonlocal at
        n = u32()
        s = str(view[at : at + n], "utf-8")
        at += n
        return s

    for _ in range(u32()):
        subject = text()
        if _u32.unpack_from(view, at)[0] == _NONE:
            at += 4
            reply_to = None
        else:
            reply_to = text()
        headers = [(text(), text()) for _ in range(u32())]
        payload = raw()
        if _u32.unpack_from(view, at)[0] == _NONE:
            at += 4
            jetstream = None
        else:
            stream, consumer = text(), text()
            numbers = _js.unpack_from(view, at)
            at += _js.size
            jetstream = (stream, consumer) + numbers
        yield Message(subject, payload, headers, reply_to), jetstream


def _str(out: bytearray, s: str) -> None:
    b = s.encode()
    out += _u32.pack(len(b))
    out += b


class BatchHandler(exports.BatchHandler):
    """The `wasmgate:plugin/batch-handler` export."""

    def handle_batch(self, batch: bytes) -> bytes:
        global _outbox, current_jetstream
        out = bytearray(batch[:4])  # the same count
        for msg, jetstream in _decode(batch):
            current_jetstream = jetstream
            _outbox = []
            try:
                reply = handle(msg)
            except Err as e:
                # Err(retry/reject): that message's result; any other exception
                # traps, and the host runs the batch's messages one at a time.
                out.append(1 if isinstance(e.value, HandleError_Retry) else 2)
                _str(out, e.value.value)
                continue
            finally:
                current_jetstream = None
            out.append(0)
            out += _u32.pack(len(_outbox))
            for subject, headers, payload in _outbox:
                _str(out, subject)
                out += _u32.pack(len(headers))
                for name, value in headers:
                    _str(out, name)
                    _str(out, value)
                out += _u32.pack(len(payload))
                out += payload
            if reply is None:
                out += _u32.pack(_NONE)
            else:
                out += _u32.pack(len(reply))
                out += reply
        _outbox = None
        return bytes(out)

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
from wit_world.imports.delivery import JetstreamInfo
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
# a line it would drop is never formatted (like the Rust SDK's macros), and
# the config (fixed for an instance's life: a changed config reloads the
# plugin, with new instances). Each import call costs a crossing (~1 µs).
_debug_enabled: Optional[bool] = None
_prefix: Optional[str] = None


def handle(msg: Message) -> Optional[bytes]:
    """The handler. Returning bytes or None is `ok(...)`; raising
    Err(HandleError_Retry/Reject(...)) is `err(...)`; any other exception
    traps."""
    global _debug_enabled, _prefix
    if _debug_enabled is None:
        _debug_enabled = log_filter.enabled(log.Level.DEBUG)
        _prefix = config.get("prefix") or "out"
    upper = msg.payload.upper()  # bytes.upper() changes ASCII letters only
    target = f"{_prefix}.{msg.subject}"
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
# The JetStream metadata of the message in hand inside a batch, the same
# `JetstreamInfo` record `delivery.jetstream()` gives outside one (which
# answers None inside a batch); None for a core message.
current_jetstream: Optional[JetstreamInfo] = None


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
# and counts, 0xFFFFFFFF for none. Written as one flat loop with local names:
# every function call and attribute lookup is interpreted bytecode.
_NONE = 0xFFFFFFFF
_NONE_BYTES = b"\xff\xff\xff\xff"
_u32 = struct.Struct("<I")
_js = struct.Struct("<QQQQQ")


def _decode(batch: bytes) -> list:
    unpack = _u32.unpack_from
    (count,) = unpack(batch, 0)
    at = 4
    messages = []
    for _ in range(count):
        (n,) = unpack(batch, at)
        subject = batch[at + 4 : at + 4 + n].decode()
        at += 4 + n
        (n,) = unpack(batch, at)
        if n == _NONE:
            reply_to = None
            at += 4
        else:
            reply_to = batch[at + 4 : at + 4 + n].decode()
            at += 4 + n
        (h,) = unpack(batch, at)
        at += 4
        headers = []
        for _ in range(h):
            (n,) = unpack(batch, at)
            name = batch[at + 4 : at + 4 + n].decode()
            at += 4 + n
            (n,) = unpack(batch, at)
            value = batch[at + 4 : at + 4 + n].decode()
            at += 4 + n
            headers.append((name, value))
        (n,) = unpack(batch, at)
        payload = batch[at + 4 : at + 4 + n]
        at += 4 + n
        (n,) = unpack(batch, at)
        if n == _NONE:
            jetstream = None
            at += 4
        else:
            stream = batch[at + 4 : at + 4 + n].decode()
            at += 4 + n
            (n,) = unpack(batch, at)
            consumer = batch[at + 4 : at + 4 + n].decode()
            at += 4 + n
            jetstream = JetstreamInfo(stream, consumer, *_js.unpack_from(batch, at))
            at += _js.size
        messages.append((Message(subject, payload, headers, reply_to), jetstream))
    return messages


class BatchHandler(exports.BatchHandler):
    """The `wasmgate:plugin/batch-handler` export."""

    def handle_batch(self, batch: bytes) -> bytes:
        global _outbox, current_jetstream
        pack = _u32.pack
        parts = [batch[:4]]  # the same count
        put = parts.append
        for msg, jetstream in _decode(batch):
            current_jetstream = jetstream
            _outbox = []
            try:
                reply = handle(msg)
            except Err as e:
                # Err(retry/reject): that message's result; any other exception
                # traps, and the host runs the batch's messages one at a time.
                reason = e.value.value.encode()
                put(b"\x01" if isinstance(e.value, HandleError_Retry) else b"\x02")
                put(pack(len(reason)))
                put(reason)
                continue
            finally:
                current_jetstream = None
            put(b"\x00")
            put(pack(len(_outbox)))
            for subject, headers, payload in _outbox:
                s = subject.encode()
                put(pack(len(s)))
                put(s)
                put(pack(len(headers)))
                for name, value in headers:
                    b = name.encode()
                    put(pack(len(b)))
                    put(b)
                    b = value.encode()
                    put(pack(len(b)))
                    put(b)
                put(pack(len(payload)))
                put(payload)
            if reply is None:
                put(_NONE_BYTES)
            else:
                put(pack(len(reply)))
                put(reply)
        _outbox = None
        return b"".join(parts)

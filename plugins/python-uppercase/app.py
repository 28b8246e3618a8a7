"""The uppercase example handler in Python (componentize-py).

Upper-cases each payload (ASCII), publishes it to `<prefix>.<subject>`
(`prefix` from the plugin's config, default `out`) with the incoming headers,
and replies with the same bytes when the message has a reply-to subject. A
publish the host refuses rejects the message (`publish failed: ...`). Same
behaviour as the Rust `plugins/uppercase` and `plugins/js-uppercase`.

Build: `bash scripts/build-polyglot.sh` (see docs/python.md).
"""

from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, log_filter, publisher
from wit_world.imports.types import (
    HandleError_Reject,
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


class Handler(exports.Handler):
    """The `wasmgate:plugin/handler` export: componentize-py looks for a
    class named after the exported interface."""

    def handle(self, msg: Message) -> Optional[bytes]:
        global _debug_enabled
        if _debug_enabled is None:
            _debug_enabled = log_filter.enabled(log.Level.DEBUG)
        prefix = config.get("prefix") or "out"
        upper = msg.payload.upper()  # bytes.upper() changes ASCII letters only
        target = f"{prefix}.{msg.subject}"
        if _debug_enabled:
            log.log(log.Level.DEBUG, f"{msg.subject} -> {target} ({len(upper)} bytes)")
        try:
            publisher.publish(target, upper, msg.headers)
        except Err as e:
            # A WIT error result is raised as Err(value); raising Err(handle-error)
            # returns it from `handle`.
            reason = describe_publish_error(e.value)
            raise Err(HandleError_Reject(f"publish failed: {reason}"))
        return upper if msg.reply_to is not None else None

"""The enricher example in Python (componentize-py), the same handler as the
Rust `plugins/enrich` and `plugins/js-enrich`: for each message it asks the
`lookup` subject (config, default `lookup`) with the payload and answers
`<payload>+<the lookup's reply>` when the message asks for a reply. No
responder, no answer in time or no connection: the message is retried; a
subject `request_allow` does not grant: rejected.

It exports `handler` only (world `plugin`): a request blocks the call either
way, so batches would save little here.

Build: `bash scripts/build-polyglot.sh python-enrich` (see docs/python.md).
"""

from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, requester
from wit_world.imports.requester import (
    RequestError,
    RequestError_Forbidden,
    RequestError_InvalidHeader,
    RequestError_InvalidSubject,
    RequestError_NoResponders,
    RequestError_PayloadTooLarge,
    RequestError_TimedOut,
    RequestError_Unavailable,
)
from wit_world.imports.types import HandleError_Reject, HandleError_Retry, Message


def describe_request_error(error: RequestError) -> str:
    """`<wit-case>: <detail>`, the same text as the Rust SDK's."""
    if isinstance(error, RequestError_NoResponders):
        return "no-responders"
    if isinstance(error, RequestError_TimedOut):
        return "timed-out"
    if isinstance(error, RequestError_InvalidSubject):
        return f"invalid-subject: {error.value}"
    if isinstance(error, RequestError_Forbidden):
        return f"forbidden: {error.value}"
    if isinstance(error, RequestError_InvalidHeader):
        return f"invalid-header: {error.value}"
    if isinstance(error, RequestError_PayloadTooLarge):
        return f"payload-too-large: max {error.value} bytes"
    if isinstance(error, RequestError_Unavailable):
        return f"unavailable: {error.value}"
    return repr(error)


_RETRY = (RequestError_NoResponders, RequestError_TimedOut, RequestError_Unavailable)

# Read once per instance (a changed config reloads the plugin).
_lookup: Optional[str] = None
_timeout_ms = 1000


class Handler(exports.Handler):
    """The `wasmgate:plugin/handler` export."""

    def handle(self, msg: Message) -> Optional[bytes]:
        global _lookup, _timeout_ms
        if _lookup is None:
            _lookup = config.get("lookup") or "lookup"
            _timeout_ms = int(config.get("timeout_ms") or "1000")
        try:
            answer = requester.request(_lookup, msg.payload, [], _timeout_ms)
        except Err as e:
            # A WIT error result is raised as Err(value).
            reason = f"request failed: {describe_request_error(e.value)}"
            if isinstance(e.value, _RETRY):
                raise Err(HandleError_Retry(reason))
            raise Err(HandleError_Reject(reason))
        both = msg.payload + b"+" + answer.payload
        return both if msg.reply_to is not None else None

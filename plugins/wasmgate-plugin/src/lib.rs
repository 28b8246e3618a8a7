//! The Rust SDK for wasmgate handlers.
//!
//! A handler is a type that implements [`Handler`], exported with
//! [`export!`](crate::export). The crate hides the WIT bindings
//! (`wasmgate:plugin@0.1.5`, world `batch-plugin`, generated here by wit-bindgen) behind plain
//! Rust: [`Message`] with header and text helpers, [`Reply`], [`Error`]
//! (`retry` or `reject`), [`publish`], [`request`] (WIT 0.1.5), typed
//! [`config`], [`log`], and the JetStream metadata of the message in hand,
//! [`jetstream`].
//!
//! ```no_run
//! use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};
//!
//! struct Uppercase;
//!
//! impl Handler for Uppercase {
//!     fn handle(msg: &Message) -> Result<Reply, Error> {
//!         let prefix: String = config::get_or("prefix", "out".to_string())?;
//!         let upper = msg.payload.to_ascii_uppercase();
//!         let target = format!("{prefix}.{}", msg.subject);
//!         wasmgate_plugin::debug!("{} -> {target} ({} bytes)", msg.subject, upper.len());
//!         // A refused publish becomes `reject("publish failed: ...")` through `?`.
//!         publish(&target, &upper, &msg.headers)?;
//!         Ok(msg.reply(upper))
//!     }
//! }
//!
//! wasmgate_plugin::export!(Uppercase);
//! ```
//!
//! The handler crate is a `cdylib` built with
//! `cargo build --release --target wasm32-wasip2`; it needs no other
//! dependency than this crate.
//!
//! ## Batches
//!
//! [`export!`](crate::export) exports the handler twice: as
//! `wasmgate:plugin/handler` (one message per call) and as
//! `wasmgate:plugin/batch-handler` (many per call), which the gateway uses for
//! core NATS bindings because one call per batch costs a fraction of one call
//! per message. Your `handle` runs once per message either way, in order.
//! What differs inside a batch: [`publish`] hands the message back with the
//! result instead of calling the host, so it returns `Ok(())` at once; the
//! host checks every publish (subject, `publish_allow`, size, count) when the
//! batch returns, with the same rules and counters, and a publish it refuses
//! rejects that message with the same `publish failed: ...` reason that `?`
//! on a refused [`publish`] gives. A handler that must see a refusal itself
//! (to retry instead, say) needs `batch = false` in its `[[plugin]]` table.
//! Config values are read from the host once per instance and kept.

use std::fmt;

/// The generated WIT bindings. Not part of the SDK's API: use the re-exports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "batch-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_bindings",
        default_bindings_module: "wasmgate_plugin::bindings",
    });
}

pub use bindings::wasmgate::plugin::delivery::JetstreamInfo;
use bindings::wasmgate::plugin::types::HandleError;
pub use bindings::wasmgate::plugin::types::PublishError;

/// A header: its name and value.
pub type Header<'a> = (&'a str, &'a str);

/// A message, lent to [`Handler::handle`] for one call.
///
/// Its parts borrow what the host sent (inside a batch, the one buffer of
/// the whole batch), so receiving a message copies and allocates nothing.
/// Copy what you keep: `msg.payload.to_vec()`, `msg.subject.to_string()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// In the order they came; a name may repeat.
    pub headers: &'a [Header<'a>],
    /// Where a requester waits for the reply; `None` for a plain publish
    /// (and for JetStream messages, whose reply subject is their ack).
    pub reply_to: Option<&'a str>,
}

/// What a handler implements: one message in, a [`Reply`] or an [`Error`] out.
///
/// Publishes made during `handle` are sent only when it returns `Ok`; an
/// `Err` (or a panic, which traps) discards them.
///
/// The message is lent, not given: its parts borrow the buffer the host
/// sent (see [`Message`]).
pub trait Handler {
    fn handle(msg: &Message<'_>) -> Result<Reply, Error>;
}

/// Export a [`Handler`] as the component's `wasmgate:plugin/handler` and
/// `wasmgate:plugin/batch-handler` (see [Batches](crate#batches)).
///
/// Use it once per crate, at the top level: `wasmgate_plugin::export!(MyHandler);`
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        const _: () = {
            struct __WasmgateExport;
            impl $crate::bindings::exports::wasmgate::plugin::handler::Guest for __WasmgateExport {
                fn handle(
                    msg: $crate::__private::WitMessage,
                ) -> ::core::result::Result<
                    ::core::option::Option<::std::vec::Vec<u8>>,
                    $crate::__private::HandleError,
                > {
                    $crate::__private::call::<$handler>(msg)
                }
            }
            impl $crate::bindings::exports::wasmgate::plugin::batch_handler::Guest
                for __WasmgateExport
            {
                fn handle_batch(batch: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
                    $crate::__private::call_batch::<$handler>(&batch)
                }
            }
            $crate::bindings::__export_plugin_bindings!(
                __WasmgateExport with_types_in $crate::bindings
            );
        };
    };
}

mod batch;
mod codec;
mod request;

pub use request::{RequestError, Response, describe_request_error, request};

/// What `export!` expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::batch::{call, call_batch};
    pub use crate::bindings::wasmgate::plugin::types::{HandleError, Message as WitMessage};
}

impl<'a> Message<'a> {
    /// The first value of a header, by exact name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// Every value of a header, by exact name, in order.
    pub fn header_values(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 is rejected.
    pub fn text(&self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.payload)
            .map_err(|e| Error::reject(format!("payload is not UTF-8: {e}")))
    }

    /// A reply with `payload` when the sender asked for one (the message has
    /// a reply-to subject), else no reply.
    pub fn reply(&self, payload: impl Into<Vec<u8>>) -> Reply {
        if self.reply_to.is_some() {
            Reply::bytes(payload)
        } else {
            Reply::none()
        }
    }
}

/// What a successful `handle` sends back to the requester, if anything.
///
/// The host sends a reply only to a message that has a reply-to subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply(Option<Vec<u8>>);

impl Reply {
    /// No reply.
    pub fn none() -> Reply {
        Reply(None)
    }

    /// Reply with these bytes.
    pub fn bytes(payload: impl Into<Vec<u8>>) -> Reply {
        Reply(Some(payload.into()))
    }

    /// The reply payload, if any.
    pub fn payload(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

impl From<()> for Reply {
    fn from(_: ()) -> Reply {
        Reply::none()
    }
}

impl From<Vec<u8>> for Reply {
    fn from(payload: Vec<u8>) -> Reply {
        Reply::bytes(payload)
    }
}

impl From<&[u8]> for Reply {
    fn from(payload: &[u8]) -> Reply {
        Reply::bytes(payload)
    }
}

impl From<String> for Reply {
    fn from(payload: String) -> Reply {
        Reply::bytes(payload)
    }
}

impl From<&str> for Reply {
    fn from(payload: &str) -> Reply {
        Reply::bytes(payload)
    }
}

impl From<Option<Vec<u8>>> for Reply {
    fn from(payload: Option<Vec<u8>>) -> Reply {
        Reply(payload)
    }
}

/// Why a handler did not succeed. The host counts it, and a requester gets
/// an error reply with the header `Wasmgate-Error: retry|reject` and the
/// reason as payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A transient failure: the message may succeed if delivered again.
    Retry(String),
    /// A permanent failure: never deliver this message again.
    Reject(String),
}

impl Error {
    pub fn retry(reason: impl fmt::Display) -> Error {
        Error::Retry(reason.to_string())
    }

    pub fn reject(reason: impl fmt::Display) -> Error {
        Error::Reject(reason.to_string())
    }

    pub fn reason(&self) -> &str {
        match self {
            Error::Retry(r) | Error::Reject(r) => r,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Retry(r) => write!(f, "retry: {r}"),
            Error::Reject(r) => write!(f, "reject: {r}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for HandleError {
    fn from(e: Error) -> HandleError {
        match e {
            Error::Retry(r) => HandleError::Retry(r),
            Error::Reject(r) => HandleError::Reject(r),
        }
    }
}

/// A refused publish rejects the message: `reject("publish failed: <why>")`.
/// Map it yourself (`.map_err(Error::retry)`) when a retry makes more sense.
impl From<PublishError> for Error {
    fn from(e: PublishError) -> Error {
        Error::Reject(format!("publish failed: {}", describe_publish_error(&e)))
    }
}

/// A bad or missing config value rejects the message with its description.
impl From<config::ConfigError> for Error {
    fn from(e: config::ConfigError) -> Error {
        Error::Reject(e.to_string())
    }
}

/// `<wit-case>: <detail>`, the same text the Python and JS examples print.
pub fn describe_publish_error(e: &PublishError) -> String {
    match e {
        PublishError::InvalidSubject(why) => format!("invalid-subject: {why}"),
        PublishError::PayloadTooLarge(max) => format!("payload-too-large: max {max} bytes"),
        PublishError::Forbidden(why) => format!("forbidden: {why}"),
        PublishError::Unavailable(why) => format!("unavailable: {why}"),
    }
}

/// Ask the host to publish a message. It is checked (subject syntax, size,
/// permission, at most 1024 per message) and sent only if `handle` returns
/// `Ok`. Outside a batch the check is made at once; inside one, when the
/// batch returns, and a refusal rejects the message (see
/// [Batches](crate#batches)).
///
/// Headers are `(name, value)` pairs: `&[("Content-Type", "text/plain")]`,
/// or `msg.headers` to pass a message's own on.
pub fn publish(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[Header<'_>],
) -> Result<(), PublishError> {
    let payload = payload.as_ref();
    match batch::collect(subject, payload, headers) {
        Some(result) => result,
        None => {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            bindings::wasmgate::plugin::publisher::publish(subject, payload, &headers)
        }
    }
}

/// How the message in hand came: its JetStream metadata (stream, consumer,
/// sequences, `delivered` — 1 on the first delivery —, pending,
/// `published_ms`) when a JetStream binding delivered it; `None` for a core
/// NATS message.
///
/// Call it from [`Handler::handle`]. It works the same in a batch (where
/// the gateway sends each message's metadata with the batch) and alone
/// (where it asks the host), so reading it does not cost a plugin its
/// batches.
///
/// ```no_run
/// # use wasmgate_plugin::{Error, Message, Reply, jetstream};
/// fn handle(msg: &Message) -> Result<Reply, Error> {
///     let attempt = jetstream().map_or(1, |js| js.delivered);
///     if attempt < 3 && msg.payload.is_empty() {
///         return Err(Error::retry(format!("attempt {attempt}: empty, try again")));
///     }
///     Ok(Reply::none())
/// }
/// ```
pub fn jetstream() -> Option<JetstreamInfo> {
    match batch::batch_jetstream() {
        Some(info) => info,
        None => bindings::wasmgate::plugin::delivery::jetstream(),
    }
}

pub mod config;

pub mod log;

/// Log a `format!` line at `trace`; not formatted when the gateway does not
/// record that level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Trace) {
            $crate::log::trace(::std::format!($($arg)*))
        }
    };
}

/// Log a `format!` line at `debug`; not formatted when the gateway does not
/// record that level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::debug(::std::format!($($arg)*))
        }
    };
}

/// Log a `format!` line at `info`; not formatted when the gateway does not
/// record that level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::info(::std::format!($($arg)*))
        }
    };
}

/// Log a `format!` line at `warn`; not formatted when the gateway does not
/// record that level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::warn(::std::format!($($arg)*))
        }
    };
}

/// Log a `format!` line at `error`; not formatted when the gateway does not
/// record that level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::error(::std::format!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn msg(reply_to: Option<&str>) -> Message<'_> {
        Message {
            subject: "in.x",
            payload: b"hi",
            headers: &[("a", "1"), ("b", "2"), ("a", "3")],
            reply_to,
        }
    }

    #[test]
    fn replies_only_when_asked() {
        assert_eq!(msg(Some("r")).reply("x").payload(), Some(&b"x"[..]));
        assert_eq!(msg(None).reply("x"), Reply::none());
        assert_eq!(Reply::from(()), Reply::none());
        assert_eq!(Reply::from("ok").payload(), Some(&b"ok"[..]));
    }

    #[test]
    fn headers_and_text() {
        let m = msg(None);
        assert_eq!(m.header("a"), Some("1"));
        assert_eq!(m.header("A"), None);
        assert_eq!(m.header_values("a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(m.text(), Ok("hi"));
        let bad = Message {
            payload: &[0xff],
            ..msg(None)
        };
        assert!(
            matches!(bad.text(), Err(Error::Reject(r)) if r.starts_with("payload is not UTF-8"))
        );
    }

    #[test]
    fn refused_publishes_reject_with_the_shared_text() {
        let e: Error =
            PublishError::InvalidSubject("subject \"a b\" contains whitespace".into()).into();
        assert_eq!(
            e,
            Error::Reject(
                "publish failed: invalid-subject: subject \"a b\" contains whitespace".into()
            )
        );
        let e: Error = PublishError::PayloadTooLarge(1024).into();
        assert_eq!(
            e.reason(),
            "publish failed: payload-too-large: max 1024 bytes"
        );
        let handle: HandleError = Error::retry("later").into();
        assert!(matches!(handle, HandleError::Retry(r) if r == "later"));
    }

    #[test]
    fn typed_config_values() {
        use config::{ConfigError, parse};
        assert_eq!(parse::<u32>("n", Some("42".into())), Ok(Some(42)));
        assert_eq!(parse::<u32>("n", None), Ok(None));
        let err = parse::<u32>("n", Some("many".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key \"n\": \"many\" is not a valid u32: invalid digit found in string"
        );
        assert_eq!(
            ConfigError::Missing {
                key: "prefix".into()
            }
            .to_string(),
            "config key \"prefix\" is required but not set"
        );
        let e: Error = err.into();
        assert!(matches!(e, Error::Reject(_)));
    }
}

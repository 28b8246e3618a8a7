//! The Rust SDK for wasmgate handlers.
//!
//! A handler is a type that implements [`Handler`], exported with
//! [`export!`](crate::export). The crate hides the WIT bindings
//! (`wasmgate:plugin@0.1.0`, generated here by wit-bindgen) behind plain
//! Rust: [`Message`] with header and text helpers, [`Reply`], [`Error`]
//! (`retry` or `reject`), [`publish`], typed [`config`] and [`log`].
//!
//! ```no_run
//! use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};
//!
//! struct Uppercase;
//!
//! impl Handler for Uppercase {
//!     fn handle(msg: Message) -> Result<Reply, Error> {
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

use std::fmt;

/// The generated WIT bindings. Not part of the SDK's API: use the re-exports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_bindings",
        default_bindings_module: "wasmgate_plugin::bindings",
    });
}

use bindings::wasmgate::plugin::types::HandleError;
pub use bindings::wasmgate::plugin::types::{Header, Message, PublishError};

/// What a handler implements: one message in, a [`Reply`] or an [`Error`] out.
///
/// Publishes made during `handle` are sent only when it returns `Ok`; an
/// `Err` (or a panic, which traps) discards them.
pub trait Handler {
    fn handle(msg: Message) -> Result<Reply, Error>;
}

/// Export a [`Handler`] as the component's `wasmgate:plugin/handler`.
///
/// Use it once per crate, at the top level: `wasmgate_plugin::export!(MyHandler);`
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        const _: () = {
            struct __WasmgateExport;
            impl $crate::bindings::exports::wasmgate::plugin::handler::Guest for __WasmgateExport {
                fn handle(
                    msg: $crate::Message,
                ) -> ::core::result::Result<
                    ::core::option::Option<::std::vec::Vec<u8>>,
                    $crate::__private::HandleError,
                > {
                    $crate::__private::call::<$handler>(msg)
                }
            }
            $crate::bindings::__export_plugin_bindings!(
                __WasmgateExport with_types_in $crate::bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::wasmgate::plugin::types::HandleError;

    /// Run a handler and translate its result to the WIT types.
    pub fn call<H: crate::Handler>(msg: crate::Message) -> Result<Option<Vec<u8>>, HandleError> {
        match H::handle(msg) {
            Ok(reply) => Ok(reply.0),
            Err(e) => Err(e.into()),
        }
    }
}

impl Message {
    /// The first value of a header, by exact name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by exact name, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 is rejected.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.payload)
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

/// Ask the host to publish a message. It is checked at once (subject syntax,
/// size, at most 1024 per call) and sent only if `handle` returns `Ok`.
pub fn publish(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[Header],
) -> Result<(), PublishError> {
    bindings::wasmgate::plugin::publisher::publish(subject, payload.as_ref(), headers)
}

/// The plugin's config: the `config` table of its `[[plugin]]` in the
/// gateway's TOML file (or `--config k=v` of `wasmgate invoke`). Values
/// arrive as strings and are parsed with [`FromStr`](std::str::FromStr).
pub mod config {
    use std::fmt;
    use std::str::FromStr;

    use crate::bindings::wasmgate::plugin::config as wit;

    /// A config value that is missing or does not parse.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ConfigError {
        Missing {
            key: String,
        },
        Invalid {
            key: String,
            value: String,
            expected: &'static str,
            reason: String,
        },
    }

    impl fmt::Display for ConfigError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                ConfigError::Missing { key } => {
                    write!(f, "config key {key:?} is required but not set")
                }
                ConfigError::Invalid {
                    key,
                    value,
                    expected,
                    reason,
                } => write!(
                    f,
                    "config key {key:?}: {value:?} is not a valid {expected}: {reason}"
                ),
            }
        }
    }

    impl std::error::Error for ConfigError {}

    /// The raw string value of a key.
    pub fn raw(key: &str) -> Option<String> {
        wit::get(key)
    }

    /// Every key and value, sorted by key.
    pub fn all() -> Vec<(String, String)> {
        wit::get_all()
    }

    /// An optional value: `Ok(None)` when unset, an error when it does not parse.
    pub fn get<T>(key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse(key, wit::get(key))
    }

    pub(crate) fn parse<T>(key: &str, value: Option<String>) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match value {
            None => Ok(None),
            Some(value) => match value.parse::<T>() {
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(ConfigError::Invalid {
                    key: key.to_string(),
                    value,
                    expected: short_type_name::<T>(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// A value with a default for when it is unset; an error when it does not parse.
    pub fn get_or<T>(key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(get(key)?.unwrap_or(default))
    }

    /// A value that must be set and parse.
    pub fn require<T>(key: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        get(key)?.ok_or_else(|| ConfigError::Missing {
            key: key.to_string(),
        })
    }

    fn short_type_name<T>() -> &'static str {
        let full = std::any::type_name::<T>();
        full.rsplit("::").next().unwrap_or(full)
    }
}

/// Log lines into the gateway's tracing output, tagged with the plugin name
/// (and printed by `wasmgate invoke`). The macros take `format!` arguments:
/// `wasmgate_plugin::debug!("{} bytes", n)`.
pub mod log {
    pub use crate::bindings::wasmgate::plugin::log::Level;

    pub fn log(level: Level, message: impl AsRef<str>) {
        crate::bindings::wasmgate::plugin::log::log(level, message.as_ref());
    }

    pub fn trace(message: impl AsRef<str>) {
        log(Level::Trace, message)
    }

    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message)
    }

    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message)
    }

    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message)
    }

    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message)
    }
}

#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::trace(::std::format!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(::std::format!($($arg)*)) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(::std::format!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(::std::format!($($arg)*)) };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(::std::format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(reply_to: Option<&str>) -> Message {
        Message {
            subject: "in.x".into(),
            payload: b"hi".to_vec(),
            headers: vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("a".into(), "3".into()),
            ],
            reply_to: reply_to.map(String::from),
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
            payload: vec![0xff],
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

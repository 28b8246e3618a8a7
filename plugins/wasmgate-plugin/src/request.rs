//! Requests to other services: [`request`] sends one and waits for its reply.

use std::time::Duration;

use crate::bindings::wasmgate::plugin::requester;
pub use crate::bindings::wasmgate::plugin::requester::RequestError;
use crate::{Error, Header};

/// The reply to a [`request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Empty: the reply went to the gateway's own inbox.
    pub subject: String,
    pub payload: Vec<u8>,
    /// In the order they came; a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of a header, by exact name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 is rejected.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| Error::reject(format!("reply is not UTF-8: {e}")))
    }
}

/// Send `payload` to `subject` and wait for one reply, at most `timeout`
/// (and never past the handler's own deadline, which the host keeps).
///
/// Unlike [`publish`](crate::publish), the request goes out now, during
/// `handle`, inside a batch too: a message that is retried or redelivered
/// sends it again, so request what is safe to ask twice. The plugin's
/// `request_allow` must grant the subject (nothing is granted by default).
///
/// ```no_run
/// # use std::time::Duration;
/// # use wasmgate_plugin::{Error, Message, Reply, request};
/// fn handle(msg: &Message) -> Result<Reply, Error> {
///     // No responder or no answer in time: `?` makes it a retry.
///     let user = request("users.lookup", msg.payload, &[], Duration::from_millis(500))?;
///     Ok(msg.reply(user.payload))
/// }
/// ```
pub fn request(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[Header<'_>],
    timeout: Duration,
) -> Result<Response, RequestError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ms = u32::try_from(timeout.as_millis().max(1)).unwrap_or(u32::MAX);
    let reply = requester::request(subject, payload.as_ref(), &headers, ms)?;
    Ok(Response {
        subject: reply.subject,
        payload: reply.payload,
        headers: reply.headers,
    })
}

/// A failed request fails the message: `retry("request failed: <why>")`
/// when asking again may work (no responders, timed out, unavailable),
/// `reject(...)` when it cannot (forbidden, invalid subject or header, too
/// large).
impl From<RequestError> for Error {
    fn from(e: RequestError) -> Error {
        let reason = format!("request failed: {}", describe_request_error(&e));
        match e {
            RequestError::NoResponders | RequestError::TimedOut | RequestError::Unavailable(_) => {
                Error::Retry(reason)
            }
            RequestError::InvalidSubject(_)
            | RequestError::Forbidden(_)
            | RequestError::PayloadTooLarge(_)
            | RequestError::InvalidHeader(_) => Error::Reject(reason),
        }
    }
}

/// `<wit-case>: <detail>`, as the Python and JavaScript guides word it.
pub fn describe_request_error(e: &RequestError) -> String {
    match e {
        RequestError::NoResponders => "no-responders".into(),
        RequestError::TimedOut => "timed-out".into(),
        RequestError::InvalidSubject(why) => format!("invalid-subject: {why}"),
        RequestError::Forbidden(why) => format!("forbidden: {why}"),
        RequestError::PayloadTooLarge(max) => format!("payload-too-large: max {max} bytes"),
        RequestError::InvalidHeader(why) => format!("invalid-header: {why}"),
        RequestError::Unavailable(why) => format!("unavailable: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_requests_retry_or_reject_by_kind() {
        assert_eq!(
            Error::from(RequestError::NoResponders),
            Error::Retry("request failed: no-responders".into())
        );
        assert_eq!(
            Error::from(RequestError::TimedOut),
            Error::Retry("request failed: timed-out".into())
        );
        assert_eq!(
            Error::from(RequestError::Forbidden("a.b".into())),
            Error::Reject("request failed: forbidden: a.b".into())
        );
        assert_eq!(
            Error::from(RequestError::PayloadTooLarge(10)).reason(),
            "request failed: payload-too-large: max 10 bytes"
        );
    }
}

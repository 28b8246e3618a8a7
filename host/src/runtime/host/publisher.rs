//! `wasmgate:plugin/publisher`: publishes are checked here, at once (subject
//! syntax, the plugin's `publish_allow` under the reserved-namespace rules
//! of `grants`, its headers, the server's max payload, the per-message
//! limit), and held in the call's outbox; the dispatcher sends
//! them in order only after `handle` returns `ok` (see `wit/publisher.wit`).
//!
//! [`PluginShared::check_publish`] is the one place these rules live: the
//! publishes a `handle-batch` call returns go through it too.

use std::sync::atomic::Ordering;

use crate::runtime::bindings::wasmgate::plugin::publisher::Host;
use crate::runtime::bindings::wasmgate::plugin::types::PublishError;
use crate::runtime::{HostState, MAX_PUBLISHES_PER_CALL, Outgoing, PluginShared};
use crate::subject;

impl Host for HostState {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<(), PublishError> {
        self.plugin
            .check_publish(&subject, payload.len(), &headers, self.outbox.len())?;
        self.outbox.push(Outgoing {
            subject: subject.into(),
            payload: payload.into(),
            headers,
        });
        Ok(())
    }
}

/// Why the headers or the size of a message a guest sends are refused.
pub(super) enum Refusal {
    /// A header NATS cannot carry.
    MalformedHeader(String),
    /// A header that makes the server act beyond the message (`grants`).
    ReservedHeader(String),
    /// Larger than the server's max payload (given).
    TooLarge(usize),
}

impl PluginShared {
    /// The checks publishes and requests share: each header, then the size
    /// with headers against the server's max payload (0: not connected yet,
    /// not checked).
    pub(super) fn check_message(
        &self,
        payload_len: usize,
        headers: &[(String, String)],
    ) -> Result<(), Refusal> {
        for (name, value) in headers {
            match crate::grants::check_header(name, value) {
                Ok(()) => {}
                Err(crate::grants::HeaderDenied::Malformed(why)) => {
                    return Err(Refusal::MalformedHeader(why));
                }
                Err(crate::grants::HeaderDenied::Reserved(why)) => {
                    return Err(Refusal::ReservedHeader(why));
                }
            }
        }
        let max = self.max_payload.load(Ordering::Relaxed);
        let size = payload_len
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        if max > 0 && size > max {
            return Err(Refusal::TooLarge(max));
        }
        Ok(())
    }

    /// Whether this plugin may publish this message now, `queued` publishes
    /// into the handling of one message. A refusal is counted.
    pub fn check_publish(
        &self,
        subject: &str,
        payload_len: usize,
        headers: &[(String, String)],
        queued: usize,
    ) -> Result<(), PublishError> {
        let refused = |e: PublishError| {
            self.counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if let Err(e) = subject::validate_publish(subject) {
            return refused(PublishError::InvalidSubject(e.to_string()));
        }
        if let Err(denied) = self.may_publish(subject) {
            self.counters
                .publish_forbidden
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                plugin = self.name.as_str(),
                %subject,
                rule = ?denied,
                "publish refused by publish_allow"
            );
            return refused(PublishError::Forbidden(denied.reason(subject)));
        }
        match self.check_message(payload_len, headers) {
            Ok(()) => {}
            Err(Refusal::MalformedHeader(why)) => {
                return refused(PublishError::Unavailable(why));
            }
            Err(Refusal::ReservedHeader(why)) => {
                self.counters
                    .publish_forbidden
                    .fetch_add(1, Ordering::Relaxed);
                return refused(PublishError::Forbidden(why));
            }
            Err(Refusal::TooLarge(max)) => {
                return refused(PublishError::PayloadTooLarge(max as u64));
            }
        }
        if queued >= MAX_PUBLISHES_PER_CALL {
            return refused(PublishError::Unavailable(format!(
                "at most {MAX_PUBLISHES_PER_CALL} publishes per message"
            )));
        }
        Ok(())
    }
}

/// `<wit-case>: <detail>`: the text the SDKs put after `publish failed: `
/// when a refused publish rejects a message.
pub fn describe(e: &PublishError) -> String {
    match e {
        PublishError::InvalidSubject(why) => format!("invalid-subject: {why}"),
        PublishError::PayloadTooLarge(max) => format!("payload-too-large: max {max} bytes"),
        PublishError::Forbidden(why) => format!("forbidden: {why}"),
        PublishError::Unavailable(why) => format!("unavailable: {why}"),
    }
}

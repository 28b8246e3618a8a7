//! `wasmgate:plugin/publisher`: publishes are checked here, at once (subject
//! syntax, the plugin's `publish_allow`, the server's max payload, the
//! per-call limit), and held in the call's outbox; the dispatcher sends them
//! in order only after `handle` returns `ok` (see `wit/publisher.wit`).

use std::sync::atomic::Ordering;

use crate::runtime::bindings::wasmgate::plugin::publisher::Host;
use crate::runtime::bindings::wasmgate::plugin::types::PublishError;
use crate::runtime::{HostState, Outgoing};
use crate::subject;

impl Host for HostState {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<(), PublishError> {
        if let Err(e) = subject::validate_publish(&subject) {
            self.plugin
                .counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::InvalidSubject(e.to_string()));
        }
        if !self.plugin.may_publish(&subject) {
            let counters = &self.plugin.counters;
            counters.publish_refused.fetch_add(1, Ordering::Relaxed);
            counters.publish_forbidden.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                plugin = self.plugin.name.as_str(),
                %subject,
                "publish refused: not in publish_allow"
            );
            return Err(PublishError::Forbidden(subject));
        }
        let max = self.plugin.max_payload.load(Ordering::Relaxed);
        let size = payload.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        if max > 0 && size > max {
            self.plugin
                .counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::PayloadTooLarge(max as u64));
        }
        if self.outbox.len() >= crate::runtime::MAX_PUBLISHES_PER_CALL {
            self.plugin
                .counters
                .publish_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::Unavailable(format!(
                "at most {} publishes per message",
                crate::runtime::MAX_PUBLISHES_PER_CALL
            )));
        }
        self.outbox.push(Outgoing {
            subject,
            payload: payload.into(),
            headers,
        });
        Ok(())
    }
}

//! `wasmgate:plugin/publisher`: publishes are checked here, at once, and held
//! in the call's outbox; the dispatcher sends them in order only after
//! `handle` returns `ok` (see `wit/publisher.wit`).

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

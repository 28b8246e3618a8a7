//! One instance of a plugin: a store, its exports, and the calls made on it,
//! one caller at a time. `handle` runs one message; `handle_batch` runs many
//! in one call when the plugin exports `batch-handler`, and applies the same
//! rules to each message's result (publish checks, reply size) as the
//! `publisher` import and [`Instance::handle`] do.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Store, Trap};

use super::Plugin;
use super::codec::{self, Batch, BatchResults};
use crate::runtime::bindings::wasmgate::plugin::delivery::JetstreamInfo;
use crate::runtime::bindings::{BatchGuest, HandleError, HandlerGuest, Message};
use crate::runtime::{HostState, Outgoing, describe_publish_error};

/// What `handle` decided, as the guest said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success, with an optional reply payload.
    Ok(Option<Vec<u8>>),
    /// A transient failure.
    Retry(String),
    /// A permanent rejection.
    Reject(String),
}

/// A call that did not return normally. The instance it ran on is discarded.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("handler exceeded its {0:?} deadline and was interrupted")]
    Timeout(Duration),
    #[error("handler trapped: {0}")]
    Trap(String),
    #[error("cannot instantiate plugin: {0}")]
    Instantiate(String),
    /// `handle-batch` returned something other than one result per message.
    #[error("handler broke the batch contract: {0}")]
    Contract(String),
}

impl CallError {
    /// The `Wasmgate-Error` kind of this failure: `timeout` or `trap`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            _ => "trap",
        }
    }
}

/// One instance of a plugin: a store and its bindings, used by one caller at a time.
pub struct Instance {
    pub(super) plugin: Arc<Plugin>,
    pub(super) store: Store<HostState>,
    pub(super) handler: HandlerGuest,
    pub(super) batch: Option<BatchGuest>,
}

/// The result of a call that returned: the guest's outcome and what it asked to publish.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub outbox: Vec<Outgoing>,
}

impl Instance {
    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Keep the guest's log lines (they are still logged through `tracing`
    /// as well, under the `wasmgate::guest` target), for
    /// [`take_logs`](Self::take_logs).
    pub fn capture_logs(&mut self) {
        self.store.data_mut().log_sink = Some(Vec::new());
    }

    /// The log lines kept since [`capture_logs`](Self::capture_logs), as
    /// `(level, line)`, and stop keeping them.
    pub fn take_logs(&mut self) -> Vec<(&'static str, String)> {
        self.store.data_mut().log_sink.take().unwrap_or_default()
    }

    /// Run `handle` once under the plugin's deadline. On `Err` the instance
    /// must be dropped: a trapped component cannot be entered again.
    pub fn handle(&mut self, msg: &Message) -> Result<Handled, CallError> {
        self.handle_with(msg, None)
    }

    /// [`handle`](Self::handle) with the JetStream metadata the guest can read
    /// through the `delivery` interface.
    pub(crate) fn handle_with(
        &mut self,
        msg: &Message,
        delivery: Option<JetstreamInfo>,
    ) -> Result<Handled, CallError> {
        self.store.data_mut().delivery = delivery;
        self.arm_deadline();
        self.store.data_mut().outbox.clear();
        let result = self.handler.call_handle(&mut self.store, msg);
        match result {
            Ok(result) => {
                let outbox = std::mem::take(&mut self.store.data_mut().outbox);
                Ok(self.handled(msg.reply_to.is_some(), result, outbox))
            }
            Err(e) => {
                self.store.data_mut().outbox.clear();
                Err(self.call_error(e))
            }
        }
    }

    /// Whether [`handle_batch`](Self::handle_batch) is available.
    pub fn batched(&self) -> bool {
        self.batch.is_some()
    }

    /// Run `handle-batch` once on `batch`, under one deadline (the plugin's
    /// timeout), into `results` (one [`BatchResult`](super::BatchResult) per
    /// message, in order), and check each message's publishes as the
    /// `publisher` import would: a refused one rejects its message. On `Err`
    /// nothing of the batch may be acted on and the instance must be dropped.
    ///
    /// # Panics
    /// When the plugin has no batch export ([`batched`](Self::batched)).
    pub fn handle_batch(
        &mut self,
        batch: &mut Batch,
        results: &mut BatchResults,
    ) -> Result<(), CallError> {
        if batch.carries_jetstream() != self.plugin.batch_jetstream {
            return Err(CallError::Contract(
                "the batch is not in the encoding this plugin reads (use Plugin::new_batch)".into(),
            ));
        }
        self.store.data_mut().delivery = None;
        self.arm_deadline();
        let export = self
            .batch
            .as_ref()
            .expect("handle_batch on an unbatched plugin");
        let out = export
            .call_handle_batch(&mut self.store, batch.encoded())
            .map_err(|e| self.call_error(e))?;
        codec::decode(Bytes::from(out), batch.len(), results).map_err(CallError::Contract)?;
        let mut start = 0;
        for (i, result) in results.results.iter_mut().enumerate() {
            let publishes = &results.publishes[start..start + result.publishes];
            start += result.publishes;
            if matches!(result.outcome, Outcome::Ok(_))
                && let Some(reason) = self.refusal(publishes)
            {
                result.outcome = Outcome::Reject(reason);
            }
            self.check_reply(batch.asks_reply(i), &mut result.outcome);
        }
        Ok(())
    }

    fn arm_deadline(&mut self) {
        let ticks = self.plugin.runtime.deadline_ticks(self.plugin.timeout);
        self.store.set_epoch_deadline(ticks);
        self.store.data_mut().deadline = Some(std::time::Instant::now() + self.plugin.timeout);
    }

    /// Why the publishes of one message of a batch are refused, checked
    /// like the import checks them: the first refusal, if any.
    fn refusal(&self, publishes: &[Outgoing]) -> Option<String> {
        let shared = &self.plugin.shared;
        publishes.iter().enumerate().find_map(|(i, p)| {
            let e = shared
                .check_publish(&p.subject, p.payload.len(), &p.headers, i)
                .err()?;
            Some(format!("publish failed: {}", describe_publish_error(&e)))
        })
    }

    /// The guest's answer for one message as an [`Outcome`], with the
    /// publishes it made (sent only on `Ok`).
    fn handled(
        &self,
        asks_reply: bool,
        result: Result<Option<Vec<u8>>, HandleError>,
        mut outbox: Vec<Outgoing>,
    ) -> Handled {
        let mut outcome = match result {
            Ok(reply) => Outcome::Ok(reply),
            Err(HandleError::Retry(reason)) => Outcome::Retry(reason),
            Err(HandleError::Reject(reason)) => Outcome::Reject(reason),
        };
        if !self.check_reply(asks_reply, &mut outcome) {
            outbox.clear();
        }
        Handled { outcome, outbox }
    }

    /// A reply larger than the server's max payload cannot be delivered:
    /// reject instead, so nothing is published and the requester hears why
    /// instead of timing out. `false` when it rejected.
    fn check_reply(&self, asks_reply: bool, outcome: &mut Outcome) -> bool {
        let max = self.plugin.shared.max_payload.load(Ordering::Relaxed);
        if let Outcome::Ok(Some(reply)) = outcome
            && asks_reply
            && max > 0
            && reply.len() > max
        {
            *outcome = Outcome::Reject(format!(
                "reply of {} bytes is larger than the server's max_payload of {max} bytes",
                reply.len()
            ));
            return false;
        }
        true
    }

    fn call_error(&self, e: wasmtime::Error) -> CallError {
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            CallError::Timeout(self.plugin.timeout)
        } else {
            let full = format!("{e:#}");
            // The backtrace is for whoever debugs the plugin, not for the
            // requester that gets this reason in its error reply.
            tracing::debug!(plugin = self.plugin.name(), trap = %full, "handler trapped");
            CallError::Trap(trap_summary(&full))
        }
    }
}

/// A trap without wasmtime's backtrace: one line for logs, error replies and
/// `wasmgate invoke`, without code offsets that change with every build of
/// the plugin (`RUST_LOG=wasmgate=debug` logs it all).
/// `error while executing at wasm backtrace:\n  0: 0x70fe - m!f\n ... : wasm trap: ...`
/// becomes `wasm trap: ...`.
fn trap_summary(text: &str) -> String {
    const MARK: &str = "error while executing at wasm backtrace:";
    let Some(at) = text.find(MARK) else {
        return text.lines().next().unwrap_or(text).to_string();
    };
    let head = &text[..at];
    let last = text.lines().last().unwrap_or_default();
    // The last frame, `  11: 0x2e44 - module!function: <cause>`, carries the cause.
    let cause = last
        .split_once(" - ")
        .and_then(|(_, frame)| frame.split_once(": "))
        .map(|(_, cause)| cause);
    match cause {
        Some(cause) => format!("{head}{cause}"),
        None => format!("{head}{}", MARK.trim_end_matches(':')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_lose_their_backtrace() {
        let text = "error while executing at wasm backtrace:\n    \
                    0:   0x70fe - <unknown>!<wasm function 128>\n   \
                    11:   0x2e44 - <unknown>!<wasm function 45>: wasm trap: wasm `unreachable` instruction executed";
        assert_eq!(
            trap_summary(text),
            "wasm trap: wasm `unreachable` instruction executed"
        );
        assert_eq!(trap_summary("boom\nmore"), "boom");
    }
}

//! `wasmgate:plugin/requester` (WIT 0.1.5): a request and its one reply,
//! sent during the call. The checks are the publisher's (subject syntax,
//! headers, the server's max payload) with the plugin's own grant,
//! `request_allow` (nothing by default), under the same reserved-namespace
//! rules of [`crate::grants`].
//!
//! The call blocks its thread for the reply: host functions are synchronous
//! here (see [`crate::runtime`]), and the wait happens through
//! [`while_blocked`](crate::dispatch::pool::while_blocked), which gives the
//! call's slot back meanwhile, so a plugin waiting on another plugin of the
//! same gateway does not hold the thread that plugin needs. The wait is
//! capped by nine tenths of what is left of the handler's deadline (the
//! rest is the handler's, to act on the outcome): the epoch deadline cannot
//! interrupt a host call, so the host keeps it here.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;

use super::publisher::Refusal;
use crate::runtime::bindings::wasmgate::plugin::requester::{Host, RequestError};
use crate::runtime::bindings::wasmgate::plugin::types::Message;
use crate::runtime::{HostState, PluginShared};
use crate::subject;

impl Host for HostState {
    fn request(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
        timeout_ms: u32,
    ) -> Result<Message, RequestError> {
        let plugin = self.plugin.clone();
        let counts = &plugin.counters.requests;
        plugin.check_request(&subject, payload.len(), &headers)?;
        // A tenth of what is left stays the handler's, to act on the outcome
        // before the deadline interrupts it.
        let left = self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now()).mul_f64(0.9)
        });
        let timeout = Duration::from_millis(timeout_ms.into()).min(left);
        if timeout.is_zero() {
            counts.timed_out.fetch_add(1, Ordering::Relaxed);
            return Err(RequestError::TimedOut);
        }
        let unavailable = |why: &str| {
            counts.unavailable.fetch_add(1, Ordering::Relaxed);
            Err(RequestError::Unavailable(why.to_string()))
        };
        let Some(runtime) = plugin.nats.runtime.clone() else {
            return unavailable(
                "no NATS connection: the plugin runs outside a gateway (wasmgate invoke --nats URL gives it one)",
            );
        };
        let Some(client) = plugin.nats.client.borrow().clone() else {
            return unavailable("not connected to NATS");
        };
        let mut request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        if !headers.is_empty() {
            let mut map = async_nats::HeaderMap::new();
            for (name, value) in &headers {
                map.append(name.as_str(), value.as_str());
            }
            request = request.headers(map);
        }
        let span = tracing::debug_span!(
            "request",
            plugin = plugin.name.as_str(),
            messaging.system = "nats",
            messaging.destination.name = subject.as_str(),
            messaging.operation.type = "send",
        );
        let reply = crate::dispatch::pool::while_blocked(|| {
            let _entered = span.enter();
            // The wait for the reply alone, not for a slot afterwards.
            let started = Instant::now();
            let reply = runtime.block_on(client.send_request(subject, request));
            plugin.counters.request_time.record(started.elapsed());
            reply
        });
        match reply {
            Ok(msg) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                let mut msg = Message::from(msg);
                // The gateway's own inbox is nothing the guest needs.
                msg.subject = String::new();
                msg.reply_to = None;
                Ok(msg)
            }
            Err(e) => match e.kind() {
                RequestErrorKind::TimedOut => {
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                    Err(RequestError::TimedOut)
                }
                RequestErrorKind::NoResponders => {
                    counts.no_responders.fetch_add(1, Ordering::Relaxed);
                    Err(RequestError::NoResponders)
                }
                _ => unavailable(&e.to_string()),
            },
        }
    }
}

impl PluginShared {
    /// Whether this plugin may send this request now. A refusal is counted.
    fn check_request(
        &self,
        subject: &str,
        payload_len: usize,
        headers: &[(String, String)],
    ) -> Result<(), RequestError> {
        let counts = &self.counters.requests;
        let refused = |e: RequestError| {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if let Err(e) = subject::validate_publish(subject) {
            return refused(RequestError::InvalidSubject(e.to_string()));
        }
        if let Err(denied) = crate::grants::check(&self.request_allow, subject) {
            counts.forbidden.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                plugin = self.name.as_str(),
                %subject,
                rule = ?denied,
                "request refused by request_allow"
            );
            return refused(RequestError::Forbidden(denied.reason(subject)));
        }
        match self.check_message(payload_len, headers) {
            Ok(()) => Ok(()),
            Err(Refusal::MalformedHeader(why)) => refused(RequestError::InvalidHeader(why)),
            Err(Refusal::ReservedHeader(why)) => {
                counts.forbidden.fetch_add(1, Ordering::Relaxed);
                refused(RequestError::Forbidden(why))
            }
            Err(Refusal::TooLarge(max)) => refused(RequestError::PayloadTooLarge(max as u64)),
        }
    }
}

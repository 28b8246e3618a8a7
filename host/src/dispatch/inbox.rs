//! A core binding's inbox: where its messages wait for the plugin, bounded
//! by bytes rather than by a count of messages.
//!
//! The client hands each subscription's messages to a channel of
//! `nats.subscription_capacity` messages and drops what does not fit there,
//! telling only "slow consumer" (events, not messages, and those events can
//! themselves be dropped). A reader task per subscription moves every
//! message from that channel into the inbox at once, so the client's channel
//! stays near empty and a burst waits here instead, where the gateway decides
//! what is kept: a message is taken while the binding holds less than its
//! `buffer` and the whole gateway less than `nats.buffer_limit`; past either,
//! it is dropped, counted on the binding (`dropped`, in messages) and
//! reported in a WARN naming the binding, at most once per [`WARN_EVERY`].
//!
//! A message costs its wire length (subject, reply, headers, payload) plus
//! [`OVERHEAD`] bytes for the client's message value and the queue slot, so
//! the limits bound memory, not payload alone.
//!
//! On shutdown (the connection's `drain` token) the reader drains the
//! subscription: the server stops sending, what it already sent is moved in,
//! and then the inbox ends, so the worker handles everything that arrived.
//! Retiring (`stop`) ends the reader at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::status::BindingCounters;
use crate::throttle::Throttle;

/// Bytes counted per message on top of its wire length: the client's
/// `Message` (about 180 bytes) and the queue's slot.
pub const OVERHEAD: usize = 256;

/// Drops are logged at most this often per binding (with how many since).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Bytes held, against a limit; shared by the inboxes it covers.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    /// Take `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            self.held.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// What one message counts against the budgets.
fn cost(m: &Message) -> usize {
    m.length + OVERHEAD
}

/// The budgets a message must fit in: its binding's and the gateway's.
#[derive(Debug, Clone)]
pub struct Budgets {
    pub binding: Arc<Budget>,
    pub gateway: Arc<Budget>,
}

impl Budgets {
    fn take(&self, n: usize) -> Result<(), Full> {
        if !self.binding.take(n) {
            return Err(Full::Binding);
        }
        if !self.gateway.take(n) {
            self.binding.give(n);
            return Err(Full::Gateway);
        }
        Ok(())
    }

    fn give(&self, n: usize) {
        self.binding.give(n);
        self.gateway.give(n);
    }
}

#[derive(Debug, Clone, Copy)]
enum Full {
    Binding,
    Gateway,
}

/// The worker's end: messages in arrival order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    budgets: Budgets,
}

/// Who the reader reads for, for its counters and log lines.
pub struct Reader {
    pub plugin: String,
    pub subject: String,
    pub counters: Arc<BindingCounters>,
    pub budgets: Budgets,
    /// Retire: stop reading at once.
    pub stop: CancellationToken,
    /// Shutdown: drain the subscription, then end the inbox.
    pub drain: CancellationToken,
    /// How long a drain may take before the inbox ends anyway.
    pub drain_timeout: Duration,
}

impl Inbox {
    /// Start moving `sub`'s messages into a new inbox; `spawn` runs the
    /// reader task (the connection's task tracker, so a drain waits for it).
    pub fn start(
        sub: Subscriber,
        reader: Reader,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    ) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let budgets = reader.budgets.clone();
        // Unconstrained by tokio's cooperative budget: with it the reader
        // yielded after every 128 messages while the client's connection
        // task parsed tens of thousands per turn, and the client's channel
        // overflowed (16 % of a 300 k burst). Each step here is a move into
        // a queue, and the loop waits once the channel is empty.
        spawn(Box::pin(tokio::task::unconstrained(reader.run(sub, tx))));
        Inbox { rx, budgets }
    }

    /// The next message; `None` once the reader has ended (drained, retired,
    /// or the subscription closed).
    pub async fn recv(&mut self) -> Option<Message> {
        let m = self.rx.recv().await?;
        self.budgets.give(cost(&m));
        Some(m)
    }

    /// A message already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Message> {
        let m = self.rx.try_recv().ok()?;
        self.budgets.give(cost(&m));
        Some(m)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // What is still queued gives its bytes back; the reader's later
        // sends fail and give theirs back themselves.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            self.budgets.give(cost(&m));
        }
    }
}

impl Reader {
    async fn run(self, mut sub: Subscriber, tx: mpsc::UnboundedSender<Message>) {
        let mut drops = Throttle::new(WARN_EVERY);
        let mut full = Full::Binding;
        let mut deadline: Option<Instant> = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = self.drain.cancelled(), if deadline.is_none() => {
                    if let Err(e) = sub.drain().await {
                        tracing::warn!(plugin = %self.plugin, subject = %self.subject, error = %e, "drain request failed");
                    }
                    deadline = Some(Instant::now() + self.drain_timeout);
                    continue;
                }
                _ = sleep_until(deadline) => break,
                m = sub.next() => m,
            };
            let Some(m) = next else { break };
            let n = cost(&m);
            match self.budgets.take(n) {
                Ok(()) => {
                    if let Err(unsent) = tx.send(m) {
                        // The worker is gone (retired): nothing more to do.
                        self.budgets.give(cost(&unsent.0));
                        break;
                    }
                    if let Some(held) = drops.due() {
                        self.warn(held, full);
                    }
                }
                Err(why) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    full = why;
                    if let Some(held) = drops.hit() {
                        self.warn(held, full);
                    }
                }
            }
        }
        if let Some(held) = drops.rest() {
            self.warn(held, full);
        }
    }

    fn warn(&self, dropped: u64, full: Full) {
        let (which, budget) = match full {
            Full::Binding => (
                "the binding's buffer is full (raise its `buffer` or nats.binding_buffer)",
                &self.budgets.binding,
            ),
            Full::Gateway => (
                "the gateway's buffers are full (raise nats.buffer_limit)",
                &self.budgets.gateway,
            ),
        };
        tracing::warn!(
            plugin = %self.plugin,
            subject = %self.subject,
            dropped,
            held_bytes = budget.held(),
            limit_bytes = budget.limit(),
            "messages dropped: {which}"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_takes_what_fits_and_gets_it_back() {
        let b = Budget::new(1000);
        assert!(b.take(600));
        assert!(!b.take(500), "600 + 500 is past 1000");
        assert_eq!(b.held(), 600, "a refused take leaves nothing held");
        assert!(b.take(400));
        b.give(600);
        b.give(400);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_gateway_budget_refusing_gives_the_binding_its_bytes_back() {
        let budgets = Budgets {
            binding: Budget::new(10_000),
            gateway: Budget::new(100),
        };
        assert!(matches!(budgets.take(500), Err(Full::Gateway)));
        assert_eq!(budgets.binding.held(), 0);
        assert!(budgets.take(100).is_ok());
        assert_eq!((budgets.binding.held(), budgets.gateway.held()), (100, 100));
        budgets.give(100);
        assert_eq!((budgets.binding.held(), budgets.gateway.held()), (0, 0));
    }
}

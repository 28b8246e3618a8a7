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
use futures::{FutureExt, StreamExt};
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
    /// Room left for a chunk now: the smaller of the two budgets' room.
    fn room(&self) -> Result<usize, Full> {
        let binding = self.binding.limit.saturating_sub(self.binding.held());
        let gateway = self.gateway.limit.saturating_sub(self.gateway.held());
        match (binding, gateway) {
            (0, _) => Err(Full::Binding),
            (_, 0) => Err(Full::Gateway),
            (b, g) if b <= g => Ok(b),
            (_, g) => Ok(g),
        }
    }

    fn add(&self, n: usize) {
        self.binding.held.fetch_add(n, Ordering::Relaxed);
        self.gateway.held.fetch_add(n, Ordering::Relaxed);
    }

    fn give(&self, n: usize) {
        self.binding.give(n);
        self.gateway.give(n);
    }

    /// Which one `extra` more bytes would overflow, for the log line.
    fn which_full_after(&self, extra: usize) -> Full {
        if self.binding.held().saturating_add(extra) > self.binding.limit {
            Full::Binding
        } else {
            Full::Gateway
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Full {
    Binding,
    Gateway,
}

/// Messages moved together, and what they count against the budgets: the
/// reader takes what the client has queued in one go and the budgets are
/// updated once per chunk, not per message (per-message updates of
/// counters shared between the reader's thread and the worker's cost more
/// than the move itself).
struct Chunk {
    messages: Vec<Message>,
    bytes: usize,
    /// When its first message was read (for the queue-wait histogram).
    at: std::time::Instant,
}

/// Most messages, and bytes, in one chunk. A budget can be passed by at
/// most one chunk per reader (its room is read once per chunk).
const CHUNK: usize = 512;
const CHUNK_BYTES: usize = 1 << 20;

/// The worker's end: messages in arrival order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Chunk>,
    /// The chunk being taken (its bytes already given back).
    taking: std::collections::VecDeque<Message>,
    /// When that chunk arrived.
    taking_at: std::time::Instant,
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
        Inbox {
            rx,
            taking: std::collections::VecDeque::new(),
            taking_at: std::time::Instant::now(),
            budgets,
        }
    }

    fn take(&mut self, chunk: Chunk) -> Option<Message> {
        self.budgets.give(chunk.bytes);
        self.taking_at = chunk.at;
        self.taking.extend(chunk.messages);
        self.taking.pop_front()
    }

    /// When the message last taken arrived in the gateway.
    pub fn arrived(&self) -> std::time::Instant {
        self.taking_at
    }

    /// The next message; `None` once the reader has ended (drained, retired,
    /// or the subscription closed).
    pub async fn recv(&mut self) -> Option<Message> {
        if let Some(m) = self.taking.pop_front() {
            return Some(m);
        }
        let chunk = self.rx.recv().await?;
        self.take(chunk)
    }

    /// A message already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Message> {
        if let Some(m) = self.taking.pop_front() {
            return Some(m);
        }
        let chunk = self.rx.try_recv().ok()?;
        self.take(chunk)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // What is still queued gives its bytes back; the reader's later
        // sends fail and give theirs back themselves.
        self.rx.close();
        while let Ok(chunk) = self.rx.try_recv() {
            self.budgets.give(chunk.bytes);
        }
    }
}

impl Reader {
    async fn run(self, mut sub: Subscriber, tx: mpsc::UnboundedSender<Chunk>) {
        let mut drops = Throttle::new(WARN_EVERY);
        let mut full = Full::Binding;
        let mut deadline: Option<Instant> = None;
        let mut ended = false;
        while !ended {
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
            let Some(first) = next else { break };
            let at = std::time::Instant::now();
            // The first message and whatever else the client has queued.
            let mut room = self.budgets.room();
            let mut chunk = Chunk {
                messages: Vec::new(),
                bytes: 0,
                at,
            };
            let mut dropped = 0u64;
            let mut m = Some(first);
            while let Some(msg) = m.take() {
                let n = cost(&msg);
                match room {
                    Ok(r) if chunk.bytes + n <= r => {
                        chunk.bytes += n;
                        chunk.messages.push(msg);
                    }
                    Ok(_) => {
                        dropped += 1;
                        full = self.budgets.which_full_after(chunk.bytes + n);
                        room = Ok(0);
                    }
                    Err(why) => {
                        dropped += 1;
                        full = why;
                    }
                }
                if chunk.messages.len() >= CHUNK || chunk.bytes >= CHUNK_BYTES {
                    break;
                }
                match sub.next().now_or_never() {
                    Some(Some(next)) => m = Some(next),
                    Some(None) => ended = true,
                    None => {}
                }
            }
            if dropped > 0 {
                self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
                for _ in 0..dropped {
                    if let Some(held) = drops.hit() {
                        self.warn(held, full);
                    }
                }
            } else if let Some(held) = drops.due() {
                self.warn(held, full);
            }
            if chunk.messages.is_empty() {
                continue;
            }
            let bytes = chunk.bytes;
            self.budgets.add(bytes);
            if tx.send(chunk).is_err() {
                // The worker is gone (retired): nothing more to do.
                self.budgets.give(bytes);
                break;
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

    fn budgets(binding: u64, gateway: u64) -> Budgets {
        Budgets {
            binding: Budget::new(binding),
            gateway: Budget::new(gateway),
        }
    }

    #[test]
    fn the_room_is_the_smaller_of_the_two_budgets() {
        let b = budgets(1000, 600);
        assert_eq!(b.room().unwrap(), 600);
        b.add(500);
        assert_eq!(
            b.room().unwrap(),
            100,
            "the gateway's 100 left, not the binding's 500"
        );
        assert!(matches!(b.which_full_after(200), Full::Gateway));
        b.add(100);
        assert!(matches!(b.room(), Err(Full::Gateway)));
        b.give(600);
        assert_eq!((b.binding.held(), b.gateway.held()), (0, 0));
    }

    #[test]
    fn a_full_binding_is_named_before_the_gateway() {
        let b = budgets(100, 10_000);
        b.add(100);
        assert!(matches!(b.room(), Err(Full::Binding)));
        assert!(matches!(b.which_full_after(1), Full::Binding));
    }
}

//! Latency histograms of one binding, recorded on the hot path with a few
//! relaxed atomic adds and read by `/metrics` at scrape time.
//!
//! Three per binding (`[telemetry] histograms`, on by default):
//! - **handler duration**: one observation per call into the plugin — a
//!   `handle` call per message, or one `handle-batch` call for its batch;
//! - **queue wait**: per message, from its arrival in the gateway (a core
//!   message when its reader moves it into the binding's inbox, a JetStream
//!   message when the worker takes it from its pull) to the start of the
//!   call that handles it, so it covers the inbox, the wait for a pool
//!   thread and the messages before it in its batch;
//! - **settle delay** (JetStream): per message settled, from the time the
//!   stream stored it (its ack subject, millisecond resolution) to its ack,
//!   nak or term being sent: how far behind the stream the binding runs.
//!
//! The buckets are fixed (5 µs to 10 s, roughly ×2–2.5 apart) so that the
//! hot path does no allocation and no lock: finding a bucket is a search of
//! 20 integers, recording it two atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bounds of the buckets, in seconds; one more bucket takes the rest.
pub const BOUNDS: [f64; 20] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bounds in nanoseconds, for the hot path.
const BOUNDS_NS: [u64; 20] = {
    let mut ns = [0u64; 20];
    let micros: [u64; 20] = [
        5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
        250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ];
    let mut i = 0;
    while i < 20 {
        ns[i] = micros[i] * 1_000;
        i += 1;
    }
    ns
};

/// One histogram: a count per bucket (not cumulative) and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 21],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment, in the form Prometheus encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub sum_secs: f64,
    pub count: u64,
    /// `(upper bound in seconds, count in that bucket)`, the last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.record_n(d, 1);
    }

    /// `n` observations of the same duration (the messages of one batch).
    pub fn record_n(&self, d: Duration, n: u64) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Snapshot {
            sum_secs: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: counts.iter().sum(),
            buckets: BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(counts)
                .collect(),
        }
    }
}

/// The latency histograms of one binding.
#[derive(Debug, Default)]
pub struct Times {
    pub handler: Histogram,
    pub queue_wait: Histogram,
    pub settle_delay: Histogram,
}

impl Times {
    /// The queue wait of a message that arrived at `arrived`, its call starting at `start`.
    pub fn waited(&self, arrived: Instant, start: Instant, n: u64) {
        self.queue_wait
            .record_n(start.saturating_duration_since(arrived), n);
    }

    /// The settle delay of a message the stream stored at `stored_ms` (ms since the epoch).
    pub fn settled(&self, stored_ms: u64) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.settle_delay
            .record(Duration::from_millis(now_ms.saturating_sub(stored_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.record(Duration::from_micros(5)); // on a bound: that bucket
        h.record(Duration::from_nanos(5_001)); // just past it: the next
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // past the last bound: +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), 21);
        assert_eq!(s.buckets[0], (5e-6, 1));
        assert_eq!(s.buckets[1], (1e-5, 1));
        assert_eq!(s.buckets[9], (5e-3, 1));
        assert_eq!(s.buckets[20], (f64::INFINITY, 1));
        let sum = 5e-6 + 5.001e-6 + 3e-3 + 60.0;
        assert!((s.sum_secs - sum).abs() < 1e-9, "{}", s.sum_secs);
    }

    #[test]
    fn a_batch_records_its_messages_at_once() {
        let h = Histogram::default();
        h.record_n(Duration::from_micros(200), 128);
        let s = h.snapshot();
        assert_eq!(s.count, 128);
        assert_eq!(s.buckets[5], (2.5e-4, 128));
        assert!((s.sum_secs - 128.0 * 200e-6).abs() < 1e-9);
    }

    #[test]
    fn the_bounds_agree() {
        for (s, ns) in BOUNDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }
}

//! Rate limits for log lines that a flood of events would otherwise repeat
//! (a slow consumer, dropped messages): the first occurrence is logged at
//! once, later ones at most once per period, with how many were held back.

use std::time::Duration;

use tokio::time::Instant;

/// One rate-limited line.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// One occurrence: `Some(n)` when it is to be logged now, `n` counting
    /// it and those held back since the last line; `None` when it is held.
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.held += 1;
        self.due()
    }

    /// Occurrences held back, released when the period has passed (for a
    /// line saying how many came after the last one logged).
    pub(crate) fn due(&mut self) -> Option<u64> {
        if self.held == 0 || self.last.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.held))
    }

    /// Whatever is held back, regardless of the period (at the end).
    pub(crate) fn rest(&mut self) -> Option<u64> {
        (self.held > 0).then(|| std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_is_logged_then_one_line_per_period_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.hit(), Some(1), "the first at once");
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        assert_eq!(t.due(), None, "not before the period");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.due(), Some(2), "the two held back");
        assert_eq!(t.due(), None, "nothing left");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(t.hit(), None, "within the period again");
        assert_eq!(t.rest(), Some(1));
        assert_eq!(t.rest(), None);
    }
}

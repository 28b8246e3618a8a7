//! The reconnect backoff policy (the seed's `calculateBackoff`) and the
//! application-level reconnect loop that uses it.
//!
//! Delay before retry `n` (1-based) is `initial × factor^(n-1)`, capped at
//! `max`, then shortened by a random fraction of at most `jitter` — jitter
//! only ever shortens, so the cap holds. The same policy drives the client's
//! own reconnect (through `reconnect_delay_callback`) and the supervisor's
//! loop, so operators tune one thing.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::config::ReconnectConfig;

/// Exponential backoff with a cap and jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
}

impl Backoff {
    pub fn from_config(c: &ReconnectConfig) -> Self {
        Backoff {
            initial: c.initial_backoff,
            max: c.max_backoff,
            factor: c.backoff_factor,
            jitter: c.jitter,
        }
    }

    /// The delay before attempt `n` without jitter: `initial × factor^(n-1)`,
    /// capped at `max`. `n = 0` is treated as 1.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1_000) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before attempt `n` with jitter drawn from `rng`:
    /// uniformly within `[base × (1 - jitter), base]`.
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let cut: f64 = rng.random_range(0.0..=self.jitter);
        base.mul_f64(1.0 - cut)
    }

    /// The delay before attempt `n`, with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }
}

/// The application-level reconnect loop gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// It stopped early: the last error was one that retrying cannot mend.
    pub permanent: bool,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.permanent {
            f.write_str(&self.last_error)
        } else {
            write!(
                f,
                "gave up after {} attempts; last error: {}",
                self.attempts, self.last_error
            )
        }
    }
}

impl std::error::Error for Exhausted {}

/// Call `attempt_fn` until it succeeds: the first try at once, then after
/// `backoff.delay(n)` following failure `n`. With `max_attempts > 0`, gives up
/// after that many failures; it gives up at once on an error `permanent`
/// says retrying cannot mend. `on_failure(n, error)` is told of every failure
/// before the wait (the supervisor publishes it in the status).
pub async fn retry<T, E, F, Fut>(
    backoff: &Backoff,
    max_attempts: u32,
    mut attempt_fn: F,
    permanent: impl Fn(&E) -> bool,
    mut on_failure: impl FnMut(u32, &E, Duration),
) -> Result<T, Exhausted>
where
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1u32;
    loop {
        match attempt_fn(attempt).await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let permanent = permanent(&error);
                if permanent || (max_attempts > 0 && attempt >= max_attempts) {
                    return Err(Exhausted {
                        attempts: attempt,
                        last_error: error.to_string(),
                        permanent,
                    });
                }
                let wait = backoff.delay(attempt);
                on_failure(attempt, &error, wait);
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    fn policy(jitter: f64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            factor: 2.0,
            jitter,
        }
    }

    #[test]
    fn base_delay_table() {
        let b = policy(0.0);
        let table = [
            (0, 100),
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1600),
            (6, 2000),
            (7, 2000),
            (100, 2000),
            (u32::MAX, 2000),
        ];
        for (attempt, ms) in table {
            assert_eq!(
                b.base_delay(attempt),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn fractional_factor_matches_the_seed() {
        // The seed's example: 200ms initial, factor 1.8, cap 5s.
        let b = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            factor: 1.8,
            jitter: 0.0,
        };
        let expect = [200.0, 360.0, 648.0, 1166.4, 2099.52, 3779.136, 5000.0];
        for (i, ms) in expect.iter().enumerate() {
            let got = b.base_delay(i as u32 + 1).as_secs_f64() * 1000.0;
            assert!((got - ms).abs() < 0.01, "attempt {}: {got} vs {ms}", i + 1);
        }
    }

    #[test]
    fn factor_one_is_constant() {
        let b = Backoff {
            factor: 1.0,
            ..policy(0.0)
        };
        for n in 1..20 {
            assert_eq!(b.base_delay(n), Duration::from_millis(100));
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let b = policy(0.5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=8 {
            let base = b.base_delay(attempt);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..500 {
                let d = b.delay_with(attempt, &mut rng);
                assert!(d <= base, "attempt {attempt}: {d:?} above {base:?}");
                assert!(
                    d >= base.mul_f64(0.5),
                    "attempt {attempt}: {d:?} below half of {base:?}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 100, "jitter should spread delays");
        }
        assert!(b.delay_with(20, &mut rng) <= b.max);
    }

    #[test]
    fn no_jitter_is_deterministic() {
        let b = policy(0.0);
        assert_eq!(b.delay(3), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_the_backoff_between_attempts() {
        let b = policy(0.0);
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let t = times.clone();
        let result = retry(
            &b,
            0,
            move |n| {
                let t = t.clone();
                async move {
                    t.lock().unwrap().push(start.elapsed());
                    if n < 5 {
                        Err(format!("refused {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| false,
            |_, _: &String, _| {},
        )
        .await
        .unwrap();
        assert_eq!(result, 5);
        let ms: Vec<u128> = times
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        // Tries at 0, then after 100, 200, 400, 800 ms of waiting.
        assert_eq!(ms, [0, 100, 300, 700, 1500]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_max_attempts() {
        let b = policy(0.0);
        let start = Instant::now();
        let mut failures = Vec::new();
        let err = retry(
            &b,
            4,
            |n| async move { Err::<(), _>(format!("refused {n}")) },
            |_| false,
            |n, e: &String, wait| failures.push((n, e.clone(), wait)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 4);
        assert_eq!(err.last_error, "refused 4");
        assert_eq!(failures.len(), 3, "no wait after the last attempt");
        assert_eq!(
            failures[2],
            (3, "refused 3".to_string(), Duration::from_millis(400))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_is_capped_at_max_backoff() {
        let b = policy(0.0);
        let mut waits = Vec::new();
        let _ = retry(
            &b,
            10,
            |_| async { Err::<(), _>("down") },
            |_| false,
            |_, _: &&str, wait| waits.push(wait.as_millis()),
        )
        .await;
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_a_permanent_error() {
        let b = policy(0.0);
        let start = Instant::now();
        let mut failures = 0;
        let err = retry(
            &b,
            30,
            |n| async move {
                Err::<(), _>(if n < 3 {
                    "connection refused".to_string()
                } else {
                    "authorization violation".to_string()
                })
            },
            |e: &String| e.starts_with("authorization"),
            |_, _: &String, _| failures += 1,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            Exhausted {
                attempts: 3,
                last_error: "authorization violation".into(),
                permanent: true
            }
        );
        assert_eq!(err.to_string(), "authorization violation", "said once");
        assert_eq!(failures, 2, "transient failures were retried");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }
}

//! Medians and spreads of repeated runs, as they go into the JSON.

use serde::Serialize;

/// One round of a section's runs: round 0 warms up with a fifth of the
/// messages and is not recorded (the first run in a fresh process pays for
/// growing the heap, spawning threads and first-time initialisation), then
/// `runs` recorded rounds, numbered from 0, with every message.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub warmup: bool,
    /// The recorded run's number (0 for the warm-up too).
    pub run: usize,
    pub messages: u64,
}

pub fn rounds(runs: usize, messages: u64) -> impl Iterator<Item = Round> {
    (0..=runs).map(move |round| Round {
        warmup: round == 0,
        run: round.saturating_sub(1),
        messages: if round == 0 {
            (messages / 5).max(1)
        } else {
            messages
        },
    })
}

/// Several runs of one measurement: every value, the median, and the spread.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max - min) / median.
    pub spread: f64,
    pub runs: Vec<f64>,
}

impl Sample {
    pub fn new(unit: &'static str, runs: Vec<f64>) -> Sample {
        let median = median(&runs);
        let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Sample {
            unit,
            median,
            min,
            max,
            spread: if median == 0.0 {
                0.0
            } else {
                (max - min) / median
            },
            runs,
        }
    }

    pub fn show(&self) -> String {
        format!(
            "median {} {} (min {}, max {}, n={})",
            fmt(self.median),
            self.unit,
            fmt(self.min),
            fmt(self.max),
            self.runs.len()
        )
    }
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A number with three significant digits, without exponent notation.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (`self` for this process); `None` where there is no
/// such file. Clock ticks are taken as 100 per second (Linux's `USER_HZ`).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

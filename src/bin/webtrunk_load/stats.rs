//! Counters every client bumps, failures tallied by kind with one example each (a run of
//! 100,000 clients must not print 100,000 lines), and latency percentiles.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Clients whose task has started.
    pub(crate) started: AtomicU64,
    /// Clients with an open WebSocket.
    pub(crate) connected: AtomicU64,
    /// Clients past setup and not dropped since: the connections being held.
    pub(crate) ready: AtomicU64,
    /// Clients whose REGISTER got a 200.
    pub(crate) registered: AtomicU64,
    /// Clients (hold) or requests (rate) that failed; each counted once.
    pub(crate) failed: AtomicU64,
    /// Clients past their first request, whichever way it went.
    pub(crate) settled: AtomicU64,
    /// CRLF answers to our CRLFCRLF keep-alives.
    pub(crate) pongs: AtomicU64,
    /// Requests that got a final response or failed (rate).
    pub(crate) requests: AtomicU64,
    /// Requests answered 2xx (rate).
    pub(crate) ok: AtomicU64,
    /// Requests answered with a digest challenge we then answered (rate).
    pub(crate) challenged: AtomicU64,
    /// Client tasks that have returned.
    pub(crate) finished: AtomicU64,
    failures: Mutex<BTreeMap<String, Tally>>,
}

#[derive(Debug)]
struct Tally {
    count: u64,
    example: String,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one failure under `kind`, keeping the first `detail` seen for it.
    pub(crate) fn fail(&self, kind: impl Into<String>, detail: impl Display) {
        Self::bump(&self.failed);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.entry(kind.into()).or_insert_with(|| Tally { count: 0, example: detail.to_string() }).count += 1;
    }

    /// One line per kind of failure, most frequent first.
    pub(crate) fn failure_summary(&self) -> Vec<String> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines: Vec<_> = failures.iter().collect();
        lines.sort_by_key(|(_, tally)| std::cmp::Reverse(tally.count));
        lines.into_iter().map(|(kind, tally)| format!("{kind}: {} (first: {})", tally.count, tally.example)).collect()
    }
}

/// Latencies in microseconds, summarised by nearest rank.
#[derive(Debug, Default)]
pub(crate) struct Latencies(Vec<u32>);

impl Latencies {
    pub(crate) fn record(&mut self, micros: u128) {
        self.0.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    pub(crate) fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub(crate) fn sort(&mut self) {
        self.0.sort_unstable();
    }

    /// The `p`-th percentile in milliseconds of sorted samples; 0 when there are none.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        f64::from(self.0[rank.clamp(1, self.0.len()) - 1]) / 1000.0
    }
}

/// A number for the JSON line: finite, three decimals.
pub(crate) struct Fixed(pub(crate) f64);

impl Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.0.is_finite() { self.0 } else { 0.0 };
        write!(f, "{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for micros in (1..=100).rev() {
            l.record(micros * 1000);
        }
        l.sort();
        assert_eq!(l.percentile_ms(50.0), 50.0);
        assert_eq!(l.percentile_ms(99.0), 99.0);
        assert_eq!(l.percentile_ms(100.0), 100.0);
        assert_eq!(Latencies::default().percentile_ms(99.0), 0.0);
    }

    #[test]
    fn failures_are_tallied_with_the_first_example() {
        let stats = Stats::default();
        stats.fail("tcp connect", "refused");
        stats.fail("tcp connect", "reset");
        stats.fail("status 501", "501 to REGISTER");
        assert_eq!(Stats::read(&stats.failed), 3);
        assert_eq!(
            stats.failure_summary(),
            ["tcp connect: 2 (first: refused)", "status 501: 1 (first: 501 to REGISTER)"]
        );
    }
}

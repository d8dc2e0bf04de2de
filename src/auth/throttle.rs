//! Failure throttling per source: more than `max_failures` failed attempts within
//! `failure_window` block the source for `block_time`, during which no hash is computed for
//! it. A success does not erase earlier failures (one valid account must not reset the
//! count); failures age out of the window, and a block starts a clean count.
//!
//! IPv6 sources are counted per /64, the smallest block a host is usually given: counting
//! single addresses would let one host rotate through 2^64 of them. IPv4-mapped IPv6 counts
//! as the IPv4 address.
//!
//! Memory is bounded: at most [`MAX_TRACKED_SOURCES`] sources with at most
//! `max_failures + 1` timestamps each. When the table is full a new source is not tracked
//! until [`Throttle::sweep`] frees room (tracked and blocked sources stay so); refusing is
//! O(1), where evicting would let a flood of fresh addresses unblock the worst offenders.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

pub(super) const MAX_TRACKED_SOURCES: usize = 100_000;

#[derive(Debug, Default)]
struct Record {
    /// Times of the failures inside the window, oldest first.
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Throttle {
    sources: HashMap<IpAddr, Record>,
    max_failures: u32,
    window: Duration,
    block: Duration,
    capacity: usize,
}

impl Throttle {
    pub(super) fn new(max_failures: u32, window: Duration, block: Duration, capacity: usize) -> Self {
        Self { sources: HashMap::new(), max_failures, window, block, capacity }
    }

    /// The remaining block time when `source` is blocked at `now`.
    pub(super) fn blocked(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.sources.get(&key(source))?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts one failure; returns the block time when this failure starts a block.
    pub(super) fn record_failure(&mut self, source: IpAddr, now: Instant) -> Option<Duration> {
        let key = key(source);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.capacity {
            return None;
        }
        let record = self.sources.entry(key).or_default();
        if record.blocked_until.is_some_and(|until| until <= now) {
            record.blocked_until = None;
        }
        prune(&mut record.failures, now, self.window);
        record.failures.push_back(now);
        if record.failures.len() as u64 <= u64::from(self.max_failures) {
            return None;
        }
        record.failures.clear();
        record.blocked_until = Some(super::deadline(now, self.block));
        Some(self.block)
    }

    /// Forgets sources with no block in force and no failure inside the window.
    pub(super) fn sweep(&mut self, now: Instant) {
        let window = self.window;
        self.sources.retain(|_, record| {
            prune(&mut record.failures, now, window);
            record.blocked_until.is_some_and(|until| until > now) || !record.failures.is_empty()
        });
    }

    pub(super) fn len(&self) -> usize {
        self.sources.len()
    }
}

fn prune(failures: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while failures.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
        failures.pop_front();
    }
}

/// The unit a failure is counted against: an IPv4 address or an IPv6 /64.
fn key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ipv6_sources_are_counted_per_64_prefix() {
        let t0 = crate::clock::now();
        let mut t = Throttle::new(1, 60 * S, 60 * S, 10);
        assert_eq!(t.record_failure("2001:db8:1:2::1".parse().unwrap(), t0), None);
        assert_eq!(t.record_failure("2001:db8:1:2:ffff::9".parse().unwrap(), t0), Some(60 * S));
        assert!(t.blocked("2001:db8:1:2::77".parse().unwrap(), t0).is_some());
        assert!(t.blocked("2001:db8:1:3::1".parse().unwrap(), t0).is_none());
        assert_eq!(t.record_failure("::ffff:192.0.2.1".parse().unwrap(), t0), None);
        assert_eq!(t.record_failure("192.0.2.1".parse().unwrap(), t0), Some(60 * S));
    }

    #[test]
    fn full_table_does_not_track_new_sources_until_swept() {
        let t0 = crate::clock::now();
        let mut t = Throttle::new(0, 10 * S, 30 * S, 2);
        assert!(t.record_failure("192.0.2.1".parse().unwrap(), t0).is_some());
        assert!(t.record_failure("192.0.2.2".parse().unwrap(), t0).is_some());
        assert_eq!(t.record_failure("192.0.2.3".parse().unwrap(), t0), None);
        assert_eq!(t.len(), 2);
        t.sweep(t0 + 29 * S);
        assert_eq!(t.len(), 2, "blocks in force are kept");
        t.sweep(t0 + 30 * S);
        assert_eq!(t.len(), 0);
        assert!(t.record_failure("192.0.2.3".parse().unwrap(), t0 + 30 * S).is_some());
    }
}

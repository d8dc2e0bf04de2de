//! Nonce-count replay protection for qop=auth (RFC 7616 §3.4, RFC 2617 §3.2.2): per nonce,
//! the highest `nc` accepted so far; a request whose `nc` is not above it is a replay.
//!
//! Memory is bounded. An entry is added only after a correct response, lives until its
//! nonce expires, and when the map is full the entry of the oldest nonce (by issue time) is
//! dropped. A dropped entry must not let its nonce be replayed, so the issue time of every
//! dropped entry raises a watermark: a nonce issued at or before the watermark that has no
//! entry is answered as stale, and the client simply retries with a fresh nonce.

use std::collections::BTreeMap;
use std::time::Instant;

use super::nonce::NonceId;

/// How many nonces are remembered at most (about 64 bytes each).
pub(super) const MAX_TRACKED_NONCES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NonceCount {
    /// Above every `nc` accepted with this nonce; now remembered.
    Fresh,
    /// Not above the highest accepted: a replay.
    Replayed,
    /// This nonce's history was dropped; treat the nonce as stale.
    Forgotten,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    highest_nc: u32,
    expires: Instant,
}

#[derive(Debug)]
pub(super) struct ReplayGuard {
    /// Keyed by nonce id, whose first 8 bytes are the big-endian issue time: the first
    /// entry is the oldest nonce.
    seen: BTreeMap<NonceId, Seen>,
    /// Issue time (unix seconds) of the newest nonce whose entry was dropped.
    forgotten_through: Option<u64>,
    capacity: usize,
}

impl ReplayGuard {
    pub(super) fn new(capacity: usize) -> Self {
        Self { seen: BTreeMap::new(), forgotten_through: None, capacity: capacity.max(1) }
    }

    /// Checks `nc` for the nonce `id` issued at `issued` and remembers it when fresh, until
    /// `expires`.
    pub(super) fn check(&mut self, id: NonceId, issued: u64, nc: u32, expires: Instant) -> NonceCount {
        if let Some(seen) = self.seen.get_mut(&id) {
            if nc <= seen.highest_nc {
                return NonceCount::Replayed;
            }
            seen.highest_nc = nc;
            return NonceCount::Fresh;
        }
        if self.forgotten_through.is_some_and(|t| issued <= t) {
            return NonceCount::Forgotten;
        }
        while self.seen.len() >= self.capacity {
            let Some((oldest, _)) = self.seen.pop_first() else { break };
            self.forget(oldest);
        }
        self.seen.insert(id, Seen { highest_nc: nc, expires });
        NonceCount::Fresh
    }

    /// Drops the entries of expired nonces.
    pub(super) fn sweep(&mut self, now: Instant) {
        let expired: Vec<NonceId> = self.seen.iter().filter(|(_, s)| s.expires <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.seen.remove(&id);
            self.forget(id);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }

    fn forget(&mut self, id: NonceId) {
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&id[..8]);
        let issued = u64::from_be_bytes(issued);
        self.forgotten_through = Some(self.forgotten_through.map_or(issued, |t| t.max(issued)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(issued: u64, n: u8) -> NonceId {
        let mut id = [n; 16];
        id[..8].copy_from_slice(&issued.to_be_bytes());
        id
    }

    #[test]
    fn nonce_count_must_increase() {
        let now = crate::clock::now();
        let mut g = ReplayGuard::new(10);
        let later = now + Duration::from_secs(300);
        assert_eq!(g.check(id(100, 1), 100, 1, later), NonceCount::Fresh);
        assert_eq!(g.check(id(100, 1), 100, 1, later), NonceCount::Replayed);
        assert_eq!(g.check(id(100, 1), 100, 3, later), NonceCount::Fresh);
        assert_eq!(g.check(id(100, 1), 100, 2, later), NonceCount::Replayed);
        assert_eq!(g.check(id(100, 2), 100, 1, later), NonceCount::Fresh, "each nonce counts on its own");
    }

    #[test]
    fn full_map_drops_the_oldest_nonce_and_its_replays_become_stale() {
        let now = crate::clock::now();
        let later = now + Duration::from_secs(300);
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.check(id(200, 1), 200, 1, later), NonceCount::Fresh);
        assert_eq!(g.check(id(100, 1), 100, 1, later), NonceCount::Fresh);
        assert_eq!(g.check(id(300, 1), 300, 1, later), NonceCount::Fresh);
        assert_eq!(g.len(), 2);
        // The nonce issued at 100 was dropped: replaying it is not accepted.
        assert_eq!(g.check(id(100, 1), 100, 1, later), NonceCount::Forgotten);
        assert_eq!(g.check(id(100, 9), 100, 5, later), NonceCount::Forgotten);
        assert_eq!(g.check(id(200, 1), 200, 1, later), NonceCount::Replayed, "kept entries still count");
    }

    #[test]
    fn sweep_drops_expired_nonces_without_reopening_them() {
        let now = crate::clock::now();
        let mut g = ReplayGuard::new(10);
        assert_eq!(g.check(id(100, 1), 100, 1, now + Duration::from_secs(10)), NonceCount::Fresh);
        assert_eq!(g.check(id(150, 1), 150, 1, now + Duration::from_secs(60)), NonceCount::Fresh);
        g.sweep(now + Duration::from_secs(10));
        assert_eq!(g.len(), 1);
        assert_eq!(g.check(id(100, 1), 100, 1, now + Duration::from_secs(10)), NonceCount::Forgotten);
    }
}

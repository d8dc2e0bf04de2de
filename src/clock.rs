//! L1: the only reader of time and of randomness. Everything above takes `now` as an
//! argument and draws ids from an [`Entropy`] it was given, so tests can fix both.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Monotonic time for timers.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock seconds since the Unix epoch, for what leaves the process (nonces, logs).
pub fn unix_time() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The one source of ids, tags, branches and nonces. Seeded from the OS in production,
/// from a number in tests.
#[derive(Debug)]
pub struct Entropy {
    rng: StdRng,
}

const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl Entropy {
    pub fn from_os() -> Self {
        Self { rng: StdRng::from_os_rng() }
    }

    pub fn seeded(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed) }
    }

    /// A random `token` of `len` lower-case letters and digits.
    pub fn token(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from(TOKEN_CHARS[self.rng.random_range(0..TOKEN_CHARS.len())])).collect()
    }

    /// A To/From tag.
    pub fn tag(&mut self) -> String {
        self.token(12)
    }

    /// An RFC 3261 branch: the magic cookie and a random part.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token(16))
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill(&mut out[..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_repeats() {
        let (mut a, mut b) = (Entropy::seeded(7), Entropy::seeded(7));
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.branch(), b.branch());
        assert!(Entropy::seeded(7).branch().starts_with("z9hG4bK"));
        assert_ne!(Entropy::seeded(7).tag(), Entropy::seeded(8).tag());
    }
}

//! RFC 3263 resolutions of trunk targets named by host name, kept sans-IO: the engine
//! asks the driver through [`ResolveRequest`]s and gets [`Input::Resolved`] back. Each
//! answer is kept until its TTL runs out and asked again at 90% of it, so a call never
//! waits on DNS; a name without a live answer is skipped like a target that is down.
//! Failures are retried with backoff (5 s doubling to 60 s) and logged once per change.
//!
//! [`Input::Resolved`]: super::Input::Resolved

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::transport::TransportKind;

/// First retry after a failed resolution; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// An answer is never kept shorter than this, so a zero TTL cannot make us ask in a loop.
const TTL_MIN: Duration = Duration::from_secs(1);

/// A name the engine needs resolved: a trunk target's host, its configured port (none
/// lets SRV choose, RFC 3263 §4.2) and the trunk's transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolveRequest {
    pub host: String,
    pub port: Option<u16>,
    pub transport: TransportKind,
}

/// One address of an answer, in RFC 3263 order: the transport DNS chose, the address,
/// and the SRV priority and weight it came with.
pub type ResolvedAddress = (TransportKind, SocketAddr, u16, u16);

/// A successful resolution: the addresses in the order to try them, and how long they
/// may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTargets {
    pub addresses: Vec<ResolvedAddress>,
    pub ttl: Duration,
}

/// The cache of resolutions and the questions waiting for the driver.
#[derive(Debug, Default)]
pub(super) struct Resolutions {
    entries: HashMap<ResolveRequest, Entry>,
    requests: VecDeque<ResolveRequest>,
}

#[derive(Debug, Default)]
struct Entry {
    addresses: Vec<(TransportKind, SocketAddr)>,
    /// The addresses are not to be used after this.
    expires: Option<Instant>,
    /// When to ask again; `None` while a question is out.
    next_query: Option<Instant>,
    failures: u32,
    /// The last failure, so a repeated one is not logged again.
    last_error: Option<String>,
}

impl Resolutions {
    /// Starts resolving `key` now, unless it is already known.
    pub(super) fn watch(&mut self, key: ResolveRequest) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(key.clone(), Entry::default());
        self.requests.push_back(key);
    }

    /// Queues the questions that are due.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        for (key, entry) in &mut self.entries {
            if entry.next_query.is_some_and(|at| at <= now) {
                entry.next_query = None;
                self.requests.push_back(key.clone());
            }
        }
    }

    pub(super) fn poll_request(&mut self) -> Option<ResolveRequest> {
        self.requests.pop_front()
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.next_query).min()
    }

    /// The driver's answer for `key`.
    pub(super) fn resolved(&mut self, now: Instant, key: &ResolveRequest, result: Result<ResolvedTargets, String>) {
        let Some(entry) = self.entries.get_mut(key) else {
            tracing::debug!(host = %key.host, "answer for a name nobody asked about; dropped");
            return;
        };
        match result {
            Ok(answer) if !answer.addresses.is_empty() => {
                let ttl = answer.ttl.max(TTL_MIN);
                let addresses: Vec<(TransportKind, SocketAddr)> =
                    answer.addresses.iter().map(|(kind, addr, _, _)| (*kind, *addr)).collect();
                if entry.last_error.is_some() || entry.addresses != addresses {
                    tracing::info!(host = %key.host, addresses = ?addresses, ttl = ?ttl, "trunk host resolved");
                }
                entry.addresses = addresses;
                entry.expires = Some(now + ttl);
                // Ask again before the answer runs out, so calls never find it gone.
                entry.next_query = Some(now + ttl.mul_f64(0.9));
                entry.failures = 0;
                entry.last_error = None;
            }
            outcome => {
                let error = match outcome {
                    Ok(_) => "no addresses".to_owned(),
                    Err(error) => error,
                };
                let retry = RETRY_MIN.saturating_mul(1 << entry.failures.min(4)).min(RETRY_MAX);
                entry.failures = entry.failures.saturating_add(1);
                if entry.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(host = %key.host, %error, retry_in = ?retry, "trunk host does not resolve");
                }
                entry.last_error = Some(error);
                entry.next_query = Some(now + retry);
            }
        }
    }

    /// The live addresses of `key`, in the order to try them; empty when it has none yet
    /// or its answer ran out.
    pub(super) fn addresses(&self, now: Instant, key: &ResolveRequest) -> &[(TransportKind, SocketAddr)] {
        match self.entries.get(key) {
            Some(entry) if entry.expires.is_some_and(|at| now < at) => &entry.addresses,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn key() -> ResolveRequest {
        ResolveRequest { host: "carrier.test".into(), port: None, transport: TransportKind::Udp }
    }

    fn answer(ttl: u64) -> Result<ResolvedTargets, String> {
        Ok(ResolvedTargets {
            addresses: vec![
                (TransportKind::Tcp, "127.0.0.11:5070".parse().unwrap(), 10, 0),
                (TransportKind::Udp, "127.0.0.12:5080".parse().unwrap(), 20, 0),
            ],
            ttl: Duration::from_secs(ttl),
        })
    }

    #[test]
    fn a_name_is_asked_once_and_again_at_ninety_percent_of_its_ttl() {
        let t0 = clock::now();
        let mut r = Resolutions::default();
        r.watch(key());
        r.watch(key());
        assert_eq!(r.poll_request(), Some(key()));
        assert_eq!(r.poll_request(), None, "asked once");
        assert!(r.addresses(t0, &key()).is_empty(), "nothing before the answer");
        assert_eq!(r.poll_timeout(), None, "nothing due while the question is out");
        r.resolved(t0, &key(), answer(100));
        assert_eq!(r.addresses(t0, &key()).len(), 2);
        assert_eq!(r.addresses(t0, &key())[0].0, TransportKind::Tcp, "RFC 3263 order kept");
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(90)));
        r.handle_timeout(t0 + Duration::from_secs(89));
        assert_eq!(r.poll_request(), None);
        r.handle_timeout(t0 + Duration::from_secs(90));
        assert_eq!(r.poll_request(), Some(key()));
        assert_eq!(r.addresses(t0 + Duration::from_secs(95), &key()).len(), 2, "still good until the TTL");
        assert!(r.addresses(t0 + Duration::from_secs(100), &key()).is_empty(), "expired");
    }

    #[test]
    fn failures_back_off_from_five_seconds_doubling_to_a_minute() {
        let t0 = clock::now();
        let mut r = Resolutions::default();
        r.watch(key());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert_eq!(r.poll_request(), Some(key()));
            r.resolved(now, &key(), Err("NXDOMAIN".into()));
            let due = r.poll_timeout().unwrap();
            waits.push((due - now).as_secs());
            now = due;
            r.handle_timeout(now);
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(r.poll_request(), Some(key()));
        r.resolved(now, &key(), answer(30));
        assert_eq!(r.addresses(now, &key()).len(), 2);
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(27)), "success resets the backoff");
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_answer_until_it_expires() {
        let t0 = clock::now();
        let mut r = Resolutions::default();
        r.watch(key());
        r.poll_request();
        r.resolved(t0, &key(), answer(10));
        r.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(r.poll_request(), Some(key()));
        r.resolved(t0 + Duration::from_secs(9), &key(), Err("timeout".into()));
        assert_eq!(r.addresses(t0 + Duration::from_secs(9), &key()).len(), 2);
        assert!(r.addresses(t0 + Duration::from_secs(10), &key()).is_empty());
    }
}

//! The Completed state of RFC 3261 §17.2.2 for the requests the engine answers itself:
//! a request retransmitted over UDP gets the response it already got, for Timer J
//! (64·T1), instead of being processed again (a REGISTER twice would fail its CSeq check).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::message::{Message, Via};
use crate::transport::{Source, Transmit, TransportKind};

/// Cached responses stop growing here; past it the oldest goes first.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub(super) struct ResponseCache {
    lifetime: Duration,
    entries: HashMap<String, Transmit>,
    order: VecDeque<(Instant, String)>,
}

/// What identifies a retransmission (§17.2.3): the top Via's branch and sent-by, the
/// method, and the source. `None` where no cache is needed (reliable transports) or
/// possible (a branch without the RFC 3261 cookie: RFC 2543 peers match otherwise).
pub(super) fn key(request: &Message, source: &Source) -> Option<String> {
    if source.kind != TransportKind::Udp {
        return None;
    }
    let top = request.top_via_raw()?;
    let via = Via::parse(&top).ok()?;
    let branch = via.branch().filter(|b| b.starts_with(crate::message::via::BRANCH_COOKIE.as_bytes()))?;
    Some(format!(
        "{}|{}|{}:{}|{}",
        String::from_utf8_lossy(branch),
        request.method()?.as_str(),
        via.host,
        via.port.unwrap_or(5060),
        source.remote
    ))
}

impl ResponseCache {
    pub(super) fn new(lifetime: Duration) -> Self {
        Self { lifetime, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub(super) fn get(&self, key: &str) -> Option<Transmit> {
        self.entries.get(key).cloned()
    }

    pub(super) fn insert(&mut self, now: Instant, key: String, response: Transmit) {
        if self.entries.len() >= MAX_ENTRIES
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        if self.entries.insert(key.clone(), response).is_none() {
            self.order.push_back((now + self.lifetime, key));
        }
    }

    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
    }

    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }
}

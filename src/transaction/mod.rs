//! L3: the transaction layer of RFC 3261 §17, with the corrections of RFC 6026 for 2xx
//! responses to INVITE. It owns the four state machines, their timers and the matching of
//! requests and responses to them (§17.1.3, §17.2.3). It must not do I/O, read the clock or
//! decide where a request goes: every input arrives through `handle_*(now, ..)`, every output
//! leaves through `poll_output()`, and `poll_timeout()` says when to call
//! `handle_timeout(now)` next. The proxy (§16) is the transaction user (TU) that drives it.
//!
//! - [`ClientInvite`] (§17.1.1, RFC 6026 §7.2), [`ClientNonInvite`] (§17.1.2),
//!   [`ServerInvite`] (§17.2.1, RFC 6026 §7.1), [`ServerNonInvite`] (§17.2.2): one file and
//!   one state enum each. What they share (request, timers, output queue, and the
//!   `handle_timeout` / `poll_*` plumbing) is in `machine.rs`; each transition is in its
//!   machine's own `step`.
//! - [`TransactionKey`], [`server_key`], [`client_key`]: matching.
//! - [`TransactionTable`]: the machines by key, with one deadline queue, their outputs tagged
//!   with key and destination, and a bound on their number.
//!
//! Every machine is told at construction whether its transport is reliable (TCP, TLS, WS,
//! WSS) or not (UDP). Over a reliable transport nothing is retransmitted (no Timer A, E, G)
//! and the wait timers D, I, J and K are zero: the machine goes straight to Terminated
//! instead of arming them.

mod client_invite;
mod client_non_invite;
mod machine;
mod server_invite;
mod server_non_invite;
mod table;

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::via::BRANCH_COOKIE;
use crate::message::{Host, Message, Method, NameAddr};

pub use client_invite::{ClientInvite, ClientInviteState};
pub use client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use server_invite::{ServerInvite, ServerInviteState};
pub use server_non_invite::{ServerNonInvite, ServerNonInviteState};
pub use table::{Match, TableError, TableOutput, Transaction, TransactionTable};

/// The base timer values of RFC 3261 §17.1.1.1 and Table 4. Every other timer derives from
/// them. T1 must not be zero (the retransmission timers would fire on every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: the first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// The longest retransmission interval for non-INVITE requests and INVITE responses
    /// (default 4 s).
    pub t2: Duration,
    /// The longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, L, M, and J over an unreliable transport.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D over an unreliable transport: "at least 32 seconds" (§17.1.1.2), and never
    /// shorter than the 64·T1 a server keeps retransmitting its final response for (Timer H).
    pub fn timer_d(&self) -> Duration {
        self.transaction_timeout().max(Duration::from_secs(32))
    }
}

/// The timers of RFC 3261 §17 (Table 4) and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// §17.1.1.2: INVITE request retransmission, unreliable transports only; T1, doubling.
    A,
    /// §17.1.1.2: INVITE client transaction timeout in Calling; 64·T1.
    B,
    /// §17.1.1.2: wait for retransmissions of a non-2xx final response in Completed;
    /// at least 32 s unreliable, zero reliable.
    D,
    /// §17.1.2.2: non-INVITE request retransmission, unreliable only; T1 doubling up to T2,
    /// then T2 once Proceeding.
    E,
    /// §17.1.2.2: non-INVITE client transaction timeout; 64·T1.
    F,
    /// §17.2.1: retransmission of a non-2xx final response to INVITE, unreliable only; T1
    /// doubling up to T2.
    G,
    /// §17.2.1: wait for the ACK of a non-2xx final response; 64·T1.
    H,
    /// §17.2.1: absorb ACK retransmissions in Confirmed; T4 unreliable, zero reliable.
    I,
    /// §17.2.2: answer non-INVITE request retransmissions in Completed; 64·T1 unreliable,
    /// zero reliable.
    J,
    /// §17.1.2.2: absorb non-INVITE response retransmissions in Completed; T4 unreliable,
    /// zero reliable.
    K,
    /// RFC 6026 §7.1 (updates §17.2.1): INVITE server transaction in Accepted, passing 2xx
    /// retransmissions from the TU down and ACKs up; 64·T1.
    L,
    /// RFC 6026 §7.2 (updates §17.1.1): INVITE client transaction in Accepted, passing 2xx
    /// retransmissions up; 64·T1.
    M,
}

/// What a machine asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the transaction's destination: the request or a retransmission
    /// of it, the ACK for a non-2xx final response (client INVITE), or a response and its
    /// retransmissions (server side).
    Transmit(Bytes),
    /// Client side: a response for the TU. In Accepted (RFC 6026 §7.2) every further 2xx on
    /// the branch is passed up too: the proxy forwards each one (§16.7 step 5).
    Response(Message),
    /// The transaction failed before it could finish. Client side: Timer B or F fired, or
    /// the transport failed before a final response arrived; the TU acts as on a 408
    /// (§8.1.3.1, §16.7). Server side: Timer H fired (no ACK) or the transport failed, so
    /// the response did not get through (§17.2.1, §17.2.4).
    Timeout,
    /// Server INVITE in Accepted: an ACK for the 2xx (RFC 6026 §7.1, Figure 7: "ACK / to
    /// TU"). The proxy forwards it like any 2xx ACK.
    Ack(Message),
    /// The machine reached Terminated and must be destroyed (§17.1.1.2: "MUST be destroyed
    /// the instant it enters the Terminated state"); the table drops it. Always the last
    /// output of a machine.
    Terminated,
}

/// What identifies a transaction: server side by §17.2.3, client side by §17.1.3. Client
/// and server keys never compare equal, so a request that spirals back through us (our own
/// branch in its top Via) does not match the client transaction that sent it.
///
/// A key is looked up, cloned and hashed several times for every message (the table, its
/// deadline queue and outputs, the proxy's contexts and branches): it is shared behind an
/// `Arc`, so a clone is a reference count, and carries the hash of its fields, computed
/// once, so a map hashes one `u64`. The maps still apply their own randomly keyed hasher
/// on top, and the stored hash is a full SipHash of the fields, so crafted branches cannot
/// make them collide.
#[derive(Debug, Clone)]
pub struct TransactionKey(std::sync::Arc<KeyInner>);

#[derive(Debug)]
struct KeyInner {
    key: Key,
    hash: u64,
}

/// The keys of the SipHash that every [`TransactionKey`] is hashed with once: random per
/// process, so a peer cannot craft branches whose hashes collide.
static KEY_HASHER: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();

impl TransactionKey {
    fn new(key: Key) -> Self {
        let hash = std::hash::BuildHasher::hash_one(KEY_HASHER.get_or_init(std::hash::RandomState::new), &key);
        Self(std::sync::Arc::new(KeyInner { hash, key }))
    }

    fn key(&self) -> &Key {
        &self.0.key
    }

    /// The key's hash: keyed per process, so it says nothing a peer could use to make
    /// two keys collide, and it differs between keys as they do.
    pub fn fingerprint(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for TransactionKey {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.key == other.0.key)
    }
}

impl Eq for TransactionKey {}

impl std::hash::Hash for TransactionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

/// A map by [`TransactionKey`] that uses the key's own hash as it is: it is already a
/// randomly keyed SipHash, and hashing it again cost every lookup a second SipHash (a
/// call makes a few dozen lookups).
pub type KeyMap<V> = std::collections::HashMap<TransactionKey, V, KeyHashing>;

/// The [`std::hash::BuildHasher`] of [`KeyMap`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHashing;

impl std::hash::BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Passes a [`TransactionKey`]'s stored hash through.
#[derive(Debug)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only `write_u64` is reached from a `TransactionKey`; anything else is folded in
    /// rather than lost.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// §17.2.3: the top Via's branch (it starts with the magic cookie) and sent-by, and the
    /// method, with ACK counted as INVITE.
    Server { branch: Box<[u8]>, sent_by: (Host, Option<u16>), method: Method },
    /// §17.2.3, for RFC 2543 peers whose branch lacks the cookie: Request-URI, From tag,
    /// Call-ID, CSeq number, the whole top Via, and the method (ACK counted as INVITE).
    ///
    /// The To tag is left out, a simplification: retransmissions carry the same To as the
    /// original, so it tells nothing apart, and an ACK carries the tag of our response,
    /// which the INVITE did not have. We match such an ACK to the INVITE by the other fields
    /// without checking that its To tag equals that of the response we sent.
    ServerRfc2543 {
        request_uri: Box<[u8]>,
        from_tag: Option<Box<[u8]>>,
        call_id: Box<[u8]>,
        cseq: u32,
        top_via: Box<[u8]>,
        method: Method,
    },
    /// §17.1.3: the top Via's branch and the CSeq method (a CANCEL has its own).
    Client { branch: Box<[u8]>, method: Method },
}

/// The server transaction a received request belongs to (§17.2.3). An ACK gets the key of
/// the INVITE it acknowledges; a CANCEL gets its own (use
/// [`TransactionKey::cancelled_invite`] for the INVITE it cancels). `None` when the request
/// has no parseable top Via, or, without an RFC 3261 branch, lacks a field of the fallback.
pub fn server_key(request: &Message) -> Option<TransactionKey> {
    let method = match request.method()? {
        Method::Ack => Method::Invite,
        other => other.clone(),
    };
    let via = request.top_via()?.ok()?;
    if let Some(branch) = via.branch().filter(|b| b.starts_with(BRANCH_COOKIE.as_bytes())) {
        return Some(TransactionKey::new(Key::Server {
            branch: branch.into(),
            sent_by: (via.host().clone(), via.port),
            method,
        }));
    }
    let from = request.first_value(crate::message::HeaderName::From)?;
    let from_tag = NameAddr::parse(&from).ok()?.tag().map(Box::from);
    Some(TransactionKey::new(Key::ServerRfc2543 {
        request_uri: request.request_uri()?.into(),
        from_tag,
        call_id: request.call_id()?.as_ref().into(),
        cseq: request.cseq()?.0,
        top_via: via.raw().into(),
        method,
    }))
}

/// The client transaction a response belongs to (§17.1.3): the branch of its top Via and
/// the method of its CSeq. Given a request we send, the key of the transaction that sends
/// it (the request's own method). `None` without a top Via branch or a method.
pub fn client_key(message: &Message) -> Option<TransactionKey> {
    let method = match message.method() {
        Some(method) => method.clone(),
        None => message.cseq()?.1,
    };
    let branch = message.top_via()?.ok()?.branch()?.into();
    Some(TransactionKey::new(Key::Client { branch, method }))
}

impl TransactionKey {
    pub fn is_client(&self) -> bool {
        matches!(self.key(), Key::Client { .. })
    }

    /// The method of the transaction: INVITE for an ACK's key.
    pub fn method(&self) -> &Method {
        match self.key() {
            Key::Server { method, .. } | Key::ServerRfc2543 { method, .. } | Key::Client { method, .. } => method,
        }
    }

    /// For a CANCEL's key, the key of the INVITE it cancels: same branch and sent-by (or
    /// same fallback fields), method INVITE (§9.2 server side, §9.1 client side). `None`
    /// for any other method.
    pub fn cancelled_invite(&self) -> Option<Self> {
        if *self.method() != Method::Cancel {
            return None;
        }
        let mut key = self.key().clone();
        match &mut key {
            Key::Server { method, .. } | Key::ServerRfc2543 { method, .. } | Key::Client { method, .. } => {
                *method = Method::Invite;
            }
        }
        Some(Self::new(key))
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key() {
            Key::Server { branch, sent_by: (host, port), method } => {
                write!(f, "server {method} {} from {host}", String::from_utf8_lossy(branch))?;
                port.map_or(Ok(()), |p| write!(f, ":{p}"))
            }
            Key::ServerRfc2543 { call_id, cseq, method, .. } => {
                write!(f, "server {method} rfc2543 call-id={} cseq={cseq}", String::from_utf8_lossy(call_id))
            }
            Key::Client { branch, method } => write!(f, "client {method} {}", String::from_utf8_lossy(branch)),
        }
    }
}

/// The timers a machine has armed. A machine arms at most two at a time (A+B, E+F, G+H):
/// they live in the machine itself, so a transaction costs no allocation for them (a UDP
/// transaction is kept for Timer J, 32 s, and every allocation held that long is paid
/// for in memory and in a cold free at the end). More than the slots hold still works.
#[derive(Debug, Default)]
struct Timers {
    slots: [Option<(Timer, Instant)>; 3],
    /// Past the slots; empty (and unallocated) with every machine we have.
    overflow: Vec<(Timer, Instant)>,
}

impl Timers {
    /// Arms `timer` for `at`, replacing its previous deadline.
    fn set(&mut self, timer: Timer, at: Instant) {
        self.cancel(timer);
        match self.slots.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((timer, at)),
            None => self.overflow.push((timer, at)),
        }
    }

    /// Disarms `timer`. The others keep the order they were armed in (the slots stay
    /// packed), which breaks ties between equal deadlines as before.
    fn cancel(&mut self, timer: Timer) {
        let mut kept = [None; 3];
        for (to, from) in kept.iter_mut().zip(self.slots.iter().flatten().filter(|(t, _)| *t != timer)) {
            *to = Some(*from);
        }
        self.slots = kept;
        self.overflow.retain(|(t, _)| *t != timer);
        // A slot freed while others overflowed takes the oldest of them.
        while !self.overflow.is_empty()
            && let Some(slot) = self.slots.iter_mut().find(|slot| slot.is_none())
        {
            *slot = Some(self.overflow.remove(0));
        }
    }

    fn clear(&mut self) {
        self.slots = [None; 3];
        self.overflow.clear();
    }

    fn armed(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        self.slots.iter().flatten().chain(&self.overflow).copied()
    }

    fn next(&self) -> Option<(Timer, Instant)> {
        self.armed().min_by_key(|(_, at)| *at)
    }

    /// The timers due at `now`, earliest first: what one `handle_timeout` fires. A timer
    /// re-armed while they fire waits for the next call, even if due, so a zero interval
    /// cannot spin.
    fn due(&self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<_> = self.armed().filter(|(_, at)| *at <= now).collect();
        due.sort_by_key(|(_, at)| *at);
        due.into_iter().map(|(t, _)| t).collect()
    }

    /// Disarms `timer` if it is armed and due; whether it was. An earlier timer of the
    /// same call may have disarmed it by changing state.
    fn take_if_due(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.armed().any(|(t, at)| t == timer && at <= now);
        if due {
            self.cancel(timer);
        }
        due
    }
}

/// The class of a response status, as the machines tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Provisional,
    Success,
    Failure,
}

impl Class {
    /// `None` outside 100..=699 (§21): such a response has no place in any machine.
    fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(Self::Provisional),
            200..=299 => Some(Self::Success),
            300..=699 => Some(Self::Failure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod harness;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Limits;

    fn parse(text: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()).unwrap()
    }

    fn request(method: &str, via: &str, cseq: &str, to: &str) -> Message {
        parse(&format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKlower\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>{to}\r\n\
             Call-ID: call-1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    const VIA: &str = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc;rport";

    #[test]
    fn server_key_matches_retransmission_and_ack_but_not_cancel() {
        let invite = server_key(&request("INVITE", VIA, "1 INVITE", "")).unwrap();
        assert_eq!(server_key(&request("INVITE", VIA, "1 INVITE", "")), Some(invite.clone()));
        // The ACK for a non-2xx carries the INVITE's top Via and the response's To tag.
        let ack = server_key(&request("ACK", VIA, "1 ACK", ";tag=b2")).unwrap();
        assert_eq!(ack, invite);
        let cancel = server_key(&request("CANCEL", VIA, "1 CANCEL", "")).unwrap();
        assert_ne!(cancel, invite);
        assert_eq!(cancel.cancelled_invite(), Some(invite.clone()));
        assert_eq!(invite.cancelled_invite(), None);
        // Same branch, another sent-by: another transaction.
        let other_host = "SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bKabc;rport";
        assert_ne!(server_key(&request("INVITE", other_host, "1 INVITE", "")), Some(invite.clone()));
        let other_port = "SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc";
        assert_ne!(server_key(&request("INVITE", other_port, "1 INVITE", "")), Some(invite.clone()));
        // Another branch, or another method on the same branch.
        assert_ne!(server_key(&request("INVITE", &VIA.replace("abc", "abd"), "1 INVITE", "")), Some(invite));
        let bye = server_key(&request("BYE", VIA, "2 BYE", ";tag=b2")).unwrap();
        assert_eq!(bye.method(), &Method::Bye);
        assert!(!bye.is_client());
    }

    #[test]
    fn rfc2543_request_without_cookie_matches_by_fallback() {
        let old_via = "SIP/2.0/UDP 198.51.100.1:5060;branch=7a3f";
        let invite = server_key(&request("INVITE", old_via, "5 INVITE", "")).unwrap();
        assert_eq!(server_key(&request("INVITE", old_via, "5 INVITE", "")), Some(invite.clone()));
        assert_eq!(server_key(&request("ACK", old_via, "5 ACK", ";tag=b2")), Some(invite.clone()));
        let cancel = server_key(&request("CANCEL", old_via, "5 CANCEL", "")).unwrap();
        assert_ne!(cancel, invite);
        assert_eq!(cancel.cancelled_invite(), Some(invite.clone()));
        assert_ne!(server_key(&request("INVITE", old_via, "6 INVITE", "")), Some(invite.clone()));
        let no_branch = "SIP/2.0/UDP 198.51.100.1:5060";
        assert_ne!(server_key(&request("INVITE", no_branch, "5 INVITE", "")), Some(invite.clone()));
        assert!(server_key(&request("INVITE", no_branch, "5 INVITE", "")).is_some());
        let other_call = parse(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=7a3f\r\n\
             From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-2\r\nCSeq: 5 INVITE\r\n\r\n",
        );
        assert_ne!(server_key(&other_call), Some(invite));
        let no_call_id = parse(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=7a3f\r\n\
             From: <sip:alice@example.com>;tag=a1\r\nCSeq: 5 INVITE\r\n\r\n",
        );
        assert_eq!(server_key(&no_call_id), None);
    }

    #[test]
    fn client_key_matches_by_branch_and_cseq_method() {
        let invite = request("INVITE", VIA, "1 INVITE", "");
        let key = client_key(&invite).unwrap();
        assert!(key.is_client());
        let ringing = parse(&format!(
            "SIP/2.0 180 Ringing\r\nVia: {VIA};received=203.0.113.5\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@example.com>;tag=b2\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\r\n"
        ));
        assert_eq!(client_key(&ringing), Some(key.clone()));
        let cancel_ok = parse(&format!("SIP/2.0 200 OK\r\nVia: {VIA}\r\nCSeq: 1 CANCEL\r\n\r\n"));
        let cancel_key = client_key(&cancel_ok).unwrap();
        assert_ne!(cancel_key, key);
        assert_eq!(cancel_key.cancelled_invite(), Some(key.clone()));
        let other_branch =
            parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKxyz\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_ne!(client_key(&other_branch), Some(key.clone()));
        // A request spiralling back to us carries our branch on top: it is a new server
        // transaction, not a response to our client one.
        assert_ne!(server_key(&invite), Some(key));
        assert_eq!(client_key(&parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\n\r\n")), None);
    }

    #[test]
    fn timers_fire_earliest_first_and_ties_in_the_order_they_were_armed() {
        let t0 = crate::clock::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut timers = Timers::default();
        timers.set(Timer::G, at(4));
        timers.set(Timer::H, at(4));
        timers.set(Timer::A, at(1));
        // Past the slots.
        timers.set(Timer::B, at(2));
        timers.set(Timer::D, at(4));
        assert_eq!(timers.next(), Some((Timer::A, at(1))));
        assert_eq!(timers.due(at(4)), vec![Timer::A, Timer::B, Timer::G, Timer::H, Timer::D]);
        timers.cancel(Timer::A);
        timers.set(Timer::G, at(3));
        assert_eq!(timers.due(at(4)), vec![Timer::B, Timer::G, Timer::H, Timer::D]);
        assert!(timers.take_if_due(Timer::H, at(4)));
        assert!(!timers.take_if_due(Timer::H, at(4)));
        assert!(!timers.take_if_due(Timer::D, at(3)));
        assert_eq!(timers.due(at(4)), vec![Timer::B, Timer::G, Timer::D]);
        timers.clear();
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn default_timers_are_the_rfc_values() {
        let c = TimerConfig::default();
        assert_eq!(c.transaction_timeout(), Duration::from_secs(32));
        assert_eq!(c.timer_d(), Duration::from_secs(32));
        let slow = TimerConfig { t1: Duration::from_secs(1), ..c };
        assert_eq!(slow.timer_d(), Duration::from_secs(64));
    }
}

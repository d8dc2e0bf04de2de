//! The transactions of one engine by [`TransactionKey`]: one deadline queue over all their
//! timers, one queue of their outputs tagged with key and destination, and a bound on how
//! many there are. Requests and responses are matched here (§17.1.3, §17.2.3) and handed
//! to their machine; a machine that reaches Terminated is dropped at once (§17.1.1.2).
//!
//! The proxy's turn: feed what arrived (`handle_request`, `handle_response`), create and
//! `insert` machines for what did not match, act (`send_response`, `send_trying`), fire
//! timers (`handle_timeout` at `poll_timeout`), then drain `poll_output` and send each
//! `Transmit` to its destination.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    ClientInvite, ClientNonInvite, KeyMap, Output, ServerInvite, ServerNonInvite, Timer, TransactionKey, client_key,
    server_key,
};
use crate::message::{Message, Method};
use crate::transport::{Destination, FlowId};

/// One machine of any of the four kinds.
#[derive(Debug)]
pub enum Transaction {
    ClientInvite(ClientInvite),
    ClientNonInvite(ClientNonInvite),
    ServerInvite(ServerInvite),
    ServerNonInvite(ServerNonInvite),
}

/// An output of one machine, with the key and destination of its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOutput {
    pub key: TransactionKey,
    /// Where a [`Output::Transmit`] goes: the destination given at [`TransactionTable::insert`].
    pub destination: Destination,
    pub output: Output,
    /// With [`Output::Timeout`] of a client transaction: the request that got no answer,
    /// since the transaction is gone by the time its outputs are read.
    pub request: Option<Message>,
}

/// How a received message matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A transaction took it: a retransmission absorbed or answered, an ACK absorbed or
    /// queued as [`Output::Ack`], a response queued as [`Output::Response`]. Do not process
    /// it again.
    Existing(TransactionKey),
    /// No transaction has this key. A request is new: create a server transaction under
    /// this key (never for an ACK, which the proxy forwards as it is). A response is stray:
    /// RFC 6026 amends §16.7 so that a proxy no longer forwards it statelessly.
    New(TransactionKey),
    /// No key can be made: no parseable top Via, or a field of the RFC 2543 fallback
    /// missing (§17.2.3). The message is malformed for a proxy.
    Unkeyed,
}

/// Why the table refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The bound is reached: answer the request with 503 rather than grow.
    #[error("transaction table full ({capacity} transactions)")]
    Full { capacity: usize },
    #[error("a transaction with this key already exists")]
    Duplicate,
    /// A client key for a server machine or the reverse, an INVITE key for a non-INVITE
    /// machine or the reverse, or an action the machine does not have (a response on a
    /// client transaction, 100 Trying on a non-INVITE one).
    #[error("the key or action does not fit this kind of transaction")]
    WrongKind,
    #[error("no transaction with this key")]
    NotFound,
}

#[derive(Debug)]
pub struct TransactionTable {
    capacity: usize,
    /// Boxed: the map's slots stay small (a transaction is some 400 bytes), so the
    /// capacity it keeps free and every rehash cost a pointer each, not a transaction.
    entries: KeyMap<Box<Entry>>,
    /// Each entry's next deadline, by (deadline, entry id): earliest first, ties in the
    /// order the machines were inserted.
    deadlines: BTreeMap<(Instant, u64), TransactionKey>,
    next_id: u64,
    outputs: VecDeque<TableOutput>,
    /// Where the grid of the wait timers starts (the first one rounded).
    grid_origin: Option<Instant>,
}

/// How far a wait timer (D, I, J, K, L, M) may fire after its deadline, so that many fire at once.
const WAIT_TIMER_GRID: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Entry {
    id: u64,
    destination: Destination,
    /// The deadline this entry has in `deadlines`.
    scheduled: Option<Instant>,
    transaction: Transaction,
}

impl TransactionTable {
    /// A table that holds at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: KeyMap::default(),
            deadlines: BTreeMap::new(),
            next_id: 0,
            outputs: VecDeque::new(),
            grid_origin: None,
        }
    }

    /// Adds a machine under `key`; what it asked for at construction (a client's request)
    /// is queued at once. Refused when full, when the key is taken, or when the key does
    /// not fit the machine (its side, INVITE or not).
    pub fn insert(
        &mut self,
        key: TransactionKey,
        destination: Destination,
        transaction: impl Into<Transaction>,
    ) -> Result<(), TableError> {
        let transaction = transaction.into();
        if self.entries.len() >= self.capacity {
            return Err(TableError::Full { capacity: self.capacity });
        }
        if self.entries.contains_key(&key) {
            return Err(TableError::Duplicate);
        }
        let is_invite = *key.method() == Method::Invite;
        if key.is_client() != transaction.is_client() || is_invite != transaction.is_invite() {
            return Err(TableError::WrongKind);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(key.clone(), Box::new(Entry { id, destination, scheduled: None, transaction }));
        self.settle(&key);
        Ok(())
    }

    /// Drops a transaction without a [`Output::Terminated`]. Outputs it already queued stay
    /// queued.
    pub fn remove(&mut self, key: &TransactionKey) -> Option<Transaction> {
        let entry = self.entries.remove(key)?;
        if let Some(at) = entry.scheduled {
            self.deadlines.remove(&(at, entry.id));
        }
        Some(entry.transaction)
    }

    pub fn get(&self, key: &TransactionKey) -> Option<&Transaction> {
        self.entries.get(key).map(|e| &e.transaction)
    }

    pub fn destination(&self, key: &TransactionKey) -> Option<Destination> {
        self.entries.get(key).map(|e| e.destination)
    }

    pub fn contains(&self, key: &TransactionKey) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A received request: matched to a server transaction by [`server_key`] and handed to
    /// it if one exists (a retransmission, or an ACK for an INVITE).
    pub fn handle_request(&mut self, now: Instant, request: &Message) -> Match {
        let Some(key) = server_key(request) else { return Match::Unkeyed };
        let Some(entry) = self.entries.get_mut(&key) else { return Match::New(key) };
        match &mut entry.transaction {
            Transaction::ServerInvite(m) => m.handle_request(now, request.clone()),
            Transaction::ServerNonInvite(m) => m.handle_request(now, request.clone()),
            // `insert` keeps client machines under client keys, which server_key never makes.
            Transaction::ClientInvite(_) | Transaction::ClientNonInvite(_) => {}
        }
        self.settle(&key);
        Match::Existing(key)
    }

    /// A received response: matched to a client transaction by [`client_key`] and handed
    /// to it if one exists.
    pub fn handle_response(&mut self, now: Instant, response: &Message) -> Match {
        if response.is_request() {
            return Match::Unkeyed;
        }
        let Some(key) = client_key(response) else { return Match::Unkeyed };
        let Some(entry) = self.entries.get_mut(&key) else { return Match::New(key) };
        match &mut entry.transaction {
            Transaction::ClientInvite(m) => m.handle_response(now, response.clone()),
            Transaction::ClientNonInvite(m) => m.handle_response(now, response.clone()),
            // `insert` keeps server machines under server keys, which client_key never makes.
            Transaction::ServerInvite(_) | Transaction::ServerNonInvite(_) => {}
        }
        self.settle(&key);
        Match::Existing(key)
    }

    /// The TU's response on a server transaction (see [`ServerInvite::send_response`] and
    /// [`ServerNonInvite::send_response`]).
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: Bytes,
        status: u16,
    ) -> Result<(), TableError> {
        let entry = self.entries.get_mut(key).ok_or(TableError::NotFound)?;
        match &mut entry.transaction {
            Transaction::ServerInvite(m) => m.send_response(now, response, status),
            Transaction::ServerNonInvite(m) => m.send_response(now, response, status),
            Transaction::ClientInvite(_) | Transaction::ClientNonInvite(_) => return Err(TableError::WrongKind),
        }
        self.settle(key);
        Ok(())
    }

    /// A 100 (Trying) on a server INVITE transaction (see [`ServerInvite::send_trying`]).
    pub fn send_trying(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        source: Option<SocketAddr>,
    ) -> Result<(), TableError> {
        let entry = self.entries.get_mut(key).ok_or(TableError::NotFound)?;
        let Transaction::ServerInvite(m) = &mut entry.transaction else { return Err(TableError::WrongKind) };
        m.send_trying(now, source);
        self.settle(key);
        Ok(())
    }

    /// The transport failed to send for this transaction.
    pub fn handle_transport_error(&mut self, now: Instant, key: &TransactionKey) -> Result<(), TableError> {
        let entry = self.entries.get_mut(key).ok_or(TableError::NotFound)?;
        entry.transaction.handle_transport_error(now);
        self.settle(key);
        Ok(())
    }

    /// A connection closed: a transport error for every transaction whose destination it
    /// was, in the order they were inserted.
    pub fn handle_flow_closed(&mut self, now: Instant, flow: FlowId) {
        self.handle_unreachable(now, Destination::Flow(flow));
    }

    /// Every transaction sending to `destination` sees a transport error (RFC 3261
    /// §17.1.4): a connection that could not be opened, or one that closed.
    pub fn handle_unreachable(&mut self, now: Instant, destination: Destination) {
        let mut hit: Vec<_> =
            self.entries.iter().filter(|(_, e)| e.destination == destination).map(|(k, e)| (e.id, k.clone())).collect();
        hit.sort_by_key(|(id, _)| *id);
        for (_, key) in hit {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.transaction.handle_transport_error(now);
            }
            self.settle(&key);
        }
    }

    /// Fires every machine whose deadline is due at `now`, earliest deadline first, each
    /// once; their outputs queue in that order.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<_> = self.deadlines.range(..=(now, u64::MAX)).map(|(slot, _)| *slot).collect();
        for slot in due {
            let Some(key) = self.deadlines.remove(&slot) else { continue };
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.scheduled = None;
                entry.transaction.handle_timeout(now);
            }
            self.settle(&key);
        }
    }

    /// The earliest time a machine needs firing: its next deadline, or for a wait timer
    /// (D, I, J, K, L, M) up to [`WAIT_TIMER_GRID`] after it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    pub fn poll_output(&mut self) -> Option<TableOutput> {
        self.outputs.pop_front()
    }

    /// Every queued output, in order.
    pub fn drain_outputs(&mut self) -> impl Iterator<Item = TableOutput> + '_ {
        self.outputs.drain(..)
    }

    /// After a machine was touched: queue its outputs, drop it if it terminated, otherwise
    /// move its deadline.
    fn settle(&mut self, key: &TransactionKey) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        while let Some(output) = entry.transaction.poll_output() {
            let request = (matches!(output, Output::Timeout) && entry.transaction.is_client())
                .then(|| entry.transaction.request().cloned())
                .flatten();
            self.outputs.push_back(TableOutput { key: key.clone(), destination: entry.destination, output, request });
        }
        let next = entry.transaction.next_timer().map(|(timer, at)| wake_at(&mut self.grid_origin, timer, at));
        let terminated = entry.transaction.is_terminated();
        if next != entry.scheduled || terminated {
            if let Some(at) = entry.scheduled.take() {
                self.deadlines.remove(&(at, entry.id));
            }
            if let Some(at) = next.filter(|_| !terminated) {
                self.deadlines.insert((at, entry.id), key.clone());
                entry.scheduled = Some(at);
            }
        }
        if terminated {
            self.entries.remove(key);
        }
    }
}

/// When to fire a machine whose next timer is `timer` at `at`. The wait timers that end a
/// transaction (D, I, J, K, and RFC 6026's L and M after a 2xx) only say how long to keep
/// absorbing retransmissions, so waking a little after them changes nothing a peer sees:
/// they are rounded up to a grid of [`WAIT_TIMER_GRID`] starting at `origin`. The
/// thousands of Timer J that a REGISTER storm arms over UDP, and the L and M of every
/// answered call, then fire in a few batches a second instead of one wake-up each (at
/// 200 calls/s, one wake-up each was a fifth of the server's CPU).
/// Retransmissions and timeouts (A, B, E, F, G, H) fire when they are due.
fn wake_at(origin: &mut Option<Instant>, timer: Timer, at: Instant) -> Instant {
    if !matches!(timer, Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M) {
        return at;
    }
    let origin = *origin.get_or_insert(at);
    let Some(since) = at.checked_duration_since(origin) else { return at };
    let grid = WAIT_TIMER_GRID.as_nanos();
    let rounded = since.as_nanos().div_ceil(grid) * grid;
    u64::try_from(rounded).ok().and_then(|n| origin.checked_add(Duration::from_nanos(n))).unwrap_or(at)
}

impl Transaction {
    pub fn is_client(&self) -> bool {
        match self {
            Self::ClientInvite(_) | Self::ClientNonInvite(_) => true,
            Self::ServerInvite(_) | Self::ServerNonInvite(_) => false,
        }
    }

    pub fn is_invite(&self) -> bool {
        match self {
            Self::ClientInvite(_) | Self::ServerInvite(_) => true,
            Self::ClientNonInvite(_) | Self::ServerNonInvite(_) => false,
        }
    }

    pub fn is_terminated(&self) -> bool {
        use super::{ClientInviteState, ClientNonInviteState, ServerInviteState, ServerNonInviteState};
        match self {
            Self::ClientInvite(m) => m.state() == ClientInviteState::Terminated,
            Self::ClientNonInvite(m) => m.state() == ClientNonInviteState::Terminated,
            Self::ServerInvite(m) => m.state() == ServerInviteState::Terminated,
            Self::ServerNonInvite(m) => m.state() == ServerNonInviteState::Terminated,
        }
    }

    /// The request that created the transaction. A server transaction lets it go when it
    /// sends a final response, and an INVITE client transaction when a 2xx arrives; until
    /// then a CANCEL, an authenticated retry and a timeout's 408 are built from it.
    pub fn request(&self) -> Option<&Message> {
        match self {
            Self::ClientInvite(m) => m.request(),
            Self::ClientNonInvite(m) => Some(m.request()),
            Self::ServerInvite(m) => m.request(),
            Self::ServerNonInvite(m) => m.request(),
        }
    }

    pub fn handle_transport_error(&mut self, now: Instant) {
        match self {
            Self::ClientInvite(m) => m.handle_transport_error(now),
            Self::ClientNonInvite(m) => m.handle_transport_error(now),
            Self::ServerInvite(m) => m.handle_transport_error(now),
            Self::ServerNonInvite(m) => m.handle_transport_error(now),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::ClientInvite(m) => m.handle_timeout(now),
            Self::ClientNonInvite(m) => m.handle_timeout(now),
            Self::ServerInvite(m) => m.handle_timeout(now),
            Self::ServerNonInvite(m) => m.handle_timeout(now),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        match self {
            Self::ClientInvite(m) => m.poll_output(),
            Self::ClientNonInvite(m) => m.poll_output(),
            Self::ServerInvite(m) => m.poll_output(),
            Self::ServerNonInvite(m) => m.poll_output(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(_, at)| at)
    }

    pub fn next_timer(&self) -> Option<(Timer, Instant)> {
        match self {
            Self::ClientInvite(m) => m.next_timer(),
            Self::ClientNonInvite(m) => m.next_timer(),
            Self::ServerInvite(m) => m.next_timer(),
            Self::ServerNonInvite(m) => m.next_timer(),
        }
    }
}

impl From<ClientInvite> for Transaction {
    fn from(m: ClientInvite) -> Self {
        Self::ClientInvite(m)
    }
}

impl From<ClientNonInvite> for Transaction {
    fn from(m: ClientNonInvite) -> Self {
        Self::ClientNonInvite(m)
    }
}

impl From<ServerInvite> for Transaction {
    fn from(m: ServerInvite) -> Self {
        Self::ServerInvite(m)
    }
}

impl From<ServerNonInvite> for Transaction {
    fn from(m: ServerNonInvite) -> Self {
        Self::ServerNonInvite(m)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transaction::harness::{ack, describe, invite, parse, request, response, response_bytes};
    use crate::transaction::{ClientInviteState, TimerConfig};

    const UDP: Destination = Destination::Datagram {
        local: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060),
        remote: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5080),
    };

    fn with_branch(message: &Message, branch: &str) -> Message {
        parse(&String::from_utf8_lossy(message.as_bytes()).replace("z9hG4bKc1", branch))
    }

    /// (ms since t0, key label, what) for every queued output.
    fn drain(
        table: &mut TransactionTable,
        t0: Instant,
        now: Instant,
        labels: &[(&TransactionKey, &str)],
    ) -> Vec<(u64, String, String)> {
        let ms = u64::try_from((now - t0).as_millis()).unwrap();
        table
            .drain_outputs()
            .map(|o| {
                let label = labels.iter().find(|(k, _)| **k == o.key).map_or("?", |(_, l)| l);
                (ms, label.to_string(), describe(&o.output))
            })
            .collect()
    }

    fn run(
        table: &mut TransactionTable,
        t0: Instant,
        until_ms: u64,
        labels: &[(&TransactionKey, &str)],
    ) -> Vec<(u64, String, String)> {
        let end = t0 + Duration::from_millis(until_ms);
        let mut log = Vec::new();
        while let Some(at) = table.poll_timeout().filter(|at| *at <= end) {
            table.handle_timeout(at);
            log.extend(drain(table, t0, at, labels));
        }
        log
    }

    fn row(ms: u64, label: &str, what: &str) -> (u64, String, String) {
        (ms, label.into(), what.into())
    }

    #[test]
    fn table_fires_several_machines_timers_in_order() {
        let t0 = crate::clock::now();
        let config = TimerConfig::default();
        let mut table = TransactionTable::new(10);
        let options = request("OPTIONS");
        let a = client_key(&options).unwrap();
        table.insert(a.clone(), UDP, ClientNonInvite::new(t0, options, false, config)).unwrap();
        let later = t0 + Duration::from_millis(200);
        let inv = with_branch(&invite(), "z9hG4bKc2");
        let b = client_key(&inv).unwrap();
        table.insert(b.clone(), UDP, ClientInvite::new(later, inv, false, config)).unwrap();
        let labels = [(&a, "options"), (&b, "invite")];
        assert_eq!(
            drain(&mut table, t0, t0, &labels),
            [row(0, "options", "send OPTIONS"), row(0, "invite", "send INVITE")]
        );
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(
            run(&mut table, t0, 4_000, &labels),
            [
                row(500, "options", "send OPTIONS"),
                row(700, "invite", "send INVITE"),
                row(1_500, "options", "send OPTIONS"),
                row(1_700, "invite", "send INVITE"),
                row(3_500, "options", "send OPTIONS"),
                row(3_700, "invite", "send INVITE"),
            ]
        );
        // Woken late, the table fires every due machine once, earliest deadline first.
        table.handle_timeout(t0 + Duration::from_millis(7_800));
        assert_eq!(
            drain(&mut table, t0, t0 + Duration::from_millis(7_800), &labels),
            [row(7_800, "options", "send OPTIONS"), row(7_800, "invite", "send INVITE")]
        );
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_millis(11_800)));
        let log = run(&mut table, t0, 40_000, &labels);
        let ends: Vec<_> =
            log.iter().filter(|(_, _, what)| what != "send OPTIONS" && what != "send INVITE").cloned().collect();
        assert_eq!(
            ends,
            [
                row(32_000, "options", "timeout"),
                row(32_000, "options", "terminated"),
                row(32_200, "invite", "timeout"),
                row(32_200, "invite", "terminated"),
            ]
        );
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn wait_timers_fire_in_batches_a_little_after_their_deadline() {
        let t0 = crate::clock::now();
        let config = TimerConfig::default();
        let mut table = TransactionTable::new(10);
        let answer = Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n");
        let mut keys = Vec::new();
        for (i, offset_ms) in [0u64, 30, 250].into_iter().enumerate() {
            let now = t0 + Duration::from_millis(offset_ms);
            let options = with_branch(&request("OPTIONS"), &format!("z9hG4bKj{i}"));
            let Match::New(key) = table.handle_request(now, &options) else { panic!("a new OPTIONS") };
            table.insert(key.clone(), UDP, ServerNonInvite::new(now, options, false, config)).unwrap();
            table.send_response(now, &key, answer.clone(), 200).unwrap();
            keys.push(key);
        }
        table.drain_outputs().for_each(drop);
        // Timer J is 32 s after each answer; the first two share a 100 ms slot.
        let j = t0 + Duration::from_secs(32);
        assert_eq!(table.poll_timeout(), Some(j));
        table.handle_timeout(j);
        assert_eq!(table.len(), 2);
        let batch = table.poll_timeout().unwrap();
        assert_eq!(batch, j + Duration::from_millis(100));
        table.handle_timeout(batch);
        assert_eq!(table.len(), 1);
        assert!(table.contains(&keys[2]));
        // The last one is due at 32.25 s and fires at 32.3 s.
        assert_eq!(table.poll_timeout(), Some(j + Duration::from_millis(300)));
        table.handle_timeout(j + Duration::from_millis(299));
        assert_eq!(table.len(), 1);
        table.handle_timeout(j + Duration::from_millis(300));
        assert!(table.is_empty());
    }

    #[test]
    fn timer_l_after_a_2xx_fires_on_the_wait_timer_grid() {
        let t0 = crate::clock::now();
        let mut table = TransactionTable::new(10);
        for (i, offset_ms) in [0u64, 30, 130].into_iter().enumerate() {
            let now = t0 + Duration::from_millis(offset_ms);
            let invite = with_branch(&invite(), &format!("z9hG4bKl{i}"));
            let Match::New(key) = table.handle_request(now, &invite) else { panic!("a new INVITE") };
            table
                .insert(key.clone(), UDP, ServerInvite::new(now, invite.clone(), true, TimerConfig::default()))
                .unwrap();
            table.send_response(now, &key, response_bytes(&invite, 200, Some("b")), 200).unwrap();
        }
        table.drain_outputs().for_each(drop);
        // Timer L (64*T1) keeps each answered INVITE to absorb retransmissions; the first
        // two end in one wake-up, the third in the next slot.
        let l = t0 + Duration::from_secs(32);
        assert_eq!(table.poll_timeout(), Some(l));
        table.handle_timeout(l);
        assert_eq!(table.len(), 2);
        assert_eq!(table.poll_timeout(), Some(l + Duration::from_millis(100)));
        table.handle_timeout(l + Duration::from_millis(100));
        assert_eq!(table.len(), 1);
        assert_eq!(table.poll_timeout(), Some(l + Duration::from_millis(200)));
        table.handle_timeout(l + Duration::from_millis(200));
        assert!(table.is_empty());
    }

    #[test]
    fn table_routes_retransmissions_acks_and_cancel_by_key() {
        let t0 = crate::clock::now();
        let mut table = TransactionTable::new(10);
        let flow = Destination::Flow(FlowId(3));
        let Match::New(key) = table.handle_request(t0, &invite()) else { panic!("a new INVITE") };
        table.insert(key.clone(), flow, ServerInvite::new(t0, invite(), true, TimerConfig::default())).unwrap();
        table.send_trying(t0, &key, None).unwrap();
        assert_eq!(table.handle_request(t0, &invite()), Match::Existing(key.clone()));
        let cancel = request("CANCEL");
        let Match::New(cancel_key) = table.handle_request(t0, &cancel) else { panic!("CANCEL is its own transaction") };
        assert_eq!(cancel_key.cancelled_invite().as_ref(), Some(&key));
        table.send_response(t0, &key, response_bytes(&invite(), 487, Some("b2")), 487).unwrap();
        assert_eq!(table.handle_request(t0, &ack()), Match::Existing(key.clone()));
        let outputs: Vec<_> =
            table.drain_outputs().map(|o| (o.key == key, o.destination, describe(&o.output))).collect();
        assert_eq!(
            outputs,
            [
                (true, flow, "send 100".to_string()),
                (true, flow, "send 100".to_string()),
                (true, flow, "send 487".to_string()),
                (true, flow, "terminated".to_string()),
            ]
        );
        assert!(!table.contains(&key));
        assert_eq!(
            table.handle_request(t0, &parse("OPTIONS sip:h SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")),
            Match::Unkeyed
        );
    }

    #[test]
    fn table_routes_responses_to_client_transactions() {
        let t0 = crate::clock::now();
        let mut table = TransactionTable::new(10);
        let key = client_key(&invite()).unwrap();
        table.insert(key.clone(), UDP, ClientInvite::new(t0, invite(), false, TimerConfig::default())).unwrap();
        assert_eq!(table.handle_response(t0, &response(&invite(), 180, Some("b2"))), Match::Existing(key.clone()));
        assert_eq!(table.handle_response(t0, &response(&invite(), 200, Some("b2"))), Match::Existing(key.clone()));
        let Some(Transaction::ClientInvite(m)) = table.get(&key) else { panic!("still there") };
        assert_eq!(m.state(), ClientInviteState::Accepted);
        let stray = response(&with_branch(&invite(), "z9hG4bKzz"), 200, Some("b9"));
        assert!(matches!(table.handle_response(t0, &stray), Match::New(_)));
        let whats: Vec<_> = table.drain_outputs().map(|o| describe(&o.output)).collect();
        assert_eq!(whats, ["send INVITE", "up 180", "up 200"]);
        assert_eq!(table.send_response(t0, &key, Bytes::new(), 200), Err(TableError::WrongKind));
    }

    #[test]
    fn table_is_bounded_and_says_so_when_full() {
        let t0 = crate::clock::now();
        let mut table = TransactionTable::new(2);
        for branch in ["z9hG4bKa", "z9hG4bKb", "z9hG4bKc"] {
            let req = with_branch(&request("BYE"), branch);
            let key = server_key(&req).unwrap();
            let result = table.insert(key, UDP, ServerNonInvite::new(t0, req, false, TimerConfig::default()));
            if branch == "z9hG4bKc" {
                assert_eq!(result, Err(TableError::Full { capacity: 2 }));
                assert_eq!(result.unwrap_err().to_string(), "transaction table full (2 transactions)");
            } else {
                result.unwrap();
            }
        }
        assert_eq!(table.len(), 2);
        let first = server_key(&with_branch(&request("BYE"), "z9hG4bKa")).unwrap();
        assert!(table.remove(&first).is_some());
        let req = with_branch(&request("BYE"), "z9hG4bKc");
        table
            .insert(server_key(&req).unwrap(), UDP, ServerNonInvite::new(t0, req, false, TimerConfig::default()))
            .unwrap();
    }

    #[test]
    fn table_rejects_duplicate_and_mismatched_keys() {
        let t0 = crate::clock::now();
        let config = TimerConfig::default();
        let mut table = TransactionTable::new(10);
        let key = server_key(&invite()).unwrap();
        table.insert(key.clone(), UDP, ServerInvite::new(t0, invite(), false, config)).unwrap();
        assert_eq!(
            table.insert(key.clone(), UDP, ServerInvite::new(t0, invite(), false, config)),
            Err(TableError::Duplicate)
        );
        let client = client_key(&invite()).unwrap();
        assert_eq!(
            table.insert(client.clone(), UDP, ServerInvite::new(t0, invite(), false, config)),
            Err(TableError::WrongKind)
        );
        assert_eq!(
            table.insert(client, UDP, ClientNonInvite::new(t0, invite(), false, config)),
            Err(TableError::WrongKind)
        );
        assert_eq!(table.send_trying(t0, &server_key(&request("BYE")).unwrap(), None), Err(TableError::NotFound));
    }

    #[test]
    fn table_flow_closed_fails_the_transactions_on_that_flow() {
        let t0 = crate::clock::now();
        let config = TimerConfig::default();
        let mut table = TransactionTable::new(10);
        let browser = Destination::Flow(FlowId(9));
        let on_flow = server_key(&invite()).unwrap();
        table.insert(on_flow.clone(), browser, ServerInvite::new(t0, invite(), true, config)).unwrap();
        let elsewhere = client_key(&invite()).unwrap();
        table.insert(elsewhere.clone(), UDP, ClientInvite::new(t0, invite(), false, config)).unwrap();
        table.drain_outputs().for_each(drop);
        table.handle_flow_closed(t0, FlowId(9));
        let outputs: Vec<_> = table.drain_outputs().map(|o| (o.key, describe(&o.output))).collect();
        assert_eq!(outputs, [(on_flow.clone(), "timeout".into()), (on_flow.clone(), "terminated".into())]);
        assert!(!table.contains(&on_flow));
        let Some(Transaction::ClientInvite(m)) = table.get(&elsewhere) else { panic!("untouched") };
        assert_eq!(m.state(), ClientInviteState::Calling);
    }
}

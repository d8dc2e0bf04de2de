//! L4: the stateful proxy of RFC 3261 §16. Every request gets a server transaction; an
//! initial request is handed to the [`RoutingPolicy`] (the engine's users, registrar and,
//! later, trunks), which answers it or names targets; the proxy forks to every target in
//! parallel through client transactions, keeps the response context (§16.7: best
//! response, every 2xx forwarded, 6xx cancels the rest), handles CANCEL (§16.10) and
//! Timer C, and routes in-dialog requests and 2xx ACKs by its own Record-Route entries,
//! whose flow tokens send them back over the exact connection of a browser.
//!
//! It makes no policy (who may call whom) and does no I/O.

mod calls;
mod context;
mod token;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::dialog::{Dialog, DialogId, Dialogs, Party, Side};
use crate::message::forward::{self, RequestEdit};
use crate::message::response::{self, Reply};
use crate::message::{HeaderName, Host, Limits, Message, Method, NameAddr, Uri, Via};
use crate::transaction::{
    ClientInvite, ClientNonInvite, KeyMap, Output, ServerInvite, ServerNonInvite, TableOutput, TimerConfig,
    TransactionKey, TransactionTable, client_key,
};
use crate::transport::{Destination, FlowId, Source, Transmit, TransportKind};

use context::{Branch, BranchAuth, BranchState, Context};
use token::{OwnRoute, TokenKey, host_port};

pub use calls::CallEvent;

/// `host:port` of an address as a SIP URI or Via writes it (IPv6 in brackets).
pub fn host_port_of(addr: SocketAddr) -> String {
    host_port(addr)
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub timers: TimerConfig,
    /// §16.6 step 11: how long an INVITE branch may ring (default three minutes).
    pub timer_c: Duration,
    pub max_transactions: usize,
    /// Our bound listeners: Via and Record-Route name them, and Route entries naming them
    /// are ours.
    pub listen: Vec<(TransportKind, SocketAddr)>,
    pub server_name: String,
    /// A call longer than this is ended with a BYE to both sides.
    pub max_dialog_duration: Duration,
    pub max_dialogs: usize,
    /// When a party's flow dies mid-call, send the other party a BYE.
    pub bye_on_flow_loss: bool,
    /// Our digest realm: Proxy-Authorization for it is consumed, not forwarded.
    pub realm: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            timer_c: Duration::from_secs(180),
            max_transactions: 100_000,
            listen: Vec::new(),
            server_name: format!("webtrunk/{}", env!("CARGO_PKG_VERSION")),
            max_dialog_duration: Duration::from_secs(6 * 3600),
            max_dialogs: 100_000,
            bye_on_flow_loss: true,
            realm: None,
        }
    }
}

/// Where to send one branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The new Request-URI (a registered contact), or `None` to keep it.
    pub uri: Option<String>,
    pub destination: Destination,
    pub kind: TransportKind,
    /// Our socket on that side: Via sent-by and the Record-Route entry facing the target.
    pub local: SocketAddr,
    /// The flow of the target, for the token in the entry facing it.
    pub flow: Option<FlowId>,
    /// Route values to put first (a binding's Path).
    pub routes: Vec<String>,
    /// Route elements to remove from the top (ours, §16.4).
    pub pop_routes: usize,
    /// The previous hop strict-routed: the last Route element became the Request-URI and
    /// is removed (§16.4).
    pub strict: bool,
    /// With [`Decision::Failover`]: give up on this target when it has not answered even
    /// provisionally within this time, instead of waiting for Timer B (32 s).
    pub failover_timeout: Option<Duration>,
    /// P-Asserted-Identity to send (a trunk's caller-ID policy, RFC 3325).
    pub asserted_identity: Option<String>,
    /// Where to send instead when the request turns out larger than UDP allows (RFC 3261
    /// §18.1.1: over 1300 bytes, a congestion-controlled transport).
    pub large_fallback: Option<Destination>,
    /// Answers the target's 401/407 (a trunk account) instead of passing it upstream.
    pub credentials: Option<UacCredentials>,
    /// The CSeq number to send instead of the request's (in-dialog requests of a caller
    /// whose INVITE we re-sent with credentials).
    pub cseq: Option<u32>,
    /// The From user part toward this target (a trunk's caller-ID policy); responses and
    /// the rest of the dialog get the caller's own identity back.
    pub from_user: Option<String>,
    /// A To value to send instead of the request's (see [`Self::from_user`]).
    pub to: Option<String>,
}

/// Digest credentials a branch answers its target's challenges with (RFC 3261 §22.2).
#[derive(Clone, PartialEq, Eq)]
pub struct UacCredentials {
    pub username: String,
    pub password: String,
    /// Answer only this realm's challenges; any realm when `None`.
    pub realm: Option<String>,
}

impl std::fmt::Debug for UacCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UacCredentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target reached at `destination` through our socket `local`, with the Request-URI
    /// kept and nothing else asked for; set the other fields with struct update syntax.
    pub fn new(destination: Destination, kind: TransportKind, local: SocketAddr) -> Self {
        Self {
            uri: None,
            destination,
            kind,
            local,
            flow: None,
            routes: Vec::new(),
            pop_routes: 0,
            strict: false,
            failover_timeout: None,
            asserted_identity: None,
            large_fallback: None,
            credentials: None,
            cseq: None,
            from_user: None,
            to: None,
        }
    }
}

/// RFC 3261 §18.1.1: a request larger than this, with the path MTU unknown, must not go
/// over UDP.
pub const LARGE_REQUEST: usize = 1300;

/// A response the proxy sends itself, built from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub code: u16,
    pub reason: Option<String>,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// A body (its Content-Type among `headers`).
    pub body: Option<Bytes>,
}

impl LocalReply {
    pub fn new(code: u16) -> Self {
        Self { code, reason: None, headers: Vec::new(), body: None }
    }

    pub fn with_reason(code: u16, reason: impl Into<String>) -> Self {
        Self { code, reason: Some(reason.into()), headers: Vec::new(), body: None }
    }
}

/// What the policy decided about an out-of-dialog request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reply(LocalReply),
    /// Fork to every target in parallel. Empty means nobody can be reached: 480.
    Forward(Vec<Target>),
    /// Try the targets one after another (trunk failover): the next one after a 408, a
    /// 5xx, a timeout or a transport error; any other answer ends the search.
    Failover(Vec<Target>),
}

/// The decision points of the proxy (pingora's `ProxyHttp`, repro's processors): what a
/// request out of any dialog means, and where a flow went. It does no I/O.
pub trait RoutingPolicy {
    /// An initial request that passed §16.3: answer it (OPTIONS to us, REGISTER, 407,
    /// 404, 480) or name the targets.
    fn route(&mut self, now: Instant, request: &Message, source: &Source) -> Decision;
    /// The live flow a token's flow id stands for now: itself while it is open, or the
    /// flow that replaced it (RFC 5626: the same instance registered again on a new
    /// connection). With its transport and our local address.
    fn resolve_flow(&self, flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)>;
    /// A fresh To tag or branch suffix.
    fn token(&mut self, len: usize) -> String;
    /// A request about to be forwarded to `targets`: keep its body, rewrite it, or take
    /// time to ([`BodyAction::Defer`], then [`Proxy::resume`]). Media anchoring lives here.
    fn request_body(&mut self, _now: Instant, _request: &Message, _source: &Source, _targets: &[Target]) -> BodyAction {
        BodyAction::Keep
    }
    /// A response about to go upstream to `request`'s sender, likewise.
    fn response_body(&mut self, _now: Instant, _request: &Message, _response: &Message) -> BodyAction {
        BodyAction::Keep
    }
}

/// What the policy does with a body on its way through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    Keep,
    Replace(Bytes),
    /// The new body comes later, through [`Proxy::resume`] with this id.
    Defer(u64),
    /// Answer the request with this instead of forwarding it.
    Refuse(LocalReply),
}

/// Counters an operator reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded: u64,
    pub branches: u64,
    pub cancelled: u64,
    pub dialogs_started: u64,
    pub dialogs_open: u64,
    pub stray_responses: u64,
}

#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    table: TransactionTable,
    /// Response contexts by server transaction key.
    contexts: KeyMap<Box<Context>>,
    /// Client transaction key of each branch → server key of its context.
    branches: KeyMap<TransactionKey>,
    tokens: TokenKey,
    tag_key: HashKey,
    loop_key: HashKey,
    dialogs: Dialogs,
    /// Branch deadlines (Timer C, failover), earliest first: one entry per branch that
    /// has one, moved or removed with it (see [`BranchDeadlines`]).
    branch_deadlines: BranchDeadlines,
    /// Requests we send ourselves (OPTIONS health checks), by client key.
    originated: KeyMap<u64>,
    /// Their outcomes: the final response, or `None` for a timeout or transport error.
    outcomes: VecDeque<(u64, Option<Message>)>,
    transmits: VecDeque<Transmit>,
    /// Requests and responses waiting for the policy's new body (see [`BodyAction`]).
    deferred: HashMap<u64, Deferred>,
    /// Call-ID and CSeq of re-INVITEs we answered 2xx ourselves: their ACKs stop here.
    answered_locally: VecDeque<(Vec<u8>, u32)>,
    stats: ProxyStats,
    /// Call starts and ends for the policy's per-trunk call counts.
    call_events: VecDeque<CallEvent>,
}

#[derive(Debug)]
enum Deferred {
    Request { key: TransactionKey, request: Message, source: Source, targets: Vec<Target>, serial: bool },
    Response { server: TransactionKey, response: Message, code: u16 },
}

impl Proxy {
    pub fn new(config: ProxyConfig, secret: [u8; 32]) -> Self {
        Self {
            table: TransactionTable::new(config.max_transactions),
            dialogs: Dialogs::new(config.max_dialog_duration, config.max_dialogs),
            config,
            contexts: KeyMap::default(),
            branches: KeyMap::default(),
            tokens: TokenKey::new(secret),
            tag_key: HashKey::new(&secret, b"webtrunk local To tag"),
            loop_key: HashKey::new(&secret, b"webtrunk loop hash"),
            branch_deadlines: BranchDeadlines::default(),
            originated: KeyMap::default(),
            outcomes: VecDeque::new(),
            transmits: VecDeque::new(),
            deferred: HashMap::new(),
            answered_locally: VecDeque::new(),
            stats: ProxyStats::default(),
            call_events: VecDeque::new(),
        }
    }

    pub fn set_listen(&mut self, listen: Vec<(TransportKind, SocketAddr)>) {
        self.config.listen = listen;
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats { dialogs_open: self.dialogs.len() as u64, ..self.stats }
    }

    /// Sends a request of our own (an OPTIONS ping) through a client transaction; its
    /// outcome comes out of [`Self::poll_outcome`] under `id`.
    pub fn originate(
        &mut self,
        now: Instant,
        request: Bytes,
        destination: Destination,
        id: u64,
        policy: &mut dyn RoutingPolicy,
    ) -> bool {
        let Ok(message) = Message::parse(request, &Limits::default()) else { return false };
        let Some(key) = client_key(&message) else { return false };
        let reliable = !matches!(destination, Destination::Datagram { .. });
        let txn = ClientNonInvite::new(now, message, reliable, self.config.timers);
        if self.table.insert(key.clone(), destination, txn).is_err() {
            return false;
        }
        self.originated.insert(key, id);
        self.drain(now, policy);
        true
    }

    /// The outcome of a request of ours: its final response, or `None` when it timed out
    /// or could not be sent.
    pub fn poll_outcome(&mut self) -> Option<(u64, Option<Message>)> {
        self.outcomes.pop_front()
    }

    /// A party re-registered on a new flow (RFC 5626 flow replacement): its calls follow.
    pub fn flow_replaced(&mut self, old: FlowId, new: FlowId) {
        let moved = self.dialogs.repoint(old, new);
        if moved > 0 {
            tracing::info!(%old, %new, dialogs = moved, "calls moved to the new flow");
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let branch = self.branch_deadlines.next();
        [self.table.poll_timeout(), branch, self.dialogs.next_expiry()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant, policy: &mut dyn RoutingPolicy) {
        self.table.handle_timeout(now);
        // §16.8: Timer C on a ringing branch cancels it; one that never rang is Timer B's.
        let mut expired = Vec::new();
        let mut silent = Vec::new();
        while let Some(branch) = self.branch_deadlines.pop_due(now) {
            let Some(server) = self.branches.get(&branch).cloned() else { continue };
            let Some(b) = self.contexts.get_mut(&server).and_then(|c| c.branches.iter_mut().find(|b| b.key == branch))
            else {
                continue;
            };
            b.scheduled = None;
            if b.timer_c.is_some_and(|at| at <= now) {
                b.timer_c = None;
                expired.push((server.clone(), branch.clone()));
            }
            if b.failover_at.is_some_and(|at| at <= now) {
                b.failover_at = None;
                silent.push(branch);
            }
            self.branch_deadlines.update(b);
        }
        for (server, branch) in expired {
            tracing::debug!(%branch, "Timer C fired; cancelling the branch");
            self.cancel_branch(now, &server, &branch);
        }
        self.abandon_silent_branches(now, silent, policy);
        for dialog in self.dialogs.expired(now) {
            self.call_dialog_ended(&dialog.id.call_id);
            tracing::info!(call_id = %dialog.id.call_id, "maximum call duration reached; ending the call");
            self.send_bye(now, &dialog, Side::Caller, "max duration", policy);
            self.send_bye(now, &dialog, Side::Callee, "max duration", policy);
        }
        self.drain(now, policy);
    }

    /// A connection closed: transactions on it fail now rather than at their timeout.
    pub fn flow_closed(&mut self, now: Instant, flow: FlowId, policy: &mut dyn RoutingPolicy) {
        self.table.handle_flow_closed(now, flow);
        for (dialog, lost) in self.dialogs.flow_closed(flow) {
            self.call_dialog_ended(&dialog.id.call_id);
            if !self.config.bye_on_flow_loss {
                continue;
            }
            tracing::info!(call_id = %dialog.id.call_id, %flow, "a party's flow died mid-call; ending the call");
            let other = match lost {
                Side::Caller => Side::Callee,
                Side::Callee => Side::Caller,
            };
            self.send_bye(now, &dialog, other, "flow lost", policy);
        }
        self.drain(now, policy);
    }

    /// Nothing can reach `destination`: its transactions fail as after a transport error.
    pub fn unreachable(&mut self, now: Instant, destination: Destination, policy: &mut dyn RoutingPolicy) {
        self.table.handle_unreachable(now, destination);
        self.drain(now, policy);
    }

    /// A BYE into a dialog on behalf of the other party (RFC 3326 Reason says why).
    fn send_bye(&mut self, now: Instant, dialog: &Dialog, to: Side, why: &str, policy: &mut dyn RoutingPolicy) {
        let bye = dialog.bye_towards(to);
        let (kind, local, destination) = match bye.destination {
            Destination::Flow(flow) => match policy.resolve_flow(flow) {
                Some((flow, kind, local)) => (kind, local, Destination::Flow(flow)),
                None => return,
            },
            d @ Destination::Datagram { local, .. } => (TransportKind::Udp, local, d),
            d @ Destination::Connection { kind, .. } => match self.local_toward(kind) {
                Some(local) => (kind, local, d),
                None => return,
            },
        };
        self.stats.branches += 1;
        let branch = format!("{OUR_BRANCH}bye.{:x}.{}", loop_hash_str(&bye.call_id), self.stats.branches);
        let text = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} BYE\r\nReason: SIP;cause=200;text=\"{why}\"\r\nContent-Length: 0\r\n\r\n",
            bye.request_uri,
            kind.via_token(),
            host_port(local),
            bye.from,
            bye.to,
            bye.call_id,
            bye.cseq
        );
        let Ok(message) = Message::parse(Bytes::from(text), &Limits::default()) else { return };
        let Some(key) = client_key(&message) else { return };
        let reliable = kind.is_connection();
        let _ = self.table.insert(key, destination, ClientNonInvite::new(now, message, reliable, self.config.timers));
    }

    /// A response from downstream: to its client transaction, or dropped (RFC 6026).
    pub fn handle_response(&mut self, now: Instant, response: Message, policy: &mut dyn RoutingPolicy) {
        match self.table.handle_response(now, &response) {
            crate::transaction::Match::Existing(_) => {}
            crate::transaction::Match::New(_) | crate::transaction::Match::Unkeyed => {
                self.stats.stray_responses += 1;
                tracing::debug!("stray response dropped: {}", response.summary());
            }
        }
        self.drain(now, policy);
    }

    /// A request that passed the engine's syntax checks.
    pub fn handle_request(&mut self, now: Instant, request: Message, source: Source, policy: &mut dyn RoutingPolicy) {
        let is_ack = request.method() == Some(&Method::Ack);
        let key = match self.table.handle_request(now, &request) {
            crate::transaction::Match::Existing(_) => return self.drain(now, policy),
            crate::transaction::Match::Unkeyed => {
                // Validation guarantees a top Via; this is only for safety.
                return self.stateless_reply(&request, &source, LocalReply::with_reason(400, "Malformed Via Header"));
            }
            crate::transaction::Match::New(key) => key,
        };
        if is_ack && self.absorb_ack(&request) {
            return self.drain(now, policy);
        }
        if is_ack {
            // An ACK that matches no INVITE transaction acknowledges a 2xx: end to end,
            // along the dialog's route; one we cannot route is dropped (ACKs get no answer).
            match self.route_in_dialog(&request, policy) {
                Ok(target) => self.send_stateless(&request, target),
                Err(reply) => tracing::debug!(code = reply.code, "ACK dropped: {}", request.summary()),
            }
            return self.drain(now, policy);
        }
        if request.method() == Some(&Method::Cancel) {
            self.handle_cancel(now, key, request, source);
            return self.drain(now, policy);
        }
        let destination = reply_destination(&source, &request);
        let reliable = source.kind.is_connection();
        let inserted = if request.method() == Some(&Method::Invite) {
            let txn = ServerInvite::new(now, request.clone(), reliable, self.config.timers);
            self.table.insert(key.clone(), destination, txn)
        } else {
            let txn = ServerNonInvite::new(now, request.clone(), reliable, self.config.timers);
            self.table.insert(key.clone(), destination, txn)
        };
        if let Err(e) = inserted {
            // At debug: under overload this fires per request, and the 503s say it anyway.
            tracing::debug!(error = %e, "cannot take a new transaction");
            let mut reply = LocalReply::with_reason(503, "Too Many Transactions");
            reply.headers.push(("Retry-After", "5".into()));
            return self.stateless_reply(&request, &source, reply);
        }
        let decision = self.decide(now, &request, &source, policy);
        if let Decision::Reply(reply) = &decision
            && matches!(reply.code, 401 | 407)
        {
            // RFC 3261 §8.2.7: a challenge is the classic stateless answer. A retransmission
            // gets a fresh challenge, which is as good, and no transaction is kept 32 s
            // for it (half of every REGISTER and INVITE exchange is this).
            self.table.remove(&key);
            let tag = self.local_tag(&request);
            let bytes = self.build_reply(&request, reply, &tag, None);
            self.transmits.push_back(Transmit { destination, bytes: Bytes::from(bytes) });
            return self.drain(now, policy);
        }
        // §16.2/§17.2.1: 100 Trying only when the answer will take a while; a local
        // answer (a 407, a 404) goes out at once and needs none.
        if request.method() == Some(&Method::Invite) && !matches!(decision, Decision::Reply(_)) {
            let _ = self.table.send_trying(now, &key, Some(source.remote));
        }
        match decision {
            Decision::Reply(reply) => self.reply_bytes(now, &key, &request, reply),
            Decision::Forward(targets) | Decision::Failover(targets) if targets.is_empty() => {
                self.reply_bytes(now, &key, &request, LocalReply::new(480));
            }
            Decision::Forward(targets) => self.forward(now, key, request, source, targets, false, policy),
            Decision::Failover(targets) => self.forward(now, key, request, source, targets, true, policy),
        }
        self.drain(now, policy);
    }

    /// §16.3 and §16.4, then the policy for out-of-dialog requests, or our own Route
    /// entries for in-dialog ones.
    fn decide(&mut self, now: Instant, request: &Message, source: &Source, policy: &mut dyn RoutingPolicy) -> Decision {
        let in_dialog = request
            .first_value(HeaderName::To)
            .and_then(|to| NameAddr::parse(&to).ok().and_then(|n| n.tag().map(<[u8]>::to_vec)))
            .is_some();
        let proxy_require: Vec<String> =
            request.list(HeaderName::ProxyRequire).iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        if !proxy_require.is_empty() {
            let mut reply = LocalReply::new(420);
            reply.headers.push(("Unsupported", proxy_require.join(", ").into()));
            return Decision::Reply(reply);
        }
        if self.is_loop(request) {
            return Decision::Reply(LocalReply::new(482));
        }
        if in_dialog {
            if request.max_forwards() == Some(Ok(0)) {
                return Decision::Reply(LocalReply::new(483));
            }
            return match self.route_in_dialog(request, policy) {
                Ok(target) => {
                    self.track_in_dialog(request);
                    Decision::Forward(vec![target])
                }
                Err(reply) => Decision::Reply(reply),
            };
        }
        // §16.4: our own URI on top of an initial request's Route set (a preloaded route to
        // us) is consumed here.
        let own = request
            .list(HeaderName::Route)
            .iter()
            .take_while(|r| self.tokens.own_route(r, &self.config.listen).is_some() || self.is_own_plain_route(r))
            .count();
        // §16.3 step 3: Max-Forwards 0 ends here, except an OPTIONS the policy answers itself.
        let exhausted = request.max_forwards() == Some(Ok(0));
        if exhausted && request.method() != Some(&Method::Options) {
            return Decision::Reply(LocalReply::new(483));
        }
        let with_own = |targets: Vec<Target>| -> Vec<Target> {
            targets.into_iter().map(|t| Target { pop_routes: t.pop_routes.max(own), ..t }).collect()
        };
        match policy.route(now, request, source) {
            Decision::Forward(_) | Decision::Failover(_) if exhausted => Decision::Reply(LocalReply::new(483)),
            Decision::Forward(targets) => Decision::Forward(with_own(targets)),
            Decision::Failover(targets) => Decision::Failover(with_own(targets)),
            reply => reply,
        }
    }

    /// Keeps the dialog's CSeqs current; a BYE ends it.
    fn track_in_dialog(&mut self, request: &Message) {
        let (Some((call_id, from, to)), Some((cseq, method))) = (dialog_tags(request), request.cseq()) else {
            return;
        };
        self.dialogs.request(&call_id, &from, &to, cseq, method == Method::Bye);
        if method == Method::Bye {
            self.call_dialog_ended(&call_id);
        }
    }

    /// Routes a request by the Route set we recorded: our entries are popped, and the
    /// last of them (the one facing the next hop) says which flow to use, if any.
    fn route_in_dialog(&self, request: &Message, policy: &dyn RoutingPolicy) -> Result<Target, LocalReply> {
        let mut routes = request.list(HeaderName::Route);
        let mut facing: Option<OwnRoute> = None;
        // §16.4 strict-route compatibility: a strict router put our Record-Route URI in the
        // Request-URI; the real target is the last Route element.
        let mut new_uri = None;
        if let Some(own) = request.request_uri().and_then(|u| self.tokens.own_route(u, &self.config.listen))
            && let Some(last) = routes.pop()
        {
            facing = Some(own);
            new_uri = NameAddr::parse(&last).ok().map(|n| String::from_utf8_lossy(n.uri).into_owned());
        }
        let strict = new_uri.is_some();
        let mut popped = 0;
        for element in &routes {
            match self.tokens.own_route(element, &self.config.listen) {
                Some(own) => {
                    popped += 1;
                    facing = Some(own);
                }
                None => break,
            }
        }
        let Some(facing) = facing else {
            // Not a dialog we record-routed: we relay for nobody.
            return Err(LocalReply::with_reason(403, "Not Routed Through This Proxy"));
        };
        let (cseq, from_user, to) = self.dialog_changes(request);
        if let Some(flow) = facing.flow {
            let Some((flow, kind, local)) = policy.resolve_flow(flow) else {
                // RFC 5626 §5.3: the flow the token names is gone.
                return Err(LocalReply::new(430));
            };
            return Ok(Target {
                uri: new_uri,
                flow: Some(flow),
                pop_routes: popped,
                strict,
                cseq,
                from_user,
                to,
                ..Target::new(Destination::Flow(flow), kind, local)
            });
        }
        // The next hop is the next Route entry, or the Request-URI: a UDP peer by address.
        let next = match (routes.get(popped), &new_uri) {
            (Some(element), _) => NameAddr::parse(element).ok().map(|n| n.uri.to_vec()),
            (None, Some(uri)) => Some(uri.as_bytes().to_vec()),
            (None, None) => request.request_uri().map(<[u8]>::to_vec),
        };
        let next = next.and_then(|uri| Uri::parse(&uri).ok()).and_then(|u| u.as_sip().cloned());
        let Some(next) = next else { return Err(LocalReply::with_reason(400, "No Next Hop")) };
        // RFC 3263 §4.1: the transport the URI names; `sips` means TLS.
        let kind = match next.param("transport").flatten() {
            _ if next.secure => TransportKind::Tls,
            Some(t) if t.eq_ignore_ascii_case("tcp") => TransportKind::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => TransportKind::Tls,
            _ => TransportKind::Udp,
        };
        let default_port = if kind == TransportKind::Tls { 5061 } else { 5060 };
        let remote = match next.host {
            Host::Ip(ip) => SocketAddr::new(ip, next.port.unwrap_or(default_port)),
            // In-dialog targets are the Contacts trunks and phones gave, which are addresses;
            // a .invalid host (a browser's) never resolves.
            Host::Name(_) => return Err(LocalReply::new(480)),
        };
        if kind != TransportKind::Udp {
            let local = self.local_toward(kind).ok_or_else(|| LocalReply::new(503))?;
            return Ok(Target {
                uri: new_uri,
                pop_routes: popped,
                strict,
                cseq,
                from_user,
                to,
                ..Target::new(Destination::Connection { kind, remote }, kind, local)
            });
        }
        let local = self.local_for(TransportKind::Udp).ok_or_else(|| LocalReply::new(503))?;
        Ok(Target {
            uri: new_uri,
            pop_routes: popped,
            strict,
            cseq,
            from_user,
            to,
            ..Target::new(Destination::Datagram { local, remote }, TransportKind::Udp, local)
        })
    }

    /// A Route entry naming one of our addresses without our token (a client configured
    /// with us as outbound proxy, `<sip:127.0.0.1:8080;transport=ws;lr>`).
    fn is_own_plain_route(&self, element: &[u8]) -> bool {
        let Some(Ok(Uri::Sip(uri))) = NameAddr::parse(element).ok().map(|n| n.parse_uri()) else { return false };
        let Host::Ip(ip) = uri.host else { return false };
        let port = uri.port.unwrap_or(5060);
        self.config.listen.iter().any(|(_, a)| a.port() == port && (a.ip() == ip || a.ip().is_unspecified()))
    }

    fn local_for(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.config.listen.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// The address our Via and Record-Route give on a connection we dial: our listener of
    /// that transport, else the TCP one, else any.
    fn local_toward(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.local_for(kind)
            .or_else(|| self.local_for(TransportKind::Tcp))
            .or_else(|| self.config.listen.first().map(|(_, a)| *a))
    }

    /// §16.3 step 4: a Via of ours whose branch carries this request's loop hash means it
    /// came back unchanged.
    fn is_loop(&self, request: &Message) -> bool {
        // Almost every request carries no branch of ours at all: no hashing for those. Our
        // branch can only be in a Via, and the Via lines are a tenth of a request.
        let ours = request
            .headers_named(HeaderName::Via)
            .any(|h| memchr::memmem::find(request.raw_line(h), OUR_BRANCH.as_bytes()).is_some());
        if !ours {
            return false;
        }
        let mark = branch_mark(loop_hash(&self.loop_key, request));
        request
            .list(HeaderName::Via)
            .iter()
            .any(|v| Via::parse(v).ok().and_then(|via| via.branch().map(|b| b.starts_with(&mark))).unwrap_or(false))
    }

    /// Forks, once the policy has had its say on the body (it may rewrite it, or take
    /// time to: media anchoring asks rtpengine first, and [`Self::resume`] goes on).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Message,
        source: Source,
        targets: Vec<Target>,
        serial: bool,
        policy: &mut dyn RoutingPolicy,
    ) {
        match policy.request_body(now, &request, &source, &targets) {
            BodyAction::Keep => self.fork(now, key, request, source, targets, serial),
            BodyAction::Replace(body) => match with_body(&request, &body) {
                Some(request) => self.fork(now, key, request, source, targets, serial),
                None => self.reply_bytes(now, &key, &request, LocalReply::new(500)),
            },
            BodyAction::Refuse(reply) => self.reply_bytes(now, &key, &request, reply),
            BodyAction::Defer(id) => {
                self.deferred.insert(id, Deferred::Request { key, request, source, targets, serial });
            }
        }
    }

    /// Goes on with what [`BodyAction::Defer`] held: the new body, or the reply that
    /// ends it (the media relay refused or did not answer).
    pub fn resume(
        &mut self,
        now: Instant,
        id: u64,
        outcome: Result<Bytes, LocalReply>,
        policy: &mut dyn RoutingPolicy,
    ) {
        match (self.deferred.remove(&id), outcome) {
            (None, _) => {}
            (Some(Deferred::Request { key, request, source, targets, serial }), Ok(body)) => {
                match with_body(&request, &body) {
                    Some(request) => self.fork(now, key, request, source, targets, serial),
                    None => self.reply_bytes(now, &key, &request, LocalReply::new(500)),
                }
            }
            (Some(Deferred::Request { key, request, .. }), Err(reply)) => {
                let in_dialog = dialog_tags(&request).is_some();
                let answered = (200..300).contains(&reply.code);
                if answered && in_dialog && request.method() == Some(&Method::Invite) {
                    // Answered by us (an ICE restart the media relay absorbed): the ACK
                    // for this 2xx ends here too.
                    if let (Some(call_id), Some((cseq, _))) = (request.call_id(), request.cseq()) {
                        self.answered_locally.push_back((call_id.to_vec(), cseq));
                        if self.answered_locally.len() > ANSWERED_LOCALLY {
                            self.answered_locally.pop_front();
                        }
                    }
                }
                self.reply_bytes(now, &key, &request, reply);
                // No context was made for a refused initial INVITE: the call ends here.
                if !in_dialog
                    && !answered
                    && let Some(call_id) = request.call_id()
                {
                    self.call_dialog_ended(&String::from_utf8_lossy(&call_id));
                }
            }
            (Some(Deferred::Response { server, response, code }), outcome) => {
                let bytes = match outcome {
                    Ok(body) => with_body(&response, &body).map(|m| m.bytes().clone()),
                    // The answer could not be anchored: the caller still gets it as it was.
                    Err(_) => Some(response.bytes().clone()),
                };
                if let Some(bytes) = bytes {
                    let _ = self.table.send_response(now, &server, bytes, code);
                }
            }
        }
        self.drain(now, policy);
    }

    /// The ACK of a 2xx we sent ourselves: nobody downstream expects it.
    fn absorb_ack(&mut self, ack: &Message) -> bool {
        let (Some(call_id), Some((cseq, _))) = (ack.call_id(), ack.cseq()) else { return false };
        let Some(at) = self.answered_locally.iter().position(|(c, n)| c.as_slice() == &call_id[..] && *n == cseq)
        else {
            return false;
        };
        self.answered_locally.remove(at);
        true
    }

    /// Sends a response upstream, after the policy had its say on the body.
    /// `response` is the branch's as received (what the policy reads); `bytes` the copy
    /// made for upstream, read back only when its body is rewritten.
    fn send_upstream(
        &mut self,
        now: Instant,
        server: &TransactionKey,
        response: &Message,
        bytes: Vec<u8>,
        policy: &mut dyn RoutingPolicy,
    ) {
        let Some(ctx) = self.contexts.get(server) else { return };
        let code = response.status().unwrap_or(500);
        match policy.response_body(now, &ctx.request, response) {
            BodyAction::Keep | BodyAction::Refuse(_) => {
                let _ = self.table.send_response(now, server, Bytes::from(bytes), code);
            }
            BodyAction::Replace(body) => {
                let bytes = match own(bytes) {
                    Some(upstream) => Bytes::from(forward::with_body(&upstream, &body)),
                    None => return,
                };
                let _ = self.table.send_response(now, server, bytes, code);
            }
            BodyAction::Defer(id) => {
                let Some(upstream) = own(bytes) else { return };
                self.deferred.insert(id, Deferred::Response { server: server.clone(), response: upstream, code });
            }
        }
    }

    /// Starts the branches of a new response context: all at once, or (`serial`) the
    /// first, keeping the rest for failover.
    fn fork(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Message,
        source: Source,
        targets: Vec<Target>,
        serial: bool,
    ) {
        let is_invite = request.method() == Some(&Method::Invite);
        let mut context = Context::new(request, source, is_invite);
        let mut targets = targets.into_iter();
        let first: Vec<Target> = if serial { targets.next().into_iter().collect() } else { targets.by_ref().collect() };
        // Built from what is left, not from the whole list: an emptied queue would keep
        // the list's buffer for as long as the context lives.
        if targets.len() > 0 {
            context.pending = targets.collect();
        }
        self.contexts.insert(key.clone(), Box::new(context));
        let mut started = false;
        for target in first {
            started |= self.start_branch(now, &key, target);
        }
        while !started {
            let Some(next) = self.contexts.get_mut(&key).and_then(|c| c.pending.pop_front()) else { break };
            started = self.start_branch(now, &key, next);
        }
        if !started {
            let request = self.contexts.get(&key).map(|c| c.request.clone());
            if let Some(request) = request {
                self.reply_bytes(now, &key, &request, LocalReply::with_reason(503, "No Branch Could Be Sent"));
                self.call_context_ended(&key);
            }
            return;
        }
        self.stats.forwarded += 1;
    }

    /// §16.6 for one target of the context under `key`: the forwarded copy, its client
    /// transaction, its branch. `false` when it could not be sent.
    fn start_branch(&mut self, now: Instant, key: &TransactionKey, target: Target) -> bool {
        let Some(ctx) = self.contexts.get(key) else { return false };
        let (request, source, is_invite) = (&ctx.request, ctx.source, ctx.is_invite);
        let record_route = matches!(request.method(), Some(Method::Invite | Method::Subscribe | Method::Refer))
            && request
                .first_value(HeaderName::To)
                .and_then(|to| NameAddr::parse(&to).ok().map(|n| n.tag().is_none()))
                .unwrap_or(false);
        let max_forwards = match request.max_forwards() {
            Some(Ok(n)) => n.saturating_sub(1),
            _ => 70,
        };
        let hash = loop_hash(&self.loop_key, request);
        let index = self.stats.branches;
        let via = |kind: TransportKind, local: SocketAddr| our_via(kind, local, hash, BranchSuffix::Fork(key, index));
        let rr = if record_route {
            // RFC 5658: one entry facing each side, each naming its side's flow; one entry
            // does when both sides are the same interface and neither is a connection.
            let facing_target = self.tokens.record_route(target.local, target.kind, target.flow);
            let facing_source = self.tokens.record_route(source.local, source.kind, source.flow);
            if facing_target == facing_source { vec![facing_target] } else { vec![facing_target, facing_source] }
        } else {
            Vec::new()
        };
        let mut target = target;
        let mut edit = RequestEdit {
            request_uri: target.uri.clone(),
            via: via(target.kind, target.local),
            max_forwards,
            pop_routes: target.pop_routes,
            record_route: rr,
            push_routes: target.routes.clone(),
            consume_realm: self.config.realm.clone(),
            drop_last_route: target.strict,
            asserted_identity: target.asserted_identity.clone(),
            cseq: target.cseq,
            from_user: target.from_user.clone(),
            to: target.to.clone(),
        };
        let mut bytes = forward::request(request, &edit);
        if target.kind == TransportKind::Udp
            && bytes.len() > LARGE_REQUEST
            && let Some(fallback @ Destination::Connection { kind, .. }) = target.large_fallback
            && let Some(local) = self.local_toward(kind)
        {
            tracing::debug!(len = bytes.len(), to = %fallback, "request too large for UDP; sending over a connection");
            (target.destination, target.kind, target.local) = (fallback, kind, local);
            edit.via = via(kind, local);
            edit.record_route = if record_route {
                let facing_target = self.tokens.record_route(local, kind, None);
                let facing_source = self.tokens.record_route(source.local, source.kind, source.flow);
                vec![facing_target, facing_source]
            } else {
                Vec::new()
            };
            bytes = forward::request(request, &edit);
        }
        let Some(forwarded) = own(bytes) else {
            return false;
        };
        let Some(client) = client_key(&forwarded) else { return false };
        let reliable = target.kind.is_connection();
        let inserted = if is_invite {
            let txn = ClientInvite::new(now, forwarded, reliable, self.config.timers);
            self.table.insert(client.clone(), target.destination, txn)
        } else {
            let txn = ClientNonInvite::new(now, forwarded, reliable, self.config.timers);
            self.table.insert(client.clone(), target.destination, txn)
        };
        if inserted.is_err() {
            return false;
        }
        self.stats.branches += 1;
        self.branches.insert(client.clone(), key.clone());
        self.call_forwarded(key, &target.destination);
        let mut branch = Branch::new(client.clone(), target.destination, is_invite.then(|| now + self.config.timer_c));
        branch.failover_at = target.failover_timeout.map(|t| now + t);
        if (target.from_user.is_some() || target.to.is_some())
            && let Some(ctx) = self.contexts.get_mut(key)
        {
            ctx.identity_changed = true;
        }
        branch.from_user = target.from_user;
        branch.auth = target.credentials.map(|credentials| BranchAuth {
            credentials,
            kind: target.kind,
            local: target.local,
            attempts: 0,
        });
        self.branch_deadlines.update(&mut branch);
        if let Some(ctx) = self.contexts.get_mut(key) {
            ctx.branches.push(branch);
        }
        true
    }

    fn handle_cancel(&mut self, now: Instant, key: TransactionKey, cancel: Message, source: Source) {
        let destination = reply_destination(&source, &cancel);
        let txn = ServerNonInvite::new(now, cancel.clone(), source.kind.is_connection(), self.config.timers);
        if self.table.insert(key.clone(), destination, txn).is_err() {
            return;
        }
        // §16.10: a matching response context gets 200 at once; its pending branches are
        // cancelled unless a final response already went upstream.
        let Some(invite) = key.cancelled_invite().filter(|k| self.contexts.contains_key(k)) else {
            self.reply_bytes(now, &key, &cancel, LocalReply::new(481));
            return;
        };
        self.reply_bytes(now, &key, &cancel, LocalReply::new(200));
        if let Some(ctx) = self.contexts.get_mut(&invite) {
            // No failover after the caller gave up.
            ctx.pending.clear();
        }
        if self.contexts.get(&invite).is_some_and(|c| c.final_sent) {
            return;
        }
        self.stats.cancelled += 1;
        let branches: Vec<TransactionKey> =
            self.contexts.get(&invite).map(|c| c.branches.iter().map(|b| b.key.clone()).collect()).unwrap_or_default();
        for branch in branches {
            self.cancel_branch(now, &invite, &branch);
        }
    }

    /// §9.1 for one branch: CANCEL now if it rang, or as soon as it does.
    fn cancel_branch(&mut self, now: Instant, server: &TransactionKey, branch: &TransactionKey) {
        let answered = self.contexts.get(server).is_some_and(|c| {
            c.branches.iter().any(|b| matches!(b.state, BranchState::Done(code) if (200..300).contains(&code)))
        });
        // RFC 3326: the other tabs and phones learn the call was answered elsewhere.
        let reason = answered.then_some("SIP;cause=200;text=\"Call completed elsewhere\"");
        let Some(b) = self.contexts.get_mut(server).and_then(|c| c.branches.iter_mut().find(|b| &b.key == branch))
        else {
            return;
        };
        match b.state {
            BranchState::Calling => b.cancel_when_ringing = true,
            BranchState::Proceeding => {
                b.state = BranchState::Cancelling;
                b.timer_c = None;
                self.branch_deadlines.update(b);
                let destination = b.destination;
                let Some(invite) = self.table.get(branch).and_then(|t| t.request().cloned()) else { return };
                let bytes = Bytes::from(forward::cancel(&invite, reason));
                let Some(cancel) = own(bytes) else {
                    return;
                };
                let Some(key) = client_key(&cancel) else { return };
                let reliable = !matches!(destination, Destination::Datagram { .. });
                let _ = self.table.insert(
                    key,
                    destination,
                    ClientNonInvite::new(now, cancel, reliable, self.config.timers),
                );
            }
            BranchState::Cancelling | BranchState::Done(_) => {}
        }
    }

    /// Forwards a request without a transaction (a 2xx ACK, §16.6 with no state).
    fn send_stateless(&mut self, request: &Message, target: Target) {
        let via = our_via(target.kind, target.local, loop_hash(&self.loop_key, request), BranchSuffix::Ack);
        let max_forwards = match request.max_forwards() {
            Some(Ok(n)) => n.saturating_sub(1),
            _ => 70,
        };
        let edit = RequestEdit {
            request_uri: target.uri,
            via,
            max_forwards,
            pop_routes: target.pop_routes,
            record_route: Vec::new(),
            push_routes: target.routes,
            consume_realm: self.config.realm.clone(),
            drop_last_route: target.strict,
            asserted_identity: None,
            cseq: target.cseq,
            from_user: target.from_user,
            to: target.to,
        };
        self.transmits.push_back(Transmit {
            destination: target.destination,
            bytes: Bytes::from(forward::request(request, &edit)),
        });
    }

    /// A response of ours on a server transaction.
    fn reply_bytes(&mut self, now: Instant, key: &TransactionKey, request: &Message, reply: LocalReply) {
        let tag = self.local_tag(request);
        let bytes = self.build_reply(request, &reply, &tag, None);
        let _ = self.table.send_response(now, key, Bytes::from(bytes), reply.code);
    }

    fn build_reply(&self, request: &Message, reply: &LocalReply, tag: &str, source: Option<SocketAddr>) -> Vec<u8> {
        // The fields are borrowed, not cloned: a 200 to a REGISTER has four owned values.
        let mut headers = Vec::with_capacity(reply.headers.len() + 1);
        headers.extend(reply.headers.iter().map(|(name, value)| (*name, Cow::Borrowed(value.as_ref()))));
        headers.push(("Server", Cow::Borrowed(self.config.server_name.as_str())));
        let r = Reply { code: reply.code, reason: reply.reason.as_deref(), to_tag: Some(tag), source, headers };
        let bytes = response::build(request, &r);
        match &reply.body {
            Some(body) => Message::parse(Bytes::from(bytes.clone()), &Limits::default())
                .map_or(bytes, |m| forward::with_body(&m, body)),
            None => bytes,
        }
    }

    fn stateless_reply(&mut self, request: &Message, source: &Source, reply: LocalReply) {
        let tag = self.local_tag(request);
        let bytes = self.build_reply(request, &reply, &tag, Some(source.remote));
        self.transmits
            .push_back(Transmit { destination: reply_destination(source, request), bytes: Bytes::from(bytes) });
    }

    /// The To tag of a response we make ourselves: the same for a request and its
    /// retransmissions (their first Via field, Call-ID and CSeq are the same bytes),
    /// different for any other request (each has a branch of its own, and an RFC 2543
    /// peer without one moves its CSeq). The raw lines are hashed as they are: one walk
    /// over the headers, nothing unfolded or split.
    fn local_tag(&self, request: &Message) -> Hex64 {
        let (mut via, mut call_id, mut cseq) = (None, None, None);
        for header in request.headers() {
            let first = match header.name {
                HeaderName::Via => &mut via,
                HeaderName::CallId => &mut call_id,
                HeaderName::CSeq => &mut cseq,
                _ => continue,
            };
            if first.is_none() {
                *first = Some(request.raw_line(header));
            }
        }
        let mut h = self.tag_key.hasher();
        (via, call_id, cseq).hash(&mut h);
        Hex64::new(h.finish())
    }

    /// Acts on what the transactions produced.
    fn drain(&mut self, now: Instant, policy: &mut dyn RoutingPolicy) {
        while let Some(TableOutput { key, destination, output, request }) = self.table.poll_output() {
            if let Some(&id) = self.originated.get(&key) {
                match output {
                    Output::Transmit(bytes) => self.transmits.push_back(Transmit { destination, bytes }),
                    Output::Response(r) if r.status().is_some_and(|s| s >= 200) => {
                        self.outcomes.push_back((id, Some(r)));
                    }
                    Output::Timeout => self.outcomes.push_back((id, None)),
                    Output::Terminated => {
                        self.originated.remove(&key);
                    }
                    Output::Response(_) | Output::Ack(_) => {}
                }
                continue;
            }
            match output {
                Output::Transmit(bytes) => self.transmits.push_back(Transmit { destination, bytes }),
                Output::Response(response) => self.on_branch_response(now, &key, response, policy),
                Output::Timeout if key.is_client() => {
                    let Some(request) = request else { continue };
                    let synthetic = self.build_reply(&request, &LocalReply::new(408), "timeout", None);
                    if let Ok(timeout) = Message::parse(Bytes::from(synthetic), &Limits::default()) {
                        self.on_branch_response(now, &key, timeout, policy);
                    }
                }
                Output::Timeout => {
                    tracing::debug!(%key, "server transaction ended: no ACK in time, or its flow closed")
                }
                Output::Ack(ack) => {
                    if let Ok(target) = self.route_in_dialog(&ack, policy) {
                        self.send_stateless(&ack, target);
                    }
                }
                Output::Terminated => {
                    if key.is_client() {
                        self.branches.remove(&key);
                    } else {
                        self.call_context_ended(&key);
                        self.drop_context(&key);
                    }
                }
            }
        }
    }

    /// §16.7 for one branch's response.
    fn on_branch_response(
        &mut self,
        now: Instant,
        branch: &TransactionKey,
        response: Message,
        policy: &mut dyn RoutingPolicy,
    ) {
        let Some(server) = self.branches.get(branch).cloned() else { return };
        let Some(code) = response.status() else { return };
        let is_cancel = *branch.method() == Method::Cancel;
        if is_cancel {
            return;
        }
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(index) = ctx.branches.iter().position(|b| &b.key == branch) else { return };
        if code == 100 {
            return;
        }
        if code < 200 {
            let b = &mut ctx.branches[index];
            let ring_cancel = b.cancel_when_ringing;
            if matches!(b.state, BranchState::Calling) {
                b.state = BranchState::Proceeding;
            }
            b.failover_at = None;
            // §16.7 step 2: a provisional restarts Timer C.
            if b.timer_c.is_some() {
                b.timer_c = Some(now + self.config.timer_c);
            }
            self.branch_deadlines.update(b);
            if !ctx.final_sent {
                let bytes = upstream(ctx, &response);
                self.send_upstream(now, &server, &response, bytes, policy);
            }
            if ring_cancel {
                self.cancel_branch(now, &server, branch);
            }
            return;
        }
        if matches!(code, 401 | 407)
            && ctx.branches[index].auth.is_some()
            && self.retry_with_credentials(now, &server, branch, &response)
        {
            return;
        }
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        ctx.branches[index].state = BranchState::Done(code);
        ctx.branches[index].timer_c = None;
        ctx.branches[index].failover_at = None;
        self.branch_deadlines.update(&mut ctx.branches[index]);
        if code < 300 {
            // §16.7 step 5: every 2xx goes upstream at once, even after another.
            if ctx.is_invite && !ctx.final_sent {
                self.stats.dialogs_started += 1;
                let callee_destination = ctx.branches[index].destination;
                let offset = ctx.branches[index].cseq_offset;
                let from_user = ctx.branches[index].from_user.clone();
                if let Some((id, caller, callee)) =
                    dialog_parties(&ctx.request, &ctx.source, &response, callee_destination)
                {
                    self.dialogs.confirmed(now, id.clone(), caller, callee);
                    self.dialogs.shift_caller_cseq(&id, offset);
                    self.dialogs.present_caller_as(&id, from_user);
                }
            }
            let Some(ctx) = self.contexts.get_mut(&server) else { return };
            ctx.final_sent = true;
            let is_invite = ctx.is_invite;
            let bytes = upstream(ctx, &response);
            self.send_upstream(now, &server, &response, bytes, policy);
            if is_invite {
                self.cancel_pending(now, &server);
            } else {
                self.retire_answered(&server);
            }
            return;
        }
        ctx.consider(response);
        if code >= 600 && ctx.is_invite {
            ctx.pending.clear();
            self.cancel_pending(now, &server);
        }
        if code == 408 || (500..600).contains(&code) {
            self.fail_over(now, &server);
        } else if let Some(ctx) = self.contexts.get_mut(&server) {
            // A definite answer (busy, not found, ...) ends a failover search.
            ctx.pending.clear();
        }
        self.maybe_send_best(now, &server);
    }

    /// RFC 3261 §22.2 for a branch with credentials: the same request again with an
    /// answer to the challenge, as a new branch with the next CSeq. `false` when the
    /// challenge cannot or must not be answered (another realm, or a second challenge
    /// for the same credentials: they were refused), and the 401/407 stands.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        server: &TransactionKey,
        branch: &TransactionKey,
        response: &Message,
    ) -> bool {
        let Some(ctx) = self.contexts.get(server) else { return false };
        let Some(old) = ctx.branches.iter().find(|b| &b.key == branch) else { return false };
        let Some(auth) = &old.auth else { return false };
        let (challenge_header, answer_header) = match response.status() {
            Some(401) => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            _ => (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization),
        };
        let challenges: Vec<_> = response
            .headers_named(challenge_header)
            .filter_map(|h| crate::message::digest::parse_challenge(&response.value(h)).ok())
            .collect();
        let Some(challenge) = crate::auth::client::pick(&challenges) else { return false };
        if auth.credentials.realm.as_ref().is_some_and(|r| *r != challenge.realm) {
            return false;
        }
        // Only a stale nonce earns a second try; anything else means wrong credentials.
        if auth.attempts >= 2 || (auth.attempts == 1 && !challenge.stale) {
            tracing::warn!(realm = %challenge.realm, user = %auth.credentials.username, "trunk refused our credentials");
            return false;
        }
        let Some(sent) = self.table.get(branch).and_then(|t| t.request().cloned()) else { return false };
        let (Some(uri), Some(method), Some((cseq, _))) = (sent.request_uri(), sent.method(), sent.cseq()) else {
            return false;
        };
        let uri = String::from_utf8_lossy(uri).into_owned();
        self.stats.branches += 1;
        let cnonce = self.tokens.cnonce(self.stats.branches);
        let Ok(value) = crate::auth::client::authorization(
            challenge,
            &auth.credentials.username,
            &auth.credentials.password,
            method.as_str(),
            &uri,
            &cnonce,
            1,
        ) else {
            return false;
        };
        let hash = loop_hash(&self.loop_key, &ctx.request);
        let via = our_via(auth.kind, auth.local, hash, BranchSuffix::Fork(server, self.stats.branches));
        let bytes = forward::reauthorize(&sent, &via, cseq.saturating_add(1), answer_header, &value);
        let Some(again) = own(bytes) else {
            return false;
        };
        let Some(key) = client_key(&again) else { return false };
        let destination = old.destination;
        let is_invite = ctx.is_invite;
        let reliable = !matches!(destination, Destination::Datagram { .. });
        let inserted = if is_invite {
            self.table.insert(key.clone(), destination, ClientInvite::new(now, again, reliable, self.config.timers))
        } else {
            self.table.insert(key.clone(), destination, ClientNonInvite::new(now, again, reliable, self.config.timers))
        };
        if inserted.is_err() {
            return false;
        }
        let Some(ctx) = self.contexts.get_mut(server) else { return false };
        let Some(index) = ctx.branches.iter().position(|b| &b.key == branch) else { return false };
        let mut old = ctx.branches.remove(index);
        self.branch_deadlines.forget(&mut old);
        let mut retry = Branch::new(key.clone(), destination, is_invite.then(|| now + self.config.timer_c));
        retry.cseq_offset = old.cseq_offset + 1;
        retry.cancel_when_ringing = old.cancel_when_ringing;
        retry.from_user = old.from_user;
        retry.auth = old.auth.map(|a| BranchAuth { attempts: a.attempts + 1, ..a });
        self.branch_deadlines.update(&mut retry);
        ctx.branches.push(retry);
        self.branches.insert(key.clone(), server.clone());
        tracing::debug!(realm = %challenge.realm, "answered the trunk's challenge");
        true
    }

    /// What the dialog a request is in changes on its way: the CSeq an in-dialog request
    /// from the caller carries toward a callee we re-sent the INVITE to with credentials
    /// (its count runs ahead of the caller's); and, for a dialog whose caller the callee
    /// knows under another From user, that user again on a request from the caller, the
    /// caller's own identity back in To on one from the callee. The dialog is looked up
    /// once for all of it.
    fn dialog_changes(&self, request: &Message) -> (Option<u32>, Option<String>, Option<String>) {
        let Some((call_id, from, to)) = dialog_tags(request) else { return (None, None, None) };
        let Some((id, side)) = self.dialogs.find(&call_id, &from, &to) else { return (None, None, None) };
        let cseq = match (side, self.dialogs.cseq_offset(&id), request.cseq()) {
            (Side::Caller, Some(offset), Some((cseq, _))) if offset > 0 => Some(cseq.saturating_add(offset)),
            _ => None,
        };
        let (from_user, to) = match (side, self.dialogs.presented_as(&id)) {
            (Side::Caller, Some((user, _))) => (Some(user), None),
            (Side::Callee, Some((_, identity))) => (None, Some(identity)),
            (_, None) => (None, None),
        };
        (cseq, from_user, to)
    }

    /// Starts the next target of a failover search, if one is left and nothing final went
    /// upstream yet.
    fn fail_over(&mut self, now: Instant, server: &TransactionKey) {
        loop {
            let next = match self.contexts.get_mut(server) {
                Some(ctx) if !ctx.final_sent => ctx.pending.pop_front(),
                _ => None,
            };
            let Some(target) = next else { return };
            tracing::debug!(destination = %target.destination, "failing over to the next target");
            if self.start_branch(now, server, target) {
                return;
            }
        }
    }

    /// Branches that did not answer within their failover time, abandoned as if they timed out.
    fn abandon_silent_branches(&mut self, now: Instant, silent: Vec<TransactionKey>, policy: &mut dyn RoutingPolicy) {
        for branch in silent {
            let Some(request) = self.table.remove(&branch).and_then(|t| t.request().cloned()) else { continue };
            tracing::debug!(%branch, "no answer within the failover timeout");
            let synthetic = self.build_reply(&request, &LocalReply::new(408), "timeout", None);
            if let Ok(timeout) = Message::parse(Bytes::from(synthetic), &Limits::default()) {
                self.on_branch_response(now, &branch, timeout, policy);
            }
            self.branches.remove(&branch);
        }
    }

    fn cancel_pending(&mut self, now: Instant, server: &TransactionKey) {
        let pending: Vec<TransactionKey> = self
            .contexts
            .get(server)
            .map(|c| {
                c.branches.iter().filter(|b| !matches!(b.state, BranchState::Done(_))).map(|b| b.key.clone()).collect()
            })
            .unwrap_or_default();
        for branch in pending {
            self.cancel_branch(now, server, &branch);
        }
    }

    /// §16.7 step 6: when every branch is final and nothing final went upstream yet.
    fn maybe_send_best(&mut self, now: Instant, server: &TransactionKey) {
        let Some(ctx) = self.contexts.get_mut(server) else { return };
        if ctx.final_sent
            || !ctx.pending.is_empty()
            || !ctx.branches.iter().all(|b| matches!(b.state, BranchState::Done(_)))
        {
            return;
        }
        ctx.final_sent = true;
        let Some(best) = ctx.best.take() else { return };
        let code = best.status().unwrap_or(500);
        let bytes = if code == 503 {
            // §16.7 step 6: a 503 from downstream means that server, not us; send 500.
            let request = ctx.request.clone();
            Bytes::from(self.build_reply(&request, &LocalReply::new(500), "unavailable", None))
        } else {
            Bytes::from(upstream(ctx, &best))
        };
        let code = if code == 503 { 500 } else { code };
        let _ = self.table.send_response(now, server, bytes, code);
        self.call_context_ended(server);
        self.retire_answered(server);
    }

    /// Drops a non-INVITE context once its final response went upstream. Nothing is left
    /// for it to do: later responses of its branches are not forwarded (§16.7 step 5 sends
    /// on only an INVITE's further 2xx), and its server transaction answers retransmitted
    /// requests by itself until Timer J, 32 s over UDP, which the context, holding the
    /// whole request, would otherwise wait out too.
    fn retire_answered(&mut self, server: &TransactionKey) {
        if self.contexts.get(server).is_some_and(|ctx| !ctx.is_invite && ctx.final_sent) {
            self.drop_context(server);
        }
    }

    /// Removes a context, and with it its branches' deadlines.
    fn drop_context(&mut self, server: &TransactionKey) {
        if let Some(mut ctx) = self.contexts.remove(server) {
            ctx.branches.iter_mut().for_each(|b| self.branch_deadlines.forget(b));
        }
    }
}

/// The two parties of a dialog a 2xx creates: the caller from the request as received,
/// the callee from the response.
fn dialog_parties(
    request: &Message,
    source: &Source,
    response: &Message,
    callee: Destination,
) -> Option<(DialogId, Party, Party)> {
    let from = request.first_value(HeaderName::From)?;
    let to = response.first_value(HeaderName::To)?;
    let tag = |v: &[u8]| NameAddr::parse(v).ok().and_then(|n| n.tag().map(|t| String::from_utf8_lossy(t).into_owned()));
    let contact =
        |m: &Message| m.first_value(HeaderName::Contact).and_then(|c| NameAddr::parse(&c).ok().map(|n| n.uri.to_vec()));
    let id = DialogId {
        call_id: String::from_utf8_lossy(&request.call_id()?).into_owned(),
        caller_tag: tag(&from)?,
        callee_tag: tag(&to)?,
    };
    let caller = Party {
        identity: String::from_utf8_lossy(&from).into_owned(),
        target: String::from_utf8_lossy(&contact(request)?).into_owned(),
        destination: reply_destination(source, request),
        cseq: request.cseq()?.0,
    };
    let callee = Party {
        identity: String::from_utf8_lossy(&to).into_owned(),
        target: String::from_utf8_lossy(&contact(response)?).into_owned(),
        destination: callee,
        cseq: 0,
    };
    Some((id, caller, callee))
}

/// Every branch we create starts with this, so our own Vias are recognisable.
const OUR_BRANCH: &str = "z9hG4bKwt";

/// Locally answered re-INVITEs remembered for their ACK (a handful are ever in flight).
const ANSWERED_LOCALLY: usize = 256;

/// A response going upstream (§16.7 step 3), its CSeq number put back to the caller's when
/// the branch counted differently (a re-sent INVITE, a shifted in-dialog request).
fn upstream(ctx: &Context, response: &Message) -> Vec<u8> {
    let caller = ctx.request.cseq().map(|(n, _)| n);
    let shifted = caller.filter(|n| response.cseq().is_some_and(|(r, _)| r != *n));
    if !ctx.identity_changed {
        return forward::response_upstream(response, shifted);
    }
    match (ctx.request.first_value(HeaderName::From), ctx.request.first_value(HeaderName::To)) {
        (Some(from), Some(to)) => forward::response_restored(response, shifted, Some((&from, &to))),
        _ => forward::response_upstream(response, shifted),
    }
}

/// `message` with `body` in place of its own (Content-Length follows).
fn with_body(message: &Message, body: &[u8]) -> Option<Message> {
    own(forward::with_body(message, body))
}

/// A message we built ourselves, read back: its size was decided upstream, so no limits.
fn own(bytes: impl Into<Bytes>) -> Option<Message> {
    Message::parse(bytes.into(), &Limits { max_message_size: usize::MAX, max_headers: usize::MAX }).ok()
}

/// Call-ID, From tag and To tag of a request.
fn dialog_tags(request: &Message) -> Option<(String, String, String)> {
    let tag = |name| {
        request.first_value(name).and_then(|v| {
            NameAddr::parse(&v).ok().and_then(|n| n.tag().map(|t| String::from_utf8_lossy(t).into_owned()))
        })
    };
    let call_id = String::from_utf8_lossy(&request.call_id()?).into_owned();
    Some((call_id, tag(HeaderName::From)?, tag(HeaderName::To)?))
}

/// Keys a hash of message fields: the To tags of our own responses, and the loop hash in
/// our branches. Peers must not be able to predict a tag (to make one collide with
/// another call's), so the hash is keyed per process; it need not be cryptographic, and
/// foldhash is a fraction of the cost of SipHash on these lines.
#[derive(Debug, Clone)]
struct HashKey {
    seed: u64,
    shared: foldhash::SharedSeed,
}

impl HashKey {
    /// From a hash of the proxy's secret and what the key is for, not the secret itself:
    /// someone who collects many tags may learn something of foldhash's seed, and the
    /// secret also signs the flow tokens.
    fn new(secret: &[u8; 32], purpose: &[u8]) -> Self {
        let derived = Sha256::new().chain_update(purpose).chain_update(secret).finalize();
        let mut seed = [0; 8];
        let mut shared = [0; 8];
        seed.copy_from_slice(&derived[..8]);
        shared.copy_from_slice(&derived[8..16]);
        Self { seed: u64::from_le_bytes(seed), shared: foldhash::SharedSeed::from_u64(u64::from_le_bytes(shared)) }
    }

    fn hasher(&self) -> foldhash::quality::FoldHasher<'_> {
        foldhash::quality::FoldHasher::with_seed(self.seed, &self.shared)
    }
}

/// A 64-bit number in 16 lower-case hex digits, kept on the stack: our To tags, and the
/// hashes in our branches and flow tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hex64([u8; 16]);

impl Hex64 {
    pub(super) fn new(value: u64) -> Self {
        let mut digits = [b'0'; 16];
        // Eight bytes fill sixteen digits exactly: the length check cannot fail.
        let _ = hex::encode_to_slice(value.to_be_bytes(), &mut digits);
        Self(digits)
    }
}

impl std::ops::Deref for Hex64 {
    type Target = str;

    fn deref(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A hash of what makes a request the same request for loop detection (§16.6 step 8):
/// Request-URI, From tag, Call-ID, CSeq number, Proxy-Require and Route.
fn loop_hash(key: &HashKey, request: &Message) -> u64 {
    let mut h = key.hasher();
    request.request_uri().hash(&mut h);
    if let Some(from) = request.first_value(HeaderName::From) {
        NameAddr::parse(&from).ok().as_ref().and_then(NameAddr::tag).hash(&mut h);
    }
    request.call_id().as_deref().hash(&mut h);
    request.cseq().map(|(n, _)| n).hash(&mut h);
    for name in [HeaderName::ProxyRequire, HeaderName::Route] {
        for v in request.list(name) {
            v.as_ref().hash(&mut h);
        }
    }
    h.finish()
}

fn loop_hash_str(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// What follows the loop hash in one of our branches.
#[derive(Debug, Clone, Copy)]
enum BranchSuffix<'a> {
    /// A branch of a forwarded request: it must differ between the branches of one
    /// request and across requests, so it names the server transaction (by its keyed
    /// hash) and the count of branches so far.
    Fork(&'a TransactionKey, u64),
    /// A 2xx ACK, forwarded without a transaction.
    Ack,
}

/// `OUR_BRANCH` and the loop hash in 16 hex digits, then a dot: every branch of ours
/// starts so, and [`Proxy::is_loop`] looks for it.
fn branch_mark(loop_hash: u64) -> [u8; OUR_BRANCH.len() + 17] {
    let mut mark = [b'.'; OUR_BRANCH.len() + 17];
    mark[..OUR_BRANCH.len()].copy_from_slice(OUR_BRANCH.as_bytes());
    mark[OUR_BRANCH.len()..OUR_BRANCH.len() + 16].copy_from_slice(Hex64::new(loop_hash).as_bytes());
    mark
}

/// The Via a request of ours goes out with: `SIP/2.0/KIND host:port;branch=...`, and
/// `;rport` over UDP (RFC 3581). Written into one buffer: with `format!` this cost a
/// forwarded request several allocations and a pass of the formatting machinery each.
fn our_via(kind: TransportKind, local: SocketAddr, loop_hash: u64, suffix: BranchSuffix<'_>) -> String {
    let mut via = String::with_capacity(96);
    via.push_str("SIP/2.0/");
    via.push_str(kind.via_token());
    via.push(' ');
    via.push_str(&host_port(local));
    via.push_str(";branch=");
    // The mark is ASCII: OUR_BRANCH, hex digits and a dot.
    via.push_str(std::str::from_utf8(&branch_mark(loop_hash)).unwrap_or_default());
    match suffix {
        BranchSuffix::Fork(server, index) => {
            via.push_str(&Hex64::new(server.fingerprint()));
            via.push_str(itoa::Buffer::new().format(index));
        }
        BranchSuffix::Ack => via.push_str("ack"),
    }
    if kind == TransportKind::Udp && !matches!(suffix, BranchSuffix::Ack) {
        via.push_str(";rport");
    }
    via
}

/// Where a response to `request` goes: back over its flow, or per its top Via for UDP.
fn reply_destination(source: &Source, request: &Message) -> Destination {
    if let Some(flow) = source.flow {
        return Destination::Flow(flow);
    }
    let remote = match request.top_via() {
        Some(Ok(via)) => via.response_address(source.remote),
        _ => source.remote,
    };
    Destination::Datagram { local: source.local, remote }
}

/// The proxy's branch deadlines, earliest first, each entry owned by one [`Branch`] that
/// records it in `scheduled`; a sequence number tells apart branches due at one instant.
#[derive(Debug, Default)]
struct BranchDeadlines {
    queue: std::collections::BTreeMap<(Instant, u64), TransactionKey>,
    seq: u64,
}

impl BranchDeadlines {
    fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The next branch whose deadline is at or before `now`, out of the queue.
    fn pop_due(&mut self, now: Instant) -> Option<TransactionKey> {
        let entry = self.queue.first_entry().filter(|e| e.key().0 <= now)?;
        Some(entry.remove())
    }

    /// After `branch`'s Timer C or failover time changed: its entry follows.
    fn update(&mut self, branch: &mut Branch) {
        let next = branch.next_deadline();
        if next == branch.scheduled.map(|(at, _)| at) {
            return;
        }
        self.forget(branch);
        if let Some(at) = next {
            self.seq += 1;
            self.queue.insert((at, self.seq), branch.key.clone());
            branch.scheduled = Some((at, self.seq));
        }
    }

    /// `branch` is going away: so does its entry.
    fn forget(&mut self, branch: &mut Branch) {
        if let Some(slot) = branch.scheduled.take() {
            self.queue.remove(&slot);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::response::{Reply, build};

    const T0_LOCAL: &str = "127.0.0.1:5060";

    /// A policy that sends every initial request to fixed targets, one after another.
    struct Trunks(Vec<SocketAddr>);

    impl RoutingPolicy for Trunks {
        fn route(&mut self, _now: Instant, _request: &Message, _source: &Source) -> Decision {
            let local: SocketAddr = T0_LOCAL.parse().unwrap();
            Decision::Failover(
                self.0
                    .iter()
                    .map(|&remote| Target {
                        uri: Some(format!("sip:+15550100@{remote}")),
                        failover_timeout: Some(Duration::from_secs(2)),
                        ..Target::new(Destination::Datagram { local, remote }, TransportKind::Udp, local)
                    })
                    .collect(),
            )
        }

        fn resolve_flow(&self, _flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)> {
            None
        }

        fn token(&mut self, len: usize) -> String {
            "x".repeat(len)
        }
    }

    /// The same targets as [`Trunks`], all at once: one user's several devices.
    struct Devices(Trunks);

    impl RoutingPolicy for Devices {
        fn route(&mut self, now: Instant, request: &Message, source: &Source) -> Decision {
            match self.0.route(now, request, source) {
                Decision::Failover(targets) => Decision::Forward(targets),
                other => other,
            }
        }

        fn resolve_flow(&self, flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)> {
            self.0.resolve_flow(flow)
        }

        fn token(&mut self, len: usize) -> String {
            self.0.token(len)
        }
    }

    fn caller() -> Source {
        Source {
            kind: TransportKind::Udp,
            local: T0_LOCAL.parse().unwrap(),
            remote: "192.0.2.100:5060".parse().unwrap(),
            flow: None,
        }
    }

    fn invite() -> Message {
        let text = "INVITE sip:+15550100@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch=z9hG4bKcaller\r\n\
                    Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a\r\nTo: <sip:+15550100@localhost>\r\n\
                    Call-ID: failover-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.100>\r\nContent-Length: 0\r\n\r\n";
        Message::parse(Bytes::from(text), &Limits::default()).unwrap()
    }

    fn setup() -> (Proxy, Trunks, Instant) {
        let config =
            ProxyConfig { listen: vec![(TransportKind::Udp, T0_LOCAL.parse().unwrap())], ..ProxyConfig::default() };
        let trunks = Trunks(vec!["192.0.2.1:5060".parse().unwrap(), "192.0.2.2:5060".parse().unwrap()]);
        (Proxy::new(config, [1; 32]), trunks, crate::clock::now())
    }

    /// Everything sent, as (remote address, first line, message).
    fn sent(proxy: &mut Proxy) -> Vec<(SocketAddr, String, Message)> {
        let mut out = Vec::new();
        while let Some(t) = proxy.poll_transmit() {
            let Destination::Datagram { remote, .. } = t.destination else { panic!("UDP only here") };
            let m = Message::parse(t.bytes.clone(), &Limits::default()).unwrap();
            let line = String::from_utf8_lossy(t.bytes.split(|&c| c == b'\r').next().unwrap()).into_owned();
            out.push((remote, line, m));
        }
        out
    }

    fn answer(request: &Message, code: u16) -> Message {
        let bytes = build(request, &Reply { code, to_tag: Some("trunk"), ..Reply::default() });
        Message::parse(Bytes::from(bytes), &Limits::default()).unwrap()
    }

    #[test]
    fn failover_tries_the_next_trunk_after_a_503() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        let out = sent(&mut proxy);
        assert_eq!(
            out.iter().map(|(a, l, _)| (a.to_string(), l.clone())).collect::<Vec<_>>(),
            vec![
                ("192.0.2.100:5060".into(), "SIP/2.0 100 Trying".into()),
                ("192.0.2.1:5060".into(), "INVITE sip:+15550100@192.0.2.1:5060 SIP/2.0".into()),
            ]
        );
        let to_primary = out[1].2.clone();
        proxy.handle_response(t0, answer(&to_primary, 503), &mut trunks);
        let out = sent(&mut proxy);
        let lines: Vec<_> = out.iter().map(|(a, l, _)| format!("{a} {l}")).collect();
        assert_eq!(
            lines,
            vec![
                "192.0.2.1:5060 ACK sip:+15550100@192.0.2.1:5060 SIP/2.0".to_string(),
                "192.0.2.2:5060 INVITE sip:+15550100@192.0.2.2:5060 SIP/2.0".to_string(),
            ]
        );
        proxy.handle_response(t0, answer(&out[1].2, 200), &mut trunks);
        let out = sent(&mut proxy);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.to_string(), out[0].2.status()), ("192.0.2.100:5060".into(), Some(200)));
        assert_eq!(proxy.branch_deadlines.len(), 0, "no branch deadline outlives its answer");
    }

    #[test]
    fn a_non_invite_context_ends_with_its_final_response_and_its_transaction_answers_repeats() {
        let (mut proxy, trunks, t0) = setup();
        let mut devices = Devices(trunks);
        let text = "MESSAGE sip:+15550100@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch=z9hG4bKm1\r\n\
                    Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a\r\nTo: <sip:+15550100@localhost>\r\n\
                    Call-ID: message-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
        let message = Message::parse(Bytes::from(text), &Limits::default()).unwrap();
        proxy.handle_request(t0, message.clone(), caller(), &mut devices);
        let out = sent(&mut proxy);
        let lines: Vec<_> = out.iter().map(|(a, l, _)| format!("{a} {l}")).collect();
        assert_eq!(
            lines,
            [
                "192.0.2.1:5060 MESSAGE sip:+15550100@192.0.2.1:5060 SIP/2.0",
                "192.0.2.2:5060 MESSAGE sip:+15550100@192.0.2.2:5060 SIP/2.0"
            ]
        );
        let (first, second) = (out[0].2.clone(), out[1].2.clone());
        proxy.handle_response(t0, answer(&first, 202), &mut devices);
        let answered = sent(&mut proxy);
        assert_eq!(answered.len(), 1);
        assert_eq!((answered[0].0, answered[0].2.status()), (caller().remote, Some(202)));
        // The context held the whole MESSAGE; a UDP server transaction lives 32 s more.
        assert_eq!(proxy.contexts.len(), 0, "the context went with the final response");
        assert_eq!(proxy.branch_deadlines.len(), 0, "and so did its branches' deadlines");
        // The other device answers late: nothing more goes upstream.
        let t1 = t0 + Duration::from_millis(300);
        proxy.handle_response(t1, answer(&second, 200), &mut devices);
        assert!(sent(&mut proxy).is_empty());
        // The caller did not hear the 202 and sends the MESSAGE again: it hears it again.
        proxy.handle_request(t1, message, caller(), &mut devices);
        let again = sent(&mut proxy);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].2.as_bytes(), answered[0].2.as_bytes());
    }

    #[test]
    fn a_request_back_unchanged_is_a_loop_and_one_back_with_a_new_target_a_spiral() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        let forwarded = sent(&mut proxy).remove(1).2;
        let from_trunk = Source { remote: "192.0.2.1:5060".parse().unwrap(), ..caller() };
        let text = String::from_utf8_lossy(forwarded.as_bytes()).into_owned();
        let first_line = "INVITE sip:+15550100@192.0.2.1:5060 SIP/2.0";
        assert!(text.starts_with(first_line));
        let back = text.replacen(first_line, "INVITE sip:+15550100@localhost SIP/2.0", 1);
        let back = Message::parse(Bytes::from(back), &Limits::default()).unwrap();
        // Each arrives at a proxy of its own: both carry the branch of our Via, so one
        // proxy would take the second for a retransmission of the first.
        let answers = |request: Message| {
            let (mut proxy, mut trunks, t0) = setup();
            proxy.handle_request(t0, request, from_trunk, &mut trunks);
            sent(&mut proxy).iter().filter_map(|(_, _, m)| m.status()).collect::<Vec<_>>()
        };
        assert_eq!(answers(back), [482]);
        // With the Request-URI the proxy gave it, it is a spiral (§16.3 step 4).
        let spiral = answers(forwarded);
        assert!(!spiral.contains(&482), "{spiral:?}");
    }

    #[test]
    fn local_tags_repeat_for_a_retransmission_and_differ_for_the_next_request() {
        let register = |branch: &str, cseq: u32| {
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch={branch}\r\n\
                 From: <sip:alice@localhost>;tag=a\r\nTo: <sip:alice@localhost>\r\nCall-ID: reg-1\r\n\
                 CSeq: {cseq} REGISTER\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(Bytes::from(text), &Limits::default()).unwrap()
        };
        let (proxy, _, _) = setup();
        let first = proxy.local_tag(&register("z9hG4bK1", 1));
        assert_eq!(first.len(), 16);
        assert!(first.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{}", &*first);
        assert_eq!(proxy.local_tag(&register("z9hG4bK1", 1)), first);
        assert_ne!(proxy.local_tag(&register("z9hG4bK2", 2)), first);
        // An RFC 2543 peer that keeps its Via still moves its CSeq.
        assert_ne!(proxy.local_tag(&register("z9hG4bK1", 2)), first);
        // Keyed by the proxy's secret: another process tags the same request otherwise.
        let other = Proxy::new(ProxyConfig::default(), [2; 32]);
        assert_ne!(other.local_tag(&register("z9hG4bK1", 1)), first);
    }

    #[test]
    fn local_tags_are_the_hash_in_sixteen_hex_digits() {
        for hash in [0, 1, 0xf, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63] {
            assert_eq!(&*Hex64::new(hash), format!("{hash:016x}"));
        }
    }

    #[test]
    fn our_vias_carry_the_loop_mark_then_what_tells_branches_apart() {
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let hash = 0x0123_4567_89ab_cdef;
        let mark = format!("{OUR_BRANCH}0123456789abcdef.");
        assert_eq!(branch_mark(hash).as_slice(), mark.as_bytes());
        let ack = our_via(TransportKind::Udp, local, hash, BranchSuffix::Ack);
        assert_eq!(ack, format!("SIP/2.0/UDP 127.0.0.1:5060;branch={mark}ack"));
        let request = Message::parse(
            Bytes::from("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            &Limits::default(),
        )
        .unwrap();
        let server = crate::transaction::server_key(&request).unwrap();
        let fork = |kind, index| our_via(kind, local, hash, BranchSuffix::Fork(&server, index));
        let udp = fork(TransportKind::Udp, 7);
        let fingerprint = format!("{:016x}", server.fingerprint());
        assert_eq!(udp, format!("SIP/2.0/UDP 127.0.0.1:5060;branch={mark}{fingerprint}7;rport"));
        assert_eq!(fork(TransportKind::Tcp, 7), format!("SIP/2.0/TCP 127.0.0.1:5060;branch={mark}{fingerprint}7"));
        assert_ne!(fork(TransportKind::Udp, 8), udp, "the next branch of the same request");
    }

    #[test]
    fn a_branch_keeps_one_deadline_which_leaves_with_the_answer() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        let to_trunk = sent(&mut proxy).remove(1).2;
        // Timer C and the failover time: one entry, at the earlier (failover, 2 s).
        assert_eq!(proxy.branch_deadlines.len(), 1);
        assert_eq!(proxy.branch_deadlines.next(), Some(t0 + Duration::from_secs(2)));
        // Ringing clears failover and restarts Timer C: still one entry, now Timer C's.
        let ringing_at = t0 + Duration::from_secs(1);
        proxy.handle_response(ringing_at, answer(&to_trunk, 180), &mut trunks);
        assert_eq!(proxy.branch_deadlines.len(), 1);
        assert_eq!(proxy.branch_deadlines.next(), Some(ringing_at + ProxyConfig::default().timer_c));
        proxy.handle_response(ringing_at, answer(&to_trunk, 200), &mut trunks);
        assert_eq!(proxy.branch_deadlines.len(), 0);
        // Nothing of the branch's wakes the proxy three minutes later.
        assert!(proxy.poll_timeout().is_none_or(|at| at < ringing_at + Duration::from_secs(60)));
    }

    #[test]
    fn a_silent_trunk_is_abandoned_at_the_failover_timeout_not_timer_b() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        sent(&mut proxy);
        // Retransmissions to the silent primary come first; at 2 s the backup is tried.
        let mut now = t0;
        let mut tried_backup = false;
        while let Some(at) = proxy.poll_timeout().filter(|at| *at <= t0 + Duration::from_secs(3)) {
            now = at;
            proxy.handle_timeout(now, &mut trunks);
            tried_backup |=
                sent(&mut proxy).iter().any(|(a, l, _)| a.to_string() == "192.0.2.2:5060" && l.starts_with("INVITE"));
            if tried_backup {
                break;
            }
        }
        assert!(tried_backup);
        assert_eq!(now, t0 + Duration::from_secs(2));
    }

    #[test]
    fn a_definite_answer_ends_the_search() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        let out = sent(&mut proxy);
        proxy.handle_response(t0, answer(&out[1].2, 486), &mut trunks);
        let out = sent(&mut proxy);
        let statuses: Vec<_> = out.iter().map(|(a, l, _)| format!("{a} {l}")).collect();
        assert_eq!(
            statuses,
            vec![
                "192.0.2.1:5060 ACK sip:+15550100@192.0.2.1:5060 SIP/2.0".to_string(),
                "192.0.2.100:5060 SIP/2.0 486 Busy Here".to_string(),
            ]
        );
    }

    #[test]
    fn when_every_trunk_fails_the_caller_gets_the_best_answer() {
        let (mut proxy, mut trunks, t0) = setup();
        proxy.handle_request(t0, invite(), caller(), &mut trunks);
        let out = sent(&mut proxy);
        proxy.handle_response(t0, answer(&out[1].2, 503), &mut trunks);
        let out = sent(&mut proxy);
        proxy.handle_response(t0, answer(&out[1].2, 408), &mut trunks);
        let out = sent(&mut proxy);
        let last = out.last().unwrap();
        // §16.7 step 6: the lowest class wins, so the backup's 408 beats the primary's 503.
        assert_eq!(last.0.to_string(), "192.0.2.100:5060");
        assert_eq!(last.2.status(), Some(408), "{}", last.1);
    }

    #[test]
    fn a_branch_that_times_out_on_timer_b_fails_over_and_the_caller_hears_408() {
        let (mut proxy, _, t0) = setup();
        // Without a failover timeout only Timer B (64·T1 = 32 s) ends a silent branch.
        let mut trunk = Trunks(vec!["192.0.2.1:5060".parse().unwrap()]);
        struct NoFailoverTimeout<'a>(&'a mut Trunks);
        impl RoutingPolicy for NoFailoverTimeout<'_> {
            fn route(&mut self, now: Instant, request: &Message, source: &Source) -> Decision {
                match self.0.route(now, request, source) {
                    Decision::Failover(t) => {
                        Decision::Failover(t.into_iter().map(|t| Target { failover_timeout: None, ..t }).collect())
                    }
                    d => d,
                }
            }
            fn resolve_flow(&self, flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)> {
                self.0.resolve_flow(flow)
            }
            fn token(&mut self, len: usize) -> String {
                self.0.token(len)
            }
        }
        let mut policy = NoFailoverTimeout(&mut trunk);
        proxy.handle_request(t0, invite(), caller(), &mut policy);
        sent(&mut proxy);
        let mut answer = None;
        while let Some(at) = proxy.poll_timeout().filter(|at| *at <= t0 + Duration::from_secs(40)) {
            proxy.handle_timeout(at, &mut policy);
            if let Some((_, _, m)) = sent(&mut proxy)
                .into_iter()
                .find(|(a, _, m)| a.to_string() == "192.0.2.100:5060" && m.status().is_some_and(|s| s >= 200))
            {
                answer = Some((at, m));
                break;
            }
        }
        let (at, m) = answer.expect("a final answer reaches the caller");
        assert_eq!(m.status(), Some(408));
        assert_eq!(at, t0 + Duration::from_secs(32), "Timer B");
    }

    #[test]
    fn a_407_from_a_trunk_is_answered_once_with_proxy_authorization_and_a_second_goes_upstream() {
        let (mut proxy, _, t0) = setup();
        struct WithCredentials(Trunks);
        impl RoutingPolicy for WithCredentials {
            fn route(&mut self, now: Instant, request: &Message, source: &Source) -> Decision {
                match self.0.route(now, request, source) {
                    Decision::Failover(t) => Decision::Failover(
                        t.into_iter()
                            .take(1)
                            .map(|t| Target {
                                credentials: Some(UacCredentials {
                                    username: "acct".into(),
                                    password: "pw".into(),
                                    realm: None,
                                }),
                                ..t
                            })
                            .collect(),
                    ),
                    d => d,
                }
            }
            fn resolve_flow(&self, flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)> {
                self.0.resolve_flow(flow)
            }
            fn token(&mut self, len: usize) -> String {
                self.0.token(len)
            }
        }
        let mut policy = WithCredentials(Trunks(vec!["192.0.2.1:5060".parse().unwrap()]));
        proxy.handle_request(t0, invite(), caller(), &mut policy);
        let first = sent(&mut proxy).pop().unwrap().2;
        let challenge = |request: &Message| {
            let bytes = build(
                request,
                &Reply {
                    code: 407,
                    to_tag: Some("trunk"),
                    headers: vec![("Proxy-Authenticate", "Digest realm=\"c\", nonce=\"n1\", qop=\"auth\"".into())],
                    ..Reply::default()
                },
            );
            Message::parse(Bytes::from(bytes), &Limits::default()).unwrap()
        };
        proxy.handle_response(t0, challenge(&first), &mut policy);
        let out = sent(&mut proxy);
        let lines: Vec<_> = out.iter().map(|(_, l, _)| l.as_str()).collect();
        assert_eq!(lines, ["ACK sip:+15550100@192.0.2.1:5060 SIP/2.0", "INVITE sip:+15550100@192.0.2.1:5060 SIP/2.0"]);
        let again = &out[1].2;
        assert_eq!(again.cseq().unwrap().0, 2, "the re-sent INVITE has the next CSeq");
        assert_ne!(again.top_via_raw(), first.top_via_raw(), "and a new branch");
        let credentials = again.first_value(HeaderName::ProxyAuthorization).expect("Proxy-Authorization");
        let credentials = crate::message::digest::parse_credentials(&credentials).unwrap();
        assert_eq!((credentials.username.as_str(), credentials.realm.as_str()), ("acct", "c"));

        // Refused again without stale=true: the credentials are wrong; no loop, the caller
        // hears the 407 with its own CSeq.
        proxy.handle_response(t0, challenge(again), &mut policy);
        let out = sent(&mut proxy);
        let upstream = out.iter().find(|(a, _, _)| a.to_string() == "192.0.2.100:5060").unwrap();
        assert_eq!(upstream.2.status(), Some(407));
        assert_eq!(upstream.2.cseq().unwrap().0, 1);
        assert!(!out.iter().any(|(_, l, _)| l.starts_with("INVITE")));
    }
}

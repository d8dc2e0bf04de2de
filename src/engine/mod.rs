//! L5: the sans-IO engine. Messages and flow events come in through
//! [`Engine::handle_input`], bytes to send come out of [`Engine::poll_transmit`], and
//! [`Engine::poll_timeout`] says when [`Engine::handle_timeout`] is due. It never touches
//! a socket or reads the clock; the driver does both.
//!
//! What it answers today: OPTIONS addressed to the server (the keep-alive pings of
//! browsers and trunks) with 200; REGISTER through digest auth and the registrar;
//! requests it cannot parse or that break RFC 3261 with 400 and the reason; what later
//! layers will handle with 501. ACK is never answered. Responses to UDP requests are
//! kept for Timer J (64·T1) so a retransmitted request gets the same answer again
//! instead of being processed twice (RFC 3261 §17.2.2).

mod calls;
mod media;
mod register;
mod resolve;
mod targets;
mod trunks;

pub use resolve::{ResolveRequest, ResolvedAddress, ResolvedTargets};

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{AuthConfig, Authenticator, Users};
use crate::clock::Entropy;
use crate::message::response::{self, Reply};
use crate::message::{self, HeaderName, Host, Message, Method, ParseError, Uri, Via};
use crate::proxy::{Decision, LocalReply, Proxy, ProxyConfig, ProxyStats, RoutingPolicy};
use crate::registrar::{MemoryStore, RegisterError, Registrar, RegistrarConfig, Snapshot};
use crate::transaction::TimerConfig;
use crate::transport::{Destination, FlowId, Source, Transmit, TransportKind};

/// Headers whose grammar allows one value, so a second field is an error.
const SINGLE_VALUED: [(HeaderName, &str); 6] = [
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::From, "From"),
    (HeaderName::To, "To"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::MaxForwards, "Max-Forwards"),
    (HeaderName::ContentType, "Content-Type"),
];

/// Methods the 200 to OPTIONS advertises; grows as the proxy lands.
pub const ALLOW: &str = "OPTIONS, REGISTER";

/// Option tags we implement (RFC 5626 outbound, RFC 3327 path).
pub const SUPPORTED: &str = "outbound, path";

/// Housekeeping (auth state, expired bindings) runs at least this often.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Bindings are written at most this often, so a registration storm is one write.
const PERSIST_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The domains we serve; a Request-URI with one of these hosts is addressed to us.
    pub domains: Vec<String>,
    pub limits: message::Limits,
    /// Our product token for Server headers.
    pub server_name: String,
    pub registrar: RegistrarConfig,
    pub auth: AuthConfig,
    /// RFC 3261 T1, T2, T4.
    pub timers: TimerConfig,
    /// Our bound listeners (port 0 resolved): Via, Record-Route and own-route checks.
    pub listen: Vec<(TransportKind, SocketAddr)>,
    pub proxy: ProxySettings,
    /// Trunks, outbound rules, DIDs and dialling policies.
    pub routing: crate::routing::RoutingTable,
    /// OPTIONS pings to trunk targets: every `health_interval`, down after
    /// `health_misses` unanswered in a row. A zero interval turns them off.
    pub health_interval: Duration,
    pub health_misses: u32,
    /// rtpengine, when browsers are bridged to plain-RTP trunks.
    pub media: Option<crate::media::MediaConfig>,
    /// Calls between browsers go through rtpengine too.
    pub bridge_browser_calls: bool,
    /// Bindings are written to a file: snapshots are worth taking.
    pub persist_bindings: bool,
}

/// The proxy's knobs that come from the configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub timer_c: Duration,
    pub max_call_duration: Duration,
    pub bye_on_flow_loss: bool,
    pub max_transactions: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        let d = ProxyConfig::default();
        Self {
            timer_c: d.timer_c,
            max_call_duration: d.max_dialog_duration,
            bye_on_flow_loss: d.bye_on_flow_loss,
            max_transactions: d.max_transactions,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".into()],
            limits: message::Limits::default(),
            server_name: format!("webtrunk/{}", env!("CARGO_PKG_VERSION")),
            registrar: RegistrarConfig::default(),
            auth: AuthConfig::default(),
            timers: TimerConfig::default(),
            listen: Vec::new(),
            proxy: ProxySettings::default(),
            routing: crate::routing::RoutingTable::default(),
            health_interval: Duration::from_secs(30),
            health_misses: 3,
            media: None,
            bridge_browser_calls: false,
            persist_bindings: true,
        }
    }
}

/// What the engine is told.
#[derive(Debug)]
pub enum Input {
    Received {
        source: Source,
        bytes: Bytes,
    },
    FlowOpened {
        flow: FlowId,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
    },
    FlowClosed {
        flow: FlowId,
    },
    /// A datagram from rtpengine's ng control port.
    MediaReceived {
        from: SocketAddr,
        bytes: Bytes,
    },
    /// Nothing can be sent there (a trunk connection could not be opened): transactions
    /// waiting on it fail now (RFC 3261 §8.1.3.1), and calls fail over.
    Unreachable {
        destination: Destination,
    },
    /// The driver's answer to a [`ResolveRequest`] from [`Engine::poll_resolve`]: the
    /// addresses in RFC 3263 order with their TTL, or why there are none.
    Resolved {
        request: ResolveRequest,
        result: Result<ResolvedTargets, String>,
    },
}

/// Why a request is refused before any routing, one variant per rule; [`Self::status`]
/// is the single place these become SIP statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Parse(ParseError),
    #[error("SIP Version Not Supported")]
    Version,
    #[error("Missing {0} Header")]
    Missing(&'static str),
    #[error("Malformed {0} Header")]
    Malformed(&'static str),
    #[error("Multiple {0} Headers")]
    Repeated(&'static str),
    #[error("CSeq Method Does Not Match Request")]
    CSeqMethod,
    #[error("Malformed Request-URI")]
    RequestUri,
    #[error("Unsupported URI Scheme")]
    UriScheme,
    #[error("Bad Extension")]
    Extension(Vec<String>),
    #[error("Too Many Hops")]
    TooManyHops,
    #[error("Not Implemented")]
    NotImplemented,
    /// No or wrong credentials: 401 with these WWW-Authenticate values.
    #[error("Unauthorized")]
    Challenge(Vec<String>),
    #[error("Too Many Failed Authentications")]
    Throttled { retry_after: Duration },
    #[error("{0}")]
    Credentials(&'static str),
    #[error("{0}")]
    Register(RegisterError),
    /// An initial request without valid Proxy-Authorization: 407 with these challenges.
    #[error("Proxy Authentication Required")]
    ProxyChallenge(Vec<String>),
    #[error("Not Found")]
    NotFound,
    #[error("Temporarily Unavailable")]
    Unavailable,
    #[error("Relaying Not Allowed")]
    Relaying,
    #[error("From Does Not Match The Authenticated User")]
    Impersonation,
    #[error("{0}")]
    Route(crate::routing::RouteError),
    #[error("No Trunk Available")]
    NoTrunk,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Parse(e) => e.status(),
            Self::Version => 505,
            Self::Missing(_) | Self::Malformed(_) | Self::Repeated(_) | Self::CSeqMethod | Self::RequestUri => 400,
            Self::UriScheme => 416,
            Self::Extension(_) => 420,
            Self::TooManyHops => 483,
            Self::NotImplemented => 501,
            Self::Challenge(_) => 401,
            Self::Throttled { .. } => 503,
            Self::Credentials(_) => 400,
            Self::Register(e) => e.status(),
            Self::ProxyChallenge(_) => 407,
            Self::NotFound => 404,
            Self::Unavailable => 480,
            Self::Relaying | Self::Impersonation => 403,
            Self::Route(e) => e.status(),
            Self::NoTrunk => 503,
        }
    }

    /// The local reply that answers this error.
    pub fn into_reply(self) -> LocalReply {
        LocalReply { code: self.status(), reason: self.reason(), headers: self.headers(), body: None }
    }

    /// The reason phrase: ours when it tells the client more than the standard one.
    fn reason(&self) -> Option<String> {
        match self {
            Self::Register(e) if matches!(e.status(), 400 | 403) => Some(e.to_string()),
            Self::Relaying | Self::Impersonation | Self::Route(_) | Self::NoTrunk => Some(self.to_string()),
            Self::Throttled { .. } => Some(self.to_string()),
            _ if self.status() == 400 => Some(self.to_string()),
            _ => None,
        }
    }

    /// Header fields the status needs (RFC 3261 §20: Unsupported with 420, Min-Expires
    /// with 423, WWW-Authenticate with 401, Retry-After with 503).
    fn headers(&self) -> Vec<(&'static str, Cow<'static, str>)> {
        match self {
            Self::Extension(tags) => vec![("Unsupported", tags.join(", ").into())],
            Self::Challenge(values) => values.iter().map(|v| ("WWW-Authenticate", v.clone().into())).collect(),
            Self::ProxyChallenge(values) => values.iter().map(|v| ("Proxy-Authenticate", v.clone().into())).collect(),
            Self::Throttled { retry_after } => vec![("Retry-After", retry_after.as_secs().max(1).to_string().into())],
            Self::Register(RegisterError::IntervalTooBrief { min }) => vec![("Min-Expires", min.to_string().into())],
            _ => Vec::new(),
        }
    }
}

/// Counters an operator reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub malformed: u64,
    pub sent: u64,
    pub flows_open: u64,
    pub registrations: u64,
    pub bindings: u64,
}

/// Wall-clock time tied to the monotonic clock at one instant, so the engine can say what
/// time it is (nonces, Date headers) from the `now` it is given.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub at: Instant,
    pub unix: Duration,
}

impl WallClock {
    fn unix(self, now: Instant) -> Duration {
        self.unix + now.saturating_duration_since(self.at)
    }
}

#[derive(Debug)]
pub struct Engine {
    proxy: Proxy,
    local: Local,
    /// Stateless answers to requests too broken for a transaction.
    transmits: VecDeque<Transmit>,
}

/// Everything the engine decides besides proxying: the routing policy (users, registrar,
/// flows), and the timers of the registrar.
#[derive(Debug)]
pub(crate) struct Local {
    config: EngineConfig,
    entropy: Entropy,
    wall: WallClock,
    flows: HashMap<FlowId, (TransportKind, SocketAddr, SocketAddr)>,
    /// Flows replaced by a new flow of the same instance: tokens naming the old one
    /// resolve to the new one (RFC 5626 flow recovery for calls in progress).
    flow_aliases: HashMap<FlowId, FlowId>,
    /// Replacements seen while routing, for the proxy to move its dialogs.
    replaced: Vec<(FlowId, FlowId)>,
    health: crate::routing::HealthChecks,
    /// OPTIONS pings in flight, by the id the proxy reports their outcome under.
    pings: HashMap<u64, crate::routing::TargetKey>,
    next_ping: u64,
    /// Our registrations at trunks (`register = true`), and the REGISTERs in flight by
    /// the id the proxy reports their outcome under.
    registrations: Vec<crate::routing::registration::TrunkRegistration>,
    registering: HashMap<u64, usize>,
    /// rtpengine and the calls it bridges, when configured.
    media: Option<media::MediaBridge>,
    registrar: Registrar,
    auth: Authenticator,
    users: Users,
    /// DNS answers for trunk targets named by host name.
    resolutions: resolve::Resolutions,
    /// Calls in progress per trunk (`max_calls`).
    trunk_calls: calls::TrunkCalls,
    housekeeping_due: Instant,
    persist_due: Option<Instant>,
    snapshot: Option<Vec<u8>>,
    stats: Stats,
    /// The last Date header value and the unix second it names: formatting one cost more
    /// than the rest of a 200 to a REGISTER's headers.
    date: (u64, String),
}

impl Engine {
    /// `wall` ties `now` to wall-clock time; `users` may be empty (then nobody registers).
    pub fn new(config: EngineConfig, mut entropy: Entropy, users: Users, wall: WallClock) -> Self {
        let auth = Authenticator::new(config.auth.clone(), entropy.bytes::<32>());
        let registrar = Registrar::new(config.registrar.clone(), Box::<MemoryStore>::default());
        let proxy_config = ProxyConfig {
            timers: config.timers,
            listen: config.listen.clone(),
            server_name: config.server_name.clone(),
            timer_c: config.proxy.timer_c,
            max_dialog_duration: config.proxy.max_call_duration,
            bye_on_flow_loss: config.proxy.bye_on_flow_loss,
            max_transactions: config.proxy.max_transactions,
            realm: Some(config.auth.realm.clone()),
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(proxy_config, entropy.bytes::<32>());
        let mut health = crate::routing::HealthChecks::new(config.health_interval, config.health_misses.max(1));
        if !config.health_interval.is_zero() {
            health.watch_table(&config.routing, wall.at);
        }
        let local = Local {
            config,
            entropy,
            wall,
            flows: HashMap::new(),
            flow_aliases: HashMap::new(),
            replaced: Vec::new(),
            health,
            pings: HashMap::new(),
            next_ping: 0,
            registrations: Vec::new(),
            registering: HashMap::new(),
            media: None,
            registrar,
            auth,
            users,
            resolutions: resolve::Resolutions::default(),
            trunk_calls: calls::TrunkCalls::default(),
            housekeeping_due: wall.at + HOUSEKEEPING,
            persist_due: None,
            snapshot: None,
            stats: Stats::default(),
            date: (0, String::new()),
        };
        let mut engine = Self { proxy, local, transmits: VecDeque::new() };
        if let Some(config) = engine.local.config.media.clone().filter(|m| !m.instances.is_empty()) {
            let seed = u64::from_be_bytes(engine.local.entropy.bytes::<8>());
            engine.local.media = Some(media::MediaBridge::new(config, seed));
        }
        engine.local.registrations = engine.local.trunk_registrations(wall.at);
        engine.local.watch_trunk_names();
        engine
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Received { source, bytes } => self.on_received(now, source, bytes),
            Input::FlowOpened { flow, kind, local, remote } => {
                self.local.flows.insert(flow, (kind, local, remote));
                self.local.stats.flows_open = self.local.flows.len() as u64;
            }
            Input::FlowClosed { flow } => {
                self.local.flows.remove(&flow);
                self.local.stats.flows_open = self.local.flows.len() as u64;
                let removed = self.local.registrar.flow_closed(flow);
                if removed > 0 {
                    tracing::debug!(%flow, bindings = removed, "flow closed; its bindings are gone");
                }
                self.local.bindings_changed(now);
                // Tokens of a replaced flow keep pointing at its successor after it closes;
                // when the successor closes too, they are dead.
                self.local.flow_aliases.retain(|_, new| *new != flow);
                self.proxy.flow_closed(now, flow, &mut self.local);
            }
            Input::MediaReceived { from, bytes } => self.on_media_datagram(now, from, &bytes),
            Input::Unreachable { destination } => {
                tracing::debug!(%destination, "unreachable; its transactions fail");
                self.proxy.unreachable(now, destination, &mut self.local);
            }
            Input::Resolved { request, result } => self.local.resolutions.resolved(now, &request, result),
        }
        self.call_events(now);
    }

    /// Fires due timers: transactions, expired bindings, housekeeping, the bindings file,
    /// trunk health pings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.local.resolutions.handle_timeout(now);
        self.proxy.handle_timeout(now, &mut self.local);
        self.call_events(now);
        self.ping_trunks(now);
        self.register_at_trunks(now);
        self.media_timeout(now);
        let local = &mut self.local;
        if local.registrar.next_expiry().is_some_and(|at| at <= now) && local.registrar.sweep(now) > 0 {
            local.bindings_changed(now);
        }
        if now >= local.housekeeping_due {
            local.auth.sweep(now);
            local.housekeeping_due = now + HOUSEKEEPING;
        }
        if local.persist_due.is_some_and(|at| at <= now) {
            local.persist_due = None;
            local.snapshot = Some(local.snapshot_bytes(now));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.transmits.pop_front().or_else(|| self.proxy.poll_transmit())?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let first_line = transmit.bytes.split(|&c| c == b'\r').next().unwrap_or_default();
            tracing::debug!(to = %transmit.destination, "send {}", String::from_utf8_lossy(first_line));
            tracing::trace!(to = %transmit.destination, "send\n{}", String::from_utf8_lossy(&transmit.bytes));
        }
        self.local.stats.sent += 1;
        Some(transmit)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let local = &self.local;
        let health = (!local.config.health_interval.is_zero()).then(|| local.health.poll_timeout()).flatten();
        [
            Some(local.housekeeping_due),
            local.persist_due,
            local.registrar.next_expiry(),
            self.proxy.poll_timeout(),
            health,
            local.registrations.iter().filter_map(|r| r.poll_timeout()).min(),
            local.media.as_ref().and_then(|m| m.poll_timeout()),
            local.resolutions.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A trunk host name to resolve (RFC 3263); the answer comes back as
    /// [`Input::Resolved`]. Asked at startup and again before each answer expires.
    pub fn poll_resolve(&mut self) -> Option<ResolveRequest> {
        self.local.resolutions.poll_request()
    }

    /// Calls in progress that count against `trunk`'s `max_calls`.
    pub fn trunk_calls(&self, trunk: &str) -> usize {
        self.local.trunk_calls.active(trunk)
    }

    /// Bindings to write to the state file, when they changed (at most once a second).
    pub fn poll_snapshot(&mut self) -> Option<Vec<u8>> {
        self.local.snapshot.take()
    }

    /// The bindings that outlive the process, as the state file holds them.
    pub fn snapshot_bytes(&self, now: Instant) -> Vec<u8> {
        self.local.snapshot_bytes(now)
    }

    /// Loads bindings an earlier run wrote; returns how many are back.
    pub fn restore(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, serde_json::Error> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        let restored = self.local.registrar.restore(snapshot, now, self.local.wall.unix(now));
        self.local.stats.bindings = self.local.registrar.bindings() as u64;
        Ok(restored)
    }

    /// The live bindings of an address-of-record (`user@domain`).
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<crate::registrar::Binding> {
        self.local.registrar.lookup(aor, now)
    }

    /// Replaces the users (a reloaded users file).
    pub fn set_users(&mut self, users: Users) {
        self.local.users = users;
    }

    pub fn stats(&self) -> Stats {
        self.local.stats
    }

    pub fn proxy_stats(&self) -> ProxyStats {
        self.proxy.stats()
    }

    /// What the proxy says about calls: where they went, when they ended.
    /// Calls routed and ended: trunk capacity is counted, and a bridged call's rtpengine
    /// session goes with it.
    fn call_events(&mut self, now: Instant) {
        while let Some(event) = self.proxy.poll_call_event() {
            if let (crate::proxy::CallEvent::Ended { call_id }, Some(media)) = (&event, &mut self.local.media) {
                media.call_ended(now, call_id);
            }
            self.local.trunk_calls.on_event(event);
        }
        // A delete is a datagram to send now.
        self.media_outcomes(now);
    }

    fn on_received(&mut self, now: Instant, source: Source, bytes: Bytes) {
        self.local.stats.received += 1;
        let message = match Message::parse(bytes.clone(), &self.local.config.limits) {
            Ok(m) => m,
            Err(error) => return self.on_unparseable(source, &bytes, error),
        };
        tracing::debug!(from = %source.remote, transport = %source.kind, flow = ?source.flow.map(|f| f.0), "recv {}", message.summary());
        tracing::trace!(from = %source.remote, "recv\n{}", String::from_utf8_lossy(message.as_bytes()));
        if !message.is_request() {
            self.proxy.handle_response(now, message, &mut self.local);
            self.media_outcomes(now);
            return self.own_request_outcomes(now);
        }
        if let Err(error) = validate(&message) {
            self.local.stats.malformed += 1;
            if message.method() == Some(&Method::Ack) {
                return;
            }
            let Some(destination) = reply_destination(&source, message.top_via_raw().as_deref()) else {
                tracing::debug!(from = %source.remote, "request without a usable Via dropped");
                return;
            };
            let reply = error.into_reply();
            let tag = self.local.entropy.tag();
            let mut r = Reply::new(reply.code);
            r.reason = reply.reason.as_deref();
            r.to_tag = Some(&tag);
            r.source = Some(source.remote);
            r.headers = reply.headers;
            r.headers.push(("Server", self.local.config.server_name.as_str().into()));
            let bytes = response::build(&message, &r);
            self.transmits.push_back(Transmit { destination, bytes: Bytes::from(bytes) });
            return;
        }
        let message = message.with_stamped_via(source.remote);
        self.proxy.handle_request(now, message, source, &mut self.local);
        // rtpengine may refuse an SDP at once (unreadable, no codec the trunk takes).
        self.media_outcomes(now);
        for (old, new) in std::mem::take(&mut self.local.replaced) {
            self.proxy.flow_replaced(old, new);
        }
    }

    fn on_unparseable(&mut self, source: Source, bytes: &[u8], error: ParseError) {
        self.local.stats.malformed += 1;
        tracing::debug!(from = %source.remote, transport = %source.kind, %error, len = bytes.len(), "unparseable message");
        let Some(fields) = message::salvage_for_reply(bytes) else { return };
        let top_via = fields.iter().find(|(n, _)| *n == HeaderName::Via).map(|(_, v)| v.as_slice());
        let Some(destination) = reply_destination(&source, top_via) else { return };
        let tag = self.local.entropy.tag();
        let reason = error.to_string();
        let reply = Reply {
            code: error.status(),
            reason: Some(&reason),
            to_tag: Some(&tag),
            source: Some(source.remote),
            headers: vec![("Server", self.local.config.server_name.as_str().into())],
        };
        let bytes = response::build_salvaged(&fields, &reply);
        self.transmits.push_back(Transmit { destination, bytes: Bytes::from(bytes) });
    }
}

impl Local {
    fn bindings_changed(&mut self, now: Instant) {
        self.stats.bindings = self.registrar.bindings() as u64;
        // Serializing every binding costs as much as a registration per thousand bindings:
        // only when somebody writes it down.
        if self.config.persist_bindings && self.persist_due.is_none() {
            self.persist_due = Some(now + PERSIST_DELAY);
        }
    }

    fn snapshot_bytes(&self, now: Instant) -> Vec<u8> {
        let snapshot = self.registrar.snapshot(now, self.wall.unix(now));
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// OPTIONS to the server itself (§11.2).
    fn options(&self, message: &Message) -> Result<LocalReply, RequestError> {
        // As the UAS of this OPTIONS, §8.2.2.3: Require is ours to check.
        let require: Vec<String> =
            message.list(HeaderName::Require).iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        if !require.is_empty() {
            return Err(RequestError::Extension(require));
        }
        let mut reply = LocalReply::new(200);
        reply.headers.push(("Allow", ALLOW.into()));
        reply.headers.push(("Accept", "application/sdp".into()));
        reply.headers.push(("Supported", SUPPORTED.into()));
        Ok(reply)
    }

    /// A Request-URI without a user part whose host is one of our domains or the address
    /// the request arrived on.
    fn is_addressed_to_us(&self, message: &Message, source: &Source) -> bool {
        let Some(Ok(Uri::Sip(uri))) = message.parsed_request_uri() else { return false };
        if uri.user.is_some() {
            return false;
        }
        self.is_our_host(&uri.host, source)
    }

    fn is_our_host(&self, host: &Host, source: &Source) -> bool {
        match host {
            Host::Name(name) => self.config.domains.iter().any(|d| d.eq_ignore_ascii_case(name)),
            Host::Ip(ip) => is_local_ip(*ip, source.local.ip()),
        }
    }
}

impl RoutingPolicy for Local {
    fn route(&mut self, now: Instant, request: &Message, source: &Source) -> Decision {
        let for_us = self.is_addressed_to_us(request, source);
        // §16.3 step 3: only an OPTIONS for the server itself may arrive with no hops left.
        if request.max_forwards() == Some(Ok(0)) && !for_us {
            return Decision::Reply(RequestError::TooManyHops.into_reply());
        }
        let outcome = match request.method() {
            Some(Method::Register) => self.register(now, request, source).map(Decision::Reply),
            Some(Method::Options) if for_us => self.options(request).map(Decision::Reply),
            _ => self.call(now, request, source),
        };
        outcome.unwrap_or_else(|error| Decision::Reply(error.into_reply()))
    }

    fn resolve_flow(&self, flow: FlowId) -> Option<(FlowId, TransportKind, SocketAddr)> {
        let current = self.flow_aliases.get(&flow).copied().unwrap_or(flow);
        self.flows.get(&current).map(|(kind, local, _)| (current, *kind, *local))
    }

    fn token(&mut self, len: usize) -> String {
        self.entropy.token(len)
    }

    fn request_body(
        &mut self,
        now: Instant,
        request: &Message,
        _source: &Source,
        _targets: &[crate::proxy::Target],
    ) -> crate::proxy::BodyAction {
        match &mut self.media {
            Some(media) => media.request_body(now, request),
            None => crate::proxy::BodyAction::Keep,
        }
    }

    fn response_body(&mut self, now: Instant, request: &Message, response: &Message) -> crate::proxy::BodyAction {
        match &mut self.media {
            Some(media) => media.response_body(now, request, response),
            None => crate::proxy::BodyAction::Keep,
        }
    }
}

/// RFC 3261 §8.2 and §16.3 checks every request passes before anything acts on it.
fn validate(message: &Message) -> Result<(), RequestError> {
    if message.version() != (2, 0) {
        return Err(RequestError::Version);
    }
    if message.header(HeaderName::Via).is_none() {
        return Err(RequestError::Missing("Via"));
    }
    // Every Via must parse, not only ours to answer: a broken one further down would
    // break the response path of whoever we forward to (RFC 4475 §3.1.2.1).
    if message.has_empty_list_element(HeaderName::Via)
        || !matches!(message.top_via(), Some(Ok(_)))
        || message.list(HeaderName::Via).iter().skip(1).any(|v| Via::parse(v).is_err())
    {
        return Err(RequestError::Malformed("Via"));
    }
    // Single-valued headers appear once (RFC 4475 §3.3.8).
    for (name, label) in SINGLE_VALUED {
        if message.headers_named(name).nth(1).is_some() {
            return Err(RequestError::Repeated(label));
        }
    }
    for (uri, label) in [(message.from_uri(), "From"), (message.to_uri(), "To")] {
        uri.ok_or(RequestError::Missing(label))?.map_err(|_| RequestError::Malformed(label))?;
    }
    message.call_id().filter(|c| !c.is_empty()).ok_or(RequestError::Missing("Call-ID"))?;
    if message.header(HeaderName::CSeq).is_none() {
        return Err(RequestError::Missing("CSeq"));
    }
    let (_, cseq_method) = message.cseq().ok_or(RequestError::Malformed("CSeq"))?;
    // An extension method is not ours to judge: it is forwarded or refused with 501,
    // which RFC 4475 §3.1.2.18 prefers at proxies for future-proofing.
    let known = !matches!(message.method(), Some(Method::Extension(_)));
    if known && Some(&cseq_method) != message.method() {
        return Err(RequestError::CSeqMethod);
    }
    if let Some(Err(())) = message.max_forwards() {
        return Err(RequestError::Malformed("Max-Forwards"));
    }
    match message.parsed_request_uri().ok_or(RequestError::RequestUri)?.map_err(|_| RequestError::RequestUri)? {
        Uri::Sip(sip) if sip.headers.is_some() => Err(RequestError::RequestUri),
        Uri::Sip(_) => Ok(()),
        Uri::Other { .. } => Err(RequestError::UriScheme),
    }
}

/// RFC 3261 §18.2.2 with RFC 3581: a response goes back over the flow it came on, or for
/// UDP to the address the top Via (and the packet source) say.
fn reply_destination(source: &Source, top_via: Option<&[u8]>) -> Option<Destination> {
    if let Some(flow) = source.flow {
        return Some(Destination::Flow(flow));
    }
    // A Via we cannot parse still says a request came: its 400 goes to the packet source.
    let remote = match Via::parse(top_via?) {
        Ok(via) => via.response_address(source.remote),
        Err(_) => source.remote,
    };
    Some(Destination::Datagram { local: source.local, remote })
}

fn is_local_ip(ip: IpAddr, arrived_on: IpAddr) -> bool {
    ip == arrived_on || ip.is_loopback() || (arrived_on.is_unspecified() && !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn engine() -> Engine {
        let wall = WallClock { at: clock::now(), unix: Duration::from_secs(1_800_000_000) };
        Engine::new(EngineConfig::default(), Entropy::seeded(1), Users::default(), wall)
    }

    fn udp_source() -> Source {
        Source {
            kind: TransportKind::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            flow: None,
        }
    }

    /// Feeds one request and returns the final answer (a 100 Trying before it is skipped).
    fn exchange(engine: &mut Engine, source: Source, request: &str) -> Option<(Destination, String)> {
        engine
            .handle_input(clock::now(), Input::Received { source, bytes: Bytes::copy_from_slice(request.as_bytes()) });
        let mut last = None;
        while let Some(t) = engine.poll_transmit() {
            let text = String::from_utf8(t.bytes.to_vec()).unwrap();
            if text.starts_with("SIP/2.0 100 ") {
                continue;
            }
            assert!(last.is_none(), "more than one final answer: {text}");
            last = Some((t.destination, text));
        }
        last
    }

    /// A request with a branch of its own, so no server transaction mistakes one test
    /// request for a repeat of another.
    fn request(method: &str, uri: &str, extra: &str) -> String {
        static BRANCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let branch = BRANCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;rport;branch=z9hG4bKx{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:probe@example.net>;tag=f1\r\nTo: <{uri}>\r\nCall-ID: c-1\r\nCSeq: 1 {method}\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn options_to_the_server_gets_200_over_the_way_it_came() {
        let mut e = engine();
        let (dest, text) = exchange(&mut e, udp_source(), &request("OPTIONS", "sip:localhost", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains(&format!("Allow: {ALLOW}\r\n")));
        assert!(text.contains(";rport=40000"));
        assert!(text.contains("To: <sip:localhost>;tag="));
        assert_eq!(dest, Destination::Datagram { local: udp_source().local, remote: udp_source().remote });

        let ws = Source { kind: TransportKind::Ws, flow: Some(FlowId(7)), ..udp_source() };
        let (dest, text) = exchange(&mut e, ws, &request("OPTIONS", "sip:127.0.0.1:5060", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert_eq!(dest, Destination::Flow(FlowId(7)));
    }

    #[test]
    fn requests_for_users_need_proxy_authentication_and_others_are_refused() {
        let mut e = engine();
        let (_, text) = exchange(&mut e, udp_source(), &request("OPTIONS", "sip:alice@localhost", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"), "{text}");
        assert!(text.contains("Proxy-Authenticate: Digest "), "{text}");
        let (_, text) = exchange(&mut e, udp_source(), &request("NEWMETHOD", "sip:localhost", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 404 "), "{text}");
        let (_, text) = exchange(&mut e, udp_source(), &request("MESSAGE", "sip:bob@example.com", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 403 Relaying Not Allowed\r\n"), "{text}");
    }

    #[test]
    fn date_text_is_the_formatted_second_and_moves_with_it() {
        let mut e = engine();
        let at = |secs: u64, nanos: u32| Duration::new(secs, nanos);
        let expect = |secs: u64| httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(e.local.date_text(at(0, 0)), expect(0), "second 0 is formatted too, not taken as cached");
        assert_eq!(e.local.date_text(at(1_800_000_000, 10)), expect(1_800_000_000));
        assert_eq!(e.local.date_text(at(1_800_000_000, 999_999_999)), expect(1_800_000_000));
        assert_eq!(e.local.date_text(at(1_800_000_001, 0)), expect(1_800_000_001));
        assert_eq!(e.local.date_text(at(1_799_999_000, 0)), expect(1_799_999_000), "a clock stepped back");
    }

    #[test]
    fn ack_is_never_answered() {
        let mut e = engine();
        assert!(exchange(&mut e, udp_source(), &request("ACK", "sip:localhost", "")).is_none());
    }

    #[test]
    fn malformed_requests_get_400_with_the_reason() {
        let mut e = engine();
        let no_call_id = request("OPTIONS", "sip:localhost", "").replace("Call-ID: c-1\r\n", "");
        let (_, text) = exchange(&mut e, udp_source(), &no_call_id).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Missing Call-ID Header\r\n"), "{text}");
        let bad_cl = request("OPTIONS", "sip:localhost", "").replace("Content-Length: 0", "Content-Length: 50");
        let (_, text) = exchange(&mut e, udp_source(), &bad_cl).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Body Shorter Than Content-Length\r\n"), "{text}");
        assert!(text.contains("Call-ID: c-1\r\n"));
        let twice = request("OPTIONS", "sip:localhost", "Call-ID: c-2\r\n");
        let (_, text) = exchange(&mut e, udp_source(), &twice).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Multiple Call-ID Headers\r\n"), "{text}");
        let empty_via = request("OPTIONS", "sip:localhost", "Via: SIP/2.0/UDP p;branch=z9hG4bK2,,\r\n");
        let (dest, text) = exchange(&mut e, udp_source(), &empty_via).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Malformed Via Header\r\n"), "{text}");
        assert_eq!(dest, Destination::Datagram { local: udp_source().local, remote: udp_source().remote });
        let mismatch = request("OPTIONS", "sip:localhost", "").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        let (_, text) = exchange(&mut e, udp_source(), &mismatch).unwrap();
        assert!(text.starts_with("SIP/2.0 400 CSeq Method Does Not Match Request\r\n"), "{text}");
    }

    #[test]
    fn rule_violations_get_their_own_status() {
        let mut e = engine();
        let cases = [
            (request("OPTIONS", "sip:localhost", "").replace("SIP/2.0\r\n", "SIP/7.0\r\n"), "505"),
            (request("OPTIONS", "tel:+15550100", ""), "416"),
            (request("OPTIONS", "sip:localhost", "Proxy-Require: foo\r\n"), "420"),
            (request("OPTIONS", "sip:localhost", "Require: 100rel\r\n"), "420"),
            (request("INVITE", "sip:bob@example.com", "").replace("Max-Forwards: 70", "Max-Forwards: 0"), "483"),
        ];
        for (req, status) in cases {
            let (_, text) = exchange(&mut e, udp_source(), &req).unwrap();
            assert!(text.starts_with(&format!("SIP/2.0 {status} ")), "{status}: {text}");
        }
        let (_, text) =
            exchange(&mut e, udp_source(), &request("OPTIONS", "sip:localhost", "Proxy-Require: foo, bar\r\n"))
                .unwrap();
        assert!(text.contains("Unsupported: foo, bar\r\n"), "{text}");
    }

    #[test]
    fn garbage_and_responses_are_dropped_silently() {
        let mut e = engine();
        assert!(exchange(&mut e, udp_source(), "\u{1}\u{2}garbage").is_none());
        assert!(exchange(&mut e, udp_source(), "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
        let with_via = request("OPTIONS", "sip:localhost", "");
        let no_via: String = with_via.split_inclusive("\r\n").filter(|l| !l.starts_with("Via:")).collect();
        assert!(exchange(&mut e, udp_source(), &no_via).is_none());
        assert_eq!(e.stats().malformed, 2);
    }

    #[test]
    fn flows_are_counted() {
        let mut e = engine();
        let remote = "127.0.0.1:1".parse().unwrap();
        e.handle_input(
            clock::now(),
            Input::FlowOpened { flow: FlowId(1), kind: TransportKind::Ws, local: remote, remote },
        );
        e.handle_input(
            clock::now(),
            Input::FlowOpened { flow: FlowId(2), kind: TransportKind::Tcp, local: remote, remote },
        );
        e.handle_input(clock::now(), Input::FlowClosed { flow: FlowId(1) });
        assert_eq!(e.stats().flows_open, 1);
    }
}

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

mod register;
mod retransmit;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{AuthConfig, Authenticator, Users};
use crate::clock::Entropy;
use crate::message::response::{self, Reply};
use crate::message::{self, HeaderName, Host, Message, Method, NameAddr, ParseError, Uri, Via};
use crate::registrar::{MemoryStore, RegisterError, Registrar, RegistrarConfig, Snapshot};
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
    /// RFC 3261 T1; Timer J is 64·T1.
    pub t1: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".into()],
            limits: message::Limits::default(),
            server_name: format!("webtrunk/{}", env!("CARGO_PKG_VERSION")),
            registrar: RegistrarConfig::default(),
            auth: AuthConfig::default(),
            t1: Duration::from_millis(500),
        }
    }
}

/// What the engine is told.
#[derive(Debug)]
pub enum Input {
    Received { source: Source, bytes: Bytes },
    FlowOpened { flow: FlowId, kind: TransportKind, remote: SocketAddr },
    FlowClosed { flow: FlowId },
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
        }
    }

    /// The reason phrase: ours when it tells the client more than the standard one.
    fn reason(&self) -> Option<String> {
        match self {
            Self::Register(e) if matches!(e.status(), 400 | 403) => Some(e.to_string()),
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
    pub responses_sent: u64,
    pub flows_open: u64,
    pub retransmissions_absorbed: u64,
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
    config: EngineConfig,
    entropy: Entropy,
    wall: WallClock,
    transmits: VecDeque<Transmit>,
    flows: HashMap<FlowId, (TransportKind, SocketAddr)>,
    registrar: Registrar,
    auth: Authenticator,
    users: Users,
    retransmits: retransmit::ResponseCache,
    housekeeping_due: Instant,
    persist_due: Option<Instant>,
    snapshot: Option<Vec<u8>>,
    stats: Stats,
}

impl Engine {
    /// `wall` ties `now` to wall-clock time; `users` may be empty (then nobody registers).
    pub fn new(config: EngineConfig, mut entropy: Entropy, users: Users, wall: WallClock) -> Self {
        let auth = Authenticator::new(config.auth.clone(), entropy.bytes::<32>());
        let registrar = Registrar::new(config.registrar.clone(), Box::<MemoryStore>::default());
        Self {
            retransmits: retransmit::ResponseCache::new(config.t1 * 64),
            config,
            entropy,
            wall,
            transmits: VecDeque::new(),
            flows: HashMap::new(),
            registrar,
            auth,
            users,
            housekeeping_due: wall.at + HOUSEKEEPING,
            persist_due: None,
            snapshot: None,
            stats: Stats::default(),
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Received { source, bytes } => self.on_received(now, source, bytes),
            Input::FlowOpened { flow, kind, remote } => {
                self.flows.insert(flow, (kind, remote));
                self.stats.flows_open = self.flows.len() as u64;
            }
            Input::FlowClosed { flow } => {
                self.flows.remove(&flow);
                self.stats.flows_open = self.flows.len() as u64;
                let removed = self.registrar.flow_closed(flow);
                if removed > 0 {
                    tracing::debug!(%flow, bindings = removed, "flow closed; its bindings are gone");
                }
                self.bindings_changed(now);
            }
        }
    }

    /// Fires due timers: cached responses and expired bindings go, bindings are written.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retransmits.expire(now);
        if self.registrar.next_expiry().is_some_and(|at| at <= now) && self.registrar.sweep(now) > 0 {
            self.bindings_changed(now);
        }
        if now >= self.housekeeping_due {
            self.auth.sweep(now);
            self.housekeeping_due = now + HOUSEKEEPING;
        }
        if self.persist_due.is_some_and(|at| at <= now) {
            self.persist_due = None;
            self.snapshot = Some(self.snapshot_bytes(now));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [Some(self.housekeeping_due), self.persist_due, self.retransmits.next_expiry(), self.registrar.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Bindings to write to the state file, when they changed (at most once a second).
    pub fn poll_snapshot(&mut self) -> Option<Vec<u8>> {
        self.snapshot.take()
    }

    /// The bindings that outlive the process, as the state file holds them.
    pub fn snapshot_bytes(&self, now: Instant) -> Vec<u8> {
        let snapshot = self.registrar.snapshot(now, self.wall.unix(now));
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec_pretty(&snapshot).unwrap_or_default()
    }

    /// Loads bindings an earlier run wrote; returns how many are back.
    pub fn restore(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, serde_json::Error> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        let restored = self.registrar.restore(snapshot, now, self.wall.unix(now));
        self.stats.bindings = self.registrar.bindings() as u64;
        Ok(restored)
    }

    /// The live bindings of an address-of-record (`user@domain`).
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<crate::registrar::Binding> {
        self.registrar.lookup(aor, now)
    }

    /// Replaces the users (a reloaded users file).
    pub fn set_users(&mut self, users: Users) {
        self.users = users;
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn bindings_changed(&mut self, now: Instant) {
        self.stats.bindings = self.registrar.bindings() as u64;
        if self.persist_due.is_none() {
            self.persist_due = Some(now + PERSIST_DELAY);
        }
    }

    fn on_received(&mut self, now: Instant, source: Source, bytes: Bytes) {
        self.stats.received += 1;
        let message = match Message::parse(bytes.clone(), &self.config.limits) {
            Ok(m) => m,
            Err(error) => return self.on_unparseable(source, &bytes, error),
        };
        tracing::debug!(from = %source.remote, transport = %source.kind, flow = ?source.flow.map(|f| f.0), "recv {}", message.summary());
        tracing::trace!(from = %source.remote, "recv\n{}", String::from_utf8_lossy(message.as_bytes()));
        if !message.is_request() {
            // Responses belong to client transactions, which do not exist yet.
            tracing::debug!(from = %source.remote, "stray response dropped: {}", message.summary());
            return;
        }
        let Some(destination) = reply_destination(&source, message.top_via_raw().as_deref()) else {
            self.stats.malformed += 1;
            tracing::debug!(from = %source.remote, "request without a usable Via dropped");
            return;
        };
        if message.method() == Some(&Method::Ack) {
            return;
        }
        let cache_key = retransmit::key(&message, &source);
        if let Some(key) = &cache_key
            && let Some(cached) = self.retransmits.get(key)
        {
            self.stats.retransmissions_absorbed += 1;
            self.transmits.push_back(cached);
            return;
        }
        let outcome = validate(&message).and_then(|()| self.route(now, &message, &source));
        let (code, reason, extra) = match outcome {
            Ok(reply) => (reply.code, None, reply.headers),
            Err(error) => (error.status(), error.reason(), error.headers()),
        };
        let tag = self.entropy.tag();
        let mut reply = Reply::new(code);
        reply.reason = reason.as_deref();
        reply.to_tag = Some(&tag);
        reply.source = Some(source.remote);
        reply.headers = extra;
        reply.headers.push(("Server", self.config.server_name.as_str().into()));
        let bytes = response::build(&message, &reply);
        let transmit = self.send(destination, bytes);
        if let Some(key) = cache_key {
            self.retransmits.insert(now, key, transmit);
        }
    }

    /// What to do with a valid request. Until the registrar and proxy exist, only OPTIONS
    /// to the server itself is ours.
    fn route(&mut self, now: Instant, message: &Message, source: &Source) -> Result<Reply<'static>, RequestError> {
        // §16.3 step 5: we support no option tags yet, so any Proxy-Require is refused.
        let proxy_require: Vec<String> =
            message.list(HeaderName::ProxyRequire).iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        if !proxy_require.is_empty() {
            return Err(RequestError::Extension(proxy_require));
        }
        if message.method() == Some(&Method::Register) {
            return self.register(now, message, source);
        }
        let for_us = message.method() == Some(&Method::Options) && self.is_addressed_to_us(message, source);
        if !for_us {
            if message.max_forwards() == Some(Ok(0)) {
                return Err(RequestError::TooManyHops);
            }
            return Err(RequestError::NotImplemented);
        }
        // As the UAS of this OPTIONS, §8.2.2.3: Require is ours to check too.
        let require: Vec<String> =
            message.list(HeaderName::Require).iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        if !require.is_empty() {
            return Err(RequestError::Extension(require));
        }
        let mut reply = Reply::new(200);
        reply.headers.push(("Allow", ALLOW.into()));
        reply.headers.push(("Accept", "application/sdp".into()));
        reply.headers.push(("Supported", SUPPORTED.into()));
        Ok(reply)
    }

    /// A Request-URI without a user part whose host is one of our domains or the address
    /// the request arrived on.
    fn is_addressed_to_us(&self, message: &Message, source: &Source) -> bool {
        let Some(Ok(Uri::Sip(uri))) = message.request_uri().map(Uri::parse) else { return false };
        if uri.user.is_some() {
            return false;
        }
        match &uri.host {
            Host::Name(name) => self.config.domains.iter().any(|d| d.eq_ignore_ascii_case(name)),
            Host::Ip(ip) => is_local_ip(*ip, source.local.ip()),
        }
    }

    fn on_unparseable(&mut self, source: Source, bytes: &[u8], error: ParseError) {
        self.stats.malformed += 1;
        tracing::debug!(from = %source.remote, transport = %source.kind, %error, len = bytes.len(), "unparseable message");
        let Some(fields) = message::salvage_for_reply(bytes) else { return };
        let top_via = fields.iter().find(|(n, _)| *n == HeaderName::Via).map(|(_, v)| v.as_slice());
        let Some(destination) = reply_destination(&source, top_via) else { return };
        let tag = self.entropy.tag();
        let reason = error.to_string();
        let reply = Reply {
            code: error.status(),
            reason: Some(&reason),
            to_tag: Some(&tag),
            source: Some(source.remote),
            headers: vec![("Server", self.config.server_name.as_str().into())],
        };
        let bytes = response::build_salvaged(&fields, &reply);
        let _ = self.send(destination, bytes);
    }

    fn send(&mut self, destination: Destination, bytes: Vec<u8>) -> Transmit {
        self.stats.responses_sent += 1;
        let bytes = Bytes::from(bytes);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let first_line = bytes.split(|&c| c == b'\r').next().unwrap_or_default();
            tracing::debug!(to = %destination, "send {}", String::from_utf8_lossy(first_line));
            tracing::trace!(to = %destination, "send\n{}", String::from_utf8_lossy(&bytes));
        }
        let transmit = Transmit { destination, bytes };
        self.transmits.push_back(transmit.clone());
        transmit
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
        || message.list(HeaderName::Via).iter().any(|v| Via::parse(v).is_err())
    {
        return Err(RequestError::Malformed("Via"));
    }
    // Single-valued headers appear once (RFC 4475 §3.3.8).
    for (name, label) in SINGLE_VALUED {
        if message.headers_named(name).nth(1).is_some() {
            return Err(RequestError::Repeated(label));
        }
    }
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        let value = message.first_value(name).ok_or(RequestError::Missing(label))?;
        let addr = NameAddr::parse(&value).map_err(|_| RequestError::Malformed(label))?;
        addr.parse_uri().map_err(|_| RequestError::Malformed(label))?;
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
    let uri = message.request_uri().ok_or(RequestError::RequestUri)?;
    match Uri::parse(uri).map_err(|_| RequestError::RequestUri)? {
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

    fn exchange(engine: &mut Engine, source: Source, request: &str) -> Option<(Destination, String)> {
        engine
            .handle_input(clock::now(), Input::Received { source, bytes: Bytes::copy_from_slice(request.as_bytes()) });
        let t = engine.poll_transmit()?;
        assert!(engine.poll_transmit().is_none());
        Some((t.destination, String::from_utf8(t.bytes.to_vec()).unwrap()))
    }

    /// A request with a branch of its own, so the retransmission cache never mistakes one
    /// test request for a repeat of another.
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
    fn options_to_a_user_or_other_methods_are_not_implemented_yet() {
        let mut e = engine();
        let (_, text) = exchange(&mut e, udp_source(), &request("OPTIONS", "sip:alice@localhost", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 501 Not Implemented\r\n"), "{text}");
        let (_, text) = exchange(&mut e, udp_source(), &request("NEWMETHOD", "sip:localhost", "")).unwrap();
        assert!(text.starts_with("SIP/2.0 501 "), "{text}");
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
        e.handle_input(clock::now(), Input::FlowOpened { flow: FlowId(1), kind: TransportKind::Ws, remote });
        e.handle_input(clock::now(), Input::FlowOpened { flow: FlowId(2), kind: TransportKind::Tcp, remote });
        e.handle_input(clock::now(), Input::FlowClosed { flow: FlowId(1) });
        assert_eq!(e.stats().flows_open, 1);
    }
}

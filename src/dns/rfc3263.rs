//! RFC 3263 §4 as a sans-IO state machine: which DNS questions to ask for a SIP target,
//! in which order, and how the answers become an ordered list of (transport, address,
//! port). It never touches a socket: [`Resolution::poll_query`] hands out questions,
//! [`Resolution::handle_answer`] takes their answers, [`Resolution::poll_outcome`] gives
//! the result. The async shell in `dns/mod.rs` asks hickory.
//!
//! The path through §4 (phases in order; a phase's queries can be asked in parallel):
//!
//! ```text
//! IP literal ------------------------------------------------> done (§4.1, §4.2)
//! name + port ----------------------------------> A/AAAA ---> done (§4.2)
//! name + transport ---------------> SRV of it --> A/AAAA ---> done (§4.2)
//! name ------------> NAPTR (§4.1) -> SRV of each -> A/AAAA --> done
//!                      none: SRV of each supported transport; no SRV: A/AAAA of the name
//! ```

use std::collections::HashSet;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{DnsError, QueryFailure};
use super::srv::order_by_priority_and_weight;

/// Shortest TTL we report: a zero-TTL zone must not make the engine re-resolve on every
/// request.
pub const TTL_FLOOR: Duration = Duration::from_secs(5);
/// Longest TTL we report: a trunk's DNS change is noticed within the hour whatever the zone
/// says.
pub const TTL_CAP: Duration = Duration::from_secs(3600);

/// The transports RFC 3263 can select for a trunk. Kept local to `dns` so the resolver
/// does not depend on how the transport layer names things; see the `From` impl in the
/// module root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipTransport {
    Udp,
    Tcp,
    /// TLS over TCP (`sips:` or `;transport=tls`).
    Tls,
}

impl SipTransport {
    /// RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }

    /// RFC 3263 §4.1: the SRV service and protocol labels; TLS is `_sips._tcp`.
    pub const fn srv_prefix(self) -> &'static str {
        match self {
            Self::Udp => "_sip._udp",
            Self::Tcp => "_sip._tcp",
            Self::Tls => "_sips._tcp",
        }
    }

    /// RFC 3263 §4.1 (and the IANA registry it creates): the NAPTR service field.
    pub const fn naptr_service(self) -> &'static str {
        match self {
            Self::Udp => "SIP+D2U",
            Self::Tcp => "SIP+D2T",
            Self::Tls => "SIPS+D2T",
        }
    }

    fn from_naptr_service(service: &str) -> Option<Self> {
        [Self::Udp, Self::Tcp, Self::Tls].into_iter().find(|t| t.naptr_service().eq_ignore_ascii_case(service))
    }
}

impl fmt::Display for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        })
    }
}

/// What to resolve: the host part of a SIP URI with its port and `transport` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name, an IPv4 address, or an IPv6 address with or without brackets.
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<SipTransport>,
    /// A `sips:` URI (a TLS trunk): only TLS may be selected (RFC 3263 §4.1).
    pub sips: bool,
}

/// The record types RFC 3263 asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Naptr,
    Srv,
    A,
    Aaaa,
}

/// One DNS question. `name` is absolute (ends with a dot) and lower case, so the shell
/// never applies a search list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub name: String,
    pub kind: RecordKind,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RecordKind::Naptr => "NAPTR",
            RecordKind::Srv => "SRV",
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
        };
        write!(f, "{kind} {}", self.name)
    }
}

/// The answer to one [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The answer section. Records of other types than asked (CNAMEs on the way) are
    /// ignored; an empty list counts as NODATA.
    Records(Vec<Record>),
    /// RCODE NXDOMAIN; `negative_ttl` from the SOA when the server sent one (RFC 2308 §5).
    NxDomain {
        negative_ttl: Option<u32>,
    },
    /// NOERROR with no answer of the asked type (RFC 2308 §2.2).
    NoData {
        negative_ttl: Option<u32>,
    },
    Failed(QueryFailure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ttl: u32,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Naptr(Naptr),
    Srv(Srv),
    Address(IpAddr),
}

/// The NAPTR fields RFC 3263 §4.1 reads (RFC 3403 §4.1); the regexp is always empty for
/// SIP and is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
}

/// An SRV record's data (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The outcome: targets in the order to try them, and how long the answer may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Never empty. In NAPTR order, then SRV priority and weighted draw (RFC 2782), then
    /// A before AAAA; duplicates (same transport and address) removed.
    pub targets: Vec<ResolvedTarget>,
    /// The smallest TTL among the records (and negative answers) that decided the result,
    /// clamped to [`TTL_FLOOR`]..=[`TTL_CAP`]. The engine resolves again after this.
    pub ttl: Duration,
}

/// One place to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub transport: SipTransport,
    pub addr: SocketAddr,
    /// From the SRV record; 0 when no SRV record was involved.
    pub priority: u16,
    pub weight: u16,
}

/// One RFC 3263 resolution in progress.
#[derive(Debug)]
pub struct Resolution {
    /// As given, for error messages.
    host: String,
    /// Absolute and lower case.
    name: String,
    port: Option<u16>,
    /// After the SIPS rules: `Some(Tls)` for `sips:` with TCP.
    transport: Option<SipTransport>,
    sips: bool,
    phase: Phase,
    to_ask: VecDeque<Query>,
    awaiting: Vec<Query>,
    answers: Vec<(Query, Answer)>,
    /// Smallest TTL of what decided the result so far.
    min_ttl: Option<u32>,
    outcome: Option<Result<Resolved, DnsError>>,
}

#[derive(Debug)]
enum Phase {
    Naptr,
    Srv { services: Vec<Service> },
    Address { candidates: Vec<Candidate>, of_the_name_itself: bool },
    Done,
}

/// A transport and the SRV name that locates it.
#[derive(Debug, Clone)]
struct Service {
    transport: SipTransport,
    srv_name: String,
}

/// A host and port to look up addresses for, with what the SRV record said.
#[derive(Debug, Clone)]
struct Candidate {
    transport: SipTransport,
    host: String,
    port: u16,
    priority: u16,
    weight: u16,
}

impl Resolution {
    /// Starts resolving. An IP literal or a bad name is finished at once: see
    /// [`Self::poll_outcome`].
    pub fn new(target: Target) -> Self {
        let mut resolution = Self {
            host: target.host.clone(),
            name: String::new(),
            port: target.port,
            transport: target.transport,
            sips: target.sips,
            phase: Phase::Done,
            to_ask: VecDeque::new(),
            awaiting: Vec::new(),
            answers: Vec::new(),
            min_ttl: None,
            outcome: None,
        };
        resolution.start(&target.host);
        resolution
    }

    /// The next question to ask. Every question handed out must be answered through
    /// [`Self::handle_answer`] before the resolution can move on.
    pub fn poll_query(&mut self) -> Option<Query> {
        let query = self.to_ask.pop_front()?;
        self.awaiting.push(query.clone());
        Some(query)
    }

    /// Takes the answer to a question from [`Self::poll_query`]; answers to anything else
    /// (a question from an earlier phase, a duplicate) are ignored. `random` orders SRV
    /// targets of equal priority (RFC 2782).
    pub fn handle_answer(&mut self, query: &Query, answer: Answer, random: &mut impl FnMut() -> u32) {
        let Some(index) = self.awaiting.iter().position(|q| q == query) else { return };
        self.awaiting.swap_remove(index);
        if let Answer::Failed(failure) = answer {
            // An unknown NAPTR or SRV answer could change which service is used: falling
            // through to the next step would guess. Address lookups are independent of
            // each other, so one failing only loses that name's addresses.
            if matches!(self.phase, Phase::Naptr | Phase::Srv { .. }) {
                self.finish(Err(failure_error(&self.host, query, failure)));
                return;
            }
        }
        if let Answer::NxDomain { negative_ttl: Some(ttl) } | Answer::NoData { negative_ttl: Some(ttl) } = answer {
            self.saw_ttl(ttl);
        }
        self.answers.push((query.clone(), answer));
        if self.awaiting.is_empty() && self.to_ask.is_empty() {
            self.advance(random);
        }
    }

    /// The result, once: `Some` after the last needed answer (or at once for an IP
    /// literal or a name we refuse to resolve).
    pub fn poll_outcome(&mut self) -> Option<Result<Resolved, DnsError>> {
        self.outcome.take()
    }

    fn start(&mut self, host: &str) {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let transport = match (self.sips, self.transport) {
            (true, Some(SipTransport::Udp)) => return self.finish(Err(DnsError::SipsOverUdp { host: host.into() })),
            // RFC 3261 §26.2.2: `sips:...;transport=tcp` means TLS over TCP.
            (true, Some(_)) => Some(SipTransport::Tls),
            (_, other) => other,
        };
        self.transport = transport;
        if let Ok(ip) = bare.parse::<IpAddr>() {
            // §4.1: an IP literal uses UDP for SIP, TLS for SIPS; §4.2: the port given
            // or the transport's default.
            let transport = transport.unwrap_or(self.fallback_transport());
            let port = self.port.unwrap_or(transport.default_port());
            let target = ResolvedTarget { transport, addr: SocketAddr::new(ip, port), priority: 0, weight: 0 };
            return self.finish(Ok(Resolved { targets: vec![target], ttl: TTL_CAP }));
        }
        self.name = match absolute_name(host) {
            Ok(name) => name,
            Err(error) => return self.finish(Err(error)),
        };
        match (self.port, transport) {
            // §4.2: an explicit port means no SRV: A/AAAA of the name itself.
            (Some(port), _) => {
                let transport = transport.unwrap_or(self.fallback_transport());
                let candidate = Candidate { transport, host: self.name.clone(), port, priority: 0, weight: 0 };
                self.ask_addresses(vec![candidate], true);
            }
            // §4.2: a transport but no port: the SRV record of that transport.
            (None, Some(transport)) => {
                let service = Service { transport, srv_name: srv_name(transport, &self.name) };
                self.ask_srv(vec![service]);
            }
            // §4.1: neither: NAPTR decides the transport.
            (None, None) => {
                self.phase = Phase::Naptr;
                self.to_ask.push_back(Query { name: self.name.clone(), kind: RecordKind::Naptr });
            }
        }
    }

    /// All questions of the current phase are answered: decide and ask the next ones.
    fn advance(&mut self, random: &mut impl FnMut() -> u32) {
        let answers = std::mem::take(&mut self.answers);
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Naptr => {
                let mut services = self.services_from_naptr(&answers);
                if services.is_empty() {
                    services = self.services_without_naptr();
                }
                self.ask_srv(services);
            }
            Phase::Srv { services } => self.after_srv(&services, &answers, random),
            Phase::Address { candidates, of_the_name_itself } => {
                self.after_addresses(&candidates, of_the_name_itself, &answers);
            }
            Phase::Done => {}
        }
    }

    /// RFC 3263 §4.1: keep NAPTR records with flag "s" and a service we support (only
    /// SIPS ones for a SIPS target; a SIP target keeps SIPS too, since we speak TLS), in
    /// order then preference (RFC 3403 §4.1); each replacement is an SRV name.
    fn services_from_naptr(&mut self, answers: &[(Query, Answer)]) -> Vec<Service> {
        let mut kept: Vec<(u32, Naptr, SipTransport)> = Vec::new();
        for record in answers.iter().flat_map(|(_, answer)| records(answer)) {
            let RecordData::Naptr(naptr) = &record.data else { continue };
            if !naptr.flags.eq_ignore_ascii_case("s") {
                continue;
            }
            let Some(transport) = SipTransport::from_naptr_service(&naptr.services) else { continue };
            if (self.sips && transport != SipTransport::Tls) || is_root(&naptr.replacement) {
                continue;
            }
            kept.push((record.ttl, naptr.clone(), transport));
        }
        kept.sort_by_key(|(_, naptr, _)| (naptr.order, naptr.preference));
        let mut services: Vec<Service> = Vec::new();
        for (ttl, naptr, transport) in kept {
            self.saw_ttl(ttl);
            let srv_name = lower_absolute(&naptr.replacement);
            if !services.iter().any(|s| s.transport == transport && s.srv_name == srv_name) {
                services.push(Service { transport, srv_name });
            }
        }
        services
    }

    /// RFC 3263 §4.1 without NAPTR: "_sip" SRV names for a SIP target, "_sips" for a SIPS
    /// one, for the transports we support; UDP first as the SIP default.
    fn services_without_naptr(&self) -> Vec<Service> {
        let transports: &[SipTransport] =
            if self.sips { &[SipTransport::Tls] } else { &[SipTransport::Udp, SipTransport::Tcp] };
        transports.iter().map(|&transport| Service { transport, srv_name: srv_name(transport, &self.name) }).collect()
    }

    /// RFC 3263 §4.2 and RFC 2782: order each service's targets; none at all means A/AAAA
    /// of the name itself on the default port; only "." means the service is not offered.
    fn after_srv(&mut self, services: &[Service], answers: &[(Query, Answer)], random: &mut impl FnMut() -> u32) {
        let mut candidates = Vec::new();
        let mut declined = false;
        for service in services {
            let query = Query { name: service.srv_name.clone(), kind: RecordKind::Srv };
            let found: Vec<(u32, Srv)> = answers
                .iter()
                .filter(|(q, _)| *q == query)
                .flat_map(|(_, answer)| records(answer))
                .filter_map(|r| match &r.data {
                    RecordData::Srv(srv) => Some((r.ttl, srv.clone())),
                    _ => None,
                })
                .collect();
            // RFC 2782: "If there is precisely one SRV RR, and its Target is "." ... abort."
            if let [(ttl, only)] = found.as_slice()
                && is_root(&only.target)
            {
                self.saw_ttl(*ttl);
                declined = true;
                continue;
            }
            let mut usable = Vec::new();
            for (ttl, srv) in found {
                if !is_root(&srv.target) {
                    self.saw_ttl(ttl);
                    usable.push(srv);
                }
            }
            for srv in order_by_priority_and_weight(usable, random) {
                candidates.push(Candidate {
                    transport: service.transport,
                    host: lower_absolute(&srv.target),
                    port: srv.port,
                    priority: srv.priority,
                    weight: srv.weight,
                });
            }
        }
        if !candidates.is_empty() {
            return self.ask_addresses(candidates, false);
        }
        if declined {
            return self.finish(Err(DnsError::ServiceUnavailable { host: self.host.clone() }));
        }
        // §4.2: "If no SRV records were found, the client performs an A or AAAA record
        // lookup of the domain name"; the transport is the one given or found by NAPTR,
        // else UDP (TLS for SIPS), on its default port.
        let transport = self.transport.or(services.first().map(|s| s.transport)).unwrap_or(self.fallback_transport());
        let candidate =
            Candidate { transport, host: self.name.clone(), port: transport.default_port(), priority: 0, weight: 0 };
        self.ask_addresses(vec![candidate], true);
    }

    fn after_addresses(&mut self, candidates: &[Candidate], of_the_name_itself: bool, answers: &[(Query, Answer)]) {
        let mut targets: Vec<ResolvedTarget> = Vec::new();
        for candidate in candidates {
            for kind in [RecordKind::A, RecordKind::Aaaa] {
                let query = Query { name: candidate.host.clone(), kind };
                for (_, answer) in answers.iter().filter(|(q, _)| *q == query) {
                    for record in records(answer) {
                        let RecordData::Address(ip) = record.data else { continue };
                        if matches!((kind, ip), (RecordKind::A, IpAddr::V6(_)) | (RecordKind::Aaaa, IpAddr::V4(_))) {
                            continue;
                        }
                        self.saw_ttl(record.ttl);
                        let target = ResolvedTarget {
                            transport: candidate.transport,
                            addr: SocketAddr::new(ip, candidate.port),
                            priority: candidate.priority,
                            weight: candidate.weight,
                        };
                        if !targets.iter().any(|t| t.transport == target.transport && t.addr == target.addr) {
                            targets.push(target);
                        }
                    }
                }
            }
        }
        if !targets.is_empty() {
            let ttl = self.min_ttl.map_or(TTL_CAP, |s| Duration::from_secs(s.into())).clamp(TTL_FLOOR, TTL_CAP);
            return self.finish(Ok(Resolved { targets, ttl }));
        }
        let failure = answers.iter().find_map(|(query, answer)| match answer {
            Answer::Failed(failure) => Some((query, *failure)),
            _ => None,
        });
        let error = match failure {
            Some((query, failure)) => failure_error(&self.host, query, failure),
            None if of_the_name_itself && answers.iter().all(|(_, a)| matches!(a, Answer::NxDomain { .. })) => {
                DnsError::NxDomain { host: self.host.clone() }
            }
            None => DnsError::NoRecords { host: self.host.clone() },
        };
        self.finish(Err(error));
    }

    fn ask_srv(&mut self, services: Vec<Service>) {
        let mut asked = HashSet::new();
        for service in &services {
            if asked.insert(service.srv_name.clone()) {
                self.to_ask.push_back(Query { name: service.srv_name.clone(), kind: RecordKind::Srv });
            }
        }
        self.phase = Phase::Srv { services };
    }

    fn ask_addresses(&mut self, candidates: Vec<Candidate>, of_the_name_itself: bool) {
        let mut asked = HashSet::new();
        for candidate in &candidates {
            if asked.insert(candidate.host.clone()) {
                for kind in [RecordKind::A, RecordKind::Aaaa] {
                    self.to_ask.push_back(Query { name: candidate.host.clone(), kind });
                }
            }
        }
        self.phase = Phase::Address { candidates, of_the_name_itself };
    }

    fn finish(&mut self, outcome: Result<Resolved, DnsError>) {
        self.phase = Phase::Done;
        self.to_ask.clear();
        self.awaiting.clear();
        self.outcome = Some(outcome);
    }

    /// RFC 3263 §4.1: UDP for a SIP URI, TLS (over TCP) for a SIPS URI.
    fn fallback_transport(&self) -> SipTransport {
        if self.sips { SipTransport::Tls } else { SipTransport::Udp }
    }

    fn saw_ttl(&mut self, ttl: u32) {
        self.min_ttl = Some(self.min_ttl.map_or(ttl, |seen| seen.min(ttl)));
    }
}

/// The records of an answer; none for anything else.
fn records(answer: &Answer) -> &[Record] {
    match answer {
        Answer::Records(records) => records,
        _ => &[],
    }
}

fn failure_error(host: &str, query: &Query, failure: QueryFailure) -> DnsError {
    let (host, query) = (host.to_owned(), query.to_string());
    match failure {
        QueryFailure::Timeout => DnsError::Timeout { host, query },
        QueryFailure::ServerFailure { rcode } => DnsError::ServerFailure { host, query, rcode },
        QueryFailure::Unreachable => DnsError::Unreachable { host, query },
    }
}

fn srv_name(transport: SipTransport, name: &str) -> String {
    format!("{}.{name}", transport.srv_prefix())
}

fn is_root(name: &str) -> bool {
    name.is_empty() || name == "."
}

fn lower_absolute(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// A host name checked and made absolute: LDH labels (RFC 1123 §2.1) of 1 to 63 octets,
/// 253 in all (RFC 1035 §2.3.4); `.invalid` refused (RFC 6761 §6.4). Underscores are
/// allowed since SRV owner names carry them.
fn absolute_name(host: &str) -> Result<String, DnsError> {
    let relative = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let bad = || DnsError::BadName { host: host.to_owned() };
    if relative.is_empty() || relative.len() > 253 {
        return Err(bad());
    }
    for label in relative.split('.') {
        let ldh = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ldh {
            return Err(bad());
        }
    }
    if relative == "invalid" || relative.ends_with(".invalid") {
        return Err(DnsError::InvalidDomain { host: host.to_owned() });
    }
    Ok(format!("{relative}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn target(host: &str, port: Option<u16>, transport: Option<SipTransport>) -> Target {
        Target { host: host.into(), port, transport, sips: false }
    }

    fn sips(host: &str) -> Target {
        Target { host: host.into(), port: None, transport: None, sips: true }
    }

    fn naptr(ttl: u32, order: u16, preference: u16, flags: &str, services: &str, replacement: &str) -> Record {
        let naptr = Naptr {
            order,
            preference,
            flags: flags.into(),
            services: services.into(),
            replacement: replacement.into(),
        };
        Record { ttl, data: RecordData::Naptr(naptr) }
    }

    fn srv(ttl: u32, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record { ttl, data: RecordData::Srv(Srv { priority, weight, port, target: target.into() }) }
    }

    fn ip(ttl: u32, addr: &str) -> Record {
        Record { ttl, data: RecordData::Address(addr.parse().unwrap()) }
    }

    fn q(kind: RecordKind, name: &str) -> Query {
        Query { name: name.into(), kind }
    }

    /// A zone: answers by question; anything not listed is NXDOMAIN. Runs the machine to
    /// the end and returns the outcome with every question asked, in order.
    struct Zone {
        answers: HashMap<Query, Answer>,
    }

    impl Zone {
        fn new() -> Self {
            Self { answers: HashMap::new() }
        }

        fn with(mut self, kind: RecordKind, name: &str, records: Vec<Record>) -> Self {
            self.answers.insert(q(kind, name), Answer::Records(records));
            self
        }

        fn answer(mut self, kind: RecordKind, name: &str, answer: Answer) -> Self {
            self.answers.insert(q(kind, name), answer);
            self
        }

        fn resolve(&self, target: Target) -> (Result<Resolved, DnsError>, Vec<Query>) {
            let mut resolution = Resolution::new(target);
            let mut asked = Vec::new();
            let mut random = || 0u32;
            for _ in 0..10 {
                if let Some(outcome) = resolution.poll_outcome() {
                    return (outcome, asked);
                }
                let batch: Vec<Query> = std::iter::from_fn(|| resolution.poll_query()).collect();
                assert!(!batch.is_empty(), "neither finished nor asking: {resolution:?}");
                for query in batch {
                    let answer = self.answers.get(&query).cloned().unwrap_or(Answer::NxDomain { negative_ttl: None });
                    asked.push(query.clone());
                    resolution.handle_answer(&query, answer, &mut random);
                }
            }
            panic!("more than 10 rounds of questions");
        }
    }

    fn addrs(resolved: &Resolved) -> Vec<(SipTransport, String)> {
        resolved.targets.iter().map(|t| (t.transport, t.addr.to_string())).collect()
    }

    #[test]
    fn ip_literal_needs_no_query_and_takes_the_transport_default_port() {
        let (outcome, asked) = Zone::new().resolve(target("192.0.2.7", None, None));
        let resolved = outcome.unwrap();
        assert!(asked.is_empty());
        assert_eq!(addrs(&resolved), [(SipTransport::Udp, "192.0.2.7:5060".to_string())]);
        assert_eq!(resolved.ttl, TTL_CAP);

        let (outcome, _) = Zone::new().resolve(target("[2001:db8::1]", None, Some(SipTransport::Tls)));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Tls, "[2001:db8::1]:5061".to_string())]);
        let (outcome, _) = Zone::new().resolve(target("::1", Some(5080), Some(SipTransport::Tcp)));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Tcp, "[::1]:5080".to_string())]);
        let (outcome, _) = Zone::new().resolve(sips("10.0.0.1"));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Tls, "10.0.0.1:5061".to_string())]);
    }

    #[test]
    fn invalid_domain_is_refused_without_a_query() {
        for host in ["client.invalid", "X.INVALID.", "invalid"] {
            let (outcome, asked) = Zone::new().resolve(target(host, None, None));
            assert_eq!(outcome, Err(DnsError::InvalidDomain { host: host.into() }));
            assert!(asked.is_empty());
        }
    }

    #[test]
    fn malformed_names_are_refused_without_a_query() {
        let long_label = format!("{}.example.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for host in ["", ".", "a..b", "bad host", "sip:x.example.com", long_label.as_str(), long_name.as_str()] {
            let (outcome, asked) = Zone::new().resolve(target(host, None, None));
            assert_eq!(outcome, Err(DnsError::BadName { host: host.into() }), "{host:?}");
            assert!(asked.is_empty());
        }
    }

    #[test]
    fn sips_refuses_udp_and_turns_tcp_into_tls() {
        let mut refused = sips("example.com");
        refused.transport = Some(SipTransport::Udp);
        assert_eq!(Zone::new().resolve(refused).0, Err(DnsError::SipsOverUdp { host: "example.com".into() }));

        let mut tcp = sips("example.com");
        tcp.transport = Some(SipTransport::Tcp);
        let (_, asked) = Zone::new().resolve(tcp);
        assert_eq!(asked[0], q(RecordKind::Srv, "_sips._tcp.example.com."));
    }

    #[test]
    fn explicit_port_skips_naptr_and_srv() {
        let zone = Zone::new()
            .with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(60, 0, 0, 5070, "other.example.com.")])
            .with(RecordKind::A, "example.com.", vec![ip(300, "192.0.2.1")]);
        let (outcome, asked) = zone.resolve(target("Example.COM", Some(5080), None));
        assert_eq!(asked, [q(RecordKind::A, "example.com."), q(RecordKind::Aaaa, "example.com.")]);
        let resolved = outcome.unwrap();
        assert_eq!(addrs(&resolved), [(SipTransport::Udp, "192.0.2.1:5080".to_string())]);
        assert_eq!(resolved.ttl, Duration::from_secs(300));
    }

    #[test]
    fn explicit_transport_asks_only_its_srv_name() {
        let zone = Zone::new()
            .with(RecordKind::Srv, "_sip._tcp.example.com.", vec![srv(120, 10, 0, 5070, "pbx.example.com.")])
            .with(RecordKind::A, "pbx.example.com.", vec![ip(600, "192.0.2.5")]);
        let (outcome, asked) = zone.resolve(target("example.com", None, Some(SipTransport::Tcp)));
        assert_eq!(asked[0], q(RecordKind::Srv, "_sip._tcp.example.com."));
        let resolved = outcome.unwrap();
        assert_eq!(
            resolved.targets,
            [ResolvedTarget {
                transport: SipTransport::Tcp,
                addr: "192.0.2.5:5070".parse().unwrap(),
                priority: 10,
                weight: 0,
            }]
        );
        assert_eq!(resolved.ttl, Duration::from_secs(120));
    }

    #[test]
    fn naptr_picks_supported_services_in_order_then_preference() {
        let zone = Zone::new()
            .with(
                RecordKind::Naptr,
                "example.com.",
                vec![
                    naptr(900, 20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
                    naptr(900, 10, 20, "S", "sips+d2t", "_sips._tcp.example.com."),
                    naptr(900, 10, 10, "s", "SIP+D2T", "_sip._tcp.example.com."),
                    // Not ours: WebSocket, another flag, an empty replacement.
                    naptr(900, 1, 1, "s", "SIP+D2W", "_sip._ws.example.com."),
                    naptr(900, 1, 1, "u", "SIP+D2U", "_sip._udp.example.com."),
                    naptr(900, 1, 1, "s", "SIP+D2U", "."),
                ],
            )
            .with(RecordKind::Srv, "_sip._tcp.example.com.", vec![srv(300, 0, 0, 5060, "tcp.example.com.")])
            .with(RecordKind::Srv, "_sips._tcp.example.com.", vec![srv(300, 0, 0, 5061, "tls.example.com.")])
            .with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(300, 0, 0, 5060, "udp.example.com.")])
            .with(RecordKind::A, "tcp.example.com.", vec![ip(300, "192.0.2.1")])
            .with(RecordKind::A, "tls.example.com.", vec![ip(300, "192.0.2.2")])
            .with(RecordKind::A, "udp.example.com.", vec![ip(300, "192.0.2.3")]);
        let (outcome, asked) = zone.resolve(target("example.com", None, None));
        assert_eq!(asked[0], q(RecordKind::Naptr, "example.com."));
        assert_eq!(
            asked[1..4],
            [
                q(RecordKind::Srv, "_sip._tcp.example.com."),
                q(RecordKind::Srv, "_sips._tcp.example.com."),
                q(RecordKind::Srv, "_sip._udp.example.com."),
            ]
        );
        assert_eq!(
            addrs(&outcome.unwrap()),
            [
                (SipTransport::Tcp, "192.0.2.1:5060".to_string()),
                (SipTransport::Tls, "192.0.2.2:5061".to_string()),
                (SipTransport::Udp, "192.0.2.3:5060".to_string()),
            ]
        );
    }

    #[test]
    fn sips_target_keeps_only_sips_naptr_services() {
        let zone = Zone::new()
            .with(
                RecordKind::Naptr,
                "example.com.",
                vec![
                    naptr(60, 10, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
                    naptr(60, 20, 10, "s", "SIPS+D2T", "_sips._tcp.example.com."),
                ],
            )
            .with(RecordKind::Srv, "_sips._tcp.example.com.", vec![srv(60, 0, 0, 5061, "tls.example.com.")])
            .with(RecordKind::Aaaa, "tls.example.com.", vec![ip(60, "2001:db8::5")]);
        let (outcome, asked) = zone.resolve(sips("example.com"));
        assert!(!asked.contains(&q(RecordKind::Srv, "_sip._udp.example.com.")));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Tls, "[2001:db8::5]:5061".to_string())]);
    }

    #[test]
    fn without_naptr_srv_of_sip_transports_udp_first() {
        let zone = Zone::new()
            .answer(RecordKind::Naptr, "example.com.", Answer::NoData { negative_ttl: Some(30) })
            .with(RecordKind::Srv, "_sip._tcp.example.com.", vec![srv(300, 0, 0, 5060, "b.example.com.")])
            .with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(300, 0, 0, 5060, "a.example.com.")])
            .with(RecordKind::A, "a.example.com.", vec![ip(300, "192.0.2.1")])
            .with(RecordKind::A, "b.example.com.", vec![ip(300, "192.0.2.2")]);
        let (outcome, asked) = zone.resolve(target("example.com", None, None));
        assert_eq!(
            asked[1..3],
            [q(RecordKind::Srv, "_sip._udp.example.com."), q(RecordKind::Srv, "_sip._tcp.example.com.")]
        );
        let resolved = outcome.unwrap();
        assert_eq!(
            addrs(&resolved),
            [(SipTransport::Udp, "192.0.2.1:5060".to_string()), (SipTransport::Tcp, "192.0.2.2:5060".to_string()),]
        );
        // The NAPTR negative answer's TTL counts: a NAPTR added later is seen in 30 s.
        assert_eq!(resolved.ttl, Duration::from_secs(30));
    }

    #[test]
    fn without_naptr_a_sips_target_asks_only_sips_srv() {
        let (_, asked) = Zone::new().resolve(sips("example.com"));
        assert_eq!(asked[1], q(RecordKind::Srv, "_sips._tcp.example.com."));
        assert!(!asked.iter().any(|q| q.name.starts_with("_sip.")));
    }

    #[test]
    fn without_srv_falls_back_to_addresses_of_the_name_on_the_default_port() {
        let zone = Zone::new().with(RecordKind::A, "example.com.", vec![ip(3, "192.0.2.9")]).with(
            RecordKind::Aaaa,
            "example.com.",
            vec![ip(7200, "2001:db8::9")],
        );
        let (outcome, asked) = zone.resolve(target("example.com", None, None));
        assert_eq!(asked.last(), Some(&q(RecordKind::Aaaa, "example.com.")));
        let resolved = outcome.unwrap();
        assert_eq!(
            addrs(&resolved),
            [(SipTransport::Udp, "192.0.2.9:5060".to_string()), (SipTransport::Udp, "[2001:db8::9]:5060".to_string()),]
        );
        assert_eq!(resolved.ttl, TTL_FLOOR, "3 s is raised to the floor");

        let (outcome, _) = zone.resolve(target("example.com", None, Some(SipTransport::Tls)));
        assert_eq!(addrs(&outcome.unwrap())[0], (SipTransport::Tls, "192.0.2.9:5061".to_string()));
    }

    #[test]
    fn ttl_is_capped_at_an_hour() {
        let zone = Zone::new().with(RecordKind::A, "example.com.", vec![ip(86_400, "192.0.2.9")]);
        assert_eq!(zone.resolve(target("example.com", Some(5060), None)).0.unwrap().ttl, TTL_CAP);
    }

    #[test]
    fn ttl_is_the_smallest_along_the_chain() {
        let zone = Zone::new()
            .with(RecordKind::Naptr, "example.com.", vec![naptr(400, 1, 1, "s", "SIP+D2U", "_sip._udp.example.com.")])
            .with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(200, 0, 0, 5060, "a.example.com.")])
            .with(RecordKind::A, "a.example.com.", vec![ip(300, "192.0.2.1")]);
        assert_eq!(zone.resolve(target("example.com", None, None)).0.unwrap().ttl, Duration::from_secs(200));
    }

    #[test]
    fn srv_priorities_order_targets_and_carry_priority_and_weight() {
        let zone = Zone::new()
            .with(
                RecordKind::Srv,
                "_sip._udp.example.com.",
                vec![
                    srv(60, 20, 0, 5060, "backup.example.com."),
                    srv(60, 10, 60, 5062, "primary1.example.com."),
                    srv(60, 10, 40, 5064, "primary2.example.com."),
                ],
            )
            .with(RecordKind::A, "backup.example.com.", vec![ip(60, "192.0.2.3")])
            .with(RecordKind::A, "primary1.example.com.", vec![ip(60, "192.0.2.1")])
            .with(RecordKind::A, "primary2.example.com.", vec![ip(60, "192.0.2.2")]);
        // Draw 0: the first record of the priority-10 group (running sum 60 >= 0).
        let resolved = zone.resolve(target("example.com", None, Some(SipTransport::Udp))).0.unwrap();
        let summary: Vec<(String, u16, u16)> =
            resolved.targets.iter().map(|t| (t.addr.to_string(), t.priority, t.weight)).collect();
        assert_eq!(
            summary,
            [
                ("192.0.2.1:5062".to_string(), 10, 60),
                ("192.0.2.2:5064".to_string(), 10, 40),
                ("192.0.2.3:5060".to_string(), 20, 0),
            ]
        );
    }

    #[test]
    fn single_dot_target_means_service_unavailable() {
        let zone = Zone::new().with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(60, 0, 0, 0, ".")]);
        let (outcome, asked) = zone.resolve(target("example.com", None, Some(SipTransport::Udp)));
        assert_eq!(outcome, Err(DnsError::ServiceUnavailable { host: "example.com".into() }));
        assert_eq!(asked.len(), 1, "no A/AAAA fallback when the zone says no");
    }

    #[test]
    fn a_declined_transport_does_not_hide_another_one() {
        let zone = Zone::new()
            .with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(60, 0, 0, 0, ".")])
            .with(RecordKind::Srv, "_sip._tcp.example.com.", vec![srv(60, 0, 0, 5060, "tcp.example.com.")])
            .with(RecordKind::A, "tcp.example.com.", vec![ip(60, "192.0.2.4")]);
        let (outcome, _) = zone.resolve(target("example.com", None, None));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Tcp, "192.0.2.4:5060".to_string())]);
    }

    #[test]
    fn nxdomain_names_the_host() {
        let (outcome, asked) = Zone::new().resolve(target("nowhere.example", None, None));
        let error = outcome.unwrap_err();
        assert_eq!(error, DnsError::NxDomain { host: "nowhere.example".into() });
        assert!(error.to_string().contains("nowhere.example"), "{error}");
        // NAPTR, two SRV names, A and AAAA.
        assert_eq!(asked.len(), 5);
    }

    #[test]
    fn name_without_addresses_is_no_records() {
        let zone = Zone::new().answer(RecordKind::A, "example.com.", Answer::NoData { negative_ttl: None });
        let outcome = zone.resolve(target("example.com", Some(5060), None)).0;
        assert_eq!(outcome, Err(DnsError::NoRecords { host: "example.com".into() }));

        // SRV targets that do not exist are no records too, not NXDOMAIN of the host.
        let zone =
            Zone::new().with(RecordKind::Srv, "_sip._udp.example.com.", vec![srv(60, 0, 0, 5060, "gone.example.com.")]);
        let outcome = zone.resolve(target("example.com", None, Some(SipTransport::Udp))).0;
        assert_eq!(outcome, Err(DnsError::NoRecords { host: "example.com".into() }));
    }

    #[test]
    fn naptr_timeout_stops_the_resolution() {
        let zone = Zone::new().answer(RecordKind::Naptr, "example.com.", Answer::Failed(QueryFailure::Timeout));
        let (outcome, asked) = zone.resolve(target("example.com", None, None));
        let error = outcome.unwrap_err();
        assert_eq!(error, DnsError::Timeout { host: "example.com".into(), query: "NAPTR example.com.".into() });
        assert_eq!(error.to_string(), "example.com: DNS query NAPTR example.com. timed out");
        assert_eq!(asked.len(), 1);
    }

    #[test]
    fn failed_aaaa_does_not_lose_the_a_answer() {
        let zone = Zone::new().with(RecordKind::A, "example.com.", vec![ip(60, "192.0.2.1")]).answer(
            RecordKind::Aaaa,
            "example.com.",
            Answer::Failed(QueryFailure::ServerFailure { rcode: 2 }),
        );
        let (outcome, _) = zone.resolve(target("example.com", Some(5060), None));
        assert_eq!(addrs(&outcome.unwrap()), [(SipTransport::Udp, "192.0.2.1:5060".to_string())]);

        let zone =
            Zone::new().answer(RecordKind::A, "example.com.", Answer::Failed(QueryFailure::ServerFailure { rcode: 2 }));
        let error = zone.resolve(target("example.com", Some(5060), None)).0.unwrap_err();
        assert_eq!(error.to_string(), "example.com: DNS server answered SERVFAIL (RCODE 2) to A example.com.");
    }

    #[test]
    fn duplicate_addresses_are_tried_once() {
        let zone = Zone::new()
            .with(
                RecordKind::Srv,
                "_sip._udp.example.com.",
                vec![srv(60, 1, 0, 5060, "a.example.com."), srv(60, 2, 0, 5060, "b.example.com.")],
            )
            .with(RecordKind::A, "a.example.com.", vec![ip(60, "192.0.2.1")])
            .with(RecordKind::A, "b.example.com.", vec![ip(60, "192.0.2.1"), ip(60, "192.0.2.2")]);
        let (outcome, _) = zone.resolve(target("example.com", None, Some(SipTransport::Udp)));
        assert_eq!(
            addrs(&outcome.unwrap()),
            [(SipTransport::Udp, "192.0.2.1:5060".to_string()), (SipTransport::Udp, "192.0.2.2:5060".to_string()),]
        );
    }

    #[test]
    fn stray_answers_are_ignored() {
        let mut resolution = Resolution::new(target("example.com", Some(5060), None));
        let first = resolution.poll_query().unwrap();
        let stray = q(RecordKind::Srv, "_sip._udp.example.com.");
        resolution.handle_answer(&stray, Answer::Failed(QueryFailure::Timeout), &mut || 0);
        resolution.handle_answer(&first, Answer::Records(vec![ip(60, "192.0.2.1")]), &mut || 0);
        // Answering the same question twice changes nothing.
        resolution.handle_answer(&first, Answer::Failed(QueryFailure::Timeout), &mut || 0);
        assert!(resolution.poll_outcome().is_none(), "AAAA still outstanding");
        let second = resolution.poll_query().unwrap();
        resolution.handle_answer(&second, Answer::NoData { negative_ttl: None }, &mut || 0);
        let resolved = resolution.poll_outcome().unwrap().unwrap();
        assert_eq!(addrs(&resolved), [(SipTransport::Udp, "192.0.2.1:5060".to_string())]);
        assert!(resolution.poll_outcome().is_none(), "the outcome is given once");
        assert!(resolution.poll_query().is_none());
    }
}

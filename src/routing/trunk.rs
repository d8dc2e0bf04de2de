//! Trunks as configured: where to send (targets with RFC 2782 priority and weight), how, with
//! which credentials and identity, and which source addresses are the trunk's (the IP ACL).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// RFC 3261 §18.1.1: a request larger than this, with the path MTU unknown, must go over a
/// congestion-controlled transport.
pub const LARGE_REQUEST: usize = 1300;

/// How long a target may stay silent before the next one is tried, when the config says nothing.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A SIP trunk: a carrier gateway, Asterisk or FreeSWITCH that calls leave and arrive through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Unique; rules name their trunk group with it.
    pub name: String,
    /// Where requests go, ordered per call by [`crate::routing::RoutingTable::order_targets`].
    pub targets: Vec<TrunkTarget>,
    pub transport: TrunkTransport,
    /// A proxy every request to this trunk goes through (a pre-loaded Route, RFC 3261 §8.1.2).
    pub outbound_proxy: Option<String>,
    /// Answers the trunk's digest challenges (401/407), and registers if `register`.
    pub credentials: Option<Credentials>,
    /// Keep a registration with the trunk (RFC 3261 §10.2) so it sends our DIDs to us.
    pub register: bool,
    /// Calls at once through this trunk; a call beyond it fails over, or gets 503.
    pub max_calls: Option<usize>,
    /// How long a target may stay without a provisional response before the next is tried.
    pub failover_timeout: Duration,
    /// The From user part toward the trunk, when the carrier wants its account number there.
    pub from_user: Option<String>,
    /// The P-Asserted-Identity value (RFC 3325) the carrier bills and presents.
    pub asserted_identity: Option<String>,
    /// Source addresses whose requests are this trunk's (calls to our DIDs).
    pub inbound_sources: Vec<Cidr>,
    /// What to do with a large request when `transport` is UDP.
    pub large_message: LargeMessage,
    /// Whether rtpengine sits between a browser and this trunk; `None` is the default,
    /// bridge when rtpengine is configured.
    pub media: Option<MediaMode>,
    /// Codec encoding names the trunk takes; empty means whatever is offered.
    pub codecs: Vec<String>,
}

/// How a trunk's media meets a browser's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaMode {
    /// rtpengine bridges WebRTC (ICE, DTLS-SRTP) to plain RTP/AVP.
    Bridge,
    /// The SDP passes untouched: the trunk speaks WebRTC (Asterisk with webrtc=yes).
    Passthrough,
}

/// One place a trunk's requests can go. With no port and a host name, the address comes from
/// DNS (RFC 3263: NAPTR, SRV, A); with no port and an IP, the transport's default port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrunkTarget {
    pub host: String,
    pub port: Option<u16>,
    /// Lower is tried first (RFC 2782).
    pub priority: u16,
    /// Share of calls among targets of one priority (RFC 2782); 0 everywhere keeps the written
    /// order.
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// A request too large for UDP (RFC 3261 §18.1.1) on a UDP trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LargeMessage {
    /// Send it over TCP to the same target, as §18.1.1 requires.
    #[default]
    Tcp,
    /// Send it over UDP anyway (IP fragments), for trunks that do not listen on TCP.
    Send,
}

/// Digest credentials toward a trunk. Debug output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Answer only challenges of this realm; any realm when `None`.
    pub realm: Option<String>,
}

/// An address range `203.0.113.0/24` or `2001:db8::/32`; a bare address is a single host.
/// Bits past the prefix length are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why an address range cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("address range {0:?}: not an IP address")]
    Address(String),
    #[error("address range {0:?}: the prefix length is not a number")]
    Prefix(String),
    #[error("address range {text:?}: prefix length longer than {max}")]
    PrefixTooLong { text: String, max: u8 },
}

impl Trunk {
    /// A trunk with these targets and the defaults: UDP, no outbound proxy, no credentials, no
    /// registration, no call limit, [`DEFAULT_FAILOVER_TIMEOUT`], no identity overrides, no
    /// inbound sources, large requests over TCP.
    pub fn new(name: impl Into<String>, targets: Vec<TrunkTarget>) -> Self {
        Self {
            name: name.into(),
            targets,
            transport: TrunkTransport::Udp,
            outbound_proxy: None,
            credentials: None,
            register: false,
            max_calls: None,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            from_user: None,
            asserted_identity: None,
            inbound_sources: Vec::new(),
            large_message: LargeMessage::Tcp,
            media: None,
            codecs: Vec::new(),
        }
    }

    /// Whether a request from `ip` is this trunk's.
    pub fn accepts_source(&self, ip: IpAddr) -> bool {
        self.inbound_sources.iter().any(|range| range.contains(ip))
    }

    /// The transport for a request of `len` bytes: a UDP trunk switches to TCP above
    /// [`LARGE_REQUEST`] (RFC 3261 §18.1.1) unless told to [`LargeMessage::Send`].
    pub fn transport_for(&self, len: usize) -> TrunkTransport {
        match (self.transport, self.large_message) {
            (TrunkTransport::Udp, LargeMessage::Tcp) if len > LARGE_REQUEST => TrunkTransport::Tcp,
            (transport, _) => transport,
        }
    }
}

impl TrunkTarget {
    /// A target at `host`, priority 0, weight 0.
    pub fn new(host: impl Into<String>, port: Option<u16>) -> Self {
        Self { host: host.into(), port, priority: 0, weight: 0 }
    }
}

impl fmt::Display for TrunkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl Credentials {
    /// Whether these answer a challenge from `realm`.
    pub fn answers(&self, realm: &str) -> bool {
        self.realm.as_deref().is_none_or(|ours| ours == realm)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("realm", &self.realm)
            .finish()
    }
}

impl FromStr for TrunkTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            "tls" => Ok(Self::Tls),
            _ => Err(format!("trunk transport {s:?}: expected udp, tcp or tls")),
        }
    }
}

impl fmt::Display for TrunkTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        })
    }
}

impl FromStr for LargeMessage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "send" => Ok(Self::Send),
            _ => Err(format!("large_message {s:?}: expected tcp or send")),
        }
    }
}

impl Cidr {
    /// A range of `prefix` leading bits of `addr`; `None` when the prefix is longer than the
    /// address (32 or 128).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Self { addr, prefix })
    }

    /// Exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, prefix: max_prefix(addr) }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (a dual-stack socket's view of
    /// an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address(text.to_owned()))?;
        let Some(prefix) = prefix else { return Ok(Self::host(addr)) };
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Prefix(text.to_owned()))?;
        Self::new(addr, prefix).ok_or_else(|| CidrError::PrefixTooLong { text: text.to_owned(), max: max_prefix(addr) })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// RFC 2782's order: ascending priority; within a priority, weighted random selection without
/// replacement (weight-0 targets first in the running sum, so they are picked only when the
/// draw is 0). Calls `random` once per choice that is still open.
pub(crate) fn weighted_order(targets: &[TrunkTarget], random: &mut impl FnMut() -> u32) -> Vec<TrunkTarget> {
    let mut sorted: Vec<&TrunkTarget> = targets.iter().collect();
    // Stable: targets of one priority keep the written order until weights reorder them.
    sorted.sort_by_key(|t| t.priority);
    let mut ordered = Vec::with_capacity(targets.len());
    for group in sorted.chunk_by(|a, b| a.priority == b.priority) {
        let (mut pool, weighted): (Vec<&TrunkTarget>, Vec<&TrunkTarget>) =
            group.iter().copied().partition(|t| t.weight == 0);
        pool.extend(weighted);
        while pool.len() > 1 {
            let total: u64 = pool.iter().map(|t| u64::from(t.weight)).sum();
            let draw = u64::from(random()) % (total + 1);
            let mut running = 0;
            // The running sum reaches `total` >= `draw` at the last target, so one is found.
            let index = pool
                .iter()
                .position(|t| {
                    running += u64::from(t.weight);
                    running >= draw
                })
                .unwrap_or(0);
            ordered.push(pool.remove(index).clone());
        }
        ordered.extend(pool.into_iter().cloned());
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, priority: u16, weight: u16) -> TrunkTarget {
        TrunkTarget { priority, weight, ..TrunkTarget::new(host, None) }
    }

    fn hosts(targets: &[TrunkTarget]) -> Vec<&str> {
        targets.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn cidr_contains_addresses_of_its_prefix_only() {
        let range: Cidr = "203.0.113.0/24".parse().unwrap();
        assert!(range.contains("203.0.113.77".parse().unwrap()));
        assert!(!range.contains("203.0.114.1".parse().unwrap()));
        assert!(!range.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn cidr_bare_address_is_one_host_and_mapped_ipv4_counts_as_ipv4() {
        let host: Cidr = "198.51.100.7".parse().unwrap();
        assert_eq!(host.prefix(), 32);
        assert!(host.contains("::ffff:198.51.100.7".parse().unwrap()));
        assert!(!host.contains("198.51.100.8".parse().unwrap()));
    }

    #[test]
    fn cidr_errors_name_the_range() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { text: "10.0.0.0/33".into(), max: 32 })
        );
        assert_eq!("10.0.0/8".parse::<Cidr>(), Err(CidrError::Address("10.0.0/8".into())));
        assert_eq!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::Prefix("10.0.0.0/x".into())));
        assert_eq!(Cidr::host("10.0.0.1".parse().unwrap()).to_string(), "10.0.0.1/32");
    }

    #[test]
    fn udp_trunk_switches_large_requests_to_tcp_per_rfc3261_18_1_1() {
        let mut trunk = Trunk::new("carrier", vec![TrunkTarget::new("sip.example.net", None)]);
        assert_eq!(trunk.transport_for(LARGE_REQUEST), TrunkTransport::Udp);
        assert_eq!(trunk.transport_for(LARGE_REQUEST + 1), TrunkTransport::Tcp);
        trunk.large_message = LargeMessage::Send;
        assert_eq!(trunk.transport_for(4000), TrunkTransport::Udp);
        trunk.transport = TrunkTransport::Tls;
        assert_eq!(trunk.transport_for(4000), TrunkTransport::Tls);
    }

    #[test]
    fn credentials_answer_their_realm_and_hide_the_password() {
        let mut credentials = Credentials { username: "acct".into(), password: "s3cret".into(), realm: None };
        assert!(credentials.answers("anything"));
        credentials.realm = Some("sip.example.net".into());
        assert!(credentials.answers("sip.example.net") && !credentials.answers("other"));
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }

    #[test]
    fn rfc2782_lower_priority_first_whatever_the_draws() {
        let targets = [target("b1", 20, 0), target("a1", 10, 5), target("a2", 10, 5), target("b2", 20, 0)];
        let mut draws = [u32::MAX; 8].into_iter();
        let ordered = weighted_order(&targets, &mut || draws.next().unwrap_or(0));
        let priorities: Vec<u16> = ordered.iter().map(|t| t.priority).collect();
        assert_eq!(priorities, [10, 10, 20, 20]);
    }

    #[test]
    fn rfc2782_weight_picks_the_target_whose_running_sum_reaches_the_draw() {
        // Weights 10, 30, 60: running sums 10, 40, 100; draws are taken modulo total + 1.
        let targets = [target("a", 0, 10), target("b", 0, 30), target("c", 0, 60)];
        let mut draws = [50, 5].into_iter();
        let ordered = weighted_order(&targets, &mut || draws.next().unwrap_or(0));
        // 50 → c (sum 100); then a, b with sums 10, 40: 5 → a; b is left.
        assert_eq!(hosts(&ordered), ["c", "a", "b"]);
        let mut draws = [10, 40].into_iter();
        let ordered = weighted_order(&targets, &mut || draws.next().unwrap_or(0));
        assert_eq!(hosts(&ordered), ["a", "c", "b"]);
    }

    #[test]
    fn rfc2782_all_zero_weights_keep_the_written_order() {
        let targets = [target("first", 0, 0), target("second", 0, 0), target("third", 0, 0)];
        let ordered = weighted_order(&targets, &mut || 12345);
        assert_eq!(hosts(&ordered), ["first", "second", "third"]);
    }
}

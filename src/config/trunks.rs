//! The `[[trunk]]`, `[[route]]` and `[[did]]` tables of the configuration file, and their
//! translation into a checked [`RoutingTable`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::routing::{
    Cidr, Credentials, DEFAULT_FAILOVER_TIMEOUT, Did, LargeMessage, MediaMode, NumberPattern, OutboundRule,
    RoutingTable, Trunk, TrunkTarget, TrunkTransport, UserPolicy,
};

/// A trunk as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    pub targets: Vec<TargetConfig>,
    /// `udp`, `tcp` or `tls`.
    #[serde(default = "udp")]
    pub transport: String,
    pub outbound_proxy: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub realm: Option<String>,
    #[serde(default)]
    pub register: bool,
    pub max_calls: Option<usize>,
    #[serde(default = "failover_timeout", with = "humantime_serde")]
    pub failover_timeout: Duration,
    pub from_user: Option<String>,
    pub asserted_identity: Option<String>,
    /// Addresses or CIDR ranges whose requests are this trunk's (trusted, no digest).
    #[serde(default)]
    pub inbound_sources: Vec<String>,
    /// `tcp` (RFC 3261 §18.1.1 switch for requests over 1300 bytes) or `send`.
    #[serde(default = "tcp")]
    pub large_message: String,
    /// `bridge` (rtpengine between a browser and this plain-RTP trunk; the default when
    /// `[media] rtpengine` is set) or `passthrough` (the trunk speaks WebRTC itself).
    pub media: Option<String>,
    /// Codecs this trunk takes (`PCMU`, `PCMA`, `G722`, `opus`, ...): a bridged offer
    /// carries only these. Empty: all the browser offers.
    #[serde(default)]
    pub codecs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub priority: u16,
    #[serde(default = "weight")]
    pub weight: u16,
}

/// An outbound rule: numbers matching `prefix` (or the `pattern`) go to `trunks` in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub strip: usize,
    #[serde(default)]
    pub prepend: String,
    pub e164: Option<String>,
    pub trunks: Vec<String>,
}

/// An inbound number and the users it rings together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidConfig {
    pub number: String,
    pub users: Vec<String>,
}

fn udp() -> String {
    "udp".into()
}
fn tcp() -> String {
    "tcp".into()
}
fn failover_timeout() -> Duration {
    DEFAULT_FAILOVER_TIMEOUT
}
fn weight() -> u16 {
    1
}

/// Builds and checks the routing table; every problem is one line naming what it is about.
pub fn routing_table(
    trunks: &[TrunkConfig],
    routes: &[RouteConfig],
    dids: &[DidConfig],
    policies: Vec<(String, UserPolicy)>,
) -> Result<RoutingTable, Vec<String>> {
    let mut problems = Vec::new();
    let mut built_trunks = Vec::new();
    for t in trunks {
        let targets = t
            .targets
            .iter()
            .map(|x| TrunkTarget { host: x.host.clone(), port: x.port, priority: x.priority, weight: x.weight })
            .collect();
        let mut trunk = Trunk::new(t.name.clone(), targets);
        match t.transport.parse::<TrunkTransport>() {
            Ok(tr) => trunk.transport = tr,
            Err(_) => {
                problems.push(format!("trunk \"{}\": transport `{}` is not udp, tcp or tls", t.name, t.transport))
            }
        }
        match t.large_message.parse::<LargeMessage>() {
            Ok(l) => trunk.large_message = l,
            Err(_) => {
                problems.push(format!("trunk \"{}\": large_message `{}` is not tcp or send", t.name, t.large_message))
            }
        }
        for source in &t.inbound_sources {
            match source.parse::<Cidr>() {
                Ok(c) => trunk.inbound_sources.push(c),
                Err(e) => problems.push(format!("trunk \"{}\": inbound_sources: {e}", t.name)),
            }
        }
        trunk.credentials = match (&t.username, &t.password) {
            (Some(u), Some(p)) => {
                Some(Credentials { username: u.clone(), password: p.clone(), realm: t.realm.clone() })
            }
            (None, None) => None,
            _ => {
                problems.push(format!("trunk \"{}\": set username and password together", t.name));
                None
            }
        };
        trunk.outbound_proxy = t.outbound_proxy.clone();
        trunk.register = t.register;
        trunk.max_calls = t.max_calls;
        trunk.failover_timeout = t.failover_timeout;
        trunk.from_user = t.from_user.clone();
        trunk.asserted_identity = t.asserted_identity.clone();
        trunk.media = match t.media.as_deref() {
            None => None,
            Some(m) if m.eq_ignore_ascii_case("bridge") => Some(MediaMode::Bridge),
            Some(m) if m.eq_ignore_ascii_case("passthrough") => Some(MediaMode::Passthrough),
            Some(m) => {
                problems.push(format!("trunk \"{}\": media `{m}` is not bridge or passthrough", t.name));
                None
            }
        };
        trunk.codecs = t.codecs.clone();
        built_trunks.push(trunk);
    }
    let mut rules = Vec::new();
    for r in routes {
        match NumberPattern::parse(&r.pattern) {
            Ok(pattern) => rules.push(OutboundRule {
                name: r.name.clone(),
                pattern,
                strip: r.strip,
                prepend: r.prepend.clone(),
                e164: r.e164.clone(),
                trunks: r.trunks.clone(),
            }),
            Err(e) => problems.push(format!("route \"{}\": {e}", r.name)),
        }
    }
    let mut built_dids = Vec::new();
    for d in dids {
        match NumberPattern::parse(&d.number) {
            Ok(number) => built_dids.push(Did { number, users: d.users.clone() }),
            Err(e) => problems.push(format!("did: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    RoutingTable::new(built_trunks, rules, built_dids, policies)
}

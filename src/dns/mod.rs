//! L6: turning trunk host names into addresses (RFC 3263 §4: NAPTR, SRV, A/AAAA).
//!
//! The decisions live in [`rfc3263`], a sans-IO state machine tested without a network.
//! This file is the thin async shell the driver uses: it asks hickory-resolver the
//! machine's questions, over UDP with TCP on truncation, to the configured servers (or
//! those of `/etc/resolv.conf`), and feeds the answers back. It never decides which target
//! to use and never resolves `.invalid` names. Caching is hickory's; [`Resolved::ttl`]
//! tells the engine when to ask again.

mod error;
pub mod rfc3263;
mod srv;

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver as HickoryResolver, TokioResolver};
use serde::{Deserialize, Serialize};

use crate::clock::Entropy;
use crate::transport::TransportKind;

pub use error::{DnsError, QueryFailure};
pub use rfc3263::{Resolution, Resolved, ResolvedTarget, SipTransport, TTL_CAP, TTL_FLOOR, Target};

/// `[dns]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Servers as `"ip:port"`; empty means the nameservers of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one server's answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many times a query is sent before it counts as timed out (at least 1).
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self { servers: Vec::new(), timeout: Duration::from_secs(2), attempts: 2 }
    }
}

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// `servers` was empty and the system configuration could not be read.
    #[error("reading the system DNS configuration (/etc/resolv.conf): {0}")]
    SystemConfig(#[source] NetError),
    #[error("building the DNS resolver: {0}")]
    Build(#[source] NetError),
    #[error("dns.attempts must be at least 1")]
    NoAttempts,
    #[error("dns.timeout must be more than zero")]
    ZeroTimeout,
}

/// Resolves SIP targets. Cheap to share behind an `Arc`; lookups run concurrently.
#[derive(Debug)]
pub struct Resolver {
    hickory: TokioResolver,
    /// Draws for the RFC 2782 weighted order. Locked only between awaits.
    entropy: Mutex<Entropy>,
}

impl Resolver {
    /// A resolver for `config`, with SRV draws seeded from the OS.
    pub fn new(config: &DnsConfig) -> Result<Self, DnsSetupError> {
        Self::with_entropy(config, Entropy::from_os())
    }

    /// As [`Self::new`], with the randomness given (tests fix the SRV order with a seed).
    pub fn with_entropy(config: &DnsConfig, entropy: Entropy) -> Result<Self, DnsSetupError> {
        if config.attempts == 0 {
            return Err(DnsSetupError::NoAttempts);
        }
        if config.timeout.is_zero() {
            return Err(DnsSetupError::ZeroTimeout);
        }
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsSetupError::SystemConfig)?
        } else {
            let servers = config.servers.iter().map(|server| name_server(*server)).collect();
            let mut builder = HickoryResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            );
            // The configured servers are the authority: /etc/hosts must not shadow them.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = config.timeout;
        // hickory counts retries after the first try.
        options.attempts = config.attempts - 1;
        // Keep hickory's cache no longer than we tell the engine to keep our answer, so a
        // refresh after `Resolved::ttl` really asks again.
        options.positive_max_ttl = Some(TTL_CAP);
        options.negative_max_ttl = Some(TTL_CAP);
        let hickory = builder.build().map_err(DnsSetupError::Build)?;
        Ok(Self { hickory, entropy: Mutex::new(entropy) })
    }

    /// Resolves a `sip:` target: `host` as in the URI (name, IPv4, `[IPv6]`), its port
    /// and `transport` parameter. See [`Self::resolve_target`] for `sips:`.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<SipTransport>,
    ) -> Result<Resolved, DnsError> {
        self.resolve_target(Target { host: host.to_owned(), port, transport, sips: false }).await
    }

    /// Runs RFC 3263 §4 for `target`: each round asks every pending question at once.
    pub async fn resolve_target(&self, target: Target) -> Result<Resolved, DnsError> {
        let host = target.host.clone();
        let mut resolution = Resolution::new(target);
        loop {
            if let Some(outcome) = resolution.poll_outcome() {
                return outcome;
            }
            let queries: Vec<rfc3263::Query> = std::iter::from_fn(|| resolution.poll_query()).collect();
            if queries.is_empty() {
                // The machine either finishes or asks; this is only reachable if it did
                // neither, which its tests rule out. Fail closed rather than loop.
                return Err(DnsError::NoRecords { host });
            }
            let answers = join_all(queries.iter().map(|query| self.ask(query))).await;
            let mut entropy = self.entropy.lock().unwrap_or_else(PoisonError::into_inner);
            let mut random = || u32::from_be_bytes(entropy.bytes());
            for (query, answer) in queries.iter().zip(answers) {
                resolution.handle_answer(query, answer, &mut random);
            }
        }
    }

    /// One question to hickory, its answer in the machine's terms.
    async fn ask(&self, query: &rfc3263::Query) -> rfc3263::Answer {
        use rfc3263::{Answer, Naptr, Record, RecordData, RecordKind, Srv};

        let record_type = match query.kind {
            RecordKind::Naptr => RecordType::NAPTR,
            RecordKind::Srv => RecordType::SRV,
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
        };
        let Ok(name) = Name::from_ascii(&query.name) else {
            // Names come from `absolute_name` or from DNS answers; one hickory cannot
            // parse cannot have records either.
            return Answer::NoData { negative_ttl: None };
        };
        let lookup = match self.hickory.lookup(name, record_type).await {
            Ok(lookup) => lookup,
            Err(error) => return failed_answer(error),
        };
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| {
                let data = match &record.data {
                    RData::NAPTR(naptr) => RecordData::Naptr(Naptr {
                        order: naptr.order,
                        preference: naptr.preference,
                        flags: String::from_utf8_lossy(&naptr.flags).into_owned(),
                        services: String::from_utf8_lossy(&naptr.services).into_owned(),
                        replacement: naptr.replacement.to_ascii(),
                    }),
                    RData::SRV(srv) => RecordData::Srv(Srv {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_ascii(),
                    }),
                    RData::A(a) => RecordData::Address(a.0.into()),
                    RData::AAAA(aaaa) => RecordData::Address(aaaa.0.into()),
                    _ => return None,
                };
                Some(Record { ttl: record.ttl, data })
            })
            .collect();
        Answer::Records(records)
    }
}

/// RFC 3263 names the SIP transports; the transport layer has the same three and more.
impl From<SipTransport> for TransportKind {
    fn from(transport: SipTransport) -> Self {
        match transport {
            SipTransport::Udp => Self::Udp,
            SipTransport::Tcp => Self::Tcp,
            SipTransport::Tls => Self::Tls,
        }
    }
}

/// A configured server: UDP, and TCP for truncated answers (RFC 7766 §5), on its port.
fn name_server(server: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
}

fn failed_answer(error: NetError) -> rfc3263::Answer {
    use rfc3263::Answer;

    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no_records)) => {
            if no_records.response_code == ResponseCode::NXDomain {
                Answer::NxDomain { negative_ttl: no_records.negative_ttl }
            } else {
                Answer::NoData { negative_ttl: no_records.negative_ttl }
            }
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Answer::Failed(QueryFailure::ServerFailure { rcode: u16::from(code) })
        }
        NetError::Timeout => Answer::Failed(QueryFailure::Timeout),
        _ => Answer::Failed(QueryFailure::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if a resolution can be spawned on a multi-threaded runtime: the
    /// entropy lock must never be held across an await.
    #[allow(dead_code)]
    fn resolution_is_send(resolver: &Resolver) -> impl Future<Output = Result<Resolved, DnsError>> + Send + '_ {
        resolver.resolve("trunk.example.com", None, None)
    }

    #[test]
    fn default_config_waits_two_seconds_twice() {
        let config = DnsConfig::default();
        assert!(config.servers.is_empty(), "the system's resolv.conf by default");
        assert_eq!((config.timeout, config.attempts), (Duration::from_secs(2), 2));
    }

    #[test]
    fn sip_transports_map_to_transport_kinds() {
        assert_eq!(TransportKind::from(SipTransport::Udp), TransportKind::Udp);
        assert_eq!(TransportKind::from(SipTransport::Tcp), TransportKind::Tcp);
        assert_eq!(TransportKind::from(SipTransport::Tls), TransportKind::Tls);
    }
}

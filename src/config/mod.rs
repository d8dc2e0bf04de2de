//! L7: the TOML file schema, loaded in layers: built-in defaults, then an optional file, then
//! `WEBTRUNK__SECTION__KEY` environment variables (lists comma-separated).
//!
//! Values are typed here, once: the rest of the program gets `SocketAddr` and `Duration`, never
//! strings. Every problem names its layer and key, and its line when it came from a file. This
//! module must not bind sockets, read certificates or create the state directory; it only checks
//! that configured files exist.

mod error;
mod layers;
pub mod trunks;
pub mod users;
mod validate;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Origin, Place};

/// Environment variables starting with `WEBTRUNK__` override the file.
pub const ENV_PREFIX: &str = "WEBTRUNK";

/// The whole file. Build one from [`Config::default`] and assign fields: the private provenance
/// makes struct literals impossible outside this module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub listen: Listen,
    pub tls: Tls,
    pub websocket: WebSocket,
    pub limits: Limits,
    pub registrar: Registrar,
    pub proxy: Proxy,
    pub log: Log,
    /// `[media]`: the rtpengine instances that bridge browsers to plain-RTP trunks.
    #[serde(default)]
    pub media: Media,
    /// `[dns]`: how trunk host names are resolved (RFC 3263).
    #[serde(default)]
    pub dns: crate::dns::DnsConfig,
    /// `[[trunk]]`: SIP trunks calls leave and arrive through.
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<trunks::TrunkConfig>,
    /// `[[route]]`: outbound rules, the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<trunks::RouteConfig>,
    /// `[[did]]`: inbound numbers and the users they ring.
    #[serde(default, rename = "did")]
    pub dids: Vec<trunks::DidConfig>,
    /// Which layer set each key, so that [`Config::validate`] can point at it.
    #[serde(skip)]
    provenance: layers::Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Domains we are the registrar and proxy for: the host part of our users' addresses.
    pub domains: Vec<String>,
    /// Persisted registrations and the generated self-signed certificate.
    pub state_dir: PathBuf,
    /// How long open calls and flows get to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Threads that run the sockets and the engine: 1 runs everything on one thread, 0
    /// one per CPU. The engine is one state machine whatever this says; more threads
    /// spread only TLS and WebSocket work, and cost every message a hand-over between
    /// threads (11 to 16% more CPU per call on 2 cores, `scripts/bench-compare`).
    pub threads: usize,
}

/// One socket per address; an empty list disables that transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
}

/// rtpengine's ng control addresses (`--listen-ng`), in order of preference; none means
/// no media bridging (every trunk then speaks WebRTC itself: `media = "passthrough"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    pub rtpengine: Vec<SocketAddr>,
    /// Wait for rtpengine's reply per try.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per instance before the next one.
    pub retries: u32,
    /// Calls between browsers through rtpengine as well, instead of peer to peer (for
    /// browsers behind NATs that ICE alone does not cross).
    pub bridge_browser_calls: bool,
}

impl Default for Media {
    fn default() -> Self {
        Self { rtpengine: Vec::new(), timeout: Duration::from_secs(1), retries: 2, bridge_browser_calls: false }
    }
}

/// PEM files for `tls` and `wss`; both `None` means the app generates a self-signed pair
/// into `server.state_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Certificates (PEM) trusted for TLS trunks besides the system's roots: a private CA
    /// or a trunk's self-signed certificate.
    pub trunk_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocket {
    /// HTTP paths accepted in the upgrade request (RFC 7118 §4); others are refused.
    pub paths: Vec<String>,
    /// RFC 6455 ping from our side, so NATs and dead browsers are noticed.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A flow silent this long is closed, and its bindings die with it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes in one SIP message; larger ones get 513 or a closed stream.
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// TLS and WebSocket handshakes must complete within this.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registrar {
    /// TOML file of users (`[[user]]` with `name` and `ha1_md5`/`ha1_sha256` or `password`);
    /// without one nobody can register.
    pub users_file: Option<PathBuf>,
    /// Digest realm; the first of `server.domains` when unset. HA1 hashes depend on it.
    pub realm: Option<String>,
    /// Digest algorithms offered, one challenge each, in this order (RFC 8760). Many
    /// phones and SIPp answer only the first challenge and only MD5, so MD5 leads by
    /// default. Over WebSocket MD5 always goes last, because JsSIP and SIP.js keep only
    /// the last challenge.
    pub digest_algorithms: Vec<String>,
    /// Granted when neither the Contact nor the request asks for an expiry.
    #[serde(with = "humantime_serde")]
    pub default_expires: Duration,
    /// Shorter requests (other than 0) get 423 Interval Too Brief.
    #[serde(with = "humantime_serde")]
    pub min_expires: Duration,
    /// Longer requests are granted this.
    #[serde(with = "humantime_serde")]
    pub max_expires: Duration,
    /// Bindings per address-of-record (devices and browser tabs of one user).
    pub max_contacts: usize,
    /// How long a digest nonce is good for; after it the client retries with stale=true.
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    /// Failed authentications from one IP within `auth_failure_window` before it is
    /// answered 503 for `auth_block_time`.
    pub max_auth_failures: u32,
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_block_time: Duration,
    /// Keep bindings of UDP/TCP/TLS devices in `state_dir` across restarts.
    pub persist_bindings: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// RFC 3261 T1, the round-trip estimate: UDP retransmissions start here and
    /// transactions time out after 64·T1.
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    /// RFC 3261 T2: the longest gap between retransmissions.
    #[serde(with = "humantime_serde")]
    pub t2: Duration,
    /// RFC 3261 T4: how long the network may hold a message.
    #[serde(with = "humantime_serde")]
    pub t4: Duration,
    /// RFC 3261 Timer C: how long a call may ring before the branch is cancelled.
    #[serde(with = "humantime_serde")]
    pub timer_c: Duration,
    /// A call longer than this is ended with a BYE to both sides.
    #[serde(with = "humantime_serde")]
    pub max_call_duration: Duration,
    /// When a browser's WebSocket dies mid-call, send the other side a BYE.
    pub bye_on_flow_loss: bool,
    /// OPTIONS ping to every trunk target this often; "0s" turns the pings off.
    #[serde(with = "humantime_serde")]
    pub trunk_health_interval: Duration,
    /// Unanswered pings in a row before a target is skipped by calls.
    pub trunk_health_misses: u32,
    /// Transactions in progress, including UDP ones kept 32 s after their answer to
    /// absorb retransmissions (Timer J): 500k carries about 7,800 REGISTERs a second over
    /// UDP. Past it new requests get 503.
    pub max_transactions: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `webtrunk=debug`.
    pub level: String,
}

impl Config {
    /// Built-in defaults, overlaid with `file` when given, then `WEBTRUNK__` environment
    /// variables. Reports the first problem only and does not run [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        layers::load(file, true).map_err(|mut problems| {
            // `layers::load` never returns an empty list of problems.
            problems.swap_remove(0)
        })
    }

    /// Every problem in `file` (for `webtrunk check-config FILE`): the structural ones (syntax,
    /// unknown keys, wrong types) if any, else everything [`Config::validate`] finds. The
    /// environment is ignored so that the verdict is about the file alone.
    /// The routing table the trunks, routes, DIDs and the users' dialling policies make.
    pub fn routing(&self) -> Result<crate::routing::RoutingTable, Vec<String>> {
        let policies = match &self.registrar.users_file {
            Some(path) => users::policies(path)?,
            None => Vec::new(),
        };
        trunks::routing_table(&self.trunks, &self.routes, &self.dids, policies)
    }

    pub fn check(file: &Path) -> Result<Self, Vec<ConfigError>> {
        let config = layers::load(Some(file), false)?;
        let problems = config.validate();
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".into()],
            state_dir: default_state_dir(),
            shutdown_timeout: Duration::from_secs(5),
            threads: 1,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        // Loopback only: exposing the service is a decision the operator writes down.
        let loopback = |port| vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        Self { udp: loopback(5060), tcp: loopback(5060), tls: loopback(5061), ws: loopback(8080), wss: loopback(8443) }
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            paths: vec!["/".into(), "/ws".into()],
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 65_536,
            max_headers: 128,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(5),
            tcp_idle_timeout: Duration::from_secs(600),
        }
    }
}

impl Default for Registrar {
    fn default() -> Self {
        Self {
            users_file: None,
            realm: None,
            digest_algorithms: vec!["MD5".into(), "SHA-256".into()],
            default_expires: Duration::from_secs(3600),
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(3600),
            max_contacts: 10,
            nonce_ttl: Duration::from_secs(300),
            max_auth_failures: 10,
            auth_failure_window: Duration::from_secs(60),
            auth_block_time: Duration::from_secs(60),
            persist_bindings: true,
        }
    }
}

impl Registrar {
    /// The digest realm in force.
    pub fn realm<'a>(&'a self, server: &'a Server) -> &'a str {
        self.realm.as_deref().or(server.domains.first().map(String::as_str)).unwrap_or("localhost")
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(180),
            max_call_duration: Duration::from_secs(6 * 3600),
            bye_on_flow_loss: true,
            trunk_health_interval: Duration::from_secs(30),
            trunk_health_misses: 3,
            max_transactions: 500_000,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// systemd's `StateDirectory=`, else the XDG base directory, else beside the working directory.
fn default_state_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    // systemd passes one absolute path per StateDirectory= entry, colon-separated; ours is first.
    if let Some(first) = var("STATE_DIRECTORY").and_then(|dirs| std::env::split_paths(&dirs).next()) {
        return first;
    }
    // The XDG spec says to ignore a relative XDG_STATE_HOME.
    if let Some(xdg) = var("XDG_STATE_HOME").map(PathBuf::from).filter(|dir| dir.is_absolute()) {
        return xdg.join("webtrunk");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".local/state/webtrunk");
    }
    PathBuf::from("webtrunk-state")
}

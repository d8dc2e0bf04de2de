//! L7: composition. Turns a [`Config`] into bound listeners, an engine and its driver,
//! and shuts them down in order: stop accepting, close flows (WebSocket with 1001), give
//! them a bounded time, stop the driver.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::{AuthConfig, Users};
use crate::clock::{self, Entropy};
use crate::config::{self, Config};
use crate::driver::{self, Transports};
use crate::engine::{Engine, EngineConfig, Stats, WallClock};
use crate::message;
use crate::registrar::RegistrarConfig;
use crate::transport::{self, Gate, ListenSpec, TransportError, TransportKind, WsPolicy, tls};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("users file: {}", .0.join("; "))]
    Users(Vec<String>),
    #[error("routing: {}", .0.join("; "))]
    Routing(Vec<String>),
    #[error("DNS: {0}")]
    Dns(#[from] crate::dns::DnsSetupError),
}

/// Transport events buffered between the socket tasks and the driver; when full, readers
/// wait, which pushes back on TCP peers and drops excess UDP in the kernel.
const EVENT_QUEUE: usize = 4096;

/// A running webtrunk.
#[derive(Debug)]
pub struct Server {
    bound: Vec<(TransportKind, SocketAddr)>,
    gate: Gate,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<Engine>,
    bindings_file: Option<std::path::PathBuf>,
}

impl Server {
    /// Binds every listener and starts the driver. Must run inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Self, AppError> {
        let listen = ListenSpec {
            udp: config.listen.udp.clone(),
            tcp: config.listen.tcp.clone(),
            tls: config.listen.tls.clone(),
            ws: config.listen.ws.clone(),
            wss: config.listen.wss.clone(),
        };
        let tls = if listen.tls.is_empty() && listen.wss.is_empty() {
            None
        } else {
            Some(tls::acceptor(&certificate_source(config))?)
        };
        let limits = transport::Limits {
            max_message_size: config.limits.max_message_size,
            max_connections: config.limits.max_connections,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            handshake_timeout: config.limits.handshake_timeout,
            stream_idle_timeout: config.limits.tcp_idle_timeout,
        };
        let ws = WsPolicy {
            paths: config.websocket.paths.clone(),
            ping_interval: config.websocket.ping_interval,
            idle_timeout: config.websocket.idle_timeout,
        };
        warn_if_file_limit_too_low(config.limits.max_connections);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tls_client = trunk_tls(config)?;
        let listeners = transport::listen(&listen, limits, tls, tls_client, ws, events_tx, shutdown_rx.clone()).await?;
        for (kind, addr) in &listeners.bound {
            tracing::info!(transport = %kind, %addr, "listening");
        }
        let users = match &config.registrar.users_file {
            Some(path) => config::users::load(path).map_err(AppError::Users)?,
            None => {
                tracing::warn!("no registrar.users_file: nobody can register");
                Users::default()
            }
        };
        let now = clock::now();
        let wall = WallClock { at: now, unix: clock::unix_time() };
        let mut engine_config = engine_config(config);
        engine_config.listen = listeners.bound.clone();
        engine_config.routing = config.routing().map_err(AppError::Routing)?;
        engine_config.health_interval = config.proxy.trunk_health_interval;
        engine_config.health_misses = config.proxy.trunk_health_misses;
        engine_config.media = engine_config_media(config);
        engine_config.bridge_browser_calls = config.media.bridge_browser_calls;
        engine_config.persist_bindings = config.registrar.persist_bindings;
        if config.media.bridge_browser_calls && engine_config.media.is_none() {
            return Err(AppError::Routing(vec!["media.bridge_browser_calls needs [media] rtpengine addresses".into()]));
        }
        if engine_config.media.is_none()
            && let Some(t) =
                config.trunks.iter().find(|t| t.media.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("bridge")))
        {
            return Err(AppError::Routing(vec![format!(
                "trunk \"{}\": media = \"bridge\" needs [media] rtpengine addresses",
                t.name
            )]));
        }
        let mut engine = Engine::new(engine_config, Entropy::from_os(), users, wall);
        let bindings_file = config.registrar.persist_bindings.then(|| config.server.state_dir.join("bindings.json"));
        if let Some(path) = &bindings_file {
            restore_bindings(&mut engine, path);
        }
        let media_socket = match &engine_config_media(config) {
            Some(media) => Some(std::sync::Arc::new(bind_media_socket(media).await?)),
            None => None,
        };
        let resolver = dns_resolver(config)?;
        let transports = Transports {
            media_socket,
            resolver,
            events: events_rx,
            udp_sockets: listeners.udp_sockets.clone(),
            outbound: listeners.outbound,
            bindings_file: bindings_file.clone(),
        };
        let driver = tokio::spawn(driver::run(engine, transports, shutdown_rx));
        Ok(Self { bound: listeners.bound, gate: listeners.gate, shutdown, driver, bindings_file })
    }

    pub fn bound(&self) -> &[(TransportKind, SocketAddr)] {
        &self.bound
    }

    /// The first address a transport listens on (port 0 resolved).
    pub fn addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.bound.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.gate.open()
    }

    /// Stops accepting, closes every flow and waits up to `grace` for them to go.
    pub async fn shutdown(self, grace: Duration) -> Stats {
        let _ = self.shutdown.send(true);
        let deadline = clock::now() + grace;
        while self.gate.open() > 0 && clock::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.gate.open();
        if left > 0 {
            tracing::warn!(connections = left, "shutdown grace time over; dropping the rest");
        }
        match self.driver.await {
            Ok(engine) => {
                if let Some(path) = &self.bindings_file {
                    // The last word: whatever changed since the last timed write.
                    if let Err(e) = driver::write_atomically(path, &engine.snapshot_bytes(clock::now())) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write bindings");
                    }
                }
                engine.stats()
            }
            Err(e) => {
                tracing::error!(error = %e, "driver task failed");
                Stats::default()
            }
        }
    }
}

fn engine_config(config: &Config) -> EngineConfig {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let registrar = &config.registrar;
    EngineConfig {
        domains: config.server.domains.clone(),
        limits: message::Limits {
            max_message_size: config.limits.max_message_size,
            max_headers: config.limits.max_headers,
        },
        registrar: RegistrarConfig {
            domains: config.server.domains.clone(),
            default_expires: secs(registrar.default_expires),
            min_expires: secs(registrar.min_expires),
            max_expires: secs(registrar.max_expires),
            max_contacts: registrar.max_contacts,
        },
        auth: AuthConfig {
            realm: registrar.realm(&config.server).to_string(),
            nonce_ttl: registrar.nonce_ttl,
            max_failures: registrar.max_auth_failures,
            failure_window: registrar.auth_failure_window,
            block_time: registrar.auth_block_time,
            algorithms: registrar
                .digest_algorithms
                .iter()
                .filter_map(|a| crate::auth::Algorithm::from_token(a))
                .collect(),
        },
        timers: crate::transaction::TimerConfig { t1: config.proxy.t1, t2: config.proxy.t2, t4: config.proxy.t4 },
        proxy: crate::engine::ProxySettings {
            timer_c: config.proxy.timer_c,
            max_call_duration: config.proxy.max_call_duration,
            bye_on_flow_loss: config.proxy.bye_on_flow_loss,
            max_transactions: config.proxy.max_transactions,
        },
        ..EngineConfig::default()
    }
}

/// Bindings of UDP/TCP devices from the last run. A missing file is a first start; an
/// unreadable one is reported and left for the operator (it will be overwritten).
fn restore_bindings(engine: &mut Engine, path: &std::path::Path) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read saved bindings");
            return;
        }
    };
    match engine.restore(clock::now(), &bytes) {
        Ok(n) => tracing::info!(bindings = n, path = %path.display(), "restored bindings"),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "saved bindings are not readable; starting empty"),
    }
}

/// Every connection is a file descriptor: a cap above the process's open-file limit
/// would fail at accept() under load instead of at the configured bound.
fn warn_if_file_limit_too_low(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    // Sockets for listeners, the state file and logs need a few more.
    const SPARE: usize = 64;
    if let Some(soft) = soft
        && soft < max_connections + SPARE
    {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "the open-file limit is below limits.max_connections; raise it (LimitNOFILE= in the unit, ulimit -n) or lower the cap"
        );
    }
}

/// rtpengine's settings, when any instance is configured.
fn engine_config_media(config: &Config) -> Option<crate::media::MediaConfig> {
    (!config.media.rtpengine.is_empty()).then(|| crate::media::MediaConfig {
        instances: config.media.rtpengine.clone(),
        timeout: config.media.timeout,
        retries: config.media.retries,
    })
}

/// A UDP socket toward rtpengine: on loopback when every instance is local.
async fn bind_media_socket(media: &crate::media::MediaConfig) -> Result<tokio::net::UdpSocket, AppError> {
    let local = media.instances.iter().all(|a| a.ip().is_loopback());
    let addr = if local { SocketAddr::from(([127, 0, 0, 1], 0)) } else { SocketAddr::from(([0, 0, 0, 0], 0)) };
    tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|source| AppError::Transport(TransportError::Bind { kind: TransportKind::Udp, addr, source }))
}

/// The resolver for trunk host names. Without a usable DNS configuration webtrunk still
/// starts when every trunk target is an IP address; otherwise it is an error.
fn dns_resolver(config: &Config) -> Result<Option<std::sync::Arc<crate::dns::Resolver>>, AppError> {
    let any_name = config
        .trunks
        .iter()
        .flat_map(|t| &t.targets)
        .any(|t| t.host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_err());
    match crate::dns::Resolver::new(&config.dns) {
        Ok(resolver) => Ok(Some(std::sync::Arc::new(resolver))),
        Err(error) if any_name => Err(AppError::Dns(error)),
        Err(error) => {
            tracing::warn!(%error, "no DNS resolver; trunk targets must be IP addresses");
            Ok(None)
        }
    }
}

/// The TLS client toward trunks, when any trunk uses TLS.
fn trunk_tls(config: &Config) -> Result<Option<tls::TlsConnector>, AppError> {
    let any_tls = config.trunks.iter().any(|t| t.transport.eq_ignore_ascii_case("tls"));
    if !any_tls {
        return Ok(None);
    }
    Ok(Some(tls::connector(config.tls.trunk_ca_file.as_deref())?))
}

fn certificate_source(config: &Config) -> tls::CertificateSource {
    match (&config.tls.certificate, &config.tls.private_key) {
        (Some(certificate), Some(private_key)) => {
            tls::CertificateSource::Files { certificate: certificate.clone(), private_key: private_key.clone() }
        }
        _ => {
            let mut names = config.server.domains.clone();
            names.push("localhost".into());
            names.extend(config.listen.tls.iter().chain(&config.listen.wss).map(|a| a.ip().to_string()));
            names.sort();
            names.dedup();
            tls::CertificateSource::SelfSigned { state_dir: config.server.state_dir.clone(), names }
        }
    }
}

/// Runs webtrunk until SIGTERM or SIGINT, then shuts down gracefully.
pub fn run(config: Config) -> Result<(), AppError> {
    let runtime = match config.server.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .map_err(AppError::Runtime)?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives while listeners bind still stops us
        // gracefully instead of killing the process.
        let stop = Signals::install()?;
        let server = Server::start(&config).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            domains = ?config.server.domains,
            threads = config.server.threads,
            "webtrunk started"
        );
        stop.wait().await;
        tracing::info!("shutting down");
        let stats = server.shutdown(config.server.shutdown_timeout).await;
        tracing::info!(received = stats.received, malformed = stats.malformed, sent = stats.sent, "stopped");
        Ok(())
    })
}

/// SIGTERM (systemd's stop) and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Result<Self, AppError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(AppError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(AppError::Signals)?,
        })
    }

    #[cfg(unix)]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    #[cfg(not(unix))]
    fn install() -> Result<Self, AppError> {
        Ok(Self {})
    }

    #[cfg(not(unix))]
    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

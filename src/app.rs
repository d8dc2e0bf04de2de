//! L7: composition. Turns a [`Config`] into bound listeners, an engine and its driver,
//! and shuts them down in order: stop accepting, close flows (WebSocket with 1001), give
//! them a bounded time, stop the driver.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::{self, Entropy};
use crate::config::Config;
use crate::driver::{self, Transports};
use crate::engine::{Engine, EngineConfig, Stats};
use crate::message;
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
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listeners = transport::listen(&listen, limits, tls, ws, events_tx, shutdown_rx.clone()).await?;
        for (kind, addr) in &listeners.bound {
            tracing::info!(transport = %kind, %addr, "listening");
        }
        let engine_config = EngineConfig {
            domains: config.server.domains.clone(),
            limits: message::Limits {
                max_message_size: config.limits.max_message_size,
                max_headers: config.limits.max_headers,
            },
            ..EngineConfig::default()
        };
        let engine = Engine::new(engine_config, Entropy::from_os());
        let transports = Transports { events: events_rx, udp_sockets: listeners.udp_sockets.clone() };
        let driver = tokio::spawn(driver::run(engine, transports, shutdown_rx));
        Ok(Self { bound: listeners.bound, gate: listeners.gate, shutdown, driver })
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
            Ok(engine) => engine.stats(),
            Err(e) => {
                tracing::error!(error = %e, "driver task failed");
                Stats::default()
            }
        }
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AppError::Runtime)?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives while listeners bind still stops us
        // gracefully instead of killing the process.
        let stop = Signals::install()?;
        let server = Server::start(&config).await?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), domains = ?config.server.domains, "webtrunk started");
        stop.wait().await;
        tracing::info!("shutting down");
        let stats = server.shutdown(config.server.shutdown_timeout).await;
        tracing::info!(received = stats.received, malformed = stats.malformed, sent = stats.responses_sent, "stopped");
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

//! L2: sockets. UDP, TCP, TLS, WS and WSS listeners turn bytes on the wire into
//! [`Event`]s for the driver and write [`Transmit`]s back out.
//!
//! Every connection is a *flow* with a [`FlowId`]; whatever is sent to that peer goes back
//! over that connection. This layer never dials a browser and never resolves a name: it
//! accepts, and dials only TCP and TLS connections toward addresses the engine names (trunks,
//! see [`Outbound`]). It answers RFC 5626 CRLFCRLF pings itself, pings WebSocket peers, and
//! bounds everything a peer can make it hold (message size, connections, handshake time,
//! idle time). It does not parse SIP beyond framing.

mod connect;
mod gate;
mod stream;
pub mod tls;
mod udp;
pub mod ws;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

pub use connect::Outbound;
pub use gate::Gate;
pub use udp::{DatagramReader, MAX_DATAGRAM};
pub use ws::WsPolicy;

/// The five transports of RFC 3261 §18 and RFC 7118.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    /// The `transport` token of a Via header (§20.42, RFC 7118 §5).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// The same in lower case, as a URI's `transport` parameter is usually written.
    pub fn transport_param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    pub fn is_connection(self) -> bool {
        self != Self::Udp
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// One connection, from accept to close. Ids are never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow-{}", self.0)
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub kind: TransportKind,
    /// The address of our socket that received it.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection it came over; `None` for UDP.
    pub flow: Option<FlowId>,
}

/// Where bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Back over a connection a peer opened.
    Flow(FlowId),
    /// A UDP datagram from our socket bound at `local`.
    Datagram { local: SocketAddr, remote: SocketAddr },
    /// Over a TCP or TLS connection of ours to `remote` (a trunk): the open one, or one
    /// dialled for it (RFC 3261 §18.1.1).
    Connection { kind: TransportKind, remote: SocketAddr },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flow(flow) => flow.fmt(f),
            Self::Datagram { remote, .. } => write!(f, "udp:{remote}"),
            Self::Connection { kind, remote } => write!(f, "{}:{remote}", kind.via_token().to_ascii_lowercase()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub bytes: Bytes,
}

/// What the transport tasks tell the driver.
#[derive(Debug)]
pub enum Event {
    Received {
        source: Source,
        bytes: Bytes,
    },
    FlowOpened {
        flow: FlowId,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
        sender: FlowSender,
        /// We opened it (toward a trunk) rather than accepted it.
        dialled: bool,
    },
    FlowClosed {
        flow: FlowId,
        reason: CloseReason,
    },
    /// A connection we dialled could not be opened; what was queued for it is dropped.
    DialFailed {
        kind: TransportKind,
        remote: SocketAddr,
        reason: String,
    },
}

/// Why a flow ended, for logs and for the layers that drop state with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    Idle,
    Shutdown,
    TooLarge,
    BadFraming(String),
    Io(String),
    Protocol(String),
    Overloaded,
    /// The server closed it (engine decision or a full send queue).
    Local,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("closed by peer"),
            Self::Idle => f.write_str("idle timeout"),
            Self::Shutdown => f.write_str("server shutting down"),
            Self::TooLarge => f.write_str("message too large"),
            Self::BadFraming(e) => write!(f, "unframeable stream: {e}"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Overloaded => f.write_str("peer not reading; send queue full"),
            Self::Local => f.write_str("closed by server"),
        }
    }
}

/// How the driver reaches a connection task.
#[derive(Debug, Clone)]
pub struct FlowSender {
    queue: mpsc::Sender<Bytes>,
    /// Separate from the queue so that a close gets through when the queue is full.
    close: Arc<tokio::sync::Notify>,
}

/// The connection task's end of a [`FlowSender`].
#[derive(Debug)]
pub(crate) struct FlowCommands {
    pub(crate) queue: mpsc::Receiver<Bytes>,
    pub(crate) close: Arc<tokio::sync::Notify>,
}

/// Messages queued for one slow peer before its flow is closed instead.
const FLOW_QUEUE: usize = 256;

impl FlowSender {
    pub(crate) fn channel() -> (Self, FlowCommands) {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let close = Arc::new(tokio::sync::Notify::new());
        (Self { queue: tx, close: close.clone() }, FlowCommands { queue: rx, close })
    }

    /// Queues bytes without waiting. `false` when the flow is gone or not keeping up (then
    /// it is closed: a peer that does not read must not make us buffer without bound).
    pub fn send(&self, bytes: Bytes) -> bool {
        match self.queue.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn close(&self) {
        self.close.notify_one();
    }
}

/// Bounds on what peers can make the transports hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// TLS and WebSocket handshakes must finish within this.
    pub handshake_timeout: Duration,
    /// A TCP/TLS connection with no bytes for this long is closed.
    pub stream_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// The addresses to listen on, per transport. An empty list turns a transport off.
#[derive(Debug, Clone, Default)]
pub struct ListenSpec {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {kind} on {addr}: {source}")]
    Bind { kind: TransportKind, addr: SocketAddr, source: std::io::Error },
    #[error("TLS or WSS listeners are configured but no certificate was loaded")]
    NoCertificate,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Everything the accept loops and connection tasks share.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) gate: Gate,
    pub(crate) shutdown: watch::Receiver<bool>,
    next_flow: Arc<AtomicU64>,
}

impl Shared {
    pub(crate) fn next_flow_id(&self) -> FlowId {
        FlowId(self.next_flow.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The bound listeners: their real addresses (port 0 resolved) and the UDP sockets the
/// driver sends datagrams from.
#[derive(Debug)]
pub struct Listeners {
    pub bound: Vec<(TransportKind, SocketAddr)>,
    pub udp_sockets: Vec<Arc<tokio::net::UdpSocket>>,
    pub gate: Gate,
    /// The dialler of connections toward trunks, for the driver.
    pub outbound: Outbound,
}

impl Listeners {
    /// The first bound address of a transport.
    pub fn addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.bound.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }
}

/// Binds every configured listener and spawns its accept or receive task. Binding
/// happens before anything is spawned, so a port in use fails startup cleanly.
pub async fn listen(
    spec: &ListenSpec,
    limits: Limits,
    tls: Option<tls::TlsAcceptor>,
    tls_client: Option<tls::TlsConnector>,
    ws: WsPolicy,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
) -> Result<Listeners, TransportError> {
    let gate = Gate::new(limits.max_connections, limits.max_connections_per_ip);
    let shared = Shared { events, limits: Arc::new(limits), gate: gate.clone(), shutdown, next_flow: Arc::default() };
    let ws = Arc::new(ws);
    let needs_tls = !spec.tls.is_empty() || !spec.wss.is_empty();
    if needs_tls && tls.is_none() {
        return Err(TransportError::NoCertificate);
    }

    let mut bound = Vec::new();
    let mut udp_sockets = Vec::new();
    for &addr in &spec.udp {
        let socket =
            udp::bind(addr).await.map_err(|source| TransportError::Bind { kind: TransportKind::Udp, addr, source })?;
        let socket = Arc::new(socket);
        bound.push((TransportKind::Udp, socket.local_addr().unwrap_or(addr)));
        udp_sockets.push(socket);
    }
    let mut tcp_listeners = Vec::new();
    for (kind, addrs) in [
        (TransportKind::Tcp, &spec.tcp),
        (TransportKind::Tls, &spec.tls),
        (TransportKind::Ws, &spec.ws),
        (TransportKind::Wss, &spec.wss),
    ] {
        for &addr in addrs {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| TransportError::Bind {
                kind,
                addr,
                source,
            })?;
            bound.push((kind, listener.local_addr().unwrap_or(addr)));
            tcp_listeners.push((kind, listener));
        }
    }

    // UDP sockets are read by the driver itself (see `DatagramReader`).
    for (kind, listener) in tcp_listeners {
        let accept = stream::Accept { kind, listener, tls: tls.clone(), ws: ws.clone(), shared: shared.clone() };
        tokio::spawn(accept.run());
    }
    let outbound = Outbound::new(shared, tls_client);
    Ok(Listeners { bound, udp_sockets, gate, outbound })
}

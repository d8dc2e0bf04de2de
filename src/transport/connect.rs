//! Connections we open: TCP and TLS toward trunks (RFC 3261 §18.1.1). One connection per
//! transport and address, dialled on first use and reused while it stays open; what is
//! sent while it is being dialled waits in a short queue. A connection that cannot be
//! opened is reported, so that the transactions waiting on it fail over at once instead of
//! at their timeout.
//!
//! Browsers are never dialled: the engine names only trunk addresses here.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::stream::Connection;
use super::{Event, FlowId, FlowSender, Shared, TransportKind, tls};

/// Messages held for one connection while it is dialled; more means the peer is not
/// answering, and they are dropped (the transactions retransmit or time out).
const DIAL_QUEUE: usize = 64;

/// The dialled connections of the process, owned by the driver.
pub struct Outbound {
    shared: Shared,
    tls: Option<tls::TlsConnector>,
    open: HashMap<(TransportKind, SocketAddr), (FlowId, FlowSender)>,
    by_flow: HashMap<FlowId, (TransportKind, SocketAddr)>,
    dialling: HashMap<(TransportKind, SocketAddr), Vec<Bytes>>,
    /// TLS server names learned from DNS (the name a trunk's address was found under);
    /// an address without one is checked as an IP address.
    names: HashMap<SocketAddr, String>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("tls", &self.tls.is_some())
            .field("open", &self.open.len())
            .field("dialling", &self.dialling.len())
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub(super) fn new(shared: Shared, tls: Option<tls::TlsConnector>) -> Self {
        Self {
            shared,
            tls,
            open: HashMap::new(),
            by_flow: HashMap::new(),
            dialling: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// Sends over the open connection to `remote`, or queues and dials one.
    pub fn send(&mut self, kind: TransportKind, remote: SocketAddr, bytes: Bytes) {
        let key = (kind, remote);
        if let Some((flow, sender)) = self.open.get(&key) {
            if sender.send(bytes) {
                return;
            }
            tracing::debug!(%flow, %remote, "connection to trunk not writable; message dropped");
            return;
        }
        if let Some(queue) = self.dialling.get_mut(&key) {
            if queue.len() < DIAL_QUEUE {
                queue.push(bytes);
            }
            return;
        }
        self.dialling.insert(key, vec![bytes]);
        self.dial(kind, remote);
    }

    /// The TLS name to check the certificate of `addr` against.
    pub fn set_name(&mut self, addr: SocketAddr, name: String) {
        self.names.insert(addr, name);
    }

    /// A flow opened; a dialled one takes what was queued for it. `true` when it was ours.
    pub fn opened(&mut self, flow: FlowId, kind: TransportKind, remote: SocketAddr, sender: &FlowSender) -> bool {
        let key = (kind, remote);
        let Some(queue) = self.dialling.remove(&key) else { return false };
        for bytes in queue {
            if !sender.send(bytes) {
                break;
            }
        }
        self.open.insert(key, (flow, sender.clone()));
        self.by_flow.insert(flow, key);
        true
    }

    pub fn closed(&mut self, flow: FlowId) {
        if let Some(key) = self.by_flow.remove(&flow) {
            self.open.remove(&key);
        }
    }

    /// Dialling failed: what waited for the connection is dropped.
    pub fn failed(&mut self, kind: TransportKind, remote: SocketAddr) -> usize {
        self.dialling.remove(&(kind, remote)).map_or(0, |q| q.len())
    }

    fn dial(&self, kind: TransportKind, remote: SocketAddr) {
        let shared = self.shared.clone();
        let tls = match kind {
            TransportKind::Tls => {
                let name = self.names.get(&remote).cloned().unwrap_or_else(|| remote.ip().to_string());
                Some((self.tls.clone(), name))
            }
            _ => None,
        };
        tokio::spawn(async move {
            let timeout = shared.limits.handshake_timeout;
            let events = shared.events.clone();
            let result = tokio::time::timeout(timeout, open(kind, remote, tls, shared)).await;
            let reason = match result {
                Ok(Ok(())) => return,
                Ok(Err(reason)) => reason,
                Err(_) => format!("no connection within {} ms", timeout.as_millis()),
            };
            tracing::warn!(transport = %kind, %remote, %reason, "cannot connect to trunk");
            let _ = events.send(Event::DialFailed { kind, remote, reason }).await;
        });
    }
}

/// Connects (and for TLS, shakes hands), then serves the connection as a flow until it
/// closes. Returns early only with the reason it could not be opened.
async fn open(
    kind: TransportKind,
    remote: SocketAddr,
    tls: Option<(Option<tls::TlsConnector>, String)>,
    shared: Shared,
) -> Result<(), String> {
    let tcp = TcpStream::connect(remote).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let conn = Connection { kind, local, remote, shared, dialled: true };
    match tls {
        None => {
            tokio::spawn(conn.run_framed(tcp));
        }
        Some((None, _)) => return Err("no TLS client configuration".into()),
        Some((Some(connector), name)) => {
            let server_name =
                rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| format!("TLS name {name}: {e}"))?;
            let stream = connector.connect(server_name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
            tokio::spawn(conn.run_framed(stream));
        }
    }
    Ok(())
}

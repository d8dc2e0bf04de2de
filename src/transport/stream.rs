//! Connection transports: the accept loop shared by TCP, TLS, WS and WSS, and the
//! Content-Length framed reader of TCP and TLS flows (RFC 3261 §18.3).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{CloseReason, Event, FlowCommands, FlowId, FlowSender, Shared, Source, TransportKind, WsPolicy, tls, ws};
use crate::clock;
use crate::message::framing::{self, Frame, FrameError, PONG};

pub(super) struct Accept {
    pub(super) kind: TransportKind,
    pub(super) listener: TcpListener,
    pub(super) tls: Option<tls::TlsAcceptor>,
    pub(super) ws: Arc<WsPolicy>,
    pub(super) shared: Shared,
}

impl Accept {
    pub(super) async fn run(self) {
        let mut shutdown = self.shared.shutdown.clone();
        let mut backing_off = false;
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            if accepted.is_ok() && backing_off {
                tracing::info!(kind = %self.kind, "accepting again");
                backing_off = false;
            }
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error, and say
                    // so once per episode rather than twenty times a second.
                    if !backing_off {
                        tracing::warn!(kind = %self.kind, error = %e, "accept failed; backing off until it works again");
                        backing_off = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = match self.shared.gate.admit(remote.ip()) {
                Ok(p) => p,
                Err(refused) => {
                    tracing::debug!(kind = %self.kind, %remote, ?refused, "connection refused by limits");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().unwrap_or_else(|_| self.listener.local_addr().unwrap_or(remote));
            let conn = Connection { kind: self.kind, local, remote, shared: self.shared.clone(), dialled: false };
            let tls = self.tls.clone();
            let policy = self.ws.clone();
            tokio::spawn(async move {
                conn.serve(tcp, tls, policy).await;
                drop(permit);
            });
        }
    }
}

/// One accepted connection before and after its handshakes.
pub(super) struct Connection {
    pub(super) kind: TransportKind,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) shared: Shared,
    /// Opened by us toward a trunk, not accepted.
    pub(super) dialled: bool,
}

impl Connection {
    // Each phase is boxed: a connection lives for hours, and an unboxed future would keep
    // room for the TLS and WebSocket handshake states all that time (10.7 KB of task per
    // connection measured, 0.7 KB boxed).
    async fn serve(self, tcp: TcpStream, tls: Option<tls::TlsAcceptor>, policy: Arc<WsPolicy>) {
        let handshake_timeout = self.shared.limits.handshake_timeout;
        match (self.kind, tls) {
            (TransportKind::Tcp, _) => Box::pin(self.run_framed(tcp)).await,
            (TransportKind::Ws, _) => Box::pin(ws::serve(self, tcp, &policy)).await,
            (TransportKind::Tls | TransportKind::Wss, Some(acceptor)) => {
                let accept = Box::pin(tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)));
                let stream = match accept.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(kind = %self.kind, remote = %self.remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(kind = %self.kind, remote = %self.remote, "TLS handshake timed out");
                        return;
                    }
                };
                if self.kind == TransportKind::Tls {
                    Box::pin(self.run_framed(stream)).await;
                } else {
                    Box::pin(ws::serve(self, stream, &policy)).await;
                }
            }
            (TransportKind::Tls | TransportKind::Wss, None) | (TransportKind::Udp, _) => {}
        }
    }

    /// Announces the flow to the driver; `None` when the driver is gone.
    pub(super) async fn open(&self) -> Option<(FlowId, FlowCommands)> {
        let flow = self.shared.next_flow_id();
        let (sender, commands) = FlowSender::channel();
        let opened = Event::FlowOpened {
            flow,
            kind: self.kind,
            local: self.local,
            remote: self.remote,
            sender,
            dialled: self.dialled,
        };
        self.shared.events.send(opened).await.ok()?;
        tracing::debug!(%flow, kind = %self.kind, remote = %self.remote, "flow opened");
        Some((flow, commands))
    }

    pub(super) async fn deliver(&self, flow: FlowId, bytes: bytes::Bytes) -> bool {
        let source = Source { kind: self.kind, local: self.local, remote: self.remote, flow: Some(flow) };
        self.shared.events.send(Event::Received { source, bytes }).await.is_ok()
    }

    pub(super) async fn closed(&self, flow: FlowId, reason: CloseReason) {
        tracing::debug!(%flow, kind = %self.kind, remote = %self.remote, %reason, "flow closed");
        let _ = self.shared.events.send(Event::FlowClosed { flow, reason }).await;
    }

    pub(super) async fn run_framed<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let Some((flow, mut commands)) = self.open().await else { return };
        let reason = self.pump(flow, stream, &mut commands).await;
        self.closed(flow, reason).await;
    }

    async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        flow: FlowId,
        stream: S,
        commands: &mut FlowCommands,
    ) -> CloseReason {
        let limits = self.shared.limits.clone();
        let mut shutdown = self.shared.shutdown.clone();
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);
        // The futures that end the connection are made once, not on every pass of the loop:
        // each new `Notified` took the notifier's lock twice (to wait and to stop waiting),
        // and moving the idle timer on every read touched the timer wheel. The idle timer
        // instead fires at its first deadline and is moved on then if something was read.
        let mut last_read = clock::now();
        let idle = tokio::time::sleep(limits.stream_idle_timeout);
        let closed = commands.close.clone();
        let closed = closed.notified();
        let stopping = shutdown.changed();
        tokio::pin!(idle, closed, stopping);
        loop {
            loop {
                match framing::frame(&buf, limits.max_message_size) {
                    Ok(Frame::KeepAlive(n)) => {
                        buf.advance(n);
                        if let Err(e) = writer.write_all(PONG).await {
                            return CloseReason::Io(e.to_string());
                        }
                    }
                    Ok(Frame::Skip(n)) => buf.advance(n),
                    Ok(Frame::Message(n)) => {
                        let message = buf.split_to(n).freeze();
                        if !self.deliver(flow, message).await {
                            return CloseReason::Shutdown;
                        }
                    }
                    Err(FrameError::Incomplete) => break,
                    Err(FrameError::TooLarge { .. }) => return CloseReason::TooLarge,
                    Err(e) => return CloseReason::BadFraming(e.to_string()),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return CloseReason::PeerClosed,
                    Ok(_) => last_read = clock::now(),
                    Err(e) => return CloseReason::Io(e.to_string()),
                },
                queued = commands.queue.recv() => match queued {
                    Some(bytes) => {
                        if let Err(e) = writer.write_all(&bytes).await {
                            return CloseReason::Io(e.to_string());
                        }
                    }
                    None => return CloseReason::Shutdown,
                },
                () = &mut closed => {
                    let _ = writer.shutdown().await;
                    return CloseReason::Local;
                }
                () = &mut idle => {
                    let quiet_until = last_read + limits.stream_idle_timeout;
                    if clock::now() >= quiet_until {
                        return CloseReason::Idle;
                    }
                    idle.as_mut().reset(tokio::time::Instant::from_std(quiet_until));
                }
                _ = &mut stopping => {
                    let _ = writer.shutdown().await;
                    return CloseReason::Shutdown;
                }
            }
        }
    }
}

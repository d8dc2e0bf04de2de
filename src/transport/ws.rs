//! SIP over WebSocket (RFC 7118): the upgrade must offer the `sip` subprotocol and hit a
//! configured path; one WebSocket message is one SIP message, text or binary; a CRLFCRLF
//! message is an RFC 5626 ping and gets a CRLF message back. The server pings every
//! `ping_interval` and closes a connection that has sent nothing for `idle_timeout`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{
    self, Message as WsMessage,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
    protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
};

use super::stream::Connection;
use super::{CloseReason, FlowId};
use crate::clock;

/// What a WebSocket upgrade must look like, and how the flow is kept alive.
#[derive(Debug, Clone)]
pub struct WsPolicy {
    /// Request paths that carry SIP, e.g. `/` and `/ws`.
    pub paths: Vec<String>,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

impl Default for WsPolicy {
    fn default() -> Self {
        Self {
            paths: vec!["/".into(), "/ws".into()],
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// An upgrade we refuse, with a body a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

impl WsPolicy {
    /// Decides an upgrade from its path and every `Sec-WebSocket-Protocol` value
    /// (each may be a comma list). Subprotocol names are compared as whole tokens.
    pub fn check_upgrade<'a>(&self, path: &str, protocols: impl IntoIterator<Item = &'a str>) -> Result<(), Refusal> {
        if !self.paths.iter().any(|p| p == path) {
            return Err(Refusal {
                status: 404,
                body: format!(
                    "webtrunk: no SIP WebSocket endpoint at {path}; configured paths: {}\n",
                    self.paths.join(", ")
                ),
            });
        }
        let offered: Vec<&str> =
            protocols.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()).collect();
        if offered.iter().any(|p| p.eq_ignore_ascii_case("sip")) {
            return Ok(());
        }
        let offered = if offered.is_empty() { "none".to_string() } else { offered.join(", ") };
        Err(Refusal {
            status: 400,
            body: format!(
                "webtrunk: WebSocket subprotocol 'sip' required (RFC 7118 Sec-WebSocket-Protocol); offered: {offered}\n"
            ),
        })
    }
}

// tungstenite's callback signature fixes the error type; it is built once per refused
// upgrade, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(conn: Connection, stream: S, policy: &WsPolicy) {
    let max = conn.shared.limits.max_message_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max * 4);
    let remote = conn.remote;
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let protocols = request.headers().get_all("sec-websocket-protocol").iter().filter_map(|v| v.to_str().ok());
        match policy.check_upgrade(request.uri().path(), protocols) {
            Ok(()) => {
                response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
                Ok(response)
            }
            Err(refusal) => {
                tracing::info!(%remote, path = request.uri().path(), status = refusal.status, "WebSocket upgrade refused: {}", refusal.body.trim_end());
                let mut error = ErrorResponse::new(Some(refusal.body));
                *error.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
                Err(error)
            }
        }
    };
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)));
    let socket = match tokio::time::timeout(conn.shared.limits.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(kind = %conn.kind, %remote, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(kind = %conn.kind, %remote, "WebSocket handshake timed out");
            return;
        }
    };
    let Some((flow, mut commands)) = conn.open().await else { return };
    let reason = Box::pin(pump(&conn, flow, socket, &mut commands, policy)).await;
    conn.closed(flow, reason).await;
}

async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &Connection,
    flow: FlowId,
    socket: tokio_tungstenite::WebSocketStream<S>,
    commands: &mut super::FlowCommands,
    policy: &WsPolicy,
) -> CloseReason {
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = conn.shared.shutdown.clone();
    let mut ping = tokio::time::interval(policy.ping_interval);
    ping.tick().await;
    let mut last_heard = clock::now();
    // Made once rather than on every pass: each new `Notified` takes its notifier's lock
    // to start waiting and again to stop.
    let closed = commands.close.clone();
    let closed = closed.notified();
    let stopping = shutdown.changed();
    tokio::pin!(closed, stopping);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let message = match frame {
                    None => return CloseReason::PeerClosed,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return close_for_error(&mut sink, e).await,
                };
                last_heard = clock::now();
                let payload: Bytes = match message {
                    WsMessage::Text(t) => Bytes::from(t),
                    WsMessage::Binary(b) => b,
                    WsMessage::Close(_) => return CloseReason::PeerClosed,
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                };
                if payload.iter().all(|&c| c == b'\r' || c == b'\n') {
                    // RFC 5626 §4.4.1 inside WebSocket: a CRLFCRLF ping gets a CRLF pong;
                    // a lone CRLF is a pong to nobody and is dropped. (Text form of framing::PONG.)
                    if payload.len() >= 4 && sink.send(WsMessage::text("\r\n")).await.is_err() {
                        return CloseReason::PeerClosed;
                    }
                    continue;
                }
                if !conn.deliver(flow, payload).await {
                    return CloseReason::Shutdown;
                }
            }
            queued = commands.queue.recv() => {
                let Some(bytes) = queued else {
                    // The driver is gone: we are shutting down, whichever signal came first.
                    let _ = sink.send(close_frame(CloseCode::Away, "server shutting down")).await;
                    return CloseReason::Shutdown;
                };
                let message = match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => WsMessage::text(text),
                    Err(_) => WsMessage::Binary(bytes),
                };
                if let Err(e) = sink.send(message).await {
                    return CloseReason::Io(e.to_string());
                }
            }
            () = &mut closed => {
                let _ = sink.send(close_frame(CloseCode::Policy, "closed by server")).await;
                return CloseReason::Local;
            }
            _ = ping.tick() => {
                if clock::now().duration_since(last_heard) >= policy.idle_timeout {
                    let _ = sink.send(close_frame(CloseCode::Away, "idle timeout")).await;
                    return CloseReason::Idle;
                }
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    return CloseReason::PeerClosed;
                }
            }
            _ = &mut stopping => {
                let _ = sink.send(close_frame(CloseCode::Away, "server shutting down")).await;
                let _ = sink.close().await;
                return CloseReason::Shutdown;
            }
        }
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))
}

async fn close_for_error<K>(sink: &mut K, error: tungstenite::Error) -> CloseReason
where
    K: futures_util::Sink<WsMessage> + Unpin,
{
    match error {
        tungstenite::Error::Capacity(e) => {
            let _ = sink.send(close_frame(CloseCode::Size, "message too large")).await;
            tracing::debug!(error = %e, "WebSocket message over the size limit");
            CloseReason::TooLarge
        }
        tungstenite::Error::Protocol(e) => {
            let _ = sink.send(close_frame(CloseCode::Protocol, "protocol error")).await;
            CloseReason::Protocol(e.to_string())
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => CloseReason::PeerClosed,
        other => CloseReason::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_needs_sip_subprotocol_as_a_whole_token() {
        let policy = WsPolicy::default();
        assert!(policy.check_upgrade("/", ["sip"]).is_ok());
        assert!(policy.check_upgrade("/ws", ["xmpp, sip"]).is_ok());
        assert!(policy.check_upgrade("/", ["foo", "SIP"]).is_ok());
        let refused = policy.check_upgrade("/", ["sipfoo, notsip"]).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("offered: sipfoo, notsip"), "{}", refused.body);
        let none = policy.check_upgrade("/", []).unwrap_err();
        assert!(none.body.contains("'sip' required") && none.body.contains("offered: none"));
    }

    #[test]
    fn wrong_path_names_the_configured_ones() {
        let policy = WsPolicy { paths: vec!["/ws".into(), "/sip".into()], ..WsPolicy::default() };
        let refused = policy.check_upgrade("/asterisk/ws", ["sip"]).unwrap_err();
        assert_eq!(refused.status, 404);
        assert!(refused.body.contains("/asterisk/ws") && refused.body.contains("/ws, /sip"), "{}", refused.body);
    }
}

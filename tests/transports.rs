//! The five transports on real loopback sockets: OPTIONS answered on each, the RFC 7118
//! handshake rules, RFC 5626 keep-alives, limits, and shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message as WsMessage, protocol::frame::coding::CloseCode};
use webtrunk::transport::TransportKind;

#[tokio::test]
async fn options_answered_over_udp_tcp_tls_ws_and_wss() {
    let config = loopback_config("five");
    let server = start(&config).await;

    let udp = udp_exchange(server.addr(TransportKind::Udp).unwrap(), options("u1", "UDP").as_bytes()).await;
    assert!(udp.starts_with("SIP/2.0 200 OK\r\n"), "{udp}");
    assert!(udp.contains("Call-ID: u1\r\n"));
    // RFC 3581: the client asked for rport; the reply names the port it came from.
    assert!(udp.contains(";rport=") && udp.contains(";received=127.0.0.1"), "{udp}");

    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let reply = stream_exchange(&mut tcp, options("t1", "TCP").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n") && reply.contains("Call-ID: t1\r\n"), "{reply}");

    let mut tls = tls_connect(&config, server.addr(TransportKind::Tls).unwrap()).await;
    let reply = stream_exchange(&mut tls, options("s1", "TLS").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n") && reply.contains("Call-ID: s1\r\n"), "{reply}");

    let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let reply = ws_exchange(&mut ws, &options("w1", "WS")).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n") && reply.contains("Call-ID: w1\r\n"), "{reply}");

    let wss_addr = server.addr(TransportKind::Wss).unwrap();
    let tls_stream = tls_connect(&config, wss_addr).await;
    let mut wss = ws_handshake(tls_stream, &format!("wss://localhost:{}/ws", wss_addr.port())).await;
    let reply = ws_exchange(&mut wss, &options("x1", "WSS")).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n") && reply.contains("Call-ID: x1\r\n"), "{reply}");
    // Binary frames carry SIP too (RFC 7118 §5).
    wss.send(WsMessage::binary(options("x2", "WSS").into_bytes())).await.unwrap();
    let reply = ws_next_text(&mut wss).await;
    assert!(reply.contains("Call-ID: x2\r\n"), "{reply}");

    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn websocket_upgrade_without_sip_subprotocol_is_refused_with_a_reason() {
    let config = loopback_config("nosip");
    let server = start(&config).await;
    let addr = server.addr(TransportKind::Ws).unwrap();
    let upgrade = |protocol: &str, path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        )
    };
    let none = raw_http(addr, &upgrade("", "/")).await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    assert!(none.contains("subprotocol 'sip' required"), "{none}");
    let wrong = raw_http(addr, &upgrade("Sec-WebSocket-Protocol: sipx, xmpp\r\n", "/")).await;
    assert!(wrong.starts_with("HTTP/1.1 400") && wrong.contains("offered: sipx, xmpp"), "{wrong}");
    let path = raw_http(addr, &upgrade("Sec-WebSocket-Protocol: sip\r\n", "/asterisk/ws")).await;
    assert!(path.starts_with("HTTP/1.1 404"), "{path}");
    assert!(path.contains("/asterisk/ws") && path.contains("configured paths: /, /ws"), "{path}");
    let ok = raw_http(addr, &upgrade("Sec-WebSocket-Protocol: chat, sip\r\n", "/ws")).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("sec-websocket-protocol: sip\r\n"), "{ok}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn crlf_keepalive_is_answered_over_tcp_and_websocket() {
    let config = loopback_config("keepalive");
    let server = start(&config).await;
    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    tcp.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(TIMEOUT, tcp.read_exact(&mut pong)).await.unwrap().unwrap();
    assert_eq!(&pong, b"\r\n");
    // The flow stays usable after the ping.
    let reply = stream_exchange(&mut tcp, options("after-ping", "TCP").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK"), "{reply}");

    let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    ws.send(WsMessage::text("\r\n\r\n")).await.unwrap();
    assert_eq!(ws_next_text(&mut ws).await, "\r\n");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn pipelined_and_split_tcp_messages_are_framed() {
    let config = loopback_config("pipeline");
    let server = start(&config).await;
    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let two = format!("{}{}", options("p1", "TCP"), options("p2", "TCP"));
    tcp.write_all(two.as_bytes()).await.unwrap();
    let mut replies = Vec::new();
    while !String::from_utf8_lossy(&replies).contains("Call-ID: p2") {
        let mut chunk = [0u8; 2048];
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before both replies");
        replies.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&replies);
    assert_eq!(text.matches("SIP/2.0 200 OK\r\n").count(), 2, "{text}");
    assert!(text.find("Call-ID: p1").unwrap() < text.find("Call-ID: p2").unwrap(), "replies in order");
    // One message written a few bytes at a time.
    let msg = options("p3", "TCP");
    for piece in msg.as_bytes().chunks(7) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let reply = read_sip(&mut tcp).await;
    assert!(reply.contains("Call-ID: p3\r\n"), "{reply}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let mut config = loopback_config("cap");
    config.limits.max_connections_per_ip = 2;
    let server = start(&config).await;
    let addr = server.addr(TransportKind::Tcp).unwrap();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(stream_exchange(&mut a, options("c1", "TCP").as_bytes()).await.starts_with("SIP/2.0 200"));
    assert!(stream_exchange(&mut b, options("c2", "TCP").as_bytes()).await.starts_with("SIP/2.0 200"));
    let mut c = TcpStream::connect(addr).await.unwrap();
    let _ = c.write_all(options("c3", "TCP").as_bytes()).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "third connection from one IP must be closed unanswered");
    drop(a);
    // The slot comes back when a connection goes.
    let mut d = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if server.open_connections() < 2 {
            d = Some(TcpStream::connect(addr).await.unwrap());
            break;
        }
    }
    let mut d = d.expect("slot freed");
    assert!(stream_exchange(&mut d, options("c4", "TCP").as_bytes()).await.starts_with("SIP/2.0 200"));
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn stalled_handshakes_are_dropped_in_bounded_time() {
    let mut config = loopback_config("stall");
    config.limits.handshake_timeout = Duration::from_millis(300);
    let server = start(&config).await;
    for kind in [TransportKind::Ws, TransportKind::Tls, TransportKind::Wss] {
        let mut tcp = TcpStream::connect(server.addr(kind).unwrap()).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{kind}: silent client not dropped: {closed:?}");
    }
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn idle_websocket_is_pinged_then_closed() {
    let mut config = loopback_config("idle");
    config.websocket.ping_interval = Duration::from_millis(100);
    config.websocket.idle_timeout = Duration::from_millis(350);
    let server = start(&config).await;
    // A client that never answers pings: the server must give up on it.
    let mut raw = raw_ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let (pings, close) = raw_ws_until_close(&mut raw, Duration::from_secs(3)).await;
    assert!(pings >= 1, "server pings an idle WebSocket");
    assert_eq!(close, Some(1001));
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_quiet_tcp_connection_is_closed_after_the_idle_timeout_and_a_talking_one_is_kept() {
    let mut config = loopback_config("tcp-idle");
    config.limits.tcp_idle_timeout = Duration::from_millis(400);
    let server = start(&config).await;
    let addr = server.addr(TransportKind::Tcp).unwrap();
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    let mut talking = TcpStream::connect(addr).await.unwrap();
    let started = webtrunk::clock::now();
    // Keep-alives every 150 ms for three idle timeouts: each one must be answered, and
    // the connection must outlive the first deadline the server set for it.
    for _ in 0..8 {
        talking.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        tokio::time::timeout(TIMEOUT, talking.read_exact(&mut pong)).await.expect("pong in time").unwrap();
        assert_eq!(&pong, b"\r\n");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(1200));
    let reply = stream_exchange(&mut talking, options("t-idle", "TCP").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "a talking connection is open: {reply}");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), quiet.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the quiet connection was closed: {closed:?}");
    // Shutdown closes the one still open.
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(2)));
    let closed = tokio::time::timeout(Duration::from_secs(3), talking.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "shutdown closes TCP connections: {closed:?}");
    tokio::time::timeout(Duration::from_secs(5), shutdown).await.expect("shutdown is bounded").unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let config = loopback_config("shutdown");
    let server = start(&config).await;
    let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let reply = ws_exchange(&mut ws, &options("s1", "WS")).await;
    assert!(reply.starts_with("SIP/2.0 200"));
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(3)));
    let mut code = None;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(TIMEOUT, ws.next()).await {
        if let WsMessage::Close(Some(f)) = frame {
            code = Some(f.code);
            break;
        }
    }
    assert_eq!(code, Some(CloseCode::Away));
    let stats = tokio::time::timeout(Duration::from_secs(5), shutdown).await.expect("shutdown is bounded").unwrap();
    assert!(stats.received >= 1);
}

#[tokio::test]
async fn self_signed_certificate_is_kept_across_restarts() {
    let config = loopback_config("cert");
    let server = start(&config).await;
    server.shutdown(Duration::from_secs(1)).await;
    let cert = config.server.state_dir.join("tls/self-signed.crt");
    let first = std::fs::read(&cert).unwrap();
    let server = start(&config).await;
    assert_eq!(std::fs::read(&cert).unwrap(), first, "the certificate is generated once");
    let mut tls = tls_connect(&config, server.addr(TransportKind::Tls).unwrap()).await;
    assert!(stream_exchange(&mut tls, options("r1", "TLS").as_bytes()).await.starts_with("SIP/2.0 200"));
    server.shutdown(Duration::from_secs(1)).await;
}

//! Shared pieces of the integration tests: a webtrunk on loopback port 0 with every
//! transport, and minimal clients for each transport.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod browser;
pub mod dnsmasq;
pub mod registrar_peer;
pub mod rtpengine;
pub mod trunk;
pub mod ua;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_tungstenite::tungstenite::{Message as WsMessage, client::IntoClientRequest, http::HeaderValue};
use webtrunk::app::Server;
use webtrunk::config::Config;
use webtrunk::transport::TransportKind;

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh state directory under the system temp dir.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webtrunk-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Defaults with every transport on 127.0.0.1 port 0.
pub fn loopback_config(name: &str) -> Config {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = Config::default();
    config.server.state_dir = state_dir(name);
    config.listen.udp = vec![any];
    config.listen.tcp = vec![any];
    config.listen.tls = vec![any];
    config.listen.ws = vec![any];
    config.listen.wss = vec![any];
    config
}

pub async fn start(config: &Config) -> Server {
    Server::start(config).await.expect("server starts")
}

pub fn options(call_id: &str, transport: &str) -> String {
    format!(
        "OPTIONS sip:localhost SIP/2.0\r\n\
         Via: SIP/2.0/{transport} client.invalid;branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@localhost>;tag=t{call_id}\r\n\
         To: <sip:localhost>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

pub async fn udp_exchange(server: SocketAddr, request: &[u8]) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(request, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf)).await.expect("UDP reply in time").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads from a stream until a whole SIP message (headers + Content-Length body) is in.
pub async fn read_sip<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(webtrunk::message::framing::Frame::Message(n)) = webtrunk::message::framing::frame(&buf, 1 << 20) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            return text;
        }
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk)).await.expect("reply in time").unwrap();
        assert!(n > 0, "connection closed before a reply; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub async fn stream_exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    read_sip(stream).await
}

/// A TLS client that trusts the server's self-signed certificate from its state dir.
pub fn tls_connector(config: &Config) -> TlsConnector {
    let pem = config.server.state_dir.join("tls/self-signed.crt");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_file_iter(&pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(client))
}

pub async fn tls_connect(config: &Config, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_connector(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake")
}

pub type Ws<S> = tokio_tungstenite::WebSocketStream<S>;

/// A WebSocket client handshake offering `sip` over any stream.
pub async fn ws_handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: S, url: &str) -> Ws<S> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await.expect("WebSocket handshake");
    assert_eq!(response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("sip"));
    ws
}

pub async fn ws_connect(addr: SocketAddr) -> Ws<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ws_handshake(tcp, &format!("ws://{addr}/")).await
}

pub async fn ws_exchange<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, request: &str) -> String {
    ws.send(WsMessage::text(request)).await.unwrap();
    ws_next_text(ws).await
}

/// The next text or binary message, skipping pings.
pub async fn ws_next_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> String {
    loop {
        let frame = tokio::time::timeout(TIMEOUT, ws.next()).await.expect("WebSocket reply in time");
        match frame.expect("stream open").expect("no WebSocket error") {
            WsMessage::Text(t) => return t.to_string(),
            WsMessage::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// Sends a raw HTTP request and returns the whole response text (until close or 4 KiB).
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.len() > 100 && out.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asserts the server still answers OPTIONS on every transport.
pub async fn assert_all_answer(server: &Server, config: &Config, tag: &str) {
    let udp =
        udp_exchange(server.addr(TransportKind::Udp).unwrap(), options(&format!("{tag}-u"), "UDP").as_bytes()).await;
    assert!(udp.starts_with("SIP/2.0 200 OK\r\n"), "UDP after {tag}: {udp}");
    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let reply = stream_exchange(&mut tcp, options(&format!("{tag}-t"), "TCP").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "TCP after {tag}: {reply}");
    let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let reply = ws_exchange(&mut ws, &options(&format!("{tag}-w"), "WS")).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "WS after {tag}: {reply}");
    let mut tls = tls_connect(config, server.addr(TransportKind::Tls).unwrap()).await;
    let reply = stream_exchange(&mut tls, options(&format!("{tag}-s"), "TLS").as_bytes()).await;
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "TLS after {tag}: {reply}");
}

/// A WebSocket connection opened by hand: the upgrade is done, the rest is raw bytes, so
/// a test can send frames no library would (unmasked, reserved opcodes) and not answer
/// pings.
pub async fn raw_ws_connect(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(TIMEOUT, tcp.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A client frame: FIN set, the given opcode, masked unless `masked` is false.
pub fn ws_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65_536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame; returns (pings seen, close code).
pub async fn raw_ws_until_close(tcp: &mut TcpStream, limit: Duration) -> (usize, Option<u16>) {
    let mut pings = 0;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        let mut head = [0u8; 2];
        let read = tokio::select! {
            r = tcp.read_exact(&mut head) => r,
            () = &mut deadline => return (pings, None),
        };
        if read.is_err() {
            return (pings, None);
        }
        let mut len = (head[1] & 0x7f) as usize;
        if len == 126 {
            let mut ext = [0u8; 2];
            tcp.read_exact(&mut ext).await.unwrap();
            len = u16::from_be_bytes(ext) as usize;
        } else if len == 127 {
            let mut ext = [0u8; 8];
            tcp.read_exact(&mut ext).await.unwrap();
            len = u64::from_be_bytes(ext) as usize;
        }
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return (pings, None);
        }
        match head[0] & 0x0f {
            0x9 => pings += 1,
            0x8 => return (pings, payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            _ => {}
        }
    }
}

/// alice and bob with plain passwords, as the Node and proxy tests use them.
pub const ALICE_AND_BOB: &str = "[[user]]\nname = \"alice\"\npassword = \"alice-secret\"\n\n\
                                 [[user]]\nname = \"bob\"\npassword = \"bob-secret\"\n";

/// [`loopback_config`] with a users file holding `users` (TOML `[[user]]` entries).
pub fn config_with_users(name: &str, users: &str) -> Config {
    let mut config = loopback_config(name);
    let path = config.server.state_dir.join("users.toml");
    std::fs::write(&path, users).unwrap();
    config.registrar.users_file = Some(path);
    config
}

/// Where the Node clients and their npm packages live.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Fails (never skips) when an npm package the test needs is missing.
pub fn check_node_packages(packages: &[&str]) {
    let dir = node_dir();
    for package in packages {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "npm package {package} is not installed: run `npm ci` in {} (scripts/test does this)",
            dir.display()
        );
    }
}

/// SIPp (Debian `sip-tester`) playing one call of `tests/sipp/<scenario>` as the UAS on
/// 127.0.0.1:`port`, over UDP, bounded to 20 s.
pub fn sipp_uas(scenario: &str, port: u16, server: SocketAddr) -> tokio::process::Child {
    sipp_uas_over("u1", scenario, port, server)
}

/// [`sipp_uas`] over SIPp's transport `mode` (`u1` UDP, `t1` TCP).
pub fn sipp_uas_over(mode: &str, scenario: &str, port: u16, server: SocketAddr) -> tokio::process::Child {
    sipp_uas_calls(mode, scenario, port, server, 1)
}

/// [`sipp_uas_over`] for `calls` calls of the scenario.
pub fn sipp_uas_calls(mode: &str, scenario: &str, port: u16, server: SocketAddr, calls: u32) -> tokio::process::Child {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(scenario);
    tokio::process::Command::new("sipp")
        .arg("-sf")
        .arg(file)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", &calls.to_string(), "-t", mode])
        .args(["-nostdin", "-timeout", "20s"])
        .arg(server.to_string())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp is installed (Debian sip-tester; scripts/test installs it)")
}

/// SIPp ended with every call successful.
pub async fn sipp_finished(child: tokio::process::Child) {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "SIPp saw a failed call: {}", String::from_utf8_lossy(&out.stderr));
}

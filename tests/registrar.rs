//! The registrar on real sockets with a small digest client of our own: the challenge
//! round trip over UDP and WebSocket, SHA-256 and MD5, bindings that die with their
//! WebSocket, and UDP bindings that survive a restart.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::net::{TcpStream, UdpSocket};
use webtrunk::auth::{Algorithm, QopAuth, ha1, response};
use webtrunk::message::digest::parse_challenge;
use webtrunk::message::{HeaderName, Limits, Message};
use webtrunk::transport::TransportKind;

fn users_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("users.toml");
    let alice = ha1(Algorithm::Md5, "alice", "localhost", "alice-secret");
    let alice256 = ha1(Algorithm::Sha256, "alice", "localhost", "alice-secret");
    std::fs::write(
        &path,
        format!(
            "[[user]]\nname = \"alice\"\nha1_md5 = \"{alice}\"\nha1_sha256 = \"{alice256}\"\n\
             [[user]]\nname = \"bob\"\npassword = \"bob-secret\"\n"
        ),
    )
    .unwrap();
    path
}

fn config_with_users(name: &str) -> webtrunk::config::Config {
    let mut config = loopback_config(name);
    config.registrar.users_file = Some(users_file(&config.server.state_dir));
    config
}

/// A REGISTER as a desk phone or JsSIP writes it.
fn register(transport: &str, call_id: &str, cseq: u32, contact: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sip:localhost SIP/2.0\r\n\
         Via: SIP/2.0/{transport} client.invalid;branch=z9hG4bK{call_id}{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=r{call_id}\r\nTo: <sip:alice@localhost>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 600\r\n\
         Supported: outbound, path\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

fn parse(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()).unwrap()
}

/// The Authorization value answering the first challenge of `algorithm` in a 401.
fn answer(reply: &str, algorithm: Algorithm, password: &str) -> String {
    let message = parse(reply);
    let challenge = message
        .headers_named(HeaderName::WwwAuthenticate)
        .map(|h| parse_challenge(&message.value(h)).unwrap())
        .find(|c| Algorithm::from_token(c.algorithm.as_deref().unwrap_or("MD5")) == Some(algorithm))
        .expect("the 401 offers the algorithm");
    let (nc, cnonce, uri) = ("00000001", "c0ffee", "sip:localhost");
    let digest = response(
        algorithm,
        &ha1(algorithm, "alice", &challenge.realm, password),
        &challenge.nonce,
        "REGISTER",
        uri,
        Some(QopAuth { qop: "auth", nc, cnonce }),
    );
    format!(
        "Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{digest}\", \
         algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
        challenge.realm,
        challenge.nonce,
        algorithm.token()
    )
}

fn status(reply: &str) -> u16 {
    parse(reply).status().unwrap()
}

fn contacts(reply: &str) -> Vec<String> {
    parse(reply).list(HeaderName::Contact).iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect()
}

async fn udp_register(socket: &UdpSocket, server: SocketAddr, text: &str) -> String {
    socket.send_to(text.as_bytes(), server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf)).await.expect("reply in time").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn desk_phone_registers_over_udp_with_sha256_and_refreshes() {
    let config = config_with_users("reg-udp");
    let server = start(&config).await;
    let addr = server.addr(TransportKind::Udp).unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let contact = format!("<sip:alice@{};transport=udp>", phone.local_addr().unwrap());

    let challenge = udp_register(&phone, addr, &register("UDP", "desk1", 1, &contact, None)).await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    // Both algorithms are offered (RFC 8760); MD5 first by default, because SIPp and many
    // phones answer only the first challenge. An RFC 8760 client may still pick SHA-256.
    let offered: Vec<&str> = challenge.lines().filter(|l| l.starts_with("WWW-Authenticate:")).collect();
    assert_eq!(offered.len(), 2, "{challenge}");
    assert!(offered[0].contains("algorithm=MD5") && offered[1].contains("algorithm=SHA-256"), "{challenge}");
    assert!(offered.iter().all(|c| c.contains("qop=\"auth\"")));

    let auth = answer(&challenge, Algorithm::Sha256, "alice-secret");
    let ok = udp_register(&phone, addr, &register("UDP", "desk1", 2, &contact, Some(&auth))).await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(contacts(&ok), vec![format!("{contact};expires=600")]);
    assert!(ok.contains("\r\nDate: "), "§10.3 step 8: a Date header");

    // The same request again is a UDP retransmission: the same answer, not a CSeq error.
    let again = udp_register(&phone, addr, &register("UDP", "desk1", 2, &contact, Some(&auth))).await;
    assert_eq!(again, ok);

    // Wrong password: 401 again, and no binding appears.
    let wrong = answer(&challenge, Algorithm::Md5, "guess");
    let refused = udp_register(&phone, addr, &register("UDP", "desk2", 1, "<sip:other@192.0.2.7>", Some(&wrong))).await;
    assert_eq!(status(&refused), 401, "{refused}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn websocket_binding_dies_with_its_flow() {
    let config = config_with_users("reg-ws");
    let server = start(&config).await;
    let ws_addr = server.addr(TransportKind::Ws).unwrap();
    let tab =
        "<sip:tab1@a.invalid;transport=ws>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"";

    let mut first = ws_connect(ws_addr).await;
    let challenge = ws_exchange(&mut first, &register("WS", "tab1", 1, tab, None)).await;
    assert_eq!(status(&challenge), 401);
    // Over WebSocket MD5 comes last: JsSIP and SIP.js keep only the last challenge.
    let last_challenge = challenge.lines().rfind(|l| l.starts_with("WWW-Authenticate:")).unwrap();
    assert!(last_challenge.contains("algorithm=MD5"), "{challenge}");
    let ok = ws_exchange(
        &mut first,
        &register("WS", "tab1", 2, tab, Some(&answer(&challenge, Algorithm::Md5, "alice-secret"))),
    )
    .await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("\r\nRequire: outbound\r\n"), "RFC 5626 §6: {ok}");
    assert_eq!(contacts(&ok), vec![tab.to_string() + ";expires=600"]);

    // A second tab sees both bindings.
    let tab2 = "<sip:tab2@b.invalid;transport=ws>";
    let mut second = ws_connect(ws_addr).await;
    let challenge = ws_exchange(&mut second, &register("WS", "tab2", 1, tab2, None)).await;
    let ok = ws_exchange(
        &mut second,
        &register("WS", "tab2", 2, tab2, Some(&answer(&challenge, Algorithm::Md5, "alice-secret"))),
    )
    .await;
    assert_eq!(contacts(&ok).len(), 2, "{ok}");

    // The first tab closes without un-REGISTER: its binding goes at once.
    drop(first);
    let mut listed = 2;
    for cseq in 3..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let challenge = ws_exchange(&mut second, &register("WS", "tab2", cseq * 2, tab2, None)).await;
        let auth = answer(&challenge, Algorithm::Md5, "alice-secret");
        let ok = ws_exchange(&mut second, &register("WS", "tab2", cseq * 2 + 1, tab2, Some(&auth))).await;
        listed = contacts(&ok).len();
        if listed == 1 {
            assert_eq!(contacts(&ok), vec![tab2.to_string() + ";expires=600"]);
            break;
        }
    }
    assert_eq!(listed, 1, "the closed tab's binding is still listed");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn udp_and_tcp_bindings_survive_a_restart_but_browser_ones_do_not() {
    let config = config_with_users("reg-persist");
    let phone_contact = "<sip:alice@192.0.2.50:5060>";
    let browser_contact = "<sip:x@c.invalid;transport=ws>";
    {
        let server = start(&config).await;
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.addr(TransportKind::Udp).unwrap();
        let challenge = udp_register(&phone, addr, &register("UDP", "p1", 1, phone_contact, None)).await;
        let auth = answer(&challenge, Algorithm::Md5, "alice-secret");
        assert_eq!(
            status(&udp_register(&phone, addr, &register("UDP", "p1", 2, phone_contact, Some(&auth))).await),
            200
        );

        let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
        let challenge = ws_exchange(&mut ws, &register("WS", "b1", 1, browser_contact, None)).await;
        let auth = answer(&challenge, Algorithm::Md5, "alice-secret");
        let ok = ws_exchange(&mut ws, &register("WS", "b1", 2, browser_contact, Some(&auth))).await;
        assert_eq!(contacts(&ok).len(), 2, "{ok}");
        server.shutdown(Duration::from_secs(2)).await;
    }
    assert!(config.server.state_dir.join("bindings.json").is_file());

    let server = start(&config).await;
    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let other = "<sip:alice@192.0.2.51:5060;transport=tcp>";
    let challenge = stream_exchange(&mut tcp, register("TCP", "p2", 1, other, None).as_bytes()).await;
    let auth = answer(&challenge, Algorithm::Md5, "alice-secret");
    let ok = stream_exchange(&mut tcp, register("TCP", "p2", 2, other, Some(&auth)).as_bytes()).await;
    let listed = contacts(&ok);
    assert!(listed.iter().any(|c| c.starts_with(phone_contact)), "the desk phone survived the restart: {listed:?}");
    assert!(!listed.iter().any(|c| c.starts_with(browser_contact)), "the browser did not: {listed:?}");
    assert_eq!(listed.len(), 2);
    server.shutdown(Duration::from_secs(2)).await;
}

//! Calls to and from trunks, with SIPp playing the trunks: an outbound rule rewrites the
//! number to E.164 and fails over from a trunk answering 503 to the next; a DID from a
//! trunk's address rings a browser without digest; a stranger dialling a trunk number is
//! challenged and the trunk sees nothing.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::trunk::{route_as_dialled, trunk_config, uk_route};
use common::ua::{Ua, parse, status};
use common::*;
use webtrunk::config::trunks::{DidConfig, TargetConfig, TrunkConfig};
use webtrunk::message::Method;
use webtrunk::transport::TransportKind;

/// Distinct free UDP ports: all sockets are held until every port is known.
fn free_udp_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<_> = (0..N).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| sockets[i].local_addr().unwrap().port())
}

fn trunk(name: &str, port: u16) -> TrunkConfig {
    trunk_config(name, "127.0.0.1", Some(port))
}

#[tokio::test]
async fn outbound_call_is_rewritten_to_e164_and_fails_over_from_503_to_the_next_trunk() {
    let [primary_port, backup_port] = free_udp_ports();
    let mut config = config_with_users("trunk-out", ALICE_AND_BOB);
    let mut backup = trunk("backup", backup_port);
    backup.asserted_identity = Some("<sip:+442079460000@carrier.example>".into());
    config.trunks = vec![trunk("primary", primary_port), backup];
    // SIPp's scenarios expect an INVITE, not a health ping (the health test covers pings).
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["primary", "backup"])];
    let server = start(&config).await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    let primary = sipp_uas("trunk_busy.xml", primary_port, udp);
    let backup = sipp_uas("trunk_answer.xml", backup_port, udp);

    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    // Dialled as a person would, with separators.
    let sent = parse(&alice.invite("020-7946-0958").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "the backup trunk answered after the primary's 503");
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(primary).await;
    sipp_finished(backup).await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// Ports free for both UDP and TCP, so one SIPp can be reached over either.
fn free_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| sockets[i].local_addr().unwrap().port())
}

/// One call from alice's browser to the `carrier` trunk (transport `transport`,
/// `large_message` policy) with an SDP of `sdp_len` bytes, answered by SIPp over `mode`.
async fn call_through_trunk(name: &str, transport: &str, large_message: &str, mode: &str, sdp_len: usize) {
    let [port] = free_ports();
    let mut config = config_with_users(name, ALICE_AND_BOB);
    let mut carrier = trunk("carrier", port);
    carrier.transport = transport.into();
    carrier.large_message = large_message.into();
    carrier.asserted_identity = Some("<sip:+442079460000@carrier.example>".into());
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["carrier"])];
    let server = start(&config).await;
    let sipp = sipp_uas_over(mode, "trunk_answer.xml", port, server.addr(TransportKind::Udp).unwrap());
    // Let SIPp bind before the INVITE is sent to it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sdp = big_sdp(sdp_len);
    let sent = parse(&alice.invite_with("02079460958", &sdp).await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// An SDP of about `len` bytes, padded with attribute lines as a browser's offer is.
fn big_sdp(len: usize) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
    );
    let mut n = 0;
    while sdp.len() < len {
        sdp.push_str(&format!("a=x-padding-{n}:0123456789abcdef0123456789abcdef\r\n"));
        n += 1;
    }
    sdp
}

#[tokio::test]
async fn a_tcp_trunk_gets_the_call_over_a_connection_webtrunk_opens() {
    // SIPp listens on TCP only: the call works only if webtrunk dials it.
    call_through_trunk("trunk-tcp", "tcp", "send", "t1", 200).await;
}

#[tokio::test]
async fn a_large_invite_to_a_udp_trunk_goes_over_tcp() {
    // RFC 3261 §18.1.1: a 4.5 KB INVITE for a UDP trunk; SIPp listens on TCP only.
    call_through_trunk("trunk-large-tcp", "udp", "tcp", "t1", 4500).await;
}

#[tokio::test]
async fn a_large_invite_goes_over_udp_when_the_trunk_is_configured_to_take_it() {
    // The same INVITE with `large_message = "send"`: SIPp listens on UDP only.
    call_through_trunk("trunk-large-udp", "udp", "send", "u1", 4500).await;
}

#[tokio::test]
async fn a_tcp_trunk_that_refuses_the_connection_fails_over_at_once() {
    let [dead_port, backup_port] = free_ports();
    let mut config = config_with_users("trunk-refused", ALICE_AND_BOB);
    let mut dead = trunk("dead", dead_port);
    dead.transport = "tcp".into();
    // Long enough that waiting for it would fail the test's timing below.
    dead.failover_timeout = Duration::from_secs(10);
    let mut backup = trunk("backup", backup_port);
    backup.asserted_identity = Some("<sip:+442079460000@carrier.example>".into());
    config.trunks = vec![dead, backup];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["dead", "backup"])];
    let server = start(&config).await;
    let sipp = sipp_uas("trunk_answer.xml", backup_port, server.addr(TransportKind::Udp).unwrap());
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let started = webtrunk::clock::now();
    let sent = parse(&alice.invite("02079460958").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    assert!(
        webtrunk::clock::now() - started < Duration::from_secs(5),
        "the refused connection failed the branch at once, not after the failover timeout"
    );
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_trunk_that_challenges_the_invite_gets_our_credentials_and_the_dialog_keeps_its_cseqs() {
    let [port] = free_udp_ports();
    let mut config = config_with_users("trunk-challenge", ALICE_AND_BOB);
    let mut carrier = trunk("carrier", port);
    carrier.username = Some("pbx-account".into());
    carrier.password = Some("trunk-secret".into());
    carrier.realm = Some("carrier.example".into());
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![route_as_dialled(&["carrier"])];
    let server = start(&config).await;
    let sipp = sipp_uas("trunk_challenge.xml", port, server.addr(TransportKind::Udp).unwrap());
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("02079460958").await);
    let ringing = alice.recv().await;
    assert_eq!(
        status(&ringing),
        180,
        "the carrier's 407 was answered: {}",
        String::from_utf8_lossy(ringing.as_bytes())
    );
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(ok.cseq().unwrap().0, sent.cseq().unwrap().0, "the 200 carries alice's own CSeq");
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn webtrunk_registers_at_the_carrier_and_the_carrier_calls_a_did_into_a_jssip_browser() {
    check_node_packages(&["jssip", "ws"]);
    let [port] = free_udp_ports();
    let mut config = config_with_users("trunk-register-did", ALICE_AND_BOB);
    let mut carrier = trunk("carrier", port);
    carrier.username = Some("pbx-account".into());
    carrier.password = Some("trunk-secret".into());
    carrier.realm = Some("carrier.example".into());
    carrier.register = true;
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.dids = vec![DidConfig { number: "+15550100".into(), users: vec!["alice".into()] }];
    // The carrier listens before webtrunk starts: the first REGISTER goes out at once.
    let placeholder: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let sipp = sipp_uas("carrier_registrar_calls_did.xml", port, placeholder);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start(&config).await;

    let url = format!("ws://127.0.0.1:{}", server.addr(TransportKind::Ws).unwrap().port());
    let dir = node_dir();
    let browser = tokio::process::Command::new("node")
        .arg(dir.join("call_scenario.mjs"))
        .args([url.as_str(), "takes-call"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), browser.wait_with_output()).await.unwrap().unwrap();
    // The carrier's verdict first: it says whether the registration or the call broke.
    sipp_finished(sipp).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser took the DID call: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_trunk_behind_an_outbound_proxy_is_reached_through_it() {
    let [proxy_port] = free_udp_ports();
    let mut config = config_with_users("trunk-proxy", ALICE_AND_BOB);
    // The trunk itself is unreachable (TEST-NET-1): only the proxy can answer.
    let mut carrier = trunk("carrier", 5060);
    carrier.targets[0].host = "192.0.2.1".into();
    carrier.outbound_proxy = Some(format!("sip:127.0.0.1:{proxy_port}"));
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["carrier"])];
    let server = start(&config).await;
    let sipp = sipp_uas("trunk_via_proxy.xml", proxy_port, server.addr(TransportKind::Udp).unwrap());
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("02079460958").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// Alice on server A calls a number; A's trunk is server B over TLS, where the number is a
/// DID ringing carol. With `trust` A knows B's self-signed certificate.
async fn call_over_a_tls_trunk(name: &str, trust: bool) -> (u16, Option<u16>) {
    let mut b_config =
        config_with_users(&format!("{name}-b"), "[[user]]\nname = \"carol\"\npassword = \"carol-secret\"\n");
    let mut a_side = trunk("a-side", 9);
    a_side.inbound_sources = vec!["127.0.0.1".into()];
    b_config.trunks = vec![a_side];
    b_config.proxy.trunk_health_interval = Duration::ZERO;
    b_config.dids = vec![DidConfig { number: "+442079460958".into(), users: vec!["carol".into()] }];
    let b = start(&b_config).await;
    let b_tls = b.addr(TransportKind::Tls).unwrap();

    let mut config = config_with_users(name, ALICE_AND_BOB);
    let mut carrier = trunk("carrier", b_tls.port());
    carrier.transport = "tls".into();
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["carrier"])];
    if trust {
        config.tls.trunk_ca_file = Some(b_config.server.state_dir.join("tls/self-signed.crt"));
    }
    let a = start(&config).await;
    let mut carol = Ua::ws("carol", "carol-secret", b.addr(TransportKind::Ws).unwrap()).await;
    carol.register().await;
    let mut alice = Ua::ws("alice", "alice-secret", a.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    alice.invite("02079460958").await;
    let mut rung = None;
    let first = if trust {
        let invite = carol.recv().await;
        assert_eq!(invite.method(), Some(&webtrunk::message::Method::Invite));
        carol.respond(&invite, 486, "carol").await;
        rung = Some(486);
        alice.recv().await
    } else {
        alice.recv().await
    };
    let code = status(&first);
    a.shutdown(Duration::from_secs(2)).await;
    b.shutdown(Duration::from_secs(2)).await;
    (code, rung)
}

#[tokio::test]
async fn a_tls_trunk_is_dialled_and_its_certificate_checked() {
    // B's answer (carol busy) comes back through the TLS connection A opened.
    let (code, rung) = call_over_a_tls_trunk("trunk-tls", true).await;
    assert_eq!((code, rung), (486, Some(486)));
    // Without B's certificate among A's trusted ones, the handshake fails and nothing
    // reaches B: the caller gets a failure at once, not carol's phone.
    let (code, rung) = call_over_a_tls_trunk("trunk-tls-untrusted", false).await;
    assert!(matches!(code, 408 | 500 | 503), "an untrusted trunk certificate fails the call, got {code}");
    assert_eq!(rung, None);
}

#[tokio::test]
async fn a_trunk_sees_its_from_user_and_the_browser_keeps_its_own_identity() {
    let [port] = free_udp_ports();
    let mut config = config_with_users("trunk-from", ALICE_AND_BOB);
    let mut carrier = trunk("carrier", port);
    carrier.from_user = Some("+442079460000".into());
    carrier.asserted_identity = Some("<sip:+442079460000@carrier.example>".into());
    config.trunks = vec![carrier];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![uk_route(&["carrier"])];
    let server = start(&config).await;
    let sipp = sipp_uas("trunk_answer_from.xml", port, server.addr(TransportKind::Udp).unwrap());
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("02079460958").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180);
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    let from = String::from_utf8_lossy(&ok.first_value(webtrunk::message::HeaderName::From).unwrap()).into_owned();
    assert!(from.starts_with("<sip:alice@localhost>;tag="), "the browser's own From comes back: {from}");
    let bye_answer = alice.ack_and_hang_up(&sent, &ok).await;
    assert_eq!(status(&bye_answer), 200);
    let from =
        String::from_utf8_lossy(&bye_answer.first_value(webtrunk::message::HeaderName::From).unwrap()).into_owned();
    assert!(from.starts_with("<sip:alice@localhost>;tag="), "{from}");
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn did_from_a_trunk_rings_the_browser_and_a_stranger_is_challenged() {
    let mut config = config_with_users("trunk-in", ALICE_AND_BOB);
    let [carrier_port] = free_udp_ports();
    config.trunks = vec![trunk("carrier", carrier_port)];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.dids = vec![DidConfig { number: "+15550100".into(), users: vec!["alice".into()] }];
    let server = start(&config).await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;

    // The carrier (127.0.0.1, in the trunk's inbound_sources) calls the DID: no digest.
    let carrier = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = format!(
        "INVITE sip:+15550100@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKcarrier1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+447700900123@carrier.example>;tag=c1\r\nTo: <sip:+15550100@localhost>\r\n\
         Call-ID: did-1\r\nCSeq: 1 INVITE\r\nContact: <sip:+447700900123@{}>\r\nContent-Length: 0\r\n\r\n",
        carrier.local_addr().unwrap(),
        carrier.local_addr().unwrap()
    );
    carrier.send_to(invite.as_bytes(), udp).await.unwrap();
    let ringing = alice.recv().await;
    assert_eq!(ringing.method(), Some(&Method::Invite), "the DID rings alice's browser");
    assert_eq!(ringing.request_uri().unwrap(), alice.contact.as_bytes());
    alice.respond(&ringing, 486, "alice").await;
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        let (n, _) = tokio::time::timeout(TIMEOUT, carrier.recv_from(&mut buf)).await.unwrap().unwrap();
        let m = parse(&String::from_utf8_lossy(&buf[..n]));
        if m.status() != Some(100) {
            break m;
        }
    };
    assert_eq!(status(&answer), 486, "alice's answer reaches the carrier");
    assert_eq!(alice.recv().await.method(), Some(&Method::Ack), "the proxy ACKs alice's 486 hop by hop");

    // A stranger (another address) dialling a trunk number must authenticate; nothing
    // reaches any trunk.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let invite = invite
        .replace("z9hG4bKcarrier1", "z9hG4bKstranger")
        .replace("did-1", "fraud-1")
        .replace(&carrier.local_addr().unwrap().to_string(), &stranger.local_addr().unwrap().to_string());
    let invite = invite.replace("sip:+15550100@localhost SIP", "sip:00441234567890@localhost SIP");
    stranger.send_to(invite.as_bytes(), udp).await.unwrap();
    let refused = loop {
        let (n, _) = tokio::time::timeout(TIMEOUT, stranger.recv_from(&mut buf)).await.unwrap().unwrap();
        let m = parse(&String::from_utf8_lossy(&buf[..n]));
        if m.status() != Some(100) {
            break m;
        }
    };
    assert_eq!(status(&refused), 407, "{}", String::from_utf8_lossy(refused.as_bytes()));
    assert!(alice.silent(300).await);
    server.shutdown(Duration::from_secs(2)).await;
}

/// A trunk target played by a UDP socket: answers OPTIONS pings while `alive`, and
/// reports every INVITE it sees.
async fn pinged_target(
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    invites: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let m = parse(&String::from_utf8_lossy(&buf[..n]));
        match m.method() {
            Some(Method::Options) if alive.load(std::sync::atomic::Ordering::SeqCst) => {
                let reply = webtrunk::message::response::build(&m, &webtrunk::message::response::Reply::new(200));
                let _ = socket.send_to(&reply, from).await;
            }
            Some(Method::Invite) => {
                let _ = invites.send(());
                let reply = webtrunk::message::response::build(&m, &webtrunk::message::response::Reply::new(503));
                let _ = socket.send_to(&reply, from).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_target_that_stops_answering_options_is_skipped_until_it_answers_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let a = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let b = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let mut config = config_with_users("trunk-health", ALICE_AND_BOB);
    let mut carrier = trunk("carrier", a.local_addr().unwrap().port());
    carrier.targets.push(TargetConfig {
        host: "127.0.0.1".into(),
        port: Some(b.local_addr().unwrap().port()),
        priority: 1,
        weight: 1,
    });
    config.trunks = vec![carrier];
    config.routes = vec![route_as_dialled(&["carrier"])];
    // Fast timers so that an unanswered ping (Timer F = 64·T1) fails in 640 ms.
    config.proxy.t1 = Duration::from_millis(10);
    config.proxy.t2 = Duration::from_millis(40);
    config.proxy.trunk_health_interval = Duration::from_millis(200);
    config.proxy.trunk_health_misses = 2;
    let (a_alive, b_alive) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
    let (a_tx, mut a_invites) = tokio::sync::mpsc::unbounded_channel();
    let (b_tx, mut b_invites) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(pinged_target(a.clone(), a_alive.clone(), a_tx));
    tokio::spawn(pinged_target(b.clone(), b_alive.clone(), b_tx));
    let server = start(&config).await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;

    // A goes silent; after two unanswered pings it is down and calls go straight to B.
    a_alive.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sent = parse(&alice.invite("0123").await);
    let answer = alice.recv().await;
    // B's 503 comes back as 500 (§16.7 step 6: a downstream 503 is not ours to pass on).
    assert_eq!(status(&answer), 500, "B answered; nothing else was tried");
    alice.ack_failure(&sent, &answer).await;
    assert!(a_invites.try_recv().is_err(), "the dead target A saw no INVITE");
    assert!(b_invites.try_recv().is_ok());

    // A answers again: it is up after one answered ping and is tried first.
    a_alive.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = parse(&alice.invite("0123").await);
    let answer = alice.recv().await;
    alice.ack_failure(&sent, &answer).await;
    assert!(a_invites.try_recv().is_ok(), "A is back in service");
    server.shutdown(Duration::from_secs(2)).await;
}

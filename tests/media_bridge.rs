//! A browser's WebRTC offer to a plain-RTP trunk through webtrunk and a real rtpengine:
//! the trunk (SIPp) gets a lean RTP/AVP offer in one small datagram, the browser gets a
//! WebRTC answer (DTLS fingerprint, ICE, SAVPF, not setup:passive), and the rtpengine
//! session is gone after the BYE. Media itself flows in tests/browser_trunk.rs.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::rtpengine::{Daemon, NgLoop};
use common::trunk::{route_as_dialled, trunk_config};
use common::ua::{Ua, parse, status};
use common::*;
use webtrunk::config::trunks::{DidConfig, TrunkConfig};
use webtrunk::media::{CallKey, Command, MediaConfig};
use webtrunk::transport::TransportKind;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdp").join(name);
    std::fs::read_to_string(path).unwrap()
}

fn chromium_offer() -> String {
    fixture("chromium_offer.sdp")
}

fn carrier(port: u16) -> TrunkConfig {
    TrunkConfig {
        media: Some("bridge".into()),
        codecs: vec!["PCMU".into(), "PCMA".into()],
        ..trunk_config("carrier", "127.0.0.1", Some(port))
    }
}

/// A server whose only trunk is `trunk`, bridged through `rtpengine`, taking every number.
async fn bridged_server(name: &str, rtpengine: &Daemon, trunk: TrunkConfig) -> webtrunk::app::Server {
    let mut config = config_with_users(name, ALICE_AND_BOB);
    config.media.rtpengine = vec![rtpengine.ng];
    config.trunks = vec![trunk];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.routes = vec![route_as_dialled(&["carrier"])];
    start(&config).await
}

/// rtpengine, a bridged server, a SIPp carrier answering one call
/// (`trunk_bridged_answer.xml`) and alice registered over WS, ready to call it.
struct AnsweredCallSetup {
    rtpengine: Daemon,
    server: webtrunk::app::Server,
    sipp: tokio::process::Child,
    alice: Ua,
}

async fn answering_trunk(name: &str) -> AnsweredCallSetup {
    let rtpengine = Daemon::start();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = bridged_server(name, &rtpengine, carrier(port)).await;
    let sipp = sipp_uas("trunk_bridged_answer.xml", port, server.addr(TransportKind::Udp).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    AnsweredCallSetup { rtpengine, server, sipp, alice }
}

#[tokio::test]
async fn a_browser_offer_reaches_a_plain_rtp_trunk_lean_and_the_session_ends_with_the_call() {
    let AnsweredCallSetup { rtpengine, server, sipp, mut alice } = answering_trunk("media-bridge").await;
    let sent = parse(&alice.invite_with("02079460958", &chromium_offer()).await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    let answer = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(answer.contains("UDP/TLS/RTP/SAVPF"), "WebRTC answer for the browser:\n{answer}");
    assert!(answer.contains("a=fingerprint:"), "{answer}");
    assert!(answer.contains("a=ice-ufrag:"), "{answer}");
    assert!(!answer.contains("a=setup:passive"), "rtpengine keeps the active DTLS role:\n{answer}");
    let call_id = String::from_utf8_lossy(&sent.call_id().unwrap()).into_owned();
    let key = CallKey { call_id: call_id.clone(), from_tag: format!("t{call_id}"), to_tag: None };
    let mut ng = NgLoop::new(MediaConfig { instances: vec![rtpengine.ng], ..MediaConfig::default() }).await;
    assert!(ng.request(&key, Command::Query).await.is_ok(), "rtpengine holds the call while it is up");
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;

    // The session is gone: rtpengine does not know the call any more.
    let mut gone = false;
    for _ in 0..20 {
        if ng.request(&key, Command::Query).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "rtpengine still holds the call after the BYE:\n{}", rtpengine.log_text());
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_plain_rtp_call_from_a_trunk_reaches_the_browser_as_webrtc_and_its_answer_goes_back_plain() {
    let rtpengine = Daemon::start();
    let mut config = config_with_users("media-bridge-in", ALICE_AND_BOB);
    config.media.rtpengine = vec![rtpengine.ng];
    config.trunks = vec![carrier(9)];
    config.proxy.trunk_health_interval = Duration::ZERO;
    config.dids = vec![DidConfig { number: "+15550100".into(), users: vec!["alice".into()] }];
    let server = start(&config).await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;

    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = trunk.local_addr().unwrap();
    let offer = fixture("sipp_offer.sdp");
    let invite = format!(
        "INVITE sip:+15550100@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKin1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+447700900123@carrier.example>;tag=c1\r\nTo: <sip:+15550100@localhost>\r\n\
         Call-ID: media-in-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{me}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    trunk.send_to(invite.as_bytes(), udp).await.unwrap();
    let ringing = alice.recv().await;
    let offered = String::from_utf8_lossy(ringing.body()).into_owned();
    assert!(offered.contains("UDP/TLS/RTP/SAVPF"), "the browser gets a WebRTC offer:\n{offered}");
    assert!(offered.contains("a=fingerprint:") && offered.contains("a=ice-ufrag:"), "{offered}");
    assert!(offered.contains("a=rtcp-mux"), "{offered}");
    alice.respond_with_sdp(&ringing, 200, "alice", &fixture("chromium_answer.sdp")).await;

    let mut buf = vec![0u8; 8192];
    let ok = loop {
        let (n, _) = tokio::time::timeout(TIMEOUT, trunk.recv_from(&mut buf)).await.unwrap().unwrap();
        let m = parse(&String::from_utf8_lossy(&buf[..n]));
        if m.status() != Some(100) {
            break m;
        }
    };
    assert_eq!(status(&ok), 200);
    let answer = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(answer.contains("RTP/AVP"), "the trunk gets a plain answer:\n{answer}");
    for webrtc_only in ["a=fingerprint", "a=ice-", "a=candidate", "SAVPF", "a=setup"] {
        assert!(!answer.contains(webrtc_only), "{webrtc_only} reached the trunk:\n{answer}");
    }
    let key = CallKey { call_id: "media-in-1".into(), from_tag: "c1".into(), to_tag: None };
    let mut ng = NgLoop::new(MediaConfig { instances: vec![rtpengine.ng], ..MediaConfig::default() }).await;
    assert!(ng.request(&key, Command::Query).await.is_ok(), "rtpengine holds the call");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_bridged_invite_fits_one_datagram_and_a_refused_call_leaves_no_session() {
    let rtpengine = Daemon::start();
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // large_message = "tcp": were the INVITE over 1300 bytes it would not come over UDP.
    let server = bridged_server(
        "media-bridge-small",
        &rtpengine,
        TrunkConfig { large_message: "tcp".into(), ..carrier(trunk.local_addr().unwrap().port()) },
    )
    .await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let offer = chromium_offer();
    assert!(offer.len() > 4000, "the fixture is a full Chromium offer");
    alice.invite_with("02079460958", &offer).await;

    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(TIMEOUT, trunk.recv_from(&mut buf)).await.unwrap().unwrap();
    assert!(n < 1300, "the INVITE toward the trunk is {n} bytes");
    let invite = parse(&String::from_utf8_lossy(&buf[..n]));
    assert_eq!(invite.method(), Some(&webtrunk::message::Method::Invite));
    let call_id = String::from_utf8_lossy(&invite.call_id().unwrap()).into_owned();
    let from_tag = format!("t{call_id}");
    let key = CallKey { call_id, from_tag, to_tag: None };
    let mut ng = NgLoop::new(MediaConfig { instances: vec![rtpengine.ng], ..MediaConfig::default() }).await;
    assert!(ng.request(&key, Command::Query).await.is_ok(), "rtpengine holds the offer");

    // The trunk refuses: the session goes with the call.
    let busy = webtrunk::message::response::build(
        &invite,
        &webtrunk::message::response::Reply { code: 486, to_tag: Some("trunk"), ..Default::default() },
    );
    trunk.send_to(&busy, from).await.unwrap();
    let answer = alice.recv().await;
    assert_eq!(status(&answer), 486);
    let mut gone = false;
    for _ in 0..20 {
        if ng.request(&key, Command::Query).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "rtpengine still holds a refused call");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_unreadable_sdp_toward_a_bridged_trunk_gets_488() {
    let rtpengine = Daemon::start();
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = bridged_server("media-bridge-488", &rtpengine, carrier(trunk.local_addr().unwrap().port())).await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    alice.invite_with("02079460958", "this is not SDP\r\n").await;
    let answer = alice.recv().await;
    assert_eq!(status(&answer), 488, "{}", String::from_utf8_lossy(answer.as_bytes()));
    let mut buf = vec![0u8; 4096];
    let nothing = tokio::time::timeout(Duration::from_millis(300), trunk.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "nothing reached the trunk");
    server.shutdown(Duration::from_secs(2)).await;
}

/// Alice's browser calls Bob's; with `bridge` the call goes through rtpengine. Returns
/// whether rtpengine held the call, and whether Bob's offer still had Alice's ICE.
async fn browser_to_browser(name: &str, bridge: bool) -> (bool, bool) {
    let rtpengine = Daemon::start();
    let mut config = config_with_users(name, ALICE_AND_BOB);
    config.media.rtpengine = vec![rtpengine.ng];
    config.media.bridge_browser_calls = bridge;
    let server = start(&config).await;
    let ws = server.addr(TransportKind::Ws).unwrap();
    let mut bob = Ua::ws("bob", "bob-secret", ws).await;
    bob.register().await;
    let mut alice = Ua::ws("alice", "alice-secret", ws).await;
    alice.register().await;
    let offer = chromium_offer();
    let sent = parse(&alice.invite_with("bob", &offer).await);
    let ringing = bob.recv().await;
    let received = String::from_utf8_lossy(ringing.body()).into_owned();
    let alice_ufrag = offer.lines().find(|l| l.starts_with("a=ice-ufrag:")).unwrap().to_owned();
    let call_id = String::from_utf8_lossy(&sent.call_id().unwrap()).into_owned();
    let key = CallKey { call_id: call_id.clone(), from_tag: format!("t{call_id}"), to_tag: None };
    let mut ng = NgLoop::new(MediaConfig { instances: vec![rtpengine.ng], ..MediaConfig::default() }).await;
    let held = ng.request(&key, Command::Query).await.is_ok();
    server.shutdown(Duration::from_secs(2)).await;
    (held, received.contains(&alice_ufrag))
}

#[tokio::test]
async fn browsers_call_each_other_peer_to_peer_unless_configured_through_rtpengine() {
    assert_eq!(browser_to_browser("media-p2p", false).await, (false, true), "peer to peer: the offer untouched");
    assert_eq!(browser_to_browser("media-b2b", true).await, (true, false), "bridged: rtpengine's own ICE");
}

#[tokio::test]
async fn an_ice_restart_from_the_browser_is_answered_without_renegotiating_the_trunk() {
    // The trunk takes one INVITE, its ACK and a BYE: a re-INVITE or a stray ACK reaching
    // it fails its run.
    let AnsweredCallSetup { rtpengine: _rtpengine, server, sipp, mut alice } =
        answering_trunk("media-ice-restart").await;
    let offer = chromium_offer();
    let sent = parse(&alice.invite_with("02079460958", &offer).await);
    assert_eq!(status(&alice.recv().await), 180);
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    let first_answer = String::from_utf8_lossy(ok.body()).into_owned();

    let common::ua::Answered { contact, route, dialog, cseq } = alice.ack(&sent, &ok).await;

    // The network changed: new ICE credentials, nothing else.
    let ufrag = offer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap().trim().to_owned();
    let pwd = offer.lines().find_map(|l| l.strip_prefix("a=ice-pwd:")).unwrap().trim().to_owned();
    let restarted = offer.replace(&ufrag, "Rst1").replace(&pwd, "restartedpasswordrestartedpw");
    alice.in_dialog_with_sdp("INVITE", &contact, &route, &dialog, cseq + 1, &restarted).await;
    let reinvite_ok = loop {
        let m = alice.recv().await;
        if status(&m) != 100 {
            break m;
        }
    };
    assert_eq!(status(&reinvite_ok), 200, "{}", String::from_utf8_lossy(reinvite_ok.as_bytes()));
    let answer = String::from_utf8_lossy(reinvite_ok.body()).into_owned();
    assert!(answer.contains("a=ice-ufrag:") && answer.contains("UDP/TLS/RTP/SAVPF"), "{answer}");
    let port_of = |sdp: &str| sdp.lines().find(|l| l.starts_with("m=audio")).map(str::to_owned);
    assert_eq!(port_of(&answer), port_of(&first_answer), "the browser keeps talking to the same relay port");
    assert_eq!(
        common::ua::header(&reinvite_ok, webtrunk::message::HeaderName::Contact).trim_matches(['<', '>']),
        contact,
        "the remote target stays the trunk"
    );
    alice.in_dialog("ACK", &contact, &route, &dialog, cseq + 1).await;
    alice.in_dialog("BYE", &contact, &route, &dialog, cseq + 2).await;
    assert_eq!(status(&alice.recv().await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

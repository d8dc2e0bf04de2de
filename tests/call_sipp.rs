//! A browser-side caller (WebSocket) reaches SIPp playing a desk phone registered over UDP:
//! the real SIPp parses what the proxy forwards and must see its Record-Route, ACK and BYE.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ua::{Dialog, Ua, all, header, parse, status};
use common::*;
use webtrunk::message::HeaderName;
use webtrunk::transport::TransportKind;

#[tokio::test]
async fn ws_caller_reaches_a_sipp_uas_registered_over_udp() {
    let mut config = loopback_config("sipp-uas");
    let users = config.server.state_dir.join("users.toml");
    std::fs::write(
        &users,
        "[[user]]\nname = \"alice\"\npassword = \"a\"\n[[user]]\nname = \"bob\"\npassword = \"b\"\n",
    )
    .unwrap();
    config.registrar.users_file = Some(users);
    let server = start(&config).await;
    let udp = server.addr(TransportKind::Udp).unwrap();

    // A free UDP port for SIPp, taken and released.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas_answer.xml");
    let sipp = tokio::process::Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1", "-t", "u1", "-nostdin", "-timeout", "20s"])
        .arg(udp.to_string())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp is installed (Debian sip-tester; scripts/test installs it)");

    // Bob's binding names SIPp's address, registered from another socket of the same host.
    let mut registrar_client = Ua::udp("bob", "b", udp).await;
    registrar_client.contact = format!("sip:bob@127.0.0.1:{port}");
    registrar_client.register().await;

    let mut alice = Ua::ws("alice", "a", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("bob").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    assert!(ok.body().starts_with(b"v=0"), "the SDP answer comes through");
    let mut route = all(&ok, HeaderName::RecordRoute);
    assert_eq!(route.len(), 2, "SIPp echoed both Record-Route entries");
    route.reverse();
    let contact = header(&ok, HeaderName::Contact).trim_matches(['<', '>']).to_string();
    let dialog = Dialog {
        local: header(&sent, HeaderName::From),
        remote: header(&ok, HeaderName::To),
        call_id: header(&sent, HeaderName::CallId),
    };
    alice.in_dialog("ACK", &contact, &route, &dialog, 2).await;
    alice.in_dialog("BYE", &contact, &route, &dialog, 3).await;
    let bye_ok = alice.recv().await;
    assert_eq!((status(&bye_ok), header(&bye_ok, HeaderName::CSeq)), (200, "3 BYE".to_string()));

    let out = tokio::time::timeout(Duration::from_secs(30), sipp.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "SIPp saw a failed call: {}", String::from_utf8_lossy(&out.stderr));
    server.shutdown(Duration::from_secs(2)).await;
}

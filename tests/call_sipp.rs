//! A browser-side caller (WebSocket) reaches SIPp playing a desk phone registered over UDP:
//! the real SIPp parses what the proxy forwards and must see its Record-Route, ACK and BYE.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ua::{Ua, all, header, parse, status};
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
    let sipp = sipp_uas("uas_answer.xml", port, udp);

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
    assert_eq!(all(&ok, HeaderName::RecordRoute).len(), 2, "SIPp echoed both Record-Route entries");
    let bye_ok = alice.ack_and_hang_up(&sent, &ok).await;
    assert_eq!((status(&bye_ok), header(&bye_ok, HeaderName::CSeq)), (200, "3 BYE".to_string()));

    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

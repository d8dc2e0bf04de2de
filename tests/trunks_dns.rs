//! Trunks named by host name and trunks at their call limit, with real peers: dnsmasq on
//! loopback serves the SRV and A records of `carrier.test` (RFC 3263), SIPp plays the
//! trunk, and a browser (the test UA over WebSocket) calls a number. A dead SRV primary
//! is failed over to the secondary; a trunk with `max_calls = 1` refuses a second
//! concurrent call with 503 and takes a new one once the first hung up.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::trunk::{trunk_config, uk_route};
use common::ua::{Ua, parse, status};
use common::*;
use webtrunk::config::Config;
use webtrunk::config::trunks::TrunkConfig;
use webtrunk::transport::TransportKind;

/// Distinct free UDP ports: all sockets are held until every port is known.
fn free_udp_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<_> = (0..N).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| sockets[i].local_addr().unwrap().port())
}

/// A UDP trunk at `host` (no port: SRV chooses when it is a name), asserting the identity
/// SIPp's trunk scenarios check.
fn trunk(name: &str, host: &str, port: Option<u16>) -> TrunkConfig {
    TrunkConfig {
        failover_timeout: Duration::from_secs(1),
        asserted_identity: Some("<sip:+442079460000@carrier.example>".into()),
        inbound_sources: Vec::new(),
        ..trunk_config(name, host, port)
    }
}

/// UK national numbers to `trunks`, rewritten to E.164.
fn config_routing_to(name: &str, trunks: Vec<TrunkConfig>) -> Config {
    let mut config = config_with_users(name, ALICE_AND_BOB);
    let names: Vec<&str> = trunks.iter().map(|t| t.name.as_str()).collect();
    config.routes = vec![uk_route(&names)];
    config.trunks = trunks;
    // SIPp's scenarios expect an INVITE, not a health ping.
    config.proxy.trunk_health_interval = Duration::ZERO;
    config
}

/// SIPp as the trunk for `calls` calls of `scenario` on UDP `port`.
fn sipp_trunk(scenario: &str, port: u16, calls: u32, server: SocketAddr) -> tokio::process::Child {
    sipp_uas_calls("u1", scenario, port, server, calls)
}

/// Alice calls 020 7946 0958 and the trunk answers; she hangs up.
async fn call_answered(server: &webtrunk::app::Server) {
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("02079460958").await);
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180, "{}", String::from_utf8_lossy(ringing.as_bytes()));
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    assert_eq!(status(&alice.ack_and_hang_up(&sent, &ok).await), 200);
}

/// Records for `carrier.test`: `_sip._udp` SRV entries (port, priority) at
/// `pbx.carrier.test`, which is 127.0.0.1.
fn carrier_records(srv: &[(u16, u16)]) -> Vec<String> {
    let mut records: Vec<String> = srv
        .iter()
        .map(|(port, priority)| format!("--srv-host=_sip._udp.carrier.test,pbx.carrier.test,{port},{priority},0"))
        .collect();
    records.push("--host-record=pbx.carrier.test,127.0.0.1".into());
    records.push("--local-ttl=60".into());
    records
}

async fn start_with_dns(config: &mut Config, dns: &Dnsmasq) -> webtrunk::app::Server {
    config.dns.servers = vec![dns.server()];
    let server = start(config).await;
    // The engine asks for the name at startup; give the loopback DNS time to answer (a
    // call before the answer would get 503, which is what the test would then report).
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
}

#[tokio::test]
async fn a_trunk_named_by_host_name_is_found_through_srv_and_keeps_its_name_in_the_request_uri() {
    let [port] = free_udp_ports();
    let dns = Dnsmasq::start("trunk-srv", &carrier_records(&[(port, 10)]));
    let mut config = config_routing_to("trunk-dns-srv", vec![trunk("carrier", "carrier.test", None)]);
    let server = start_with_dns(&mut config, &dns).await;
    let sipp = sipp_trunk("trunk_answer_named.xml", port, 1, server.addr(TransportKind::Udp).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    call_answered(&server).await;
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_dead_srv_primary_fails_over_to_the_secondary() {
    let [live] = free_udp_ports();
    // The dead primary is a socket we hold and never read: a port merely left free could
    // be taken by another test's server, whose answer (403) would end the search.
    let dead_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = dead_socket.local_addr().unwrap().port();
    let dns = Dnsmasq::start("trunk-srv-failover", &carrier_records(&[(dead, 10), (live, 20)]));
    let mut config = config_routing_to("trunk-dns-failover", vec![trunk("carrier", "carrier.test", None)]);
    let server = start_with_dns(&mut config, &dns).await;
    let sipp = sipp_trunk("trunk_answer_named.xml", live, 1, server.addr(TransportKind::Udp).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = webtrunk::clock::now();
    call_answered(&server).await;
    assert!(
        webtrunk::clock::now() - started >= Duration::from_secs(1),
        "the primary (priority 10) was tried first and abandoned at its failover timeout"
    );
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
    drop(dead_socket);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_gets_503_and_a_second_trunk_takes_the_call() {
    let [port] = free_udp_ports();
    // Authoritative for .test: `nowhere.test` is NXDOMAIN.
    let dns = Dnsmasq::start("trunk-nxdomain", &carrier_records(&[]));
    let mut config = config_routing_to("trunk-dns-nx", vec![trunk("nowhere", "nowhere.test", None)]);
    let server = start_with_dns(&mut config, &dns).await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("02079460958").await);
    let refused = alice.recv().await;
    assert_eq!(status(&refused), 503, "{}", String::from_utf8_lossy(refused.as_bytes()));
    alice.ack_failure(&sent, &refused).await;
    server.shutdown(Duration::from_secs(2)).await;

    let mut config = config_routing_to(
        "trunk-dns-nx-backup",
        vec![trunk("nowhere", "nowhere.test", None), trunk("backup", "127.0.0.1", Some(port))],
    );
    let server = start_with_dns(&mut config, &dns).await;
    let sipp = sipp_trunk("trunk_answer.xml", port, 1, server.addr(TransportKind::Udp).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    call_answered(&server).await;
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_trunk_at_max_calls_refuses_a_second_call_until_the_first_hangs_up() {
    let [port] = free_udp_ports();
    let mut carrier = trunk("carrier", "127.0.0.1", Some(port));
    carrier.max_calls = Some(1);
    let config = config_routing_to("trunk-max-calls", vec![carrier]);
    let server = start(&config).await;
    let sipp = sipp_trunk("trunk_answer.xml", port, 2, server.addr(TransportKind::Udp).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ws = server.addr(TransportKind::Ws).unwrap();
    let mut alice = Ua::ws("alice", "alice-secret", ws).await;
    alice.register().await;
    let mut bob = Ua::ws("bob", "bob-secret", ws).await;
    bob.register().await;

    let sent = parse(&alice.invite("02079460958").await);
    assert_eq!(status(&alice.recv().await), 180);
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    let first = alice.ack(&sent, &ok).await;

    // The trunk carries its one call: the second caller hears 503 at once.
    let sent = parse(&bob.invite("02079460958").await);
    let busy = bob.recv().await;
    assert_eq!(status(&busy), 503, "{}", String::from_utf8_lossy(busy.as_bytes()));
    assert!(String::from_utf8_lossy(busy.as_bytes()).starts_with("SIP/2.0 503 All Trunks Busy\r\n"));
    bob.ack_failure(&sent, &busy).await;

    let bye = alice.in_dialog("BYE", &first.contact, &first.route, &first.dialog, first.cseq + 1).await;
    let answer = alice.recv().await;
    assert_eq!(status(&answer), 200, "BYE {bye} answered {}", String::from_utf8_lossy(answer.as_bytes()));

    // The slot is free again.
    let sent = parse(&bob.invite("02079460958").await);
    assert_eq!(status(&bob.recv().await), 180);
    let ok = bob.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    assert_eq!(status(&bob.ack_and_hang_up(&sent, &ok).await), 200);
    sipp_finished(sipp).await;
    server.shutdown(Duration::from_secs(2)).await;
}

//! RFC 3263 resolution against a real DNS server: dnsmasq on loopback serves NAPTR, SRV,
//! A and AAAA records, and `webtrunk::dns::Resolver` asks it over UDP (TCP when an answer
//! is truncated).

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use webtrunk::clock::Entropy;
use webtrunk::dns::{DnsConfig, DnsError, Resolved, Resolver, SipTransport, Target};

fn args(records: &[&str]) -> Vec<String> {
    records.iter().map(|r| (*r).to_owned()).collect()
}

fn config(server: SocketAddr) -> DnsConfig {
    DnsConfig { servers: vec![server], timeout: Duration::from_secs(2), attempts: 2 }
}

fn resolver(server: SocketAddr) -> Resolver {
    Resolver::with_entropy(&config(server), Entropy::seeded(1)).unwrap()
}

fn summary(resolved: &Resolved) -> Vec<(SipTransport, String)> {
    resolved.targets.iter().map(|t| (t.transport, t.addr.to_string())).collect()
}

fn pair(transport: SipTransport, addr: &str) -> (SipTransport, String) {
    (transport, addr.to_owned())
}

/// A loopback port where nothing listens: UDP queries to it are refused by the kernel.
fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test]
async fn naptr_srv_a_chain_picks_the_transport_and_orders_targets() {
    let dns = Dnsmasq::start(
        "naptr",
        &args(&[
            // Order 10 prefers TCP; UDP is the order-20 alternative; WebSocket is not ours.
            "--naptr-record=trunk.test,20,10,s,SIP+D2U,,_sip._udp.trunk.test",
            "--naptr-record=trunk.test,10,10,s,SIP+D2T,,_sip._tcp.trunk.test",
            "--naptr-record=trunk.test,5,10,s,SIP+D2W,,_sip._ws.trunk.test",
            "--srv-host=_sip._tcp.trunk.test,pbx-a.trunk.test,5070,10,0",
            "--srv-host=_sip._tcp.trunk.test,pbx-b.trunk.test,5072,20,0",
            "--srv-host=_sip._udp.trunk.test,pbx-c.trunk.test,5080,10,0",
            "--srv-host=_sip._ws.trunk.test,pbx-a.trunk.test,80,10,0",
            "--host-record=pbx-a.trunk.test,127.0.0.11",
            "--host-record=pbx-b.trunk.test,127.0.0.12",
            "--host-record=pbx-c.trunk.test,127.0.0.13",
            "--local-ttl=120",
        ]),
    );
    let resolved = resolver(dns.server()).resolve("trunk.test", None, None).await.unwrap();
    assert_eq!(
        summary(&resolved),
        [
            pair(SipTransport::Tcp, "127.0.0.11:5070"),
            pair(SipTransport::Tcp, "127.0.0.12:5072"),
            pair(SipTransport::Udp, "127.0.0.13:5080"),
        ]
    );
    assert_eq!((resolved.targets[0].priority, resolved.targets[1].priority), (10, 20));
    // Every record carried dnsmasq's --local-ttl.
    assert_eq!(resolved.ttl, Duration::from_secs(120));
}

#[tokio::test]
async fn srv_priorities_put_the_primaries_first_and_weights_share_the_lead() {
    let dns = Dnsmasq::start(
        "srv",
        &args(&[
            "--srv-host=_sip._udp.carrier.test,backup.carrier.test,5060,20,100",
            "--srv-host=_sip._udp.carrier.test,primary-a.carrier.test,5060,10,60",
            "--srv-host=_sip._udp.carrier.test,primary-b.carrier.test,5060,10,40",
            "--host-record=backup.carrier.test,127.0.0.30",
            "--host-record=primary-a.carrier.test,127.0.0.31",
            "--host-record=primary-b.carrier.test,127.0.0.32",
        ]),
    );
    let mut firsts = Vec::new();
    for seed in 0..20 {
        let resolver = Resolver::with_entropy(&config(dns.server()), Entropy::seeded(seed)).unwrap();
        let resolved = resolver.resolve("carrier.test", None, Some(SipTransport::Udp)).await.unwrap();
        let addrs: Vec<String> = resolved.targets.iter().map(|t| t.addr.ip().to_string()).collect();
        assert_eq!(addrs.len(), 3, "{addrs:?}");
        assert_eq!(addrs[2], "127.0.0.30", "the priority-20 backup comes last: {addrs:?}");
        assert!(resolved.targets.iter().all(|t| t.transport == SipTransport::Udp && t.addr.port() == 5060));
        firsts.push(addrs[0].clone());
    }
    // The draw is random within priority 10: both primaries lead sometimes.
    assert!(firsts.iter().any(|a| a == "127.0.0.31"), "{firsts:?}");
    assert!(firsts.iter().any(|a| a == "127.0.0.32"), "{firsts:?}");
    // A fixed seed gives a fixed order.
    let once = resolver(dns.server()).resolve("carrier.test", None, Some(SipTransport::Udp)).await.unwrap();
    let again = resolver(dns.server()).resolve("carrier.test", None, Some(SipTransport::Udp)).await.unwrap();
    assert_eq!(once, again);
}

#[tokio::test]
async fn a_name_with_only_an_a_record_falls_back_to_udp_on_5060() {
    let dns = Dnsmasq::start("a-only", &args(&["--host-record=plain.test,127.0.0.40"]));
    let resolved = resolver(dns.server()).resolve("plain.test", None, None).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Udp, "127.0.0.40:5060")]);
    // dnsmasq gives its records TTL 0 by default: the floor keeps the engine from asking
    // again on every request.
    assert_eq!(resolved.ttl, webtrunk::dns::TTL_FLOOR);

    // With a transport but no SRV record, the transport's default port.
    let resolved = resolver(dns.server()).resolve("plain.test", None, Some(SipTransport::Tls)).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tls, "127.0.0.40:5061")]);
}

#[tokio::test]
async fn an_explicit_port_skips_naptr_and_srv() {
    let dns = Dnsmasq::start(
        "port",
        &args(&[
            "--naptr-record=pbx.test,10,10,s,SIP+D2T,,_sip._tcp.pbx.test",
            "--srv-host=_sip._tcp.pbx.test,elsewhere.test,5070,10,0",
            "--srv-host=_sip._udp.pbx.test,elsewhere.test,5070,10,0",
            "--host-record=elsewhere.test,127.0.0.51",
            "--host-record=pbx.test,127.0.0.50",
        ]),
    );
    let resolver = resolver(dns.server());
    let resolved = resolver.resolve("pbx.test", Some(5099), None).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Udp, "127.0.0.50:5099")]);
    let resolved = resolver.resolve("PBX.test.", Some(5098), Some(SipTransport::Tcp)).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tcp, "127.0.0.50:5098")]);
    // Without the port the same name goes through NAPTR and SRV.
    let resolved = resolver.resolve("pbx.test", None, None).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tcp, "127.0.0.51:5070")]);
}

#[tokio::test]
async fn nxdomain_is_an_error_naming_the_host() {
    let dns = Dnsmasq::start("nx", &args(&["--host-record=exists.test,127.0.0.60"]));
    let error = resolver(dns.server()).resolve("missing.test", None, None).await.unwrap_err();
    assert_eq!(error, DnsError::NxDomain { host: "missing.test".into() });
    assert_eq!(error.to_string(), "missing.test: no such domain (NXDOMAIN)");
    let error = resolver(dns.server()).resolve("missing.test", Some(5060), Some(SipTransport::Tcp)).await.unwrap_err();
    assert_eq!(error, DnsError::NxDomain { host: "missing.test".into() });
}

#[tokio::test]
async fn a_single_dot_srv_target_means_the_service_is_not_offered() {
    // dnsmasq's --srv-host with no target serves the target ".".
    let dns =
        Dnsmasq::start("dot", &args(&["--srv-host=_sips._tcp.closed.test", "--host-record=closed.test,127.0.0.70"]));
    let error = resolver(dns.server()).resolve("closed.test", None, Some(SipTransport::Tls)).await.unwrap_err();
    assert_eq!(error, DnsError::ServiceUnavailable { host: "closed.test".into() });
    assert!(error.to_string().starts_with("closed.test: "), "{error}");
}

#[tokio::test]
async fn aaaa_records_give_ipv6_targets() {
    let dns = Dnsmasq::start(
        "aaaa",
        &args(&["--host-record=six.test,::1", "--host-record=both.test,127.0.0.80,::1", "--local-ttl=90"]),
    );
    let resolver = resolver(dns.server());
    let resolved = resolver.resolve("six.test", None, None).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Udp, "[::1]:5060")]);
    assert_eq!(resolved.ttl, Duration::from_secs(90));
    // A before AAAA when a name has both.
    let resolved = resolver.resolve("both.test", Some(5070), Some(SipTransport::Tcp)).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tcp, "127.0.0.80:5070"), pair(SipTransport::Tcp, "[::1]:5070")]);
}

#[tokio::test]
async fn an_answer_too_big_for_udp_is_fetched_over_tcp() {
    // 120 A records (about 2 KB) do not fit the 1232-byte EDNS datagram: dnsmasq sets TC
    // and the resolver asks again over TCP (RFC 7766 §5).
    let records: Vec<String> = (1..=120).map(|i| format!("--host-record=big.test,127.0.1.{i}")).collect();
    let dns = Dnsmasq::start("tcp", &records);
    let resolved = resolver(dns.server()).resolve("big.test", Some(5060), None).await.unwrap();
    assert_eq!(resolved.targets.len(), 120);
}

#[tokio::test]
async fn ip_literals_and_invalid_names_need_no_dns_server() {
    // Nothing listens at the configured server.
    let resolver = resolver(closed_port());
    let resolved = resolver.resolve("127.0.0.1", None, Some(SipTransport::Tcp)).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tcp, "127.0.0.1:5060")]);
    let resolved = resolver.resolve("[::1]", Some(5070), None).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Udp, "[::1]:5070")]);
    let sips = Target { host: "127.0.0.1".into(), port: None, transport: None, sips: true };
    let resolved = resolver.resolve_target(sips).await.unwrap();
    assert_eq!(summary(&resolved), [pair(SipTransport::Tls, "127.0.0.1:5061")]);

    let error = resolver.resolve("df7jal23ls0d.invalid", None, None).await.unwrap_err();
    assert_eq!(error, DnsError::InvalidDomain { host: "df7jal23ls0d.invalid".into() });
}

#[tokio::test]
async fn a_silent_server_is_a_timeout_naming_the_host() {
    // Bound, so the kernel does not refuse; never read, so never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config =
        DnsConfig { servers: vec![silent.local_addr().unwrap()], timeout: Duration::from_millis(200), attempts: 1 };
    let resolver = Resolver::with_entropy(&config, Entropy::seeded(1)).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), resolver.resolve("quiet.test", None, None)).await;
    let error = answer.expect("the resolver gives up by itself").unwrap_err();
    assert!(matches!(&error, DnsError::Timeout { host, .. } if host == "quiet.test"), "{error:?}");
    assert_eq!(error.to_string(), "quiet.test: DNS query NAPTR quiet.test. timed out");
}

#[tokio::test]
async fn a_server_port_with_nothing_behind_it_times_out() {
    // The kernel's port-unreachable never reaches an unconnected UDP socket, so this looks
    // like silence: `attempts` tries of `timeout` each.
    let config = DnsConfig { servers: vec![closed_port()], timeout: Duration::from_millis(300), attempts: 2 };
    let resolver = Resolver::with_entropy(&config, Entropy::seeded(1)).unwrap();
    let start = webtrunk::clock::now();
    let error = resolver.resolve("gone.test", Some(5060), None).await.unwrap_err();
    let took = webtrunk::clock::now() - start;
    assert!(matches!(&error, DnsError::Timeout { host, .. } if host == "gone.test"), "{error:?}");
    assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(3), "two tries of 300 ms took {took:?}");
}

#[test]
fn dns_config_reads_server_strings_and_rejects_unknown_keys() {
    let parse = |text: &str| {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<DnsConfig>())
    };
    let parsed = parse("servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\ntimeout = \"1500ms\"\nattempts = 3").unwrap();
    assert_eq!(parsed.servers, ["127.0.0.1:5353".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]);
    assert_eq!((parsed.timeout, parsed.attempts), (Duration::from_millis(1500), 3));
    assert_eq!(parse("").unwrap(), DnsConfig::default());
    let error = parse("server = [\"127.0.0.1:53\"]").unwrap_err().to_string();
    assert!(error.contains("server"), "{error}");
    assert!(parse("servers = [\"localhost:53\"]").is_err(), "servers are addresses, not names");
}

#[test]
fn resolver_setup_refuses_zero_attempts_and_zero_timeout() {
    let mut config = config(closed_port());
    config.attempts = 0;
    assert!(Resolver::new(&config).is_err());
    config.attempts = 1;
    config.timeout = Duration::ZERO;
    assert!(Resolver::new(&config).is_err());
}

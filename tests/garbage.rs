//! Garbage of every kind on every transport: after each, the server still answers the
//! next client. Nothing a client sends may crash the process or stall the others.

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use webtrunk::transport::TransportKind;

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

/// Reads until the peer closes or `limit` passes; true when it closed.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            () = &mut deadline => return false,
        }
    }
}

#[tokio::test]
async fn random_truncated_and_nul_bytes_leave_every_transport_answering() {
    let config = loopback_config("garbage");
    let server = start(&config).await;
    let mut rng = StdRng::seed_from_u64(4475);
    let whole = options("g", "UDP").into_bytes();
    let mut samples: Vec<Vec<u8>> = (0..20).map(|i| random_bytes(&mut rng, 1 + i * 97)).collect();
    samples.extend((1..whole.len()).step_by(13).map(|cut| whole[..cut].to_vec()));
    samples.push(vec![0u8; 512]);
    samples.push(b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP h\0\0\0;branch=z9hG4bK\0\r\n\r\n".to_vec());
    samples.push(b"\r\n\r\n\r\n\r\n\r\n".to_vec());

    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = server.addr(TransportKind::Udp).unwrap();
    for sample in &samples {
        udp.send_to(sample, udp_addr).await.unwrap();
    }
    assert_all_answer(&server, &config, "udp garbage").await;

    for kind in [TransportKind::Tcp, TransportKind::Tls, TransportKind::Ws, TransportKind::Wss] {
        for sample in samples.iter().step_by(3) {
            // Raw bytes where a TLS ClientHello or an HTTP upgrade is expected.
            let mut tcp = TcpStream::connect(server.addr(kind).unwrap()).await.unwrap();
            let _ = tcp.write_all(sample).await;
            drop(tcp);
        }
    }
    for sample in samples.iter().step_by(2) {
        let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
        let _ = tcp.write_all(sample).await;
        let _ = tcp.write_all(b"\r\n\r\n").await;
        let mut ws = raw_ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
        let _ = ws.write_all(&ws_frame(0x2, sample, true)).await;
    }
    assert_all_answer(&server, &config, "stream garbage").await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn garbage_on_a_flow_gets_400_when_it_looks_like_a_request() {
    let config = loopback_config("garbage400");
    let server = start(&config).await;
    let mut ws = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let broken = "OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKb1\r\nthis is not a header\r\n\
                  Call-ID: broken-1\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let reply = ws_exchange(&mut ws, broken).await;
    assert!(reply.starts_with("SIP/2.0 400 Malformed Header Line\r\n"), "{reply}");
    assert!(reply.contains("Call-ID: broken-1\r\n"), "{reply}");
    // The same flow keeps working.
    let reply = ws_exchange(&mut ws, &options("after-400", "WS")).await;
    assert!(reply.starts_with("SIP/2.0 200 OK"), "{reply}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn one_megabyte_messages_are_refused_without_buffering_them() {
    let config = loopback_config("megabyte");
    let server = start(&config).await;
    let big = vec![b'A'; 1 << 20];

    let mut ws = raw_ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let _ = ws.write_all(&ws_frame(0x1, &big, true)).await;
    let (_, code) = raw_ws_until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1009), "WebSocket message too big closes with 1009");

    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let _ = tcp.write_all(&big).await;
    assert!(closed_within(&mut tcp, Duration::from_secs(5)).await, "TCP stream of 1 MB without a frame is closed");

    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp).unwrap()).await.unwrap();
    let header = "OPTIONS sip:localhost SIP/2.0\r\nContent-Length: 1048576\r\n\r\n";
    let _ = tcp.write_all(header.as_bytes()).await;
    assert!(closed_within(&mut tcp, Duration::from_secs(5)).await, "declared 1 MB body is refused up front");

    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _ = udp.send_to(&big[..65_000], server.addr(TransportKind::Udp).unwrap()).await;
    assert_all_answer(&server, &config, "1 MB").await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn unmasked_and_reserved_opcode_frames_close_the_flow_with_1002() {
    let config = loopback_config("frames");
    let server = start(&config).await;
    let addr = server.addr(TransportKind::Ws).unwrap();

    let mut unmasked = raw_ws_connect(addr).await;
    unmasked.write_all(&ws_frame(0x1, options("um", "WS").as_bytes(), false)).await.unwrap();
    let (_, code) = raw_ws_until_close(&mut unmasked, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1002), "RFC 6455 §5.1: a server closes on an unmasked client frame");

    for opcode in [0x3, 0x7, 0xb] {
        let mut reserved = raw_ws_connect(addr).await;
        reserved.write_all(&ws_frame(opcode, b"x", true)).await.unwrap();
        let (_, code) = raw_ws_until_close(&mut reserved, Duration::from_secs(5)).await;
        assert_eq!(code, Some(1002), "reserved opcode {opcode:#x}");
    }
    assert_all_answer(&server, &config, "bad frames").await;
    server.shutdown(Duration::from_secs(2)).await;
}

//! Wire-layer throughput. The baseline in the same run is copying the message bytes into
//! a fresh buffer, the least any parser must do; compare the others against it rather
//! than against numbers from another day or machine.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use webtrunk::message::{HeaderName, Limits, Message, NameAddr, Via, digest, framing};

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK6rql6fa\r\n\
Max-Forwards: 69\r\n\
To: <sip:alice@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=qig3tl9h1m\r\n\
Call-ID: 2ngi6p8cebt0knl4fbnc\r\n\
CSeq: 2 REGISTER\r\n\
Authorization: Digest algorithm=MD5, username=\"alice\", realm=\"example.com\", nonce=\"6a8f1bd0c4e1e0d9\", uri=\"sip:example.com\", response=\"0a4f113b1c6a9c2c5a0b0e6c6e1d0e3f\", qop=auth, cnonce=\"8o3pf0ckq1b6\", nc=00000001\r\n\
Contact: <sip:u5ve0fk9@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0c6b2d4e-4fa1-4b57-a8b3-7d1d1d8f9a30>\";expires=600\r\n\
Expires: 600\r\n\
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
Supported: path,gruu,outbound\r\n\
User-Agent: JsSIP 3.13.8\r\n\
Content-Length: 0\r\n\r\n";

fn invite() -> String {
    let mut sdp = String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    sdp.push_str("a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n");
    for i in 0..60 {
        sdp.push_str(&format!("a=candidate:{i} 1 udp 2122260223 192.0.2.{i} 5{i:04} typ host generation 0\r\n"));
    }
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n\
         Max-Forwards: 69\r\nTo: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
         Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:u@df7jal23ls0d.invalid;transport=ws;ob>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn typed_reads(m: &Message) -> usize {
    let via = m.top_via_raw().map(|v| Via::parse(&v).map(|v| v.branch().map(<[u8]>::len)).ok());
    let from = m.first_value(HeaderName::From).map(|v| NameAddr::parse(&v).ok().and_then(|n| n.tag().map(<[u8]>::len)));
    let to = m.first_value(HeaderName::To).map(|v| NameAddr::parse(&v).is_ok());
    black_box((via, from, to, m.cseq(), m.call_id().map(|c| c.len())));
    m.headers().len()
}

fn wire(c: &mut Criterion) {
    let limits = Limits::default();
    let invite = invite();
    for (name, text) in [("register", REGISTER), ("invite", invite.as_str())] {
        let raw = Bytes::copy_from_slice(text.as_bytes());
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("baseline_copy", |b| b.iter(|| Bytes::copy_from_slice(black_box(&raw[..]))));
        group.bench_function("frame", |b| b.iter(|| framing::frame(black_box(&raw[..]), limits.max_message_size)));
        group.bench_function("parse", |b| b.iter(|| Message::parse(black_box(raw.clone()), &limits)));
        group.bench_function("parse_typed", |b| {
            b.iter(|| Message::parse(black_box(raw.clone()), &limits).map(|m| typed_reads(&m)))
        });
        group.finish();
    }
}

/// Authorization values as the two clients we see most send them: SIPp (no spaces, nc
/// before nonce) and JsSIP (`, ` separators, algorithm first).
const SIPP_CREDENTIALS: &str = "Digest username=\"user17\",realm=\"localhost\",cnonce=\"6b8b4567\",nc=00000001,qop=auth,uri=\"sip:localhost\",nonce=\"3f5d0e4c8a1b7f2e9d6c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e\",response=\"0a4f113b1c6a9c2c5a0b0e6c6e1d0e3f\",algorithm=MD5";
const JSSIP_CREDENTIALS: &str = "Digest algorithm=MD5, username=\"alice\", realm=\"localhost\", nonce=\"3f5d0e4c8a1b7f2e9d6c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e\", uri=\"sip:localhost\", response=\"0a4f113b1c6a9c2c5a0b0e6c6e1d0e3f\", qop=auth, cnonce=\"8o3pf0ckq1b6\", nc=00000001";

fn digest_credentials(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest_credentials");
    group.throughput(Throughput::Elements(1));
    for (name, value) in [("sipp", SIPP_CREDENTIALS), ("jssip", JSSIP_CREDENTIALS)] {
        group.bench_function(name, |b| b.iter(|| digest::parse_credentials(black_box(value.as_bytes()))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = wire, digest_credentials
}
criterion_main!(benches);

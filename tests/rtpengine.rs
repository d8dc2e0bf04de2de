//! webtrunk's ng client against a real rtpengine on loopback: the SDP each leg gets in both
//! call directions, session teardown, retries and failover between instances.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::rtpengine::{Daemon, NgLoop, Silent};
use webtrunk::clock;
use webtrunk::media::{CallKey, Command, Leg, MediaConfig, MediaError, MediaReply};
use webtrunk::message::sdp::{self, SdpSummary};

const CHROMIUM_OFFER: &[u8] = include_bytes!("fixtures/sdp/chromium_offer.sdp");
const CHROMIUM_ANSWER: &[u8] = include_bytes!("fixtures/sdp/chromium_answer.sdp");
const ASTERISK_ANSWER: &[u8] = include_bytes!("fixtures/sdp/asterisk_answer.sdp");
const SIPP_OFFER: &[u8] = include_bytes!("fixtures/sdp/sipp_offer.sdp");

/// The trunk-side body must leave room for the SIP headers in a 1300-byte UDP INVITE.
const TRUNK_SDP_BUDGET: usize = 700;

fn config(instances: Vec<std::net::SocketAddr>, timeout: Duration) -> MediaConfig {
    MediaConfig { instances, timeout, retries: 2 }
}

fn key(call_id: &str, to_tag: Option<&str>) -> CallKey {
    CallKey { call_id: call_id.into(), from_tag: "caller-tag".into(), to_tag: to_tag.map(Into::into) }
}

fn body(reply: &MediaReply) -> (String, SdpSummary) {
    let sdp = reply.sdp.as_ref().expect("the reply carries SDP");
    (String::from_utf8(sdp.to_vec()).unwrap(), sdp::inspect(sdp).expect("rtpengine's SDP reads"))
}

/// No line of `text` starts with any of `prefixes`.
fn assert_no_lines(text: &str, prefixes: &[&str]) {
    for line in text.lines() {
        assert!(!prefixes.iter().any(|p| line.starts_with(p)), "unexpected line {line:?} in\n{text}");
    }
}

fn assert_browser_side(text: &str, summary: &SdpSummary) {
    assert!(summary.webrtc, "{text}");
    assert_eq!(summary.media[0].protocol, "UDP/TLS/RTP/SAVPF");
    assert!(summary.ice_ufrag.is_some() && summary.ice_pwd.is_some(), "{text}");
    for needed in ["a=candidate:", "a=fingerprint:sha-256 ", "a=setup:", "a=rtcp-mux"] {
        assert!(text.contains(needed), "no {needed} in\n{text}");
    }
    assert_no_lines(text, &["a=crypto:"]);
}

fn assert_trunk_side(text: &str, summary: &SdpSummary) {
    assert!(!summary.webrtc, "{text}");
    assert!(summary.media.iter().all(|m| m.protocol == "RTP/AVP"), "{text}");
    assert_no_lines(
        text,
        &[
            "a=ice-",
            "a=candidate",
            "a=end-of-candidates",
            "a=fingerprint",
            "a=setup",
            "a=extmap",
            "a=ssrc",
            "a=msid",
            "a=rtcp-mux",
            "a=crypto",
        ],
    );
}

#[tokio::test]
async fn browser_calls_trunk_through_rtpengine() {
    let daemon = Daemon::start();
    let mut ng = NgLoop::new(config(vec![daemon.ng], Duration::from_secs(1))).await;
    let codecs = vec!["PCMU".to_owned(), "PCMA".to_owned()];

    // Browser → trunk offer: plain RTP, only the trunk's codecs, small.
    let offer = Command::Offer {
        sdp: Bytes::from_static(CHROMIUM_OFFER),
        from: Leg::Browser,
        to: Leg::PlainRtp,
        codecs: codecs.clone(),
    };
    let reply = ng.request(&key("b2t", None), offer).await.expect("offer accepted");
    assert_eq!(reply.instance, daemon.ng);
    let (text, summary) = body(&reply);
    eprintln!("trunk-side offer, {} bytes (browser sent {}):\n{text}", text.len(), CHROMIUM_OFFER.len());
    assert_trunk_side(&text, &summary);
    assert!(text.len() < TRUNK_SDP_BUDGET, "{} bytes:\n{text}", text.len());
    let audio = &summary.media[0];
    assert_eq!(audio.kind, "audio");
    assert_ne!(audio.port, 0);
    assert_eq!(audio.connection.as_deref(), Some("127.0.0.1"));
    assert_eq!(audio.codecs, ["PCMU", "PCMA", "telephone-event"]);
    assert_eq!((summary.media[1].kind.as_str(), summary.media[1].port), ("video", 0), "video has no trunk codec");

    // Trunk → browser answer: WebRTC again, and rtpengine keeps the active DTLS role.
    let answer = Command::Answer {
        sdp: Bytes::from_static(ASTERISK_ANSWER),
        from: Leg::PlainRtp,
        to: Leg::Browser,
        codecs: codecs.clone(),
    };
    let reply = ng.request(&key("b2t", Some("callee-tag")), answer).await.expect("answer accepted");
    let (text, summary) = body(&reply);
    assert_browser_side(&text, &summary);
    assert_eq!(summary.media.len(), 2, "one answer section per offered section (RFC 3264 §6)");
    assert_eq!(summary.media[0].codecs, ["PCMU", "telephone-event"]);
    assert_eq!(summary.media[1].port, 0);
    assert!(text.contains("a=setup:active"), "{text}");
    assert_no_lines(&text, &["a=setup:passive"]);

    let live = ng.request(&key("b2t", None), Command::Query).await;
    assert!(live.is_ok(), "{live:?}");

    // Delete, then the daemon no longer knows the call.
    ng.request(&key("b2t", None), Command::Delete).await.expect("delete accepted");
    match ng.request(&key("b2t", None), Command::Query).await {
        Err(MediaError::Rtpengine(reason)) => assert!(reason.contains("Unknown call-id"), "{reason}"),
        other => panic!("query after delete: {other:?}"),
    }
}

#[tokio::test]
async fn trunk_calls_browser_through_rtpengine() {
    let daemon = Daemon::start();
    let mut ng = NgLoop::new(config(vec![daemon.ng], Duration::from_secs(1))).await;

    // Trunk → browser offer: ICE, DTLS-SRTP, rtcp-mux and a=mid, as a browser needs.
    let offer =
        Command::Offer { sdp: Bytes::from_static(SIPP_OFFER), from: Leg::PlainRtp, to: Leg::Browser, codecs: vec![] };
    let reply = ng.request(&key("t2b", None), offer).await.expect("offer accepted");
    let (text, summary) = body(&reply);
    assert_browser_side(&text, &summary);
    assert!(text.contains("a=setup:actpass"), "{text}");
    // The browser answer fixture answers mid 1, the one rtpengine generates.
    assert!(text.contains("a=mid:1\r\n"), "{text}");
    assert_eq!(summary.media[0].codecs, ["PCMU", "PCMA", "telephone-event"]);

    // Browser → trunk answer: plain RTP without the browser's WebRTC lines.
    let answer = Command::Answer {
        sdp: Bytes::from_static(CHROMIUM_ANSWER),
        from: Leg::Browser,
        to: Leg::PlainRtp,
        codecs: vec![],
    };
    let reply = ng.request(&key("t2b", Some("browser-tag")), answer).await.expect("answer accepted");
    let (text, summary) = body(&reply);
    assert_trunk_side(&text, &summary);
    assert_eq!(summary.media[0].codecs, ["PCMU", "telephone-event"]);
    assert!(text.len() < TRUNK_SDP_BUDGET, "{text}");

    ng.request(&key("t2b", None), Command::Delete).await.expect("delete accepted");
    assert!(matches!(ng.request(&key("t2b", None), Command::Query).await, Err(MediaError::Rtpengine(_))));
}

#[tokio::test]
async fn same_kind_legs_are_bridged_too() {
    let daemon = Daemon::start();
    let mut ng = NgLoop::new(config(vec![daemon.ng], Duration::from_secs(1))).await;

    let browsers = Command::Offer {
        sdp: Bytes::from_static(CHROMIUM_OFFER),
        from: Leg::Browser,
        to: Leg::Browser,
        codecs: vec![],
    };
    let reply = ng.request(&key("b2b", None), browsers).await.expect("browser to browser");
    let (text, summary) = body(&reply);
    assert_browser_side(&text, &summary);
    assert_eq!(summary.media.len(), 2);
    assert!(summary.media.iter().all(|m| m.port != 0));
    assert_ne!(summary.ice_ufrag.as_deref(), Some("kX9c"), "rtpengine's own ICE credentials, not the caller's");

    let trunks =
        Command::Offer { sdp: Bytes::from_static(SIPP_OFFER), from: Leg::PlainRtp, to: Leg::PlainRtp, codecs: vec![] };
    let reply = ng.request(&key("t2t", None), trunks).await.expect("trunk to trunk");
    let (text, summary) = body(&reply);
    assert_trunk_side(&text, &summary);
    assert_ne!(summary.media[0].port, 6000, "rtpengine's port, not the caller's");

    for call in ["b2b", "t2t"] {
        ng.request(&key(call, None), Command::Delete).await.expect("delete accepted");
    }
}

#[tokio::test]
async fn a_silent_instance_fails_over_to_the_live_one() {
    let daemon = Daemon::start();
    let dead = Silent::bind();
    let timeout = Duration::from_millis(150);
    let mut ng = NgLoop::new(config(vec![dead.addr(), daemon.ng], timeout)).await;

    let started = clock::now();
    let offer =
        Command::Offer { sdp: Bytes::from_static(SIPP_OFFER), from: Leg::PlainRtp, to: Leg::Browser, codecs: vec![] };
    let reply = ng.request(&key("failover", None), offer).await.expect("the live instance answers");
    assert_eq!(reply.instance, daemon.ng);
    assert!(started.elapsed() >= 2 * timeout, "two tries on the dead instance first");
    let tries = dead.received();
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0], tries[1], "a retry is the same datagram, cookie included");

    // The call now lives on the live instance: nothing more goes to the dead one.
    assert_eq!(ng.client.placement("failover"), Some(daemon.ng));
    let started = clock::now();
    ng.request(&key("failover", None), Command::Query).await.expect("query on the placed instance");
    assert!(started.elapsed() < timeout);
    ng.request(&key("failover", None), Command::Delete).await.expect("delete");
    assert!(dead.received().is_empty());

    // A health check: ping answers pong.
    assert!(ng.ping(daemon.ng).await.is_ok());
}

#[tokio::test]
async fn every_instance_dead_is_a_timeout_in_bounded_time() {
    let dead = [Silent::bind(), Silent::bind()];
    let timeout = Duration::from_millis(100);
    let mut ng = NgLoop::new(config(dead.iter().map(Silent::addr).collect(), timeout)).await;

    let started = clock::now();
    let offer = Command::Offer {
        sdp: Bytes::from_static(CHROMIUM_OFFER),
        from: Leg::Browser,
        to: Leg::PlainRtp,
        codecs: vec![],
    };
    let outcome = ng.request(&key("nobody", None), offer).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, Err(MediaError::Timeout));
    assert_eq!(MediaError::Timeout.status(), 503);
    // 2 instances x 2 tries x 100 ms, plus scheduling slack.
    assert!(elapsed >= 4 * timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(dead.iter().map(|d| d.received().len()).collect::<Vec<_>>(), [2, 2]);
    assert_eq!(ng.client.pending(), 0);
}

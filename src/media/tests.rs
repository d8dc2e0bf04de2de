//! The ng client driven by a simulated clock: instants are a base plus durations.

use super::*;
use crate::clock;

const SIPP_OFFER: &[u8] = include_bytes!("../../tests/fixtures/sdp/sipp_offer.sdp");

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(instances: &[u16]) -> MediaConfig {
    MediaConfig { instances: instances.iter().map(|&p| addr(p)).collect(), timeout: Duration::from_secs(1), retries: 2 }
}

fn call(id: &str) -> CallKey {
    CallKey { call_id: id.into(), from_tag: "f".into(), to_tag: None }
}

fn offer() -> Command {
    Command::Offer { sdp: Bytes::from_static(SIPP_OFFER), from: Leg::PlainRtp, to: Leg::Browser, codecs: vec![] }
}

fn transmits(engine: &mut Rtpengine) -> Vec<(SocketAddr, Bytes)> {
    std::iter::from_fn(|| engine.poll_transmit()).collect()
}

fn cookie(datagram: &[u8]) -> &[u8] {
    let space = datagram.iter().position(|&b| b == b' ').unwrap();
    &datagram[..space]
}

/// What rtpengine would send back for `request` with `dict` as the bencoded reply.
fn reply(request: &[u8], dict: &[u8]) -> Vec<u8> {
    [cookie(request), b" ", dict].concat()
}

const OK_WITH_SDP: &[u8] = b"d6:result2:ok3:sdp3:v=0e";

#[test]
fn cookies_are_unique_per_request_and_carry_the_seed() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2223]), 0xabc);
    let a = engine.request(t0, &call("a"), offer());
    let b = engine.request(t0, &call("b"), offer());
    assert_ne!(a, b);
    let sent = transmits(&mut engine);
    assert_eq!(sent.len(), 2);
    assert_ne!(cookie(&sent[0].1), cookie(&sent[1].1));
    assert!(sent.iter().all(|(_, d)| cookie(d).starts_with(b"abc-")));
    assert!(sent[0].1.ends_with(b"e") && sent[0].1.windows(9).any(|w| w == b"5:offer7:"));
    let other = Rtpengine::new(config(&[2223]), 0xdef).request(t0, &call("a"), offer());
    assert_eq!(other, a, "ids repeat across runs; cookies do not, thanks to the seed");
}

#[test]
fn a_retransmission_reuses_its_cookie_then_fails_over_then_times_out() {
    let t0 = clock::now();
    let second = Duration::from_secs(1);
    let mut engine = Rtpengine::new(config(&[2001, 2002]), 1);
    let id = engine.request(t0, &call("x"), offer());
    let first = transmits(&mut engine);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, addr(2001));
    assert_eq!(engine.poll_timeout(), Some(t0 + second));

    engine.handle_timeout(t0 + second / 2);
    assert!(transmits(&mut engine).is_empty(), "nothing is due before the timeout");

    engine.handle_timeout(t0 + second);
    let retry = transmits(&mut engine);
    assert_eq!(retry, vec![(addr(2001), first[0].1.clone())], "second try, same bytes, same instance");

    engine.handle_timeout(t0 + 2 * second);
    let failover = transmits(&mut engine);
    assert_eq!(failover, vec![(addr(2002), first[0].1.clone())], "tries used up: next instance");

    engine.handle_timeout(t0 + 3 * second);
    assert_eq!(transmits(&mut engine).len(), 1);
    assert_eq!(engine.poll_outcome(), None);

    engine.handle_timeout(t0 + 4 * second);
    assert!(transmits(&mut engine).is_empty());
    assert_eq!(engine.poll_outcome(), Some((id, Err(MediaError::Timeout))));
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(engine.pending(), 0);
}

#[test]
fn a_reply_completes_the_request_and_places_the_call() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001, 2002]), 7);
    let id = engine.request(t0, &call("x"), offer());
    let sent = transmits(&mut engine);
    engine.handle_timeout(t0 + Duration::from_secs(1));
    engine.handle_timeout(t0 + Duration::from_secs(2));
    let tries: Vec<SocketAddr> = transmits(&mut engine).into_iter().map(|(to, _)| to).collect();
    assert_eq!(tries, [addr(2001), addr(2002)]);

    // The second instance answers.
    engine.handle_datagram(t0 + Duration::from_secs(2), addr(2002), &reply(&sent[0].1, OK_WITH_SDP));
    let (done, result) = engine.poll_outcome().unwrap();
    assert_eq!(done, id);
    let reply_ok = result.unwrap();
    assert_eq!(reply_ok.sdp.as_deref(), Some(&b"v=0"[..]));
    assert_eq!(reply_ok.instance, addr(2002));
    assert_eq!(engine.placement("x"), Some(addr(2002)));
    assert_eq!(engine.poll_timeout(), None);

    // Everything else for this call goes to that instance only, without failover.
    let key = CallKey { to_tag: Some("t".into()), ..call("x") };
    let answer =
        Command::Answer { sdp: Bytes::from_static(SIPP_OFFER), from: Leg::Browser, to: Leg::PlainRtp, codecs: vec![] };
    let id = engine.request(t0, &key, answer);
    for step in 0..2 {
        let sent = transmits(&mut engine);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, addr(2002), "try {step}");
        engine.handle_timeout(t0 + Duration::from_secs(step + 1));
    }
    assert!(transmits(&mut engine).is_empty());
    assert_eq!(engine.poll_outcome(), Some((id, Err(MediaError::Timeout))));
}

#[test]
fn unknown_cookies_and_strangers_are_ignored() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001, 2002]), 0x5eed);
    let id = engine.request(t0, &call("x"), offer());
    let sent = transmits(&mut engine);
    let good = reply(&sent[0].1, OK_WITH_SDP);

    for (from, bytes) in [
        (addr(2001), b"5eed-99 d6:result2:oke".to_vec()),
        (addr(2001), b"other-0 d6:result2:oke".to_vec()),
        (addr(2001), b"no-space-at-all".to_vec()),
        (addr(2001), b"5eed-zz d6:result2:oke".to_vec()),
        (addr(2002), good.clone()),
        (addr(9999), good.clone()),
    ] {
        engine.handle_datagram(t0, from, &bytes);
        assert_eq!(engine.poll_outcome(), None, "{:?} from {from}", String::from_utf8_lossy(&bytes));
    }
    engine.handle_datagram(t0, addr(2001), &good);
    assert_eq!(engine.poll_outcome().map(|(i, r)| (i, r.is_ok())), Some((id, true)));
    // The same reply again (rtpengine answering our retransmission) finds nothing pending.
    engine.handle_datagram(t0, addr(2001), &good);
    assert_eq!(engine.poll_outcome(), None);
}

#[test]
fn error_replies_carry_rtpengine_reason() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001]), 3);
    let id = engine.request(t0, &call("gone"), Command::Query);
    let sent = transmits(&mut engine);
    engine.handle_datagram(t0, addr(2001), &reply(&sent[0].1, b"d6:result5:error12:error-reason15:Unknown call-ide"));
    let (done, result) = engine.poll_outcome().unwrap();
    assert_eq!(done, id);
    let error = result.unwrap_err();
    assert_eq!(error, MediaError::Rtpengine("Unknown call-id".into()));
    assert_eq!(error.status(), 500);

    let id = engine.request(t0, &call("bad"), Command::Query);
    let sent = transmits(&mut engine);
    engine.handle_datagram(t0, addr(2001), &reply(&sent[0].1, b"d6:result"));
    assert_eq!(
        engine.poll_outcome(),
        Some((id, Err(MediaError::BadReply(ReplyError::Bencode(BencodeError::UnexpectedEnd)))))
    );
}

#[test]
fn new_calls_take_turns_between_instances() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001, 2002, 2003]), 3);
    let firsts: Vec<SocketAddr> = (0..4)
        .map(|i| {
            engine.request(t0, &call(&format!("c{i}")), offer());
            transmits(&mut engine)[0].0
        })
        .collect();
    assert_eq!(firsts, [addr(2001), addr(2002), addr(2003), addr(2001)]);
}

#[test]
fn delete_forgets_the_placement() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001, 2002]), 3);
    engine.request(t0, &call("x"), offer());
    let sent = transmits(&mut engine);
    engine.handle_datagram(t0, addr(2001), &reply(&sent[0].1, OK_WITH_SDP));
    assert!(engine.poll_outcome().unwrap().1.is_ok());
    engine.request(t0, &call("y"), offer());
    transmits(&mut engine);

    engine.request(t0, &call("x"), Command::Delete);
    let sent = transmits(&mut engine);
    assert_eq!(sent[0].0, addr(2001));
    assert!(sent[0].1.windows(15).any(|w| w == b"12:delete-delay"));
    assert_eq!(engine.placement("x"), None);
    engine.handle_datagram(t0, addr(2001), &reply(&sent[0].1, b"d6:result2:oke"));
    assert!(engine.poll_outcome().unwrap().1.is_ok());
    assert_eq!(engine.placement("x"), None);
}

#[test]
fn requests_that_cannot_be_sent_fail_at_once() {
    let t0 = clock::now();
    let mut none = Rtpengine::new(MediaConfig::default(), 1);
    let id = none.request(t0, &call("x"), offer());
    assert_eq!(none.poll_outcome(), Some((id, Err(MediaError::NoInstance))));

    let mut engine = Rtpengine::new(config(&[2001]), 1);
    let bad =
        Command::Offer { sdp: Bytes::from_static(b"v=0\r\n"), from: Leg::Browser, to: Leg::PlainRtp, codecs: vec![] };
    let id = engine.request(t0, &call("x"), bad);
    assert_eq!(engine.poll_outcome(), Some((id, Err(MediaError::Sdp(SdpError::NoOrigin)))));
    assert_eq!(MediaError::Sdp(SdpError::NoOrigin).status(), 488);

    let mut huge = SIPP_OFFER.to_vec();
    huge.extend(std::iter::repeat_n(b"a=x-pad:0123456789\r\n".as_slice(), 4000).flatten());
    let big = Command::Offer { sdp: Bytes::from(huge), from: Leg::PlainRtp, to: Leg::Browser, codecs: vec![] };
    let id = engine.request(t0, &call("y"), big);
    assert_eq!(engine.poll_outcome(), Some((id, Err(MediaError::RequestTooLarge))));
    assert!(transmits(&mut engine).is_empty());
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn ping_goes_to_one_instance_and_accepts_pong() {
    let t0 = clock::now();
    let mut engine = Rtpengine::new(config(&[2001, 2002]), 1);
    let id = engine.ping(t0, addr(2002));
    let sent = transmits(&mut engine);
    assert_eq!(sent[0].0, addr(2002));
    assert!(sent[0].1.ends_with(b" d7:command4:pinge"));
    engine.handle_datagram(t0, addr(2002), &reply(&sent[0].1, b"d6:result4:ponge"));
    let (done, result) = engine.poll_outcome().unwrap();
    assert_eq!((done, result.map(|r| r.sdp)), (id, Ok(None)));

    let id = engine.ping(t0, addr(2001));
    transmits(&mut engine);
    engine.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(transmits(&mut engine).len(), 1);
    engine.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(engine.poll_outcome(), Some((id, Err(MediaError::Timeout))));
}

#[test]
fn garbage_datagrams_never_panic() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let t0 = clock::now();
    let mut rng = StdRng::seed_from_u64(5);
    let mut engine = Rtpengine::new(config(&[2001]), 0);
    engine.request(t0, &call("x"), Command::Query);
    let mut sent = transmits(&mut engine);
    let mut seed = reply(&sent[0].1, b"d6:result2:ok3:sdpd1:al1:bi-3eeee");
    for _ in 0..5_000 {
        let mut input = seed.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..input.len());
            input[at] = *b"0123456789:ield-e ".get(rng.random_range(0..18)).unwrap_or(&b'x');
        }
        engine.handle_datagram(t0, addr(2001), &input);
        if engine.poll_outcome().is_some() {
            engine.request(t0, &call("x"), Command::Query);
            sent = transmits(&mut engine);
            seed = reply(&sent[0].1, b"d6:result2:ok3:sdpd1:al1:bi-3eeee");
        }
    }
}

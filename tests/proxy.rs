//! The stateful proxy on real sockets: a browser (WebSocket) calls desk phones (UDP),
//! with Record-Route flow tokens carrying in-dialog requests back over the browser's
//! connection, CANCEL, busy, forking and the 480/404 answers.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ua::{Dialog, Ua, all, header, parse, status};
use common::*;
use webtrunk::message::{HeaderName, Method};
use webtrunk::transport::TransportKind;

const USERS: &str = "[[user]]\nname = \"alice\"\npassword = \"alice-secret\"\n\
                     [[user]]\nname = \"bob\"\npassword = \"bob-secret\"\n\
                     [[user]]\nname = \"carol\"\npassword = \"carol-secret\"\n";

async fn server(name: &str) -> (webtrunk::app::Server, webtrunk::config::Config) {
    let config = config_with_users(name, USERS);
    let server = start(&config).await;
    (server, config)
}

/// alice on a WebSocket and bob on a UDP desk phone, both registered.
async fn browser_and_phone(server: &webtrunk::app::Server) -> (Ua, Ua) {
    let mut bob = Ua::udp("bob", "bob-secret", server.addr(TransportKind::Udp).unwrap()).await;
    bob.register().await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    (alice, bob)
}

fn method(m: &webtrunk::message::Message) -> Option<Method> {
    m.method().cloned()
}

#[tokio::test]
async fn browser_calls_a_desk_phone_and_the_phone_hangs_up_over_the_browsers_flow() {
    let (server, _config) = server("proxy-call").await;
    let (mut alice, mut bob) = browser_and_phone(&server).await;

    let sent = parse(&alice.invite("bob").await);
    let invite = bob.recv().await;
    assert_eq!(method(&invite), Some(Method::Invite));
    assert_eq!(invite.request_uri().unwrap(), bob.contact.as_bytes(), "Request-URI is the registered contact");
    assert_eq!(invite.max_forwards(), Some(Ok(69)));
    assert_eq!(all(&invite, HeaderName::Via).len(), 2, "our Via on top of alice's");
    let rr = all(&invite, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "RFC 5658: one entry per side when the transport changes: {rr:?}");
    assert!(rr[0].contains("transport=udp") && rr[1].contains("transport=ws"), "{rr:?}");
    assert_eq!(invite.body(), b"v=0\n");
    assert!(invite.header(HeaderName::ProxyAuthorization).is_none(), "our realm's credentials are consumed (§22.3)");
    assert_eq!(header(&invite, HeaderName::PAssertedIdentity), "<sip:alice@localhost>", "RFC 3325: who authenticated");

    bob.respond(&invite, 180, "bobtag").await;
    let ringing = alice.recv().await;
    assert_eq!(status(&ringing), 180);
    bob.respond(&invite, 200, "bobtag").await;
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(ok.as_bytes()));
    assert_eq!(all(&ok, HeaderName::Via).len(), 1, "our Via is gone from the response");

    // Alice's route set is the Record-Route of the 200, reversed (§12.1.2).
    let mut alice_route = all(&ok, HeaderName::RecordRoute);
    alice_route.reverse();
    let bob_contact = header(&ok, HeaderName::Contact).trim_matches(['<', '>']).to_string();
    let alice_dialog = Dialog {
        local: header(&sent, HeaderName::From),
        remote: header(&ok, HeaderName::To),
        call_id: header(&sent, HeaderName::CallId),
    };
    alice.in_dialog("ACK", &bob_contact, &alice_route, &alice_dialog, 2).await;
    let ack = bob.recv().await;
    assert_eq!(method(&ack), Some(Method::Ack), "the 2xx ACK goes end to end");
    assert!(all(&ack, HeaderName::Route).is_empty(), "our Route entries are consumed");

    // Bob hangs up along the route set in Record-Route order; the flow token in it finds
    // alice's WebSocket (her contact is a .invalid host that nobody could resolve).
    let bob_dialog = Dialog {
        local: header(&ok, HeaderName::To),
        remote: header(&sent, HeaderName::From),
        call_id: header(&sent, HeaderName::CallId),
    };
    bob.in_dialog("BYE", &alice.contact.clone(), &rr, &bob_dialog, 1).await;
    let bye = alice.recv().await;
    assert_eq!(method(&bye), Some(Method::Bye));
    alice.respond(&bye, 200, "unused").await;
    let bye_ok = bob.recv().await;
    assert_eq!(status(&bye_ok), 200);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn cancel_before_answer_gives_487_and_cancels_the_branch() {
    let (server, _config) = server("proxy-cancel").await;
    let (mut alice, mut bob) = browser_and_phone(&server).await;
    let sent = parse(&alice.invite("bob").await);
    let invite = bob.recv().await;
    bob.respond(&invite, 180, "bobtag").await;
    assert_eq!(status(&alice.recv().await), 180);

    let cancel = format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 CANCEL\r\n\
         Content-Length: 0\r\n\r\n",
        String::from_utf8_lossy(sent.request_uri().unwrap()),
        String::from_utf8_lossy(&sent.top_via_raw().unwrap()),
        header(&sent, HeaderName::From),
        header(&sent, HeaderName::To),
        header(&sent, HeaderName::CallId)
    );
    alice.send(&cancel).await;
    let cancelled = bob.recv().await;
    assert_eq!(method(&cancelled), Some(Method::Cancel), "the proxy cancels the ringing branch");
    bob.respond(&cancelled, 200, "bobtag").await;
    bob.respond(&invite, 487, "bobtag").await;
    let ack = bob.recv().await;
    assert_eq!(method(&ack), Some(Method::Ack), "the proxy ACKs the 487 hop by hop");

    let mut got = [alice.recv().await, alice.recv().await];
    got.sort_by_key(status);
    assert_eq!((status(&got[0]), header(&got[0], HeaderName::CSeq)), (200, "2 CANCEL".into()));
    assert_eq!((status(&got[1]), header(&got[1], HeaderName::CSeq)), (487, "2 INVITE".into()));
    alice.ack_failure(&sent, &got[1]).await;
    assert!(bob.silent(300).await, "nothing more reaches the phone");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn busy_phone_486_reaches_the_caller() {
    let (server, _config) = server("proxy-busy").await;
    let (mut alice, mut bob) = browser_and_phone(&server).await;
    let sent = parse(&alice.invite("bob").await);
    let invite = bob.recv().await;
    bob.respond(&invite, 486, "bobtag").await;
    assert_eq!(method(&bob.recv().await), Some(Method::Ack));
    let busy = alice.recv().await;
    assert_eq!(status(&busy), 486);
    alice.ack_failure(&sent, &busy).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn forking_rings_every_device_and_cancels_the_others_on_answer() {
    let (server, _config) = server("proxy-fork").await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    let mut desk = Ua::udp("bob", "bob-secret", udp).await;
    desk.register().await;
    let mut mobile = Ua::udp("bob", "bob-secret", udp).await;
    mobile.register().await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    alice.invite("bob").await;

    let to_desk = desk.recv().await;
    let to_mobile = mobile.recv().await;
    assert_eq!((method(&to_desk), method(&to_mobile)), (Some(Method::Invite), Some(Method::Invite)));
    assert_ne!(
        to_desk.top_via_raw().unwrap(),
        to_mobile.top_via_raw().unwrap(),
        "each branch has a branch id of its own"
    );
    desk.respond(&to_desk, 180, "desk").await;
    mobile.respond(&to_mobile, 180, "mobile").await;
    mobile.respond(&to_mobile, 200, "mobile").await;
    loop {
        let m = alice.recv().await;
        if status(&m) == 200 {
            assert!(header(&m, HeaderName::To).contains("tag=mobile"));
            break;
        }
        assert_eq!(status(&m), 180);
    }
    let cancel = desk.recv().await;
    assert_eq!(method(&cancel), Some(Method::Cancel), "the other branch is cancelled");
    assert_eq!(header(&cancel, HeaderName::Reason), "SIP;cause=200;text=\"Call completed elsewhere\"");
    desk.respond(&cancel, 200, "desk").await;
    desk.respond(&to_desk, 487, "desk").await;
    assert_eq!(method(&desk.recv().await), Some(Method::Ack));
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn unregistered_user_gets_480_and_unknown_user_404() {
    let (server, _config) = server("proxy-480").await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.register().await;
    let sent = parse(&alice.invite("carol").await);
    let reply = alice.recv().await;
    assert_eq!(status(&reply), 480, "carol exists but has no binding");
    alice.ack_failure(&sent, &reply).await;
    let sent = parse(&alice.invite("dave").await);
    let reply = alice.recv().await;
    assert_eq!(status(&reply), 404, "no such user");
    alice.ack_failure(&sent, &reply).await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// Sets up alice (WebSocket, RFC 5626 instance) in a confirmed call with bob (UDP).
async fn call_in_progress(server: &webtrunk::app::Server) -> (Ua, Ua, Vec<String>, Dialog, webtrunk::message::Message) {
    let mut bob = Ua::udp("bob", "bob-secret", server.addr(TransportKind::Udp).unwrap()).await;
    bob.register().await;
    let mut alice = Ua::ws("alice", "alice-secret", server.addr(TransportKind::Ws).unwrap()).await;
    alice.instance = Some("urn:uuid:8f0b6d2e-0000-4000-8000-00000000a11c".into());
    alice.register().await;
    let sent = parse(&alice.invite("bob").await);
    let invite = bob.recv().await;
    bob.respond(&invite, 200, "bobtag").await;
    let ok = alice.recv().await;
    assert_eq!(status(&ok), 200);
    let mut route = all(&ok, HeaderName::RecordRoute);
    route.reverse();
    let bob_contact = header(&ok, HeaderName::Contact).trim_matches(['<', '>']).to_string();
    let dialog = Dialog {
        local: header(&sent, HeaderName::From),
        remote: header(&ok, HeaderName::To),
        call_id: header(&sent, HeaderName::CallId),
    };
    alice.in_dialog("ACK", &bob_contact, &route, &dialog, 2).await;
    assert_eq!(method(&bob.recv().await), Some(Method::Ack));
    let bob_dialog = Dialog {
        local: header(&ok, HeaderName::To),
        remote: header(&sent, HeaderName::From),
        call_id: header(&sent, HeaderName::CallId),
    };
    (alice, bob, all(&invite, HeaderName::RecordRoute), bob_dialog, sent)
}

#[tokio::test]
async fn when_a_browsers_flow_dies_mid_call_the_other_side_gets_a_bye() {
    let (server, _config) = server("proxy-flowloss").await;
    let (alice, mut bob, _rr, _dialog, sent) = call_in_progress(&server).await;
    drop(alice);
    let bye = bob.recv().await;
    assert_eq!(method(&bye), Some(Method::Bye), "{}", String::from_utf8_lossy(bye.as_bytes()));
    assert_eq!(header(&bye, HeaderName::CallId), header(&sent, HeaderName::CallId));
    assert!(header(&bye, HeaderName::From).contains("alice"), "sent on alice's behalf");
    assert!(String::from_utf8_lossy(bye.as_bytes()).contains("Reason: SIP;cause=200;text=\"flow lost\""));
    bob.respond(&bye, 200, "bobtag").await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_call_follows_the_browser_to_its_new_websocket() {
    let (server, _config) = server("proxy-repoint").await;
    let (mut alice, mut bob, rr, bob_dialog, _sent) = call_in_progress(&server).await;
    // The tab's WebSocket reconnects (Wi-Fi to LTE): same instance, new flow, REGISTER again.
    let fresh = ws_connect(server.addr(TransportKind::Ws).unwrap()).await;
    let old = std::mem::replace(&mut alice.link, common::ua::Link::Ws(Box::new(fresh)));
    alice.register().await;
    drop(old);
    assert!(bob.silent(300).await, "no BYE: the call moved instead of dying with the old flow");
    // Bob hangs up through the route recorded on the old flow; it reaches the new one.
    bob.in_dialog("BYE", &alice.contact.clone(), &rr, &bob_dialog, 1).await;
    let bye = alice.recv().await;
    assert_eq!(method(&bye), Some(Method::Bye));
    alice.respond(&bye, 200, "unused").await;
    assert_eq!(status(&bob.recv().await), 200);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_strict_routing_phone_still_reaches_the_browser() {
    let (server, _config) = server("proxy-strict").await;
    let (mut alice, mut bob, rr, bob_dialog, _sent) = call_in_progress(&server).await;
    // RFC 2543 strict routing: the first route entry becomes the Request-URI and the
    // remote target goes last in Route (§16.4 compatibility).
    let first = rr[0].trim_matches(['<', '>']).to_string();
    let route = vec![rr[1].clone(), format!("<{}>", alice.contact)];
    bob.in_dialog("BYE", &first, &route, &bob_dialog, 1).await;
    let bye = alice.recv().await;
    assert_eq!(method(&bye), Some(Method::Bye));
    assert_eq!(bye.request_uri().unwrap(), alice.contact.as_bytes(), "the target is back in the Request-URI");
    assert!(all(&bye, HeaderName::Route).is_empty(), "{}", String::from_utf8_lossy(bye.as_bytes()));
    alice.respond(&bye, 200, "unused").await;
    assert_eq!(status(&bob.recv().await), 200);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn subscribe_is_record_routed_and_notify_reaches_the_browser_over_its_flow() {
    let (server, _config) = server("proxy-presence").await;
    let (mut alice, mut bob) = browser_and_phone(&server).await;
    // BLF: alice subscribes to bob's dialog state, through the 407 like any initial request.
    let call_id = alice.next_id();
    let mut auth: Option<String> = None;
    let mut cseq = 1;
    let subscribe = loop {
        let text = format!(
            "SUBSCRIBE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/WS {};branch=z9hG4bK{call_id}{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=s{call_id}\r\nTo: <sip:bob@localhost>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <{}>\r\nEvent: dialog\r\nExpires: 600\r\n{}\
             Content-Length: 0\r\n\r\n",
            alice.sent_by,
            alice.contact,
            auth.as_ref().map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default()
        );
        alice.send(&text).await;
        if auth.is_some() {
            break parse(&text);
        }
        let challenge = alice.recv().await;
        assert_eq!(status(&challenge), 407);
        auth = Some(alice.answer(&challenge, HeaderName::ProxyAuthenticate, "SUBSCRIBE", "sip:bob@localhost"));
        cseq += 1;
    };
    let at_bob = bob.recv().await;
    assert_eq!(method(&at_bob), Some(Method::Subscribe));
    let rr = all(&at_bob, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "SUBSCRIBE creates a dialog and is record-routed");
    bob.respond(&at_bob, 200, "bobsub").await;
    assert_eq!(status(&alice.recv().await), 200);

    // Bob's NOTIFY follows the route set; alice's contact is a .invalid host, so only the
    // flow token can deliver it.
    let bob_dialog = Dialog {
        local: format!("{};tag=bobsub", header(&subscribe, HeaderName::To)),
        remote: header(&subscribe, HeaderName::From),
        call_id: header(&subscribe, HeaderName::CallId),
    };
    bob.in_dialog("NOTIFY", &alice.contact.clone(), &rr, &bob_dialog, 1).await;
    let notify = alice.recv().await;
    assert_eq!(method(&notify), Some(Method::Notify));
    alice.respond(&notify, 200, "unused").await;
    assert_eq!(status(&bob.recv().await), 200);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_strict_routing_browser_still_reaches_the_udp_phone() {
    let (server, _config) = server("proxy-strict-udp").await;
    let (mut alice, mut bob, rr, bob_dialog, sent) = call_in_progress(&server).await;
    // alice's route set is the Record-Route reversed; strict routing puts its first entry
    // in the Request-URI and the remote target (bob's contact) last in Route.
    let mut route: Vec<String> = rr.iter().rev().cloned().collect();
    let first = route.remove(0).trim_matches(['<', '>']).to_string();
    route.push(format!("<{}>", bob.contact));
    let alice_dialog = Dialog {
        local: bob_dialog.remote.clone(),
        remote: bob_dialog.local.clone(),
        call_id: bob_dialog.call_id.clone(),
    };
    alice.in_dialog("BYE", &first, &route, &alice_dialog, sent.cseq().unwrap().0 + 1).await;
    let bye = bob.recv().await;
    assert_eq!(method(&bye), Some(Method::Bye));
    assert_eq!(bye.request_uri().unwrap(), bob.contact.as_bytes(), "the target is back in the Request-URI");
    bob.respond(&bye, 200, "bobtag").await;
    assert_eq!(status(&alice.recv().await), 200);
    server.shutdown(Duration::from_secs(2)).await;
}

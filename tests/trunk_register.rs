//! webtrunk's outbound registration at a trunk (RFC 3261 §10.2) against a real registrar:
//! SIPp plays a carrier that challenges with digest (qop=auth), checks the answer with its
//! own digest code (`verifyauth`), grants 60 s, takes a refresh and an unregistration. A
//! wrong password ends in Failed, with no second attempt until the backoff.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::registrar_peer::{RegistrationClient, TRUNK_PASSWORD, sipp_failed};
use common::{sipp_finished, sipp_uas};
use webtrunk::message::HeaderName;
use webtrunk::routing::registration::{INITIAL_RETRY, RegistrationState, ViaSpec};

/// A free UDP port of 127.0.0.1 for SIPp's `-p`, taken and released.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn status(response: &Option<webtrunk::message::Message>) -> Option<u16> {
    response.as_ref().and_then(|r| r.status())
}

#[tokio::test]
async fn registers_at_a_sipp_registrar_through_its_challenge_refreshes_and_unregisters() {
    let port = free_udp_port();
    let mut client = RegistrationClient::bind(([127, 0, 0, 1], port).into()).await;
    let sipp = sipp_uas("trunk_registrar.xml", port, client.local_addr());
    let mut registration = client.registration(TRUNK_PASSWORD);
    assert_eq!(registration.state(), &RegistrationState::Idle);

    let challenge = client.step(&mut registration).await;
    assert_eq!(status(&challenge), Some(401));
    assert_eq!(registration.state(), &RegistrationState::Registering);

    let ok = client.step(&mut registration).await;
    assert_eq!(status(&ok), Some(200), "SIPp's verifyauth accepted our digest");
    let sent = client.last_sent.unwrap();
    // SIPp granted 60 s of the 600 asked, on our Contact.
    assert_eq!(registration.state(), &RegistrationState::Registered { until: sent + Duration::from_secs(60) });
    assert_eq!(registration.poll_timeout(), Some(sent + Duration::from_secs(30)), "refresh at half the grant");

    // The refresh, 30 s later on the driver's clock: the same Call-ID (SIPp maps it to the
    // same call), CSeq 3 and the nonce reused, checked by SIPp again.
    let refreshed = client.step(&mut registration).await;
    assert_eq!(status(&refreshed), Some(200));
    let refresh_sent = client.last_sent.unwrap();
    assert_eq!(refresh_sent, sent + Duration::from_secs(30));
    assert_eq!(registration.state(), &RegistrationState::Registered { until: refresh_sent + Duration::from_secs(60) });
    assert_eq!(
        refreshed.as_ref().and_then(|r| r.first_value(HeaderName::CallId)).as_deref(),
        Some(registration.call_id().as_bytes())
    );

    let removed = client.unregister(&mut registration).await;
    assert_eq!(status(&removed), Some(200));
    assert_eq!(registration.state(), &RegistrationState::Idle);
    assert_eq!(registration.poll_timeout(), None, "nothing more after unregistering");

    let kinds: Vec<_> = client.history.iter().map(std::mem::discriminant).collect();
    let registered = std::mem::discriminant(&RegistrationState::Registered { until: sent });
    assert_eq!(
        kinds,
        [
            std::mem::discriminant(&RegistrationState::Registering),
            registered,
            registered,
            std::mem::discriminant(&RegistrationState::Idle)
        ]
    );
    sipp_finished(sipp).await;
}

#[tokio::test]
async fn wrong_password_ends_failed_without_a_second_attempt() {
    let port = free_udp_port();
    let mut client = RegistrationClient::bind(([127, 0, 0, 1], port).into()).await;
    let sipp = sipp_uas("trunk_registrar.xml", port, client.local_addr());
    let mut registration = client.registration("not-the-password");

    assert_eq!(status(&client.step(&mut registration).await), Some(401));
    assert_eq!(registration.state(), &RegistrationState::Registering);
    let refused = client.step(&mut registration).await;
    assert_eq!(status(&refused), Some(403), "SIPp's verifyauth refused our digest");
    let RegistrationState::Failed { code, retry_at } = registration.state().clone() else {
        panic!("not failed: {:?}", registration.state());
    };
    assert_eq!(code, Some(403));
    let answered = client.now();
    assert!(retry_at > answered + INITIAL_RETRY - Duration::from_secs(1), "backs off {INITIAL_RETRY:?}");
    assert_eq!(registration.poll_timeout(), Some(retry_at));
    // Nothing goes out before the backoff: SIPp waits 1 s for another REGISTER and fails
    // the call when none comes (a loop would make it pass).
    let via =
        ViaSpec { sent_by: client.local_addr().to_string(), transport: "UDP".into(), branch: "z9hG4bKnot-due".into() };
    assert!(registration.poll_request(answered, &via, "cnonce").is_none());
    sipp_failed(sipp).await;
}

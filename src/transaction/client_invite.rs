//! The INVITE client transaction: RFC 3261 §17.1.1 with the Accepted state of RFC 6026
//! §7.2 (Figure 5 as RFC 6026 redraws it). A non-2xx final response is acknowledged here
//! (§17.1.1.3); a 2xx is not: its ACK is end to end, built by the UAC, and the proxy only
//! forwards it. Every 2xx on the branch is passed up until Timer M.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::machine::{Core, plumbing};
use super::{Class, Output, Timer, TimerConfig};
use crate::message::{HeaderName, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// The INVITE is out; retransmitted on Timer A over UDP, given up on Timer B.
    Calling,
    /// A provisional response arrived: no more retransmissions and no Timer B; the TU's
    /// own timer (the proxy's Timer C, §16.6) bounds the wait from here.
    Proceeding,
    /// A 300-699 arrived and was acknowledged; its retransmissions get the ACK again until
    /// Timer D.
    Completed,
    /// RFC 6026: a 2xx arrived; further 2xx are passed up unacknowledged until Timer M.
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    /// The INVITE until a 2xx: after it no CANCEL, ACK or retry is built from it, and the
    /// machine waits 32 s (Timer M) only to pass further 2xx up.
    request: Option<Message>,
    core: Core,
    /// The current Timer A interval.
    timer_a: Duration,
    /// The ACK for the non-2xx final response, resent for each of its retransmissions.
    ack: Option<Bytes>,
}

enum Event {
    Response(Class, Message),
    Timer(Timer),
    TransportError,
}

impl ClientInvite {
    /// Enters Calling and queues the INVITE for transmission (§17.1.1.2). Timer A runs only
    /// over an unreliable transport; Timer B always.
    pub fn new(now: Instant, request: Message, reliable: bool, config: TimerConfig) -> Self {
        Self {
            state: ClientInviteState::Calling,
            core: Core::client(now, request.bytes(), reliable, config, Timer::A, Timer::B),
            request: Some(request),
            timer_a: config.t1,
            ack: None,
        }
    }

    /// A response whose [`super::client_key`] is this transaction's. Status codes outside
    /// 100..=699 are dropped.
    pub fn handle_response(&mut self, now: Instant, response: Message) {
        let Some(class) = response.status().and_then(Class::of) else { return };
        self.step(now, Event::Response(class, response));
    }

    /// The transport could not send the request or the ACK, or the flow it goes over closed.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.step(now, Event::TransportError);
    }

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// The INVITE as sent: what a CANCEL for it is built from (§9.1). Gone after a 2xx.
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }

    fn step(&mut self, now: Instant, event: Event) {
        use ClientInviteState::{Accepted, Calling, Completed, Proceeding, Terminated};
        match (self.state, event) {
            (Calling | Proceeding, Event::Response(Class::Provisional, response)) => {
                self.state = Proceeding;
                self.core.timers.cancel(Timer::A);
                self.core.timers.cancel(Timer::B);
                self.core.push(Output::Response(response));
            }
            (Calling | Proceeding, Event::Response(Class::Success, response)) => {
                // RFC 6026 §7.2: a 2xx moves to Accepted and is passed up, not acknowledged.
                self.state = Accepted;
                self.request = None;
                self.core.timers.clear();
                self.core.timers.set(Timer::M, now + self.core.config.transaction_timeout());
                self.core.push(Output::Response(response));
            }
            (Calling | Proceeding, Event::Response(Class::Failure, response)) => {
                self.state = Completed;
                self.core.timers.clear();
                let ack = self.request.as_ref().map(|request| Bytes::from(build_ack(request, &response)));
                self.core.push(Output::Response(response));
                if let Some(ack) = ack {
                    self.core.push(Output::Transmit(ack.clone()));
                    self.ack = Some(ack);
                }
                if self.core.reliable {
                    self.terminate();
                } else {
                    self.core.timers.set(Timer::D, now + self.core.config.timer_d());
                }
            }
            (Completed, Event::Response(Class::Failure, _)) => {
                // A retransmission of the final response: ACK again, do not pass it up.
                if let Some(ack) = &self.ack {
                    self.core.push(Output::Transmit(ack.clone()));
                }
            }
            (Accepted, Event::Response(Class::Success, response)) => {
                self.core.push(Output::Response(response));
            }
            // A provisional after a final response means nothing; neither does a final
            // response of the other kind (a 2xx after a non-2xx, or the reverse) from the
            // same branch. Nothing reaches a terminated machine.
            (Completed | Accepted | Terminated, Event::Response(Class::Provisional, _))
            | (Completed, Event::Response(Class::Success, _))
            | (Accepted, Event::Response(Class::Failure, _))
            | (Terminated, Event::Response(Class::Success | Class::Failure, _)) => {}

            (Calling, Event::Timer(Timer::A)) => {
                if let Some(request) = &self.request {
                    self.core.push(Output::Transmit(request.bytes()));
                }
                self.timer_a = self.timer_a.saturating_mul(2);
                self.core.timers.set(Timer::A, now + self.timer_a);
            }
            (Calling, Event::Timer(Timer::B)) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            (Completed, Event::Timer(Timer::D)) | (Accepted, Event::Timer(Timer::M)) => self.terminate(),
            // Each timer is disarmed when its state is left.
            (Proceeding | Completed | Accepted | Terminated, Event::Timer(Timer::A | Timer::B))
            | (Calling | Proceeding | Accepted | Terminated, Event::Timer(Timer::D))
            | (Calling | Proceeding | Completed | Terminated, Event::Timer(Timer::M)) => {}
            // Never armed by this machine.
            (
                _,
                Event::Timer(Timer::E | Timer::F | Timer::G | Timer::H | Timer::I | Timer::J | Timer::K | Timer::L),
            ) => {}

            // §17.1.4: a transport error in Calling is a failure the TU hears of. In Proceeding
            // nothing is sent, so the error is the flow closing under us: no final response
            // can arrive any more, which the TU must hear too (the RFC has no such edge).
            (Calling | Proceeding, Event::TransportError) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            // The ACK could not be sent: the TU already has its final response.
            (Completed, Event::TransportError) => self.terminate(),
            (Accepted | Terminated, Event::TransportError) => {}
        }
    }

    fn terminate(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.core.terminate();
    }
}

plumbing!(ClientInvite, Event::Timer);

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, Call-ID and From of the
/// INVITE, To of the response (with its tag), the INVITE's CSeq number with method ACK,
/// only the INVITE's top Via, and the INVITE's Route header fields.
fn build_ack(invite: &Message, response: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"ACK ");
    push_clean(&mut out, invite.request_uri().unwrap_or_default());
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(via) = invite.top_via_raw() {
        push_field(&mut out, "Via", &via);
    }
    for route in invite.headers_named(HeaderName::Route) {
        push_field(&mut out, "Route", &invite.value(route));
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    if let Some(from) = invite.first_value(HeaderName::From) {
        push_field(&mut out, "From", &from);
    }
    if let Some(to) = response.first_value(HeaderName::To) {
        push_field(&mut out, "To", &to);
    }
    if let Some(call_id) = invite.call_id() {
        push_field(&mut out, "Call-ID", &call_id);
    }
    if let Some((number, _)) = invite.cseq() {
        push_field(&mut out, "CSeq", format!("{number} ACK").as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_clean(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Copies bytes, dropping CR and LF so no value can end a header early.
fn push_clean(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes.iter().filter(|&&c| c != b'\r' && c != b'\n'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::harness::{Harness, invite, parse, response};

    fn calling(reliable: bool) -> Harness<ClientInvite> {
        Harness::start(|now| ClientInvite::new(now, invite(), reliable, TimerConfig::default()))
    }

    #[test]
    fn client_invite_retransmits_at_0_5_1_5_3_5_s_and_times_out_at_32_s() {
        let mut h = calling(false);
        h.run_to(40_000);
        let sends: Vec<_> = h.log.iter().filter(|(_, what)| what == "send INVITE").map(|(t, _)| *t).collect();
        assert_eq!(sends, [0, 500, 1_500, 3_500, 7_500, 15_500, 31_500]);
        assert_eq!(h.log[h.log.len() - 2..], [(32_000, "timeout".into()), (32_000, "terminated".into())]);
        assert_eq!(h.m.state(), ClientInviteState::Terminated);
        assert_eq!(h.m.poll_timeout(), None);
    }

    #[test]
    fn client_invite_over_reliable_transport_does_not_retransmit() {
        let mut h = calling(true);
        assert_eq!(h.m.next_timer().map(|(t, _)| t), Some(Timer::B));
        h.run_to(40_000);
        assert_eq!(h.log, [(0, "send INVITE".into()), (32_000, "timeout".into()), (32_000, "terminated".into())]);
    }

    #[test]
    fn client_invite_provisional_stops_retransmissions_and_timer_b() {
        let mut h = calling(false);
        h.input(700, |m, now| m.handle_response(now, response(&invite(), 180, Some("b2"))));
        assert_eq!(h.m.state(), ClientInviteState::Proceeding);
        assert_eq!(h.m.poll_timeout(), None);
        h.run_to(100_000);
        assert_eq!(h.log, [(0, "send INVITE".into()), (500, "send INVITE".into()), (700, "up 180".into())]);
    }

    #[test]
    fn client_invite_acks_non_2xx_and_absorbs_its_retransmissions_until_timer_d() {
        let mut h = calling(false);
        h.input(100, |m, now| m.handle_response(now, response(&invite(), 486, Some("b2"))));
        assert_eq!(h.m.state(), ClientInviteState::Completed);
        assert_eq!(h.m.next_timer().map(|(t, _)| t), Some(Timer::D));
        assert!(h.m.request().is_some(), "an authenticated retry is built from it");
        h.input(600, |m, now| m.handle_response(now, response(&invite(), 486, Some("b2"))));
        h.input(1_600, |m, now| m.handle_response(now, response(&invite(), 486, Some("b2"))));
        h.run_to(40_000);
        assert_eq!(
            h.log,
            [
                (0, "send INVITE".into()),
                (100, "up 486".into()),
                (100, "send ACK".into()),
                (600, "send ACK".into()),
                (1_600, "send ACK".into()),
                (32_100, "terminated".into()),
            ]
        );
    }

    #[test]
    fn client_invite_ack_copies_invite_fields_and_response_to_tag() {
        let mut h = calling(true);
        h.input(100, |m, now| m.handle_response(now, response(&invite(), 603, Some("b2"))));
        let ack = parse(&h.transmitted()[1]);
        assert_eq!(ack.method(), Some(&crate::message::Method::Ack));
        assert_eq!(ack.request_uri(), invite().request_uri());
        assert_eq!(ack.list(HeaderName::Via).len(), 1);
        assert_eq!(ack.top_via_raw(), invite().top_via_raw());
        assert_eq!(ack.list(HeaderName::Route), invite().list(HeaderName::Route));
        assert_eq!(ack.first_value(HeaderName::From), invite().first_value(HeaderName::From));
        assert_eq!(ack.first_value(HeaderName::To).as_deref(), Some(&b"<sip:bob@example.com>;tag=b2"[..]));
        assert_eq!(ack.call_id(), invite().call_id());
        assert_eq!(ack.cseq(), Some((7, crate::message::Method::Ack)));
        // Timer D is zero over a reliable transport.
        assert_eq!(h.m.state(), ClientInviteState::Terminated);
        assert_eq!(h.log.last(), Some(&(100, "terminated".into())));
    }

    #[test]
    fn client_invite_passes_2xx_retransmissions_up_in_accepted_until_timer_m() {
        let mut h = calling(false);
        h.input(200, |m, now| m.handle_response(now, response(&invite(), 180, Some("b2"))));
        assert!(h.m.request().is_some(), "a CANCEL may still be built from it");
        h.input(3_000, |m, now| m.handle_response(now, response(&invite(), 200, Some("b2"))));
        assert_eq!(h.m.state(), ClientInviteState::Accepted);
        assert_eq!(h.m.request(), None, "nothing is built from it after a 2xx");
        assert_eq!(h.m.next_timer(), Some((Timer::M, h.t0 + Duration::from_millis(35_000))));
        h.input(3_500, |m, now| m.handle_response(now, response(&invite(), 200, Some("b2"))));
        h.input(4_500, |m, now| m.handle_response(now, response(&invite(), 200, Some("b3"))));
        h.input(5_000, |m, now| m.handle_response(now, response(&invite(), 180, Some("b2"))));
        h.run_to(60_000);
        assert_eq!(
            h.log,
            [
                (0, "send INVITE".into()),
                (200, "up 180".into()),
                (3_000, "up 200".into()),
                (3_500, "up 200".into()),
                (4_500, "up 200".into()),
                (35_000, "terminated".into()),
            ]
        );
    }

    #[test]
    fn client_invite_transport_error_in_calling_is_a_timeout() {
        let mut h = calling(true);
        h.input(10, |m, now| m.handle_transport_error(now));
        assert_eq!(h.log, [(0, "send INVITE".into()), (10, "timeout".into()), (10, "terminated".into())]);
    }

    #[test]
    fn client_invite_uses_configured_t1() {
        let config = TimerConfig { t1: Duration::from_millis(100), ..TimerConfig::default() };
        let mut h = Harness::start(|now| ClientInvite::new(now, invite(), false, config));
        h.run_to(10_000);
        let sends: Vec<_> = h.log.iter().filter(|(_, what)| what == "send INVITE").map(|(t, _)| *t).collect();
        assert_eq!(sends, [0, 100, 300, 700, 1_500, 3_100, 6_300]);
        assert_eq!(h.log.last(), Some(&(6_400, "terminated".into())));
    }
}

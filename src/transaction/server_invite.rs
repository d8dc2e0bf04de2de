//! The INVITE server transaction: RFC 3261 §17.2.1 with the Accepted state of RFC 6026
//! §7.1 (Figure 7 as RFC 6026 redraws it). A non-2xx final response is retransmitted here
//! over UDP until its ACK arrives; a 2xx is not (its retransmissions are the UAS's, and the
//! proxy forwards each one through here), and ACKs for it go up to the TU.
//!
//! 100 (Trying): §17.2.1 has the transaction send one itself unless the TU answers within
//! 200 ms. This machine has no such timer; the proxy calls [`ServerInvite::send_trying`] as
//! soon as it takes the INVITE, which is sooner.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::machine::{Core, plumbing};
use super::{Class, Output, Timer, TimerConfig};
use crate::message::response::{Reply, build};
use crate::message::{Message, Method};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// No final response yet; a retransmitted INVITE gets the last provisional again.
    Proceeding,
    /// A 300-699 was sent; retransmitted on Timer G over UDP until the ACK, or Timer H.
    Completed,
    /// The ACK arrived; its retransmissions are absorbed until Timer I.
    Confirmed,
    /// RFC 6026: a 2xx was sent; INVITE retransmissions are absorbed, further 2xx from the
    /// TU are sent, ACKs go to the TU, until Timer L.
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    /// The INVITE until the final response: after it the machine only resends or absorbs,
    /// and a UDP transaction waits 32 s (Timer H or L) holding nothing it does not need.
    request: Option<Message>,
    core: Core,
    /// The current Timer G interval.
    timer_g: Duration,
    /// Resent for a retransmitted INVITE while in Proceeding only.
    last_provisional: Option<Bytes>,
    final_response: Option<Bytes>,
}

enum Event {
    Invite,
    Ack(Message),
    Respond(Class, Bytes),
    Timer(Timer),
    TransportError,
}

impl ServerInvite {
    /// Enters Proceeding for a received INVITE (§17.2.1). Nothing is sent until the TU
    /// responds.
    pub fn new(_now: Instant, request: Message, reliable: bool, config: TimerConfig) -> Self {
        Self {
            state: ServerInviteState::Proceeding,
            request: Some(request),
            core: Core::server(reliable, config),
            timer_g: config.t1,
            last_provisional: None,
            final_response: None,
        }
    }

    /// A request whose [`super::server_key`] is this transaction's: a retransmission of the
    /// INVITE, or an ACK. Other methods never share an INVITE's key and are ignored.
    pub fn handle_request(&mut self, now: Instant, request: Message) {
        let event = match request.method() {
            Some(Method::Invite) => Event::Invite,
            Some(Method::Ack) => Event::Ack(request),
            Some(_) | None => return,
        };
        self.step(now, event);
    }

    /// The TU's response, as bytes ready for the wire, with its status code. A 1xx is
    /// remembered for INVITE retransmissions; a 2xx moves to Accepted (RFC 6026); a
    /// 300-699 moves to Completed. Once a final response is sent, later provisionals and
    /// non-2xx finals are dropped; a 2xx is still sent, in Accepted and also in Completed
    /// and Confirmed, since a proxy forwards every 2xx to an INVITE (§16.7 step 5).
    pub fn send_response(&mut self, now: Instant, response: Bytes, status: u16) {
        let Some(class) = Class::of(status) else { return };
        self.step(now, Event::Respond(class, response));
    }

    /// Sends a 100 (Trying) built from the INVITE (§8.2.6: no To tag), with the top Via
    /// stamped with `received`/`rport` for `source` (RFC 3581).
    pub fn send_trying(&mut self, now: Instant, source: Option<SocketAddr>) {
        let Some(request) = &self.request else { return };
        let trying = build(request, &Reply { code: 100, source, ..Reply::default() });
        self.send_response(now, Bytes::from(trying), 100);
    }

    /// The transport could not send a response, or the flow it goes over closed.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.step(now, Event::TransportError);
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// The INVITE that created the transaction, until a final response was sent.
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }

    fn step(&mut self, now: Instant, event: Event) {
        use ServerInviteState::{Accepted, Completed, Confirmed, Proceeding, Terminated};
        match (self.state, event) {
            (Proceeding, Event::Invite) => {
                if let Some(provisional) = &self.last_provisional {
                    self.core.push(Output::Transmit(provisional.clone()));
                }
            }
            (Completed, Event::Invite) => {
                if let Some(last) = &self.final_response {
                    self.core.push(Output::Transmit(last.clone()));
                }
            }
            (Confirmed | Accepted | Terminated, Event::Invite) => {}

            (Completed, Event::Ack(_)) => {
                self.state = Confirmed;
                self.core.timers.clear();
                if self.core.reliable {
                    self.terminate();
                } else {
                    self.core.timers.set(Timer::I, now + self.core.config.t4);
                }
            }
            (Accepted, Event::Ack(ack)) => self.core.push(Output::Ack(ack)),
            // An ACK before any final response acknowledges nothing; after Confirmed it is
            // a retransmission.
            (Proceeding | Confirmed | Terminated, Event::Ack(_)) => {}

            (Proceeding, Event::Respond(Class::Provisional, response)) => {
                self.core.push(Output::Transmit(response.clone()));
                self.last_provisional = Some(response);
            }
            (Proceeding, Event::Respond(Class::Success, response)) => {
                self.state = Accepted;
                self.request = None;
                self.last_provisional = None;
                self.core.push(Output::Transmit(response));
                self.core.timers.set(Timer::L, now + self.core.config.transaction_timeout());
            }
            (Proceeding, Event::Respond(Class::Failure, response)) => {
                self.state = Completed;
                self.request = None;
                self.last_provisional = None;
                self.core.push(Output::Transmit(response.clone()));
                self.final_response = Some(response);
                if !self.core.reliable {
                    self.timer_g = self.core.config.t1;
                    self.core.timers.set(Timer::G, now + self.timer_g);
                }
                self.core.timers.set(Timer::H, now + self.core.config.transaction_timeout());
            }
            (Accepted | Completed | Confirmed, Event::Respond(Class::Success, response)) => {
                self.core.push(Output::Transmit(response));
            }
            (Accepted | Completed | Confirmed, Event::Respond(Class::Provisional | Class::Failure, _))
            | (Terminated, Event::Respond(_, _)) => {}

            (Completed, Event::Timer(Timer::G)) => {
                if let Some(last) = &self.final_response {
                    self.core.push(Output::Transmit(last.clone()));
                }
                self.timer_g = self.timer_g.saturating_mul(2).min(self.core.config.t2);
                self.core.timers.set(Timer::G, now + self.timer_g);
            }
            (Completed, Event::Timer(Timer::H)) => {
                // §17.2.1: the ACK never came; the TU hears of a transaction failure.
                self.core.push(Output::Timeout);
                self.terminate();
            }
            (Confirmed, Event::Timer(Timer::I)) | (Accepted, Event::Timer(Timer::L)) => self.terminate(),
            // Each timer is disarmed when its state is left.
            (Proceeding | Confirmed | Accepted | Terminated, Event::Timer(Timer::G | Timer::H))
            | (Proceeding | Completed | Accepted | Terminated, Event::Timer(Timer::I))
            | (Proceeding | Completed | Confirmed | Terminated, Event::Timer(Timer::L)) => {}
            // Never armed by this machine.
            (
                _,
                Event::Timer(Timer::A | Timer::B | Timer::D | Timer::E | Timer::F | Timer::J | Timer::K | Timer::M),
            ) => {}

            // §17.2.1, §17.2.4: the response did not get through.
            (Proceeding | Completed, Event::TransportError) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            // RFC 6026 Figure 7: inform the TU and stay; Timer L still ends the machine.
            (Accepted, Event::TransportError) => self.core.push(Output::Timeout),
            (Confirmed | Terminated, Event::TransportError) => {}
        }
    }

    fn terminate(&mut self) {
        self.state = ServerInviteState::Terminated;
        self.core.terminate();
    }
}

plumbing!(ServerInvite, Event::Timer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::harness::{Harness, ack, invite, parse, response_bytes};

    fn proceeding(reliable: bool) -> Harness<ServerInvite> {
        Harness::start(|now| ServerInvite::new(now, invite(), reliable, TimerConfig::default()))
    }

    fn respond(h: &mut Harness<ServerInvite>, ms: u64, code: u16) {
        h.input(ms, |m, now| m.send_response(now, response_bytes(&invite(), code, Some("b2")), code));
    }

    #[test]
    fn server_invite_sends_nothing_until_the_tu_responds() {
        let h = proceeding(false);
        assert!(h.log.is_empty());
        assert_eq!(h.m.poll_timeout(), None);
        assert_eq!(h.m.state(), ServerInviteState::Proceeding);
    }

    #[test]
    fn server_invite_sends_trying_and_resends_last_provisional_on_retransmitted_invite() {
        let mut h = proceeding(false);
        h.input(0, |m, now| m.send_trying(now, Some("203.0.113.5:40000".parse().unwrap())));
        h.input(500, |m, now| m.handle_request(now, invite()));
        respond(&mut h, 800, 180);
        h.input(1_500, |m, now| m.handle_request(now, invite()));
        assert_eq!(
            h.log,
            [(0, "send 100".into()), (500, "send 100".into()), (800, "send 180".into()), (1_500, "send 180".into())]
        );
        let trying = parse(&h.transmitted()[0]);
        assert_eq!(trying.status(), Some(100));
        assert!(trying.top_via_raw().unwrap().ends_with(b";received=203.0.113.5"));
        assert_eq!(
            trying.first_value(crate::message::HeaderName::To),
            invite().first_value(crate::message::HeaderName::To)
        );
    }

    #[test]
    fn server_invite_lets_its_request_go_with_a_final_response() {
        for code in [200, 486] {
            let mut h = proceeding(false);
            respond(&mut h, 100, 180);
            assert!(h.m.request().is_some(), "a provisional keeps it");
            respond(&mut h, 200, code);
            assert_eq!(h.m.request(), None, "{code}");
        }
    }

    #[test]
    fn server_invite_resends_final_response_on_retransmitted_invite() {
        let mut h = proceeding(true);
        respond(&mut h, 100, 486);
        assert_eq!(h.m.state(), ServerInviteState::Completed);
        h.input(2_000, |m, now| m.handle_request(now, invite()));
        assert_eq!(h.log, [(100, "send 486".into()), (2_000, "send 486".into())]);
        assert_eq!(h.transmitted()[0], h.transmitted()[1]);
    }

    #[test]
    fn server_invite_retransmits_final_with_timer_g_until_ack_or_timer_h() {
        let mut h = proceeding(false);
        respond(&mut h, 0, 486);
        h.run_to(40_000);
        let sends: Vec<_> = h.log.iter().filter(|(_, what)| what == "send 486").map(|(t, _)| *t).collect();
        // Intervals 0.5, 1, 2, 4, 4, .. s: Timer G doubles up to T2.
        assert_eq!(sends, [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]);
        assert_eq!(h.log[h.log.len() - 2..], [(32_000, "timeout".into()), (32_000, "terminated".into())]);

        let mut h = proceeding(false);
        respond(&mut h, 0, 486);
        h.input(2_000, |m, now| m.handle_request(now, ack()));
        assert_eq!(h.m.state(), ServerInviteState::Confirmed);
        h.run_to(40_000);
        assert_eq!(
            h.log,
            [
                (0, "send 486".into()),
                (500, "send 486".into()),
                (1_500, "send 486".into()),
                (7_000, "terminated".into())
            ]
        );
    }

    #[test]
    fn server_invite_over_reliable_transport_waits_for_ack_without_retransmitting() {
        let mut h = proceeding(true);
        respond(&mut h, 0, 603);
        assert_eq!(h.m.next_timer().map(|(t, _)| t), Some(Timer::H));
        h.input(1_000, |m, now| m.handle_request(now, ack()));
        // Timer I is zero over a reliable transport.
        assert_eq!(h.log, [(0, "send 603".into()), (1_000, "terminated".into())]);
    }

    #[test]
    fn server_invite_ack_moves_to_confirmed_and_absorbs_acks_until_timer_i() {
        let mut h = proceeding(false);
        respond(&mut h, 0, 404);
        h.input(100, |m, now| m.handle_request(now, ack()));
        assert_eq!(h.m.state(), ServerInviteState::Confirmed);
        assert_eq!(h.m.next_timer(), Some((Timer::I, h.t0 + Duration::from_millis(5_100))));
        h.input(600, |m, now| m.handle_request(now, ack()));
        h.input(700, |m, now| m.handle_request(now, invite()));
        h.run_to(10_000);
        assert_eq!(h.log, [(0, "send 404".into()), (5_100, "terminated".into())]);
    }

    #[test]
    fn server_invite_2xx_enters_accepted_and_absorbs_invite_retransmissions_until_timer_l() {
        let mut h = proceeding(false);
        h.input(0, |m, now| m.send_trying(now, None));
        respond(&mut h, 1_000, 200);
        assert_eq!(h.m.state(), ServerInviteState::Accepted);
        assert_eq!(h.m.next_timer(), Some((Timer::L, h.t0 + Duration::from_millis(33_000))));
        // Neither the 100 nor anything else answers a retransmission now.
        h.input(1_200, |m, now| m.handle_request(now, invite()));
        // The UAS's retransmission of the 2xx, forwarded by the proxy.
        respond(&mut h, 1_500, 200);
        h.input(1_600, |m, now| m.handle_request(now, ack()));
        // Once a 2xx went out, nothing but 2xx follows.
        respond(&mut h, 1_700, 180);
        respond(&mut h, 1_800, 486);
        h.run_to(40_000);
        assert_eq!(
            h.log,
            [
                (0, "send 100".into()),
                (1_000, "send 200".into()),
                (1_500, "send 200".into()),
                (1_600, "ack to TU".into()),
                (33_000, "terminated".into()),
            ]
        );
    }

    #[test]
    fn server_invite_forwards_a_late_2xx_after_a_non_2xx_final() {
        let mut h = proceeding(true);
        respond(&mut h, 0, 487);
        respond(&mut h, 100, 200);
        assert_eq!(h.log, [(0, "send 487".into()), (100, "send 200".into())]);
        assert_eq!(h.m.state(), ServerInviteState::Completed);
    }

    #[test]
    fn server_invite_transport_error_informs_the_tu() {
        let mut h = proceeding(true);
        respond(&mut h, 0, 180);
        h.input(10, |m, now| m.handle_transport_error(now));
        assert_eq!(h.log, [(0, "send 180".into()), (10, "timeout".into()), (10, "terminated".into())]);
        let mut h = proceeding(true);
        respond(&mut h, 0, 200);
        h.input(10, |m, now| m.handle_transport_error(now));
        assert_eq!(h.m.state(), ServerInviteState::Accepted);
        assert_eq!(h.log, [(0, "send 200".into()), (10, "timeout".into())]);
    }

    #[test]
    fn server_invite_uses_configured_t1_t2_t4() {
        let config =
            TimerConfig { t1: Duration::from_millis(200), t2: Duration::from_millis(500), t4: Duration::from_secs(2) };
        let mut h = Harness::start(|now| ServerInvite::new(now, invite(), false, config));
        respond(&mut h, 0, 480);
        h.input(1_500, |m, now| m.handle_request(now, ack()));
        h.run_to(20_000);
        let sends: Vec<_> = h.log.iter().filter(|(_, what)| what == "send 480").map(|(t, _)| *t).collect();
        assert_eq!(sends, [0, 200, 600, 1_100]);
        assert_eq!(h.log.last(), Some(&(3_500, "terminated".into())));
        let mut h = Harness::start(|now| ServerInvite::new(now, invite(), false, config));
        respond(&mut h, 0, 480);
        h.run_to(20_000);
        assert_eq!(h.log.last(), Some(&(12_800, "terminated".into())));
    }
}

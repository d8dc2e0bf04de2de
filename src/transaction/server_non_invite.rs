//! The non-INVITE server transaction: RFC 3261 §17.2.2 (Figure 8). Retransmitted requests
//! are absorbed until the TU responds, then answered with the last response sent; after a
//! final response, for Timer J.

use std::time::Instant;

use bytes::Bytes;

use super::machine::{Core, plumbing};
use super::{Class, Output, Timer, TimerConfig};
use crate::message::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// With the TU; retransmissions are discarded.
    Trying,
    /// A provisional was sent; retransmissions get it again.
    Proceeding,
    /// A final response was sent; retransmissions get it again until Timer J.
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    /// The request until the final response: a UDP transaction then waits 32 s (Timer J)
    /// to resend that response, and holding the request all that time was most of its
    /// memory (at 4000 REGISTERs/s, a fresh page every few milliseconds).
    request: Option<Message>,
    core: Core,
    /// The last response sent: what a retransmitted request gets.
    last_response: Option<Bytes>,
}

enum Event {
    Retransmission,
    Respond(Class, Bytes),
    Timer(Timer),
    TransportError,
}

impl ServerNonInvite {
    /// Enters Trying for a received request (§17.2.2). Nothing is sent until the TU
    /// responds.
    pub fn new(_now: Instant, request: Message, reliable: bool, config: TimerConfig) -> Self {
        Self {
            state: ServerNonInviteState::Trying,
            request: Some(request),
            core: Core::server(reliable, config),
            last_response: None,
        }
    }

    /// A retransmission of the request: a request whose [`super::server_key`] is this
    /// transaction's.
    pub fn handle_request(&mut self, now: Instant, _request: Message) {
        self.step(now, Event::Retransmission);
    }

    /// The TU's response, as bytes ready for the wire, with its status code. Responses after
    /// the final one are discarded (§17.2.2).
    pub fn send_response(&mut self, now: Instant, response: Bytes, status: u16) {
        let Some(class) = Class::of(status) else { return };
        self.step(now, Event::Respond(class, response));
    }

    /// The transport could not send a response, or the flow it goes over closed.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.step(now, Event::TransportError);
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// The request that created the transaction, until a final response was sent.
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }

    fn step(&mut self, now: Instant, event: Event) {
        use ServerNonInviteState::{Completed, Proceeding, Terminated, Trying};
        match (self.state, event) {
            (Trying | Terminated, Event::Retransmission) => {}
            (Proceeding | Completed, Event::Retransmission) => {
                if let Some(last) = &self.last_response {
                    self.core.push(Output::Transmit(last.clone()));
                }
            }

            (Trying | Proceeding, Event::Respond(Class::Provisional, response)) => {
                self.state = Proceeding;
                self.core.push(Output::Transmit(response.clone()));
                self.last_response = Some(response);
            }
            (Trying | Proceeding, Event::Respond(Class::Success | Class::Failure, response)) => {
                self.state = Completed;
                self.request = None;
                self.core.push(Output::Transmit(response.clone()));
                self.last_response = Some(response);
                if self.core.reliable {
                    self.terminate();
                } else {
                    self.core.timers.set(Timer::J, now + self.core.config.transaction_timeout());
                }
            }
            (Completed | Terminated, Event::Respond(_, _)) => {}

            (Completed, Event::Timer(Timer::J)) => self.terminate(),
            // Disarmed when Completed is left.
            (Trying | Proceeding | Terminated, Event::Timer(Timer::J)) => {}
            // Never armed by this machine.
            (
                _,
                Event::Timer(
                    Timer::A
                    | Timer::B
                    | Timer::D
                    | Timer::E
                    | Timer::F
                    | Timer::G
                    | Timer::H
                    | Timer::I
                    | Timer::K
                    | Timer::L
                    | Timer::M,
                ),
            ) => {}

            // §17.2.4: the response did not get through. In Trying nothing was sent yet,
            // but the flow it must go back over is gone, which ends the transaction too.
            (Trying | Proceeding | Completed, Event::TransportError) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            (Terminated, Event::TransportError) => {}
        }
    }

    fn terminate(&mut self) {
        self.state = ServerNonInviteState::Terminated;
        self.core.terminate();
    }
}

plumbing!(ServerNonInvite, Event::Timer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::harness::{Harness, request, response_bytes};

    fn trying(reliable: bool) -> Harness<ServerNonInvite> {
        Harness::start(|now| ServerNonInvite::new(now, request("REGISTER"), reliable, TimerConfig::default()))
    }

    fn respond(h: &mut Harness<ServerNonInvite>, ms: u64, code: u16) {
        h.input(ms, |m, now| m.send_response(now, response_bytes(&request("REGISTER"), code, Some("r1")), code));
    }

    fn retransmission(h: &mut Harness<ServerNonInvite>, ms: u64) {
        h.input(ms, |m, now| m.handle_request(now, request("REGISTER")));
    }

    #[test]
    fn server_non_invite_absorbs_retransmission_in_trying() {
        let mut h = trying(false);
        retransmission(&mut h, 500);
        retransmission(&mut h, 1_500);
        assert!(h.log.is_empty());
        assert_eq!(h.m.state(), ServerNonInviteState::Trying);
        assert_eq!(h.m.poll_timeout(), None);
    }

    #[test]
    fn server_non_invite_resends_last_provisional_in_proceeding() {
        let mut h = trying(false);
        respond(&mut h, 100, 100);
        assert_eq!(h.m.state(), ServerNonInviteState::Proceeding);
        retransmission(&mut h, 500);
        assert_eq!(h.log, [(100, "send 100".into()), (500, "send 100".into())]);
    }

    #[test]
    fn server_non_invite_resends_final_in_completed_until_timer_j() {
        let mut h = trying(false);
        respond(&mut h, 100, 200);
        assert_eq!(h.m.state(), ServerNonInviteState::Completed);
        retransmission(&mut h, 600);
        retransmission(&mut h, 30_000);
        // Other final responses from the TU are discarded.
        respond(&mut h, 31_000, 500);
        h.run_to(40_000);
        assert_eq!(
            h.log,
            [
                (100, "send 200".into()),
                (600, "send 200".into()),
                (30_000, "send 200".into()),
                (32_100, "terminated".into())
            ]
        );
    }

    #[test]
    fn server_non_invite_lets_its_request_go_with_the_final_response_only() {
        let mut h = trying(false);
        respond(&mut h, 100, 100);
        assert!(h.m.request().is_some(), "a provisional keeps it");
        respond(&mut h, 200, 200);
        assert_eq!(h.m.request(), None);
        retransmission(&mut h, 600);
        assert_eq!(h.log.last(), Some(&(600, "send 200".into())), "the response alone answers");
    }

    #[test]
    fn server_non_invite_over_reliable_transport_terminates_with_the_final_response() {
        let mut h = trying(true);
        respond(&mut h, 100, 401);
        assert_eq!(h.log, [(100, "send 401".into()), (100, "terminated".into())]);
    }

    #[test]
    fn server_non_invite_uses_configured_t1_for_timer_j() {
        let config = TimerConfig { t1: std::time::Duration::from_millis(50), ..TimerConfig::default() };
        let mut h = Harness::start(|now| ServerNonInvite::new(now, request("BYE"), false, config));
        h.input(0, |m, now| m.send_response(now, response_bytes(&request("BYE"), 200, None), 200));
        h.run_to(10_000);
        assert_eq!(h.log, [(0, "send 200".into()), (3_200, "terminated".into())]);
    }

    #[test]
    fn server_non_invite_transport_error_informs_the_tu() {
        let mut h = trying(true);
        h.input(10, |m, now| m.handle_transport_error(now));
        assert_eq!(h.log, [(10, "timeout".into()), (10, "terminated".into())]);
    }
}

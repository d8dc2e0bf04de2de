//! The non-INVITE client transaction: RFC 3261 §17.1.2 (Figure 6). Over UDP the request is
//! retransmitted on Timer E, T1 doubling up to T2, and every T2 once a provisional response
//! came; Timer F gives up; Timer K absorbs retransmitted final responses.

use std::time::{Duration, Instant};

use super::machine::{Core, plumbing};
use super::{Class, Output, Timer, TimerConfig};
use crate::message::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// The request is out; retransmitted on Timer E over UDP, given up on Timer F.
    Trying,
    /// A provisional response arrived; retransmissions go on every T2.
    Proceeding,
    /// A final response arrived; its retransmissions are absorbed until Timer K.
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    request: Message,
    core: Core,
    /// The current Timer E interval.
    timer_e: Duration,
}

enum Event {
    Response(Class, Message),
    Timer(Timer),
    TransportError,
}

impl ClientNonInvite {
    /// Enters Trying and queues the request for transmission (§17.1.2.2). Timer E runs only
    /// over an unreliable transport; Timer F always.
    pub fn new(now: Instant, request: Message, reliable: bool, config: TimerConfig) -> Self {
        Self {
            state: ClientNonInviteState::Trying,
            core: Core::client(now, request.bytes(), reliable, config, Timer::E, Timer::F),
            request,
            timer_e: config.t1,
        }
    }

    /// A response whose [`super::client_key`] is this transaction's. Status codes outside
    /// 100..=699 are dropped.
    pub fn handle_response(&mut self, now: Instant, response: Message) {
        let Some(class) = response.status().and_then(Class::of) else { return };
        self.step(now, Event::Response(class, response));
    }

    /// The transport could not send the request, or the flow it goes over closed.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.step(now, Event::TransportError);
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn request(&self) -> &Message {
        &self.request
    }

    fn step(&mut self, now: Instant, event: Event) {
        use ClientNonInviteState::{Completed, Proceeding, Terminated, Trying};
        match (self.state, event) {
            (Trying | Proceeding, Event::Response(Class::Provisional, response)) => {
                // Timer E keeps its deadline; it is reset to T2 when it next fires.
                self.state = Proceeding;
                self.core.push(Output::Response(response));
            }
            (Trying | Proceeding, Event::Response(Class::Success | Class::Failure, response)) => {
                self.state = Completed;
                self.core.timers.clear();
                self.core.push(Output::Response(response));
                if self.core.reliable {
                    self.terminate();
                } else {
                    self.core.timers.set(Timer::K, now + self.core.config.t4);
                }
            }
            // Retransmissions of the final response (and late provisionals) are absorbed.
            (Completed | Terminated, Event::Response(_, _)) => {}

            (Trying, Event::Timer(Timer::E)) => {
                self.core.push(Output::Transmit(self.request.bytes()));
                self.timer_e = self.timer_e.saturating_mul(2).min(self.core.config.t2);
                self.core.timers.set(Timer::E, now + self.timer_e);
            }
            (Proceeding, Event::Timer(Timer::E)) => {
                self.core.push(Output::Transmit(self.request.bytes()));
                self.timer_e = self.core.config.t2;
                self.core.timers.set(Timer::E, now + self.timer_e);
            }
            (Trying | Proceeding, Event::Timer(Timer::F)) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            (Completed, Event::Timer(Timer::K)) => self.terminate(),
            // Each timer is disarmed when its state is left.
            (Completed | Terminated, Event::Timer(Timer::E | Timer::F))
            | (Trying | Proceeding | Terminated, Event::Timer(Timer::K)) => {}
            // Never armed by this machine.
            (
                _,
                Event::Timer(
                    Timer::A | Timer::B | Timer::D | Timer::G | Timer::H | Timer::I | Timer::J | Timer::L | Timer::M,
                ),
            ) => {}

            // §17.1.2.2, §17.1.4: a transport error before a final response fails the transaction.
            (Trying | Proceeding, Event::TransportError) => {
                self.core.push(Output::Timeout);
                self.terminate();
            }
            (Completed | Terminated, Event::TransportError) => {}
        }
    }

    fn terminate(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.core.terminate();
    }
}

plumbing!(ClientNonInvite, Event::Timer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::harness::{Harness, request, response};

    fn trying(reliable: bool, config: TimerConfig) -> Harness<ClientNonInvite> {
        Harness::start(|now| ClientNonInvite::new(now, request("OPTIONS"), reliable, config))
    }

    fn sends(h: &Harness<ClientNonInvite>) -> Vec<u64> {
        h.log.iter().filter(|(_, what)| what == "send OPTIONS").map(|(t, _)| *t).collect()
    }

    #[test]
    fn client_non_invite_timer_e_doubles_up_to_t2_then_stays() {
        let mut h = trying(false, TimerConfig::default());
        h.run_to(20_000);
        // Intervals 0.5, 1, 2, 4, 4, 4 s.
        assert_eq!(sends(&h), [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500]);
        assert_eq!(h.m.state(), ClientNonInviteState::Trying);
    }

    #[test]
    fn client_non_invite_provisional_moves_to_proceeding_and_retransmits_at_t2() {
        let mut h = trying(false, TimerConfig::default());
        h.input(200, |m, now| m.handle_response(now, response(&request("OPTIONS"), 100, None)));
        assert_eq!(h.m.state(), ClientNonInviteState::Proceeding);
        h.run_to(13_000);
        // The Timer E armed in Trying still fires at 0.5 s; from then on every T2.
        assert_eq!(sends(&h), [0, 500, 4_500, 8_500, 12_500]);
        assert!(h.log.contains(&(200, "up 100".into())));
    }

    #[test]
    fn client_non_invite_timeout_at_timer_f() {
        let mut h = trying(false, TimerConfig::default());
        h.input(1_000, |m, now| m.handle_response(now, response(&request("OPTIONS"), 100, None)));
        h.run_to(60_000);
        assert_eq!(h.log[h.log.len() - 2..], [(32_000, "timeout".into()), (32_000, "terminated".into())]);
        assert_eq!(*sends(&h).last().unwrap(), 29_500);
    }

    #[test]
    fn client_non_invite_over_reliable_transport_does_not_retransmit_and_timer_k_is_zero() {
        let mut h = trying(true, TimerConfig::default());
        assert_eq!(h.m.next_timer().map(|(t, _)| t), Some(Timer::F));
        h.input(3_000, |m, now| m.handle_response(now, response(&request("OPTIONS"), 200, Some("x"))));
        assert_eq!(h.log, [(0, "send OPTIONS".into()), (3_000, "up 200".into()), (3_000, "terminated".into())]);
    }

    #[test]
    fn client_non_invite_absorbs_final_retransmissions_until_timer_k() {
        let mut h = trying(false, TimerConfig::default());
        h.input(100, |m, now| m.handle_response(now, response(&request("OPTIONS"), 404, Some("x"))));
        assert_eq!(h.m.state(), ClientNonInviteState::Completed);
        h.input(600, |m, now| m.handle_response(now, response(&request("OPTIONS"), 404, Some("x"))));
        h.run_to(10_000);
        assert_eq!(h.log, [(0, "send OPTIONS".into()), (100, "up 404".into()), (5_100, "terminated".into())]);
    }

    #[test]
    fn client_non_invite_uses_configured_t1_t2_t4() {
        let config =
            TimerConfig { t1: Duration::from_millis(100), t2: Duration::from_millis(300), t4: Duration::from_secs(1) };
        let mut h = trying(false, config);
        h.input(1_000, |m, now| m.handle_response(now, response(&request("OPTIONS"), 200, Some("x"))));
        h.run_to(10_000);
        assert_eq!(sends(&h), [0, 100, 300, 600, 900]);
        assert_eq!(h.log.last(), Some(&(2_000, "terminated".into())));
        let mut h = trying(false, config);
        h.run_to(10_000);
        assert_eq!(h.log.last(), Some(&(6_400, "terminated".into())));
    }
}

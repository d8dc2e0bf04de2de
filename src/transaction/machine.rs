//! What the four machines share and nothing else: the kind of transport, the timer values,
//! the armed timers and the queue of outputs ([`Core`]), and the driving methods `handle_timeout`, `poll_output`,
//! `poll_timeout` and `next_timer` (`plumbing!`). It holds no state enum and decides no
//! transition: each machine's `step` does, in its own file.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{Output, Timer, TimerConfig, Timers};

/// Everything a machine holds besides its state, its request and its own retransmission
/// bookkeeping.
#[derive(Debug)]
pub(super) struct Core {
    /// TCP, TLS, WS or WSS: nothing is retransmitted and the wait timers are zero.
    pub(super) reliable: bool,
    pub(super) config: TimerConfig,
    pub(super) timers: Timers,
    outputs: VecDeque<Output>,
}

impl Core {
    /// A server transaction's (§17.2.1, §17.2.2): nothing sent and no timer armed until the
    /// TU responds.
    pub(super) fn server(reliable: bool, config: TimerConfig) -> Self {
        Self { reliable, config, timers: Timers::default(), outputs: VecDeque::new() }
    }

    /// A client transaction's (§17.1.1.2, §17.1.2.2): the request's bytes queued for transmission,
    /// `retransmit` (Timer A or E) armed for T1 only over an unreliable transport, `timeout`
    /// (Timer B or F) armed for 64·T1 always.
    pub(super) fn client(
        now: Instant,
        request: Bytes,
        reliable: bool,
        config: TimerConfig,
        retransmit: Timer,
        timeout: Timer,
    ) -> Self {
        let mut core = Self::server(reliable, config);
        core.push(Output::Transmit(request));
        if !reliable {
            core.timers.set(retransmit, now + config.t1);
        }
        core.timers.set(timeout, now + config.transaction_timeout());
        core
    }

    pub(super) fn push(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    /// The next output; once they are all taken the queue's buffer is given back, as a
    /// machine may then sit idle for Timer J or D (32 s) with nothing to send.
    pub(super) fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        if output.is_none() && self.outputs.capacity() > 0 {
            self.outputs = VecDeque::new();
        }
        output
    }

    /// Disarms every timer and queues [`Output::Terminated`], the last output. The machine
    /// sets its own state to Terminated.
    pub(super) fn terminate(&mut self) {
        self.timers.clear();
        self.push(Output::Terminated);
    }
}

/// The driving methods of a machine, the same for all four: `handle_timeout(now)`,
/// `poll_output()`, `poll_timeout()`, `next_timer()`. Invoked once per machine file, with
/// the machine's type and the variant of its `Event` that carries a fired [`Timer`]; the
/// machine has a field `core: Core` and a method `fn step(&mut self, now: Instant, event:
/// Event)`.
macro_rules! plumbing {
    ($machine:ty, $timer_event:path) => {
        impl $machine {
            /// Fires the timers due at `now`, earliest first. A timer that an earlier one
            /// disarmed (by changing state) does not fire; one re-armed meanwhile waits for
            /// the next call.
            pub fn handle_timeout(&mut self, now: ::std::time::Instant) {
                for timer in self.core.timers.due(now) {
                    if self.core.timers.take_if_due(timer, now) {
                        self.step(now, $timer_event(timer));
                    }
                }
            }

            pub fn poll_output(&mut self) -> Option<$crate::transaction::Output> {
                self.core.poll_output()
            }

            pub fn poll_timeout(&self) -> Option<::std::time::Instant> {
                self.next_timer().map(|(_, at)| at)
            }

            /// The next timer to fire and when.
            pub fn next_timer(&self) -> Option<($crate::transaction::Timer, ::std::time::Instant)> {
                self.core.timers.next()
            }
        }
    };
}

pub(super) use plumbing;

//! The response context of one forwarded request (RFC 3261 §16.7): its branches and the
//! best final response so far.

use std::collections::VecDeque;
use std::time::Instant;

use std::net::SocketAddr;

use super::{Target, UacCredentials};
use crate::message::Message;
use crate::transaction::TransactionKey;
use crate::transport::{Destination, Source, TransportKind};

#[derive(Debug)]
pub(super) struct Context {
    /// The request as received, for responses we build ourselves.
    pub(super) request: Message,
    /// Where it came from: the caller's side of a dialog it creates.
    pub(super) source: Source,
    pub(super) is_invite: bool,
    pub(super) branches: Vec<Branch>,
    /// The best final non-2xx response so far (step 6).
    pub(super) best: Option<Message>,
    /// A final response went upstream; later non-2xx are dropped, 2xx still go.
    pub(super) final_sent: bool,
    /// Failover targets not tried yet, in order.
    pub(super) pending: VecDeque<Target>,
    /// A branch went out with another From or To than received (caller ID toward a
    /// trunk): responses get the received ones back.
    pub(super) identity_changed: bool,
}

#[derive(Debug)]
pub(super) struct Branch {
    pub(super) key: TransactionKey,
    pub(super) destination: Destination,
    pub(super) state: BranchState,
    /// §16.6 step 11: INVITE branches only.
    pub(super) timer_c: Option<Instant>,
    /// A CANCEL came before the branch rang: send it on the first provisional (§9.1).
    pub(super) cancel_when_ringing: bool,
    /// Failover: abandon the branch if nothing (not even 1xx) came by then.
    pub(super) failover_at: Option<Instant>,
    /// Credentials for the target's challenges, and how to send the request again.
    pub(super) auth: Option<BranchAuth>,
    /// How far this branch's CSeq runs ahead of the caller's: one per re-sent request.
    pub(super) cseq_offset: u32,
    /// The From user the target was sent (its dialog keeps presenting the caller so).
    pub(super) from_user: Option<String>,
    /// The entry of the earlier of `timer_c` and `failover_at` in the proxy's deadline
    /// queue, kept so that it leaves the queue when they change: a stale entry would wake
    /// the server for nothing (two per answered call, three minutes later, for Timer C).
    pub(super) scheduled: Option<(Instant, u64)>,
}

#[derive(Debug)]
pub(super) struct BranchAuth {
    pub(super) credentials: UacCredentials,
    pub(super) kind: TransportKind,
    pub(super) local: SocketAddr,
    /// Requests re-sent with credentials so far.
    pub(super) attempts: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BranchState {
    Calling,
    Proceeding,
    Cancelling,
    Done(u16),
}

impl Context {
    pub(super) fn new(request: Message, source: Source, is_invite: bool) -> Self {
        Self {
            request,
            source,
            is_invite,
            // Most contexts have one branch for their whole life (32 s after the answer
            // over UDP); a first push would reserve room for four.
            branches: Vec::with_capacity(1),
            best: None,
            final_sent: false,
            pending: VecDeque::new(),
            identity_changed: false,
        }
    }

    /// Keeps `response` if it beats the best so far.
    pub(super) fn consider(&mut self, response: Message) {
        let better = match &self.best {
            None => true,
            Some(best) => rank(response.status().unwrap_or(500)) < rank(best.status().unwrap_or(500)),
        };
        if better {
            self.best = Some(response);
        }
    }
}

impl Branch {
    /// The deadline this branch needs next: the earlier of Timer C and failover.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.timer_c, self.failover_at].into_iter().flatten().min()
    }

    pub(super) fn new(key: TransactionKey, destination: Destination, timer_c: Option<Instant>) -> Self {
        Self {
            key,
            destination,
            state: BranchState::Calling,
            timer_c,
            cancel_when_ringing: false,
            failover_at: None,
            auth: None,
            cseq_offset: 0,
            from_user: None,
            scheduled: None,
        }
    }
}

/// Lower is better. §16.7 step 6: any 6xx wins; otherwise the lowest class. Within a
/// class, a real answer beats our own 408 (a timeout) and a downstream 503.
fn rank(code: u16) -> (u8, u8) {
    let class = match code / 100 {
        6 => 0,
        3 => 1,
        4 => 2,
        5 => 3,
        _ => 4,
    };
    (class, u8::from(matches!(code, 408 | 503)))
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn best_response_rules_of_16_7() {
        assert!(rank(603) < rank(302));
        assert!(rank(302) < rank(486));
        assert!(rank(486) < rank(408), "a real refusal beats a timeout");
        assert!(rank(487) < rank(500));
        assert!(rank(500) < rank(503));
    }
}

//! Call lifecycle events for the policy above: which destination an initial INVITE went
//! to, and when a call ended, so the engine can count calls per trunk (`max_calls`).
//! Only signals; the proxy makes no decision from them.

use super::Proxy;
use super::context::BranchState;
use crate::message::{HeaderName, Method, NameAddr};
use crate::transaction::TransactionKey;
use crate::transport::Destination;

/// Something that happened to a call (an initial INVITE and the dialog it created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A branch of an initial INVITE was sent to `destination` (the first target, or a
    /// failover step).
    Forwarded { call_id: String, destination: Destination },
    /// The call is over: its INVITE ended without a 2xx, or its dialog was removed (BYE,
    /// maximum duration, flow loss). May come more than once for one call.
    Ended { call_id: String },
}

impl Proxy {
    /// The next call event, oldest first.
    pub fn poll_call_event(&mut self) -> Option<CallEvent> {
        self.call_events.pop_front()
    }

    /// A branch of the context under `server` was started toward `destination`.
    pub(super) fn call_forwarded(&mut self, server: &TransactionKey, destination: &Destination) {
        let Some(call_id) = self.contexts.get(server).and_then(|ctx| initial_invite_call_id(ctx)) else { return };
        self.call_events.push_back(CallEvent::Forwarded { call_id, destination: *destination });
    }

    /// The context under `server` sent (or will send) its final answer: a call ends
    /// here unless a branch answered 2xx, whose dialog then carries the call.
    pub(super) fn call_context_ended(&mut self, server: &TransactionKey) {
        let Some(ctx) = self.contexts.get(server) else { return };
        let answered =
            ctx.branches.iter().any(|b| matches!(b.state, BranchState::Done(code) if (200..300).contains(&code)));
        if answered {
            return;
        }
        let Some(call_id) = initial_invite_call_id(ctx) else { return };
        self.call_events.push_back(CallEvent::Ended { call_id });
    }

    /// A dialog of `call_id` was removed, or its INVITE was refused before any branch.
    pub(super) fn call_dialog_ended(&mut self, call_id: &str) {
        self.call_events.push_back(CallEvent::Ended { call_id: call_id.to_owned() });
    }
}

/// The Call-ID of an INVITE outside any dialog (no To tag); re-INVITEs are not calls.
fn initial_invite_call_id(ctx: &super::context::Context) -> Option<String> {
    if !ctx.is_invite || ctx.request.method() != Some(&Method::Invite) {
        return None;
    }
    let to = ctx.request.first_value(HeaderName::To)?;
    if NameAddr::parse(&to).ok()?.tag().is_some() {
        return None;
    }
    ctx.request.call_id().map(|c| String::from_utf8_lossy(&c).into_owned())
}

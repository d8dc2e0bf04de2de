//! Media bridging between a browser and a plain-RTP trunk through rtpengine: which calls
//! are bridged and which way each SDP flows, as the proxy's body hooks see them. The
//! offer on the INVITE (and every re-INVITE) and the answer on the 18x/2xx wait for
//! rtpengine's rewritten SDP ([`BodyAction::Defer`]); the session is deleted on every way
//! the call ends ([`crate::proxy::CallEvent::Ended`]).
//!
//! Browser-to-browser calls are not bridged: they stay peer to peer (unless
//! `media.bridge_browser_calls`).
//!
//! An ICE restart from the browser (a re-INVITE whose only news is new ICE credentials:
//! a network change) is not the trunk's business: rtpengine takes the browser's new offer,
//! is given the trunk's last SDP as the answer, and we answer the browser ourselves, so
//! the plain-RTP leg is not renegotiated.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;

use super::Engine;
use crate::media::{CallKey, Command, Leg, MediaConfig, RequestId, Rtpengine};
use crate::message::{HeaderName, Message, Method, NameAddr};
use crate::proxy::{BodyAction, LocalReply};

/// Answers kept per bridged call for retransmitted 2xx: a handful at most.
const ANSWERS_PER_CALL: usize = 8;

/// rtpengine and the calls it bridges.
#[derive(Debug)]
pub(crate) struct MediaBridge {
    rtpengine: Rtpengine,
    /// Requests to rtpengine in flight, and what waits on each.
    pending: HashMap<RequestId, Waiting>,
    /// Deletes in flight: their outcome only matters for the logs.
    deleting: HashSet<RequestId>,
    next_defer: u64,
    /// Calls whose next INVITE is bridged, decided when they were routed, by Call-ID.
    calls: HashMap<String, BridgedCall>,
}

#[derive(Debug)]
struct Waiting {
    /// The proxy's deferred request or response.
    defer: u64,
    /// For an answer: where its rewritten body is kept for retransmissions.
    answer: Option<(String, String, u32)>,
    /// What comes after this reply, for an ICE restart answered here.
    then: Option<IceRestart>,
}

/// The steps of an ICE restart answered without the trunk.
#[derive(Debug)]
enum IceRestart {
    /// The browser's new offer is in rtpengine; next, the trunk's last SDP as the answer.
    Offered { key: CallKey, plain_sdp: Bytes, contact: String },
    /// rtpengine's answer for the browser is the reply to its re-INVITE.
    Answered { contact: String },
}

/// One bridged call: what each side speaks.
#[derive(Debug, Clone)]
pub(crate) struct BridgedCall {
    /// The caller's From tag: a request with it comes from the caller's side.
    pub(crate) caller_tag: String,
    pub(crate) caller: Leg,
    pub(crate) callee: Leg,
    /// The trunk's codecs (an offer toward it carries only these).
    pub(crate) codecs: Vec<String>,
    answers: HashMap<(String, u32), Bytes>,
    /// The browser side's ICE username fragment, last seen: a new one is an ICE restart.
    browser_ufrag: Option<String>,
    /// The plain-RTP side's last SDP, as it sent it.
    plain_sdp: Option<Bytes>,
}

impl BridgedCall {
    pub(crate) fn new(caller_tag: String, caller: Leg, callee: Leg, codecs: Vec<String>) -> Self {
        Self { caller_tag, caller, callee, codecs, answers: HashMap::new(), browser_ufrag: None, plain_sdp: None }
    }

    /// Remembers what a side sent: the browser's ICE credentials, the trunk's SDP.
    fn saw(&mut self, from: Leg, body: &[u8]) {
        match from {
            Leg::Browser => {
                if let Ok(summary) = crate::message::sdp::inspect(body) {
                    self.browser_ufrag = summary.ice_ufrag;
                }
            }
            Leg::PlainRtp => self.plain_sdp = Some(Bytes::copy_from_slice(body)),
        }
    }

    /// A re-INVITE from the browser toward a plain-RTP side that only restarts ICE: new
    /// credentials, every stream still sendrecv, and the trunk's SDP known to answer with.
    fn is_ice_restart(&self, from: Leg, to: Leg, body: &[u8]) -> bool {
        if from != Leg::Browser || to != Leg::PlainRtp || self.plain_sdp.is_none() {
            return false;
        }
        let Ok(summary) = crate::message::sdp::inspect(body) else { return false };
        let sendrecv = summary.media.iter().all(|m| m.direction == crate::message::sdp::Direction::SendRecv);
        sendrecv
            && summary.ice_ufrag.is_some()
            && self.browser_ufrag.is_some()
            && summary.ice_ufrag != self.browser_ufrag
    }
}

impl MediaBridge {
    pub(crate) fn new(config: MediaConfig, seed: u64) -> Self {
        Self {
            rtpengine: Rtpengine::new(config, seed),
            pending: HashMap::new(),
            deleting: HashSet::new(),
            next_defer: 0,
            calls: HashMap::new(),
        }
    }

    /// The call `call_id` is bridged from here on (its INVITE is about to be forwarded).
    pub(crate) fn bridge(&mut self, call_id: String, call: BridgedCall) {
        self.calls.insert(call_id, call);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.rtpengine.poll_timeout()
    }

    /// An offer on an INVITE of a bridged call, from whichever side sent it.
    pub(crate) fn request_body(&mut self, now: Instant, request: &Message) -> BodyAction {
        if request.method() != Some(&Method::Invite) || request.body().is_empty() {
            return BodyAction::Keep;
        }
        let Some((call_id, from_tag, to_tag)) = tags(request) else { return BodyAction::Keep };
        let Some(call) = self.calls.get_mut(&call_id) else { return BodyAction::Keep };
        let (from, to) =
            if from_tag == call.caller_tag { (call.caller, call.callee) } else { (call.callee, call.caller) };
        let codecs = if to == Leg::PlainRtp { call.codecs.clone() } else { Vec::new() };
        let restart = to_tag.is_some() && call.is_ice_restart(from, to, request.body());
        let plain_sdp = call.plain_sdp.clone();
        call.saw(from, request.body());
        let key = CallKey { call_id, from_tag, to_tag };
        let sdp = Bytes::copy_from_slice(request.body());
        let id = self.rtpengine.request(now, &key, Command::Offer { sdp, from, to, codecs });
        let then = match (restart, plain_sdp) {
            (true, Some(plain_sdp)) => {
                tracing::debug!(call_id = %key.call_id, "ICE restart from the browser; answered without the trunk");
                let contact =
                    request.request_uri().map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
                Some(IceRestart::Offered { key, plain_sdp, contact })
            }
            _ => None,
        };
        self.defer_then(id, None, then)
    }

    /// An answer on a 18x or 2xx to an INVITE of a bridged call.
    pub(crate) fn response_body(&mut self, now: Instant, request: &Message, response: &Message) -> BodyAction {
        let code = response.status().unwrap_or(0);
        let is_invite = response.cseq().is_some_and(|(_, m)| m == Method::Invite);
        if !is_invite || !(180..300).contains(&code) || response.body().is_empty() {
            return BodyAction::Keep;
        }
        let Some((call_id, from_tag, _)) = tags(request) else { return BodyAction::Keep };
        let Some(to_tag) = to_tag(response) else { return BodyAction::Keep };
        let Some(call) = self.calls.get_mut(&call_id) else { return BodyAction::Keep };
        let cseq = response.cseq().map_or(0, |(n, _)| n);
        if let Some(body) = call.answers.get(&(to_tag.clone(), cseq)) {
            // A retransmitted 2xx: the same rewritten answer, without asking again.
            return BodyAction::Replace(body.clone());
        }
        // The answer flows back toward the sender of the request.
        let (from, to) =
            if from_tag == call.caller_tag { (call.callee, call.caller) } else { (call.caller, call.callee) };
        call.saw(from, response.body());
        let codecs = if to == Leg::PlainRtp { call.codecs.clone() } else { Vec::new() };
        let key = CallKey { call_id: call_id.clone(), from_tag, to_tag: Some(to_tag.clone()) };
        let sdp = Bytes::copy_from_slice(response.body());
        let id = self.rtpengine.request(now, &key, Command::Answer { sdp, from, to, codecs });
        self.defer(id, Some((call_id, to_tag, cseq)))
    }

    /// The call is over: its session goes.
    pub(crate) fn call_ended(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.remove(call_id) else { return };
        let key = CallKey { call_id: call_id.to_owned(), from_tag: call.caller_tag, to_tag: None };
        let id = self.rtpengine.request(now, &key, Command::Delete);
        self.deleting.insert(id);
    }

    fn defer(&mut self, id: RequestId, answer: Option<(String, String, u32)>) -> BodyAction {
        self.defer_then(id, answer, None)
    }

    fn defer_then(
        &mut self,
        id: RequestId,
        answer: Option<(String, String, u32)>,
        then: Option<IceRestart>,
    ) -> BodyAction {
        self.next_defer += 1;
        self.pending.insert(id, Waiting { defer: self.next_defer, answer, then });
        BodyAction::Defer(self.next_defer)
    }

    /// The next step of an ICE restart answered here; `None` when the reply ends it.
    fn ice_restart_step(
        &mut self,
        now: Instant,
        defer: u64,
        step: IceRestart,
        sdp: Bytes,
    ) -> Option<(u64, Result<Bytes, LocalReply>)> {
        match step {
            IceRestart::Offered { key, plain_sdp, contact } => {
                let command =
                    Command::Answer { sdp: plain_sdp, from: Leg::PlainRtp, to: Leg::Browser, codecs: Vec::new() };
                let id = self.rtpengine.request(now, &key, command);
                self.pending.insert(id, Waiting { defer, answer: None, then: Some(IceRestart::Answered { contact }) });
                None
            }
            IceRestart::Answered { contact } => {
                let mut reply = LocalReply::new(200);
                reply.headers.push(("Contact", format!("<{contact}>").into()));
                reply.headers.push(("Content-Type", "application/sdp".into()));
                reply.body = Some(sdp);
                Some((defer, Err(reply)))
            }
        }
    }

    /// rtpengine's answers so far, as what the proxy resumes with.
    fn outcomes(&mut self, now: Instant) -> Vec<(u64, Result<Bytes, LocalReply>)> {
        let mut out = Vec::new();
        while let Some((id, result)) = self.rtpengine.poll_outcome() {
            if self.deleting.remove(&id) {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "rtpengine delete failed; the session ends at its own timeout");
                }
                continue;
            }
            let Some(waiting) = self.pending.remove(&id) else { continue };
            if let (Some(step), Ok(reply)) = (waiting.then, &result) {
                let sdp = reply.sdp.clone().unwrap_or_default();
                out.extend(self.ice_restart_step(now, waiting.defer, step, sdp));
                continue;
            }
            let resumed = match result {
                Ok(reply) => match reply.sdp {
                    Some(sdp) => {
                        if let Some(w) = &reply.warning {
                            tracing::info!(warning = %w, "rtpengine warning");
                        }
                        if let Some((call_id, to_tag, cseq)) = waiting.answer
                            && let Some(call) = self.calls.get_mut(&call_id)
                            && call.answers.len() < ANSWERS_PER_CALL
                        {
                            call.answers.insert((to_tag, cseq), sdp.clone());
                        }
                        Ok(sdp)
                    }
                    None => Err(LocalReply::with_reason(500, "Media Relay Returned No SDP")),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "rtpengine could not bridge the call");
                    Err(LocalReply::with_reason(e.status(), e.to_string()))
                }
            };
            out.push((waiting.defer, resumed));
        }
        out
    }
}

impl Engine {
    /// A datagram from rtpengine.
    pub(super) fn on_media_datagram(&mut self, now: Instant, from: std::net::SocketAddr, bytes: &[u8]) {
        if let Some(media) = &mut self.local.media {
            media.rtpengine.handle_datagram(now, from, bytes);
        }
        self.media_outcomes(now);
    }

    pub(super) fn media_timeout(&mut self, now: Instant) {
        if let Some(media) = &mut self.local.media {
            media.rtpengine.handle_timeout(now);
        }
        self.media_outcomes(now);
    }

    /// Deferred requests and responses go on with rtpengine's SDP (or end, for a request
    /// it refused).
    pub(super) fn media_outcomes(&mut self, now: Instant) {
        let Some(media) = &mut self.local.media else { return };
        for (defer, outcome) in media.outcomes(now) {
            self.proxy.resume(now, defer, outcome, &mut self.local);
        }
    }

    /// The next ng datagram for rtpengine.
    pub fn poll_media_transmit(&mut self) -> Option<(std::net::SocketAddr, Bytes)> {
        self.local.media.as_mut()?.rtpengine.poll_transmit()
    }
}

/// Call-ID, From tag and To tag (if any) of a request.
fn tags(request: &Message) -> Option<(String, String, Option<String>)> {
    let call_id = String::from_utf8_lossy(&request.call_id()?).into_owned();
    let from = request.first_value(HeaderName::From)?;
    let from_tag = NameAddr::parse(&from).ok()?.tag().map(|t| String::from_utf8_lossy(t).into_owned())?;
    Some((call_id, from_tag, to_tag(request)))
}

fn to_tag(message: &Message) -> Option<String> {
    let to = message.first_value(HeaderName::To)?;
    NameAddr::parse(&to).ok()?.tag().map(|t| String::from_utf8_lossy(t).into_owned())
}

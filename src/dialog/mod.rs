//! L3: the INVITE dialogs that pass through us (RFC 3261 §12), as a proxy sees them:
//! created by a 2xx, ended by a BYE, a maximum duration, or the death of a browser's
//! flow. Enough is kept to end a dialog ourselves: each side's target and where it is
//! reached, and the highest CSeq each side used.
//!
//! It sends nothing; the proxy builds the BYEs from what [`Dialog::bye_towards`] says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::{Destination, FlowId};

/// Call-ID and the two tags (§12: the dialog ID), caller's tag first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub caller_tag: String,
    pub callee_tag: String,
}

/// One side of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// From (caller) or To (callee) as on the wire, tag included.
    pub identity: String,
    /// Its Contact URI: the remote target of requests sent to it.
    pub target: String,
    /// Where it is reached: its flow, or its UDP address.
    pub destination: Destination,
    /// The highest CSeq it has used.
    pub cseq: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    pub caller: Party,
    pub callee: Party,
    pub started: Instant,
    pub ends_at: Instant,
    /// How far the callee's view of the caller's CSeq runs ahead: we re-sent the INVITE
    /// with credentials (RFC 3261 §22.2), so caller requests are shifted by this much.
    pub cseq_offset: u32,
    /// The From user the callee knows the caller by, when we changed it (a trunk's
    /// caller-ID policy); the caller's own identity is [`Party::identity`].
    pub caller_presented_as: Option<String>,
}

/// Which side a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Callee,
}

/// What a proxy needs to send a BYE into a dialog on a party's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByeSpec {
    pub request_uri: String,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub destination: Destination,
}

impl Dialog {
    /// A BYE towards `to`, as if the other party sent it (CSeq one above its highest).
    pub fn bye_towards(&self, to: Side) -> ByeSpec {
        let (recipient, sender) = match to {
            Side::Caller => (&self.caller, &self.callee),
            Side::Callee => (&self.callee, &self.caller),
        };
        ByeSpec {
            request_uri: recipient.target.clone(),
            from: sender.identity.clone(),
            to: recipient.identity.clone(),
            call_id: self.id.call_id.clone(),
            cseq: sender.cseq.saturating_add(1).saturating_add(if to == Side::Callee { self.cseq_offset } else { 0 }),
            destination: recipient.destination,
        }
    }

    fn side_on(&self, flow: FlowId) -> Option<Side> {
        if self.caller.destination == Destination::Flow(flow) {
            Some(Side::Caller)
        } else if self.callee.destination == Destination::Flow(flow) {
            Some(Side::Callee)
        } else {
            None
        }
    }
}

/// The dialogs we are in, bounded in number and in duration.
#[derive(Debug)]
pub struct Dialogs {
    dialogs: HashMap<DialogId, Dialog>,
    /// Ends by time, earliest first; entries of dialogs already gone are skipped when
    /// they come up, so expiry never scans every dialog.
    ends: std::collections::BTreeMap<(Instant, u64), DialogId>,
    seq: u64,
    max_duration: Duration,
    capacity: usize,
    started_total: u64,
}

impl Dialogs {
    pub fn new(max_duration: Duration, capacity: usize) -> Self {
        Self {
            dialogs: HashMap::new(),
            ends: std::collections::BTreeMap::new(),
            seq: 0,
            max_duration,
            capacity,
            started_total: 0,
        }
    }

    /// A 2xx to an initial INVITE went upstream. A second 2xx for the same dialog
    /// (a retransmission) changes nothing; past the capacity the dialog is not tracked.
    pub fn confirmed(&mut self, now: Instant, id: DialogId, caller: Party, callee: Party) -> bool {
        if self.dialogs.contains_key(&id) || self.dialogs.len() >= self.capacity {
            return false;
        }
        self.started_total += 1;
        let ends_at = now + self.max_duration;
        self.seq += 1;
        self.ends.insert((ends_at, self.seq), id.clone());
        let dialog =
            Dialog { id: id.clone(), caller, callee, started: now, ends_at, cseq_offset: 0, caller_presented_as: None };
        self.dialogs.insert(id, dialog);
        true
    }

    /// The callee counts the caller's CSeqs `offset` higher (see [`Dialog::cseq_offset`]).
    pub fn shift_caller_cseq(&mut self, id: &DialogId, offset: u32) {
        if let Some(d) = self.dialogs.get_mut(id) {
            d.cseq_offset = offset;
        }
    }

    /// The callee knows the caller under this From user (see [`Dialog::caller_presented_as`]).
    pub fn present_caller_as(&mut self, id: &DialogId, user: Option<String>) {
        if let Some(d) = self.dialogs.get_mut(id) {
            d.caller_presented_as = user;
        }
    }

    /// For a dialog whose caller is presented under another From user: that user, and
    /// the caller's own identity.
    pub fn presented_as(&self, id: &DialogId) -> Option<(String, String)> {
        let d = self.dialogs.get(id)?;
        Some((d.caller_presented_as.clone()?, d.caller.identity.clone()))
    }

    /// How far the callee's view of the caller's CSeq runs ahead of the caller's own.
    pub fn cseq_offset(&self, id: &DialogId) -> Option<u32> {
        self.dialogs.get(id).map(|d| d.cseq_offset)
    }

    /// An in-dialog request passed: remembers its CSeq; a BYE ends the dialog.
    pub fn request(&mut self, call_id: &str, from_tag: &str, to_tag: &str, cseq: u32, is_bye: bool) -> Option<Side> {
        let (id, side) = self.find(call_id, from_tag, to_tag)?;
        if is_bye {
            self.dialogs.remove(&id);
            return Some(side);
        }
        if let Some(d) = self.dialogs.get_mut(&id) {
            let party = match side {
                Side::Caller => &mut d.caller,
                Side::Callee => &mut d.callee,
            };
            party.cseq = party.cseq.max(cseq);
        }
        Some(side)
    }

    /// Dialogs with a party on `flow`, removed, with the side that lost its flow.
    pub fn flow_closed(&mut self, flow: FlowId) -> Vec<(Dialog, Side)> {
        let ids: Vec<DialogId> =
            self.dialogs.values().filter(|d| d.side_on(flow).is_some()).map(|d| d.id.clone()).collect();
        ids.into_iter()
            .filter_map(|id| self.dialogs.remove(&id))
            .filter_map(|d| d.side_on(flow).map(|side| (d, side)))
            .collect()
    }

    /// A party moved to a new flow (RFC 5626: the same instance registered again):
    /// its dialogs follow it.
    pub fn repoint(&mut self, old: FlowId, new: FlowId) -> usize {
        let mut moved = 0;
        for d in self.dialogs.values_mut() {
            for party in [&mut d.caller, &mut d.callee] {
                if party.destination == Destination::Flow(old) {
                    party.destination = Destination::Flow(new);
                    moved += 1;
                }
            }
        }
        moved
    }

    /// Dialogs past their maximum duration, removed.
    pub fn expired(&mut self, now: Instant) -> Vec<Dialog> {
        let mut out = Vec::new();
        while let Some(entry) = self.ends.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            if self.dialogs.get(&id).is_some_and(|d| d.ends_at <= now)
                && let Some(d) = self.dialogs.remove(&id)
            {
                out.push(d);
            }
        }
        out
    }

    /// When [`Self::expired`] is next worth calling (possibly early, never late).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.ends.keys().next().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    pub fn started_total(&self) -> u64 {
        self.started_total
    }

    /// The dialog a request belongs to and the side that sent it: From tag is the
    /// sender's, To tag the recipient's.
    pub fn find(&self, call_id: &str, from_tag: &str, to_tag: &str) -> Option<(DialogId, Side)> {
        let forward = DialogId { call_id: call_id.into(), caller_tag: from_tag.into(), callee_tag: to_tag.into() };
        if self.dialogs.contains_key(&forward) {
            return Some((forward, Side::Caller));
        }
        let backward = DialogId { call_id: call_id.into(), caller_tag: to_tag.into(), callee_tag: from_tag.into() };
        self.dialogs.contains_key(&backward).then_some((backward, Side::Callee))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(identity: &str, target: &str, destination: Destination, cseq: u32) -> Party {
        Party { identity: identity.into(), target: target.into(), destination, cseq }
    }

    fn id() -> DialogId {
        DialogId { call_id: "c1".into(), caller_tag: "a".into(), callee_tag: "b".into() }
    }

    fn table(now: Instant) -> Dialogs {
        let mut d = Dialogs::new(Duration::from_secs(3600), 10);
        let caller = party("<sip:alice@h>;tag=a", "sip:alice@x.invalid;transport=ws", Destination::Flow(FlowId(1)), 2);
        let udp = Destination::Datagram {
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "192.0.2.9:5060".parse().unwrap(),
        };
        let callee = party("<sip:bob@h>;tag=b", "sip:bob@192.0.2.9", udp, 0);
        assert!(d.confirmed(now, id(), caller, callee));
        d
    }

    #[test]
    fn bye_from_either_side_ends_the_dialog() {
        let now = crate::clock::now();
        let mut d = table(now);
        assert_eq!(d.request("c1", "b", "a", 1, false), Some(Side::Callee), "a re-INVITE from the callee");
        assert_eq!(d.request("c1", "a", "b", 3, true), Some(Side::Caller));
        assert!(d.is_empty());
        assert_eq!(d.started_total(), 1);
    }

    #[test]
    fn a_dead_browser_flow_ends_its_dialogs_and_says_whom_to_tell() {
        let now = crate::clock::now();
        let mut d = table(now);
        d.request("c1", "b", "a", 7, false);
        let ended = d.flow_closed(FlowId(1));
        assert_eq!(ended.len(), 1);
        let (dialog, lost) = &ended[0];
        assert_eq!(*lost, Side::Caller);
        let bye = dialog.bye_towards(Side::Callee);
        assert_eq!(bye.request_uri, "sip:bob@192.0.2.9");
        assert_eq!((bye.from.as_str(), bye.to.as_str(), bye.cseq), ("<sip:alice@h>;tag=a", "<sip:bob@h>;tag=b", 3));
        assert!(d.is_empty());
    }

    #[test]
    fn dialogs_follow_a_replaced_flow() {
        let now = crate::clock::now();
        let mut d = table(now);
        assert_eq!(d.repoint(FlowId(1), FlowId(9)), 1);
        assert!(d.flow_closed(FlowId(1)).is_empty(), "the old flow no longer ends it");
        assert_eq!(d.flow_closed(FlowId(9)).len(), 1);
    }

    #[test]
    fn maximum_duration_ends_dialogs_on_the_given_clock() {
        let now = crate::clock::now();
        let mut d = table(now);
        assert_eq!(d.next_expiry(), Some(now + Duration::from_secs(3600)));
        assert!(d.expired(now + Duration::from_secs(3599)).is_empty());
        assert_eq!(d.expired(now + Duration::from_secs(3600)).len(), 1);
    }

    #[test]
    fn capacity_bounds_what_is_tracked() {
        let now = crate::clock::now();
        let mut d = Dialogs::new(Duration::from_secs(60), 1);
        let p = party("x;tag=1", "sip:x@h", Destination::Flow(FlowId(1)), 1);
        assert!(d.confirmed(now, id(), p.clone(), p.clone()));
        let other = DialogId { call_id: "c2".into(), ..id() };
        assert!(!d.confirmed(now, other, p.clone(), p));
    }
}

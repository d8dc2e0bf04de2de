//! Calls in progress per trunk, for `max_calls`. A call counts against a trunk from the
//! moment it is routed there until it ends (a final non-2xx, or its dialog ends by BYE,
//! maximum duration or flow loss); when failover moves it to another trunk's target, the
//! count moves with it. The proxy's [`CallEvent`]s say when either happens.

use std::collections::HashMap;

use crate::proxy::CallEvent;
use crate::transport::Destination;

#[derive(Debug, Default)]
pub(super) struct TrunkCalls {
    calls: HashMap<String, Call>,
    active: HashMap<String, usize>,
}

#[derive(Debug)]
struct Call {
    /// The trunk the call counts against now.
    trunk: String,
    /// Every destination the call may go to, with its trunk.
    destinations: Vec<(Destination, String)>,
}

impl TrunkCalls {
    /// Calls counting against `trunk` now.
    pub(super) fn active(&self, trunk: &str) -> usize {
        self.active.get(trunk).copied().unwrap_or(0)
    }

    /// An INVITE was routed to these destinations, in failover order: it counts against
    /// the trunk of the first.
    pub(super) fn routed(&mut self, call_id: &str, destinations: Vec<(Destination, String)>) {
        self.ended(call_id);
        let Some((_, trunk)) = destinations.first() else { return };
        let trunk = trunk.clone();
        *self.active.entry(trunk.clone()).or_default() += 1;
        self.calls.insert(call_id.to_owned(), Call { trunk, destinations });
    }

    pub(super) fn on_event(&mut self, event: CallEvent) {
        match event {
            CallEvent::Forwarded { call_id, destination } => self.forwarded(&call_id, destination),
            CallEvent::Ended { call_id } => self.ended(&call_id),
        }
    }

    /// A branch went to `destination`: the call moves to that destination's trunk.
    fn forwarded(&mut self, call_id: &str, destination: Destination) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let Some((_, trunk)) = call.destinations.iter().find(|(d, _)| *d == destination) else { return };
        if *trunk == call.trunk {
            return;
        }
        let (old, new) = (std::mem::replace(&mut call.trunk, trunk.clone()), trunk.clone());
        release(&mut self.active, &old);
        *self.active.entry(new).or_default() += 1;
    }

    fn ended(&mut self, call_id: &str) {
        if let Some(call) = self.calls.remove(call_id) {
            release(&mut self.active, &call.trunk);
        }
    }
}

fn release(active: &mut HashMap<String, usize>, trunk: &str) {
    if let Some(count) = active.get_mut(trunk) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            active.remove(trunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(port: u16) -> Destination {
        Destination::Datagram {
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn a_call_counts_from_routing_to_its_end_and_follows_failover() {
        let mut calls = TrunkCalls::default();
        calls.routed("c1", vec![(udp(1), "a".into()), (udp(2), "b".into())]);
        assert_eq!((calls.active("a"), calls.active("b")), (1, 0));
        calls.on_event(CallEvent::Forwarded { call_id: "c1".into(), destination: udp(1) });
        assert_eq!((calls.active("a"), calls.active("b")), (1, 0));
        calls.on_event(CallEvent::Forwarded { call_id: "c1".into(), destination: udp(2) });
        assert_eq!((calls.active("a"), calls.active("b")), (0, 1));
        calls.on_event(CallEvent::Ended { call_id: "c1".into() });
        calls.on_event(CallEvent::Ended { call_id: "c1".into() });
        assert_eq!((calls.active("a"), calls.active("b")), (0, 0), "a repeated end counts once");
        calls.on_event(CallEvent::Forwarded { call_id: "other".into(), destination: udp(2) });
        assert_eq!(calls.active("b"), 0, "calls not routed to trunks are not counted");
    }
}

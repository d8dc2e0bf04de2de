//! The location service behind a trait: bindings per address-of-record. The default,
//! [`MemoryStore`], lives in the engine and is snapshotted to a file by the driver so that
//! bindings of UDP and TCP devices survive a restart; a shared store (Redis) for several
//! nodes implements the same trait later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::transport::{FlowId, TransportKind};

/// One registered contact of an address-of-record (RFC 3261 §10.3, RFC 5626 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `user@host`, host lower-cased.
    pub aor: String,
    /// The Contact element exactly as the client sent it; the 200 echoes it.
    pub contact: String,
    /// The contact URI: where requests for the AOR go (through `flow` when it has one).
    pub uri: String,
    /// `q` in thousandths (RFC 3261 §20.10); `None` when the client gave none.
    pub q: Option<u16>,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// The connection it came over; requests for a WebSocket binding go only there.
    pub flow: Option<FlowId>,
    pub transport: TransportKind,
    /// Packet source of the REGISTER (RFC 3581 `received`/`rport`).
    pub received: SocketAddr,
    /// Our socket that received it.
    pub local: SocketAddr,
    /// `+sip.instance` (RFC 5626 §4.1), without the quotes.
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    /// Path header values (RFC 3327), in order.
    pub path: Vec<String>,
}

impl Binding {
    /// Dies with its flow: browsers (WS/WSS) are reachable only over the connection they
    /// opened, and RFC 5626 outbound bindings name their flow.
    pub fn is_flow_bound(&self) -> bool {
        matches!(self.transport, TransportKind::Ws | TransportKind::Wss) || self.reg_id.is_some()
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

/// The location service as the registrar and proxy need it.
pub trait LocationStore: std::fmt::Debug + Send {
    /// Bindings of an AOR that have not expired.
    fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding>;
    /// Replaces every binding of an AOR (the registrar computes the new set as a whole).
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>);
    /// Removes what must die with a flow; returns how many bindings went. Bindings that
    /// merely used the flow (plain TCP phones) forget it and stay.
    fn flow_closed(&mut self, flow: FlowId) -> usize;
    /// Drops expired bindings; returns how many.
    fn sweep(&mut self, now: Instant) -> usize;
    /// The earliest expiry, for the engine's timer.
    fn next_expiry(&self) -> Option<Instant>;
    /// Every binding, for persistence and metrics.
    fn all(&self) -> Vec<Binding>;
    /// What the state file holds (see [`StoredBinding::from_binding`]). A store that can
    /// lend its bindings should, rather than copy each twice through [`Self::all`].
    fn stored(&self, now: Instant, now_unix: Duration) -> Vec<StoredBinding> {
        self.all().iter().filter_map(|b| StoredBinding::from_binding(b, now, now_unix)).collect()
    }
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The embedded store: a map from AOR to its bindings.
#[derive(Debug, Default)]
pub struct MemoryStore {
    by_aor: HashMap<String, Vec<Binding>>,
    count: usize,
    /// Binding expiries, earliest first, by AOR. Entries go stale when a binding is
    /// refreshed or removed; a sweep only visits the AORs whose entries came due, so
    /// neither the timer nor the sweep scans every binding.
    expiries: std::collections::BTreeMap<(Instant, u64), String>,
    seq: u64,
}

impl LocationStore for MemoryStore {
    fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.by_aor.get(aor).map(|b| b.iter().filter(|b| b.expires_at > now).cloned().collect()).unwrap_or_default()
    }

    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) {
        for b in &bindings {
            self.seq += 1;
            self.expiries.insert((b.expires_at, self.seq), aor.to_string());
        }
        let old = if bindings.is_empty() {
            self.by_aor.remove(aor).map_or(0, |b| b.len())
        } else {
            let new = bindings.len();
            // A refresh finds its AOR in place: no new key for it.
            let old = match self.by_aor.get_mut(aor) {
                Some(slot) => std::mem::replace(slot, bindings).len(),
                None => {
                    self.by_aor.insert(aor.to_string(), bindings);
                    0
                }
            };
            self.count += new;
            old
        };
        self.count -= old;
    }

    fn flow_closed(&mut self, flow: FlowId) -> usize {
        let mut removed = 0;
        self.by_aor.retain(|_, bindings| {
            bindings.retain_mut(|b| {
                if b.flow != Some(flow) {
                    return true;
                }
                if b.is_flow_bound() {
                    removed += 1;
                    return false;
                }
                b.flow = None;
                true
            });
            !bindings.is_empty()
        });
        self.count -= removed;
        removed
    }

    fn sweep(&mut self, now: Instant) -> usize {
        let mut due = Vec::new();
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        let mut removed = 0;
        for aor in due {
            let Some(bindings) = self.by_aor.get_mut(&aor) else { continue };
            let before = bindings.len();
            bindings.retain(|b| b.expires_at > now);
            removed += before - bindings.len();
            if bindings.is_empty() {
                self.by_aor.remove(&aor);
            }
        }
        self.count -= removed;
        removed
    }

    /// When a sweep is next worth doing (possibly early, never late).
    fn next_expiry(&self) -> Option<Instant> {
        self.expiries.keys().next().map(|(at, _)| *at)
    }

    fn all(&self) -> Vec<Binding> {
        self.by_aor.values().flatten().cloned().collect()
    }

    fn stored(&self, now: Instant, now_unix: Duration) -> Vec<StoredBinding> {
        self.by_aor.values().flatten().filter_map(|b| StoredBinding::from_binding(b, now, now_unix)).collect()
    }

    fn len(&self) -> usize {
        self.count
    }
}

/// A binding as written to the state file: wall-clock expiry, no flow (flows do not
/// survive a restart, and flow-bound bindings are not written at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBinding {
    pub aor: String,
    pub contact: String,
    pub uri: String,
    pub q: Option<u16>,
    /// Unix seconds.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    pub transport: String,
    #[serde(serialize_with = "address")]
    pub received: SocketAddr,
    #[serde(serialize_with = "address")]
    pub local: SocketAddr,
    pub instance: Option<String>,
    pub path: Vec<String>,
}

/// A socket address as its `Display` (and serde's own `Serialize`) writes it, without the
/// formatting machinery for IPv4: the state file holds two per binding and is written
/// every second while bindings change.
fn address<S: serde::Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
    let SocketAddr::V4(v4) = addr else { return addr.serialize(serializer) };
    let mut text = Vec::with_capacity(21);
    crate::message::via::push_ip(&mut text, std::net::IpAddr::V4(*v4.ip()));
    text.push(b':');
    crate::message::via::push_decimal(&mut text, v4.port().into());
    // Digits, dots and a colon.
    serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
}

/// The state file's shape; versioned so a later format can read an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub bindings: Vec<StoredBinding>,
}

impl StoredBinding {
    /// `None` for bindings that cannot outlive the process (flow-bound ones).
    pub fn from_binding(b: &Binding, now: Instant, now_unix: Duration) -> Option<Self> {
        if b.is_flow_bound() {
            return None;
        }
        Some(Self {
            aor: b.aor.clone(),
            contact: b.contact.clone(),
            uri: b.uri.clone(),
            q: b.q,
            expires_at: (now_unix + b.remaining(now)).as_secs(),
            call_id: b.call_id.clone(),
            cseq: b.cseq,
            transport: b.transport.via_token().to_string(),
            received: b.received,
            local: b.local,
            instance: b.instance.clone(),
            path: b.path.clone(),
        })
    }

    /// `None` when already expired or naming a transport that cannot be restored.
    pub fn into_binding(self, now: Instant, now_unix: Duration) -> Option<Binding> {
        let left = Duration::from_secs(self.expires_at).checked_sub(now_unix).filter(|d| !d.is_zero())?;
        let transport = match self.transport.as_str() {
            "UDP" => TransportKind::Udp,
            "TCP" => TransportKind::Tcp,
            "TLS" => TransportKind::Tls,
            _ => return None,
        };
        Some(Binding {
            aor: self.aor,
            contact: self.contact,
            uri: self.uri,
            q: self.q,
            expires_at: now + left,
            call_id: self.call_id,
            cseq: self.cseq,
            flow: None,
            transport,
            received: self.received,
            local: self.local,
            instance: self.instance,
            reg_id: None,
            path: self.path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn binding(
        aor: &str,
        uri: &str,
        transport: TransportKind,
        flow: Option<u64>,
        until: Instant,
    ) -> Binding {
        Binding {
            aor: aor.into(),
            contact: format!("<{uri}>"),
            uri: uri.into(),
            q: None,
            expires_at: until,
            call_id: "c".into(),
            cseq: 1,
            flow: flow.map(FlowId),
            transport,
            received: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            instance: None,
            reg_id: None,
            path: vec![],
        }
    }

    #[test]
    fn closing_a_flow_removes_browser_bindings_and_unpins_tcp_ones() {
        let now = crate::clock::now();
        let later = now + Duration::from_secs(600);
        let mut store = MemoryStore::default();
        store.replace(
            "alice@h",
            vec![binding("alice@h", "sip:a@x.invalid;transport=ws", TransportKind::Ws, Some(1), later)],
        );
        store.replace(
            "phone@h",
            vec![binding("phone@h", "sip:p@192.0.2.9;transport=tcp", TransportKind::Tcp, Some(1), later)],
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.flow_closed(FlowId(1)), 1);
        assert!(store.lookup("alice@h", now).is_empty());
        let phone = store.lookup("phone@h", now);
        assert_eq!(phone.len(), 1);
        assert_eq!(phone[0].flow, None);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn sweep_drops_only_expired_and_lookup_hides_them() {
        let now = crate::clock::now();
        let mut store = MemoryStore::default();
        store.replace(
            "a@h",
            vec![
                binding("a@h", "sip:1@h", TransportKind::Udp, None, now + Duration::from_secs(10)),
                binding("a@h", "sip:2@h", TransportKind::Udp, None, now + Duration::from_secs(20)),
            ],
        );
        let t = now + Duration::from_secs(15);
        assert_eq!(store.lookup("a@h", t).len(), 1);
        assert_eq!(store.next_expiry(), Some(now + Duration::from_secs(10)));
        assert_eq!(store.sweep(t), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.sweep(now + Duration::from_secs(30)), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn only_unbound_bindings_are_stored_and_they_come_back_with_remaining_time() {
        let now = crate::clock::now();
        let unix = Duration::from_secs(1_800_000_000);
        let udp = binding("a@h", "sip:1@h", TransportKind::Udp, None, now + Duration::from_secs(100));
        let ws = binding("a@h", "sip:2@x.invalid", TransportKind::Ws, Some(3), now + Duration::from_secs(100));
        assert!(StoredBinding::from_binding(&ws, now, unix).is_none());
        let stored = StoredBinding::from_binding(&udp, now, unix).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains(r#""received":"192.0.2.1:5060","local":"127.0.0.1:5060""#), "{json}");
        let back: StoredBinding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
        // Restarted 40 s later on a new monotonic clock.
        let now2 = now + Duration::from_secs(1);
        let restored = back.clone().into_binding(now2, unix + Duration::from_secs(40)).unwrap();
        assert_eq!(restored.remaining(now2), Duration::from_secs(60));
        assert!(back.into_binding(now2, unix + Duration::from_secs(100)).is_none());
    }
}

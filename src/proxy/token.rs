//! Our Record-Route entries (RFC 3261 §16.6 step 4, RFC 5658 double record-routing) and
//! the flow tokens in them (RFC 5626 §5.3): the user part of the entry facing a peer
//! names the flow that peer is on, signed so that nobody can route through us to a flow
//! that is not theirs.

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Hex64;
use crate::message::{Host, NameAddr, Uri};
use crate::transport::{FlowId, TransportKind};

/// User-part prefix of every URI we put in Record-Route.
const PREFIX: &str = "wt";
/// Bytes of the HMAC kept in a token: enough that guessing one is hopeless.
const MAC_LEN: usize = 8;

/// Flow MACs remembered: one per open connection in practice; past this many the memory
/// starts over rather than grow.
const MAC_CACHE: usize = 65_536;

pub(crate) struct TokenKey {
    /// HMAC-SHA256 already keyed: cloning it skips hashing the key pads again.
    keyed: Hmac<Sha256>,
    /// The MAC of each flow id seen lately. A token is checked on every in-dialog request
    /// and written on every dialog-creating one; the flows are few and long-lived.
    macs: std::cell::RefCell<std::collections::HashMap<u64, [u8; MAC_LEN]>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("cached_macs", &self.macs.borrow().len()).finish_non_exhaustive()
    }
}

/// One of our Record-Route entries, read back from a Route header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnRoute {
    /// The flow of the peer this entry faces, when it is on a connection.
    pub(crate) flow: Option<FlowId>,
    pub(crate) kind: TransportKind,
}

impl TokenKey {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        // HMAC takes keys of any length; a 32-byte key cannot be refused.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap_or_else(|_| unreachable_key());
        Self { keyed, macs: std::cell::RefCell::default() }
    }

    /// `<sip:wtTOKEN@ip:port;transport=..;lr>` for the interface at `local`, facing a peer
    /// on `flow` (if it is on a connection).
    pub(crate) fn record_route(&self, local: SocketAddr, kind: TransportKind, flow: Option<FlowId>) -> String {
        // Pushed into one buffer: `format!` made every dialog-creating request pay for
        // four allocations and the formatting machinery here, twice.
        let mut entry = String::with_capacity(80);
        entry.push_str("<sip:");
        entry.push_str(PREFIX);
        if let Some(f) = flow {
            entry.push_str(&Hex64::new(f.0));
            entry.push_str(&Hex64::new(u64::from_be_bytes(self.mac(f.0))));
        }
        entry.push('@');
        entry.push_str(&host_port(local));
        entry.push_str(";transport=");
        entry.push_str(kind.transport_param());
        entry.push_str(";lr>");
        entry
    }

    /// Reads a Route element: `Some` when it is one of ours (our address, our prefix,
    /// a valid signature).
    pub(crate) fn own_route(&self, element: &[u8], listen: &[(TransportKind, SocketAddr)]) -> Option<OwnRoute> {
        let addr = NameAddr::parse(element).ok()?;
        let Ok(Uri::Sip(uri)) = addr.parse_uri() else { return None };
        let user = uri.user.as_deref()?.strip_prefix(PREFIX)?;
        let ip = match uri.host {
            Host::Ip(ip) => ip,
            Host::Name(_) => return None,
        };
        let kind = match uri.param("transport").flatten().map(str::to_ascii_lowercase).as_deref() {
            Some("tcp") => TransportKind::Tcp,
            Some("tls") => TransportKind::Tls,
            Some("ws") => TransportKind::Ws,
            Some("wss") => TransportKind::Wss,
            _ => TransportKind::Udp,
        };
        let port = uri.port.unwrap_or(5060);
        if !listen.iter().any(|(_, a)| a.port() == port && (a.ip() == ip || a.ip().is_unspecified())) {
            return None;
        }
        if user.is_empty() {
            return Some(OwnRoute { flow: None, kind });
        }
        if user.len() != 16 + 2 * MAC_LEN {
            return None;
        }
        let id = u64::from_str_radix(&user[..16], 16).ok()?;
        let mut mac = [0u8; MAC_LEN];
        hex::decode_to_slice(&user[16..], &mut mac).ok()?;
        // Compared without an early exit on the first differing byte.
        let expected = self.mac(id);
        let differ = expected.iter().zip(&mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (differ == 0).then_some(OwnRoute { flow: Some(FlowId(id)), kind })
    }

    /// A client nonce for our digest answers to trunks (RFC 7616 §3.4): unpredictable
    /// to the trunk, unique per `id`.
    pub(crate) fn cnonce(&self, id: u64) -> String {
        let mut mac = self.hmac(id);
        mac.update(b"cnonce");
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    fn hmac(&self, id: u64) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(&id.to_be_bytes());
        mac
    }

    fn mac(&self, id: u64) -> [u8; MAC_LEN] {
        if let Some(mac) = self.macs.borrow().get(&id) {
            return *mac;
        }
        let full = self.hmac(id).finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        let mut macs = self.macs.borrow_mut();
        if macs.len() >= MAC_CACHE {
            macs.clear();
        }
        macs.insert(id, out);
        out
    }
}

#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    // new_from_slice accepts every key length for HMAC; this only satisfies the type.
    <Hmac<Sha256> as KeyInit>::new(&Default::default())
}

/// `host:port` with IPv6 in brackets, as a SIP URI and Via want it.
pub(crate) fn host_port(addr: SocketAddr) -> String {
    match addr {
        // Written by hand: std's Display for addresses goes through the formatting
        // machinery with padding support, about 1,700 instructions each, and the proxy
        // writes five of these per call.
        SocketAddr::V4(a) => {
            let mut out = String::with_capacity(21);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(a.port()));
            out
        }
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> Vec<(TransportKind, SocketAddr)> {
        vec![
            (TransportKind::Udp, "127.0.0.1:5060".parse().unwrap()),
            (TransportKind::Ws, "127.0.0.1:8080".parse().unwrap()),
        ]
    }

    #[test]
    fn host_port_writes_what_display_writes_with_v6_in_brackets() {
        for text in ["127.0.0.1:5060", "0.0.0.0:0", "255.255.255.255:65535", "10.20.3.4:80"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(host_port(addr), text);
        }
        assert_eq!(host_port("[::1]:5061".parse().unwrap()), "[::1]:5061");
    }

    #[test]
    fn own_entries_round_trip_and_forgeries_do_not() {
        let key = TokenKey::new([7; 32]);
        let rr = key.record_route("127.0.0.1:8080".parse().unwrap(), TransportKind::Ws, Some(FlowId(42)));
        assert!(rr.starts_with("<sip:wt000000000000002a"), "{rr}");
        assert_eq!(
            key.own_route(rr.as_bytes(), &listen()),
            Some(OwnRoute { flow: Some(FlowId(42)), kind: TransportKind::Ws })
        );
        let udp = key.record_route("127.0.0.1:5060".parse().unwrap(), TransportKind::Udp, None);
        assert_eq!(udp, "<sip:wt@127.0.0.1:5060;transport=udp;lr>");
        let mac = hex::encode(key.mac(42));
        assert_eq!(rr, format!("<sip:wt000000000000002a{mac}@127.0.0.1:8080;transport=ws;lr>"));
        assert_eq!(key.own_route(udp.as_bytes(), &listen()), Some(OwnRoute { flow: None, kind: TransportKind::Udp }));
        // Another flow id with the same signature, or a signature from another key, is not ours.
        let forged = rr.replace("wt000000000000002a", "wt000000000000002b");
        assert_eq!(key.own_route(forged.as_bytes(), &listen()), None);
        assert_eq!(TokenKey::new([8; 32]).own_route(rr.as_bytes(), &listen()), None);
        // Someone else's address is not ours whatever the user part says.
        let elsewhere = rr.replace("127.0.0.1:8080", "192.0.2.1:8080");
        assert_eq!(key.own_route(elsewhere.as_bytes(), &listen()), None);
    }
}

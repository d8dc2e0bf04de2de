//! L3: the registrar of RFC 3261 §10.3, with RFC 5626 outbound (bindings keep their flow
//! and `+sip.instance`/`reg-id`; a new flow for the same instance replaces the old one)
//! and RFC 3327 Path. Synchronous and clock-free: it takes `now` and an authenticated
//! user, and returns what the 200 must carry or the error to answer with.
//!
//! It does not authenticate (that is `auth`), send anything, or touch files: the engine
//! answers, and the driver persists the [`store::Snapshot`] the engine hands it.

pub mod store;

use std::time::{Duration, Instant};

use crate::message::{HeaderName, Host, Message, NameAddr, Param, Uri};
use crate::transport::{FlowId, Source};

pub use store::{Binding, LocationStore, MemoryStore, Snapshot, StoredBinding};

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Domains whose AORs we keep.
    pub domains: Vec<String>,
    /// Used when neither the Contact nor the request says (RFC 3261 §10.2.1.1: 3600).
    pub default_expires: u32,
    /// Shorter non-zero requests get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer requests are granted this.
    pub max_expires: u32,
    /// Bindings per AOR; a REGISTER that would exceed it is refused.
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".into()],
            default_expires: 3600,
            min_expires: 60,
            max_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// Why a REGISTER is refused; [`Self::status`] is the one place these become SIP codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("Domain Not Served Here")]
    DomainNotServed,
    #[error("Address-of-Record Not Found")]
    NotFound,
    #[error("Not Allowed To Register This Address")]
    NotOwner,
    #[error("{0}")]
    Malformed(&'static str),
    #[error("Interval Too Brief")]
    IntervalTooBrief { min: u32 },
    #[error("Out Of Order CSeq")]
    OutOfOrder,
    #[error("Too Many Contacts")]
    TooManyContacts { max: usize },
}

impl RegisterError {
    pub fn status(&self) -> u16 {
        match self {
            Self::DomainNotServed | Self::NotOwner | Self::TooManyContacts { .. } => 403,
            Self::NotFound => 404,
            Self::Malformed(_) | Self::OutOfOrder => 400,
            Self::IntervalTooBrief { .. } => 423,
        }
    }
}

/// What the 200 carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub aor: String,
    /// Contact header values: every current binding, as its client sent it, with
    /// `expires` set to the time it has left (§10.3 step 8).
    pub contacts: Vec<String>,
    /// RFC 5626 §6: the client asked for outbound and registered a flow.
    pub require_outbound: bool,
    /// Path values to echo (RFC 3327 §5.3).
    pub path: Vec<String>,
    /// Flows this REGISTER replaced (old, new): the same instance and reg-id on a new
    /// connection (RFC 5626 §6). Calls on the old flow should follow.
    pub replaced_flows: Vec<(FlowId, FlowId)>,
}

#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    store: Box<dyn LocationStore>,
}

/// One Contact of a REGISTER, read: borrowed from the request, so that checking the
/// Contacts before authentication copies nothing.
#[derive(Debug)]
struct ContactRequest<'a> {
    /// The element as the client wrote it.
    raw: &'a [u8],
    uri: &'a str,
    parsed: Uri,
    expires: Option<u32>,
    q: Option<u16>,
    instance: Option<String>,
    reg_id: Option<u32>,
}

impl Registrar {
    pub fn new(config: RegistrarConfig, store: Box<dyn LocationStore>) -> Self {
        Self { config, store }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// What can be refused before authenticating (§10.3 step 1, and §8.2 syntax): a
    /// Request-URI for a domain we do not serve, or a Contact that cannot be read.
    pub fn precheck(&self, request: &Message) -> Result<(), RegisterError> {
        self.served_request_uri(request)?;
        for element in request.list(HeaderName::Contact) {
            if element.as_ref() != b"*" {
                read_contact(&element)?;
            }
        }
        Ok(())
    }

    /// RFC 3261 §10.3 steps 1 and 3 to 8 for a REGISTER whose sender authenticated as
    /// `user` (step 2 happened before). All or nothing: on error no binding changes.
    pub fn register(
        &mut self,
        now: Instant,
        request: &Message,
        source: &Source,
        user: &str,
    ) -> Result<Registered, RegisterError> {
        let aor = self.address_of_record(request)?;
        if aor.split('@').next() != Some(user) {
            return Err(RegisterError::NotOwner);
        }
        let (call_id, cseq) = match (request.call_id(), request.cseq()) {
            (Some(c), Some((n, _))) => (String::from_utf8_lossy(&c).into_owned(), n),
            _ => return Err(RegisterError::Malformed("Missing Call-ID or CSeq")),
        };
        let header_expires = match request.first_value(HeaderName::Expires) {
            None => None,
            Some(v) => Some(decimal_u32(&v).ok_or(RegisterError::Malformed("Malformed Expires Header"))?),
        };
        let supported: Vec<String> = request
            .list(HeaderName::Supported)
            .iter()
            .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
            .collect();
        let outbound = supported.iter().any(|t| t == "outbound");
        let path: Vec<String> =
            request.list(HeaderName::Path).iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();

        let elements = request.list(HeaderName::Contact);
        let mut current = self.store.lookup(&aor, now);
        if elements.iter().any(|e| e.as_ref() == b"*") {
            // §10.3 step 6: `*` only alone and only with Expires: 0.
            if elements.len() != 1 || header_expires != Some(0) {
                return Err(RegisterError::Malformed("Wildcard Contact Needs Expires 0 And No Other Contact"));
            }
            for b in &current {
                if b.call_id == call_id && cseq <= b.cseq {
                    return Err(RegisterError::OutOfOrder);
                }
            }
            self.store.replace(&aor, Vec::new());
            return Ok(Registered {
                aor,
                contacts: Vec::new(),
                require_outbound: false,
                path,
                replaced_flows: Vec::new(),
            });
        }

        let contacts = elements.iter().map(|e| read_contact(e)).collect::<Result<Vec<_>, _>>()?;
        let mut require_outbound = false;
        let mut replaced_flows = Vec::new();
        for contact in contacts {
            let expires = contact.expires.or(header_expires).unwrap_or(self.config.default_expires);
            if expires != 0 && expires < self.config.min_expires {
                return Err(RegisterError::IntervalTooBrief { min: self.config.min_expires });
            }
            let expires = expires.min(self.config.max_expires);
            let reg_id = contact.reg_id.filter(|_| outbound && contact.instance.is_some());
            require_outbound |= reg_id.is_some() && expires != 0;
            // RFC 5626 §6: an instance and reg-id name one flow, whatever the URI; else the URI.
            let key = std::cell::OnceCell::new();
            let existing = current.iter().position(|b| match (reg_id, &contact.instance) {
                (Some(id), Some(instance)) => b.reg_id == Some(id) && b.instance.as_deref() == Some(instance.as_str()),
                // The same text is the same URI; §19.1.4 equality only for the rest.
                _ => b.uri == contact.uri || uri_key(&b.uri) == *key.get_or_init(|| key_of(&contact.parsed)),
            });
            if let Some(i) = existing {
                let b = &current[i];
                if b.call_id == call_id && cseq <= b.cseq {
                    return Err(RegisterError::OutOfOrder);
                }
                if let (Some(old), Some(new), Some(_)) = (b.flow, source.flow, reg_id)
                    && old != new
                {
                    replaced_flows.push((old, new));
                }
                current.remove(i);
            }
            if expires == 0 {
                continue;
            }
            current.push(Binding {
                aor: aor.clone(),
                contact: String::from_utf8_lossy(contact.raw).into_owned(),
                uri: contact.uri.to_owned(),
                q: contact.q,
                expires_at: now + Duration::from_secs(u64::from(expires)),
                call_id: call_id.clone(),
                cseq,
                flow: source.flow,
                transport: source.kind,
                received: source.remote,
                local: source.local,
                instance: contact.instance,
                reg_id,
                path: path.clone(),
            });
        }
        if current.len() > self.config.max_contacts {
            return Err(RegisterError::TooManyContacts { max: self.config.max_contacts });
        }
        let contacts = current.iter().map(|b| with_expires(&b.contact, b.remaining(now).as_secs())).collect();
        self.store.replace(&aor, current);
        Ok(Registered { aor, contacts, require_outbound, path, replaced_flows })
    }

    /// Live bindings of an AOR (`user@domain`), best q first.
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        let mut targets = self.store.lookup(aor, now);
        targets.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        targets
    }

    pub fn flow_closed(&mut self, flow: FlowId) -> usize {
        self.store.flow_closed(flow)
    }

    pub fn sweep(&mut self, now: Instant) -> usize {
        self.store.sweep(now)
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.store.next_expiry()
    }

    pub fn bindings(&self) -> usize {
        self.store.len()
    }

    /// What outlives the process: bindings not tied to a flow.
    pub fn snapshot(&self, now: Instant, now_unix: Duration) -> Snapshot {
        Snapshot { version: 1, bindings: self.store.stored(now, now_unix) }
    }

    /// Loads a snapshot written by an earlier run; returns how many bindings came back.
    pub fn restore(&mut self, snapshot: Snapshot, now: Instant, now_unix: Duration) -> usize {
        let mut by_aor: std::collections::HashMap<String, Vec<Binding>> = std::collections::HashMap::new();
        for stored in snapshot.bindings {
            if let Some(b) = stored.into_binding(now, now_unix) {
                by_aor.entry(b.aor.clone()).or_default().push(b);
            }
        }
        let mut restored = 0;
        for (aor, mut bindings) in by_aor {
            bindings.truncate(self.config.max_contacts);
            restored += bindings.len();
            self.store.replace(&aor, bindings);
        }
        restored
    }

    /// §10.3 steps 1 and 3: the Request-URI names a domain we serve (or one of our
    /// addresses) and To names an AOR in one of our domains.
    fn address_of_record(&self, request: &Message) -> Result<String, RegisterError> {
        self.served_request_uri(request)?;
        let Some(Ok(Uri::Sip(uri))) = request.to_uri() else { return Err(RegisterError::NotFound) };
        match (&uri.user, self.serves(&uri.host)) {
            (Some(user), true) => Ok(format!("{user}@{}", uri.host)),
            _ => Err(RegisterError::NotFound),
        }
    }

    /// The Request-URI is one of our domains (or an address of ours) without a user part.
    fn served_request_uri(&self, request: &Message) -> Result<(), RegisterError> {
        let Some(Ok(Uri::Sip(ruri))) = request.parsed_request_uri() else {
            return Err(RegisterError::DomainNotServed);
        };
        if ruri.user.is_some() || !(self.serves(&ruri.host) || matches!(ruri.host, Host::Ip(_))) {
            return Err(RegisterError::DomainNotServed);
        }
        Ok(())
    }

    fn serves(&self, host: &Host) -> bool {
        match host {
            Host::Name(n) => self.config.domains.iter().any(|d| d.eq_ignore_ascii_case(n)),
            Host::Ip(_) => false,
        }
    }
}

fn read_contact(element: &[u8]) -> Result<ContactRequest<'_>, RegisterError> {
    const BAD: RegisterError = RegisterError::Malformed("Malformed Contact Header");
    let addr = NameAddr::parse(element).map_err(|_| BAD)?;
    let uri = std::str::from_utf8(addr.uri).map_err(|_| BAD)?;
    let parsed = Uri::parse(addr.uri).map_err(|_| BAD)?;
    // §20.10: a URI with headers must be in `<...>` (RFC 4475 §3.1.2.13).
    if !addr.bracketed && parsed.as_sip().is_some_and(|u| u.headers.is_some()) {
        return Err(RegisterError::Malformed("Contact URI With Headers Must Be In Angle Brackets"));
    }
    let mut contact =
        ContactRequest { raw: element, uri, parsed, expires: None, q: None, instance: None, reg_id: None };
    for Param { name, value } in addr.params() {
        let value = value.map(crate::message::unquote);
        if name.eq_ignore_ascii_case(b"expires") {
            // §10.2.1.1: an unreadable expires is ignored in favour of the default... but a
            // negative or overflowing one is a client bug worth a clear answer.
            contact.expires = Some(value.as_deref().and_then(decimal_u32).ok_or(BAD)?);
        } else if name.eq_ignore_ascii_case(b"q") {
            contact.q = Some(value.as_deref().and_then(q_value).ok_or(BAD)?);
        } else if name.eq_ignore_ascii_case(b"+sip.instance") {
            contact.instance = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        } else if name.eq_ignore_ascii_case(b"reg-id") {
            contact.reg_id = Some(value.as_deref().and_then(decimal_u32).ok_or(BAD)?);
        }
    }
    Ok(contact)
}

fn decimal_u32(v: &[u8]) -> Option<u32> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Expiry values beyond u32 are clamped by max_expires anyway.
    Some(std::str::from_utf8(v).ok()?.parse::<u64>().ok()?.min(u64::from(u32::MAX)) as u32)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in thousandths.
fn q_value(v: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(v.trim_ascii()).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A comparison key for contact URIs, close to RFC 3261 §19.1.4: scheme, user
/// (case-sensitive), host and port, and the parameters that change where a request goes.
fn key_of(uri: &Uri) -> String {
    match uri {
        Uri::Sip(u) => {
            // `name=value`, lower-cased, of the parameters that matter, sorted.
            let mut params: Vec<(&[u8], &[u8])> = crate::message::uri_params(&u.params)
                .filter(|p| {
                    ["transport", "user", "method", "maddr", "ttl"]
                        .iter()
                        .any(|known| p.name.eq_ignore_ascii_case(known.as_bytes()))
                })
                .map(|p| (p.name, p.value.unwrap_or_default()))
                .collect();
            let lowered = |(name, value): &(&[u8], &[u8])| {
                name.iter().chain(b"=").chain(value.iter()).map(u8::to_ascii_lowercase).collect::<Vec<u8>>()
            };
            params.sort_by_cached_key(lowered);
            let mut key = String::with_capacity(u.params.len() + 64);
            key.push_str(if u.secure { "sips:" } else { "sip:" });
            key.push_str(u.user.as_deref().unwrap_or_default());
            key.push('@');
            match &u.host {
                Host::Name(name) => key.push_str(name),
                Host::Ip(ip) => {
                    let mut text = Vec::with_capacity(40);
                    crate::message::via::push_ip(&mut text, *ip);
                    let text = String::from_utf8_lossy(&text);
                    if ip.is_ipv6() {
                        key.push('[');
                        key.push_str(&text);
                        key.push(']');
                    } else {
                        key.push_str(&text);
                    }
                }
            }
            key.push(':');
            push_decimal(&mut key, u.port.unwrap_or(0).into());
            key.push('|');
            for (i, param) in params.iter().enumerate() {
                if i > 0 {
                    key.push(';');
                }
                // The parameters are slices of a String: lower-casing ASCII keeps them UTF-8.
                key.push_str(&String::from_utf8_lossy(&lowered(param)));
            }
            key
        }
        Uri::Other { scheme, rest } => format!("{scheme}:{rest}"),
    }
}

fn uri_key(uri: &str) -> String {
    Uri::parse(uri.as_bytes()).map(|u| key_of(&u)).unwrap_or_else(|_| uri.to_string())
}

/// The Contact element as the client wrote it, with `expires` set to `secs`: the value
/// replaced where it stood, or appended when there was none.
fn with_expires(contact: &str, secs: u64) -> String {
    let Ok(addr) = NameAddr::parse(contact.as_bytes()) else { return contact.to_string() };
    let head = &contact[..contact.len() - addr.params.len()];
    let mut out = String::with_capacity(contact.len() + 16);
    out.push_str(head);
    let mut replaced = false;
    for Param { name, value } in addr.params() {
        out.push(';');
        out.push_str(&String::from_utf8_lossy(name));
        if name.eq_ignore_ascii_case(b"expires") {
            out.push('=');
            push_decimal(&mut out, secs);
            replaced = true;
        } else if let Some(v) = value {
            out.push('=');
            out.push_str(&String::from_utf8_lossy(v));
        }
    }
    if !replaced {
        out.push_str(";expires=");
        push_decimal(&mut out, secs);
    }
    out
}

fn push_decimal(out: &mut String, n: u64) {
    let mut digits = Vec::with_capacity(20);
    crate::message::via::push_decimal(&mut digits, n);
    out.extend(digits.into_iter().map(char::from));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportKind;
    use bytes::Bytes;

    fn registrar() -> Registrar {
        Registrar::new(RegistrarConfig::default(), Box::<MemoryStore>::default())
    }

    fn ws(flow: u64) -> Source {
        Source {
            kind: TransportKind::Ws,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            flow: Some(FlowId(flow)),
        }
    }

    fn udp() -> Source {
        Source { kind: TransportKind::Udp, flow: None, ..ws(0) }
    }

    fn register(call_id: &str, cseq: u32, contacts: &[&str], extra: &str) -> Message {
        let contact_lines: String = contacts.iter().map(|c| format!("Contact: {c}\r\n")).collect();
        let text = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@localhost>;tag=f\r\nTo: <sip:alice@localhost>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n{contact_lines}{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &crate::message::Limits::default()).unwrap()
    }

    const JSSIP: &str = "<sip:u5ve0fk9@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;\
                         +sip.instance=\"<urn:uuid:0c6b2d4e-4fa1-4b57-a8b3-7d1d1d8f9a30>\";expires=600";

    /// How the comparison key was built before it avoided `format!`: the reference.
    fn key_of_reference(uri: &Uri) -> String {
        match uri {
            Uri::Sip(u) => {
                let mut params: Vec<String> = crate::message::uri_params(&u.params)
                    .filter(|p| {
                        matches!(
                            p.name.to_ascii_lowercase().as_slice(),
                            b"transport" | b"user" | b"method" | b"maddr" | b"ttl"
                        )
                    })
                    .map(|p| {
                        String::from_utf8_lossy(&[p.name, b"=", p.value.unwrap_or_default()].concat())
                            .to_ascii_lowercase()
                    })
                    .collect();
                params.sort();
                format!(
                    "{}:{}@{}:{}|{}",
                    if u.secure { "sips" } else { "sip" },
                    u.user.as_deref().unwrap_or_default(),
                    u.host,
                    u.port.unwrap_or(0),
                    params.join(";")
                )
            }
            Uri::Other { scheme, rest } => format!("{scheme}:{rest}"),
        }
    }

    #[test]
    fn contact_keys_are_what_they_were() {
        for uri in [
            "sip:alice@192.0.2.1:5060;transport=UDP",
            "sips:Alice@Example.COM;ob;User=Phone;TRANSPORT=tls;maddr=239.1.1.1;ttl=5;method=INVITE",
            "sip:[2001:db8::1]:5070;transport=tcp;lr",
            "sip:u5ve0fk9@df7jal23ls0d.invalid;transport=ws",
            "sip:bob@h;user=ip;transport=udp;user=phone",
            "sip:x@h;maddr",
            "tel:+15550100",
        ] {
            let parsed = Uri::parse(uri.as_bytes()).unwrap();
            assert_eq!(key_of(&parsed), key_of_reference(&parsed), "{uri}");
        }
    }

    #[test]
    fn jssip_register_is_stored_with_its_flow_and_echoed_byte_for_byte() {
        let mut r = registrar();
        let now = crate::clock::now();
        let ok = r
            .register(now, &register("c1", 1, &[JSSIP], "Supported: path, gruu, outbound\r\n"), &ws(7), "alice")
            .unwrap();
        assert_eq!(ok.aor, "alice@localhost");
        assert_eq!(ok.contacts, vec![JSSIP.to_string()]);
        assert!(ok.require_outbound);
        let b = &r.lookup("alice@localhost", now)[0];
        assert_eq!((b.flow, b.reg_id), (Some(FlowId(7)), Some(1)));
        assert_eq!(b.instance.as_deref(), Some("<urn:uuid:0c6b2d4e-4fa1-4b57-a8b3-7d1d1d8f9a30>"));
    }

    #[test]
    fn expiry_comes_from_contact_then_header_then_default_and_is_clamped() {
        let mut r = registrar();
        let now = crate::clock::now();
        let ok = r
            .register(now, &register("c", 1, &["<sip:a@192.0.2.1>;expires=120"], "Expires: 300\r\n"), &udp(), "alice")
            .unwrap();
        assert_eq!(ok.contacts, vec!["<sip:a@192.0.2.1>;expires=120"]);
        let ok =
            r.register(now, &register("c", 2, &["<sip:b@192.0.2.1>"], "Expires: 300\r\n"), &udp(), "alice").unwrap();
        assert!(ok.contacts.contains(&"<sip:b@192.0.2.1>;expires=300".to_string()), "{:?}", ok.contacts);
        let ok = r.register(now, &register("c", 3, &["<sip:c@192.0.2.1>"], ""), &udp(), "alice").unwrap();
        assert!(ok.contacts.contains(&"<sip:c@192.0.2.1>;expires=3600".to_string()));
        let ok = r.register(now, &register("c", 4, &["<sip:d@192.0.2.1>;expires=99999"], ""), &udp(), "alice").unwrap();
        assert!(ok.contacts.contains(&"<sip:d@192.0.2.1>;expires=3600".to_string()), "clamped to max");
        // The 200 lists every binding with the time it has left.
        let later = now + Duration::from_secs(20);
        let ok = r.register(later, &register("c", 5, &["<sip:e@192.0.2.1>"], ""), &udp(), "alice").unwrap();
        assert!(ok.contacts.contains(&"<sip:a@192.0.2.1>;expires=100".to_string()), "{:?}", ok.contacts);
        assert_eq!(ok.contacts.len(), 5);
    }

    #[test]
    fn too_brief_interval_gets_423_with_min_expires() {
        let mut r = registrar();
        let err = r
            .register(crate::clock::now(), &register("c", 1, &["<sip:a@h>;expires=30"], ""), &udp(), "alice")
            .unwrap_err();
        assert_eq!(err, RegisterError::IntervalTooBrief { min: 60 });
        assert_eq!(err.status(), 423);
    }

    #[test]
    fn zero_expiry_removes_and_wildcard_removes_all_but_only_with_expires_0() {
        let mut r = registrar();
        let now = crate::clock::now();
        r.register(now, &register("c", 1, &["<sip:a@h1>", "<sip:b@h2>"], ""), &udp(), "alice").unwrap();
        assert_eq!(r.lookup("alice@localhost", now).len(), 2);
        let ok = r.register(now, &register("c", 2, &["<sip:a@h1>;expires=0"], ""), &udp(), "alice").unwrap();
        assert_eq!(ok.contacts.len(), 1);
        let err = r.register(now, &register("c", 3, &["*"], ""), &udp(), "alice").unwrap_err();
        assert_eq!(err.status(), 400);
        let err =
            r.register(now, &register("c", 3, &["*", "<sip:b@h2>"], "Expires: 0\r\n"), &udp(), "alice").unwrap_err();
        assert_eq!(err.status(), 400);
        let ok = r.register(now, &register("c", 3, &["*"], "Expires: 0\r\n"), &udp(), "alice").unwrap();
        assert!(ok.contacts.is_empty());
        assert!(r.lookup("alice@localhost", now).is_empty());
    }

    #[test]
    fn same_call_id_needs_a_higher_cseq_and_failure_changes_nothing() {
        let mut r = registrar();
        let now = crate::clock::now();
        r.register(now, &register("c", 5, &["<sip:a@h>"], ""), &udp(), "alice").unwrap();
        let err = r.register(now, &register("c", 5, &["<sip:a@h>;expires=0"], ""), &udp(), "alice").unwrap_err();
        assert_eq!(err, RegisterError::OutOfOrder);
        let err = r.register(now, &register("c", 4, &["<sip:b@h>", "<sip:a@h>"], ""), &udp(), "alice").unwrap_err();
        assert_eq!(err, RegisterError::OutOfOrder);
        assert_eq!(r.lookup("alice@localhost", now).len(), 1, "aborted update left no trace");
        // Another Call-ID may update the binding whatever its CSeq (§10.3 step 7).
        r.register(now, &register("other", 1, &["<sip:a@h>;expires=0"], ""), &udp(), "alice").unwrap();
        assert!(r.lookup("alice@localhost", now).is_empty());
    }

    #[test]
    fn contacts_per_aor_are_capped() {
        let config = RegistrarConfig { max_contacts: 2, ..RegistrarConfig::default() };
        let mut r = Registrar::new(config, Box::<MemoryStore>::default());
        let now = crate::clock::now();
        r.register(now, &register("c", 1, &["<sip:a@h>", "<sip:b@h>"], ""), &udp(), "alice").unwrap();
        let err = r.register(now, &register("c", 2, &["<sip:c@h>"], ""), &udp(), "alice").unwrap_err();
        assert_eq!((err.status(), err.clone()), (403, RegisterError::TooManyContacts { max: 2 }));
        // Refreshing what is there stays within the cap.
        r.register(now, &register("c", 3, &["<sip:a@h>"], ""), &udp(), "alice").unwrap();
    }

    #[test]
    fn q_values_order_the_lookup() {
        let mut r = registrar();
        let now = crate::clock::now();
        r.register(
            now,
            &register("c", 1, &["<sip:low@h>;q=0.1", "<sip:high@h>;q=1.0", "<sip:mid@h>;q=0.5"], ""),
            &udp(),
            "alice",
        )
        .unwrap();
        let order: Vec<_> = r.lookup("alice@localhost", now).iter().map(|b| b.uri.clone()).collect();
        assert_eq!(order, vec!["sip:high@h", "sip:mid@h", "sip:low@h"]);
        let err = r.register(now, &register("c", 2, &["<sip:x@h>;q=1.5"], ""), &udp(), "alice").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn same_instance_and_reg_id_on_a_new_flow_replaces_the_old_flow() {
        let mut r = registrar();
        let now = crate::clock::now();
        let sup = "Supported: outbound\r\n";
        r.register(now, &register("c1", 1, &[JSSIP], sup), &ws(1), "alice").unwrap();
        // JsSIP reconnects: new WebSocket, new Call-ID, new random contact user, same instance.
        let moved = JSSIP.replace("u5ve0fk9@df7jal23ls0d", "zz9@newhost");
        let ok = r.register(now, &register("c2", 1, &[&moved], sup), &ws(2), "alice").unwrap();
        assert_eq!(ok.replaced_flows, vec![(FlowId(1), FlowId(2))], "calls on flow 1 should follow");
        let bindings = r.lookup("alice@localhost", now);
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].flow, Some(FlowId(2)));
        // The old flow closing does not take the new binding with it.
        assert_eq!(r.flow_closed(FlowId(1)), 0);
        assert_eq!(r.flow_closed(FlowId(2)), 1);
        assert!(r.lookup("alice@localhost", now).is_empty());
    }

    #[test]
    fn aor_must_be_ours_and_owned_by_the_user() {
        let mut r = registrar();
        let now = crate::clock::now();
        let foreign = register("c", 1, &["<sip:a@h>"], "").as_bytes().to_vec();
        let foreign = String::from_utf8(foreign)
            .unwrap()
            .replace("To: <sip:alice@localhost>", "To: <sip:alice@elsewhere.example>");
        let foreign = Message::parse(Bytes::from(foreign), &crate::message::Limits::default()).unwrap();
        assert_eq!(r.register(now, &foreign, &udp(), "alice").unwrap_err().status(), 404);
        let other_domain = String::from_utf8(register("c", 1, &["<sip:a@h>"], "").as_bytes().to_vec())
            .unwrap()
            .replace("REGISTER sip:localhost", "REGISTER sip:elsewhere.example");
        let other_domain = Message::parse(Bytes::from(other_domain), &crate::message::Limits::default()).unwrap();
        assert_eq!(r.register(now, &other_domain, &udp(), "alice").unwrap_err().status(), 403);
        assert_eq!(
            r.register(now, &register("c", 1, &["<sip:a@h>"], ""), &udp(), "mallory").unwrap_err().status(),
            403
        );
    }

    #[test]
    fn path_is_kept_and_echoed() {
        let mut r = registrar();
        let now = crate::clock::now();
        let ok = r
            .register(
                now,
                &register("c", 1, &["<sip:a@h>"], "Path: <sip:edge1.example;lr>, <sip:edge2.example;lr>\r\n"),
                &udp(),
                "alice",
            )
            .unwrap();
        assert_eq!(ok.path, vec!["<sip:edge1.example;lr>", "<sip:edge2.example;lr>"]);
        assert_eq!(r.lookup("alice@localhost", now)[0].path.len(), 2);
    }

    #[test]
    fn snapshot_round_trip_keeps_udp_and_drops_browser_bindings() {
        let mut r = registrar();
        let now = crate::clock::now();
        r.register(now, &register("c1", 1, &["<sip:desk@192.0.2.5:5060>"], ""), &udp(), "alice").unwrap();
        r.register(now, &register("c2", 1, &[JSSIP], "Supported: outbound\r\n"), &ws(3), "alice").unwrap();
        let unix = Duration::from_secs(1_800_000_000);
        let snap = r.snapshot(now, unix);
        assert_eq!(snap.bindings.len(), 1);
        let mut fresh = registrar();
        assert_eq!(fresh.restore(snap, now, unix + Duration::from_secs(10)), 1);
        let b = &fresh.lookup("alice@localhost", now)[0];
        assert_eq!(b.uri, "sip:desk@192.0.2.5:5060");
        assert_eq!(b.remaining(now), Duration::from_secs(3590));
    }

    #[test]
    fn expiry_is_measured_on_the_given_clock() {
        let mut r = registrar();
        let now = crate::clock::now();
        r.register(now, &register("c", 1, &["<sip:a@h>;expires=60"], ""), &udp(), "alice").unwrap();
        assert_eq!(r.next_expiry(), Some(now + Duration::from_secs(60)));
        assert_eq!(r.lookup("alice@localhost", now + Duration::from_secs(59)).len(), 1);
        assert!(r.lookup("alice@localhost", now + Duration::from_secs(60)).is_empty());
        assert_eq!(r.sweep(now + Duration::from_secs(61)), 1);
        assert_eq!(r.bindings(), 0);
    }
}

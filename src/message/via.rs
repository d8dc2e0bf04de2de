//! One Via element (RFC 3261 §20.42, `via-parm`) and the `received`/`rport` stamping of
//! RFC 3261 §18.2.1 and RFC 3581 §4.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::grammar::{self, Param};
use super::uri::{Host, UriError, parse_hostport};

/// The RFC 3261 magic cookie that starts every compliant branch (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`, borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// `transport` of `sent-protocol` as written (`UDP`, `WSS`, `SCTP`, unknown ones).
    pub transport: &'a [u8],
    /// Borrowed when the message parsed its top Via once and keeps it ([`ViaParts`]).
    host: Cow<'a, Host>,
    pub port: Option<u16>,
    raw: &'a [u8],
    /// Where `sent-by` ends in `raw`; the parameters follow.
    sent_by_end: usize,
    /// Found while the parameters were checked: every layer asks for these two.
    branch: Option<&'a [u8]>,
    rport: Option<Option<u16>>,
}

impl<'a> Via<'a> {
    /// Parses one element of a Via list. LWS is allowed around the slashes of
    /// `sent-protocol` and before `sent-by` (RFC 4475 §3.1.1.1).
    pub fn parse(raw: &'a [u8]) -> Result<Self, UriError> {
        let ViaParts { transport, host, port, sent_by_end, branch, rport } = ViaParts::parse(raw)?;
        Ok(Self {
            transport: &raw[transport],
            host: Cow::Owned(host),
            port,
            raw,
            sent_by_end,
            branch: branch.map(|b| &raw[b]),
            rport,
        })
    }

    /// The host of `sent-by`.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The element as received (stamped, for a message we stamped).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn params(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        grammar::params(&self.raw[self.sent_by_end..])
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }

    /// `rport` (RFC 3581): `Some(None)` when the client asks for it without a value.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport
    }

    pub fn received(&self) -> Option<IpAddr> {
        let v = self.params().find(|p| p.name.eq_ignore_ascii_case(b"received"))?.value?;
        std::str::from_utf8(v).ok()?.parse().ok()
    }

    /// Where a response to this Via goes for a datagram transport: the source address
    /// when `rport` was asked for (RFC 3581 §4), else `received` (or the source IP) and the
    /// `sent-by` port (RFC 3261 §18.2.2).
    pub fn response_address(&self, source: SocketAddr) -> SocketAddr {
        if self.rport().is_some() {
            return source;
        }
        SocketAddr::new(source.ip(), self.port.unwrap_or(5060))
    }

    /// The element with `received` and `rport` filled from the packet source: `received`
    /// when `sent-by` is not the source IP or `rport` was asked for, `rport=PORT` when the
    /// client asked for it. Other parameters keep their bytes and order.
    pub fn stamped(&self, source: SocketAddr) -> Vec<u8> {
        let wants_rport = self.rport().is_some();
        let needs_received = wants_rport || *self.host != Host::Ip(source.ip());
        let mut out = Vec::with_capacity(self.raw.len() + 40);
        out.extend_from_slice(&self.raw[..self.sent_by_end]);
        for p in self.params() {
            if p.name.eq_ignore_ascii_case(b"received") {
                continue;
            }
            out.push(b';');
            if p.name.eq_ignore_ascii_case(b"rport") {
                out.extend_from_slice(b"rport=");
                push_decimal(&mut out, source.port().into());
                continue;
            }
            out.extend_from_slice(p.name);
            if let Some(v) = p.value {
                out.push(b'=');
                out.extend_from_slice(v);
            }
        }
        if needs_received {
            out.extend_from_slice(b";received=");
            push_ip(&mut out, source.ip());
        }
        out
    }
}

/// What [`Via::parse`] finds in an element, as offsets instead of borrows: a message keeps
/// it beside its bytes, so its top Via is parsed once however many layers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ViaParts {
    transport: Range<usize>,
    host: Host,
    port: Option<u16>,
    sent_by_end: usize,
    /// The first `branch` parameter's value, when it has one.
    branch: Option<Range<usize>>,
    rport: Option<Option<u16>>,
}

impl ViaParts {
    pub(super) fn parse(raw: &[u8]) -> Result<Self, UriError> {
        // `rest` stays a suffix of `raw`, so offsets into `raw` follow from its length.
        let mut rest = raw;
        let mut parts = [0..0, 0..0, 0..0];
        // Nearly every Via starts `SIP/2.0/`: the loop below reads that prefix the same way.
        let first = if raw.len() > 8 && raw[..8].eq_ignore_ascii_case(b"SIP/2.0/") {
            parts[0] = 0..3;
            parts[1] = 4..7;
            rest = &raw[8..];
            2
        } else {
            0
        };
        for (n, part) in parts.iter_mut().enumerate().skip(first) {
            rest = trim_lws(rest);
            let end = rest.iter().position(|&c| !grammar::is_token_char(c)).unwrap_or(rest.len());
            let start = raw.len() - rest.len();
            *part = start..start + end;
            rest = trim_lws(&rest[end..]);
            if n < 2 {
                rest = rest.strip_prefix(b"/").ok_or(UriError::NameAddr)?;
            }
        }
        if parts.iter().any(Range::is_empty) || !raw[parts[0].clone()].eq_ignore_ascii_case(b"SIP") {
            return Err(UriError::NameAddr);
        }
        let sent_by_start = raw.len() - rest.len();
        let tail = &raw[sent_by_start..];
        let sent_by_len = tail.iter().position(|&c| c == b';' || c.is_ascii_whitespace()).unwrap_or(tail.len());
        let (host, port) = parse_hostport(&tail[..sent_by_len])?;
        if !grammar::params_well_formed(&tail[sent_by_len..]) {
            return Err(UriError::NameAddr);
        }
        let [_, _, transport] = parts;
        let parts = Self { transport, host, port, sent_by_end: sent_by_start + sent_by_len, branch: None, rport: None };
        Ok(parts.with_params_of(raw))
    }

    /// These parts for `raw`, which holds the same element up to the end of `sent-by`
    /// with its parameters perhaps rewritten (stamped): `branch` and `rport` read again.
    pub(super) fn with_params_of(mut self, raw: &[u8]) -> Self {
        let (mut branch, mut rport) = (None, None);
        // The first of each counts, as a search from the start would find it.
        for p in grammar::params(raw.get(self.sent_by_end..).unwrap_or_default()) {
            if branch.is_none() && p.name.eq_ignore_ascii_case(b"branch") {
                // A value is a slice of `raw`: its offset is where it starts in it.
                branch = Some(p.value.map(|v| {
                    let start = v.as_ptr() as usize - raw.as_ptr() as usize;
                    start..start + v.len()
                }));
            } else if rport.is_none() && p.name.eq_ignore_ascii_case(b"rport") {
                rport = Some(p.value.and_then(grammar::decimal));
            }
        }
        self.branch = branch.flatten();
        self.rport = rport;
        self
    }

    /// The view over `raw`, the bytes these parts were parsed from, or bytes that keep
    /// them up to the end of `sent-by` (a stamped copy).
    pub(super) fn view<'a>(&'a self, raw: &'a [u8]) -> Via<'a> {
        Via {
            transport: raw.get(self.transport.clone()).unwrap_or_default(),
            host: Cow::Borrowed(&self.host),
            port: self.port,
            raw,
            sent_by_end: self.sent_by_end.min(raw.len()),
            branch: self.branch.clone().and_then(|b| raw.get(b)),
            rport: self.rport,
        }
    }
}

/// Appends `n` in decimal: what `format!` does, without its machinery, for the numbers
/// written into every message we stamp or build.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends an address as `Display` writes it (IPv6 without brackets).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, octet.into());
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// Skips linear whitespace, including a fold (CRLF followed by SP or HTAB).
fn trim_lws(s: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    &s[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sent_protocol_with_lws_and_ipv6() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(*v.host(), Host::Ip("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse(b"SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3").unwrap();
        assert_eq!(v.port, Some(5061));
        assert_eq!(*v.host(), Host::Ip("2001:db8::9:1".parse().unwrap()));
        let v = Via::parse(b"SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1").unwrap();
        assert!(v.host().is_invalid_tld());
        assert!(Via::parse(b"SIP/2.0 192.0.2.2").is_err());
        assert!(Via::parse(b"XMPP/2.0/UDP 192.0.2.2").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;branch=z9hG4bK1;").is_err());
    }

    #[test]
    fn stamping_fills_rport_and_received() {
        let src: SocketAddr = "203.0.113.7:61000".parse().unwrap();
        let v = Via::parse(b"SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.stamped(src), b"SIP/2.0/UDP 10.0.0.2:5060;rport=61000;branch=z9hG4bKx;received=203.0.113.7");
        assert_eq!(v.response_address(src), src);
        let v = Via::parse(b"SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKx").unwrap();
        assert_eq!(v.stamped(src), b"SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKx");
        assert_eq!(v.response_address(src), "203.0.113.7:5062".parse().unwrap());
        let v = Via::parse(b"SIP/2.0/WS abc.invalid;branch=z9hG4bKx;received=1.2.3.4").unwrap();
        assert_eq!(v.stamped(src), b"SIP/2.0/WS abc.invalid;branch=z9hG4bKx;received=203.0.113.7");
        let src6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let v = Via::parse(b"SIP/2.0/UDP host.example;rport").unwrap();
        assert_eq!(v.stamped(src6), b"SIP/2.0/UDP host.example;rport=5060;received=2001:db8::1");
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0u64, 7, 10, 65535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for ip in ["0.0.0.0", "192.0.2.255", "10.20.3.4", "2001:db8::1", "::ffff:192.0.2.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }
}

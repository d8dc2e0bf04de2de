//! SIP URIs (RFC 3261 §19.1, §25.1 `SIP-URI`), hosts with IPv6 references (RFC 5118), and
//! `name-addr` / `addr-spec` header values (§20.10).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use compact_str::CompactString;

use super::grammar::{self, Param};

/// `host = hostname / IPv4address / IPv6reference`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, lower-cased (host names compare case-insensitively). Kept inline
    /// up to 24 bytes: every request names a few hosts, and an allocation each was a
    /// tenth of the allocations of a registration.
    Name(CompactString),
    Ip(IpAddr),
}

impl Host {
    /// Parses `host`; an IPv6 address must be bracketed (`IPv6reference`).
    pub fn parse(s: &[u8]) -> Result<Self, UriError> {
        if let Some(inner) = s.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
            let text = std::str::from_utf8(inner).map_err(|_| UriError::Host)?;
            return text.parse::<Ipv6Addr>().map(|ip| Self::Ip(IpAddr::V6(ip))).map_err(|_| UriError::Host);
        }
        // One pass: the characters allowed, whether only digits and dots (only those can
        // be an IPv4 address: a name never tries), and where the top label starts.
        let mut digits_and_dots = true;
        let mut label_start = 0;
        let mut top_start = None;
        for (i, &c) in s.iter().enumerate() {
            match c {
                b'.' => label_start = i + 1,
                b'0'..=b'9' => top_start = Some(label_start),
                b'a'..=b'z' | b'A'..=b'Z' | b'-' => {
                    digits_and_dots = false;
                    top_start = Some(label_start);
                }
                _ => return Err(UriError::Host),
            }
        }
        if s.is_empty() {
            return Err(UriError::Host);
        }
        if digits_and_dots {
            if let Some(ip) = dotted_quad(s) {
                return Ok(Self::Ip(IpAddr::V4(ip)));
            }
            let text = std::str::from_utf8(s).map_err(|_| UriError::Host)?;
            if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
                return Ok(Self::Ip(IpAddr::V4(ip)));
            }
        }
        // `hostname = *( domainlabel "." ) toplabel [ "." ]`: a toplabel starts with a letter.
        // A dotted all-digit name that is not an IPv4 address is malformed.
        if !top_start.and_then(|at| s.get(at)).is_some_and(u8::is_ascii_alphabetic) {
            return Err(UriError::Host);
        }
        // Only ASCII letters, digits, '-' and '.' got here.
        let name = std::str::from_utf8(s).map_err(|_| UriError::Host)?;
        Ok(Self::Name(CompactString::from(name).to_ascii_lowercase()))
    }

    /// RFC 7118 §5 and RFC 5626: `.invalid` names are placeholders and are never resolved.
    pub fn is_invalid_tld(&self) -> bool {
        matches!(self, Self::Name(n) if n.trim_end_matches('.').ends_with(".invalid"))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT` as the standard library
/// reads it (each part at most 255, no leading zero), without its general parser: the
/// sent-by of nearly every Via is one. `None` leaves the decision to that parser.
fn dotted_quad(s: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut index = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &c in s {
        if c == b'.' {
            if digits == 0 || index == 3 {
                return None;
            }
            octets[index] = u8::try_from(value).ok()?;
            index += 1;
            (value, digits) = (0, 0);
            continue;
        }
        // At most three digits, and no leading zero.
        if !c.is_ascii_digit() || digits == 3 || (digits == 1 && value == 0) {
            return None;
        }
        value = value * 10 + u16::from(c - b'0');
        digits += 1;
    }
    if digits == 0 || index != 3 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(std::net::Ipv4Addr::from(octets))
}

/// The text of a URI part: copied as it is when it is UTF-8 (always, from a parsed
/// message), with replacement characters otherwise.
fn owned_text(bytes: &[u8]) -> CompactString {
    match std::str::from_utf8(bytes) {
        Ok(text) => CompactString::from(text),
        Err(_) => CompactString::from(String::from_utf8_lossy(bytes)),
    }
}

/// Splits `hostport = host [ ":" port ]`, IPv6 references included.
pub fn parse_hostport(s: &[u8]) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if s.starts_with(b"[") {
        let close = memchr::memchr(b']', s).ok_or(UriError::Host)?;
        (&s[..=close], &s[close + 1..])
    } else {
        match memchr::memchr(b':', s) {
            Some(colon) => (&s[..colon], &s[colon..]),
            None => (s, &b""[..]),
        }
    };
    let port = match port {
        [] => None,
        [b':', digits @ ..] => Some(grammar::decimal::<u16>(digits).ok_or(UriError::Port)?),
        _ => return Err(UriError::Host),
    };
    Ok((Host::parse(host)?, port))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing or malformed URI scheme")]
    Scheme,
    #[error("malformed host")]
    Host,
    #[error("malformed port")]
    Port,
    #[error("malformed user part")]
    User,
    #[error("malformed name-addr")]
    NameAddr,
}

/// A URI as a proxy routes on it. `sip:` and `sips:` are parsed; any other scheme (`tel:`,
/// `urn:`, unknown ones) is kept whole so it can be forwarded or refused with 416.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Other { scheme: String, rest: String },
}

/// `SIP-URI` / `SIPS-URI` with its parts; parameters and headers keep their raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part as written, escapes not decoded (comparison decodes, §19.1.4).
    /// Inline up to 24 bytes, as the parameters are.
    pub user: Option<CompactString>,
    pub host: Host,
    pub port: Option<u16>,
    /// `uri-parameters`, without the leading `;`.
    pub params: CompactString,
    /// `headers`, without the leading `?`.
    pub headers: Option<CompactString>,
}

impl Uri {
    /// Parses `Request-URI = SIP-URI / SIPS-URI / absoluteURI`.
    pub fn parse(s: &[u8]) -> Result<Self, UriError> {
        // The scheme is a few letters: a plain scan finds its colon sooner than memchr's
        // set-up would.
        let colon = s.iter().position(|&c| c == b':').ok_or(UriError::Scheme)?;
        let scheme = &s[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError::Scheme);
        }
        let rest = &s[colon + 1..];
        let secure = scheme.eq_ignore_ascii_case(b"sips");
        if !secure && !scheme.eq_ignore_ascii_case(b"sip") {
            if rest.is_empty() || rest.iter().any(|&c| c <= b' ' || c == 0x7f) {
                return Err(UriError::Scheme);
            }
            return Ok(Self::Other {
                scheme: String::from_utf8_lossy(scheme).to_ascii_lowercase(),
                rest: String::from_utf8_lossy(rest).into_owned(),
            });
        }
        SipUri::parse_after_scheme(secure, rest).map(Self::Sip)
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            Self::Other { .. } => None,
        }
    }
}

impl SipUri {
    fn parse_after_scheme(secure: bool, s: &[u8]) -> Result<Self, UriError> {
        // URIs are short: two plain passes cost less than a memchr for each delimiter.
        // The first refuses what a URI cannot hold and finds where `userinfo` ends, at the
        // only '@' a SIP URI may hold unescaped (§25.1).
        let mut at = None;
        for (i, &c) in s.iter().enumerate() {
            match c {
                0..=b' ' | 0x7f | b'<' | b'>' | b'"' => return Err(UriError::Host),
                b'@' if at.is_none() => at = Some(i),
                _ => {}
            }
        }
        let (user, hostpart) = match at {
            Some(at) => {
                let userinfo = &s[..at];
                let user = match userinfo.iter().position(|&c| c == b':') {
                    Some(c) => &userinfo[..c],
                    None => userinfo,
                };
                if user.is_empty() {
                    return Err(UriError::User);
                }
                (Some(owned_text(user)), &s[at + 1..])
            }
            None => (None, s),
        };
        // The second: `?` starts the headers, and the first `;` before it the parameters.
        let (mut semicolon, mut question) = (None, None);
        for (i, &c) in hostpart.iter().enumerate() {
            match c {
                b';' if semicolon.is_none() => semicolon = Some(i),
                b'?' => {
                    question = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let (before_headers, headers) = match question {
            Some(q) => (&hostpart[..q], Some(owned_text(&hostpart[q + 1..]))),
            None => (hostpart, None),
        };
        let (hostport, params) = match semicolon {
            Some(sc) => (&before_headers[..sc], &before_headers[sc + 1..]),
            None => (before_headers, &b""[..]),
        };
        let (host, port) = parse_hostport(hostport)?;
        Ok(Self { secure, user, host, port, params: owned_text(params), headers })
    }

    /// The value of a URI parameter (`transport`, `lr`, `ob`, ...), names compared
    /// case-insensitively. `Some(None)` for a parameter without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        grammar::params(self.params.as_bytes())
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|p| p.value.and_then(|v| std::str::from_utf8(v).ok()))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => u.fmt(f),
            Self::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if !self.params.is_empty() {
            write!(f, ";{}", self.params)?;
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// A `name-addr` or `addr-spec` header value with its header parameters (From, To,
/// Contact, Route, Record-Route, Path). Borrowed from the message; nothing is re-printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// `display-name`, quotes kept.
    pub display: Option<&'a [u8]>,
    /// The URI text between `<` and `>` (or the whole `addr-spec`).
    pub uri: &'a [u8],
    /// Header parameters after the URI, e.g. `;tag=..`, `;expires=..`, `;+sip.instance=..`.
    pub params: &'a [u8],
    /// The URI was in `<...>` (`name-addr`); an `addr-spec` cannot carry `?` headers.
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses `( name-addr / addr-spec ) *( SEMI param )`. In the `addr-spec` form every
    /// `;` after the URI starts a header parameter (§20.10).
    pub fn parse(value: &'a [u8]) -> Result<Self, UriError> {
        let value = grammar::trim(value);
        let quoted_end = if value.starts_with(b"\"") { closing_quote(value)? + 1 } else { 0 };
        if let Some(open) = memchr::memchr(b'<', &value[quoted_end..]).map(|o| o + quoted_end) {
            let close = memchr::memchr(b'>', &value[open..]).ok_or(UriError::NameAddr)? + open;
            let display = grammar::trim(&value[..open]);
            if display.iter().any(|&c| c == b'<' || c == b'>') {
                return Err(UriError::NameAddr);
            }
            let display_ok = display.is_empty()
                || display.starts_with(b"\"")
                || display.split(|&c| grammar::is_wsp(c)).all(|w| w.iter().all(|&c| grammar::is_token_char(c)));
            if !display_ok {
                return Err(UriError::NameAddr);
            }
            return Ok(Self {
                display: (!display.is_empty()).then_some(display),
                uri: grammar::trim(&value[open + 1..close]),
                params: &value[close + 1..],
                bracketed: true,
            });
        }
        if quoted_end != 0 {
            return Err(UriError::NameAddr);
        }
        let split = memchr::memchr(b';', value).unwrap_or(value.len());
        let uri = grammar::trim(&value[..split]);
        if uri.is_empty() || uri.iter().any(|&c| grammar::is_wsp(c)) {
            return Err(UriError::NameAddr);
        }
        Ok(Self { display: None, uri, params: &value[split..], bracketed: false })
    }

    pub fn params(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        grammar::params(self.params)
    }

    /// The value of a header parameter, quotes removed.
    pub fn param(&self, name: &str) -> Option<Option<Cow<'a, [u8]>>> {
        self.params().find(|p| p.name.eq_ignore_ascii_case(name.as_bytes())).map(|p| p.value.map(grammar::unquote))
    }

    /// `tag` of From and To (§19.3).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params().find(|p| p.name.eq_ignore_ascii_case(b"tag")).and_then(|p| p.value)
    }

    pub fn parse_uri(&self) -> Result<Uri, UriError> {
        Uri::parse(self.uri)
    }
}

fn closing_quote(s: &[u8]) -> Result<usize, UriError> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'"' => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err(UriError::NameAddr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s.as_bytes()) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn hosts_are_names_addresses_or_errors() {
        let name = |s: &str| Ok(Host::Name(s.into()));
        let cases: [(&str, Result<Host, UriError>); 11] = [
            ("Example.COM", name("example.com")),
            ("example.com.", name("example.com.")),
            ("a1.b-2.c3", name("a1.b-2.c3")),
            ("x..", name("x..")),
            ("192.0.2.1", Ok(Host::Ip("192.0.2.1".parse().unwrap()))),
            ("192.0.2.1.", Err(UriError::Host)),
            ("1.2.3", Err(UriError::Host)),
            ("123", Err(UriError::Host)),
            ("example.123", Err(UriError::Host)),
            ("exa_mple.com", Err(UriError::Host)),
            ("", Err(UriError::Host)),
        ];
        for (text, expected) in cases {
            assert_eq!(Host::parse(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn dotted_quads_read_as_the_standard_library_reads_them() {
        let cases = [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.",
            ".1.2.3",
            "1000.1.1.1",
            "00.1.1.1",
            "0.10.100.200",
            "1.2.3.04",
            "",
        ];
        for case in cases {
            assert_eq!(dotted_quad(case.as_bytes()), case.parse().ok(), "{case}");
        }
        for n in 0..=300u32 {
            let text = format!("{n}.{}.0.{}", n % 7, 300 - n);
            assert_eq!(dotted_quad(text.as_bytes()), text.parse().ok(), "{text}");
        }
    }

    #[test]
    fn ipv6_references_parse_and_print_with_brackets() {
        let u = sip("sip:[2001:db8::10]:5070;transport=tcp");
        assert_eq!(u.host, Host::Ip("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.to_string(), "sip:[2001:db8::10]:5070;transport=tcp");
        let u = sip("sip:user@[::1]");
        assert_eq!(u.user.as_deref(), Some("user"));
        assert!(Uri::parse(b"sip:[2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
    }

    #[test]
    fn user_part_may_hold_semicolons_and_escapes() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        let u = sip("sip:alice:secret@Example.COM;lr?Subject=x");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("Subject=x"));
    }

    /// The split as first written, one search per delimiter, kept to check the two-pass
    /// scan against.
    /// User, hostport, parameters and headers.
    type Split<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8], Option<&'a [u8]>);

    fn split_reference(s: &[u8]) -> Result<Split<'_>, UriError> {
        if s.iter().any(|&c| c <= b' ' || c == 0x7f || c == b'<' || c == b'>' || c == b'"') {
            return Err(UriError::Host);
        }
        let (user, hostpart) = match s.iter().position(|&c| c == b'@') {
            Some(at) => {
                let userinfo = &s[..at];
                let user = userinfo.split(|&c| c == b':').next().unwrap_or_default();
                if user.is_empty() {
                    return Err(UriError::User);
                }
                (Some(user), &s[at + 1..])
            }
            None => (None, s),
        };
        let (before, headers) = match hostpart.iter().position(|&c| c == b'?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let (hostport, params) = match before.iter().position(|&c| c == b';') {
            Some(sc) => (&before[..sc], &before[sc + 1..]),
            None => (before, &b""[..]),
        };
        Ok((user, hostport, params, headers))
    }

    #[test]
    fn the_two_pass_scan_splits_as_one_search_per_delimiter_did() {
        let alphabet = b"a1.@:;?= ";
        let (mut inputs, mut level) = (vec![Vec::new()], vec![Vec::new()]);
        for _ in 0..5 {
            level = level.iter().flat_map(|s| alphabet.iter().map(move |&c| [&s[..], &[c]].concat())).collect();
            inputs.extend(level.iter().cloned());
        }
        for rest in inputs {
            let text = |b: &[u8]| CompactString::from(std::str::from_utf8(b).unwrap());
            let expected = split_reference(&rest).and_then(|(user, hostport, params, headers)| {
                let (host, port) = parse_hostport(hostport)?;
                Ok(SipUri {
                    secure: false,
                    user: user.map(text),
                    host,
                    port,
                    params: text(params),
                    headers: headers.map(text),
                })
            });
            assert_eq!(SipUri::parse_after_scheme(false, &rest), expected, "{:?}", String::from_utf8_lossy(&rest));
        }
    }

    #[test]
    fn other_schemes_are_kept_and_bad_ones_refused() {
        assert_eq!(
            Uri::parse(b"tel:+1-555-0100").unwrap(),
            Uri::Other { scheme: "tel".into(), rest: "+1-555-0100".into() }
        );
        assert!(Uri::parse(b"<sip:a@b>").is_err());
        assert!(Uri::parse(b"sip:a b@c").is_err());
        assert!(Uri::parse(b"nocolon").is_err());
    }

    #[test]
    fn invalid_tld_is_recognised() {
        assert!(sip("sip:abc@df7jal23ls0d.invalid;transport=ws").host.is_invalid_tld());
        assert!(!sip("sip:abc@example.com").host.is_invalid_tld());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(br#""Bob, \"B\"" <sip:bob@x;transport=udp>;tag=abc;expires=60"#).unwrap();
        assert_eq!(n.uri, b"sip:bob@x;transport=udp");
        assert_eq!(n.tag(), Some(&b"abc"[..]));
        let n = NameAddr::parse(b"sip:bob@x;tag=t1").unwrap();
        assert_eq!((n.uri, n.tag()), (&b"sip:bob@x"[..], Some(&b"t1"[..])));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some(&b"caller"[..]));
        let c = NameAddr::parse(br#"<sip:a@b.invalid;transport=ws>;+sip.instance="<urn:uuid:1-2>";reg-id=1"#).unwrap();
        assert_eq!(c.param("+sip.instance"), Some(Some(Cow::Borrowed(&b"<urn:uuid:1-2>"[..]))));
        assert!(NameAddr::parse(br#""unterminated <sip:a@b>"#).is_err());
        assert!(NameAddr::parse(b"sip:a@b sip:c@d").is_err());
    }
}

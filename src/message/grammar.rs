//! Character classes and small nom parsers for the RFC 3261 §25 rules we parse ourselves.
//! Each parser names its ABNF rule; the rules are written out in `grammars/rfc3261.abnf`.

use nom::{
    IResult, Parser,
    bytes::complete::{tag_no_case, take_while, take_while_m_n, take_while1},
    character::complete::{char, digit1},
    combinator::{all_consuming, map_res, opt},
};

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )`
#[inline]
pub(crate) fn is_token_char(c: u8) -> bool {
    TOKEN_CHARS[usize::from(c)]
}

/// [`is_token_char`] as a table: it runs on every byte of every header name and parameter.
static TOKEN_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        c += 1;
    }
    table
};

/// `WSP = SP / HTAB`
pub(crate) fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// `token`
pub(crate) fn token(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_token_char).parse(i)
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT` (the literal is case-insensitive).
pub(crate) fn sip_version(i: &[u8]) -> IResult<&[u8], (u32, u32)> {
    let (i, _) = tag_no_case("SIP/").parse(i)?;
    let (i, major) = number_u32(i)?;
    let (i, _) = char('.').parse(i)?;
    let (i, minor) = number_u32(i)?;
    Ok((i, (major, minor)))
}

fn number_u32(i: &[u8]) -> IResult<&[u8], u32> {
    map_res(digit1, |d: &[u8]| std::str::from_utf8(d).map_err(|_| ()).and_then(|s| s.parse::<u32>().map_err(|_| ())))
        .parse(i)
}

/// `(Method, Request-URI, SIP-Version)` of a Request-Line.
pub(crate) type RequestLine<'a> = (&'a [u8], &'a [u8], (u32, u32));
/// `(SIP-Version, Status-Code, Reason-Phrase)` of a Status-Line.
pub(crate) type StatusLine<'a> = ((u32, u32), u16, &'a [u8]);

/// Request-URI characters: any visible ASCII. The URI's own grammar is checked by
/// [`super::uri::Uri::parse`]; the Request-Line only needs to know where it ends.
fn is_uri_char(c: u8) -> bool {
    (0x21..=0x7e).contains(&c)
}

/// `Request-Line = Method SP Request-URI SP SIP-Version CRLF` (without the CRLF).
/// Exactly one SP between elements and none at the end (RFC 4475 §3.1.2.9, §3.1.2.10).
pub(crate) fn request_line(i: &[u8]) -> IResult<&[u8], RequestLine<'_>> {
    all_consuming((token, char(' '), take_while1(is_uri_char), char(' '), sip_version))
        .map(|(method, _, uri, _, version)| (method, uri, version))
        .parse(i)
}

/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF` (without the CRLF).
/// `Status-Code` is exactly three digits; a missing SP before an empty reason is tolerated.
pub(crate) fn status_line(i: &[u8]) -> IResult<&[u8], StatusLine<'_>> {
    let (i, version) = sip_version(i)?;
    let (i, _) = char(' ').parse(i)?;
    let (i, code) = map_res(take_while_m_n(3, 3, |c: u8| c.is_ascii_digit()), |d: &[u8]| {
        std::str::from_utf8(d).map_err(|_| ()).and_then(|s| s.parse::<u16>().map_err(|_| ()))
    })
    .parse(i)?;
    let (i, sp) = opt(char(' ')).parse(i)?;
    if sp.is_none() && !i.is_empty() {
        return Err(nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Space)));
    }
    let (i, reason) = take_while(|c| c != b'\r' && c != b'\n').parse(i)?;
    if code < 100 {
        return Err(nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Digit)));
    }
    Ok((i, (version, code, reason)))
}

/// `header-name HCOLON` where `HCOLON = *( SP / HTAB ) ":" SWS`: returns the name and the
/// offset at which the value starts (leading whitespace skipped).
pub(crate) fn header_name_colon(line: &[u8]) -> Option<(&[u8], usize)> {
    let name_len = line.iter().position(|&c| !is_token_char(c)).unwrap_or(line.len());
    if name_len == 0 {
        return None;
    }
    let (name, rest) = line.split_at(name_len);
    let rest = trim_start(rest);
    let rest = rest.strip_prefix(b":")?;
    let value_start = line.len() - trim_start(rest).len();
    Some((name, value_start))
}

pub(crate) fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_wsp(*first) {
            break;
        }
        s = rest;
    }
    s
}

/// Trims SP, HTAB, CR and LF at both ends (values may end in folded whitespace).
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// Parses an unsigned decimal made only of digits (`1*DIGIT`), rejecting overflow.
pub(crate) fn decimal<T: TryFrom<u64>>(s: &[u8]) -> Option<T> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    T::try_from(n).ok()
}

/// Splits a header value on the commas that separate list elements (`#element`, §7.3.1):
/// commas inside quoted strings and inside `<...>` do not count. Empty elements are
/// skipped (RFC 4475 §3.1.2.1 shows extraneous separators).
pub(crate) fn comma_elements(value: &[u8]) -> CommaElements<'_> {
    CommaElements { rest: value }
}

#[derive(Debug, Clone)]
pub(crate) struct CommaElements<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for CommaElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = element_end(self.rest);
            let element = trim(&self.rest[..end]);
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            if !element.is_empty() {
                return Some(element);
            }
        }
    }
}

/// Index of the first separating comma, or the length when there is none. Jumps from one
/// byte that can change the state to the next: outside quotes and brackets only `,` `"`
/// `<` matter, inside brackets `"` `>`, inside quotes `\\` `"`.
fn element_end(s: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let next = if in_quotes {
            memchr::memchr2(b'\\', b'"', rest)
        } else if in_angle {
            memchr::memchr2(b'"', b'>', rest)
        } else {
            memchr::memchr3(b',', b'"', b'<', rest)
        };
        let Some(at) = next else { return s.len() };
        i += at;
        match s[i] {
            b'\\' => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            _ => return i,
        }
        i += 1;
    }
    s.len()
}

/// `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host / quoted-string`:
/// iterates `;name[=value]` pairs of a parameter list, quotes kept in the value.
pub(crate) fn params(s: &[u8]) -> Params<'_> {
    Params { rest: s }
}

#[derive(Debug, Clone)]
pub(crate) struct Params<'a> {
    rest: &'a [u8],
}

/// One `;name[=value]` parameter; a quoted value keeps its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        loop {
            let s = trim_start(self.rest);
            let s = s.strip_prefix(b";").unwrap_or(s);
            if s.is_empty() {
                self.rest = s;
                return None;
            }
            let end = param_end(s);
            let raw = &s[..end];
            self.rest = &s[end..];
            let (name, value) = match memchr::memchr(b'=', raw) {
                Some(eq) => (trim(&raw[..eq]), Some(trim(&raw[eq + 1..]))),
                None => (trim(raw), None),
            };
            if !name.is_empty() {
                return Some(Param { name, value });
            }
        }
    }
}

/// Whether a parameter list is `*( SEMI generic-param )` with no empty parameter
/// (`;;` or a trailing `;`, RFC 4475 §3.1.2.1) and every name a token.
pub(crate) fn params_well_formed(s: &[u8]) -> bool {
    let mut rest = trim(s);
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix(b";") else { return false };
        let after = trim_lws(after);
        let end = param_end(after);
        let param = trim(&after[..end]);
        let name = match memchr::memchr(b'=', param) {
            Some(eq) => trim(&param[..eq]),
            None => param,
        };
        if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
            return false;
        }
        rest = &after[end..];
    }
    true
}

/// Whether a list header value has an empty element (`a,,b`, a trailing comma):
/// `#element` lists of Via, Route and the like have none (RFC 4475 §3.1.2.1).
pub(crate) fn has_empty_element(value: &[u8]) -> bool {
    let mut rest = value;
    loop {
        let end = element_end(rest);
        if trim(&rest[..end]).is_empty() {
            return true;
        }
        match rest.get(end + 1..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(s.len());
    &s[start..]
}

/// Index of the `;` that ends a parameter (outside quotes), or the length.
fn param_end(s: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let next = if in_quotes { memchr::memchr2(b'\\', b'"', rest) } else { memchr::memchr2(b';', b'"', rest) };
        let Some(at) = next else { return s.len() };
        i += at;
        match s[i] {
            b'\\' => i += 1,
            b'"' => in_quotes = !in_quotes,
            _ => return i,
        }
        i += 1;
    }
    s.len()
}

/// Removes the quotes of a `quoted-string` and its `quoted-pair` escapes.
pub fn unquote(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let Some(inner) = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")) else {
        return value.into();
    };
    if !inner.contains(&b'\\') {
        return inner.into();
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &c in inner {
        if escaped || c != b'\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_needs_single_spaces_and_no_trailing_space() {
        assert!(request_line(b"INVITE sip:a@b SIP/2.0").is_ok());
        assert!(request_line(b"INVITE  sip:a@b SIP/2.0").is_err());
        assert!(request_line(b"INVITE sip:a@b SIP/2.0 ").is_err());
        assert!(request_line(b"INVITE sip:a@b  SIP/2.0").is_err());
        assert!(request_line(b"INVITE sip:a@b extra SIP/2.0").is_err());
        let (_, (m, uri, v)) = request_line(b"NEWMETHOD sip:[2001:db8::1]:5070 sip/2.0").unwrap();
        assert_eq!((m, uri, v), (&b"NEWMETHOD"[..], &b"sip:[2001:db8::1]:5070"[..], (2, 0)));
    }

    #[test]
    fn status_code_is_exactly_three_digits() {
        let (_, (_, code, reason)) = status_line(b"SIP/2.0 200 OK").unwrap();
        assert_eq!((code, reason), (200, &b"OK"[..]));
        assert!(status_line(b"SIP/2.0 4294967301 Too Big").is_err());
        assert!(status_line(b"SIP/2.0 20 Short").is_err());
        let (_, (_, code, reason)) = status_line(b"SIP/2.0 100 ").unwrap();
        assert_eq!((code, reason), (100, &b""[..]));
        let (_, (_, code, _)) = status_line(b"SIP/2.0 180").unwrap();
        assert_eq!(code, 180);
    }

    #[test]
    fn header_colon_allows_whitespace_before_it() {
        assert_eq!(header_name_colon(b"TO :  sip:x"), Some((&b"TO"[..], 6)));
        assert_eq!(header_name_colon(b"v:SIP/2.0/UDP h"), Some((&b"v"[..], 2)));
        assert_eq!(header_name_colon(b"no colon here"), None);
        assert_eq!(header_name_colon(b": empty name"), None);
    }

    #[test]
    fn comma_lists_respect_quotes_and_brackets() {
        let v = br#""Doe, John" <sip:j@x;a=1,2>;q=0.5 , <sip:k@y>,,sip:z@w"#;
        let items: Vec<_> = comma_elements(v).collect();
        assert_eq!(items, vec![&br#""Doe, John" <sip:j@x;a=1,2>;q=0.5"#[..], &b"<sip:k@y>"[..], &b"sip:z@w"[..]]);
        let escaped = br#""a\",b" <sip:a@b>, <sip:c@d>"#;
        assert_eq!(comma_elements(escaped).count(), 2);
    }

    /// The byte-by-byte scanners the jumping ones replaced, as the reference.
    fn element_end_reference(s: &[u8]) -> usize {
        let (mut in_quotes, mut in_angle, mut i) = (false, false, 0);
        while i < s.len() {
            match s[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b'<' if !in_quotes => in_angle = true,
                b'>' if !in_quotes => in_angle = false,
                b',' if !in_quotes && !in_angle => return i,
                _ => {}
            }
            i += 1;
        }
        s.len()
    }

    fn param_end_reference(s: &[u8]) -> usize {
        let (mut in_quotes, mut i) = (false, 0);
        while i < s.len() {
            match s[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b';' if !in_quotes => return i,
                _ => {}
            }
            i += 1;
        }
        s.len()
    }

    #[test]
    fn scanners_agree_with_the_byte_by_byte_reference_on_every_short_input() {
        let alphabet = br#",;"<>\a "#;
        let mut input = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                input.clear();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(element_end(&input), element_end_reference(&input), "{:?}", String::from_utf8_lossy(&input));
                assert_eq!(param_end(&input), param_end_reference(&input), "{:?}", String::from_utf8_lossy(&input));
            }
        }
        for c in 0..=255u8 {
            let expected = c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
            assert_eq!(is_token_char(c), expected, "{c}");
        }
    }

    #[test]
    fn params_keep_quoted_values_whole() {
        let p: Vec<_> = params(br#";reg-id=1;+sip.instance="<urn:uuid:a;b>";ob;expires = 60"#).collect();
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].name, b"+sip.instance");
        assert_eq!(p[1].value, Some(&br#""<urn:uuid:a;b>""#[..]));
        assert_eq!(p[2], Param { name: b"ob", value: None });
        assert_eq!(p[3].value, Some(&b"60"[..]));
        assert_eq!(&*unquote(br#""a\"b""#), b"a\"b");
    }

    #[test]
    fn empty_parameters_and_elements_are_seen() {
        assert!(params_well_formed(b";branch=z9hG4bK1;rport"));
        assert!(params_well_formed(b""));
        assert!(params_well_formed(br#";a="x;y" ; b"#));
        assert!(!params_well_formed(b";;"));
        assert!(!params_well_formed(b";branch=1;"));
        assert!(!params_well_formed(b";=1"));
        assert!(has_empty_element(b"a, ,b"));
        assert!(has_empty_element(b"a,"));
        assert!(!has_empty_element(br#"<sip:a@b;x=1,2>, "c,d" <sip:e@f>"#));
    }

    #[test]
    fn decimal_rejects_signs_and_overflow() {
        assert_eq!(decimal::<u32>(b"150"), Some(150));
        assert_eq!(decimal::<u32>(b"-1"), None);
        assert_eq!(decimal::<u32>(b"99999999999"), None);
        assert_eq!(decimal::<u32>(b""), None);
    }
}

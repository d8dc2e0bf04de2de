//! Responses built from a request (RFC 3261 §8.2.6.2): Via (all of them, the top one
//! stamped with `received`/`rport`), From, To (with our tag), Call-ID and CSeq are copied;
//! everything else is ours.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::Message;
use super::grammar;
use super::header::HeaderName;
use super::status::reason_phrase;
use super::uri::NameAddr;
use super::via::Via;

/// What to answer with.
#[derive(Debug, Clone, Default)]
pub struct Reply<'a> {
    pub code: u16,
    /// Reason phrase; the standard one when `None`.
    pub reason: Option<&'a str>,
    /// Tag for the To header when it has none (never on 100, §8.2.6.2).
    pub to_tag: Option<&'a str>,
    /// Where the request came from, to stamp the top Via (RFC 3581).
    pub source: Option<SocketAddr>,
    /// Further header fields, printed in order.
    pub headers: Vec<(&'a str, Cow<'a, str>)>,
}

impl Reply<'_> {
    pub fn new(code: u16) -> Self {
        Self { code, ..Self::default() }
    }
}

/// The response to `request` as bytes ready to send.
pub fn build(request: &Message, reply: &Reply<'_>) -> Vec<u8> {
    let copied = || request.headers().iter().filter(|h| is_copied(h.name)).map(|h| (h.name, request.value(h)));
    let capacity = capacity(copied(), reply);
    write_response(copied(), reply, capacity)
}

/// A response from the header values that [`super::salvage_for_reply`] recovered from a
/// request too broken to parse.
pub fn build_salvaged(fields: &[(HeaderName, Vec<u8>)], reply: &Reply<'_>) -> Vec<u8> {
    let fields = || fields.iter().map(|(n, v)| (*n, Cow::Borrowed(&v[..])));
    write_response(fields(), reply, capacity(fields(), reply))
}

/// What the response takes, or a little more: it is allocated once at this size. A UDP
/// server transaction keeps its final response for Timer J (32 s), so a buffer grown by
/// doubling would keep up to half of it unused all that time.
fn capacity<'m>(fields: impl Iterator<Item = (HeaderName, Cow<'m, [u8]>)>, reply: &Reply<'_>) -> usize {
    // Status line; `;received=` with an IPv6 address and `;rport=` with a port; `;tag=`;
    // Content-Length and the blank line.
    const FIXED: usize = 16 + 56 + 16 + 24;
    let reason = reply.reason.map_or(32, str::len);
    let copied: usize = fields.map(|(name, value)| name.as_str().len() + 4 + value.len()).sum();
    let ours: usize = reply.headers.iter().map(|(name, value)| name.len() + 4 + value.len()).sum();
    FIXED + reason + copied + ours + reply.to_tag.map_or(0, str::len)
}

fn is_copied(name: HeaderName) -> bool {
    matches!(name, HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq)
}

fn write_response<'m>(
    fields: impl Iterator<Item = (HeaderName, Cow<'m, [u8]>)>,
    reply: &Reply<'_>,
    capacity: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    let reason = reply.reason.unwrap_or_else(|| reason_phrase(reply.code));
    out.extend_from_slice(b"SIP/2.0 ");
    super::via::push_decimal(&mut out, reply.code.into());
    out.push(b' ');
    push_clean(&mut out, reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut first_via = true;
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        match name {
            HeaderName::Via if first_via => {
                first_via = false;
                write_stamped_via(&mut out, &value, reply.source);
            }
            HeaderName::To => write_to(&mut out, &value, reply),
            _ => push_clean(&mut out, &value),
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &reply.headers {
        push_clean(&mut out, name.as_bytes());
        out.extend_from_slice(b": ");
        push_clean(&mut out, value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

fn write_stamped_via(out: &mut Vec<u8>, value: &[u8], source: Option<SocketAddr>) {
    let mut elements = grammar::comma_elements(value);
    if let Some(top) = elements.next() {
        match source.and_then(|src| Via::parse(top).ok().map(|via| via.stamped(src))) {
            Some(stamped) => out.extend_from_slice(&stamped),
            None => push_clean(out, top),
        }
    }
    for rest in elements {
        out.extend_from_slice(b", ");
        push_clean(out, rest);
    }
}

fn write_to(out: &mut Vec<u8>, value: &[u8], reply: &Reply<'_>) {
    push_clean(out, value);
    let Some(tag) = reply.to_tag else { return };
    let has_tag = NameAddr::parse(value).ok().and_then(|n| n.tag()).is_some();
    if reply.code > 100 && !has_tag {
        out.extend_from_slice(b";tag=");
        push_clean(out, tag.as_bytes());
    }
}

/// Copies bytes, dropping CR and LF so no value can end a header early.
fn push_clean(out: &mut Vec<u8>, mut bytes: &[u8]) {
    while let Some(i) = memchr::memchr2(b'\r', b'\n', bytes) {
        out.extend_from_slice(&bytes[..i]);
        bytes = &bytes[i + 1..];
    }
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Limits;
    use bytes::Bytes;

    #[test]
    fn copies_dialog_headers_and_stamps_top_via() {
        let req = Message::parse(
            Bytes::from_static(
                b"OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z9hG4bK0\r\n\
                  Via: SIP/2.0/TCP q;branch=z9hG4bKz\r\nMax-Forwards: 70\r\nf: <sip:a@h>;tag=9\r\nt: <sip:h>\r\n\
                  Call-ID: c1\r\nCSeq: 3 OPTIONS\r\nX-Other: drop me\r\n\r\n",
            ),
            &Limits::default(),
        )
        .unwrap();
        let mut reply = Reply::new(200);
        reply.to_tag = Some("srv1");
        reply.source = Some("192.0.2.9:40000".parse().unwrap());
        reply.headers.push(("Allow", "OPTIONS".into()));
        let out = String::from_utf8(build(&req, &reply)).unwrap();
        assert_eq!(
            out,
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 10.0.0.1;rport=40000;branch=z9hG4bK1;received=192.0.2.9, SIP/2.0/UDP p;branch=z9hG4bK0\r\n\
             Via: SIP/2.0/TCP q;branch=z9hG4bKz\r\n\
             From: <sip:a@h>;tag=9\r\nTo: <sip:h>;tag=srv1\r\nCall-ID: c1\r\nCSeq: 3 OPTIONS\r\n\
             Allow: OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let reparsed = Message::parse(Bytes::from(out), &Limits::default()).unwrap();
        assert_eq!(reparsed.status(), Some(200));
    }

    #[test]
    fn the_buffer_is_allocated_once_at_its_final_size() {
        let req = Message::parse(
            Bytes::from_static(
                b"REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
                  f: <sip:a@h>;tag=9\r\nt: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: 3 REGISTER\r\n\r\n",
            ),
            &Limits::default(),
        )
        .unwrap();
        for code in [100, 200, 401, 481, 503] {
            let mut reply = Reply::new(code);
            reply.to_tag = Some("0123456789abcdef");
            reply.source = Some("[2001:db8:1:2:3:4:5:6]:65535".parse().unwrap());
            reply.headers.push(("WWW-Authenticate", "Digest realm=\"h\", nonce=\"abc\"".into()));
            let out = build(&req, &reply);
            let copied = req.headers().iter().map(|h| (h.name, req.value(h)));
            assert!(out.len() <= capacity(copied, &reply), "{code}: {} bytes", out.len());
        }
    }

    #[test]
    fn existing_to_tag_is_kept_and_reason_cannot_inject_lines() {
        let req = Message::parse(
            Bytes::from_static(
                b"BYE sip:h SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK2\r\nTo: <sip:b@h>;tag=old\r\n\r\n",
            ),
            &Limits::default(),
        )
        .unwrap();
        let reply = Reply { code: 400, reason: Some("Bad\r\nX-Injected: 1"), to_tag: Some("new"), ..Reply::default() };
        let out = String::from_utf8(build(&req, &reply)).unwrap();
        assert!(out.starts_with("SIP/2.0 400 BadX-Injected: 1\r\n"));
        assert!(out.contains("To: <sip:b@h>;tag=old\r\n"));
        assert!(!out.contains("tag=new"));
    }
}

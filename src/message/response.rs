//! Responses built from a request (RFC 3261 §8.2.6.2): Via (all of them, the top one
//! stamped with `received`/`rport`), From, To (with our tag), Call-ID and CSeq are copied;
//! everything else is ours.

use std::borrow::Cow;
use std::cell::Cell;
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
    let copied = request.headers().iter().filter(|h| is_copied(h.name)).map(|h| (h.name, request.value(h)));
    write_response(copied, reply)
}

/// A response from the header values that [`super::salvage_for_reply`] recovered from a
/// request too broken to parse.
pub fn build_salvaged(fields: &[(HeaderName, Vec<u8>)], reply: &Reply<'_>) -> Vec<u8> {
    write_response(fields.iter().map(|(n, v)| (*n, Cow::Borrowed(&v[..]))), reply)
}

thread_local! {
    /// Where a response is written before it is copied out at its exact size. A UDP
    /// server transaction keeps its final response for Timer J (32 s), so it must not
    /// carry spare capacity; writing here first spares a pass that sizes it beforehand
    /// (which read every copied value twice) and leaves no estimate to get wrong.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

fn write_response<'m>(fields: impl Iterator<Item = (HeaderName, Cow<'m, [u8]>)> + Clone, reply: &Reply<'_>) -> Vec<u8> {
    // Taken rather than borrowed: were a response ever built while another is, the inner
    // one would find an empty buffer and grow its own, not fail.
    let mut out = SCRATCH.take();
    out.clear();
    // No value may end a header early, but values almost never hold a CR or LF: the
    // response is written as it comes and its line breaks counted once, in one pass,
    // rather than each value searched. More than our own means a value brought some.
    let lines = write_into::<false>(&mut out, fields.clone(), reply);
    if line_break_bytes(&out) != 2 * lines {
        out.clear();
        write_into::<true>(&mut out, fields, reply);
    }
    let response = out.to_vec();
    SCRATCH.set(out);
    response
}

fn is_copied(name: HeaderName) -> bool {
    matches!(name, HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq)
}

/// Writes the response; `CLEAN` drops every CR and LF from the values. Returns the
/// number of CRLFs it wrote itself.
fn write_into<'m, const CLEAN: bool>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (HeaderName, Cow<'m, [u8]>)>,
    reply: &Reply<'_>,
) -> usize {
    let push = |out: &mut Vec<u8>, bytes: &[u8]| {
        if CLEAN {
            push_clean(out, bytes);
        } else {
            out.extend_from_slice(bytes);
        }
    };
    out.extend_from_slice(b"SIP/2.0 ");
    push_status_code(out, reply.code);
    out.push(b' ');
    match reply.reason {
        Some(reason) => push(out, reason.as_bytes()),
        // Our own table: no line breaks in it.
        None => out.extend_from_slice(reason_phrase(reply.code).as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let mut lines = 1;
    let mut first_via = true;
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        match name {
            HeaderName::Via if first_via => {
                first_via = false;
                write_stamped_via(out, &value, reply.source, push);
            }
            HeaderName::To => {
                push(out, &value);
                if let Some(tag) = reply.to_tag
                    && reply.code > 100
                    && !has_tag(&value)
                {
                    out.extend_from_slice(b";tag=");
                    push(out, tag.as_bytes());
                }
            }
            _ => push(out, &value),
        }
        out.extend_from_slice(b"\r\n");
        lines += 1;
    }
    for (name, value) in &reply.headers {
        push(out, name.as_bytes());
        out.extend_from_slice(b": ");
        push(out, value.as_bytes());
        out.extend_from_slice(b"\r\n");
        lines += 1;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    lines + 2
}

/// The status code in decimal: three digits written directly for every SIP code, the
/// general conversion for anything else a caller might pass.
fn push_status_code(out: &mut Vec<u8>, code: u16) {
    if (100..1000).contains(&code) {
        let digit = |n: u16| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[digit(code / 100), digit(code / 10), digit(code)]);
    } else {
        super::via::push_decimal(out, code.into());
    }
}

fn write_stamped_via(out: &mut Vec<u8>, value: &[u8], source: Option<SocketAddr>, push: impl Fn(&mut Vec<u8>, &[u8])) {
    let write_top =
        |out: &mut Vec<u8>, top: &[u8]| match source.and_then(|src| Via::parse(top).ok().map(|via| via.stamped(src))) {
            Some(stamped) => out.extend_from_slice(&stamped),
            None => push(out, top),
        };
    // Without a comma the value is a single element (it may still need trimming when it
    // was salvaged): the split below would find just that, at a higher price.
    if memchr::memchr(b',', value).is_none() {
        let top = grammar::trim(value);
        if !top.is_empty() {
            write_top(out, top);
        }
        return;
    }
    let mut elements = grammar::comma_elements(value);
    if let Some(top) = elements.next() {
        write_top(out, top);
    }
    for rest in elements {
        out.extend_from_slice(b", ");
        push(out, rest);
    }
}

/// Whether a To value carries a tag. A tag has a value, so a To without any `=` (a
/// request out of any dialog, the usual one here) has none and is not parsed.
fn has_tag(value: &[u8]) -> bool {
    memchr::memchr(b'=', value).is_some() && NameAddr::parse(value).ok().and_then(|n| n.tag()).is_some()
}

/// How many CR and LF bytes `bytes` holds. memchr counts a needle over 32-byte blocks
/// without stopping at each: two passes over a response cost less than a search in each
/// of its dozen values.
fn line_break_bytes(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\r', bytes).count() + memchr::memchr_iter(b'\n', bytes).count()
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
            assert_eq!(out.capacity(), out.len(), "{code}");
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

    /// What [`build`] wrote before it was made cheaper, restated plainly: every value
    /// cleaned of line breaks, the first Via field split on commas, the To parsed for a
    /// tag. The shortcuts must not change a byte of any response.
    fn reference<'m>(fields: impl Iterator<Item = (HeaderName, Cow<'m, [u8]>)>, reply: &Reply<'_>) -> Vec<u8> {
        let clean = |bytes: &[u8]| bytes.iter().copied().filter(|&c| c != b'\r' && c != b'\n').collect::<Vec<u8>>();
        let mut out = format!("SIP/2.0 {} ", reply.code).into_bytes();
        out.extend(clean(reply.reason.unwrap_or_else(|| reason_phrase(reply.code)).as_bytes()));
        out.extend(b"\r\n");
        let mut first_via = true;
        for (name, value) in fields {
            out.extend(format!("{}: ", name.as_str()).bytes());
            match name {
                HeaderName::Via if first_via => {
                    first_via = false;
                    for (i, element) in grammar::comma_elements(&value).enumerate() {
                        let stamped = reply
                            .source
                            .filter(|_| i == 0)
                            .and_then(|src| Some(Via::parse(element).ok()?.stamped(src)));
                        if i > 0 {
                            out.extend(b", ");
                        }
                        out.extend(stamped.unwrap_or_else(|| clean(element)));
                    }
                }
                HeaderName::To => {
                    out.extend(clean(&value));
                    let has_tag = NameAddr::parse(&value).ok().and_then(|n| n.tag()).is_some();
                    if let Some(tag) = reply.to_tag
                        && reply.code > 100
                        && !has_tag
                    {
                        out.extend(b";tag=");
                        out.extend(clean(tag.as_bytes()));
                    }
                }
                _ => out.extend(clean(&value)),
            }
            out.extend(b"\r\n");
        }
        for (name, value) in &reply.headers {
            out.extend(clean(name.as_bytes()));
            out.extend(b": ");
            out.extend(clean(value.as_bytes()));
            out.extend(b"\r\n");
        }
        out.extend(b"Content-Length: 0\r\n\r\n");
        out
    }

    #[test]
    fn shortcuts_write_what_the_plain_rules_write() {
        let requests = [
            // A REGISTER out of any dialog: one Via element, a To without `=`.
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
             f: <sip:a@h>;tag=9\r\nt: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: 3 REGISTER\r\n\r\n",
            // Commas in the first Via field, odd spacing, a later Via field.
            "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa ,SIP/2.0/TCP b;branch=z9hG4bKb,,\r\n\
             Via: SIP/2.0/TCP c;branch=z9hG4bKc, SIP/2.0/TCP d\r\nTo: \"B, the callee\" <sip:b@h;transport=tcp>\r\n\r\n",
            // A comma only inside quotes; a To tag written without `;`; a URI parameter
            // with `=` and no tag.
            "INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa;x=\"p,q\"\r\nTo: <sip:b@h>tag=x\r\n\
             To: <sip:c@h;user=phone>\r\n\r\n",
            // Tags in either case, and in the addr-spec form.
            "BYE sip:h SIP/2.0\r\nv: SIP/2.0/WS x.invalid;branch=z9hG4bK2\r\nt: sip:b@h;TAG=old\r\n\r\n",
            // Bare CRs inside values, and a folded Via and To.
            "MESSAGE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\rX: 1\r\nFrom: <sip:a@h>\r;tag=1\r\n\
             Via: SIP/2.0/UDP b\r\n  ;branch=z9hG4bKb\r\nTo: <sip:b@h>\r\n ;tag=2\r\nCall-ID: c\r\r\n\r\n",
            "MESSAGE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\t,SIP/2.0/UDP b;branch=z9hG4bKb\r\nCSeq: 1 MESSAGE\r\n\r\n",
            // Values longer than a few 16-byte blocks.
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch=z9hG4bK-4242-1-0-aaaaaaaaaaaaaaaa;rport\r\n\
             To: \"A rather long display name\" <sip:someone.with.a.long.name@subdomain.example.com>\r\n\
             Call-ID: 0123456789abcdef0123456789abcdef@192.0.2.100\r\n\r\n",
            // No Via at all; an empty Via.
            "OPTIONS sip:h SIP/2.0\r\nTo: <sip:b@h>\r\n\r\n",
            "OPTIONS sip:h SIP/2.0\r\nVia:\r\nTo:\r\n\r\n",
        ];
        let long_value = "x".repeat(40) + "\r\n" + &"y".repeat(40);
        let replies = [
            Reply::new(200),
            Reply { code: 100, to_tag: Some("t"), ..Reply::default() },
            Reply {
                code: 401,
                to_tag: Some("0123456789abcdef"),
                source: Some("192.0.2.9:40000".parse().unwrap()),
                headers: vec![
                    ("WWW-Authenticate", "Digest realm=\"h\", nonce=\"abc\"".into()),
                    ("Server", "wt".into()),
                ],
                ..Reply::default()
            },
            Reply {
                code: 7,
                reason: Some("Odd\r\nX-Injected: 1"),
                to_tag: Some("ta\rg"),
                source: Some("[2001:db8::1]:5060".parse().unwrap()),
                headers: vec![("X-Na\nme", "v\r".into()), ("Long", long_value.clone().into())],
            },
            Reply { code: 1000, to_tag: Some("0123456789abcdef0123"), ..Reply::default() },
            Reply { code: 65535, reason: Some(""), ..Reply::default() },
            Reply { code: 999, ..Reply::default() },
        ];
        for text in requests {
            let req = Message::parse(Bytes::from_static(text.as_bytes()), &Limits::default()).unwrap();
            for reply in &replies {
                let copied = || req.headers().iter().filter(|h| is_copied(h.name)).map(|h| (h.name, req.value(h)));
                let expected = reference(copied(), reply);
                let out = build(&req, reply);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "{text:?} {}",
                    reply.code
                );
                assert_eq!(out.capacity(), out.len());
                // Salvaged values may keep spaces the parser would have trimmed.
                let fields: Vec<(HeaderName, Vec<u8>)> =
                    copied().map(|(name, value)| (name, [b" ", &value[..], b" \t"].concat())).collect();
                let salvaged = fields.iter().map(|(n, v)| (*n, Cow::Borrowed(&v[..])));
                assert_eq!(build_salvaged(&fields, reply), reference(salvaged, reply), "{text:?} {}", reply.code);
            }
        }
    }

    #[test]
    fn line_breaks_are_counted_in_every_place_of_long_and_short_buffers() {
        for len in (0..=70).chain([255 * 16 - 1, 255 * 16, 255 * 16 + 17, 9000]) {
            let mut bytes = vec![b'x'; len];
            let mut expected = 0;
            for at in (0..len).step_by(7) {
                bytes[at] = if at % 2 == 0 { b'\r' } else { b'\n' };
                expected += 1;
                assert_eq!(line_break_bytes(&bytes), expected, "{len} {at}");
            }
        }
        assert_eq!(line_break_bytes(&[b'\n'; 9000]), 9000);
    }
}

//! What a proxy changes when it forwards (RFC 3261 §16.6 and §16.7), and nothing else:
//! every header it does not touch, and the body, keep their bytes.

use super::{HeaderName, Message, StartLine, grammar};

/// The changes to a request forwarded to one target (§16.6 steps 2 to 8).
#[derive(Debug, Clone, Default)]
pub struct RequestEdit {
    /// The new Request-URI (the target), or `None` to keep it.
    pub request_uri: Option<String>,
    /// Our Via value, put on top (step 8).
    pub via: String,
    /// Max-Forwards to write: the received value less one, or 70 when there was none.
    pub max_forwards: u8,
    /// Route elements to remove from the top: ours (§16.4) or the one consumed by
    /// strict-route handling.
    pub pop_routes: usize,
    /// Record-Route values to insert above any existing ones, in order (step 4).
    pub record_route: Vec<String>,
    /// Route values to put first after popping: a binding's Path or an outbound proxy.
    pub push_routes: Vec<String>,
    /// Proxy-Authorization credentials for this realm are ours and consumed (RFC 3261
    /// §22.3): the callee, or a carrier, never sees a caller's digest.
    pub consume_realm: Option<String>,
    /// Remove the last Route element too: it became the Request-URI (strict-route
    /// compatibility, §16.4).
    pub drop_last_route: bool,
    /// The identity we assert for the caller toward a trusted peer (RFC 3325): any
    /// P-Asserted-Identity the request carried is replaced by this one.
    pub asserted_identity: Option<String>,
    /// The CSeq number to send instead of the received one: the callee side counts from
    /// a higher number once we re-sent the INVITE with credentials (see [`reauthorize`]).
    pub cseq: Option<u32>,
    /// The user part to put in the From URI (a carrier wants its account number or the
    /// caller's number there); display name, host and tag are kept.
    pub from_user: Option<String>,
    /// A To value to send instead of the received one (the caller's own identity back,
    /// where the callee knows it under [`Self::from_user`]).
    pub to: Option<String>,
}

/// The forwarded request as bytes.
pub fn request(message: &Message, edit: &RequestEdit) -> Vec<u8> {
    let bytes = &message.bytes[..];
    let mut out = Vec::with_capacity(bytes.len() + 256);
    let StartLine::Request { method, uri } = &message.start else {
        return message.as_bytes().to_vec();
    };
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match &edit.request_uri {
        Some(target) => push_clean(&mut out, target.as_bytes()),
        None => out.extend_from_slice(&bytes[uri.range()]),
    }
    out.extend_from_slice(b" SIP/2.0\r\n");
    push_field(&mut out, "Via", &edit.via);

    let mut to_pop = edit.pop_routes;
    // The index (among all Route elements) of the one to drop from the bottom, if any.
    let drop_index = edit.drop_last_route.then(|| message.list(HeaderName::Route).len().checked_sub(1)).flatten();
    let mut route_index = 0;
    let mut routes_pushed = edit.push_routes.is_empty();
    let mut record_routed = edit.record_route.is_empty();
    let mut max_forwards_written = false;
    for header in message.headers() {
        match header.name {
            HeaderName::MaxForwards => {
                push_max_forwards(&mut out, edit.max_forwards);
                max_forwards_written = true;
            }
            HeaderName::Route => {
                if !routes_pushed {
                    push_list(&mut out, "Route", &edit.push_routes);
                    routes_pushed = true;
                }
                let value = message.value(header);
                let elements: Vec<&[u8]> = grammar::comma_elements(&value).collect();
                let first = route_index;
                route_index += elements.len();
                let untouched = to_pop == 0 && drop_index.is_none_or(|d| d < first || d >= route_index);
                if untouched {
                    push_raw(&mut out, message.raw_line(header));
                    continue;
                }
                let rest: Vec<String> = elements
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| first + i >= edit.pop_routes && Some(first + i) != drop_index)
                    .map(|(_, e)| String::from_utf8_lossy(e).into_owned())
                    .collect();
                to_pop = to_pop.saturating_sub(elements.len());
                if !rest.is_empty() {
                    push_field(&mut out, "Route", &rest.join(", "));
                }
            }
            HeaderName::RecordRoute => {
                if !record_routed {
                    push_list(&mut out, "Record-Route", &edit.record_route);
                    record_routed = true;
                }
                push_raw(&mut out, message.raw_line(header));
            }
            HeaderName::ProxyAuthorization if consumed(&message.value(header), edit.consume_realm.as_deref()) => {}
            HeaderName::PAssertedIdentity if edit.asserted_identity.is_some() => {}
            HeaderName::CSeq if edit.cseq.is_some() => push_cseq(&mut out, message, edit.cseq),
            HeaderName::From if edit.from_user.is_some() => {
                let value = message.value(header);
                match edit.from_user.as_deref().and_then(|user| with_user(&value, user)) {
                    Some(from) => push_field(&mut out, "From", &from),
                    None => push_raw(&mut out, message.raw_line(header)),
                }
            }
            HeaderName::To if edit.to.is_some() => push_field(&mut out, "To", edit.to.as_deref().unwrap_or_default()),
            HeaderName::ContentLength => {}
            _ => push_raw(&mut out, message.raw_line(header)),
        }
    }
    if !max_forwards_written {
        push_max_forwards(&mut out, edit.max_forwards);
    }
    if !routes_pushed {
        push_list(&mut out, "Route", &edit.push_routes);
    }
    if !record_routed {
        push_list(&mut out, "Record-Route", &edit.record_route);
    }
    if let Some(identity) = &edit.asserted_identity {
        push_field(&mut out, "P-Asserted-Identity", identity);
    }
    finish(&mut out, message.body());
    out
}

/// A response to pass upstream: our Via (the top element) removed (§16.7 step 3).
pub fn response(message: &Message) -> Vec<u8> {
    response_upstream(message, None)
}

/// [`response`], with the CSeq number put back to `cseq` (the caller's) when we had
/// shifted it toward the callee, and From and To put back to what the request we answer
/// carried (`restore`: its From, its To) when we had changed them toward the callee; the
/// callee's To tag is kept.
pub fn response_upstream(message: &Message, cseq: Option<u32>) -> Vec<u8> {
    response_restored(message, cseq, None)
}

/// See [`response_upstream`].
pub fn response_restored(message: &Message, cseq: Option<u32>, restore: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let bytes = &message.bytes[..];
    let mut out = Vec::with_capacity(bytes.len());
    let first_header = message.headers().first().map_or(message.body.start as usize, |h| h.line.start as usize);
    out.extend_from_slice(&bytes[..first_header]);
    let mut popped = false;
    for header in message.headers() {
        match header.name {
            HeaderName::Via if !popped => {
                popped = true;
                let value = message.value(header);
                let mut rest = grammar::comma_elements(&value).skip(1).peekable();
                if rest.peek().is_some() {
                    out.extend_from_slice(b"Via: ");
                    for (i, element) in rest.enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b", ");
                        }
                        push_clean(&mut out, element);
                    }
                    out.extend_from_slice(b"\r\n");
                }
            }
            HeaderName::CSeq if cseq.is_some() => push_cseq(&mut out, message, cseq),
            HeaderName::From if restore.is_some() => {
                push_field(&mut out, "From", &String::from_utf8_lossy(restore.map(|r| r.0).unwrap_or_default()));
            }
            HeaderName::To if restore.is_some() => {
                let original = restore.map(|r| r.1).unwrap_or_default();
                let value = message.value(header);
                let tag = super::NameAddr::parse(&value).ok().and_then(|n| n.tag().map(<[u8]>::to_vec));
                let had_tag = super::NameAddr::parse(original).ok().and_then(|n| n.tag()).is_some();
                let mut to = String::from_utf8_lossy(original).into_owned();
                if let (Some(tag), false) = (tag, had_tag) {
                    to.push_str(";tag=");
                    to.push_str(&String::from_utf8_lossy(&tag));
                }
                push_field(&mut out, "To", &to);
            }
            HeaderName::ContentLength => {}
            _ => push_raw(&mut out, message.raw_line(header)),
        }
    }
    finish(&mut out, message.body());
    out
}

/// A From or To value with `user` as the user part of its SIP URI; `None` when the value
/// is not a SIP URI we can read.
fn with_user(value: &[u8], user: &str) -> Option<String> {
    let addr = super::NameAddr::parse(value).ok()?;
    let uri = std::str::from_utf8(addr.uri).ok()?;
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    // The userinfo ends at the last '@' before any parameter or header.
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    let host_part = match rest[..end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let display = addr.display.map(|d| format!("{} ", String::from_utf8_lossy(d))).unwrap_or_default();
    let params = String::from_utf8_lossy(addr.params);
    Some(format!("{display}<{scheme}:{user}@{host_part}>{params}"))
}

/// The message with `body` in place of its own; every header but Content-Length keeps its
/// bytes (a media relay rewrote the SDP).
pub fn with_body(message: &Message, body: &[u8]) -> Vec<u8> {
    let bytes = &message.bytes[..];
    let mut out = Vec::with_capacity(bytes.len() + body.len());
    let first_header = message.headers().first().map_or(message.body.start as usize, |h| h.line.start as usize);
    out.extend_from_slice(&bytes[..first_header]);
    for header in message.headers() {
        if header.name != HeaderName::ContentLength {
            push_raw(&mut out, message.raw_line(header));
        }
    }
    finish(&mut out, body);
    out
}

/// A request we sent, again with digest credentials after a 401/407 (RFC 3261 §22.2):
/// a new top Via (a new branch, so a new transaction), the CSeq number raised to
/// `cseq`, and `header: value` in place of any earlier credentials under that name.
pub fn reauthorize(request: &Message, via: &str, cseq: u32, header: HeaderName, value: &str) -> Vec<u8> {
    let bytes = &request.bytes[..];
    let mut out = Vec::with_capacity(bytes.len() + value.len() + 64);
    let first_header = request.headers().first().map_or(request.body.start as usize, |h| h.line.start as usize);
    out.extend_from_slice(&bytes[..first_header]);
    let mut via_replaced = false;
    for h in request.headers() {
        match h.name {
            HeaderName::Via if !via_replaced => {
                via_replaced = true;
                push_field(&mut out, "Via", via);
                let value = request.value(h);
                let rest: Vec<String> =
                    grammar::comma_elements(&value).skip(1).map(|e| String::from_utf8_lossy(e).into_owned()).collect();
                if !rest.is_empty() {
                    push_field(&mut out, "Via", &rest.join(", "));
                }
            }
            HeaderName::CSeq => push_cseq(&mut out, request, Some(cseq)),
            name if name == header => {}
            HeaderName::ContentLength => {}
            _ => push_raw(&mut out, request.raw_line(h)),
        }
    }
    push_field(&mut out, header.as_str(), value);
    finish(&mut out, request.body());
    out
}

fn push_cseq(out: &mut Vec<u8>, message: &Message, number: Option<u32>) {
    let Some((received, method)) = message.cseq() else { return };
    push_field(out, "CSeq", &format!("{} {}", number.unwrap_or(received), method.as_str()));
}

fn consumed(credentials: &[u8], realm: Option<&str>) -> bool {
    let Some(realm) = realm else { return false };
    super::digest::parse_credentials(credentials).is_ok_and(|c| c.realm == realm)
}

/// The CANCEL for an INVITE we sent (§9.1): its Request-URI, top Via, Route, Call-ID,
/// From, To and CSeq number, method CANCEL; with a Reason (RFC 3326) when given, e.g.
/// `SIP;cause=200;text="Call completed elsewhere"` for the losing branches of a fork.
pub fn cancel(invite: &Message, reason: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"CANCEL ");
    push_clean(&mut out, invite.request_uri().unwrap_or_default());
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(via) = invite.top_via_raw() {
        push_field(&mut out, "Via", &String::from_utf8_lossy(&via));
    }
    for route in invite.headers_named(HeaderName::Route) {
        push_raw(&mut out, invite.raw_line(route));
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(h) = invite.header(name) {
            push_raw(&mut out, invite.raw_line(h));
        }
    }
    if let Some((number, _)) = invite.cseq() {
        push_field(&mut out, "CSeq", &format!("{number} CANCEL"));
    }
    if let Some(reason) = reason {
        push_field(&mut out, "Reason", reason);
    }
    finish(&mut out, b"");
    out
}

fn finish(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Length: ");
    super::via::push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn push_max_forwards(out: &mut Vec<u8>, hops: u8) {
    out.extend_from_slice(b"Max-Forwards: ");
    super::via::push_decimal(out, hops.into());
    out.extend_from_slice(b"\r\n");
}

fn push_raw(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_clean(out, value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_list(out: &mut Vec<u8>, name: &str, values: &[String]) {
    for v in values {
        push_field(out, name, v);
    }
}

/// No CR or LF from a value we were handed may end a header early.
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

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default()).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@localhost SIP/2.0\r\n\
        Via: SIP/2.0/WSS a.invalid;branch=z9hG4bKa\r\n\
        Route: <sip:proxy.localhost;lr>, <sip:next.example;lr>\r\n\
        Max-Forwards: 69\r\n\
        X-Odd :  keep me \r\n\
        Record-Route: <sip:earlier.example;lr>\r\n\
        Content-Type: application/sdp\r\n\
        l: 5\r\n\r\nv=0\r\n";

    #[test]
    fn forwarded_request_changes_only_what_16_6_says() {
        let m = parse(INVITE);
        let edit = RequestEdit {
            request_uri: Some("sip:bob@192.0.2.9:5060".into()),
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours".into(),
            max_forwards: 68,
            pop_routes: 1,
            record_route: vec!["<sip:ft1@127.0.0.1:5060;lr>".into(), "<sip:ft2@127.0.0.1:8080;transport=ws;lr>".into()],
            push_routes: vec![],
            consume_realm: None,
            drop_last_route: false,
            asserted_identity: None,
            cseq: None,
            from_user: None,
            to: None,
        };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert_eq!(
            out,
            "INVITE sip:bob@192.0.2.9:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours\r\n\
             Via: SIP/2.0/WSS a.invalid;branch=z9hG4bKa\r\n\
             Route: <sip:next.example;lr>\r\n\
             Max-Forwards: 68\r\n\
             X-Odd :  keep me \r\n\
             Record-Route: <sip:ft1@127.0.0.1:5060;lr>\r\n\
             Record-Route: <sip:ft2@127.0.0.1:8080;transport=ws;lr>\r\n\
             Record-Route: <sip:earlier.example;lr>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: 5\r\n\r\nv=0\r\n"
        );
        assert!(Message::parse(Bytes::from(out), &Limits::default()).is_ok());
    }

    #[test]
    fn missing_headers_are_added_and_paths_go_first() {
        let m = parse("OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nCall-ID: c\r\n\r\n");
        let edit = RequestEdit {
            via: "SIP/2.0/TCP us;branch=z9hG4bK2".into(),
            max_forwards: 70,
            push_routes: vec!["<sip:edge.example;lr>".into()],
            ..RequestEdit::default()
        };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert!(out.starts_with("OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP us;branch=z9hG4bK2\r\n"), "{out}");
        assert!(out.contains("Max-Forwards: 70\r\n") && out.contains("Route: <sip:edge.example;lr>\r\n"));
        assert!(out.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn our_realms_credentials_are_consumed_and_others_kept() {
        let m = parse(
            "INVITE sip:b@h SIP/2.0\r\nProxy-Authorization: Digest username=\"a\", realm=\"ours\", nonce=\"n\", \
             uri=\"sip:b@h\", response=\"r\"\r\nProxy-Authorization: Digest username=\"a\", realm=\"theirs\", \
             nonce=\"n\", uri=\"sip:b@h\", response=\"r\"\r\n\r\n",
        );
        let edit = RequestEdit {
            via: "v".into(),
            max_forwards: 9,
            consume_realm: Some("ours".into()),
            ..RequestEdit::default()
        };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert!(!out.contains("realm=\"ours\"") && out.contains("realm=\"theirs\""), "{out}");
    }

    #[test]
    fn strict_route_compatibility_drops_the_last_route() {
        let m = parse("BYE sip:wt@us;lr SIP/2.0\r\nRoute: <sip:r1;lr>, <sip:r2;lr>\r\nRoute: <sip:target@h>\r\n\r\n");
        let edit = RequestEdit {
            request_uri: Some("sip:target@h".into()),
            via: "v".into(),
            max_forwards: 9,
            pop_routes: 1,
            drop_last_route: true,
            ..RequestEdit::default()
        };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert!(out.starts_with("BYE sip:target@h SIP/2.0\r\n"), "{out}");
        assert!(
            out.contains("Route: <sip:r2;lr>\r\n") && !out.contains("r1") && !out.contains("<sip:target@h>"),
            "{out}"
        );
    }

    #[test]
    fn asserted_identity_replaces_what_the_caller_claimed() {
        let m = parse("INVITE sip:b@h SIP/2.0\r\nP-Asserted-Identity: <sip:+19999@spoofed>\r\nCall-ID: c\r\n\r\n");
        let edit = RequestEdit {
            via: "v".into(),
            max_forwards: 9,
            asserted_identity: Some("<sip:+442079460000@carrier.example>".into()),
            ..RequestEdit::default()
        };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert!(
            !out.contains("spoofed") && out.contains("P-Asserted-Identity: <sip:+442079460000@carrier.example>\r\n"),
            "{out}"
        );
        let kept =
            String::from_utf8(request(&m, &RequestEdit { via: "v".into(), max_forwards: 9, ..RequestEdit::default() }))
                .unwrap();
        assert!(kept.contains("spoofed"), "no policy, no change");
    }

    #[test]
    fn popping_routes_spans_fields() {
        let m = parse("BYE sip:a@h SIP/2.0\r\nRoute: <sip:r1;lr>\r\nRoute: <sip:r2;lr>, <sip:r3;lr>\r\n\r\n");
        let edit = RequestEdit { via: "v".into(), max_forwards: 9, pop_routes: 2, ..RequestEdit::default() };
        let out = String::from_utf8(request(&m, &edit)).unwrap();
        assert!(out.contains("Route: <sip:r3;lr>\r\n") && !out.contains("r1") && !out.contains("r2"), "{out}");
    }

    #[test]
    fn cancel_copies_what_9_1_lists() {
        let m = parse(
            "INVITE sip:b@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP us;branch=z9hG4bKo\r\nVia: SIP/2.0/WS a.invalid\r\n\
             Route: <sip:r;lr>\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0",
        );
        let out = String::from_utf8(cancel(&m, None)).unwrap();
        assert_eq!(
            out,
            "CANCEL sip:b@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP us;branch=z9hG4bKo\r\nRoute: <sip:r;lr>\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 7 CANCEL\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_response_loses_only_our_via() {
        let m = parse(
            "SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP us;branch=z9hG4bKo, SIP/2.0/WS a.invalid;branch=z9hG4bKa\r\n\
             To: <sip:b@h>;tag=1\r\nContent-Length: 0\r\n\r\n",
        );
        let out = String::from_utf8(response(&m)).unwrap();
        assert_eq!(
            out,
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bKa\r\nTo: <sip:b@h>;tag=1\r\nContent-Length: 0\r\n\r\n"
        );
        let m = parse(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP us;branch=z9hG4bKo\r\nVia: SIP/2.0/UDP up;branch=z9hG4bKp\r\n\r\n",
        );
        let out = String::from_utf8(response(&m)).unwrap();
        assert_eq!(out, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP up;branch=z9hG4bKp\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn from_user_replaces_only_the_user_part() {
        assert_eq!(
            with_user(b"\"Alice\" <sip:alice@localhost;transport=ws>;tag=a1", "+442079460000").as_deref(),
            Some("\"Alice\" <sip:+442079460000@localhost;transport=ws>;tag=a1")
        );
        assert_eq!(with_user(b"sip:alice@h;tag=x", "+1").as_deref(), Some("<sip:+1@h>;tag=x"));
        assert_eq!(with_user(b"<sip:h.example>;tag=x", "+1").as_deref(), Some("<sip:+1@h.example>;tag=x"));
        assert_eq!(with_user(b"<tel:+123>;tag=x", "+1"), None, "not a SIP URI: left alone");
    }
}

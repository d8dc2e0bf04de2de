//! RFC 4475, "SIP Torture Test Messages": every message of §3 as a fixture in
//! `tests/fixtures/rfc4475/<name>.dat` (exact octets: CRLF line ends, the RFC's `<hex>`
//! octets spliced in, `<allOneLine>` lines joined), and one test per message asserting
//! what the RFC says an element does with it, as far as this stage of webtrunk decides.
//!
//! - §3.1.1 valid messages: they parse, the tortuous parts are read right, and the engine
//!   does not refuse them as malformed. Until the proxy exists the engine answers requests
//!   it would forward with 501; the tests pin that status so they fail loudly (and get
//!   updated) when routing lands, while the lasting assertion is "not 400".
//! - §3.1.2 invalid messages: the engine answers 400 (505 for a bad version), or does what
//!   the RFC allows instead, said in a comment where that is the case.
//! - §3.2 to §3.4: the status the RFC names where the engine already decides it; where a
//!   later layer decides (registrar, UAS, SDP), the message parses and the comment says who.
//!
//! The engine is fed as over UDP from 192.0.2.1:5060; messages whose Via names a stream
//! transport are also (or only) fed over a TCP/TLS connection.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use webtrunk::clock::{self, Entropy};
use webtrunk::engine::{Engine, EngineConfig, Input};
use webtrunk::message::framing::{self, Frame, FrameError};
use webtrunk::message::{Header, HeaderName, Host, Limits, Message, Method, NameAddr, ParseError, Uri, Via};
use webtrunk::transport::{Destination, FlowId, Source, TransportKind};

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rfc4475");

/// Every fixture that has a test below; `every_fixture_has_a_test` keeps this honest.
const COVERED: &[&str] = &[
    // §3.1.1 valid
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    // §3.1.2 invalid
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
    // §3.2 transaction layer
    "badbranch",
    // §3.3 application layer
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "mcl01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    // §3.4 backward compatibility
    "inv2543",
];

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn raw(name: &str) -> Bytes {
    let path = format!("{FIXTURE_DIR}/{name}.dat");
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn parse(name: &str) -> Message {
    Message::parse(raw(name), &Limits::default()).unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

fn parse_error(name: &str) -> ParseError {
    match Message::parse(raw(name), &Limits::default()) {
        Ok(m) => panic!("{name} must not parse, got {m:?}"),
        Err(e) => e,
    }
}

fn socket(addr: &str) -> SocketAddr {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn udp() -> Source {
    Source { kind: TransportKind::Udp, local: socket("127.0.0.1:5060"), remote: socket("192.0.2.1:5060"), flow: None }
}

fn stream(kind: TransportKind) -> Source {
    Source { kind, flow: Some(FlowId(1)), ..udp() }
}

fn tcp() -> Source {
    stream(TransportKind::Tcp)
}

/// The engine's reply, parsed back.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: Vec<u8>,
    text: String,
    destination: Destination,
    message: Message,
}

impl Answer {
    fn header(&self, name: HeaderName) -> Option<Vec<u8>> {
        self.message.first_value(name).map(Cow::into_owned)
    }
}

fn engine() -> Engine {
    let wall = webtrunk::engine::WallClock { at: clock::now(), unix: std::time::Duration::from_secs(1_800_000_000) };
    // The RFC's messages are addressed to example.com: serve it, so REGISTERs reach the
    // registrar instead of stopping at 403 Domain Not Served.
    let mut config = EngineConfig::default();
    config.domains.push("example.com".into());
    config.registrar.domains.push("example.com".into());
    Engine::new(config, Entropy::seeded(4475), webtrunk::auth::Users::default(), wall)
}

/// Feeds one fixture to a fresh engine and returns its answer; at most one is allowed.
fn answer(name: &str, source: Source) -> Option<Answer> {
    let mut engine = engine();
    if let Some(flow) = source.flow {
        let opened = Input::FlowOpened { flow, kind: source.kind, local: source.local, remote: source.remote };
        engine.handle_input(clock::now(), opened);
    }
    engine.handle_input(clock::now(), Input::Received { source, bytes: raw(name) });
    // An INVITE is answered 100 Trying first (§16.2); the answer that counts comes after.
    let mut transmit = engine.poll_transmit()?;
    if transmit.bytes.starts_with(b"SIP/2.0 100 ") {
        transmit = engine.poll_transmit()?;
    }
    assert!(engine.poll_transmit().is_none(), "{name}: more than one answer");
    let text = String::from_utf8_lossy(&transmit.bytes).into_owned();
    let message = Message::parse(transmit.bytes.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: our own answer does not parse ({e}):\n{text}"));
    let status = message.status().unwrap_or_else(|| panic!("{name}: answer is not a response:\n{text}"));
    let reason = message.reason().unwrap_or_default().to_vec();
    Some(Answer { status, reason, text, destination: transmit.destination, message })
}

fn must_answer(name: &str, source: Source) -> Answer {
    answer(name, source).unwrap_or_else(|| panic!("{name}: the engine sent nothing"))
}

/// §3.1.1 / §3.3: a well-formed request must not be refused as malformed; it reaches the
/// routing decisions. `expected` is the answer of those decisions for this fixture (the
/// test engine has no users, so a request for a user of ours is challenged with 407, one
/// for a foreign domain is not relayed, 403).
fn assert_accepted(name: &str, source: Source, expected: u16) -> Answer {
    let a = must_answer(name, source);
    assert!(
        !matches!(a.status, 400 | 416 | 505 | 513),
        "{name} is well formed (RFC 4475) but was refused:\n{}",
        a.text
    );
    assert_eq!(a.status, expected, "{name}: the routing decision changed:\n{}", a.text);
    a
}

/// An invalid request answered with `status` (400, 505, ...).
fn assert_refused(name: &str, source: Source, status: u16) -> Answer {
    let a = must_answer(name, source);
    assert_eq!(a.status, status, "{name} must be refused with {status}:\n{}", a.text);
    a
}

/// A valid REGISTER without credentials: 401 with our challenges, never 400.
fn assert_challenged(name: &str, source: Source) -> Answer {
    let a = assert_accepted(name, source, 401);
    assert!(a.text.contains("WWW-Authenticate: Digest "), "{name}: 401 without a challenge:\n{}", a.text);
    a
}

fn assert_silent(name: &str, source: Source) {
    if let Some(a) = answer(name, source) {
        panic!("{name} must be dropped without an answer, got:\n{}", a.text);
    }
}

/// The first header whose name is spelled `name` (case-insensitively), for names the
/// parser does not know.
fn raw_header<'m>(m: &'m Message, name: &str) -> &'m Header {
    m.headers()
        .iter()
        .find(|h| m.raw_name(h).eq_ignore_ascii_case(name.as_bytes()))
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn value(m: &Message, name: HeaderName) -> Vec<u8> {
    m.first_value(name).unwrap_or_else(|| panic!("no {name:?} header")).into_owned()
}

fn name_addr(value: &[u8]) -> NameAddr<'_> {
    NameAddr::parse(value).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(value)))
}

fn sip_uri(text: &[u8]) -> webtrunk::message::SipUri {
    match Uri::parse(text) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("{}: {other:?}", String::from_utf8_lossy(text)),
    }
}

fn content_length(m: &Message) -> usize {
    let v = value(m, HeaderName::ContentLength);
    let v = text(&v);
    v.trim().parse().unwrap_or_else(|e| panic!("Content-Length {v:?}: {e}"))
}

fn vias(m: &Message) -> Vec<Vec<u8>> {
    m.list(HeaderName::Via).into_iter().map(Cow::into_owned).collect()
}

/// Bytes as text, for readable assertion failures.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn name(host: &str) -> Host {
    Host::Name(host.into())
}

fn ip(addr: &str) -> Host {
    Host::Ip(addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")))
}

// ---------------------------------------------------------------------------------------
// §3.1.1 Valid messages
// ---------------------------------------------------------------------------------------

/// §3.1.1.1: "All elements should treat this as a well-formed request."
#[test]
fn wsinv_short_tortuous_invite_parses_with_unfolded_values() {
    let bytes = raw("wsinv");
    let m = parse("wsinv");
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.request_uri(), Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..]));
    let ruri = sip_uri(m.request_uri().unwrap());
    assert_eq!((ruri.user.as_deref(), &ruri.host), (Some("vivekg"), &name("chair-dnrc.example.com")));
    assert_eq!(ruri.param("unknownparam"), Some(None), "unknown Request-URI parameter without value");

    // `TO :` (space before the colon, upper case, value on a continuation line).
    let to_header = m.header(HeaderName::To).expect("the `TO :` header is found");
    assert_eq!(m.raw_name(to_header), b"TO");
    let to_value = m.value(to_header).into_owned();
    assert_eq!(text(&to_value), "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n");
    let to = name_addr(&to_value);
    assert_eq!(to.uri, b"sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag(), Some(&b"1918181833n"[..]), "LWS around `;` and `=` of a parameter");

    // `from   :` with escaped quotes and backslashes in the display name, folded params.
    let from_value = value(&m, HeaderName::From);
    let from = name_addr(&from_value);
    assert_eq!(from.display, Some(&br#""J Rosenberg \\\"""#[..]));
    assert_eq!(from.uri, b"sip:jdrosen@example.com");
    assert_eq!(from.tag(), Some(&b"98asjd8"[..]));

    // Integer fields with leading zeros; CSeq folded between number and method.
    assert_eq!(m.max_forwards(), Some(Ok(68)));
    assert_eq!(m.cseq(), Some((9, Method::Invite)));
    assert_eq!(m.call_id().as_deref(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));

    // Three Via values: one `Via` field and one compact `v` field holding two, all folded.
    let via_names: Vec<&[u8]> = m.headers_named(HeaderName::Via).map(|h| m.raw_name(h)).collect();
    assert_eq!(via_names, [&b"Via"[..], &b"v"[..]], "long and compact forms are the same header");
    let vias = vias(&m);
    assert_eq!(vias.len(), 3);
    let expect = [
        (&b"UDP"[..], ip("192.0.2.2"), &b"390skdjuw"[..]),
        (b"TCP", name("spindle.example.com"), b"z9hG4bK9ikj8"),
        (b"UDP", ip("192.168.255.111"), b"z9hG4bK30239"),
    ];
    for (raw_via, (transport, host, branch)) in vias.iter().zip(expect) {
        let via = Via::parse(raw_via).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(raw_via)));
        assert_eq!((via.transport, via.host(), via.port, via.branch()), (transport, &host, None, Some(branch)));
    }

    // `s :` is an empty Subject.
    let subject = m.header(HeaderName::Subject).expect("compact `s` is Subject");
    assert_eq!(m.raw_name(subject), b"s");
    assert_eq!(&*m.value(subject), b"");

    // Unknown headers: value unfolded for reading, bytes kept for forwarding.
    let newfangled = raw_header(&m, "NewFangledHeader");
    assert_eq!(newfangled.name, HeaderName::Other);
    assert_eq!(&*m.value(newfangled), b"newfangled value continued newfangled value");
    assert_eq!(m.raw_line(newfangled), b"NewFangledHeader:   newfangled value\r\n continued newfangled value");
    let unusual = raw_header(&m, "UnknownHeaderWithUnusualValue");
    assert_eq!(&*m.value(unusual), b";;,,;;,;", "kept as an opaque value, not parsed as params");
    assert!(contains(m.as_bytes(), b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"));

    // Route folded onto its own line; a uri-parameter without a value.
    let route = value(&m, HeaderName::Route);
    assert_eq!(text(&route), "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>");
    let route_uri = sip_uri(name_addr(&route).uri);
    assert_eq!(route_uri.param("lr"), Some(None));
    assert_eq!(route_uri.param("unknownwith"), Some(Some("value")));
    assert_eq!(route_uri.param("unknown-no-value"), Some(None));

    // `m:` Contact: quoted string with escaped quotes, params with LWS and folds.
    let contacts = m.list(HeaderName::Contact);
    assert_eq!(contacts.len(), 1);
    let contact = name_addr(&contacts[0]);
    assert_eq!(contact.display, Some(&br#""Quoted string \"\"""#[..]));
    assert_eq!(contact.uri, b"sip:jdrosen@example.com");
    assert_eq!(contact.param("newparam"), Some(Some(Cow::Borrowed(&b"newvalue"[..]))));
    assert_eq!(contact.param("secondparam"), Some(None), "a header parameter with no value");
    assert_eq!(contact.param("q"), Some(Some(Cow::Borrowed(&b"0.33"[..]))));

    assert_eq!(value(&m, HeaderName::ContentType), b"application/sdp");
    assert_eq!(content_length(&m), 150);
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n") && m.body().ends_with(b"a=rtpmap:31 LPC\r\n"));
    assert_eq!(m.as_bytes(), &bytes[..], "everything is kept byte for byte");

    let a = assert_accepted("wsinv", udp(), 403);
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    // RFC 3261 §8.2.6.2: the response carries the request's To, tag included.
    let answered_to = a.header(HeaderName::To).unwrap();
    assert_eq!(name_addr(&answered_to).tag().map(text), Some("1918181833n".into()), "{}", a.text);
}

/// §3.1.1.2: unusual but legal characters everywhere; a proxy forwards it (or 404s an
/// unknown URI), an endpoint answers 501 with Allow. Not a parse error either way.
#[test]
fn intmeth_wide_range_of_valid_characters_is_well_formed() {
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    let bytes = raw("intmeth");
    let m = parse("intmeth");
    assert_eq!(m.method(), Some(&Method::Extension(method.into())), "an extension method, % is not an escape");

    let ruri = sip_uri(m.request_uri().unwrap());
    assert_eq!(ruri.user.as_deref(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
    assert_eq!(ruri.host, name("example.com"));
    assert_eq!(ruri.headers, None, "the `?` is inside the userinfo, not a headers part");
    assert_eq!(ruri.params, "");

    let via = vias(&m);
    assert_eq!(Via::parse(&via[0]).unwrap().branch(), Some(&b"z9hG4bK-.!%66*_+`'~"[..]));

    // To: quoted-pairs of BEL, NUL and DEL in the display name.
    let to_value = value(&m, HeaderName::To);
    let to = name_addr(&to_value);
    assert_eq!(to.display, Some(&b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\""[..]));
    assert_eq!(to.uri, b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com");

    // From: a multi-token display name, an odd parameter name with a UTF-8 quoted value.
    let from_value = value(&m, HeaderName::From);
    let from = name_addr(&from_value);
    assert_eq!(from.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
    assert_eq!(from.tag(), Some(&b"_token~1'+`*%!-."[..]));
    let odd = from.param("fromParam''~+*_!.-%").expect("parameter with non-alphanumeric token characters");
    assert_eq!(odd.as_deref(), Some("работающий".as_bytes()));

    assert_eq!(m.call_id().as_deref(), Some(&br#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#[..]));
    assert_eq!(m.cseq(), Some((139_122_385, Method::Extension(method.into()))));
    assert_eq!(m.max_forwards(), Some(Ok(255)));

    let ext = raw_header(&m, "extensionHeader-!.%*+_`'~");
    assert_eq!(ext.name, HeaderName::Other);
    assert_eq!(&*m.value(ext), b"\xEF\xBB\xBF\xE5\xA4\xA7\xE5\x81\x9C\xE9\x9B\xBB", "UTF8-NONASCII value kept");

    assert!(m.body().is_empty());
    assert_eq!(m.as_bytes(), &bytes[..]);

    // The Via is TCP; answer over a connection and over UDP alike.
    assert_accepted("intmeth", tcp(), 407);
    assert_accepted("intmeth", udp(), 407);
}

/// §3.1.1.3: "A parser must accept this as a well-formed message." % HEX HEX stays as
/// written in the parsed parts (unescaping is for comparison, RFC 3261 §19.1.4, and never
/// recursive: `v%61lue%25%34%31` means `value%41`, not `valueA`).
#[test]
fn esc01_valid_percent_escapes_are_accepted_and_kept() {
    let m = parse("esc01");
    let ruri = sip_uri(m.request_uri().unwrap());
    assert_eq!(ruri.user.as_deref(), Some("sips%3Auser%40example.com"), "an escaped @ does not end the user part");
    assert_eq!(ruri.host, name("example.net"));

    let to_value = value(&m, HeaderName::To);
    let to = sip_uri(name_addr(&to_value).uri);
    assert_eq!((to.user.as_deref(), &to.host), (Some("%75se%72"), &name("example.com")));
    let from_value = value(&m, HeaderName::From);
    let from = name_addr(&from_value);
    assert_eq!(sip_uri(from.uri).user.as_deref(), Some("I%20have%20spaces"));
    assert_eq!(from.tag(), Some(&b"938"[..]));

    assert_eq!(m.call_id().as_deref(), Some(&b"esc01.239409asdfakjkn23onasd0-3234"[..]), "compact `i`");
    assert_eq!(value(&m, HeaderName::ContentType), b"application/sdp", "compact `C`, upper case");

    let contact_value = value(&m, HeaderName::Contact);
    assert_eq!(text(&contact_value), "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>");
    let contact = sip_uri(name_addr(&contact_value).uri);
    assert_eq!(contact.user.as_deref(), Some("cal%6Cer"));
    assert_eq!(contact.param("%6C%72"), Some(None));
    assert_eq!(contact.param("n%61me"), Some(Some("v%61lue%25%34%31")));

    assert_eq!(m.body().len(), content_length(&m));
    assert_eq!(content_length(&m), 150);
    assert_accepted("esc01", udp(), 403);
}

/// §3.1.1.4: "The message is well formed - parsers must accept this message." The %00
/// escapes are text; the two Contacts are distinct (the registrar layer must not shorten
/// the AOR or the contacts at the escaped null).
#[test]
fn escnull_escaped_nulls_in_uris_are_well_formed() {
    let bytes = raw("escnull");
    assert!(!bytes.contains(&0), "the nulls are %00 escapes, not octets");
    let m = parse("escnull");
    assert_eq!(m.method(), Some(&Method::Register));
    let to_value = value(&m, HeaderName::To);
    assert_eq!(sip_uri(name_addr(&to_value).uri).user.as_deref(), Some("null-%00-null"));
    let from_value = value(&m, HeaderName::From);
    assert_eq!(sip_uri(name_addr(&from_value).uri).user.as_deref(), Some("null-%00-null"));
    assert_eq!(name_addr(&from_value).tag(), Some(&b"839923423"[..]));

    let contacts: Vec<Option<String>> =
        m.list(HeaderName::Contact).iter().map(|c| sip_uri(name_addr(c).uri).user.map(String::from)).collect();
    assert_eq!(contacts, [Some("%00".to_string()), Some("%00%00".to_string())]);

    let cl = m.header(HeaderName::ContentLength).expect("`L:0` is Content-Length");
    assert_eq!(m.raw_name(cl), b"L");
    assert_eq!(content_length(&m), 0);
    // REGISTER is the registrar's; until it exists, 501 — never 400.
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("escnull", udp());
}

/// §3.1.1.5: "A parser should accept this message as well formed." % is no escape in a
/// method, a display name, a branch or a header name; there are two Contact values.
#[test]
fn esc02_percent_is_not_an_escape_outside_uris() {
    let m = parse("esc02");
    let method = Method::Extension("RE%47IST%45R".into());
    assert_eq!(m.method(), Some(&method), "NOT equivalent to REGISTER");
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(m.cseq(), Some((29344, method)));

    let to_value = value(&m, HeaderName::To);
    assert_eq!(name_addr(&to_value).display, Some(&br#""%Z%45""#[..]));
    let from_value = value(&m, HeaderName::From);
    assert_eq!(name_addr(&from_value).display, Some(&br#""%Z%45""#[..]));
    assert_eq!(Via::parse(&vias(&m)[0]).unwrap().branch(), Some(&b"z9hG4bK209%fzsnel234"[..]));

    let contacts: Vec<Vec<u8>> = m.list(HeaderName::Contact).into_iter().map(Cow::into_owned).collect();
    assert_eq!(contacts, [b"<sip:alias1@host1.example.com>".to_vec(), b"<sip:alias3@host3.example.com>".to_vec()]);
    let fake = raw_header(&m, "C%6Fntact");
    assert_eq!(fake.name, HeaderName::Other, "C%6Fntact is an extension header, not Contact");
    assert_eq!(&*m.value(fake), b"<sip:alias2@host2.example.com>");

    // Unknown method: a proxy forwards or rejects by Request-URI, an endpoint says 501.
    assert_accepted("esc02", tcp(), 403);
}

/// §3.1.1.6: no LWS between a display-name token and `<`; "Elements should accept this
/// request as well formed."
#[test]
fn lwsdisp_display_name_without_lws_before_angle_bracket_is_accepted() {
    let m = parse("lwsdisp");
    let from_value = value(&m, HeaderName::From);
    let from = name_addr(&from_value);
    assert_eq!(
        (from.display, from.uri, from.tag()),
        (Some(&b"caller"[..]), &b"sip:caller@example.com"[..], Some(&b"323"[..]))
    );
    assert_eq!(m.cseq(), Some((60, Method::Options)));
    assert_accepted("lwsdisp", udp(), 407);
}

/// §3.1.1.7: long values and many header fields; well formed.
#[test]
fn longreq_long_values_and_34_vias_are_well_formed() {
    let m = parse("longreq");
    assert_eq!(m.headers().len(), 43);

    let to_value = value(&m, HeaderName::To);
    let to = name_addr(&to_value);
    assert_eq!(to.display.unwrap().len(), "\"I have a user name of  proportion\"".len() + 70);
    let to_uri = sip_uri(to.uri);
    assert_eq!((to_uri.host.clone(), to_uri.port), (name("example.com"), Some(6000)));
    assert_eq!(to_uri.param("unknownparam1"), Some(Some(format!("very{}value", "long".repeat(20)).as_str())));
    assert_eq!(to_uri.param(&format!("longparam{}", "name".repeat(25))), Some(Some("shortvalue")));
    assert_eq!(to_uri.param(&format!("very{}ParameterNameWithNoValue", "long".repeat(25))), Some(None));

    let from_header = m.header(HeaderName::From).expect("compact `F`");
    assert_eq!(m.raw_name(from_header), b"F");
    let from_value = value(&m, HeaderName::From);
    let from = name_addr(&from_value);
    assert_eq!(sip_uri(from.uri).user.unwrap(), "amazinglylongcallername".repeat(5));
    let tag = from.tag().unwrap();
    assert_eq!(tag.len(), 155);
    assert!(tag.starts_with(b"129829829") && tag.ends_with(b"982424"));
    assert_eq!(
        from.param(&format!("unknownheaderparam{}", "name".repeat(20))).unwrap().as_deref(),
        Some(format!("unknowheaderparam{}", "value".repeat(15)).as_bytes())
    );
    assert_eq!(from.param(&format!("unknownValueless{}", "paramname".repeat(10))), Some(None));

    let call_id = format!("longreq.one{}longcallid", "really".repeat(20));
    assert_eq!(m.call_id().as_deref(), Some(call_id.as_bytes()));
    assert_eq!(m.cseq(), Some((3_882_340, Method::Invite)));

    let long_name = format!("Unknown-{}-Name", "Long".repeat(20));
    let unknown = raw_header(&m, &long_name);
    let ll = "long".repeat(20);
    let expected = format!("unknown-{ll}-value; unknown-{ll}-parameter-name = unknown-{ll}-parameter-value");
    assert_eq!(&*m.value(unknown), expected.as_bytes());

    // 34 Via fields in every spelling of the name, with and without space before `:`.
    let vias = vias(&m);
    assert_eq!(vias.len(), 34);
    for (i, v) in vias.iter().take(33).enumerate() {
        let via = Via::parse(v).unwrap();
        assert_eq!((via.transport, via.host()), (&b"TCP"[..], &name(&format!("sip{}.example.com", 33 - i))));
        assert_eq!(via.branch(), None);
    }
    let last = Via::parse(&vias[33]).unwrap();
    assert_eq!(*last.host(), name("host.example.com"));
    assert_eq!(last.received(), Some("192.0.2.5".parse().unwrap()));
    let branch = format!("very{}branchvalue", "long".repeat(50));
    assert_eq!(last.branch(), Some(branch.as_bytes()), "a branch without the magic cookie");

    let contact_value = value(&m, HeaderName::Contact);
    assert_eq!(sip_uri(name_addr(&contact_value).uri).host, name("host5.example.net"));
    assert_eq!(m.max_forwards(), Some(Ok(70)));
    assert_eq!(content_length(&m), 150);
    assert_eq!(m.body().len(), 150);

    assert_accepted("longreq", tcp(), 407);
}

/// §3.1.1.8: one datagram, a REGISTER with Content-Length 0, then octets that look like an
/// INVITE: "they are just spurious noise that must be ignored ... the INVITE octets would
/// not appear in the forwarded request."
#[test]
fn dblreq_octets_after_the_body_are_ignored() {
    let bytes = raw("dblreq");
    let m = parse("dblreq");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(content_length(&m), 0);
    assert!(m.body().is_empty(), "the body is exactly Content-Length octets");
    assert!(m.as_bytes().len() < bytes.len());
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    assert!(!contains(m.as_bytes(), b"INVITE"), "the trailing INVITE is not part of the message");
    assert_eq!(&bytes[..m.as_bytes().len()], m.as_bytes());
    assert!(bytes[m.as_bytes().len()..].starts_with(b"INVITE sip:joe@example.com SIP/2.0\r\n"));
    assert_eq!(m.headers().len(), 8);
    assert_eq!(m.call_id().as_deref(), Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..]), "compact `I`");
    assert_eq!(m.headers_named(HeaderName::CallId).count(), 1);
    assert_eq!(m.cseq(), Some((8, Method::Register)));

    // Handled as the REGISTER alone: one answer, for the REGISTER's transaction.
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    let a = assert_challenged("dblreq", udp());
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..]));
    assert_eq!(a.header(HeaderName::CSeq).as_deref(), Some(&b"8 REGISTER"[..]));
}

/// §3.1.1.9: "The Request-URI will parse so that the user part is
/// `user;par=u@example.net`" (escaped here as written).
#[test]
fn semiuri_semicolon_in_user_part_is_part_of_the_user() {
    let m = parse("semiuri");
    let ruri = sip_uri(m.request_uri().unwrap());
    assert_eq!(ruri.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(ruri.host, name("example.com"));
    assert_eq!(ruri.params, "", "`;par=` belongs to the user part, it is no uri-parameter");

    let accept: Vec<Vec<u8>> = m.list(HeaderName::Accept).into_iter().map(Cow::into_owned).collect();
    let expected: Vec<Vec<u8>> = [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert_eq!(accept, expected, "a folded comma list");
    assert_accepted("semiuri", udp(), 407);
}

/// §3.1.1.10: "Parsers must accept this message as well formed", all transports plus an
/// unknown one.
#[test]
fn transports_all_known_and_an_unknown_via_transport_are_accepted() {
    let m = parse("transports");
    let parsed: Vec<(Vec<u8>, Host)> = vias(&m)
        .iter()
        .map(|v| {
            let via = Via::parse(v).unwrap();
            (via.transport.to_vec(), via.host().clone())
        })
        .collect();
    let expected: Vec<(Vec<u8>, Host)> = ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_bytes().to_vec(), name(&format!("t{}.example.com", i + 1))))
        .collect();
    assert_eq!(parsed, expected);
    assert_eq!(m.call_id().as_deref(), Some(&b"transports.kijh4akdnaqjkwendsasfdj"[..]));
    assert_accepted("transports", udp(), 407);
}

/// §3.1.1.11: a multipart body whose second part is binary with 0x00 octets; "Receivers
/// must take care to frame the received message properly."
#[test]
fn mpart01_binary_multipart_body_is_framed_by_content_length() {
    let bytes = raw("mpart01");
    let m = parse("mpart01");
    assert_eq!(m.method(), Some(&Method::Message));
    assert_eq!(content_length(&m), 553);
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0), "the binary part holds NUL octets");
    assert!(m.body().starts_with(b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n"));
    assert!(m.body().ends_with(b"\x99\xD0\x05\r\n--7a9cbec02ceef655--\r\n"));
    assert_eq!(m.as_bytes(), &bytes[..]);
    assert_eq!(value(&m, HeaderName::ContentType), b"multipart/mixed;boundary=7a9cbec02ceef655");

    let vias = vias(&m);
    let via = Via::parse(&vias[0]).unwrap();
    assert_eq!((via.host().clone(), via.port, via.rport()), (ip("127.0.0.1"), Some(5070), Some(None)));
    assert!(raw_header(&m, "Identity").name == HeaderName::Other);

    // Over a stream, framing takes exactly the 553 body octets too.
    assert_eq!(framing::frame(&bytes, 64 * 1024), Ok(Frame::Message(bytes.len())));

    let a = assert_accepted("mpart01", udp(), 403);
    // rport: the answer goes to the packet's source (RFC 3581).
    assert_eq!(a.destination, Destination::Datagram { local: udp().local, remote: udp().remote });
}

/// §3.1.1.12: a 200 whose reason phrase has UTF-8; "A parser must accept this message."
/// A response with no transaction is then dropped.
#[test]
fn unreason_unusual_reason_phrase_is_accepted() {
    let m = parse("unreason");
    assert_eq!(m.status(), Some(200));
    assert_eq!(m.reason(), Some("= 2**3 * 5**2 но сто девяносто девять - простое".as_bytes()));
    assert_eq!(m.cseq(), Some((35, Method::Invite)));
    assert_eq!(m.body().len(), 154);
    assert_eq!(content_length(&m), 154);
    assert_silent("unreason", udp());
}

/// §3.1.1.13: "This well-formed response contains no reason phrase. A parser must accept
/// this message."
#[test]
fn noreason_empty_reason_phrase_is_accepted() {
    let bytes = raw("noreason");
    assert!(bytes.starts_with(b"SIP/2.0 100 \r\n"), "the SP after the code is there");
    let m = parse("noreason");
    assert_eq!((m.status(), m.reason()), (Some(100), Some(&b""[..])));
    assert_eq!(m.call_id().as_deref(), Some(&b"noreason.asndj203insdf99223ndf"[..]));
    assert_silent("noreason", udp());
}

// ---------------------------------------------------------------------------------------
// §3.1.2 Invalid messages
// ---------------------------------------------------------------------------------------

/// §3.1.2.1: extra `;` and `,` with no parameters or values in Via and Contact; "This
/// message is syntactically invalid. An element receiving this request should respond
/// with a 400 Bad Request error."
#[test]
fn badinv01_extraneous_header_field_separators_get_400() {
    let m = parse("badinv01");
    assert_eq!(value(&m, HeaderName::Via), b"SIP/2.0/UDP 192.0.2.15;;,;,,");
    assert_eq!(value(&m, HeaderName::Contact), br#""Joe" <sip:joe@example.org>;;;;"#);
    assert_refused("badinv01", udp(), 400);
}

/// §3.1.2.2: Content-Length larger than the body. "When sent over UDP ... the receiving
/// element should respond with a 400 Bad Request error." Over a stream there is nothing to
/// do but wait for more data.
#[test]
fn clerr_content_length_larger_than_message_gets_400_over_udp() {
    assert_eq!(parse_error("clerr"), ParseError::BodyTooShort);
    let a = assert_refused("clerr", udp(), 400);
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"clerr.0ha0isndaksdjweiafasdk3"[..]));
    // TCP: the framer asks for more bytes instead of cutting a message.
    assert_eq!(framing::frame(&raw("clerr"), 64 * 1024), Err(FrameError::Incomplete));
}

/// §3.1.2.3: negative Content-Length. "An element receiving this message should respond
/// with an error"; over TCP "the framing error is not recoverable, and the connection
/// should be closed."
#[test]
fn ncl_negative_content_length_is_an_error() {
    assert_eq!(parse_error("ncl"), ParseError::ContentLength);
    let a = assert_refused("ncl", udp(), 400);
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"ncl.0ha0isndaksdj2193423r542w35"[..]));
    assert_eq!(framing::frame(&raw("ncl"), 64 * 1024), Err(FrameError::ContentLength), "close the stream");
}

/// §3.1.2.4: CSeq > 2**32-1, Max-Forwards > 255, huge Expires. "An element receiving this
/// request should respond with a 400 Bad Request due to the CSeq error."
#[test]
fn scalar02_overlarge_cseq_gets_400() {
    let m = parse("scalar02");
    assert_eq!(m.cseq(), None, "CSeq number out of range");
    assert_eq!(m.max_forwards(), Some(Err(())), "Max-Forwards 300 is out of range");
    let a = assert_refused("scalar02", tcp(), 400);
    assert_eq!(a.reason, b"Malformed CSeq Header");
    assert_refused("scalar02", udp(), 400);
}

/// §3.1.2.5: a response with out-of-range scalars. "An element receiving this response
/// will simply discard it."
#[test]
fn scalarlg_response_with_overlarge_scalars_is_discarded() {
    let m = parse("scalarlg");
    assert_eq!(m.status(), Some(503));
    assert_eq!(m.cseq(), None);
    assert_silent("scalarlg", tcp());
    assert_silent("scalarlg", udp());
}

/// §3.1.2.6: unterminated quote in the To display name. "An element receiving this
/// request should return a 400 Bad Request error."
#[test]
fn quotbal_unterminated_quoted_string_gets_400() {
    let m = parse("quotbal");
    assert!(NameAddr::parse(&value(&m, HeaderName::To)).is_err());
    let a = assert_refused("quotbal", udp(), 400);
    assert_eq!(a.reason, b"Malformed To Header");
}

/// §3.1.2.7: Request-URI inside `<>`. "It is reasonable always to reject a request with
/// this error with a 400 Bad Request."
#[test]
fn ltgtruri_request_uri_in_angle_brackets_gets_400() {
    let m = parse("ltgtruri");
    assert_eq!(m.request_uri(), Some(&b"<sip:user@example.com>"[..]));
    assert!(Uri::parse(m.request_uri().unwrap()).is_err());
    let a = assert_refused("ltgtruri", udp(), 400);
    assert_eq!(a.reason, b"Malformed Request-URI");
}

/// §3.1.2.8: LWS inside the Request-URI. "An element receiving this request should
/// respond with a 400 Bad Request."
#[test]
fn lwsruri_lws_in_request_uri_gets_400() {
    assert_eq!(parse_error("lwsruri"), ParseError::StartLine);
    let a = assert_refused("lwsruri", udp(), 400);
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423"[..]));
}

/// §3.1.2.9: several SP between Request-Line elements. "It is acceptable to reject this
/// request as malformed" (a liberal element may ignore them; we reject).
#[test]
fn lwsstart_multiple_sp_in_request_line_gets_400() {
    assert_eq!(parse_error("lwsstart"), ParseError::StartLine);
    assert_refused("lwsstart", udp(), 400);
}

/// §3.1.2.10: SP after the SIP-Version. "It is acceptable to reject this request as
/// malformed" (a liberal element may ignore them; we reject).
#[test]
fn trws_trailing_sp_after_sip_version_gets_400() {
    assert_eq!(parse_error("trws"), ParseError::StartLine);
    assert_refused("trws", tcp(), 400);
    assert_refused("trws", udp(), 400);
}

/// §3.1.2.11: escaped headers in a SIP Request-URI. "It is acceptable for an element to
/// reject this request with a 400 Bad Request."
#[test]
fn escruri_escaped_headers_in_request_uri_get_400() {
    let m = parse("escruri");
    assert_eq!(sip_uri(m.request_uri().unwrap()).headers.as_deref(), Some("Route=%3Csip:example.com%3E"));
    let a = assert_refused("escruri", udp(), 400);
    assert_eq!(a.reason, b"Malformed Request-URI");
}

/// §3.1.2.12: a non-GMT Date. "It is acceptable to reject this request as malformed
/// (though an element shouldn't do that unless the contents of the Date header field were
/// actually important to its processing)." A proxy does not use Date: not refused, and the
/// field is kept byte for byte for forwarding.
#[test]
fn baddate_invalid_time_zone_is_ignored_by_a_proxy() {
    let m = parse("baddate");
    assert_eq!(m.raw_line(raw_header(&m, "Date")), b"Date: Fri, 01 Jan 2010 16:00:00 EST");
    assert_accepted("baddate", udp(), 407);
}

/// §3.1.2.13: Contact with an escaped header in addr-spec form. "It is reasonable ... to
/// respond with a 400 Bad Request"; a liberal element may infer the brackets. We answer
/// 400; the parser shows what the registrar needs (no brackets, a headers part).
#[test]
fn regbadct_contact_uri_with_headers_outside_brackets_gets_400() {
    let m = parse("regbadct");
    let contact_value = value(&m, HeaderName::Contact);
    let contact = name_addr(&contact_value);
    assert_eq!(contact.display, None);
    assert!(!contact_value.starts_with(b"<"), "addr-spec form");
    assert_eq!(sip_uri(contact.uri).headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
    // The registrar refuses it before asking for credentials.
    let a = assert_refused("regbadct", udp(), 400);
    assert_eq!(a.reason, b"Contact URI With Headers Must Be In Angle Brackets");
}

/// §3.1.2.14: spaces inside `< >` of the To addr-spec. "Parsers receiving this request
/// must not break. It is reasonable to reject this request with a 400 Bad Request
/// response. Elements attempting to be liberal may ignore the spaces." We are liberal.
#[test]
fn badaspec_spaces_within_addr_spec_do_not_break_the_parser() {
    let m = parse("badaspec");
    let to_value = value(&m, HeaderName::To);
    let to = name_addr(&to_value);
    assert_eq!(to.uri, b"sip:t.watson@example.org", "the spaces are ignored");
    assert_eq!(to.display, Some(&br#""Watson, Thomas""#[..]));
    assert_accepted("badaspec", udp(), 403);
}

/// §3.1.2.15: unquoted display names with non-token characters. "It is reasonable always
/// to reject this kind of error with a 400 Bad Request response."
#[test]
fn baddn_non_token_characters_in_display_name_get_400() {
    let m = parse("baddn");
    assert!(NameAddr::parse(&value(&m, HeaderName::From)).is_err());
    assert!(NameAddr::parse(&value(&m, HeaderName::To)).is_err());
    let a = assert_refused("baddn", udp(), 400);
    assert_eq!(a.reason, b"Malformed From Header");
}

/// §3.1.2.16: SIP/7.0. "The element should respond to the request with a 505 Version Not
/// Supported error."
#[test]
fn badvers_unknown_protocol_version_gets_505() {
    let m = parse("badvers");
    assert_eq!(m.version(), (7, 0));
    assert_refused("badvers", udp(), 505);
}

/// §3.1.2.17: OPTIONS with CSeq INVITE. "Any element receiving this request will respond
/// with a 400 Bad Request."
#[test]
fn mismatch01_start_line_and_cseq_method_mismatch_gets_400() {
    let a = assert_refused("mismatch01", udp(), 400);
    assert_eq!(a.reason, b"CSeq Method Does Not Match Request");
}

/// §3.1.2.18: unknown method with a mismatching CSeq method. "Any element receiving this
/// response should respond with a 501 Not Implemented. A 400 Bad Request is also
/// acceptable, but choosing a 501 (particularly at proxies) has better future-proof
/// characteristics." We answer 400 today (the CSeq check runs first).
#[test]
fn mismatch02_unknown_method_with_cseq_mismatch_is_not_judged_by_a_proxy() {
    let m = parse("mismatch02");
    assert_eq!(m.method(), Some(&Method::Extension("NEWMETHOD".into())));
    assert_eq!(m.body().len(), 138);
    // RFC 4475 allows 501 or 400 and prefers not judging an extension method at proxies
    // ("better future-proofing"): it is routed like any request, so an unauthenticated one
    // is challenged.
    let a = must_answer("mismatch02", udp());
    assert_eq!(a.status, 407, "{}", a.text);
}

/// §3.1.2.19: a response code larger than 699. "An element receiving this response should
/// simply drop it."
#[test]
fn bigcode_overlarge_response_code_is_dropped() {
    assert_eq!(parse_error("bigcode"), ParseError::StartLine);
    assert_silent("bigcode", udp());
}

// ---------------------------------------------------------------------------------------
// §3.2 Transaction layer semantics
// ---------------------------------------------------------------------------------------

/// §3.2.1: `branch=z9hG4bK` with no identifier after the cookie. "A parser must not break
/// when receiving this message." The element "could reject the request with a 400 ... or
/// it could fall back to the RFC 2543-style transaction identifier." We parse it and do not
/// reject it; the transaction layer (not built yet) will choose the fallback.
#[test]
fn badbranch_magic_cookie_without_identifier_does_not_break_the_parser() {
    let m = parse("badbranch");
    let vias = vias(&m);
    let via = Via::parse(&vias[0]).unwrap();
    assert_eq!(via.branch(), Some(&b"z9hG4bK"[..]));
    assert_eq!(m.cseq(), Some((8, Method::Options)));
    assert_accepted("badbranch", udp(), 407);
}

// ---------------------------------------------------------------------------------------
// §3.3 Application layer semantics
// ---------------------------------------------------------------------------------------

/// §3.3.1: no Call-ID, From or To. "An element receiving this message must not break ...
/// Ideally, it will respond with a 400 Bad Request error."
#[test]
fn insuf_missing_required_header_fields_get_400() {
    let m = parse("insuf");
    assert!(m.header(HeaderName::From).is_none() && m.header(HeaderName::To).is_none());
    assert_eq!(m.call_id(), None);
    let a = assert_refused("insuf", udp(), 400);
    assert!(a.reason.starts_with(b"Missing "), "{}", a.text);
}

/// §3.3.2: "A parser must accept this as a well-formed SIP request. An element receiving
/// this request will reject it with a 416 Unsupported URI Scheme response." The To header
/// is not looked at for routing.
#[test]
fn unkscm_unknown_request_uri_scheme_gets_416() {
    let m = parse("unkscm");
    match Uri::parse(m.request_uri().unwrap()) {
        Ok(Uri::Other { scheme, rest }) => {
            assert_eq!((scheme.as_str(), rest.as_str()), ("nobodyknowsthisscheme", "totallyopaquecontent"));
        }
        other => panic!("{other:?}"),
    }
    assert_refused("unkscm", tcp(), 416);
    assert_refused("unkscm", udp(), 416);
}

/// §3.3.3: `soap.beep:` Request-URI. "A parser must accept this as a well-formed SIP
/// request. If an element will never accept this scheme as meaningful in a Request-URI, it
/// is appropriate to treat it as unknown and return a 416."
#[test]
fn novelsc_known_but_atypical_scheme_gets_416() {
    let m = parse("novelsc");
    assert!(matches!(Uri::parse(m.request_uri().unwrap()), Ok(Uri::Other { ref scheme, .. }) if scheme == "soap.beep"));
    assert_refused("novelsc", tcp(), 416);
}

/// §3.3.4: non-SIP schemes in To, From and Contact. "Parsers must not fail when receiving
/// this message. Proxies should treat this message as they would any other request for
/// this URI. A registrar would reject this request with a 400 Bad Request response, since
/// the To: header field is required to contain a SIP or SIPS URI as an AOR." The registrar
/// layer decides the 400; as a proxy we do not refuse it.
#[test]
fn unksm2_unknown_schemes_in_header_fields_parse() {
    let m = parse("unksm2");
    let to = value(&m, HeaderName::To);
    assert!(matches!(name_addr(&to).parse_uri(), Ok(Uri::Other { ref scheme, .. }) if scheme == "isbn"));
    let from = value(&m, HeaderName::From);
    assert!(matches!(name_addr(&from).parse_uri(), Ok(Uri::Other { ref scheme, .. }) if scheme == "http"));
    assert_eq!(name_addr(&from).tag(), Some(&b"3234233"[..]));
    let contact = value(&m, HeaderName::Contact);
    assert!(matches!(name_addr(&contact).parse_uri(), Ok(Uri::Other { ref scheme, .. }) if scheme == "name"));
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("unksm2", udp());
}

/// §3.3.5: "Any element receiving this request will respond with a 420 Bad Extension
/// response, containing an Unsupported header field listing these features from either
/// the Require or Proxy-Require header field, depending on the role in which the element
/// is responding." The Request-URI is a user elsewhere: we respond as a proxy.
#[test]
fn bext01_proxy_require_gets_420_with_unsupported() {
    let a = assert_refused("bext01", stream(TransportKind::Tls), 420);
    assert_eq!(
        a.header(HeaderName::Unsupported).as_deref(),
        Some(&b"noProxiesSupportThis, norDoAnyProxiesSupportThis"[..])
    );
    assert!(!a.text.contains("nothingSupportsThis"), "a proxy lists the Proxy-Require tags:\n{}", a.text);
    assert_refused("bext01", udp(), 420);
}

/// §3.3.6: a body of unknown type. "A proxy receiving this request would process it just
/// like any other INVITE. An endpoint receiving this request would reject it with a 415."
#[test]
fn invut_unknown_content_type_is_processed_like_any_invite() {
    let m = parse("invut");
    assert_eq!(value(&m, HeaderName::ContentType), b"application/unknownformat");
    assert_eq!(m.body(), b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n");
    let a = assert_accepted("invut", udp(), 407);
    assert_ne!(a.status, 415, "415 is for endpoints");
}

/// §3.3.7: unknown Authorization scheme. "A proxy will treat this request as it would any
/// other REGISTER. If it forwards the request, it will include this Authorization header
/// field unmodified." (A registrar ignores it or answers 401: the registrar layer.)
#[test]
fn regaut01_unknown_authorization_scheme_is_kept_unmodified() {
    let m = parse("regaut01");
    let auth = m.header(HeaderName::Authorization).unwrap();
    assert_eq!(m.raw_line(auth), b"Authorization: NoOneKnowsThisScheme opaque-data=here");
    assert_eq!(content_length(&m), 0, "`Content-Length:0` without a space");
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("regaut01", tcp());
}

/// §3.3.8: several Call-ID, To, From, Max-Forwards and CSeq values. "An element receiving
/// this request must not break. An element receiving this request would respond with a
/// 400 Bad Request error."
#[test]
fn multi01_multiple_values_in_single_value_fields_get_400() {
    let m = parse("multi01");
    for single in [HeaderName::CallId, HeaderName::To, HeaderName::From, HeaderName::MaxForwards, HeaderName::CSeq] {
        assert_eq!(m.headers_named(single).count(), 2, "{single:?}");
    }
    assert_eq!(m.body().len(), 154);
    assert_refused("multi01", udp(), 400);
}

/// §3.3.9: two different Content-Length values. "An element receiving this message should
/// respond with an error"; over TCP the connection should be closed.
#[test]
fn mcl01_multiple_content_length_values_are_an_error() {
    assert_eq!(parse_error("mcl01"), ParseError::ConflictingContentLength);
    let a = assert_refused("mcl01", udp(), 400);
    assert_eq!(a.header(HeaderName::CallId).as_deref(), Some(&b"mcl01.fhn2323orihawfdoa3o4r52o3irsdf"[..]));
    assert_eq!(framing::frame(&raw("mcl01"), 64 * 1024), Err(FrameError::ConflictingContentLength));
}

/// §3.3.10: a 200 whose second Via is 255.255.255.255. "The message is well formed;
/// parsers must not fail ... proxies should drop such responses."
#[test]
fn bcast_response_with_broadcast_via_is_dropped() {
    let m = parse("bcast");
    let vias = vias(&m);
    let second = Via::parse(&vias[1]).unwrap();
    assert_eq!(*second.host(), ip("255.255.255.255"));
    assert_silent("bcast", udp());
}

/// §3.3.11: Max-Forwards 0 on an OPTIONS to a user elsewhere. "A proxy should not forward
/// the request and should respond 483 (Too Many Hops)."
#[test]
fn zeromf_max_forwards_zero_gets_483_at_a_proxy() {
    let m = parse("zeromf");
    assert_eq!(m.max_forwards(), Some(Ok(0)));
    assert!(sip_uri(m.request_uri().unwrap()).user.is_some(), "not addressed to the server itself");
    assert_refused("zeromf", udp(), 483);
}

/// §3.3.12: `unknownparam` after an addr-spec Contact is a contact-param, not a
/// uri-parameter. "This REGISTER should succeed" (registrar layer); the parser already
/// splits it that way.
#[test]
fn cparam01_param_after_addr_spec_contact_is_a_header_param() {
    let m = parse("cparam01");
    let contact_value = value(&m, HeaderName::Contact);
    let contact = name_addr(&contact_value);
    assert_eq!(contact.uri, b"sip:+19725552222@gw1.example.net");
    assert_eq!(sip_uri(contact.uri).param("unknownparam"), None);
    assert_eq!(contact.param("unknownparam"), Some(None));
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("cparam01", udp());
}

/// §3.3.13: `unknownparam` inside `< >` is a uri-parameter that a later fetch must return.
/// "The register should succeed" (registrar layer).
#[test]
fn cparam02_param_inside_brackets_is_a_uri_param() {
    let m = parse("cparam02");
    let contact_value = value(&m, HeaderName::Contact);
    let contact = name_addr(&contact_value);
    assert_eq!(sip_uri(contact.uri).param("unknownparam"), Some(None));
    assert_eq!(contact.param("unknownparam"), None);
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("cparam02", udp());
}

/// §3.3.14: a Contact URI with an escaped Route header. "The register should succeed, and
/// a subsequent retrieval of the registration must include the escaped Route header in the
/// contact URI" (registrar layer).
#[test]
fn regescrt_escaped_header_in_contact_uri_is_kept() {
    let m = parse("regescrt");
    let contact = m.header(HeaderName::Contact).expect("compact `M` is Contact");
    assert_eq!(m.raw_name(contact), b"M");
    let contact_value = value(&m, HeaderName::Contact);
    assert_eq!(sip_uri(name_addr(&contact_value).uri).headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
    assert_eq!(content_length(&m), 0, "`L:0`");
    // A well-formed REGISTER reaches the registrar, which authenticates first (§10.3 step 3).
    assert_challenged("regescrt", udp());
}

/// §3.3.15: Accept without application/sdp. The UAS "could respond with a 406 Not
/// Acceptable ... It is also appropriate to respond with a 400"; a proxy forwards it like
/// any INVITE (the UAS / SDP layer decides).
#[test]
fn sdp01_unacceptable_accept_is_for_the_uas_to_judge() {
    let m = parse("sdp01");
    assert_eq!(value(&m, HeaderName::Accept), b"text/nobodyKnowsThis");
    assert_eq!(m.body().len(), 150);
    assert_accepted("sdp01", udp(), 407);
}

// ---------------------------------------------------------------------------------------
// §3.4 Backward compatibility
// ---------------------------------------------------------------------------------------

/// §3.4.1: RFC 2543 syntax: no branch, no From tag, no Content-Length (the body is the rest
/// of the datagram), no Max-Forwards. It "should be accepted by RFC 3261 elements that want
/// to maintain backwards compatibility."
#[test]
fn inv2543_rfc2543_syntax_is_accepted() {
    let bytes = raw("inv2543");
    let m = parse("inv2543");
    assert_eq!(Via::parse(&vias(&m)[0]).unwrap().branch(), None);
    assert_eq!(name_addr(&value(&m, HeaderName::From)).tag(), None);
    assert!(m.header(HeaderName::ContentLength).is_none());
    assert_eq!(m.max_forwards(), None);
    let body_start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(m.body(), &bytes[body_start..], "without Content-Length the body is the rest of the datagram");
    assert!(m.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
    assert_accepted("inv2543", udp(), 407);
}

// ---------------------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------------------

#[test]
fn every_fixture_has_a_test() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(FIXTURE_DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|s| (*s).to_string()).collect();
    assert_eq!(covered.len(), COVERED.len(), "COVERED lists a name twice");
    let untested: Vec<&String> = on_disk.difference(&covered).collect();
    assert!(untested.is_empty(), "fixtures without a test: {untested:?}");
    let missing: Vec<&String> = covered.difference(&on_disk).collect();
    assert!(missing.is_empty(), "tests without a fixture: {missing:?}");
    assert_eq!(on_disk.len(), 49, "RFC 4475 §3 has 49 messages");
}

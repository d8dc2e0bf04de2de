//! L1: the SIP wire layer. It owns the bytes of a message and knows where every part of
//! it starts and ends, so a proxy can read what it needs and forward the rest untouched:
//! unknown headers, unknown methods, reason phrases and binary bodies keep their bytes.
//!
//! - [`Message::parse`]: one whole message (a datagram, a WebSocket message, or a frame cut
//!   by [`framing`]) into start line, header spans and body.
//! - [`framing`]: stream framing by Content-Length with RFC 5626 keep-alives.
//! - [`uri`], [`via`]: typed views of the values a proxy acts on.
//! - [`response`]: responses built from a request (RFC 3261 §8.2.6).
//!
//! This module does no I/O and reads no clock. It is the only user of nom.

pub mod digest;
pub mod forward;
pub mod framing;
mod grammar;
mod header;
pub mod response;
pub mod sdp;
pub mod status;
pub mod uri;
pub mod via;

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

pub use grammar::{Param, unquote};
pub use header::HeaderName;
pub use uri::{Host, NameAddr, SipUri, Uri, UriError};
pub use via::Via;

/// The `;name[=value]` parameters of a URI or header parameter list, in order.
pub fn uri_params(params: &str) -> impl Iterator<Item = Param<'_>> {
    grammar::params(params.as_bytes())
}

/// Bounds on one message, checked while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, start line to end of body.
    pub max_message_size: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_message_size: 64 * 1024, max_headers: 128 }
    }
}

/// A request method (RFC 3261 §7.1; methods are case-sensitive). Extension methods are
/// kept: a proxy forwards what it does not understand.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Extension(Box<str>),
}

impl Method {
    /// Parses a `Method` token (case-sensitive, §7.1).
    pub fn from_token(token: &[u8]) -> Option<Self> {
        Some(match token {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"OPTIONS" => Self::Options,
            b"REGISTER" => Self::Register,
            b"PRACK" => Self::Prack,
            b"SUBSCRIBE" => Self::Subscribe,
            b"NOTIFY" => Self::Notify,
            b"PUBLISH" => Self::Publish,
            b"INFO" => Self::Info,
            b"REFER" => Self::Refer,
            b"MESSAGE" => Self::Message,
            b"UPDATE" => Self::Update,
            other if !other.is_empty() && other.iter().all(|&c| grammar::is_token_char(c)) => {
                Self::Extension(std::str::from_utf8(other).ok()?.into())
            }
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Publish => "PUBLISH",
            Self::Info => "INFO",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Update => "UPDATE",
            Self::Extension(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A byte range into the message buffer. u32 keeps a header entry small; messages are
/// bounded far below 4 GiB by [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        // Both fit: parse() refuses messages larger than Limits::max_message_size,
        // which config bounds far below u32::MAX.
        Self { start: start as u32, end: end as u32 }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Span },
    Response { code: u16, reason: Span },
}

/// One header field: its name as we know it and where its line and value are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// From the first byte of the name to the end of the value (no CRLF).
    line: Span,
    name_len: u16,
    value: Span,
    /// The value spans several lines (§7.3.1 folding); read it through `value()`.
    folded: bool,
}

/// Why a message could not be parsed. Each variant names the rule it broke; the text is
/// the reason phrase of the 400 that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Empty Message")]
    Empty,
    #[error("Message Too Large")]
    TooLarge,
    #[error("Malformed Start Line")]
    StartLine,
    #[error("Malformed Header Line")]
    HeaderLine,
    #[error("Too Many Headers")]
    TooManyHeaders,
    #[error("Truncated Header Section")]
    Truncated,
    #[error("Invalid Content-Length")]
    ContentLength,
    #[error("Conflicting Content-Length")]
    ConflictingContentLength,
    #[error("Body Shorter Than Content-Length")]
    BodyTooShort,
}

impl ParseError {
    /// The status that answers a request that failed this way.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 513,
            _ => 400,
        }
    }
}

/// A parsed SIP message over the bytes it arrived in.
#[derive(Clone)]
pub struct Message {
    bytes: Bytes,
    start: StartLine,
    version: (u32, u32),
    headers: Vec<Header>,
    body: Span,
    /// Allocated when something first asks for a typed view.
    views: Views,
}

/// The message is its bytes: what was parsed from them is not part of its identity.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        (&self.bytes, &self.start, self.version, &self.headers, self.body)
            == (&other.bytes, &other.start, other.version, &other.headers, other.body)
    }
}

impl Eq for Message {}

/// Typed views of the values several layers read, each parsed on first use and kept with
/// the message. Validation, the transaction key, the routing policy and the registrar each
/// read the Request-URI, To and the top Via: a REGISTER parsed its top Via four times and
/// its URIs seven, a fifth of what the server spent on it.
#[derive(Debug, Default)]
struct Views(OnceLock<Box<ViewCells>>);

#[derive(Debug, Default)]
struct ViewCells {
    request_uri: OnceLock<Option<Result<Uri, UriError>>>,
    from: OnceLock<Option<Result<Uri, UriError>>>,
    to: OnceLock<Option<Result<Uri, UriError>>>,
    top_via: OnceLock<Option<TopVia>>,
}

/// The top Via element: where its bytes are, and its parts.
#[derive(Debug)]
struct TopVia {
    bytes: ElementBytes,
    parts: Result<via::ViaParts, UriError>,
}

#[derive(Debug)]
enum ElementBytes {
    InMessage(Span),
    /// A folded Via line, unfolded.
    Unfolded(Box<[u8]>),
}

/// A copy reads its views again when asked: copying them would cost more than most
/// copies ever read (a transaction keeps a copy only to resend it).
impl Clone for Views {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Views {
    fn cells(&self) -> &ViewCells {
        self.0.get_or_init(Box::default)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("summary", &self.summary()).field("len", &self.bytes.len()).finish()
    }
}

impl Message {
    /// Parses one whole message. Leading CRLFs are skipped (§7.5). The body is what the
    /// Content-Length says; bytes after it are ignored (RFC 4475 §3.1.1.8), and a body
    /// shorter than it is an error (§3.1.2.2). Without Content-Length the rest is the body.
    pub fn parse(bytes: Bytes, limits: &Limits) -> Result<Self, ParseError> {
        if bytes.len() > limits.max_message_size {
            return Err(ParseError::TooLarge);
        }
        let buf = &bytes[..];
        let mut pos = buf.iter().position(|&c| c != b'\r' && c != b'\n').ok_or(ParseError::Empty)?;

        let (first_end, next) = line_end(buf, pos).ok_or(ParseError::Truncated)?;
        let (start, version) = parse_start_line(&buf[pos..first_end], pos)?;
        pos = next;

        let mut headers: Vec<Header> = Vec::with_capacity(16);
        let mut content_length: Option<usize> = None;
        loop {
            if pos >= buf.len() {
                // A header section that ends with the data and no blank line: accept it
                // as a message without body (some UDP senders omit the last CRLF).
                break;
            }
            let (mut end, mut next) = line_end(buf, pos).ok_or(ParseError::Truncated)?;
            if end == pos {
                pos = next;
                break;
            }
            let mut folded = false;
            while next < buf.len() && grammar::is_wsp(buf[next]) {
                folded = true;
                (end, next) = line_end(buf, next).ok_or(ParseError::Truncated)?;
            }
            if headers.len() == limits.max_headers {
                return Err(ParseError::TooManyHeaders);
            }
            let line = &buf[pos..end];
            let (name, value_start) = grammar::header_name_colon(line).ok_or(ParseError::HeaderLine)?;
            let rest = &line[value_start..];
            // A value may begin on a continuation line (`To :\r\n sip:..`): skip the fold too.
            let lead = rest.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(rest.len());
            let value = grammar::trim(rest);
            let value_start = pos + value_start + lead;
            let header = Header {
                name: HeaderName::from_bytes(name),
                line: Span::new(pos, end),
                name_len: name.len().min(u16::MAX as usize) as u16,
                value: Span::new(value_start, value_start + value.len()),
                folded,
            };
            if header.name == HeaderName::ContentLength {
                let n = grammar::decimal::<usize>(value).ok_or(ParseError::ContentLength)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(ParseError::ConflictingContentLength);
                }
                content_length = Some(n);
            }
            headers.push(header);
            pos = next;
        }

        let available = buf.len() - pos.min(buf.len());
        let body_len = match content_length {
            Some(n) if n > available => return Err(ParseError::BodyTooShort),
            Some(n) => n,
            None => available,
        };
        let body_start = pos.min(buf.len());
        Ok(Self {
            start,
            version,
            headers,
            body: Span::new(body_start, body_start + body_len),
            bytes,
            views: Views::default(),
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.body.end as usize]
    }

    pub fn bytes(&self) -> Bytes {
        self.bytes.slice(..self.body.end as usize)
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI text as received.
    pub fn request_uri(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(&self.bytes[uri.range()]),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(&self.bytes[reason.range()]),
            StartLine::Request { .. } => None,
        }
    }

    /// `SIP-Version` as (major, minor); only 2.0 is served (others get 505).
    pub fn version(&self) -> (u32, u32) {
        self.version
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }

    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The name as written in the message (`v`, `VIA`, `X-Custom`).
    pub fn raw_name(&self, h: &Header) -> &[u8] {
        &self.bytes[h.line.start as usize..h.line.start as usize + h.name_len as usize]
    }

    /// The whole header line as received, without CRLF: what forwarding copies.
    pub fn raw_line(&self, h: &Header) -> &[u8] {
        &self.bytes[h.line.range()]
    }

    /// The value, unfolded: each fold (CRLF followed by whitespace) becomes one SP.
    pub fn value(&self, h: &Header) -> Cow<'_, [u8]> {
        let raw = &self.bytes[h.value.range()];
        if !h.folded {
            return Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\r' || raw[i] == b'\n' {
                while i < raw.len() && raw[i].is_ascii_whitespace() {
                    i += 1;
                }
                if out.last().is_some_and(|&c| !grammar::is_wsp(c)) {
                    out.push(b' ');
                }
                continue;
            }
            out.push(raw[i]);
            i += 1;
        }
        Cow::Owned(out)
    }

    /// The unfolded value of the first header with this name.
    pub fn first_value(&self, name: HeaderName) -> Option<Cow<'_, [u8]>> {
        self.header(name).map(|h| self.value(h))
    }

    /// The elements of a list header across all its fields, in order (§7.3.1): `Via: a, b`
    /// followed by `Via: c` yields `a`, `b`, `c`.
    pub fn list(&self, name: HeaderName) -> Vec<Cow<'_, [u8]>> {
        let mut out = Vec::new();
        for h in self.headers_named(name) {
            match self.value(h) {
                Cow::Borrowed(v) => out.extend(grammar::comma_elements(v).map(Cow::Borrowed)),
                Cow::Owned(v) => out.extend(grammar::comma_elements(&v).map(|e| Cow::Owned(e.to_vec()))),
            }
        }
        out
    }

    /// Whether any field of a list header has an empty element (`a,,b`).
    pub fn has_empty_list_element(&self, name: HeaderName) -> bool {
        self.headers_named(name).any(|h| grammar::has_empty_element(&self.value(h)))
    }

    /// The message with its top Via stamped with `received`/`rport` for `source` (RFC
    /// 3261 §18.2.1, RFC 3581 §4), so that everything after (local replies, forwarded
    /// copies, the responses that come back) carries it. Unchanged when the Via cannot be
    /// read or needs nothing.
    pub fn with_stamped_via(self, source: std::net::SocketAddr) -> Self {
        let Some(h) = self.header(HeaderName::Via).copied() else { return self };
        let Some(Ok(via)) = self.top_via() else { return self };
        let stamped = via.stamped(source);
        if stamped == via.raw() {
            return self;
        }
        let value = self.value(&h);
        let mut elements = grammar::comma_elements(&value);
        elements.next();
        let line_start = h.line.start as usize;
        let mut out = Vec::with_capacity(self.bytes.len() + 48);
        out.extend_from_slice(&self.bytes[..line_start]);
        out.extend_from_slice(b"Via: ");
        let value_start = out.len();
        out.extend_from_slice(&stamped);
        for rest in elements {
            out.extend_from_slice(b", ");
            out.extend_from_slice(rest);
        }
        let line_end = out.len();
        out.extend_from_slice(&self.bytes[h.line.end as usize..self.body.end as usize]);
        // Only the Via line changed: everything after it moves by the change in its
        // length, so the spans are shifted rather than the message parsed again (what a
        // parse of `out` would find, as the tests check).
        let delta = line_end as i64 - h.line.end as i64;
        let shift = |span: Span| Span::new((span.start as i64 + delta) as usize, (span.end as i64 + delta) as usize);
        let headers = self
            .headers
            .iter()
            .map(|other| match other.line.start.cmp(&h.line.start) {
                std::cmp::Ordering::Less => *other,
                std::cmp::Ordering::Equal => Header {
                    name: HeaderName::Via,
                    line: Span::new(line_start, line_end),
                    name_len: 3,
                    value: Span::new(value_start, line_end),
                    folded: false,
                },
                std::cmp::Ordering::Greater => Header { line: shift(other.line), value: shift(other.value), ..*other },
            })
            .collect();
        drop(value);
        // The stamped element keeps its bytes up to the end of `sent-by`, so its parts are
        // the original's but for the parameters; the other views read what the stamp did
        // not touch.
        let mut views = self.views;
        if let Some(cells) = views.0.get_mut() {
            let parts = cells.top_via.take().and_then(|top| top.map(|t| t.parts));
            if let Some(parts) = parts.map(|p| p.map(|p| p.with_params_of(&stamped))) {
                let bytes = ElementBytes::InMessage(Span::new(value_start, value_start + stamped.len()));
                cells.top_via.get_or_init(|| Some(TopVia { bytes, parts }));
            }
        }
        Self {
            bytes: Bytes::from(out),
            start: self.start,
            version: self.version,
            headers,
            body: shift(self.body),
            views,
        }
    }

    /// The first element of the first Via field: the hop that sent this message.
    pub fn top_via_raw(&self) -> Option<Cow<'_, [u8]>> {
        let h = self.header(HeaderName::Via)?;
        match self.value(h) {
            Cow::Borrowed(v) => grammar::comma_elements(v).next().map(Cow::Borrowed),
            Cow::Owned(v) => grammar::comma_elements(&v).next().map(|e| Cow::Owned(e.to_vec())),
        }
    }

    /// The top Via, parsed once (RFC 3261 §20.42); `None` without a Via.
    pub fn top_via(&self) -> Option<Result<Via<'_>, UriError>> {
        let top = self.views.cells().top_via.get_or_init(|| {
            let h = self.header(HeaderName::Via)?;
            Some(match self.value(h) {
                Cow::Borrowed(v) => {
                    let element = grammar::comma_elements(v).next()?;
                    // The element is a slice of the message's bytes: its offset is where
                    // it starts in them.
                    let start = element.as_ptr() as usize - self.bytes.as_ptr() as usize;
                    let bytes = ElementBytes::InMessage(Span::new(start, start + element.len()));
                    TopVia { bytes, parts: via::ViaParts::parse(element) }
                }
                Cow::Owned(v) => {
                    let element: Box<[u8]> = grammar::comma_elements(&v).next()?.into();
                    let parts = via::ViaParts::parse(&element);
                    TopVia { bytes: ElementBytes::Unfolded(element), parts }
                }
            })
        });
        let top = top.as_ref()?;
        let raw = match &top.bytes {
            ElementBytes::InMessage(span) => self.bytes.get(span.range()).unwrap_or_default(),
            ElementBytes::Unfolded(element) => &element[..],
        };
        Some(top.parts.as_ref().map(|parts| parts.view(raw)).map_err(|e| *e))
    }

    /// The Request-URI, parsed once; `None` for a response.
    pub fn parsed_request_uri(&self) -> Option<Result<&Uri, UriError>> {
        let uri = self.views.cells().request_uri.get_or_init(|| self.request_uri().map(Uri::parse));
        uri.as_ref().map(|r| r.as_ref().map_err(|e| *e))
    }

    /// The URI of the From header, parsed once; `None` without a From header.
    pub fn from_uri(&self) -> Option<Result<&Uri, UriError>> {
        self.header_uri(&self.views.cells().from, HeaderName::From)
    }

    /// The URI of the To header, parsed once; `None` without a To header.
    pub fn to_uri(&self) -> Option<Result<&Uri, UriError>> {
        self.header_uri(&self.views.cells().to, HeaderName::To)
    }

    fn header_uri<'m>(
        &'m self,
        cell: &'m OnceLock<Option<Result<Uri, UriError>>>,
        name: HeaderName,
    ) -> Option<Result<&'m Uri, UriError>> {
        let uri = cell.get_or_init(|| {
            let value = self.first_value(name)?;
            Some(NameAddr::parse(&value).and_then(|n| n.parse_uri()))
        });
        uri.as_ref().map(|r| r.as_ref().map_err(|e| *e))
    }

    pub fn call_id(&self) -> Option<Cow<'_, [u8]>> {
        self.first_value(HeaderName::CallId)
    }

    /// `CSeq = "CSeq" HCOLON 1*DIGIT LWS Method`; the number must fit 31 bits (§8.1.1.5).
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let v = self.first_value(HeaderName::CSeq)?;
        let v = grammar::trim(&v);
        let split = v.iter().position(|c| c.is_ascii_whitespace())?;
        let n: u32 = grammar::decimal(&v[..split])?;
        if n >= 1 << 31 {
            return None;
        }
        let method = Method::from_token(grammar::trim(&v[split..]))?;
        Some((n, method))
    }

    /// `Max-Forwards`; `Some(Err(()))` when present but not a number in 0..=255.
    pub fn max_forwards(&self) -> Option<Result<u8, ()>> {
        let v = self.first_value(HeaderName::MaxForwards)?;
        Some(grammar::decimal::<u8>(grammar::trim(&v)).ok_or(()))
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body.range()]
    }

    /// One line for logs: `REGISTER sip:example.com cseq=2 call-id=..` or `200 OK`.
    pub fn summary(&self) -> String {
        let call_id = self.call_id().map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default();
        match &self.start {
            StartLine::Request { method, uri } => {
                format!("{method} {} call-id={call_id}", String::from_utf8_lossy(&self.bytes[uri.range()]))
            }
            StartLine::Response { code, reason } => {
                let cseq = self.cseq().map(|(n, m)| format!("{n} {m}")).unwrap_or_default();
                format!("{code} {} ({cseq}) call-id={call_id}", String::from_utf8_lossy(&self.bytes[reason.range()]))
            }
        }
    }
}

/// End of the line that starts at `pos` (before CR LF or a bare LF) and where the next
/// line starts.
fn line_end(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let lf = memchr::memchr(b'\n', &buf[pos..])? + pos;
    let end = if lf > pos && buf[lf - 1] == b'\r' { lf - 1 } else { lf };
    Some((end, lf + 1))
}

fn parse_start_line(line: &[u8], offset: usize) -> Result<(StartLine, (u32, u32)), ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let (_, (version, code, reason)) = grammar::status_line(line).map_err(|_| ParseError::StartLine)?;
        let reason_start = offset + line.len() - reason.len();
        let start = StartLine::Response { code, reason: Span::new(reason_start, reason_start + reason.len()) };
        return Ok((start, version));
    }
    let (_, (method, uri, version)) = grammar::request_line(line).map_err(|_| ParseError::StartLine)?;
    let method = Method::from_token(method).ok_or(ParseError::StartLine)?;
    let uri_start = offset + method.as_str().len() + 1;
    Ok((StartLine::Request { method, uri: Span::new(uri_start, uri_start + uri.len()) }, version))
}

/// The header values needed to answer a request that could not be parsed in full:
/// a tolerant line scan that takes what it can (RFC 3261 §8.2.6 needs Via, From, To,
/// Call-ID and CSeq). `None` when the data does not look like a request or has no Via.
pub fn salvage_for_reply(buf: &[u8]) -> Option<Vec<(HeaderName, Vec<u8>)>> {
    let text = buf.get(buf.iter().position(|&c| c != b'\r' && c != b'\n')?..)?;
    if text.len() >= 4 && text[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let first_end = memchr::memchr(b'\n', text)?;
    let first = &text[..first_end];
    if !first.windows(4).any(|w| w.eq_ignore_ascii_case(b"SIP/")) || !first.first()?.is_ascii_alphabetic() {
        return None;
    }
    let mut found = Vec::new();
    let headers = &text[first_end + 1..];
    let header_end = memchr::memmem::find(headers, b"\r\n\r\n").unwrap_or(headers.len());
    for line in headers[..header_end].split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some((name, value_start)) = grammar::header_name_colon(line) else { continue };
        let name = HeaderName::from_bytes(name);
        if matches!(name, HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq) {
            found.push((name, grammar::trim(&line[value_start..]).to_vec()));
        }
    }
    found.iter().any(|(n, _)| *n == HeaderName::Via).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
    }

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK6rql6fa\r\n\
        Max-Forwards: 69\r\n\
        To: <sip:alice@example.com>\r\n\
        From: <sip:alice@example.com>;tag=qig3tl9h1m\r\n\
        Call-ID: 2ngi6p8cebt0knl4fbnc\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:u5ve0fk9@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0c6b2d4e-4fa1-4b57-a8b3-7d1d1d8f9a30>\";expires=600\r\n\
        Expires: 600\r\n\
        Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
        Supported: path,gruu,outbound\r\n\
        User-Agent: JsSIP 3.13.0\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_jssip_register() {
        let m = parse(REGISTER).unwrap();
        assert_eq!(m.method(), Some(&Method::Register));
        assert_eq!(m.request_uri(), Some(&b"sip:example.com"[..]));
        assert_eq!(m.cseq(), Some((1, Method::Register)));
        assert_eq!(m.call_id().as_deref(), Some(&b"2ngi6p8cebt0knl4fbnc"[..]));
        assert_eq!(m.headers().len(), 12);
        assert_eq!(m.list(HeaderName::Supported).len(), 3);
        let contact = m.first_value(HeaderName::Contact).unwrap();
        let c = NameAddr::parse(&contact).unwrap();
        assert_eq!(c.param("reg-id"), Some(Some(Cow::Borrowed(&b"1"[..]))));
        assert!(m.body().is_empty());
        assert_eq!(m.as_bytes(), REGISTER.as_bytes());
    }

    #[test]
    fn compact_forms_are_understood() {
        let m = parse(
            "OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nf: <sip:a@h>;tag=1\r\n\
             t: <sip:h>\r\ni: abc\r\nCSeq: 7 OPTIONS\r\nl: 3\r\nm: <sip:a@192.0.2.1>\r\n\r\nxyz",
        )
        .unwrap();
        assert!(m.header(HeaderName::Via).is_some());
        assert_eq!(m.call_id().as_deref(), Some(&b"abc"[..]));
        assert_eq!(m.body(), b"xyz");
        assert_eq!(m.raw_name(m.header(HeaderName::Via).unwrap()), b"v");
        assert!(m.header(HeaderName::Contact).is_some());
    }

    #[test]
    fn folded_values_unfold_to_one_space() {
        let m = parse(
            "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nSubject: one\r\n  two\r\n\tthree\r\n\
             Call-ID: c\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.first_value(HeaderName::Subject).as_deref(), Some(&b"one two three"[..]));
        let subject = m.header(HeaderName::Subject).unwrap();
        assert_eq!(m.raw_line(subject), b"Subject: one\r\n  two\r\n\tthree");
        assert_eq!(m.call_id().as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn value_starting_on_a_continuation_line_is_whole() {
        let m = parse("OPTIONS sip:h SIP/2.0\r\nTO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\nCall-ID: c\r\n\r\n")
            .unwrap();
        assert_eq!(
            m.first_value(HeaderName::To).as_deref(),
            Some(&b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"[..])
        );
        let to = m.first_value(HeaderName::To).unwrap();
        assert_eq!(NameAddr::parse(&to).unwrap().tag(), Some(&b"1918181833n"[..]));
    }

    #[test]
    fn stamping_the_top_via_keeps_the_rest_of_the_message() {
        let m = parse("OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/WS a.invalid;branch=z9hG4bK1, SIP/2.0/UDP p\r\nCall-ID: c\r\nl: 2\r\n\r\nhi").unwrap();
        let m = m.with_stamped_via("192.0.2.1:5555".parse().unwrap());
        assert_eq!(
            m.as_bytes(),
            b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bK1;received=192.0.2.1, SIP/2.0/UDP p\r\nCall-ID: c\r\nl: 2\r\n\r\nhi"
        );
        assert_eq!(m.body(), b"hi");
    }

    #[test]
    fn stamping_shifts_every_span_as_a_fresh_parse_would_find_it() {
        let source: std::net::SocketAddr = "192.0.2.1:5555".parse().unwrap();
        let messages = [
            "OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/WS a.invalid;branch=z9hG4bK1, SIP/2.0/UDP p\r\nCall-ID: c\r\nl: 2\r\n\r\nhi",
            "INVITE sip:b@h SIP/2.0\r\nMax-Forwards: 70\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK2\r\n\
             Via: SIP/2.0/TCP q;branch=z9hG4bK3\r\nTo: <sip:b@h>\r\nContent-Length: 4\r\n\r\nbodyextra",
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP\r\n  10.0.0.1;rport;received=1.1.1.1;branch=z9hG4bK4 , SIP/2.0/UDP x\r\n\
             Call-ID: c\r\n\r\n",
        ];
        for text in messages {
            let stamped = parse(text).unwrap().with_stamped_via(source);
            let reparsed = Message::parse(stamped.bytes(), &Limits::default()).unwrap();
            assert_eq!(stamped, reparsed, "{text}");
            // The stamped copy keeps the top Via parsed before the stamp: it must read as
            // the fresh parse does, the folded one included.
            let kept = stamped.top_via().unwrap().unwrap();
            let fresh = reparsed.top_via().unwrap().unwrap();
            assert_eq!(kept, fresh, "{text}");
            assert_eq!((kept.raw(), kept.rport(), kept.branch()), (fresh.raw(), fresh.rport(), fresh.branch()));
        }
    }

    #[test]
    fn views_read_what_a_fresh_parse_reads_in_the_message_its_clones_and_its_stamped_copy() {
        let text = "INVITE sip:bob@example.com;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP\r\n 10.0.0.1:5062;branch=z9hG4bKa\r\n\
                    From: \"A\" <sip:alice@example.com>;tag=1\r\nTo: bob <sip:bob@example.com>\r\nCall-ID: c\r\n\r\n";
        let m = parse(text).unwrap();
        let uri = |s: &str| Uri::parse(s.as_bytes()).unwrap();
        let expect = |m: &Message| {
            assert_eq!(m.parsed_request_uri(), Some(Ok(&uri("sip:bob@example.com;transport=tcp"))));
            assert_eq!(m.from_uri(), Some(Ok(&uri("sip:alice@example.com"))));
            assert_eq!(m.to_uri(), Some(Ok(&uri("sip:bob@example.com"))));
            let via = m.top_via().unwrap().unwrap();
            assert_eq!(
                (via.transport, via.host(), via.port),
                (&b"UDP"[..], &Host::Ip([10, 0, 0, 1].into()), Some(5062))
            );
        };
        expect(&m);
        expect(&m);
        expect(&m.clone());
        let stamped = m.with_stamped_via("192.0.2.9:7000".parse().unwrap());
        expect(&stamped);
        assert!(stamped.top_via().unwrap().unwrap().raw().ends_with(b";received=192.0.2.9"));

        let bad = parse("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;;\r\nFrom: <sip:a@[::1>\r\n\r\n").unwrap();
        assert_eq!(bad.top_via().map(|v| v.is_err()), Some(true));
        assert_eq!(bad.from_uri().map(|u| u.is_err()), Some(true));
        assert_eq!(bad.to_uri(), None);
        let response = parse("SIP/2.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((response.parsed_request_uri(), response.top_via().is_none()), (None, true));
    }

    #[test]
    fn comma_lists_span_fields() {
        let m = parse(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2\r\n\
             Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK3\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let vias = m.list(HeaderName::Via);
        assert_eq!(vias.len(), 3);
        let third = Via::parse(&vias[2]).unwrap();
        assert_eq!(third.port, Some(5070));
        assert_eq!(m.top_via_raw().as_deref(), Some(&b"SIP/2.0/UDP a;branch=z9hG4bK1"[..]));
    }

    #[test]
    fn unknown_method_and_binary_body_pass_through_byte_for_byte() {
        let mut raw = b"NEWMETHOD sip:u@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKq\r\nX-Odd :  v a l \r\n\
            Content-Length: 4\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(&[0, 0xff, 0xfe, b'\n']);
        let m = Message::parse(Bytes::from(raw.clone()), &Limits::default()).unwrap();
        assert_eq!(m.method(), Some(&Method::Extension("NEWMETHOD".into())));
        assert_eq!(m.body(), &[0, 0xff, 0xfe, b'\n']);
        assert_eq!(m.as_bytes(), &raw[..]);
        let odd = m.headers().iter().find(|h| h.name == HeaderName::Other).unwrap();
        assert_eq!(m.raw_line(odd), b"X-Odd :  v a l ");
        assert_eq!(&*m.value(odd), b"v a l");
    }

    #[test]
    fn methods_are_case_sensitive() {
        let m = parse("invite sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").unwrap();
        assert_eq!(m.method(), Some(&Method::Extension("invite".into())));
    }

    #[test]
    fn content_length_rules() {
        let base = "MESSAGE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n";
        assert_eq!(parse(&format!("{base}Content-Length: 9999\r\n\r\nabc")), Err(ParseError::BodyTooShort));
        assert_eq!(parse(&format!("{base}Content-Length: -999\r\n\r\nabc")), Err(ParseError::ContentLength));
        assert_eq!(
            parse(&format!("{base}Content-Length: 3\r\nl: 4\r\n\r\nabcd")),
            Err(ParseError::ConflictingContentLength)
        );
        assert_eq!(parse(&format!("{base}Content-Length: 3\r\nl: 3\r\n\r\nabc")).unwrap().body(), b"abc");
        // Extra bytes after the body (a second message in one datagram) are not the body.
        let m = parse(&format!("{base}Content-Length: 2\r\n\r\nabOPTIONS sip:x SIP/2.0\r\n\r\n")).unwrap();
        assert_eq!(m.body(), b"ab");
        assert_eq!(parse(&format!("{base}\r\nfree body")).unwrap().body(), b"free body");
    }

    #[test]
    fn ipv6_request_uri_and_bare_lf_lines() {
        let m = parse("OPTIONS sip:[2001:db8::10]:5060 SIP/2.0\nVia: SIP/2.0/UDP [2001:db8::9]\n\n").unwrap();
        let uri = Uri::parse(m.request_uri().unwrap()).unwrap();
        assert_eq!(uri.as_sip().unwrap().host, Host::Ip("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_message_size: 64, max_headers: 2 };
        let big = Bytes::from(vec![b'a'; 65]);
        assert_eq!(Message::parse(big, &limits), Err(ParseError::TooLarge));
        let many = Bytes::from_static(b"OPTIONS sip:h SIP/2.0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n");
        assert_eq!(Message::parse(many, &limits), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "\r\n\r\n",
            "garbage",
            "OPTIONS sip:h SIP/2.0",
            "OPTIONS sip:h SIP/2.0\r\nno colon\r\n\r\n",
            "OPTIONS sip:h SIP/2.0\r\nVia: x\r\nCSeq: 1 OPTIONS",
            "SIP/2.0 99 Low\r\n\r\n",
            "\u{0}\u{0}\u{0}\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cseq_must_fit_31_bits() {
        let m = parse("OPTIONS sip:h SIP/2.0\r\nCSeq: 36893488147419103232 OPTIONS\r\n\r\n").unwrap();
        assert_eq!(m.cseq(), None);
        let m = parse("OPTIONS sip:h SIP/2.0\r\nCSeq: 2147483648 OPTIONS\r\n\r\n").unwrap();
        assert_eq!(m.cseq(), None);
    }

    /// A cheap fuzz: mutations of real messages and random bytes must give a result or an
    /// error, never a panic (cargo-fuzz runs the same entry points for longer).
    #[test]
    fn mutated_and_random_input_never_panics() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3261);
        let seeds =
            [REGISTER.as_bytes(), b"SIP/2.0 200 OK\r\nv: a, b\r\nl: 3\r\n\r\nabc", b"INVITE sip:[::1] SIP/2.0\r\n\r\n"];
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..input.len().max(1));
                match rng.random_range(0..4) {
                    0 if !input.is_empty() => {
                        let i = at.min(input.len() - 1);
                        input[i] = rng.random();
                    }
                    1 => input.insert(
                        at.min(input.len()),
                        *b"\r\n:;,<>\"[@ \0".get(rng.random_range(0..13)).unwrap_or(&b'x'),
                    ),
                    2 if !input.is_empty() => {
                        input.truncate(at);
                    }
                    _ => input.extend((0..rng.random_range(0..16)).map(|_| rng.random::<u8>())),
                }
            }
            let _ = salvage_for_reply(&input);
            let _ = framing::frame(&input, 1 << 16);
            if let Ok(m) = Message::parse(Bytes::from(input), &Limits::default()) {
                let _ = (m.cseq(), m.call_id(), m.max_forwards(), m.summary(), m.list(HeaderName::Via));
                if let Some(v) = m.top_via_raw()
                    && let Ok(via) = Via::parse(&v)
                {
                    let _ = via.stamped("192.0.2.1:5060".parse().unwrap());
                }
                for h in m.headers() {
                    let value = m.value(h);
                    let _ = NameAddr::parse(&value).map(|n| n.parse_uri());
                }
                let _ = m.request_uri().map(Uri::parse);
                let _ = response::build(&m, &response::Reply::new(400));
            }
        }
    }

    #[test]
    fn salvage_finds_reply_headers_in_broken_requests() {
        let broken =
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nbroken line\r\nCall-ID: x\r\n\r\n";
        let found = salvage_for_reply(broken).unwrap();
        assert_eq!(found.len(), 2);
        assert!(salvage_for_reply(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
        assert!(salvage_for_reply(b"\x00\x01binary").is_none());
        // The blank line comes before the end of the first line's search window.
        assert!(salvage_for_reply(b"A SIP/2.0\n\r\n\r\nVia: x\r\n").is_none());
    }
}

//! The SIP a load client speaks: JsSIP-shaped REGISTER and OPTIONS requests, the few
//! fields of a response it reads, answers to the odd request a server sends, and MD5
//! digest with qop=auth (RFC 2617 §3.2.2, RFC 8760 §2). Written apart from the server's
//! own parser on purpose: a load generator that shared the server's code would agree
//! with the server's mistakes.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

/// What every client of a run shares: the domain it registers in, its credentials and
/// the Via transport token of the URL it dials.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) domain: String,
    pub(crate) user_prefix: String,
    pub(crate) password: String,
    /// `WS` or `WSS` (RFC 7118 §5).
    pub(crate) via: &'static str,
}

/// One simulated browser. Its tokens are all derived from 16 random bytes so that a
/// client holding a connection keeps a few dozen bytes, not a dozen strings.
#[derive(Debug)]
pub(crate) struct Ua {
    pub(crate) index: usize,
    seed: [u8; 16],
}

impl Ua {
    pub(crate) fn new(index: usize, seed: [u8; 16]) -> Self {
        Self { index, seed }
    }

    /// `<prefix><index>`, the user part of the address of record.
    pub(crate) fn user(&self, profile: &Profile) -> String {
        format!("{}{}", profile.user_prefix, self.index)
    }

    /// The same for every request of this client, as JsSIP keeps one Call-ID for its
    /// registrations (RFC 3261 §10.2).
    pub(crate) fn call_id(&self) -> String {
        hex::encode(self.seed)
    }

    fn tag(&self) -> String {
        hex::encode(&self.seed[..5])
    }

    /// The random `.invalid` host JsSIP puts in Via and Contact (RFC 7118 §5).
    fn host(&self) -> String {
        format!("{}.invalid", hex::encode(&self.seed[10..]))
    }

    /// A stable `urn:uuid` for `+sip.instance` (RFC 5626 §4.1), version 4 shaped.
    fn instance(&self) -> String {
        let mut b = self.seed;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    /// Client nonce for one digest answer: unique per client and attempt.
    pub(crate) fn cnonce(&self, attempt: u32) -> String {
        format!("{}{attempt:x}", hex::encode(&self.seed[..8]))
    }

    /// A REGISTER like JsSIP's: outbound (RFC 5626) contact over a `.invalid` host. The
    /// branch is made of the client's tag and `cseq`, which never repeats on a client.
    pub(crate) fn register(&self, profile: &Profile, cseq: u32, authorization: Option<&str>) -> String {
        let user = self.user(profile);
        let domain = &profile.domain;
        let mut m = String::with_capacity(768);
        let _ = write!(m, "REGISTER sip:{domain} SIP/2.0\r\n");
        self.common_headers(&mut m, profile, cseq, "REGISTER", &user);
        let _ = write!(
            m,
            "Contact: <sip:{}@{};transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:{}>\";expires=600\r\n",
            hex::encode(&self.seed[6..10]),
            self.host(),
            self.instance()
        );
        m.push_str("Expires: 600\r\n");
        if let Some(value) = authorization {
            let _ = write!(m, "Authorization: {value}\r\n");
        }
        m.push_str("Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n");
        m.push_str("Supported: path,gruu,outbound\r\nUser-Agent: webtrunk-load\r\nContent-Length: 0\r\n\r\n");
        m
    }

    /// An out-of-dialog OPTIONS to the domain: the cheapest request a server must answer.
    pub(crate) fn options(&self, profile: &Profile, cseq: u32) -> String {
        let user = self.user(profile);
        let mut m = String::with_capacity(512);
        let _ = write!(m, "OPTIONS sip:{} SIP/2.0\r\n", profile.domain);
        self.common_headers(&mut m, profile, cseq, "OPTIONS", &user);
        m.push_str("Accept: application/sdp\r\nUser-Agent: webtrunk-load\r\nContent-Length: 0\r\n\r\n");
        m
    }

    fn common_headers(&self, m: &mut String, profile: &Profile, cseq: u32, method: &str, user: &str) {
        let domain = &profile.domain;
        let _ = write!(m, "Via: SIP/2.0/{} {};branch=z9hG4bK{}{cseq:x}\r\n", profile.via, self.host(), self.tag());
        m.push_str("Max-Forwards: 69\r\n");
        let _ = write!(m, "To: <sip:{user}@{domain}>\r\n");
        let _ = write!(m, "From: <sip:{user}@{domain}>;tag={}\r\n", self.tag());
        let _ = write!(m, "Call-ID: {}\r\nCSeq: {cseq} {method}\r\n", self.call_id());
    }
}

/// A message from the server, read no further than a load client needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    Response(Response<'a>),
    Request {
        method: &'a str,
    },
    /// RFC 5626 §4.4.1: the CRLF answer to our CRLFCRLF ping.
    Pong,
    Garbage,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response<'a> {
    pub(crate) status: u16,
    pub(crate) cseq: u32,
    pub(crate) call_id: &'a str,
    head: &'a str,
}

impl<'a> Incoming<'a> {
    pub(crate) fn parse(text: &'a str) -> Self {
        if !text.is_empty() && text.bytes().all(|b| b == b'\r' || b == b'\n') {
            return Self::Pong;
        }
        let head = text.split("\r\n\r\n").next().unwrap_or(text);
        let Some((start, _)) = head.split_once("\r\n") else { return Self::Garbage };
        if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
            let Some(status) = rest.get(..3).and_then(|s| s.parse().ok()) else { return Self::Garbage };
            let call_id = header(head, "call-id").or_else(|| header(head, "i")).unwrap_or_default();
            let cseq = header(head, "cseq").and_then(|v| v.split_whitespace().next()).and_then(|n| n.parse().ok());
            let Some(cseq) = cseq else { return Self::Garbage };
            return Self::Response(Response { status, cseq, call_id, head });
        }
        match start.split(' ').next() {
            Some(method) if start.ends_with(" SIP/2.0") => Self::Request { method },
            _ => Self::Garbage,
        }
    }
}

impl Response<'_> {
    pub(crate) fn is_final(&self) -> bool {
        self.status >= 200
    }

    /// The MD5 challenge among the WWW-Authenticate fields (a server offering SHA-256
    /// too sends one field per algorithm, RFC 8760 §2.4).
    pub(crate) fn md5_challenge(&self) -> Option<Challenge> {
        headers(self.head, "www-authenticate").find_map(Challenge::parse_md5)
    }
}

/// The answer a UA owes a request that reaches it: 200 to OPTIONS, 501 to what a load
/// client cannot do, nothing to ACK (RFC 3261 §17.2.1, §8.2.1).
pub(crate) fn answer(request: &str, method: &str) -> Option<String> {
    if method == "ACK" {
        return None;
    }
    let head = request.split("\r\n\r\n").next().unwrap_or(request);
    let status = if method == "OPTIONS" { "200 OK" } else { "501 Not Implemented" };
    let mut m = format!("SIP/2.0 {status}\r\n");
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if matches!(name.as_str(), "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq") {
            m.push_str(line);
            if (name == "to" || name == "t") && !line.contains(";tag=") {
                m.push_str(";tag=webtrunkload");
            }
            m.push_str("\r\n");
        }
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    Some(m)
}

/// An MD5 digest challenge (RFC 2617 §3.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) opaque: Option<String>,
    /// Whether `qop` offers `auth`; without it the RFC 2069 form is answered.
    pub(crate) qop_auth: bool,
    pub(crate) stale: bool,
}

impl Challenge {
    /// A `Digest` challenge with MD5 (named, or by default) and a realm and nonce.
    pub(crate) fn parse_md5(value: &str) -> Option<Self> {
        let rest = value.trim_start();
        let scheme_len = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        if !rest[..scheme_len].eq_ignore_ascii_case("digest") {
            return None;
        }
        let (mut realm, mut nonce, mut opaque, mut algorithm) = (None, None, None, None);
        let (mut qop_auth, mut stale) = (false, false);
        for (name, value) in auth_params(&rest[scheme_len..]) {
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "opaque" => opaque = Some(value),
                "algorithm" => algorithm = Some(value),
                "qop" => qop_auth = value.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
                "stale" => stale = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if !algorithm.as_deref().is_none_or(|a| a.eq_ignore_ascii_case("MD5")) {
            return None;
        }
        Some(Self { realm: realm?, nonce: nonce?, opaque, qop_auth, stale })
    }

    /// The Authorization value for `method uri` with nonce count `nc` (RFC 2617 §3.2.2).
    pub(crate) fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let ha1 = md5_hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let (realm, nonce) = (&self.realm, &self.nonce);
        let mut value = format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\"");
        if self.qop_auth {
            let response = md5_hex(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"));
            let _ =
                write!(value, ", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"");
        } else {
            let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
            let _ = write!(value, ", response=\"{response}\", algorithm=MD5");
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(value, ", opaque=\"{opaque}\"");
        }
        value
    }
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// The first value of header `name` (lower case), trimmed.
fn header<'a>(head: &'a str, name: &'a str) -> Option<&'a str> {
    headers(head, name).next()
}

/// Every value of header `name` (lower case), one per field line; folded lines are not
/// expected from the server and are not joined.
fn headers<'a>(head: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    head.split("\r\n").skip(1).filter_map(move |line| {
        let (field, value) = line.split_once(':')?;
        field.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// `name=token` and `name="quoted string"` pairs, comma separated (RFC 2617 §1.2).
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|&c| c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect::<String>().trim().to_string();
        if name.is_empty() {
            return params;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|&c| c != ',').collect::<String>().trim().to_string();
        }
        params.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile { domain: "localhost".into(), user_prefix: "user".into(), password: "secret".into(), via: "WS" }
    }

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5, with its URI and method; qop=auth, nc=00000001.
        let challenge = Challenge {
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            qop_auth: true,
            stale: false,
        };
        let value = challenge.authorization("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(value.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{value}");
        assert!(value.contains("nc=00000001") && value.contains("qop=auth"), "{value}");
        assert!(value.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""), "{value}");
    }

    #[test]
    fn picks_the_md5_challenge_among_several() {
        let text = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\nCall-ID: abc\r\n\
                    CSeq: 1 REGISTER\r\n\
                    WWW-Authenticate: Digest realm=\"localhost\", nonce=\"n256\", algorithm=SHA-256, qop=\"auth\"\r\n\
                    www-authenticate: Digest realm=\"localhost\", nonce=\"n,5\", opaque=\"o\", qop=\"auth,auth-int\", \
                    stale=TRUE\r\nContent-Length: 0\r\n\r\n";
        let Incoming::Response(response) = Incoming::parse(text) else { panic!("not a response") };
        assert_eq!((response.status, response.cseq, response.call_id), (401, 1, "abc"));
        let challenge = response.md5_challenge().expect("MD5 challenge");
        assert_eq!(challenge.nonce, "n,5");
        assert_eq!(challenge.opaque.as_deref(), Some("o"));
        assert!(challenge.qop_auth && challenge.stale);
    }

    #[test]
    fn sha256_only_has_no_md5_challenge() {
        let text = "SIP/2.0 401 Unauthorized\r\nCSeq: 1 REGISTER\r\n\
                    WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256\r\n\r\n";
        let Incoming::Response(response) = Incoming::parse(text) else { panic!("not a response") };
        assert_eq!(response.md5_challenge(), None);
    }

    #[test]
    fn crlf_is_a_pong_and_requests_are_told_apart() {
        assert_eq!(Incoming::parse("\r\n"), Incoming::Pong);
        assert_eq!(
            Incoming::parse("OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            Incoming::Request { method: "OPTIONS" }
        );
        assert_eq!(Incoming::parse("hello"), Incoming::Garbage);
    }

    #[test]
    fn register_looks_like_jssip() {
        let ua = Ua::new(7, [0x11; 16]);
        let m = ua.register(&profile(), 1, None);
        assert!(m.starts_with("REGISTER sip:localhost SIP/2.0\r\n"), "{m}");
        assert!(m.contains("To: <sip:user7@localhost>\r\n"), "{m}");
        assert!(m.contains(";transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:11111111-1111-4111-9111-"));
        assert!(m.contains("Supported: path,gruu,outbound\r\n") && m.contains("Expires: 600\r\n"));
        assert!(m.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn answers_options_with_200_and_adds_a_to_tag() {
        let request = "OPTIONS sip:u@x.invalid SIP/2.0\r\nVia: SIP/2.0/WS a;branch=z9hG4bKq\r\nTo: <sip:u@x>\r\n\
                       From: <sip:s@y>;tag=1\r\nCall-ID: c\r\nCSeq: 9 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";
        let reply = answer(request, "OPTIONS").expect("an answer");
        assert!(reply.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/WS a;branch=z9hG4bKq\r\n"), "{reply}");
        assert!(reply.contains("To: <sip:u@x>;tag=") && !reply.contains("Max-Forwards"));
        assert_eq!(answer(request, "ACK"), None);
    }
}

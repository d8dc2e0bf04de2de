//! Outbound registration toward one trunk (RFC 3261 §10.2), kept the way a PBX keeps it so
//! that the carrier sends our DIDs to us: REGISTER, answer the digest challenge with the
//! trunk's credentials, refresh before the granted expiry, back off after failures, and
//! remove the binding on shutdown.
//!
//! Sans-IO like the rest of L5: [`TrunkRegistration::poll_request`] hands out the full text
//! of the next REGISTER when it is due, [`TrunkRegistration::on_response`] and
//! [`TrunkRegistration::on_timeout`] take what came back of it, and
//! [`TrunkRegistration::poll_timeout`] says when to poll again. The caller owns the
//! transport and the client transaction (retransmissions, Timer F), the clock and the
//! randomness (branches, cnonces). One REGISTER is in flight at a time (§10.2: a UA must
//! not send a new registration until the previous one has a final response or timed out).

use std::time::{Duration, Instant};

use crate::auth::client::{self, ClientDigestError};
use crate::message::digest::{DigestChallenge, parse_challenge};
use crate::message::{HeaderName, Message, Method, NameAddr, Uri};

use super::trunk::Trunk;

/// The first wait after a failure; it doubles with each failure in a row.
pub const INITIAL_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between attempts, also the cap on a trunk's Retry-After.
pub const MAX_RETRY: Duration = Duration::from_secs(600);
/// Requests sent at once in answer to one attempt's responses (challenges, stale nonces,
/// 423) before the attempt counts as failed: a trunk cannot keep us in a loop.
const MAX_IMMEDIATE_RETRIES: u8 = 4;

/// What to register where, and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationSpec {
    /// The Request-URI: the registrar's domain, `sip:host[:port]` (§10.2 "Request-URI").
    pub registrar: String,
    /// The address of record, `sip:user@domain`: To and From (§10.2).
    pub aor: String,
    /// Our Contact URI: where the trunk sends calls for the AOR.
    pub contact: String,
    pub username: String,
    pub password: String,
    /// Answer only challenges of this realm; any realm when `None`.
    pub realm: Option<String>,
    /// What we ask for; the registrar may grant less, or ask for more with 423.
    pub expires: Duration,
}

/// The top Via of one REGISTER, chosen by whoever sends it: its sent-by (`host:port`), its
/// transport token (`UDP`, `TCP`, `TLS`) and a fresh branch (§8.1.1.7: unique per request,
/// with the `z9hG4bK` magic cookie, added here when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaSpec {
    pub sent_by: String,
    pub transport: String,
    pub branch: String,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Nothing sent yet, or the binding was removed by [`TrunkRegistration::unregister`].
    Idle,
    /// The first REGISTER of an attempt, or its answer to a challenge, is in flight. A
    /// refresh while registered stays [`Self::Registered`].
    Registering,
    /// The registrar holds our binding until `until` (counted from when the REGISTER was
    /// sent, so never later than the registrar's own expiry).
    Registered { until: Instant },
    /// The last attempt failed with this final response (`None`: timed out, or no request
    /// could be built); the next one goes at `retry_at`.
    Failed { code: Option<u16>, retry_at: Instant },
}

/// One trunk's outbound registration: the state machine of RFC 3261 §10.2 with digest.
pub struct TrunkRegistration {
    spec: RegistrationSpec,
    /// Stable across refreshes with the From tag (§10.2.4 "SHOULD use the same Call-ID").
    call_id: String,
    from_tag: String,
    /// Of the last request sent; each REGISTER takes the next (§10.2 "CSeq").
    cseq: u32,
    state: RegistrationState,
    /// When `poll_request` sends the next REGISTER; `None` while one is in flight and after
    /// the binding was removed.
    due: Option<Instant>,
    in_flight: Option<InFlight>,
    /// What we ask for: `spec.expires`, raised by a 423's Min-Expires (§10.2.8).
    expires: Duration,
    /// The challenge we answer, reused with the next `nc` on later requests (RFC 7616
    /// §3.4: a client may reuse a nonce while the server accepts it).
    answer: Option<Answer>,
    /// The wait after the next failure.
    backoff: Duration,
    immediate_retries: u8,
    /// `unregister` was called: every request from now on has expires 0, and whatever
    /// comes back ends in `Idle`.
    unregistering: bool,
}

/// The request waiting for its final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    cseq: u32,
    kind: Kind,
    /// It answered a challenge that came in reply to the request before it: a second
    /// challenge (not stale) means the credentials are wrong (RFC 7616 §3.3).
    answers_challenge: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register { sent_at: Instant, expires: Duration },
    Unregister,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    challenge: DigestChallenge,
    /// From a 407 (Proxy-Authorization), else a 401 (Authorization).
    proxy: bool,
    /// The last `nc` sent with this nonce (0: none yet).
    nc: u32,
    /// The last cnonce sent, reused when the caller gives none (`unregister`).
    cnonce: String,
    /// Received in reply to the last request and not answered yet.
    fresh: bool,
}

impl RegistrationSpec {
    /// The registration a trunk asks for (`register = true` with credentials), at its first
    /// target: Request-URI `sip:host[:port]`, AOR `sip:username@host`. `contact` is ours as
    /// the trunk should reach us. `None` when the trunk does not register.
    pub fn from_trunk(trunk: &Trunk, contact: impl Into<String>, expires: Duration) -> Option<Self> {
        if !trunk.register {
            return None;
        }
        let credentials = trunk.credentials.as_ref()?;
        let target = trunk.targets.first()?;
        let host = if target.host.contains(':') && !target.host.starts_with('[') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let registrar = match target.port {
            Some(port) => format!("sip:{host}:{port}"),
            None => format!("sip:{host}"),
        };
        Some(Self {
            registrar,
            aor: format!("sip:{}@{host}", credentials.username),
            contact: contact.into(),
            username: credentials.username.clone(),
            password: credentials.password.clone(),
            realm: credentials.realm.clone(),
            expires,
        })
    }
}

impl std::fmt::Debug for RegistrationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationSpec")
            .field("registrar", &self.registrar)
            .field("aor", &self.aor)
            .field("contact", &self.contact)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("realm", &self.realm)
            .field("expires", &self.expires)
            .finish()
    }
}

impl std::fmt::Debug for TrunkRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkRegistration")
            .field("spec", &self.spec)
            .field("call_id", &self.call_id)
            .field("cseq", &self.cseq)
            .field("state", &self.state)
            .field("due", &self.due)
            .field("in_flight", &self.in_flight)
            .field("expires", &self.expires)
            .field("unregistering", &self.unregistering)
            .finish_non_exhaustive()
    }
}

impl TrunkRegistration {
    /// A registration whose first REGISTER is due at `now`. `call_id` and `from_tag` come
    /// from the caller's entropy and stay for the life of the registration.
    pub fn new(spec: RegistrationSpec, call_id: String, from_tag: String, now: Instant) -> Self {
        let expires = spec.expires;
        Self {
            spec,
            call_id,
            from_tag,
            cseq: 0,
            state: RegistrationState::Idle,
            due: Some(now),
            in_flight: None,
            expires,
            answer: None,
            backoff: INITIAL_RETRY,
            immediate_retries: 0,
            unregistering: false,
        }
    }

    pub fn spec(&self) -> &RegistrationSpec {
        &self.spec
    }

    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// The Call-ID every REGISTER of this registration carries: responses are matched on it.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The next REGISTER when one is due and none is in flight: the whole message, ready to
    /// send over the trunk's transport inside a client non-INVITE transaction. `cnonce` is
    /// a fresh client nonce, used if the request carries digest credentials.
    pub fn poll_request(&mut self, now: Instant, via: &ViaSpec, cnonce: &str) -> Option<Vec<u8>> {
        if self.in_flight.is_some() || self.due.is_none_or(|due| now < due) {
            return None;
        }
        let kind =
            if self.unregistering { Kind::Unregister } else { Kind::Register { sent_at: now, expires: self.expires } };
        match self.request(kind, via, Some(cnonce)) {
            Ok(bytes) => {
                if matches!(self.state, RegistrationState::Idle | RegistrationState::Failed { .. })
                    && !self.unregistering
                {
                    self.state = RegistrationState::Registering;
                }
                Some(bytes)
            }
            Err(error) => {
                tracing::warn!(registrar = %self.spec.registrar, %error, "trunk registration: cannot answer the challenge");
                self.fail(now, None, None);
                None
            }
        }
    }

    /// A response received for this registration's Call-ID. Responses to other requests
    /// (an older CSeq, another Call-ID or method) and provisional ones are ignored.
    pub fn on_response(&mut self, now: Instant, response: &Message) {
        let Some(code) = response.status() else { return };
        let Some(in_flight) = self.in_flight else { return };
        if code < 200 || !self.is_response_to(response, in_flight.cseq) {
            return;
        }
        self.in_flight = None;
        match code {
            200..=299 => self.on_success(now, response, in_flight),
            401 | 407 => self.on_challenge(now, response, code, in_flight),
            423 => self.on_too_brief(now, response, in_flight),
            _ => self.fail(now, Some(code), retry_after(response)),
        }
    }

    /// The client transaction of the request in flight timed out (Timer F, §17.1.2.2) or
    /// its transport failed: the attempt failed.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.in_flight.take().is_some() {
            self.fail(now, None, None);
        }
    }

    /// When `poll_request` has something to send; `None` while a request is in flight (its
    /// transaction's timers are the caller's) and once the binding was removed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() { None } else { self.due }
    }

    /// A REGISTER removing our binding (expires 0, §10.2.2), to send on shutdown; later
    /// responses and challenges to it are handled as for any REGISTER and end in `Idle`.
    /// `None` when nothing was ever registered or the binding is already removed.
    pub fn unregister(&mut self, via: &ViaSpec) -> Option<Vec<u8>> {
        if self.state == RegistrationState::Idle {
            // Nothing sent yet (or removed already): do not send one later either.
            self.due = None;
            self.unregistering = true;
            return None;
        }
        self.unregistering = true;
        self.immediate_retries = 0;
        // Replaces any request in flight: its response no longer matches the CSeq.
        self.in_flight = None;
        match self.request(Kind::Unregister, via, None) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::warn!(registrar = %self.spec.registrar, %error, "trunk unregistration: cannot build the request");
                self.finish_unregistering();
                None
            }
        }
    }

    /// Builds the next REGISTER and records it as in flight.
    fn request(&mut self, kind: Kind, via: &ViaSpec, cnonce: Option<&str>) -> Result<Vec<u8>, ClientDigestError> {
        let cseq = self.cseq.saturating_add(1);
        let method = Method::Register;
        let credentials = match &mut self.answer {
            None => None,
            Some(answer) => {
                let cnonce = match cnonce {
                    Some(c) => c.to_owned(),
                    // unregister() has no fresh cnonce: the last one with a higher nc is
                    // still a valid answer (RFC 7616 §3.4); the branch is fresh otherwise.
                    None if !answer.cnonce.is_empty() => answer.cnonce.clone(),
                    None => via.branch.trim_start_matches(BRANCH_COOKIE).to_owned(),
                };
                let nc = answer.nc.saturating_add(1);
                let value = client::authorization(
                    &answer.challenge,
                    &self.spec.username,
                    &self.spec.password,
                    method.as_str(),
                    &self.spec.registrar,
                    &cnonce,
                    nc,
                )?;
                answer.nc = nc;
                answer.cnonce = cnonce;
                let header = if answer.proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                Some((header, value))
            }
        };
        let answers_challenge = self.answer.as_mut().is_some_and(|a| std::mem::replace(&mut a.fresh, false));
        let expires = match kind {
            Kind::Register { expires, .. } => expires.as_secs(),
            Kind::Unregister => 0,
        };
        let branch = if via.branch.starts_with(BRANCH_COOKIE) {
            via.branch.clone()
        } else {
            format!("{BRANCH_COOKIE}{}", via.branch)
        };
        let spec = &self.spec;
        let mut text = format!(
            "REGISTER {registrar} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {sent_by};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>;expires={expires}\r\n\
             Expires: {expires}\r\n",
            registrar = spec.registrar,
            transport = via.transport,
            sent_by = via.sent_by,
            aor = spec.aor,
            tag = self.from_tag,
            call_id = self.call_id,
            contact = spec.contact,
        );
        if let Some((header, value)) = credentials {
            text.push_str(&format!("{}: {value}\r\n", header.as_str()));
        }
        text.push_str("User-Agent: webtrunk\r\nContent-Length: 0\r\n\r\n");

        self.cseq = cseq;
        self.due = None;
        self.in_flight = Some(InFlight { cseq, kind, answers_challenge });
        Ok(text.into_bytes())
    }

    fn is_response_to(&self, response: &Message, cseq: u32) -> bool {
        response.call_id().is_some_and(|id| id.as_ref() == self.call_id.as_bytes())
            && response.cseq() == Some((cseq, Method::Register))
    }

    fn on_success(&mut self, now: Instant, response: &Message, in_flight: InFlight) {
        let Kind::Register { sent_at, expires: asked } = in_flight.kind else {
            self.finish_unregistering();
            return;
        };
        // §10.2.4: the expiry of our Contact in the 200, else its Expires header, else
        // what we asked. More than we asked is read as what we asked: refreshing early is
        // harmless, and it bounds what a registrar can make us compute.
        let granted = granted_expiry(response, &self.spec.contact).unwrap_or(asked).min(asked);
        if granted.is_zero() {
            // The registrar kept no binding for us: not registered, whatever the 200 says.
            self.fail(now, Some(200), None);
            return;
        }
        let until = sent_at.checked_add(granted).unwrap_or(sent_at);
        self.state = RegistrationState::Registered { until };
        // Refresh at half the granted time: margin for a lost request and a challenge.
        self.due = Some(sent_at.checked_add(granted / 2).unwrap_or(sent_at));
        self.backoff = INITIAL_RETRY;
        self.immediate_retries = 0;
    }

    fn on_challenge(&mut self, now: Instant, response: &Message, code: u16, in_flight: InFlight) {
        let header = if code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
        let realm = self.spec.realm.as_deref();
        let offered: Vec<DigestChallenge> = response
            .headers_named(header)
            .filter_map(|h| parse_challenge(&response.value(h)).ok())
            .filter(|c| realm.is_none_or(|ours| ours == c.realm))
            .collect();
        let Some(chosen) = client::pick(&offered) else {
            tracing::warn!(registrar = %self.spec.registrar, code, "trunk registration: no challenge we can answer");
            self.fail(now, Some(code), None);
            return;
        };
        // Our answer was refused without stale=true: wrong username or password. Asking
        // again would only repeat it (and may get us blocked).
        if in_flight.answers_challenge && !chosen.stale {
            tracing::warn!(registrar = %self.spec.registrar, code, "trunk registration: credentials refused");
            self.fail(now, Some(code), None);
            return;
        }
        if !self.retry_now(now) {
            self.fail(now, Some(code), None);
            return;
        }
        self.answer =
            Some(Answer { challenge: chosen.clone(), proxy: code == 407, nc: 0, cnonce: String::new(), fresh: true });
    }

    /// §10.2.8: retry with the registrar's Min-Expires when it is more than we asked.
    fn on_too_brief(&mut self, now: Instant, response: &Message, in_flight: InFlight) {
        let min = response.first_value(HeaderName::MinExpires).and_then(|v| delta_seconds(&v));
        let asked = match in_flight.kind {
            Kind::Register { expires, .. } => expires,
            Kind::Unregister => Duration::ZERO,
        };
        match min {
            Some(min) if min > asked && !self.unregistering && self.retry_now(now) => self.expires = min,
            _ => self.fail(now, Some(423), None),
        }
    }

    /// Schedules an immediate retry within the attempt's budget; false when it is spent.
    fn retry_now(&mut self, now: Instant) -> bool {
        if self.immediate_retries >= MAX_IMMEDIATE_RETRIES {
            return false;
        }
        self.immediate_retries += 1;
        self.due = Some(now);
        true
    }

    /// The attempt failed: back off (or follow Retry-After, up to [`MAX_RETRY`]).
    fn fail(&mut self, now: Instant, code: Option<u16>, retry_after: Option<Duration>) {
        if self.unregistering {
            self.finish_unregistering();
            return;
        }
        let wait = retry_after.map_or(self.backoff, |d| d.min(MAX_RETRY));
        let retry_at = now.checked_add(wait).unwrap_or(now);
        tracing::info!(registrar = %self.spec.registrar, ?code, retry_in = ?wait, "trunk registration failed");
        self.state = RegistrationState::Failed { code, retry_at };
        self.due = Some(retry_at);
        self.backoff = self.backoff.saturating_mul(2).min(MAX_RETRY);
        self.immediate_retries = 0;
        // A failed attempt starts the next one without credentials: the nonce may be gone.
        self.answer = None;
    }

    fn finish_unregistering(&mut self) {
        self.state = RegistrationState::Idle;
        self.due = None;
        self.in_flight = None;
    }
}

/// RFC 3261 §8.1.1.7.
const BRANCH_COOKIE: &str = "z9hG4bK";

/// The expiry the registrar granted our contact: the `expires` parameter of the Contact in
/// the response that is ours, else the Expires header (§10.2.4).
fn granted_expiry(response: &Message, contact: &str) -> Option<Duration> {
    for element in response.list(HeaderName::Contact) {
        let Ok(listed) = NameAddr::parse(&element) else { continue };
        if !same_contact(listed.uri, contact) {
            continue;
        }
        if let Some(expires) = listed.param("expires").flatten().and_then(|v| delta_seconds(&v)) {
            return Some(expires);
        }
    }
    response.first_value(HeaderName::Expires).and_then(|v| delta_seconds(&v))
}

/// Whether a Contact URI in a response is ours: user, host and port of the SIP URI
/// (§19.1.4 compares more, but registrars add or reorder parameters), else the text.
fn same_contact(listed: &[u8], ours: &str) -> bool {
    match (Uri::parse(listed), Uri::parse(ours.as_bytes())) {
        (Ok(Uri::Sip(a)), Ok(Uri::Sip(b))) => {
            let default_port = |secure: bool| if secure { 5061 } else { 5060 };
            a.secure == b.secure
                && a.user == b.user
                && a.host == b.host
                && a.port.unwrap_or(default_port(a.secure)) == b.port.unwrap_or(default_port(b.secure))
        }
        _ => listed.eq_ignore_ascii_case(ours.as_bytes()),
    }
}

/// `delta-seconds = 1*DIGIT` (§25.1), read up to 2^32-1 as §20.19 bounds Expires.
fn delta_seconds(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs = text.parse::<u64>().unwrap_or(u64::MAX).min(u64::from(u32::MAX));
    Some(Duration::from_secs(secs))
}

/// `Retry-After = delta-seconds [ comment ] *( SEMI retry-param )` (§20.33): the seconds.
fn retry_after(response: &Message) -> Option<Duration> {
    let header = response.headers().iter().find(|h| response.raw_name(h).eq_ignore_ascii_case(b"Retry-After"))?;
    let value = response.value(header);
    let digits = value.iter().take_while(|c| c.is_ascii_digit()).count();
    delta_seconds(&value[..digits])
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::auth::{Algorithm, QopAuth, ha1, response};
    use crate::message::Limits;
    use crate::message::digest::parse_credentials;
    use crate::routing::{Credentials, TrunkTarget};

    const S: Duration = Duration::from_secs(1);
    const CONTACT: &str = "sip:pbx@192.0.2.10:5060";
    const REGISTRAR: &str = "sip:carrier.example";

    fn spec() -> RegistrationSpec {
        RegistrationSpec {
            registrar: REGISTRAR.into(),
            aor: "sip:pbx@carrier.example".into(),
            contact: CONTACT.into(),
            username: "pbx".into(),
            password: "secret".into(),
            realm: None,
            expires: 600 * S,
        }
    }

    fn via(n: u32) -> ViaSpec {
        ViaSpec { sent_by: "192.0.2.10:5060".into(), transport: "UDP".into(), branch: format!("z9hG4bKb{n}") }
    }

    /// A registration and a simulated clock.
    struct Harness {
        reg: TrunkRegistration,
        t0: Instant,
        sent: u32,
    }

    impl Harness {
        fn new(spec: RegistrationSpec) -> Self {
            let t0 = crate::clock::now();
            Self { reg: TrunkRegistration::new(spec, "call-1".into(), "tag-1".into(), t0), t0, sent: 0 }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        /// The request due at `secs`, parsed.
        fn send(&mut self, secs: f64) -> Message {
            self.sent += 1;
            let bytes = self
                .reg
                .poll_request(self.at(secs), &via(self.sent), &format!("cn{}", self.sent))
                .expect("a request is due");
            Message::parse(Bytes::from(bytes), &Limits::default()).unwrap()
        }

        fn answer(&mut self, secs: f64, request: &Message, status: &str, extra: &str) {
            let response = reply(request, status, extra);
            self.reg.on_response(self.at(secs), &response);
        }

        fn state(&self) -> RegistrationState {
            self.reg.state().clone()
        }
    }

    /// The response a registrar would send to `request` (§8.2.6: Via, From, To, Call-ID and
    /// CSeq copied).
    fn reply(request: &Message, status: &str, extra: &str) -> Message {
        let copy = |name| String::from_utf8(request.first_value(name).unwrap().into_owned()).unwrap();
        let text = format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            copy(HeaderName::Via),
            copy(HeaderName::From),
            copy(HeaderName::To),
            copy(HeaderName::CallId),
            copy(HeaderName::CSeq),
        );
        Message::parse(Bytes::from(text), &Limits::default()).unwrap()
    }

    fn text(m: &Message, name: HeaderName) -> Option<String> {
        m.first_value(name).map(|v| String::from_utf8(v.into_owned()).unwrap())
    }

    const CHALLENGE: &str =
        "WWW-Authenticate: Digest realm=\"carrier.example\", nonce=\"n1\", qop=\"auth\", opaque=\"op\"\r\n";

    /// The digest response the registrar expects for `creds` with password "secret".
    fn expected_response(request: &Message, header: HeaderName) -> (String, String) {
        let creds = parse_credentials(&request.first_value(header).unwrap()).unwrap();
        let algorithm = Algorithm::from_token(creds.algorithm.as_deref().unwrap_or("MD5")).unwrap();
        let ha1 = ha1(algorithm, "pbx", &creds.realm, "secret");
        let qop = creds.qop.as_deref().map(|qop| QopAuth {
            qop,
            nc: creds.nc_raw.as_deref().unwrap(),
            cnonce: creds.cnonce.as_deref().unwrap(),
        });
        (response(algorithm, &ha1, &creds.nonce, "REGISTER", &creds.uri, qop), creds.response.into_string())
    }

    #[test]
    fn first_register_is_due_at_once_and_carries_the_rfc3261_10_2_fields() {
        let mut h = Harness::new(spec());
        assert_eq!(h.reg.poll_timeout(), Some(h.t0));
        assert_eq!(h.state(), RegistrationState::Idle);
        let r = h.send(0.0);
        assert_eq!(r.method(), Some(&Method::Register));
        assert_eq!(r.request_uri(), Some(REGISTRAR.as_bytes()));
        assert_eq!(text(&r, HeaderName::Via).unwrap(), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKb1;rport");
        assert_eq!(text(&r, HeaderName::From).unwrap(), "<sip:pbx@carrier.example>;tag=tag-1");
        assert_eq!(text(&r, HeaderName::To).unwrap(), "<sip:pbx@carrier.example>");
        assert_eq!(text(&r, HeaderName::CallId).unwrap(), "call-1");
        assert_eq!(r.cseq(), Some((1, Method::Register)));
        assert_eq!(text(&r, HeaderName::Contact).unwrap(), format!("<{CONTACT}>;expires=600"));
        assert_eq!(text(&r, HeaderName::Expires).unwrap(), "600");
        assert_eq!(text(&r, HeaderName::MaxForwards).unwrap(), "70");
        assert!(r.header(HeaderName::Authorization).is_none());
        assert_eq!(h.state(), RegistrationState::Registering);
        // One at a time (§10.2): nothing more until this one is answered or times out.
        assert_eq!(h.reg.poll_timeout(), None);
        assert!(h.reg.poll_request(h.at(1.0), &via(9), "x").is_none());
    }

    #[test]
    fn challenge_is_answered_once_then_200_registers_and_refreshes_at_half_the_grant() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", CHALLENGE);
        assert_eq!(h.state(), RegistrationState::Registering);
        assert_eq!(h.reg.poll_timeout(), Some(h.at(0.1)), "answered at once");
        let second = h.send(0.1);
        assert_eq!(second.cseq(), Some((2, Method::Register)));
        assert_eq!(text(&second, HeaderName::CallId).unwrap(), "call-1");
        assert_eq!(text(&second, HeaderName::From).unwrap(), "<sip:pbx@carrier.example>;tag=tag-1");
        let creds = parse_credentials(&second.first_value(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!((creds.uri.as_str(), creds.nonce.as_str(), creds.nc), (REGISTRAR, "n1", Some(1)));
        assert_eq!((creds.cnonce.as_deref(), creds.opaque.as_deref()), (Some("cn2"), Some("op")));
        let (expected, sent) = expected_response(&second, HeaderName::Authorization);
        assert_eq!(expected, sent);

        let contact =
            format!("Contact: <sip:other@192.0.2.99>;expires=3000, <{CONTACT}>;expires=120\r\nExpires: 900\r\n");
        h.answer(0.2, &second, "200 OK", &contact);
        assert_eq!(h.state(), RegistrationState::Registered { until: h.at(120.1) }, "from when it was sent");
        assert_eq!(h.reg.poll_timeout(), Some(h.at(60.1)));
        assert!(h.reg.poll_request(h.at(60.0), &via(9), "x").is_none(), "not yet due");

        // The refresh: same Call-ID and tag, next CSeq, the nonce reused with nc=2.
        let refresh = h.send(60.1);
        assert_eq!(refresh.cseq(), Some((3, Method::Register)));
        assert_eq!(text(&refresh, HeaderName::CallId).unwrap(), "call-1");
        let creds = parse_credentials(&refresh.first_value(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!((creds.nonce.as_str(), creds.nc, creds.cnonce.as_deref()), ("n1", Some(2), Some("cn3")));
        let (expected, sent) = expected_response(&refresh, HeaderName::Authorization);
        assert_eq!(expected, sent);
        assert!(matches!(h.state(), RegistrationState::Registered { .. }), "a refresh keeps the binding");
        h.answer(60.2, &refresh, "200 OK", &format!("Contact: <{CONTACT}>;expires=120\r\n"));
        assert_eq!(h.state(), RegistrationState::Registered { until: h.at(180.1) });
    }

    #[test]
    fn same_challenge_again_without_stale_fails_and_does_not_loop() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", CHALLENGE);
        let second = h.send(0.1);
        h.answer(0.2, &second, "401 Unauthorized", CHALLENGE);
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(401), retry_at: h.at(30.2) });
        assert_eq!(h.reg.poll_timeout(), Some(h.at(30.2)));
        assert!(h.reg.poll_request(h.at(30.0), &via(9), "x").is_none());
        // The retry starts afresh, without the old credentials.
        let retry = h.send(30.2);
        assert!(retry.header(HeaderName::Authorization).is_none());
        assert_eq!(h.state(), RegistrationState::Registering);
    }

    #[test]
    fn stale_challenge_is_answered_with_the_new_nonce() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", CHALLENGE);
        let second = h.send(0.1);
        let stale = "WWW-Authenticate: Digest realm=\"carrier.example\", nonce=\"n2\", qop=\"auth\", stale=true\r\n";
        h.answer(0.2, &second, "401 Unauthorized", stale);
        assert_eq!(h.state(), RegistrationState::Registering);
        let third = h.send(0.2);
        let creds = parse_credentials(&third.first_value(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!((creds.nonce.as_str(), creds.nc, creds.opaque), ("n2", Some(1), None));
        h.answer(0.3, &third, "200 OK", "");
        assert_eq!(h.state(), RegistrationState::Registered { until: h.at(600.2) }, "the asked 600 s");
    }

    #[test]
    fn endless_stale_challenges_end_in_failure() {
        let mut h = Harness::new(spec());
        let mut request = h.send(0.0);
        for i in 0..u32::from(MAX_IMMEDIATE_RETRIES) {
            let stale = format!("WWW-Authenticate: Digest realm=\"r\", nonce=\"s{i}\", stale=true\r\n");
            h.answer(0.0, &request, "401 Unauthorized", &stale);
            request = h.send(0.0);
        }
        h.answer(
            0.0,
            &request,
            "401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"x\", stale=true\r\n",
        );
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(401), retry_at: h.at(30.0) });
    }

    #[test]
    fn preemptive_credentials_refused_with_a_new_nonce_are_answered_not_failed() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.0, &first, "401 Unauthorized", CHALLENGE);
        let second = h.send(0.0);
        h.answer(0.0, &second, "200 OK", "Expires: 60\r\n");
        let refresh = h.send(30.0);
        assert!(refresh.header(HeaderName::Authorization).is_some());
        // The registrar forgot n1 and says so without stale: a new challenge, answered.
        let fresh = "WWW-Authenticate: Digest realm=\"carrier.example\", nonce=\"n9\", qop=\"auth\"\r\n";
        h.answer(30.1, &refresh, "401 Unauthorized", fresh);
        let answer = h.send(30.1);
        let creds = parse_credentials(&answer.first_value(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!((creds.nonce.as_str(), creds.nc), ("n9", Some(1)));
        h.answer(30.2, &answer, "200 OK", "Expires: 60\r\n");
        assert_eq!(h.state(), RegistrationState::Registered { until: h.at(90.1) });
    }

    #[test]
    fn proxy_challenge_is_answered_with_proxy_authorization_and_strongest_algorithm() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        let challenges = "Proxy-Authenticate: Digest realm=\"p\", nonce=\"m\", algorithm=MD5, qop=\"auth\"\r\n\
                          Proxy-Authenticate: Digest realm=\"p\", nonce=\"s\", algorithm=SHA-256, qop=\"auth\"\r\n";
        h.answer(0.1, &first, "407 Proxy Authentication Required", challenges);
        let second = h.send(0.1);
        assert!(second.header(HeaderName::Authorization).is_none());
        let creds = parse_credentials(&second.first_value(HeaderName::ProxyAuthorization).unwrap()).unwrap();
        assert_eq!((creds.algorithm.as_deref(), creds.nonce.as_str()), (Some("SHA-256"), "s"));
        let (expected, sent) = expected_response(&second, HeaderName::ProxyAuthorization);
        assert_eq!(expected, sent);
    }

    #[test]
    fn challenge_of_another_realm_or_algorithm_fails() {
        let mut h = Harness::new(RegistrationSpec { realm: Some("carrier.example".into()), ..spec() });
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"elsewhere\", nonce=\"n\"\r\n");
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(401), retry_at: h.at(30.1) });

        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        let unsupported = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256\r\n\
                           WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"\r\n";
        h.answer(0.1, &first, "401 Unauthorized", unsupported);
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(401), retry_at: h.at(30.1) });

        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", "");
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(401), retry_at: h.at(30.1) }, "no challenge");
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let mut h = Harness::new(RegistrationSpec { expires: 60 * S, ..spec() });
        let first = h.send(0.0);
        h.answer(0.1, &first, "423 Interval Too Brief", "Min-Expires: 1800\r\n");
        assert_eq!(h.reg.poll_timeout(), Some(h.at(0.1)));
        let second = h.send(0.1);
        assert_eq!(text(&second, HeaderName::Expires).unwrap(), "1800");
        assert_eq!(text(&second, HeaderName::Contact).unwrap(), format!("<{CONTACT}>;expires=1800"));
        h.answer(0.2, &second, "200 OK", &format!("Contact: <{CONTACT}>;expires=1800\r\n"));
        assert_eq!(h.state(), RegistrationState::Registered { until: h.at(1800.1) });
        // Refreshes keep asking for what the registrar wants.
        let refresh = h.send(900.1);
        assert_eq!(text(&refresh, HeaderName::Expires).unwrap(), "1800");
    }

    #[test]
    fn interval_too_brief_without_a_larger_min_expires_fails() {
        for extra in ["", "Min-Expires: 600\r\n", "Min-Expires: 30\r\n", "Min-Expires: soon\r\n"] {
            let mut h = Harness::new(spec());
            let first = h.send(0.0);
            h.answer(0.1, &first, "423 Interval Too Brief", extra);
            assert_eq!(h.state(), RegistrationState::Failed { code: Some(423), retry_at: h.at(30.1) }, "{extra:?}");
        }
    }

    #[test]
    fn failures_back_off_doubling_to_the_cap_and_success_resets_it() {
        let mut h = Harness::new(spec());
        let mut now = 0.0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let r = h.send(now);
            h.answer(now, &r, "403 Forbidden", "");
            let RegistrationState::Failed { code, retry_at } = h.state() else { panic!("failed") };
            assert_eq!(code, Some(403));
            let wait = retry_at - h.at(now);
            waits.push(wait.as_secs());
            now += wait.as_secs_f64();
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        let r = h.send(now);
        h.answer(now, &r, "200 OK", "Expires: 100\r\n");
        h.send(now + 50.0);
        h.reg.on_timeout(h.at(now + 82.0));
        assert_eq!(h.state(), RegistrationState::Failed { code: None, retry_at: h.at(now + 112.0) }, "reset to 30 s");
        // A timeout with nothing in flight changes nothing.
        h.reg.on_timeout(h.at(now + 83.0));
        assert_eq!(h.state(), RegistrationState::Failed { code: None, retry_at: h.at(now + 112.0) });
    }

    #[test]
    fn retry_after_is_followed_up_to_the_cap() {
        let mut h = Harness::new(spec());
        let r = h.send(0.0);
        h.answer(0.0, &r, "503 Service Unavailable", "Retry-After: 5 (maintenance);duration=60\r\n");
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(503), retry_at: h.at(5.0) });
        let r = h.send(5.0);
        h.answer(5.0, &r, "503 Service Unavailable", "Retry-After: 99999\r\n");
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(503), retry_at: h.at(605.0) });
    }

    #[test]
    fn granted_expiry_prefers_our_contact_then_expires_then_what_we_asked() {
        let cases = [
            // Our contact matched despite case, added parameters and the default port.
            ("Contact: <sip:pbx@192.0.2.10;transport=udp>;expires=50\r\nExpires: 70\r\n", 50),
            ("Contact: <sip:someone@192.0.2.10:5060>;expires=50\r\nExpires: 70\r\n", 70),
            ("Contact: <sip:pbx@192.0.2.10:5060>\r\nExpires: 70\r\n", 70),
            ("", 600),
            ("Expires: 7200\r\n", 600),
            ("Expires: 99999999999999999999\r\n", 600),
            ("Expires: -1\r\n", 600),
        ];
        for (extra, secs) in cases {
            let mut h = Harness::new(spec());
            let r = h.send(0.0);
            h.answer(0.5, &r, "200 OK", extra);
            assert_eq!(h.state(), RegistrationState::Registered { until: h.at(secs as f64) }, "{extra:?}");
            assert_eq!(h.reg.poll_timeout(), Some(h.at(secs as f64 / 2.0)), "{extra:?}");
        }
        let mut h = Harness::new(spec());
        let r = h.send(0.0);
        h.answer(0.5, &r, "200 OK", &format!("Contact: <{CONTACT}>;expires=0\r\n"));
        assert_eq!(h.state(), RegistrationState::Failed { code: Some(200), retry_at: h.at(30.5) }, "no binding kept");
    }

    #[test]
    fn responses_to_other_requests_and_provisional_ones_are_ignored() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.0, &first, "401 Unauthorized", CHALLENGE);
        let second = h.send(0.0);
        // A late retransmission of the 401 to CSeq 1 does not count as a second challenge.
        h.answer(0.1, &first, "401 Unauthorized", CHALLENGE);
        h.answer(0.1, &second, "100 Trying", "");
        assert_eq!(h.state(), RegistrationState::Registering);
        let text = String::from_utf8_lossy(second.as_bytes()).replace("call-1", "call-2");
        let other = Message::parse(Bytes::from(text.into_bytes()), &Limits::default()).unwrap();
        h.answer(0.1, &other, "200 OK", "");
        let options = String::from_utf8_lossy(second.as_bytes()).replace("2 REGISTER", "2 OPTIONS");
        let options = Message::parse(Bytes::from(options.into_bytes()), &Limits::default()).unwrap();
        h.answer(0.1, &options, "200 OK", "");
        h.reg.on_response(h.at(0.1), &second);
        assert_eq!(h.state(), RegistrationState::Registering, "a request is not a response");
        h.answer(0.2, &second, "200 OK", "");
        assert!(matches!(h.state(), RegistrationState::Registered { .. }));
    }

    #[test]
    fn unregister_sends_expires_zero_with_credentials_and_ends_idle() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.0, &first, "401 Unauthorized", CHALLENGE);
        let second = h.send(0.0);
        h.answer(0.1, &second, "200 OK", "Expires: 600\r\n");
        let bytes = h.reg.unregister(&via(7)).unwrap();
        let bye = Message::parse(Bytes::from(bytes), &Limits::default()).unwrap();
        assert_eq!(bye.cseq(), Some((3, Method::Register)));
        assert_eq!(text(&bye, HeaderName::Expires).unwrap(), "0");
        assert_eq!(text(&bye, HeaderName::Contact).unwrap(), format!("<{CONTACT}>;expires=0"));
        let creds = parse_credentials(&bye.first_value(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!((creds.nc, creds.cnonce.as_deref()), (Some(2), Some("cn2")), "the last cnonce, next nc");
        assert_eq!(h.reg.poll_timeout(), None);
        h.answer(0.2, &bye, "200 OK", "");
        assert_eq!(h.state(), RegistrationState::Idle);
        assert_eq!(h.reg.poll_timeout(), None, "no refresh after unregistering");
        assert!(h.reg.poll_request(h.at(1000.0), &via(8), "x").is_none());
        assert!(h.reg.unregister(&via(9)).is_none(), "already removed");
    }

    #[test]
    fn unregister_answers_a_challenge_and_gives_up_on_failure() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "200 OK", "");
        let bytes = h.reg.unregister(&via(7)).unwrap();
        let bye = Message::parse(Bytes::from(bytes), &Limits::default()).unwrap();
        assert!(bye.header(HeaderName::Authorization).is_none());
        h.answer(0.2, &bye, "401 Unauthorized", CHALLENGE);
        let answered = h.send(0.2);
        assert_eq!(text(&answered, HeaderName::Expires).unwrap(), "0");
        let (expected, sent) = expected_response(&answered, HeaderName::Authorization);
        assert_eq!(expected, sent);
        h.answer(0.3, &answered, "401 Unauthorized", CHALLENGE);
        assert_eq!(h.state(), RegistrationState::Idle, "shutting down: no retry");
        assert_eq!(h.reg.poll_timeout(), None);

        // Timed out: likewise.
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        h.answer(0.1, &first, "200 OK", "");
        h.reg.unregister(&via(7)).unwrap();
        h.reg.on_timeout(h.at(32.0));
        assert_eq!(h.state(), RegistrationState::Idle);
    }

    #[test]
    fn unregister_before_anything_was_sent_sends_nothing_ever() {
        let mut h = Harness::new(spec());
        assert!(h.reg.unregister(&via(1)).is_none());
        assert_eq!(h.reg.poll_timeout(), None);
        assert!(h.reg.poll_request(h.t0, &via(2), "x").is_none());
    }

    #[test]
    fn unregister_while_the_first_register_is_in_flight_replaces_it() {
        let mut h = Harness::new(spec());
        let first = h.send(0.0);
        let bytes = h.reg.unregister(&via(7)).unwrap();
        let bye = Message::parse(Bytes::from(bytes), &Limits::default()).unwrap();
        h.answer(0.1, &first, "200 OK", "");
        assert_eq!(h.state(), RegistrationState::Registering, "the old CSeq is ignored");
        h.answer(0.1, &bye, "200 OK", "");
        assert_eq!(h.state(), RegistrationState::Idle);
    }

    #[test]
    fn credentials_that_cannot_be_written_fail_the_attempt() {
        let mut h = Harness::new(RegistrationSpec { username: "pbx\r\nX: y".into(), ..spec() });
        let first = h.send(0.0);
        h.answer(0.1, &first, "401 Unauthorized", CHALLENGE);
        assert!(h.reg.poll_request(h.at(0.1), &via(9), "c").is_none());
        assert_eq!(h.state(), RegistrationState::Failed { code: None, retry_at: h.at(30.1) });
    }

    #[test]
    fn branch_gets_the_magic_cookie_when_missing() {
        let mut h = Harness::new(spec());
        let via = ViaSpec { branch: "abc".into(), ..via(1) };
        let bytes = h.reg.poll_request(h.t0, &via, "c").unwrap();
        let r = Message::parse(Bytes::from(bytes), &Limits::default()).unwrap();
        assert_eq!(text(&r, HeaderName::Via).unwrap(), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport");
    }

    #[test]
    fn spec_from_a_registering_trunk_with_credentials() {
        let mut trunk = Trunk::new("carrier", vec![TrunkTarget::new("2001:db8::1", Some(5070))]);
        let contact = "sip:pbx@203.0.113.5:5060";
        assert_eq!(RegistrationSpec::from_trunk(&trunk, contact, 600 * S), None, "register = false");
        trunk.register = true;
        assert_eq!(RegistrationSpec::from_trunk(&trunk, contact, 600 * S), None, "no credentials");
        trunk.credentials =
            Some(Credentials { username: "acct1".into(), password: "pw".into(), realm: Some("carrier".into()) });
        let spec = RegistrationSpec::from_trunk(&trunk, contact, 600 * S).unwrap();
        assert_eq!(spec.registrar, "sip:[2001:db8::1]:5070");
        assert_eq!(spec.aor, "sip:acct1@[2001:db8::1]");
        assert_eq!((spec.username.as_str(), spec.realm.as_deref()), ("acct1", Some("carrier")));
        assert!(!format!("{spec:?}").contains("pw\""), "Debug hides the password");
        trunk.targets = vec![TrunkTarget::new("sip.carrier.example", None)];
        let spec = RegistrationSpec::from_trunk(&trunk, contact, 600 * S).unwrap();
        assert_eq!(
            (spec.registrar.as_str(), spec.aor.as_str()),
            ("sip:sip.carrier.example", "sip:acct1@sip.carrier.example")
        );
    }
}

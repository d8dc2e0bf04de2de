//! L3: SIP digest authentication (RFC 3261 §22, RFC 7616 and RFC 8760 algorithms, RFC 2617
//! qop=auth), sans-IO: the registrar asks it about REGISTER (401/WWW-Authenticate), the proxy
//! about requests to trunks (407/Proxy-Authenticate).
//!
//! - [`Authenticator::challenges`]: the challenge header values, with stateless expiring
//!   nonces (`nonce`): nothing is stored per challenge.
//! - [`Authenticator::verify`]: one request's credentials to a [`Verdict`].
//! - [`UserDirectory`]: where HA1 comes from; [`Users`] is the in-memory one.
//!
//! State is bounded: per-nonce `nc` history (`replay`) and per-source failure counts
//! (`throttle`), both swept by [`Authenticator::sweep`]. Time comes in as arguments; this
//! module reads no clock and draws randomness only from the [`Entropy`] it is given. It
//! uses `crate::message` (header values) and `crate::clock` only.

pub mod client;
mod hash;
mod nonce;
mod replay;
mod throttle;
mod users;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::clock::Entropy;
use crate::message::digest::{DigestError, parse_credentials};

pub use hash::{Algorithm, QopAuth, ha1, response};
pub use users::{UserDirectory, UserEntry, Users};

use nonce::NonceKey;
use replay::{NonceCount, ReplayGuard};
use throttle::Throttle;

/// Digest settings (the registrar's and the proxy's realm may differ: one authenticator
/// each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub realm: String,
    /// How long a nonce is accepted after it was issued.
    pub nonce_ttl: Duration,
    /// Offered in this order (RFC 8760 §2.4: the preferred first). An empty list means the
    /// default.
    pub algorithms: Vec<Algorithm>,
    /// Failures from one source tolerated within `failure_window`; one more blocks it.
    pub max_failures: u32,
    pub failure_window: Duration,
    pub block_time: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            realm: "localhost".to_owned(),
            nonce_ttl: Duration::from_secs(300),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            block_time: Duration::from_secs(60),
        }
    }
}

/// What to answer a request after looking at its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Authenticated {
        username: String,
    },
    /// Answer 401/407 with fresh challenges; `stale` when the nonce was ours but expired and
    /// the response was right (RFC 7616 §3.3: the client retries without asking the user).
    Challenge {
        stale: bool,
    },
    /// Too many failures from this source: answer 503 with Retry-After and stop spending
    /// hashes on it.
    Throttled {
        retry_after: Duration,
    },
    /// Credentials that cannot be read: 400 with this reason.
    Malformed(&'static str),
}

/// The 400 reason when the digest-uri is not the Request-URI (RFC 7616 §3.4.6).
pub const URI_MISMATCH: &str = "Digest URI Does Not Match Request-URI";

/// A nonce issued this far in the future (by our own clock) is still accepted: room for a
/// wall clock stepped back by NTP, or nodes sharing a secret with slightly different clocks.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Issues challenges and checks credentials for one realm.
pub struct Authenticator {
    config: AuthConfig,
    key: NonceKey,
    replay: ReplayGuard,
    throttle: Throttle,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .field("tracked_nonces", &self.replay.len())
            .field("tracked_sources", &self.throttle.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `secret` keys the nonce MAC. Nodes that share it accept each other's nonces; a new
    /// secret (a restart with a random one) makes outstanding nonces foreign, which clients
    /// survive with one more challenge.
    pub fn new(mut config: AuthConfig, secret: [u8; 32]) -> Self {
        let mut algorithms = Vec::with_capacity(2);
        for a in std::mem::take(&mut config.algorithms) {
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
        config.algorithms = if algorithms.is_empty() { AuthConfig::default().algorithms } else { algorithms };
        let throttle =
            Throttle::new(config.max_failures, config.failure_window, config.block_time, throttle::MAX_TRACKED_SOURCES);
        Self { key: NonceKey::new(secret), replay: ReplayGuard::new(replay::MAX_TRACKED_NONCES), throttle, config }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Header values for WWW-Authenticate (or Proxy-Authenticate), one per algorithm in the
    /// configured order, except that `prefer_md5` moves MD5 last: JsSIP 3.13 and SIP.js
    /// 0.21 keep only the last WWW-Authenticate of a response (their parsers replace a
    /// header on each occurrence) and abort on anything but MD5. It adds nothing when MD5
    /// is not configured. All carry the same nonce. Each:
    /// `Digest realm="..", nonce="..", algorithm=MD5, qop="auth"` (+ `, stale=true`).
    pub fn challenges(&self, now_unix: Duration, entropy: &mut Entropy, stale: bool, prefer_md5: bool) -> Vec<String> {
        let nonce = self.key.mint(now_unix.as_secs(), entropy.bytes::<8>(), &self.config.realm);
        let mut algorithms = self.config.algorithms.clone();
        if prefer_md5 && let Some(at) = algorithms.iter().position(|&a| a == Algorithm::Md5) {
            algorithms[at..].rotate_left(1);
        }
        let realm = quote(&self.config.realm);
        algorithms
            .into_iter()
            .map(|a| {
                let mut value = String::with_capacity(realm.len() + nonce.len() + 64);
                for part in
                    ["Digest realm=", &realm, ", nonce=\"", &nonce, "\", algorithm=", a.token(), ", qop=\"auth\""]
                {
                    value.push_str(part);
                }
                if stale {
                    value.push_str(", stale=true");
                }
                value
            })
            .collect()
    }

    /// Checks the credentials of one request. `credentials` is the raw header value (None
    /// when the request carried none). `request_uri` is the Request-URI as received.
    ///
    /// Unknown user and wrong password give the same verdict and both count as a failure
    /// of `source`, as does a replayed `nc`. No credentials, an unknown scheme, a foreign
    /// realm or nonce, or an algorithm we did not offer are answered with a challenge but
    /// tested no password and do not count.
    #[expect(
        clippy::too_many_arguments,
        reason = "the engine's call site names each input; a struct would only wrap them"
    )]
    pub fn verify(
        &mut self,
        now: Instant,
        now_unix: Duration,
        source: IpAddr,
        method: &str,
        request_uri: &[u8],
        credentials: Option<&[u8]>,
        users: &dyn UserDirectory,
    ) -> Verdict {
        if let Some(retry_after) = self.throttle.blocked(source, now) {
            return Verdict::Throttled { retry_after };
        }
        match self.check(now, now_unix, method, request_uri, credentials, users) {
            Check::Done(verdict) => verdict,
            Check::Failure => match self.throttle.record_failure(source, now) {
                Some(retry_after) => Verdict::Throttled { retry_after },
                None => Verdict::Challenge { stale: false },
            },
        }
    }

    /// Drops replay and throttle state older than its window; call from the engine's timer.
    pub fn sweep(&mut self, now: Instant) {
        self.replay.sweep(now);
        self.throttle.sweep(now);
    }

    fn check(
        &mut self,
        now: Instant,
        now_unix: Duration,
        method: &str,
        request_uri: &[u8],
        credentials: Option<&[u8]>,
        users: &dyn UserDirectory,
    ) -> Check {
        const FRESH_CHALLENGE: Check = Check::Done(Verdict::Challenge { stale: false });
        const STALE_CHALLENGE: Check = Check::Done(Verdict::Challenge { stale: true });

        let Some(raw) = credentials else { return FRESH_CHALLENGE };
        let creds = match parse_credentials(raw) {
            Ok(creds) => creds,
            // RFC 4475 §3.3.7 (regaut01): "A registrar that does care about challenge-response
            // authentication will reject this request with a 401, issuing a new challenge
            // with a scheme it understands."
            Err(DigestError::Scheme) => return FRESH_CHALLENGE,
            Err(e) => return Check::Done(Verdict::Malformed(e.reason())),
        };
        // RFC 7616 §3.4.6: compared with the Request-URI as received, byte for byte.
        if creds.uri.as_bytes() != request_uri {
            return Check::Done(Verdict::Malformed(URI_MISMATCH));
        }
        if creds.realm != self.config.realm {
            return FRESH_CHALLENGE;
        }
        let algorithm = match creds.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(token) => match Algorithm::from_token(token) {
                Some(a) => a,
                None => return FRESH_CHALLENGE,
            },
        };
        if !self.config.algorithms.contains(&algorithm) {
            return FRESH_CHALLENGE;
        }
        // qop=auth (as offered) or none at all (RFC 2069 clients); auth-int was not offered.
        let qop = match (&creds.qop, &creds.nc_raw, &creds.cnonce, creds.nc) {
            (None, ..) => None,
            (Some(qop), Some(nc_raw), Some(cnonce), Some(nc)) if qop.eq_ignore_ascii_case("auth") => {
                Some((QopAuth { qop, nc: nc_raw, cnonce }, nc))
            }
            (Some(qop), ..) if !qop.eq_ignore_ascii_case("auth") => return FRESH_CHALLENGE,
            // The parser guarantees cnonce and nc with qop; kept total rather than unwrapped.
            (Some(_), ..) => return Check::Done(Verdict::Malformed(DigestError::MissingNonceCount.reason())),
        };
        let Some(nonce) = self.key.open(&creds.nonce, &self.config.realm) else { return FRESH_CHALLENGE };
        let now_secs = now_unix.as_secs();
        let age = Duration::from_secs(now_secs.saturating_sub(nonce.issued));
        let fresh = age <= self.config.nonce_ttl && nonce.issued <= now_secs.saturating_add(MAX_CLOCK_SKEW.as_secs());

        // The same work for unknown users as for known ones, and never a success: a fixed
        // HA1 is public, so a response computed from it must not authenticate anybody.
        let stored = users.ha1(&creds.username, &self.config.realm, algorithm);
        let known = stored.is_some();
        let ha1 = stored.unwrap_or_else(|| algorithm.hash_joined(&[b"webtrunk-unknown-user"]));
        let expected = response(algorithm, &ha1, &creds.nonce, method, &creds.uri, qop.map(|(q, _)| q));
        if !(hash::hex_eq(&expected, &creds.response) && known) {
            return Check::Failure;
        }
        // RFC 7616 §3.3: stale=true says the response was right and only the nonce is old.
        if !fresh {
            return STALE_CHALLENGE;
        }
        if let Some((_, nc)) = qop {
            let expires = deadline(now, self.config.nonce_ttl.saturating_sub(age).saturating_add(MAX_CLOCK_SKEW));
            match self.replay.check(nonce.id, nonce.issued, nc, expires) {
                NonceCount::Fresh => {}
                // The response was right, only its nc was used before: SIP.js re-sends the
                // Authorization of its last REGISTER on every refresh. stale=true makes such a
                // client compute a fresh one without asking its user; a replaying attacker
                // cannot. No password was guessed, so it is not a failure either.
                NonceCount::Replayed => return STALE_CHALLENGE,
                NonceCount::Forgotten => return STALE_CHALLENGE,
            }
        }
        Check::Done(Verdict::Authenticated { username: creds.username.into_string() })
    }
}

/// The outcome of one check before throttling sees it.
enum Check {
    Done(Verdict),
    /// A wrong response or unknown user: counts against the source.
    Failure,
}

/// `now + after`, saturating: `Instant + Duration` panics on overflow, and an absurd
/// configured duration must not panic the engine. Past the end of time counts as a year.
fn deadline(now: Instant, after: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(after).or_else(|| now.checked_add(YEAR)).unwrap_or(now)
}

/// `quoted-string` of a value (RFC 3261 §25.1: `"` and `\` escaped), for our challenges
/// and for our answers to trunks' ones.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::message::digest::{DigestChallenge, parse_challenge};

    const S: Duration = Duration::from_secs(1);
    const REALM: &str = "example.com";
    const RURI: &str = "sip:example.com;transport=ws";
    const T0: Duration = Duration::from_secs(1_700_000_000);
    const CNONCE: &str = "rbtf6v2bdm8u";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn users() -> Users {
        let mut m = HashMap::new();
        m.insert("alice".to_owned(), UserEntry { password: Some("wonderland".into()), ..UserEntry::default() });
        m.insert(
            "bob".to_owned(),
            UserEntry {
                password: None,
                ha1_md5: Some(ha1(Algorithm::Md5, "bob", REALM, "builder")),
                ha1_sha256: Some(ha1(Algorithm::Sha256, "bob", REALM, "builder")),
            },
        );
        Users::new(m)
    }

    fn config() -> AuthConfig {
        AuthConfig { realm: REALM.into(), max_failures: 3, ..AuthConfig::default() }
    }

    /// An authenticator, a simulated monotonic clock and its first challenge.
    struct Harness {
        auth: Authenticator,
        start: Instant,
        entropy: Entropy,
    }

    impl Harness {
        fn new(config: AuthConfig) -> Self {
            Self { auth: Authenticator::new(config, [3; 32]), start: crate::clock::now(), entropy: Entropy::seeded(1) }
        }

        /// The challenge for `algorithm` issued `at` seconds after T0.
        fn challenge(&mut self, at: Duration, algorithm: Algorithm) -> DigestChallenge {
            self.auth
                .challenges(T0 + at, &mut self.entropy, false, false)
                .iter()
                .map(|c| parse_challenge(c.as_bytes()).unwrap())
                .find(|c| c.algorithm.as_deref() == Some(algorithm.token()))
                .unwrap()
        }

        fn verify(&mut self, at: Duration, source: &str, uri: &str, header: Option<&str>) -> Verdict {
            self.auth.verify(
                self.start + at,
                T0 + at,
                ip(source),
                "REGISTER",
                uri.as_bytes(),
                header.map(str::as_bytes),
                &users(),
            )
        }
    }

    /// What a JsSIP-like client sends for `user`/`password`.
    fn answer(c: &DigestChallenge, algorithm: Algorithm, user: &str, password: &str, nc: u32) -> String {
        let ha1 = ha1(algorithm, user, &c.realm, password);
        let nc = format!("{nc:08x}");
        let qop = QopAuth { qop: "auth", nc: &nc, cnonce: CNONCE };
        let r = response(algorithm, &ha1, &c.nonce, "REGISTER", RURI, Some(qop));
        format!(
            r#"Digest algorithm={}, username="{user}", realm="{}", nonce="{}", uri="{RURI}", response="{r}", qop=auth, cnonce="{CNONCE}", nc={nc}"#,
            algorithm.token(),
            c.realm,
            c.nonce
        )
    }

    fn authenticated(user: &str) -> Verdict {
        Verdict::Authenticated { username: user.to_owned() }
    }

    const FRESH: Verdict = Verdict::Challenge { stale: false };
    const STALE: Verdict = Verdict::Challenge { stale: true };

    #[test]
    fn correct_response_with_transport_ws_uri_is_authenticated() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let mut h = Harness::new(config());
            let c = h.challenge(Duration::ZERO, algorithm);
            let header = answer(&c, algorithm, "alice", "wonderland", 1);
            assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&header)), authenticated("alice"), "{algorithm:?}");
        }
    }

    #[test]
    fn response_without_qop_rfc2069_is_authenticated() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let ha1 = ha1(Algorithm::Md5, "alice", REALM, "wonderland");
        let r = response(Algorithm::Md5, &ha1, &c.nonce, "REGISTER", RURI, None);
        let header =
            format!(r#"Digest username="alice", realm="{REALM}", nonce="{}", uri="{RURI}", response="{r}""#, c.nonce);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&header)), authenticated("alice"));
    }

    #[test]
    fn response_in_upper_case_hex_is_authenticated() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        let (head, tail) = header.split_once("response=\"").unwrap();
        let (r, rest) = tail.split_once('"').unwrap();
        let upper = format!("{head}response=\"{}\"{rest}", r.to_ascii_uppercase());
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&upper)), authenticated("alice"));
    }

    #[test]
    fn stored_ha1_is_used_instead_of_a_password() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let mut h = Harness::new(config());
            let c = h.challenge(Duration::ZERO, algorithm);
            let header = answer(&c, algorithm, "bob", "builder", 1);
            assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&header)), authenticated("bob"), "{algorithm:?}");
        }
    }

    #[test]
    fn wrong_password_is_challenged_without_stale() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Sha256);
        let header = answer(&c, Algorithm::Sha256, "alice", "guess", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&header)), FRESH);
    }

    #[test]
    fn unknown_user_gets_the_same_verdict_as_a_wrong_password() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let wrong = h.verify(S, "192.0.2.1", RURI, Some(&answer(&c, Algorithm::Md5, "alice", "guess", 1)));
        let unknown = h.verify(S, "192.0.2.2", RURI, Some(&answer(&c, Algorithm::Md5, "mallory", "x", 1)));
        assert_eq!(wrong, unknown);
        // A response computed from the placeholder HA1 of unknown users does not pass either.
        let placeholder = Algorithm::Md5.hash_joined(&[b"webtrunk-unknown-user"]);
        let qop = QopAuth { qop: "auth", nc: "00000001", cnonce: CNONCE };
        let r = response(Algorithm::Md5, &placeholder, &c.nonce, "REGISTER", RURI, Some(qop));
        let forged = answer(&c, Algorithm::Md5, "mallory", "x", 1).replace(
            &response(
                Algorithm::Md5,
                &ha1(Algorithm::Md5, "mallory", REALM, "x"),
                &c.nonce,
                "REGISTER",
                RURI,
                Some(qop),
            ),
            &r,
        );
        assert_eq!(h.verify(S, "192.0.2.3", RURI, Some(&forged)), FRESH);
        // Both counted: one more failure from 192.0.2.1 and .2 each stays under the limit.
        assert_eq!(h.auth.throttle.len(), 3);
    }

    /// RFC 7616 §3.3: stale=true when the response was valid but the nonce had expired.
    #[test]
    fn expired_nonce_with_correct_response_is_stale() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(300 * S, "192.0.2.1", RURI, Some(&header)), authenticated("alice"), "ttl inclusive");
        let later = answer(&c, Algorithm::Md5, "alice", "wonderland", 2);
        assert_eq!(h.verify(301 * S, "192.0.2.1", RURI, Some(&later)), Verdict::Challenge { stale: true });
        let wrong = answer(&c, Algorithm::Md5, "alice", "guess", 3);
        assert_eq!(h.verify(301 * S, "192.0.2.1", RURI, Some(&wrong)), FRESH, "a wrong response is never stale");
    }

    #[test]
    fn nonce_from_the_future_is_stale() {
        let mut h = Harness::new(config());
        let c = h.challenge(60 * S, Algorithm::Md5);
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(Duration::ZERO, "192.0.2.1", RURI, Some(&header)), Verdict::Challenge { stale: true });
        let c = h.challenge(65 * S, Algorithm::Md5);
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(60 * S, "192.0.2.1", RURI, Some(&header)), authenticated("alice"), "within the skew");
    }

    #[test]
    fn forged_nonce_is_challenged_without_stale() {
        let mut h = Harness::new(config());
        let mut c = h.challenge(Duration::ZERO, Algorithm::Md5);
        // Flip one bit of the MAC half.
        let last = c.nonce.pop().unwrap();
        c.nonce.push(if last == '0' { '1' } else { '0' });
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&header)), FRESH);
        // The RFC 2617 nonce and a nonce of another secret are not ours either.
        c.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093".into();
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&answer(&c, Algorithm::Md5, "alice", "wonderland", 1))), FRESH);
        let other = Authenticator::new(config(), [4; 32]).challenges(T0, &mut Entropy::seeded(2), false, false);
        c.nonce = parse_challenge(other[0].as_bytes()).unwrap().nonce;
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&answer(&c, Algorithm::Md5, "alice", "wonderland", 1))), FRESH);
        assert_eq!(h.auth.throttle.len(), 0, "a foreign nonce tested no password");
    }

    #[test]
    fn replayed_nonce_count_is_challenged_and_increasing_is_authenticated() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Sha256);
        let first = answer(&c, Algorithm::Sha256, "alice", "wonderland", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&first)), authenticated("alice"));
        assert_eq!(h.verify(2 * S, "192.0.2.9", RURI, Some(&first)), STALE, "the same nc again is a replay");
        let second = answer(&c, Algorithm::Sha256, "alice", "wonderland", 2);
        assert_eq!(h.verify(3 * S, "192.0.2.1", RURI, Some(&second)), authenticated("alice"));
        let tenth = answer(&c, Algorithm::Sha256, "alice", "wonderland", 10);
        assert_eq!(h.verify(4 * S, "192.0.2.1", RURI, Some(&tenth)), authenticated("alice"));
        assert_eq!(h.verify(5 * S, "192.0.2.1", RURI, Some(&second)), STALE, "lower than the highest is a replay");
        assert!(h.auth.throttle.blocked(ip("192.0.2.9"), h.start + 5 * S).is_none());
        assert_eq!(h.auth.throttle.len(), 0, "a replay guessed no password: not a failure");
    }

    /// RFC 7616 §3.4.6: the digest-uri must be the Request-URI.
    #[test]
    fn digest_uri_that_differs_from_request_uri_is_malformed() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let header = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        for other in ["sip:example.com", "sip:example.com;transport=WS", "sip:EXAMPLE.com;transport=ws"] {
            assert_eq!(h.verify(S, "192.0.2.1", other, Some(&header)), Verdict::Malformed(URI_MISMATCH), "{other}");
        }
    }

    #[test]
    fn foreign_realm_and_algorithm_not_offered_are_challenged() {
        let mut h = Harness::new(AuthConfig { algorithms: vec![Algorithm::Sha256], ..config() });
        let c = h.challenge(Duration::ZERO, Algorithm::Sha256);
        let md5 = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&md5)), FRESH);
        let sess = answer(&c, Algorithm::Sha256, "alice", "wonderland", 1).replace("SHA-256", "SHA-256-sess");
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&sess)), FRESH);
        let realm = answer(&c, Algorithm::Sha256, "alice", "wonderland", 1)
            .replace(r#"realm="example.com""#, r#"realm="other.example.com""#);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&realm)), FRESH);
        let auth_int = answer(&c, Algorithm::Sha256, "alice", "wonderland", 1).replace("qop=auth", "qop=auth-int");
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&auth_int)), FRESH);
        assert_eq!(h.auth.throttle.len(), 0, "no password was tested");
    }

    #[test]
    fn request_without_credentials_is_challenged_and_not_a_failure() {
        let mut h = Harness::new(config());
        for i in 0..50 {
            assert_eq!(h.verify(i * S / 10, "192.0.2.1", RURI, None), FRESH);
        }
        assert_eq!(h.auth.throttle.len(), 0);
    }

    /// RFC 4475 §3.3.7 (regaut01): an unknown scheme gets a new challenge, not a 400.
    #[test]
    fn regaut01_unknown_scheme_is_challenged() {
        let mut h = Harness::new(config());
        let v = h.verify(S, "192.0.2.1", "sip:example.com", Some("NoOneKnowsThisScheme opaque-data=here"));
        assert_eq!(v, FRESH);
        assert_eq!(parse_credentials(b"NoOneKnowsThisScheme opaque-data=here"), Err(DigestError::Scheme));
    }

    #[test]
    fn unreadable_credentials_are_malformed_with_the_rule_as_reason() {
        let mut h = Harness::new(config());
        let v = h.verify(S, "192.0.2.1", RURI, Some(r#"Digest username="alice", realm="example.com""#));
        assert_eq!(v, Verdict::Malformed("Digest Without nonce"));
        let v = h.verify(S, "192.0.2.1", RURI, Some(r#"Digest username="alice"#));
        assert_eq!(v, Verdict::Malformed("Unterminated Quoted String in Digest"));
    }

    #[test]
    fn throttled_after_max_failures_and_released_after_block_time() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let wrong = answer(&c, Algorithm::Md5, "alice", "guess", 1);
        for i in 1..=3 {
            assert_eq!(h.verify(i * S, "192.0.2.1", RURI, Some(&wrong)), FRESH, "failure {i}");
        }
        assert_eq!(h.verify(4 * S, "192.0.2.1", RURI, Some(&wrong)), Verdict::Throttled { retry_after: 60 * S });
        // Blocked: even the right password and a bare request get 503, with the time left.
        let right = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(30 * S, "192.0.2.1", RURI, Some(&right)), Verdict::Throttled { retry_after: 34 * S });
        assert_eq!(h.verify(63 * S, "192.0.2.1", RURI, None), Verdict::Throttled { retry_after: S });
        // Other sources are not affected.
        assert_eq!(h.verify(30 * S, "192.0.2.2", RURI, Some(&right)), authenticated("alice"));
        // Released after block_time with a clean count.
        let c = h.challenge(64 * S, Algorithm::Md5);
        let right = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(64 * S, "192.0.2.1", RURI, Some(&right)), authenticated("alice"));
        let wrong = answer(&c, Algorithm::Md5, "alice", "guess", 2);
        assert_eq!(h.verify(65 * S, "192.0.2.1", RURI, Some(&wrong)), FRESH);
    }

    #[test]
    fn success_does_not_reset_the_failure_count() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        for i in 1..=3u32 {
            let wrong = answer(&c, Algorithm::Md5, "mallory", "x", i);
            assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&wrong)), FRESH);
        }
        let right = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(2 * S, "192.0.2.1", RURI, Some(&right)), authenticated("alice"));
        let wrong = answer(&c, Algorithm::Md5, "mallory", "x", 9);
        assert!(matches!(h.verify(3 * S, "192.0.2.1", RURI, Some(&wrong)), Verdict::Throttled { .. }));
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let wrong = answer(&c, Algorithm::Md5, "alice", "guess", 1);
        for i in 0..3 {
            assert_eq!(h.verify(i * S, "192.0.2.1", RURI, Some(&wrong)), FRESH);
        }
        // At 60 s the failure at 0 s has left the 60 s window: three in it, not four.
        assert_eq!(h.verify(60 * S, "192.0.2.1", RURI, Some(&wrong)), FRESH);
        // The failures at 1 s and 2 s are still inside: one more makes four.
        assert!(matches!(h.verify(60 * S + S / 2, "192.0.2.1", RURI, Some(&wrong)), Verdict::Throttled { .. }));
    }

    #[test]
    fn sweep_forgets_aged_state() {
        let mut h = Harness::new(config());
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&answer(&c, Algorithm::Md5, "alice", "x", 1))), FRESH);
        let right = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&right)), authenticated("alice"));
        assert_eq!((h.auth.replay.len(), h.auth.throttle.len()), (1, 1));
        h.auth.sweep(h.start + 30 * S);
        assert_eq!((h.auth.replay.len(), h.auth.throttle.len()), (1, 1));
        h.auth.sweep(h.start + 310 * S);
        assert_eq!((h.auth.replay.len(), h.auth.throttle.len()), (0, 0));
    }

    #[test]
    fn challenges_follow_configured_order_and_prefer_md5_moves_md5_last() {
        let h = Harness::new(config());
        let mut e = Entropy::seeded(5);
        let first = |cs: &[String]| parse_challenge(cs[0].as_bytes()).unwrap().algorithm;
        let normal = h.auth.challenges(T0, &mut e, false, false);
        assert_eq!(normal.len(), 2);
        assert_eq!(first(&normal).as_deref(), Some("SHA-256"));
        let jssip = h.auth.challenges(T0, &mut e, false, true);
        assert_eq!(first(&jssip).as_deref(), Some("SHA-256"));
        assert_eq!(
            parse_challenge(jssip[1].as_bytes()).unwrap().algorithm.as_deref(),
            Some("MD5"),
            "the last one counts"
        );
        let md5_first =
            Authenticator::new(AuthConfig { algorithms: vec![Algorithm::Md5, Algorithm::Sha256], ..config() }, [0; 32]);
        let cs = md5_first.challenges(T0, &mut e, false, true);
        assert_eq!(parse_challenge(cs[1].as_bytes()).unwrap().algorithm.as_deref(), Some("MD5"));
        let only_sha = Authenticator::new(AuthConfig { algorithms: vec![Algorithm::Sha256], ..config() }, [0; 32]);
        let cs = only_sha.challenges(T0, &mut e, false, true);
        assert_eq!((cs.len(), first(&cs).as_deref()), (1, Some("SHA-256")), "prefer_md5 adds nothing");
    }

    #[test]
    fn challenge_header_reads_back_with_stale_and_escaped_realm() {
        let h = Harness::new(AuthConfig { realm: r#"a "quoted" \ realm"#.into(), ..config() });
        let cs = h.auth.challenges(T0, &mut Entropy::seeded(5), true, false);
        assert!(cs[0].starts_with(r#"Digest realm="a \"quoted\" \\ realm", nonce=""#), "{}", cs[0]);
        assert!(cs[0].ends_with(r#", algorithm=SHA-256, qop="auth", stale=true"#), "{}", cs[0]);
        let c = parse_challenge(cs[0].as_bytes()).unwrap();
        assert_eq!(c.realm, r#"a "quoted" \ realm"#);
        assert_eq!(c.qop, vec!["auth".to_owned()]);
        assert!(c.stale);
        assert_eq!(c.nonce.len(), 64);
        let fresh = h.auth.challenges(T0, &mut Entropy::seeded(5), false, false);
        assert!(fresh[0].ends_with(r#"qop="auth""#));
    }

    #[test]
    fn default_config_is_the_documented_one() {
        let d = AuthConfig::default();
        assert_eq!(d.realm, "localhost");
        assert_eq!((d.nonce_ttl, d.failure_window, d.block_time), (300 * S, 60 * S, 60 * S));
        assert_eq!(d.algorithms, vec![Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(d.max_failures, 10);
        let dup =
            Authenticator::new(AuthConfig { algorithms: vec![Algorithm::Md5, Algorithm::Md5], ..config() }, [0; 32]);
        assert_eq!(dup.config().algorithms, vec![Algorithm::Md5]);
        let empty = Authenticator::new(AuthConfig { algorithms: vec![], ..config() }, [0; 32]);
        assert_eq!(empty.config().algorithms, AuthConfig::default().algorithms);
    }

    #[test]
    fn huge_configured_durations_do_not_overflow() {
        let max = Duration::MAX;
        let mut h = Harness::new(AuthConfig {
            nonce_ttl: max,
            failure_window: max,
            block_time: max,
            max_failures: 0,
            ..config()
        });
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let right = answer(&c, Algorithm::Md5, "alice", "wonderland", 1);
        assert_eq!(h.verify(S, "192.0.2.1", RURI, Some(&right)), authenticated("alice"));
        let wrong = answer(&c, Algorithm::Md5, "alice", "guess", 2);
        assert!(matches!(h.verify(S, "192.0.2.1", RURI, Some(&wrong)), Verdict::Throttled { .. }));
        h.auth.sweep(h.start + 2 * S);
    }

    /// Random and mutated credentials give a verdict, never a panic.
    #[test]
    fn mutated_credentials_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut h = Harness::new(AuthConfig { max_failures: u32::MAX, ..config() });
        let c = h.challenge(Duration::ZERO, Algorithm::Md5);
        let base = answer(&c, Algorithm::Md5, "alice", "wonderland", 1).into_bytes();
        let mut rng = StdRng::seed_from_u64(2617);
        for _ in 0..5_000 {
            let mut input = base.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..input.len());
                input[at] = rng.random();
            }
            let _ = h.auth.verify(
                h.start + S,
                T0 + S,
                ip("192.0.2.1"),
                "REGISTER",
                RURI.as_bytes(),
                Some(&input),
                &users(),
            );
        }
    }
}

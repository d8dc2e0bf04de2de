//! The UAC side of digest (RFC 7616 §3.4, RFC 2617 §3.2.2, RFC 8760): answering a
//! WWW-Authenticate or Proxy-Authenticate challenge of a trunk with the trunk's credentials.
//!
//! - [`pick`]: of the challenges of one 401/407, the strongest we can answer.
//! - [`authorization`]: the Authorization / Proxy-Authorization header value for one request.
//!
//! Pure functions over the challenge: nonce counts and cnonces are the caller's (the
//! registration or the proxy keeps them per nonce), and nothing here reads a clock.

use crate::message::digest::DigestChallenge;

use super::hash::{Algorithm, QopAuth, ha1, response};
use super::quote;

/// Why a challenge cannot be answered, or a value cannot be written into the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientDigestError {
    /// An `algorithm` we do not implement (`MD5-sess`, `SHA-512-256`, ...).
    #[error("digest algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    /// A `qop-options` list without `auth` (only `auth-int`, which would hash the body).
    #[error("digest qop options {0:?} do not include auth")]
    UnsupportedQop(Vec<String>),
    /// `qop=auth` needs a client nonce (RFC 7616 §3.4: cnonce MUST be sent with qop).
    #[error("digest qop=auth needs a non-empty cnonce")]
    EmptyCnonce,
    /// A value would carry a control character (CR, LF, ...) into the header.
    #[error("digest {0} holds a control character")]
    ControlCharacter(&'static str),
}

/// Of the challenges of one response (RFC 8760 §2.4: a server may offer one per
/// algorithm), the strongest one [`authorization`] can answer: SHA-256 over MD5, the first
/// of equals. Challenges with an unknown algorithm or without `auth` among several qop
/// options are skipped.
pub fn pick(challenges: &[DigestChallenge]) -> Option<&DigestChallenge> {
    let mut best: Option<(&DigestChallenge, Algorithm)> = None;
    for challenge in challenges {
        let Ok(algorithm) = algorithm_of(challenge) else { continue };
        if qop_of(challenge).is_err() {
            continue;
        }
        let stronger = match best {
            None => true,
            Some((_, held)) => strength(algorithm) > strength(held),
        };
        if stronger {
            best = Some((challenge, algorithm));
        }
    }
    best.map(|(challenge, _)| challenge)
}

/// The value of an Authorization (401) or Proxy-Authorization (407) header answering
/// `challenge` for one request:
///
/// `Digest username="..", realm="..", nonce="..", uri="..", response="..", algorithm=MD5,
/// cnonce="..", qop=auth, nc=00000001, opaque=".."`
///
/// `uri` is the Request-URI exactly as sent (the server compares it, RFC 7616 §3.4.6).
/// With `qop=auth` offered the response covers `cnonce` and `nc` (start `nc` at 1 for each
/// new nonce and increase it for every reuse, RFC 7616 §3.4); with no qop offered it is the
/// RFC 2069 form without them. `opaque` is echoed unchanged (RFC 7616 §3.3).
pub fn authorization(
    challenge: &DigestChallenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, ClientDigestError> {
    let algorithm = algorithm_of(challenge)?;
    let qop = qop_of(challenge)?;
    // The challenge's values come from a parser that refuses control characters, but the
    // struct can be built by hand: check everything that reaches the header line.
    let opaque = challenge.opaque.as_deref().unwrap_or_default();
    let written = [
        ("username", username),
        ("uri", uri),
        ("cnonce", cnonce),
        ("method", method),
        ("realm", challenge.realm.as_str()),
        ("nonce", challenge.nonce.as_str()),
        ("opaque", opaque),
    ];
    for (name, value) in written {
        if value.chars().any(char::is_control) {
            return Err(ClientDigestError::ControlCharacter(name));
        }
    }
    let ha1 = ha1(algorithm, username, &challenge.realm, password);
    let nc_text = format!("{nc:08x}");
    let qop_inputs = match qop {
        Qop::Auth if cnonce.is_empty() => return Err(ClientDigestError::EmptyCnonce),
        Qop::Auth => Some(QopAuth { qop: "auth", nc: &nc_text, cnonce }),
        Qop::None => None,
    };
    let digest = response(algorithm, &ha1, &challenge.nonce, method, uri, qop_inputs);

    let mut value = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{digest}\", algorithm={}",
        quote(username),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        quote(uri),
        algorithm.token(),
    );
    if qop_inputs.is_some() {
        // RFC 7616 §3.4: qop and nc are tokens, cnonce a quoted-string.
        value.push_str(&format!(", cnonce={}, qop=auth, nc={nc_text}", quote(cnonce)));
    }
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque={}", quote(opaque)));
    }
    Ok(value)
}

/// The qop we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qop {
    /// RFC 2069 compatibility: the server offered no qop.
    None,
    Auth,
}

fn algorithm_of(challenge: &DigestChallenge) -> Result<Algorithm, ClientDigestError> {
    match challenge.algorithm.as_deref() {
        // RFC 7616 §3.3: an absent algorithm means MD5.
        None => Ok(Algorithm::Md5),
        Some(token) => {
            Algorithm::from_token(token).ok_or_else(|| ClientDigestError::UnsupportedAlgorithm(token.to_owned()))
        }
    }
}

fn qop_of(challenge: &DigestChallenge) -> Result<Qop, ClientDigestError> {
    if challenge.qop.is_empty() {
        return Ok(Qop::None);
    }
    if challenge.qop.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
        return Ok(Qop::Auth);
    }
    Err(ClientDigestError::UnsupportedQop(challenge.qop.clone()))
}

/// RFC 8760 §2.4: the client uses the strongest algorithm it supports.
fn strength(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::Md5 => 0,
        Algorithm::Sha256 => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::auth::{AuthConfig, Authenticator, UserEntry, Users, Verdict};
    use crate::clock::Entropy;
    use crate::message::digest::{parse_challenge, parse_credentials};

    fn challenge(value: &str) -> DigestChallenge {
        parse_challenge(value.as_bytes()).unwrap()
    }

    /// RFC 2617 §3.5: the Mufasa example (qop=auth chosen from "auth,auth-int").
    #[test]
    fn rfc2617_example_gives_the_published_response() {
        let c = challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        );
        let value = authorization(&c, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", "0a4f113b", 1).unwrap();
        assert_eq!(
            value,
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        );
    }

    /// RFC 7616 §3.9.1: the SHA-256 challenge of the example and its response.
    #[test]
    fn rfc7616_sha256_example_gives_the_published_response() {
        let c = challenge(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        );
        let value = authorization(
            &c,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        )
        .unwrap();
        let creds = parse_credentials(value.as_bytes()).unwrap();
        assert_eq!(creds.response, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        assert_eq!(creds.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(creds.opaque.as_deref(), Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"));
        assert_eq!((creds.qop.as_deref(), creds.nc), (Some("auth"), Some(1)));
    }

    /// What our own registrar would accept: the header verified by [`Authenticator`].
    #[test]
    fn answer_to_our_own_challenge_is_authenticated_for_each_algorithm() {
        const REALM: &str = "trunk.example";
        const URI: &str = "sip:trunk.example;transport=tcp";
        let mut users = HashMap::new();
        users.insert("pbx".to_owned(), UserEntry { password: Some("s3cret\"\\".into()), ..UserEntry::default() });
        let users = Users::new(users);
        let t0 = Duration::from_secs(1_700_000_000);
        for algorithms in [vec![Algorithm::Md5], vec![Algorithm::Sha256], vec![Algorithm::Md5, Algorithm::Sha256]] {
            let config = AuthConfig { realm: REALM.into(), algorithms: algorithms.clone(), ..AuthConfig::default() };
            let mut server = Authenticator::new(config, [9; 32]);
            let offered: Vec<_> = server
                .challenges(t0, &mut Entropy::seeded(1), false, false)
                .iter()
                .map(|v| parse_challenge(v.as_bytes()).unwrap())
                .collect();
            let chosen = pick(&offered).unwrap();
            assert_eq!(chosen.algorithm.as_deref(), Some(algorithms.last().unwrap().token()), "strongest offered");
            for nc in 1..=2 {
                let value = authorization(chosen, "pbx", "s3cret\"\\", "REGISTER", URI, "c0ffee", nc).unwrap();
                let verdict = server.verify(
                    crate::clock::now(),
                    t0,
                    IpAddr::from([192, 0, 2, 1]),
                    "REGISTER",
                    URI.as_bytes(),
                    Some(value.as_bytes()),
                    &users,
                );
                assert_eq!(verdict, Verdict::Authenticated { username: "pbx".into() }, "{algorithms:?} nc={nc}");
            }
            let wrong = authorization(chosen, "pbx", "guess", "REGISTER", URI, "c0ffee", 3).unwrap();
            let verdict = server.verify(
                crate::clock::now(),
                t0,
                IpAddr::from([192, 0, 2, 1]),
                "REGISTER",
                URI.as_bytes(),
                Some(wrong.as_bytes()),
                &users,
            );
            assert_eq!(verdict, Verdict::Challenge { stale: false });
        }
    }

    #[test]
    fn no_qop_offered_gives_the_rfc2069_form() {
        let c = challenge(r#"Digest realm="r", nonce="n""#);
        let value = authorization(&c, "u", "p", "REGISTER", "sip:r", "ignored", 7).unwrap();
        let ha1 = ha1(Algorithm::Md5, "u", "r", "p");
        let expected = response(Algorithm::Md5, &ha1, "n", "REGISTER", "sip:r", None);
        assert_eq!(
            value,
            format!(r#"Digest username="u", realm="r", nonce="n", uri="sip:r", response="{expected}", algorithm=MD5"#)
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_and_read_back() {
        let c = challenge(r#"Digest realm="a \"b\" \\ c", nonce="n\"1", qop=auth, opaque="o\\""#);
        let value = authorization(&c, r#"us"er"#, "p", "REGISTER", "sip:r", "cn", 1).unwrap();
        let creds = parse_credentials(value.as_bytes()).unwrap();
        assert_eq!(creds.username, r#"us"er"#);
        assert_eq!(creds.realm, r#"a "b" \ c"#);
        assert_eq!(creds.nonce, r#"n"1"#);
        assert_eq!(creds.opaque.as_deref(), Some(r"o\"));
        // The response is over the unescaped values, as the server computes it.
        let ha1 = ha1(Algorithm::Md5, r#"us"er"#, r#"a "b" \ c"#, "p");
        let qop = QopAuth { qop: "auth", nc: "00000001", cnonce: "cn" };
        assert_eq!(creds.response, response(Algorithm::Md5, &ha1, r#"n"1"#, "REGISTER", "sip:r", Some(qop)));
    }

    #[test]
    fn auth_int_only_and_unknown_algorithms_are_refused() {
        let auth_int = challenge(r#"Digest realm="r", nonce="n", qop="auth-int""#);
        assert_eq!(
            authorization(&auth_int, "u", "p", "REGISTER", "sip:r", "c", 1),
            Err(ClientDigestError::UnsupportedQop(vec!["auth-int".into()]))
        );
        let sess = challenge(r#"Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess"#);
        assert_eq!(
            authorization(&sess, "u", "p", "REGISTER", "sip:r", "c", 1),
            Err(ClientDigestError::UnsupportedAlgorithm("MD5-sess".into()))
        );
        let md5 = challenge(r#"Digest realm="r", nonce="n", qop="auth""#);
        assert_eq!(authorization(&md5, "u", "p", "REGISTER", "sip:r", "", 1), Err(ClientDigestError::EmptyCnonce));
        assert_eq!(
            authorization(&md5, "u\r\nX: y", "p", "REGISTER", "sip:r", "c", 1),
            Err(ClientDigestError::ControlCharacter("username"))
        );
    }

    #[test]
    fn pick_prefers_sha256_and_skips_what_it_cannot_answer() {
        let md5 = challenge(r#"Digest realm="r", nonce="1", algorithm=MD5, qop="auth""#);
        let bare = challenge(r#"Digest realm="r", nonce="2""#);
        let sha = challenge(r#"Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth""#);
        let sha512 = challenge(r#"Digest realm="r", nonce="4", algorithm=SHA-512-256, qop="auth""#);
        let sha_int = challenge(r#"Digest realm="r", nonce="5", algorithm=SHA-256, qop="auth-int""#);
        let all = [md5.clone(), sha512.clone(), sha.clone(), bare.clone()];
        assert_eq!(pick(&all).map(|c| c.nonce.as_str()), Some("3"));
        let no_sha = [sha_int.clone(), md5.clone(), bare.clone()];
        assert_eq!(pick(&no_sha).map(|c| c.nonce.as_str()), Some("1"), "the first of equals");
        assert_eq!(pick(&[sha512, sha_int]), None);
        assert_eq!(pick(&[]), None);
    }
}

//! The digest computations (RFC 7616 §3.4.1–3.4.3, RFC 2617 §3.2.2): HA1, HA2 and the
//! request-digest, for the algorithms we offer (RFC 8760 names SHA-256 for SIP).

use md5::{Digest, Md5};
use sha2::Sha256;

/// A digest algorithm. The `-sess` variants are not offered: they need the cnonce of the
/// first request to be remembered, and no browser client uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 3261 §22.4); also what an absent `algorithm` means.
    Md5,
    /// `SHA-256` (RFC 7616 §3.2, RFC 8760 §2).
    Sha256,
}

impl Algorithm {
    /// Reads an `algorithm` value; tokens are case-insensitive. `None` for anything we do
    /// not implement (`MD5-sess`, `SHA-512-256`, ...).
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if token.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// The token as written in a challenge.
    pub fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// `H(parts[0] ":" parts[1] ":" ...)` in lower-case hex.
    pub(crate) fn hash_joined(self, parts: &[&[u8]]) -> String {
        match self {
            Self::Md5 => joined::<Md5>(parts),
            Self::Sha256 => joined::<Sha256>(parts),
        }
    }
}

/// `HA1 = H(username ":" realm ":" password)` in lower-case hex (RFC 7616 §3.4.2).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_joined(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The `qop=auth` inputs of a response, each exactly as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// `qop` as sent (`auth`).
    pub qop: &'a str,
    /// `nc` as sent (8 hex digits).
    pub nc: &'a str,
    pub cnonce: &'a str,
}

/// The request-digest in lower-case hex (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1), with
/// `HA2 = H(method ":" digest-uri)`:
/// with qop, `H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)`; without (RFC 2069),
/// `H(HA1 ":" nonce ":" HA2)`. `uri` is the digest-uri exactly as the client sent it.
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<QopAuth<'_>>,
) -> String {
    let ha2 = algorithm.hash_joined(&[method.as_bytes(), uri.as_bytes()]);
    match qop {
        Some(q) => algorithm.hash_joined(&[
            ha1.as_bytes(),
            nonce.as_bytes(),
            q.nc.as_bytes(),
            q.cnonce.as_bytes(),
            q.qop.as_bytes(),
            ha2.as_bytes(),
        ]),
        None => algorithm.hash_joined(&[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Compares a received hex digest with the expected lower-case one without an early exit
/// on the first differing byte; hex letters in `received` may be upper-case.
pub(crate) fn hex_eq(expected: &str, received: &str) -> bool {
    let (a, b) = (expected.as_bytes(), received.as_bytes());
    if a.len() != b.len() {
        // The length is the algorithm's, public anyway.
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase())) == 0
}

fn joined<D: Digest>(parts: &[&[u8]]) -> String {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    lower_hex(&hasher.finalize())
}

/// Lower-case hex, as `hex::encode` writes it, a byte pair at a time: every challenge and
/// every response checked is one or two of these.
pub(super) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the MD5, qop=auth example.
    #[test]
    fn rfc2617_md5_qop_auth_example_vector() {
        let ha1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        let qop = QopAuth { qop: "auth", nc: "00000001", cnonce: "0a4f113b" };
        let r =
            response(Algorithm::Md5, &ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", Some(qop));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1: the SHA-256 and MD5 responses of the same request.
    #[test]
    fn rfc7616_sha256_example_vector() {
        let qop = QopAuth { qop: "auth", nc: "00000001", cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ" };
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let at = |algorithm| {
            let ha1 = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life");
            response(algorithm, &ha1, nonce, "GET", "/dir/index.html", Some(qop))
        };
        assert_eq!(at(Algorithm::Sha256), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        assert_eq!(at(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn algorithm_tokens_are_case_insensitive_and_sess_is_unsupported() {
        assert_eq!(Algorithm::from_token("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::from_token("sha-256"), Some(Algorithm::Sha256));
        for unsupported in ["MD5-sess", "SHA-256-sess", "SHA256", "SHA-512-256", ""] {
            assert_eq!(Algorithm::from_token(unsupported), None, "{unsupported}");
        }
        assert_eq!(Algorithm::from_token(Algorithm::Sha256.token()), Some(Algorithm::Sha256));
    }

    #[test]
    fn lower_hex_is_what_the_hex_crate_writes() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(lower_hex(&[]), "");
    }

    #[test]
    fn hex_comparison_ignores_letter_case_of_the_received_digest() {
        assert!(hex_eq("6629fae4", "6629FAE4"));
        assert!(!hex_eq("6629fae4", "6629fae5"));
        assert!(!hex_eq("6629fae4", "6629fae"));
    }
}

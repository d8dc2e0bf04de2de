//! Stateless expiring nonces: the nonce carries its issue time and a MAC over it, so any
//! request can be checked without having stored the nonce (RFC 7616 §3.3 suggests
//! `time-stamp H(time-stamp ":" ETag ":" secret-data)`; we use HMAC-SHA256).
//!
//! ```text
//! nonce = hex( issued (8 bytes, big-endian unix seconds) || random (8 bytes)
//!              || HMAC-SHA256(secret, issued || random || realm)[..16] )
//! ```
//! Binding the realm means a nonce minted for one realm is foreign to another.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of issue time and randomness: also the key under which nonce use is remembered.
pub(super) type NonceId = [u8; 16];

const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 16 + TAG_LEN;

/// A nonce we minted, opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Opened {
    /// Unix seconds at issue.
    pub(super) issued: u64,
    pub(super) id: NonceId,
}

/// The HMAC key, keyed once.
#[derive(Clone)]
pub(super) struct NonceKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<secret>)")
    }
}

impl NonceKey {
    pub(super) fn new(secret: [u8; 32]) -> Self {
        // RFC 2104 §2: a key shorter than the block (64 bytes for SHA-256) is padded with
        // zeros, so the padded key is the same key. Padding here uses the infallible
        // constructor instead of `new_from_slice`, whose error cannot happen for HMAC.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&secret);
        Self { mac: Hmac::<Sha256>::new(&block.into()) }
    }

    /// A nonce issued at `issued` (unix seconds) for `realm`, as 64 lower-case hex digits.
    pub(super) fn mint(&self, issued: u64, random: [u8; 8], realm: &str) -> String {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&issued.to_be_bytes());
        id[8..].copy_from_slice(&random);
        let tag = self.tag(&id, realm);
        let mut out = [0u8; NONCE_LEN];
        out[..16].copy_from_slice(&id);
        out[16..].copy_from_slice(&tag.finalize().into_bytes()[..TAG_LEN]);
        super::hash::lower_hex(&out)
    }

    /// The nonce's issue time and id when we minted it for `realm`; `None` when it is not
    /// ours (wrong length, not hex, or the MAC does not match, compared in constant time).
    pub(super) fn open(&self, nonce: &str, realm: &str) -> Option<Opened> {
        let mut raw = [0u8; NONCE_LEN];
        hex::decode_to_slice(nonce, &mut raw).ok()?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        self.tag(&id, realm).verify_truncated_left(&raw[16..]).ok()?;
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&id[..8]);
        Some(Opened { issued: u64::from_be_bytes(issued), id })
    }

    fn tag(&self, id: &NonceId, realm: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(id);
        mac.update(realm.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_nonce_opens_with_its_issue_time() {
        let key = NonceKey::new([7; 32]);
        let nonce = key.mint(1_700_000_000, [1, 2, 3, 4, 5, 6, 7, 8], "example.com");
        assert_eq!(nonce.len(), 64);
        let opened = key.open(&nonce, "example.com").unwrap();
        assert_eq!(opened.issued, 1_700_000_000);
        assert_eq!(&opened.id[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(key.open(&nonce.to_ascii_uppercase(), "example.com"), Some(opened));
    }

    #[test]
    fn nonce_of_another_secret_realm_or_time_is_not_ours() {
        let key = NonceKey::new([7; 32]);
        let nonce = key.mint(1_700_000_000, [9; 8], "example.com");
        assert_eq!(NonceKey::new([8; 32]).open(&nonce, "example.com"), None);
        assert_eq!(key.open(&nonce, "other.example.com"), None);
        // Moving the issue time forward breaks the MAC.
        let mut forged = nonce.clone();
        forged.replace_range(14..16, "ff");
        assert_eq!(key.open(&forged, "example.com"), None);
        for junk in ["", "zz", &nonce[..62], &format!("{nonce}00"), "dcd98b7102dd2f0e8b11d0f600bfb0c093"] {
            assert_eq!(key.open(junk, "example.com"), None, "{junk}");
        }
    }

    #[test]
    fn padded_key_is_the_slice_key() {
        let secret = [42u8; 32];
        let mut a = NonceKey::new(secret).mac;
        let mut b = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        a.update(b"x");
        b.update(b"x");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }
}

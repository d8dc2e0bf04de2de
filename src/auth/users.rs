//! Where HA1 comes from: the [`UserDirectory`] trait the authenticator asks, and [`Users`],
//! the in-memory directory loaded from the users file.

use std::collections::HashMap;
use std::fmt;

use super::hash::{Algorithm, ha1};

/// The source of HA1 values. A directory may store passwords or only HA1 (so that the
/// file on disk holds no password); either way the authenticator sees HA1.
pub trait UserDirectory {
    /// HA1 of `username` in `realm` for `algorithm`, lower-case hex; `None` when the user is
    /// unknown or has no secret usable with this algorithm.
    fn ha1(&self, username: &str, realm: &str, algorithm: Algorithm) -> Option<String>;
}

/// One user's secret: a password, or precomputed HA1 values (hex) for the configured realm,
/// or both.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserEntry {
    pub password: Option<String>,
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log.
        f.debug_struct("UserEntry")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ha1_md5", &self.ha1_md5.as_ref().map(|_| "<redacted>"))
            .field("ha1_sha256", &self.ha1_sha256.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Users by name (names compare exactly, as the digest `username` is hashed exactly).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users {
    entries: HashMap<String, UserEntry>,
}

impl Users {
    pub fn new(entries: HashMap<String, UserEntry>) -> Self {
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, username: &str) -> bool {
        self.entries.contains_key(username)
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users").field("len", &self.entries.len()).finish_non_exhaustive()
    }
}

impl UserDirectory for Users {
    /// The stored HA1 of that algorithm when there is one (assumed to be for our realm),
    /// else HA1 computed from the password.
    fn ha1(&self, username: &str, realm: &str, algorithm: Algorithm) -> Option<String> {
        let entry = self.entries.get(username)?;
        let stored = match algorithm {
            Algorithm::Md5 => entry.ha1_md5.as_ref(),
            Algorithm::Sha256 => entry.ha1_sha256.as_ref(),
        };
        if let Some(stored) = stored {
            // The response hashes HA1 as text: lower-case it so `ABCD..` in a file works.
            return Some(stored.trim().to_ascii_lowercase());
        }
        entry.password.as_deref().map(|password| ha1(algorithm, username, realm, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(entries: &[(&str, UserEntry)]) -> Users {
        Users::new(entries.iter().map(|(n, e)| ((*n).to_owned(), e.clone())).collect())
    }

    #[test]
    fn stored_ha1_is_preferred_over_the_password() {
        let stored = UserEntry {
            password: Some("ignored".into()),
            ha1_md5: Some("ABCDEF0123456789ABCDEF0123456789".into()),
            ha1_sha256: Some("ff".repeat(32)),
        };
        let u = users(&[("alice", stored)]);
        assert_eq!(u.ha1("alice", "r", Algorithm::Md5).as_deref(), Some("abcdef0123456789abcdef0123456789"));
        assert_eq!(u.ha1("alice", "r", Algorithm::Sha256), Some("ff".repeat(32)));
    }

    #[test]
    fn password_gives_ha1_for_any_algorithm_and_missing_secret_gives_none() {
        let u = users(&[
            ("bob", UserEntry { password: Some("pw".into()), ..UserEntry::default() }),
            ("carol", UserEntry { ha1_md5: Some("00".repeat(16)), ..UserEntry::default() }),
        ]);
        assert_eq!(u.ha1("bob", "r", Algorithm::Sha256), Some(ha1(Algorithm::Sha256, "bob", "r", "pw")));
        assert_eq!(u.ha1("carol", "r", Algorithm::Sha256), None, "no SHA-256 HA1 and no password");
        assert_eq!(u.ha1("dave", "r", Algorithm::Md5), None);
        assert_eq!(u.ha1("BOB", "r", Algorithm::Md5), None, "names compare exactly");
        assert_eq!((u.len(), u.is_empty(), u.contains("bob")), (2, false, true));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let e = UserEntry { password: Some("hunter2".into()), ..UserEntry::default() };
        assert!(!format!("{e:?}").contains("hunter2"));
        assert!(!format!("{:?}", users(&[("x", e)])).contains("hunter2"));
    }
}

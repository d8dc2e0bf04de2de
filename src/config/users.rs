//! The users file: who may register and call, with their digest secrets.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! ha1_md5 = "…"      # MD5(name:realm:password), as `webtrunk user add` prints it
//! ha1_sha256 = "…"   # SHA-256 of the same; RFC 8760
//! # password = "…"   # plain text, for development only
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::auth::{Algorithm, UserEntry, Users, ha1};
use crate::routing::{NumberPattern, UserPolicy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    name: String,
    password: Option<String>,
    ha1_md5: Option<String>,
    ha1_sha256: Option<String>,
    /// Number patterns this user may dial through trunks (empty: any a route allows).
    #[serde(default)]
    allowed: Vec<String>,
    /// Number patterns this user may never dial (premium, international, ...).
    #[serde(default)]
    denied: Vec<String>,
    /// The caller ID presented on trunk calls, unless the trunk sets its own.
    caller_id: Option<String>,
}

/// Reads and checks a users file; every problem is one string naming the file (and the
/// user when there is one).
pub fn load(path: &Path) -> Result<Users, Vec<String>> {
    let file = path.display();
    let parsed = read(path)?;
    let mut users = HashMap::new();
    let mut problems = Vec::new();
    for (index, record) in parsed.user.into_iter().enumerate() {
        let who = format!("{file}: user[{index}] `{}`", record.name);
        if record.name.is_empty() || record.name.contains(['@', ':', ' ', '"']) {
            problems.push(format!("{who}: a name is a SIP user part without '@', ':', '\"' or spaces"));
        }
        for (key, value, len) in [("ha1_md5", &record.ha1_md5, 32), ("ha1_sha256", &record.ha1_sha256, 64)] {
            if let Some(v) = value
                && (v.len() != len || !v.bytes().all(|c| c.is_ascii_hexdigit()))
            {
                problems.push(format!("{who}: `{key}` must be {len} hex digits"));
            }
        }
        if record.password.is_none() && record.ha1_md5.is_none() && record.ha1_sha256.is_none() {
            problems.push(format!("{who}: needs `ha1_md5`, `ha1_sha256` or `password`"));
        }
        let entry = UserEntry {
            password: record.password,
            ha1_md5: record.ha1_md5.map(|h| h.to_ascii_lowercase()),
            ha1_sha256: record.ha1_sha256.map(|h| h.to_ascii_lowercase()),
        };
        if users.insert(record.name.clone(), entry).is_some() {
            problems.push(format!("{who}: listed twice"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Users::new(users))
}

/// The dialling policies of the users in a users file, for the routing table.
pub fn policies(path: &Path) -> Result<Vec<(String, UserPolicy)>, Vec<String>> {
    let file = path.display();
    let parsed = read(path)?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for record in parsed.user {
        let mut parse = |patterns: &[String]| -> Vec<NumberPattern> {
            patterns
                .iter()
                .filter_map(|p| match NumberPattern::parse(p) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        problems.push(format!("{file}: user `{}`: {e}", record.name));
                        None
                    }
                })
                .collect()
        };
        let allowed = parse(&record.allowed);
        let denied = parse(&record.denied);
        if allowed.is_empty() && denied.is_empty() && record.caller_id.is_none() {
            continue;
        }
        out.push((record.name.clone(), UserPolicy { allowed, denied, caller_id: record.caller_id.clone() }));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn read(path: &Path) -> Result<UsersFile, Vec<String>> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{file}: cannot read: {e}")])?;
    config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| vec![format!("{file}: {e}")])
}

/// The `[[user]]` entry `webtrunk user add` prints: hashes only, never the password.
pub fn entry(name: &str, realm: &str, password: &str) -> String {
    format!(
        "[[user]]\nname = \"{name}\"\n# realm \"{realm}\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n",
        ha1(Algorithm::Md5, name, realm, password),
        ha1(Algorithm::Sha256, name, realm, password)
    )
}

//! What can be wrong with a configuration, said so an operator can find the line to fix.

use std::{fmt, io, net::SocketAddr, path::PathBuf, time::Duration};

/// The layer that set a value last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Defaults,
    File(PathBuf),
    Environment,
}

/// A key as its layer spells it, with the line when that layer is a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub origin: Origin,
    /// Dotted path as in the file, e.g. `listen.udp` or `listen.udp[1]`.
    pub key: String,
    pub line: Option<u32>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Defaults => f.write_str("built-in defaults")?,
            Origin::File(path) => match self.line {
                Some(line) => write!(f, "{}:{line}", path.display())?,
                None => write!(f, "{}", path.display())?,
            },
            Origin::Environment => {
                // Name the variable, not just the key: that is what the operator has to unset.
                let key = self.key.split('[').next().unwrap_or(&self.key);
                write!(f, "environment {}__{}", super::ENV_PREFIX, key.replace('.', "__").to_uppercase())?;
            }
        }
        write!(f, ": key `{}`", self.key)
    }
}

/// One problem with a configuration. Every variant that concerns a key carries its [`Place`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    /// TOML syntax; there is no key yet, but the reason carries line and column.
    #[error("{}: {reason}", path.display())]
    Syntax { path: PathBuf, reason: String },
    #[error("{place}: unknown key")]
    UnknownKey { place: Place },
    /// The value does not fit the key's type, e.g. `"big"` for a size or `"x:1"` for an address.
    #[error("{place}: {reason}")]
    BadValue { place: Place, reason: String },
    #[error("{place}: at least one domain is required, or no request is ours")]
    NoDomains { place: Place },
    #[error("{place}: `{domain}` is not a host name or IP address")]
    BadDomain { place: Place, domain: String },
    #[error("{place}: `{path}` must start with '/', as in the wss:// URL")]
    RelativePath { place: Place, path: String },
    #[error("{place}: must be longer than 0s")]
    ZeroDuration { place: Place },
    #[error(
        "{place}: {idle:?} must exceed websocket.ping_interval ({ping:?}), or idle clients are dropped between pings"
    )]
    IdleNotAbovePing { place: Place, idle: Duration, ping: Duration },
    #[error("{place}: set it together with `{other}`, or neither for a self-signed certificate")]
    TlsHalfSet { place: Place, other: &'static str },
    #[error("{place}: {} is not a readable file", path.display())]
    TlsFileMissing { place: Place, path: PathBuf },
    #[error("{place}: {value} {}", bounds(*min, *max))]
    OutOfRange { place: Place, value: usize, min: usize, max: usize },
    /// Two stream listeners would bind the same TCP port.
    #[error("{place}: {addr} is also bound by `{other}`")]
    AddressTaken { place: Place, addr: SocketAddr, other: &'static str },
    #[error("{place}: `{name}` is not a digest algorithm we offer; use \"MD5\" and/or \"SHA-256\"")]
    Algorithm { place: Place, name: String },
    /// A problem with trunks, routes or DIDs, said by the routing table.
    #[error("{place}: {reason}")]
    Routing { place: Place, reason: String },
    #[error("{place}: {max:?} is below registrar.min_expires ({min:?})")]
    ExpiryOrder { place: Place, max: Duration, min: Duration },
    /// A problem inside the users file the key names; `reason` starts with that file's name.
    #[error("{place}: {reason}")]
    Users { place: Place, reason: String },
    #[error("{place}: not a tracing filter: {reason}")]
    BadLogLevel { place: Place, reason: String },
}

fn bounds(min: usize, max: usize) -> String {
    if max == usize::MAX { format!("must be at least {min}") } else { format!("must be between {min} and {max}") }
}

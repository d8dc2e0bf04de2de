//! Why a trunk host could not be turned into addresses. Every variant names the host as it
//! was written in the configuration, so a log line says which trunk is broken.

use std::fmt;

/// A resolution that produced no target. Trunk-side: the engine treats it like an
/// unreachable next hop and fails over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// RFC 6761 §6.4: names under `.invalid` never exist; we answer at once without asking
    /// a server (browsers put such names in their Via and Contact, RFC 7118 §5).
    #[error("{host}: .invalid names are never resolved (RFC 6761 §6.4)")]
    InvalidDomain { host: String },
    /// Not an IP literal and not a host name (RFC 1035 §2.3.4 length limits, LDH labels).
    #[error("{host}: not an IP address or a valid host name")]
    BadName { host: String },
    /// RFC 3261 §26.2.2: a SIPS target is reached over TLS, never UDP.
    #[error("{host}: SIPS requires TLS; transport UDP is not allowed (RFC 3261 §26.2.2)")]
    SipsOverUdp { host: String },
    /// The name itself does not exist (RCODE 3, RFC 1035 §4.1.1).
    #[error("{host}: no such domain (NXDOMAIN)")]
    NxDomain { host: String },
    /// The name exists but has no NAPTR, SRV, A or AAAA records we can use.
    #[error("{host}: no usable NAPTR, SRV, A or AAAA records")]
    NoRecords { host: String },
    /// RFC 2782: every SRV answer was the single target ".", the service is decidedly not
    /// available at this domain.
    #[error("{host}: SIP service not available here (SRV target \".\", RFC 2782)")]
    ServiceUnavailable { host: String },
    /// No server answered within the configured timeout and attempts.
    #[error("{host}: DNS query {query} timed out")]
    Timeout { host: String, query: String },
    /// A server answered with an error code (SERVFAIL, REFUSED, ...).
    #[error("{host}: DNS server answered {} to {query}", RcodeName(*.rcode))]
    ServerFailure { host: String, query: String, rcode: u16 },
    /// No server could be reached at all (connection refused, no route, bad response).
    #[error("{host}: no DNS server could be reached for {query}")]
    Unreachable { host: String, query: String },
}

impl DnsError {
    /// The host the resolution was for.
    pub fn host(&self) -> &str {
        match self {
            Self::InvalidDomain { host }
            | Self::BadName { host }
            | Self::SipsOverUdp { host }
            | Self::NxDomain { host }
            | Self::NoRecords { host }
            | Self::ServiceUnavailable { host }
            | Self::Timeout { host, .. }
            | Self::ServerFailure { host, .. }
            | Self::Unreachable { host, .. } => host,
        }
    }
}

/// How one query failed when the server did not give an answer we can read as records,
/// NXDOMAIN or NODATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFailure {
    Timeout,
    /// The RCODE of the answer (RFC 1035 §4.1.1, RFC 6895 §2.3).
    ServerFailure {
        rcode: u16,
    },
    Unreachable,
}

/// An RCODE with its mnemonic from the IANA registry (RFC 6895 §2.3).
struct RcodeName(u16);

impl fmt::Display for RcodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => return write!(f, "RCODE {}", self.0),
        };
        write!(f, "{name} (RCODE {})", self.0)
    }
}

//! L5: our routing policy as data: trunks, outbound rules (number patterns, rewriting to
//! E.164, trunk groups in failover order), per-user policies against toll fraud, DIDs, the IP
//! ACL for trunk traffic, RFC 2782 target order and OPTIONS health checks.
//!
//! Pure decisions over the config: no sockets, no DNS, no clock (health checks take `now`),
//! no randomness of its own (target order draws from the caller's source). The config builds a
//! [`RoutingTable`] once ([`RoutingTable::new`] checks the parts against each other); the engine
//! asks it per call and maps a [`RouteError`] to a SIP status with [`RouteError::status`].
//!
//! Numbers are matched after removing visual separators ([`normalise`]). A rule's literal
//! pattern is a prefix; a `_` pattern (`_1NXXNXXXXXX`) covers the whole number. The first
//! matching rule in the order written wins; it strips, then prepends or makes E.164
//! ([`OutboundRule::rewrite`], [`to_e164`]).

mod health;
mod number;
pub mod registration;
mod table;
mod trunk;

pub use health::{Health, HealthChecks, TargetKey};
pub use number::{NumberPattern, PatternError, PatternProblem, is_number, normalise, to_e164};
pub use table::{DEFAULT_POLICY, Did, OutboundRoute, OutboundRule, RoutingTable, UserPolicy};
pub use trunk::{
    Cidr, CidrError, Credentials, DEFAULT_FAILOVER_TIMEOUT, LARGE_REQUEST, LargeMessage, MediaMode, Trunk, TrunkTarget,
    TrunkTransport,
};

/// Why a call is not routed; [`Self::status`] is the one place these become SIP codes, and the
/// text is the reason phrase (it names nothing internal, since it goes on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No outbound rule matches the dialled number (or it is not a number).
    #[error("No Route To Destination")]
    NoRoute,
    /// The caller's policy forbids the number.
    #[error("Destination Not Allowed")]
    Denied,
    /// A trunk delivered a call to a number that is not one of our DIDs.
    #[error("Number Not Assigned")]
    UnknownDid,
    /// Every trunk of the group already carries its `max_calls`; names the group's first.
    #[error("All Trunks Busy")]
    TrunkBusy { trunk: String, max_calls: usize },
}

impl RouteError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NoRoute | Self::UnknownDid => 404,
            Self::Denied => 403,
            Self::TrunkBusy { .. } => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_errors_map_to_their_sip_status() {
        assert_eq!(RouteError::NoRoute.status(), 404);
        assert_eq!(RouteError::Denied.status(), 403);
        assert_eq!(RouteError::UnknownDid.status(), 404);
        assert_eq!(RouteError::TrunkBusy { trunk: "t".into(), max_calls: 3 }.status(), 503);
        assert_eq!(RouteError::TrunkBusy { trunk: "t".into(), max_calls: 3 }.to_string(), "All Trunks Busy");
    }
}

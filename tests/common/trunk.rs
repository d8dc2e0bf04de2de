//! Trunk and route configurations the trunk tests share.

use std::time::Duration;

use webtrunk::config::trunks::{RouteConfig, TargetConfig, TrunkConfig};

/// A UDP trunk at `host` (no port: SRV chooses when it is a name) whose requests from
/// 127.0.0.1 are its own, failing over after 2 s, large requests sent as they are.
pub fn trunk_config(name: &str, host: &str, port: Option<u16>) -> TrunkConfig {
    TrunkConfig {
        name: name.into(),
        targets: vec![TargetConfig { host: host.into(), port, priority: 0, weight: 1 }],
        transport: "udp".into(),
        outbound_proxy: None,
        username: None,
        password: None,
        realm: None,
        register: false,
        max_calls: None,
        failover_timeout: Duration::from_secs(2),
        from_user: None,
        asserted_identity: None,
        inbound_sources: vec!["127.0.0.1".into()],
        large_message: "send".into(),
        media: None,
        codecs: Vec::new(),
    }
}

/// UK national numbers (`0…`) to `trunks`, rewritten to E.164 (`+44…`).
pub fn uk_route(trunks: &[&str]) -> RouteConfig {
    RouteConfig {
        name: "uk".into(),
        pattern: "0".into(),
        strip: 1,
        prepend: "+44".into(),
        e164: None,
        trunks: trunks.iter().map(|t| (*t).to_string()).collect(),
    }
}

/// Every number starting with 0, unchanged, to `trunks`.
pub fn route_as_dialled(trunks: &[&str]) -> RouteConfig {
    RouteConfig { strip: 0, prepend: String::new(), ..uk_route(trunks) }
}

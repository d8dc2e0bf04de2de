//! Values that are well typed yet cannot work, alone or together.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{Config, ConfigError};

impl Config {
    /// Semantic checks on a loaded config; empty when fine.
    pub fn validate(&self) -> Vec<ConfigError> {
        let at = |key: &str| self.provenance.place(key);
        let (server, websocket, limits, listen) = (&self.server, &self.websocket, &self.limits, &self.listen);
        let mut problems = Vec::new();

        if server.domains.is_empty() {
            problems.push(ConfigError::NoDomains { place: at("server.domains") });
        }
        for domain in server.domains.iter().filter(|domain| !is_host(domain)) {
            problems.push(ConfigError::BadDomain { place: at("server.domains"), domain: domain.clone() });
        }
        for path in websocket.paths.iter().filter(|path| !path.starts_with('/')) {
            problems.push(ConfigError::RelativePath { place: at("websocket.paths"), path: path.clone() });
        }

        let durations = [
            ("websocket.ping_interval", websocket.ping_interval),
            ("limits.handshake_timeout", limits.handshake_timeout),
            ("limits.tcp_idle_timeout", limits.tcp_idle_timeout),
            ("dns.timeout", self.dns.timeout),
        ];
        for (key, _) in durations.iter().filter(|(_, duration)| duration.is_zero()) {
            problems.push(ConfigError::ZeroDuration { place: at(key) });
        }
        if websocket.idle_timeout <= websocket.ping_interval {
            let (idle, ping) = (websocket.idle_timeout, websocket.ping_interval);
            problems.push(ConfigError::IdleNotAbovePing { place: at("websocket.idle_timeout"), idle, ping });
        }

        match (&self.tls.certificate, &self.tls.private_key) {
            (None, None) => {}
            (Some(_), None) => {
                problems.push(ConfigError::TlsHalfSet { place: at("tls.certificate"), other: "tls.private_key" });
            }
            (None, Some(_)) => {
                problems.push(ConfigError::TlsHalfSet { place: at("tls.private_key"), other: "tls.certificate" });
            }
            (Some(certificate), Some(private_key)) => {
                for (key, path) in [("tls.certificate", certificate), ("tls.private_key", private_key)] {
                    if !path.is_file() {
                        problems.push(ConfigError::TlsFileMissing { place: at(key), path: path.clone() });
                    }
                }
            }
        }

        // Below 1 KiB an INVITE with SDP does not fit; above 1 MiB a few clients pin a lot of memory.
        let ranges = [
            ("limits.max_message_size", limits.max_message_size, 1024, 1 << 20),
            ("limits.max_headers", limits.max_headers, 16, 1024),
            ("limits.max_connections", limits.max_connections, 1, usize::MAX),
            ("limits.max_connections_per_ip", limits.max_connections_per_ip, 1, limits.max_connections.max(1)),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                problems.push(ConfigError::OutOfRange { place: at(key), value, min, max });
            }
        }

        // UDP and TCP ports are separate spaces; TCP, TLS, WS and WSS all take TCP ports.
        let groups: [&[(&'static str, &Vec<SocketAddr>)]; 2] = [
            &[("listen.udp", &listen.udp)],
            &[
                ("listen.tcp", &listen.tcp),
                ("listen.tls", &listen.tls),
                ("listen.ws", &listen.ws),
                ("listen.wss", &listen.wss),
            ],
        ];
        for group in groups {
            let bound: Vec<_> =
                group.iter().flat_map(|(key, addrs)| addrs.iter().map(move |addr| (*key, *addr))).collect();
            for (index, &(key, addr)) in bound.iter().enumerate() {
                if let Some(&(other, _)) = bound[..index].iter().find(|(_, earlier)| overlap(*earlier, addr)) {
                    problems.push(ConfigError::AddressTaken { place: at(key), addr, other });
                }
            }
        }

        let registrar = &self.registrar;
        for (key, duration) in [
            ("registrar.min_expires", registrar.min_expires),
            ("registrar.nonce_ttl", registrar.nonce_ttl),
            ("registrar.auth_failure_window", registrar.auth_failure_window),
        ] {
            if duration.is_zero() {
                problems.push(ConfigError::ZeroDuration { place: at(key) });
            }
        }
        for (key, duration) in [
            ("proxy.t1", self.proxy.t1),
            ("proxy.t2", self.proxy.t2),
            ("proxy.t4", self.proxy.t4),
            ("proxy.timer_c", self.proxy.timer_c),
            ("proxy.max_call_duration", self.proxy.max_call_duration),
        ] {
            if duration.is_zero() {
                problems.push(ConfigError::ZeroDuration { place: at(key) });
            }
        }
        if self.proxy.max_transactions == 0 {
            problems.push(ConfigError::OutOfRange {
                place: at("proxy.max_transactions"),
                value: 0,
                min: 1,
                max: usize::MAX,
            });
        }
        if registrar.max_expires < registrar.min_expires {
            problems.push(ConfigError::ExpiryOrder {
                place: at("registrar.max_expires"),
                max: registrar.max_expires,
                min: registrar.min_expires,
            });
        }
        if registrar.digest_algorithms.is_empty() {
            problems.push(ConfigError::Algorithm { place: at("registrar.digest_algorithms"), name: String::new() });
        }
        for name in &registrar.digest_algorithms {
            if crate::auth::Algorithm::from_token(name).is_none() {
                problems.push(ConfigError::Algorithm { place: at("registrar.digest_algorithms"), name: name.clone() });
            }
        }
        if registrar.max_contacts == 0 {
            problems.push(ConfigError::OutOfRange {
                place: at("registrar.max_contacts"),
                value: 0,
                min: 1,
                max: usize::MAX,
            });
        }
        if let Some(path) = &registrar.users_file {
            problems.extend(
                super::users::load(path)
                    .err()
                    .into_iter()
                    .flatten()
                    .map(|reason| ConfigError::Users { place: at("registrar.users_file"), reason }),
            );
        }

        if let Err(reasons) = self.routing() {
            for reason in reasons {
                let key = ["trunk", "route", "did"]
                    .into_iter()
                    .find(|k| reason.starts_with(k))
                    .unwrap_or("registrar.users_file");
                problems.push(ConfigError::Routing { place: at(key), reason });
            }
        }

        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(ConfigError::BadLogLevel { place: at("log.level"), reason: error.to_string() });
        }
        problems
    }
}

/// Whether two listeners cannot both bind. Port 0 asks the kernel for a fresh port each time,
/// so it never collides; a wildcard takes the port on every address it covers, and `[::]` is
/// dual-stack unless the socket is v6-only, so it covers IPv4 too.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wild: IpAddr, ip: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || ip.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

/// A DNS name by RFC 1123 label rules, or an IP address (bracketed when IPv6, as in a SIP URI).
fn is_host(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

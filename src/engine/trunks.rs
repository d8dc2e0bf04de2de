//! Requests webtrunk sends to trunks on its own behalf: OPTIONS health pings (RFC 3261
//! §11), and REGISTERs where a trunk wants to know where to send our DIDs (§10.2, as a
//! PBX registers with its carrier).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::resolve::ResolveRequest;
use super::{Engine, Local, targets};
use crate::routing::registration::{RegistrationSpec, RegistrationState, TrunkRegistration, ViaSpec};
use crate::routing::{TrunkTarget, TrunkTransport};
use crate::transport::{Destination, TransportKind};

/// How long we ask a trunk to keep our registration (what most PBXs ask).
const REGISTER_EXPIRES: Duration = Duration::from_secs(3600);

impl Engine {
    /// RFC 3261 §11 OPTIONS to every trunk target that is due, and what came back: a
    /// target that stops answering is skipped by calls until it answers again.
    pub(super) fn ping_trunks(&mut self, now: Instant) {
        if self.local.config.health_interval.is_zero() {
            return;
        }
        for target in self.local.health.due(now) {
            let kind = match self.local.config.routing.trunk(&target.trunk).map(|t| t.transport) {
                Some(crate::routing::TrunkTransport::Tcp) => TransportKind::Tcp,
                Some(crate::routing::TrunkTransport::Tls) => TransportKind::Tls,
                _ => TransportKind::Udp,
            };
            // A named target is pinged at its first resolved address; one not resolved
            // yet is left for the next round.
            let trunk_target = TrunkTarget::new(target.host.clone(), target.port);
            let Some(&(kind, remote)) = self.local.target_addresses(now, &trunk_target, kind).first() else { continue };
            let Some(local) = targets::local_toward(&self.local.config.listen, kind) else { continue };
            self.local.next_ping += 1;
            let id = self.local.next_ping;
            let call_id = self.local.entropy.token(16);
            let param = match kind {
                TransportKind::Tcp => ";transport=tcp",
                TransportKind::Tls => ";transport=tls",
                _ => "",
            };
            let uri = match target_ip(&target.host) {
                Some(_) => format!("sip:{}{param}", crate::proxy::host_port_of(remote)),
                None => {
                    format!("sip:{}{}{param}", target.host, target.port.map(|p| format!(":{p}")).unwrap_or_default())
                }
            };
            let text = format!(
                "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bKwtping{id}.{call_id};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:webtrunk@{}>;tag=ping{id}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                kind.via_token(),
                crate::proxy::host_port_of(local),
                crate::proxy::host_port_of(local),
            );
            let destination = match kind {
                TransportKind::Udp => Destination::Datagram { local, remote },
                kind => Destination::Connection { kind, remote },
            };
            if self.proxy.originate(now, Bytes::from(text), destination, id, &mut self.local) {
                self.local.pings.insert(id, target);
            }
        }
        self.own_request_outcomes(now);
    }

    /// REGISTERs due at trunks: first ones, refreshes, retries after a failure.
    pub(super) fn register_at_trunks(&mut self, now: Instant) {
        for index in 0..self.local.registrations.len() {
            let Some((kind, remote)) = self.local.registrar_address(now, index) else { continue };
            let Some(local) = targets::local_toward(&self.local.config.listen, kind) else { continue };
            let branch = format!("z9hG4bKwtreg{}", self.local.entropy.token(16));
            let via =
                ViaSpec { sent_by: crate::proxy::host_port_of(local), transport: kind.via_token().into(), branch };
            let cnonce = self.local.entropy.token(16);
            let Some(request) = self.local.registrations[index].poll_request(now, &via, &cnonce) else { continue };
            self.local.next_ping += 1;
            let id = self.local.next_ping;
            let destination = match kind {
                TransportKind::Udp => Destination::Datagram { local, remote },
                kind => Destination::Connection { kind, remote },
            };
            if self.proxy.originate(now, Bytes::from(request), destination, id, &mut self.local) {
                self.local.registering.insert(id, index);
            } else {
                self.local.registrations[index].on_timeout(now);
            }
        }
        self.own_request_outcomes(now);
    }

    /// What came back for the requests we sent ourselves: health pings and REGISTERs.
    pub(super) fn own_request_outcomes(&mut self, now: Instant) {
        while let Some((id, response)) = self.proxy.poll_outcome() {
            if let Some(index) = self.local.registering.remove(&id) {
                let Some(registration) = self.local.registrations.get_mut(index) else { continue };
                let before = registration.state().clone();
                match &response {
                    Some(response) => registration.on_response(now, response),
                    None => registration.on_timeout(now),
                }
                log_registration(registration, &before);
                // A challenge answered or a retry is due at once.
                continue;
            }
            let status = response.and_then(|r| r.status());
            let Some(target) = self.local.pings.remove(&id) else { continue };
            // Any answer means the target is alive; only silence is a miss.
            let change = match status {
                Some(_) => self.local.health.answered(&target, now),
                None => self.local.health.missed(&target, now),
            };
            match change {
                Some(crate::routing::Health::Down) => {
                    tracing::warn!(%target, "trunk target down: no answer to OPTIONS")
                }
                Some(crate::routing::Health::Up) => tracing::info!(%target, "trunk target up again"),
                None => {}
            }
        }
    }
}

impl Local {
    /// One registration per trunk with `register = true` and credentials. Its Contact is
    /// our address on the trunk's transport, with the account name as user part: the
    /// trunk sends calls for our DIDs there.
    pub(super) fn trunk_registrations(&mut self, now: Instant) -> Vec<TrunkRegistration> {
        let mut out = Vec::new();
        for trunk in self.config.routing.trunks() {
            let kind = transport_kind(trunk.transport);
            let Some(local) = targets::local_toward(&self.config.listen, kind) else { continue };
            let Some(credentials) = &trunk.credentials else {
                if trunk.register {
                    tracing::warn!(trunk = %trunk.name, "register = true without credentials; not registering");
                }
                continue;
            };
            let param = match kind {
                TransportKind::Tcp => ";transport=tcp",
                TransportKind::Tls => ";transport=tls",
                _ => "",
            };
            let contact = format!("sip:{}@{}{param}", credentials.username, crate::proxy::host_port_of(local));
            let Some(spec) = RegistrationSpec::from_trunk(trunk, contact, REGISTER_EXPIRES) else { continue };
            let call_id = self.entropy.token(24);
            let from_tag = self.entropy.tag();
            out.push(TrunkRegistration::new(spec, call_id, from_tag, now));
        }
        out
    }

    /// Where the REGISTERs of registration `index` go: its trunk's first target (its
    /// first resolved address when it is a name).
    fn registrar_address(&self, now: Instant, index: usize) -> Option<(TransportKind, SocketAddr)> {
        let registration = self.registrations.get(index)?;
        let trunk = self.config.routing.trunks().iter().find(|t| {
            t.register && t.credentials.as_ref().is_some_and(|c| c.username == registration.spec().username)
        })?;
        let target = trunk.targets.first()?;
        self.target_addresses(now, target, transport_kind(trunk.transport)).first().copied()
    }

    /// Where a trunk target is reached now, in the order to try: an IP target at its
    /// address (the transport's default port when none is set), a named one at its
    /// resolved addresses, each with the transport DNS chose (RFC 3263). Empty for a name
    /// without a live answer.
    pub(super) fn target_addresses(
        &self,
        now: Instant,
        target: &TrunkTarget,
        kind: TransportKind,
    ) -> Vec<(TransportKind, SocketAddr)> {
        if let Some(ip) = target_ip(&target.host) {
            let default_port = if kind == TransportKind::Tls { 5061 } else { 5060 };
            return vec![(kind, SocketAddr::new(ip, target.port.unwrap_or(default_port)))];
        }
        let key = ResolveRequest { host: target.host.clone(), port: target.port, transport: kind };
        self.resolutions.addresses(now, &key).to_vec()
    }

    /// Asks for every trunk target named by host name to be resolved.
    pub(super) fn watch_trunk_names(&mut self) {
        for trunk in self.config.routing.trunks() {
            let kind = transport_kind(trunk.transport);
            for target in trunk.targets.iter().filter(|t| target_ip(&t.host).is_none()) {
                let key = ResolveRequest { host: target.host.clone(), port: target.port, transport: kind };
                self.resolutions.watch(key);
            }
        }
    }
}

/// The address of a target written as an IP (IPv6 with or without brackets).
pub(super) fn target_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

pub(super) fn transport_kind(transport: TrunkTransport) -> TransportKind {
    match transport {
        TrunkTransport::Udp => TransportKind::Udp,
        TrunkTransport::Tcp => TransportKind::Tcp,
        TrunkTransport::Tls => TransportKind::Tls,
    }
}

/// Says when a registration changed state: an operator wants to see a trunk go
/// registered, and why it failed.
fn log_registration(registration: &TrunkRegistration, before: &RegistrationState) {
    let registrar = &registration.spec().registrar;
    match (before, registration.state()) {
        (RegistrationState::Registered { .. }, RegistrationState::Registered { .. }) => {}
        (_, RegistrationState::Registered { until }) => {
            tracing::info!(%registrar, until = ?until, "registered at trunk")
        }
        (_, RegistrationState::Failed { code, retry_at }) => {
            tracing::warn!(%registrar, code = ?code, retry_at = ?retry_at, "registration at trunk failed")
        }
        _ => {}
    }
}

//! Who an initial request is for: our users' registered contacts, after the caller
//! proved who they are (Proxy-Authorization, RFC 3261 §22.3).

use std::time::Instant;

use super::{Local, RequestError};
use crate::auth::Verdict;
use crate::media::Leg;
use crate::message::{HeaderName, Host, Message, NameAddr, Uri};
use crate::proxy::{Decision, Target, UacCredentials};
use crate::routing::{LargeMessage, MediaMode, RoutingTable, is_number, normalise};
use crate::transport::{Destination, Source, TransportKind};

impl Local {
    /// An initial request for `user@our-domain`: from a trunk, a DID ringing its users;
    /// from an authenticated user, another user's devices or, for a number, the trunks
    /// of the matching outbound rule in failover order.
    pub(super) fn call(&mut self, now: Instant, request: &Message, source: &Source) -> Result<Decision, RequestError> {
        let Some(Ok(Uri::Sip(ruri))) = request.parsed_request_uri() else {
            return Err(RequestError::RequestUri);
        };
        if !self.is_our_host(&ruri.host, source) {
            // We relay for nobody: calls out go through trunks by number.
            return Err(RequestError::Relaying);
        }
        let Some(user) = ruri.user.as_deref().map(str::to_owned) else { return Err(RequestError::NotFound) };
        // A trunk is trusted by address; a browser never is one.
        let from_trunk = !matches!(source.kind, TransportKind::Ws | TransportKind::Wss)
            && self.config.routing.trunk_for_source(source.remote.ip()).is_some();
        if from_trunk {
            // A carrier we register with sends DID calls to our registered Contact (its user
            // is our account name) and puts the number dialled in To.
            let account = self
                .config
                .routing
                .trunk_for_source(source.remote.ip())
                .and_then(|t| t.credentials.as_ref().filter(|c| t.register && c.username == user).map(|_| ()));
            let number = match account {
                Some(()) => to_user(request).unwrap_or(user),
                None => user,
            };
            let users = self.config.routing.did(&normalise(&number)).map_err(RequestError::Route)?.to_vec();
            let mut targets = Vec::new();
            for u in &users {
                // The trunk's own identity headers are trusted and pass unchanged.
                targets.extend(self.targets(now, &ruri.host, u, None)?);
            }
            if targets.is_empty() {
                return Err(RequestError::Unavailable);
            }
            // A plain-RTP trunk calling browsers: rtpengine in between.
            let reaches_browser = targets.iter().any(|t| matches!(t.kind, TransportKind::Ws | TransportKind::Wss));
            if let Some(trunk) = self.config.routing.trunk_for_source(source.remote.ip())
                && reaches_browser
                && self.media_mode(trunk) == MediaMode::Bridge
            {
                let codecs = trunk.codecs.clone();
                self.bridge_call(request, Leg::PlainRtp, Leg::Browser, codecs);
            }
            return Ok(Decision::Forward(targets));
        }
        let caller = self.authenticate_caller(now, request, source)?;
        if self.users.contains(&user) {
            // RFC 3325 inside our domain: the callee learns who authenticated, and any
            // identity the caller claimed is replaced.
            let domain = self.config.domains.first().cloned().unwrap_or_else(|| "localhost".into());
            let asserted = Some(format!("<sip:{caller}@{domain}>"));
            let targets = self.targets(now, &ruri.host, &user, asserted)?;
            if targets.is_empty() {
                return Err(RequestError::Unavailable);
            }
            // Browsers call each other peer to peer, unless configured to go through
            // rtpengine (browsers behind NATs no TURN server gets them through).
            let browser = |k: TransportKind| matches!(k, TransportKind::Ws | TransportKind::Wss);
            if self.config.bridge_browser_calls && browser(source.kind) && targets.iter().any(|t| browser(t.kind)) {
                self.bridge_call(request, Leg::Browser, Leg::Browser, Vec::new());
            }
            return Ok(Decision::Forward(targets));
        }
        if !is_number(&normalise(&user)) {
            return Err(RequestError::NotFound);
        }
        let targets = self.trunk_targets(now, request, &caller, &user)?;
        // A browser calling a plain-RTP trunk: rtpengine in between. The first trunk of the
        // rule decides (failover to a trunk of another kind keeps the first one's SDP).
        if matches!(source.kind, TransportKind::Ws | TransportKind::Wss)
            && let Ok(route) = self.config.routing.outbound(&caller, &user)
            && let Some(first) = route.trunks.first()
            && self.media_mode(first) == MediaMode::Bridge
        {
            let codecs = first.codecs.clone();
            self.bridge_call(request, Leg::Browser, Leg::PlainRtp, codecs);
        }
        Ok(Decision::Failover(targets))
    }

    /// A trunk's media mode; unset means bridge when rtpengine is configured.
    fn media_mode(&self, trunk: &crate::routing::Trunk) -> MediaMode {
        match (trunk.media, &self.media) {
            (Some(MediaMode::Bridge), Some(_)) | (None, Some(_)) => MediaMode::Bridge,
            _ => MediaMode::Passthrough,
        }
    }

    fn bridge_call(&mut self, request: &Message, caller: Leg, callee: Leg, codecs: Vec<String>) {
        let Some(media) = &mut self.media else { return };
        let call_id = request.call_id().map(|c| String::from_utf8_lossy(&c).into_owned());
        let from_tag = request.first_value(HeaderName::From).and_then(|f| {
            NameAddr::parse(&f).ok().and_then(|n| n.tag().map(|t| String::from_utf8_lossy(t).into_owned()))
        });
        if let (Some(call_id), Some(from_tag)) = (call_id, from_tag) {
            media.bridge(call_id, super::media::BridgedCall::new(from_tag, caller, callee, codecs));
        }
    }

    /// The trunks an outbound rule picks, each target a failover step, over the trunk's
    /// transport. A target named by host name expands into its resolved addresses (RFC
    /// 3263 order, each over the transport DNS chose) and keeps the name in the
    /// Request-URI; a name not resolved yet is skipped like a target that is down. Trunks
    /// at their `max_calls` are skipped; an INVITE counts against the trunk it goes to.
    fn trunk_targets(
        &mut self,
        now: Instant,
        request: &Message,
        caller: &str,
        dialled: &str,
    ) -> Result<Vec<Target>, RequestError> {
        let route = self.config.routing.outbound(caller, dialled).map_err(RequestError::Route)?;
        let calls = &self.trunk_calls;
        let trunks = route.with_free_capacity(|name| calls.active(name)).map_err(|error| {
            tracing::info!(rule = %route.rule, %error, "every trunk of the rule is at its max_calls");
            RequestError::Route(error)
        })?;
        let mut targets = Vec::new();
        let mut destinations = Vec::new();
        for trunk in trunks {
            let kind = super::trunks::transport_kind(trunk.transport);
            // Caller ID toward this trunk (RFC 3325): the trunk's own, else the caller's
            // configured number, else none (the trunk sees From as sent).
            let domain = self.config.domains.first().cloned().unwrap_or_else(|| "localhost".into());
            let asserted = trunk
                .asserted_identity
                .clone()
                .or_else(|| route.from_user(trunk).map(|user| format!("<sip:{user}@{domain}>")));
            let entropy = &mut self.entropy;
            let mut random = || u32::from_be_bytes(entropy.bytes::<4>());
            // Targets known dead (OPTIONS unanswered) are skipped: a call never waits on one.
            let ordered = if self.config.health_interval.is_zero() {
                RoutingTable::order_targets(&trunk.targets, &mut random)
            } else {
                self.health.available_targets(trunk, &mut random)
            };
            for target in ordered {
                let addresses = self.target_addresses(now, &target, kind);
                if addresses.is_empty() {
                    tracing::debug!(trunk = %trunk.name, host = %target.host, "skipped: the name has no address yet");
                    continue;
                }
                for (kind, remote) in addresses {
                    let Some(local) = local_toward(&self.config.listen, kind) else {
                        tracing::debug!(trunk = %trunk.name, transport = %kind, "skipped: no listener to send from");
                        continue;
                    };
                    let host = match super::trunks::target_ip(&target.host) {
                        Some(ip) => Host::Ip(ip).to_string(),
                        None => target.host.clone(),
                    };
                    let port = target.port.map(|p| format!(":{p}")).unwrap_or_default();
                    let param = match kind {
                        TransportKind::Tcp => ";transport=tcp",
                        TransportKind::Tls => ";transport=tls",
                        _ => "",
                    };
                    let uri = format!("sip:{}@{host}{port}{param}", route.number);
                    let destination = match kind {
                        TransportKind::Udp => Destination::Datagram { local, remote },
                        kind => Destination::Connection { kind, remote },
                    };
                    // §18.1.1: a request too big for UDP goes over TCP to the same address,
                    // unless the trunk is configured to take it over UDP anyway.
                    let large_fallback = (kind == TransportKind::Udp && trunk.large_message == LargeMessage::Tcp)
                        .then_some(Destination::Connection { kind: TransportKind::Tcp, remote });
                    let credentials = trunk.credentials.as_ref().map(|c| UacCredentials {
                        username: c.username.clone(),
                        password: c.password.clone(),
                        realm: c.realm.clone(),
                    });
                    // RFC 3261 §8.1.2: an outbound proxy gets the request first, with its
                    // URI as a loose route; the Request-URI still names the trunk.
                    let (destination, kind, local, routes, large_fallback) = match &trunk.outbound_proxy {
                        Some(proxy) => match outbound_proxy(proxy, &self.config.listen) {
                            Some((destination, kind, local)) => {
                                (destination, kind, local, vec![loose_route(proxy)], None)
                            }
                            None => {
                                tracing::warn!(trunk = %trunk.name, %proxy, "outbound_proxy is not sip:address[:port]; skipped");
                                continue;
                            }
                        },
                        None => (destination, kind, local, Vec::new(), large_fallback),
                    };
                    destinations.push((destination, trunk.name.clone()));
                    if let Some(fallback) = large_fallback {
                        destinations.push((fallback, trunk.name.clone()));
                    }
                    targets.push(Target {
                        uri: Some(uri),
                        from_user: route.from_user(trunk).map(str::to_owned),
                        failover_timeout: Some(trunk.failover_timeout),
                        asserted_identity: asserted.clone(),
                        large_fallback,
                        credentials,
                        routes,
                        ..Target::new(destination, kind, local)
                    });
                }
            }
        }
        if targets.is_empty() {
            return Err(RequestError::NoTrunk);
        }
        if request.method() == Some(&crate::message::Method::Invite)
            && let Some(call_id) = request.call_id()
        {
            self.trunk_calls.routed(&String::from_utf8_lossy(&call_id), destinations);
        }
        Ok(targets)
    }

    /// The live devices of a user of ours.
    fn targets(
        &self,
        now: Instant,
        host: &Host,
        user: &str,
        asserted_identity: Option<String>,
    ) -> Result<Vec<Target>, RequestError> {
        let domain = match host {
            Host::Name(name) => name.to_string(),
            Host::Ip(_) => self.config.domains.first().cloned().unwrap_or_else(|| "localhost".into()),
        };
        let aor = format!("{user}@{domain}");
        let bindings = self.registrar.lookup(&aor, now);
        if bindings.is_empty() {
            return Err(if self.users.contains(user) { RequestError::Unavailable } else { RequestError::NotFound });
        }
        let targets: Vec<Target> = bindings
            .into_iter()
            .filter_map(|b| {
                let (destination, kind, local, flow) = match b.flow.and_then(|f| self.flows.get(&f).map(|v| (f, *v))) {
                    Some((flow, (kind, local, _))) => (Destination::Flow(flow), kind, local, Some(flow)),
                    None if b.transport == TransportKind::Udp => {
                        let remote = udp_target(&b.uri, b.received);
                        (Destination::Datagram { local: b.local, remote }, TransportKind::Udp, b.local, None)
                    }
                    // A connection that is gone cannot be dialled back (browsers never are).
                    None => return None,
                };
                Some(Target {
                    uri: Some(b.uri),
                    flow,
                    routes: b.path,
                    asserted_identity: asserted_identity.clone(),
                    ..Target::new(destination, kind, local)
                })
            })
            .collect();
        Ok(targets)
    }

    /// §22.3: an initial request is routed only for a caller who authenticates as the
    /// user in its From.
    fn authenticate_caller(
        &mut self,
        now: Instant,
        request: &Message,
        source: &Source,
    ) -> Result<String, RequestError> {
        let now_unix = self.wall.unix(now);
        let credentials = request.first_value(HeaderName::ProxyAuthorization);
        let method = request.method().map(|m| m.as_str().to_string()).unwrap_or_default();
        let verdict = self.auth.verify(
            now,
            now_unix,
            source.remote.ip(),
            &method,
            request.request_uri().unwrap_or_default(),
            credentials.as_deref(),
            &self.users,
        );
        let username = match verdict {
            Verdict::Authenticated { username } => username,
            Verdict::Challenge { stale } => {
                let browser = matches!(source.kind, TransportKind::Ws | TransportKind::Wss);
                return Err(RequestError::ProxyChallenge(self.auth.challenges(
                    now_unix,
                    &mut self.entropy,
                    stale,
                    browser,
                )));
            }
            Verdict::Throttled { retry_after } => return Err(RequestError::Throttled { retry_after }),
            Verdict::Malformed(reason) => return Err(RequestError::Credentials(reason)),
        };
        let from_user = request.from_uri().and_then(Result::ok).and_then(|u| u.as_sip()?.user.as_deref());
        if from_user != Some(username.as_str()) {
            return Err(RequestError::Impersonation);
        }
        Ok(username)
    }
}

/// Where an outbound proxy written as `sip:address[:port][;transport=tcp|tls]` is reached.
fn outbound_proxy(
    proxy: &str,
    listen: &[(TransportKind, std::net::SocketAddr)],
) -> Option<(Destination, TransportKind, std::net::SocketAddr)> {
    let uri = NameAddr::parse(proxy.as_bytes()).ok()?.parse_uri().ok()?;
    let uri = uri.as_sip()?;
    let Host::Ip(ip) = uri.host else { return None };
    let kind = match uri.param("transport").flatten() {
        _ if uri.secure => TransportKind::Tls,
        Some(t) if t.eq_ignore_ascii_case("tcp") => TransportKind::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => TransportKind::Tls,
        _ => TransportKind::Udp,
    };
    let remote =
        std::net::SocketAddr::new(ip, uri.port.unwrap_or(if kind == TransportKind::Tls { 5061 } else { 5060 }));
    let local = local_toward(listen, kind)?;
    let destination = match kind {
        TransportKind::Udp => Destination::Datagram { local, remote },
        kind => Destination::Connection { kind, remote },
    };
    Some((destination, kind, local))
}

/// The Route value for an outbound proxy, `;lr` added when missing (RFC 3261 §16.12).
fn loose_route(proxy: &str) -> String {
    let uri = proxy.trim().trim_start_matches('<').trim_end_matches('>');
    if uri.split(';').any(|p| p.eq_ignore_ascii_case("lr")) { format!("<{uri}>") } else { format!("<{uri};lr>") }
}

/// The user part of the To URI.
fn to_user(request: &Message) -> Option<String> {
    request.to_uri()?.ok()?.as_sip()?.user.as_deref().map(str::to_owned)
}

/// Our address on the side of a `kind` peer: the listener of that transport, else TCP's
/// (a TLS trunk dialled from a server without a TLS listener), else any.
pub(super) fn local_toward(
    listen: &[(TransportKind, std::net::SocketAddr)],
    kind: TransportKind,
) -> Option<std::net::SocketAddr> {
    let of = |k: TransportKind| listen.iter().find(|(l, _)| *l == k).map(|(_, a)| *a);
    of(kind).or_else(|| of(TransportKind::Tcp)).or_else(|| listen.first().map(|(_, a)| *a))
}

/// Where a UDP device is reached. A Contact naming the address its REGISTER came from is
/// taken at its word (a device may listen on another port than it sends from); any other
/// Contact is behind NAT or unresolvable, so the packet source is used (RFC 3581): the
/// one address a device behind NAT can be reached at.
fn udp_target(contact: &str, received: std::net::SocketAddr) -> std::net::SocketAddr {
    match Uri::parse(contact.as_bytes()) {
        Ok(Uri::Sip(uri)) if uri.host == Host::Ip(received.ip()) => {
            std::net::SocketAddr::new(received.ip(), uri.port.unwrap_or(5060))
        }
        _ => received,
    }
}

#[cfg(test)]
mod tests {
    use super::udp_target;

    #[test]
    fn contact_is_used_unless_nat_is_evident() {
        let src = "203.0.113.5:40000".parse().unwrap();
        assert_eq!(udp_target("sip:bob@203.0.113.5:5070", src), "203.0.113.5:5070".parse().unwrap());
        assert_eq!(udp_target("sip:bob@203.0.113.5", src), "203.0.113.5:5060".parse().unwrap());
        assert_eq!(udp_target("sip:bob@10.0.0.7:5060", src), src, "private address behind NAT");
        assert_eq!(udp_target("sip:bob@phone.example.com", src), src);
    }
}

//! REGISTER: RFC 3261 §10.3 step 2 (authenticate) here, the rest in the registrar.

use std::time::Instant;

use super::{Local, RequestError, SUPPORTED};
use crate::auth::Verdict;
use crate::message::{HeaderName, Message};
use crate::proxy::LocalReply;
use crate::transport::{Source, TransportKind};

impl Local {
    pub(super) fn register(
        &mut self,
        now: Instant,
        request: &Message,
        source: &Source,
    ) -> Result<LocalReply, RequestError> {
        // §10.3 step 1 and plain syntax come before asking for credentials: a client must
        // not be made to authenticate a request that cannot succeed.
        self.registrar.precheck(request).map_err(RequestError::Register)?;
        let now_unix = self.wall.unix(now);
        let credentials = request.first_value(HeaderName::Authorization);
        let verdict = self.auth.verify(
            now,
            now_unix,
            source.remote.ip(),
            "REGISTER",
            request.request_uri().unwrap_or_default(),
            credentials.as_deref(),
            &self.users,
        );
        let user = match verdict {
            Verdict::Authenticated { username } => username,
            Verdict::Challenge { stale } => {
                // JsSIP and SIP.js keep only the last challenge and know only MD5.
                let browser = matches!(source.kind, TransportKind::Ws | TransportKind::Wss);
                return Err(RequestError::Challenge(self.auth.challenges(now_unix, &mut self.entropy, stale, browser)));
            }
            Verdict::Throttled { retry_after } => {
                tracing::info!(source = %source.remote.ip(), "authentication throttled after repeated failures");
                return Err(RequestError::Throttled { retry_after });
            }
            Verdict::Malformed(reason) => return Err(RequestError::Credentials(reason)),
        };
        let registered = self.registrar.register(now, request, source, &user).map_err(RequestError::Register)?;
        self.stats.registrations += 1;
        self.bindings_changed(now);
        for &(old, new) in &registered.replaced_flows {
            // Aliases chain: a flow replaced twice points at the newest.
            for target in self.flow_aliases.values_mut() {
                if *target == old {
                    *target = new;
                }
            }
            self.flow_aliases.insert(old, new);
            self.replaced.push((old, new));
        }
        tracing::debug!(aor = %registered.aor, bindings = registered.contacts.len(), flow = ?source.flow, "registered");

        let mut reply = LocalReply::new(200);
        for contact in registered.contacts {
            reply.headers.push(("Contact", contact.into()));
        }
        if registered.require_outbound {
            reply.headers.push(("Require", "outbound".into()));
        }
        for path in registered.path {
            reply.headers.push(("Path", path.into()));
        }
        reply.headers.push(("Supported", SUPPORTED.into()));
        reply.headers.push(("Date", self.date_text(now_unix).to_owned().into()));
        Ok(reply)
    }

    /// RFC 3261 §20.17's Date value for `now_unix`, formatted once per second.
    pub(super) fn date_text(&mut self, now_unix: std::time::Duration) -> &str {
        let second = now_unix.as_secs();
        if self.date.1.is_empty() || self.date.0 != second {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(second);
            self.date = (second, httpdate::fmt_http_date(whole));
        }
        &self.date.1
    }
}

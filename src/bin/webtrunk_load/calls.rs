//! `calls`: browsers placing calls through the server. N WebSocket clients register with
//! digest, then C calls are placed in all at R calls/s, call k on client k mod N. Each
//! client holds one call at a time, as a browser with one line does; a call due while the
//! client is still busy waits in the client's queue (reported as start lag). A call is
//!
//! ```text
//! INVITE (SDP offer)                  -> 100, 407 Proxy-Authenticate; ACK (RFC 3261 §17.1.1.3)
//! INVITE with Proxy-Authorization     -> 100, 180, 200 (RFC 3261 §22.3, MD5, qop=auth)
//! ACK, BYE along the route set        -> 200 to the BYE (RFC 3261 §12.1.2, §15)
//! ```
//!
//! The callee is whatever the server routes `--callee` to (scripts/bench-ws-calls: a SIPp
//! UAS over UDP). Setup latency is the authenticated INVITE to its 200; the first INVITE
//! to the 200, through the 407 round, is reported beside it. A call fails on any other
//! final response, on a missing challenge or Contact, or when a step gets no final
//! response within the timeout; failures are tallied by kind with one example each.
//! Everything is bounded: the ramp by the client count, the calls by C, each step by the
//! timeout, and the whole run by a deadline after which unfinished calls count as failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use webtrunk::clock::{self, Entropy};

use super::sip::{self, Challenge, Incoming, Profile, Ua};
use super::stats::{Latencies, Stats};
use super::target::{Target, Transport};

/// The SDP offer each INVITE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Offer {
    /// A compact WebRTC audio offer (ICE, DTLS, opus and G.711): about 700 bytes.
    Small,
    /// An offer shaped like Chromium's for one audio track: about 4 KB.
    Chromium,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) clients: usize,
    pub(crate) ramp_per_sec: f64,
    /// Calls placed per second, over all clients.
    pub(crate) rate: f64,
    /// Calls placed in all.
    pub(crate) count: u64,
    /// Request-URI of every INVITE, e.g. `sip:bob@localhost`.
    pub(crate) callee: String,
    /// Time between the ACK and the BYE.
    pub(crate) hold: Duration,
    pub(crate) offer: Offer,
    /// Bound on a client's connect and registration, and on each step of a call.
    pub(crate) timeout: Duration,
}

/// How long clients get to close cleanly at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on every Linux
/// architecture this runs on (the kernel's exported unit, not its internal HZ).
const USER_HZ: f64 = 100.0;

/// Runs the plan and returns the JSON line and whether anything failed.
pub(crate) async fn run(target: Arc<Target>, profile: Arc<Profile>, plan: Plan) -> (String, bool) {
    let cpu_start = process_cpu_secs();
    let setup = Arc::new(Stats::default());
    // `requests` counts calls begun, `ok` calls completed, `failed` calls that failed.
    let calls = Arc::new(Stats::default());
    let plan = Arc::new(plan);
    let mut entropy = Entropy::from_os();
    let mut tasks = JoinSet::new();
    let mut lines = Vec::with_capacity(plan.clients);

    // Connect and register every client at the ramp rate before the first call.
    let start = clock::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while lines.len() < plan.clients {
        tick.tick().await;
        let due = (clock::now().duration_since(start).as_secs_f64() * plan.ramp_per_sec).ceil() as usize;
        for index in lines.len()..due.min(plan.clients) {
            let (order_tx, order_rx) = mpsc::unbounded_channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            let ua = Ua::new(index, entropy.bytes());
            let seed = u64::from_le_bytes(entropy.bytes());
            let work = Client {
                target: target.clone(),
                profile: profile.clone(),
                plan: plan.clone(),
                setup: setup.clone(),
                calls: calls.clone(),
            };
            tasks.spawn(work.run(ua, Entropy::seeded(seed), order_rx, ready_tx));
            lines.push((order_tx, ready_rx));
        }
    }
    let settle_by = clock::now() + plan.timeout + Duration::from_secs(1);
    let mut ready = Vec::with_capacity(lines.len());
    for (order_tx, ready_rx) in lines {
        let left = settle_by.saturating_duration_since(clock::now());
        match tokio::time::timeout(left, ready_rx).await {
            Ok(Ok(())) => ready.push(order_tx),
            // The client failed and counted its failure.
            Ok(Err(_)) => {}
            Err(_) => {
                setup.fail("setup timeout", format!("not registered within {:?} of the ramp's end", plan.timeout))
            }
        }
    }
    eprintln!(
        "webtrunk-load: {} of {} clients registered; placing {} calls to {} at {}/s",
        ready.len(),
        plan.clients,
        plan.count,
        plan.callee,
        plan.rate
    );

    // Place call k at begin + k / rate on client k mod N.
    let begin = clock::now();
    let mut progress = Progress { calls: &calls, begin, next: begin + Duration::from_secs(5) };
    let mut placed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while placed < plan.count {
        tick.tick().await;
        let due = ((clock::now().duration_since(begin).as_secs_f64() * plan.rate).floor() as u64 + 1).min(plan.count);
        for k in placed..due {
            let at = begin + Duration::from_secs_f64(k as f64 / plan.rate);
            let line = ready.get(usize::try_from(k).unwrap_or(usize::MAX) % ready.len().max(1));
            if line.is_none_or(|line| line.send(at).is_err()) {
                Stats::bump(&calls.requests);
                calls.fail("no registered client", format!("call {k} had no live client to go on"));
            }
        }
        placed = placed.max(due);
        progress.maybe_print();
    }
    // Closing the queues tells each client to finish what it has and hang up.
    drop(ready);

    let mut samples = Samples::default();
    let mut last_end = clock::now();
    let join_by = clock::now() + (plan.timeout * 3 + plan.hold) * 2 + CLOSE_GRACE + Duration::from_secs(5);
    loop {
        if clock::now() >= join_by {
            eprintln!("webtrunk-load: {} clients did not finish in time; abandoned", tasks.len());
            tasks.abort_all();
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((client, finished)))) => {
                samples.extend(client);
                last_end = last_end.max(finished);
            }
            Ok(Some(Err(e))) => eprintln!("webtrunk-load: client task ended abnormally: {e}"),
            Err(_) => {}
        }
        progress.maybe_print();
    }
    let settled = Stats::read(&calls.ok) + Stats::read(&calls.failed);
    for _ in settled..plan.count {
        calls.fail("not finished by the deadline", "the call's client was abandoned at the run's deadline");
    }
    let elapsed = last_end.duration_since(begin).as_secs_f64();
    let cpu = process_cpu_secs().zip(cpu_start).map(|(end, start)| end - start);
    report(&plan, &setup, &calls, samples, elapsed, cpu)
}

/// The JSON line and the failure summary on stderr.
fn report(
    plan: &Plan,
    setup: &Stats,
    calls: &Stats,
    mut samples: Samples,
    elapsed: f64,
    cpu: Option<f64>,
) -> (String, bool) {
    for line in setup.failure_summary() {
        eprintln!("webtrunk-load: client failed: {line}");
    }
    let call_failures = calls.failure_summary();
    for line in &call_failures {
        eprintln!("webtrunk-load: call failed: {line}");
    }
    samples.setup.sort();
    samples.first.sort();
    samples.lag.sort();
    let completed = Stats::read(&calls.ok);
    let failed = Stats::read(&calls.failed);
    let ms = |l: &Latencies, p| round3(l.percentile_ms(p));
    let line = serde_json::json!({
        "mode": "calls",
        "clients": plan.clients,
        "registered": Stats::read(&setup.registered),
        "client_failures": Stats::read(&setup.failed),
        "offered_per_sec": plan.rate,
        "attempted": plan.count,
        "completed": completed,
        "failed": failed,
        "failures": call_failures,
        "calls_per_sec": round3(completed as f64 / elapsed.max(f64::EPSILON)),
        "elapsed_secs": round3(elapsed),
        "setup_p50_ms": ms(&samples.setup, 50.0),
        "setup_p99_ms": ms(&samples.setup, 99.0),
        "first_invite_p50_ms": ms(&samples.first, 50.0),
        "first_invite_p99_ms": ms(&samples.first, 99.0),
        "start_lag_p99_ms": ms(&samples.lag, 99.0),
        "load_cpu_secs": cpu.map(round3),
    });
    let failed_any = failed > 0 || Stats::read(&setup.failed) > 0;
    (line.to_string(), failed_any)
}

/// Three decimals for the JSON line; 0 for what is not finite.
fn round3(value: f64) -> f64 {
    if value.is_finite() { (value * 1000.0).round() / 1000.0 } else { 0.0 }
}

/// Latencies one client measured, merged at the end.
#[derive(Debug, Default)]
struct Samples {
    /// Authenticated INVITE to its 200.
    setup: Latencies,
    /// First INVITE to the 200, through the 407 round.
    first: Latencies,
    /// How late each call began after it was due (queued behind the client's last call).
    lag: Latencies,
}

impl Samples {
    fn extend(&mut self, other: Self) {
        self.setup.extend(other.setup);
        self.first.extend(other.first);
        self.lag.extend(other.lag);
    }
}

/// What every client task shares.
#[derive(Debug)]
struct Client {
    target: Arc<Target>,
    profile: Arc<Profile>,
    plan: Arc<Plan>,
    setup: Arc<Stats>,
    calls: Arc<Stats>,
}

impl Client {
    /// Connects and registers, says so on `ready`, then places each call it is handed
    /// until its queue is closed. Returns its samples and when it finished its last call.
    async fn run(
        self,
        ua: Ua,
        entropy: Entropy,
        mut orders: mpsc::UnboundedReceiver<Instant>,
        ready: oneshot::Sender<()>,
    ) -> (Samples, Instant) {
        let mut samples = Samples::default();
        let limit = self.plan.timeout;
        let setup = tokio::time::timeout(limit, Box::pin(Line::open(&self.target, &self.profile, ua, entropy))).await;
        let mut line = match setup {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                self.setup.fail(e.kind(), &e);
                return (samples, clock::now());
            }
            Err(_) => {
                self.setup.fail("setup timeout", format!("no WebSocket and 200 to REGISTER within {limit:?}"));
                return (samples, clock::now());
            }
        };
        Stats::bump(&self.setup.registered);
        if ready.send(()).is_err() {
            line.close().await;
            return (samples, clock::now());
        }
        let mut finished = clock::now();
        loop {
            tokio::select! {
                order = orders.recv() => {
                    let Some(due) = order else { break };
                    samples.lag.record(clock::now().saturating_duration_since(due).as_micros());
                    Stats::bump(&self.calls.requests);
                    let outcome = line.call(&self.profile, &self.plan).await;
                    finished = clock::now();
                    match outcome {
                        Ok(times) => {
                            Stats::bump(&self.calls.ok);
                            samples.setup.record(times.setup.as_micros());
                            samples.first.record(times.first.as_micros());
                        }
                        Err(e) => {
                            self.calls.fail(e.kind(), &e);
                            if e.ends_line() {
                                self.fail_queue(&mut orders, &e).await;
                                return (samples, clock::now());
                            }
                        }
                    }
                }
                message = line.ws.next() => {
                    if let Err(e) = line.take_in(message).await {
                        self.setup.fail(format!("dropped between calls: {}", e.kind()), &e);
                        self.fail_queue(&mut orders, &e).await;
                        return (samples, clock::now());
                    }
                }
            }
        }
        line.close().await;
        (samples, finished)
    }

    /// Counts every call still coming to a client whose connection is gone as failed.
    async fn fail_queue(&self, orders: &mut mpsc::UnboundedReceiver<Instant>, cause: &CallError) {
        while orders.recv().await.is_some() {
            Stats::bump(&self.calls.requests);
            self.calls.fail("connection lost before the call", format!("the client's connection ended: {cause}"));
        }
    }
}

/// Why a call (or a client's setup) failed; [`CallError::kind`] is the tally key.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Connect(super::target::ConnectError),
    #[error("closed by the server")]
    Closed,
    #[error("{0}")]
    WebSocket(tungstenite::Error),
    #[error("no final response to {step} within {limit:?} (Call-ID {call_id})")]
    Timeout { step: &'static str, limit: Duration, call_id: String },
    #[error("{step} answered {status}: {first_line} (Call-ID {call_id})")]
    Refused { step: &'static str, status: u16, first_line: String, call_id: String },
    #[error("407 without an MD5 Proxy-Authenticate (Call-ID {0})")]
    NoChallenge(String),
    #[error("{0} without a Contact (Call-ID {1})")]
    NoContact(&'static str, String),
    #[error("REGISTER still challenged after three tries")]
    ChallengedAgain,
}

impl CallError {
    fn kind(&self) -> String {
        match self {
            Self::Connect(e) => e.kind().into(),
            Self::Closed => "closed by server".into(),
            Self::WebSocket(_) => "websocket error".into(),
            Self::Timeout { step, .. } => format!("timeout waiting for the final response to {step}"),
            Self::Refused { step, status, .. } => format!("{status} to {step}"),
            Self::NoChallenge(_) => "407 without MD5 challenge".into(),
            Self::NoContact(what, _) => format!("{what} without Contact"),
            Self::ChallengedAgain => "REGISTER challenged again".into(),
        }
    }

    /// Whether the connection is unusable after this.
    fn ends_line(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Closed | Self::WebSocket(_))
    }
}

/// When the 200 came, measured from each INVITE.
#[derive(Debug)]
struct CallTimes {
    setup: Duration,
    first: Duration,
}

/// The steps of a call, as named in failures.
const INVITE: &str = "INVITE";
const AUTH_INVITE: &str = "INVITE with Proxy-Authorization";
const BYE: &str = "BYE";
const REGISTER: &str = "REGISTER";

/// One simulated browser's WebSocket and the tokens its requests are made of.
#[derive(Debug)]
struct Line {
    ws: WebSocketStream<Transport>,
    ua: Ua,
    entropy: Entropy,
    /// The random `.invalid` host of Via and Contact (RFC 7118 §5).
    host: String,
    contact_user: String,
    via: &'static str,
}

/// A confirmed dialog, from the caller's side (RFC 3261 §12.1.2).
#[derive(Debug)]
struct Dialog {
    call_id: String,
    from: String,
    /// The To field of the 2xx, with the callee's tag.
    to: String,
    remote_target: String,
    /// The 2xx's Record-Route entries in reverse order.
    routes: Vec<String>,
}

impl Line {
    /// Connects and registers with digest (401, then REGISTER with Authorization).
    async fn open(target: &Target, profile: &Profile, ua: Ua, mut entropy: Entropy) -> Result<Self, CallError> {
        let ws = target.connect(ua.index).await.map_err(CallError::Connect)?;
        let host = format!("{}.invalid", entropy.token(12));
        let contact_user = entropy.token(8);
        let mut line = Self { ws, ua, entropy, host, contact_user, via: profile.via };
        line.register(profile).await?;
        Ok(line)
    }

    async fn register(&mut self, profile: &Profile) -> Result<(), CallError> {
        let uri = format!("sip:{}", profile.domain);
        let user = self.ua.user(profile);
        let call_id = self.ua.call_id();
        let mut challenge: Option<Challenge> = None;
        for cseq in 1..=3 {
            let authorization = challenge
                .as_ref()
                .map(|c| c.authorization(&user, &profile.password, REGISTER, &uri, 1, &self.ua.cnonce(cseq)));
            let authorized = authorization.is_some();
            let request = self.ua.register(profile, cseq, authorization.as_deref());
            self.send(request).await?;
            let reply = self.final_response(&call_id, cseq, None).await?;
            let status = status_of(&reply);
            match status {
                200..=299 => return Ok(()),
                401 => {
                    let fresh = headers(&reply, &["www-authenticate"]).find_map(Challenge::parse_md5);
                    match fresh {
                        Some(c) if !authorized || c.stale => challenge = Some(c),
                        _ => return Err(refused(REGISTER, &reply, &call_id)),
                    }
                }
                _ => return Err(refused(REGISTER, &reply, &call_id)),
            }
        }
        Err(CallError::ChallengedAgain)
    }

    /// One call from INVITE to the 200 to its BYE.
    async fn call(&mut self, profile: &Profile, plan: &Plan) -> Result<CallTimes, CallError> {
        let limit = plan.timeout;
        let user = self.ua.user(profile);
        let call_id = format!("{}@{}", self.entropy.token(20), self.host);
        let from = format!("\"{user}\" <sip:{user}@{}>;tag={}", profile.domain, self.entropy.tag());
        let offer = offer(plan.offer, &mut self.entropy);

        let first_sent = clock::now();
        let branch = self.entropy.branch();
        self.send(self.invite(&plan.callee, &branch, &from, &call_id, 1, None, &offer)).await?;
        let reply = self.wait(INVITE, limit, &call_id, 1, None).await?;
        let (sent, reply, invite_cseq) = match status_of(&reply) {
            407 => {
                self.send(ack_non_2xx(&plan.callee, self.via, &self.host, &branch, &from, &reply, &call_id, 1)).await?;
                let challenge = headers(&reply, &["proxy-authenticate"])
                    .find_map(Challenge::parse_md5)
                    .ok_or_else(|| CallError::NoChallenge(call_id.clone()))?;
                let cnonce = self.entropy.token(16);
                let authorization = challenge.authorization(&user, &profile.password, INVITE, &plan.callee, 1, &cnonce);
                let branch = self.entropy.branch();
                let sent = clock::now();
                let invite = self.invite(&plan.callee, &branch, &from, &call_id, 2, Some(&authorization), &offer);
                self.send(invite).await?;
                let reply = self.wait(AUTH_INVITE, limit, &call_id, 2, None).await?;
                if !(200..300).contains(&status_of(&reply)) {
                    self.send(ack_non_2xx(&plan.callee, self.via, &self.host, &branch, &from, &reply, &call_id, 2))
                        .await?;
                    return Err(refused(AUTH_INVITE, &reply, &call_id));
                }
                (sent, reply, 2)
            }
            200..=299 => (first_sent, reply, 1),
            _ => {
                self.send(ack_non_2xx(&plan.callee, self.via, &self.host, &branch, &from, &reply, &call_id, 1)).await?;
                return Err(refused(INVITE, &reply, &call_id));
            }
        };
        let answered = clock::now();
        let dialog = Dialog::from_2xx(&reply, call_id, from)?;
        let ack = self.in_dialog(&dialog, "ACK", invite_cseq);
        self.send(ack.clone()).await?;
        if !plan.hold.is_zero() {
            // Read while holding: pings and retransmitted 2xx (re-ACKed) come meanwhile.
            let hold = self.wait(BYE, plan.hold, &dialog.call_id, u32::MAX, Some((invite_cseq, &ack)));
            match hold.await {
                Err(CallError::Timeout { .. }) => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let bye_cseq = invite_cseq + 1;
        let bye = self.in_dialog(&dialog, BYE, bye_cseq);
        self.send(bye).await?;
        let reply = self.wait(BYE, limit, &dialog.call_id, bye_cseq, Some((invite_cseq, &ack))).await?;
        if !(200..300).contains(&status_of(&reply)) {
            return Err(refused(BYE, &reply, &dialog.call_id));
        }
        Ok(CallTimes { setup: answered.duration_since(sent), first: answered.duration_since(first_sent) })
    }

    /// [`Line::final_response`] within `limit`.
    async fn wait(
        &mut self,
        step: &'static str,
        limit: Duration,
        call_id: &str,
        cseq: u32,
        reack: Option<(u32, &str)>,
    ) -> Result<String, CallError> {
        match tokio::time::timeout(limit, self.final_response(call_id, cseq, reack)).await {
            Ok(reply) => reply,
            Err(_) => Err(CallError::Timeout { step, limit, call_id: call_id.into() }),
        }
    }

    /// Reads until the final response to request `cseq` of `call_id`, answering the
    /// server's requests on the way. A retransmitted 2xx to the INVITE (`reack`: its CSeq
    /// and our ACK) is ACKed again (RFC 3261 §13.2.2.4); anything else is ignored.
    async fn final_response(
        &mut self,
        call_id: &str,
        cseq: u32,
        reack: Option<(u32, &str)>,
    ) -> Result<String, CallError> {
        loop {
            let message = self.ws.next().await;
            let Some(text) = self.take_in(message).await? else { continue };
            let Incoming::Response(response) = Incoming::parse(&text) else { continue };
            if response.call_id != call_id || !response.is_final() {
                continue;
            }
            if response.cseq == cseq {
                return Ok(text);
            }
            if let Some((invite, ack)) = reack
                && response.cseq == invite
                && (200..300).contains(&response.status)
            {
                self.send(ack.to_owned()).await?;
            }
        }
    }

    /// Handles one message from the socket: answers a request, returns a response's text.
    async fn take_in(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<String>, CallError> {
        let message = match message {
            None | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Err(CallError::Closed);
            }
            Some(Err(e)) => return Err(CallError::WebSocket(e)),
            Some(Ok(message)) => message,
        };
        let text = match message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => return Err(CallError::Closed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(None),
        };
        match Incoming::parse(&text) {
            Incoming::Response(_) => Ok(Some(text)),
            Incoming::Request { method } => {
                if let Some(answer) = sip::answer(&text, method) {
                    self.send(answer).await?;
                }
                Ok(None)
            }
            Incoming::Pong | Incoming::Garbage => Ok(None),
        }
    }

    async fn send(&mut self, text: String) -> Result<(), CallError> {
        self.ws.send(Message::text(text)).await.map_err(CallError::WebSocket)
    }

    /// Closes the WebSocket and reads until the server closes TCP (TIME_WAIT stays there).
    async fn close(mut self) {
        let drain = async {
            if self.ws.close(None).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }

    /// An INVITE as JsSIP sends it: outbound Contact over the `.invalid` host.
    #[allow(clippy::too_many_arguments)]
    fn invite(
        &self,
        callee: &str,
        branch: &str,
        from: &str,
        call_id: &str,
        cseq: u32,
        authorization: Option<&str>,
        sdp: &str,
    ) -> String {
        let mut m = String::with_capacity(1024 + sdp.len());
        m.push_str(&format!("INVITE {callee} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch}\r\n", self.via, self.host));
        m.push_str(&format!("Max-Forwards: 69\r\nTo: <{callee}>\r\nFrom: {from}\r\nCall-ID: {call_id}\r\n"));
        m.push_str(&format!("CSeq: {cseq} INVITE\r\n"));
        if let Some(value) = authorization {
            m.push_str(&format!("Proxy-Authorization: {value}\r\n"));
        }
        m.push_str(&format!("Contact: <sip:{}@{};transport=ws;ob>\r\n", self.contact_user, self.host));
        m.push_str("Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n");
        m.push_str("Supported: ice,replaces,outbound\r\nUser-Agent: webtrunk-load\r\n");
        m.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()));
        m
    }

    /// ACK or BYE inside the dialog: to the remote target along the route set, a new
    /// branch each (RFC 3261 §12.2.1.1; the 2xx's ACK is its own transaction, §13.2.2.4).
    fn in_dialog(&mut self, dialog: &Dialog, method: &str, cseq: u32) -> String {
        let branch = self.entropy.branch();
        let mut m = String::with_capacity(512);
        m.push_str(&format!("{method} {} SIP/2.0\r\n", dialog.remote_target));
        m.push_str(&format!("Via: SIP/2.0/{} {};branch={branch}\r\nMax-Forwards: 69\r\n", self.via, self.host));
        if !dialog.routes.is_empty() {
            m.push_str(&format!("Route: {}\r\n", dialog.routes.join(", ")));
        }
        m.push_str(&format!("To: {}\r\nFrom: {}\r\nCall-ID: {}\r\n", dialog.to, dialog.from, dialog.call_id));
        m.push_str(&format!("CSeq: {cseq} {method}\r\nUser-Agent: webtrunk-load\r\nContent-Length: 0\r\n\r\n"));
        m
    }
}

impl Dialog {
    /// The caller's view of the dialog a 2xx to its INVITE creates (RFC 3261 §12.1.2):
    /// remote target from Contact, route set the Record-Route entries reversed.
    fn from_2xx(reply: &str, call_id: String, from: String) -> Result<Self, CallError> {
        let to = header(reply, &["to", "t"]).unwrap_or_default().to_owned();
        let contact = header(reply, &["contact", "m"]).and_then(|v| split_list(v).into_iter().next());
        let Some(remote_target) = contact.map(uri_of) else {
            return Err(CallError::NoContact("2xx to INVITE", call_id));
        };
        let mut routes: Vec<String> =
            headers(reply, &["record-route"]).flat_map(split_list).map(str::to_owned).collect();
        routes.reverse();
        Ok(Self { call_id, from, to, remote_target: remote_target.to_owned(), routes })
    }
}

/// The ACK of a non-2xx final response: part of the INVITE's transaction, so its branch
/// and Request-URI, and the response's To (RFC 3261 §17.1.1.3).
#[allow(clippy::too_many_arguments)]
fn ack_non_2xx(
    callee: &str,
    via: &str,
    host: &str,
    branch: &str,
    from: &str,
    reply: &str,
    call_id: &str,
    cseq: u32,
) -> String {
    let to = header(reply, &["to", "t"]).unwrap_or_default();
    format!(
        "ACK {callee} SIP/2.0\r\nVia: SIP/2.0/{via} {host};branch={branch}\r\nMax-Forwards: 69\r\nTo: {to}\r\n\
         From: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

fn refused(step: &'static str, reply: &str, call_id: &str) -> CallError {
    CallError::Refused {
        step,
        status: status_of(reply),
        first_line: reply.lines().next().unwrap_or_default().to_owned(),
        call_id: call_id.to_owned(),
    }
}

fn status_of(reply: &str) -> u16 {
    reply.strip_prefix("SIP/2.0 ").and_then(|rest| rest.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The first value of a header by any of its `names` (lower case, compact form too).
fn header<'a>(text: &'a str, names: &'static [&'static str]) -> Option<&'a str> {
    headers(text, names).next()
}

/// Every field line's value of a header, from the head of a message only.
fn headers<'a>(text: &'a str, names: &'static [&'static str]) -> impl Iterator<Item = &'a str> + 'a {
    let head = text.split("\r\n\r\n").next().unwrap_or(text);
    head.split("\r\n").skip(1).filter_map(move |line| {
        let (field, value) = line.split_once(':')?;
        let field = field.trim();
        names.iter().any(|name| field.eq_ignore_ascii_case(name)).then(|| value.trim())
    })
}

/// A comma-separated header value split into its entries, commas inside `<...>` or
/// quotes kept (RFC 3261 §7.3.1).
fn split_list(value: &str) -> Vec<&str> {
    let (mut entries, mut start, mut angle, mut quoted) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                entries.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(value[start..].trim());
    entries.retain(|e| !e.is_empty());
    entries
}

/// The URI of a name-addr (`"x" <sip:a@b;lr>;p=1` → `sip:a@b;lr`) or of an addr-spec
/// (parameters after `;` belong to the header then, RFC 3261 §20).
fn uri_of(entry: &str) -> &str {
    match (entry.find('<'), entry.find('>')) {
        (Some(open), Some(close)) if open < close => &entry[open + 1..close],
        _ => entry.split(';').next().unwrap_or(entry).trim(),
    }
}

/// An SDP offer with fresh ICE credentials, fingerprint and ids.
fn offer(kind: Offer, entropy: &mut Entropy) -> String {
    let session = u64::from_le_bytes(entropy.bytes()) >> 2;
    let ufrag = entropy.token(4);
    let pwd = entropy.token(24);
    let fingerprint: Vec<String> = entropy.bytes::<32>().iter().map(|b| format!("{b:02X}")).collect();
    let fingerprint = fingerprint.join(":");
    let port = 40_000 + u32::from(u16::from_le_bytes(entropy.bytes()) % 20_000);
    let mut sdp = format!(
        "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n"
    );
    match kind {
        Offer::Small => sdp.push_str(&format!(
            "m=audio {port} UDP/TLS/RTP/SAVPF 111 0 8 101\r\nc=IN IP4 127.0.0.1\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0 network-id 1\r\n\
             a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n\
             a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        )),
        Offer::Chromium => {
            let track = uuid(entropy);
            let stream = uuid(entropy);
            let ssrc = u32::from_le_bytes(entropy.bytes());
            let cname = entropy.token(16);
            sdp.push_str(&format!(
                "m=audio {port} UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 127.0.0.1\r\n\
                 a=rtcp:9 IN IP4 0.0.0.0\r\n"
            ));
            // Host candidates on two interfaces, UDP and TCP, with their relay and srflx
            // siblings: what a browser with a TURN server configured gathers.
            for (n, (transport, priority, typ)) in [
                ("udp", 2_122_260_223u32, "host"),
                ("udp", 2_122_194_687, "host"),
                ("tcp", 1_518_280_447, "host tcptype passive"),
                ("tcp", 1_518_214_911, "host tcptype passive"),
                ("udp", 1_686_052_607, "srflx raddr 127.0.0.1 rport 40000"),
                ("udp", 41_885_439, "relay raddr 127.0.0.1 rport 40000"),
            ]
            .into_iter()
            .enumerate()
            {
                let foundation = u32::from_le_bytes(entropy.bytes());
                sdp.push_str(&format!(
                    "a=candidate:{foundation} 1 {transport} {priority} 127.0.0.1 {} typ {typ} generation 0 \
                     network-id {} network-cost 10\r\n",
                    u32::try_from(n).map_or(port, |n| port + n),
                    n % 2 + 1
                ));
            }
            sdp.push_str(&format!(
                "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n\
                 a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=mid:0\r\n\
                 a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                 a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
                 a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                 a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                 a=sendrecv\r\na=msid:{stream} {track}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
                 a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
                 a=fmtp:111 minptime=10;useinbandfec=1\r\n\
                 a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
                 a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                 a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
                 a=rtpmap:126 telephone-event/8000\r\n\
                 a=ssrc:{ssrc} cname:{cname}\r\na=ssrc:{ssrc} msid:{stream} {track}\r\n"
            ));
            // Chromium offers the same again for a video transceiver it may add later;
            // inactive here, it is part of what the proxy reads and forwards.
            let video_ssrc = u32::from_le_bytes(entropy.bytes());
            sdp = sdp.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1");
            sdp.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46\r\n\
                 c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
                 a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n\
                 a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=mid:1\r\n\
                 a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
                 a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
                 a=extmap:13 urn:3gpp:video-orientation\r\n\
                 a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                 a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                 a=inactive\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
                 a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
                 a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
                 a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
                 a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 goog-remb\r\na=rtcp-fb:102 transport-cc\r\n\
                 a=rtcp-fb:102 ccm fir\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
                 a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
                 a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
                 a=rtpmap:104 H264/90000\r\na=rtcp-fb:104 goog-remb\r\na=rtcp-fb:104 transport-cc\r\n\
                 a=rtcp-fb:104 ccm fir\r\na=rtcp-fb:104 nack\r\na=rtcp-fb:104 nack pli\r\n\
                 a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
                 a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\n\
                 a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;\
                 profile-level-id=42e01f\r\na=rtpmap:107 rtx/90000\r\na=fmtp:107 apt=106\r\n\
                 a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;\
                 profile-level-id=42e01f\r\na=rtpmap:109 rtx/90000\r\na=fmtp:109 apt=108\r\n\
                 a=rtpmap:127 VP9/90000\r\na=fmtp:127 profile-id=0\r\na=rtpmap:125 rtx/90000\r\n\
                 a=fmtp:125 apt=127\r\na=rtpmap:39 AV1/90000\r\na=rtpmap:40 rtx/90000\r\n\
                 a=fmtp:40 apt=39\r\na=rtpmap:45 red/90000\r\na=rtpmap:46 ulpfec/90000\r\n\
                 a=ssrc-group:FID {video_ssrc} {}\r\na=ssrc:{video_ssrc} cname:{cname}\r\n",
                video_ssrc.wrapping_add(1)
            ));
        }
    }
    sdp
}

/// A version-4-shaped UUID for msid.
fn uuid(entropy: &mut Entropy) -> String {
    let mut b: [u8; 16] = entropy.bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// This process's user + system CPU seconds, all threads, from `/proc/self/stat`.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_secs(&stat)
}

/// Fields 14 and 15 (utime, stime) of a stat line; the command name in parentheses may
/// hold spaces, so the count starts after its closing parenthesis.
fn parse_cpu_secs(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A progress line on stderr every five seconds.
#[derive(Debug)]
struct Progress<'a> {
    calls: &'a Stats,
    begin: Instant,
    next: Instant,
}

impl Progress<'_> {
    fn maybe_print(&mut self) {
        let now = clock::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(5);
        eprintln!(
            "webtrunk-load: {:>6.1}s calls begun {} completed {} failed {}",
            now.duration_since(self.begin).as_secs_f64(),
            Stats::read(&self.calls.requests),
            Stats::read(&self.calls.ok),
            Stats::read(&self.calls.failed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
                      Record-Route: <sip:127.0.0.1:5060;transport=udp;r2=on;lr>, <sip:127.0.0.1:8080;transport=ws;r2=on;lr>\r\n\
                      Record-Route: <sip:edge.example;lr>\r\n\
                      From: \"a, b\" <sip:user1@localhost>;tag=f\r\nt: <sip:bob@localhost>;tag=callee\r\n\
                      Call-ID: c1\r\nCSeq: 2 INVITE\r\nContact: \"Bob\" <sip:bob@127.0.0.1:5099;transport=UDP>;expires=60\r\n\
                      Content-Length: 0\r\n\r\n";

    #[test]
    fn dialog_of_a_2xx_reverses_the_record_route_entries() {
        let dialog = Dialog::from_2xx(OK, "c1".into(), "<sip:user1@localhost>;tag=f".into()).expect("a dialog");
        assert_eq!(dialog.remote_target, "sip:bob@127.0.0.1:5099;transport=UDP");
        assert_eq!(dialog.to, "<sip:bob@localhost>;tag=callee");
        assert_eq!(
            dialog.routes,
            [
                "<sip:edge.example;lr>",
                "<sip:127.0.0.1:8080;transport=ws;r2=on;lr>",
                "<sip:127.0.0.1:5060;transport=udp;r2=on;lr>"
            ]
        );
    }

    #[test]
    fn a_2xx_without_contact_is_a_failure() {
        let reply = OK.replace("Contact: \"Bob\" <sip:bob@127.0.0.1:5099;transport=UDP>;expires=60\r\n", "");
        let e = Dialog::from_2xx(&reply, "c1".into(), String::new()).expect_err("no Contact");
        assert_eq!(e.kind(), "2xx to INVITE without Contact");
    }

    #[test]
    fn lists_split_outside_brackets_and_quotes() {
        assert_eq!(
            split_list("<sip:a;x=1,2>, \"q, r\" <sip:b>,sip:c;lr"),
            ["<sip:a;x=1,2>", "\"q, r\" <sip:b>", "sip:c;lr"]
        );
        assert_eq!(uri_of("\"q, r\" <sip:b@h;lr>;p=1"), "sip:b@h;lr");
        assert_eq!(uri_of("sip:c@h;expires=5"), "sip:c@h");
    }

    #[test]
    fn non_2xx_ack_keeps_the_invite_branch_and_takes_the_response_to() {
        let reply =
            "SIP/2.0 407 Proxy Authentication Required\r\nTo: <sip:bob@localhost>;tag=p\r\nCSeq: 1 INVITE\r\n\r\n";
        let ack = ack_non_2xx("sip:bob@localhost", "WS", "h.invalid", "z9hG4bKb1", "<sip:u@l>;tag=f", reply, "c", 1);
        assert!(ack.starts_with("ACK sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKb1\r\n"));
        assert!(ack.contains("\r\nTo: <sip:bob@localhost>;tag=p\r\n") && ack.contains("\r\nCSeq: 1 ACK\r\n"), "{ack}");
        assert_eq!(status_of(reply), 407);
        assert_eq!(status_of("garbage"), 0);
    }

    #[test]
    fn offers_have_the_sizes_they_promise() {
        let mut entropy = Entropy::seeded(7);
        let small = offer(Offer::Small, &mut entropy);
        let chromium = offer(Offer::Chromium, &mut entropy);
        assert!((500..1000).contains(&small.len()), "{}", small.len());
        assert!((3500..5000).contains(&chromium.len()), "{}", chromium.len());
        for sdp in [&small, &chromium] {
            assert!(sdp.starts_with("v=0\r\no=- ") && sdp.ends_with("\r\n"));
            assert!(sdp.lines().all(|l| l.len() > 2 && l.as_bytes()[1] == b'='), "{sdp}");
        }
        assert!(chromium.contains("a=group:BUNDLE 0 1\r\n") && chromium.contains("m=video 9 "));
    }

    #[test]
    fn cpu_seconds_from_a_stat_line_with_spaces_in_the_name() {
        let stat = "4242 (webtrunk load) S 1 2 3 4 5 6 7 8 9 10 250 130 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_cpu_secs(stat), Some(3.8));
        assert_eq!(parse_cpu_secs("garbage"), None);
    }
}

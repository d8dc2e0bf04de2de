//! `hold`: open many connections at a steady rate, make each one register (or ping
//! with OPTIONS) once, then keep them all open for a while, reading so that the server's
//! pings are answered. One task per client owns its socket; nothing else is per client.

use std::future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use webtrunk::clock::{self, Entropy};

use super::client::{Client, Verdict};
use super::sip::{Profile, Ua};
use super::stats::{Fixed, Stats};
use super::target::Target;

#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) clients: usize,
    pub(crate) ramp_per_sec: f64,
    pub(crate) hold: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) register: bool,
    /// Bound on connect + handshake + first request of one client.
    pub(crate) setup_timeout: Duration,
}

/// How long clients get to close cleanly at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Runs the plan and returns the JSON line and whether anything failed.
pub(crate) async fn run(target: Arc<Target>, profile: Arc<Profile>, plan: Plan) -> (String, bool) {
    let stats = Arc::new(Stats::default());
    let plan = Arc::new(plan);
    let (release, released) = watch::channel(false);
    let start = clock::now();
    let mut entropy = Entropy::from_os();
    let mut progress = Progress::new(&stats, plan.clients);

    // Ramp: every 10 ms, start the clients that are due by now.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut spawned = 0;
    while spawned < plan.clients {
        tick.tick().await;
        let due = (clock::now().duration_since(start).as_secs_f64() * plan.ramp_per_sec).ceil() as usize;
        for index in spawned..due.min(plan.clients) {
            let ua = Ua::new(index, entropy.bytes());
            let (target, profile, plan, stats) = (target.clone(), profile.clone(), plan.clone(), stats.clone());
            tokio::spawn(client(target, profile, plan, stats, ua, released.clone()));
        }
        spawned = spawned.max(due.min(plan.clients));
        progress.maybe_print("ramping");
    }

    // Every client has either its first 200 or a failure, or has run out of time.
    let settle_by = clock::now() + plan.setup_timeout + Duration::from_secs(2);
    while Stats::read(&stats.settled) < plan.clients as u64 && clock::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.maybe_print("settling");
    }
    eprintln!(
        "webtrunk-load: holding {} connections for {:?} ({} failed so far)",
        Stats::read(&stats.ready),
        plan.hold,
        Stats::read(&stats.failed)
    );
    let hold_until = clock::now() + plan.hold;
    while clock::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(200).min(hold_until - clock::now())).await;
        progress.maybe_print("holding");
    }

    let _ = release.send(true);
    let close_by = clock::now() + CLOSE_GRACE + Duration::from_secs(1);
    while Stats::read(&stats.finished) < spawned as u64 && clock::now() < close_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.print("done");
    for line in stats.failure_summary() {
        eprintln!("webtrunk-load: failed: {line}");
    }

    let failed = Stats::read(&stats.failed);
    let line = format!(
        "{{\"mode\":\"hold\",\"clients\":{},\"connected\":{},\"registered\":{},\"failed\":{failed},\"pongs\":{},\"elapsed_secs\":{}}}",
        plan.clients,
        Stats::read(&stats.connected),
        Stats::read(&stats.registered),
        Stats::read(&stats.pongs),
        Fixed(clock::now().duration_since(start).as_secs_f64()),
    );
    (line, failed > 0)
}

async fn client(
    target: Arc<Target>,
    profile: Arc<Profile>,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    ua: Ua,
    mut released: watch::Receiver<bool>,
) {
    Stats::bump(&stats.started);
    // Boxed: the handshake's state is large and needed only briefly; unboxed it would
    // stay in every held client's task for the whole run.
    let setup = tokio::time::timeout(plan.setup_timeout, Box::pin(setup(&target, &profile, &plan, &stats, ua))).await;
    Stats::bump(&stats.settled);
    let mut client = match setup {
        Ok(Some(client)) => {
            Stats::bump(&stats.ready);
            client
        }
        Ok(None) => {
            Stats::bump(&stats.finished);
            return;
        }
        Err(_) => {
            stats.fail("setup timeout", format!("no WebSocket and 200 within {:?}", plan.setup_timeout));
            Stats::bump(&stats.finished);
            return;
        }
    };

    let mut keepalive = plan.keepalive.map(|period| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::from_std(clock::now() + period), period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    while !*released.borrow_and_update() {
        tokio::select! {
            heard = client.hear(&stats, None) => {
                if let Err(e) = heard {
                    stats.ready.fetch_sub(1, Ordering::Relaxed);
                    stats.fail(format!("dropped while holding: {}", e.kind()), e);
                    Stats::bump(&stats.finished);
                    return;
                }
            }
            () = tick_or_never(keepalive.as_mut()) => {
                if let Err(e) = client.keep_alive().await {
                    stats.ready.fetch_sub(1, Ordering::Relaxed);
                    stats.fail(format!("dropped while holding: {}", e.kind()), e);
                    Stats::bump(&stats.finished);
                    return;
                }
            }
            _ = released.changed() => {}
        }
    }
    Box::pin(client.close(CLOSE_GRACE)).await;
    Stats::bump(&stats.finished);
}

/// Connects and gets the first request through; `None` when it failed (and was counted).
async fn setup(target: &Target, profile: &Profile, plan: &Plan, stats: &Stats, ua: Ua) -> Option<Client> {
    let ws = match target.connect(ua.index).await {
        Ok(ws) => ws,
        Err(e) => {
            stats.fail(e.kind(), e);
            return None;
        }
    };
    Stats::bump(&stats.connected);
    let mut client = Client::new(ws, ua);
    let method = if plan.register { "REGISTER" } else { "OPTIONS" };
    // A REGISTER takes two round trips (401, then 200); allow one stale nonce on top.
    for _ in 0..3 {
        let reply = match client.exchange(profile, plan.register, stats, plan.setup_timeout).await {
            Ok(reply) => reply,
            Err(e) => {
                stats.fail(e.kind(), e);
                return None;
            }
        };
        match client.judge(reply, method) {
            Verdict::Ok => {
                if plan.register {
                    Stats::bump(&stats.registered);
                }
                return Some(client);
            }
            Verdict::Challenged => {}
            Verdict::Failed { kind, detail } => {
                stats.fail(kind, detail);
                return None;
            }
        }
    }
    stats.fail("challenged again", format!("{method} still challenged after three tries"));
    None
}

async fn tick_or_never(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => future::pending().await,
    }
}

/// A progress line on stderr every few seconds.
#[derive(Debug)]
struct Progress<'a> {
    stats: &'a Stats,
    clients: usize,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl<'a> Progress<'a> {
    fn new(stats: &'a Stats, clients: usize) -> Self {
        let now = clock::now();
        Self { stats, clients, start: now, last: now }
    }

    fn maybe_print(&mut self, phase: &str) {
        if clock::now().duration_since(self.last) >= Duration::from_secs(5) {
            self.print(phase);
        }
    }

    fn print(&mut self, phase: &str) {
        self.last = clock::now();
        let s = self.stats;
        eprintln!(
            "webtrunk-load: {:>6.1}s {phase}: started {}/{} connected {} ready {} registered {} failed {} pongs {}",
            clock::now().duration_since(self.start).as_secs_f64(),
            Stats::read(&s.started),
            self.clients,
            Stats::read(&s.connected),
            Stats::read(&s.ready),
            Stats::read(&s.registered),
            Stats::read(&s.failed),
            Stats::read(&s.pongs),
        );
    }
}

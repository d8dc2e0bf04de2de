//! `rate`: a fixed number of connections, each sending requests back to back (one in
//! flight per connection) for a fixed time; throughput and latency percentiles.
//! REGISTER answers the first 401 and then re-uses its nonce with a rising nonce count,
//! as a browser re-registering would, taking a fresh nonce only when told `stale=true`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use webtrunk::clock::{self, Entropy};

use super::client::{Client, Verdict};
use super::sip::{Profile, Ua};
use super::stats::{Fixed, Latencies, Stats};
use super::target::Target;

#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) ramp_per_sec: f64,
    pub(crate) register: bool,
    /// Bound on one connect and on one request.
    pub(crate) timeout: Duration,
}

/// How long clients get to close cleanly at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Runs the plan and returns the JSON line and whether anything failed.
pub(crate) async fn run(target: Arc<Target>, profile: Arc<Profile>, plan: Plan) -> (String, bool) {
    let stats = Arc::new(Stats::default());
    let plan = Arc::new(plan);
    let (go, wait_go) = watch::channel(None::<Instant>);
    let mut entropy = Entropy::from_os();
    let mut tasks = JoinSet::new();

    // Connect everyone first, at the ramp rate, so the measurement sees no handshakes.
    let start = clock::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while tasks.len() < plan.concurrency {
        tick.tick().await;
        let due = (clock::now().duration_since(start).as_secs_f64() * plan.ramp_per_sec).ceil() as usize;
        for index in tasks.len()..due.min(plan.concurrency) {
            let ua = Ua::new(index, entropy.bytes());
            let (target, profile, plan, stats) = (target.clone(), profile.clone(), plan.clone(), stats.clone());
            tasks.spawn(client(target, profile, plan, stats, ua, wait_go.clone()));
        }
    }
    let connect_by = clock::now() + plan.timeout + Duration::from_secs(1);
    while Stats::read(&stats.settled) < plan.concurrency as u64 && clock::now() < connect_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let method = if plan.register { "REGISTER" } else { "OPTIONS" };
    eprintln!(
        "webtrunk-load: {} of {} connections open; sending {method} for {:?}",
        Stats::read(&stats.connected),
        plan.concurrency,
        plan.duration
    );

    let begin = clock::now();
    let _ = go.send(Some(begin + plan.duration));
    let mut latencies = Latencies::default();
    let mut next_report = begin + Duration::from_secs(5);
    let join_by = begin + plan.duration + plan.timeout + CLOSE_GRACE + Duration::from_secs(1);
    loop {
        let now = clock::now();
        if now >= join_by {
            eprintln!("webtrunk-load: {} connections did not finish in time; abandoned", tasks.len());
            tasks.abort_all();
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(samples))) => latencies.extend(samples),
            Ok(Some(Err(e))) => eprintln!("webtrunk-load: client task ended abnormally: {e}"),
            Err(_) => {}
        }
        if clock::now() >= next_report {
            next_report += Duration::from_secs(5);
            eprintln!(
                "webtrunk-load: {:>6.1}s requests {} ok {} challenged {} failed {}",
                clock::now().duration_since(begin).as_secs_f64(),
                Stats::read(&stats.requests),
                Stats::read(&stats.ok),
                Stats::read(&stats.challenged),
                Stats::read(&stats.failed),
            );
        }
    }
    // The measurement ends when the last request in flight at the deadline is answered.
    let elapsed = clock::now().duration_since(begin).min(plan.duration + plan.timeout).as_secs_f64();
    for line in stats.failure_summary() {
        eprintln!("webtrunk-load: failed: {line}");
    }
    let requests = Stats::read(&stats.requests);
    if plan.register {
        eprintln!(
            "webtrunk-load: {} of {requests} requests were answered with a digest challenge",
            Stats::read(&stats.challenged)
        );
    }
    latencies.sort();
    let failed = Stats::read(&stats.failed);
    let line = format!(
        "{{\"mode\":\"rate\",\"requests\":{requests},\"ok\":{},\"failed\":{failed},\"per_sec\":{},\"p50_ms\":{},\"p99_ms\":{}}}",
        Stats::read(&stats.ok),
        Fixed(requests as f64 / elapsed.max(f64::EPSILON)),
        Fixed(latencies.percentile_ms(50.0)),
        Fixed(latencies.percentile_ms(99.0)),
    );
    (line, failed > 0)
}

/// One connection: connect, wait for the start, then request after request until the
/// deadline. Returns the latency of every request that got a final response.
async fn client(
    target: Arc<Target>,
    profile: Arc<Profile>,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    ua: Ua,
    mut go: watch::Receiver<Option<Instant>>,
) -> Latencies {
    let mut latencies = Latencies::default();
    let connected = tokio::time::timeout(plan.timeout, target.connect(ua.index)).await;
    Stats::bump(&stats.settled);
    let mut client = match connected {
        Ok(Ok(ws)) => Client::new(ws, ua),
        Ok(Err(e)) => {
            stats.fail(e.kind(), e);
            return latencies;
        }
        Err(_) => {
            stats.fail("connect timeout", format!("no WebSocket within {:?}", plan.timeout));
            return latencies;
        }
    };
    Stats::bump(&stats.connected);
    let deadline = match go.wait_for(Option::is_some).await {
        Ok(deadline) => deadline.unwrap_or_else(clock::now),
        Err(_) => return latencies,
    };
    let method = if plan.register { "REGISTER" } else { "OPTIONS" };
    while clock::now() < deadline {
        let sent = clock::now();
        let reply = client.exchange(&profile, plan.register, &stats, plan.timeout).await;
        Stats::bump(&stats.requests);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                stats.fail(e.kind(), &e);
                if matches!(e, super::client::ClientError::Timeout(_)) {
                    continue;
                }
                return latencies;
            }
        };
        latencies.record(clock::now().duration_since(sent).as_micros());
        match client.judge(reply, method) {
            Verdict::Ok => Stats::bump(&stats.ok),
            Verdict::Challenged => Stats::bump(&stats.challenged),
            Verdict::Failed { kind, detail } => stats.fail(kind, detail),
        }
    }
    client.close(CLOSE_GRACE).await;
    latencies
}

//! `webtrunk-load`: a SIP-over-WebSocket load generator for webtrunk, on loopback only.
//!
//! `hold` opens many connections (sized for 100,000 on a 2-core box: one task and
//! about 7 KiB per ws client, 16 KiB per wss client), registers or pings each
//! once and keeps them open, answering the server's pings; it is what the memory per
//! connection is measured with. `rate` keeps a few connections busy with requests back
//! to back and reports throughput and latency. `calls` registers a few clients and
//! places digest-authenticated calls from them at a fixed rate (INVITE to BYE), with
//! call setup latency. Each run is bounded by its counts and
//! durations, prints progress and a failure summary on stderr, and ends with one JSON
//! line on stdout; the exit status is 0 only when nothing failed.
//!
//! The open-file limit is not raised here: `setrlimit` has no safe Rust API in our
//! dependencies and the crate forbids unsafe code, so the caller runs `ulimit -n` (as
//! `scripts/bench-ws` does). A limit too low for the run is reported before it starts.

#[path = "webtrunk_load/calls.rs"]
mod calls;
#[path = "webtrunk_load/client.rs"]
mod client;
#[path = "webtrunk_load/hold.rs"]
mod hold;
#[path = "webtrunk_load/rate.rs"]
mod rate;
#[path = "webtrunk_load/sip.rs"]
mod sip;
#[path = "webtrunk_load/stats.rs"]
mod stats;
#[path = "webtrunk_load/target.rs"]
mod target;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "webtrunk-load", version, about = "SIP-over-WebSocket load generator for webtrunk (loopback only)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N connections, register (or OPTIONS-ping) each once, hold them open.
    ///
    /// JSON: "connected" counts WebSocket handshakes, "registered" REGISTERs answered
    /// 200 (0 without --register), "failed" clients that failed at any step, including
    /// connections the server dropped while held, "pongs" CRLF keep-alive answers.
    Hold {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        clients: u32,
        /// New connections per second.
        #[arg(long, default_value_t = 1000)]
        ramp_per_sec: u32,
        /// Seconds to hold every connection open once all are set up.
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600))]
        hold_secs: u64,
        /// Send a CRLFCRLF keep-alive (RFC 5626 §4.4.1) every K seconds while holding.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        keepalive_secs: Option<u64>,
    },
    /// Keep C connections busy with back-to-back requests for D seconds.
    Rate {
        #[command(flatten)]
        common: Common,
        /// Connections, each with one request in flight at a time.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        concurrency: u32,
        /// Seconds of measurement, after every connection is open.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration_secs: u64,
        /// New connections per second while connecting.
        #[arg(long, default_value_t = 1000)]
        ramp_per_sec: u32,
    },
    /// N clients register with digest, then place C calls in all at R calls/s to one
    /// callee: INVITE, 407, INVITE with Proxy-Authorization, 200, ACK, BYE, 200.
    ///
    /// Clients always register (--register is implied). JSON: "attempted" calls,
    /// "completed" (200 to the BYE), "failed" with "failures" tallied by kind,
    /// "calls_per_sec" completed over the time from the first call to the last one's end,
    /// "setup_p50_ms"/"setup_p99_ms" (authenticated INVITE to 200), the same from the
    /// first INVITE through the 407 round, and "load_cpu_secs", this tool's own CPU.
    Calls {
        #[command(flatten)]
        common: Common,
        /// Clients (WebSocket connections), each with one call at a time.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        clients: u32,
        /// New connections per second while connecting.
        #[arg(long, default_value_t = 1000)]
        ramp_per_sec: u32,
        /// Calls placed per second, over all clients.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Calls placed in all.
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        count: u64,
        /// Request-URI of every INVITE.
        #[arg(long, default_value = "sip:bob@localhost")]
        callee: String,
        /// Milliseconds between the ACK and the BYE.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
        hold_ms: u64,
        /// The SDP offer: small (~700 bytes) or chromium (~4 KB).
        #[arg(long, value_enum, default_value_t = calls::Offer::Small)]
        offer: calls::Offer,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// ws://HOST:PORT/PATH or wss://...; the host must be a loopback address.
    #[arg(long)]
    url: String,
    /// REGISTER with digest (user <prefix><i>@<domain>) instead of sending OPTIONS.
    #[arg(long)]
    register: bool,
    #[arg(long, default_value = "user")]
    user_prefix: String,
    #[arg(long, default_value = "secret")]
    password: String,
    /// The SIP domain: Request-URI of REGISTER and OPTIONS, host of the AOR.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Connect from 127.0.0.2 .. 127.0.0.(1+N) in turn (each has its own ~28k source
    /// ports); 0 lets the kernel pick from 127.0.0.1.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=250))]
    source_ips: u8,
    /// Bound on one client's connect and on one request's final response.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_secs: u64,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.mode {
        Mode::Hold { common, .. } | Mode::Rate { common, .. } | Mode::Calls { common, .. } => common,
    };
    let target = match target::Target::new(&common.url, common.source_ips) {
        Ok(target) => Arc::new(target),
        Err(e) => {
            eprintln!("webtrunk-load: {e}");
            return ExitCode::from(2);
        }
    };
    let profile = Arc::new(sip::Profile {
        domain: common.domain.clone(),
        user_prefix: common.user_prefix.clone(),
        password: common.password.clone(),
        via: if target.is_secure() { "WSS" } else { "WS" },
    });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("webtrunk-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs(common.timeout_secs);
    let register = common.register;
    let (line, failed) = match cli.mode {
        Mode::Hold { clients, ramp_per_sec, hold_secs, keepalive_secs, .. } => {
            warn_if_few_files(u64::from(clients));
            let plan = hold::Plan {
                clients: clients as usize,
                ramp_per_sec: f64::from(ramp_per_sec.max(1)),
                hold: Duration::from_secs(hold_secs),
                keepalive: keepalive_secs.map(Duration::from_secs),
                register,
                setup_timeout: timeout,
            };
            runtime.block_on(hold::run(target, profile, plan))
        }
        Mode::Rate { concurrency, duration_secs, ramp_per_sec, .. } => {
            warn_if_few_files(u64::from(concurrency));
            let plan = rate::Plan {
                concurrency: concurrency as usize,
                duration: Duration::from_secs(duration_secs),
                ramp_per_sec: f64::from(ramp_per_sec.max(1)),
                register,
                timeout,
            };
            runtime.block_on(rate::run(target, profile, plan))
        }
        Mode::Calls { clients, ramp_per_sec, rate, count, callee, hold_ms, offer, .. } => {
            warn_if_few_files(u64::from(clients));
            let plan = calls::Plan {
                clients: clients as usize,
                ramp_per_sec: f64::from(ramp_per_sec.max(1)),
                rate: f64::from(rate),
                count,
                callee,
                hold: Duration::from_millis(hold_ms),
                offer,
                timeout,
            };
            runtime.block_on(calls::run(target, profile, plan))
        }
    };
    // Tasks abandoned at a deadline are dropped, not awaited.
    runtime.shutdown_background();
    println!("{line}");
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Descriptors besides the sockets: stdio, the runtime's epoll and wakers, slack.
const SPARE_FILES: u64 = 64;

/// Reads the soft open-file limit from /proc (no unsafe `getrlimit`) and says so when the
/// run cannot fit; the run goes ahead, and the failures will show the same.
fn warn_if_few_files(sockets: u64) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<u64>().ok());
    if let Some(soft) = soft.filter(|&soft| soft < sockets + SPARE_FILES) {
        eprintln!(
            "webtrunk-load: open-file limit {soft} is below {sockets} sockets + {SPARE_FILES}; raise it first (ulimit -n)"
        );
    }
}

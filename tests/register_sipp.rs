//! SIPp (Debian `sip-tester`, 3.6.1) registers with webtrunk's registrar over UDP and
//! TCP, running the scenarios of tests/sipp: REGISTER, 401, REGISTER with MD5 digest,
//! 200 listing our Contact, un-REGISTER; a wrong password refused with a new 401; UDP
//! retransmissions answered with the cached response. Each test asserts SIPp's exit
//! status 0 (every call passed) and its final statistics. `scripts/test` installs SIPp;
//! without it these tests fail, they never skip.
//!
//! SIPp 3.6.1 answers only the first WWW-Authenticate of a 401 and knows MD5 (and
//! AKAv1-MD5) only: a 401 that offers SHA-256 first stops it with "createAuthHeader:
//! authentication must use MD5 or AKAv1-MD5".

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use webtrunk::app::Server;
use webtrunk::transport::TransportKind;

/// The outer bound of one SIPp run; SIPp's own `-timeout` is 50 s, and the runs here
/// take well under a second.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn sipp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// The users of tests/sipp/users.csv: user0..user9, password secret-N.
fn users_toml() -> String {
    (0..10).map(|i| format!("[[user]]\nname = \"user{i}\"\npassword = \"secret-{i}\"\n\n")).collect()
}

/// A server on loopback whose registrar knows user0..user9.
async fn registrar(name: &str) -> Server {
    let mut config = loopback_config(name);
    let users = config.server.state_dir.join("users.toml");
    std::fs::write(&users, users_toml()).unwrap();
    config.registrar.users_file = Some(users);
    start(&config).await
}

/// A port of 127.0.0.1 free for UDP and TCP alike, for SIPp's `-p` (its default is 5060
/// when free, which parallel runs would share).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[derive(Debug)]
struct SippRun {
    status: ExitStatus,
    successful: u64,
    failed: u64,
    /// SIPp's output, error log and message trace, for assertion messages.
    report: String,
}

impl SippRun {
    fn assert_all_passed(&self, calls: u64) {
        let hint = if self.report.contains("authentication must use MD5") {
            "\nSIPp 3.6.1 answers the first WWW-Authenticate only, and MD5 only: this 401 offers another algorithm first"
        } else {
            ""
        };
        assert!(
            self.status.success() && self.successful == calls && self.failed == 0,
            "SIPp: {}, {} of {calls} calls successful, {} failed{hint}\n{}",
            self.status,
            self.successful,
            self.failed,
            self.report
        );
    }
}

/// Runs `scenario` from tests/sipp for `calls` calls (users.csv in sequence) against
/// `target` over UDP (`-t u1`) or TCP (`-t t1`), at most 5 at a time.
async fn sipp(name: &str, scenario: &str, kind: TransportKind, target: SocketAddr, calls: u64) -> SippRun {
    let dir = std::env::temp_dir().join(format!("webtrunk-sipp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let transport = match kind {
        TransportKind::Udp => "u1",
        TransportKind::Tcp => "t1",
        other => panic!("SIPp 3.6.1 has no {other:?} transport here"),
    };
    let (stats, errors, messages, logs) =
        (dir.join("stats.csv"), dir.join("errors.log"), dir.join("messages.log"), dir.join("actions.log"));
    let mut command = tokio::process::Command::new("sipp");
    command
        .arg(target.to_string())
        .arg("-sf")
        .arg(sipp_dir().join(scenario))
        .arg("-inf")
        .arg(sipp_dir().join("users.csv"))
        .args(["-t", transport, "-i", "127.0.0.1", "-p", &free_port().to_string()])
        // The digest uri is the Request-URI, not SIPp's default remote_ip:remote_port.
        .args(["-auth_uri", "localhost"])
        // No BYE for an aborted "call": a registration is no dialog.
        .args(["-default_behaviors", "all,-bye"])
        .args(["-m", &calls.to_string(), "-r", "50", "-l", "5"])
        .args(["-recv_timeout", "5000", "-timeout", "50", "-timeout_error", "-nostdin"])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(&stats)
        .args(["-trace_err", "-error_file"])
        .arg(&errors)
        .args(["-trace_msg", "-message_file"])
        .arg(&messages)
        .args(["-trace_logs", "-log_file"])
        .arg(&logs)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(RUN_LIMIT, command.output()).await {
        Err(_) => panic!("SIPp still runs after {RUN_LIMIT:?} (killed); its files are in {}", dir.display()),
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("sipp is not installed: apt-get install sip-tester (scripts/test does this)")
        }
        Ok(Err(e)) => panic!("sipp does not start: {e}"),
    };
    let (successful, failed) = final_counts(&stats);
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let report = format!(
        "--- stdout\n{}\n--- stderr\n{}\n--- {}\n{}\n--- {}\n{}\n--- {}\n{}",
        tail(&String::from_utf8_lossy(&output.stdout), 3000),
        String::from_utf8_lossy(&output.stderr),
        errors.display(),
        tail(&read(&errors), 4000),
        logs.display(),
        tail(&read(&logs), 2000),
        messages.display(),
        tail(&read(&messages), 6000),
    );
    SippRun { status: output.status, successful, failed, report }
}

/// The cumulative successful and failed calls of the last line of SIPp's `-trace_stat`
/// file (written every second and at the end); (0, 0) when there is none.
fn final_counts(stats: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(stats).unwrap_or_default();
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return (0, 0) };
    let Some(last) = lines.last() else { return (0, 0) };
    let columns: Vec<&str> = header.split(';').collect();
    let values: Vec<&str> = last.split(';').collect();
    let count = |name: &str| {
        let at = columns.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name} in {header}"));
        values.get(at).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no number for {name} in {last}"))
    };
    (count("SuccessfulCall(C)"), count("FailedCall(C)"))
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[tokio::test]
async fn sipp_registers_with_digest_over_udp() {
    let server = registrar("sipp-udp").await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    sipp("digest-udp", "register_digest.xml", TransportKind::Udp, udp, 20).await.assert_all_passed(20);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sipp_registers_with_digest_over_tcp() {
    let server = registrar("sipp-tcp").await;
    let tcp = server.addr(TransportKind::Tcp).unwrap();
    sipp("digest-tcp", "register_digest.xml", TransportKind::Tcp, tcp, 20).await.assert_all_passed(20);
    server.shutdown(Duration::from_secs(2)).await;
}

/// Three wrong passwords from one address, below registrar.max_auth_failures (10): each
/// gets a new 401 without stale=true, never a 200 (nor a 503).
#[tokio::test]
async fn sipp_wrong_password_is_refused() {
    let server = registrar("sipp-wrong").await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    sipp("wrong-udp", "register_wrong_password.xml", TransportKind::Udp, udp, 3).await.assert_all_passed(3);
    server.shutdown(Duration::from_secs(2)).await;
}

/// A REGISTER repeated with its Via branch over UDP: the unauthenticated one is
/// challenged again (challenges are stateless, RFC 3261 §8.2.7), the authenticated one
/// gets the 200 it already got (same To tag), not a second processing (which would answer
/// 400 Out Of Order CSeq, as it does over TCP where a repeat is a new request).
#[tokio::test]
async fn udp_retransmission_gets_the_same_response() {
    let server = registrar("sipp-retransmit").await;
    let udp = server.addr(TransportKind::Udp).unwrap();
    sipp("retransmit-udp", "register_retransmit.xml", TransportKind::Udp, udp, 5).await.assert_all_passed(5);
    server.shutdown(Duration::from_secs(2)).await;
}

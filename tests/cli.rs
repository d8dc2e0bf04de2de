//! The `webtrunk` binary as an operator runs it: --version, check-config exit codes and
//! messages, and `run` stopping gracefully on SIGTERM and SIGINT.

// Test helpers outside #[test] fns: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn webtrunk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_webtrunk"))
}

#[test]
fn version_prints_the_crate_version() {
    let out = webtrunk().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("webtrunk {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_exits_1_with_one_line_per_problem() {
    let ok = webtrunk().args(["check-config", "conf/webtrunk.toml"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    let dir = common::state_dir("check-config");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[websocket]\npaths = [\"ws\"]\n[limits]\nmax_headers = 5\nmax_connections_per_ip = 0\n")
        .unwrap();
    let out = webtrunk().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.contains("bad.toml:") && l.contains("key `")), "{text}");

    let missing = webtrunk().args(["check-config", "/nonexistent/webtrunk.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("/nonexistent/webtrunk.toml"));
}

/// Starts `webtrunk run` on port 0 everywhere, on `threads` runtime threads (`server.threads`),
/// and reads the bound addresses from its log.
fn spawn_server(name: &str, threads: usize) -> (Child, Vec<(String, SocketAddr)>) {
    let dir = common::state_dir(name);
    let file = dir.join("webtrunk.toml");
    let any = "[\"127.0.0.1:0\"]";
    std::fs::write(
        &file,
        format!(
            "[server]\nstate_dir = {:?}\nshutdown_timeout = \"3s\"\nthreads = {threads}\n[listen]\nudp = {any}\ntcp = {any}\ntls = {any}\nws = {any}\nwss = {any}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let mut child = webtrunk()
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut bound = Vec::new();
    while bound.len() < 5 {
        let line = lines.next().expect("server logs its listeners").unwrap();
        if let Some(rest) = line.split("listening ").nth(1) {
            let kind = rest.split("transport=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
            let addr = rest.split("addr=").nth(1).unwrap().trim().parse().unwrap();
            bound.push((kind, addr));
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, bound)
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let step = Duration::from_millis(20);
    for _ in 0..limit.as_millis() / step.as_millis() {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(step);
    }
    let _ = child.kill();
    None
}

async fn graceful_stop(signal: &str, name: &str, threads: usize) {
    let (mut child, bound) = spawn_server(name, threads);
    let ws_addr = bound.iter().find(|(k, _)| k == "WS").map(|(_, a)| *a).unwrap();
    let mut ws = common::ws_connect(ws_addr).await;
    let reply = common::ws_exchange(&mut ws, &common::options("cli-1", "WS")).await;
    assert!(reply.starts_with("SIP/2.0 200 OK"), "{reply}");

    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let mut close = None;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let WsMessage::Close(Some(f)) = frame {
            close = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(1001), "{signal}: WebSocket closed with Going Away");
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5))).await.unwrap();
    assert_eq!(code, Some(0), "{signal}: exits 0 within the shutdown time");
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_0() {
    // The default: everything on one thread.
    graceful_stop("TERM", "sigterm", 1).await;
}

#[tokio::test]
async fn sigint_stops_gracefully_too() {
    // With a pool of threads, as `server.threads = 2` asks.
    graceful_stop("INT", "sigint", 2).await;
}

#[test]
fn user_add_prints_hashes_that_load_as_a_users_file() {
    use std::io::Write;
    let mut child = webtrunk()
        .args(["user", "add", "carol", "--realm", "sip.example.com"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let entry = String::from_utf8(out.stdout).unwrap();
    assert!(!entry.contains("s3cret"), "the password is never printed: {entry}");
    let md5 = webtrunk::auth::ha1(webtrunk::auth::Algorithm::Md5, "carol", "sip.example.com", "s3cret");
    assert!(entry.contains(&format!("ha1_md5 = \"{md5}\"")), "{entry}");
    let dir = common::state_dir("user-add");
    let file = dir.join("users.toml");
    std::fs::write(&file, &entry).unwrap();
    let users = webtrunk::config::users::load(&file).unwrap();
    assert!(users.contains("carol"));
}

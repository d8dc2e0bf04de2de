//! Calls through webtrunk's proxy between real browser SIP stacks, JsSIP and SIP.js from
//! npm running in Node with the `ws` package and a plain-SDP stand-in for WebRTC: basic
//! calls both ways between the libraries, forking to two tabs of one user, CANCEL, a 486,
//! hold/unhold by re-INVITE, and MESSAGE. Each test starts its own server and runs
//! tests/node/call_scenario.mjs, which puts every user agent of the scenario in one Node
//! process, checks what each of them saw and prints one JSON line (its checks, the library
//! events and every SIP message on each WebSocket). `scripts/test` installs the npm
//! packages (`npm ci` in tests/node); without them these tests fail, they never skip.
//! `DEBUG_SIP=1 cargo test --test calls_node` adds the SIP messages to a failure's output.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use webtrunk::config::Config;
use webtrunk::transport::TransportKind;

/// The Node script has a 15 s hard timeout of its own; this is the outer bound.
const RUN_LIMIT: Duration = Duration::from_secs(25);

/// A server on loopback whose registrar knows alice and bob.
fn call_config(name: &str) -> Config {
    config_with_users(name, ALICE_AND_BOB)
}

/// Lines of a JSON array of strings or objects, for a failure message.
fn lines(value: &Value) -> String {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("\n  ")
        })
        .unwrap_or_default()
}

/// Runs one scenario of call_scenario.mjs against a fresh server; it must exit 0.
async fn scenario(scenario: &str) {
    check_node_packages(&["jssip", "sip.js", "ws"]);
    let config = call_config(&format!("call-{scenario}"));
    let server = start(&config).await;
    let url = format!("ws://127.0.0.1:{}", server.addr(TransportKind::Ws).unwrap().port());

    let dir = node_dir();
    let child = tokio::process::Command::new("node")
        .arg(dir.join("call_scenario.mjs"))
        .args([url.as_str(), scenario])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node 20 on PATH)");
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("scenario {scenario}: node did not finish within {RUN_LIMIT:?}"))
        .unwrap();
    server.shutdown(Duration::from_secs(2)).await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "scenario {scenario}: one JSON line on stdout ({e}), exit {:?}\nstdout: {stdout}\nstderr:\n{stderr}",
            output.status.code()
        )
    });
    let failed: Vec<&Value> =
        report["checks"].as_array().map(|c| c.iter().filter(|c| c["ok"] != true).collect()).unwrap_or_default();
    let explain = || {
        format!(
            "scenario {scenario}: exit {:?} (1 = an expectation failed, 2 = an awaited event never came)\n\
             error: {}\nfailed checks:\n  {}\nevents:\n  {}\nSIP messages (ms, UA, </> in/out):\n  {}\n\
             stderr:\n{stderr}\nJSON: {line}",
            output.status.code(),
            report["error"],
            failed.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n  "),
            lines(&report["events"]),
            lines(&report["wire"]),
        )
    };
    assert_eq!(output.status.code(), Some(0), "{}", explain());
    assert_eq!(report["ok"], true, "{}", explain());
    assert!(failed.is_empty(), "{}", explain());
    assert!(!report["checks"].as_array().is_none_or(Vec::is_empty), "no checks made: {}", explain());
    eprintln!("scenario {scenario}: ok in {} ms", report["elapsedMs"]);
}

/// JsSIP calls JsSIP: 407 answered, 180, 200, ACK to the callee, caller's BYE.
#[tokio::test]
async fn jssip_calls_jssip_and_hangs_up() {
    scenario("jssip-to-jssip").await;
}

/// JsSIP calls SIP.js; the SIP.js callee hangs up (BYE back along the route set).
#[tokio::test]
async fn jssip_calls_sipjs_and_callee_hangs_up() {
    scenario("jssip-to-sipjs").await;
}

/// SIP.js calls JsSIP and hangs up.
#[tokio::test]
async fn sipjs_calls_jssip_and_hangs_up() {
    scenario("sipjs-to-jssip").await;
}

/// Two tabs of bob ring; the one that answers gets the call, the other a CANCEL.
#[tokio::test]
async fn call_forks_to_two_tabs_and_cancels_the_other() {
    scenario("fork").await;
}

/// The caller gives up while the callee rings: CANCEL to the callee, 487 to the caller.
#[tokio::test]
async fn caller_cancels_before_the_answer() {
    scenario("cancel").await;
}

/// The callee's 486 reaches the caller as the final response.
#[tokio::test]
async fn callee_busy_486_reaches_the_caller() {
    scenario("busy").await;
}

/// Hold (a=sendonly) and unhold by re-INVITE in the dialog, each answered and ACKed.
#[tokio::test]
async fn hold_and_unhold_by_reinvite() {
    scenario("hold").await;
}

/// A MESSAGE from alice reaches bob's tab with its body; alice gets 200.
#[tokio::test]
async fn message_reaches_the_callee() {
    scenario("message").await;
}

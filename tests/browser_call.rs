//! Two real browsers call each other through webtrunk: headless Chromium (Debian's
//! `chromium`) with JsSIP pages (tests/browser/page.html, JsSIP bundled with esbuild at
//! test time), driven by playwright-core (tests/browser/call.mjs). Everything runs in a
//! private network namespace (`unshare -n`, tests/browser/run.sh) so that WebRTC sees only
//! 127.0.0.1. Bob calls alice, both sessions are confirmed, getStats() shows inbound audio
//! RTP on both sides, bob hangs up and both sessions end; then carol rejects bob's call
//! with 486 and bob's session fails with 486. `scripts/test` installs chromium and the
//! npm packages (`npm ci` in tests/node); without them this test fails, it never skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

/// run.sh bounds call.mjs to 75 s (its own hard timeout is 60 s); `timeout` bounds the
/// whole namespace to 90 s; this is the last resort.
const NAMESPACE_LIMIT: Duration = Duration::from_secs(90);
const RUN_LIMIT: Duration = Duration::from_secs(100);

#[tokio::test]
async fn chromium_browsers_call_each_other_with_media() {
    common::browser::check_installed(&[]);
    let workdir = common::browser::workdir("browser-call");
    let out = common::browser::run_in_namespace("run.sh", &workdir, NAMESPACE_LIMIT, RUN_LIMIT).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or("");
    println!("{line}");
    assert!(
        out.status.success(),
        "browser call failed ({}); workdir {} kept\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        workdir.display()
    );
    let report: serde_json::Value = serde_json::from_str(line).expect("call.mjs prints one JSON line");
    assert_eq!(report["ok"], true, "{line}");
    let call = &report["scenarios"]["call"];
    assert_eq!(call["aliceConfirmed"], true, "{line}");
    assert_eq!(call["bobConfirmed"], true, "{line}");
    assert!(call["alicePacketsReceived"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(call["bobPacketsReceived"].as_u64().unwrap_or(0) > 0, "{line}");
    assert_eq!(call["aliceEnded"]["originator"], "remote", "{line}");
    assert_eq!(call["bobEnded"]["originator"], "local", "{line}");
    let busy = &report["scenarios"]["busy"];
    assert_eq!(busy["bobFailed"]["status"], 486, "{line}");
    assert_eq!(busy["bobFailed"]["cause"], "Busy", "{line}");
    let _ = std::fs::remove_dir_all(&workdir);
}

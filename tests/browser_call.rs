//! Two real browsers call each other through webtrunk: headless Chromium (Debian's
//! `chromium`) with JsSIP pages (tests/browser/page.html, JsSIP bundled with esbuild at
//! test time), driven by playwright-core (tests/browser/call.mjs). Everything runs in a
//! private network namespace (`unshare -n`, tests/browser/run.sh) so that WebRTC sees only
//! 127.0.0.1. Bob calls alice, both sessions are confirmed, getStats() shows inbound audio
//! RTP on both sides, bob hangs up and both sessions end; then carol rejects bob's call
//! with 486 and bob's session fails with 486. `scripts/test` installs chromium and the
//! npm packages (`npm ci` in tests/node); without them this test fails, it never skips.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// run.sh bounds call.mjs to 75 s (its own hard timeout is 60 s); `timeout` bounds the
/// whole namespace to 90 s; this is the last resort.
const RUN_LIMIT: Duration = Duration::from_secs(100);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn check_installed() {
    let mut missing = Vec::new();
    if !on_path("unshare") {
        missing.push("util-linux (unshare)");
    }
    if !on_path("ip") {
        missing.push("iproute2 (ip)");
    }
    if !on_path("node") {
        missing.push("nodejs");
    }
    if !Path::new("/usr/bin/chromium").is_file() {
        missing.push("chromium (apt-get install chromium)");
    }
    assert!(missing.is_empty(), "the browser call test needs: {}; scripts/test installs them", missing.join(", "));
    let node = manifest_dir().join("tests/node/node_modules");
    for package in ["jssip", "esbuild", "playwright-core"] {
        assert!(
            node.join(package).is_dir(),
            "npm package {package} is not installed: run `npm ci` in {} (scripts/test does this)",
            node.parent().unwrap().display()
        );
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test]
async fn chromium_browsers_call_each_other_with_media() {
    check_installed();
    let workdir = std::env::temp_dir().join(format!("webtrunk-test-browser-call-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).unwrap();

    let mut command = tokio::process::Command::new("timeout");
    command.args(["-k", "5", "90", "unshare"]);
    // Without root, a user namespace maps us to root inside it (needs unprivileged user
    // namespaces); as root a plain network namespace is enough.
    if !is_root() {
        command.arg("-r");
    }
    command
        .args(["-n", "--", "bash"])
        .arg(manifest_dir().join("tests/browser/run.sh"))
        .arg(env!("CARGO_BIN_EXE_webtrunk"))
        .arg(&workdir)
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("the browser call finishes within its time limit")
        .expect("timeout, unshare and bash run");
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

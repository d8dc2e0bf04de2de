//! A browser calls the telephone network and the network calls a browser, with audio,
//! through webtrunk and rtpengine: headless Chromium with JsSIP pages on one side, SIPp
//! with `-rtp_echo` as a plain-RTP trunk on the other (tests/browser/run_trunk.sh and
//! trunk_call.mjs, inside `unshare -n`).
//! - out: bob dials 02079460958; the trunk SIPp fails unless the INVITE's SDP is plain
//!   RTP/AVP without ICE, DTLS, extmap or ssrc lines; bob hears his audio echoed back
//!   through rtpengine; hold and unhold (re-INVITEs) succeed and audio resumes; after bob's
//!   BYE rtpengine holds no call (webtrunk deleted the session).
//! - in: a carrier SIPp calls the DID +15550100 with a PCMU offer; alice's INVITE carries a
//!   WebRTC offer (UDP/TLS/RTP/SAVPF, fingerprint, ICE); alice hears the echo; the
//!   carrier's SIPp checks the 200's SDP is plain RTP and hangs up; no rtpengine call is left.
//!
//! `scripts/test` installs chromium, rtpengine, SIPp and the npm packages; without them this
//! test fails, it never skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

/// run_trunk.sh bounds trunk_call.mjs to 85 s (its own hard timeout is 75 s) after at most
/// 30 s of start-up; `timeout` bounds the whole namespace to 130 s; this is the last resort.
const NAMESPACE_LIMIT: Duration = Duration::from_secs(130);
const RUN_LIMIT: Duration = Duration::from_secs(140);

#[tokio::test]
async fn browser_and_plain_rtp_trunk_call_each_other_with_media_through_rtpengine() {
    common::browser::check_installed(&[("sipp", "sip-tester"), ("rtpengine", "rtpengine"), ("ss", "iproute2")]);
    let workdir = common::browser::workdir("browser-trunk");
    let out = common::browser::run_in_namespace("run_trunk.sh", &workdir, NAMESPACE_LIMIT, RUN_LIMIT).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or("");
    println!("{line}");
    assert!(
        out.status.success(),
        "browser <-> trunk calls failed ({}); workdir {} kept\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        workdir.display()
    );
    let report: Value = serde_json::from_str(line).expect("trunk_call.mjs prints one JSON line");
    assert_eq!(report["ok"], true, "{line}");

    let call = &report["scenarios"]["out"];
    assert_eq!(call["bobConfirmed"], true, "{line}");
    assert!(packets(&call["bobPacketsReceived"]) > 0, "bob hears the trunk's echo: {line}");
    assert!(calls(&call["rtpengineCallsDuring"]).unwrap_or(0) > 0, "rtpengine bridges the call: {line}");
    assert_eq!(call["hold"]["ok"], true, "{line}");
    assert_eq!(call["unhold"]["ok"], true, "{line}");
    assert!(packets(&call["bobPacketsAfterUnhold"]) > 0, "audio resumes after unhold: {line}");
    assert_eq!(call["bobEnded"]["originator"], "local", "{line}");
    assert_eq!(calls(&call["rtpengineCallsAfter"]), Some(0), "the session is deleted after BYE: {line}");
    assert_eq!(call["trunkSipp"]["exit"], 0, "the trunk saw plain RTP offers: {line}");

    let call = &report["scenarios"]["in"];
    assert_eq!(call["aliceConfirmed"], true, "{line}");
    assert_eq!(call["offerWebrtc"], true, "alice is offered WebRTC media: {line}");
    assert!(packets(&call["alicePacketsReceived"]) > 0, "alice hears the carrier's echo: {line}");
    assert!(calls(&call["rtpengineCallsDuring"]).unwrap_or(0) > 0, "rtpengine bridges the call: {line}");
    assert_eq!(call["aliceEnded"]["originator"], "remote", "{line}");
    assert_eq!(calls(&call["rtpengineCallsAfter"]), Some(0), "the session is deleted after BYE: {line}");
    assert_eq!(call["carrierSipp"]["exit"], 0, "the carrier got a plain RTP answer: {line}");
    let _ = std::fs::remove_dir_all(&workdir);
}

fn packets(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// The length of an rtpengine call list; `None` when the report has none, so that a report
/// without it passes neither "a call is bridged" nor "no call is left".
fn calls(value: &Value) -> Option<usize> {
    value.as_array().map(Vec::len)
}

//! A real browser SIP stack, JsSIP from npm, running in Node with the `ws` package,
//! connects over WS and WSS and gets its OPTIONS answered. `scripts/test` installs the
//! npm packages (`npm ci` in tests/node); without them this test fails, it never skips.

mod common;

use std::time::Duration;

use common::*;
use webtrunk::transport::TransportKind;

async fn jssip_options(url: &str, target: &str) -> (bool, String) {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/jssip").is_dir(),
        "JsSIP is not installed: run `npm ci` in {} (scripts/test does this)",
        dir.display()
    );
    let child = tokio::process::Command::new("node")
        .arg(dir.join("jssip_options.mjs"))
        .arg(url)
        .arg(target)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), child).await.expect("node finishes").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn jssip_in_node_gets_options_answered_over_ws_and_wss() {
    let config = loopback_config("jssip");
    let server = start(&config).await;
    let ws = server.addr(TransportKind::Ws).unwrap();
    let (ok, out) = jssip_options(&format!("ws://127.0.0.1:{}", ws.port()), "sip:localhost").await;
    assert!(ok, "{out}");
    assert!(out.contains("\"status\":200") && out.contains("\"allow\":\"OPTIONS, REGISTER\""), "{out}");

    let wss = server.addr(TransportKind::Wss).unwrap();
    let (ok, out) = jssip_options(&format!("wss://localhost:{}/ws", wss.port()), "sip:127.0.0.1").await;
    assert!(ok, "{out}");
    assert!(out.contains("\"transport\":\"wss\""), "{out}");

    // OPTIONS to a user is routed, so an anonymous caller is challenged (JsSIP without a
    // password gives up on the 407).
    let (ok, out) = jssip_options(&format!("ws://127.0.0.1:{}", ws.port()), "sip:alice@localhost").await;
    assert!(!ok && out.contains("\"status\":407"), "{out}");
    server.shutdown(Duration::from_secs(2)).await;
}

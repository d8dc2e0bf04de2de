//! Real browser SIP stacks, JsSIP and SIP.js from npm running in Node with the `ws`
//! package, register with webtrunk's registrar over WS and WSS: digest challenge,
//! refresh, unregister, wrong credentials, a dropped WebSocket, two tabs of one user.
//! The Node scripts (tests/node/*_register.mjs) print one JSON line with every 200's
//! Contact values as received; `scripts/test` installs the npm packages (`npm ci` in
//! tests/node); without them these tests fail, they never skip.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin};
use webtrunk::config::Config;
use webtrunk::transport::TransportKind;

/// Each Node run has a 15 s hard timeout of its own; this is the outer bound.
const RUN_LIMIT: Duration = Duration::from_secs(25);

/// A server on loopback whose registrar knows alice and bob.
fn registrar_config(name: &str) -> Config {
    config_with_users(name, ALICE_AND_BOB)
}

fn ws_url(server: &webtrunk::app::Server) -> String {
    format!("ws://127.0.0.1:{}", server.addr(TransportKind::Ws).unwrap().port())
}

fn wss_url(server: &webtrunk::app::Server) -> String {
    format!("wss://localhost:{}/ws", server.addr(TransportKind::Wss).unwrap().port())
}

#[derive(Debug, Clone, Copy)]
enum Library {
    JsSip,
    SipJs,
}

impl Library {
    fn script(self) -> &'static str {
        match self {
            Self::JsSip => "jssip_register.mjs",
            Self::SipJs => "sipjs_register.mjs",
        }
    }
}

/// What one Node run ended with.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    report: Value,
    /// stdout and stderr, for assertion messages.
    log: String,
}

impl Outcome {
    fn steps(&self) -> &[Value] {
        self.report["steps"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    fn step(&self, name: &str) -> &Value {
        self.steps().iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name}: {}", self.log))
    }

    /// The log, with a hint when the library gave up on the challenge without answering it.
    fn explain(&self) -> String {
        let last = self.steps().last();
        match last {
            Some(step) if step["status"] == 401 && step["authorized"] == false => format!(
                "{}\nhint: the 401 answers a REGISTER without credentials: the library did not answer the \
                 challenge. JsSIP 3.13 and SIP.js 0.21 use only the LAST WWW-Authenticate header and only \
                 algorithm MD5; challenges sent: {}",
                self.log, step["challenges"]
            ),
            _ => self.log.clone(),
        }
    }

    fn last(&self) -> &Value {
        self.steps().last().unwrap_or_else(|| panic!("no step reported: {}", self.log))
    }
}

/// A running Node client: its stderr is read for `progress` lines, its stdin releases
/// `wait` steps.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Lines<BufReader<ChildStderr>>,
    seen: String,
}

impl Client {
    fn spawn(library: Library, url: &str, user: &str, password: &str, steps: &str) -> Self {
        check_node_packages(&["jssip", "sip.js", "ws"]);
        let dir = node_dir();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join(library.script()))
            .args([url, user, password, steps])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Self { child, stdin, stderr, seen: String::new() }
    }

    /// Waits for the step report `progress {...}` of the named step.
    async fn progress(&mut self, step: &str) -> Value {
        let read = async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                self.seen.push_str(&line);
                self.seen.push('\n');
                if let Some(json) = line.strip_prefix("progress ") {
                    let report: Value = serde_json::from_str(json).unwrap();
                    if report["step"] == step {
                        return Some(report);
                    }
                }
            }
            None
        };
        match tokio::time::timeout(RUN_LIMIT, read).await {
            Ok(Some(report)) => report,
            Ok(None) => panic!("client ended before step {step}:\n{}", self.seen),
            Err(_) => panic!("no step {step} in time:\n{}", self.seen),
        }
    }

    /// Lets a `wait` step go on.
    async fn resume(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn finish(mut self) -> Outcome {
        drop(self.stdin.take());
        let mut stdout = self.child.stdout.take().unwrap();
        let mut seen = std::mem::take(&mut self.seen);
        let mut stderr = self.stderr;
        let run = async {
            let mut out = String::new();
            let rest = async {
                while let Some(line) = stderr.next_line().await.unwrap() {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            };
            let (read, ()) = tokio::join!(stdout.read_to_string(&mut out), rest);
            read.unwrap();
            let status = self.child.wait().await.unwrap();
            (status, out)
        };
        let (status, out) = tokio::time::timeout(RUN_LIMIT, run).await.expect("node finishes");
        let log = format!("exit {:?}\nstdout: {out}\nstderr:\n{seen}", status.code());
        let line = out.lines().last().unwrap_or_default();
        let report = serde_json::from_str(line).unwrap_or_else(|e| panic!("one JSON line on stdout ({e}): {log}"));
        Outcome { code: status.code(), report, log }
    }
}

async fn run(library: Library, url: &str, user: &str, password: &str, steps: &str) -> Outcome {
    Client::spawn(library, url, user, password, steps).finish().await
}

/// A Contact value without its `expires` parameter (the registrar rewrites it to the
/// time left, the rest must come back as the client sent it).
fn without_expires(contact: &str) -> String {
    let lower = contact.to_ascii_lowercase();
    match lower.rfind(";expires=") {
        Some(at) => {
            let end = contact[at + 1..].find(';').map_or(contact.len(), |e| at + 1 + e);
            format!("{}{}", &contact[..at], &contact[end..])
        }
        None => contact.to_owned(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The step got a 200 whose only Contact is ours, echoed as sent with a fresh expires.
fn assert_only_our_binding(step: &Value, log: &str) {
    assert_eq!(step["status"], 200, "{log}");
    let sent = strings(&step["sent"]);
    let contacts = strings(&step["contacts"]);
    assert_eq!(sent.len(), 1, "one Contact sent: {log}");
    assert_eq!(contacts.len(), 1, "the 200 lists exactly our binding: {log}");
    assert_eq!(without_expires(&contacts[0]), without_expires(&sent[0]), "Contact echoed as sent: {log}");
    let expires = step["expires"].as_u64().unwrap_or_else(|| panic!("expires on our Contact: {log}"));
    assert!((590..=600).contains(&expires), "JsSIP and SIP.js ask for 600 s, got {expires}: {log}");
}

/// register, refresh, unregister over one URL; checks every 200.
async fn register_refresh_unregister(library: Library, url: &str, user: &str, password: &str) {
    let out = run(library, url, user, password, "register,refresh,unregister").await;
    assert_eq!(out.code, Some(0), "{}", out.explain());
    assert_eq!(out.report["ok"], true, "{}", out.log);

    let register = out.step("register");
    assert_only_our_binding(register, &out.log);
    let refresh = out.step("refresh");
    assert_only_our_binding(refresh, &out.log);
    assert!(refresh["cseq"].as_u64() > register["cseq"].as_u64(), "refresh has a higher CSeq: {}", out.log);
    let bare = |step: &Value| strings(&step["contacts"]).iter().map(|c| without_expires(c)).collect::<Vec<_>>();
    assert_eq!(bare(refresh), bare(register), "same binding, refreshed: {}", out.log);

    // RFC 5626: JsSIP sends Supported: outbound with reg-id and +sip.instance; SIP.js by
    // default sends Supported: outbound but no reg-id, so no outbound flow is registered.
    match library {
        Library::JsSip => {
            assert_eq!(register["require"], "outbound", "{}", out.log);
            assert_eq!(refresh["require"], "outbound", "{}", out.log);
        }
        Library::SipJs => assert!(register["require"].is_null(), "{}", out.log),
    }

    let unregister = out.step("unregister");
    assert_eq!(unregister["status"], 200, "{}", out.log);
    assert_eq!(strings(&unregister["contacts"]), Vec::<String>::new(), "no binding left: {}", out.log);
}

#[tokio::test]
async fn jssip_registers_refreshes_and_unregisters_over_ws_and_wss() {
    let config = registrar_config("reg-jssip");
    let server = start(&config).await;
    register_refresh_unregister(Library::JsSip, &ws_url(&server), "alice", "alice-secret").await;
    register_refresh_unregister(Library::JsSip, &wss_url(&server), "bob", "bob-secret").await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sipjs_registers_refreshes_and_unregisters_over_ws_and_wss() {
    let config = registrar_config("reg-sipjs");
    let server = start(&config).await;
    register_refresh_unregister(Library::SipJs, &ws_url(&server), "alice", "alice-secret").await;
    register_refresh_unregister(Library::SipJs, &wss_url(&server), "bob", "bob-secret").await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// The parts of a failed register that must not tell an unknown user from a wrong
/// password: status, reason, the library's cause, the challenges without their nonces.
fn failure_shape(out: &Outcome) -> (Value, Value, Value, Vec<String>) {
    let step = out.last();
    let challenges = strings(&step["challenges"])
        .iter()
        .map(|c| {
            c.split(", ")
                .map(|p| if p.trim_start().starts_with("nonce=") || p.starts_with("opaque=") { "nonce=…" } else { p })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    (step["status"].clone(), step["reason"].clone(), step["cause"].clone(), challenges)
}

/// Three failed logins in all (below the 10 per minute that get an IP 503), on a server
/// of its own so that no other test adds to the count.
#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let config = registrar_config("reg-badauth");
    let server = start(&config).await;
    let ws = ws_url(&server);

    let wrong = run(Library::JsSip, &ws, "alice", "not-alices-password", "register").await;
    assert_eq!(wrong.code, Some(1), "{}", wrong.log);
    assert_eq!(wrong.report["ok"], false, "{}", wrong.log);
    assert_eq!(wrong.steps().len(), 1, "{}", wrong.log);
    assert_eq!(wrong.last()["status"], 401, "{}", wrong.log);
    assert_eq!(
        wrong.last()["authorized"],
        true,
        "the 401 refuses credentials, not a bare REGISTER: {}",
        wrong.explain()
    );
    assert!(!strings(&wrong.last()["challenges"]).is_empty(), "the 401 challenges again: {}", wrong.log);

    let unknown = run(Library::JsSip, &ws, "mallory", "whatever", "register").await;
    assert_eq!(unknown.code, Some(1), "{}", unknown.log);
    assert_eq!(
        failure_shape(&unknown),
        failure_shape(&wrong),
        "unknown user:\n{}\nwrong password:\n{}",
        unknown.log,
        wrong.log
    );

    let sipjs = run(Library::SipJs, &wss_url(&server), "bob", "not-bobs-password", "register").await;
    assert_eq!(sipjs.code, Some(1), "{}", sipjs.log);
    assert_eq!(sipjs.last()["status"], 401, "{}", sipjs.log);
    assert_eq!(sipjs.last()["authorized"], true, "{}", sipjs.explain());

    // Still below the throttle: the right password works from the same address.
    let right = run(Library::JsSip, &ws, "alice", "alice-secret", "register").await;
    assert_eq!(right.code, Some(0), "{}", right.explain());
    assert_only_our_binding(right.step("register"), &right.log);
    server.shutdown(Duration::from_secs(2)).await;
}

/// A tab that loses its WebSocket without unregistering loses its binding at once: the
/// next client of the same user (while the first process still runs) sees only itself.
#[tokio::test]
async fn dropped_websocket_takes_its_binding_with_it() {
    let config = registrar_config("reg-drop");
    let server = start(&config).await;
    let ws = ws_url(&server);

    let mut first = Client::spawn(Library::JsSip, &ws, "alice", "alice-secret", "register,drop,wait");
    let registered = first.progress("register").await;
    assert_eq!(registered["status"], 200, "{registered}");
    let dropped = first.progress("drop").await;
    assert_eq!(dropped["ok"], true, "{dropped}");

    let second = run(Library::JsSip, &ws, "alice", "alice-secret", "register").await;
    assert_eq!(second.code, Some(0), "{}", second.explain());
    let step = second.step("register");
    assert_only_our_binding(step, &second.log);
    let old = strings(&registered["contacts"]);
    assert!(
        strings(&step["contacts"]).iter().all(|c| !old.iter().any(|o| without_expires(o) == without_expires(c))),
        "the dropped tab's binding is gone: {}\nfirst tab registered {old:?}",
        second.log
    );

    first.resume().await;
    let first = first.finish().await;
    assert_eq!(first.code, Some(0), "{}", first.log);

    // Over WSS too.
    let wss = wss_url(&server);
    let mut first = Client::spawn(Library::JsSip, &wss, "bob", "bob-secret", "register,drop,wait");
    let registered = first.progress("register").await;
    assert_eq!(registered["status"], 200, "{registered}");
    assert_eq!(first.progress("drop").await["ok"], true);
    let second = run(Library::SipJs, &wss, "bob", "bob-secret", "register").await;
    assert_eq!(second.code, Some(0), "{}", second.explain());
    assert_only_our_binding(second.step("register"), &second.log);
    first.resume().await;
    first.finish().await;
    server.shutdown(Duration::from_secs(2)).await;
}

/// Two tabs (two processes, two WebSockets) of one user: the second 200 lists both
/// bindings; when the second tab closes its WebSocket, the first one's refresh lists
/// only itself again.
#[tokio::test]
async fn two_jssip_tabs_of_one_user_are_both_listed() {
    let config = registrar_config("reg-tabs");
    let server = start(&config).await;
    let ws = ws_url(&server);

    let mut first = Client::spawn(Library::JsSip, &ws, "alice", "alice-secret", "register,wait,refresh");
    let registered = first.progress("register").await;
    assert_eq!(registered["status"], 200, "{registered}");
    let first_contact = without_expires(&strings(&registered["sent"])[0]);

    let second = run(Library::JsSip, &wss_url(&server), "alice", "alice-secret", "register").await;
    assert_eq!(second.code, Some(0), "{}", second.explain());
    let step = second.step("register");
    let contacts: Vec<String> = strings(&step["contacts"]).iter().map(|c| without_expires(c)).collect();
    let second_contact = without_expires(&strings(&step["sent"])[0]);
    assert_eq!(contacts.len(), 2, "both tabs listed: {}", second.log);
    assert!(contacts.contains(&first_contact), "first tab's Contact {first_contact}: {}", second.log);
    assert!(contacts.contains(&second_contact), "own Contact {second_contact}: {}", second.log);
    assert_eq!(step["require"], "outbound", "{}", second.log);

    // The second tab has ended (its WebSocket closed): the first tab is alone again.
    first.resume().await;
    let first = first.finish().await;
    assert_eq!(first.code, Some(0), "{}", first.log);
    assert_only_our_binding(first.step("refresh"), &first.log);
    server.shutdown(Duration::from_secs(2)).await;
}

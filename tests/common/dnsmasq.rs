//! A real dnsmasq on 127.0.0.1 serving the records a test gives it, authoritative for
//! `.test` (RFC 6761 §6.2) so unknown names get NXDOMAIN instead of REFUSED. Killed by
//! its PID on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long one readiness probe waits, and how many are sent (5 s in all).
const PROBE_WAIT: Duration = Duration::from_millis(100);
const PROBES: usize = 50;

pub struct Dnsmasq {
    child: Child,
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq with `records` as extra arguments (`--host-record=...`,
    /// `--srv-host=...`, `--naptr-record=...`, `--local-ttl=...`) and waits until it
    /// answers a query.
    pub fn start(name: &str, records: &[String]) -> Self {
        let dir = std::env::temp_dir().join(format!("webtrunk-dnsmasq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port free on both UDP and TCP can still be taken before dnsmasq binds it:
        // try a few.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_udp_and_tcp_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = dir.join("dnsmasq.log");
            let mut child = Command::new("/usr/sbin/dnsmasq")
                .args([
                    // Debug mode: answers TCP in-process instead of forking a child per
                    // connection, which would outlive the kill and stay a zombie where
                    // PID 1 does not reap.
                    "--no-daemon",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--conf-file=/dev/null",
                    "--local=/test/",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .expect("dnsmasq runs (Debian dnsmasq-base, /usr/sbin/dnsmasq)");
            if wait_until_answering(&mut child, addr) {
                return Self { child, addr, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            failures.push(std::fs::read_to_string(&log).unwrap_or_default());
        }
        panic!("dnsmasq did not start answering; its logs:\n{}", failures.join("\n---\n"));
    }

    /// The argument for a `[dns] servers` entry.
    pub fn server(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this process by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls with an SOA query for `test.` (any answer will do) until dnsmasq replies, or it
/// exits, or [`PROBES`] probes went unanswered.
fn wait_until_answering(child: &mut Child, addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PROBE_WAIT)).unwrap();
    let query = soa_query_for_test(0x5157);
    let mut reply = [0u8; 512];
    for _ in 0..PROBES {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let _ = socket.send_to(&query, addr);
        if let Ok((n, from)) = socket.recv_from(&mut reply)
            && from == addr
            && n >= 12
            && reply[..2] == query[..2]
        {
            return true;
        }
    }
    false
}

/// A DNS query message (RFC 1035 §4.1): header with RD, one question `test.` SOA IN.
fn soa_query_for_test(id: u16) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    message.extend_from_slice(&[4, b't', b'e', b's', b't', 0]);
    message.extend_from_slice(&[0, 6, 0, 1]);
    message
}

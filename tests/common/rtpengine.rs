//! A real rtpengine (Debian's `rtpengine` 10.5, userspace) on loopback, and a tiny tokio
//! loop that drives webtrunk's sans-IO ng client over a UDP socket.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use tokio::net::UdpSocket;
use webtrunk::clock;
use webtrunk::media::{CallKey, Command, MediaConfig, MediaError, MediaReply, RequestId, Rtpengine};

/// Media ports per daemon: four per bridged call, a few calls per test.
const MEDIA_PORTS: u16 = 64;

/// One rtpengine process, killed (by its PID) when dropped.
pub struct Daemon {
    child: Child,
    pub ng: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts rtpengine on 127.0.0.1 with a free ng port and a free media port range, and
    /// waits until it answers an ng `ping`.
    pub fn start() -> Self {
        let ng_port = free_udp_port();
        let port_min = free_port_range(MEDIA_PORTS);
        let ng = SocketAddr::from(([127, 0, 0, 1], ng_port));
        let log = std::env::temp_dir().join(format!("webtrunk-rtpengine-{}-{ng_port}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).expect("rtpengine log file");
        let child = Process::new(binary())
            .args([
                "--config-file=none",
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
                &format!("--port-min={port_min}"),
                &format!("--port-max={}", port_min + MEDIA_PORTS - 1),
                "--log-stderr",
                "--log-level=6",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("rtpengine starts (Debian package rtpengine-daemon)");
        let mut daemon = Self { child, ng, log };
        daemon.wait_for_pong();
        daemon
    }

    fn wait_for_pong(&mut self) {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rtpengine exited with {status}; log: {}", self.log_text());
            }
            socket.send_to(b"wait-1 d7:command4:pinge", self.ng).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && &buf[..n] == b"wait-1 d6:result4:ponge"
            {
                return;
            }
        }
        panic!("rtpengine did not answer ping on {}; log: {}", self.ng, self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn binary() -> &'static str {
    ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("rtpengine")
}

fn free_udp_port() -> u16 {
    StdUdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `count` consecutive UDP ports below the kernel's ephemeral range that can all be bound
/// right now; the start is spread by PID so parallel test processes rarely meet.
fn free_port_range(count: u16) -> u16 {
    let slots = (32_000 - 20_000) / count;
    let first = (std::process::id() as u16).wrapping_mul(7919) % slots;
    for step in 0..slots {
        let base = 20_000 + ((first + step) % slots) * count;
        let held: Result<Vec<StdUdpSocket>, _> =
            (base..base + count).map(|p| StdUdpSocket::bind(("127.0.0.1", p))).collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no free range of {count} UDP ports between 20000 and 32000");
}

/// A UDP socket that receives ng requests and never answers: a dead rtpengine.
pub struct Silent {
    pub socket: StdUdpSocket,
}

impl Silent {
    pub fn bind() -> Self {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        Self { socket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Datagrams received so far.
    pub fn received(&self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        std::iter::from_fn(|| self.socket.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())).collect()
    }
}

/// The ng client on a real socket: sends what it asks, feeds back what arrives, and fires
/// its timer.
pub struct NgLoop {
    pub client: Rtpengine,
    socket: UdpSocket,
}

impl NgLoop {
    pub async fn new(config: MediaConfig) -> Self {
        let seed = u64::from(std::process::id()) << 16 | u64::from(free_udp_port());
        Self { client: Rtpengine::new(config, seed), socket: UdpSocket::bind("127.0.0.1:0").await.unwrap() }
    }

    pub async fn request(&mut self, call: &CallKey, command: Command) -> Result<MediaReply, MediaError> {
        let id = self.client.request(clock::now(), call, command);
        self.outcome(id).await
    }

    pub async fn ping(&mut self, instance: SocketAddr) -> Result<MediaReply, MediaError> {
        let id = self.client.ping(clock::now(), instance);
        self.outcome(id).await
    }

    /// Runs the loop until `id` has an outcome (other outcomes are dropped), 20 s at most.
    pub async fn outcome(&mut self, id: RequestId) -> Result<MediaReply, MediaError> {
        tokio::time::timeout(Duration::from_secs(20), self.drive(id)).await.expect("the ng client gives an outcome")
    }

    async fn drive(&mut self, id: RequestId) -> Result<MediaReply, MediaError> {
        let mut buf = vec![0u8; 65_536];
        loop {
            while let Some((to, datagram)) = self.client.poll_transmit() {
                self.socket.send_to(&datagram, to).await.unwrap();
            }
            while let Some((done, result)) = self.client.poll_outcome() {
                if done == id {
                    return result;
                }
            }
            let deadline = self.client.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, from) = received.unwrap();
                    self.client.handle_datagram(clock::now(), from, &buf[..n]);
                }
                () = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                    self.client.handle_timeout(clock::now());
                }
            }
        }
    }
}

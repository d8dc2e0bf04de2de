//! Drives a `TrunkRegistration` over a real UDP socket toward a real registrar (SIPp playing
//! `tests/sipp/trunk_registrar.xml`): a small stand-in for the engine and its client
//! transaction. Requests are retransmitted every 500 ms (RFC 3261 §17.1.2.2 Timer E on
//! loopback, which also covers SIPp not listening yet) until a final response or 5 s.
//!
//! Time is the real clock plus a jump: when the registration waits for its next refresh,
//! the driver moves its clock to the deadline instead of sleeping, as the sans-IO machine
//! only knows the `now` it is given.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use webtrunk::clock::Entropy;
use webtrunk::message::{Limits, Message};
use webtrunk::routing::registration::{RegistrationSpec, RegistrationState, TrunkRegistration, ViaSpec};

/// The account the scenario's `verifyauth` accepts.
pub const TRUNK_USER: &str = "pbx-account";
pub const TRUNK_PASSWORD: &str = "trunk-secret";
pub const TRUNK_REALM: &str = "carrier.example";

const RETRANSMIT: Duration = Duration::from_millis(500);
const GIVE_UP: Duration = Duration::from_secs(5);

pub struct RegistrationClient {
    socket: UdpSocket,
    registrar: SocketAddr,
    entropy: Entropy,
    /// How far the clock was moved ahead of the real one.
    jumped: Duration,
    /// When the last request was handed out, on the driver's clock.
    pub last_sent: Option<Instant>,
    /// The state after each exchange, in order.
    pub history: Vec<RegistrationState>,
}

impl RegistrationClient {
    pub async fn bind(registrar: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self {
            socket,
            registrar,
            entropy: Entropy::seeded(3261),
            jumped: Duration::ZERO,
            last_sent: None,
            history: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// The driver's clock: real time plus the jumps.
    pub fn now(&self) -> Instant {
        webtrunk::clock::now() + self.jumped
    }

    /// The registration of [`TRUNK_USER`] with `password`, Contact at our socket.
    pub fn spec(&self, password: &str) -> RegistrationSpec {
        RegistrationSpec {
            registrar: format!("sip:{TRUNK_REALM}"),
            aor: format!("sip:{TRUNK_USER}@{TRUNK_REALM}"),
            contact: format!("sip:{TRUNK_USER}@{}", self.local_addr()),
            username: TRUNK_USER.into(),
            password: password.into(),
            realm: Some(TRUNK_REALM.into()),
            expires: Duration::from_secs(600),
        }
    }

    pub fn registration(&mut self, password: &str) -> TrunkRegistration {
        let spec = self.spec(password);
        TrunkRegistration::new(spec, format!("{}@127.0.0.1", self.entropy.token(16)), self.entropy.tag(), self.now())
    }

    /// Sends the next REGISTER (moving the clock to when it is due) and feeds back its final
    /// response, or the timeout. `None` when nothing is scheduled.
    pub async fn step(&mut self, registration: &mut TrunkRegistration) -> Option<Message> {
        let due = registration.poll_timeout()?;
        let mut now = self.now();
        if due > now {
            self.jumped += due - now;
            now = due;
        }
        let via = self.via();
        let cnonce = self.entropy.token(12);
        let request = registration.poll_request(now, &via, &cnonce).expect("a request is due");
        self.last_sent = Some(now);
        let response = self.transact(&request).await;
        match &response {
            Some(response) => registration.on_response(self.now(), response),
            None => registration.on_timeout(self.now()),
        }
        self.history.push(registration.state().clone());
        response
    }

    /// Sends the unregistration and feeds back its final response.
    pub async fn unregister(&mut self, registration: &mut TrunkRegistration) -> Option<Message> {
        let via = self.via();
        let request = registration.unregister(&via).expect("something to unregister");
        let response = self.transact(&request).await;
        match &response {
            Some(response) => registration.on_response(self.now(), response),
            None => registration.on_timeout(self.now()),
        }
        self.history.push(registration.state().clone());
        response
    }

    fn via(&mut self) -> ViaSpec {
        ViaSpec { sent_by: self.local_addr().to_string(), transport: "UDP".into(), branch: self.entropy.branch() }
    }

    /// One non-INVITE client transaction over UDP: the final response, or `None` after
    /// [`GIVE_UP`].
    async fn transact(&self, request: &[u8]) -> Option<Message> {
        let mut buf = vec![0u8; 65_535];
        for _ in 0..GIVE_UP.as_millis() / RETRANSMIT.as_millis() {
            // SIPp may not listen yet: the ICMP error of a send is not fatal.
            let _ = self.socket.send_to(request, self.registrar).await;
            let listen = tokio::time::sleep(RETRANSMIT);
            tokio::pin!(listen);
            loop {
                let received = tokio::select! {
                    r = self.socket.recv_from(&mut buf) => r,
                    () = &mut listen => break,
                };
                let Ok((n, _)) = received else {
                    (&mut listen).await;
                    break;
                };
                let Ok(message) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) else {
                    continue;
                };
                if message.status().is_some_and(|code| code >= 200) {
                    return Some(message);
                }
            }
        }
        None
    }
}

/// SIPp ended with its call failed (what the scenario does after it refuses credentials).
pub async fn sipp_failed(child: tokio::process::Child) {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    assert!(!out.status.success(), "SIPp accepted the call: {}", String::from_utf8_lossy(&out.stderr));
}

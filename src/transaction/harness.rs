//! Test support: a simulated clock that jumps from deadline to deadline, and a log of what
//! a machine asked for, in milliseconds since the start, so each RFC rule reads as one
//! list of events.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ClientInvite, ClientNonInvite, Output, ServerInvite, ServerNonInvite};
use crate::message::response::{Reply, build};
use crate::message::{Limits, Message};

/// What the harness needs from a machine.
pub(super) trait Machine {
    fn handle_timeout(&mut self, now: Instant);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
}

macro_rules! machine {
    ($($t:ty),*) => {$(
        impl Machine for $t {
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_output(&mut self) -> Option<Output> {
                <$t>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
        }
    )*};
}

machine!(ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite);

pub(super) struct Harness<M> {
    pub(super) m: M,
    pub(super) t0: Instant,
    pub(super) now: Instant,
    /// (milliseconds since `t0`, what happened).
    pub(super) log: Vec<(u64, String)>,
    /// Every Transmit, whole.
    sent: Vec<Bytes>,
}

impl<M: Machine> Harness<M> {
    /// Builds the machine at time zero and collects what it does at once.
    pub(super) fn start(build: impl FnOnce(Instant) -> M) -> Self {
        let t0 = crate::clock::now();
        let mut h = Self { m: build(t0), t0, now: t0, log: Vec::new(), sent: Vec::new() };
        h.collect();
        h
    }

    /// Advances the clock to `ms`, firing every deadline on the way at its own time.
    pub(super) fn run_to(&mut self, ms: u64) {
        let end = self.t0 + Duration::from_millis(ms);
        while let Some(at) = self.m.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.m.handle_timeout(self.now);
            self.collect();
        }
        self.now = self.now.max(end);
    }

    /// Advances to `ms`, then hands the machine an input at that time.
    pub(super) fn input(&mut self, ms: u64, f: impl FnOnce(&mut M, Instant)) {
        self.run_to(ms);
        f(&mut self.m, self.now);
        self.collect();
    }

    /// The text of every message sent so far.
    pub(super) fn transmitted(&self) -> Vec<String> {
        self.sent.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    fn collect(&mut self) {
        let ms = u64::try_from((self.now - self.t0).as_millis()).unwrap();
        while let Some(output) = self.m.poll_output() {
            if let Output::Transmit(bytes) = &output {
                self.sent.push(bytes.clone());
            }
            self.log.push((ms, describe(&output)));
        }
    }
}

/// `send INVITE`, `send 486`, `up 180`, `ack to TU`, `timeout`, `terminated`.
pub(super) fn describe(output: &Output) -> String {
    match output {
        Output::Transmit(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let mut words = text.split(' ');
            let first = words.next().unwrap_or_default();
            if first == "SIP/2.0" {
                format!("send {}", words.next().unwrap_or_default())
            } else {
                format!("send {first}")
            }
        }
        Output::Response(m) => format!("up {}", m.status().unwrap()),
        Output::Timeout => "timeout".into(),
        Output::Ack(_) => "ack to TU".into(),
        Output::Terminated => "terminated".into(),
    }
}

pub(super) fn parse(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()).unwrap()
}

/// A request as a proxy forwards it over UDP: our Via on top, a Route, CSeq 7.
pub(super) fn request(method: &str) -> Message {
    parse(&format!(
        "{method} sip:bob@192.0.2.20:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\r\n\
         Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKu1\r\n\
         Route: <sip:edge.example.com;lr>\r\nRoute: <sip:core.example.com;lr>\r\n\
         Max-Forwards: 69\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: 3848276298220188511@example.com\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
    ))
}

pub(super) fn invite() -> Message {
    request("INVITE")
}

/// The ACK a UAC sends for a non-2xx final response to [`invite`].
pub(super) fn ack() -> Message {
    let text = String::from_utf8(invite().as_bytes().to_vec()).unwrap();
    parse(
        &text
            .replacen("INVITE", "ACK", 1)
            .replace("7 INVITE", "7 ACK")
            .replace("<sip:bob@example.com>\r\n", "<sip:bob@example.com>;tag=b2\r\n"),
    )
}

/// A response to `request` as its UAS would send it.
pub(super) fn response(request: &Message, code: u16, to_tag: Option<&str>) -> Message {
    Message::parse(response_bytes(request, code, to_tag), &Limits::default()).unwrap()
}

pub(super) fn response_bytes(request: &Message, code: u16, to_tag: Option<&str>) -> Bytes {
    Bytes::from(build(request, &Reply { code, to_tag, ..Reply::default() }))
}

//! L5: media anchoring through rtpengine's ng control protocol, sans-IO. [`Rtpengine`]
//! turns offer/answer/delete/query requests into ng datagrams, retries and fails over
//! between instances, keeps each call on the instance that holds its session, and hands
//! back the rewritten SDP. It sends nothing and reads no clock: the driver moves the
//! datagrams ([`Rtpengine::poll_transmit`], [`Rtpengine::handle_datagram`]) and the time
//! ([`Rtpengine::poll_timeout`], [`Rtpengine::handle_timeout`]).
//!
//! # The wire
//! One UDP datagram per message: `<cookie> <bencoded dictionary>`; the reply carries the
//! request's cookie. rtpengine caches replies by cookie, so a retransmission reuses its
//! cookie (and gets the cached reply rather than a second session), and cookies must not
//! repeat across restarts of webtrunk: each is `<seed>-<counter>` with the seed drawn at
//! start-up. A datagram with a cookie we did not send, or from an address the request was
//! not sent to, is dropped.
//!
//! # Retries and failover
//! Each try waits [`MediaConfig::timeout`]; after [`MediaConfig::retries`] tries an
//! instance is given up and the next one (round robin from where the last new call
//! started) gets the request; when all are given up the outcome is
//! [`MediaError::Timeout`]. Once an instance has answered for a call-id, every later
//! request for that call-id goes only to it (the session lives there). A `delete`
//! forgets the placement, whatever its outcome.
//!
//! # Flags, chosen from the leg the SDP goes *to*
//! rtpengine learns what the sending side speaks from the SDP it is given (ICE, DTLS,
//! profile); the flags say what the receiving side gets. So [`Leg`] of the receiver
//! decides; the sender's leg is in [`Command`] for the caller's bookkeeping.
//!
//! | toward | offer | answer |
//! |---|---|---|
//! | plain RTP (trunk) | `ICE=remove`, `DTLS=off`, `transport-protocol=RTP/AVP`, `rtcp-mux=[demux]`, `SDES=[off]`, flags `strip-extmap`, `no-rtcp-attribute`; `codec={strip:[all], except:[codecs.., telephone-event]}` when the trunk lists codecs | same, without `transport-protocol` (rtpengine keeps the offered profile), `rtcp-mux` or `codec` |
//! | browser | `ICE=force`, `transport-protocol=UDP/TLS/RTP/SAVPF`, `rtcp-mux=[require]`, `SDES=[off]`, flag `generate-mid` | `ICE=force`, `transport-protocol=UDP/TLS/RTP/SAVPF`, `SDES=[off]`; **no** `DTLS=passive` |
//!
//! Every offer and answer also has `replace=[origin, session-connection]`, so `o=` and the
//! session `c=` name rtpengine's address rather than the peer's.
//!
//! Why each one:
//! - `ICE=remove` / `DTLS=off` / `RTP/AVP`: a trunk speaks plain RTP (RFC 3550/3551); ICE
//!   and DTLS-SRTP are what the browser leg needs (RFC 8827), and rtpengine terminates
//!   them there. `ICE=force` makes rtpengine the only candidate toward the browser.
//! - `rtcp-mux=[demux]`: the browser muxes RTP and RTCP (RFC 5761, required by RFC 8834); a
//!   trunk gets them on two ports. `rtcp-mux=[require]`: the offer to a browser lists no
//!   separate RTCP port, which is all Chromium accepts (`rtcpMuxPolicy: require`).
//! - `SDES=[off]`: DTLS-SRTP only toward browsers (RFC 8827 §6.5 forbids SDES), and no
//!   `a=crypto` toward trunks.
//! - `generate-mid`: JSEP (RFC 8829) gives every section an `a=mid`; a trunk's
//!   offer has none.
//! - DTLS role: in an answer toward a browser rtpengine takes `a=setup:active` by default.
//!   `DTLS=passive` there left Chromium's handshake unfinished (research/peers.md), so it
//!   is never set.
//! - `delete-delay=0` on delete: the call is over; the ports (four per bridged call) come
//!   back now instead of after the daemon's default 30 s.
//!
//! # Size toward a trunk (Chromium offer fixture, 4698 bytes; rtpengine 10.5)
//! What reaches the trunk must leave room in a 1300-byte UDP INVITE. Measured with the
//! flags added one at a time: on the body as the browser sent it, with the WebRTC-only
//! attributes trimmed, and trimmed with the video section disabled (what we send):
//!
//! | step | as sent | attributes trimmed | and video off |
//! |---|---|---|---|
//! | no flags (rtpengine adds its own ICE candidates and DTLS) | 6140 | 5407 | 2244 |
//! | `ICE=remove` (no `a=ice-*`, `a=candidate`) | 5732 | 4999 | 2040 |
//! | `DTLS=off` (no `a=fingerprint`, `a=setup`) | 5460 | 4727 | 1904 |
//! | `transport-protocol=RTP/AVP` (`a=rtcp-fb` goes with AVPF) | 3320 | 2587 | 824 |
//! | `rtcp-mux=[demux]` (no `a=rtcp-mux`) | 3296 | 2563 | 812 |
//! | `SDES=[off]`, `replace` (no size change) | 3296 | 2563 | 812 |
//! | `strip-extmap` (no `a=extmap`) | 2544 | 1811 | 551 |
//! | `codec` strip all except PCMU, PCMA, telephone-event | 2311 | 1578 | 318 |
//! | `no-rtcp-attribute` (RTCP is on port+1 anyway, RFC 3550 §11) | 2283 | 1550 | **304** |
//!
//! The trimming is [`crate::message::sdp::trim`], because rtpengine 10.5 cannot do it:
//! it has no flag to drop `a=ssrc`, `a=msid` and friends (733 bytes here; the list is
//! `flags::WEBRTC_ONLY_ATTRIBUTES`) nor a media section, and it refuses to strip every
//! codec of one. So on the way to a plain-RTP leg those lines go, and in an offer each
//! section with none of the trunk's codecs (here: the video, 1.2 KB even after the
//! flags) is disabled with port 0 (RFC 3264 §8.2), keeping one section per offered one
//! for the browser's answer. An offer where no section is left is refused before it
//! reaches rtpengine ([`MediaError::NoAllowedCodec`]). With no codec list the video
//! stays and the body is about 1.5 KB: a trunk should list its codecs.

mod bencode;
mod flags;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use bencode::BencodeError;

use crate::message::sdp::SdpError;

/// Largest ng request we send in one UDP datagram (IPv4 payload limit).
pub const MAX_DATAGRAM: usize = 65_507;

/// Where rtpengine runs and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// ng control addresses (`--listen-ng`), in order of preference.
    pub instances: Vec<SocketAddr>,
    /// Wait for a reply per try.
    pub timeout: Duration,
    /// Tries per instance before failing over (0 is taken as 1).
    pub retries: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { instances: Vec::new(), timeout: Duration::from_secs(1), retries: 2 }
    }
}

/// What one side of a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// WebRTC: ICE, DTLS-SRTP, rtcp-mux, `UDP/TLS/RTP/SAVPF` (RFC 8829, RFC 8834).
    Browser,
    /// Plain RTP/AVP, as trunks and PBXs speak it.
    PlainRtp,
}

/// The dialog a session belongs to; rtpengine keys sessions by call-id and tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub call_id: String,
    pub from_tag: String,
    /// Needed in an answer; in a delete it narrows to one branch of a forked call.
    pub to_tag: Option<String>,
}

/// Names one request in [`Rtpengine::poll_outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// An ng command. `sdp` is the body as the sender sent it; `from` and `to` are what the
/// sender and the receiver of that body speak; `codecs` is the trunk's list of allowed
/// codecs (encoding names; empty means all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Offer { sdp: Bytes, from: Leg, to: Leg, codecs: Vec<String> },
    Answer { sdp: Bytes, from: Leg, to: Leg, codecs: Vec<String> },
    Delete,
    Query,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReply {
    /// The rewritten body for the receiver (offer and answer).
    pub sdp: Option<Bytes>,
    /// rtpengine's `warning`: it did the work but something was off.
    pub warning: Option<String>,
    /// The instance that answered (and now holds the session).
    pub instance: SocketAddr,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// No instance answered within its tries.
    #[error("rtpengine did not answer")]
    Timeout,
    /// `result: error` with rtpengine's `error-reason` (its text, e.g. "Unknown call-id").
    #[error("rtpengine refused: {0}")]
    Rtpengine(String),
    #[error("malformed rtpengine reply: {0}")]
    BadReply(ReplyError),
    /// The body is not SDP we can pass on.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// No media section has a codec the trunk allows.
    #[error("no allowed codec")]
    NoAllowedCodec,
    #[error("SDP too large for an ng datagram")]
    RequestTooLarge,
    #[error("no rtpengine configured")]
    NoInstance,
}

impl MediaError {
    /// The SIP status that answers the request whose media failed this way.
    pub fn status(&self) -> u16 {
        match self {
            Self::Sdp(_) | Self::NoAllowedCodec => 488,
            Self::RequestTooLarge => 513,
            Self::Timeout | Self::NoInstance => 503,
            Self::Rtpengine(_) | Self::BadReply(_) => 500,
        }
    }
}

/// How a reply datagram was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{0}")]
    Bencode(#[from] BencodeError),
    #[error("reply without a result")]
    NoResult,
    #[error("unknown result")]
    UnknownResult,
}

/// The ng client. See the module documentation.
#[derive(Debug)]
pub struct Rtpengine {
    config: MediaConfig,
    /// `<seed in hex>-`; a cookie is this and the request number in hex.
    cookie_prefix: String,
    next_id: u64,
    /// Where the next new call starts its round of instances.
    next_instance: usize,
    pending: HashMap<u64, Pending>,
    /// (deadline, request) for every pending request; exact, so no scan.
    deadlines: BTreeSet<(Instant, u64)>,
    /// call-id → the instance holding its session.
    placement: HashMap<String, SocketAddr>,
    transmits: VecDeque<(SocketAddr, Bytes)>,
    outcomes: VecDeque<(RequestId, Result<MediaReply, MediaError>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Answer,
    Delete,
    Query,
    Ping,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    call_id: Option<String>,
    datagram: Bytes,
    /// Instances in the order they get the request; `route[..=at]` have had it.
    route: Vec<SocketAddr>,
    at: usize,
    tries: u32,
    deadline: Instant,
}

impl Rtpengine {
    /// `cookie_seed` must differ between runs (draw it from `clock::Entropy`): rtpengine
    /// answers a known cookie from its reply cache.
    pub fn new(config: MediaConfig, cookie_seed: u64) -> Self {
        Self {
            config,
            cookie_prefix: format!("{cookie_seed:x}-"),
            next_id: 0,
            next_instance: 0,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            placement: HashMap::new(),
            transmits: VecDeque::new(),
            outcomes: VecDeque::new(),
        }
    }

    /// Starts `command` for `call`. The outcome comes out of [`Self::poll_outcome`],
    /// possibly at once (a body that cannot be used, no instance configured).
    pub fn request(&mut self, now: Instant, call: &CallKey, command: Command) -> RequestId {
        let id = self.allocate_id();
        let kind = match command {
            Command::Offer { .. } => Kind::Offer,
            Command::Answer { .. } => Kind::Answer,
            Command::Delete => Kind::Delete,
            Command::Query => Kind::Query,
        };
        let body = match flags::body_for_rtpengine(&command) {
            Ok(body) => body,
            Err(e) => return self.fail_now(id, e),
        };
        let dict = flags::encode(call, &command, body.as_deref());
        let route = match self.placement.get(&call.call_id) {
            Some(&instance) => vec![instance],
            None => self.rotation(kind == Kind::Offer),
        };
        if kind == Kind::Delete {
            self.placement.remove(&call.call_id);
        }
        self.start(now, id, kind, Some(call.call_id.clone()), &dict, route)
    }

    /// Sends an ng `ping` to `instance` (a health check); the outcome is a reply without
    /// SDP, or [`MediaError::Timeout`] after the configured tries.
    pub fn ping(&mut self, now: Instant, instance: SocketAddr) -> RequestId {
        let id = self.allocate_id();
        self.start(now, id, Kind::Ping, None, &flags::encode_ping(), vec![instance])
    }

    /// A datagram that arrived on the ng socket.
    pub fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(space) = bytes.iter().position(|&b| b == b' ') else { return };
        let Some(id) = self.parse_cookie(&bytes[..space]) else { return };
        let Some(pending) = self.pending.get(&id) else { return };
        if !pending.route[..=pending.at].contains(&from) {
            return;
        }
        let Some(pending) = self.pending.remove(&id) else { return };
        self.deadlines.remove(&(pending.deadline, id));
        let result = parse_reply(&bytes[space + 1..], pending.kind, from);
        if let Some(call_id) = pending.call_id {
            match pending.kind {
                Kind::Offer | Kind::Answer if result.is_ok() => {
                    self.placement.insert(call_id, from);
                }
                Kind::Delete => {
                    self.placement.remove(&call_id);
                }
                _ => {}
            }
        }
        self.outcomes.push_back((RequestId(id), result));
    }

    /// Retries, fails over or gives up every request whose try is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(mut pending) = self.pending.remove(&id) else { continue };
            if pending.tries < self.config.retries.max(1) {
                pending.tries += 1;
            } else if pending.at + 1 < pending.route.len() {
                pending.at += 1;
                pending.tries = 1;
            } else {
                if let (Kind::Delete, Some(call_id)) = (pending.kind, &pending.call_id) {
                    self.placement.remove(call_id);
                }
                self.outcomes.push_back((RequestId(id), Err(MediaError::Timeout)));
                continue;
            }
            self.send(now, id, pending);
        }
    }

    /// The next datagram to send, and to which rtpengine.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next finished request: its reply, or why it failed.
    pub fn poll_outcome(&mut self) -> Option<(RequestId, Result<MediaReply, MediaError>)> {
        self.outcomes.pop_front()
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Requests waiting for a reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The instance that holds `call_id`'s session, once one has answered for it.
    pub fn placement(&self, call_id: &str) -> Option<SocketAddr> {
        self.placement.get(call_id).copied()
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fail_now(&mut self, id: u64, error: MediaError) -> RequestId {
        self.outcomes.push_back((RequestId(id), Err(error)));
        RequestId(id)
    }

    /// Every instance once, starting at the round-robin position. Only a new call
    /// (an offer) moves the position, so retries of one call do not skew the spread.
    fn rotation(&mut self, new_call: bool) -> Vec<SocketAddr> {
        let n = self.config.instances.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next_instance % n;
        if new_call {
            self.next_instance = (start + 1) % n;
        }
        (0..n).map(|i| self.config.instances[(start + i) % n]).collect()
    }

    fn start(
        &mut self,
        now: Instant,
        id: u64,
        kind: Kind,
        call_id: Option<String>,
        dict: &[u8],
        route: Vec<SocketAddr>,
    ) -> RequestId {
        if route.is_empty() {
            return self.fail_now(id, MediaError::NoInstance);
        }
        let cookie = format!("{}{id:x}", self.cookie_prefix);
        if cookie.len() + 1 + dict.len() > MAX_DATAGRAM {
            return self.fail_now(id, MediaError::RequestTooLarge);
        }
        let mut datagram = Vec::with_capacity(cookie.len() + 1 + dict.len());
        datagram.extend_from_slice(cookie.as_bytes());
        datagram.push(b' ');
        datagram.extend_from_slice(dict);
        let pending = Pending { kind, call_id, datagram: Bytes::from(datagram), route, at: 0, tries: 1, deadline: now };
        self.send(now, id, pending);
        RequestId(id)
    }

    /// Sends (or re-sends, same cookie) to the current instance and arms the deadline.
    fn send(&mut self, now: Instant, id: u64, mut pending: Pending) {
        pending.deadline = now + self.config.timeout;
        self.transmits.push_back((pending.route[pending.at], pending.datagram.clone()));
        self.deadlines.insert((pending.deadline, id));
        self.pending.insert(id, pending);
    }

    fn parse_cookie(&self, cookie: &[u8]) -> Option<u64> {
        let rest = cookie.strip_prefix(self.cookie_prefix.as_bytes())?;
        if rest.is_empty() || rest.len() > 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
    }
}

/// Reads a reply dictionary (ng protocol: `result` is `ok`, `error` with `error-reason`,
/// or `pong` for a ping; `load limit` when rtpengine sheds load).
fn parse_reply(body: &[u8], kind: Kind, from: SocketAddr) -> Result<MediaReply, MediaError> {
    let dict = bencode::Value::decode(body).map_err(|e| MediaError::BadReply(e.into()))?;
    let result =
        dict.get("result").and_then(bencode::Value::as_bytes).ok_or(MediaError::BadReply(ReplyError::NoResult))?;
    let text =
        |key: &str| dict.get(key).and_then(bencode::Value::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned());
    match (result, kind) {
        (b"ok", _) | (b"pong", Kind::Ping) => Ok(MediaReply {
            sdp: dict.get("sdp").and_then(bencode::Value::as_bytes).map(Bytes::copy_from_slice),
            warning: text("warning"),
            instance: from,
        }),
        (b"error", _) => Err(MediaError::Rtpengine(text("error-reason").unwrap_or_default())),
        (b"load limit", _) => Err(MediaError::Rtpengine(text("message").unwrap_or_else(|| "load limit".to_owned()))),
        _ => Err(MediaError::BadReply(ReplyError::UnknownResult)),
    }
}

#[cfg(test)]
mod tests;

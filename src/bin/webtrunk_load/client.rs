//! One simulated browser on one WebSocket: sends a request, reads until its final
//! response, and meanwhile does what a UA must (count CRLF pongs, answer the server's
//! requests). tungstenite answers RFC 6455 pings itself as long as the stream is read.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use super::sip::{self, Challenge, Incoming, Profile, Ua};
use super::stats::Stats;
use super::target::Transport;

/// Why a client stopped short.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("closed by the server")]
    Closed,
    #[error("{0}")]
    WebSocket(tungstenite::Error),
    #[error("no final response within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Closed => "closed by server",
            Self::WebSocket(_) => "websocket error",
            Self::Timeout(_) => "response timeout",
        }
    }
}

/// A final response to the request we sent, reduced to what decides the next step.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) challenge: Option<Challenge>,
    /// Whether the request carried Authorization.
    pub(crate) authorized: bool,
}

/// What a reply means for a client that keeps registering or pinging.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    /// A 401 we can answer: the first one, or `stale=true` (RFC 2617 §3.2.1).
    Challenged,
    Failed {
        kind: String,
        detail: String,
    },
}

#[derive(Debug)]
pub(crate) struct Client {
    ws: WebSocketStream<Transport>,
    pub(crate) ua: Ua,
    cseq: u32,
    challenge: Option<Challenge>,
    /// Nonce count for the current challenge (RFC 2617 §3.2.2: 00000001 and up).
    nc: u32,
}

impl Client {
    pub(crate) fn new(ws: WebSocketStream<Transport>, ua: Ua) -> Self {
        Self { ws, ua, cseq: 0, challenge: None, nc: 0 }
    }

    /// Sends the next REGISTER (with digest once challenged) or OPTIONS and waits for
    /// its final response.
    pub(crate) async fn exchange(
        &mut self,
        profile: &Profile,
        register: bool,
        stats: &Stats,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        self.cseq += 1;
        let cseq = self.cseq;
        let (request, authorized) = if register {
            let uri = format!("sip:{}", profile.domain);
            let authorization = self.challenge.as_ref().map(|challenge| {
                self.nc += 1;
                let user = self.ua.user(profile);
                let cnonce = self.ua.cnonce(cseq);
                challenge.authorization(&user, &profile.password, "REGISTER", &uri, self.nc, &cnonce)
            });
            let authorized = authorization.is_some();
            (self.ua.register(profile, cseq, authorization.as_deref()), authorized)
        } else {
            (self.ua.options(profile, cseq), false)
        };
        self.ws.send(Message::text(request)).await.map_err(ClientError::WebSocket)?;
        let wait = async {
            loop {
                if let Some(reply) = self.hear(stats, Some(cseq)).await? {
                    return Ok(Reply { authorized, ..reply });
                }
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| ClientError::Timeout(limit))?
    }

    /// Takes in a reply: a usable 401 becomes the challenge the next REGISTER answers.
    pub(crate) fn judge(&mut self, reply: Reply, method: &str) -> Verdict {
        let status = reply.status;
        match (status, reply.challenge) {
            (200..=299, _) => Verdict::Ok,
            (401, Some(challenge)) if !reply.authorized || challenge.stale => {
                self.challenge = Some(challenge);
                self.nc = 0;
                Verdict::Challenged
            }
            (401, Some(_)) => Verdict::Failed {
                kind: "401 after digest".into(),
                detail: format!("{method} with Authorization refused again (wrong password or digest)"),
            },
            (401, None) => Verdict::Failed {
                kind: "401 without MD5 challenge".into(),
                detail: format!("no WWW-Authenticate with Digest algorithm=MD5 in the 401 to {method}"),
            },
            (status, _) => {
                Verdict::Failed { kind: format!("status {status}"), detail: format!("{status} to {method}") }
            }
        }
    }

    /// Reads one WebSocket message. Returns the final response to `expect` when that is
    /// what came; counts pongs and answers requests on the way.
    pub(crate) async fn hear(&mut self, stats: &Stats, expect: Option<u32>) -> Result<Option<Reply>, ClientError> {
        let message = match self.ws.next().await {
            None | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Err(ClientError::Closed);
            }
            Some(Err(e)) => return Err(ClientError::WebSocket(e)),
            Some(Ok(message)) => message,
        };
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Message::Close(_) => return Err(ClientError::Closed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(None),
        };
        match Incoming::parse(text) {
            Incoming::Pong => Stats::bump(&stats.pongs),
            Incoming::Request { method } => {
                if let Some(answer) = sip::answer(text, method) {
                    self.ws.send(Message::text(answer)).await.map_err(ClientError::WebSocket)?;
                }
            }
            Incoming::Response(response) => {
                let ours = Some(response.cseq) == expect && response.call_id == self.ua.call_id();
                if ours && response.is_final() {
                    let challenge = if response.status == 401 { response.md5_challenge() } else { None };
                    return Ok(Some(Reply { status: response.status, challenge, authorized: false }));
                }
            }
            Incoming::Garbage => {}
        }
        Ok(None)
    }

    /// An RFC 5626 §4.4.1 CRLFCRLF keep-alive.
    pub(crate) async fn keep_alive(&mut self) -> Result<(), ClientError> {
        self.ws.send(Message::text("\r\n\r\n")).await.map_err(ClientError::WebSocket)
    }

    /// Closes the WebSocket and reads until the server closes TCP, so the TIME_WAIT
    /// state stays on the server and the next run can reuse our source ports.
    pub(crate) async fn close(mut self, limit: Duration) {
        let drain = async {
            if self.ws.close(None).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

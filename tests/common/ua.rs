//! A small SIP user agent for the tests: enough to register with digest, place and answer
//! calls and follow a route set, over UDP or WebSocket. It builds messages by hand so a
//! test sees exactly what goes on the wire.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webtrunk::auth::{Algorithm, QopAuth, ha1, response};
use webtrunk::message::digest::parse_challenge;
use webtrunk::message::response::{Reply, build};
use webtrunk::message::{HeaderName, Limits, Message};

use super::{TIMEOUT, Ws, ws_connect, ws_next_text};

pub enum Link {
    Udp { socket: UdpSocket, server: SocketAddr },
    Ws(Box<Ws<TcpStream>>),
}

pub struct Ua {
    pub link: Link,
    pub user: String,
    pub password: String,
    /// `UDP` or `WS`, for Via.
    pub transport: &'static str,
    /// Our contact URI, as registered.
    pub contact: String,
    pub sent_by: String,
    /// `+sip.instance` for RFC 5626 outbound registration (with reg-id 1).
    pub instance: Option<String>,
    counter: u32,
}

pub fn parse(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()).unwrap()
}

pub fn status(m: &Message) -> u16 {
    m.status().unwrap_or(0)
}

pub fn header(m: &Message, name: HeaderName) -> String {
    m.first_value(name).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
}

pub fn all(m: &Message, name: HeaderName) -> Vec<String> {
    m.list(name).iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

impl Ua {
    pub async fn udp(user: &str, password: &str, server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Self {
            link: Link::Udp { socket, server },
            user: user.into(),
            password: password.into(),
            transport: "UDP",
            contact: format!("sip:{user}@{local}"),
            sent_by: local.to_string(),
            instance: None,
            counter: 0,
        }
    }

    pub async fn ws(user: &str, password: &str, server: SocketAddr) -> Self {
        let ws = ws_connect(server).await;
        let host = format!("{user}{}.invalid", server.port());
        Self {
            link: Link::Ws(Box::new(ws)),
            user: user.into(),
            password: password.into(),
            transport: "WS",
            contact: format!("sip:{user}@{host};transport=ws"),
            sent_by: host,
            instance: None,
            counter: 0,
        }
    }

    pub fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("{}{}", self.user, self.counter)
    }

    pub async fn send(&mut self, text: &str) {
        match &mut self.link {
            Link::Udp { socket, server } => {
                socket.send_to(text.as_bytes(), *server).await.unwrap();
            }
            Link::Ws(ws) => ws.send(WsMessage::text(text)).await.unwrap(),
        }
    }

    /// The next message; a 100 Trying is skipped.
    pub async fn recv(&mut self) -> Message {
        loop {
            let text = match &mut self.link {
                Link::Udp { socket, .. } => {
                    let mut buf = vec![0u8; 65_535];
                    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("{}: nothing received in time", self.user))
                        .unwrap();
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                }
                Link::Ws(ws) => ws_next_text(ws).await,
            };
            if text.trim().is_empty() {
                continue;
            }
            let m = parse(&text);
            if m.status() != Some(100) {
                return m;
            }
        }
    }

    /// Nothing arrives within `ms` milliseconds (a 100 Trying aside).
    pub async fn silent(&mut self, ms: u64) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(ms), self.recv()).await.is_err()
    }

    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/{} {};branch=z9hG4bK{branch};rport", self.transport, self.sent_by)
    }

    /// REGISTER with digest; returns the 200.
    pub async fn register(&mut self) -> Message {
        let call_id = self.next_id();
        let mut auth = None;
        for cseq in 1..=2 {
            let branch = self.next_id();
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
                 From: <sip:{u}@localhost>;tag={call_id}\r\nTo: <sip:{u}@localhost>\r\nCall-ID: {call_id}\r\n\
                 CSeq: {cseq} REGISTER\r\nContact: <{}>{}\r\nExpires: 600\r\nSupported: outbound, path\r\n\
                 {}Content-Length: 0\r\n\r\n",
                self.via(&branch),
                self.contact,
                self.instance.as_ref().map(|i| format!(";reg-id=1;+sip.instance=\"<{i}>\"")).unwrap_or_default(),
                auth.as_ref().map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default(),
                u = self.user,
            );
            self.send(&text).await;
            let reply = self.recv().await;
            if status(&reply) == 200 {
                return reply;
            }
            assert_eq!(status(&reply), 401, "{}: {}", self.user, String::from_utf8_lossy(reply.as_bytes()));
            auth = Some(self.answer(&reply, HeaderName::WwwAuthenticate, "REGISTER", "sip:localhost"));
        }
        panic!("{}: not registered", self.user);
    }

    /// Credentials for the last MD5 challenge of a 401/407.
    pub fn answer(&self, challenge: &Message, name: HeaderName, method: &str, uri: &str) -> String {
        let c = challenge
            .headers_named(name)
            .map(|h| parse_challenge(&challenge.value(h)).unwrap())
            .filter(|c| c.algorithm.as_deref().unwrap_or("MD5").eq_ignore_ascii_case("MD5"))
            .last()
            .expect("an MD5 challenge");
        let digest = response(
            Algorithm::Md5,
            &ha1(Algorithm::Md5, &self.user, &c.realm, &self.password),
            &c.nonce,
            method,
            uri,
            Some(QopAuth { qop: "auth", nc: "00000001", cnonce: "abc" }),
        );
        format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{digest}\", \
             algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"",
            self.user, c.realm, c.nonce
        )
    }

    /// An INVITE to `target` (a user of ours), through the 407 dance; returns the request
    /// as finally sent (for CANCEL and ACK).
    pub async fn invite(&mut self, target: &str) -> String {
        self.invite_with(target, "v=0\n").await
    }

    /// [`Self::invite`] with `sdp` as the body.
    pub async fn invite_with(&mut self, target: &str, sdp: &str) -> String {
        let call_id = self.next_id();
        let uri = format!("sip:{target}@localhost");
        let mut auth: Option<String> = None;
        for cseq in 1..=2 {
            let branch = self.next_id();
            let text = format!(
                "INVITE {uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{}@localhost>;tag=t{call_id}\r\n\
                 To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <{}>\r\n\
                 Content-Type: application/sdp\r\n{}Content-Length: {}\r\n\r\n{sdp}",
                self.via(&branch),
                self.user,
                self.contact,
                auth.as_ref().map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default(),
                sdp.len(),
            );
            self.send(&text).await;
            if auth.is_some() {
                return text;
            }
            let challenge = self.recv().await;
            assert_eq!(status(&challenge), 407, "{}", String::from_utf8_lossy(challenge.as_bytes()));
            self.ack_failure(&parse(&text), &challenge).await;
            auth = Some(self.answer(&challenge, HeaderName::ProxyAuthenticate, "INVITE", &uri));
        }
        unreachable!()
    }

    /// The ACK for a non-2xx final response (§17.1.1.3): hop by hop, same branch.
    pub async fn ack_failure(&mut self, invite: &Message, response: &Message) {
        let text = format!(
            "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            String::from_utf8_lossy(invite.request_uri().unwrap()),
            String::from_utf8_lossy(&invite.top_via_raw().unwrap()),
            header(invite, HeaderName::From),
            header(response, HeaderName::To),
            header(invite, HeaderName::CallId),
            invite.cseq().unwrap().0,
        );
        self.send(&text).await;
    }

    /// A response to a received request, echoing Record-Route (§12.1.1) and our Contact.
    pub async fn respond(&mut self, request: &Message, code: u16, to_tag: &str) {
        let mut reply = Reply::new(code);
        reply.to_tag = Some(to_tag);
        let rr = all(request, HeaderName::RecordRoute);
        for r in &rr {
            reply.headers.push(("Record-Route", r.clone().into()));
        }
        let contact = format!("<{}>", self.contact);
        if code < 300 {
            reply.headers.push(("Contact", contact.into()));
        }
        let bytes = build(request, &reply);
        self.send(&String::from_utf8(bytes).unwrap()).await;
    }

    /// [`Self::respond`] with an SDP body (an answer).
    pub async fn respond_with_sdp(&mut self, request: &Message, code: u16, to_tag: &str, sdp: &str) {
        let mut reply = Reply::new(code);
        reply.to_tag = Some(to_tag);
        let rr = all(request, HeaderName::RecordRoute);
        for r in &rr {
            reply.headers.push(("Record-Route", r.clone().into()));
        }
        reply.headers.push(("Contact", format!("<{}>", self.contact).into()));
        reply.headers.push(("Content-Type", "application/sdp".into()));
        let text = String::from_utf8(build(request, &reply)).unwrap();
        let text = text.replace("Content-Length: 0\r\n\r\n", &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()));
        self.send(&text).await;
    }

    /// An in-dialog request along `route` (the route set, in order) to `target`.
    pub async fn in_dialog(
        &mut self,
        method: &str,
        target: &str,
        route: &[String],
        dialog: &Dialog,
        cseq: u32,
    ) -> String {
        self.in_dialog_with_sdp(method, target, route, dialog, cseq, "").await
    }

    /// [`Self::in_dialog`] with an SDP body (a re-INVITE's offer); none when empty.
    pub async fn in_dialog_with_sdp(
        &mut self,
        method: &str,
        target: &str,
        route: &[String],
        dialog: &Dialog,
        cseq: u32,
        sdp: &str,
    ) -> String {
        let branch = self.next_id();
        let routes: String = route.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let body_headers = if sdp.is_empty() {
            String::new()
        } else {
            format!("Contact: <{}>\r\nContent-Type: application/sdp\r\n", self.contact)
        };
        let text = format!(
            "{method} {target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{routes}From: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\n{body_headers}Content-Length: {}\r\n\r\n{sdp}",
            self.via(&branch),
            dialog.local,
            dialog.remote,
            dialog.call_id,
            sdp.len()
        );
        self.send(&text).await;
        text
    }
}

impl Ua {
    /// As the caller after a 2xx to `sent`: ACK it along the route set (the 2xx's
    /// Record-Route reversed, §12.1.2), then hang up with a BYE; returns the BYE's answer.
    pub async fn ack_and_hang_up(&mut self, sent: &Message, ok: &Message) -> Message {
        let call = self.ack(sent, ok).await;
        self.in_dialog("BYE", &call.contact, &call.route, &call.dialog, call.cseq + 1).await;
        self.recv().await
    }

    /// As the caller after a 2xx to `sent`: ACK it along the route set (the 2xx's
    /// Record-Route reversed, §12.1.2); returns what later requests in the call need.
    pub async fn ack(&mut self, sent: &Message, ok: &Message) -> Answered {
        let mut route = all(ok, HeaderName::RecordRoute);
        route.reverse();
        let contact = header(ok, HeaderName::Contact).trim_matches(['<', '>']).to_string();
        let dialog = Dialog {
            local: header(sent, HeaderName::From),
            remote: header(ok, HeaderName::To),
            call_id: header(sent, HeaderName::CallId),
        };
        let cseq = sent.cseq().map_or(1, |(n, _)| n);
        self.in_dialog("ACK", &contact, &route, &dialog, cseq).await;
        Answered { contact, route, dialog, cseq }
    }
}

/// The caller's side of an answered call: the remote target, the route set, the dialog
/// and the INVITE's CSeq.
pub struct Answered {
    pub contact: String,
    pub route: Vec<String>,
    pub dialog: Dialog,
    pub cseq: u32,
}

/// Enough of a dialog to send requests in it: our From, their To, the Call-ID.
pub struct Dialog {
    pub local: String,
    pub remote: String,
    pub call_id: String,
}

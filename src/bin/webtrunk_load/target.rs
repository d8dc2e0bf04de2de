//! Where the clients connect and how: a ws:// or wss:// URL on loopback, TCP from a
//! rotating loopback source address, TLS that accepts any certificate, and the RFC 7118
//! upgrade with the `sip` subprotocol and small WebSocket buffers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    self,
    client::IntoClientRequest,
    http::{HeaderValue, Uri},
    protocol::WebSocketConfig,
};

/// Largest WebSocket message a client accepts: the server's default SIP message limit.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("--url {url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why one client did not get a WebSocket; [`ConnectError::kind`] names the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Tcp(io::Error),
    #[error("{0}")]
    Tls(io::Error),
    #[error("{0}")]
    WebSocket(tungstenite::Error),
}

impl ConnectError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp connect",
            Self::Tls(_) => "tls handshake",
            Self::WebSocket(_) => "websocket upgrade",
        }
    }
}

/// The server under test, resolved once for every client.
#[derive(Debug)]
pub(crate) struct Target {
    url: String,
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Local addresses to connect from, used in turn; empty lets the kernel choose.
    sources: Vec<IpAddr>,
}

impl Target {
    /// Only loopback targets are accepted: this tool opens sockets by the hundred
    /// thousand and must not be pointed at someone else's server by a typo.
    pub(crate) fn new(url: &str, source_ips: u8) -> Result<Self, TargetError> {
        let bad = |reason| TargetError::BadUrl { url: url.into(), reason };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("the scheme must be ws or wss")),
        };
        let ip = match uri.host() {
            Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| bad("the host must be a loopback IP address"))?,
            None => return Err(bad("no host")),
        };
        if !ip.is_loopback() {
            return Err(bad("only loopback targets (127.0.0.0/8, ::1) are allowed"));
        }
        let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(if secure { 443 } else { 80 }));
        let tls = if secure {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Some((Arc::new(config), ServerName::IpAddress(ip.into())))
        } else {
            None
        };
        // 127.0.0.2.. rather than 127.0.0.1: each source address has its own ~28k
        // ephemeral ports toward the one server port.
        let sources = match ip {
            IpAddr::V4(_) => (0..source_ips).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n))).collect(),
            IpAddr::V6(_) => Vec::new(),
        };
        Ok(Self { url: url.into(), addr, tls, sources })
    }

    pub(crate) fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// TCP (from source address `index` mod the pool), TLS if wss, then the upgrade.
    pub(crate) async fn connect(&self, index: usize) -> Result<WebSocketStream<Transport>, ConnectError> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        let socket = socket.map_err(ConnectError::Tcp)?;
        if let Some(&source) = self.sources.get(index % self.sources.len().max(1)) {
            socket.bind(SocketAddr::new(source, 0)).map_err(ConnectError::Tcp)?;
        }
        let tcp = socket.connect(self.addr).await.map_err(ConnectError::Tcp)?;
        tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let stream = match &self.tls {
            None => Transport::Plain(tcp),
            Some((config, name)) => {
                let tls =
                    TlsConnector::from(config.clone()).connect(name.clone(), tcp).await.map_err(ConnectError::Tls)?;
                Transport::Tls(Box::new(tls))
            }
        };
        let mut request = self.url.as_str().into_client_request().map_err(ConnectError::WebSocket)?;
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(ConnectError::WebSocket)?;
        Ok(ws)
    }
}

/// A client's byte stream: plain TCP for ws://, TLS over it for wss://. The TLS state is
/// boxed so a plain connection does not carry its size.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts any server certificate (the server under test makes itself a self-signed
/// one), but still checks that the handshake was signed with the key it presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert!(Target::new("ws://127.0.0.1:8080", 8).is_ok());
        assert!(Target::new("wss://localhost:8443/ws", 8).is_ok_and(|t| t.is_secure()));
        assert!(Target::new("ws://[::1]:8080", 8).is_ok());
        for bad in ["ws://192.0.2.1:8080", "ws://example.com", "http://127.0.0.1:8080", "127.0.0.1:8080"] {
            assert!(Target::new(bad, 8).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_addresses_rotate_from_127_0_0_2() {
        let target = Target::new("ws://127.0.0.1:8080", 3).unwrap();
        let sources: Vec<String> = target.sources.iter().map(ToString::to_string).collect();
        assert_eq!(sources, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    }
}

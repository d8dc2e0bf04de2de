//! UDP: one socket per listen address; every datagram is one message (RFC 3261 §18.1.1).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Event, Shared, Source, TransportKind};

/// Largest datagram we read: the IPv4 UDP payload limit. Bigger SIP messages cannot
/// arrive over UDP at all; `max_message_size` is enforced by the parser above.
const MAX_DATAGRAM: usize = 65_507;

/// Receive buffer asked of the kernel: a burst of datagrams waits here while the driver
/// is busy instead of being dropped (the Linux default, about 208 KiB, lost hundreds a
/// second at 10,000 REGISTERs/s). The kernel caps it at net.core.rmem_max.
const RECEIVE_BUFFER: usize = 8 << 20;

pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::debug!(%addr, error = %e, "cannot enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(super) async fn receive(socket: Arc<UdpSocket>, shared: Shared) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket has no local address");
            return;
        }
    };
    let mut shutdown = shared.shutdown.clone();
    // One receive buffer, reused; each message gets a copy of just its bytes, so a small
    // datagram never pins a 64 KiB allocation while the engine holds it.
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.changed() => return,
        };
        let (len, remote) = match received {
            Ok(pair) => pair,
            // ICMP port unreachable from an earlier send surfaces here on some systems;
            // it says nothing about this socket.
            Err(e) => {
                tracing::debug!(%local, error = %e, "UDP receive error");
                continue;
            }
        };
        let datagram = &buf[..len];
        if is_keepalive(datagram) {
            continue;
        }
        let source = Source { kind: TransportKind::Udp, local, remote, flow: None };
        let bytes = Bytes::copy_from_slice(datagram);
        if shared.events.send(Event::Received { source, bytes }).await.is_err() {
            return;
        }
    }
}

/// A datagram of only line ends or NULs: the keep-alive some phones send over UDP.
fn is_keepalive(bytes: &[u8]) -> bool {
    bytes.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0)
}

//! UDP: one socket per listen address; every datagram is one message (RFC 3261 §18.1.1).

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Source, TransportKind};

/// Largest datagram we read: the IPv4 UDP payload limit. Bigger SIP messages cannot
/// arrive over UDP at all; `max_message_size` is enforced by the parser above.
pub const MAX_DATAGRAM: usize = 65_507;

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

/// One datagram already waiting on `socket` (bound at `local`), without waiting: the driver
/// reads UDP itself, in batches, so a datagram costs no task switch on its way to the
/// engine. `Ok(None)` for a keep-alive; `WouldBlock` when nothing is left.
pub fn receive_ready(
    socket: &UdpSocket,
    local: SocketAddr,
    buf: &mut [u8],
) -> std::io::Result<Option<(Source, Bytes)>> {
    let (len, remote) = socket.try_recv_from(buf)?;
    let datagram = &buf[..len];
    if is_keepalive(datagram) {
        return Ok(None);
    }
    let source = Source { kind: TransportKind::Udp, local, remote, flow: None };
    // Each message gets a copy of just its bytes, so a small datagram never pins the
    // 64 KiB buffer while the engine holds it.
    Ok(Some((source, Bytes::copy_from_slice(datagram))))
}

/// A datagram of only line ends or NULs: the keep-alive some phones send over UDP.
fn is_keepalive(bytes: &[u8]) -> bool {
    bytes.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0)
}

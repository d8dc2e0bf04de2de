//! UDP: one socket per listen address; every datagram is one message (RFC 3261 §18.1.1).

use std::net::SocketAddr;

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
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

/// Reads the datagrams waiting on a UDP socket, a batch per recvmmsg(2), without waiting.
/// The driver reads UDP itself, so a datagram costs no task switch on its way to the
/// engine. A batch that comes back short shows the socket drained, and its readiness is
/// cleared then: reading one datagram at a time took a second, empty read (EAGAIN) on
/// every wake-up to learn that, about one more system call per datagram.
#[derive(Debug)]
pub struct DatagramReader {
    buffers: Vec<Vec<u8>>,
    /// Of the last read: which buffer, how many bytes, from whom.
    received: Vec<(usize, usize, SocketAddr)>,
}

impl DatagramReader {
    /// Room for `batch` datagrams of the largest size. A SIP datagram writes the first
    /// page or two of its buffer; the rest is address space.
    pub fn new(batch: usize) -> Self {
        let batch = batch.max(1);
        Self { buffers: (0..batch).map(|_| vec![0u8; MAX_DATAGRAM]).collect(), received: Vec::with_capacity(batch) }
    }

    /// Reads what waits on `socket`, up to a batch. `Ok(true)`: the batch was full and
    /// more may wait. `Ok(false)`: the socket is drained, and the next wait for it lasts
    /// until a new datagram comes. The datagrams read are then in [`Self::messages`].
    pub fn read(&mut self, socket: &UdpSocket) -> std::io::Result<bool> {
        let Self { buffers, received } = self;
        received.clear();
        let batch = buffers.len();
        let outcome = socket.try_io(Interest::READABLE, || {
            // Made for each read: the headers hold raw pointers, so keeping them would
            // make the driver's future not Send. A few kilobytes to set, against a
            // system call saved.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                buffers.iter_mut().map(|b| [IoSliceMut::new(b.as_mut_slice())]).collect();
            let results = recvmmsg(socket.as_raw_fd(), &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(std::io::Error::from)?;
            let mut count = 0;
            for (index, message) in results.enumerate() {
                count += 1;
                // A datagram longer than the buffer was cut: parsing the rest would
                // misread it.
                if message.flags.contains(MsgFlags::MSG_TRUNC) {
                    tracing::debug!(bytes = message.bytes, "UDP datagram too long; dropped");
                    continue;
                }
                if let Some(remote) = message.address.as_ref().and_then(socket_addr) {
                    received.push((index, message.bytes, remote));
                }
            }
            // Fewer than asked for: nothing is left. Saying so as WouldBlock is what
            // makes tokio clear the readiness; the datagrams read are kept all the same.
            if count < batch { Err(std::io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
        });
        match outcome {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The messages of the last read, for a socket bound at `local`; keep-alives left
    /// out. Each gets a copy of just its bytes, so a small datagram never pins a 64 KiB
    /// buffer while the engine holds it.
    pub fn messages(&self, local: SocketAddr) -> impl Iterator<Item = (Source, Bytes)> + '_ {
        self.received.iter().filter_map(move |&(index, len, remote)| {
            let datagram = self.buffers.get(index)?.get(..len)?;
            if is_keepalive(datagram) {
                return None;
            }
            let source = Source { kind: TransportKind::Udp, local, remote, flow: None };
            Some((source, Bytes::copy_from_slice(datagram)))
        })
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// A datagram of only line ends or NULs: the keep-alive some phones send over UDP.
fn is_keepalive(bytes: &[u8]) -> bool {
    bytes.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    async fn pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let server = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let local = server.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (server, client, local)
    }

    fn bodies(reader: &DatagramReader, local: SocketAddr) -> Vec<String> {
        reader.messages(local).map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).collect()
    }

    #[tokio::test]
    async fn a_short_batch_drains_the_socket_and_the_next_wait_is_for_new_datagrams() {
        let (server, client, local) = pair().await;
        for text in ["OPTIONS one", "\r\n\r\n", "OPTIONS two"] {
            client.send_to(text.as_bytes(), local).await.unwrap();
        }
        let mut reader = DatagramReader::new(8);
        server.readable().await.unwrap();
        let mut seen = Vec::new();
        // Loopback delivers at once, but the test does not lean on it.
        while seen.len() < 2 {
            assert!(!reader.read(&server).unwrap(), "a batch of 8 is not filled by 3");
            seen.extend(bodies(&reader, local));
            if seen.len() < 2 {
                server.readable().await.unwrap();
            }
        }
        assert_eq!(seen, ["OPTIONS one", "OPTIONS two"], "the keep-alive is left out");
        let (source, _) = reader.messages(local).next().unwrap();
        assert_eq!(
            (source.kind, source.local, source.remote),
            (TransportKind::Udp, local, client.local_addr().unwrap())
        );
        // Drained: no wake-up until something new comes, and then one.
        let idle = tokio::time::timeout(Duration::from_millis(50), server.readable()).await;
        assert!(idle.is_err(), "readiness was cleared");
        client.send_to(b"OPTIONS three", local).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.readable()).await.unwrap().unwrap();
        assert!(!reader.read(&server).unwrap());
        assert_eq!(bodies(&reader, local), ["OPTIONS three"]);
    }

    #[tokio::test]
    async fn a_full_batch_says_more_may_wait() {
        let (server, client, local) = pair().await;
        for i in 0..3 {
            client.send_to(format!("OPTIONS {i}").as_bytes(), local).await.unwrap();
        }
        let mut reader = DatagramReader::new(2);
        let mut seen = Vec::new();
        let mut full = 0;
        while seen.len() < 3 {
            server.readable().await.unwrap();
            if reader.read(&server).unwrap() {
                full += 1;
            }
            seen.extend(bodies(&reader, local));
        }
        assert_eq!(seen, ["OPTIONS 0", "OPTIONS 1", "OPTIONS 2"]);
        assert!(full >= 1, "two of three fill a batch of two");
    }
}

//! L6: the async loop around the [`Engine`]. It feeds transport events and timer expiries
//! in, and carries transmits out to flows and UDP sockets. It decides nothing: if a
//! change to SIP behaviour edits this file, it is in the wrong place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::dns::{Resolver, SipTransport};
use crate::engine::{Engine, Input, ResolveRequest, ResolvedTargets};
use crate::transport::{DatagramReader, Destination, Event, FlowId, FlowSender, Outbound, Transmit, TransportKind};

/// What the driver reads from and writes to.
#[derive(Debug)]
pub struct Transports {
    pub events: mpsc::Receiver<Event>,
    pub udp_sockets: Vec<Arc<UdpSocket>>,
    /// Connections we dial toward trunks.
    pub outbound: Outbound,
    /// Our socket toward rtpengine's ng port, when media is bridged.
    pub media_socket: Option<Arc<UdpSocket>>,
    /// Where the engine's binding snapshots are written; `None` keeps them in memory only.
    pub bindings_file: Option<PathBuf>,
    /// Resolves trunk host names for the engine; `None` answers every question with an
    /// error (no DNS configuration could be read).
    pub resolver: Option<Arc<Resolver>>,
}

/// A DNS answer on its way back from a lookup task.
type Answer = (ResolveRequest, Result<crate::dns::Resolved, String>);

/// Runs until `shutdown` turns true or every transport is gone; returns the engine so
/// its final state can be read.
pub async fn run(mut engine: Engine, mut transports: Transports, mut shutdown: watch::Receiver<bool>) -> Engine {
    let udp: HashMap<SocketAddr, Arc<UdpSocket>> =
        transports.udp_sockets.iter().filter_map(|s| Some((s.local_addr().ok()?, s.clone()))).collect();
    let mut flows: HashMap<FlowId, FlowSender> = HashMap::new();
    // One writer, so snapshots land in the order they were taken.
    let (snapshots, snapshot_rx) = mpsc::channel::<Vec<u8>>(4);
    let writer = transports.bindings_file.clone().map(|path| tokio::spawn(write_snapshots(path, snapshot_rx)));
    let media_socket = transports.media_socket.clone();
    let udp_list: Vec<(Arc<UdpSocket>, SocketAddr)> =
        transports.udp_sockets.iter().filter_map(|s| Some((s.clone(), s.local_addr().ok()?))).collect();
    let mut datagrams = DatagramReader::new(UDP_BATCH);
    let mut media_buf = vec![0u8; 65_536];
    // Lookups run as their own tasks; answers come back here. The loop keeps a sender, so
    // the channel never closes under it.
    let (answers, mut answer_rx) = mpsc::unbounded_channel::<Answer>();
    // One timer and one shutdown watch for the whole loop, not a new one per wake-up: a
    // new timer registered in the runtime's wheel and left it again on every pass, though
    // the engine's next deadline rarely moves between two datagrams. The timer is moved
    // only when that deadline does, and polled only while one is set.
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(clock::now()));
    let stopping = shutdown.changed();
    tokio::pin!(timer, stopping);
    let mut armed: Option<std::time::Instant> = None;
    let grid = TimerGrid::new(clock::now());
    loop {
        while let Some(request) = engine.poll_resolve() {
            spawn_lookup(request, transports.resolver.clone(), answers.clone());
        }
        let deadline = engine.poll_timeout();
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(tokio::time::Instant::from_std(grid.wake_at(at)));
            }
            armed = deadline;
        }
        tokio::select! {
            event = transports.events.recv() => {
                let Some(event) = event else { break };
                let input = match event {
                    Event::Received { source, bytes } => Input::Received { source, bytes },
                    Event::FlowOpened { flow, kind, local, remote, sender, dialled } => {
                        if dialled {
                            transports.outbound.opened(flow, kind, remote, &sender);
                        }
                        flows.insert(flow, sender);
                        Input::FlowOpened { flow, kind, local, remote }
                    }
                    Event::FlowClosed { flow, .. } => {
                        flows.remove(&flow);
                        transports.outbound.closed(flow);
                        Input::FlowClosed { flow }
                    }
                    Event::DialFailed { kind, remote, .. } => {
                        transports.outbound.failed(kind, remote);
                        Input::Unreachable { destination: Destination::Connection { kind, remote } }
                    }
                };
                engine.handle_input(clock::now(), input);
            }
            Some((request, result)) = answer_rx.recv() => {
                let result = result.map(|resolved| {
                    // The certificate of a TLS trunk reached by a resolved address must name
                    // the host we were given, not the address (RFC 5922 §4).
                    for target in resolved.targets.iter().filter(|t| t.transport == SipTransport::Tls) {
                        transports.outbound.set_name(target.addr, request.host.clone());
                    }
                    ResolvedTargets {
                        addresses: resolved
                            .targets
                            .iter()
                            .map(|t| (TransportKind::from(t.transport), t.addr, t.priority, t.weight))
                            .collect(),
                        ttl: resolved.ttl,
                    }
                });
                engine.handle_input(clock::now(), Input::Resolved { request, result });
            }
            () = &mut timer, if armed.is_some() => {
                // Fired: whatever deadline comes next sets it again, even the same one.
                armed = None;
                engine.handle_timeout(clock::now());
            }
            ready = udp_readable(&udp_list) => {
                let (socket, local) = &udp_list[ready];
                let now = clock::now();
                // Everything already queued, up to a few batches: one wake-up for a burst.
                for _ in 0..UDP_BATCHES {
                    match datagrams.read(socket) {
                        Ok(more) => {
                            for (source, bytes) in datagrams.messages(*local) {
                                engine.handle_input(now, Input::Received { source, bytes });
                            }
                            if !more {
                                break;
                            }
                        }
                        // ICMP port unreachable from an earlier send surfaces here on some
                        // systems; it says nothing about this socket.
                        Err(e) => {
                            tracing::debug!(%local, error = %e, "UDP receive error");
                            break;
                        }
                    }
                }
            }
            received = recv_media(media_socket.as_deref(), &mut media_buf) => {
                if let Some((n, from)) = received {
                    let bytes = bytes::Bytes::copy_from_slice(&media_buf[..n]);
                    engine.handle_input(clock::now(), Input::MediaReceived { from, bytes });
                }
            }
            _ = &mut stopping => break,
        }
        while let Some(transmit) = engine.poll_transmit() {
            deliver(transmit, &flows, &udp, &mut transports.outbound).await;
        }
        if let Some(socket) = &media_socket {
            while let Some((to, bytes)) = engine.poll_media_transmit() {
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, error = %e, "cannot send to rtpengine");
                }
            }
        }
        if let Some(snapshot) = engine.poll_snapshot()
            && writer.is_some()
        {
            // A full queue means a write is slow; the next snapshot supersedes this one.
            let _ = snapshots.try_send(snapshot);
        }
    }
    drop(snapshots);
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    engine
}

/// Datagrams read from UDP per system call, and batches per wake-up before the other
/// inputs get their turn.
const UDP_BATCH: usize = 16;
const UDP_BATCHES: usize = 4;

/// The engine's deadlines are met on a grid of 20 ms ticks, never early. Most of them
/// are cleanup (Timers I, J, K, L and M end a call's transactions 5 and 32 s after it
/// ended), and each call set its own, a few milliseconds from the last call's: at 200
/// calls/s the server woke about 200 times a second for them alone, a context switch
/// each, after the load had stopped. On the grid, deadlines that fall in one tick share
/// a wake-up, so there are at most 50 a second, and a retransmission (500 ms at first) is
/// at most 20 ms late, as with Kamailio's timer ticks of 62.5 ms.
const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
struct TimerGrid {
    origin: std::time::Instant,
}

impl TimerGrid {
    fn new(origin: std::time::Instant) -> Self {
        Self { origin }
    }

    /// The first tick at or after `deadline`.
    fn wake_at(self, deadline: std::time::Instant) -> std::time::Instant {
        let Some(since) = deadline.checked_duration_since(self.origin) else { return deadline };
        let tick = TIMER_TICK.as_nanos();
        let ticks = since.as_nanos().div_ceil(tick);
        let Ok(nanos) = u64::try_from(ticks.saturating_mul(tick)) else { return deadline };
        self.origin.checked_add(std::time::Duration::from_nanos(nanos)).unwrap_or(deadline)
    }
}

/// The index of a UDP socket with datagrams waiting; never ready without sockets.
async fn udp_readable(sockets: &[(Arc<UdpSocket>, SocketAddr)]) -> usize {
    match sockets {
        [] => std::future::pending().await,
        [(one, _)] => {
            // A readiness error is the socket's; the next read reports it.
            let _ = one.readable().await;
            0
        }
        many => {
            let waits = many.iter().map(|(s, _)| Box::pin(s.readable()));
            let (_, index, _) = futures_util::future::select_all(waits).await;
            index
        }
    }
}

/// The next datagram from rtpengine; never ready without a socket.
async fn recv_media(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves one trunk host in its own task and sends the answer back to the loop.
fn spawn_lookup(request: ResolveRequest, resolver: Option<Arc<Resolver>>, answers: mpsc::UnboundedSender<Answer>) {
    tokio::spawn(async move {
        let result = match resolver {
            Some(resolver) => {
                let transport = match request.transport {
                    TransportKind::Tcp => Some(SipTransport::Tcp),
                    TransportKind::Tls => Some(SipTransport::Tls),
                    TransportKind::Udp => Some(SipTransport::Udp),
                    // Trunks are not dialled over WebSocket: let NAPTR choose.
                    TransportKind::Ws | TransportKind::Wss => None,
                };
                resolver.resolve(&request.host, request.port, transport).await.map_err(|e| e.to_string())
            }
            None => Err("no DNS resolver (the system DNS configuration could not be read)".to_owned()),
        };
        // The loop is gone only at shutdown, when nobody needs the answer.
        let _ = answers.send((request, result));
    });
}

async fn write_snapshots(path: PathBuf, mut snapshots: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = snapshots.recv().await {
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "cannot write bindings"),
            Err(e) => tracing::warn!(error = %e, "bindings writer failed"),
        }
    }
}

/// Write to a temporary file and rename it over the old one, so a crash mid-write leaves
/// the previous snapshot, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

async fn deliver(
    transmit: Transmit,
    flows: &HashMap<FlowId, FlowSender>,
    udp: &HashMap<SocketAddr, Arc<UdpSocket>>,
    outbound: &mut Outbound,
) {
    match transmit.destination {
        Destination::Connection { kind, remote } => outbound.send(kind, remote, transmit.bytes),
        Destination::Flow(flow) => {
            let sent = flows.get(&flow).is_some_and(|sender| sender.send(transmit.bytes));
            if !sent {
                tracing::debug!(%flow, "flow gone; message dropped");
            }
        }
        Destination::Datagram { local, remote } => {
            let Some(socket) = udp.get(&local) else {
                tracing::warn!(%local, "no UDP socket bound at this address");
                return;
            };
            let result = match socket.try_send_to(&transmit.bytes, remote) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => socket.send_to(&transmit.bytes, remote).await,
                other => other,
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "UDP send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_wake_on_the_next_tick_never_before_and_share_it_within_one() {
        let origin = clock::now();
        let grid = TimerGrid::new(origin);
        let ms = Duration::from_millis;
        assert_eq!(grid.wake_at(origin), origin);
        assert_eq!(grid.wake_at(origin + ms(20)), origin + ms(20), "on a tick: no later");
        assert_eq!(grid.wake_at(origin + Duration::from_nanos(1)), origin + ms(20));
        assert_eq!(grid.wake_at(origin + ms(21)), origin + ms(40));
        // Three calls' Timer J, a few milliseconds apart: one wake-up.
        let shared: Vec<_> = [32_003, 32_009, 32_019].map(|t| grid.wake_at(origin + ms(t))).to_vec();
        assert_eq!(shared, vec![origin + ms(32_020); 3]);
        assert_eq!(grid.wake_at(origin + ms(32_021)), origin + ms(32_040));
        // A deadline from before the loop started is due at once, as it was.
        if let Some(before) = origin.checked_sub(ms(5)) {
            assert_eq!(grid.wake_at(before), before);
        }
    }
}

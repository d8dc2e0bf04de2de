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
use crate::engine::{Engine, Input};
use crate::transport::{Destination, Event, FlowId, FlowSender, Outbound, Transmit};

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
}

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
    let mut media_buf = vec![0u8; 65_536];
    loop {
        let deadline = engine.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
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
            () = timer => engine.handle_timeout(clock::now()),
            received = recv_media(media_socket.as_deref(), &mut media_buf) => {
                if let Some((n, from)) = received {
                    let bytes = bytes::Bytes::copy_from_slice(&media_buf[..n]);
                    engine.handle_input(clock::now(), Input::MediaReceived { from, bytes });
                }
            }
            _ = shutdown.changed() => break,
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

/// The next datagram from rtpengine; never ready without a socket.
async fn recv_media(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
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

//! L6: the async loop around the [`Engine`]. It feeds transport events and timer expiries
//! in, and carries transmits out to flows and UDP sockets. It decides nothing: if a
//! change to SIP behaviour edits this file, it is in the wrong place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::engine::{Engine, Input};
use crate::transport::{Destination, Event, FlowId, FlowSender, Transmit};

/// What the driver reads from and writes to.
#[derive(Debug)]
pub struct Transports {
    pub events: mpsc::Receiver<Event>,
    pub udp_sockets: Vec<Arc<UdpSocket>>,
}

/// Runs until `shutdown` turns true or every transport is gone; returns the engine so
/// its final state can be read.
pub async fn run(mut engine: Engine, mut transports: Transports, mut shutdown: watch::Receiver<bool>) -> Engine {
    let udp: HashMap<SocketAddr, Arc<UdpSocket>> =
        transports.udp_sockets.iter().filter_map(|s| Some((s.local_addr().ok()?, s.clone()))).collect();
    let mut flows: HashMap<FlowId, FlowSender> = HashMap::new();
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
                    Event::FlowOpened { flow, kind, remote, sender, .. } => {
                        flows.insert(flow, sender);
                        Input::FlowOpened { flow, kind, remote }
                    }
                    Event::FlowClosed { flow, .. } => {
                        flows.remove(&flow);
                        Input::FlowClosed { flow }
                    }
                };
                engine.handle_input(clock::now(), input);
            }
            () = timer => engine.handle_timeout(clock::now()),
            _ = shutdown.changed() => break,
        }
        while let Some(transmit) = engine.poll_transmit() {
            deliver(transmit, &flows, &udp).await;
        }
    }
    engine
}

async fn deliver(transmit: Transmit, flows: &HashMap<FlowId, FlowSender>, udp: &HashMap<SocketAddr, Arc<UdpSocket>>) {
    match transmit.destination {
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

//! The swarm task: the one owner of the libp2p `Swarm`.
//!
//! It reads commands from the bounded channel of the [`Net`] handles, turns swarm events into
//! [`NetEvent`]s on the bounded event channel, and re-dials bootstrap peers on a timer. It never
//! waits on the node: when the event channel is full, events are dropped (a received transaction
//! is then reported `Ignore`, so it is neither forwarded nor penalised), because blocking here
//! would stall every connection and could deadlock a node that is waiting on a command reply.
//!
//! Rpc: each inbound request handed to the node gets a [`RequestId`](crate::RequestId) mapped to
//! libp2p's response channel until the node answers or the request expires; each of our requests
//! has a oneshot reply, answered by libp2p's response or failure event (it reports every request
//! exactly once, at the latest after the dial timeout plus `rpc_timeout_ms`).
//!
//! # Files
//! - `commands.rs`: the `Command`s the `Net` handles send, and how each is carried out.
//! - `dialing.rs`: dials the node asks for, answered once they connect or fail.
//! - `requests.rs`: the rpc tables: inbound requests awaiting the node's answer, and our requests
//!   awaiting a response.
//! - `discovery.rs`: bootstrap re-dials, Kademlia lookups, and the peers identify, Kademlia and
//!   mDNS report.
//! - `gossip.rs`: received gossip messages, handed to the node or judged here.
//!
//! This file holds the task itself: its state, `spawn`, the select loop, listeners, connection
//! events and the dispatch of behaviour events.

mod commands;
mod dialing;
mod discovery;
mod gossip;
mod requests;

pub(crate) use commands::Command;

use std::collections::HashMap;
use std::num::NonZeroU8;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::gossipsub;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{InboundRequestId, OutboundRequestId};
use libp2p::swarm::{ConnectionDenied, ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{identify, identity, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{MeshBehaviour, MeshBehaviourEvent, Parts};
use crate::bootstrap::Bootstrap;
use crate::gate::{NotMember, PeerDenied};
use crate::{Net, NetConfig, NetError, NetEvent};

use discovery::DISCOVERY_INTERVAL_MIN;
use requests::InboundRequest;

/// How long `spawn` waits for every listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often bootstrap entries are checked for a due re-dial.
const BOOTSTRAP_TICK: Duration = Duration::from_millis(250);
/// A connection with no open stream (not in our gossip mesh, no DHT query) closes after this.
/// Long, so the mesh does not churn; the connection limits bound how many stay open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
/// Addresses of one peer dialled at once. One: with `max_connections_per_peer = 1`, dialling a
/// peer's TCP and QUIC addresses together can leave the dialer keeping one connection while the
/// listener kept the other and refused the first, closing both. Each address gets the
/// transport's connection timeout in turn.
const DIAL_CONCURRENCY: NonZeroU8 = NonZeroU8::MIN;
/// Listen addresses of one peer kept from its identify report (for `NetEvent::Identified` and
/// `Net::peer_addrs`), and taken from one `Net::add_addresses` call.
const MAX_LISTEN_ADDRS_PER_PEER: usize = 16;

type StartupReply = oneshot::Sender<Result<(), NetError>>;
type DialReply = oneshot::Sender<Result<PeerId, NetError>>;
type RpcReply = oneshot::Sender<Result<Vec<u8>, NetError>>;

struct Task {
    swarm: Swarm<MeshBehaviour>,
    topic: gossipsub::IdentTopic,
    events: mpsc::Sender<NetEvent>,
    /// Events dropped since the event channel was last found with room.
    events_dropped: u64,
    bootstrap: Bootstrap,
    /// Dials started by `Net::dial` and `Net::dial_peer`, awaiting their outcome.
    dials: HashMap<ConnectionId, (Multiaddr, DialReply)>,
    /// Callers of a dial by peer id that found a dial to that peer already under way (we dial
    /// each peer once); answered when it connects or its dial fails.
    dial_waiters: HashMap<PeerId, Vec<(Multiaddr, DialReply)>>,
    /// Bounds `dials` and `dial_waiters` together.
    max_dials: usize,
    /// Inbound rpc requests handed to the node and not answered yet, by our id. At most
    /// `rpc_max_pending_inbound`.
    inbound: HashMap<u64, InboundRequest>,
    /// The same requests by libp2p's id, to forget those that expire.
    inbound_ids: HashMap<InboundRequestId, u64>,
    next_request_id: u64,
    rpc_max_pending_inbound: usize,
    /// Our rpc requests awaiting a response. At most `rpc_max_pending_outbound`.
    outbound: HashMap<OutboundRequestId, (PeerId, RpcReply)>,
    rpc_max_pending_outbound: usize,
    /// The last dial error of a peer that requests in `outbound` wait on, to say why it failed.
    dial_errors: HashMap<PeerId, String>,
    /// Listen addresses from identify, per connected peer: at most `max_connections` entries of
    /// `MAX_LISTEN_ADDRS_PER_PEER` addresses, removed on disconnect.
    peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Listeners that have not reported an address yet, and whom to tell when all have.
    startup: Option<(
        HashMap<libp2p::core::transport::ListenerId, Multiaddr>,
        StartupReply,
    )>,
    stop: bool,
    target_peers: usize,
    discovery_interval: Duration,
    next_discovery: Instant,
    gossip_max_transmit_size: usize,
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

/// The peer the gate refused (denied, or not a member), if the gate was the cause.
fn denied_peer(cause: &ConnectionDenied) -> Option<PeerId> {
    cause
        .downcast_ref::<PeerDenied>()
        .map(|d| d.peer)
        .or_else(|| cause.downcast_ref::<NotMember>().map(|d| d.peer))
}

pub(crate) async fn spawn(
    key: identity::Keypair,
    config: NetConfig,
) -> Result<(Net, mpsc::Receiver<NetEvent>), NetError> {
    config.validate()?;
    let parts = Parts::new(&config)?;
    let topic = parts.topic.clone();
    let local = key.public().to_peer_id();

    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| parts.build(key))
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_dial_concurrency_factor(DIAL_CONCURRENCY)
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();

    let mut listeners = HashMap::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listeners.insert(id, addr.clone());
    }

    let bootstrap = Bootstrap::new(&config.bootstrap, local, Instant::now());
    for (peer, addr) in bootstrap.known_peers() {
        swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, without_p2p(addr));
    }

    let (commands_tx, commands_rx) = mpsc::channel(config.command_queue);
    let (events_tx, events_rx) = mpsc::channel(config.event_queue);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = Task {
        swarm,
        topic,
        events: events_tx,
        events_dropped: 0,
        bootstrap,
        dials: HashMap::new(),
        dial_waiters: HashMap::new(),
        max_dials: config.max_pending as usize,
        inbound: HashMap::new(),
        inbound_ids: HashMap::new(),
        next_request_id: 0,
        rpc_max_pending_inbound: config.rpc_max_pending_inbound,
        outbound: HashMap::new(),
        rpc_max_pending_outbound: config.rpc_max_pending_outbound,
        dial_errors: HashMap::new(),
        peer_addrs: HashMap::new(),
        startup: Some((listeners, ready_tx)),
        stop: false,
        target_peers: config.target_peers as usize,
        discovery_interval: DISCOVERY_INTERVAL_MIN,
        next_discovery: Instant::now() + DISCOVERY_INTERVAL_MIN,
        gossip_max_transmit_size: config.gossip_max_transmit_size,
    };
    debug!(peer = %local, mdns = config.mdns, subscribe_tx = config.subscribe_tx, "network starting");
    tokio::spawn(task.run(commands_rx));

    let net = Net {
        commands: commands_tx,
        local_peer_id: local,
        gossip_max_transmit_size: config.gossip_max_transmit_size,
        rpc_max_request_bytes: config.rpc_max_request_bytes,
    };
    match tokio::time::timeout(LISTEN_TIMEOUT, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok((net, events_rx)),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(NetError::Closed),
        Err(_) => {
            net.shutdown().await;
            Err(NetError::InvalidConfig(format!(
                "listeners reported no address within {}s",
                LISTEN_TIMEOUT.as_secs()
            )))
        }
    }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(BOOTSTRAP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.check_startup();
        let mut shutdown = None;
        while !self.stop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(command) => {
                        if let Some(reply) = self.on_command(command) {
                            shutdown = Some(reply);
                            break;
                        }
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => {
                    self.redial_bootstrap();
                    self.discover();
                }
            }
        }
        let local = *self.swarm.local_peer_id();
        // Dropping the swarm closes every connection and listener.
        drop(self);
        info!(peer = %local, "network stopped");
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn check_startup(&mut self) {
        if let Some((pending, _)) = &self.startup {
            if pending.is_empty() {
                if let Some((_, reply)) = self.startup.take() {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    fn fail_startup(&mut self, listener: libp2p::core::transport::ListenerId, reason: String) {
        let Some((pending, _)) = &self.startup else {
            return;
        };
        let Some(addr) = pending.get(&listener).cloned() else {
            return;
        };
        if let Some((_, reply)) = self.startup.take() {
            let _ = reply.send(Err(NetError::Listen { addr, reason }));
        }
        self.stop = true;
    }

    /// Sends an event to the node without ever waiting. Returns whether it was delivered.
    fn emit(&mut self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => {
                if self.events_dropped > 0 {
                    info!(dropped = self.events_dropped, "event queue has room again");
                    self.events_dropped = 0;
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                if self.events_dropped == 0 {
                    warn!(
                        capacity = self.events.max_capacity(),
                        "event queue full: dropping network events"
                    );
                }
                self.events_dropped += 1;
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                debug!(address = %address, "listening");
                if let Some((pending, _)) = &mut self.startup {
                    pending.remove(&listener_id);
                }
                self.check_startup();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = match reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                warn!(reason = %reason, "listener closed");
                self.fail_startup(listener_id, reason);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(error = %error, "listener error");
                self.fail_startup(listener_id, error.to_string());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.bootstrap
                    .established(connection_id, peer_id, Instant::now());
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                for (_, reply) in self.dial_waiters.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
                self.dial_errors.remove(&peer_id);
                debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connection established");
                if num_established.get() == 1 {
                    self.emit(NetEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                if num_established == 0 {
                    self.peer_addrs.remove(&peer_id);
                    self.bootstrap.disconnected(peer_id, Instant::now());
                    self.emit(NetEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.bootstrap.dial_failed(connection_id, peer_id);
                let refused = match &error {
                    DialError::Denied { cause } => denied_peer(cause),
                    _ => None,
                };
                debug!(peer = ?peer_id, error = %error, "outbound connection failed");
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
                if let Some(peer) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    for (addr, reply) in self.dial_waiters.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NetError::Dial {
                            addr,
                            reason: error.to_string(),
                        }));
                    }
                    if self.outbound.values().any(|(p, _)| *p == peer) {
                        self.dial_errors.insert(peer, error.to_string());
                    }
                }
                if let Some(peer) = refused {
                    self.emit(NetEvent::Refused(peer));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if let ListenError::Denied { cause } = &error {
                    if let Some(peer) = denied_peer(cause) {
                        debug!(peer = %peer, "inbound connection of a denied peer or non-member refused");
                        self.emit(NetEvent::Refused(peer));
                        return;
                    }
                }
                // Garbage, scanners, failed handshakes and limits end here: hostile input is
                // logged per connection at debug level only.
                debug!(address = %send_back_addr, error = %error, "inbound connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: MeshBehaviourEvent) {
        match event {
            MeshBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            MeshBehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer { peer_id, .. }) => {
                debug!(peer = %peer_id, "peer too slow to take our gossip");
            }
            MeshBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic == self.topic.hash() =>
            {
                self.emit(NetEvent::TxSubscriber(peer_id));
            }
            MeshBehaviourEvent::Gossipsub(_) => {}
            MeshBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            MeshBehaviourEvent::Identify(_) => {}
            // Answering pings is all it is for; the round trips are not used.
            MeshBehaviourEvent::Ping(_) => {}
            MeshBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            }) => self.on_kad_discovered(peer, addresses),
            MeshBehaviourEvent::Kad(_) => {}
            MeshBehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            MeshBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                self.on_mdns_discovered(found)
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            MeshBehaviourEvent::Gate(never) | MeshBehaviourEvent::Limits(never) => match never {},
        }
    }
}

//! The swarm task: the one owner of the libp2p `Swarm`.
//!
//! It reads commands from the bounded channel of the [`Net`] handles, turns swarm events into
//! [`NetEvent`]s on the bounded event channel, and re-dials bootstrap peers on a timer. It never
//! waits on the node: when the event channel is full, events are dropped (a received transaction
//! is then reported `Ignore`, so it is neither forwarded nor penalised), because blocking here
//! would stall every connection and could deadlock a node that is waiting on a command reply.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionDenied, ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{identify, identity, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{MeshBehaviour, MeshBehaviourEvent, Parts, IDENTIFY_PROTOCOL_VERSION};
use crate::bootstrap::{peer_of, Bootstrap};
use crate::gate::PeerDenied;
use crate::{Net, NetConfig, NetError, NetEvent, TxMessageId, TxVerdict};

/// How long `spawn` waits for every listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often bootstrap entries are checked for a due re-dial.
const BOOTSTRAP_TICK: Duration = Duration::from_millis(250);
/// A connection with no open stream (not in our gossip mesh, no DHT query) closes after this.
/// Long, so the mesh does not churn; the connection limits bound how many stay open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
/// While below `target_peers`, a Kademlia bootstrap (a lookup of our own id, which finds peers
/// near us) runs after this delay, doubling up to `DISCOVERY_INTERVAL_MAX`; a newly found peer
/// resets it. Kademlia's own periodic bootstrap (every 5 minutes) covers the rest.
const DISCOVERY_INTERVAL_MIN: Duration = Duration::from_secs(1);
const DISCOVERY_INTERVAL_MAX: Duration = Duration::from_secs(30);
/// Addresses of one peer taken from its identify report; the rest is ignored.
const MAX_ADDRS_PER_PEER: usize = 8;

pub(crate) enum Command {
    PublishTx {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    ReportTx {
        id: TxMessageId,
        verdict: TxVerdict,
    },
    Deny {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Allow {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

type StartupReply = oneshot::Sender<Result<(), NetError>>;

struct Task {
    swarm: Swarm<MeshBehaviour>,
    topic: gossipsub::IdentTopic,
    events: mpsc::Sender<NetEvent>,
    /// Events dropped since the event channel was last found with room.
    events_dropped: u64,
    bootstrap: Bootstrap,
    /// Dials started by `Net::dial`, awaiting their outcome. At most `max_dials`.
    dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, NetError>>)>,
    max_dials: usize,
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

fn denied_peer(cause: &ConnectionDenied) -> Option<PeerId> {
    cause.downcast_ref::<PeerDenied>().map(|d| d.peer)
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
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
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
        max_dials: config.max_pending as usize,
        startup: Some((listeners, ready_tx)),
        stop: false,
        target_peers: config.target_peers as usize,
        discovery_interval: DISCOVERY_INTERVAL_MIN,
        next_discovery: Instant::now() + DISCOVERY_INTERVAL_MIN,
        gossip_max_transmit_size: config.gossip_max_transmit_size,
    };
    info!(peer = %local, mdns = config.mdns, "network starting");
    tokio::spawn(task.run(commands_rx));

    let net = Net {
        commands: commands_tx,
        local_peer_id: local,
        gossip_max_transmit_size: config.gossip_max_transmit_size,
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

    /// Handles a command; returns the reply of a shutdown request.
    fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::PublishTx { bytes, reply } => {
                let len = bytes.len();
                let result = match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes)
                {
                    Ok(id) => {
                        debug!(message_id = %id, bytes = len, "tx published");
                        Ok(())
                    }
                    Err(PublishError::Duplicate) => Err(NetError::Duplicate),
                    Err(PublishError::NoPeersSubscribedToTopic) => Err(NetError::NoPeers),
                    Err(PublishError::MessageTooLarge) => Err(NetError::TxTooLarge {
                        len,
                        max: self.gossip_max_transmit_size,
                    }),
                    Err(e) => Err(NetError::Publish(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::ReportTx { id, verdict } => {
                let acceptance = match verdict {
                    TxVerdict::Accept => MessageAcceptance::Accept,
                    TxVerdict::Reject => MessageAcceptance::Reject,
                    TxVerdict::Ignore => MessageAcceptance::Ignore,
                };
                let known = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id.message_id, &id.via, acceptance);
                if !known {
                    debug!(message_id = %id.message_id, "tx verdict came too late: message forgotten");
                }
            }
            Command::Deny { peer, reply } => {
                let b = self.swarm.behaviour_mut();
                if b.gate.deny(peer) {
                    b.gossipsub.blacklist_peer(&peer);
                    b.kad.remove_peer(&peer);
                    info!(peer = %peer, "peer denied");
                }
                // Not connected is fine: there is nothing to close.
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(());
            }
            Command::Allow { peer, reply } => {
                let b = self.swarm.behaviour_mut();
                if b.gate.allow(&peer) {
                    b.gossipsub.remove_blacklisted_peer(&peer);
                    info!(peer = %peer, "peer allowed again");
                }
                let _ = reply.send(());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::Shutdown { reply } => return Some(reply),
        }
        None
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, NetError>>) {
        let fail = |addr: Multiaddr, reason: &str| {
            Err(NetError::Dial {
                addr,
                reason: reason.to_owned(),
            })
        };
        let peer = peer_of(&addr);
        if let Some(peer) = peer {
            if peer == *self.swarm.local_peer_id() {
                let _ = reply.send(fail(addr, "that is our own peer id"));
                return;
            }
            if self.swarm.is_connected(&peer) {
                let _ = reply.send(Ok(peer));
                return;
            }
        }
        if self.dials.len() >= self.max_dials {
            let _ = reply.send(fail(addr, "too many dials in progress"));
            return;
        }
        let opts = dial_opts(peer, &addr);
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(connection, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(fail(addr, &e.to_string()));
            }
        }
    }

    fn redial_bootstrap(&mut self) {
        let swarm = &self.swarm;
        let due = self.bootstrap.due(
            Instant::now(),
            |p| swarm.is_connected(p),
            |p| swarm.behaviour().gate.is_denied(p),
        );
        for (index, peer, addr) in due {
            let opts = dial_opts(peer, &addr);
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    debug!(address = %addr, "dialling bootstrap peer");
                    self.bootstrap.dialing(index, connection);
                }
                Err(e) => debug!(address = %addr, error = %e, "bootstrap dial not started"),
            }
        }
    }

    /// Looks for more peers while we have fewer than `target_peers`.
    fn discover(&mut self) {
        let now = Instant::now();
        if self.target_peers == 0
            || now < self.next_discovery
            || self.swarm.connected_peers().count() >= self.target_peers
        {
            return;
        }
        // No known peer yet is fine: bootstrap peers will add some.
        if self.swarm.behaviour_mut().kad.bootstrap().is_ok() {
            debug!(
                interval_ms = self.discovery_interval.as_millis() as u64,
                "looking for peers"
            );
        }
        self.next_discovery = now + self.discovery_interval;
        self.discovery_interval = (self.discovery_interval * 2).min(DISCOVERY_INTERVAL_MAX);
    }

    /// Dials a peer found by discovery while we have fewer than `target_peers`.
    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let swarm = &self.swarm;
        if self.target_peers == 0
            || peer == *swarm.local_peer_id()
            || swarm.is_connected(&peer)
            || swarm.behaviour().gate.is_denied(&peer)
            || swarm.connected_peers().count() >= self.target_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(peer = %peer, error = %e, "discovered peer not dialled");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(address = %address, "listening");
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
                        debug!(peer = %peer, "inbound connection of denied peer refused");
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
            MeshBehaviourEvent::Gossipsub(_) => {}
            MeshBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != IDENTIFY_PROTOCOL_VERSION {
                    debug!(peer = %peer_id, version = %info.protocol_version, "not a meshward peer: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if info.protocols.contains(&crate::KAD_PROTOCOL) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            MeshBehaviourEvent::Identify(_) => {}
            MeshBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            }) => {
                let addrs = addresses.into_vec();
                debug!(peer = %peer, "peer discovered by kademlia");
                self.discovery_interval = DISCOVERY_INTERVAL_MIN;
                self.emit(NetEvent::Discovered(peer, addrs.clone()));
                self.dial_discovered(peer, addrs);
            }
            MeshBehaviourEvent::Kad(_) => {}
            MeshBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    let addrs = by_peer.entry(peer).or_default();
                    if addrs.len() < MAX_ADDRS_PER_PEER {
                        addrs.push(addr);
                    }
                }
                let local = *self.swarm.local_peer_id();
                for (peer, addrs) in by_peer {
                    debug!(peer = %peer, "peer discovered by mdns");
                    self.emit(NetEvent::Discovered(peer, addrs.clone()));
                    // Both ends of a LAN hear each other at once; if both dialled, the
                    // one-connection-per-peer limit would refuse both connections. The smaller
                    // id dials.
                    if local < peer {
                        self.dial_discovered(peer, addrs);
                    }
                }
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            MeshBehaviourEvent::Gate(never) | MeshBehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_gossip(
        &mut self,
        via: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let from = message.source.unwrap_or(via);
        let id = TxMessageId { message_id, via };
        let gate = &self.swarm.behaviour().gate;
        let verdict = if gate.is_denied(&from) || gate.is_denied(&via) {
            // The relay may not know of the revocation yet: no penalty.
            debug!(peer = %from, "tx of denied peer dropped");
            Some(MessageAcceptance::Ignore)
        } else if message.data.len() > self.gossip_max_transmit_size {
            debug!(peer = %via, bytes = message.data.len(), "oversized tx rejected");
            Some(MessageAcceptance::Reject)
        } else if !self.emit(NetEvent::Tx {
            from,
            id: id.clone(),
            bytes: message.data,
        }) {
            Some(MessageAcceptance::Ignore)
        } else {
            None
        };
        if let Some(acceptance) = verdict {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id.message_id, &id.via, acceptance);
        }
    }
}

/// How to dial `addr`: by peer id when it is known (never twice at once, never when already
/// connected), else to whoever answers there.
fn dial_opts(peer: Option<PeerId>, addr: &Multiaddr) -> DialOpts {
    match peer {
        Some(peer) => DialOpts::peer_id(peer)
            .addresses(vec![without_p2p(addr.clone())])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build(),
        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
    }
}

//! The swarm task: the one owner of the libp2p `Swarm`.
//!
//! It reads commands from the bounded channel of the [`Net`] handles, turns swarm events into
//! [`NetEvent`]s on the bounded event channel, and re-dials bootstrap peers on a timer. It never
//! waits on the node: when the event channel is full, events are dropped (a received transaction
//! is then reported `Ignore`, so it is neither forwarded nor penalised), because blocking here
//! would stall every connection and could deadlock a node that is waiting on a command reply.
//!
//! Rpc: each inbound request handed to the node gets a [`RequestId`] mapped to libp2p's response
//! channel until the node answers or the request expires; each of our requests has a oneshot
//! reply, answered by libp2p's response or failure event (it reports every request exactly once,
//! at the latest after the dial timeout plus `rpc_timeout_ms`).

use std::collections::HashMap;
use std::num::NonZeroU8;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionDenied, ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{identify, identity, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{MeshBehaviour, MeshBehaviourEvent, Parts, IDENTIFY_PROTOCOL_VERSION};
use crate::bootstrap::{peer_of, Bootstrap};
use crate::gate::PeerDenied;
use crate::{Net, NetConfig, NetError, NetEvent, RequestId, RpcFailure, TxMessageId, TxVerdict};

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
/// Addresses of one peer dialled at once. One: with `max_connections_per_peer = 1`, dialling a
/// peer's TCP and QUIC addresses together can leave the dialer keeping one connection while the
/// listener kept the other and refused the first, closing both. Each address gets the
/// transport's connection timeout in turn.
const DIAL_CONCURRENCY: NonZeroU8 = NonZeroU8::MIN;
/// Addresses of one peer taken from discovery (mDNS, identify into Kademlia); the rest is ignored.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Listen addresses of one peer kept from its identify report (for `NetEvent::Identified` and
/// `Net::peer_addrs`), and taken from one `Net::add_addresses` call.
const MAX_LISTEN_ADDRS_PER_PEER: usize = 16;

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
        reply: DialReply,
    },
    DialPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: DialReply,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<()>,
    },
    PeerAddrs {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Request {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: RpcReply,
    },
    Respond {
        id: RequestId,
        bytes: Vec<u8>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

type StartupReply = oneshot::Sender<Result<(), NetError>>;
type DialReply = oneshot::Sender<Result<PeerId, NetError>>;
type RpcReply = oneshot::Sender<Result<Vec<u8>, NetError>>;

/// An inbound rpc request handed to the node, awaiting its answer.
struct InboundRequest {
    peer: PeerId,
    request_id: InboundRequestId,
    channel: ResponseChannel<Vec<u8>>,
}

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
    info!(peer = %local, mdns = config.mdns, subscribe_tx = config.subscribe_tx, "network starting");
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
                self.forget_requests_of(peer);
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
            Command::DialPeer { peer, addrs, reply } => self.dial_peer(peer, addrs, reply),
            Command::AddAddresses { peer, addrs, reply } => {
                if peer != *self.swarm.local_peer_id() {
                    for addr in addrs.into_iter().take(MAX_LISTEN_ADDRS_PER_PEER) {
                        self.swarm.add_peer_address(peer, without_p2p(addr));
                    }
                }
                let _ = reply.send(());
            }
            Command::PeerAddrs { peer, reply } => {
                let _ = reply.send(self.peer_addrs.get(&peer).cloned().unwrap_or_default());
            }
            Command::Request { peer, bytes, reply } => self.request(peer, bytes, reply),
            Command::Respond { id, bytes } => {
                let Some(request) = self.inbound.remove(&id.0) else {
                    debug!(
                        request = id.0,
                        "rpc response to an unknown or expired request dropped"
                    );
                    return None;
                };
                self.inbound_ids.remove(&request.request_id);
                if self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(request.channel, bytes)
                    .is_err()
                {
                    debug!(peer = %request.peer, "rpc response came too late: request expired");
                }
            }
            Command::Shutdown { reply } => return Some(reply),
        }
        None
    }

    fn dial(&mut self, addr: Multiaddr, reply: DialReply) {
        let peer = peer_of(&addr);
        let opts = dial_opts(peer, &addr);
        self.start_dial(peer, opts, addr, reply);
    }

    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
        if self.swarm.behaviour().gate.is_denied(&peer) {
            let _ = reply.send(Err(NetError::Denied(peer)));
            return;
        }
        let condition = PeerCondition::DisconnectedAndNotDialing;
        let opts = if addrs.is_empty() {
            // The addresses the behaviours know (explicit, identify, Kademlia, mDNS).
            DialOpts::peer_id(peer).condition(condition).build()
        } else {
            let addrs = addrs.into_iter().take(MAX_LISTEN_ADDRS_PER_PEER);
            DialOpts::peer_id(peer)
                .addresses(addrs.map(without_p2p).collect())
                .condition(condition)
                .build()
        };
        let addr = Multiaddr::empty().with(Protocol::P2p(peer));
        self.start_dial(Some(peer), opts, addr, reply);
    }

    /// Starts a dial (`addr` names it in errors) and answers `reply` once it connects or fails.
    fn start_dial(
        &mut self,
        peer: Option<PeerId>,
        opts: DialOpts,
        addr: Multiaddr,
        reply: DialReply,
    ) {
        let fail = |addr: Multiaddr, reason: &str| {
            Err(NetError::Dial {
                addr,
                reason: reason.to_owned(),
            })
        };
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
        let waiting: usize = self.dial_waiters.values().map(Vec::len).sum();
        if self.dials.len() + waiting >= self.max_dials {
            let _ = reply.send(fail(addr, "too many dials in progress"));
            return;
        }
        let connection = opts.connection_id();
        match (self.swarm.dial(opts), peer) {
            (Ok(()), _) => {
                self.dials.insert(connection, (addr, reply));
            }
            // Not connected (checked above), so a dial to the peer is under way: join it.
            (Err(DialError::DialPeerConditionFalse(_)), Some(peer)) => {
                self.dial_waiters
                    .entry(peer)
                    .or_default()
                    .push((addr, reply));
            }
            (Err(e), _) => {
                let _ = reply.send(fail(addr, &e.to_string()));
            }
        }
    }

    /// Sends an rpc request, dialling the peer first if needed.
    fn request(&mut self, peer: PeerId, bytes: Vec<u8>, reply: RpcReply) {
        let fail = |reason| Err(NetError::Rpc { peer, reason });
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(fail(RpcFailure::Dial("that is our own peer id".to_owned())));
            return;
        }
        if self.swarm.behaviour().gate.is_denied(&peer) {
            let _ = reply.send(Err(NetError::Denied(peer)));
            return;
        }
        if self.outbound.len() >= self.rpc_max_pending_outbound {
            let _ = reply.send(fail(RpcFailure::Busy));
            return;
        }
        if !self.swarm.is_connected(&peer) {
            // We dial rather than leave it to request-response, which reports a failed dial
            // without its cause. A dial under way is joined: request-response sends the request
            // once that one connects, or fails it if it does not.
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    let _ = reply.send(fail(RpcFailure::Dial(e.to_string())));
                    return;
                }
            }
        }
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, bytes);
        self.outbound.insert(id, (peer, reply));
    }

    /// Drops the unanswered requests of a peer (their channels close: the peer sees an error).
    fn forget_requests_of(&mut self, peer: PeerId) {
        let ids: Vec<u64> = self
            .inbound
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.inbound.remove(&id) {
                self.inbound_ids.remove(&r.request_id);
            }
        }
    }

    fn forget_request(&mut self, request_id: InboundRequestId) {
        if let Some(id) = self.inbound_ids.remove(&request_id) {
            self.inbound.remove(&id);
        }
    }

    fn on_rpc_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_request(peer, request_id, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    // Denied while the request was in flight: the peer is no longer trusted.
                    let result = if self.swarm.behaviour().gate.is_denied(&peer) {
                        Err(NetError::Denied(peer))
                    } else {
                        Ok(response)
                    };
                    let _ = reply.send(result);
                }
                self.forget_dial_error(peer);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "rpc request failed");
                let reason = match error {
                    OutboundFailure::DialFailure => RpcFailure::Dial(
                        self.dial_errors
                            .get(&peer)
                            .cloned()
                            .unwrap_or_else(|| "dial failed".to_owned()),
                    ),
                    OutboundFailure::Timeout => RpcFailure::Timeout,
                    OutboundFailure::ConnectionClosed => RpcFailure::ConnectionClosed,
                    OutboundFailure::UnsupportedProtocols => RpcFailure::UnsupportedProtocol,
                    OutboundFailure::Io(e) => RpcFailure::Stream(e.to_string()),
                };
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Rpc { peer, reason }));
                }
                self.forget_dial_error(peer);
            }
            Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "inbound rpc request failed");
                self.forget_request(request_id);
            }
            Event::ResponseSent { request_id, .. } => self.forget_request(request_id),
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        // Returning drops `channel`: the stream closes and the requester sees an error.
        if self.swarm.behaviour().gate.is_denied(&peer) {
            // Its connection is closing: requests already on the way end here.
            debug!(peer = %peer, "rpc request of denied peer dropped");
            return;
        }
        if self.inbound.len() >= self.rpc_max_pending_inbound {
            debug!(
                peer = %peer,
                pending = self.inbound.len(),
                "rpc request dropped: too many unanswered requests"
            );
            return;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let event = NetEvent::Request {
            from: peer,
            id: RequestId(id),
            bytes,
        };
        if self.emit(event) {
            self.inbound.insert(
                id,
                InboundRequest {
                    peer,
                    request_id,
                    channel,
                },
            );
            self.inbound_ids.insert(request_id, id);
        }
    }

    /// Forgets why dials to `peer` failed once no request waits on it.
    fn forget_dial_error(&mut self, peer: PeerId) {
        if !self.outbound.values().any(|(p, _)| *p == peer) {
            self.dial_errors.remove(&peer);
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
                let mut listen_addrs = info.listen_addrs;
                listen_addrs.truncate(MAX_LISTEN_ADDRS_PER_PEER);
                if info.protocols.contains(&crate::KAD_PROTOCOL) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in listen_addrs.iter().take(MAX_ADDRS_PER_PEER) {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                // Only for connected peers, so that disconnecting removes the entry for good.
                if self.swarm.is_connected(&peer_id)
                    && !self.swarm.behaviour().gate.is_denied(&peer_id)
                    && self.peer_addrs.get(&peer_id) != Some(&listen_addrs)
                {
                    self.peer_addrs.insert(peer_id, listen_addrs.clone());
                    self.emit(NetEvent::Identified {
                        peer: peer_id,
                        listen_addrs,
                    });
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
            MeshBehaviourEvent::Rpc(event) => self.on_rpc_event(event),
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

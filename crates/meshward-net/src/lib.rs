//! Meshward's libp2p mesh.
//!
//! A node's network edge: TCP (Noise, Yamux) and QUIC transports, gossip of transactions
//! (signed gossipsub with peer scoring, forwarded only after the node accepts them), discovery
//! (bootstrap peers, Kademlia, identify, and mDNS on a LAN when enabled), connection limits and
//! a connection gate that refuses revoked peers. One tokio task owns the libp2p `Swarm`; the
//! cloneable [`Net`] handle talks to it over a bounded channel and gets replies on oneshots, and
//! the node reads [`NetEvent`]s from a bounded channel.
//!
//! Peers also exchange opaque bytes by request-response on [`RPC_PROTOCOL`]
//! (`/meshward/rpc/1.0.0`, one `u32` big-endian length-prefixed frame each way, bounded by
//! `rpc_max_request_bytes` and `rpc_max_response_bytes`): [`Net::request`] sends one and awaits
//! the answer, the other side gets a [`NetEvent::Request`] and answers with [`Net::respond`].
//! The message types live with their users; this crate only moves bytes.
//!
//! The libp2p identity is the node's Ed25519 key, so a node's `PeerId` is its ledger identity.
//!
//! ```no_run
//! use meshward_core::ids::Keypair;
//! use meshward_net::{NetConfig, NetEvent, TxVerdict};
//!
//! # async fn run() -> Result<(), meshward_net::NetError> {
//! let key = Keypair::generate(&mut rand::rngs::OsRng);
//! let mut config = NetConfig::new("fleet-1");
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
//! let (net, mut events) = meshward_net::spawn(&key, config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         NetEvent::Tx { id, bytes, .. } => {
//!             // Check the transaction, then tell gossipsub whether to forward it.
//!             let verdict = if bytes.is_empty() { TxVerdict::Reject } else { TxVerdict::Accept };
//!             net.report_tx(id, verdict).await;
//!         }
//!         // Answer requests; a peer's own requests are `net.request(peer, bytes).await`.
//!         NetEvent::Request { id, bytes, .. } => net.respond(id, bytes).await,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod behaviour;
mod bootstrap;
mod config;
mod gate;
mod rpc;
mod task;

use libp2p::gossipsub::MessageId;
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL};
pub use config::{
    NetConfig, DEFAULT_GOSSIP_MAX_TRANSMIT_SIZE, DEFAULT_PORT, DEFAULT_RPC_MAX_PENDING_INBOUND,
    DEFAULT_RPC_MAX_PENDING_OUTBOUND, DEFAULT_RPC_MAX_REQUEST_BYTES,
    DEFAULT_RPC_MAX_RESPONSE_BYTES, DEFAULT_RPC_TIMEOUT_MS, MAX_GOSSIP_TRANSMIT_SIZE,
    MAX_RPC_FRAME_BYTES,
};
pub use gate::Admission;
pub use libp2p::multiaddr;
pub use libp2p::{Multiaddr, PeerId};
pub use rpc::{RPC_MAX_CONCURRENT_STREAMS, RPC_PROTOCOL};

/// What the mesh tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetEvent {
    /// A gossip message (from a node: a list of transactions), not yet validated by anyone but
    /// its author's signature. Report a verdict with [`Net::report_tx`] within a few seconds:
    /// gossipsub forwards it only once it is accepted, and forgets it after about five
    /// heartbeats.
    Tx {
        /// The author who signed the gossip message (not necessarily the tx signer).
        from: PeerId,
        /// Which message this is, for [`Net::report_tx`].
        id: TxMessageId,
        /// The message as published (at most `gossip_max_transmit_size` bytes).
        bytes: Vec<u8>,
    },
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// A connected peer subscribed to the transaction topic: from now on it receives what this
    /// node publishes, and nothing it missed before.
    TxSubscriber(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer and its addresses were learned through mDNS or Kademlia.
    Discovered(PeerId, Vec<Multiaddr>),
    /// A connection with a denied peer was refused by the gate (inbound or outbound).
    Refused(PeerId),
    /// An rpc request. Answer it with [`Net::respond`] within `rpc_timeout_ms`; until then it
    /// counts against `rpc_max_pending_inbound`.
    Request {
        /// The peer that sent the request (authenticated by Noise: its ledger id).
        from: PeerId,
        /// Which request this is, for [`Net::respond`].
        id: RequestId,
        /// The request frame's bytes (at most `rpc_max_request_bytes`).
        bytes: Vec<u8>,
    },
    /// A connected peer reported (or changed) the addresses it listens on, through identify. At
    /// most 16; also available from [`Net::peer_addrs`] while the peer is connected.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses, as it reported them.
        listen_addrs: Vec<Multiaddr>,
    },
}

/// Identifies an inbound rpc request, for [`Net::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// Identifies one received gossip message: its id and the peer that relayed it to us.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxMessageId {
    message_id: MessageId,
    via: PeerId,
}

impl TxMessageId {
    /// The domain-separated hash of the payload: `Tx::id()` for a canonical transaction.
    pub fn tx_hash(&self) -> meshward_core::Hash {
        meshward_core::Hash(
            self.message_id
                .0
                .as_slice()
                .try_into()
                .expect("message ids are 32-byte hashes: we compute them, not the sender"),
        )
    }

    /// The neighbour that relayed the message (scored by the verdict).
    pub fn via(&self) -> PeerId {
        self.via
    }
}

/// The node's verdict on a gossiped transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxVerdict {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid whatever the ledger state (bad encoding or signature, wrong chain): drop it and
    /// penalise the peer that relayed it.
    Reject,
    /// Not useful now (duplicate, stale sequence number, mempool full): drop it without penalty.
    Ignore,
}

/// Errors of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A configuration value is out of range or inconsistent, or the listeners reported no address
    /// in time.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The TCP or QUIC transport (Noise, Yamux) cannot be built.
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    /// A listen address cannot be bound.
    #[error("cannot listen on {addr}: {reason} (is the port in use, or the address not local?)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why, as libp2p reports it.
        reason: String,
    },
    /// A dial failed: it could not start (our own id, no address, a limit), or it did not connect.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address, or the peer's `/p2p/` address.
        addr: Multiaddr,
        /// Why, as libp2p reports it.
        reason: String,
    },
    /// A gossip message is over `gossip_max_transmit_size`.
    #[error("transaction of {len} bytes exceeds the gossip limit of {max} bytes")]
    TxTooLarge {
        /// Its size, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// No connected peer subscribes to the transaction topic yet.
    #[error("no connected peer subscribes to transactions yet (retry once peers are connected)")]
    NoPeers,
    /// Gossipsub already published or saw this message recently.
    #[error("transaction already published or seen recently")]
    Duplicate,
    /// Gossipsub refused the message for another reason.
    #[error("cannot publish transaction: {0}")]
    Publish(String),
    /// The swarm task has stopped ([`Net::shutdown`], or it failed).
    #[error("the network task has stopped")]
    Closed,
    /// An rpc request is over `rpc_max_request_bytes`.
    #[error("rpc request of {len} bytes exceeds the limit of {max} bytes")]
    RequestTooLarge {
        /// Its size, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An rpc request got no answer.
    #[error("rpc request to {peer} failed: {reason}")]
    Rpc {
        /// The peer asked.
        peer: PeerId,
        /// What failed: the dial, the timeout, the stream, or the peer was busy.
        reason: RpcFailure,
    },
    /// The peer is denied by the connection gate (its id).
    #[error("peer {0} is denied by the connection gate (allow it again to talk to it)")]
    Denied(PeerId),
}

/// Why an rpc request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcFailure {
    /// No connection could be made (no known address, unreachable, refused, limits).
    #[error("cannot connect: {0}")]
    Dial(String),
    /// No response within `rpc_timeout_ms`. The peer may or may not have handled the request.
    #[error("no response in time")]
    Timeout,
    /// The connection closed before the response arrived (e.g. the peer denies us).
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The peer does not speak [`RPC_PROTOCOL`].
    #[error("the peer does not support {RPC_PROTOCOL}")]
    UnsupportedProtocol,
    /// The stream failed: the peer refused the request (too large, too many pending) or sent
    /// a response over `rpc_max_response_bytes`.
    #[error("stream error: {0}")]
    Stream(String),
    /// `rpc_max_pending_outbound` requests are already awaiting a response.
    #[error("too many requests in flight (retry later)")]
    Busy,
}

/// A cloneable handle to the swarm task.
#[derive(Debug, Clone)]
pub struct Net {
    commands: mpsc::Sender<task::Command>,
    local_peer_id: PeerId,
    gossip_max_transmit_size: usize,
    rpc_max_request_bytes: usize,
}

/// The libp2p identity of a node key: the same Ed25519 key, so the same `PeerId`.
pub fn identity_of(key: &meshward_core::ids::Keypair) -> libp2p::identity::Keypair {
    // A `Zeroizing` copy, which `ed25519_from_bytes` also wipes once read.
    let mut seed = key.sign.seed();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut seed[..])
        .expect("any 32 bytes are a valid ed25519 seed")
}

/// The `PeerId` of a ledger identity (an Ed25519 public key).
pub fn peer_id_of(key: &meshward_core::PublicKey) -> PeerId {
    PeerId::from_bytes(&key.peer_id_bytes())
        .expect("an ed25519 identity multihash is a valid peer id")
}

/// The ledger identity behind a `PeerId`, if it is an Ed25519 one.
pub fn public_key_of(peer: &PeerId) -> Option<meshward_core::PublicKey> {
    let bytes = peer.to_bytes();
    let pk = meshward_core::PublicKey(bytes.get(6..)?.try_into().ok()?);
    (pk.peer_id_bytes()[..] == bytes[..]).then_some(pk)
}

/// Starts the mesh: builds the swarm, listens on every configured address, dials the bootstrap
/// peers and spawns the swarm task on the current tokio runtime.
///
/// Returns once every listener has an address (so [`Net::listen_addrs`] has the real ports).
pub async fn spawn(
    key: &meshward_core::ids::Keypair,
    config: NetConfig,
) -> Result<(Net, mpsc::Receiver<NetEvent>), NetError> {
    task::spawn(identity_of(key), config).await
}

impl Net {
    /// Our `PeerId`, equal to the node key's `PublicKey::peer_id()`.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> task::Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Gossips a message (a node sends a list of transactions) on the chain's topic.
    pub async fn publish_tx(&self, bytes: Vec<u8>) -> Result<(), NetError> {
        if bytes.len() > self.gossip_max_transmit_size {
            return Err(NetError::TxTooLarge {
                len: bytes.len(),
                max: self.gossip_max_transmit_size,
            });
        }
        self.command(|reply| task::Command::PublishTx { bytes, reply })
            .await?
    }

    /// Reports the node's verdict on a received transaction; only accepted ones are forwarded.
    pub async fn report_tx(&self, id: TxMessageId, verdict: TxVerdict) {
        // A stopped task has nothing left to forward: ignoring the error is correct.
        let _ = self
            .commands
            .send(task::Command::ReportTx { id, verdict })
            .await;
    }

    /// Denies a peer: its connections close now, and it is refused from then on, inbound and
    /// outbound; gossip it authored is dropped.
    pub async fn deny(&self, peer: PeerId) {
        let _ = self
            .command(|reply| task::Command::Deny { peer, reply })
            .await;
    }

    /// Allows a previously denied peer again.
    pub async fn allow(&self, peer: PeerId) {
        let _ = self
            .command(|reply| task::Command::Allow { peer, reply })
            .await;
    }

    /// Sets who is a fleet member (see [`NetConfig::members_only`]): from now on only peers
    /// `rule` accepts may connect, and connected peers it does not accept are disconnected. The
    /// rule runs on every new connection, so it should be a quick read.
    pub async fn set_admission(&self, rule: Admission) {
        let _ = self
            .command(|reply| task::Command::SetAdmission { rule, reply })
            .await;
    }

    /// Closes every connection to `peer` (it may connect again if admitted).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self
            .command(|reply| task::Command::Disconnect { peer, reply })
            .await;
    }

    /// The addresses we listen on (with the real ports of `/tcp/0` and `/udp/0`).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.command(|reply| task::Command::ListenAddrs { reply })
            .await
            .unwrap_or_default()
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.command(|reply| task::Command::Peers { reply })
            .await
            .unwrap_or_default()
    }

    /// Dials an address (with or without `/p2p/<peer id>`) and waits for the handshake.
    /// Returns the peer's id, at once if that peer is already connected. A peer that refuses us
    /// after the handshake may still show up as a brief connection.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.command(|reply| task::Command::Dial { addr, reply })
            .await?
    }

    /// Sends an rpc request to `peer` and waits for its response, dialling the peer first if it
    /// is not connected (at the addresses the swarm knows: explicit ones from
    /// [`Net::add_addresses`], identify, Kademlia, mDNS). Waits at most `rpc_timeout_ms` once
    /// connected, plus the dial.
    pub async fn request(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if bytes.len() > self.rpc_max_request_bytes {
            return Err(NetError::RequestTooLarge {
                len: bytes.len(),
                max: self.rpc_max_request_bytes,
            });
        }
        self.command(|reply| task::Command::Request { peer, bytes, reply })
            .await?
    }

    /// Answers an inbound request. An unknown id, or one that expired (timed out, connection
    /// closed), is silently ignored.
    pub async fn respond(&self, id: RequestId, bytes: Vec<u8>) {
        // A stopped task has no one left to answer: ignoring the error is correct.
        let _ = self
            .commands
            .send(task::Command::Respond { id, bytes })
            .await;
    }

    /// Tells the swarm where `peer` listens, for later dials (e.g. by [`Net::request`]). At most
    /// 16 addresses are taken; the swarm keeps them in a bounded cache.
    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self
            .command(|reply| task::Command::AddAddresses { peer, addrs, reply })
            .await;
    }

    /// Dials `peer` at `addrs` (or, if empty, at the addresses the swarm knows) and waits for
    /// the handshake. Returns at once if it is already connected; joins a dial already under
    /// way rather than dialling the peer twice.
    pub async fn dial_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.command(|reply| task::Command::DialPeer { peer, addrs, reply })
            .await?
            .map(|_| ())
    }

    /// The listen addresses a connected peer last reported through identify (empty once it
    /// disconnects, or before it reported).
    pub async fn peer_addrs(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.command(|reply| task::Command::PeerAddrs { peer, reply })
            .await
            .unwrap_or_default()
    }

    /// Stops the swarm task and closes every connection. Other handles get [`NetError::Closed`].
    pub async fn shutdown(self) {
        let _ = self
            .command(|reply| task::Command::Shutdown { reply })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_conversions_round_trip() {
        let key = meshward_core::ids::Keypair::generate(&mut rand::rngs::OsRng);
        let peer = identity_of(&key).public().to_peer_id();
        assert_eq!(peer, peer_id_of(&key.id()));
        assert_eq!(public_key_of(&peer), Some(key.id()));
        let other = libp2p::identity::Keypair::generate_ed25519();
        assert_ne!(public_key_of(&other.public().to_peer_id()), Some(key.id()));
    }

    #[test]
    fn tx_hash_of_a_message_id_is_the_tx_id_hash() {
        let id = TxMessageId {
            message_id: behaviour::message_id(b"abc"),
            via: PeerId::random(),
        };
        assert_eq!(
            id.tx_hash(),
            meshward_core::hash::hash(meshward_core::hash::domain::TX_ID, b"abc")
        );
    }
}

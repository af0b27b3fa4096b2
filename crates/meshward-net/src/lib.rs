//! Meshward's libp2p mesh.
//!
//! A node's network edge: TCP (Noise, Yamux) and QUIC transports, gossip of transactions
//! (signed gossipsub with peer scoring, forwarded only after the node accepts them), discovery
//! (bootstrap peers, Kademlia, identify, and mDNS on a LAN when enabled), connection limits and
//! a connection gate that refuses revoked peers. One tokio task owns the libp2p `Swarm`; the
//! cloneable [`Net`] handle talks to it over a bounded channel and gets replies on oneshots, and
//! the node reads [`NetEvent`]s from a bounded channel.
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
//!     if let NetEvent::Tx { from, id, bytes } = event {
//!         // Check the transaction, then tell gossipsub whether to forward it.
//!         let verdict = if bytes.is_empty() { TxVerdict::Reject } else { TxVerdict::Accept };
//!         net.report_tx(id, verdict).await;
//!         let _ = from;
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod behaviour;
mod bootstrap;
mod config;
mod gate;
mod task;

use libp2p::gossipsub::MessageId;
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL};
pub use config::{NetConfig, DEFAULT_PORT, MAX_GOSSIP_TRANSMIT_SIZE};
pub use libp2p::{Multiaddr, PeerId};

/// What the mesh tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetEvent {
    /// A gossiped transaction, not yet validated by anyone but its author's signature. Report a
    /// verdict with [`Net::report_tx`] within a few seconds: gossipsub forwards it only once it
    /// is accepted, and forgets it after about five heartbeats.
    Tx {
        /// The author who signed the gossip message (not necessarily the tx signer).
        from: PeerId,
        /// Which message this is, for [`Net::report_tx`].
        id: TxMessageId,
        bytes: Vec<u8>,
    },
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer and its addresses were learned through mDNS or Kademlia.
    Discovered(PeerId, Vec<Multiaddr>),
    /// A connection with a denied peer was refused by the gate (inbound or outbound).
    Refused(PeerId),
}

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
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason} (is the port in use, or the address not local?)")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    #[error("transaction of {len} bytes exceeds the gossip limit of {max} bytes")]
    TxTooLarge { len: usize, max: usize },
    #[error("no connected peer subscribes to transactions yet (retry once peers are connected)")]
    NoPeers,
    #[error("transaction already published or seen recently")]
    Duplicate,
    #[error("cannot publish transaction: {0}")]
    Publish(String),
    #[error("the network task has stopped")]
    Closed,
}

/// A cloneable handle to the swarm task.
#[derive(Debug, Clone)]
pub struct Net {
    commands: mpsc::Sender<task::Command>,
    local_peer_id: PeerId,
    gossip_max_transmit_size: usize,
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

    async fn request<T>(
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

    /// Gossips a transaction on the chain's topic.
    pub async fn publish_tx(&self, bytes: Vec<u8>) -> Result<(), NetError> {
        if bytes.len() > self.gossip_max_transmit_size {
            return Err(NetError::TxTooLarge {
                len: bytes.len(),
                max: self.gossip_max_transmit_size,
            });
        }
        self.request(|reply| task::Command::PublishTx { bytes, reply })
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
            .request(|reply| task::Command::Deny { peer, reply })
            .await;
    }

    /// Allows a previously denied peer again.
    pub async fn allow(&self, peer: PeerId) {
        let _ = self
            .request(|reply| task::Command::Allow { peer, reply })
            .await;
    }

    /// The addresses we listen on (with the real ports of `/tcp/0` and `/udp/0`).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.request(|reply| task::Command::ListenAddrs { reply })
            .await
            .unwrap_or_default()
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.request(|reply| task::Command::Peers { reply })
            .await
            .unwrap_or_default()
    }

    /// Dials an address (with or without `/p2p/<peer id>`) and waits for the handshake.
    /// Returns the peer's id, at once if that peer is already connected. A peer that refuses us
    /// after the handshake may still show up as a brief connection.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.request(|reply| task::Command::Dial { addr, reply })
            .await?
    }

    /// Stops the swarm task and closes every connection. Other handles get [`NetError::Closed`].
    pub async fn shutdown(self) {
        let _ = self
            .request(|reply| task::Command::Shutdown { reply })
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

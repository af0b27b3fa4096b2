//! The composed `NetworkBehaviour`: gate, limits, identify, ping, Kademlia, gossipsub, rpc and
//! mDNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{
    self, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
use libp2p::{connection_limits, identify, identity, mdns, ping, request_response, StreamProtocol};
use meshward_core::hash::{domain, hash};

use crate::gate::Gate;
use crate::rpc::{RpcCodec, RPC_MAX_CONCURRENT_STREAMS, RPC_PROTOCOL};
use crate::{NetConfig, NetError};

/// Kademlia's protocol name: a private DHT of Meshward nodes, apart from the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshward/kad/1.0.0");
/// The identify protocol version our peers must announce.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/meshward/id/1.0.0";
/// Bytes a gossipsub frame adds around a transaction: author key, signature, sequence number,
/// topic and protobuf framing.
pub(crate) const GOSSIP_FRAME_OVERHEAD_BYTES: usize = 1024;
/// Messages queued per connection for sending before gossipsub drops (forwards first). With
/// messages of up to `gossip_max_transmit_size` bytes this bounds a slow peer's buffer. A node
/// gossips its transactions in batches, so few messages are in flight even under load.
pub(crate) const GOSSIP_QUEUE_PER_PEER: usize = 128;

#[derive(NetworkBehaviour)]
pub(crate) struct MeshBehaviour {
    // The gate comes first, so a denied peer is refused before any other behaviour sets up state.
    pub gate: Gate,
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    // The standard libp2p ping (`/ipfs/ping/1.0.0`): stock Kademlia clients check a peer
    // answers it before they add it to their tables.
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub rpc: request_response::Behaviour<RpcCodec>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The gossip message id: the domain-separated transaction hash of the payload, so the same
/// bytes from two authors are one message.
pub(crate) fn message_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::new(hash(domain::TX_ID, data).as_bytes())
}

fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        // Only signed messages, from the key that signs them; the node checks the tx itself.
        .validation_mode(ValidationMode::Strict)
        // Hold each message until the node reports its verdict: only accepted txs are forwarded.
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| message_id(&m.data))
        .max_transmit_size(config.gossip_max_transmit_size + GOSSIP_FRAME_OVERHEAD_BYTES)
        .connection_handler_queue_len(GOSSIP_QUEUE_PER_PEER)
        .build()
        .map_err(|e| NetError::InvalidConfig(format!("gossipsub: {e}")))
}

/// Scoring for the transaction topic.
///
/// Transactions come in bursts and an idle fleet sends few, so the mesh-delivery-rate penalties
/// (P3, P3b) are off: they would punish honest peers of a quiet fleet. What counts is delivering
/// transactions first (P2, capped) and never delivering rejected ones (P4): one rejection takes a
/// peer to -10 (no more gossip with it), three to -90 (graylisted: its RPCs are ignored). The node
/// must report state-dependent failures (stale sequence number) as `Ignore`, not `Reject`.
fn tx_topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            1800,
        )),
        ..TopicScoreParams::default()
    }
}

fn peer_score_params(topic: &gossipsub::IdentTopic) -> PeerScoreParams {
    let mut params = PeerScoreParams {
        // Positive credit is capped so a peer cannot bank goodwill to spend on later abuse.
        topic_score_cap: 10.0,
        app_specific_weight: 1.0,
        ..PeerScoreParams::default()
    };
    // Many peers on one IP is suspicious on the internet, but it is how a devnet runs.
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    params.topics.insert(topic.hash(), tx_topic_score_params());
    params
}

fn peer_score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        // Reachable with the capped positive score above.
        opportunistic_graft_threshold: 5.0,
        ..PeerScoreThresholds::default()
    }
}

/// Everything needed to build the behaviour, checked before the swarm is built.
pub(crate) struct Parts {
    gossipsub: gossipsub::Config,
    score: (PeerScoreParams, PeerScoreThresholds),
    limits: connection_limits::ConnectionLimits,
    mdns: bool,
    members_only: bool,
    subscribe_tx: bool,
    kad_server: bool,
    rpc_codec: RpcCodec,
    rpc_timeout: Duration,
    pub topic: gossipsub::IdentTopic,
}

impl Parts {
    pub(crate) fn new(config: &NetConfig) -> Result<Parts, NetError> {
        let topic = gossipsub::IdentTopic::new(config.tx_topic());
        let params = peer_score_params(&topic);
        params
            .validate()
            .map_err(|e| NetError::InvalidConfig(format!("peer score parameters: {e}")))?;
        let thresholds = peer_score_thresholds();
        thresholds
            .validate()
            .map_err(|e| NetError::InvalidConfig(format!("peer score thresholds: {e}")))?;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending))
            .with_max_pending_outgoing(Some(config.max_pending));
        Ok(Parts {
            gossipsub: gossipsub_config(config)?,
            score: (params, thresholds),
            limits,
            mdns: config.mdns,
            members_only: config.members_only,
            subscribe_tx: config.subscribe_tx,
            kad_server: config.kad_server,
            rpc_codec: RpcCodec {
                max_request_bytes: config.rpc_max_request_bytes,
                max_response_bytes: config.rpc_max_response_bytes,
            },
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            topic,
        })
    }

    pub(crate) fn build(
        self,
        key: &identity::Keypair,
    ) -> Result<MeshBehaviour, Box<dyn std::error::Error + Send + Sync>> {
        let local = key.public().to_peer_id();

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                .with_agent_version(format!("meshward/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // We keep no DHT records: a peer must not be able to fill our store.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kad_config);
        // Gateways answer routing queries even before they know an external address; devices
        // only ask (see `NetConfig::kad_server`).
        kad.set_mode(Some(if self.kad_server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));

        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), self.gossipsub)?;
        let (params, thresholds) = self.score;
        gossipsub.with_peer_score(params, thresholds)?;
        // A node off the topic still publishes to subscribed peers (gossipsub's fanout).
        if self.subscribe_tx {
            gossipsub.subscribe(&self.topic)?;
        }

        let rpc = request_response::Behaviour::with_codec(
            self.rpc_codec,
            [(RPC_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(self.rpc_timeout)
                .with_max_concurrent_streams(RPC_MAX_CONCURRENT_STREAMS),
        );

        // Constructed only when enabled: a disabled mDNS opens no socket and sends nothing.
        let mdns = if self.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
        } else {
            None
        };

        let mut gate = Gate::default();
        if self.members_only {
            gate.members_only();
        }
        Ok(MeshBehaviour {
            gate,
            limits: connection_limits::Behaviour::new(self.limits),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            gossipsub,
            rpc,
            mdns: Toggle::from(mdns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_parameters_are_accepted_by_gossipsub() {
        let parts = Parts::new(&NetConfig::new("fleet-1")).unwrap();
        let key = identity::Keypair::generate_ed25519();
        let b = parts.build(&key).unwrap();
        assert!(!b.mdns.is_enabled());
        assert_eq!(b.gossipsub.topics().count(), 1);
    }

    #[test]
    fn a_device_stays_off_the_tx_topic() {
        let parts = Parts::new(&NetConfig::device("fleet-1")).unwrap();
        let b = parts.build(&identity::Keypair::generate_ed25519()).unwrap();
        assert_eq!(b.gossipsub.topics().count(), 0);
    }

    #[test]
    fn message_id_is_the_transaction_id_hash() {
        let id = message_id(b"tx bytes");
        assert_eq!(id.0, hash(domain::TX_ID, b"tx bytes").as_bytes().to_vec());
        assert_ne!(id, message_id(b"other bytes"));
    }
}

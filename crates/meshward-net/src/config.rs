//! The mesh's configuration and its defaults.

use libp2p::Multiaddr;
use meshward_core::tx::MAX_TX_BYTES;

use crate::NetError;

/// The port gateways listen on by default (TCP and QUIC), as in `meshward init`'s config.
pub const DEFAULT_PORT: u16 = 7800;

/// The largest gossiped transaction the configuration accepts (16 MiB): a sanity bound, the
/// ledger's own limit is far lower.
pub const MAX_GOSSIP_TRANSMIT_SIZE: usize = 16 * 1024 * 1024;

/// The largest rpc frame (request or response) the configuration accepts (64 MiB): a sanity
/// bound on `rpc_max_request_bytes` and `rpc_max_response_bytes`.
pub const MAX_RPC_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default `rpc_max_request_bytes`: 160 KiB, room for a transaction and its envelope.
pub const DEFAULT_RPC_MAX_REQUEST_BYTES: usize = 160 * 1024;
/// Default `gossip_max_transmit_size`: 512 KiB, room for the largest transaction and a batch of
/// smaller ones.
pub const DEFAULT_GOSSIP_MAX_TRANSMIT_SIZE: usize = 2 * MAX_TX_BYTES;
/// Default `rpc_max_response_bytes`: 8 MiB, room for a block with its proofs.
pub const DEFAULT_RPC_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Default `rpc_timeout_ms`.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 10_000;
/// Default `rpc_max_pending_inbound`.
pub const DEFAULT_RPC_MAX_PENDING_INBOUND: usize = 256;
/// Default `rpc_max_pending_outbound`.
pub const DEFAULT_RPC_MAX_PENDING_OUTBOUND: usize = 256;

/// How the mesh listens, whom it dials and how much it holds.
///
/// Every queue and limit here is a bound on memory or sockets that a hostile peer could otherwise
/// grow. [`NetConfig::new`] gives defaults suitable for a gateway, [`NetConfig::device`] for a
/// device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The chain id. It names the gossip topic (`meshward/<chain id>/tx/2`), so nodes of
    /// different fleets never exchange transactions.
    pub chain_id: String,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0` and `/ip4/127.0.0.1/udp/0/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start and re-dialled with exponential backoff whenever not connected.
    /// With or without a trailing `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery by multicast DNS. Off unless enabled: it sends multicast on every
    /// interface.
    pub mdns: bool,
    /// Discovered peers (mDNS, Kademlia) are dialled while fewer than this many peers are
    /// connected. `0` never dials discovered peers: only bootstrap peers and explicit dials.
    pub target_peers: u32,
    /// Established connections in total, inbound and outbound.
    pub max_connections: u32,
    /// Established connections to one peer. `1` dials each peer once.
    pub max_connections_per_peer: u32,
    /// Connections being set up, in each direction.
    pub max_pending: u32,
    /// The largest gossip message, in bytes, that is published or accepted. A message is a list
    /// of transactions (see `meshward_core::tx::encode_tx_list`).
    pub gossip_max_transmit_size: usize,
    /// Capacity of the command channel from [`crate::Net`] handles to the swarm task.
    pub command_queue: usize,
    /// Capacity of the event channel from the swarm task to the node. When it is full, events are
    /// dropped (and received transactions are neither forwarded nor penalised).
    pub event_queue: usize,
    /// Admit only members: peers the node names with [`crate::Net::update_members`] (none until
    /// it does). A gateway sets it, so that a peer that is not in the fleet cannot read its
    /// gossip or ask it anything; devices leave it off.
    pub members_only: bool,
    /// Whether to join the transaction gossip topic. Devices set it false: they still run
    /// gossipsub and can publish (to subscribed peers), but never receive gossiped txs.
    pub subscribe_tx: bool,
    /// Whether to answer Kademlia routing queries (server mode). Gateways do; devices run
    /// Kademlia as clients: they look peers up through the gateways but are not added to
    /// anyone's routing table, so no lookup is routed through a device and a fleet's devices
    /// do not all end up connected to each other (with 100 devices in one process that
    /// meant ~4,600 connections and both cores busy with their upkeep).
    pub kad_server: bool,
    /// The largest rpc request, in bytes, sent or accepted; a larger inbound frame fails the
    /// stream before it is read.
    pub rpc_max_request_bytes: usize,
    /// The largest rpc response, in bytes, sent or accepted.
    pub rpc_max_response_bytes: usize,
    /// How long an rpc stream may take, from opening it to the response: the requester's wait
    /// for a response, and the responder's time to answer an inbound request. Dialling a peer
    /// that is not connected comes on top.
    pub rpc_timeout_ms: u64,
    /// Inbound requests handed to the node and not answered yet; further ones are refused (the
    /// requester sees an error) until some are answered or time out.
    pub rpc_max_pending_inbound: usize,
    /// Our own requests awaiting a response; [`crate::Net::request`] fails beyond this.
    pub rpc_max_pending_outbound: usize,
}

impl NetConfig {
    /// Gateway defaults: listen on every interface on [`DEFAULT_PORT`] (TCP and QUIC), no
    /// bootstrap peers, mDNS off.
    pub fn new(chain_id: impl Into<String>) -> Self {
        NetConfig {
            chain_id: chain_id.into(),
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")
                    .parse()
                    .expect("a literal tcp multiaddr parses"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1")
                    .parse()
                    .expect("a literal quic multiaddr parses"),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            target_peers: 16,
            max_connections: 128,
            max_connections_per_peer: 1,
            max_pending: 32,
            gossip_max_transmit_size: DEFAULT_GOSSIP_MAX_TRANSMIT_SIZE,
            command_queue: 256,
            event_queue: 1024,
            members_only: false,
            subscribe_tx: true,
            kad_server: true,
            rpc_max_request_bytes: DEFAULT_RPC_MAX_REQUEST_BYTES,
            rpc_max_response_bytes: DEFAULT_RPC_MAX_RESPONSE_BYTES,
            rpc_timeout_ms: DEFAULT_RPC_TIMEOUT_MS,
            rpc_max_pending_inbound: DEFAULT_RPC_MAX_PENDING_INBOUND,
            rpc_max_pending_outbound: DEFAULT_RPC_MAX_PENDING_OUTBOUND,
        }
    }

    /// Device defaults: listen on `/ip4/127.0.0.1/tcp/0` (TCP only, an ephemeral port), not
    /// subscribed to transaction gossip, Kademlia as a client, mDNS off, up to 16 peers
    /// dialled from discovery.
    /// A device talks to gateways by rpc and publishes its own transactions.
    pub fn device(chain_id: impl Into<String>) -> Self {
        NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0"
                .parse()
                .expect("a literal tcp multiaddr parses")],
            subscribe_tx: false,
            kad_server: false,
            target_peers: 16,
            mdns: false,
            ..NetConfig::new(chain_id)
        }
    }

    /// The gossipsub topic for transactions of this chain.
    pub fn tx_topic(&self) -> String {
        // Version 2: each message is a list of transactions, not one.
        format!("meshward/{}/tx/2", self.chain_id)
    }

    pub(crate) fn validate(&self) -> Result<(), NetError> {
        let invalid = |what: &str| Err(NetError::InvalidConfig(what.to_owned()));
        if !meshward_core::genesis::valid_chain_id(&self.chain_id) {
            return invalid("chain_id is not a valid chain id");
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.max_connections_per_peer == 0 {
            return invalid("max_connections_per_peer must be at least 1");
        }
        if self.max_pending == 0 {
            return invalid("max_pending must be at least 1");
        }
        if self.gossip_max_transmit_size == 0
            || self.gossip_max_transmit_size > MAX_GOSSIP_TRANSMIT_SIZE
        {
            return invalid("gossip_max_transmit_size must be between 1 byte and 16 MiB");
        }
        if self.command_queue == 0 || self.event_queue == 0 {
            return invalid("command_queue and event_queue must be at least 1");
        }
        for (name, value) in [
            ("rpc_max_request_bytes", self.rpc_max_request_bytes),
            ("rpc_max_response_bytes", self.rpc_max_response_bytes),
        ] {
            if value == 0 || value > MAX_RPC_FRAME_BYTES {
                return invalid(&format!("{name} must be between 1 byte and 64 MiB"));
            }
        }
        if self.rpc_timeout_ms == 0 {
            return invalid("rpc_timeout_ms must be at least 1");
        }
        if self.rpc_max_pending_inbound == 0 || self.rpc_max_pending_outbound == 0 {
            return invalid(
                "rpc_max_pending_inbound and rpc_max_pending_outbound must be at least 1",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keep_mdns_off() {
        let c = NetConfig::new("fleet-1");
        assert_eq!(c.validate(), Ok(()));
        assert!(!c.mdns);
        assert_eq!(c.max_connections_per_peer, 1);
        assert_eq!(c.tx_topic(), "meshward/fleet-1/tx/2");
        assert!(c.subscribe_tx && c.kad_server);
        assert_eq!(c.rpc_max_request_bytes, 160 * 1024);
        assert_eq!(c.rpc_max_response_bytes, 8 * 1024 * 1024);
        assert_eq!(c.rpc_timeout_ms, 10_000);
        assert_eq!(c.rpc_max_pending_inbound, 256);
    }

    #[test]
    fn device_defaults_do_not_subscribe_to_tx_gossip() {
        let c = NetConfig::device("fleet-1");
        assert_eq!(c.validate(), Ok(()));
        assert!(!c.subscribe_tx && !c.mdns && !c.kad_server);
        assert_eq!(c.target_peers, 16);
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
        assert_eq!(c.chain_id, "fleet-1");
    }

    #[test]
    fn zero_sized_queues_and_limits_are_rejected() {
        for edit in [
            (|c: &mut NetConfig| c.event_queue = 0) as fn(&mut NetConfig),
            |c| c.command_queue = 0,
            |c| c.max_connections = 0,
            |c| c.max_connections_per_peer = 0,
            |c| c.max_pending = 0,
            |c| c.gossip_max_transmit_size = 0,
            |c| c.chain_id = String::new(),
            |c| c.rpc_max_request_bytes = 0,
            |c| c.rpc_max_response_bytes = MAX_RPC_FRAME_BYTES + 1,
            |c| c.rpc_timeout_ms = 0,
            |c| c.rpc_max_pending_inbound = 0,
            |c| c.rpc_max_pending_outbound = 0,
        ] {
            let mut c = NetConfig::new("fleet-1");
            edit(&mut c);
            assert!(matches!(c.validate(), Err(NetError::InvalidConfig(_))));
        }
    }
}

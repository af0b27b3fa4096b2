//! The mesh's configuration and its defaults.

use libp2p::Multiaddr;
use meshward_core::tx::MAX_TX_BYTES;

use crate::NetError;

/// The port gateways listen on by default (TCP and QUIC), as in `meshward init`'s config.
pub const DEFAULT_PORT: u16 = 7800;

/// The largest gossiped transaction the configuration accepts (16 MiB): a sanity bound, the
/// ledger's own limit is far lower.
pub const MAX_GOSSIP_TRANSMIT_SIZE: usize = 16 * 1024 * 1024;

/// How the mesh listens, whom it dials and how much it holds.
///
/// Every queue and limit here is a bound on memory or sockets that a hostile peer could otherwise
/// grow. [`NetConfig::new`] gives defaults suitable for a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The chain id. It names the gossip topic (`meshward/<chain id>/tx/1`), so nodes of
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
    /// The largest transaction, in bytes, that is gossiped or accepted from gossip.
    pub gossip_max_transmit_size: usize,
    /// Capacity of the command channel from [`crate::Net`] handles to the swarm task.
    pub command_queue: usize,
    /// Capacity of the event channel from the swarm task to the node. When it is full, events are
    /// dropped (and received transactions are neither forwarded nor penalised).
    pub event_queue: usize,
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
            gossip_max_transmit_size: MAX_TX_BYTES,
            command_queue: 256,
            event_queue: 1024,
        }
    }

    /// The gossipsub topic for transactions of this chain.
    pub fn tx_topic(&self) -> String {
        format!("meshward/{}/tx/1", self.chain_id)
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
        assert_eq!(c.tx_topic(), "meshward/fleet-1/tx/1");
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
        ] {
            let mut c = NetConfig::new("fleet-1");
            edit(&mut c);
            assert!(matches!(c.validate(), Err(NetError::InvalidConfig(_))));
        }
    }
}

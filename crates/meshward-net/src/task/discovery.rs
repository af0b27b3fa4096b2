//! Discovery: bootstrap re-dials, Kademlia lookups while below `target_peers`, and the peers and
//! addresses identify, Kademlia and mDNS report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{identify, kad, Multiaddr, PeerId};
use tracing::{debug, info};

use crate::behaviour::IDENTIFY_PROTOCOL_VERSION;
use crate::NetEvent;

use super::dialing::dial_opts;
use super::{Task, MAX_LISTEN_ADDRS_PER_PEER};

/// While below `target_peers`, a Kademlia bootstrap (a lookup of our own id, which finds peers
/// near us) runs after this delay, doubling up to `DISCOVERY_INTERVAL_MAX`; a newly found peer
/// resets it. Kademlia's own periodic bootstrap (every 5 minutes) covers the rest.
pub(super) const DISCOVERY_INTERVAL_MIN: Duration = Duration::from_secs(1);
const DISCOVERY_INTERVAL_MAX: Duration = Duration::from_secs(30);
/// Addresses of one peer taken from discovery (mDNS, identify into Kademlia); the rest is ignored.
const MAX_ADDRS_PER_PEER: usize = 8;

impl Task {
    pub(super) fn redial_bootstrap(&mut self) {
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
    pub(super) fn discover(&mut self) {
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

    /// Identify: checks the peer runs Meshward, gives its listen addresses to Kademlia and keeps
    /// them for `NetEvent::Identified` and `Net::peer_addrs`.
    pub(super) fn on_identify(&mut self, peer_id: PeerId, info: identify::Info) {
        if info.protocol_version != IDENTIFY_PROTOCOL_VERSION {
            info!(peer = %peer_id, version = %info.protocol_version, expected = IDENTIFY_PROTOCOL_VERSION, "peer announced another identify protocol version: disconnecting");
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

    /// Kademlia: a new peer in the routing table.
    pub(super) fn on_kad_discovered(&mut self, peer: PeerId, addresses: kad::Addresses) {
        let addrs = addresses.into_vec();
        debug!(peer = %peer, "peer discovered by kademlia");
        self.discovery_interval = DISCOVERY_INTERVAL_MIN;
        self.emit(NetEvent::Discovered(peer, addrs.clone()));
        self.dial_discovered(peer, addrs);
    }

    /// mDNS: peers found on the LAN.
    pub(super) fn on_mdns_discovered(&mut self, found: Vec<(PeerId, Multiaddr)>) {
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
}

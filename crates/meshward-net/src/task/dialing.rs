//! Dialling for the node (`Net::dial`, `Net::dial_peer`): one dial per peer at a time, a bounded
//! number in flight, each caller answered once its connection is established or fails.

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};

use crate::bootstrap::peer_of;
use crate::NetError;

use super::{without_p2p, DialReply, Task, MAX_LISTEN_ADDRS_PER_PEER};

impl Task {
    pub(super) fn dial(&mut self, addr: Multiaddr, reply: DialReply) {
        let peer = peer_of(&addr);
        let opts = dial_opts(peer, &addr);
        self.start_dial(peer, opts, addr, reply);
    }

    pub(super) fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
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
}

/// How to dial `addr`: by peer id when it is known (never twice at once, never when already
/// connected), else to whoever answers there.
pub(super) fn dial_opts(peer: Option<PeerId>, addr: &Multiaddr) -> DialOpts {
    match peer {
        Some(peer) => DialOpts::peer_id(peer)
            .addresses(vec![without_p2p(addr.clone())])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build(),
        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
    }
}

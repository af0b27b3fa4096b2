//! The connection gate: refuses connections to and from denied peers and, on a gateway, from
//! every peer that is not a member of the fleet.
//!
//! The node feeds it from the ledger: revocations (denied peers) and, with
//! `NetConfig::members_only`, the members (validators, admins, active devices and the observers
//! the node's config lists). A refused peer is refused when we would dial it (if its id is known
//! before dialling) and, in any case, as soon as the handshake reveals its id, inbound or
//! outbound, before any other behaviour (gossip, rpc, Kademlia) sees it. Closing the connections
//! that already exist is the swarm task's job (`Swarm::disconnect_peer_id`), done in the same
//! step as [`Gate::deny`] or a member leaving.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, Endpoint, Multiaddr};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

/// The cause attached to a [`ConnectionDenied`] by the gate; the swarm task downcasts to it to
/// tell a refused peer from a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer} is denied by the connection gate")]
pub(crate) struct PeerDenied {
    pub peer: PeerId,
}

/// The cause attached to a [`ConnectionDenied`] for a peer that is not a fleet member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer} is not a member of the fleet")]
pub(crate) struct NotMember {
    pub peer: PeerId,
}

/// Who may connect, on a members-only gate: a rule the node gives ([`crate::Net::set_admission`]),
/// which reads the ledger, so it is never behind the committed state.
pub type Admission = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// A `NetworkBehaviour` holding the set of denied peers and, when only members are admitted,
/// the rule that says who is one.
///
/// The denied set mirrors the ledger's revoked devices, so the ledger bounds its size.
#[derive(Default)]
pub(crate) struct Gate {
    denied: HashSet<PeerId>,
    /// `Some`: only peers the rule accepts are admitted (a gateway); `None`: any peer not
    /// denied.
    members: Option<Admission>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("denied", &self.denied.len())
            .field("members_only", &self.members.is_some())
            .finish()
    }
}

impl Gate {
    /// Denies `peer` from now on. Returns whether it was newly denied.
    pub(crate) fn deny(&mut self, peer: PeerId) -> bool {
        self.denied.insert(peer)
    }

    /// Allows `peer` again. Returns whether it was denied.
    pub(crate) fn allow(&mut self, peer: &PeerId) -> bool {
        self.denied.remove(peer)
    }

    pub(crate) fn is_denied(&self, peer: &PeerId) -> bool {
        self.denied.contains(peer)
    }

    /// From now on, admits only members: nobody until [`Gate::set_admission`] gives the rule.
    pub(crate) fn members_only(&mut self) {
        if self.members.is_none() {
            self.members = Some(Arc::new(|_: &PeerId| false));
        }
    }

    /// Sets the rule of a members-only gate (a no-op on an open gate).
    pub(crate) fn set_admission(&mut self, rule: Admission) {
        if self.members.is_some() {
            self.members = Some(rule);
        }
    }

    /// Whether `peer` may connect now.
    pub(crate) fn admits(&self, peer: &PeerId) -> bool {
        !self.denied.contains(peer) && self.members.as_ref().is_none_or(|m| m(peer))
    }

    fn check(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self.denied.contains(&peer) {
            Err(ConnectionDenied::new(PeerDenied { peer }))
        } else if self.members.as_ref().is_some_and(|m| !m(&peer)) {
            Err(ConnectionDenied::new(NotMember { peer }))
        } else {
            Ok(())
        }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // The remote's id is unknown until the security handshake; it is checked right after.
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer {
            self.check(peer)?;
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/1".parse().unwrap()
    }

    #[test]
    fn denied_peer_is_refused_in_both_directions_until_allowed() {
        let mut gate = Gate::default();
        let bad = PeerId::random();
        let good = PeerId::random();
        assert!(gate.deny(bad));
        assert!(!gate.deny(bad));

        let c = ConnectionId::new_unchecked(1);
        let Err(err) = gate.handle_established_inbound_connection(c, bad, &addr(), &addr()) else {
            panic!("denied peer accepted");
        };
        assert_eq!(
            err.downcast_ref::<PeerDenied>(),
            Some(&PeerDenied { peer: bad })
        );
        assert!(gate
            .handle_established_outbound_connection(c, bad, &addr(), Endpoint::Dialer, PortUse::New)
            .is_err());
        assert!(gate
            .handle_pending_outbound_connection(c, Some(bad), &[], Endpoint::Dialer)
            .is_err());
        // An unknown id cannot be checked before the handshake.
        assert!(gate
            .handle_pending_outbound_connection(c, None, &[], Endpoint::Dialer)
            .is_ok());
        assert!(gate
            .handle_established_inbound_connection(c, good, &addr(), &addr())
            .is_ok());

        assert!(gate.allow(&bad));
        assert!(gate
            .handle_established_inbound_connection(c, bad, &addr(), &addr())
            .is_ok());
    }

    #[test]
    fn a_members_only_gate_admits_members_and_no_one_else() {
        let mut gate = Gate::default();
        let (member, stranger) = (PeerId::random(), PeerId::random());
        assert!(
            gate.admits(&stranger),
            "an open gate admits anyone not denied"
        );
        gate.members_only();
        assert!(!gate.admits(&member), "nobody until the rule is set");
        gate.set_admission(Arc::new(move |p: &PeerId| *p == member));
        assert!(gate.admits(&member));
        assert!(!gate.admits(&stranger));
        let c = ConnectionId::new_unchecked(1);
        let err = gate
            .handle_established_inbound_connection(c, stranger, &addr(), &addr())
            .err()
            .expect("a stranger is refused");
        assert_eq!(
            err.downcast_ref::<NotMember>().map(|n| n.peer),
            Some(stranger),
            "refused as not a member"
        );
        assert!(gate
            .handle_established_inbound_connection(c, member, &addr(), &addr())
            .is_ok());
        // A denied member stays refused.
        gate.deny(member);
        assert!(!gate.admits(&member));
    }
}

//! Bootstrap peers: dialled at start and re-dialled with exponential backoff.
//!
//! Plain state over `Instant`s (no clock, no swarm), so the backoff can be unit-tested. The swarm
//! task asks [`Bootstrap::due`] on every tick which entries to dial and reports each dial's fate.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// First re-dial delay.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest re-dial delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lived this long resets the backoff when it closes; one closed sooner (e.g.
/// refused by the remote's gate or limits) keeps backing off.
pub(crate) const STABLE_CONNECTION: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    addr: Multiaddr,
    /// From the address's `/p2p/` suffix, or learned from the first handshake.
    peer: Option<PeerId>,
    pending: Option<ConnectionId>,
    connected_since: Option<Instant>,
    next_attempt: Instant,
    backoff: Duration,
}

/// The bootstrap list and the re-dial state of each entry.
#[derive(Debug, Default)]
pub(crate) struct Bootstrap {
    entries: Vec<Entry>,
}

/// A peer id in the address's last component, if any.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Spreads re-dials by ±25% so that peers that lost each other do not re-dial in lockstep.
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

impl Bootstrap {
    /// All entries are due at `now`, except our own address.
    pub(crate) fn new(addrs: &[Multiaddr], local: PeerId, now: Instant) -> Self {
        let entries = addrs
            .iter()
            .filter(|a| peer_of(a) != Some(local))
            .map(|addr| Entry {
                addr: addr.clone(),
                peer: peer_of(addr),
                pending: None,
                connected_since: None,
                next_attempt: now,
                backoff: BACKOFF_MIN,
            })
            .collect();
        Bootstrap { entries }
    }

    /// Peers with a known id and the address to reach them, to seed Kademlia.
    pub(crate) fn known_peers(&self) -> impl Iterator<Item = (PeerId, Multiaddr)> + '_ {
        self.entries
            .iter()
            .filter_map(|e| e.peer.map(|p| (p, e.addr.clone())))
    }

    /// Entries to dial now: not connected, not being dialled, not denied, and past their backoff.
    /// Each returned entry is marked as dialled (its next backoff doubles); report the dial with
    /// [`Bootstrap::dialing`] or [`Bootstrap::dial_failed`].
    pub(crate) fn due(
        &mut self,
        now: Instant,
        is_connected: impl Fn(&PeerId) -> bool,
        is_denied: impl Fn(&PeerId) -> bool,
    ) -> Vec<(usize, Option<PeerId>, Multiaddr)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if let Some(peer) = e.peer {
                if is_connected(&peer) {
                    continue;
                }
                if is_denied(&peer) {
                    continue;
                }
            }
            if e.pending.is_some() || now < e.next_attempt {
                continue;
            }
            e.next_attempt = now + jittered(e.backoff);
            e.backoff = (e.backoff * 2).min(BACKOFF_MAX);
            out.push((i, e.peer, e.addr.clone()));
        }
        out
    }

    /// The dial of entry `index` started as `connection`.
    pub(crate) fn dialing(&mut self, index: usize, connection: ConnectionId) {
        if let Some(e) = self.entries.get_mut(index) {
            e.pending = Some(connection);
        }
    }

    /// A connection was established; if it was a bootstrap dial, learn the peer's id.
    pub(crate) fn established(&mut self, connection: ConnectionId, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.pending == Some(connection) {
                e.pending = None;
                e.peer = Some(peer);
            }
            if e.peer == Some(peer) && e.connected_since.is_none() {
                e.connected_since = Some(now);
            }
        }
    }

    /// A dial failed. A refusal after the handshake still tells us who answered.
    pub(crate) fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>) {
        for e in &mut self.entries {
            if e.pending == Some(connection) {
                e.pending = None;
                if e.peer.is_none() {
                    e.peer = peer;
                }
            }
        }
    }

    /// The last connection to `peer` closed: schedule the re-dial.
    pub(crate) fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.peer != Some(peer) {
                continue;
            }
            if let Some(since) = e.connected_since.take() {
                if now.saturating_duration_since(since) >= STABLE_CONNECTION {
                    e.backoff = BACKOFF_MIN;
                }
            }
            e.next_attempt = e.next_attempt.max(now + jittered(e.backoff));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr_with(peer: Option<PeerId>) -> Multiaddr {
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/7800".parse().unwrap();
        match peer {
            Some(p) => a.with(Protocol::P2p(p)),
            None => a,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_skips_connected_or_denied_peers() {
        let now = Instant::now();
        let local = PeerId::random();
        let remote = PeerId::random();
        let mut b = Bootstrap::new(
            &[addr_with(Some(remote)), addr_with(Some(local))],
            local,
            now,
        );
        assert_eq!(b.entries.len(), 1, "our own address is skipped");
        assert_eq!(b.known_peers().count(), 1);

        let no = |_: &PeerId| false;
        let mut t = now;
        let mut delays = Vec::new();
        for i in 0..10u64 {
            let due = b.due(t, no, no);
            assert_eq!(due.len(), 1);
            b.dialing(0, ConnectionId::new_unchecked(i as usize));
            assert!(b.due(t, no, no).is_empty(), "one dial at a time");
            b.dial_failed(ConnectionId::new_unchecked(i as usize), None);
            let next = b.entries[0].next_attempt;
            delays.push(next - t);
            assert!(b.due(next - Duration::from_millis(1), no, no).is_empty());
            t = next;
        }
        assert!(delays[0] <= BACKOFF_MIN.mul_f64(1.25));
        assert!(delays[9] <= BACKOFF_MAX.mul_f64(1.25));
        assert!(delays[9] >= BACKOFF_MAX.mul_f64(0.75));

        let yes = |_: &PeerId| true;
        assert!(b.due(t + BACKOFF_MAX * 2, yes, no).is_empty());
        assert!(b.due(t + BACKOFF_MAX * 2, no, yes).is_empty());
    }

    #[test]
    fn unknown_peer_is_learned_and_a_long_connection_resets_backoff() {
        let now = Instant::now();
        let remote = PeerId::random();
        let mut b = Bootstrap::new(&[addr_with(None)], PeerId::random(), now);
        let no = |_: &PeerId| false;
        for i in 0..5 {
            let t = b.entries[0].next_attempt;
            assert_eq!(b.due(t, no, no).len(), 1);
            b.dialing(0, ConnectionId::new_unchecked(i));
            b.dial_failed(ConnectionId::new_unchecked(i), None);
        }
        let t = b.entries[0].next_attempt;
        assert_eq!(b.due(t, no, no).len(), 1);
        b.dialing(0, ConnectionId::new_unchecked(99));
        b.established(ConnectionId::new_unchecked(99), remote, t);
        assert_eq!(b.entries[0].peer, Some(remote));

        // A short-lived connection keeps the backoff.
        b.disconnected(remote, t + Duration::from_secs(1));
        assert!(b.entries[0].backoff > BACKOFF_MIN * 8);

        b.established(ConnectionId::new_unchecked(100), remote, t);
        let later = t + STABLE_CONNECTION + Duration::from_secs(1);
        b.disconnected(remote, later);
        assert_eq!(b.entries[0].backoff, BACKOFF_MIN);
    }
}

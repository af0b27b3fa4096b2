//! Commands from the `Net` handles: the `Command` enum and how the task carries each out.

use libp2p::gossipsub::{MessageAcceptance, PublishError};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::{NetError, RequestId, TxMessageId, TxVerdict};

use super::{without_p2p, DialReply, RpcReply, Task, MAX_LISTEN_ADDRS_PER_PEER};

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
    SetAdmission {
        rule: crate::gate::Admission,
        reply: oneshot::Sender<()>,
    },
    Disconnect {
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

impl Task {
    /// Handles a command; returns the reply of a shutdown request.
    pub(super) fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
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
            Command::SetAdmission { rule, reply } => {
                self.swarm.behaviour_mut().gate.set_admission(rule);
                // Peers connected before that the rule does not admit (a gateway sets the rule
                // right after start) go now.
                let gone: Vec<PeerId> = self
                    .swarm
                    .connected_peers()
                    .filter(|p| !self.swarm.behaviour().gate.admits(p))
                    .copied()
                    .collect();
                for peer in gone {
                    info!(peer = %peer, "peer is not a fleet member: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                    self.forget_requests_of(peer);
                }
                let _ = reply.send(());
            }
            Command::Disconnect { peer, reply } => {
                let _ = self.swarm.disconnect_peer_id(peer);
                self.forget_requests_of(peer);
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
}

//! The rpc tables: inbound requests handed to the node until it answers or they expire, and our
//! own requests until libp2p reports their response or failure.

use libp2p::request_response::{self, InboundRequestId, OutboundFailure, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::DialError;
use libp2p::PeerId;
use tracing::debug;

use crate::{NetError, NetEvent, RequestId, RpcFailure};

use super::{RpcReply, Task};

/// An inbound rpc request handed to the node, awaiting its answer.
pub(super) struct InboundRequest {
    pub(super) peer: PeerId,
    pub(super) request_id: InboundRequestId,
    pub(super) channel: ResponseChannel<Vec<u8>>,
}

impl Task {
    /// Sends an rpc request, dialling the peer first if needed.
    pub(super) fn request(&mut self, peer: PeerId, bytes: Vec<u8>, reply: RpcReply) {
        let fail = |reason| Err(NetError::Rpc { peer, reason });
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(fail(RpcFailure::Dial("that is our own peer id".to_owned())));
            return;
        }
        if self.swarm.behaviour().gate.is_denied(&peer) {
            let _ = reply.send(Err(NetError::Denied(peer)));
            return;
        }
        if self.outbound.len() >= self.rpc_max_pending_outbound {
            let _ = reply.send(fail(RpcFailure::Busy));
            return;
        }
        if !self.swarm.is_connected(&peer) {
            // We dial rather than leave it to request-response, which reports a failed dial
            // without its cause. A dial under way is joined: request-response sends the request
            // once that one connects, or fails it if it does not.
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    let _ = reply.send(fail(RpcFailure::Dial(e.to_string())));
                    return;
                }
            }
        }
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, bytes);
        self.outbound.insert(id, (peer, reply));
    }

    /// Drops the unanswered requests of a peer (their channels close: the peer sees an error).
    pub(super) fn forget_requests_of(&mut self, peer: PeerId) {
        let ids: Vec<u64> = self
            .inbound
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.inbound.remove(&id) {
                self.inbound_ids.remove(&r.request_id);
            }
        }
    }

    fn forget_request(&mut self, request_id: InboundRequestId) {
        if let Some(id) = self.inbound_ids.remove(&request_id) {
            self.inbound.remove(&id);
        }
    }

    pub(super) fn on_rpc_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_request(peer, request_id, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    // Denied while the request was in flight: the peer is no longer trusted.
                    let result = if self.swarm.behaviour().gate.is_denied(&peer) {
                        Err(NetError::Denied(peer))
                    } else {
                        Ok(response)
                    };
                    let _ = reply.send(result);
                }
                self.forget_dial_error(peer);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "rpc request failed");
                let reason = match error {
                    OutboundFailure::DialFailure => RpcFailure::Dial(
                        self.dial_errors
                            .get(&peer)
                            .cloned()
                            .unwrap_or_else(|| "dial failed".to_owned()),
                    ),
                    OutboundFailure::Timeout => RpcFailure::Timeout,
                    OutboundFailure::ConnectionClosed => RpcFailure::ConnectionClosed,
                    OutboundFailure::UnsupportedProtocols => RpcFailure::UnsupportedProtocol,
                    OutboundFailure::Io(e) => RpcFailure::Stream(e.to_string()),
                };
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Rpc { peer, reason }));
                }
                self.forget_dial_error(peer);
            }
            Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "inbound rpc request failed");
                self.forget_request(request_id);
            }
            Event::ResponseSent { request_id, .. } => self.forget_request(request_id),
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        // Returning drops `channel`: the stream closes and the requester sees an error.
        if self.swarm.behaviour().gate.is_denied(&peer) {
            // Its connection is closing: requests already on the way end here.
            debug!(peer = %peer, "rpc request of denied peer dropped");
            return;
        }
        if self.inbound.len() >= self.rpc_max_pending_inbound {
            debug!(
                peer = %peer,
                pending = self.inbound.len(),
                "rpc request dropped: too many unanswered requests"
            );
            return;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let event = NetEvent::Request {
            from: peer,
            id: RequestId(id),
            bytes,
        };
        if self.emit(event) {
            self.inbound.insert(
                id,
                InboundRequest {
                    peer,
                    request_id,
                    channel,
                },
            );
            self.inbound_ids.insert(request_id, id);
        }
    }

    /// Forgets why dials to `peer` failed once no request waits on it.
    fn forget_dial_error(&mut self, peer: PeerId) {
        if !self.outbound.values().any(|(p, _)| *p == peer) {
            self.dial_errors.remove(&peer);
        }
    }
}

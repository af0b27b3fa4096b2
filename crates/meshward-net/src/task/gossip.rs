//! Gossip: each received message is handed to the node for a verdict, or judged here when it
//! comes from a denied peer, is oversized, or the event queue is full.

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::PeerId;
use tracing::debug;

use crate::{NetEvent, TxMessageId};

use super::Task;

impl Task {
    pub(super) fn on_gossip(
        &mut self,
        via: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let from = message.source.unwrap_or(via);
        let id = TxMessageId { message_id, via };
        let gate = &self.swarm.behaviour().gate;
        let verdict = if gate.is_denied(&from) || gate.is_denied(&via) {
            // The relay may not know of the revocation yet: no penalty.
            debug!(peer = %from, "tx of denied peer dropped");
            Some(MessageAcceptance::Ignore)
        } else if message.data.len() > self.gossip_max_transmit_size {
            debug!(peer = %via, bytes = message.data.len(), "oversized tx rejected");
            Some(MessageAcceptance::Reject)
        } else if !self.emit(NetEvent::Tx {
            from,
            id: id.clone(),
            bytes: message.data,
        }) {
            Some(MessageAcceptance::Ignore)
        } else {
            None
        };
        if let Some(acceptance) = verdict {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id.message_id, &id.via, acceptance);
        }
    }
}

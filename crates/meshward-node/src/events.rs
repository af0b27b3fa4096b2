//! Live events: what a committed block did, for the dashboard and for scripts
//! (`GET /v1/events`, Server-Sent Events).
//!
//! Owner: the [`EventHub`], a small type around a bounded broadcast channel (no lock of ours).
//! The node's follower of committed heights ([`crate::follower`]) calls
//! [`EventHub::publish_block`] once per committed block, in height order, with no height
//! skipped: it sends one [`Event::Block`], then one [`Event::Anchor`] per anchor and one
//! [`Event::Quarantine`] per revocation (by the admin, or by committed evidence), in block
//! order. Every transaction in a certified block applied (a block with a rejected transaction is
//! never certified), so nothing here re-checks them. The channel holds [`EVENT_QUEUE`] events: a
//! subscriber that falls further behind loses the oldest and is told how many; publishing never
//! waits for a subscriber.
//!
//! ```
//! use meshward_node::events::Event;
//! let ev = Event::Block { height: 7, hash: "ab".into(), time_ms: 1, txs: 0 };
//! assert_eq!(ev.kind(), "block");
//! assert_eq!(serde_json::to_value(&ev).unwrap()["type"], "block");
//! ```

use meshward_core::tx::{Evidence, Recipient, TxBody};
use meshward_core::CertifiedBlock;

use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it loses the oldest.
pub const EVENT_QUEUE: usize = 1024;

pub use meshward_api::types::{Event, EVENT_KINDS};

/// The events a committed block gives, in order: the block, then its anchors and revocations in
/// transaction order.
pub fn from_block(block: &CertifiedBlock) -> Vec<Event> {
    let h = &block.block.header;
    let height = h.height;
    let mut out = vec![Event::Block {
        height,
        hash: h.hash().to_hex(),
        time_ms: h.time_ms,
        txs: h.tx_count,
    }];
    for tx in &block.block.txs {
        match &tx.body {
            TxBody::Anchor(a) => out.push(Event::Anchor {
                commitment: a.commitment.to_hex(),
                sender: tx.signer.peer_id(),
                recipient: match &a.recipient {
                    Recipient::Device(d) => d.peer_id(),
                    Recipient::Group(g) => format!("group:{g}"),
                },
                count: a.count,
                height,
            }),
            TxBody::Revoke { device, reason } => out.push(Event::Quarantine {
                device: device.peer_id(),
                reason: reason.clone(),
                height,
                by_evidence: false,
            }),
            TxBody::Evidence(Evidence::Validator(e)) => out.push(Event::Conviction {
                validator: e.validator.peer_id(),
                vote_height: e.height,
                height,
            }),
            TxBody::Evidence(ev) => {
                // The ledger convicts the signer of the evidence's anchors.
                let (convicted, reason) = match ev {
                    Evidence::Equivocation { a, .. } => (a.signer, "evidence: equivocation"),
                    Evidence::PolicyViolation { anchor } => {
                        (anchor.signer, "evidence: policy violation")
                    }
                    Evidence::Validator(_) => continue,
                };
                out.push(Event::Quarantine {
                    device: convicted.peer_id(),
                    reason: reason.into(),
                    height,
                    by_evidence: true,
                });
            }
            _ => {}
        }
    }
    out
}

/// Live ledger events for `GET /v1/events` subscribers.
pub struct EventHub {
    sender: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub whose subscribers may lag [`EVENT_QUEUE`] events.
    pub fn new() -> Self {
        EventHub {
            sender: broadcast::channel(EVENT_QUEUE).0,
        }
    }

    /// Publishes what a committed block did to every subscriber. Cheap and never blocks: with
    /// no subscriber the events are dropped, and a slow subscriber loses the oldest ones (it is
    /// told how many).
    pub fn publish_block(&self, block: &CertifiedBlock) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for ev in from_block(block) {
            // Fails only when every subscriber has gone since the check: nothing to do.
            let _ = self.sender.send(ev);
        }
    }

    /// Publishes one node-local event (a mailbox deposit). Never waits.
    pub fn publish(&self, ev: Event) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(ev);
        }
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// How many subscribers there are.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

//! The follower of committed heights: applies every committed block, in height order and with
//! none skipped, to the mesh's connection gate, the live event hub and the chain metrics.
//!
//! Why by height and not by event: consensus reports commits on a bounded broadcast channel,
//! and a subscriber that falls behind loses the oldest events. Were the gate fed by those
//! events, a revocation in a skipped block would never reach it until a restart (the ledger
//! would still refuse the device's transactions, but every gateway would keep accepting its
//! connections). So the follower keeps "applied up to height H" and, whenever it is woken (by
//! any consensus event, by a lag notice, or by the event loop's tick), applies every block in
//! `(H, tip]` from the store, which consensus writes before it reports anything. A lost wake-up
//! only delays the next one; it can never skip a block.
//!
//! Each block also goes to the console's [`crate::stats::ChainStats`] (throughput, validators'
//! signing record, revocations) and to the metrics.
//!
//! Owner: the node's event loop holds the [`Follower`]; nothing else touches it. One call of
//! [`Follower::catch_up`] applies at most [`MAX_BLOCKS_PER_STEP`] blocks, so a node that has just
//! synced thousands of blocks stays responsive; the next wake-up continues where it stopped.

use std::collections::BTreeSet;

use meshward_core::ids::PublicKey;
use meshward_core::state::{Account, StateView};
use meshward_core::tx::{Evidence, TxBody};
use meshward_core::CertifiedBlock;
use meshward_net::Net;
use tracing::{info, warn};

use crate::metrics::ValidatorLabel;
use crate::stats::{Revocation, SIGNING_WINDOW};
use crate::Gateway;

/// Most blocks one [`Follower::catch_up`] applies.
pub const MAX_BLOCKS_PER_STEP: u64 = 256;

/// What the gate must do about one account's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The key to refuse.
    pub key: PublicKey,
    /// True when the device is revoked; false for the enrolled key of a device that rotated
    /// to another.
    pub revoked: bool,
}

/// The keys the gate refuses for `account`: a revoked device's enrolled and current keys, or
/// the enrolled key of an active device that rotated to another key.
pub fn denials(account: &Account) -> Vec<Denial> {
    let Some(d) = &account.device else {
        return Vec::new();
    };
    if !d.is_active() {
        let mut v = vec![Denial {
            key: account.id,
            revoked: true,
        }];
        if account.sign_key != account.id {
            v.push(Denial {
                key: account.sign_key,
                revoked: true,
            });
        }
        v
    } else if account.sign_key != account.id {
        vec![Denial {
            key: account.id,
            revoked: false,
        }]
    } else {
        Vec::new()
    }
}

/// The accounts whose gate denials a block may change: revoked devices (by the admin or by
/// evidence) and devices that rotated their keys.
pub fn touched_accounts(block: &CertifiedBlock) -> BTreeSet<PublicKey> {
    block
        .block
        .txs
        .iter()
        .filter_map(|tx| match &tx.body {
            TxBody::Revoke { device, .. } => Some(*device),
            TxBody::Evidence(Evidence::Equivocation { a, .. }) => Some(a.signer),
            TxBody::Evidence(Evidence::PolicyViolation { anchor }) => Some(anchor.signer),
            TxBody::RotateKeys { .. } => Some(tx.signer),
            _ => None,
        })
        .collect()
}

/// The height up to which committed blocks have been applied (see the module doc).
#[derive(Debug)]
pub struct Follower {
    applied: u64,
    /// The validators signing at the last applied height, to log when one stops or comes back.
    signing: Option<BTreeSet<PublicKey>>,
}

impl Follower {
    /// Starts following at the store's tip: every device already revoked (and every enrolled
    /// key already rotated away) is refused from the first connection, and blocks above the tip
    /// are applied as they commit.
    pub async fn start(gw: &Gateway, net: &Net) -> Follower {
        let (applied, deny) = {
            let store = gw.ledger.read();
            let deny: Vec<Denial> = store.state().accounts().flat_map(denials).collect();
            let tip = store.tip().map_or(0, |(h, _)| h);
            // The signing record starts from the last K blocks, without counting them as
            // throughput.
            let vals = validator_keys(&store);
            let now = meshward_core::clock::now_ms();
            for h in tip.saturating_sub(SIGNING_WINDOW + 1).max(1)..=tip {
                if let Ok(Some(b)) = store.block(h) {
                    gw.stats.on_block(&b, &vals, now, false);
                }
            }
            (tip, deny)
        };
        apply_denials(net, &deny).await;
        gw.metrics.height.set(applied as i64);
        gw.metrics.gate_applied_height.set(applied as i64);
        info!(
            height = applied,
            denied = deny.len(),
            "connection gate applied up to the store's tip"
        );
        Follower {
            applied,
            signing: None,
        }
    }

    /// Logs validators that stopped signing (the last K last commits lack them, so round 0
    /// skips them as proposer) and validators that signed again.
    fn log_signing_changes(&mut self, gw: &Gateway, height: u64) {
        let now = gw.stats.active();
        if let Some(before) = &self.signing {
            for v in before.difference(&now) {
                warn!(validator = %v, height, window = SIGNING_WINDOW, "validator stopped signing: skipped as round-0 proposer");
            }
            // Before the first certificates every validator "starts" signing: not news.
            if !before.is_empty() {
                for v in now.difference(before) {
                    info!(validator = %v, height, "validator signing again");
                }
            }
        }
        self.signing = Some(now);
    }

    /// The height up to which blocks have been applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies committed blocks above the applied height, at most [`MAX_BLOCKS_PER_STEP`] of
    /// them; returns how many. A block the store cannot read stops the step (it is retried at
    /// the next wake-up) rather than being skipped.
    pub async fn catch_up(&mut self, gw: &Gateway, net: &Net) -> u64 {
        let tip = gw.ledger.tip_height();
        let mut done = 0;
        while self.applied < tip && done < MAX_BLOCKS_PER_STEP {
            let h = self.applied + 1;
            let (block, deny) = {
                let store = gw.ledger.read();
                let block = match store.block(h) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        warn!(height = h, "committed block missing from the store");
                        break;
                    }
                    Err(e) => {
                        warn!(height = h, error = %e, "committed block unreadable; will retry");
                        break;
                    }
                };
                // Denials are read from the current state: a device revoked at `h` is still
                // revoked at the tip (revocation is final); a device that rotated at `h` and
                // again later has its enrolled key denied either way.
                let st = store.state();
                let deny: Vec<Denial> = touched_accounts(&block)
                    .iter()
                    .filter_map(|k| st.account(k))
                    .flat_map(denials)
                    .collect();
                let now = meshward_core::clock::now_ms();
                let update = gw
                    .stats
                    .on_block(&block, &validator_keys(&store), now, true);
                for (v, h) in update.last_signed {
                    gw.metrics
                        .validator_last_signed
                        .get_or_create(&ValidatorLabel {
                            validator: v.peer_id(),
                        })
                        .set(h as i64);
                }
                for v in update.missed {
                    gw.metrics
                        .validator_missed
                        .get_or_create(&ValidatorLabel {
                            validator: v.peer_id(),
                        })
                        .inc();
                }
                for (device, by_evidence) in revoked_in(&block) {
                    let reason = match st.account(&device).and_then(|a| a.device.as_ref()) {
                        Some(meshward_core::state::Device {
                            status: meshward_core::state::DeviceStatus::Revoked { reason, .. },
                            ..
                        }) => reason.clone(),
                        _ => String::new(),
                    };
                    if by_evidence {
                        gw.metrics.quarantines.inc();
                    }
                    gw.stats.on_revocation(Revocation {
                        device,
                        reason,
                        height: h,
                        by_evidence,
                        at_ms: now,
                    });
                }
                (block, deny)
            };
            self.log_signing_changes(gw, h);
            gw.events.publish_block(&block);
            apply_denials(net, &deny).await;
            gw.metrics.height.set(h as i64);
            gw.metrics
                .finalized_txs
                .inc_by(block.block.txs.len() as u64);
            self.applied = h;
            gw.metrics.gate_applied_height.set(h as i64);
            done += 1;
        }
        done
    }
}

fn validator_keys(store: &meshward_store::Store) -> Vec<PublicKey> {
    store
        .state()
        .validators()
        .validators
        .iter()
        .map(|v| v.key)
        .collect()
}

/// The devices a block revokes, each with whether committed evidence (rather than the
/// admins) revoked it.
pub fn revoked_in(block: &CertifiedBlock) -> Vec<(PublicKey, bool)> {
    block
        .block
        .txs
        .iter()
        .filter_map(|tx| match &tx.body {
            TxBody::Revoke { device, .. } => Some((*device, false)),
            TxBody::Evidence(Evidence::Equivocation { a, .. }) => Some((a.signer, true)),
            TxBody::Evidence(Evidence::PolicyViolation { anchor }) => Some((anchor.signer, true)),
            _ => None,
        })
        .collect()
}

/// Whether the device `device`, revoked at `height`, was revoked by committed evidence (a
/// quarantine) rather than by the admins: read from the block that revoked it. `false` when
/// the block cannot be read.
pub fn revoked_by_evidence(store: &meshward_store::Store, device: &PublicKey, height: u64) -> bool {
    match store.block(height) {
        Ok(Some(b)) => revoked_in(&b)
            .iter()
            .any(|(d, by_evidence)| d == device && *by_evidence),
        _ => false,
    }
}

async fn apply_denials(net: &Net, deny: &[Denial]) {
    for d in deny {
        let peer = meshward_net::peer_id_of(&d.key);
        if d.revoked {
            info!(device = %d.key, %peer, "device revoked: refusing its connections");
        }
        net.deny(peer).await;
    }
}

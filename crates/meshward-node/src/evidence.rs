//! Evidence a gateway builds from what it sees: two different anchors one device signed with
//! the same sequence number, or an anchor the policy forbids.
//!
//! These only assemble the evidence. Whether it holds (signatures, an active device, the
//! policy and its timestamp rule) is decided by the ledger's own `check_evidence` when the
//! evidence transaction is admitted to the mempool, so invalid evidence is refused there and
//! never gossiped.

use meshward_core::tx::{Evidence, Tx, TxBody};

/// Equivocation evidence from two anchors with the same signer and sequence number but
/// different bodies, in a canonical order so every gateway builds the same evidence.
pub fn equivocation(a: &Tx, b: &Tx) -> Option<Evidence> {
    let both_anchors = matches!(a.body, TxBody::Anchor(_)) && matches!(b.body, TxBody::Anchor(_));
    if !both_anchors || a.signer != b.signer || a.seq != b.seq || a.body == b.body {
        return None;
    }
    let (x, y) = if a.id() < b.id() { (a, b) } else { (b, a) };
    Some(Evidence::Equivocation {
        a: Box::new(x.clone()),
        b: Box::new(y.clone()),
    })
}

/// Policy-violation evidence from an anchor the ledger refused as forbidden by the policy.
pub fn policy_violation(anchor: &Tx) -> Option<Evidence> {
    matches!(anchor.body, TxBody::Anchor(_)).then(|| Evidence::PolicyViolation {
        anchor: Box::new(anchor.clone()),
    })
}

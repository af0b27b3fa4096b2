//! Evidence a gateway builds from what it sees: two different anchors that one device signed
//! with the same sequence number.

use meshward_core::state::{State, StateView};
use meshward_core::tx::{Evidence, Tx, TxBody};

/// Equivocation evidence if `a` and `b` are two different, validly signed anchors from the same
/// device account with the same sequence number. Signatures are checked against the signer's
/// current key, so a forged second transaction never becomes evidence.
pub fn equivocation(state: &State, a: &Tx, b: &Tx) -> Option<Evidence> {
    if a.signer != b.signer || a.seq != b.seq || a.body == b.body {
        return None;
    }
    if !matches!(a.body, TxBody::Anchor(_)) || !matches!(b.body, TxBody::Anchor(_)) {
        return None;
    }
    let acc = state.account(&a.signer)?;
    acc.device.as_ref().filter(|d| d.is_active())?;
    let chain = state.chain_id();
    for tx in [a, b] {
        acc.sign_key
            .verify(&tx.signing_bytes(chain), &tx.sig)
            .ok()?;
    }
    // Canonical order, so every gateway builds the same evidence.
    let (x, y) = if a.id() < b.id() { (a, b) } else { (b, a) };
    Some(Evidence::Equivocation {
        a: Box::new(x.clone()),
        b: Box::new(y.clone()),
    })
}

/// Policy-violation evidence if `anchor` is a validly signed anchor, made after the current
/// policy was set, that the policy forbids. The ledger checks the same again when the evidence
/// is applied; this only keeps a gateway from submitting evidence that cannot hold.
pub fn policy_violation(state: &State, anchor: &Tx) -> Option<Evidence> {
    let TxBody::Anchor(a) = &anchor.body else {
        return None;
    };
    if a.timestamp_ms <= state.policy().changed_ms {
        return None;
    }
    let acc = state.account(&anchor.signer)?;
    let dev = acc.device.as_ref().filter(|d| d.is_active())?;
    acc.sign_key
        .verify(&anchor.signing_bytes(state.chain_id()), &anchor.sig)
        .ok()?;
    match meshward_core::ledger::anchor_allowed(state, dev, a) {
        Err(meshward_core::Reject::PolicyForbids { .. }) => Some(Evidence::PolicyViolation {
            anchor: Box::new(anchor.clone()),
        }),
        _ => None,
    }
}

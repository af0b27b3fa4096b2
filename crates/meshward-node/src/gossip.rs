//! Gossip of transactions: batching what waits in the gossip queue into one message, and
//! admitting the batches peers send.

use meshward_net::TxVerdict;
use tokio::sync::mpsc;

use crate::mempool::AdmitError;
use crate::txpool::TxPool;

/// Most transactions in one gossip message. Transactions waiting to be gossiped go out together,
/// so a busy node sends (and its peers check) one signed message per batch, not per transaction.
pub(crate) const GOSSIP_BATCH_TXS: usize = 512;
/// Gossip messages being admitted at once; the node reads no further mesh events until one
/// finishes, and the mesh's bounded event queue takes the overflow.
pub(crate) const GOSSIP_ADMIT_TASKS: usize = 2;

/// Takes `first` and what else waits in `queue` (without waiting for more), up to
/// [`GOSSIP_BATCH_TXS`] transactions whose list encoding fits in `max_bytes`: a transaction is
/// added only while the batch leaves room for the largest one.
pub(crate) fn gossip_batch(
    first: Vec<u8>,
    queue: &mut mpsc::Receiver<Vec<u8>>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    // Count and length prefixes are 4 bytes each.
    let budget = max_bytes.saturating_sub(meshward_core::tx::MAX_TX_BYTES + 8);
    let mut bytes = 8 + first.len();
    let mut batch = vec![first];
    while batch.len() < GOSSIP_BATCH_TXS && bytes <= budget {
        let Ok(next) = queue.try_recv() else { break };
        bytes += 4 + next.len();
        batch.push(next);
    }
    batch
}

/// Admits a gossip message (a list of transactions) and gives the verdict the mesh acts on:
/// `Reject` (the relayer is penalised) for a message that does not decode or carries a bad
/// signature; `Accept` (forwarded) when every transaction in it is now pending here; `Ignore`
/// otherwise (stale, or no room: not the relayer's fault).
pub(crate) fn admit_gossip(pool: &TxPool, bytes: &[u8]) -> TxVerdict {
    let Ok(txs) = meshward_core::tx::decode_tx_list(bytes, GOSSIP_BATCH_TXS) else {
        return TxVerdict::Reject;
    };
    let results = pool.submit_batch(txs, false);
    let bad_signature = results.iter().any(|r| {
        matches!(
            r,
            Err(AdmitError::Rejected(meshward_core::Reject::BadSignature))
        )
    });
    if bad_signature {
        TxVerdict::Reject
    } else if results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(AdmitError::Duplicate)))
    {
        TxVerdict::Accept
    } else {
        TxVerdict::Ignore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gossip_batch_takes_what_waits_up_to_its_limits() {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2 * GOSSIP_BATCH_TXS);
        for i in 0..GOSSIP_BATCH_TXS + 10 {
            tx.try_send(vec![i as u8; 100]).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let big = 4 * meshward_core::tx::MAX_TX_BYTES;
        assert_eq!(gossip_batch(first, &mut rx, big).len(), GOSSIP_BATCH_TXS);
        // The rest, without waiting for more.
        let first = rx.recv().await.unwrap();
        assert_eq!(gossip_batch(first, &mut rx, big).len(), 10);
        // No room beside the largest transaction: one at a time.
        tx.try_send(vec![1; 100]).unwrap();
        tx.try_send(vec![2; 100]).unwrap();
        let first = rx.recv().await.unwrap();
        let small = meshward_core::tx::MAX_TX_BYTES + 8;
        assert_eq!(gossip_batch(first, &mut rx, small), vec![vec![1; 100]]);
        // Every batch stays within the limit it was given.
        let limit = meshward_core::tx::MAX_TX_BYTES + 8 + 1000;
        for _ in 0..20 {
            tx.try_send(vec![3; meshward_core::tx::MAX_TX_BYTES])
                .unwrap();
        }
        while let Ok(first) = rx.try_recv() {
            let batch = gossip_batch(first, &mut rx, limit);
            assert!(meshward_core::tx::encode_tx_list(&batch).len() <= limit);
        }
    }
}

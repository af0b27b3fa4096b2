//! Reads of a store: blocks by height, the hash, transaction and commitment indexes, and anchor
//! proofs with the validator-set handoffs they need. Each is one redb read transaction, so reads
//! run concurrently with each other and with the one writer.

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::light::{Inclusion, TxProof, MAX_HANDOFFS, MAX_KEY_CHANGES};
use meshward_core::tx::{Tx, TxBody};
use meshward_core::CertifiedBlock;
use redb::{ReadTransaction, ReadableDatabase};

use crate::compact;
use crate::error::{Corruption, ReadError};
use crate::format::{
    location, prefix, split_location, BLOCK_HASH_IDX, COMMITMENT_IDX, HANDOFFS, KEY_CHANGES, TX_IDX,
};
use crate::rows::key_change_of;
use crate::store::{read_block, read_head, read_row, Fault, Store};

impl Store {
    /// The canonical encoding of the certified block at `height`, as sync sends it.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.block(height)?.map(|b| b.to_bytes()))
    }

    /// The certified block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<CertifiedBlock>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            read_block(&rtx, height, &self.env())
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// The height of the block whose header hashes to `hash`.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(BLOCK_HASH_IDX)?;
            let p = prefix(hash);
            let env = self.env();
            for row in index.range((p, 0u64)..=(p, u64::MAX))? {
                let h = row?.0.value().1;
                if read_head(&rtx, h, &env)?.is_some_and(|head| head.header.hash() == *hash) {
                    return Ok(Some(h));
                }
            }
            Ok(None)
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// The transaction at `index` of block `height`, rebuilt from its row without rebuilding
    /// the others.
    fn tx_at(&self, rtx: &ReadTransaction, height: u64, index: u32) -> Result<Option<Tx>, Fault> {
        let Some(row) = read_row(rtx, height)? else {
            return Ok(None);
        };
        compact::decode_tx_at(&row, height, index as usize, &self.env())
            .map_err(|e| Fault::corrupt(height, Corruption::Decode(e)))
    }

    /// Where the transaction with id `id` is: (height, transaction index), once final.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<(u64, u32)>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(TX_IDX)?;
            let p = prefix(id);
            for row in index.range((p, 0u64)..=(p, u64::MAX))? {
                let (h, i) = split_location(row?.0.value().1);
                if self.tx_at(&rtx, h, i)?.is_some_and(|tx| tx.id() == *id) {
                    return Ok(Some((h, i)));
                }
            }
            Ok(None)
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// Where the first anchor of `commitment` is: (height, transaction index).
    pub fn anchor_location(&self, commitment: &Hash) -> Result<Option<(u64, u32)>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(COMMITMENT_IDX)?;
            let p = prefix(commitment);
            // Rows come in location order, so the first confirmed one is the first anchor.
            for row in index.range((p, 0u64)..=(p, u64::MAX))? {
                let (h, i) = split_location(row?.0.value().1);
                let hit = self.tx_at(&rtx, h, i)?.is_some_and(
                    |tx| matches!(&tx.body, TxBody::Anchor(a) if a.commitment == *commitment),
                );
                if hit {
                    return Ok(Some((h, i)));
                }
            }
            Ok(None)
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// A proof that `commitment` was anchored, which anyone with the genesis checks offline
    /// with [`TxProof::verify`].
    pub fn anchor_proof(&self, commitment: &Hash) -> Result<Option<TxProof>, ReadError> {
        let Some((height, index)) = self.anchor_location(commitment)? else {
            return Ok(None);
        };
        self.proof_at(height, index).map(Some)
    }

    /// A proof that the transaction with id `id` is final, checked offline with
    /// [`TxProof::verify`].
    pub fn tx_proof(&self, id: &Hash) -> Result<Option<TxProof>, ReadError> {
        let Some((height, index)) = self.tx_location(id)? else {
            return Ok(None);
        };
        self.proof_at(height, index).map(Some)
    }

    /// The proof of the transaction at `index` of block `height`: block 1, the validator-set
    /// handoffs from the genesis set to the set that certified the block, and the signer's key
    /// changes before it.
    pub fn proof_at(&self, height: u64, index: u32) -> Result<TxProof, ReadError> {
        let corrupt = |height, reason| ReadError::Corrupt {
            path: self.path.clone(),
            height,
            reason: Box::new(reason),
        };
        let block_at = |h: u64| {
            self.block(h)?
                .ok_or_else(|| corrupt(h, Corruption::Missing))
        };
        let block = block_at(height)?;
        let signer = block
            .block
            .txs
            .get(index as usize)
            .ok_or_else(|| corrupt(height, Corruption::TxIndex { index }))?
            .signer;
        let origin = if height == 1 {
            block.clone()
        } else {
            block_at(1)?
        };
        let mut handoffs = Vec::new();
        for (h, i) in self.handoffs_before(height)? {
            let b = block_at(h)?;
            match b.block.txs.get(i as usize).map(|t| &t.body) {
                Some(TxBody::ValidatorSetChange(_)) => {}
                _ => return Err(corrupt(h, Corruption::HandoffIndex { index: i })),
            }
            let inc = Inclusion::build(&b, i as usize)
                .ok_or_else(|| corrupt(h, Corruption::HandoffIndex { index: i }))?;
            handoffs.push(inc);
        }
        let mut keys = Vec::new();
        for (h, i) in self.key_changes_before(&signer, location(height, index))? {
            let b = block_at(h)?;
            let inc = Inclusion::build(&b, i as usize)
                .ok_or_else(|| corrupt(h, Corruption::KeyChangeIndex { index: i }))?;
            keys.push(inc);
        }
        TxProof::build(&origin, &block, index as usize, handoffs, keys)
            .ok_or_else(|| corrupt(height, Corruption::TxIndex { index }))
    }

    /// Where `account`'s key changes are, before location `before`, in chain order.
    fn key_changes_before(
        &self,
        account: &PublicKey,
        before: u64,
    ) -> Result<Vec<(u64, u32)>, ReadError> {
        let rows = (|| -> Result<Vec<(u64, u32)>, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(KEY_CHANGES)?;
            let p = prefix(&Hash(account.0));
            let mut out = Vec::new();
            // A prefix shared with another account is confirmed against the transaction.
            for row in index.range((p, 0u64)..(p, before))? {
                let (h, i) = split_location(row?.0.value().1);
                let tx = self.tx_at(&rtx, h, i)?;
                if tx.as_ref().and_then(key_change_of) == Some(*account) {
                    out.push((h, i));
                } else if tx.is_none() {
                    return Err(Fault::corrupt(h, Corruption::KeyChangeIndex { index: i }));
                }
            }
            Ok(out)
        })()
        .map_err(|f| f.into_read(&self.path))?;
        if rows.len() > MAX_KEY_CHANGES {
            return Err(ReadError::TooManyKeyChanges {
                count: rows.len(),
                max: MAX_KEY_CHANGES,
            });
        }
        Ok(rows)
    }

    /// The validator-set changes that took effect before `height`: the last one of each block,
    /// since only that one decides the next block's set.
    fn handoffs_before(&self, height: u64) -> Result<Vec<(u64, u32)>, ReadError> {
        let rows = (|| -> Result<Vec<(u64, u32)>, Fault> {
            let rtx = self.db.begin_read()?;
            let table = rtx.open_table(HANDOFFS)?;
            let mut out: Vec<(u64, u32)> = Vec::new();
            for row in table.range((0u64, 0u32)..(height, 0u32))? {
                let (k, _) = row?;
                let (h, i) = k.value();
                match out.last_mut() {
                    Some(last) if last.0 == h => last.1 = i,
                    _ => out.push((h, i)),
                }
            }
            Ok(out)
        })()
        .map_err(|f| f.into_read(&self.path))?;
        if rows.len() > MAX_HANDOFFS {
            return Err(ReadError::TooManyHandoffs {
                height,
                count: rows.len(),
                max: MAX_HANDOFFS,
            });
        }
        Ok(rows)
    }
}

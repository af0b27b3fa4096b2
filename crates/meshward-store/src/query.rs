//! Reads of a store: blocks by height, the hash, transaction and commitment indexes, and anchor
//! proofs with the validator-set handoffs they need. Each is one redb read transaction, so reads
//! run concurrently with each other and with the one writer.

use meshward_core::hash::Hash;
use meshward_core::light::{AnchorProof, Inclusion, MAX_HANDOFFS};
use meshward_core::tx::TxBody;
use meshward_core::CertifiedBlock;
use redb::ReadableDatabase;

use crate::error::{Corruption, ReadError};
use crate::format::{BLOCKS, BLOCK_HASH, COMMITMENTS, HANDOFFS, TXS};
use crate::store::{Fault, Store};

impl Store {
    /// The encoded certified block at `height`, as stored and as sync sends it.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let blocks = rtx.open_table(BLOCKS)?;
            Ok(blocks.get(height)?.map(|g| g.value().to_vec()))
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// The certified block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<CertifiedBlock>, ReadError> {
        let Some(bytes) = self.block_bytes(height)? else {
            return Ok(None);
        };
        CertifiedBlock::decode_bytes(&bytes)
            .map(Some)
            .map_err(|e| ReadError::Corrupt {
                path: self.path.clone(),
                height,
                reason: Box::new(Corruption::Decode(e)),
            })
    }

    /// The height of the block whose header hashes to `hash`.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(BLOCK_HASH)?;
            Ok(index.get(hash.as_bytes())?.map(|g| g.value()))
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// Where the transaction with id `id` is: (height, transaction index), once final.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<(u64, u32)>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(TXS)?;
            Ok(index.get(id.as_bytes())?.map(|g| g.value()))
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// Where the first anchor of `commitment` is: (height, transaction index).
    pub fn anchor_location(&self, commitment: &Hash) -> Result<Option<(u64, u32)>, ReadError> {
        (|| -> Result<_, Fault> {
            let rtx = self.db.begin_read()?;
            let index = rtx.open_table(COMMITMENTS)?;
            Ok(index.get(commitment.as_bytes())?.map(|g| g.value()))
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// A proof that `commitment` was anchored, which anyone with the genesis checks offline
    /// with [`AnchorProof::verify`]. It carries the validator-set handoffs from the genesis set to
    /// the set that certified the anchor's block.
    pub fn anchor_proof(&self, commitment: &Hash) -> Result<Option<AnchorProof>, ReadError> {
        let Some((height, index)) = self.anchor_location(commitment)? else {
            return Ok(None);
        };
        let corrupt = |height, reason| ReadError::Corrupt {
            path: self.path.clone(),
            height,
            reason: Box::new(reason),
        };
        let block = self
            .block(height)?
            .ok_or_else(|| corrupt(height, Corruption::Missing))?;
        match block.block.txs.get(index as usize).map(|t| &t.body) {
            Some(TxBody::Anchor(a)) if a.commitment == *commitment => {}
            _ => return Err(corrupt(height, Corruption::CommitmentIndex { index })),
        }
        let mut handoffs = Vec::new();
        for (h, i) in self.handoffs_before(height)? {
            let b = self
                .block(h)?
                .ok_or_else(|| corrupt(h, Corruption::Missing))?;
            match b.block.txs.get(i as usize).map(|t| &t.body) {
                Some(TxBody::ValidatorSetChange(_)) => {}
                _ => return Err(corrupt(h, Corruption::HandoffIndex { index: i })),
            }
            let inc = Inclusion::build(&b, i as usize)
                .ok_or_else(|| corrupt(h, Corruption::HandoffIndex { index: i }))?;
            handoffs.push(inc);
        }
        AnchorProof::build(&block, index as usize, handoffs)
            .map(Some)
            .ok_or_else(|| corrupt(height, Corruption::CommitmentIndex { index }))
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

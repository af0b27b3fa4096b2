//! Proposals seen for the heights not yet committed: blocks this node built or received and
//! checked, kept until their height is committed.
//!
//! Consensus agrees on block hashes and hands the application only a hash when it decides, so
//! the application keeps the blocks. They are mirrored to `data_dir/proposals/` (one small
//! file each, written without fsync: a killed process keeps them, a power cut may not, and
//! sync repairs that), so a restarted validator answers `StartedRound` and `RestreamProposal`
//! with what it had before the crash, as Malachite's WAL replay expects.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use malachitebft_core_types::{Round, Validity};
use meshward_core::block::{Block, MAX_BLOCK_BYTES};
use meshward_core::codec::{Encode, Reader, Writer};
use meshward_core::hash::Hash;
use meshward_core::state::Delta;
use meshward_core::tx::Tx;
use tracing::{debug, warn};

use crate::codec::{decode_top, encode_top, Wire};
use crate::context::{Address, Height, PartInit, Sig};

/// Most proposals kept for one height (rounds times equivocations, bounded).
pub const MAX_CANDIDATES_PER_HEIGHT: usize = 64;
/// Most proposals kept for one height and round (more only if the proposer equivocates).
pub const MAX_CANDIDATES_PER_ROUND: usize = 4;

/// A proposal this node holds.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The stream's init part: height, round, POL round and proposer.
    pub init: PartInit,
    /// The proposer's signature over the block hash (the `Fin` part).
    pub fin: Sig,
    /// The proposed block.
    pub block: Arc<Block>,
    /// Its block hash (the consensus value).
    pub hash: Hash,
    /// Whether this node's checks accepted it.
    pub validity: Validity,
    /// The state changes of the block, if computed on the current state (not persisted).
    pub delta: Option<Delta>,
    /// Candidates the proposer (this node) dropped as invalid while building it.
    pub dropped: Vec<Tx>,
}

impl Candidate {
    /// The proposal's height.
    pub fn height(&self) -> u64 {
        self.init.height.0
    }

    /// The proposal's round.
    pub fn round(&self) -> Round {
        self.init.round
    }
}

/// What a candidate file holds.
struct Persisted {
    init: PartInit,
    fin: Sig,
    valid: bool,
    block: Vec<u8>,
}

impl Wire for Persisted {
    fn put(&self, w: &mut Writer) -> Result<(), crate::codec::CodecError> {
        self.init.height.put(w)?;
        w.u32(self.init.round.as_u32().unwrap_or(0));
        match self.init.pol_round.as_u32() {
            None => w.u8(0),
            Some(r) => w.u8(1).u32(r),
        };
        self.init.proposer.put(w)?;
        self.fin.put(w)?;
        w.bool(self.valid).bytes(&self.block);
        Ok(())
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, crate::codec::CodecError> {
        let height = Height::get(r)?;
        let round = Round::new(r.u32("round")?);
        let pol_round = match r.u8("pol round")? {
            0 => Round::Nil,
            _ => Round::new(r.u32("pol round")?),
        };
        Ok(Persisted {
            init: PartInit {
                height,
                round,
                pol_round,
                proposer: Address::get(r)?,
            },
            fin: Sig::get(r)?,
            valid: r.bool("validity")?,
            block: r.byte_vec(MAX_BLOCK_BYTES, "block")?,
        })
    }
}

/// The proposals held for heights not yet committed, mirrored to a directory.
#[derive(Debug)]
pub struct Candidates {
    dir: PathBuf,
    by_height: BTreeMap<u64, Vec<Candidate>>,
}

fn file_name(c: &Candidate) -> String {
    format!(
        "{:020}-{}-{}.prop",
        c.height(),
        c.round().as_u32().unwrap_or(0),
        &c.hash.to_hex()[..16]
    )
}

fn height_of_file(name: &str) -> Option<u64> {
    name.split('-').next()?.parse().ok()
}

impl Candidates {
    /// Opens the directory, keeping the proposals for `height` and deleting older ones.
    pub fn load(dir: &Path, height: u64) -> std::io::Result<Candidates> {
        fs::create_dir_all(dir)?;
        let mut c = Candidates {
            dir: dir.to_path_buf(),
            by_height: BTreeMap::new(),
        };
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match height_of_file(&name) {
                Some(h) if h == height => match Self::read(&path) {
                    Some(cand) if cand.height() == h => {
                        c.keep(cand);
                    }
                    _ => {
                        warn!(file = %path.display(), "unreadable proposal file removed");
                        let _ = fs::remove_file(&path);
                    }
                },
                Some(h) if h > height => {}
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(c)
    }

    fn read(path: &Path) -> Option<Candidate> {
        let bytes = fs::read(path).ok()?;
        let p: Persisted = decode_top(&bytes).ok()?;
        let block = Block::decode_bytes(&p.block).ok()?;
        let hash = block.hash();
        Some(Candidate {
            init: p.init,
            fin: p.fin,
            block: Arc::new(block),
            hash,
            validity: Validity::from_bool(p.valid),
            delta: None,
            dropped: Vec::new(),
        })
    }

    fn keep(&mut self, c: Candidate) -> bool {
        let list = self.by_height.entry(c.height()).or_default();
        if list.iter().any(|o| o.hash == c.hash && o.init == c.init) {
            return false;
        }
        let in_round = list.iter().filter(|o| o.round() == c.round()).count();
        if list.len() >= MAX_CANDIDATES_PER_HEIGHT || in_round >= MAX_CANDIDATES_PER_ROUND {
            debug!(height = c.height(), round = %c.round(), "proposal not kept: limit reached");
            return false;
        }
        list.push(c);
        true
    }

    /// Keeps a proposal and mirrors it to disk (best effort: a write failure is logged).
    pub fn insert(&mut self, c: Candidate) {
        let p = Persisted {
            init: c.init.clone(),
            fin: c.fin,
            valid: c.validity.is_valid(),
            block: c.block.to_bytes(),
        };
        let path = self.dir.join(file_name(&c));
        if !self.keep(c) {
            return;
        }
        match encode_top(&p) {
            Ok(bytes) => {
                if let Err(e) = fs::write(&path, bytes) {
                    warn!(file = %path.display(), error = %e, "cannot save proposal");
                }
            }
            Err(e) => warn!(error = %e, "cannot encode proposal"),
        }
    }

    /// The proposals held for `height` and `round`.
    pub fn for_round(&self, height: u64, round: Round) -> impl Iterator<Item = &Candidate> {
        self.by_height
            .get(&height)
            .into_iter()
            .flatten()
            .filter(move |c| c.round() == round)
    }

    /// A valid proposal of block `hash` at `height`, preferring one whose state changes are
    /// already computed.
    pub fn find(&self, height: u64, hash: &Hash) -> Option<&Candidate> {
        let list = self.by_height.get(&height)?;
        let mut matching = list
            .iter()
            .filter(|c| c.hash == *hash && c.validity.is_valid());
        let first = matching.clone().next();
        matching.find(|c| c.delta.is_some()).or(first)
    }

    /// Removes everything at or below `height`, on disk too.
    pub fn prune_through(&mut self, height: u64) {
        let rest = self.by_height.split_off(&(height + 1));
        let old = std::mem::replace(&mut self.by_height, rest);
        for c in old.values().flatten() {
            let _ = fs::remove_file(self.dir.join(file_name(c)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::block::BlockHeader;
    use meshward_core::ids::{PublicKey, Signature};

    fn cand(height: u64, round: u32, t: u64) -> Candidate {
        let block = Block {
            header: BlockHeader {
                chain_id: "c".into(),
                height,
                prev_hash: Hash::ZERO,
                time_ms: t,
                proposer: PublicKey([1; 32]),
                tx_root: Hash::ZERO,
                tx_count: 0,
                state_root: Hash::ZERO,
                validator_set_hash: Hash::ZERO,
                last_commit_hash: Hash::ZERO,
            },
            txs: Vec::new(),
            last_commit: None,
        };
        Candidate {
            init: PartInit {
                height: Height(height),
                round: Round::new(round),
                pol_round: Round::Nil,
                proposer: Address(PublicKey([1; 32])),
            },
            fin: Sig(Signature([2; 64])),
            hash: block.hash(),
            block: Arc::new(block),
            validity: Validity::Valid,
            delta: None,
            dropped: Vec::new(),
        }
    }

    #[test]
    fn survive_a_restart_and_are_pruned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Candidates::load(dir.path(), 5).expect("opens");
        c.insert(cand(5, 0, 1));
        c.insert(cand(5, 1, 2));
        c.insert(cand(6, 0, 3));
        let again = Candidates::load(dir.path(), 5).expect("reopens");
        assert_eq!(again.for_round(5, Round::new(1)).count(), 1);
        assert_eq!(again.for_round(5, Round::new(0)).count(), 1);
        let h = cand(5, 1, 2).hash;
        assert!(again.find(5, &h).is_some());
        let mut c = again;
        c.prune_through(5);
        assert!(c.find(5, &h).is_none());
        let later = Candidates::load(dir.path(), 6).expect("reopens");
        assert_eq!(later.for_round(6, Round::new(0)).count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn bounded_per_round() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Candidates::load(dir.path(), 1).expect("opens");
        for t in 0..10 {
            c.insert(cand(1, 0, t));
        }
        assert_eq!(
            c.for_round(1, Round::new(0)).count(),
            MAX_CANDIDATES_PER_ROUND
        );
    }
}

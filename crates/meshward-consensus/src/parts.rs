//! Streaming a block as proposal parts, and reassembling streams from the network.
//!
//! A proposal stream is `Init` (height, round, POL round, proposer), the block's canonical
//! encoding cut into `Data` chunks of [`PART_CHUNK_BYTES`], a `Fin` part carrying the
//! proposer's signature over [`crate::signing::parts_signing_bytes`], and the stream's end
//! marker. Malachite does not sign parts (upstream #818), so anyone can inject them: a stream
//! is grouped by its publisher (`published_by`, which gossip authenticates; the relaying
//! neighbour only when the transport gives no publisher) and its stream id, and an assembled
//! stream is worth nothing until [`Assembled::open`] has checked the proposer's signature over
//! the block hash. The application then checks the proposer is the round's and re-executes
//! every transaction before voting for it.
//!
//! Buffers are bounded ([`PartLimits`]): bytes and parts per stream, streams per publisher, and
//! streams and bytes in total. A stream over its own limit is dropped; a publisher or the
//! whole buffer at its limit makes room by evicting its oldest stream, so a stuck or hostile
//! stream cannot block newer ones for long. Streams for heights already decided are pruned.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use malachitebft_core_types::Round;
use malachitebft_engine::util::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_sync::PeerId;
use meshward_core::block::{Block, MAX_BLOCK_BYTES};
use meshward_core::codec::Encode;
use meshward_core::hash::Hash;

use crate::context::{PartInit, ProposalPart, Sig};
use crate::signing::{MeshwardSigner, MeshwardVerifier};

/// Size of the `Data` chunks a proposer cuts its block into.
pub const PART_CHUNK_BYTES: usize = 128 * 1024;

/// Limits on the reassembly buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// Largest encoded block one stream may carry (the block-size limit plus overhead).
    pub max_stream_bytes: usize,
    /// Most streams buffered per publisher (a proposer streams one proposal per round).
    pub max_streams_per_publisher: usize,
    /// Most streams buffered in total.
    pub max_streams: usize,
    /// Most block bytes buffered in total.
    pub max_total_bytes: usize,
}

impl PartLimits {
    /// Limits for blocks of at most `max_block_bytes` of transactions: 1 MiB is left for the
    /// header, length prefixes and the last commit.
    pub fn for_block_bytes(max_block_bytes: usize) -> Self {
        let max_stream_bytes = max_block_bytes.saturating_add(1 << 20).min(MAX_BLOCK_BYTES);
        PartLimits {
            max_stream_bytes,
            max_streams_per_publisher: 4,
            max_streams: 64,
            max_total_bytes: max_stream_bytes.saturating_mul(8).max(64 << 20),
        }
    }

    /// The most messages a stream of `max_stream_bytes` has: init, data, fin part, end.
    fn max_sequence(&self) -> u64 {
        (self.max_stream_bytes / PART_CHUNK_BYTES) as u64 + 3
    }
}

/// Why a part was refused (its stream is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// The stream's data parts add up to more than the stream limit.
    #[error("stream carries more than {max} bytes")]
    StreamTooLarge {
        /// The limit, in block bytes ([`PartLimits`]).
        max: usize,
    },
    /// A message's sequence number is beyond the last a stream of the limit can have.
    #[error("stream sequence {sequence} is beyond the last possible part {max}")]
    SequenceTooHigh {
        /// The sequence number received.
        sequence: u64,
        /// The highest possible one.
        max: u64,
    },
    /// A part is where it cannot be: an init that is not first, data or a fin first or after the
    /// fin, an end not right after the fin.
    #[error("part {what} at the wrong position in its stream")]
    Misplaced {
        /// Which part: `init`, `data`, `fin` or `end`.
        what: &'static str,
    },
    /// The stream carries two different init, fin or end parts.
    #[error("stream has two different {what} parts")]
    Conflicting {
        /// Which part: `init`, `fin` or `end`.
        what: &'static str,
    },
}

/// Why an assembled stream is not a proposal by its named proposer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The streamed bytes are not a canonical block.
    #[error("block does not decode: {0}")]
    Decode(meshward_core::codec::DecodeError),
    /// The init part has a nil round.
    #[error("proposal has no round")]
    NoRound,
    /// The `Fin` signature does not verify under the named proposer's key.
    #[error("proposer signature does not verify")]
    BadSignature,
}

/// A complete stream, not yet checked.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The peer the stream came from (not necessarily the proposer).
    pub publisher: PeerId,
    /// The init part: height, round, POL round and the named proposer.
    pub init: PartInit,
    /// The `Fin` part: the proposer's signature.
    pub fin: Sig,
    /// The block's canonical encoding, the data parts joined in order.
    pub block_bytes: Vec<u8>,
}

impl Assembled {
    /// Decodes the block and checks the `Fin` signature of `init.proposer` over the block hash,
    /// height, round and POL round. Does not check that the proposer is the round's.
    pub fn open(&self, verifier: &MeshwardVerifier) -> Result<(Block, Hash), OpenError> {
        let block = Block::decode_bytes(&self.block_bytes).map_err(OpenError::Decode)?;
        let hash = block.hash();
        let round = self.init.round.as_u32().ok_or(OpenError::NoRound)?;
        if !verifier.verify_parts(
            &self.init.proposer.0,
            self.init.height.0,
            round,
            self.init.pol_round,
            &hash,
            &self.fin,
        ) {
            return Err(OpenError::BadSignature);
        }
        Ok((block, hash))
    }
}

/// The stream id a proposer uses: height and round, enough to be unique per publisher.
pub fn stream_id(height: u64, round: Round) -> StreamId {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&round.as_u32().unwrap_or(u32::MAX).to_be_bytes());
    StreamId::new(Bytes::from(b))
}

/// The stream messages of a proposal: init, data chunks, fin (signed), end.
pub fn stream_messages(
    init: PartInit,
    block: &Block,
    fin: Sig,
) -> Vec<StreamMessage<ProposalPart>> {
    let id = stream_id(init.height.0, init.round);
    let bytes = Bytes::from(block.to_bytes());
    let mut out = Vec::with_capacity(bytes.len() / PART_CHUNK_BYTES + 4);
    out.push(ProposalPart::Init(init));
    let mut off = 0;
    while off < bytes.len() {
        let end = (off + PART_CHUNK_BYTES).min(bytes.len());
        out.push(ProposalPart::Data(bytes.slice(off..end)));
        off = end;
    }
    out.push(ProposalPart::Fin(fin));
    let mut msgs: Vec<StreamMessage<ProposalPart>> = out
        .into_iter()
        .enumerate()
        .map(|(i, p)| StreamMessage::new(id.clone(), i as u64, StreamContent::Data(p)))
        .collect();
    let end = msgs.len() as u64;
    msgs.push(StreamMessage::new(id, end, StreamContent::Fin));
    msgs
}

/// Signs and cuts a block into stream messages for `init`.
pub fn sign_and_stream(
    signer: &MeshwardSigner,
    init: PartInit,
    block: &Block,
    block_hash: &Hash,
) -> Vec<StreamMessage<ProposalPart>> {
    let round = init.round.as_u32().unwrap_or(0);
    let fin = signer.sign_parts(init.height.0, round, init.pol_round, block_hash);
    stream_messages(init, block, fin)
}

#[derive(Debug, Default)]
struct Stream {
    init: Option<PartInit>,
    fin: Option<(u64, Sig)>,
    /// Sequence of the end-of-stream marker.
    end: Option<u64>,
    data: BTreeMap<u64, Bytes>,
    data_bytes: usize,
    /// Sequences seen, to ignore duplicates.
    seen: usize,
    /// Insertion order, for eviction.
    age: u64,
}

impl Stream {
    fn is_complete(&self) -> bool {
        match (self.init.is_some(), self.fin, self.end) {
            // Sequences 0 (init), 1..fin (data), fin, end: all of them seen.
            (true, Some((fin_seq, _)), Some(end)) => {
                end == fin_seq + 1 && self.data.len() as u64 == fin_seq.saturating_sub(1)
            }
            _ => false,
        }
    }
}

type Key = (PeerId, StreamId);

/// Reassembles proposal streams from the network, within [`PartLimits`].
#[derive(Debug)]
pub struct Reassembler {
    limits: PartLimits,
    streams: HashMap<Key, Stream>,
    total_bytes: usize,
    clock: u64,
}

impl Reassembler {
    /// An empty reassembler enforcing `limits`.
    pub fn new(limits: PartLimits) -> Self {
        Reassembler {
            limits,
            streams: HashMap::new(),
            total_bytes: 0,
            clock: 0,
        }
    }

    /// Streams currently buffered.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is buffered.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Block bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Drops streams for heights below `height`.
    pub fn prune_below(&mut self, height: u64) {
        let mut freed = 0;
        self.streams.retain(|_, s| {
            let keep = s.init.as_ref().is_none_or(|i| i.height.0 >= height);
            if !keep {
                freed += s.data_bytes;
            }
            keep
        });
        self.total_bytes -= freed;
    }

    fn remove(&mut self, key: &Key) -> Option<Stream> {
        let s = self.streams.remove(key)?;
        self.total_bytes -= s.data_bytes;
        Some(s)
    }

    fn evict_oldest(&mut self, publisher: Option<&PeerId>, keep: &Key) {
        let oldest = self
            .streams
            .iter()
            .filter(|(k, _)| *k != keep && publisher.is_none_or(|p| k.0 == *p))
            .min_by_key(|(_, s)| s.age)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.remove(&k);
        }
    }

    /// Adds one part published by `publisher`. Returns the assembled stream once complete.
    /// On error the part's stream is dropped.
    pub fn insert(
        &mut self,
        publisher: PeerId,
        msg: StreamMessage<ProposalPart>,
    ) -> Result<Option<Assembled>, PartError> {
        let key = (publisher, msg.stream_id.clone());
        let max_seq = self.limits.max_sequence();
        if msg.sequence > max_seq {
            self.remove(&key);
            return Err(PartError::SequenceTooHigh {
                sequence: msg.sequence,
                max: max_seq,
            });
        }
        if !self.streams.contains_key(&key) {
            // Make room: first within the publisher's share, then in the whole buffer.
            let mine = self.streams.keys().filter(|k| k.0 == publisher).count();
            if mine >= self.limits.max_streams_per_publisher {
                self.evict_oldest(Some(&publisher), &key);
            }
            if self.streams.len() >= self.limits.max_streams {
                self.evict_oldest(None, &key);
            }
            self.clock += 1;
            self.streams.insert(
                key.clone(),
                Stream {
                    age: self.clock,
                    ..Stream::default()
                },
            );
        }
        let result = self.add(&key, msg);
        match result {
            Err(e) => {
                self.remove(&key);
                Err(e)
            }
            Ok(false) => {
                // Keep the total within bounds by dropping the oldest other streams.
                while self.total_bytes > self.limits.max_total_bytes && self.streams.len() > 1 {
                    self.evict_oldest(None, &key);
                }
                Ok(None)
            }
            Ok(true) => {
                let s = self
                    .remove(&key)
                    .expect("a stream found complete is still in the map");
                let (_, fin) = s.fin.expect("a complete stream has its fin part");
                let init = s.init.expect("a complete stream has its init part");
                let mut block_bytes = Vec::with_capacity(s.data_bytes);
                for chunk in s.data.values() {
                    block_bytes.extend_from_slice(chunk);
                }
                Ok(Some(Assembled {
                    publisher,
                    init,
                    fin,
                    block_bytes,
                }))
            }
        }
    }

    /// Adds a message to its stream; `Ok(true)` once the stream is complete.
    fn add(&mut self, key: &Key, msg: StreamMessage<ProposalPart>) -> Result<bool, PartError> {
        let limits = self.limits;
        let s = self
            .streams
            .get_mut(key)
            .expect("the stream was inserted before adding to it");
        let seq = msg.sequence;
        let mut added = 0;
        match msg.content {
            StreamContent::Fin => match s.end {
                Some(e) if e != seq => return Err(PartError::Conflicting { what: "end" }),
                Some(_) => return Ok(false),
                None => s.end = Some(seq),
            },
            StreamContent::Data(ProposalPart::Init(init)) => {
                if seq != 0 {
                    return Err(PartError::Misplaced { what: "init" });
                }
                match &s.init {
                    Some(old) if *old != init => {
                        return Err(PartError::Conflicting { what: "init" })
                    }
                    Some(_) => return Ok(false),
                    None => s.init = Some(init),
                }
            }
            StreamContent::Data(ProposalPart::Data(bytes)) => {
                if seq == 0 {
                    return Err(PartError::Misplaced { what: "data" });
                }
                if s.data.contains_key(&seq) {
                    return Ok(false);
                }
                if s.data_bytes + bytes.len() > limits.max_stream_bytes {
                    return Err(PartError::StreamTooLarge {
                        max: limits.max_stream_bytes,
                    });
                }
                added = bytes.len();
                s.data_bytes += bytes.len();
                s.data.insert(seq, bytes);
            }
            StreamContent::Data(ProposalPart::Fin(sig)) => {
                if seq == 0 {
                    return Err(PartError::Misplaced { what: "fin" });
                }
                match s.fin {
                    Some(old) if old != (seq, sig) => {
                        return Err(PartError::Conflicting { what: "fin" })
                    }
                    Some(_) => return Ok(false),
                    None => s.fin = Some((seq, sig)),
                }
            }
        }
        s.seen += 1;
        // Data after the fin part, or an end marker not right after it, cannot complete.
        if let Some((fin_seq, _)) = s.fin {
            if s.data
                .keys()
                .next_back()
                .is_some_and(|&last| last >= fin_seq)
            {
                return Err(PartError::Misplaced { what: "data" });
            }
            if s.end.is_some_and(|e| e != fin_seq + 1) {
                return Err(PartError::Misplaced { what: "end" });
            }
        }
        let complete = s.is_complete();
        self.total_bytes += added;
        Ok(complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Address, Height};
    use meshward_core::block::BlockHeader;
    use meshward_core::ids::{PublicKey, SignKey};

    fn block(height: u64, filler: usize) -> Block {
        Block {
            header: BlockHeader {
                chain_id: "test".into(),
                height,
                prev_hash: Hash([1; 32]),
                time_ms: 5,
                proposer: PublicKey([2; 32]),
                tx_root: Hash([3; 32]),
                tx_count: 0,
                state_root: Hash([4; 32]),
                validator_set_hash: Hash([5; 32]),
                // Used here only to make blocks of a chosen size differ.
                last_commit_hash: Hash([(filler % 251) as u8; 32]),
            },
            txs: Vec::new(),
            last_commit: None,
        }
    }

    fn init(key: &SignKey, height: u64, round: u32) -> PartInit {
        PartInit {
            height: Height(height),
            round: Round::new(round),
            pol_round: Round::Nil,
            proposer: Address(key.public()),
        }
    }

    fn peer(i: u8) -> PeerId {
        let key = PublicKey([i; 32]);
        PeerId::from_bytes(&key.peer_id_bytes()).expect("a valid peer id")
    }

    fn big_stream(
        key: &SignKey,
        height: u64,
        data_bytes: usize,
    ) -> Vec<StreamMessage<ProposalPart>> {
        // A synthetic stream whose data parts carry arbitrary bytes.
        let id = stream_id(height, Round::new(0));
        let mut msgs = vec![StreamMessage::new(
            id.clone(),
            0,
            StreamContent::Data(ProposalPart::Init(init(key, height, 0))),
        )];
        let mut seq = 1;
        let mut left = data_bytes;
        while left > 0 {
            let n = left.min(PART_CHUNK_BYTES);
            msgs.push(StreamMessage::new(
                id.clone(),
                seq,
                StreamContent::Data(ProposalPart::Data(Bytes::from(vec![0u8; n]))),
            ));
            seq += 1;
            left -= n;
        }
        msgs.push(StreamMessage::new(
            id.clone(),
            seq,
            StreamContent::Data(ProposalPart::Fin(Sig(meshward_core::ids::Signature(
                [0; 64],
            )))),
        ));
        msgs.push(StreamMessage::new(id, seq + 1, StreamContent::Fin));
        msgs
    }

    #[test]
    fn reassembles_out_of_order_and_checks_signature() {
        let key = SignKey::from_seed(&[7; 32]);
        let signer = MeshwardSigner::new(key.clone(), "test");
        let verifier = MeshwardVerifier::new("test");
        let b = block(3, 1);
        let mut msgs = sign_and_stream(&signer, init(&key, 3, 0), &b, &b.hash());
        msgs.reverse();
        let mut r = Reassembler::new(PartLimits::for_block_bytes(1 << 20));
        let mut out = None;
        for m in msgs.iter().cloned().chain(msgs.iter().take(1).cloned()) {
            if let Some(a) = r.insert(peer(1), m).expect("valid parts") {
                out = Some(a);
            }
        }
        let a = out.expect("stream completes");
        let (got, hash) = a.open(&verifier).expect("signature verifies");
        assert_eq!(got, b);
        assert_eq!(hash, b.hash());
        assert!(
            r.is_empty() || r.len() == 1,
            "a late duplicate may start a new stream"
        );
    }

    #[test]
    fn rejects_a_bad_proposer_signature() {
        let key = SignKey::from_seed(&[7; 32]);
        let other = SignKey::from_seed(&[8; 32]);
        let verifier = MeshwardVerifier::new("test");
        let b = block(3, 1);
        // Signed by another key than the proposer named in the init part.
        let msgs = sign_and_stream(
            &MeshwardSigner::new(other, "test"),
            init(&key, 3, 0),
            &b,
            &b.hash(),
        );
        let mut r = Reassembler::new(PartLimits::for_block_bytes(1 << 20));
        let a = msgs
            .into_iter()
            .find_map(|m| r.insert(peer(1), m).expect("well-formed parts"))
            .expect("stream completes");
        assert!(matches!(a.open(&verifier), Err(OpenError::BadSignature)));
        // A signature for another chain does not verify either.
        let msgs = sign_and_stream(
            &MeshwardSigner::new(key.clone(), "other-chain"),
            init(&key, 3, 0),
            &b,
            &b.hash(),
        );
        let a = msgs
            .into_iter()
            .find_map(|m| r.insert(peer(1), m).expect("well-formed parts"))
            .expect("stream completes");
        assert!(matches!(a.open(&verifier), Err(OpenError::BadSignature)));
        // Nor one over the right block at another round.
        let mut msgs = sign_and_stream(
            &MeshwardSigner::new(key.clone(), "test"),
            init(&key, 3, 1),
            &b,
            &b.hash(),
        );
        if let StreamContent::Data(ProposalPart::Init(i)) = &mut msgs[0].content {
            i.round = Round::new(0);
        }
        let a = msgs
            .into_iter()
            .find_map(|m| r.insert(peer(2), m).expect("well-formed parts"))
            .expect("stream completes");
        assert!(matches!(a.open(&verifier), Err(OpenError::BadSignature)));
    }

    #[test]
    fn streams_are_keyed_by_publisher() {
        let k1 = SignKey::from_seed(&[1; 32]);
        let k2 = SignKey::from_seed(&[2; 32]);
        let b1 = block(3, 1);
        let b2 = block(3, 2);
        // Same height and round, hence the same stream id, from two publishers.
        let s1 = sign_and_stream(
            &MeshwardSigner::new(k1.clone(), "test"),
            init(&k1, 3, 0),
            &b1,
            &b1.hash(),
        );
        let s2 = sign_and_stream(
            &MeshwardSigner::new(k2.clone(), "test"),
            init(&k2, 3, 0),
            &b2,
            &b2.hash(),
        );
        assert_eq!(s1[0].stream_id, s2[0].stream_id);
        let mut r = Reassembler::new(PartLimits::for_block_bytes(1 << 20));
        let mut done = Vec::new();
        for (a, b) in s1.into_iter().zip(s2) {
            done.extend(r.insert(peer(1), a).expect("valid"));
            done.extend(r.insert(peer(2), b).expect("valid"));
        }
        assert_eq!(done.len(), 2);
        let verifier = MeshwardVerifier::new("test");
        let blocks: Vec<Block> = done
            .iter()
            .map(|a| a.open(&verifier).expect("valid").0)
            .collect();
        assert!(blocks.contains(&b1) && blocks.contains(&b2));
        assert!(r.is_empty());
    }

    #[test]
    fn parts_relayed_by_different_neighbours_join_one_stream() {
        // The application keys streams by `published_by`, whoever relayed each part.
        let k = SignKey::from_seed(&[1; 32]);
        let b = block(3, 1);
        let msgs = sign_and_stream(
            &MeshwardSigner::new(k.clone(), "test"),
            init(&k, 3, 0),
            &b,
            &b.hash(),
        );
        let mut r = Reassembler::new(PartLimits::for_block_bytes(1 << 20));
        let publisher = peer(9);
        let done: Vec<Assembled> = msgs
            .into_iter()
            .filter_map(|m| r.insert(publisher, m).expect("valid"))
            .collect();
        assert_eq!(done.len(), 1);
    }

    #[test]
    fn buffers_are_bounded() {
        let key = SignKey::from_seed(&[1; 32]);
        let limits = PartLimits {
            max_stream_bytes: 4 * PART_CHUNK_BYTES,
            max_streams_per_publisher: 2,
            max_streams: 3,
            max_total_bytes: 5 * PART_CHUNK_BYTES,
        };
        // A stream over its byte limit is dropped.
        let mut r = Reassembler::new(limits);
        let msgs = big_stream(&key, 1, 5 * PART_CHUNK_BYTES);
        let errs: Vec<PartError> = msgs
            .into_iter()
            .filter_map(|m| r.insert(peer(1), m).err())
            .collect();
        assert!(errs.contains(&PartError::StreamTooLarge {
            max: 4 * PART_CHUNK_BYTES
        }));
        assert!(r.buffered_bytes() <= limits.max_total_bytes);
        // A sequence number no honest stream reaches is refused.
        let id = stream_id(1, Round::new(0));
        let far = StreamMessage::new(id, 1_000_000, StreamContent::Fin);
        assert!(matches!(
            r.insert(peer(1), far),
            Err(PartError::SequenceTooHigh { .. })
        ));

        // Incomplete streams (no end marker) from one publisher: at most 2 are kept.
        let mut r = Reassembler::new(limits);
        for h in 1..=5 {
            let mut msgs = big_stream(&key, h, PART_CHUNK_BYTES);
            msgs.pop();
            for m in msgs {
                assert!(matches!(r.insert(peer(1), m), Ok(None)));
            }
            assert!(r.len() <= 2);
        }
        // From many publishers: at most 3 streams, and never more bytes than the limit.
        for p in 2..10 {
            let mut msgs = big_stream(&key, 9, 2 * PART_CHUNK_BYTES);
            msgs.pop();
            for m in msgs {
                let _ = r.insert(peer(p), m).expect("within limits");
            }
            assert!(r.len() <= 3);
            assert!(r.buffered_bytes() <= limits.max_total_bytes);
        }
        // Pruning decided heights frees their streams.
        r.prune_below(10);
        assert!(r.is_empty());
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn misplaced_parts_are_refused() {
        let key = SignKey::from_seed(&[1; 32]);
        let id = stream_id(1, Round::new(0));
        let mut r = Reassembler::new(PartLimits::for_block_bytes(1 << 20));
        let bad = StreamMessage::new(
            id.clone(),
            2,
            StreamContent::Data(ProposalPart::Init(init(&key, 1, 0))),
        );
        assert!(matches!(
            r.insert(peer(1), bad),
            Err(PartError::Misplaced { what: "init" })
        ));
        let bad = StreamMessage::new(
            id,
            0,
            StreamContent::Data(ProposalPart::Data(Bytes::from_static(b"x"))),
        );
        assert!(r.insert(peer(1), bad).is_err());
        assert!(r.is_empty());
    }
}

//! The compact encoding of blocks and certificates in store format 2.
//!
//! A block row holds what cannot be recomputed, with the rest rebuilt on read into the canonical
//! encoding that hashes, proofs and sync use:
//! - the header without the chain id (the genesis has it), the height (the row key), the
//!   transaction count, the validator-set hash (the set in force at that height, from the
//!   `validator_sets` table) and the last-commit hash (of the last commit in the row); the
//!   proposer as its index in that set;
//! - certificates as a round, a bitmap of the signing validators (in the set's order, which is
//!   key order) and their signatures: no validator keys;
//! - anchors and acknowledgements, most of a busy chain, with accounts named by their state slot
//!   (which never changes and is never reused) instead of 32-byte keys, and integers as varints;
//!   every other transaction in its canonical encoding.
//!
//! Anything that does not fit the compact form (a header whose derived fields differ, a signer
//! outside the set, an account not in the state, co-signed anchors) is stored canonically, so
//! every block round-trips exactly. `docs/FORMATS.md` ("Store") is the reference for these bytes.
//!
//! ```text
//! row      = 0x02 | head | varint count | ctx*
//! head     = 0x00 | varint len | canonical header          (any header)
//!          | 0x01 | varint time_ms | prev_hash(32) | vref proposer | tx_root(32) | state_root(32)
//!            then the last commit:
//!            0x00 (none) | 0x01 ccert (for height - 1) | 0x02 varint len | canonical certificate
//! ccert    = varint round | bitmap (ceil(n / 8) bytes, bit i = validator i of the set, LSB first)
//!            | sig(64) per set bit, in set order
//! ctx      = 0x00 varint len | canonical transaction
//!          | 0x01 aref signer | varint seq | rcpt | commitment(32) | varint count
//!            | zigzag varint (timestamp_ms - block time_ms) | varint size_bytes | sig(64)   (Anchor)
//!          | 0x02 aref signer | varint seq | commitment(32) | aref sender | sig(64)        (Ack)
//! rcpt     = 0x00 aref (a device) | 0x01 varint len | group name
//! aref     = varint (slot << 1)  |  varint 1, key(32)      (an account, by slot or by key)
//! vref     = varint (index << 1) |  varint 1, key(32)      (a validator, by index or by key)
//! varint   = LEB128, unsigned, minimal (no trailing 0x80 / 0x00 byte), at most 10 bytes
//! ```

use meshward_core::block::{last_commit_hash, Block, BlockHeader, CommitCertificate, CommitSig};
use meshward_core::codec::{Decode, DecodeError, Encode, Reader, Writer};
use meshward_core::hash::Hash;
use meshward_core::ids::{KeyError, PublicKey, Signature, VerifyingKey};
use meshward_core::state::State;
use meshward_core::tx::{
    Anchor, GroupName, Recipient, Tx, TxBody, ValidatorSet, MAX_BATCH, MAX_TX_BYTES,
};

/// The first byte of every block row in store format 2.
pub(crate) const ROW_VERSION: u8 = 2;

const HEAD_CANONICAL: u8 = 0;
const HEAD_COMPACT: u8 = 1;
const LC_NONE: u8 = 0;
const LC_COMPACT: u8 = 1;
const LC_CANONICAL: u8 = 2;
const CTX_CANONICAL: u8 = 0;
const CTX_ANCHOR: u8 = 1;
const CTX_ACK: u8 = 2;
const RCPT_DEVICE: u8 = 0;
const RCPT_GROUP: u8 = 1;
/// A certificate stored on its own (`certs` table): compact, or canonical.
const CERT_COMPACT: u8 = 1;
const CERT_CANONICAL: u8 = 2;

/// The validator sets a chain has had: each with the first height it certifies, its hash, and
/// its keys decompressed and checked once (certificate checks at every commit use them).
#[derive(Debug, Clone, Default)]
pub(crate) struct SetHistory {
    entries: Vec<(u64, ValidatorSet, Hash)>,
    keys: std::collections::BTreeMap<PublicKey, VerifyingKey>,
}

impl SetHistory {
    /// Records that `set` certifies blocks from height `from` on (heights above every earlier
    /// entry's). A set equal to the current one is not recorded again.
    pub(crate) fn push(&mut self, from: u64, set: ValidatorSet) -> bool {
        if self.entries.last().is_some_and(|(_, s, _)| *s == set) {
            return false;
        }
        let hash = set.hash();
        for v in &set.validators {
            if let Ok(vk) = v.key.verifying_key() {
                // At most MAX_VALIDATORS per set, and sets change rarely; a long history of
                // changes could grow this, so it keeps the keys of the last sets only.
                if self.keys.len() >= 4 * meshward_core::tx::MAX_VALIDATORS {
                    self.keys.clear();
                }
                self.keys.insert(v.key, vk);
            }
        }
        self.entries.push((from, set, hash));
        true
    }

    /// The decompressed, checked key of validator `k` (decompressed now if not kept).
    pub(crate) fn key(&self, k: &PublicKey) -> Result<VerifyingKey, KeyError> {
        match self.keys.get(k) {
            Some(vk) => Ok(*vk),
            None => k.verifying_key(),
        }
    }

    /// The set that certifies block `height`, with its hash.
    pub(crate) fn at(&self, height: u64) -> Option<(&ValidatorSet, Hash)> {
        let i = self.entries.partition_point(|(from, _, _)| *from <= height);
        let (_, set, hash) = self.entries.get(i.checked_sub(1)?)?;
        Some((set, *hash))
    }

    /// The latest set.
    pub(crate) fn current(&self) -> Option<&ValidatorSet> {
        self.entries.last().map(|(_, s, _)| s)
    }

    /// Every entry: (first height, set).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, &ValidatorSet)> {
        self.entries.iter().map(|(h, s, _)| (*h, s))
    }
}

/// What decoding a row needs besides its bytes: the chain id, the account slots and the
/// validator sets in force.
pub(crate) struct Env<'a> {
    pub(crate) chain_id: &'a str,
    /// A state holding every account the rows name (the store's current state: slots are
    /// never reused, so the latest state resolves every slot ever written).
    pub(crate) accounts: &'a State,
    /// The validator sets in force, by height.
    pub(crate) sets: &'a SetHistory,
}

fn corrupt(what: &'static str) -> DecodeError {
    DecodeError::Invalid { what }
}

pub(crate) fn put_varint(w: &mut Writer, mut v: u64) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    w.raw(&buf[..n]);
}

pub(crate) fn get_varint(r: &mut Reader<'_>, what: &'static str) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = r.u8(what)?;
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Err(corrupt("varint (over 64 bits)"));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            // Minimal: no final zero byte after the first.
            if i > 0 && b == 0 {
                return Err(corrupt("varint (not minimal)"));
            }
            return Ok(v);
        }
    }
    Err(corrupt("varint (over 10 bytes)"))
}

fn get_len(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<usize, DecodeError> {
    let n = get_varint(r, what)?;
    let n = usize::try_from(n).map_err(|_| corrupt(what))?;
    if n > max {
        return Err(DecodeError::TooLong { what, len: n, max });
    }
    Ok(n)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_aref(w: &mut Writer, state: &State, id: &PublicKey) {
    match state.account_slot(id) {
        Some(slot) if slot < (1 << 62) => put_varint(w, slot << 1),
        _ => {
            put_varint(w, 1);
            w.put(id);
        }
    }
}

fn get_aref(r: &mut Reader<'_>, state: &State) -> Result<PublicKey, DecodeError> {
    let v = get_varint(r, "account reference")?;
    if v & 1 == 1 {
        if v != 1 {
            return Err(corrupt("account reference"));
        }
        return r.get();
    }
    state
        .account_at_slot(v >> 1)
        .copied()
        .ok_or(corrupt("account reference (slot holds no account)"))
}

fn put_vref(w: &mut Writer, set: &ValidatorSet, key: &PublicKey) {
    match set.validators.iter().position(|v| v.key == *key) {
        Some(i) => put_varint(w, (i as u64) << 1),
        None => {
            put_varint(w, 1);
            w.put(key);
        }
    }
}

fn get_vref(r: &mut Reader<'_>, set: &ValidatorSet) -> Result<PublicKey, DecodeError> {
    let v = get_varint(r, "validator reference")?;
    if v & 1 == 1 {
        if v != 1 {
            return Err(corrupt("validator reference"));
        }
        return r.get();
    }
    usize::try_from(v >> 1)
        .ok()
        .and_then(|i| set.validators.get(i))
        .map(|v| v.key)
        .ok_or(corrupt("validator reference (index outside the set)"))
}

/// Whether `cert` fits the compact form under `set`: every signer in the set, in key order.
fn cert_is_compact(cert: &CommitCertificate, set: &ValidatorSet) -> bool {
    cert.signatures
        .windows(2)
        .all(|w| w[0].validator < w[1].validator)
        && cert
            .signatures
            .iter()
            .all(|s| set.power_of(&s.validator).is_some())
}

/// round, bitmap and signatures; the height and block hash are implied by where it is stored.
fn put_ccert(w: &mut Writer, cert: &CommitCertificate, set: &ValidatorSet) {
    put_varint(w, u64::from(cert.round));
    let n = set.validators.len();
    let mut bitmap = vec![0u8; n.div_ceil(8)];
    let mut sigs = Vec::with_capacity(cert.signatures.len());
    for (i, v) in set.validators.iter().enumerate() {
        if let Some(s) = cert.signatures.iter().find(|s| s.validator == v.key) {
            bitmap[i / 8] |= 1 << (i % 8);
            sigs.push(&s.sig);
        }
    }
    w.raw(&bitmap);
    for s in sigs {
        w.put(s);
    }
}

fn get_ccert(
    r: &mut Reader<'_>,
    set: &ValidatorSet,
    height: u64,
    block_hash: Hash,
) -> Result<CommitCertificate, DecodeError> {
    let round = u32::try_from(get_varint(r, "certificate round")?)
        .map_err(|_| corrupt("certificate round"))?;
    let n = set.validators.len();
    let bitmap = r.take(n.div_ceil(8), "certificate bitmap")?;
    // Bits past the set's size must be zero, so one certificate has one encoding.
    if !n.is_multiple_of(8) && bitmap[n / 8] >> (n % 8) != 0 {
        return Err(corrupt("certificate bitmap (bits past the set)"));
    }
    let mut signatures = Vec::new();
    for (i, v) in set.validators.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            let sig: Signature = r.get()?;
            signatures.push(CommitSig {
                validator: v.key,
                sig,
            });
        }
    }
    Ok(CommitCertificate {
        height,
        round,
        block_hash,
        signatures,
    })
}

/// A certificate for its own row in the `certs` table, under the set that signed it.
pub(crate) fn encode_cert(cert: &CommitCertificate, set: Option<&ValidatorSet>) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + 64 * cert.signatures.len());
    match set {
        Some(set) if cert_is_compact(cert, set) => {
            w.u8(CERT_COMPACT);
            put_ccert(&mut w, cert, set);
        }
        _ => {
            w.u8(CERT_CANONICAL);
            w.put(cert);
        }
    }
    w.into_bytes()
}

/// Decodes a `certs` row for the block `block_hash` at `height`, signed by `set`.
pub(crate) fn decode_cert(
    bytes: &[u8],
    set: Option<&ValidatorSet>,
    height: u64,
    block_hash: Hash,
) -> Result<CommitCertificate, DecodeError> {
    let mut r = Reader::new(bytes);
    let cert = match r.u8("certificate form")? {
        CERT_COMPACT => {
            let set = set.ok_or(corrupt("certificate (no validator set at its height)"))?;
            get_ccert(&mut r, set, height, block_hash)?
        }
        CERT_CANONICAL => r.get()?,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "certificate form",
                tag,
            })
        }
    };
    r.finish()?;
    if cert.height != height || cert.block_hash != block_hash {
        return Err(corrupt("certificate (for another block)"));
    }
    Ok(cert)
}

fn put_ctx(w: &mut Writer, tx: &Tx, state: &State, block_time_ms: u64) {
    let compact_time =
        |ts: u64| -> Option<i64> { i64::try_from(i128::from(ts) - i128::from(block_time_ms)).ok() };
    match &tx.body {
        TxBody::Anchor(a) if tx.cosigs.is_empty() && compact_time(a.timestamp_ms).is_some() => {
            w.u8(CTX_ANCHOR);
            put_aref(w, state, &tx.signer);
            put_varint(w, tx.seq);
            match &a.recipient {
                Recipient::Device(d) => {
                    w.u8(RCPT_DEVICE);
                    put_aref(w, state, d);
                }
                Recipient::Group(g) => {
                    w.u8(RCPT_GROUP);
                    put_varint(w, g.as_str().len() as u64);
                    w.raw(g.as_str().as_bytes());
                }
            }
            w.put(&a.commitment);
            put_varint(w, u64::from(a.count));
            put_varint(w, zigzag(compact_time(a.timestamp_ms).unwrap_or(0)));
            put_varint(w, a.size_bytes);
            w.put(&tx.sig);
        }
        TxBody::Ack { commitment, sender } if tx.cosigs.is_empty() => {
            w.u8(CTX_ACK);
            put_aref(w, state, &tx.signer);
            put_varint(w, tx.seq);
            w.put(commitment);
            put_aref(w, state, sender);
            w.put(&tx.sig);
        }
        _ => {
            let bytes = tx.to_bytes();
            w.u8(CTX_CANONICAL);
            put_varint(w, bytes.len() as u64);
            w.raw(&bytes);
        }
    }
}

fn get_ctx(r: &mut Reader<'_>, state: &State, block_time_ms: u64) -> Result<Tx, DecodeError> {
    match r.u8("transaction form")? {
        CTX_CANONICAL => {
            let n = get_len(r, MAX_TX_BYTES, "transaction")?;
            Tx::decode_bytes(r.take(n, "transaction")?)
        }
        CTX_ANCHOR => {
            let signer = get_aref(r, state)?;
            let seq = get_varint(r, "sequence number")?;
            let recipient = match r.u8("recipient")? {
                RCPT_DEVICE => Recipient::Device(get_aref(r, state)?),
                RCPT_GROUP => {
                    let n = get_len(r, 64, "group name")?;
                    let s = core::str::from_utf8(r.take(n, "group name")?)
                        .map_err(|_| corrupt("group name"))?;
                    Recipient::Group(GroupName::new(s).ok_or(corrupt("group name"))?)
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "recipient",
                        tag,
                    })
                }
            };
            let commitment = r.get()?;
            // The same range the canonical decoder accepts.
            let count = u32::try_from(get_varint(r, "anchor count")?)
                .ok()
                .filter(|c| (1..=MAX_BATCH).contains(c))
                .ok_or(corrupt("anchor count"))?;
            let delta = unzigzag(get_varint(r, "anchor time")?);
            let timestamp_ms = u64::try_from(i128::from(block_time_ms) + i128::from(delta))
                .map_err(|_| corrupt("anchor time"))?;
            let size_bytes = get_varint(r, "anchor size")?;
            let sig = r.get()?;
            Ok(Tx {
                signer,
                seq,
                body: TxBody::Anchor(Anchor {
                    recipient,
                    commitment,
                    count,
                    timestamp_ms,
                    size_bytes,
                }),
                sig,
                cosigs: Vec::new(),
            })
        }
        CTX_ACK => {
            let signer = get_aref(r, state)?;
            let seq = get_varint(r, "sequence number")?;
            let commitment = r.get()?;
            let sender = get_aref(r, state)?;
            let sig = r.get()?;
            Ok(Tx {
                signer,
                seq,
                body: TxBody::Ack { commitment, sender },
                sig,
                cosigs: Vec::new(),
            })
        }
        tag => Err(DecodeError::UnknownTag {
            what: "transaction form",
            tag,
        }),
    }
}

/// Encodes `block` (at its header's height) as a row. `env.accounts` must be the state after
/// the block (so accounts it creates have their slots).
pub(crate) fn encode_block(block: &Block, env: &Env<'_>) -> Vec<u8> {
    let h = &block.header;
    let set = env.sets.at(h.height);
    let prev_set = h
        .height
        .checked_sub(1)
        .and_then(|p| env.sets.at(p))
        .map(|(s, _)| s);
    let mut w = Writer::with_capacity(256 + block.txs.len() * 120);
    w.u8(ROW_VERSION);
    let compact_header = set.is_some_and(|(_, hash)| hash == h.validator_set_hash)
        && h.chain_id == env.chain_id
        && h.tx_count as usize == block.txs.len()
        && last_commit_hash(&block.last_commit) == h.last_commit_hash;
    match (compact_header, set) {
        (true, Some((set, _))) => {
            w.u8(HEAD_COMPACT);
            put_varint(&mut w, h.time_ms);
            w.put(&h.prev_hash);
            put_vref(&mut w, set, &h.proposer);
            w.put(&h.tx_root).put(&h.state_root);
        }
        _ => {
            let bytes = h.to_bytes();
            w.u8(HEAD_CANONICAL);
            put_varint(&mut w, bytes.len() as u64);
            w.raw(&bytes);
        }
    }
    match &block.last_commit {
        None => {
            w.u8(LC_NONE);
        }
        Some(c) => match prev_set {
            Some(ps)
                if c.height + 1 == h.height
                    && c.block_hash == h.prev_hash
                    && cert_is_compact(c, ps) =>
            {
                w.u8(LC_COMPACT);
                put_ccert(&mut w, c, ps);
            }
            _ => {
                let bytes = c.to_bytes();
                w.u8(LC_CANONICAL);
                put_varint(&mut w, bytes.len() as u64);
                w.raw(&bytes);
            }
        },
    }
    put_varint(&mut w, block.txs.len() as u64);
    for tx in &block.txs {
        put_ctx(&mut w, tx, env.accounts, h.time_ms);
    }
    w.into_bytes()
}

/// The head of a row: everything before the transactions.
pub(crate) struct Head {
    pub(crate) header: BlockHeader,
    pub(crate) last_commit: Option<CommitCertificate>,
}

/// Decodes the head of the row of block `height` from `r`, leaving `r` at the first
/// transaction. Needs only the row's first bytes (header, last commit, count), so a hash-link
/// walk reads little.
fn get_head(r: &mut Reader<'_>, height: u64, env: &Env<'_>) -> Result<(Head, usize), DecodeError> {
    r.version(ROW_VERSION, "block row")?;
    let head_form = r.u8("block head form")?;
    // The compact header's fields, or the canonical header.
    let (canonical, compact) = match head_form {
        HEAD_CANONICAL => {
            let n = get_len(r, 4096, "block header")?;
            (
                Some(BlockHeader::from_bytes(r.take(n, "block header")?)?),
                None,
            )
        }
        HEAD_COMPACT => {
            let set = env
                .sets
                .at(height)
                .ok_or(corrupt("block row (no validator set)"))?;
            let time_ms = get_varint(r, "block time")?;
            let prev_hash: Hash = r.get()?;
            let proposer = get_vref(r, set.0)?;
            let tx_root: Hash = r.get()?;
            let state_root: Hash = r.get()?;
            (
                None,
                Some((set, time_ms, prev_hash, proposer, tx_root, state_root)),
            )
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "block head form",
                tag,
            })
        }
    };
    let prev_hash = match (&canonical, &compact) {
        (Some(h), _) => h.prev_hash,
        (_, Some(c)) => c.2,
        _ => return Err(corrupt("block head")),
    };
    let last_commit = match r.u8("last commit form")? {
        LC_NONE => None,
        LC_COMPACT => {
            let prev = height
                .checked_sub(1)
                .ok_or(corrupt("last commit (at height 0)"))?;
            let (ps, _) = env
                .sets
                .at(prev)
                .ok_or(corrupt("last commit (no validator set)"))?;
            Some(get_ccert(r, ps, prev, prev_hash)?)
        }
        LC_CANONICAL => {
            let n = get_len(r, 64 * 1024, "last commit")?;
            Some(CommitCertificate::from_bytes(r.take(n, "last commit")?)?)
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "last commit form",
                tag,
            })
        }
    };
    let count = get_len(r, meshward_core::block::MAX_BLOCK_TXS, "block transactions")?;
    let header = match (canonical, compact) {
        (Some(h), _) => h,
        (None, Some(((_, set_hash), time_ms, prev_hash, proposer, tx_root, state_root))) => {
            BlockHeader {
                chain_id: env.chain_id.into(),
                height,
                prev_hash,
                time_ms,
                proposer,
                tx_root,
                tx_count: u32::try_from(count).map_err(|_| corrupt("block transactions"))?,
                state_root,
                validator_set_hash: set_hash,
                last_commit_hash: last_commit_hash(&last_commit),
            }
        }
        _ => return Err(corrupt("block head")),
    };
    Ok((
        Head {
            header,
            last_commit,
        },
        count,
    ))
}

/// Decodes only the head of a row (see [`get_head`]); `UnexpectedEnd` if `bytes` is a prefix
/// too short for it.
pub(crate) fn decode_head(bytes: &[u8], height: u64, env: &Env<'_>) -> Result<Head, DecodeError> {
    let mut r = Reader::new(bytes);
    Ok(get_head(&mut r, height, env)?.0)
}

/// Decodes the row of block `height` into the canonical block.
pub(crate) fn decode_block(bytes: &[u8], height: u64, env: &Env<'_>) -> Result<Block, DecodeError> {
    let mut r = Reader::new(bytes);
    let (head, count) = get_head(&mut r, height, env)?;
    let mut txs = Vec::with_capacity(count.min(r.remaining() / 64));
    for _ in 0..count {
        txs.push(get_ctx(&mut r, env.accounts, head.header.time_ms)?);
    }
    r.finish()?;
    Ok(Block {
        header: head.header,
        txs,
        last_commit: head.last_commit,
    })
}

/// Decodes only transaction `index` of the row of block `height` (the others are skipped
/// over, not rebuilt): what an index lookup confirms its candidate against.
pub(crate) fn decode_tx_at(
    bytes: &[u8],
    height: u64,
    index: usize,
    env: &Env<'_>,
) -> Result<Option<Tx>, DecodeError> {
    let mut r = Reader::new(bytes);
    let (head, count) = get_head(&mut r, height, env)?;
    if index >= count {
        return Ok(None);
    }
    for _ in 0..index {
        skip_ctx(&mut r)?;
    }
    get_ctx(&mut r, env.accounts, head.header.time_ms).map(Some)
}

fn skip_aref(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    if get_varint(r, "account reference")? == 1 {
        r.take(32, "account key")?;
    }
    Ok(())
}

/// Steps over one transaction without building it.
fn skip_ctx(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8("transaction form")? {
        CTX_CANONICAL => {
            let n = get_len(r, MAX_TX_BYTES, "transaction")?;
            r.take(n, "transaction")?;
        }
        CTX_ANCHOR => {
            skip_aref(r)?;
            get_varint(r, "sequence number")?;
            match r.u8("recipient")? {
                RCPT_DEVICE => skip_aref(r)?,
                RCPT_GROUP => {
                    let n = get_len(r, 64, "group name")?;
                    r.take(n, "group name")?;
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "recipient",
                        tag,
                    })
                }
            }
            r.take(32, "commitment")?;
            get_varint(r, "anchor count")?;
            get_varint(r, "anchor time")?;
            get_varint(r, "anchor size")?;
            r.take(64, "signature")?;
        }
        CTX_ACK => {
            skip_aref(r)?;
            get_varint(r, "sequence number")?;
            r.take(32, "commitment")?;
            skip_aref(r)?;
            r.take(64, "signature")?;
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "transaction form",
                tag,
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Genesis files, offline store commands (`store verify|synth|anchors|proof|migrate`) and
//! `meshward verify`: everything that works on files, with no node running.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use meshward_core::codec::Encode;
use meshward_core::genesis::{valid_chain_id, Genesis};
use meshward_core::hash::Hash;
use meshward_core::light::ProofFile;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Recipient, TxBody, Validator, ValidatorSet};
use meshward_node::{NODE_KEY_FILE, STORE_FILE};
use meshward_sdk::keyfile::{self, KeyKind};
use serde_json::json;

use crate::cli::GenesisNew;
use crate::Output;

pub(crate) fn genesis_new(a: &GenesisNew) -> Result<Output> {
    if !valid_chain_id(&a.chain_id) {
        bail!(
            "invalid --chain-id {:?}: use 1-64 characters of A-Z a-z 0-9 . _ -",
            a.chain_id
        );
    }
    let mut admin_keys = Vec::new();
    for f in &a.admins {
        admin_keys.push(keyfile::load(f, KeyKind::Admin)?.id());
    }
    let n = admin_keys.len();
    let admins = AdminSet::new(admin_keys, a.admin_threshold).with_context(|| {
        format!(
            "invalid admin set: {n} admin key(s) (at most 16, no duplicates) with --admin-threshold {} (must be 1..={n})",
            a.admin_threshold
        )
    })?;
    let mut vals = Vec::new();
    for d in &a.validators {
        let kp = keyfile::load(&d.join(NODE_KEY_FILE), KeyKind::Node).with_context(|| {
            format!(
                "validator directory {} (create it with meshward init)",
                d.display()
            )
        })?;
        vals.push(Validator {
            key: kp.id(),
            power: 1,
        });
    }
    let validators = ValidatorSet::new(vals)
        .context("invalid validator set: at most 128 validators, each data directory once")?;
    let genesis = Genesis {
        chain_id: a.chain_id.clone(),
        genesis_time_ms: meshward_core::clock::now_ms(),
        admins,
        validators,
    };
    if a.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a genesis",
            a.out.display()
        );
    }
    fs::write(&a.out, genesis.to_json() + "\n")
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    Ok(Output {
        text: format!(
            "genesis for chain {} written to {}\ngenesis hash: {}",
            genesis.chain_id,
            a.out.display(),
            genesis.hash()
        ),
        json: json!({
            "chain_id": genesis.chain_id,
            "file": a.out,
            "genesis_hash": genesis.hash().to_hex(),
            "validators": genesis.validators.validators.len(),
            "admins": genesis.admins.keys.len(),
            "admin_threshold": genesis.admins.threshold,
        }),
    })
}

fn load_genesis(path: &Path) -> Result<Genesis> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read genesis file {} (create one with meshward genesis new)",
            path.display()
        )
    })?;
    Genesis::from_json(&text).with_context(|| format!("genesis file {}", path.display()))
}

pub(crate) fn store_verify(dir: &Path) -> Result<Output> {
    let path = dir.join(STORE_FILE);
    let r = meshward_store::verify_chain(&path)?;
    Ok(Output {
        text: format!(
            "store {} is valid: {} blocks, {} transactions ({} anchors), tip height {}",
            path.display(),
            r.blocks,
            r.txs,
            r.anchors,
            r.tip_height
        ),
        json: json!({
            "ok": true,
            "blocks": r.blocks,
            "txs": r.txs,
            "anchors": r.anchors,
            "tip_height": r.tip_height,
        }),
    })
}

pub(crate) fn store_migrate(dir: &Path) -> Result<Output> {
    let r = meshward_store::migrate_v1(dir)?;
    let text = if r.in_place {
        format!(
            "upgraded {} in place: its key-change index covers {} blocks",
            r.old_file.display(),
            r.blocks
        )
    } else {
        format!(
            "migrated {} blocks and {} mailbox envelopes into {}; the old file is {}",
            r.blocks,
            r.envelopes,
            dir.join(STORE_FILE).display(),
            r.old_file.display()
        )
    };
    Ok(Output {
        text,
        json: json!({
            "ok": true,
            "in_place": r.in_place,
            "blocks": r.blocks,
            "envelopes": r.envelopes,
            "old_file": r.old_file,
        }),
    })
}

pub(crate) fn store_synth(
    dir: &Path,
    blocks: u64,
    anchors_per_block: usize,
    devices: usize,
) -> Result<Output> {
    use meshward_store::synth::{Synth, KEYS_FILE_NAME};
    // The keys file is written first, so its presence means a fleet to resume.
    let mut synth = if dir.join(KEYS_FILE_NAME).exists() {
        Synth::open(dir)?
    } else {
        Synth::create(dir, devices)?
    };
    let genesis_path = write_synth_genesis(dir, synth.store().genesis())?;
    let start = std::time::Instant::now();
    synth.write_blocks(blocks, anchors_per_block)?;
    let secs = start.elapsed().as_secs_f64();
    let (height, hash) = synth.store().tip().unwrap_or((0, Hash::ZERO));
    Ok(Output {
        text: format!(
            "wrote {blocks} blocks in {secs:.2} s; tip height {height} ({hash}); genesis in {}",
            genesis_path.display()
        ),
        json: json!({
            "blocks_written": blocks,
            "seconds": secs,
            "tip_height": height,
            "tip_hash": hash.to_hex(),
            "genesis": genesis_path,
            "genesis_hash": synth.store().genesis().hash().to_hex(),
        }),
    })
}

/// The genesis of a synthetic chain, as `<dir>/genesis.json` (what `meshward node run --genesis`
/// and `meshward verify --genesis` read). A file already there must be this chain's genesis.
fn write_synth_genesis(dir: &Path, genesis: &Genesis) -> Result<std::path::PathBuf> {
    let path = dir.join(SYNTH_GENESIS_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = Genesis::from_json(&text)
                .with_context(|| format!("genesis file {}", path.display()))?;
            if found != *genesis {
                bail!(
                    "{} is not the genesis of the synthetic chain in {} (move it away; store synth rewrites it)",
                    path.display(),
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::write(&path, genesis.to_json() + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    Ok(path)
}

/// The genesis file `store synth` writes beside the store.
const SYNTH_GENESIS_FILE: &str = "genesis.json";

pub(crate) fn store_anchors(dir: &Path, limit: Option<usize>) -> Result<Output> {
    let path = dir.join(STORE_FILE);
    if !path.exists() {
        bail!(
            "no store at {} (a node's data directory, or one made with meshward store synth)",
            path.display()
        );
    }
    let store = meshward_store::Store::open(&path)?;
    let tip = store.tip().map_or(0, |(h, _)| h);
    let limit = limit.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    let mut text = String::new();
    'blocks: for height in 1..=tip {
        let block = store
            .block(height)?
            .with_context(|| format!("block {height} is missing from {}", path.display()))?;
        for (index, tx) in block.block.txs.iter().enumerate() {
            let TxBody::Anchor(a) = &tx.body else {
                continue;
            };
            if rows.len() == limit {
                break 'blocks;
            }
            text.push_str(&format!(
                "{height} {index} {} {} seq {} count {}\n",
                a.commitment,
                tx.signer.peer_id(),
                tx.seq,
                a.count
            ));
            rows.push(json!({
                "height": height,
                "index": index,
                "commitment": a.commitment.to_hex(),
                "sender": tx.signer.peer_id(),
                "seq": tx.seq,
                "count": a.count,
            }));
        }
    }
    text.push_str(&format!(
        "{} anchor(s) in blocks 1 to {tip} of chain {} (height index commitment sender)",
        rows.len(),
        store.genesis().chain_id
    ));
    Ok(Output {
        text,
        json: json!({
            "chain_id": store.genesis().chain_id,
            "tip_height": tip,
            "anchors": rows,
        }),
    })
}

/// What a proof is asked for: an anchor by its commitment, or any transaction by its id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProofTarget {
    /// An anchor's commitment.
    Commitment(Hash),
    /// A transaction id.
    Tx(Hash),
}

/// Parses `<commitment>` or `--tx <id>` (clap makes exactly one present).
pub(crate) fn proof_target(commitment: Option<String>, tx: Option<String>) -> Result<ProofTarget> {
    match (commitment, tx) {
        (_, Some(t)) => Hash::from_hex(&t)
            .map(ProofTarget::Tx)
            .with_context(|| format!("--tx {t:?} is not 64 lower-case hex digits")),
        (Some(c), None) => Hash::from_hex(&c)
            .map(ProofTarget::Commitment)
            .with_context(|| format!("commitment {c:?} is not 64 lower-case hex digits")),
        (None, None) => bail!("give a commitment or --tx <id>"),
    }
}

impl std::fmt::Display for ProofTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofTarget::Commitment(c) => write!(f, "anchor {c}"),
            ProofTarget::Tx(t) => write!(f, "transaction {t}"),
        }
    }
}

pub(crate) fn store_proof(dir: &Path, target: ProofTarget, out: &Path) -> Result<Output> {
    let path = dir.join(STORE_FILE);
    let store = meshward_store::Store::open(&path)?;
    let proof = match target {
        ProofTarget::Commitment(c) => store.anchor_proof(&c)?,
        ProofTarget::Tx(t) => store.tx_proof(&t)?,
    }
    .with_context(|| format!("no final {target} in {}", path.display()))?;
    let file = ProofFile::new(&store.genesis().chain_id, &proof);
    if out.exists() {
        bail!("{} already exists; refusing to overwrite", out.display());
    }
    fs::write(out, file.to_json() + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Output {
        text: format!(
            "proof of {target} (block {}) written to {}",
            file.height,
            out.display()
        ),
        json: json!({ "kind": file.kind, "tx": file.tx, "commitment": file.commitment, "height": file.height, "file": out }),
    })
}

pub(crate) fn verify(genesis_path: &Path, proof_path: &Path) -> Result<Output> {
    let genesis = load_genesis(genesis_path)?;
    let text = fs::read_to_string(proof_path)
        .with_context(|| format!("cannot read proof file {}", proof_path.display()))?;
    let p = ProofFile::verify_json(&text, &genesis)
        .with_context(|| format!("proof {} is invalid", proof_path.display()))?;
    let mut json = json!({
        "valid": true,
        "chain_id": genesis.chain_id,
        "height": p.height,
        "block_hash": p.block_hash.to_hex(),
        "block_time_ms": p.block_time_ms,
        "tx_index": p.tx_index,
        "tx": p.tx_id.to_hex(),
        "kind": p.tx.body.name(),
        "signer": p.tx.signer.peer_id(),
        "seq": p.tx.seq,
        "cosigners": p.tx.cosigs.iter().map(|c| c.key.peer_id()).collect::<Vec<_>>(),
        "genesis_bound": p.genesis_bound,
        "proven": p.describe(),
    });
    if let Some(a) = p.anchor() {
        let recipient = match &a.recipient {
            Recipient::Device(d) => d.peer_id(),
            Recipient::Group(g) => format!("group:{g}"),
        };
        json["sender"] = json!(a.sender.peer_id());
        json["recipient"] = json!(recipient);
        json["commitment"] = json!(a.commitment.to_hex());
        json["count"] = json!(a.count);
        json["size_bytes"] = json!(a.size_bytes);
        json["timestamp_ms"] = json!(a.timestamp_ms);
    }
    if let Some(e) = &p.envelope {
        json["envelope"] = json!({
            "commitment": e.commitment.to_hex(),
            "index": e.index,
            "sender_key": e.sender.peer_id(),
            "recipient_key": e.recipient.peer_id(),
            "seq": e.seq,
            "timestamp_ms": e.timestamp_ms,
            "kind": e.kind,
            "ciphertext_bytes": e.ciphertext_bytes,
        });
    }
    let envelope = p.envelope.as_ref().map_or(String::new(), |e| {
        format!(
            "; envelope {} ({}, seq {}) is number {} of the anchor's",
            e.commitment, e.kind, e.seq, e.index
        )
    });
    let bound = if p.genesis_bound {
        ""
    } else {
        " (a version 1 proof: the genesis's admins and time are not bound by it)"
    };
    Ok(Output {
        text: format!(
            "valid: {}; block {} ({}), certified by the validators of chain {}{bound}{envelope}",
            p.describe(),
            p.height,
            p.block_hash,
            genesis.chain_id
        ),
        json,
    })
}

/// `meshward firmware-data`: the binary genesis and proofs a no_std device loads.
pub(crate) fn firmware_data(genesis_path: &Path, proofs: &[PathBuf], out: &Path) -> Result<Output> {
    let genesis = load_genesis(genesis_path)?;
    let mut files = vec![(out.join("genesis.bin"), genesis.to_bytes())];
    for p in proofs {
        let text = fs::read_to_string(p)
            .with_context(|| format!("cannot read proof file {}", p.display()))?;
        ProofFile::verify_json(&text, &genesis)
            .with_context(|| format!("proof {} is invalid", p.display()))?;
        let file: ProofFile = serde_json::from_str(&text)?;
        let bytes = meshward_core::hex::decode(&file.proof).context("proof bytes are not hex")?;
        let stem = p
            .file_stem()
            .with_context(|| format!("{} has no file name", p.display()))?;
        files.push((out.join(stem).with_extension("bin"), bytes));
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (path, _) in &files {
        if path.exists() {
            bail!("{} already exists; refusing to overwrite", path.display());
        }
    }
    let mut written = Vec::new();
    for (path, bytes) in &files {
        fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(json!({ "file": path, "bytes": bytes.len() }));
    }
    Ok(Output {
        text: files
            .iter()
            .map(|(p, b)| format!("wrote {} ({} bytes)", p.display(), b.len()))
            .collect::<Vec<_>>()
            .join("\n"),
        json: json!({ "files": written }),
    })
}

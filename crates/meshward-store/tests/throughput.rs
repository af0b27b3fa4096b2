//! Figures for the synthetic writer: blocks per second and bytes on disk per anchor.
//!
//! Not a test of speed (performance is measured, never asserted): run it by hand, in release,
//!
//! ```text
//! cargo test --release -p meshward-store --test throughput -- --ignored --nocapture
//! ```
//!
//! `MESHWARD_SYNTH_BLOCKS` (default 2000), `MESHWARD_SYNTH_ANCHORS` (50 a block),
//! `MESHWARD_SYNTH_DEVICES` (1000) and `MESHWARD_SYNTH_DIR` (default: cargo's `target/tmp`, so
//! that the figures come from the disk the build is on rather than a tmpfs) change the run.

use std::time::Instant;

use meshward_store::synth::Synth;
use meshward_store::{format, verify_chain, Store};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a measurement, run by hand in release"]
fn synth_throughput_figures() {
    let blocks = env("MESHWARD_SYNTH_BLOCKS", 2000);
    let anchors = env("MESHWARD_SYNTH_ANCHORS", 50) as usize;
    let devices = env("MESHWARD_SYNTH_DEVICES", 1000) as usize;
    let base = std::env::var("MESHWARD_SYNTH_DIR")
        .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join(format::FILE_NAME);

    let mut synth = Synth::create(dir.path(), devices).unwrap();
    let t = Instant::now();
    let mut enroll_blocks = 0;
    while synth.enrolled_devices().len() < devices {
        synth.write_blocks(1, anchors).unwrap();
        enroll_blocks += 1;
    }
    let enroll_s = t.elapsed().as_secs_f64();
    let size_enrolled = std::fs::metadata(&path).unwrap().len();

    let t = Instant::now();
    let report = synth.write_blocks(blocks, anchors).unwrap();
    let write_s = t.elapsed().as_secs_f64();
    drop(synth);
    let size = std::fs::metadata(&path).unwrap().len();

    let t = Instant::now();
    let store = Store::open(&path).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let tip = store.tip().unwrap().0;
    assert_eq!(tip, enroll_blocks + blocks);

    // The sync path: the same blocks applied to a second store (certificates and every
    // transaction signature checked, transactions executed), without the synthetic signing.
    let chain: Vec<_> = (1..=tip)
        .map(|h| store.block(h).unwrap().unwrap())
        .collect();
    let replica_path = dir.path().join("replica.redb");
    let mut replica = Store::create(&replica_path, store.genesis()).unwrap();
    let t = Instant::now();
    for cb in &chain {
        replica.apply_block(cb).unwrap();
    }
    let apply_s = t.elapsed().as_secs_f64();
    drop(replica);
    drop(store);
    {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let db = redb::Database::open(&path).unwrap();
        let rtx = db.begin_read().unwrap();
        let row = |name: &str, st: redb::TableStats| {
            println!(
                "  table {name:<12} stored {:>10} B, metadata {:>9} B, fragmented {:>9} B",
                st.stored_bytes(),
                st.metadata_bytes(),
                st.fragmented_bytes()
            )
        };
        for (name, table) in [
            (
                "block_log",
                rtx.open_table(format::BLOCK_LOG).unwrap().stats(),
            ),
            ("tx_idx", rtx.open_table(format::TX_IDX).unwrap().stats()),
            (
                "commitment_idx",
                rtx.open_table(format::COMMITMENT_IDX).unwrap().stats(),
            ),
            (
                "block_hash_idx",
                rtx.open_table(format::BLOCK_HASH_IDX).unwrap().stats(),
            ),
        ] {
            row(name, table.unwrap());
        }
        row(
            "state",
            rtx.open_table(format::STATE).unwrap().stats().unwrap(),
        );
    }
    let t = Instant::now();
    let verified = verify_chain(&path).unwrap();
    let verify_s = t.elapsed().as_secs_f64();

    println!("devices {devices}: {enroll_blocks} enrollment blocks in {enroll_s:.2} s");
    println!(
        "wrote {} blocks x {anchors} anchors = {} anchors in {write_s:.2} s: {:.0} blocks/s, {:.0} anchors/s",
        report.blocks,
        report.anchors,
        report.blocks as f64 / write_s,
        report.anchors as f64 / write_s
    );
    println!(
        "file {size} bytes ({:.1} MiB); {:.0} bytes per anchor overall, {:.0} bytes per anchor for the anchor blocks",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / report.anchors as f64,
        (size - size_enrolled) as f64 / report.anchors as f64
    );
    println!(
        "apply_block (sync path) {:.0} blocks/s, {:.0} anchors/s",
        (tip as f64) / apply_s,
        report.anchors as f64 / apply_s
    );
    println!(
        "open (checks every block) {open_s:.2} s; verify_chain (replays {} txs) {verify_s:.2} s",
        verified.txs
    );
}

/// Prints, for the store at `MESHWARD_STATS_PATH`, each table's stored, metadata and
/// fragmented bytes and the file's allocated pages: where a store's bytes go.
#[test]
#[ignore = "a measurement, run by hand: MESHWARD_STATS_PATH=<store file>"]
fn table_stats_of_a_store() {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let path = std::env::var("MESHWARD_STATS_PATH")
        .expect("MESHWARD_STATS_PATH names the store file to measure");
    let db = redb::Database::open(&path).unwrap();
    {
        let w = db.begin_write().unwrap();
        let s = w.stats().unwrap();
        println!(
            "allocated {} B ({} pages)",
            s.allocated_pages() * s.page_size() as u64,
            s.allocated_pages()
        );
        w.abort().unwrap();
    }
    let rtx = db.begin_read().unwrap();
    macro_rules! row {
        ($name:literal, $t:expr) => {{
            let t = rtx.open_table($t).unwrap();
            let st = t.stats().unwrap();
            println!(
                "  {:<16} rows {:>8} stored {:>9} B metadata {:>8} B fragmented {:>8} B",
                $name,
                t.len().unwrap(),
                st.stored_bytes(),
                st.metadata_bytes(),
                st.fragmented_bytes()
            );
        }};
    }
    row!("block_log", format::BLOCK_LOG);
    row!("block_at", format::BLOCK_AT);
    row!("certs", format::CERTS);
    row!("block_hash_idx", format::BLOCK_HASH_IDX);
    row!("tx_idx", format::TX_IDX);
    row!("commitment_idx", format::COMMITMENT_IDX);
    row!("handoffs", format::HANDOFFS);
    row!("validator_sets", format::VALIDATOR_SETS);
    row!("state", format::STATE);
    row!("meta", format::META);
}

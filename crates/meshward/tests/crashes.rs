//! Crashes at random points under load: twenty SIGKILLs of real `meshward node run` processes
//! at moments a seeded schedule picks, while devices keep anchoring. After each kill the dead
//! node's store verifies as it was left; at the end the four nodes agree on every height and
//! every transaction the load saw final is final at the same place on every node.
//!
//! The test prints its seed and schedule first; `MESHWARD_CRASH_SEED=<seed>` replays it.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::load::{assert_same_hashes, enroll_devices, max_height, Load};
use common::{meshward, Cluster};
use rand::rngs::{OsRng, StdRng};
use rand::{Rng, SeedableRng};

const MIN: Duration = Duration::from_secs(60);
const NODES: usize = 4;
const KILLS: usize = 20;

/// One SIGKILL of the schedule.
#[derive(Debug, Clone, Copy)]
struct Kill {
    /// The node killed.
    node: usize,
    /// Heights the chain advances (on the other nodes) before the kill.
    after_heights: u64,
    /// A moment within that height, in ms after it was seen.
    offset_ms: u64,
    /// Heights the others advance while the node is down.
    down_heights: u64,
}

fn schedule(seed: u64) -> Vec<Kill> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..KILLS)
        .map(|_| Kill {
            node: rng.gen_range(0..NODES),
            after_heights: rng.gen_range(1..=3),
            offset_ms: rng.gen_range(0..400),
            down_heights: rng.gen_range(1..=3),
        })
        .collect()
}

/// `meshward --json store verify --dir DIR`: the tip height it replayed to, or the failure.
fn verify_store(dir: &Path) -> Result<u64, String> {
    let out = meshward()
        .args(["--json", "store", "verify", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["tip_height"]
        .as_u64()
        .ok_or_else(|| format!("no tip_height in {v}"))
}

#[test]
fn twenty_kills_at_random_moments_lose_nothing_final() {
    let seed: u64 = match std::env::var("MESHWARD_CRASH_SEED") {
        Ok(s) => s.parse().expect("MESHWARD_CRASH_SEED is a u64"),
        Err(_) => OsRng.gen(),
    };
    let plan = schedule(seed);
    eprintln!(
        "crash schedule seed {seed} (replay: MESHWARD_CRASH_SEED={seed} cargo test -p meshward \
         --test crashes)\n{plan:?}"
    );

    let mut c = Cluster::new(NODES, 200);
    c.start_all();
    let all: Vec<usize> = (0..NODES).collect();
    c.wait_height(&all, 2, MIN);
    let devices = enroll_devices(&c, 16);
    let load = Load::start(&c, devices);
    load.wait_more_finals(20, MIN);

    for (k, kill) in plan.iter().enumerate() {
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != kill.node).collect();
        // Every node takes part again before the next kill (the last one restarted may still
        // be catching up), so the chain needs no more than the three that stay up.
        let top = max_height(&c, &all);
        c.wait_height(&all, top, 2 * MIN);
        let h = max_height(&c, &others);
        c.wait_height(&others, h + kill.after_heights, MIN);
        // Not a wait for a condition: the schedule's random moment within the height.
        std::thread::sleep(Duration::from_millis(kill.offset_ms));
        c.kill(kill.node);

        // The store as the kill left it verifies, and holds every block the node had
        // reported (a block is reported once its commit is synced).
        let dir = c.nodes[kill.node].dir.clone();
        let tip = verify_store(&dir).unwrap_or_else(|e| {
            panic!(
                "kill {k} (seed {seed}): node{}'s store fails verify: {e}",
                kill.node
            )
        });
        assert!(
            tip >= top,
            "kill {k} (seed {seed}): node{} verified to {tip}, but it had reached {top}",
            kill.node
        );

        let h = max_height(&c, &others);
        c.wait_height(&others, h + kill.down_heights, MIN);
        c.start(kill.node);
    }

    // The load goes on after the last restart; what it saw final is final everywhere.
    load.wait_more_finals(20, 2 * MIN);
    let finals = load.finals();
    drop(load);
    assert!(
        finals.len() >= 60,
        "only {} final (seed {seed})",
        finals.len()
    );
    let h = c.height(0).expect("node 0 answers");
    c.wait_height(&all, h, 2 * MIN);
    assert_same_hashes(&c, &all, h);
    for (hash, loc) in &finals {
        for i in &all {
            let v = c.tx_status(*i, hash).expect("status answers");
            assert_eq!(v["status"], "final", "{hash} on node{i} (seed {seed}): {v}");
            let at = (v["height"].as_u64().unwrap(), v["index"].as_u64().unwrap());
            assert_eq!(at, *loc, "{hash} on node{i} (seed {seed})");
        }
    }

    // Stopped cleanly, every store verifies to at least the common height.
    for i in &all {
        let status = c.stop(*i);
        assert!(status.success(), "node{i} stops cleanly: {status}");
        let tip = verify_store(&c.nodes[*i].dir)
            .unwrap_or_else(|e| panic!("node{i}'s store fails verify (seed {seed}): {e}"));
        assert!(tip >= h, "node{i} verified to {tip} < {h} (seed {seed})");
    }
}

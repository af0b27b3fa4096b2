//! A Byzantine validator: one of four real `meshward node run` processes, restarted with
//! `--byzantine MODE` under a steady load of anchors, in each mode of
//! `meshward_consensus::byzantine` (a build with `--features byzantine`).
//!
//! Asserted for each mode: the honest three hold the same block at every height (no fork);
//! every transaction the load saw final is final at the same place on each of them; the chain
//! finalises at least 0.7 of the transactions per second it did in the 20 s before, with the
//! same validator honest. For `equivocate`, the honest validators see its double votes, put
//! them on the ledger as evidence (every honest node shows the conviction in its API and
//! metrics), and round 0 skips the convicted validator as proposer.
//!
//! `cargo test -p meshward --features byzantine --test byzantine` (CI runs it). The tests take a
//! lock so they run one at a time: each measures throughput on a two-core machine.
#![cfg(feature = "byzantine")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::load::{assert_same_hashes, enroll_devices, max_height, Load};
use common::{meshward, Cluster};
use meshward_testkit::{http, wait_until};

const MIN: Duration = Duration::from_secs(60);
const NODES: usize = 4;
const BYZANTINE: usize = 3;
const HONEST: [usize; 3] = [0, 1, 2];
const DEVICES: usize = 16;
const WINDOW: Duration = Duration::from_secs(20);
const MIN_RATIO: f64 = 0.7;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Finalised transactions per second the load sees over `WINDOW`.
fn measure(load: &Load) -> f64 {
    let start = Instant::now();
    let before = load.finals().len();
    while start.elapsed() < WINDOW {
        // The measurement window's pacing, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(100));
    }
    (load.finals().len() - before) as f64 / start.elapsed().as_secs_f64()
}

/// Heights in `from..=to` whose block node `proposer` proposed, as node0 holds them.
fn proposed_by(c: &Cluster, proposer: usize, from: u64, to: u64) -> Vec<u64> {
    let id = &c.nodes[proposer].peer_id;
    (from..=to)
        .filter(|h| {
            let r = http(
                c.nodes[0].api_port,
                "GET",
                &format!("/v1/blocks/{h}"),
                &[],
                b"",
            )
            .unwrap();
            assert_eq!(r.status, 200, "block {h}");
            r.json()["header"]["proposer"].as_str() == Some(id.as_str())
        })
        .collect()
}

/// What a run leaves to look at: the cluster (node0 stopped, its store verified) and the
/// heights the chain reached while the validator was Byzantine.
struct Run {
    c: Cluster,
    lying_from: u64,
    lying_to: u64,
}

fn run(mode: &str) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::new(NODES, 1000);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let devices = enroll_devices(&c, DEVICES);
    let load = Load::start(&c, devices);
    load.wait_more_finals(DEVICES, MIN);
    let healthy = measure(&load);
    eprintln!("{mode}: healthy {healthy:.1} tx/s final");
    assert!(
        healthy > 0.0,
        "nothing became final with four honest validators"
    );

    // The same validator, back as a Byzantine one.
    assert!(c.stop(BYZANTINE).success());
    c.start_with(BYZANTINE, &["--byzantine", mode]);
    wait_until("the Byzantine validator to say so", MIN, || {
        c.log(BYZANTINE).contains("BYZANTINE")
    });
    let lying_from = max_height(&c, &HONEST) + 1;
    let lying = measure(&load);
    let ratio = lying / healthy;
    eprintln!("{mode}: with node{BYZANTINE} Byzantine {lying:.1} tx/s final (ratio {ratio:.3})");

    let finals = load.finals();
    drop(load);
    let upto = HONEST.iter().filter_map(|&i| c.height(i)).min().unwrap();
    assert_same_hashes(&c, &HONEST, upto);
    for (hash, (height, index)) in &finals {
        for i in HONEST {
            let v = c.tx_status(i, hash).unwrap();
            assert_eq!(v["status"], "final", "{hash} on node{i}: {v}");
            assert_eq!(
                (v["height"].as_u64(), v["index"].as_u64()),
                (Some(*height), Some(*index)),
                "{hash} on node{i}"
            );
        }
    }
    assert!(
        ratio >= MIN_RATIO,
        "{mode}: {lying:.1} tx/s final with a Byzantine validator, below {MIN_RATIO} of {healthy:.1}"
    );
    // Every block an honest validator holds re-executes to its state root.
    assert!(c.stop(0).success());
    let out = meshward()
        .args(["store", "verify", "--dir"])
        .arg(&c.nodes[0].dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: store verify on node0: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.start(0);
    c.wait_height(&[0], upto, MIN);
    Run {
        c,
        lying_from,
        lying_to: upto,
    }
}

#[test]
fn an_equivocating_validator_forks_nothing_and_is_seen_double_voting() {
    let Run { c, .. } = run("equivocate");
    let seen = HONEST
        .iter()
        .filter(|&&i| c.log(i).contains("validator double-voted"))
        .count();
    assert!(seen >= 1, "no honest validator saw the double votes");
    // And counted them, against that validator, in the metrics.
    let series = format!(
        "meshward_consensus_equivocations_total{{validator=\"{}\",kind=\"vote\"}}",
        c.nodes[BYZANTINE].peer_id
    );
    let counted: f64 = HONEST
        .iter()
        .filter_map(|&i| {
            let r = http(c.nodes[i].api_port, "GET", "/metrics", &[], b"")?;
            let text = String::from_utf8(r.body).ok()?;
            text.lines()
                .find(|l| l.starts_with(&series))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    assert!(counted > 0.0, "no honest validator counted {series}");
    // The honest validators put the double votes on the ledger as evidence: every honest node
    // shows the conviction (API, metric), and round 0 skips the convicted validator.
    let liar = c.nodes[BYZANTINE].peer_id.clone();
    let view = |i: usize| -> Option<serde_json::Value> {
        let r = http(c.nodes[i].api_port, "GET", "/v1/console", &[], b"")?;
        let v = r.json();
        v["validators"]
            .as_array()?
            .iter()
            .find(|x| x["id"] == liar.as_str())
            .cloned()
    };
    for i in HONEST {
        let v = meshward_testkit::wait_for(
            &format!("node{i} to show node{BYZANTINE} convicted"),
            MIN,
            || view(i).filter(|v| v["convictions"].as_u64().unwrap_or(0) >= 1),
        );
        eprintln!("node{i} sees node{BYZANTINE}: {v}");
        let r = http(c.nodes[i].api_port, "GET", "/metrics", &[], b"").unwrap();
        let text = String::from_utf8(r.body).unwrap();
        let gauge = format!("meshward_consensus_validator_convictions{{validator=\"{liar}\"}}");
        let n: f64 = text
            .lines()
            .find(|l| l.starts_with(&gauge))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "node{i}: {gauge} is {n}");
    }
    wait_until(&format!("round 0 to skip node{BYZANTINE}"), MIN, || {
        view(0).is_some_and(|v| v["round0_eligible"] == false)
    });
    // Nobody honest was convicted.
    let r = http(c.nodes[0].api_port, "GET", "/v1/console", &[], b"").unwrap();
    for v in r.json()["validators"].as_array().unwrap() {
        if v["id"] != liar.as_str() {
            assert_eq!(v["convictions"], 0, "an honest validator convicted: {v}");
        }
    }
}

#[test]
fn a_validator_proposing_wrong_blocks_forks_nothing() {
    let r = run("bad-proposal");
    assert!(r.c.log(BYZANTINE).contains("proposing a wrong block"));
    let accepted = proposed_by(&r.c, BYZANTINE, r.lying_from, r.lying_to);
    assert!(
        accepted.is_empty(),
        "wrong blocks committed at {accepted:?}"
    );
}

#[test]
fn a_validator_withholding_its_proposals_forks_nothing() {
    let r = run("withhold");
    assert!(r
        .c
        .log(BYZANTINE)
        .contains("withholding the proposal's parts"));
    let committed = proposed_by(&r.c, BYZANTINE, r.lying_from, r.lying_to);
    assert!(
        committed.is_empty(),
        "withheld blocks committed at {committed:?}"
    );
}

#[test]
fn a_validator_replaying_stale_votes_forks_nothing() {
    run("stale-votes");
}

#[test]
fn a_validator_sending_garbage_frames_forks_nothing() {
    let r = run("garbage");
    // The frames arrived and were refused by the codec (Malachite logs each at ERROR).
    let refused = HONEST
        .iter()
        .filter(|&&i| r.c.log(i).contains("Failed to decode consensus message"))
        .count();
    assert!(refused >= 1, "no honest validator received a garbage frame");
}

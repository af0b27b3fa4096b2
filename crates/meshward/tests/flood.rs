//! A flooded validator: 1,200 TCP connections to one of four validators' mesh, consensus and
//! API ports for 20 s, sending garbage, stopping halfway through handshakes, or sending nothing
//! (`meshward_testkit::flood`), while enrolled devices keep anchoring through every node.
//!
//! Asserted: the chain's finalised transactions per second during the flood are at least 0.7 of
//! the 20 s before it; the flooded node is at the others' height within 10 s of the flood's end;
//! its resident memory grows by less than [`RSS_GROWTH_LIMIT_MIB`]; the four nodes hold the same
//! block at every height; every transaction the load saw final is final on the flooded node.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::load::{assert_same_hashes, enroll_devices, max_height, Load};
use common::Cluster;
use meshward_testkit::flood::{Flood, Protocol, Target};
use meshward_testkit::wait_for;

const MIN: Duration = Duration::from_secs(60);
const NODES: usize = 4;
const FLOODED: usize = 3;
const DEVICES: usize = 24;
const WINDOW: Duration = Duration::from_secs(20);
/// Connections held open at once to each of the flooded node's three ports.
const CONNECTIONS_PER_PORT: usize = 400;
const MIN_RATIO: f64 = 0.7;
const CATCH_UP: Duration = Duration::from_secs(10);
const RSS_GROWTH_LIMIT_MIB: f64 = 256.0;

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Finalised transactions per second the load sees over `WINDOW`, sampling the flooded node's
/// resident memory once a second; returns (tx/s, peak RSS in MiB).
fn measure(load: &Load, pid: u32) -> (f64, f64) {
    let start = Instant::now();
    let before = load.finals().len();
    let mut peak = 0f64;
    let mut next_sample = start;
    while start.elapsed() < WINDOW {
        if Instant::now() >= next_sample {
            peak = peak.max(rss_mib(pid).unwrap_or(0.0));
            next_sample += Duration::from_secs(1);
        }
        // The measurement window's pacing, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = load.finals().len() - before;
    (done as f64 / start.elapsed().as_secs_f64(), peak)
}

#[test]
fn a_flooded_validator_keeps_the_fleet_going_and_catches_up() {
    let mut c = Cluster::new(NODES, 1000);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let devices = enroll_devices(&c, DEVICES);
    let load = Load::start(&c, devices);
    load.wait_more_finals(DEVICES, MIN);

    let pid = c.nodes[FLOODED].child.as_ref().unwrap().id();
    let (healthy, rss_healthy) = measure(&load, pid);
    eprintln!("healthy: {healthy:.1} tx/s final; node{FLOODED} RSS {rss_healthy:.1} MiB");
    assert!(
        healthy > 0.0,
        "no transaction became final before the flood"
    );

    let n = &c.nodes[FLOODED];
    let targets: Vec<Target> = [
        (n.p2p_port, Protocol::Libp2p),
        (n.p2p_port + 1, Protocol::Libp2p),
        (n.api_port, Protocol::Http),
    ]
    .into_iter()
    .map(|(port, protocol)| Target {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        protocol,
        connections: CONNECTIONS_PER_PORT,
    })
    .collect();
    let flood = Flood::start(&targets, WINDOW);
    let (flooded, rss_peak) = measure(&load, pid);
    let reports = flood.finish();
    for r in &reports {
        eprintln!("flood: {r:?}");
    }
    let opened: u64 = reports.iter().map(|r| r.opened).sum();
    assert!(
        opened >= 1_000,
        "the flood opened only {opened} connections"
    );
    let ratio = flooded / healthy;
    eprintln!(
        "during the flood: {flooded:.1} tx/s final (ratio {ratio:.3}); node{FLOODED} RSS peak \
         {rss_peak:.1} MiB"
    );

    let others = [0, 1, 2];
    let target = max_height(&c, &others);
    let flood_end = Instant::now();
    wait_for(
        &format!("node{FLOODED} to reach height {target} after the flood"),
        CATCH_UP,
        || c.height(FLOODED).filter(|&h| h >= target),
    );
    eprintln!(
        "node{FLOODED} at height {target} {} ms after the flood",
        flood_end.elapsed().as_millis()
    );
    assert!(
        c.status(FLOODED).is_some(),
        "node{FLOODED}'s API answers after the flood"
    );
    assert!(
        ratio >= MIN_RATIO,
        "finalised tx/s during the flood {flooded:.1} is below {MIN_RATIO} of {healthy:.1}"
    );
    assert!(
        rss_peak - rss_healthy < RSS_GROWTH_LIMIT_MIB,
        "node{FLOODED}'s RSS grew from {rss_healthy:.1} to {rss_peak:.1} MiB"
    );

    let finals = load.finals();
    drop(load);
    let upto = (0..NODES).filter_map(|i| c.height(i)).min().unwrap();
    assert_same_hashes(&c, &[0, 1, 2, 3], upto);
    for (hash, (height, index)) in &finals {
        let v = c.tx_status(FLOODED, hash).unwrap();
        assert_eq!(v["status"], "final", "{hash} on node{FLOODED}: {v}");
        assert_eq!(
            (v["height"].as_u64(), v["index"].as_u64()),
            (Some(*height), Some(*index)),
            "{hash} on node{FLOODED}"
        );
    }
}

//! Real Malachite over real libp2p on 127.0.0.1: four validators, each in this process with its
//! own data dir, redb store and mempool, created from one genesis.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{devices, serial, Net};
use meshward_consensus::{ConsensusEvent, Mempool};
use meshward_core::hash::Hash;
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use meshward_testkit::wait_until_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalise_blocks_with_identical_hashes() {
    serial(async {
        let mut net = Net::new(4);
        // Heartbeat blocks every 20 ms, so the test sees many heights quickly.
        net.idle_block_interval_ms = 20;
        net.start_all().await;
        wait_until_async(
            "50 blocks on every validator",
            Duration::from_secs(120),
            || net.min_tip() >= 50,
        )
        .await;
        let upto = net.min_tip();
        net.assert_same_chain(upto);
        // Every stored certificate verifies with core alone, against the genesis set.
        for h in 1..=upto {
            let cb = net.block(0, h);
            cb.certificate
                .verify(&cb.block.header, &net.genesis.validators)
                .unwrap();
        }
        // Each block carries the previous block's certificate.
        for h in 2..=upto {
            let cb = net.block(1, h);
            let lc = cb.block.last_commit.as_ref().unwrap();
            assert_eq!(lc.height, h - 1);
            assert_eq!(lc.block_hash, net.block(1, h - 1).block.hash());
        }
        assert!(net.node(0).handle.peer_count().await >= 3);
        net.stop_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_chain_writes_about_one_block_per_second() {
    serial(async {
        let mut net = Net::new(4);
        net.start_all().await;
        wait_until_async("the first block", Duration::from_secs(30), || {
            net.min_tip() >= 1
        })
        .await;
        let (h0, t0) = (net.max_tip(), Instant::now());
        tokio::time::sleep(Duration::from_secs(4)).await;
        let blocks = net.max_tip() - h0;
        let secs = t0.elapsed().as_secs_f64();
        println!("idle chain: {blocks} blocks in {secs:.1} s");
        assert!((2..=7).contains(&blocks), "{blocks} blocks in {secs:.1} s");
        // A transaction is committed promptly, without waiting for the heartbeat.
        let dev = devices(1, 9);
        let txs = net.enroll_txs(&dev, 1);
        let mut events = net.node(0).handle.events();
        let before = Instant::now();
        net.submit(&txs);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(ConsensusEvent::Committed { txs: n, .. })) if n > 0 => break,
                Ok(Ok(_)) => {}
                other => panic!("no block with the transaction: {other:?}"),
            }
        }
        println!("idle chain: transaction final after {:?}", before.elapsed());
        assert!(before.elapsed() < Duration::from_millis(900));
        net.stop_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_submitted_are_finalised() {
    serial(async {
        let mut net = Net::new(4);
        net.start_all().await;
        let devs = devices(20, 1);
        let mut txs = net.enroll_txs(&devs, 1);
        for (i, d) in devs.iter().enumerate() {
            let to = &devs[(i + 1) % devs.len()];
            for seq in 1..=5 {
                txs.push(net.anchor_tx(d, to, seq, i as u64));
            }
        }
        net.submit(&txs);
        let admin = net.admin.public();
        wait_until_async("all transactions applied", Duration::from_secs(60), || {
            net.running().all(|n| {
                let s = n.store.read().unwrap();
                let st = s.state();
                st.account(&admin).map(|a| a.seq) == Some(20)
                    && devs
                        .iter()
                        .all(|d| st.account(&d.id()).map(|a| a.seq) == Some(5))
            })
        })
        .await;
        let upto = net.min_tip();
        net.assert_same_chain(upto);
        // Each transaction is in exactly one block, on every validator.
        let mut seen: HashMap<Hash, u64> = HashMap::new();
        for h in 1..=upto {
            for tx in &net.block(2, h).block.txs {
                *seen.entry(tx.id()).or_default() += 1;
            }
        }
        for tx in &txs {
            assert_eq!(seen.get(&tx.id()), Some(&1), "tx {}", tx.id());
        }
        assert_eq!(seen.len(), txs.len());
        // Mempools were emptied by the commits.
        wait_until_async("mempools drained", Duration::from_secs(5), || {
            net.running().all(|n| n.mempool.len() == 0)
        })
        .await;
        net.stop_all().await;
    })
    .await;
}

/// Pre-signed load: `devs` anchor to each other, `per_device` transactions each.
fn load(net: &Net, devs: &[meshward_core::ids::Keypair], per_device: u64) -> Vec<Tx> {
    let mut txs = net.enroll_txs(devs, 1);
    for seq in 1..=per_device {
        for (i, d) in devs.iter().enumerate() {
            txs.push(net.anchor_tx(d, &devs[(i + 1) % devs.len()], seq, 7));
        }
    }
    txs
}

async fn rate(net: &Net, window: Duration) -> (f64, f64) {
    let (h0, t0) = (net.max_tip(), Instant::now());
    let committed_before: usize = txs_upto(net, h0);
    tokio::time::sleep(window).await;
    let h1 = net.max_tip();
    let secs = t0.elapsed().as_secs_f64();
    let txs = txs_upto(net, h1) - committed_before;
    ((h1 - h0) as f64 / secs, txs as f64 / secs)
}

fn txs_upto(net: &Net, h: u64) -> usize {
    let i = (0..net.nodes.len())
        .find(|i| net.nodes[*i].is_some())
        .unwrap();
    (1..=h.min(net.tip(i)))
        .map(|x| net.block(i, x).block.txs.len())
        .sum()
}

/// Blocks/s and tx/s with all four validators, then after stopping one (first 6 s, which
/// include the K-block window in which the dead validator is still chosen at round 0, then
/// steady state). Returns the ratio one-down (first 6 s) / healthy.
async fn measure_one_down(net: &mut Net, label: &str) -> f64 {
    let (healthy, healthy_tx) = rate(net, Duration::from_secs(4)).await;
    println!("{label}: healthy {healthy:.1} blocks/s, {healthy_tx:.0} tx/s");
    let mut events = net.node(0).handle.events();
    net.stop(3).await;
    let killed_at = net.max_tip();
    let (down, down_tx) = rate(net, Duration::from_secs(6)).await;
    let mut timeouts_window = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, ConsensusEvent::RoundTimeout { .. }) {
            timeouts_window += 1;
        }
    }
    let (steady, steady_tx) = rate(net, Duration::from_secs(4)).await;
    let mut timeouts_steady = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, ConsensusEvent::RoundTimeout { .. }) {
            timeouts_steady += 1;
        }
    }
    println!(
        "{label}: one down, first 6 s: {down:.1} blocks/s, {down_tx:.0} tx/s, {timeouts_window} round timeouts"
    );
    println!(
        "{label}: one down, steady: {steady:.1} blocks/s, {steady_tx:.0} tx/s, {timeouts_steady} round timeouts"
    );
    println!(
        "{label}: one down / healthy = {:.2} (first 6 s), {:.2} (steady)",
        down / healthy,
        steady / healthy
    );
    assert!(
        net.max_tip() > killed_at + 10,
        "chain stalled with one validator down"
    );
    net.assert_same_chain(net.min_tip());
    down / healthy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_down_chain_continues() {
    serial(async {
        // A loaded mempool: blocks of 100 transactions back to back.
        let mut net = Net::new(4);
        net.max_block_txs = 100;
        net.start_all().await;
        let devs = devices(40, 2);
        let txs = load(&net, &devs, 1000);
        net.submit(&txs);
        wait_until_async("load flowing", Duration::from_secs(30), || {
            net.min_tip() >= 5
        })
        .await;
        measure_one_down(&mut net, "loaded").await;
        assert!(net.running().all(|n| n.mempool.len() > 0), "load ran out");
        net.stop_all().await;

        // Empty blocks back to back (no idle wait): consensus alone, no execution.
        let mut net = Net::new(4);
        net.idle_block_interval_ms = 0;
        net.start_all().await;
        wait_until_async("blocks flowing", Duration::from_secs(30), || {
            net.min_tip() >= 20
        })
        .await;
        measure_one_down(&mut net, "empty blocks").await;
        net.stop_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_validator_catches_up() {
    serial(async {
        let mut net = Net::new(4);
        net.idle_block_interval_ms = 20;
        net.start_all().await;
        wait_until_async("10 blocks", Duration::from_secs(60), || net.min_tip() >= 10).await;
        net.stop(2).await;
        let stopped_at = net.max_tip();
        wait_until_async("others advance 30 blocks", Duration::from_secs(60), || {
            net.min_tip() >= stopped_at + 30
        })
        .await;
        net.start(2).await;
        let target = net.max_tip();
        wait_until_async(
            "restarted validator catches up",
            Duration::from_secs(60),
            || net.tip(2) >= target,
        )
        .await;
        // And keeps following consensus afterwards.
        let later = net.max_tip() + 5;
        wait_until_async(
            "restarted validator follows",
            Duration::from_secs(60),
            || net.tip(2) >= later,
        )
        .await;
        net.assert_same_chain(net.min_tip());
        net.stop_all().await;
    })
    .await;
}

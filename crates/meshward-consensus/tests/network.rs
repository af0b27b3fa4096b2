//! Real Malachite over real libp2p on 127.0.0.1: four validators, each in this process with its
//! own data dir, redb store and mempool, created from one genesis.
//!
//! Every wait polls a condition with a generous deadline, and what a test asserts is behaviour
//! read from the stored blocks (heights, header times, certificate rounds), never a duration
//! measured by the test: rates belong to `meshward bench consensus`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{devices, serial, Net};
use meshward_consensus::config::DEFAULT_PROPOSER_HISTORY;
use meshward_consensus::{ConsensusEvent, Mempool};
use meshward_core::hash::Hash;
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use meshward_testkit::wait_until_async;
use tokio::sync::broadcast;

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

/// Heartbeats checked after the first blocks, in the idle-cadence test.
const HEARTBEATS: u64 = 6;

/// The cadence of an idle chain, read from the block times the proposers stamped into the
/// headers (not from when this test happened to look).
///
/// Catches: an idle chain that stops writing heartbeat blocks (the wait for more heights times
/// out), and the cadence rule removed or broken so that an idle chain writes blocks back to back
/// (tens of milliseconds apart instead of `idle_block_interval_ms`: the gap check fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_chain_writes_heartbeat_blocks_at_the_idle_interval() {
    serial(async {
        let mut net = Net::new(4);
        net.start_all().await;
        let idle_ms = net.idle_block_interval_ms;
        // Height 1 starts with the engine, before every validator is connected, and can take
        // longer than the idle interval; so the next one may follow at once. From height 2 on
        // the chain runs at its cadence.
        wait_until_async("the first two blocks", Duration::from_secs(60), || {
            net.min_tip() >= 2
        })
        .await;
        let from = net.min_tip();
        let to = from + HEARTBEATS;
        wait_until_async(
            &format!("{HEARTBEATS} heartbeat blocks after height {from}"),
            Duration::from_secs(60),
            || net.min_tip() >= to,
        )
        .await;
        net.assert_same_chain(to);
        let mut checked = 0;
        for h in from + 1..=to {
            let (prev, block) = (net.block(0, h - 1), net.block(0, h));
            assert!(
                block.block.txs.is_empty(),
                "block {h} of an idle chain has transactions"
            );
            let gap_ms = block.block.header.time_ms - prev.block.header.time_ms;
            println!(
                "idle chain: block {h} stamped {gap_ms} ms after block {}",
                h - 1
            );
            // A height starts `idle_ms` after the one before started; a block decided in round
            // 0 is stamped as its height starts, so the next one comes about `idle_ms` later.
            // A block decided in a later round was stamped after a propose timeout (500 ms),
            // which leaves less of the interval to the next one: such pairs are not checked.
            if prev.certificate.round > 0 {
                continue;
            }
            checked += 1;
            assert!(
                gap_ms >= idle_ms / 2,
                "idle blocks {} and {h} are {gap_ms} ms apart: the idle interval is {idle_ms} ms",
                h - 1
            );
        }
        assert!(
            checked >= HEARTBEATS / 2,
            "only {checked} of {HEARTBEATS} idle heights were decided in round 0"
        );
        net.stop_all().await;
    })
    .await;
}

/// The wall clock in milliseconds since the Unix epoch: what a proposer stamps into a header.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A transaction on an idle chain starts the next height at once rather than waiting for the
/// heartbeat: its block is stamped well before a heartbeat would be due (`idle_block_interval_ms`
/// after the block before it). Only block times from the headers are compared.
///
/// Catches: a cadence rule that holds the next height for the whole idle interval whatever the
/// mempool holds (the transaction's block would be the heartbeat, stamped about
/// `idle_block_interval_ms` after the block before it), and a transaction that is not committed
/// at all (the wait for it times out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_on_idle_chain_is_committed_without_waiting_for_the_heartbeat() {
    serial(async {
        let mut net = Net::new(4);
        net.start_all().await;
        let idle_ms = net.idle_block_interval_ms;
        wait_until_async("the first two blocks", Duration::from_secs(60), || {
            net.min_tip() >= 2
        })
        .await;
        // Submit just after a heartbeat block is committed, while the next height is held: the
        // next heartbeat is due `idle_ms` after it. The wall clock only picks that moment: if
        // this test gets to a block late (a busy machine), it waits for the next one instead of
        // submitting close to the heartbeat.
        let mut events = net.node(0).handle.events();
        let prev = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match events.recv().await {
                    Ok(ConsensusEvent::Committed {
                        height, time_ms, ..
                    }) if height >= 2 && wall_clock_ms() < time_ms + idle_ms / 4 => break height,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("consensus events ended: {e}"),
                }
            }
        })
        .await
        .expect("a block committed on time to submit after it, within 60 s");
        let dev = devices(1, 9);
        let txs = net.enroll_txs(&dev, 1);
        net.submit(&txs);
        let admin = net.admin.public();
        wait_until_async("the transaction committed", Duration::from_secs(30), || {
            net.running().all(|n| {
                n.store
                    .read()
                    .unwrap()
                    .state()
                    .account(&admin)
                    .map(|a| a.seq)
                    == Some(1)
            })
        })
        .await;
        let id = txs[0].id();
        let at = (prev + 1..=net.tip(0))
            .find(|h| net.block(0, *h).block.txs.iter().any(|t| t.id() == id))
            .expect("the committed transaction is in a block");
        assert_eq!(at, prev + 1, "the transaction waited for a later block");
        let gap_ms =
            net.block(0, at).block.header.time_ms - net.block(0, prev).block.header.time_ms;
        println!("idle chain: the transaction's block stamped {gap_ms} ms after the block before");
        assert!(
            gap_ms < idle_ms / 2,
            "the transaction's block {at} is stamped {gap_ms} ms after block {prev}: it waited \
             for the heartbeat (idle interval {idle_ms} ms)"
        );
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

/// Heights checked after proposer skipping has left the stopped validator out.
const STEADY_BLOCKS: u64 = 40;

/// Stops validator 3 and checks that the other three stay live and stop paying for it:
/// - they commit [`STEADY_BLOCKS`] more blocks past the skipping window, on one chain;
/// - in those blocks, round 0 is not lost to the dead validator. Once K blocks
///   ([`DEFAULT_PROPOSER_HISTORY`]) carry no last commit it signed, proposer skipping leaves it
///   out of round 0, so the heights are decided in round 0. Without skipping, round-robin would
///   still choose it at round 0 of every fourth height, and each of those would be decided only
///   in round 1 after a propose timeout (its certificate says so): a quarter of the blocks.
///   Fewer than an eighth may be decided in a later round, which leaves room for an occasional
///   timeout on a busy machine.
///
/// Returns the checked heights. Blocks per second are `meshward bench consensus`'s business
/// (it measures the one-down ratio); they are printed here only to inform.
async fn three_validators_stay_live_without_the_fourth(
    net: &mut Net,
    label: &str,
) -> std::ops::RangeInclusive<u64> {
    net.stop(3).await;
    let started = Instant::now();
    let stopped_at = net.max_tip();
    // Validator 3 precommitted at most for height `stopped_at + 1`, so the last block that can
    // carry its signature (in its `last_commit`) is `stopped_at + 2`; from K heights after
    // that, it is out of round 0.
    let from = stopped_at + DEFAULT_PROPOSER_HISTORY + 3;
    let to = from + STEADY_BLOCKS - 1;
    wait_until_async(
        &format!("{label}: the three others to commit heights {stopped_at}..={to}"),
        Duration::from_secs(120),
        || net.min_tip() >= to,
    )
    .await;
    println!(
        "{label}: {} blocks in {:.1} s with validator 3 down (informational)",
        to - stopped_at,
        started.elapsed().as_secs_f64()
    );
    net.assert_same_chain(net.min_tip());
    let rounds = |hs: std::ops::RangeInclusive<u64>| -> Vec<u64> {
        hs.filter(|h| net.block(0, *h).certificate.round > 0)
            .collect()
    };
    println!(
        "{label}: heights decided after round 0: {:?} in the skipping window, {:?} after it",
        rounds(stopped_at + 1..=from - 1),
        rounds(from..=to)
    );
    let later = rounds(from..=to);
    assert!(
        (later.len() as u64) < STEADY_BLOCKS / 8,
        "{label}: heights {later:?} of {from}..={to} were decided after round 0: the dead \
         validator is still chosen to propose"
    );
    from..=to
}

/// Catches: a chain that stalls with one of four validators down (the waits time out), forks
/// (`assert_same_chain`), loses transactions (the wait for every account's last transaction
/// times out), or keeps paying a propose timeout for the dead validator, as it would without
/// proposer skipping (the round check in [`three_validators_stay_live_without_the_fourth`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_down_chain_continues() {
    serial(async {
        // A loaded mempool: blocks of 100 transactions back to back, enough of them to last
        // past the checked heights.
        let mut net = Net::new(4);
        net.max_block_txs = 100;
        net.start_all().await;
        let devs = devices(40, 2);
        let per_device = 250;
        let txs = load(&net, &devs, per_device);
        net.submit(&txs);
        wait_until_async("load flowing", Duration::from_secs(30), || {
            net.min_tip() >= 5
        })
        .await;
        let checked = three_validators_stay_live_without_the_fourth(&mut net, "loaded").await;
        for h in checked {
            assert!(
                !net.block(0, h).block.txs.is_empty(),
                "load ran out at height {h}: the checked heights were not under load"
            );
        }
        let admin = net.admin.public();
        wait_until_async(
            "every transaction committed by the three",
            Duration::from_secs(120),
            || {
                net.running().all(|n| {
                    let s = n.store.read().unwrap();
                    let st = s.state();
                    st.account(&admin).map(|a| a.seq) == Some(devs.len() as u64)
                        && devs
                            .iter()
                            .all(|d| st.account(&d.id()).map(|a| a.seq) == Some(per_device))
                })
            },
        )
        .await;
        net.stop_all().await;

        // Empty blocks nearly back to back (a 1 ms heartbeat): consensus alone, no execution.
        let mut net = Net::new(4);
        net.idle_block_interval_ms = 1;
        net.start_all().await;
        wait_until_async("blocks flowing", Duration::from_secs(30), || {
            net.min_tip() >= 20
        })
        .await;
        three_validators_stay_live_without_the_fourth(&mut net, "empty blocks").await;
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

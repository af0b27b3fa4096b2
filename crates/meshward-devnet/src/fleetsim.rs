//! The simulated fleet of `meshward devnet --devices N`: N device identities (key files in the
//! devnet's `devices/` directory), enrolled by the devnet's admin, each a real SDK device with
//! its own libp2p node, that send encrypted, anchored messages to each other at a steady total
//! rate and receive, open and acknowledge them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::{enroll_body, GroupName, Tx};
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use meshward_sdk::device::Device;
use meshward_sdk::dirstate::StateDir;
use meshward_sdk::keyfile::{self, KeyKind};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::file::DevnetFile;

/// A simulated device, as listed in `devnet.json`.
#[derive(Serialize, Deserialize, Clone)]
pub struct DevnetDevice {
    /// Its device id (a libp2p peer id).
    pub id: String,
    /// Its key file; its SDK state lives in `<key>.d`.
    pub key: PathBuf,
}

/// What the simulated fleet has done so far.
#[derive(Default)]
pub struct FleetStats {
    /// Messages sealed, anchored and sent.
    pub sent: AtomicU64,
    /// Messages received and opened by their recipients.
    pub received: AtomicU64,
    /// Sends that failed.
    pub failed: AtomicU64,
}

/// Creates the key files (`<dir>/devices/device<i>.key`) that do not exist yet, and returns
/// every device.
pub fn ensure_keys(dir: &Path, n: usize) -> Result<Vec<DevnetDevice>> {
    let ddir = dir.join("devices");
    std::fs::create_dir_all(&ddir).with_context(|| format!("cannot create {}", ddir.display()))?;
    (0..n)
        .map(|i| {
            let key = ddir.join(format!("device{i}.key"));
            let kp = if key.exists() {
                keyfile::load(&key, KeyKind::Device)?
            } else {
                keyfile::generate(&key, KeyKind::Device)?
            };
            Ok(DevnetDevice {
                id: kp.id().peer_id(),
                key,
            })
        })
        .collect()
}

/// Each devnet node's mesh address with its peer id, as devices dial gateways.
pub fn gateway_addrs(file: &DevnetFile) -> Result<Vec<meshward_net::Multiaddr>> {
    file.nodes
        .iter()
        .map(|n| {
            format!("{}/p2p/{}", n.p2p, n.peer_id)
                .parse()
                .with_context(|| format!("{} has a bad mesh address", n.name))
        })
        .collect()
}

/// The gateways simulated device `i` uses: two, spread over the devnet's nodes, so any one
/// may fail.
pub fn gateways_of(gws: &[meshward_net::Multiaddr], i: usize) -> Vec<meshward_net::Multiaddr> {
    vec![gws[i % gws.len()].clone(), gws[(i + 1) % gws.len()].clone()]
}

/// Enrolls every device the ledger does not know yet, signed by the devnet's admin.
async fn enroll(file: &DevnetFile, devices: &[(PathBuf, Keypair)]) -> Result<()> {
    let admin_key = file
        .admin_keys
        .first()
        .context("the devnet file lists no admin key to enroll the devices with")?;
    let admin = keyfile::load(admin_key, KeyKind::Admin)?;
    let cfg = ClientConfig::new(Some(file.chain_id.clone()), gateway_addrs(file)?);
    let client = Client::start(DeviceIdentity::new(admin.clone()), cfg).await?;
    let group = GroupName::new("sim").expect("a valid literal");
    let mut last = None;
    let mut seq = client.next_seq(&admin.id()).await?;
    for (_, kp) in devices {
        if client.lookup(&kp.id()).await?.is_some() {
            continue;
        }
        let body = enroll_body(&file.chain_id, kp, vec![group.clone()], None);
        let tx = Tx::sign(&file.chain_id, admin.id(), &admin.sign, seq, body);
        last = Some(client.submit(&tx).await?);
        seq += 1;
    }
    if let Some(id) = last {
        client
            .wait_final(&id, Instant::now() + Duration::from_secs(120))
            .await?;
    }
    client.shutdown().await;
    Ok(())
}

/// Runs the fleet until `stop` is set: enrolls, starts every device, and sends `rate` messages
/// per second in total, each to a random other device.
pub fn run(
    file: DevnetFile,
    devices: Vec<DevnetDevice>,
    rate: f64,
    stop: Arc<AtomicBool>,
    stats: Arc<FleetStats>,
) -> Result<()> {
    if devices.len() < 2 {
        bail!("--devices must be at least 2 so the devices have someone to talk to");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the fleet's runtime")?;
    rt.block_on(async move {
        let keys: Vec<(PathBuf, Keypair)> = devices
            .iter()
            .map(|d| Ok((d.key.clone(), keyfile::load(&d.key, KeyKind::Device)?)))
            .collect::<Result<_>>()?;
        // Wait for the chain, then enroll.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match enroll(&file, &keys).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                    tracing::debug!(error = %e, "fleet enrollment not done yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context("enrolling the simulated devices")),
            }
        }
        let gws = gateway_addrs(&file)?;
        if gws.is_empty() {
            bail!("the devnet has no nodes for the devices to use as gateways");
        }
        let ids: Vec<PublicKey> = keys.iter().map(|(_, k)| k.id()).collect();
        let n = keys.len();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (path, kp)) in keys.into_iter().enumerate() {
            let cfg = ClientConfig::new(Some(file.chain_id.clone()), gateways_of(&gws, i));
            let mut sd = path.as_os_str().to_owned();
            sd.push(".d");
            let state = StateDir::open(PathBuf::from(sd))?;
            let dev = Arc::new(Device::start(DeviceIdentity::new(kp), cfg, state).await?);
            let (stop, stats, ids) = (stop.clone(), stats.clone(), ids.clone());
            tasks.spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                let agent_dev = dev.clone();
                let stop_a = stop.clone();
                let agent = tokio::spawn(async move {
                    let stopped = async {
                        while !stop_a.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    };
                    let _ = agent_dev
                        .run_agent(Duration::from_millis(1000), tx, stopped)
                        .await;
                });
                let st = stats.clone();
                let counter = tokio::spawn(async move {
                    while rx.recv().await.is_some() {
                        st.received.fetch_add(1, Ordering::Relaxed);
                    }
                });
                // Each device sends every n/rate seconds, starting at a random offset.
                // A rate of 0 sends back to back.
                let period = if rate > 0.0 {
                    Duration::from_secs_f64(n as f64 / rate)
                } else {
                    Duration::ZERO
                };
                if !period.is_zero() {
                    let offset = rand::thread_rng().gen_range(0.0..period.as_secs_f64());
                    tokio::time::sleep(Duration::from_secs_f64(offset)).await;
                }
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let next = Instant::now() + period;
                    let to = loop {
                        let j = rand::thread_rng().gen_range(0..ids.len());
                        if j != i {
                            break ids[j];
                        }
                    };
                    k += 1;
                    let msg = format!("reading {k} from device{i}");
                    match dev.send(&to, &[msg.as_bytes()], false, None).await {
                        Ok(_) => stats.sent.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::debug!(device = i, error = %e, "simulated send failed");
                            stats.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let _ = agent.await;
                counter.abort();
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}

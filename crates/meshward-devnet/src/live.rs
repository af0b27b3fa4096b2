//! The live devnet: starts (or resumes) every node, runs the simulated fleet if asked, prints a
//! summary line every second, and stops every child on Ctrl-C or SIGTERM.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_api::client::ApiClient;

use crate::file::{create, DevnetFile, DEVNET_FILE};
use crate::fleetsim;
use crate::process::{stop_children, NodeLauncher};

/// What `meshward devnet` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the devnet lives; resumed if it already holds one. `None`: a new temp dir, kept.
    pub dir: Option<PathBuf>,
    /// Validators of a new devnet.
    pub validators: usize,
    /// Node `i` uses ports `base_port + 10i` (API), `+1` (mesh) and `+2` (consensus).
    pub base_port: u16,
    /// Simulated devices exchanging messages (0: none).
    pub devices: usize,
    /// Their messages per second, in total (0: as fast as they can).
    pub device_rate: f64,
    /// The `meshward` binary the nodes run as; `None`: this executable
    /// ([`NodeLauncher::current_exe`]).
    pub exe: Option<PathBuf>,
}

impl Default for Options {
    /// The CLI's defaults: a temp dir, 4 validators from port 27000, no devices.
    fn default() -> Options {
        Options {
            dir: None,
            validators: 4,
            base_port: 27000,
            devices: 0,
            device_rate: 10.0,
            exe: None,
        }
    }
}

/// The series the summary line reads its transaction rate from.
const FINALIZED_TXS_METRIC: &str = "meshward_chain_finalized_txs_total";
/// How long one poll of a node may take: the summary comes every second.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

struct Sample {
    at: Instant,
    height: u64,
    txs: f64,
}

/// Runs a devnet until Ctrl-C or SIGTERM (or until a node exits): creates or resumes it in
/// `opts.dir`, starts every node, writes `devnet.json` with their process ids, prints a summary
/// line every second (one JSON object a line with `json`), then stops every node and clears the
/// process ids.
pub fn run(opts: Options, json: bool) -> Result<()> {
    let dir = match opts.dir {
        Some(d) => d,
        None => {
            let d = tempfile::Builder::new()
                .prefix("meshward-devnet-")
                .tempdir()
                .context("cannot create a temp dir")?
                .keep();
            eprintln!("devnet directory: {} (not deleted on exit)", d.display());
            d
        }
    };
    let mut file = if dir.join(DEVNET_FILE).exists() {
        let f = DevnetFile::load(&dir)?;
        eprintln!("resuming the devnet in {}", dir.display());
        f
    } else {
        if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} is not empty and holds no {DEVNET_FILE}; use an empty or new directory",
                dir.display()
            );
        }
        create(&dir, opts.validators, opts.base_port)?
    };

    let launcher = match opts.exe {
        Some(exe) => NodeLauncher::new(exe),
        None => NodeLauncher::current_exe()?,
    };
    // One client per node for the whole run: ureq keeps its connection alive between polls.
    let clients = file
        .nodes
        .iter()
        .map(|n| {
            ApiClient::new(&n.api)
                .map(|c| c.with_timeout(POLL_TIMEOUT))
                .with_context(|| format!("{} in {DEVNET_FILE}", n.name))
        })
        .collect::<Result<Vec<_>>>()?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }

    let mut children = Vec::new();
    for i in 0..file.nodes.len() {
        match launcher.spawn(&file, i) {
            Ok(c) => {
                file.nodes[i].pid = Some(c.id());
                children.push(c);
            }
            Err(e) => {
                stop_children(&mut children, Duration::from_secs(5));
                return Err(e);
            }
        }
    }
    let stats = Arc::new(fleetsim::FleetStats::default());
    let mut fleet = None;
    if opts.devices > 0 {
        file.devices = fleetsim::ensure_keys(&dir, opts.devices)?;
        let (f, d, r, st, sx) = (
            file.clone(),
            file.devices.clone(),
            opts.device_rate,
            stop.clone(),
            stats.clone(),
        );
        fleet = Some(std::thread::spawn(move || fleetsim::run(f, d, r, st, sx)));
        eprintln!(
            "{} simulated devices (keys in {}), {} messages/s in total",
            opts.devices,
            dir.join("devices").display(),
            opts.device_rate
        );
    }
    file.save(&dir)?;
    eprintln!(
        "devnet {}: {} validators; APIs {}; logs in <node dir>/node.log; Ctrl-C stops it",
        file.chain_id,
        file.nodes.len(),
        file.nodes
            .iter()
            .map(|n| n.api.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let tty = std::io::stdout().is_terminal() && !json;
    let mut first: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                result = Err(anyhow::anyhow!(
                    "{} exited with {status}; see {}",
                    file.nodes[i].name,
                    file.nodes[i].dir.join("node.log").display()
                ));
            }
        }
        if result.is_err() {
            break;
        }
        let statuses: Vec<_> = clients.iter().filter_map(|c| c.status().ok()).collect();
        let up = statuses.len();
        let height = statuses.iter().map(|s| s.height).max().unwrap_or(0);
        let peers = statuses.iter().map(|s| s.peers).min().unwrap_or(0);
        let txs = clients
            .iter()
            .find_map(|c| c.metric(FINALIZED_TXS_METRIC).ok().flatten())
            .unwrap_or(0.0);
        let now = Sample {
            at: Instant::now(),
            height,
            txs,
        };
        let (bps, tps) = match &last {
            Some(p) if now.at > p.at => {
                let dt = now.at.duration_since(p.at).as_secs_f64();
                (
                    (now.height.saturating_sub(p.height)) as f64 / dt,
                    (now.txs - p.txs).max(0.0) / dt,
                )
            }
            _ => (0.0, 0.0),
        };
        let (sent, received, failed) = (
            stats.sent.load(Ordering::Relaxed),
            stats.received.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
        );
        if fleet.as_ref().is_some_and(|h| h.is_finished()) {
            let outcome = fleet.take().map(|h| h.join());
            result = match outcome {
                Some(Ok(Err(e))) => Err(e.context("the simulated fleet stopped")),
                Some(Err(_)) => Err(anyhow::anyhow!("the simulated fleet panicked")),
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        if json {
            println!(
                "{}",
                serde_json::json!({"height": height, "blocks_per_s": bps, "txs_per_s": tps, "peers": peers, "nodes_up": up,
                    "devices": file.devices.len(), "messages_sent": sent, "messages_received": received, "send_failures": failed})
            );
        } else {
            let fleet_part = if file.devices.is_empty() {
                String::new()
            } else {
                format!(
                    "  devices {}  msgs sent {sent} received {received} failed {failed}",
                    file.devices.len()
                )
            };
            let line = format!(
                "height {height:>7}  blocks/s {bps:>6.1}  tx/s {tps:>8.1}  peers {peers}  nodes up {up}/{}{fleet_part}",
                file.nodes.len()
            );
            if tty {
                print!("\r{line}  ");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
        if first.is_none() {
            first = Some(Sample {
                at: now.at,
                height: now.height,
                txs: now.txs,
            });
        }
        last = Some(now);
        // Sleep in small steps so Ctrl-C is honoured quickly.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if tty {
        println!();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = fleet {
        match h.join() {
            Ok(Err(e)) => eprintln!("simulated fleet: {e:#}"),
            Err(_) => eprintln!("simulated fleet: panicked"),
            Ok(Ok(())) => {}
        }
    }
    eprintln!("stopping {} nodes", children.len());
    stop_children(&mut children, Duration::from_secs(10));
    for n in &mut file.nodes {
        n.pid = None;
    }
    file.save(&dir)?;
    if let (Some(f), Some(l)) = (first, last) {
        eprintln!(
            "devnet stopped at height {} ({} blocks this run); resume with meshward devnet --dir {}",
            l.height,
            l.height.saturating_sub(f.height),
            dir.display()
        );
    }
    result
}

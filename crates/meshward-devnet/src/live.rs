//! The live devnet: starts (or resumes) every node, runs the simulated fleet if asked, prints a
//! summary line every second, and stops every node on Ctrl-C or SIGTERM.
//!
//! It supervises rather than owns: a node that exits (killed, crashed, stopped with `meshward
//! devnet kill|stop`) is reported down, with its exit status and log, while the others go on;
//! `devnet.json` always holds each node's current process id (`null` while down). A node started
//! again, by `meshward devnet start N` or by hand with `meshward node run` from its data dir and
//! ports, is seen up again (through `devnet.json` or its API, which reports its pid). With
//! `restart_on_exit` the devnet restarts an exited node itself, after 1 s, then 2, 4, … up to
//! 30 s while it keeps exiting.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_api::client::ApiClient;

use crate::file::{create, DevnetFile, DEVNET_FILE};
use crate::fleetsim;
use crate::process::{alive, send_signal, NodeLauncher};

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
    /// Restart a node that exits, with backoff.
    pub restart_on_exit: bool,
    /// Nodes that misbehave, and how (`--byzantine N:MODE`; the node binary must be built with
    /// the `byzantine` feature). Recorded in `devnet.json`, so a restart keeps them.
    pub byzantine: Vec<(usize, String)>,
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
            restart_on_exit: false,
            byzantine: Vec::new(),
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

/// First and longest wait before restarting a node that exited.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A node up this long has its backoff reset.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long a clean stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the devnet knows of one node.
enum NodeState {
    /// Running as this devnet's child.
    Child { child: Child, since: Instant },
    /// Running, but not this devnet's child (`devnet start`, or by hand): known by its pid.
    External { pid: u32 },
    /// Down.
    Down {
        why: String,
        restarts: u32,
        retry_at: Option<Instant>,
    },
}

impl NodeState {
    fn pid(&self) -> Option<u32> {
        match self {
            NodeState::Child { child, .. } => Some(child.id()),
            NodeState::External { pid } => Some(*pid),
            NodeState::Down { .. } => None,
        }
    }
}

/// How long Ctrl-C waits for the simulated devices to finish their sends before the nodes are
/// stopped regardless.
const FLEET_STOP_GRACE: Duration = Duration::from_secs(10);

/// How a process ended, in words: "exit status 1", "signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => {
            let name = match s {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("signal {s}{name}")
        }
        _ => status.to_string(),
    }
}

fn backoff(restarts: u32) -> Duration {
    RESTART_FIRST
        .saturating_mul(1u32.checked_shl(restarts.min(16)).unwrap_or(u32::MAX))
        .min(RESTART_MAX)
}

/// Runs a devnet until Ctrl-C or SIGTERM: creates or resumes it in `opts.dir`, starts every
/// node, supervises them (see the module doc), prints a summary line every second (one JSON
/// object a line with `json`), then stops every node and clears the process ids.
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
    if !opts.byzantine.is_empty() {
        for (i, mode) in &opts.byzantine {
            let n = file
                .nodes
                .get_mut(*i)
                .with_context(|| format!("--byzantine {i}:{mode}: the devnet has no node {i}"))?;
            eprintln!("{} is Byzantine: {mode}", n.name);
            n.byzantine = Some(mode.clone());
        }
        file.save(&dir)?;
    }
    if let Some(n) = file.nodes.first() {
        eprintln!("dashboard: {}/", n.api);
    }

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

    // A node still running from before (a devnet that was killed) is taken over, not doubled.
    let mut nodes: Vec<NodeState> = Vec::new();
    for i in 0..file.nodes.len() {
        let running = file.nodes[i].pid.filter(|p| alive(*p));
        let state = match running {
            Some(pid) => NodeState::External { pid },
            None => match launcher.spawn(&file, i) {
                Ok(child) => NodeState::Child {
                    child,
                    since: Instant::now(),
                },
                Err(e) => {
                    stop_all(&mut nodes);
                    return Err(e);
                }
            },
        };
        nodes.push(state);
    }
    for (n, s) in file.nodes.iter_mut().zip(&nodes) {
        n.pid = s.pid();
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
        "devnet {}: {} validators; APIs {}; MQTT {}; logs in <node dir>/node.log; \
         meshward devnet kill|stop|start N --dir {} controls a node; Ctrl-C stops them all",
        file.chain_id,
        file.nodes.len(),
        file.nodes
            .iter()
            .map(|n| n.api.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        file.nodes
            .iter()
            .filter_map(|n| n.mqtt.as_deref())
            .collect::<Vec<_>>()
            .join(" "),
        dir.display()
    );

    let tty = std::io::stdout().is_terminal() && !json;
    let mut first: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        let statuses: Vec<Option<meshward_api::types::Status>> =
            clients.iter().map(|c| c.status().ok()).collect();
        let recorded = DevnetFile::load(&dir).map(|f| f.nodes).unwrap_or_default();
        for (i, state) in nodes.iter_mut().enumerate() {
            let node = &file.nodes[i];
            let next = match state {
                NodeState::Child { child, since } => match child.try_wait() {
                    Ok(Some(status)) => {
                        let why = describe_exit(status);
                        report(
                            tty,
                            &format!(
                                "{} exited: {why}; log {}",
                                node.name,
                                node.log_path().display()
                            ),
                        );
                        let restarts = if since.elapsed() > RESTART_RESET_AFTER {
                            0
                        } else {
                            1
                        };
                        Some(NodeState::Down {
                            why,
                            restarts,
                            retry_at: opts
                                .restart_on_exit
                                .then(|| Instant::now() + backoff(restarts.saturating_sub(1))),
                        })
                    }
                    _ => None,
                },
                NodeState::External { pid } => (!alive(*pid)).then(|| {
                    let why = "exited (not started by this devnet: status unknown)".to_string();
                    report(
                        tty,
                        &format!("{} {why}; log {}", node.name, node.log_path().display()),
                    );
                    NodeState::Down {
                        why,
                        restarts: 0,
                        retry_at: opts.restart_on_exit.then(|| Instant::now() + RESTART_FIRST),
                    }
                }),
                NodeState::Down {
                    restarts, retry_at, ..
                } => {
                    // Started again by `devnet start` (its pid in devnet.json), or by hand (its
                    // API answers with its pid)?
                    let by_file = recorded.get(i).and_then(|n| n.pid).filter(|p| alive(*p));
                    let by_api = statuses[i]
                        .as_ref()
                        .and_then(|s| s.pid)
                        .filter(|p| alive(*p));
                    if let Some(pid) = by_file.or(by_api) {
                        report(tty, &format!("{} is up again (pid {pid})", node.name));
                        Some(NodeState::External { pid })
                    } else if retry_at.is_some_and(|t| Instant::now() >= t) {
                        match launcher.spawn(&file, i) {
                            Ok(child) => {
                                report(
                                    tty,
                                    &format!(
                                        "{} restarted (pid {}, restart {})",
                                        node.name,
                                        child.id(),
                                        *restarts + 1
                                    ),
                                );
                                Some(NodeState::Child {
                                    child,
                                    since: Instant::now(),
                                })
                            }
                            Err(e) => {
                                let r = *restarts + 1;
                                Some(NodeState::Down {
                                    why: format!("cannot restart: {e:#}"),
                                    restarts: r,
                                    retry_at: Some(Instant::now() + backoff(r)),
                                })
                            }
                        }
                    } else {
                        None
                    }
                }
            };
            if let Some(n) = next {
                *state = n;
            }
        }
        let pids: Vec<Option<u32>> = nodes.iter().map(NodeState::pid).collect();
        if file.nodes.iter().map(|n| n.pid).ne(pids.iter().copied()) {
            for (n, p) in file.nodes.iter_mut().zip(&pids) {
                n.pid = *p;
            }
            DevnetFile::update(&dir, |f| {
                for (n, p) in f.nodes.iter_mut().zip(&pids) {
                    n.pid = *p;
                }
            })?;
        }

        let live: Vec<&meshward_api::types::Status> = statuses.iter().flatten().collect();
        let up = nodes.iter().filter(|s| s.pid().is_some()).count();
        let height = live.iter().map(|s| s.height).max().unwrap_or(0);
        let peers = live.iter().map(|s| s.peers).min().unwrap_or(0);
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
        let down: Vec<(String, String, PathBuf)> = nodes
            .iter()
            .zip(&file.nodes)
            .filter_map(|(s, n)| match s {
                NodeState::Down { why, .. } => Some((n.name.clone(), why.clone(), n.log_path())),
                _ => None,
            })
            .collect();
        if json {
            println!(
                "{}",
                serde_json::json!({"height": height, "blocks_per_s": bps, "txs_per_s": tps, "peers": peers,
                    "nodes_up": up, "nodes": file.nodes.len(),
                    "nodes_down": down.iter().map(|(n, w, l)| serde_json::json!({"name": n, "status": w, "log": l})).collect::<Vec<_>>(),
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
            let down_part = if down.is_empty() {
                String::new()
            } else {
                format!(
                    "  down: {}",
                    down.iter()
                        .map(|(n, w, l)| format!("{n} ({w}; log {})", l.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let line = format!(
                "height {height:>7}  blocks/s {bps:>6.1}  tx/s {tps:>8.1}  peers {peers}  nodes up {up}/{}{fleet_part}{down_part}",
                file.nodes.len()
            );
            if tty {
                print!("\r{line}\x1b[K");
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
        // The devices finish their sends first, but a fleet that does not stop in time never
        // keeps the nodes running: they are stopped anyway, and the fleet ends with the process.
        let until = Instant::now() + FLEET_STOP_GRACE;
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if h.is_finished() {
            match h.join() {
                Ok(Err(e)) => eprintln!("simulated fleet: {e:#}"),
                Err(_) => eprintln!("simulated fleet: panicked"),
                Ok(Ok(())) => {}
            }
        } else {
            eprintln!(
                "simulated fleet: still busy after {} s; stopping the nodes anyway",
                FLEET_STOP_GRACE.as_secs()
            );
        }
    }
    eprintln!(
        "stopping {} nodes",
        nodes.iter().filter(|s| s.pid().is_some()).count()
    );
    stop_all(&mut nodes);
    DevnetFile::update(&dir, |f| {
        for n in &mut f.nodes {
            n.pid = None;
        }
    })?;
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

/// A line about a node, on its own line even while the live line is drawn in place.
fn report(tty: bool, msg: &str) {
    if tty {
        eprintln!("\r\x1b[K{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// SIGTERM to every running node, up to [`STOP_GRACE`] for them to exit, then SIGKILL.
fn stop_all(nodes: &mut [NodeState]) {
    for s in nodes.iter() {
        if let Some(pid) = s.pid() {
            send_signal(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for s in nodes.iter_mut() {
        loop {
            let gone = match s {
                NodeState::Child { child, .. } => matches!(child.try_wait(), Ok(Some(_))),
                NodeState::External { pid } => !alive(*pid),
                NodeState::Down { .. } => true,
            };
            if gone {
                break;
            }
            if Instant::now() >= deadline {
                if let Some(pid) = s.pid() {
                    send_signal(pid, rustix::process::Signal::KILL);
                }
                if let NodeState::Child { child, .. } = s {
                    let _ = child.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(10), RESTART_MAX);
        assert_eq!(backoff(u32::MAX), RESTART_MAX);
    }

    #[test]
    fn exits_are_described_in_words() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
    }
}

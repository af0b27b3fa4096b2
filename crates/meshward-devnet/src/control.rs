//! `meshward devnet kill|stop|start N --dir D`: control one node of a devnet, running or not.
//! The running devnet sees the change through `devnet.json` (see [`crate::run`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::file::DevnetFile;
use crate::process::{alive, send_signal, NodeLauncher};

/// How long `stop` waits for a clean exit before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

fn running_pid(dir: &Path, i: usize) -> Result<(String, u32)> {
    let f = DevnetFile::load(dir)?;
    let n = f.nodes.get(i).with_context(|| {
        format!(
            "the devnet in {} has nodes 0 to {}, not {i}",
            dir.display(),
            f.nodes.len().saturating_sub(1)
        )
    })?;
    match n.pid.filter(|p| alive(*p)) {
        Some(pid) => Ok((n.name.clone(), pid)),
        None => bail!(
            "{} is not running (start it with meshward devnet start {i} --dir {})",
            n.name,
            dir.display()
        ),
    }
}

fn clear_pid(dir: &Path, i: usize, pid: u32) -> Result<()> {
    DevnetFile::update(dir, |f| {
        if let Some(n) = f.nodes.get_mut(i) {
            if n.pid == Some(pid) {
                n.pid = None;
            }
        }
    })
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// SIGKILLs node `i` (a crash, no cleanup). Returns its name and former pid.
pub fn kill(dir: &Path, i: usize) -> Result<(String, u32)> {
    let (name, pid) = running_pid(dir, i)?;
    send_signal(pid, rustix::process::Signal::KILL);
    if !wait_gone(pid, Duration::from_secs(5)) {
        bail!("{name} (pid {pid}) did not die on SIGKILL within 5 s");
    }
    clear_pid(dir, i, pid)?;
    Ok((name, pid))
}

/// Stops node `i` cleanly (SIGTERM; SIGKILL after [`STOP_TIMEOUT`]). Returns its name, former
/// pid, and whether it stopped cleanly.
pub fn stop(dir: &Path, i: usize) -> Result<(String, u32, bool)> {
    let (name, pid) = running_pid(dir, i)?;
    send_signal(pid, rustix::process::Signal::TERM);
    let clean = wait_gone(pid, STOP_TIMEOUT);
    if !clean {
        send_signal(pid, rustix::process::Signal::KILL);
        wait_gone(pid, Duration::from_secs(5));
    }
    clear_pid(dir, i, pid)?;
    Ok((name, pid, clean))
}

/// Starts node `i` again with its data dir and ports, detached from this process (it goes on
/// after this command exits). Returns its name and pid.
pub fn start(dir: &Path, i: usize, launcher: &NodeLauncher) -> Result<(String, u32)> {
    // The check and the record happen under the devnet file's lock, so two starts cannot both
    // launch the node.
    DevnetFile::update(dir, |f| -> Result<(String, u32)> {
        let n = f.nodes.get(i).with_context(|| {
            format!(
                "the devnet has nodes 0 to {}, not {i}",
                f.nodes.len().saturating_sub(1)
            )
        })?;
        if let Some(pid) = n.pid.filter(|p| alive(*p)) {
            bail!("{} is already running (pid {pid})", n.name);
        }
        let name = n.name.clone();
        let child = launcher.spawn(f, i)?;
        let pid = child.id();
        // Not waited for: the node outlives this command (init reaps it).
        drop(child);
        f.nodes[i].pid = Some(pid);
        Ok((name, pid))
    })?
}

//! Node processes: each validator runs as its own `meshward node run` process, logging to
//! `<node dir>/node.log` (rotated at [`NODE_LOG_MAX_BYTES`], so a devnet's logs stay bounded;
//! anything the process prints itself, such as a panic, goes to `<node dir>/node.out`), in a
//! process group of its own (so a Ctrl-C meant for the devnet reaches only the devnet, which
//! then stops its nodes), and is stopped with SIGTERM (a clean shutdown), then SIGKILL.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::file::DevnetFile;

/// Size at which a devnet node's log is rotated: each node keeps at most about twice this.
pub const NODE_LOG_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Starts devnet nodes as `<exe> node run …` processes.
///
/// `exe` is the `meshward` binary. The CLI is that binary, so the default
/// ([`NodeLauncher::current_exe`]) is the running executable; a test or another tool names the
/// binary with [`NodeLauncher::new`].
#[derive(Clone, Debug)]
pub struct NodeLauncher {
    exe: PathBuf,
}

impl NodeLauncher {
    /// Nodes run as `exe node run …`.
    pub fn new(exe: impl Into<PathBuf>) -> NodeLauncher {
        NodeLauncher { exe: exe.into() }
    }

    /// Nodes run as the running executable (`std::env::current_exe()`), which must be
    /// `meshward`.
    pub fn current_exe() -> Result<NodeLauncher> {
        let exe = std::env::current_exe().context("cannot find the meshward binary")?;
        Ok(NodeLauncher { exe })
    }

    /// The binary nodes run as.
    pub fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    /// Starts node `i` of `f` with every other node as a bootstrap peer (see the module doc for
    /// where its output goes).
    pub fn spawn(&self, f: &DevnetFile, i: usize) -> Result<Child> {
        use std::os::unix::process::CommandExt;
        let n = f
            .nodes
            .get(i)
            .with_context(|| format!("the devnet has {} nodes, not a node {i}", f.nodes.len()))?;
        let out_path = n.dir.join("node.out");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .with_context(|| format!("cannot open {}", out_path.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--log-file")
            .arg(n.log_path())
            .arg("--log-max-bytes")
            .arg(NODE_LOG_MAX_BYTES.to_string())
            .arg("node")
            .arg("run")
            .arg("--dir")
            .arg(&n.dir)
            .arg("--genesis")
            .arg(&f.genesis);
        for (j, other) in f.nodes.iter().enumerate() {
            if j != i {
                cmd.arg("--bootstrap")
                    .arg(format!("{}/p2p/{}", other.p2p, other.peer_id));
            }
        }
        if let Some(mode) = &n.byzantine {
            cmd.arg("--byzantine").arg(mode);
        }
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", n.name))
    }
}

/// Starts node `i` of `f` as the running executable: [`NodeLauncher::spawn`] of
/// [`NodeLauncher::current_exe`].
pub fn spawn_node(f: &DevnetFile, i: usize) -> Result<Child> {
    NodeLauncher::current_exe()?.spawn(f, i)
}

/// Sends SIGTERM, waits up to `grace` for every child, then SIGKILLs what is left.
pub fn stop_children(children: &mut [Child], grace: Duration) {
    for c in children.iter() {
        send_signal(c.id(), rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}

/// Whether process `pid` exists and is not a zombie (exited, not yet reaped).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `sig` to a child process. std only offers SIGKILL; a node needs SIGTERM to shut down
/// cleanly. `pid` must be a child of this process that has not been reaped yet.
pub fn send_signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // A child that already exited: nothing to signal.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher runs the binary it was given, with `node run --dir … --genesis …` and a
    /// bootstrap address for each other node; stopping it reaps it.
    #[test]
    fn a_launcher_runs_the_binary_it_names() {
        let t = tempfile::tempdir().unwrap();
        let f = crate::file::create(t.path(), 2, 27100).unwrap();
        // A stand-in for meshward: prints its arguments (to node.out), then waits for SIGTERM.
        let script = t.path().join("fake-meshward");
        fs::write(&script, "#!/bin/sh\necho \"$@\"\nexec sleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = NodeLauncher::new(&script);
        assert_eq!(launcher.exe(), script.as_path());
        let mut children = vec![launcher.spawn(&f, 0).unwrap()];
        let log = f.nodes[0].dir.join("node.out");
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if !text.is_empty() || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Logs go to the node's rotated log file; then the command.
        assert!(
            line.starts_with(&format!(
                "--log-file {} --log-max-bytes {NODE_LOG_MAX_BYTES} node run --dir ",
                f.nodes[0].log_path().display()
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "--bootstrap {}/p2p/{}",
                f.nodes[1].p2p, f.nodes[1].peer_id
            )),
            "{line}"
        );
        stop_children(&mut children, Duration::from_secs(5));
        assert!(children[0].try_wait().unwrap().is_some());
        assert!(launcher.spawn(&f, 2).is_err());
    }
}

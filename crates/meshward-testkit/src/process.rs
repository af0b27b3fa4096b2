//! Child processes: signals, liveness, and what a test needs from the host (root, tools).

use std::process::{Command, Stdio};

use rustix::process::{Pid, Signal};

/// Sends signal `sig` (e.g. `libc::SIGTERM`) to process `pid`, a child this test spawned and
/// has not reaped yet. Returns whether it was sent (false: no such process, or not ours, or a
/// pid or signal number kill(2) cannot take here: pid 0, which would name a process group, or a
/// real-time signal). Signal 0 only checks that the process exists and may be signalled.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Some(pid) = libc::pid_t::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    if sig == 0 {
        return rustix::process::test_kill_process(pid).is_ok();
    }
    let Some(sig) = Signal::from_named_raw(sig) else {
        return false;
    };
    rustix::process::kill_process(pid, sig).is_ok()
}

/// SIGTERM: asks a child to shut down cleanly. See [`signal`].
pub fn term(pid: u32) -> bool {
    signal(pid, libc::SIGTERM)
}

/// SIGINT: what Ctrl-C sends. See [`signal`].
pub fn int(pid: u32) -> bool {
    signal(pid, libc::SIGINT)
}

/// SIGKILL: stops a child at once, without cleanup (a crash). See [`signal`].
pub fn kill(pid: u32) -> bool {
    signal(pid, libc::SIGKILL)
}

/// Whether a process with this pid exists and still runs (a zombie, exited but not reaped, does
/// not count).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 is the state; Z is a zombie. (Field 2, the name in parentheses, has no spaces for
    // the processes tests spawn.)
    !stat.is_empty() && stat.split_whitespace().nth(2) != Some("Z")
}

/// Whether this process runs as root (network namespaces and iptables need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the command `name` is on the `PATH` (as `command -v` sees it).
pub fn have_tool(name: &str) -> bool {
    // The name is passed as a positional argument, never spliced into the script.
    Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_every_system_has_and_not_a_made_up_one() {
        assert!(have_tool("sh"));
        assert!(!have_tool("meshward-no-such-tool"));
        assert!(!have_tool("sh; true"), "the name is not run as a script");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id()));
    }

    #[test]
    fn signal_zero_checks_a_process_and_pid_zero_is_refused() {
        assert!(
            signal(std::process::id(), 0),
            "signal 0 only checks the process exists"
        );
        assert!(
            !signal(0, libc::SIGTERM),
            "pid 0 would name our process group"
        );
    }

    #[test]
    fn a_killed_child_is_not_alive_once_reaped() {
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        assert!(alive(child.id()));
        assert!(kill(child.id()));
        child.wait().unwrap();
        assert!(!alive(child.id()));
    }
}

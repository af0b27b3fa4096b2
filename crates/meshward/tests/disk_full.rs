//! A full disk under a running validator: node3's data dir lives on a small tmpfs, which the
//! test fills while devices keep anchoring through the four nodes.
//!
//! Asserted: node3 says so once, clearly (an ERROR line naming the failed write), counts it in
//! `meshward_store_write_errors_total`, and stays up serving its API (no exit, no crash loop);
//! the other three go on finalising; once space is freed and node3 restarted, it catches up,
//! its store passes `meshward store verify`, the four agree on every height, and every
//! transaction the load saw final is final on node3.
//!
//! Mounting a tmpfs needs root, so the test is `#[ignore]`d: `cargo test -p meshward --test
//! disk_full -- --include-ignored` runs it (CI does, as root).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::load::{assert_same_hashes, enroll_devices, max_height, Load};
use common::{meshward, Cluster};
use meshward_testkit::{have_tool, http, is_root, never, wait_for};

const MIN: Duration = Duration::from_secs(60);
const NODES: usize = 4;
const FULL: usize = 3;
const TMPFS_MIB: u64 = 64;

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MIB}m"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Fills the filesystem holding `dir` with a file until a write fails; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last bytes, a page at a time.
    while f.write_all(&chunk[..4096]).is_ok() {}
    let _ = f.sync_all();
    p
}

fn metric(c: &Cluster, i: usize, series: &str) -> Option<f64> {
    let r = http(c.nodes[i].api_port, "GET", "/metrics", &[], b"")?;
    (r.status == 200).then_some(())?;
    let text = String::from_utf8(r.body).ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
#[ignore = "needs root (mounts a tmpfs): run with --include-ignored"]
fn a_full_disk_stops_one_validator_cleanly_and_it_recovers_after_a_restart() {
    assert!(is_root(), "this test mounts a tmpfs: run it as root");
    assert!(have_tool("mount") && have_tool("umount"), "needs mount");
    let mut c = Cluster::new(NODES, 1000);

    // node3's data dir moves onto a tmpfs; its log stays outside (a symlink).
    let original = c.nodes[FULL].dir.clone();
    let small = c.root.path().join("small");
    let tmpfs = Tmpfs::mount(&small);
    let dir = small.join("node3");
    copy_dir(&original, &dir);
    let log = c.root.path().join("node3.log");
    std::os::unix::fs::symlink(&log, dir.join("node.log")).unwrap();
    c.nodes[FULL].dir = dir.clone();

    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let devices = enroll_devices(&c, 12);
    let load = Load::start(&c, devices);
    load.wait_more_finals(24, MIN);

    let filler = fill(&small);
    eprintln!("filled {} MiB tmpfs", TMPFS_MIB);

    let errors = wait_for("node3 to count a failed store write", MIN, || {
        metric(
            &c,
            FULL,
            "meshward_store_write_errors_total{file=\"chain\"}",
        )
        .filter(|&v| v > 0.0)
    });
    eprintln!("node3: {errors} failed chain writes");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot write a decided block"))
        .collect();
    assert!(!lines.is_empty(), "no clear error in node3's log");
    eprintln!("node3 said: {}", lines[0]);
    assert!(
        lines[0].contains("No space left on device"),
        "the error does not say the disk is full: {}",
        lines[0]
    );

    // Stays up and answers, while the others go on; it retries, but does not spin.
    let before = load.finals().len();
    let chain_errors = |c: &Cluster| {
        metric(c, FULL, "meshward_store_write_errors_total{file=\"chain\"}").unwrap_or(0.0)
    };
    let errors_before = chain_errors(&c);
    let pid = c.nodes[FULL].child.as_ref().unwrap().id();
    never(
        "node3 to exit on a full disk",
        Duration::from_secs(10),
        || !meshward_testkit::alive(pid),
    );
    assert!(
        c.status(FULL).is_some(),
        "node3's API answers on a full disk"
    );
    let retries = chain_errors(&c) - errors_before;
    eprintln!("node3: {retries} failed chain writes in 10 s");
    assert!(
        retries <= 20.0,
        "node3 retried a write {retries} times in 10 s: it spins on a full disk"
    );
    load.wait_more_finals(24, MIN);
    eprintln!(
        "the others finalised {} transactions meanwhile",
        load.finals().len() - before
    );
    let repeats = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot write a decided block"))
        .count();
    assert_eq!(
        repeats, 1,
        "a full disk is said once at ERROR, not per height"
    );
    let full_log = std::fs::read_to_string(&log).unwrap();
    let since: Vec<&str> = full_log
        .lines()
        .skip_while(|l| !l.contains("cannot write a decided block"))
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    for l in since.iter().take(10) {
        eprintln!("node3 log: {l}");
    }
    assert!(
        since.len() <= 10,
        "{} WARN/ERROR lines on a full disk in 10 s: the log floods",
        since.len()
    );

    // Space again, a restart: node3 catches up.
    std::fs::remove_file(filler).unwrap();
    assert!(c.stop(FULL).success(), "node3 stops cleanly on SIGTERM");
    c.start(FULL);
    let target = max_height(&c, &[0, 1, 2]);
    c.wait_height(&[FULL], target, MIN);
    load.wait_more_finals(12, MIN);
    let finals = load.finals();
    drop(load);

    let upto = (0..NODES).filter_map(|i| c.height(i)).min().unwrap();
    assert_same_hashes(&c, &[0, 1, 2, 3], upto);
    for (hash, (height, index)) in &finals {
        let v = c.tx_status(FULL, hash).unwrap();
        assert_eq!(v["status"], "final", "{hash} on node3: {v}");
        assert_eq!(
            (v["height"].as_u64(), v["index"].as_u64()),
            (Some(*height), Some(*index)),
            "{hash} on node3"
        );
    }
    assert!(c.stop(FULL).success());
    let out = meshward()
        .args(["store", "verify", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "store verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(c);
    drop(tmpfs);
}

//! The validators under test, as child processes of the bench, and the fleet of devices that
//! loads them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_api::client::ApiClient;
use meshward_api::types::TxState;
use meshward_core::codec::Encode;
use meshward_core::ids::{Keypair, PublicKey, SignKey};
use meshward_core::tx::{enroll_body, GroupName, Tx};
use meshward_devnet::{stop_children, DevnetFile, NodeLauncher};

use crate::Progress;

/// How long a status poll of a validator may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a `POST /v1/txs` may take.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transaction-status poll may take.
const TX_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Validators running as child processes; every one still running is stopped on drop.
pub(crate) struct Cluster {
    /// The devnet the validators belong to.
    pub file: DevnetFile,
    /// The node processes by index; `None` once killed.
    children: Vec<Option<Child>>,
    /// Each node's API bearer token, by index.
    tokens: Vec<String>,
    /// One status client per node, kept for the cluster's life (polled every 100 ms).
    status: Vec<ApiClient>,
    /// Where the devnet lives (client specs are written there too).
    pub(crate) dir: PathBuf,
    /// The binary the load generators run as.
    pub(crate) cli: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut live: Vec<Child> = self.children.iter_mut().filter_map(|c| c.take()).collect();
        stop_children(&mut live, Duration::from_secs(5));
    }
}

impl Cluster {
    /// Creates a devnet of `n` validators in `dir`, starts it and waits for height 2.
    pub(crate) fn create(
        dir: &Path,
        n: usize,
        base_port: u16,
        exes: &crate::Exes,
    ) -> Result<Cluster> {
        let file = meshward_devnet::create(dir, n, base_port)?;
        let mut c = Cluster::launch(file, dir, exes)?;
        c.wait_height(2, Duration::from_secs(90))?;
        Ok(c)
    }

    /// Starts every node of `file` (their data dirs must exist).
    pub(crate) fn launch(file: DevnetFile, dir: &Path, exes: &crate::Exes) -> Result<Cluster> {
        let mut tokens = Vec::new();
        let mut status = Vec::new();
        for n in &file.nodes {
            tokens.push(
                fs::read_to_string(&n.token_file)
                    .with_context(|| format!("cannot read {}", n.token_file.display()))?
                    .trim()
                    .to_string(),
            );
            status.push(ApiClient::new(&n.api)?.with_timeout(STATUS_TIMEOUT));
        }
        let mut c = Cluster {
            children: Vec::new(),
            tokens,
            status,
            dir: dir.to_path_buf(),
            cli: exes.cli.clone(),
            file,
        };
        c.spawn_all(&exes.nodes)?;
        Ok(c)
    }

    /// Starts every node of the devnet with `launcher`.
    fn spawn_all(&mut self, launcher: &NodeLauncher) -> Result<()> {
        for i in 0..self.file.nodes.len() {
            let child = launcher.spawn(&self.file, i)?;
            self.children.push(Some(child));
        }
        Ok(())
    }

    /// Waits until every node reports at least `height`.
    pub(crate) fn wait_height(&mut self, height: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !(0..self.file.nodes.len()).all(|i| self.height(i).is_some_and(|h| h >= height)) {
            if Instant::now() > deadline {
                bail!(
                    "the {} bench validators did not reach height {height} within {} s (node logs: {}/node*/node.log)",
                    self.file.nodes.len(),
                    timeout.as_secs(),
                    self.dir.display()
                );
            }
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = c.as_mut().map(|c| c.try_wait()) {
                    let log = self.file.nodes[i].dir.join("node.log");
                    bail!(
                        "bench validator {i} exited ({status}); see {}",
                        log.display()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The nodes not killed.
    pub(crate) fn alive(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].is_some())
            .collect()
    }

    /// Node `i`'s API URL.
    pub(crate) fn api(&self, i: usize) -> &str {
        &self.file.nodes[i].api
    }

    /// Node `i`'s bearer token.
    pub(crate) fn token(&self, i: usize) -> &str {
        &self.tokens[i]
    }

    /// A client of node `i` with its token, calls taking at most `timeout`.
    fn client(&self, i: usize, timeout: Duration) -> Result<ApiClient> {
        Ok(ApiClient::new(self.api(i))?
            .with_timeout(timeout)
            .with_token(self.tokens[i].clone()))
    }

    /// Node `i`'s process id, unless it was killed.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    /// SIGKILLs node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Node `i`'s height, if it answers.
    pub(crate) fn height(&self, i: usize) -> Option<u64> {
        self.status[i].status().ok().map(|s| s.height)
    }

    /// A metric of node `i` (`None` if it does not answer or has no such series).
    pub(crate) fn metric(&self, i: usize, name: &str) -> Option<f64> {
        self.status[i].metric(name).ok().flatten()
    }

    /// The highest height among live nodes (0 if none answers).
    pub(crate) fn tip(&self) -> u64 {
        self.alive()
            .iter()
            .filter_map(|&i| self.height(i))
            .max()
            .unwrap_or(0)
    }

    /// Waits (up to a minute) until every live node's mempool is empty, so that a phase
    /// measures its own load and not the backlog of the one before.
    pub(crate) fn drain(&self, p: &Progress) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let pending: u64 = self
                .alive()
                .iter()
                .filter_map(|&i| self.status[i].status().ok().map(|s| s.mempool_size))
                .sum();
            if pending == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        p.note("mempools did not drain within 60 s");
    }
}

/// The devices that offer load, with each one's next sequence number.
pub(crate) struct Fleet {
    /// Their keys.
    pub devices: Vec<Keypair>,
    /// Each one's next sequence number, at the same index.
    pub seqs: Vec<u64>,
}

/// Enrolls `n` new devices, signed by `admin` from sequence number `first_seq`, and waits
/// until they are final. Returns the fleet and the seconds it took.
pub(crate) fn enroll(
    c: &Cluster,
    admin: &SignKey,
    first_seq: u64,
    n: usize,
    group: &str,
) -> Result<(Fleet, f64)> {
    let chain = &c.file.chain_id;
    let admin_id: PublicKey = admin.public();
    let devices: Vec<Keypair> = (0..n)
        .map(|_| Keypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let group = GroupName::new(group).context("valid group name")?;
    let txs: Vec<Tx> = devices
        .iter()
        .zip(first_seq..)
        .map(|(d, seq)| {
            let body = enroll_body(chain, d, vec![group.clone()], None);
            Tx::sign(chain, admin_id, admin, seq, body)
        })
        .collect();
    let start = Instant::now();
    // The mempool holds at most 256 transactions per sender: enroll in chunks.
    for chunk in txs.chunks(200) {
        let node = *c
            .alive()
            .first()
            .context("every bench validator was killed")?;
        let encoded: Vec<Vec<u8>> = chunk.iter().map(|t| t.to_bytes()).collect();
        let v = c.client(node, SUBMIT_TIMEOUT)?.submit_txs(&encoded)?;
        if let Some(r) = v.rejected.first() {
            bail!("an enrollment was refused: {}", serde_json::to_value(r)?);
        }
        let last = chunk.last().context("chunks are not empty")?.id();
        let poll = c.client(node, TX_STATUS_TIMEOUT)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = poll.tx_status(&last);
            if v.as_ref().is_ok_and(|v| v.status == TxState::Final) {
                break;
            }
            if Instant::now() > deadline {
                bail!("enrollments were not final within 60 s (last one: {v:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let seqs = vec![1u64; n];
    Ok((Fleet { devices, seqs }, secs))
}

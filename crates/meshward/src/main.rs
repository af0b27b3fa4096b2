//! `meshward`: the one binary. Each subcommand parses its arguments, calls into the libraries
//! and prints a human line or, with `--json`, one JSON object. Errors print one line naming the
//! file or value at fault and exit non-zero. `meshward devnet` is `meshward-devnet`, and
//! `meshward bench` is `meshward-bench`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use meshward_api::client::ApiClient;
use meshward_core::genesis::{valid_chain_id, Genesis};
use meshward_core::hash::Hash;
use meshward_core::light::ProofFile;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Recipient, Validator, ValidatorSet};
use meshward_node::{NODE_KEY_FILE, STORE_FILE};
use meshward_sdk::keyfile::{self, KeyKind};
use serde_json::json;

mod fleet;

#[derive(Parser)]
#[command(
    name = "meshward",
    version,
    about = "Meshward: a self-hosted BFT ledger and encrypted mesh for IoT fleets"
)]
struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a node's data directory: node key, API token (both mode 0600) and config.toml.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Admin keys.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Devices: keys, enrollment, the device agent, revocation, key rotation.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// One-time enrollment tickets.
    #[command(subcommand)]
    Ticket(TicketCmd),
    /// Which groups may send to which.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Seal a message to a device, anchor it, and deliver it directly or through mailboxes.
    Send {
        #[command(flatten)]
        gw: GatewayArgs,
        /// The sender's device key file.
        #[arg(long)]
        key: PathBuf,
        /// The device's state directory (default: <key>.d).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The recipient's device id (group messages are not in the CLI yet).
        #[arg(long)]
        to: String,
        /// The message, as text.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        message: Option<String>,
        /// A file whose bytes are the message (at most 64 KiB).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Seal with an HPKE session (for streams) rather than one-shot.
        #[arg(long)]
        session: bool,
        /// Wait until the anchor is final and print its height.
        #[arg(long)]
        wait_final: bool,
        /// How long --wait-final (and an offline anchor) may wait, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Also find the recipient on the LAN by multicast DNS.
        #[arg(long)]
        mdns: bool,
    },
    /// Fetch the device's mailbox from a gateway, open it locally and acknowledge it.
    Inbox {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        api: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Fetch the proof of an anchored message from a gateway, for `meshward verify`.
    Proof {
        #[arg(long)]
        api: String,
        /// The anchor's commitment (an envelope's, or a batch root), hex.
        commitment: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Genesis files.
    #[command(subcommand)]
    Genesis(GenesisCmd),
    /// Inspect and check a node's store offline.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Check an anchor proof file offline against the genesis.
    Verify {
        #[arg(long)]
        genesis: PathBuf,
        proof: PathBuf,
    },
    /// Run a gateway node.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Benchmarks on this machine, with real processes on 127.0.0.1: writes results.json and
    /// report.html to --out and prints each figure beside its target.
    Bench(BenchCmd),
    /// Show a node's status.
    Status {
        /// The node's API, e.g. http://127.0.0.1:7700
        #[arg(long, default_value = "http://127.0.0.1:7700")]
        api: String,
    },
    /// Start a whole fleet on this machine: validators as separate processes, with a live
    /// summary. Ctrl-C stops every node.
    Devnet {
        /// Where the devnet lives; resumed if it already holds one. Default: a new temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Node i uses ports P+10i (API), P+10i+1 (mesh) and P+10i+2 (consensus).
        #[arg(long, default_value_t = 27000)]
        base_port: u16,
        /// Enroll this many simulated devices that exchange encrypted messages.
        #[arg(long, default_value_t = 0)]
        devices: usize,
        /// Their messages per second in total (0: as fast as they can).
        #[arg(long, default_value_t = 10.0)]
        device_rate: f64,
    },
}

#[derive(Args)]
struct BenchCmd {
    /// Which part to run: crypto (signature and HPKE ceiling), consensus (4 validators under
    /// load, one killed), direct (device to device), mqtt (Mosquitto baseline), scale (4/7/10
    /// validators, 1k/10k/100k devices), or all.
    #[arg(value_enum, default_value_t = meshward_bench::Part::All)]
    part: meshward_bench::Part,
    /// Where results.json and report.html go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Short phases and small fleets (under 3 minutes for everything), for CI's smoke test.
    #[arg(long)]
    quick: bool,
    /// First port of the validators' range (each part uses its own range above it).
    #[arg(long, default_value_t = 29000)]
    base_port: u16,
    /// Internal: the load generator's spec file (`bench client`).
    #[arg(long, hide = true)]
    spec: Option<PathBuf>,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Run until SIGINT or SIGTERM, then shut down cleanly.
    Run(NodeRun),
}

#[derive(Args)]
struct NodeRun {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    genesis: PathBuf,
    /// Mesh listen address (overrides config.toml), e.g. /ip4/0.0.0.0/tcp/7800
    #[arg(long)]
    p2p: Option<String>,
    /// API listen address (overrides config.toml), e.g. 127.0.0.1:7700
    #[arg(long)]
    api: Option<String>,
    /// Consensus listen address; default: the mesh address's next port.
    #[arg(long)]
    consensus: Option<String>,
    /// Mesh address of another node; repeat for each.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Turn off LAN discovery by mDNS.
    #[arg(long)]
    no_mdns: bool,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Generate an admin key file (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Generate a device's signing and encryption keys into one key file (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a device's public enrollment data (ids and proofs of possession) for an admin.
    Export {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        chain_id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Enroll a device with admin signatures (k-of-n).
    Enroll {
        #[command(flatten)]
        gw: GatewayArgs,
        /// Admin key file; repeat until the fleet's threshold is met.
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        /// The device's public file from `meshward device export`.
        #[arg(
            long,
            conflicts_with = "device_key",
            required_unless_present = "device_key"
        )]
        device_pub: Option<PathBuf>,
        /// The device's key file (when the admin holds it).
        #[arg(long)]
        device_key: Option<PathBuf>,
        /// Group to put the device in; repeat for several (default: "default").
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Enroll this device with a one-time ticket.
    Join {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long)]
        ticket: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Run the device agent: print each received message as a JSON line.
    Run {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long)]
        key: PathBuf,
        /// State directory (default: <key>.d).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to listen for direct envelopes (default /ip4/127.0.0.1/tcp/0).
        #[arg(long)]
        listen: Vec<String>,
        /// Find peers on the LAN by multicast DNS.
        #[arg(long)]
        mdns: bool,
        /// How often to poll gateway mailboxes, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
    /// Revoke a device: every node refuses it from the next block.
    Revoke {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        device_id: String,
        #[arg(long, default_value = "revoked by admin")]
        reason: String,
    },
    /// Replace this device's keys (the device id stays).
    Rotate {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long)]
        key: PathBuf,
    },
    /// List enrolled devices.
    List {
        #[arg(long)]
        api: String,
    },
}

/// How a command finds gateways.
#[derive(Args)]
struct GatewayArgs {
    /// A gateway's HTTP API, e.g. http://127.0.0.1:7700 (its mesh addresses are read from it).
    #[arg(long)]
    api: Option<String>,
    /// A gateway's mesh address; repeat for several.
    #[arg(long)]
    bootstrap: Vec<String>,
}

impl GatewayArgs {
    fn into_gateways(self) -> fleet::Gateways {
        fleet::Gateways {
            api: self.api,
            bootstrap: self.bootstrap,
        }
    }
}

#[derive(Subcommand)]
enum TicketCmd {
    /// Create a one-time enrollment ticket on the ledger and print it.
    New {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the ticket is valid: e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Replace the policy: members of GROUP_A may send to members of GROUP_B.
    Set {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        #[arg(long, required = true)]
        allow: Vec<String>,
    },
}

#[derive(Subcommand)]
enum GenesisCmd {
    /// Write a new genesis file from admin key files and validator data directories.
    New(GenesisNew),
}

#[derive(Args)]
struct GenesisNew {
    #[arg(long)]
    chain_id: String,
    /// Admin key file; repeat for each admin.
    #[arg(long = "admin", required = true)]
    admins: Vec<PathBuf>,
    /// How many admins must sign an admin transaction.
    #[arg(long, default_value_t = 1)]
    admin_threshold: u16,
    /// A validator's data directory (made by `meshward init`); repeat for each validator.
    #[arg(long = "validator", required = true)]
    validators: Vec<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Replay the whole chain in a data directory's store and check every block.
    Verify {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write a synthetic chain (enrolled devices, anchors, certified blocks) for tests and
    /// benchmarks; resumes the chain if the directory already holds one.
    Synth {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        blocks: u64,
        #[arg(long, default_value_t = 50)]
        anchors_per_block: usize,
        #[arg(long, default_value_t = 64)]
        devices: usize,
    },
    /// Extract the proof of an anchor from a store, for `meshward verify`.
    Proof {
        #[arg(long)]
        dir: PathBuf,
        /// The anchor's commitment, lower-case hex.
        #[arg(long)]
        commitment: String,
        #[arg(long)]
        out: PathBuf,
    },
}

/// glibc's malloc makes up to 8 arenas per core, and each keeps the memory freed in it. A node's
/// threads gain little from more than two: with two, a validator with 10k devices held 77-78 MiB
/// after anchor load against 85-86 MiB with glibc's default, at no loss of throughput (two runs
/// each of `meshward bench scale --quick`). An explicit `MALLOC_ARENA_MAX` in the environment wins.
#[allow(
    unsafe_code,
    reason = "mallopt has no safe wrapper; see the SAFETY comment"
)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called first thing in main, before any
        // other thread exists. A refusal (return 0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() {
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) => print_output(json, out),
        Err(e) => {
            if json {
                println!("{}", json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::exit(1);
        }
    }
}

/// What a command reports: a human line and the same facts as JSON.
struct Output {
    text: String,
    json: serde_json::Value,
}

fn print_output(json: bool, out: Output) {
    if out.json.is_null() {
        return;
    }
    if json {
        println!("{}", out.json);
    } else {
        println!("{}", out.text);
    }
}

fn run(cli: Cli) -> Result<Output> {
    match cli.cmd {
        Cmd::Init { dir } => init(&dir),
        Cmd::Admin(AdminCmd::Keygen { out }) => {
            let kp = keyfile::generate(&out, KeyKind::Admin)?;
            Ok(Output {
                text: format!("admin key {} written to {}", kp.id(), out.display()),
                json: json!({ "admin_id": kp.id().peer_id(), "file": out }),
            })
        }
        Cmd::Device(DeviceCmd::Keygen { out }) => {
            let kp = keyfile::generate(&out, KeyKind::Device)?;
            Ok(Output {
                text: format!(
                    "device key written to {}\ndevice_id: {}\nenc_key: {}",
                    out.display(),
                    kp.id(),
                    kp.enc_key()
                ),
                json: json!({ "device_id": kp.id().peer_id(), "enc_key": kp.enc_key().to_string() }),
            })
        }
        Cmd::Device(DeviceCmd::Export { key, chain_id, out }) => {
            fleet::device_export(&key, &chain_id, &out)
        }
        Cmd::Device(DeviceCmd::Enroll {
            gw,
            admin_keys,
            device_pub,
            device_key,
            groups,
        }) => fleet::device_enroll(fleet::EnrollArgs {
            gw: gw.into_gateways(),
            admin_keys,
            device_pub,
            device_key,
            groups,
        }),
        Cmd::Device(DeviceCmd::Join { gw, ticket, key }) => {
            fleet::device_join(gw.into_gateways(), &ticket, &key)
        }
        Cmd::Device(DeviceCmd::Run {
            gw,
            key,
            dir,
            listen,
            mdns,
            poll_ms,
        }) => fleet::device_run(fleet::RunArgs {
            gw: gw.into_gateways(),
            key,
            dir,
            listen,
            mdns,
            poll_ms,
        }),
        Cmd::Device(DeviceCmd::Revoke {
            gw,
            admin_keys,
            device_id,
            reason,
        }) => fleet::device_revoke(gw.into_gateways(), &admin_keys, &device_id, &reason),
        Cmd::Device(DeviceCmd::Rotate { gw, key }) => {
            fleet::device_rotate(gw.into_gateways(), &key)
        }
        Cmd::Device(DeviceCmd::List { api }) => fleet::device_list(&api),
        Cmd::Ticket(TicketCmd::New {
            gw,
            admin_keys,
            groups,
            ttl,
        }) => fleet::ticket_new(gw.into_gateways(), &admin_keys, &groups, &ttl),
        Cmd::Policy(PolicyCmd::Set {
            gw,
            admin_keys,
            allow,
        }) => fleet::policy_set(gw.into_gateways(), &admin_keys, &allow),
        Cmd::Send {
            gw,
            key,
            dir,
            to,
            message,
            file,
            session,
            wait_final,
            timeout,
            mdns,
        } => {
            let payload = match (message, file) {
                (Some(m), _) => m.into_bytes(),
                (None, Some(f)) => {
                    fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                (None, None) => bail!("give --message TEXT or --file F"),
            };
            fleet::send(fleet::SendArgs {
                gw: gw.into_gateways(),
                mdns,
                key,
                dir,
                to,
                payload,
                session,
                wait_final,
                timeout_s: timeout,
            })
        }
        Cmd::Inbox { key, api, dir } => fleet::inbox(&api, &key, dir.as_deref()),
        Cmd::Proof {
            api,
            commitment,
            out,
        } => fleet::proof(&api, &commitment, &out),
        Cmd::Genesis(GenesisCmd::New(args)) => genesis_new(&args),
        Cmd::Store(StoreCmd::Verify { dir }) => store_verify(&dir),
        Cmd::Store(StoreCmd::Synth {
            dir,
            blocks,
            anchors_per_block,
            devices,
        }) => store_synth(&dir, blocks, anchors_per_block, devices),
        Cmd::Store(StoreCmd::Proof {
            dir,
            commitment,
            out,
        }) => store_proof(&dir, &commitment, &out),
        Cmd::Verify { genesis, proof } => verify(&genesis, &proof),
        Cmd::Node(NodeCmd::Run(args)) => node_run(args),
        Cmd::Status { api } => status(&api),
        Cmd::Bench(b) if b.part == meshward_bench::Part::Client => {
            let spec = b
                .spec
                .context("bench client needs --spec (it is started by meshward bench)")?;
            let r = meshward_bench::client::run(&spec)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(Output {
                text: String::new(),
                json: serde_json::Value::Null,
            })
        }
        Cmd::Bench(b) => {
            let r = meshward_bench::run(&meshward_bench::Options {
                part: b.part,
                out: b.out,
                quick: b.quick,
                base_port: b.base_port,
                json: cli.json,
                // This binary is the meshward the bench starts.
                exe: None,
            })?;
            if !r.any_ok {
                eprintln!("{}", r.summary);
                bail!("every benchmark part that ran failed (reasons above, and in results.json)");
            }
            Ok(Output {
                text: r.summary,
                json: r.results,
            })
        }
        Cmd::Devnet {
            dir,
            validators,
            base_port,
            devices,
            device_rate,
        } => {
            meshward_devnet::run(
                meshward_devnet::Options {
                    dir,
                    validators,
                    base_port,
                    devices,
                    device_rate,
                    // The nodes run as this binary.
                    exe: None,
                },
                cli.json,
            )?;
            Ok(Output {
                text: String::new(),
                json: serde_json::Value::Null,
            })
        }
    }
}

fn node_run(a: NodeRun) -> Result<Output> {
    let mut config = meshward_node::NodeConfig::load(a.dir.clone(), a.genesis.clone())?;
    if let Some(p) = &a.p2p {
        config.p2p = p
            .parse()
            .with_context(|| format!("--p2p {p:?} is not a multiaddr"))?;
    }
    if let Some(api) = &a.api {
        config.api = api
            .parse()
            .with_context(|| format!("--api {api:?} is not an ip:port such as 127.0.0.1:7700"))?;
    }
    if let Some(c) = &a.consensus {
        config.consensus = Some(
            c.parse()
                .with_context(|| format!("--consensus {c:?} is not a multiaddr"))?,
        );
    }
    for b in &a.bootstrap {
        config.bootstrap.push(
            b.parse()
                .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?,
        );
    }
    if a.no_mdns {
        config.mdns = false;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(meshward_node::run(config, shutdown_signal()))?;
    Ok(Output {
        text: "node stopped".into(),
        json: json!({ "stopped": true }),
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn status(api: &str) -> Result<Output> {
    let st = ApiClient::new(api)?
        .with_timeout(std::time::Duration::from_secs(5))
        .status()?;
    Ok(Output {
        text: format!(
            "chain {}  height {}  last block {}  peers {}  validators {}  validator: {}  mempool {}",
            st.chain_id,
            st.height,
            st.last_block_hash.as_deref().unwrap_or("-"),
            st.peers,
            st.validators,
            st.is_validator,
            st.mempool_size,
        ),
        json: serde_json::to_value(&st)?,
    })
}

fn init(dir: &Path) -> Result<Output> {
    let r = meshward_node::init_data_dir(
        dir,
        meshward_node::DEFAULT_API,
        meshward_node::DEFAULT_P2P,
        true,
    )?;
    Ok(Output {
        text: format!(
            "initialised {}\npeer_id: {}\napi token: {} (mode 0600)",
            dir.display(),
            r.peer_id,
            r.token_file.display()
        ),
        json: json!({
            "dir": dir,
            "peer_id": r.peer_id,
            "node_key": r.node_key,
            "token_file": r.token_file,
            "config": r.config,
        }),
    })
}

fn genesis_new(a: &GenesisNew) -> Result<Output> {
    if !valid_chain_id(&a.chain_id) {
        bail!(
            "invalid --chain-id {:?}: use 1-64 characters of A-Z a-z 0-9 . _ -",
            a.chain_id
        );
    }
    let mut admin_keys = Vec::new();
    for f in &a.admins {
        admin_keys.push(keyfile::load(f, KeyKind::Admin)?.id());
    }
    let n = admin_keys.len();
    let admins = AdminSet::new(admin_keys, a.admin_threshold).with_context(|| {
        format!(
            "invalid admin set: {n} admin key(s) (at most 16, no duplicates) with --admin-threshold {} (must be 1..={n})",
            a.admin_threshold
        )
    })?;
    let mut vals = Vec::new();
    for d in &a.validators {
        let kp = keyfile::load(&d.join(NODE_KEY_FILE), KeyKind::Node).with_context(|| {
            format!(
                "validator directory {} (create it with meshward init)",
                d.display()
            )
        })?;
        vals.push(Validator {
            key: kp.id(),
            power: 1,
        });
    }
    let validators = ValidatorSet::new(vals)
        .context("invalid validator set: at most 128 validators, each data directory once")?;
    let genesis = Genesis {
        chain_id: a.chain_id.clone(),
        genesis_time_ms: meshward_core::clock::now_ms(),
        admins,
        validators,
    };
    if a.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a genesis",
            a.out.display()
        );
    }
    fs::write(&a.out, genesis.to_json() + "\n")
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    Ok(Output {
        text: format!(
            "genesis for chain {} written to {}\ngenesis hash: {}",
            genesis.chain_id,
            a.out.display(),
            genesis.hash()
        ),
        json: json!({
            "chain_id": genesis.chain_id,
            "file": a.out,
            "genesis_hash": genesis.hash().to_hex(),
            "validators": genesis.validators.validators.len(),
            "admins": genesis.admins.keys.len(),
            "admin_threshold": genesis.admins.threshold,
        }),
    })
}

fn load_genesis(path: &Path) -> Result<Genesis> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read genesis file {} (create one with meshward genesis new)",
            path.display()
        )
    })?;
    Genesis::from_json(&text).with_context(|| format!("genesis file {}", path.display()))
}

fn store_verify(dir: &Path) -> Result<Output> {
    let path = dir.join(STORE_FILE);
    let r = meshward_store::verify_chain(&path)?;
    Ok(Output {
        text: format!(
            "store {} is valid: {} blocks, {} transactions ({} anchors), tip height {}",
            path.display(),
            r.blocks,
            r.txs,
            r.anchors,
            r.tip_height
        ),
        json: json!({
            "ok": true,
            "blocks": r.blocks,
            "txs": r.txs,
            "anchors": r.anchors,
            "tip_height": r.tip_height,
        }),
    })
}

fn store_synth(
    dir: &Path,
    blocks: u64,
    anchors_per_block: usize,
    devices: usize,
) -> Result<Output> {
    use meshward_store::synth::{Synth, KEYS_FILE_NAME};
    // The keys file is written first, so its presence means a fleet to resume.
    let mut synth = if dir.join(KEYS_FILE_NAME).exists() {
        Synth::open(dir)?
    } else {
        Synth::create(dir, devices)?
    };
    let start = std::time::Instant::now();
    synth.write_blocks(blocks, anchors_per_block)?;
    let secs = start.elapsed().as_secs_f64();
    let (height, hash) = synth.store().tip().unwrap_or((0, Hash::ZERO));
    Ok(Output {
        text: format!("wrote {blocks} blocks in {secs:.2} s; tip height {height} ({hash})"),
        json: json!({
            "blocks_written": blocks,
            "seconds": secs,
            "tip_height": height,
            "tip_hash": hash.to_hex(),
        }),
    })
}

fn store_proof(dir: &Path, commitment: &str, out: &Path) -> Result<Output> {
    let c = Hash::from_hex(commitment)
        .with_context(|| format!("--commitment {commitment:?} is not 64 lower-case hex digits"))?;
    let path = dir.join(STORE_FILE);
    let store = meshward_store::Store::open(&path)?;
    let proof = store
        .anchor_proof(&c)?
        .with_context(|| format!("no anchor with commitment {c} in {}", path.display()))?;
    let file = ProofFile::new(&store.genesis().chain_id, &proof)
        .context("the indexed transaction is not an anchor (store index is inconsistent)")?;
    if out.exists() {
        bail!("{} already exists; refusing to overwrite", out.display());
    }
    fs::write(out, file.to_json() + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Output {
        text: format!(
            "proof of {c} (block {}) written to {}",
            file.height,
            out.display()
        ),
        json: json!({ "commitment": c.to_hex(), "height": file.height, "file": out }),
    })
}

fn verify(genesis_path: &Path, proof_path: &Path) -> Result<Output> {
    let genesis = load_genesis(genesis_path)?;
    let text = fs::read_to_string(proof_path)
        .with_context(|| format!("cannot read proof file {}", proof_path.display()))?;
    let p = ProofFile::verify_json(&text, &genesis)
        .with_context(|| format!("proof {} is invalid", proof_path.display()))?;
    let recipient = match &p.recipient {
        Recipient::Device(d) => d.peer_id(),
        Recipient::Group(g) => format!("group:{g}"),
    };
    Ok(Output {
        text: format!(
            "valid: {} anchored {} (seq {}, {} envelope(s), {} bytes) to {} in block {} ({}) at time {} ms, certified by the validators of chain {}",
            p.sender,
            p.commitment,
            p.seq,
            p.count,
            p.size_bytes,
            recipient,
            p.height,
            p.block_hash,
            p.block_time_ms,
            genesis.chain_id
        ),
        json: json!({
            "valid": true,
            "chain_id": genesis.chain_id,
            "height": p.height,
            "block_hash": p.block_hash.to_hex(),
            "block_time_ms": p.block_time_ms,
            "tx_index": p.tx_index,
            "sender": p.sender.peer_id(),
            "seq": p.seq,
            "recipient": recipient,
            "commitment": p.commitment.to_hex(),
            "count": p.count,
            "size_bytes": p.size_bytes,
            "timestamp_ms": p.timestamp_ms,
        }),
    })
}

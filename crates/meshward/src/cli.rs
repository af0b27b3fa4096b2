//! The command line: every subcommand and flag, as clap types. `main.rs` dispatches them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::fleet;

#[derive(Parser)]
#[command(
    name = "meshward",
    version,
    about = "Meshward: a self-hosted BFT ledger and encrypted mesh for IoT fleets"
)]
pub(crate) struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Write logs to this file instead of stderr, rotated (to FILE.1) at --log-max-bytes. The
    /// level is RUST_LOG's, by default Meshward's own lifecycle at info, everything else at warn.
    #[arg(long, global = true)]
    pub(crate) log_file: Option<PathBuf>,
    /// Size at which --log-file is rotated; at most about twice this is kept.
    #[arg(long, global = true, default_value_t = crate::logging::DEFAULT_LOG_MAX_BYTES)]
    pub(crate) log_max_bytes: u64,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// The validator set: list it, add, remove or re-power a validator (k-of-n admins).
    #[command(subcommand)]
    Validator(crate::validator_cmd::ValidatorCmd),
    /// Legacy MQTT devices: enroll one whose keys its custodian gateways hold.
    #[command(subcommand)]
    Mqtt(crate::mqtt_cmd::MqttCmd),
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
        /// Keep what proves the message later: `<commitment>.env` (the envelope as sent) and
        /// `<anchor commitment>.batch` (the anchor's envelope commitments in order) in this
        /// directory, for `meshward proof --envelope`.
        #[arg(long)]
        keep: Option<PathBuf>,
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
    /// Fetch the proof of an anchored message, or of any final transaction (--tx), from a
    /// gateway, for `meshward verify`.
    Proof {
        #[arg(long)]
        api: String,
        /// The anchor's commitment (an envelope's, or a batch root), hex.
        #[arg(required_unless_present = "tx", conflicts_with = "tx")]
        commitment: Option<String>,
        /// A transaction id instead (enrollment, revocation, policy, key change, ticket,
        /// validator-set change, anchor), hex.
        #[arg(long)]
        tx: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Also prove this one envelope (a `<commitment>.env` that `send --keep` wrote) to be
        /// among the anchor's.
        #[arg(long, conflicts_with = "tx")]
        envelope: Option<PathBuf>,
        /// The anchor's envelope commitments in order (the `.batch` that `send --keep` wrote);
        /// without it, the anchor is of the envelope alone.
        #[arg(long, requires = "envelope")]
        batch: Option<PathBuf>,
    },
    /// List every governance action in order (what, who authorised it, height, time), and
    /// with --prove write a proof file for each.
    Audit {
        #[arg(long)]
        api: String,
        /// Start at this height.
        #[arg(long, default_value_t = 1)]
        since: u64,
        /// Write `<height>-<index>-<kind>.json`, a proof file per action, into this directory
        /// (created if missing).
        #[arg(long)]
        prove: Option<PathBuf>,
    },
    /// Genesis files.
    #[command(subcommand)]
    Genesis(GenesisCmd),
    /// Inspect and check a node's store offline.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Check a proof file (of an anchor or any transaction) offline against the genesis, and say
    /// what it proves.
    Verify {
        #[arg(long)]
        genesis: PathBuf,
        proof: PathBuf,
    },
    /// Write what a firmware loads with no_std: the genesis's canonical binary encoding
    /// (`genesis.bin`, for `Genesis::from_bytes`) and, from each proof file, its binary proof
    /// (`<name>.bin`, for `TxProof::from_bytes`), after checking each proof against the genesis.
    FirmwareData {
        #[arg(long)]
        genesis: PathBuf,
        /// A proof file (from `meshward proof`); repeat for several.
        #[arg(long = "proof")]
        proofs: Vec<PathBuf>,
        /// Directory to write into (created if missing; existing files are not overwritten).
        #[arg(long)]
        out_dir: PathBuf,
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
    #[command(args_conflicts_with_subcommands = true)]
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
        /// Restart a node that exits, after 1 s, then 2, 4, … up to 30 s.
        #[arg(long)]
        restart_on_exit: bool,
        /// N:MODE makes node N a misbehaving validator (see `node run --byzantine`); repeat
        /// for more. A build with `--features byzantine` only.
        #[cfg(feature = "byzantine")]
        #[arg(long, value_parser = parse_byzantine)]
        byzantine: Vec<(usize, String)>,
        /// Control one node of a devnet instead of running it.
        #[command(subcommand)]
        node: Option<DevnetNodeCmd>,
    },
}

/// `meshward devnet kill|stop|start N --dir D`.
#[derive(Subcommand)]
pub(crate) enum DevnetNodeCmd {
    /// SIGKILL node N (a crash): the devnet goes on without it.
    Kill {
        /// The node's index (node0 is 0).
        n: usize,
        /// The devnet's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop node N cleanly (SIGTERM).
    Stop {
        /// The node's index.
        n: usize,
        /// The devnet's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Start node N again with its data dir and ports; it catches up from the others.
    Start {
        /// The node's index.
        n: usize,
        /// The devnet's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct BenchCmd {
    /// Which part to run: crypto (signature and HPKE ceiling), consensus (4 validators under
    /// load, one killed), direct (device to device), mqtt (Mosquitto baseline), scale (4/7/10
    /// validators, 1k/10k/100k devices), or all.
    #[arg(value_enum, default_value_t = meshward_bench::Part::All)]
    pub(crate) part: meshward_bench::Part,
    /// Where results.json and report.html go.
    #[arg(long, default_value = "bench-out")]
    pub(crate) out: PathBuf,
    /// Short phases and small fleets (under 3 minutes for everything), for CI's smoke test.
    #[arg(long)]
    pub(crate) quick: bool,
    /// First port of the validators' range (each part uses its own range above it).
    #[arg(long, default_value_t = 29000)]
    pub(crate) base_port: u16,
    /// Internal: the load generator's spec file (`bench client`).
    #[arg(long, hide = true)]
    pub(crate) spec: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum NodeCmd {
    /// Run until SIGINT or SIGTERM, then shut down cleanly.
    Run(NodeRun),
}

#[derive(Args)]
pub(crate) struct NodeRun {
    #[arg(long)]
    pub(crate) dir: PathBuf,
    #[arg(long)]
    pub(crate) genesis: PathBuf,
    /// Mesh listen address (overrides config.toml), e.g. /ip4/0.0.0.0/tcp/7800
    #[arg(long)]
    pub(crate) p2p: Option<String>,
    /// API listen address (overrides config.toml), e.g. 127.0.0.1:7700
    #[arg(long)]
    pub(crate) api: Option<String>,
    /// Consensus listen address; default: the mesh address's next port.
    #[arg(long)]
    pub(crate) consensus: Option<String>,
    /// Mesh address of another node; repeat for each.
    #[arg(long)]
    pub(crate) bootstrap: Vec<String>,
    /// Turn off LAN discovery by mDNS.
    #[arg(long)]
    pub(crate) no_mdns: bool,
    /// MQTT listen address (overrides config.toml), e.g. 127.0.0.1:1883; without it (or
    /// `mqtt` in config.toml) the gateway has no MQTT front door.
    #[arg(long)]
    pub(crate) mqtt: Option<String>,
    /// PEM certificate chain: the MQTT port speaks TLS (with --mqtt-tls-key).
    #[arg(long, requires = "mqtt_tls_key")]
    pub(crate) mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key of --mqtt-tls-cert.
    #[arg(long, requires = "mqtt_tls_cert")]
    pub(crate) mqtt_tls_key: Option<PathBuf>,
    /// Make this validator misbehave, for the adversarial tests: equivocate, bad-proposal,
    /// withhold, stale-votes or garbage (a build with `--features byzantine` only).
    #[cfg(feature = "byzantine")]
    #[arg(long)]
    pub(crate) byzantine: Option<meshward_node::ByzantineMode>,
}

#[derive(Subcommand)]
pub(crate) enum AdminCmd {
    /// Generate an admin key file (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeviceCmd {
    /// Generate a device's signing and encryption keys into one key file (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// The device id these keys are for, when it is not the new key itself: a revoked
        /// device's new keys, for `meshward device reinstate`.
        #[arg(long)]
        account: Option<String>,
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
    /// Reinstate a revoked or quarantined device under new keys (k-of-n admins): it keeps its
    /// id, groups and sequence number; its old keys stay refused. The device makes the new keys
    /// with `device keygen --account <id>` and `device export`.
    Reinstate {
        #[command(flatten)]
        gw: GatewayArgs,
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        /// The public file of the device's new key, from `meshward device export`.
        #[arg(long = "device-pub")]
        device_pub: PathBuf,
        device_id: String,
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
pub(crate) struct GatewayArgs {
    /// A gateway's HTTP API, e.g. http://127.0.0.1:7700 (its mesh addresses are read from it).
    #[arg(long)]
    pub(crate) api: Option<String>,
    /// A gateway's mesh address; repeat for several.
    #[arg(long)]
    pub(crate) bootstrap: Vec<String>,
}

impl GatewayArgs {
    pub(crate) fn into_gateways(self) -> fleet::Gateways {
        fleet::Gateways {
            api: self.api,
            bootstrap: self.bootstrap,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum TicketCmd {
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
pub(crate) enum PolicyCmd {
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
pub(crate) enum GenesisCmd {
    /// Write a new genesis file from admin key files and validator data directories.
    New(GenesisNew),
}

#[derive(Args)]
pub(crate) struct GenesisNew {
    #[arg(long)]
    pub(crate) chain_id: String,
    /// Admin key file; repeat for each admin.
    #[arg(long = "admin", required = true)]
    pub(crate) admins: Vec<PathBuf>,
    /// How many admins must sign an admin transaction.
    #[arg(long, default_value_t = 1)]
    pub(crate) admin_threshold: u16,
    /// A validator's data directory (made by `meshward init`); repeat for each validator.
    #[arg(long = "validator", required = true)]
    pub(crate) validators: Vec<PathBuf>,
    #[arg(long)]
    pub(crate) out: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum StoreCmd {
    /// Replay the whole chain in a data directory's store and check every block.
    Verify {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write a synthetic chain (enrolled devices, anchors, certified blocks) for tests,
    /// benchmarks and audits, with its genesis.json beside the store; resumes the chain if the
    /// directory already holds one.
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
    /// Replay a format-1 store (an older release's) into the current format, checking every
    /// block again; the old file is kept as meshward.redb.v1. Stop the node first.
    Migrate {
        #[arg(long)]
        dir: PathBuf,
    },
    /// List the anchors in a store: height, index in the block, commitment, sender, sequence
    /// number and envelope count, in chain order.
    Anchors {
        #[arg(long)]
        dir: PathBuf,
        /// List at most this many (the first ones).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Extract the proof of an anchor, or of any transaction (--tx), from a store, for
    /// `meshward verify`.
    Proof {
        #[arg(long)]
        dir: PathBuf,
        /// The anchor's commitment, lower-case hex.
        #[arg(long, required_unless_present = "tx", conflicts_with = "tx")]
        commitment: Option<String>,
        /// A transaction id instead, lower-case hex.
        #[arg(long)]
        tx: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

/// `--byzantine N:MODE`.
#[cfg(feature = "byzantine")]
fn parse_byzantine(s: &str) -> Result<(usize, String), String> {
    let (n, mode) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not N:MODE, e.g. 3:equivocate"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{n:?} in {s:?} is not a node index"))?;
    let mode: meshward_node::ByzantineMode = mode.parse()?;
    Ok((n, mode.name().to_owned()))
}

//! How a node runs: [`NodeConfig`], from defaults, the data dir's `config.toml` and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meshward_net::Multiaddr;
use serde::Deserialize;

/// The node's configuration file inside its data dir.
pub const CONFIG_FILE: &str = "config.toml";

/// Default API address: loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:7700";
/// Default mesh address.
pub const DEFAULT_P2P: &str = "/ip4/0.0.0.0/tcp/7800";

/// How a node runs. [`NodeConfig::for_dir`] reads `config.toml`; command-line flags override.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data dir (`meshward init`).
    pub dir: PathBuf,
    /// The genesis file.
    pub genesis: PathBuf,
    /// HTTP API address.
    pub api: SocketAddr,
    /// Mesh listen address (TCP). Consensus listens on the next port of the same address
    /// unless `consensus` says otherwise.
    pub p2p: Multiaddr,
    /// Consensus listen address, if not the mesh port + 1.
    pub consensus: Option<Multiaddr>,
    /// Mesh addresses of other nodes. Their consensus address is taken to be the next port.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN by mDNS.
    pub mdns: bool,
    /// How long an idle chain waits before a heartbeat block (0: never).
    pub idle_block_interval_ms: u64,
    /// Under light load, how long after the oldest pending transaction the next height starts.
    pub block_batch_ms: u64,
    /// Overrides consensus's propose timeout.
    pub propose_timeout_ms: Option<u64>,
    /// Capacity of consensus's event channel. Nothing that must not be missed travels on it
    /// (the follower reads committed blocks from the store), so a tiny value only makes the
    /// event loop lag; tests set it to show exactly that.
    pub consensus_event_capacity: usize,
    /// Fault injection, for tests: the event loop pauses this long after each consensus event,
    /// as a gateway whose loop is starved or stuck would. 0 (the default) is off. With a small
    /// `consensus_event_capacity` it makes the loop lose events for certain.
    pub fault_slow_event_loop_ms: u64,
    /// An admin key file this node may sign admin transactions with, for the console's
    /// token-authenticated actions (revoke a device, issue a ticket). Only for a fleet whose
    /// admin threshold is 1, and only on a gateway the admins trust with their key.
    pub admin_key: Option<PathBuf>,
    /// The API server's connection limits and read timeouts.
    pub api_limits: crate::api::serve::ServeLimits,
    /// Peers admitted to the mesh besides the fleet's validators, admins and active devices
    /// (a gateway that does not validate, a monitoring peer): `observers = ["12D3KooW…"]`.
    pub observers: Vec<meshward_core::PublicKey>,
    /// A misbehaving validator, for the adversarial tests (`--byzantine MODE`; feature
    /// `byzantine` only).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<meshward_consensus::byzantine::ByzantineMode>,
    /// Where the MQTT front door listens (`mqtt = "127.0.0.1:1883"` in config.toml, `--mqtt` on
    /// `node run`); `None`: no MQTT listener.
    pub mqtt: Option<SocketAddr>,
    /// PEM certificate chain for TLS on the MQTT port (`mqtt_tls_cert`, `--mqtt-tls-cert`).
    pub mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate (`mqtt_tls_key`, `--mqtt-tls-key`).
    pub mqtt_tls_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    api: Option<String>,
    p2p: Option<String>,
    consensus: Option<String>,
    mdns: Option<bool>,
    idle_block_interval_ms: Option<u64>,
    block_batch_ms: Option<u64>,
    propose_timeout_ms: Option<u64>,
    consensus_event_capacity: Option<usize>,
    fault_slow_event_loop_ms: Option<u64>,
    admin_key: Option<PathBuf>,
    api_max_connections: Option<usize>,
    api_max_connections_per_address: Option<usize>,
    api_header_read_timeout_ms: Option<u64>,
    api_body_read_timeout_ms: Option<u64>,
    observers: Option<Vec<String>>,
    mqtt: Option<String>,
    mqtt_tls_cert: Option<PathBuf>,
    mqtt_tls_key: Option<PathBuf>,
}

impl NodeConfig {
    /// Defaults, without reading any file.
    pub fn for_dir(dir: PathBuf, genesis: PathBuf) -> Self {
        NodeConfig {
            dir,
            genesis,
            api: DEFAULT_API.parse().expect("the default API address parses"),
            p2p: DEFAULT_P2P
                .parse()
                .expect("the default mesh address parses"),
            consensus: None,
            bootstrap: Vec::new(),
            mdns: true,
            idle_block_interval_ms: meshward_consensus::config::DEFAULT_IDLE_BLOCK_INTERVAL_MS,
            block_batch_ms: meshward_consensus::config::DEFAULT_BLOCK_BATCH_MS,
            propose_timeout_ms: None,
            consensus_event_capacity: meshward_consensus::config::DEFAULT_EVENT_CAPACITY,
            fault_slow_event_loop_ms: 0,
            admin_key: None,
            api_limits: crate::api::serve::ServeLimits::default(),
            observers: Vec::new(),
            #[cfg(feature = "byzantine")]
            byzantine: None,
            mqtt: None,
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
        }
    }

    /// Defaults overridden by the data dir's `config.toml`, if there is one.
    pub fn load(dir: PathBuf, genesis: PathBuf) -> Result<Self> {
        let mut c = NodeConfig::for_dir(dir, genesis);
        let path = c.dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(c),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let f: ConfigFile =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if let Some(a) = f.api {
            c.api = a
                .parse()
                .with_context(|| format!("{}: api {a:?} is not an ip:port", path.display()))?;
        }
        if let Some(p) = f.p2p {
            c.p2p = p
                .parse()
                .with_context(|| format!("{}: p2p {p:?} is not a multiaddr", path.display()))?;
        }
        if let Some(p) = f.consensus {
            c.consensus = Some(p.parse().with_context(|| {
                format!("{}: consensus {p:?} is not a multiaddr", path.display())
            })?);
        }
        if let Some(a) = f.mqtt {
            c.mqtt =
                Some(a.parse().with_context(|| {
                    format!("{}: mqtt {a:?} is not an ip:port", path.display())
                })?);
        }
        c.mqtt_tls_cert = f.mqtt_tls_cert.or(c.mqtt_tls_cert);
        c.mqtt_tls_key = f.mqtt_tls_key.or(c.mqtt_tls_key);
        if let Some(m) = f.mdns {
            c.mdns = m;
        }
        if let Some(i) = f.idle_block_interval_ms {
            c.idle_block_interval_ms = i;
        }
        if let Some(b) = f.block_batch_ms {
            c.block_batch_ms = b;
        }
        c.propose_timeout_ms = f.propose_timeout_ms.or(c.propose_timeout_ms);
        if let Some(n) = f.consensus_event_capacity {
            if n == 0 {
                bail!(
                    "{}: consensus_event_capacity must be at least 1",
                    path.display()
                );
            }
            c.consensus_event_capacity = n;
        }
        if let Some(ms) = f.fault_slow_event_loop_ms {
            c.fault_slow_event_loop_ms = ms;
        }
        for o in f.observers.unwrap_or_default() {
            let k = meshward_core::PublicKey::from_peer_id(&o)
                .with_context(|| format!("{}: observer {o:?} is not a peer id", path.display()))?;
            c.observers.push(k);
        }
        for (key, value, field) in [
            (
                "api_max_connections",
                f.api_max_connections,
                &mut c.api_limits.max_connections,
            ),
            (
                "api_max_connections_per_address",
                f.api_max_connections_per_address,
                &mut c.api_limits.max_per_address,
            ),
        ] {
            if let Some(n) = value {
                if n == 0 {
                    bail!("{}: {key} must be at least 1", path.display());
                }
                *field = n;
            }
        }
        for (key, value, field) in [
            (
                "api_header_read_timeout_ms",
                f.api_header_read_timeout_ms,
                &mut c.api_limits.header_read_timeout,
            ),
            (
                "api_body_read_timeout_ms",
                f.api_body_read_timeout_ms,
                &mut c.api_limits.body_read_timeout,
            ),
        ] {
            if let Some(ms) = value {
                if ms == 0 {
                    bail!("{}: {key} must be at least 1", path.display());
                }
                *field = std::time::Duration::from_millis(ms);
            }
        }
        if let Some(k) = f.admin_key {
            // Relative to the data dir, like every other path a node reads from it.
            c.admin_key = Some(if k.is_relative() { c.dir.join(k) } else { k });
        }
        Ok(c)
    }
}

/// The consensus address that goes with a mesh address: same host, next TCP port, no `/p2p`.
pub fn consensus_addr_for(mesh: &Multiaddr) -> Option<Multiaddr> {
    use multiaddr::Protocol;
    let mut out = Multiaddr::empty();
    let mut saw_tcp = false;
    for p in mesh.iter() {
        match p {
            Protocol::Tcp(port) => {
                out.push(Protocol::Tcp(port.checked_add(1)?));
                saw_tcp = true;
            }
            Protocol::P2p(_) => {}
            other => out.push(other),
        }
    }
    saw_tcp.then_some(out)
}

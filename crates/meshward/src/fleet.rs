//! Fleet commands: enrolling, revoking and listing devices, tickets, policy, and the device's
//! own commands (run, join, send, inbox, rotate, proof).
//!
//! The workflows live in the device SDK (`meshward_sdk::{admin, devicepub, inbox, rotate,
//! ticket}`); this module parses the commands' arguments, calls them and prints their results.
//! Signed transactions go to a gateway over the mesh (the SDK's client), so they need no API
//! token: their signatures authorise them. `--api URL` finds the gateway: its chain id and mesh
//! addresses come from `GET /v1/status` (`ClientConfig::from_api`). `--bootstrap ADDR` names
//! mesh addresses directly; both may be given and repeated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use meshward_api::client::ApiClient;
use meshward_api::types::DeviceState;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::GroupName;
use meshward_sdk::admin::{self, AdminError};
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use meshward_sdk::device::{Delivery, Device, Received};
use meshward_sdk::devicepub::{self, DevicePub};
use meshward_sdk::dirstate::StateDir;
use meshward_sdk::group::parse_groups;
use meshward_sdk::keyfile::{self, KeyKind};
use meshward_sdk::ticket::{self, Ticket};
use meshward_sdk::{inbox as mailbox, rotate};
use serde_json::{json, Value};

use crate::Output;

/// Where the CLI finds gateways.
pub struct Gateways {
    pub api: Option<String>,
    pub bootstrap: Vec<String>,
}

impl Gateways {
    /// The client configuration: the API's chain id and mesh addresses (a blocking HTTP call),
    /// then every `--bootstrap` address.
    pub(crate) fn config(&self) -> Result<ClientConfig> {
        let mut cfg = match &self.api {
            Some(api) => ClientConfig::from_api(api)?,
            None => ClientConfig::new(None, Vec::new()),
        };
        for b in &self.bootstrap {
            cfg.gateways.push(
                b.parse()
                    .with_context(|| format!("--bootstrap {b} is not a multiaddr"))?,
            );
        }
        if cfg.gateways.is_empty() {
            bail!("no gateway given: pass --api URL or --bootstrap ADDR");
        }
        Ok(cfg)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn load_admins(files: &[PathBuf]) -> Result<Vec<Keypair>> {
    if files.is_empty() {
        bail!("at least one --admin-key is needed");
    }
    Ok(admin::load_admins(files)?)
}

/// The SDK's admin errors, with the CLI's flag named where the SDK speaks of "the first admin
/// key".
pub(crate) fn admin_error(e: AdminError) -> anyhow::Error {
    match e {
        AdminError::NotAnAdmin { source } => anyhow::Error::new(source).context(
            "the first --admin-key is not an admin of this fleet (no account on the ledger)",
        ),
        e => e.into(),
    }
}

fn parse_device(id: &str) -> Result<PublicKey> {
    PublicKey::from_peer_id(id).map_err(|e| anyhow!("{id} is not a device id: {e}"))
}

/// `--group` values, or the group "default" when none is given.
fn groups_or_default(groups: &[String]) -> Result<Vec<GroupName>> {
    let mut groups = parse_groups(groups)?;
    if groups.is_empty() {
        groups.push(GroupName::new("default").expect("a valid literal"));
    }
    Ok(groups)
}

pub fn device_keygen(out: &Path, account: Option<&str>) -> Result<Output> {
    let kp = match account {
        None => keyfile::generate(out, KeyKind::Device)?,
        Some(a) => {
            let account = parse_device(a)?;
            let kp = Keypair::generate(&mut rand::rngs::OsRng);
            keyfile::write(out, KeyKind::Device, &kp, Some(&account))?;
            kp
        }
    };
    let id = account.map_or_else(|| kp.id().peer_id(), str::to_string);
    Ok(Output {
        text: format!(
            "device key written to {}\ndevice_id: {id}\nsign_key: {}\nenc_key: {}",
            out.display(),
            kp.id(),
            kp.enc_key()
        ),
        json: json!({
            "device_id": id,
            "sign_key": kp.id().peer_id(),
            "enc_key": kp.enc_key().to_string(),
        }),
    })
}

pub fn device_export(key: &Path, chain_id: &str, out: &Path) -> Result<Output> {
    let (_, kp) = keyfile::load_device(key)?;
    let p = DevicePub::new(chain_id, &kp);
    p.write(out)?;
    Ok(Output {
        text: format!(
            "public enrollment data of {} written to {}",
            p.device_id,
            out.display()
        ),
        json: json!({ "device_id": p.device_id, "file": out }),
    })
}

pub struct EnrollArgs {
    pub gw: Gateways,
    pub admin_keys: Vec<PathBuf>,
    pub device_pub: Option<PathBuf>,
    pub device_key: Option<PathBuf>,
    pub groups: Vec<String>,
}

pub fn device_enroll(a: EnrollArgs) -> Result<Output> {
    let admins = load_admins(&a.admin_keys)?;
    let groups = groups_or_default(&a.groups)?;
    let cfg = a.gw.config()?;
    runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let chain = client.chain_id().to_string();
        let enroll = match (&a.device_pub, &a.device_key) {
            (Some(p), None) => devicepub::read_enroll(p, &chain, groups.clone())?,
            (None, Some(k)) => {
                let (_, kp) = keyfile::load_device(k)?;
                devicepub::enroll_with_keys(&chain, &kp, groups.clone())
            }
            _ => bail!("give exactly one of --device-pub FILE or --device-key FILE"),
        };
        let device = enroll.device;
        let done = admin::enroll(&client, &admins, enroll)
            .await
            .map_err(admin_error)?;
        client.shutdown().await;
        Ok(Output {
            text: format!("enrolled {device} at height {}", done.height),
            json: json!({ "device_id": device.peer_id(), "height": done.height, "tx": done.tx.to_hex(),
                          "groups": groups.iter().map(|g| g.as_str()).collect::<Vec<_>>() }),
        })
    })
}

pub fn ticket_new(
    gw: Gateways,
    admin_keys: &[PathBuf],
    groups: &[String],
    ttl: &str,
) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let ttl_ms = ticket::parse_ttl(ttl).map_err(|e| anyhow!("--ttl {e}"))?;
    let groups = groups_or_default(groups)?;
    let cfg = gw.config()?;
    runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let created = admin::create_ticket(&client, &admins, groups, ttl_ms)
            .await
            .map_err(admin_error)?;
        client.shutdown().await;
        let ticket = created.ticket.to_string();
        Ok(Output {
            text: ticket.clone(),
            json: json!({ "ticket": ticket, "expires_ms": created.expires_ms, "height": created.height }),
        })
    })
}

pub fn device_join(gw: Gateways, ticket: &str, key: &Path) -> Result<Output> {
    let ticket = Ticket::parse(ticket)?;
    let (account, kp) = keyfile::load_device(key)?;
    if account != kp.id() {
        bail!(
            "{} belongs to an enrolled device that rotated its keys",
            key.display()
        );
    }
    // A gateway's mesh admits only enrolled devices: the enrollment goes through its API.
    let Some(api) = &gw.api else {
        bail!("joining needs --api URL: gateways admit only enrolled devices to their mesh, so a new device enrolls through a gateway's API");
    };
    let joined = ticket::join(&ApiClient::new(api)?, &account, &kp, &ticket)?;
    Ok(Output {
        text: format!("joined as {} at height {}", kp.id(), joined.height),
        json: json!({ "device_id": kp.id().peer_id(), "height": joined.height }),
    })
}

pub fn device_revoke(
    gw: Gateways,
    admin_keys: &[PathBuf],
    device: &str,
    reason: &str,
) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let dev = parse_device(device)?;
    let cfg = gw.config()?;
    runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let done = admin::revoke(&client, &admins, dev, reason)
            .await
            .map_err(admin_error)?;
        client.shutdown().await;
        Ok(Output {
            text: format!("revoked {dev} at height {}", done.height),
            json: json!({ "device_id": dev.peer_id(), "height": done.height }),
        })
    })
}

pub fn device_reinstate(
    gw: Gateways,
    admin_keys: &[PathBuf],
    device_pub: &Path,
    device: &str,
) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let dev = parse_device(device)?;
    let cfg = gw.config()?;
    runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let new = devicepub::read_enroll(device_pub, client.chain_id(), Vec::new())?;
        let done = admin::reinstate(&client, &admins, dev, &new)
            .await
            .map_err(admin_error)?;
        client.shutdown().await;
        Ok(Output {
            text: format!(
                "reinstated {dev} under the key {} at height {}",
                new.device, done.height
            ),
            json: json!({
                "device_id": dev.peer_id(),
                "sign_key": new.device.peer_id(),
                "height": done.height,
            }),
        })
    })
}

pub fn policy_set(gw: Gateways, admin_keys: &[PathBuf], allow: &[String]) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let mut pairs = Vec::new();
    for a in allow {
        let (f, t) = a
            .split_once(':')
            .ok_or_else(|| anyhow!("--allow {a}: expected GROUP_A:GROUP_B"))?;
        let g = parse_groups(&[f, t])?;
        pairs.push((g[0].clone(), g[1].clone()));
    }
    let cfg = gw.config()?;
    runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let (pairs, done) = admin::set_policy(&client, &admins, pairs)
            .await
            .map_err(admin_error)?;
        client.shutdown().await;
        let list: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}:{b}")).collect();
        Ok(Output {
            text: format!("policy set at height {}: {}", done.height, list.join(" ")),
            json: json!({ "allow": list, "height": done.height }),
        })
    })
}

pub fn device_list(api: &str) -> Result<Output> {
    let list = ApiClient::new(api)?.devices(None, None)?;
    let lines: Vec<String> = list
        .devices
        .iter()
        .map(|d| {
            let status = match d.status {
                DeviceState::Active => "active",
                DeviceState::Revoked => "revoked",
                DeviceState::Quarantined => "quarantined",
            };
            format!("{}  {status}  groups={}", d.id, d.groups.join(","))
        })
        .collect();
    Ok(Output {
        text: if lines.is_empty() {
            "no devices enrolled".into()
        } else {
            lines.join("\n")
        },
        json: serde_json::to_value(&list)?,
    })
}

/// The device's state directory: `--dir`, or `<key file>.d` beside the key file.
pub(crate) fn state_dir(key: &Path, dir: Option<&Path>) -> Result<StateDir> {
    let d = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let mut p = key.as_os_str().to_owned();
            p.push(".d");
            PathBuf::from(p)
        }
    };
    Ok(StateDir::open(d)?)
}

/// What a device needs to start: its identity, how it reaches gateways, its state directory.
struct DeviceSetup {
    identity: DeviceIdentity,
    config: ClientConfig,
    state: StateDir,
}

/// Reads the device's key file, finds its gateways (a blocking HTTP call with `--api`) and opens
/// its state directory.
fn device_setup(
    gw: &Gateways,
    key: &Path,
    dir: Option<&Path>,
    listen: &[String],
    mdns: bool,
) -> Result<DeviceSetup> {
    let (account, kp) = keyfile::load_device(key)?;
    let mut config = gw.config()?;
    if !listen.is_empty() {
        config.listen = listen
            .iter()
            .map(|l| {
                l.parse()
                    .with_context(|| format!("--listen {l} is not a multiaddr"))
            })
            .collect::<Result<_>>()?;
    }
    config.mdns = mdns;
    Ok(DeviceSetup {
        identity: DeviceIdentity { account, keys: kp },
        config,
        state: state_dir(key, dir)?,
    })
}

async fn start_device(s: DeviceSetup) -> Result<Device> {
    Ok(Device::start(s.identity, s.config, s.state).await?)
}

fn received_json(r: &Received) -> Value {
    let mut v = json!({
        "from": r.from.peer_id(),
        "commitment": r.commitment.to_hex(),
        "delivery": r.delivery.as_str(),
    });
    match std::str::from_utf8(&r.payload) {
        Ok(t) => v["text"] = json!(t),
        // Standard base64 with padding (RFC 4648), for binary payloads in JSON lines.
        Err(_) => {
            v["payload_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&r.payload))
        }
    }
    v
}

pub struct RunArgs {
    pub gw: Gateways,
    pub key: PathBuf,
    pub dir: Option<PathBuf>,
    pub listen: Vec<String>,
    pub mdns: bool,
    pub poll_ms: u64,
}

/// `meshward device run`: prints each received message as one JSON line until SIGINT/SIGTERM.
pub fn device_run(a: RunArgs) -> Result<Output> {
    let setup = device_setup(&a.gw, &a.key, a.dir.as_deref(), &a.listen, a.mdns)?;
    runtime()?.block_on(async {
        let dev = start_device(setup).await?;
        let addrs = dev.client().net().listen_addrs().await;
        eprintln!(
            "device {} listening on {}",
            dev.client().identity().account,
            addrs
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Received>(256);
        let printer = tokio::spawn(async move {
            use std::io::Write as _;
            while let Some(r) = rx.recv().await {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", received_json(&r));
                let _ = out.flush();
            }
        });
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        dev.run_agent(Duration::from_millis(a.poll_ms), tx, stop)
            .await?;
        let _ = printer.await;
        dev.shutdown().await;
        Ok(Output {
            text: String::new(),
            json: Value::Null,
        })
    })
}

pub struct SendArgs {
    pub gw: Gateways,
    pub mdns: bool,
    pub key: PathBuf,
    pub dir: Option<PathBuf>,
    pub to: String,
    pub payload: Vec<u8>,
    pub session: bool,
    pub wait_final: bool,
    pub timeout_s: u64,
    pub keep: Option<PathBuf>,
}

pub fn send(a: SendArgs) -> Result<Output> {
    if a.to.starts_with("group:") {
        bail!(
            "group messages are not in the CLI yet: send to each member's device id (see docs/ARCHITECTURE.md, known limits)"
        );
    }
    let to = parse_device(&a.to)?;
    let listen: Vec<String> = if a.mdns {
        vec!["/ip4/0.0.0.0/tcp/0".into()]
    } else {
        Vec::new()
    };
    let setup = device_setup(&a.gw, &a.key, a.dir.as_deref(), &listen, a.mdns)?;
    runtime()?.block_on(async {
        let dev = start_device(setup).await?;
        let wait = a.wait_final.then(|| Duration::from_secs(a.timeout_s));
        let result = dev.send(&to, &[&a.payload], a.session, wait).await;
        dev.shutdown().await;
        let r = result.map_err(|e| anyhow!("send failed [{}]: {e}", e.code()))?;
        let mut j = json!({
            "commitment": r.commitment.to_hex(),
            "delivery": r.delivery.as_str(),
            "anchor_tx": r.anchor_tx.to_hex(),
        });
        if let Some(h) = r.height {
            j["height"] = json!(h);
        }
        if r.delivery == Delivery::Mailbox {
            j["replicas"] = json!(r.replicas);
        }
        if let Some(dir) = &a.keep {
            j["kept"] = json!(keep_envelopes(dir, &r.commitment, &r.envelopes)?);
        }
        Ok(Output {
            text: format!(
                "sent {} ({}{})",
                r.commitment,
                r.delivery.as_str(),
                r.height
                    .map(|h| format!(", final at height {h}"))
                    .unwrap_or_default()
            ),
            json: j,
        })
    })
}

/// `meshward inbox`: fetches the mailbox over the HTTP API with a signed challenge, opens
/// each envelope locally and acknowledges what it fetched.
pub fn inbox(api: &str, key: &Path, dir: Option<&Path>) -> Result<Output> {
    let gw = Gateways {
        api: Some(api.to_string()),
        bootstrap: Vec::new(),
    };
    let setup = device_setup(&gw, key, dir, &[], false)?;
    let api = ApiClient::new(api)?;
    let received = runtime()?.block_on(async {
        let dev = start_device(setup).await?;
        let received = mailbox::receive(&api, &dev).await;
        dev.shutdown().await;
        anyhow::Ok(received?)
    })?;
    let messages: Vec<Value> = received.messages.iter().map(received_json).collect();
    let text = messages
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Output {
        text: if text.is_empty() {
            "inbox is empty".into()
        } else {
            text
        },
        json: json!({ "messages": messages }),
    })
}

pub fn device_rotate(gw: Gateways, key: &Path) -> Result<Output> {
    // The key file first, as before any gateway is asked: a wrong path is the likelier mistake.
    keyfile::load_device(key)?;
    let cfg = gw.config()?;
    let r = runtime()?.block_on(rotate::rotate(key, cfg))?;
    Ok(Output {
        text: format!(
            "rotated keys of {} at height {}; new signing key {}",
            r.account,
            r.height,
            r.new_keys.id()
        ),
        json: json!({ "device_id": r.account.peer_id(), "new_sign_key": r.new_keys.id().peer_id(), "height": r.height }),
    })
}

/// Writes `<commitment>.env` for each envelope and `<anchor>.batch` (their commitments, one
/// hex line each, in the anchor's order) into `dir`; returns the envelope files written.
fn keep_envelopes(
    dir: &Path,
    anchor: &meshward_core::Hash,
    envs: &[meshward_core::envelope::Envelope],
) -> Result<Vec<PathBuf>> {
    use meshward_core::codec::Encode as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut batch = String::new();
    let mut files = Vec::with_capacity(envs.len());
    for env in envs {
        let c = env.commitment().to_hex();
        let path = dir.join(format!("{c}.env"));
        std::fs::write(&path, env.to_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        batch.push_str(&c);
        batch.push('\n');
        files.push(path);
    }
    let path = dir.join(format!("{}.batch", anchor.to_hex()));
    std::fs::write(&path, batch).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(files)
}

/// The proof file `text` (an anchor's) extended with the inclusion of the envelope in
/// `env_path` among the commitments listed in `batch_path` (or among itself alone).
fn with_envelope(text: &str, env_path: &Path, batch_path: Option<&Path>) -> Result<String> {
    use meshward_core::codec::Decode as _;
    use meshward_core::envelope::Envelope;
    use meshward_core::light::{EnvelopeInclusion, ProofFile};
    let file: ProofFile = serde_json::from_str(text).context("the gateway's proof file")?;
    let proof = file
        .tx_proof()
        .context("the gateway's proof does not decode")?;
    let raw = std::fs::read(env_path)
        .with_context(|| format!("cannot read envelope {}", env_path.display()))?;
    let env = Envelope::from_bytes(&raw)
        .with_context(|| format!("{} is not an envelope", env_path.display()))?;
    let batch = match batch_path {
        None => vec![env.commitment()],
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read batch {}", p.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                meshward_core::Hash::from_hex(l.trim())
                    .with_context(|| format!("{}: {l:?} is not a hex commitment", p.display()))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let inclusion = EnvelopeInclusion::build(env, &batch).with_context(|| {
        format!(
            "the envelope {} is not in the batch given",
            env_path.display()
        )
    })?;
    Ok(ProofFile::with_envelope(&file.chain_id, &proof, &inclusion).to_json() + "\n")
}

pub fn proof(
    api: &str,
    target: crate::chain::ProofTarget,
    out: &Path,
    envelope: Option<(&Path, Option<&Path>)>,
) -> Result<Output> {
    let client = ApiClient::new(api)?;
    let text = match target {
        crate::chain::ProofTarget::Commitment(c) => client.anchor_proof(&c)?,
        crate::chain::ProofTarget::Tx(t) => client.tx_proof(&t)?,
    };
    let text = match envelope {
        Some((env, batch)) => with_envelope(&text, env, batch)?,
        None => text,
    };
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Output {
        text: format!("proof of {target} written to {}", out.display()),
        json: json!({ "target": target.to_string(), "file": out }),
    })
}

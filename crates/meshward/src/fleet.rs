//! Fleet commands: enrolling, revoking and listing devices, tickets, policy, and the device's
//! own commands (run, join, send, inbox, rotate, proof).
//!
//! Signed transactions go to a gateway over the mesh (the device SDK's client), so they need no
//! API token: their signatures authorise them. `--api URL` finds the gateway: the CLI reads the
//! chain id and the gateway's mesh addresses from `GET /v1/status`. `--bootstrap ADDR` names
//! mesh addresses directly; both may be given and repeated.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use meshward_core::codec::Decode;
use meshward_core::envelope::Envelope;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::{enroll_body, pop_message, ticket_hash, GroupName, Tx, TxBody};
use meshward_core::{auth, hex};
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use meshward_sdk::device::{Delivery, Device, Received};
use meshward_sdk::dirstate::StateDir;
use meshward_sdk::keyfile::{self, KeyKind};
use serde_json::{json, Value};

use crate::http;
use crate::Output;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CLI finds gateways.
pub struct Gateways {
    pub api: Option<String>,
    pub bootstrap: Vec<String>,
}

impl Gateways {
    /// The mesh addresses and, when an API was given, the chain id.
    fn resolve(&self) -> Result<(Vec<meshward_net::Multiaddr>, Option<String>)> {
        let mut addrs = Vec::new();
        let mut chain = None;
        if let Some(api) = &self.api {
            let st = http::get_json(api, "/v1/status", HTTP_TIMEOUT)
                .with_context(|| format!("cannot reach the gateway API at {api}"))?;
            chain = st["chain_id"].as_str().map(str::to_string);
            for a in st["mesh_addrs"].as_array().into_iter().flatten() {
                if let Some(a) = a.as_str().and_then(|s| s.parse().ok()) {
                    addrs.push(a);
                }
            }
            if addrs.is_empty() {
                bail!("the gateway at {api} reports no mesh address");
            }
        }
        for b in &self.bootstrap {
            addrs.push(
                b.parse()
                    .with_context(|| format!("--bootstrap {b} is not a multiaddr"))?,
            );
        }
        if addrs.is_empty() {
            bail!("no gateway given: pass --api URL or --bootstrap ADDR");
        }
        Ok((addrs, chain))
    }

    async fn client(&self, identity: DeviceIdentity) -> Result<Client> {
        let (addrs, chain) = self.resolve()?;
        let cfg = ClientConfig::new(chain, addrs);
        Ok(Client::start(identity, cfg).await?)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load_admins(files: &[PathBuf]) -> Result<Vec<Keypair>> {
    if files.is_empty() {
        bail!("at least one --admin-key is needed");
    }
    files
        .iter()
        .map(|f| Ok(keyfile::load(f, KeyKind::Admin)?))
        .collect()
}

fn parse_device(id: &str) -> Result<PublicKey> {
    PublicKey::from_peer_id(id).map_err(|e| anyhow!("{id} is not a device id: {e}"))
}

fn parse_groups(groups: &[String]) -> Result<Vec<GroupName>> {
    groups
        .iter()
        .map(|g| {
            GroupName::new(g).ok_or_else(|| {
                anyhow!("group {g:?} is not a valid name (1-64 of a-z, 0-9, '-', '_', '.')")
            })
        })
        .collect()
}

/// Signs an admin transaction (first admin signs, the others co-sign), submits it and waits
/// until it is final. Returns the height.
async fn admin_tx(client: &Client, admins: &[Keypair], body: TxBody) -> Result<(Hash, u64)> {
    let signer = admins[0].id();
    let seq = client.next_seq(&signer).await.context(
        "the first --admin-key is not an admin of this fleet (no account on the ledger)",
    )?;
    let chain = client.chain_id().to_string();
    let mut tx = Tx::sign(&chain, signer, &admins[0].sign, seq, body);
    for a in &admins[1..] {
        tx.cosign(&chain, &a.sign);
    }
    let id = client.submit(&tx).await?;
    let height = client
        .wait_final(&id, std::time::Instant::now() + Duration::from_secs(60))
        .await?;
    Ok((id, height))
}

/// A device's public enrollment data, as `meshward device export` writes it.
#[derive(serde::Serialize, serde::Deserialize)]
struct DevicePub {
    chain_id: String,
    device_id: String,
    enc_key: String,
    pop_sign: String,
    pop_enc: String,
}

pub fn device_export(key: &Path, chain_id: &str, out: &Path) -> Result<Output> {
    let (_, kp) = keyfile::load_device(key)?;
    let msg = pop_message(chain_id, &kp.id(), &kp.enc_key());
    let p = DevicePub {
        chain_id: chain_id.into(),
        device_id: kp.id().peer_id(),
        enc_key: hex::encode(&kp.enc_key().0),
        pop_sign: hex::encode(&kp.sign.sign(&msg).0),
        pop_enc: hex::encode(&kp.enc.sign_possession(&msg).0),
    };
    std::fs::write(out, serde_json::to_string_pretty(&p)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Output {
        text: format!(
            "public enrollment data of {} written to {}",
            p.device_id,
            out.display()
        ),
        json: json!({ "device_id": p.device_id, "file": out }),
    })
}

fn read_pub(path: &Path, chain_id: &str, groups: Vec<GroupName>) -> Result<TxBody> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let p: DevicePub = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a device public file", path.display()))?;
    if p.chain_id != chain_id {
        bail!(
            "{} was exported for chain {:?}, but the gateway runs {chain_id:?}",
            path.display(),
            p.chain_id
        );
    }
    let arr = |s: &str, what: &str| -> Result<Vec<u8>> {
        hex::decode(s).ok_or_else(|| anyhow!("{}: {what} is not hex", path.display()))
    };
    let sig = |s: &str, what: &str| -> Result<meshward_core::Signature> {
        let b: [u8; 64] = arr(s, what)?
            .try_into()
            .map_err(|_| anyhow!("{}: {what} is not 64 bytes", path.display()))?;
        Ok(meshward_core::Signature(b))
    };
    let enc: [u8; 32] = arr(&p.enc_key, "enc_key")?
        .try_into()
        .map_err(|_| anyhow!("{}: enc_key is not 32 bytes", path.display()))?;
    Ok(TxBody::Enroll(meshward_core::tx::Enroll {
        device: parse_device(&p.device_id)?,
        enc_key: meshward_core::EncKey(enc),
        groups: meshward_core::tx::canonical_groups(groups),
        ticket: None,
        pop_sign: sig(&p.pop_sign, "pop_sign")?,
        pop_enc: sig(&p.pop_enc, "pop_enc")?,
    }))
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
    let mut groups = parse_groups(&a.groups)?;
    if groups.is_empty() {
        groups.push(GroupName::new("default").expect("a valid literal"));
    }
    runtime()?.block_on(async {
        let client = a.gw.client(DeviceIdentity::new(admins[0].clone())).await?;
        let chain = client.chain_id().to_string();
        let body = match (&a.device_pub, &a.device_key) {
            (Some(p), None) => read_pub(p, &chain, groups.clone())?,
            (None, Some(k)) => {
                let (_, kp) = keyfile::load_device(k)?;
                enroll_body(&chain, &kp, groups.clone(), None)
            }
            _ => bail!("give exactly one of --device-pub FILE or --device-key FILE"),
        };
        let TxBody::Enroll(e) = &body else {
            unreachable!("both arms build an Enroll")
        };
        let device = e.device;
        let (tx, height) = admin_tx(&client, &admins, body).await?;
        client.shutdown().await;
        Ok(Output {
            text: format!("enrolled {device} at height {height}"),
            json: json!({ "device_id": device.peer_id(), "height": height, "tx": tx.to_hex(),
                          "groups": groups.iter().map(|g| g.as_str()).collect::<Vec<_>>() }),
        })
    })
}

fn parse_ttl(s: &str) -> Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--ttl {s}: expected e.g. 30m, 1h or 7d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--ttl {s}: unit must be s, m, h or d"),
    };
    n.checked_mul(ms)
        .ok_or_else(|| anyhow!("--ttl {s} is too long"))
}

/// A ticket's text form: `mwt1:<chain id>:<secret hex>:<group,group>`.
fn format_ticket(chain: &str, secret: &[u8; 32], groups: &[GroupName]) -> String {
    let g: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
    format!("mwt1:{chain}:{}:{}", hex::encode(secret), g.join(","))
}

fn parse_ticket(t: &str) -> Result<(String, [u8; 32], Vec<GroupName>)> {
    let parts: Vec<&str> = t.trim().split(':').collect();
    let [tag, chain, secret, groups] = parts[..] else {
        bail!("the ticket is malformed (expected mwt1:<chain>:<secret>:<groups>)");
    };
    if tag != "mwt1" {
        bail!("the ticket is not a meshward ticket (it must start with mwt1:)");
    }
    let secret: [u8; 32] = hex::decode(secret)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow!("the ticket's secret is malformed"))?;
    let groups: Vec<String> = groups
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    Ok((chain.to_string(), secret, parse_groups(&groups)?))
}

pub fn ticket_new(
    gw: Gateways,
    admin_keys: &[PathBuf],
    groups: &[String],
    ttl: &str,
) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let ttl_ms = parse_ttl(ttl)?;
    let mut groups = parse_groups(groups)?;
    if groups.is_empty() {
        groups.push(GroupName::new("default").expect("a valid literal"));
    }
    let groups = meshward_core::tx::canonical_groups(groups);
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    runtime()?.block_on(async {
        let client = gw.client(DeviceIdentity::new(admins[0].clone())).await?;
        let expires_ms = now_ms() + ttl_ms;
        let body = TxBody::CreateTicket {
            ticket_hash: ticket_hash(&secret),
            expires_ms,
            groups: groups.clone(),
        };
        let (_, height) = admin_tx(&client, &admins, body).await?;
        let ticket = format_ticket(client.chain_id(), &secret, &groups);
        client.shutdown().await;
        Ok(Output {
            text: ticket.clone(),
            json: json!({ "ticket": ticket, "expires_ms": expires_ms, "height": height }),
        })
    })
}

pub fn device_join(gw: Gateways, ticket: &str, key: &Path) -> Result<Output> {
    let (chain, secret, groups) = parse_ticket(ticket)?;
    let (account, kp) = keyfile::load_device(key)?;
    if account != kp.id() {
        bail!(
            "{} belongs to an enrolled device that rotated its keys",
            key.display()
        );
    }
    runtime()?.block_on(async {
        let client = gw.client(DeviceIdentity::new(kp.clone())).await?;
        if client.chain_id() != chain {
            bail!(
                "the ticket is for chain {chain:?}, but the gateway runs {:?}",
                client.chain_id()
            );
        }
        let body = enroll_body(&chain, &kp, groups, Some(secret));
        let tx = Tx::sign(&chain, kp.id(), &kp.sign, 1, body);
        let id = client.submit(&tx).await?;
        let height = client
            .wait_final(&id, std::time::Instant::now() + Duration::from_secs(60))
            .await?;
        client.shutdown().await;
        Ok(Output {
            text: format!("joined as {} at height {height}", kp.id()),
            json: json!({ "device_id": kp.id().peer_id(), "height": height }),
        })
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
    runtime()?.block_on(async {
        let client = gw.client(DeviceIdentity::new(admins[0].clone())).await?;
        let body = TxBody::Revoke {
            device: dev,
            reason: reason.to_string(),
        };
        let (_, height) = admin_tx(&client, &admins, body).await?;
        client.shutdown().await;
        Ok(Output {
            text: format!("revoked {dev} at height {height}"),
            json: json!({ "device_id": dev.peer_id(), "height": height }),
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
        let g = parse_groups(&[f.to_string(), t.to_string()])?;
        pairs.push((g[0].clone(), g[1].clone()));
    }
    pairs.sort();
    pairs.dedup();
    runtime()?.block_on(async {
        let client = gw.client(DeviceIdentity::new(admins[0].clone())).await?;
        let body = TxBody::SetPolicy {
            allow: pairs.clone(),
        };
        let (_, height) = admin_tx(&client, &admins, body).await?;
        client.shutdown().await;
        let list: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}:{b}")).collect();
        Ok(Output {
            text: format!("policy set at height {height}: {}", list.join(" ")),
            json: json!({ "allow": list, "height": height }),
        })
    })
}

pub fn device_list(api: &str) -> Result<Output> {
    let v = http::get_json(api, "/v1/devices", HTTP_TIMEOUT)?;
    let mut lines = Vec::new();
    for d in v["devices"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{}  {}  groups={}",
            d["id"].as_str().unwrap_or("?"),
            d["status"].as_str().unwrap_or("?"),
            d["groups"]
                .as_array()
                .map(|g| g
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        ));
    }
    Ok(Output {
        text: if lines.is_empty() {
            "no devices enrolled".into()
        } else {
            lines.join("\n")
        },
        json: v,
    })
}

/// The device's state directory: `--dir`, or `<key file>.d` beside the key file.
fn state_dir(key: &Path, dir: Option<&Path>) -> Result<StateDir> {
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

async fn start_device(
    gw: &Gateways,
    key: &Path,
    dir: Option<&Path>,
    listen: &[String],
    mdns: bool,
) -> Result<Device> {
    let (account, kp) = keyfile::load_device(key)?;
    let (addrs, chain) = gw.resolve()?;
    let mut cfg = ClientConfig::new(chain, addrs);
    if !listen.is_empty() {
        cfg.listen = listen
            .iter()
            .map(|l| {
                l.parse()
                    .with_context(|| format!("--listen {l} is not a multiaddr"))
            })
            .collect::<Result<_>>()?;
    }
    cfg.mdns = mdns;
    let identity = DeviceIdentity { account, keys: kp };
    Ok(Device::start(identity, cfg, state_dir(key, dir)?).await?)
}

fn received_json(r: &Received) -> Value {
    let mut v = json!({
        "from": r.from.peer_id(),
        "commitment": r.commitment.to_hex(),
        "delivery": r.delivery.as_str(),
    });
    match std::str::from_utf8(&r.payload) {
        Ok(t) => v["text"] = json!(t),
        Err(_) => v["payload_b64"] = json!(base64_encode(&r.payload)),
    }
    v
}

/// Standard base64 with padding (RFC 4648), for binary payloads in JSON lines.
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    runtime()?.block_on(async {
        let dev = start_device(&a.gw, &a.key, a.dir.as_deref(), &a.listen, a.mdns).await?;
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
}

pub fn send(a: SendArgs) -> Result<Output> {
    if a.to.starts_with("group:") {
        bail!(
            "group messages are not in the CLI yet: send to each member's device id (see docs/ARCHITECTURE.md, known limits)"
        );
    }
    let to = parse_device(&a.to)?;
    runtime()?.block_on(async {
        let listen: Vec<String> = if a.mdns {
            vec!["/ip4/0.0.0.0/tcp/0".into()]
        } else {
            Vec::new()
        };
        let dev = start_device(&a.gw, &a.key, a.dir.as_deref(), &listen, a.mdns).await?;
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
/// each envelope locally and acknowledges what it kept.
pub fn inbox(api: &str, key: &Path, dir: Option<&Path>) -> Result<Output> {
    let (account, kp) = keyfile::load_device(key)?;
    let chain = http::get_json(api, "/v1/status", HTTP_TIMEOUT)?["chain_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the gateway's status has no chain id"))?
        .to_string();
    let signed = |action: &str, extra: Value| -> Result<Value> {
        let c = http::post_json(api, "/v1/challenge", &json!({}), HTTP_TIMEOUT)?;
        let nonce: [u8; 32] = c["nonce"]
            .as_str()
            .and_then(hex::decode)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| anyhow!("the gateway's challenge is malformed"))?;
        let sig = auth::sign_challenge(&kp.sign, &chain, &account, &nonce, action);
        let mut body = json!({
            "device": account.peer_id(),
            "nonce": hex::encode(&nonce),
            "signature": hex::encode(&sig.0),
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        http::post_json(api, &format!("/v1/{action}"), &body, HTTP_TIMEOUT)
    };
    let fetched = signed("mailbox/fetch", json!({ "after": 0 }))?;
    let list = fetched["envelopes"].as_array().cloned().unwrap_or_default();
    let rt = runtime()?;
    let mut messages = Vec::new();
    let mut last = 0u64;
    let dev = rt.block_on(start_device(
        &Gateways {
            api: Some(api.to_string()),
            bootstrap: Vec::new(),
        },
        key,
        dir,
        &[],
        false,
    ))?;
    for item in &list {
        let seq = item["seq"].as_u64().unwrap_or(0);
        last = last.max(seq);
        let Some(env) = item["envelope"]
            .as_str()
            .and_then(hex::decode)
            .and_then(|b| Envelope::from_bytes(&b).ok())
        else {
            continue;
        };
        match rt.block_on(dev.open(&env)) {
            Ok((sender, payload, commitment)) => messages.push(received_json(&Received {
                from: sender.id,
                commitment,
                payload,
                delivery: Delivery::Mailbox,
            })),
            Err(e) => tracing::warn!(error = %e, "mailbox envelope dropped"),
        }
    }
    rt.block_on(dev.shutdown());
    if last > 0 {
        signed("mailbox/ack", json!({ "up_to": last }))?;
    }
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
    let (account, old) = keyfile::load_device(key)?;
    let new = Keypair::generate(&mut rand::rngs::OsRng);
    let pending = {
        let mut p = key.as_os_str().to_owned();
        p.push(".new");
        PathBuf::from(p)
    };
    // The new key is on disk before the rotation is submitted, so it is never lost.
    keyfile::write(&pending, KeyKind::Device, &new, Some(&account))?;
    let height = runtime()?.block_on(async {
        let client = gw
            .client(DeviceIdentity {
                account,
                keys: old.clone(),
            })
            .await?;
        let seq = client.next_seq(&account).await?;
        let chain = client.chain_id().to_string();
        let body = meshward_core::tx::rotate_body(&chain, &account, seq, &new);
        let tx = Tx::sign(&chain, account, &old.sign, seq, body);
        let id = client.submit(&tx).await?;
        client.shutdown().await;
        // Once the rotation commits, gateways refuse the old key: wait as the new one.
        let client = gw
            .client(DeviceIdentity {
                account,
                keys: new.clone(),
            })
            .await?;
        let h = client
            .wait_final(&id, std::time::Instant::now() + Duration::from_secs(60))
            .await?;
        client.shutdown().await;
        anyhow::Ok(h)
    })?;
    let mut old_path = key.as_os_str().to_owned();
    old_path.push(".old");
    std::fs::rename(key, &old_path)
        .and_then(|_| std::fs::rename(&pending, key))
        .with_context(|| {
            format!(
                "rotation is final, but cannot move the new key into {}",
                key.display()
            )
        })?;
    Ok(Output {
        text: format!(
            "rotated keys of {account} at height {height}; new signing key {}",
            new.id()
        ),
        json: json!({ "device_id": account.peer_id(), "new_sign_key": new.id().peer_id(), "height": height }),
    })
}

pub fn proof(api: &str, commitment: &str, out: &Path) -> Result<Output> {
    let c = Hash::from_hex(commitment)
        .ok_or_else(|| anyhow!("{commitment} is not a 32-byte hex commitment"))?;
    let text = http::get_text(
        api,
        &format!("/v1/anchors/{}/proof", c.to_hex()),
        HTTP_TIMEOUT,
    )?;
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Output {
        text: format!("proof of {c} written to {}", out.display()),
        json: json!({ "commitment": c.to_hex(), "file": out }),
    })
}

//! `meshward mqtt sealed`: a device that keeps its own keys and reaches its gateway over MQTT
//! only (FORMATS.md, "MQTT sealed mode"), on the SDK's `sealed_client`. It seals and signs
//! here; the gateway routes what it is given and never sees a plaintext.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use meshward_api::client::ApiClient;
use meshward_core::envelope::{seal_oneshot, Receiver};
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{Request, Response, TxState};
use meshward_core::tx::Recipient;
use meshward_sdk::keyfile;
use meshward_sdk::sealed::LoginToken;
use meshward_sdk::sealed_client::SealedClient;
use rand::RngCore;
use serde_json::{json, Value};

use crate::fleet::{runtime, state_dir};
use crate::Output;

/// What `meshward mqtt sealed` does.
pub(crate) struct Args {
    pub(crate) api: String,
    pub(crate) key: PathBuf,
    /// (recipient id, text) to send.
    pub(crate) send: Option<(String, String)>,
    /// How long to receive.
    pub(crate) receive: Duration,
    /// Stop receiving after this many (0: no limit).
    pub(crate) count: usize,
    /// How long to wait for the anchor to be final.
    pub(crate) timeout: Duration,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The answer, or the gateway's refusal as an error.
fn expect<T>(what: &str, resp: Response, pick: impl FnOnce(Response) -> Option<T>) -> Result<T> {
    if let Response::Error { code, message } = &resp {
        bail!("{what} refused by the gateway: {code}: {message}");
    }
    let shown = format!("{resp:?}");
    pick(resp).ok_or_else(|| anyhow!("{what}: unexpected answer {shown}"))
}

pub(crate) fn run(a: &Args) -> Result<Output> {
    if a.send.is_none() && a.receive.is_zero() {
        bail!("nothing to do: give --to and --message, or --receive SECONDS, or both");
    }
    let status = ApiClient::new(&a.api)?
        .status()
        .context("asking the gateway for its status")?;
    let mqtt: std::net::SocketAddr = status
        .mqtt
        .as_deref()
        .with_context(|| format!("{} has no MQTT listener (node run --mqtt)", a.api))?
        .parse()
        .context("the gateway's MQTT address")?;
    let gateway = PublicKey::from_peer_id(&status.peer_id).context("the gateway's peer id")?;
    let (account, kp) = keyfile::load_device(&a.key)?;
    let state = state_dir(&a.key, None)?;
    let chain = status.chain_id.clone();
    runtime()?.block_on(async {
        let mut random = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let token = LoginToken::sign(
            &kp.sign,
            &chain,
            &account,
            &gateway,
            meshward_core::clock::now_ms(),
            random,
        );
        let mut c = SealedClient::connect(
            &mqtt.ip().to_string(),
            mqtt.port(),
            &account,
            token.to_text(),
            Duration::from_secs(15),
        )
        .await?;
        let mut out = json!({"device_id": account.peer_id(), "mqtt": mqtt.to_string()});
        let mut text = format!("logged in to {mqtt} as {} (sealed mode)", account.peer_id());
        if let Some((to, message)) = &a.send {
            let to = PublicKey::from_peer_id(to).context("--to is not a device id")?;
            let rec = expect(
                "lookup",
                c.request(&Request::Lookup(to)).await?,
                |r| match r {
                    Response::Device(d) => Some(d),
                    _ => None,
                },
            )?
            .with_context(|| format!("{} is not an enrolled device", to.peer_id()))?;
            if !rec.active {
                bail!("{} is revoked", to.peer_id());
            }
            let seq = expect(
                "next sequence number",
                c.request(&Request::NextSeq(account)).await?,
                |r| match r {
                    Response::NextSeq(s) => s,
                    _ => None,
                },
            )?;
            let first = state.reserve_envelope_seqs(&rec.sign_key, 1, now_us())?;
            let now = meshward_core::clock::now_ms();
            let env = seal_oneshot(
                &mut rand::rngs::OsRng,
                &kp,
                rec.sign_key,
                &rec.enc_key,
                first,
                now,
                message.as_bytes(),
            )?;
            let replicas = expect(
                "deposit",
                c.request(&Request::Deposit(env.clone())).await?,
                |r| match r {
                    Response::Stored { replicas } => Some(replicas),
                    _ => None,
                },
            )?;
            let tx = meshward_sdk::anchor::anchor_tx(
                &chain,
                account,
                &kp.sign,
                seq,
                Recipient::Device(rec.id),
                &[&env],
                now,
            )
            .context("the anchor does not fit in a transaction")?;
            expect(
                "anchor",
                c.request(&Request::SubmitTx(tx.clone())).await?,
                |r| match r {
                    Response::TxAccepted(id) => Some(id),
                    _ => None,
                },
            )?;
            let deadline = tokio::time::Instant::now() + a.timeout;
            let height = loop {
                let st = expect(
                    "anchor status",
                    c.request(&Request::TxStatus(tx.id())).await?,
                    |r| match r {
                        Response::TxStatus(s) => Some(s),
                        _ => None,
                    },
                )?;
                match st {
                    TxState::Committed { height } => break Some(height),
                    TxState::Rejected { reason } => bail!("the anchor was rejected: {reason}"),
                    _ if tokio::time::Instant::now() >= deadline => break None,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let commitment = env.commitment().to_hex();
            text.push_str(&format!(
                "\nsent to {}: commitment {commitment}, in {replicas} mailboxes, {}",
                rec.id.peer_id(),
                match height {
                    Some(h) => format!("anchor final at height {h}"),
                    None => "anchor not final yet".to_string(),
                }
            ));
            out["sent"] = json!({
                "to": rec.id.peer_id(),
                "commitment": commitment,
                "anchor_tx": tx.id().to_hex(),
                "replicas": replicas,
                "height": height,
            });
        }
        if !a.receive.is_zero() {
            let received = receive(&mut c, &kp, a.receive, a.count).await?;
            for r in &received {
                text.push_str(&format!(
                    "\nfrom {}: {}",
                    r["from"].as_str().unwrap_or("?"),
                    r["text"].as_str().unwrap_or("")
                ));
            }
            if received.is_empty() {
                text.push_str("\nnothing received");
            }
            out["received"] = Value::Array(received);
        }
        c.disconnect().await;
        Ok(Output { text, json: out })
    })
}

/// Opens and acknowledges the device's mail for `window`.
async fn receive(
    c: &mut SealedClient,
    kp: &meshward_core::ids::Keypair,
    window: Duration,
    count: usize,
) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + window;
    let mut rx = Receiver::new(kp);
    let mut out = Vec::new();
    while count == 0 || out.len() < count {
        let Some((number, env)) = c.next_mail(deadline).await? else {
            break;
        };
        let sender = expect(
            "sender lookup",
            c.request(&Request::Lookup(env.sender)).await?,
            |r| match r {
                Response::Device(d) => Some(d),
                _ => None,
            },
        )?;
        match sender.map(|s| (s.id, s.sign_key.verifying_key())) {
            Some((from, Ok(vk))) => match rx.open(&env, &vk) {
                Ok(o) => out.push(json!({
                    "from": from.peer_id(),
                    "text": String::from_utf8_lossy(&o.payload),
                    "commitment": env.commitment().to_hex(),
                    "mailbox": number,
                })),
                Err(e) => {
                    tracing::info!(mailbox = number, error = %e, "envelope not opened; dropped")
                }
            },
            _ => tracing::info!(mailbox = number, "envelope from an unknown sender; dropped"),
        }
        expect(
            "mailbox ack",
            c.request(&Request::AckMailbox { up_to: number }).await?,
            |r| match r {
                Response::Acked { removed } => Some(removed),
                _ => None,
            },
        )?;
    }
    Ok(out)
}

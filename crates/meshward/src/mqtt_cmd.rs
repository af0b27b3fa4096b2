//! `meshward mqtt add`: enroll a legacy MQTT device whose keys its custodian gateways hold.
//! `meshward mqtt sealed`: a device that keeps its own keys, over MQTT only (sealed mode).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use meshward_api::client::ApiClient;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_sdk::admin;
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use meshward_sdk::custody::{self, Grant, GRANT_VERSION, MAX_CUSTODIANS, MIN_CUSTODIANS};
use meshward_sdk::devicepub;
use serde_json::json;

use crate::fleet::{admin_error, load_admins, runtime};
use crate::Output;

#[derive(Subcommand)]
pub(crate) enum MqttCmd {
    /// Enroll a new MQTT device (k-of-n admins): its keys are generated here and sealed to its
    /// custodian gateways; prints its user name and password once.
    Add {
        /// A gateway's HTTP API; it is the first custodian and forwards the grant to the others.
        #[arg(long)]
        api: String,
        /// Admin key file; repeat until the fleet's threshold is met.
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        /// A group the device joins; repeat for several (default: `default`).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How many gateways hold the device's keys (2 to 8): the one at --api and the next
        /// validators by key.
        #[arg(long, default_value_t = 2)]
        custodians: usize,
    },
    /// Act as a device that keeps its own keys but speaks only MQTT (sealed mode): log in with
    /// a signed token, send one message sealed and anchored here, and/or receive what waits.
    Sealed {
        /// A gateway's HTTP API: its MQTT address, node key and chain id come from its status.
        #[arg(long)]
        api: String,
        /// The device's key file (`meshward device keygen`, then `device enroll`).
        #[arg(long)]
        key: PathBuf,
        /// Send to this device (its id).
        #[arg(long, requires = "message")]
        to: Option<String>,
        /// The text to send.
        #[arg(long, requires = "to")]
        message: Option<String>,
        /// Then receive, for this many seconds, what waits for the device, and acknowledge it.
        #[arg(long, default_value_t = 0)]
        receive: u64,
        /// Stop receiving after this many messages (0: at the end of --receive).
        #[arg(long, default_value_t = 0)]
        count: usize,
        /// How long to wait for the sent message's anchor to be final, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

pub(crate) fn run(c: MqttCmd) -> Result<Output> {
    match c {
        MqttCmd::Add {
            api,
            admin_keys,
            groups,
            custodians,
        } => add(&api, &admin_keys, &groups, custodians),
        MqttCmd::Sealed {
            api,
            key,
            to,
            message,
            receive,
            count,
            timeout,
        } => crate::sealed_cmd::run(&crate::sealed_cmd::Args {
            api,
            key,
            send: to.zip(message),
            receive: Duration::from_secs(receive),
            count,
            timeout: Duration::from_secs(timeout),
        }),
    }
}

/// The custodians: the gateway at the API first, then the other validators by key, `n` in all,
/// sorted by key as the grant wants them.
fn pick_custodians(first: PublicKey, validators: &[PublicKey], n: usize) -> Result<Vec<PublicKey>> {
    if !(MIN_CUSTODIANS..=MAX_CUSTODIANS).contains(&n) {
        bail!("--custodians must be {MIN_CUSTODIANS} to {MAX_CUSTODIANS}");
    }
    let mut out = vec![first];
    out.extend(validators.iter().filter(|v| **v != first).take(n - 1));
    if out.len() < n {
        bail!(
            "{n} custodians asked for, but the fleet has only {} gateways to choose from",
            out.len()
        );
    }
    out.sort();
    Ok(out)
}

fn add(api_url: &str, admin_keys: &[PathBuf], groups: &[String], n: usize) -> Result<Output> {
    let admins = load_admins(admin_keys)?;
    let groups = if groups.is_empty() {
        vec!["default".to_string()]
    } else {
        groups.to_vec()
    };
    let groups = meshward_sdk::group::parse_groups(&groups).map_err(|e| anyhow::anyhow!("{e}"))?;
    let api = ApiClient::new(api_url)?;
    let status = api.status().context("asking the gateway for its status")?;
    let first = PublicKey::from_peer_id(&status.peer_id).context("the gateway's peer id")?;
    let validators: Vec<PublicKey> = api
        .validators()
        .context("asking the gateway for the validators")?
        .validators
        .iter()
        .filter_map(|v| PublicKey::from_peer_id(&v.id).ok())
        .collect();
    let custodians = pick_custodians(first, &validators, n)?;
    let cfg = ClientConfig::from_api(api_url)?;
    let keys = Keypair::generate(&mut rand::rngs::OsRng);
    let device = keys.id();
    let chain = status.chain_id.clone();
    // Enroll first: a custodian keeps a grant only for an enrolled, active device.
    let height = runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let enroll = devicepub::enroll_with_keys(&chain, &keys, groups.clone());
        let done = admin::enroll(&client, &admins, enroll)
            .await
            .map_err(admin_error);
        client.shutdown().await;
        done.map(|d| d.height)
    })?;
    let password = meshward_mqtt::auth::generate_password();
    let mut rng = rand::rngs::OsRng;
    let sealed = custodians
        .iter()
        .map(|c| custody::seal_keys(&mut rng, &chain, &device, c, &keys))
        .collect::<Result<Vec<_>, _>>()?;
    let mut grant = Grant {
        version: GRANT_VERSION,
        chain_id: chain,
        device: device.peer_id(),
        custodians: custodians.iter().map(|c| c.peer_id()).collect(),
        password_hash: meshward_mqtt::auth::hash_password(&password),
        sealed,
        signatures: Vec::new(),
    };
    grant.sign(&admins)?;
    let kept = api
        .mqtt_custody(&grant)
        .context("handing the grant to the custodians")?;
    if kept.stored_by.len() < MIN_CUSTODIANS {
        let why: Vec<String> = kept
            .refused
            .iter()
            .map(|r| format!("{}: {} ({})", r.custodian, r.code, r.message))
            .collect();
        bail!(
            "device {} is enrolled, but only {} custodian(s) kept its keys: {}",
            device.peer_id(),
            kept.stored_by.len(),
            why.join("; ")
        );
    }
    let id = device.peer_id();
    let mqtt = status.mqtt.clone();
    let connect = match &mqtt {
        Some(a) => {
            format!("\nconnect to {a} (the MQTT port of {api_url}), or to another custodian's")
        }
        None => format!(
            "\n{api_url} has no MQTT listener (node run --mqtt): connect to another custodian's"
        ),
    };
    Ok(Output {
        text: format!(
            "enrolled MQTT device {id} at height {height}; custodians: {}\nusername: {id}\npassword: {password}\n(the password is shown once; only its argon2id hash is kept){connect}",
            kept.stored_by.join(", ")
        ),
        json: json!({
            "device_id": id,
            "username": id,
            "password": password,
            "height": height,
            "mqtt": mqtt,
            "custodians": kept.stored_by,
            "groups": groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        }),
    })
}

//! `meshward validator list|add|remove|set-power`: the validator set, and changes to it signed by
//! k-of-n admins.
//!
//! The set in force and who signs now come from a gateway's `GET /v1/validators`; the new set is
//! built and checked by `meshward_sdk::validators::plan` (which refuses a change that changes
//! nothing, removes the last validator, or would leave the signing validators without a quorum),
//! then signed like every admin transaction and sent over the mesh
//! (`meshward_sdk::validators::submit`). A validator is named by its peer id or by its node's
//! data dir (`meshward init`), whose node key gives its public key; the secret is never printed.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use meshward_api::client::ApiClient;
use meshward_core::ids::PublicKey;
use meshward_sdk::client::{Client, DeviceIdentity};
use meshward_sdk::keyfile::{self, KeyKind};
use meshward_sdk::validators::{self, Current, SetChange};
use serde_json::json;

use crate::fleet::{self, Gateways};
use crate::Output;

#[derive(Subcommand)]
pub(crate) enum ValidatorCmd {
    /// Show the validator set in force and the last height each validator signed.
    List {
        /// A gateway's HTTP API, e.g. http://127.0.0.1:7700
        #[arg(long)]
        api: String,
    },
    /// Add a gateway to the validator set (k-of-n admins). It votes from the height after the
    /// change; start it first (same genesis, peered with the others) so that it is synced.
    Add {
        #[command(flatten)]
        change: ChangeArgs,
        /// Its voting power.
        #[arg(long, default_value_t = validators::DEFAULT_POWER)]
        power: u64,
    },
    /// Remove a validator from the set (k-of-n admins). It stops voting from the height after
    /// the change, and keeps following the chain as a gateway.
    Remove {
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Give a validator another voting power (k-of-n admins).
    SetPower {
        #[command(flatten)]
        change: ChangeArgs,
        /// The new voting power (above 0).
        #[arg(long)]
        power: u64,
    },
}

/// What every change takes.
#[derive(Args)]
pub(crate) struct ChangeArgs {
    /// A gateway's HTTP API, e.g. http://127.0.0.1:7700: the set in force is read from it and
    /// the transaction goes to its mesh addresses.
    #[arg(long)]
    api: String,
    /// Further gateway mesh addresses to submit through; repeat for several.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// An admin key file; repeat until the genesis threshold is met (the first signs, the
    /// others co-sign).
    #[arg(long = "admin-key", required = true)]
    admin_keys: Vec<PathBuf>,
    /// Submit even if the validators signing now would not hold a quorum of the new set.
    #[arg(long)]
    force: bool,
    /// The validator: its node's data dir (its node key is read for the public key) or its
    /// peer id (12D3KooW…).
    validator: String,
}

/// The validator's key: from a node data dir's key file, or a peer id.
fn validator_key(arg: &str) -> Result<PublicKey> {
    let dir = Path::new(arg);
    if dir.is_dir() {
        let file = dir.join(meshward_node::NODE_KEY_FILE);
        let kp = keyfile::load(&file, KeyKind::Node).with_context(|| {
            format!(
                "cannot read the node key of {} (a node data dir made by meshward init holds {})",
                dir.display(),
                meshward_node::NODE_KEY_FILE
            )
        })?;
        return Ok(kp.id());
    }
    PublicKey::from_peer_id(arg)
        .map_err(|e| anyhow!("{arg} is neither a node data dir nor a peer id (12D3KooW…): {e}"))
}

pub(crate) fn run(cmd: ValidatorCmd) -> Result<Output> {
    // The action's JSON name (the subcommand's) and its past tense.
    let (args, change, (action, done_text)) = match cmd {
        ValidatorCmd::List { api } => return list(&api),
        ValidatorCmd::Add { change, power } => {
            let key = validator_key(&change.validator)?;
            (change, SetChange::Add { key, power }, ("add", "added"))
        }
        ValidatorCmd::Remove { change } => {
            let key = validator_key(&change.validator)?;
            (change, SetChange::Remove { key }, ("remove", "removed"))
        }
        ValidatorCmd::SetPower { change, power } => {
            let key = validator_key(&change.validator)?;
            (
                change,
                SetChange::SetPower { key, power },
                ("set-power", "set the power of"),
            )
        }
    };
    let admins = fleet::load_admins(&args.admin_keys)?;
    let api = ApiClient::new(&args.api)?;
    let list = api
        .validators()
        .with_context(|| format!("cannot read the validator set from {}", args.api))?;
    let current = Current::from_list(&list)?;
    let set = validators::plan(&current, &change, args.force)
        .context("validator-set change refused, nothing submitted")?;
    let cfg = Gateways {
        api: Some(args.api.clone()),
        bootstrap: args.bootstrap,
    }
    .config()?;
    let done = fleet::runtime()?.block_on(async {
        let client = Client::start(DeviceIdentity::new(admins[0].clone()), cfg).await?;
        let done = validators::submit(&client, &admins, set)
            .await
            .map_err(fleet::admin_error);
        client.shutdown().await;
        done
    })?;
    let (key, power) = match change {
        SetChange::Add { key, power } | SetChange::SetPower { key, power } => (key, Some(power)),
        SetChange::Remove { key } => (key, None),
    };
    let power_text = power.map_or_else(String::new, |p| format!(" (power {p})"));
    Ok(Output {
        text: format!(
            "{done_text} validator {key}{power_text} at height {}; the new set of {} validators \
             (total power {}) rules from height {}",
            done.height,
            done.set.validators.len(),
            done.set.total_power(),
            done.rules_from
        ),
        json: json!({
            "action": action,
            "validator": key.peer_id(),
            "power": power,
            "tx": done.tx.to_hex(),
            "height": done.height,
            "rules_from": done.rules_from,
            "set_hash": done.set.hash().to_hex(),
            "total_power": done.set.total_power(),
            "validators": done.set.validators.iter()
                .map(|v| json!({ "id": v.key.peer_id(), "power": v.power }))
                .collect::<Vec<_>>(),
        }),
    })
}

fn list(api: &str) -> Result<Output> {
    let list = ApiClient::new(api)?
        .validators()
        .with_context(|| format!("cannot read the validator set from {api}"))?;
    let mut text = format!(
        "height {}: {} validators, total power {}, in force since height {}",
        list.height,
        list.validators.len(),
        list.total_power,
        list.since_height
    );
    for v in &list.validators {
        let signed = v
            .last_signed_height
            .map_or_else(|| "not signing".to_string(), |h| format!("last signed {h}"));
        text.push_str(&format!("\n  {}  power {}  {signed}", v.id, v.power));
    }
    Ok(Output {
        text,
        json: serde_json::to_value(&list)?,
    })
}

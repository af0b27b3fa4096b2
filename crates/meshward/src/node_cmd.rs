//! `meshward init`, `meshward node run` and `meshward status`: a gateway's data dir, running it,
//! and asking it how the fleet is.

use std::path::Path;

use anyhow::{Context, Result};
use meshward_api::client::ApiClient;
use serde_json::json;

use crate::cli::NodeRun;
use crate::Output;

pub(crate) fn node_run(a: NodeRun) -> Result<Output> {
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
    if a.mqtt_tls_cert.is_some() {
        config.mqtt_tls_cert = a.mqtt_tls_cert.clone();
        config.mqtt_tls_key = a.mqtt_tls_key.clone();
    }
    if let Some(m) = &a.mqtt {
        config.mqtt =
            Some(m.parse().with_context(|| {
                format!("--mqtt {m:?} is not an ip:port such as 127.0.0.1:1883")
            })?);
    }
    #[cfg(feature = "byzantine")]
    {
        config.byzantine = a.byzantine;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Once asked to stop, the consensus network's complaints about its stopping actors are not
    // errors (see `logging::quiet_for_shutdown`).
    let shutdown = async {
        shutdown_signal().await;
        crate::logging::quiet_for_shutdown();
    };
    let result = rt.block_on(meshward_node::run(config, shutdown));
    crate::logging::quiet_for_shutdown();
    drop(rt);
    result?;
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

/// `meshward status`: the node's status line, then the fleet's health as the node sees it:
/// validators up or down with the last height each signed, devices by status, the mailbox
/// depth and the alerts. `--json`: the status fields plus `fleet` (`GET /v1/console`).
pub(crate) fn status(api: &str) -> Result<Output> {
    let client = ApiClient::new(api)?.with_timeout(std::time::Duration::from_secs(5));
    let st = client.status()?;
    let fleet = client.console()?;
    let mut text = format!(
        "chain {}  height {}  last block {}  peers {}  validators {}  validator: {}  mempool {}",
        st.chain_id,
        st.height,
        st.last_block_hash.as_deref().unwrap_or("-"),
        st.peers,
        st.validators,
        st.is_validator,
        st.mempool_size,
    );
    let up = fleet.validators.iter().filter(|v| v.up).count();
    text.push_str(&format!(
        "\n{:.2} blocks/s  {:.1} tx/s  finality p50/p99 {}",
        fleet.blocks_per_s,
        fleet.txs_per_s,
        fleet
            .finality_ms
            .map_or("-".to_string(), |q| format!("{:.0}/{:.0} ms", q.p50, q.p99))
    ));
    text.push_str(&format!("\nvalidators {up}/{} up", fleet.validators.len()));
    for v in &fleet.validators {
        text.push_str(&format!(
            "\n  {}  {:<4}  last signed {:>8}  missed {:>6}{}{}",
            v.id,
            if v.up { "up" } else { "DOWN" },
            v.last_signed_height
                .map_or("never".to_string(), |h| h.to_string()),
            v.missed,
            if v.round0_eligible {
                ""
            } else {
                "  (skipped as round-0 proposer)"
            },
            if v.is_self { "  (this node)" } else { "" },
        ));
    }
    let d = fleet.devices;
    text.push_str(&format!(
        "\ndevices {} active, {} revoked, {} quarantined   mailbox {} envelopes ({} bytes)",
        d.active, d.revoked, d.quarantined, fleet.mailbox.envelopes, fleet.mailbox.bytes
    ));
    if fleet.alerts.is_empty() {
        text.push_str("\nno alert");
    } else {
        text.push_str("\nalerts:");
        for a in &fleet.alerts {
            let sev = serde_json::to_value(a.severity)?;
            text.push_str(&format!(
                "\n  [{}] {}: {}",
                sev.as_str().unwrap_or("?"),
                a.kind,
                a.message
            ));
        }
    }
    let mut json = serde_json::to_value(&st)?;
    json["fleet"] = serde_json::to_value(&fleet)?;
    Ok(Output { text, json })
}

pub(crate) fn init(dir: &Path) -> Result<Output> {
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

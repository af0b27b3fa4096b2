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

pub(crate) fn status(api: &str) -> Result<Output> {
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

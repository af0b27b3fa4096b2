//! `meshward init`: a new node data dir with a fresh key, API token and `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::CONFIG_FILE;
use meshward_sdk::keyfile::{self, KeyKind};

/// The node's key file inside its data dir.
pub const NODE_KEY_FILE: &str = "node.key";
/// The API token file inside its data dir.
pub const TOKEN_FILE: &str = "api.token";

/// What [`init_data_dir`] created.
#[derive(Debug)]
pub struct InitReport {
    /// The node's peer id.
    pub peer_id: String,
    /// Its key file.
    pub node_key: PathBuf,
    /// Its API token file.
    pub token_file: PathBuf,
    /// Its `config.toml`.
    pub config: PathBuf,
}

/// Creates a node's data directory (mode 0700): a fresh node key and API token (both 0600) and
/// `config.toml` with the given addresses. Refuses a directory that exists and is not empty.
pub fn init_data_dir(dir: &Path, api: &str, p2p: &str, mdns: bool) -> Result<InitReport> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty; init never overwrites a data directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on {}", dir.display()))?;
    }
    let node_key = dir.join(NODE_KEY_FILE);
    let kp = keyfile::generate(&node_key, KeyKind::Node)?;
    let mut token = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
    let token_file = dir.join(TOKEN_FILE);
    keyfile::write_secret_file(
        &token_file,
        format!("{}\n", meshward_core::hex::encode(&token)).as_bytes(),
    )?;
    let config = dir.join(CONFIG_FILE);
    std::fs::write(
        &config,
        format!(
            "# Meshward node configuration, written by `meshward init`.\n\
             # The HTTP API listens on loopback only unless changed here or with --api.\n\
             api = \"{api}\"\n\
             # libp2p mesh address; consensus listens on the next TCP port.\n\
             p2p = \"{p2p}\"\n\
             # Find other gateways on the LAN by multicast DNS.\n\
             mdns = {mdns}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    Ok(InitReport {
        peer_id: kp.id().peer_id(),
        node_key,
        token_file,
        config,
    })
}

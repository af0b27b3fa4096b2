//! A whole Meshward fleet on one machine, as `meshward devnet` runs it: every validator its own
//! `meshward node run` process on 127.0.0.1 with its own data dir, described by one devnet file
//! (`devnet.json`) so that a devnet can be stopped and resumed, and optionally a simulated fleet
//! of SDK devices exchanging encrypted, anchored messages.
//!
//! The pieces are usable on their own: [`create`] lays out a new devnet, a [`NodeLauncher`]
//! starts its nodes (the benchmark does this), [`stop_children`] stops them, [`run`] is the
//! whole interactive devnet with its live summary, and [`control`] kills, stops and starts one
//! node of a devnet, running or not.
//!
//! ```no_run
//! use std::time::Duration;
//! use meshward_devnet::{create, stop_children, NodeLauncher};
//!
//! let dir = std::path::Path::new("/tmp/my-devnet");
//! let file = create(dir, 4, 27000)?;
//! // The nodes run as `meshward node run …`; name the binary unless this program is meshward.
//! let launcher = NodeLauncher::new("/usr/local/bin/meshward");
//! let mut nodes = (0..file.nodes.len())
//!     .map(|i| launcher.spawn(&file, i))
//!     .collect::<anyhow::Result<Vec<_>>>()?;
//! println!("first API: {}", file.nodes[0].api);
//! stop_children(&mut nodes, Duration::from_secs(10));
//! # Ok::<(), anyhow::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod control;
mod file;
pub mod fleetsim;
mod live;
mod process;

pub use file::{create, DevnetFile, DevnetNode, DEVNET_FILE};
pub use live::{describe_exit, run, Options};
pub use process::{
    alive, send_signal, spawn_node, stop_children, NodeLauncher, NODE_LOG_MAX_BYTES,
};

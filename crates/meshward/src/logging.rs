//! Logging: one default for every command (Meshward's own lifecycle and decisions at info,
//! dependencies at warn, per-height and per-message lines at debug), `RUST_LOG` overriding it,
//! and an optional log file bounded in size.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};

/// The filter when `RUST_LOG` is not set: our crates at info, everything else at warn, except
/// Malachite's peer-connection chatter (an error line for every failed redial of a peer that is
/// down, several a second): a gateway's own "gateway connected/disconnected" and "validator
/// stopped signing" lines say the same once.
pub(crate) const DEFAULT_FILTER: &str = "warn,meshward=info,meshward_node=info,\
    meshward_consensus=info,meshward_net=info,meshward_store=info,meshward_sdk=info,\
    meshward_devnet=info,meshward_bench=info,arc_malachitebft_network=off,\
    arc_malachitebft_discovery=error";

/// Added to the filter once a node is stopping: Malachite's actors stop one after another, and
/// its crates (engine, network, …) log an error for each message that still arrives at one
/// already stopped (`Actor has died, stopping network`, `Error sending message to handle:
/// channel closed`, `Failed to send tick message … the actor is likely terminated`), which is
/// not an error of a clean shutdown. A directive's target matches every target it prefixes,
/// so this covers all `arc_malachitebft_*` crates.
const AFTER_STOP_DIRECTIVE: &str = "arc_malachitebft=off";

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The installed filter's handle and the directives it was made from.
static FILTER: OnceLock<(FilterHandle, String)> = OnceLock::new();

/// Default size at which a log file is rotated.
pub(crate) const DEFAULT_LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// A log file that never grows past `max` bytes: when the next line would pass it, the file
/// becomes `<path>.1` (replacing an older one) and a new file starts. At most about `2 * max`
/// bytes of logs exist at once.
pub(crate) struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: Mutex<(File, u64)>,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

impl RotatingLog {
    /// Opens (appending to) `path`, rotated at `max` bytes (at least 4 KiB).
    pub(crate) fn open(path: PathBuf, max: u64) -> Result<RotatingLog> {
        let file = open_append(&path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        Ok(RotatingLog {
            path,
            max: max.max(4096),
            file: Mutex::new(file),
        })
    }

    fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }
}

impl Write for &RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = meshward_core::sync::lock(&self.file, "log file");
        if g.1 > 0 && g.1 + buf.len() as u64 > self.max {
            std::fs::rename(&self.path, self.rotated_path())?;
            *g = open_append(&self.path)?;
        }
        g.0.write_all(buf)?;
        g.1 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        meshward_core::sync::lock(&self.file, "log file").0.flush()
    }
}

/// Installs the subscriber: to stderr, or to `log_file` rotated at `max_bytes`.
pub(crate) fn init(log_file: Option<PathBuf>, max_bytes: u64) -> Result<()> {
    use tracing_subscriber::prelude::*;
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| tracing_subscriber::EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let filter = tracing_subscriber::EnvFilter::new(&directives);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer();
    let registry = tracing_subscriber::registry().with(filter);
    match log_file {
        Some(path) => registry
            .with(
                fmt.with_writer(Arc::new(RotatingLog::open(path, max_bytes)?))
                    .with_ansi(false),
            )
            .init(),
        None => registry
            .with(
                fmt.with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    let _ = FILTER.set((handle, directives));
    Ok(())
}

/// Once a node is stopping: the same filter with [`AFTER_STOP_DIRECTIVE`] added.
pub(crate) fn quiet_for_shutdown() {
    if let Some((h, directives)) = FILTER.get() {
        let quiet = format!("{directives},{AFTER_STOP_DIRECTIVE}");
        let _ = h.reload(tracing_subscriber::EnvFilter::new(quiet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shutdown directive silences every Malachite crate, and only those.
    #[test]
    fn after_stop_every_malachite_crate_is_silent() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                meshward_core::sync::lock(&self.0, "log buffer").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let filter = tracing_subscriber::EnvFilter::new(format!("info,{AFTER_STOP_DIRECTIVE}"));
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "arc_malachitebft_network", "from the network");
            tracing::error!(target: "arc_malachitebft_engine", "from the engine");
            tracing::error!(target: "meshward_node::node", "from meshward");
        });
        let text = String::from_utf8(meshward_core::sync::lock(&buf.0, "log buffer").clone())
            .expect("utf-8");
        assert!(!text.contains("from the network"), "{text}");
        assert!(!text.contains("from the engine"), "{text}");
        assert!(text.contains("from meshward"), "{text}");
    }

    #[test]
    fn a_log_file_is_rotated_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("node.log");
        let log = RotatingLog::open(path.clone(), 4096).expect("opens");
        let line = [b'x'; 100];
        for _ in 0..1000 {
            (&log).write_all(&line).expect("writes");
        }
        let now = std::fs::metadata(&path).expect("exists").len();
        let old = std::fs::metadata(dir.path().join("node.log.1"))
            .expect("rotated")
            .len();
        assert!(now <= 4096 && old <= 4096, "{now} {old}");
        // 100 kB were written; only the last two files' worth is kept.
        assert!(now + old < 8200);
    }
}

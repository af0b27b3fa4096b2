//! `meshward bench`: measurements on this machine, with real processes on 127.0.0.1. The
//! `meshward` binary parses the command line and calls [`run`] (and, in the load-generating
//! child processes it starts, [`client::run`]); everything else lives here.
//!
//! Parts (each runs on its own; `all` runs them in this order):
//! - `crypto` (`crypto.rs`): the machine's own ceiling, Ed25519 batch verification per core and
//!   across all cores, and HPKE seal/open rates, measured in this process.
//! - `consensus` (`consensus/`): four validators as `meshward node run` processes, loaded by
//!   separate `meshward bench client` processes over the HTTP API.
//! - `direct` (`direct.rs`): device-to-device delivery.
//! - `mqtt` (`mqtt.rs`): Debian's Mosquitto broker with one rumqttc publisher and one
//!   subscriber, the baseline that `direct` is compared with.
//! - `fleet` (`fleet.rs`): the whole message path, 100 SDK devices and four validators: sealed,
//!   anchored in batches, delivered, opened and final.
//! - `scale` (`scale.rs`): finality and throughput at 4, 7 and 10 validators, and node memory,
//!   disk and proof size with 1k, 10k and 100k enrolled devices.
//!
//! Every run writes `<out>/results.json` (schema in `report.rs`) and a self-contained
//! `<out>/report.html`, and prints a summary table that puts each figure beside its target. A
//! part that fails is reported with its reason; the other parts still run. Figures are medians
//! of several rounds where a part repeats itself.
//!
//! The parts that start processes run the `meshward` binary: by default this executable (the
//! CLI is that binary), or [`Options::exe`].
//!
//! ```no_run
//! use meshward_bench::{run, Options, Part};
//!
//! let report = run(&Options {
//!     part: Part::Crypto,
//!     out: "bench-out".into(),
//!     quick: true,
//!     base_port: 29000,
//!     json: false,
//!     exe: Some("/usr/local/bin/meshward".into()),
//! })?;
//! println!("{}", report.summary);
//! assert!(report.results["ceiling"]["anchors_per_s"].as_f64().is_some());
//! # Ok::<(), anyhow::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshward_devnet::NodeLauncher;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

pub mod client;
mod consensus;
mod crypto;
mod direct;
mod fleet;
mod ledger_cost;
mod mqtt;
mod mqtt_gateway;
mod report;
mod scale;

/// One part of the benchmark, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
// The parts are described in the help of the CLI's `part` argument; a doc comment on a variant
// would add a line per part to `meshward bench --help`.
pub enum Part {
    /// Every part below, in order.
    All,
    #[allow(missing_docs)]
    Crypto,
    #[allow(missing_docs)]
    Consensus,
    #[allow(missing_docs)]
    Direct,
    #[allow(missing_docs)]
    Mqtt,
    #[allow(missing_docs)]
    Scale,
    /// MQTT devices through Meshward gateways, against Mosquitto in the same part.
    MqttGateway,
    /// 100 SDK devices and 4 validators: every message sealed, delivered, opened, anchored, final.
    Fleet,
    /// Internal: the load generator that `consensus` and `scale` spawn.
    #[value(hide = true)]
    Client,
}

impl Part {
    /// Its name on the command line and its key in `results.json`.
    fn name(self) -> &'static str {
        match self {
            Part::All => "all",
            Part::Crypto => "crypto",
            Part::Consensus => "consensus",
            Part::Direct => "direct",
            Part::Mqtt => "mqtt",
            Part::Scale => "scale",
            Part::MqttGateway => "mqtt-gateway",
            Part::Fleet => "fleet",
            Part::Client => "client",
        }
    }
}

/// The measuring parts in the order `all` runs them.
const PARTS: [Part; 7] = [
    Part::Crypto,
    Part::Consensus,
    Part::Direct,
    Part::Mqtt,
    Part::MqttGateway,
    Part::Fleet,
    Part::Scale,
];

/// What `meshward bench` was asked for.
pub struct Options {
    /// The part to run (`All`: every measuring part).
    pub part: Part,
    /// Where `results.json` and `report.html` go.
    pub out: PathBuf,
    /// Short phases and small fleets, for CI's smoke test.
    pub quick: bool,
    /// First port of the validators' range (each part uses its own range above it).
    pub base_port: u16,
    /// `--json`: no summary table and no progress lines on a terminal.
    pub json: bool,
    /// The `meshward` binary that nodes, load generators and `meshward store synth` run as;
    /// `None`: this executable (the devnet's [`NodeLauncher::current_exe`] for nodes,
    /// [`self_exe`] for the rest).
    pub exe: Option<PathBuf>,
}

/// The binaries the bench starts: validators through the devnet's launcher, load generators
/// (`bench client`) and CLI steps (`store synth`) directly.
pub(crate) struct Exes {
    /// Starts validators.
    pub(crate) nodes: NodeLauncher,
    /// Runs `meshward bench client` and `meshward store synth`.
    pub(crate) cli: PathBuf,
}

impl Exes {
    /// Both `exe`; or, for `None`, this executable: the devnet's default for nodes
    /// ([`NodeLauncher::current_exe`]) and [`self_exe`] for the rest.
    pub(crate) fn new(exe: Option<PathBuf>) -> Result<Exes> {
        Ok(match exe {
            Some(exe) => Exes {
                nodes: NodeLauncher::new(exe.clone()),
                cli: exe,
            },
            None => Exes {
                nodes: NodeLauncher::current_exe()?,
                cli: self_exe()?,
            },
        })
    }
}

/// What a part produced: its results, or why it did not run.
pub enum Outcome {
    /// The part's object of `results.json`.
    Done(Value),
    /// Why it did not run (e.g. Mosquitto is not installed).
    Skipped(String),
}

/// What `meshward bench` hands back to the CLI: the table and the results document.
pub struct Report {
    /// The table of figures beside their targets, for people.
    pub summary: String,
    /// The `results.json` document.
    pub results: Value,
    /// True when at least one part ran to the end (or was skipped on purpose).
    pub any_ok: bool,
}

/// Shows what a part is doing: a spinner on a terminal, one line per step otherwise.
pub struct Progress {
    /// The spinner, when stderr is a terminal and output is not quiet.
    bar: Option<ProgressBar>,
    /// The part's name, shown before each line.
    part: &'static str,
    /// `--json`: print nothing.
    quiet: bool,
}

impl Progress {
    /// Progress for `part`: a spinner on a terminal, plain lines on stderr otherwise, nothing
    /// when `quiet`.
    fn new(part: &'static str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>4}] {prefix:<10} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(part);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar, part, quiet }
    }

    /// Reports the current step.
    pub fn step(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) => b.set_message(msg.as_ref().to_string()),
            None if !self.quiet => eprintln!("bench {}: {}", self.part, msg.as_ref()),
            None => {}
        }
    }

    /// Prints a line that stays (a finding, a warning), above the spinner.
    pub fn note(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) => b.println(format!("  {}: {}", self.part, msg.as_ref())),
            None if !self.quiet => eprintln!("bench {}: {}", self.part, msg.as_ref()),
            None => {}
        }
    }

    /// Ends the part's progress with its outcome (done, skipped, failed).
    fn finish(&self, msg: String) {
        match &self.bar {
            Some(b) => b.finish_with_message(msg),
            None if !self.quiet => eprintln!("bench {}: {msg}", self.part),
            None => {}
        }
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of unsorted values; NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// Wall-clock microseconds since the Unix epoch: the one clock that the bench and its client
/// processes share.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The running binary, for the processes the bench starts. On Linux `/proc/self/exe` names the
/// image that is running even when a rebuild has replaced the file on disk since.
pub fn self_exe() -> Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("cannot find the meshward binary")
}

/// A JSON number, or null for NaN and infinities (JSON has neither).
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// Runs the parts chosen in `opts`, writes `results.json` and `report.html`, and returns the
/// summary table.
pub fn run(opts: &Options) -> Result<Report> {
    let parts: Vec<Part> = match opts.part {
        Part::All => PARTS.to_vec(),
        Part::Client => anyhow::bail!("`bench client` is internal: it needs --spec"),
        p => vec![p],
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create the output dir {}", opts.out.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exes = Exes::new(opts.exe.clone())?;
    let started_ms = meshward_core::clock::now_ms();
    let t0 = Instant::now();
    let mut results = json!({
        "version": 1,
        "quick": opts.quick,
        "started_at_ms": started_ms,
        "machine": { "cores": cores, "os": std::env::consts::OS, "arch": std::env::consts::ARCH },
        "parts": {},
    });
    // Ports: each part gets its own range so that a slow TIME_WAIT never collides.
    let port = |off: u16| opts.base_port.saturating_add(off);
    let mut any_ok = false;
    for part in &parts {
        let p = Progress::new(part.name(), opts.json);
        p.step("starting");
        let start = Instant::now();
        let outcome = match part {
            Part::Crypto => crypto::run(opts.quick, &p),
            Part::Consensus => consensus::run(opts.quick, port(0), &exes, &p),
            Part::Direct => direct::run(opts.quick, port(800)).map(Outcome::Done),
            Part::Mqtt => mqtt::run(opts.quick, &p),
            Part::Scale => scale::run(opts.quick, port(200), &exes, &p),
            Part::MqttGateway => mqtt_gateway::run(opts.quick, port(500), &exes, &p),
            Part::Fleet => fleet::run(opts.quick, port(1100), &exes, &p),
            Part::All | Part::Client => unreachable!("expanded above"),
        };
        let secs = start.elapsed().as_secs_f64();
        let status = match outcome {
            Ok(Outcome::Done(v)) => {
                any_ok = true;
                p.finish(format!("done in {secs:.0} s"));
                merge_part(&mut results, *part, v);
                json!({"status": "ok", "seconds": secs})
            }
            Ok(Outcome::Skipped(why)) => {
                any_ok = true;
                p.finish(format!("skipped: {why}"));
                json!({"status": "skipped", "reason": why, "seconds": secs})
            }
            Err(e) => {
                p.finish(format!("part failed: {e:#}"));
                json!({"status": "failed", "reason": format!("{e:#}"), "seconds": secs})
            }
        };
        results["parts"][part.name()] = status;
    }
    // Every key of the schema is present; a part that did not run leaves null.
    for key in [
        "ceiling",
        "crypto",
        "consensus",
        "direct",
        "mqtt",
        "mqtt_gateway",
        "fleet",
        "scale",
    ] {
        if results.get(key).is_none() {
            results[key] = Value::Null;
        }
    }
    results["ratios"] = report::ratios(&results);
    results["targets"] = report::targets(&results);
    results["seconds"] = json!(t0.elapsed().as_secs_f64());

    let json_path = opts.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let html_path = opts.out.join("report.html");
    std::fs::write(&html_path, report::html(&results)?)
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    let summary = report::summary(&results, &json_path, &html_path);
    Ok(Report {
        summary,
        results,
        any_ok,
    })
}

/// Puts a part's results into the document. `crypto` also yields the top-level `ceiling`.
fn merge_part(results: &mut Value, part: Part, v: Value) {
    match (part, v) {
        (Part::Crypto, Value::Object(mut m)) => {
            if let Some(c) = m.remove("ceiling") {
                results["ceiling"] = c;
            }
            results["crypto"] = Value::Object(m);
        }
        (Part::MqttGateway, v) => results["mqtt_gateway"] = v,
        (p, v) => results[p.name()] = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn crypto_results_feed_the_ceiling() {
        let mut r = json!({});
        merge_part(
            &mut r,
            Part::Crypto,
            json!({"ceiling": {"anchors_per_s": 5.0}, "cores": 2}),
        );
        assert_eq!(r["ceiling"]["anchors_per_s"], 5.0);
        assert_eq!(r["crypto"]["cores"], 2);
        assert!(r["crypto"].get("ceiling").is_none());
    }
}

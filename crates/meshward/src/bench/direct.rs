//! `direct` part: device-to-device delivery (filled in by the device work).
use anyhow::Result;
use serde_json::Value;
/// Runs the direct-delivery benchmark and returns the `direct` object of results.json:
/// `{"session": {"msgs_per_s", "latency_us": {"p50","p99"}}, "oneshot": {...}}`.
pub fn run(_quick: bool, _base_port: u16) -> Result<Value> {
    anyhow::bail!("the direct benchmark is not built yet")
}

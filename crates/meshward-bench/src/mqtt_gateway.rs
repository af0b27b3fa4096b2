//! `mqtt-gateway` part: MQTT devices through Meshward gateways against Mosquitto, in one run.
//!
//! Four validators (a devnet, each with its MQTT front door), two custodial devices added with
//! `meshward mqtt add`: the publisher's custodian is node 0, the subscriber's node 1. A rumqttc
//! publisher on node 0 publishes [`crate::mqtt`]'s 256-byte QoS 1 payloads to
//! `meshward/v1/to/<subscriber>`; each is sealed, signed, anchored (admitted to a mempool) and
//! delivered to the subscriber's SDK node on node 1, opened there and published to the rumqttc
//! subscriber on `meshward/v1/inbox`. The same measurement (latency with one message in flight,
//! then throughput for a fixed time) runs against Mosquitto first, on the same machine in the
//! same part, and the ratios compare the two.

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::consensus::Cluster;
use crate::mqtt::{self, INSTALL_HINT};
use crate::{Exes, Outcome, Progress};

/// `meshward mqtt add` through `api`; `(device id, password)`.
fn add_device(
    cli: &std::path::Path,
    api: &str,
    admin_key: &std::path::Path,
) -> Result<(String, String)> {
    let out = Command::new(cli)
        .args(["--json", "mqtt", "add", "--api", api, "--admin-key"])
        .arg(admin_key)
        .output()
        .context("running meshward mqtt add")?;
    if !out.status.success() {
        bail!(
            "meshward mqtt add failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("meshward mqtt add's JSON")?;
    match (v["device_id"].as_str(), v["password"].as_str()) {
        (Some(d), Some(p)) => Ok((d.to_string(), p.to_string())),
        _ => bail!("meshward mqtt add printed no device_id and password: {v}"),
    }
}

/// The MQTT port of devnet node `i`.
fn mqtt_port(c: &Cluster, i: usize) -> Result<u16> {
    let addr = c.file.nodes[i]
        .mqtt
        .as_deref()
        .context("the devnet node has no MQTT address")?;
    let sa: std::net::SocketAddr = addr.parse().context("the devnet's MQTT address")?;
    Ok(sa.port())
}

/// Runs the part, or skips it when Mosquitto (the baseline) is missing.
pub(crate) fn run(quick: bool, base_port: u16, exes: &Exes, p: &Progress) -> Result<Outcome> {
    let baseline = match mqtt::run(quick, p)? {
        Outcome::Done(v) => v["qos1"].clone(),
        Outcome::Skipped(_) => return Ok(Outcome::Skipped(INSTALL_HINT.into())),
    };
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-mqtt-gateway-")
        .tempdir()
        .context("cannot create a temp dir")?;
    p.step("starting 4 validators with their MQTT front doors");
    let c = Cluster::create(&dir.path().join("net"), 4, base_port, exes)?;
    let admin = dir.path().join("net").join("admin.key");
    p.step("adding two custodial MQTT devices");
    let (pub_id, pub_pw) = add_device(&c.cli, c.api(0), &admin)?;
    let (sub_id, sub_pw) = add_device(&c.cli, c.api(1), &admin)?;

    let mut so = mqtt::options("meshward-bench-gw-sub", mqtt_port(&c, 1)?);
    so.set_credentials(sub_id.clone(), sub_pw);
    let (sub, arrivals) = mqtt::subscriber(so, meshward_mqtt::topic::INBOX)?;
    let mut po = mqtt::options("meshward-bench-gw-pub", mqtt_port(&c, 0)?);
    po.set_credentials(pub_id, pub_pw);
    let publ = mqtt::publisher(po);
    let topic = format!("meshward/v1/to/{sub_id}");
    let qos1 = mqtt::measure(&publ, &arrivals, &topic, quick, "gateway", p)?;
    let _ = publ.disconnect();
    let _ = sub.disconnect();
    drop(c);
    Ok(Outcome::Done(json!({
        "gateways": 4,
        "payload_bytes": mqtt::PAYLOAD_BYTES,
        "path": "rumqttc → gateway 0 (custodian: seal, sign, anchor, deliver) → gateway 1 (custodian: open) → rumqttc",
        "qos1": qos1,
        "mosquitto": { "qos1": baseline },
    })))
}

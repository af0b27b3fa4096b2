//! The results document, its summary table and its HTML report.
//!
//! `results.json` (version 1); every top-level key is present, null when its part did not run:
//! ```text
//! version, quick, started_at_ms, seconds, machine {cores, os, arch}
//! parts      {<part>: {status: ok|skipped|failed, reason?, seconds}}
//! ceiling    {cores, validators, verify_batch_per_s_per_core, verify_batch_per_s_all_cores,
//!             anchors_per_s}
//! crypto     {cores, batch_size, verify_batch_per_s_per_core, verify_batch_per_s_all_cores,
//!             hpke {oneshot_seal_per_s, oneshot_open_per_s, session_seal_per_s, session_open_per_s}}
//! consensus  {peak_anchor_tx_per_s, peak_messages_per_s, finality_ms {p50, p99},
//!             one_down_ratio, load_curve [...], failure_run {kill_at_s, series [[s, tx/s]]}, ...}
//! direct     {session {msgs_per_s, latency_us {p50, p99}}, oneshot {...},
//!             session_batch {msgs_per_s, batch, batches_in_flight}}
//! mqtt       {qos1 {msgs_per_s, latency_us {p50, p99}}}
//! mqtt_gateway {qos1 {...}, mosquitto {qos1 {...}}, ...}
//! fleet      {devices, validators, batch, payload_bytes, phase_s, msgs_per_s, opened_per_s,
//!             final_ms {p50, p99}, sent_messages, failed_sends, ...}
//! scale      {quick, validators [...], devices [...], rss_mb_100k_devices, disk_bytes_per_anchor,
//!             validators_10_vs_4, unconfirmed_after_tail {4, 7, 10},
//!             disk_bytes_per_message_fleet_rate, fleet_rate {...}, idle_bytes_per_hour,
//!             idle {...}, store_open_ms_1m_anchors, store_open {...}}
//! ratios     {anchor_tx_vs_ceiling, messages_vs_ceiling, direct_vs_mqtt_throughput,
//!             direct_vs_mqtt_latency_p50, direct_oneshot_vs_mqtt_throughput,
//!             mqtt_gateway_vs_mosquitto_throughput, mqtt_gateway_vs_mosquitto_latency_p50}
//! targets    [{key, label, op, target, value, met}]
//! ```

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

/// The HTML report, with `/*RESULTS_JSON*/null` where the results go.
const TEMPLATE: &str = include_str!("report.html");

/// Looks up a dotted path such as `consensus.finality_ms.p50`.
pub(crate) fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// The finite number at a dotted path, if there is one.
fn f(v: &Value, path: &str) -> Option<f64> {
    get(v, path)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// `a / b` as JSON; null when either is missing or `b` is not positive.
fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// The ratios, from whatever parts ran; null when an input is missing.
///
/// A message counts towards `messages_vs_ceiling` only if it is anchored and also delivered to
/// and opened by its recipient. The consensus part anchors batch roots without delivering the
/// envelopes behind them, so the anchored message rate is capped by the rate `direct` measured,
/// in the same run, for sealing, sending, receiving, verifying and opening session envelopes:
/// no more messages per second can be both anchored and opened on this machine.
pub(crate) fn ratios(r: &Value) -> Value {
    let ceiling = f(r, "ceiling.anchors_per_s");
    let delivered = match (
        f(r, "consensus.peak_messages_per_s"),
        f(r, "direct.session.msgs_per_s"),
    ) {
        (Some(anchored), Some(opened)) => Some(anchored.min(opened)),
        _ => None,
    };
    json!({
        "anchor_tx_vs_ceiling": ratio(f(r, "consensus.peak_anchor_tx_per_s"), ceiling),
        "messages_vs_ceiling": ratio(delivered, ceiling),
        "direct_vs_mqtt_throughput": ratio(f(r, "direct.session.msgs_per_s"), f(r, "mqtt.qos1.msgs_per_s")),
        "direct_vs_mqtt_latency_p50": ratio(f(r, "direct.session.latency_us.p50"), f(r, "mqtt.qos1.latency_us.p50")),
        "direct_oneshot_vs_mqtt_throughput": ratio(f(r, "direct.oneshot.msgs_per_s"), f(r, "mqtt.qos1.msgs_per_s")),
        "mqtt_gateway_vs_mosquitto_throughput": ratio(f(r, "mqtt_gateway.qos1.msgs_per_s"), f(r, "mqtt_gateway.mosquitto.qos1.msgs_per_s")),
        "mqtt_gateway_vs_mosquitto_latency_p50": ratio(f(r, "mqtt_gateway.qos1.latency_us.p50"), f(r, "mqtt_gateway.mosquitto.qos1.latency_us.p50")),
    })
}

/// (key, label, op, target)
const TARGETS: [(&str, &str, &str, f64); 20] = [
    (
        "ratios.mqtt_gateway_vs_mosquitto_throughput",
        "MQTT via gateways ÷ Mosquitto, msgs/s",
        ">=",
        0.5,
    ),
    (
        "ratios.mqtt_gateway_vs_mosquitto_latency_p50",
        "MQTT via gateways ÷ Mosquitto, latency p50",
        "<=",
        3.0,
    ),
    (
        "ratios.anchor_tx_vs_ceiling",
        "anchor tx/s ÷ ceiling",
        ">=",
        0.5,
    ),
    (
        "ratios.messages_vs_ceiling",
        "messages/s ÷ ceiling",
        ">=",
        2.0,
    ),
    (
        "consensus.finality_ms.p50",
        "finality p50 at 50% load (ms)",
        "<=",
        50.0,
    ),
    (
        "consensus.finality_ms.p99",
        "finality p99 at 50% load (ms)",
        "<=",
        250.0,
    ),
    (
        "consensus.one_down_ratio",
        "throughput with 1 of 4 down ÷ healthy",
        ">=",
        0.7,
    ),
    (
        "ratios.direct_vs_mqtt_throughput",
        "direct (session) ÷ MQTT throughput",
        ">=",
        1.5,
    ),
    (
        "ratios.direct_vs_mqtt_latency_p50",
        "direct (session) ÷ MQTT latency p50",
        "<=",
        2.0,
    ),
    (
        "ratios.direct_oneshot_vs_mqtt_throughput",
        "direct (one-shot) ÷ MQTT throughput",
        ">=",
        0.5,
    ),
    (
        "fleet.msgs_per_s",
        "fleet: msgs/s delivered, opened and final",
        ">=",
        5000.0,
    ),
    (
        "fleet.final_ms.p50",
        "fleet: seal to final p50 (ms)",
        "<=",
        500.0,
    ),
    (
        "scale.rss_mb_100k_devices",
        "validator RSS, 100k devices (MiB)",
        "<=",
        200.0,
    ),
    (
        "scale.disk_bytes_per_anchor",
        "disk bytes per anchor",
        "<=",
        200.0,
    ),
    (
        "scale.disk_bytes_per_message_fleet_rate",
        "disk bytes per message, 20 devices at 10 msg/s",
        "<=",
        400.0,
    ),
    (
        "scale.idle_bytes_per_hour",
        "idle validator, bytes written per hour",
        "<=",
        1_000_000.0,
    ),
    (
        "scale.validators_10_vs_4",
        "peak tx/s, 10 validators ÷ 4",
        ">=",
        0.25,
    ),
    (
        "scale.unconfirmed_after_tail.7",
        "unconfirmed after the tail, 7 validators",
        "<=",
        0.0,
    ),
    (
        "scale.unconfirmed_after_tail.10",
        "unconfirmed after the tail, 10 validators",
        "<=",
        0.0,
    ),
    (
        "scale.store_open_ms_1m_anchors",
        "store open with 1M anchors (ms)",
        "<=",
        200.0,
    ),
];

/// Each target with its figure and whether it was met (null: not measured).
pub(crate) fn targets(r: &Value) -> Value {
    TARGETS
        .iter()
        .map(|&(key, label, op, target)| {
            let value = f(r, key);
            let met = value.map(|v| if op == ">=" { v >= target } else { v <= target });
            json!({"key": key, "label": label, "op": op, "target": target, "value": value, "met": met})
        })
        .collect()
}

/// A figure for the table: three significant digits, thousands kept whole.
fn fmt(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The summary table: measured figures, then each target beside its figure.
pub(crate) fn summary(r: &Value, json_path: &Path, html_path: &Path) -> String {
    let mut out = String::new();
    let quick = if r["quick"] == true { " (quick)" } else { "" };
    out.push_str(&format!(
        "meshward bench{quick}: {} cores, {:.0} s\n",
        r["machine"]["cores"],
        r["seconds"].as_f64().unwrap_or(0.0)
    ));
    if let Some(parts) = r["parts"].as_object() {
        for (name, p) in parts {
            match p["status"].as_str() {
                Some("ok") => {}
                Some("skipped") => out.push_str(&format!(
                    "{name}: skipped: {}\n",
                    p["reason"].as_str().unwrap_or("")
                )),
                _ => out.push_str(&format!(
                    "{name}: part failed: {}\n",
                    p["reason"].as_str().unwrap_or("unknown")
                )),
            }
        }
    }
    let figures: &[(&str, &str)] = &[
        ("ceiling.verify_batch_per_s_per_core", "sig/s"),
        ("ceiling.verify_batch_per_s_all_cores", "sig/s"),
        ("ceiling.anchors_per_s", "anchors/s"),
        ("crypto.hpke.oneshot_seal_per_s", "/s"),
        ("crypto.hpke.oneshot_open_per_s", "/s"),
        ("crypto.hpke.session_seal_per_s", "/s"),
        ("crypto.hpke.session_open_per_s", "/s"),
        ("consensus.peak_anchor_tx_per_s", "tx/s"),
        ("consensus.peak_messages_per_s", "msgs/s"),
        ("consensus.one_down_tx_per_s", "tx/s"),
        ("direct.session.msgs_per_s", "msgs/s"),
        ("direct.session.latency_us.p50", "µs"),
        ("direct.oneshot.msgs_per_s", "msgs/s"),
        ("direct.session_batch.msgs_per_s", "msgs/s"),
        ("mqtt.qos1.msgs_per_s", "msgs/s"),
        ("mqtt.qos1.latency_us.p50", "µs"),
        ("mqtt.qos1.latency_us.p99", "µs"),
        ("mqtt_gateway.qos1.msgs_per_s", "msgs/s"),
        ("mqtt_gateway.qos1.latency_us.p50", "µs"),
        ("mqtt_gateway.qos1.latency_us.p99", "µs"),
        ("mqtt_gateway.mosquitto.qos1.msgs_per_s", "msgs/s"),
        ("mqtt_gateway.mosquitto.qos1.latency_us.p50", "µs"),
        ("fleet.msgs_per_s", "msgs/s"),
        ("fleet.opened_per_s", "msgs/s"),
        ("fleet.final_ms.p50", "ms"),
        ("fleet.final_ms.p99", "ms"),
        ("scale.proof_bytes", "B"),
    ];
    let measured: Vec<_> = figures
        .iter()
        .filter_map(|(k, unit)| f(r, k).map(|v| (k, v, unit)))
        .collect();
    if !measured.is_empty() {
        out.push_str(&format!("\n{:<42} {:>14}\n", "figure", "value"));
        for (k, v, unit) in measured {
            out.push_str(&format!("{k:<42} {:>14} {unit}\n", fmt(v)));
        }
    }
    if let Some(vs) = r["scale"]["validators"].as_array() {
        for v in vs {
            out.push_str(&format!(
                "{:<42} {:>14} tx/s, p50/p99 {}/{} ms\n",
                format!("scale: {} validators", v["validators"]),
                fmt(v["peak_anchor_tx_per_s"].as_f64().unwrap_or(f64::NAN)),
                fmt(v["finality_ms"]["p50"].as_f64().unwrap_or(f64::NAN)),
                fmt(v["finality_ms"]["p99"].as_f64().unwrap_or(f64::NAN)),
            ));
        }
    }
    if let Some(errs) = r["scale"]["errors"].as_array() {
        for e in errs {
            out.push_str(&format!(
                "scale: point failed: {}\n",
                e.as_str().unwrap_or("")
            ));
        }
    }
    if let Some(ds) = r["scale"]["devices"].as_array() {
        for d in ds {
            out.push_str(&format!(
                "{:<42} {:>14} MiB RSS, {} B/anchor\n",
                format!("scale: {} devices", d["devices"]),
                fmt(d["rss_mb_max"].as_f64().unwrap_or(f64::NAN)),
                fmt(d["disk_bytes_per_anchor"].as_f64().unwrap_or(f64::NAN)),
            ));
        }
    }
    out.push_str(&format!(
        "\n{:<42} {:>14} {:>10}  verdict\n",
        "target", "value", "target"
    ));
    if let Some(ts) = r["targets"].as_array() {
        for t in ts {
            let value = t["value"].as_f64().map_or("—".to_string(), fmt);
            let verdict = match t["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            out.push_str(&format!(
                "{:<42} {:>14} {:>10}  {verdict}\n",
                t["key"].as_str().unwrap_or(""),
                value,
                format!(
                    "{} {}",
                    t["op"].as_str().unwrap_or(""),
                    t["target"].as_f64().map_or(String::new(), fmt)
                ),
            ));
        }
    }
    out.push_str(&format!(
        "\nresults: {}\nreport:  {}",
        json_path.display(),
        html_path.display()
    ));
    out
}

/// The self-contained HTML report: the template with the results embedded as a script.
pub(crate) fn html(r: &Value) -> Result<String> {
    // `</` would end the script element early; `<\/` means the same in a JS string.
    let data = serde_json::to_string(r)?.replace("</", "<\\/");
    Ok(TEMPLATE.replace("/*RESULTS_JSON*/null", &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_null_when_an_input_is_missing() {
        let r = json!({
            "ceiling": {"anchors_per_s": 1000.0},
            "consensus": {"peak_anchor_tx_per_s": 600.0, "peak_messages_per_s": 38400.0},
            "mqtt": {"qos1": {"msgs_per_s": 100.0, "latency_us": {"p50": 50.0}}},
            "direct": null,
        });
        let x = ratios(&r);
        assert_eq!(x["anchor_tx_vs_ceiling"], 0.6);
        // Anchored, but no delivery was measured: not counted.
        assert!(x["messages_vs_ceiling"].is_null());
        assert!(x["direct_vs_mqtt_throughput"].is_null());
        assert!(x["direct_vs_mqtt_latency_p50"].is_null());
    }

    #[test]
    fn messages_count_only_as_fast_as_they_are_delivered_and_opened() {
        let mut r = json!({
            "ceiling": {"anchors_per_s": 1000.0},
            "consensus": {"peak_messages_per_s": 38400.0},
            "direct": {"session": {"msgs_per_s": 2500.0}},
        });
        assert_eq!(ratios(&r)["messages_vs_ceiling"], 2.5);
        r["direct"]["session"]["msgs_per_s"] = json!(90000.0);
        assert_eq!(ratios(&r)["messages_vs_ceiling"], 38.4);
    }

    #[test]
    fn targets_say_met_missed_or_not_measured() {
        let r = json!({
            "ratios": {"anchor_tx_vs_ceiling": 0.6, "messages_vs_ceiling": 1.0},
            "consensus": {"finality_ms": {"p50": 40.0, "p99": 300.0}},
        });
        let t = targets(&r);
        let by_key = |k: &str| {
            t.as_array()
                .unwrap()
                .iter()
                .find(|t| t["key"] == k)
                .unwrap()
                .clone()
        };
        assert_eq!(by_key("ratios.anchor_tx_vs_ceiling")["met"], true);
        assert_eq!(by_key("ratios.messages_vs_ceiling")["met"], false);
        assert_eq!(by_key("consensus.finality_ms.p50")["met"], true);
        assert_eq!(by_key("consensus.finality_ms.p99")["met"], false);
        assert!(by_key("scale.rss_mb_100k_devices")["met"].is_null());
    }

    #[test]
    fn the_report_embeds_the_results_safely() {
        let h = html(&json!({"note": "</script><b>"})).unwrap();
        assert!(h.contains("<\\/script><b>"));
        assert!(!h.contains("/*RESULTS_JSON*/"));
        assert!(!h.contains("http://") && !h.contains("https://"));
    }
}

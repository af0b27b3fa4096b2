//! `meshward bench` as a user runs it: the real binary, its results.json and report.html.
//! Figures are not asserted (performance is measured, never asserted by tests); only that the
//! parts run and that the documents carry every key.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str], out: &Path) -> (Value, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .arg("bench")
        .args(args)
        .args(["--quick", "--json", "--out"])
        .arg(out)
        .output()
        .expect("meshward runs");
    assert!(
        o.status.success(),
        "meshward bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let printed: Value = serde_json::from_slice(&o.stdout).expect("--json prints one JSON object");
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let file: Value = serde_json::from_str(&text).expect("results.json parses");
    (printed, file)
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// Every key of the schema is present, null when its part did not run.
fn has_schema(r: &Value) {
    for key in [
        "version",
        "quick",
        "machine",
        "parts",
        "ceiling",
        "crypto",
        "consensus",
        "direct",
        "mqtt",
        "mqtt_gateway",
        "fleet",
        "scale",
        "ratios",
        "targets",
    ] {
        assert!(r.get(key).is_some(), "results.json lacks {key}: {r}");
    }
    for key in [
        "anchor_tx_vs_ceiling",
        "messages_vs_ceiling",
        "direct_vs_mqtt_throughput",
        "direct_vs_mqtt_latency_p50",
        "direct_oneshot_vs_mqtt_throughput",
        "mqtt_gateway_vs_mosquitto_throughput",
        "mqtt_gateway_vs_mosquitto_latency_p50",
    ] {
        assert!(r["ratios"].get(key).is_some(), "ratios lacks {key}");
    }
    let targets = r["targets"].as_array().expect("targets is a list");
    assert_eq!(targets.len(), 20);
    for key in [
        "scale.disk_bytes_per_message_fleet_rate",
        "scale.idle_bytes_per_hour",
        "scale.validators_10_vs_4",
        "scale.unconfirmed_after_tail.7",
        "scale.unconfirmed_after_tail.10",
        "scale.store_open_ms_1m_anchors",
        "ratios.mqtt_gateway_vs_mosquitto_throughput",
        "ratios.mqtt_gateway_vs_mosquitto_latency_p50",
        "ratios.direct_oneshot_vs_mqtt_throughput",
        "fleet.msgs_per_s",
        "fleet.final_ms.p50",
    ] {
        assert!(
            targets.iter().any(|t| t["key"] == key),
            "targets lack {key}"
        );
    }
    for t in targets {
        for k in ["key", "label", "op", "target", "value", "met"] {
            assert!(t.get(k).is_some(), "target lacks {k}: {t}");
        }
    }
}

#[test]
fn bench_crypto_quick_writes_the_ceiling_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let (printed, r) = bench(&["crypto"], dir.path());
    assert_eq!(printed, r, "--json prints what results.json holds");
    has_schema(&r);
    assert_eq!(r["quick"], true);
    assert_eq!(r["parts"]["crypto"]["status"], "ok");
    for key in [
        "ceiling.verify_batch_per_s_per_core",
        "ceiling.verify_batch_per_s_all_cores",
        "ceiling.anchors_per_s",
        "crypto.hpke.oneshot_seal_per_s",
        "crypto.hpke.oneshot_open_per_s",
        "crypto.hpke.session_seal_per_s",
        "crypto.hpke.session_open_per_s",
    ] {
        let v = at(&r, key).as_f64();
        assert!(v.is_some_and(|v| v > 0.0), "{key} = {:?}", at(&r, key));
    }
    assert!(r["ceiling"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert_eq!(r["ceiling"]["validators"], 4);
    // Parts that did not run leave null, and so do the ratios that need them.
    assert!(r["consensus"].is_null());
    assert!(r["ratios"]["anchor_tx_vs_ceiling"].is_null());

    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("report.html");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("\"verify_batch_per_s_all_cores\""));
    // Self-contained: nothing is fetched from anywhere.
    assert!(!html.contains("<script src") && !html.contains("<link"));
}

#[test]
fn bench_mqtt_quick_measures_or_skips_with_the_install_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = bench(&["mqtt"], dir.path());
    has_schema(&r);
    match r["parts"]["mqtt"]["status"].as_str() {
        Some("skipped") => {
            let why = r["parts"]["mqtt"]["reason"].as_str().unwrap_or("");
            assert!(why.contains("apt-get install"), "skip reason: {why}");
            assert!(r["mqtt"].is_null());
            eprintln!("mosquitto is not installed: the mqtt part skipped, as it should ({why})");
        }
        Some("ok") => {
            for key in [
                "mqtt.qos1.msgs_per_s",
                "mqtt.qos1.latency_us.p50",
                "mqtt.qos1.latency_us.p99",
            ] {
                let v = at(&r, key).as_f64();
                assert!(v.is_some_and(|v| v > 0.0), "{key} = {:?}", at(&r, key));
            }
        }
        other => panic!(
            "mqtt part neither ran nor skipped: {other:?}: {}",
            r["parts"]
        ),
    }
}

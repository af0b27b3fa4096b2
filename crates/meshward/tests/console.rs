//! The operator's console in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver), against a real devnet with simulated devices. It checks what a person would:
//! the validators and devices of `devnet.json` are listed, the height advances, a device revoked
//! through the API shows as revoked with an alert, and a validator killed with `meshward devnet
//! kill` shows as down while the devnet goes on. It saves screenshots (desktop and phone size)
//! under the test's temp dir and `$CARGO_TARGET_TMPDIR/console-*.png`.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::meshward;
use meshward_testkit::{free_ports, have_tool, wait_for};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);
const DEVICES: usize = 5;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGINT: the devnet stops its nodes; chromedriver just exits.
        meshward_testkit::int(self.0.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn devnet_file(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).ok()?).ok()
}

/// Runs a script in the page and returns its value.
async fn js(c: &fantoccini::Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Polls a page script until `f` accepts its value.
async fn page_until(
    c: &fantoccini::Client,
    what: &str,
    script: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + MIN;
    loop {
        let v = js(c, script).await;
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the console to show {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &fantoccini::Client, dir: &Path, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &png).unwrap();
    if let Some(t) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::write(Path::new(t).join(name), &png);
    }
    path
}

#[test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver): run with --include-ignored"]
fn console_shows_the_fleet_a_revocation_and_a_killed_validator() {
    for tool in ["chromium", "chromedriver"] {
        assert!(
            have_tool(tool),
            "this test needs {tool} (apt-get install chromium chromium-driver; .ci/run does)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let base = free_ports(40);
    let devnet = Running(
        meshward()
            .args(["--json", "devnet", "--dir"])
            .arg(&dir)
            .args(["--base-port", &base.to_string()])
            .args(["--devices", &DEVICES.to_string(), "--device-rate", "10"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("devnet.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let file = wait_for("devnet.json with its devices", 2 * MIN, || {
        let f = devnet_file(&dir)?;
        (f["devices"].as_array()?.len() == DEVICES).then_some(f)
    });
    let api = file["nodes"][0]["api"].as_str().unwrap().to_string();
    let validators: Vec<String> = file["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["peer_id"].as_str().unwrap().to_string())
        .collect();
    let devices: Vec<String> = file["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let token = std::fs::read_to_string(file["nodes"][0]["token_file"].as_str().unwrap())
        .unwrap()
        .trim()
        .to_string();
    // The devices are enrolled once the devnet's node lists them.
    let node = meshward_api::client::ApiClient::new(&api).unwrap();
    wait_for("the devices to be enrolled", 2 * MIN, || {
        (node.all_devices().ok()?.len() == DEVICES).then_some(())
    });

    let driver_port = free_ports(1);
    let _driver = Running(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = tmp.path().join("chrome-profile");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = fantoccini::ClientBuilder::new(connector);
        builder.capabilities(caps);
        let webdriver = format!("http://127.0.0.1:{driver_port}");
        let deadline = tokio::time::Instant::now() + MIN;
        let c = loop {
            match builder.connect(&webdriver).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot start a chromium session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        c.goto(&format!("{api}/")).await.unwrap();

        // Every validator and every device of devnet.json is listed.
        let shown = page_until(
            &c,
            "the four validators",
            "return [...document.querySelectorAll('#validators tr[data-validator]')].map(r => r.dataset.validator)",
            |v| v.as_array().is_some_and(|a| a.len() == validators.len()),
        )
        .await;
        for v in &validators {
            assert!(shown.as_array().unwrap().contains(&json!(v)), "{v} not listed: {shown}");
        }
        let shown = page_until(
            &c,
            "the devices",
            "return [...document.querySelectorAll('#devices tr[data-device]')].map(r => r.dataset.device)",
            |v| v.as_array().is_some_and(|a| a.len() == DEVICES),
        )
        .await;
        for d in &devices {
            assert!(shown.as_array().unwrap().contains(&json!(d)), "{d} not listed: {shown}");
        }

        // The height advances, and blocks and messages stream in.
        let height = || async {
            js(&c, "return Number(document.getElementById('s-height').textContent)")
                .await
                .as_u64()
                .unwrap_or(0)
        };
        let h0 = height().await;
        page_until(
            &c,
            "a higher height",
            "return Number(document.getElementById('s-height').textContent)",
            |v| v.as_u64().is_some_and(|h| h > h0),
        )
        .await;
        page_until(
            &c,
            "live blocks and messages",
            "return [document.querySelectorAll('#blocks tbody tr').length, document.querySelectorAll('#messages tbody tr').length]",
            |v| v[0].as_u64() > Some(0) && v[1].as_u64() > Some(0),
        )
        .await;
        let desktop = screenshot(&c, tmp.path(), "console-desktop.png").await;

        // A device revoked through the API shows as revoked, with an alert.
        let victim = devices[0].clone();
        let r = meshward_testkit::http(
            api.rsplit(':').next().unwrap().parse().unwrap(),
            "POST",
            "/v1/admin/revoke",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            json!({ "device": victim, "reason": "stolen" }).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        page_until(
            &c,
            "the revoked device",
            &format!("const r = document.querySelector('#devices tr[data-device=\"{victim}\"]'); return r ? r.dataset.status : null"),
            |v| v == "revoked",
        )
        .await;
        page_until(
            &c,
            "a revocation alert",
            &format!("return [...document.querySelectorAll('#alerts li[data-kind=\"device_revoked\"]')].some(li => li.textContent.includes('{victim}'))"),
            |v| v == true,
        )
        .await;

        // A validator killed with `meshward devnet kill` shows as down; the devnet goes on.
        let out = meshward()
            .args(["devnet", "kill", "3", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let killed = &validators[3];
        page_until(
            &c,
            "the killed validator down",
            &format!("const r = document.querySelector('#validators tr[data-validator=\"{killed}\"] .st'); return r ? r.textContent : null"),
            |v| v == "down",
        )
        .await;
        page_until(
            &c,
            "an alert for the validator that stopped signing",
            "return [...document.querySelectorAll('#alerts li[data-kind=\"validator_not_signing\"]')].length",
            |v| v.as_u64() == Some(1),
        )
        .await;
        let h1 = height().await;
        page_until(
            &c,
            "the chain going on without node3",
            "return Number(document.getElementById('s-height').textContent)",
            |v| v.as_u64().is_some_and(|h| h > h1 + 3),
        )
        .await;
        assert!(devnet_file(&dir).unwrap()["nodes"][3]["pid"].is_null());

        // Dark and light, and a phone: nothing wider than the screen.
        let light = js(&c, "return document.documentElement.classList.contains('light')").await;
        c.find(fantoccini::Locator::Id("theme"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let toggled = js(&c, "return document.documentElement.classList.contains('light')").await;
        assert_ne!(light, toggled, "the theme button toggles dark and light");
        let wide = screenshot(&c, tmp.path(), "console-down.png").await;
        c.set_window_size(390, 844).await.unwrap();
        page_until(
            &c,
            "the phone layout without horizontal scrolling",
            "return document.documentElement.scrollWidth <= window.innerWidth",
            |v| v == true,
        )
        .await;
        let phone = screenshot(&c, tmp.path(), "console-phone.png").await;
        println!(
            "screenshots: {} {} {}",
            desktop.display(),
            wide.display(),
            phone.display()
        );
        c.close().await.unwrap();
    });
    drop(devnet);
}

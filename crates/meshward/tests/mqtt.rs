//! The MQTT front door with real processes and real MQTT clients (Debian's mosquitto_pub and
//! mosquitto_sub, and rumqttc as a client library) on a 4-validator cluster: custodial devices
//! exchange messages both ways, with an SDK device too; receipts prove offline; bad logins and a
//! forbidden publish are refused; a device logging in at another custodian takes it over (the
//! first closes its session); a device fails over to its other custodian and gets what was
//! queued for it once; a revoked device's live session is closed within one block.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{cli, s, Fleet, MIN};
use meshward_testkit::{have_tool, never};
use serde_json::Value;

const TOOLS: &str = "needs mosquitto_pub and mosquitto_sub (apt-get install mosquitto-clients): run with --include-ignored";

struct MqttDev {
    id: String,
    password: String,
    custodians: Vec<String>,
}

/// `meshward mqtt add` through node `i`.
fn mqtt_add(f: &Fleet, i: usize, group: &str) -> MqttDev {
    let out = cli(&[
        s("mqtt"),
        s("add"),
        s("--api"),
        f.api(i),
        s("--admin-key"),
        f.admin_key(),
        s("--group"),
        s(group),
    ])
    .unwrap();
    assert_eq!(out["username"], out["device_id"]);
    let custodians: Vec<String> = out["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(custodians.len(), 2, "{out}");
    assert!(custodians.contains(&f.c.nodes[i].peer_id), "{out}");
    MqttDev {
        id: out["device_id"].as_str().unwrap().to_string(),
        password: out["password"].as_str().unwrap().to_string(),
        custodians,
    }
}

/// A running mosquitto_sub (MQTT 5, QoS 1, debug lines on): every line it prints.
struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn start(port: u16, d: &MqttDev, client_id: &str, topics: &[&str]) -> Sub {
        // Line-buffered: a pipe would otherwise hold its output until it exits.
        let mut cmd = Command::new("stdbuf");
        cmd.args([
            "-oL",
            "-eL",
            "mosquitto_sub",
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args([
            "-u",
            &d.id,
            "-P",
            &d.password,
            "-i",
            client_id,
            "-q",
            "1",
            "-d",
        ])
        .args(["-F", "MSG|%t|%p|%P"]);
        for t in topics {
            cmd.args(["-t", t]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        let sub = Sub { child, lines };
        sub.wait("SUBACK", |l| l.contains("received SUBACK"));
        sub
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Messages received: `(topic, payload, properties)`.
    fn messages(&self) -> Vec<(String, String, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut p = l.strip_prefix("MSG|")?.splitn(3, '|');
                Some((
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                    p.next().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }

    /// Polls `f` until it gives a value; fails after [`MIN`] with everything printed so far.
    fn poll<T>(&self, what: &str, f: impl Fn(&Sub) -> Option<T>) -> T {
        let end = std::time::Instant::now() + MIN;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                std::time::Instant::now() < end,
                "no {what} within {MIN:?}; mosquitto_sub printed:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        self.poll(what, |s| s.lines().into_iter().find(|l| f(l)))
    }

    fn wait_message(&self, payload: &str) -> (String, String, String) {
        self.poll(&format!("message {payload:?}"), |s| {
            s.messages().into_iter().find(|m| m.1 == payload)
        })
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto_pub of one QoS 1 message; `(exit code, its debug output)`.
fn publish(
    port: u16,
    creds: Option<(&str, &str)>,
    v5: bool,
    topic: &str,
    msg: &str,
) -> (i32, String) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-d"])
        .args(["-t", topic, "-m", msg]);
    if v5 {
        cmd.args(["-V", "mqttv5"]);
    }
    if let Some((u, p)) = creds {
        cmd.args(["-u", u, "-P", p]);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn to(d: &str) -> String {
    format!("meshward/v1/to/{d}")
}

/// The node index of a peer id.
fn node_of(f: &Fleet, peer: &str) -> usize {
    f.c.nodes.iter().position(|n| n.peer_id == peer).unwrap()
}

/// Publishes with rumqttc (MQTT 5) and returns the PUBACK's reason.
fn lib_publish(
    f: &Fleet,
    port: u16,
    d: &MqttDev,
    topic: &str,
    msg: &str,
) -> rumqttc::v5::mqttbytes::v5::PubAckReason {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
    f.rt.block_on(async {
        let mut o = MqttOptions::new(format!("lib-{}", &d.id[..16]), "127.0.0.1", port);
        o.set_credentials(d.id.clone(), d.password.clone());
        let (client, mut ev) = AsyncClient::new(o, 10);
        client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                msg.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        let reason = tokio::time::timeout(MIN, async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(a))) => return a.reason,
                    // rumqttc turns a refusing PUBACK into an error.
                    Err(ConnectionError::MqttState(StateError::PubAckFail { reason })) => {
                        return reason
                    }
                    Ok(_) => {}
                    Err(e) => panic!("rumqttc: {e}"),
                }
            }
        })
        .await
        .expect("a PUBACK within a minute");
        let _ = client.disconnect().await;
        reason
    })
}

#[test]
#[ignore = "needs mosquitto_pub and mosquitto_sub (apt-get install mosquitto-clients): run with --include-ignored"]
fn mqtt_devices_exchange_prove_fail_over_and_are_revoked_live() {
    for tool in ["mosquitto_pub", "mosquitto_sub"] {
        assert!(have_tool(tool), "this test {TOOLS}");
    }
    let f = Fleet::start_mqtt();
    let a = mqtt_add(&f, 0, "fleet");
    let b = mqtt_add(&f, 1, "fleet");
    let c = mqtt_add(&f, 2, "other");
    let sdk = f.device("sdk", &["fleet"]);
    // The device record on a custodian names the custodians.
    let rec = f.device_json(0, &a.id).unwrap();
    let mut listed: Vec<String> = rec["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut want = a.custodians.clone();
    want.sort();
    assert_eq!(listed, want, "{rec}");
    let h = (0..4).filter_map(|i| f.c.height(i)).max().unwrap();
    f.c.wait_height(&[0, 1, 2, 3], h, MIN);
    let (pa, pb) = (f.mqtt_port(0), f.mqtt_port(1));

    // 1. B (mosquitto_pub, MQTT 5) to A (mosquitto_sub at its custodian node0); B's receipt
    // names the commitment A saw, and its proof verifies offline.
    let sub_a = Sub::start(pa, &a, "a-sub", &["meshward/v1/inbox"]);
    let sub_b = Sub::start(
        pb,
        &b,
        "b-sub",
        &["meshward/v1/inbox", "meshward/v1/receipts"],
    );
    let (code, out) = publish(pb, Some((&b.id, &b.password)), true, &to(&a.id), "b-to-a-1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("received PUBACK (Mid: 1, RC:0)"), "{out}");
    let (_, _, props) = sub_a.wait_message("b-to-a-1");
    assert!(props.contains(&format!("from:{}", b.id)), "{props}");
    let commitment = props
        .split_whitespace()
        .find_map(|p| p.strip_prefix("commitment:"))
        .unwrap()
        .to_string();
    let receipt = sub_b.wait(&format!("the receipt of {commitment}"), |l| {
        l.starts_with("MSG|meshward/v1/receipts|") && l.contains(&commitment)
    });
    let body: Value = serde_json::from_str(receipt.split('|').nth(2).unwrap()).unwrap();
    assert!(body["height"].as_u64().unwrap() > 0, "{receipt}");
    let verified = f.proof_verifies(3, &commitment);
    assert_eq!(verified["valid"], true, "{verified}");

    // 2. A to B with a client library (rumqttc, MQTT 5), and with MQTT 3.1.1 (mosquitto_pub).
    assert_eq!(
        lib_publish(&f, pa, &a, &to(&b.id), "a-to-b-lib"),
        rumqttc::v5::mqttbytes::v5::PubAckReason::Success
    );
    let (code, out) = publish(
        pa,
        Some((&a.id, &a.password)),
        false,
        &to(&b.id),
        "a-to-b-311",
    );
    assert_eq!(code, 0, "{out}");
    sub_b.wait_message("a-to-b-lib");
    let (_, _, props) = sub_b.wait_message("a-to-b-311");
    assert!(props.contains(&format!("from:{}", a.id)), "{props}");

    // 3. An SDK device and an MQTT device, both ways.
    let agent = f.agent(&sdk, &[0, 1, 2, 3]);
    f.wait_online(&sdk, &[0, 1, 2, 3]);
    let (code, out) = publish(
        pa,
        Some((&a.id, &a.password)),
        true,
        &to(&sdk.id),
        "a-to-sdk",
    );
    assert_eq!(code, 0, "{out}");
    agent.wait_line("the MQTT device's message", |l| {
        l["text"] == "a-to-sdk" && l["from"] == a.id.as_str()
    });
    let sent = f.send(&sdk, &a.id, "sdk-to-a", &[2, 3]).unwrap();
    let (_, _, props) = sub_a.wait_message("sdk-to-a");
    assert!(props.contains(&format!("from:{}", sdk.id)), "{props}");
    assert!(
        props.contains(sent["commitment"].as_str().unwrap()),
        "{props} {sent}"
    );
    agent.stop();

    // 4. No plaintext in any gateway's data dir (the custodians held it in memory only).
    for m in [
        "b-to-a-1",
        "a-to-b-lib",
        "a-to-b-311",
        "a-to-sdk",
        "sdk-to-a",
    ] {
        assert_eq!(f.on_disk(m.as_bytes()), None, "plaintext {m:?} on disk");
    }
    assert_eq!(f.on_disk(a.password.as_bytes()), None, "a password on disk");

    // 5. Refused: no credentials, a wrong password, a forbidden publish (MQTT 5 reason 0x87),
    // from which nothing is delivered.
    let (code, out) = publish(pa, None, true, &to(&a.id), "anonymous");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("CONNACK (134)"), "no credentials: {out}");
    let (code, out) = publish(pa, Some((&a.id, &b.password)), true, &to(&b.id), "wrong");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("CONNACK (134)"), "wrong password: {out}");
    assert_eq!(
        lib_publish(
            &f,
            f.mqtt_port(node_of(&f, &c.custodians[0])),
            &c,
            &to(&a.id),
            "forbidden"
        ),
        rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
    );
    never(
        "the forbidden message delivered",
        Duration::from_secs(3),
        || sub_a.messages().iter().any(|m| m.1 == "forbidden"),
    );

    // 6. One signer at a time: A logging in at its other custodian takes the device over; the
    // first custodian closes A's session there (MQTT 5 0x8E) and stops signing for it.
    let other = a
        .custodians
        .iter()
        .map(|p| node_of(&f, p))
        .find(|&i| i != 0)
        .unwrap();
    assert_eq!(
        lib_publish(&f, f.mqtt_port(other), &a, &to(&b.id), "taken-over"),
        rumqttc::v5::mqttbytes::v5::PubAckReason::Success
    );
    sub_a.wait("the server's DISCONNECT (0x8E)", |l| {
        l.contains("DISCONNECT (142)")
    });
    assert!(
        f.c.log(0).lines().any(
            |l| l.contains("custodial device released to another custodian") && l.contains(&a.id)
        ),
        "node0 did not log the release"
    );
    sub_b.wait_message("taken-over");

    // 7. Failover: A's gateway dies; what is sent to A meanwhile waits in the mailboxes, and A
    // gets it once from its other custodian, where it goes on publishing.
    let mut f = f;
    f.c.kill(0);
    // mosquitto_sub would retry node0 for ever; the device moves on.
    drop(sub_a);
    for i in 1..=3 {
        let (code, out) = publish(
            pb,
            Some((&b.id, &b.password)),
            true,
            &to(&a.id),
            &format!("queued-{i}"),
        );
        assert_eq!(code, 0, "{out}");
    }
    let po = f.mqtt_port(other);
    let sub_a2 = Sub::start(po, &a, "a-sub", &["meshward/v1/inbox"]);
    for i in 1..=3 {
        sub_a2.wait_message(&format!("queued-{i}"));
    }
    never(
        "a queued message delivered twice",
        Duration::from_secs(3),
        || {
            let m = sub_a2.messages();
            (1..=3).any(|i| m.iter().filter(|x| x.1 == format!("queued-{i}")).count() > 1)
        },
    );
    let (code, out) = publish(
        po,
        Some((&a.id, &a.password)),
        true,
        &to(&b.id),
        "after-failover",
    );
    assert_eq!(code, 0, "{out}");
    sub_b.wait_message("after-failover");

    // 8. Revocation closes A's live session within one block, and A cannot log in again.
    let revoked = f.revoke(2, &a.id);
    let at = revoked["height"].as_u64().unwrap();
    sub_a2.wait("the server's DISCONNECT (0x87)", |l| {
        l.contains("DISCONNECT (135)")
    });
    // The gateway logs the committed height it had reached when it closed the session.
    let log = f.c.log(other);
    let line = log
        .lines()
        .find(|l| l.contains("revoked device's MQTT connections closed") && l.contains(&a.id))
        .unwrap_or_else(|| panic!("no close logged by node{other}"));
    let closed_at: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("height="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        closed_at <= at + 1,
        "closed at height {closed_at}, revoked at {at}: {line}"
    );
    let (code, out) = publish(po, Some((&a.id, &a.password)), true, &to(&b.id), "revoked");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("CONNACK (135)"), "revoked login: {out}");
}

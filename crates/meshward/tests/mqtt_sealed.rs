//! MQTT sealed mode with real processes and a real MQTT client library (rumqttc, MQTT 5, through
//! the SDK's `sealed_client` and `meshward mqtt sealed`): a device that holds its own keys and
//! speaks only MQTT logs in with a signed token, sends a message it sealed and anchored itself,
//! receives one from an SDK device as mail, opens and acknowledges it, and its anchor proves
//! offline; no gateway holds either plaintext. Tokens for another gateway, stale, replayed or
//! signed by another key are refused, as is an envelope the device did not send, and a revoked
//! device is disconnected and cannot log in again.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::fleet::{cli, s, Dev, Fleet, MIN};
use meshward_core::envelope::seal_oneshot;
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{Request, Response};
use meshward_sdk::sealed::{self, LoginToken};
use meshward_sdk::sealed_client::{PubAckReason, SealedClient, SealedError};
use rand::rngs::OsRng;
use rand::RngCore;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;

fn now_ms() -> u64 {
    meshward_core::clock::now_ms()
}

/// A token for `dev` to log in at `node`, signed by `signer`'s key at `time_ms`.
fn token(f: &Fleet, dev: &Dev, signer: &Dev, node: usize, time_ms: u64) -> String {
    let mut random = [0u8; 24];
    OsRng.fill_bytes(&mut random);
    LoginToken::sign(
        &signer.kp.sign,
        &f.c.genesis.chain_id,
        &dev.pk,
        &PublicKey::from_peer_id(&f.c.nodes[node].peer_id).unwrap(),
        time_ms,
        random,
    )
    .to_text()
}

fn connect(
    f: &Fleet,
    node: usize,
    dev: &Dev,
    password: String,
) -> Result<SealedClient, SealedError> {
    f.rt.block_on(SealedClient::connect(
        "127.0.0.1",
        f.mqtt_port(node),
        &dev.pk,
        password,
        MIN,
    ))
}

fn refusal(r: Result<SealedClient, SealedError>) -> ConnectReturnCode {
    match r {
        Err(SealedError::Refused(code)) => code,
        Err(e) => panic!("not a login refusal: {e}"),
        Ok(_) => panic!("the login was accepted"),
    }
}

/// `meshward mqtt sealed` through node 1's API (and so its MQTT port).
fn sealed_cli(f: &Fleet, dev: &Dev, args: &[&str]) -> serde_json::Value {
    let mut a = vec![
        s("mqtt"),
        s("sealed"),
        s("--api"),
        f.api(1),
        s("--key"),
        dev.key.to_string_lossy().to_string(),
    ];
    a.extend(args.iter().map(s));
    cli(&a).unwrap()
}

#[test]
fn a_sealed_mode_device_sends_and_receives_over_mqtt_and_no_gateway_sees_plaintext() {
    let f = Fleet::start_mqtt();
    let dev = f.device("sealed", &["fleet"]);
    let sdk = f.device("sdk", &["fleet"]);
    let other = f.device("other", &["fleet"]);
    let h = (0..4).filter_map(|i| f.c.height(i)).max().unwrap();
    f.c.wait_height(&[0, 1, 2, 3], h, MIN);
    let agent = f.agent(&sdk, &[0, 1, 2, 3]);
    f.wait_online(&sdk, &[0, 1, 2, 3]);

    // 1. Refused logins, at node 3 (its limiter, not node 1's, counts them): a token for another
    // gateway, one outside the time window, one signed by another device's key, a password that
    // is no token, and a token used twice.
    let bad = ConnectReturnCode::BadUserNamePassword;
    for (what, password) in [
        ("another gateway's", token(&f, &dev, &dev, 2, now_ms())),
        ("a stale", token(&f, &dev, &dev, 3, now_ms() - 300_000)),
        ("another key's", token(&f, &dev, &other, 3, now_ms())),
        ("a malformed", "mw1:not-a-token".to_string()),
    ] {
        assert_eq!(refusal(connect(&f, 3, &dev, password)), bad, "{what} token");
    }
    let t = token(&f, &dev, &dev, 3, now_ms());
    f.rt.block_on(connect(&f, 3, &dev, t.clone()).unwrap().disconnect());
    assert_eq!(refusal(connect(&f, 3, &dev, t)), bad, "a replayed token");

    // 2. Send (`meshward mqtt sealed`): sealed and signed by the device, routed by the gateway;
    // the SDK device opens it, and the anchor proves offline.
    let sent = sealed_cli(&f, &dev, &["--to", &sdk.id, "--message", "sealed-to-sdk"]);
    assert!(sent["sent"]["height"].as_u64().unwrap() > 0, "{sent}");
    assert!(sent["sent"]["replicas"].as_u64().unwrap() >= 3, "{sent}");
    agent.wait_line("the sealed device's message", |l| {
        l["text"] == "sealed-to-sdk" && l["from"] == dev.id.as_str()
    });
    let verified = f.proof_verifies(0, sent["sent"]["commitment"].as_str().unwrap());
    assert_eq!(verified["valid"], true, "{verified}");

    // 3. Receive: the SDK device's message comes as mail, opens only on the device, and is
    // acknowledged (a later session gets nothing more).
    let from_sdk = f.send(&sdk, &dev.id, "sdk-to-sealed", &[2, 3]).unwrap();
    let got = sealed_cli(&f, &dev, &["--receive", "60", "--count", "1"]);
    let r = &got["received"][0];
    assert_eq!(r["text"], "sdk-to-sealed", "{got}");
    assert_eq!(r["from"], sdk.id.as_str(), "{got}");
    assert_eq!(r["commitment"], from_sdk["commitment"], "{got} {from_sdk}");
    agent.stop();

    // 4. No gateway's data dir or log holds either plaintext.
    for m in ["sealed-to-sdk", "sdk-to-sealed"] {
        assert_eq!(f.on_disk(m.as_bytes()), None, "plaintext {m:?} on disk");
    }

    // 5. An envelope the device did not send is refused: the reply says so, the PUBACK only
    // that the frame was taken; nothing is stored.
    let mut c = connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    assert!(
        f.rt.block_on(c.next_mail(deadline)).unwrap().is_none(),
        "acknowledged mail came again"
    );
    let forged = seal_oneshot(
        &mut OsRng,
        &other.kp,
        sdk.pk,
        &sdk.kp.enc_key(),
        1,
        now_ms(),
        b"x",
    )
    .unwrap();
    let resp = f.rt.block_on(c.request(&Request::Deposit(forged))).unwrap();
    assert!(
        matches!(&resp, Response::Error { code, .. } if code == "not_sender"),
        "{resp:?}"
    );

    // 6. Refusing PUBACKs, each ending its connection: a frame that does not decode (0x99), and
    // a plaintext topic the gateway cannot seal for this device (0x90).
    let r =
        f.rt.block_on(c.publish(sealed::TOPIC, b"\x01\x01garbage".to_vec()));
    assert!(
        matches!(
            r,
            Err(SealedError::PubAck(PubAckReason::PayloadFormatInvalid))
        ),
        "{r:?}"
    );
    let mut c = connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();
    let r =
        f.rt.block_on(c.publish(&format!("meshward/v1/to/{}", sdk.id), b"plain".to_vec()));
    assert!(
        matches!(r, Err(SealedError::PubAck(PubAckReason::TopicNameInvalid))),
        "{r:?}"
    );

    // 7. Revocation closes a live session (0x87) and refuses the device's next login.
    let c = connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();
    f.revoke(2, &dev.id);
    meshward_testkit::wait_for("the sealed session closed by the server", MIN, || {
        c.kicked()
    });
    assert_eq!(c.kicked().as_deref(), Some("NotAuthorized"));
    assert_eq!(
        refusal(connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms()))),
        ConnectReturnCode::NotAuthorized
    );
}

//! MQTT sealed mode with real processes and a real MQTT client library (rumqttc, MQTT 5): a
//! device that holds its own keys and speaks only MQTT logs in with a signed token, sends a
//! message it sealed and anchored itself, receives one from an SDK device as mail and opens it,
//! and its anchor proves offline; no gateway holds the plaintext. Tokens for another gateway,
//! stale, replayed or signed by another key are refused, as is an envelope the device did not
//! send, and a revoked device is disconnected and cannot log in again.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{cli, s, Dev, Fleet, MIN};
use meshward_core::envelope::{seal_oneshot, Envelope, Receiver};
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{Request, Response, TxState};
use meshward_core::tx::Recipient;
use meshward_sdk::sealed::{self, Inbound, LoginToken};
use rand::rngs::OsRng;
use rand::RngCore;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;

fn token(f: &Fleet, dev: &Dev, signer: &Dev, node: usize, now_ms: u64) -> String {
    let mut random = [0u8; 24];
    OsRng.fill_bytes(&mut random);
    LoginToken::sign(
        &signer.kp.sign,
        &f.c.genesis.chain_id,
        &dev.pk,
        &PublicKey::from_peer_id(&f.c.nodes[node].peer_id).unwrap(),
        now_ms,
        random,
    )
    .to_text()
}

fn now_ms() -> u64 {
    meshward_core::clock::now_ms()
}

/// A sealed-mode MQTT session, driven by rumqttc on the fleet's runtime.
struct SealedClient {
    client: AsyncClient,
    inbound: mpsc::Receiver<Vec<u8>>,
    acks: mpsc::Receiver<PubAckReason>,
    /// The server's DISCONNECT reason, once it sent one.
    kicked: Arc<Mutex<Option<String>>>,
    mail: Vec<(u64, Envelope)>,
    next: u32,
}

/// Polls until the CONNACK: the event loop, or the refusal.
async fn connack(ev: &mut EventLoop) -> Result<(), ConnectReturnCode> {
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(e) => panic!("rumqttc before CONNACK: {e}"),
        }
    }
}

impl SealedClient {
    fn connect(
        f: &Fleet,
        node: usize,
        dev: &Dev,
        password: String,
    ) -> Result<Self, ConnectReturnCode> {
        f.rt.block_on(async {
            let mut o = MqttOptions::new(
                format!("sealed-{}", &dev.id[..12]),
                "127.0.0.1",
                f.mqtt_port(node),
            );
            o.set_credentials(dev.id.clone(), password);
            o.set_max_packet_size(Some(128 * 1024));
            let (client, mut ev) = AsyncClient::new(o, 16);
            tokio::time::timeout(MIN, connack(&mut ev))
                .await
                .expect("a CONNACK within a minute")?;
            client
                .subscribe(sealed::INBOX, QoS::AtLeastOnce)
                .await
                .unwrap();
            // The test reads what it asked for; a full queue would stall the event loop, which
            // the test's deadlines would report.
            let (in_tx, inbound) = mpsc::channel(256);
            let (ack_tx, acks) = mpsc::channel(256);
            let kicked = Arc::new(Mutex::new(None));
            let k = kicked.clone();
            tokio::spawn(async move {
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = in_tx.send(p.payload.to_vec()).await;
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            let _ = ack_tx.send(a.reason).await;
                        }
                        // rumqttc turns a refusing PUBACK into an error.
                        Err(ConnectionError::MqttState(StateError::PubAckFail { reason })) => {
                            let _ = ack_tx.send(reason).await;
                        }
                        Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                            reason_code,
                            ..
                        })) => {
                            *k.lock().unwrap() = Some(format!("{reason_code:?}"));
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            Ok(SealedClient {
                client,
                inbound,
                acks,
                kicked,
                mail: Vec::new(),
                next: 0,
            })
        })
    }

    /// Publishes raw bytes on the sealed topic; the PUBACK's reason, and the reply to `id` if
    /// one comes (mail that arrives meanwhile is kept).
    fn publish(&mut self, f: &Fleet, frame: Vec<u8>, id: u32) -> (PubAckReason, Option<Response>) {
        f.rt.block_on(async {
            self.client
                .publish(sealed::TOPIC, QoS::AtLeastOnce, false, frame)
                .await
                .unwrap();
            let ack = tokio::time::timeout(MIN, self.acks.recv())
                .await
                .expect("a PUBACK within a minute")
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.inbound.recv()).await
                else {
                    return (ack, None);
                };
                match sealed::parse_inbound(&frame).unwrap() {
                    Inbound::Mail { number, envelope } => self.mail.push((number, *envelope)),
                    r @ Inbound::Reply { id: got, .. } if got == id => {
                        return (ack, Some(r.response().unwrap().unwrap()))
                    }
                    other => panic!("a reply to another request: {other:?}"),
                }
            }
        })
    }

    /// Sends a request; its PUBACK reason and reply.
    fn request(&mut self, f: &Fleet, req: &Request) -> (PubAckReason, Response) {
        self.next += 1;
        let id = self.next;
        let (ack, resp) = self.publish(f, sealed::request_frame(id, req), id);
        (ack, resp.unwrap_or_else(|| panic!("no reply to {req:?}")))
    }

    /// Waits for mail until `pred` holds for what has come.
    fn wait_mail(&mut self, f: &Fleet, pred: impl Fn(&[(u64, Envelope)]) -> bool) {
        f.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + MIN;
            while !pred(&self.mail) {
                let frame = tokio::time::timeout_at(deadline, self.inbound.recv())
                    .await
                    .expect("mail within a minute")
                    .unwrap();
                match sealed::parse_inbound(&frame).unwrap() {
                    Inbound::Mail { number, envelope } => self.mail.push((number, *envelope)),
                    other => panic!("an unasked reply: {other:?}"),
                }
            }
        });
    }
}

fn refused(r: Result<SealedClient, ConnectReturnCode>) -> ConnectReturnCode {
    match r {
        Ok(_) => panic!("the login was accepted"),
        Err(code) => code,
    }
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

    // 1. Refused logins, at node 3 (its limiter, not the main session's, counts them): a token
    // for another gateway, one outside the time window, one signed by another device's key, a
    // password that is no token, and a token used twice.
    let bad = ConnectReturnCode::BadUserNamePassword;
    for (what, password) in [
        ("another gateway's", token(&f, &dev, &dev, 2, now_ms())),
        ("a stale", token(&f, &dev, &dev, 3, now_ms() - 300_000)),
        ("another key's", token(&f, &dev, &other, 3, now_ms())),
        ("a malformed", "mw1:not-a-token".to_string()),
    ] {
        let r = SealedClient::connect(&f, 3, &dev, password);
        assert_eq!(refused(r), bad, "{what} token accepted");
    }
    let t = token(&f, &dev, &dev, 3, now_ms());
    drop(SealedClient::connect(&f, 3, &dev, t.clone()).unwrap());
    assert_eq!(
        refused(SealedClient::connect(&f, 3, &dev, t)),
        bad,
        "a replayed token"
    );
    let mut c = SealedClient::connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();

    // 2. Send: the device seals and signs the envelope and its anchor; the gateway routes both.
    let Response::Info { chain_id, .. } = c.request(&f, &Request::Info).1 else {
        panic!("no info")
    };
    assert_eq!(chain_id, f.c.genesis.chain_id);
    let Response::NextSeq(Some(seq)) = c.request(&f, &Request::NextSeq(dev.pk)).1 else {
        panic!("no next seq")
    };
    let Response::Device(Some(peer)) = c.request(&f, &Request::Lookup(sdk.pk)).1 else {
        panic!("sdk device not found")
    };
    let now = now_ms();
    let env = seal_oneshot(
        &mut OsRng,
        &dev.kp,
        sdk.pk,
        &peer.enc_key,
        1,
        now,
        b"sealed-to-sdk",
    )
    .unwrap();
    let (ack, resp) = c.request(&f, &Request::Deposit(env.clone()));
    assert_eq!(ack, PubAckReason::Success);
    assert!(
        matches!(resp, Response::Stored { replicas } if replicas >= 3),
        "{resp:?}"
    );
    let anchor = meshward_sdk::anchor::anchor_tx(
        &chain_id,
        dev.pk,
        &dev.kp.sign,
        seq,
        Recipient::Device(sdk.pk),
        &[&env],
        now,
    )
    .unwrap();
    let (ack, resp) = c.request(&f, &Request::SubmitTx(anchor.clone()));
    assert_eq!(ack, PubAckReason::Success);
    assert_eq!(resp, Response::TxAccepted(anchor.id()));
    agent.wait_line("the sealed device's message", |l| {
        l["text"] == "sealed-to-sdk" && l["from"] == dev.id.as_str()
    });

    // 3. Receive: the SDK device's message comes as mail, and opens only here.
    let sent = f.send(&sdk, &dev.id, "sdk-to-sealed", &[2, 3]).unwrap();
    c.wait_mail(&f, |m| !m.is_empty());
    let (number, incoming) = c.mail[0].clone();
    let opened = Receiver::new(&dev.kp)
        .open(&incoming, &peer.sign_key.verifying_key().unwrap())
        .unwrap();
    assert_eq!(opened.payload, b"sdk-to-sealed");
    assert_eq!(
        incoming.commitment().to_hex(),
        sent["commitment"].as_str().unwrap()
    );
    let (_, resp) = c.request(&f, &Request::AckMailbox { up_to: number });
    assert_eq!(resp, Response::Acked { removed: 1 });

    // 4. An envelope this device did not send is refused: the reply says so, the PUBACK only
    // that the frame was taken.
    let (ack, resp) = c.request(&f, &Request::Deposit(incoming.clone()));
    assert_eq!(ack, PubAckReason::Success);
    assert!(
        matches!(&resp, Response::Error { code, .. } if code == "not_sender"),
        "{resp:?}"
    );
    // 5. The device's anchor is final and proves offline.
    let deadline = std::time::Instant::now() + MIN;
    loop {
        let (_, st) = c.request(&f, &Request::TxStatus(anchor.id()));
        if matches!(st, Response::TxStatus(TxState::Committed { .. })) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "anchor never final: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let verified = f.proof_verifies(0, &env.commitment().to_hex());
    assert_eq!(verified["valid"], true, "{verified}");

    // 6. No gateway's data dir or log holds either plaintext.
    for m in ["sealed-to-sdk", "sdk-to-sealed"] {
        assert_eq!(f.on_disk(m.as_bytes()), None, "plaintext {m:?} on disk");
    }
    agent.stop();

    // 7. Refusing PUBACKs: a frame that does not decode (0x99), a plaintext topic the gateway
    // cannot seal for this device (0x90). rumqttc ends a connection after a refusing PUBACK (and
    // its reconnect's token is spent), so each gets a new one.
    let (ack, _) = c.publish(&f, b"\x01\x01garbage".to_vec(), 0);
    assert_eq!(ack, PubAckReason::PayloadFormatInvalid);
    let mut c = SealedClient::connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();
    f.rt.block_on(async {
        c.client
            .publish(
                format!("meshward/v1/to/{}", sdk.id),
                QoS::AtLeastOnce,
                false,
                b"plain".to_vec(),
            )
            .await
            .unwrap();
        let ack = tokio::time::timeout(MIN, c.acks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack, PubAckReason::TopicNameInvalid);
    });

    let c = SealedClient::connect(&f, 1, &dev, token(&f, &dev, &dev, 1, now_ms())).unwrap();

    // 8. Revocation closes the session (0x87) and refuses the device's next login.
    cli(&[
        s("device"),
        s("revoke"),
        s("--api"),
        f.api(2),
        s("--admin-key"),
        f.admin_key(),
        dev.id.clone(),
    ])
    .unwrap();
    meshward_testkit::wait_for("the sealed session closed by the server", MIN, || {
        c.kicked.lock().unwrap().clone()
    });
    assert_eq!(c.kicked.lock().unwrap().as_deref(), Some("NotAuthorized"));
    assert_eq!(
        refused(SealedClient::connect(
            &f,
            1,
            &dev,
            token(&f, &dev, &dev, 1, now_ms())
        )),
        ConnectReturnCode::NotAuthorized
    );
}

//! The device-facing API against a real store: challenge auth and mailboxes, the device and
//! group listings, anchor proofs, the event stream, and the OpenAPI document.
//!
//! The chain (a synthetic fleet of 4 devices in group `fleet-0`):
//! - block 1 enrolls d0..d3;
//! - block 2 anchors d0 -> d1 and d1 -> d2;
//! - block 3: the admin revokes d2;
//! - block 4: d1 rotates its keys;
//! - block 5: d0 reports d3's equivocation, which revokes d3.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use meshward_core::auth::sign_challenge;
use meshward_core::block::{BlockHeader, CommitCertificate};
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::ids::{Keypair, SignKey};
use meshward_core::light::ProofFile;
use meshward_core::state::StateView;
use meshward_core::tx::{rotate_body, Anchor, Evidence, Recipient, Tx, TxBody};
use meshward_core::CertifiedBlock;
use meshward_node::api::{self, ROUTES};
use meshward_node::events::Event;
use meshward_node::ledger::Ledger;
use meshward_node::mailboxes::Mailboxes;
use meshward_node::mempool::{Mempool, MempoolLimits};
use meshward_node::metrics::Metrics;
use meshward_node::stats::ChainStats;
use meshward_node::txpool::TxPool;
use meshward_node::{ApiToken, Gateway, NodeIdentity};
use meshward_store::synth::{Synth, SYNTH_CHAIN_ID};
use meshward_store::MailboxLimits;
use meshward_testkit::wait_until_async;
use rand::rngs::OsRng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fx {
    _dir: tempfile::TempDir,
    gw: Arc<Gateway>,
    router: Router,
    genesis: Genesis,
    devices: Vec<Keypair>,
    /// d1's keys after its rotation.
    rotated: Keypair,
    /// Blocks 2 to 5, as committed.
    blocks: Vec<CertifiedBlock>,
}

fn certify(validators: &[SignKey], h: &BlockHeader) -> CommitCertificate {
    let keys: Vec<&SignKey> = validators.iter().collect();
    CommitCertificate::sign(&h.chain_id, h, 0, &keys)
}

fn fixture() -> Fx {
    fixture_with_mesh(Vec::new())
}

/// The fixture, with the mesh addresses the node reports.
fn fixture_with_mesh(mesh_addrs: Vec<String>) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let mut synth = Synth::create(dir.path(), 4).unwrap();
    synth.write_blocks(1, 0).unwrap();
    synth.write_blocks(1, 2).unwrap();
    let devices = synth.devices().to_vec();
    let admin = synth.admin().clone();
    let validators = synth.validators().to_vec();
    let genesis = synth.store().genesis().clone();
    let mut store = synth.into_store();
    let mut blocks = vec![store.block(2).unwrap().unwrap()];
    let chain = SYNTH_CHAIN_ID;
    let seq = |store: &meshward_store::Store, k: &meshward_core::ids::PublicKey| {
        store.state().account(k).map_or(0, |a| a.seq) + 1
    };
    let build = |store: &mut meshward_store::Store, blocks: &mut Vec<CertifiedBlock>, tx| {
        let last = blocks
            .last()
            .map(|b: &CertifiedBlock| b.certificate.clone());
        let h = store.next_height();
        let time = store.block(h - 1).unwrap().unwrap().block.header.time_ms + 1000;
        let cb = store
            .build_block(time, validators[0].public(), vec![tx], last, |hd| {
                certify(&validators, hd)
            })
            .unwrap();
        blocks.push(cb);
    };
    // Block 3: the admin revokes d2.
    let revoke = Tx::sign(
        chain,
        admin.public(),
        &admin,
        seq(&store, &admin.public()),
        TxBody::Revoke {
            device: devices[2].id(),
            reason: "stolen".into(),
        },
    );
    build(&mut store, &mut blocks, revoke);
    // Block 4: d1 rotates its keys.
    let rotated = Keypair::generate(&mut OsRng);
    let d1 = &devices[1];
    let s = seq(&store, &d1.id());
    let rotate = Tx::sign(
        chain,
        d1.id(),
        &d1.sign,
        s,
        rotate_body(chain, &d1.id(), s, &rotated),
    );
    build(&mut store, &mut blocks, rotate);
    // Block 5: d0 reports two different anchors d3 signed with one sequence number.
    let d3 = &devices[3];
    let s3 = seq(&store, &d3.id());
    let anchor = |c: u8| {
        Box::new(Tx::sign(
            chain,
            d3.id(),
            &d3.sign,
            s3,
            TxBody::Anchor(Anchor {
                recipient: Recipient::Device(devices[0].id()),
                commitment: Hash([c; 32]),
                count: 1,
                timestamp_ms: 1,
                size_bytes: 1,
            }),
        ))
    };
    let d0 = &devices[0];
    let evidence = Tx::sign(
        chain,
        d0.id(),
        &d0.sign,
        seq(&store, &d0.id()),
        TxBody::Evidence(Evidence::Equivocation {
            a: anchor(1),
            b: anchor(2),
        }),
    );
    build(&mut store, &mut blocks, evidence);

    let (gossip, _) = tokio::sync::mpsc::channel(16);
    let ledger = Ledger::new(store);
    let metrics = Arc::new(Metrics::new());
    let stats = Arc::new(ChainStats::new());
    let pool = Arc::new(TxPool::new(
        ledger.clone(),
        Mempool::new(MempoolLimits::default()),
        gossip,
        None,
        metrics.clone(),
        stats.clone(),
    ));
    let (mailboxes, _writer) = Mailboxes::open(
        &dir.path().join(meshward_node::MAILBOX_FILE_NAME),
        MailboxLimits::default(),
    )
    .unwrap();
    let gw = Arc::new(Gateway::new(
        ledger,
        pool,
        mailboxes,
        metrics,
        stats,
        NodeIdentity {
            id: validators[0].public(),
            mesh_addrs,
            api_url: "http://127.0.0.1:7700".into(),
            mqtt: None,
        },
        ApiToken::new(TOKEN).unwrap(),
    ));
    let router = api::router(gw.clone());
    Fx {
        _dir: dir,
        gw,
        router,
        genesis,
        devices,
        rotated,
        blocks,
    }
}

impl Fx {
    async fn call(&self, method: &str, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let (status, bytes) = self.call_raw(method, uri, body).await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    async fn call_raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, Body::from))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(body.to_string().into_bytes()))
            .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None).await
    }

    async fn nonce(&self) -> [u8; 32] {
        let (status, v) = self.post("/v1/challenge", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(v["expires_ms"].as_u64().unwrap() > meshward_core::clock::now_ms());
        hex::decode_array(v["nonce"].as_str().unwrap()).unwrap()
    }

    /// A signed credential for `device`'s account, signed with `key`.
    fn credential(&self, device: &Keypair, key: &SignKey, nonce: &[u8; 32], action: &str) -> Value {
        let sig = sign_challenge(key, SYNTH_CHAIN_ID, &device.id(), nonce, action);
        json!({
            "device": device.id().peer_id(),
            "nonce": hex::encode(nonce),
            "signature": hex::encode(&sig.0),
        })
    }

    fn with(mut cred: Value, extra: Value) -> Value {
        if let (Value::Object(m), Value::Object(e)) = (&mut cred, extra) {
            m.extend(e);
        }
        cred
    }

    fn waiting(&self, device: &Keypair) -> usize {
        self.gw.mailboxes.list(&device.id(), 0, 1024).unwrap().len()
    }

    /// Stores `envelope` for `device` through the mailbox writer, as a deposit would.
    async fn put(&self, device: &Keypair, envelope: &[u8]) -> u64 {
        // A fresh commitment each time: the writer refuses a replayed one.
        let mut c = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut c);
        self.gw
            .mailboxes
            .deposit(device.id(), Hash(c), envelope.to_vec())
            .await
            .unwrap()
    }
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// A minimal HTTP/1.1 exchange over a real socket: one request, `Connection: close`.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test]
async fn device_fetches_and_acks_its_mailbox_over_tcp() {
    let fx = fixture();
    let d0 = &fx.devices[0];
    let s1 = fx.put(d0, b"first envelope").await;
    let s2 = fx.put(d0, b"second envelope").await;
    fx.put(&fx.devices[1], b"someone else's").await;
    let addr = serve(fx.router.clone()).await;

    let (status, ch) = http(addr, "POST", "/v1/challenge", &json!({})).await;
    assert_eq!(status, 200, "{ch}");
    let nonce: [u8; 32] = hex::decode_array(ch["nonce"].as_str().unwrap()).unwrap();
    let body = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/fetch"),
        json!({ "after": 0 }),
    );
    let (status, v) = http(addr, "POST", "/v1/mailbox/fetch", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "envelopes": [
            { "seq": s1, "envelope": hex::encode(b"first envelope") },
            { "seq": s2, "envelope": hex::encode(b"second envelope") },
        ]})
    );

    // `after` and `max` page through the mailbox.
    let nonce = fx.nonce().await;
    let body = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/fetch"),
        json!({ "after": s1, "max": 1 }),
    );
    let (status, v) = fx.post("/v1/mailbox/fetch", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["envelopes"].as_array().unwrap().len(), 1);
    assert_eq!(v["envelopes"][0]["seq"], s2);

    let (_, ch) = http(addr, "POST", "/v1/challenge", &json!({})).await;
    let nonce: [u8; 32] = hex::decode_array(ch["nonce"].as_str().unwrap()).unwrap();
    let body = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/ack"),
        json!({ "up_to": s1 }),
    );
    let (status, v) = http(addr, "POST", "/v1/mailbox/ack", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({ "removed": 1 }));
    assert_eq!(fx.waiting(d0), 1);
    assert_eq!(
        fx.waiting(&fx.devices[1]),
        1,
        "another device's mailbox is untouched"
    );
}

#[tokio::test]
async fn reused_nonce_is_stale_and_removes_nothing() {
    let fx = fixture();
    let d0 = &fx.devices[0];
    let seq = fx.put(d0, b"env").await;
    let nonce = fx.nonce().await;
    let fetch = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/fetch"),
        json!({}),
    );
    assert_eq!(
        fx.post("/v1/mailbox/fetch", fetch.clone()).await.0,
        StatusCode::OK
    );
    let again = fx.post("/v1/mailbox/fetch", fetch).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "stale_challenge");
    // The same nonce, correctly signed for another action, is spent too.
    let ack = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/ack"),
        json!({ "up_to": seq }),
    );
    let r = fx.post("/v1/mailbox/ack", ack).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "stale_challenge");
    // A nonce this node never issued.
    let made_up = Fx::with(
        fx.credential(d0, &d0.sign, &[7u8; 32], "mailbox/ack"),
        json!({ "up_to": seq }),
    );
    let r = fx.post("/v1/mailbox/ack", made_up).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "stale_challenge");
    assert_eq!(fx.waiting(d0), 1);
}

#[tokio::test]
async fn expired_nonce_is_stale_and_removes_nothing() {
    let fx = fixture();
    let d0 = &fx.devices[0];
    let seq = fx.put(d0, b"env").await;
    fx.gw.challenges.set_ttl(Duration::ZERO);
    let nonce = fx.nonce_allowing_expired().await;
    let ack = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/ack"),
        json!({ "up_to": seq }),
    );
    let r = fx.post("/v1/mailbox/ack", ack).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "stale_challenge");
    assert_eq!(fx.waiting(d0), 1);
    // With the normal lifetime the same request shape works.
    fx.gw.challenges.set_ttl(Duration::from_secs(60));
    let nonce = fx.nonce().await;
    let ack = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/ack"),
        json!({ "up_to": seq }),
    );
    assert_eq!(
        fx.post("/v1/mailbox/ack", ack).await.1,
        json!({ "removed": 1 })
    );
}

impl Fx {
    async fn nonce_allowing_expired(&self) -> [u8; 32] {
        let (status, v) = self.post("/v1/challenge", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        hex::decode_array(v["nonce"].as_str().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn wrong_signature_is_refused_and_spends_the_nonce() {
    let fx = fixture();
    let d0 = &fx.devices[0];
    let seq = fx.put(d0, b"env").await;
    let stranger = Keypair::generate(&mut OsRng);
    // Another key; the right key over the wrong action; over another chain id.
    for (key, action, chain) in [
        (&stranger.sign, "mailbox/ack", SYNTH_CHAIN_ID),
        (&d0.sign, "mailbox/fetch", SYNTH_CHAIN_ID),
        (&d0.sign, "mailbox/ack", "other-chain"),
    ] {
        let nonce = fx.nonce().await;
        let sig = sign_challenge(key, chain, &d0.id(), &nonce, action);
        let body = json!({
            "device": d0.id().peer_id(),
            "nonce": hex::encode(&nonce),
            "signature": hex::encode(&sig.0),
            "up_to": seq,
        });
        let r = fx.post("/v1/mailbox/ack", body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "bad_signature");
    }
    let nonce = fx.nonce().await;
    let bad = fx.credential(d0, &stranger.sign, &nonce, "mailbox/ack");
    let r = fx
        .post("/v1/mailbox/ack", Fx::with(bad, json!({ "up_to": seq })))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "bad_signature");
    // The failed try spent the nonce: a correct signature over it no longer works.
    let good = fx.credential(d0, &d0.sign, &nonce, "mailbox/ack");
    let r = fx
        .post("/v1/mailbox/ack", Fx::with(good, json!({ "up_to": seq })))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "stale_challenge");
    assert_eq!(fx.waiting(d0), 1);
}

#[tokio::test]
async fn unknown_and_revoked_devices_are_forbidden() {
    let fx = fixture();
    let stranger = Keypair::generate(&mut OsRng);
    let nonce = fx.nonce().await;
    let cred = fx.credential(&stranger, &stranger.sign, &nonce, "mailbox/fetch");
    let r = fx
        .post("/v1/mailbox/fetch", Fx::with(cred, json!({})))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "unknown_device");
    // A validator has an account but is not a device.
    let store_validator = fx.gw.identity.id;
    let mut cred = fx.credential(&stranger, &stranger.sign, &nonce, "mailbox/fetch");
    cred["device"] = json!(store_validator.peer_id());
    let r = fx
        .post("/v1/mailbox/fetch", Fx::with(cred, json!({})))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "unknown_device");

    for (i, reason) in [(2, "stolen"), (3, "equivocation")] {
        let d = &fx.devices[i];
        let seq = fx.put(d, b"for a revoked device").await;
        let nonce = fx.nonce().await;
        let cred = fx.credential(d, &d.sign, &nonce, "mailbox/ack");
        let r = fx
            .post("/v1/mailbox/ack", Fx::with(cred, json!({ "up_to": seq })))
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "device_revoked");
        assert!(r.1["message"].as_str().unwrap().contains(reason), "{}", r.1);
        assert_eq!(fx.waiting(d), 1);
    }
}

#[tokio::test]
async fn rotated_device_signs_with_its_current_key() {
    let fx = fixture();
    let d1 = &fx.devices[1];
    fx.put(d1, b"env").await;
    let nonce = fx.nonce().await;
    let old = fx.credential(d1, &d1.sign, &nonce, "mailbox/fetch");
    let r = fx.post("/v1/mailbox/fetch", Fx::with(old, json!({}))).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "bad_signature");
    let nonce = fx.nonce().await;
    let new = fx.credential(d1, &fx.rotated.sign, &nonce, "mailbox/fetch");
    let (status, v) = fx.post("/v1/mailbox/fetch", Fx::with(new, json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["envelopes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_device_requests_get_json_400s_and_keep_the_nonce() {
    let fx = fixture();
    let d0 = &fx.devices[0];
    let seq = fx.put(d0, b"env").await;
    let nonce = fx.nonce().await;
    let good = Fx::with(
        fx.credential(d0, &d0.sign, &nonce, "mailbox/ack"),
        json!({ "up_to": seq }),
    );
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "bad_json"),
        (b"".to_vec(), "bad_json"),
        (b"[1,2]".to_vec(), "bad_json"),
        (without("up_to").to_string().into_bytes(), "bad_json"),
        (without("nonce").to_string().into_bytes(), "bad_json"),
        (without("signature").to_string().into_bytes(), "bad_json"),
        (without("device").to_string().into_bytes(), "bad_json"),
        (with("extra", json!(1)).to_string().into_bytes(), "bad_json"),
        (
            with("up_to", json!(-1)).to_string().into_bytes(),
            "bad_json",
        ),
        (
            with("up_to", json!("1")).to_string().into_bytes(),
            "bad_json",
        ),
        (
            with("device", json!("12D3KooWnope"))
                .to_string()
                .into_bytes(),
            "bad_device_id",
        ),
        (
            with("device", json!(42)).to_string().into_bytes(),
            "bad_json",
        ),
        (
            with("nonce", json!("zz")).to_string().into_bytes(),
            "bad_nonce",
        ),
        (
            with("nonce", json!(hex::encode(&[1u8; 31])))
                .to_string()
                .into_bytes(),
            "bad_nonce",
        ),
        (
            with("nonce", json!(hex::encode(&nonce).to_uppercase()))
                .to_string()
                .into_bytes(),
            "bad_nonce",
        ),
        (
            with("signature", json!(hex::encode(&[1u8; 63])))
                .to_string()
                .into_bytes(),
            "bad_signature_encoding",
        ),
        (
            with("signature", json!("xyz")).to_string().into_bytes(),
            "bad_signature_encoding",
        ),
    ];
    for (body, code) in cases {
        let r = fx.call("POST", "/v1/mailbox/ack", Some(body.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
    }
    let fetch =
        |extra: Value| Fx::with(fx.credential(d0, &d0.sign, &nonce, "mailbox/fetch"), extra);
    let r = fx
        .post("/v1/mailbox/fetch", fetch(json!({ "max": 257 })))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_max");
    let r = fx
        .post("/v1/mailbox/fetch", fetch(json!({ "after": -1 })))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_json");
    // Over the device body limit (16 KiB): 413, as JSON.
    let mut big = good.clone();
    big["pad"] = json!("x".repeat(64 * 1024));
    let r = fx.post("/v1/mailbox/ack", big).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let r = fx
        .call(
            "POST",
            "/v1/mailbox/fetch",
            Some(vec![b' '; 2 * 1024 * 1024]),
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // No error spent the nonce or removed anything.
    assert_eq!(fx.waiting(d0), 1);
    let (status, v) = fx.post("/v1/mailbox/ack", good).await;
    assert_eq!((status, v), (StatusCode::OK, json!({ "removed": 1 })));
}

#[tokio::test]
async fn devices_are_listed_paged_and_fetched() {
    let fx = fixture();
    let (status, v) = fx.get("/v1/devices").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let list = v["devices"].as_array().unwrap().clone();
    assert_eq!(list.len(), 4);
    assert!(v.get("next_after").is_none());
    let mut want: Vec<_> = fx.devices.iter().map(|d| d.id()).collect();
    want.sort();
    let got: Vec<String> = list
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want.iter().map(|k| k.peer_id()).collect::<Vec<_>>());

    let by_id = |i: usize| {
        list.iter()
            .find(|d| d["id"] == fx.devices[i].id().peer_id())
            .unwrap()
            .clone()
    };
    let d0 = by_id(0);
    assert_eq!(d0["status"], "active");
    assert_eq!(d0["enc_key"], hex::encode(&fx.devices[0].enc_key().0));
    assert_eq!(d0["sign_key"], d0["id"]);
    assert_eq!(d0["groups"], json!(["fleet-0"]));
    assert_eq!(d0["enrolled_height"], 1);
    assert_eq!(d0["seq"], 2);
    assert!(d0.get("revoked_reason").is_none() && d0.get("revoked_height").is_none());
    let d1 = by_id(1);
    assert_eq!(d1["sign_key"], fx.rotated.id().peer_id());
    assert_eq!(d1["enc_key"], hex::encode(&fx.rotated.enc_key().0));
    let d2 = by_id(2);
    assert_eq!(d2["status"], "revoked");
    assert_eq!(d2["revoked_reason"], "stolen");
    assert_eq!(d2["revoked_height"], 3);
    // Revoked by committed evidence, not by the admins: quarantined.
    let d3 = by_id(3);
    assert_eq!(d3["status"], "quarantined");
    assert_eq!(d3["revoked_height"], 5);
    assert_eq!(d3["revoked_reason"], "equivocation at seq 1");

    // Pages of 3 then 1.
    let (_, p1) = fx.get("/v1/devices?limit=3").await;
    assert_eq!(p1["devices"].as_array().unwrap().len(), 3);
    let next = p1["next_after"].as_str().unwrap().to_string();
    assert_eq!(next, got[2]);
    let (_, p2) = fx.get(&format!("/v1/devices?limit=3&after={next}")).await;
    assert_eq!(p2["devices"].as_array().unwrap().len(), 1);
    assert_eq!(p2["devices"][0]["id"], got[3].as_str());
    assert!(p2.get("next_after").is_none());

    for bad in [
        "limit=0",
        "limit=10001",
        "limit=x",
        "limit=-1",
        "after=nope",
    ] {
        let r = fx.get(&format!("/v1/devices?{bad}")).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{bad}: {}", r.1);
    }

    let (status, one) = fx.get(&format!("/v1/devices/{}", got[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, list[0]);
    let stranger = Keypair::generate(&mut OsRng).id().peer_id();
    let r = fx.get(&format!("/v1/devices/{stranger}")).await;
    assert_error(&r, StatusCode::NOT_FOUND, "unknown_device");
    let r = fx
        .get(&format!("/v1/devices/{}", fx.gw.identity.id.peer_id()))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "unknown_device");
    let r = fx.get("/v1/devices/not-a-peer-id").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_device_id");
    let r = fx.get("/v1/devices/%FF").await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn group_shows_members_and_their_keys_for_rekeying() {
    let fx = fixture();
    let (status, g) = fx.get("/v1/groups/fleet-0").await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(g["name"], "fleet-0");
    let state_group = {
        let store = fx.gw.ledger.read();
        store
            .state()
            .group(&meshward_core::tx::GroupName::new("fleet-0").unwrap())
            .unwrap()
            .clone()
    };
    assert_eq!(g["epoch"], state_group.epoch);
    assert_eq!(g["needs_rekey"], state_group.needs_rekey);
    let members = g["members"].as_array().unwrap();
    assert_eq!(members.len(), state_group.members.len());
    // Revoked d2 and d3 are gone; d1 shows its rotated encryption key.
    assert_eq!(members.len(), 2);
    let d1 = members
        .iter()
        .find(|m| m["id"] == fx.devices[1].id().peer_id())
        .unwrap();
    assert_eq!(d1["enc_key"], hex::encode(&fx.rotated.enc_key().0));
    assert_error(
        &fx.get("/v1/groups/nobody").await,
        StatusCode::NOT_FOUND,
        "unknown_group",
    );
    assert_error(
        &fx.get("/v1/groups/Bad%20Name").await,
        StatusCode::BAD_REQUEST,
        "bad_group_name",
    );
}

#[tokio::test]
async fn any_final_transaction_has_a_proof_by_its_id() {
    let fx = fixture();
    // Every transaction of the fixture's first stored block, whatever its kind.
    for (i, tx) in fx.blocks[0].block.txs.iter().enumerate() {
        let id = tx.id().to_hex();
        let (status, body) = fx
            .call_raw("GET", &format!("/v1/tx/{id}/proof"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "tx {i}");
        let text = String::from_utf8(body).unwrap();
        let proven = ProofFile::verify_json(&text, &fx.genesis).unwrap();
        assert_eq!(proven.tx_id, tx.id());
        assert_eq!(proven.tx_index, i as u64);
        let file: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(file["kind"], tx.body.name());
        assert_eq!(file["tx"], id);
        // The kind is checked against the proof: a relabelled file fails.
        let relabelled = text.replace(
            &format!("\"kind\":\"{}\"", tx.body.name()),
            "\"kind\":\"revoke\"",
        );
        if tx.body.name() != "revoke" {
            assert!(ProofFile::verify_json(&relabelled, &fx.genesis).is_err());
        }
    }
    let unknown = Hash([0xee; 32]).to_hex();
    assert_error(
        &fx.get(&format!("/v1/tx/{unknown}/proof")).await,
        StatusCode::NOT_FOUND,
        "unknown_tx",
    );
    assert_error(
        &fx.get("/v1/tx/abc/proof").await,
        StatusCode::BAD_REQUEST,
        "bad_hash",
    );
}

#[tokio::test]
async fn anchor_proof_verifies_offline_and_a_changed_byte_fails() {
    let fx = fixture();
    let TxBody::Anchor(a) = &fx.blocks[0].block.txs[1].body else {
        panic!("block 2 holds anchors")
    };
    let c = a.commitment.to_hex();
    let (status, loc) = fx.get(&format!("/v1/anchors/{c}")).await;
    assert_eq!(status, StatusCode::OK, "{loc}");
    assert_eq!(loc, json!({ "commitment": c, "height": 2, "index": 1 }));

    let (status, body) = fx
        .call_raw("GET", &format!("/v1/anchors/{c}/proof"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let proven = ProofFile::verify_json(&text, &fx.genesis)
        .unwrap()
        .anchor()
        .unwrap();
    assert_eq!(proven.commitment, a.commitment);
    assert_eq!(proven.height, 2);
    assert_eq!(proven.sender, fx.devices[1].id());
    // Any changed byte of the proof, and a changed summary, fail.
    let file: Value = serde_json::from_str(&text).unwrap();
    let proof = file["proof"].as_str().unwrap();
    for i in [0, proof.len() / 2, proof.len() - 1] {
        let mut p = proof.as_bytes().to_vec();
        p[i] = if p[i] == b'0' { b'1' } else { b'0' };
        let changed = text.replace(proof, std::str::from_utf8(&p).unwrap());
        assert!(
            ProofFile::verify_json(&changed, &fx.genesis).is_err(),
            "byte {i}"
        );
    }
    let changed = text.replace("\"height\":2", "\"height\":3");
    assert!(ProofFile::verify_json(&changed, &fx.genesis).is_err());

    let unknown = Hash([0xee; 32]).to_hex();
    assert_error(
        &fx.get(&format!("/v1/anchors/{unknown}")).await,
        StatusCode::NOT_FOUND,
        "unknown_anchor",
    );
    assert_error(
        &fx.get(&format!("/v1/anchors/{unknown}/proof")).await,
        StatusCode::NOT_FOUND,
        "unknown_anchor",
    );
    for bad in ["abc", "ZZ", &c.to_uppercase(), &c[..62]] {
        assert_error(
            &fx.get(&format!("/v1/anchors/{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_commitment",
        );
        assert_error(
            &fx.get(&format!("/v1/anchors/{bad}/proof")).await,
            StatusCode::BAD_REQUEST,
            "bad_commitment",
        );
    }
}

#[test]
fn committed_blocks_give_block_anchor_and_quarantine_events() {
    let fx = fixture();
    let anchors = meshward_node::events::from_block(&fx.blocks[0]);
    assert_eq!(anchors.len(), 3);
    assert!(matches!(
        &anchors[0],
        Event::Block {
            height: 2,
            txs: 2,
            ..
        }
    ));
    let Event::Anchor {
        sender,
        recipient,
        count,
        height,
        ..
    } = &anchors[1]
    else {
        panic!("{anchors:?}")
    };
    assert_eq!(
        (sender.as_str(), recipient.as_str(), *count, *height),
        (
            fx.devices[0].id().peer_id().as_str(),
            fx.devices[1].id().peer_id().as_str(),
            1,
            2
        )
    );
    let revoke = meshward_node::events::from_block(&fx.blocks[1]);
    assert_eq!(
        revoke[1],
        Event::Quarantine {
            device: fx.devices[2].id().peer_id(),
            reason: "stolen".into(),
            height: 3,
            by_evidence: false,
        }
    );
    assert_eq!(
        meshward_node::events::from_block(&fx.blocks[2]).len(),
        1,
        "a rotation is only a block"
    );
    let evidence = meshward_node::events::from_block(&fx.blocks[3]);
    assert_eq!(
        evidence[1],
        Event::Quarantine {
            device: fx.devices[3].id().peer_id(),
            reason: "evidence: equivocation".into(),
            height: 5,
            by_evidence: true,
        }
    );
    let v = serde_json::to_value(&evidence[1]).unwrap();
    assert_eq!(v["type"], "quarantine");
    assert_eq!(v["by_evidence"], true);
}

/// Reads SSE text from `s` until `n` events whose kind is in `kinds` arrived.
async fn read_events(s: &mut tokio::net::TcpStream, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    loop {
        let events: Vec<(String, Value)> = buf
            .split("\n\n")
            .filter_map(|chunk| {
                let kind = chunk.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = chunk.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((kind.to_string(), serde_json::from_str(data).ok()?))
            })
            .collect();
        if events.len() >= n {
            return events;
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("events within 10 s")
            .unwrap();
        assert!(got > 0, "stream closed early: {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..got]));
    }
}

#[tokio::test]
async fn event_stream_delivers_published_blocks() {
    let fx = fixture();
    let addr = serve(fx.router.clone()).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/events?types=block,quarantine HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until_async(
        "the handler to subscribe to events",
        Duration::from_secs(10),
        || fx.gw.events.subscribers() > 0,
    )
    .await;
    // Block 2 (anchors, filtered out), then block 3 (a revocation).
    fx.gw.events.publish_block(&fx.blocks[0]);
    fx.gw.events.publish_block(&fx.blocks[1]);
    let events = read_events(&mut s, 3).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["block", "block", "quarantine"]);
    assert_eq!(events[0].1["type"], "block");
    assert_eq!(events[0].1["height"], 2);
    assert_eq!(
        events[0].1["hash"],
        fx.blocks[0].block.header.hash().to_hex()
    );
    assert_eq!(events[1].1["height"], 3);
    assert_eq!(events[2].1["device"], fx.devices[2].id().peer_id());
    assert_eq!(events[2].1["by_evidence"], false);

    let r = fx.get("/v1/events?types=block,nope").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_types");
}

#[tokio::test]
async fn status_reports_peer_id_and_mesh_addrs() {
    let fx = fixture();
    let (_, v) = fx.get("/v1/status").await;
    assert_eq!(v["peer_id"], fx.gw.identity.id.peer_id());
    assert_eq!(v["mesh_addrs"], json!([]));
    assert_eq!(v["height"], 5);
    let fx = fixture_with_mesh(vec!["/ip4/127.0.0.1/tcp/7800".into()]);
    let (_, v) = fx.get("/v1/status").await;
    assert_eq!(v["mesh_addrs"], json!(["/ip4/127.0.0.1/tcp/7800"]));
}

#[tokio::test]
async fn validators_lists_the_set_in_force_and_who_signed_lately() {
    let fx = fixture();
    let (status, v) = fx.get("/v1/validators").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let list: meshward_api::types::ValidatorList = serde_json::from_value(v).unwrap();
    let set = &fx.genesis.validators;
    assert_eq!(list.height, 5);
    assert_eq!(list.since_height, 1);
    assert_eq!(list.set_hash, set.hash().to_hex());
    assert_eq!(list.total_power, set.total_power());
    let ids: Vec<String> = set.validators.iter().map(|v| v.key.peer_id()).collect();
    let got: Vec<String> = list.validators.iter().map(|v| v.id.clone()).collect();
    assert_eq!(got, ids);
    // Every block of the fixture is certified by all four.
    assert!(list
        .validators
        .iter()
        .all(|v| v.power == 1 && v.last_signed_height == Some(5)));
}

/// A concrete path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{height}", "1")
        .replace("{hash}", &"00".repeat(32))
        .replace("{id}", "not-a-peer-id")
        .replace("{name}", "fleet-0")
        .replace("{commitment}", &"00".repeat(32))
        .replace("{file}", "console.js")
}

#[tokio::test]
async fn every_route_is_served() {
    let fx = fixture();
    for r in ROUTES {
        let (method, path) = (r.method, r.path);
        let uri = concrete(path);
        if path == "/v1/events" {
            // An endless stream: check the head only.
            let req = Request::get(&uri).body(Body::empty()).unwrap();
            let resp = fx.router.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            continue;
        }
        let (status, body) = fx.call_raw(method, &uri, Some(b"{}".to_vec())).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(
            v["code"] != "not_found" && v["code"] != "method_not_allowed",
            "{method} {path} is not routed: {status} {v}"
        );
    }
    assert_error(
        &fx.get("/v1/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &fx.call("DELETE", "/v1/devices", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let fx = fixture();
    let (status, doc) = fx.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc,
        meshward_api::openapi::document("http://127.0.0.1:7700")
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    let paths = doc["paths"].as_object().unwrap();
    for r in ROUTES {
        let (method, path) = (r.method, r.path);
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI paths"))[method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        // Every path parameter is declared.
        for seg in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == seg && p["in"] == "path"));
            assert!(declared, "{method} {path}: parameter {seg} is not declared");
        }
    }
    // Nothing is documented that is not served.
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.method == method.to_uppercase() && r.path == path),
                "documented {method} {path} is not a route"
            );
        }
    }
    // Mutating admin calls need the bearer scheme; device calls say how they authenticate.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    for p in ["/v1/tx", "/v1/txs"] {
        assert_eq!(paths[p]["post"]["security"], json!([{ "bearerAuth": [] }]));
    }
    for p in ["/v1/mailbox/fetch", "/v1/mailbox/ack"] {
        assert_eq!(paths[p]["post"]["x-meshward-auth"], "device-challenge");
    }
    // Every $ref resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let ptr = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(ptr).is_some(), "dangling $ref {r}");
    }
}

#[tokio::test]
async fn existing_routes_answer_bad_paths_with_json() {
    let fx = fixture();
    assert_error(
        &fx.get("/v1/blocks/x").await,
        StatusCode::BAD_REQUEST,
        "bad_height",
    );
    assert_error(
        &fx.get("/v1/tx/zz").await,
        StatusCode::BAD_REQUEST,
        "bad_hash",
    );
    let r = fx.get("/v1/tx/%FF").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_path");
    assert_error(
        &fx.post("/v1/tx", json!({ "tx": "00" })).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

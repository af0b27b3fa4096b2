//! The API against clients that hold connections, trickle requests or flood challenges, on a
//! real one-validator node: half-open connections are dropped at the header timeout, a stalled
//! body is answered 408, connections past the per-address cap are closed at once, the node
//! keeps answering and finalising, challenges have a per-address quota, and the bearer scheme
//! is case-insensitive.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Cluster;
use meshward_testkit::{http, wait_for};

const MIN: Duration = Duration::from_secs(60);
/// The header and body timeouts this test configures: long enough that a connect delayed by a
/// SYN retransmission (1 s) still finds the first connections held.
const READ_TIMEOUT_MS: u64 = 3000;
/// Connections past the default per-address cap of 128.
const HALF_OPEN: usize = 200;

fn node() -> Cluster {
    let mut c = Cluster::new(1, 100);
    let cfg = c.nodes[0].dir.join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "api_header_read_timeout_ms = {READ_TIMEOUT_MS}\napi_body_read_timeout_ms = {READ_TIMEOUT_MS}\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    c.start_all();
    c.wait_height(&[0], 1, MIN);
    c
}

/// Whether the server has closed `s` (end of stream or reset); `s` is non-blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn half_open_and_stalled_requests_are_dropped_and_the_api_keeps_answering() {
    let c = node();
    let port = c.nodes[0].api_port;
    let start_height = c.height(0).unwrap();

    // Many connections that send part of a request's headers and stop.
    let mut held: Vec<TcpStream> = (0..HALF_OPEN)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let sent = Instant::now();
    // Those past the per-address cap are closed at once, and every one of them once the
    // header timeout passes.
    wait_for("every half-open connection to be closed", MIN, || {
        held.retain_mut(|s| !closed_by_server(s));
        held.is_empty().then_some(())
    });
    let took = sent.elapsed();

    assert!(
        took >= Duration::from_millis(READ_TIMEOUT_MS / 2),
        "closed after {took:?}: before the header timeout, so not by it"
    );
    let metrics = http(port, "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let refused: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("meshward_api_connections_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    // (A few of the cap's places may still have been held by the readiness polls' connections.)
    assert!(
        refused >= (HALF_OPEN - 128 - 4) as f64,
        "only {refused} connections refused past the cap"
    );

    // A body that stops halfway gets a JSON 408.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /v1/tx HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tx\":",
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).to_string();
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("\"request_timeout\""), "{raw}");

    // Every poll is answered, and the chain went on.
    for i in 0..11 {
        let r = http(port, "GET", "/v1/status", &[], b"").unwrap();
        assert_eq!(r.status, 200, "poll {i}");
    }
    c.wait_height(&[0], start_height + 3, MIN);
    assert!(!c.log(0).contains("Too many open files"), "{}", c.log(0));
}

#[test]
fn challenges_have_a_per_address_quota_and_the_bearer_scheme_is_case_insensitive() {
    let c = node();
    let port = c.nodes[0].api_port;

    // One address holds at most 1024 outstanding challenges; the next is refused, not an
    // eviction of other devices' nonces.
    for i in 0..1024 {
        let r = http(port, "POST", "/v1/challenge", &[], b"").unwrap();
        assert_eq!(r.status, 200, "challenge {i}: {:?}", r.json());
    }
    let r = http(port, "POST", "/v1/challenge", &[], b"").unwrap();
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert_eq!(r.json()["code"], "too_many_challenges");

    // `bearer` in lower case is the same scheme: the request gets past authentication and is
    // refused for its (empty) transaction instead.
    let token = c.nodes[0].token.clone();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {token}");
        let r = http(
            port,
            "POST",
            "/v1/tx",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            br#"{"tx":""}"#,
        )
        .unwrap();
        assert_ne!(r.status, 401, "{scheme}: {:?}", r.json());
        assert_eq!(r.status, 400, "{scheme}: {:?}", r.json());
    }
    let r = http(
        port,
        "POST",
        "/v1/tx",
        &[
            ("Authorization", "Basic abc"),
            ("Content-Type", "application/json"),
        ],
        br#"{"tx":""}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{:?}", r.json());
}

/// A 100 KB request target gets the API's JSON error (`414`, code `uri_too_long`), not hyper's
/// bare 414 with an empty body; the node keeps answering.
#[test]
fn a_huge_uri_gets_a_json_error() {
    let c = node();
    let port = c.nodes[0].api_port;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /v1/devices/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(100_000)
    );
    // The server may close while the rest is still being written: that is fine.
    let _ = s.write_all(req.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 414"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["code"], "uri_too_long", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    let ok = http(port, "GET", "/v1/status", &[], b"").unwrap();
    assert_eq!(ok.status, 200);
}

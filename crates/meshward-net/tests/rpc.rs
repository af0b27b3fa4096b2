//! Real swarms on 127.0.0.1: the `/meshward/rpc/1.0.0` request-response protocol, explicit
//! addresses and dials, identify reports, and devices off the transaction topic.

mod common;

use std::time::{Duration, Instant};

use common::{config, init_tracing, node, serving_node, TestNode, DEADLINE};
use meshward_net::{
    Multiaddr, NetConfig, NetError, NetEvent, PeerId, RpcFailure, DEFAULT_RPC_MAX_REQUEST_BYTES,
};
use meshward_testkit::{never_future, wait_for_future, wait_until_future};

/// Answers `ping` with `re: ping`, and `big` with 4 KiB.
fn echo(request: &[u8]) -> Option<Vec<u8>> {
    if request == b"big" {
        return Some(vec![7; 4096]);
    }
    Some([b"re: ", request].concat())
}

/// A node's listen addresses, without `/p2p`.
async fn listen_addrs(n: &TestNode) -> Vec<Multiaddr> {
    n.net.listen_addrs().await
}

/// Connects `a` to `b` by a dial of `b`'s id at its TCP address.
async fn connect(a: &TestNode, b: &TestNode) {
    let mut tcp = b.tcp_addr().await;
    tcp.pop();
    assert_eq!(a.net.dial_peer(b.peer, vec![tcp]).await, Ok(()));
    wait_until_future("both ends to see the connection", DEADLINE, || async {
        a.is_connected_to(b).await && b.is_connected_to(a).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_gets_the_response() {
    init_tracing();
    let a = node(config()).await;
    let b = serving_node(config(), echo).await;

    // Not connected and not known: no address to dial.
    match a.net.request(b.peer, b"ping".to_vec()).await {
        Err(NetError::Rpc {
            peer,
            reason: RpcFailure::Dial(_),
        }) => assert_eq!(peer, b.peer),
        other => panic!("expected a dial failure, got {other:?}"),
    }

    // Told where b listens, a dials it on demand.
    a.net.add_addresses(b.peer, listen_addrs(&b).await).await;
    assert_eq!(
        a.net.request(b.peer, b"ping".to_vec()).await,
        Ok(b"re: ping".to_vec())
    );
    assert!(a.is_connected_to(&b).await);
    // Again over the same connection, and with empty bytes.
    assert_eq!(
        a.net.request(b.peer, Vec::new()).await,
        Ok(b"re: ".to_vec())
    );
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(from, _, _)| *from == a.peer));
    assert_eq!(seen[0].2, b"ping");
    assert_ne!(seen[0].1, seen[1].1, "request ids are distinct");

    // Concurrent requests each get their own response.
    let requests = (0..8).map(|i| {
        let net = a.net.clone();
        let peer = b.peer;
        tokio::spawn(async move { net.request(peer, format!("n{i}").into_bytes()).await })
    });
    for (i, handle) in requests.enumerate() {
        assert_eq!(handle.await.unwrap(), Ok(format!("re: n{i}").into_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out() {
    init_tracing();
    let mut ca = config();
    ca.rpc_timeout_ms = 500;
    let a = node(ca).await;
    // Never answers.
    let b = node(config()).await;
    connect(&a, &b).await;

    let start = Instant::now();
    let result = a.net.request(b.peer, b"anyone?".to_vec()).await;
    let elapsed = start.elapsed();
    assert_eq!(
        result,
        Err(NetError::Rpc {
            peer: b.peer,
            reason: RpcFailure::Timeout
        })
    );
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(5),
        "timed out after {elapsed:?}, configured 500 ms"
    );
    // b was handed the request; answering it late, twice, is harmless.
    let requests = b.requests();
    assert_eq!(requests.len(), 1);
    let (_, id, _) = requests[0].clone();
    b.net.respond(id, b"too late".to_vec()).await;
    b.net.respond(id, b"again".to_vec()).await;
    assert!(
        a.is_connected_to(&b).await,
        "a timeout keeps the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused() {
    init_tracing();
    let mut ca = config();
    ca.rpc_max_response_bytes = 2048;
    let a = node(ca).await;
    let mut cb = config();
    cb.rpc_max_request_bytes = 1024;
    let b = serving_node(cb, echo).await;
    connect(&a, &b).await;

    // Over our own limit: never sent.
    let len = DEFAULT_RPC_MAX_REQUEST_BYTES + 1;
    assert_eq!(
        a.net.request(b.peer, vec![0; len]).await,
        Err(NetError::RequestTooLarge {
            len,
            max: DEFAULT_RPC_MAX_REQUEST_BYTES
        })
    );
    // Within ours, over b's: b refuses the frame from its header, the node never sees it.
    match a.net.request(b.peer, vec![1; 1025]).await {
        Err(NetError::Rpc { peer, .. }) => assert_eq!(peer, b.peer),
        other => panic!("expected the responder to refuse, got {other:?}"),
    }
    // A response over our limit fails too.
    match a.net.request(b.peer, b"big".to_vec()).await {
        Err(NetError::Rpc {
            reason: RpcFailure::Stream(_),
            ..
        }) => {}
        other => panic!("expected an oversized response error, got {other:?}"),
    }
    // Exactly at the limit is fine, and the connection survived.
    let at_limit = vec![2; 1024];
    let mut expected = b"re: ".to_vec();
    expected.extend_from_slice(&at_limit);
    assert_eq!(a.net.request(b.peer, at_limit.clone()).await, Ok(expected));

    let seen: Vec<Vec<u8>> = b.requests().into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(
        seen,
        vec![b"big".to_vec(), at_limit],
        "b saw the oversized one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_inbound_requests_are_bounded() {
    init_tracing();
    let a = node(config()).await;
    let mut cb = config();
    cb.rpc_max_pending_inbound = 2;
    // Never answers on its own: the test answers.
    let b = node(cb).await;
    connect(&a, &b).await;

    let handles: Vec<_> = (0..3)
        .map(|i| {
            let net = a.net.clone();
            let peer = b.peer;
            tokio::spawn(async move { net.request(peer, vec![i]).await })
        })
        .collect();
    wait_until_future(
        "two requests at b and the third refused",
        DEADLINE,
        || async { b.requests().len() == 2 && handles.iter().any(|h| h.is_finished()) },
    )
    .await;
    for (_, id, bytes) in b.requests() {
        b.net
            .respond(id, [b"re: ".as_slice(), &bytes].concat())
            .await;
    }
    let mut answered = Vec::new();
    let mut refused = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Ok(response) => answered.push(response),
            Err(NetError::Rpc { peer, .. }) if peer == b.peer => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((answered.len(), refused), (2, 1));
    assert_eq!(b.requests().len(), 2, "the refused request never reached b");

    // Answered requests free their places.
    let late = {
        let net = a.net.clone();
        let peer = b.peer;
        tokio::spawn(async move { net.request(peer, b"later".to_vec()).await })
    };
    wait_until_future("the next request at b", DEADLINE, || async {
        b.requests().len() == 3
    })
    .await;
    let (_, id, _) = b.requests()[2].clone();
    b.net.respond(id, b"ok".to_vec()).await;
    assert_eq!(late.await.unwrap(), Ok(b"ok".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_peer_requests_never_reach_the_node() {
    init_tracing();
    let a = serving_node(config(), echo).await;
    let b = serving_node(config(), echo).await;
    connect(&b, &a).await;
    assert_eq!(
        b.net.request(a.peer, b"before".to_vec()).await,
        Ok(b"re: before".to_vec())
    );

    a.net.deny(b.peer).await;
    // We do not talk to a denied peer.
    assert_eq!(
        a.net.request(b.peer, b"to b".to_vec()).await,
        Err(NetError::Denied(b.peer))
    );
    assert_eq!(
        a.net.dial_peer(b.peer, listen_addrs(&b).await).await,
        Err(NetError::Denied(b.peer))
    );
    // b re-dials to send its request; a refuses the connection.
    wait_until_future("b to see the connection closed", DEADLINE, || async {
        !b.is_connected_to(&a).await
    })
    .await;
    let mark = a.events_len();
    b.net.add_addresses(a.peer, listen_addrs(&a).await).await;
    match b.net.request(a.peer, b"after".to_vec()).await {
        Err(NetError::Rpc { peer, .. }) => assert_eq!(peer, a.peer),
        other => panic!("expected an rpc error, got {other:?}"),
    }
    never_future(
        "a denied peer's request handed over",
        Duration::from_secs(1),
        || async {
            a.requests()
                .iter()
                .any(|(from, _, bytes)| *from == b.peer && bytes == b"after")
        },
    )
    .await;
    assert_eq!(a.requests().len(), 1);
    assert!(a.events_since(mark).contains(&NetEvent::Refused(b.peer)));

    // Allowed again, b is served again.
    a.net.allow(b.peer).await;
    let a_addrs = listen_addrs(&a).await;
    let response = wait_for_future("a to serve b once allowed", DEADLINE, || async {
        b.net.add_addresses(a.peer, a_addrs.clone()).await;
        // The refused connection may still be closing: an error is retried.
        b.net.request(a.peer, b"allowed".to_vec()).await.ok()
    })
    .await;
    assert_eq!(response, b"re: allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identified_event_delivers_listen_addrs() {
    init_tracing();
    let a = node(config()).await;
    let b = node(config()).await;
    let b_addrs = listen_addrs(&b).await;
    connect(&a, &b).await;

    wait_until_future("a to learn b's listen addresses", DEADLINE, || async {
        a.events_since(0).iter().any(|e| {
            matches!(e, NetEvent::Identified { peer, listen_addrs }
                if *peer == b.peer && b_addrs.iter().all(|x| listen_addrs.contains(x)))
        })
    })
    .await;
    let known = a.net.peer_addrs(b.peer).await;
    assert!(b_addrs.iter().all(|x| known.contains(x)), "{known:?}");
    let a_addrs = listen_addrs(&a).await;
    wait_until_future("b to learn a's listen addresses", DEADLINE, || async {
        let known = b.net.peer_addrs(a.peer).await;
        a_addrs.iter().all(|x| known.contains(x))
    })
    .await;
    assert!(a.net.peer_addrs(PeerId::random()).await.is_empty());

    // A third node reaches b at the addresses a learned.
    let c = node(config()).await;
    c.net.add_addresses(b.peer, known).await;
    assert_eq!(c.net.dial_peer(b.peer, Vec::new()).await, Ok(()));

    b.net.shutdown().await;
    wait_until_future("b's addresses forgotten once it left", DEADLINE, || async {
        a.net.peer_addrs(b.peer).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_peer_dials_each_peer_once() {
    init_tracing();
    let a = node(config()).await;
    let b = node(config()).await;
    let mut tcp = b.tcp_addr().await;
    tcp.pop();
    let mut quic = b.quic_addr().await;
    quic.pop();
    // Two dials at once, over two transports: the second joins the first.
    let (first, second) = tokio::join!(
        a.net.dial_peer(b.peer, vec![tcp.clone()]),
        a.net.dial_peer(b.peer, vec![quic])
    );
    assert_eq!((first, second), (Ok(()), Ok(())));
    assert_eq!(a.net.peers().await, vec![b.peer]);
    // Connected: a no-op.
    assert_eq!(a.net.dial_peer(b.peer, vec![tcp]).await, Ok(()));

    // Unknown peer, no address.
    assert!(matches!(
        a.net.dial_peer(PeerId::random(), Vec::new()).await,
        Err(NetError::Dial { .. })
    ));
    // Our own id.
    assert!(matches!(
        a.net.dial_peer(a.peer, Vec::new()).await,
        Err(NetError::Dial { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_does_not_receive_gossiped_txs() {
    init_tracing();
    // A gateway g; a publisher p and a subscribed control node s, and a device d, all on g.
    let g = serving_node(config(), echo).await;
    let on_g = |mut c: NetConfig, bootstrap: Multiaddr| {
        c.bootstrap = vec![bootstrap];
        c
    };
    let p = node(on_g(config(), g.tcp_addr().await)).await;
    let s = node(on_g(config(), g.tcp_addr().await)).await;
    let mut cd = NetConfig::device("test-chain");
    cd.target_peers = 0;
    assert!(!cd.subscribe_tx);
    let d = node(on_g(cd, g.tcp_addr().await)).await;
    wait_until_future("everyone on g", DEADLINE, || async {
        g.is_connected_to(&p).await && g.is_connected_to(&s).await && g.is_connected_to(&d).await
    })
    .await;

    p.publish_until(b"warm-up", || s.txs_with_prefix(b"warm-up") > 0)
        .await;
    p.publish(b"tx for subscribers").await;
    wait_until_future("the tx at the control node", DEADLINE, || async {
        !s.txs(b"tx for subscribers").is_empty()
    })
    .await;
    never_future(
        "a gossiped tx at the device",
        Duration::from_secs(1),
        || async { d.txs_with_prefix(b"") > 0 },
    )
    .await;

    // A device still publishes its own transactions, and talks to its gateway by rpc.
    d.publish(b"from the device").await;
    wait_until_future("the device's tx at g", DEADLINE, || async {
        !g.txs(b"from the device").is_empty()
    })
    .await;
    assert_eq!(
        d.net.request(g.peer, b"hello".to_vec()).await,
        Ok(b"re: hello".to_vec())
    );
}

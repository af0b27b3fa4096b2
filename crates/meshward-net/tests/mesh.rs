//! Real swarms on 127.0.0.1: identity, gossip, the gate, transports, limits and hostile bytes.

mod common;

use std::time::Duration;

use common::{config, init_tracing, node, node_with, DEADLINE};
use meshward_net::{NetError, NetEvent, TxVerdict};
use meshward_testkit::{never_future, wait_until_future};
use rand::RngCore;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_id_matches_core_identity() {
    init_tracing();
    let a = node(config()).await;
    assert_eq!(a.net.local_peer_id().to_base58(), a.key.id().peer_id());
    assert_eq!(a.net.local_peer_id(), meshward_net::peer_id_of(&a.key.id()));
    assert_eq!(meshward_net::public_key_of(&a.peer), Some(a.key.id()));

    // A remote learns the same id from the handshake, dialling an address without `/p2p`.
    let b = node(config()).await;
    let mut plain = a.tcp_addr().await;
    plain.pop();
    assert_eq!(
        b.net.dial(plain).await,
        Ok(a.key.id().peer_id().parse().unwrap())
    );
    wait_until_future("a to see b", DEADLINE, || async {
        a.is_connected_to(&b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossiped_tx_reaches_every_peer() {
    init_tracing();
    // A line a <- b <- c: each dials the previous one as its bootstrap peer.
    let a = node(config()).await;
    let mut cb = config();
    cb.bootstrap = vec![a.tcp_addr().await];
    let b = node(cb).await;
    let mut cc = config();
    // Without `/p2p`: the peer id is learned from the handshake.
    let mut b_plain = b.quic_addr().await;
    b_plain.pop();
    cc.bootstrap = vec![b_plain];
    let c = node(cc).await;
    wait_until_future("the line to connect", DEADLINE, || async {
        b.is_connected_to(&a).await && b.is_connected_to(&c).await
    })
    .await;
    assert!(!a.is_connected_to(&c).await, "the ends only meet through b");
    // Gossip reaches the peers whose subscription is known when it passes: warm the path up.
    a.publish_until(b"warm-up", || c.txs_with_prefix(b"warm-up") > 0)
        .await;
    c.publish_until(b"warm-up back", || a.txs_with_prefix(b"warm-up back") > 0)
        .await;

    a.publish(b"tx from one end").await;
    wait_until_future("the tx at the other end", DEADLINE, || async {
        !c.txs(b"tx from one end").is_empty()
    })
    .await;
    c.publish(b"tx from the other end").await;
    wait_until_future("the reply at the first end", DEADLINE, || async {
        !a.txs(b"tx from the other end").is_empty()
    })
    .await;

    // Republishing the same bytes is a duplicate, not a second delivery.
    assert_eq!(
        a.net.publish_tx(b"tx from one end".to_vec()).await,
        Err(NetError::Duplicate)
    );
    never_future("a tx delivered twice", Duration::from_secs(2), || async {
        c.txs(b"tx from one end").len() > 1
            || b.txs(b"tx from one end").len() > 1
            || a.txs(b"tx from the other end").len() > 1
            || !a.txs(b"tx from one end").is_empty()
    })
    .await;
    assert_eq!(c.txs(b"tx from one end"), vec![a.peer], "author is a");
    assert_eq!(b.txs(b"tx from one end"), vec![a.peer]);
    assert_eq!(a.txs(b"tx from the other end"), vec![c.peer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_tx_is_not_forwarded() {
    init_tracing();
    let a = node(config()).await;
    let mut cb = config();
    cb.bootstrap = vec![a.tcp_addr().await];
    let b = node_with(cb, |bytes| {
        if bytes.starts_with(b"bad") {
            TxVerdict::Reject
        } else {
            TxVerdict::Accept
        }
    })
    .await;
    let mut cc = config();
    cc.bootstrap = vec![b.tcp_addr().await];
    let c = node(cc).await;
    wait_until_future("the line to connect", DEADLINE, || async {
        b.is_connected_to(&a).await && b.is_connected_to(&c).await
    })
    .await;
    a.publish_until(b"warm-up", || c.txs_with_prefix(b"warm-up") > 0)
        .await;

    a.publish(b"bad tx").await;
    wait_until_future("b to judge the bad tx", DEADLINE, || async {
        !b.txs(b"bad tx").is_empty()
    })
    .await;
    // Published after b rejected the bad one, forwarded on the same path: once it is at c, the
    // bad one would be too.
    a.publish(b"good tx").await;
    wait_until_future("the good tx at c", DEADLINE, || async {
        !c.txs(b"good tx").is_empty()
    })
    .await;
    assert!(c.txs(b"bad tx").is_empty(), "b forwarded a tx it rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_peer_is_disconnected_and_refused() {
    init_tracing();
    // c is a hub; a and b are also directly connected; e (only connected to c) provides a tx
    // that c forwards to a after b's.
    let c = node(config()).await;
    let mut ca = config();
    ca.bootstrap = vec![c.tcp_addr().await];
    let a = node(ca).await;
    let mut cb = config();
    cb.bootstrap = vec![c.tcp_addr().await, a.tcp_addr().await];
    let b = node(cb).await;
    let mut ce = config();
    ce.bootstrap = vec![c.quic_addr().await];
    let e = node(ce).await;
    wait_until_future("everyone to connect", DEADLINE, || async {
        a.is_connected_to(&b).await
            && a.is_connected_to(&c).await
            && b.is_connected_to(&c).await
            && c.is_connected_to(&e).await
    })
    .await;
    // c forwards to a (the path the check below relies on).
    e.publish_until(b"warm-up", || a.txs_with_prefix(b"warm-up") > 0)
        .await;
    b.publish(b"b before the deny").await;
    wait_until_future("b's tx at a", DEADLINE, || async {
        !a.txs(b"b before the deny").is_empty()
    })
    .await;

    let mark = a.events_len();
    a.net.deny(b.peer).await;
    wait_until_future("the existing connection to close", DEADLINE, || async {
        !a.is_connected_to(&b).await && !b.is_connected_to(&a).await
    })
    .await;

    // b re-dials (also on its own, a is its bootstrap peer): a refuses it after the handshake.
    let _ = b.net.dial(a.tcp_addr().await).await;
    let _ = b.net.dial(a.quic_addr().await).await;
    wait_until_future("a to refuse b", DEADLINE, || async {
        a.events_since(mark).contains(&NetEvent::Refused(b.peer))
    })
    .await;
    wait_until_future("b to lose the refused connection", DEADLINE, || async {
        !b.is_connected_to(&a).await
    })
    .await;

    // b's tx reaches c, which forwards it to a; then e's tx, forwarded by c after b's.
    b.publish(b"b after the deny").await;
    wait_until_future("b's tx at c", DEADLINE, || async {
        !c.txs(b"b after the deny").is_empty()
    })
    .await;
    e.publish(b"e after the deny").await;
    wait_until_future("e's tx at a through c", DEADLINE, || async {
        !a.txs(b"e after the deny").is_empty()
    })
    .await;
    assert!(
        a.txs(b"b after the deny").is_empty(),
        "a emitted a denied peer's tx"
    );
    for event in a.events_since(mark) {
        match event {
            NetEvent::PeerConnected(p) => assert_ne!(p, b.peer, "denied peer connected"),
            NetEvent::Tx { from, .. } => assert_ne!(from, b.peer, "denied peer's tx"),
            _ => {}
        }
    }
    assert!(!a.is_connected_to(&b).await);

    // Allowed again, b connects as before.
    a.net.allow(b.peer).await;
    wait_until_future("b to reconnect once allowed", DEADLINE, || async {
        b.net.dial(a.tcp_addr().await).await.is_ok() && a.is_connected_to(&b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_quic_both_work() {
    init_tracing();
    let mut cq = config();
    cq.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let q = node(cq).await;
    let mut ct = config();
    ct.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let t = node(ct).await;
    assert!(q
        .net
        .listen_addrs()
        .await
        .iter()
        .all(|a| a.to_string().contains("/quic-v1")));
    assert!(t
        .net
        .listen_addrs()
        .await
        .iter()
        .all(|a| a.to_string().contains("/tcp/")));

    let d = node(config()).await;
    assert_eq!(d.net.dial(q.quic_addr().await).await, Ok(q.peer));
    assert_eq!(d.net.dial(t.tcp_addr().await).await, Ok(t.peer));

    d.publish_until(b"over both transports", || {
        q.txs_with_prefix(b"over both transports") > 0
            && t.txs_with_prefix(b"over both transports") > 0
    })
    .await;
    q.publish(b"back over quic").await;
    t.publish(b"back over tcp").await;
    wait_until_future("the replies", DEADLINE, || async {
        !d.txs(b"back over quic").is_empty() && !d.txs(b"back over tcp").is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    init_tracing();
    let mut ch = config();
    ch.max_connections = 2;
    let h = node(ch).await;
    let x1 = node(config()).await;
    let x2 = node(config()).await;
    let x3 = node(config()).await;
    assert_eq!(x1.net.dial(h.tcp_addr().await).await, Ok(h.peer));
    assert_eq!(x2.net.dial(h.tcp_addr().await).await, Ok(h.peer));
    wait_until_future("h to have two peers", DEADLINE, || async {
        h.net.peers().await.len() == 2
    })
    .await;

    // One connection per peer: dialling a connected peer by id is a no-op, and a second
    // connection over another transport is refused, leaving the first one up.
    assert_eq!(x1.net.dial(h.quic_addr().await).await, Ok(h.peer));
    let mut quic_plain = h.quic_addr().await;
    quic_plain.pop();
    assert!(matches!(
        x1.net.dial(quic_plain).await,
        Err(NetError::Dial { .. })
    ));

    // A third peer is over the limit.
    let _ = x3.net.dial(h.tcp_addr().await).await;
    wait_until_future("x3's connection to be dropped", DEADLINE, || async {
        !x3.is_connected_to(&h).await
    })
    .await;
    never_future("h over its limit", Duration::from_secs(2), || async {
        let peers = h.net.peers().await;
        peers.len() > 2 || peers.contains(&x3.peer)
    })
    .await;
    assert!(h.is_connected_to(&x1).await && h.is_connected_to(&x2).await);
    assert!(
        x1.is_connected_to(&h).await,
        "the first connection survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_on_the_port_do_not_crash() {
    init_tracing();
    let h = node(config()).await;
    let tcp = h.tcp_addr().await;
    let quic = h.quic_addr().await;
    // `/ip4/127.0.0.1/tcp/<port>/...` or `/ip4/127.0.0.1/udp/<port>/...`
    let port = |a: &meshward_net::Multiaddr| -> u16 {
        a.to_string().split('/').nth(4).unwrap().parse().unwrap()
    };
    let mut rng = rand::thread_rng();
    for round in 0..20 {
        let mut garbage = vec![0u8; 1 << (6 + round % 10)];
        rng.fill_bytes(&mut garbage);
        if round % 2 == 1 {
            // A valid multistream-select header, then garbage.
            let mut header = vec![19u8];
            header.extend_from_slice(b"/multistream/1.0.0\n");
            header.extend_from_slice(&garbage);
            garbage = header;
        }
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port(&tcp)))
            .await
            .unwrap();
        // The node may hang up first: a write error is fine.
        let _ = s.write_all(&garbage).await;
        let _ = s.shutdown().await;

        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut datagram = vec![0u8; 1200];
        rng.fill_bytes(&mut datagram);
        udp.send_to(&datagram, ("127.0.0.1", port(&quic)))
            .await
            .unwrap();
    }

    let p = node(config()).await;
    assert_eq!(p.net.dial(tcp).await, Ok(h.peer));
    assert_eq!(p.net.dial(quic).await, Ok(h.peer));
    p.publish(b"still gossiping").await;
    wait_until_future("gossip after the garbage", DEADLINE, || async {
        !h.txs(b"still gossiping").is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tx_is_refused_and_shutdown_closes_handles() {
    init_tracing();
    let mut c = config();
    c.gossip_max_transmit_size = 1024;
    let a = node(c).await;
    assert_eq!(
        a.net.publish_tx(vec![0u8; 1025]).await,
        Err(NetError::TxTooLarge {
            len: 1025,
            max: 1024
        })
    );
    let other = a.net.clone();
    a.net.shutdown().await;
    assert_eq!(other.publish_tx(vec![1]).await, Err(NetError::Closed));
    assert!(other.peers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_discovers_peers_beyond_bootstrap() {
    init_tracing();
    let discovering = || {
        let mut c = config();
        c.target_peers = 8;
        c
    };
    let a = node(discovering()).await;
    let mut cb = discovering();
    cb.bootstrap = vec![a.tcp_addr().await];
    let b = node(cb).await;
    let mut cc = discovering();
    cc.bootstrap = vec![b.tcp_addr().await];
    let c = node(cc).await;
    // c only knows b; b's routing table tells it about a, and c connects to it (or a to c).
    wait_until_future("c to discover and connect to a", DEADLINE, || async {
        c.is_connected_to(&a).await
            && c.events_since(0).iter().any(
                |e| matches!(e, NetEvent::Discovered(p, addrs) if *p == a.peer && !addrs.is_empty()),
            )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_error_is_reported() {
    init_tracing();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut c = config();
    c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    let key = meshward_core::ids::Keypair::generate(&mut rand::rngs::OsRng);
    match meshward_net::spawn(&key, c).await {
        Err(NetError::Listen { addr, .. }) => assert!(addr.to_string().contains(&port.to_string())),
        other => panic!("expected a listen error, got {:?}", other.map(|_| ())),
    }
}

/// A members-only node (a gateway) admits nobody until it has a rule, then only the peers the
/// rule accepts: a stranger's connection is refused at the handshake, so it never receives
/// gossip; a member connects and gets the node's transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_only_node_admits_members_and_refuses_strangers() {
    init_tracing();
    let mut gc = config();
    gc.members_only = true;
    let gateway = node(gc).await;
    let member = node(config()).await;
    let stranger = node(config()).await;
    let mark = gateway.events_len();
    // Before the rule: nobody.
    let _ = member.net.dial(gateway.tcp_addr().await).await;
    wait_until_future(
        "the gateway to refuse the member before it has a rule",
        DEADLINE,
        || async {
            gateway
                .events_since(mark)
                .contains(&NetEvent::Refused(member.peer))
        },
    )
    .await;
    let allowed = member.peer;
    gateway
        .net
        .set_admission(std::sync::Arc::new(move |p: &meshward_net::PeerId| {
            *p == allowed
        }))
        .await;
    wait_until_future("the member to connect", DEADLINE, || async {
        member.net.dial(gateway.tcp_addr().await).await.is_ok()
            && gateway.is_connected_to(&member).await
    })
    .await;
    let _ = stranger.net.dial(gateway.tcp_addr().await).await;
    let _ = stranger.net.dial(gateway.quic_addr().await).await;
    wait_until_future("the gateway to refuse the stranger", DEADLINE, || async {
        gateway
            .events_since(mark)
            .contains(&NetEvent::Refused(stranger.peer))
    })
    .await;
    gateway
        .publish_until(b"for members", || {
            member.txs_with_prefix(b"for members") > 0
        })
        .await;
    never_future(
        "the stranger connected or got gossip",
        Duration::from_secs(2),
        || async {
            gateway.is_connected_to(&stranger).await
                || stranger.is_connected_to(&gateway).await
                || stranger.txs_with_prefix(b"for members") > 0
        },
    )
    .await;
    for event in gateway.events_since(mark) {
        assert_ne!(
            event,
            NetEvent::PeerConnected(stranger.peer),
            "stranger connected"
        );
    }
}

/// A node answers the standard libp2p ping (`/ipfs/ping/1.0.0`), as stock Kademlia clients
/// check before adding a peer: a bare libp2p swarm with only ping gets a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_libp2p_ping_is_answered() {
    use libp2p::futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    init_tracing();
    let a = node(config()).await;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            libp2p::ping::Behaviour::new(
                libp2p::ping::Config::new().with_interval(Duration::from_millis(200)),
            )
        })
        .unwrap()
        .build();
    swarm.dial(a.tcp_addr().await).unwrap();
    let rtt = tokio::time::timeout(DEADLINE, async {
        loop {
            if let SwarmEvent::Behaviour(libp2p::ping::Event {
                result: Ok(rtt), ..
            }) = swarm.select_next_some().await
            {
                return rtt;
            }
        }
    })
    .await
    .expect("a ping answered within the deadline");
    assert!(rtt < DEADLINE);
}

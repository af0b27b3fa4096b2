//! The listener over real TCP on 127.0.0.1 against an in-memory backend: logins (anonymous,
//! wrong password, rate limit), a publish routed or refused with its reason, subscriptions and
//! pushes, a server kick, QoS 2 and keep-alive.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshward_mqtt::codec::{ConnRefusal, PubRefusal, Will};
use meshward_mqtt::topic::{Feed, Target};
use meshward_mqtt::{auth, Accepted, Backend, BoxFuture, Limits, Login, Push, SessionHandle};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const USER: &str = "dev1";

struct Fake {
    hash: String,
    published: Arc<Mutex<Vec<(Target, Bytes)>>>,
    pushes: Arc<Mutex<Option<mpsc::Sender<Push>>>>,
}

struct Handle {
    published: Arc<Mutex<Vec<(Target, Bytes)>>>,
}

impl SessionHandle for Handle {
    fn publish(
        &self,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), PubRefusal>> {
        let refused = matches!(&target, Target::Device(d) if d == "forbidden");
        if !refused {
            self.published.lock().unwrap().push((target, payload));
        }
        Box::pin(async move {
            if refused {
                Err(PubRefusal::NotAuthorized)
            } else {
                Ok(())
            }
        })
    }
    fn set_feeds(&self, _inbox: bool, _receipts: bool) {}
    fn closed(&self, _will: Option<Will>) {}
}

impl Backend for Fake {
    fn password_hash(&self, username: &str) -> Option<String> {
        (username == USER).then(|| self.hash.clone())
    }
    fn open(self: Arc<Self>, _login: Login) -> BoxFuture<'static, Result<Accepted, ConnRefusal>> {
        let (tx, rx) = mpsc::channel(8);
        *self.pushes.lock().unwrap() = Some(tx);
        let handle = Arc::new(Handle {
            published: self.published.clone(),
        });
        Box::pin(async move {
            Ok(Accepted {
                handle,
                pushes: rx,
                session_present: false,
            })
        })
    }
}

struct Server {
    port: u16,
    published: Arc<Mutex<Vec<(Target, Bytes)>>>,
    pushes: Arc<Mutex<Option<mpsc::Sender<Push>>>>,
    _stop: watch::Sender<bool>,
}

async fn server(password: &str) -> Server {
    server_tls(password, None).await
}

async fn server_tls(password: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let published: Arc<Mutex<Vec<(Target, Bytes)>>> = Arc::default();
    let pushes: Arc<Mutex<Option<mpsc::Sender<Push>>>> = Arc::default();
    let fake = Arc::new(Fake {
        hash: auth::hash_password(password),
        published: published.clone(),
        pushes: pushes.clone(),
    });
    let (stop, rx) = watch::channel(false);
    tokio::spawn(meshward_mqtt::serve(l, fake, Limits::default(), tls, rx));
    Server {
        port,
        published,
        pushes,
        _stop: stop,
    }
}

/// Sends bytes and reads whatever comes back within `wait` (or until the server closes).
async fn exchange(s: &mut TcpStream, out: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    s.write_all(out).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

fn connect5(user: Option<(&str, &str)>, keep_alive: u16) -> Vec<u8> {
    let c = v5::Connect {
        keep_alive,
        client_id: "c".into(),
        clean_start: true,
        properties: None,
    };
    let login = user.map(|(u, p)| v5::Login::new(u, p));
    let mut b = BytesMut::new();
    c.write(&None, &login, &mut b).unwrap();
    b.to_vec()
}

fn connack_code5(bytes: &[u8]) -> v5::ConnectReturnCode {
    let mut b = BytesMut::from(bytes);
    match v5::Packet::read(&mut b, None).unwrap() {
        v5::Packet::ConnAck(a) => a.code,
        p => panic!("not a CONNACK: {p:?}"),
    }
}

fn packets5(bytes: &[u8]) -> Vec<v5::Packet> {
    let mut b = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !b.is_empty() {
        if b[..] == [0xE0, 0x00] {
            break;
        }
        let before = b.clone();
        out.push(
            v5::Packet::read(&mut b, None).unwrap_or_else(|e| panic!("{e:?} reading {before:x?}")),
        );
    }
    out
}

#[tokio::test]
async fn logins_without_or_with_wrong_credentials_are_refused_and_then_rate_limited() {
    let srv = server("right").await;
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let (got, closed) = exchange(&mut s, &connect5(None, 0), Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(
        connack_code5(&got),
        v5::ConnectReturnCode::BadUserNamePassword
    );
    for _ in 0..auth::FAILURE_BURST {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
        let (got, _) = exchange(
            &mut s,
            &connect5(Some((USER, "wrong")), 0),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            connack_code5(&got),
            v5::ConnectReturnCode::BadUserNamePassword
        );
    }
    // Now even the right password is not tried from this address.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let (got, _) = exchange(
        &mut s,
        &connect5(Some((USER, "right")), 0),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        connack_code5(&got),
        v5::ConnectReturnCode::ConnectionRateExceeded
    );
    // An MQTT 3.1 CONNECT is refused with 3.1.1's "unacceptable protocol version".
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let mqtt31 = [
        0x10, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
    ];
    let (got, closed) = exchange(&mut s, &mqtt31, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01]);
}

#[tokio::test]
async fn a_session_publishes_subscribes_gets_pushes_and_is_kicked() {
    let srv = server("pw").await;
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let (got, _) = exchange(
        &mut s,
        &connect5(Some((USER, "pw")), 0),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(connack_code5(&got), v5::ConnectReturnCode::Success);

    // Routed, refused by the backend (0x87), and not a Meshward topic (0x90).
    let mut b = BytesMut::new();
    for (i, topic) in [
        "meshward/v1/to/peer",
        "meshward/v1/to/forbidden",
        "elsewhere/x",
    ]
    .iter()
    .enumerate()
    {
        let mut p = v5::Publish::new(*topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "hi", None);
        p.pkid = i as u16 + 1;
        p.write(&mut b).unwrap();
    }
    let (got, _) = exchange(&mut s, &b, Duration::from_millis(500)).await;
    let acks: Vec<(u16, v5::PubAckReason)> = packets5(&got)
        .into_iter()
        .map(|p| match p {
            v5::Packet::PubAck(a) => (a.pkid, a.reason),
            p => panic!("{p:?}"),
        })
        .collect();
    // In the order the PUBLISHes came, as MQTT requires.
    assert_eq!(
        acks,
        vec![
            (1, v5::PubAckReason::Success),
            (2, v5::PubAckReason::NotAuthorized),
            (3, v5::PubAckReason::TopicNameInvalid),
        ]
    );
    assert_eq!(
        *srv.published.lock().unwrap(),
        vec![(Target::Device("peer".into()), Bytes::from_static(b"hi"))]
    );

    // Subscribe to the inbox (granted) and to a wildcard (refused); a push arrives as QoS 1.
    let mut b = BytesMut::new();
    let sub = v5::Subscribe::new_many(
        [
            v5::Filter::new(
                "meshward/v1/inbox",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            ),
            v5::Filter::new("meshward/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
        ],
        None,
    );
    let mut sub = sub;
    sub.pkid = 9;
    sub.write(&mut b).unwrap();
    let (got, _) = exchange(&mut s, &b, Duration::from_millis(300)).await;
    match &packets5(&got)[..] {
        [v5::Packet::SubAck(a)] => assert_eq!(
            a.return_codes,
            vec![
                v5::SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
                v5::SubscribeReasonCode::NotAuthorized
            ]
        ),
        p => panic!("{p:?}"),
    }
    let pushes = srv.pushes.lock().unwrap().clone().unwrap();
    pushes
        .send(Push::Message {
            feed: Feed::Inbox,
            payload: Bytes::from_static(b"for you"),
            user: vec![("from".into(), "x".into())],
        })
        .await
        .unwrap();
    let (got, _) = exchange(&mut s, &[], Duration::from_millis(300)).await;
    match &packets5(&got)[..] {
        [v5::Packet::Publish(p)] => {
            assert_eq!(&p.topic[..], b"meshward/v1/inbox");
            assert_eq!(&p.payload[..], b"for you");
            assert_eq!(
                p.properties.as_ref().unwrap().user_properties,
                vec![("from".to_string(), "x".to_string())]
            );
        }
        p => panic!("{p:?}"),
    }
    // The backend closes the session: DISCONNECT 0x87, then the connection ends.
    pushes
        .send(Push::Kick(meshward_mqtt::codec::Kick::NotAuthorized))
        .await
        .unwrap();
    let (got, closed) = exchange(&mut s, &[], Duration::from_secs(5)).await;
    assert!(closed);
    match &packets5(&got)[..] {
        [v5::Packet::Disconnect(d)] => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::NotAuthorized)
        }
        p => panic!("{p:?}"),
    }
}

#[tokio::test]
async fn qos2_and_a_silent_client_are_disconnected() {
    let srv = server("pw").await;
    // QoS 2: DISCONNECT 0x9B.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    exchange(
        &mut s,
        &connect5(Some((USER, "pw")), 0),
        Duration::from_millis(500),
    )
    .await;
    let mut b = BytesMut::new();
    let mut p = v5::Publish::new(
        "meshward/v1/to/x",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        "x",
        None,
    );
    p.pkid = 1;
    p.write(&mut b).unwrap();
    let (got, closed) = exchange(&mut s, &b, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(
        matches!(&packets5(&got)[..], [v5::Packet::Disconnect(d)] if d.reason_code == v5::DisconnectReasonCode::QoSNotSupported)
    );
    assert!(srv.published.lock().unwrap().is_empty());

    // Keep-alive 1 s: nothing sent for 1.5 s closes it with 0x8D.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let t = std::time::Instant::now();
    let (got, _) = exchange(
        &mut s,
        &connect5(Some((USER, "pw")), 1),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(connack_code5(&got), v5::ConnectReturnCode::Success);
    let (got, closed) = exchange(&mut s, &[], Duration::from_secs(10)).await;
    assert!(
        closed && t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(
        matches!(&packets5(&got)[..], [v5::Packet::Disconnect(d)] if d.reason_code == v5::DisconnectReasonCode::KeepAliveTimeout)
    );

    // MQTT 3.1.1: a PINGREQ is answered.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let mut c = v4::Connect::new("c4");
    c.set_login(USER, "pw");
    let mut b = BytesMut::new();
    c.write(&mut b).unwrap();
    let (got, _) = exchange(&mut s, &b, Duration::from_millis(500)).await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x00]);
    let (got, _) = exchange(&mut s, &[0xC0, 0x00], Duration::from_millis(300)).await;
    assert_eq!(got, [0xD0, 0x00]);
}

#[tokio::test]
async fn with_tls_a_client_logs_in_over_tls_and_plain_mqtt_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let tls = meshward_mqtt::server::tls_config(&cert, &key).unwrap();
    assert!(meshward_mqtt::server::tls_config(&key, &cert).is_err());
    let srv = server_tls("pw", Some(tls)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(&connect5(Some((USER, "pw")), 0)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(connack_code5(&buf[..n]), v5::ConnectReturnCode::Success);

    // A plaintext CONNECT is not a TLS ClientHello: the connection closes, nothing answered.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let (got, closed) = exchange(
        &mut s,
        &connect5(Some((USER, "pw")), 0),
        Duration::from_secs(5),
    )
    .await;
    assert!(closed);
    assert!(!got.starts_with(&[0x20]), "{got:x?}");
}

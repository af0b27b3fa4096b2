//! The listener: accepts MQTT connections, authenticates each CONNECT (argon2id, rate limited),
//! and drives the session against a [`Backend`], which does what a message means (for a gateway:
//! seal, sign, anchor and deliver as the device's custodian).
//!
//! Limits (each also in FORMATS.md): [`Limits::max_connections`] connections (beyond: closed at
//! accept), one packet at most [`Limits::max_packet`] bytes, CONNECT within
//! [`Limits::connect_timeout`], [`Limits::max_inflight`] of the client's PUBLISHes queued for
//! the session's worker, which handles them one at a time in order (beyond: the socket is not
//! read until one is taken), the same number of the
//! server's QoS 1 messages unacknowledged (beyond: nothing more is taken from the session's
//! queue, whose bound the backend sets), and 1.5 × keep-alive without a packet closes the
//! session.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info};

use crate::auth::{self, LoginLimiter};
use crate::codec::{self, ConnRefusal, Connect, Inbound, Kick, PubRefusal, Qos, Version, Will};
use crate::topic::{self, Feed, Target};

/// A boxed future, as the backend's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Largest packet, in bytes, either way.
    pub max_packet: usize,
    /// How long a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// QoS 1 messages in flight each way per session.
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            // A sealed-mode frame of one envelope with the largest payload (64 KiB) and its
            // header, with room for the PUBLISH's own.
            max_packet: 66 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_inflight: 32,
        }
    }
}

/// A verified login, handed to [`Backend::open`].
#[derive(Debug, Clone)]
pub struct Login {
    /// The client's address.
    pub addr: SocketAddr,
    /// The user name (for a custodial device, its device id).
    pub username: String,
    /// The MQTT client id.
    pub client_id: String,
    /// Clean session (3.1.1) or clean start (5).
    pub clean: bool,
    /// The protocol level.
    pub version: Version,
    /// Logged in with a signed token ([`Backend::check_token`]), not a password: a device that
    /// holds its own keys (sealed mode).
    pub signed: bool,
}

/// Something the session pushes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A message on one of the feeds.
    Message {
        /// Which feed.
        feed: Feed,
        /// The payload.
        payload: Bytes,
        /// MQTT 5 user properties.
        user: Vec<(String, String)>,
    },
    /// Close the session with this reason.
    Kick(Kick),
}

/// A session the backend opened.
pub struct Accepted {
    /// What the session does.
    pub handle: Arc<dyn SessionHandle>,
    /// What it pushes to the client (a bounded queue, sized by the backend).
    pub pushes: mpsc::Receiver<Push>,
    /// CONNACK's session-present flag.
    pub session_present: bool,
}

/// One open session, as the listener drives it.
pub trait SessionHandle: Send + Sync {
    /// Handles a PUBLISH; resolves once the message is taken (for a custodian: sealed, anchored
    /// and delivered or held by mailboxes), or refused.
    fn publish(&self, target: Target, payload: Bytes)
        -> BoxFuture<'static, Result<(), PubRefusal>>;
    /// Which feeds the client is subscribed to.
    fn set_feeds(&self, inbox: bool, receipts: bool);
    /// The connection ended. `will`: the will message to send, if it ended without a
    /// DISCONNECT.
    fn closed(&self, will: Option<Will>);
}

/// What the listener needs from its owner.
pub trait Backend: Send + Sync + 'static {
    /// The argon2id PHC string of `username`'s password, if that user may log in here.
    fn password_hash(&self, username: &str) -> Option<String>;
    /// Checks a password the backend recognises as a signed login token rather than a password:
    /// `Some(accepted)`, or `None` to check it as a password against [`Backend::password_hash`].
    fn check_token(&self, username: &str, password: &str) -> Option<bool> {
        let _ = (username, password);
        None
    }
    /// Opens the session of a user whose password was verified. A refusal is sent in CONNACK.
    fn open(self: Arc<Self>, login: Login) -> BoxFuture<'static, Result<Accepted, ConnRefusal>>;
}

/// A hash no password matches, verified for unknown users so that a login costs the same
/// whether or not the name exists.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| auth::hash_password(&auth::generate_password()))
}

struct Shared {
    backend: Arc<dyn Backend>,
    limits: Limits,
    limiter: Mutex<LoginLimiter>,
    verify: Semaphore,
}

/// Loads a TLS server configuration from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3 on ring, no client certificates.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` until `shutdown` turns true; each session is then told
/// the server is shutting down. With `tls`, every connection must complete a TLS handshake
/// (within [`Limits::connect_timeout`]) before its CONNECT is read.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Shared {
        backend,
        limits,
        limiter: Mutex::new(LoginLimiter::default()),
        verify: Semaphore::new(auth::MAX_CONCURRENT_VERIFY),
    });
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            debug!(%addr, "mqtt connection limit reached; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, addr, shared, stop).await,
                Some(acceptor) => {
                    let deadline = shared.limits.connect_timeout;
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, addr, shared, stop).await,
                        Ok(Err(e)) => debug!(%addr, error = %e, "mqtt TLS handshake failed"),
                        Err(_) => debug!(%addr, "mqtt TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        s.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Reads until `f` yields a packet; `Ok(None)` at end of stream.
async fn read_until<S, T>(
    s: &mut S,
    buf: &mut BytesMut,
    mut f: impl FnMut(&mut BytesMut) -> Result<Option<T>, codec::CodecError>,
) -> Result<Option<T>, codec::CodecError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(p) = f(buf)? {
            return Ok(Some(p));
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn authenticate(
    shared: &Shared,
    addr: SocketAddr,
    c: &Connect,
) -> Result<Accepted, ConnRefusal> {
    let (Some(user), Some(password)) = (c.username.clone(), c.password.clone()) else {
        return Err(ConnRefusal::BadCredentials);
    };
    let ip = addr.ip();
    if !meshward_core::sync::lock(&shared.limiter, "mqtt login limiter").allows(
        ip,
        &user,
        Instant::now(),
    ) {
        return Err(ConnRefusal::RateLimited);
    }
    let signed = shared.backend.check_token(&user, &password);
    let ok = match signed {
        Some(ok) => ok,
        None => {
            let Ok(_permit) = shared.verify.try_acquire() else {
                return Err(ConnRefusal::Busy);
            };
            let hash = shared.backend.password_hash(&user);
            let known = hash.is_some();
            let phc = hash.unwrap_or_else(|| dummy_hash().to_string());
            let ok = tokio::task::spawn_blocking(move || auth::verify_password(&phc, &password))
                .await
                .unwrap_or(false);
            ok && known
        }
    };
    if !ok {
        meshward_core::sync::lock(&shared.limiter, "mqtt login limiter").failed(
            ip,
            &user,
            Instant::now(),
        );
        info!(%addr, "mqtt login refused: bad credentials");
        return Err(ConnRefusal::BadCredentials);
    }
    shared
        .backend
        .clone()
        .open(Login {
            addr,
            username: user,
            client_id: c.client_id.clone(),
            clean: c.clean,
            version: c.version,
            signed: signed.is_some(),
        })
        .await
}

/// A PUBLISH for the worker: packet id, QoS, where it goes (`None`: not a topic we route).
type Work = (u16, Qos, Option<Target>, Bytes);
/// The worker's answer for one PUBLISH.
type Done = (u16, Qos, Result<(), PubRefusal>);

/// What one connection remembers between packets.
struct SessionState {
    version: Version,
    will: Option<Will>,
    inbox: Option<Qos>,
    receipts: Option<Qos>,
    /// Packet ids of the server's QoS 1 messages not yet acknowledged.
    unacked: Vec<u16>,
    next_pkid: u16,
}

/// Handles every whole packet in `buf` while the worker's queue has room, writing answers to
/// `out`. `Err(Some(k))`: close with `k`; `Err(None)`: the client disconnected.
fn drain(
    st: &mut SessionState,
    handle: &Arc<dyn SessionHandle>,
    buf: &mut BytesMut,
    work: &mpsc::Sender<Work>,
    max_packet: usize,
    out: &mut BytesMut,
) -> Result<(), Option<Kick>> {
    let version = st.version;
    while work.capacity() > 0 {
        let p = match codec::read(version, buf, max_packet) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "mqtt packet refused");
                return Err(Some(Kick::Malformed));
            }
        };
        match p {
            Inbound::Publish {
                topic,
                qos,
                pkid,
                payload,
                ..
            } => {
                let Some(qos) = qos else {
                    return Err(Some(Kick::QosNotSupported));
                };
                // Room was checked above; one packet takes one slot.
                if work
                    .try_send((pkid, qos, topic::target(&topic), payload))
                    .is_err()
                {
                    return Err(Some(Kick::ShuttingDown));
                }
            }
            Inbound::PubAck { pkid } => st.unacked.retain(|p| *p != pkid),
            Inbound::Subscribe { pkid, filters } => {
                let granted: Vec<Option<Qos>> = filters
                    .iter()
                    .map(|(f, q)| {
                        let q = if *q == 0 {
                            Qos::AtMostOnce
                        } else {
                            Qos::AtLeastOnce
                        };
                        match topic::feed(f) {
                            Some(Feed::Inbox) => {
                                st.inbox = Some(q);
                                Some(q)
                            }
                            Some(Feed::Receipts) => {
                                st.receipts = Some(q);
                                Some(q)
                            }
                            None => None,
                        }
                    })
                    .collect();
                handle.set_feeds(st.inbox.is_some(), st.receipts.is_some());
                codec::suback(version, pkid, &granted, out);
            }
            Inbound::Unsubscribe { pkid, filters } => {
                for f in &filters {
                    match topic::feed(f) {
                        Some(Feed::Inbox) => st.inbox = None,
                        Some(Feed::Receipts) => st.receipts = None,
                        None => {}
                    }
                }
                handle.set_feeds(st.inbox.is_some(), st.receipts.is_some());
                codec::unsuback(version, pkid, filters.len(), out);
            }
            Inbound::PingReq => codec::pingresp(version, out),
            Inbound::Disconnect => {
                st.will = None;
                return Err(None);
            }
            Inbound::Unexpected(what) => {
                debug!(what, "mqtt protocol error");
                return Err(Some(Kick::ProtocolError));
            }
        }
    }
    Ok(())
}

async fn connection<S>(
    mut s: S,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = shared.limits.clone();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(
        limits.connect_timeout,
        read_until(&mut s, &mut buf, |b| {
            codec::read_connect(b, limits.max_packet)
        }),
    )
    .await;
    let connect = match first {
        Ok(Ok(Some(c))) => c,
        Ok(Err(codec::CodecError::UnsupportedVersion(level))) => {
            debug!(%addr, level, "mqtt protocol level refused");
            codec::connack(Version::V311, Some(ConnRefusal::Version), false, &mut out);
            let _ = write_all(&mut s, &mut out).await;
            return;
        }
        Ok(Err(e)) => {
            debug!(%addr, error = %e, "mqtt connection closed before CONNECT");
            return;
        }
        Ok(Ok(None)) | Err(_) => return,
    };
    let version = connect.version;
    let accepted = match authenticate(&shared, addr, &connect).await {
        Ok(a) => a,
        Err(refusal) => {
            codec::connack(version, Some(refusal), false, &mut out);
            let _ = write_all(&mut s, &mut out).await;
            return;
        }
    };
    let Accepted {
        handle,
        mut pushes,
        session_present,
    } = accepted;
    codec::connack(version, None, session_present, &mut out);
    if write_all(&mut s, &mut out).await.is_err() {
        handle.closed(None);
        return;
    }
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let mut st = SessionState {
        version,
        will: connect.will,
        inbox: None,
        receipts: None,
        unacked: Vec::new(),
        next_pkid: 0,
    };
    // PUBLISHes are handled one at a time, in the order received (MQTT requires both the
    // messages and their PUBACKs in order), by a worker; at most `max_inflight` wait for it.
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(limits.max_inflight);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(limits.max_inflight);
    let worker_handle = handle.clone();
    let worker = tokio::spawn(async move {
        while let Some((pkid, qos, target, payload)) = work_rx.recv().await {
            let r = match target {
                Some(t) => worker_handle.publish(t, payload).await,
                None => Err(PubRefusal::TopicInvalid),
            };
            if done_tx.send((pkid, qos, r)).await.is_err() {
                break;
            }
        }
    });
    let mut last_heard = Instant::now();
    let kick = loop {
        // Parse what is buffered, as far as the worker's queue has room.
        match drain(
            &mut st,
            &handle,
            &mut buf,
            &work_tx,
            limits.max_packet,
            &mut out,
        ) {
            Ok(()) => {}
            Err(k) => break k,
        }
        if write_all(&mut s, &mut out).await.is_err() {
            break None;
        }
        let reading = work_tx.capacity() > 0;
        let taking = st.unacked.len() < limits.max_inflight;
        let idle = keep_alive.map(|k| last_heard + k);
        tokio::select! {
            r = s.read_buf(&mut buf), if reading => {
                match r {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => last_heard = Instant::now(),
                }
            }
            Some((pkid, qos, result)) = done_rx.recv() => {
                // The client's own packets are being handled: while the queue was full its
                // socket was not read, so its keep-alive counts from here.
                last_heard = Instant::now();
                if let Err(r) = result {
                    debug!(%addr, refusal = ?r, "mqtt publish refused");
                }
                match (qos, result) {
                    (Qos::AtLeastOnce, r) => codec::puback(version, pkid, r.err(), &mut out),
                    // 3.1.1 has no way to refuse a publish but to disconnect.
                    (_, Err(PubRefusal::NotAuthorized)) if version == Version::V311 => {
                        break Some(Kick::NotAuthorized);
                    }
                    _ => {}
                }
            }
            push = pushes.recv(), if taking => {
                match push {
                    None => break Some(Kick::ShuttingDown),
                    Some(Push::Kick(k)) => break Some(k),
                    Some(Push::Message { feed, payload, user }) => {
                        let qos = match feed {
                            Feed::Inbox => st.inbox,
                            Feed::Receipts => st.receipts,
                        };
                        let Some(qos) = qos else { continue };
                        let pkid = if qos == Qos::AtLeastOnce {
                            st.next_pkid = st.next_pkid.checked_add(1).unwrap_or(1);
                            st.unacked.push(st.next_pkid);
                            st.next_pkid
                        } else {
                            0
                        };
                        codec::publish(version, feed.topic(), qos, pkid, payload, user, &mut out);
                    }
                }
            }
            _ = async { tokio::time::sleep_until(idle.expect("guarded").into()).await }, if idle.is_some() => {
                break Some(Kick::KeepAliveTimeout);
            }
            _ = async { let _ = stop.wait_for(|v| *v).await; } => break Some(Kick::ShuttingDown),
        }
    };
    worker.abort();
    let will = st.will.take();
    if let Some(k) = kick {
        debug!(%addr, reason = ?k, "mqtt session closed by the server");
        codec::disconnect(version, k, &mut out);
        let _ = write_all(&mut s, &mut out).await;
    }
    let _ = s.shutdown().await;
    handle.closed(will);
}

//! A sealed-mode MQTT client for hosts (feature `mqtt`): a device that keeps its own keys and
//! reaches its gateway over MQTT 5 only, with [`crate::sealed`]'s login and frames, on rumqttc.
//! `meshward mqtt sealed` is built on it; firmware builds the same frames with its own MQTT
//! client.
//!
//! A session subscribes to `meshward/v1/inbox` before anything else, sends one request at a time
//! ([`SealedClient::request`]) and keeps the mail that arrives meanwhile for
//! [`SealedClient::next_mail`]. A refusing PUBACK ends the connection (rumqttc treats it as a
//! protocol failure); the gateway refuses with a reply instead whenever the frame decodes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshward_core::envelope::Envelope;
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{Request, Response};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use rumqttc::v5::mqttbytes::v5::PubAckReason;

use crate::sealed::{self, Inbound};

/// Frames and acknowledgements waiting to be read; the event loop waits when they are full.
pub const CLIENT_QUEUE: usize = 256;

/// Why a sealed-mode exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The gateway refused the login (CONNACK reason).
    #[error("the gateway refused the login: {0:?}")]
    Refused(ConnectReturnCode),
    /// The gateway refused a publish (PUBACK reason); the connection is over.
    #[error("the gateway refused the publish: {0:?}")]
    PubAck(PubAckReason),
    /// Nothing came in time.
    #[error("no {0} in time")]
    Timeout(&'static str),
    /// The connection ended (the gateway's DISCONNECT reason, if it sent one).
    #[error("the connection ended{}", .0.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed(Option<String>),
    /// A frame from the gateway does not decode.
    #[error("a frame from the gateway does not decode: {0}")]
    Frame(#[from] meshward_core::codec::DecodeError),
    /// The MQTT client failed.
    #[error("mqtt: {0}")]
    Mqtt(String),
}

/// One sealed-mode MQTT session.
pub struct SealedClient {
    client: AsyncClient,
    inbound: mpsc::Receiver<Vec<u8>>,
    acks: mpsc::Receiver<PubAckReason>,
    kicked: Arc<Mutex<Option<String>>>,
    mail: VecDeque<(u64, Envelope)>,
    next: u32,
    timeout: Duration,
}

async fn connack(ev: &mut EventLoop) -> Result<(), SealedError> {
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => {
                return Err(SealedError::Refused(code))
            }
            Err(e) => return Err(SealedError::Mqtt(e.to_string())),
        }
    }
}

/// Reads the event loop until the connection ends: frames and PUBACK reasons to their queues,
/// the server's DISCONNECT reason to `kicked`.
async fn drive(
    mut ev: EventLoop,
    frames: mpsc::Sender<Vec<u8>>,
    acks: mpsc::Sender<PubAckReason>,
    kicked: Arc<Mutex<Option<String>>>,
) {
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if frames.send(p.payload.to_vec()).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                let _ = acks.send(a.reason).await;
            }
            Ok(_) => {}
            Err(ConnectionError::MqttState(StateError::PubAckFail { reason })) => {
                let _ = acks.send(reason).await;
                return;
            }
            Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code, ..
            })) => {
                *meshward_core::sync::lock(&kicked, "sealed client") =
                    Some(format!("{reason_code:?}"));
                return;
            }
            // Not reconnecting: the token was spent by the first CONNECT.
            Err(_) => return,
        }
    }
}

impl SealedClient {
    /// Logs in to the MQTT port at `host:port` as `device` with `token` (a fresh
    /// [`sealed::LoginToken`]'s text) and subscribes to the inbox. `timeout` bounds each wait.
    pub async fn connect(
        host: &str,
        port: u16,
        device: &PublicKey,
        token: String,
        timeout: Duration,
    ) -> Result<SealedClient, SealedError> {
        let id = device.peer_id();
        let suffix = id.get(id.len().saturating_sub(12)..).unwrap_or(&id);
        let mut o = MqttOptions::new(format!("sealed-{suffix}"), host, port);
        o.set_credentials(id.clone(), token);
        o.set_max_packet_size(Some(2 * sealed::MAX_FRAME as u32));
        let (client, mut ev) = AsyncClient::new(o, 16);
        tokio::time::timeout(timeout, connack(&mut ev))
            .await
            .map_err(|_| SealedError::Timeout("CONNACK"))??;
        let (frame_tx, inbound) = mpsc::channel(CLIENT_QUEUE);
        let (ack_tx, acks) = mpsc::channel(CLIENT_QUEUE);
        let kicked = Arc::new(Mutex::new(None));
        tokio::spawn(drive(ev, frame_tx, ack_tx, kicked.clone()));
        client
            .subscribe(sealed::INBOX, QoS::AtLeastOnce)
            .await
            .map_err(|e| SealedError::Mqtt(e.to_string()))?;
        Ok(SealedClient {
            client,
            inbound,
            acks,
            kicked,
            mail: VecDeque::new(),
            next: 0,
            timeout,
        })
    }

    fn closed(&self) -> SealedError {
        SealedError::Closed(self.kicked())
    }

    /// The gateway's DISCONNECT reason, once it sent one.
    pub fn kicked(&self) -> Option<String> {
        meshward_core::sync::lock(&self.kicked, "sealed client").clone()
    }

    /// Publishes `payload` on `topic` (QoS 1) and waits for its PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), SealedError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| SealedError::Mqtt(e.to_string()))?;
        let reason = tokio::time::timeout(self.timeout, self.acks.recv())
            .await
            .map_err(|_| SealedError::Timeout("PUBACK"))?
            .ok_or_else(|| self.closed())?;
        match reason {
            PubAckReason::Success => Ok(()),
            r => Err(SealedError::PubAck(r)),
        }
    }

    /// Sends a request and waits for its reply (a refusal is a `Response::Error`).
    pub async fn request(&mut self, req: &Request) -> Result<Response, SealedError> {
        self.next = self.next.wrapping_add(1);
        let id = self.next;
        self.publish(sealed::TOPIC, sealed::request_frame(id, req))
            .await?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let frame = self.frame(deadline, "reply").await?;
            match sealed::parse_inbound(&frame)? {
                Inbound::Mail { number, envelope } => self.mail.push_back((number, *envelope)),
                r @ Inbound::Reply { id: got, .. } if got == id => {
                    return Ok(r.response().expect("a reply has a response")?)
                }
                // A reply to an earlier request that timed out.
                Inbound::Reply { .. } => {}
            }
        }
    }

    async fn frame(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Vec<u8>, SealedError> {
        match tokio::time::timeout_at(deadline, self.inbound.recv()).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(self.closed()),
            Err(_) => Err(SealedError::Timeout(what)),
        }
    }

    /// The next envelope from the device's mailbox, with its mailbox number; `None` if none
    /// comes before `deadline`. Acknowledge what was kept with `Request::AckMailbox`.
    pub async fn next_mail(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(u64, Envelope)>, SealedError> {
        loop {
            if let Some(m) = self.mail.pop_front() {
                return Ok(Some(m));
            }
            let frame = match self.frame(deadline, "mail").await {
                Ok(f) => f,
                Err(SealedError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            match sealed::parse_inbound(&frame)? {
                Inbound::Mail { number, envelope } => self.mail.push_back((number, *envelope)),
                Inbound::Reply { .. } => {}
            }
        }
    }

    /// Ends the session with a DISCONNECT.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}

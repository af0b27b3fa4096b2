//! MQTT packets as a server sees them, for 3.1.1 and 5, on rumqttc's codec (`mqttbytes`).
//!
//! What this module adds to the codec it wraps:
//! - the protocol level is read from the first CONNECT before either codec sees it (rumqttc's
//!   3.1.1 reader accepts level 5 and misparses the rest), and anything but 4 or 5 is refused;
//! - a zero-length MQTT 5 DISCONNECT (`E0 00`, a normal disconnect) is accepted, which rumqttc's
//!   5 reader refuses;
//! - reserved CONNECT flag bit 0 must be clear (MQTT 3.1.1 §3.1.2.3, 5 §3.1.2.3);
//! - one [`Inbound`] type for both versions, holding only what the server acts on, and the
//!   encoders for what it sends.
//!
//! Every decode is bounded by `max_packet`: a fixed header promising more is refused before the
//! body is buffered (the listener never reads more than that into one packet).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The protocol level a connection negotiated in its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Delivery guarantee of a PUBLISH or a subscription. QoS 2 is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    /// At most once.
    AtMostOnce,
    /// At least once (PUBACK).
    AtLeastOnce,
}

/// A will message from CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// 0, 1 or 2 as the client asked.
    pub qos: u8,
}

/// What a CONNECT asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level.
    pub version: Version,
    /// The client identifier (may be empty).
    pub client_id: String,
    /// Keep-alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// 3.1.1 clean session / 5 clean start.
    pub clean: bool,
    /// MQTT 5 session expiry interval, in seconds.
    pub session_expiry: Option<u32>,
    /// User name, if given.
    pub username: Option<String>,
    /// Password, if given. Never printed (see the `Debug` impl).
    pub password: Option<String>,
    /// The will message, if any.
    pub will: Option<Will>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean", &self.clean)
            .field("session_expiry", &self.session_expiry)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("will", &self.will)
            .finish()
    }
}

/// A packet from a client after its CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message. `qos` 2 is kept as `None` for the caller to refuse.
    Publish {
        /// Topic name.
        topic: String,
        /// QoS 0 or 1; `None` for QoS 2.
        qos: Option<Qos>,
        /// Packet id (0 for QoS 0).
        pkid: u16,
        /// The payload.
        payload: Bytes,
        /// The retain flag.
        retain: bool,
    },
    /// The client acknowledges a QoS 1 message the server sent.
    PubAck {
        /// Its packet id.
        pkid: u16,
    },
    /// Subscribe to filters, each with the QoS asked for (0, 1 or 2).
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// Filters and requested QoS.
        filters: Vec<(String, u8)>,
    },
    /// Unsubscribe from filters.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// Keep-alive ping.
    PingReq,
    /// The client disconnects (normally: its will is not sent).
    Disconnect,
    /// A packet a server does not expect from a client here (a second CONNECT, QoS 2 flow
    /// packets, a server's own packets): a protocol error.
    Unexpected(&'static str),
}

/// Why bytes from a client are not a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The first packet is not a CONNECT.
    #[error("the first packet must be CONNECT")]
    NotConnect,
    /// A protocol name or level this server does not speak (only 3.1.1 and 5).
    #[error("unsupported protocol level {0}; MQTT 3.1.1 (4) and 5 are supported")]
    UnsupportedVersion(u8),
    /// The packet is larger than the limit.
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The packet does not decode.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// The length of the fixed header and the remaining length, if `buf` holds the whole header.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, len)));
        }
    }
    Err(CodecError::Malformed(
        "remaining length over 4 bytes".into(),
    ))
}

/// Reads the first packet, which must be a CONNECT. `Ok(None)`: more bytes are needed.
pub fn read_connect(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Connect>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(CodecError::NotConnect);
    }
    let Some((head, rest)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = head + rest;
    if total > max_packet {
        return Err(CodecError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    // Variable header: protocol name (u16 length, bytes), level, flags.
    let body = &buf[head..total];
    let name_len = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| CodecError::Malformed("CONNECT without a protocol name".into()))?;
    let name = body.get(2..2 + name_len);
    let level = body.get(2 + name_len).copied();
    let flags = body.get(3 + name_len).copied();
    let (Some(name), Some(level), Some(flags)) = (name, level, flags) else {
        return Err(CodecError::Malformed("CONNECT header cut short".into()));
    };
    if name != b"MQTT" {
        // "MQIsdp" is MQTT 3.1, which is not offered.
        return Err(CodecError::UnsupportedVersion(level));
    }
    if flags & 1 != 0 {
        return Err(CodecError::Malformed("reserved CONNECT flag set".into()));
    }
    let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
    match level {
        4 => match v4::read(buf, max_packet).map_err(|e| malformed(&e))? {
            v4::Packet::Connect(c) => Ok(Some(Connect {
                version: Version::V311,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                clean: c.clean_session,
                session_expiry: None,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos as u8,
                }),
            })),
            _ => Err(CodecError::NotConnect),
        },
        5 => match v5::Packet::read(buf, Some(max_packet)).map_err(|e| malformed(&e))? {
            v5::Packet::Connect(c, will, login) => {
                let will = match will {
                    Some(w) => Some(Will {
                        topic: String::from_utf8(w.topic.to_vec())
                            .map_err(|_| CodecError::Malformed("will topic not UTF-8".into()))?,
                        payload: w.message,
                        qos: w.qos as u8,
                    }),
                    None => None,
                };
                Ok(Some(Connect {
                    version: Version::V5,
                    client_id: c.client_id,
                    keep_alive: c.keep_alive,
                    clean: c.clean_start,
                    session_expiry: c.properties.and_then(|p| p.session_expiry_interval),
                    username: login.as_ref().map(|l| l.username.clone()),
                    password: login.map(|l| l.password),
                    will,
                }))
            }
            _ => Err(CodecError::NotConnect),
        },
        other => Err(CodecError::UnsupportedVersion(other)),
    }
}

/// Reads the next packet after CONNECT. `Ok(None)`: more bytes are needed.
pub fn read(
    version: Version,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<Inbound>, CodecError> {
    let Some((head, rest)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = head + rest;
    if total > max_packet {
        return Err(CodecError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if buf[0] == 0xE0 && rest == 0 {
        // A DISCONNECT without a reason code: normal disconnection in both versions.
        let _ = buf.split_to(total);
        return Ok(Some(Inbound::Disconnect));
    }
    let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
    let qos = |q: u8| match q {
        0 => Some(Qos::AtMostOnce),
        1 => Some(Qos::AtLeastOnce),
        _ => None,
    };
    let packet = match version {
        Version::V311 => match v4::read(buf, max_packet).map_err(|e| malformed(&e))? {
            v4::Packet::Publish(p) => Inbound::Publish {
                topic: p.topic,
                qos: qos(p.qos as u8),
                pkid: p.pkid,
                payload: p.payload,
                retain: p.retain,
            },
            v4::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
            v4::Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, f.qos as u8))
                    .collect(),
            },
            v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            v4::Packet::PingReq => Inbound::PingReq,
            v4::Packet::Disconnect => Inbound::Disconnect,
            v4::Packet::Connect(_) => Inbound::Unexpected("a second CONNECT"),
            _ => Inbound::Unexpected("a packet the server does not accept"),
        },
        Version::V5 => match v5::Packet::read(buf, Some(max_packet)).map_err(|e| malformed(&e))? {
            v5::Packet::Publish(p) => Inbound::Publish {
                topic: String::from_utf8(p.topic.to_vec())
                    .map_err(|_| CodecError::Malformed("topic not UTF-8".into()))?,
                qos: qos(p.qos as u8),
                pkid: p.pkid,
                payload: p.payload,
                retain: p.retain,
            },
            v5::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
            v5::Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, f.qos as u8))
                    .collect(),
            },
            v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            },
            v5::Packet::PingReq(_) => Inbound::PingReq,
            v5::Packet::Disconnect(_) => Inbound::Disconnect,
            v5::Packet::Connect(..) => Inbound::Unexpected("a second CONNECT"),
            _ => Inbound::Unexpected("a packet the server does not accept"),
        },
    };
    if let Inbound::Publish {
        qos: Some(Qos::AtLeastOnce),
        pkid: 0,
        ..
    } = packet
    {
        return Err(CodecError::Malformed(
            "QoS 1 PUBLISH with packet id 0".into(),
        ));
    }
    Ok(Some(packet))
}

/// Why a CONNECT is refused, as CONNACK says it in each version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// Protocol level not supported.
    Version,
    /// No credentials, or wrong ones.
    BadCredentials,
    /// Valid credentials of a device that may not connect (revoked, quarantined).
    NotAuthorized,
    /// Too many failed logins from this address or for this user: try later.
    RateLimited,
    /// The server cannot take this session now.
    Busy,
}

/// Why a PUBLISH is refused (MQTT 5 PUBACK reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubRefusal {
    /// 0x87: the policy or the topic's rules forbid it.
    NotAuthorized,
    /// 0x90: not a topic this server routes.
    TopicInvalid,
    /// 0x97: a bounded queue is full.
    QuotaExceeded,
    /// 0x99: the payload is not what the topic carries (a sealed-mode frame that does not
    /// decode).
    PayloadInvalid,
    /// 0x80: it could not be sent (the recipient is unknown, no gateway answered, …).
    Unspecified,
}

impl PubRefusal {
    /// The MQTT 5 reason code.
    pub fn code(self) -> u8 {
        match self {
            PubRefusal::NotAuthorized => 0x87,
            PubRefusal::TopicInvalid => 0x90,
            PubRefusal::QuotaExceeded => 0x97,
            PubRefusal::PayloadInvalid => 0x99,
            PubRefusal::Unspecified => 0x80,
        }
    }
}

fn put4(p: v4::Packet, out: &mut BytesMut) {
    let r = match &p {
        v4::Packet::ConnAck(x) => x.write(out),
        v4::Packet::Publish(x) => x.write(out),
        v4::Packet::PubAck(x) => x.write(out),
        v4::Packet::SubAck(x) => x.write(out),
        v4::Packet::UnsubAck(x) => x.write(out),
        v4::Packet::PingResp => v4::PingResp.write(out),
        _ => Ok(0),
    };
    // Writing into a BytesMut fails only for a packet over MQTT's 256 MiB, which the server
    // never builds (payloads are bounded far below).
    debug_assert!(r.is_ok(), "encoding an outgoing packet");
}

fn put5(p: v5::Packet, out: &mut BytesMut) {
    let r = p.write(out);
    debug_assert!(r.is_ok(), "encoding an outgoing packet");
}

/// CONNACK: accepted (`refusal` `None`) or refused.
pub fn connack(version: Version, refusal: Option<ConnRefusal>, present: bool, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            use v4::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(ConnRefusal::Version) => C::RefusedProtocolVersion,
                Some(ConnRefusal::BadCredentials) => C::BadUserNamePassword,
                Some(ConnRefusal::NotAuthorized) => C::NotAuthorized,
                Some(ConnRefusal::RateLimited | ConnRefusal::Busy) => C::ServiceUnavailable,
            };
            put4(v4::Packet::ConnAck(v4::ConnAck::new(code, present)), out);
        }
        Version::V5 => {
            use v5::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(ConnRefusal::Version) => C::UnsupportedProtocolVersion,
                Some(ConnRefusal::BadCredentials) => C::BadUserNamePassword,
                Some(ConnRefusal::NotAuthorized) => C::NotAuthorized,
                Some(ConnRefusal::RateLimited) => C::ConnectionRateExceeded,
                Some(ConnRefusal::Busy) => C::ServerBusy,
            };
            let properties = refusal.is_none().then(|| v5::ConnAckProperties {
                // What this server offers: QoS 1 at most, no retained messages, no wildcards.
                session_expiry_interval: None,
                receive_max: None,
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: None,
                assigned_client_identifier: None,
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            });
            put5(
                v5::Packet::ConnAck(v5::ConnAck {
                    session_present: present && refusal.is_none(),
                    code,
                    properties,
                }),
                out,
            );
        }
    }
}

/// A PUBLISH to the client. `user` are MQTT 5 user properties (dropped in 3.1.1).
pub fn publish(
    version: Version,
    topic: &str,
    qos: Qos,
    pkid: u16,
    payload: Bytes,
    user: Vec<(String, String)>,
    out: &mut BytesMut,
) {
    let pkid = if qos == Qos::AtMostOnce { 0 } else { pkid };
    match version {
        Version::V311 => {
            let q = match qos {
                Qos::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
                Qos::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
            };
            let mut p = v4::Publish::from_bytes(topic, q, payload);
            p.pkid = pkid;
            put4(v4::Packet::Publish(p), out);
        }
        Version::V5 => {
            let q = match qos {
                Qos::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                Qos::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            };
            let properties = (!user.is_empty()).then(|| v5::PublishProperties {
                user_properties: user,
                ..Default::default()
            });
            let mut p = v5::Publish::new(topic, q, payload, properties);
            p.pkid = pkid;
            put5(v5::Packet::Publish(p), out);
        }
    }
}

/// PUBACK for a QoS 1 PUBLISH: success, or (MQTT 5) the refusal's reason code.
pub fn puback(version: Version, pkid: u16, refusal: Option<PubRefusal>, out: &mut BytesMut) {
    match version {
        Version::V311 => put4(v4::Packet::PubAck(v4::PubAck::new(pkid)), out),
        Version::V5 => {
            use v5::PubAckReason as R;
            let reason = match refusal {
                None => R::Success,
                Some(PubRefusal::NotAuthorized) => R::NotAuthorized,
                Some(PubRefusal::TopicInvalid) => R::TopicNameInvalid,
                Some(PubRefusal::QuotaExceeded) => R::QuotaExceeded,
                Some(PubRefusal::PayloadInvalid) => R::PayloadFormatInvalid,
                Some(PubRefusal::Unspecified) => R::UnspecifiedError,
            };
            put5(
                v5::Packet::PubAck(v5::PubAck {
                    pkid,
                    reason,
                    properties: None,
                }),
                out,
            );
        }
    }
}

/// SUBACK: for each filter the granted QoS, or `None` (refused).
pub fn suback(version: Version, pkid: u16, granted: &[Option<Qos>], out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let codes = granted
                .iter()
                .map(|g| match g {
                    Some(Qos::AtMostOnce) => {
                        v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtMostOnce)
                    }
                    Some(Qos::AtLeastOnce) => {
                        v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtLeastOnce)
                    }
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect();
            put4(v4::Packet::SubAck(v4::SubAck::new(pkid, codes)), out);
        }
        Version::V5 => {
            use rumqttc::v5::mqttbytes::QoS;
            let codes = granted
                .iter()
                .map(|g| match g {
                    Some(Qos::AtMostOnce) => v5::SubscribeReasonCode::Success(QoS::AtMostOnce),
                    Some(Qos::AtLeastOnce) => v5::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect();
            put5(
                v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes,
                    properties: None,
                }),
                out,
            );
        }
    }
}

/// UNSUBACK for `n` filters.
pub fn unsuback(version: Version, pkid: u16, n: usize, out: &mut BytesMut) {
    match version {
        Version::V311 => put4(v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)), out),
        Version::V5 => put5(
            v5::Packet::UnsubAck(v5::UnsubAck {
                pkid,
                reasons: vec![v5::UnsubAckReason::Success; n],
                properties: None,
            }),
            out,
        ),
    }
}

/// PINGRESP.
pub fn pingresp(version: Version, out: &mut BytesMut) {
    match version {
        Version::V311 => put4(v4::Packet::PingResp, out),
        Version::V5 => put5(v5::Packet::PingResp(v5::PingResp), out),
    }
}

/// Why the server closes a session (MQTT 5 DISCONNECT reason codes; 3.1.1 just closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// 0x87: the device was revoked or quarantined.
    NotAuthorized,
    /// 0x8E: the same device connected again elsewhere on this gateway.
    SessionTakenOver,
    /// 0x8D: no packet within 1.5 × keep-alive.
    KeepAliveTimeout,
    /// 0x82: a packet out of order, or one the server does not accept.
    ProtocolError,
    /// 0x81: bytes that are not a packet.
    Malformed,
    /// 0x9B: QoS 2 asked for.
    QosNotSupported,
    /// 0x8B: the gateway is shutting down.
    ShuttingDown,
}

/// DISCONNECT from the server (MQTT 5 only; a 3.1.1 server just closes the connection).
pub fn disconnect(version: Version, why: Kick, out: &mut BytesMut) {
    if version == Version::V311 {
        return;
    }
    use v5::DisconnectReasonCode as R;
    let reason_code = match why {
        Kick::NotAuthorized => R::NotAuthorized,
        Kick::SessionTakenOver => R::SessionTakenOver,
        Kick::KeepAliveTimeout => R::KeepAliveTimeout,
        Kick::ProtocolError => R::ProtocolError,
        Kick::Malformed => R::MalformedPacket,
        Kick::QosNotSupported => R::QoSNotSupported,
        Kick::ShuttingDown => R::ServerShuttingDown,
    };
    // Written here, four bytes: rumqttc 0.24 encodes a DISCONNECT with a reason code and no
    // properties with a remaining length one short (`E0 01 rc 00`), does not export the
    // properties type, and its reader needs the property length that MQTT 5 §3.14.2.2 lets a
    // sender omit. So: reason code, then an empty property list.
    out.extend_from_slice(&[0xE0, 0x02, reason_code as u8, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect4(user: Option<(&str, &str)>) -> BytesMut {
        let mut c = v4::Connect::new("dev");
        if let Some((u, p)) = user {
            c.set_login(u, p);
        }
        let mut out = BytesMut::new();
        c.write(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_a_3_1_1_connect_with_login_in_pieces() {
        let whole = connect4(Some(("alice", "pw")));
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = read_connect(&mut buf, 4096).unwrap();
            if i + 1 < whole.len() {
                assert!(
                    r.is_none(),
                    "complete after {} of {} bytes",
                    i + 1,
                    whole.len()
                );
            } else {
                let c = r.unwrap();
                assert_eq!(c.version, Version::V311);
                assert_eq!(c.username.as_deref(), Some("alice"));
                assert_eq!(c.password.as_deref(), Some("pw"));
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn reads_a_5_connect_with_session_expiry() {
        let mut props = v5::ConnectProperties::new();
        props.session_expiry_interval = Some(60);
        let c = v5::Connect {
            keep_alive: 30,
            client_id: "d".into(),
            clean_start: false,
            properties: Some(props),
        };
        let mut out = BytesMut::new();
        c.write(&None, &Some(v5::Login::new("u", "p")), &mut out)
            .unwrap();
        let got = read_connect(&mut out, 4096).unwrap().unwrap();
        assert_eq!(got.version, Version::V5);
        assert_eq!(got.session_expiry, Some(60));
        assert!(!got.clean);
        assert_eq!(got.password.as_deref(), Some("p"));
    }

    #[test]
    fn refuses_mqtt_3_1_other_levels_reserved_flags_and_oversize() {
        // MQTT 3.1: protocol name MQIsdp, level 3.
        let mut b = BytesMut::from(
            &[
                0x10, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
            ][..],
        );
        assert_eq!(
            read_connect(&mut b, 4096),
            Err(CodecError::UnsupportedVersion(3))
        );
        let mut b = connect4(None);
        b[8] = 6;
        assert_eq!(
            read_connect(&mut b, 4096),
            Err(CodecError::UnsupportedVersion(6))
        );
        let mut b = connect4(None);
        b[9] |= 1;
        assert!(matches!(
            read_connect(&mut b, 4096),
            Err(CodecError::Malformed(_))
        ));
        let mut b = connect4(Some(("u", "p")));
        assert!(matches!(
            read_connect(&mut b, 8),
            Err(CodecError::TooLarge(_))
        ));
        let mut b = BytesMut::from(&[0x30, 0x00][..]);
        assert_eq!(read_connect(&mut b, 4096), Err(CodecError::NotConnect));
    }

    fn out_code(k: Kick) -> u8 {
        match k {
            Kick::NotAuthorized => 0x87,
            Kick::KeepAliveTimeout => 0x8D,
            Kick::ShuttingDown => 0x8B,
            _ => 0,
        }
    }

    #[test]
    fn server_disconnects_are_well_formed() {
        for k in [
            Kick::NotAuthorized,
            Kick::KeepAliveTimeout,
            Kick::ShuttingDown,
        ] {
            let mut out = BytesMut::new();
            disconnect(Version::V5, k, &mut out);
            let n = out.len();
            match v5::Packet::read(&mut out, None).unwrap() {
                v5::Packet::Disconnect(d) => assert_eq!(d.reason_code as u8, out_code(k)),
                p => panic!("{p:?}"),
            }
            assert!(out.is_empty(), "{n} bytes written, {} left over", out.len());
        }
    }

    #[test]
    fn a_zero_length_5_disconnect_is_a_disconnect() {
        let mut b = BytesMut::from(&[0xE0, 0x00][..]);
        assert_eq!(
            read(Version::V5, &mut b, 4096).unwrap(),
            Some(Inbound::Disconnect)
        );
        assert!(b.is_empty());
    }

    #[test]
    fn publish_round_trips_through_the_encoder_and_qos1_needs_a_packet_id() {
        for v in [Version::V311, Version::V5] {
            let mut out = BytesMut::new();
            publish(
                v,
                "meshward/v1/inbox",
                Qos::AtLeastOnce,
                7,
                Bytes::from_static(b"hi"),
                vec![("from".into(), "x".into())],
                &mut out,
            );
            // The server's PUBLISH is also a valid client PUBLISH.
            let got = read(v, &mut out, 4096).unwrap().unwrap();
            assert_eq!(
                got,
                Inbound::Publish {
                    topic: "meshward/v1/inbox".into(),
                    qos: Some(Qos::AtLeastOnce),
                    pkid: 7,
                    payload: Bytes::from_static(b"hi"),
                    retain: false,
                }
            );
        }
        // QoS 1 with packet id 0, hand-built: topic "a", pkid 0.
        let mut b = BytesMut::from(&[0x32, 0x05, 0, 1, b'a', 0, 0][..]);
        assert!(read(Version::V311, &mut b, 4096).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut b = BytesMut::from(&bytes[..]);
            let _ = read_connect(&mut b, 256);
            for v in [Version::V311, Version::V5] {
                let mut b = BytesMut::from(&bytes[..]);
                while let Ok(Some(_)) = read(v, &mut b, 256) {}
            }
        }
    }
}

//! Sealed mode: a device that keeps its own keys but can speak only MQTT (no libp2p) reaches the
//! mesh through any gateway's MQTT front door (FORMATS.md, "MQTT sealed mode").
//!
//! - **Login**: user name = the device id (peer id form); password = a [`LoginToken`], an API
//!   challenge signature (`meshward_core::auth`) by the device's current signing key over a
//!   nonce the device picks (8 bytes of its clock in ms, then 24 random bytes) and the action
//!   `mqtt-login/<gateway peer id>`. The gateway takes a token once, within
//!   [`TOKEN_WINDOW_MS`] of its clock, and only for itself.
//! - **Requests**: the device publishes [`request_frame`]s on [`TOPIC`]: a mesh request
//!   (`meshward_core::rpc::Request`) it would otherwise send over libp2p, most often a
//!   `Deposit` of an envelope it sealed and signed, and the `SubmitTx` of its anchor. The gateway
//!   checks and routes them as it would from the mesh, and never holds a key that opens them.
//! - **Inbox**: on [`INBOX`] the gateway sends [`Inbound`] frames: the reply to each request (by
//!   its id), and each envelope waiting in the device's mailbox with its mailbox number, which the
//!   device acknowledges with an `AckMailbox` request once it has kept it.
//!
//! Everything here builds without `std`, for firmware.
//!
//! ```
//! use meshward_sdk::{rpc::Request, sealed, Keypair};
//! use rand::rngs::OsRng;
//! let device = Keypair::generate(&mut OsRng);
//! let gateway = Keypair::generate(&mut OsRng);
//! let token = sealed::LoginToken::sign(&device.sign, "fleet", &device.id(), &gateway.id(), 1_700_000_000_000, [7; 24]);
//! let parsed = sealed::LoginToken::parse(&token.to_text()).unwrap();
//! assert!(parsed.verify(&device.id(), "fleet", &device.id(), &gateway.id()).is_ok());
//! let frame = sealed::request_frame(9, &Request::Info);
//! assert_eq!(sealed::parse_request(&frame).unwrap(), (9, Request::Info));
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use meshward_core::auth::{self, NONCE_BYTES};
use meshward_core::codec::{Decode, DecodeError, Reader, Writer};
use meshward_core::envelope::Envelope;
use meshward_core::hex;
use meshward_core::ids::{KeyError, PublicKey, SignKey, Signature};
use meshward_core::rpc::{Request, Response};

/// Where a sealed-mode device publishes its requests.
pub const TOPIC: &str = "meshward/v1/sealed";
/// Where it receives replies and its mailbox.
pub const INBOX: &str = "meshward/v1/inbox";
/// The version byte every frame starts with.
pub const FRAME_VERSION: u8 = 1;
/// What a login token's text starts with.
pub const TOKEN_PREFIX: &str = "mw1:";
/// How far a token's time may be from the gateway's clock, either way.
pub const TOKEN_WINDOW_MS: u64 = 120_000;
/// Largest frame either way: one envelope of the largest payload, with room for its header.
pub const MAX_FRAME: usize = meshward_core::envelope::MAX_CIPHERTEXT_BYTES + 1024;

const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_MAIL: u8 = 3;

/// The action a login token signs, naming the gateway it is for: `mqtt-login/` then the
/// gateway's node key in lowercase hex (hex, not the peer id's base58, keeps a firmware's code
/// small).
pub fn login_action(gateway: &PublicKey) -> String {
    let mut a = String::from("mqtt-login/");
    a.push_str(&hex::encode(&gateway.0));
    a
}

/// A sealed-mode login: the password of the MQTT CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginToken {
    /// The device's clock in ms (big-endian), then 24 random bytes.
    pub nonce: [u8; NONCE_BYTES],
    /// The challenge signature over the nonce and [`login_action`].
    pub sig: Signature,
}

impl LoginToken {
    /// Signs a token for logging in as `device` to `gateway` at `now_ms`, with 24 bytes from the
    /// device's random generator. `key` is the device's current signing key.
    pub fn sign(
        key: &SignKey,
        chain_id: &str,
        device: &PublicKey,
        gateway: &PublicKey,
        now_ms: u64,
        random: [u8; 24],
    ) -> LoginToken {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&now_ms.to_be_bytes());
        nonce[8..].copy_from_slice(&random);
        let sig = auth::sign_challenge(key, chain_id, device, &nonce, &login_action(gateway));
        LoginToken { nonce, sig }
    }

    /// The password text: `mw1:` then the nonce and the signature in lowercase hex, joined by
    /// `:` (197 characters).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(TOKEN_PREFIX.len() + 64 + 1 + 128);
        s.push_str(TOKEN_PREFIX);
        s.push_str(&hex::encode(&self.nonce));
        s.push(':');
        s.push_str(&hex::encode(&self.sig.0));
        s
    }

    /// Parses a password as a token; `None` if it is not one.
    pub fn parse(text: &str) -> Option<LoginToken> {
        let (nonce, sig) = text.strip_prefix(TOKEN_PREFIX)?.split_once(':')?;
        Some(LoginToken {
            nonce: hex::decode_array(nonce)?,
            sig: Signature(hex::decode_array(sig)?),
        })
    }

    /// The device's clock when it signed, in ms since the Unix epoch.
    pub fn time_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t.copy_from_slice(&self.nonce[..8]);
        u64::from_be_bytes(t)
    }

    /// Checks the signature under `signer`, the key the ledger says signs for `device` now.
    /// The caller checks the time and that the token was not used before.
    pub fn verify(
        &self,
        signer: &PublicKey,
        chain_id: &str,
        device: &PublicKey,
        gateway: &PublicKey,
    ) -> Result<(), KeyError> {
        auth::verify_challenge(
            signer,
            chain_id,
            device,
            &self.nonce,
            &login_action(gateway),
            &self.sig,
        )
    }
}

fn header(kind: u8, capacity: usize) -> Writer {
    let mut w = Writer::with_capacity(capacity);
    w.u8(FRAME_VERSION).u8(kind);
    w
}

/// A request frame: `version 1, kind 1, id u32, Request`. `id` is the device's, echoed in the
/// reply.
pub fn request_frame(id: u32, req: &Request) -> Vec<u8> {
    let mut w = header(KIND_REQUEST, 64);
    w.u32(id).put(req);
    w.into_bytes()
}

/// Reads a request frame (the gateway's side).
pub fn parse_request(frame: &[u8]) -> Result<(u32, Request), DecodeError> {
    let mut r = Reader::new(frame);
    r.version(FRAME_VERSION, "sealed frame")?;
    match r.u8("sealed frame kind")? {
        KIND_REQUEST => {}
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "sealed frame kind",
                tag,
            })
        }
    }
    let id = r.u32("sealed request id")?;
    let req = Request::decode(&mut r)?;
    r.finish()?;
    Ok((id, req))
}

/// A reply frame: `version 1, kind 2, id u32, Response` (the gateway's side).
pub fn reply_frame(id: u32, resp: &Response) -> Vec<u8> {
    let mut w = header(KIND_REPLY, 64);
    w.u32(id).put(resp);
    w.into_bytes()
}

/// A mail frame: `version 1, kind 3, mailbox number u64, Envelope` (the gateway's side, which
/// keeps envelopes in their encoding).
pub fn mail_frame(number: u64, envelope: &[u8]) -> Vec<u8> {
    let mut w = header(KIND_MAIL, 14 + envelope.len());
    w.u64(number).raw(envelope);
    w.into_bytes()
}

/// A frame the gateway sent on the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The answer to the request with this id, still encoded ([`Inbound::response`] decodes it),
    /// so a device that never reads one does not carry the decoder.
    Reply {
        /// The request's id.
        id: u32,
        /// The encoded `Response`.
        response: &'a [u8],
    },
    /// An envelope from the device's mailbox, to open, then acknowledge by its number.
    Mail {
        /// Its mailbox number.
        number: u64,
        /// The envelope, sealed to this device.
        envelope: alloc::boxed::Box<Envelope>,
    },
}

impl Inbound<'_> {
    /// The decoded response of a reply; `None` for mail.
    pub fn response(&self) -> Option<Result<Response, DecodeError>> {
        match self {
            Inbound::Reply { response, .. } => Some(Response::from_bytes(response)),
            Inbound::Mail { .. } => None,
        }
    }
}

/// Reads a frame from the inbox.
pub fn parse_inbound(frame: &[u8]) -> Result<Inbound<'_>, DecodeError> {
    let mut r = Reader::new(frame);
    r.version(FRAME_VERSION, "sealed frame")?;
    let inbound = match r.u8("sealed frame kind")? {
        KIND_REPLY => Inbound::Reply {
            id: r.u32("sealed reply id")?,
            response: r.take(r.remaining(), "sealed reply")?,
        },
        KIND_MAIL => Inbound::Mail {
            number: r.u64("mailbox number")?,
            envelope: alloc::boxed::Box::new(Envelope::decode(&mut r)?),
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "sealed frame kind",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(inbound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::codec::Encode;
    use meshward_core::envelope::seal_oneshot;
    use meshward_core::ids::Keypair;
    use rand::rngs::OsRng;

    #[test]
    fn a_token_verifies_only_for_its_device_chain_gateway_and_key() {
        let d = Keypair::generate(&mut OsRng);
        let other = Keypair::generate(&mut OsRng);
        let gw = Keypair::generate(&mut OsRng);
        let t = LoginToken::sign(&d.sign, "c", &d.id(), &gw.id(), 1234, [5; 24]);
        assert_eq!(t.time_ms(), 1234);
        let text = t.to_text();
        assert_eq!(text.len(), 197);
        let p = LoginToken::parse(&text).unwrap();
        assert_eq!(p, t);
        assert!(p.verify(&d.id(), "c", &d.id(), &gw.id()).is_ok());
        assert!(p.verify(&d.id(), "c2", &d.id(), &gw.id()).is_err());
        assert!(p.verify(&d.id(), "c", &other.id(), &gw.id()).is_err());
        assert!(p.verify(&d.id(), "c", &d.id(), &other.id()).is_err());
        assert!(p.verify(&other.id(), "c", &d.id(), &gw.id()).is_err());
        // A changed time is a changed nonce.
        let mut later = p;
        later.nonce[7] ^= 1;
        assert!(later.verify(&d.id(), "c", &d.id(), &gw.id()).is_err());
        for bad in [
            "",
            "mw1:",
            "password",
            &text[..196],
            &text.replace("mw1:", "mw2:"),
            &text.replacen(':', ";", 2),
        ] {
            assert_eq!(LoginToken::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_round_trip_and_strangers_are_refused() {
        let a = Keypair::generate(&mut OsRng);
        let b = Keypair::generate(&mut OsRng);
        let env = seal_oneshot(&mut OsRng, &a, b.id(), &b.enc_key(), 1, 0, b"x").unwrap();
        let req = Request::Deposit(env.clone());
        let f = request_frame(7, &req);
        assert_eq!(parse_request(&f).unwrap(), (7, req));
        let resp = Response::Stored { replicas: 3 };
        let f = reply_frame(7, &resp);
        let inbound = parse_inbound(&f).unwrap();
        assert!(matches!(inbound, Inbound::Reply { id: 7, .. }));
        assert_eq!(inbound.response().unwrap().unwrap(), resp);
        let f = mail_frame(42, &env.to_bytes());
        assert_eq!(
            parse_inbound(&f).unwrap(),
            Inbound::Mail {
                number: 42,
                envelope: alloc::boxed::Box::new(env)
            }
        );
        assert!(parse_inbound(&f[..f.len() - 1]).is_err());
        let mut long = f.clone();
        long.push(0);
        assert!(parse_inbound(&long).is_err());
        // A request frame is not an inbound frame, and the other way round; other versions and
        // kinds are refused.
        assert!(parse_inbound(&request_frame(1, &Request::Info)).is_err());
        assert!(parse_request(&reply_frame(1, &resp)).is_err());
        let mut v2 = request_frame(1, &Request::Info);
        v2[0] = 2;
        assert!(parse_request(&v2).is_err());
        let mut k9 = request_frame(1, &Request::Info);
        k9[1] = 9;
        assert!(parse_request(&k9).is_err());
        assert!(parse_request(&[]).is_err());
    }
}

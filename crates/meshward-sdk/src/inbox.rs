//! A device's mailbox, fetched over a gateway's HTTP API rather than the mesh.
//!
//! Envelopes for a device that was offline wait in gateways' mailboxes. A device that cannot
//! (or need not) stay on the mesh reads them with two signed HTTP calls: it asks for a
//! single-use challenge (`POST /v1/challenge`), signs it for the action with its current key
//! ([`meshward_core::auth::sign_challenge`]) and fetches (`POST /v1/mailbox/fetch`). Each
//! envelope is opened locally by the [`Device`] (sender checked on the ledger, replay checked
//! against the state directory); then a second signed call (`POST /v1/mailbox/ack`) removes
//! everything fetched, including envelopes that did not open (they never will).
//!
//! The HTTP calls are blocking ([`ApiClient`]); [`receive`] runs them on tokio's blocking
//! threads, so it can be awaited beside the device's mesh tasks.
//!
//! ```no_run
//! # async fn f(device: &meshward_sdk::device::Device) -> Result<(), meshward_sdk::inbox::InboxError> {
//! let api = meshward_api::client::ApiClient::new("http://127.0.0.1:7700")?;
//! let inbox = meshward_sdk::inbox::receive(&api, device).await?;
//! for m in &inbox.messages {
//!     println!("{} sent {} bytes", m.from, m.payload.len());
//! }
//! # Ok(()) }
//! ```

use meshward_api::client::{ApiClient, ApiClientError};
use meshward_api::types::{Challenge, MailboxAckRequest, MailboxFetchRequest};
use meshward_core::auth::{sign_challenge, NONCE_BYTES};
use meshward_core::codec::Decode;
use meshward_core::envelope::Envelope;
use meshward_core::hex;
use meshward_core::ids::{PublicKey, SignKey};
use tracing::{debug, warn};

use crate::device::{Delivery, Device, Received};

/// The challenge action of a mailbox fetch.
pub const FETCH_ACTION: &str = "mailbox/fetch";
/// The challenge action of a mailbox acknowledgement.
pub const ACK_ACTION: &str = "mailbox/ack";

/// Why the mailbox could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The gateway's API failed or refused (a revoked or unknown device is refused).
    #[error(transparent)]
    Api(#[from] ApiClientError),
    /// The challenge's nonce is not 32 bytes of hex.
    #[error("the gateway's challenge is malformed")]
    BadChallenge,
    /// The runtime shut down during an HTTP call.
    #[error("the mailbox call was cancelled: the async runtime is shutting down")]
    Cancelled,
}

/// What [`receive`] got.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// The messages that opened, in mailbox order.
    pub messages: Vec<Received>,
    /// Envelopes that did not decode or open (logged, and acknowledged with the rest).
    pub dropped: usize,
    /// The mailbox sequence number acknowledged, if anything was fetched.
    pub acked_up_to: Option<u64>,
}

/// The signed parts of a device request: the device, the nonce and the signature, hex.
struct Signed {
    device: String,
    nonce: String,
    signature: String,
}

fn sign(
    chain_id: &str,
    account: &PublicKey,
    key: &SignKey,
    challenge: &Challenge,
    action: &str,
) -> Result<Signed, InboxError> {
    let nonce: [u8; NONCE_BYTES] =
        hex::decode_array(&challenge.nonce).ok_or(InboxError::BadChallenge)?;
    let sig = sign_challenge(key, chain_id, account, &nonce, action);
    Ok(Signed {
        device: account.peer_id(),
        nonce: hex::encode(&nonce),
        signature: hex::encode(&sig.0),
    })
}

/// The body of `POST /v1/mailbox/fetch` for `account` (signed by its current key `key`),
/// answering `challenge`: every envelope after mailbox sequence number `after`.
pub fn fetch_request(
    chain_id: &str,
    account: &PublicKey,
    key: &SignKey,
    challenge: &Challenge,
    after: u64,
) -> Result<MailboxFetchRequest, InboxError> {
    let s = sign(chain_id, account, key, challenge, FETCH_ACTION)?;
    Ok(MailboxFetchRequest {
        device: s.device,
        nonce: s.nonce,
        signature: s.signature,
        after,
        max: None,
    })
}

/// The body of `POST /v1/mailbox/ack` for `account`, answering `challenge`: removes every
/// envelope up to mailbox sequence number `up_to`.
pub fn ack_request(
    chain_id: &str,
    account: &PublicKey,
    key: &SignKey,
    challenge: &Challenge,
    up_to: u64,
) -> Result<MailboxAckRequest, InboxError> {
    let s = sign(chain_id, account, key, challenge, ACK_ACTION)?;
    Ok(MailboxAckRequest {
        device: s.device,
        nonce: s.nonce,
        signature: s.signature,
        up_to,
    })
}

/// Runs a blocking API call on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiClientError> + Send + 'static,
) -> Result<T, InboxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(InboxError::Cancelled),
    }
}

/// Fetches `device`'s whole mailbox from the gateway at `api`, opens each envelope locally and
/// acknowledges everything fetched.
pub async fn receive(api: &ApiClient, device: &Device) -> Result<Inbox, InboxError> {
    let client = device.client();
    let chain_id = client.chain_id().to_string();
    let identity = client.identity().clone();
    let (account, key) = (identity.account, identity.keys.sign);

    let a = api.clone();
    let challenge = blocking(move || a.challenge()).await?;
    let req = fetch_request(&chain_id, &account, &key, &challenge, 0)?;
    let a = api.clone();
    let fetched = blocking(move || a.mailbox_fetch(&req)).await?;

    let mut inbox = Inbox::default();
    let mut last = 0u64;
    for item in &fetched.envelopes {
        last = last.max(item.seq);
        let Some(env) = hex::decode(&item.envelope).and_then(|b| Envelope::from_bytes(&b).ok())
        else {
            debug!(
                seq = item.seq,
                "mailbox envelope dropped: not a canonical envelope"
            );
            inbox.dropped += 1;
            continue;
        };
        match device.open(&env).await {
            Ok((sender, payload, commitment)) => inbox.messages.push(Received {
                from: sender.id,
                commitment,
                payload,
                delivery: Delivery::Mailbox,
            }),
            Err(e) => {
                warn!(error = %e, "mailbox envelope dropped");
                inbox.dropped += 1;
            }
        }
    }

    if last > 0 {
        let a = api.clone();
        let challenge = blocking(move || a.challenge()).await?;
        let req = ack_request(&chain_id, &account, &key, &challenge, last)?;
        let a = api.clone();
        blocking(move || a.mailbox_ack(&req)).await?;
        inbox.acked_up_to = Some(last);
    }
    Ok(inbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::auth::verify_challenge;
    use meshward_core::ids::Keypair;
    use rand::rngs::OsRng;

    fn challenge(nonce: &str) -> Challenge {
        Challenge {
            nonce: nonce.into(),
            expires_ms: 0,
        }
    }

    #[test]
    fn requests_are_signed_for_their_action() {
        let account = Keypair::generate(&mut OsRng).id();
        // After a rotation the account stays and the current key signs.
        let current = Keypair::generate(&mut OsRng);
        let nonce = [9u8; 32];
        let c = challenge(&hex::encode(&nonce));
        let f = fetch_request("fleet", &account, &current.sign, &c, 5).unwrap();
        assert_eq!(f.device, account.peer_id());
        assert_eq!((f.after, f.max), (5, None));
        let sig = meshward_core::Signature(hex::decode_array(&f.signature).unwrap());
        let ok = |action| verify_challenge(&current.id(), "fleet", &account, &nonce, action, &sig);
        assert!(ok(FETCH_ACTION).is_ok());
        assert!(ok(ACK_ACTION).is_err());

        let a = ack_request("fleet", &account, &current.sign, &c, 7).unwrap();
        assert_eq!(a.up_to, 7);
        let sig = meshward_core::Signature(hex::decode_array(&a.signature).unwrap());
        assert!(
            verify_challenge(&current.id(), "fleet", &account, &nonce, ACK_ACTION, &sig).is_ok()
        );
        assert!(
            verify_challenge(&current.id(), "other", &account, &nonce, ACK_ACTION, &sig).is_err()
        );
    }

    #[test]
    fn a_malformed_challenge_is_refused() {
        let kp = Keypair::generate(&mut OsRng);
        for bad in ["", "00", &"zz".repeat(32), &"AB".repeat(32)] {
            assert!(matches!(
                fetch_request("c", &kp.id(), &kp.sign, &challenge(bad), 0),
                Err(InboxError::BadChallenge)
            ));
        }
    }
}

//! A typed, blocking client for a gateway's HTTP API (ureq, `http://` only: gateways serve
//! their API on the loopback or the LAN).
//!
//! Each method is one route of [`crate::ROUTES`] and parses that route's type from
//! [`crate::types`]. A 4xx/5xx answer becomes [`ApiClientError::Api`] with the node's stable
//! `code` and message. Connections are kept alive between calls of one client.
//!
//! ```no_run
//! use meshward_api::client::ApiClient;
//! let node = ApiClient::new("http://127.0.0.1:7700")?;
//! let status = node.status()?;
//! println!("chain {} at height {}", status.chain_id, status.height);
//! # Ok::<(), meshward_api::client::ApiClientError>(())
//! ```

use std::time::Duration;

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::tx::Tx;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{
    AnchorLocation, Block, Challenge, Device, DeviceList, ErrorBody, Group, MailboxAckRequest,
    MailboxAckResponse, MailboxFetchRequest, MailboxFetchResponse, Status, TxBatchResult, TxStatus,
    TxSubmitted, ValidatorList,
};

/// How long a call may take unless [`ApiClient::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (a proof, a page of 10 000 devices).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiClientError {
    /// The URL is not `http://host:port[/prefix]`.
    #[error("API URL {url:?} is not http://host:port (gateways serve plain HTTP on loopback or the LAN)")]
    BadUrl {
        /// What was given.
        url: String,
    },
    /// No answer: the node is down, unreachable, or too slow.
    #[error("cannot reach the node API at {url} ({source}); is the node running?")]
    Transport {
        /// The node's URL.
        url: String,
        /// What failed.
        source: Box<ureq::Error>,
    },
    /// The node answered with an error.
    #[error("{url}{path}: {message} ({code}, HTTP {status})")]
    Api {
        /// The node's URL.
        url: String,
        /// The path called.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The node's stable error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The node answered with a body that is not the route's type.
    #[error("{url}{path}: the node's answer is not what this client expects ({reason}); is it the same meshward version?")]
    Decode {
        /// The node's URL.
        url: String,
        /// The path called.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ApiClientError {
    /// The node's error code, for an [`ApiClientError::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for an [`ApiClientError::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether no connection could be made: the node refused it (nothing listens there, e.g.
    /// the node is down) or its address is unreachable. A caller that spreads load over several
    /// nodes can drop such a node; other transport errors (a reset, a timeout on an open
    /// connection) may be passing.
    pub fn is_connect_failure(&self) -> bool {
        let ApiClientError::Transport { source, .. } = self else {
            return false;
        };
        match source.as_ref() {
            ureq::Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            ),
            ureq::Error::ConnectionFailed | ureq::Error::Timeout(ureq::Timeout::Connect) => true,
            _ => false,
        }
    }
}

/// A client of one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // Gateways are on the loopback or the LAN: never through an HTTP proxy.
            .proxy(None)
            .build(),
    )
}

impl ApiClient {
    /// A client of the node at `url` (`http://host:port`, optionally with a path prefix).
    pub fn new(url: &str) -> Result<ApiClient, ApiClientError> {
        let rest = url
            .strip_prefix("http://")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ApiClientError::BadUrl { url: url.into() })?;
        if rest.starts_with('/') {
            return Err(ApiClientError::BadUrl { url: url.into() });
        }
        Ok(ApiClient {
            base: url.trim_end_matches('/').to_string(),
            token: None,
            agent: agent(DEFAULT_TIMEOUT),
        })
    }

    /// The same client with the operator's bearer token, for calls that submit transactions.
    pub fn with_token(mut self, token: impl Into<String>) -> ApiClient {
        self.token = Some(token.into());
        self
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.agent = agent(timeout);
        self
    }

    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn transport(&self, e: ureq::Error) -> ApiClientError {
        ApiClientError::Transport {
            url: self.base.clone(),
            source: Box::new(e),
        }
    }

    /// One call: returns the status and body of any answer the node gave.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Vec<u8>), ApiClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = if method == "GET" {
            let mut req = self.agent.get(&url).header("Accept", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        } else {
            let mut req = self.agent.post(&url).header("Accept", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match body {
                Some((content_type, bytes)) => {
                    req.header("Content-Type", content_type).send(&bytes[..])
                }
                None => req.send_empty(),
            }
        };
        let mut resp = result.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        Ok((status, bytes))
    }

    /// Turns an answer into `T`, or the node's error.
    fn parse<T: DeserializeOwned>(
        &self,
        path: &str,
        (status, body): (u16, Vec<u8>),
    ) -> Result<T, ApiClientError> {
        if !(200..300).contains(&status) {
            let e: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            return Err(ApiClientError::Api {
                url: self.base.clone(),
                path: path.into(),
                status,
                code: e.as_ref().map_or("unknown".into(), |e| e.code.clone()),
                message: e.map_or_else(
                    || String::from_utf8_lossy(&body).chars().take(200).collect(),
                    |e| e.message,
                ),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ApiClientError::Decode {
            url: self.base.clone(),
            path: path.into(),
            reason: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        let answer = self.call("GET", path, None)?;
        self.parse(path, answer)
    }

    fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiClientError> {
        let bytes = serde_json::to_vec(body).expect("request types serialise");
        let answer = self.call("POST", path, Some(("application/json", bytes)))?;
        self.parse(path, answer)
    }

    /// Text of a 2xx answer, or the node's error.
    fn text(&self, path: &str) -> Result<String, ApiClientError> {
        let (status, body) = self.call("GET", path, None)?;
        if !(200..300).contains(&status) {
            return self
                .parse::<serde_json::Value>(path, (status, body))
                .map(|_| unreachable!("parse refuses a non-2xx answer"));
        }
        String::from_utf8(body).map_err(|e| ApiClientError::Decode {
            url: self.base.clone(),
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<Status, ApiClientError> {
        self.get("/v1/status")
    }

    /// `POST /v1/mqtt/devices`: a custody grant (its JSON, FORMATS.md "MQTT custody"),
    /// authenticated by the admins' signatures inside it.
    pub fn mqtt_custody<B: Serialize>(
        &self,
        grant: &B,
    ) -> Result<crate::types::MqttCustody, ApiClientError> {
        self.post_json("/v1/mqtt/devices", grant)
    }

    /// `GET /v1/validators`.
    pub fn validators(&self) -> Result<ValidatorList, ApiClientError> {
        self.get("/v1/validators")
    }

    /// `GET /v1/blocks/{height}`.
    pub fn block(&self, height: u64) -> Result<Block, ApiClientError> {
        self.get(&format!("/v1/blocks/{height}"))
    }

    /// `POST /v1/tx` (needs the token).
    pub fn submit_tx(&self, tx: &Tx) -> Result<TxSubmitted, ApiClientError> {
        let path = "/v1/tx";
        let answer = self.call(
            "POST",
            path,
            Some(("application/octet-stream", tx.to_bytes())),
        )?;
        self.parse(path, answer)
    }

    /// `POST /v1/enroll`: a device's enrollment with a ticket (no token needed).
    pub fn enroll(&self, tx: &Tx) -> Result<TxSubmitted, ApiClientError> {
        let path = "/v1/enroll";
        let body = serde_json::to_vec(&crate::types::TxSubmit {
            tx: meshward_core::hex::encode(&tx.to_bytes()),
        })
        .expect("a transaction in JSON encodes");
        let answer = self.call("POST", path, Some(("application/json", body)))?;
        self.parse(path, answer)
    }

    /// `POST /v1/txs` with already encoded transactions (needs the token).
    pub fn submit_txs<B: AsRef<[u8]>>(&self, txs: &[B]) -> Result<TxBatchResult, ApiClientError> {
        let path = "/v1/txs";
        let body = meshward_core::tx::encode_tx_list(txs);
        let answer = self.call("POST", path, Some(("application/octet-stream", body)))?;
        self.parse(path, answer)
    }

    /// `GET /v1/tx/{hash}`.
    pub fn tx_status(&self, id: &Hash) -> Result<TxStatus, ApiClientError> {
        self.get(&format!("/v1/tx/{}", id.to_hex()))
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String, ApiClientError> {
        self.text("/metrics")
    }

    /// One sample of `/metrics`: the value of the series named exactly `name` (with its
    /// labels, if any, as they appear), if present.
    pub fn metric(&self, name: &str) -> Result<Option<f64>, ApiClientError> {
        Ok(self.metrics()?.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        }))
    }

    /// `GET /v1/console`: the fleet at a glance.
    pub fn console(&self) -> Result<crate::console::Console, ApiClientError> {
        self.get("/v1/console")
    }

    /// `GET /v1/openapi.json`.
    pub fn openapi(&self) -> Result<serde_json::Value, ApiClientError> {
        self.get("/v1/openapi.json")
    }

    /// `POST /v1/challenge`.
    pub fn challenge(&self) -> Result<Challenge, ApiClientError> {
        self.post_json("/v1/challenge", &serde_json::json!({}))
    }

    /// `POST /v1/mailbox/fetch`.
    pub fn mailbox_fetch(
        &self,
        req: &MailboxFetchRequest,
    ) -> Result<MailboxFetchResponse, ApiClientError> {
        self.post_json("/v1/mailbox/fetch", req)
    }

    /// `POST /v1/mailbox/ack`.
    pub fn mailbox_ack(
        &self,
        req: &MailboxAckRequest,
    ) -> Result<MailboxAckResponse, ApiClientError> {
        self.post_json("/v1/mailbox/ack", req)
    }

    /// `GET /v1/devices`: one page of at most `limit` devices after `after`.
    pub fn devices(
        &self,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> Result<DeviceList, ApiClientError> {
        let mut q = Vec::new();
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        if let Some(a) = after {
            q.push(format!("after={a}"));
        }
        let path = if q.is_empty() {
            "/v1/devices".to_string()
        } else {
            format!("/v1/devices?{}", q.join("&"))
        };
        self.get(&path)
    }

    /// Every enrolled device, page after page.
    pub fn all_devices(&self) -> Result<Vec<Device>, ApiClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.devices(None, after.as_deref())?;
            out.extend(page.devices);
            match page.next_after {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/devices/{id}`.
    pub fn device(&self, id: &str) -> Result<Device, ApiClientError> {
        self.get(&format!("/v1/devices/{id}"))
    }

    /// `GET /v1/groups/{name}`.
    pub fn group(&self, name: &str) -> Result<Group, ApiClientError> {
        self.get(&format!("/v1/groups/{name}"))
    }

    /// `GET /v1/anchors/{commitment}`.
    pub fn anchor(&self, commitment: &Hash) -> Result<AnchorLocation, ApiClientError> {
        self.get(&format!("/v1/anchors/{}", commitment.to_hex()))
    }

    /// `GET /v1/anchors/{commitment}/proof`: the proof file's text, byte for byte as the node
    /// wrote it (re-serialising it would change bytes the verifier checks).
    pub fn anchor_proof(&self, commitment: &Hash) -> Result<String, ApiClientError> {
        self.text(&format!("/v1/anchors/{}/proof", commitment.to_hex()))
    }

    /// `GET /v1/tx/{hash}/proof`: the proof file of a final transaction, byte for byte.
    pub fn tx_proof(&self, id: &Hash) -> Result<String, ApiClientError> {
        self.text(&format!("/v1/tx/{}/proof", id.to_hex()))
    }

    /// `GET /v1/audit?since=&limit=`: one page of governance actions from height `since`.
    pub fn audit(
        &self,
        since: u64,
        limit: Option<usize>,
    ) -> Result<crate::console::Audit, ApiClientError> {
        let mut path = format!("/v1/audit?since={since}");
        if let Some(l) = limit {
            path.push_str(&format!("&limit={l}"));
        }
        self.get(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls() {
        assert!(ApiClient::new("http://127.0.0.1:7700").is_ok());
        assert_eq!(
            ApiClient::new("http://127.0.0.1:7700/").unwrap().url(),
            "http://127.0.0.1:7700"
        );
        for bad in ["https://x:1", "127.0.0.1:7700", "http://", "http:///v1"] {
            assert!(
                matches!(ApiClient::new(bad), Err(ApiClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_is_never_printed() {
        let c = ApiClient::new("http://127.0.0.1:1")
            .unwrap()
            .with_token("secret-token-value");
        assert!(!format!("{c:?}").contains("secret-token-value"));
    }

    #[test]
    fn an_unreachable_node_is_a_transport_error() {
        // Port 1 on the loopback: nothing listens there.
        let c = ApiClient::new("http://127.0.0.1:1")
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let e = c.status().unwrap_err();
        assert!(matches!(e, ApiClientError::Transport { .. }), "{e}");
        assert!(e.to_string().contains("is the node running"), "{e}");
        assert!(e.is_connect_failure(), "{e:?}");
        assert!(e.code().is_none() && e.status().is_none());
    }
}

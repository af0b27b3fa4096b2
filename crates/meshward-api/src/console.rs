//! The bodies behind the operator's console (the dashboard every gateway serves at `/`):
//! `GET /v1/console`, `GET /v1/audit`, and the token-authenticated admin actions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /v1/console`: the fleet at a glance, as this gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Console {
    /// The chain.
    pub chain_id: String,
    /// This node's peer id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub peer_id: String,
    /// Height of the last committed block.
    pub height: u64,
    /// Time of the last committed block, ms since the Unix epoch.
    #[serde(default)]
    pub last_block_time: Option<u64>,
    /// Blocks committed per second over the last minute.
    pub blocks_per_s: f64,
    /// Transactions finalised per second over the last minute.
    pub txs_per_s: f64,
    /// Finality latency of the transactions this node saw arrive, over the last 10 minutes
    /// (arrival here to commit); absent without samples.
    #[serde(default)]
    pub finality_ms: Option<Quantiles>,
    /// Transactions waiting in this node's mempool.
    pub mempool_size: u64,
    /// The validator set, with what this node saw each one sign.
    pub validators: Vec<ValidatorHealth>,
    /// Enrolled devices by status.
    pub devices: DeviceCounts,
    /// What waits in this gateway's mailboxes.
    pub mailbox: MailboxDepth,
    /// What an operator should look at, most severe first.
    pub alerts: Vec<Alert>,
    /// The last 10 minutes in 10-second buckets, oldest first.
    pub history: Vec<HistoryBucket>,
}

/// p50 and p99 of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Quantiles {
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// How many samples.
    pub samples: u64,
}

/// One validator's signing record, from the certificates of the blocks this node committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValidatorHealth {
    /// Its key (peer id).
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub id: String,
    /// Its voting power.
    pub power: u64,
    /// It signed at least one of the last commits of the last K blocks (K = 8, the proposer
    /// skipping window): it is up as far as the ledger can tell.
    pub up: bool,
    /// The last height whose certificate it signed, as far as this node has seen.
    #[serde(default)]
    pub last_signed_height: Option<u64>,
    /// Heights since this node started whose last commit (the fullest certificate, carried by
    /// the next block) lacks its signature.
    pub missed: u64,
    /// Whether round 0 of the next height may choose it as proposer (validators that stopped
    /// signing are skipped).
    pub round0_eligible: bool,
    /// Whether it is this node.
    pub is_self: bool,
    /// Heights at which evidence on the ledger convicted it of equivocation (double votes).
    #[serde(default)]
    pub convictions: u64,
    /// The last of them.
    #[serde(default)]
    pub last_convicted_height: Option<u64>,
}

/// Enrolled devices by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceCounts {
    /// Active devices.
    pub active: u64,
    /// Revoked by the admins.
    pub revoked: u64,
    /// Revoked by committed evidence.
    pub quarantined: u64,
}

/// What waits in a gateway's mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MailboxDepth {
    /// Envelopes waiting.
    pub envelopes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The most envelopes the mailboxes hold.
    pub max_envelopes: u64,
    /// The most bytes they hold.
    pub max_bytes: u64,
}

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The fleet is at risk: act now.
    Critical,
    /// Degraded, handled: look soon.
    Warning,
    /// Worth knowing.
    Info,
}

/// Something an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// How urgent.
    pub severity: Severity,
    /// Stable kind: `chain_stalled`, `validator_not_signing`, `device_quarantined`,
    /// `device_revoked`, `mailbox_filling`.
    pub kind: String,
    /// For people.
    pub message: String,
    /// The height it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// What it is about: a validator's or device's peer id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Ten seconds of the chain, as this node committed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryBucket {
    /// Start, ms since the Unix epoch.
    pub start_ms: u64,
    /// Length, ms (the newest bucket is still filling).
    pub span_ms: u64,
    /// Blocks committed.
    pub blocks: u64,
    /// Transactions in them.
    pub txs: u64,
    /// Median finality of the transactions finalised in it, ms.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// `GET /v1/audit`: governance actions on the ledger, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Audit {
    /// The actions found in the heights scanned.
    pub actions: Vec<AuditAction>,
    /// The first height not scanned yet: ask again with `since` set to it.
    pub next_since: u64,
}

/// One governance action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditAction {
    /// Its block.
    pub height: u64,
    /// The block's time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Its index in the block.
    pub index: u32,
    /// The transaction id.
    pub tx: String,
    /// `enroll`, `revoke`, `quarantine`, `set_policy`, `rotate_keys`, `group_key`,
    /// `create_ticket`, `validator_set_change`.
    pub kind: String,
    /// For people, e.g. "revoked 12D3KooW… (stolen)".
    pub summary: String,
    /// Who signed it: the admins (signer and co-signers), a device itself, or the validator
    /// that submitted evidence.
    pub authorised_by: Vec<String>,
    /// True when the ledger acted on committed evidence rather than an admin decision.
    pub by_evidence: bool,
}

/// `POST /v1/admin/revoke` body (needs the API token and a node holding an admin key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The device's id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub device: String,
    /// Why (at most 256 bytes), recorded on the ledger.
    pub reason: String,
}

/// `POST /v1/admin/ticket` body (needs the API token and a node holding an admin key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The groups the device joins (default: `default`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// How long the ticket is valid: `30m`, `1h`, `7d` (default `1h`).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// An admin action that is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminDone {
    /// The transaction id.
    pub tx: String,
    /// The block it is final in.
    pub height: u64,
}

/// `POST /v1/admin/ticket`: the ticket, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TicketIssued {
    /// `mwt1:<chain>:<secret>:<groups>`: give it to the device (`meshward device join`).
    pub ticket: String,
    /// When it stops being accepted, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The block its hash is final in.
    pub height: u64,
}

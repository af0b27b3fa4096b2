//! The JSON bodies of the API, as one set of Rust types: the gateway serialises them, clients
//! deserialise them, and the OpenAPI document's schemas are generated from them
//! ([`crate::openapi`]), so the three cannot disagree.
//!
//! Conventions: ids and keys are libp2p peer ids (base58, `12D3KooW…`), hashes and byte strings
//! lower-case hex, times milliseconds since the Unix epoch. Optional fields are left out when
//! they do not apply.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error: an HTTP 4xx/5xx status with this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthorized`, `bad_height`, `unknown_tx`, …
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// The chain this node follows.
    pub chain_id: String,
    /// Height of the last committed block (0 before block 1).
    pub height: u64,
    /// Hash of the last committed block's header; absent before block 1.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub last_block_hash: Option<String>,
    /// Time of the last committed block; absent before block 1.
    #[serde(default)]
    pub last_block_time: Option<u64>,
    /// Connected mesh peers.
    pub peers: u64,
    /// Validators in the current set.
    pub validators: u64,
    /// Whether this node validates.
    pub is_validator: bool,
    /// Transactions waiting in this node's mempool.
    pub mempool_size: u64,
    /// This node's peer id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub peer_id: String,
    /// The mesh's listen addresses, each ending in `/p2p/<peer id>`.
    pub mesh_addrs: Vec<String>,
    /// The node's process id, for tools that supervise it on the same machine (the devnet).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Where its MQTT front door listens (`host:port`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
}

/// A transaction, summarised, with its canonical bytes.
///
/// Anchors add `recipient`, `commitment`, `count`, `timestamp_ms`, `size_bytes`; enrolls add
/// `device`, `enc_key`, `groups`, `ticket`; revokes add `device`, `reason`; acks add
/// `commitment`, `sender`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tx {
    /// The transaction id.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub id: String,
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: TxKind,
    /// The signing account.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub signer: String,
    /// The signer's sequence number.
    pub seq: u64,
    /// The canonical encoding, so a client can check the signatures itself.
    #[schemars(regex(pattern = r"^([0-9a-f]{2})+$"))]
    pub raw: String,
    /// Anchors: a device's peer id, or `group:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Anchors and acks: the message commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// Anchors: envelopes the commitment covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Anchors: the sender's clock when it anchored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// Anchors: the bytes the commitment covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Enrolls and revokes: the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub device: Option<String>,
    /// Enrolls: the device's X25519 key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<String>,
    /// Enrolls: the device's groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Enrolls: whether a one-time ticket authorised it (else admin signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<bool>,
    /// Revokes: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Acks: who sent the acknowledged message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub sender: Option<String>,
}

/// The kinds of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TxKind {
    Enroll,
    Revoke,
    RotateKeys,
    SetPolicy,
    Anchor,
    Ack,
    Evidence,
    ValidatorSetChange,
    GroupKey,
    CreateTicket,
    Reinstate,
}

/// A block header, as `GET /v1/blocks/{height}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockHeader {
    /// The chain.
    pub chain_id: String,
    /// Its height.
    pub height: u64,
    /// The previous block's hash (the genesis hash for block 1).
    pub prev_hash: String,
    /// The proposer's clock.
    pub time_ms: u64,
    /// The proposer.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub proposer: String,
    /// Merkle root of the transactions.
    pub tx_root: String,
    /// How many transactions.
    pub tx_count: u32,
    /// The state root after the block.
    pub state_root: String,
    /// Hash of the validator set that certifies the block.
    pub validator_set_hash: String,
    /// Hash of the previous block's commit certificate it carries.
    pub last_commit_hash: String,
}

/// One validator's precommit signature in a commit certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateSignature {
    /// The validator.
    pub validator: String,
    /// Its Ed25519 signature, hex.
    pub signature: String,
}

/// A block's commit certificate: more than 2/3 of the voting power precommitted to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Certificate {
    /// The height.
    pub height: u64,
    /// The round it was decided in.
    pub round: u32,
    /// The block hash it certifies.
    pub block_hash: String,
    /// The signatures.
    pub signatures: Vec<CertificateSignature>,
}

/// `GET /v1/blocks/{height}`: a certified block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Block {
    /// Its height.
    pub height: u64,
    /// The header hash: the same on every node.
    pub hash: String,
    /// The header.
    pub header: BlockHeader,
    /// Its transactions, in order.
    pub txs: Vec<Tx>,
    /// Its commit certificate.
    pub certificate: Certificate,
}

/// `POST /v1/tx` body in its JSON form (the raw canonical bytes are accepted too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxSubmit {
    /// The canonical transaction, hex.
    #[schemars(regex(pattern = r"^([0-9a-f]{2})+$"))]
    pub tx: String,
}

/// `POST /v1/tx`: the transaction is pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TxSubmitted {
    /// Its id.
    pub hash: String,
    /// Always `pending`.
    pub status: String,
}

/// One refused transaction of a `POST /v1/txs` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TxRefused {
    /// Its position in the batch.
    pub index: usize,
    /// Stable code, as the single-transaction errors use.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `POST /v1/txs`: each transaction admitted or refused on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TxBatchResult {
    /// Ids of the admitted ones.
    pub accepted: Vec<String>,
    /// The refused ones.
    pub rejected: Vec<TxRefused>,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// Waiting in this node's mempool.
    Pending,
    /// Refused by this node (`reason` says why).
    Rejected,
    /// In a committed block (`height`, `index`).
    Final,
}

/// `GET /v1/tx/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TxStatus {
    /// The transaction id asked about.
    pub hash: String,
    /// Where it is.
    pub status: TxState,
    /// `final`: its block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// `final`: its index in the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// `rejected`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/challenge`: a single-use nonce for a device-signed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Challenge {
    /// 32 random bytes, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub nonce: String,
    /// When it stops being accepted.
    pub expires_ms: u64,
}

/// `POST /v1/mailbox/fetch` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxFetchRequest {
    /// The device's account id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub device: String,
    /// A nonce from `POST /v1/challenge`.
    pub nonce: String,
    /// The device's signature over the challenge message for `mailbox/fetch`, hex.
    pub signature: String,
    /// Only envelopes after this mailbox sequence number.
    #[serde(default)]
    pub after: u64,
    /// At most this many (default and most: 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// One envelope waiting in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MailboxEnvelope {
    /// Its mailbox sequence number (acknowledge up to it).
    pub seq: u64,
    /// The canonical envelope, hex: only the device can open it.
    pub envelope: String,
}

/// `POST /v1/mailbox/fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MailboxFetchResponse {
    /// In sequence order.
    pub envelopes: Vec<MailboxEnvelope>,
}

/// `POST /v1/mailbox/ack` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxAckRequest {
    /// The device's account id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub device: String,
    /// A nonce from `POST /v1/challenge`.
    pub nonce: String,
    /// The device's signature over the challenge message for `mailbox/ack`, hex.
    pub signature: String,
    /// Remove every envelope up to this sequence number.
    pub up_to: u64,
}

/// `POST /v1/mailbox/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MailboxAckResponse {
    /// How many envelopes were removed.
    pub removed: u64,
}

/// A device's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Enrolled and not revoked.
    Active,
    /// Revoked by the admins: every node refuses it.
    Revoked,
    /// Revoked automatically by committed evidence (equivocation, a policy violation): every
    /// node refuses it.
    Quarantined,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    /// Its account id (its first signing key).
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub id: String,
    /// Its current X25519 key, hex.
    pub enc_key: String,
    /// Its current signing key (the id, unless it rotated).
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub sign_key: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Where it was enrolled.
    pub enrolled_height: u64,
    /// Its last used sequence number.
    pub seq: u64,
    /// Active or revoked.
    pub status: DeviceState,
    /// Revoked: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    /// Revoked: where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_height: Option<u64>,
    /// When this gateway last heard from the device (a mesh request or a transaction), ms since
    /// the Unix epoch; absent if it has not since it started. Node-local, not on the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// An MQTT device's custodian gateways (peer ids), when this gateway is one of them and
    /// holds its custody grant. Node-local, not on the ledger (ADR 0011).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custodians: Vec<String>,
}

/// `GET /v1/devices`: one page, ordered by account id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceList {
    /// The page.
    pub devices: Vec<Device>,
    /// Set when more follow: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// A group member and its current encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupMember {
    /// Its account id.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub id: String,
    /// Its X25519 key, hex.
    pub enc_key: String,
}

/// `GET /v1/groups/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// Its members, in member order.
    pub members: Vec<GroupMember>,
    /// The key epoch.
    pub epoch: u64,
    /// Whether a member must rekey it (a member left).
    pub needs_rekey: bool,
}

/// `GET /v1/anchors/{commitment}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnchorLocation {
    /// The commitment asked about.
    pub commitment: String,
    /// The block of its first anchor.
    pub height: u64,
    /// The anchor's index in the block.
    pub index: u32,
}

/// `GET /v1/anchors/{commitment}/proof`: the proof file `meshward verify` checks offline. The
/// body is the file's own compact JSON, byte for byte; clients keep it as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ProofFile")]
pub struct ProofFileSchema {
    /// The proof file format version: 2 (1 from earlier releases).
    pub version: u32,
    /// The chain.
    pub chain_id: String,
    /// The transaction's block.
    pub height: u64,
    /// The transaction's kind, e.g. `anchor`, `revoke` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The transaction's id, hex (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// The anchored commitment (anchors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// The canonical proof, hex (see docs/FORMATS.md, Proofs).
    pub proof: String,
}

/// A live event of `GET /v1/events`, sent as `event: <type>` with this JSON as `data:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A block was finalised.
    Block {
        /// Its height.
        height: u64,
        /// Its header hash.
        hash: String,
        /// Its time.
        time_ms: u64,
        /// Transactions in the block.
        txs: u32,
    },
    /// A message commitment (one envelope, or a batch root) was anchored.
    Anchor {
        /// The commitment.
        commitment: String,
        /// The sending device's account id.
        sender: String,
        /// A device's peer id, or `group:NAME`.
        recipient: String,
        /// Envelopes the commitment covers.
        count: u32,
        /// Its block.
        height: u64,
    },
    /// A device was revoked: every node now refuses it.
    Quarantine {
        /// The device.
        device: String,
        /// Why.
        reason: String,
        /// Where.
        height: u64,
        /// Revoked automatically by committed evidence, not by the admin.
        by_evidence: bool,
    },
    /// A validator was convicted of equivocation by evidence on the ledger: round 0 skips it as
    /// a proposer while it keeps doing so.
    Conviction {
        /// The validator.
        validator: String,
        /// The height of its two conflicting votes.
        vote_height: u64,
        /// The block that holds the evidence.
        height: u64,
    },
    /// An envelope was deposited in this gateway's mailbox for an offline device (node-local).
    Deposit {
        /// The envelope's commitment.
        commitment: String,
        /// The sending device.
        sender: String,
        /// The recipient device.
        recipient: String,
        /// Gateways holding a copy (this one included).
        replicas: u32,
    },
    /// This subscriber fell behind and lost `missed` events; the stream goes on with the
    /// oldest event still held. Never published by the node's hub, only written by the stream.
    Lagged {
        /// How many events were lost.
        missed: u64,
    },
}

impl Event {
    /// The event's kind, as in `event:` lines and `?types=`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Block { .. } => "block",
            Event::Anchor { .. } => "anchor",
            Event::Quarantine { .. } => "quarantine",
            Event::Conviction { .. } => "conviction",
            Event::Deposit { .. } => "deposit",
            Event::Lagged { .. } => "lagged",
        }
    }
}

/// The event kinds a subscriber can ask for with `?types=`.
pub const EVENT_KINDS: &[&str] = &["block", "anchor", "quarantine", "conviction", "deposit"];

/// `GET /v1/policy`: which groups may send to which (within a group is always allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// The allowed (from, to) pairs, sorted.
    pub allow: Vec<PolicyRule>,
}

/// Members of `from` may send to members of `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyRule {
    /// The sending group.
    pub from: String,
    /// The receiving group.
    pub to: String,
}

/// `GET /v1/validators`: the validator set in force for the next block, and who signed lately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValidatorList {
    /// The last committed height (0 before block 1); the set below certifies `height + 1`.
    pub height: u64,
    /// The first height this set certifies (1 for the genesis set).
    pub since_height: u64,
    /// `H("meshward/validator-set/v1", set)`, as block headers name it.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub set_hash: String,
    /// The sum of the validators' power.
    pub total_power: u64,
    /// How many of the last blocks' certificates `signed_recently` looks at.
    pub recent_blocks: u64,
    /// The validators, sorted by key.
    pub validators: Vec<ValidatorEntry>,
}

/// One validator of [`ValidatorList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValidatorEntry {
    /// Its key (peer id).
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub id: String,
    /// Its voting power.
    pub power: u64,
    /// The last height among the last `recent_blocks` whose stored certificate it signed.
    #[serde(default)]
    pub last_signed_height: Option<u64>,
}

/// `POST /v1/mqtt/devices`: which custodians keep a device's custody grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MqttCustody {
    /// The device (peer id form).
    pub device: String,
    /// Custodians that checked and kept the grant (node peer ids).
    pub stored_by: Vec<String>,
    /// Custodians that did not, and why.
    pub refused: Vec<CustodianRefusal>,
}

/// A custodian that did not keep a custody grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustodianRefusal {
    /// The custodian (node peer id).
    pub custodian: String,
    /// Stable code: `unreachable`, `bad_grant`, `not_custodian`, …
    pub code: String,
    /// Why, for a person.
    pub message: String,
}

//! Misbehaving validators, for the adversarial tests: compiled only with the `byzantine`
//! feature, which no release build of the product turns on.
//!
//! A validator started with [`ConsensusConfig::byzantine`](crate::ConsensusConfig) set lies in
//! one way, chosen by [`ByzantineMode`]:
//!
//! - `equivocate`: every prevote and precommit, and every proposal, is followed by a
//!   conflicting one for the same height and round, signed with the validator's key
//!   (Malachite's `ByzantineNetworkProxy`, between the engine and the real network);
//! - `bad-proposal`: the blocks it proposes are signed but wrong, by turns a wrong state root, a
//!   transaction with a bad signature, and a forged last commit ([`corrupt_block`]);
//! - `withhold`: it proposes (the engine publishes the signed proposal) but never streams the
//!   block's parts;
//! - `stale-votes`: after each vote it sends, it replays up to [`STALE_REPLAYS`] of its votes of
//!   earlier heights and signs votes for the next [`FUTURE_HEIGHTS`] heights ([`StaleVotes`]);
//! - `garbage`: after each consensus message it sends, it sends [`GARBAGE_FRAMES`] frames of
//!   random bytes on the consensus topic (a marked vote the codec turns into noise:
//!   [`garbage_frame`]).
//!
//! Otherwise the validator is honest: it votes, proposes and commits as any other.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use malachitebft_app_channel::app::consensus::SignedConsensusMsg;
use malachitebft_engine::network::{Msg as NetworkMsg, NetworkRef};
use malachitebft_signing::Signer;
use meshward_core::block::{last_commit_hash, tx_leaves, Block};
use meshward_core::hash::Hash;
use meshward_core::merkle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use malachitebft_app_channel::ByzantineContext;
use malachitebft_engine::network::NetworkIdentity;
use malachitebft_engine_byzantine::{ByzantineConfig, Trigger};

use crate::codec::MeshwardCodec;
use crate::context::{Address, BlockHash, Height, MeshwardContext, Sig, Vote};
use crate::signing::MeshwardSigner;

/// How a Byzantine validator misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByzantineMode {
    /// Two different prevotes, precommits and proposals at each height.
    Equivocate,
    /// Signed proposals of wrong blocks.
    BadProposal,
    /// Proposals whose parts are never sent.
    Withhold,
    /// Old votes replayed, votes for future heights.
    StaleVotes,
    /// Random consensus frames.
    Garbage,
}

impl ByzantineMode {
    /// Every mode, for tests and help texts.
    pub const ALL: [ByzantineMode; 5] = [
        ByzantineMode::Equivocate,
        ByzantineMode::BadProposal,
        ByzantineMode::Withhold,
        ByzantineMode::StaleVotes,
        ByzantineMode::Garbage,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ByzantineMode::Equivocate => "equivocate",
            ByzantineMode::BadProposal => "bad-proposal",
            ByzantineMode::Withhold => "withhold",
            ByzantineMode::StaleVotes => "stale-votes",
            ByzantineMode::Garbage => "garbage",
        }
    }
}

impl fmt::Display for ByzantineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ByzantineMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByzantineMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ByzantineMode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown Byzantine mode {s:?}: one of {}", names.join(", "))
            })
    }
}

/// Makes a proposal wrong while keeping its header consistent with its body where that is
/// needed to get past the cheap checks, so that honest validators must find the fault the way
/// they would find a real one. The fault rotates with the height: a wrong state root; a copy of
/// a transaction with a flipped signature bit (a wrong state root when the block has none); a
/// last commit with a flipped signature bit (a wrong state root at height 1).
pub fn corrupt_block(block: &mut Block) {
    let h = &mut block.header;
    match h.height % 3 {
        1 if !block.txs.is_empty() => {
            let mut bad = block.txs[0].clone();
            bad.sig.0[0] ^= 1;
            block.txs.push(bad);
            block.header.tx_root = merkle::root_of(&tx_leaves(&block.txs));
            block.header.tx_count = block.txs.len() as u32;
        }
        2 if block
            .last_commit
            .as_ref()
            .is_some_and(|c| !c.signatures.is_empty()) =>
        {
            if let Some(c) = block.last_commit.as_mut() {
                c.signatures[0].sig.0[0] ^= 1;
            }
            block.header.last_commit_hash = last_commit_hash(&block.last_commit);
        }
        _ => h.state_root.0[0] ^= 1,
    }
}

/// What `equivocate` installs in front of the real network: Malachite's proxy, sending after
/// each vote a second one for another block (for a nil vote, a block that does not exist) and
/// after each proposal a second one for another block.
pub(crate) fn equivocation(
    identity: NetworkIdentity,
    signer: MeshwardSigner,
    address: Address,
) -> ByzantineContext<MeshwardContext, MeshwardCodec> {
    let flip = |h: &BlockHash| {
        let mut x = h.0;
        x.0[31] ^= 0xff;
        BlockHash(x)
    };
    ByzantineContext {
        identity,
        codec: MeshwardCodec,
        config: ByzantineConfig::new(None)
            .with_equivocate_votes(Trigger::Always)
            .with_equivocate_proposals(Trigger::Always),
        signer: Box::new(signer),
        address,
        conflicting_value_fn: Some(Box::new(flip)),
        conflicting_vote_value_fn: Some(Box::new(move |v: Option<&BlockHash>| match v {
            Some(h) => flip(h),
            None => BlockHash(meshward_core::hash::hash(b"meshward/byzantine-nil", b"")),
        })),
    }
}

/// The height that marks a vote as a garbage frame: no honest vote has it.
pub const GARBAGE_HEIGHT: u64 = u64::MAX;
/// Garbage frames sent after each consensus message in `garbage` mode.
pub const GARBAGE_FRAMES: usize = 2;
/// Longest garbage frame.
pub const MAX_GARBAGE_BYTES: usize = 4096;
/// Old votes replayed after each vote in `stale-votes` mode.
pub const STALE_REPLAYS: usize = 3;
/// Future heights voted for after each vote in `stale-votes` mode.
pub const FUTURE_HEIGHTS: u64 = 2;
/// Old votes kept for replaying.
const STALE_HISTORY: usize = 256;

/// If `vote` is a garbage marker, the bytes the codec sends instead of it: as many
/// pseudo-random bytes as its round says (at most [`MAX_GARBAGE_BYTES`]), drawn from its
/// signature.
pub(crate) fn garbage_frame(vote: &Vote, sig: &Sig) -> Option<Vec<u8>> {
    if vote.height.0 != GARBAGE_HEIGHT {
        return None;
    }
    let len = (vote.round.as_u32().unwrap_or(0) as usize % MAX_GARBAGE_BYTES) + 1;
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Hash(sig.0 .0[..32].try_into().unwrap_or([0; 32]));
    while out.len() < len {
        block = meshward_core::hash::hash(b"meshward/byzantine-garbage", &block.0);
        out.extend_from_slice(&block.0);
    }
    out.truncate(len);
    Some(out)
}

/// The proxy between the engine and the real network for `stale-votes` and `garbage`: every
/// message is forwarded, and what the mode adds is sent after it.
pub struct Misbehave {
    mode: ByzantineMode,
    real: NetworkRef<MeshwardContext>,
    signer: MeshwardSigner,
}

/// The proxy's state: this validator's votes sent so far (newest last), and a counter.
pub struct MisbehaveState {
    sent: VecDeque<SignedVote>,
    n: u64,
}

type SignedVote = malachitebft_core_types::SignedVote<MeshwardContext>;

impl Misbehave {
    /// Spawns the proxy in front of `real`; its ref takes the real network's place.
    pub async fn spawn(
        mode: ByzantineMode,
        real: NetworkRef<MeshwardContext>,
        signer: MeshwardSigner,
    ) -> Result<NetworkRef<MeshwardContext>, String> {
        let (r, _) = Actor::spawn(None, Misbehave { mode, real, signer }, ())
            .await
            .map_err(|e| format!("cannot start the Byzantine proxy: {e}"))?;
        Ok(r)
    }

    fn send(&self, m: NetworkMsg<MeshwardContext>) -> Result<(), ActorProcessingErr> {
        self.real
            .cast(m)
            .map_err(|e| ActorProcessingErr::from(format!("network gone: {e}")))
    }

    fn publish_vote(&self, v: SignedVote) -> Result<(), ActorProcessingErr> {
        self.send(NetworkMsg::PublishConsensusMsg(SignedConsensusMsg::Vote(v)))
    }

    async fn sign(&self, vote: Vote) -> Option<SignedVote> {
        self.signer.sign_vote(vote).await.ok()
    }

    async fn after(&self, msg: &SignedConsensusMsg<MeshwardContext>, st: &mut MisbehaveState) {
        st.n += 1;
        match self.mode {
            ByzantineMode::StaleVotes => {
                let SignedConsensusMsg::Vote(v) = msg else {
                    return;
                };
                let h = v.message.height.0;
                let old: Vec<SignedVote> = st
                    .sent
                    .iter()
                    .filter(|o| o.message.height.0 < h)
                    .rev()
                    .step_by(7)
                    .take(STALE_REPLAYS)
                    .cloned()
                    .collect();
                for o in old {
                    let _ = self.publish_vote(o);
                }
                for ahead in 1..=FUTURE_HEIGHTS {
                    let mut future = v.message.clone();
                    future.height = Height(h + ahead);
                    if let Some(s) = self.sign(future).await {
                        let _ = self.publish_vote(s);
                    }
                }
                st.sent.push_back(v.clone());
                if st.sent.len() > STALE_HISTORY {
                    st.sent.pop_front();
                }
            }
            ByzantineMode::Garbage => {
                let SignedConsensusMsg::Vote(v) = msg else {
                    return;
                };
                for k in 0..GARBAGE_FRAMES as u64 {
                    let mut marker = v.message.clone();
                    marker.height = Height(GARBAGE_HEIGHT);
                    // The round sets the frame's length; the signature its bytes.
                    let len = (st.n.wrapping_mul(2_654_435_761).wrapping_add(k * 977)
                        % MAX_GARBAGE_BYTES as u64) as u32;
                    marker.round = malachitebft_core_types::Round::new(len);
                    marker.validator = v.message.validator;
                    if let Some(s) = self.sign(marker).await {
                        let _ = self.publish_vote(s);
                    }
                }
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Actor for Misbehave {
    type Msg = NetworkMsg<MeshwardContext>;
    type State = MisbehaveState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(MisbehaveState {
            sent: VecDeque::new(),
            n: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NetworkMsg::PublishConsensusMsg(m) => {
                self.send(NetworkMsg::PublishConsensusMsg(m.clone()))?;
                self.after(&m, state).await;
                Ok(())
            }
            other => self.send(other),
        }
    }
}

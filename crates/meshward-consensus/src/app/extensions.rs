//! Vote extensions: `ExtendVote` and `VerifyVoteExtensions`. Meshward does not use them; both
//! answer at once so the engine never waits.

use malachitebft_app_channel::app::consensus::VoteExtensionVerdicts;
use malachitebft_app_channel::Reply;
use tracing::error;

use crate::context::Address;

use super::{App, Ctx};

impl App {
    /// `ExtendVote`: no extension.
    pub(super) fn on_extend_vote(&self, reply: Reply<Option<()>>) {
        if reply.send(None).is_err() {
            error!("extend vote reply dropped");
        }
    }

    /// `VerifyVoteExtensions`: every extension is accepted.
    pub(super) fn on_verify_vote_extensions(
        &self,
        extensions: Vec<(Address, ())>,
        reply: Reply<VoteExtensionVerdicts<Ctx>>,
    ) {
        // Extensions are disabled (the engine never asks); accept, as the engine expects.
        let verdicts = extensions.into_iter().map(|(a, _)| (a, Ok(()))).collect();
        if reply.send(verdicts).is_err() {
            error!("verify vote extensions reply dropped");
        }
    }
}

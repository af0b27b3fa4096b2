//! The start of consensus and of each round: `ConsensusReady` and `StartedRound`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use malachitebft_app_channel::app::consensus::Role;
use malachitebft_app_channel::app::engine::host::HeightParams;
use malachitebft_app_channel::app::types::core::Round;
use malachitebft_app_channel::app::types::ProposedValue;
use malachitebft_app_channel::Reply;
use tracing::{debug, error, info};

use crate::context::{Address, Height};
use crate::ConsensusEvent;

use super::{proposed_value, App, Ctx};

impl App {
    /// `ConsensusReady`: the engine is up; it starts at the next height to commit.
    pub(super) fn on_consensus_ready(&mut self, reply: Reply<(Height, HeightParams<Ctx>)>) {
        let h = self.next_height();
        info!(height = h, "consensus ready");
        self.height_started = Instant::now();
        self.shared.height.store(h, Ordering::Relaxed);
        if reply.send((Height(h), self.height_params())).is_err() {
            error!("consensus ready reply dropped");
        }
    }

    /// `StartedRound`: records the height and round, checks proposals kept for this height and
    /// hands the engine the proposals already held for the round.
    pub(super) fn on_started_round(
        &mut self,
        height: Height,
        round: Round,
        proposer: Address,
        role: Role,
        reply_value: Reply<Vec<ProposedValue<Ctx>>>,
    ) {
        debug!(height = height.0, round = %round, proposer = %proposer, ?role, "round started");
        self.shared.height.store(height.0, Ordering::Relaxed);
        self.shared
            .round
            .store(round.as_u32().unwrap_or(0), Ordering::Relaxed);
        if let Some(r) = round.as_u32().filter(|r| *r > 0) {
            info!(height = height.0, round = r, proposer = %proposer, "round timed out, next round");
            self.emit(ConsensusEvent::RoundTimeout {
                height: height.0,
                round: r - 1,
            });
        }
        self.check_pending(height.0);
        let values: Vec<ProposedValue<Ctx>> = self
            .candidates
            .for_round(height.0, round)
            .map(proposed_value)
            .collect();
        if reply_value.send(values).is_err() {
            error!(height = height.0, round = %round, "started round reply dropped");
        }
    }
}

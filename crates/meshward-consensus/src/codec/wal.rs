//! Write-ahead log entries beyond the network messages: the proposed values the WAL keeps.

use malachitebft_app_channel::app::consensus::ProposedValue;
use malachitebft_core_types::Validity;
use meshward_core::codec::{Reader, Writer};

use crate::context::{Address, BlockHash, Height, MeshwardContext};

use super::{get_round, put_round, Result, Wire};

impl Wire for ProposedValue<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        put_round(w, self.valid_round);
        self.proposer.put(w)?;
        self.value.put(w)?;
        w.bool(self.validity.is_valid());
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ProposedValue {
            height: Height::get(r)?,
            round: get_round(r)?,
            valid_round: get_round(r)?,
            proposer: Address::get(r)?,
            value: BlockHash::get(r)?,
            validity: Validity::from_bool(r.bool("validity")?),
        })
    }
}

//! State records: what the store reads back from disk to rebuild the ledger state.
//!
//! Checks: `Record::from_bytes` on the whole input never panics and round-trips exactly.
//! `State::from_records` over records split from the input (see
//! `meshward_fuzz::split_records`: a flag byte, then `[slot u8 if flag&1] len u16 BE, bytes`)
//! returns Ok or Err, never panics; a state it accepts hands back exactly the records it was
//! built from (`all_records`), and rebuilding from those gives the same root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::state::{Record, State};
use meshward_fuzz::split_records;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::from_bytes(data) {
        assert_eq!(r.to_bytes(), data, "state record encoding is not canonical");
        let _ = r.key();
    }

    let records = split_records(data);
    if let Ok(mut s) = State::from_records(records.clone()) {
        let root = s.root();
        let all = s.all_records();
        assert_eq!(all, records, "loaded state does not give back its records");
        let mut again = State::from_records(all).expect("a state's own records load");
        assert_eq!(
            again.root(),
            root,
            "reloading the same records changed the root"
        );
        let _ = s.flush();
        let _ = s.record_count();
        let _ = s.accounts().count();
        let _ = s.groups().count();
    }
});

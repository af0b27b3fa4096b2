//! The store file: a node opens whatever `meshward.redb` it finds in its data dir.
//!
//! Input: the whole file. Checks: `Store::open` on it returns (an error, for anything that is not
//! a real store) and never panics. Inputs are capped by `-max_len`, far below a real store, so
//! this exercises redb's header and integrity checks rather than Meshward's own checks; those
//! read blocks and state records through the decoders the other targets cover.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshward_store::Store;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("meshward-fuzz-store-{}.redb", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write the candidate store file");
    let _ = Store::open(p);
    let _ = std::fs::remove_file(p);
});

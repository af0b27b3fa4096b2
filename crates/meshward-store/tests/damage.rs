//! Files that are not a store, or a store damaged outside redb: errors, never panics.

mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::{fleet, store_path};
use meshward_store::{verify_chain, OpenError, Store};
use rand::{Rng, RngCore, SeedableRng};

/// Opens `path` and verifies it, returning whether each failed; panics are caught and reported
/// as test failures naming `what`.
fn open_and_verify(path: &Path, what: &str) -> (bool, bool) {
    let opened = catch_unwind(AssertUnwindSafe(|| Store::open(path).map(drop)))
        .unwrap_or_else(|_| panic!("Store::open panicked on {what}"));
    let verified = catch_unwind(AssertUnwindSafe(|| verify_chain(path).map(drop)))
        .unwrap_or_else(|_| panic!("verify_chain panicked on {what}"));
    (opened.is_err(), verified.is_err())
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshward.redb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut random = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut random);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an empty file", vec![]),
        ("a text file", b"hello, this is not a database\n".to_vec()),
        ("64 KiB of random bytes", random),
    ];
    for (what, bytes) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).expect_err(what);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(
            matches!(err, OpenError::Damaged { .. } | OpenError::Meta { .. }),
            "{what}: {err}"
        );
        assert_eq!(open_and_verify(&path, what), (true, true), "{what}");
    }

    // A redb file that is not a store.
    fs::remove_file(&path).unwrap();
    let db = redb::Database::create(&path).unwrap();
    let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
    let wtx = db.begin_write().unwrap();
    wtx.open_table(t).unwrap().insert(1, 2).unwrap();
    wtx.commit().unwrap();
    drop(db);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::Meta { .. }), "{err}");
    assert!(err.to_string().contains("not a meshward store"), "{err}");
}

#[test]
fn store_damaged_outside_redb_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 6, 8));
    let good = fs::read(store_path(dir.path())).unwrap();
    let path = dir.path().join("damaged.redb");

    // Truncated at various lengths.
    for len in [0, 100, 4096, good.len() / 2, good.len() - 1] {
        fs::write(&path, &good[..len]).unwrap();
        let what = format!("the store truncated to {len} bytes");
        let (open_failed, _) = open_and_verify(&path, &what);
        assert!(open_failed || len == good.len() - 1, "{what} opened");
    }

    // Random bytes flipped anywhere in the file: whatever happens is an error or a store that
    // still checks out, never a panic. MESHWARD_FLIP_ROUNDS=3000 runs a longer search.
    let rounds: u32 = std::env::var("MESHWARD_FLIP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..rounds {
        let mut bytes = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
        }
        fs::write(&path, &bytes).unwrap();
        let (open_failed, verify_failed) = open_and_verify(&path, &format!("flip round {round}"));
        // Opening checks redb's page checksums and the chain, so whatever it accepts verifies.
        if !open_failed {
            assert!(
                !verify_failed,
                "round {round}: open accepted what verify refuses"
            );
        }
    }
}

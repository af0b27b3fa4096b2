//! `meshward audit`: every governance action on the ledger, in order, from a gateway's
//! `GET /v1/audit`, and with `--prove DIR` a proof file of each from `GET /v1/tx/{id}/proof`.
//! The proofs need no trust in the gateway: `meshward verify` checks each against the genesis.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use meshward_api::client::ApiClient;
use meshward_api::console::AuditAction;
use meshward_core::hash::Hash;
use meshward_core::light::{utc, ProofFile};
use serde_json::json;

use crate::Output;

/// Whether `text` is a proof file (version 2) naming transaction `tx`. Only its summary is read:
/// `meshward verify` checks it.
fn proves_tx(text: &str, tx: &str) -> bool {
    serde_json::from_str::<ProofFile>(text).is_ok_and(|f| f.tx.as_deref() == Some(tx))
}

/// Lists the actions from height `since` on; writes a proof of each into `prove`.
pub(crate) fn audit(api: &str, since: u64, prove: Option<&Path>) -> Result<Output> {
    let client = ApiClient::new(api)?;
    let mut actions: Vec<AuditAction> = Vec::new();
    let mut from = since.max(1);
    // Each page covers a bounded run of heights; an empty page that does not move on is the tip.
    loop {
        let page = client.audit(from, None)?;
        let moved = page.next_since > from;
        actions.extend(page.actions);
        if !moved {
            break;
        }
        from = page.next_since;
    }
    let mut written = Vec::new();
    if let Some(dir) = prove {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for a in &actions {
            let id = Hash::from_hex(&a.tx)
                .with_context(|| format!("the gateway sent a bad transaction id {:?}", a.tx))?;
            let text = client.tx_proof(&id)?;
            let path = dir.join(format!("{:08}-{}-{}.json", a.height, a.index, a.kind));
            // Two proofs of one transaction may differ in their certificates (any quorum of
            // the validators' signatures certifies a block, and a gateway's newest block has
            // its own until the next block carries one); both verify. A file already proving
            // this transaction is kept; one holding anything else is not overwritten.
            match fs::read_to_string(&path) {
                Ok(old) if proves_tx(&old, &a.tx) => {}
                Ok(_) => bail!(
                    "{} already exists and is not a proof of transaction {}; refusing to overwrite",
                    path.display(),
                    a.tx
                ),
                Err(_) => fs::write(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            }
            written.push(path);
        }
    }
    let mut text = String::new();
    for a in &actions {
        let by = if a.by_evidence {
            format!("on evidence from {}", a.authorised_by.join(", "))
        } else {
            format!("authorised by {}", a.authorised_by.join(", "))
        };
        text.push_str(&format!(
            "height {} ({}) {}: {}; {by}; tx {}\n",
            a.height,
            utc(a.time_ms),
            a.kind,
            a.summary,
            a.tx
        ));
    }
    text.push_str(&format!(
        "{} governance action(s) from height {}",
        actions.len(),
        since.max(1)
    ));
    if let Some(dir) = prove {
        text.push_str(&format!(
            "; {} proof file(s) in {} (check each with meshward verify --genesis genesis.json FILE)",
            written.len(),
            dir.display()
        ));
    }
    Ok(Output {
        text,
        json: json!({
            "since": since.max(1),
            "actions": actions,
            "proofs": written,
        }),
    })
}

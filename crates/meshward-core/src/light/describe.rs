//! What a proven transaction did, in words, for `meshward verify` and `meshward audit`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::Proven;
use crate::ids::PublicKey;
use crate::tx::{Evidence, Recipient, Tx, TxBody};

impl Proven {
    /// One sentence: what the transaction did, at which height and block time, and who
    /// authorised it. For example "device 12D3… revoked at height 40, 2026-12-07 10:00:01.250
    /// UTC, by admins 12D3…, 12D3…: lost".
    pub fn describe(&self) -> String {
        let when = format!("at height {}, {}", self.height, utc(self.block_time_ms));
        let what = action(&self.tx);
        format!("{what} {when}, {}", authority(&self.tx))
    }
}

/// What the transaction did, without when or by whom.
fn action(tx: &Tx) -> String {
    match &tx.body {
        TxBody::Enroll(e) => format!(
            "device {} enrolled into groups [{}]",
            e.device,
            join(e.groups.iter())
        ),
        TxBody::Revoke { device, reason } => format!("device {device} revoked ({reason:?})"),
        TxBody::RotateKeys { new_sign, .. } => format!(
            "device {} rotated its keys (new signing key {new_sign})",
            tx.signer
        ),
        TxBody::SetPolicy { allow } => format!(
            "send policy replaced by [{}]",
            join(allow.iter().map(|(a, b)| format!("{a}->{b}")))
        ),
        TxBody::Anchor(a) => format!(
            "device {} anchored commitment {} ({} envelope(s), {} bytes) for {}",
            tx.signer,
            a.commitment,
            a.count,
            a.size_bytes,
            recipient(&a.recipient)
        ),
        TxBody::Ack { commitment, sender } => {
            format!(
                "device {} acknowledged commitment {commitment} from {sender}",
                tx.signer
            )
        }
        TxBody::Evidence(Evidence::Equivocation { a, .. }) => format!(
            "device {} revoked by equivocation evidence (two anchors at seq {})",
            a.signer, a.seq
        ),
        TxBody::Evidence(Evidence::PolicyViolation { anchor }) => format!(
            "device {} revoked by policy-violation evidence (anchor at seq {})",
            anchor.signer, anchor.seq
        ),
        TxBody::Evidence(Evidence::Validator(e)) => format!(
            "validator {} convicted of double voting (height {}, round {})",
            e.validator, e.height, e.round
        ),
        TxBody::ValidatorSetChange(set) => format!(
            "validator set replaced by [{}] from the next height",
            join(
                set.validators
                    .iter()
                    .map(|v| format!("{} power {}", v.key, v.power))
            )
        ),
        TxBody::GroupKey { group, epoch, .. } => {
            format!("group {group} key epoch {epoch} handed out")
        }
        TxBody::CreateTicket {
            ticket_hash,
            expires_ms,
            groups,
        } => format!(
            "enrollment ticket {ticket_hash} for groups [{}] created, expiring {}",
            join(groups.iter()),
            utc(*expires_ms)
        ),
        TxBody::Reinstate {
            device, new_sign, ..
        } => format!("device {device} reinstated under new signing key {new_sign}"),
    }
}

/// Who authorised it: the admins for admin transactions, the device for a ticket enrollment,
/// else the signer.
fn authority(tx: &Tx) -> String {
    match &tx.body {
        TxBody::Enroll(e) if e.ticket.is_some() => "by the device, with a ticket".into(),
        b if b.is_admin_only() => {
            let keys: Vec<&PublicKey> = core::iter::once(&tx.signer)
                .chain(tx.cosigs.iter().map(|c| &c.key))
                .collect();
            format!("by admins {}", join(keys.into_iter()))
        }
        TxBody::Evidence(_) => format!("on evidence submitted by {}", tx.signer),
        _ => format!("signed by {}", tx.signer),
    }
}

fn recipient(r: &Recipient) -> String {
    match r {
        Recipient::Device(d) => format!("device {d}"),
        Recipient::Group(g) => format!("group {g}"),
    }
}

fn join<T: core::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = items.map(|i| format!("{i}")).collect();
    v.join(", ")
}

/// `ms` since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm UTC` (proleptic Gregorian calendar).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The calendar date `days` after 1970-01-01: shifts the epoch to 0000-03-01 so leap days end
/// each 4-, 100- and 400-year cycle, then reads the year, month and day off the cycle.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        // 2000-02-29, a leap day of a 400-year leap year.
        assert_eq!(utc(951_782_400_000 + 1), "2000-02-29 00:00:00.001 UTC");
        assert_eq!(utc(1_796_643_000_250), "2026-12-07 11:30:00.250 UTC");
        assert_eq!(utc(4_107_542_399_999), "2100-02-28 23:59:59.999 UTC");
    }
}

//! Wall-clock time for the edges of the system (std only).
//!
//! The ledger rules never read a clock: time reaches them as an argument (`ApplyCtx::time_ms`,
//! block header times). Gateways, devices and tools stamp those arguments with [`now_ms`], so
//! there is one definition of "now" in the workspace.

/// Milliseconds since the Unix epoch; 0 if the system clock is before it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2024_and_monotone_enough() {
        let a = super::now_ms();
        // 2024-01-01T00:00:00Z: a clock this far behind is a broken test machine.
        assert!(a > 1_704_067_200_000, "{a}");
        assert!(super::now_ms() >= a);
    }
}

//! Free TCP ports for the processes a test starts.

use std::net::TcpListener;

use rand::Rng;

/// The first of `n` consecutive TCP ports on 127.0.0.1 that are free now (each checked by
/// binding it), chosen at random from 10000 up to the kernel's ephemeral range, so that tests
/// running at once rarely collide and no outgoing connection's local port takes one between
/// this check and the test's own bind. Another test may still take one first.
pub fn free_ports(n: u16) -> u16 {
    let mut rng = rand::thread_rng();
    let top = ephemeral_low().saturating_sub(n).max(10_001);
    loop {
        let base: u16 = rng.gen_range(10_000..top);
        let ok = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
}

/// The lowest port of the kernel's ephemeral range (Linux: `ip_local_port_range`; 32768, the
/// usual default, where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_returned_can_be_bound() {
        // Another process may take a port between the check and this bind (the very race the
        // doc warns of), so one of a few tries must succeed; a free_ports that handed out
        // ports in use would fail every try.
        let ok = (0..5).any(|_| {
            let base = free_ports(3);
            assert!(u32::from(base) + 3 <= u32::from(ephemeral_low()));
            let held: Vec<_> = (base..base + 3)
                .map(|p| TcpListener::bind(("127.0.0.1", p)))
                .collect();
            held.iter().all(Result::is_ok)
        });
        assert!(ok, "no try returned 3 ports that could all be bound");
    }
}

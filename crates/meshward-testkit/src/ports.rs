//! Free TCP ports for the processes a test starts.

use std::net::TcpListener;

use rand::Rng;

/// The first of `n` consecutive TCP ports on 127.0.0.1 that are free now (each checked by
/// binding it), chosen at random in 20000..60000 so that tests running at once rarely collide.
/// Another process may still take one before the test binds it.
pub fn free_ports(n: u16) -> u16 {
    let mut rng = rand::thread_rng();
    loop {
        let base: u16 = rng.gen_range(20_000..60_000);
        let ok = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_returned_can_be_bound() {
        let base = free_ports(3);
        for p in base..base + 3 {
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}

//! A bounded connection flood for the adversarial tests: many TCP connections to a node's ports
//! on loopback that send garbage, stop halfway through a handshake, or send nothing at all.
//!
//! Bounded in every direction: only 127.0.0.0/8 targets are accepted, the flood lasts the given
//! duration, each target gets at most [`MAX_CONNECTIONS_PER_TARGET`] connections at once, and
//! garbage is written once per [`TICK`] per connection, at most [`GARBAGE_BYTES`] a time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

/// Most connections held open to one target at once.
pub const MAX_CONNECTIONS_PER_TARGET: usize = 1_000;
/// How often every connection is visited (garbage written, closure noticed, slot reopened).
pub const TICK: Duration = Duration::from_millis(100);
/// Most garbage bytes written to a connection per tick.
pub const GARBAGE_BYTES: usize = 256;
/// A connect that takes longer than this (the target's accept queue is full) counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// What the flood speaks to a target, for its half-open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A libp2p TCP listener: the half-open connections send multistream-select's header, ask
    /// for Noise, and stop inside the first handshake message.
    Libp2p,
    /// An HTTP/1.1 server: the half-open connections send a request line and part of the
    /// headers, then stop (slowloris).
    Http,
}

/// One port to flood.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Must be in 127.0.0.0/8.
    pub addr: SocketAddr,
    /// What the half-open connections pretend to speak.
    pub protocol: Protocol,
    /// Connections held open to it at once (at most [`MAX_CONNECTIONS_PER_TARGET`]).
    pub connections: usize,
}

/// What the flood did to one target.
#[derive(Debug, Clone, Default)]
pub struct TargetReport {
    /// The target.
    pub addr: Option<SocketAddr>,
    /// Connections the target accepted (TCP handshake completed).
    pub opened: u64,
    /// Connects that failed or timed out.
    pub refused: u64,
    /// Connections the target closed (or reset) while the flood held them.
    pub closed_by_target: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Garbage and handshake bytes written.
    pub bytes_sent: u64,
}

/// A running flood; [`Flood::finish`] waits for its end and reports.
pub struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<TargetReport>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Garbage,
    HalfOpen,
    Silent,
}

struct Slot {
    kind: Kind,
    stream: Option<TcpStream>,
}

impl Flood {
    /// Starts flooding every target for `duration`, one thread per target.
    ///
    /// # Panics
    /// If a target is not on 127.0.0.0/8 or asks for more than
    /// [`MAX_CONNECTIONS_PER_TARGET`] connections: the flood is a test tool, and a test that
    /// asks for that is wrong.
    pub fn start(targets: &[Target], duration: Duration) -> Flood {
        for t in targets {
            assert!(
                match t.addr {
                    SocketAddr::V4(a) => a.ip().is_loopback(),
                    SocketAddr::V6(_) => false,
                },
                "the flood only targets 127.0.0.0/8, not {}",
                t.addr
            );
            assert!(
                t.connections <= MAX_CONNECTIONS_PER_TARGET,
                "at most {MAX_CONNECTIONS_PER_TARGET} connections per target"
            );
        }
        raise_open_files_limit();
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + duration;
        let threads = targets
            .iter()
            .map(|&t| {
                let stop = stop.clone();
                std::thread::spawn(move || flood_one(t, deadline, &stop))
            })
            .collect();
        Flood { stop, threads }
    }

    /// Waits until the flood's duration is over, closes every connection and reports per target.
    pub fn finish(mut self) -> Vec<TargetReport> {
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The test process holds a socket per connection: lift its soft open-files limit to the hard one.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.maximum.is_some() && l.current != l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

fn half_open_bytes(p: Protocol) -> Vec<u8> {
    match p {
        Protocol::Libp2p => {
            let mut b = Vec::new();
            for line in ["/multistream/1.0.0\n", "/noise\n"] {
                b.push(line.len() as u8);
                b.extend_from_slice(line.as_bytes());
            }
            // Noise's first message announces 32 bytes and sends 10 of them.
            b.extend_from_slice(&[0, 32]);
            b.extend_from_slice(&[0x42; 10]);
            b
        }
        Protocol::Http => {
            b"POST /v1/tx HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/oct".to_vec()
        }
    }
}

fn flood_one(t: Target, deadline: Instant, stop: &AtomicBool) -> TargetReport {
    let mut rng = rand::thread_rng();
    let kinds = [Kind::Garbage, Kind::HalfOpen, Kind::Silent];
    let mut slots: Vec<Slot> = (0..t.connections)
        .map(|i| Slot {
            kind: kinds[i % kinds.len()],
            stream: None,
        })
        .collect();
    let half = half_open_bytes(t.protocol);
    let mut r = TargetReport {
        addr: Some(t.addr),
        ..TargetReport::default()
    };
    let sent = AtomicU64::new(0);
    let mut garbage = vec![0u8; GARBAGE_BYTES];
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        for slot in &mut slots {
            if Instant::now() >= deadline {
                break;
            }
            let Some(s) = slot.stream.as_mut() else {
                match TcpStream::connect_timeout(&t.addr, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        r.opened += 1;
                        let _ = s.set_nonblocking(true);
                        let _ = s.set_nodelay(true);
                        let mut s = s;
                        if let Kind::HalfOpen = slot.kind {
                            if let Ok(n) = s.write(&half) {
                                sent.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                        slot.stream = Some(s);
                    }
                    Err(_) => r.refused += 1,
                }
                continue;
            };
            let alive = match slot.kind {
                Kind::Garbage => {
                    rng.fill(&mut garbage[..]);
                    match s.write(&garbage) {
                        Ok(n) => {
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                            true
                        }
                        Err(e) => e.kind() == ErrorKind::WouldBlock,
                    }
                }
                Kind::HalfOpen | Kind::Silent => match s.read(&mut sink) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                },
            };
            if !alive {
                r.closed_by_target += 1;
                slot.stream = None;
            }
        }
        let open = slots.iter().filter(|s| s.stream.is_some()).count() as u64;
        r.peak_open = r.peak_open.max(open);
        if let Some(rest) = TICK.checked_sub(tick.elapsed()) {
            // Pacing of the flood, not a wait for a condition.
            std::thread::sleep(rest.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
    r.bytes_sent = sent.load(Ordering::Relaxed);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "only targets 127.0.0.0/8")]
    fn a_target_off_loopback_is_refused() {
        Flood::start(
            &[Target {
                addr: "10.0.0.1:80".parse().unwrap(),
                protocol: Protocol::Http,
                connections: 1,
            }],
            Duration::from_millis(1),
        );
    }

    #[test]
    fn a_flood_holds_its_connections_and_counts_what_the_target_closes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // The target accepts every connection and closes every second one at once.
        let server = std::thread::spawn(move || {
            let mut kept = Vec::new();
            l.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_millis(1500);
            let mut n = 0u64;
            while Instant::now() < end {
                match l.accept() {
                    Ok((s, _)) => {
                        n += 1;
                        if n.is_multiple_of(2) {
                            kept.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            n
        });
        let f = Flood::start(
            &[Target {
                addr,
                protocol: Protocol::Libp2p,
                connections: 30,
            }],
            Duration::from_millis(1000),
        );
        let r = f.finish().remove(0);
        let accepted = server.join().unwrap();
        assert!(r.opened >= 30, "{r:?}");
        assert!(r.opened <= accepted, "{r:?} vs {accepted} accepted");
        assert!(r.peak_open >= 15 && r.peak_open <= 30, "{r:?}");
        assert!(r.bytes_sent > 0, "{r:?}");
        assert!(r.closed_by_target > 0, "{r:?}");
        assert!(r.opened > 30, "closed slots are reopened: {r:?}");
    }
}

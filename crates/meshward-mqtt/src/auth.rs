//! Passwords of custodial devices and the limits on failed logins.
//!
//! A password is 32 random bytes, given to the operator once as 64 hex digits. Only its argon2id
//! hash (a PHC string: `$argon2id$v=19$m=19456,t=2,p=1$…`) is kept. Verifying one costs tens of
//! milliseconds of CPU by design, so the listener verifies at most [`MAX_CONCURRENT_VERIFY`] at
//! once off the async workers, and a [`LoginLimiter`] stops guessing: after
//! [`FAILURE_BURST`] failures an address or a user name must wait for the bucket to refill (one
//! try per [`REFILL`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

/// argon2id memory cost, KiB (OWASP's minimum for argon2id with t = 2).
pub const ARGON2_M_KIB: u32 = 19_456;
/// argon2id passes.
pub const ARGON2_T: u32 = 2;
/// argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Password hashes verified at once; a login beyond that is told the server is busy.
pub const MAX_CONCURRENT_VERIFY: usize = 2;
/// Failed logins an address or a user name may make before it must wait.
pub const FAILURE_BURST: u32 = 5;
/// One more try after this long.
pub const REFILL: Duration = Duration::from_secs(10);
/// Addresses and user names tracked (each map); beyond it the least recently failed is dropped.
pub const MAX_TRACKED: usize = 4096;

fn hasher() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .expect("the constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A fresh password: 32 random bytes as 64 lowercase hex digits (MQTT passwords travel as UTF-8
/// in 3.1.1 clients' tooling).
pub fn generate_password() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The argon2id PHC string of `password`, with a random salt. Slow by design.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id over a short password with a fresh salt")
        .to_string()
}

/// Whether `phc` is an argon2id hash this server accepts: parses, argon2id, and costs at least
/// the parameters above (so a weak hash cannot be planted).
pub fn check_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(format!("{} is not argon2id", h.algorithm));
    }
    let p = Params::try_from(&h).map_err(|e| format!("argon2 parameters: {e}"))?;
    if p.m_cost() < ARGON2_M_KIB || p.t_cost() < ARGON2_T {
        return Err(format!(
            "argon2id parameters m={} t={} are weaker than m={ARGON2_M_KIB} t={ARGON2_T}",
            p.m_cost(),
            p.t_cost()
        ));
    }
    if h.hash.is_none_or(|o| o.len() < 16) {
        return Err("the hash output is missing or shorter than 16 bytes".into());
    }
    Ok(())
}

/// Whether `password` matches the PHC string `phc`. Slow by design; run it off async workers.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let add = now.duration_since(self.last).as_secs_f64() / REFILL.as_secs_f64();
        (self.tokens + add).min(f64::from(FAILURE_BURST))
    }
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn allows(&self, k: &K, now: Instant) -> bool {
        self.map.get(k).is_none_or(|b| b.refilled(now) >= 1.0)
    }

    fn fail(&mut self, k: &K, now: Instant) {
        if !self.map.contains_key(k) && self.map.len() >= MAX_TRACKED {
            // Drop what refilled, else the least recently failed.
            self.map
                .retain(|_, b| b.refilled(now) < f64::from(FAILURE_BURST));
            if self.map.len() >= MAX_TRACKED {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    self.map.remove(&o);
                }
            }
        }
        let b = self.map.entry(k.clone()).or_insert(Bucket {
            tokens: f64::from(FAILURE_BURST),
            last: now,
        });
        b.tokens = (b.refilled(now) - 1.0).max(0.0);
        b.last = now;
    }
}

/// Failed-login limits per client address (IPv6 by its /64) and per user name.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    addrs: Buckets<IpAddr>,
    users: Buckets<String>,
}

/// The key an address is limited under: IPv4 as is, IPv6 by its /64 (one host owns a /64).
fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl LoginLimiter {
    /// Whether a login from `ip` as `user` may be tried now.
    pub fn allows(&self, ip: IpAddr, user: &str, now: Instant) -> bool {
        self.addrs.allows(&addr_key(ip), now) && self.users.allows(&user.to_string(), now)
    }

    /// Records a failed login.
    pub fn failed(&mut self, ip: IpAddr, user: &str, now: Instant) {
        self.addrs.fail(&addr_key(ip), now);
        // Unknown names are not worth a slot of their own beyond the address's.
        if !user.is_empty() && user.len() <= 128 {
            self.users.fail(&user.to_string(), now);
        }
    }

    /// Addresses and names tracked (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (self.addrs.map.len(), self.users.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_is_argon2id_at_full_cost() {
        let pw = generate_password();
        assert_eq!(pw.len(), 64);
        let h = hash_password(&pw);
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        check_hash(&h).unwrap();
        assert!(verify_password(&h, &pw));
        assert!(!verify_password(&h, &generate_password()));
        assert!(!verify_password("not a hash", &pw));
    }

    #[test]
    fn weak_or_foreign_hashes_are_refused() {
        let weak = {
            let params = Params::new(8, 1, 1, None).unwrap();
            let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            a.hash_password(b"x", &salt).unwrap().to_string()
        };
        assert!(check_hash(&weak).unwrap_err().contains("weaker"));
        let argon2i = {
            let a = Argon2::new(
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(ARGON2_M_KIB, 2, 1, None).unwrap(),
            );
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            a.hash_password(b"x", &salt).unwrap().to_string()
        };
        assert!(check_hash(&argon2i).unwrap_err().contains("not argon2id"));
        assert!(check_hash("plaintext").is_err());
    }

    #[test]
    fn failures_exhaust_an_address_and_a_name_then_refill() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..FAILURE_BURST {
            assert!(l.allows(a, "dev", t0));
            l.failed(a, "dev", t0);
        }
        assert!(!l.allows(a, "other", t0), "the address is exhausted");
        assert!(!l.allows(b, "dev", t0), "the name is exhausted");
        assert!(l.allows(b, "other", t0));
        assert!(l.allows(a, "dev", t0 + REFILL), "one try after REFILL");
    }

    #[test]
    fn ipv6_is_limited_by_its_64_and_the_maps_stay_bounded() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..FAILURE_BURST {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            l.failed(ip, "", t0);
        }
        assert!(!l.allows("2001:db8::ffff".parse().unwrap(), "x", t0));
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.failed(ip, &format!("u{i}"), t0);
        }
        let (a, u) = l.tracked();
        assert!(a <= MAX_TRACKED && u <= MAX_TRACKED, "{a} {u}");
    }
}

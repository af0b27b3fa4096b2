//! Test support shared by Meshward's integration tests (`crates/*/tests`): waits that poll a
//! condition until a deadline, checks that a condition stays false for a window, free TCP ports,
//! signals to the child processes a test spawned, and a raw HTTP/1.1 client for a node's API.
//!
//! A test that waits polls for a condition with a deadline, never a bare sleep: the deadline is
//! generous (two cores, unoptimised code, other tests at once) and costs nothing when the
//! condition holds early. Fixtures of one crate (the consensus `Net`, the CLI's `Cluster`, the
//! mesh's `TestNode`, store fixtures) stay in that crate's `tests/common`.
//!
//! ```
//! use std::time::Duration;
//! use meshward_testkit::{never, wait_for};
//!
//! let mut polls = 0;
//! let seen = wait_for("the third poll", Duration::from_secs(10), || {
//!     polls += 1;
//!     (polls == 3).then_some(polls)
//! });
//! assert_eq!(seen, 3);
//! never("a negative count", Duration::ZERO, || polls < 0);
//! ```
#![deny(missing_docs)]

pub mod flood;
mod http;
mod ports;
mod process;
mod wait;

pub use http::{http, HttpResponse};
pub use ports::free_ports;
pub use process::{alive, have_tool, int, is_root, kill, signal, term};
pub use wait::{
    never, never_future, wait_for, wait_for_async, wait_for_future, wait_until, wait_until_async,
    wait_until_future, POLL_INTERVAL, POLL_INTERVAL_ASYNC,
};

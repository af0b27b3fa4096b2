//! Polled waits: a condition checked every poll interval until it holds (or, for `never`, for
//! a whole window), with a deadline that fails the test and names what it waited for.

use std::future::{ready, Future};
use std::time::{Duration, Instant};

/// How often the blocking waits ([`wait_for`], [`wait_until`], [`never`]) poll. Their
/// conditions are often an HTTP request to every node of a cluster or a short process, so they
/// poll less often than the async waits; a wait ends at most this long after its condition
/// holds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often the async waits ([`wait_for_async`], [`wait_for_future`] and their `until` and
/// `never` forms) poll. Their conditions are in-process and cheap (a lock, a channel round trip
/// to a task), so they poll often.
pub const POLL_INTERVAL_ASYNC: Duration = Duration::from_millis(5);

#[cold]
#[track_caller]
fn timed_out(what: &str, timeout: Duration) -> ! {
    panic!("timed out after {timeout:?} waiting for {what}")
}

#[cold]
#[track_caller]
fn happened(what: &str, window: Duration) -> ! {
    panic!("{what}: happened within the {window:?} in which it must not")
}

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value; panics
/// naming `what` and `timeout` once `timeout` has passed. `f` is called at least once.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, timeout);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` every [`POLL_INTERVAL`] until it holds; panics naming `what` and `timeout`
/// once `timeout` has passed.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()));
}

/// Polls `cond` every [`POLL_INTERVAL`] for `window` (at its start and at its end too), and
/// panics naming `what` if it ever holds.
#[track_caller]
pub fn never(what: &str, window: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    loop {
        if cond() {
            happened(what, window);
        }
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep(POLL_INTERVAL.min(end - now));
    }
}

/// The async form of [`wait_for`] for tokio tests: polls `f` every [`POLL_INTERVAL_ASYNC`]
/// without blocking the runtime, until it returns `Some`; panics naming `what` and `timeout`.
pub async fn wait_for_async<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    wait_for_future(what, timeout, || ready(f())).await
}

/// The async form of [`wait_until`]: polls `cond` every [`POLL_INTERVAL_ASYNC`] until it
/// holds; panics naming `what` and `timeout`.
pub async fn wait_until_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for_future(what, timeout, || ready(cond().then_some(()))).await;
}

/// [`wait_for_async`] for a condition that must itself await (e.g. ask a task over a channel):
/// `f` returns a future, polled to completion every [`POLL_INTERVAL_ASYNC`] until its output is
/// `Some`; panics naming `what` and `timeout`.
pub async fn wait_for_future<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, timeout);
        }
        tokio::time::sleep(POLL_INTERVAL_ASYNC).await;
    }
}

/// [`wait_until_async`] for a condition that must itself await: `cond` returns a future of a
/// `bool`, awaited every [`POLL_INTERVAL_ASYNC`] until it is `true`; panics naming `what` and
/// `timeout`.
pub async fn wait_until_future<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() >= deadline {
            timed_out(what, timeout);
        }
        tokio::time::sleep(POLL_INTERVAL_ASYNC).await;
    }
}

/// The async form of [`never`] for a condition that must itself await: awaits `cond` every
/// [`POLL_INTERVAL_ASYNC`] for `window` (at its start and at its end too), and panics naming
/// `what` if it is ever `true`.
pub async fn never_future<F, Fut>(what: &str, window: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + window;
    loop {
        if cond().await {
            happened(what, window);
        }
        let now = Instant::now();
        if now >= end {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL_ASYNC.min(end - now)).await;
    }
}

// Timing-free: every condition here counts its polls, and each outcome depends only on the
// count (a deadline of zero passes on the first poll that fails, a long one is never reached).
#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    /// A condition that holds from its `n`-th poll on, and its poll count.
    fn after(n: u32) -> (Cell<u32>, u32) {
        (Cell::new(0), n)
    }

    fn poll(c: &(Cell<u32>, u32)) -> bool {
        c.0.set(c.0.get() + 1);
        c.0.get() >= c.1
    }

    #[test]
    fn wait_for_returns_the_value_of_the_first_poll_that_has_one() {
        let c = after(3);
        let v = wait_for("the third poll", LONG, || poll(&c).then(|| c.0.get() * 10));
        assert_eq!(v, 30);
        assert_eq!(c.0.get(), 3, "no poll after the condition held");
    }

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let c = after(4);
        wait_until("the fourth poll", LONG, || poll(&c));
        assert_eq!(c.0.get(), 4);
    }

    #[test]
    fn wait_for_polls_once_when_the_condition_already_holds() {
        let c = after(1);
        wait_until("the first poll", Duration::ZERO, || poll(&c));
        assert_eq!(c.0.get(), 1);
    }

    #[test]
    #[should_panic(expected = "timed out after 0ns waiting for a condition that never holds")]
    fn wait_for_panics_at_the_deadline_naming_what_it_waited_for() {
        wait_for::<()>("a condition that never holds", Duration::ZERO, || None);
    }

    #[test]
    fn never_passes_a_condition_that_stays_false() {
        let polls = Cell::new(0);
        never("anything", Duration::ZERO, || {
            polls.set(polls.get() + 1);
            false
        });
        assert_eq!(polls.get(), 1, "a zero window is polled once");
    }

    #[test]
    fn never_polls_at_the_start_and_at_the_end_of_its_window() {
        let polls = Cell::new(0);
        never("anything", POLL_INTERVAL, || {
            polls.set(polls.get() + 1);
            false
        });
        assert!(polls.get() >= 2, "{} polls", polls.get());
    }

    #[test]
    #[should_panic(expected = "the third poll: happened within the 600s in which it must not")]
    fn never_panics_as_soon_as_the_condition_holds() {
        let c = after(3);
        never("the third poll", LONG, || poll(&c));
    }

    #[test]
    #[should_panic(expected = "already true: happened within")]
    fn never_checks_at_the_start_of_the_window() {
        never("already true", Duration::ZERO, || true);
    }

    #[tokio::test]
    async fn async_forms_return_once_the_condition_holds() {
        let c = after(3);
        let v = wait_for_async("the third poll", LONG, || poll(&c).then_some(7)).await;
        assert_eq!((v, c.0.get()), (7, 3));

        let c = after(2);
        wait_until_async("the second poll", LONG, || poll(&c)).await;
        assert_eq!(c.0.get(), 2);

        let c = after(5);
        let v = wait_for_future("the fifth poll", LONG, || async { poll(&c).then_some("x") }).await;
        assert_eq!((v, c.0.get()), ("x", 5));

        let c = after(2);
        wait_until_future("the second poll", LONG, || async { poll(&c) }).await;
        assert_eq!(c.0.get(), 2);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 0ns waiting for an answer")]
    async fn async_forms_panic_at_the_deadline() {
        wait_until_future("an answer", Duration::ZERO, || async { false }).await;
    }

    #[tokio::test]
    async fn never_future_passes_a_condition_that_stays_false() {
        let polls = Cell::new(0);
        never_future("anything", Duration::ZERO, || async {
            polls.set(polls.get() + 1);
            false
        })
        .await;
        assert_eq!(polls.get(), 1);
    }

    #[tokio::test]
    #[should_panic(expected = "the second poll: happened within")]
    async fn never_future_panics_as_soon_as_the_condition_holds() {
        let c = after(2);
        never_future("the second poll", LONG, || async { poll(&c) }).await;
    }
}

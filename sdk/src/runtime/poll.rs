//! Fallback polling that backs off while a worker finds nothing.
//!
//! Wake-ups (commits in this process, PostgreSQL notifications) bring most work at once;
//! polling is there for what they miss: work written by another process on SQLite, or
//! notifications lost while a connection was down. When a poll finds work (so wake-ups are
//! missing some), the next polls come at the floor (a thirty-second of the configured
//! interval, at least 10 ms); each poll after that doubles the wait, up to the configured
//! interval. A worker whose work all comes by wake-ups, busy or idle, costs the database one
//! poll per interval.

use std::time::Duration;

use actix::prelude::*;

/// The fallback poll of one actor.
pub(super) struct Poller {
    floor: Duration,
    ceiling: Duration,
    /// The wait of the poll armed now.
    armed: Duration,
    /// The wait of the next poll to arm.
    next: Duration,
    handle: Option<SpawnHandle>,
    /// A claim started by the poll is running.
    polling: bool,
}

impl Poller {
    /// A poller whose waits grow up to `interval`.
    pub(super) fn new(interval: Duration) -> Self {
        let floor = (interval / 32).max(Duration::from_millis(10)).min(interval);
        Poller {
            floor,
            ceiling: interval,
            armed: floor,
            next: floor,
            handle: None,
            polling: false,
        }
    }

    /// Arms the next poll: `tick` runs after the current wait, and the wait after that is
    /// twice as long (up to the interval). `tick` is expected to poll and re-arm.
    pub(super) fn arm<A>(&mut self, ctx: &mut Context<A>, tick: fn(&mut A, &mut Context<A>))
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some(handle) = self.handle.take() {
            ctx.cancel_future(handle);
        }
        let wait = self.advance();
        self.handle = Some(ctx.run_later(wait, tick));
    }

    /// Takes the next wait (now the armed one) and doubles the one after, up to the interval.
    fn advance(&mut self) -> Duration {
        self.armed = self.next;
        self.next = self.next.saturating_mul(2).min(self.ceiling);
        self.armed
    }

    /// The poll started a claim (`started`), or found one running and left it.
    pub(super) fn claim_started(&mut self, started: bool) {
        self.polling = started;
    }

    /// A claim finished, having found work or not. When it was the poll's and found work
    /// (no wake-up brought that work), polls start again from the floor; returns whether the
    /// poll armed now waits longer than that (the caller re-arms it with [`Poller::arm`]).
    pub(super) fn claim_finished(&mut self, found_work: bool) -> bool {
        std::mem::take(&mut self.polling) && found_work && self.found_work()
    }

    /// Work was found: polls start again from the floor. Returns whether the poll armed
    /// now waits longer than that.
    fn found_work(&mut self) -> bool {
        self.next = self.floor;
        self.armed > self.floor
    }

    /// The waits this poller would use, for tests.
    #[cfg(test)]
    fn waits(&mut self, polls: usize) -> Vec<Duration> {
        (0..polls).map(|_| self.advance()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn idle_polls_back_off_to_the_interval() {
        let mut poller = Poller::new(Duration::from_millis(640));
        assert_eq!(poller.waits(7), ms(&[20, 40, 80, 160, 320, 640, 640]));
    }

    #[test]
    fn found_work_starts_again_from_the_floor() {
        let mut poller = Poller::new(Duration::from_millis(640));
        poller.waits(5);
        assert!(poller.found_work(), "a 320 ms wait is armed: re-arm");
        assert_eq!(poller.waits(2), ms(&[20, 40]));
        poller.found_work();
        poller.waits(1);
        assert!(!poller.found_work(), "already at the floor");
    }

    #[test]
    fn a_huge_interval_does_not_overflow() {
        let mut poller = Poller::new(Duration::MAX);
        let waits = poller.waits(80);
        assert_eq!(waits.last(), Some(&Duration::MAX));
    }

    #[test]
    fn short_intervals_keep_a_10_ms_floor() {
        let mut poller = Poller::new(Duration::from_millis(50));
        assert_eq!(poller.waits(4), ms(&[10, 20, 40, 50]));
        let mut poller = Poller::new(Duration::from_millis(5));
        assert_eq!(poller.waits(2), ms(&[5, 5]));
    }
}

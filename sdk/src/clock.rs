//! The time the engine runs on — the system clock, or a [`Clock::manual`] one a test moves
//! by hand — and the checked arithmetic every time computed from user input goes through (a
//! duration too long to represent is an error or the latest time, never an overflow panic).
//!
//! Every time the engine reads (a turn's `ctx.now()`, when a timer or a scheduled signal is
//! due, lease deadlines, creation times) comes from the [`Clock`] of its store
//! (`Store::clock`), so a store on a manual clock makes a 30-day timer
//! fire the moment the test moves the clock past it. Orchestrator code never reads a clock
//! itself: it reads the turn's recorded time (`ctx.now()`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::error::Error;

/// The current system time, truncated to milliseconds (the precision stores keep).
pub(crate) fn now_millis() -> DateTime<Utc> {
    truncate_millis(Utc::now())
}

/// `time` truncated to milliseconds (the precision stores keep).
pub(crate) fn truncate_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

/// Where the engine reads the time: the system clock (the default), or a manual clock that
/// stands still until it is moved ([`advance`](Self::advance), [`advance_to`](Self::advance_to)).
///
/// Clones share the time: moving one moves them all, and wakes everything sleeping on it.
///
/// ```
/// use std::time::Duration;
/// use duractor::clock::Clock;
///
/// let start = "2026-01-01T00:00:00Z".parse().unwrap();
/// let clock = Clock::manual(start);
/// clock.advance(Duration::from_secs(30 * 86_400)).unwrap();
/// assert_eq!(clock.now().to_rfc3339(), "2026-01-31T00:00:00+00:00");
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<watch::Sender<DateTime<Utc>>>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(time) => write!(f, "Clock::manual({})", *time.borrow()),
        }
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `start` (truncated to milliseconds) until it is moved.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(watch::Sender::new(truncate_millis(start)))),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// The current time, in milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => now_millis(),
            Some(time) => *time.borrow(),
        }
    }

    /// Moves a manual clock forward by `by` and returns the new time. Fails for the system
    /// clock, and when the new time would be past [`latest_timer_time`].
    pub fn advance(&self, by: Duration) -> Result<DateTime<Utc>, Error> {
        let to = checked_after(self.now(), by).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cannot advance the clock by {by:?}: that is past {}, the latest time duractor keeps",
                latest_timer_time()
            ))
        })?;
        self.advance_to(to)
    }

    /// Moves a manual clock forward to `to` (a time at or before now leaves it where it is:
    /// time never goes back) and returns the new time. Fails for the system clock.
    pub fn advance_to(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
        let Some(time) = &self.manual else {
            return Err(Error::InvalidArgument(
                "the system clock cannot be moved; use `Clock::manual` (or the test kit, \
                 `duractor::testing`) for a clock a test controls"
                    .to_owned(),
            ));
        };
        let to = truncate_millis(to);
        time.send_if_modified(|now| {
            let later = to > *now;
            if later {
                *now = to;
            }
            later
        });
        Ok(*time.borrow())
    }

    /// Sleeps until the clock reads `at` or later: real time for the system clock; for a
    /// manual clock, until it is moved there. On the system clock it may wake up to a
    /// millisecond late (tokio's timers tick in whole milliseconds and round a deadline up
    /// to the next tick); [`sleep_until_precisely`](Self::sleep_until_precisely) does not.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        match &self.manual {
            None => {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
            }
            Some(time) => until_moved_to(time, at).await,
        }
    }

    /// Like [`sleep_until`](Self::sleep_until), but on the system clock it wakes within a
    /// fraction of a millisecond of `at`: the last 2 ms are slept on a blocking thread, whose
    /// sleep ends within tens of microseconds — or by tokio's timer, if that thread cannot
    /// start at once (a busy blocking pool). For waits whose lateness is the cost, such as a
    /// durable timer's wake-up (a 1 ms timer otherwise costs up to 2 ms); it takes a blocking
    /// thread for up to 2 ms, so not for every deadline of a busy worker.
    pub async fn sleep_until_precisely(&self, at: DateTime<Utc>) {
        match &self.manual {
            None => {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                if wait > PRECISE_TAIL {
                    tokio::time::sleep(wait - PRECISE_TAIL).await;
                }
                let rest = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                if rest.is_zero() {
                    return;
                }
                // The thread sleeps until a fixed instant, so time it spent queued counts.
                let until = std::time::Instant::now() + rest;
                let precise = tokio::task::spawn_blocking(move || {
                    std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
                });
                tokio::select! {
                    _ = precise => {}
                    () = tokio::time::sleep(rest) => {}
                }
            }
            Some(time) => until_moved_to(time, at).await,
        }
    }
}

/// Waits until the manual clock `time` is moved to `at` or later.
async fn until_moved_to(time: &watch::Sender<DateTime<Utc>>, at: DateTime<Utc>) {
    let mut changes = time.subscribe();
    // The sender lives as long as this clock: `wait_for` only ends when it holds.
    let _ = changes.wait_for(|now| *now >= at).await;
}

/// How much of a wait on the system clock [`Clock::sleep_until_precisely`] sleeps on a blocking thread
/// instead of tokio's millisecond timer wheel.
const PRECISE_TAIL: Duration = Duration::from_millis(2);

/// The latest time a durable timer or a scheduled signal can have: the end of the year
/// 9999, the last time RFC 3339 writes with four digits. Later times are refused with an
/// error instead of overflowing.
pub fn latest_timer_time() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(253_402_300_799_999).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + duration`, if that is no later than [`latest_timer_time`].
pub(crate) fn checked_after(at: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
    let delta = chrono::Duration::from_std(duration).ok()?;
    at.checked_add_signed(delta)
        .filter(|later| *later <= latest_timer_time())
}

/// `at + duration`, or [`latest_timer_time`] if that is later (for settings such as lease
/// lengths, where "longer than anything" means "as long as possible").
pub(crate) fn saturating_after(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    checked_after(at, duration).unwrap_or_else(latest_timer_time)
}

/// Parses a duration such as `30s`, `5m`, `1h30m`, `2d` or `250ms` (units `ms`, `s`, `m`,
/// `h`, `d`, combinable); the error says what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("a duration must not be empty; write e.g. 30s, 5m or 1h30m".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{trimmed}` is not a duration; write e.g. 30s, 5m or 1h30m (units ms, s, m, h, d)"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{trimmed}` is too long a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{trimmed}` has a number without a unit; add one of ms, s, m, h, d"
                ));
            }
            unit => {
                return Err(format!(
                    "`{unit}` in `{trimmed}` is not a unit; use ms, s, m, h or d"
                ));
            }
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{trimmed}` is too long a duration"))?;
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arithmetic_never_overflows() {
        let now = now_millis();
        assert!(checked_after(now, Duration::MAX).is_none());
        assert!(checked_after(now, Duration::from_secs(u64::MAX)).is_none());
        assert_eq!(
            checked_after(now, Duration::from_secs(1)),
            Some(now + chrono::Duration::seconds(1))
        );
        assert_eq!(saturating_after(now, Duration::MAX), latest_timer_time());
        assert_eq!(
            latest_timer_time().to_rfc3339(),
            "9999-12-31T23:59:59.999+00:00"
        );
    }

    #[test]
    fn a_manual_clock_moves_only_forward_and_only_when_told() {
        let start = DateTime::from_timestamp_millis(1_000).unwrap();
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        assert_eq!(
            shared.advance(Duration::from_secs(1)).unwrap(),
            DateTime::from_timestamp_millis(2_000).unwrap()
        );
        assert_eq!(clock.now(), DateTime::from_timestamp_millis(2_000).unwrap());
        assert_eq!(clock.advance_to(start).unwrap(), clock.now(), "never back");
        let err = clock.advance(Duration::MAX).unwrap_err().to_string();
        assert!(err.contains("cannot advance the clock"), "{err}");
        let err = Clock::system().advance(Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("cannot be moved"), "{err}");
    }

    #[tokio::test]
    async fn sleeping_on_a_manual_clock_ends_when_it_is_moved_there() {
        let clock = Clock::manual(DateTime::from_timestamp_millis(0).unwrap());
        let due = DateTime::from_timestamp_millis(86_400_000).unwrap();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(due).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3_600)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "an hour is not a day");
        clock.advance(Duration::from_secs(86_400)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the move")
            .unwrap();
    }
}

//! Wall-clock time for the runtime and the client, and the checked arithmetic every time
//! computed from user input goes through (a duration too long to represent is an error or
//! the latest time, never an overflow panic).
//!
//! Orchestrator code never reads this clock: it reads the turn's recorded time
//! (`ctx.now()`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The current time, truncated to milliseconds (the precision stores keep).
pub(crate) fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

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
}

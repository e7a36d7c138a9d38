//! Bounds on an activity call: [`ActivityTimeouts`] (start-to-close, schedule-to-close,
//! heartbeat) and [`ActivityOptions`], the timeouts and retry policy of one call.
//!
//! * **start-to-close** bounds one attempt, from the moment a worker starts it: when it
//!   elapses, the worker cancels the attempt (the activity's
//!   [`ActivityContext::cancelled`](crate::ActivityContext::cancelled) fires) and records a
//!   failure of kind `"start_to_close_timeout"`, which retry policies retry;
//! * **heartbeat** bounds the time between two
//!   [`ActivityContext::heartbeat`](crate::ActivityContext::heartbeat) calls of a running
//!   attempt (kind `"heartbeat_timeout"`, retriable);
//! * **schedule-to-close** bounds the whole call, every attempt and every wait between them
//!   included: the orchestration arms a durable timer, and when it fires first the attempt in
//!   flight is cancelled and the call fails for good (kind `"schedule_to_close_timeout"`).
//!
//! A result that an attempt returns after it timed out is ignored: history records one result
//! per attempt. Durations must be at least 1 ms and at most [`MAX_TIMEOUT`].

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::retry::RetryPolicy;

/// The longest timeout accepted (366 days): a longer one is almost certainly a unit mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);

/// The failure kind of an attempt stopped by its start-to-close timeout.
pub const START_TO_CLOSE_TIMEOUT: &str = "start_to_close_timeout";
/// The failure kind of an attempt stopped because it stopped heartbeating.
pub const HEARTBEAT_TIMEOUT: &str = "heartbeat_timeout";
/// The failure kind of a call stopped by its schedule-to-close timeout.
pub const SCHEDULE_TO_CLOSE_TIMEOUT: &str = "schedule_to_close_timeout";
/// The failure kind of an attempt that was cancelled (its orchestration no longer needs it).
pub const CANCELLED: &str = "cancelled";

/// The timeouts of an activity call; `None` means unbounded. An activity's defaults come from
/// `#[activity(start_to_close = "30s", heartbeat_timeout = "10s", schedule_to_close = "5m")]`;
/// [`ActivityOptions`] overrides them per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityTimeouts {
    /// The longest one attempt may run.
    pub start_to_close: Option<Duration>,
    /// The longest the whole call may take, retries and their waits included.
    pub schedule_to_close: Option<Duration>,
    /// The longest a running attempt may go without a heartbeat.
    pub heartbeat_timeout: Option<Duration>,
}

impl ActivityTimeouts {
    /// No timeouts.
    pub const NONE: ActivityTimeouts = ActivityTimeouts {
        start_to_close: None,
        schedule_to_close: None,
        heartbeat_timeout: None,
    };

    /// Built by `#[activity(..)]` from its checked arguments, in milliseconds (0: unset).
    #[doc(hidden)]
    pub const fn __from_millis(
        start_to_close: u64,
        schedule_to_close: u64,
        heartbeat: u64,
    ) -> Self {
        const fn some(ms: u64) -> Option<Duration> {
            if ms == 0 {
                None
            } else {
                Some(Duration::from_millis(ms))
            }
        }
        ActivityTimeouts {
            start_to_close: some(start_to_close),
            schedule_to_close: some(schedule_to_close),
            heartbeat_timeout: some(heartbeat),
        }
    }

    /// These timeouts, each replaced by `other`'s where `other` sets one.
    pub fn overridden_by(self, other: ActivityTimeouts) -> ActivityTimeouts {
        ActivityTimeouts {
            start_to_close: other.start_to_close.or(self.start_to_close),
            schedule_to_close: other.schedule_to_close.or(self.schedule_to_close),
            heartbeat_timeout: other.heartbeat_timeout.or(self.heartbeat_timeout),
        }
    }

    /// Checks every timeout set: at least 1 ms and at most [`MAX_TIMEOUT`].
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("start-to-close", self.start_to_close),
            ("schedule-to-close", self.schedule_to_close),
            ("heartbeat", self.heartbeat_timeout),
        ] {
            if let Some(duration) = value {
                check_timeout(name, duration)?;
            }
        }
        Ok(())
    }
}

/// Checks one timeout: at least 1 ms and at most [`MAX_TIMEOUT`].
pub fn check_timeout(name: &str, duration: Duration) -> Result<(), Error> {
    if duration < Duration::from_millis(1) {
        return Err(Error::InvalidArgument(format!(
            "the {name} timeout is {duration:?}; a timeout must be at least 1 ms (leave it unset for no timeout)"
        )));
    }
    if duration > MAX_TIMEOUT {
        return Err(Error::InvalidArgument(format!(
            "the {name} timeout is {duration:?}, longer than the most allowed ({} days); \
             check its unit, or leave it unset for no timeout",
            MAX_TIMEOUT.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// The options of one activity call: timeouts (over the activity's defaults) and a retry
/// policy. Pass them to
/// [`OrchestrationContext::call_activity_with`](crate::OrchestrationContext::call_activity_with).
///
/// ```
/// use duractor::{ActivityOptions, RetryPolicy};
/// use std::time::Duration;
///
/// let options = ActivityOptions::new()
///     .start_to_close(Duration::from_secs(30))      // each attempt
///     .heartbeat_timeout(Duration::from_secs(10))   // between two heartbeats
///     .schedule_to_close(Duration::from_secs(600))  // the whole call
///     .retry(RetryPolicy::new(5, Duration::from_secs(1)));
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct ActivityOptions {
    pub(crate) timeouts: ActivityTimeouts,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) priority: i32,
}

impl fmt::Debug for ActivityOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityOptions")
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("priority", &self.priority)
            .finish()
    }
}

impl ActivityOptions {
    /// No options: the activity's defaults, one attempt.
    pub fn new() -> Self {
        ActivityOptions::default()
    }

    /// Bounds each attempt, from when a worker starts it.
    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.timeouts.start_to_close = Some(timeout);
        self
    }

    /// Bounds the whole call: every attempt and every wait between them.
    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.timeouts.schedule_to_close = Some(timeout);
        self
    }

    /// Fails an attempt that goes this long without calling `ctx.heartbeat(..)`.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.heartbeat_timeout = Some(timeout);
        self
    }

    /// Retries failed attempts (timeouts included) as `policy` says.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Its priority among work waiting for a flow-control limit (see [`crate::flow`]):
    /// higher is claimed first, equal ones oldest first (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The timeouts set on these options (not the activity's defaults).
    pub fn timeouts(&self) -> ActivityTimeouts {
        self.timeouts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_absurd_timeouts_are_refused_by_name() {
        let zero = ActivityTimeouts {
            start_to_close: Some(Duration::ZERO),
            ..ActivityTimeouts::NONE
        };
        let error = zero.validate().unwrap_err().to_string();
        assert!(
            error.contains("the start-to-close timeout is 0ns"),
            "{error}"
        );
        assert!(error.contains("at least 1 ms"), "{error}");
        let huge = ActivityTimeouts {
            heartbeat_timeout: Some(Duration::from_secs(400 * 86_400)),
            ..ActivityTimeouts::NONE
        };
        let error = huge.validate().unwrap_err().to_string();
        assert!(error.contains("the heartbeat timeout is"), "{error}");
        assert!(error.contains("366 days"), "{error}");
        assert!(
            ActivityTimeouts::__from_millis(1, 0, 86_400_000)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn call_options_override_the_activity_defaults_one_by_one() {
        let defaults = ActivityTimeouts::__from_millis(30_000, 0, 5_000);
        let call = ActivityOptions::new().start_to_close(Duration::from_secs(2));
        let merged = defaults.overridden_by(call.timeouts());
        assert_eq!(merged.start_to_close, Some(Duration::from_secs(2)));
        assert_eq!(merged.heartbeat_timeout, Some(Duration::from_secs(5)));
        assert_eq!(merged.schedule_to_close, None);
    }
}

//! Retry policies for activities and sub-orchestrations.
//!
//! A retry is orchestration code like any other: the waits between attempts are durable
//! timers recorded in history, so a crash in the middle of a backoff resumes the wait where it
//! was, and every replay makes the same attempts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// When and how often to retry a failed call.
///
/// ```
/// use duractor::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new(5, Duration::from_secs(1)) // up to 5 attempts, 1 s apart at first
///     .backoff_coefficient(2.0)                             // then 2 s, 4 s, …
///     .max_interval(Duration::from_secs(30))
///     .timeout(Duration::from_secs(300))                    // give up after 5 minutes overall
///     .retry_if(|error| !error.to_string().contains("card declined"));
/// # let _ = policy;
/// ```
///
/// Errors marked non-retriable ([`Error::non_retriable`]) are never retried.
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    first_interval: Duration,
    backoff_coefficient: f64,
    max_interval: Duration,
    timeout: Option<Duration>,
    predicate: Option<RetryPredicate>,
}

/// Decides whether an error is worth retrying.
type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("first_interval", &self.first_interval)
            .field("backoff_coefficient", &self.backoff_coefficient)
            .field("max_interval", &self.max_interval)
            .field("timeout", &self.timeout)
            .field("retry_if", &self.predicate.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (the first call included), waiting
    /// `first_interval` before the first retry. The backoff coefficient is 1 (constant waits)
    /// unless set.
    pub fn new(max_attempts: u32, first_interval: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            first_interval,
            backoff_coefficient: 1.0,
            max_interval: Duration::from_secs(24 * 3600),
            timeout: None,
            predicate: None,
        }
    }

    /// Multiplies the wait by this factor after each retry (values below 1 are treated as 1).
    pub fn backoff_coefficient(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = if coefficient.is_finite() {
            coefficient.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The longest wait between two attempts.
    pub fn max_interval(mut self, max_interval: Duration) -> Self {
        self.max_interval = max_interval;
        self
    }

    /// Gives up when the next attempt would start later than this after the first one.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries only errors for which `predicate` returns true (and that are retriable).
    pub fn retry_if(mut self, predicate: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// The most attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay_before(&self, retry: u32) -> Duration {
        let factor = self
            .backoff_coefficient
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let delay = self.first_interval.as_secs_f64() * factor;
        if !delay.is_finite() || delay >= self.max_interval.as_secs_f64() {
            self.max_interval
        } else {
            Duration::try_from_secs_f64(delay).unwrap_or(self.max_interval)
        }
    }

    /// Whether to retry after `error` on attempt `attempt` (1-based), `elapsed` after the
    /// first attempt started, given the wait that would come next.
    pub(crate) fn should_retry(
        &self,
        error: &Error,
        attempt: u32,
        elapsed: Duration,
        next_wait: Duration,
    ) -> bool {
        if attempt >= self.max_attempts || !error.is_retriable() {
            return false;
        }
        if let Some(timeout) = self.timeout
            && elapsed + next_wait > timeout
        {
            return false;
        }
        self.predicate
            .as_ref()
            .is_none_or(|predicate| predicate(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100))
            .backoff_coefficient(2.0)
            .max_interval(Duration::from_millis(500));
        let delays: Vec<u128> = (1..=5)
            .map(|r| policy.delay_before(r).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn stops_at_max_attempts_timeout_and_non_retriable_errors() {
        let policy = RetryPolicy::new(3, Duration::from_secs(1)).timeout(Duration::from_secs(10));
        let error = Error::msg("boom");
        let second = Duration::from_secs(1);
        assert!(policy.should_retry(&error, 1, Duration::ZERO, second));
        assert!(!policy.should_retry(&error, 3, Duration::ZERO, second));
        assert!(!policy.should_retry(&error, 1, Duration::from_secs(9) + second, second));
        assert!(!policy.should_retry(&Error::non_retriable("no"), 1, Duration::ZERO, second));
        let picky = policy.retry_if(|e| e.to_string().contains("transient"));
        assert!(!picky.should_retry(&error, 1, Duration::ZERO, second));
        assert!(picky.should_retry(&Error::msg("transient glitch"), 1, Duration::ZERO, second));
    }
}

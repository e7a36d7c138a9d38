//! Which activities are quick: those whose attempts finish in their first poll, in
//! microseconds. A call of a quick activity kept in memory runs that first poll on the thread
//! of the instance that scheduled it (the runtime's), and its result goes back without the
//! two hops to the activity worker's thread and back; an attempt that is not done after it
//! goes on there, and the worker keeps its books (see "Quick activities" in
//! docs/architecture.md).
//!
//! An activity becomes quick once [`PROMOTE_AFTER`] attempts in a row finished in a first
//! poll shorter than [`QUICK_POLL`] on the worker. It stops being quick when an attempt on
//! the runtime's thread is not done after its first poll or took longer than [`QUICK_POLL`]
//! (it starts counting again), and for good the second time one held that thread for
//! [`BLOCKED`] or longer: a function that blocks stalls every instance of its worker at most
//! twice, and one whose thread was once preempted for a millisecond in a microsecond's work
//! (a busy machine) is not sent away for good for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Attempts in a row, each done in a quick first poll on the worker, that make an activity
/// quick.
pub(super) const PROMOTE_AFTER: u32 = 8;

/// The longest first poll that counts as quick.
pub(super) const QUICK_POLL: Duration = Duration::from_micros(50);

/// A first poll on the runtime's thread at least this long is a strike; the second makes
/// its activity slow for the rest of the process.
pub(super) const BLOCKED: Duration = Duration::from_millis(1);

/// The bit of a count that says the activity blocked the runtime's thread once.
const STRUCK: u32 = 1 << 31;

/// How long one turn's hand-out of calls may spend running quick calls on the runtime's
/// thread: a fan-out's calls beyond it go to the activity worker, which runs them beside
/// the instances' turns instead of every instance waiting for all of them.
pub(super) const DISPATCH_BUDGET: Duration = Duration::from_micros(200);

/// The count of an activity that is never quick again.
const NEVER: u32 = u32::MAX;

/// How an attempt's first poll went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FirstPoll {
    /// The attempt finished in it.
    pub(super) done: bool,
    /// How long it took.
    pub(super) took: Duration,
}

impl FirstPoll {
    fn quick(self) -> bool {
        self.done && self.took <= QUICK_POLL
    }
}

/// Per activity, the quick first polls in a row seen on the worker, with [`STRUCK`] once it
/// blocked the runtime's thread (or [`NEVER`]).
#[derive(Debug, Default)]
pub(super) struct QuickActivities {
    counts: HashMap<String, AtomicU32>,
}

impl QuickActivities {
    /// Tracks the given activities (others are never quick); none is quick yet. With
    /// `enabled` false, none ever is ([`RuntimeBuilder::quick_activities`](super::RuntimeBuilder::quick_activities)).
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>, enabled: bool) -> Self {
        if !enabled {
            return QuickActivities::default();
        }
        let counts = names
            .into_iter()
            .map(|name| (name.to_owned(), AtomicU32::new(0)))
            .collect();
        QuickActivities { counts }
    }

    /// Whether a call of `name` runs its first poll on the runtime's thread.
    pub(super) fn is_quick(&self, name: &str) -> bool {
        self.counts.get(name).is_some_and(|count| {
            let count = count.load(Ordering::Relaxed);
            count != NEVER && count & !STRUCK >= PROMOTE_AFTER
        })
    }

    /// An attempt on the activity worker: a quick first poll counts towards making the
    /// activity quick, any other starts the count again.
    pub(super) fn on_worker(&self, name: &str, poll: FirstPoll) {
        let Some(count) = self.counts.get(name) else {
            return;
        };
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| match count {
            NEVER => None,
            _ if poll.quick() => {
                Some((count & STRUCK) | ((count & !STRUCK) + 1).min(PROMOTE_AFTER))
            }
            _ => Some(count & STRUCK),
        });
    }

    /// An attempt on the runtime's thread: one that was not quick makes the activity slow
    /// (counting again); the second that blocked makes it slow for good. Says whether it was
    /// not quick.
    pub(super) fn on_runtime_thread(&self, name: &str, poll: FirstPoll) -> bool {
        let Some(count) = self.counts.get(name) else {
            return false;
        };
        if poll.quick() {
            return false;
        }
        let blocked = poll.took >= BLOCKED;
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| match count {
            NEVER => None,
            _ if blocked && count & STRUCK != 0 => Some(NEVER),
            _ if blocked => Some(STRUCK),
            _ => Some(count & STRUCK),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> FirstPoll {
        FirstPoll {
            done: true,
            took: Duration::from_micros(3),
        }
    }

    /// `times` quick attempts of "hello" on the worker.
    fn quick_on_worker(activities: &QuickActivities, times: u32) {
        for _ in 0..times {
            activities.on_worker("hello", quick());
        }
    }

    fn promoted() -> QuickActivities {
        let activities = QuickActivities::new(["hello"], true);
        quick_on_worker(&activities, PROMOTE_AFTER);
        activities
    }

    #[test]
    fn an_activity_is_quick_after_enough_quick_attempts_in_a_row() {
        let activities = QuickActivities::new(["hello"], true);
        quick_on_worker(&activities, PROMOTE_AFTER - 1);
        assert!(!activities.is_quick("hello"));
        // A slow first poll starts the count again.
        activities.on_worker(
            "hello",
            FirstPoll {
                done: true,
                took: QUICK_POLL * 2,
            },
        );
        activities.on_worker("hello", quick());
        assert!(!activities.is_quick("hello"));
        quick_on_worker(&activities, PROMOTE_AFTER - 1);
        assert!(activities.is_quick("hello"));
        assert!(
            !activities.is_quick("other"),
            "an unknown activity is never quick"
        );
    }

    #[test]
    fn an_attempt_not_done_in_its_first_poll_starts_the_count_again() {
        let activities = promoted();
        let pending = FirstPoll {
            done: false,
            took: Duration::from_micros(2),
        };
        assert!(!activities.on_runtime_thread("hello", quick()));
        assert!(activities.is_quick("hello"));
        assert!(activities.on_runtime_thread("hello", pending));
        assert!(!activities.is_quick("hello"));
        quick_on_worker(&activities, PROMOTE_AFTER);
        assert!(activities.is_quick("hello"));
        // Pending on the worker too.
        activities.on_worker("hello", pending);
        assert!(!activities.is_quick("hello"));
    }

    #[test]
    fn the_second_attempt_that_blocked_the_runtime_thread_makes_its_activity_slow_for_good() {
        let activities = promoted();
        let blocked = FirstPoll {
            done: true,
            took: BLOCKED,
        };
        assert!(activities.on_runtime_thread("hello", blocked));
        assert!(!activities.is_quick("hello"));
        // The first strike only starts the count again, and a slow poll keeps the strike.
        quick_on_worker(&activities, PROMOTE_AFTER);
        assert!(activities.is_quick("hello"));
        let slow = FirstPoll {
            done: true,
            took: QUICK_POLL * 2,
        };
        assert!(activities.on_runtime_thread("hello", slow));
        quick_on_worker(&activities, PROMOTE_AFTER);
        assert!(activities.is_quick("hello"));
        assert!(activities.on_runtime_thread("hello", blocked));
        quick_on_worker(&activities, PROMOTE_AFTER * 2);
        assert!(!activities.is_quick("hello"));
    }

    #[test]
    fn disabled_none_is_ever_quick() {
        let activities = QuickActivities::new(["hello"], false);
        quick_on_worker(&activities, PROMOTE_AFTER);
        assert!(!activities.is_quick("hello"));
    }
}

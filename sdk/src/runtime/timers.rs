//! Timers the store holds for this worker ([`TurnCommit::hold_timers`]): delivered from
//! memory at their due time instead of claimed then.
//!
//! The dispatcher keeps them and wakes up for the earliest; the instance actors, on the same
//! thread, drop the ones their turns cancel. A timer leaves the set when it is delivered,
//! cancelled, or its instance is let go (then it is an ordinary queued timer again).
//!
//! [`TurnCommit::hold_timers`]: crate::store::TurnCommit::hold_timers

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use chrono::{DateTime, Utc};

use crate::history::Event;
use crate::store::OrchestrationMessage;

/// The held timers of one worker, shared by its dispatcher and instance actors (one thread).
pub(super) type SharedTimers = Rc<RefCell<HeldTimers>>;

/// Held timers by due time and by instance.
#[derive(Debug, Default)]
pub(super) struct HeldTimers {
    /// (due, message id), earliest first.
    by_due: BTreeSet<(DateTime<Utc>, i64)>,
    /// The timers by message id.
    timers: HashMap<i64, Held>,
    /// The message ids of each instance's timers.
    by_instance: HashMap<String, HashSet<i64>>,
}

/// One held timer.
#[derive(Debug)]
struct Held {
    due: DateTime<Utc>,
    seq: u64,
    message: OrchestrationMessage,
}

impl HeldTimers {
    /// Holds a `TimerFired` message until its `fire_at` (anything else is ignored).
    pub(super) fn hold(&mut self, message: OrchestrationMessage) {
        let Event::TimerFired { seq, fire_at } = message.event else {
            return;
        };
        if self.timers.contains_key(&message.id) {
            return;
        }
        self.by_due.insert((fire_at, message.id));
        self.by_instance
            .entry(message.instance_id.clone())
            .or_default()
            .insert(message.id);
        self.timers.insert(
            message.id,
            Held {
                due: fire_at,
                seq,
                message,
            },
        );
    }

    /// The earliest due time, if any timer is held.
    pub(super) fn next_due(&self) -> Option<DateTime<Utc>> {
        self.by_due.first().map(|(due, _)| *due)
    }

    /// Takes the timers due at `now`, earliest first.
    pub(super) fn take_due(&mut self, now: DateTime<Utc>) -> Vec<OrchestrationMessage> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.by_due.first() {
            if at > now {
                break;
            }
            self.by_due.pop_first();
            if let Some(held) = self.remove(id) {
                due.push(held.message);
            }
        }
        due
    }

    /// Takes an instance's timers due at `now`.
    pub(super) fn take_due_of(
        &mut self,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<OrchestrationMessage> {
        let due: Vec<i64> = self
            .ids_of(instance_id)
            .filter(|id| self.timers.get(id).is_some_and(|held| held.due <= now))
            .collect();
        due.into_iter()
            .filter_map(|id| self.remove(id))
            .map(|held| held.message)
            .collect()
    }

    /// Removes the timer with message `id`; whether it was still held (not delivered yet).
    pub(super) fn cancel(&mut self, id: i64) -> bool {
        self.remove(id).is_some()
    }

    /// Removes the timer with message `id` from every index.
    fn remove(&mut self, id: i64) -> Option<Held> {
        let held = self.timers.remove(&id)?;
        self.by_due.remove(&(held.due, id));
        if let Some(ids) = self.by_instance.get_mut(&held.message.instance_id) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_instance.remove(&held.message.instance_id);
            }
        }
        Some(held)
    }

    /// The message ids of an instance's timers.
    fn ids_of(&self, instance_id: &str) -> impl Iterator<Item = i64> + '_ {
        self.by_instance
            .get(instance_id)
            .into_iter()
            .flatten()
            .copied()
    }

    /// The held timers of an instance: message id, seq and execution of each.
    pub(super) fn of_instance(&self, instance_id: &str) -> Vec<(i64, u64, Option<u32>)> {
        self.ids_of(instance_id)
            .filter_map(|id| {
                let held = self.timers.get(&id)?;
                Some((id, held.seq, held.message.execution))
            })
            .collect()
    }

    /// Removes an instance's held timers (it was let go, or it ended) and returns their due
    /// times.
    pub(super) fn remove_instance(&mut self, instance_id: &str) -> Vec<DateTime<Utc>> {
        let ids: Vec<i64> = self.ids_of(instance_id).collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id))
            .map(|held| held.due)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(id: i64, instance_id: &str, seq: u64, at_ms: i64) -> OrchestrationMessage {
        OrchestrationMessage {
            id,
            instance_id: instance_id.into(),
            event: Event::TimerFired {
                seq,
                fire_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
            },
            execution: Some(0),
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_once() {
        let mut timers = HeldTimers::default();
        timers.hold(timer(2, "a", 0, 300));
        timers.hold(timer(1, "b", 0, 100));
        timers.hold(timer(3, "a", 1, 200));
        assert_eq!(timers.next_due(), Some(at(100)));
        let ids = |v: Vec<OrchestrationMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(timers.take_due(at(99))), Vec::<i64>::new());
        assert_eq!(ids(timers.take_due(at(200))), [1, 3]);
        assert_eq!(timers.next_due(), Some(at(300)));
        assert_eq!(ids(timers.take_due(at(1_000))), [2]);
        assert!(timers.take_due(at(2_000)).is_empty());
        assert_eq!(timers.next_due(), None);
    }

    #[test]
    fn a_cancelled_timer_is_not_delivered_and_a_delivered_one_cannot_be_cancelled() {
        let mut timers = HeldTimers::default();
        timers.hold(timer(1, "a", 0, 100));
        timers.hold(timer(2, "a", 1, 100));
        assert!(timers.cancel(1));
        assert!(!timers.cancel(1));
        let due = timers.take_due(at(100));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, 2);
        assert!(!timers.cancel(2), "already delivered");
    }

    #[test]
    fn letting_an_instance_go_returns_its_due_times_and_keeps_the_others() {
        let mut timers = HeldTimers::default();
        timers.hold(timer(1, "a", 0, 100));
        timers.hold(timer(2, "b", 0, 150));
        timers.hold(timer(3, "a", 4, 200));
        let mut of_a = timers.of_instance("a");
        of_a.sort_unstable();
        assert_eq!(of_a, [(1, 0, Some(0)), (3, 4, Some(0))]);
        assert!(timers.take_due_of("a", at(99)).is_empty());
        let due = timers.take_due_of("a", at(100));
        assert_eq!(due.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);
        timers.hold(timer(1, "a", 0, 100));
        let mut dues = timers.remove_instance("a");
        dues.sort_unstable();
        assert_eq!(dues, [at(100), at(200)]);
        assert_eq!(timers.next_due(), Some(at(150)));
        assert!(timers.of_instance("a").is_empty());
        timers.cancel(2);
        assert!(timers.by_instance.is_empty() && timers.by_due.is_empty());
    }

    #[test]
    fn other_messages_are_not_held() {
        let mut timers = HeldTimers::default();
        timers.hold(OrchestrationMessage {
            id: 1,
            instance_id: "a".into(),
            event: Event::EventRaised {
                name: "x".into(),
                data: crate::Payload::from_json("1").unwrap(),
            },
            execution: None,
        });
        assert_eq!(timers.next_due(), None);
    }
}

//! Batches planned on assumptions instead of a read: the common turn (an instance this
//! worker holds appends events, consumes what it was given, schedules work and timers for
//! itself) needs no locking read before its writes when one statement both writes and checks
//! what the plan assumed, failing as a whole if any assumption was wrong. On PostgreSQL that
//! makes such a turn one round trip (the statement commits on its own) instead of four
//! (`BEGIN`, the locking read, the writes, `COMMIT`). A start of a new instance id (not held
//! by flow control) qualifies too: its guard is that the id is free.
//!
//! [`assume`] decides whether a batch qualifies and returns the [`State`] the plan is built
//! on together with the [`Guards`] that state stands for; the backend's statement checks the
//! guards against the rows it changes. A batch whose guards fail is run again the ordinary
//! way, which reads the rows and answers each op exactly (conflict, reload, not found).

use std::collections::HashSet;

use duractor::RuntimeStatus;

use super::ops::Op;
use super::plan::{InstanceState, State};

/// What a guarded batch assumes of the rows its turns touch: all of it must hold when its
/// statement runs, or the statement must write nothing.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Guards {
    /// The worker running every turn of the batch.
    pub(crate) owner: String,
    /// Each turn's instance and the history length it expects; the instance's lease must be
    /// the owner's, lapsed, or nobody's.
    pub(crate) instances: Vec<(String, i64)>,
    /// Queue messages the turns consume: each must exist and be leased to the owner.
    pub(crate) consumed: Vec<i64>,
    /// Activity work items whose results the turns consume: each must exist and be leased to
    /// the owner.
    pub(crate) completed: Vec<i64>,
    /// Instances the batch creates: no instance may have their ids (a taken id, running or
    /// finished, is the ordinary path's to refuse or replace).
    pub(crate) absent: Vec<String>,
}

/// Whether `ops` can be planned without reading the rows they touch, and if so the state to
/// plan them on (the rows as the guards assume them; the caller reserves the queue ids,
/// [`ids_needed`](super::ids_needed) of them, with [`State::reserve`]) and the guards.
///
/// A batch qualifies when every op is a turn or a start (or a turn starting its instance,
/// [`TurnCommit::create`](duractor::store::TurnCommit::create)), each of a different instance, and
/// no turn reaches beyond its own instance: no sub-orchestrations, no messages to other
/// instances (their existence would need a read), no entity state, no history reset; all
/// turns are by one owner; no start is held by flow control. Every such op's outcome then
/// follows from the guards alone.
///
/// Only small batches qualify: at most [`MAX_ROWS`] rows of each kind (ops, events, consumed
/// messages and results, new messages and work items). A guarded batch saves round trips,
/// which a large batch shares among many ops anyway, and its statement is planned once for
/// all values, which suits short lists only.
pub(crate) fn assume(ops: &[Op]) -> Option<(State, Guards)> {
    if ops.len() > MAX_ROWS {
        return None;
    }
    let mut rows = Rows::default();
    let mut guards = Guards::default();
    let mut state = State::default();
    let mut instances = HashSet::new();
    let mut consumed = HashSet::new();
    let mut completed = HashSet::new();
    for op in ops {
        let turn = match op {
            Op::Turn { turn, .. } => turn,
            Op::Create { instance, .. } => {
                if instance.flow.is_some() || !instances.insert(instance.instance_id.as_str()) {
                    return None;
                }
                rows.messages += 1;
                guards.absent.push(instance.instance_id.clone());
                continue;
            }
            _ => return None,
        };
        if guards.owner.is_empty() {
            guards.owner = turn.owner.clone();
        }
        let plain = turn.owner == guards.owner
            && !turn.owner.is_empty()
            && !turn.reset_history
            && turn.entity.is_none()
            && turn.new_instances.is_empty()
            && turn
                .messages
                .iter()
                .all(|m| m.instance_id == turn.instance_id)
            && instances.insert(turn.instance_id.as_str());
        if !plain {
            return None;
        }
        // A message or work item listed twice is a conflict the ordinary path reports.
        if !turn.consumed.iter().all(|id| consumed.insert(*id))
            || !turn
                .completed_activities
                .iter()
                .all(|id| completed.insert(*id))
        {
            return None;
        }
        rows.events += turn.new_events.len();
        rows.consumed += turn.consumed.len() + turn.completed_activities.len();
        rows.messages += turn.messages.len();
        rows.activities += turn.activities.len();
        if let Some(instance) = &turn.create {
            // The first turn of an instance it creates: the id must be free (the plan creates
            // the row on the state, leased to the owner).
            if instance.flow.is_some() {
                return None;
            }
            guards.absent.push(instance.instance_id.clone());
            continue;
        }
        let start = i64::try_from(turn.history_start).ok()?;
        guards.instances.push((turn.instance_id.clone(), start));
        state.instances.insert(
            turn.instance_id.clone(),
            InstanceState {
                status: RuntimeStatus::Running.as_str().to_owned(),
                history_len: start,
                locked_by: Some(turn.owner.clone()),
                locked_until: None,
            },
        );
        for id in &turn.consumed {
            guards.consumed.push(*id);
            state.messages.insert(*id, Some(turn.owner.clone()));
        }
        for id in &turn.completed_activities {
            guards.completed.push(*id);
            state.items.insert(*id, Some(turn.owner.clone()));
        }
    }
    if ops.is_empty() || rows.largest() > MAX_ROWS {
        return None;
    }
    Some((state, guards))
}

/// Logs that a guarded batch did not commit and runs the ordinary way: quietly when a guard
/// did not hold (or the database was busy), as a warning for anything else.
pub(crate) fn log_fallback(error: &dyn std::fmt::Display, expected: bool) {
    if expected {
        tracing::debug!(%error, "a guarded batch was refused; running it the ordinary way");
    } else {
        tracing::warn!(%error, "a guarded batch failed; running it the ordinary way");
    }
}

/// The most rows of any kind a guarded batch may write.
pub(crate) const MAX_ROWS: usize = 16;

/// How many rows of each kind a batch writes.
#[derive(Default)]
struct Rows {
    events: usize,
    consumed: usize,
    messages: usize,
    activities: usize,
}

impl Rows {
    fn largest(&self) -> usize {
        self.events
            .max(self.consumed)
            .max(self.messages)
            .max(self.activities)
    }
}

#[cfg(test)]
mod tests {
    //! Which batches qualify, and that a plan on the assumed state writes what a plan on the
    //! same rows read from a database writes.

    use chrono::{TimeDelta, Utc};
    use duractor::store::{NewActivity, NewInstance, NewMessage, TurnCommit, TurnCommitted};
    use duractor::{Event, Payload};
    use tokio::sync::oneshot;

    use super::*;
    use crate::batch::Plan;
    use crate::batch::ops::{Lease, Reply};
    use crate::batch::plan::tests::{self as plan_tests, NOW, new_instance};
    use crate::batch::writer::{claims_apart, split_before_recreate};
    use crate::common::from_millis;

    /// A turn at history length 4 that consumes message 7 and work item 9 and schedules an
    /// activity and a timer.
    fn turn(instance_id: &str, owner: &str) -> TurnCommit {
        let now = from_millis(NOW);
        let mut turn = plan_tests::turn(instance_id, owner);
        turn.history_start = 4;
        turn.consumed = vec![7];
        turn.completed_activities = vec![9];
        turn.activities = vec![NewActivity {
            seq: 2,
            name: "work".into(),
            input: Payload::from_json("1").unwrap(),
            timeouts: Default::default(),
            deadline: None,
            heartbeat: None,
            run_here: true,
            in_memory: false,
            flow_key: None,
            priority: 0,
            attempt: 1,
        }];
        turn.messages = vec![NewMessage {
            instance_id: instance_id.to_owned(),
            visible_at: now + TimeDelta::seconds(1),
            event: Event::TimerFired {
                seq: 3,
                fire_at: now,
            },
            execution: Some(0),
        }];
        turn
    }

    fn op(
        turn: TurnCommit,
    ) -> (
        Op,
        oneshot::Receiver<Result<TurnCommitted, duractor::Error>>,
    ) {
        let (caller, answer) = oneshot::channel();
        let op = Op::Turn {
            turn: Box::new(turn),
            lease: Lease::until(Utc::now() + TimeDelta::seconds(30)),
            reply: Reply::new(caller),
        };
        (op, answer)
    }

    fn qualifies(turns: Vec<TurnCommit>) -> bool {
        let ops: Vec<Op> = turns.into_iter().map(|t| op(t).0).collect();
        assume(&ops).is_some()
    }

    /// Claims and admissions that come with turns that qualify on their own are taken out
    /// of the batch (they commit apart), so the turns keep the one-statement path; a batch
    /// that would not qualify anyway, or holds only claims, is left as it is.
    #[test]
    fn claims_leave_a_batch_whose_turns_qualify_without_them() {
        let claim = || {
            let (caller, _) = oneshot::channel();
            Op::ClaimMessages {
                owner: "w".into(),
                limit: 10,
                lease: Lease::until(Utc::now() + TimeDelta::seconds(30)),
                reply: Reply::new(caller),
            }
        };
        let admit = || {
            let (caller, _) = oneshot::channel();
            Op::Admit {
                rules: Vec::new(),
                reply: Reply::new(caller),
            }
        };
        let mut batch = vec![claim(), op(turn("a", "w")).0, admit(), claim()];
        let claims = claims_apart(&mut batch).expect("the turn qualifies on its own");
        assert_eq!(claims.len(), 3);
        assert!(claims.iter().all(Op::commits_apart));
        assert!(matches!(claims[1], Op::Admit { .. }), "in their order");
        assert!(matches!(batch.as_slice(), [Op::Turn { .. }]));

        // Turns of two owners do not qualify: the claims stay with them.
        let mut other = turn("b", "v");
        other.consumed = vec![8];
        other.completed_activities = vec![10];
        let mut batch = vec![op(turn("a", "w")).0, claim(), op(other).0];
        assert!(claims_apart(&mut batch).is_none());
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.iter().filter(|op| op.is_claim()).count(), 1);

        let mut batch = vec![claim(), claim()];
        assert!(claims_apart(&mut batch).is_none());
        assert_eq!(batch.len(), 2);
    }

    /// A start (or a turn's sub-orchestration) of an id a turn earlier in the batch commits
    /// to replaces that run: the batch is split before it, so the old run's last turn
    /// commits first (one transaction wrote it onto the new run's row).
    #[test]
    fn a_batch_splits_before_a_start_that_replaces_a_run_it_finishes() {
        let create = |id: &str| {
            let (caller, _) = oneshot::channel();
            Op::Create {
                instance: new_instance(id),
                claim: None,
                offer: false,
                reply: Reply::new(caller),
            }
        };
        let mut batch = vec![
            create("b"),
            op(turn("a", "w")).0,
            create("c"),
            create("a"),
            op(turn("c", "w")).0,
        ];
        let rest = split_before_recreate(&mut batch).expect("`a` is started again");
        assert_eq!(batch.len(), 3);
        assert!(matches!(&rest[0], Op::Create { instance, .. } if instance.instance_id == "a"));
        assert_eq!(rest.len(), 2);
        let mut rest = rest;
        assert!(
            split_before_recreate(&mut rest).is_none(),
            "a turn after a start is not split"
        );

        let mut parent = turn("p", "w");
        parent.new_instances = vec![new_instance("a")];
        let mut batch = vec![op(turn("a", "w")).0, op(parent).0];
        let rest = split_before_recreate(&mut batch).expect("the child `a` is created again");
        assert_eq!((batch.len(), rest.len()), (1, 1));

        let mut batch = vec![create("a"), op(turn("b", "w")).0, create("c")];
        assert!(split_before_recreate(&mut batch).is_none());
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn turns_that_stay_within_their_instance_qualify() {
        let mut other = turn("b", "w");
        other.consumed = vec![8];
        other.completed_activities = Vec::new();
        assert!(qualifies(vec![turn("a", "w"), other]));
        // Cancelled timers' messages are deleted unless claimed: no outcome depends on them.
        let mut cancels_timer = turn("a", "w");
        cancels_timer.cancelled_timers = vec![3];
        assert!(qualifies(vec![cancels_timer]));
        let ops = [op(turn("a", "w")).0];
        let (_, guards) = assume(&ops).unwrap();
        assert_eq!(
            guards,
            Guards {
                owner: "w".into(),
                instances: vec![("a".into(), 4)],
                consumed: vec![7],
                completed: vec![9],
                absent: Vec::new(),
            }
        );
    }

    #[test]
    fn turns_that_reach_other_rows_or_repeat_do_not_qualify() {
        let mut to_other = turn("a", "w");
        to_other.messages[0].instance_id = "b".into();
        let mut child = turn("a", "w");
        child.new_instances.push(new_instance("a:child"));
        let mut reset = turn("a", "w");
        reset.reset_history = true;
        let mut twice = turn("a", "w");
        twice.consumed = vec![7, 7];
        let mut shared = turn("b", "w");
        shared.completed_activities = vec![9];
        for turns in [
            vec![to_other],
            vec![child],
            vec![reset],
            vec![twice],
            vec![turn("a", "w"), turn("a", "w")],
            vec![turn("a", "w"), turn("b", "v")],
            vec![turn("a", "w"), shared],
            vec![],
        ] {
            assert!(!qualifies(turns));
        }
        let (enqueued, _) = oneshot::channel();
        let ops = [Op::Enqueue {
            instance_id: "a".into(),
            event: Event::TimerFired {
                seq: 1,
                fire_at: Utc::now(),
            },
            visible_at: None,
            reply: Reply::new(enqueued),
        }];
        assert!(assume(&ops).is_none());
    }

    fn create(instance: NewInstance) -> Op {
        let (caller, _) = oneshot::channel();
        Op::Create {
            instance,
            claim: Some(("w".into(), Lease::until(Utc::now()))),
            offer: false,
            reply: Reply::new(caller),
        }
    }

    #[test]
    fn only_small_batches_qualify() {
        let mut many_events = turn("a", "w");
        many_events.new_events = vec![many_events.new_events[0].clone(); MAX_ROWS + 1];
        assert!(!qualifies(vec![many_events]));
        let mut at_most = turn("a", "w");
        at_most.new_events = vec![at_most.new_events[0].clone(); MAX_ROWS];
        assert!(qualifies(vec![at_most]));
        let mut fan_out = turn("a", "w");
        fan_out.activities = vec![fan_out.activities[0].clone(); MAX_ROWS + 1];
        assert!(!qualifies(vec![fan_out]));
        let many_turns: Vec<TurnCommit> = (0..=MAX_ROWS)
            .map(|i| {
                let mut t = turn(&format!("i{i}"), "w");
                t.consumed = vec![i as i64];
                t.completed_activities = Vec::new();
                t
            })
            .collect();
        assert!(!qualifies(many_turns));
    }

    #[test]
    fn starts_of_free_ids_qualify_with_turns_unless_held_or_repeated() {
        let ops = [create(new_instance("c")), op(turn("a", "w")).0];
        let (state, guards) = assume(&ops).unwrap();
        assert_eq!(guards.absent, ["c"]);
        assert_eq!(guards.instances, [("a".to_owned(), 4)]);
        assert!(!state.instances.contains_key("c"), "the id is assumed free");

        let mut held = new_instance("c");
        held.flow = Some(duractor::store::FlowHold {
            key: None,
            priority: 0,
        });
        assert!(assume(&[create(held)]).is_none());
        assert!(assume(&[create(new_instance("c")), create(new_instance("c"))]).is_none());
        assert!(assume(&[create(new_instance("a")), op(turn("a", "w")).0]).is_none());
    }

    #[test]
    fn a_first_turn_creating_its_instance_qualifies_with_its_id_free() {
        let mut first = turn("c", "w");
        first.history_start = 0;
        first.consumed = Vec::new();
        first.completed_activities = Vec::new();
        first.create = Some(new_instance("c"));
        let ops = [op(first.clone()).0, op(turn("a", "w")).0];
        let (state, guards) = assume(&ops).unwrap();
        assert_eq!(guards.absent, ["c"]);
        assert_eq!(
            guards.instances,
            [("a".to_owned(), 4)],
            "no row to guard yet"
        );
        assert!(!state.instances.contains_key("c"), "the id is assumed free");
        // Planned on that state, it creates the row and updates it with the turn's status.
        let (mut first_op, _) = op(first.clone());
        let (mut state, _) = assume(std::slice::from_ref(&first_op)).unwrap();
        state.reserve(vec![50], vec![100]);
        let mut plan = Plan::default();
        plan.apply(&mut first_op, &mut state, crate::common::now_ms());
        assert_eq!(plan.new_instances.len(), 1);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.history.len(), first.new_events.len());

        let mut held = first;
        held.create.as_mut().unwrap().flow = Some(duractor::store::FlowHold {
            key: None,
            priority: 0,
        });
        assert!(!qualifies(vec![held]));
    }

    #[test]
    fn the_assumed_plan_writes_what_a_plan_on_the_read_rows_writes() {
        let now = crate::common::now_ms();
        let (mut assumed_op, _) = op(turn("a", "w"));
        let (mut state, _) = assume(std::slice::from_ref(&assumed_op)).unwrap();
        state.reserve(vec![50], vec![100]);
        let mut assumed = Plan::default();
        assumed.apply(&mut assumed_op, &mut state, now);

        let (mut read_op, _) = op(turn("a", "w"));
        let mut read = State::default();
        read.instances.insert(
            "a".into(),
            InstanceState {
                status: "Running".into(),
                history_len: 4,
                locked_by: Some("w".into()),
                locked_until: Some(now + 1_000),
            },
        );
        read.messages.insert(7, Some("w".into()));
        read.items.insert(9, Some("w".into()));
        read.reserve(vec![50], vec![100]);
        let mut planned = Plan::default();
        planned.apply(&mut read_op, &mut read, now);

        assert_eq!(assumed.history, planned.history);
        assert_eq!(assumed.consumed, planned.consumed);
        assert_eq!(assumed.done_items, planned.done_items);
        assert_eq!(
            serde_json::to_string(&assumed.activities).unwrap(),
            serde_json::to_string(&planned.activities).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&assumed.updates).unwrap(),
            serde_json::to_string(&planned.updates).unwrap()
        );
        // Messages differ only in the placeholder id the statement does not write.
        let without_id = |plan: &Plan| -> Vec<_> {
            plan.messages
                .iter()
                .map(|m| (m.1.clone(), m.2, m.3.clone()))
                .collect()
        };
        assert_eq!(without_id(&assumed), without_id(&planned));
        assert!(assumed.new_instances.is_empty() && assumed.new_entities.is_empty());
        let Op::Turn { reply, .. } = &assumed_op else {
            unreachable!()
        };
        assert!(matches!(reply.outcome(), Some(Ok(c)) if c.activity_ids == [100]));
    }
}

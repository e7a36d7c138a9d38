//! Turn planning: what an orchestration turn writes, as one [`TurnCommit`]. The executor says
//! what the code did ([`TurnOutput`]); this module turns that into rows — history to append,
//! activities to schedule, timer and entity messages, children to start, the parent to tell,
//! the status to show — with nothing but plain values in and out, so it is unit-tested
//! without a store or an actor. The instance actor runs the executor, calls [`plan`], and
//! commits.

use chrono::{DateTime, Utc};

use super::messages::{Inbound, queued_ids};
use crate::error::Failure;
use crate::history::{Event, ParentInstance};
use crate::orchestration::{Action, CancelTarget, Outcome, TurnOutput};
use crate::payload::Payload;
use crate::store::{NewActivity, NewInstance, NewMessage, RuntimeStatus, TurnCommit};
use crate::timeouts::ActivityTimeouts;

/// What a turn commits besides the executor's output.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// Replace the history (rewind).
    pub(super) reset_history: bool,
    /// More messages to send (rewinding children, a result resent to a parent).
    pub(super) messages: Vec<NewMessage>,
}

/// What the instance actor knows when it commits a turn.
#[derive(Debug, Clone)]
pub(super) struct Facts<'a> {
    pub(super) instance_id: &'a str,
    /// The worker committing.
    pub(super) owner: &'a str,
    /// Length of the committed history (the turn appends from here).
    pub(super) history_len: u64,
    /// The current execution (0 without an executor).
    pub(super) execution: u32,
    /// The instance's parent, for sub-orchestrations.
    pub(super) parent: Option<ParentInstance>,
    /// The instance is suspended.
    pub(super) suspended: bool,
    /// The orchestrator's name and version, needed when it continues as new.
    pub(super) name_and_version: Option<(String, String)>,
    /// A custom status set since the last turn.
    pub(super) custom_status: Option<Payload>,
    pub(super) now: DateTime<Utc>,
    pub(super) lease_until: DateTime<Utc>,
}

/// A planned turn: the commit, and what the actor does once it is stored.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) commit: TurnCommit,
    /// The history length once committed.
    pub(super) history_len: u64,
    /// The execution ends (completed, failed, terminated).
    pub(super) finishes: bool,
    /// The execution continues as new.
    pub(super) continued: bool,
    /// The instance's own timers armed by this turn: the dispatcher wakes up for them.
    pub(super) timer_due: Vec<DateTime<Utc>>,
    /// The final status, when the execution ends (for the metrics).
    pub(super) finished_as: Option<RuntimeStatus>,
}

/// Plans the commit of a turn that produced `out` from `messages` (which it consumes).
pub(super) fn plan(out: TurnOutput, messages: &[Inbound], extra: Extra, facts: Facts<'_>) -> Plan {
    let Facts {
        instance_id,
        owner,
        history_len,
        execution,
        parent,
        suspended,
        name_and_version,
        custom_status,
        now,
        lease_until,
    } = facts;
    let mut reset_history = extra.reset_history;
    let mut new_input = None;
    let mut new_events = out.new_events;
    let mut outbound = extra.messages;
    let (status, output, failure) = match &out.finished {
        Some(Outcome::Completed(output)) => {
            (Some(RuntimeStatus::Completed), Some(output.clone()), None)
        }
        Some(Outcome::Failed(failure)) => {
            (Some(RuntimeStatus::Failed), None, Some(failure.clone()))
        }
        // The reason is the output, as Durable Functions shows it.
        Some(Outcome::Terminated(reason)) => (
            Some(RuntimeStatus::Terminated),
            Payload::encode(reason).ok(),
            None,
        ),
        Some(Outcome::ContinuedAsNew { input, carried, .. }) => {
            // A new execution with an empty history; its start message is queued.
            reset_history = true;
            new_events.clear();
            new_input = Some(input.clone());
            let (name, version) = name_and_version.unwrap_or_default();
            outbound.push(message(
                instance_id,
                now,
                Event::ExecutionStarted {
                    name,
                    version,
                    input: input.clone(),
                    execution: execution + 1,
                    parent: parent.clone(),
                },
            ));
            outbound.extend(carried.iter().map(|(name, data)| {
                message(
                    instance_id,
                    now,
                    Event::EventRaised {
                        name: name.clone(),
                        data: data.clone(),
                    },
                )
            }));
            (Some(RuntimeStatus::Running), None, None)
        }
        None if new_events.is_empty() => (None, None, None),
        None if suspended => (Some(RuntimeStatus::Suspended), None, None),
        None => (Some(RuntimeStatus::Running), None, None),
    };
    if let (Some(parent), Some(outcome)) = (&parent, &out.finished) {
        outbound.extend(report_to_parent(parent, outcome, now));
    }
    let me = |seq: u64| ParentInstance {
        instance_id: instance_id.to_owned(),
        seq,
        execution,
    };
    let mut activities = Vec::new();
    let mut cancelled_activities = Vec::new();
    let mut cancelled_timers = Vec::new();
    let mut children = Vec::new();
    for action in out.actions {
        match action {
            Action::CallActivity {
                seq,
                name,
                input,
                timeouts,
                deadline,
                heartbeat,
                priority,
                attempt,
            } => activities.push(NewActivity {
                seq,
                name,
                input,
                timeouts,
                deadline,
                heartbeat,
                run_here: true,
                in_memory: false,
                flow_key: None,
                priority,
                attempt,
            }),
            Action::CancelCall { seq, target, .. } => match target {
                CancelTarget::Activity => {
                    // Scheduled in this very turn: it is simply not enqueued.
                    let before = activities.len();
                    activities.retain(|a: &NewActivity| a.seq != seq);
                    if activities.len() == before {
                        cancelled_activities.push(seq);
                    }
                }
                CancelTarget::SubOrchestration(child) => {
                    let before = children.len();
                    children.retain(|c: &NewInstance| c.instance_id != child);
                    if children.len() == before {
                        outbound.push(message(
                            child.as_str(),
                            now,
                            Event::ExecutionTerminated {
                                reason: format!("parent `{instance_id}` cancelled the call to it"),
                                cascade: true,
                            },
                        ));
                    }
                }
                CancelTarget::Timer => {
                    // Created in this very turn: its message is simply not enqueued.
                    let before = outbound.len();
                    outbound.retain(|m: &NewMessage| {
                        !matches!(m.event, Event::TimerFired { seq: timer, .. } if timer == seq)
                            || m.instance_id != instance_id
                    });
                    if outbound.len() == before {
                        cancelled_timers.push(seq);
                    }
                }
                CancelTarget::Nothing => {}
            },
            Action::CreateTimer { seq, fire_at } => outbound.push(NewMessage {
                instance_id: instance_id.to_owned(),
                visible_at: fire_at,
                event: Event::TimerFired { seq, fire_at },
                execution: Some(execution),
            }),
            Action::CallSubOrchestrator {
                seq,
                name,
                version,
                instance_id: child,
                input,
            } => children.push(NewInstance {
                instance_id: child,
                name,
                version,
                input,
                created_at: now,
                parent: Some(me(seq)),
                flow: None,
            }),
            Action::Patch { .. } => {}
            Action::CallEntity {
                seq,
                entity,
                operation,
                input,
            } => outbound.push(message(
                entity.instance_id(),
                now,
                Event::EntityOperation {
                    operation,
                    input,
                    caller: Some(me(seq)),
                    sender: Some(instance_id.to_owned()),
                },
            )),
            Action::SignalEntity {
                entity,
                operation,
                input,
                at,
                ..
            } => outbound.push(NewMessage {
                instance_id: entity.instance_id(),
                visible_at: at.map_or(now, |at| at.max(now)),
                event: Event::EntityOperation {
                    operation,
                    input,
                    caller: None,
                    sender: Some(instance_id.to_owned()),
                },
                execution: None,
            }),
            Action::LockEntities { seq, entities } => {
                // The request goes round the entities in order; the first one starts it.
                if let Some(first) = entities.first() {
                    let first = first.instance_id();
                    outbound.push(message(
                        first,
                        now,
                        Event::EntityLockRequest {
                            owner: me(seq),
                            entities,
                            position: 0,
                        },
                    ));
                }
            }
            Action::UnlockEntities { entities, .. } => {
                outbound.extend(entities.iter().map(|entity| {
                    message(
                        entity.instance_id(),
                        now,
                        Event::EntityUnlock {
                            owner: instance_id.to_owned(),
                        },
                    )
                }));
            }
        }
    }
    if let Some(Outcome::Terminated(reason)) = &out.finished {
        outbound.extend(out.terminate_children.iter().map(|child| {
            message(
                child.as_str(),
                now,
                Event::ExecutionTerminated {
                    reason: format!("parent `{instance_id}` was terminated: {reason}"),
                    cascade: true,
                },
            )
        }));
    }
    let timer_due: Vec<DateTime<Utc>> = outbound
        .iter()
        .filter(|m| m.instance_id == instance_id && m.visible_at > now)
        .map(|m| m.visible_at)
        .collect();
    let history_start = if reset_history { 0 } else { history_len };
    let finishes = matches!(
        out.finished,
        Some(Outcome::Completed(_) | Outcome::Failed(_) | Outcome::Terminated(_))
    );
    // A late result of an execution that ended (continued as new) names a seq the
    // new execution may use again: only this execution's calls end here. A call the turn
    // schedules ends here only if the turn records its result too (the store then keeps
    // nothing of it): a result consumed without being applied (stale to an executor that
    // did not exist yet) must not end the call the turn starts awaiting.
    let finished_calls: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            Inbound::Local {
                item_id: None,
                execution: of,
                event: Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. },
                ..
            } if *of == execution && !awaits_result(&new_events, *seq) => Some(*seq),
            _ => None,
        })
        .collect();
    Plan {
        history_len: history_start + new_events.len() as u64,
        finishes,
        continued: matches!(out.finished, Some(Outcome::ContinuedAsNew { .. })),
        timer_due,
        finished_as: status.filter(|status| finishes && status.is_terminal()),
        commit: TurnCommit {
            instance_id: instance_id.to_owned(),
            owner: owner.to_owned(),
            history_start,
            create: None,
            reset_history,
            execution,
            new_events,
            consumed: queued_ids(messages),
            completed_activities: messages
                .iter()
                .filter_map(|m| match m {
                    Inbound::Local { item_id, .. } => *item_id,
                    Inbound::Queued(_) => None,
                })
                .collect(),
            finished_calls,
            activities,
            cancelled_activities,
            cancelled_timers,
            // This worker delivers its timers from memory when the store holds them.
            hold_timers: true,
            messages: outbound,
            new_instances: children,
            status,
            output,
            failure,
            custom_status,
            input: new_input,
            entity: None,
            lease_until,
            now,
        },
    }
}

/// Whether `events` schedule call `seq` without recording its result.
fn awaits_result(events: &[Event], seq: u64) -> bool {
    let mut scheduled = false;
    for event in events {
        match event {
            Event::TaskScheduled { seq: of, .. } if *of == seq => scheduled = true,
            Event::TaskCompleted { seq: of, .. } | Event::TaskFailed { seq: of, .. }
                if *of == seq =>
            {
                return false;
            }
            _ => {}
        }
    }
    scheduled
}

/// A message for whichever execution of `instance_id` is current, visible now.
fn message(instance_id: impl Into<String>, now: DateTime<Utc>, event: Event) -> NewMessage {
    NewMessage {
        instance_id: instance_id.into(),
        visible_at: now,
        event,
        execution: None,
    }
}

/// The message that tells a parent how its sub-orchestration ended (none for
/// continue-as-new: the child goes on).
pub(super) fn report_to_parent(
    parent: &ParentInstance,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Vec<NewMessage> {
    let event = match outcome {
        Outcome::Completed(output) => Event::SubOrchestrationCompleted {
            seq: parent.seq,
            output: output.clone(),
        },
        Outcome::Failed(failure) => Event::SubOrchestrationFailed {
            seq: parent.seq,
            failure: failure.clone(),
        },
        Outcome::Terminated(reason) => Event::SubOrchestrationFailed {
            seq: parent.seq,
            failure: Failure::new("terminated", format!("terminated: {reason}")),
        },
        Outcome::ContinuedAsNew { .. } => return Vec::new(),
    };
    vec![NewMessage {
        instance_id: parent.instance_id.clone(),
        visible_at: now,
        event,
        execution: Some(parent.execution),
    }]
}

/// The turn that ends an instance without running its code (unknown orchestrator,
/// nondeterminism, version mismatch, terminated before it started), consuming `messages`:
/// a first turn also records the start, and a sub-orchestration tells its parent.
pub(super) fn end_without_running(
    outcome: Outcome,
    history_len: u64,
    messages: &[Inbound],
    now: DateTime<Utc>,
) -> (TurnOutput, Extra) {
    let mut out = TurnOutput::default();
    out.new_events
        .push(Event::OrchestratorStarted { timestamp: now });
    let start = messages
        .iter()
        .map(Inbound::event)
        .find(|event| matches!(event, Event::ExecutionStarted { .. }));
    if history_len == 0
        && let Some(start) = start
    {
        out.new_events.push(start.clone());
    }
    match &outcome {
        Outcome::Failed(failure) => out.new_events.push(Event::ExecutionFailed {
            failure: failure.clone(),
        }),
        Outcome::Terminated(reason) => out.new_events.push(Event::ExecutionTerminated {
            reason: reason.clone(),
            cascade: false,
        }),
        Outcome::Completed(_) | Outcome::ContinuedAsNew { .. } => {}
    }
    let mut extra = Extra::default();
    if let Some(Event::ExecutionStarted {
        parent: Some(parent),
        ..
    }) = start
    {
        extra.messages = report_to_parent(parent, &outcome, now);
    }
    out.finished = Some(outcome);
    (out, extra)
}

/// The history a rewind replays: `history` without its failures, then the rewind.
pub(super) fn rewound_history(
    history: Vec<Event>,
    reason: String,
    now: DateTime<Utc>,
) -> Vec<Event> {
    let mut rewound: Vec<Event> = history
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                Event::ExecutionFailed { .. }
                    | Event::TaskFailed { .. }
                    | Event::SubOrchestrationFailed { .. }
            )
        })
        .collect();
    rewound.push(Event::OrchestratorStarted { timestamp: now });
    rewound.push(Event::ExecutionRewound { reason });
    rewound
}

/// The turn that commits a rewind of `instance_id`: its history replaced by `rewound`, the
/// calls left open (`open_calls`) made again, and the children it had started rewound too.
pub(super) fn rewind(
    instance_id: &str,
    rewound: Vec<Event>,
    open_calls: Vec<Event>,
    now: DateTime<Utc>,
) -> (TurnOutput, Extra) {
    let mut out = TurnOutput::default();
    let mut extra = Extra {
        reset_history: true,
        messages: Vec::new(),
    };
    for call in open_calls {
        match call {
            Event::TaskScheduled { seq, name, input } => out.actions.push(Action::CallActivity {
                seq,
                name,
                input,
                timeouts: ActivityTimeouts::NONE,
                deadline: None,
                heartbeat: None,
                priority: 0,
                attempt: 1,
            }),
            Event::TimerCreated { seq, fire_at } => {
                out.actions.push(Action::CreateTimer { seq, fire_at })
            }
            Event::SubOrchestrationScheduled {
                instance_id: child, ..
            } => extra.messages.push(message(
                child,
                now,
                Event::ExecutionRewound {
                    reason: format!("parent `{instance_id}` was rewound"),
                },
            )),
            _ => {}
        }
    }
    out.new_events = rewound;
    (out, extra)
}

/// The turn that fails an instance again because its rewind cannot run, saying why (instead
/// of leaving it Pending with nothing to run): history keeps the original failure, then
/// this one.
pub(super) fn refuse_rewind(
    parent: Option<&ParentInstance>,
    why: &str,
    now: DateTime<Utc>,
) -> (TurnOutput, Extra) {
    let mut failure = Failure::new("rewind_failed", format!("the rewind could not run: {why}"));
    failure.non_retriable = true;
    let outcome = Outcome::Failed(failure.clone());
    let extra = Extra {
        reset_history: false,
        messages: parent
            .map(|parent| report_to_parent(parent, &outcome, now))
            .unwrap_or_default(),
    };
    let out = TurnOutput {
        new_events: vec![
            Event::OrchestratorStarted { timestamp: now },
            Event::ExecutionFailed { failure },
        ],
        finished: Some(outcome),
        ..TurnOutput::default()
    };
    (out, extra)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::id::EntityId;
    use crate::store::OrchestrationMessage;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
    }

    fn json(value: impl serde::Serialize) -> Payload {
        Payload::encode(&value).unwrap()
    }

    fn facts() -> Facts<'static> {
        Facts {
            instance_id: "order-1",
            owner: "worker-a",
            history_len: 7,
            execution: 2,
            parent: None,
            suspended: false,
            name_and_version: None,
            custom_status: None,
            now: at(100),
            lease_until: at(130),
        }
    }

    fn parent() -> ParentInstance {
        ParentInstance {
            instance_id: "batch".into(),
            seq: 4,
            execution: 1,
        }
    }

    fn queued(id: i64, event: Event) -> Inbound {
        Inbound::Queued(OrchestrationMessage {
            id,
            instance_id: "order-1".into(),
            event,
            execution: None,
        })
    }

    fn local(item_id: Option<i64>, seq: u64) -> Inbound {
        Inbound::Local {
            item_id,
            instance_id: "order-1".into(),
            execution: 2,
            event: Event::TaskCompleted {
                seq,
                output: json(1),
            },
        }
    }

    fn raised() -> Event {
        Event::EventRaised {
            name: "go".into(),
            data: json(true),
        }
    }

    fn output(events: Vec<Event>, actions: Vec<Action>, finished: Option<Outcome>) -> TurnOutput {
        TurnOutput {
            new_events: events,
            actions,
            finished,
            ..TurnOutput::default()
        }
    }

    /// A call started before its turn's commit, whose commit failed, can come back before
    /// the turn runs again: applied, the result ends the call with the turn that schedules
    /// it (the store keeps nothing of it); consumed unapplied (stale to a turn that had no
    /// executor yet), it must not end the call the turn starts awaiting.
    #[test]
    fn a_result_ends_a_call_the_turn_schedules_only_when_the_turn_records_it() {
        let scheduled = Event::TaskScheduled {
            seq: 0,
            name: "charge".into(),
            input: json(5),
        };
        let completed = Event::TaskCompleted {
            seq: 0,
            output: json(1),
        };
        let applied = plan(
            output(vec![scheduled.clone(), completed], Vec::new(), None),
            &[local(None, 0)],
            Extra::default(),
            facts(),
        );
        assert_eq!(applied.commit.finished_calls, [0]);
        let unapplied = plan(
            output(vec![scheduled], Vec::new(), None),
            &[local(None, 0)],
            Extra::default(),
            facts(),
        );
        assert!(
            unapplied.commit.finished_calls.is_empty(),
            "{:?}",
            unapplied.commit.finished_calls
        );
    }

    #[test]
    fn a_running_turn_appends_consumes_schedules_and_arms_its_timers() {
        let out = output(
            vec![Event::OrchestratorStarted { timestamp: at(100) }, raised()],
            vec![
                Action::CallActivity {
                    seq: 3,
                    name: "charge".into(),
                    input: json(5),
                    timeouts: ActivityTimeouts::NONE,
                    deadline: None,
                    heartbeat: None,
                    priority: 0,
                    attempt: 1,
                },
                Action::CreateTimer {
                    seq: 4,
                    fire_at: at(160),
                },
            ],
            None,
        );
        let plan = plan(
            out,
            &[
                queued(11, raised()),
                local(Some(21), 0),
                local(None, 2),
                Inbound::Local {
                    item_id: None,
                    instance_id: "order-1".into(),
                    execution: 1,
                    event: Event::TaskCompleted {
                        seq: 5,
                        output: json(1),
                    },
                },
            ],
            Extra::default(),
            facts(),
        );
        let commit = &plan.commit;
        assert_eq!(commit.instance_id, "order-1");
        assert_eq!(commit.owner, "worker-a");
        assert_eq!((commit.history_start, commit.reset_history), (7, false));
        assert_eq!(plan.history_len, 9);
        assert_eq!(commit.consumed, [11], "queue messages are deleted");
        assert_eq!(
            commit.completed_activities,
            [21],
            "local results delete their work items"
        );
        assert_eq!(
            commit.finished_calls,
            [2],
            "results of calls kept in memory end their record by seq, only this execution's"
        );
        assert_eq!(commit.status, Some(RuntimeStatus::Running));
        assert_eq!(commit.activities.len(), 1);
        assert_eq!(commit.activities[0].seq, 3);
        assert_eq!(commit.activities[0].name, "charge");
        assert_eq!(commit.messages.len(), 1);
        let timer = &commit.messages[0];
        assert_eq!(timer.instance_id, "order-1");
        assert_eq!(timer.visible_at, at(160));
        assert_eq!(timer.execution, Some(2), "a timer belongs to its execution");
        assert_eq!(
            timer.event,
            Event::TimerFired {
                seq: 4,
                fire_at: at(160)
            }
        );
        assert_eq!(plan.timer_due, [at(160)]);
        assert_eq!((commit.lease_until, commit.now), (at(130), at(100)));
        assert!(!plan.finishes && !plan.continued && plan.finished_as.is_none());
    }

    #[test]
    fn cancelled_calls_delete_work_items_terminate_children_or_are_never_sent() {
        let activity = |seq| Action::CallActivity {
            seq,
            name: "export".into(),
            input: json(1),
            timeouts: ActivityTimeouts::NONE,
            deadline: None,
            heartbeat: None,
            priority: 0,
            attempt: 1,
        };
        let cancel = |seq, target| Action::CancelCall {
            seq,
            target,
            reason: "lost a select".into(),
        };
        let out = output(
            vec![Event::OrchestratorStarted { timestamp: at(100) }],
            vec![
                // Made and cancelled in this turn: never enqueued.
                activity(5),
                cancel(5, CancelTarget::Activity),
                // Made in an earlier turn: its work item goes with the commit.
                cancel(2, CancelTarget::Activity),
                cancel(3, CancelTarget::SubOrchestration("order-1:3".into())),
                cancel(4, CancelTarget::Nothing),
                // A timer made in this turn is never enqueued; one of an earlier turn goes.
                Action::CreateTimer {
                    seq: 7,
                    fire_at: at(160),
                },
                cancel(7, CancelTarget::Timer),
                cancel(6, CancelTarget::Timer),
            ],
            None,
        );
        let plan = plan(out, &[], Extra::default(), facts());
        let commit = &plan.commit;
        assert!(commit.activities.is_empty());
        assert_eq!(commit.cancelled_activities, [2]);
        assert_eq!(commit.cancelled_timers, [6]);
        assert!(plan.timer_due.is_empty());
        assert_eq!(commit.messages.len(), 1);
        let terminate = &commit.messages[0];
        assert_eq!(terminate.instance_id, "order-1:3");
        assert_eq!(
            terminate.event,
            Event::ExecutionTerminated {
                reason: "parent `order-1` cancelled the call to it".into(),
                cascade: true,
            }
        );
    }

    #[test]
    fn a_turn_that_appends_nothing_changes_no_status() {
        let plan = plan(
            TurnOutput::default(),
            &[queued(1, raised())],
            Extra::default(),
            facts(),
        );
        assert_eq!(plan.commit.status, None);
        assert_eq!(plan.history_len, 7);
        let suspended = Facts {
            suspended: true,
            ..facts()
        };
        let out = output(
            vec![Event::OrchestratorStarted { timestamp: at(100) }],
            vec![],
            None,
        );
        let plan = super::plan(out, &[], Extra::default(), suspended);
        assert_eq!(plan.commit.status, Some(RuntimeStatus::Suspended));
    }

    #[test]
    fn a_completed_sub_orchestration_tells_its_parent() {
        let out = output(
            vec![Event::ExecutionCompleted {
                output: json("done"),
            }],
            vec![],
            Some(Outcome::Completed(json("done"))),
        );
        let with_parent = Facts {
            parent: Some(parent()),
            ..facts()
        };
        let plan = plan(out, &[], Extra::default(), with_parent);
        assert_eq!(plan.commit.status, Some(RuntimeStatus::Completed));
        assert_eq!(plan.commit.output, Some(json("done")));
        assert!(plan.finishes);
        assert_eq!(plan.finished_as, Some(RuntimeStatus::Completed));
        let [report] = &plan.commit.messages[..] else {
            panic!("one message: {:?}", plan.commit.messages);
        };
        assert_eq!(report.instance_id, "batch");
        assert_eq!(report.execution, Some(1), "to the parent's execution");
        assert_eq!(
            report.event,
            Event::SubOrchestrationCompleted {
                seq: 4,
                output: json("done")
            }
        );
    }

    #[test]
    fn continuing_as_new_restarts_history_and_queues_the_next_execution() {
        let out = output(
            vec![Event::OrchestratorStarted { timestamp: at(100) }, raised()],
            vec![],
            Some(Outcome::ContinuedAsNew {
                input: json(3),
                carried: vec![("go".into(), json(1)), ("stop".into(), json(2))],
                preserve_events: true,
            }),
        );
        let continuing = Facts {
            parent: Some(parent()),
            name_and_version: Some(("counter".into(), "2".into())),
            ..facts()
        };
        let plan = plan(out, &[], Extra::default(), continuing);
        let commit = &plan.commit;
        assert!(commit.reset_history && commit.new_events.is_empty());
        assert_eq!((commit.history_start, plan.history_len), (0, 0));
        assert_eq!(commit.input, Some(json(3)));
        assert_eq!(commit.status, Some(RuntimeStatus::Running));
        assert!(plan.continued && !plan.finishes);
        let events: Vec<&Event> = commit.messages.iter().map(|m| &m.event).collect();
        assert_eq!(
            events,
            [
                &Event::ExecutionStarted {
                    name: "counter".into(),
                    version: "2".into(),
                    input: json(3),
                    execution: 3,
                    parent: Some(parent()),
                },
                &Event::EventRaised {
                    name: "go".into(),
                    data: json(1)
                },
                &Event::EventRaised {
                    name: "stop".into(),
                    data: json(2)
                },
            ],
            "no report to the parent: the child goes on"
        );
        assert!(commit.messages.iter().all(|m| m.instance_id == "order-1"));
    }

    #[test]
    fn terminating_with_cascade_terminates_the_children_and_fails_the_parent_s_call() {
        let out = TurnOutput {
            new_events: vec![Event::ExecutionTerminated {
                reason: "stop".into(),
                cascade: true,
            }],
            finished: Some(Outcome::Terminated("stop".into())),
            terminate_children: vec!["order-1:0".into(), "order-1:3".into()],
            ..TurnOutput::default()
        };
        let with_parent = Facts {
            parent: Some(parent()),
            ..facts()
        };
        let plan = plan(out, &[], Extra::default(), with_parent);
        assert_eq!(plan.commit.status, Some(RuntimeStatus::Terminated));
        assert_eq!(
            plan.commit.output,
            Some(json("stop")),
            "the reason is the output"
        );
        assert_eq!(plan.finished_as, Some(RuntimeStatus::Terminated));
        let messages: Vec<(&str, &Event)> = plan
            .commit
            .messages
            .iter()
            .map(|m| (m.instance_id.as_str(), &m.event))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "batch",
                    &Event::SubOrchestrationFailed {
                        seq: 4,
                        failure: Failure::new("terminated", "terminated: stop"),
                    }
                ),
                (
                    "order-1:0",
                    &Event::ExecutionTerminated {
                        reason: "parent `order-1` was terminated: stop".into(),
                        cascade: true,
                    }
                ),
                (
                    "order-1:3",
                    &Event::ExecutionTerminated {
                        reason: "parent `order-1` was terminated: stop".into(),
                        cascade: true,
                    }
                ),
            ]
        );
    }

    #[test]
    fn children_and_entity_messages_carry_who_sent_them() {
        let ada = EntityId::new("account", "ada");
        let zed = EntityId::new("account", "zed");
        let out = output(
            vec![Event::OrchestratorStarted { timestamp: at(100) }],
            vec![
                Action::CallSubOrchestrator {
                    seq: 1,
                    name: "child".into(),
                    version: "3".into(),
                    instance_id: "order-1:1".into(),
                    input: json(1),
                },
                Action::CallEntity {
                    seq: 2,
                    entity: ada.clone(),
                    operation: "balance".into(),
                    input: json(()),
                },
                Action::SignalEntity {
                    seq: 3,
                    entity: zed.clone(),
                    operation: "deposit".into(),
                    input: json(5),
                    at: Some(at(50)),
                },
                Action::SignalEntity {
                    seq: 4,
                    entity: zed.clone(),
                    operation: "deposit".into(),
                    input: json(6),
                    at: Some(at(500)),
                },
                Action::LockEntities {
                    seq: 5,
                    entities: vec![ada.clone(), zed.clone()],
                },
                Action::UnlockEntities {
                    seq: 6,
                    entities: vec![ada.clone(), zed.clone()],
                },
            ],
            None,
        );
        let plan = plan(out, &[], Extra::default(), facts());
        let [child] = &plan.commit.new_instances[..] else {
            panic!("one child: {:?}", plan.commit.new_instances);
        };
        assert_eq!(child.instance_id, "order-1:1");
        assert_eq!(
            (child.name.as_str(), child.version.as_str()),
            ("child", "3")
        );
        assert_eq!(child.created_at, at(100));
        assert_eq!(
            child.parent,
            Some(ParentInstance {
                instance_id: "order-1".into(),
                seq: 1,
                execution: 2
            })
        );
        let me = |seq| ParentInstance {
            instance_id: "order-1".into(),
            seq,
            execution: 2,
        };
        let sent: Vec<(String, DateTime<Utc>, Event)> = plan
            .commit
            .messages
            .iter()
            .map(|m| (m.instance_id.clone(), m.visible_at, m.event.clone()))
            .collect();
        assert_eq!(
            sent,
            [
                (
                    ada.instance_id(),
                    at(100),
                    Event::EntityOperation {
                        operation: "balance".into(),
                        input: json(()),
                        caller: Some(me(2)),
                        sender: Some("order-1".into()),
                    }
                ),
                (
                    zed.instance_id(),
                    at(100),
                    Event::EntityOperation {
                        operation: "deposit".into(),
                        input: json(5),
                        caller: None,
                        sender: Some("order-1".into()),
                    }
                ),
                (
                    zed.instance_id(),
                    at(500),
                    Event::EntityOperation {
                        operation: "deposit".into(),
                        input: json(6),
                        caller: None,
                        sender: Some("order-1".into()),
                    }
                ),
                (
                    ada.instance_id(),
                    at(100),
                    Event::EntityLockRequest {
                        owner: me(5),
                        entities: vec![ada.clone(), zed.clone()],
                        position: 0,
                    }
                ),
                (
                    ada.instance_id(),
                    at(100),
                    Event::EntityUnlock {
                        owner: "order-1".into()
                    }
                ),
                (
                    zed.instance_id(),
                    at(100),
                    Event::EntityUnlock {
                        owner: "order-1".into()
                    }
                ),
            ],
            "a signal due in the past goes now; the lock request starts at the first entity"
        );
        assert!(
            plan.timer_due.is_empty(),
            "only the instance's own messages wake it"
        );
    }

    #[test]
    fn ending_without_running_records_the_start_and_tells_the_parent() {
        let start = Event::ExecutionStarted {
            name: "gone".into(),
            version: String::new(),
            input: json(1),
            execution: 0,
            parent: Some(parent()),
        };
        let failure = Failure::new("unknown_orchestrator", "no orchestrator named `gone`");
        let (out, extra) = end_without_running(
            Outcome::Failed(failure.clone()),
            0,
            &[queued(1, start.clone())],
            at(100),
        );
        assert_eq!(
            out.new_events,
            [
                Event::OrchestratorStarted { timestamp: at(100) },
                start.clone(),
                Event::ExecutionFailed {
                    failure: failure.clone()
                },
            ]
        );
        assert!(matches!(out.finished, Some(Outcome::Failed(_))));
        assert_eq!(extra.messages.len(), 1);
        assert_eq!(
            extra.messages[0].event,
            Event::SubOrchestrationFailed { seq: 4, failure }
        );
        // With a history already stored, the start is not recorded again.
        let (out, _) = end_without_running(
            Outcome::Terminated("stop".into()),
            5,
            &[queued(1, start)],
            at(100),
        );
        assert_eq!(
            out.new_events,
            [
                Event::OrchestratorStarted { timestamp: at(100) },
                Event::ExecutionTerminated {
                    reason: "stop".into(),
                    cascade: false
                },
            ]
        );
    }

    #[test]
    fn a_rewind_drops_failures_and_makes_open_calls_again() {
        let history = vec![
            Event::TaskScheduled {
                seq: 0,
                name: "charge".into(),
                input: json(1),
            },
            Event::TaskFailed {
                seq: 0,
                failure: Failure::new("test", "boom"),
                heartbeat: None,
            },
            Event::ExecutionFailed {
                failure: Failure::new("test", "boom"),
            },
        ];
        let rewound = rewound_history(history, "retry".into(), at(100));
        assert_eq!(
            rewound[1..],
            [
                Event::OrchestratorStarted { timestamp: at(100) },
                Event::ExecutionRewound {
                    reason: "retry".into()
                },
            ]
        );
        let open = vec![
            Event::TaskScheduled {
                seq: 0,
                name: "charge".into(),
                input: json(1),
            },
            Event::TimerCreated {
                seq: 1,
                fire_at: at(200),
            },
            Event::SubOrchestrationScheduled {
                seq: 2,
                name: "child".into(),
                instance_id: "order-1:2".into(),
                input: json(2),
            },
        ];
        let (out, extra) = rewind("order-1", rewound.clone(), open, at(100));
        assert_eq!(out.new_events, rewound);
        assert!(extra.reset_history);
        assert!(matches!(
            &out.actions[..],
            [
                Action::CallActivity { seq: 0, .. },
                Action::CreateTimer { seq: 1, .. }
            ]
        ));
        assert_eq!(extra.messages.len(), 1);
        assert_eq!(extra.messages[0].instance_id, "order-1:2");
        assert_eq!(
            extra.messages[0].event,
            Event::ExecutionRewound {
                reason: "parent `order-1` was rewound".into()
            }
        );
    }

    #[test]
    fn a_refused_rewind_fails_again_for_good_saying_why() {
        let (out, extra) = refuse_rewind(Some(&parent()), "no such orchestrator", at(100));
        let Some(Outcome::Failed(failure)) = &out.finished else {
            panic!("a failure: {:?}", out.finished);
        };
        assert_eq!(failure.kind, "rewind_failed");
        assert_eq!(
            failure.message,
            "the rewind could not run: no such orchestrator"
        );
        assert!(failure.non_retriable);
        assert!(!extra.reset_history);
        assert_eq!(extra.messages[0].instance_id, "batch");
    }
}

//! Planning a batch, the same for every database and free of I/O: the [`State`] of the rows
//! the batch touches (read by the backend at the start of the transaction), and the [`Plan`]
//! that validates each op against it, takes queue ids from the block reserved for the batch,
//! and collects the rows to write as JSON-array parameters.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use duractor::entity::EntityId;
use duractor::store::{
    ActivityCompletion, EntityCleanup, FLOW_HOLD_OWNER, NewActivity, NewInstance,
    OrchestrationMessage, TurnCommit, TurnCommitted, flow_hold_until,
};
use duractor::{Error, Event, RuntimeStatus};
use serde::Serialize;

use super::ops::{Lease, Op};
use crate::common::{encode_bounds, encode_event, millis};

/// What the batch's read found: the rows its ops touch, as they are at the start of the
/// transaction (locked on PostgreSQL; SQLite holds the only write lock), and the queue ids
/// reserved for the batch. The plan updates it as it applies ops, so each op sees the ones
/// before it.
#[derive(Default)]
pub(crate) struct State {
    /// Instance id -> its row; ids with no row are absent.
    pub(crate) instances: HashMap<String, InstanceState>,
    /// Work item id -> lease owner.
    pub(crate) items: HashMap<i64, Option<String>>,
    /// Queue message id -> lease owner, for the messages turns consume.
    pub(crate) messages: HashMap<i64, Option<String>>,
    /// Queue ids reserved for this batch (see [`ids_needed`]), taken in order.
    message_ids: VecDeque<i64>,
    item_ids: VecDeque<i64>,
    last_message_id: i64,
    last_item_id: i64,
    /// Ids taken past the reserved blocks (none, when [`ids_needed`] counted right).
    extra_ids: i64,
}

impl State {
    /// The status of an orchestration instance that has finished (Completed, Failed,
    /// Terminated); `None` for one that has not, and for entities and unknown ids.
    fn finished_status(&self, instance_id: &str) -> Option<String> {
        let instance = self.instances.get(instance_id)?;
        instance
            .status
            .parse::<RuntimeStatus>()
            .is_ok_and(RuntimeStatus::is_terminal)
            .then(|| instance.status.clone())
    }

    /// The next reserved message id.
    fn take_message_id(&mut self) -> i64 {
        // `ids_needed` reserves enough; past that, continue after the last one.
        self.message_ids.pop_front().unwrap_or_else(|| {
            self.extra_ids += 1;
            self.last_message_id + self.extra_ids
        })
    }

    /// The next reserved work item id.
    fn take_item_id(&mut self) -> i64 {
        self.item_ids.pop_front().unwrap_or_else(|| {
            self.extra_ids += 1;
            self.last_item_id + self.extra_ids
        })
    }

    /// Reserves the ids after `last_message` and `last_item` (SQLite, which knows the
    /// counters because it holds the only write lock).
    pub(crate) fn reserve_after(
        &mut self,
        last_message: i64,
        messages: usize,
        last_item: i64,
        items: usize,
    ) {
        self.message_ids = (1..=messages as i64).map(|i| last_message + i).collect();
        self.item_ids = (1..=items as i64).map(|i| last_item + i).collect();
        self.last_message_id = last_message + messages as i64;
        self.last_item_id = last_item + items as i64;
    }

    /// The first message id and work item id past every id reserved or taken so far.
    pub(crate) fn ids_after(&self) -> (i64, i64) {
        (
            self.last_message_id + self.extra_ids + 1,
            self.last_item_id + self.extra_ids + 1,
        )
    }

    /// Reserves ids the database handed out (PostgreSQL's sequences), taken lowest first.
    pub(crate) fn reserve(&mut self, mut messages: Vec<i64>, mut items: Vec<i64>) {
        messages.sort_unstable();
        items.sort_unstable();
        self.last_message_id = messages.last().copied().unwrap_or(0);
        self.last_item_id = items.last().copied().unwrap_or(0);
        self.message_ids = messages.into();
        self.item_ids = items.into();
    }
}

/// The columns of an instance row that validation reads.
pub(crate) struct InstanceState {
    pub(crate) status: String,
    pub(crate) history_len: i64,
    pub(crate) locked_by: Option<String>,
    /// Unix ms.
    pub(crate) locked_until: Option<i64>,
}

/// What the batch changes, besides rows: notifications to send after the commit.
#[derive(Default)]
pub(crate) struct Effects {
    /// Work became ready (idle workers should look).
    pub(crate) work: bool,
    /// Orchestration instances that finished (their waiters should look).
    pub(crate) finished: Vec<String>,
    /// The rows of finished instances as the commit left them, where the backend had them
    /// at hand: handed to their waiters, who then need not read them
    /// ([`StoreEvents::notify_finished_with`](duractor::store::StoreEvents::notify_finished_with)).
    pub(crate) statuses: Vec<duractor::store::InstanceStatus>,
}

/// The merged writes of a batch, as JSON-array parameters.
#[derive(Default)]
pub(crate) struct Plan {
    /// [instance_id, name, version, input, created_at]
    /// [instance_id, name, version, input, created_at, locked_by, locked_until]
    pub(crate) new_instances: Vec<NewInstanceRow>,
    /// Finished instances being started again: their old rows go.
    pub(crate) replaced: Vec<String>,
    /// Held instances of flow-controlled orchestrators: [instance_id, name, key, priority].
    pub(crate) flow_holds: Vec<(String, String, Option<String>, i32)>,
    /// [instance_id, idx, event]
    pub(crate) history: Vec<(String, i64, String)>,
    /// Queue messages turns consumed: they go.
    pub(crate) consumed: Vec<i64>,
    /// Instances that finished in this batch: their remaining messages go.
    pub(crate) finished: Vec<String>,
    /// Activity work items completed: they go.
    pub(crate) done_items: Vec<i64>,
    /// Calls turns cancelled, [instance_id, seq, execution]: their work items go.
    pub(crate) cancelled_calls: Vec<(String, i64, u32)>,
    /// Timers turns cancelled, [instance_id, seq, execution]: their `TimerFired` messages go
    /// unless claimed (or held: the owner consumes a held one it no longer wants).
    pub(crate) cancelled_timers: Vec<(String, i64, u32)>,
    /// New queue messages.
    pub(crate) messages: Vec<MessageRow>,
    /// New activity work items, leased to the worker whose turn scheduled them.
    pub(crate) activities: Vec<ActivityRow>,
    /// Status rows the turns change.
    pub(crate) updates: Vec<Update>,
    /// Void every lease (the only worker of a SQLite file starting).
    pub(crate) reset_leases: bool,
    /// Failed instances asked to rewind: Pending again at once, so nobody waiting for them
    /// takes the old failure for the outcome.
    pub(crate) rewound: Vec<String>,
    /// Entities addressed for the first time: [instance_id, name, created_at].
    pub(crate) new_entities: Vec<(String, String, i64)>,
    /// [instance_id, state, lock_owner, updated_at]
    pub(crate) entity_updates: Vec<(String, Option<String>, Option<String>, i64)>,
    /// Instances whose history a turn replaces (continue-as-new, rewind).
    pub(crate) reset_history: Vec<String>,
    /// Instance leases to release if the owner holds them: [instance_id, owner].
    pub(crate) releases: Vec<(String, String)>,
    /// Owners whose every lease goes (a worker stopping).
    pub(crate) release_all: Vec<String>,
    /// The notifications to send after the commit.
    pub(crate) effects: Effects,
    /// A start leased to another process's worker, whose work notification must hand it its
    /// `ExecutionStarted` message (the created instance's message, leased to that worker).
    pub(crate) offered: bool,
}

/// The most bytes an offered start's message and instance id may take: they travel in a
/// PostgreSQL notification (at most 8,000 bytes) beside the owner's name and the message id.
const MAX_OFFERED_START: usize = 7_500;

/// The `ExecutionStarted` message that starts `instance`.
fn start_event(instance: &NewInstance) -> Event {
    Event::ExecutionStarted {
        name: instance.name.clone(),
        version: instance.version.clone(),
        input: instance.input.clone(),
        execution: 0,
        parent: instance.parent.clone(),
    }
}

/// [id, instance_id, visible_at, message, execution, locked_by, locked_until]
/// [instance_id, name, version, input, created_at, locked_by, locked_until]
pub(crate) type NewInstanceRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
);

/// [id, instance_id, visible_at, message, execution, locked_by, locked_until]
pub(crate) type MessageRow = (
    i64,
    String,
    i64,
    String,
    Option<u32>,
    Option<String>,
    Option<i64>,
);

/// [id, instance_id, seq, name, input, execution, locked_by, locked_until, timeouts,
///  heartbeat, flow_key, priority, earlier attempts]; unclaimed (no lock) when the turn's
/// worker cannot run it. Its `attempt` column starts at the earlier attempts (of the retry
/// policy), plus one when it is born claimed: each claim adds one.
pub(crate) type ActivityRow = (
    i64,
    String,
    i64,
    String,
    String,
    u32,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    u32,
);

/// [instance_id, status, output, failure, custom_status, history_len, updated_at,
///  completed_at, locked_by, locked_until, reset, input, calls, drop_calls]; with `reset`,
/// output, failure and completed_at are set as given (a rewound instance loses its failure);
/// `input` replaces the input when set (continue-as-new). `calls` is a JSON merge patch
/// (RFC 7396) of the row's calls kept in memory: `null` for each call that ended, the
/// record of each new one ([`call_record`]); with `drop_calls` (the execution ended) it
/// applies to no calls at all.
#[derive(Serialize)]
pub(crate) struct Update(
    pub(crate) String,
    pub(crate) Option<&'static str>,
    pub(crate) Option<String>,
    pub(crate) Option<String>,
    pub(crate) Option<String>,
    pub(crate) i64,
    pub(crate) i64,
    pub(crate) Option<i64>,
    pub(crate) Option<String>,
    pub(crate) Option<i64>,
    pub(crate) bool,
    pub(crate) Option<String>,
    pub(crate) Option<String>,
    pub(crate) bool,
);

/// Whether a turn's new call is kept in memory ([`NewActivity::in_memory`]): no work item.
/// Never for a turn that ends its execution (ends the instance or continues as new): no one
/// stays loaded for such a call's result, so it gets a work item as before.
fn kept_in_memory(turn: &TurnCommit, activity: &NewActivity) -> bool {
    activity.in_memory && activity.run_here && !turn.ends_execution()
}

/// A call kept in memory as the instance row records it: the worker keeping it, and what its
/// work item gets if one is made of it (`attempt` is the attempt number of its in-memory
/// delivery; the stores' `attempt` column counts it the same way).
fn call_record(activity: &NewActivity, owner: &str, execution: u32) -> serde_json::Value {
    serde_json::json!({
        "owner": owner,
        "execution": execution,
        "name": activity.name,
        "input": activity.input.as_str(),
        "attempt": activity.attempt.max(1),
        "bounds": encode_bounds(&activity.timeouts, activity.deadline),
        "heartbeat": activity.heartbeat.as_ref().map(|p| p.as_str()),
        "priority": activity.priority,
    })
}

impl Plan {
    /// Whether the merged writes (everything but creations and lease releases) have rows.
    pub(crate) fn has_core_writes(&self) -> bool {
        !(self.history.is_empty()
            && self.reset_history.is_empty()
            && self.rewound.is_empty()
            && self.new_entities.is_empty()
            && self.entity_updates.is_empty()
            && self.consumed.is_empty()
            && self.finished.is_empty()
            && self.done_items.is_empty()
            && self.cancelled_calls.is_empty()
            && self.cancelled_timers.is_empty()
            && self.messages.is_empty()
            && self.activities.is_empty()
            && self.updates.is_empty())
    }

    /// Whether the plan writes only what turns of instances this worker holds and starts of
    /// free ids write (history, consumed and new queue rows, new instance rows, status
    /// updates): what a guarded statement covers.
    pub(crate) fn only_guarded_writes(&self) -> bool {
        self.replaced.is_empty()
            && self.flow_holds.is_empty()
            && self.reset_history.is_empty()
            && self.rewound.is_empty()
            && self.new_entities.is_empty()
            && self.entity_updates.is_empty()
            && !self.has_lease_writes()
    }

    /// Whether leases are released or voided.
    pub(crate) fn has_lease_writes(&self) -> bool {
        self.reset_leases || !self.releases.is_empty() || !self.release_all.is_empty()
    }

    /// Adds a queue message with the next reserved id, claimed for `claimed` (owner, lease
    /// deadline) when given; returns its id.
    fn add_message(
        &mut self,
        state: &mut State,
        instance_id: &str,
        visible_at: i64,
        event: &Event,
        execution: Option<u32>,
        claimed: Option<(&str, i64)>,
    ) -> i64 {
        let id = state.take_message_id();
        self.messages.push((
            id,
            instance_id.to_owned(),
            visible_at,
            encode_event(event),
            execution,
            claimed.map(|(owner, _)| owner.to_owned()),
            claimed.map(|(_, until)| until),
        ));
        id
    }

    /// Validates one op against the current state, adds its writes to the plan, and sets the
    /// op's outcome. The ops that run after the merged writes get a placeholder outcome here,
    /// which the executor replaces when it runs them.
    pub(crate) fn apply(&mut self, op: &mut Op, state: &mut State, now: i64) {
        match op {
            Op::Create {
                instance,
                claim,
                offer,
                reply,
            } => {
                let claim = claim
                    .as_ref()
                    .map(|(owner, lease)| (owner.as_str(), *lease));
                reply.set(if *offer {
                    self.offer(instance, claim, state, now).map(|()| None)
                } else {
                    self.create(instance, claim, state, now)
                });
            }
            Op::Enqueue {
                instance_id,
                event,
                visible_at,
                reply,
            } => reply.set(self.enqueue(instance_id, event, *visible_at, state, now)),
            Op::Turn { turn, lease, reply } => reply.set(self.turn(turn, *lease, state, now)),
            Op::Complete {
                completion,
                lease,
                reply,
            } => reply.set(Ok(self.complete(completion, *lease, state, now))),
            Op::Release {
                instance_id,
                owner,
                reply,
            } => {
                self.release(instance_id, owner, state);
                reply.set(Ok(()));
            }
            Op::ReleaseAll { owner, reply } => {
                self.release_all.push(owner.clone());
                self.effects.work = true;
                reply.set(Ok(()));
            }
            Op::ResetLeases { reply } => {
                self.reset_leases = true;
                reply.set(Ok(()));
            }
            // Run after the writes.
            Op::ClaimMessages { reply, .. } => reply.set(Ok(Vec::new())),
            Op::ClaimActivities { reply, .. } => reply.set(Ok(Default::default())),
            Op::Admit { reply, .. } => reply.set(Ok(Default::default())),
            Op::Abandon { reply, .. } => reply.set(Ok(())),
            Op::Purge { reply, .. } => reply.set(Ok(0)),
            Op::CleanEntities { reply } => reply.set(Ok(EntityCleanup::default())),
            Op::Renew { reply, .. } => reply.set(Ok(Vec::new())),
            Op::Sync { reply, .. } => reply.set(Ok(Vec::new())),
            Op::Persist { reply, .. } => reply.set(Ok(Vec::new())),
            Op::Recover { reply } => reply.set(Ok(0)),
        }
    }

    /// A message to an instance (or an entity, created by its first message). Events raised
    /// to a finished orchestration are refused: nobody would ever receive them.
    fn enqueue(
        &mut self,
        instance_id: &str,
        event: &Event,
        visible_at: Option<DateTime<Utc>>,
        state: &mut State,
        now: i64,
    ) -> Result<(), Error> {
        if !self.ensure_target(state, instance_id, now) {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        if let Event::EventRaised { name, .. } = event
            && let Some(status) = state.finished_status(instance_id)
        {
            return Err(Error::InstanceFinished {
                instance_id: instance_id.to_owned(),
                status,
                message: format!("it can no longer receive events (event `{name}` was not stored)"),
            });
        }
        let visible_at = visible_at.map_or(now, |at| millis(at).max(now));
        self.add_message(state, instance_id, visible_at, event, None, None);
        if matches!(event, Event::ExecutionRewound { .. }) {
            self.rewound.push(instance_id.to_owned());
        }
        if visible_at <= now {
            self.effects.work = true;
        }
        Ok(())
    }

    /// Releases `owner`'s lease on an instance, if it holds it.
    fn release(&mut self, instance_id: &str, owner: &str, state: &mut State) {
        self.releases
            .push((instance_id.to_owned(), owner.to_owned()));
        if let Some(instance) = state.instances.get_mut(instance_id)
            && instance.locked_by.as_deref() == Some(owner)
        {
            instance.locked_by = None;
            instance.locked_until = None;
        }
    }

    /// Whether a message may go to `instance_id`: an existing instance, or an entity, which
    /// exists from its first message on (its row is created here).
    fn ensure_target(&mut self, state: &mut State, instance_id: &str, now: i64) -> bool {
        if state.instances.contains_key(instance_id) {
            return true;
        }
        let Some(entity) = EntityId::from_instance_id(instance_id) else {
            return false;
        };
        self.new_entities
            .push((instance_id.to_owned(), entity.name, now));
        state.instances.insert(
            instance_id.to_owned(),
            InstanceState {
                status: RuntimeStatus::Running.as_str().to_owned(),
                history_len: 0,
                locked_by: None,
                locked_until: None,
            },
        );
        true
    }

    /// A new instance and its `ExecutionStarted` message (see [`Plan::create_row`]); with
    /// `claim`, both leased to that owner and the message returned (the creating process's
    /// worker runs it at once).
    fn create(
        &mut self,
        instance: &NewInstance,
        claim: Option<(&str, Lease)>,
        state: &mut State,
        now: i64,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let claim = claim.map(|(owner, lease)| (owner, lease.from(now)));
        let lease = self.create_row(instance, claim, state)?;
        let lease = lease
            .as_ref()
            .map(|(owner, until)| (owner.as_str(), *until));
        let held = instance.flow.is_some();
        let created_at = millis(instance.created_at);
        let start = start_event(instance);
        let id = self.add_message(
            state,
            &instance.instance_id,
            created_at,
            &start,
            None,
            lease,
        );
        if lease.is_none() || held {
            self.effects.work = true;
            return Ok(None);
        }
        Ok(Some(OrchestrationMessage {
            id,
            instance_id: instance.instance_id.clone(),
            event: start,
            execution: None,
        }))
    }

    /// A start leased to another process's worker, which the work notification hands the
    /// message ([`Plan::offered`]); one whose message is too large for a notification, or
    /// that flow control holds, is created unclaimed (any worker claims it).
    fn offer(
        &mut self,
        instance: &NewInstance,
        claim: Option<(&str, Lease)>,
        state: &mut State,
        now: i64,
    ) -> Result<(), Error> {
        let travels = instance.flow.is_none()
            && encode_event(&start_event(instance)).len() + instance.instance_id.len()
                <= MAX_OFFERED_START;
        if !travels {
            return self.create(instance, None, state, now).map(drop);
        }
        let message = self.create(instance, claim, state, now)?;
        self.offered = message.is_some();
        self.effects.work |= self.offered;
        Ok(())
    }

    /// The row of a new instance, leased to `lease` (owner, deadline) or, held by flow
    /// control, to nobody who runs it; returns the lease it got. An id taken by an instance
    /// that has not finished is refused (writing nothing); a finished one is replaced (its
    /// rows go).
    fn create_row(
        &mut self,
        instance: &NewInstance,
        lease: Option<(&str, i64)>,
        state: &mut State,
    ) -> Result<Option<(String, i64)>, Error> {
        if let Some(existing) = state.instances.get(&instance.instance_id) {
            let finished = existing
                .status
                .parse::<RuntimeStatus>()
                .is_ok_and(RuntimeStatus::is_terminal);
            if !finished {
                return Err(Error::InstanceExists {
                    instance_id: instance.instance_id.clone(),
                    status: existing.status.clone(),
                });
            }
            self.replaced.push(instance.instance_id.clone());
        }
        // A held instance and its messages wait leased to the flow-control owner, which no
        // worker is: only an admission lets them go.
        let held = instance.flow.as_ref().map(|hold| {
            self.flow_holds.push((
                instance.instance_id.clone(),
                instance.name.clone(),
                hold.key.clone(),
                hold.priority,
            ));
            (FLOW_HOLD_OWNER, millis(flow_hold_until()))
        });
        let lease = held
            .or(lease)
            .map(|(owner, until)| (owner.to_owned(), until));
        self.new_instances.push((
            instance.instance_id.clone(),
            instance.name.clone(),
            instance.version.clone(),
            instance.input.as_str().to_owned(),
            millis(instance.created_at),
            lease.as_ref().map(|(owner, _)| owner.clone()),
            lease.as_ref().map(|(_, until)| *until),
        ));
        state.instances.insert(
            instance.instance_id.clone(),
            InstanceState {
                status: RuntimeStatus::Pending.as_str().to_owned(),
                history_len: 0,
                locked_by: lease.as_ref().map(|(owner, _)| owner.clone()),
                locked_until: lease.as_ref().map(|(_, until)| *until),
            },
        );
        Ok(lease)
    }

    /// An orchestration or entity turn: refused with `Conflict` when another worker holds the
    /// instance or what the turn consumed, and as transient when the history moved on;
    /// otherwise its events, consumed messages and work items, new work, children and status.
    fn turn(
        &mut self,
        turn: &TurnCommit,
        lease: Lease,
        state: &mut State,
        now: i64,
    ) -> Result<TurnCommitted, Error> {
        if let Some(instance) = turn.instance_to_create()? {
            // The instance starts with this turn: created (or refused) first, leased to the
            // turn's owner, with no `ExecutionStarted` message (it is the turn's first event).
            self.create_row(instance, Some((&turn.owner, lease.from(now))), state)?;
        }
        let Some(instance) = state.instances.get(&turn.instance_id) else {
            return Err(Error::InstanceNotFound(turn.instance_id.clone()));
        };
        let conflict = || Error::Conflict {
            instance_id: turn.instance_id.clone(),
        };
        let lease_ok = instance.locked_by.is_none()
            || instance.locked_by.as_deref() == Some(turn.owner.as_str())
            || instance.locked_until.is_some_and(|until| until < now);
        if !lease_ok {
            return Err(conflict());
        }
        // Exactly once: what the turn consumed must still be there and leased to this worker
        // (its lease may have lapsed, but nobody else took it: the rows are locked now), and
        // consumed only once. Otherwise another worker has it, or this one held it twice.
        let mut seen = HashSet::with_capacity(turn.consumed.len());
        let mut seen_items = HashSet::new();
        for id in &turn.consumed {
            let held = state
                .messages
                .get(id)
                .is_some_and(|owner| owner.as_deref() == Some(turn.owner.as_str()));
            if !held || !seen.insert(*id) {
                return Err(conflict());
            }
        }
        for id in &turn.completed_activities {
            let held = state
                .items
                .get(id)
                .is_some_and(|owner| owner.as_deref() == Some(turn.owner.as_str()));
            if !held || !seen_items.insert(*id) {
                return Err(conflict());
            }
        }
        let start = i64::try_from(turn.history_start).unwrap_or(i64::MAX);
        if turn.reset_history {
            self.reset_history.push(turn.instance_id.clone());
        } else if instance.history_len != start {
            return Err(Error::store_transient(format!(
                "the history of instance `{}` has {} events, but this worker expected {}; reloading it",
                turn.instance_id, instance.history_len, start
            )));
        }
        for (i, event) in turn.new_events.iter().enumerate() {
            self.history.push((
                turn.instance_id.clone(),
                start + i as i64,
                encode_event(event),
            ));
        }
        // A release of the instance earlier in the batch (its last actor unloaded, and a new
        // one took it up at once) is void: the writes run before the lease writes, so the
        // release would undo this turn's lease and that of the timers it holds.
        self.releases
            .retain(|(id, owner)| !(*id == turn.instance_id && *owner == turn.owner));
        self.consumed.extend(&turn.consumed);
        self.done_items.extend(&turn.completed_activities);
        for id in &turn.consumed {
            state.messages.remove(id);
        }
        for id in &turn.completed_activities {
            state.items.remove(id);
        }
        let lease_until = lease.from(now);
        let terminal = turn.status.is_some_and(RuntimeStatus::is_terminal);
        // Calls kept in memory: those that ended go from the row (a work item made of one of
        // them meanwhile goes too, below), new ones are recorded on it.
        let mut calls = serde_json::Map::new();
        for seq in turn.cancelled_activities.iter().chain(&turn.finished_calls) {
            calls.insert(seq.to_string(), serde_json::Value::Null);
        }
        let mut activity_ids = Vec::with_capacity(turn.activities.len());
        for activity in &turn.activities {
            // A call whose result the same turn consumed (it ran before an earlier attempt
            // of the turn failed to commit) has ended already: no record, no work item.
            if turn.finished_calls.contains(&activity.seq) {
                activity_ids.push(0);
                continue;
            }
            if kept_in_memory(turn, activity) {
                calls.insert(
                    activity.seq.to_string(),
                    call_record(activity, &turn.owner, turn.execution),
                );
                activity_ids.push(0);
                continue;
            }
            let id = state.take_item_id();
            self.activities.push((
                id,
                turn.instance_id.clone(),
                i64::try_from(activity.seq).unwrap_or(i64::MAX),
                activity.name.clone(),
                activity.input.as_str().to_owned(),
                turn.execution,
                activity.run_here.then(|| turn.owner.clone()),
                activity.run_here.then_some(lease_until),
                encode_bounds(&activity.timeouts, activity.deadline),
                activity.heartbeat.as_ref().map(|p| p.as_str().to_owned()),
                activity.flow_key.clone(),
                activity.priority,
                activity.attempt.max(1) - 1,
            ));
            activity_ids.push(id);
            if !activity.run_here {
                self.effects.work = true;
            }
        }
        // Cancelled calls of this execution as [instance_id, seq, execution].
        let keyed = |seqs: &[u64]| {
            seqs.iter()
                .map(|seq| {
                    let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
                    (turn.instance_id.clone(), seq, turn.execution)
                })
                .collect::<Vec<_>>()
        };
        self.cancelled_calls
            .extend(keyed(&turn.cancelled_activities));
        self.cancelled_calls.extend(keyed(&turn.finished_calls));
        // A turn that ends its instance or resets its history drops all its timers anyway.
        if !turn.ends_execution() {
            self.cancelled_timers.extend(keyed(&turn.cancelled_timers));
        }
        for child in &turn.new_instances {
            if let Err(error) = self.create(child, None, state, now)
                && let Some(parent) = &child.parent
            {
                // The child could not start: its parent gets the failure.
                let failed = Event::SubOrchestrationFailed {
                    seq: parent.seq,
                    failure: error.to_failure(),
                };
                self.add_message(
                    state,
                    &parent.instance_id,
                    now,
                    &failed,
                    Some(parent.execution),
                    None,
                );
            }
        }
        let mut held_timers = Vec::new();
        for message in &turn.messages {
            if terminal && message.instance_id == turn.instance_id {
                continue; // the instance is done: its own timers would only be dropped
            }
            if !self.ensure_target(state, &message.instance_id, now) {
                tracing::debug!(instance_id = %message.instance_id, "dropping a message to an instance that does not exist");
                continue;
            }
            let visible_at = millis(message.visible_at);
            // A timer of its own the owner asked to hold, leased to it like the instance:
            // no claim takes it, and the owner delivers it from memory when it is due.
            let held = turn.hold_timers
                && visible_at > now
                && message.instance_id == turn.instance_id
                && matches!(message.event, Event::TimerFired { .. });
            let id = self.add_message(
                state,
                &message.instance_id,
                visible_at,
                &message.event,
                message.execution,
                held.then_some((turn.owner.as_str(), lease_until)),
            );
            if held {
                held_timers.push(OrchestrationMessage {
                    id,
                    instance_id: message.instance_id.clone(),
                    event: message.event.clone(),
                    execution: message.execution,
                });
            }
            if visible_at <= now {
                self.effects.work = true;
            }
        }
        if let Some(entity) = &turn.entity {
            self.entity_updates.push((
                turn.instance_id.clone(),
                entity.state.as_ref().map(|p| p.as_str().to_owned()),
                entity.lock_owner.clone(),
                millis(turn.now),
            ));
        }
        let history_len = start + turn.new_events.len() as i64;
        let updated_at = millis(turn.now);
        if terminal {
            self.finished.push(turn.instance_id.clone());
            self.effects.finished.push(turn.instance_id.clone());
        }
        let locked_by = (!terminal).then(|| turn.owner.clone());
        let locked_until = (!terminal).then_some(lease_until);
        self.updates.push(Update(
            turn.instance_id.clone(),
            turn.status.map(RuntimeStatus::as_str),
            turn.output.as_ref().map(|p| p.as_str().to_owned()),
            turn.failure
                .as_ref()
                .and_then(|f| serde_json::to_string(f).ok()),
            turn.custom_status.as_ref().map(|p| p.as_str().to_owned()),
            history_len,
            updated_at,
            terminal.then_some(updated_at),
            locked_by.clone(),
            locked_until,
            turn.reset_history,
            turn.input.as_ref().map(|p| p.as_str().to_owned()),
            (!calls.is_empty()).then(|| serde_json::Value::Object(calls).to_string()),
            turn.ends_execution(),
        ));
        if let Some(instance) = state.instances.get_mut(&turn.instance_id) {
            instance.history_len = history_len;
            instance.locked_by = locked_by;
            instance.locked_until = locked_until;
            if let Some(status) = turn.status {
                instance.status = status.as_str().to_owned();
            }
        }
        Ok(TurnCommitted {
            activity_ids,
            held_timers,
        })
    }

    /// An activity's result, from the worker holding its work item (anyone else's writes
    /// nothing). The result message is claimed for that worker and returned when it holds
    /// the instance too, so it can deliver the result in memory.
    fn complete(
        &mut self,
        completion: &ActivityCompletion,
        lease: Lease,
        state: &mut State,
        now: i64,
    ) -> Option<OrchestrationMessage> {
        // Only the worker holding the item completes it; a worker whose lease lapsed (and
        // whose item another worker took over, or already completed) commits nothing.
        let held = state
            .items
            .get(&completion.item_id)
            .is_some_and(|owner| owner.as_deref() == Some(completion.owner.as_str()));
        if !held {
            return None;
        }
        state.items.remove(&completion.item_id);
        self.done_items.push(completion.item_id);
        let instance = state.instances.get(&completion.instance_id)?;
        let claimed = instance.locked_by.as_deref() == Some(completion.owner.as_str())
            && instance.locked_until.is_some_and(|until| until >= now);
        let lease_until = lease.from(now);
        let id = self.add_message(
            state,
            &completion.instance_id,
            now,
            &completion.event,
            Some(completion.execution),
            claimed.then_some((completion.owner.as_str(), lease_until)),
        );
        if claimed {
            Some(OrchestrationMessage {
                id,
                instance_id: completion.instance_id.clone(),
                event: completion.event.clone(),
                execution: Some(completion.execution),
            })
        } else {
            self.effects.work = true;
            None
        }
    }
}

/// The rows a batch touches: what its read must look at (and lock).
pub(crate) struct Touched<'a> {
    pub(crate) instances: Vec<&'a str>,
    pub(crate) items: Vec<i64>,
    /// Queue messages that turns consume.
    pub(crate) messages: Vec<i64>,
}

/// The instances, work items and consumed messages a batch touches, each sorted (rows are
/// locked in id order, so two writers never wait on each other in a cycle).
pub(crate) fn touched(ops: &[Op]) -> Touched<'_> {
    let mut instances: Vec<&str> = Vec::new();
    let mut items: Vec<i64> = Vec::new();
    let mut messages: Vec<i64> = Vec::new();
    for op in ops {
        match op {
            Op::Create { instance, .. } => instances.push(&instance.instance_id),
            Op::Enqueue { instance_id, .. } => instances.push(instance_id),
            Op::Turn { turn, .. } => {
                instances.push(&turn.instance_id);
                instances.extend(turn.new_instances.iter().map(|i| i.instance_id.as_str()));
                instances.extend(turn.messages.iter().map(|m| m.instance_id.as_str()));
                items.extend(&turn.completed_activities);
                messages.extend(&turn.consumed);
            }
            Op::Complete { completion, .. } => {
                instances.push(&completion.instance_id);
                items.push(completion.item_id);
            }
            _ => {}
        }
    }
    instances.sort_unstable();
    instances.dedup();
    items.sort_unstable();
    items.dedup();
    messages.sort_unstable();
    messages.dedup();
    Touched {
        instances,
        items,
        messages,
    }
}

/// How many message ids and work item ids a batch can use at most.
pub(crate) fn ids_needed(ops: &[Op]) -> (usize, usize) {
    let mut messages = 0;
    let mut items = 0;
    for op in ops {
        match op {
            Op::Create { .. } | Op::Enqueue { .. } | Op::Complete { .. } => messages += 1,
            Op::Turn { turn, .. } => {
                messages += turn.messages.len() + 2 * turn.new_instances.len();
                // Calls kept in memory, and calls the turn also finished, get no work item.
                items += turn
                    .activities
                    .iter()
                    .filter(|activity| {
                        !kept_in_memory(turn, activity)
                            && !turn.finished_calls.contains(&activity.seq)
                    })
                    .count();
            }
            _ => {}
        }
    }
    (messages, items)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The plan against hand-built states: no database. The fixtures serve the other batch
    //! modules' tests too.

    use chrono::TimeDelta;
    use duractor::store::NewMessage;
    use duractor::{Payload, RuntimeStatus};
    use tokio::sync::oneshot;

    use super::*;
    use crate::batch::ops::Reply;
    use crate::common::from_millis;

    /// When every op in these tests runs (Unix ms).
    pub(crate) const NOW: i64 = 1_800_000_000_000;

    fn lease() -> Lease {
        Lease::until(Utc::now() + TimeDelta::seconds(30))
    }

    /// A state holding these instances: (id, status, lease owner, lease deadline).
    fn with_instances(instances: &[(&str, RuntimeStatus, Option<&str>, Option<i64>)]) -> State {
        let mut state = State::default();
        for (id, status, owner, until) in instances {
            state.instances.insert(
                (*id).to_owned(),
                InstanceState {
                    status: status.as_str().to_owned(),
                    history_len: 0,
                    locked_by: owner.map(str::to_owned),
                    locked_until: *until,
                },
            );
        }
        state
    }

    pub(crate) fn new_instance(id: &str) -> NewInstance {
        NewInstance {
            instance_id: id.to_owned(),
            name: "order".to_owned(),
            version: String::new(),
            input: Payload::null(),
            created_at: from_millis(NOW),
            parent: None,
            flow: None,
        }
    }

    /// A turn of `owner` on `instance_id` that appends one event and changes nothing else.
    pub(crate) fn turn(instance_id: &str, owner: &str) -> TurnCommit {
        TurnCommit {
            instance_id: instance_id.to_owned(),
            owner: owner.to_owned(),
            history_start: 0,
            create: None,
            reset_history: false,
            execution: 0,
            new_events: vec![Event::OrchestratorStarted {
                timestamp: from_millis(NOW),
            }],
            consumed: Vec::new(),
            completed_activities: Vec::new(),
            finished_calls: Vec::new(),
            activities: Vec::new(),
            cancelled_activities: Vec::new(),
            cancelled_timers: Vec::new(),
            hold_timers: false,
            messages: Vec::new(),
            new_instances: Vec::new(),
            status: Some(RuntimeStatus::Running),
            output: None,
            failure: None,
            custom_status: None,
            input: None,
            entity: None,
            lease_until: from_millis(NOW + 30_000),
            now: from_millis(NOW),
        }
    }

    fn raised(name: &str) -> Event {
        Event::EventRaised {
            name: name.to_owned(),
            data: Payload::null(),
        }
    }

    fn completion(item_id: i64, instance_id: &str, owner: &str) -> ActivityCompletion {
        ActivityCompletion {
            item_id,
            instance_id: instance_id.to_owned(),
            execution: 0,
            event: Event::TaskCompleted {
                seq: 0,
                output: Payload::null(),
            },
            owner: owner.to_owned(),
            lease_until: from_millis(NOW + 30_000),
        }
    }

    fn message_ids(plan: &Plan) -> Vec<i64> {
        plan.messages.iter().map(|m| m.0).collect()
    }

    #[test]
    fn create_refuses_a_running_duplicate_and_replaces_a_finished_one() {
        let mut state = with_instances(&[
            ("running", RuntimeStatus::Running, None, None),
            ("done", RuntimeStatus::Completed, None, None),
        ]);
        let mut plan = Plan::default();
        let refused = plan.create(&new_instance("running"), None, &mut state, NOW);
        assert!(
            matches!(&refused, Err(Error::InstanceExists { instance_id, status })
                if instance_id == "running" && status == "Running"),
            "{refused:?}"
        );
        assert!(plan.new_instances.is_empty() && plan.messages.is_empty());

        plan.create(&new_instance("done"), None, &mut state, NOW)
            .unwrap();
        assert_eq!(plan.replaced, ["done"]);
        assert_eq!(plan.new_instances.len(), 1);
        assert_eq!(plan.messages.len(), 1, "its ExecutionStarted message");
        assert!(plan.effects.work);
        // Later ops of the batch see it started again.
        let again = plan.create(&new_instance("done"), None, &mut state, NOW);
        assert!(
            matches!(&again, Err(Error::InstanceExists { status, .. }) if status == "Pending"),
            "{again:?}"
        );
    }

    #[test]
    fn an_event_raised_to_a_finished_instance_is_refused() {
        let mut state = with_instances(&[
            ("done", RuntimeStatus::Completed, None, None),
            ("failed", RuntimeStatus::Failed, None, None),
        ]);
        let mut plan = Plan::default();
        let refused = plan.enqueue("done", &raised("approve"), None, &mut state, NOW);
        assert!(
            matches!(&refused, Err(Error::InstanceFinished { instance_id, status, message })
                if instance_id == "done" && status == "Completed" && message.contains("`approve`")),
            "{refused:?}"
        );
        assert!(plan.messages.is_empty(), "nothing was written");
        // Control messages still reach finished instances: a rewind of a failed one.
        let rewind = Event::ExecutionRewound {
            reason: "fixed".to_owned(),
        };
        plan.enqueue("failed", &rewind, None, &mut state, NOW)
            .unwrap();
        assert_eq!(plan.rewound, ["failed"]);
        assert_eq!(plan.messages.len(), 1);
        // Unknown instances are not found; an entity exists from its first message on.
        let missing = plan.enqueue("nobody", &raised("x"), None, &mut state, NOW);
        assert!(
            matches!(missing, Err(Error::InstanceNotFound(_))),
            "{missing:?}"
        );
        plan.enqueue("@counter@a", &raised("x"), None, &mut state, NOW)
            .unwrap();
        assert_eq!(plan.new_entities.len(), 1);
    }

    #[test]
    fn a_turn_holds_its_own_timers_not_yet_due_for_its_owner_when_asked() {
        let mut state = with_instances(&[
            ("i", RuntimeStatus::Running, Some("w1"), Some(NOW + 1)),
            ("other", RuntimeStatus::Running, None, None),
        ]);
        state.reserve_after(0, 10, 0, 0);
        let timer = |instance_id: &str, seq: u64, at: i64| NewMessage {
            instance_id: instance_id.into(),
            visible_at: from_millis(at),
            event: Event::TimerFired {
                seq,
                fire_at: from_millis(at),
            },
            execution: Some(0),
        };
        let mut held = turn("i", "w1");
        held.hold_timers = true;
        held.messages = vec![
            timer("i", 0, NOW + 1_000),
            timer("i", 1, NOW),
            timer("other", 2, NOW + 1_000),
            NewMessage {
                event: raised("later"),
                ..timer("i", 3, NOW + 1_000)
            },
        ];
        let mut plan = Plan::default();
        let committed = plan.turn(&held, lease(), &mut state, NOW).unwrap();
        assert_eq!(
            committed.held_timers.len(),
            1,
            "{:?}",
            committed.held_timers
        );
        let kept = &committed.held_timers[0];
        assert!(matches!(kept.event, Event::TimerFired { seq: 0, .. }));
        let leased: Vec<(i64, Option<&str>)> = plan
            .messages
            .iter()
            .map(|row| (row.0, row.5.as_deref()))
            .collect();
        assert_eq!(
            leased,
            [(kept.id, Some("w1")), (2, None), (3, None), (4, None)],
            "only its own timer not yet due is leased"
        );

        let mut not_asked = turn("i", "w1");
        not_asked.history_start = 1;
        not_asked.messages = vec![timer("i", 5, NOW + 1_000)];
        let committed = plan.turn(&not_asked, lease(), &mut state, NOW).unwrap();
        assert!(committed.held_timers.is_empty());
        assert_eq!(plan.messages.last().unwrap().5, None);
    }

    #[test]
    fn a_turn_voids_a_release_of_its_instance_earlier_in_the_batch() {
        let mut state = with_instances(&[("i", RuntimeStatus::Running, Some("w1"), Some(NOW + 1))]);
        let mut plan = Plan::default();
        plan.release("i", "w1", &mut state);
        plan.release("j", "w1", &mut state);
        plan.turn(&turn("i", "w1"), lease(), &mut state, NOW)
            .unwrap();
        assert_eq!(plan.releases, [("j".to_owned(), "w1".to_owned())]);
        assert_eq!(state.instances["i"].locked_by.as_deref(), Some("w1"));
    }

    #[test]
    fn a_first_turn_creates_its_instance_without_a_start_message() {
        let mut state = with_instances(&[
            ("running", RuntimeStatus::Running, Some("w2"), Some(NOW + 1)),
            ("done", RuntimeStatus::Completed, None, None),
        ]);
        let mut plan = Plan::default();
        let creating = |id: &str| {
            let mut first = turn(id, "w1");
            first.create = Some(new_instance(id));
            first
        };
        plan.turn(&creating("new"), lease(), &mut state, NOW)
            .unwrap();
        assert_eq!(plan.new_instances.len(), 1);
        assert_eq!(plan.new_instances[0].5.as_deref(), Some("w1"));
        assert!(plan.messages.is_empty(), "no start message is queued");
        assert_eq!(plan.updates.len(), 1, "the row gets the turn's status");
        assert_eq!(state.instances["new"].locked_by.as_deref(), Some("w1"));

        // A running id refuses the turn, writing nothing of it; a finished one is replaced.
        let refused = plan.turn(&creating("running"), lease(), &mut state, NOW);
        assert!(
            matches!(refused, Err(Error::InstanceExists { .. })),
            "{refused:?}"
        );
        assert_eq!((plan.new_instances.len(), plan.updates.len()), (1, 1));
        plan.turn(&creating("done"), lease(), &mut state, NOW)
            .unwrap();
        assert_eq!(plan.replaced, ["done"]);
        assert_eq!(plan.new_instances.len(), 2);

        // Only a first turn that consumes nothing creates.
        let mut consuming = creating("other");
        consuming.consumed = vec![3];
        let refused = plan.turn(&consuming, lease(), &mut state, NOW);
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        assert!(!state.instances.contains_key("other"));
    }

    #[test]
    fn a_turn_commits_under_its_own_lapsed_lease_and_conflicts_under_another_workers() {
        let mut state = with_instances(&[
            ("mine", RuntimeStatus::Running, Some("w1"), Some(NOW - 1)),
            (
                "theirs",
                RuntimeStatus::Running,
                Some("w2"),
                Some(NOW + 10_000),
            ),
            ("lapsed", RuntimeStatus::Running, Some("w2"), Some(NOW - 1)),
        ]);
        let mut plan = Plan::default();
        let conflict = plan.turn(&turn("theirs", "w1"), lease(), &mut state, NOW);
        assert!(
            matches!(conflict, Err(Error::Conflict { .. })),
            "{conflict:?}"
        );
        assert!(!plan.has_core_writes(), "a refused turn writes nothing");

        // Nobody took it over (the batch holds the row): the lapsed lease is still its own.
        plan.turn(&turn("mine", "w1"), lease(), &mut state, NOW)
            .unwrap();
        // Another worker's lease that lapsed is nobody's.
        plan.turn(&turn("lapsed", "w1"), lease(), &mut state, NOW)
            .unwrap();
        assert_eq!(plan.updates.len(), 2);
        assert_eq!(plan.history.len(), 2);
        let holder = |id: &str| state.instances[id].locked_by.clone();
        assert_eq!(holder("mine").as_deref(), Some("w1"));
        assert_eq!(holder("lapsed").as_deref(), Some("w1"));
    }

    #[test]
    fn cancelled_timers_are_listed_unless_the_turn_drops_every_timer() {
        let mut state = with_instances(&[
            (
                "goes-on",
                RuntimeStatus::Running,
                Some("w1"),
                Some(NOW + 10_000),
            ),
            (
                "ends",
                RuntimeStatus::Running,
                Some("w1"),
                Some(NOW + 10_000),
            ),
        ]);
        let mut plan = Plan::default();
        let mut goes_on = turn("goes-on", "w1");
        goes_on.cancelled_timers = vec![3];
        plan.turn(&goes_on, lease(), &mut state, NOW).unwrap();
        // Its instance's messages all go when it ends: nothing to list (and nothing for two
        // deletes of one statement to both find).
        let mut ends = turn("ends", "w1");
        ends.cancelled_timers = vec![4];
        ends.status = Some(RuntimeStatus::Completed);
        plan.turn(&ends, lease(), &mut state, NOW).unwrap();
        assert_eq!(plan.cancelled_timers, [("goes-on".to_owned(), 3, 0)]);
        assert_eq!(plan.finished, ["ends"]);
    }

    #[test]
    fn consumed_messages_not_held_or_listed_twice_conflict() {
        let run = |consumed: &[i64], completed: &[i64]| {
            let mut state =
                with_instances(&[("i", RuntimeStatus::Running, Some("w1"), Some(NOW + 1))]);
            state.messages.insert(1, Some("w1".to_owned()));
            state.messages.insert(2, Some("w2".to_owned()));
            state.messages.insert(3, None);
            state.items.insert(7, Some("w1".to_owned()));
            state.items.insert(8, Some("w2".to_owned()));
            let mut turn = turn("i", "w1");
            turn.consumed = consumed.to_vec();
            turn.completed_activities = completed.to_vec();
            let mut plan = Plan::default();
            let result = plan.turn(&turn, lease(), &mut state, NOW);
            if result.is_err() {
                assert!(!plan.has_core_writes(), "a refused turn writes nothing");
            }
            (result.map(|_| ()), plan)
        };
        let conflicts = |consumed: &[i64], completed: &[i64]| {
            matches!(run(consumed, completed).0, Err(Error::Conflict { .. }))
        };
        assert!(conflicts(&[2], &[]), "leased to another worker");
        assert!(conflicts(&[3], &[]), "leased to nobody");
        assert!(conflicts(&[4], &[]), "gone");
        assert!(conflicts(&[1, 1], &[]), "listed twice");
        assert!(conflicts(&[], &[8]), "another worker's work item");
        assert!(conflicts(&[], &[7, 7]), "a work item listed twice");
        let (result, plan) = run(&[1], &[7]);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!((plan.consumed, plan.done_items), (vec![1], vec![7]));
    }

    #[test]
    fn queue_ids_are_taken_in_order_from_the_reserved_block() {
        // SQLite: the ids after the counters.
        let mut state = with_instances(&[("i", RuntimeStatus::Running, Some("w1"), Some(NOW + 1))]);
        state.reserve_after(10, 3, 20, 2);
        let mut plan = Plan::default();
        let mut commit = turn("i", "w1");
        commit.activities = (0..2)
            .map(|seq| NewActivity {
                seq,
                name: "charge".to_owned(),
                input: Payload::null(),
                timeouts: Default::default(),
                deadline: None,
                heartbeat: None,
                run_here: true,
                in_memory: false,
                flow_key: None,
                priority: 0,
                attempt: 1,
            })
            .collect();
        commit.messages = (0..2)
            .map(|seq| NewMessage {
                instance_id: "i".to_owned(),
                visible_at: from_millis(NOW + 60_000),
                event: Event::TimerFired {
                    seq,
                    fire_at: from_millis(NOW + 60_000),
                },
                execution: Some(0),
            })
            .collect();
        let committed = plan.turn(&commit, lease(), &mut state, NOW).unwrap();
        assert_eq!(committed.activity_ids, [21, 22]);
        assert_eq!(message_ids(&plan), [11, 12]);
        plan.enqueue("i", &raised("x"), None, &mut state, NOW)
            .unwrap();
        assert_eq!(message_ids(&plan), [11, 12, 13]);

        // PostgreSQL: whatever the sequence handed out, lowest first.
        let mut state = with_instances(&[("i", RuntimeStatus::Running, None, None)]);
        state.reserve(vec![42, 7, 19], vec![]);
        let mut plan = Plan::default();
        for _ in 0..3 {
            plan.enqueue("i", &raised("x"), None, &mut state, NOW)
                .unwrap();
        }
        assert_eq!(message_ids(&plan), [7, 19, 42]);
    }

    #[test]
    fn a_completion_by_a_worker_that_does_not_hold_the_item_writes_nothing() {
        let mut state =
            with_instances(&[("i", RuntimeStatus::Running, Some("w1"), Some(NOW + 10_000))]);
        state.items.insert(5, Some("w2".to_owned()));
        state.items.insert(6, Some("w1".to_owned()));
        state.reserve_after(0, 2, 0, 0);
        let mut plan = Plan::default();
        assert!(
            plan.complete(&completion(5, "i", "w1"), lease(), &mut state, NOW)
                .is_none()
        );
        assert!(!plan.has_core_writes(), "nothing to write");
        assert!(!plan.effects.work);

        // The holder's result is delivered to it at once when it also holds the instance.
        let delivered = plan.complete(&completion(6, "i", "w1"), lease(), &mut state, NOW);
        assert_eq!(delivered.map(|m| m.id), Some(1));
        assert_eq!(plan.done_items, [6]);
        assert_eq!(plan.messages[0].5.as_deref(), Some("w1"), "claimed for it");
        // Completed once: the item is gone.
        assert!(
            plan.complete(&completion(6, "i", "w1"), lease(), &mut state, NOW)
                .is_none()
        );
        assert_eq!(plan.done_items, [6]);
    }

    #[test]
    fn each_op_sees_the_ops_before_it_and_gets_its_own_outcome() {
        let mut state = State::default();
        state.reserve_after(0, 2, 0, 0);
        let (create, _created) = oneshot::channel();
        let (raise, _raised) = oneshot::channel();
        let mut ops = [
            Op::Create {
                instance: new_instance("new"),
                claim: None,
                offer: false,
                reply: Reply::new(create),
            },
            Op::Enqueue {
                instance_id: "new".to_owned(),
                event: raised("go"),
                visible_at: None,
                reply: Reply::new(raise),
            },
        ];
        assert_eq!(ids_needed(&ops), (2, 0));
        assert_eq!(touched(&ops).instances, ["new"]);
        let mut plan = Plan::default();
        for op in &mut ops {
            plan.apply(op, &mut state, NOW);
        }
        for op in &ops {
            let ok = match op {
                Op::Create { reply, .. } => matches!(reply.outcome(), Some(Ok(None))),
                Op::Enqueue { reply, .. } => matches!(reply.outcome(), Some(Ok(()))),
                _ => false,
            };
            assert!(ok, "every op got its outcome");
        }
        assert_eq!(message_ids(&plan), [1, 2]);
    }
}

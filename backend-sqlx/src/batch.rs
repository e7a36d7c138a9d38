//! Group commit, shared by the backends: store calls become [`Op`]s, a writer task takes
//! every op waiting when it is free and commits them in one transaction, and the [`Plan`]
//! turns a batch into a few merged writes over JSON arrays.
//!
//! The planning is the same for every database: validate each op against the state of the
//! rows it touches (read at the start of the transaction), allocate queue ids from a block
//! reserved for the batch, and collect the rows to write. Each backend implements
//! [`BatchExecutor`]: how to read that state, how to write a plan, and the statements of the
//! ops that run on their own (claims, purges).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use duractor::entity::EntityId;
use duractor::store::{
    ActivityCompletion, ActivityWorkItem, EntityCleanup, HeldWork, NewInstance,
    OrchestrationMessage, PurgeQuery, StoreEvents, TurnCommit, TurnCommitted,
};
use duractor::{Error, Event, RuntimeStatus};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::common::{encode_event, is_transient, millis, store_error};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A store call for the writer.
pub(crate) enum Op {
    Create {
        instance: NewInstance,
        reply: Reply<()>,
    },
    Enqueue {
        instance_id: String,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
        reply: Reply<()>,
    },
    CleanEntities {
        reply: Reply<EntityCleanup>,
    },
    Abandon {
        owner: String,
        ids: Vec<i64>,
        visible_at: DateTime<Utc>,
        reply: Reply<()>,
    },
    Purge {
        query: PurgeQuery,
        reply: Reply<u64>,
    },
    Turn {
        turn: TurnCommit,
        /// How long the instance and the new work items stay leased, from when it runs.
        lease: Lease,
        reply: Reply<TurnCommitted>,
    },
    Complete {
        completion: ActivityCompletion,
        lease: Lease,
        reply: Reply<Option<OrchestrationMessage>>,
    },
    ClaimMessages {
        owner: String,
        limit: u32,
        lease: Lease,
        reply: Reply<Vec<OrchestrationMessage>>,
    },
    ClaimActivities {
        owner: String,
        limit: u32,
        lease: Lease,
        reply: Reply<Vec<ActivityWorkItem>>,
    },
    Renew {
        owner: String,
        held: HeldWork,
        lease: Lease,
        reply: Reply<Vec<String>>,
    },
    Release {
        instance_id: String,
        owner: String,
        reply: Reply<()>,
    },
    ReleaseAll {
        owner: String,
        reply: Reply<()>,
    },
    ResetLeases {
        reply: Reply<()>,
    },
}

/// A lease length, measured from when the op runs (not from when it was queued: a call that
/// waits behind a slow batch, or for a connection, still gets its whole lease).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease(i64);

impl Lease {
    /// The length of a lease that the caller, now, asked to last until `until`.
    pub(crate) fn until(until: DateTime<Utc>) -> Lease {
        Lease((millis(until) - crate::common::now_ms()).max(0))
    }

    /// The lease's deadline for an op running at `now` (Unix ms).
    pub(crate) fn from(self, now: i64) -> i64 {
        now.saturating_add(self.0)
    }
}

/// The sending side of a writer: every write of the [`duractor::Store`] contract as an
/// [`Op`] for the writer, awaiting its reply. Both backends' stores forward to it.
#[derive(Clone)]
pub(crate) struct Writes {
    ops: mpsc::UnboundedSender<Op>,
    /// Which writer, for the error when it has stopped.
    database: &'static str,
}

impl Writes {
    pub(crate) fn new(ops: mpsc::UnboundedSender<Op>, database: &'static str) -> Self {
        Writes { ops, database }
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, Error> {
        let stopped = || Error::store(format!("the {} writer has stopped", self.database));
        let (reply, answer) = oneshot::channel();
        self.ops.send(make(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        self.write(|reply| Op::Create { instance, reply }).await
    }

    pub(crate) async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        let instance_id = instance_id.to_owned();
        self.write(|reply| Op::Enqueue {
            instance_id,
            event,
            visible_at,
            reply,
        })
        .await
    }

    pub(crate) async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.write(|reply| Op::Abandon {
            owner,
            ids,
            visible_at,
            reply,
        })
        .await
    }

    pub(crate) async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        let query = query.clone();
        self.write(|reply| Op::Purge { query, reply }).await
    }

    pub(crate) async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        let owner = owner.to_owned();
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::ClaimMessages {
            owner,
            limit,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn claim_activities(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ActivityWorkItem>, Error> {
        let owner = owner.to_owned();
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::ClaimActivities {
            owner,
            limit,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        let lease = Lease::until(turn.lease_until);
        self.write(|reply| Op::Turn { turn, lease, reply }).await
    }

    pub(crate) async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let lease = Lease::until(completion.lease_until);
        self.write(|reply| Op::Complete {
            completion,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let (owner, held) = (owner.to_owned(), held.clone());
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::Renew {
            owner,
            held,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn release_instance(
        &self,
        instance_id: &str,
        owner: &str,
    ) -> Result<(), Error> {
        let (instance_id, owner) = (instance_id.to_owned(), owner.to_owned());
        self.write(|reply| Op::Release {
            instance_id,
            owner,
            reply,
        })
        .await
    }

    /// Releases everything `owner` holds (a worker stopping).
    pub(crate) async fn release_all(&self, owner: &str) -> Result<(), Error> {
        let owner = owner.to_owned();
        self.write(|reply| Op::ReleaseAll { owner, reply }).await
    }

    /// Voids every lease (the only worker of a file starting).
    pub(crate) async fn reset_leases(&self) -> Result<(), Error> {
        self.write(|reply| Op::ResetLeases { reply }).await
    }

    pub(crate) async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.write(|reply| Op::CleanEntities { reply }).await
    }
}

/// The result of one op, sent to its caller after the commit.
pub(crate) enum Outcome {
    Unit(Result<(), Error>),
    Turn(Result<TurnCommitted, Error>),
    Delivered(Result<Option<OrchestrationMessage>, Error>),
    Messages(Result<Vec<OrchestrationMessage>, Error>),
    Items(Result<Vec<ActivityWorkItem>, Error>),
    Count(Result<u64, Error>),
    Cleanup(Result<EntityCleanup, Error>),
    /// Instances a renewal found no longer held.
    Lost(Result<Vec<String>, Error>),
}

impl Op {
    /// Whether this op only claims work (it reads and leases rows, writes nothing else).
    pub(crate) fn is_claim(&self) -> bool {
        matches!(self, Op::ClaimMessages { .. } | Op::ClaimActivities { .. })
    }

    pub(crate) fn reply(self, outcome: Result<Outcome, Error>) {
        fn send<T>(reply: Reply<T>, result: Result<T, Error>) {
            let _ = reply.send(result);
        }
        let mismatch = || Error::store("internal error: mismatched writer outcome");
        match (self, outcome) {
            (
                Op::Create { reply, .. }
                | Op::Enqueue { reply, .. }
                | Op::Abandon { reply, .. }
                | Op::Release { reply, .. }
                | Op::ReleaseAll { reply, .. }
                | Op::ResetLeases { reply },
                outcome,
            ) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Unit(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Turn { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Turn(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Complete { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Delivered(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::ClaimMessages { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Messages(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::ClaimActivities { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Items(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::CleanEntities { reply }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Cleanup(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Purge { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Count(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Renew { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Lost(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
        }
    }
}

impl Op {
    /// Ops that run after the merged writes, each with statements of its own.
    pub(crate) fn runs_after_writes(&self) -> bool {
        matches!(
            self,
            Op::ClaimMessages { .. }
                | Op::ClaimActivities { .. }
                | Op::Abandon { .. }
                | Op::Purge { .. }
                | Op::CleanEntities { .. }
                | Op::Renew { .. }
        )
    }
}

/// A JSON array parameter.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) instances: HashMap<String, InstanceState>,
    /// Work item id -> lease owner.
    pub(crate) items: HashMap<i64, Option<String>>,
    /// Queue message id -> lease owner, for the messages turns consume.
    pub(crate) messages: HashMap<i64, Option<String>>,
    /// Queue ids reserved for this batch (see [`ids_needed`]), taken in order.
    pub(crate) message_ids: VecDeque<i64>,
    pub(crate) item_ids: VecDeque<i64>,
    pub(crate) last_message_id: i64,
    pub(crate) last_item_id: i64,
    pub(crate) extra_ids: i64,
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
}

pub(crate) struct InstanceState {
    pub(crate) status: String,
    pub(crate) history_len: i64,
    pub(crate) locked_by: Option<String>,
    pub(crate) locked_until: Option<i64>,
}

/// What the batch changes, besides rows: notifications to send after the commit.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) work: bool,
    pub(crate) finished: Vec<String>,
}

/// The merged writes of a batch, as JSON-array parameters.
#[derive(Default)]
pub(crate) struct Plan {
    /// [instance_id, name, version, input, created_at]
    pub(crate) new_instances: Vec<(String, String, String, String, i64)>,
    /// Finished instances being started again: their old rows go.
    pub(crate) replaced: Vec<String>,
    /// [instance_id, idx, event]
    pub(crate) history: Vec<(String, i64, String)>,
    pub(crate) consumed: Vec<i64>,
    /// Instances that finished in this batch: their remaining messages go.
    pub(crate) finished: Vec<String>,
    pub(crate) done_items: Vec<i64>,
    pub(crate) messages: Vec<MessageRow>,
    /// [id, instance_id, seq, name, input, execution, locked_by, locked_until]
    pub(crate) activities: Vec<ActivityRow>,
    pub(crate) updates: Vec<Update>,
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
    /// [instance_id, owner]
    pub(crate) releases: Vec<(String, String)>,
    pub(crate) release_all: Vec<String>,
    pub(crate) effects: Effects,
}

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

/// [id, instance_id, seq, name, input, execution, locked_by, locked_until]
pub(crate) type ActivityRow = (i64, String, i64, String, String, u32, String, i64);

/// [instance_id, status, output, failure, custom_status, history_len, updated_at,
///  completed_at, locked_by, locked_until, reset, input]; with `reset`, output, failure and
/// completed_at are set as given (a rewound instance loses its failure); `input` replaces
/// the input when set (continue-as-new).
#[derive(Serialize)]
pub(crate) struct Update(
    String,
    Option<&'static str>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    bool,
    Option<String>,
);

impl Plan {
    pub(crate) fn has_core_writes(&self) -> bool {
        !(self.history.is_empty()
            && self.reset_history.is_empty()
            && self.rewound.is_empty()
            && self.new_entities.is_empty()
            && self.entity_updates.is_empty()
            && self.consumed.is_empty()
            && self.finished.is_empty()
            && self.done_items.is_empty()
            && self.messages.is_empty()
            && self.activities.is_empty()
            && self.updates.is_empty())
    }

    pub(crate) fn has_lease_writes(&self) -> bool {
        self.reset_leases || !self.releases.is_empty() || !self.release_all.is_empty()
    }

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

    /// Validates one op against the current state and adds its writes to the plan.
    pub(crate) fn apply(&mut self, op: &Op, state: &mut State, now: i64) -> Outcome {
        match op {
            Op::Create { instance, .. } => Outcome::Unit(self.create(instance, state)),
            Op::Enqueue {
                instance_id,
                event,
                visible_at,
                ..
            } => Outcome::Unit(if self.ensure_target(state, instance_id, now) {
                if let Event::EventRaised { name, .. } = event
                    && let Some(status) = state.finished_status(instance_id)
                {
                    return Outcome::Unit(Err(Error::InstanceFinished {
                        instance_id: instance_id.clone(),
                        status,
                        message: format!(
                            "it can no longer receive events (event `{name}` was not stored)"
                        ),
                    }));
                }
                let visible_at = visible_at.map_or(now, |at| millis(at).max(now));
                self.add_message(state, instance_id, visible_at, event, None, None);
                if matches!(event, Event::ExecutionRewound { .. }) {
                    self.rewound.push(instance_id.clone());
                }
                if visible_at <= now {
                    self.effects.work = true;
                }
                Ok(())
            } else {
                Err(Error::InstanceNotFound(instance_id.clone()))
            }),
            Op::Turn { turn, lease, .. } => Outcome::Turn(self.turn(turn, *lease, state, now)),
            Op::Complete {
                completion, lease, ..
            } => Outcome::Delivered(Ok(self.complete(completion, *lease, state, now))),
            Op::Release {
                instance_id, owner, ..
            } => {
                self.releases.push((instance_id.clone(), owner.clone()));
                if let Some(instance) = state.instances.get_mut(instance_id)
                    && instance.locked_by.as_deref() == Some(owner)
                {
                    instance.locked_by = None;
                    instance.locked_until = None;
                }
                Outcome::Unit(Ok(()))
            }
            Op::ReleaseAll { owner, .. } => {
                self.release_all.push(owner.clone());
                self.effects.work = true;
                Outcome::Unit(Ok(()))
            }
            Op::ResetLeases { .. } => {
                self.reset_leases = true;
                Outcome::Unit(Ok(()))
            }
            // Filled in after the writes.
            Op::ClaimMessages { .. } => Outcome::Messages(Ok(Vec::new())),
            Op::ClaimActivities { .. } => Outcome::Items(Ok(Vec::new())),
            Op::Abandon { .. } => Outcome::Unit(Ok(())),
            Op::Purge { .. } => Outcome::Count(Ok(0)),
            Op::CleanEntities { .. } => Outcome::Cleanup(Ok(EntityCleanup::default())),
            Op::Renew { .. } => Outcome::Lost(Ok(Vec::new())),
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

    fn create(&mut self, instance: &NewInstance, state: &mut State) -> Result<(), Error> {
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
        let created_at = millis(instance.created_at);
        self.new_instances.push((
            instance.instance_id.clone(),
            instance.name.clone(),
            instance.version.clone(),
            instance.input.as_str().to_owned(),
            created_at,
        ));
        state.instances.insert(
            instance.instance_id.clone(),
            InstanceState {
                status: RuntimeStatus::Pending.as_str().to_owned(),
                history_len: 0,
                locked_by: None,
                locked_until: None,
            },
        );
        let start = Event::ExecutionStarted {
            name: instance.name.clone(),
            version: instance.version.clone(),
            input: instance.input.clone(),
            execution: 0,
            parent: instance.parent.clone(),
        };
        self.add_message(state, &instance.instance_id, created_at, &start, None, None);
        self.effects.work = true;
        Ok(())
    }

    fn turn(
        &mut self,
        turn: &TurnCommit,
        lease: Lease,
        state: &mut State,
        now: i64,
    ) -> Result<TurnCommitted, Error> {
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
        let mut seen = std::collections::HashSet::with_capacity(turn.consumed.len());
        let mut seen_items = std::collections::HashSet::new();
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
        self.consumed.extend(&turn.consumed);
        self.done_items.extend(&turn.completed_activities);
        for id in &turn.consumed {
            state.messages.remove(id);
        }
        for id in &turn.completed_activities {
            state.items.remove(id);
        }
        let lease_until = lease.from(now);
        let mut activity_ids = Vec::with_capacity(turn.activities.len());
        for activity in &turn.activities {
            let id = state.take_item_id();
            self.activities.push((
                id,
                turn.instance_id.clone(),
                i64::try_from(activity.seq).unwrap_or(i64::MAX),
                activity.name.clone(),
                activity.input.as_str().to_owned(),
                turn.execution,
                turn.owner.clone(),
                lease_until,
            ));
            activity_ids.push(id);
        }
        let terminal = turn.status.is_some_and(RuntimeStatus::is_terminal);
        for child in &turn.new_instances {
            if let Err(error) = self.create(child, state)
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
        for message in &turn.messages {
            if terminal && message.instance_id == turn.instance_id {
                continue; // the instance is done: its own timers would only be dropped
            }
            if !self.ensure_target(state, &message.instance_id, now) {
                tracing::debug!(instance_id = %message.instance_id, "dropping a message to an instance that does not exist");
                continue;
            }
            let visible_at = millis(message.visible_at);
            self.add_message(
                state,
                &message.instance_id,
                visible_at,
                &message.event,
                message.execution,
                None,
            );
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
        ));
        if let Some(instance) = state.instances.get_mut(&turn.instance_id) {
            instance.history_len = history_len;
            instance.locked_by = locked_by;
            instance.locked_until = locked_until;
            if let Some(status) = turn.status {
                instance.status = status.as_str().to_owned();
            }
        }
        Ok(TurnCommitted { activity_ids })
    }

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

/// What a committed batch produced: each op's outcome, and the notifications to send.
pub(crate) type Done = (Vec<Outcome>, Effects);

/// Why an attempt at a batch failed, and whether its commit may have happened anyway.
pub(crate) struct AttemptError {
    pub(crate) error: sqlx::Error,
    /// Set when the error came while the commit was on its way (the `COMMIT`, or a statement
    /// that commits on its own): the attempt's number and what it would have produced. The
    /// answer may have been lost after the database committed.
    pub(crate) in_commit: Option<(i64, Done)>,
}

impl From<sqlx::Error> for AttemptError {
    /// An error before the commit: the database rolls the transaction back.
    fn from(error: sqlx::Error) -> Self {
        AttemptError {
            error,
            in_commit: None,
        }
    }
}

/// One backend's way of running a batch of ops in one transaction.
///
/// **Commit fences.** Every transaction a writer runs records its attempt number in the
/// writer's row of the `writers` table (`writer`, `batch`), in its first statement. When an
/// attempt fails while its commit is on its way, the commit may have happened with the answer
/// lost (a connection cut after the server ran `COMMIT`): [`committed`](Self::committed)
/// reads the row — waiting for any transaction that still holds it — and the batch is either
/// answered as committed or run again, never both and never neither.
#[async_trait::async_trait]
pub(crate) trait BatchExecutor: Send + 'static {
    /// A name for logs and errors ("SQLite", "PostgreSQL").
    const DATABASE: &'static str;

    /// One attempt at the batch inside one transaction, committed when it returns `Ok`.
    async fn execute(&mut self, ops: &[Op]) -> Result<Done, AttemptError>;

    /// Ends a failed attempt (rolls back whatever is open).
    async fn abort(&mut self);

    /// Whether attempt `attempt` committed, once no transaction can still be deciding it.
    async fn committed(&mut self, attempt: i64) -> Result<bool, sqlx::Error>;

    /// Whether `error`, met while a commit was on its way, leaves its outcome unknown (the
    /// connection failed) rather than saying it failed (the database answered).
    fn outcome_unknown(error: &sqlx::Error) -> bool;
}

/// Runs the writer loop until every sender is dropped: takes the ops waiting (up to
/// `max_batch`), commits them together, replies, and tells `events`.
pub(crate) async fn run_writer<B: BatchExecutor>(
    mut executor: B,
    mut rx: mpsc::UnboundedReceiver<Op>,
    events: Arc<StoreEvents>,
    max_batch: usize,
) {
    let mut batch = Vec::new();
    while let Some(op) = rx.recv().await {
        batch.push(op);
        while batch.len() < max_batch.max(1) {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = commit(&mut executor, &batch).await;
        reply(std::mem::take(&mut batch), result, &events);
    }
}

/// Commits a batch, retrying transient failures (a busy database, a dropped connection). A
/// failure while the commit was on its way is settled first: if the attempt committed, that
/// is the result; only if it did not is the batch run again.
pub(crate) async fn commit<B: BatchExecutor>(executor: &mut B, ops: &[Op]) -> Result<Done, Error> {
    let mut failures = 0u32;
    loop {
        let AttemptError { error, in_commit } = match executor.execute(ops).await {
            Ok(done) => return Ok(done),
            Err(failed) => failed,
        };
        executor.abort().await;
        if let Some((attempt, done)) = in_commit
            && B::outcome_unknown(&error)
        {
            tracing::warn!(%error, attempt, database = B::DATABASE, "the answer to a commit was lost; finding out whether it happened");
            if settle(executor, attempt).await {
                tracing::info!(
                    attempt,
                    database = B::DATABASE,
                    "the commit whose answer was lost had happened"
                );
                return Ok(done);
            }
            tracing::info!(
                attempt,
                database = B::DATABASE,
                "the commit whose answer was lost had not happened; running the batch again"
            );
        }
        if is_transient(&error) && failures < 10 {
            failures += 1;
            let delay = Duration::from_millis(5u64 << failures.min(8));
            tracing::debug!(%error, failures, database = B::DATABASE, "retrying a write batch");
            tokio::time::sleep(delay).await;
            continue;
        }
        tracing::warn!(%error, ops = ops.len(), database = B::DATABASE, "a write batch failed");
        return Err(store_error(
            &format!("committing to {}", B::DATABASE),
            error,
        ));
    }
}

/// Whether `attempt` committed, asking until the database answers: its callers must not be
/// told anything else, so they wait (the database is down meanwhile anyway).
pub(crate) async fn settle<B: BatchExecutor>(executor: &mut B, attempt: i64) -> bool {
    let mut failures = 0u32;
    loop {
        match executor.committed(attempt).await {
            Ok(committed) => return committed,
            Err(error) => {
                failures += 1;
                let delay =
                    Duration::from_millis(10u64 << failures.min(9)).min(Duration::from_secs(5));
                if failures.is_power_of_two() {
                    tracing::warn!(%error, attempt, failures, database = B::DATABASE, "cannot find out whether a commit happened yet; asking again");
                }
                executor.abort().await;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Answers every op of a batch.
fn reply(ops: Vec<Op>, result: Result<Done, Error>, events: &StoreEvents) {
    match result {
        Ok((outcomes, effects)) => {
            for (op, outcome) in ops.into_iter().zip(outcomes) {
                op.reply(Ok(outcome));
            }
            if effects.work {
                events.notify_work();
            }
            for instance_id in &effects.finished {
                events.notify_finished(instance_id);
            }
        }
        Err(error) => {
            for op in ops {
                op.reply(Err(error.clone()));
            }
        }
    }
}

/// Numbers attempts of one writer: distinct from other writers' (a random start), so a
/// number also marks the rows a claim took.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// The writer's id in the `writers` table.
    pub(crate) writer: String,
    next: i64,
}

impl Attempts {
    pub(crate) fn new() -> Self {
        let random = uuid::Uuid::new_v4().as_u64_pair().0;
        Attempts {
            writer: uuid::Uuid::new_v4().simple().to_string(),
            // Positive, with room for 2^40 attempts.
            next: i64::try_from(random >> 24).unwrap_or(1).max(1),
        }
    }

    /// The next attempt's number.
    pub(crate) fn next(&mut self) -> i64 {
        self.next += 1;
        self.next
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
                items += turn.activities.len();
            }
            _ => {}
        }
    }
    (messages, items)
}

impl State {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one attempt does.
    enum Step {
        Commits,
        /// Fails before its commit was sent.
        FailsBefore(fn() -> sqlx::Error),
        /// Fails while its commit was on its way.
        FailsInCommit(fn() -> sqlx::Error),
    }

    /// An executor whose attempts fail as scripted, and whose commits the test decides.
    struct Scripted {
        attempts: VecDeque<Step>,
        /// Whether the attempt whose answer was lost had committed.
        committed: bool,
        executed: u32,
        asked: u32,
    }

    fn lost() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    fn done(marker: u64) -> Done {
        (vec![Outcome::Count(Ok(marker))], Effects::default())
    }

    #[async_trait::async_trait]
    impl BatchExecutor for Scripted {
        const DATABASE: &'static str = "scripted";

        async fn execute(&mut self, _: &[Op]) -> Result<Done, AttemptError> {
            self.executed += 1;
            let attempt = i64::from(self.executed);
            let (error, in_commit) = match self.attempts.pop_front() {
                Some(Step::Commits) | None => return Ok(done(u64::from(self.executed))),
                Some(Step::FailsBefore(error)) => (error, false),
                Some(Step::FailsInCommit(error)) => (error, true),
            };
            Err(AttemptError {
                error: error(),
                in_commit: in_commit.then(|| (attempt, done(u64::from(self.executed)))),
            })
        }

        async fn abort(&mut self) {}

        async fn committed(&mut self, _: i64) -> Result<bool, sqlx::Error> {
            self.asked += 1;
            Ok(self.committed)
        }

        fn outcome_unknown(error: &sqlx::Error) -> bool {
            matches!(error, sqlx::Error::Io(_))
        }
    }

    fn marker(result: Result<Done, Error>) -> u64 {
        match result {
            Ok((outcomes, _)) => match outcomes.first() {
                Some(Outcome::Count(Ok(n))) => *n,
                _ => panic!("unexpected outcome"),
            },
            Err(error) => panic!("{error}"),
        }
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_after_it_happened_is_answered_once() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(lost)]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        // The first attempt's outcome, not a second run.
        assert_eq!(marker(commit(&mut executor, &[]).await), 1);
        assert_eq!((executor.executed, executor.asked), (1, 1));
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_before_it_happened_runs_again() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(lost), Step::Commits]),
            committed: false,
            executed: 0,
            asked: 0,
        };
        assert_eq!(marker(commit(&mut executor, &[]).await), 2);
        assert_eq!((executor.executed, executor.asked), (2, 1));
    }

    #[tokio::test]
    async fn failures_before_the_commit_are_retried_without_asking() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsBefore(lost), Step::Commits]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        assert_eq!(marker(commit(&mut executor, &[]).await), 2);
        assert_eq!((executor.executed, executor.asked), (2, 0));
    }

    #[tokio::test]
    async fn an_answered_failure_in_the_commit_is_not_settled() {
        // The database answered (here: a protocol error, not a lost connection): the commit
        // did not happen, and the error is not one that passes.
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(|| sqlx::Error::Protocol("no".into()))]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        assert!(commit(&mut executor, &[]).await.is_err());
        assert_eq!((executor.executed, executor.asked), (1, 0));
    }

    #[test]
    fn leases_are_measured_from_when_the_op_runs() {
        let lease = Lease::until(
            DateTime::from_timestamp_millis(crate::common::now_ms() + 30_000).unwrap_or_default(),
        );
        // Run 10 s later, the lease still has (about) its 30 s.
        let later = crate::common::now_ms() + 10_000;
        let until = lease.from(later);
        assert!((until - later - 30_000).abs() < 1_000, "{}", until - later);
        // A deadline in the past is a lease of zero, never negative.
        let past = Lease::until(DateTime::from_timestamp_millis(0).unwrap_or_default());
        assert_eq!(past.from(later), later);
    }
}

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
    ActivityCompletion, ActivityWorkItem, EntityCleanup, NewInstance, OrchestrationMessage,
    PurgeQuery, StoreEvents, TurnCommit, TurnCommitted,
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
        reply: Reply<TurnCommitted>,
    },
    Complete {
        completion: ActivityCompletion,
        reply: Reply<Option<OrchestrationMessage>>,
    },
    ClaimMessages {
        owner: String,
        limit: u32,
        lease_until: DateTime<Utc>,
        reply: Reply<Vec<OrchestrationMessage>>,
    },
    ClaimActivities {
        owner: String,
        limit: u32,
        lease_until: DateTime<Utc>,
        reply: Reply<Vec<ActivityWorkItem>>,
    },
    Renew {
        owner: String,
        lease_until: DateTime<Utc>,
        reply: Reply<()>,
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
        self.write(|reply| Op::ClaimMessages {
            owner,
            limit,
            lease_until,
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
        self.write(|reply| Op::ClaimActivities {
            owner,
            limit,
            lease_until,
            reply,
        })
        .await
    }

    pub(crate) async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        self.write(|reply| Op::Turn { turn, reply }).await
    }

    pub(crate) async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        self.write(|reply| Op::Complete { completion, reply }).await
    }

    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(), Error> {
        let owner = owner.to_owned();
        self.write(|reply| Op::Renew {
            owner,
            lease_until,
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
                | Op::Renew { reply, .. }
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
    /// [owner, until]
    pub(crate) renewals: Vec<(String, i64)>,
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
        self.reset_leases
            || !self.renewals.is_empty()
            || !self.releases.is_empty()
            || !self.release_all.is_empty()
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
            Op::Turn { turn, .. } => Outcome::Turn(self.turn(turn, state, now)),
            Op::Complete { completion, .. } => {
                Outcome::Delivered(Ok(self.complete(completion, state, now)))
            }
            Op::Renew {
                owner, lease_until, ..
            } => {
                self.renewals.push((owner.clone(), millis(*lease_until)));
                Outcome::Unit(Ok(()))
            }
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
        state: &mut State,
        now: i64,
    ) -> Result<TurnCommitted, Error> {
        let Some(instance) = state.instances.get(&turn.instance_id) else {
            return Err(Error::InstanceNotFound(turn.instance_id.clone()));
        };
        let lease_ok = instance.locked_by.is_none()
            || instance.locked_by.as_deref() == Some(turn.owner.as_str())
            || instance.locked_until.is_some_and(|until| until < now);
        if !lease_ok {
            return Err(Error::Conflict {
                instance_id: turn.instance_id.clone(),
            });
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
        let lease_until = millis(turn.lease_until);
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
        let lease_until = millis(completion.lease_until);
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

/// One backend's way of running a batch of ops in one transaction.
#[async_trait::async_trait]
pub(crate) trait BatchExecutor: Send + 'static {
    /// A name for logs and errors ("SQLite", "PostgreSQL").
    const DATABASE: &'static str;

    /// One attempt at the batch inside one transaction, committed when it returns `Ok`.
    async fn execute(&mut self, ops: &[Op]) -> Result<(Vec<Outcome>, Effects), sqlx::Error>;

    /// Ends a failed attempt (rolls back whatever is open).
    async fn abort(&mut self);
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
        commit(&mut executor, std::mem::take(&mut batch), &events).await;
    }
}

/// Commits a batch (retrying transient failures: a busy database, a dropped connection) and
/// replies to every op.
async fn commit<B: BatchExecutor>(executor: &mut B, ops: Vec<Op>, events: &StoreEvents) {
    let mut attempt = 0u32;
    let result = loop {
        match executor.execute(&ops).await {
            Ok(done) => break Ok(done),
            Err(error) => {
                executor.abort().await;
                if is_transient(&error) && attempt < 10 {
                    attempt += 1;
                    let delay = Duration::from_millis(5u64 << attempt.min(8));
                    tracing::debug!(%error, attempt, database = B::DATABASE, "retrying a write batch");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                tracing::warn!(%error, ops = ops.len(), database = B::DATABASE, "a write batch failed");
                break Err(store_error(
                    &format!("committing to {}", B::DATABASE),
                    error,
                ));
            }
        }
    };
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

/// The instances and work items a batch touches: what its read must look at (and lock).
pub(crate) fn touched(ops: &[Op]) -> (Vec<&str>, Vec<i64>) {
    let mut instance_ids: Vec<&str> = Vec::new();
    let mut item_ids: Vec<i64> = Vec::new();
    for op in ops {
        match op {
            Op::Create { instance, .. } => instance_ids.push(&instance.instance_id),
            Op::Enqueue { instance_id, .. } => instance_ids.push(instance_id),
            Op::Turn { turn, .. } => {
                instance_ids.push(&turn.instance_id);
                instance_ids.extend(turn.new_instances.iter().map(|i| i.instance_id.as_str()));
                instance_ids.extend(turn.messages.iter().map(|m| m.instance_id.as_str()));
            }
            Op::Complete { completion, .. } => {
                instance_ids.push(&completion.instance_id);
                item_ids.push(completion.item_id);
            }
            _ => {}
        }
    }
    instance_ids.sort_unstable();
    instance_ids.dedup();
    item_ids.sort_unstable();
    item_ids.dedup();
    (instance_ids, item_ids)
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

//! The entity actor: one loaded entity, its state, its critical-section lock and its
//! operations, run one at a time in arrival order and committed in batches.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use actix::prelude::*;

use super::Shared;
use super::messages::{Deliver, Drain, GiveUp, Inbound, ToDispatcher, Unload, queued_ids};
use super::residency::{self, Phase, Residency, Resident};
use crate::entity::{EntityContext, EntityEffect, EntityId, ErasedState};
use crate::error::Failure;
use crate::history::{Event, ParentInstance};
use crate::payload::Payload;
use crate::store::{EntityUpdate, NewInstance, NewMessage, TurnCommit};

pub(super) struct EntityActor {
    res: Residency,
    id: EntityId,
    /// The last committed state.
    state: Option<Payload>,
    /// The orchestration holding this entity in a critical section.
    lock_owner: Option<String>,
}

/// What a batch of operations produced.
#[derive(Default)]
struct Batch {
    consumed: Vec<Inbound>,
    deferred: Vec<Inbound>,
    messages: Vec<NewMessage>,
    starts: Vec<NewInstance>,
}

impl EntityActor {
    pub(super) fn new(
        shared: Arc<Shared>,
        instance_id: Arc<str>,
        id: EntityId,
        dispatcher: ToDispatcher,
        pending: Vec<Inbound>,
    ) -> Self {
        EntityActor {
            res: Residency::new(shared, instance_id, dispatcher, pending),
            id,
            state: None,
            lock_owner: None,
        }
    }

    /// Runs every message that may run now, in order, and commits the batch.
    fn process(&mut self, ctx: &mut Context<Self>) {
        self.res.cancel_idle(ctx);
        // Held messages are older than new ones: they go first.
        let mut queue: VecDeque<Inbound> = std::mem::take(&mut self.res.deferred).into();
        queue.extend(std::mem::take(&mut self.res.pending));
        let entry = self.res.shared.registry.get_entity(&self.id.name).copied();
        let mut loaded: Option<Box<dyn ErasedState>> = None;
        let mut state = self.state.clone();
        let mut dirty = false;
        let mut lock_owner = self.lock_owner.clone();
        let mut batch = Batch::default();
        let now = self.res.shared.now();
        let span = tracing::info_span!("entity", entity = %self.id);
        let _enter = span.enter();

        while let Some(message) = queue.pop_front() {
            let passes_lock = |sender: Option<&str>| match &lock_owner {
                Some(owner) => sender == Some(owner.as_str()),
                None => true,
            };
            match as_operation(message.event()) {
                Event::EntityOperation {
                    operation,
                    input,
                    caller,
                    sender,
                } => {
                    if !passes_lock(sender.as_deref()) {
                        batch.deferred.push(message);
                        continue;
                    }
                    let result = match &entry {
                        Err(error) => Err(error.to_failure()),
                        Ok(entry) => {
                            let target = match loaded.as_mut() {
                                Some(target) => Ok(target),
                                None => entry.load(state.as_ref()).map(|s| loaded.insert(s)),
                            };
                            match target {
                                Err(failure) => Err(failure),
                                Ok(target) => {
                                    let mut op_ctx = EntityContext::at(self.id.clone(), now);
                                    let result = target.apply(&mut op_ctx, &operation, &input);
                                    if result.is_ok() {
                                        dirty = true;
                                        self.collect_effects(&op_ctx, &mut batch);
                                        if op_ctx.delete.get() {
                                            loaded = None;
                                            state = None;
                                        }
                                    }
                                    result
                                }
                            }
                        }
                    };
                    if let Err(failure) = &result
                        && caller.is_none()
                    {
                        tracing::warn!(entity = %self.id, %operation, %failure, "a signalled entity operation failed; its state change was rolled back");
                    }
                    if let Some(caller) = caller {
                        batch.messages.push(respond(&caller, result, now));
                    }
                    batch.consumed.push(message);
                }
                Event::EntityLockRequest {
                    owner,
                    entities,
                    position,
                } => {
                    if lock_owner
                        .as_ref()
                        .is_some_and(|current| *current != owner.instance_id)
                    {
                        batch.deferred.push(message);
                        continue;
                    }
                    lock_owner = Some(owner.instance_id.clone());
                    batch
                        .messages
                        .push(forward_lock(&owner, &entities, position, now));
                    batch.consumed.push(message);
                }
                Event::EntityUnlock { owner } => {
                    if lock_owner.as_deref() == Some(owner.as_str()) {
                        lock_owner = None;
                        // What waited for the lock runs now, before anything newer.
                        for held in batch.deferred.drain(..).rev() {
                            queue.push_front(held);
                        }
                    }
                    batch.consumed.push(message);
                }
                Event::EntityDelete {} => {
                    loaded = None;
                    state = None;
                    dirty = true;
                    batch.consumed.push(message);
                }
                _ => batch.consumed.push(message),
            }
        }
        drop(_enter);

        let new_state = if dirty {
            match loaded.as_ref().map(|target| target.save()).transpose() {
                Ok(saved) => saved,
                Err(failure) => {
                    tracing::error!(entity = %self.id, %failure, "the entity state could not be serialized; keeping the previous state");
                    self.state.clone()
                }
            }
        } else {
            self.state.clone()
        };
        self.commit(batch, new_state, lock_owner, ctx);
    }

    /// Turns what an operation sent through its context into messages.
    fn collect_effects(&self, op_ctx: &EntityContext, batch: &mut Batch) {
        let now = self.res.shared.now();
        for effect in op_ctx.effects.borrow_mut().drain(..) {
            match effect {
                EntityEffect::Signal {
                    target,
                    operation,
                    input,
                    at,
                } => batch.messages.push(NewMessage {
                    instance_id: target.instance_id(),
                    visible_at: at.unwrap_or(now).max(now),
                    event: Event::EntityOperation {
                        operation,
                        input,
                        caller: None,
                        sender: Some(self.res.instance_id.to_string()),
                    },
                    execution: None,
                }),
                EntityEffect::StartOrchestration {
                    name,
                    version,
                    instance_id,
                    input,
                    child_seq,
                } => {
                    let version = if version.is_empty() {
                        let registry = &self.res.shared.registry;
                        registry
                            .get_orchestrator(&name)
                            .map(|entry| entry.version.to_owned())
                            .unwrap_or_default()
                    } else {
                        version
                    };
                    batch.starts.push(NewInstance {
                        instance_id: instance_id
                            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                        name,
                        version,
                        input,
                        created_at: now,
                        parent: child_seq.map(|seq| ParentInstance {
                            instance_id: self.res.instance_id.to_string(),
                            seq,
                            execution: 0,
                        }),
                        flow: None,
                    })
                }
                EntityEffect::Terminate {
                    instance_id,
                    reason,
                } => batch.messages.push(NewMessage {
                    instance_id,
                    visible_at: now,
                    event: Event::ExecutionTerminated {
                        reason,
                        cascade: true,
                    },
                    execution: None,
                }),
            }
        }
    }

    fn commit(
        &mut self,
        batch: Batch,
        new_state: Option<Payload>,
        lock_owner: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Batch {
            consumed,
            deferred,
            messages,
            starts,
        } = batch;
        self.res.deferred = deferred;
        if consumed.is_empty() {
            // Everything was held for the lock: nothing to write.
            self.res.phase = Phase::Ready;
            return residency::settle(self, ctx);
        }
        let update = EntityUpdate {
            state: new_state.clone(),
            lock_owner: lock_owner.clone(),
        };
        let commit = TurnCommit {
            cancelled_activities: Vec::new(),
            cancelled_timers: Vec::new(),
            hold_timers: false,
            instance_id: self.res.instance_id.to_string(),
            owner: self.res.shared.owner.clone(),
            history_start: 0,
            create: None,
            reset_history: false,
            execution: 0,
            new_events: Vec::new(),
            consumed: queued_ids(&consumed),
            completed_activities: Vec::new(),
            finished_calls: Vec::new(),
            activities: Vec::new(),
            messages,
            new_instances: {
                let mut starts = starts;
                self.res.shared.hold_flow_controlled(&mut starts);
                starts
            },
            status: None,
            output: None,
            failure: None,
            custom_status: None,
            input: None,
            entity: Some(update),
            lease_until: self.res.shared.lease_until(),
            now: self.res.shared.now(),
        };
        self.res.begin_commit(ctx);
        let store = self.res.shared.store.clone();
        let commit_fut = async move { store.commit_turn(commit).await };
        ctx.spawn(commit_fut.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(_) => {
                    act.res.committed(&consumed);
                    act.state = new_state;
                    act.lock_owner = lock_owner;
                    if act.res.give_up_requested() {
                        return residency::give_up(act, ctx);
                    }
                    residency::settle(act, ctx);
                }
                Err(error) => {
                    // Nothing of the batch is stored (a commit whose answer was lost is settled
                    // by the store before it answers): run it again from the stored state.
                    let mut again = consumed;
                    again.append(&mut act.res.deferred);
                    act.res.commit_failed(again);
                    if act.res.gives_up_after(&error) {
                        tracing::warn!(entity = %act.id, %error, "giving the entity up");
                        return residency::give_up(act, ctx);
                    }
                    residency::retry_later(act, error, ctx);
                }
            }
        }));
    }
}

/// A message as the entity runs it: the end of a child this entity started (a schedule's
/// run) is its operation `__run_finished`; anything else as it is.
fn as_operation(event: &Event) -> Event {
    let (seq, failure) = match event {
        Event::SubOrchestrationCompleted { seq, .. } => (*seq, None),
        Event::SubOrchestrationFailed { seq, failure } => (*seq, Some(failure.clone())),
        other => return other.clone(),
    };
    let finished = crate::schedule::RunFinished { seq, failure };
    match Payload::encode(&finished) {
        Ok(input) => Event::EntityOperation {
            operation: crate::schedule::RUN_FINISHED.to_owned(),
            input,
            caller: None,
            sender: None,
        },
        Err(_) => event.clone(),
    }
}

/// The reply to an orchestration's entity call.
fn respond(
    caller: &ParentInstance,
    result: Result<Payload, Failure>,
    now: DateTime<Utc>,
) -> NewMessage {
    let event = match result {
        Ok(output) => Event::EntityCompleted {
            seq: caller.seq,
            output,
        },
        Err(failure) => Event::EntityFailed {
            seq: caller.seq,
            failure,
        },
    };
    NewMessage {
        instance_id: caller.instance_id.clone(),
        visible_at: now,
        event,
        execution: Some(caller.execution),
    }
}

/// Passes a lock request to the next entity, or tells the owner all are locked.
fn forward_lock(
    owner: &ParentInstance,
    entities: &[EntityId],
    position: usize,
    now: DateTime<Utc>,
) -> NewMessage {
    match entities.get(position + 1) {
        Some(next) => NewMessage {
            instance_id: next.instance_id(),
            visible_at: now,
            event: Event::EntityLockRequest {
                owner: owner.clone(),
                entities: entities.to_vec(),
                position: position + 1,
            },
            execution: None,
        },
        None => NewMessage {
            instance_id: owner.instance_id.clone(),
            visible_at: now,
            event: Event::EntityLockGranted { seq: owner.seq },
            execution: Some(owner.execution),
        },
    }
}

impl Resident for EntityActor {
    const KIND: &'static str = "entity";

    fn residency(&mut self) -> &mut Residency {
        &mut self.res
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.res.phase = Phase::Loading;
        let store = self.res.shared.store.clone();
        let id = self.id.clone();
        let load = async move { store.load_entity(&id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(record) => {
                if let Some(record) = record {
                    act.state = record.state;
                    act.lock_owner = record.lock_owner;
                }
                act.res.phase = Phase::Ready;
                residency::settle(act, ctx);
            }
            Err(error) => residency::retry_later(act, error, ctx),
        }));
    }

    fn work(&mut self, ctx: &mut Context<Self>) {
        self.process(ctx);
    }
}

impl Actor for EntityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx);
    }
}

impl Handler<Deliver> for EntityActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        residency::deliver(self, msg.0, ctx);
    }
}

impl Handler<GiveUp> for EntityActor {
    type Result = ();

    fn handle(&mut self, _: GiveUp, ctx: &mut Context<Self>) {
        residency::on_give_up(self, ctx);
    }
}

impl Handler<Unload> for EntityActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        residency::on_unload(self, ctx);
    }
}

impl Handler<Drain> for EntityActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        residency::on_drain(self)
    }
}

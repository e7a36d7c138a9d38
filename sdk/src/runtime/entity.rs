//! The entity actor: one loaded entity, its state, its critical-section lock and its
//! operations, run one at a time in arrival order and committed in batches.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::dispatcher::{Dispatcher, RequestUnload, Unloaded, backoff};
use super::instance::{Deliver, Drain, GiveUp, Unload, drained};
use super::{Inbound, MessageIds, Shared, queued_ids};
use crate::clock::now_millis;
use crate::entity::{EntityContext, EntityEffect, EntityId, ErasedState};
use crate::error::{Error, Failure};
use crate::history::{Event, ParentInstance, Payload};
use crate::store::{EntityUpdate, NewInstance, NewMessage, TurnCommit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Loading,
    Ready,
    Committing,
}

pub(super) struct EntityActor {
    shared: Arc<Shared>,
    instance_id: Arc<str>,
    id: EntityId,
    dispatcher: Addr<Dispatcher>,
    phase: Phase,
    /// The last committed state.
    state: Option<Payload>,
    /// The orchestration holding this entity in a critical section.
    lock_owner: Option<String>,
    pending: Vec<Inbound>,
    /// Messages from others than the lock owner, held until the lock is released.
    deferred: Vec<Inbound>,
    idle: Option<SpawnHandle>,
    unload_requested: bool,
    failures: u32,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// The queue messages held or recently consumed: none is applied twice.
    message_ids: MessageIds,
    /// Give up once the commit in flight returns.
    give_up_requested: bool,
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
        dispatcher: Addr<Dispatcher>,
        pending: Vec<Inbound>,
    ) -> Self {
        let mut message_ids = MessageIds::default();
        let pending = message_ids.admit(pending);
        EntityActor {
            shared,
            instance_id,
            id,
            dispatcher,
            phase: Phase::Loading,
            state: None,
            lock_owner: None,
            pending,
            deferred: Vec::new(),
            idle: None,
            unload_requested: false,
            failures: 0,
            drain_waiters: Vec::new(),
            message_ids,
            give_up_requested: false,
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let load = async move { store.load_entity(&id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(record) => {
                if let Some(record) = record {
                    act.state = record.state;
                    act.lock_owner = record.lock_owner;
                }
                act.phase = Phase::Ready;
                act.after_phase_change(ctx);
            }
            Err(error) => act.retry_later(error, ctx),
        }));
    }

    fn retry_later(&mut self, error: Error, ctx: &mut Context<Self>) {
        self.failures += 1;
        let delay = backoff(self.failures);
        tracing::warn!(entity = %self.id, %error, retry_in_ms = delay.as_millis() as u64, "entity will be reloaded");
        self.phase = Phase::Loading;
        ctx.run_later(delay, |act, ctx| act.load(ctx));
    }

    fn after_phase_change(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Ready {
            return;
        }
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if !self.pending.is_empty() {
            self.process(ctx);
        } else if self.unload_requested && self.deferred.is_empty() {
            self.stop(ctx);
        } else if !self.deferred.is_empty() {
            // Locked, with others' messages held: stay loaded until the lock is released.
        } else if self.shared.options.idle_unload_after.is_zero() {
            self.dispatcher
                .do_send(RequestUnload(self.instance_id.clone()));
        } else {
            if let Some(handle) = self.idle.take() {
                ctx.cancel_future(handle);
            }
            let after = self.shared.options.idle_unload_after;
            self.idle = Some(ctx.run_later(after, |act, _| {
                act.idle = None;
                act.dispatcher
                    .do_send(RequestUnload(act.instance_id.clone()));
            }));
        }
    }

    /// Gives the entity up to the worker that holds it now: the messages claimed here go back
    /// to the store (visible at once) and the actor stops, handing nothing to the dispatcher.
    fn give_up(&mut self, ctx: &mut Context<Self>) {
        self.give_up_requested = false;
        let mut held = std::mem::take(&mut self.deferred);
        held.append(&mut self.pending);
        let ids = queued_ids(&held);
        if !ids.is_empty() {
            let shared = self.shared.clone();
            let abandon = async move {
                shared
                    .store
                    .abandon_messages(&shared.owner, &ids, now_millis())
                    .await
            };
            ctx.spawn(abandon.into_actor(self).map(|result, _, _| {
                if let Err(error) = result {
                    tracing::warn!(%error, "giving messages back failed; they return when their lease lapses");
                }
            }));
        }
        self.stop(ctx);
    }

    fn stop(&mut self, ctx: &mut Context<Self>) {
        let mut leftover = std::mem::take(&mut self.deferred);
        leftover.append(&mut self.pending);
        self.dispatcher.do_send(Unloaded {
            instance_id: self.instance_id.clone(),
            leftover,
            finished: false,
        });
        ctx.stop();
    }

    /// Runs every message that may run now, in order, and commits the batch.
    fn process(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        // Held messages are older than new ones: they go first.
        let mut queue: VecDeque<Inbound> = std::mem::take(&mut self.deferred).into();
        queue.extend(std::mem::take(&mut self.pending));
        let entry = self.shared.registry.get_entity(&self.id.name).copied();
        let mut loaded: Option<Box<dyn ErasedState>> = None;
        let mut state = self.state.clone();
        let mut dirty = false;
        let mut lock_owner = self.lock_owner.clone();
        let mut batch = Batch::default();
        let span = tracing::info_span!("entity", entity = %self.id);
        let _enter = span.enter();

        while let Some(message) = queue.pop_front() {
            let passes_lock = |sender: Option<&str>| match &lock_owner {
                Some(owner) => sender == Some(owner.as_str()),
                None => true,
            };
            match message.event().clone() {
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
                                    let mut op_ctx = EntityContext::new(self.id.clone());
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
                        batch.messages.push(respond(&caller, result));
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
                        .push(forward_lock(&owner, &entities, position));
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
        let now = now_millis();
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
                        sender: Some(self.instance_id.to_string()),
                    },
                    execution: None,
                }),
                EntityEffect::StartOrchestration {
                    name,
                    version,
                    instance_id,
                    input,
                } => batch.starts.push(NewInstance {
                    instance_id: instance_id
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                    name: name.to_owned(),
                    version: version.to_owned(),
                    input,
                    created_at: now,
                    parent: None,
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
        self.deferred = deferred;
        if consumed.is_empty() {
            // Everything was held for the lock: nothing to write.
            self.phase = Phase::Ready;
            return self.after_phase_change(ctx);
        }
        let update = EntityUpdate {
            state: new_state.clone(),
            lock_owner: lock_owner.clone(),
        };
        let commit = TurnCommit {
            instance_id: self.instance_id.to_string(),
            owner: self.shared.owner.clone(),
            history_start: 0,
            reset_history: false,
            execution: 0,
            new_events: Vec::new(),
            consumed: consumed
                .iter()
                .filter_map(|m| match m {
                    Inbound::Queued(message) => Some(message.id),
                    Inbound::Local { .. } => None,
                })
                .collect(),
            completed_activities: Vec::new(),
            activities: Vec::new(),
            messages,
            new_instances: starts,
            status: None,
            output: None,
            failure: None,
            custom_status: None,
            input: None,
            entity: Some(update),
            lease_until: self.shared.lease_until(),
            now: now_millis(),
        };
        self.phase = Phase::Committing;
        let store = self.shared.store.clone();
        let commit_fut = async move { store.commit_turn(commit).await };
        ctx.spawn(commit_fut.into_actor(self).map(move |result, act, ctx| {
            act.phase = Phase::Ready;
            match result {
                Ok(_) => {
                    act.message_ids.consumed(&consumed);
                    act.failures = 0;
                    act.state = new_state;
                    act.lock_owner = lock_owner;
                    if act.give_up_requested {
                        return act.give_up(ctx);
                    }
                    act.after_phase_change(ctx);
                }
                Err(error) => {
                    // Nothing of the batch is stored (a commit whose answer was lost is settled
                    // by the store before it answers): run it again from the stored state.
                    let mut pending = consumed;
                    pending.append(&mut act.deferred);
                    pending.append(&mut act.pending);
                    act.pending = pending;
                    if act.give_up_requested || matches!(error, Error::Conflict { .. }) {
                        tracing::warn!(entity = %act.id, %error, "giving the entity up");
                        return act.give_up(ctx);
                    }
                    act.retry_later(error, ctx);
                }
            }
        }));
    }
}

/// The reply to an orchestration's entity call.
fn respond(caller: &ParentInstance, result: Result<Payload, Failure>) -> NewMessage {
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
        visible_at: now_millis(),
        event,
        execution: Some(caller.execution),
    }
}

/// Passes a lock request to the next entity, or tells the owner all are locked.
fn forward_lock(owner: &ParentInstance, entities: &[EntityId], position: usize) -> NewMessage {
    match entities.get(position + 1) {
        Some(next) => NewMessage {
            instance_id: next.instance_id(),
            visible_at: now_millis(),
            event: Event::EntityLockRequest {
                owner: owner.clone(),
                entities: entities.to_vec(),
                position: position + 1,
            },
            execution: None,
        },
        None => NewMessage {
            instance_id: owner.instance_id.clone(),
            visible_at: now_millis(),
            event: Event::EntityLockGranted { seq: owner.seq },
            execution: Some(owner.execution),
        },
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
        let fresh = self.message_ids.admit(msg.0);
        if fresh.is_empty() {
            return;
        }
        self.pending.extend(fresh);
        if self.phase == Phase::Ready {
            self.process(ctx);
        }
    }
}

impl Handler<GiveUp> for EntityActor {
    type Result = ();

    fn handle(&mut self, _: GiveUp, ctx: &mut Context<Self>) {
        if self.phase == Phase::Committing {
            self.give_up_requested = true;
        } else {
            self.give_up(ctx);
        }
    }
}

impl Handler<Unload> for EntityActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        self.unload_requested = true;
        if self.phase == Phase::Ready && self.pending.is_empty() && self.deferred.is_empty() {
            self.stop(ctx);
        }
    }
}

impl Handler<Drain> for EntityActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        drained(self.phase == Phase::Ready, &mut self.drain_waiters)
    }
}

//! Everything the runtime's actors say to each other: the work they pass ([`Inbound`]) and
//! every actor message, in one place, so that no actor's file needs another's to talk to it.
//! Actors that answer to the dispatcher hold a [`ToDispatcher`] (recipients of the messages
//! it handles), not its address: the dispatcher starts the other actors, they do not know
//! its type.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use tokio::sync::oneshot;

use crate::activity::AttemptControl;
use crate::error::Error;
use crate::history::Event;
use crate::store::{ActivityWorkItem, NewInstance, OrchestrationMessage};

/// Work for an instance or entity actor.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    /// A message claimed from the orchestration queue; deleted when a turn consumes it.
    Queued(OrchestrationMessage),
    /// An activity result handed over in memory by this worker's activity worker; the turn
    /// that consumes it deletes its work item, or, for a call kept in memory (`item_id`
    /// `None`), the call's record on the instance's row.
    Local {
        item_id: Option<i64>,
        instance_id: String,
        execution: u32,
        event: Event,
    },
}

impl Inbound {
    /// The instance (or entity) the work is for.
    pub(crate) fn instance_id(&self) -> &str {
        match self {
            Inbound::Queued(message) => &message.instance_id,
            Inbound::Local { instance_id, .. } => instance_id,
        }
    }

    /// The execution the message belongs to, if it is bound to one.
    pub(crate) fn execution(&self) -> Option<u32> {
        match self {
            Inbound::Queued(message) => message.execution,
            Inbound::Local { execution, .. } => Some(*execution),
        }
    }

    /// What happened.
    pub(crate) fn event(&self) -> &Event {
        match self {
            Inbound::Queued(message) => &message.event,
            Inbound::Local { event, .. } => event,
        }
    }
}

/// The ids of the queue messages among `messages`.
pub(crate) fn queued_ids(messages: &[Inbound]) -> Vec<i64> {
    messages
        .iter()
        .filter_map(|m| match m {
            Inbound::Queued(message) => Some(message.id),
            Inbound::Local { .. } => None,
        })
        .collect()
}

// To the dispatcher.

/// Work for instances, to route to their actors (an activity result the activity worker
/// committed and got back because this worker holds the instance).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Route(pub(super) Vec<Inbound>);

/// A new instance from this worker's own client, to run at once: its first turn commits the
/// creation ([`TurnCommit::create`](crate::store::TurnCommit::create)), and `reply` gets that
/// commit's outcome. Dropping it unanswered (the id is loaded here, the runtime is stopping,
/// the first turn never committed) tells the client to create the instance in the store
/// instead.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Start {
    pub(super) instance: NewInstance,
    pub(super) reply: oneshot::Sender<Result<(), Error>>,
}

/// The id of an instance's `ExecutionStarted` that is in no queue: the start of an instance
/// its first turn creates ([`Start`]). Queue ids start at 1.
pub(super) const UNQUEUED_START: i64 = 0;

/// How the runtime's own client reaches the dispatcher from its thread.
pub(super) struct FromClient {
    pub(super) route: Recipient<Route>,
    pub(super) start: Recipient<Start>,
}

/// Wake up and claim work now.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Poke;

/// The store was handed messages for this worker to run without a claim
/// ([`Store::take_offered`](crate::store::Store::take_offered)): take and route them.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TakeOffered;

/// A turn created durable timers due at these times: claim when they are due.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TimersArmed(pub(super) Vec<DateTime<Utc>>);

/// An instance or entity actor has been idle long enough to be unloaded.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RequestUnload(pub(super) Arc<str>);

/// An instance or entity actor stopped; messages it had not processed come back.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Unloaded {
    pub(super) instance_id: Arc<str>,
    pub(super) leftover: Vec<Inbound>,
    pub(super) finished: bool,
    /// It gave the instance up to another worker.
    pub(super) gave_up: bool,
}

/// Stop claiming, drain the workers (for at most `grace`), return when done.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Shutdown {
    pub(super) grace: Duration,
}

/// How the other actors reach the dispatcher.
#[derive(Clone)]
pub(super) struct ToDispatcher {
    pub(super) route: Recipient<Route>,
    pub(super) timers_armed: Recipient<TimersArmed>,
    pub(super) request_unload: Recipient<RequestUnload>,
    pub(super) unloaded: Recipient<Unloaded>,
}

impl ToDispatcher {
    /// The recipients of the actor at `addr`.
    pub(super) fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Route>
            + Handler<TimersArmed>
            + Handler<RequestUnload>
            + Handler<Unloaded>,
    {
        ToDispatcher {
            route: addr.clone().recipient(),
            timers_armed: addr.clone().recipient(),
            request_unload: addr.clone().recipient(),
            unloaded: addr.clone().recipient(),
        }
    }
}

// To instance and entity actors.

/// Messages for this instance or entity.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Deliver(pub(super) Vec<Inbound>);

/// The dispatcher agreed to unload this actor: stop once nothing is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Unload;

/// Another worker holds the instance now (this worker's lease lapsed and it was taken over):
/// drop its in-memory state and the messages claimed for it, and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct GiveUp;

// To every actor the dispatcher started.

/// Resolves once nothing is in flight (used at shutdown); the activity worker also stops
/// claiming and starting work.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Drain;

// To the activity worker.

/// Work items a turn of a loaded instance just scheduled (claimed by this worker): their
/// results go back to the instance in memory.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunActivities {
    pub(super) items: Vec<ActivityWorkItem>,
    /// The turn's commit also queued calls of flow-controlled activities, which only a claim
    /// starts (it counts them against their limits): the worker claims now.
    pub(super) claim: bool,
}

/// How an instance reaches the activity worker.
#[derive(Clone)]
pub(super) struct ToWorker {
    pub(super) run: Recipient<RunActivities>,
    pub(super) cancel: Recipient<CancelActivities>,
    pub(super) adopt: Recipient<Adopt>,
    pub(super) ended: Recipient<AttemptEnded>,
}

/// An attempt of a quick activity that was not done after its first poll on the runtime's
/// thread: it goes on there, and the worker counts it as one of its own (a slot of its
/// concurrency, its lease, heartbeats, cancellation, a work item if it runs long) until
/// [`AttemptEnded`] says it ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Adopt {
    /// Its work item's id, or for a call kept in memory a key of its own (negative).
    pub(super) key: i64,
    pub(super) attempt: Attempt,
}

/// What the activity worker keeps of a running attempt, its own or [`Adopt`]ed.
pub(super) struct Attempt {
    pub(super) instance_id: String,
    pub(super) execution: u32,
    pub(super) seq: u64,
    pub(super) control: Arc<AttemptControl>,
    /// For a call kept in memory: its work item, once it has one.
    pub(super) memory: Option<Arc<MemoryItem>>,
    pub(super) started: Instant,
}

impl Attempt {
    /// An attempt of `item` starting now.
    pub(super) fn new(
        item: &ActivityWorkItem,
        memory: Option<Arc<MemoryItem>>,
        control: Arc<AttemptControl>,
    ) -> Attempt {
        Attempt {
            instance_id: item.instance_id.clone(),
            execution: item.execution,
            seq: item.seq,
            control,
            memory,
            started: Instant::now(),
        }
    }

    /// The attempt's work item under `key`: the key itself, or for a call kept in memory the
    /// item made of it, if any.
    pub(super) fn item_id(&self, key: i64) -> Option<i64> {
        match &self.memory {
            Some(call) => call.item_id(),
            None => Some(key),
        }
    }
}

/// An [`Adopt`]ed attempt ended (its result delivered, or it was stopped).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct AttemptEnded {
    pub(super) key: i64,
}

/// A call kept in memory ([`NewActivity::in_memory`](crate::store::NewActivity::in_memory)):
/// the work item made of it once it has run for a sync period, if one was. The lock is held
/// while the item is being made, so a result is never delivered while it is unknown whether
/// the call has an item.
#[derive(Debug, Default)]
pub(super) struct MemoryItem {
    pub(super) item_id: tokio::sync::Mutex<Option<i64>>,
    /// Making its work item has started (or is done).
    pub(super) persisting: std::sync::atomic::AtomicBool,
}

impl MemoryItem {
    /// Its work item, if it has one now (`None` while one is being made).
    pub(super) fn item_id(&self) -> Option<i64> {
        self.item_id.try_lock().ok().and_then(|id| *id)
    }
}

/// Calls a turn of a loaded instance cancelled, or all its calls when its execution ended
/// (`seqs` is `None`): their work items are deleted; the worker stops what runs of them.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct CancelActivities {
    pub(super) instance_id: String,
    pub(super) seqs: Option<Vec<u64>>,
}

//! History: the append-only list of [`Event`]s that *is* an orchestration instance.
//!
//! Everything an orchestrator observed (its input, activity results, fired timers, raised
//! events, the time of each turn) and everything it decided (activities scheduled, timers
//! created) is an event here. Replaying these events through the same code rebuilds the
//! orchestrator's in-memory state exactly (the `orchestration` module does).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::id::EntityId;
pub use crate::payload::Payload;

/// The parent of a sub-orchestration: where to report its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    /// The parent's instance id.
    pub instance_id: String,
    /// The parent's call number for this sub-orchestration.
    pub seq: u64,
    /// The parent's execution that made the call.
    pub execution: u32,
}

/// One entry of an instance's history (and the messages that become history).
///
/// `seq` numbers identify durable calls (activities, timers, sub-orchestrations) in the order
/// the orchestrator made them; a completion carries the `seq` of the call it completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// A turn began at `timestamp`; `ctx.now()` returns it until the next turn.
    OrchestratorStarted {
        /// The turn's time.
        timestamp: DateTime<Utc>,
    },
    /// An execution of the instance started with this input.
    ExecutionStarted {
        /// Orchestrator name.
        name: String,
        /// Orchestrator version stamped at start ("" when unversioned).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        version: String,
        /// The input.
        input: Payload,
        /// Which execution this is: 0, then +1 at every continue-as-new.
        #[serde(default, skip_serializing_if = "is_zero")]
        execution: u32,
        /// Set for sub-orchestrations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentInstance>,
    },
    /// The orchestrator called an activity.
    TaskScheduled {
        /// Sequence number of the call.
        seq: u64,
        /// Activity name.
        name: String,
        /// Activity input.
        input: Payload,
    },
    /// The activity returned a value.
    TaskCompleted {
        /// Sequence number of the call.
        seq: u64,
        /// The activity's output.
        output: Payload,
    },
    /// The activity failed (or its attempt timed out).
    TaskFailed {
        /// Sequence number of the call.
        seq: u64,
        /// What it failed with.
        failure: Failure,
        /// The last heartbeat details of the failed attempt: a retry starts from them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat: Option<Payload>,
    },
    /// The orchestrator created a durable timer.
    TimerCreated {
        /// Sequence number of the call.
        seq: u64,
        /// When the timer fires.
        fire_at: DateTime<Utc>,
    },
    /// A durable timer fired.
    TimerFired {
        /// Sequence number of the timer.
        seq: u64,
        /// When it was due.
        fire_at: DateTime<Utc>,
    },
    /// The orchestrator started a sub-orchestration.
    SubOrchestrationScheduled {
        /// Sequence number of the call.
        seq: u64,
        /// Orchestrator name.
        name: String,
        /// The child's instance id.
        instance_id: String,
        /// The child's input.
        input: Payload,
    },
    /// A sub-orchestration completed.
    SubOrchestrationCompleted {
        /// Sequence number of the call.
        seq: u64,
        /// The child's output.
        output: Payload,
    },
    /// A sub-orchestration failed (or was terminated, or could not start).
    SubOrchestrationFailed {
        /// Sequence number of the call.
        seq: u64,
        /// What it failed with.
        failure: Failure,
    },
    /// The orchestrator called an entity operation (two-way).
    EntityCalled {
        /// Sequence number of the call.
        seq: u64,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// Its input.
        input: Payload,
    },
    /// The orchestrator signalled an entity operation (one-way).
    EntitySignaled {
        /// Sequence number of the signal.
        seq: u64,
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// Its input.
        input: Payload,
        /// When it is delivered (now if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// An entity operation called by the orchestrator returned a value.
    EntityCompleted {
        /// Sequence number of the call.
        seq: u64,
        /// The operation's output.
        output: Payload,
    },
    /// An entity operation called by the orchestrator failed (its state is unchanged).
    EntityFailed {
        /// Sequence number of the call.
        seq: u64,
        /// What it failed with.
        failure: Failure,
    },
    /// The orchestrator asked to lock entities (a critical section).
    EntityLockRequested {
        /// Sequence number of the request.
        seq: u64,
        /// The entities, in lock order.
        entities: Vec<EntityId>,
    },
    /// All entities of a lock request are locked for the orchestrator.
    EntityLockGranted {
        /// Sequence number of the request.
        seq: u64,
    },
    /// The orchestrator released the entities of its critical section.
    EntityUnlockSent {
        /// Sequence number of the release.
        seq: u64,
        /// The entities.
        entities: Vec<EntityId>,
    },
    /// Message to an entity: run an operation (a signal when `caller` is absent).
    EntityOperation {
        /// The operation.
        operation: String,
        /// Its input.
        input: Payload,
        /// The orchestration waiting for the result, for calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller: Option<ParentInstance>,
        /// Who sent it (an instance id or an entity id), if known: the lock owner's
        /// messages pass a locked entity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    /// Message to an entity: lock it for `owner`, then pass the request on.
    EntityLockRequest {
        /// The orchestration instance taking the lock.
        owner: ParentInstance,
        /// All entities to lock, in order.
        entities: Vec<EntityId>,
        /// Which of them this message is for.
        position: usize,
    },
    /// Message to an entity: release the lock held by `owner`.
    EntityUnlock {
        /// The instance that held the lock.
        owner: String,
    },
    /// Message to an entity: delete its state.
    EntityDelete {},
    /// The orchestrator cancelled a call it no longer needs (an activity, timer or
    /// sub-orchestration): its completion is no longer expected, a running activity is told
    /// to stop and a child instance is terminated.
    CallCancelled {
        /// Sequence number of the call.
        seq: u64,
        /// Why, e.g. "lost a select" or "cancelled by the orchestrator".
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// The orchestrator code took a patched path (`ctx.is_patched(name)` returned true).
    PatchApplied {
        /// The patch name.
        name: String,
    },
    /// An external event was raised to the instance.
    EventRaised {
        /// Event name.
        name: String,
        /// Event data.
        data: Payload,
    },
    /// The instance was suspended: it records messages but runs nothing until resumed.
    ExecutionSuspended {
        /// Why.
        reason: String,
    },
    /// The instance was resumed.
    ExecutionResumed {
        /// Why.
        reason: String,
    },
    /// A failed instance was rewound: its failed steps run again.
    ExecutionRewound {
        /// Why.
        reason: String,
    },
    /// The orchestrator returned a value: the instance is Completed.
    ExecutionCompleted {
        /// The output.
        output: Payload,
    },
    /// The orchestrator failed: the instance is Failed.
    ExecutionFailed {
        /// What it failed with.
        failure: Failure,
    },
    /// The instance was terminated from outside.
    ExecutionTerminated {
        /// Why.
        reason: String,
        /// Whether running sub-orchestrations are terminated too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cascade: bool,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Event {
    /// The event's type name (its JSON key).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::OrchestratorStarted { .. } => "OrchestratorStarted",
            Event::ExecutionStarted { .. } => "ExecutionStarted",
            Event::TaskScheduled { .. } => "TaskScheduled",
            Event::TaskCompleted { .. } => "TaskCompleted",
            Event::TaskFailed { .. } => "TaskFailed",
            Event::TimerCreated { .. } => "TimerCreated",
            Event::TimerFired { .. } => "TimerFired",
            Event::SubOrchestrationScheduled { .. } => "SubOrchestrationScheduled",
            Event::SubOrchestrationCompleted { .. } => "SubOrchestrationCompleted",
            Event::SubOrchestrationFailed { .. } => "SubOrchestrationFailed",
            Event::PatchApplied { .. } => "PatchApplied",
            Event::CallCancelled { .. } => "CallCancelled",
            Event::EntityCalled { .. } => "EntityCalled",
            Event::EntitySignaled { .. } => "EntitySignaled",
            Event::EntityCompleted { .. } => "EntityCompleted",
            Event::EntityFailed { .. } => "EntityFailed",
            Event::EntityLockRequested { .. } => "EntityLockRequested",
            Event::EntityLockGranted { .. } => "EntityLockGranted",
            Event::EntityUnlockSent { .. } => "EntityUnlockSent",
            Event::EntityOperation { .. } => "EntityOperation",
            Event::EntityLockRequest { .. } => "EntityLockRequest",
            Event::EntityUnlock { .. } => "EntityUnlock",
            Event::EntityDelete { .. } => "EntityDelete",
            Event::EventRaised { .. } => "EventRaised",
            Event::ExecutionSuspended { .. } => "ExecutionSuspended",
            Event::ExecutionResumed { .. } => "ExecutionResumed",
            Event::ExecutionRewound { .. } => "ExecutionRewound",
            Event::ExecutionCompleted { .. } => "ExecutionCompleted",
            Event::ExecutionFailed { .. } => "ExecutionFailed",
            Event::ExecutionTerminated { .. } => "ExecutionTerminated",
        }
    }

    /// `true` for events that record a decision of the orchestrator code (a durable call, a
    /// patch), which replay checks against what the code does now.
    pub fn is_decision(&self) -> bool {
        matches!(
            self,
            Event::TaskScheduled { .. }
                | Event::TimerCreated { .. }
                | Event::SubOrchestrationScheduled { .. }
                | Event::PatchApplied { .. }
                | Event::CallCancelled { .. }
                | Event::EntityCalled { .. }
                | Event::EntitySignaled { .. }
                | Event::EntityLockRequested { .. }
                | Event::EntityUnlockSent { .. }
        )
    }

    /// `true` for the events that end an execution.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::ExecutionCompleted { .. }
                | Event::ExecutionFailed { .. }
                | Event::ExecutionTerminated { .. }
        )
    }

    /// `true` for messages sent from outside to steer an instance (terminate, suspend,
    /// resume, rewind): they are handled even while the instance is suspended.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Event::ExecutionTerminated { .. }
                | Event::ExecutionSuspended { .. }
                | Event::ExecutionResumed { .. }
                | Event::ExecutionRewound { .. }
        )
    }

    /// A short description for messages and tables, e.g. ``a call to activity `charge` (TaskScheduled #3)``.
    pub fn describe(&self) -> String {
        match self {
            Event::OrchestratorStarted { timestamp } => {
                format!("OrchestratorStarted at {timestamp}")
            }
            Event::ExecutionStarted {
                name, execution, ..
            } => {
                format!("ExecutionStarted of `{name}` (execution {execution})")
            }
            Event::TaskScheduled { seq, name, .. } => {
                format!("a call to activity `{name}` (TaskScheduled #{seq})")
            }
            Event::TaskCompleted { seq, .. } => format!("TaskCompleted #{seq}"),
            Event::TaskFailed { seq, failure, .. } => format!("TaskFailed #{seq}: {failure}"),
            Event::CallCancelled { seq, reason } if reason.is_empty() => {
                format!("the cancellation of durable call #{seq} (CallCancelled)")
            }
            Event::CallCancelled { seq, reason } => {
                format!("the cancellation of durable call #{seq}: {reason} (CallCancelled)")
            }
            Event::TimerCreated { seq, fire_at } => {
                format!("a durable timer due at {fire_at} (TimerCreated #{seq})")
            }
            Event::TimerFired { seq, .. } => format!("TimerFired #{seq}"),
            Event::SubOrchestrationScheduled {
                seq,
                name,
                instance_id,
                ..
            } => format!(
                "a call to sub-orchestrator `{name}` as instance `{instance_id}` (SubOrchestrationScheduled #{seq})"
            ),
            Event::SubOrchestrationCompleted { seq, .. } => {
                format!("SubOrchestrationCompleted #{seq}")
            }
            Event::SubOrchestrationFailed { seq, failure } => {
                format!("SubOrchestrationFailed #{seq}: {failure}")
            }
            Event::PatchApplied { name } => format!("the patched path `{name}` (PatchApplied)"),
            Event::EntityCalled {
                seq,
                entity,
                operation,
                ..
            } => format!("a call to entity operation `{entity}.{operation}` (EntityCalled #{seq})"),
            Event::EntitySignaled {
                seq,
                entity,
                operation,
                ..
            } => format!(
                "a signal to entity operation `{entity}.{operation}` (EntitySignaled #{seq})"
            ),
            Event::EntityCompleted { seq, .. } => format!("EntityCompleted #{seq}"),
            Event::EntityFailed { seq, failure } => format!("EntityFailed #{seq}: {failure}"),
            Event::EntityLockRequested { seq, entities } => format!(
                "a lock on {} (EntityLockRequested #{seq})",
                entities
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::EntityLockGranted { seq } => format!("EntityLockGranted #{seq}"),
            Event::EntityUnlockSent { seq, .. } => {
                format!("the release of a critical section (EntityUnlockSent #{seq})")
            }
            Event::EntityOperation { operation, .. } => format!("EntityOperation `{operation}`"),
            Event::EntityLockRequest { owner, .. } => {
                format!("EntityLockRequest from `{}`", owner.instance_id)
            }
            Event::EntityUnlock { owner } => format!("EntityUnlock from `{owner}`"),
            Event::EntityDelete {} => "EntityDelete".to_owned(),
            Event::EventRaised { name, .. } => format!("EventRaised `{name}`"),
            Event::ExecutionSuspended { reason } => format!("ExecutionSuspended: {reason}"),
            Event::ExecutionResumed { reason } => format!("ExecutionResumed: {reason}"),
            Event::ExecutionRewound { reason } => format!("ExecutionRewound: {reason}"),
            Event::ExecutionCompleted { .. } => "ExecutionCompleted".to_owned(),
            Event::ExecutionFailed { failure } => format!("ExecutionFailed: {failure}"),
            Event::ExecutionTerminated { reason, .. } => format!("ExecutionTerminated: {reason}"),
        }
    }
}

/// The orchestrator an execution's history belongs to: the name its `ExecutionStarted` names
/// (`None` before it started, and for entities, which have no history).
pub fn orchestrator_of(history: &[Event]) -> Option<&str> {
    history.iter().find_map(|event| match event {
        Event::ExecutionStarted { name, .. } => Some(name.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_embedded_as_raw_json() {
        let event = Event::TaskCompleted {
            seq: 3,
            output: Payload::encode(&vec![1, 2]).unwrap(),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, r#"{"TaskCompleted":{"seq":3,"output":[1,2]}}"#);
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
    }
}

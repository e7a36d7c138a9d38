//! [`Action`]: a durable call the orchestrator code made — what a turn carries out and history
//! records as a decision — and how it is matched against the decision history recorded at
//! the same point when replaying.

use chrono::{DateTime, Utc};

use crate::history::Event;
use crate::id::EntityId;
use crate::payload::Payload;
use crate::timeouts::ActivityTimeouts;

/// A durable call the orchestrator code made, not yet matched against history or recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    CallActivity {
        seq: u64,
        name: String,
        input: Payload,
        /// Start-to-close and heartbeat timeouts, carried with the work item.
        timeouts: ActivityTimeouts,
        /// When schedule-to-close ends the call.
        deadline: Option<DateTime<Utc>>,
        /// Heartbeat details the attempt starts from (a retry of one that heartbeated).
        heartbeat: Option<Payload>,
        /// Its priority among waiting work (flow control; not recorded in history).
        priority: i32,
        /// The retry policy's attempt this call is (1 for the first; not recorded in
        /// history): its first delivery has this number.
        attempt: u32,
    },
    CreateTimer {
        seq: u64,
        fire_at: DateTime<Utc>,
    },
    CallSubOrchestrator {
        seq: u64,
        name: String,
        version: String,
        instance_id: String,
        input: Payload,
    },
    Patch {
        name: String,
    },
    CallEntity {
        seq: u64,
        entity: EntityId,
        operation: String,
        input: Payload,
    },
    SignalEntity {
        seq: u64,
        entity: EntityId,
        operation: String,
        input: Payload,
        at: Option<DateTime<Utc>>,
    },
    LockEntities {
        seq: u64,
        entities: Vec<EntityId>,
    },
    UnlockEntities {
        seq: u64,
        entities: Vec<EntityId>,
    },
    /// The code cancelled call `seq`, which is still open.
    CancelCall {
        seq: u64,
        target: CancelTarget,
        reason: String,
    },
}

/// What a cancelled call was, which decides what cancelling it does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CancelTarget {
    /// Its work item is deleted; the worker running it tells the activity to stop.
    Activity,
    /// The child instance is terminated.
    SubOrchestration(String),
    /// The timer's queued `TimerFired` is deleted (if not already due and claimed), so it
    /// does not wake the instance for nothing.
    Timer,
    /// Nothing runs: the completion is just no longer expected (entity calls, locks).
    Nothing,
}

impl Action {
    /// The sequence number of the call this action makes (`None` for patches).
    pub(crate) fn seq(&self) -> Option<u64> {
        match self {
            Action::CallActivity { seq, .. }
            | Action::CreateTimer { seq, .. }
            | Action::CallSubOrchestrator { seq, .. }
            | Action::CallEntity { seq, .. }
            | Action::SignalEntity { seq, .. }
            | Action::LockEntities { seq, .. }
            | Action::UnlockEntities { seq, .. } => Some(*seq),
            Action::Patch { .. } | Action::CancelCall { .. } => None,
        }
    }

    /// The event that records this decision in history.
    pub(crate) fn to_event(&self) -> Event {
        match self {
            Action::CallActivity {
                seq, name, input, ..
            } => Event::TaskScheduled {
                seq: *seq,
                name: name.clone(),
                input: input.clone(),
            },
            Action::CreateTimer { seq, fire_at } => Event::TimerCreated {
                seq: *seq,
                fire_at: *fire_at,
            },
            Action::CallSubOrchestrator {
                seq,
                name,
                instance_id,
                input,
                ..
            } => Event::SubOrchestrationScheduled {
                seq: *seq,
                name: name.clone(),
                instance_id: instance_id.clone(),
                input: input.clone(),
            },
            Action::Patch { name } => Event::PatchApplied { name: name.clone() },
            Action::CallEntity {
                seq,
                entity,
                operation,
                input,
            } => Event::EntityCalled {
                seq: *seq,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
            },
            Action::SignalEntity {
                seq,
                entity,
                operation,
                input,
                at,
            } => Event::EntitySignaled {
                seq: *seq,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
                at: *at,
            },
            Action::LockEntities { seq, entities } => Event::EntityLockRequested {
                seq: *seq,
                entities: entities.clone(),
            },
            Action::UnlockEntities { seq, entities } => Event::EntityUnlockSent {
                seq: *seq,
                entities: entities.clone(),
            },
            Action::CancelCall { seq, reason, .. } => Event::CallCancelled {
                seq: *seq,
                reason: reason.clone(),
            },
        }
    }

    /// Whether a recorded decision is this call. Activities and sub-orchestrators must have
    /// the same name; timers match any recorded timer (the recorded due time stays
    /// authoritative).
    pub(crate) fn matches(&self, recorded: &Event) -> bool {
        match (self, recorded) {
            (
                Action::CallActivity { seq, name, .. },
                Event::TaskScheduled {
                    seq: rseq,
                    name: rname,
                    ..
                },
            ) => seq == rseq && name == rname,
            (Action::CreateTimer { seq, .. }, Event::TimerCreated { seq: rseq, .. }) => seq == rseq,
            (
                Action::CallSubOrchestrator { seq, name, .. },
                Event::SubOrchestrationScheduled {
                    seq: rseq,
                    name: rname,
                    ..
                },
            ) => seq == rseq && name == rname,
            (Action::Patch { name }, Event::PatchApplied { name: rname }) => name == rname,
            (
                Action::CallEntity {
                    seq,
                    entity,
                    operation,
                    ..
                },
                Event::EntityCalled {
                    seq: rseq,
                    entity: rentity,
                    operation: roperation,
                    ..
                },
            )
            | (
                Action::SignalEntity {
                    seq,
                    entity,
                    operation,
                    ..
                },
                Event::EntitySignaled {
                    seq: rseq,
                    entity: rentity,
                    operation: roperation,
                    ..
                },
            ) => seq == rseq && entity == rentity && operation == roperation,
            (
                Action::LockEntities { seq, entities },
                Event::EntityLockRequested {
                    seq: rseq,
                    entities: rentities,
                },
            )
            | (
                Action::UnlockEntities { seq, entities },
                Event::EntityUnlockSent {
                    seq: rseq,
                    entities: rentities,
                },
            ) => seq == rseq && entities == rentities,
            (Action::CancelCall { seq, .. }, Event::CallCancelled { seq: rseq, .. }) => seq == rseq,
            _ => false,
        }
    }

    /// What the code does, phrased to follow "the orchestrator code now …".
    pub(crate) fn describe_now(&self) -> String {
        match self {
            Action::CallActivity { seq, name, .. } => {
                format!("calls activity `{name}` as durable call #{seq}")
            }
            Action::CreateTimer { seq, .. } => {
                format!("creates a durable timer as durable call #{seq}")
            }
            Action::CallSubOrchestrator { seq, name, .. } => {
                format!("calls sub-orchestrator `{name}` as durable call #{seq}")
            }
            Action::Patch { name } => format!("takes the patched path `{name}`"),
            Action::CallEntity {
                seq,
                entity,
                operation,
                ..
            } => format!("calls entity operation `{entity}.{operation}` as durable call #{seq}"),
            Action::SignalEntity {
                seq,
                entity,
                operation,
                ..
            } => format!("signals entity operation `{entity}.{operation}` as durable call #{seq}"),
            Action::LockEntities { seq, .. } => {
                format!("locks entities as durable call #{seq}")
            }
            Action::UnlockEntities { seq, .. } => {
                format!("releases a critical section as durable call #{seq}")
            }
            Action::CancelCall { seq, .. } => format!("cancels durable call #{seq}"),
        }
    }
}

//! Errors: [`Error`], what every fallible duractor call returns, and [`Failure`], the
//! serializable description of a failed activity or orchestration that history records.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a failed activity, orchestration or operation failed with, as recorded in history.
///
/// A `Failure` is plain data: it survives serialization, crosses process boundaries and is
/// what [`Error::ActivityFailed`] carries into the orchestrator that called the activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Human-readable message, e.g. the `Display` text of the error the function returned.
    pub message: String,
    /// A short machine-readable kind: `"application"`, `"panic"`, `"nondeterminism"`,
    /// `"activity_failed"`, `"invalid_input"`, …
    #[serde(default = "Failure::default_kind")]
    pub kind: String,
    /// The failure that caused this one, e.g. the activity failure an orchestrator returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<Failure>>,
    /// `true` when retrying cannot help (retry policies skip such failures).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_retriable: bool,
}

impl Failure {
    fn default_kind() -> String {
        "application".to_owned()
    }

    /// A failure of the given kind with a message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            kind: kind.into(),
            cause: None,
            non_retriable: false,
        }
    }

    /// An application failure (`kind == "application"`).
    pub fn application(message: impl Into<String>) -> Self {
        Failure::new("application", message)
    }

    /// The failure of a function that panicked, carrying the panic message.
    pub fn panic(message: impl Into<String>) -> Self {
        Failure::new("panic", message)
    }

    /// Whether this is the failure of an activity attempt or call that a timeout stopped
    /// (kinds `start_to_close_timeout`, `heartbeat_timeout`, `schedule_to_close_timeout`),
    /// here or in its cause.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "start_to_close_timeout" | "heartbeat_timeout" | "schedule_to_close_timeout"
        ) || self.cause.as_deref().is_some_and(Failure::is_timeout)
    }

    /// Attaches the failure that caused this one.
    pub fn with_cause(mut self, cause: Failure) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error type of duractor.
///
/// Orchestrators see [`Error::ActivityFailed`] when an activity they called failed; clients see
/// the management errors (`InstanceExists`, `InstanceNotFound`, …). Every variant's message says
/// what happened and, where there is one, what to do about it. An orchestrator or activity may
/// return `duractor::Error` as its error type; [`Error::msg`] makes one from a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An application error with a message, made by [`Error::msg`] or returned by user code.
    #[error("{0}")]
    Failed(Failure),

    /// An activity called by the orchestrator failed (returned an error or panicked).
    #[error("activity `{name}` failed: {failure}")]
    ActivityFailed {
        /// The activity's registered name.
        name: String,
        /// What the activity failed with.
        failure: Failure,
    },

    /// A sub-orchestration called by the orchestrator failed (or was terminated, or could not
    /// start because its instance id was in use).
    #[error("sub-orchestration `{name}` (instance `{instance_id}`) failed: {failure}")]
    SubOrchestrationFailed {
        /// The sub-orchestrator's registered name.
        name: String,
        /// The child instance id.
        instance_id: String,
        /// What the child failed with.
        failure: Failure,
    },

    /// An entity operation called by the orchestrator failed; the entity's state is as it
    /// was before the operation.
    #[error("entity operation `{entity}.{operation}` failed: {failure}")]
    EntityOperationFailed {
        /// The entity (boxed to keep `Error` small).
        entity: Box<crate::id::EntityId>,
        /// The operation.
        operation: String,
        /// What it failed with.
        failure: Failure,
    },

    /// A rule of critical sections was broken (nesting, calling an entity that is not
    /// locked, two calls at once to one locked entity).
    #[error("critical section: {0}")]
    CriticalSection(String),

    /// A guard rail (payload size, history length, calls per turn) was exceeded.
    #[error("{message}")]
    LimitExceeded {
        /// The name of the limit, e.g. `max_payload_bytes`.
        limit: &'static str,
        /// What exceeded it and what to do.
        message: String,
    },

    /// The operation needs a running (or failed, for rewind) instance.
    #[error("instance `{instance_id}` is {status}; {message}")]
    InvalidState {
        /// The instance.
        instance_id: String,
        /// Its status.
        status: String,
        /// Which states the operation needs.
        message: String,
    },

    /// The operation needs an instance that has not finished, but this one is Completed,
    /// Failed or Terminated (raising an event to it, terminating or suspending it, rewinding
    /// one that did not fail). The HTTP API answers 410 Gone, as Durable Functions does.
    #[error("instance `{instance_id}` is {status}; {message}")]
    InstanceFinished {
        /// The instance.
        instance_id: String,
        /// Its final status.
        status: String,
        /// What the operation needed, and what to do instead.
        message: String,
    },

    /// Replaying the instance's history with the current code produced a different sequence
    /// of durable calls: the orchestrator's code changed in a way that breaks running instances,
    /// or it depends on something nondeterministic the compile-time lint cannot see.
    #[error(
        "nondeterminism in instance `{instance_id}` at history position {position}: history recorded \
         {recorded}, but the orchestrator code now {now}. The code changed in a way that is not \
         compatible with running instances, or it depends on a nondeterministic value; keep the \
         old code path for old instances (versioning) or restart the instance"
    )]
    NonDeterminism {
        /// The instance whose replay diverged.
        instance_id: String,
        /// Position (0-based index) of the history event that did not match.
        position: u64,
        /// What history recorded at that position.
        recorded: String,
        /// What the code did instead.
        now: String,
    },

    /// `start` with an instance id that is already in use by a pending or running instance.
    #[error(
        "instance `{instance_id}` already exists and is {status}; choose another instance id, or \
         wait for it to finish (or terminate it) before starting it again"
    )]
    InstanceExists {
        /// The duplicate instance id.
        instance_id: String,
        /// The status of the existing instance.
        status: String,
    },

    /// No instance with this id exists in the store.
    #[error(
        "no instance `{0}` exists in this store; check the instance id (list instances to see them)"
    )]
    InstanceNotFound(String),

    /// `create_schedule` with the id of an existing schedule.
    #[error(
        "schedule `{0}` already exists; update it (`update_schedule`, `PUT /schedules/{{id}}`, \
         `schedule update`) or delete it first"
    )]
    ScheduleExists(String),

    /// No schedule with this id exists.
    #[error("no schedule `{0}` exists in this store; list schedules to see them")]
    ScheduleNotFound(String),

    /// No orchestrator with this name is registered in this program.
    #[error("no orchestrator named `{name}` is registered; registered orchestrators: {known}")]
    UnknownOrchestrator {
        /// The name that was asked for.
        name: String,
        /// Comma-separated names that are registered.
        known: String,
    },

    /// No activity with this name is registered on this worker.
    #[error(
        "no activity named `{name}` is registered on this worker; registered activities: {known}"
    )]
    UnknownActivity {
        /// The name that was asked for.
        name: String,
        /// Comma-separated names that are registered.
        known: String,
    },

    /// No entity with this name is registered in this program.
    #[error("no entity named `{name}` is registered; registered entities: {known}")]
    UnknownEntity {
        /// The name that was asked for.
        name: String,
        /// Comma-separated names that are registered.
        known: String,
    },

    /// The entity type has no operation with this name.
    #[error("entity `{entity}` has no operation `{operation}`; its operations are: {known}")]
    UnknownOperation {
        /// The entity type's name.
        entity: String,
        /// The operation that was asked for.
        operation: String,
        /// Comma-separated operations it has.
        known: String,
    },

    /// A payload (input, output, event data) could not be serialized or deserialized.
    #[error("invalid {what}: {message}")]
    InvalidPayload {
        /// What the payload is, e.g. "input for orchestrator `hello`".
        what: String,
        /// The serde error.
        message: String,
    },

    /// A wait did not finish within its timeout. Nothing was cancelled: the instance goes on.
    #[error(
        "timed out after {timeout_ms} ms waiting for {what}; it is still running, wait again or check its status"
    )]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The timeout that elapsed, in milliseconds.
        timeout_ms: u64,
    },

    /// The store failed (database unreachable, I/O error, corrupt data).
    #[error("store error: {message}")]
    Store {
        /// What the database said.
        message: String,
        /// `true` when retrying later may succeed (connection lost, database busy).
        transient: bool,
        /// The driver's own error, when there is one (`std::error::Error::source`).
        #[source]
        source: Option<StoreSource>,
    },

    /// Another worker holds the instance now (this worker's lease lapsed); this worker's
    /// change was not committed.
    #[error(
        "instance `{instance_id}` is held by another worker; this worker's lease lapsed and its change was discarded"
    )]
    Conflict {
        /// The instance.
        instance_id: String,
    },

    /// The runtime is shutting down or has stopped.
    #[error("the duractor runtime has stopped")]
    Shutdown,

    /// An argument was invalid (empty instance id, bad configuration value, …).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// An application error with a message.
    ///
    /// ```
    /// # fn check(city: &str) -> Result<(), duractor::Error> {
    /// if city.is_empty() {
    ///     return Err(duractor::Error::msg("a city name is required"));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Failed(Failure::application(message.to_string()))
    }

    /// A store error that may succeed if retried.
    pub fn store_transient(message: impl fmt::Display) -> Self {
        Error::Store {
            message: message.to_string(),
            transient: true,
            source: None,
        }
    }

    /// A store error that will not go away by retrying.
    pub fn store(message: impl fmt::Display) -> Self {
        Error::Store {
            message: message.to_string(),
            transient: false,
            source: None,
        }
    }

    /// A store error caused by a driver's error, which stays reachable through
    /// `std::error::Error::source` (and its own message is part of `message`).
    pub fn store_caused_by(
        message: impl fmt::Display,
        transient: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Store {
            message: message.to_string(),
            transient,
            source: Some(StoreSource(std::sync::Arc::new(source))),
        }
    }

    /// An invalid payload error.
    pub fn invalid_payload(what: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::InvalidPayload {
            what: what.into(),
            message: err.to_string(),
        }
    }

    /// An error that retry policies do not retry (`Failure::non_retriable` is set): return it
    /// from an activity when trying again cannot help (bad input, a refused payment).
    pub fn non_retriable(message: impl fmt::Display) -> Self {
        let mut failure = Failure::application(message.to_string());
        failure.non_retriable = true;
        Error::Failed(failure)
    }

    /// Whether a retry policy may retry after this error: not when the failure (or the
    /// activity's or sub-orchestration's failure it carries) is marked non-retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Failed(failure)
            | Error::ActivityFailed { failure, .. }
            | Error::SubOrchestrationFailed { failure, .. }
            | Error::EntityOperationFailed { failure, .. } => !failure.non_retriable,
            Error::NonDeterminism { .. }
            | Error::LimitExceeded { .. }
            | Error::InvalidPayload { .. } => false,
            _ => true,
        }
    }

    /// `true` for [`Error::Timeout`] (a client's wait), and for an activity call that failed
    /// because one of its timeouts elapsed ([`Failure::is_timeout`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::ActivityFailed { failure, .. } => failure.is_timeout(),
            _ => false,
        }
    }

    /// The failure this error describes, as it is recorded in history.
    pub fn to_failure(&self) -> Failure {
        match self {
            Error::Failed(failure) => failure.clone(),
            Error::ActivityFailed { failure, .. } => {
                Failure::new("activity_failed", self.to_string()).with_cause(failure.clone())
            }
            Error::NonDeterminism { .. } => Failure::new("nondeterminism", self.to_string()),
            Error::InvalidPayload { .. } => Failure::new("invalid_payload", self.to_string()),
            Error::UnknownActivity { .. } => Failure::new("unknown_activity", self.to_string()),
            Error::UnknownOrchestrator { .. } => {
                Failure::new("unknown_orchestrator", self.to_string())
            }
            Error::Timeout { .. } => Failure::new("timeout", self.to_string()),
            Error::SubOrchestrationFailed { failure, .. } => {
                Failure::new("sub_orchestration_failed", self.to_string())
                    .with_cause(failure.clone())
            }
            Error::LimitExceeded { .. } => Failure::new("limit_exceeded", self.to_string()),
            Error::EntityOperationFailed { failure, .. } => {
                Failure::new("entity_operation_failed", self.to_string())
                    .with_cause(failure.clone())
            }
            Error::CriticalSection(_) => Failure::new("critical_section", self.to_string()),
            _ => Failure::new("error", self.to_string()),
        }
    }
}

impl From<crate::id::InvalidId> for Error {
    fn from(invalid: crate::id::InvalidId) -> Self {
        Error::InvalidArgument(invalid.to_string())
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        Error::Failed(failure)
    }
}

/// The driver error behind an [`Error::Store`]: shared (so `Error` stays `Clone`) and equal
/// to another only when it is the same error object. It is the link between the store error
/// and the driver's: its [`source`](std::error::Error::source) is the driver's error itself,
/// so walking the chain finds it:
///
/// ```
/// # fn find(error: &duractor::Error) -> Option<&std::io::Error> {
/// std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source())
///     .find_map(|e| e.downcast_ref::<std::io::Error>())
/// # }
/// ```
///
/// or [`get`](Self::get) it directly.
#[derive(Clone)]
pub struct StoreSource(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl StoreSource {
    /// The driver's error.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for StoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the database driver's error")
    }
}

impl std::error::Error for StoreSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.get())
    }
}

impl PartialEq for StoreSource {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `Result<T, duractor::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_round_trips_through_json() {
        let failure = Failure::application("boom").with_cause(Failure::panic("inner"));
        let json = serde_json::to_string(&failure).unwrap();
        assert_eq!(serde_json::from_str::<Failure>(&json).unwrap(), failure);
    }

    #[test]
    fn activity_failure_keeps_its_cause() {
        let err = Error::ActivityFailed {
            name: "charge".into(),
            failure: Failure::application("card declined"),
        };
        let failure = err.to_failure();
        assert_eq!(failure.message, "activity `charge` failed: card declined");
        assert_eq!(failure.cause.unwrap().message, "card declined");
    }
}

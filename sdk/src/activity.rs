//! Activities: the functions that do the work (I/O allowed), run at least once per call.
//! [`ActivityContext`] is what an activity receives; [`SharedState`] holds the values the
//! runtime shares with every activity; `ActivityBody` is how generated code runs one.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Failure};
use crate::handles::{Activity, LocalBoxFuture, decode_input, encode_output};
use crate::payload::Payload;

/// How an activity's function runs: implemented by `#[activity]` beside [`Activity`].
#[doc(hidden)]
pub trait ActivityBody: Activity {
    /// Runs the function.
    fn __invoke(
        ctx: ActivityContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, Failure>>;
}

/// The context of an activity execution.
///
/// Activities may do anything (I/O, clocks, randomness): they run at least once per call, so
/// make their side effects idempotent, for instance with [`idempotency_key`](Self::idempotency_key).
#[derive(Clone)]
pub struct ActivityContext {
    info: Arc<ActivityInfo>,
}

struct ActivityInfo {
    instance_id: String,
    name: String,
    seq: u64,
    attempt: u32,
    shared: SharedState,
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("instance_id", &self.info.instance_id)
            .field("name", &self.info.name)
            .field("seq", &self.info.seq)
            .field("attempt", &self.info.attempt)
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    pub(crate) fn new(
        instance_id: String,
        name: String,
        seq: u64,
        attempt: u32,
        shared: SharedState,
    ) -> Self {
        ActivityContext {
            info: Arc::new(ActivityInfo {
                instance_id,
                name,
                seq,
                attempt,
                shared,
            }),
        }
    }

    /// A context for calling an activity function directly, e.g. in a unit test.
    pub fn for_test(instance_id: &str) -> Self {
        Self::new(
            instance_id.to_owned(),
            "test".to_owned(),
            0,
            1,
            SharedState::default(),
        )
    }

    /// The instance id of the orchestration that called this activity.
    pub fn instance_id(&self) -> &str {
        &self.info.instance_id
    }

    /// The activity's registered name.
    pub fn activity_name(&self) -> &str {
        &self.info.name
    }

    /// A key that is the same for every execution of this one call (instance id and call
    /// number): pass it to external systems to make retried side effects idempotent.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.info.instance_id, self.info.seq)
    }

    /// Which delivery of this call this is, starting at 1 (higher after a crash).
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// A shared value registered on the runtime with `RuntimeBuilder::with_shared`
    /// (an HTTP client, a connection pool, configuration).
    pub fn shared<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.info.shared.get::<T>()
    }
}

/// Values shared with every activity, by type.
#[derive(Clone, Default)]
pub struct SharedState {
    values: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl SharedState {
    /// Adds (or replaces) the value of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        Arc::make_mut(&mut self.values).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|value| value.clone().downcast::<T>().ok())
    }
}

type ErasedActivityFn =
    fn(ActivityContext, Payload) -> LocalBoxFuture<'static, Result<Payload, Failure>>;

/// A registered activity, type-erased: name, type names and how to run it on JSON.
#[derive(Clone, Copy)]
pub struct ActivityEntry {
    /// Registered name.
    pub name: &'static str,
    /// The Rust input type's name.
    pub input_type: fn() -> &'static str,
    /// The Rust output type's name.
    pub output_type: fn() -> &'static str,
    pub(crate) invoke: ErasedActivityFn,
    pub(crate) check_input: fn(&Payload) -> Result<(), Error>,
}

impl ActivityEntry {
    /// The entry for a typed handle.
    pub const fn of<A: ActivityBody>() -> Self {
        ActivityEntry {
            name: A::NAME,
            input_type: std::any::type_name::<A::Input>,
            output_type: std::any::type_name::<A::Output>,
            invoke: invoke_activity::<A>,
            check_input: check_activity_input::<A>,
        }
    }
}

impl ActivityEntry {
    /// Checks that `input` deserializes into the activity's input type.
    pub fn check_input(&self, input: &Payload) -> Result<(), Error> {
        (self.check_input)(input)
    }
}

fn invoke_activity<A: ActivityBody>(
    ctx: ActivityContext,
    input: Payload,
) -> LocalBoxFuture<'static, Result<Payload, Failure>> {
    Box::pin(async move {
        let input: A::Input =
            decode_input(&input, format_args!("input for activity `{}`", A::NAME))?;
        let output = A::__invoke(ctx, input).await?;
        encode_output(&output, format_args!("output of activity `{}`", A::NAME))
    })
}

fn check_activity_input<A: Activity>(input: &Payload) -> Result<(), Error> {
    input
        .decode_as::<A::Input>(format_args!("input for activity `{}`", A::NAME))
        .map(drop)
}

impl fmt::Debug for ActivityEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityEntry")
            .field("name", &self.name)
            .field("input_type", &(self.input_type)())
            .field("output_type", &(self.output_type)())
            .finish_non_exhaustive()
    }
}

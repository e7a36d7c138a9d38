//! The type-erased entity the runtime runs: [`EntityEntry`] (registered by `#[entity]`) loads
//! a stored state and runs operations on it, each rolled back alone when it fails or panics.

use super::context::EntityContext;
use super::model::{Entity, OperationInfo};
use crate::error::{Error, Failure};
use crate::payload::Payload;

/// A registered entity type, type-erased.
#[derive(Clone, Copy)]
pub struct EntityEntry {
    /// Registered name.
    pub name: &'static str,
    /// The state type's name.
    pub state_type: fn() -> &'static str,
    /// The operations.
    pub operations: fn() -> &'static [OperationInfo],
    pub(crate) run: LoadState,
}

/// Deserializes a stored state (or makes the default one) for operations to run on.
type LoadState = fn(Option<&Payload>) -> Result<Box<dyn ErasedState>, Failure>;

impl EntityEntry {
    /// The entry for entity type `E`.
    pub const fn of<E: Entity>() -> Self {
        EntityEntry {
            name: E::NAME,
            state_type: std::any::type_name::<E>,
            operations: E::__operations,
            run: load_state::<E>,
        }
    }

    /// Loads a state (`None`: a new entity) into something operations can run on.
    pub(crate) fn load(&self, state: Option<&Payload>) -> Result<Box<dyn ErasedState>, Failure> {
        (self.run)(state)
    }
}

/// A deserialized entity state, behind a type-erased interface for the runtime.
pub(crate) trait ErasedState {
    /// Runs one operation; on error (or panic) the state is restored as it was.
    fn apply(
        &mut self,
        ctx: &mut EntityContext,
        operation: &str,
        input: &Payload,
    ) -> Result<Payload, Failure>;
    /// Serializes the state.
    fn save(&self) -> Result<Payload, Failure>;
}

struct Typed<E: Entity>(E);

fn load_state<E: Entity>(state: Option<&Payload>) -> Result<Box<dyn ErasedState>, Failure> {
    let value = match state {
        Some(state) => state
            .decode_as::<E>(format_args!("the state of entity `{}`", E::NAME))
            .map_err(|e| e.to_failure())?,
        None => E::default(),
    };
    Ok(Box::new(Typed(value)))
}

impl<E: Entity> ErasedState for Typed<E> {
    fn apply(
        &mut self,
        ctx: &mut EntityContext,
        operation: &str,
        input: &Payload,
    ) -> Result<Payload, Failure> {
        // Operations that fail must leave no trace: keep the state to restore it.
        let snapshot = serde_json::to_vec(&self.0).map_err(|e| {
            Error::invalid_payload(format!("the state of entity `{}`", E::NAME), e).to_failure()
        })?;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::panics::caught(|| self.0.__dispatch(ctx, operation, input))
        }));
        let result = match outcome {
            Ok(Ok(output)) => match ctx.error.borrow_mut().take() {
                Some(error) => Err(error.to_failure()),
                None => Ok(output),
            },
            Ok(Err(failure)) => Err(failure),
            Err(panic) => {
                let message = crate::panics::panic_message(&*panic);
                tracing::error!(
                    entity = %ctx.id(),
                    operation,
                    at = crate::panics::take_location().as_deref().unwrap_or("?"),
                    "entity operation panicked: {message}"
                );
                Err(Failure::panic(format!(
                    "entity operation `{}.{operation}` panicked: {message}",
                    E::NAME
                )))
            }
        };
        if result.is_err() {
            if let Ok(previous) = serde_json::from_slice(&snapshot) {
                self.0 = previous;
            }
            ctx.effects.borrow_mut().clear();
            ctx.delete.set(false);
        }
        result
    }

    fn save(&self) -> Result<Payload, Failure> {
        Payload::encode(&self.0).map_err(|e| {
            Error::invalid_payload(format!("the state of entity `{}`", E::NAME), e).to_failure()
        })
    }
}

//! [`EntityContext`]: what an entity operation may do besides changing its state — signal
//! entities (itself too, later), start orchestrations, delete itself — each done only if the
//! operation succeeds; and the proxy mode of signals sent from an operation.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::proxy::{ProxyMode, ProxyTarget, SignalFromEntity};
use crate::error::Error;
use crate::handles::Orchestrator;
use crate::id::EntityId;
use crate::payload::Payload;

/// A message from an entity operation to the outside world, sent only if the operation
/// succeeds.
#[derive(Debug, Clone)]
pub(crate) enum EntityEffect {
    Signal {
        target: EntityId,
        operation: String,
        input: Payload,
        at: Option<DateTime<Utc>>,
    },
    StartOrchestration {
        name: String,
        /// Empty: the version the worker registers for `name`.
        version: String,
        instance_id: Option<String>,
        input: Payload,
        /// Started as this entity's child number `seq`: its end comes back as a
        /// `SubOrchestrationCompleted`/`Failed` message (built-in schedules).
        child_seq: Option<u64>,
    },
    /// Terminates an orchestration instance (and its children).
    Terminate { instance_id: String, reason: String },
}

/// The context of an entity operation: the entity's id, signals to other entities (or to
/// itself, later), orchestrations to start, and deleting the entity.
///
/// What an operation sends through its context happens only if the operation succeeds.
#[derive(Debug, Clone)]
pub struct EntityContext {
    id: EntityId,
    pub(crate) effects: std::rc::Rc<std::cell::RefCell<Vec<EntityEffect>>>,
    pub(crate) delete: std::rc::Rc<std::cell::Cell<bool>>,
    pub(crate) error: std::rc::Rc<std::cell::RefCell<Option<Error>>>,
    /// When the operation runs (the store's clock), for built-in entities.
    pub(crate) now: DateTime<Utc>,
}

impl EntityContext {
    pub(crate) fn new(id: EntityId) -> Self {
        Self::at(id, Utc::now())
    }

    /// A context for an operation that runs at `now`.
    pub(crate) fn at(id: EntityId, now: DateTime<Utc>) -> Self {
        EntityContext {
            id,
            effects: Default::default(),
            delete: Default::default(),
            error: Default::default(),
            now,
        }
    }

    /// A context for calling entity operations directly, e.g. in a unit test.
    pub fn for_test(id: EntityId) -> Self {
        Self::new(id)
    }

    /// This entity's id.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// This entity's key.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// Starts an orchestration (with a new random instance id unless `instance_id` is given)
    /// when the operation succeeds. An `instance_id` that breaks the rule in
    /// [`id`](crate::id) (e.g. one starting with `@`) fails the operation.
    pub fn start_orchestration<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
        instance_id: Option<String>,
    ) {
        if let Some(id) = &instance_id
            && let Err(error) = crate::id::validate_instance_id(id)
        {
            return self.fail(error.into());
        }
        match Payload::encode(&input) {
            Ok(input) => self
                .effects
                .borrow_mut()
                .push(EntityEffect::StartOrchestration {
                    name: O::NAME.to_owned(),
                    version: O::VERSION.to_owned(),
                    instance_id,
                    input,
                    child_seq: None,
                }),
            Err(e) => self.fail(Error::invalid_payload(
                format!("input for orchestrator `{}`", O::NAME),
                e,
            )),
        }
    }

    /// Starts orchestrator `name` (at the version this worker registers) as this entity's
    /// child number `seq`, when the operation succeeds.
    pub(crate) fn start_child(&self, name: &str, input: Payload, instance_id: String, seq: u64) {
        self.effects
            .borrow_mut()
            .push(EntityEffect::StartOrchestration {
                name: name.to_owned(),
                version: String::new(),
                instance_id: Some(instance_id),
                input,
                child_seq: Some(seq),
            });
    }

    /// Terminates instance `instance_id` (and its children) when the operation succeeds.
    pub(crate) fn terminate(&self, instance_id: &str, reason: &str) {
        self.effects.borrow_mut().push(EntityEffect::Terminate {
            instance_id: instance_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Deletes this entity when the operation succeeds: its state is removed (the next
    /// message to it starts again from `Default`).
    pub fn delete_entity(&self) {
        self.delete.set(true);
    }

    pub(crate) fn push_signal(
        &self,
        target: &EntityId,
        operation: &'static str,
        input: Result<Payload, Error>,
        at: Option<DateTime<Utc>>,
    ) {
        match input {
            Ok(input) => self.effects.borrow_mut().push(EntityEffect::Signal {
                target: target.clone(),
                operation: operation.to_owned(),
                input,
                at,
            }),
            Err(error) => self.fail(error),
        }
    }

    /// Records an error found while the operation ran (an unserializable signal input): the
    /// operation fails with it.
    fn fail(&self, error: Error) {
        self.error.borrow_mut().get_or_insert(error);
    }
}

impl ProxyMode for SignalFromEntity {
    type Sender = EntityContext;
    type Output<T: DeserializeOwned + 'static> = ();

    fn send<T: DeserializeOwned + 'static>(
        target: &ProxyTarget<Self>,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) {
        target
            .sender
            .push_signal(&target.entity, operation, input, target.at);
    }
}

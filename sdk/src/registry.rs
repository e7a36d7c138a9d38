//! The registry of functions a worker can run: every `#[activity]`, `#[orchestrator]` and
//! `#[entity]` linked into the program registers itself (through `inventory`) as a
//! type-erased entry that runs on JSON; [`Registry`] collects them, and the runtime builder
//! can add more by hand.

use std::collections::BTreeMap;

use crate::activity::ActivityBody;
pub use crate::activity::ActivityEntry;
use crate::entity::{Entity, EntityEntry};
use crate::error::Error;
pub use crate::handles::{Activity, LocalBoxFuture, Orchestrator};
use crate::orchestration::OrchestratorBody;
pub use crate::orchestration::OrchestratorEntry;

/// One automatically registered function (submitted by the attribute macros).
#[doc(hidden)]
pub enum Registration {
    Activity(ActivityEntry),
    Orchestrator(OrchestratorEntry),
    Entity(EntityEntry),
}

inventory::collect!(Registration);

/// The functions a worker can run, by name.
///
/// [`Registry::global`] holds every `#[activity]` and `#[orchestrator]` linked into the program;
/// add handles by hand with [`Registry::activity`] and [`Registry::orchestrator`].
#[derive(Clone, Default)]
pub struct Registry {
    activities: BTreeMap<&'static str, ActivityEntry>,
    orchestrators: BTreeMap<&'static str, OrchestratorEntry>,
    entities: BTreeMap<&'static str, EntityEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every annotated function linked into this program.
    ///
    /// Two functions of one kind registered under one name (say `#[orchestrator(name = "flow")]`
    /// on two versions of a function) cannot both run: one of them wins, in no defined order,
    /// and a warning names the name.
    pub fn global() -> Self {
        let mut registry = Self::new();
        let mut taken = std::collections::BTreeSet::new();
        for registration in inventory::iter::<Registration> {
            let (kind, name) = match registration {
                Registration::Activity(entry) => ("activity", entry.name),
                Registration::Orchestrator(entry) => ("orchestrator", entry.name),
                Registration::Entity(entry) => ("entity", entry.name),
            };
            if !taken.insert((kind, name)) {
                tracing::warn!(
                    kind,
                    name,
                    "two functions are registered as {kind} `{name}`; only one of them runs — \
                     give one another name, or turn off auto-registration \
                     (`auto_register(false)`) and add the one to run by hand"
                );
            }
            match registration {
                Registration::Activity(entry) => registry.add_activity(*entry),
                Registration::Orchestrator(entry) => registry.add_orchestrator(*entry),
                Registration::Entity(entry) => registry.add_entity(*entry),
            }
        }
        registry
    }

    /// Adds an activity by its handle.
    pub fn activity<A: ActivityBody>(&mut self, _handle: A) -> &mut Self {
        self.add_activity(ActivityEntry::of::<A>());
        self
    }

    /// Adds an orchestrator by its handle.
    pub fn orchestrator<O: OrchestratorBody>(&mut self, _handle: O) -> &mut Self {
        self.add_orchestrator(OrchestratorEntry::of::<O>());
        self
    }

    /// Adds an entity type.
    pub fn entity<E: Entity>(&mut self) -> &mut Self {
        self.add_entity(EntityEntry::of::<E>());
        self
    }

    /// Adds a type-erased entity entry.
    pub fn add_entity(&mut self, entry: EntityEntry) {
        self.entities.insert(entry.name, entry);
    }

    /// The entity type registered under `name`.
    pub fn get_entity(&self, name: &str) -> Result<&EntityEntry, Error> {
        self.entities.get(name).ok_or_else(|| Error::UnknownEntity {
            name: name.to_owned(),
            known: join_names(self.entities.keys()),
        })
    }

    /// Registered entity types, by name.
    pub fn entities(&self) -> impl Iterator<Item = &EntityEntry> {
        self.entities.values()
    }

    /// Adds a type-erased activity entry.
    pub fn add_activity(&mut self, entry: ActivityEntry) {
        self.activities.insert(entry.name, entry);
    }

    /// Adds a type-erased orchestrator entry.
    pub fn add_orchestrator(&mut self, entry: OrchestratorEntry) {
        self.orchestrators.insert(entry.name, entry);
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: &Registry) {
        self.activities
            .extend(other.activities.iter().map(|(k, v)| (*k, *v)));
        self.orchestrators
            .extend(other.orchestrators.iter().map(|(k, v)| (*k, *v)));
        self.entities
            .extend(other.entities.iter().map(|(k, v)| (*k, *v)));
    }

    /// The activity registered under `name`.
    pub fn get_activity(&self, name: &str) -> Result<&ActivityEntry, Error> {
        self.activities
            .get(name)
            .ok_or_else(|| Error::UnknownActivity {
                name: name.to_owned(),
                known: join_names(self.activities.keys()),
            })
    }

    /// The orchestrator registered under `name`.
    pub fn get_orchestrator(&self, name: &str) -> Result<&OrchestratorEntry, Error> {
        self.orchestrators
            .get(name)
            .ok_or_else(|| Error::UnknownOrchestrator {
                name: name.to_owned(),
                known: join_names(self.orchestrators.keys()),
            })
    }

    /// Registered activities, by name.
    pub fn activities(&self) -> impl Iterator<Item = &ActivityEntry> {
        self.activities.values()
    }

    /// The flow-control limits declared on the registered activities, by activity name.
    pub fn declared_flow_limits(&self) -> BTreeMap<String, crate::flow::FlowControl> {
        self.activities()
            .filter_map(|entry| Some((entry.name.to_owned(), (entry.flow)()?)))
            .collect()
    }

    /// The flow-control limits declared on the registered orchestrators, by name.
    pub fn declared_orchestrator_flow_limits(&self) -> BTreeMap<String, crate::flow::FlowControl> {
        self.orchestrators()
            .filter_map(|entry| Some((entry.name.to_owned(), (entry.flow)()?)))
            .collect()
    }

    /// Registered orchestrators, by name.
    pub fn orchestrators(&self) -> impl Iterator<Item = &OrchestratorEntry> {
        self.orchestrators.values()
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a &'static str>) -> String {
    let names: Vec<&str> = names.copied().collect();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

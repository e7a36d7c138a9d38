//! The public paths of earlier releases keep working: the modules were split into layers
//! (docs/architecture.md), and every item users could name is still reachable where it was.
//! This file compiles only if they are; the test checks a few of them are the same items as
//! at their new homes.

#![allow(unused_imports)]

use duractor::context::{ActivityContext, OrchestrationContext, OrchestrationRng, SharedState};
use duractor::durable::{
    ActivityCall, Call, ContinueAsNew, CriticalSection, Durable, DurableFuture, Either, EntityCall,
    EventWait, EventWaitTimeout, Join, JoinAll, LockRequest, Select, SubOrchestrationCall, Timer,
    WhenAny,
};
use duractor::entity::{
    CallFromOrchestration, ClientSignal, Entity, EntityContext, EntityId, OperationInfo, ProxyMode,
    ProxyTarget, SignalFromClient, SignalFromEntity, SignalFromOrchestration,
};
use duractor::history::{Event, ParentInstance, Payload};
use duractor::id::{MAX_ID_BYTES, validate_entity_id, validate_event_name, validate_instance_id};
use duractor::registry::{
    Activity, ActivityEntry, LocalBoxFuture, Orchestrator, OrchestratorEntry, Registry,
};
use duractor::replay::{Limits, MAX_PAYLOAD_DEPTH, check_history};

#[test]
fn old_and_new_paths_name_the_same_items() {
    fn same<T: 'static, U: 'static>() -> bool {
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>()
    }
    assert!(same::<
        duractor::context::OrchestrationContext,
        duractor::OrchestrationContext,
    >());
    assert!(same::<
        duractor::context::ActivityContext,
        duractor::ActivityContext,
    >());
    assert!(same::<duractor::replay::Limits, duractor::Limits>());
    assert!(same::<duractor::history::Payload, duractor::Payload>());
    assert!(same::<duractor::entity::EntityId, duractor::EntityId>());
    assert!(same::<
        duractor::registry::OrchestratorEntry,
        duractor::orchestration::OrchestratorEntry,
    >());
    assert!(same::<
        duractor::durable::Timer,
        duractor::orchestration::Timer,
    >());
    // The id rules still convert into `duractor::Error` with `?`.
    fn checked(id: &str) -> Result<(), duractor::Error> {
        validate_instance_id(id)?;
        Ok(())
    }
    assert!(matches!(
        checked("@Counter@visits"),
        Err(duractor::Error::InvalidArgument(_))
    ));
}

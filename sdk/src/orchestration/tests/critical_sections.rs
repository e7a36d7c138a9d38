//! Critical sections: `ctx.lock` asks for every entity at once in sorted order; inside a
//! granted section the code calls only those entities, one call in flight each; sections do
//! not nest; the section is released when its guard drops or the execution ends.

use super::*;
use crate::entity::EntityId;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::entity]
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Account {
    balance: i64,
}

#[crate::entity]
impl Account {
    fn deposit(&mut self, amount: i64) {
        self.balance += amount;
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

fn account(key: &str) -> EntityId {
    EntityId::of::<Account>(key)
}

#[crate::orchestrator]
async fn transfer(ctx: OrchestrationContext, amount: i64) -> Result<i64, Error> {
    let section = ctx
        .lock(&[account("zed"), account("ada"), account("zed")])
        .await?;
    ctx.call_entity::<Account>("ada").deposit(-amount).await?;
    let balance = ctx.call_entity::<Account>("zed").balance().await?;
    drop(section);
    Ok(balance)
}

#[crate::orchestrator]
async fn calls_outside(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let _section = ctx.lock(&[account("ada")]).await?;
    match ctx.call_entity::<Account>("bob").balance().await {
        Ok(_) => Ok("called".to_owned()),
        Err(error) => Ok(error.to_string()),
    }
}

#[crate::orchestrator]
async fn nests(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let _outer = ctx.lock(&[account("ada")]).await?;
    match ctx.lock(&[account("bob")]).await {
        Ok(_) => Ok("nested".to_owned()),
        Err(error) => Ok(error.to_string()),
    }
}

#[crate::orchestrator]
async fn two_at_once(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let _section = ctx.lock(&[account("ada")]).await?;
    let first = ctx.call_entity::<Account>("ada").balance();
    match ctx.call_entity::<Account>("ada").balance().await {
        Ok(_) => Ok("both".to_owned()),
        Err(error) => {
            first.await?;
            Ok(error.to_string())
        }
    }
}

#[crate::orchestrator]
async fn fails_inside(ctx: OrchestrationContext, _: ()) -> Result<(), Error> {
    let _section = ctx.lock(&[account("ada")]).await?;
    ctx.call_entity::<Account>("ada").balance().await?;
    Err(Error::InvalidArgument("gave up".to_owned()))
}

fn lock_requests(out: &TurnOutput) -> Vec<(u64, Vec<EntityId>)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::LockEntities { seq, entities } => Some((*seq, entities.clone())),
            _ => None,
        })
        .collect()
}

fn unlocks(out: &TurnOutput) -> Vec<Vec<EntityId>> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::UnlockEntities { entities, .. } => Some(entities.clone()),
            _ => None,
        })
        .collect()
}

fn entity_calls(out: &TurnOutput) -> Vec<(u64, EntityId, String)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::CallEntity {
                seq,
                entity,
                operation,
                ..
            } => Some((*seq, entity.clone(), operation.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_section_locks_sorted_entities_calls_them_and_releases_them() {
    let (mut instance, first) = Instance::start(Transfer, 5);
    assert_eq!(
        lock_requests(&first),
        [(0, vec![account("ada"), account("zed")])],
        "sorted, without duplicates"
    );
    assert!(
        entity_calls(&first).is_empty(),
        "nothing runs before the grant"
    );
    let granted = instance.turn(1, vec![Event::EntityLockGranted { seq: 0 }]);
    assert_eq!(
        entity_calls(&granted),
        [(1, account("ada"), "deposit".to_owned())]
    );
    let out = instance.turn(
        2,
        vec![Event::EntityCompleted {
            seq: 1,
            output: json(()),
        }],
    );
    assert_eq!(
        entity_calls(&out),
        [(2, account("zed"), "balance".to_owned())]
    );
    let out = instance.turn(
        3,
        vec![Event::EntityCompleted {
            seq: 2,
            output: json(40),
        }],
    );
    assert_eq!(unlocks(&out), [vec![account("ada"), account("zed")]]);
    assert_eq!(completed::<i64>(&out), 40);
}

#[test]
fn inside_a_section_only_locked_entities_may_be_called() {
    let (mut instance, _) = Instance::start(CallsOutside, ());
    let out = instance.turn(1, vec![Event::EntityLockGranted { seq: 0 }]);
    assert!(entity_calls(&out).is_empty());
    assert_eq!(
        completed::<String>(&out),
        format!(
            "critical section: entity `{}` is not locked by this critical section; inside a \
             critical section an orchestration may call only the entities it locked",
            account("bob")
        )
    );
}

#[test]
fn sections_do_not_nest() {
    let (mut instance, _) = Instance::start(Nests, ());
    let out = instance.turn(1, vec![Event::EntityLockGranted { seq: 0 }]);
    assert_eq!(lock_requests(&out), []);
    let message: String = completed(&out);
    assert!(
        message.contains("critical sections do not nest"),
        "{message}"
    );
}

#[test]
fn one_call_at_a_time_per_locked_entity() {
    let (mut instance, _) = Instance::start(TwoAtOnce, ());
    let out = instance.turn(1, vec![Event::EntityLockGranted { seq: 0 }]);
    assert_eq!(
        entity_calls(&out),
        [(1, account("ada"), "balance".to_owned())],
        "the second call is refused, not sent"
    );
    let out = instance.turn(
        2,
        vec![Event::EntityCompleted {
            seq: 1,
            output: json(0),
        }],
    );
    let message: String = completed(&out);
    assert!(message.contains("is already in flight"), "{message}");
}

#[test]
fn an_execution_that_ends_inside_a_section_releases_it() {
    let (mut instance, _) = Instance::start(FailsInside, ());
    instance.turn(1, vec![Event::EntityLockGranted { seq: 0 }]);
    let out = instance.turn(
        2,
        vec![Event::EntityCompleted {
            seq: 1,
            output: json(0),
        }],
    );
    failed(&out);
    assert_eq!(unlocks(&out), [vec![account("ada")]]);
}

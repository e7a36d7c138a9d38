//! Entities end to end on SQLite: typed proxies, calls and signals, rollback of failed
//! operations, in-order delivery, critical sections, scheduled signals, unloading, management.

use std::time::Duration;

use duractor::client::EntityQuery;
use duractor::prelude::*;
use duractor_sqlx::SqliteStore;
use duractor_tests::{TempDir, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

#[entity]
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    history: Vec<i64>,
}

#[entity]
impl Counter {
    fn add(&mut self, amount: i64) {
        self.value += amount;
        self.history.push(amount);
    }

    fn get(&self) -> i64 {
        self.value
    }

    /// Fails for negative results: the change must be rolled back.
    fn add_checked(
        &mut self,
        ctx: &mut EntityContext,
        amount: i64,
    ) -> Result<i64, duractor::Error> {
        self.value += amount;
        ctx.signal_entity::<Counter>("audit").add(1);
        if self.value < 0 {
            return Err(duractor::Error::msg(format!(
                "{} would go below zero",
                ctx.id()
            )));
        }
        Ok(self.value)
    }

    fn explode(&mut self) {
        self.value = -999;
        panic!("entity bug");
    }

    fn remind(&mut self, ctx: &mut EntityContext, after_ms: i64) {
        let at = duractor::chrono::Utc::now() + duractor::chrono::Duration::milliseconds(after_ms);
        ctx.signal_entity_at::<Counter>(ctx.key().to_owned(), at)
            .add(100);
    }

    fn reset(&mut self, ctx: &mut EntityContext) {
        ctx.delete_entity();
    }
}

async fn value_of(client: &Client, key: &str) -> Option<Counter> {
    client.entity_state::<Counter>(key).await.unwrap()
}

async fn wait_for_value(client: &Client, key: &str, expected: i64) {
    eventually(
        &format!("counter {key} to reach {expected}"),
        WAIT,
        || async { (value_of(client, key).await?.value == expected).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn signals_from_a_client_are_applied_once_and_in_order() {
    let app = TestApp::start("entity-signals").await;
    let client = &app.client;
    for amount in 1..=50 {
        client
            .signal_entity::<Counter>("a")
            .add(amount)
            .await
            .unwrap();
    }
    wait_for_value(client, "a", (1..=50).sum()).await;
    let counter = value_of(client, "a").await.unwrap();
    assert_eq!(
        counter.history,
        (1..=50).collect::<Vec<_>>(),
        "in order, once each"
    );
    assert!(value_of(client, "never-signalled").await.is_none());
    app.stop().await;
}

#[orchestrator]
async fn use_counter(
    ctx: OrchestrationContext,
    key: String,
) -> Result<Vec<String>, duractor::Error> {
    let counter = ctx.call_entity::<Counter>(key.clone());
    let mut log = Vec::new();
    log.push(format!("ok {}", counter.add_checked(5).await?));
    match counter.add_checked(-10).await {
        Ok(value) => log.push(format!("unexpected {value}")),
        Err(duractor::Error::EntityOperationFailed {
            entity,
            operation,
            failure,
        }) => log.push(format!("{entity}.{operation}: {}", failure.message)),
        Err(other) => return Err(other),
    }
    match counter.explode().await {
        Err(duractor::Error::EntityOperationFailed { failure, .. }) => log.push(failure.message),
        other => log.push(format!("unexpected {other:?}")),
    }
    ctx.signal_entity::<Counter>(key.clone()).add(1);
    log.push(format!("now {}", counter.get().await?));
    Ok(log)
}

#[tokio::test]
async fn a_failing_operation_changes_nothing_and_the_caller_gets_the_error() {
    let app = TestApp::start("entity-calls").await;
    let client = &app.client;
    let id = client.start(UseCounter, "c".to_string()).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<Vec<String>>().unwrap(),
        [
            "ok 5",
            "Counter@c.add_checked: Counter@c would go below zero",
            "entity operation `Counter.explode` panicked: entity bug",
            "now 6"
        ]
    );
    // The failed operations left no trace: not in the state, and their signals were not sent.
    let counter = value_of(client, "c").await.unwrap();
    assert_eq!(counter.value, 6);
    wait_for_value(client, "audit", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        value_of(client, "audit").await.unwrap().value,
        1,
        "only the successful op signalled"
    );
    app.stop().await;
}

#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[entity]
impl Account {
    fn deposit(&mut self, amount: i64) -> Result<i64, duractor::Error> {
        if self.balance + amount < 0 {
            return Err(duractor::Error::non_retriable("insufficient funds"));
        }
        self.balance += amount;
        Ok(self.balance)
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

#[orchestrator]
async fn transfer(
    ctx: OrchestrationContext,
    (from, to, amount): (String, String, i64),
) -> Result<bool, duractor::Error> {
    let section = ctx
        .lock(&[
            EntityId::of::<Account>(from.clone()),
            EntityId::of::<Account>(to.clone()),
        ])
        .await?;
    let source = ctx.call_entity::<Account>(from);
    if source.balance().await? < amount {
        return Ok(false);
    }
    let (debit, credit) = ctx
        .join(
            source.deposit(-amount),
            ctx.call_entity::<Account>(to).deposit(amount),
        )
        .await;
    debit?;
    credit?;
    section.release();
    Ok(true)
}

#[orchestrator]
async fn rule_breaker(ctx: OrchestrationContext, case: u32) -> Result<String, duractor::Error> {
    let a = EntityId::of::<Account>("rb-a");
    let _section = ctx.lock([a.clone()]).await?;
    let result = match case {
        0 => ctx.lock([a]).await.map(|_| ()),
        1 => ctx
            .call_entity::<Account>("rb-b")
            .balance()
            .await
            .map(|_| ()),
        _ => {
            let first = ctx.call_entity::<Account>("rb-a").balance();
            let second = ctx.call_entity::<Account>("rb-a").balance();
            let (first, second) = ctx.join(first, second).await;
            first.and(second).map(|_| ())
        }
    };
    Ok(match result {
        Ok(()) => "allowed".into(),
        Err(error) => error.to_string(),
    })
}

#[tokio::test]
async fn critical_sections_conserve_money_and_enforce_their_rules() {
    let app = TestApp::start("entity-locks").await;
    let client = &app.client;
    for key in ["x", "y", "z"] {
        client
            .signal_entity::<Account>(key)
            .deposit(100)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..12 {
        let keys = ["x", "y", "z"];
        let (from, to) = (keys[i % 3], keys[(i + 1) % 3]);
        ids.push(
            client
                .start(Transfer, (from.to_string(), to.to_string(), 30))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let status = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{:?}",
            status.failure
        );
    }
    let mut total = 0;
    for key in ["x", "y", "z"] {
        let account = client.entity_state::<Account>(key).await.unwrap().unwrap();
        assert!(account.balance >= 0);
        total += account.balance;
    }
    assert_eq!(total, 300);
    // Locks were released: a plain signal goes through.
    client
        .signal_entity::<Account>("x")
        .deposit(1)
        .await
        .unwrap();
    eventually("the deposit", WAIT, || async {
        let x = client.entity_state::<Account>("x").await.ok()??;
        let rest: i64 = futures_sum(client, &["y", "z"]).await;
        (x.balance + rest == 301).then_some(())
    })
    .await;

    let mut messages = Vec::new();
    for case in 0..3 {
        let id = client.start(RuleBreaker, case).await.unwrap();
        messages.push(
            client
                .wait_for_completion(&id, WAIT)
                .await
                .unwrap()
                .output::<String>()
                .unwrap(),
        );
    }
    assert!(
        messages[0].contains("critical sections do not nest"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("entity `Account@rb-b` is not locked by this critical section"),
        "{}",
        messages[1]
    );
    assert!(
        messages[2].contains("a call to locked entity `Account@rb-a` is already in flight"),
        "{}",
        messages[2]
    );
    // Every lock is released once the orchestrations ended.
    eventually("every lock to be released", WAIT, || async {
        let entities = client
            .list_entities(&EntityQuery {
                include_empty: true,
                ..Default::default()
            })
            .await
            .ok()?;
        entities
            .iter()
            .all(|e| e.lock_owner.is_none())
            .then_some(())
    })
    .await;
    app.stop().await;
}

async fn futures_sum(client: &Client, keys: &[&str]) -> i64 {
    let mut sum = 0;
    for key in keys {
        sum += client
            .entity_state::<Account>(*key)
            .await
            .ok()
            .flatten()
            .map_or(0, |a| a.balance);
    }
    sum
}

#[tokio::test]
async fn a_scheduled_signal_fires_at_its_time_after_a_restart() {
    let dir = TempDir::new("entity-scheduled");
    let path = dir.file("app.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let runtime = Runtime::builder(store.clone()).start().await.unwrap();
    let client = runtime.client();
    client
        .signal_entity::<Counter>("r")
        .remind(1_500)
        .await
        .unwrap();
    wait_for_value(&client, "r", 0).await;
    runtime.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        value_of(&client, "r").await.unwrap().value,
        0,
        "not before its time"
    );

    let runtime = Runtime::builder(store)
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    wait_for_value(&client, "r", 100).await;
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_entity_is_unloaded_and_reloaded_with_its_state() {
    let app = TestApp::start_with("entity-unload", |b| {
        b.idle_unload_after(Duration::from_millis(50))
    })
    .await;
    let client = &app.client;
    client.signal_entity::<Counter>("u").add(7).await.unwrap();
    wait_for_value(client, "u", 7).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // unloaded by now
    client.signal_entity::<Counter>("u").add(3).await.unwrap();
    wait_for_value(client, "u", 10).await;
    assert_eq!(value_of(client, "u").await.unwrap().history, [7, 3]);
    app.stop().await;
}

#[tokio::test]
async fn entities_are_listed_deleted_and_cleaned_up() {
    let app = TestApp::start("entity-management").await;
    let client = &app.client;
    for key in ["m1", "m2", "m3"] {
        client.signal_entity::<Counter>(key).add(1).await.unwrap();
    }
    // Each entity runs on its own: m3's operation says nothing about m1's or m2's.
    for key in ["m1", "m2", "m3"] {
        wait_for_value(client, key, 1).await;
    }
    let listed = client
        .list_entities(&EntityQuery {
            name: Some("Counter".into()),
            key_prefix: Some("m".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<&str> = listed.iter().map(|e| e.id.key.as_str()).collect();
    assert_eq!(keys, ["m1", "m2", "m3"]);

    client.signal_entity::<Counter>("m2").reset().await.unwrap();
    client
        .delete_entity(&EntityId::of::<Counter>("m3"))
        .await
        .unwrap();
    eventually("the deletions", WAIT, || async {
        (value_of(client, "m2").await.is_none() && value_of(client, "m3").await.is_none())
            .then_some(())
    })
    .await;
    let cleanup = client.clean_entities().await.unwrap();
    assert_eq!(cleanup.removed_empty, 2);
    assert!(
        client
            .entity(&EntityId::of::<Counter>("m2"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(value_of(client, "m1").await.unwrap().value, 1);

    let err = client
        .signal_entity_raw(
            &EntityId::new("Counter", "m1"),
            "nope",
            duractor::Payload::null(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("entity `Counter` has no operation `nope`; its operations are: add, get"),
        "{err}"
    );
    let err = client
        .signal_entity_raw(
            &EntityId::new("Nobody", "m1"),
            "add",
            duractor::Payload::null(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no entity named `Nobody` is registered"),
        "{err}"
    );
    app.stop().await;
}

//! The store conformance suite: every behaviour of the storage contract, run with the same
//! test code against SQLite, PostgreSQL and the test kit's in-memory store. PostgreSQL tests
//! need `DURACTOR_TEST_POSTGRES_URL` (CI sets it); without it they print a notice and pass
//! without running.

use std::sync::Arc;
use std::time::Duration;

use duractor::chrono::{DateTime, Utc};
use duractor::entity::EntityId;
use duractor::flow::{FlowControl, FlowRule};
use duractor::prelude::*;
use duractor::store::{
    ActivityCompletion, ActivityHeartbeat, EntityQuery, EntityUpdate, FlowHold, FlowKind, HeldWork,
    InstanceQuery, MemoryCall, NewActivity, NewInstance, NewMessage, PurgeQuery, TurnCommit,
};
use duractor::{Event, Payload, Store};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore};
use duractor_tests::{TempDir, turn};

/// A fresh store of one backend.
struct Backend {
    store: Arc<dyn Store>,
    postgres: Option<PostgresStore>,
    /// The store holds timers for their owner when a turn asks (`TurnCommit::hold_timers`;
    /// the test kit's store does not).
    holds_timers: bool,
    _dir: TempDir,
}

impl Backend {
    async fn sqlite(name: &str) -> Backend {
        let dir = TempDir::new(name);
        let store = SqliteStore::open(dir.file("store.db")).await.unwrap();
        Backend {
            store: Arc::new(store),
            postgres: None,
            holds_timers: true,
            _dir: dir,
        }
    }

    fn memory(name: &str) -> Backend {
        Backend {
            store: Arc::new(duractor::testing::MemoryStore::new()),
            postgres: None,
            holds_timers: false,
            _dir: TempDir::new(name),
        }
    }

    async fn postgres(name: &str) -> Option<Backend> {
        let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
            println!(
                "DURACTOR_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run of `{name}`"
            );
            return None;
        };
        // Schema names are at most 63 bytes: a short unique one per test and process.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let schema = format!("t_{hash:016x}_{}", std::process::id());
        let store = PostgresStore::connect_with(
            &url,
            PostgresStoreOptions {
                schema,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Some(Backend {
            store: Arc::new(store.clone()),
            postgres: Some(store),
            holds_timers: true,
            _dir: TempDir::new(name),
        })
    }

    async fn finish(self) {
        if let Some(store) = &self.postgres {
            store.drop_schema().await.unwrap();
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::Backend::sqlite(stringify!($name)).await;
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::Backend::memory(stringify!($name));
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance!(
    instances_are_created_once_while_running,
    a_start_can_be_leased_to_its_creator_in_the_same_commit,
    a_first_turn_creates_its_instance_in_the_same_commit,
    a_call_a_turn_schedules_and_finishes_leaves_nothing,
    messages_to_unknown_instances_are_refused_but_entities_exist_on_first_message,
    a_turn_commits_history_work_and_status_together,
    a_second_worker_cannot_take_or_commit_a_held_instance,
    instances_held_by_another_worker_do_not_crowd_out_free_ones,
    a_lapsed_lease_lets_another_worker_take_over,
    renewals_keep_only_what_a_worker_holds,
    a_turn_commits_only_messages_its_worker_holds_once,
    a_stale_history_is_refused,
    activity_results_are_committed_once_by_the_holder,
    work_items_keep_bounds_and_heartbeats_and_go_when_cancelled,
    a_retrys_work_item_starts_at_its_attempt_number,
    timers_stay_invisible_until_due,
    cancelled_timers_are_dropped_unless_already_claimed,
    held_timers_stay_with_their_owner_until_released_or_cancelled,
    finishing_drops_leftover_messages_and_is_announced,
    a_finish_hands_its_waiters_the_row_as_stored,
    a_waiter_takes_no_handed_row_of_an_earlier_run,
    a_start_replacing_a_run_that_finishes_beside_it_starts_the_new_run,
    continue_as_new_replaces_history_and_drops_old_work,
    purge_deletes_only_finished_instances,
    entities_store_state_and_locks_and_are_cleaned_up,
    abandoned_messages_come_back_later,
    instances_list_with_filters_and_paging,
    end_to_end_orchestrations_and_entities,
    held_instances_wait_for_their_admission,
    calls_kept_in_memory_become_work_items_only_when_let_go,
    a_turn_that_ends_its_execution_keeps_no_call_in_memory,
);

fn now() -> DateTime<Utc> {
    duractor_tests::store_now()
}

fn lease() -> DateTime<Utc> {
    now() + duractor::chrono::Duration::seconds(30)
}

fn new_instance(id: &str) -> NewInstance {
    NewInstance {
        instance_id: id.to_owned(),
        name: "flow".to_owned(),
        version: "1".to_owned(),
        input: Payload::encode(&42).unwrap(),
        created_at: now(),
        parent: None,
        flow: None,
    }
}

/// The activities the conformance tests enqueue.
fn names() -> Vec<String> {
    ["act", "export", "slow"].map(str::to_owned).to_vec()
}

/// The turn of `instance_id` by `w1` at history index `start` that completes it with
/// `output`.
fn completing_turn(instance_id: &str, start: u64, output: Payload) -> TurnCommit {
    let mut done = turn(
        instance_id,
        "w1",
        start,
        vec![Event::ExecutionCompleted {
            output: output.clone(),
        }],
        Vec::new(),
    );
    done.status = Some(RuntimeStatus::Completed);
    done.output = Some(output);
    done
}

fn started() -> Event {
    Event::OrchestratorStarted { timestamp: now() }
}

async fn instances_are_created_once_while_running(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("a")).await.unwrap();
    let err = store.create_instance(new_instance("a")).await.unwrap_err();
    assert!(
        matches!(err, Error::InstanceExists { ref status, .. } if status == "Pending"),
        "{err:?}"
    );
    let status = store.get_instance("a").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Pending);
    assert_eq!(status.version, "1");
    assert_eq!(status.input.decode::<u32>().unwrap(), 42);
    assert!(store.get_instance("b").await.unwrap().is_none());
}

async fn messages_to_unknown_instances_are_refused_but_entities_exist_on_first_message(
    b: &Backend,
) {
    let store = &b.store;
    let event = Event::EventRaised {
        name: "e".into(),
        data: Payload::null(),
    };
    let err = store
        .enqueue("ghost", event.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(err, Error::InstanceNotFound("ghost".into()));
    let entity = EntityId::new("Counter", "k");
    store
        .enqueue(
            &entity.instance_id(),
            Event::EntityOperation {
                operation: "add".into(),
                input: Payload::encode(&1).unwrap(),
                caller: None,
                sender: None,
            },
            None,
        )
        .await
        .unwrap();
    let status = store.load_entity(&entity).await.unwrap().unwrap();
    assert_eq!(status.state, None);
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].instance_id, "@Counter@k");
    // An entity's row is not an orchestration instance's status.
    assert_eq!(store.get_instance("@Counter@k").await.unwrap(), None);
}

async fn a_turn_commits_history_work_and_status_together(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("t")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(matches!(claimed[0].event, Event::ExecutionStarted { .. }));
    let mut commit = turn(
        "t",
        "w1",
        0,
        vec![
            started(),
            claimed[0].event.clone(),
            Event::TaskScheduled {
                seq: 0,
                name: "act".into(),
                input: Payload::null(),
            },
        ],
        vec![claimed[0].id],
    );
    commit.activities.push(NewActivity {
        seq: 0,
        name: "act".into(),
        input: Payload::null(),
        timeouts: Default::default(),
        deadline: None,
        heartbeat: None,
        run_here: true,
        in_memory: false,
        flow_key: None,
        priority: 0,
        attempt: 1,
    });
    commit.custom_status = Some(Payload::encode(&"working").unwrap());
    let committed = store.commit_turn(commit).await.unwrap();
    assert_eq!(committed.activity_ids.len(), 1);
    let history = store.load_history("t").await.unwrap();
    assert_eq!(history.len(), 3);
    let status = store.get_instance("t").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert_eq!(
        status.custom_status.unwrap().decode::<String>().unwrap(),
        "working"
    );
    // The consumed message is gone; the new work item is leased to the committer already.
    assert!(
        store
            .claim_messages("w1", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_activities("w2", &names(), &[], 10, lease())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn a_start_can_be_leased_to_its_creator_in_the_same_commit(b: &Backend) {
    let store = &b.store;
    let message = store
        .create_instance_claimed(new_instance("mine"), "w1", lease())
        .await
        .unwrap()
        .expect("the backend leases the start to its creator");
    assert_eq!(message.instance_id, "mine");
    assert!(
        matches!(&message.event, Event::ExecutionStarted { name, .. } if name == "flow"),
        "{:?}",
        message.event
    );
    // Nobody claims it again: not another worker, not its holder.
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_messages("w1", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    let err = store
        .commit_turn(turn("mine", "w2", 0, vec![started()], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // Its holder runs the first turn with it.
    store
        .commit_turn(turn(
            "mine",
            "w1",
            0,
            vec![started(), message.event.clone()],
            vec![message.id],
        ))
        .await
        .unwrap();
    assert_eq!(store.load_history("mine").await.unwrap().len(), 2);
    let status = store.get_instance("mine").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    // The id is taken while it runs, as for any start.
    let err = store
        .create_instance_claimed(new_instance("mine"), "w1", lease())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InstanceExists { .. }), "{err:?}");
}

/// The `ExecutionStarted` of `instance`, as its first turn records it.
fn start_of(instance: &NewInstance) -> Event {
    Event::ExecutionStarted {
        name: instance.name.clone(),
        version: instance.version.clone(),
        input: instance.input.clone(),
        execution: 0,
        parent: None,
    }
}

/// The input an instance's status shows.
async fn input(store: &dyn Store, id: &str) -> u32 {
    let status = store.get_instance(id).await.unwrap().unwrap();
    status.input.decode().unwrap()
}

/// The first turn of `id` by `owner`, creating its instance (`TurnCommit::create`).
fn creating_turn(id: &str, owner: &str) -> duractor::store::TurnCommit {
    let instance = new_instance(id);
    let mut commit = turn(id, owner, 0, vec![start_of(&instance), started()], vec![]);
    commit.create = Some(instance);
    commit
}

async fn a_first_turn_creates_its_instance_in_the_same_commit(b: &Backend) {
    let store = &*b.store;
    assert!(store.creates_with_turn());
    // A first turn that keeps a call in memory, queues a work item and sets a custom status.
    let mut first = creating_turn("c", "w1");
    first.activities = vec![kept(0), queued_call(1)];
    first.custom_status = Some(Payload::encode(&"started").unwrap());
    let committed = store.commit_turn(first.clone()).await.unwrap();
    assert_eq!(committed.activity_ids.len(), 2);
    assert_eq!(
        committed.activity_ids[0], 0,
        "the kept call has no work item"
    );
    assert_eq!(store.load_history("c").await.unwrap(), first.new_events);
    let status = store.get_instance("c").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert_eq!(status.name, "flow");
    assert_eq!(status.input.decode::<u32>().unwrap(), 42);
    assert_eq!(
        status.custom_status.unwrap().decode::<String>().unwrap(),
        "started"
    );
    // No start was queued; the instance and its call are leased to the turn's worker.
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_messages("w1", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    let call = MemoryCall {
        instance_id: "c".into(),
        execution: 0,
        seq: 0,
    };
    if store.keeps_calls_in_memory() {
        let ids = store
            .persist_calls("w1", std::slice::from_ref(&call), lease())
            .await
            .unwrap();
        assert!(ids[0].is_some(), "the call is recorded on the new row");
    }
    let err = store
        .commit_turn(turn("c", "w2", 2, vec![started()], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    store
        .commit_turn(turn("c", "w1", 2, vec![started()], vec![]))
        .await
        .unwrap();

    // A taken id refuses the turn and writes nothing of it, as a start does.
    let mut again = creating_turn("c", "w1");
    again.activities = vec![queued_call(5)];
    let err = store.commit_turn(again).await.unwrap_err();
    assert!(
        matches!(err, Error::InstanceExists { ref status, .. } if status == "Running"),
        "{err:?}"
    );
    assert_eq!(store.load_history("c").await.unwrap().len(), 3);
    let seqs: Vec<u64> = store
        .list_activities("c")
        .await
        .unwrap()
        .iter()
        .map(|a| a.seq)
        .collect();
    assert!(!seqs.contains(&5), "{seqs:?}");

    // A first turn that completes at once leaves a finished, unleased instance; a second
    // one under its id replaces it.
    let mut done = creating_turn("d", "w1");
    done.status = Some(RuntimeStatus::Completed);
    done.output = Some(Payload::encode(&7).unwrap());
    done.new_events.push(Event::ExecutionCompleted {
        output: Payload::encode(&7).unwrap(),
    });
    store.commit_turn(done).await.unwrap();
    let status = store.get_instance("d").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output.unwrap().decode::<u32>().unwrap(), 7);
    assert!(status.completed_at.is_some());
    let replacing = creating_turn("d", "w2");
    store.commit_turn(replacing.clone()).await.unwrap();
    assert_eq!(store.load_history("d").await.unwrap(), replacing.new_events);
    let status = store.get_instance("d").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert!(status.output.is_none() && status.completed_at.is_none());

    // A first turn that continues as new: the row takes the next execution's input, and its
    // start is queued for it.
    let mut continues = creating_turn("n", "w1");
    continues.reset_history = true;
    continues.input = Some(Payload::encode(&43).unwrap());
    continues.new_events = vec![start_of(&new_instance("n"))];
    continues.messages = vec![NewMessage {
        instance_id: "n".into(),
        event: Event::ExecutionStarted {
            name: "flow".into(),
            version: "1".into(),
            input: Payload::encode(&43).unwrap(),
            execution: 1,
            parent: None,
        },
        visible_at: now(),
        execution: None,
    }];
    store.commit_turn(continues).await.unwrap();
    assert_eq!(input(store, "n").await, 43);
    let next = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert!(
        matches!(next.as_slice(), [m] if matches!(m.event, Event::ExecutionStarted { execution: 1, .. })),
        "{next:?}"
    );

    // Only a first turn that consumes nothing can create its instance.
    let mut consuming = creating_turn("e", "w1");
    consuming.consumed = vec![1];
    let err = store.commit_turn(consuming).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(store.get_instance("e").await.unwrap().is_none());
}

/// A turn whose call ran before an earlier attempt of the turn failed to commit schedules the
/// call and consumes its result at once: neither a record of it nor a work item stays.
async fn a_call_a_turn_schedules_and_finishes_leaves_nothing(b: &Backend) {
    let store = &*b.store;
    store.create_instance(new_instance("f")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let mut commit = turn("f", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.activities = vec![kept(0), queued_call(1), kept(2)];
    commit.finished_calls = vec![0, 1];
    let committed = store.commit_turn(commit).await.unwrap();
    assert_eq!(committed.activity_ids[..2], [0, 0]);
    assert!(store.list_activities("f").await.unwrap().is_empty());
    if store.keeps_calls_in_memory() {
        let call = |seq| MemoryCall {
            instance_id: "f".into(),
            execution: 0,
            seq,
        };
        let ids = store
            .persist_calls("w1", &[call(0), call(1), call(2)], lease())
            .await
            .unwrap();
        assert!(
            ids[0].is_none() && ids[1].is_none() && ids[2].is_some(),
            "only the call still running is recorded: {ids:?}"
        );
    }
}

async fn a_second_worker_cannot_take_or_commit_a_held_instance(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("h")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .enqueue(
            "h",
            Event::EventRaised {
                name: "e".into(),
                data: Payload::null(),
            },
            None,
        )
        .await
        .unwrap();
    // w2 cannot claim messages of an instance w1 holds.
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    let err = store
        .commit_turn(turn("h", "w2", 0, vec![started()], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // w1 can, and gets the event.
    let more = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(more.len(), 1);
    store
        .commit_turn(turn(
            "h",
            "w1",
            0,
            vec![started()],
            vec![claimed[0].id, more[0].id],
        ))
        .await
        .unwrap();
}

async fn instances_held_by_another_worker_do_not_crowd_out_free_ones(b: &Backend) {
    let store = &b.store;
    let held: Vec<String> = (0..10).map(|i| format!("held-{i}")).collect();
    for id in &held {
        store.create_instance(new_instance(id)).await.unwrap();
    }
    assert_eq!(
        store.claim_messages("w1", 10, lease()).await.unwrap().len(),
        10
    );
    // New messages for w1's instances, older than the free instances' first messages.
    for id in &held {
        let event = Event::EventRaised {
            name: "e".into(),
            data: Payload::null(),
        };
        store.enqueue(id, event, None).await.unwrap();
    }
    for i in 0..5 {
        store
            .create_instance(new_instance(&format!("free-{i}")))
            .await
            .unwrap();
    }
    // w2 asks for 5: it gets the 5 free instances, not nothing because the 10 oldest
    // messages belong to instances w1 holds.
    let claimed = store.claim_messages("w2", 5, lease()).await.unwrap();
    let mut ids: Vec<&str> = claimed.iter().map(|m| m.instance_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["free-0", "free-1", "free-2", "free-3", "free-4"]);
    // And w1 still gets its own instances' new messages.
    let mine = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(mine.len(), 10);
    assert!(mine.iter().all(|m| m.instance_id.starts_with("held-")));
}

async fn a_lapsed_lease_lets_another_worker_take_over(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("l")).await.unwrap();
    let short = now() + duractor::chrono::Duration::milliseconds(200);
    let claimed = store.claim_messages("w1", 10, short).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert_eq!(taken.len(), 1, "the lapsed message is claimed again");
    store
        .commit_turn(turn("l", "w2", 0, vec![started()], vec![taken[0].id]))
        .await
        .unwrap();
    // The stale worker's commit is refused.
    let err = store
        .commit_turn(turn("l", "w1", 1, vec![started()], vec![claimed[0].id]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // Renewing and releasing: the old holder's renewal says it lost the instance.
    let held = HeldWork {
        instances: vec!["l".into()],
        activity_items: Vec::new(),
    };
    assert!(
        store
            .renew_leases("w2", &held, lease())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.renew_leases("w1", &held, lease()).await.unwrap(),
        ["l"]
    );
    store.release_instance("l", "w2").await.unwrap();
    store.unregister_worker("w2").await.unwrap();
}

/// A call with a work item, leased to the worker whose turn scheduled it.
fn queued_call(seq: u64) -> NewActivity {
    NewActivity {
        in_memory: false,
        ..kept(seq)
    }
}

/// A call kept in memory (`NewActivity::in_memory`), scheduled by a turn of `instance_id`.
fn kept(seq: u64) -> NewActivity {
    NewActivity {
        seq,
        name: "act".into(),
        input: Payload::encode(&seq).unwrap(),
        timeouts: Default::default(),
        deadline: None,
        heartbeat: None,
        run_here: true,
        in_memory: true,
        flow_key: None,
        priority: 0,
        attempt: 1,
    }
}

/// The first turn of a new instance, leased to `owner` until `until`, keeping `calls` in
/// memory.
async fn start_keeping(
    store: &dyn Store,
    id: &str,
    owner: &str,
    until: DateTime<Utc>,
    calls: &[u64],
) {
    store.create_instance(new_instance(id)).await.unwrap();
    let claimed = store.claim_messages(owner, 10, until).await.unwrap();
    let mut commit = turn(id, owner, 0, vec![started()], vec![claimed[0].id]);
    commit.activities = calls.iter().map(|seq| kept(*seq)).collect();
    commit.lease_until = until;
    let committed = store.commit_turn(commit).await.unwrap();
    assert_eq!(
        committed.activity_ids,
        vec![0; calls.len()],
        "a call kept in memory has no work item"
    );
}

async fn calls_kept_in_memory_become_work_items_only_when_let_go(b: &Backend) {
    let store = &*b.store;
    if !store.keeps_calls_in_memory() {
        return;
    }
    let short = short_lease();
    start_keeping(store, "m", "w1", short, &[0, 1, 2]).await;
    assert!(store.list_activities("m").await.unwrap().is_empty());
    if let Some(stats) = store.stats().await.unwrap() {
        assert_eq!(
            stats.activity_items, 3,
            "calls kept in memory count as running"
        );
    }
    assert!(
        store
            .claim_activities("w2", &names(), &[], 10, lease())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nobody else may claim a call its worker keeps"
    );
    // A long call gets a work item leased to its worker, once; nobody else can ask.
    let call = |seq| MemoryCall {
        instance_id: "m".into(),
        execution: 0,
        seq,
    };
    let of_another_execution = MemoryCall {
        execution: 1,
        ..call(1)
    };
    let ids = store
        .persist_calls("w1", &[of_another_execution, call(1), call(9)], lease())
        .await
        .unwrap();
    assert!(
        ids[0].is_none() && ids[1].is_some() && ids[2].is_none(),
        "only a call recorded for that execution: {ids:?}"
    );
    assert_eq!(
        store
            .persist_calls("w1", &[call(1)], lease())
            .await
            .unwrap(),
        [None]
    );
    assert_eq!(
        store
            .persist_calls("w2", &[call(0)], lease())
            .await
            .unwrap(),
        [None]
    );
    let items = store.list_activities("m").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].seq, items[0].attempt), (1, 1));
    assert_eq!(items[0].locked_by.as_deref(), Some("w1"));
    // Consuming results: the call's record goes, and so does a work item made of it.
    let mut consume = turn("m", "w1", 1, vec![started()], Vec::new());
    consume.finished_calls = vec![1, 2];
    consume.lease_until = short;
    store.commit_turn(consume).await.unwrap();
    assert!(store.list_activities("m").await.unwrap().is_empty());
    // Call 0 is recovered only once the lease lapsed, as a work item for anyone, one attempt
    // later (the lost worker may have started it).
    assert_eq!(store.recover_calls().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.recover_calls().await.unwrap(), 1);
    assert_eq!(store.recover_calls().await.unwrap(), 0, "recovered once");
    let items = store
        .claim_activities("w2", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].seq, items[0].attempt), (0, 2));
    assert_eq!(items[0].input.decode::<u64>().unwrap(), 0);
    // Releasing an instance lets its calls go at once.
    start_keeping(store, "r", "w1", lease(), &[5]).await;
    store.release_instance("r", "w1").await.unwrap();
    let items = store
        .claim_activities("w2", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].instance_id.as_str(), items[0].seq), ("r", 5));
    // So does a worker stopping; and a cancelled call's record goes with the cancelling turn.
    start_keeping(store, "s", "w1", lease(), &[3, 4]).await;
    let mut cancel = turn("s", "w1", 1, vec![started()], Vec::new());
    cancel.cancelled_activities = vec![4];
    store.commit_turn(cancel).await.unwrap();
    store.unregister_worker("w1").await.unwrap();
    let items = store
        .claim_activities("w2", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((items[0].instance_id.as_str(), items[0].seq), ("s", 3));
    // A worker that takes a lapsed instance over does not inherit the calls its old holder
    // kept: they are recovered although the instance's lease is live again.
    start_keeping(store, "t", "w1", short_lease(), &[7]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let go = Event::EventRaised {
        name: "go".into(),
        data: Payload::null(),
    };
    store.enqueue("t", go, None).await.unwrap();
    let taken = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        store.recover_calls().await.unwrap(),
        1,
        "the old holder's call is lost"
    );
    let items = store
        .claim_activities("w3", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((items[0].instance_id.as_str(), items[0].seq), ("t", 7));
    if let Some(stats) = store.stats().await.unwrap() {
        assert_eq!(stats.activity_items, 4, "only work items are left");
    }
}

/// A call scheduled by the turn that completes its instance (called, not awaited) gets a work
/// item, and the completed instance's row keeps no call that a recovery could later turn into
/// work for an ended instance.
async fn a_turn_that_ends_its_execution_keeps_no_call_in_memory(b: &Backend) {
    let store = &*b.store;
    if !store.keeps_calls_in_memory() {
        return;
    }
    start_keeping(store, "e", "w1", short_lease(), &[0]).await;
    let output = Payload::encode(&"done").unwrap();
    let mut done = completing_turn("e", 1, output);
    done.activities = vec![kept(1)];
    done.lease_until = short_lease();
    let committed = store.commit_turn(done).await.unwrap();
    assert_ne!(
        committed.activity_ids,
        [0],
        "the ending turn's call gets a work item"
    );
    let items = store.list_activities("e").await.unwrap();
    assert_eq!(
        items.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [1],
        "the earlier kept call went with the execution: {items:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.recover_calls().await.unwrap(),
        0,
        "nothing is left on the ended instance's row"
    );
    store.unregister_worker("w1").await.unwrap();
    if let Some(stats) = store.stats().await.unwrap() {
        assert_eq!(stats.activity_items, 1, "only the work item: {stats:?}");
    }
}

fn short_lease() -> DateTime<Utc> {
    now() + duractor::chrono::Duration::milliseconds(400)
}

async fn renewals_keep_only_what_a_worker_holds(b: &Backend) {
    let store = &b.store;
    for id in ["kept", "forgotten"] {
        store.create_instance(new_instance(id)).await.unwrap();
    }
    let short = now() + duractor::chrono::Duration::milliseconds(400);
    let claimed = store.claim_messages("w1", 10, short).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // w1 renews only the instance it holds in memory: the other one (say its claim's answer
    // was lost) lapses and is claimed again, here by w2.
    let held = HeldWork {
        instances: vec!["kept".into()],
        activity_items: Vec::new(),
    };
    assert!(
        store
            .renew_leases("w1", &held, lease())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = store.claim_messages("w2", 10, lease()).await.unwrap();
    let ids: Vec<&str> = taken.iter().map(|m| m.instance_id.as_str()).collect();
    assert_eq!(ids, ["forgotten"]);
}

async fn a_turn_commits_only_messages_its_worker_holds_once(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("x")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let start = claimed[0].id;
    // The same message twice in one turn (a worker holding two copies) is refused.
    let err = store
        .commit_turn(turn("x", "w1", 0, vec![started()], vec![start, start]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    store
        .commit_turn(turn(
            "x",
            "w1",
            0,
            vec![started(), claimed[0].event.clone()],
            vec![start],
        ))
        .await
        .unwrap();
    // A message consumed already (a second copy of it) is refused: applied once, not twice.
    let err = store
        .commit_turn(turn("x", "w1", 2, vec![started()], vec![start]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // So is a message leased to nobody (or to another worker), and a work item not held.
    store
        .enqueue(
            "x",
            Event::EventRaised {
                name: "e".into(),
                data: Payload::null(),
            },
            None,
        )
        .await
        .unwrap();
    let unclaimed = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert!(unclaimed.is_empty(), "w1 holds the instance");
    let history = store.load_history("x").await.unwrap().len() as u64;
    let mut stray = turn("x", "w1", history, vec![started()], vec![]);
    stray.completed_activities = vec![123_456];
    let err = store.commit_turn(stray).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(store.load_history("x").await.unwrap().len() as u64, history);
}

async fn a_stale_history_is_refused(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("s")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    store
        .commit_turn(turn(
            "s",
            "w1",
            0,
            vec![started(), claimed[0].event.clone()],
            vec![claimed[0].id],
        ))
        .await
        .unwrap();
    let err = store
        .commit_turn(turn("s", "w1", 1, vec![started()], vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                transient: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.load_history("s").await.unwrap().len(),
        2,
        "nothing was written"
    );
}

async fn activity_results_are_committed_once_by_the_holder(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("r")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let mut commit = turn("r", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.activities.push(NewActivity {
        seq: 0,
        name: "act".into(),
        input: Payload::null(),
        timeouts: Default::default(),
        deadline: None,
        heartbeat: None,
        run_here: true,
        in_memory: false,
        flow_key: None,
        priority: 0,
        attempt: 1,
    });
    let item = store.commit_turn(commit).await.unwrap().activity_ids[0];
    let completion = |owner: &str| ActivityCompletion {
        item_id: item,
        instance_id: "r".into(),
        execution: 0,
        event: Event::TaskCompleted {
            seq: 0,
            output: Payload::encode(&7).unwrap(),
        },
        owner: owner.into(),
        lease_until: lease(),
    };
    // Another worker does not hold the item: its result is not committed.
    assert!(
        store
            .complete_activity(completion("w2"))
            .await
            .unwrap()
            .is_none()
    );
    // The holder's result is committed and, since it holds the instance too, claimed for it.
    let message = store
        .complete_activity(completion("w1"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(message.event, Event::TaskCompleted { seq: 0, .. }));
    assert_eq!(message.execution, Some(0));
    // A second completion (a duplicate delivery) commits nothing.
    assert!(
        store
            .complete_activity(completion("w1"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn work_items_keep_bounds_and_heartbeats_and_go_when_cancelled(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("h")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let mut commit = turn("h", "w1", 0, vec![started()], vec![claimed[0].id]);
    let timeouts = duractor::ActivityTimeouts {
        start_to_close: Some(std::time::Duration::from_secs(30)),
        schedule_to_close: Some(std::time::Duration::from_secs(600)),
        heartbeat_timeout: Some(std::time::Duration::from_millis(1_500)),
    };
    let deadline = DateTime::from_timestamp_millis(now().timestamp_millis() + 600_000).unwrap();
    let activity = |seq: u64, run_here: bool| NewActivity {
        seq,
        name: "export".into(),
        input: Payload::null(),
        timeouts,
        deadline: Some(deadline),
        heartbeat: (seq == 0).then(|| Payload::encode(&"from the attempt before").unwrap()),
        run_here,
        in_memory: false,
        flow_key: None,
        priority: 0,
        attempt: 1,
    };
    commit.activities = vec![activity(0, true), activity(1, true), activity(2, false)];
    let ids = store.commit_turn(commit).await.unwrap().activity_ids;

    // Heartbeats are stored on what the worker holds; another worker's are not.
    let beat = |item_id: i64, details: &str| ActivityHeartbeat {
        item_id,
        details: Payload::encode(&details).unwrap(),
    };
    let gone = store
        .sync_activities("w1", &[beat(ids[1], "row 40")], &ids[..2], now())
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let gone = store
        .sync_activities("w2", &[beat(ids[1], "not mine")], &[ids[1]], now())
        .await
        .unwrap();
    assert_eq!(gone, [ids[1]], "w2 does not hold it");
    let listed = store.list_activities("h").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].timeouts, timeouts);
    assert_eq!(listed[0].deadline, Some(deadline));
    assert_eq!(
        listed[1]
            .heartbeat
            .as_ref()
            .map(|h| h.decode::<String>().unwrap()),
        Some("row 40".to_owned())
    );
    assert!(listed[1].heartbeat_at.is_some());
    assert_eq!(listed[1].locked_by.as_deref(), Some("w1"));
    // What the turn's worker cannot run is left unclaimed, for another worker's claim, which
    // carries the bounds and the starting heartbeat.
    assert_eq!(listed[2].locked_by, None);
    let others = store
        .claim_activities("w3", &["import".to_owned()], &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert!(others.is_empty(), "a worker without `export` leaves it");
    let taken = store
        .claim_activities("w2", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].id, taken[0].attempt), (ids[2], 1));
    assert_eq!(taken[0].timeouts, timeouts);
    assert_eq!(taken[0].deadline, Some(deadline));

    // A turn that cancels a call deletes its work item: its worker learns it at its sync.
    let mut cancel = turn("h", "w1", 1, vec![started()], Vec::new());
    cancel.cancelled_activities = vec![0];
    store.commit_turn(cancel).await.unwrap();
    let gone = store
        .sync_activities("w1", &[], &ids[..2], now())
        .await
        .unwrap();
    assert_eq!(gone, [ids[0]]);
    let left: Vec<u64> = store
        .list_activities("h")
        .await
        .unwrap()
        .iter()
        .map(|a| a.seq)
        .collect();
    assert_eq!(left, [1, 2]);
}

async fn a_retrys_work_item_starts_at_its_attempt_number(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("retry")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    // The retry policy's third attempt: run here, and one left for another worker.
    let third = |seq: u64, run_here: bool| NewActivity {
        seq,
        name: "act".into(),
        input: Payload::null(),
        timeouts: Default::default(),
        deadline: None,
        heartbeat: None,
        run_here,
        in_memory: false,
        flow_key: None,
        priority: 0,
        attempt: 3,
    };
    let mut commit = turn("retry", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.activities = vec![third(0, true), third(1, false)];
    store.commit_turn(commit).await.unwrap();
    let listed: Vec<(u64, u32)> = store
        .list_activities("retry")
        .await
        .unwrap()
        .iter()
        .map(|a| (a.seq, a.attempt))
        .collect();
    assert_eq!(
        listed,
        [(0, 3), (1, 2)],
        "the unclaimed one counts its claim"
    );
    let taken = store
        .claim_activities("w2", &names(), &[], 10, lease())
        .await
        .unwrap()
        .items;
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].seq, taken[0].attempt), (1, 3));
}

async fn timers_stay_invisible_until_due(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("timer")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let due = now() + duractor::chrono::Duration::milliseconds(300);
    let mut commit = turn("timer", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.messages.push(NewMessage {
        instance_id: "timer".into(),
        visible_at: due,
        event: Event::TimerFired {
            seq: 0,
            fire_at: due,
        },
        execution: Some(0),
    });
    store.commit_turn(commit).await.unwrap();
    store.release_instance("timer", "w1").await.unwrap();
    assert_eq!(store.next_visible_at().await.unwrap(), Some(due));
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert_eq!((stats.messages_ready, stats.messages_delayed), (0, 1));
    assert_eq!(stats.instances, vec![(RuntimeStatus::Running, 1)]);
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fired = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(matches!(fired[0].event, Event::TimerFired { seq: 0, .. }));
    assert_eq!(fired[0].execution, Some(0));
}

async fn cancelled_timers_are_dropped_unless_already_claimed(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("ct")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let timer = |seq: u64, due: DateTime<Utc>| NewMessage {
        instance_id: "ct".into(),
        visible_at: due,
        event: Event::TimerFired { seq, fire_at: due },
        execution: Some(0),
    };
    let soon = now() + duractor::chrono::Duration::milliseconds(200);
    let later = now() + duractor::chrono::Duration::hours(1);
    let mut commit = turn("ct", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.messages = vec![timer(0, soon), timer(1, later)];
    store.commit_turn(commit).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let due = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(matches!(due[0].event, Event::TimerFired { seq: 0, .. }));

    // A turn cancels both: the one not due is deleted, so it never wakes the instance; the
    // one already claimed stays for the turn that consumes it.
    let mut cancel = turn("ct", "w1", 1, vec![started()], Vec::new());
    cancel.cancelled_timers = vec![0, 1];
    store.commit_turn(cancel).await.unwrap();
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert_eq!(stats.messages_delayed, 0, "{stats:?}");
    store.release_instance("ct", "w1").await.unwrap();
    assert_eq!(store.next_visible_at().await.unwrap(), None);
    let again = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    store
        .commit_turn(turn("ct", "w1", 2, vec![started()], vec![due[0].id]))
        .await
        .expect("the claimed timer is still there to consume");
}

async fn held_timers_stay_with_their_owner_until_released_or_cancelled(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("ht")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let timer = |seq: u64, due: DateTime<Utc>| NewMessage {
        instance_id: "ht".into(),
        visible_at: due,
        event: Event::TimerFired { seq, fire_at: due },
        execution: Some(0),
    };
    let soon = now() + duractor::chrono::Duration::milliseconds(300);
    let later = now() + duractor::chrono::Duration::hours(1);
    let mut commit = turn("ht", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.messages = vec![timer(0, soon), timer(1, later)];
    commit.hold_timers = true;
    let committed = store.commit_turn(commit).await.unwrap();
    if !b.holds_timers {
        assert!(committed.held_timers.is_empty());
        return;
    }
    let held = committed.held_timers;
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|m| m.instance_id == "ht" && m.execution == Some(0))
    );
    assert!(matches!(held[0].event, Event::TimerFired { seq: 0, fire_at } if fire_at == soon));
    assert!(matches!(held[1].event, Event::TimerFired { seq: 1, .. }));
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert_eq!(stats.messages_delayed, 2, "{stats:?}");
    assert_eq!(
        store.next_visible_at().await.unwrap(),
        None,
        "no worker wakes up for another's held timers"
    );

    // A held timer counts as claimed: cancelling it leaves it to its owner, which drops it
    // by consuming it.
    let mut cancel = turn("ht", "w1", 1, vec![started()], Vec::new());
    cancel.cancelled_timers = vec![1];
    store.commit_turn(cancel).await.unwrap();
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert_eq!(stats.messages_delayed, 2, "{stats:?}");
    let withdraw = turn("ht", "w1", 2, vec![started()], vec![held[1].id]);
    store.commit_turn(withdraw).await.unwrap();
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert_eq!(stats.messages_delayed, 1, "{stats:?}");

    // Due, it is still its owner's: no claim takes it; the owner consumes it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let taken = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert!(taken.is_empty(), "{taken:?}");
    let mut consume = turn("ht", "w1", 3, vec![started()], vec![held[0].id]);
    consume.hold_timers = true;
    let soon = now() + duractor::chrono::Duration::milliseconds(300);
    consume.messages = vec![timer(2, soon)];
    let committed = store
        .commit_turn(consume)
        .await
        .expect("the held timer is its owner's to consume");
    assert_eq!(committed.held_timers.len(), 1);

    // Released before it is due, a held timer is an ordinary queued timer again.
    store.release_instance("ht", "w1").await.unwrap();
    assert_eq!(store.next_visible_at().await.unwrap(), Some(soon));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fired = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].id, committed.held_timers[0].id);
}

async fn finishing_drops_leftover_messages_and_is_announced(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("f")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let due = now() + duractor::chrono::Duration::hours(1);
    let mut commit = turn("f", "w1", 0, vec![started()], vec![claimed[0].id]);
    commit.messages.push(NewMessage {
        instance_id: "f".into(),
        visible_at: due,
        event: Event::TimerFired {
            seq: 0,
            fire_at: due,
        },
        execution: Some(0),
    });
    store.commit_turn(commit).await.unwrap();
    let watch = store.events().watch_finished("f");
    let done = completing_turn("f", 1, Payload::encode(&"ok").unwrap());
    store.commit_turn(done).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.notified())
        .await
        .expect("the finish is announced");
    let status = store.get_instance("f").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert!(status.completed_at.is_some());
    assert_eq!(
        store.next_visible_at().await.unwrap(),
        None,
        "the pending timer was dropped"
    );
    // An event for the finished instance is refused, not stored.
    let err = store
        .enqueue(
            "f",
            Event::EventRaised {
                name: "late".into(),
                data: Payload::null(),
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InstanceFinished { instance_id, status, .. }
            if instance_id == "f" && status == "Completed"),
        "{err:?}"
    );
    assert!(
        store
            .claim_messages("w1", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    // The finished instance is free: a new start with its id replaces it.
    store.create_instance(new_instance("f")).await.unwrap();
    assert!(store.load_history("f").await.unwrap().is_empty());
}

/// A waiter of this process is handed the finished instance's row with the announcement
/// (`FinishWatch::take_status`), so `wait_for_completion` reads nothing more: it must be the
/// row a read gives, including what earlier turns set and the last one left alone (custom
/// status, input) — never one pieced together from the last turn. Both ways a backend
/// commits a turn: `h` finishes in a plain turn (one guarded statement), `h2` in a turn
/// that also messages another instance (the ordinary path reads that instance first).
async fn a_finish_hands_its_waiters_the_row_as_stored(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("other")).await.unwrap();
    for (id, message_to_other) in [("h", false), ("h2", true)] {
        store.create_instance(new_instance(id)).await.unwrap();
        let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
        let start = claimed
            .iter()
            .find(|m| m.instance_id == id)
            .expect("the start is claimed");
        let mut first = turn(id, "w1", 0, vec![started()], vec![start.id]);
        first.custom_status = Some(Payload::encode(&"halfway").unwrap());
        store.commit_turn(first).await.unwrap();
        let watch = store.events().watch_finished(id);
        let unwatched = store.events().watch_finished(id);
        store.events().unwatch_finished(id, &unwatched);
        let mut last = completing_turn(id, 1, Payload::encode(&"done").unwrap());
        if message_to_other {
            last.messages.push(NewMessage {
                instance_id: "other".into(),
                visible_at: now(),
                event: Event::EventRaised {
                    name: "done".into(),
                    data: Payload::null(),
                },
                execution: None,
            });
        }
        store.commit_turn(last).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.notified())
            .await
            .expect("the finish is announced");
        let handed = watch
            .take_status()
            .unwrap_or_else(|| panic!("the announcement of `{id}` carries the finished row"));
        let read = store.get_instance(id).await.unwrap().unwrap();
        assert_eq!(handed, read);
        assert_eq!(handed.status, RuntimeStatus::Completed);
        assert_eq!(
            handed.custom_status.unwrap().decode::<String>().unwrap(),
            "halfway"
        );
        assert_eq!(handed.input.decode::<u32>().unwrap(), 42);
        assert_eq!(handed.output.unwrap().decode::<String>().unwrap(), "done");
        assert!(watch.take_status().is_none(), "the row is handed over once");
        assert!(
            unwatched.take_status().is_none(),
            "a registration dropped before the finish is handed nothing"
        );
    }
}

/// A row handed with a finish is taken only if it is the run the waiter read as running:
/// a notification from another process can arrive after the instance was started again
/// under the same id, and the earlier run's finish must not end the wait for this one.
async fn a_waiter_takes_no_handed_row_of_an_earlier_run(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("rerun")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    store
        .commit_turn(turn("rerun", "w1", 0, vec![started()], vec![claimed[0].id]))
        .await
        .unwrap();
    let running = store.get_instance("rerun").await.unwrap().unwrap();
    let client = duractor::Client::new(store.clone());
    let waiter = tokio::spawn(async move {
        client
            .wait_for_completion("rerun", Duration::from_secs(20))
            .await
    });
    // The waiter has read the run as running and waits for its finish.
    while !store.events().is_watched("rerun") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut earlier = running.clone();
    earlier.status = RuntimeStatus::Completed;
    earlier.output = Some(Payload::encode(&"the earlier run's").unwrap());
    earlier.created_at = running.created_at - duractor::chrono::Duration::seconds(60);
    store.events().notify_finished_with(&earlier);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "the earlier run's finish ended the wait: {:?}",
        waiter.await
    );
    let last = completing_turn("rerun", 1, Payload::encode(&"this run's").unwrap());
    store.commit_turn(last).await.unwrap();
    let finished = waiter.await.unwrap().unwrap();
    assert_eq!(
        finished.output.unwrap().decode::<String>().unwrap(),
        "this run's"
    );
    assert_eq!(finished.created_at, running.created_at);
}

/// A start of an id whose run finishes at the same moment either is refused (the run was
/// still going) or replaces the finished run with a new one: Pending, with the new input,
/// its `ExecutionStarted` queued, an empty history — never the old run's last turn written
/// onto the new row (both backends wrote a batch's new instances before its turns: with the
/// finish and the start in one batch, the new run read Completed with the old output, 28
/// times in 30 on SQLite, until the writer split such batches).
async fn a_start_replacing_a_run_that_finishes_beside_it_starts_the_new_run(b: &Backend) {
    let store = &b.store;
    let mut replaced = 0;
    for i in 0..30 {
        let id = format!("x{i}");
        store.create_instance(new_instance(&id)).await.unwrap();
        let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
        let start = claimed.iter().find(|m| m.instance_id == id).unwrap();
        store
            .commit_turn(turn(&id, "w1", 0, vec![started()], vec![start.id]))
            .await
            .unwrap();
        let mut again = new_instance(&id);
        again.input = Payload::encode(&43).unwrap();
        let (finished, created) = tokio::join!(
            store.commit_turn(completing_turn(&id, 1, Payload::encode(&"old").unwrap())),
            store.create_instance(again)
        );
        finished.unwrap();
        let status = store.get_instance(&id).await.unwrap().unwrap();
        match created {
            Ok(()) => {
                replaced += 1;
                assert_eq!(status.status, RuntimeStatus::Pending, "{status:?}");
                assert_eq!(status.input.decode::<u32>().unwrap(), 43);
                assert!(status.output.is_none(), "{status:?}");
                assert!(store.load_history(&id).await.unwrap().is_empty());
                let queued = store.claim_messages("w2", 100, lease()).await.unwrap();
                assert!(
                    queued.iter().any(|m| m.instance_id == id
                        && matches!(m.event, Event::ExecutionStarted { .. })),
                    "the new run's start is queued: {queued:?}"
                );
            }
            Err(Error::InstanceExists { .. }) => {
                assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
                assert_eq!(status.input.decode::<u32>().unwrap(), 42);
            }
            Err(error) => panic!("{error:?}"),
        }
    }
    println!("{replaced} of 30 starts replaced the finished run");
}

async fn continue_as_new_replaces_history_and_drops_old_work(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("c")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let mut first = turn(
        "c",
        "w1",
        0,
        vec![started(), claimed[0].event.clone()],
        vec![claimed[0].id],
    );
    first.activities.push(NewActivity {
        seq: 0,
        name: "act".into(),
        input: Payload::null(),
        timeouts: Default::default(),
        deadline: None,
        heartbeat: None,
        run_here: true,
        in_memory: false,
        flow_key: None,
        priority: 0,
        attempt: 1,
    });
    store.commit_turn(first).await.unwrap();
    store
        .enqueue(
            "c",
            Event::EventRaised {
                name: "keep".into(),
                data: Payload::null(),
            },
            None,
        )
        .await
        .unwrap();
    let mut again = turn("c", "w1", 0, vec![], vec![]);
    again.reset_history = true;
    again.execution = 0;
    again.input = Some(Payload::encode(&43).unwrap());
    again.messages.push(NewMessage {
        instance_id: "c".into(),
        visible_at: now(),
        event: Event::ExecutionStarted {
            name: "flow".into(),
            version: "1".into(),
            input: Payload::encode(&43).unwrap(),
            execution: 1,
            parent: None,
        },
        execution: None,
    });
    store.commit_turn(again).await.unwrap();
    assert!(store.load_history("c").await.unwrap().is_empty());
    // The status shows the new execution's input.
    let status = store.get_instance("c").await.unwrap().unwrap();
    assert_eq!(status.input.decode::<u64>().unwrap(), 43);
    // The old execution's work item is gone; the event and the new start are there.
    store.unregister_worker("w1").await.unwrap();
    assert!(
        store
            .claim_activities("w2", &names(), &[], 10, lease())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let messages = store.claim_messages("w2", 10, lease()).await.unwrap();
    let kinds: Vec<&str> = messages.iter().map(|m| m.event.kind()).collect();
    assert_eq!(kinds, ["EventRaised", "ExecutionStarted"]);
}

async fn purge_deletes_only_finished_instances(b: &Backend) {
    let store = &b.store;
    for id in ["p1", "p2"] {
        store.create_instance(new_instance(id)).await.unwrap();
    }
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let p1 = claimed.iter().find(|m| m.instance_id == "p1").unwrap();
    let mut done = turn(
        "p1",
        "w1",
        0,
        vec![started(), p1.event.clone()],
        vec![p1.id],
    );
    done.status = Some(RuntimeStatus::Failed);
    done.failure = Some(duractor::Failure::application("no"));
    store.commit_turn(done).await.unwrap();
    let purged = store.purge_instances(&PurgeQuery::default()).await.unwrap();
    assert_eq!(purged, 1);
    assert!(store.get_instance("p1").await.unwrap().is_none());
    assert!(store.load_history("p1").await.unwrap().is_empty());
    assert!(store.get_instance("p2").await.unwrap().is_some());
}

async fn entities_store_state_and_locks_and_are_cleaned_up(b: &Backend) {
    let store = &b.store;
    let counter = EntityId::new("Counter", "a");
    let empty = EntityId::new("Counter", "empty");
    for id in [&counter, &empty] {
        store
            .enqueue(&id.instance_id(), Event::EntityDelete {}, None)
            .await
            .unwrap();
    }
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for message in &claimed {
        let mut commit = turn(&message.instance_id, "w1", 0, vec![], vec![message.id]);
        commit.status = None;
        commit.entity = Some(EntityUpdate {
            state: (message.instance_id == counter.instance_id())
                .then(|| Payload::encode(&5).unwrap()),
            lock_owner: (message.instance_id == counter.instance_id())
                .then(|| "gone-orchestration".to_owned()),
        });
        store.commit_turn(commit).await.unwrap();
    }
    let loaded = store.load_entity(&counter).await.unwrap().unwrap();
    assert_eq!(loaded.state.unwrap().decode::<u32>().unwrap(), 5);
    assert_eq!(loaded.lock_owner.as_deref(), Some("gone-orchestration"));
    let listed = store
        .list_entities(&EntityQuery {
            name: Some("Counter".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        1,
        "entities without state are listed only on request"
    );
    let keys = |listed: Vec<duractor::store::EntityStatus>| -> Vec<String> {
        listed.into_iter().map(|e| e.id.key).collect()
    };
    for (name, prefix, expected) in [
        (None, "em", vec!["empty"]),
        (None, "", vec!["a", "empty"]),
        (Some("Counter"), "a", vec!["a"]),
        (Some("Other"), "", vec![]),
        (None, "zz", vec![]),
    ] {
        let listed = store
            .list_entities(&EntityQuery {
                name: name.map(str::to_owned),
                key_prefix: Some(prefix.to_owned()),
                include_empty: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            keys(listed),
            expected,
            "name {name:?}, key prefix {prefix:?}"
        );
    }
    let cleanup = store.clean_entities().await.unwrap();
    assert_eq!(cleanup.removed_empty, 1);
    assert_eq!(cleanup.released_locks, 1);
    // The orphaned lock is released through a message to the entity.
    store
        .release_instance(&counter.instance_id(), "w1")
        .await
        .unwrap();
    let unlock = store.claim_messages("w2", 10, lease()).await.unwrap();
    assert!(
        matches!(&unlock[0].event, Event::EntityUnlock { owner } if owner == "gone-orchestration")
    );
    // Instance queries and counts do not include entities.
    let stats = store.stats().await.unwrap().expect("every backend counts");
    assert!(stats.instances.is_empty(), "{stats:?}");
    assert!(
        store
            .list_instances(&InstanceQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn abandoned_messages_come_back_later(b: &Backend) {
    let store = &b.store;
    store.create_instance(new_instance("ab")).await.unwrap();
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let later = now() + duractor::chrono::Duration::milliseconds(300);
    store
        .abandon_messages("w1", &[claimed[0].id], later)
        .await
        .unwrap();
    store.release_instance("ab", "w1").await.unwrap();
    assert!(
        store
            .claim_messages("w2", 10, lease())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        store.claim_messages("w2", 10, lease()).await.unwrap().len(),
        1
    );
}

async fn instances_list_with_filters_and_paging(b: &Backend) {
    let store = &b.store;
    for i in 0..5 {
        store
            .create_instance(new_instance(&format!("job-{i}")))
            .await
            .unwrap();
    }
    store.create_instance(new_instance("other")).await.unwrap();
    let page = store
        .list_instances(&InstanceQuery {
            instance_id_prefix: Some("job-".into()),
            limit: Some(2),
            after: Some("job-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|s| s.instance_id.as_str()).collect();
    assert_eq!(ids, ["job-2", "job-3"]);
    let pending = store
        .list_instances(&InstanceQuery {
            statuses: vec![RuntimeStatus::Pending],
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 6);
    let mut report = new_instance("report-1");
    report.name = "report".into();
    store.create_instance(report).await.unwrap();
    let reports = store
        .list_instances(&InstanceQuery {
            name: Some("report".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = reports.iter().map(|s| s.instance_id.as_str()).collect();
    assert_eq!(
        ids,
        ["report-1"],
        "only instances of the named orchestrator"
    );
}

#[activity]
async fn conformance_double(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    Ok(x * 2)
}

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct ConformanceCounter {
    value: u64,
}

#[entity]
impl ConformanceCounter {
    fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }
}

#[orchestrator]
async fn conformance_flow(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
    let doubled = ctx.call_activity(ConformanceDouble, n).await?;
    ctx.sleep(Duration::from_millis(50)).await;
    let total = ctx
        .call_entity::<ConformanceCounter>("total")
        .add(doubled)
        .await?;
    let event: u64 = ctx.wait_for_event("bonus").await?;
    Ok(total + event)
}

async fn end_to_end_orchestrations_and_entities(b: &Backend) {
    duractor_tests::init_tracing();
    let runtime = Runtime::builder(b.store.clone())
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(client.start(ConformanceFlow, n).await.unwrap());
    }
    for id in &ids {
        client.raise_event(id, "bonus", &1000u64).await.unwrap();
    }
    let mut outputs = Vec::new();
    for id in &ids {
        let status = client
            .wait_for_completion(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{:?}",
            status.failure
        );
        outputs.push(status.output::<u64>().unwrap());
    }
    let counter = client
        .entity_state::<ConformanceCounter>("total")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counter.value, 30, "2+4+6+8+10, each added once");
    assert!(outputs.iter().all(|o| *o > 1000 && *o <= 1030));
    runtime.shutdown().await.unwrap();
}

/// Instances of a flow-controlled orchestrator are created held: Pending, their messages
/// claimed by nobody, until an admission lets them run within the limits (per key, higher
/// priority first, then older); one with a terminate queued goes whatever the limits.
async fn held_instances_wait_for_their_admission(b: &Backend) {
    let store = &b.store;
    let rules = [FlowRule {
        name: "flow".into(),
        limits: FlowControl::new().concurrency(1).key("/customer"),
    }];
    let held = |id: &str, key: &str, priority: i32| NewInstance {
        flow: Some(FlowHold {
            key: Some(key.to_owned()),
            priority,
        }),
        ..new_instance(id)
    };
    for (id, key, priority) in [
        ("a1", "a", 0),
        ("a2", "a", 0),
        ("a3", "a", 5),
        ("b1", "b", 0),
    ] {
        store
            .create_instance(held(id, key, priority))
            .await
            .unwrap();
    }
    assert!(
        store
            .create_instance_claimed(held("b2", "b", 0), "w1", lease())
            .await
            .unwrap()
            .is_none(),
        "a held start is not leased to its creator"
    );
    store
        .enqueue(
            "a1",
            Event::EventRaised {
                name: "go".into(),
                data: Payload::null(),
            },
            None,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_messages("w1", 10, lease())
            .await
            .unwrap()
            .is_empty(),
        "held instances are claimed by nobody"
    );
    let status = store.get_instance("a1").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Pending);
    let err = store.create_instance(held("a1", "a", 0)).await.unwrap_err();
    assert!(matches!(err, Error::InstanceExists { .. }), "{err:?}");

    let admission = store.admit_instances(&rules).await.unwrap();
    let mut admitted = admission.admitted.clone();
    admitted.sort();
    assert_eq!(
        admitted,
        ["a3", "b1"],
        "per key: the higher priority, then the older"
    );
    assert_eq!(admission.waiting, 3);
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    let mut ids: Vec<&str> = claimed.iter().map(|m| m.instance_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a3", "b1"]);
    let again = store.admit_instances(&rules).await.unwrap();
    assert!(again.admitted.is_empty(), "{again:?}");
    assert_eq!(again.waiting, 3);

    // a3 finishes: the older of a's held instances runs next, with the event it was sent.
    let start = claimed.iter().find(|m| m.instance_id == "a3").unwrap();
    let mut done = turn(
        "a3",
        "w1",
        0,
        vec![
            started(),
            start.event.clone(),
            Event::ExecutionCompleted {
                output: Payload::null(),
            },
        ],
        vec![start.id],
    );
    done.status = Some(RuntimeStatus::Completed);
    done.output = Some(Payload::null());
    store.commit_turn(done).await.unwrap();
    // Its id, started again (replacing the finished instance), is held anew, behind a1 and a2.
    store.create_instance(held("a3", "a", 0)).await.unwrap();
    let next = store.admit_instances(&rules).await.unwrap();
    assert_eq!(next.admitted, ["a1"]);
    assert_eq!(next.waiting, 3);
    let claimed = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(claimed.iter().all(|m| m.instance_id == "a1"));
    assert!(
        claimed
            .iter()
            .any(|m| matches!(&m.event, Event::EventRaised { name, .. } if name == "go"))
    );

    // A held instance being terminated goes at once, whatever the limits.
    store
        .enqueue(
            "b2",
            Event::ExecutionTerminated {
                reason: "not needed".into(),
                cascade: false,
            },
            None,
        )
        .await
        .unwrap();
    let terminated = store.admit_instances(&rules).await.unwrap();
    assert_eq!(terminated.admitted, ["b2"]);
    assert_eq!(terminated.waiting, 2);

    let mut status = store.instance_flow_status(&["flow".into()]).await.unwrap();
    status.sort_by(|x, y| x.key.cmp(&y.key));
    let counts: Vec<(Option<&str>, u32, u32)> = status
        .iter()
        .map(|s| (s.key.as_deref(), s.running, s.waiting))
        .collect();
    assert_eq!(
        counts,
        [(Some("a"), 1, 2), (Some("b"), 1, 0)],
        "a terminated held instance no longer counts"
    );

    // A purged instance's id can be held again at once.
    let mut b1_done = turn(
        "b1",
        "w1",
        0,
        vec![Event::ExecutionCompleted {
            output: Payload::null(),
        }],
        vec![],
    );
    b1_done.status = Some(RuntimeStatus::Completed);
    b1_done.output = Some(Payload::null());
    store.commit_turn(b1_done).await.unwrap();
    let purged = store
        .purge_instances(&PurgeQuery {
            instance_id: Some("b1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    store.create_instance(held("b1", "b", 0)).await.unwrap();
    let again = store.admit_instances(&rules).await.unwrap();
    assert_eq!(again.admitted, ["b1"], "nothing of b runs: the new b1 may");
    assert!(status.iter().all(|s| s.kind == FlowKind::Orchestration));
}

/// An event raised while its instance's start is still on its way to the worker (the
/// worker's own client hands the start over in memory; a store that answers late lets the
/// event, claimed from the store, arrive first) is held for the start, not dropped.
#[tokio::test]
async fn an_event_that_overtakes_its_start_is_delivered_after_it() {
    let store = duractor_tests::slow_starts::SlowStarts::new(
        duractor::testing::MemoryStore::new(),
        Duration::from_millis(300),
    );
    let runtime = Runtime::builder(store)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let start = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .start(ConformanceFlow, 1)
                .instance_id("overtaken")
                .await
        }
    });
    // The instance exists (its start leased to the worker) while the start call is held.
    let mut raised = false;
    for _ in 0..100 {
        if client.status("overtaken").await.is_ok() {
            client
                .raise_event("overtaken", "bonus", &1000u64)
                .await
                .unwrap();
            raised = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(raised, "the instance was never created");
    assert!(
        !start.is_finished(),
        "the event must be raised while the start is in flight"
    );
    start.await.unwrap().unwrap();
    let status = client
        .wait_for_completion("overtaken", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        status.status,
        RuntimeStatus::Completed,
        "{:?}",
        status.failure
    );
    assert_eq!(status.output.unwrap().decode::<u64>().unwrap(), 1002);
    runtime.shutdown().await.unwrap();
}

/// Two processes writing one SQLite file: a writer plans its plain turns without a read, on
/// queue ids past the last it saw. When another process has taken ids meanwhile (and even
/// deleted their rows again), the turn is planned again on a read: its messages get ids past
/// the other process's, so ids never repeat and a queue's order stays the order of writing.
#[tokio::test]
async fn sqlite_queue_ids_stay_apart_across_processes() {
    let dir = TempDir::new("sqlite-two-writers");
    let a = SqliteStore::open(dir.file("shared.db")).await.unwrap();
    let b = SqliteStore::open(dir.file("shared.db")).await.unwrap();
    let event = |instance_id: &str| NewMessage {
        instance_id: instance_id.into(),
        visible_at: now(),
        event: Event::EventRaised {
            name: "e".into(),
            data: Payload::null(),
        },
        execution: None,
    };
    a.create_instance(new_instance("x")).await.unwrap();
    let start = a.claim_messages("w1", 10, lease()).await.unwrap();
    let mut first = turn("x", "w1", 0, vec![started()], vec![start[0].id]);
    first.messages = vec![event("x")];
    a.commit_turn(first).await.unwrap();
    let e1 = a.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(e1.len(), 1, "{e1:?}");

    // The other process starts and runs an instance: it takes the next id and deletes it.
    b.create_instance(new_instance("y")).await.unwrap();
    let y = b.claim_messages("w2", 10, lease()).await.unwrap();
    assert_eq!(y.len(), 1, "{y:?}");
    assert!(y[0].id > e1[0].id);
    b.commit_turn(turn("y", "w2", 0, vec![started()], vec![y[0].id]))
        .await
        .unwrap();

    let mut second = turn("x", "w1", 1, vec![started()], vec![e1[0].id]);
    second.messages = vec![event("x")];
    a.commit_turn(second).await.unwrap();
    let e2 = a.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(e2.len(), 1, "{e2:?}");
    assert!(
        e2[0].id > y[0].id,
        "message id {} was already taken by the other process ({})",
        e2[0].id,
        y[0].id
    );
    let mut third = turn("x", "w1", 2, vec![started()], vec![e2[0].id]);
    third.messages = vec![event("x")];
    a.commit_turn(third).await.unwrap();
    let e3 = a.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(e3.len(), 1, "{e3:?}");
    assert!(e3[0].id > e2[0].id);
    let history = a.load_history("x").await.unwrap();
    assert_eq!(history.len(), 3);
}

//! Functions of the flow-control tests: activities that measure, themselves, how many of
//! them run at once per key and when each started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duractor::ActivityOptions;
use duractor::prelude::*;
use serde::{Deserialize, Serialize};

/// Per key: how many run now, and the most that ever ran at once.
pub static RUNNING: Mutex<Option<HashMap<String, (u32, u32)>>> = Mutex::new(None);

/// The starts recorded under one tag: when, and with what label.
pub type Starts = Vec<(Instant, String)>;

/// When each start of a tag happened, and the order of the tags' starts.
pub static STARTS: Mutex<Option<HashMap<String, Starts>>> = Mutex::new(None);

/// The most that ran at once under `key`.
pub fn most_at_once(key: &str) -> u32 {
    RUNNING
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|map| map.get(key).map(|(_, most)| *most))
        .unwrap_or(0)
}

/// The starts recorded under `tag`: when, and with what label, in order.
pub fn starts(tag: &str) -> Starts {
    STARTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|map| map.get(tag).cloned())
        .unwrap_or_default()
}

fn record_start(tag: &str, label: &str) {
    STARTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default()
        .push((Instant::now(), label.to_owned()));
}

/// One call of a limited activity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    /// The flow-control key.
    pub customer: String,
    /// What the start is recorded under.
    pub tag: String,
    /// How long it works.
    pub ms: u64,
}

/// At most 3 at once per customer, across every worker.
#[activity(concurrency = 3, key = "/customer")]
pub async fn per_customer(_ctx: ActivityContext, work: Work) -> Result<(), duractor::Error> {
    {
        let mut guard = RUNNING.lock().unwrap();
        let entry = guard
            .get_or_insert_with(HashMap::new)
            .entry(work.customer.clone())
            .or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
    }
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    let mut guard = RUNNING.lock().unwrap();
    if let Some(entry) = guard.as_mut().and_then(|map| map.get_mut(&work.customer)) {
        entry.0 -= 1;
    }
    Ok(())
}

/// At most 50 starts a second.
#[activity(rate = "50/s")]
pub async fn rate_limited(_ctx: ActivityContext, work: Work) -> Result<(), duractor::Error> {
    record_start(&work.tag, &work.customer);
    Ok(())
}

/// One at a time.
#[activity(concurrency = 1)]
pub async fn one_at_a_time(_ctx: ActivityContext, work: Work) -> Result<(), duractor::Error> {
    record_start(&work.tag, &work.customer);
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    Ok(())
}

/// What [`fan_out_limited`] runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanOut {
    /// The activity: `per_customer` or `rate_limited`.
    pub activity: String,
    /// Keys are `{prefix}-{i % keys}`.
    pub prefix: String,
    pub keys: u32,
    pub count: u32,
    pub ms: u64,
}

/// Calls the activity `count` times at once, spread over `keys` customers.
#[orchestrator]
pub async fn fan_out_limited(
    ctx: OrchestrationContext,
    spec: FanOut,
) -> Result<u32, duractor::Error> {
    let work = |i: u32| Work {
        customer: format!("{}-{}", spec.prefix, i % spec.keys.max(1)),
        tag: spec.prefix.clone(),
        ms: spec.ms,
    };
    if spec.activity == "rate_limited" {
        let calls: Vec<_> = (0..spec.count)
            .map(|i| ctx.call_activity(RateLimited, work(i)))
            .collect();
        for result in ctx.join_all(calls).await {
            result?;
        }
    } else {
        let calls: Vec<_> = (0..spec.count)
            .map(|i| ctx.call_activity(PerCustomer, work(i)))
            .collect();
        for result in ctx.join_all(calls).await {
            result?;
        }
    }
    Ok(spec.count)
}

/// A blocker takes the only slot; then five calls of priority 0 and one of priority 10 wait
/// for it: the high one must run next.
#[orchestrator]
pub async fn prioritized(ctx: OrchestrationContext, tag: String) -> Result<(), duractor::Error> {
    let work = |label: &str, ms: u64| Work {
        customer: label.to_owned(),
        tag: tag.clone(),
        ms,
    };
    let blocker = ctx.call_activity(OneAtATime, work("blocker", 400));
    ctx.sleep(Duration::from_millis(100)).await;
    let mut calls = Vec::new();
    for i in 0..5 {
        let low = ActivityOptions::new().priority(0);
        calls.push(ctx.call_activity_with(OneAtATime, work(&format!("low-{i}"), 10), &low));
    }
    let high = ActivityOptions::new().priority(10);
    calls.push(ctx.call_activity_with(OneAtATime, work("high", 10), &high));
    let (first, rest) = ctx.join(blocker, ctx.join_all(calls)).await;
    first?;
    for result in rest {
        result?;
    }
    Ok(())
}

/// At most 2 instances at once per customer: each records, itself, from its first call to
/// its last, how many of its customer's instances run (under `job:{customer}`).
#[orchestrator(concurrency = 2, key = "/customer")]
pub async fn limited_job(ctx: OrchestrationContext, work: Work) -> Result<(), duractor::Error> {
    ctx.call_activity(JobEnter, work.clone()).await?;
    if work.ms > 0 {
        ctx.sleep(Duration::from_millis(work.ms)).await;
    }
    ctx.call_activity(JobLeave, work).await?;
    Ok(())
}

/// One instance at a time: records its start under its tag, then works `ms`.
#[orchestrator(concurrency = 1)]
pub async fn one_job_at_a_time(
    ctx: OrchestrationContext,
    work: Work,
) -> Result<(), duractor::Error> {
    ctx.call_activity(JobEnter, work.clone()).await?;
    if work.ms > 0 {
        ctx.sleep(Duration::from_millis(work.ms)).await;
    }
    ctx.call_activity(JobLeave, work).await?;
    Ok(())
}

/// Starts `count` [`limited_job`]s of `customer` as sub-orchestrations and waits for them.
#[orchestrator]
pub async fn limited_jobs(
    ctx: OrchestrationContext,
    (customer, count, ms): (String, u32, u64),
) -> Result<u32, duractor::Error> {
    let jobs: Vec<_> = (0..count)
        .map(|_| {
            ctx.call_sub_orchestrator(
                LimitedJob,
                Work {
                    customer: customer.clone(),
                    tag: customer.clone(),
                    ms,
                },
            )
        })
        .collect();
    for result in ctx.join_all(jobs).await {
        result?;
    }
    Ok(count)
}

/// A job starts: one more of its customer's runs (`job:{customer}`), its start recorded
/// under its tag.
#[activity]
pub async fn job_enter(_ctx: ActivityContext, work: Work) -> Result<(), duractor::Error> {
    record_start(&work.tag, &work.customer);
    let mut guard = RUNNING.lock().unwrap();
    let entry = guard
        .get_or_insert_with(HashMap::new)
        .entry(format!("job:{}", work.customer))
        .or_default();
    entry.0 += 1;
    entry.1 = entry.1.max(entry.0);
    Ok(())
}

/// A job ends: one fewer of its customer's runs.
#[activity]
pub async fn job_leave(_ctx: ActivityContext, work: Work) -> Result<(), duractor::Error> {
    let mut guard = RUNNING.lock().unwrap();
    if let Some(entry) = guard
        .as_mut()
        .and_then(|map| map.get_mut(&format!("job:{}", work.customer)))
    {
        entry.0 -= 1;
    }
    Ok(())
}

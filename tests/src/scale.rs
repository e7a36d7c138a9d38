//! The functions of the PostgreSQL scale-out test, shared by the `pg_worker` binary (which
//! runs them) and the test (which starts them with typed handles).

use duractor::prelude::*;

/// Counts signals.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Hits {
    /// How many `hit`s arrived.
    pub count: u64,
}

#[entity]
impl Hits {
    fn hit(&mut self) {
        self.count += 1;
    }
}

/// One step of the chain.
#[activity]
pub async fn scale_step(
    _ctx: ActivityContext,
    (value, k): (u64, u64),
) -> Result<u64, duractor::Error> {
    Ok(value.wrapping_mul(31).wrapping_add(k + 1))
}

/// 5 sequential activities, then a signal to the `Hits` entity of key `h{seed % 20}`.
#[orchestrator]
pub async fn five_steps(ctx: OrchestrationContext, seed: u64) -> Result<u64, duractor::Error> {
    let mut value = seed;
    for k in 0..5 {
        value = ctx.call_activity(ScaleStep, (value, k)).await?;
    }
    ctx.signal_entity::<Hits>(format!("h{}", seed % 20)).hit();
    Ok(value)
}

/// What `five_steps(seed)` returns.
pub fn five_steps_output(seed: u64) -> u64 {
    (0..5).fold(seed, |value, k| value.wrapping_mul(31).wrapping_add(k + 1))
}

/// 3 sequential activities: the orchestration of the fault tests.
#[orchestrator]
pub async fn three_steps(ctx: OrchestrationContext, seed: u64) -> Result<u64, duractor::Error> {
    let mut value = seed;
    for k in 0..3 {
        value = ctx.call_activity(ScaleStep, (value, k)).await?;
    }
    Ok(value)
}

/// What `three_steps(seed)` returns.
pub fn three_steps_output(seed: u64) -> u64 {
    (0..3).fold(seed, |value, k| value.wrapping_mul(31).wrapping_add(k + 1))
}

/// Sets a custom status, runs one step, and returns a text of `len` bytes: the orchestration
/// whose finished row waiters in another process are handed (or, past a notification's
/// size, read themselves).
#[orchestrator]
pub async fn sized_output(
    ctx: OrchestrationContext,
    len: usize,
) -> Result<String, duractor::Error> {
    ctx.set_custom_status("stepping");
    ctx.call_activity(ScaleStep, (len as u64, 0)).await?;
    Ok("x".repeat(len))
}

//! The built-in entity behind every schedule: its state, its operations, and the decisions
//! of a tick (which missed ticks still run, what the overlap policy does with each).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    MAX_RUNS_AT_ONCE, Overlap, RECENT_RUNS, RunOutcome, SCHEDULE_ENTITY, ScheduleRun, ScheduleSpec,
    ScheduleStatus,
};
use crate::entity::{
    __check_input, __decode_input, __encode_output, __unknown_operation, Entity, EntityContext,
    OperationInfo, ProxyMode, ProxyTarget,
};
use crate::error::Failure;
use crate::payload::Payload;

/// The operation a schedule's run reports its end through (sent by the runtime).
pub const RUN_FINISHED: &str = "__run_finished";

/// How a run ended: the input of [`RUN_FINISHED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFinished {
    /// The run's child number.
    pub seq: u64,
    /// Why it failed (`None`: it completed).
    pub failure: Option<Failure>,
}

/// A change to a schedule, as a client sends it: an operation name and its input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ScheduleOp {
    /// Creates or replaces the spec (an unchanged spec changes nothing); `paused` sets the
    /// pause state when given.
    Upsert {
        spec: ScheduleSpec,
        paused: Option<bool>,
        /// Only if there is no schedule with this id yet (a racing create loses).
        create: bool,
    },
    Pause {
        note: Option<String>,
    },
    Resume,
    Trigger,
    Backfill {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Delete,
}

impl ScheduleOp {
    /// The operation name and its input.
    pub(crate) fn operation(&self) -> (&'static str, Payload) {
        match self {
            ScheduleOp::Upsert {
                spec,
                paused,
                create,
            } => (
                "upsert",
                json(&Upsert {
                    spec: spec.clone(),
                    paused: *paused,
                    create: *create,
                }),
            ),
            ScheduleOp::Pause { note } => ("pause", json(&Pause { note: note.clone() })),
            ScheduleOp::Resume => ("resume", Payload::null()),
            ScheduleOp::Trigger => ("trigger", Payload::null()),
            ScheduleOp::Backfill { from, to } => (
                "backfill",
                json(&Backfill {
                    from: *from,
                    to: *to,
                }),
            ),
            ScheduleOp::Delete => ("delete", Payload::null()),
        }
    }
}

/// Encodes plain data (no maps with non-string keys, no failing `Serialize`).
fn json<T: Serialize>(value: &T) -> Payload {
    Payload::encode(value).unwrap_or_else(|_| Payload::null())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upsert {
    spec: ScheduleSpec,
    paused: Option<bool>,
    #[serde(default)]
    create: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pause {
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Backfill {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    generation: u64,
    tick: DateTime<Utc>,
}

/// A schedule's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ScheduleEntity {
    spec: Option<ScheduleSpec>,
    paused: bool,
    note: Option<String>,
    /// Bumped whenever the timing is re-armed: a tick signal of an older generation is stale.
    generation: u64,
    next_tick: Option<DateTime<Utc>>,
    running: Vec<ScheduleRun>,
    buffered: Option<ScheduleRun>,
    recent: Vec<ScheduleRun>,
    next_seq: u64,
    started: u64,
    skipped: u64,
    /// How many changes (client operations) it has applied: a client waits for it to grow.
    changes: u64,
}

impl ScheduleEntity {
    /// How many changes it has applied.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// Its spec (`None`: deleted).
    pub(crate) fn spec(&self) -> Option<&ScheduleSpec> {
        self.spec.as_ref()
    }

    /// The view clients read (`None` for a deleted schedule).
    pub(crate) fn status(self) -> Option<ScheduleStatus> {
        Some(ScheduleStatus {
            spec: self.spec?,
            paused: self.paused,
            note: self.note,
            next_run_at: if self.paused { None } else { self.next_tick },
            running: self.running,
            buffered: self.buffered,
            recent: self.recent,
            started: self.started,
            skipped: self.skipped,
        })
    }

    fn upsert(&mut self, ctx: &EntityContext, input: Upsert) {
        if input.create && self.spec.is_some() {
            return;
        }
        let unchanged = self.spec.as_ref() == Some(&input.spec)
            && input.paused.is_none_or(|paused| paused == self.paused);
        if unchanged {
            return;
        }
        self.spec = Some(input.spec);
        if let Some(paused) = input.paused {
            self.paused = paused;
            if !paused {
                self.note = None;
            }
        }
        self.arm(ctx, ctx.now);
    }

    /// Schedules the next tick after `after` (nothing while paused), making every earlier
    /// tick signal stale.
    fn arm(&mut self, ctx: &EntityContext, after: DateTime<Utc>) {
        self.generation += 1;
        self.next_tick = None;
        if self.paused {
            return;
        }
        self.send_next(ctx, after);
    }

    fn send_next(&mut self, ctx: &EntityContext, after: DateTime<Utc>) {
        let Some(spec) = &self.spec else { return };
        self.next_tick = spec.next_tick(after);
        if let Some(tick) = self.next_tick {
            let input = Payload::encode(&Tick {
                generation: self.generation,
                tick,
            });
            ctx.push_signal(
                ctx.id(),
                "tick",
                input.map_err(|e| crate::error::Error::invalid_payload("a schedule tick", e)),
                Some(spec.fire_at(tick)),
            );
        }
    }

    fn tick(&mut self, ctx: &EntityContext, input: Tick) {
        let Some(spec) = self.spec.clone() else {
            // A tick of a deleted schedule: stay deleted.
            return ctx.delete_entity();
        };
        if self.paused || input.generation != self.generation || self.next_tick != Some(input.tick)
        {
            return;
        }
        let now = ctx.now.max(input.tick);
        for tick in due_ticks(&spec, input.tick, now) {
            let run = self.run_for(&spec, tick, false);
            self.offer(ctx, &spec, run);
        }
        self.send_next(ctx, now);
    }

    fn run_for(&mut self, spec: &ScheduleSpec, tick: DateTime<Utc>, now: bool) -> ScheduleRun {
        let time = tick.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let seq = self.next_seq;
        self.next_seq += 1;
        ScheduleRun {
            instance_id: if now {
                format!("{}@{time}-now{seq}", spec.id)
            } else {
                format!("{}@{time}", spec.id)
            },
            tick,
            outcome: RunOutcome::Running,
            failure: None,
            seq,
        }
    }

    /// Starts `run`, or does what the overlap policy says while another one runs.
    fn offer(&mut self, ctx: &EntityContext, spec: &ScheduleSpec, mut run: ScheduleRun) {
        if self.running.is_empty() {
            return self.start(ctx, spec, run);
        }
        match spec.overlap {
            Overlap::AllowAll => self.start(ctx, spec, run),
            Overlap::TerminatePrevious => {
                for previous in &self.running {
                    ctx.terminate(
                        &previous.instance_id,
                        &format!("schedule `{}` started the next run", spec.id),
                    );
                }
                self.start(ctx, spec, run);
            }
            Overlap::BufferOne if self.buffered.is_none() => {
                run.outcome = RunOutcome::Buffered;
                self.buffered = Some(run);
            }
            Overlap::BufferOne | Overlap::Skip => {
                run.outcome = RunOutcome::Skipped;
                self.skipped += 1;
                self.remember(run);
            }
        }
    }

    fn start(&mut self, ctx: &EntityContext, spec: &ScheduleSpec, mut run: ScheduleRun) {
        ctx.start_child(
            &spec.orchestrator,
            spec.input.clone(),
            run.instance_id.clone(),
            run.seq,
        );
        run.outcome = RunOutcome::Running;
        self.started += 1;
        self.running.push(run);
    }

    fn remember(&mut self, run: ScheduleRun) {
        self.recent.push(run);
        if self.recent.len() > RECENT_RUNS {
            let extra = self.recent.len() - RECENT_RUNS;
            self.recent.drain(..extra);
        }
    }

    fn finished(&mut self, ctx: &EntityContext, input: RunFinished) {
        let Some(i) = self.running.iter().position(|run| run.seq == input.seq) else {
            return;
        };
        let mut run = self.running.remove(i);
        run.outcome = match input.failure {
            None => RunOutcome::Completed,
            Some(_) => RunOutcome::Failed,
        };
        run.failure = input.failure;
        self.remember(run);
        if self.running.is_empty()
            && !self.paused
            && let Some(spec) = self.spec.clone()
            && let Some(buffered) = self.buffered.take()
        {
            self.start(ctx, &spec, buffered);
        }
    }

    fn backfill(&mut self, ctx: &EntityContext, input: Backfill) -> Result<(), Failure> {
        let Some(spec) = self.spec.clone() else {
            return Err(not_found());
        };
        if input.from > input.to {
            return Err(Failure::new(
                "invalid_argument",
                format!(
                    "a backfill from {} to {} runs backwards",
                    input.from, input.to
                ),
            ));
        }
        let mut tick = spec.next_tick(input.from - chrono::Duration::milliseconds(1));
        let mut count = 0;
        while let Some(t) = tick
            && t <= input.to
            && count < MAX_RUNS_AT_ONCE
        {
            let run = self.run_for(&spec, t, false);
            self.start(ctx, &spec, run);
            count += 1;
            tick = spec.next_tick(t);
        }
        Ok(())
    }
}

fn not_found() -> Failure {
    Failure::new("schedule_not_found", "the schedule was deleted")
}

/// The ticks from `first` (due now) up to `now` that still run under the catch-up policy,
/// oldest first.
fn due_ticks(spec: &ScheduleSpec, first: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let window = chrono::Duration::milliseconds(spec.catch_up_window_ms as i64);
    if spec.catch_up_window_ms == 0 {
        return vec![latest_tick(spec, first, now)];
    }
    let start = first.max(now - window);
    let mut ticks = std::collections::VecDeque::new();
    let mut tick = if start == first {
        Some(first)
    } else {
        spec.next_tick(start - chrono::Duration::milliseconds(1))
    };
    while let Some(t) = tick
        && t <= now
    {
        ticks.push_back(t);
        if ticks.len() > MAX_RUNS_AT_ONCE {
            ticks.pop_front();
        }
        tick = spec.next_tick(t);
    }
    ticks.into()
}

/// The last tick at or before `now`, no earlier than `first`. Looks back over growing
/// spans, so a schedule ticking every second that missed a month does not walk the month.
fn latest_tick(spec: &ScheduleSpec, first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    for span_s in [60, 3_600, 86_400, 32 * 86_400, 367 * 86_400] {
        let from = first.max(now - chrono::Duration::seconds(span_s));
        let mut tick = spec.next_tick(from - chrono::Duration::milliseconds(1));
        let mut latest = None;
        while let Some(t) = tick
            && t <= now
        {
            latest = Some(t);
            tick = spec.next_tick(t);
        }
        if let Some(latest) = latest {
            return latest;
        }
        if from == first {
            break;
        }
    }
    first
}

fn decode<T: DeserializeOwned>(operation: &str, input: &Payload) -> Result<T, Failure> {
    __decode_input(SCHEDULE_ENTITY, operation, input)
}

const OPERATIONS: &[OperationInfo] = &[
    OperationInfo {
        name: "upsert",
        input_type: "Upsert",
        output_type: "()",
        check_input: |entity, input| __check_input::<Upsert>(entity, "upsert", input),
    },
    OperationInfo {
        name: "pause",
        input_type: "Pause",
        output_type: "()",
        check_input: |entity, input| __check_input::<Pause>(entity, "pause", input),
    },
    OperationInfo {
        name: "resume",
        input_type: "()",
        output_type: "()",
        check_input: |entity, input| __check_input::<()>(entity, "resume", input),
    },
    OperationInfo {
        name: "trigger",
        input_type: "()",
        output_type: "()",
        check_input: |entity, input| __check_input::<()>(entity, "trigger", input),
    },
    OperationInfo {
        name: "backfill",
        input_type: "Backfill",
        output_type: "()",
        check_input: |entity, input| __check_input::<Backfill>(entity, "backfill", input),
    },
    OperationInfo {
        name: "delete",
        input_type: "()",
        output_type: "()",
        check_input: |entity, input| __check_input::<()>(entity, "delete", input),
    },
    OperationInfo {
        name: "tick",
        input_type: "Tick",
        output_type: "()",
        check_input: |entity, input| __check_input::<Tick>(entity, "tick", input),
    },
    OperationInfo {
        name: RUN_FINISHED,
        input_type: "RunFinished",
        output_type: "()",
        check_input: |entity, input| __check_input::<RunFinished>(entity, RUN_FINISHED, input),
    },
];

impl Entity for ScheduleEntity {
    const NAME: &'static str = SCHEDULE_ENTITY;

    type Proxy<M: ProxyMode> = ProxyTarget<M>;

    fn __proxy<M: ProxyMode>(target: ProxyTarget<M>) -> Self::Proxy<M> {
        target
    }

    fn __dispatch(
        &mut self,
        ctx: &mut EntityContext,
        operation: &str,
        input: &Payload,
    ) -> Result<Payload, Failure> {
        let live = self.spec.is_some();
        if !matches!(operation, "tick" | RUN_FINISHED) {
            self.changes += 1;
        }
        match operation {
            "upsert" => self.upsert(ctx, decode(operation, input)?),
            "tick" => self.tick(ctx, decode(operation, input)?),
            RUN_FINISHED => self.finished(ctx, decode(operation, input)?),
            "backfill" => self.backfill(ctx, decode(operation, input)?)?,
            _ if !live => {
                // An operation on a schedule that does not exist: nothing to keep.
                ctx.delete_entity();
                return Err(not_found());
            }
            "pause" => {
                let pause: Pause = decode(operation, input)?;
                self.paused = true;
                self.note = pause.note;
                self.generation += 1;
                self.next_tick = None;
                self.buffered = None;
            }
            "resume" => {
                if self.paused {
                    self.paused = false;
                    self.note = None;
                    self.arm(ctx, ctx.now);
                }
            }
            "trigger" => {
                if let Some(spec) = self.spec.clone() {
                    let run = self.run_for(&spec, ctx.now, true);
                    self.offer(ctx, &spec, run);
                }
            }
            "delete" => {
                *self = ScheduleEntity::default();
                ctx.delete_entity();
            }
            other => return Err(__unknown_operation(SCHEDULE_ENTITY, other, OPERATIONS)),
        }
        __encode_output(SCHEDULE_ENTITY, operation, &())
    }

    fn __operations() -> &'static [OperationInfo] {
        OPERATIONS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EntityId;
    use crate::schedule::Timing;

    fn spec(overlap: Overlap) -> ScheduleSpec {
        ScheduleSpec {
            id: "s".to_owned(),
            orchestrator: "job".to_owned(),
            input: Payload::null(),
            timing: Timing::Every {
                every_ms: 60_000,
                offset_ms: 0,
            },
            jitter_ms: 0,
            overlap,
            catch_up_window_ms: 0,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn ctx(now: &str) -> EntityContext {
        EntityContext::at(EntityId::new(SCHEDULE_ENTITY, "s"), at(now))
    }

    fn started(ctx: &EntityContext) -> Vec<String> {
        ctx.effects
            .borrow()
            .iter()
            .filter_map(|effect| match effect {
                crate::entity::EntityEffect::StartOrchestration { instance_id, .. } => {
                    instance_id.clone()
                }
                _ => None,
            })
            .collect()
    }

    fn created(overlap: Overlap, now: &str) -> ScheduleEntity {
        let mut entity = ScheduleEntity::default();
        entity.upsert(
            &ctx(now),
            Upsert {
                spec: spec(overlap),
                paused: None,
                create: false,
            },
        );
        entity
    }

    fn tick(entity: &mut ScheduleEntity, now: &str) -> EntityContext {
        let ctx = ctx(now);
        let input = Tick {
            generation: entity.generation,
            tick: entity.next_tick.unwrap(),
        };
        entity.tick(&ctx, input);
        ctx
    }

    #[test]
    fn a_tick_starts_its_run_and_arms_the_next() {
        let mut entity = created(Overlap::Skip, "2026-01-01T00:00:30Z");
        assert_eq!(entity.next_tick, Some(at("2026-01-01T00:01:00Z")));
        let ctx = tick(&mut entity, "2026-01-01T00:01:00Z");
        assert_eq!(started(&ctx), ["s@2026-01-01T00:01:00Z"]);
        assert_eq!(entity.next_tick, Some(at("2026-01-01T00:02:00Z")));
        // The same spec again changes nothing (a declared schedule at every startup).
        let generation = entity.generation;
        entity.upsert(
            &ctx,
            Upsert {
                spec: spec(Overlap::Skip),
                paused: None,
                create: false,
            },
        );
        assert_eq!(entity.generation, generation);
    }

    #[test]
    fn overlap_policies() {
        // Skip: the second tick is skipped while the first runs.
        let mut entity = created(Overlap::Skip, "2026-01-01T00:00:30Z");
        tick(&mut entity, "2026-01-01T00:01:00Z");
        let ctx = tick(&mut entity, "2026-01-01T00:02:00Z");
        assert!(started(&ctx).is_empty());
        assert_eq!(entity.skipped, 1);

        // Buffer one: the second waits, the third is skipped, the end of the first starts the
        // second.
        let mut entity = created(Overlap::BufferOne, "2026-01-01T00:00:30Z");
        tick(&mut entity, "2026-01-01T00:01:00Z");
        tick(&mut entity, "2026-01-01T00:02:00Z");
        tick(&mut entity, "2026-01-01T00:03:00Z");
        assert_eq!(entity.skipped, 1);
        let ctx = ctx_at("2026-01-01T00:03:10Z");
        entity.finished(
            &ctx,
            RunFinished {
                seq: 0,
                failure: None,
            },
        );
        assert_eq!(started(&ctx), ["s@2026-01-01T00:02:00Z"]);
        assert_eq!(entity.recent[1].outcome, RunOutcome::Completed);

        // Allow all: both start.
        let mut entity = created(Overlap::AllowAll, "2026-01-01T00:00:30Z");
        tick(&mut entity, "2026-01-01T00:01:00Z");
        let ctx = tick(&mut entity, "2026-01-01T00:02:00Z");
        assert_eq!(started(&ctx), ["s@2026-01-01T00:02:00Z"]);
        assert_eq!(entity.running.len(), 2);

        // Terminate previous: the running one is terminated, the new one starts.
        let mut entity = created(Overlap::TerminatePrevious, "2026-01-01T00:00:30Z");
        tick(&mut entity, "2026-01-01T00:01:00Z");
        let ctx = tick(&mut entity, "2026-01-01T00:02:00Z");
        let terminated: Vec<String> = ctx
            .effects
            .borrow()
            .iter()
            .filter_map(|effect| match effect {
                crate::entity::EntityEffect::Terminate { instance_id, .. } => {
                    Some(instance_id.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(terminated, ["s@2026-01-01T00:01:00Z"]);
        assert_eq!(started(&ctx), ["s@2026-01-01T00:02:00Z"]);
    }

    #[test]
    fn catch_up_after_downtime() {
        // Latest: a tick delivered an hour late runs the latest missed one only.
        let mut entity = created(Overlap::AllowAll, "2026-01-01T00:00:30Z");
        let ctx = tick(&mut entity, "2026-01-01T01:00:30Z");
        assert_eq!(started(&ctx), ["s@2026-01-01T01:00:00Z"]);
        assert_eq!(entity.next_tick, Some(at("2026-01-01T01:01:00Z")));

        // A window of five minutes: the missed ticks of the last five minutes run.
        let mut late = spec(Overlap::AllowAll);
        late.catch_up_window_ms = 5 * 60_000;
        let mut entity = ScheduleEntity::default();
        entity.upsert(
            &ctx_at("2026-01-01T00:00:30Z"),
            Upsert {
                spec: late,
                paused: None,
                create: false,
            },
        );
        let ctx = tick(&mut entity, "2026-01-01T01:00:30Z");
        assert_eq!(
            started(&ctx),
            [
                "s@2026-01-01T00:56:00Z",
                "s@2026-01-01T00:57:00Z",
                "s@2026-01-01T00:58:00Z",
                "s@2026-01-01T00:59:00Z",
                "s@2026-01-01T01:00:00Z"
            ]
        );
    }

    fn ctx_at(now: &str) -> EntityContext {
        ctx(now)
    }

    #[test]
    fn a_paused_schedule_ignores_its_tick_and_a_stale_tick_is_ignored() {
        let mut entity = created(Overlap::Skip, "2026-01-01T00:00:30Z");
        let stale = Tick {
            generation: entity.generation,
            tick: entity.next_tick.unwrap(),
        };
        let mut pause_ctx = ctx("2026-01-01T00:00:40Z");
        entity
            .__dispatch(
                &mut pause_ctx,
                "pause",
                &Payload::encode(&Pause { note: None }).unwrap(),
            )
            .unwrap();
        let ctx = ctx("2026-01-01T00:01:00Z");
        entity.tick(&ctx, stale);
        assert!(started(&ctx).is_empty());
        assert_eq!(entity.clone().status().unwrap().next_run_at, None);
    }

    #[test]
    fn a_month_of_missed_seconds_finds_the_latest_quickly() {
        let mut every_second = spec(Overlap::Skip);
        every_second.timing = Timing::Cron {
            cron: "* * * * * *".to_owned(),
            time_zone: None,
        };
        let latest = latest_tick(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-02-01T12:00:00.500Z"),
        );
        assert_eq!(latest, at("2026-02-01T12:00:00Z"));
    }
}

//! Durable schedules: an orchestrator started on a cron expression or a fixed interval.
//!
//! A schedule is a built-in entity (`duractor.schedule`, keyed by the schedule's id): its
//! state is the [`ScheduleSpec`] and what it has run; it wakes itself with a durable signal
//! at its next tick and starts that tick's run, with the id `{schedule}@{tick}`, in the same
//! commit that consumes the signal — so each tick runs once however many workers share the
//! store, and a restart loses nothing. Runs are started as the schedule's children, so the
//! schedule learns when each ends (for its overlap policy and its recent results).
//!
//! Build one with [`Schedule`]; create it with `Client::create_schedule` (or declare it on
//! the runtime builder, which reconciles it at startup); see the README's "Schedules".

pub mod cron;
mod entity;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Failure};
use crate::handles::Orchestrator;
use crate::payload::Payload;

pub use crate::clock::parse_duration;
pub use cron::Cron;
pub use entity::{RUN_FINISHED, RunFinished};
pub(crate) use entity::{ScheduleEntity, ScheduleOp};

/// The name of the built-in entity type that runs schedules.
pub const SCHEDULE_ENTITY: &str = "duractor.schedule";

/// The most runs one catch-up or backfill starts (the earliest are dropped beyond it).
pub const MAX_RUNS_AT_ONCE: usize = 1_000;

/// How many ended runs a schedule remembers.
pub const RECENT_RUNS: usize = 20;

/// What a tick does while an earlier run of the schedule is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Overlap {
    /// Skip the tick (counted in [`ScheduleStatus::skipped`]). The default.
    #[default]
    Skip,
    /// Keep one tick waiting and start it when the running one ends; further ticks are
    /// skipped.
    BufferOne,
    /// Start every tick, whatever is running.
    AllowAll,
    /// Terminate the running runs, then start the tick.
    TerminatePrevious,
}

/// Which ticks missed while no worker ran (or while one was late) still run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Only the latest missed tick runs. The default.
    #[default]
    Latest,
    /// Every missed tick no older than this runs (at most [`MAX_RUNS_AT_ONCE`]).
    Window(Duration),
}

/// When a schedule ticks. As JSON: `{"cron": {"cron": "0 3 * * *", "timeZone": "Europe/Paris"}}`
/// or `{"every": {"everyMs": 60000, "offsetMs": 0}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Timing {
    /// A cron expression (see [`cron`]), read in `time_zone` (an IANA name; `UTC` when
    /// absent).
    Cron {
        /// The expression.
        cron: String,
        /// The time zone it is read in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
    },
    /// Every `every_ms` milliseconds (at least one second), at `offset_ms` past each multiple
    /// of it since the Unix epoch — so every worker and every restart agrees on the ticks.
    Every {
        /// The interval.
        every_ms: u64,
        /// The offset of the ticks from multiples of the interval.
        #[serde(default)]
        offset_ms: u64,
    },
}

/// A schedule as it is stored and as the HTTP API takes it: checked by [`ScheduleSpec::check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// The schedule's id (an entity key: 1–256 bytes, no control characters).
    pub id: String,
    /// The orchestrator each tick starts.
    pub orchestrator: String,
    /// Its input.
    #[serde(default = "null_payload")]
    pub input: Payload,
    /// When it ticks.
    pub timing: Timing,
    /// Each tick's run starts up to this much later (a delay derived from the schedule's id
    /// and the tick, so it spreads schedules that share a timing).
    #[serde(default)]
    pub jitter_ms: u64,
    /// What a tick does while a run is still running.
    #[serde(default)]
    pub overlap: Overlap,
    /// Missed ticks no older than this run after downtime; `0`: only the latest.
    #[serde(default)]
    pub catch_up_window_ms: u64,
}

fn null_payload() -> Payload {
    Payload::null()
}

/// The longest interval, jitter or catch-up window: a year.
const MAX_SPAN_MS: u64 = 366 * 24 * 3_600_000;

impl ScheduleSpec {
    /// Checks every field; the error names the one that is wrong.
    pub fn check(&self) -> Result<(), Error> {
        crate::id::validate_entity_id(SCHEDULE_ENTITY, &self.id)
            .map_err(|e| invalid(&self.id, format!("its id: {e}")))?;
        let now = Utc::now();
        match &self.timing {
            Timing::Cron { cron, time_zone } => {
                let parsed = Cron::parse(cron).map_err(|e| invalid(&self.id, e))?;
                let tz = time_zone_of(time_zone.as_deref()).map_err(|e| invalid(&self.id, e))?;
                if parsed.next_after(now, tz).is_none() {
                    return Err(invalid(
                        &self.id,
                        format!("cron expression `{cron}` matches no time in the next five years"),
                    ));
                }
            }
            Timing::Every {
                every_ms,
                offset_ms,
            } => {
                if *every_ms < 1_000 {
                    return Err(invalid(
                        &self.id,
                        format!(
                            "an interval of {every_ms} ms is too short; schedules tick at most \
                             once a second"
                        ),
                    ));
                }
                if *every_ms > MAX_SPAN_MS {
                    return Err(invalid(
                        &self.id,
                        format!("an interval of {every_ms} ms is longer than a year"),
                    ));
                }
                if offset_ms >= every_ms {
                    return Err(invalid(
                        &self.id,
                        format!(
                            "the offset ({offset_ms} ms) must be shorter than the interval \
                             ({every_ms} ms)"
                        ),
                    ));
                }
            }
        }
        for (what, ms) in [
            ("jitter", self.jitter_ms),
            ("catch-up window", self.catch_up_window_ms),
        ] {
            if ms > MAX_SPAN_MS {
                return Err(invalid(
                    &self.id,
                    format!("a {what} of {ms} ms is longer than a year"),
                ));
            }
        }
        Ok(())
    }

    /// The first tick strictly after `after` (`None`: the cron expression matches no later
    /// time). A spec that failed [`check`](Self::check) has no ticks.
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.timing {
            Timing::Cron { cron, time_zone } => {
                let cron = Cron::parse(cron).ok()?;
                let tz = time_zone_of(time_zone.as_deref()).ok()?;
                cron.next_after(after, tz)
            }
            Timing::Every {
                every_ms,
                offset_ms,
            } => {
                let every = i64::try_from(*every_ms).ok()?.max(1);
                let offset = i64::try_from(*offset_ms).ok()?;
                let since = after.timestamp_millis() - offset;
                let next = (since.div_euclid(every) + 1) * every + offset;
                DateTime::from_timestamp_millis(next)
            }
        }
    }

    /// When the run of `tick` starts: the tick plus its jitter.
    pub(crate) fn fire_at(&self, tick: DateTime<Utc>) -> DateTime<Utc> {
        if self.jitter_ms == 0 {
            return tick;
        }
        // FNV-1a of the id and the tick: the same delay on every worker and every replay.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.id.bytes().chain(tick.timestamp_millis().to_le_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        let delay = hash % self.jitter_ms;
        tick + chrono::Duration::milliseconds(delay as i64)
    }
}

/// The time zone named `name` (`UTC` when `None`).
pub fn time_zone_of(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None => Ok(Tz::UTC),
        Some(name) => name.parse().map_err(|_| {
            format!(
                "unknown time zone `{name}`; use an IANA name such as `Europe/Paris`, \
                 `America/New_York` or `UTC`"
            )
        }),
    }
}

fn invalid(id: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("schedule `{id}`: {why}"))
}

/// A schedule being built: what to start, when, and the policies. Create it with
/// `Client::create_schedule`, or declare it with `RuntimeBuilder::schedule`.
///
/// ```
/// # use duractor::prelude::*;
/// # use duractor::schedule::{Schedule, Overlap};
/// # #[orchestrator] async fn nightly_report(ctx: OrchestrationContext, day: String) -> Result<(), duractor::Error> { Ok(()) }
/// let schedule = Schedule::cron("nightly", "0 0 3 * * *")
///     .time_zone("Europe/Paris")
///     .overlap(Overlap::Skip)
///     .start(NightlyReport, "all".to_owned());
/// assert!(schedule.spec().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    id: String,
    timing: Timing,
    orchestrator: Option<(String, Result<Payload, String>)>,
    jitter: Duration,
    overlap: Overlap,
    catch_up: CatchUp,
}

impl Schedule {
    /// A schedule `id` ticking on cron expression `cron` (5 fields, or 6 with seconds), in UTC
    /// unless [`time_zone`](Self::time_zone) says otherwise.
    pub fn cron(id: impl Into<String>, cron: impl Into<String>) -> Self {
        Self::new(
            id,
            Timing::Cron {
                cron: cron.into(),
                time_zone: None,
            },
        )
    }

    /// A schedule `id` ticking every `interval` (at least a second), at multiples of it
    /// since the Unix epoch (shift them with [`offset`](Self::offset)).
    pub fn every(id: impl Into<String>, interval: Duration) -> Self {
        Self::new(
            id,
            Timing::Every {
                every_ms: millis(interval),
                offset_ms: 0,
            },
        )
    }

    fn new(id: impl Into<String>, timing: Timing) -> Self {
        Schedule {
            id: id.into(),
            timing,
            orchestrator: None,
            jitter: Duration::ZERO,
            overlap: Overlap::default(),
            catch_up: CatchUp::default(),
        }
    }

    /// The time zone a cron expression is read in (an IANA name such as `Europe/Paris`).
    pub fn time_zone(mut self, name: impl Into<String>) -> Self {
        if let Timing::Cron { time_zone, .. } = &mut self.timing {
            *time_zone = Some(name.into());
        }
        self
    }

    /// Shifts an interval's ticks by `offset` (shorter than the interval).
    pub fn offset(mut self, offset: Duration) -> Self {
        if let Timing::Every { offset_ms, .. } = &mut self.timing {
            *offset_ms = millis(offset);
        }
        self
    }

    /// Starts each run up to `jitter` after its tick.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// What a tick does while an earlier run is still running (default [`Overlap::Skip`]).
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// Which missed ticks run after downtime (default [`CatchUp::Latest`]).
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Each tick starts `orchestrator` with `input`.
    pub fn start<O: Orchestrator>(mut self, _orchestrator: O, input: O::Input) -> Self {
        let input = Payload::encode(&input).map_err(|e| e.to_string());
        self.orchestrator = Some((O::NAME.to_owned(), input));
        self
    }

    /// Each tick starts the orchestrator named `name` with a JSON `input`.
    pub fn start_by_name(mut self, name: impl Into<String>, input: serde_json::Value) -> Self {
        let input = Payload::encode(&input).map_err(|e| e.to_string());
        self.orchestrator = Some((name.into(), input));
        self
    }

    /// The checked spec (the stored form).
    pub fn spec(&self) -> Result<ScheduleSpec, Error> {
        let Some((orchestrator, input)) = &self.orchestrator else {
            return Err(invalid(
                &self.id,
                "it starts nothing; say what with `.start(Orchestrator, input)`",
            ));
        };
        let input = input
            .clone()
            .map_err(|e| invalid(&self.id, format!("its input cannot be serialized: {e}")))?;
        let spec = ScheduleSpec {
            id: self.id.clone(),
            orchestrator: orchestrator.clone(),
            input,
            timing: self.timing.clone(),
            jitter_ms: millis(self.jitter),
            overlap: self.overlap,
            catch_up_window_ms: match self.catch_up {
                CatchUp::Latest => 0,
                CatchUp::Window(window) => millis(window).max(1),
            },
        };
        spec.check()?;
        Ok(spec)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5").unwrap_err().contains("without a unit"));
        assert!(
            parse_duration("5w")
                .unwrap_err()
                .contains("`w` in `5w` is not a unit")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("is not a duration")
        );
    }

    #[test]
    fn intervals_tick_on_multiples_and_jitter_is_stable() {
        let mut spec = ScheduleSpec {
            id: "i".to_owned(),
            orchestrator: "o".to_owned(),
            input: Payload::null(),
            timing: Timing::Every {
                every_ms: 60_000,
                offset_ms: 15_000,
            },
            jitter_ms: 0,
            overlap: Overlap::Skip,
            catch_up_window_ms: 0,
        };
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            spec.next_tick(at("2026-01-01T00:00:15Z")),
            Some(at("2026-01-01T00:01:15Z"))
        );
        assert_eq!(
            spec.next_tick(at("2026-01-01T00:00:14.999Z")),
            Some(at("2026-01-01T00:00:15Z"))
        );
        spec.jitter_ms = 10_000;
        let tick = at("2026-01-01T00:01:15Z");
        let fire = spec.fire_at(tick);
        assert!(fire >= tick && fire < tick + chrono::Duration::seconds(10));
        assert_eq!(fire, spec.fire_at(tick), "the same delay every time");
    }
}

/// How one run of a schedule went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunOutcome {
    /// Started and not ended yet.
    Running,
    /// Waiting for the running one to end ([`Overlap::BufferOne`]).
    Buffered,
    /// Completed.
    Completed,
    /// Failed, or was terminated.
    Failed,
    /// Not started: a run was still running ([`Overlap::Skip`], or a second buffered tick).
    Skipped,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRun {
    /// The instance id (`{schedule}@{tick}`; `{schedule}@{time}-now` for a trigger).
    pub instance_id: String,
    /// The tick it is for.
    pub tick: DateTime<Utc>,
    /// How it went.
    pub outcome: RunOutcome,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The schedule's number for it (its child call number).
    #[serde(default)]
    pub seq: u64,
}

/// A schedule's spec and what it has run, as `Client::schedule` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// What it runs and when.
    pub spec: ScheduleSpec,
    /// Paused: ticks do nothing until it is resumed.
    pub paused: bool,
    /// Why it was paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its next tick (`None` while paused).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Runs started and not ended.
    pub running: Vec<ScheduleRun>,
    /// A tick waiting for the running run to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<ScheduleRun>,
    /// The last runs that ended or were skipped, newest last.
    pub recent: Vec<ScheduleRun>,
    /// How many runs it has started.
    pub started: u64,
    /// How many ticks it skipped.
    pub skipped: u64,
}

//! The commands of running on time and at the allowed rate: `schedule` (create, update,
//! list, show, pause, resume, trigger, backfill, delete; changes are applied by a worker
//! moments later, as signals to the schedule) and `flow` (flow-controlled work).

use std::process::ExitCode;

use super::args::{FlowArgs, ScheduleCommand, ScheduleSpecArgs};
use super::output::{self, CliError, CliResult, print_json};
use crate::client::Client;
use crate::error::Error;
use crate::payload::Payload;
use crate::schedule::{Overlap, ScheduleRun, ScheduleSpec, ScheduleStatus, Timing, parse_duration};
use crate::store::FlowKind;

pub(super) async fn run(command: ScheduleCommand, client: Client) -> CliResult {
    match command {
        ScheduleCommand::Create(args) => {
            let spec = spec_of(args)?;
            let id = spec.id.clone();
            client.create_schedule_spec(spec).await?;
            println!("created schedule {id}");
        }
        ScheduleCommand::Update(args) => {
            let spec = spec_of(args)?;
            let id = spec.id.clone();
            client.update_schedule_spec(spec).await?;
            println!("updated schedule {id}");
        }
        ScheduleCommand::List(args) => {
            let schedules = client.list_schedules().await?;
            if args.json {
                print_json(&serde_json::json!({ "schedules": schedules }))?;
            } else {
                print!("{}", list(&schedules));
            }
        }
        ScheduleCommand::Show(args) => {
            let Some(status) = client.schedule(&args.id).await? else {
                return Err(Error::ScheduleNotFound(args.id).into());
            };
            if args.json {
                print_json(&status)?;
            } else {
                print!("{}", show(&status));
            }
        }
        ScheduleCommand::Pause(args) => {
            client
                .pause_schedule(&args.id, args.note.as_deref())
                .await?;
            println!("paused schedule {}", args.id);
        }
        ScheduleCommand::Resume(args) => {
            client.resume_schedule(&args.id).await?;
            println!("resumed schedule {}", args.id);
        }
        ScheduleCommand::Trigger(args) => {
            client.trigger_schedule(&args.id).await?;
            println!("triggered schedule {}", args.id);
        }
        ScheduleCommand::Backfill(args) => {
            let time = |flag: &str, text: &str| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| {
                        CliError::usage(format!("--{flag} `{text}` is not an RFC 3339 time: {e}"))
                    })
            };
            let (from, to) = (time("from", &args.from)?, time("to", &args.to)?);
            client.backfill_schedule(&args.id, from, to).await?;
            println!("backfilling schedule {} from {from} to {to}", args.id);
        }
        ScheduleCommand::Delete(args) => {
            client.delete_schedule(&args.id).await?;
            println!("deleted schedule {}", args.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn duration_ms(flag: &str, text: Option<&str>) -> Result<u64, CliError> {
    let Some(text) = text else { return Ok(0) };
    let duration = parse_duration(text).map_err(|e| CliError::usage(format!("--{flag}: {e}")))?;
    Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn spec_of(args: ScheduleSpecArgs) -> Result<ScheduleSpec, CliError> {
    let timing = match (&args.cron, &args.every) {
        (Some(cron), _) => Timing::Cron {
            cron: cron.clone(),
            time_zone: args.time_zone.clone(),
        },
        (None, every) => Timing::Every {
            every_ms: duration_ms("every", every.as_deref())?,
            offset_ms: duration_ms("offset", args.offset.as_deref())?,
        },
    };
    let input = Payload::from_json(args.input.as_str()).map_err(|e| {
        Error::invalid_payload(
            format!("input of schedule `{}` (not valid JSON)", args.id),
            e,
        )
    })?;
    let overlap = match args.overlap.as_str() {
        "buffer-one" => Overlap::BufferOne,
        "allow-all" => Overlap::AllowAll,
        "terminate-previous" => Overlap::TerminatePrevious,
        _ => Overlap::Skip,
    };
    Ok(ScheduleSpec {
        jitter_ms: duration_ms("jitter", args.jitter.as_deref())?,
        catch_up_window_ms: duration_ms("catch-up-window", args.catch_up_window.as_deref())?,
        id: args.id,
        orchestrator: args.start,
        input,
        timing,
        overlap,
    })
}

fn timing(spec: &ScheduleSpec) -> String {
    match &spec.timing {
        Timing::Cron { cron, time_zone } => match time_zone {
            Some(zone) => format!("cron {cron} ({zone})"),
            None => format!("cron {cron}"),
        },
        Timing::Every { every_ms, .. } => format!("every {every_ms} ms"),
    }
}

fn next_run(status: &ScheduleStatus) -> String {
    match (status.paused, status.next_run_at) {
        (true, _) => "paused".to_owned(),
        (false, Some(at)) => output::time(at),
        (false, None) => "-".to_owned(),
    }
}

fn list(schedules: &[ScheduleStatus]) -> String {
    let mut rows = vec![vec![
        "ID".to_owned(),
        "ORCHESTRATOR".to_owned(),
        "TIMING".to_owned(),
        "NEXT RUN".to_owned(),
        "RUNNING".to_owned(),
        "STARTED".to_owned(),
        "SKIPPED".to_owned(),
    ]];
    for status in schedules {
        rows.push(vec![
            status.spec.id.clone(),
            status.spec.orchestrator.clone(),
            timing(&status.spec),
            next_run(status),
            status.running.len().to_string(),
            status.started.to_string(),
            status.skipped.to_string(),
        ]);
    }
    output::table(&rows)
}

fn show(status: &ScheduleStatus) -> String {
    let spec = &status.spec;
    let mut out = format!(
        "schedule      {}\norchestrator  {}\ntiming        {}\noverlap       {:?}\nnext run      {}\nstarted       {}\nskipped       {}\n",
        spec.id,
        spec.orchestrator,
        timing(spec),
        spec.overlap,
        next_run(status),
        status.started,
        status.skipped,
    );
    if let Some(note) = &status.note {
        out.push_str(&format!("note          {note}\n"));
    }
    let runs: Vec<&ScheduleRun> = status
        .running
        .iter()
        .chain(&status.buffered)
        .chain(status.recent.iter().rev())
        .collect();
    if !runs.is_empty() {
        let mut rows = vec![vec![
            "RUN".to_owned(),
            "TICK".to_owned(),
            "OUTCOME".to_owned(),
        ]];
        for run in runs {
            let outcome = match &run.failure {
                Some(failure) => format!("{:?}: {failure}", run.outcome),
                None => format!("{:?}", run.outcome),
            };
            rows.push(vec![
                run.instance_id.clone(),
                output::time(run.tick),
                outcome,
            ]);
        }
        out.push('\n');
        out.push_str(&output::table(&rows));
    }
    out
}

/// `flow`: running and waiting work per flow-controlled activity or orchestrator and key,
/// with its limits.
pub(super) async fn flow(args: FlowArgs, client: Client) -> CliResult {
    let names: Vec<&str> = args.name.iter().map(String::as_str).collect();
    let flow = client.flow_status(&names).await?;
    if args.json {
        print_json(&serde_json::json!({ "flow": flow }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let activities = client.flow_limits();
    let orchestrators = client.orchestrator_flow_limits();
    let limits = |status: &crate::store::FlowStatus| {
        let in_force = match status.kind {
            FlowKind::Activity => &activities,
            FlowKind::Orchestration => &orchestrators,
        };
        let Some(limits) = in_force.get(&status.name) else {
            return "-".to_owned();
        };
        let mut parts = Vec::new();
        if let Some(max) = limits.concurrency {
            parts.push(format!("{max} at once"));
        }
        if let Some(rate) = limits.rate {
            parts.push(format!("{}/{}ms", rate.count, rate.period_ms));
        }
        if let Some(key) = &limits.key {
            parts.push(format!("per {key}"));
        }
        parts.join(", ")
    };
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "KEY".to_owned(),
        "RUNNING".to_owned(),
        "WAITING".to_owned(),
        "LIMITS".to_owned(),
        "KIND".to_owned(),
    ]];
    for status in &flow {
        rows.push(vec![
            status.name.clone(),
            status.key.clone().unwrap_or_else(|| "-".to_owned()),
            status.running.to_string(),
            status.waiting.to_string(),
            limits(status),
            match status.kind {
                FlowKind::Activity => "activity",
                FlowKind::Orchestration => "orchestrator",
            }
            .to_owned(),
        ]);
    }
    print!("{}", output::table(&rows));
    Ok(ExitCode::SUCCESS)
}

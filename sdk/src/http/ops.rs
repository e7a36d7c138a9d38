//! Operations routes: `GET /health`, `GET /metrics` (Prometheus text format), `GET /functions`,
//! `GET /flow` (flow-controlled work running and held back).

use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::view::FunctionsView;
use super::{ApiError, State, resource};
use crate::runtime::{HistogramSnapshot, MetricsSnapshot};
use crate::store::StoreStats;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health", &["GET"]).route(web::get().to(health)))
        .service(resource("/metrics", &["GET"]).route(web::get().to(metrics)))
        .service(resource("/functions", &["GET"]).route(web::get().to(functions)))
        .service(resource("/flow", &["GET"]).route(web::get().to(flow)));
}

#[derive(serde::Deserialize)]
struct FlowParams {
    name: Option<String>,
    /// The same as `name` (what the route took first).
    activity: Option<String>,
}

/// `GET /flow[?name=a,b]`: `{"flow": [{"kind", "name", "key", "running", "waiting"}]}` for the
/// activities and orchestrators named (default: those with limits), `kind` telling which.
async fn flow(
    req: actix_web::HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let params: FlowParams = super::orchestrations::query(&req)?;
    let names: Vec<&str> = [params.name.as_deref(), params.activity.as_deref()]
        .into_iter()
        .flatten()
        .flat_map(|list| list.split(','))
        .filter(|name| !name.is_empty())
        .collect();
    let flow = state.client.flow_status(&names).await?;
    Ok(HttpResponse::Ok().json(json!({ "flow": flow })))
}

/// 200 while the store answers, 503 when it does not.
async fn health(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    state.client.store().get_instance("").await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok", "worker": state.worker_id })))
}

async fn functions(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(FunctionsView::new(
        &state.registry,
        &state.client.flow_limits(),
        &state.client.orchestrator_flow_limits(),
    ))
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    let stats = state.client.store().stats().await;
    let mut text = render(&state.metrics.snapshot(), stats);
    match state.client.flow_status(&[]).await {
        Ok(flow) if !flow.is_empty() => text.push_str(&render_flow(&flow)),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "reading flow-control counts for /metrics failed"),
    }
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(text)
}

/// The flow-control gauges: work items running and waiting, per limited activity and key.
fn render_flow(flow: &[crate::store::FlowStatus]) -> String {
    let mut out = String::new();
    let label = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    for (name, help, value) in [
        (
            "duractor_flow_running",
            "Attempts of flow-controlled activities running (by activity and key); instances of flow-controlled orchestrators let run and not finished (by orchestrator and key).",
            (|s: &crate::store::FlowStatus| s.running) as fn(&crate::store::FlowStatus) -> u32,
        ),
        (
            "duractor_flow_waiting",
            "Work items of flow-controlled activities waiting (held back by a limit, or not claimed yet), by activity and key; instances of flow-controlled orchestrators held back (Pending), by orchestrator and key.",
            |s: &crate::store::FlowStatus| s.waiting,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for status in flow {
            let _ = writeln!(
                out,
                "{name}{{{}=\"{}\",key=\"{}\"}} {}",
                match status.kind {
                    crate::store::FlowKind::Activity => "activity",
                    crate::store::FlowKind::Orchestration => "orchestrator",
                },
                label(&status.name),
                label(status.key.as_deref().unwrap_or("")),
                value(status)
            );
        }
    }
    out
}

/// The Prometheus text exposition of a runtime's metrics and its store's counts.
pub(crate) fn render(
    m: &MetricsSnapshot,
    stats: Result<Option<StoreStats>, crate::Error>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "duractor_turns_total",
        "counter",
        "Orchestration turns committed.",
        &[("", m.turns)],
    );
    metric(
        "duractor_turn_commits_total",
        "counter",
        "Commits of orchestration turns (several turns may share one).",
        &[("", m.turn_commits)],
    );
    metric(
        "duractor_turn_commit_failures_total",
        "counter",
        "Turn commits that failed and were retried or handed over.",
        &[("", m.turn_commit_failures)],
    );
    metric(
        "duractor_replays_total",
        "counter",
        "Instances loaded from history and replayed.",
        &[("", m.replays)],
    );
    metric(
        "duractor_instances_finished_total",
        "counter",
        "Instances this worker finished, by final status.",
        &[
            ("{status=\"Completed\"}", m.instances_completed),
            ("{status=\"Failed\"}", m.instances_failed),
            ("{status=\"Terminated\"}", m.instances_terminated),
        ],
    );
    metric(
        "duractor_activity_executions_total",
        "counter",
        "Activity executions, by outcome.",
        &[
            ("{outcome=\"completed\"}", m.activities_completed),
            ("{outcome=\"failed\"}", m.activities_failed),
        ],
    );
    metric(
        "duractor_activity_attempts_stopped_total",
        "counter",
        "Activity attempts stopped before they returned, by why: a timeout, or cancelled because the orchestration no longer needed them.",
        &[
            ("{reason=\"timeout\"}", m.activities_timed_out),
            ("{reason=\"cancelled\"}", m.activities_cancelled),
        ],
    );
    metric(
        "duractor_activity_heartbeats_total",
        "counter",
        "Activity heartbeats stored.",
        &[("", m.activity_heartbeats)],
    );
    metric(
        "duractor_activity_claims_total",
        "counter",
        "Claims of activity work items sent to the store.",
        &[("", m.activity_claims)],
    );
    metric(
        "duractor_activity_quick_attempts_total",
        "counter",
        "Activity attempts of quick activities started where their instance runs.",
        &[("", m.activities_quick)],
    );
    metric(
        "duractor_instances_loaded",
        "gauge",
        "Instances held in memory by this worker.",
        &[("", m.instances_loaded)],
    );
    metric(
        "duractor_activities_running",
        "gauge",
        "Activities running in this worker.",
        &[("", m.activities_running)],
    );
    metric(
        "duractor_activities_waiting",
        "gauge",
        "Activities waiting in this worker for a free slot.",
        &[("", m.activities_queued)],
    );
    match stats {
        Ok(Some(stats)) => {
            metric(
                "duractor_queue_depth",
                "gauge",
                "Items in the store's queues: orchestration messages ready now, timers not yet due, activity work items.",
                &[
                    ("{queue=\"orchestration\"}", stats.messages_ready),
                    ("{queue=\"timers\"}", stats.messages_delayed),
                    ("{queue=\"activities\"}", stats.activity_items),
                ],
            );
            let labels: Vec<(String, u64)> = stats
                .instances
                .iter()
                .map(|(status, n)| (format!("{{status=\"{status}\"}}"), *n))
                .collect();
            let samples: Vec<(&str, u64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
            metric(
                "duractor_instances",
                "gauge",
                "Instances in the store, by status.",
                &samples,
            );
            metric(
                "duractor_store_up",
                "gauge",
                "1 if the store answered the metrics query.",
                &[("", 1)],
            );
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "reading store counts for /metrics failed");
            metric(
                "duractor_store_up",
                "gauge",
                "1 if the store answered the metrics query.",
                &[("", 0)],
            );
        }
    }
    histogram(
        &mut out,
        "duractor_turn_duration_seconds",
        "From the start of an orchestration turn to its commit.",
        &m.turn_latency,
    );
    histogram(
        &mut out,
        "duractor_activity_duration_seconds",
        "How long activity functions ran.",
        &m.activity_latency,
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, count) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let snapshot = MetricsSnapshot {
            turns: 7,
            ..Default::default()
        };
        let stats = StoreStats::new(1, 2, 3, vec![(crate::RuntimeStatus::Running, 4)]);
        let text = render(&snapshot, Ok(Some(stats)));
        assert!(text.contains("# TYPE duractor_turns_total counter\nduractor_turns_total 7\n"));
        assert!(text.contains("duractor_queue_depth{queue=\"timers\"} 2\n"));
        assert!(text.contains("duractor_instances{status=\"Running\"} 4\n"));
        assert!(text.contains("duractor_turn_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    }
}

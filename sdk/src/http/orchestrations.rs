//! Orchestration routes: start, status, list, raise event, terminate, suspend, resume,
//! rewind, restart, purge.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::links::{instance_url, path_param};
use super::paging::Page;
use super::view::{self, StatusView};
use super::{ApiError, State, body_json, read_body, resource};
use crate::client::{IfExists, ListQuery, PurgeQuery};
use crate::payload::Payload;
use crate::store::RuntimeStatus;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/orchestrators/{name}", &["POST"]).route(web::post().to(start)))
        .service(
            resource("/orchestrators/{name}/{instance_id}", &["POST"]).route(web::post().to(start)),
        )
        .service(
            resource(
                "/orchestrators/{name}/{instance_id}/signalWithStart/{event}",
                &["POST"],
            )
            .route(web::post().to(signal_with_start)),
        )
        .service(
            resource("/instances", &["GET", "DELETE"])
                .route(web::get().to(list))
                .route(web::delete().to(purge_many)),
        )
        .service(
            resource("/instances/{id}", &["GET", "DELETE"])
                .route(web::get().to(status))
                .route(web::delete().to(purge_one)),
        )
        .service(
            resource("/instances/{id}/raiseEvent/{event}", &["POST"])
                .route(web::post().to(raise_event)),
        )
        .service(resource("/instances/{id}/terminate", &["POST"]).route(web::post().to(terminate)))
        .service(resource("/instances/{id}/suspend", &["POST"]).route(web::post().to(suspend)))
        .service(resource("/instances/{id}/resume", &["POST"]).route(web::post().to(resume)))
        .service(resource("/instances/{id}/rewind", &["POST"]).route(web::post().to(rewind)))
        .service(resource("/instances/{id}/restart", &["POST"]).route(web::post().to(restart)))
        .service(resource("/instances/{id}/waiting", &["GET"]).route(web::get().to(waiting)))
        .service(resource("/instances/{id}/activities", &["GET"]).route(web::get().to(activities)));
}

/// Parses the query string into `T`, or a 400 `invalid_query`.
pub(super) fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(ApiError::invalid_query)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartParams {
    /// `reject` (default), `replaceIfFailed`, `terminateRunning`, `useExisting`.
    if_exists: Option<String>,
}

/// `POST /orchestrators/{name}[/{instance_id}][?ifExists=..]`: the body is the input (empty =
/// `null`).
async fn start(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let params: StartParams = query(&req)?;
    let body = read_body(&req, body, state.max_body_bytes).await?;
    let input = body_json(&body)?;
    let name = path_param(&req, "name")?;
    let mut start = state.client.start_by_name(&name, input);
    if req.match_info().get("instance_id").is_some() {
        start = start.instance_id(path_param(&req, "instance_id")?);
    }
    if let Some(policy) = params.if_exists {
        start = start.if_exists(policy.parse::<IfExists>()?);
    }
    let id = start.await?;
    check_status_response(&req, &state, &id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// The body of a signal-with-start.
struct SignalWithStartBody {
    /// The orchestration's input, if this starts it.
    #[serde(default)]
    input: serde_json::Value,
    /// The event's data.
    #[serde(default)]
    data: serde_json::Value,
}

/// `POST /orchestrators/{name}/{instance_id}/signalWithStart/{event}`: the body is
/// `{"input": .., "data": ..}`. Raises the event to the instance, starting it with the input
/// first if it does not exist; 202 with the check-status payload and `"started"`.
async fn signal_with_start(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, body, state.max_body_bytes).await?;
    let parsed: Option<SignalWithStartBody> =
        serde_json::from_str(body_json(&body)?).map_err(|e| {
            crate::Error::invalid_payload(
                "signal-with-start body (expected {\"input\": .., \"data\": ..})",
                e,
            )
        })?;
    let parsed = parsed.unwrap_or(SignalWithStartBody {
        input: serde_json::Value::Null,
        data: serde_json::Value::Null,
    });
    let name = path_param(&req, "name")?;
    let id = path_param(&req, "instance_id")?;
    let event = path_param(&req, "event")?;
    let data = Payload::encode(&parsed.data)
        .map_err(|e| crate::Error::invalid_payload(format!("data of event `{event}`"), e))?;
    let started = state
        .client
        .signal_with_start_by_name(&name, &parsed.input.to_string(), &id, &event, data)
        .await?;
    let mut body = check_status_body(&req, &state, &id)?;
    body["started"] = json!(started);
    let instance = instance_url(&req, &state, &id)?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, instance))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(body))
}

/// 202 Accepted with `Location` and the URLs to manage the instance (the async HTTP API
/// pattern's check-status payload, with Durable Functions' field names).
fn check_status_response(
    req: &HttpRequest,
    state: &State,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_url(req, state, id)?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, instance))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(check_status_body(req, state, id)?))
}

/// The check-status payload: the URLs to manage instance `id`.
fn check_status_body(
    req: &HttpRequest,
    state: &State,
    id: &str,
) -> Result<serde_json::Value, ApiError> {
    let instance = instance_url(req, state, id)?;
    Ok(json!({
        "id": id,
        "statusQueryGetUri": instance,
        "sendEventPostUri": format!("{instance}/raiseEvent/{{eventName}}"),
        "terminatePostUri": format!("{instance}/terminate?reason={{text}}"),
        "suspendPostUri": format!("{instance}/suspend?reason={{text}}"),
        "resumePostUri": format!("{instance}/resume?reason={{text}}"),
        "rewindPostUri": format!("{instance}/rewind?reason={{text}}"),
        "restartPostUri": format!("{instance}/restart"),
        "purgeHistoryDeleteUri": instance,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusParams {
    show_input: Option<bool>,
    show_history: Option<bool>,
    show_history_output: Option<bool>,
    return_internal_server_error_on_failure: Option<bool>,
}

/// `GET /instances/{id}`: 200 when finished, 202 while pending, running or suspended; with
/// `returnInternalServerErrorOnFailure=true`, 500 when Failed (as Durable Functions does).
async fn status(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: StatusParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    let status = state.client.status(id).await?;
    let finished = status.is_finished();
    let failed = status.status == RuntimeStatus::Failed;
    let mut view = StatusView::new(status, params.show_input.unwrap_or(true));
    if params.show_history.unwrap_or(false) {
        let history = state.client.history(id).await?;
        view.history_events = Some(view::history(
            &history,
            params.show_history_output.unwrap_or(false),
        ));
    }
    if failed
        && params
            .return_internal_server_error_on_failure
            .unwrap_or(false)
    {
        return Ok(HttpResponse::InternalServerError().json(view));
    }
    if finished {
        return Ok(HttpResponse::Ok().json(view));
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, instance_url(&req, &state, id)?))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(view))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    runtime_status: Option<String>,
    instance_id_prefix: Option<String>,
    name: Option<String>,
    created_time_from: Option<String>,
    created_time_to: Option<String>,
    top: Option<u32>,
    continuation_token: Option<String>,
    show_input: Option<bool>,
}

/// `GET /instances`: `{"instances": [...], "continuationToken": "..." | null}`; the token
/// (also in the `x-ms-continuation-token` header) fetches the next page.
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ListParams = query(&req)?;
    let page = Page::new(&req, params.top, params.continuation_token)?;
    let Some(statuses) = statuses(params.runtime_status.as_deref())? else {
        let none: Vec<crate::client::InstanceStatus> = Vec::new();
        return Ok(page.respond(
            none,
            "instances",
            |i| i.instance_id.clone(),
            |s| StatusView::new(s, false),
        ));
    };
    let instances = state
        .client
        .list(ListQuery {
            statuses,
            instance_id_prefix: params.instance_id_prefix,
            name: params.name.filter(|name| !name.is_empty()),
            created_from: time_param("createdTimeFrom", params.created_time_from)?,
            created_to: time_param("createdTimeTo", params.created_time_to)?,
            limit: Some(page.fetch()),
            after: page.token.clone(),
        })
        .await?;
    let show_input = params.show_input.unwrap_or(true);
    Ok(page.respond(
        instances,
        "instances",
        |i| i.instance_id.clone(),
        |status| StatusView::new(status, show_input),
    ))
}

/// The `runtimeStatus` filter: the statuses to match (empty: all), or `None` when it names
/// only Durable Functions statuses duractor never reports (`ContinuedAsNew`: an instance that
/// continues as new stays Running; `Canceled`: unused in DF too), which match nothing.
fn statuses(param: Option<&str>) -> Result<Option<Vec<RuntimeStatus>>, ApiError> {
    let mut statuses = Vec::new();
    let mut never_reported = false;
    for name in param.unwrap_or("").split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if name.eq_ignore_ascii_case("ContinuedAsNew") || name.eq_ignore_ascii_case("Canceled") {
            never_reported = true;
            continue;
        }
        statuses.push(name.parse::<RuntimeStatus>().map_err(|_| {
            ApiError::invalid_query(format!(
                "unknown runtimeStatus `{name}`; expected Pending, Running, Completed, Failed, \
                 Terminated, Suspended (ContinuedAsNew and Canceled are accepted and match nothing)"
            ))
        })?);
    }
    if statuses.is_empty() && never_reported {
        Ok(None)
    } else {
        Ok(Some(statuses))
    }
}

pub(super) fn time_param(
    name: &str,
    value: Option<String>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|value| {
            DateTime::parse_from_rfc3339(&value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid_query(format!(
                        "{name} must be an RFC 3339 time such as 2025-01-31T12:00:00Z, not `{value}` ({e})"
                    ))
                })
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurgeParams {
    runtime_status: Option<String>,
    created_time_from: Option<String>,
    created_time_to: Option<String>,
    all: Option<bool>,
}

/// `DELETE /instances`: purges finished instances matching the filters.
async fn purge_many(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: PurgeParams = query(&req)?;
    let Some(statuses) = statuses(params.runtime_status.as_deref())? else {
        return Ok(HttpResponse::Ok().json(json!({ "instancesDeleted": 0 })));
    };
    if let Some(status) = statuses.iter().find(|s| !s.is_terminal()) {
        return Err(ApiError::invalid_query(format!(
            "only finished instances can be purged, so runtimeStatus cannot be {status}; use Completed, Failed or Terminated"
        )));
    }
    let query = PurgeQuery {
        instance_id: None,
        statuses,
        created_from: time_param("createdTimeFrom", params.created_time_from)?,
        created_to: time_param("createdTimeTo", params.created_time_to)?,
    };
    let filtered =
        !query.statuses.is_empty() || query.created_from.is_some() || query.created_to.is_some();
    if !filtered && !params.all.unwrap_or(false) {
        return Err(ApiError::invalid_query(
            "give runtimeStatus, createdTimeFrom or createdTimeTo, or all=true to purge every finished instance",
        ));
    }
    let deleted = state.client.purge_instances(&query).await?;
    Ok(HttpResponse::Ok().json(json!({ "instancesDeleted": deleted })))
}

/// `DELETE /instances/{id}`: purges one finished instance.
async fn purge_one(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = &path_param(&req, "id")?;
    if !state.client.purge(id).await? {
        return Err(crate::Error::InstanceNotFound(id.to_owned()).into());
    }
    Ok(HttpResponse::Ok().json(json!({ "instancesDeleted": 1 })))
}

/// `GET /instances/{id}/waiting`: the external events the instance's code waits for now,
/// found by replaying its history against this build's orchestrator (history records the
/// calls it waits on — activities, timers, sub-orchestrations, entities — but not event
/// waits). `{"instanceId", "events": [...]}`; `events` is empty once the instance finished,
/// and `null` with a `reason` when this build cannot replay it.
async fn waiting(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    let status = state.client.status(&id).await?;
    if status.is_finished() {
        return Ok(HttpResponse::Ok().json(json!({ "instanceId": id, "events": [] })));
    }
    let history = state.client.history(&id).await?;
    let entry = match state.registry.get_orchestrator(&status.name) {
        Ok(entry) => *entry,
        Err(error) => {
            return Ok(HttpResponse::Ok().json(json!({
                "instanceId": id, "events": null, "reason": error.to_string()
            })));
        }
    };
    let mut answer = match crate::orchestration::check_history_and_waits(&entry, &id, &history) {
        Ok(events) => json!({ "instanceId": id, "events": events }),
        Err(failure) => json!({ "instanceId": id, "events": null, "reason": failure.message }),
    };
    if history.is_empty()
        && let Some(flow) = held_by(&state, &status).await?
    {
        answer["flowControl"] = flow;
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Why a Pending instance that has not started may be waiting: its orchestrator's limits
/// in force here, and what runs and waits under them for its key.
async fn held_by(
    state: &State,
    status: &crate::store::InstanceStatus,
) -> Result<Option<serde_json::Value>, ApiError> {
    let limits = state.client.orchestrator_flow_limits();
    let Some(limits) = limits.get(&status.name) else {
        return Ok(None);
    };
    let key = limits.key_of(&status.input);
    let counts = state.client.flow_status(&[status.name.as_str()]).await?;
    let here = counts.iter().find(|row| {
        row.kind == crate::store::FlowKind::Orchestration
            && row.name == status.name
            && row.key == key
    });
    Ok(Some(json!({
        "orchestrator": status.name,
        "key": key,
        "limits": limits,
        "running": here.map_or(0, |row| row.running),
        "waiting": here.map_or(0, |row| row.waiting),
    })))
}

/// `GET /instances/{id}/activities`: the instance's activity calls in flight, with their
/// attempt, worker, timeouts and last heartbeat.
async fn activities(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    let items = state.client.activities(&id).await?;
    let activities = view::activities(&items);
    Ok(HttpResponse::Ok().json(json!({ "instanceId": id, "activities": activities })))
}

/// `POST /instances/{id}/raiseEvent/{event}`: the body is the event data (empty = `null`).
/// 410 if the instance has finished (nothing would receive the event).
async fn raise_event(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, body, state.max_body_bytes).await?;
    let id = &path_param(&req, "id")?;
    let event = &path_param(&req, "event")?;
    let data = Payload::from_json(body_json(&body)?).map_err(|e| {
        crate::Error::invalid_payload(format!("data of event `{event}` (not valid JSON)"), e)
    })?;
    state.client.raise_event(id, event, &data).await?;
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Deserialize)]
struct ReasonParams {
    reason: Option<String>,
    cascade: Option<bool>,
}

fn reason(params: &ReasonParams, default: &str) -> String {
    params
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `POST /instances/{id}/terminate?reason=..&cascade=true`.
async fn terminate(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ReasonParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    state
        .client
        .terminate(id, &reason(&params, "terminated over HTTP"))
        .cascade(params.cascade.unwrap_or(false))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /instances/{id}/suspend?reason=..`.
async fn suspend(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ReasonParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    state
        .client
        .suspend(id, &reason(&params, "suspended over HTTP"))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /instances/{id}/resume?reason=..`.
async fn resume(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ReasonParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    state
        .client
        .resume(id, &reason(&params, "resumed over HTTP"))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /instances/{id}/rewind?reason=..`.
async fn rewind(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ReasonParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    state
        .client
        .rewind(id, &reason(&params, "rewound over HTTP"))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartParams {
    restart_with_new_instance_id: Option<bool>,
}

/// `POST /instances/{id}/restart?restartWithNewInstanceId=true`: 202 with the new run's links.
async fn restart(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: RestartParams = query(&req)?;
    let id = &path_param(&req, "id")?;
    let new_id = state
        .client
        .restart(id, params.restart_with_new_instance_id.unwrap_or(false))
        .await?;
    check_status_response(&req, &state, &new_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_parse_case_insensitively() {
        assert_eq!(
            statuses(Some("running, Completed")).ok(),
            Some(Some(vec![RuntimeStatus::Running, RuntimeStatus::Completed]))
        );
        assert!(statuses(Some("Sleeping")).is_err());
        assert_eq!(statuses(None).ok(), Some(Some(vec![])));
    }

    #[test]
    fn durable_functions_statuses_duractor_never_reports_match_nothing() {
        assert_eq!(statuses(Some("ContinuedAsNew")).ok(), Some(None));
        assert_eq!(statuses(Some("Canceled,continuedasnew")).ok(), Some(None));
        assert_eq!(
            statuses(Some("Canceled,Failed")).ok(),
            Some(Some(vec![RuntimeStatus::Failed]))
        );
    }
}

//! Schedule routes: create, read, list, update, pause, resume, trigger, backfill, delete.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /schedules` | every schedule: spec, paused, next run, running and recent runs (200) |
//! | `POST /schedules` | creates one; the body is a [`ScheduleSpec`] (202; 409 `schedule_exists`) |
//! | `GET /schedules/{id}` | one schedule (200; 404 `schedule_not_found`) |
//! | `PUT /schedules/{id}` | replaces its spec; the body's `id` may be left out (202) |
//! | `DELETE /schedules/{id}` | deletes it; runs already started go on (202) |
//! | `POST /schedules/{id}/pause?note=`, `/resume`, `/trigger` | pause, resume, run now (202) |
//! | `POST /schedules/{id}/backfill?from=&to=` | runs every tick of a past range (202) |
//!
//! A change is applied by a worker moments after the 202 (it is a signal to the schedule).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::links::path_param;
use super::orchestrations::{query, time_param};
use super::{ApiError, State, body_json, read_body, resource};
use crate::schedule::ScheduleSpec;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/schedules", &["GET", "POST"])
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/schedules/{id}", &["GET", "PUT", "DELETE"])
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    )
    .service(resource("/schedules/{id}/{action}", &["POST"]).route(web::post().to(act)));
}

/// Reads a [`ScheduleSpec`] from the body; `id` fills in a missing `"id"` and must match a
/// given one.
async fn spec_of(
    req: &HttpRequest,
    state: &State,
    body: web::Payload,
    id: Option<&str>,
) -> Result<ScheduleSpec, ApiError> {
    let body = read_body(req, body, state.max_body_bytes).await?;
    let invalid =
        |e: serde_json::Error| crate::Error::invalid_payload("schedule in the request body", e);
    let mut value: serde_json::Value = serde_json::from_str(body_json(&body)?).map_err(invalid)?;
    if let (Some(id), Some(object)) = (id, value.as_object_mut()) {
        match object.get("id").and_then(|given| given.as_str()) {
            None => {
                object.insert("id".to_owned(), json!(id));
            }
            Some(given) if given != id => {
                return Err(crate::Error::InvalidArgument(format!(
                    "the body names schedule `{given}` but the URL names `{id}`; leave \"id\" out \
                     or make them agree"
                ))
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(serde_json::from_value(value).map_err(invalid)?)
}

fn accepted(id: &str) -> HttpResponse {
    HttpResponse::Accepted().json(json!({ "id": id }))
}

/// `GET /schedules`: `{"schedules": [...]}`.
async fn list(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let schedules = state.client.list_schedules().await?;
    Ok(HttpResponse::Ok().json(json!({ "schedules": schedules })))
}

/// `POST /schedules`: the body is the spec.
async fn create(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let spec = spec_of(&req, &state, body, None).await?;
    let id = spec.id.clone();
    state.client.create_schedule_spec(spec).await?;
    Ok(accepted(&id))
}

/// `GET /schedules/{id}`.
async fn get(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    match state.client.schedule(&id).await? {
        Some(status) => Ok(HttpResponse::Ok().json(status)),
        None => Err(crate::Error::ScheduleNotFound(id).into()),
    }
}

/// `PUT /schedules/{id}`: the body is the new spec.
async fn update(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    let spec = spec_of(&req, &state, body, Some(&id)).await?;
    state.client.update_schedule_spec(spec).await?;
    Ok(accepted(&id))
}

/// `DELETE /schedules/{id}`.
async fn delete(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    state.client.delete_schedule(&id).await?;
    Ok(accepted(&id))
}

#[derive(Deserialize)]
struct ActionParams {
    note: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `POST /schedules/{id}/{pause|resume|trigger|backfill}`.
async fn act(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = path_param(&req, "id")?;
    let action = path_param(&req, "action")?;
    let params: ActionParams = query(&req)?;
    let client = &state.client;
    match action.as_str() {
        "pause" => client.pause_schedule(&id, params.note.as_deref()).await?,
        "resume" => client.resume_schedule(&id).await?,
        "trigger" => client.trigger_schedule(&id).await?,
        "backfill" => {
            let (Some(from), Some(to)) = (
                time_param("from", params.from)?,
                time_param("to", params.to)?,
            ) else {
                return Err(ApiError::invalid_query(
                    "a backfill needs ?from=<time>&to=<time> (RFC 3339, e.g. 2025-01-31T12:00:00Z)",
                ));
            };
            client.backfill_schedule(&id, from, to).await?
        }
        other => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "schedules have no action `{other}`; use pause, resume, trigger or backfill"
                ),
            ));
        }
    }
    Ok(accepted(&id))
}

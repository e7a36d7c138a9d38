//! Entity routes: signal, read, delete, list, clean.
//!
//! | method and path | what it does |
//! |---|---|
//! | `POST /entities/{name}/{key}?op=OP[&at=TIME]` | signals operation `OP` with the body as input (202) |
//! | `GET /entities/{name}/{key}` | the entity's state and lock (200, 404 `entity_not_found`) |
//! | `DELETE /entities/{name}/{key}` | deletes its state, after the messages sent before (202) |
//! | `GET /entities[/{name}]?keyPrefix=&top=&includeEmpty=&continuationToken=` | lists entities |
//! | `POST /entities/clean` | removes empty entities and releases orphaned locks |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::links::path_param;
use super::orchestrations::{query, time_param};
use super::paging::Page;
use super::view::EntityView;
use super::{ApiError, State, body_json, read_body, resource};
use crate::client::EntityQuery;
use crate::id::EntityId;
use crate::payload::Payload;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/entities", &["GET"]).route(web::get().to(list)))
        .service(resource("/entities/clean", &["POST"]).route(web::post().to(clean)))
        .service(resource("/entities/{name}", &["GET"]).route(web::get().to(list)))
        .service(
            resource("/entities/{name}/{key}", &["GET", "POST", "DELETE"])
                .route(web::get().to(get))
                .route(web::post().to(signal))
                .route(web::delete().to(delete)),
        );
}

fn entity_id(req: &HttpRequest) -> Result<EntityId, ApiError> {
    Ok(EntityId::new(
        path_param(req, "name")?,
        path_param(req, "key")?,
    ))
}

#[derive(Deserialize)]
struct SignalParams {
    op: Option<String>,
    at: Option<String>,
}

/// `POST /entities/{name}/{key}?op=OP[&at=TIME]`: the body is the operation's input (empty =
/// `null`). 202 once the signal is stored; it is delivered in order with the entity's other
/// messages.
async fn signal(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let params: SignalParams = query(&req)?;
    let Some(operation) = params.op.filter(|op| !op.is_empty()) else {
        return Err(ApiError::invalid_query(
            "name the operation to signal with ?op=<operation>",
        ));
    };
    let at = time_param("at", params.at)?;
    let body = read_body(&req, body, state.max_body_bytes).await?;
    let id = entity_id(&req)?;
    let input = Payload::from_json(body_json(&body)?).map_err(|e| {
        crate::Error::invalid_payload(
            format!("input of entity operation `{id}.{operation}` (not valid JSON)"),
            e,
        )
    })?;
    state
        .client
        .signal_entity_raw(&id, &operation, input, at)
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `GET /entities/{name}/{key}`: the entity as [`EntityView`].
async fn get(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let id = entity_id(&req)?;
    match state.client.entity(&id).await? {
        Some(status) => Ok(HttpResponse::Ok().json(EntityView::new(status))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "entity_not_found",
            format!("entity {id} does not exist: nothing has signalled or called it"),
        )),
    }
}

/// `DELETE /entities/{name}/{key}`: 202; the state is deleted after the messages sent to the
/// entity before this request.
async fn delete(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    state.client.delete_entity(&entity_id(&req)?).await?;
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    key_prefix: Option<String>,
    include_empty: Option<bool>,
    top: Option<u32>,
    continuation_token: Option<String>,
}

/// `GET /entities[/{name}]`: `{"entities": [...], "continuationToken": "..." | null}`, ordered
/// by name then key; the token (also in the `x-ms-continuation-token` header) fetches the
/// next page.
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let params: ListParams = query(&req)?;
    let page = Page::new(&req, params.top, params.continuation_token)?;
    let after = page
        .token
        .as_deref()
        .map(|token| {
            EntityId::from_instance_id(token).ok_or_else(|| {
                ApiError::invalid_query(format!(
                    "continuationToken `{token}` did not come from this API; pass the \
                     continuationToken of the previous page"
                ))
            })
        })
        .transpose()?;
    let found = state
        .client
        .list_entities(&EntityQuery {
            name: match req.match_info().get("name") {
                Some(_) => Some(path_param(&req, "name")?),
                None => None,
            },
            key_prefix: params.key_prefix,
            include_empty: params.include_empty.unwrap_or(false),
            limit: Some(page.fetch()),
            after,
        })
        .await?;
    Ok(page.respond(found, "entities", |e| e.id.instance_id(), EntityView::new))
}

/// `POST /entities/clean`: `{"removedEmpty": n, "releasedLocks": n}`.
async fn clean(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let cleanup = state.client.clean_entities().await?;
    Ok(HttpResponse::Ok().json(json!({
        "removedEmpty": cleanup.removed_empty,
        "releasedLocks": cleanup.released_locks,
    })))
}

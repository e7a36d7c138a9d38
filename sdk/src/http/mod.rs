//! The HTTP management API, shaped like Durable Functions' HTTP API so its users feel at home.
//!
//! [`HttpApi::start`] serves it for a [`Runtime`] on its own thread (an actix-web server in an
//! actix system, like the runtime's actors: nothing actix appears in this module's public
//! API). `serve` in the generated main starts it; a program that builds its runtime by hand can
//! start it too.
//!
//! | route | what | success |
//! |---|---|---|
//! | `POST /orchestrators/{name}[/{instanceId}]?ifExists` | start an instance; the body is its JSON input | 202 + check-status links |
//! | `POST /orchestrators/{name}/{instanceId}/signalWithStart/{event}` | raise an event, starting the instance first if there is none; the body is `{"input", "data"}` | 202 + links, `started` |
//! | `GET /instances/{id}?showInput&showHistory&showHistoryOutput&returnInternalServerErrorOnFailure` | status | 200 finished (500 Failed, if asked), 202 still running |
//! | `GET /instances?runtimeStatus&instanceIdPrefix&name&createdTimeFrom&createdTimeTo&top&continuationToken` | list, paged (`name`: of one orchestrator) | 200 |
//! | `POST /instances/{id}/raiseEvent/{event}` | raise an event; the body is its JSON data | 202 (410 finished) |
//! | `POST /instances/{id}/terminate?reason&cascade` | terminate | 202 (410 finished) |
//! | `POST /instances/{id}/suspend?reason`, `/resume?reason`, `/rewind?reason` | suspend, resume, rewind | 202 (410 finished) |
//! | `POST /instances/{id}/restart?restartWithNewInstanceId` | start a finished instance again | 202 + links |
//! | `GET /instances/{id}/waiting` | the external events its code waits for now (replayed with this build); for a held instance, its flow-control limits and counts | 200 |
//! | `GET /instances/{id}/activities` | its activity calls in flight: attempt, worker, timeouts, last heartbeat | 200 |
//! | `DELETE /instances/{id}` | purge one finished instance | 200 |
//! | `DELETE /instances?runtimeStatus&createdTimeFrom&createdTimeTo&all` | purge many | 200 |
//! | `POST /entities/{name}/{key}?op&at` | signal an entity operation; the body is its JSON input | 202 |
//! | `GET /entities/{name}/{key}` | an entity's state and lock | 200 / 404 |
//! | `DELETE /entities/{name}/{key}` | delete an entity's state (in order with its messages) | 202 |
//! | `GET /entities[/{name}]?keyPrefix&includeEmpty&top&continuationToken` | list entities, paged | 200 |
//! | `POST /entities/clean` | remove empty entities, release orphaned locks | 200 |
//! | `GET /schedules`, `POST /schedules` | list schedules (spec, next run, running and recent runs); create one (the body is its spec) | 200 / 202 |
//! | `GET`, `PUT`, `DELETE /schedules/{id}` | one schedule; replace its spec; delete it | 200 / 202 |
//! | `POST /schedules/{id}/pause?note`, `/resume`, `/trigger`, `/backfill?from&to` | pause, resume, run now, run a past range | 202 |
//! | `GET /flow?name` | flow-controlled work running and waiting, per activity or orchestrator and key | 200 |
//! | `GET /functions` | registered orchestrators, activities (with their `flowControl` limits in force) and entity operations | 200 |
//! | `GET /health` | liveness, store reachable (never needs the token) | 200 / 503 |
//! | `GET /metrics` | Prometheus text: turns, activities, queue depths, latencies | 200 |
//! | `GET /`, `GET /dashboard/{asset}` | the dashboard: a page and its script and style, no data (never needs the token; the page asks for it and reads everything through the routes above) | 200 |
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}` (see `error` for the
//! status codes). Request bodies above [`HttpOptions::max_body_bytes`] get 413. With
//! [`HttpOptions::api_token`] set, every request but `GET /health` needs
//! `Authorization: Bearer <token>` (the scheme in any case; 401 otherwise). Every route also
//! answers under Durable Functions' base path, `/runtime/webhooks/durabletask`. The links in
//! responses (check-status payloads, `Location`) are built from [`HttpOptions::public_url`]
//! when set, never from proxy headers unless [`HttpOptions::trust_forwarded_headers`] says so
//! (see `links`).
//!
//! Where things live: `orchestrations` has the instance routes, `entities` the entity
//! routes, `schedules` the schedule routes, `ops` health, metrics and functions, `view` the JSON shapes, `links` the URLs in
//! and out.

mod dashboard;
mod entities;
mod error;
mod links;
mod ops;
mod orchestrations;
mod paging;
mod schedules;
pub(crate) mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::client::Client;
use crate::error::Error;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::runtime::metrics::Metrics;
pub(crate) use error::ApiError;
pub(crate) use links::normalize_public_url;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The address to listen on, e.g. `127.0.0.1:7071` (port 0 picks a free port; see
    /// [`HttpApi::local_addrs`]).
    pub bind: String,
    /// When set, every request but `GET /health` must send `Authorization: Bearer <token>`.
    /// An empty token is refused by [`HttpApi::start`] (it would look like protection and
    /// give none); leave it `None` to serve without authentication.
    pub api_token: Option<String>,
    /// The largest request body accepted, in bytes (default 1 MiB, the default payload limit).
    pub max_body_bytes: usize,
    /// HTTP worker threads (default 2).
    pub workers: usize,
    /// The URL clients reach the API at, e.g. `https://api.example.com/durable`: the links the
    /// API returns (check-status payloads, `Location`) start with it. Default: `http://` and
    /// the request's `Host` header.
    pub public_url: Option<String>,
    /// Build links from the `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` headers of
    /// a reverse proxy (default `false`: they are ignored, since any client can send them).
    /// Only set this when a proxy you run sets those headers on every request.
    pub trust_forwarded_headers: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            bind: "127.0.0.1:7071".to_owned(),
            api_token: None,
            max_body_bytes: 1 << 20,
            workers: 2,
            public_url: None,
            trust_forwarded_headers: false,
        }
    }
}

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) client: Client,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) worker_id: String,
    pub(crate) api_token: Option<String>,
    pub(crate) max_body_bytes: usize,
    /// The checked [`HttpOptions::public_url`], without a trailing slash.
    pub(crate) public_url: Option<String>,
    pub(crate) trust_forwarded_headers: bool,
}

/// A running HTTP API. Stop it with [`HttpApi::stop`]; dropping it leaves it running until the
/// process exits.
///
/// ```no_run
/// # async fn run(runtime: duractor::Runtime) -> Result<(), duractor::Error> {
/// use duractor::http::{HttpApi, HttpOptions};
/// let api = HttpApi::start(&runtime, HttpOptions::default()).await?;
/// println!("listening on http://{}", api.local_addrs()[0]);
/// // … until it is time to stop:
/// api.stop().await;
/// runtime.shutdown().await
/// # }
/// ```
pub struct HttpApi {
    addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    stopped: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl HttpApi {
    /// Binds [`HttpOptions::bind`] and serves the API for `runtime` on a thread of its own.
    /// Fails if the address cannot be bound, the API token is empty or the public URL is not
    /// an `http(s)://host[:port][/path]` URL.
    pub async fn start(runtime: &Runtime, options: HttpOptions) -> Result<HttpApi, Error> {
        if options
            .api_token
            .as_ref()
            .is_some_and(|token| token.trim().is_empty())
        {
            return Err(Error::InvalidArgument(
                "the API token is empty: give a token, or leave it unset to serve without \
                 authentication"
                    .into(),
            ));
        }
        let public_url = options
            .public_url
            .as_deref()
            .map(links::normalize_public_url)
            .transpose()
            .map_err(Error::InvalidArgument)?;
        if options.api_token.is_none() && !binds_loopback_only(&options.bind) {
            tracing::warn!(
                bind = %options.bind,
                "the HTTP API listens beyond this machine WITHOUT authentication: anyone who \
                 reaches it can start, terminate and purge instances; set an API token \
                 (--api-token / DURACTOR_API_TOKEN)"
            );
        }
        let state = web::Data::new(State {
            client: runtime.client(),
            registry: Arc::new(runtime.registry().clone()),
            metrics: runtime.live_metrics(),
            worker_id: runtime.worker_id().to_owned(),
            api_token: options.api_token,
            max_body_bytes: options.max_body_bytes,
            public_url,
            trust_forwarded_headers: options.trust_forwarded_headers,
        });
        let bind = options.bind;
        let workers = options.workers.max(1);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("duractor-http".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let server = actix_web::HttpServer::new(move || {
                        actix_web::App::new()
                            .app_data(state.clone())
                            .wrap(from_fn(authorize))
                            .wrap(from_fn(check_host))
                            .service(web::scope(links::DF_PREFIX).configure(routes))
                            .configure(routes)
                            .default_service(web::to(not_found))
                    })
                    .workers(workers)
                    .disable_signals()
                    .shutdown_timeout(5);
                    let server = match server.bind(&bind) {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot listen on {bind}: {e}")));
                            return;
                        }
                    };
                    let addrs = server.addrs();
                    let server = server.run();
                    let _ = ready_tx.send(Ok((addrs, server.handle())));
                    if let Err(error) = server.await {
                        tracing::error!(%error, "the HTTP server stopped with an error");
                    }
                });
                let _ = stopped_tx.send(());
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the HTTP thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok((addrs, handle))) => Ok(HttpApi {
                addrs,
                handle,
                stopped: Some(stopped_rx),
            }),
            Ok(Err(message)) => Err(Error::InvalidArgument(message)),
            Err(_) => Err(Error::InvalidArgument(
                "the HTTP server thread stopped while starting".into(),
            )),
        }
    }

    /// The addresses the API listens on (with the real port when port 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting connections, lets requests in flight finish (up to 5 s), and returns
    /// when the server has stopped.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

/// Every route of the API.
fn routes(cfg: &mut web::ServiceConfig) {
    dashboard::routes(cfg);
    ops::routes(cfg);
    orchestrations::routes(cfg);
    entities::routes(cfg);
    schedules::routes(cfg);
}

/// A resource at `path` that answers 405 (with `Allow`) to methods it has no route for.
pub(crate) fn resource(path: &str, allowed: &'static [&'static str]) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::method_not_allowed(
            req.method().as_str(),
            req.path(),
            allowed,
        ))
    }))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(req.path()))
}

/// Whether `bind` listens on loopback addresses only (`127.0.0.1:…`, `[::1]:…`,
/// `localhost:…`).
fn binds_loopback_only(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses requests whose `Host` header is not a host name or address with an optional port
/// (400 `invalid_host`), before anything else looks at them.
async fn check_host<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"));
    if let Some(Err(error)) = host.map(links::check_host) {
        return Ok(req.into_response(error.error_response()));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme is matched in
/// any case (RFC 7235). `None` when the header is missing or uses another scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the bearer token (when one is configured) on everything but `GET /health`.
async fn authorize<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<State>>()
        .and_then(|state| state.api_token.clone());
    let Some(expected) = expected else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let path = req.path();
    let path = path.strip_prefix(links::DF_PREFIX).unwrap_or(path);
    // Health, and the dashboard's page and assets: code, never data (the page asks for the
    // token and sends it with every API call).
    let open = path == "/health" || dashboard::is_asset(path);
    if open && req.method() == actix_web::http::Method::GET {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| bearer_token(value).unwrap_or("").to_owned());
    let error = match given {
        None => ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API requires a token: send `Authorization: Bearer <token>` (the value of \
             DURACTOR_API_TOKEN on the server)",
        ),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
        Some(_) => ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid for this server; check DURACTOR_API_TOKEN",
        ),
    };
    let response = error
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
        .error_response();
    Ok(req.into_response(response))
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Reads a request body up to `limit` bytes. A larger body is read on (and dropped) up to a
/// bound before the 413 is sent, so the client sees the response rather than a reset
/// connection.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let drain_limit = limit.saturating_mul(4).max(4 << 20);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|len| len > drain_limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the request body could not be read: {e}"),
            )
        })?;
        total = total.saturating_add(chunk.len());
        if total > drain_limit {
            break;
        }
        if total <= limit {
            body.extend_from_slice(&chunk);
        }
    }
    if total > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(body.freeze())
}

/// A request body as JSON text; an empty body is `null`.
pub(crate) fn body_json(body: &Bytes) -> Result<&str, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("null");
    }
    std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "invalid_payload",
            "the request body is not UTF-8 text; send JSON",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, binds_loopback_only, constant_time_eq};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("bEaReR   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn loopback_binds_are_recognized() {
        assert!(binds_loopback_only("127.0.0.1:7071"));
        assert!(binds_loopback_only("[::1]:7071"));
        assert!(binds_loopback_only("localhost:0"));
        assert!(!binds_loopback_only("0.0.0.0:7071"));
        assert!(!binds_loopback_only("[::]:7071"));
        assert!(!binds_loopback_only("10.0.0.5:80"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}

//! API errors: `{"error": {"code": "...", "message": "..."}}` with the status code that fits.
//!
//! | [`Error`] variant | status | code |
//! |---|---|---|
//! | `InstanceNotFound` | 404 | `instance_not_found` |
//! | `UnknownOrchestrator` | 404 | `unknown_orchestrator` (the URL names no orchestrator) |
//! | `UnknownEntity` | 404 | `unknown_entity` (the URL names no entity type) |
//! | `UnknownOperation` | 400 | `unknown_operation` (`?op=` names no operation) |
//! | `InstanceExists` | 409 | `instance_exists` |
//! | `ScheduleNotFound` | 404 | `schedule_not_found` |
//! | `ScheduleExists` | 409 | `schedule_exists` |
//! | `InvalidState` | 409 | `invalid_state` |
//! | `InstanceFinished` | 410 | `instance_finished` |
//! | `InvalidPayload` | 400 | `invalid_payload` |
//! | `InvalidArgument` | 400 | `invalid_argument` |
//! | `LimitExceeded` | 413 | `limit_exceeded` |
//! | `Store { transient: true }` | 503 (+ `Retry-After`) | `store_unavailable` |
//! | `Store { transient: false }` | 500 | `store_error` |
//! | `Shutdown` | 503 | `shutting_down` |
//! | `Timeout` | 504 | `timeout` |
//! | anything else | 500 | `internal_error` |
//!
//! The API's own checks add 400 `invalid_query`, 401 `unauthorized`, 404 `not_found` (no such
//! route), 404 `entity_not_found`, 405 `method_not_allowed` and 413 `payload_too_large`.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::error::Error;

/// An error response of the HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra headers (`Allow`, `WWW-Authenticate`, `Retry-After`).
    pub(crate) headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_header(
        mut self,
        name: header::HeaderName,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no API route matches `{path}`; see the HTTP API section of the README for the routes"
            ),
        )
    }

    pub(crate) fn method_not_allowed(method: &str, path: &str, allowed: &[&str]) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not supported on `{path}`; use {}",
                allowed.join(" or ")
            ),
        )
        .with_header(header::ALLOW, allowed.join(", "))
    }

    pub(crate) fn invalid_query(message: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query string: {message}"),
        )
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the limit of {limit} bytes; send less data, \
                 or raise the limit with --max-body-bytes / DURACTOR_MAX_BODY_BYTES"
            ),
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, code) = match &error {
            Error::InstanceNotFound(_) => (StatusCode::NOT_FOUND, "instance_not_found"),
            Error::UnknownOrchestrator { .. } => (StatusCode::NOT_FOUND, "unknown_orchestrator"),
            Error::UnknownEntity { .. } => (StatusCode::NOT_FOUND, "unknown_entity"),
            Error::UnknownOperation { .. } => (StatusCode::BAD_REQUEST, "unknown_operation"),
            Error::InstanceExists { .. } => (StatusCode::CONFLICT, "instance_exists"),
            Error::ScheduleNotFound(_) => (StatusCode::NOT_FOUND, "schedule_not_found"),
            Error::ScheduleExists(_) => (StatusCode::CONFLICT, "schedule_exists"),
            Error::InvalidState { .. } => (StatusCode::CONFLICT, "invalid_state"),
            Error::InstanceFinished { .. } => (StatusCode::GONE, "instance_finished"),
            Error::InvalidPayload { .. } => (StatusCode::BAD_REQUEST, "invalid_payload"),
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Error::LimitExceeded { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
            Error::Store {
                transient: true, ..
            } => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Error::Store { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
            Error::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        let api = ApiError::new(status, code, error.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.with_header(header::RETRY_AFTER, "1")
        } else {
            api
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "HTTP API error");
        }
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        response.json(json!({
            "error": { "code": self.code, "message": self.message }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_codes() {
        let cases = [
            (Error::InstanceNotFound("x".into()), 404),
            (
                Error::UnknownOrchestrator {
                    name: "x".into(),
                    known: "y".into(),
                },
                404,
            ),
            (
                Error::InstanceExists {
                    instance_id: "x".into(),
                    status: "Running".into(),
                },
                409,
            ),
            (Error::invalid_payload("input", "bad"), 400),
            (Error::store_transient("busy"), 503),
            (Error::store("broken"), 500),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }
}

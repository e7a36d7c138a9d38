//! The dashboard: one page, its script and its style, embedded in the binary (no CDN, no
//! build step) and served at `/`. They hold no data: the page reads everything through the
//! API routes, sending the API token the user gives it once.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, resource};

/// The page.
const INDEX: &str = include_str!("dashboard/index.html");
/// The script: routing, API calls, every view.
const SCRIPT: &str = include_str!("dashboard/app.js");
/// The style: light and dark, laptop and phone.
const STYLE: &str = include_str!("dashboard/app.css");

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/", &["GET"]).route(web::get().to(index)))
        .service(resource("/dashboard/{asset}", &["GET"]).route(web::get().to(asset)));
}

/// Whether `path` is the dashboard's page or one of its assets (served without the token).
pub(super) fn is_asset(path: &str) -> bool {
    path == "/" || path.starts_with("/dashboard/")
}

async fn index() -> HttpResponse {
    page(INDEX, "text/html; charset=utf-8")
}

async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    match req.match_info().get("asset").unwrap_or_default() {
        "app.js" => Ok(page(SCRIPT, "text/javascript; charset=utf-8")),
        "app.css" => Ok(page(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::not_found(req.path())),
    }
}

fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // Small, and replaced with the binary: always revalidate.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ))
        .body(body)
}

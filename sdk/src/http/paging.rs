//! Paged lists: `top` and `continuationToken` in, `{"<items>": [...], "continuationToken": ..}`
//! (and the `x-ms-continuation-token` header) out.

use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

use super::ApiError;

/// The header that carries the continuation token, as in Durable Functions.
pub(super) const CONTINUATION_HEADER: &str = "x-ms-continuation-token";

/// What a list request asks for.
pub(super) struct Page {
    /// Items per page, 1 to 1000 (default 100).
    pub(super) top: u32,
    /// Where the previous page ended (from the query string, else the header).
    pub(super) token: Option<String>,
}

impl Page {
    pub(super) fn new(
        req: &HttpRequest,
        top: Option<u32>,
        token: Option<String>,
    ) -> Result<Page, ApiError> {
        let top = top.unwrap_or(100);
        if !(1..=1000).contains(&top) {
            return Err(ApiError::invalid_query(format!(
                "top must be between 1 and 1000, not {top}"
            )));
        }
        let token = token.or_else(|| {
            req.headers()
                .get(CONTINUATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        Ok(Page { top, token })
    }

    /// How many to fetch: one more than a page, to learn whether another page follows.
    pub(super) fn fetch(&self) -> u32 {
        self.top + 1
    }

    /// Answers with up to `top` of `found` (fetched with [`fetch`](Self::fetch)) under `key`,
    /// and the token of the last one when more follow.
    pub(super) fn respond<T, V: Serialize>(
        &self,
        mut found: Vec<T>,
        key: &str,
        token_of: impl Fn(&T) -> String,
        view: impl FnMut(T) -> V,
    ) -> HttpResponse {
        let more = found.len() > self.top as usize;
        found.truncate(self.top as usize);
        let token = more.then(|| found.last().map(&token_of)).flatten();
        let views: Vec<V> = found.into_iter().map(view).collect();
        let mut response = HttpResponse::Ok();
        if let Some(token) = &token {
            response.insert_header((CONTINUATION_HEADER, token.clone()));
        }
        response.json(json!({ key: views, "continuationToken": token }))
    }
}

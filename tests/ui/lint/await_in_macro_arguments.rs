//! `.await`s inside macro arguments are checked too.
use duractor::prelude::*;

mod http {
    pub async fn get(_url: &str) -> String {
        String::new()
    }
}

#[orchestrator]
async fn fetch(_ctx: OrchestrationContext, url: String) -> Result<String, duractor::Error> {
    tracing::info!(body = %http::get(&url).await, "fetched");
    Ok(format!("{}", http::get(&url).await))
}

fn main() {}

//! `tokio::fs` awaited: reported once, by the lint (the await is not reported again).
use duractor::prelude::*;

// A stand-in with tokio's path (tokio's `fs` feature is off in these tests).
mod tokio {
    pub mod fs {
        pub async fn read_to_string(_path: &str) -> std::io::Result<String> {
            Ok(String::new())
        }
    }
}

#[orchestrator]
async fn config(_ctx: OrchestrationContext, path: String) -> Result<String, duractor::Error> {
    tokio::fs::read_to_string(&path).await.map_err(duractor::Error::msg)
}

fn main() {}

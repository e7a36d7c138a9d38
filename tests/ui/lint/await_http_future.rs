//! Any library's future is rejected when awaited, without being on a list: here an HTTP
//! client like reqwest.
use duractor::prelude::*;

mod http {
    pub struct Response;
    impl Response {
        pub async fn text(self) -> Result<String, String> {
            Ok(String::new())
        }
    }
    pub async fn get(_url: &str) -> Result<Response, String> {
        Ok(Response)
    }
}

#[orchestrator]
async fn fetch(_ctx: OrchestrationContext, url: String) -> Result<String, duractor::Error> {
    let response = http::get(&url).await.map_err(duractor::Error::msg)?;
    response.text().await.map_err(duractor::Error::msg)
}

fn main() {}

//! Function chaining: an orchestration calls three activities in sequence.
//!
//! ```text
//! cargo run --example hello_cities
//! ```
//!
//! The state lives in `hello_cities.db` in the working directory: stop the program at any
//! point and run it again, and finished steps are not repeated.

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// Greets one city. Activities may do anything: I/O, clocks, randomness.
#[activity]
async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, duractor::Error> {
    Ok(format!("Hello {city}!"))
}

/// Greets three cities, one after the other.
#[orchestrator]
async fn hello_cities(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, duractor::Error> {
    let mut greetings = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        greetings.push(ctx.call_activity(SayHello, city.to_string()).await?);
    }
    Ok(greetings)
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let store = SqliteStore::open("hello_cities.db").await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();

    let id = client.start(HelloCities, ()).await?;
    println!("started instance {id}");
    let status = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await?;
    let greetings: Vec<String> = status.output()?;
    println!("{} -> {greetings:?}", status.status);

    runtime.shutdown().await
}

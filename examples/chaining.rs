//! Function chaining: an orchestration calls activities in sequence, each step's output
//! feeding the next.
//!
//! ```text
//! cargo run --example chaining -- run hello_cities
//! cargo run --example chaining -- run greet_all --input '["Oslo", "Lima"]'
//! ```
//!
//! State lives in `chaining.db` in the working directory (or `--database-url`): stop the
//! program at any point and start it again, and finished steps are not repeated.

use duractor::prelude::*;

/// Greets one city. Activities may do anything: I/O, clocks, randomness.
#[activity]
async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, duractor::Error> {
    Ok(format!("Hello {city}!"))
}

/// Greets Tokyo, Seattle and London, one after the other.
#[orchestrator]
async fn hello_cities(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, duractor::Error> {
    let mut greetings = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        greetings.push(ctx.call_activity(SayHello, city.to_string()).await?);
    }
    Ok(greetings)
}

/// Greets the cities given as input, one after the other.
#[orchestrator]
async fn greet_all(
    ctx: OrchestrationContext,
    cities: Vec<String>,
) -> Result<Vec<String>, duractor::Error> {
    let mut greetings = Vec::new();
    for city in cities {
        greetings.push(ctx.call_activity(SayHello, city).await?);
    }
    Ok(greetings)
}

#[duractor::main]
async fn main() {}

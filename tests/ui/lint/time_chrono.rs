//! chrono's clocks, with the method chains hanging off them and as a function value.
use chrono::{Local, Utc};
use duractor::prelude::*;

#[orchestrator]
async fn report(_ctx: OrchestrationContext, at: Option<chrono::DateTime<Utc>>) -> Result<String, duractor::Error> {
    let day = chrono::Utc::now().date_naive().to_string();
    let local = Local::now().format("%H:%M").to_string();
    let at = at.unwrap_or_else(Utc::now);
    Ok(format!("{day} {local} {at}"))
}

fn main() {}

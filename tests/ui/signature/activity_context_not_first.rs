use duractor::prelude::*;

#[activity]
async fn greet(name: String, _ctx: ActivityContext) -> Result<String, duractor::Error> {
    Ok(name)
}

fn main() {}

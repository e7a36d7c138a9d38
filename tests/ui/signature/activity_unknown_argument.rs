use duractor::prelude::*;

#[activity(retries = 3)]
async fn greet(_ctx: ActivityContext, name: String) -> Result<String, duractor::Error> {
    Ok(name)
}

fn main() {}

use duractor::prelude::*;

#[activity]
async fn greet(_ctx: ActivityContext, name: &str) -> Result<String, duractor::Error> {
    Ok(name.to_owned())
}

fn main() {}

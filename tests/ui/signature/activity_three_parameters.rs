use duractor::prelude::*;

#[activity]
async fn greet(_ctx: ActivityContext, first: String, last: String) -> Result<String, duractor::Error> {
    Ok(format!("{first} {last}"))
}

fn main() {}

use duractor::prelude::*;

#[activity]
fn greet(_ctx: ActivityContext, name: String) -> Result<String, duractor::Error> {
    Ok(name)
}

fn main() {}

use duractor::prelude::*;

#[activity]
async fn greet(name: String) -> Result<String, duractor::Error> {
    Ok(name)
}

fn main() {}

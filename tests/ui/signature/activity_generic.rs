use duractor::prelude::*;

#[activity]
async fn echo<T: serde::Serialize>(_ctx: ActivityContext, value: T) -> Result<T, duractor::Error> {
    Ok(value)
}

fn main() {}

use duractor::prelude::*;

#[activity]
async fn greet(_ctx: ActivityContext, name: String) -> String {
    name
}

fn main() {}

use duractor::prelude::*;

#[activity]
async fn log_line(_ctx: ActivityContext, line: String) {
    println!("{line}");
}

fn main() {}

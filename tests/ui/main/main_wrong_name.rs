#[duractor::main]
async fn start() {}

fn main() {}

#[duractor::main]
async fn main(app: duractor::App) {}

#[duractor::main]
async fn main<T>() {}

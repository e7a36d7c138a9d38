#[duractor::main(store = "duractor_sqlx::open")]
async fn main() {}

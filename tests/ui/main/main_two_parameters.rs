#[duractor::main]
async fn main(app: &mut duractor::App, port: u16) {}

#[duractor::main]
struct App;

use duractor::prelude::*;

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn new() -> Self {
        Counter { value: 0 }
    }
}

fn main() {}

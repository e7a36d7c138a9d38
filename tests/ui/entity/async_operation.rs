use duractor::prelude::*;

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    async fn add(&mut self, n: i64) {
        self.value += n;
    }
}

fn main() {}

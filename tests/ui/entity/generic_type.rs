use duractor::prelude::*;

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Boxed<T> {
    value: T,
}

fn main() {}

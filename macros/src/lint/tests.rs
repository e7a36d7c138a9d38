//! The lint as a whole: what it reports in a body, and what it leaves alone.

use syn::{Block, Signature, parse_quote};

use super::check;

fn errors(block: Block) -> Vec<String> {
    let sig: Signature =
        parse_quote!(async fn f(ctx: OrchestrationContext, input: ()) -> Result<(), Error>);
    match check(&sig, &block) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn count(block: Block) -> usize {
    errors(block).len()
}

#[test]
fn aliases_declared_in_the_body_are_resolved() {
    assert_eq!(
        count(parse_quote!({
            use std::time::Instant as Clock;
            Clock::now();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            use std::{env, time};
            env::var("A");
            time::SystemTime::now();
        })),
        2
    );
    assert_eq!(
        count(parse_quote!({
            use crate::clock::Instant;
            Instant::now();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            use std::thread::*;
            sleep(d);
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            use std::time;
            use time::Instant as I;
            I::now();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            ::std::time::SystemTime::now();
        })),
        1
    );
}

#[test]
fn local_names_shadow_bare_functions() {
    assert_eq!(
        count(parse_quote!({
            rng();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            let rng = || 4;
            rng();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            {
                let rng = || 4;
            }
            rng();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            xs.iter().map(|thread_rng| thread_rng());
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::new();
            let m = m.clone();
            m.iter();
        })),
        1
    );
}

#[test]
fn method_calls_and_locals_are_not_paths() {
    assert_eq!(
        count(parse_quote!({
            ctx.now();
            clock.now();
            let rng = ctx.rng();
            rng;
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let f = Utc::now;
            f();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            x.unwrap_or_else(Utc::now);
        })),
        1
    );
}

#[test]
fn loops_need_an_exit_of_their_own() {
    assert_eq!(
        count(parse_quote!({
            loop {
                step();
            }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            loop {
                if done() {
                    break;
                }
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            loop {
                return;
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            loop {
                for x in xs {
                    break;
                }
            }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            'outer: loop {
                loop {
                    break 'outer;
                }
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            loop {
                let f = || {
                    return 1;
                };
            }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            loop {
                x?;
            }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            while true {
                x();
            }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            while n > 0 {
                n -= 1;
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            for i in 0.. {
                if i > 3 {
                    break;
                }
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            for i in 0.. {
                f(i);
            }
        })),
        1
    );
    let message = &errors(parse_quote!({
        loop {
            x?;
        }
    }))[0];
    assert!(message.contains("`?` does not count"), "{message}");
}

#[test]
fn hash_maps_are_tracked_through_bindings() {
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::new();
            for x in &m {}
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            let m: HashSet<u8> = x;
            m.iter();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::<u8, u8>::with_capacity(1);
            m.keys().count();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m: HashMap<u8, u8, Fx> = x;
            m.iter();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::new();
            m.get(&1);
            m.insert(1, 2);
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::new();
            let m: Vec<u8> = vec![];
            m.iter();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = HashMap::new();
            for m in vs {
                m.iter();
            }
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = BTreeMap::new();
            m.iter();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            let m = xs.collect::<HashMap<_, _>>();
            m.values();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            {
                let m = HashMap::new();
            }
            m.iter();
        })),
        0
    );
}

#[test]
fn macro_arguments_are_linted() {
    assert_eq!(
        count(parse_quote!({
            println!("{:?}", Instant::now());
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            tracing::info!(at = ?Utc::now(), "x");
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            json!({ "at": Utc::now() });
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            tokio::select! { _ = a => {} }
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            format!("{}", ctx.now());
        })),
        0
    );
}

#[test]
fn unsafe_is_rejected() {
    assert_eq!(
        count(parse_quote!({
            let runs = unsafe { RUNS };
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            println!("{}", unsafe { RUNS });
            my_dsl!(key => unsafe { RUNS });
        })),
        2
    );
    assert_eq!(
        count(parse_quote!({
            unsafe fn bump() {}
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            #[duractor::allow_nondeterminism(reason = "reads no shared state")]
            let text = unsafe { std::str::from_utf8_unchecked(bytes) };
            unsafe impl Send for Wrapper {}
        })),
        0
    );
}

#[test]
fn nested_items_are_linted_like_the_body() {
    assert_eq!(
        count(parse_quote!({
            fn started() -> Instant {
                Instant::now()
            }
            impl Sampler {
                fn draw(&self) -> u8 {
                    rand::random()
                }
            }
            trait Load {
                fn load() -> Vec<u8> {
                    std::fs::read("x").unwrap()
                }
            }
            mod inner {
                fn roll() -> u8 {
                    thread_rng().next()
                }
            }
            static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);
            extern "C" {
                static mut ERRNO: i32;
            }
        })),
        6
    );
    assert_eq!(
        count(parse_quote!({
            #[activity]
            async fn read(_ctx: ActivityContext, path: String) -> Result<Vec<u8>, Error> {
                Ok(std::fs::read(path)?)
            }
            #[duractor::orchestration_helper]
            async fn helper() {
                Instant::now();
            }
            #[duractor::allow_nondeterminism(reason = "logs only")]
            fn started() -> Instant {
                Instant::now()
            }
            macro_rules! now {
                () => {
                    Instant::now()
                };
            }
        })),
        0
    );
    // A nested function sees none of the body's locals: `rng()` there is `rand::rng`.
    assert_eq!(
        count(parse_quote!({
            let rng = || 4;
            fn roll() -> u8 {
                rng()
            }
        })),
        1
    );
    // `use` in a nested function is resolved.
    assert_eq!(
        count(parse_quote!({
            fn nap() {
                use std::thread::sleep;
                sleep(d);
            }
        })),
        1
    );
}

#[test]
fn the_escape_hatch_needs_a_reason() {
    assert_eq!(
        count(parse_quote!({
            #[duractor::allow_nondeterminism(reason = "logs only")]
            let t = Instant::now();
        })),
        0
    );
    assert_eq!(
        count(parse_quote!({
            #[allow_nondeterminism]
            let t = Instant::now();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            #[allow_nondeterminism(reason = " ")]
            x = Instant::now();
        })),
        1
    );
    assert_eq!(
        count(parse_quote!({
            #[allow_nondeterminism(reason = "ok")]
            x = Instant::now();
        })),
        0
    );
}

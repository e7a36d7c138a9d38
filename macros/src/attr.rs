//! The arguments of duractor's attributes, read by one parser: a comma-separated list of
//! `key = value` pairs, checked against the keys each attribute accepts (its [`Spec`]). Every
//! problem is reported at its token, all at once, in one style: an unknown argument is
//! answered with the list of the arguments the attribute accepts.
//!
//! | attribute                                               | accepts                         |
//! |---------------------------------------------------------|---------------------------------|
//! | `#[activity]`                                           | `name = ".."`, `start_to_close = "30s"`, `schedule_to_close = "5m"`, `heartbeat_timeout = "10s"`, `concurrency = 3`, `rate = "50/s"`, `key = "/customer"` |
//! | `#[orchestrator]`                                       | `name = ".."`, `version = ".."`, `concurrency = 3`, `rate = "50/s"`, `key = "/customer"` |
//! | `#[entity]` on the state type                           | `name = ".."`                   |
//! | `#[entity]` on the impl block, `#[orchestration_helper]`| nothing                         |
//! | `#[duractor::main]`                                     | `store = path::to::open`        |
//!
//! A key given twice keeps its last value. The escape hatch
//! `#[duractor::allow_nondeterminism(reason = "..")]` goes on statements, not on an item a
//! macro expands; [`crate::allow`] reads it.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr, Meta, Token};

use crate::ast::{Errors, Kind};

/// What an attribute accepts, and how its errors name it.
pub struct Spec {
    /// The attribute as its errors name it.
    attribute: &'static str,
    /// The arguments it accepts; empty for an attribute that takes none.
    keys: &'static [Key],
    /// Added to "takes no arguments" (only used when `keys` is empty).
    no_arguments_hint: &'static str,
    /// Where an unknown `key = value` is underlined.
    unknown_at: UnknownAt,
}

/// Where the error for an unknown `key = value` argument points. The attributes had one
/// parser each before, and the UI tests pin the underline each of them chose.
#[derive(Clone, Copy)]
enum UnknownAt {
    /// At the key (`retries` of `retries = 3`).
    Key,
    /// At the whole argument (`port = 8080`).
    Argument,
}

/// One argument an attribute accepts.
struct Key {
    name: &'static str,
    /// How the error for an unknown argument lists it.
    usage: &'static str,
    value: ValueKind,
}

/// What a key's value must be.
enum ValueKind {
    /// A string literal. `expected`: the error for anything else; `check`: the error for a
    /// string that is refused, if it is.
    Str {
        expected: &'static str,
        check: fn(&str) -> Option<&'static str>,
    },
    /// A path without a `<T as Trait>` qualifier (`duractor_sqlx::open`). `expected`: the
    /// error for anything else.
    Path { expected: &'static str },
    /// A whole number that fits a `u32`. `expected`: the error for anything else; `check`:
    /// the error for a number that is refused, if it is.
    Int {
        expected: &'static str,
        check: fn(u32) -> Option<&'static str>,
    },
}

/// `#[activity(name = "..", start_to_close = "..", schedule_to_close = "..",
/// heartbeat_timeout = "..")]`.
pub const ACTIVITY: Spec = Spec {
    attribute: "`#[activity]`",
    keys: &[
        FUNCTION_NAME,
        START_TO_CLOSE,
        SCHEDULE_TO_CLOSE,
        HEARTBEAT_TIMEOUT,
        CONCURRENCY,
        RATE,
        FLOW_KEY,
    ],
    no_arguments_hint: "",
    unknown_at: UnknownAt::Key,
};

/// `#[orchestrator(name = "..", version = "..")]`.
pub const ORCHESTRATOR: Spec = Spec {
    attribute: "`#[orchestrator]`",
    keys: &[FUNCTION_NAME, VERSION, CONCURRENCY, RATE, FLOW_KEY],
    no_arguments_hint: "",
    unknown_at: UnknownAt::Key,
};

/// `#[orchestration_helper]`, which takes no arguments.
pub const HELPER: Spec = Spec {
    attribute: "#[orchestration_helper]",
    keys: &[],
    no_arguments_hint: "",
    unknown_at: UnknownAt::Argument,
};

/// `#[entity(name = "..")]` on the state type.
pub const ENTITY_TYPE: Spec = Spec {
    attribute: "`#[entity]` on a type",
    keys: &[ENTITY_NAME],
    no_arguments_hint: "",
    unknown_at: UnknownAt::Argument,
};

/// `#[entity]` on the impl block of operations, which takes no arguments.
pub const ENTITY_IMPL: Spec = Spec {
    attribute: "`#[entity]` on an impl block",
    keys: &[],
    no_arguments_hint: "; give the name on the type",
    unknown_at: UnknownAt::Argument,
};

/// `#[duractor::main(store = path::to::open)]`.
pub const MAIN: Spec = Spec {
    attribute: "`#[duractor::main]`",
    keys: &[STORE],
    no_arguments_hint: "",
    unknown_at: UnknownAt::Argument,
};

/// The registered name of an activity or orchestrator (default: the function's name).
const FUNCTION_NAME: Key = Key {
    name: "name",
    usage: "`name = \"..\"`",
    value: ValueKind::Str {
        expected: "expected a string literal, e.g. `name = \"charge_card\"`",
        check: function_name,
    },
};

/// The version stamped on an orchestrator's new instances.
const VERSION: Key = Key {
    name: "version",
    usage: "`version = \"..\"`",
    value: ValueKind::Str {
        // (The example is the name's: the UI tests pin this text.)
        expected: "expected a string literal, e.g. `name = \"charge_card\"`",
        check: |_| None,
    },
};

/// The registered name of an entity (default: the type's name).
const ENTITY_NAME: Key = Key {
    name: "name",
    usage: "`name = \"..\"`",
    value: ValueKind::Str {
        expected: "expected a string literal, e.g. `name = \"Counter\"`",
        check: entity_name,
    },
};

/// The function that opens the store a database URL names (default `::duractor_sqlx::open`).
const STORE: Key = Key {
    name: "store",
    usage: "`store = path::to::open` (an `async fn(&str) -> Result<Arc<dyn duractor::Store>, duractor::Error>`)",
    value: ValueKind::Path {
        expected: "expected the path of a function, e.g. `store = duractor_sqlx::open`",
    },
};

/// The error for a timeout that is not a duration literal.
const EXPECTED_DURATION: &str = "expected a duration in a string literal, e.g. `\"30s\"`, `\"500ms\"`, `\"5m\"`, `\"2h\"` or `\"1d\"`";

/// The default start-to-close timeout of an activity's calls.
const START_TO_CLOSE: Key = Key {
    name: "start_to_close",
    usage: "`start_to_close = \"30s\"`",
    value: ValueKind::Str {
        expected: EXPECTED_DURATION,
        check: timeout,
    },
};

/// The default schedule-to-close timeout of an activity's calls.
const SCHEDULE_TO_CLOSE: Key = Key {
    name: "schedule_to_close",
    usage: "`schedule_to_close = \"5m\"`",
    value: ValueKind::Str {
        expected: EXPECTED_DURATION,
        check: timeout,
    },
};

/// The default heartbeat timeout of an activity's calls.
const HEARTBEAT_TIMEOUT: Key = Key {
    name: "heartbeat_timeout",
    usage: "`heartbeat_timeout = \"10s\"`",
    value: ValueKind::Str {
        expected: EXPECTED_DURATION,
        check: timeout,
    },
};

/// At most this many attempts of the activity (instances of the orchestrator) running at
/// once, across workers.
const CONCURRENCY: Key = Key {
    name: "concurrency",
    usage: "`concurrency = 3`",
    value: ValueKind::Int {
        expected: "expected a whole number, e.g. `concurrency = 3`",
        check: |n| {
            (n == 0).then_some(
                "a concurrency limit of 0 would never run anything; use at least 1, or leave the argument out for no limit",
            )
        },
    },
};

/// The error for a rate that is not `count/period`.
const EXPECTED_RATE: &str =
    "expected a rate in a string literal, e.g. `\"50/s\"`, `\"10/m\"` or `\"3/250ms\"`";

/// At most this many attempts (instances) started per period, across workers.
const RATE: Key = Key {
    name: "rate",
    usage: "`rate = \"50/s\"`",
    value: ValueKind::Str {
        expected: EXPECTED_RATE,
        check: |text| match rate(text) {
            None => Some(EXPECTED_RATE),
            Some((0, _)) => {
                Some("a rate of 0 starts would never run anything; allow at least 1 per period")
            }
            Some((_, ms)) if ms > MAX_TIMEOUT_MS => {
                Some("a rate's period must be at most 366 days")
            }
            Some(_) => None,
        },
    },
};

/// The JSON pointer into the input whose value the limits apply to separately.
const FLOW_KEY: Key = Key {
    name: "key",
    usage: "`key = \"/customer\"`",
    value: ValueKind::Str {
        expected: "expected a JSON pointer into the input in a string literal, e.g. `key = \"/customer\"`",
        check: |text| {
            (!text.starts_with('/')).then_some(
                "expected a JSON pointer into the input, e.g. `key = \"/customer\"` (or `\"/order/region\"`)",
            )
        },
    },
};

/// A rate `count/period` (`50/s`, `3/250ms`): the count and the period in ms.
pub fn rate(text: &str) -> Option<(u32, u64)> {
    let (count, period) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok()?;
    let period = period.trim();
    let ms = if period.starts_with(|c: char| c.is_ascii_digit()) {
        duration_ms(period)?
    } else {
        duration_ms(&format!("1{period}"))?
    };
    (ms > 0).then_some((count, ms))
}

/// The longest timeout accepted, as `duractor::timeouts::MAX_TIMEOUT` (366 days), in ms.
const MAX_TIMEOUT_MS: u64 = 366 * 86_400_000;

/// Milliseconds of a duration literal: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`),
/// or several of them (`1h30m`).
pub fn duration_ms(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let unit = match &after[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = &after[unit_len..];
    }
    Some(total)
}

fn timeout(text: &str) -> Option<&'static str> {
    if text.trim_start().starts_with('-') {
        return Some(
            "a timeout cannot be negative; write how long to wait, e.g. `\"5m\"`, or leave the argument out for no timeout",
        );
    }
    match duration_ms(text) {
        None => Some(EXPECTED_DURATION),
        Some(0) => Some("a timeout must be at least 1 ms; leave the argument out for no timeout"),
        Some(ms) if ms > MAX_TIMEOUT_MS => Some(
            "a timeout must be at most 366 days (a longer one is almost certainly a unit mistake); leave the argument out for no timeout",
        ),
        Some(_) => None,
    }
}

fn function_name(name: &str) -> Option<&'static str> {
    name.trim()
        .is_empty()
        .then_some("the name must not be empty")
}

fn entity_name(name: &str) -> Option<&'static str> {
    (name.is_empty() || name.contains('@'))
        .then_some("an entity name must be non-empty and must not contain `@`")
}

/// The accepted values of an attribute's arguments, by key.
#[derive(Default)]
pub struct Values(Vec<(&'static str, Value)>);

enum Value {
    Str(LitStr),
    Path(syn::Path),
    Int(LitInt),
}

impl Values {
    /// The string given for `key`.
    pub fn str(&self, key: &str) -> Option<&LitStr> {
        self.0.iter().rev().find_map(|(k, value)| match value {
            Value::Str(s) if *k == key => Some(s),
            _ => None,
        })
    }

    /// The number given for `key`.
    pub fn int(&self, key: &str) -> Option<&LitInt> {
        self.0.iter().rev().find_map(|(k, value)| match value {
            Value::Int(n) if *k == key => Some(n),
            _ => None,
        })
    }

    /// The path given for `key`.
    pub fn path(&self, key: &str) -> Option<&syn::Path> {
        self.0.iter().rev().find_map(|(k, value)| match value {
            Value::Path(path) if *k == key => Some(path),
            _ => None,
        })
    }
}

impl Spec {
    /// Reads the arguments (the tokens inside the attribute's parentheses); every problem is
    /// pushed to `errors`, and only accepted values are kept.
    pub fn parse(&self, tokens: TokenStream, errors: &mut Errors) -> Values {
        let mut values = Values::default();
        if self.keys.is_empty() {
            if !tokens.is_empty() {
                errors.spanned(
                    &tokens,
                    format!(
                        "{} takes no arguments{}",
                        self.attribute, self.no_arguments_hint
                    ),
                );
            }
            return values;
        }
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(metas) => metas,
            Err(error) => {
                errors.push(error);
                return values;
            }
        };
        for meta in &metas {
            let known = match meta {
                Meta::NameValue(nv) => self
                    .keys
                    .iter()
                    .find(|key| nv.path.is_ident(key.name))
                    .map(|key| (key, &nv.value)),
                _ => None,
            };
            let Some((key, value)) = known else {
                match (meta, self.unknown_at) {
                    (Meta::NameValue(nv), UnknownAt::Key) => {
                        errors.spanned(&nv.path, self.unknown_argument());
                    }
                    _ => errors.spanned(meta, self.unknown_argument()),
                }
                continue;
            };
            match key.value.read(value) {
                Ok(value) => values.0.push((key.name, value)),
                Err(error) => errors.push(error),
            }
        }
        values
    }

    /// "unknown argument; `#[orchestrator]` accepts `name = ".."` and `version = ".."`".
    fn unknown_argument(&self) -> String {
        let usages: Vec<&str> = self.keys.iter().map(|key| key.usage).collect();
        let accepted = match usages.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, others)) => format!("{} and {last}", others.join(", ")),
            None => String::new(),
        };
        format!("unknown argument; {} accepts {accepted}", self.attribute)
    }
}

impl ValueKind {
    fn read(&self, value: &Expr) -> syn::Result<Value> {
        match (self, value) {
            (
                ValueKind::Str { check, .. },
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }),
            ) => match check(&s.value()) {
                Some(refused) => Err(syn::Error::new_spanned(s, refused)),
                None => Ok(Value::Str(s.clone())),
            },
            (ValueKind::Path { .. }, Expr::Path(path)) if path.qself.is_none() => {
                Ok(Value::Path(path.path.clone()))
            }
            (
                ValueKind::Int { expected, check },
                Expr::Lit(ExprLit {
                    lit: Lit::Int(n), ..
                }),
            ) => match n.base10_parse::<u32>() {
                Err(_) => Err(syn::Error::new_spanned(n, expected)),
                Ok(number) => match check(number) {
                    Some(refused) => Err(syn::Error::new_spanned(n, refused)),
                    None => Ok(Value::Int(n.clone())),
                },
            },
            (
                ValueKind::Str { expected, .. }
                | ValueKind::Path { expected }
                | ValueKind::Int { expected, .. },
                other,
            ) => Err(syn::Error::new_spanned(other, expected)),
        }
    }
}

/// The arguments of `#[activity(..)]` / `#[orchestrator(..)]`.
#[derive(Default)]
pub struct Args {
    /// `name = "..."`: the registered name (default: the function's name).
    pub name: Option<LitStr>,
    /// `version = "..."`: the version stamped on new instances (orchestrators only).
    pub version: Option<LitStr>,
    /// The activity's default timeouts in ms (0: none): start-to-close, schedule-to-close,
    /// heartbeat.
    pub timeouts: [u64; 3],
    /// The flow-control limits: concurrency (0: none), rate (count 0: none) and key (`""`:
    /// none); `None` when none is declared.
    pub flow: Option<(u32, (u32, u64), String)>,
}

/// Reads the arguments of `#[activity(..)]` or `#[orchestrator(..)]`; all problems as one
/// error.
pub fn parse(kind: Kind, tokens: TokenStream) -> syn::Result<Args> {
    let spec = match kind {
        Kind::Activity => &ACTIVITY,
        Kind::Orchestrator => &ORCHESTRATOR,
    };
    let mut errors = Errors::default();
    let values = spec.parse(tokens, &mut errors);
    if let Some(key) = values.str("key")
        && values.int("concurrency").is_none()
        && values.str("rate").is_none()
    {
        errors.spanned(
            key,
            "`key` splits the flow-control limits per value of the input, but none is set; \
             add `concurrency = N` or `rate = \"N/s\"`",
        );
    }
    errors.finish()?;
    let ms = |key: &str| {
        values
            .str(key)
            .and_then(|lit| duration_ms(&lit.value()))
            .unwrap_or(0)
    };
    let concurrency = values
        .int("concurrency")
        .and_then(|n| n.base10_parse::<u32>().ok());
    let rate = values.str("rate").and_then(|lit| rate(&lit.value()));
    let flow = (concurrency.is_some() || rate.is_some()).then(|| {
        (
            concurrency.unwrap_or(0),
            rate.unwrap_or((0, 0)),
            values.str("key").map(LitStr::value).unwrap_or_default(),
        )
    });
    Ok(Args {
        name: values.str("name").cloned(),
        version: values.str("version").cloned(),
        timeouts: [
            ms("start_to_close"),
            ms("schedule_to_close"),
            ms("heartbeat_timeout"),
        ],
        flow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(spec: &Spec, tokens: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        spec.parse(tokens, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(all) => all.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn durations_are_a_number_and_a_unit_or_several() {
        assert_eq!(duration_ms("30s"), Some(30_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("2d"), Some(172_800_000));
        for bad in ["", "30", "-5s", "5 s", "1.5s", "s", "10y"] {
            assert_eq!(duration_ms(bad), None, "{bad:?}");
        }
        assert_eq!(
            timeout("0ms"),
            Some("a timeout must be at least 1 ms; leave the argument out for no timeout")
        );
        assert!(timeout("367d").is_some_and(|e| e.contains("366 days")));
        assert_eq!(timeout("366d"), None);
    }

    #[test]
    fn unknown_arguments_list_the_accepted_ones() {
        assert_eq!(
            errors(&ACTIVITY, quote!(retries = 3)),
            ["unknown argument; `#[activity]` accepts `name = \"..\"`, \
                 `start_to_close = \"30s\"`, `schedule_to_close = \"5m\"`, \
                 `heartbeat_timeout = \"10s\"`, `concurrency = 3`, `rate = \"50/s\"` and \
                 `key = \"/customer\"`"]
        );
        assert_eq!(
            errors(&ORCHESTRATOR, quote!(version = "2", retries = 3)),
            [
                "unknown argument; `#[orchestrator]` accepts `name = \"..\"`, `version = \"..\"`, \
                 `concurrency = 3`, `rate = \"50/s\"` and `key = \"/customer\"`"
            ]
        );
        assert_eq!(
            errors(&ENTITY_TYPE, quote!(name)),
            ["unknown argument; `#[entity]` on a type accepts `name = \"..\"`"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        assert_eq!(
            errors(&ORCHESTRATOR, quote!(name = "", version = 2, extra = "x")),
            [
                "the name must not be empty",
                "expected a string literal, e.g. `name = \"charge_card\"`",
                "unknown argument; `#[orchestrator]` accepts `name = \"..\"`, `version = \"..\"`, \
                 `concurrency = 3`, `rate = \"50/s\"` and `key = \"/customer\"`",
            ]
        );
        assert_eq!(
            errors(&ENTITY_TYPE, quote!(name = "a@b")),
            ["an entity name must be non-empty and must not contain `@`"]
        );
        assert_eq!(
            errors(&MAIN, quote!(store = "duractor_sqlx::open")),
            ["expected the path of a function, e.g. `store = duractor_sqlx::open`"]
        );
        assert_eq!(
            errors(&ENTITY_IMPL, quote!(name = "x")),
            ["`#[entity]` on an impl block takes no arguments; give the name on the type"]
        );
    }

    #[test]
    fn accepted_values_are_kept_the_last_one_winning() {
        let mut errors = Errors::default();
        let values = ORCHESTRATOR.parse(quote!(name = "a", version = "2", name = "b"), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(values.str("name").map(LitStr::value).as_deref(), Some("b"));
        assert_eq!(
            values.str("version").map(LitStr::value).as_deref(),
            Some("2")
        );
        let values = MAIN.parse(quote!(store = my_store::open), &mut errors);
        assert!(values.path("store").is_some() && errors.is_empty());
    }
}

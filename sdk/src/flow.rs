//! Flow control for activities and orchestrations: at most N running at once and at most N
//! starts per period, per function or per key taken from the input, and priorities that
//! order the work waiting for them.
//!
//! A [`FlowControl`] is declared on the function (`#[activity(concurrency = 3, key =
//! "/customer", rate = "50/s")]`, `#[orchestrator(concurrency = 2, key = "/customer")]`) or on
//! the runtime builder (`RuntimeBuilder::flow_control`, `orchestrator_flow_control`); every
//! worker of an app declares the same, so every claim and admission enforces it. Work held
//! back stays in the store, never fails, and runs as soon as the limits allow: an activity's
//! calls wait in the queue until a claim takes them; an orchestrator's instances wait
//! Pending until an admission lets them run. The store applies [`pick`] to the waiting calls
//! or instances of a limited function, after serializing the claims (admissions) of that
//! function across workers.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::payload::Payload;

/// The limits of one activity (build with [`FlowControl::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowControl {
    /// At most this many attempts running at once (per key, with a key).
    pub concurrency: Option<u32>,
    /// At most `count` attempts started per `period` (per key, with a key), spread evenly:
    /// no more than a tenth of them (at least one) within each tenth of the period (tenths
    /// are aligned on the clock).
    pub rate: Option<Rate>,
    /// A JSON pointer into the input (`/customer` or `/order/region`) whose value is the key
    /// the limits apply to separately; `None`: one limit for the whole activity type.
    pub key: Option<String>,
}

/// A rate: `count` starts per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Starts allowed per period.
    pub count: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
}

impl FlowControl {
    /// No limits yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `max` attempts running at once, across all workers.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// At most `count` attempts started per `period`, across all workers.
    pub fn rate(mut self, count: u32, period: Duration) -> Self {
        self.rate = Some(Rate {
            count,
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }

    /// Applies the limits per value of the input at JSON pointer `pointer` (e.g.
    /// `/customer`): each customer gets its own.
    pub fn key(mut self, pointer: impl Into<String>) -> Self {
        self.key = Some(pointer.into());
        self
    }

    /// The limits `#[activity(concurrency = .., rate = "..", key = "..")]` declares (0 and
    /// `""`: not given).
    #[doc(hidden)]
    pub fn __declared(concurrency: u32, count: u32, period_ms: u64, key: &str) -> Self {
        FlowControl {
            concurrency: (concurrency > 0).then_some(concurrency),
            rate: (count > 0).then_some(Rate { count, period_ms }),
            key: (!key.is_empty()).then(|| key.to_owned()),
        }
    }

    /// Checks the limits of activity `activity`: the error names what is wrong.
    pub fn check(&self, activity: &str) -> Result<(), Error> {
        self.check_limits(&format!("activity `{activity}`"))
    }

    /// Checks the limits of orchestrator `orchestrator`, as [`check`](Self::check) does an
    /// activity's.
    pub fn check_orchestrator(&self, orchestrator: &str) -> Result<(), Error> {
        self.check_limits(&format!("orchestrator `{orchestrator}`"))
    }

    fn check_limits(&self, what: &str) -> Result<(), Error> {
        let invalid = |why: String| {
            Err(Error::InvalidArgument(format!(
                "flow control of {what}: {why}"
            )))
        };
        if self.concurrency == Some(0) {
            return invalid(
                "a concurrency limit of 0 would never run anything; use at least 1".to_owned(),
            );
        }
        if let Some(rate) = self.rate {
            if rate.count == 0 {
                return invalid("a rate of 0 starts would never run anything".to_owned());
            }
            if rate.period_ms == 0 {
                return invalid("a rate's period must be longer than 0".to_owned());
            }
            if rate.period_ms > 366 * 86_400_000 {
                return invalid(format!(
                    "a rate's period of {} ms is longer than a year",
                    rate.period_ms
                ));
            }
        }
        if let Some(key) = &self.key
            && !(key.is_empty() || key.starts_with('/'))
        {
            return invalid(format!(
                "the key `{key}` is not a JSON pointer; write `/field` (or `/a/b` for a nested one)"
            ));
        }
        if self.concurrency.is_none() && self.rate.is_none() {
            return invalid("it sets no limit; give a concurrency, a rate or both".to_owned());
        }
        Ok(())
    }

    /// The key of a call with `input`: the value at the pointer (a string as it is, anything
    /// else as JSON; a missing field is the key `null`).
    pub fn key_of(&self, input: &Payload) -> Option<String> {
        let pointer = self.key.as_deref()?;
        let value: serde_json::Value = input.decode().unwrap_or(serde_json::Value::Null);
        Some(match value.pointer(pointer) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => "null".to_owned(),
        })
    }

    /// Parses a rate written `50/s`, `10/m`, `1000/h` or `3/250ms` (a count, `/`, a
    /// duration).
    pub fn parse_rate(text: &str) -> Result<Rate, String> {
        let (count, period) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not a rate; write a count per period, e.g. 50/s or 10/m")
        })?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` in rate `{text}` is not a count"))?;
        let period = period.trim();
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            period.to_owned()
        } else {
            format!("1{period}")
        };
        let period = crate::clock::parse_duration(&period)
            .map_err(|e| format!("the period of rate `{text}`: {e}"))?;
        Ok(Rate {
            count,
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// The flow-control rule a claim (an admission) enforces for one activity (orchestrator): the
/// store's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRule {
    /// The activity or orchestrator.
    pub name: String,
    /// Its limits.
    pub limits: FlowControl,
}

/// What is running or started of one limited activity, per key (`None`: not keyed), as the
/// store counts it for a claim.
#[derive(Debug, Clone, Default)]
pub struct FlowUsage {
    /// Attempts running now (leased, lease not lapsed).
    pub running: HashMap<Option<String>, u32>,
    /// Attempts started in the last period of the rate.
    pub started_in_period: HashMap<Option<String>, u32>,
    /// Attempts started in the current tenth of that period ([`tenth_start`]).
    pub started_in_tenth: HashMap<Option<String>, u32>,
}

/// When the current tenth of a rate's period began (milliseconds since the epoch, like
/// `now_ms`): tenths are aligned on the clock, not on the last start. A claim that comes a
/// little after a tenth begins then does not push the next tenth back by its delay, so a
/// worker that looks again every few milliseconds holds the rate itself instead of falling
/// short of it by its lag (a sliding tenth made 50/s run at about 45/s).
pub fn tenth_start(now_ms: i64, period_ms: u64) -> i64 {
    let tenth = i64::try_from(period_ms / 10).unwrap_or(i64::MAX).max(1);
    now_ms - now_ms.rem_euclid(tenth)
}

/// Which of the waiting `candidates` (id and key, best first: priority, then age) a claim of
/// at most `want` items takes under `limits`, given what `usage` counts.
pub fn pick(
    limits: &FlowControl,
    candidates: &[(i64, Option<String>)],
    usage: &FlowUsage,
    want: usize,
) -> Vec<i64> {
    let mut taken: HashMap<&Option<String>, u32> = HashMap::new();
    let mut picked = Vec::new();
    for (id, key) in candidates {
        if picked.len() >= want {
            break;
        }
        let more = *taken.get(key).unwrap_or(&0);
        let count = |map: &HashMap<Option<String>, u32>| map.get(key).copied().unwrap_or(0);
        if let Some(max) = limits.concurrency
            && count(&usage.running) + more >= max
        {
            continue;
        }
        if let Some(rate) = limits.rate {
            let tenth = rate.count.div_ceil(10).max(1);
            if count(&usage.started_in_period) + more >= rate.count
                || count(&usage.started_in_tenth) + more >= tenth
            {
                continue;
            }
        }
        *taken.entry(key).or_default() += 1;
        picked.push(*id);
    }
    picked
}

/// The name a store records the starts of orchestrator `name` under (for its rate), apart
/// from those of an activity of the same name.
pub fn orchestrator_starts(name: &str) -> String {
    format!("orchestrator:{name}")
}

/// How many waiting items per key a claim needs to look at: no key can take more than this.
pub fn per_key_window(limits: &FlowControl, want: usize) -> usize {
    let mut window = want;
    if let Some(max) = limits.concurrency {
        window = window.min(max as usize);
    }
    if let Some(rate) = limits.rate {
        window = window.min(rate.count.div_ceil(10).max(1) as usize);
    }
    window.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Option<String> {
        Some(k.to_owned())
    }

    #[test]
    fn concurrency_per_key_counts_what_runs_and_what_this_claim_takes() {
        let limits = FlowControl::new().concurrency(2).key("/customer");
        let mut usage = FlowUsage::default();
        usage.running.insert(key("a"), 1);
        let candidates = vec![
            (1, key("a")),
            (2, key("a")),
            (3, key("b")),
            (4, key("b")),
            (5, key("b")),
        ];
        assert_eq!(pick(&limits, &candidates, &usage, 10), vec![1, 3, 4]);
        assert_eq!(pick(&limits, &candidates, &usage, 2), vec![1, 3]);
    }

    #[test]
    fn tenths_are_aligned_on_the_clock() {
        // 50/s: tenths of 100 ms, starting at whole tenths whatever the time of the claim.
        assert_eq!(tenth_start(1_000, 1_000), 1_000);
        assert_eq!(tenth_start(1_099, 1_000), 1_000);
        assert_eq!(tenth_start(1_100, 1_000), 1_100);
        // A period under 10 ms still has tenths of at least 1 ms.
        assert_eq!(tenth_start(1_234, 5), 1_234);
    }

    #[test]
    fn a_rate_spreads_starts_over_the_period() {
        let limits = FlowControl::new().rate(50, Duration::from_secs(1));
        let candidates: Vec<(i64, Option<String>)> = (0..20).map(|id| (id, None)).collect();
        let mut usage = FlowUsage::default();
        // A tenth of the rate (5) per tenth of the period.
        assert_eq!(pick(&limits, &candidates, &usage, 20).len(), 5);
        usage.started_in_tenth.insert(None, 3);
        assert_eq!(pick(&limits, &candidates, &usage, 20).len(), 2);
        usage.started_in_tenth.clear();
        usage.started_in_period.insert(None, 49);
        assert_eq!(pick(&limits, &candidates, &usage, 20).len(), 1);
    }

    #[test]
    fn keys_come_from_the_input() {
        let limits = FlowControl::new().concurrency(1).key("/order/region");
        let input = Payload::encode(&serde_json::json!({"order": {"region": "eu"}})).unwrap();
        assert_eq!(limits.key_of(&input).as_deref(), Some("eu"));
        let number = Payload::encode(&serde_json::json!({"order": {"region": 7}})).unwrap();
        assert_eq!(limits.key_of(&number).as_deref(), Some("7"));
        assert_eq!(limits.key_of(&Payload::null()).as_deref(), Some("null"));
        assert_eq!(FlowControl::new().concurrency(1).key_of(&input), None);
    }

    #[test]
    fn rates_parse_and_bad_limits_are_clear_errors() {
        assert_eq!(
            FlowControl::parse_rate("50/s"),
            Ok(Rate {
                count: 50,
                period_ms: 1_000
            })
        );
        assert_eq!(FlowControl::parse_rate("3/250ms").unwrap().period_ms, 250);
        assert!(
            FlowControl::parse_rate("50")
                .unwrap_err()
                .contains("not a rate")
        );
        let error = |limits: FlowControl| limits.check("charge").unwrap_err().to_string();
        assert!(error(FlowControl::new().concurrency(0)).contains("concurrency limit of 0"));
        assert!(error(FlowControl::new().rate(0, Duration::from_secs(1))).contains("rate of 0"));
        assert!(error(FlowControl::new().rate(5, Duration::ZERO)).contains("period"));
        assert!(error(FlowControl::new().concurrency(1).key("customer")).contains("JSON pointer"));
        assert!(error(FlowControl::new()).contains("sets no limit"));
    }
}

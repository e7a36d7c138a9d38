//! Cron expressions: parsed once into one bit set per field, then asked for the first time
//! after an instant in a time zone.
//!
//! Five fields (`minute hour day-of-month month day-of-week`, at second 0) or six (a leading
//! `second`). Each field is `*`, a value, a range `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a
//! comma-separated list of those; months and weekdays also take names (`JAN`, `MON`), Sunday
//! is `0` or `7`, and `?` means `*` in the two day fields. When both day fields are
//! restricted, a day matching either one fires (as in Vixie cron). `@yearly`, `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly` are shorthands.
//!
//! Local times a daylight-saving change skips do not fire; a local time it repeats fires
//! once, at its first occurrence.

use std::fmt;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Timelike};
use chrono::{LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Both day fields restricted: a day matching either fires.
    days_either: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One field's name, bounds and value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// How far ahead [`Cron::next_after`] looks before it gives up (an expression such as
/// `0 0 30 2 *` never fires).
const SEARCH_YEARS: i32 = 5;

impl Cron {
    /// Parses `text`; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "`{trimmed}` is not a cron shorthand; use @yearly, @monthly, @weekly, \
                     @daily or @hourly, or five or six fields"
                ));
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "cron expression `{trimmed}` has {n} field{}; it needs 5 (minute hour \
                     day-of-month month day-of-week) or 6 (with a leading second)",
                    if n == 1 { "" } else { "s" }
                ));
            }
        };
        let mut weekdays = parse_field(&WEEKDAY, rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let day_any = is_any(rest[2]);
        let weekday_any = is_any(rest[4]);
        let cron = Cron {
            text: trimmed.to_owned(),
            seconds: parse_field(&SECOND, second)?,
            minutes: parse_field(&MINUTE, rest[0])?,
            hours: parse_field(&HOUR, rest[1])?,
            days: parse_field(&DAY, rest[2])?,
            months: parse_field(&MONTH, rest[3])?,
            weekdays,
            days_either: !day_any && !weekday_any,
        };
        Ok(cron)
    }

    /// The first time strictly after `after` that the expression matches in `tz`, or `None`
    /// if it matches nothing in the next five years.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).naive_local();
        let mut t = start.with_nanosecond(0)? + ChronoDuration::seconds(1);
        let last_year = start.year() + SEARCH_YEARS;
        while t.year() <= last_year {
            if !has(self.months, t.month()) {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            let Some(hour) = next_set(self.hours, t.hour(), 23) else {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            };
            if hour != t.hour() {
                t = t.date().and_hms_opt(hour, 0, 0)?;
            }
            let Some(minute) = next_set(self.minutes, t.minute(), 59) else {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + ChronoDuration::hours(1);
                continue;
            };
            if minute != t.minute() {
                t = t.date().and_hms_opt(t.hour(), minute, 0)?;
            }
            let Some(second) = next_set(self.seconds, t.second(), 59) else {
                t = t.date().and_hms_opt(t.hour(), t.minute(), 0)? + ChronoDuration::minutes(1);
                continue;
            };
            t = t.date().and_hms_opt(t.hour(), t.minute(), second)?;
            match tz.from_local_datetime(&t) {
                LocalResult::Single(at) => return Some(at.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, _) if first.with_timezone(&Utc) > after => {
                    return Some(first.with_timezone(&Utc));
                }
                // Repeated (already fired at its first occurrence) or skipped by the clock
                // change: look further.
                _ => t += ChronoDuration::seconds(1),
            }
        }
        None
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let day = has(self.days, date.day());
        let weekday = has(self.weekdays, date.weekday().num_days_from_sunday());
        if self.days_either {
            day || weekday
        } else {
            day && weekday
        }
    }
}

fn has(set: u64, value: u32) -> bool {
    set & (1 << value) != 0
}

/// The smallest value in `set` that is at least `from` and at most `max`.
fn next_set(set: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|v| has(set, *v))
}

fn first_of_next_month(t: NaiveDateTime) -> Option<NaiveDateTime> {
    let (year, month) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)
}

fn is_any(text: &str) -> bool {
    text == "*" || text == "?"
}

fn parse_field(field: &Field, text: &str) -> Result<u64, String> {
    let mut set = 0u64;
    for part in text.split(',') {
        set |= parse_part(field, part)
            .map_err(|why| format!("cron field {} `{text}`: {why}", field.name))?;
    }
    Ok(set)
}

fn parse_part(field: &Field, part: &str) -> Result<u64, String> {
    let (range, step) = match part.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step
                .parse()
                .map_err(|_| format!("step `{step}` is not a number"))?;
            if step == 0 {
                return Err("a step of 0 never advances".to_owned());
            }
            (range, step)
        }
        None => (part, 1),
    };
    let (low, high) = if is_any(range) {
        if range == "?" && field.name != DAY.name && field.name != WEEKDAY.name {
            return Err("`?` is only for the day fields".to_owned());
        }
        (field.min, if field.max == 7 { 6 } else { field.max })
    } else if let Some((a, b)) = range.split_once('-') {
        let (a, b) = (value(field, a)?, value(field, b)?);
        if a > b {
            return Err(format!("range {a}-{b} runs backwards"));
        }
        (a, b)
    } else {
        let a = value(field, range)?;
        // `a/n` runs from `a` to the end of the field.
        (a, if part.contains('/') { field.max } else { a })
    };
    let mut set = 0u64;
    let mut v = low;
    while v <= high {
        set |= 1 << v;
        v += step;
    }
    Ok(set)
}

fn value(field: &Field, text: &str) -> Result<u32, String> {
    if let Some(i) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(i as u32 + if field.name == MONTH.name { 1 } else { 0 });
    }
    let v: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("`{text}` is not a number")
        } else {
            format!(
                "`{text}` is neither a number nor one of {}",
                field.names.join(" ")
            )
        }
    })?;
    if v < field.min || v > field.max {
        return Err(format!("{v} is out of range {}-{}", field.min, field.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn next(expr: &str, after: &str, tz: Tz) -> String {
        Cron::parse(expr)
            .unwrap()
            .next_after(utc(after), tz)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:07:30Z", Tz::UTC),
            "2026-01-01T10:15:00+00:00"
        );
        assert_eq!(
            next("* * * * * *", "2026-01-01T10:07:30Z", Tz::UTC),
            "2026-01-01T10:07:31+00:00"
        );
        assert_eq!(
            next("30 0 3 * * *", "2026-01-01T10:07:30Z", Tz::UTC),
            "2026-01-02T03:00:30+00:00"
        );
    }

    #[test]
    fn names_lists_ranges_and_steps() {
        // Every weekday at 09:00 and 17:30.
        let expr = "0 0,30 9,17 * * MON-FRI";
        let cron = Cron::parse(expr).unwrap();
        let mut t = utc("2026-01-02T12:00:00Z"); // a Friday
        let mut fired = Vec::new();
        for _ in 0..5 {
            t = cron.next_after(t, Tz::UTC).unwrap();
            fired.push(t.format("%a %H:%M").to_string());
        }
        assert_eq!(
            fired,
            [
                "Fri 17:00",
                "Fri 17:30",
                "Mon 09:00",
                "Mon 09:30",
                "Mon 17:00"
            ]
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-02-01T00:00:00Z", Tz::UTC),
            "2026-07-01T00:00:00+00:00"
        );
        // Sunday as 7.
        assert_eq!(
            next("0 12 * * 7", "2026-01-01T00:00:00Z", Tz::UTC),
            "2026-01-04T12:00:00+00:00"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday.
        let cron = Cron::parse("0 0 13 * 5").unwrap();
        let first = cron
            .next_after(utc("2026-02-01T00:00:00Z"), Tz::UTC)
            .unwrap();
        assert_eq!(first.to_rfc3339(), "2026-02-06T00:00:00+00:00");
        let second = cron
            .next_after(utc("2026-02-12T00:00:00Z"), Tz::UTC)
            .unwrap();
        assert_eq!(second.to_rfc3339(), "2026-02-13T00:00:00+00:00");
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // 03:00 in Paris is 02:00 UTC in winter.
        assert_eq!(
            next("0 3 * * *", "2026-01-10T12:00:00Z", paris),
            "2026-01-11T02:00:00+00:00"
        );
        // 2026-03-29: 02:00-03:00 local does not exist; 02:30 does not fire that day.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", paris),
            "2026-03-30T00:30:00+00:00"
        );
        // 2026-10-25: 02:30 local happens twice; it fires once, at the first.
        let cron = Cron::parse("30 2 * * *").unwrap();
        let first = cron.next_after(utc("2026-10-24T12:00:00Z"), paris).unwrap();
        assert_eq!(first.to_rfc3339(), "2026-10-25T00:30:00+00:00");
        let again = cron.next_after(first, paris).unwrap();
        assert_eq!(again.to_rfc3339(), "2026-10-26T01:30:00+00:00");
    }

    #[test]
    fn shorthands() {
        assert_eq!(
            next("@daily", "2026-01-01T10:00:00Z", Tz::UTC),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@hourly", "2026-01-01T10:00:00Z", Tz::UTC),
            "2026-01-01T11:00:00+00:00"
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z", Tz::UTC), "");
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let error = |expr: &str| Cron::parse(expr).unwrap_err();
        assert!(
            error("* * *").contains("has 3 fields"),
            "{}",
            error("* * *")
        );
        assert!(error("61 * * * *").contains("cron field minute `61`: 61 is out of range 0-59"));
        assert!(error("* 25 * * *").contains("hour"));
        assert!(error("* * * FOO *").contains("`FOO` is neither a number nor one of JAN"));
        assert!(error("*/0 * * * *").contains("a step of 0"));
        assert!(error("5-1 * * * *").contains("runs backwards"));
        assert!(error("@often").contains("not a cron shorthand"));
        assert!(error("? * * * *").contains("only for the day fields"));
    }
}

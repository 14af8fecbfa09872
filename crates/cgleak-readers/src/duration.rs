//! How long, as every flag of cgleak takes it (`agent --interval`, `check --incidents-since`,
//! `logs --since`, `lab --duration`, `fix --min-interval`, `fix gc --min-age`, ...): a number
//! and a unit, `500ms`, `30s`, `10m`, `1h`, `2d`, `1w`, several from the largest down
//! (`1h30m`, `2d12h`), in jiff's friendly format (so `1.5h` and `1 hour 30 minutes` too).
//! A day is 24 hours. Months and years, which have no fixed length, negative durations and
//! units below a millisecond are refused. A bare number is seconds only for the flags that
//! take it ([`Accept::bare_seconds`]), and zero only where it means something ([`Accept::zero`]).

use std::time::Duration;

use jiff::fmt::friendly::SpanParser;
use jiff::SpanRelativeTo;

/// What a flag takes beyond a number with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// `25` is 25 seconds.
    pub bare_seconds: bool,
    /// A duration of zero (`0`, `0s`): e.g. "no rate limit", "leave the logs out".
    pub zero: bool,
}

impl Accept {
    /// More than zero; a bare number is seconds (`agent --interval`, `lab --duration`).
    pub const POSITIVE: Accept = Accept { bare_seconds: true, zero: false };
    /// Zero or more; a bare number is seconds (`fix --min-interval`, `fix gc --min-age`).
    pub const OR_ZERO: Accept = Accept { bare_seconds: true, zero: true };
    /// Zero or more, always with a unit but `0` (`check --incidents-since`, `logs --since`,
    /// where a bare number could be taken for a time).
    pub const WITH_UNIT: Accept = Accept { bare_seconds: false, zero: true };
}

/// The forms an error message suggests.
const EXAMPLES: &str = "e.g. 500ms, 90s, 10m, 1h30m, 2d";

static PARSER: SpanParser = SpanParser::new();

/// `s` as a duration in the grammar above; the error says why not, quoting `s`.
pub fn parse_duration(s: &str, accept: Accept) -> Result<Duration, String> {
    let t = s.trim();
    let bad = |why: String| format!("{s:?} is not a duration: {why} ({EXAMPLES})");
    if t.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().map_err(|_| bad("the number is too large".into()))?;
        if !accept.bare_seconds && n != 0 {
            return Err(bad(format!("a unit is needed after {t} (ms, s, m, h, d, w)")));
        }
        return positive(Duration::from_secs(n), s, accept);
    }
    if t.starts_with('-') || t.ends_with("ago") {
        return Err(bad("it cannot be negative".into()));
    }
    if let Some(u) = unknown_unit(t) {
        return Err(bad(format!("unknown unit {u:?} (use ms, s, m, h, d or w)")));
    }
    let span = PARSER.parse_span(t).map_err(|e| bad(jiff_reason(&e.to_string())))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(bad("months and years have no fixed length: use d or w".into()));
    }
    if span.get_microseconds() != 0 || span.get_nanoseconds() != 0 {
        return Err(bad("the smallest unit is the millisecond (ms)".into()));
    }
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| bad("it is too long".into()))?;
    positive(d, s, accept)
}

fn positive(d: Duration, s: &str, accept: Accept) -> Result<Duration, String> {
    if d.is_zero() && !accept.zero {
        return Err(format!("{s:?}: the duration must be more than 0"));
    }
    Ok(d)
}

/// The first word of `t` that is no unit jiff knows (`x` of `10x`).
fn unknown_unit(t: &str) -> Option<&str> {
    t.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).find(|w| PARSER.parse_span(format!("1{w}")).is_err())
}

/// jiff's reason without its preamble, in the words of this grammar where they differ.
fn jiff_reason(e: &str) -> String {
    let why = e.rsplit_once("duration format: ").map_or(e, |(_, w)| w);
    if why.contains("unit designator suffix") {
        "a unit is needed after each number (ms, s, m, h, d, w)".into()
    } else if why.contains("must be written from largest to smallest") {
        "units go from the largest down, each once (1h30m, not 30m1h)".into()
    } else if why.contains("overflow") || why.contains("too big") {
        "it is too long".into()
    } else {
        why.to_string()
    }
}

/// A duration as the grammar writes it: `25s`, `1h30m`, `1h1s`, `500ms` (what is printed
/// can be given back to a flag).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_forms_users_write() {
        for (text, d) in [
            ("30s", SECS(30)),
            ("90s", SECS(90)),
            ("10m", SECS(600)),
            ("1h", SECS(3600)),
            ("2d", SECS(2 * 86_400)),
            ("1w", SECS(7 * 86_400)),
            ("1h30m", SECS(5400)),
            ("1m30s", SECS(90)),
            ("2d12h", SECS(60 * 3600)),
            ("500ms", Duration::from_millis(500)),
            ("1s500ms", Duration::from_millis(1500)),
            (" 25s ", SECS(25)),
            ("1.5h", SECS(5400)),
            ("1 hour 30 minutes", SECS(5400)),
            ("1h 30m", SECS(5400)),
        ] {
            for accept in [Accept::POSITIVE, Accept::OR_ZERO, Accept::WITH_UNIT] {
                assert_eq!(parse_duration(text, accept), Ok(d), "{text:?} {accept:?}");
            }
        }
    }

    #[test]
    fn bare_numbers_and_zero_where_a_flag_takes_them() {
        assert_eq!(parse_duration("25", Accept::POSITIVE), Ok(SECS(25)));
        assert_eq!(parse_duration("3600", Accept::OR_ZERO), Ok(SECS(3600)));
        assert!(parse_duration("25", Accept::WITH_UNIT).unwrap_err().contains("a unit is needed after 25"));
        assert_eq!(parse_duration("0", Accept::OR_ZERO), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s", Accept::OR_ZERO), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0", Accept::WITH_UNIT), Ok(Duration::ZERO));
        for zero in ["0", "0s", "0m", "0ms"] {
            assert!(parse_duration(zero, Accept::POSITIVE).unwrap_err().contains("more than 0"), "{zero}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("s", "a unit value"),
            ("10x", "unknown unit \"x\""),
            ("1h30", "a unit is needed"),
            ("-5s", "negative"),
            ("5s ago", "negative"),
            ("1mo", "no fixed length"),
            ("2y", "no fixed length"),
            ("500us", "millisecond"),
            ("0.5ms", "millisecond"),
            ("30m1h", "largest down"),
            ("99999999999999999999", "too large"),
            ("99999999999999999999s", "too long"),
            ("999999999999999999h", "too long"),
            ("soon", "unknown unit"),
            ("yesterday", "unknown unit"),
        ] {
            let e = parse_duration(bad, Accept::OR_ZERO).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.starts_with(&format!("{bad:?}")), "the error quotes what was given: {e}");
        }
    }

    #[test]
    fn durations_print_as_users_write_them_and_read_back() {
        for (d, text) in [(SECS(25), "25s"), (SECS(5400), "1h30m"), (SECS(3601), "1h1s"), (Duration::from_millis(500), "500ms"), (SECS(2 * 86_400), "48h")] {
            assert_eq!(human_duration(d), text);
            assert_eq!(parse_duration(text, Accept::POSITIVE), Ok(d), "{text}");
        }
    }
}

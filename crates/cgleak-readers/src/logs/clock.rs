//! Times in logs: epoch seconds to RFC 3339, the leading timestamp of a line, the
//! `--since` argument and the offset of the zone that times written without one (syslog,
//! klog) are read in: `--log-timezone`, else the host's `/etc/localtime` under a
//! `--host-root` (a DaemonSet pod's own zone is not the node's), else this process's zone.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::tz::{Offset, TimeZone};

use crate::duration::{self, Accept};
use crate::HostPaths;

/// The zone chosen at start ([`set_log_timezone`]); unset: this process's local zone.
static LOG_TZ: OnceLock<TimeZone> = OnceLock::new();

/// A TZif file is a few KiB; anything bigger is not one.
const MAX_TZIF: u64 = 1 << 20;

/// Read times without a zone in `tz` from now on (once, at start).
pub fn set_log_timezone(tz: TimeZone) {
    let _ = LOG_TZ.set(tz);
}

/// The zone times are shown in: the one [`set_log_timezone`] chose (the node's), else this
/// process's.
pub fn display_zone() -> TimeZone {
    LOG_TZ.get().cloned().unwrap_or_else(TimeZone::system)
}

/// `+05:30`, `-06:00`, `+0530`, `-06` as an offset.
fn fixed_offset(s: &str) -> Option<Offset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) || (rest.contains(':') && rest.len() != 5) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
    if h > 25 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// The zone `--log-timezone` names: `UTC`, a fixed offset (`-06:00`), or an IANA name
/// (`America/Chicago`) read from the host's `/usr/share/zoneinfo` (under `--host-root`),
/// else from this process's.
pub fn zone_named(host: &HostPaths, name: &str) -> Result<TimeZone, String> {
    let n = name.trim();
    if n.eq_ignore_ascii_case("utc") || n == "Z" {
        return Ok(TimeZone::UTC);
    }
    if let Some(off) = fixed_offset(n) {
        return Ok(TimeZone::fixed(off));
    }
    let plain = !n.is_empty() && !n.starts_with('/') && n.split('/').all(|c| !c.is_empty() && c != "." && c != "..") && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if !plain {
        return Err(format!("--log-timezone {name:?}: not a zone name (America/Chicago), UTC or an offset (-06:00)"));
    }
    let path = Path::new("/usr/share/zoneinfo").join(n);
    if let Ok(bytes) = host.read_bytes(&path, MAX_TZIF) {
        if let Ok(tz) = TimeZone::tzif(n, &bytes) {
            return Ok(tz);
        }
    }
    TimeZone::get(n).map_err(|e| format!("--log-timezone {name:?}: no such zone in {} or this system's zoneinfo ({e})", host.host(&path).display()))
}

/// The host's own zone, from `/etc/localtime` under `--host-root` (None on the host itself,
/// where the process's zone is the host's, and when the file is missing or not TZif).
pub fn host_zone(host: &HostPaths) -> Option<TimeZone> {
    if host.is_host_root() {
        return None;
    }
    let bytes = host.read_bytes("/etc/localtime", MAX_TZIF).ok()?;
    TimeZone::tzif("localtime", &bytes).ok()
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Days since 1970-01-01 of a date (jiff's calendar). A day past the month's end rolls into
/// the next month, as the wall-clock fields of a log line are taken at face value.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let first = i16::try_from(y).ok().zip(i8::try_from(m).ok()).and_then(|(y, m)| jiff::civil::Date::new(y, m, 1).ok());
    let Some(first) = first else { return i64::MIN / 4 };
    let epoch = jiff::civil::date(1970, 1, 1);
    let to_first = first.since((jiff::Unit::Day, epoch)).map(|s| i64::from(s.get_days())).unwrap_or(i64::MIN / 4);
    to_first + i64::from(d) - 1
}

/// The date of a day number since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let d = jiff::civil::date(1970, 1, 1).checked_add(jiff::Span::new().days(z)).unwrap_or(jiff::civil::Date::MAX);
    (i64::from(d.year()), d.month() as u32, d.day() as u32)
}

/// The UTC year of an epoch time.
pub fn year_of(epoch: i64) -> i32 {
    jiff::Timestamp::from_second(epoch).map(|t| i32::from(t.to_zoned(TimeZone::UTC).year())).unwrap_or(1970)
}

/// `2023-12-22T08:00:00.498519Z` from microseconds since the epoch (journald
/// `__REALTIME_TIMESTAMP`, kmsg time plus boot time).
pub fn rfc3339_usec(usec: u64) -> String {
    let t = i64::try_from(usec).ok().and_then(|u| jiff::Timestamp::from_microsecond(u).ok()).unwrap_or(jiff::Timestamp::MAX);
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// `2023-12-22T08:00:00Z` from seconds since the epoch.
pub fn rfc3339_secs(secs: i64) -> String {
    let t = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::MAX);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time read from a log. `secs` counts from the epoch as if the wall-clock fields
/// were UTC; `zoned` says whether the text gave a zone (then `secs` is true UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogTime {
    pub secs: i64,
    pub zoned: bool,
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
}

fn valid(mo: u32, d: u32, h: u32, mi: u32, s: u32) -> bool {
    (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s <= 60
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|+hh:mm|+hhmm]` at the start of `b`, with the
/// number of bytes it took.
pub fn parse_rfc3339(b: &[u8]) -> Option<(LogTime, usize)> {
    let y = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b' ' | b't')) {
        return None;
    }
    let (mo, d) = (digits(b, 5, 2)?, digits(b, 8, 2)?);
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let (h, mi, s) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !valid(mo, d, h, mi, s) {
        return None;
    }
    let mut i = 19;
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let mut secs = days_from_civil(y as i64, mo, d) * 86_400 + (h * 3600 + mi * 60 + s) as i64;
    let zoned = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            true
        }
        Some(&c @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            let (om, n) = if b.get(i + 3) == Some(&b':') { (digits(b, i + 4, 2)?, 6) } else { (digits(b, i + 3, 2).unwrap_or(0), if digits(b, i + 3, 2).is_some() { 5 } else { 3 }) };
            let off = (oh * 3600 + om * 60) as i64;
            secs -= if c == b'+' { off } else { -off };
            i += n;
            true
        }
        _ => false,
    };
    Some((LogTime { secs, zoned }, i))
}

const MONTHS: [&[u8; 3]; 12] = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// The time a log line starts with, zone-less unless the text has a zone: RFC 3339
/// (rsyslog high precision, containerd), BSD syslog `Dec 22 08:00:00` and klog
/// `E1222 08:00:00.498519` (both without a year: `year` is assumed).
pub fn leading_time(line: &[u8], year: i32) -> Option<LogTime> {
    if let Some((t, _)) = parse_rfc3339(line) {
        return Some(t);
    }
    let hms = |at: usize| -> Option<u32> {
        if line.get(at + 2) != Some(&b':') || line.get(at + 5) != Some(&b':') {
            return None;
        }
        let (h, mi, s) = (digits(line, at, 2)?, digits(line, at + 3, 2)?, digits(line, at + 6, 2)?);
        (h < 24 && mi < 60 && s <= 60).then_some(h * 3600 + mi * 60 + s)
    };
    let at = |mo: u32, d: u32, s: u32| LogTime { secs: days_from_civil(year as i64, mo, d) * 86_400 + s as i64, zoned: false };
    // BSD syslog: "Dec 22 08:00:00" or "Dec  2 08:00:00".
    if let Some(mo) = MONTHS.iter().position(|m| line.starts_with(*m)) {
        if line.get(3) != Some(&b' ') {
            return None;
        }
        let d = match (line.get(4), line.get(5)) {
            (Some(b' '), Some(c)) if c.is_ascii_digit() => (c - b'0') as u32,
            _ => digits(line, 4, 2)?,
        };
        if line.get(6) != Some(&b' ') || !(1..=31).contains(&d) {
            return None;
        }
        return Some(at(mo as u32 + 1, d, hms(7)?));
    }
    // klog: "E1222 08:00:00.498519".
    if matches!(line.first(), Some(b'I' | b'W' | b'E' | b'F')) && line.get(5) == Some(&b' ') {
        let (mo, d) = (digits(line, 1, 2)?, digits(line, 3, 2)?);
        if (1..=12).contains(&mo) && (1..=31).contains(&d) {
            return Some(at(mo, d, hms(6)?));
        }
    }
    None
}

/// `--since`: a duration back from now in the grammar of every flag ([`crate::duration`]:
/// `90s`, `30m`, `1h`, `2d`, `1w`, `1h30m`; `0` is now) or a time (`2023-12-22`,
/// `2023-12-22 08:00:00`, RFC 3339; UTC unless a zone is given). Returns epoch seconds.
pub fn parse_since(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(d) = duration::parse_duration(t, Accept::WITH_UNIT) {
        return i64::try_from(d.as_secs()).ok().and_then(|d| now.checked_sub(d)).ok_or_else(|| format!("{s:?}: too far back"));
    }
    if let Some((lt, n)) = parse_rfc3339(t.as_bytes()) {
        if n == t.len() {
            return Ok(lt.secs);
        }
    }
    let b = t.as_bytes();
    if b.len() == 10 {
        if let Some((lt, _)) = parse_rfc3339(format!("{t}T00:00:00Z").as_bytes()) {
            return Ok(lt.secs);
        }
    }
    Err(format!("{s:?}: not a duration (30m, 1h, 2d) or a time (2023-12-22, 2023-12-22T08:00:00Z)"))
}

/// Seconds east of UTC, now, of the zone times written without one (syslog, klog) are taken
/// in: the one [`set_log_timezone`] chose, else this process's (TZ, /etc/localtime), 0 when
/// unknown.
pub fn local_offset() -> i64 {
    match LOG_TZ.get() {
        Some(tz) => i64::from(tz.to_offset(jiff::Timestamp::now()).seconds()),
        None => process_offset(),
    }
}

fn process_offset() -> i64 {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`,
    // a plain-data struct we own, and returns NULL on failure.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_by_jiff_round_trips_and_rolls_over_like_wall_clocks() {
        for z in (-800_000i64..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2016, 9, 1), 17_045);
        // Feb 30 of a log line is 2 March (non-leap year), as the fields say.
        assert_eq!(days_from_civil(2023, 2, 30), days_from_civil(2023, 3, 2));
        assert_eq!(rfc3339_usec(1_703_232_000_498_519), "2023-12-22T08:00:00.498519Z");
        assert_eq!(rfc3339_secs(1_703_232_000), "2023-12-22T08:00:00Z");
        assert_eq!(rfc3339_secs(-1), "1969-12-31T23:59:59Z");
        assert_eq!(year_of(1_703_232_000), 2023);
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 19_713, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2023, 12, 22), 19_713);
        assert_eq!(days_from_civil(2024, 2, 29) + 1, days_from_civil(2024, 3, 1));
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_usec(1_703_232_000_498_519), "2023-12-22T08:00:00.498519Z");
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
        let (t, n) = parse_rfc3339(b"2023-12-22T08:00:00.498519Z kubelet").unwrap();
        assert_eq!((t.secs, t.zoned, n), (1_703_232_000, true, 27));
        let (t, _) = parse_rfc3339(b"2023-12-22T09:30:00.1+01:30 x").unwrap();
        assert_eq!(t.secs, 1_703_232_000);
        let (t, _) = parse_rfc3339(b"2023-12-22T07:00:00-0100").unwrap();
        assert_eq!(t.secs, 1_703_232_000);
        let (t, n) = parse_rfc3339(b"2023-12-22 08:00:00 host").unwrap();
        assert_eq!((t.secs, t.zoned, n), (1_703_232_000, false, 19));
        assert!(parse_rfc3339(b"2023-13-22T08:00:00Z").is_none());
        assert!(parse_rfc3339(b"2023-12-22T08:00").is_none());
        assert!(parse_rfc3339(b"").is_none());
    }

    #[test]
    fn leading_times() {
        let t = leading_time(b"Dec 22 08:00:00 node-1 kubelet[811]: E1222 08:00:00.498519 ...", 2023).unwrap();
        assert_eq!(t, LogTime { secs: 1_703_232_000, zoned: false });
        let t = leading_time(b"Dec  2 08:00:00 node-1 kernel: x", 2023).unwrap();
        assert_eq!(t.secs, days_from_civil(2023, 12, 2) * 86_400 + 8 * 3600);
        let t = leading_time(b"E1222 08:00:00.498519    1234 kuberuntime_manager.go:1166] x", 2023).unwrap();
        assert_eq!(t.secs, 1_703_232_000);
        assert_eq!(leading_time(b"2023-12-22T08:00:00Z x", 1999).unwrap().secs, 1_703_232_000);
        for bad in [&b"Dec 32 08:00:00 x"[..], b"Dex 22 08:00:00", b"E1322 08:00:00.1", b"[  12.5] x", b"", b"Dec", b"E12"] {
            assert!(leading_time(bad, 2023).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn since_forms() {
        let now = 1_703_232_000;
        assert_eq!(parse_since("1h", now), Ok(now - 3600));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5400));
        assert_eq!(parse_since("2d", now), Ok(now - 2 * 86_400));
        assert_eq!(parse_since("2023-12-22", now), Ok(now - 8 * 3600));
        assert_eq!(parse_since("2023-12-22T08:00:00Z", now), Ok(now));
        assert_eq!(parse_since("2023-12-22 08:00:00", now), Ok(now));
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("1x", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert_eq!(parse_since("0", now), Ok(now));
        assert!(parse_since("10", now).is_err(), "a unit is needed");
        assert!(parse_since("99999999999999999999h", now).is_err());
    }
}

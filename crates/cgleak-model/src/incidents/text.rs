//! Byte-level reading of a log line's envelope: the syslog / journald / rsyslog prefix
//! (time, host, tag), the time forms inside the message (klog, RFC 3339, logfmt, JSON,
//! kernel `[seconds]`, `dmesg -T`), and time keys for ordering.
//!
//! Everything here works on `&[u8]` and never panics on any input: every index is
//! bounds-checked, and nothing assumes UTF-8.

use memchr::memmem;

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// The envelope of one line: what came before the program's own message.
#[derive(Debug, Default)]
pub(crate) struct Envelope<'a> {
    /// Time of the syslog-style prefix, already formatted (RFC 3339, or without zone for syslog).
    pub prefix_time: Option<PrefixTime<'a>>,
    pub host: Option<&'a [u8]>,
    /// Syslog tag without "[pid]" and ":" ("kubelet", "kernel", "dockerd").
    pub tag: Option<&'a [u8]>,
    /// The program's message (the whole line when there is no prefix).
    pub msg: &'a [u8],
    /// A container's output in the CRI log format (`<time> stdout|stderr F|P <msg>`).
    pub cri: bool,
}

/// A time read from the line's prefix, formatted only when an incident is built.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PrefixTime<'a> {
    /// `Dec 22 08:00:00[.ffffff]`: month index, day, `HH:MM:SS`, fraction (with its dot).
    Syslog { month: u8, day: u8, hms: &'a [u8], frac: &'a [u8] },
    /// An RFC 3339 time at the very start of the line (rsyslog, `journalctl -o short-iso`, CRI logs).
    Rfc3339(&'a [u8]),
}

impl PrefixTime<'_> {
    pub fn format(&self, year: i32) -> Option<String> {
        match *self {
            PrefixTime::Syslog { month, day, hms, frac } => Some(format!(
                "{year:04}-{:02}-{day:02}T{}{}",
                month + 1,
                String::from_utf8_lossy(hms),
                String::from_utf8_lossy(frac)
            )),
            PrefixTime::Rfc3339(b) => rfc3339_at(b, 0).map(|(s, _)| s),
        }
    }
}

pub(crate) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn digits(t: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = t.get(at..at.checked_add(n)?)?;
    let mut v: u32 = 0;
    for &c in s {
        if !is_digit(c) {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `HH:MM:SS` at `at`.
fn hms_at(t: &[u8], at: usize) -> bool {
    digits(t, at, 2).is_some_and(|h| h < 24)
        && t.get(at + 2) == Some(&b':')
        && digits(t, at + 3, 2).is_some_and(|m| m < 60)
        && t.get(at + 5) == Some(&b':')
        && digits(t, at + 6, 2).is_some_and(|s| s < 61)
}

/// Length of a run of digits starting at `at`.
fn digit_run(t: &[u8], at: usize) -> usize {
    t.get(at..).map_or(0, |s| s.iter().take_while(|c| is_digit(**c)).count())
}

/// `Mon DD HH:MM:SS[.frac]` at the start of `t`: the time and the bytes consumed.
fn syslog_time(t: &[u8]) -> Option<(PrefixTime<'_>, usize)> {
    let m = t.get(..3)?;
    let month = MONTHS.iter().position(|x| &x[..] == m)? as u8;
    if t.get(3) != Some(&b' ') {
        return None;
    }
    // Day: "22" or " 2" (space-padded) or "2".
    let mut i = 4;
    if t.get(i) == Some(&b' ') {
        i += 1;
    }
    let dlen = digit_run(t, i);
    if dlen == 0 || dlen > 2 {
        return None;
    }
    let day = digits(t, i, dlen)? as u8;
    if !(1..=31).contains(&day) {
        return None;
    }
    i += dlen;
    if t.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    if !hms_at(t, i) {
        return None;
    }
    let hms = &t[i..i + 8];
    i += 8;
    let mut frac: &[u8] = &[];
    if t.get(i) == Some(&b'.') {
        let n = digit_run(t, i + 1);
        if n > 0 {
            frac = &t[i..i + 1 + n];
            i += 1 + n;
        }
    }
    Some((PrefixTime::Syslog { month, day, hms, frac }, i))
}

/// An RFC 3339 / ISO 8601 time at `at`: `YYYY-MM-DD[T ]HH:MM:SS[.,frac][Z|±HH[:]MM]`.
/// Returns it normalized (`T`, `.`, `±HH:MM`) and the bytes consumed.
pub(crate) fn rfc3339_at(t: &[u8], at: usize) -> Option<(String, usize)> {
    let y = digits(t, at, 4)?;
    if t.get(at + 4) != Some(&b'-') || t.get(at + 7) != Some(&b'-') {
        return None;
    }
    let mo = digits(t, at + 5, 2)?;
    let d = digits(t, at + 8, 2)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if !matches!(t.get(at + 10), Some(b'T') | Some(b't') | Some(b' ')) || !hms_at(t, at + 11) {
        return None;
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{}", String::from_utf8_lossy(&t[at + 11..at + 19]));
    let mut i = at + 19;
    if matches!(t.get(i), Some(b'.') | Some(b',')) {
        let n = digit_run(t, i + 1);
        if n > 0 {
            out.push('.');
            out.push_str(&String::from_utf8_lossy(&t[i + 1..i + 1 + n]));
            i += 1 + n;
        }
    }
    match t.get(i) {
        Some(b'Z') | Some(b'z') => {
            out.push('Z');
            i += 1;
        }
        Some(&sign @ (b'+' | b'-')) => {
            if let Some(hh) = digits(t, i + 1, 2) {
                let (mm, used) =
                    if t.get(i + 3) == Some(&b':') { (digits(t, i + 4, 2), 6) } else { (digits(t, i + 3, 2), 5) };
                if let Some(mm) = mm {
                    out.push_str(&format!("{}{hh:02}:{mm:02}", sign as char));
                    i += used;
                }
            }
        }
        _ => {}
    }
    Some((out, i - at))
}

/// A syslog tag token: `kubelet:`, `kubelet[123]:`, `kernel:`, `[40982]:`. Returns the name.
fn tag_name(tok: &[u8]) -> Option<&[u8]> {
    let body = tok.strip_suffix(b":")?;
    if body.is_empty() || body.len() > 96 {
        return None;
    }
    let name = match memchr::memchr(b'[', body) {
        Some(i) if body.last() == Some(&b']') && body[i + 1..body.len() - 1].iter().all(|c| is_digit(*c)) => &body[..i],
        Some(_) => return None,
        None => body,
    };
    name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b'@')).then_some(name)
}

/// The syslog tag a message starts with (`systemd[1]: ...`), as user space writes records
/// to /dev/kmsg.
pub(crate) fn leading_tag(msg: &[u8]) -> Option<&[u8]> {
    tag_name(next_token(msg, 0).0)
}

fn next_token(t: &[u8], at: usize) -> (&[u8], usize) {
    let rest = t.get(at..).unwrap_or(&[]);
    let n = rest.iter().position(|c| *c == b' ' || *c == b'\t').unwrap_or(rest.len());
    (&rest[..n], at + n)
}

/// `<PRI>` at the start of a line (syslog priority, 1-3 digits): the bytes it takes.
fn pri_len(t: &[u8]) -> Option<usize> {
    if t.first() != Some(&b'<') {
        return None;
    }
    let n = digit_run(t, 1);
    ((1..=3).contains(&n) && t.get(1 + n) == Some(&b'>')).then_some(n + 2)
}

/// An RFC 5424 line after its `<PRI>`: `1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`,
/// `-` for a field left out, structured data `-` or `[..]` elements.
fn rfc5424(text: &[u8], at: usize) -> Option<Envelope<'_>> {
    if text.get(at..at + 2) != Some(&b"1 "[..]) {
        return None;
    }
    let mut i = at + 2;
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for f in fields.iter_mut() {
        let (tok, end) = next_token(text, i);
        if tok.is_empty() || text.get(end) != Some(&b' ') {
            return None;
        }
        *f = tok;
        i = end + 1;
    }
    let [time, host, app, _procid, _msgid] = fields;
    let prefix_time = match time {
        b"-" => None,
        t => match rfc3339_at(t, 0) {
            Some((_, n)) if n == t.len() => Some(PrefixTime::Rfc3339(t)),
            _ => return None,
        },
    };
    // Structured data: "-", or elements "[id k=\"v\"]..." whose quoted values may hold "]".
    if text.get(i) == Some(&b'-') {
        i += 1;
    } else {
        while text.get(i) == Some(&b'[') {
            let mut quoted = false;
            i += 1;
            loop {
                match text.get(i)? {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b']' if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
            i += 1;
        }
    }
    let mut msg = text.get(i..).unwrap_or(&[]);
    msg = msg.strip_prefix(b" ").unwrap_or(msg);
    // A UTF-8 message may start with a byte order mark (RFC 5424 6.4).
    msg = msg.strip_prefix("\u{feff}".as_bytes()).unwrap_or(msg);
    let named = |b: &'_ [u8]| -> bool { b != b"-" && b.len() <= 255 };
    Some(Envelope {
        prefix_time,
        host: named(host).then_some(host),
        tag: named(app).then_some(app).filter(|a| a.len() <= 96),
        msg,
        cri: false,
    })
}

/// Split `text` into its envelope. Lines without a known prefix are all message. A syslog
/// `<PRI>` before it (a raw syslog stream, rsyslog's RFC 5424 files) is skipped.
pub(crate) fn envelope(text: &[u8]) -> Envelope<'_> {
    if let Some(p) = pri_len(text) {
        if let Some(e) = rfc5424(text, p) {
            return e;
        }
        let rest = &text[p..];
        if syslog_time(rest).is_some() || rfc3339_at(rest, 0).is_some() {
            return envelope_after_pri(rest);
        }
        return Envelope { msg: text, ..Envelope::default() };
    }
    envelope_after_pri(text)
}

fn envelope_after_pri(text: &[u8]) -> Envelope<'_> {
    let (prefix_time, mut i) = if let Some((pt, n)) = syslog_time(text) {
        (pt, n)
    } else if let Some((_, n)) = rfc3339_at(text, 0) {
        (PrefixTime::Rfc3339(&text[..n]), n)
    } else {
        return Envelope { msg: text, ..Envelope::default() };
    };
    let mut env = Envelope { prefix_time: Some(prefix_time), msg: &[], ..Envelope::default() };
    if text.get(i) != Some(&b' ') {
        env.msg = text.get(i..).unwrap_or(&[]);
        return env;
    }
    i += 1;
    // Two spaces after the time: the host field is empty ("Oct 26 19:07:41  kubelet[1606]:").
    let empty_host = text.get(i) == Some(&b' ');
    while text.get(i) == Some(&b' ') {
        i += 1;
    }
    let (tok1, end1) = next_token(text, i);
    if let Some(name) = tag_name(tok1) {
        env.tag = Some(name);
        env.msg = skip_one_space(text, end1);
        return env;
    }
    if empty_host {
        env.msg = text.get(i..).unwrap_or(&[]);
        return env;
    }
    // CRI container log: "<time> stderr F <msg>".
    if tok1 == b"stdout" || tok1 == b"stderr" {
        let (tok2, end2) = next_token(text, end1 + 1);
        env.cri = tok2 == b"F" || tok2 == b"P";
        env.msg = if env.cri { skip_one_space(text, end2) } else { skip_one_space(text, end1) };
        return env;
    }
    let (tok2, end2) = next_token(text, end1 + 1);
    if !tok1.is_empty() && tok1.len() <= 255 {
        if let Some(name) = tag_name(tok2) {
            env.host = Some(tok1);
            env.tag = Some(name);
            env.msg = skip_one_space(text, end2);
            return env;
        }
    }
    env.msg = text.get(i..).unwrap_or(&[]);
    env
}

fn skip_one_space(t: &[u8], at: usize) -> &[u8] {
    let at = if t.get(at) == Some(&b' ') { at + 1 } else { at };
    t.get(at..).unwrap_or(&[])
}

/// klog header `E1222 08:00:00.498519` at `at`: formatted with `year`.
fn klog_at(t: &[u8], at: usize, year: i32) -> Option<String> {
    if !matches!(t.get(at), Some(b'I' | b'W' | b'E' | b'F')) {
        return None;
    }
    let mo = digits(t, at + 1, 2)?;
    let d = digits(t, at + 3, 2)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || t.get(at + 5) != Some(&b' ') || !hms_at(t, at + 6) {
        return None;
    }
    let mut s = format!("{year:04}-{mo:02}-{d:02}T{}", String::from_utf8_lossy(&t[at + 6..at + 14]));
    if t.get(at + 14) == Some(&b'.') {
        let n = digit_run(t, at + 15);
        if n > 0 {
            s.push_str(&String::from_utf8_lossy(&t[at + 14..at + 15 + n]));
        }
    }
    Some(s)
}

/// Where a klog header starts in `msg`: at its start, or (grep output, wrappers) after
/// `:`, a space or a quote within the first 256 bytes.
pub(crate) fn klog_pos(msg: &[u8]) -> Option<usize> {
    if klog_at(msg, 0, 0).is_some() {
        return Some(0);
    }
    let end = msg.len().min(256);
    (1..end).find(|&i| matches!(msg[i - 1], b':' | b' ' | b'"') && klog_at(msg, i, 0).is_some())
}

pub(crate) fn klog_time(msg: &[u8], year: i32) -> Option<String> {
    klog_pos(msg).and_then(|i| klog_at(msg, i, year))
}

/// Kernel `[  12345.678901]` at the start of `msg`: (seconds as printed, bytes consumed).
pub(crate) fn kernel_secs(msg: &[u8]) -> Option<(&[u8], usize)> {
    if msg.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while msg.get(i) == Some(&b' ') {
        i += 1;
    }
    let start = i;
    let n = digit_run(msg, i);
    if n == 0 {
        return None;
    }
    i += n;
    if msg.get(i) != Some(&b'.') {
        return None;
    }
    let f = digit_run(msg, i + 1);
    if f == 0 {
        return None;
    }
    i += 1 + f;
    if msg.get(i) != Some(&b']') {
        return None;
    }
    Some((&msg[start..i], i + 1))
}

/// `dmesg -T` prefix `[Thu Dec 12 10:00:00 2019]`: its time and the bytes it takes.
fn dmesg_t_at(msg: &[u8]) -> Option<(PrefixTime<'_>, i32, usize)> {
    if msg.first() != Some(&b'[') || msg.get(4) != Some(&b' ') {
        return None;
    }
    let (pt, n) = syslog_time(msg.get(5..)?)?;
    let at = 5 + n;
    if msg.get(at) != Some(&b' ') || msg.get(at + 5) != Some(&b']') {
        return None;
    }
    let year = digits(msg, at + 1, 4)? as i32;
    Some((pt, year, at + 6))
}

fn dmesg_t(msg: &[u8]) -> Option<String> {
    dmesg_t_at(msg).and_then(|(pt, year, _)| pt.format(year))
}

/// The kernel's own words in a line's message: after a `[seconds]` or `dmesg -T` stamp, a
/// `kernel:` tag (`journalctl -k -o short-monotonic`: "[21161.09] kernel:   cache: ...") and
/// the indentation of continuation lines.
pub(crate) fn kernel_body(msg: &[u8]) -> &[u8] {
    let mut m = msg;
    if let Some((_, n)) = kernel_secs(m) {
        m = &m[n..];
    } else if let Some((_, _, n)) = dmesg_t_at(m) {
        m = &m[n..];
    }
    let m = m.trim_ascii_start();
    m.strip_prefix(b"kernel:").unwrap_or(m).trim_ascii_start()
}

/// The time inside the message, best first: RFC 3339 at its start, logfmt `time="..."`,
/// JSON `"time"` / `"timestamp"` / `"ts"`, klog header, `dmesg -T`.
pub(crate) fn message_time(msg: &[u8], year: i32) -> Option<String> {
    let lead = msg.strip_prefix(b"[").unwrap_or(msg);
    if let Some((s, _)) = rfc3339_at(lead, 0) {
        return Some(s);
    }
    if let Some(s) = keyed_time(msg) {
        return Some(s);
    }
    if let Some(s) = klog_time(msg, year) {
        return Some(s);
    }
    if let Some(s) = lxc_time(msg) {
        return Some(s);
    }
    dmesg_t(msg)
}

/// lxc's log prefix `lxc 20160602083833.650 ERROR ...` (local time, no zone).
fn lxc_time(msg: &[u8]) -> Option<String> {
    let t = msg.trim_ascii_start().strip_prefix(b"lxc ")?;
    if digit_run(t, 0) != 14 {
        return None;
    }
    let (y, mo, d) = (digits(t, 0, 4)?, digits(t, 4, 2)?, digits(t, 6, 2)?);
    let (h, mi, s) = (digits(t, 8, 2)?, digits(t, 10, 2)?, digits(t, 12, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if t.get(14) == Some(&b'.') {
        let n = digit_run(t, 15);
        if n > 0 {
            out.push_str(&String::from_utf8_lossy(&t[14..15 + n]));
        }
    }
    Some(out)
}

/// logfmt `time="..."` (dockerd, containerd, cri-o) and JSON time fields, first occurrence,
/// only where the key starts a field (`runtime=` is not `time=`).
fn keyed_time(msg: &[u8]) -> Option<String> {
    for key in [&b"time=\""[..], b"\"time\":\"", b"\"timestamp\":\"", b"\"timestamp\":", b"\"ts\":"] {
        for pos in memmem::find_iter(msg, key).take(4) {
            if key[0] != b'"' && pos > 0 && !matches!(msg[pos - 1], b' ' | b'\t' | b'{' | b',') {
                continue;
            }
            let v = pos + key.len();
            if let Some((s, _)) = rfc3339_at(msg, v) {
                return Some(s);
            }
            if key != b"time=\"" && key != b"\"time\":\"" {
                if let Some(s) = epoch_at(msg, v) {
                    return Some(s);
                }
            }
        }
    }
    None
}

/// Unix seconds (`1472766268.564662218`, garden, zap) as RFC 3339 UTC.
fn epoch_at(t: &[u8], at: usize) -> Option<String> {
    let n = digit_run(t, at);
    // 9..=10 digits: 2001..2286; anything else is not a plausible log time.
    if !(9..=10).contains(&n) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(&t[at..at + n]).ok()?.parse().ok()?;
    let mut frac = String::new();
    if t.get(at + n) == Some(&b'.') {
        let f = digit_run(t, at + n + 1);
        if f > 0 {
            frac.push('.');
            frac.push_str(&String::from_utf8_lossy(&t[at + n + 1..at + n + 1 + f]));
        }
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = cgleak_readers::logs::clock::civil_from_days(days);
    Some(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z", rem / 3600, rem % 3600 / 60, rem % 60))
}


/// A key that orders the absolute times this module writes: (UTC seconds, nanoseconds).
/// Times without a zone are taken as UTC; relative kernel times ("+12.5s since boot") have none.
pub fn time_sort_key(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let y = i64::from(digits(b, 0, 4)?);
    let mo = digits(b, 5, 2)?;
    let d = digits(b, 8, 2)?;
    if b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') || !hms_at(b, 11) || !(1..=12).contains(&mo) {
        return None;
    }
    let (h, mi, se) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    let mut secs = cgleak_readers::logs::clock::days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let n = digit_run(b, i + 1);
        for k in 0..9 {
            nanos = nanos * 10 + if k < n { u32::from(b[i + 1 + k] - b'0') } else { 0 };
        }
        i += 1 + n;
    }
    if let Some(&sign @ (b'+' | b'-')) = b.get(i) {
        let off = i64::from(digits(b, i + 1, 2)? * 3600 + digits(b, i + 4, 2)? * 60);
        secs -= if sign == b'+' { off } else { -off };
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_prefix_with_host_and_pid() {
        let e = envelope(b"Dec 24 11:54:31 VM_16_11_centos dockerd[11419]: time=\"x\"");
        assert_eq!(e.host, Some(&b"VM_16_11_centos"[..]));
        assert_eq!(e.tag, Some(&b"dockerd"[..]));
        assert_eq!(e.msg, b"time=\"x\"");
        assert_eq!(e.prefix_time.unwrap().format(2018).unwrap(), "2018-12-24T11:54:31");
    }

    #[test]
    fn syslog_prefix_without_host() {
        let e = envelope(b"Dec 22 08:00:00  kubelet: E1222 08:00:00.498519   15276 pod_workers.go:190] x");
        assert_eq!(e.host, None);
        assert_eq!(e.tag, Some(&b"kubelet"[..]));
        assert_eq!(klog_time(e.msg, 2020).unwrap(), "2020-12-22T08:00:00.498519");
    }

    #[test]
    fn padded_day_and_fraction() {
        let e = envelope(b"Dec  2 08:00:00.123 node-1 kernel: [ 12.5] x");
        assert_eq!(e.prefix_time.unwrap().format(2024).unwrap(), "2024-12-02T08:00:00.123");
        assert_eq!(kernel_secs(e.msg).map(|(s, _)| s), Some(&b"12.5"[..]));
    }

    #[test]
    fn iso_prefix_and_cri_log() {
        let e = envelope(b"2023-12-22T08:00:00.123456+0000 node-1 kubelet[1]: hi");
        assert_eq!(e.prefix_time.unwrap().format(0).unwrap(), "2023-12-22T08:00:00.123456+00:00");
        assert_eq!(e.host, Some(&b"node-1"[..]));
        let e = envelope(b"2022-05-26T10:05:11.006685543+03:00 stderr F [2022/05/26] x");
        assert_eq!(e.host, None);
        assert_eq!(e.msg, b"[2022/05/26] x");
    }

    #[test]
    fn pri_and_rfc5424() {
        let e = envelope(b"<13>Dec  2 10:00:00 node myapp[99]: mkdir x");
        assert_eq!((e.tag, e.host, e.msg), (Some(&b"myapp"[..]), Some(&b"node"[..]), &b"mkdir x"[..]));
        let e = envelope(b"<30>1 2023-12-22T08:00:00.123456+00:00 node-1 kubelet 1146 - - E1222 x");
        assert_eq!((e.tag, e.host, e.msg), (Some(&b"kubelet"[..]), Some(&b"node-1"[..]), &b"E1222 x"[..]));
        assert_eq!(e.prefix_time.unwrap().format(0).unwrap(), "2023-12-22T08:00:00.123456+00:00");
        let e = envelope(b"<165>1 - - myapp - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App]\"][x@1 a=\"b\"] \xef\xbb\xbfmsg here");
        assert_eq!((e.tag, e.host, e.msg), (Some(&b"myapp"[..]), None, &b"msg here"[..]));
        assert!(e.prefix_time.is_none());
        // dmesg -r: a priority, then the kernel's seconds; no envelope.
        let e = envelope(b"<4>[ 2210.4] SLUB: Unable to allocate memory");
        assert_eq!((e.tag, e.msg), (None, &b"<4>[ 2210.4] SLUB: Unable to allocate memory"[..]));
        // Cut short: never a panic, no tag.
        for cut in [&b"<1>1 "[..], b"<1>1 - - app", b"<1>1 - - app - - [x", b"<999>", b"<>1 x"] {
            assert_eq!(envelope(cut).tag, None, "{cut:?}");
        }
        assert_eq!(leading_tag(b"systemd[1]: kubepods.slice: Failed"), Some(&b"systemd"[..]));
        assert_eq!(leading_tag(b"SLUB: Unable"), Some(&b"SLUB"[..]));
        assert!(envelope(b"2022-05-26T10:05:11.006685543+03:00 stderr F x").cri);
    }

    #[test]
    fn message_times() {
        assert_eq!(
            message_time(b"level=error time=\"2020-12-22T08:00:01.237276548+08:00\" x", 0).unwrap(),
            "2020-12-22T08:00:01.237276548+08:00"
        );
        assert_eq!(message_time(b"x runtime=\"2020-12-22T08:00:01Z\"", 0), None);
        assert_eq!(
            message_time(b"{\"timestamp\":\"1472766268.564662218\",\"source\":\"guardian\"}", 0).unwrap(),
            "2016-09-01T21:44:28.564662218Z"
        );
        assert_eq!(message_time(b"[Thu Dec 12 10:00:00 2019] SLUB: x", 0).unwrap(), "2019-12-12T10:00:00");
        assert_eq!(message_time(b"[2020-01-27T14:16:18.322Z] docker", 0).unwrap(), "2020-01-27T14:16:18.322Z");
        assert_eq!(
            message_time(b"x.log.ERROR.20180214-113740.15702:1593018:E0320 04:59:09.572336 15702 r.go:92] x", 2018)
                .unwrap(),
            "2018-03-20T04:59:09.572336"
        );
    }

    #[test]
    fn sort_keys_respect_zones() {
        let a = time_sort_key("2020-12-22T08:00:01+08:00").unwrap();
        let b = time_sort_key("2020-12-22T01:00:00Z").unwrap();
        assert!(a < b);
        assert_eq!(time_sort_key("+12.5s since boot"), None);
        assert_eq!(cgleak_readers::logs::clock::days_from_civil(2016, 9, 1), 17_045);
        assert_eq!(cgleak_readers::logs::clock::civil_from_days(17_045), (2016, 9, 1));
    }
}

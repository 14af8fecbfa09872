//! The node's logs as incidents: each source the reader layer reads goes through an
//! [`IncidentParser`] ([`IncidentParsers`]); `cgleak logs` prints what [`read_incidents`]
//! finds, `check` (and a fix's judge) look at [`recent_incidents`], the window of the last
//! hour or so, and the agent follows the logs ([`follow_incidents`]), counting each incident
//! once across restarts of a source ([`SeenIncidents`]).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use cgleak_readers::logline::LogLine;
use cgleak_readers::logs::journal::JournalSource;
use cgleak_readers::logs::read::{self, io_text, modified_at, Finding, FindingSink, ReadCtx, SinkMaker};
use cgleak_readers::logs::sources::{has_kmsg, Source, SourceReport};
use cgleak_readers::logs::split::LineSink;
use cgleak_readers::logs::{clock, files, follow};
use cgleak_readers::HostPaths;

use crate::incidents::{Incident, IncidentParser};
use crate::verdict::LogEvidence;

const DAY: i64 = 86_400;

/// Makes an incident parser for each source (or part of a file) the reader layer reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct IncidentParsers;

impl SinkMaker for IncidentParsers {
    type Found = Incident;
    type Sink<'e> = IncidentSink<'e>;

    fn sink<'e>(&'e self, reference_year: i32, emit: &'e mut dyn FnMut(Incident)) -> IncidentSink<'e> {
        IncidentSink { parser: IncidentParser::new(reference_year), found: Vec::new(), emit }
    }
}

/// Feeds lines to an incident parser and hands its incidents on, their syslog year set right.
pub struct IncidentSink<'e> {
    parser: IncidentParser,
    found: Vec<Incident>,
    emit: &'e mut dyn FnMut(Incident),
}

impl IncidentSink<'_> {
    fn drain(&mut self) {
        let now = clock::now_epoch();
        for mut i in self.found.drain(..) {
            roll_back_future_year(&mut i, now);
            (self.emit)(i);
        }
    }
}

impl FindingSink for IncidentSink<'_> {
    fn finish(&mut self) {
        self.parser.finish(&mut self.found);
        self.drain();
    }
}

impl LineSink for IncidentSink<'_> {
    fn find_candidate(&self, lines: &[u8]) -> Option<usize> {
        self.parser.find_candidate(lines)
    }
    fn may_match(&self, line: &[u8]) -> bool {
        self.parser.may_match(line)
    }
    fn pending(&self) -> bool {
        self.parser.pending()
    }
    fn line(&mut self, l: &LogLine<'_>) {
        self.parser.feed(l, &mut self.found);
        self.drain();
    }
    fn continuation(&mut self, l: &LogLine<'_>) -> bool {
        let taken = self.parser.feed_continuation(l, &mut self.found);
        self.drain();
        taken
    }
    fn resume_after(&mut self, before: &[u8]) {
        self.parser.resume_after(before);
    }
}

impl Finding for Incident {
    fn shift_line(&mut self, by: u64) {
        self.line += by;
    }

    fn size(&self) -> usize {
        let opt = [&self.time, &self.host, &self.cgroup_path, &self.pod_uid, &self.container_id].iter().map(|o| o.as_ref().map_or(0, |x| x.len())).sum::<usize>();
        std::mem::size_of::<Incident>() + self.raw.len() + self.source.len() + self.component.len() + opt
    }

    fn epoch(&self, local_offset: i64) -> Option<i64> {
        incident_epoch(self, local_offset)
    }
}

/// An incident's time in epoch seconds: zoned as given, zone-less in local time
/// (`local_offset` seconds east of UTC); None for kernel times relative to boot and lines
/// without a time.
pub fn incident_epoch(i: &Incident, local_offset: i64) -> Option<i64> {
    let (t, _) = clock::parse_rfc3339(i.time.as_deref()?.as_bytes())?;
    Some(if t.zoned { t.secs } else { t.secs - local_offset })
}

/// Syslog and klog times carry no year, and the parser takes the file's (or this) year:
/// a line logged on Dec 22 and read in January would land in the future. No log line is
/// from the future, so such a zone-less time belongs to the year before.
fn roll_back_future_year(i: &mut Incident, now: i64) {
    let Some(t) = i.time.as_deref() else { return };
    let Some((parsed, _)) = clock::parse_rfc3339(t.as_bytes()) else { return };
    // A day of slack covers any local time zone.
    if parsed.zoned || parsed.secs <= now + DAY {
        return;
    }
    if let Some(year) = t.get(..4).and_then(|y| y.parse::<i32>().ok()) {
        i.time = Some(format!("{:04}{}", year - 1, &t[4..]));
    }
}

/// Read one source to its end (or, following, until stopped) through an incident parser,
/// handing each incident that passes `--since` to `emit`.
pub fn read_incidents(src: &Source, ctx: &ReadCtx, emit: &mut dyn FnMut(Incident)) -> SourceReport {
    read::read_source(src, ctx, &IncidentParsers, emit)
}

/// Incidents of the last `window_secs` for `cgleak check` and a fix's judge: the host's
/// syslog-style files modified within the window (from the stretch of a big file that the
/// window covers), journald since the window start, and /dev/kmsg. Cheap, and never an
/// error: a source that cannot be read becomes a note. Incidents without a time are left
/// out (they cannot be placed in the window).
pub fn recent_incidents(host: &HostPaths, window_secs: i64, journal: Option<&dyn JournalSource>) -> LogEvidence {
    let now = clock::now_epoch();
    let cutoff = now - window_secs;
    let stop = AtomicBool::new(false);
    let ctx = ReadCtx { host, journal, since: Some(cutoff), follow: false, local_offset: clock::local_offset(), stop: &stop };
    let mut ev = LogEvidence { since: Some(clock::rfc3339_secs(cutoff)), ..LogEvidence::default() };
    let mut win = WindowIncidents::new(cutoff, now, ctx.local_offset);
    for p in files::default_log_files(host) {
        // A file last written before the window holds nothing from it.
        if modified_at(&p).is_none_or(|m| m < cutoff) {
            continue;
        }
        let name = host.to_host_path(&p).display().to_string();
        match read::read_window(&p, &name, cutoff, ctx.local_offset, &IncidentParsers, &mut |i| win.offer(i)) {
            Ok(source) => ev.sources.push(source),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => ev.notes.push(format!("{name}: {}", io_text(&e))),
        }
    }
    if journal.is_some() {
        let rep = read_incidents(&Source::default_journal(), &ctx, &mut |i| win.offer(i));
        match rep.error {
            Some(e) => ev.notes.push(format!("journald: {e}")),
            None => ev.sources.push("journald".into()),
        }
    }
    if has_kmsg(host) {
        let rep = read_incidents(&Source::Kmsg, &ctx, &mut |i| win.offer(i));
        match rep.error {
            Some(e) => ev.notes.push(e),
            None => ev.sources.push(rep.source),
        }
    }
    if win.dropped > 0 {
        ev.notes.push(format!(
            "{} more untrusted incidents in the window were counted, not kept: at most {MAX_UNTRUSTED_KEPT} are, as they are never evidence",
            win.dropped
        ));
    }
    ev.incidents = win.kept;
    ev
}

/// Untrusted incidents `check` keeps from its window: a tenant can print failed mkdirs as
/// fast as it likes, and they are never evidence; past this they are only counted.
const MAX_UNTRUSTED_KEPT: usize = 100;

/// The incidents of `check`'s window as the sources hand them on: those of its stretch of
/// time (zone-less times in local time), untrusted ones up to [`MAX_UNTRUSTED_KEPT`].
struct WindowIncidents {
    cutoff: i64,
    now: i64,
    local_offset: i64,
    kept: Vec<Incident>,
    untrusted: usize,
    dropped: u64,
}

impl WindowIncidents {
    fn new(cutoff: i64, now: i64, local_offset: i64) -> Self {
        WindowIncidents { cutoff, now, local_offset, kept: Vec::new(), untrusted: 0, dropped: 0 }
    }

    fn offer(&mut self, i: Incident) {
        // Without a time an incident cannot be placed in the window; nor can one more than a
        // day ahead (a zoned time of a wrong clock: zone-less ones are a year back already).
        if incident_epoch(&i, self.local_offset).is_none_or(|t| t < self.cutoff || t > self.now + DAY) {
            return;
        }
        if !i.trusted {
            if self.untrusted >= MAX_UNTRUSTED_KEPT {
                self.dropped += 1;
                return;
            }
            self.untrusted += 1;
        }
        self.kept.push(i);
    }
}

/// Follow the host's live logs for the agent ([`follow::spawn_followers`]): from where the
/// last `window_secs` start, then each incident as it is logged, handed to `emit` (which
/// may see an incident again after a source restarts: [`SeenIncidents`]). Returns each
/// source's name and whether it is there now.
pub fn follow_incidents(
    host: &HostPaths,
    window_secs: i64,
    stop: Arc<AtomicBool>,
    emit: Arc<dyn Fn(Incident) + Send + Sync>,
    note: Arc<dyn Fn(String) + Send + Sync>,
) -> Vec<(String, bool)> {
    follow::spawn_followers(host, window_secs, stop, Arc::new(IncidentParsers), emit, note)
}

/// Incidents remembered to count each once across restarts of a log source.
const MAX_SEEN_INCIDENTS: usize = 8192;

/// Incidents seen, remembered so that each is counted once when a restarted source
/// repeats what it read before; bounded (oldest forgotten first).
#[derive(Debug, Default)]
pub struct SeenIncidents {
    keys: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl SeenIncidents {
    /// True the first time `i` (its source and line) is offered.
    pub fn first_time(&mut self, i: &Incident) -> bool {
        let key = (i.source.clone(), i.raw.clone());
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > MAX_SEEN_INCIDENTS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_readers::logline::LineMeta;
    use cgleak_readers::logs::journal::RecordedJournal;

    #[test]
    fn zone_less_times_in_the_future_move_to_last_year() {
        let now = 1_795_000_000; // 2026-11-18
        let mut i = sample();
        i.time = Some("2026-12-22T08:00:00.498519".into());
        roll_back_future_year(&mut i, now);
        assert_eq!(i.time.as_deref(), Some("2025-12-22T08:00:00.498519"));
        i.time = Some("2026-11-01T08:00:00".into());
        roll_back_future_year(&mut i, now);
        assert_eq!(i.time.as_deref(), Some("2026-11-01T08:00:00"), "a past time stays");
        i.time = Some("2027-01-01T00:00:00Z".into());
        roll_back_future_year(&mut i, now);
        assert_eq!(i.time.as_deref(), Some("2027-01-01T00:00:00Z"), "a zoned time is what it says");
    }

    #[test]
    fn the_window_keeps_its_stretch_of_time_and_few_untrusted_lines() {
        let now = 1_795_000_000; // 2026-11-18T...Z
        let mut w = WindowIncidents::new(now - 3600, now, 0);
        let at = |t: &str, trusted: bool| Incident { time: Some(t.into()), trusted, ..sample() };
        w.offer(at(&clock::rfc3339_secs(now - 60), true));
        w.offer(at(&clock::rfc3339_secs(now - 7200), true));
        // A zoned date in the future (a wrong clock) is not recent.
        w.offer(at(&clock::rfc3339_secs(now + 34 * DAY), true));
        w.offer(Incident { time: None, ..sample() });
        assert_eq!(w.kept.len(), 1);
        for _ in 0..MAX_UNTRUSTED_KEPT + 5 {
            w.offer(at(&clock::rfc3339_secs(now - 60), false));
        }
        assert_eq!((w.kept.len(), w.untrusted, w.dropped), (1 + MAX_UNTRUSTED_KEPT, MAX_UNTRUSTED_KEPT, 5));
    }

    #[test]
    fn since_filter_keeps_unknown_times() {
        let stop = AtomicBool::new(false);
        let host = HostPaths::default();
        let ctx = ReadCtx { host: &host, journal: None, since: Some(1_703_232_000), follow: false, local_offset: 3600, stop: &stop };
        let mut i = sample();
        i.time = Some("2023-12-22T08:00:00Z".into());
        assert!(ctx.keeps(&i));
        i.time = Some("2023-12-22T07:59:59Z".into());
        assert!(!ctx.keeps(&i));
        // Zone-less: local time, one hour east of UTC.
        i.time = Some("2023-12-22T09:00:00".into());
        assert!(ctx.keeps(&i));
        i.time = Some("2023-12-22T08:30:00".into());
        assert!(!ctx.keeps(&i));
        i.time = Some("+2210.4s since boot".into());
        assert!(ctx.keeps(&i));
        i.time = None;
        assert!(ctx.keeps(&i));
    }

    #[test]
    fn an_incident_is_seen_once_until_it_is_forgotten() {
        let mut seen = SeenIncidents::default();
        let i = sample();
        assert!(seen.first_time(&i));
        assert!(!seen.first_time(&i), "a restarted source repeats it");
        assert!(seen.first_time(&Incident { source: "journald".into(), ..sample() }), "the same line from another source counts");
        for n in 0..MAX_SEEN_INCIDENTS {
            seen.first_time(&Incident { raw: format!("line {n}"), ..sample() });
        }
        assert!(seen.first_time(&i), "the oldest is forgotten first: memory stays bounded");
    }

    fn sample() -> Incident {
        let meta = LineMeta::default();
        let mut out = Vec::new();
        let mut p = IncidentParser::new(2023);
        let text = b"Dec 22 08:00:00 node-1 kubelet[1146]: E1222 08:00:00.498519    1146 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c/3f1e9a7c: no space left on device: unknown\"";
        p.feed(&LogLine { source: "syslog", line: 1, text, meta: &meta }, &mut out);
        p.finish(&mut out);
        out.pop().expect("the parser matches a kubelet mkdir ENOSPC line")
    }

    #[test]
    fn recorded_journal_incidents() {
        let j = RecordedJournal::new(include_str!("../../cgleak-readers/src/logs/testdata/journal-kubelet-enospc.json"));
        let stop = AtomicBool::new(false);
        let host = HostPaths::default();
        let ctx = ReadCtx { host: &host, journal: Some(&j), since: None, follow: false, local_offset: 0, stop: &stop };
        let mut got = Vec::new();
        let rep = read_incidents(&Source::Journal { units: vec!["kubelet".into(), "kernel".into()] }, &ctx, &mut |i| got.push(i));
        assert_eq!(rep.error, None);
        assert_eq!(rep.lines, 10);
        assert_eq!(j.opened.lock().unwrap()[0], (None, false, vec!["kubelet".to_string(), "kernel".to_string()]));
        assert!(got.iter().any(|i| i.kind.as_str() == "memcg_create_failed" && i.time.as_deref() == Some("2023-12-22T08:00:00.498519Z")), "{got:#?}");
        assert_eq!(rep.incidents, got.len() as u64);
    }
}

//! `cgleak logs`: find the log lines that show a node running out of memory cgroups
//! (failed memcg mkdirs, per-memcg slab failures, inotify exhaustion on cgroup
//! directories) in files, journald and /dev/kmsg, and explain them.
//!
//! Each source is read by the reader layer into its own incident parser (model layer);
//! incidents are printed as they are found (table rows, jsonl lines) so memory stays
//! bounded, except with `--output json`, which prints one document at the end.
//! `cgleak check` uses [`recent_incidents`] for its `memcg_create_failures` finding.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use cgleak_model::incidents::{Incident, IncidentParser, IncidentSummary};
use cgleak_model::verdict::LogEvidence;
use cgleak_readers::kmsg;
use cgleak_readers::logline::{LineMeta, LogLine};
use cgleak_readers::logs::clock;
use cgleak_readers::logs::files;
use cgleak_readers::logs::journal::{self, JournalSource, Journalctl, DEFAULT_UNITS};
use cgleak_readers::logs::mapped;
use cgleak_readers::logs::split::{Fill, LineSink, LineSplitter};
use cgleak_readers::HostPaths;

use crate::exit::{self, Failure};
use crate::{GlobalArgs, OutputArg};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Log files or glob patterns ('-' for standard input). Rotated generations
    /// (kubelet.log.1, messages-20231222) and gzip files are read as they are; a quoted
    /// pattern ('/var/log/syslog*') is expanded oldest first.
    #[arg(value_name = "FILE|GLOB")]
    pub files: Vec<String>,
    /// Read journald (journalctl -o json): the units kubelet, containerd, docker and
    /// crio, and the kernel's messages.
    #[arg(long)]
    pub journal: bool,
    /// journald units to read instead of the defaults (repeatable; 'kernel' for the
    /// kernel's messages). Implies --journal.
    #[arg(long = "unit", value_name = "UNIT")]
    pub units: Vec<String>,
    /// Read the kernel's log buffer, <host-root>/dev/kmsg.
    #[arg(long)]
    pub kmsg: bool,
    /// Only incidents at or after WHEN: a duration back from now (30m, 1h, 2d) or a time
    /// (2023-12-22, 2023-12-22T08:00:00Z; UTC unless a zone is given). journald is asked
    /// for that stretch only; in files, incidents without a time are kept and times
    /// without a zone (syslog, klog) are taken in the local time zone.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Keep reading and print new incidents as they are logged, until interrupted
    /// (files are followed across rotation; journald with journalctl --follow).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// What was read from one source, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `/var/log/syslog`, `stdin`, `journald`, `/dev/kmsg`.
    pub source: String,
    /// `file`, `gzip`, `stdin`, `journald`, `kmsg`.
    pub kind: &'static str,
    /// Lines read (journald: entries; kmsg: records).
    pub lines: u64,
    pub incidents: u64,
    /// Why the source could not be read (or not to its end).
    pub error: Option<String>,
    pub notes: Vec<String>,
}

/// A source to read, and whether it was asked for (a failure is then an error, not a note).
#[derive(Debug, Clone)]
enum Source {
    File { path: PathBuf, name: String },
    Stdin,
    Journal { units: Vec<String> },
    Kmsg,
}

struct Planned {
    source: Source,
    explicit: bool,
}

/// Everything the sources share while they are read.
struct Ctx<'a> {
    host: &'a HostPaths,
    journal: Option<&'a dyn JournalSource>,
    /// Epoch seconds of --since.
    since: Option<i64>,
    follow: bool,
    /// Seconds east of UTC here, for times without a zone.
    local_offset: i64,
    /// Set when stdout is gone (a closed pipe): readers stop.
    stop: &'a AtomicBool,
}

/// Feeds lines to an incident parser and hands its incidents on.
struct ParserSink<'a> {
    parser: IncidentParser,
    found: Vec<Incident>,
    emit: &'a mut dyn FnMut(Incident),
}

impl<'a> ParserSink<'a> {
    fn new(reference_year: i32, emit: &'a mut dyn FnMut(Incident)) -> Self {
        ParserSink { parser: IncidentParser::new(reference_year), found: Vec::new(), emit }
    }

    fn drain(&mut self) {
        let now = clock::now_epoch();
        for mut i in self.found.drain(..) {
            roll_back_future_year(&mut i, now);
            (self.emit)(i);
        }
    }

    fn finish(&mut self) {
        self.parser.finish(&mut self.found);
        self.drain();
    }
}

impl LineSink for ParserSink<'_> {
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
}

/// Seconds east of UTC of the local time zone now (TZ, /etc/localtime), 0 when unknown.
pub fn local_offset() -> i64 {
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

/// An incident's time in epoch seconds: zoned as given, zone-less in local time;
/// None for kernel times relative to boot and lines without a time.
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
    if parsed.zoned || parsed.secs <= now + 86_400 {
        return;
    }
    if let Some(year) = t.get(..4).and_then(|y| y.parse::<i32>().ok()) {
        i.time = Some(format!("{:04}{}", year - 1, &t[4..]));
    }
}

/// Whether an incident passes --since (kept when its time is unknown).
fn within(i: &Incident, ctx: &Ctx) -> bool {
    match (ctx.since, incident_epoch(i, ctx.local_offset)) {
        (Some(s), Some(t)) => t >= s,
        _ => true,
    }
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!("{e} (run as root)"),
        _ => e.to_string(),
    }
}

/// The year for times that print none: the file's, else this one.
fn year_now() -> i32 {
    clock::year_of(clock::now_epoch())
}

/// Read one source to its end (or, following, until stopped), handing each incident
/// that passes --since to `emit`.
fn read_source(src: &Source, ctx: &Ctx, emit: &mut dyn FnMut(Incident)) -> SourceReport {
    let mut count = 0u64;
    let mut counted = |i: Incident| {
        if within(&i, ctx) {
            count += 1;
            emit(i);
        }
    };
    let mut rep = match src {
        Source::File { path, name } => read_file(path, name, ctx, &mut counted),
        Source::Stdin => {
            let mut rep = report("stdin", "stdin");
            let mut sink = ParserSink::new(year_now(), &mut counted);
            let stdin = io::stdin();
            let r = split_all(&mut stdin.lock(), "stdin", &LineMeta::default(), &mut sink, ctx.stop);
            sink.finish();
            match r {
                Ok(lines) => rep.lines = lines,
                Err(e) => rep.error = Some(format!("stdin: {e}")),
            }
            rep
        }
        Source::Journal { units } => {
            let mut rep = report("journald", "journald");
            match ctx.journal {
                None => rep.error = Some("journalctl not found (or no journal under --host-root)".into()),
                Some(j) => {
                    let since = ctx.since.map(|s| format!("@{s}"));
                    let mut sink = ParserSink::new(year_now(), &mut counted);
                    let r = j.open(since.as_deref(), ctx.follow, units).and_then(|mut r| journal::read_journal(&mut *r, "journald", &mut sink));
                    sink.finish();
                    match r {
                        Ok(st) => {
                            rep.lines = st.entries;
                            if st.malformed > 0 {
                                rep.notes.push(format!("{} lines of journalctl output were not JSON entries", st.malformed));
                            }
                        }
                        Err(e) => rep.error = Some(e.to_string()),
                    }
                    rep.notes.push(format!("units: {}", units.join(", ")));
                }
            }
            rep
        }
        Source::Kmsg => {
            let name = ctx.host.to_host_path(&ctx.host.host("/dev/kmsg")).display().to_string();
            let mut rep = report(&name, "kmsg");
            match kmsg::open(ctx.host, ctx.follow) {
                Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
                Ok((_, mut r)) => {
                    let boot = kmsg::boot_time(ctx.host);
                    let mut sink = ParserSink::new(year_now(), &mut counted);
                    let res = kmsg::read_kmsg(&mut r, boot, &name, &mut sink);
                    sink.finish();
                    match res {
                        Ok(st) => {
                            rep.lines = st.records;
                            if st.gaps > 0 {
                                rep.notes.push(format!("{} gaps: {} records were overwritten in the ring buffer before they were read", st.gaps, st.lost));
                            }
                            if boot.is_none() {
                                rep.notes.push("no btime in /proc/stat: kernel times are relative to boot".into());
                            }
                        }
                        Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
                    }
                }
            }
            rep
        }
    };
    rep.incidents = count;
    rep
}

fn report(source: &str, kind: &'static str) -> SourceReport {
    SourceReport { source: source.to_string(), kind, lines: 0, incidents: 0, error: None, notes: Vec::new() }
}

/// Stream `r` to its end into `sink`; returns the lines read.
fn split_all(r: &mut dyn Read, name: &str, meta: &LineMeta, sink: &mut dyn LineSink, stop: &AtomicBool) -> io::Result<u64> {
    let mut sp = LineSplitter::default();
    while !stop.load(Ordering::Relaxed) && sp.read_from(r, name, meta, sink)? == Fill::Data {}
    sp.finish(name, meta, sink);
    Ok(sp.lines())
}

fn read_file(path: &Path, name: &str, ctx: &Ctx, emit: &mut dyn FnMut(Incident)) -> SourceReport {
    let mut rep = report(name, "file");
    let meta = LineMeta::default();
    let mut sink = ParserSink::new(files::reference_year(path), emit);
    if ctx.follow {
        let (probe, gzip) = match files::open_log(path) {
            Ok(x) => x,
            Err(e) => {
                rep.error = Some(format!("{name}: {}", io_text(&e)));
                return rep;
            }
        };
        drop(probe);
        if !gzip {
            let stop = || ctx.stop.load(Ordering::Relaxed);
            // With --since, a big file is followed from where that stretch starts.
            let start = match ctx.since {
                Some(cutoff) => window_start(path, cutoff, ctx.local_offset).unwrap_or(0),
                None => 0,
            };
            match files::follow_file(path, start, name, &meta, &mut sink, Duration::from_millis(250), &stop) {
                Ok(st) => rep.lines = st.lines,
                Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
            }
            sink.finish();
            return rep;
        }
    }
    if let Some(since) = ctx.since {
        // A file last written before --since has no line after it.
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        if mtime.is_some_and(|m| (m.as_secs() as i64) < since) {
            rep.notes.push("skipped: not modified since --since".into());
            return rep;
        }
    }
    match files::open_log(path) {
        Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
        Ok((mut r, gzip)) => {
            let mapped_len = std::fs::metadata(path).ok().filter(|m| m.is_file() && m.len() >= MAP_MIN).map(|m| m.len());
            let res = match (gzip, mapped_len) {
                (false, Some(len)) => {
                    drop(r);
                    drop(sink);
                    return read_mapped(path, len, name, ctx, emit, rep);
                }
                (true, _) => {
                    rep.kind = "gzip";
                    split_all(&mut r, name, &meta, &mut sink, ctx.stop)
                }
                (false, None) => split_all(&mut r, name, &meta, &mut sink, ctx.stop),
            };
            match res {
                Ok(n) => rep.lines = n,
                Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
            }
        }
    }
    sink.finish();
    rep
}

/// Plain files from this size on are read through memory maps.
const MAP_MIN: u64 = 1 << 20;
/// Plain files from this size on are cut in parts scanned by one thread per CPU.
const PARALLEL_MIN: u64 = 32 << 20;
/// Incidents go from a part's thread in batches of at most this many bytes (about) or
/// [`BATCH_MAX`] incidents, and at most [`PART_QUEUE`] batches wait for the parts before:
/// a part blocks only past that (about 4 MiB), and the printer wakes once a batch.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_MAX: usize = 1024;
const PART_QUEUE: usize = 16;

/// About what an incident holds in memory.
fn incident_bytes(i: &Incident) -> usize {
    std::mem::size_of::<Incident>() + i.raw.len() + i.source.len() + i.component.len() + [&i.time, &i.host, &i.cgroup_path, &i.pod_uid, &i.container_id].iter().map(|o| o.as_ref().map_or(0, |x| x.len())).sum::<usize>()
}

/// A plain file through memory maps, in parts scanned in parallel: each part has its
/// own parser and numbers its lines from 1; incidents are handed on in file order,
/// their line numbers shifted by the lines of the parts before.
fn read_mapped(path: &Path, len: u64, name: &str, ctx: &Ctx, emit: &mut dyn FnMut(Incident), mut rep: SourceReport) -> SourceReport {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            rep.error = Some(format!("{name}: {}", io_text(&e)));
            return rep;
        }
    };
    let year = files::reference_year(path);
    let meta = LineMeta::default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let parts = if len >= PARALLEL_MIN { threads } else { 1 };
    let ranges = match mapped::split_points(&file, len, parts) {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("{name}: {}", io_text(&e)));
            return rep;
        }
    };
    enum Msg {
        Batch(Vec<Incident>),
        Done(io::Result<u64>),
    }
    let (file, meta) = (&file, &meta);
    let result: io::Result<u64> = std::thread::scope(|s| {
        let mut queues = Vec::new();
        for &(a, b) in &ranges {
            let (tx, rx) = mpsc::sync_channel::<Msg>(PART_QUEUE);
            queues.push(rx);
            let stop = ctx.stop;
            s.spawn(move || {
                let mut batch = Vec::new();
                let mut bytes = 0;
                let res = {
                    let mut send = |i: Incident| {
                        bytes += incident_bytes(&i);
                        batch.push(i);
                        if bytes >= BATCH_BYTES || batch.len() >= BATCH_MAX {
                            let _ = tx.send(Msg::Batch(std::mem::take(&mut batch)));
                            bytes = 0;
                        }
                    };
                    let mut sink = ParserSink::new(year, &mut send);
                    let r = mapped::scan_range(file, len, a, b, name, meta, &mut sink, stop);
                    sink.finish();
                    r
                };
                if !batch.is_empty() {
                    let _ = tx.send(Msg::Batch(batch));
                }
                let _ = tx.send(Msg::Done(res.map(|st| st.lines)));
            });
        }
        // Parts in order; a later part's incidents wait in its queue meanwhile.
        let mut base = 0u64;
        let mut first_err = None;
        for rx in queues {
            for m in rx {
                match m {
                    Msg::Batch(b) => {
                        for mut i in b {
                            i.line += base;
                            emit(i);
                        }
                    }
                    Msg::Done(Ok(n)) => base += n,
                    Msg::Done(Err(e)) => first_err = first_err.or(Some(e)),
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(base),
        }
    });
    match result {
        Ok(n) => rep.lines = n,
        Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
    }
    rep
}

/// A log file truncated while it is mapped (copytruncate rotation) raises SIGBUS on the
/// vanished pages: say so and exit 1 instead of dying with a core dump.
fn exit_on_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MSG: &[u8] = b"cgleak: a log file shrank while it was read (truncated by log rotation?): run again\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(exit::RUNTIME as libc::c_int);
        }
    }
    // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// The sources to read: those given, or the host's usual ones.
fn plan(a: &LogsArgs, host: &HostPaths) -> Result<Vec<Planned>, Failure> {
    let mut out = Vec::new();
    let mut stdin = false;
    for f in &a.files {
        if f == "-" {
            if stdin {
                return Err(Failure::usage("'-' (standard input) given twice"));
            }
            stdin = true;
            out.push(Planned { source: Source::Stdin, explicit: true });
            continue;
        }
        let paths = files::expand(f).map_err(Failure::runtime)?;
        for p in paths {
            let name = p.display().to_string();
            out.push(Planned { source: Source::File { path: p, name }, explicit: true });
        }
    }
    let journal = a.journal || !a.units.is_empty();
    if journal {
        let units = if a.units.is_empty() { DEFAULT_UNITS.iter().map(|s| s.to_string()).collect() } else { a.units.clone() };
        out.push(Planned { source: Source::Journal { units }, explicit: true });
    }
    if a.kmsg {
        out.push(Planned { source: Source::Kmsg, explicit: true });
    }
    if out.is_empty() {
        out = default_sources(host);
    }
    Ok(out)
}

/// The host's usual logs: syslog-style files, journald where journalctl and a journal
/// are there, and /dev/kmsg where it exists.
fn default_sources(host: &HostPaths) -> Vec<Planned> {
    let mut out: Vec<Planned> = files::default_log_files(host)
        .into_iter()
        .map(|p| {
            let name = host.to_host_path(&p).display().to_string();
            Planned { source: Source::File { path: p, name }, explicit: false }
        })
        .collect();
    if Journalctl::for_host(host).is_some() {
        out.push(Planned { source: Source::Journal { units: DEFAULT_UNITS.iter().map(|s| s.to_string()).collect() }, explicit: false });
    }
    if host.host("/dev/kmsg").exists() {
        out.push(Planned { source: Source::Kmsg, explicit: false });
    }
    out
}

/// Where incidents are printed as they come.
struct Printer<'a> {
    out: io::BufWriter<io::StdoutLock<'a>>,
    format: OutputArg,
    summary: IncidentSummary,
    /// Kept for --output json only.
    kept: Vec<Incident>,
    rows: u64,
    flush_each: bool,
    stop: &'a AtomicBool,
}

impl Printer<'_> {
    fn incident(&mut self, i: Incident) {
        self.summary.add(&i);
        let r = match self.format {
            OutputArg::Json => {
                self.kept.push(i);
                Ok(())
            }
            OutputArg::Jsonl => serde_json::to_writer(&mut self.out, &i).map_err(io::Error::from).and_then(|_| self.out.write_all(b"\n")),
            OutputArg::Table => {
                let head = if self.rows == 0 { writeln!(self.out, "{}", table_header()) } else { Ok(()) };
                head.and_then(|_| writeln!(self.out, "{}", table_row(&i)))
            }
        };
        self.rows += 1;
        let r = r.and_then(|_| if self.flush_each { self.out.flush() } else { Ok(()) });
        if r.is_err() {
            // stdout is gone (`| head`): stop reading.
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

const W_TIME: usize = 30;
const W_COMP: usize = 10;
const W_KIND: usize = 19;
const W_ERRNO: usize = 6;
const W_POD: usize = 36;
const W_AT: usize = 22;

fn table_header() -> String {
    format!("{:<W_TIME$}  {:<W_COMP$}  {:<W_KIND$}  {:<W_ERRNO$}  {:<W_POD$}  {:<W_AT$}  CGROUP", "TIME", "COMPONENT", "KIND", "ERRNO", "POD", "AT")
}

fn table_row(i: &Incident) -> String {
    let base = Path::new(&i.source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| i.source.clone());
    format!(
        "{:<W_TIME$}  {:<W_COMP$}  {:<W_KIND$}  {:<W_ERRNO$}  {:<W_POD$}  {:<W_AT$}  {}",
        i.time.as_deref().unwrap_or("-"),
        i.component,
        i.kind.as_str(),
        i.errno.map(|e| e.as_str()).unwrap_or("-"),
        i.pod_uid.as_deref().unwrap_or("-"),
        format!("{base}:{}", i.line),
        i.cgroup_path.as_deref().unwrap_or("-")
    )
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

fn sources_table(sources: &[SourceReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("sources\n");
    for r in sources {
        let what = match r.kind {
            "journald" => "entries",
            "kmsg" => "records",
            _ => "lines",
        };
        let _ = write!(s, "  {:<40} {:<8}", r.source, r.kind);
        match &r.error {
            Some(e) => {
                let _ = write!(s, " not read: {e}");
            }
            None => {
                let _ = write!(s, " {} {what}, {} incidents", r.lines, r.incidents);
            }
        }
        if !r.notes.is_empty() {
            let _ = write!(s, " ({})", r.notes.join("; "));
        }
        s.push('\n');
    }
    s
}

fn summary_table(sm: &IncidentSummary, sources: &[SourceReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if sm.total == 0 {
        let lines: u64 = sources.iter().map(|r| r.lines).sum();
        let read = sources.iter().filter(|r| r.error.is_none()).count();
        let _ = writeln!(s, "no incidents: no failed memcg creation, per-memcg slab failure or inotify exhaustion in {lines} lines of {read} sources");
        return s;
    }
    let _ = writeln!(s, "summary");
    let _ = writeln!(s, "  incidents     {}: {}", sm.total, counts(&sm.by_kind));
    let _ = writeln!(s, "  first seen    {}", sm.first_seen.as_deref().unwrap_or("unknown"));
    let _ = writeln!(s, "  last seen     {}", sm.last_seen.as_deref().unwrap_or("unknown"));
    let _ = writeln!(s, "  components    {}", counts(&sm.by_component));
    if !sm.by_errno.is_empty() {
        let _ = writeln!(s, "  errnos        {}", counts(&sm.by_errno));
    }
    let pods: Vec<&String> = sm.affected_pods.iter().collect();
    if !pods.is_empty() {
        let shown: Vec<&str> = pods.iter().take(10).map(|p| p.as_str()).collect();
        let more = if pods.len() > 10 { format!(" and {} more", pods.len() - 10) } else { String::new() };
        let _ = writeln!(s, "  pods          {}: {}{more}", pods.len(), shown.join(", "));
    }
    for (n, h) in sm.era_hints.iter().enumerate() {
        let _ = writeln!(s, "  {:<13} {h}", if n == 0 { "what it says" } else { "" });
    }
    s
}

/// The JSON document of `--output json`.
#[derive(Serialize)]
struct LogsReport<'a> {
    incidents: &'a [Incident],
    summary: &'a IncidentSummary,
    sources: &'a [SourceReport],
}

pub fn run(g: &GlobalArgs, a: &LogsArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let now = clock::now_epoch();
    let since = a.since.as_deref().map(|s| clock::parse_since(s, now).map_err(|e| Failure::usage(format!("--since {e}")))).transpose()?;
    if a.follow && g.output_arg == OutputArg::Json {
        return Err(Failure::usage("--follow prints incidents as they come: use --output table or jsonl, not json"));
    }
    let planned = plan(a, &host)?;
    if planned.is_empty() {
        return Err(Failure::runtime(format!(
            "no log source found under {}: no /var/log/{{messages,syslog,kern.log,daemon.log,kubelet.log}}*, no journal, no /dev/kmsg; name files, or use --journal or --kmsg",
            host.root().display()
        )));
    }
    let journalctl = Journalctl::for_host(&host);
    exit_on_sigbus();
    let stop = AtomicBool::new(false);
    let ctx = Ctx { host: &host, journal: journalctl.as_ref().map(|j| j as &dyn JournalSource), since, follow: a.follow, local_offset: local_offset(), stop: &stop };

    let stdout = io::stdout();
    let mut p = Printer {
        out: io::BufWriter::with_capacity(64 * 1024, stdout.lock()),
        format: g.output_arg,
        summary: IncidentSummary::default(),
        kept: Vec::new(),
        rows: 0,
        flush_each: a.follow,
        stop: &stop,
    };
    let mut reports: Vec<(SourceReport, bool)> = Vec::new();
    if a.follow {
        follow_all(&planned, &ctx, &mut p, &mut reports);
    } else {
        for pl in &planned {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let rep = read_source(&pl.source, &ctx, &mut |i| p.incident(i));
            reports.push((rep, pl.explicit));
        }
    }
    let sources: Vec<SourceReport> = reports.iter().map(|(r, _)| r.clone()).collect();
    let failed: Vec<&SourceReport> = reports.iter().filter(|(r, explicit)| *explicit && r.error.is_some()).map(|(r, _)| r).collect();
    let write = |p: &mut Printer| -> io::Result<()> {
        match p.format {
            OutputArg::Json => {
                let doc = LogsReport { incidents: &p.kept, summary: &p.summary, sources: &sources };
                serde_json::to_writer_pretty(&mut p.out, &doc)?;
                p.out.write_all(b"\n")
            }
            OutputArg::Jsonl => Ok(()),
            OutputArg::Table => {
                if p.rows > 0 {
                    writeln!(p.out)?;
                }
                write!(p.out, "{}\n{}", sources_table(&sources), summary_table(&p.summary, &sources))
            }
        }
    };
    if !stop.load(Ordering::Relaxed) {
        let r = write(&mut p).and_then(|_| p.out.flush());
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(Failure::runtime(format!("stdout: {e}")));
            }
        }
    }
    for (r, explicit) in &reports {
        if let (Some(e), false) = (&r.error, explicit) {
            if g.output_arg != OutputArg::Table {
                eprintln!("cgleak: note: {} not read: {e}", r.source);
            }
        }
    }
    if !failed.is_empty() {
        let why: Vec<String> = failed.iter().map(|r| r.error.clone().unwrap_or_default()).collect();
        return Err(Failure::runtime(why.join("; ")));
    }
    Ok(if p.summary.total > 0 { exit::AT_RISK_OR_LEAKING } else { exit::OK })
}

/// --follow: every source in its own thread, incidents printed as they arrive, until
/// every source ends (stdin, gzip files) or the process is interrupted.
fn follow_all(planned: &[Planned], ctx: &Ctx, p: &mut Printer, reports: &mut Vec<(SourceReport, bool)>) {
    enum Msg {
        Incident(Incident),
        Done(SourceReport, bool),
    }
    if p.format == OutputArg::Table {
        let _ = writeln!(p.out, "{}", table_header()).and_then(|_| p.out.flush());
        p.rows = 1;
    }
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::scope(|s| {
        for pl in planned {
            let tx = tx.clone();
            s.spawn(move || {
                let t2 = tx.clone();
                let rep = read_source(&pl.source, ctx, &mut |i| {
                    let _ = t2.send(Msg::Incident(i));
                });
                let _ = tx.send(Msg::Done(rep, pl.explicit));
            });
        }
        drop(tx);
        for m in rx {
            match m {
                Msg::Incident(i) => {
                    // The header is out already: count rows from 1.
                    p.incident(i);
                }
                Msg::Done(r, explicit) => {
                    if let Some(e) = &r.error {
                        eprintln!("cgleak: {} stopped: {e}", r.source);
                    }
                    reports.push((r, explicit));
                }
            }
        }
    });
}

/// Pause before a follower whose source ended or failed starts it again; doubled each
/// time up to [`FOLLOW_RETRY_MAX`], and back to this once the source ran a minute.
const FOLLOW_RETRY_MIN: Duration = Duration::from_secs(5);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(300);

/// For the agent: follow the host's usual logs, each source on a thread of its own, and
/// hand every incident to `emit` as it is logged: the live syslog-style files (from where
/// the last `window_secs` start; followed across rotation), journald (since the window's
/// start, then `--follow`) and /dev/kmsg. A source that ends or fails (journalctl
/// exiting, a missing file, an unreadable device) is tried again after a backoff and
/// never stops the others; each restart's first read may repeat incidents seen before,
/// which the caller counts once. `note` hears each source's first error and when a
/// source comes back. The threads are detached: a source blocked in a read never holds
/// up the agent's exit. Returns each source's name and whether it is there now (the
/// others are watched for).
pub fn spawn_log_followers(
    host: &HostPaths,
    window_secs: i64,
    stop: Arc<AtomicBool>,
    emit: Arc<dyn Fn(Incident) + Send + Sync>,
    note: Arc<dyn Fn(String) + Send + Sync>,
) -> Vec<(String, bool)> {
    let mut sources: Vec<Source> = live_log_files(host)
        .into_iter()
        .map(|path| {
            let name = host.to_host_path(&path).display().to_string();
            Source::File { path, name }
        })
        .collect();
    sources.push(Source::Journal { units: DEFAULT_UNITS.iter().map(|s| s.to_string()).collect() });
    sources.push(Source::Kmsg);
    let mut names = Vec::new();
    for src in sources {
        let (name, present) = match &src {
            Source::File { name, path } => (name.clone(), path.is_file()),
            Source::Journal { .. } => ("journald".to_string(), Journalctl::for_host(host).is_some()),
            Source::Kmsg => (host.to_host_path(&host.host("/dev/kmsg")).display().to_string(), host.host("/dev/kmsg").exists()),
            Source::Stdin => continue,
        };
        names.push((name.clone(), present));
        let (host, stop, emit, note) = (host.clone(), Arc::clone(&stop), Arc::clone(&emit), Arc::clone(&note));
        std::thread::Builder::new()
            .name(format!("cgleak-log {name}"))
            .spawn(move || follow_source(&host, &src, &name, window_secs, &stop, &*emit, &*note))
            .expect("spawning a log follower thread");
    }
    names
}

/// The live files of [`files::DEFAULT_LOG_GLOBS`] under `host`, whether they exist yet or not.
fn live_log_files(host: &HostPaths) -> Vec<PathBuf> {
    files::LIVE_LOG_NAMES.iter().map(|n| host.host(Path::new("/var/log").join(n))).collect()
}

/// One follower: read `src` (following) until stopped; when it ends or fails, wait and
/// start again from the window (files: once they exist).
fn follow_source(host: &HostPaths, src: &Source, name: &str, window_secs: i64, stop: &AtomicBool, emit: &dyn Fn(Incident), note: &dyn Fn(String)) {
    let journal = Journalctl::for_host(host);
    let mut backoff = FOLLOW_RETRY_MIN;
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let available = match src {
            Source::File { path, .. } => path.is_file(),
            Source::Journal { .. } => journal.is_some(),
            Source::Kmsg => host.host("/dev/kmsg").exists(),
            Source::Stdin => false,
        };
        let started = Instant::now();
        let error = if available {
            let since = Some(clock::now_epoch() - window_secs);
            let ctx = Ctx { host, journal: journal.as_ref().map(|j| j as &dyn JournalSource), since, follow: true, local_offset: local_offset(), stop };
            let rep = read_source(src, &ctx, &mut |i| emit(i));
            Some(rep.error.unwrap_or_else(|| format!("{name}: ended")))
        } else {
            None
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            backoff = FOLLOW_RETRY_MIN;
        }
        if let Some(e) = &error {
            if last_error.as_ref() != Some(e) {
                note(format!("log source {e}; trying again in {}s", backoff.as_secs()));
            }
        }
        last_error = error;
        let until = Instant::now() + backoff;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if available {
            backoff = (backoff * 2).min(FOLLOW_RETRY_MAX);
        }
    }
}

/// Incidents of the last `window_secs` for `cgleak check`: the host's syslog-style
/// files modified within the window (from the stretch of a big file that the window
/// covers), journald since the window start, and /dev/kmsg. Cheap, and never an error:
/// a source that cannot be read becomes a note. Incidents without a time are left out
/// (they cannot be placed in the window).
pub fn recent_incidents(host: &HostPaths, window_secs: i64, journal: Option<&dyn JournalSource>) -> LogEvidence {
    let now = clock::now_epoch();
    let cutoff = now - window_secs;
    let stop = AtomicBool::new(false);
    let ctx = Ctx { host, journal, since: Some(cutoff), follow: false, local_offset: local_offset(), stop: &stop };
    let mut ev = LogEvidence { since: Some(clock::rfc3339_secs(cutoff)), ..LogEvidence::default() };
    let keep = |i: Incident, ev: &mut LogEvidence| {
        if incident_epoch(&i, ctx.local_offset).map(|t| undo_year_rollover(t, now)).is_some_and(|t| t >= cutoff) {
            ev.incidents.push(i);
        }
    };
    for p in files::default_log_files(host) {
        let name = host.to_host_path(&p).display().to_string();
        let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        // A file last written before the window holds nothing from it.
        match modified {
            Some(m) if m.as_secs() as i64 >= cutoff => {}
            _ => continue,
        }
        match tail_incidents(&p, &name, cutoff, ctx.local_offset) {
            Ok((source, found)) => {
                ev.sources.push(source);
                for i in found {
                    keep(i, &mut ev);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => ev.notes.push(format!("{name}: {}", io_text(&e))),
        }
    }
    let mut found = Vec::new();
    if journal.is_some() {
        let rep = read_source(&Source::Journal { units: DEFAULT_UNITS.iter().map(|s| s.to_string()).collect() }, &ctx, &mut |i| found.push(i));
        match rep.error {
            Some(e) => ev.notes.push(format!("journald: {e}")),
            None => ev.sources.push("journald".into()),
        }
    }
    if host.host("/dev/kmsg").exists() {
        let rep = read_source(&Source::Kmsg, &ctx, &mut |i| found.push(i));
        match rep.error {
            Some(e) => ev.notes.push(e),
            None => ev.sources.push(rep.source),
        }
    }
    for i in found {
        keep(i, &mut ev);
    }
    ev
}

/// Syslog dates carry no year: the parser takes the file's year, so a "Dec 22" line read
/// from a file written in January lands in the future. Such a time is a year older, and
/// never counts as recent.
fn undo_year_rollover(t: i64, now: i64) -> i64 {
    const DAY: i64 = 86_400;
    if t > now + DAY { t - 365 * DAY } else { t }
}

/// Plain files up to this size are read whole for a window: cheaper than being clever.
const READ_WHOLE: u64 = 32 << 20;

/// Where the stretch of lines at or after `cutoff` starts in the plain file `path`: 0 for
/// a small file, else the start of the first line of the window (found by the times of
/// its lines, never more than 256 MiB from the end).
fn window_start(path: &Path, cutoff: i64, local_offset: i64) -> io::Result<u64> {
    const MAX_BACK: u64 = 256 << 20;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len <= READ_WHOLE {
        return Ok(0);
    }
    let year = files::reference_year(path);
    let recent = |line: &[u8]| clock::leading_time(line, year).map(|t| (if t.zoned { t.secs } else { t.secs - local_offset }) >= cutoff);
    files::tail_offset(&mut f, len, &recent, MAX_BACK)
}

/// A plain file read whole when small, else from where the window starts (found by
/// the times of its lines); gzip generations are skipped (the window is in the live
/// file or its first, uncompressed, rotation). Returns the source's name (with the
/// starting byte when not read whole) and its incidents.
fn tail_incidents(path: &Path, name: &str, cutoff: i64, local_offset: i64) -> io::Result<(String, Vec<Incident>)> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 2];
    let n = f.read(&mut head)?;
    if files::is_gzip(&head[..n]) {
        return Ok((name.to_string(), Vec::new()));
    }
    let year = files::reference_year(path);
    let offset = window_start(path, cutoff, local_offset)?;
    f.seek(SeekFrom::Start(offset))?;
    let source = if offset == 0 { name.to_string() } else { format!("{name} (from byte {offset})") };
    let mut found = Vec::new();
    let mut emit = |i: Incident| found.push(i);
    let mut sink = ParserSink::new(year, &mut emit);
    let stop = AtomicBool::new(false);
    split_all(&mut f, &source, &LineMeta::default(), &mut sink, &stop)?;
    sink.finish();
    Ok((source, found))
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_date_in_the_future_is_last_year_and_not_recent() {
        let now = 1_795_000_000; // 2026-11-18
        assert_eq!(undo_year_rollover(now - 60, now), now - 60);
        let dec_22_this_year = now + 34 * 86_400;
        assert!(undo_year_rollover(dec_22_this_year, now) < now - 300 * 86_400);
    }

    #[test]
    fn since_filter_keeps_unknown_times() {
        let stop = AtomicBool::new(false);
        let host = HostPaths::default();
        let ctx = Ctx { host: &host, journal: None, since: Some(1_703_232_000), follow: false, local_offset: 3600, stop: &stop };
        let mut i = sample();
        i.time = Some("2023-12-22T08:00:00Z".into());
        assert!(within(&i, &ctx));
        i.time = Some("2023-12-22T07:59:59Z".into());
        assert!(!within(&i, &ctx));
        // Zone-less: local time, one hour east of UTC.
        i.time = Some("2023-12-22T09:00:00".into());
        assert!(within(&i, &ctx));
        i.time = Some("2023-12-22T08:30:00".into());
        assert!(!within(&i, &ctx));
        i.time = Some("+2210.4s since boot".into());
        assert!(within(&i, &ctx));
        i.time = None;
        assert!(within(&i, &ctx));
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
        let ctx = Ctx { host: &host, journal: Some(&j), since: None, follow: false, local_offset: 0, stop: &stop };
        let mut got = Vec::new();
        let rep = read_source(&Source::Journal { units: vec!["kubelet".into(), "kernel".into()] }, &ctx, &mut |i| got.push(i));
        assert_eq!(rep.error, None);
        assert_eq!(rep.lines, 10);
        assert_eq!(j.opened.lock().unwrap()[0], (None, false, vec!["kubelet".to_string(), "kernel".to_string()]));
        assert!(got.iter().any(|i| i.kind.as_str() == "memcg_create_failed" && i.time.as_deref() == Some("2023-12-22T08:00:00.498519Z")), "{got:#?}");
        assert_eq!(rep.incidents, got.len() as u64);
    }
}

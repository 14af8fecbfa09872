//! Reading a log source to its end, or following it, into sinks that find what matters.
//!
//! The reader knows sources and times, not what a line means: a [`SinkMaker`] (the model's
//! incident parser) makes one sink per source, or per part of a big file read on every CPU,
//! and its sinks hand on [`Finding`]s, which are kept when they pass `--since` and handed
//! on in the source's order, each part's line numbers shifted by the lines of the parts
//! before. Memory stays bounded whatever the source (see [`super::split`], [`super::mapped`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::journal::{self, JournalSource};
use super::sources::{kmsg_name, Source, SourceReport};
use super::split::{Fill, LineSink, LineSplitter};
use super::{clock, files, mapped};
use crate::kmsg;
use crate::logline::LineMeta;
use crate::HostPaths;

/// What a sink finds in a source's lines (the model's incidents).
pub trait Finding: Send {
    /// Lines are numbered from 1 in each part of a file read in parts: shift them by the
    /// lines of the parts before.
    fn shift_line(&mut self, by: u64);
    /// About what it holds in memory (what waits between threads is bounded by it).
    fn size(&self) -> usize;
    /// Its time in epoch seconds (`local_offset`: seconds east of UTC, for times without a
    /// zone); None when unknown (then `--since` keeps it).
    fn epoch(&self, local_offset: i64) -> Option<i64>;
}

/// A sink of one source (or part), which completes what it holds at the end.
pub trait FindingSink: LineSink {
    fn finish(&mut self);
}

/// Makes the sink of each source, or of each part of a file read in parallel.
pub trait SinkMaker: Sync {
    type Found: Finding;
    type Sink<'e>: FindingSink
    where
        Self: 'e;
    /// A sink that hands what it finds to `emit`; `reference_year` is the year of times
    /// that print none (syslog, klog): the file's, else this one.
    fn sink<'e>(&'e self, reference_year: i32, emit: &'e mut dyn FnMut(Self::Found)) -> Self::Sink<'e>;
}

/// How the sources are read.
pub struct ReadCtx<'a> {
    pub host: &'a HostPaths,
    /// journald, when there is one to read.
    pub journal: Option<&'a dyn JournalSource>,
    /// Epoch seconds of `--since`: what is older is left out (what has no time is kept).
    pub since: Option<i64>,
    /// Keep reading what is appended, until `stop`.
    pub follow: bool,
    /// Seconds east of UTC here, for times without a zone ([`clock::local_offset`]).
    pub local_offset: i64,
    /// Set when the reader should stop (a closed stdout, the agent stopping).
    pub stop: &'a AtomicBool,
}

impl ReadCtx<'_> {
    /// Whether `f` passes `--since` (kept when its time is unknown).
    pub fn keeps(&self, f: &impl Finding) -> bool {
        match (self.since, f.epoch(self.local_offset)) {
            (Some(s), Some(t)) => t >= s,
            _ => true,
        }
    }
}

/// An I/O error as a report says it.
pub fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!("{e} (run as root)"),
        _ => e.to_string(),
    }
}

/// The year for times that print none when the source is no file: this one.
fn year_now() -> i32 {
    clock::year_of(clock::now_epoch())
}

/// When `path` was last written, in epoch seconds.
pub fn modified_at(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    m.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// Read one source to its end (or, following, until stopped), handing each finding that
/// passes `--since` to `emit`.
pub fn read_source<M: SinkMaker>(src: &Source, ctx: &ReadCtx, maker: &M, emit: &mut dyn FnMut(M::Found)) -> SourceReport {
    let mut count = 0u64;
    let mut counted = |f: M::Found| {
        if ctx.keeps(&f) {
            count += 1;
            emit(f);
        }
    };
    let mut rep = match src {
        Source::File { path, name } => read_file(path, name, ctx, maker, &mut counted),
        Source::Stdin => {
            let mut rep = SourceReport::new("stdin", "stdin");
            let mut sink = maker.sink(year_now(), &mut counted);
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
            let mut rep = SourceReport::new("journald", "journald");
            match ctx.journal {
                None => rep.error = Some("journalctl not found (or no journal under --host-root)".into()),
                Some(j) => {
                    let since = ctx.since.map(|s| format!("@{s}"));
                    let mut sink = maker.sink(year_now(), &mut counted);
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
            let name = kmsg_name(ctx.host);
            let mut rep = SourceReport::new(&name, "kmsg");
            match kmsg::open(ctx.host, ctx.follow) {
                Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
                Ok((_, mut r)) => {
                    let boot = kmsg::boot_time(ctx.host);
                    let mut sink = maker.sink(year_now(), &mut counted);
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

/// Stream `r` to its end into `sink`; returns the lines read.
fn split_all(r: &mut dyn Read, name: &str, meta: &LineMeta, sink: &mut dyn LineSink, stop: &AtomicBool) -> io::Result<u64> {
    let mut sp = LineSplitter::default();
    while !stop.load(Ordering::Relaxed) && sp.read_from(r, name, meta, sink)? == Fill::Data {}
    sp.finish(name, meta, sink);
    Ok(sp.lines())
}

fn read_file<M: SinkMaker>(path: &Path, name: &str, ctx: &ReadCtx, maker: &M, emit: &mut dyn FnMut(M::Found)) -> SourceReport {
    let mut rep = SourceReport::new(name, "file");
    // The kubelet's own file vouches for its untagged lines; other files are syslog text.
    let meta = files::file_meta(path);
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
            let mut sink = maker.sink(files::reference_year(path), emit);
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
        if modified_at(path).is_some_and(|m| m < since) {
            rep.notes.push("skipped: not modified since --since".into());
            return rep;
        }
    }
    match files::open_log(path) {
        Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
        Ok((mut r, gzip)) => {
            let mapped_len = std::fs::metadata(path).ok().filter(|m| m.is_file() && m.len() >= MAP_MIN).map(|m| m.len());
            if let (false, Some(len)) = (gzip, mapped_len) {
                drop(r);
                return read_mapped(path, len, name, ctx, maker, emit, rep);
            }
            if gzip {
                rep.kind = "gzip";
            }
            let mut sink = maker.sink(files::reference_year(path), emit);
            match split_all(&mut r, name, &meta, &mut sink, ctx.stop) {
                Ok(n) => rep.lines = n,
                Err(e) => rep.error = Some(format!("{name}: {}", io_text(&e))),
            }
            sink.finish();
        }
    }
    rep
}

/// Plain files from this size on are read through memory maps.
const MAP_MIN: u64 = 1 << 20;
/// Plain files from this size on are cut in parts scanned by one thread per CPU.
const PARALLEL_MIN: u64 = 32 << 20;
/// Findings go from a part's thread in batches of at most this many bytes (about) or
/// [`BATCH_MAX`] findings, and at most [`PART_QUEUE`] batches wait for the parts before:
/// a part blocks only past that (about 4 MiB), and the caller wakes once a batch.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_MAX: usize = 1024;
const PART_QUEUE: usize = 16;

/// A plain file through memory maps, in parts scanned in parallel: each part has its
/// own sink and numbers its lines from 1; findings are handed on in file order,
/// their line numbers shifted by the lines of the parts before.
fn read_mapped<M: SinkMaker>(path: &Path, len: u64, name: &str, ctx: &ReadCtx, maker: &M, emit: &mut dyn FnMut(M::Found), mut rep: SourceReport) -> SourceReport {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            rep.error = Some(format!("{name}: {}", io_text(&e)));
            return rep;
        }
    };
    let year = files::reference_year(path);
    let meta = files::file_meta(path);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let parts = if len >= PARALLEL_MIN { threads } else { 1 };
    let ranges = match mapped::split_points(&file, len, parts) {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("{name}: {}", io_text(&e)));
            return rep;
        }
    };
    enum Msg<T> {
        Batch(Vec<T>),
        Done(io::Result<u64>),
    }
    let (file, meta) = (&file, &meta);
    let result: io::Result<u64> = std::thread::scope(|s| {
        let mut queues = Vec::new();
        for &(a, b) in &ranges {
            let (tx, rx) = mpsc::sync_channel::<Msg<M::Found>>(PART_QUEUE);
            queues.push(rx);
            let stop = ctx.stop;
            s.spawn(move || {
                let mut batch = Vec::new();
                let mut bytes = 0;
                let res = {
                    let mut send = |f: M::Found| {
                        bytes += f.size();
                        batch.push(f);
                        if bytes >= BATCH_BYTES || batch.len() >= BATCH_MAX {
                            let _ = tx.send(Msg::Batch(std::mem::take(&mut batch)));
                            bytes = 0;
                        }
                    };
                    let mut sink = maker.sink(year, &mut send);
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
        // Parts in order; a later part's findings wait in its queue meanwhile.
        let mut base = 0u64;
        let mut first_err = None;
        for rx in queues {
            for m in rx {
                match m {
                    Msg::Batch(b) => {
                        for mut f in b {
                            f.shift_line(base);
                            emit(f);
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

/// Plain files up to this size are read whole for a window: cheaper than being clever.
const READ_WHOLE: u64 = 32 << 20;

/// Where the stretch of lines at or after `cutoff` starts in the plain file `path`: 0 for
/// a small file, else the start of the first line of the window (found by the times of
/// its lines, never more than 256 MiB from the end).
pub fn window_start(path: &Path, cutoff: i64, local_offset: i64) -> io::Result<u64> {
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

/// The stretch of the plain file `path` from `cutoff` on: read whole when small, else from
/// where the window starts (found by the times of its lines); gzip generations are skipped
/// (the window is in the live file or its first, uncompressed, rotation). Hands what its
/// sink finds to `emit`; returns the source's name (with the starting byte when not read whole).
pub fn read_window<M: SinkMaker>(path: &Path, name: &str, cutoff: i64, local_offset: i64, maker: &M, emit: &mut dyn FnMut(M::Found)) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 2];
    let n = f.read(&mut head)?;
    if files::is_gzip(&head[..n]) {
        return Ok(name.to_string());
    }
    let year = files::reference_year(path);
    let offset = window_start(path, cutoff, local_offset)?;
    f.seek(SeekFrom::Start(offset))?;
    let source = if offset == 0 { name.to_string() } else { format!("{name} (from byte {offset})") };
    let mut sink = maker.sink(year, emit);
    let stop = AtomicBool::new(false);
    split_all(&mut f, &source, &files::file_meta(path), &mut sink, &stop)?;
    sink.finish();
    Ok(source)
}

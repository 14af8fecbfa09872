//! `cgleak logs`: find the log lines that show a node running out of memory cgroups
//! (failed memcg mkdirs, per-memcg slab failures, inotify exhaustion on cgroup
//! directories) in files, journald and /dev/kmsg, and explain them.
//!
//! Its flags choose the sources (`cgleak_readers::logs::sources`); each is read by the
//! reader layer into the model's incident parser (`cgleak_model::node_logs`), and the
//! incidents are printed as they are found (`render::logs`: table rows, jsonl lines) so
//! memory stays bounded, except with `--output json`, which prints one document at the end.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use clap::Args;

use cgleak_model::era::KernelEra;
use cgleak_model::incidents::{Incident, IncidentSummary};
use cgleak_model::node_logs::read_incidents;
use cgleak_readers::logs::journal::{JournalSource, Journalctl};
use cgleak_readers::logs::read::ReadCtx;
use cgleak_readers::logs::sources::{default_sources, Source, SourceReport};
use cgleak_readers::logs::{clock, files};
use cgleak_readers::{procfs, HostPaths};

use crate::args::{GlobalArgs, OutputArg};
use crate::exit::{self, Failure};
use crate::render::logs::Printer;

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
    /// Only incidents at or after WHEN: a duration back from now (30m, 1h, 2d; see
    /// Durations in the README) or a time (2023-12-22, 2023-12-22T08:00:00Z; UTC unless a
    /// zone is given). journald is asked for that stretch only; in files, incidents without
    /// a time are kept and times without a zone (syslog, klog) are taken in the local time zone.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Keep reading and print new incidents as they are logged, until interrupted
    /// (files are followed across rotation; journald with journalctl --follow).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// A source to read, and whether it was asked for (a failure is then an error, not a note).
struct Planned {
    source: Source,
    explicit: bool,
}

/// The sources to read: those given, or the host's usual ones; and the files left out
/// because they are containers' logs (reported, never read).
fn plan(a: &LogsArgs, host: &HostPaths) -> Result<(Vec<Planned>, Vec<SourceReport>), Failure> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
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
            if let Some(dir) = files::container_log_dir(&p, host) {
                let mut r = SourceReport::new(&name, "skipped");
                r.notes.push(format!("skipped: a container's log ({dir}): what containers print is never evidence of the node's state"));
                skipped.push(r);
                continue;
            }
            out.push(Planned { source: Source::File { path: p, name }, explicit: true });
        }
    }
    if out.is_empty() && !skipped.is_empty() && !a.journal && a.units.is_empty() && !a.kmsg {
        let names: Vec<&str> = skipped.iter().map(|r| r.source.as_str()).collect();
        return Err(Failure::usage(format!(
            "{}: containers' logs ({}) are never a source: what a tenant prints is not the node's log; name the node's logs (syslog, the kubelet's), or use --journal or --kmsg",
            names.join(", "),
            files::CONTAINER_LOG_DIRS.join(", ")
        )));
    }
    let journal = a.journal || !a.units.is_empty();
    if journal {
        let source = if a.units.is_empty() { Source::default_journal() } else { Source::Journal { units: a.units.clone() } };
        out.push(Planned { source, explicit: true });
    }
    if a.kmsg {
        out.push(Planned { source: Source::Kmsg, explicit: true });
    }
    if out.is_empty() {
        out = default_sources(host).into_iter().map(|source| Planned { source, explicit: false }).collect();
    }
    Ok((out, skipped))
}

/// The kernel of the node whose logs are read, for the summary's hints: known when the
/// host's osrelease is readable and a source is the host's own (journald, /dev/kmsg, the
/// default files, or a named file under `<host-root>/var/log`); files from elsewhere and
/// stdin may come from another node.
fn node_kernel(host: &HostPaths, planned: &[Planned]) -> Option<KernelEra> {
    let log_dir = std::fs::canonicalize(host.host("/var/log")).ok();
    let hosts_own = |p: &Planned| match &p.source {
        Source::Journal { .. } | Source::Kmsg => true,
        Source::File { path, .. } => {
            !p.explicit || log_dir.as_ref().is_some_and(|d| std::fs::canonicalize(path).is_ok_and(|f| f.starts_with(d)))
        }
        Source::Stdin => false,
    };
    if !planned.iter().any(hosts_own) {
        return None;
    }
    procfs::read_osrelease(host).ok().map(|r| KernelEra::from_release_str(&r))
}

pub fn run(g: &GlobalArgs, a: &LogsArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let now = clock::now_epoch();
    let since = a.since.as_deref().map(|s| clock::parse_since(s, now).map_err(|e| Failure::usage(format!("--since {e}")))).transpose()?;
    if a.follow && g.output_arg == OutputArg::Json {
        return Err(Failure::usage("--follow prints incidents as they come: use --output table or jsonl, not json"));
    }
    let (planned, skipped) = plan(a, &host)?;
    if planned.is_empty() {
        return Err(Failure::runtime(format!(
            "no log source found under {}: no /var/log/{{messages,syslog,kern.log,daemon.log,kubelet.log}}*, no journal, no /dev/kmsg; name files, or use --journal or --kmsg",
            host.root().display()
        )));
    }
    let journalctl = Journalctl::for_host(&host);
    exit_on_sigbus();
    let stop = AtomicBool::new(false);
    let ctx = ReadCtx { host: &host, journal: journalctl.as_ref().map(|j| j as &dyn JournalSource), since, follow: a.follow, local_offset: clock::local_offset(), stop: &stop };

    let summary = node_kernel(&host, &planned).map_or_else(IncidentSummary::default, IncidentSummary::for_node);
    let mut p = Printer::new(g.output_arg, summary, a.follow, &stop);
    let mut reports: Vec<(SourceReport, bool)> = Vec::new();
    if a.follow {
        follow_all(&planned, &ctx, &mut p, &mut reports);
    } else {
        for pl in &planned {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let rep = read_incidents(&pl.source, &ctx, &mut |i| p.incident(i));
            reports.push((rep, pl.explicit));
        }
    }
    let sources: Vec<SourceReport> = skipped.iter().cloned().chain(reports.iter().map(|(r, _)| r.clone())).collect();
    let failed: Vec<&SourceReport> = reports.iter().filter(|(r, explicit)| *explicit && r.error.is_some()).map(|(r, _)| r).collect();
    if !stop.load(Ordering::Relaxed) {
        if let Err(e) = p.finish(&sources) {
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
    if g.output_arg != OutputArg::Table {
        for r in &skipped {
            eprintln!("cgleak: note: {} {}", r.source, r.notes.join("; "));
        }
    }
    // jsonl keeps its keys: the trust of each incident is in --output json and the table.
    if g.output_arg == OutputArg::Jsonl && p.summary.untrusted > 0 {
        eprintln!(
            "cgleak: note: {} of {} incidents are from untrusted lines (not the kubelet, a container runtime, systemd or the kernel, or a writer that cannot be told): `check` leaves them out; --output json shows each one's `trusted` and `origin`",
            p.summary.untrusted, p.summary.total
        );
    }
    if !failed.is_empty() {
        let why: Vec<String> = failed.iter().map(|r| r.error.clone().unwrap_or_default()).collect();
        return Err(Failure::runtime(why.join("; ")));
    }
    Ok(if p.summary.total > 0 { exit::AT_RISK_OR_LEAKING } else { exit::OK })
}

/// --follow: every source in its own thread, incidents printed as they arrive, until
/// every source ends (stdin, gzip files) or the process is interrupted.
fn follow_all(planned: &[Planned], ctx: &ReadCtx, p: &mut Printer, reports: &mut Vec<(SourceReport, bool)>) {
    enum Msg {
        Incident(Incident),
        Done(SourceReport, bool),
    }
    p.header();
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::scope(|s| {
        for pl in planned {
            let tx = tx.clone();
            s.spawn(move || {
                let t2 = tx.clone();
                let rep = read_incidents(&pl.source, ctx, &mut |i| {
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

//! `cgleak probe`: prove headroom by creating and removing N memcgs, or (`--to-limit`)
//! measure it exactly by creating them until the ID space is full.

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cgleak_actions::probe::{errno_code, run_probe, ProbeError, ProbeOptions, ProbeProgress, ProbeReport, FREE_WAIT};
use cgleak_model::census::MEMCG_ID_LIMIT;
use cgleak_model::era::{Errno, KernelEra};
use cgleak_readers::mountinfo::CgroupLayout;
use cgleak_readers::{procfs, HostPaths};

use crate::args::GlobalArgs;
use crate::exit::{self, Failure};
use crate::host_change::{cancel_on, memory_hierarchy, require_root, CancelWatch};
use crate::render::{aligned_lines, print_report};

/// Above this many memcgs a probe needs --force: each one costs an ID and kernel memory.
const MAX_COUNT_UNFORCED: u32 = 5000;
/// The progress bar shows only for probes that take longer than this.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Why --to-limit needs --force, said when it is missing.
const TO_LIMIT_RISK: &str = "--to-limit fills this node's memcg ID space: from the moment it is full until the probe \
has removed its first memcgs, no memory cgroup can be created here (new pods and containers fail to start with \
ENOSPC, ENOMEM or EBUSY), and every memcg it creates takes kernel memory (tens of KB each, over a GB for 60,000). \
Run it on a drained node, and add --force to go ahead";

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// How many memcgs to create (and remove again).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Create memcgs until mkdir fails for lack of IDs, to measure the headroom exactly (the
    /// memcgs created plus the scratch parent), then remove them at once; needs --force.
    #[arg(long, conflicts_with = "count")]
    pub to_limit: bool,
    /// Allow --count above 5000, and --to-limit.
    #[arg(long)]
    pub force: bool,
    /// The cgroup to probe under, relative to the memory hierarchy's root
    /// (e.g. /kubepods) [default: the root].
    #[arg(long, value_name = "CGROUP")]
    pub parent: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &ProbeArgs) -> Result<u8, Failure> {
    if a.to_limit && !a.force {
        return Err(Failure::usage(TO_LIMIT_RISK));
    }
    if !a.to_limit && a.count > MAX_COUNT_UNFORCED && !a.force {
        return Err(Failure::usage(format!(
            "--count {} is above {MAX_COUNT_UNFORCED}: each memcg takes an ID and kernel memory; add --force to probe that many",
            a.count
        )));
    }
    let relative = cgroup_relative_path(a.parent.as_deref())?;
    let host = g.host()?;
    let memory = memory_hierarchy(&host, &CgroupLayout::discover(&host)?)?;
    require_root(|| {
        format!("probe creates memory cgroups under {} and must run as root", memory.mount.mount_point.display())
    })?;

    let cancel = cancel_on(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let opts = ProbeOptions {
        // No mkdir can succeed more often than there are IDs: past that, no limit is there to meet.
        count: if a.to_limit { u32::try_from(MEMCG_ID_LIMIT).unwrap_or(u32::MAX) } else { a.count },
        to_limit: a.to_limit,
        parent: memory.mount.local.join(&relative),
        host_name_of_parent: memory.mount.mount_point.join(&relative),
        memory_version: memory.version,
        cancel: Arc::clone(&cancel),
    };

    let mut bar = ProbeBar::new(opts.count, a.to_limit, &cancel);
    let result = run_probe(&opts, &mut |p| bar.update(p));
    bar.finish();
    let report = result.map_err(probe_failure)?;

    let note = errno_note(&host, &report);
    print_report(g.output, &report, |r| render_table(r, note.as_deref()))?;
    Ok(exit_code(&report))
}

/// When mkdir failed with an exhaustion errno this kernel's era does not return for a full ID
/// space (docs/kernel-facts.md section 1), the limit met may be another one: kernel memory, for ENOMEM.
fn errno_note(host: &HostPaths, r: &ProbeReport) -> Option<String> {
    let errno = r.errno.as_deref().filter(|_| r.exhausted)?;
    let got = Errno::from_raw(errno_code(errno)?)?;
    let era = KernelEra::from_release_str(&procfs::read_osrelease(host).ok()?);
    (!era.mkdir_errno_possible(got)).then(|| {
        format!(
            "kernels of era {} return {} when the memcg ID space is full, not {errno}: the limit met may be another one \
             (kernel memory, for ENOMEM), so the headroom may be lower than the free IDs",
            era.id.as_str(),
            era.mkdir_errno_when_full.as_str()
        )
    })
}

/// `--parent` as a path below the hierarchy root: leading `/` dropped, `..` refused.
fn cgroup_relative_path(parent: Option<&Path>) -> Result<PathBuf, Failure> {
    let mut out = PathBuf::new();
    for c in parent.into_iter().flat_map(Path::components) {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Failure::usage(format!(
                    "--parent {}: must be a cgroup inside the memory hierarchy (no '..')",
                    parent.unwrap_or(Path::new("")).display()
                )))
            }
        }
    }
    Ok(out)
}

fn probe_failure(e: ProbeError) -> Failure {
    if e.is_permission() {
        Failure::not_permitted(format!("probe: {e} (run as root, on a writable cgroup mount)"))
    } else {
        Failure::runtime(format!("probe: {e}"))
    }
}

fn exit_code(r: &ProbeReport) -> u8 {
    if r.interrupted {
        exit::INTERRUPTED
    } else if r.to_limit {
        // Meeting the limit is what --to-limit asks for: 0 with the headroom measured; 4 only
        // when the ID space was full already (the scratch parent's own mkdir failed).
        match r.headroom {
            Some(0) => exit::EXHAUSTED,
            Some(_) if r.success => exit::OK,
            _ => exit::RUNTIME,
        }
    } else if r.exhausted {
        exit::EXHAUSTED
    } else if r.success {
        exit::OK
    } else {
        exit::RUNTIME
    }
}

/// A few aligned `label: text` lines.
fn render_table(r: &ProbeReport, note: Option<&str>) -> String {
    if r.to_limit && r.headroom.is_some_and(|h| h > 0) {
        return render_to_limit(r, note);
    }
    let mut lines: Vec<(&str, String)> = Vec::new();
    let version = format!("cgroup v{}, {} ms", r.memory_version, r.elapsed_ms);
    if r.interrupted {
        lines.push((
            "probe",
            format!("interrupted after creating {}/{} memcgs under {}", r.created, r.requested, r.scratch_parent),
        ));
    } else if let (Some(at), Some(errno)) = (r.failed_at, &r.errno) {
        let what = match r.errno_description() {
            Some(d) => format!("{errno} ({d})"),
            None => errno.clone(),
        };
        let meaning = if r.exhausted { ": the memcg ID space is full" } else { "" };
        lines.push(("probe", format!("mkdir failed at {at}/{} with {what}{meaning}", r.requested)));
    } else {
        lines.push((
            "probe",
            format!("created {}/{} memcgs under {}, removed {}", r.created, r.requested, r.scratch_parent, r.removed),
        ));
    }
    if let Some(e) = &r.error {
        lines.push(("error", e.clone()));
    }
    if r.interrupted || r.failed_at.is_some() {
        lines.push(("cleanup", format!("removed {}/{} memcgs", r.removed, r.created)));
    }
    if r.success {
        lines.push(("result", format!("headroom of at least {} memcgs proven ({version})", r.created)));
    } else if r.headroom == Some(0) {
        lines.push(("result", format!("headroom 0: the memcg ID space was full before the probe ({version})")));
    } else if let (Some(h), Some(ms)) = (r.headroom, r.no_free_id_ms) {
        lines.push(("full for", format!("{ms:.3} ms without a free memcg ID")));
        lines.push(("result", format!("{} memcgs could be created: headroom {h}, the scratch parent included ({version})", r.created)));
    } else if r.failed_at.is_some() {
        lines.push(("result", format!("{} memcgs could be created ({version})", r.created)));
    }
    if let Some(n) = note {
        lines.push(("note", n.to_string()));
    }
    push_leftover(&mut lines, r);
    aligned_lines(&lines)
}

/// A --to-limit probe that met the limit: the headroom, how it is counted, and the time the node was full.
fn render_to_limit(r: &ProbeReport, note: Option<&str>) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let what = match (&r.errno, r.errno_description()) {
        (Some(e), Some(d)) => format!("{e} ({d})"),
        (Some(e), None) => e.clone(),
        (None, _) => "an exhaustion errno".into(),
    };
    lines.push(("probe", format!("created {} memcgs under {} until mkdir failed with {what}: the ID space was full", r.created, r.scratch_parent)));
    if let Some(e) = &r.error {
        lines.push(("limit", e.clone()));
    }
    let headroom = r.headroom.unwrap_or(0);
    lines.push(("headroom", format!("{headroom} free memcg IDs ({} memcgs created + 1 for the scratch parent)", r.created)));
    let full = match (r.no_free_id_ms, r.removals_until_free) {
        (Some(ms), Some(n)) => format!(
            "{ms:.3} ms without a free memcg ID (from the last ID taken until a mkdir succeeded again, after {n} removal{})",
            if n == 1 { "" } else { "s" }
        ),
        _ => format!(
            "not measured: no memcg could be created within {} s of removing everything",
            FREE_WAIT.as_secs()
        ),
    };
    lines.push(("full for", full));
    lines.push(("cleanup", format!("removed {}/{} memcgs", r.removed, r.created)));
    let version = format!("cgroup v{}, {} ms", r.memory_version, r.elapsed_ms);
    if r.success {
        lines.push(("result", format!("headroom {headroom} measured: {} of {MEMCG_ID_LIMIT} IDs were in use ({version})", MEMCG_ID_LIMIT.saturating_sub(headroom.into()))));
    } else {
        lines.push(("result", format!("headroom {headroom} measured, but not everything was removed ({version})")));
    }
    if let Some(n) = note {
        lines.push(("note", n.to_string()));
    }
    push_leftover(&mut lines, r);
    aligned_lines(&lines)
}

fn push_leftover(lines: &mut Vec<(&str, String)>, r: &ProbeReport) {
    if !r.leftover.is_empty() {
        lines.push(("left over", format!("{} path(s); remove them with rmdir, deepest first:", r.leftover.len())));
        for p in &r.leftover {
            lines.push(("", p.clone()));
        }
    }
}

/// A progress bar on stderr that stays hidden for the first second, and for ever
/// when stderr is not a terminal (stdout, JSON included, never gets one).
struct ProbeBar<'a> {
    bar: ProgressBar,
    started: Instant,
    may_show: bool,
    shown: bool,
    cancel: CancelWatch<'a>,
}

impl<'a> ProbeBar<'a> {
    fn new(count: u32, to_limit: bool, cancel: &'a AtomicBool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(count.into()), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} memcgs ({elapsed})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(if to_limit { "filling" } else { "creating" });
        ProbeBar {
            bar,
            started: Instant::now(),
            may_show: std::io::stderr().is_terminal(),
            shown: false,
            cancel: CancelWatch::new(cancel),
        }
    }

    fn update(&mut self, p: ProbeProgress) {
        if self.may_show && !self.shown && self.started.elapsed() >= PROGRESS_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        if self.cancel.newly_cancelled() {
            self.bar.set_message("stopping");
        }
        match p {
            ProbeProgress::Started { .. } => {}
            ProbeProgress::Created { done, .. } => self.bar.set_position(done.into()),
            ProbeProgress::Removed { done, total } => {
                if done == 1 {
                    self.bar.set_length(total.into());
                    self.bar.set_message("removing");
                }
                self.bar.set_position(done.into());
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ProbeReport {
        ProbeReport {
            requested: 64,
            created: 64,
            removed: 64,
            success: true,
            failed_at: None,
            errno: None,
            error: None,
            exhausted: false,
            interrupted: false,
            scratch_parent: "/sys/fs/cgroup/memory/cgleak-probe-1-2".into(),
            memory_version: 1,
            elapsed_ms: 12,
            leftover: vec![],
            to_limit: false,
            headroom: None,
            no_free_id_ms: None,
            removals_until_free: None,
        }
    }

    /// A --to-limit probe that met the limit after 4999 children.
    fn to_limit_report() -> ProbeReport {
        let mut r = report();
        r.to_limit = true;
        r.requested = 65535;
        r.created = 4999;
        r.removed = 4999;
        r.failed_at = Some(4999);
        r.errno = Some("EBUSY".into());
        r.error = Some("mkdir /sys/fs/cgroup/cgleak-probe-1-2/p4999: Device or resource busy (os error 16)".into());
        r.exhausted = true;
        r.headroom = Some(5000);
        r.no_free_id_ms = Some(3.25);
        r.removals_until_free = Some(1);
        r
    }

    /// Every line's text starts in the same column, labelled or not.
    fn assert_aligned(t: &str) {
        let cols: Vec<usize> = t
            .lines()
            .map(|l| {
                let after_label = if l.starts_with(' ') { 0 } else { l.find(':').unwrap() + 1 };
                l.len() - l[after_label..].trim_start().len()
            })
            .collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "not aligned:\n{t}");
    }

    #[test]
    fn success_table_and_exit() {
        let r = report();
        let t = render_table(&r, None);
        assert!(t.contains("created 64/64 memcgs under /sys/fs/cgroup/memory/cgleak-probe-1-2, removed 64"), "{t}");
        assert!(t.contains("headroom of at least 64 memcgs proven"), "{t}");
        assert_eq!(exit_code(&r), 0);
    }

    #[test]
    fn exhausted_table_and_exit() {
        let mut r = report();
        r.requested = 5000;
        r.created = 1234;
        r.removed = 1234;
        r.success = false;
        r.failed_at = Some(1234);
        r.errno = Some("ENOSPC".into());
        r.error =
            Some("mkdir /sys/fs/cgroup/memory/cgleak-probe-1-2/p1234: No space left on device (os error 28)".into());
        r.exhausted = true;
        let t = render_table(&r, None);
        assert!(
            t.contains("mkdir failed at 1234/5000 with ENOSPC (no space left on device): the memcg ID space is full"),
            "{t}"
        );
        assert!(t.contains("removed 1234/1234"), "{t}");
        assert_eq!(exit_code(&r), exit::EXHAUSTED);
        assert_aligned(&t);
    }

    #[test]
    fn other_failures_interrupts_and_leftovers() {
        let mut r = report();
        r.success = false;
        r.failed_at = Some(3);
        r.errno = Some("EEXIST".into());
        assert_eq!(exit_code(&r), exit::RUNTIME);
        assert!(!render_table(&r, None).contains("ID space"));

        let mut r = report();
        r.success = false;
        r.interrupted = true;
        r.created = 50;
        r.removed = 50;
        assert_eq!(exit_code(&r), 130);
        assert!(render_table(&r, None).contains("interrupted after creating 50/64"));

        let mut r = report();
        r.success = false;
        r.leftover = vec!["/sys/fs/cgroup/memory/cgleak-probe-1-2".into()];
        assert_eq!(exit_code(&r), exit::RUNTIME);
        let t = render_table(&r, None);
        assert!(t.lines().last().unwrap().trim() == "/sys/fs/cgroup/memory/cgleak-probe-1-2", "{t}");
        assert_aligned(&t);
    }

    #[test]
    fn to_limit_table_says_how_the_headroom_is_counted_and_exits_0() {
        let r = to_limit_report();
        let t = render_table(&r, None);
        assert!(t.contains("created 4999 memcgs under /sys/fs/cgroup/memory/cgleak-probe-1-2 until mkdir failed with EBUSY (device or resource busy)"), "{t}");
        assert!(t.contains("5000 free memcg IDs (4999 memcgs created + 1 for the scratch parent)"), "{t}");
        assert!(t.contains("3.250 ms without a free memcg ID") && t.contains("after 1 removal)"), "{t}");
        assert!(t.contains("headroom 5000 measured: 60535 of 65535 IDs were in use"), "{t}");
        assert!(!t.contains("error:"), "meeting the limit is no error here:\n{t}");
        assert_aligned(&t);
        assert_eq!(exit_code(&r), exit::OK);

        let mut r = to_limit_report();
        (r.no_free_id_ms, r.removals_until_free) = (None, None);
        assert!(render_table(&r, Some("era note")).contains("not measured: no memcg could be created within 10 s"));
        assert!(render_table(&r, Some("era note")).contains("note:"));
    }

    #[test]
    fn to_limit_exit_codes() {
        // Full before the probe: the scratch parent's mkdir failed.
        let mut r = to_limit_report();
        (r.created, r.removed, r.failed_at, r.headroom, r.success) = (0, 0, Some(0), Some(0), false);
        assert_eq!(exit_code(&r), exit::EXHAUSTED);
        assert!(render_table(&r, None).contains("headroom 0: the memcg ID space was full before the probe"));
        // The limit met, something left over.
        let mut r = to_limit_report();
        r.success = false;
        r.leftover = vec!["/sys/fs/cgroup/cgleak-probe-1-2".into()];
        assert_eq!(exit_code(&r), exit::RUNTIME);
        assert!(render_table(&r, None).contains("not everything was removed"));
        // No limit met (not a memory hierarchy), or another errno.
        let mut r = to_limit_report();
        (r.success, r.exhausted, r.headroom, r.failed_at, r.errno) = (false, false, None, None, None);
        assert_eq!(exit_code(&r), exit::RUNTIME);
        let mut r = to_limit_report();
        r.interrupted = true;
        r.success = false;
        assert_eq!(exit_code(&r), exit::INTERRUPTED);
    }

    #[test]
    fn a_count_probe_that_meets_the_limit_reports_the_headroom_too() {
        let mut r = to_limit_report();
        r.to_limit = false;
        r.requested = 6000;
        r.success = false;
        let t = render_table(&r, None);
        assert!(t.contains("4999 memcgs could be created: headroom 5000, the scratch parent included"), "{t}");
        assert_eq!(exit_code(&r), exit::EXHAUSTED);
    }

    #[test]
    fn parent_paths_stay_inside_the_hierarchy() {
        assert_eq!(cgroup_relative_path(None).unwrap(), PathBuf::new());
        assert_eq!(
            cgroup_relative_path(Some(Path::new("/kubepods/burstable"))).unwrap(),
            PathBuf::from("kubepods/burstable")
        );
        assert_eq!(cgroup_relative_path(Some(Path::new("kubepods"))).unwrap(), PathBuf::from("kubepods"));
        assert_eq!(cgroup_relative_path(Some(Path::new("/a/../../etc"))).unwrap_err().code, exit::USAGE);
    }
}

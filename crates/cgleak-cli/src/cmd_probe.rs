//! `cgleak probe`: prove headroom by creating and removing N memcgs.

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cgleak_actions::probe::{run_probe, ProbeError, ProbeOptions, ProbeProgress, ProbeReport};
use cgleak_readers::mountinfo::CgroupLayout;

use crate::exit::{self, Failure};
use crate::host_change::{aligned_lines, cancel_on, memory_hierarchy, print_report, require_root, CancelWatch};
use crate::GlobalArgs;

/// Above this many memcgs a probe needs --force: each one costs an ID and kernel memory.
const MAX_COUNT_UNFORCED: u32 = 5000;
/// The progress bar shows only for probes that take longer than this.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// How many memcgs to create (and remove again).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Allow --count above 5000.
    #[arg(long)]
    pub force: bool,
    /// The cgroup to probe under, relative to the memory hierarchy's root
    /// (e.g. /kubepods) [default: the root].
    #[arg(long, value_name = "CGROUP")]
    pub parent: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &ProbeArgs) -> Result<u8, Failure> {
    if a.count > MAX_COUNT_UNFORCED && !a.force {
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
        count: a.count,
        parent: memory.mount.local.join(&relative),
        host_name_of_parent: memory.mount.mount_point.join(&relative),
        memory_version: memory.version,
        cancel: Arc::clone(&cancel),
    };

    let mut bar = ProbeBar::new(a.count, &cancel);
    let result = run_probe(&opts, &mut |p| bar.update(p));
    bar.finish();
    let report = result.map_err(probe_failure)?;

    print_report(g.output, &report, render_table)?;
    Ok(exit_code(&report))
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
    } else if r.exhausted {
        exit::EXHAUSTED
    } else if r.success {
        exit::OK
    } else {
        exit::RUNTIME
    }
}

/// A few aligned `label: text` lines.
fn render_table(r: &ProbeReport) -> String {
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
    } else if r.failed_at.is_some() {
        lines.push(("result", format!("{} memcgs could be created ({version})", r.created)));
    }
    if !r.leftover.is_empty() {
        lines.push(("left over", format!("{} path(s); remove them with rmdir, deepest first:", r.leftover.len())));
        for p in &r.leftover {
            lines.push(("", p.clone()));
        }
    }
    aligned_lines(&lines)
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
    fn new(count: u32, cancel: &'a AtomicBool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(count.into()), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} memcgs ({elapsed})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("creating");
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
        }
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
        let t = render_table(&r);
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
        let t = render_table(&r);
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
        assert!(!render_table(&r).contains("ID space"));

        let mut r = report();
        r.success = false;
        r.interrupted = true;
        r.created = 50;
        r.removed = 50;
        assert_eq!(exit_code(&r), 130);
        assert!(render_table(&r).contains("interrupted after creating 50/64"));

        let mut r = report();
        r.success = false;
        r.leftover = vec!["/sys/fs/cgroup/memory/cgleak-probe-1-2".into()];
        assert_eq!(exit_code(&r), exit::RUNTIME);
        let t = render_table(&r);
        assert!(t.lines().last().unwrap().trim() == "/sys/fs/cgroup/memory/cgleak-probe-1-2", "{t}");
        assert_aligned(&t);
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

//! `cgleak lab`: a simulated node that churns real runc pods and leaves dying memcgs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cgleak_actions::lab::budget::{self, HOST_MEMCG_CAP};
use cgleak_actions::lab::rootfs::{is_static_elf, memory_backed_fs};
use cgleak_actions::lab::runtime::find_program;
use cgleak_actions::lab::{
    census_counter, default_state_dir, fallback_data_dir, run_lab, scratch_name, LabCounters, LabError, LabOptions,
    LabPaths, LabProgress, LabReport, Runtime, RuntimeKind,
};
use cgleak_readers::mountinfo::CgroupLayout;

use crate::exit::{self, Failure};
use crate::host_change::{aligned_lines, cancel_on, memory_hierarchy, print_report, require_root, CancelWatch};
use crate::GlobalArgs;

/// How often the lab counts the host's memcgs.
const CENSUS_EVERY: Duration = Duration::from_secs(2);
/// Without a terminal, a progress line this often.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeArg {
    Runc,
    Crun,
}

impl From<RuntimeArg> for RuntimeKind {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Runc => RuntimeKind::Runc,
            RuntimeArg::Crun => RuntimeKind::Crun,
        }
    }
}

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Pods kept running (the steady state).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub pods: u32,
    /// Containers in each pod.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub containers_per_pod: u32,
    /// Churn: this many times a minute, delete the oldest pod and create a new one (0: no churn).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=6000))]
    pub pods_per_minute: u32,
    /// How long to run once the pods are up: 90s, 10m, 1h30m [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// MiB of page cache each container writes before it sleeps; the page cache of a
    /// deleted pod keeps its memcgs dying (0: no page cache).
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub page_cache_mib: u32,
    /// Keep the data of deleted pods (and so their dying memcgs) up to this many MiB; the oldest goes first.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub keep_data_mib: u64,
    /// Every Nth deleted pod leaves its pod cgroup behind, without tasks and unknown to the
    /// kubelet: an orphan (at most 100 kept at once; all removed at exit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub orphan_every: Option<u32>,
    /// The OCI runtime that runs the containers (found on PATH, else in /usr/sbin or /usr/bin).
    #[arg(long, value_enum, default_value_t = RuntimeArg::Runc)]
    pub runtime: RuntimeArg,
    /// Run even though a kubelet is running on this host.
    #[arg(long)]
    pub force: bool,
    /// The lab's state: busybox rootfs, bundles, runtime state, fake kubelet root and, on a
    /// disk filesystem, the page cache data. Must not exist, or be empty; removed at exit
    /// [default: /run/cgleak-lab-<pid>].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `90s`, `10m`, `1h30m`, `500ms`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration (examples: 90s, 10m, 1h30m)".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return nonzero(Duration::from_secs(secs), s);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?}: expected a number before {rest:?} (examples: 90s, 10m, 1h30m)"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(|| format!("{s:?}: too long"))?,
            "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(|| format!("{s:?}: too long"))?,
            "" => return Err(format!("{s:?}: a unit is needed after {n} when several parts are given (ms, s, m, h)")),
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
        };
        total = total.checked_add(part).ok_or_else(|| format!("{s:?}: too long"))?;
    }
    nonzero(total, s)
}

fn nonzero(d: Duration, s: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("{s:?}: the duration must be more than 0"))
    } else {
        Ok(d)
    }
}

/// "25s", "1m30s", "2h": a duration as a user would write it.
pub use cgleak_actions::human_duration;

pub fn run(g: &GlobalArgs, a: &LabArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    if !host.is_host_root() {
        return Err(Failure::usage(format!(
            "--host-root {}: the lab runs containers on this machine, so it works only on / (drop --host-root)",
            g.host_root.display()
        )));
    }
    let deletions = budget::churn_deletions(a.pods_per_minute, a.duration.map(|d| d.as_secs_f64()));
    let lab_max = budget::lab_memcgs_max(a.pods, a.containers_per_pod, budget::max_orphans(a.orphan_every, deletions));
    if lab_max > HOST_MEMCG_CAP {
        return Err(Failure::usage(format!(
            "--pods {} --containers-per-pod {} would make up to {lab_max} memcgs, above the {HOST_MEMCG_CAP} the lab ever \
             takes a host to: lower --pods or --containers-per-pod",
            a.pods, a.containers_per_pod
        )));
    }

    let layout = CgroupLayout::discover(&host)?;
    let memory = memory_hierarchy(&host, &layout)?;
    require_root(|| {
        format!(
            "lab creates cgroups under {} and runs containers: it must run as root",
            memory.mount.mount_point.display()
        )
    })?;

    let kind = RuntimeKind::from(a.runtime);
    let runtime = Runtime::find(kind).ok_or_else(|| {
        Failure::runtime(format!(
            "{0} is neither on PATH nor in /usr/sbin or /usr/bin: install it (Debian: apt-get install {0})",
            kind.program()
        ))
    })?;
    let busybox = find_program("busybox", &["/bin", "/usr/bin"]).ok_or_else(|| {
        Failure::runtime(
            "busybox is neither on PATH nor in /bin: install a static one (Debian: apt-get install busybox-static)",
        )
    })?;
    match is_static_elf(&busybox) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::runtime(format!(
                "{} is not a statically linked executable, and the containers' root holds nothing else: install busybox-static",
                busybox.display()
            )))
        }
        Err(e) => return Err(Failure::runtime(format!("cannot read {}: {e}", busybox.display()))),
    }

    let state_dir = absolute(a.state_dir.clone().unwrap_or_else(|| default_state_dir(&host)))?;
    let data_dir = choose_data_dir(&state_dir, &fallback_data_dir(&host), a.state_dir.is_some())?;

    // SIGHUP too: a closed terminal must not leave containers running.
    let cancel = cancel_on(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP])?;
    let opts = LabOptions {
        pods: a.pods,
        containers_per_pod: a.containers_per_pod,
        pods_per_minute: a.pods_per_minute,
        duration: a.duration,
        page_cache_mib: a.page_cache_mib,
        keep_data_mib: a.keep_data_mib,
        orphan_every: a.orphan_every,
        runtime,
        busybox,
        state_dir,
        data_dir,
        scratch: scratch_name(),
        layout,
        memory,
        host: host.clone(),
        allow_kubelet: a.force,
        count_memcgs: census_counter(host),
        census_every: CENSUS_EVERY,
        cancel: Arc::clone(&cancel),
    };

    let mut ui = LabUi::new(a, &cancel);
    let result = run_lab(opts, &mut |p| ui.update(p));
    ui.finish();
    let report = result.map_err(lab_failure)?;

    print_report(g.output, &report, render_table)?;
    Ok(exit_code(&report))
}

fn absolute(p: PathBuf) -> Result<PathBuf, Failure> {
    if p.is_absolute() {
        return Ok(p);
    }
    // Bundles name the rootfs and data by absolute path: the runtime runs them from elsewhere.
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| Failure::runtime(format!("cannot resolve the state dir: current directory: {e}")))
}

/// Page cache goes to `<state>/data` on a disk filesystem. /run is tmpfs on most hosts,
/// so the default state dir falls back to `fallback` for it; a --state-dir on tmpfs is refused.
fn choose_data_dir(state: &Path, fallback: &Path, state_given: bool) -> Result<PathBuf, Failure> {
    let statfs_failure = |p: &Path, e: std::io::Error| Failure::runtime(format!("statfs {}: {e}", p.display()));
    match memory_backed_fs(state).map_err(|e| statfs_failure(state, e))? {
        None => Ok(state.join("data")),
        Some(fs) if state_given => Err(Failure::usage(format!(
            "--state-dir {} is on {fs}: the containers' page cache must go to a disk filesystem \
             (tmpfs pages are shmem, which does not model a node's page cache); give a directory on disk",
            state.display()
        ))),
        Some(fs) => match memory_backed_fs(fallback).map_err(|e| statfs_failure(fallback, e))? {
            None => Ok(fallback.to_path_buf()),
            Some(fs2) => Err(Failure::runtime(format!(
                "{} is on {fs} and {} on {fs2}: give --state-dir on a disk filesystem",
                state.display(),
                fallback.display()
            ))),
        },
    }
}

fn lab_failure(e: LabError) -> Failure {
    match &e {
        LabError::KubeletRunning { .. } => Failure::runtime(format!("lab: {e}; add --force to run anyway")),
        LabError::OverCap(_) => Failure::runtime(format!("lab: {e}; lower --pods or --containers-per-pod")),
        LabError::NoSpace { .. } => Failure::runtime(format!(
            "lab: {e}; lower --keep-data-mib or --page-cache-mib, or give --state-dir elsewhere"
        )),
        LabError::AlreadyExists { .. } => Failure::runtime(format!("lab: {e}; give another --state-dir, or remove it")),
        LabError::DataOnMemoryFs { .. } => Failure::runtime(format!("lab: {e}; give --state-dir on a disk filesystem")),
        LabError::Invalid(_) => Failure::usage(format!("lab: {e}")),
        _ if e.is_permission() => Failure::not_permitted(format!("lab: {e} (run as root, on a writable cgroup mount)")),
        _ => Failure::runtime(format!("lab: {e}")),
    }
}

fn exit_code(r: &LabReport) -> u8 {
    if !r.teardown.leftover.is_empty() {
        exit::RUNTIME
    } else if r.interrupted {
        exit::INTERRUPTED
    } else if r.error.is_some() {
        exit::RUNTIME
    } else {
        exit::OK
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

/// A few aligned `label: text` lines.
fn render_table(r: &LabReport) -> String {
    let s = &r.settings;
    let mut lines: Vec<(&str, String)> = Vec::new();
    lines.push((
        "lab",
        format!(
            "{} pods x {} containers under {} ({}, cgroup v{})",
            s.pods,
            s.containers_per_pod,
            r.paths.kubepods,
            s.runtime.program(),
            r.memory_version
        ),
    ));
    let orphans = if s.orphan_every.is_some() { format!(", {} orphans", r.orphans_made) } else { String::new() };
    lines.push((
        "pods",
        format!(
            "{} created, {} deleted by churn in {:.1} s ({}/min){orphans}; {} live at the end",
            r.pods_created,
            r.pods_deleted,
            r.churn_ms as f64 / 1000.0,
            r.churn_rate_per_minute,
            r.pods_live_at_end
        ),
    ));
    let m = &r.memcgs;
    lines.push((
        "memcgs",
        format!(
            "live {} -> max {}, dying {} -> max {} ({} censuses, dying by {})",
            m.live_at_start,
            m.live_max,
            opt(m.dying_at_start),
            opt(m.dying_max),
            m.censuses,
            m.dying_source
        ),
    ));
    if m.live_after_teardown.is_some() {
        lines.push((
            "",
            format!("after teardown: {} live, {} dying", opt(m.live_after_teardown), opt(m.dying_after_teardown)),
        ));
    }
    if r.throttled > 0 {
        lines.push(("throttled", format!("{} churn steps skipped to stay under {HOST_MEMCG_CAP} memcgs", r.throttled)));
    }
    let t = &r.teardown;
    let state = if t.state_dir_removed { "state dir removed" } else { "state dir NOT removed" };
    let killed =
        if t.processes_killed > 0 { format!(", {} stray processes killed", t.processes_killed) } else { String::new() };
    lines.push((
        "teardown",
        format!(
            "{} containers deleted, {} cgroups removed from {} hierarchies{killed}, {state} ({:.1} s)",
            t.containers_removed,
            t.cgroups_removed,
            t.hierarchies,
            r.teardown_ms as f64 / 1000.0
        ),
    ));
    let result = if let Some(e) = &r.error {
        format!("stopped by an error: {e}")
    } else if r.interrupted {
        "interrupted; everything removed".to_string()
    } else {
        "done; everything removed".to_string()
    };
    lines.push(("result", if t.leftover.is_empty() { result } else { format!("{result} (but see left over)") }));
    for (i, w) in r.warnings.iter().enumerate() {
        lines.push((if i == 0 { "warnings" } else { "" }, w.clone()));
    }
    if !t.leftover.is_empty() {
        lines.push((
            "left over",
            format!("{} item(s); remove them by hand (cgroups with rmdir, deepest first):", t.leftover.len()),
        ));
        for p in &t.leftover {
            lines.push(("", p.clone()));
        }
    }
    aligned_lines(&lines)
}

/// "6 pods (12 containers) | 52 created, 46 deleted | memcgs 45 live, 180 dying".
fn counters_line(c: &LabCounters) -> String {
    let mut s = format!(
        "{} pods ({} containers) | {} created, {} deleted",
        c.pods_live, c.containers_live, c.pods_created, c.pods_deleted
    );
    if c.orphans_made > 0 {
        s.push_str(&format!(", {} orphans", c.orphans_kept));
    }
    s.push_str(&format!(" | memcgs {} live, {} dying", opt(c.memcgs_live), opt(c.memcgs_dying)));
    if c.throttled > 0 {
        s.push_str(&format!(" | throttled {}", c.throttled));
    }
    if !c.churning {
        s.push_str(" | starting");
    }
    s
}

/// The live progress on stderr: a spinner line on a terminal, else a plain line now and then.
struct LabUi<'a> {
    bar: ProgressBar,
    tty: bool,
    settings: String,
    last_plain: Instant,
    cancel: CancelWatch<'a>,
}

impl<'a> LabUi<'a> {
    fn new(a: &LabArgs, cancel: &'a AtomicBool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        let churn = match (a.pods_per_minute, a.duration) {
            (0, Some(d)) => format!("no churn, for {}", human_duration(d)),
            (0, None) => "no churn, until Ctrl-C".to_string(),
            (r, Some(d)) => format!("churning {r} pods/min for {}", human_duration(d)),
            (r, None) => format!("churning {r} pods/min until Ctrl-C"),
        };
        let settings = format!(
            "{} pods x {} containers, {} MiB page cache each, {churn}",
            a.pods, a.containers_per_pod, a.page_cache_mib
        );
        LabUi {
            bar,
            tty: std::io::stderr().is_terminal(),
            settings,
            last_plain: Instant::now(),
            cancel: CancelWatch::new(cancel),
        }
    }

    fn ready(&mut self, p: &LabPaths) {
        eprintln!("lab: {} under {}", self.settings, p.kubepods);
        eprintln!("lab: state in {} (page cache in {})", p.state_dir, p.data_dir);
        eprintln!("lab: see it with: cgleak status --kubelet-root-dir {}", p.kubelet_root_dir);
        eprintln!("lab: Ctrl-C stops the lab and removes everything it made");
        if self.tty {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    fn update(&mut self, p: LabProgress) {
        if self.cancel.newly_cancelled() {
            self.bar.set_message("stopping");
            if !self.tty {
                eprintln!("lab: stopping");
            }
        }
        match p {
            LabProgress::Ready(paths) => self.ready(&paths),
            LabProgress::Counters(c) => {
                let line = counters_line(&c);
                if !self.tty && self.last_plain.elapsed() >= PLAIN_PROGRESS_EVERY {
                    self.last_plain = Instant::now();
                    eprintln!("lab: {line}");
                }
                self.bar.set_message(line);
            }
            LabProgress::Settling => {
                self.bar.set_message("removed; counting memcgs while the kernel frees the dying ones")
            }
            LabProgress::TearingDown { done, total } => {
                self.bar.set_message(format!("tearing down: {done}/{total} containers deleted"));
                if done == 0 && !self.tty {
                    eprintln!("lab: tearing down {total} containers");
                }
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
    use cgleak_actions::lab::budget::MemcgCount;
    use cgleak_actions::lab::{LabSettings, MemcgObservations, TeardownReport};

    #[test]
    fn durations_in_the_forms_users_write() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration(" 25s "), Ok(Duration::from_secs(25)));
    }

    #[test]
    fn bad_durations_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("s", "expected a number"),
            ("10x", "unknown unit"),
            ("1.5m", "unknown unit"),
            ("-5s", "expected a number"),
            ("0", "more than 0"),
            ("0s", "more than 0"),
            ("1h30", "a unit is needed"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999h", "too long"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_print_as_users_write_them() {
        assert_eq!(human_duration(Duration::from_secs(25)), "25s");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human_duration(Duration::from_secs(3601)), "1h1s");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn the_5000_guard_on_flags_alone() {
        // The default lab: 4 + 20 x 3.
        assert_eq!(budget::lab_memcgs_max(20, 2, 0), 64);
        // 1665 pods of 3 memcgs + 4 = 4999 fits; 1666 does not.
        assert!(budget::lab_memcgs_max(1665, 2, 0) <= HOST_MEMCG_CAP);
        assert!(budget::lab_memcgs_max(1666, 2, 0) > HOST_MEMCG_CAP);
        // Orphans count: at most 100 kept when the lab runs until stopped.
        assert_eq!(budget::max_orphans(Some(1), budget::churn_deletions(30, None)), 100);
        assert_eq!(budget::lab_memcgs_max(1632, 2, 100), HOST_MEMCG_CAP);
        assert!(budget::lab_memcgs_max(1633, 2, 100) > HOST_MEMCG_CAP);
        assert_eq!(budget::check_cap(&MemcgCount { live: 30, dying: Some(34), dying_source: "x" }, 64), Ok(()));
    }

    fn report() -> LabReport {
        LabReport {
            paths: LabPaths {
                scratch_parent: "/sys/fs/cgroup/memory/cgleak-lab-7".into(),
                kubepods: "/sys/fs/cgroup/memory/cgleak-lab-7/kubepods".into(),
                state_dir: "/run/cgleak-lab-7".into(),
                kubelet_root_dir: "/run/cgleak-lab-7/kubelet".into(),
                data_dir: "/run/cgleak-lab-7/data".into(),
                runtime_root: "/run/cgleak-lab-7/runc".into(),
            },
            settings: LabSettings {
                pods: 6,
                containers_per_pod: 2,
                pods_per_minute: 120,
                duration_secs: Some(25.0),
                page_cache_mib: 4,
                keep_data_mib: 2048,
                orphan_every: None,
                runtime: RuntimeKind::Runc,
                runtime_path: "/usr/sbin/runc".into(),
            },
            memory_version: 1,
            pods_created: 56,
            containers_created: 112,
            pods_deleted: 50,
            churn_rate_per_minute: 120.0,
            orphans_made: 0,
            pods_live_at_end: 6,
            throttled: 0,
            memcgs: MemcgObservations {
                censuses: 14,
                dying_source: "proc_cgroups_minus_live",
                live_at_start: 7,
                dying_at_start: Some(34),
                live_max: 29,
                dying_max: Some(184),
                live_at_end: 29,
                dying_at_end: Some(184),
                live_after_teardown: Some(7),
                dying_after_teardown: Some(40),
            },
            interrupted: false,
            error: None,
            warnings: vec![],
            elapsed_ms: 26_000,
            churn_ms: 25_000,
            teardown_ms: 900,
            teardown: TeardownReport {
                containers_removed: 12,
                cgroups_removed: 180,
                hierarchies: 10,
                processes_killed: 0,
                state_dir_removed: true,
                data_dir_removed: true,
                leftover: vec![],
            },
            success: true,
        }
    }

    #[test]
    fn summary_table_and_exit_codes() {
        let r = report();
        let t = render_table(&r);
        assert!(
            t.contains("6 pods x 2 containers under /sys/fs/cgroup/memory/cgleak-lab-7/kubepods (runc, cgroup v1)"),
            "{t}"
        );
        assert!(t.contains("56 created, 50 deleted by churn in 25.0 s (120/min); 6 live at the end"), "{t}");
        assert!(t.contains("live 7 -> max 29, dying 34 -> max 184"), "{t}");
        assert!(t.contains("after teardown: 7 live, 40 dying"), "{t}");
        assert!(t.contains("12 containers deleted, 180 cgroups removed from 10 hierarchies, state dir removed"), "{t}");
        assert!(t.contains("done; everything removed"), "{t}");
        assert_eq!(exit_code(&r), exit::OK);

        let mut r = report();
        r.interrupted = true;
        assert_eq!(exit_code(&r), exit::INTERRUPTED);
        assert!(render_table(&r).contains("interrupted; everything removed"));
        r.teardown.leftover = vec!["/sys/fs/cgroup/cpu/cgleak-lab-7".into()];
        assert_eq!(exit_code(&r), exit::RUNTIME);
        let t = render_table(&r);
        assert!(t.lines().last().unwrap().trim() == "/sys/fs/cgroup/cpu/cgleak-lab-7", "{t}");

        let mut r = report();
        r.error = Some("runc run abc: exit status: 1: oops".into());
        assert_eq!(exit_code(&r), exit::RUNTIME);
        assert!(render_table(&r).contains("stopped by an error: runc run abc"));
    }

    #[test]
    fn counters_line_reads_at_a_glance() {
        let c = LabCounters {
            pods_live: 6,
            containers_live: 12,
            pods_created: 52,
            pods_deleted: 46,
            orphans_made: 0,
            orphans_kept: 0,
            memcgs_live: Some(45),
            memcgs_dying: Some(180),
            throttled: 0,
            churning: true,
        };
        assert_eq!(counters_line(&c), "6 pods (12 containers) | 52 created, 46 deleted | memcgs 45 live, 180 dying");
        let c =
            LabCounters { orphans_made: 3, orphans_kept: 3, memcgs_dying: None, throttled: 2, churning: false, ..c };
        assert_eq!(
            counters_line(&c),
            "6 pods (12 containers) | 52 created, 46 deleted, 3 orphans | memcgs 45 live, n/a dying | throttled 2 | starting"
        );
    }

    #[test]
    fn data_goes_to_disk() {
        let disk = tempfile::tempdir().unwrap();
        if memory_backed_fs(disk.path()).unwrap().is_some() {
            return; // the temp dir itself is on tmpfs: nothing to tell apart here
        }
        let state = disk.path().join("state");
        assert_eq!(choose_data_dir(&state, Path::new("/nonexistent"), true).unwrap(), state.join("data"));
        if Path::new("/dev/shm").is_dir() {
            let shm = Path::new("/dev/shm/cgleak-lab-none");
            assert_eq!(choose_data_dir(shm, disk.path(), false).unwrap(), disk.path());
            assert_eq!(choose_data_dir(shm, disk.path(), true).unwrap_err().code, exit::USAGE);
            assert_eq!(choose_data_dir(shm, shm, false).unwrap_err().code, exit::RUNTIME);
        }
    }
}

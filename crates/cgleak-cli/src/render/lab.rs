//! `cgleak lab` as it prints: the report's table, and the live progress on stderr.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cgleak_actions::lab::budget::HOST_MEMCG_CAP;
use cgleak_actions::lab::{LabCounters, LabOptions, LabPaths, LabProgress, LabReport};
use cgleak_readers::duration::human_duration;

use super::{aligned_lines, or_na};
use crate::host_change::CancelWatch;

/// Without a terminal, a progress line this often.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A few aligned `label: text` lines.
pub fn render_table(r: &LabReport) -> String {
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
            or_na(m.dying_at_start),
            or_na(m.dying_max),
            m.censuses,
            m.dying_source
        ),
    ));
    if m.live_after_teardown.is_some() {
        lines.push((
            "",
            format!("after teardown: {} live, {} dying", or_na(m.live_after_teardown), or_na(m.dying_after_teardown)),
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
    s.push_str(&format!(" | memcgs {} live, {} dying", or_na(c.memcgs_live), or_na(c.memcgs_dying)));
    if c.throttled > 0 {
        s.push_str(&format!(" | throttled {}", c.throttled));
    }
    if !c.churning {
        s.push_str(" | starting");
    }
    s
}

/// The live progress on stderr: a spinner line on a terminal, else a plain line now and then.
pub struct LabUi<'a> {
    bar: ProgressBar,
    tty: bool,
    settings: String,
    last_plain: Instant,
    cancel: CancelWatch<'a>,
}

impl<'a> LabUi<'a> {
    pub fn new(a: &LabOptions, cancel: &'a AtomicBool) -> Self {
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

    pub fn update(&mut self, p: LabProgress) {
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

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_actions::lab::{LabSettings, MemcgObservations, RuntimeKind, TeardownReport};

    use crate::exit;

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
        assert_eq!(exit::lab(&r), exit::OK);

        let mut r = report();
        r.interrupted = true;
        assert_eq!(exit::lab(&r), exit::INTERRUPTED);
        assert!(render_table(&r).contains("interrupted; everything removed"));
        r.teardown.leftover = vec!["/sys/fs/cgroup/cpu/cgleak-lab-7".into()];
        assert_eq!(exit::lab(&r), exit::RUNTIME);
        let t = render_table(&r);
        assert!(t.lines().last().unwrap().trim() == "/sys/fs/cgroup/cpu/cgleak-lab-7", "{t}");

        let mut r = report();
        r.error = Some("runc run abc: exit status: 1: oops".into());
        assert_eq!(exit::lab(&r), exit::RUNTIME);
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
}

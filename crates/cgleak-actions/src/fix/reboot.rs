//! reboot: hand the node to kured. When only a reboot frees the memcg IDs (the check's
//! reboot decision, `cgleak check --reboot-required`), write kured's sentinel file
//! (default `/var/run/reboot-required`) with the reason. cgleak never reboots a node.
//! Undone by removing the sentinel, if this fix created it.
//!
//! The sentinel is a file in `/run` (or `/var/run`, its link on most hosts), where kured
//! looks for it, and holds one line starting `cgleak: `: a resumed fix writes nothing
//! else, and never replaces or removes a file that is not such a sentinel.
//!
//! The sentinel is written, read and removed through a handle on its directory, opened
//! from `/` following no link (the plan's path was resolved beneath the host root, its
//! links followed then: a link on it now was put there since, and may lead out of the
//! root), with `openat`, `renameat` and `unlinkat` relative to that handle.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::fs::{Mode, OFlags};

use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_readers::{beneath, bounded, HostPaths};

use super::journal::{FixJournal, Outcome};
use super::resume::{bad, Bad, ResumeHost};
use super::{plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepRunner};

pub const ACTION: &str = "reboot";
pub const DEFAULT_SENTINEL: &str = "/var/run/reboot-required";
/// Every sentinel cgleak writes starts so (and is one line).
const CONTENT_PREFIX: &str = "cgleak: ";
const MAX_CONTENT: usize = 4096;

#[derive(Debug, Clone)]
pub struct RebootOptions {
    /// The sentinel as the host names it.
    pub sentinel: PathBuf,
    /// Write it even though the check does not call for a reboot.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootPlan {
    /// Local path of the sentinel.
    pub sentinel: PathBuf,
    pub content: String,
    /// It was there before (then it is left alone on rollback).
    pub existed: bool,
}

/// The sentinel's host path, if it is a file in /run or /var/run (no `..`).
fn sentinel_in_run(host_path: &Path) -> bool {
    let parts: Vec<Component> = host_path.components().collect();
    let normal = parts.iter().skip(1).all(|c| matches!(c, Component::Normal(_)));
    host_path.is_absolute() && normal && (host_path.starts_with("/run") && parts.len() >= 3 || host_path.starts_with("/var/run") && parts.len() >= 4)
}

/// Whether `content` is a sentinel cgleak writes: one line starting `cgleak: `.
fn is_our_content(content: &str) -> bool {
    content.starts_with(CONTENT_PREFIX) && content.ends_with('\n') && content.matches('\n').count() == 1 && content.len() <= MAX_CONTENT && !content.contains('\0')
}

/// The journal's plan holds no host root: the sentinel's path, made beneath the host root
/// by the plan (or checked so by `--resume`), is walked from `/` following no link.
fn no_links() -> HostPaths {
    HostPaths::new("/")
}

/// Whether `name` in `dir` is a sentinel cgleak wrote (it may be replaced or removed): a
/// regular file, opened without following a link or waiting on a FIFO, read up to its cap.
fn ours(dir: BorrowedFd<'_>, name: &OsStr, local: &Path) -> bool {
    let Ok(fd) = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) else { return false };
    bounded::read_fd_string(fd, local, MAX_CONTENT as u64).is_ok_and(|t| is_our_content(&t))
}

/// `remove` or `write` of the sentinel failed: the error in words.
fn failed(doing: &str, local: &Path, e: &io::Error) -> String {
    format!("{doing} {}: {}", local.display(), beneath::explain(e))
}

/// `required` and `reason` are the check's reboot decision.
pub fn plan(fh: &FixHost, o: &RebootOptions, required: bool, reason: &str) -> Result<(PlanView, RebootPlan), FixError> {
    if !sentinel_in_run(&o.sentinel) {
        return Err(FixError::BadArgument {
            flag: "--sentinel",
            value: o.sentinel.display().to_string(),
            why: format!("kured's sentinel is a file in /run or /var/run (default {DEFAULT_SENTINEL})"),
        });
    }
    // Inside the host root: /var/run is a link to /run on most hosts, and an absolute
    // target means the host's /run, not this container's.
    let local = fh.host.resolve(&o.sentinel).unwrap_or_else(|| fh.host.host(&o.sentinel));
    let host_name = o.sentinel.display().to_string();
    // The reason for the reboot: with --force that is the operator's, not the check's
    // (which then says "no reboot needed").
    let one_line = reason.replace('\n', " ");
    let content = if required { format!("{CONTENT_PREFIX}{one_line}\n") } else { format!("{CONTENT_PREFIX}reboot requested with --force; the check says: {one_line}\n") };
    let existed = fh.host.open_local(&local, OFlags::PATH).is_ok();
    let mut view = PlanView::new(ACTION, format!("ask kured for a reboot: write its sentinel {host_name}"));
    view.expected_gain = "kured drains and reboots the node in its maintenance window; a reboot frees every memcg ID".into();
    view.notes.push("cgleak never reboots a node itself; kured (--reboot-sentinel) does, one node at a time".into());
    if !required && !o.force {
        view.nothing_to_do = Some(format!("{reason} (--force writes the sentinel anyway)"));
    } else if existed {
        view.nothing_to_do = Some(format!("{host_name} exists already: a reboot is requested"));
    } else {
        if !required {
            view.notes.push(format!("--force: the check does not call for a reboot ({reason})"));
        }
        view.step(format!("write {host_name}"), Vec::new(), vec![FileWrite { file: host_name, value: content.trim_end().to_string() }]);
    }
    Ok((view, RebootPlan { sentinel: local, content, existed }))
}

/// `--resume`: the sentinel must be a file in this host's /run (or /var/run), reached
/// without a link out of the host root, holding one `cgleak: ` line.
pub fn check_resume(plan: &RebootPlan, h: &ResumeHost) -> Result<PlanView, Bad> {
    let host: &HostPaths = h.host;
    let rel = plan.sentinel.strip_prefix(host.root()).map_err(|_| bad("sentinel", format!("{} is outside the host root {}", plan.sentinel.display(), host.root().display())))?;
    let host_path = Path::new("/").join(rel);
    if !sentinel_in_run(&host_path) {
        return Err(bad("sentinel", format!("{} is not a file in /run or /var/run, where kured's sentinel is", host_path.display())));
    }
    if host.resolve(&host_path).as_deref() != Some(plan.sentinel.as_path()) {
        return Err(bad("sentinel", format!("{} leads elsewhere through a link", host_path.display())));
    }
    if !is_our_content(&plan.content) {
        return Err(bad("content", format!("not a sentinel cgleak writes (one line starting {CONTENT_PREFIX:?}, at most {MAX_CONTENT} bytes)")));
    }
    let name = host_path.display().to_string();
    let mut view = PlanView::new(ACTION, format!("ask kured for a reboot: write its sentinel {name}"));
    view.step(format!("write {name}"), Vec::new(), vec![FileWrite { file: name, value: plan.content.trim_end().to_string() }]);
    Ok(view)
}

pub fn run(journal: FixJournal, rollback: bool, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, RebootPlan) = plan_from_journal(&journal)?;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    if rollback || r.journal.state.rolling_back.is_some() {
        r.journal.rollback("rollback asked")?;
        if !plan.existed {
            let removed = match no_links().open_parent_nofollow(&plan.sentinel, None) {
                // Never written (its directory was not made), or removed already.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
                Ok((dir, name)) => match beneath::entry(dir.as_fd(), &name) {
                    Ok(None) => Ok(None),
                    Ok(Some(_)) if !ours(dir.as_fd(), &name, &plan.sentinel) => Ok(Some(false)),
                    // Gone meanwhile: nothing left to remove.
                    Ok(Some(_)) => beneath::unlink_file(dir.as_fd(), &name).map(|removed| removed.then_some(true)),
                    Err(e) => Err(e),
                },
            };
            match removed {
                Ok(None) => {}
                Ok(Some(false)) => r.notes.push(format!("{} left: it is not a sentinel cgleak wrote", plan.sentinel.display())),
                Ok(Some(true)) => r.notes.push(format!("removed {}", plan.sentinel.display())),
                Err(e) => return Ok(r.stop_unfinished(failed("remove", &plan.sentinel, &e), json!({}))),
            }
        }
        return Ok(r.finish(Outcome::RolledBack, None, json!({})));
    }
    let res = r.run(1, |_| {
        // Its directory made when missing (mkdirat, a component at a time, no link followed).
        let (dir, name) = no_links().open_parent_nofollow(&plan.sentinel, Some(Mode::from_raw_mode(0o755))).map_err(|e| failed("write", &plan.sentinel, &e))?;
        let there = beneath::entry(dir.as_fd(), &name).map_err(|e| failed("write", &plan.sentinel, &e))?;
        if there.is_some() && !ours(dir.as_fd(), &name, &plan.sentinel) {
            return Err(format!("{} is there and is not a sentinel cgleak wrote: left as it is", plan.sentinel.display()));
        }
        // Whole or not at all: a temporary beside it, synced, renamed over (0644, as
        // File::create made it under the usual umask).
        let tmp = format!(".cgleak-reboot-required.{}", std::process::id());
        beneath::write_file_atomic(dir.as_fd(), &name, OsStr::new(&tmp), plan.content.as_bytes(), Mode::from_raw_mode(0o644))
            .map_err(|e| failed("write", &plan.sentinel, &e))?;
        Ok((format!("{} written", plan.sentinel.display()), json!({ "written": plan.sentinel })))
    });
    match res {
        Ok(()) => Ok(r.finish(Outcome::Completed, None, json!({ "sentinel": plan.sentinel }))),
        Err(e) => Ok(r.stop_unfinished(e, json!({}))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::failpoint::Failpoints;
    use crate::fix::testing::fix_host;
    use crate::fix::{journal_plan, StepStatus};
    use std::fs;

    fn sentinel(p: &str, force: bool) -> RebootOptions {
        RebootOptions { sentinel: PathBuf::from(p), force }
    }

    #[test]
    fn the_plan_writes_one_line_in_run_when_the_check_calls_for_a_reboot() {
        let f = cgleak_fixtures::el7_957_kmem_exhausted();
        let (fh, _) = fix_host(f.root());
        let (view, p) = plan(&fh, &sentinel("/run/reboot-required", false), true, "node is exhausted:\nonly a reboot frees IDs").unwrap();
        assert_eq!(p.sentinel, f.path("/run/reboot-required"));
        assert_eq!(p.content, "cgleak: node is exhausted: only a reboot frees IDs\n");
        assert!(!p.existed && view.nothing_to_do.is_none());
        assert_eq!(view.steps.len(), 1);
        assert_eq!(view.steps[0].title, "write /run/reboot-required");
        assert_eq!(view.steps[0].writes, vec![FileWrite { file: "/run/reboot-required".into(), value: "cgleak: node is exhausted: only a reboot frees IDs".into() }]);

        // No reboot called for: nothing, unless --force, which says so in the file.
        let (view, _) = plan(&fh, &sentinel("/run/reboot-required", false), false, "no reboot needed: gc comes first").unwrap();
        assert_eq!(view.nothing_to_do.as_deref(), Some("no reboot needed: gc comes first (--force writes the sentinel anyway)"));
        assert!(view.steps.is_empty());
        let (view, p) = plan(&fh, &sentinel("/run/reboot-required", true), false, "no reboot needed: gc comes first").unwrap();
        assert_eq!(p.content, "cgleak: reboot requested with --force; the check says: no reboot needed: gc comes first\n");
        assert!(view.notes.iter().any(|n| n == "--force: the check does not call for a reboot (no reboot needed: gc comes first)"), "{:?}", view.notes);
        assert!(is_our_content(&p.content));

        // There already: a reboot is requested, nothing to write.
        fs::create_dir_all(f.path("/run")).unwrap();
        fs::write(f.path("/run/reboot-required"), "").unwrap();
        let (view, p) = plan(&fh, &sentinel("/run/reboot-required", false), true, "exhausted").unwrap();
        assert!(p.existed);
        assert_eq!(view.nothing_to_do.as_deref(), Some("/run/reboot-required exists already: a reboot is requested"));

        // Anywhere else: a usage error naming the flag.
        let e = plan(&fh, &sentinel("/etc/cron.d/cgleak", false), true, "exhausted").unwrap_err();
        assert!(e.is_usage());
        assert_eq!(e.to_string(), "--sentinel /etc/cron.d/cgleak: kured's sentinel is a file in /run or /var/run (default /var/run/reboot-required)");
    }

    /// A rollback removes the sentinel only where this fix made it and it is still one of
    /// cgleak's: never a file that was there before, nor one that is not a cgleak sentinel.
    #[test]
    fn a_rollback_removes_only_a_sentinel_this_fix_wrote() {
        let f = cgleak_fixtures::el7_957_kmem_exhausted();
        let (fh, _) = fix_host(f.root());
        let file = f.path("/run/reboot-required");
        let roll_back = |existed: bool| {
            let (view, mut p) = plan(&fh, &sentinel("/run/reboot-required", false), true, "exhausted").unwrap();
            p.existed = existed;
            let state = tempfile::tempdir().unwrap();
            let journal = FixJournal::begin(state.path(), ACTION, journal_plan(&view, &p), Failpoints::none()).unwrap();
            let report = run(journal, true, &AtomicBool::new(false), &mut |_| {}).unwrap();
            assert_eq!(report.outcome, Some(Outcome::RolledBack), "{report:#?}");
            report.notes
        };
        // Applied, then rolled back: written, then removed.
        let (view, p) = plan(&fh, &sentinel("/run/reboot-required", false), true, "exhausted").unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = FixJournal::begin(state.path(), ACTION, journal_plan(&view, &p), Failpoints::none()).unwrap();
        let report = run(journal, false, &AtomicBool::new(false), &mut |_| {}).unwrap();
        assert_eq!(report.steps.iter().map(|s| s.status).collect::<Vec<_>>(), [StepStatus::Done]);
        assert_eq!(fs::read_to_string(&file).unwrap(), "cgleak: exhausted\n");
        assert_eq!(roll_back(false), vec![format!("removed {}", file.display())]);
        assert!(!file.exists());
        // Never written (or removed already): nothing to say.
        assert_eq!(roll_back(false), Vec::<String>::new());
        // Someone else's file in its place: left.
        fs::write(&file, "kured test\n").unwrap();
        assert_eq!(roll_back(false), vec![format!("{} left: it is not a sentinel cgleak wrote", file.display())]);
        assert_eq!(fs::read_to_string(&file).unwrap(), "kured test\n");
        // There before the fix: left whatever it holds.
        fs::write(&file, "cgleak: exhausted\n").unwrap();
        assert_eq!(roll_back(true), Vec::<String>::new());
        assert!(file.exists());
    }

    #[test]
    fn sentinels_live_in_run() {
        for ok in ["/run/reboot-required", "/var/run/reboot-required", "/run/kured/reboot-required"] {
            assert!(sentinel_in_run(Path::new(ok)), "{ok}");
        }
        for no in ["/run", "/var/run", "/etc/cron.d/x", "/run/../etc/passwd", "run/x", "/varrun/x", "/var/lib/x"] {
            assert!(!sentinel_in_run(Path::new(no)), "{no}");
        }
        assert!(is_our_content("cgleak: reboot required: node is exhausted\n"));
        for no in ["cgleak: a\nb\n", "* * * * * root sh\n", "cgleak: no newline"] {
            assert!(!is_our_content(no), "{no:?}");
        }
    }
}

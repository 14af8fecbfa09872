//! `cgleak fix --resume`: a journal is data, not a program.
//!
//! A journal left by a killed fixer says which fix it was and what its plan held; a
//! forged or damaged one could say anything. So before a resume does anything, each
//! action checks the plan against this host, as this run finds it: every path must be one
//! the action's own planner would name here under `--host-root` (gc and migrate: cgroups
//! beneath the discovered hierarchies' mount points, no `..`, no symlink; reclaim:
//! `/proc/sys/vm/drop_caches` or `memory.reclaim` under the memory hierarchy; reboot: the
//! sentinel in `/run`; nokmem: the boot files its discovery finds, with the content its
//! editor makes of them), and a command only a boot-loader generator at its standard
//! location with the arguments nokmem gives it. Anything else refuses the resume, naming
//! the journal's line and the field. The plan shown and the step titles are made again
//! from the checked plan: the journal's own view is never shown.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use cgleak_readers::mountinfo::{CgroupLayout, MemoryHierarchy};
use cgleak_readers::HostPaths;

use super::journal::FixJournal;
use super::{gc, migrate, nokmem, reboot, reclaim, PlanView};

/// The host a resume runs on, as this run finds it (never as the journal says).
#[derive(Debug, Clone, Copy)]
pub struct ResumeHost<'a> {
    pub host: &'a HostPaths,
    pub layout: &'a CgroupLayout,
    pub memory: &'a MemoryHierarchy,
    /// The state directory the journal was read from (backups and stamps are in it).
    pub state_dir: &'a Path,
}

/// Why a journal is not carried out: its record (line) and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}, {field}: {why}", .journal.display())]
pub struct Refusal {
    pub journal: PathBuf,
    /// 1-based line of the record.
    pub line: usize,
    /// The field in the record (`plan.detail.pods[0].rel`).
    pub field: String,
    pub why: String,
}

/// A field of an action's plan that this host's planner would not have written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub field: String,
    pub why: String,
}

pub fn bad(field: impl Into<String>, why: impl Into<String>) -> Bad {
    Bad { field: field.into(), why: why.into() }
}

/// Check the journal's plan against the host; the view made again from the checked plan.
pub fn check(journal: &FixJournal, h: &ResumeHost) -> Result<PlanView, Refusal> {
    let s = &journal.state;
    let refuse = |line: usize, field: String, why: String| Refusal { journal: journal.path().to_path_buf(), line, field, why };
    let at_begin = |b: Bad| refuse(s.begin_line, if b.field.is_empty() { "plan.detail".into() } else { format!("plan.detail.{}", b.field) }, b.why);
    let detail = &s.plan["detail"];
    let view = match s.action.as_str() {
        gc::ACTION => gc::check_resume(&decode(detail).map_err(at_begin)?, h),
        migrate::ACTION => migrate::check_resume(&decode(detail).map_err(at_begin)?, h),
        nokmem::ACTION => nokmem::check_resume(&decode(detail).map_err(at_begin)?, h),
        reclaim::ACTION => reclaim::check_resume(&decode(detail).map_err(at_begin)?, h),
        reboot::ACTION => reboot::check_resume(&decode(detail).map_err(at_begin)?, h),
        other => return Err(refuse(s.begin_line, "action".into(), format!("{other:?} is not a fix action (reclaim, gc, migrate, nokmem, reboot)"))),
    }
    .map_err(at_begin)?;
    for (i, (_, change)) in s.amendments.iter().enumerate() {
        let line = s.amendment_lines.get(i).copied().unwrap_or(0);
        let ok = match s.action.as_str() {
            migrate::ACTION => migrate::check_amendment(change),
            _ => Err(bad("", "this action never amends its plan")),
        };
        ok.map_err(|b| refuse(line, if b.field.is_empty() { "change".into() } else { format!("change.{}", b.field) }, b.why))?;
    }
    // The steps the journal records done or in flight must be the plan's.
    let n = view.steps.len() as u32;
    if let Some(step) = s.done.iter().chain(s.in_flight.iter()).find(|st| **st == 0 || **st > n) {
        return Err(refuse(s.begin_line, "plan.detail".into(), format!("the journal records step {step}, and this plan has {n} steps")));
    }
    Ok(view)
}

/// The action's plan detail, or the serde error as a refusal of the whole detail.
fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, Bad> {
    serde_json::from_value(v.clone()).map_err(|e| bad("", format!("not a plan of this action: {e}")))
}

/// A path below a directory: `..`, `/`, `.` and empty components are refused
/// (`empty_ok`: the directory itself).
pub fn relative(field: &str, p: &Path, empty_ok: bool) -> Result<(), Bad> {
    if p.as_os_str().is_empty() {
        return if empty_ok { Ok(()) } else { Err(bad(field, "empty: it would name the hierarchy's root")) };
    }
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(bad(field, format!("{:?} is not a plain relative path (no `/` at its start, no `.` or `..`)", p.display().to_string())))
    }
}

/// No component of `rel` below `base` that exists is a symlink: what is written there stays beneath `base`.
pub fn no_links_below(base: &Path, rel: &Path) -> Result<(), String> {
    let mut at = base.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(format!("{} is a symbolic link", at.display())),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// `journal` and `derived` must be equal: what the journal says, and what this host gives.
pub fn same<T: PartialEq + fmt::Debug>(field: &str, journal: &T, derived: &T, how: &str) -> Result<(), Bad> {
    if journal == derived {
        Ok(())
    } else {
        Err(bad(field, format!("the journal says {journal:?}, this host gives {derived:?} ({how})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_below() {
        assert!(relative("rel", Path::new("kubepods/burstable/poda"), false).is_ok());
        assert!(relative("rel", Path::new(""), true).is_ok());
        for bad_path in ["", "/etc", "kubepods/../../etc", "./x"] {
            let e = relative("rel", Path::new(bad_path), false).unwrap_err();
            assert_eq!(e.field, "rel", "{bad_path}");
        }
    }

    #[test]
    fn links_below_a_base_are_found() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/lnk")).unwrap();
        assert!(no_links_below(t.path(), Path::new("a/b/missing/deeper")).is_ok());
        let e = no_links_below(t.path(), Path::new("a/lnk/x")).unwrap_err();
        assert!(e.contains("a/lnk is a symbolic link"), "{e}");
    }
}

//! reboot: hand the node to kured. When only a reboot frees the memcg IDs (the check's
//! reboot decision, `cgleak check --reboot-required`), write kured's sentinel file
//! (default `/var/run/reboot-required`) with the reason. cgleak never reboots a node.
//! Undone by removing the sentinel, if this fix created it.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::journal::{FixJournal, Outcome};
use super::{plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepRunner};

pub const ACTION: &str = "reboot";
pub const DEFAULT_SENTINEL: &str = "/var/run/reboot-required";

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

/// `required` and `reason` are the check's reboot decision.
pub fn plan(fh: &FixHost, o: &RebootOptions, required: bool, reason: &str) -> (PlanView, RebootPlan) {
    // Inside the host root: /var/run is a link to /run on most hosts, and an absolute
    // target means the host's /run, not this container's.
    let local = fh.host.resolve(&o.sentinel).unwrap_or_else(|| fh.host.host(&o.sentinel));
    let host_name = o.sentinel.display().to_string();
    // The reason for the reboot: with --force that is the operator's, not the check's
    // (which then says "no reboot needed").
    let content = if required { format!("cgleak: {reason}\n") } else { format!("cgleak: reboot requested with --force; the check says: {reason}\n") };
    let existed = local.exists();
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
    (view, RebootPlan { sentinel: local, content, existed })
}

pub fn run(journal: FixJournal, rollback: bool, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, RebootPlan) = plan_from_journal(&journal)?;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    if rollback || r.journal.state.rolling_back.is_some() {
        r.journal.rollback("rollback asked").map_err(FixError::Journal)?;
        if !plan.existed {
            match fs::remove_file(&plan.sentinel) {
                Ok(()) => r.notes.push(format!("removed {}", plan.sentinel.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Ok(r.stop_unfinished(format!("remove {}: {e}", plan.sentinel.display()), json!({}))),
            }
        }
        return Ok(r.finish(Outcome::RolledBack, None, json!({})));
    }
    let res = r.run(1, |_| {
        let dir = plan.sentinel.parent().ok_or_else(|| format!("{}: no parent directory", plan.sentinel.display()))?;
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Whole or not at all: a temporary beside it, synced, renamed over.
        let tmp = dir.join(format!(".cgleak-reboot-required.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(plan.content.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &plan.sentinel)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("write {}: {e}", plan.sentinel.display())
        })?;
        Ok((format!("{} written", plan.sentinel.display()), json!({ "written": plan.sentinel })))
    });
    match res {
        Ok(()) => Ok(r.finish(Outcome::Completed, None, json!({ "sentinel": plan.sentinel }))),
        Err(e) => Ok(r.stop_unfinished(e, json!({}))),
    }
}

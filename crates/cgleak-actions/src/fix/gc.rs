//! gc: remove orphaned pod cgroups: no task anywhere in the pod's subtree, and no
//! directory for its UID in the kubelet's pods directory (the census finds them in the
//! memory hierarchy). runc and the kubelet make the same path in every mounted
//! hierarchy, so each pod is removed from all of them, deepest first; one journaled step
//! per pod. Just before its step a pod is checked again: if the kubelet knows it again
//! or a task is in it, it is skipped; a task that appears while it is removed (rmdir
//! EBUSY with a task) turns the pod into a skip too, never into an error.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_model::kubepods::KubepodsSummary;
use cgleak_readers::cgroupfs::subtree_has_procs;
use cgleak_readers::kubelet::read_pod_uids;
use cgleak_readers::HostPaths;

use super::journal::{FixJournal, Outcome};
use super::{plan_from_journal, ApplyReport, FixError, FixHost, FixProgress, PlanView, StepRunner, StepStatus};
use crate::cgroup_tree::subtree_dirs;

pub const ACTION: &str = "gc";

/// One orphaned pod and where its cgroup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanTarget {
    pub uid: String,
    pub qos: String,
    /// The pod cgroup relative to each hierarchy's root.
    pub rel: PathBuf,
    /// (local path, host path) of the pod cgroup in each hierarchy where it exists.
    pub tops: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPlan {
    pub pods: Vec<OrphanTarget>,
    /// The host root, to read the kubelet's pods directory again before each step.
    pub host_root: PathBuf,
    pub kubelet_root: PathBuf,
}

/// The plan from the census' kubepods summary.
pub fn plan(fh: &FixHost, kubepods: Option<&KubepodsSummary>) -> Result<(PlanView, GcPlan), FixError> {
    let mut view = PlanView::new(ACTION, "remove orphaned pod cgroups (no task in the subtree, no kubelet pod directory) in every hierarchy, deepest first");
    let mut plan = GcPlan { pods: Vec::new(), host_root: fh.host.root().to_path_buf(), kubelet_root: fh.host.kubelet_root().to_path_buf() };
    let Some(kp) = kubepods else {
        view.nothing_to_do = Some("no kubepods tree in the memory hierarchy".into());
        return Ok((view, plan));
    };
    if kp.orphans.is_none() {
        view.nothing_to_do = Some(format!(
            "the kubelet's pods directory {} is missing, so orphans cannot be told from running pods (give --kubelet-root-dir)",
            kp.kubelet_pods_dir
        ));
        return Ok((view, plan));
    }
    let mem_root = &fh.memory.mount.mount_point;
    for o in &kp.orphan_pods {
        let rel = Path::new(&o.path).strip_prefix(mem_root).map(Path::to_path_buf).map_err(|_| {
            FixError::Runtime(format!("orphan {} is outside the memory hierarchy {}", o.path, mem_root.display()))
        })?;
        let tops: Vec<(PathBuf, String)> = fh
            .layout
            .all()
            .filter(|m| m.root == Path::new("/"))
            .map(|m| (m.local.join(&rel), m.mount_point.join(&rel).display().to_string()))
            .filter(|(local, _)| local.is_dir())
            .collect();
        plan.pods.push(OrphanTarget { uid: o.uid.clone(), qos: o.qos.as_str().to_string(), rel, tops });
    }
    if plan.pods.is_empty() {
        view.nothing_to_do = Some("no orphaned pod cgroup".into());
        return Ok((view, plan));
    }
    let mut memcgs = 0;
    let mut others = 0;
    for p in &plan.pods {
        let mut dirs: Vec<String> = Vec::new();
        for (local, host) in &p.tops {
            let mut sub: Vec<String> = subtree_dirs(local)
                .into_iter()
                .map(|d| format!("{host}{}", d.strip_prefix(local).ok().filter(|r| !r.as_os_str().is_empty()).map(|r| format!("/{}", r.display())).unwrap_or_default()))
                .collect();
            sub.reverse();
            if local.starts_with(&fh.memory.mount.local) {
                memcgs += sub.len();
            } else {
                others += sub.len();
            }
            dirs.extend(sub);
        }
        view.step(format!("remove orphaned pod {} ({}) from {} hierarchies", p.uid, p.qos, p.tops.len()), dirs, Vec::new());
    }
    view.expected_gain = if fh.era.dying_hold_ids {
        format!(
            "{memcgs} memcgs (and {others} cgroups of other controllers) removed: they stop counting as live; on {} a memcg \
             keeps its ID until it is freed, which kmem-accounted ones never are before a reboot",
            fh.era.id.as_str()
        )
    } else {
        format!("{memcgs} memcgs (and {others} cgroups of other controllers) removed: their IDs are free once their pages are reclaimed")
    };
    view.notes.push("each pod is checked again just before its removal: one the kubelet knows again, or with a task, is skipped".into());
    Ok((view, plan))
}

/// What became of one pod.
enum PodResult {
    Removed(u64),
    Skipped(String),
}

/// Remove one pod's cgroups in every hierarchy, deepest first, if still orphaned.
fn remove_pod(p: &OrphanTarget, known: Option<&BTreeSet<String>>) -> Result<PodResult, String> {
    if known.is_some_and(|k| k.contains(&p.uid)) {
        return Ok(PodResult::Skipped("the kubelet has a directory for it again".into()));
    }
    for (local, host) in &p.tops {
        match subtree_has_procs(local) {
            Ok(true) => return Ok(PodResult::Skipped(format!("a task is in {host} now"))),
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut removed = 0;
    for (local, host) in &p.tops {
        let mut dirs = subtree_dirs(local);
        dirs.reverse();
        for d in dirs {
            match fs::remove_dir(&d) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {
                    // A task (or a child cgroup) arrived since the check: leave the rest.
                    return Ok(PodResult::Skipped(format!("{} became busy while it was removed ({e}); {removed} cgroups removed before", d.display())));
                }
                Err(e) => return Err(format!("rmdir {} ({host}): {e}", d.display())),
            }
        }
    }
    Ok(PodResult::Removed(removed))
}

pub fn run(journal: FixJournal, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, GcPlan) = plan_from_journal(&journal)?;
    let host = HostPaths::new(&plan.host_root).with_kubelet_root(&plan.kubelet_root);
    let mut r = StepRunner::new(journal, view, cancel, progress);
    let (mut removed, mut skipped) = (0u64, 0u64);
    for (i, p) in plan.pods.iter().enumerate() {
        let step = i as u32 + 1;
        if r.cancelled() {
            r.interrupted = true;
            break;
        }
        let known = read_pod_uids(&host).map_err(|e| FixError::Runtime(e.to_string()))?;
        let res = r.run(step, |_| match remove_pod(p, known.as_ref())? {
            PodResult::Removed(n) => Ok((format!("{n} cgroups removed"), json!({ "removed": n }))),
            PodResult::Skipped(why) => Ok((format!("skipped: {why}"), json!({ "skipped": why }))),
        });
        if let Err(e) = res {
            return Ok(r.stop_unfinished(e, json!({ "removed": removed, "skipped": skipped })));
        }
        match r.steps.last().map(|s| s.status) {
            Some(StepStatus::Skipped) => skipped += 1,
            Some(StepStatus::Done) => removed += 1,
            _ => {}
        }
    }
    let outcome = if r.interrupted { Outcome::Aborted } else { Outcome::Completed };
    Ok(r.finish(outcome, None, json!({ "pods_removed": removed, "pods_skipped": skipped })))
}

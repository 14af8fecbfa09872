//! gc: remove orphaned pod cgroups: no task anywhere in the pod's subtree, and no
//! directory for its UID in the kubelet's pods directory (the census finds them in the
//! memory hierarchy). runc and the kubelet make the same path in every mounted
//! hierarchy, so each pod is removed from all of them, deepest first; one journaled step
//! per pod. Just before its step a pod is checked again: if the kubelet knows it again
//! or a task is in it, it is skipped; a task that appears while it is removed (rmdir
//! EBUSY with a task) turns the pod into a skip too, never into an error.
//!
//! The kubelet makes a pod's cgroup before its pod directory (the pod worker's syncPod
//! ensures the pod cgroup, then makes the pod's data directories), so a pod being started
//! looks orphaned for a moment. Hence pods whose cgroup is younger than `--min-age` (10m)
//! are left, judged by the cgroup directory's ctime: cgroupfs sets it when the directory's
//! inode is made (at mkdir, or again once the inode cache let it go: kernfs_init_inode),
//! so it is never older than the cgroup and a pod is never taken for older than it is.
//! While a kubelet runs, a pod is removed only once it was found unknown (no pod
//! directory, no task) twice, [`CONFIRM_GAP`] apart: once for every pod before the first
//! step, once more just before its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_model::kubepods::{pod_uid, CgroupDriver, KubepodsSummary, QosClass};
use cgleak_readers::cgroupfs::{self, subtree_has_procs};
use cgleak_readers::kubelet::{read_pod_uids, running_kubelet};
use cgleak_readers::HostPaths;

use super::journal::{now_unix, FixJournal, Outcome};
use super::resume::{bad, no_links_below, relative, Bad, ResumeHost};
use super::{plan_from_journal, ApplyReport, FixError, FixHost, FixProgress, PlanView, StepRunner, StepStatus};
use crate::cgroup_tree::{remove_tree_deepest_first, subtree_dirs, WhenBusy};

pub const ACTION: &str = "gc";
/// `--min-age` by default.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(600);
/// While a kubelet runs: the least time between the two checks that a pod is unknown.
pub const CONFIRM_GAP: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Pods whose cgroup is younger than this are left.
    pub min_age: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { min_age: DEFAULT_MIN_AGE }
    }
}

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
    /// `--min-age` in seconds, checked again before each step.
    #[serde(default)]
    pub min_age_secs: u64,
}

/// The age of a pod's cgroup: from the youngest ctime of its directories (None: none is there).
fn cgroup_age(tops: &[(PathBuf, String)]) -> Option<f64> {
    let now = now_unix();
    tops.iter().filter_map(|(local, _)| cgroupfs::metadata(local).ok()).map(|m| now - (m.st_ctime as f64 + m.st_ctime_nsec as f64 * 1e-9)).reduce(f64::min)
}

fn human_secs(s: f64) -> String {
    crate::human_duration(Duration::from_secs(s.max(0.0) as u64))
}

/// The step of one pod: its title and its cgroups (host paths), deepest first.
fn pod_step(p: &OrphanTarget) -> (String, Vec<String>) {
    let mut dirs: Vec<String> = Vec::new();
    for (local, host) in &p.tops {
        let mut sub: Vec<String> = subtree_dirs(local)
            .into_iter()
            .map(|d| format!("{host}{}", d.strip_prefix(local).ok().filter(|r| !r.as_os_str().is_empty()).map(|r| format!("/{}", r.display())).unwrap_or_default()))
            .collect();
        sub.reverse();
        dirs.extend(sub);
    }
    (format!("remove orphaned pod {} ({}) from {} hierarchies", p.uid, p.qos, p.tops.len()), dirs)
}

const SUMMARY: &str = "remove orphaned pod cgroups (no task in the subtree, no kubelet pod directory) in every hierarchy, deepest first";

/// The plan from the census' kubepods summary.
pub fn plan(fh: &FixHost, kubepods: Option<&KubepodsSummary>, o: &GcOptions) -> Result<(PlanView, GcPlan), FixError> {
    let mut view = PlanView::new(ACTION, SUMMARY);
    let mut plan = GcPlan { pods: Vec::new(), host_root: fh.host.root().to_path_buf(), kubelet_root: fh.host.kubelet_root().to_path_buf(), min_age_secs: o.min_age.as_secs() };
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
    let min_age = crate::human_duration(o.min_age);
    let mut young: Vec<String> = Vec::new();
    let mut links: Vec<String> = Vec::new();
    for o_pod in &kp.orphan_pods {
        let rel = Path::new(&o_pod.path)
            .strip_prefix(mem_root)
            .map(Path::to_path_buf)
            .map_err(|_| FixError::OutsideHierarchy { what: "orphan", path: o_pod.path.clone(), hierarchy: mem_root.clone() })?;
        let tops: Vec<(PathBuf, String)> = fh
            .layout
            .all()
            .filter(|m| m.root == Path::new("/"))
            .map(|m| (m.local.join(&rel), m.mount_point.join(&rel).display().to_string()))
            .filter(|(local, host)| {
                // cgroupfs has no symlinks: one in place of the pod's cgroup is planted, never followed.
                let linked = fs::symlink_metadata(local).is_ok_and(|m| m.file_type().is_symlink());
                if linked {
                    links.push(format!("{host} is a symbolic link, not a cgroup: left alone"));
                }
                !linked && cgroupfs::is_dir(local)
            })
            .collect();
        if let Some(age) = cgroup_age(&tops).filter(|a| *a < o.min_age.as_secs_f64()) {
            young.push(format!("{} ({} old)", o_pod.uid, human_secs(age)));
            continue;
        }
        plan.pods.push(OrphanTarget { uid: o_pod.uid.clone(), qos: o_pod.qos.as_str().to_string(), rel, tops });
    }
    view.notes.extend(links);
    if !young.is_empty() {
        view.notes.push(format!(
            "{} orphaned pods left, their cgroup younger than --min-age {min_age} (the kubelet makes a pod's cgroup before its pod \
             directory, so a pod being started looks orphaned for a moment): {}",
            young.len(),
            young.join(", ")
        ));
    }
    if plan.pods.is_empty() {
        view.nothing_to_do = Some(if young.is_empty() { "no orphaned pod cgroup".into() } else { format!("no orphaned pod cgroup older than --min-age {min_age}") });
        return Ok((view, plan));
    }
    let mut memcgs = 0;
    let mut others = 0;
    for p in &plan.pods {
        for (local, _) in &p.tops {
            let n = subtree_dirs(local).len();
            if local.starts_with(&fh.memory.mount.local) {
                memcgs += n;
            } else {
                others += n;
            }
        }
        let (title, dirs) = pod_step(p);
        view.step(title, dirs, Vec::new());
    }
    // What the removal gains of the ID space is the judge's (the decision table's gc row).
    let judged = fh.judgement.as_ref().and_then(|j| {
        j.remedy(ACTION).map(|r| format!("{}: {}", r.id_gain.summary, r.summary)).or_else(|| j.not_offered(ACTION).map(|n| n.reason.clone()))
    });
    view.expected_gain = if let Some(g) = judged {
        format!("{memcgs} memcgs (and {others} cgroups of other controllers) removed; IDs: {g}")
    } else if fh.era.dying_hold_ids {
        format!(
            "{memcgs} memcgs (and {others} cgroups of other controllers) removed: they stop counting as live; on {} a memcg \
             keeps its ID until it is freed, which kmem-accounted ones never are before a reboot",
            fh.era.id.as_str()
        )
    } else {
        format!("{memcgs} memcgs (and {others} cgroups of other controllers) removed: their IDs are free once their pages are reclaimed")
    };
    view.notes.push(format!(
        "each pod is checked again just before its removal: one the kubelet knows again, with a task, or whose cgroup is younger than --min-age {min_age} now, is skipped"
    ));
    if let Some((pid, _)) = &fh.kubelet {
        view.notes.push(kubelet_note(*pid));
    }
    Ok((view, plan))
}

fn kubelet_note(pid: u32) -> String {
    format!(
        "a kubelet runs (pid {pid}): each pod must be found unknown (no pod directory, no task) twice, at least {} s apart (before the \
         first removal, and again just before its own), or it is skipped",
        CONFIRM_GAP.as_secs()
    )
}

/// Whether the pod is unknown now: Ok(None) when it is, Ok(Some(why not)) when it is not.
fn unknown_now(p: &OrphanTarget, host: &HostPaths) -> Result<Option<String>, String> {
    match read_pod_uids(host).map_err(|e| e.to_string())? {
        None => return Ok(Some(format!("the kubelet's pods directory {} is gone: orphans cannot be told from pods", host.kubelet_pods().display()))),
        Some(k) if k.contains(&p.uid) => return Ok(Some("the kubelet has a directory for it again".into())),
        Some(_) => {}
    }
    for (local, host) in &p.tops {
        match subtree_has_procs(local) {
            Ok(true) => return Ok(Some(format!("a task is in {host} now"))),
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

/// What the checks just before a pod's step decide, before the last look at the host.
#[derive(Debug, PartialEq)]
enum Recheck {
    /// Leave the pod, for this reason.
    Skip(String),
    /// Look once more (after [`CONFIRM_GAP`] since the first check, while a kubelet runs), then remove it.
    Confirm { after_gap: bool },
}

/// The first checks of a pod's step, on what was found: the age of its cgroup now (None:
/// no directory left), `--min-age` in seconds, and the first check made before the first
/// step while a kubelet runs (None: no kubelet, no first check). Err: the first check failed.
fn recheck(age: Option<f64>, min_age: f64, first: Option<Result<Option<String>, String>>) -> Result<Recheck, String> {
    if let Some(age) = age.filter(|a| *a < min_age) {
        return Ok(Recheck::Skip(format!(
            "its cgroup is {} old now, younger than --min-age {} (made again since the plan?)",
            human_secs(age),
            human_secs(min_age)
        )));
    }
    match first {
        Some(Ok(Some(why))) => Ok(Recheck::Skip(format!("{why} (first check; a kubelet runs)"))),
        Some(Err(e)) => Err(e),
        Some(Ok(None)) => Ok(Recheck::Confirm { after_gap: true }),
        None => Ok(Recheck::Confirm { after_gap: false }),
    }
}

/// The last check's answer (Some: why the pod is known or busy again) as the skip reason.
fn second_check_skip(found: Option<String>, kubelet: bool) -> Option<String> {
    found.map(|why| if kubelet { format!("{why} (second check; a kubelet runs)") } else { why })
}

/// What became of one pod.
enum PodResult {
    Removed(u64),
    Skipped(String),
}

/// Remove one pod's cgroups in every hierarchy, deepest first (it was found unknown just
/// before), stopping at the first that cannot go.
fn remove_pod(p: &OrphanTarget) -> Result<PodResult, String> {
    let mut removed = 0;
    for (local, host) in &p.tops {
        let r = remove_tree_deepest_first(local, WhenBusy::Stop);
        removed += r.removed;
        match r.leftover.into_iter().next() {
            None => {}
            // A task (or a child cgroup) arrived since the check: leave the rest.
            Some((d, e)) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {
                return Ok(PodResult::Skipped(format!("{} became busy while it was removed ({e}); {removed} cgroups removed before", d.display())));
            }
            Some((d, e)) => return Err(format!("rmdir {} ({host}): {e}", d.display())),
        }
    }
    Ok(PodResult::Removed(removed))
}

pub fn run(journal: FixJournal, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, GcPlan) = plan_from_journal(&journal)?;
    let host = HostPaths::new(&plan.host_root).with_kubelet_root(&plan.kubelet_root);
    let kubelet = running_kubelet(&host);
    let min_age = plan.min_age_secs as f64;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    // The first of the two checks, for every pod still to go, while a kubelet runs.
    let mut first: Vec<Option<Result<Option<String>, String>>> = vec![None; plan.pods.len()];
    let first_at = Instant::now();
    if let Some((pid, _)) = &kubelet {
        r.notes.push(kubelet_note(*pid));
        for (i, p) in plan.pods.iter().enumerate() {
            if !r.journal.is_done(i as u32 + 1) {
                first[i] = Some(unknown_now(p, &host));
            }
        }
    }
    let (mut removed, mut skipped) = (0u64, 0u64);
    for (i, p) in plan.pods.iter().enumerate() {
        let step = i as u32 + 1;
        if r.cancelled() {
            r.interrupted = true;
            break;
        }
        let first = first[i].take();
        let res = r.run(step, |_| {
            let skipped = |why: String| Ok((format!("skipped: {why}"), json!({ "skipped": why })));
            let checks = match recheck(cgroup_age(&p.tops), min_age, first)? {
                Recheck::Skip(why) => return skipped(why),
                Recheck::Confirm { after_gap: true } => {
                    // The second check comes at least CONFIRM_GAP after the first.
                    let wait = CONFIRM_GAP.saturating_sub(first_at.elapsed());
                    std::thread::sleep(wait);
                    format!("found unknown twice, {:.1} s apart (a kubelet runs)", first_at.elapsed().as_secs_f64())
                }
                Recheck::Confirm { after_gap: false } => "found unknown just before (no kubelet runs)".to_string(),
            };
            if let Some(why) = second_check_skip(unknown_now(p, &host)?, kubelet.is_some()) {
                return skipped(why);
            }
            match remove_pod(p)? {
                PodResult::Removed(n) => Ok((format!("{n} cgroups removed; {checks}"), json!({ "removed": n, "checks": checks }))),
                PodResult::Skipped(why) => Ok((format!("skipped: {why}"), json!({ "skipped": why }))),
            }
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

/// A pod UID as the kubelet writes them (a UUID, or a static pod's hash).
fn is_pod_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// `--resume`: the plan may remove only pod cgroups of this host's hierarchies, beneath
/// their mount points, each named as the kubelet names a pod's cgroup for that UID, under
/// a kubepods tree. The view is made again from it.
pub fn check_resume(plan: &GcPlan, h: &ResumeHost) -> Result<PlanView, Bad> {
    if plan.host_root != h.host.root() {
        return Err(bad("host_root", format!("{} is not this run's --host-root {}: resume with the fix's --host-root", plan.host_root.display(), h.host.root().display())));
    }
    if plan.kubelet_root != h.host.kubelet_root() {
        return Err(bad(
            "kubelet_root",
            format!("{} is not this run's kubelet root {}: resume with the fix's --kubelet-root-dir", plan.kubelet_root.display(), h.host.kubelet_root().display()),
        ));
    }
    let mut view = PlanView::new(ACTION, SUMMARY);
    for (i, p) in plan.pods.iter().enumerate() {
        let field = |f: &str| format!("pods[{i}].{f}");
        if !is_pod_uid(&p.uid) {
            return Err(bad(field("uid"), format!("{:?} is not a pod UID", p.uid)));
        }
        let qos = match p.qos.as_str() {
            "guaranteed" => QosClass::Guaranteed,
            "burstable" => QosClass::Burstable,
            "besteffort" => QosClass::Besteffort,
            other => return Err(bad(field("qos"), format!("{other:?} is not a QoS class"))),
        };
        relative(&field("rel"), &p.rel, false)?;
        let name = p.rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let names_pod = [CgroupDriver::Cgroupfs, CgroupDriver::Systemd].into_iter().any(|d| pod_uid(d, name, qos).as_deref() == Some(p.uid.as_str()));
        if !names_pod {
            return Err(bad(field("rel"), format!("{} does not end in the cgroup the kubelet makes for pod {} ({})", p.rel.display(), p.uid, p.qos)));
        }
        let under_kubepods = p.rel.parent().is_some_and(|parent| parent.components().any(|c| matches!(c.as_os_str().to_str(), Some("kubepods" | "kubepods.slice"))));
        if !under_kubepods {
            return Err(bad(field("rel"), format!("{} is not under a kubepods tree", p.rel.display())));
        }
        for (j, (local, host_name)) in p.tops.iter().enumerate() {
            let f = field(&format!("tops[{j}]"));
            let m = h.layout.all().filter(|m| m.root == Path::new("/")).find(|m| m.local.join(&p.rel) == *local).ok_or_else(|| {
                bad(&f, format!("{} is not {} under a cgroup hierarchy mounted on this host", local.display(), p.rel.display()))
            })?;
            let want = m.mount_point.join(&p.rel).display().to_string();
            if *host_name != want {
                return Err(bad(&f, format!("the host path {host_name} is not {want}, where {} is", local.display())));
            }
            no_links_below(&m.local, &p.rel).map_err(|e| bad(&f, e))?;
        }
        let (title, dirs) = pod_step(p);
        view.step(title, dirs, Vec::new());
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::testing::fix_host;
    use std::collections::BTreeSet;

    /// debian-4.19-v1-dying: two orphaned pods (no task, no kubelet directory) and one pod
    /// without a kubelet directory that still runs a task.
    fn orphans() -> (cgleak_fixtures::Fixture, FixHost, KubepodsSummary) {
        let f = cgleak_fixtures::debian_4_19_v1_dying();
        let (fh, census) = fix_host(f.root());
        let kp = census.kubepods.expect("the fixture has a kubepods tree");
        (f, fh, kp)
    }

    fn no_min_age() -> GcOptions {
        GcOptions { min_age: Duration::ZERO }
    }

    #[test]
    fn plan_removes_each_orphan_from_every_hierarchy_deepest_first() {
        let (f, fh, kp) = orphans();
        let (view, plan) = plan(&fh, Some(&kp), &no_min_age()).unwrap();
        assert!(view.refused.is_none() && view.nothing_to_do.is_none(), "{view:#?}");
        let planned: BTreeSet<String> = plan.pods.iter().map(|p| p.uid.clone()).collect();
        assert_eq!(planned, f.truth.orphan_uids.iter().cloned().collect(), "the orphans, and not the pod that runs a task");
        assert_eq!(view.steps.len(), plan.pods.len());
        for (p, step) in plan.pods.iter().zip(&view.steps) {
            assert!(step.title.contains(&p.uid), "{}", step.title);
            // Every hierarchy where the pod's cgroup is (runc makes it in all of them).
            let where_: Vec<&str> = p.tops.iter().map(|(_, h)| h.as_str()).collect();
            let expected: Vec<String> = fh.layout.all().filter(|m| m.root == Path::new("/")).filter(|m| m.local.join(&p.rel).is_dir()).map(|m| m.mount_point.join(&p.rel).display().to_string()).collect();
            assert_eq!(where_, expected.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(p.tops.len() > 1, "a pod's cgroup in more than the memory hierarchy: {where_:?}");
            // Deepest first: each directory comes before its parent in the step.
            for (i, d) in step.cgroups.iter().enumerate() {
                let parent = Path::new(d).parent().unwrap().display().to_string();
                if let Some(j) = step.cgroups.iter().position(|x| *x == parent) {
                    assert!(j > i, "{parent} before its child {d}: {:?}", step.cgroups);
                }
            }
            for (_, host) in &p.tops {
                assert!(step.cgroups.contains(host), "{host} not in {:?}", step.cgroups);
            }
        }
        assert!(view.expected_gain.contains("memcgs (and"), "{}", view.expected_gain);
        assert!(view.notes.iter().any(|n| n.contains("checked again just before its removal")), "{:?}", view.notes);
    }

    #[test]
    fn pods_younger_than_min_age_are_left_with_a_note() {
        let (_f, fh, kp) = orphans();
        // The fixture's cgroups were made a moment ago.
        let (view, plan) = plan(&fh, Some(&kp), &GcOptions::default()).unwrap();
        assert!(plan.pods.is_empty());
        assert_eq!(view.nothing_to_do.as_deref(), Some("no orphaned pod cgroup older than --min-age 10m"));
        assert!(view.notes.iter().any(|n| n.starts_with("2 orphaned pods left, their cgroup younger than --min-age 10m")), "{:?}", view.notes);
        assert_eq!(plan.min_age_secs, 600);
    }

    #[test]
    fn no_kubepods_tree_or_no_pods_directory_is_nothing_to_do() {
        let (f, fh, mut kp) = orphans();
        let (view, _) = plan(&fh, None, &no_min_age()).unwrap();
        assert_eq!(view.nothing_to_do.as_deref(), Some("no kubepods tree in the memory hierarchy"));
        // Without the kubelet's pods directory an orphan cannot be told from a pod.
        std::fs::remove_dir_all(f.path("/var/lib/kubelet/pods")).unwrap();
        let (fh, census) = fix_host(f.root());
        kp = census.kubepods.unwrap_or(kp);
        let (view, plan) = plan(&fh, Some(&kp), &no_min_age()).unwrap();
        assert!(plan.pods.is_empty());
        assert!(view.nothing_to_do.as_deref().unwrap().contains("pods directory"), "{view:#?}");
    }

    #[test]
    fn a_kubelet_running_asks_for_two_checks() {
        let (f, _, _) = orphans();
        f.host().process(4242, "kubelet", &["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"]);
        let (fh, census) = fix_host(f.root());
        let (view, _) = plan(&fh, census.kubepods.as_ref(), &no_min_age()).unwrap();
        assert!(view.notes.iter().any(|n| n.starts_with("a kubelet runs (pid 4242)") && n.contains("twice")), "{:?}", view.notes);
    }

    #[test]
    fn the_checks_before_a_step_decide_on_age_and_the_first_check() {
        let min = 600.0;
        // Younger than --min-age now: made again since the plan.
        let Recheck::Skip(why) = recheck(Some(30.0), min, None).unwrap() else { panic!() };
        assert_eq!(why, "its cgroup is 30s old now, younger than --min-age 10m (made again since the plan?)");
        // The age comes first, whatever the first check said.
        assert!(matches!(recheck(Some(30.0), min, Some(Err("unreadable".into()))), Ok(Recheck::Skip(_))));
        // No directory left to age, or old enough: on to the checks.
        assert_eq!(recheck(None, min, None), Ok(Recheck::Confirm { after_gap: false }));
        assert_eq!(recheck(Some(601.0), min, None), Ok(Recheck::Confirm { after_gap: false }));
        // While a kubelet runs: the first check's answer.
        assert_eq!(recheck(Some(601.0), min, Some(Ok(None))), Ok(Recheck::Confirm { after_gap: true }));
        assert_eq!(
            recheck(Some(601.0), min, Some(Ok(Some("the kubelet has a directory for it again".into())))),
            Ok(Recheck::Skip("the kubelet has a directory for it again (first check; a kubelet runs)".into()))
        );
        assert_eq!(recheck(Some(601.0), min, Some(Err("pods: EIO".into()))), Err("pods: EIO".into()));
        // The second check.
        assert_eq!(second_check_skip(None, true), None);
        assert_eq!(second_check_skip(Some("a task is in /x now".into()), true).as_deref(), Some("a task is in /x now (second check; a kubelet runs)"));
        assert_eq!(second_check_skip(Some("a task is in /x now".into()), false).as_deref(), Some("a task is in /x now"));
    }

    #[test]
    fn a_pod_known_again_or_with_a_task_is_not_unknown() {
        let (f, fh, kp) = orphans();
        let (_, plan) = plan(&fh, Some(&kp), &no_min_age()).unwrap();
        let p = &plan.pods[0];
        let host = HostPaths::new(f.root());
        assert_eq!(unknown_now(p, &host), Ok(None));
        // The kubelet made its directory again.
        f.host().kubelet_pod_dir(&p.uid);
        assert_eq!(unknown_now(p, &host), Ok(Some("the kubelet has a directory for it again".into())));
        std::fs::remove_dir_all(f.path(&format!("/var/lib/kubelet/pods/{}", p.uid))).unwrap();
        // A task arrived in one of its containers (in the last hierarchy).
        let (local, host_top) = p.tops.last().unwrap();
        let container = subtree_dirs(local).into_iter().nth(1).expect("a container cgroup under the pod");
        std::fs::write(container.join("cgroup.procs"), "4242\n").unwrap();
        assert_eq!(unknown_now(p, &host), Ok(Some(format!("a task is in {host_top} now"))));
        // The pods directory gone: no orphan can be told from a pod.
        std::fs::remove_dir_all(f.path("/var/lib/kubelet/pods")).unwrap();
        assert!(unknown_now(p, &host).unwrap().unwrap().contains("pods directory"));
    }

    #[test]
    fn removal_stops_at_the_first_cgroup_that_stays_and_names_it() {
        let (_f, fh, kp) = orphans();
        let (_, plan) = plan(&fh, Some(&kp), &no_min_age()).unwrap();
        let p = &plan.pods[0];
        // A fixture's cgroups hold their files (tmpfs): the deepest rmdir fails, and nothing
        // after it is tried.
        let before: Vec<usize> = p.tops.iter().map(|(l, _)| subtree_dirs(l).len()).collect();
        let e = remove_pod(p).err().expect("a directory with files in it cannot be removed");
        let (local, host) = &p.tops[0];
        assert!(e.starts_with(&format!("rmdir {}/", local.display())) && e.contains(&format!(" ({host}): ")), "{e}");
        let after: Vec<usize> = p.tops.iter().map(|(l, _)| subtree_dirs(l).len()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn pod_uids_are_hex_and_dashes() {
        assert!(is_pod_uid("0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c"));
        assert!(is_pod_uid("5d6f1c3b2a9e4f8d8c7b6a5f4e3d2c1b"));
        for bad_uid in ["", "../x", "a b", "pod1", &"a".repeat(65)] {
            assert!(!is_pod_uid(bad_uid), "{bad_uid:?}");
        }
    }
}

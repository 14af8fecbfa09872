//! migrate: the reboot-free fix for pod cgroups with kmem accounting switched on.
//!
//! On 3.10 and 4.0 .. 4.5 a memcg whose kmem accounting was switched on (kubelet
//! 1.8 .. 1.21 and runc before rc94 do it; children inherit it) keeps its ID after it is
//! deleted (docs/kernel-facts.md sections 1 and 3). Nothing switches it off again; a fresh cgroup
//! made under a parent without kmem has none. So, for the subtree at `--cgroup` of the
//! v1 memory hierarchy, six journaled steps:
//!
//! 1. mirror: create a scratch sibling `cgleak-migrate.<name>` holding the same tree,
//!    with every memory setting copied (never a kmem file);
//! 2. move-out: move every task (thread by thread, until each source is empty) into
//!    its mirror;
//! 3. remove-old: remove the old cgroups, deepest first;
//! 4. recreate: create them again at the same paths, with the same settings;
//! 5. move-back: move the tasks back;
//! 6. remove-mirror: remove the scratch tree.
//!
//! Each step can be run again from any state it left, so `--resume` redoes the step a
//! crash interrupted. Until step 3 starts nothing is lost: a failure or Ctrl-C rolls
//! back (tasks moved back, mirror removed). From step 3 on the only way is forward. If
//! the kernel has no memcg ID left for the recreation (mkdir ENOSPC, ENOMEM or EBUSY),
//! step 4 renames the mirror into the old path instead (v1 allows rename(2) within a
//! parent, docs/kernel-facts.md section 5): no ID needed, the tasks are already in it.
//!
//! Before each step the live tree is read again: cgroups created under the subtree
//! since planning are mirrored (and their tasks moved) too; cgroups removed before any
//! task moved are dropped from the plan. Only the memory hierarchy is touched, and only
//! when no other controller is mounted with it.
//!
//! Beside a kubelet (`--allow-kubelet`): between remove-old and recreate a cgroup's path is
//! missing, and a kubelet that syncs a pod then (every `--sync-frequency`, 1 min by default,
//! and on its containers' events) finds its cgroup gone and kills the pod (syncPod:
//! "pod cgroup does not exist"). A fresh memcg needs fresh ancestors up to the subtree's
//! top (memcg_propagate_kmem gives a child its parent's kmem accounting on 3.10-4.5), so no
//! path can be made again before the top is; the two steps run back to back, levels are
//! removed deepest first and made again top first, so a pod's cgroup is missing only while
//! the levels down to it are removed and made again. The longest time a path was missing is
//! measured (`max_missing_ms`); and where creating the mirror took so long that the paths
//! would be missing for more than [`MISSING_BUDGET`], the migration is rolled back before
//! any old cgroup is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cgleak_model::census::is_kmem_active;
use cgleak_model::verdict::remedies::migrate_precondition;
use cgleak_model::era::MoveCharge;

use super::journal::{FixJournal, Outcome};
use super::resume::{bad, no_links_below, relative, same, Bad, ResumeHost};
use super::settings::MemorySettings;
use super::tasks::{move_all, read_tasks};
use super::{plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepReport, StepStatus};
use crate::cgroup_tree::subtree_dirs;

pub const ACTION: &str = "migrate";
/// The scratch sibling's name: `cgleak-migrate.<name>` (not `pod...`, not `kubepods`,
/// so the census never takes it for a pod or a kubepods root).
pub const MIRROR_PREFIX: &str = "cgleak-migrate.";

pub const STEP_MIRROR: u32 = 1;
pub const STEP_MOVE_OUT: u32 = 2;
pub const STEP_REMOVE_OLD: u32 = 3;
pub const STEP_RECREATE: u32 = 4;
pub const STEP_MOVE_BACK: u32 = 5;
pub const STEP_REMOVE_MIRROR: u32 = 6;
pub const STEPS: u32 = 6;

/// rmdir of an old cgroup that stays busy (a task exiting, one that just arrived) is
/// tried this many times, [`RMDIR_PAUSE`] apart, moving what arrived each time.
const RMDIR_TRIES: u32 = 250;
const RMDIR_PAUSE: Duration = Duration::from_millis(20);
/// With a kubelet running: the longest the paths may be expected to be missing (a quarter
/// of the kubelet's default sync period, 1 min), or the migration is rolled back before
/// remove-old.
pub const MISSING_BUDGET: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The subtree, relative to the memory hierarchy's root (`kubepods`).
    pub cgroup: PathBuf,
    /// Run although a kubelet runs (it may create cgroups during the move).
    pub allow_kubelet: bool,
}

/// One cgroup of the subtree and what it had when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupState {
    /// Relative to the subtree's top ("" is the top itself).
    pub rel: PathBuf,
    pub settings: MemorySettings,
    /// Threads in it when read.
    pub tasks: u32,
}

/// What the journal keeps of a migration: enough to finish or undo it after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratePlan {
    /// The memory hierarchy's root as this process reaches it, and as the host names it.
    pub memory_root: PathBuf,
    pub memory_root_host: PathBuf,
    /// The subtree's parent, relative to the root ("" for the root).
    pub parent: PathBuf,
    pub top: String,
    pub mirror: String,
    pub move_charge: MoveCharge,
    /// Pre-order (parents first).
    pub cgroups: Vec<CgroupState>,
    /// A kubelet ran when it was planned (`--allow-kubelet`): the paths' missing window is bounded.
    #[serde(default)]
    pub beside_kubelet: bool,
}

impl MigratePlan {
    fn top_dir(&self) -> PathBuf {
        self.memory_root.join(&self.parent).join(&self.top)
    }
    fn mirror_dir(&self) -> PathBuf {
        self.memory_root.join(&self.parent).join(&self.mirror)
    }
    fn host_name(&self, local: &Path) -> String {
        match local.strip_prefix(&self.memory_root) {
            Ok(rest) => self.memory_root_host.join(rest).display().to_string(),
            Err(_) => local.display().to_string(),
        }
    }
}

/// `rel` joined under `base`, "" being `base` itself.
fn at(base: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn depth(rel: &Path) -> usize {
    rel.components().count()
}

/// Sort parents before children (pre-order for creation; reversed: deepest first).
fn sort_preorder(v: &mut [CgroupState]) {
    v.sort_by(|a, b| (depth(&a.rel), &a.rel).cmp(&(depth(&b.rel), &b.rel)));
}

/// The cgroups of the subtree at `top` now, relative to it, pre-order.
fn scan(top: &Path) -> Vec<PathBuf> {
    if !cgleak_readers::cgroupfs::is_dir(top) {
        return Vec::new();
    }
    let mut v: Vec<PathBuf> = subtree_dirs(top).into_iter().filter_map(|d| d.strip_prefix(top).ok().map(Path::to_path_buf)).collect();
    v.sort_by(|a, b| (depth(a), a).cmp(&(depth(b), b)));
    v
}

fn read_state(top: &Path, rel: &Path) -> Result<Option<CgroupState>, FixError> {
    let dir = at(top, rel);
    match MemorySettings::read(&dir) {
        Ok(settings) => {
            let tasks = read_tasks(&dir)?.len() as u32;
            Ok(Some(CgroupState { rel: rel.to_path_buf(), settings, tasks }))
        }
        Err(e) if e.is_gone() && cgleak_readers::cgroupfs::metadata(&dir).is_err() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The errnos of a memcg mkdir when the ID space is full, in every era (facts §1).
fn is_id_exhaustion(e: &io::Error) -> bool {
    e.raw_os_error().and_then(cgleak_model::era::Errno::from_raw).is_some()
}

/// The plan for migrating `opts.cgroup`, and what it would change. Errors are bad
/// arguments; reasons not to apply it (a kubelet running, too few IDs) go in `refused`.
pub fn plan(fh: &FixHost, opts: &MigrateOptions) -> Result<(PlanView, MigratePlan), FixError> {
    let mem = &fh.memory;
    let rel_top = opts.cgroup.clone();
    let name = rel_top.file_name().and_then(|n| n.to_str()).map(str::to_string).ok_or_else(|| FixError::BadArgument {
        flag: "--cgroup",
        value: "/".into(),
        why: "the hierarchy's root: give the subtree to migrate, e.g. kubepods".into(),
    })?;
    if mem.version != 1 {
        return Err(FixError::NotOnThisHost(format!(
            "migrate moves tasks between cgroup v1 memory cgroups; memory is on cgroup v2 here ({}), where kmem is \
             always accounted and there is no per-cgroup switch to leave behind",
            mem.mount.mount_point.display()
        )));
    }
    let others: Vec<&String> = mem.mount.controllers.iter().filter(|c| c.as_str() != "memory").collect();
    if !others.is_empty() {
        return Err(FixError::NotOnThisHost(format!(
            "the memory controller is mounted together with {} at {}: recreating cgroups there would reset those \
             controllers' settings too; migrate only works on a memory hierarchy of its own",
            others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
            mem.mount.mount_point.display()
        )));
    }
    let top_dir = mem.mount.local.join(&rel_top);
    let host_top = mem.mount.mount_point.join(&rel_top);
    if !cgleak_readers::cgroupfs::is_dir(&top_dir) {
        return Err(FixError::BadArgument { flag: "--cgroup", value: rel_top.display().to_string(), why: format!("{} is not a cgroup", host_top.display()) });
    }
    let parent = rel_top.parent().map(Path::to_path_buf).unwrap_or_default();
    let mirror = format!("{MIRROR_PREFIX}{name}");
    let mut cgroups = Vec::new();
    for rel in scan(&top_dir) {
        if let Some(s) = read_state(&top_dir, &rel)? {
            cgroups.push(s);
        }
    }
    sort_preorder(&mut cgroups);
    let plan = MigratePlan {
        memory_root: mem.mount.local.clone(),
        memory_root_host: mem.mount.mount_point.clone(),
        parent: parent.clone(),
        top: name.clone(),
        mirror: mirror.clone(),
        move_charge: fh.era.move_charge,
        cgroups,
        beside_kubelet: fh.kubelet.is_some() && opts.allow_kubelet,
    };
    let view = view_of(fh, opts, &plan);
    Ok((view, plan))
}

/// The six steps of `plan`, with every cgroup and setting they touch.
fn steps_view(plan: &MigratePlan) -> PlanView {
    let n = plan.cgroups.len() as u64;
    let tasks: u64 = plan.cgroups.iter().map(|c| c.tasks as u64).sum();
    let top = plan.top_dir();
    let mirror = plan.mirror_dir();
    let host_top = plan.host_name(&top);
    let host_mirror = plan.host_name(&mirror);
    let mut v = PlanView::new(
        ACTION,
        format!("move the {tasks} tasks of the {n} cgroups under {host_top} into fresh memory cgroups at the same paths, without kmem accounting"),
    );
    let defaults = MemorySettings::read(&plan.memory_root).unwrap_or_default();
    let origs: Vec<String> = plan.cgroups.iter().map(|c| plan.host_name(&at(&top, &c.rel))).collect();
    let mirrors: Vec<String> = plan.cgroups.iter().map(|c| plan.host_name(&at(&mirror, &c.rel))).collect();
    let writes_under = |base: &Path| -> Vec<FileWrite> {
        plan.cgroups
            .iter()
            .flat_map(|c| {
                let dir = plan.host_name(&at(base, &c.rel));
                c.settings.describe(&defaults).into_iter().map(move |(f, value)| FileWrite { file: format!("{dir}/{f}"), value })
            })
            .collect()
    };
    v.step(format!("mirror: create {host_mirror} with the same {n} cgroups and memory settings"), mirrors.clone(), writes_under(&mirror));
    v.step(format!("move-out: move the {tasks} tasks (every thread, until each cgroup is empty) into the mirror"), origs.clone(), Vec::new());
    let mut deepest = origs.clone();
    deepest.reverse();
    v.step(format!("remove-old: remove the {n} old cgroups, deepest first"), deepest, Vec::new());
    v.step(format!("recreate: create the {n} cgroups again at their paths, with the same settings"), origs.clone(), writes_under(&top));
    v.step("move-back: move the tasks back to their cgroups' paths".to_string(), origs, Vec::new());
    let mut mirror_deepest = mirrors;
    mirror_deepest.reverse();
    v.step(format!("remove-mirror: remove {host_mirror}"), mirror_deepest, Vec::new());
    v
}

fn view_of(fh: &FixHost, opts: &MigrateOptions, plan: &MigratePlan) -> PlanView {
    let n = plan.cgroups.len() as u64;
    let top = plan.top_dir();
    let mirror = plan.mirror_dir();
    let host_top = plan.host_name(&top);
    let host_mirror = plan.host_name(&mirror);
    let mut v = steps_view(plan);
    let era = &fh.era;
    v.expected_gain = if era.kmem_opt_in {
        format!(
            "the {n} cgroups are new memcgs without kmem accounting: deleting them (pods ending) no longer leaks their \
             IDs; the memcgs they replace were kmem-accounted and stay dying (on {}, with their IDs) until a reboot",
            era.id.as_str()
        )
    } else {
        format!(
            "the {n} cgroups are new memcgs; on {} kmem accounting is on for every memcg (4.6+, not opt-in) and dying \
             memcgs release their IDs, so this recreates them without changing how they are accounted",
            era.id.as_str()
        )
    };
    v.notes.push(format!(
        "tasks stay running throughout; they are in {host_mirror} from move-out until move-back, where their new memory \
         use is charged and limited the same way"
    ));
    v.notes.push("charges already made stay with the old memcgs, which become dying when removed; nothing writes a kmem limit".into());
    v.notes.push("only the memory hierarchy changes: the other controllers' cgroups of these pods stay as they are".into());
    if host_top.contains(".slice") {
        v.notes.push(
            "systemd driver: systemd owns these slices and scopes by path and finds them again at the same paths; it \
             writes their unit limits again on the next daemon-reload or unit change, the same values as copied here"
                .into(),
        );
    }
    if era.kmem_opt_in {
        // nokmem only where the running kernel, or the next one to boot, honours it (upstream 4.5+, el7 3.10.0-1062+).
        let nokmem = match fh.judgement.as_ref().map(|j| &j.situation.nokmem) {
            Some(n) if n.available() => " (or add cgroup.memory=nokmem)".to_string(),
            Some(n) => format!(" (cgroup.memory=nokmem is not an option: {} lacks it, it came in {})", era.release.raw, n.first_with_it.unwrap_or("4.5")),
            None if era.nokmem_supported => " (or add cgroup.memory=nokmem)".to_string(),
            None => String::new(),
        };
        v.notes.push(format!(
            "a kubelet 1.8-1.21 or runc before 1.0.0-rc94 switches kmem on again in the pod cgroups it creates next: \
             upgrade them{nokmem} so new pods do not leak either"
        ));
    }
    if plan.move_charge == MoveCharge::Einval && plan.cgroups.iter().any(|c| c.settings.move_charge_at_immigrate.is_some_and(|m| m != 0)) {
        v.notes.push(format!("memory.move_charge_at_immigrate is not written: {} refuses it (EINVAL, 6.13+)", era.id.as_str()));
    }

    // Reasons not to apply it.
    let mut refusals: Vec<String> = Vec::new();
    if let Some((pid, argv)) = &fh.kubelet {
        if !opts.allow_kubelet {
            refusals.push(format!(
                "a kubelet is running (pid {pid}: {}): it may create or remove pod cgroups while they move, and a pod it \
                 starts then can land in a cgroup about to be removed; stop it first, or pass --allow-kubelet",
                argv.first().map(String::as_str).unwrap_or("kubelet")
            ));
        } else {
            v.notes.push(format!("a kubelet runs (pid {pid}): pods it creates meanwhile are mirrored and moved too"));
            v.notes.push(format!(
                "a kubelet runs: each cgroup's path is missing from remove-old until recreate makes it again (levels removed \
                 deepest first and made again top first, back to back; the longest is reported as max_missing_ms); a kubelet \
                 that syncs a pod then (every --sync-frequency, 1 min by default, and on container events) kills it for its \
                 missing cgroup, and the kubelet starts it again. If making the mirror took so long that the paths would be \
                 missing for more than {} s, the migration is rolled back before any old cgroup is removed",
                MISSING_BUDGET.as_secs()
            ));
        }
    }
    if cgleak_readers::cgroupfs::metadata(&mirror).is_ok() {
        refusals.push(format!(
            "{host_mirror} exists already (left by an earlier migrate?): finish that one with `cgleak fix --resume`, or remove it"
        ));
    }
    if era.kmem_opt_in {
        let parent_dir = plan.memory_root.join(&plan.parent);
        if !plan.parent.as_os_str().is_empty() && is_kmem_active(&parent_dir) == Some(true) {
            refusals.push(format!(
                "{} has kmem accounting on, and cgroups made under it inherit it (memcg_propagate_kmem): migrate the \
                 highest kmem-active cgroup instead, e.g. its parent",
                plan.host_name(&parent_dir)
            ));
        }
    }
    // The judge's rule (cgleak_model::verdict::remedies::migrate_precondition): no mirror on an
    // exhausted node, nor where the headroom is unknown while the logs show failed creations.
    match fh.judgement.as_ref().map(|j| migrate_precondition(&j.situation, n)) {
        Some(Err(why)) => refusals.push(why),
        Some(Ok(Some(note))) => v.notes.push(note),
        _ => {}
    }
    if let Some(h) = fh.headroom {
        if h < n {
            if fh.judgement.is_none() {
                refusals.push(format!("the mirror needs {n} free memcg IDs and the headroom is {h}: free some first (cgleak fix gc, reclaim)"));
            }
        } else if h < 2 * n {
            v.notes.push(format!(
                "headroom {h} is less than the {} IDs of a mirror and a recreation: if the recreation runs out, the mirror is \
                 renamed into place instead",
                2 * n
            ));
        }
    }
    if n == 0 {
        v.steps.clear();
        v.nothing_to_do = Some(format!("{host_top} is gone"));
    }
    if !refusals.is_empty() {
        v.refused = Some(refusals.join("; "));
    }
    v
}

/// Timings and counts of a migration (this run's part of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateStats {
    pub cgroups: u64,
    pub threads_moved_out: u64,
    pub threads_moved_back: u64,
    /// Cgroups found after planning (mirrored and moved too).
    pub added_since_plan: u64,
    pub dropped_since_plan: u64,
    /// The mirror was renamed into place (no memcg ID was left for the recreation).
    pub renamed_mirror: bool,
    /// The longest time a cgroup's tasks spent away from its path: from the end of its
    /// move-out to the end of its move-back (or the rename), when this run did both.
    pub max_away_ms: Option<f64>,
    /// The longest time a cgroup's path was missing: from its rmdir (remove-old) to its
    /// mkdir (recreate) or the mirror's rename into place, when this run did both; what a
    /// kubelet syncing a pod then would find.
    pub max_missing_ms: Option<f64>,
    /// The cgroup (host path) whose path was missing longest.
    pub max_missing_cgroup: Option<String>,
    pub total_ms: f64,
}

/// A migration being applied or resumed.
struct Migration<'a> {
    plan: MigratePlan,
    cgroups: Vec<CgroupState>,
    renamed: bool,
    journal: FixJournal,
    stats: MigrateStats,
    away_since: BTreeMap<PathBuf, Instant>,
    back_at: BTreeMap<PathBuf, Instant>,
    /// When remove-old removed each path, and when it was there again.
    removed_at: BTreeMap<PathBuf, Instant>,
    remade_at: BTreeMap<PathBuf, Instant>,
    /// How long this run took to make the mirror (the cost of making these cgroups).
    mirror_time: Option<Duration>,
    progress: &'a mut dyn FnMut(FixProgress),
}

impl Migration<'_> {
    fn top(&self) -> PathBuf {
        self.plan.top_dir()
    }
    fn mirror(&self) -> PathBuf {
        self.plan.mirror_dir()
    }
    fn orig(&self, rel: &Path) -> PathBuf {
        at(&self.top(), rel)
    }
    fn mirr(&self, rel: &Path) -> PathBuf {
        at(&self.mirror(), rel)
    }
    fn rels(&self) -> Vec<PathBuf> {
        self.cgroups.iter().map(|c| c.rel.clone()).collect()
    }

    fn item(&mut self, done: usize) {
        (self.progress)(FixProgress::Item { done: done as u64, total: self.cgroups.len() as u64 });
    }

    /// Cgroups in the old subtree that the plan does not know yet: journaled, then added.
    fn adopt_new(&mut self) -> Result<Vec<PathBuf>, String> {
        let known: BTreeSet<PathBuf> = self.rels().into_iter().collect();
        let top = self.top();
        let mut added = Vec::new();
        for rel in scan(&top) {
            if known.contains(&rel) {
                continue;
            }
            if let Some(s) = read_state(&top, &rel).map_err(|e| e.to_string())? {
                added.push(s);
            }
        }
        if added.is_empty() {
            return Ok(Vec::new());
        }
        self.journal.amend(self.journal.state.in_flight.unwrap_or(0), json!({ "add": added })).map_err(|e| e.to_string())?;
        self.stats.added_since_plan += added.len() as u64;
        let rels = added.iter().map(|c| c.rel.clone()).collect();
        self.cgroups.extend(added);
        sort_preorder(&mut self.cgroups);
        Ok(rels)
    }

    /// Cgroups that are gone from the old subtree (a pod deleted since planning) leave the
    /// plan, and their mirrors go; not one whose mirror holds tasks already (moved out
    /// before the old one was removed by someone else): that one is recreated, so its
    /// tasks get their path back.
    fn drop_vanished(&mut self) -> Result<(), String> {
        let present: BTreeSet<PathBuf> = scan(&self.top()).into_iter().collect();
        let mut gone = Vec::new();
        for r in self.rels() {
            if !present.contains(&r) && read_tasks(&self.mirr(&r)).map_err(|e| e.to_string())?.is_empty() {
                gone.push(r);
            }
        }
        // A parent stays while a child of it stays.
        let kept: Vec<PathBuf> = self.rels().into_iter().filter(|r| !gone.contains(r)).collect();
        gone.retain(|g| !kept.iter().any(|k| k != g && k.starts_with(g)));
        if gone.is_empty() {
            return Ok(());
        }
        self.journal.amend(self.journal.state.in_flight.unwrap_or(0), json!({ "drop": gone })).map_err(|e| e.to_string())?;
        self.stats.dropped_since_plan += gone.len() as u64;
        let mut deepest = gone.clone();
        deepest.sort_by_key(|r| std::cmp::Reverse(depth(r)));
        for rel in &deepest {
            remove_dir(&self.mirr(rel))?;
        }
        self.cgroups.retain(|c| !gone.contains(&c.rel));
        Ok(())
    }

    /// Create the mirrors of `rels` (pre-order) with their settings.
    fn make_mirrors(&mut self, rels: &[PathBuf]) -> Result<(), String> {
        for (i, rel) in rels.iter().enumerate() {
            let dir = self.mirr(rel);
            make_dir(&dir)?;
            let settings = self.cgroups.iter().find(|c| &c.rel == rel).map(|c| c.settings.clone()).unwrap_or_default();
            settings.apply(&dir, self.plan.move_charge).map_err(|e| e.to_string())?;
            self.item(i + 1);
        }
        Ok(())
    }

    fn move_out(&mut self, rel: &Path) -> Result<u32, String> {
        let moved = move_all(&self.orig(rel), &self.mirr(rel)).map_err(|e| e.to_string())?;
        if moved.threads > 0 {
            self.stats.threads_moved_out += moved.threads as u64;
            self.away_since.insert(rel.to_path_buf(), Instant::now());
        }
        Ok(moved.threads)
    }

    fn step_mirror(&mut self) -> Result<String, String> {
        let started = Instant::now();
        self.drop_vanished()?;
        self.adopt_new()?;
        make_dir(&self.mirror())?;
        let rels = self.rels();
        self.make_mirrors(&rels)?;
        self.mirror_time = Some(started.elapsed());
        Ok(format!("{} cgroups mirrored under {}", rels.len(), self.plan.host_name(&self.mirror())))
    }

    /// Beside a kubelet, before remove-old: why not to go on, when the paths would be
    /// missing longer than [`MISSING_BUDGET`] (removing and making again each cgroup, at
    /// what making the mirror cost).
    fn missing_window_too_long(&self) -> Option<String> {
        missing_window_refusal(self.plan.beside_kubelet, self.mirror_time, self.cgroups.len())
    }

    fn step_move_out(&mut self) -> Result<String, String> {
        self.drop_vanished()?;
        let added = self.adopt_new()?;
        self.make_mirrors(&added)?;
        let mut rels = self.rels();
        rels.reverse();
        let mut threads = 0;
        for (i, rel) in rels.iter().enumerate() {
            threads += self.move_out(rel)?;
            self.item(i + 1);
        }
        Ok(format!("{threads} threads moved into the mirror"))
    }

    fn step_remove_old(&mut self) -> Result<String, String> {
        let mut removed = 0;
        let mut i = 0;
        loop {
            // Cgroups that appeared since: mirrored, emptied, removed like the rest.
            let added = self.adopt_new()?;
            self.make_mirrors(&added)?;
            let mut rels = self.rels();
            rels.reverse();
            let mut blocked_by_child = false;
            for rel in &rels {
                let dir = self.orig(rel);
                let mut tries = 0;
                loop {
                    match cgleak_readers::cgroupfs::remove_dir(&dir) {
                        Ok(()) => {
                            removed += 1;
                            self.removed_at.insert(rel.clone(), Instant::now());
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                        Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) || e.raw_os_error() == Some(Errno::NOTEMPTY.raw_os_error()) => {
                            // A child the plan does not know: adopt it in the next round.
                            if scan(&dir).len() > 1 && !self.knows_all_under(rel, &dir) {
                                blocked_by_child = true;
                                break;
                            }
                            self.move_out(rel)?;
                            tries += 1;
                            if tries >= RMDIR_TRIES {
                                return Err(format!(
                                    "rmdir {}: {e} after {tries} tries (a task that never leaves: an exited task whose parent does not reap it?)",
                                    self.plan.host_name(&dir)
                                ));
                            }
                            std::thread::sleep(RMDIR_PAUSE);
                        }
                        Err(e) => return Err(format!("rmdir {}: {e}", self.plan.host_name(&dir))),
                    }
                }
                if blocked_by_child {
                    break;
                }
                i += 1;
                self.item(i.min(self.cgroups.len()));
            }
            if !blocked_by_child {
                return Ok(format!("{removed} old cgroups removed"));
            }
        }
    }

    fn knows_all_under(&self, rel: &Path, dir: &Path) -> bool {
        let known: BTreeSet<PathBuf> = self.rels().into_iter().collect();
        scan(dir).iter().all(|sub| known.contains(&if rel.as_os_str().is_empty() { sub.clone() } else { rel.join(sub) }))
    }

    fn step_recreate(&mut self) -> Result<String, String> {
        if self.renamed {
            return self.finish_rename();
        }
        let rels = self.rels();
        for (i, rel) in rels.iter().enumerate() {
            let dir = self.orig(rel);
            match cgleak_readers::cgroupfs::create_dir(&dir) {
                Ok(()) => {
                    self.remade_at.insert(rel.clone(), Instant::now());
                }
                // Made by someone else meanwhile (a kubelet): there since some time before now.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.remade_at.entry(rel.clone()).or_insert_with(Instant::now);
                }
                Err(e) if is_id_exhaustion(&e) => {
                    return self.rename_instead(&format!("mkdir {}: {e}", self.plan.host_name(&dir)));
                }
                Err(e) => return Err(format!("mkdir {}: {e}", self.plan.host_name(&dir))),
            }
            let settings = self.cgroups[i].settings.clone();
            settings.apply(&dir, self.plan.move_charge).map_err(|e| e.to_string())?;
            self.item(i + 1);
        }
        Ok(format!("{} cgroups recreated with their settings", rels.len()))
    }

    /// No memcg ID left: take back what was recreated (empty: no task moved back yet) and
    /// rename the mirror to the old name.
    fn rename_instead(&mut self, why: &str) -> Result<String, String> {
        self.journal.amend(STEP_RECREATE, json!({ "rename_mirror": why })).map_err(|e| e.to_string())?;
        self.renamed = true;
        self.finish_rename().map(|s| format!("{why}: {s}"))
    }

    fn finish_rename(&mut self) -> Result<String, String> {
        let (top, mirror) = (self.top(), self.mirror());
        if cgleak_readers::cgroupfs::is_dir(&mirror) {
            if cgleak_readers::cgroupfs::metadata(&top).is_ok() {
                let mut rels = self.rels();
                rels.reverse();
                for rel in rels {
                    remove_dir(&self.orig(&rel))?;
                }
            }
            cgleak_readers::cgroupfs::rename(&mirror, &top).map_err(|e| format!("rename {} to {}: {e}", self.plan.host_name(&mirror), self.plan.host_name(&top)))?;
        }
        let now = Instant::now();
        for rel in self.away_since.keys() {
            self.back_at.insert(rel.clone(), now);
        }
        for rel in self.removed_at.keys() {
            self.remade_at.entry(rel.clone()).or_insert(now);
        }
        self.stats.renamed_mirror = true;
        Ok(format!("no memcg ID left to recreate them: {} renamed to {}", self.plan.host_name(&mirror), self.plan.host_name(&top)))
    }

    fn step_move_back(&mut self) -> Result<String, String> {
        if self.renamed {
            return Ok("nothing to move: the mirror was renamed into place".into());
        }
        let rels = self.rels();
        let mut threads = 0;
        for (i, rel) in rels.iter().enumerate() {
            let moved = move_all(&self.mirr(rel), &self.orig(rel)).map_err(|e| e.to_string())?;
            if moved.threads > 0 {
                threads += moved.threads;
                self.back_at.insert(rel.clone(), Instant::now());
            }
            self.item(i + 1);
        }
        self.stats.threads_moved_back += threads as u64;
        Ok(format!("{threads} threads moved back"))
    }

    fn step_remove_mirror(&mut self) -> Result<String, String> {
        if self.renamed {
            return Ok("nothing to remove: the mirror was renamed into place".into());
        }
        let mut rels = self.rels();
        rels.reverse();
        for (i, rel) in rels.iter().enumerate() {
            let dir = self.mirr(rel);
            // A task that was on its way in while it moved back.
            if cgleak_readers::cgroupfs::is_dir(&dir) {
                move_all(&dir, &self.orig(rel)).map_err(|e| e.to_string())?;
            }
            remove_dir(&dir)?;
            self.item(i + 1);
        }
        remove_dir(&self.mirror())?;
        Ok(format!("{} removed", self.plan.host_name(&self.mirror())))
    }

    fn run_step(&mut self, step: u32) -> Result<String, String> {
        match step {
            STEP_MIRROR => self.step_mirror(),
            STEP_MOVE_OUT => self.step_move_out(),
            STEP_REMOVE_OLD => self.step_remove_old(),
            STEP_RECREATE => self.step_recreate(),
            STEP_MOVE_BACK => self.step_move_back(),
            STEP_REMOVE_MIRROR => self.step_remove_mirror(),
            _ => unreachable!("migrate has {STEPS} steps"),
        }
    }

    /// Undo steps 1 and 2: every task back in its (still existing) old cgroup, mirror gone.
    fn roll_back(&mut self) -> Result<String, String> {
        let mirror = self.mirror();
        let mut threads = 0;
        if cgleak_readers::cgroupfs::is_dir(&mirror) {
            // Whatever is in the mirror now, cgroups the plan never knew included.
            for rel in scan(&mirror) {
                let from = at(&mirror, &rel);
                let to = self.orig(&rel);
                if cgleak_readers::cgroupfs::is_dir(&to) {
                    threads += move_all(&from, &to).map_err(|e| e.to_string())?.threads;
                }
            }
            let mut all = scan(&mirror);
            all.reverse();
            for rel in all {
                remove_dir(&at(&mirror, &rel))?;
            }
        }
        Ok(format!("{threads} threads moved back into their old cgroups; {} removed", self.plan.host_name(&mirror)))
    }

    /// The longest missing window of this run, into the stats.
    fn record_missing(&mut self) {
        let longest = self
            .removed_at
            .iter()
            .filter_map(|(rel, gone)| self.remade_at.get(rel).map(|back| (rel, back.saturating_duration_since(*gone).as_secs_f64() * 1e3)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((rel, ms)) = longest {
            self.stats.max_missing_ms = Some(ms);
            self.stats.max_missing_cgroup = Some(self.plan.host_name(&self.orig(rel)));
        }
    }

    fn step_started(&self, step: u32) -> bool {
        let s = &self.journal.state;
        s.done.iter().any(|d| *d >= step) || s.in_flight.is_some_and(|f| f >= step)
    }
}

/// How long the paths would be missing, from what making the mirror took: each cgroup is
/// removed and made again (an rmdir costs no more than a mkdir with its settings).
fn missing_estimate(mirror_time: Duration) -> Duration {
    mirror_time * 2
}

/// Beside a kubelet, why not to remove the old cgroups: the paths would be missing longer
/// than [`MISSING_BUDGET`]. None without a kubelet, or when this run did not make the mirror.
fn missing_window_refusal(beside_kubelet: bool, mirror_time: Option<Duration>, cgroups: usize) -> Option<String> {
    let mirror_time = mirror_time.filter(|_| beside_kubelet)?;
    let est = missing_estimate(mirror_time);
    (est > MISSING_BUDGET).then(|| {
        format!(
            "a kubelet runs, and making the {cgroups} mirrors took {:.1} s: removing and recreating the cgroups would leave pod cgroups \
             missing for about {:.1} s, more than {} s of the kubelet's 1 min sync period; stop the kubelet, then migrate",
            mirror_time.as_secs_f64(),
            est.as_secs_f64(),
            MISSING_BUDGET.as_secs()
        )
    })
}


/// `--resume`: the plan may touch only cgroups beneath this host's v1 memory hierarchy
/// (a hierarchy of its own), the subtree and its mirror `cgleak-migrate.<name>` beside it,
/// reached without `..` or a link. The view is made again from it.
pub fn check_resume(plan: &MigratePlan, h: &ResumeHost) -> Result<PlanView, Bad> {
    let mem = h.memory;
    if mem.version != 1 {
        return Err(bad("memory_root", format!("memory is on cgroup v2 here ({}): migrate works on a v1 memory hierarchy", mem.mount.mount_point.display())));
    }
    same("memory_root", &plan.memory_root, &mem.mount.local, "the memory hierarchy as this process reaches it")?;
    same("memory_root_host", &plan.memory_root_host, &mem.mount.mount_point, "the memory hierarchy's mount point")?;
    if mem.mount.controllers.iter().any(|c| c != "memory") {
        return Err(bad("memory_root", format!("{} is mounted with other controllers ({}): migrate never touches those", mem.mount.mount_point.display(), mem.mount.controllers.join(","))));
    }
    relative("parent", &plan.parent, true)?;
    let top = Path::new(&plan.top);
    if top.components().count() != 1 || !matches!(top.components().next(), Some(std::path::Component::Normal(_))) || plan.top.starts_with(MIRROR_PREFIX) {
        return Err(bad("top", format!("{:?} is not the name of one cgroup", plan.top)));
    }
    same("mirror", &plan.mirror, &format!("{MIRROR_PREFIX}{}", plan.top), "the mirror is always named after the subtree")?;
    for name in [&plan.top, &plan.mirror] {
        no_links_below(&plan.memory_root, &plan.parent.join(name)).map_err(|e| bad("parent", e))?;
    }
    for (i, c) in plan.cgroups.iter().enumerate() {
        relative(&format!("cgroups[{i}].rel"), &c.rel, true)?;
    }
    Ok(steps_view(plan))
}

/// `--resume`: a migration's amendment (cgroups added to or dropped from the plan) names
/// only cgroups below the subtree.
pub fn check_amendment(change: &Value) -> Result<(), Bad> {
    let Some(obj) = change.as_object() else { return Err(bad("", "not an amendment of a migration")) };
    for (key, v) in obj {
        match key.as_str() {
            "add" => {
                let add: Vec<CgroupState> = serde_json::from_value(v.clone()).map_err(|e| bad("add", e.to_string()))?;
                for (i, c) in add.iter().enumerate() {
                    relative(&format!("add[{i}].rel"), &c.rel, true)?;
                }
            }
            "drop" => {
                let drop: Vec<PathBuf> = serde_json::from_value(v.clone()).map_err(|e| bad("drop", e.to_string()))?;
                for (i, rel) in drop.iter().enumerate() {
                    relative(&format!("drop[{i}]"), rel, true)?;
                }
            }
            "rename_mirror" if v.is_string() => {}
            other => return Err(bad(other, "not a change a migration journals (add, drop, rename_mirror)")),
        }
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match cgleak_readers::cgroupfs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", dir.display())),
    }
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    crate::cgroup_tree::remove_cgroup(dir).map_err(|e| format!("rmdir {}: {e}", dir.display()))
}

/// Apply (or resume) the migration whose plan is in `journal`. With `rollback`, undo it
/// instead, if no old cgroup was removed yet (else it is finished, and says so).
pub fn run(journal: FixJournal, rollback: bool, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let started = Instant::now();
    let (view, plan): (PlanView, MigratePlan) = plan_from_journal(&journal)?;
    let mut cgroups = plan.cgroups.clone();
    let mut renamed = false;
    let mut added = 0;
    let mut dropped = 0;
    for (_, change) in &journal.state.amendments {
        if let Some(add) = change.get("add") {
            let add: Vec<CgroupState> = serde_json::from_value(add.clone())
                .map_err(|source| FixError::JournalData { journal: journal.path().to_path_buf(), what: "the cgroups it adds to the plan", source })?;
            added += add.len() as u64;
            cgroups.extend(add);
        }
        if let Some(drop) = change.get("drop") {
            let drop: Vec<PathBuf> = serde_json::from_value(drop.clone())
                .map_err(|source| FixError::JournalData { journal: journal.path().to_path_buf(), what: "the cgroups it drops from the plan", source })?;
            dropped += drop.len() as u64;
            cgroups.retain(|c| !drop.contains(&c.rel));
        }
        if change.get("rename_mirror").is_some() {
            renamed = true;
        }
    }
    sort_preorder(&mut cgroups);
    let resumed = !journal.state.done.is_empty() || journal.state.in_flight.is_some() || journal.state.rolling_back.is_some();
    let mut m = Migration {
        stats: MigrateStats { cgroups: cgroups.len() as u64, added_since_plan: added, dropped_since_plan: dropped, ..Default::default() },
        plan,
        cgroups,
        renamed,
        journal,
        away_since: BTreeMap::new(),
        back_at: BTreeMap::new(),
        removed_at: BTreeMap::new(),
        remade_at: BTreeMap::new(),
        mirror_time: None,
        progress,
    };
    let mut steps: Vec<StepReport> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if resumed {
        notes.push(format!("resumed the migration journaled by pid {}", m.journal.state.pid));
    }
    let mut interrupted = false;

    let rolling_back = m.journal.state.rolling_back.clone();
    let want_back = rollback || rolling_back.is_some();
    let mut error: Option<String> = None;
    let mut undo: Option<String> = None;
    if want_back {
        if m.step_started(STEP_REMOVE_OLD) && rolling_back.is_none() {
            notes.push("rollback asked after the old cgroups were being removed: they cannot come back, so the migration is finished instead".into());
        } else {
            undo = Some(rolling_back.unwrap_or_else(|| "rollback asked (--rollback)".into()));
        }
    }
    if undo.is_none() {
        for step in 1..=STEPS {
            let title = view.title_of(step);
            if m.journal.is_done(step) {
                steps.push(StepReport { step, title, status: StepStatus::DoneBefore, detail: "done by an earlier run".into() });
                continue;
            }
            if cancel.load(Ordering::Relaxed) && !interrupted {
                interrupted = true;
                if step <= STEP_REMOVE_OLD && !m.step_started(STEP_REMOVE_OLD) {
                    undo = Some("interrupted (SIGINT/SIGTERM) before any old cgroup was removed".into());
                    break;
                }
                notes.push("interrupted after the old cgroups were removed: finishing the migration first".into());
            }
            if step == STEP_REMOVE_OLD && !m.step_started(STEP_REMOVE_OLD) {
                if let Some(why) = m.missing_window_too_long() {
                    undo = Some(why.clone());
                    error = Some(why);
                    break;
                }
            }
            (m.progress)(FixProgress::Step { step, of: STEPS, title: title.clone() });
            m.journal.intent(step)?;
            match m.run_step(step) {
                Ok(detail) => {
                    m.journal.done(step, json!({ "detail": detail }))?;
                    steps.push(StepReport { step, title, status: StepStatus::Done, detail });
                }
                Err(e) => {
                    steps.push(StepReport { step, title, status: StepStatus::Failed, detail: e.clone() });
                    if step < STEP_REMOVE_OLD {
                        undo = Some(format!("step {step} failed: {e}"));
                        error = Some(e);
                    } else {
                        // Forward only: tasks are safe where they are (running, limited alike).
                        m.record_missing();
                        m.stats.total_ms = started.elapsed().as_secs_f64() * 1e3;
                        let journal = m.journal.path().display().to_string();
                        notes.push(format!(
                            "the migration is unfinished; the tasks keep running where they are (old paths or {}); fix the cause and run `cgleak fix --resume` (journal {journal})",
                            m.plan.host_name(&m.mirror())
                        ));
                        return Ok(ApplyReport {
                            action: ACTION.into(),
                            outcome: None,
                            steps,
                            notes,
                            error: Some(e),
                            journal,
                            interrupted,
                            details: serde_json::to_value(&m.stats).unwrap_or(Value::Null),
                        });
                    }
                    break;
                }
            }
        }
    }
    let outcome = if let Some(reason) = undo {
        m.journal.rollback(&reason)?;
        match m.roll_back() {
            Ok(detail) => {
                steps.push(StepReport { step: 0, title: "rollback".into(), status: StepStatus::RolledBack, detail });
                for s in steps.iter_mut().filter(|s| s.status == StepStatus::Done) {
                    s.status = StepStatus::RolledBack;
                }
                notes.push(format!("rolled back: {reason}"));
                Outcome::RolledBack
            }
            Err(e) => {
                let journal = m.journal.path().display().to_string();
                notes.push(format!("the rollback is unfinished: run `cgleak fix --resume` (journal {journal})"));
                return Ok(ApplyReport {
                    action: ACTION.into(),
                    outcome: None,
                    steps,
                    notes,
                    error: Some(error.map_or(e.clone(), |x| format!("{x}; rollback: {e}"))),
                    journal,
                    interrupted,
                    details: serde_json::to_value(&m.stats).unwrap_or(Value::Null),
                });
            }
        }
    } else {
        Outcome::Completed
    };
    let away: Vec<f64> = m
        .away_since
        .iter()
        .filter_map(|(rel, out)| m.back_at.get(rel).map(|back| back.duration_since(*out).as_secs_f64() * 1e3))
        .collect();
    m.stats.max_away_ms = away.into_iter().reduce(f64::max);
    m.record_missing();
    m.stats.total_ms = started.elapsed().as_secs_f64() * 1e3;
    let details = serde_json::to_value(&m.stats).unwrap_or(Value::Null);
    let journal = m.journal.end(outcome)?.display().to_string();
    Ok(ApplyReport { action: ACTION.into(), outcome: Some(outcome), steps, notes, error, journal, interrupted, details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::testing::fix_host;
    use std::fs;

    fn opts(cgroup: &str) -> MigrateOptions {
        MigrateOptions { cgroup: PathBuf::from(cgroup), allow_kubelet: false }
    }

    /// centos7-957-kmem: 3.10 el7, kmem opt-in and on in kubepods, memory mounted alone,
    /// a kubelet running (pid 1666).
    fn el7() -> (cgleak_fixtures::Fixture, FixHost) {
        let f = cgleak_fixtures::centos7_957_kmem();
        let (fh, _) = fix_host(f.root());
        (f, fh)
    }

    /// Directories under `top`, `top` included, read here without cgleak's walk.
    fn dirs_under(top: &Path) -> Vec<PathBuf> {
        let mut out = vec![top.to_path_buf()];
        let mut i = 0;
        while i < out.len() {
            for e in fs::read_dir(&out[i]).unwrap().map(Result::unwrap) {
                if e.file_type().unwrap().is_dir() {
                    out.push(e.path());
                }
            }
            i += 1;
        }
        out
    }

    #[test]
    fn the_plan_mirrors_the_subtree_parents_first_with_its_settings() {
        let (f, fh) = el7();
        let (view, plan) = plan(&fh, &opts("kubepods")).unwrap();
        let top = f.path("/sys/fs/cgroup/memory/kubepods");
        assert_eq!((plan.top.as_str(), plan.mirror.as_str(), plan.parent.as_os_str()), ("kubepods", "cgleak-migrate.kubepods", std::ffi::OsStr::new("")));
        assert_eq!(plan.memory_root_host, Path::new("/sys/fs/cgroup/memory"));
        // Every cgroup of the subtree, each after its parent.
        let mut want: Vec<PathBuf> = dirs_under(&top).iter().map(|d| d.strip_prefix(&top).unwrap().to_path_buf()).collect();
        want.sort();
        let mut got: Vec<PathBuf> = plan.cgroups.iter().map(|c| c.rel.clone()).collect();
        got.sort();
        assert_eq!(got, want);
        for (i, c) in plan.cgroups.iter().enumerate() {
            if let Some(parent) = c.rel.parent() {
                let j = plan.cgroups.iter().position(|p| p.rel == parent).unwrap();
                assert!(j < i, "{} before its parent", c.rel.display());
            }
        }
        // Settings as read from the files, and the tasks in each.
        let burstable = plan.cgroups.iter().find(|c| c.rel == Path::new("burstable")).unwrap();
        assert_eq!(burstable.settings.swappiness, Some(60));
        assert_eq!(burstable.settings.memsw_limit_in_bytes, None, "no swap accounting in the fixture: no memsw file");
        let tasks: u32 = plan.cgroups.iter().map(|c| c.tasks).sum();
        assert!(tasks > 0);

        // The six steps: mirror, move-out, remove-old (deepest first), recreate, move-back, remove-mirror.
        let titles: Vec<&str> = view.steps.iter().map(|s| s.title.split(':').next().unwrap()).collect();
        assert_eq!(titles, ["mirror", "move-out", "remove-old", "recreate", "move-back", "remove-mirror"]);
        let n = plan.cgroups.len();
        assert_eq!(view.steps[0].cgroups[0], "/sys/fs/cgroup/memory/cgleak-migrate.kubepods");
        assert_eq!(view.steps[2].cgroups.last().map(String::as_str), Some("/sys/fs/cgroup/memory/kubepods"), "the top removed last");
        assert_eq!(view.steps[3].cgroups[0], "/sys/fs/cgroup/memory/kubepods", "the top made again first");
        assert!(view.steps.iter().all(|s| s.cgroups.len() == n));
        // Never a kmem file; nothing written that the root has already.
        for st in &view.steps {
            for w in &st.writes {
                assert!(!w.file.contains("kmem"), "{}", w.file);
                assert!(!(w.file.ends_with("/memory.swappiness") && w.value == "60"), "the root's swappiness is the default: {}", w.file);
            }
        }
        assert!(view.expected_gain.contains("without kmem accounting"), "{}", view.expected_gain);
    }

    #[test]
    fn a_limit_goes_before_memsw_in_the_mirror_and_the_recreation() {
        let (f, mut fh) = el7();
        fh.kubelet = None;
        let pod = f.path("/sys/fs/cgroup/memory/kubepods/pod82c3d566-a0f4-4f0a-bcd9-77a9d569593b");
        fs::write(pod.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        fs::write(pod.join("memory.memsw.limit_in_bytes"), "1073741824\n").unwrap();
        fs::write(pod.join("memory.use_hierarchy"), "0\n").unwrap();
        let (view, _) = plan(&fh, &opts("kubepods")).unwrap();
        for step in [&view.steps[0], &view.steps[3]] {
            let dir = if step.step == 1 { "cgleak-migrate.kubepods" } else { "kubepods" };
            let mine: Vec<(String, &str)> = step
                .writes
                .iter()
                .filter(|w| w.file.starts_with(&format!("/sys/fs/cgroup/memory/{dir}/pod82c3d566-a0f4-4f0a-bcd9-77a9d569593b/")))
                .map(|w| (w.file.rsplit('/').next().unwrap().to_string(), w.value.as_str()))
                .collect();
            let files: Vec<&str> = mine.iter().map(|(f, _)| f.as_str()).collect();
            assert_eq!(files[..3], ["memory.use_hierarchy", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"], "{mine:?}");
            assert_eq!(mine[1].1, "536870912");
        }
    }

    #[test]
    fn what_refuses_a_migration() {
        let (f, fh) = el7();
        // The fixture's kubelet runs.
        let refused = plan(&fh, &opts("kubepods")).unwrap().0.refused.unwrap();
        assert!(refused.contains("a kubelet is running (pid 1666: ") && refused.contains("pass --allow-kubelet"), "{refused}");
        let (view, p) = plan(&fh, &MigrateOptions { allow_kubelet: true, ..opts("kubepods") }).unwrap();
        assert!(view.refused.as_deref().is_none_or(|r| !r.contains("kubelet")), "{view:#?}");
        assert!(p.beside_kubelet && view.notes.iter().any(|n| n.contains("max_missing_ms")));

        let mut fh = fh;
        fh.kubelet = None;
        // A mirror left by an earlier run.
        fs::create_dir(f.path("/sys/fs/cgroup/memory/cgleak-migrate.kubepods")).unwrap();
        let refused = plan(&fh, &opts("kubepods")).unwrap().0.refused.unwrap();
        assert!(refused.contains("/sys/fs/cgroup/memory/cgleak-migrate.kubepods exists already"), "{refused}");
        fs::remove_dir(f.path("/sys/fs/cgroup/memory/cgleak-migrate.kubepods")).unwrap();
        // Below a kmem-active parent a fresh cgroup inherits kmem (memcg_propagate_kmem).
        let refused = plan(&fh, &opts("kubepods/burstable")).unwrap().0.refused.unwrap();
        assert!(refused.contains("/sys/fs/cgroup/memory/kubepods has kmem accounting on"), "{refused}");
        // Without the judge: the census' headroom must hold the mirror.
        fh.judgement = None;
        fh.headroom = Some(3);
        let (view, p) = plan(&fh, &opts("kubepods")).unwrap();
        let n = p.cgroups.len();
        assert_eq!(view.refused.as_deref(), Some(format!("the mirror needs {n} free memcg IDs and the headroom is 3: free some first (cgleak fix gc, reclaim)").as_str()));
        fh.headroom = Some(n as u64 + 1);
        let view = plan(&fh, &opts("kubepods")).unwrap().0;
        assert_eq!(view.refused, None);
        assert!(view.notes.iter().any(|x| x.contains("the mirror is renamed into place instead")), "{:?}", view.notes);
    }

    #[test]
    fn the_judges_precondition_is_the_plans() {
        // el7 957: the headroom cannot be counted. Without failed creations in the logs the
        // judge lets the mirror go with a note, which the plan shows and does not refuse.
        let f = cgleak_fixtures::el7_957_kmem_exhausted();
        let (mut fh, _) = fix_host(f.root());
        fh.kubelet = None;
        let (view, p) = plan(&fh, &opts("kubepods")).unwrap();
        let n = p.cgroups.len() as u64;
        let note = migrate_precondition(&fh.judgement.as_ref().unwrap().situation, n).unwrap().expect("a note");
        assert!(note.contains(&format!("cgleak probe --count {n}")), "{note}");
        assert!(view.notes.contains(&note), "{:?}", view.notes);
        assert_eq!(view.refused, None);
        // The logs show failed memcg creations (the front end reads them into the judge):
        // the judge's refusal is the plan's.
        fh.judgement.as_mut().unwrap().situation.creation_failures_logged = true;
        let why = migrate_precondition(&fh.judgement.as_ref().unwrap().situation, n).expect_err("refused");
        let (view, _) = plan(&fh, &opts("kubepods")).unwrap();
        assert!(why.contains("logs show failed memcg creations"), "{why}");
        assert_eq!(view.refused.as_deref(), Some(why.as_str()));
        // The census' headroom is not asked again where the judge answered.
        fh.headroom = Some(0);
        fh.judgement.as_mut().unwrap().situation.creation_failures_logged = false;
        fh.judgement.as_mut().unwrap().situation.headroom = Some(n + 5);
        assert_eq!(plan(&fh, &opts("kubepods")).unwrap().0.refused, None);
    }

    #[test]
    fn bad_arguments_and_other_hosts_are_usage_errors() {
        let (_f, fh) = el7();
        for (cgroup, msg) in [
            ("", "--cgroup /: the hierarchy's root: give the subtree to migrate, e.g. kubepods"),
            ("nonexistent", "--cgroup nonexistent: /sys/fs/cgroup/memory/nonexistent is not a cgroup"),
        ] {
            let e = plan(&fh, &opts(cgroup)).unwrap_err();
            assert!(e.is_usage(), "{e:?}");
            assert_eq!(e.to_string(), msg);
        }
        let v2 = cgleak_fixtures::debian_6_1_v2();
        let (fh, _) = fix_host(v2.root());
        let e = plan(&fh, &opts("kubepods.slice")).unwrap_err();
        assert!(e.is_usage() && e.to_string().starts_with("migrate moves tasks between cgroup v1 memory cgroups; memory is on cgroup v2 here (/sys/fs/cgroup)"), "{e}");
    }

    #[test]
    fn beside_a_kubelet_a_slow_mirror_stops_the_migration_before_remove_old() {
        let slow = Some(Duration::from_secs(8));
        let why = missing_window_refusal(true, slow, 5000).unwrap();
        assert!(why.contains("5000 mirrors took 8.0 s") && why.contains("about 16.0 s") && why.contains("stop the kubelet"), "{why}");
        assert_eq!(missing_window_refusal(true, Some(Duration::from_secs(7)), 5000), None);
        assert_eq!(missing_window_refusal(false, slow, 5000), None, "no kubelet: no window to keep short");
        assert_eq!(missing_window_refusal(true, None, 5000), None, "the mirror made by an earlier run: not measured");
    }
}

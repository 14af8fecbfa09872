//! reclaim: release dying memcgs by reclaiming the pages that pin them (docs/kernel-facts.md
//! section 4).
//!
//! cgroup v2: `memory.reclaim` (5.19+) on the cgroups that hold dying children, in
//! bounded rounds (each writes at most `--step` bytes to each of them); reclaim on a
//! live parent walks its dying children too. It stops at the first round that releases
//! no dying memcg, or after `--max-rounds`.
//!
//! cgroup v1: `sync`, then `drop_caches` 1 (clean page cache, host-wide), and 2 (slab)
//! only when asked. Dropping the page cache costs the whole host: every file read
//! afterwards comes from disk until the cache is warm again. So it is rate-limited: at
//! most once per `--min-interval` (the time of the last drop is kept in the state
//! directory, written before the drop so a crash still counts). The stamps of the other
//! cgleak that drops caches count too (`peer_stamps`): `cgleak fix reclaim` honours the
//! agent's (`cgleak agent --reclaim-every`, which runs [`apply_unattended`] with its journal,
//! lock and stamp in `<agent state dir>/reclaim/`), and the agent the fixer's, so the two
//! never drop caches twice within the interval.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_readers::cgroupfs::{self, read_flat_keyed};
use cgleak_readers::HostPaths;

use super::failpoint::Failpoints;
use super::journal::{format_unix, now_unix, FixJournal, Outcome};
use super::lock::{FixLock, LockError};
use super::resume::{bad, no_links_below, same, Bad, ResumeHost};
use super::state::{agent_state_dir, fix_state_dir, legacy_state_dir, read_small_nofollow, Open, StateDir};
use super::{journal_plan, plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepRunner};
use crate::cgroup_tree::subtree_dirs;

pub const ACTION: &str = "reclaim";
/// The time of the last drop_caches, in the state directory.
pub const LAST_DROP_FILE: &str = "reclaim-last-drop";
/// `--min-interval` by default: at most one host-wide drop an hour. The agent's
/// `--reclaim-every` may not be shorter.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(3600);
/// v2: `--step` and `--max-rounds` by default.
pub const DEFAULT_STEP_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_ROUNDS: u32 = 8;
/// The agent's reclaim state (journal, lock, stamp), under its `--state-dir`.
pub const AGENT_RECLAIM_DIR: &str = "reclaim";
/// A stamp holds one number; a longer file is not one (and is not read further).
const STAMP_MAX_BYTES: u64 = 64;
/// A stamp further in the future than this is not a drop that happened (a clock set back, or garbage).
const STAMP_FUTURE_SLACK_SECS: f64 = 60.0;
/// After a step, dying memcgs are counted until the count holds still this long (they
/// are freed asynchronously, after an RCU grace period) or [`SETTLE_MAX`] passes.
const SETTLE_QUIET: Duration = Duration::from_millis(500);
const SETTLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ReclaimOptions {
    /// v1: also drop slab (drop_caches 2).
    pub slab: bool,
    /// v1: at most one drop per this long.
    pub min_interval: Duration,
    /// v2: bytes written to memory.reclaim per cgroup per round.
    pub step_bytes: u64,
    /// v2: rounds at most.
    pub max_rounds: u32,
    pub state_dir: PathBuf,
    /// v1: stamps of drops by the other cgleak (the agent's reclaim for `fix reclaim`, the
    /// fixer's for the agent), read only: a drop recorded there counts for the rate limit too.
    pub peer_stamps: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReclaimMethod {
    /// drop_caches values to write, in order.
    DropCaches { file: PathBuf, values: Vec<u8>, stamp: PathBuf },
    /// memory.reclaim of these cgroups (local paths), in rounds.
    MemoryReclaim { targets: Vec<PathBuf>, step_bytes: u64, rounds: u32, root_stat: PathBuf },
    /// v1 `--target`: `memory.force_empty` of this live cgroup (local path), whose subtree has
    /// no task: the nearest online ancestor of the dying memcgs named.
    ForceEmpty { cgroup: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimPlan {
    pub method: ReclaimMethod,
}

/// When the last drop_caches happened, if the stamp is there.
pub fn last_drop(state_dir: &Path) -> Option<f64> {
    match read_stamp(&state_dir.join(LAST_DROP_FILE)) {
        Stamp::At(t) => Some(t),
        _ => None,
    }
}

/// A rate-limit stamp as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Stamp {
    Missing,
    /// Seconds since 1970.
    At(f64),
    /// Not a time stamp: why, with the path.
    Unreadable(String),
}

/// Read a stamp: at most [`STAMP_MAX_BYTES`] bytes, one positive number of seconds, not in
/// the future; a link in its place is not followed (another cgleak's directory may hold it).
pub fn read_stamp(path: &Path) -> Stamp {
    let text = match read_small_nofollow(path, STAMP_MAX_BYTES + 1) {
        Ok(None) => return Stamp::Missing,
        Err(e) => return Stamp::Unreadable(format!("{}: {e}", path.display())),
        Ok(Some(b)) if b.len() as u64 > STAMP_MAX_BYTES => return Stamp::Unreadable(format!("{}: longer than a time stamp", path.display())),
        Ok(Some(b)) => match String::from_utf8(b) {
            Ok(t) => t,
            Err(_) => return Stamp::Unreadable(format!("{}: not text", path.display())),
        },
    };
    match text.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 && t <= now_unix() + STAMP_FUTURE_SLACK_SECS => Stamp::At(t),
        Ok(t) if t.is_finite() && t > 0.0 => Stamp::Unreadable(format!("{}: {} is in the future", path.display(), format_unix(t))),
        _ => Stamp::Unreadable(format!("{}: {:?} is not a time in seconds since 1970", path.display(), text.trim())),
    }
}

/// The stamps `cgleak fix reclaim` honours besides its own, read only: the agent's reclaim
/// stamp in the agent's state directory on the host (`<host-root>/var/lib/cgleak/agent/reclaim/`),
/// and under `state_dir` (an agent given the fixer's `--state-dir`).
pub fn agent_stamps(host: &HostPaths, state_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![agent_state_dir(host).join(AGENT_RECLAIM_DIR).join(LAST_DROP_FILE)];
    let shared = state_dir.join(AGENT_RECLAIM_DIR).join(LAST_DROP_FILE);
    if !out.contains(&shared) {
        out.push(shared);
    }
    out
}

/// The stamps the agent's reclaim honours besides its own, read only: the fixer's in its
/// state directory on the host (`<host-root>/var/lib/cgleak/fix/`, where the host's
/// directory is visible: not in the DaemonSet's pod, which mounts only the agent's), the
/// old layout's (`<host-root>/var/lib/cgleak/`), and one in the agent's `state_dir` (a fixer
/// given the agent's `--state-dir`).
pub fn fixer_stamps(host: &HostPaths, state_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in [fix_state_dir(host).join(LAST_DROP_FILE), legacy_state_dir(host).join(LAST_DROP_FILE), state_dir.join(LAST_DROP_FILE)] {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The v1 rate limit as the stamps say: the last drop any of them records, when the next is
/// allowed, and a note for each stamp that was there but could not be read (it is ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// The latest drop and the stamp that records it.
    pub last: Option<(f64, PathBuf)>,
    /// `last` plus the minimum interval.
    pub next_allowed: Option<f64>,
    pub notes: Vec<String>,
}

pub fn rate_limit(o: &ReclaimOptions) -> RateLimit {
    let mut last: Option<(f64, PathBuf)> = None;
    let mut notes = Vec::new();
    for path in std::iter::once(o.state_dir.join(LAST_DROP_FILE)).chain(o.peer_stamps.iter().cloned()) {
        match read_stamp(&path) {
            Stamp::Missing => {}
            Stamp::At(t) => {
                if last.as_ref().is_none_or(|(l, _)| t > *l) {
                    last = Some((t, path));
                }
            }
            Stamp::Unreadable(why) => notes.push(format!("rate-limit stamp ignored: {why}")),
        }
    }
    let next_allowed = last.as_ref().map(|(t, _)| t + o.min_interval.as_secs_f64());
    RateLimit { last, next_allowed, notes }
}

/// Whether the file a reclaim writes can be written here (drop_caches on v1, the memory
/// root's memory.reclaim on v2): the agent checks at start rather than at its first run.
pub fn check_writable(fh: &FixHost) -> Result<(), (PathBuf, io::Error)> {
    let file = if fh.memory.version == 1 { fh.host.host("/proc/sys/vm/drop_caches") } else { fh.memory.mount.local.join("memory.reclaim") };
    rustix::fs::access(&file, rustix::fs::Access::WRITE_OK).map_err(|e| (fh.host.to_host_path(&file), io::Error::from(e)))
}

/// v2: the cgroups whose own dying children (not their live children's) pin memcgs:
/// nr_dying_descendants above the sum of their live children's.
fn v2_targets(root: &Path) -> Vec<(PathBuf, u64)> {
    let dying = |d: &Path| read_flat_keyed(&d.join("cgroup.stat")).ok().and_then(|m| m.get("nr_dying_descendants").copied()).unwrap_or(0);
    let mut out = Vec::new();
    for d in subtree_dirs(root) {
        let own = dying(&d);
        if own == 0 {
            continue;
        }
        let children: u64 = cgroupfs::child_dirs(&d).map(|c| c.iter().map(|e| dying(e)).sum()).unwrap_or(0);
        if own > children {
            out.push((d, own - children));
        }
    }
    out
}

pub fn plan(fh: &FixHost, o: &ReclaimOptions) -> Result<(PlanView, ReclaimPlan), FixError> {
    let mem = &fh.memory;
    let mut view = PlanView::new(ACTION, "release dying memcgs by reclaiming the pages that pin them");
    let method = if mem.version == 1 {
        let file = fh.host.host("/proc/sys/vm/drop_caches");
        let stamp = o.state_dir.join(LAST_DROP_FILE);
        let values: Vec<u8> = if o.slab { vec![1, 2] } else { vec![1] };
        let host_file = fh.host.to_host_path(&file).display().to_string();
        view.step(format!("sync, then write 1 to {host_file} (the page cache, host-wide)"), Vec::new(), vec![FileWrite { file: host_file.clone(), value: "1".into() }]);
        if o.slab {
            view.step(format!("write 2 to {host_file} (reclaimable slab: dentries and inodes, host-wide)"), Vec::new(), vec![FileWrite { file: host_file.clone(), value: "2".into() }]);
        }
        view.notes.push(
            "drop_caches is host-wide: every file read afterwards comes from disk until the cache is warm again (an I/O \
             spike on a busy node); dirty, mapped and shmem pages stay"
                .into(),
        );
        view.notes.push(format!("rate limit: at most one drop per {} (--min-interval); the time is kept in {}", crate::human_duration(o.min_interval), stamp.display()));
        let limit = rate_limit(o);
        view.notes.extend(limit.notes);
        if let (Some((last, by)), Some(next)) = (&limit.last, limit.next_allowed) {
            if now_unix() < next {
                view.refused = Some(format!(
                    "the page cache was dropped at {} (by cgleak, recorded in {}): the next drop is allowed from {} (--min-interval {})",
                    format_unix(*last),
                    by.display(),
                    format_unix(next),
                    crate::human_duration(o.min_interval)
                ));
            }
        }
        ReclaimMethod::DropCaches { file, values, stamp }
    } else {
        if !fh.era.has_memory_reclaim {
            return Err(FixError::NotOnThisHost(format!("memory.reclaim needs 5.19+; {} has none", fh.era.release.raw)));
        }
        let targets = v2_targets(&mem.mount.local);
        let rounds = o.max_rounds;
        for r in 1..=rounds {
            let cgroups = targets.iter().map(|(d, _)| fh.host.to_host_path(d).display().to_string()).collect();
            let writes = targets
                .iter()
                .map(|(d, _)| FileWrite { file: fh.host.to_host_path(&d.join("memory.reclaim")).display().to_string(), value: o.step_bytes.to_string() })
                .collect();
            view.step(format!("round {r}: write {} bytes to memory.reclaim of {} cgroups holding dying children", o.step_bytes, targets.len()), cgroups, writes);
        }
        view.notes.push("reclaim on a parent also evicts its live children's page cache (re-read from disk when used again)".into());
        view.notes.push("rounds stop at the first that releases no dying memcg".into());
        if targets.is_empty() {
            view.steps.clear();
            view.nothing_to_do = Some("no cgroup holds dying children (cgroup.stat nr_dying_descendants is 0 below every one)".into());
        }
        ReclaimMethod::MemoryReclaim {
            targets: targets.into_iter().map(|(d, _)| d).collect(),
            step_bytes: o.step_bytes,
            rounds,
            root_stat: mem.mount.local.join("cgroup.stat"),
        }
    };
    view.expected_gain = match fh.dying {
        Some(d) if d > 0 => format!("up to {d} dying memcgs released (their kernel memory freed; their IDs where they hold them)"),
        Some(_) => "none: there is no dying memcg now".into(),
        None => "unknown: dying memcgs cannot be counted on this kernel".into(),
    };
    if fh.dying == Some(0) && view.nothing_to_do.is_none() {
        view.steps.clear();
        view.nothing_to_do = Some("no dying memcg to release".into());
    }
    Ok((view, ReclaimPlan { method }))
}

/// `fix reclaim --target POD|PARENT`: the memcgs to release, as the caller resolved them.
#[derive(Debug, Clone)]
pub struct ReclaimTarget {
    /// What was named (a pod UID or a path), for the plan's words.
    pub named: String,
    /// The cgroup (live or dying) relative to the memory hierarchy's root, no `..`.
    pub path: PathBuf,
}

/// The nearest directory that exists at or above `rel` below `root` (`rel` itself when live).
fn nearest_online(root: &Path, rel: &Path) -> PathBuf {
    let mut p = rel.to_path_buf();
    while !p.as_os_str().is_empty() && !root.join(&p).is_dir() {
        p.pop();
    }
    p
}

/// Reclaim only where the target's pinned bytes are. A dying memcg has no directory, so
/// the write goes to its nearest online ancestor, whose reclaim walks its dying children
/// too (facts §4). v2: `memory.reclaim` there (5.19+, mm/memcontrol.c memory_reclaim). v1
/// has no memory.reclaim; `memory.force_empty` of that ancestor reclaims every page of its
/// subtree, live tasks' included, so it is planned only when the subtree has no task, and
/// never on the root (mm/memcontrol-v1.c mem_cgroup_force_empty_write: EINVAL); otherwise
/// the plan is refused and says that the host-wide drop_caches (no --target) remains.
pub fn plan_target(fh: &FixHost, o: &ReclaimOptions, target: &ReclaimTarget) -> Result<(PlanView, ReclaimPlan), FixError> {
    let mem = &fh.memory;
    let root = &mem.mount.local;
    let online = nearest_online(root, &target.path);
    let ancestor = root.join(&online);
    let host_anc = fh.host.to_host_path(&ancestor).display().to_string();
    let what = if online == target.path { format!("{host_anc} (the target, live)") } else { format!("{host_anc}, the nearest online ancestor of {}", target.named) };
    let mut view = PlanView::new(ACTION, format!("release the dying memcgs of {} by reclaiming where they are pinned", target.named));
    let method = if mem.version == 2 {
        if !fh.era.has_memory_reclaim {
            view.refused = Some(format!("memory.reclaim needs 5.19+; {} has none: `cgleak fix reclaim` without --target is all this kernel offers", fh.era.release.raw));
        }
        for r in 1..=o.max_rounds {
            let file = fh.host.to_host_path(&ancestor.join("memory.reclaim")).display().to_string();
            view.step(format!("round {r}: write {} bytes to memory.reclaim of {what}", o.step_bytes), vec![host_anc.clone()], vec![FileWrite { file, value: o.step_bytes.to_string() }]);
        }
        view.notes.push(format!("reclaim on {host_anc} also evicts its live descendants' page cache (re-read from disk when used again)"));
        view.notes.push("rounds stop at the first that releases no dying memcg".into());
        ReclaimMethod::MemoryReclaim { targets: vec![ancestor.clone()], step_bytes: o.step_bytes, rounds: o.max_rounds, root_stat: root.join("cgroup.stat") }
    } else {
        let dying_note = "memory.force_empty cannot be written to a dying memcg: it has no directory";
        if online.as_os_str().is_empty() {
            view.refused = Some(format!(
                "the nearest online ancestor of {} is the root memcg, where memory.force_empty is refused (EINVAL); {dying_note}; \
                 `cgleak fix reclaim` without --target drops the page cache host-wide",
                target.named
            ));
        } else {
            match cgroupfs::subtree_has_procs(&ancestor) {
                Ok(false) => {}
                Ok(true) => {
                    view.refused = Some(format!(
                        "{host_anc} has live tasks in its subtree: its memory.force_empty would reclaim their memory too; {dying_note}; \
                         `cgleak fix reclaim` without --target drops the page cache host-wide instead"
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let file = fh.host.to_host_path(&ancestor.join("memory.force_empty")).display().to_string();
        view.step(format!("sync, then write 0 to memory.force_empty of {what}: reclaims every page of its subtree, dying children included"), vec![host_anc.clone()], vec![FileWrite { file, value: "0".into() }]);
        view.notes.push(format!("{host_anc} has no task in its subtree: only cached pages of finished work are reclaimed"));
        ReclaimMethod::ForceEmpty { cgroup: ancestor.clone() }
    };
    view.expected_gain = format!("the dying memcgs under {} released once the pages that pin them are reclaimed (their IDs where they hold them)", target.named);
    Ok((view, ReclaimPlan { method }))
}

/// A count once it holds still (or after [`SETTLE_MAX`]): dying memcgs after a step; the agent
/// settles the dead slab IDs the same way after a run.
pub fn settled(count: &mut dyn FnMut() -> Option<u64>) -> Option<u64> {
    let start = Instant::now();
    let mut last = count();
    let mut since = Instant::now();
    while start.elapsed() < SETTLE_MAX {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLE_QUIET {
            break;
        }
    }
    last
}

/// No symlink on the way, never created, and on cgroupfs (memory.reclaim) or procfs (drop_caches).
fn write_value(file: &Path, value: &str) -> io::Result<()> {
    if file.file_name().is_some_and(|n| n == "memory.reclaim" || n == "memory.force_empty") {
        cgroupfs::write_file(file, value.as_bytes())
    } else {
        cgleak_readers::procfs::write_sysctl(file, value.as_bytes())
    }
}

/// The time of a drop, into `stamp` in the state directory: written whole beside it and
/// renamed over it, through the checked directory (no link followed).
fn write_stamp(stamp: &Path) -> Result<(), String> {
    let (Some(dir), Some(name)) = (stamp.parent(), stamp.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("{}: not a file in a directory", stamp.display()));
    };
    let d = StateDir::create(dir).map_err(|e| e.to_string())?;
    let tmp = format!("{name}.new");
    let mut f = d.open_file(&tmp, Open::CreateNew).map_err(|e| e.to_string())?.expect("a new file is always opened");
    f.write_all(format!("{}\n", now_unix()).as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("write {}: {e}", d.join(&tmp).display()))?;
    d.rename_to(&tmp, &d, name).and_then(|_| d.sync()).map_err(|e| e.to_string())
}

/// `--resume`: a v1 reclaim writes only the host's `/proc/sys/vm/drop_caches` (1, then 2 with
/// slab) and its stamp in the state directory the journal is in; a v2 one only
/// `memory.reclaim` of cgroups beneath this host's memory hierarchy. The view is made again.
pub fn check_resume(plan: &ReclaimPlan, h: &ResumeHost) -> Result<PlanView, Bad> {
    let mut view = PlanView::new(ACTION, "release dying memcgs by reclaiming the pages that pin them");
    match &plan.method {
        ReclaimMethod::DropCaches { file, values, stamp } => {
            same("method.DropCaches.file", file, &h.host.host("/proc/sys/vm/drop_caches"), "the host's drop_caches")?;
            if values.as_slice() != [1] && values.as_slice() != [1, 2] {
                return Err(bad("method.DropCaches.values", format!("{values:?}: a reclaim drops the page cache (1), then slab (2) with --slab")));
            }
            same("method.DropCaches.stamp", stamp, &h.state_dir.join(LAST_DROP_FILE), "the stamp in the journal's state directory")?;
            let host_file = h.host.to_host_path(file).display().to_string();
            view.step(format!("sync, then write 1 to {host_file} (the page cache, host-wide)"), Vec::new(), vec![FileWrite { file: host_file.clone(), value: "1".into() }]);
            if values.len() == 2 {
                view.step(format!("write 2 to {host_file} (reclaimable slab: dentries and inodes, host-wide)"), Vec::new(), vec![FileWrite { file: host_file, value: "2".into() }]);
            }
        }
        ReclaimMethod::MemoryReclaim { targets, step_bytes, rounds, root_stat } => {
            let mem = &h.memory.mount;
            if h.memory.version != 2 {
                return Err(bad("method.MemoryReclaim", format!("memory.reclaim is cgroup v2's; memory is on v1 here ({})", mem.mount_point.display())));
            }
            same("method.MemoryReclaim.root_stat", root_stat, &mem.local.join("cgroup.stat"), "the memory hierarchy's cgroup.stat")?;
            if *rounds == 0 || *rounds > 1000 || *step_bytes == 0 {
                return Err(bad("method.MemoryReclaim.rounds", format!("{rounds} rounds of {step_bytes} bytes: a reclaim runs 1 to 1000 rounds of at least a byte")));
            }
            for (i, t) in targets.iter().enumerate() {
                let field = format!("method.MemoryReclaim.targets[{i}]");
                let rel = t.strip_prefix(&mem.local).map_err(|_| bad(&field, format!("{} is not under the memory hierarchy {}", t.display(), mem.local.display())))?;
                super::resume::relative(&field, rel, true)?;
                no_links_below(&mem.local, rel).map_err(|e| bad(&field, e))?;
            }
            let cgroups: Vec<String> = targets.iter().map(|d| h.host.to_host_path(d).display().to_string()).collect();
            for r in 1..=*rounds {
                let writes = targets.iter().map(|d| FileWrite { file: h.host.to_host_path(&d.join("memory.reclaim")).display().to_string(), value: step_bytes.to_string() }).collect();
                view.step(format!("round {r}: write {step_bytes} bytes to memory.reclaim of {} cgroups holding dying children", targets.len()), cgroups.clone(), writes);
            }
        }
        ReclaimMethod::ForceEmpty { cgroup } => {
            let mem = &h.memory.mount;
            if h.memory.version != 1 {
                return Err(bad("method.ForceEmpty", format!("memory.force_empty is cgroup v1's; memory is on v2 here ({})", mem.mount_point.display())));
            }
            let field = "method.ForceEmpty.cgroup";
            let rel = cgroup.strip_prefix(&mem.local).map_err(|_| bad(field, format!("{} is not under the memory hierarchy {}", cgroup.display(), mem.local.display())))?;
            if rel.as_os_str().is_empty() {
                return Err(bad(field, "the root memcg: memory.force_empty is refused there"));
            }
            super::resume::relative(field, rel, true)?;
            no_links_below(&mem.local, rel).map_err(|e| bad(field, e))?;
            let host_cg = h.host.to_host_path(cgroup).display().to_string();
            let file = h.host.to_host_path(&cgroup.join("memory.force_empty")).display().to_string();
            view.step(format!("sync, then write 0 to memory.force_empty of {host_cg}: reclaims every page of its subtree, dying children included"), vec![host_cg], vec![FileWrite { file, value: "0".into() }]);
        }
    }
    Ok(view)
}

/// Apply or resume a reclaim. `count_dying` counts dying memcgs now (a census).
pub fn run(journal: FixJournal, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress), count_dying: &mut dyn FnMut() -> Option<u64>) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, ReclaimPlan) = plan_from_journal(&journal)?;
    let steps = view.steps.len() as u32;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    let mut released: Vec<serde_json::Value> = Vec::new();
    let mut before = count_dying();
    let mut stopped_early = None;
    for step in 1..=steps {
        if r.cancelled() {
            r.interrupted = true;
            break;
        }
        if let Some(why) = &stopped_early {
            r.skip(step, format!("not needed: {why}"))?;
            continue;
        }
        let res = r.run(step, |_| {
            match &plan.method {
                ReclaimMethod::DropCaches { file, values, stamp } => {
                    let value = values[(step - 1) as usize];
                    // The stamp first: a crash during the drop still counts for the rate limit.
                    write_stamp(stamp)?;
                    if value == 1 {
                        rustix::fs::sync();
                    }
                    write_value(file, &value.to_string()).map_err(|e| format!("write {value} to {}: {e}", file.display()))?;
                }
                ReclaimMethod::ForceEmpty { cgroup } => {
                    // Checked again at the step: a task that joined since planning would lose its memory.
                    match cgroupfs::subtree_has_procs(cgroup) {
                        Ok(false) => {}
                        Ok(true) => return Err(format!("{} gained a task since planning: memory.force_empty not written", cgroup.display())),
                        Err(e) => return Err(format!("{}: {e}", cgroup.display())),
                    }
                    // Dirty pages cannot be reclaimed (memcg reclaim does not write them back): sync first.
                    rustix::fs::sync();
                    match write_value(&cgroup.join("memory.force_empty"), "0") {
                        Ok(()) => {}
                        // EBUSY: not everything could be reclaimed (mem_cgroup_force_empty gives up after retries).
                        Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {}
                        Err(e) => return Err(format!("write 0 to {}: {e}", cgroup.join("memory.force_empty").display())),
                    }
                }
                ReclaimMethod::MemoryReclaim { targets, step_bytes, .. } => {
                    for t in targets {
                        let current = cgroupfs::read_u64(&t.join("memory.current")).unwrap_or(*step_bytes);
                        let bytes = (*step_bytes).min(current.max(4096));
                        match write_value(&t.join("memory.reclaim"), &bytes.to_string()) {
                            Ok(()) => {}
                            // EAGAIN: less than asked could be reclaimed (facts §4), not an error.
                            Err(e) if e.raw_os_error() == Some(Errno::AGAIN.raw_os_error()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(format!("write {bytes} to {}: {e}", t.join("memory.reclaim").display())),
                        }
                    }
                }
            }
            let after = settled(count_dying);
            let gain = match (before, after) {
                (Some(b), Some(a)) => Some(b as i64 - a as i64),
                _ => None,
            };
            let detail = match (gain, after) {
                (Some(g), Some(a)) => format!("{g} dying memcgs released ({a} left)"),
                _ => "done (dying memcgs cannot be counted here)".to_string(),
            };
            Ok((detail, json!({ "dying_before": before, "dying_after": after, "released": gain })))
        });
        if let Err(e) = res {
            return Ok(r.stop_unfinished(e, json!({ "steps": released })));
        }
        let last = r.journal.state.results.last().map(|(_, v)| v.clone()).unwrap_or_default();
        let gained = last["released"].as_i64();
        before = last["dying_after"].as_u64().or(before);
        released.push(last);
        if matches!(plan.method, ReclaimMethod::MemoryReclaim { .. }) && gained.is_some_and(|g| g <= 0) {
            stopped_early = Some(format!("round {step} released no dying memcg"));
        }
    }
    let outcome = if r.interrupted { Outcome::Aborted } else { Outcome::Completed };
    Ok(r.finish(outcome, None, json!({ "steps": released })))
}

/// What one unattended reclaim did.
#[derive(Debug)]
pub enum UnattendedReclaim {
    /// Applied: the report `cgleak fix reclaim --apply` makes. `resumed`: the run a killed
    /// reclaim left unfinished in the journal, finished now.
    Applied { report: ApplyReport, resumed: bool },
    NothingToDo(String),
    /// The rate limit refused it, or another reclaim holds the lock.
    Refused(String),
}

/// One reclaim as `cgleak agent --reclaim-every` runs it: the plan and journaled run of
/// `cgleak fix reclaim --apply --yes`, under the lock and journal in `o.state_dir` (the
/// agent's own, apart from the fixer's). An unfinished journal there (a killed agent) is
/// finished instead, and that is this run.
pub fn apply_unattended(
    fh: &FixHost,
    o: &ReclaimOptions,
    failpoints: Failpoints,
    cancel: &AtomicBool,
    count_dying: &mut dyn FnMut() -> Option<u64>,
) -> Result<UnattendedReclaim, FixError> {
    let _lock = match FixLock::acquire(&o.state_dir, "agent reclaim", false) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => return Ok(UnattendedReclaim::Refused(e.to_string())),
        Err(e) => return Err(FixError::Lock(e)),
    };
    let mut quiet = |_: FixProgress| {};
    if let Some(mut journal) = FixJournal::resume(&o.state_dir, failpoints)? {
        if journal.state.action != ACTION {
            return Err(FixError::NotOurJournal { journal: journal.path().to_path_buf(), action: journal.state.action.clone(), state_dir: o.state_dir.clone() });
        }
        // Data, not a program: only what this host's reclaim would write.
        let h = ResumeHost { host: &fh.host, layout: &fh.layout, memory: &fh.memory, state_dir: &o.state_dir };
        let view = super::resume::check(&journal, &h).map_err(|refusal| FixError::ResumeRefused { refusal, state_dir: o.state_dir.clone() })?;
        journal.state.plan["view"] = serde_json::to_value(&view).expect("views serialize");
        return run(journal, cancel, &mut quiet, count_dying).map(|report| UnattendedReclaim::Applied { report, resumed: true });
    }
    let (view, detail) = plan(fh, o)?;
    if let Some(why) = view.nothing_to_do {
        return Ok(UnattendedReclaim::NothingToDo(why));
    }
    if let Some(why) = view.refused {
        return Ok(UnattendedReclaim::Refused(why));
    }
    let journal = FixJournal::begin(&o.state_dir, ACTION, journal_plan(&view, &detail), failpoints)?;
    run(journal, cancel, &mut quiet, count_dying).map(|report| UnattendedReclaim::Applied { report, resumed: false })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;
    use crate::fix::testing::fix_host;
    use std::collections::BTreeSet;

    #[test]
    fn v1_drops_the_page_cache_then_slab_only_when_asked() {
        let f = cgleak_fixtures::debian_4_19_v1_dying();
        let (fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let (view, p) = plan(&fh, &options(state.path(), vec![])).unwrap();
        assert!(view.refused.is_none() && view.nothing_to_do.is_none(), "{view:#?}");
        let ReclaimMethod::DropCaches { file, values, stamp } = &p.method else { panic!("{p:?}") };
        assert_eq!(file, &f.path("/proc/sys/vm/drop_caches"));
        assert_eq!(values, &[1]);
        assert_eq!(stamp, &state.path().join(LAST_DROP_FILE));
        assert_eq!(view.steps.len(), 1);
        assert_eq!(view.steps[0].writes, vec![FileWrite { file: "/proc/sys/vm/drop_caches".into(), value: "1".into() }]);
        assert_eq!(view.expected_gain, format!("up to {} dying memcgs released (their kernel memory freed; their IDs where they hold them)", f.truth.dying.unwrap()));
        assert!(view.notes.iter().any(|n| n.starts_with("rate limit: at most one drop per 1h")), "{:?}", view.notes);

        let mut o = options(state.path(), vec![]);
        o.slab = true;
        let (view, p) = plan(&fh, &o).unwrap();
        let ReclaimMethod::DropCaches { values, .. } = &p.method else { panic!("{p:?}") };
        assert_eq!(values, &[1, 2]);
        let written: Vec<&str> = view.steps.iter().flat_map(|s| s.writes.iter().map(|w| w.value.as_str())).collect();
        assert_eq!(written, ["1", "2"], "page cache first, then slab");
    }

    fn target(path: &str) -> ReclaimTarget {
        ReclaimTarget { named: format!("/{path}"), path: PathBuf::from(path) }
    }

    #[test]
    fn v1_target_force_empties_its_online_ancestor_only_without_tasks() {
        let f = cgleak_fixtures::debian_4_19_nokmem();
        let (fh, census) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let o = options(state.path(), vec![]);
        // An orphaned pod has no task in its subtree: a dying container below it is reclaimed there.
        let orphan = &census.kubepods.as_ref().unwrap().orphan_pods[0].path;
        let rel = orphan.strip_prefix("/sys/fs/cgroup/memory/").unwrap();
        let (view, p) = plan_target(&fh, &o, &target(&format!("{rel}/0123abcd-gone"))).unwrap();
        assert_eq!(view.refused, None, "{view:#?}");
        assert_eq!(p.method, ReclaimMethod::ForceEmpty { cgroup: fh.memory.mount.local.join(rel) });
        assert_eq!(view.steps.len(), 1);
        assert_eq!(view.steps[0].writes, vec![FileWrite { file: format!("{orphan}/memory.force_empty"), value: "0".into() }]);
        // Under the QoS directory, live pods run tasks: force_empty would take their memory too.
        let why = plan_target(&fh, &o, &target("kubepods/besteffort/podgone")).unwrap().0.refused.expect("refused");
        assert!(why.contains("/sys/fs/cgroup/memory/kubepods/besteffort has live tasks") && why.contains("without --target"), "{why}");
        // A dying child of the root: force_empty is refused on the root memcg.
        let why = plan_target(&fh, &o, &target("gone-slice/gone")).unwrap().0.refused.expect("refused");
        assert!(why.contains("root memcg") && why.contains("EINVAL"), "{why}");
    }

    #[test]
    fn v2_target_reclaims_its_nearest_online_ancestor_on_5_19_and_later() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let (mut fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let o = ReclaimOptions { max_rounds: 2, step_bytes: 1 << 20, ..options(state.path(), vec![]) };
        let live = subtree_dirs(&fh.memory.mount.local).into_iter().find(|d| d != &fh.memory.mount.local).expect("a cgroup below the root");
        let rel = live.strip_prefix(&fh.memory.mount.local).unwrap().to_path_buf();
        let (view, p) = plan_target(&fh, &o, &ReclaimTarget { named: "x".into(), path: rel.join("gone/deeper") }).unwrap();
        assert_eq!(view.refused, None);
        let ReclaimMethod::MemoryReclaim { targets, rounds, step_bytes, .. } = &p.method else { panic!("{p:?}") };
        assert_eq!((targets.as_slice(), *rounds, *step_bytes), (std::slice::from_ref(&live), 2, 1 << 20));
        assert_eq!(view.steps.len(), 2);
        // Before 5.19 there is no memory.reclaim: refused, naming the version.
        fh.era.has_memory_reclaim = false;
        let why = plan_target(&fh, &o, &ReclaimTarget { named: "x".into(), path: rel }).unwrap().0.refused.expect("refused");
        assert!(why.contains("5.19+"), "{why}");
    }

    #[test]
    fn v1_is_refused_within_the_interval_of_any_stamp() {
        let f = cgleak_fixtures::debian_4_19_v1_dying();
        let (fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let peers = tempfile::tempdir().unwrap();
        let peer = peers.path().join(LAST_DROP_FILE);
        let o = options(state.path(), vec![peer.clone()]);
        // Dropped two hours ago: allowed again.
        fs::write(state.path().join(LAST_DROP_FILE), format!("{}", now_unix() - 7200.0)).unwrap();
        assert_eq!(plan(&fh, &o).unwrap().0.refused, None);
        // The agent dropped ten minutes ago: refused, naming its stamp and when the next is allowed.
        fs::write(&peer, format!("{}", now_unix() - 600.0)).unwrap();
        let why = plan(&fh, &o).unwrap().0.refused.expect("refused within the interval");
        assert!(why.starts_with("the page cache was dropped at ") && why.contains(&format!("recorded in {}", peer.display())), "{why}");
        assert!(why.contains("the next drop is allowed from") && why.ends_with("(--min-interval 1h)"), "{why}");
        // A shorter interval lets it through.
        let o = ReclaimOptions { min_interval: Duration::from_secs(300), ..o };
        assert_eq!(plan(&fh, &o).unwrap().0.refused, None);
    }

    #[test]
    fn v2_reclaims_the_parents_of_dying_children_in_rounds() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let (fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let o = ReclaimOptions { max_rounds: 3, step_bytes: 1 << 20, ..options(state.path(), vec![]) };
        let (view, p) = plan(&fh, &o).unwrap();
        let ReclaimMethod::MemoryReclaim { targets, step_bytes, rounds, root_stat } = &p.method else { panic!("{p:?}") };
        assert_eq!((*step_bytes, *rounds), (1 << 20, 3));
        assert_eq!(root_stat, &f.path("/sys/fs/cgroup/cgroup.stat"));
        // The fixture's dying memcgs sit under these two (own nr_dying_descendants above
        // their live children's).
        let want = [f.path("/sys/fs/cgroup/system.slice"), f.path("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice")];
        assert_eq!(targets.iter().collect::<BTreeSet<_>>(), want.iter().collect::<BTreeSet<_>>());
        assert_eq!(view.steps.len(), 3);
        for (i, st) in view.steps.iter().enumerate() {
            assert!(st.title.starts_with(&format!("round {}: write 1048576 bytes to memory.reclaim of 2 cgroups", i + 1)), "{}", st.title);
            let files: BTreeSet<&str> = st.writes.iter().map(|w| w.file.as_str()).collect();
            assert_eq!(files, BTreeSet::from(["/sys/fs/cgroup/system.slice/memory.reclaim", "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/memory.reclaim"]));
            assert!(st.writes.iter().all(|w| w.value == "1048576"));
        }
        assert!(view.notes.iter().any(|n| n == "rounds stop at the first that releases no dying memcg"));
    }

    /// A v2 reclaim run on the fixture: the rounds stop at the first that releases no dying
    /// memcg, the rest recorded as not needed. The dying count drops by 8 after the first
    /// write to memory.reclaim and never again.
    #[test]
    fn v2_rounds_stop_at_the_first_that_releases_nothing() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let (fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let o = ReclaimOptions { max_rounds: 4, step_bytes: 4096, ..options(state.path(), vec![]) };
        let (view, p) = plan(&fh, &o).unwrap();
        let journal = FixJournal::begin(state.path(), ACTION, journal_plan(&view, &p), Failpoints::none()).unwrap();
        let mark = f.path("/sys/fs/cgroup/system.slice/memory.reclaim");
        fs::write(&mark, "").unwrap();
        let mut rounds = 0;
        let mut count = || {
            if !fs::read_to_string(&mark).unwrap().is_empty() {
                fs::write(&mark, "").unwrap();
                rounds += 1;
            }
            Some(if rounds == 0 { 38 } else { 30 })
        };
        let report = run(journal, &AtomicBool::new(false), &mut |_| {}, &mut count).unwrap();
        assert_eq!(report.outcome, Some(Outcome::Completed), "{report:#?}");
        let statuses: Vec<_> = report.steps.iter().map(|s| s.status).collect();
        use super::super::StepStatus::{Done, Skipped};
        assert_eq!(statuses, [Done, Done, Skipped, Skipped], "{report:#?}");
        assert_eq!(report.steps[0].detail, "8 dying memcgs released (30 left)");
        assert_eq!(report.steps[2].detail, "not needed: round 2 released no dying memcg");
        assert_eq!(report.details["steps"][0]["released"], 8);
        assert_eq!(report.details["steps"][1]["released"], 0);
        // Each round wrote what memory.current allows, at most --step.
        assert_eq!(fs::read_to_string(f.path("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/memory.reclaim")).unwrap(), "4096");
    }

    #[test]
    fn v2_with_nothing_dying_or_without_memory_reclaim() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let (mut fh, _) = fix_host(f.root());
        let state = tempfile::tempdir().unwrap();
        let o = options(state.path(), vec![]);
        fh.dying = Some(0);
        let (view, _) = plan(&fh, &o).unwrap();
        assert!(view.steps.is_empty());
        assert_eq!(view.nothing_to_do.as_deref(), Some("no dying memcg to release"));
        // No cgroup holds dying children: nothing to write to.
        for d in cgroupfs::subtree_dirs(&f.path("/sys/fs/cgroup")) {
            let stat = d.join("cgroup.stat");
            if let Ok(t) = fs::read_to_string(&stat) {
                let t: String = t.lines().map(|l| if l.starts_with("nr_dying_descendants ") { "nr_dying_descendants 0\n".to_string() } else { format!("{l}\n") }).collect();
                fs::write(&stat, t).unwrap();
            }
        }
        let (fh, _) = fix_host(f.root());
        let (view, _) = plan(&fh, &o).unwrap();
        assert!(view.steps.is_empty());
        assert!(view.nothing_to_do.as_deref().unwrap().starts_with("no cgroup holds dying children"), "{view:#?}");
        // Before 5.19 there is no memory.reclaim: a usage error naming the release.
        fs::write(f.path("/proc/sys/kernel/osrelease"), "5.15.0-1-amd64\n").unwrap();
        let (fh, _) = fix_host(f.root());
        let e = plan(&fh, &o).unwrap_err();
        assert!(e.is_usage(), "{e:?}");
        assert_eq!(e.to_string(), "memory.reclaim needs 5.19+; 5.15.0-1-amd64 has none");
    }

    fn options(state_dir: &Path, peers: Vec<PathBuf>) -> ReclaimOptions {
        ReclaimOptions { slab: false, min_interval: DEFAULT_MIN_INTERVAL, step_bytes: DEFAULT_STEP_BYTES, max_rounds: DEFAULT_MAX_ROUNDS, state_dir: state_dir.to_path_buf(), peer_stamps: peers }
    }

    #[test]
    fn stamps_are_read_bounded_and_garbage_is_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s");
        assert_eq!(read_stamp(&p), Stamp::Missing);
        fs::write(&p, "1700000000.5\n").unwrap();
        assert_eq!(read_stamp(&p), Stamp::At(1_700_000_000.5));
        for bad in ["soon", "", "-5", "NaN", "inf"] {
            fs::write(&p, bad).unwrap();
            assert!(matches!(read_stamp(&p), Stamp::Unreadable(ref w) if w.contains("not a time") && w.contains(&p.display().to_string())), "{bad:?}");
        }
        fs::write(&p, vec![b'1'; 4096]).unwrap();
        assert!(matches!(read_stamp(&p), Stamp::Unreadable(ref w) if w.contains("longer than")));
        fs::write(&p, format!("{}", now_unix() + 86400.0)).unwrap();
        assert!(matches!(read_stamp(&p), Stamp::Unreadable(ref w) if w.contains("in the future")));
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_stamp(&p), Stamp::Unreadable(_)));
        // A directory where the stamp should be is not one either.
        assert!(matches!(read_stamp(t.path()), Stamp::Unreadable(_)));
    }

    #[test]
    fn the_latest_stamp_of_own_and_peers_sets_the_limit() {
        let own = tempfile::tempdir().unwrap();
        let peer_dir = tempfile::tempdir().unwrap();
        let peer = peer_dir.path().join(LAST_DROP_FILE);
        let missing = peer_dir.path().join("none");
        let o = options(own.path(), vec![peer.clone(), missing]);
        assert_eq!(rate_limit(&o), RateLimit { last: None, next_allowed: None, notes: vec![] });

        let now = now_unix();
        fs::write(own.path().join(LAST_DROP_FILE), format!("{}", now - 7200.0)).unwrap();
        let l = rate_limit(&o);
        assert_eq!(l.last.as_ref().map(|(_, p)| p.clone()), Some(own.path().join(LAST_DROP_FILE)));
        assert!(l.next_allowed.unwrap() < now, "{l:?}");

        // The peer dropped ten minutes ago: that drop is the one that counts.
        fs::write(&peer, format!("{}", now - 600.0)).unwrap();
        let l = rate_limit(&o);
        assert_eq!(l.last.as_ref().map(|(_, p)| p.clone()), Some(peer.clone()));
        assert!((l.next_allowed.unwrap() - (now - 600.0 + 3600.0)).abs() < 1e-6, "{l:?}");

        // A garbage peer stamp is ignored with a note naming it; the own stamp still counts.
        fs::write(&peer, "garbage").unwrap();
        let l = rate_limit(&o);
        assert_eq!(l.last.as_ref().map(|(_, p)| p.clone()), Some(own.path().join(LAST_DROP_FILE)));
        assert_eq!(l.notes.len(), 1, "{l:?}");
        assert!(l.notes[0].contains(&peer.display().to_string()) && l.notes[0].contains("ignored"), "{l:?}");
    }

    #[test]
    fn the_fixer_and_the_agent_read_each_others_stamps_where_the_layout_puts_them() {
        let host = HostPaths::new("/host");
        let s = agent_stamps(&host, Path::new("/host/var/lib/cgleak/fix"));
        assert_eq!(s, vec![PathBuf::from("/host/var/lib/cgleak/agent/reclaim/reclaim-last-drop"), PathBuf::from("/host/var/lib/cgleak/fix/reclaim/reclaim-last-drop")]);
        let s = agent_stamps(&HostPaths::new("/"), Path::new("/var/lib/cgleak/agent"));
        assert_eq!(s, vec![PathBuf::from("/var/lib/cgleak/agent/reclaim/reclaim-last-drop")]);
        let s = fixer_stamps(&HostPaths::new("/"), Path::new("/var/lib/cgleak/agent"));
        assert_eq!(
            s,
            vec![PathBuf::from("/var/lib/cgleak/fix/reclaim-last-drop"), PathBuf::from("/var/lib/cgleak/reclaim-last-drop"), PathBuf::from("/var/lib/cgleak/agent/reclaim-last-drop")]
        );
    }

    #[test]
    fn a_stamp_is_written_whole_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("precious");
        fs::write(&target, "keep").unwrap();
        let stamp = t.path().join(LAST_DROP_FILE);
        std::os::unix::fs::symlink(&target, &stamp).unwrap();
        // The link is replaced by the stamp (renamed over it); what it pointed to stays.
        write_stamp(&stamp).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(matches!(read_stamp(&stamp), Stamp::At(_)));
        std::os::unix::fs::symlink(&target, t.path().join("lnk")).unwrap();
        assert!(matches!(read_stamp(&t.path().join("lnk")), Stamp::Unreadable(_)));
    }
}

//! reclaim: release dying memcgs by reclaiming the pages that pin them (KERNEL-FACTS
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
//! directory, written before the drop so a crash still counts).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_readers::cgroupfs::{self, read_flat_keyed};

use super::journal::{format_unix, now_unix, FixJournal, Outcome};
use super::{plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepRunner};
use crate::cgroup_tree::subtree_dirs;

pub const ACTION: &str = "reclaim";
/// The time of the last drop_caches, in the state directory.
pub const LAST_DROP_FILE: &str = "reclaim-last-drop";
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReclaimMethod {
    /// drop_caches values to write, in order.
    DropCaches { file: PathBuf, values: Vec<u8>, stamp: PathBuf },
    /// memory.reclaim of these cgroups (local paths), in rounds.
    MemoryReclaim { targets: Vec<PathBuf>, step_bytes: u64, rounds: u32, root_stat: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimPlan {
    pub method: ReclaimMethod,
}

/// When the last drop_caches happened, if the stamp is there.
pub fn last_drop(state_dir: &Path) -> Option<f64> {
    fs::read_to_string(state_dir.join(LAST_DROP_FILE)).ok()?.trim().parse().ok()
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
        let children: u64 = fs::read_dir(&d)
            .map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| dying(&e.path())).sum())
            .unwrap_or(0);
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
        if let Some(last) = last_drop(&o.state_dir) {
            let next = last + o.min_interval.as_secs_f64();
            if now_unix() < next {
                view.refused = Some(format!(
                    "the page cache was dropped at {} (by cgleak): the next drop is allowed from {} (--min-interval {})",
                    format_unix(last),
                    format_unix(next),
                    crate::human_duration(o.min_interval)
                ));
            }
        }
        ReclaimMethod::DropCaches { file, values, stamp }
    } else {
        if !fh.era.has_memory_reclaim {
            return Err(FixError::Usage(format!("memory.reclaim needs 5.19+; {} has none", fh.era.release.raw)));
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

/// Dying memcgs once the count holds still (or after [`SETTLE_MAX`]).
fn settled(count: &mut dyn FnMut() -> Option<u64>) -> Option<u64> {
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

fn write_value(file: &Path, value: &str) -> io::Result<()> {
    fs::write(file, value)
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
            r.skip(step, format!("not needed: {why}")).map_err(FixError::Runtime)?;
            continue;
        }
        let res = r.run(step, |_| {
            match &plan.method {
                ReclaimMethod::DropCaches { file, values, stamp } => {
                    let value = values[(step - 1) as usize];
                    // The stamp first: a crash during the drop still counts for the rate limit.
                    if let Some(d) = stamp.parent() {
                        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
                    }
                    fs::write(stamp, format!("{}\n", now_unix())).map_err(|e| format!("write {}: {e}", stamp.display()))?;
                    if value == 1 {
                        rustix::fs::sync();
                    }
                    write_value(file, &value.to_string()).map_err(|e| format!("write {value} to {}: {e}", file.display()))?;
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

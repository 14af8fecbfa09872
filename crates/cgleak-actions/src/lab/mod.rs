//! Lab: a simulated Kubernetes node that makes dying memcgs, for demos, benchmarks and tests.
//!
//! It builds a kubelet-style tree with the cgroupfs driver under a scratch parent
//! `cgleak-lab-<pid>` at the memory hierarchy's root (the simulated kubelet's
//! --cgroup-root): `kubepods/{pod<uid>, burstable/pod<uid>, besteffort/pod<uid>}/<64-hex id>`,
//! each container a real one run by runc or crun (`linux.cgroupsPath`, so the runtime
//! makes the path in every hierarchy it uses) on a shared read-only busybox root. Each
//! container writes page cache to a directory of its own on a disk filesystem; when
//! churn deletes a pod, that page cache stays charged to the deleted memcgs, which
//! become dying (docs/kernel-facts.md section 4). A fake kubelet root dir with `pods/<uid>`
//! per live pod lets `cgleak status --kubelet-root-dir` tell pods from orphans.
//!
//! Safety: the lab refuses to run beside a kubelet (unless allowed), never takes the
//! host past [`budget::HOST_MEMCG_CAP`] memcgs live and dying (checked at start, and
//! before every churned pod: it releases the oldest kept data and waits when the
//! host gets near), drives the runtime with a state dir of its own, and removes all it
//! made on every way out (see [`node::Node`]'s Drop), panics included.

pub mod budget;
pub mod node;
pub mod rootfs;
pub mod runtime;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use cgleak_model::census::take_census;
use cgleak_readers::kubelet::running_kubelet;
use cgleak_readers::mountinfo::{CgroupLayout, MemoryHierarchy};
use cgleak_readers::HostPaths;

use budget::{MemcgCount, OverCap};
pub use node::{LabPaths, TeardownReport};
use node::{Node, NodeSettings};
pub use runtime::{Runtime, RuntimeKind};

/// Counts the host's memcgs; a census in real use ([`census_counter`]).
pub type MemcgCounter = Box<dyn FnMut() -> Result<MemcgCount, String>>;

/// The default name of the scratch parent: `cgleak-lab-<pid>`.
pub fn scratch_name() -> String {
    format!("cgleak-lab-{}", std::process::id())
}

/// Live and dying memcgs from a full census of `host` (cgleak_model::census).
pub fn census_counter(host: HostPaths) -> MemcgCounter {
    Box::new(move || {
        let c = take_census(&host).map_err(|e| e.to_string())?;
        Ok(MemcgCount { live: c.memcg.live, dying: c.memcg.dying, dying_source: c.memcg.dying_source })
    })
}

/// What to simulate and where.
pub struct LabOptions {
    /// Pods kept running (steady state).
    pub pods: u32,
    pub containers_per_pod: u32,
    /// Churn: delete the oldest pod and create a new one this often a minute; 0: none.
    pub pods_per_minute: u32,
    /// How long to run once the pods are up; None: until cancelled.
    pub duration: Option<Duration>,
    /// MiB of page cache each container writes before it sleeps.
    pub page_cache_mib: u32,
    /// Data of deleted pods kept (so their memcgs stay dying) up to this many MiB.
    pub keep_data_mib: u64,
    /// Every Nth deleted pod leaves its (taskless) pod cgroup behind, unknown to the kubelet.
    pub orphan_every: Option<u32>,
    pub runtime: Runtime,
    /// A statically linked busybox: the containers' whole root filesystem.
    pub busybox: PathBuf,
    /// Created by the lab (or given empty) and removed at the end.
    pub state_dir: PathBuf,
    /// Where the containers write page cache: inside `state_dir`, or a directory the lab
    /// creates. Must be on a disk filesystem.
    pub data_dir: PathBuf,
    /// Name of the scratch parent made in the hierarchies ([`scratch_name`]).
    pub scratch: String,
    pub layout: CgroupLayout,
    pub memory: MemoryHierarchy,
    /// For the kubelet check.
    pub host: HostPaths,
    /// Run even though a kubelet runs on this host.
    pub allow_kubelet: bool,
    pub count_memcgs: MemcgCounter,
    /// How often memcgs are counted while the lab runs.
    pub census_every: Duration,
    /// Set to stop; everything is torn down then.
    pub cancel: Arc<AtomicBool>,
}

/// Running totals, sent after every pod created or deleted and every census.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LabCounters {
    pub pods_live: u32,
    pub containers_live: u32,
    pub pods_created: u64,
    /// Pods deleted by churn (each leaves dying memcgs while its data is kept).
    pub pods_deleted: u64,
    /// Orphaned pod cgroups made, and kept now.
    pub orphans_made: u64,
    pub orphans_kept: u32,
    /// Host-wide memcgs at the last census.
    pub memcgs_live: Option<u64>,
    pub memcgs_dying: Option<u64>,
    /// Churn steps skipped to keep the host under the memcg cap.
    pub throttled: u64,
    /// The churn phase has begun (all initial pods are up).
    pub churning: bool,
}

/// Progress events, in order: `Ready`, then `Counters` many times, then `TearingDown`, then `Settling`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabProgress {
    /// The tree, state dir and rootfs exist; pods come next.
    Ready(LabPaths),
    Counters(LabCounters),
    /// `done` of `total` containers deleted (the cgroups and directories go after the last).
    TearingDown {
        done: u32,
        total: u32,
    },
    /// All removed; counting memcgs while the kernel frees the ones that were dying.
    Settling,
}

/// The settings a lab ran with, as reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabSettings {
    pub pods: u32,
    pub containers_per_pod: u32,
    pub pods_per_minute: u32,
    pub duration_secs: Option<f64>,
    pub page_cache_mib: u32,
    pub keep_data_mib: u64,
    pub orphan_every: Option<u32>,
    pub runtime: RuntimeKind,
    pub runtime_path: String,
}

/// What the censuses saw over the run (host-wide figures).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemcgObservations {
    pub censuses: u64,
    pub dying_source: &'static str,
    pub live_at_start: u64,
    pub dying_at_start: Option<u64>,
    pub live_max: u64,
    pub dying_max: Option<u64>,
    /// Last census before teardown.
    pub live_at_end: u64,
    pub dying_at_end: Option<u64>,
    /// Right after teardown (freeing the data lets dying memcgs go; the kernel frees them asynchronously).
    pub live_after_teardown: Option<u64>,
    pub dying_after_teardown: Option<u64>,
}

impl MemcgObservations {
    fn observe(&mut self, c: &MemcgCount) {
        if self.censuses == 0 {
            self.live_at_start = c.live;
            self.dying_at_start = c.dying;
            self.dying_source = c.dying_source;
        }
        self.censuses += 1;
        self.live_max = self.live_max.max(c.live);
        self.dying_max = match (self.dying_max, c.dying) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.live_at_end = c.live;
        self.dying_at_end = c.dying;
    }
}

/// The outcome of a lab that got as far as claiming its names.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabReport {
    pub paths: LabPaths,
    pub settings: LabSettings,
    pub memory_version: u8,
    pub pods_created: u64,
    pub containers_created: u64,
    /// Pods deleted by churn: one per churn step.
    pub pods_deleted: u64,
    /// Churn steps per minute actually achieved.
    pub churn_rate_per_minute: f64,
    pub orphans_made: u64,
    /// Live at the end, before teardown.
    pub pods_live_at_end: u32,
    pub throttled: u64,
    pub memcgs: MemcgObservations,
    /// Stopped through the cancel flag (SIGINT, SIGTERM).
    pub interrupted: bool,
    /// The error that ended the lab early, if one did.
    pub error: Option<String>,
    /// Things that went wrong without ending the lab (a failed census, a failed delete retried at teardown).
    pub warnings: Vec<String>,
    /// From the first pod to the start of teardown.
    pub elapsed_ms: u64,
    /// The churn phase alone.
    pub churn_ms: u64,
    pub teardown_ms: u64,
    pub teardown: TeardownReport,
    /// Ran to its end (or was stopped), and everything is gone.
    pub success: bool,
}

/// Failures before the lab made any pod. Whatever was made is removed before they return.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab settings: {0}")]
    Invalid(String),
    #[error("a kubelet is running on this host (pid {pid}: {command}): lab pods beside its own would confuse it and anyone reading the node")]
    KubeletRunning { pid: u32, command: String },
    #[error("{0}")]
    OverCap(OverCap),
    #[error("cannot count this host's memcgs: {0}")]
    Census(String),
    #[error("memory cgroup version {0}: expected 1 or 2")]
    UnsupportedVersion(u8),
    #[error("cgroup v2: \"memory\" is not in {}, so the lab's cgroups would get no memcg", .path.display())]
    MemoryNotDelegated { path: PathBuf },
    #[error("{} already exists ({what}): the lab uses only names it made", .path.display())]
    AlreadyExists { path: PathBuf, what: &'static str },
    #[error("{} is on {fs}: page cache there is shmem, not the disk page cache that keeps a deleted pod's memcg dying", .path.display())]
    DataOnMemoryFs { path: PathBuf, fs: &'static str },
    #[error("{} has {available_mib} MiB free; the lab may write up to {needed_mib} MiB there", .path.display())]
    NoSpace { path: PathBuf, needed_mib: u64, available_mib: u64 },
    #[error("setting up the lab: {what}: {source}")]
    SetUp {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// A [`LabError::SetUp`]: `what` failed with `source`.
fn setup(what: String, source: io::Error) -> LabError {
    LabError::SetUp { what, source }
}

impl LabError {
    /// EACCES, EPERM or EROFS while setting up: a lack of rights, not a fault (exit 77).
    pub fn is_permission(&self) -> bool {
        match self {
            LabError::SetUp { source, .. } => source.raw_os_error().is_some_and(cgleak_readers::errno::is_not_permitted),
            _ => false,
        }
    }
}

impl LabOptions {
    /// The most memcgs this lab has at once (the 5,000 cap's arithmetic).
    pub fn memcgs_max(&self) -> u64 {
        let deletions = budget::churn_deletions(self.pods_per_minute, self.duration.map(|d| d.as_secs_f64()));
        budget::lab_memcgs_max(self.pods, self.containers_per_pod, budget::max_orphans(self.orphan_every, deletions))
    }

    /// MiB the containers may write: the live pods' data plus the data kept of deleted ones.
    pub fn data_mib_max(&self) -> u64 {
        let live = u64::from(self.pods) * u64::from(self.containers_per_pod) * u64::from(self.page_cache_mib);
        let kept = if self.page_cache_mib == 0 || self.pods_per_minute == 0 { 0 } else { self.keep_data_mib };
        live + kept
    }

    fn settings(&self) -> LabSettings {
        LabSettings {
            pods: self.pods,
            containers_per_pod: self.containers_per_pod,
            pods_per_minute: self.pods_per_minute,
            duration_secs: self.duration.map(|d| d.as_secs_f64()),
            page_cache_mib: self.page_cache_mib,
            keep_data_mib: self.keep_data_mib,
            orphan_every: self.orphan_every,
            runtime: self.runtime.kind,
            runtime_path: self.runtime.path.display().to_string(),
        }
    }
}

/// Everything checked before anything is made.
fn preflight(opts: &mut LabOptions) -> Result<MemcgCount, LabError> {
    if opts.pods == 0 || opts.containers_per_pod == 0 {
        return Err(LabError::Invalid("a lab needs at least one pod of at least one container".into()));
    }
    if opts.orphan_every == Some(0) {
        return Err(LabError::Invalid("orphan_every must be at least 1".into()));
    }
    if !opts.allow_kubelet {
        if let Some((pid, argv)) = running_kubelet(&opts.host) {
            let command = if argv.is_empty() { "kubelet".to_string() } else { argv.join(" ") };
            return Err(LabError::KubeletRunning { pid, command });
        }
    }
    match opts.memory.version {
        1 => {}
        2 => {
            let f = opts.memory.mount.local.join("cgroup.subtree_control");
            let text = cgleak_readers::cgroupfs::read_file(&f).map_err(|e| setup(format!("read {}", f.display()), io::Error::other(e.to_string())))?;
            if !text.split_whitespace().any(|c| c == "memory") {
                return Err(LabError::MemoryNotDelegated {
                    path: opts.memory.mount.mount_point.join("cgroup.subtree_control"),
                });
            }
        }
        v => return Err(LabError::UnsupportedVersion(v)),
    }
    for dir in [&opts.state_dir, &opts.data_dir] {
        let on = rootfs::pseudo_fs(dir).map_err(|e| setup(format!("statfs {}", dir.display()), e))?;
        if let Some(fs) = on {
            return Err(LabError::Invalid(format!(
                "{} is on {fs}: the lab's files go to a disk filesystem",
                dir.display()
            )));
        }
    }
    if let Some(fs) =
        rootfs::memory_backed_fs(&opts.data_dir).map_err(|e| setup(format!("statfs {}", opts.data_dir.display()), e))?
    {
        return Err(LabError::DataOnMemoryFs { path: opts.data_dir.clone(), fs });
    }
    let needed_mib = opts.data_mib_max() + 64; // + the rootfs, bundles and some slack
    let available_mib = rootfs::available_bytes(&opts.data_dir)
        .map_err(|e| setup(format!("statvfs {}", opts.data_dir.display()), e))?
        >> 20;
    if available_mib < needed_mib {
        return Err(LabError::NoSpace { path: rootfs::nearest_existing(&opts.data_dir), needed_mib, available_mib });
    }
    let count = (opts.count_memcgs)().map_err(LabError::Census)?;
    budget::check_cap(&count, opts.memcgs_max()).map_err(LabError::OverCap)?;
    Ok(count)
}

fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Longest sleep between looks at the cancel flag.
const TICK: Duration = Duration::from_millis(50);
/// Falling further behind the churn schedule than this many steps drops the backlog.
const MAX_CHURN_BACKLOG: u32 = 10;

/// Run the lab until its duration ends or `cancel` is set, then tear it down.
pub fn run_lab(mut opts: LabOptions, progress: &mut dyn FnMut(LabProgress)) -> Result<LabReport, LabError> {
    let first = preflight(&mut opts)?;
    let mut hierarchies: Vec<PathBuf> = vec![opts.memory.mount.local.clone()];
    hierarchies.extend(opts.layout.all().map(|m| m.local.clone()).filter(|p| *p != opts.memory.mount.local));
    let mut node = Node::new(
        NodeSettings {
            runtime: opts.runtime.clone(),
            scratch: opts.scratch.clone(),
            hierarchies,
            memory_host: opts.memory.mount.mount_point.clone(),
            memory_version: opts.memory.version,
            state_dir: opts.state_dir.clone(),
            data_dir: opts.data_dir.clone(),
            containers_per_pod: opts.containers_per_pod,
            page_cache_mib: opts.page_cache_mib,
            keep_data_mib: opts.keep_data_mib,
        },
        seed(),
    );
    // On error, dropping `node` removes whatever was made.
    node.claim()?;
    node.set_up(&opts.busybox)?;

    let mut lab = Lab {
        counters: LabCounters::default(),
        memcgs: MemcgObservations::default(),
        containers_created: 0,
        since_census: 0,
        last: first,
    };
    lab.memcgs.observe(&first);
    lab.counters.memcgs_live = Some(first.live);
    lab.counters.memcgs_dying = first.dying;
    progress(LabProgress::Ready(node.paths()));

    let started = Instant::now();
    let per_pod = budget::memcgs_per_pod(opts.containers_per_pod);
    let mut error: Option<String> = None;
    let cancelled = |o: &LabOptions| o.cancel.load(Ordering::SeqCst);
    let mut next_census = Instant::now() + opts.census_every;

    // The steady state: all pods up before the churn begins.
    while node.pods_live() < opts.pods && !cancelled(&opts) {
        if let Err(e) = lab.create_pod(&mut node, per_pod, opts.containers_per_pod, progress) {
            error = Some(e);
            break;
        }
        if Instant::now() >= next_census {
            lab.census(&mut opts, &mut node, progress);
            next_census = Instant::now() + opts.census_every;
        }
    }

    let churn_started = Instant::now();
    let churned = error.is_none() && !cancelled(&opts);
    if churned {
        lab.counters.churning = true;
        lab.census(&mut opts, &mut node, progress);
        next_census = Instant::now() + opts.census_every;
        let deadline = opts.duration.map(|d| churn_started + d);
        let interval = (opts.pods_per_minute > 0).then(|| Duration::from_secs(60) / opts.pods_per_minute);
        let mut next_churn = interval.map(|i| churn_started + i);
        loop {
            if cancelled(&opts) {
                break;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            if now >= next_census {
                lab.census(&mut opts, &mut node, progress);
                next_census = now + opts.census_every;
                continue;
            }
            if let (Some(due), Some(interval)) = (next_churn, interval) {
                if now >= due {
                    next_churn =
                        Some(if now > due + interval * MAX_CHURN_BACKLOG { now + interval } else { due + interval });
                    if !budget::room_for_pod(lab.in_use(&node, per_pod), per_pod) {
                        // Near the cap: let the oldest kept page cache go, so its memcgs can be freed, and wait.
                        lab.counters.throttled += 1;
                        node.release_oldest_data();
                        progress(LabProgress::Counters(lab.counters.clone()));
                        continue;
                    }
                    let orphan = opts
                        .orphan_every
                        .is_some_and(|n| (lab.counters.pods_deleted + 1).checked_rem(u64::from(n)) == Some(0));
                    if node.delete_oldest_pod(orphan) {
                        lab.counters.pods_deleted += 1;
                        if orphan {
                            lab.counters.orphans_made += 1;
                        }
                    }
                    if let Err(e) = lab.create_pod(&mut node, per_pod, opts.containers_per_pod, progress) {
                        error = Some(e);
                        break;
                    }
                    continue;
                }
            }
            let mut wake = next_census;
            if let Some(d) = next_churn {
                wake = wake.min(d);
            }
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            thread::sleep(wake.saturating_duration_since(Instant::now()).min(TICK));
        }
    }
    let churn_ms = if churned { ms(churn_started.elapsed()) } else { 0 };
    let elapsed_ms = ms(started.elapsed());
    let pods_live_at_end = node.pods_live();
    // The last figures with the lab at its full size; a failed census leaves the earlier ones.
    lab.census(&mut opts, &mut node, progress);

    let teardown_started = Instant::now();
    let teardown = node.tear_down(progress);
    let teardown_ms = ms(teardown_started.elapsed());
    progress(LabProgress::Settling);
    settle_after_teardown(&mut opts, &mut lab.memcgs);
    let interrupted = cancelled(&opts);
    let churn_rate_per_minute =
        if churn_ms > 0 { lab.counters.pods_deleted as f64 * 60_000.0 / churn_ms as f64 } else { 0.0 };
    let success = error.is_none() && teardown.leftover.is_empty();
    Ok(LabReport {
        paths: node.paths(),
        settings: opts.settings(),
        memory_version: opts.memory.version,
        pods_created: lab.counters.pods_created,
        containers_created: lab.containers_created,
        pods_deleted: lab.counters.pods_deleted,
        churn_rate_per_minute: (churn_rate_per_minute * 10.0).round() / 10.0,
        orphans_made: lab.counters.orphans_made,
        pods_live_at_end,
        throttled: lab.counters.throttled,
        memcgs: lab.memcgs,
        interrupted,
        error,
        warnings: std::mem::take(&mut node.warnings),
        elapsed_ms,
        churn_ms,
        teardown_ms,
        teardown,
        success,
    })
}

/// How long, at most, the lab waits after teardown for the kernel to free the memcgs
/// whose page cache went with the data, and how often it looks.
const SETTLE_FOR: Duration = Duration::from_secs(3);
const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// Count the memcgs after teardown, once the kernel has freed what it is going to free
/// (dying memcgs are released asynchronously once their pages are gone): until dying is
/// back to where it started, holds still for a second, or [`SETTLE_FOR`] has passed.
fn settle_after_teardown(opts: &mut LabOptions, m: &mut MemcgObservations) {
    let until = Instant::now() + SETTLE_FOR;
    let mut same = 0;
    let mut last: Option<MemcgCount> = None;
    while let Ok(c) = (opts.count_memcgs)() {
        m.live_after_teardown = Some(c.live);
        m.dying_after_teardown = c.dying;
        let back = match (c.dying, m.dying_at_start) {
            (Some(d), Some(start)) => d <= start,
            _ => true, // nothing to wait for
        };
        same = if last.is_some_and(|l| l == c) { same + 1 } else { 0 };
        if back || same >= 4 || Instant::now() >= until {
            return;
        }
        last = Some(c);
        thread::sleep(SETTLE_EVERY);
    }
}

/// The running lab's bookkeeping.
struct Lab {
    counters: LabCounters,
    memcgs: MemcgObservations,
    containers_created: u64,
    /// Memcgs made since the last census (not in its figures yet).
    since_census: u64,
    last: MemcgCount,
}

impl Lab {
    fn refresh(&mut self, node: &Node) {
        self.counters.pods_live = node.pods_live();
        self.counters.containers_live = node.containers_live();
        self.counters.orphans_kept = node.orphans_kept();
    }

    /// Create a pod and count it, and its containers, whether they all started or not.
    fn create_pod(
        &mut self,
        node: &mut Node,
        per_pod: u64,
        containers_per_pod: u32,
        progress: &mut dyn FnMut(LabProgress),
    ) -> Result<(), String> {
        let r = node.create_pod();
        self.counters.pods_created += 1;
        self.since_census += per_pod;
        self.containers_created += u64::from(containers_per_pod);
        self.refresh(node);
        progress(LabProgress::Counters(self.counters.clone()));
        r
    }

    /// Count the host's memcgs (a failure becomes a warning) and send the counters.
    fn census(&mut self, opts: &mut LabOptions, node: &mut Node, progress: &mut dyn FnMut(LabProgress)) {
        match (opts.count_memcgs)() {
            Ok(c) => {
                self.memcgs.observe(&c);
                self.last = c;
                self.since_census = 0;
                self.counters.memcgs_live = Some(c.live);
                self.counters.memcgs_dying = c.dying;
            }
            Err(e) => {
                // Keep one of each: a census failing every 2 s would flood the report.
                if !node.warnings.contains(&e) {
                    node.warnings.push(e);
                }
            }
        }
        self.refresh(node);
        progress(LabProgress::Counters(self.counters.clone()));
    }

    /// Memcgs live and dying now, as best known: the last census, what the lab made
    /// since, and (where the kernel cannot count dying memcgs) the deleted pods whose
    /// data still pins theirs.
    fn in_use(&self, node: &Node, per_pod: u64) -> u64 {
        let dying = self.last.dying.unwrap_or(node.retained_pods() * per_pod);
        self.last.live + dying + self.since_census
    }
}

/// The lab's state dir when none is given: `/run/cgleak-lab-<pid>` on `host`.
pub fn default_state_dir(host: &HostPaths) -> PathBuf {
    host.host(Path::new("/run").join(scratch_name()))
}

/// Where page cache goes when the state dir is on a memory-backed filesystem:
/// `/var/tmp/cgleak-lab-<pid>` on `host`.
pub fn fallback_data_dir(host: &HostPaths) -> PathBuf {
    host.host(Path::new("/var/tmp").join(scratch_name()))
}

#[cfg(test)]
mod tests;

//! The memcg census behind `cgleak status`: live, dying, IDs in use, headroom,
//! kmem-active cgroups, slab evidence and the kubepods tree.

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use serde::Serialize;

use cgleak_readers::cgroupfs::{self, CgroupVisitor, ChildDir, WalkCache, WalkDir, WalkStats};
use cgleak_readers::mountinfo::{CgroupLayout, CgroupMode, MemoryHierarchy};
use cgleak_readers::procfs::{self, SwapInfo};
use cgleak_readers::slab::{self, SlabDeadSummary, SlabNamingSeen};
use cgleak_readers::{kubelet, HostPaths, ReadError};

use crate::era::{DyingCountMethod, KernelEra};
use crate::kubepods::{KubepodsCollector, KubepodsSummary, OrphanCharge, OrphanPod, QosClass, QosCounts};

/// MEM_CGROUP_ID_MAX (include/linux/memcontrol.h; mm/memcontrol.c on 6.12+). The root uses one.
pub const MEMCG_ID_LIMIT: u64 = 65535;

/// Above this many memcgs, kmem activity is read from a sample, not from every cgroup.
pub const KMEM_SAMPLE_SIZE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Exact,
    Estimate,
    LowerBound,
    Unknown,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Exact => "exact",
            Confidence::Estimate => "estimate",
            Confidence::LowerBound => "lower_bound",
            Confidence::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelSection {
    pub release: String,
    pub era: &'static str,
    /// False when the release was not recognised and the era is the nearest safe guess.
    pub era_exact: bool,
    pub dying_hold_ids: bool,
    pub mkdir_errno_when_full: &'static str,
    pub kmem_opt_in: bool,
    pub nokmem_supported: bool,
    /// `cgroup.memory=nokmem` is on the running kernel's command line (honoured or not: see
    /// `kmem_accounting`).
    pub nokmem_set: bool,
    pub kmem_accounting: KmemAccounting,
    pub notes: Vec<String>,
}

/// Whether memcgs account kernel memory on this host (facts §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KmemAccounting {
    /// v1 on 3.10, el7 and 4.0-4.5: off until a write to memory.kmem.limit_in_bytes switches it
    /// on for one cgroup (kubelet 1.8-1.21, runc before rc94), inherited by its children.
    OptIn,
    /// v1 4.6+ and every v2 kernel: on for every memcg.
    OnForEvery,
    /// `cgroup.memory=nokmem` on a kernel that honours it (upstream 4.5+, el7 3.10.0-1062+):
    /// off for every memcg, kmem limit writes ignored.
    OffNokmem,
}

impl KmemAccounting {
    pub fn of(era: &KernelEra, memory_version: u8, nokmem_set: bool) -> KmemAccounting {
        if nokmem_set && era.nokmem_supported {
            KmemAccounting::OffNokmem
        } else if memory_version == 1 && era.kmem_opt_in {
            KmemAccounting::OptIn
        } else {
            KmemAccounting::OnForEvery
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KmemAccounting::OptIn => "opt_in",
            KmemAccounting::OnForEvery => "on_for_every",
            KmemAccounting::OffNokmem => "off_nokmem",
        }
    }

    /// In words, for sentences about `version` (the memory hierarchy's cgroup version).
    pub fn describe(self, era: &KernelEra, memory_version: u8) -> String {
        match self {
            KmemAccounting::OptIn => "opt-in: off until kubelet or runc switches it on per cgroup by writing a kmem limit, then inherited by children".into(),
            KmemAccounting::OffNokmem => "off for every memcg (cgroup.memory=nokmem)".into(),
            KmemAccounting::OnForEvery if memory_version == 2 => "on for every memcg (cgroup v2 has no per-cgroup switch)".into(),
            KmemAccounting::OnForEvery => format!("on for every v1 memcg on {} (4.6+: not a per-cgroup switch)", era.id.as_str()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MountSummary {
    pub version: u8,
    pub mount_point: String,
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CgroupSection {
    pub mode: CgroupMode,
    /// Which cgroup version carries the memory controller.
    pub memory_version: u8,
    /// The memory hierarchy's mount point, as the host names it.
    pub memory_root: String,
    pub mounts: Vec<MountSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KmemSample {
    pub sampled: u64,
    pub of: u64,
    pub active_in_sample: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemcgSection {
    pub live: u64,
    /// How live memcgs were counted: `directories` (v1: every directory of the hierarchy),
    /// `nr_subsys_memory` (v2 6.12+: the root's cgroup.stat), `subtree_control` (v2: the root plus
    /// every child of a cgroup with +memory in cgroup.subtree_control).
    pub live_source: &'static str,
    pub dying: Option<u64>,
    pub dying_source: &'static str,
    /// Where dying memcgs cannot be counted (3.10): a lower bound from slab caches whose
    /// cgroup is gone (each pins its memcg, docs/kernel-facts.md section 2). Null elsewhere.
    pub dying_at_least: Option<u64>,
    pub id_limit: u64,
    pub ids_in_use: Option<u64>,
    pub ids_in_use_confidence: Confidence,
    pub ids_in_use_reason: String,
    pub headroom: Option<u64>,
    pub kmem_active: Option<u64>,
    /// Why kmem_active is null, or that it was extrapolated from a sample.
    pub kmem_active_note: Option<String>,
    pub kmem_active_sample: Option<KmemSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlabSection {
    pub readable: bool,
    pub naming: SlabNamingSeen,
    #[serde(flatten)]
    pub summary: SlabDeadSummary,
}

/// The whole census, as `status --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Census {
    pub kernel: KernelSection,
    pub cgroup: CgroupSection,
    pub memcg: MemcgSection,
    pub slab: SlabSection,
    pub swap: SwapInfo,
    pub kubepods: Option<KubepodsSummary>,
    /// Directories that vanished while walked (normal churn, not an error).
    pub walk_gone: u64,
    #[serde(skip)]
    pub era: KernelEra,
}

/// Why a census could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    /// A host file could not be read (the error names it).
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "no memory cgroup controller is mounted ({} lists no cgroup v1 hierarchy with memory, nor a cgroup2 mount whose cgroup.controllers has memory)",
        .mountinfo.display()
    )]
    NoMemoryController { mountinfo: PathBuf },
}

impl CensusError {
    pub fn read_error(&self) -> Option<&ReadError> {
        match self {
            CensusError::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// Told of every memcg a census walks (the root excepted: it never dies), for the agent's
/// memory of memcgs: its inode and where it is (its parent's inode and path from the
/// hierarchy's root, and its name). On v2, only cgroups whose parent enables the memory controller.
pub trait MemcgObserver {
    fn memcg(&mut self, inode: u64, parent_inode: u64, parent: &[CString], name: &CStr);
}

/// The visitor the census walks the memory hierarchy with: one per thread of a parallel
/// walk, merged after it ([`CensusVisitor::merge`]). Nothing it gathers depends on the order
/// of its visits, so the census is the same whichever thread saw which directory.
struct CensusVisitor<'o> {
    /// The agent's memory, told of every memcg (a census on one thread only).
    observer: Option<&'o mut (dyn MemcgObserver + Send)>,
    memory_version: u8,
    /// v2: children of cgroups with `memory` in subtree_control (the root is added after the walk).
    v2_memcgs: u64,
    kubepods: KubepodsCollector,
    /// Basenames of live cgroups, kept only when slab caches name cgroups.
    names: Option<HashSet<String>>,
    kmem: Option<PathSample>,
}

impl CgroupVisitor for CensusVisitor<'_> {
    fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
        let mut memcgs = true;
        if self.memory_version == 2 {
            let enabled = dir
                .read_file("cgroup.subtree_control")
                .map(|s| s.split_whitespace().any(|c| c == "memory"))
                .unwrap_or(false);
            if enabled {
                self.v2_memcgs += children.len() as u64;
            }
            memcgs = enabled;
        }
        if let (Some(o), true) = (self.observer.as_deref_mut(), memcgs) {
            for c in children {
                o.memcg(c.ino, dir.ino, dir.components, &c.name);
            }
        }
        self.kubepods.visit(dir, children);
        if let Some(names) = &mut self.names {
            names.extend(children.iter().map(|c| c.name_str().to_string()));
        }
        if let Some(r) = &mut self.kmem {
            for c in children {
                r.offer(path_hash(dir.components, c.name.as_bytes()), || dir.rel_path().join(c.name_str()));
            }
        }
    }
}

impl CensusVisitor<'_> {
    fn merge(&mut self, other: CensusVisitor<'_>) {
        self.v2_memcgs += other.v2_memcgs;
        self.kubepods.merge(other.kubepods);
        if let (Some(a), Some(b)) = (&mut self.names, other.names) {
            a.extend(b);
        }
        if let (Some(a), Some(b)) = (&mut self.kmem, other.kmem) {
            a.merge(b);
        }
    }
}

/// A sample of `cap` memcgs that does not depend on the order they are seen in (threads of
/// a parallel walk see them in any order): the `cap` whose paths hash lowest. The hash is
/// fixed, so the same tree gives the same sample (outputs and tests are reproducible), and
/// the lowest hashes of a good hash are a uniform sample (bottom-k sampling).
struct PathSample {
    cap: usize,
    seen: u64,
    /// A max-heap: the kept path that hashes highest goes first.
    items: BinaryHeap<(u64, PathBuf)>,
}

impl PathSample {
    fn new(cap: usize) -> Self {
        PathSample { cap, seen: 0, items: BinaryHeap::new() }
    }

    /// One more memcg, whose path is made only when it is kept.
    fn offer(&mut self, hash: u64, path: impl FnOnce() -> PathBuf) {
        self.seen += 1;
        self.keep(hash, path);
    }

    fn keep(&mut self, hash: u64, path: impl FnOnce() -> PathBuf) {
        if self.items.len() < self.cap {
            self.items.push((hash, path()));
            return;
        }
        let Some(top) = self.items.peek() else { return };
        if hash > top.0 {
            return;
        }
        // Ties of the hash go by path, so the order of the offers never matters.
        let item = (hash, path());
        if item < *top {
            self.items.pop();
            self.items.push(item);
        }
    }

    fn merge(&mut self, other: PathSample) {
        self.seen += other.seen;
        for (h, p) in other.items {
            self.keep(h, || p);
        }
    }
}

/// FNV-1a of a path from the hierarchy's root (its components and a last name, each followed
/// by '/'), then the splitmix64 finalizer, whose output bits are all well mixed.
fn path_hash(dir: &[CString], name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in dir.iter().map(|c| c.as_bytes()).chain(std::iter::once(name)) {
        for &b in part.iter().chain(b"/") {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Inputs read before the walk. They do not change while the host runs (mounts,
/// kernel release, boot parameters), so a sampler reads them once and clones them for each census.
#[derive(Clone)]
pub struct CensusInputs {
    pub layout: CgroupLayout,
    pub memory: MemoryHierarchy,
    pub era: KernelEra,
    /// `cgroup.memory=nokmem` on /proc/cmdline (false when unreadable).
    pub nokmem_set: bool,
}

impl CensusInputs {
    pub fn read(host: &HostPaths) -> Result<CensusInputs, CensusError> {
        let layout = CgroupLayout::discover(host)?;
        let memory = layout
            .memory_checked()?
            .ok_or_else(|| CensusError::NoMemoryController { mountinfo: host.host("/proc/self/mountinfo") })?;
        let release = procfs::read_osrelease(host)?;
        let era = KernelEra::from_release_str(&release);
        let nokmem_set = procfs::read_cmdline(host).is_ok_and(|c| procfs::cmdline_has(&c, "cgroup.memory=nokmem"));
        Ok(CensusInputs { layout, memory, era, nokmem_set })
    }
}

/// Take the census of `host`.
pub fn take_census(host: &HostPaths) -> Result<Census, CensusError> {
    let inputs = CensusInputs::read(host)?;
    census_with(host, inputs)
}

pub fn census_with(host: &HostPaths, inputs: CensusInputs) -> Result<Census, CensusError> {
    census_with_cache(host, inputs, None)
}

/// [`census_with`] for a census taken again and again (the agent's): `walk` remembers
/// what each directory held, so unchanged directories are not listed next time
/// (cgroupfs::walk_cached; the figures are the same as without it).
pub fn census_with_cache(host: &HostPaths, inputs: CensusInputs, walk: Option<&mut WalkCache>) -> Result<Census, CensusError> {
    census_observed(host, inputs, walk, None)
}

/// [`census_with_cache`], telling `observer` of every memcg the walk sees (the agent's
/// memory of memcgs): inodes and names come from the parents' listings the walk does anyway.
/// An observer makes the walk run on one thread; with a `walk` cache it does already.
pub fn census_observed(
    host: &HostPaths,
    inputs: CensusInputs,
    walk: Option<&mut WalkCache>,
    observer: Option<&mut (dyn MemcgObserver + Send)>,
) -> Result<Census, CensusError> {
    let CensusInputs { layout, memory, era, nokmem_set } = inputs;
    let root = memory.mount.local.clone();
    let v1 = memory.version == 1;
    let kmem_accounting = KmemAccounting::of(&era, memory.version, nokmem_set);

    let slab_scan = slab::scan_memcg_slab_caches(host)?;
    // Counted where it is a per-cgroup switch (3.10, el7, 4.0 .. 4.5): with nokmem honoured
    // the count shows that nothing could switch it on (0).
    let kmem_countable = v1 && era.kmem_opt_in;
    let new_visitor = || CensusVisitor {
        observer: None,
        memory_version: memory.version,
        v2_memcgs: 0,
        kubepods: KubepodsCollector::default(),
        names: (!slab_scan.caches.is_empty()).then(HashSet::new),
        kmem: kmem_countable.then(|| PathSample::new(KMEM_SAMPLE_SIZE)),
    };
    // A census taken again and again (the agent's) walks on one thread, with what it
    // remembers of the last walk: its cost is CPU time, which threads do not save. A census
    // taken once walks on every CPU.
    let (stats, mut visitor): (WalkStats, CensusVisitor) = match (walk, observer) {
        (cache, Some(o)) => {
            let mut v = CensusVisitor { observer: Some(o), ..new_visitor() };
            (cgroupfs::walk_cached(&root, &mut v, cache)?, v)
        }
        (Some(cache), None) => {
            let mut v = new_visitor();
            (cgroupfs::walk_cached(&root, &mut v, Some(cache))?, v)
        }
        (None, None) => {
            let (stats, mut visitors) = cgroupfs::walk_parallel(&root, cgroupfs::walk_threads(), &new_visitor)?;
            let mut v = visitors.pop().unwrap_or_else(new_visitor);
            for other in visitors {
                v.merge(other);
            }
            (stats, v)
        }
    };
    // The root is a memcg whatever its subtree_control says.
    visitor.v2_memcgs += 1;

    // v2 on 6.12+: the kernel's own count of live memcgs (root included, as measured in a 6.12 guest).
    let root_stat = if v1 { None } else { read_root_stat(&root)? };
    let kernel_live = root_stat.as_ref().and_then(|m| m.get("nr_subsys_memory").copied());
    let (live, live_source) = match (v1, kernel_live) {
        (true, _) => (stats.dirs, "directories"),
        (false, Some(n)) => (n, "nr_subsys_memory"),
        (false, None) => (visitor.v2_memcgs, "subtree_control"),
    };

    let has_subsys_key = root_stat.as_ref().is_some_and(|m| m.contains_key("nr_dying_subsys_memory"));
    let method = era.dying_count_method(!v1, has_subsys_key);
    let mut notes: Vec<String> = Vec::new();
    let dying = match method {
        DyingCountMethod::NotCountable => None,
        DyingCountMethod::ProcCgroupsMinusLive => {
            let rows = procfs::read_proc_cgroups(host)?;
            let row = rows.iter().find(|r| r.subsys == "memory" && r.hierarchy != 0);
            match row {
                // num_cgroups counts dying cgroups on 4.x+ (cgroup-v1.c proc_cgroupstats_show); it is read
                // after the walk, so a cgroup removed meanwhile can only raise the figure.
                Some(r) => Some(r.num_cgroups.saturating_sub(live)),
                None => {
                    notes.push("/proc/cgroups has no v1 memory row: dying memcgs not counted".into());
                    None
                }
            }
        }
        DyingCountMethod::NrDyingSubsysMemory => root_stat.as_ref().and_then(|m| m.get("nr_dying_subsys_memory").copied()),
        DyingCountMethod::NrDyingDescendants => root_stat.as_ref().and_then(|m| m.get("nr_dying_descendants").copied()),
    };
    let dying_source = if dying.is_none() { "not_countable" } else { method.as_str() };
    if memory.mount.root != Path::new("/") {
        notes.push(format!(
            "the memory hierarchy is mounted from cgroup {} (a cgroup namespace or bind mount): cgroups outside it are not seen",
            memory.mount.root.display()
        ));
    }

    let names = visitor.names.take();
    let summary = slab::dead_cache_summary(&slab_scan.caches, &|n: &str| names.as_ref().is_some_and(|s| s.contains(n)));
    let dying_at_least = (dying.is_none() && era.dying_hold_ids && summary.dead_ids > 0).then_some(summary.dead_ids);

    let swap = procfs::read_swap(host).unwrap_or_default();
    let (ids_in_use, confidence, reason) = ids_in_use(&era, live, dying, dying_at_least, method, swap, &memory);
    let headroom = match confidence {
        Confidence::Exact | Confidence::Estimate => ids_in_use.map(|i| MEMCG_ID_LIMIT.saturating_sub(i)),
        _ => None,
    };

    let (kmem_active, kmem_active_note, kmem_active_sample) = match visitor.kmem.take() {
        Some(r) => kmem_activity(&root, r),
        None => (None, Some(format!("not counted: kmem accounting is {}", kmem_accounting.describe(&era, memory.version))), None),
    };

    let slab = SlabSection { readable: slab_scan.readable, naming: slab_scan.naming, summary };

    let kubepods = kubepods_summary(host, &memory, visitor.kubepods)?;

    let mut kernel_notes = era.notes.clone();
    kernel_notes.extend(notes);
    Ok(Census {
        kernel: KernelSection {
            release: era.release.raw.clone(),
            era: era.id.as_str(),
            era_exact: era.exact,
            dying_hold_ids: era.dying_hold_ids,
            mkdir_errno_when_full: era.mkdir_errno_when_full.as_str(),
            kmem_opt_in: era.kmem_opt_in,
            nokmem_supported: era.nokmem_supported,
            nokmem_set,
            kmem_accounting,
            notes: kernel_notes,
        },
        cgroup: CgroupSection {
            mode: layout.mode,
            memory_version: memory.version,
            memory_root: memory.mount.mount_point.display().to_string(),
            mounts: layout
                .all()
                .map(|m| MountSummary {
                    version: m.version,
                    mount_point: m.mount_point.display().to_string(),
                    controllers: if let Some(n) = &m.name { vec![format!("name={n}")] } else { m.controllers.clone() },
                })
                .collect(),
        },
        memcg: MemcgSection {
            live,
            live_source,
            dying,
            dying_source,
            dying_at_least,
            id_limit: MEMCG_ID_LIMIT,
            ids_in_use,
            ids_in_use_confidence: confidence,
            ids_in_use_reason: reason,
            headroom,
            kmem_active,
            kmem_active_note,
            kmem_active_sample,
        },
        slab,
        swap,
        kubepods,
        walk_gone: stats.gone,
        era,
    })
}

fn read_root_stat(root: &Path) -> Result<Option<BTreeMap<String, u64>>, ReadError> {
    match cgroupfs::read_flat_keyed(&root.join("cgroup.stat")) {
        Ok(m) => Ok(Some(m)),
        // cgroup.stat exists from 4.14; older v2 simply lacks it.
        Err(e) if e.is_gone() => Ok(None),
        Err(e) => Err(e),
    }
}

/// IDs in use and how sure we are, by era (docs/kernel-facts.md section 1).
fn ids_in_use(
    era: &KernelEra,
    live: u64,
    dying: Option<u64>,
    dying_at_least: Option<u64>,
    method: DyingCountMethod,
    swap: SwapInfo,
    memory: &MemoryHierarchy,
) -> (Option<u64>, Confidence, String) {
    let partial_mount = memory.mount.root != Path::new("/");
    let (ids, mut conf, mut reason) = match (era.dying_hold_ids, dying) {
        (true, Some(d)) => (
            Some(live + d),
            Confidence::Exact,
            format!("on {} dying memcgs keep their IDs: {live} live + {d} dying", era.id.as_str()),
        ),
        (true, None) => {
            let seen = dying_at_least.unwrap_or(0);
            let slab = if seen > 0 {
                format!(" plus at least {seen} dying ones still pinned by slab caches of deleted cgroups")
            } else {
                String::new()
            };
            (
                Some(live + seen),
                Confidence::LowerBound,
                format!(
                    "on {} dying memcgs keep their IDs but cannot be counted (/proc/cgroups drops them at rmdir): at least the {live} live memcgs{slab} hold IDs; run `cgleak probe` to prove headroom",
                    era.id.as_str()
                ),
            )
        }
        (false, d) => {
            let d = d.unwrap_or(0);
            if swap.used_kib() > 0 && d > 0 {
                (
                    Some(live),
                    Confidence::Estimate,
                    format!("{live} live memcgs hold IDs; swap is in use, so swapped-out shmem may pin the IDs of some of the {d} dying memcgs (at most {})", live + d),
                )
            } else {
                (Some(live), Confidence::Exact, format!("dying memcgs release their IDs on {}: the {live} live memcgs hold them", era.id.as_str()))
            }
        }
    };
    if method == DyingCountMethod::NrDyingDescendants && era.dying_hold_ids && conf == Confidence::Exact {
        conf = Confidence::Estimate;
        reason.push_str(" (nr_dying_descendants counts dying cgroups of every controller: an upper bound)");
    }
    if !era.exact && conf == Confidence::Exact {
        conf = Confidence::Estimate;
        reason.push_str(" (kernel release not recognised: era guessed)");
    }
    if partial_mount && conf != Confidence::Unknown {
        conf = Confidence::LowerBound;
        reason.push_str(" (only part of the hierarchy is visible from this mount)");
    }
    (ids, conf, reason)
}

/// kmem-active memcgs where accounting is opt-in (3.10, 4.0..4.5): usage > 0, or slabinfo with rows
/// (docs/kernel-facts.md section 3).
fn kmem_activity(root: &Path, sample: PathSample) -> (Option<u64>, Option<String>, Option<KmemSample>) {
    let total = sample.seen;
    let mut active = 0u64;
    let mut read = 0u64;
    for (_, rel) in &sample.items {
        // None: the cgroup went away meanwhile, so it is not counted at all.
        if let Some(a) = is_kmem_active(&root.join(rel)) {
            read += 1;
            active += a as u64;
        }
    }
    if total as usize <= KMEM_SAMPLE_SIZE || read == 0 {
        (Some(active), None, None)
    } else {
        let est = ((active as f64) * (total as f64) / (read as f64)).round() as u64;
        (
            Some(est),
            Some(format!("estimated from a sample of {read} of {total} memcgs ({active} kmem-active in the sample)")),
            Some(KmemSample { sampled: read, of: total, active_in_sample: active }),
        )
    }
}

/// Whether kmem accounting is on in the v1 memcg at `dir` (3.10, 4.0 .. 4.5: opt-in):
/// kmem.usage_in_bytes above 0, or kmem.slabinfo with rows. None: the cgroup vanished.
pub fn is_kmem_active(dir: &Path) -> Option<bool> {
    match cgroupfs::read_u64(&dir.join("memory.kmem.usage_in_bytes")) {
        Ok(u) if u > 0 => return Some(true),
        Ok(_) => {}
        Err(e) if e.is_gone() && !cgroupfs::is_dir(dir) => return None,
        Err(_) => {}
    }
    // EIO when kmem is off (RHEL7 nokmem); rows below the header when it is on.
    match cgroupfs::read_file(&dir.join("memory.kmem.slabinfo")) {
        Ok(s) => Some(s.lines().any(|l| !l.starts_with("slabinfo") && !l.starts_with('#') && !l.trim().is_empty())),
        Err(_) => Some(false),
    }
}

fn kubepods_summary(host: &HostPaths, memory: &MemoryHierarchy, col: KubepodsCollector) -> Result<Option<KubepodsSummary>, ReadError> {
    if col.is_empty() {
        return Ok(None);
    }
    let (roots, pod_cgroups) = col.into_roots_and_pods();
    let driver = roots[0].1;
    let roots: Vec<String> = roots.iter().map(|(p, _)| host_path(memory, p)).collect();
    let known = kubelet::read_pod_uids(host)?;
    let mut by_qos: BTreeMap<&'static str, QosCounts> = BTreeMap::new();
    for q in [QosClass::Guaranteed, QosClass::Burstable, QosClass::Besteffort] {
        by_qos.insert(q.as_str(), QosCounts::default());
    }
    let mut pods = 0;
    let mut containers = 0;
    let mut orphan_pods = Vec::new();
    for pod in pod_cgroups {
        pods += 1;
        containers += pod.containers as u64;
        let e = by_qos.entry(pod.qos.as_str()).or_default();
        e.pods += 1;
        e.containers += pod.containers as u64;
        if let Some(known) = &known {
            if !known.contains(&pod.uid) && !cgroupfs::subtree_has_procs(&memory.mount.local.join(&pod.path))? {
                let charges = orphan_charges(&memory.mount.local.join(&pod.path), memory.version);
                orphan_pods.push(OrphanPod {
                    uid: pod.uid.clone(),
                    qos: pod.qos,
                    containers: pod.containers,
                    path: host_path(memory, &pod.path),
                    memcgs: charges.memcgs,
                    kmem_bytes: charges.kmem_bytes,
                    usage_bytes: charges.usage_bytes,
                    charge: OrphanCharge::of(charges.kmem_bytes, charges.usage_bytes),
                });
            }
        }
    }
    Ok(Some(KubepodsSummary {
        driver,
        roots,
        pods,
        containers,
        orphans: known.as_ref().map(|_| orphan_pods.len() as u64),
        orphan_pods,
        by_qos,
        kubelet_pods_dir: host.to_host_path(&host.kubelet_pods()).display().to_string(),
        kubelet_pods_dir_found: known.is_some(),
    }))
}

/// The charges left in an orphan's subtree: summed over its memcgs (a vanished one
/// counts nothing; an unreadable file makes the sum unknown).
struct SubtreeCharges {
    memcgs: u64,
    kmem_bytes: Option<u64>,
    usage_bytes: Option<u64>,
}

fn orphan_charges(top: &Path, memory_version: u8) -> SubtreeCharges {
    let mut out = SubtreeCharges { memcgs: 0, kmem_bytes: Some(0), usage_bytes: Some(0) };
    let add = |sum: &mut Option<u64>, v: Option<u64>| *sum = sum.zip(v).map(|(a, b)| a.saturating_add(b));
    for dir in cgroupfs::subtree_dirs(top) {
        let (kmem, usage) = if memory_version == 1 {
            // memory.kmem.usage_in_bytes: EIO or absent where kmem is off (RHEL7 nokmem, CONFIG_MEMCG_KMEM=n): nothing charged.
            let kmem = cgroupfs::read_u64(&dir.join("memory.kmem.usage_in_bytes")).unwrap_or(0);
            match cgroupfs::read_u64(&dir.join("memory.usage_in_bytes")) {
                Ok(u) => (Some(kmem), Some(u)),
                Err(e) if e.is_gone() && !cgroupfs::is_dir(&dir) => continue,
                Err(_) => (Some(kmem), None),
            }
        } else {
            let stat = cgroupfs::read_flat_keyed(&dir.join("memory.stat")).ok();
            let kmem = stat.map(|m| m.get("slab").copied().unwrap_or(0) + m.get("kernel_stack").copied().unwrap_or(0));
            (kmem, cgroupfs::read_u64(&dir.join("memory.current")).ok())
        };
        out.memcgs += 1;
        add(&mut out.kmem_bytes, kmem);
        add(&mut out.usage_bytes, usage);
    }
    out
}

fn host_path(memory: &MemoryHierarchy, rel: &Path) -> String {
    memory.mount.mount_point.join(rel).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kmem_sample_keeps_its_cap_whatever_the_order_of_the_walk() {
        let dir = [CString::new("kubepods").unwrap()];
        let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let sample = |order: &mut dyn Iterator<Item = &String>| {
            let mut r = PathSample::new(10);
            for n in order {
                r.offer(path_hash(&dir, n.as_bytes()), || PathBuf::from("kubepods").join(n));
            }
            r
        };
        let sorted = |r: PathSample| {
            let mut v: Vec<PathBuf> = r.items.into_iter().map(|(_, p)| p).collect();
            v.sort();
            (r.seen, v)
        };
        let a = sorted(sample(&mut names.iter()));
        assert_eq!((a.0, a.1.len()), (1000, 10));
        // The same sample in another order, and from two halves merged (two threads).
        assert_eq!(sorted(sample(&mut names.iter().rev())), a);
        let mut first = sample(&mut names.iter().step_by(2));
        first.merge(sample(&mut names.iter().skip(1).step_by(2)));
        assert_eq!(sorted(first), a);
        // Not just the first ten.
        assert!(a.1.iter().any(|p| p.to_str().unwrap()[10..].parse::<u32>().unwrap() >= 10), "{:?}", a.1);
    }
}

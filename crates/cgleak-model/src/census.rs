//! The memcg census behind `cgleak status`: live, dying, IDs in use, headroom,
//! kmem-active cgroups, slab evidence and the kubepods tree.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use cgleak_readers::cgroupfs::{self, CgroupVisitor, ChildDir, WalkCache, WalkDir, WalkStats};
use cgleak_readers::mountinfo::{CgroupLayout, CgroupMode, MemoryHierarchy};
use cgleak_readers::procfs::{self, SwapInfo};
use cgleak_readers::slab::{self, SlabDeadSummary, SlabNamingSeen};
use cgleak_readers::{kubelet, HostPaths, ReadError};

use crate::era::{DyingCountMethod, KernelEra};
use crate::kubepods::{KubepodsCollector, KubepodsSummary, OrphanPod, QosClass, QosCounts};

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
    pub notes: Vec<String>,
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
    /// cgroup is gone (each pins its memcg, KERNEL-FACTS.md section 2). Null elsewhere.
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
#[derive(Debug)]
pub enum CensusError {
    Read(ReadError),
    NoMemoryController { mountinfo: PathBuf },
}

impl std::fmt::Display for CensusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CensusError::Read(e) => write!(f, "{e}"),
            CensusError::NoMemoryController { mountinfo } => write!(
                f,
                "no memory cgroup controller is mounted ({} lists no cgroup v1 hierarchy with memory, nor a cgroup2 mount whose cgroup.controllers has memory)",
                mountinfo.display()
            ),
        }
    }
}

impl std::error::Error for CensusError {}

impl From<ReadError> for CensusError {
    fn from(e: ReadError) -> Self {
        CensusError::Read(e)
    }
}

impl CensusError {
    pub fn read_error(&self) -> Option<&ReadError> {
        match self {
            CensusError::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// The visitor the census walks the memory hierarchy with.
struct CensusVisitor {
    memory_version: u8,
    /// v2: memcgs are the root plus children of cgroups with `memory` in subtree_control.
    v2_memcgs: u64,
    kubepods: KubepodsCollector,
    /// Basenames of live cgroups, kept only when slab caches name cgroups.
    names: Option<HashSet<String>>,
    kmem: Option<Reservoir>,
}

impl CgroupVisitor for CensusVisitor {
    fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
        if self.memory_version == 2 {
            let enabled = dir
                .read_file("cgroup.subtree_control")
                .map(|s| s.split_whitespace().any(|c| c == "memory"))
                .unwrap_or(false);
            if enabled {
                self.v2_memcgs += children.len() as u64;
            }
        }
        self.kubepods.visit(dir, children);
        if let Some(names) = &mut self.names {
            names.extend(children.iter().map(|c| c.name_str().to_string()));
        }
        if let Some(r) = &mut self.kmem {
            let rel = dir.rel_path();
            for c in children {
                r.offer(|| rel.join(c.name_str()));
            }
        }
    }
}

/// Reservoir sample (Algorithm R) with a fixed, deterministic generator: the same
/// tree gives the same sample, so outputs and tests are reproducible.
struct Reservoir {
    cap: usize,
    seen: u64,
    items: Vec<PathBuf>,
    state: u64,
}

impl Reservoir {
    fn new(cap: usize) -> Self {
        Reservoir { cap, seen: 0, items: Vec::new(), state: 0x9E37_79B9_7F4A_7C15 }
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn offer(&mut self, item: impl FnOnce() -> PathBuf) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(item());
        } else {
            let j = self.next() % self.seen;
            if (j as usize) < self.cap {
                self.items[j as usize] = item();
            }
        }
    }
}

/// Inputs read before the walk. They do not change while the host runs (mounts,
/// kernel release), so a sampler reads them once and clones them for each census.
#[derive(Clone)]
pub struct CensusInputs {
    pub layout: CgroupLayout,
    pub memory: MemoryHierarchy,
    pub era: KernelEra,
}

impl CensusInputs {
    pub fn read(host: &HostPaths) -> Result<CensusInputs, CensusError> {
        let layout = CgroupLayout::discover(host)?;
        let memory = layout
            .memory_checked()?
            .ok_or_else(|| CensusError::NoMemoryController { mountinfo: host.host("/proc/self/mountinfo") })?;
        let release = procfs::read_osrelease(host)?;
        let era = KernelEra::from_release_str(&release);
        Ok(CensusInputs { layout, memory, era })
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
    let CensusInputs { layout, memory, era } = inputs;
    let root = memory.mount.local.clone();
    let v1 = memory.version == 1;

    let slab_scan = slab::scan_memcg_slab_caches(host)?;
    let kmem_countable = v1 && era.kmem_opt_in;
    let mut visitor = CensusVisitor {
        memory_version: memory.version,
        v2_memcgs: 1,
        kubepods: KubepodsCollector::default(),
        names: (!slab_scan.caches.is_empty()).then(HashSet::new),
        kmem: kmem_countable.then(|| Reservoir::new(KMEM_SAMPLE_SIZE)),
    };
    let stats: WalkStats = cgroupfs::walk_cached(&root, &mut visitor, walk)?;

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
        None => (
            None,
            Some(if !v1 {
                "cgroup v2 has no per-cgroup kmem switch: kmem is always accounted".to_string()
            } else {
                format!("kmem accounting is on for every v1 memcg on {} (4.6+): not opt-in, so not counted", era.id.as_str())
            }),
            None,
        ),
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

/// IDs in use and how sure we are, by era (KERNEL-FACTS.md section 1).
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
/// (KERNEL-FACTS.md section 3).
fn kmem_activity(root: &Path, sample: Reservoir) -> (Option<u64>, Option<String>, Option<KmemSample>) {
    let total = sample.seen;
    let mut active = 0u64;
    let mut read = 0u64;
    for rel in &sample.items {
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
        Err(e) if e.is_gone() && !dir.exists() => return None,
        Err(_) => {}
    }
    // EIO when kmem is off (RHEL7 nokmem); rows below the header when it is on.
    match std::fs::read_to_string(dir.join("memory.kmem.slabinfo")) {
        Ok(s) => Some(s.lines().any(|l| !l.starts_with("slabinfo") && !l.starts_with('#') && !l.trim().is_empty())),
        Err(_) => Some(false),
    }
}

fn kubepods_summary(host: &HostPaths, memory: &MemoryHierarchy, col: KubepodsCollector) -> Result<Option<KubepodsSummary>, ReadError> {
    if col.is_empty() {
        return Ok(None);
    }
    let driver = col.roots[0].1;
    let roots: Vec<String> = col.roots.iter().map(|(p, _)| host_path(memory, p)).collect();
    let known = kubelet::read_pod_uids(host)?;
    let mut by_qos: BTreeMap<&'static str, QosCounts> = BTreeMap::new();
    for q in [QosClass::Guaranteed, QosClass::Burstable, QosClass::Besteffort] {
        by_qos.insert(q.as_str(), QosCounts::default());
    }
    let mut pods = 0;
    let mut containers = 0;
    let mut orphan_pods = Vec::new();
    for pod in col.into_pods() {
        pods += 1;
        containers += pod.containers as u64;
        let e = by_qos.entry(pod.qos.as_str()).or_default();
        e.pods += 1;
        e.containers += pod.containers as u64;
        if let Some(known) = &known {
            if !known.contains(&pod.uid) && !cgroupfs::subtree_has_procs(&memory.mount.local.join(&pod.path))? {
                orphan_pods.push(OrphanPod { uid: pod.uid.clone(), qos: pod.qos, containers: pod.containers, path: host_path(memory, &pod.path) });
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

fn host_path(memory: &MemoryHierarchy, rel: &Path) -> String {
    memory.mount.mount_point.join(rel).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_keeps_cap_and_is_deterministic() {
        let run = || {
            let mut r = Reservoir::new(10);
            for i in 0..1000 {
                r.offer(|| PathBuf::from(i.to_string()));
            }
            r.items
        };
        let a = run();
        assert_eq!(a.len(), 10);
        assert_eq!(a, run());
        // not just the first ten
        assert!(a.iter().any(|p| p.to_str().unwrap().parse::<u32>().unwrap() >= 10));
    }
}

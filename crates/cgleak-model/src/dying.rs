//! Dying memcgs by name: which removed memcgs the kernel still holds, their pod, and what
//! pins them (`cgleak dying`).
//!
//! Sources, best first (docs/kernel-facts.md section 6):
//! - `bpf`: the BPF walk of the kernel's css tree (6.1+ with BTF, cgleak-bpf): every dying
//!   memcg with its full path and counters.
//! - `agent_memory`: memcgs `cgleak agent` saw and that disappeared while it ran (path, pod,
//!   when they went), with no counters: the agent cannot tell whether one is freed since.
//! - `slab_names`: 3.10 and 4.4 .. 5.8 name per-memcg slab caches `<cache>(<id>:<cgroup
//!   name>)`; a name no live cgroup has (or seen again with a higher id) is a dead memcg.
//!   Only the last path component is known.
//!
//! Rows carry what their source knows; the rest is null, never a guessed zero.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use cgleak_readers::cgroupfs::{self, CgroupVisitor, ChildDir, WalkDir};
use cgleak_readers::slab::{self, MemcgSlabCache, SlabNamingSeen};
use cgleak_readers::HostPaths;

use crate::census::{census_with, Census, CensusError, CensusInputs, KmemAccounting};
use crate::era::{KernelEra, SlabNaming};
use crate::kubepods::{self, CgroupDriver, QosClass};

/// Series of `cgleak_memcg_dying_by_parent` besides `parent="other"`.
pub const MAX_PARENT_SERIES: usize = 20;

/// What named the dying memcgs (a report's `method`, a row's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Bpf,
    AgentMemory,
    SlabNames,
    None,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Bpf => "bpf",
            Method::AgentMemory => "agent_memory",
            Method::SlabNames => "slab_names",
            Method::None => "none",
        }
    }
}

/// How rows are ordered (`--sort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Most pinned bytes first (unknown last).
    Pinned,
    /// Longest offline first (unknown last; then by pinned bytes).
    Age,
}

/// One dying memcg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DyingRow {
    /// Relative to the memory hierarchy's root; with `slab_names` the cgroup's name only.
    pub path: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub qos: Option<QosClass>,
    /// What keeps it in memory: the pages on its own LRU lists (page cache, anon/shmem,
    /// unevictable), plus its kernel memory where slab pins (kmem accounting, before 5.9).
    pub pinned_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub kmem_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    /// Seconds since it was removed, where something saw it go (the agent).
    pub offline_seconds: Option<u64>,
    /// It still takes one of the 65535 memcg IDs.
    pub holds_id: Option<bool>,
    pub source: Method,
    /// Anon, shmem and unevictable pages: what drop_caches cannot free.
    #[serde(skip)]
    pub anon_bytes: Option<u64>,
    /// The cgroup id (kernfs inode number), to match the agent's memory against.
    #[serde(skip)]
    pub cgroup_id: Option<u64>,
}

impl DyingRow {
    /// A row for `path` with pod, container and QoS from the path (both drivers).
    pub fn at_path(path: String, source: Method) -> DyingRow {
        let pod = kubepods::pod_of_path(&path);
        DyingRow {
            pod_uid: pod.as_ref().map(|p| p.uid.clone()),
            container_id: pod.as_ref().and_then(|p| p.container_id.clone()),
            qos: pod.map(|p| p.qos),
            path,
            pinned_bytes: None,
            file_bytes: None,
            kmem_bytes: None,
            swap_bytes: None,
            offline_seconds: None,
            holds_id: None,
            source,
            anon_bytes: None,
            cgroup_id: None,
        }
    }
}

/// Does slab still pin a dying memcg on this host? Before 5.9 per-memcg slab objects hold
/// their memcg until freed (mm/slab_common.c memcg caches); 5.9+ reparents them at offline
/// (mm/memcontrol.c memcg_reparent_objcgs, facts §3). Only where kmem is accounted.
pub fn kmem_pins(era: &KernelEra, kmem: KmemAccounting) -> bool {
    era.slab_naming != SlabNaming::None && kmem != KmemAccounting::OffNokmem
}

/// A dying memcg as the BPF walk found it.
pub fn row_from_record(r: &cgleak_bpf::MemcgRecord, kmem_pin: bool) -> DyingRow {
    let mut row = DyingRow::at_path(r.path.to_string_lossy().into_owned(), Method::Bpf);
    let lru = r.lru_bytes();
    let kmem = if kmem_pin { r.kmem_bytes.unwrap_or(0) } else { 0 };
    // Without the LRU sizes, its own share of the page counter is the best figure there is.
    row.pinned_bytes = Some(lru.unwrap_or(r.local_memory_bytes).saturating_add(kmem));
    row.file_bytes = r.file_bytes;
    row.kmem_bytes = r.kmem_bytes;
    row.swap_bytes = r.swap_bytes;
    row.holds_id = Some(r.holds_id);
    row.anon_bytes = match (r.anon_bytes, r.unevictable_bytes) {
        (Some(a), Some(u)) => Some(a.saturating_add(u)),
        _ => None,
    };
    row.cgroup_id = Some(r.cgroup_id);
    row
}

/// Every dying memcg of a walk.
pub fn rows_from_walk(walk: &cgleak_bpf::MemcgWalk, kmem_pin: bool) -> Vec<DyingRow> {
    walk.dying().map(|r| row_from_record(r, kmem_pin)).collect()
}

/// Pod, container and QoS from a cgroup's name alone (slab cache names carry no parents):
/// a pod cgroup (`pod<uid>`, `kubepods-<qos>-pod<uid>.slice`) or a systemd container scope.
pub fn pod_of_name(name: &str) -> (Option<String>, Option<String>, Option<QosClass>) {
    if let Some(rest) = name.strip_suffix(".slice") {
        for qos in [QosClass::Burstable, QosClass::Besteffort, QosClass::Guaranteed] {
            if let Some(uid) = kubepods::pod_uid(CgroupDriver::Systemd, name, qos) {
                return (Some(uid), None, Some(qos));
            }
        }
        let _ = rest;
    }
    if name.ends_with(".scope") && ["cri-containerd-", "docker-", "crio-"].iter().any(|p| name.starts_with(p)) && !name.starts_with("crio-conmon-") {
        return (None, Some(kubepods::container_id(CgroupDriver::Systemd, name)), None);
    }
    // A cgroupfs pod's name; its QoS is in the parent's name, which is not known.
    if name.len() > 3 && name.starts_with("pod") && name[3..].bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return (kubepods::pod_uid(CgroupDriver::Cgroupfs, name, QosClass::Guaranteed), None, None);
    }
    (None, None, None)
}

/// Dead memcgs from per-memcg slab caches: each (name, id) whose name no live cgroup has,
/// or that is seen again with a higher id (one cgroup holds one id; css serials only grow
/// on 4.x), as in `cgleak_readers::slab::dead_cache_summary`. `holds_id`: the era keeps
/// dying memcgs' IDs (3.10, el7, 4.0 .. 4.6).
pub fn rows_from_slab(caches: &[MemcgSlabCache], live_names: &dyn Fn(&str) -> bool, holds_id: Option<bool>) -> Vec<DyingRow> {
    let mut ids_by_name: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for c in caches {
        ids_by_name.entry(&c.cgroup_name).or_default().insert(c.id);
    }
    let mut rows = Vec::new();
    for (name, ids) in &ids_by_name {
        let live = live_names(name);
        let highest = ids.iter().next_back().copied();
        for id in ids {
            if live && Some(*id) == highest {
                continue;
            }
            let (pod_uid, container_id, qos) = pod_of_name(name);
            let mut row = DyingRow::at_path(name.to_string(), Method::SlabNames);
            row.pod_uid = pod_uid;
            row.container_id = container_id;
            row.qos = qos;
            row.holds_id = holds_id;
            row.cgroup_id = None;
            rows.push(row);
        }
    }
    rows
}

/// A memcg the agent saw go: what `memcg_memory::RememberedMemcg` holds, less its times.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub inode: u64,
    pub path: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// Seconds since it disappeared, if the agent saw when.
    pub offline_seconds: Option<u64>,
}

/// The agent's memory ([`crate::memcg_memory::load_dead`]) as of `now`.
pub fn remembered_from(list: &[crate::memcg_memory::RememberedMemcg], now: jiff::Timestamp) -> Vec<Remembered> {
    list.iter()
        .map(|m| Remembered {
            inode: m.inode,
            // The agent keeps paths as the census walk names them (no leading `/`); rows
            // name a memcg from the hierarchy's root.
            path: if m.path.starts_with('/') { m.path.clone() } else { format!("/{}", m.path) },
            pod_uid: m.pod_uid.clone(),
            container_id: m.container_id.clone(),
            offline_seconds: m.gone_at.map(|g| now.duration_since(g).as_secs().max(0) as u64),
        })
        .collect()
}

/// Rows from the agent's memory (no counters: the agent never read them).
pub fn rows_from_remembered(list: &[Remembered]) -> Vec<DyingRow> {
    list.iter()
        .map(|m| {
            let mut row = DyingRow::at_path(m.path.clone(), Method::AgentMemory);
            row.pod_uid = m.pod_uid.clone().or(row.pod_uid);
            row.container_id = m.container_id.clone().or(row.container_id);
            row.offline_seconds = m.offline_seconds;
            row.cgroup_id = Some(m.inode);
            row
        })
        .collect()
}

/// Ages from the agent's memory onto rows of another source, by cgroup id (the kernfs inode
/// number the agent saw its directory with; BPF reports the same id).
pub fn add_ages(rows: &mut [DyingRow], list: &[Remembered]) -> usize {
    let by_inode: HashMap<u64, Option<u64>> = list.iter().map(|m| (m.inode, m.offline_seconds)).collect();
    let mut n = 0;
    for r in rows.iter_mut() {
        if let Some(Some(age)) = r.cgroup_id.and_then(|id| by_inode.get(&id)) {
            r.offline_seconds = Some(*age);
            n += 1;
        }
    }
    n
}

/// A pod's dying memcgs (rows outside any pod: `pod_uid` null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodGroup {
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    pub memcgs: u64,
    /// Sum of the known pinned bytes (null when none is known).
    pub pinned_bytes: Option<u64>,
}

/// What reclaim would free of the named dying memcgs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReclaimEstimate {
    /// Their page cache: freed by drop_caches 1 (clean pages) or memory.reclaim.
    pub reclaimable_bytes: Option<u64>,
    /// Anon, shmem and unevictable pages: not freed by drop_caches (swap, where there is
    /// some, takes anon and shmem under memory.reclaim).
    pub not_by_drop_caches_bytes: Option<u64>,
    /// Kernel memory charged to them, and whether it pins them on this kernel.
    pub kmem_bytes: Option<u64>,
    pub kmem_pins: bool,
    pub summary: String,
}

/// The report of `cgleak dying`.
#[derive(Debug, Clone, Serialize)]
pub struct DyingReport {
    pub method: Method,
    /// Why the BPF walk could not name them (null when it did, or was not asked: `--no-bpf`).
    pub bpf_unavailable: Option<String>,
    /// The census's count of dying memcgs (null where the kernel cannot count them: 3.10).
    pub total: Option<u64>,
    /// Dying memcgs named (every row, before `--top`).
    pub named: u64,
    /// Rows in `dying` (at most `--top`).
    pub shown: u64,
    pub sort: SortKey,
    pub pinned_bytes_total: Option<u64>,
    pub dying: Vec<DyingRow>,
    /// Every named row by pod, largest first.
    pub pods: Vec<PodGroup>,
    pub reclaim: ReclaimEstimate,
    pub notes: Vec<String>,
}

fn sum_known(it: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    it.fold(None, |acc, v| match (acc, v) {
        (a, None) => a,
        (None, Some(v)) => Some(v),
        (Some(a), Some(v)) => Some(a.saturating_add(v)),
    })
}

/// Sort rows by `key`, biggest first; unknown values last; ties by path (stable reports).
pub fn sort_rows(rows: &mut [DyingRow], key: SortKey) {
    let pinned = |r: &DyingRow| std::cmp::Reverse(r.pinned_bytes.map(|b| b as i128).unwrap_or(-1));
    match key {
        SortKey::Pinned => rows.sort_by(|a, b| pinned(a).cmp(&pinned(b)).then_with(|| a.path.cmp(&b.path))),
        SortKey::Age => rows.sort_by(|a, b| {
            let age = |r: &DyingRow| std::cmp::Reverse(r.offline_seconds.map(|s| s as i128).unwrap_or(-1));
            age(a).cmp(&age(b)).then_with(|| pinned(a).cmp(&pinned(b))).then_with(|| a.path.cmp(&b.path))
        }),
    }
}

/// Rows grouped by pod, the group with most pinned bytes (then most memcgs) first.
pub fn group_by_pod(rows: &[DyingRow]) -> Vec<PodGroup> {
    let mut groups: HashMap<Option<&str>, PodGroup> = HashMap::new();
    for r in rows {
        let g = groups.entry(r.pod_uid.as_deref()).or_insert_with(|| PodGroup { pod_uid: r.pod_uid.clone(), qos: r.qos, memcgs: 0, pinned_bytes: None });
        g.memcgs += 1;
        g.pinned_bytes = sum_known([g.pinned_bytes, r.pinned_bytes].into_iter());
        g.qos = g.qos.or(r.qos);
    }
    let mut out: Vec<PodGroup> = groups.into_values().collect();
    out.sort_by(|a, b| {
        (b.pinned_bytes.unwrap_or(0), b.memcgs).cmp(&(a.pinned_bytes.unwrap_or(0), a.memcgs)).then_with(|| a.pod_uid.cmp(&b.pod_uid))
    });
    out
}

/// What reclaim would free, in the words of this kernel's era.
pub fn reclaim_estimate(rows: &[DyingRow], kmem_pin: bool) -> ReclaimEstimate {
    let file = sum_known(rows.iter().map(|r| r.file_bytes));
    let anon = sum_known(rows.iter().map(|r| r.anon_bytes));
    let kmem = sum_known(rows.iter().map(|r| r.kmem_bytes));
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let mut s = match file {
        Some(f) => format!("{} of page cache is reclaimable (drop_caches 1, or memory.reclaim on v2 5.19+)", mib(f)),
        None => "how much page cache pins them is not known with this method".to_string(),
    };
    if let Some(a) = anon.filter(|a| *a > 0) {
        s.push_str(&format!("; {} of anon/shmem/unevictable pages is not freed by drop_caches", mib(a)));
    }
    if kmem_pin {
        s.push_str("; slab pins them too on this kernel (before 5.9, kmem accounted): drop_caches 2 frees reclaimable slab (dentries, inodes), the rest stays until freed");
    } else {
        s.push_str("; kernel memory does not pin them on this kernel (5.9+ reparents slab at offline)");
    }
    ReclaimEstimate { reclaimable_bytes: file, not_by_drop_caches_bytes: anon, kmem_bytes: if kmem_pin { kmem } else { None }, kmem_pins: kmem_pin, summary: s }
}

/// Inputs of a report other than its rows.
#[derive(Debug, Clone)]
pub struct ReportParts {
    pub method: Method,
    pub bpf_unavailable: Option<String>,
    pub total: Option<u64>,
    pub sort: SortKey,
    pub top: usize,
    pub kmem_pins: bool,
    pub notes: Vec<String>,
}

/// The report: every row counted and grouped, the first `top` shown.
pub fn build_report(mut rows: Vec<DyingRow>, parts: ReportParts) -> DyingReport {
    sort_rows(&mut rows, parts.sort);
    let pods = group_by_pod(&rows);
    let reclaim = reclaim_estimate(&rows, parts.kmem_pins);
    let named = rows.len() as u64;
    let pinned_bytes_total = sum_known(rows.iter().map(|r| r.pinned_bytes));
    let mut notes = parts.notes;
    if parts.method == Method::SlabNames {
        notes.push("slab_names: per-memcg slab caches carry the cgroup's name only, not its parents: each path is its last component".into());
    }
    if let (Some(t), Method::Bpf) = (parts.total, parts.method) {
        if t != named {
            notes.push(format!("the census counts {t} dying memcgs and the BPF walk named {named}: memcgs were removed or freed between the two reads"));
        }
    }
    rows.truncate(parts.top);
    DyingReport {
        method: parts.method,
        bpf_unavailable: parts.bpf_unavailable,
        total: parts.total,
        named,
        shown: rows.len() as u64,
        sort: parts.sort,
        pinned_bytes_total,
        dying: rows,
        pods,
        reclaim,
        notes,
    }
}

/// `cgleak_memcg_dying_by_parent`: dying memcgs by their parent's path cut to its first two
/// components (`kubepods/burstable`; `/` for children of the root), the 20 largest, the
/// rest as `other`: bounded whatever the tree.
pub fn by_parent(rows: &[DyingRow]) -> Vec<(String, u64)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for r in rows {
        let comps: Vec<&str> = r.path.split('/').filter(|c| !c.is_empty()).collect();
        let parent = &comps[..comps.len().saturating_sub(1)];
        let key = if parent.is_empty() { "/".to_string() } else { parent[..parent.len().min(2)].join("/") };
        *counts.entry(key).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if v.len() > MAX_PARENT_SERIES {
        let other: u64 = v[MAX_PARENT_SERIES..].iter().map(|p| p.1).sum();
        v.truncate(MAX_PARENT_SERIES);
        v.push(("other".into(), other));
    }
    v
}

/// Names of every live cgroup in the hierarchy at `root` (for the slab method).
pub fn live_names(root: &Path) -> Result<HashSet<String>, cgleak_readers::ReadError> {
    struct Names(HashSet<String>);
    impl CgroupVisitor for Names {
        fn visit(&mut self, _: &WalkDir<'_>, children: &[ChildDir]) {
            for c in children {
                self.0.insert(c.name_str().to_string());
            }
        }
    }
    let mut v = Names(HashSet::new());
    cgroupfs::walk(root, &mut v)?;
    Ok(v.0)
}

/// What `collect` is asked for.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Try the BPF walk first (`--no-bpf`: false).
    pub bpf: bool,
    pub sort: SortKey,
    pub top: usize,
    /// The agent's memory, when its state dir has one (read by the caller: the file belongs to the agent).
    pub remembered: Option<Vec<Remembered>>,
}

/// The census and the report made beside it.
pub struct Collected {
    pub census: Census,
    pub report: DyingReport,
}

/// Name the dying memcgs of `host`: the census for the count, then the first source that
/// answers (BPF, the agent's memory, slab names).
pub fn collect(host: &HostPaths, opts: CollectOptions) -> Result<Collected, CensusError> {
    let inputs = CensusInputs::read(host)?;
    let root = inputs.memory.mount.local.clone();
    let census = census_with(host, inputs)?;
    let pin = kmem_pins(&census.era, census.kernel.kmem_accounting);
    let mut notes = Vec::new();
    let mut bpf_unavailable = None;
    let mut found: Option<(Method, Vec<DyingRow>)> = None;
    if opts.bpf {
        match walk(host, &root) {
            Ok(w) => {
                let mut rows = rows_from_walk(&w, pin);
                if let Some(list) = &opts.remembered {
                    add_ages(&mut rows, list);
                }
                found = Some((Method::Bpf, rows));
            }
            Err(e) => {
                bpf_unavailable = Some(e.to_string());
            }
        }
    }
    if found.is_none() {
        if let Some(list) = opts.remembered.as_ref().filter(|l| !l.is_empty()) {
            // A vanished directory is a candidate, not proof: keep as many as the census counts dying, newest gone first.
            let mut list = list.clone();
            list.sort_by_key(|m| m.offline_seconds.unwrap_or(u64::MAX));
            if let Some(t) = census.memcg.dying {
                if (t as usize) < list.len() {
                    notes.push(format!("agent_memory: {} memcgs went while the agent ran, the census counts {t} dying: the {t} gone last are shown", list.len()));
                    list.truncate(t as usize);
                }
            }
            notes.push("agent_memory: memcgs the agent saw disappear while it ran; some may have been freed since, and their counters are not known".into());
            found = Some((Method::AgentMemory, rows_from_remembered(&list)));
        }
    }
    if found.is_none() && census.era.slab_naming != SlabNaming::None && census.slab.readable && census.slab.naming != SlabNamingSeen::None {
        let scan = slab::scan_memcg_slab_caches(host)?;
        let names = live_names(&root)?;
        let holds = census.era.dying_hold_ids.then_some(true);
        found = Some((Method::SlabNames, rows_from_slab(&scan.caches, &|n| names.contains(n), holds)));
    }
    let (method, rows) = found.unwrap_or((Method::None, Vec::new()));
    if method == Method::None {
        notes.push("no method could name the dying memcgs here: BPF (6.1+ with BTF, root), the agent's memory (`cgleak agent` running) or per-memcg slab cache names (3.10 .. 5.8 with kmem accounting)".into());
    }
    let report = build_report(
        rows,
        ReportParts { method, bpf_unavailable, total: census.memcg.dying, sort: opts.sort, top: opts.top, kmem_pins: pin, notes },
    );
    Ok(Collected { census, report })
}

/// The BPF walk of the hierarchy at `root` (local path), with this host's /sys.
pub fn walk(host: &HostPaths, root: &Path) -> Result<cgleak_bpf::MemcgWalk, cgleak_bpf::Unavailable> {
    cgleak_bpf::Walker::new(root).sys_dir(host.sys()).walk()
}

/// The pod cgroup of `uid` (relative to the hierarchy's root at `root`), live or dying: from
/// the BPF walk where it answers (a dying pod has no directory), else from the live tree.
pub fn pod_cgroup(host: &HostPaths, root: &Path, uid: &str) -> Option<String> {
    let is_pod = |p: &str| kubepods::pod_of_path(p).is_some_and(|k| k.uid == uid && k.container_id.is_none());
    if let Ok(w) = walk(host, root) {
        return w.memcgs.iter().map(|m| m.path.to_string_lossy().into_owned()).find(|p| is_pod(p));
    }
    struct Find<'a> {
        is_pod: &'a dyn Fn(&str) -> bool,
        found: Option<String>,
    }
    impl CgroupVisitor for Find<'_> {
        fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
            for c in children {
                let p = format!("/{}", dir.rel_path().join(c.name_str()).display());
                if self.found.is_none() && (self.is_pod)(&p) {
                    self.found = Some(p);
                }
            }
        }
    }
    let mut f = Find { is_pod: &is_pod, found: None };
    cgroupfs::walk(root, &mut f).ok()?;
    f.found
}

/// What `status` shows of the dying memcgs, only where naming them is cheap (the BPF walk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DyingSummary {
    pub named: u64,
    pub pinned_bytes: u64,
    pub by_parent: Vec<(String, u64)>,
}

/// [`DyingSummary`] from one BPF walk of the census's memory hierarchy; the reason when there is none.
pub fn bpf_summary(host: &HostPaths, census: &Census) -> Result<DyingSummary, cgleak_bpf::Unavailable> {
    let w = walk(host, &host.host(&census.cgroup.memory_root))?;
    let rows = rows_from_walk(&w, kmem_pins(&census.era, census.kernel.kmem_accounting));
    Ok(DyingSummary {
        named: rows.len() as u64,
        pinned_bytes: rows.iter().filter_map(|r| r.pinned_bytes).fold(0u64, |a, b| a.saturating_add(b)),
        by_parent: by_parent(&rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";

    fn row(path: &str, pinned: Option<u64>, age: Option<u64>) -> DyingRow {
        let mut r = DyingRow::at_path(path.into(), Method::Bpf);
        r.pinned_bytes = pinned;
        r.file_bytes = pinned.map(|p| p / 2);
        r.anon_bytes = pinned.map(|p| p - p / 2);
        r.offline_seconds = age;
        r
    }

    fn parts(method: Method, sort: SortKey, top: usize) -> ReportParts {
        ReportParts { method, bpf_unavailable: None, total: Some(4), sort, top, kmem_pins: false, notes: vec![] }
    }

    #[test]
    fn rows_take_pod_container_and_qos_from_both_drivers() {
        let r = DyingRow::at_path(format!("/kubepods/burstable/pod{UID}/c0ffee"), Method::Bpf);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref(), r.qos), (Some(UID), Some("c0ffee"), Some(QosClass::Burstable)));
        let sd = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/docker-abc.scope", UID.replace('-', "_"));
        let r = DyingRow::at_path(sd, Method::Bpf);
        assert_eq!((r.pod_uid.as_deref(), r.container_id.as_deref(), r.qos), (Some(UID), Some("abc"), Some(QosClass::Besteffort)));
        let r = DyingRow::at_path("/system.slice/foo.service".into(), Method::Bpf);
        assert_eq!((r.pod_uid, r.container_id, r.qos), (None, None, None));
    }

    #[test]
    fn report_sorts_truncates_and_counts_everything() {
        let rows = vec![row("/a/b", Some(10), Some(5)), row("/a/c", Some(30), None), row("/x", None, Some(50)), row("/a/d", Some(20), Some(1))];
        let r = build_report(rows.clone(), parts(Method::Bpf, SortKey::Pinned, 2));
        let paths: Vec<&str> = r.dying.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a/c", "/a/d"]);
        assert_eq!((r.named, r.shown, r.pinned_bytes_total, r.total), (4, 2, Some(60), Some(4)));
        let r = build_report(rows, parts(Method::Bpf, SortKey::Age, 10));
        let paths: Vec<&str> = r.dying.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/x", "/a/b", "/a/d", "/a/c"], "oldest first, unknown ages last");
    }

    #[test]
    fn pods_are_grouped_largest_first() {
        let p1 = format!("/kubepods/burstable/pod{UID}");
        let rows = vec![
            row(&format!("{p1}/c1"), Some(100), None),
            row(&format!("{p1}/c2"), Some(200), None),
            row("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/c", Some(250), None),
            row("/system.slice/x", Some(1), None),
        ];
        let g = group_by_pod(&rows);
        assert_eq!(g.len(), 3);
        assert_eq!((g[0].pod_uid.as_deref(), g[0].memcgs, g[0].pinned_bytes, g[0].qos), (Some(UID), 2, Some(300), Some(QosClass::Burstable)));
        assert_eq!(g[1].pinned_bytes, Some(250));
        assert_eq!((g[2].pod_uid.as_deref(), g[2].memcgs), (None, 1));
    }

    #[test]
    fn reclaim_says_what_drop_caches_frees_by_era() {
        let rows = vec![row("/a", Some(4 << 20), None), row("/b", Some(2 << 20), None)];
        let e = reclaim_estimate(&rows, false);
        assert_eq!((e.reclaimable_bytes, e.not_by_drop_caches_bytes, e.kmem_pins), (Some(3 << 20), Some(3 << 20), false));
        assert!(e.summary.contains("3.0 MiB of page cache is reclaimable") && e.summary.contains("5.9+"), "{}", e.summary);
        let e = reclaim_estimate(&rows, true);
        assert!(e.summary.contains("slab pins them too"), "{}", e.summary);
        let unknown = reclaim_estimate(&[DyingRow::at_path("x".into(), Method::SlabNames)], true);
        assert_eq!(unknown.reclaimable_bytes, None);
        assert!(unknown.summary.contains("not known"));
    }

    #[test]
    fn kmem_pins_only_before_5_9_and_not_with_nokmem() {
        let old = KernelEra::from_release_str("3.10.0-1160.el7.x86_64");
        let new = KernelEra::from_release_str("6.18.44");
        assert!(kmem_pins(&old, KmemAccounting::OptIn));
        assert!(!kmem_pins(&old, KmemAccounting::OffNokmem));
        assert!(!kmem_pins(&new, KmemAccounting::OnForEvery));
        assert!(kmem_pins(&KernelEra::from_release_str("4.19.0"), KmemAccounting::OnForEvery));
    }

    #[test]
    fn slab_names_give_dead_memcgs_with_pods_where_the_name_says() {
        let c = |cache: &str, id: u64, name: &str| MemcgSlabCache { cache: cache.into(), id, cgroup_name: name.into() };
        let sd = format!("kubepods-burstable-pod{}.slice", UID.replace('-', "_"));
        let caches = vec![
            c("dentry", 5, &format!("pod{UID}")),
            c("inode_cache", 5, &format!("pod{UID}")),
            c("dentry", 7, "live"),
            c("dentry", 3, "live"),
            c("dentry", 9, &sd),
            c("dentry", 11, "cri-containerd-abcdef.scope"),
        ];
        let rows = rows_from_slab(&caches, &|n| n == "live", Some(true));
        type Got<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<QosClass>);
        let got: Vec<Got> =
            rows.iter().map(|r| (r.path.as_str(), r.pod_uid.as_deref(), r.container_id.as_deref(), r.qos)).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&("live", None, None, None)), "the lower id of a live name is dead");
        assert!(got.contains(&(format!("pod{UID}").as_str(), Some(UID), None, None)));
        assert!(got.contains(&(sd.as_str(), Some(UID), None, Some(QosClass::Burstable))));
        assert!(got.contains(&("cri-containerd-abcdef.scope", None, Some("abcdef"), None)));
        assert!(rows.iter().all(|r| r.source == Method::SlabNames && r.holds_id == Some(true) && r.pinned_bytes.is_none()));
        let r = build_report(rows, parts(Method::SlabNames, SortKey::Pinned, 20));
        assert!(r.notes.iter().any(|n| n.contains("last component")));
        assert_eq!(r.pinned_bytes_total, None);
    }

    #[test]
    fn agent_memory_rows_and_ages_by_inode() {
        let list = vec![
            Remembered { inode: 42, path: format!("/kubepods/pod{UID}/c"), pod_uid: None, container_id: None, offline_seconds: Some(90) },
            Remembered { inode: 43, path: "/other".into(), pod_uid: Some("given".into()), container_id: None, offline_seconds: None },
        ];
        let rows = rows_from_remembered(&list);
        assert_eq!((rows[0].pod_uid.as_deref(), rows[0].qos, rows[0].offline_seconds), (Some(UID), Some(QosClass::Guaranteed), Some(90)));
        assert_eq!(rows[1].pod_uid.as_deref(), Some("given"));
        let mut bpf = vec![row("/x", Some(1), None), row("/y", Some(1), None)];
        bpf[0].cgroup_id = Some(42);
        bpf[1].cgroup_id = Some(7);
        assert_eq!(add_ages(&mut bpf, &list), 1);
        assert_eq!((bpf[0].offline_seconds, bpf[1].offline_seconds), (Some(90), None));
    }

    #[test]
    fn parents_are_bounded_to_twenty_series_and_other() {
        let mut rows = vec![row("/kubepods/burstable/pod1/c", None, None), row("/kubepods/burstable/pod2", None, None), row("/top", None, None)];
        for i in 0..30 {
            for _ in 0..(i + 2) {
                rows.push(row(&format!("/p{i}/x"), None, None));
            }
        }
        let v = by_parent(&rows);
        assert_eq!(v.len(), MAX_PARENT_SERIES + 1);
        assert_eq!(v[0], ("p29".to_string(), 31));
        assert_eq!(v.last().unwrap().0, "other");
        let total: u64 = v.iter().map(|p| p.1).sum();
        assert_eq!(total, rows.len() as u64, "every row in one series");
        let small = by_parent(&rows[..3]);
        assert_eq!(small, vec![("kubepods/burstable".to_string(), 2), ("/".to_string(), 1)]);
    }

    #[test]
    fn json_has_the_contract_keys() {
        let r = build_report(vec![row("/a", Some(1), None)], parts(Method::Bpf, SortKey::Pinned, 20));
        let v = serde_json::to_value(&r).unwrap();
        for k in ["method", "bpf_unavailable", "total", "named", "pinned_bytes_total", "dying"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let row = &v["dying"][0];
        let keys: BTreeSet<&str> = row.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let want: BTreeSet<&str> = [
            "path", "pod_uid", "container_id", "qos", "pinned_bytes", "file_bytes", "kmem_bytes", "swap_bytes", "offline_seconds", "holds_id", "source",
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, want);
        assert_eq!(v["method"], "bpf");
        assert!(v.get("schema_version").is_none(), "the front end adds it to every document");
    }
}

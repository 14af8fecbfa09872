//! One row of the decision table: the facts of a node that decide which remedies help
//! and what each gains. Taken from the census, the node's facts and the findings; the
//! table tests build it directly.

use serde::Serialize;

use cgleak_readers::versions::{Component, Version};

use crate::census::{Census, Confidence, KmemAccounting};
use crate::era::{EraId, KernelEra};
use crate::incidents::IncidentKind;
use crate::kubepods::OrphanCharge;

use super::{Finding, NodeFacts, Severity, Verdict};

/// What is known of `cgroup.memory=nokmem` on this node (facts §3: upstream 4.5+, el7
/// 3.10.0-1062+; absent in 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NokmemFacts {
    /// On the running kernel's command line.
    pub set: bool,
    /// The running kernel honours it.
    pub running_supports: bool,
    /// The kernel the boot loader starts next, when its files tell.
    pub next_boot: Option<NextKernel>,
    /// The first release of the running kernel's line that has it: `3.10.0-1062` (el7),
    /// `4.5` (upstream); None where the running kernel has it.
    pub first_with_it: Option<&'static str>,
}

impl NokmemFacts {
    /// It takes effect at the next boot: that kernel honours it and its entry has it.
    pub fn active_after_reboot(&self) -> bool {
        self.next_boot.as_ref().is_some_and(|n| n.supports_nokmem && n.has_nokmem == Some(true))
    }

    /// A kernel that honours it runs, or is the next to boot.
    pub fn available(&self) -> bool {
        self.running_supports || self.next_boot.as_ref().is_some_and(|n| n.supports_nokmem)
    }
}

/// The kernel the boot loader starts next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextKernel {
    pub release: String,
    /// How the boot loader's files name it (`saved_entry`, `first entry`, ...).
    pub how: String,
    pub supports_nokmem: bool,
    /// Its entry's command line has `cgroup.memory=nokmem` (None: not read).
    pub has_nokmem: Option<bool>,
    /// It is another kernel than the running one.
    pub differs: bool,
}

/// Orphaned pod cgroups and their memcgs by what still charges them (facts §1a, §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrphanGains {
    pub pods: u64,
    pub memcgs: u64,
    /// memcgs with no charge left: freed at rmdir, their IDs back at once.
    pub uncharged: u64,
    /// memcgs pinned by page cache only: freed once reclaim drops it.
    pub page_cache: u64,
    /// memcgs with kernel memory charged: where dying memcgs keep their IDs, removing these frees none.
    pub kmem: u64,
    /// memcgs whose charges could not be read.
    pub unknown: u64,
}

/// The facts the remedies are chosen from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Situation {
    pub verdict: Verdict,
    pub era: EraId,
    pub release: String,
    /// Dying memcgs keep their IDs (3.10, el7, 4.0-4.4.17, 4.5, 4.6).
    pub dying_hold_ids: bool,
    pub memory_version: u8,
    pub kmem: KmemAccounting,
    /// Deleted memcgs are left pinned by kernel memory: kmem-active memcgs where accounting is
    /// opt-in, or slab caches of deleted cgroups (the `kmem_accounting_active` or
    /// `slab_dead_caches` warning).
    pub kmem_leak: bool,
    /// Per-memcg slab pins dying memcgs on this kernel (3.10 .. 5.8; 5.9+ reparents slab at offline, facts §3).
    pub slab_pins: bool,
    /// Many dying memcgs (the `dying_memcgs` warning).
    pub dying_heavy: bool,
    pub nokmem: NokmemFacts,
    /// kubelet 1.8 .. 1.21 runs here (it switches kmem on in pod cgroups).
    pub kubelet_enables_kmem: bool,
    /// runc before 1.0.0-rc94 runs here (it switches kmem on in container cgroups).
    pub runc_enables_kmem: bool,
    pub orphans: OrphanGains,
    pub live: u64,
    pub ids_in_use: Option<u64>,
    pub confidence: Confidence,
    pub headroom: Option<u64>,
    pub dying: Option<u64>,
    /// Distinct kmemcg IDs of slab caches whose cgroup is gone (3.10 .. 5.8).
    pub dead_slab_ids: u64,
    /// A failed memcg creation is in the recent logs.
    pub creation_failures_logged: bool,
    /// Some logged failure has an errno this kernel returns on a full ID space (or none printed).
    pub failures_match_era: bool,
    /// memcgs a migration of the kubepods tree mirrors (its root, QoS classes, pods and
    /// containers), None without a kubepods tree.
    pub kubepods_memcgs: Option<u64>,
    /// The kubepods root relative to the memory hierarchy (`kubepods`, `kubepods.slice`).
    pub kubepods_root: Option<String>,
    /// v2 `memory.reclaim` exists (5.19+).
    pub has_memory_reclaim: bool,
    /// Swap is in use, so swapped-out shmem may pin dying memcgs' IDs (4.7+).
    pub swap_pins: bool,
}

const RUNC_FIXED: &str = "1.0.0-rc94";

impl Situation {
    pub fn of(verdict: Verdict, c: &Census, node: &NodeFacts, findings: &[Finding]) -> Situation {
        let warn = |id: &str| findings.iter().any(|f| f.id == id && f.severity >= Severity::Warning);
        let era = &c.era;
        let mut orphans = OrphanGains::default();
        if let Some(kp) = &c.kubepods {
            for o in &kp.orphan_pods {
                orphans.pods += 1;
                orphans.memcgs += o.memcgs;
                match o.charge {
                    OrphanCharge::None => orphans.uncharged += o.memcgs,
                    OrphanCharge::PageCache => orphans.page_cache += o.memcgs,
                    OrphanCharge::Kmem => orphans.kmem += o.memcgs,
                    OrphanCharge::Unknown => orphans.unknown += o.memcgs,
                }
            }
        }
        let next_boot = node.next_boot.as_ref().map(|n| {
            let next = KernelEra::from_release_str(&n.release);
            NextKernel {
                release: n.release.clone(),
                how: n.how.clone(),
                supports_nokmem: next.nokmem_supported,
                has_nokmem: n.cmdline_has_nokmem,
                differs: n.release != c.kernel.release,
            }
        });
        let kubelet_enables_kmem = node.version(Component::Kubelet).is_some_and(|(_, v)| v.major == 1 && (8..=21).contains(&v.minor));
        let fixed = Version::parse(RUNC_FIXED).expect("constant version");
        let runc_enables_kmem = node.version(Component::Runc).is_some_and(|(_, v)| v < fixed);
        let kubepods_memcgs = c.kubepods.as_ref().map(|k| {
            // The root and the burstable and besteffort classes, then every pod and container.
            let classes = k.by_qos.iter().filter(|(q, n)| **q != "guaranteed" && n.pods > 0).count() as u64;
            1 + classes + k.pods + k.containers
        });
        let mem_root = &c.cgroup.memory_root;
        let kubepods_root = c.kubepods.as_ref().and_then(|k| k.roots.first()).map(|r| {
            r.strip_prefix(mem_root.as_str()).unwrap_or(r).trim_start_matches('/').to_string()
        });
        Situation {
            verdict,
            era: era.id,
            release: c.kernel.release.clone(),
            dying_hold_ids: era.dying_hold_ids,
            memory_version: c.cgroup.memory_version,
            kmem: c.kernel.kmem_accounting,
            kmem_leak: warn("kmem_accounting_active") || warn("slab_dead_caches"),
            slab_pins: slab_pins_dying(era),
            dying_heavy: warn("dying_memcgs"),
            nokmem: NokmemFacts {
                set: node.nokmem,
                running_supports: era.nokmem_supported,
                next_boot,
                first_with_it: first_with_nokmem(era),
            },
            kubelet_enables_kmem,
            runc_enables_kmem,
            orphans,
            live: c.memcg.live,
            ids_in_use: c.memcg.ids_in_use,
            confidence: c.memcg.ids_in_use_confidence,
            headroom: c.memcg.headroom,
            dying: c.memcg.dying,
            dead_slab_ids: c.slab.summary.dead_ids,
            creation_failures_logged: findings.iter().any(|f| f.id == "memcg_create_failures"),
            failures_match_era: node
                .logs
                .incidents
                .iter()
                .filter(|i| i.kind == IncidentKind::MemcgCreateFailed && i.trusted)
                .any(|i| i.errno.is_none_or(|e| era.mkdir_errno_possible(e))),
            kubepods_memcgs,
            kubepods_root,
            has_memory_reclaim: era.has_memory_reclaim,
            swap_pins: c.memcg.ids_in_use_confidence == Confidence::Estimate && c.swap.used_kib() > 0,
        }
    }

    /// The ID space is short: at_risk or exhausted.
    pub fn short(&self) -> bool {
        self.verdict >= Verdict::AtRisk
    }
}

/// Per-memcg slab caches, charged to the memcg and pinning it while objects live: 3.10 ..
/// 5.8 (5.9 charges slab through obj_cgroup, reparented at offline: facts §3).
pub fn slab_pins_dying(era: &KernelEra) -> bool {
    era.slab_naming != crate::era::SlabNaming::None
}

/// The first release of this kernel's line with `cgroup.memory=nokmem`, if it lacks it.
fn first_with_nokmem(era: &KernelEra) -> Option<&'static str> {
    if era.nokmem_supported {
        None
    } else if era.id == EraId::El7 {
        Some("3.10.0-1062")
    } else {
        Some("4.5")
    }
}

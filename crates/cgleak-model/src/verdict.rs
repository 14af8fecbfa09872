//! The verdict of `cgleak check`: findings with evidence, and remedies ranked for this node.
//!
//! Pure functions of a [`Census`] and [`NodeFacts`]: no I/O here except in
//! [`NodeFacts::read`], so verdicts can be tested on any input.

use serde::Serialize;

use cgleak_readers::kubelet::{self, CgroupDriverSetting};
use cgleak_readers::procfs;
use cgleak_readers::versions::{self, Component, DetectedVersion, Version};
use cgleak_readers::HostPaths;

use crate::census::{Census, Confidence, MEMCG_ID_LIMIT};
use crate::incidents::{Incident, IncidentKind};

/// Share of the ID space in use above which a node is `at_risk`.
pub const AT_RISK_FRACTION: f64 = 0.90;
/// Dying memcgs at or above this many, and at least as many as live ones, mean `leaking`.
pub const LEAKING_DYING_MIN: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Leaking,
    AtRisk,
    Exhausted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Leaking => "leaking",
            Verdict::AtRisk => "at_risk",
            Verdict::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A file and the value read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub file: String,
    pub value: String,
}

fn ev(file: impl Into<String>, value: impl ToString) -> Evidence {
    Evidence { file: file.into(), value: value.to_string() }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// The verdict this finding alone implies.
    #[serde(skip)]
    pub implies: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct Remedy {
    pub action: &'static str,
    pub summary: String,
    pub needs_reboot: bool,
    pub disturbs_pods: bool,
}

/// Facts about the node beyond the cgroup tree: boot parameters, versions, driver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFacts {
    pub cmdline: Option<String>,
    pub nokmem: bool,
    pub versions: Vec<DetectedVersion>,
    pub cgroup_driver: Option<CgroupDriverSetting>,
    pub kubelet_pid: Option<u32>,
    /// Incidents in the node's recent logs, filled by the front end (not by [`NodeFacts::read`]).
    /// Left out of the JSON when there is nothing to say, as on hosts without logs.
    #[serde(skip_serializing_if = "LogEvidence::is_empty")]
    pub logs: LogEvidence,
    /// Exhaustion forecast from the agent's history, filled by the front end; None without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::Forecast>,
}

/// What the node's recent logs show (the incidents of `cgleak logs` in a time window).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogEvidence {
    /// Start of the window (RFC 3339): older incidents, and those without a time, are left out.
    pub since: Option<String>,
    /// The sources read (`/var/log/syslog`, `journald`, `/dev/kmsg`).
    pub sources: Vec<String>,
    pub incidents: Vec<Incident>,
    /// Sources that could not be read, and why: the check goes on without them.
    pub notes: Vec<String>,
}

impl LogEvidence {
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.notes.is_empty()
    }
}

impl NodeFacts {
    pub fn read(host: &HostPaths) -> NodeFacts {
        let cmdline = procfs::read_cmdline(host).ok();
        NodeFacts {
            nokmem: cmdline.as_deref().is_some_and(|c| procfs::cmdline_has(c, "cgroup.memory=nokmem")),
            cmdline,
            versions: versions::detect_versions(host),
            cgroup_driver: kubelet::read_cgroup_driver(host),
            kubelet_pid: kubelet::running_kubelet(host).map(|(pid, _)| pid),
            logs: LogEvidence::default(),
            forecast: None,
        }
    }

    fn version(&self, c: Component) -> Option<(&DetectedVersion, Version)> {
        self.versions.iter().find(|v| v.component == c).and_then(|d| Version::parse(&d.version).map(|v| (d, v)))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub remedies: Vec<Remedy>,
    pub node: NodeFacts,
    pub census: Census,
}

/// Judge a node.
pub fn check(census: Census, node: NodeFacts) -> CheckReport {
    let findings = findings(&census, &node);
    let verdict = findings.iter().map(|f| f.implies).max().unwrap_or(Verdict::Healthy);
    let remedies = remedies(verdict, &census, &node, &findings);
    CheckReport { verdict, findings, remedies, node, census }
}

fn findings(c: &Census, node: &NodeFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let m = &c.memcg;
    let era = &c.era;
    let mem_root = &c.cgroup.memory_root;
    let cgroups_file = "/proc/cgroups".to_string();

    // 1. The ID space.
    let live_ev = match m.live_source {
        "nr_subsys_memory" => ev(format!("{mem_root}/cgroup.stat"), format!("nr_subsys_memory {} (live memcgs, root included)", m.live)),
        "subtree_control" => ev(
            format!("{mem_root}/**/cgroup.subtree_control"),
            format!("{} live memcgs (root plus children of cgroups with +memory)", m.live),
        ),
        _ => ev(mem_root.clone(), format!("{} live memcgs (directories, root included)", m.live)),
    };
    let mut id_ev = vec![live_ev];
    if let Some(d) = m.dying {
        id_ev.push(ev(dying_file(m.dying_source, mem_root, &cgroups_file), format!("{d} dying memcgs ({})", m.dying_source)));
    }
    id_ev.push(ev("/proc/sys/kernel/osrelease", &c.kernel.release));
    match (m.ids_in_use, m.ids_in_use_confidence, m.headroom) {
        (Some(ids), Confidence::Exact | Confidence::Estimate, Some(head)) => {
            let frac = ids as f64 / MEMCG_ID_LIMIT as f64;
            let (sev, implies, what) = if head == 0 {
                (Severity::Critical, Verdict::Exhausted, "the memcg ID space is exhausted: every new cgroup mkdir fails".to_string())
            } else if frac >= AT_RISK_FRACTION {
                (Severity::Warning, Verdict::AtRisk, format!("{:.1}% of the memcg ID space is in use", frac * 100.0))
            } else {
                (Severity::Info, Verdict::Healthy, format!("{:.1}% of the memcg ID space is in use", frac * 100.0))
            };
            id_ev.push(ev("MEM_CGROUP_ID_MAX", format!("limit {MEMCG_ID_LIMIT}, {ids} in use, headroom {head}")));
            out.push(Finding {
                id: "memcg_id_headroom",
                severity: sev,
                summary: format!("{what}: {ids} of {MEMCG_ID_LIMIT} IDs ({}), headroom {head}; {}", m.ids_in_use_confidence.as_str(), m.ids_in_use_reason),
                evidence: id_ev,
                implies,
            });
        }
        (Some(ids), conf, _) => {
            let implies = if ids >= MEMCG_ID_LIMIT { Verdict::Exhausted } else if ids as f64 >= AT_RISK_FRACTION * MEMCG_ID_LIMIT as f64 { Verdict::AtRisk } else { Verdict::Healthy };
            out.push(Finding {
                id: "memcg_id_headroom",
                severity: if implies == Verdict::Healthy { Severity::Warning } else { Severity::Critical },
                summary: format!("at least {ids} of {MEMCG_ID_LIMIT} memcg IDs in use ({}); headroom cannot be counted on this kernel: {}", conf.as_str(), m.ids_in_use_reason),
                evidence: id_ev,
                implies,
            });
        }
        (None, _, _) => out.push(Finding {
            id: "memcg_id_headroom",
            severity: Severity::Warning,
            summary: format!("memcg IDs in use cannot be determined: {}", m.ids_in_use_reason),
            evidence: id_ev,
            implies: Verdict::Healthy,
        }),
    }

    // 2. Dying memcgs.
    if let Some(d) = m.dying {
        let leaking = d >= LEAKING_DYING_MIN && d >= m.live;
        let cost = if era.dying_hold_ids { "each keeps its memcg ID" } else { "each keeps tens of KB of kernel memory and slows reclaim and memory.stat" };
        out.push(Finding {
            id: "dying_memcgs",
            severity: if leaking { Severity::Warning } else { Severity::Info },
            summary: if leaking {
                format!("{d} dying memcgs (more than the {} live ones) are pinned by page cache or kernel memory; {cost}", m.live)
            } else {
                format!("{d} dying memcgs, {} live: within normal churn", m.live)
            },
            evidence: vec![ev(dying_file(m.dying_source, mem_root, &cgroups_file), format!("dying {d} ({})", m.dying_source))],
            implies: if leaking { Verdict::Leaking } else { Verdict::Healthy },
        });
    } else if era.dying_hold_ids {
        out.push(Finding {
            id: "dying_memcgs",
            severity: Severity::Info,
            summary: format!("dying memcgs cannot be counted on {}: /proc/cgroups forgets them at rmdir while they keep their IDs", era.id.as_str()),
            evidence: vec![ev(cgroups_file.clone(), "num_cgroups excludes dying memcgs on 3.10")],
            implies: Verdict::Healthy,
        });
    }

    // 3. kmem accounting where it is opt-in (3.10, 4.0..4.5).
    if let Some(k) = m.kmem_active {
        let sev = if k > 0 { Severity::Warning } else { Severity::Info };
        let how = m.kmem_active_note.clone().map(|n| format!(" ({n})")).unwrap_or_default();
        out.push(Finding {
            id: "kmem_accounting_active",
            severity: sev,
            summary: if k > 0 {
                format!(
                    "{k} memcgs have kernel-memory accounting switched on{how}: on {} each of them, once deleted, {} while slab objects stay charged to it",
                    era.id.as_str(),
                    if era.dying_hold_ids { "keeps its memcg ID" } else { "lingers as a dying memcg holding kernel memory" }
                )
            } else {
                "no memcg has kernel-memory accounting switched on".to_string()
            },
            evidence: vec![ev(format!("{mem_root}/*/memory.kmem.usage_in_bytes, memory.kmem.slabinfo"), format!("{k} kmem-active"))],
            implies: if k > 0 { Verdict::Leaking } else { Verdict::Healthy },
        });
    }

    // 4. Slab caches of cgroups that are gone.
    let s = &c.slab.summary;
    if s.per_memcg_caches > 0 {
        let dead = s.dead_caches > 0;
        out.push(Finding {
            id: "slab_dead_caches",
            severity: if dead { Severity::Warning } else { Severity::Info },
            summary: format!(
                "{} per-memcg slab caches for {} kmemcg IDs; {} caches ({} IDs) belong to cgroups that no longer exist",
                s.per_memcg_caches, s.distinct_ids, s.dead_caches, s.dead_ids
            ),
            evidence: vec![ev("/sys/kernel/slab", format!("{} per-memcg caches, {} dead", s.per_memcg_caches, s.dead_caches))],
            implies: if dead { Verdict::Leaking } else { Verdict::Healthy },
        });
    }

    // 5. Orphaned pod cgroups hold live IDs nobody will free.
    if let Some(kp) = &c.kubepods {
        if let Some(o) = kp.orphans.filter(|o| *o > 0) {
            out.push(Finding {
                id: "orphan_pod_cgroups",
                severity: Severity::Warning,
                summary: {
                    let ids: u64 = kp.orphan_pods.iter().map(|p| 1 + p.containers as u64).sum();
                    format!("{o} pod cgroups have no task and no pod directory in the kubelet's state: leaked, they hold {ids} memcg IDs (pods and their container cgroups)")
                },
                evidence: kp.orphan_pods.iter().take(5).map(|p| ev(p.path.clone(), format!("no tasks; {}/{} missing", kp.kubelet_pods_dir, p.uid))).collect(),
                implies: Verdict::Leaking,
            });
        }
    }

    // 6. Boot parameter cgroup.memory=nokmem.
    let cmdline_ev = ev("/proc/cmdline", node.cmdline.clone().unwrap_or_else(|| "(unreadable)".into()));
    if node.nokmem {
        out.push(Finding {
            id: "nokmem_boot_parameter",
            severity: Severity::Info,
            summary: if era.nokmem_supported {
                "cgroup.memory=nokmem is set: kernel-memory accounting is off, kmem limit writes are ignored".into()
            } else {
                format!("cgroup.memory=nokmem is set but {} does not honour it (upstream 4.5+, RHEL7 3.10.0-1062+)", c.kernel.release)
            },
            evidence: vec![cmdline_ev],
            implies: Verdict::Healthy,
        });
    } else if era.kmem_opt_in {
        out.push(Finding {
            id: "nokmem_boot_parameter",
            severity: Severity::Info,
            summary: if era.nokmem_supported {
                "cgroup.memory=nokmem is not set; this kernel honours it: with it, kubelet and runc can no longer switch kmem accounting on".into()
            } else {
                format!("cgroup.memory=nokmem is not set, and {} does not support it (upstream 4.5+, RHEL7 3.10.0-1062+)", c.kernel.release)
            },
            evidence: vec![cmdline_ev],
            implies: Verdict::Healthy,
        });
    }

    // 7. Userspace that switches kmem accounting on (KERNEL-FACTS section 3).
    let kmem_matters = era.kmem_opt_in && !(node.nokmem && era.nokmem_supported);
    if let Some((d, v)) = node.version(Component::Kubelet) {
        let enables = v.major == 1 && (8..=21).contains(&v.minor);
        out.push(version_finding("kubelet_version", d, enables, kmem_matters,
            "kubelet 1.8..1.21 enables kmem accounting in pod cgroups (unless built with -tags=nokmem)",
            "kubelet 1.22+ does not enable kmem accounting"));
    }
    for c in [Component::Runc] {
        if let Some((d, v)) = node.version(c) {
            let fixed = Version::parse("1.0.0-rc94").expect("constant version");
            let enables = v < fixed;
            out.push(version_finding("runc_version", d, enables, kmem_matters,
                "runc before 1.0.0-rc94 enables kmem accounting in container cgroups (unless built with the nokmem tag)",
                "runc 1.0.0-rc94+ ignores kernel memory"));
        }
    }
    for comp in [Component::Containerd, Component::Docker, Component::Crio, Component::Crun] {
        if let Some(d) = node.versions.iter().find(|v| v.component == comp) {
            out.push(Finding {
                id: match comp {
                    Component::Containerd => "containerd_version",
                    Component::Docker => "docker_version",
                    Component::Crio => "crio_version",
                    _ => "crun_version",
                },
                severity: Severity::Info,
                summary: format!("{} {} found (it runs containers through its OCI runtime; see runc_version)", comp.as_str(), d.version),
                evidence: vec![ev(d.binary.clone(), d.raw.clone())],
                implies: Verdict::Healthy,
            });
        }
    }

    // 8. Driver and mode.
    let tree_driver = c.kubepods.as_ref().map(|k| k.driver.as_str());
    let mut drv_ev = Vec::new();
    if let Some(s) = &node.cgroup_driver {
        drv_ev.push(ev(s.source.clone(), format!("cgroupDriver {}", s.driver)));
    }
    if let Some(k) = &c.kubepods {
        drv_ev.push(ev(k.roots.join(", "), format!("{} layout", k.driver.as_str())));
    }
    let configured = node.cgroup_driver.as_ref().map(|s| s.driver.as_str());
    let mismatch = matches!((configured, tree_driver), (Some(a), Some(b)) if a != b);
    out.push(Finding {
        id: "cgroup_setup",
        severity: if mismatch { Severity::Warning } else { Severity::Info },
        summary: format!(
            "cgroup {} (memory on v{} at {}); kubelet cgroup driver {}{}",
            c.cgroup.mode.as_str(),
            c.cgroup.memory_version,
            mem_root,
            configured.or(tree_driver).unwrap_or("unknown (no kubelet found)"),
            if mismatch { " but the kubepods tree uses the other driver's layout" } else { "" }
        ),
        evidence: drv_ev,
        implies: Verdict::Healthy,
    });

    // 9. Failed memcg creations and related incidents in the recent logs.
    log_findings(&mut out, c, &node.logs);

    // 9b. The trend of IDs in use, when the agent kept a history.
    out.extend(crate::forecast::exhaustion_finding(node.forecast.as_ref()));

    // 10. Kernel era.
    out.push(Finding {
        id: "kernel_era",
        severity: Severity::Info,
        summary: format!(
            "kernel {} is in era {}: dying memcgs {} their IDs; mkdir fails with {} when the ID space is full; kmem accounting {}{}",
            c.kernel.release,
            era.id.as_str(),
            if era.dying_hold_ids { "keep" } else { "release" },
            era.mkdir_errno_when_full.as_str(),
            if era.kmem_opt_in { "is opt-in (switched on per cgroup by kubelet/runc)" } else { "is always on in v1 (not a per-cgroup switch)" },
            if era.exact { String::new() } else { format!(" (release not recognised: {})", era.notes.join("; ")) }
        ),
        evidence: vec![ev("/proc/sys/kernel/osrelease", &c.kernel.release)],
        implies: Verdict::Healthy,
    });
    out
}

/// Evidence from incidents: where each was logged and the line, first three.
fn incident_evidence(incidents: &[&Incident]) -> Vec<Evidence> {
    incidents.iter().take(3).map(|i| ev(format!("{}:{}", i.source, i.line), &i.raw)).collect()
}

/// `memcg_create_failures`: mkdir of a memory cgroup failed within the window, so the
/// node ran out of memcgs whatever the census shows now (it may have recovered since).
/// `log_incidents`: the kernel's per-memcg slab failures and inotify exhaustion, which
/// come with leaking cgroups but do not stop pods by themselves.
fn log_findings(out: &mut Vec<Finding>, c: &Census, logs: &LogEvidence) {
    let since = logs.since.as_deref().unwrap_or("the window start");
    let failed: Vec<&Incident> = logs.incidents.iter().filter(|i| i.kind == IncidentKind::MemcgCreateFailed).collect();
    if !failed.is_empty() {
        let mut errnos = Vec::new();
        for e in failed.iter().filter_map(|i| i.errno) {
            if !errnos.contains(&e) {
                errnos.push(e);
            }
        }
        let mut pods: Vec<&str> = failed.iter().filter_map(|i| i.pod_uid.as_deref()).collect();
        pods.sort_unstable();
        pods.dedup();
        let era = &c.era;
        let expected = era.mkdir_errno_when_full.as_str();
        // Facts §1: each era has its errno; another one points elsewhere.
        let other_errno = errnos.iter().any(|e| !era.mkdir_errno_possible(*e));
        out.push(Finding {
            id: "memcg_create_failures",
            severity: Severity::Critical,
            summary: format!(
                "{} memcg creations failed in the logs since {since} ({}; {} pods): the node ran out of memory cgroups and new pods stay in ContainerCreating{}",
                failed.len(),
                if errnos.is_empty() { "errno not printed".to_string() } else { errnos.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ") },
                pods.len(),
                if other_errno {
                    format!(" (era {} returns {expected} when the ID space is full: another errno may be another cause, or another kernel)", era.id.as_str())
                } else {
                    String::new()
                }
            ),
            evidence: incident_evidence(&failed),
            implies: Verdict::Exhausted,
        });
    }
    let other: Vec<&Incident> = logs.incidents.iter().filter(|i| i.kind != IncidentKind::MemcgCreateFailed).collect();
    if !other.is_empty() {
        let n = |k: IncidentKind| other.iter().filter(|i| i.kind == k).count();
        let (slab, inotify) = (n(IncidentKind::SlabAllocFailed), n(IncidentKind::InotifyExhausted));
        let mut what = Vec::new();
        if slab > 0 {
            what.push(format!("{slab} failed allocations from per-memcg slab caches (kernel-memory accounting of leaking cgroups)"));
        }
        if inotify > 0 {
            what.push(format!("{inotify} inotify watch failures on cgroup directories (fs.inotify.max_user_watches: ENOSPC there is not memcg exhaustion)"));
        }
        out.push(Finding {
            id: "log_incidents",
            severity: Severity::Warning,
            summary: format!("in the logs since {since}: {}", what.join("; ")),
            evidence: incident_evidence(&other),
            implies: Verdict::Healthy,
        });
    }
}

fn dying_file(source: &str, mem_root: &str, cgroups_file: &str) -> String {
    match source {
        "proc_cgroups_minus_live" => cgroups_file.to_string(),
        "nr_dying_subsys_memory" | "nr_dying_descendants" => format!("{mem_root}/cgroup.stat"),
        _ => cgroups_file.to_string(),
    }
}

fn version_finding(id: &'static str, d: &DetectedVersion, enables: bool, kmem_matters: bool, bad: &str, good: &str) -> Finding {
    let (sev, implies) = if enables && kmem_matters { (Severity::Warning, Verdict::Healthy) } else { (Severity::Info, Verdict::Healthy) };
    Finding {
        id,
        severity: sev,
        summary: format!(
            "{} {}: {}{}",
            d.component.as_str(),
            d.version,
            if enables { bad } else { good },
            if enables && !kmem_matters { " (harmless here: this kernel does not leak through kmem opt-in)" } else { "" }
        ),
        evidence: vec![ev(d.binary.clone(), d.raw.clone())],
        implies,
    }
}

/// Remedies, best first, for this node's verdict and era.
fn remedies(verdict: Verdict, c: &Census, node: &NodeFacts, findings: &[Finding]) -> Vec<Remedy> {
    let era = &c.era;
    let has = |id: &str| findings.iter().any(|f| f.id == id && f.severity >= Severity::Warning);
    let mut out = Vec::new();
    let kmem_leak = has("kmem_accounting_active") || has("slab_dead_caches");
    let orphans = has("orphan_pod_cgroups");
    let dying_heavy = has("dying_memcgs");
    if verdict == Verdict::Healthy {
        return out;
    }
    if orphans {
        out.push(Remedy {
            action: "gc",
            summary: "remove orphaned pod cgroups (no tasks, no kubelet pod directory) in every controller hierarchy, deepest first".into(),
            needs_reboot: false,
            disturbs_pods: false,
        });
    }
    if kmem_leak && era.dying_hold_ids && verdict == Verdict::Exhausted {
        out.push(reboot_remedy(era.nokmem_supported && !node.nokmem));
    }
    if kmem_leak {
        out.push(Remedy {
            action: "migrate",
            summary: if era.dying_hold_ids {
                "move running pods' tasks into fresh memory cgroups without kmem accounting at the same paths, so deleting them no longer leaks; IDs already leaked stay until a reboot".into()
            } else {
                "move running pods' tasks into fresh memory cgroups without kmem accounting at the same paths, so deleted pods stop leaving slab-pinned dying memcgs".into()
            },
            needs_reboot: false,
            disturbs_pods: false,
        });
        if era.nokmem_supported && !node.nokmem {
            out.push(Remedy {
                action: "nokmem",
                summary: "add cgroup.memory=nokmem to the kernel command line (grub), effective at the next reboot: nothing can switch kmem accounting on again".into(),
                needs_reboot: true,
                disturbs_pods: true,
            });
        }
        if node.version(Component::Runc).is_some_and(|(_, v)| v < Version::parse("1.0.0-rc94").expect("constant")) {
            out.push(Remedy {
                action: "upgrade-runc",
                summary: "upgrade runc to 1.0.0-rc94 or later (or a build with the nokmem tag): new containers stop enabling kmem".into(),
                needs_reboot: false,
                disturbs_pods: false,
            });
        }
        if node.version(Component::Kubelet).is_some_and(|(_, v)| v.major == 1 && (8..=21).contains(&v.minor)) {
            out.push(Remedy {
                action: "upgrade-kubelet",
                summary: "upgrade kubelet to 1.22+ (or rebuild with -tags=nokmem): new pod cgroups stop enabling kmem".into(),
                needs_reboot: false,
                disturbs_pods: true,
            });
        }
        if era.dying_hold_ids {
            out.push(Remedy {
                action: "upgrade-kernel",
                summary: "move to a kernel where dying memcgs release their IDs (4.7+ upstream, or RHEL 8)".into(),
                needs_reboot: true,
                disturbs_pods: true,
            });
        }
    }
    if dying_heavy || (verdict >= Verdict::AtRisk && c.memcg.dying.unwrap_or(0) > 0 && era.dying_hold_ids) {
        let how = if c.cgroup.memory_version == 2 && era.has_memory_reclaim {
            "write a byte count to memory.reclaim of the parents holding dying children, in bounded steps"
        } else if c.cgroup.memory_version == 2 {
            "lower memory.high on the parents holding dying children for a moment, or sync; echo 1 > /proc/sys/vm/drop_caches"
        } else {
            "sync; echo 1 > /proc/sys/vm/drop_caches (page cache only; host-wide, at most hourly), or memory.force_empty on a live parent"
        };
        out.push(Remedy {
            action: "reclaim",
            summary: format!("release dying memcgs by reclaiming the page cache that pins them: {how}"),
            needs_reboot: false,
            disturbs_pods: false,
        });
    }
    if verdict >= Verdict::AtRisk && !era.dying_hold_ids {
        out.push(Remedy {
            action: "reduce-cgroups",
            summary: "live memcgs fill the ID space: find who creates them (cgleak status shows the kubepods share), lower the kubelet's max-pods, or move workloads to other nodes".into(),
            needs_reboot: false,
            disturbs_pods: true,
        });
    }
    if verdict == Verdict::Exhausted && !out.iter().any(|r| r.action == "reboot") {
        out.push(reboot_remedy(false));
    }
    out
}

fn reboot_remedy(with_nokmem: bool) -> Remedy {
    Remedy {
        action: "reboot",
        summary: if with_nokmem {
            "drain and reboot (hand the node to kured), with cgroup.memory=nokmem added first: the only way to free IDs leaked by dying memcgs".into()
        } else {
            "drain and reboot (hand the node to kured): frees every leaked ID at once".into()
        },
        needs_reboot: true,
        disturbs_pods: true,
    }
}

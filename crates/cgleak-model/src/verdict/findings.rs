//! The findings of `check`: one function per thing the census or the node says, each
//! with the file and value behind it and the verdict it alone implies.

use cgleak_readers::versions::{Component, DetectedVersion, Version};

use crate::census::{Census, Confidence, KmemAccounting, MEMCG_ID_LIMIT};
use crate::forecast::{Forecast, ForecastOutcome, FORECAST_AT_RISK_SECS, FORECAST_CRITICAL_SECS};
use crate::incidents::{Incident, IncidentKind};
use crate::kubepods::OrphanCharge;

use super::{ev, Evidence, Finding, LogEvidence, NodeFacts, Severity, Verdict, AT_RISK_FRACTION, LEAKING_DYING_MIN};

pub(super) fn findings(c: &Census, node: &NodeFacts) -> Vec<Finding> {
    let mut out = vec![id_headroom(c)];
    out.extend(dying(c));
    out.extend(kmem_active(c));
    out.extend(slab_dead_caches(c));
    out.extend(orphans(c));
    out.extend(nokmem_parameter(c, node));
    out.extend(component_versions(c, node));
    out.push(cgroup_setup(c, node));
    log_findings(&mut out, c, &node.logs);
    out.extend(exhaustion_forecast(node.forecast.as_ref()));
    out.push(kernel_era(c));
    out
}

fn dying_file(c: &Census) -> String {
    match c.memcg.dying_source {
        "nr_dying_subsys_memory" | "nr_dying_descendants" => format!("{}/cgroup.stat", c.cgroup.memory_root),
        _ => "/proc/cgroups".to_string(),
    }
}

/// 1. The ID space.
fn id_headroom(c: &Census) -> Finding {
    let m = &c.memcg;
    let mem_root = &c.cgroup.memory_root;
    let live_ev = match m.live_source {
        "nr_subsys_memory" => ev(format!("{mem_root}/cgroup.stat"), format!("nr_subsys_memory {} (live memcgs, root included)", m.live)),
        "subtree_control" => ev(
            format!("{mem_root}/**/cgroup.subtree_control"),
            format!("{} live memcgs (root plus children of cgroups with +memory)", m.live),
        ),
        _ => ev(mem_root.clone(), format!("{} live memcgs (directories, root included)", m.live)),
    };
    let mut evidence = vec![live_ev];
    if let Some(d) = m.dying {
        evidence.push(ev(dying_file(c), format!("{d} dying memcgs ({})", m.dying_source)));
    }
    evidence.push(ev("/proc/sys/kernel/osrelease", &c.kernel.release));
    match (m.ids_in_use, m.ids_in_use_confidence, m.headroom) {
        (Some(ids), Confidence::Exact | Confidence::Estimate, Some(head)) => {
            let frac = ids as f64 / MEMCG_ID_LIMIT as f64;
            let (severity, implies, what) = if head == 0 {
                (Severity::Critical, Verdict::Exhausted, "the memcg ID space is exhausted: every new cgroup mkdir fails".to_string())
            } else if frac >= AT_RISK_FRACTION {
                (Severity::Warning, Verdict::AtRisk, format!("{:.1}% of the memcg ID space is in use", frac * 100.0))
            } else {
                (Severity::Info, Verdict::Healthy, format!("{:.1}% of the memcg ID space is in use", frac * 100.0))
            };
            evidence.push(ev("MEM_CGROUP_ID_MAX", format!("limit {MEMCG_ID_LIMIT}, {ids} in use, headroom {head}")));
            Finding {
                id: "memcg_id_headroom",
                severity,
                summary: format!("{what}: {ids} of {MEMCG_ID_LIMIT} IDs ({}), headroom {head}; {}", m.ids_in_use_confidence.as_str(), m.ids_in_use_reason),
                evidence,
                implies,
            }
        }
        (Some(ids), conf, _) => {
            let implies = if ids >= MEMCG_ID_LIMIT {
                Verdict::Exhausted
            } else if ids as f64 >= AT_RISK_FRACTION * MEMCG_ID_LIMIT as f64 {
                Verdict::AtRisk
            } else {
                Verdict::Healthy
            };
            Finding {
                id: "memcg_id_headroom",
                severity: if implies == Verdict::Healthy { Severity::Warning } else { Severity::Critical },
                summary: format!(
                    "at least {ids} of {MEMCG_ID_LIMIT} memcg IDs in use ({}); headroom cannot be counted on this kernel: {}",
                    conf.as_str(),
                    m.ids_in_use_reason
                ),
                evidence,
                implies,
            }
        }
        (None, _, _) => Finding {
            id: "memcg_id_headroom",
            severity: Severity::Warning,
            summary: format!("memcg IDs in use cannot be determined: {}", m.ids_in_use_reason),
            evidence,
            implies: Verdict::Healthy,
        },
    }
}

/// 2. Dying memcgs.
fn dying(c: &Census) -> Option<Finding> {
    let m = &c.memcg;
    let era = &c.era;
    if let Some(d) = m.dying {
        let leaking = d >= LEAKING_DYING_MIN && d >= m.live;
        let cost = if era.dying_hold_ids { "each keeps its memcg ID" } else { "each keeps tens of KB of kernel memory and slows reclaim and memory.stat" };
        return Some(Finding {
            id: "dying_memcgs",
            severity: if leaking { Severity::Warning } else { Severity::Info },
            summary: if leaking {
                format!("{d} dying memcgs (more than the {} live ones) are pinned by page cache or kernel memory; {cost}", m.live)
            } else {
                format!("{d} dying memcgs, {} live: within normal churn", m.live)
            },
            evidence: vec![ev(dying_file(c), format!("dying {d} ({})", m.dying_source))],
            implies: if leaking { Verdict::Leaking } else { Verdict::Healthy },
        });
    }
    era.dying_hold_ids.then(|| Finding {
        id: "dying_memcgs",
        severity: Severity::Info,
        summary: format!("dying memcgs cannot be counted on {}: /proc/cgroups forgets them at rmdir while they keep their IDs", era.id.as_str()),
        evidence: vec![ev("/proc/cgroups", "num_cgroups excludes dying memcgs on 3.10")],
        implies: Verdict::Healthy,
    })
}

/// 3. kmem accounting where it is opt-in (3.10, el7, 4.0 .. 4.5).
fn kmem_active(c: &Census) -> Option<Finding> {
    let m = &c.memcg;
    let era = &c.era;
    let k = m.kmem_active?;
    let how = m.kmem_active_note.clone().map(|n| format!(" ({n})")).unwrap_or_default();
    Some(Finding {
        id: "kmem_accounting_active",
        severity: if k > 0 { Severity::Warning } else { Severity::Info },
        summary: if k > 0 {
            format!(
                "{k} memcgs have kernel-memory accounting switched on{how}: on {} each of them, once deleted, {} while slab objects stay charged to it",
                era.id.as_str(),
                if era.dying_hold_ids { "keeps its memcg ID" } else { "lingers as a dying memcg holding kernel memory" }
            )
        } else {
            "no memcg has kernel-memory accounting switched on".to_string()
        },
        evidence: vec![ev(format!("{}/*/memory.kmem.usage_in_bytes, memory.kmem.slabinfo", c.cgroup.memory_root), format!("{k} kmem-active"))],
        implies: if k > 0 { Verdict::Leaking } else { Verdict::Healthy },
    })
}

/// 4. Slab caches of cgroups that are gone.
fn slab_dead_caches(c: &Census) -> Option<Finding> {
    let s = &c.slab.summary;
    if s.per_memcg_caches == 0 {
        return None;
    }
    let dead = s.dead_caches > 0;
    Some(Finding {
        id: "slab_dead_caches",
        severity: if dead { Severity::Warning } else { Severity::Info },
        summary: format!(
            "{} per-memcg slab caches for {} kmemcg IDs; {} caches ({} IDs) belong to cgroups that no longer exist",
            s.per_memcg_caches, s.distinct_ids, s.dead_caches, s.dead_ids
        ),
        evidence: vec![ev("/sys/kernel/slab", format!("{} per-memcg caches, {} dead", s.per_memcg_caches, s.dead_caches))],
        implies: if dead { Verdict::Leaking } else { Verdict::Healthy },
    })
}

/// 5. Orphaned pod cgroups hold live IDs nobody will free.
fn orphans(c: &Census) -> Option<Finding> {
    let kp = c.kubepods.as_ref()?;
    let o = kp.orphans.filter(|o| *o > 0)?;
    let ids: u64 = kp.orphan_pods.iter().map(|p| p.memcgs).sum();
    let of = |ch: OrphanCharge| kp.orphan_pods.iter().filter(|p| p.charge == ch).map(|p| p.memcgs).sum::<u64>();
    let (none, cache, kmem) = (of(OrphanCharge::None), of(OrphanCharge::PageCache), of(OrphanCharge::Kmem));
    Some(Finding {
        id: "orphan_pod_cgroups",
        severity: Severity::Warning,
        summary: format!(
            "{o} pod cgroups have no task and no pod directory in the kubelet's state: leaked, they hold {ids} memcg IDs \
             (pods and their container cgroups; {none} with no charge left, {cache} pinned by page cache, {kmem} kmem-charged)"
        ),
        evidence: kp
            .orphan_pods
            .iter()
            .take(5)
            .map(|p| {
                let charge = match (p.kmem_bytes, p.usage_bytes) {
                    (Some(k), Some(u)) => format!("{} (usage {u} bytes, kmem {k} bytes)", p.charge.as_str()),
                    _ => p.charge.as_str().to_string(),
                };
                ev(p.path.clone(), format!("no tasks; {}/{} missing; {} memcgs, charge {charge}", kp.kubelet_pods_dir, p.uid, p.memcgs))
            })
            .collect(),
        implies: Verdict::Leaking,
    })
}

/// 6. The boot parameter cgroup.memory=nokmem, on the running kernel and the next one.
fn nokmem_parameter(c: &Census, node: &NodeFacts) -> Option<Finding> {
    let era = &c.era;
    let mut evidence = vec![ev("/proc/cmdline", node.cmdline.clone().unwrap_or_else(|| "(unreadable)".into()))];
    let next = node.next_boot.as_ref().filter(|n| n.release != c.kernel.release);
    if let Some(n) = &node.next_boot {
        evidence.push(ev(
            n.source.clone(),
            format!(
                "next boot: {} ({}){}",
                n.release,
                n.how,
                match n.cmdline_has_nokmem {
                    Some(true) => ", with cgroup.memory=nokmem",
                    Some(false) => ", without cgroup.memory=nokmem",
                    None => "",
                }
            ),
        ));
    }
    let support = "upstream 4.5+, RHEL7 3.10.0-1062+";
    let summary = if node.nokmem && era.nokmem_supported {
        "cgroup.memory=nokmem is set: kernel-memory accounting is off, kmem limit writes are ignored".to_string()
    } else if node.nokmem {
        format!("cgroup.memory=nokmem is set but {} does not honour it ({support}): kmem accounting works as without it", c.kernel.release)
    } else if !era.kmem_opt_in && !crate::verdict::situation::slab_pins_dying(era) {
        return None;
    } else if era.nokmem_supported {
        "cgroup.memory=nokmem is not set; this kernel honours it: with it, nothing can switch kmem accounting on".to_string()
    } else {
        format!("cgroup.memory=nokmem is not set, and {} does not support it ({support})", c.kernel.release)
    };
    let next_words = next.map(|n| {
        let supports = crate::era::KernelEra::from_release_str(&n.release).nokmem_supported;
        format!("; the boot loader starts {} next, which {} it", n.release, if supports { "honours" } else { "does not know" })
    });
    Some(Finding { id: "nokmem_boot_parameter", severity: Severity::Info, summary: format!("{summary}{}", next_words.unwrap_or_default()), evidence, implies: Verdict::Healthy })
}

/// 7. Userspace that switches kmem accounting on (facts §3).
fn component_versions(c: &Census, node: &NodeFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let kmem_matters = c.kernel.kmem_accounting == KmemAccounting::OptIn;
    if let Some((d, v)) = node.version(Component::Kubelet) {
        let enables = v.major == 1 && (8..=21).contains(&v.minor);
        out.push(version_finding(
            "kubelet_version",
            d,
            enables,
            kmem_matters,
            "kubelet 1.8..1.21 enables kmem accounting in pod cgroups (unless built with -tags=nokmem)",
            "kubelet 1.22+ does not enable kmem accounting",
        ));
    }
    if let Some((d, v)) = node.version(Component::Runc) {
        let enables = v < Version::parse("1.0.0-rc94").expect("constant version");
        out.push(version_finding(
            "runc_version",
            d,
            enables,
            kmem_matters,
            "runc before 1.0.0-rc94 enables kmem accounting in container cgroups (unless built with the nokmem tag)",
            "runc 1.0.0-rc94+ ignores kernel memory",
        ));
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
    out
}

fn version_finding(id: &'static str, d: &DetectedVersion, enables: bool, kmem_matters: bool, bad: &str, good: &str) -> Finding {
    Finding {
        id,
        severity: if enables && kmem_matters { Severity::Warning } else { Severity::Info },
        summary: format!(
            "{} {}: {}{}",
            d.component.as_str(),
            d.version,
            if enables { bad } else { good },
            if enables && !kmem_matters { " (harmless here: kmem accounting is not a per-cgroup switch on this node)" } else { "" }
        ),
        evidence: vec![ev(d.binary.clone(), d.raw.clone())],
        implies: Verdict::Healthy,
    }
}

/// 8. Driver and mode.
fn cgroup_setup(c: &Census, node: &NodeFacts) -> Finding {
    let tree_driver = c.kubepods.as_ref().map(|k| k.driver.as_str());
    let mut evidence = Vec::new();
    if let Some(s) = &node.cgroup_driver {
        evidence.push(ev(s.source.clone(), format!("cgroupDriver {}", s.driver)));
    }
    if let Some(k) = &c.kubepods {
        evidence.push(ev(k.roots.join(", "), format!("{} layout", k.driver.as_str())));
    }
    let configured = node.cgroup_driver.as_ref().map(|s| s.driver.as_str());
    let mismatch = matches!((configured, tree_driver), (Some(a), Some(b)) if a != b);
    Finding {
        id: "cgroup_setup",
        severity: if mismatch { Severity::Warning } else { Severity::Info },
        summary: format!(
            "cgroup {} (memory on v{} at {}); kubelet cgroup driver {}{}",
            c.cgroup.mode.as_str(),
            c.cgroup.memory_version,
            c.cgroup.memory_root,
            configured.or(tree_driver).unwrap_or("unknown (no kubelet found)"),
            if mismatch { " but the kubepods tree uses the other driver's layout" } else { "" }
        ),
        evidence,
        implies: Verdict::Healthy,
    }
}

/// Evidence from incidents: where each was logged and the line, first three.
fn incident_evidence(incidents: &[&Incident]) -> Vec<Evidence> {
    incidents.iter().take(3).map(|i| ev(format!("{}:{}", i.source, i.line), &i.raw)).collect()
}

/// Rule 9: `memcg_create_failures`: mkdir of a memory cgroup failed within the window, so the
/// node ran out of memcgs whatever the census shows now (it may have recovered since).
/// `log_incidents`: the kernel's per-memcg slab failures and inotify exhaustion, which
/// come with leaking cgroups but do not stop pods by themselves. Both from trusted lines
/// only (the kubelet, a container runtime, systemd, the kernel): the words are plain text
/// any tenant can print. `untrusted_log_lines` (info) names the others.
fn log_findings(out: &mut Vec<Finding>, c: &Census, logs: &LogEvidence) {
    let since = logs.since.as_deref().unwrap_or("the window start");
    let trusted = || logs.incidents.iter().filter(|i| i.trusted);
    let failed: Vec<&Incident> = trusted().filter(|i| i.kind == IncidentKind::MemcgCreateFailed).collect();
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
    let other: Vec<&Incident> = trusted().filter(|i| i.kind != IncidentKind::MemcgCreateFailed).collect();
    if !other.is_empty() {
        let n = |k: IncidentKind| other.iter().filter(|i| i.kind == k).count();
        let (slab, inotify) = (n(IncidentKind::SlabAllocFailed), n(IncidentKind::InotifyExhausted));
        let mut what = Vec::new();
        if slab > 0 {
            what.push(format!("{slab} records of failed allocations from per-memcg slab caches (kernel-memory accounting of leaking cgroups; a rate-limit line stands for several)"));
        }
        if inotify > 0 {
            what.push(format!(
                "{inotify} inotify failures (watches on cgroup directories: fs.inotify.max_user_watches; inotify_init: max_user_instances): not memcg exhaustion"
            ));
        }
        out.push(Finding {
            id: "log_incidents",
            severity: Severity::Warning,
            summary: format!("in the logs since {since}: {}", what.join("; ")),
            evidence: incident_evidence(&other),
            implies: Verdict::Healthy,
        });
    }
    let untrusted: Vec<&Incident> = logs.incidents.iter().filter(|i| !i.trusted).collect();
    if !untrusted.is_empty() {
        let mut reasons: Vec<&str> = Vec::new();
        for i in &untrusted {
            if !reasons.contains(&i.origin.as_str()) {
                reasons.push(&i.origin);
            }
        }
        let more = if reasons.len() > 3 { format!("; and {} more reasons", reasons.len() - 3) } else { String::new() };
        let mkdirs = untrusted.iter().filter(|i| i.kind == IncidentKind::MemcgCreateFailed).count();
        out.push(Finding {
            id: "untrusted_log_lines",
            severity: Severity::Info,
            summary: format!(
                "{} log lines since {since} read like memcg exhaustion ({mkdirs} failed memcg creations) but are not evidence: only the kubelet, the container runtimes, systemd and the kernel are believed, and these lines are {}{more}; the verdict leaves them out",
                untrusted.len(),
                reasons.iter().take(3).copied().collect::<Vec<_>>().join("; "),
            ),
            evidence: incident_evidence(&untrusted),
            implies: Verdict::Healthy,
        });
    }
}

/// 9b. The trend of IDs in use, when the agent kept a history: built from the forecast's value.
pub fn exhaustion_forecast(forecast: Option<&Forecast>) -> Option<Finding> {
    let f = forecast?;
    let fit = match (f.fit_from_unix_secs, f.fit_to_unix_secs) {
        (Some(a), Some(b)) => format!("{} samples from {a:.0} to {b:.0} (unix)", f.samples_used),
        _ => format!("{} samples", f.samples_used),
    };
    let evidence = vec![ev(
        "agent history (IDs in use per sample)",
        format!("{fit}, slope {:+.2} IDs/hour, tau {:.2}, limit {}", f.slope_per_hour, f.kendall_tau, f.id_limit),
    )];
    let (severity, implies, summary) = match (f.outcome, f.seconds_to_exhaustion) {
        (ForecastOutcome::Exhausted, _) => (Severity::Critical, Verdict::Exhausted, "the memcg ID space was exhausted at the last sample".to_string()),
        (ForecastOutcome::Approaching, Some(s)) => {
            let when = format!(
                "at {:+.1} IDs per hour the memcg ID space runs out in {} ({} confidence)",
                f.slope_per_hour,
                crate::forecast::rough_time_left(s),
                f.confidence.as_str()
            );
            if s < FORECAST_CRITICAL_SECS {
                (Severity::Critical, Verdict::AtRisk, when)
            } else if s < FORECAST_AT_RISK_SECS {
                (Severity::Warning, Verdict::AtRisk, when)
            } else {
                (Severity::Info, Verdict::Healthy, when)
            }
        }
        (ForecastOutcome::TooFewSamples, _) => (Severity::Info, Verdict::Healthy, format!("no forecast yet: {}", f.notes.join("; "))),
        _ => (Severity::Info, Verdict::Healthy, format!("IDs in use are not rising ({:+.2} per hour): no exhaustion in sight", f.slope_per_hour)),
    };
    Some(Finding { id: "exhaustion_forecast", severity, summary, evidence, implies })
}

/// 10. Kernel era.
fn kernel_era(c: &Census) -> Finding {
    let era = &c.era;
    Finding {
        id: "kernel_era",
        severity: Severity::Info,
        summary: format!(
            "kernel {} is in era {}: dying memcgs {} their IDs; mkdir fails with {} when the ID space is full; kmem accounting is {}{}",
            c.kernel.release,
            era.id.as_str(),
            if era.dying_hold_ids { "keep" } else { "release" },
            era.mkdir_errno_when_full.as_str(),
            c.kernel.kmem_accounting.describe(era, c.cgroup.memory_version),
            if era.exact { String::new() } else { format!(" (release not recognised: {})", era.notes.join("; ")) }
        ),
        evidence: vec![ev("/proc/sys/kernel/osrelease", &c.kernel.release)],
        implies: Verdict::Healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::{forecast, History, Sample};

    const T0: f64 = 1_700_000_000.0;

    /// One sample a minute for `n` minutes, the forecast taken at the last one.
    fn forecast_of(n: usize, f: impl Fn(usize) -> f64) -> Forecast {
        let mut h = History::new(10_000);
        for i in 0..n {
            h.push(Sample { at_unix_secs: T0 + 60.0 * i as f64, ids_in_use: f(i).round() as u64, id_limit: MEMCG_ID_LIMIT, dying: None });
        }
        forecast(&h, T0 + 60.0 * (n - 1) as f64)
    }

    #[test]
    fn forecast_finding_follows_the_forecast() {
        assert!(exhaustion_forecast(None).is_none());
        // 3 days left: at_risk warning.
        let f = forecast_of(120, |i| 65535.0 - 3.0 * 1440.0 - 119.0 + i as f64);
        let finding = exhaustion_forecast(Some(&f)).unwrap();
        assert_eq!(finding.id, "exhaustion_forecast");
        assert_eq!((finding.severity, finding.implies), (Severity::Warning, Verdict::AtRisk));
        assert!(finding.summary.contains("3.0 days"), "{}", finding.summary);
        // Idle: informational.
        let finding = exhaustion_forecast(Some(&forecast_of(120, |_| 500.0))).unwrap();
        assert_eq!((finding.severity, finding.implies), (Severity::Info, Verdict::Healthy));
        // Exhausted at the last sample: critical.
        let finding = exhaustion_forecast(Some(&forecast_of(10, |i| 65530.0 + i as f64))).unwrap();
        assert_eq!((finding.severity, finding.implies), (Severity::Critical, Verdict::Exhausted));
    }
}

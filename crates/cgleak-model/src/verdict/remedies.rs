//! The decision table: which remedies help this node, best first, and what each gains.
//!
//! The rows are [`Situation`]s (kernel era or build, verdict, node facts); the README's
//! table "Remedies by era" is rendered from the rows of `tests/remedy_table.rs`, which
//! check every cell. The rules, from the kernel facts (docs/kernel-facts.md):
//!
//! - Where dying memcgs keep their IDs (3.10, el7 every build, 4.0-4.4.17, 4.5, 4.6) and
//!   kernel memory pins them, nothing but a reboot gives those IDs back: on a node short
//!   of IDs the reboot comes first (kured drains it), `gc` is offered only for the IDs it
//!   really frees (an orphan with no charge left is freed at rmdir; one pinned by page
//!   cache after reclaim; a kmem-charged one not at all), and `migrate` needs free IDs
//!   for its mirror.
//! - Where dying memcgs release their IDs (4.4.18+, 4.7+), a full ID space is live
//!   memcgs: a reboot brings them back, so it is never offered; `gc` and fewer cgroups are.
//! - `cgroup.memory=nokmem` only where the running kernel, or the one the boot loader
//!   starts next, honours it (upstream 4.5+, el7 3.10.0-1062+); el7 862/957 must update
//!   within CentOS 7 first.
//! - kubelet and runc upgrades stop new cgroups from switching kmem on, but kubepods and
//!   its QoS classes stay kmem-active and new pods inherit it until they are recreated.

use serde::Serialize;

use crate::census::{Confidence, KmemAccounting, MEMCG_ID_LIMIT};
use crate::era::EraId;

use super::situation::Situation;
use super::Verdict;

/// How sure an ID gain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GainBound {
    Exact,
    AtLeast,
    AtMost,
    Unknown,
}

/// What a remedy gives back of the memcg ID space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdGain {
    /// IDs freed, as far as known (0: none now).
    pub ids: Option<u64>,
    pub bound: GainBound,
    /// It stops (or slows) the leak for what comes after.
    pub stops_leak: bool,
    pub summary: String,
}

impl IdGain {
    fn none_now(stops_leak: bool, summary: impl Into<String>) -> IdGain {
        IdGain { ids: Some(0), bound: GainBound::Exact, stops_leak, summary: summary.into() }
    }

    fn unknown(summary: impl Into<String>) -> IdGain {
        IdGain { ids: None, bound: GainBound::Unknown, stops_leak: false, summary: summary.into() }
    }

    /// `12`, `>=12`, `<=12`, `?`: the table's short form.
    pub fn short(&self) -> String {
        match (self.ids, self.bound) {
            (Some(n), GainBound::Exact) => n.to_string(),
            (Some(n), GainBound::AtLeast) => format!(">={n}"),
            (Some(n), GainBound::AtMost) => format!("<={n}"),
            _ => "?".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remedy {
    /// The name `cgleak fix` knows it by where it has one (`gc`, `reclaim`, `migrate`,
    /// `nokmem`, `reboot`), else the operator's step (`update-kernel`, `upgrade-kubelet`, ...).
    pub action: &'static str,
    pub summary: String,
    pub needs_reboot: bool,
    pub disturbs_pods: bool,
    pub id_gain: IdGain,
    /// How to carry it out, where one command does.
    pub command: Option<String>,
}

/// Why a remedy the table considered is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotOfferedKind {
    /// The kernel lacks what it needs (a boot parameter, a file).
    Unsupported,
    /// The node's state forbids it now (no free ID for a migration's mirror).
    Precondition,
    /// It would not help here.
    NoGain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotOffered {
    pub action: &'static str,
    pub kind: NotOfferedKind,
    pub reason: String,
}

/// Remedies and what was left out, as the table builds them.
#[derive(Default)]
struct Table {
    offered: Vec<Remedy>,
    left_out: Vec<NotOffered>,
}

impl Table {
    fn offer(&mut self, r: Remedy) {
        if !self.offered.iter().any(|x| x.action == r.action) {
            self.offered.push(r);
        }
    }

    fn leave_out(&mut self, action: &'static str, kind: NotOfferedKind, reason: impl Into<String>) {
        if !self.left_out.iter().any(|x| x.action == action) && !self.offered.iter().any(|x| x.action == action) {
            self.left_out.push(NotOffered { action, kind, reason: reason.into() });
        }
    }
}

/// The era as a sentence names it: the release for el7 builds ("3.10.0-957.el7"), else the era.
fn era_words(s: &Situation) -> String {
    match s.era {
        EraId::El7 => format!("el7 {}", s.release.split(".el7").next().unwrap_or(&s.release)),
        EraId::Linux310 => "3.10".into(),
        other => other.as_str().to_string(),
    }
}

/// Kernel memory pins deleted memcgs here: kmem is being charged to them (kmem-active
/// memcgs or slab caches of deleted cgroups) on a kernel whose slab pins a dying memcg.
fn kmem_pins(s: &Situation) -> bool {
    s.kmem_leak && s.slab_pins && s.kmem != KmemAccounting::OffNokmem
}

/// Remedies for this row, best first, and those left out with why.
pub fn remedies(s: &Situation) -> (Vec<Remedy>, Vec<NotOffered>) {
    let mut t = Table::default();
    if s.verdict == Verdict::Healthy {
        return (t.offered, t.left_out);
    }
    let kept = s.dying_hold_ids;
    let pins = kmem_pins(s);
    // Live memcgs alone at the at_risk line: they come back after a reboot.
    let live_fill = s.live as f64 >= super::AT_RISK_FRACTION * MEMCG_ID_LIMIT as f64;
    // 1. IDs held by kmem-pinned dying memcgs on a node short of them: only a reboot frees them.
    if kept && pins && s.short() && !live_fill {
        t.offer(reboot(s, true));
        gc(s, &mut t);
        stop_with_nokmem(s, &mut t);
        reclaim(s, &mut t);
        stop_in_userspace(s, &mut t);
        migrate(s, &mut t);
        upgrade_kernel(s, &mut t);
    } else if kept && pins {
        // 2. Leaking IDs, not short yet (or live memcgs fill it): stop the leak without a reboot first, plan the reboot.
        if live_fill {
            reduce_cgroups(s, &mut t);
        }
        gc(s, &mut t);
        stop_in_userspace(s, &mut t);
        migrate(s, &mut t);
        stop_with_nokmem(s, &mut t);
        reclaim(s, &mut t);
        t.offer(reboot(s, false));
        upgrade_kernel(s, &mut t);
    } else if kept {
        // 3. IDs held by dying memcgs that page cache pins: reclaim gives them back.
        reclaim(s, &mut t);
        gc(s, &mut t);
        if s.short() {
            if live_fill {
                reduce_cgroups(s, &mut t);
            }
            t.offer(reboot(s, false));
        }
        upgrade_kernel(s, &mut t);
    } else {
        // 4. Dying memcgs release their IDs: a short ID space is live memcgs, unless the
        // census counts plenty free while the logs show failures (another cause).
        let counted_free = s.headroom.filter(|h| *h as f64 >= (1.0 - super::AT_RISK_FRACTION) * MEMCG_ID_LIMIT as f64);
        gc(s, &mut t);
        match counted_free {
            Some(h) if s.short() => other_cause(s, h, &mut t),
            _ if s.short() => reduce_cgroups(s, &mut t),
            _ => {}
        }
        if pins {
            stop_in_userspace(s, &mut t);
            migrate(s, &mut t);
            stop_with_nokmem(s, &mut t);
        }
        if s.dying_heavy || s.swap_pins || pins {
            reclaim(s, &mut t);
        }
        if s.short() {
            let why = match counted_free {
                Some(h) => format!("on {} dying memcgs release their IDs and {h} IDs are free: a reboot frees none", era_words(s)),
                None => format!("on {} dying memcgs release their IDs: the {} live memcgs hold them and come back after a reboot", era_words(s), s.live),
            };
            t.leave_out("reboot", NotOfferedKind::NoGain, why);
        }
    }
    (t.offered, t.left_out)
}

/// IDs a reboot frees: every one held by a dying memcg.
fn reboot_gain(s: &Situation) -> IdGain {
    let summary = "every ID held by a dying memcg comes back";
    match (s.ids_in_use, s.confidence, s.dying) {
        (Some(ids), Confidence::Exact | Confidence::Estimate, _) if ids > s.live => IdGain {
            ids: Some(ids - s.live),
            bound: GainBound::Exact,
            stops_leak: false,
            summary: format!("{summary}: {} IDs", ids - s.live),
        },
        (_, _, Some(d)) => IdGain { ids: Some(d), bound: GainBound::AtMost, stops_leak: false, summary: format!("{summary}: up to the {d} dying memcgs") },
        _ if s.dead_slab_ids > 0 => IdGain {
            ids: Some(s.dead_slab_ids),
            bound: GainBound::AtLeast,
            stops_leak: false,
            summary: format!(
                "{summary}: at least the {} still seen through slab caches of deleted cgroups (dying memcgs cannot be counted on {})",
                s.dead_slab_ids,
                era_words(s)
            ),
        },
        _ => IdGain::unknown(format!("{summary} (dying memcgs cannot be counted on {})", era_words(s))),
    }
}

fn reboot(s: &Situation, only_way: bool) -> Remedy {
    let nokmem_first = if s.nokmem.active_after_reboot() {
        " cgroup.memory=nokmem is on the next boot's command line, so kmem accounting stays off after it.".to_string()
    } else if s.nokmem.available() && pins_or_kmem(s) {
        " Add cgroup.memory=nokmem first (cgleak fix nokmem), or the leak starts again.".to_string()
    } else {
        String::new()
    };
    let why = if only_way {
        format!("on {} dying memcgs pinned by kernel memory keep their IDs until a reboot: nothing else frees them.", era_words(s))
    } else if kmem_pins(s) {
        format!("frees the IDs leaked by kmem-pinned dying memcgs on {}; plan it in a maintenance window.", era_words(s))
    } else {
        format!("the last resort on {}: frees every ID held by dying memcgs.", era_words(s))
    };
    let mut gain = reboot_gain(s);
    gain.stops_leak = s.nokmem.active_after_reboot();
    Remedy {
        action: "reboot",
        summary: format!("hand the node to kured (cgleak fix reboot writes its sentinel; kured drains the node, then reboots it): {why}{nokmem_first}"),
        needs_reboot: true,
        disturbs_pods: true,
        id_gain: gain,
        command: Some("cgleak fix reboot --apply".into()),
    }
}

fn pins_or_kmem(s: &Situation) -> bool {
    kmem_pins(s) || s.kmem == KmemAccounting::OptIn
}

fn gc(s: &Situation, t: &mut Table) {
    let o = &s.orphans;
    if o.pods == 0 {
        return;
    }
    let pods = format!("{} orphaned pod cgroups ({} memcgs)", o.pods, o.memcgs);
    if !s.dying_hold_ids {
        t.offer(Remedy {
            action: "gc",
            summary: format!("remove the {pods} in every controller hierarchy, deepest first: their IDs are released when they go offline"),
            needs_reboot: false,
            disturbs_pods: false,
            id_gain: IdGain { ids: Some(o.memcgs), bound: GainBound::Exact, stops_leak: false, summary: format!("{} IDs", o.memcgs) },
            command: Some("cgleak fix gc --apply".into()),
        });
        return;
    }
    // Where dying memcgs keep their IDs, a removed memcg gives its ID back only once it is freed (facts §1a, §4).
    let freed = o.uncharged + o.page_cache;
    let mut parts = vec![format!("{} with no charge left are freed at rmdir", o.uncharged)];
    if o.page_cache > 0 {
        parts.push(format!("{} pinned by page cache once reclaim drops it (cgleak fix reclaim)", o.page_cache));
    }
    if o.kmem > 0 {
        parts.push(format!("{} kmem-charged keep their IDs until a reboot", o.kmem));
    }
    if o.unknown > 0 {
        parts.push(format!("{} of unknown charge", o.unknown));
    }
    if freed == 0 {
        t.leave_out(
            "gc",
            NotOfferedKind::NoGain,
            format!("removing the {pods} frees no ID on {}: {}", era_words(s), parts.join("; ")),
        );
        return;
    }
    let (ids, bound) = if o.page_cache > 0 || o.unknown > 0 { (o.uncharged, GainBound::AtLeast) } else { (o.uncharged, GainBound::Exact) };
    t.offer(Remedy {
        action: "gc",
        summary: format!("remove the {pods} in every controller hierarchy, deepest first; of their memcgs on {}: {}", era_words(s), parts.join("; ")),
        needs_reboot: false,
        disturbs_pods: false,
        id_gain: IdGain { ids: Some(ids), bound, stops_leak: false, summary: format!("{} IDs at rmdir, {} more after reclaim, {} not before a reboot", o.uncharged, o.page_cache, o.kmem) },
        command: Some("cgleak fix gc --apply".into()),
    });
}

/// How reclaim works on this memory hierarchy.
fn reclaim_how(s: &Situation, slab: bool) -> &'static str {
    match (s.memory_version, s.has_memory_reclaim, slab) {
        (2, true, _) => "memory.reclaim on the parents holding dying children, in bounded rounds",
        (2, false, _) => "sync, then drop_caches 1 (page cache, host-wide, at most hourly)",
        (_, _, true) => "sync, then drop_caches 2 (slab) and 1 (page cache), host-wide, at most once an hour (--min-interval), or every few hours by the agent (--reclaim-every 6h)",
        _ => "sync, then drop_caches 1 (page cache, host-wide, at most once an hour)",
    }
}

fn reclaim(s: &Situation, t: &mut Table) {
    let slab = kmem_pins(s) && s.memory_version == 1;
    let command = Some(if slab { "cgleak fix reclaim --slab --apply" } else { "cgleak fix reclaim --apply" }.to_string());
    let (summary, gain) = if s.dying_hold_ids {
        if slab {
            (
                format!(
                    "a mitigation: {}; frees the slab objects and page cache pinning some dying memcgs, whose IDs then return (objects still in use keep theirs)",
                    reclaim_how(s, true)
                ),
                IdGain::unknown("some of the IDs held by dying memcgs"),
            )
        } else {
            let gain = match s.dying {
                Some(d) => IdGain { ids: Some(d), bound: GainBound::AtMost, stops_leak: false, summary: format!("up to the {d} dying memcgs' IDs") },
                None => IdGain::unknown("the IDs of dying memcgs pinned only by page cache"),
            };
            (format!("release dying memcgs pinned by page cache, and with them their IDs on {}: {}", era_words(s), reclaim_how(s, false)), gain)
        }
    } else if s.swap_pins {
        (
            format!("release dying memcgs: {}; swapped-out shmem pins some of their IDs until it is read back or freed", reclaim_how(s, slab)),
            IdGain::unknown("the IDs swap entries pin, if their shmem is freed"),
        )
    } else {
        (
            format!("release dying memcgs and the kernel memory they hold: {}", reclaim_how(s, slab)),
            IdGain::none_now(false, format!("none: dying memcgs release their IDs on {}; frees tens of KB of kernel memory each", era_words(s))),
        )
    };
    t.offer(Remedy { action: "reclaim", summary, needs_reboot: false, disturbs_pods: false, id_gain: gain, command });
}

/// `cgroup.memory=nokmem`, or the update that brings it.
fn stop_with_nokmem(s: &Situation, t: &mut Table) {
    let n = &s.nokmem;
    if s.kmem == KmemAccounting::OffNokmem {
        return;
    }
    let next = n.next_boot.as_ref();
    if n.active_after_reboot() {
        let nb = next.expect("active after reboot has a next boot");
        t.leave_out(
            "nokmem",
            NotOfferedKind::NoGain,
            format!("{} (the next kernel to boot) has cgroup.memory=nokmem on its command line already: the reboot turns kmem accounting off", nb.release),
        );
        return;
    }
    let gain_after = if s.dying_hold_ids {
        "none now; after the reboot into it nothing switches kmem on, so deleted pods' memcgs are freed once their page cache is reclaimed and give their IDs back"
    } else {
        "none now (dying memcgs release their IDs here); after the reboot slab no longer pins deleted memcgs, so fewer linger"
    };
    if n.available() {
        let target = match next {
            Some(nb) if nb.supports_nokmem && nb.differs && !n.running_supports => format!(" for {}, the next kernel to boot (the running one ignores it)", nb.release),
            _ => String::new(),
        };
        t.offer(Remedy {
            action: "nokmem",
            summary: format!("add cgroup.memory=nokmem to the kernel command line{target}, effective at the next reboot: nothing can switch kmem accounting on again"),
            needs_reboot: true,
            disturbs_pods: true,
            id_gain: IdGain::none_now(true, gain_after),
            command: Some("cgleak fix nokmem --apply".into()),
        });
        return;
    }
    let first = n.first_with_it.unwrap_or("4.5");
    let lacks = match next {
        Some(nb) if nb.differs => format!("neither {} nor {} (the next kernel to boot) knows cgroup.memory=nokmem", s.release, nb.release),
        _ => format!("{} does not know cgroup.memory=nokmem", s.release),
    };
    if s.era == EraId::El7 {
        t.leave_out("nokmem", NotOfferedKind::Unsupported, format!("{lacks}; the first el7 build with it is {first}"));
        t.offer(Remedy {
            action: "update-kernel",
            summary: format!(
                "update within CentOS 7 to {first} or later (yum update kernel), then add cgroup.memory=nokmem (cgleak fix nokmem), then reboot: {lacks}"
            ),
            needs_reboot: true,
            disturbs_pods: true,
            id_gain: IdGain::none_now(true, gain_after),
            command: Some(format!("yum update kernel  # to {first}+, then: cgleak fix nokmem --apply")),
        });
    } else {
        t.leave_out("nokmem", NotOfferedKind::Unsupported, format!("{lacks} (upstream {first}+; not in 4.4)"));
    }
}

/// kubelet and runc that switch kmem on: where it is opt-in, their upgrades stop new cgroups from leaking.
fn stop_in_userspace(s: &Situation, t: &mut Table) {
    let inherit = "kubepods and its QoS classes stay kmem-active and new pods inherit it until they are recreated (cgleak fix migrate --cgroup kubepods, or a reboot)";
    if s.kmem != KmemAccounting::OptIn {
        for (old, action) in [(s.kubelet_enables_kmem, "upgrade-kubelet"), (s.runc_enables_kmem, "upgrade-runc")] {
            if old {
                t.leave_out(
                    action,
                    NotOfferedKind::NoGain,
                    format!("kmem accounting is not a per-cgroup switch here ({}): what kubelet or runc writes changes nothing", s.kmem.as_str()),
                );
            }
        }
        return;
    }
    if s.kubelet_enables_kmem {
        t.offer(Remedy {
            action: "upgrade-kubelet",
            summary: format!("upgrade kubelet to 1.22+ (or rebuild with -tags=nokmem): new pod cgroups stop switching kmem on; {inherit}"),
            needs_reboot: false,
            disturbs_pods: true,
            id_gain: IdGain::none_now(false, "none now; slows the leak (stops it only once kubepods is recreated)"),
            command: None,
        });
    }
    if s.runc_enables_kmem {
        t.offer(Remedy {
            action: "upgrade-runc",
            summary: format!("upgrade runc to 1.0.0-rc94 or later (or a build with the nokmem tag): new container cgroups stop switching kmem on; {inherit}"),
            needs_reboot: false,
            disturbs_pods: false,
            id_gain: IdGain::none_now(false, "none now; slows the leak (stops it only once kubepods is recreated)"),
            command: None,
        });
    }
}

/// What a migration of `mirror_ids` memcgs needs of the ID space here: Ok with a note
/// where it cannot be checked, Err with the reason it must not run. Used by the table and
/// by `fix migrate`'s plan, which counts its own mirror.
pub fn migrate_precondition(s: &Situation, mirror_ids: u64) -> Result<Option<String>, String> {
    match s.headroom {
        Some(h) if h < mirror_ids => Err(format!("the mirror needs {mirror_ids} free memcg IDs and the headroom is {h}: free some first (cgleak fix gc, reclaim)")),
        Some(_) => Ok(None),
        None if s.verdict == Verdict::Exhausted && !s.creation_failures_logged => Err(format!(
            "the node is out of memcg IDs and the mirror needs {mirror_ids} free ones: every mkdir of the mirror would fail; free IDs first (the remedies before migrate)"
        )),
        None if s.creation_failures_logged => Err(format!(
            "the headroom cannot be counted on {} and the logs show failed memcg creations: the mirror needs {mirror_ids} free memcg IDs",
            era_words(s)
        )),
        None => Ok(Some(format!(
            "the headroom cannot be counted on {}: the mirror needs {mirror_ids} free memcg IDs; prove them first with cgleak probe --count {mirror_ids}",
            era_words(s)
        ))),
    }
}

fn migrate(s: &Situation, t: &mut Table) {
    if s.kmem != KmemAccounting::OptIn {
        if s.kmem_leak {
            t.leave_out(
                "migrate",
                NotOfferedKind::NoGain,
                format!("fresh memcgs account kernel memory too here ({}): a migration changes nothing", s.kmem.as_str()),
            );
        }
        return;
    }
    let (Some(n), Some(root)) = (s.kubepods_memcgs, s.kubepods_root.as_deref()) else { return };
    let after = if s.kubelet_enables_kmem || s.runc_enables_kmem {
        " Do it after kubelet and runc stop switching kmem on, or new pods leak again."
    } else {
        ""
    };
    let kept = if s.dying_hold_ids { " IDs already leaked stay until a reboot." } else { "" };
    match migrate_precondition(s, n) {
        Err(why) => t.leave_out("migrate", NotOfferedKind::Precondition, why),
        Ok(note) => t.offer(Remedy {
            action: "migrate",
            summary: format!(
                "move running pods' tasks into fresh memory cgroups without kmem accounting at the same paths (the {root} tree, its QoS classes included), no reboot.{kept}{after}{}",
                note.map(|n| format!(" Note: {n}.")).unwrap_or_default()
            ),
            needs_reboot: false,
            disturbs_pods: false,
            id_gain: IdGain::none_now(true, format!("none now; needs about {n} free IDs meanwhile; deleted pods stop leaking")),
            command: Some(format!("cgleak fix migrate --cgroup {root} --apply")),
        }),
    }
}

fn upgrade_kernel(s: &Situation, t: &mut Table) {
    let el7 = if s.era == EraId::El7 { "; no el7 build up to 1160 gives them back" } else { "" };
    t.offer(Remedy {
        action: "upgrade-kernel",
        summary: format!("move to a kernel where dying memcgs release their IDs (upstream 4.4.18+ or 4.7+, RHEL 8){el7}"),
        needs_reboot: true,
        disturbs_pods: true,
        id_gain: IdGain { stops_leak: true, ..reboot_gain(s) },
        command: None,
    });
}

/// Failed memcg creations logged on a kernel that releases IDs, while the census counts
/// `free` IDs: not the memcg ID leak (facts §1a: ENOSPC on 4.4.18+ is unexplained by it).
fn other_cause(s: &Situation, free: u64, t: &mut Table) {
    let what = if s.failures_match_era {
        "the failed creations in the logs came from a burst of live memcgs that has passed, or from another limit with the same errno"
    } else {
        "the failed creations in the logs, with an errno this kernel does not return on a full ID space, are not memcg ID exhaustion"
    };
    t.offer(Remedy {
        action: "find-other-cause",
        summary: format!(
            "the census counts {free} free memcg IDs on {}, so {what}: look at fs.inotify.max_user_watches and \
             max_user_instances (ENOSPC from inotify on cgroup directories), the kmem ID space (ENOSPC once ~65k live memcgs are \
             kmem-active), who creates cgroups in bursts, and memory pressure (ENOMEM); cgleak logs shows the lines",
            era_words(s)
        ),
        needs_reboot: false,
        disturbs_pods: false,
        id_gain: IdGain::unknown("none of the memcg ID space (it is not short)"),
        command: Some("cgleak logs --since 1h".into()),
    });
}

fn reduce_cgroups(s: &Situation, t: &mut Table) {
    t.offer(Remedy {
        action: "reduce-cgroups",
        summary: format!(
            "the {} live memcgs fill the ID space: find who creates them (cgleak status shows the kubepods share), lower the kubelet's max-pods, or move workloads to other nodes",
            s.live
        ),
        needs_reboot: false,
        disturbs_pods: true,
        id_gain: IdGain::unknown("one ID per memcg removed"),
        command: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::situation::{NextKernel, NokmemFacts, OrphanGains};

    /// An el7 957 node leaking kmem-pinned IDs, not short; each test changes what it is about.
    fn el7() -> Situation {
        Situation {
            verdict: Verdict::Leaking,
            era: EraId::El7,
            release: "3.10.0-957.27.2.el7.x86_64".into(),
            dying_hold_ids: true,
            memory_version: 1,
            kmem: KmemAccounting::OptIn,
            kmem_leak: true,
            slab_pins: true,
            dying_heavy: false,
            nokmem: NokmemFacts { set: false, running_supports: false, next_boot: None, first_with_it: Some("3.10.0-1062") },
            kubelet_enables_kmem: true,
            runc_enables_kmem: true,
            orphans: OrphanGains::default(),
            live: 400,
            ids_in_use: Some(460),
            confidence: Confidence::LowerBound,
            headroom: None,
            dying: None,
            dead_slab_ids: 60,
            creation_failures_logged: false,
            failures_match_era: false,
            kubepods_memcgs: Some(300),
            kubepods_root: Some("kubepods".into()),
            has_memory_reclaim: false,
            swap_pins: false,
        }
    }

    fn actions(s: &Situation) -> Vec<&'static str> {
        remedies(s).0.iter().map(|r| r.action).collect()
    }

    fn left_out(s: &Situation, action: &str) -> Option<NotOffered> {
        remedies(s).1.into_iter().find(|n| n.action == action)
    }

    #[test]
    fn healthy_has_no_remedy() {
        assert!(remedies(&Situation { verdict: Verdict::Healthy, ..el7() }) == (vec![], vec![]));
    }

    #[test]
    fn exhausted_el7_reboots_first_and_never_migrates() {
        let s = Situation { verdict: Verdict::Exhausted, creation_failures_logged: true, ..el7() };
        let a = actions(&s);
        assert_eq!(a[0], "reboot", "{a:?}");
        assert!(!a.contains(&"migrate") && !a.contains(&"nokmem"), "{a:?}");
        assert!(a.contains(&"update-kernel"), "{a:?}");
        assert_eq!(left_out(&s, "migrate").unwrap().kind, NotOfferedKind::Precondition);
        assert!(left_out(&s, "migrate").unwrap().reason.contains("the mirror needs 300 free memcg IDs"));
        // Without logs, exhausted by other evidence (a forecast): still no mirror.
        let s = Situation { verdict: Verdict::Exhausted, ..el7() };
        assert!(left_out(&s, "migrate").unwrap().reason.contains("out of memcg IDs"));
    }

    #[test]
    fn live_memcgs_filling_the_space_are_not_a_reboot_case() {
        let s = Situation { verdict: Verdict::AtRisk, live: 60_000, ids_in_use: Some(60_060), ..el7() };
        let a = actions(&s);
        assert_eq!(a[0], "reduce-cgroups", "{a:?}");
        assert_ne!(a.iter().position(|x| *x == "reboot"), Some(0));
    }

    #[test]
    fn gc_gain_by_charge_where_ids_are_kept() {
        let s = Situation {
            verdict: Verdict::Exhausted,
            orphans: OrphanGains { pods: 3, memcgs: 9, uncharged: 1, page_cache: 2, kmem: 6, unknown: 0 },
            ..el7()
        };
        let (r, _) = remedies(&s);
        let gc = r.iter().find(|r| r.action == "gc").unwrap();
        assert_eq!((gc.id_gain.ids, gc.id_gain.bound), (Some(1), GainBound::AtLeast));
        assert!(gc.summary.contains("2 pinned by page cache once reclaim drops it"), "{}", gc.summary);
        // All kmem-charged: nothing to gain, left out with why.
        let s = Situation { orphans: OrphanGains { pods: 2, memcgs: 6, kmem: 6, ..OrphanGains::default() }, ..s };
        assert!(!actions(&s).contains(&"gc"));
        assert_eq!(left_out(&s, "gc").unwrap().kind, NotOfferedKind::NoGain);
        // Where IDs are released, every orphan memcg's ID comes back.
        let s = Situation { dying_hold_ids: false, era: EraId::Linux47To5440, ..s };
        let gc = remedies(&s).0.into_iter().find(|r| r.action == "gc").unwrap();
        assert_eq!((gc.id_gain.ids, gc.id_gain.bound), (Some(6), GainBound::Exact));
    }

    #[test]
    fn nokmem_follows_the_kernel_that_boots_next() {
        let next = |release: &str, supports: bool, has: Option<bool>| NextKernel {
            release: release.into(),
            how: "saved_entry".into(),
            supports_nokmem: supports,
            has_nokmem: has,
            differs: true,
        };
        // 957 now, 1160 next: offered for 1160.
        let s = Situation { nokmem: NokmemFacts { next_boot: Some(next("3.10.0-1160.el7.x86_64", true, Some(false))), ..el7().nokmem }, ..el7() };
        let (r, _) = remedies(&s);
        assert!(r.iter().find(|r| r.action == "nokmem").unwrap().summary.contains("for 3.10.0-1160.el7.x86_64, the next kernel to boot"));
        assert!(!actions(&s).contains(&"update-kernel"));
        // 1160 next with nokmem already on its entry: the reboot does it.
        let s = Situation { nokmem: NokmemFacts { next_boot: Some(next("3.10.0-1160.el7.x86_64", true, Some(true))), ..el7().nokmem }, ..el7() };
        assert_eq!(left_out(&s, "nokmem").unwrap().kind, NotOfferedKind::NoGain);
        assert!(remedies(&s).0.iter().find(|r| r.action == "reboot").unwrap().id_gain.stops_leak);
        // Nothing that honours it: el7 updates within CentOS 7 first; 4.4 has no such path.
        assert_eq!(left_out(&el7(), "nokmem").unwrap().kind, NotOfferedKind::Unsupported);
        let s = Situation { era: EraId::Linux40To46, release: "4.4.0-21-generic".into(), nokmem: NokmemFacts { first_with_it: Some("4.5"), ..el7().nokmem }, ..el7() };
        assert!(!actions(&s).contains(&"update-kernel"));
        assert!(left_out(&s, "nokmem").unwrap().reason.contains("not in 4.4"));
    }

    #[test]
    fn kmem_on_for_every_memcg_leaves_out_userspace_and_migrate() {
        let s = Situation {
            era: EraId::Linux47To5440,
            release: "4.19.0-25-amd64".into(),
            dying_hold_ids: false,
            kmem: KmemAccounting::OnForEvery,
            nokmem: NokmemFacts { running_supports: true, first_with_it: None, ..el7().nokmem },
            ..el7()
        };
        let a = actions(&s);
        assert!(a.contains(&"nokmem") && !a.contains(&"upgrade-kubelet") && !a.contains(&"migrate"), "{a:?}");
        assert_eq!(left_out(&s, "migrate").unwrap().kind, NotOfferedKind::NoGain);
        assert_eq!(left_out(&s, "upgrade-kubelet").unwrap().kind, NotOfferedKind::NoGain);
    }

    #[test]
    fn failures_logged_with_plenty_counted_free_point_elsewhere() {
        let s = Situation {
            verdict: Verdict::Exhausted,
            era: EraId::Linux612Plus,
            release: "6.18.0".into(),
            dying_hold_ids: false,
            kmem: KmemAccounting::OnForEvery,
            kmem_leak: false,
            slab_pins: false,
            confidence: Confidence::Exact,
            ids_in_use: Some(400),
            headroom: Some(65_135),
            creation_failures_logged: true,
            ..el7()
        };
        assert_eq!(actions(&s), vec!["find-other-cause"]);
        assert!(left_out(&s, "reboot").unwrap().reason.contains("65135 IDs are free"));
        assert_eq!(migrate_precondition(&s, 10), Ok(None));
    }

    #[test]
    fn migrate_precondition_by_headroom_and_logs() {
        let s = el7();
        assert!(migrate_precondition(&s, 300).unwrap().unwrap().contains("cgleak probe --count 300"));
        let s = Situation { creation_failures_logged: true, ..el7() };
        assert!(migrate_precondition(&s, 300).unwrap_err().contains("the mirror needs 300"));
        let s = Situation { headroom: Some(299), confidence: Confidence::Exact, ..el7() };
        assert!(migrate_precondition(&s, 300).unwrap_err().contains("the headroom is 299"));
        let s = Situation { headroom: Some(300), ..s };
        assert_eq!(migrate_precondition(&s, 300), Ok(None));
    }
}

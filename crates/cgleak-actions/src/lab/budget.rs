//! How many memcgs the lab makes at most, and the cap it keeps the host under.
//!
//! Each memcg costs kernel memory, and a dying one keeps costing it until its page
//! cache is reclaimed (docs/kernel-facts.md section 1); the host must always be able to create
//! cgroups of its own (section 7). So the lab counts live and dying memcgs alike.

use serde::Serialize;

/// The lab never takes a host past this many memcgs, live and dying together.
pub const HOST_MEMCG_CAP: u64 = 5000;

/// At most this many orphaned pod cgroups are kept at once; the oldest goes first,
/// as a kubelet's housekeeping would eventually remove it.
pub const MAX_ORPHANS_KEPT: u32 = 100;

/// The memcgs of the tree itself: the scratch parent, `kubepods`, `burstable`, `besteffort`.
pub const TREE_MEMCGS: u64 = 4;

/// A pod's memcgs: its own and one per container.
pub fn memcgs_per_pod(containers_per_pod: u32) -> u64 {
    1 + u64::from(containers_per_pod)
}

/// Pods that churn deletes in `duration_secs` at `pods_per_minute`; None when the lab
/// runs until stopped (or churns not at all: then 0).
pub fn churn_deletions(pods_per_minute: u32, duration_secs: Option<f64>) -> Option<u64> {
    if pods_per_minute == 0 {
        return Some(0);
    }
    // +1: the schedule may fit one more step than the floor when the last lands on the deadline.
    duration_secs.map(|d| (d * f64::from(pods_per_minute) / 60.0).floor() as u64 + 1)
}

/// Orphaned pod cgroups held at once: none without `orphan_every`; else every Nth
/// deletion, capped at [`MAX_ORPHANS_KEPT`] (the cap alone when the lab runs until stopped).
pub fn max_orphans(orphan_every: Option<u32>, deletions: Option<u64>) -> u64 {
    let cap = u64::from(MAX_ORPHANS_KEPT);
    match (orphan_every, deletions) {
        (None, _) => 0,
        (Some(n), Some(d)) => (d / u64::from(n.max(1))).min(cap),
        (Some(_), None) => cap,
    }
}

/// The most memcgs the lab has live at once: the tree, `pods` pods (churn deletes one
/// before it creates the next) and the orphans it keeps.
pub fn lab_memcgs_max(pods: u32, containers_per_pod: u32, orphans: u64) -> u64 {
    TREE_MEMCGS + u64::from(pods) * memcgs_per_pod(containers_per_pod) + orphans
}

/// The host's memcgs as a census counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemcgCount {
    pub live: u64,
    /// None where the kernel does not let dying memcgs be counted (3.10).
    pub dying: Option<u64>,
    /// How dying memcgs were counted (`proc_cgroups_minus_live`, `nr_dying_subsys_memory`, ...).
    pub dying_source: &'static str,
}

/// The lab plus the host would go past [`HOST_MEMCG_CAP`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "the lab would make up to {lab_max} memcgs and this host already has {host_live} live and {host_dying} dying: {} in all, \
     above the {cap} the lab ever takes a host to",
    .lab_max + .host_live + .host_dying
)]
pub struct OverCap {
    pub lab_max: u64,
    pub host_live: u64,
    pub host_dying: u64,
    pub cap: u64,
}

/// Whether a lab of at most `lab_max` memcgs fits beside what the host has now.
/// Dying memcgs the kernel cannot count are taken as none (there is nothing better to go by).
pub fn check_cap(host: &MemcgCount, lab_max: u64) -> Result<(), OverCap> {
    let dying = host.dying.unwrap_or(0);
    if host.live + dying + lab_max > HOST_MEMCG_CAP {
        return Err(OverCap { lab_max, host_live: host.live, host_dying: dying, cap: HOST_MEMCG_CAP });
    }
    Ok(())
}

/// Whether one more pod of `per_pod` memcgs fits while `in_use` memcgs (live and dying) exist.
pub fn room_for_pod(in_use: u64, per_pod: u64) -> bool {
    in_use + per_pod <= HOST_MEMCG_CAP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(live: u64, dying: Option<u64>) -> MemcgCount {
        MemcgCount { live, dying, dying_source: "proc_cgroups_minus_live" }
    }

    #[test]
    fn lab_size_is_the_tree_the_pods_and_the_orphans() {
        // 4 + 20 * (1 + 2)
        assert_eq!(lab_memcgs_max(20, 2, 0), 64);
        assert_eq!(lab_memcgs_max(6, 2, 0), 22);
        assert_eq!(lab_memcgs_max(1, 1, 0), 6);
        assert_eq!(lab_memcgs_max(1000, 3, 100), 4 + 4000 + 100);
        assert_eq!(memcgs_per_pod(2), 3);
    }

    #[test]
    fn orphans_follow_the_deletions_and_are_capped() {
        assert_eq!(churn_deletions(0, None), Some(0));
        assert_eq!(churn_deletions(30, None), None);
        assert_eq!(churn_deletions(120, Some(25.0)), Some(51));
        assert_eq!(churn_deletions(30, Some(90.0)), Some(46));
        assert_eq!(max_orphans(None, Some(1000)), 0);
        assert_eq!(max_orphans(None, None), 0);
        assert_eq!(max_orphans(Some(5), Some(51)), 10);
        assert_eq!(max_orphans(Some(1), Some(100_000)), 100);
        assert_eq!(max_orphans(Some(10), None), 100);
        assert_eq!(max_orphans(Some(3), Some(0)), 0);
    }

    #[test]
    fn cap_counts_live_and_dying_of_the_host() {
        assert_eq!(check_cap(&host(40, Some(30)), 64), Ok(()));
        // Exactly at the cap is allowed; one more is not.
        assert_eq!(check_cap(&host(4000, Some(936)), 64), Ok(()));
        let e = check_cap(&host(4000, Some(937)), 64).unwrap_err();
        assert_eq!(e, OverCap { lab_max: 64, host_live: 4000, host_dying: 937, cap: 5000 });
        let text = e.to_string();
        assert!(
            text.contains("up to 64 memcgs") && text.contains("4000 live and 937 dying") && text.contains("5001"),
            "{text}"
        );
        assert!(text.contains("5000"), "{text}");
        // Uncountable dying memcgs (3.10) do not block.
        assert_eq!(check_cap(&host(100, None), 4900), Ok(()));
        assert!(check_cap(&host(101, None), 4900).is_err());
        // The flags alone can be too many: 1700 pods of 3 memcgs.
        assert!(check_cap(&host(1, Some(0)), lab_memcgs_max(1700, 2, 0)).is_err());
        assert!(check_cap(&host(1, Some(0)), lab_memcgs_max(1600, 2, 0)).is_ok());
    }

    #[test]
    fn room_for_one_more_pod() {
        assert!(room_for_pod(4997, 3));
        assert!(!room_for_pod(4998, 3));
        assert!(room_for_pod(0, 3));
    }
}

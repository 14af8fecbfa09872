//! The kubelet's cgroup tree: pods and containers by QoS class, for both drivers.
//!
//! cgroupfs driver: `kubepods/burstable/pod<uid>/<container>`, guaranteed pods
//! directly under `kubepods/pod<uid>`.
//! systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
//! cri-containerd-<id>.scope` (also `docker-<id>.scope`, `crio-<id>.scope`), guaranteed
//! pods as `kubepods.slice/kubepods-pod<uid>.slice`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use cgleak_readers::cgroupfs::{ChildDir, WalkDir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    Besteffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::Besteffort => "besteffort",
        }
    }
    fn from_name(s: &str) -> Option<QosClass> {
        match s {
            "burstable" => Some(QosClass::Burstable),
            "besteffort" => Some(QosClass::Besteffort),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

/// A pod cgroup found in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodCgroup {
    pub uid: String,
    pub qos: QosClass,
    pub driver: CgroupDriver,
    /// Relative to the memory hierarchy's root.
    pub path: PathBuf,
    pub containers: u32,
}

/// What role a directory plays in a kubepods tree: a function of its path alone (the role
/// of its parent and its name), so that any thread of a parallel walk can tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Outside,
    Root(CgroupDriver),
    Qos(CgroupDriver, QosClass),
    Pod(CgroupDriver),
}

impl Role {
    /// The role of a directory named `name` whose parent has this role. A kubepods inside
    /// kubepods or inside a pod is not a new root; under anything else it is (kubepods can sit
    /// under a --cgroup-root).
    fn child(self, name: &str) -> Role {
        match self {
            Role::Outside => match name {
                "kubepods" => Role::Root(CgroupDriver::Cgroupfs),
                "kubepods.slice" => Role::Root(CgroupDriver::Systemd),
                _ => Role::Outside,
            },
            Role::Root(driver) => match qos_dir(driver, name) {
                Some(q) => Role::Qos(driver, q),
                None if is_pod(driver, name, QosClass::Guaranteed) => Role::Pod(driver),
                None => Role::Outside,
            },
            Role::Qos(driver, qos) if is_pod(driver, name, qos) => Role::Pod(driver),
            Role::Qos(..) | Role::Pod(_) => Role::Outside,
        }
    }

    /// The role of the directory at `components` (from the hierarchy's root).
    fn of(components: &[CString]) -> Role {
        components.iter().fold(Role::Outside, |r, c| r.child(std::str::from_utf8(c.as_bytes()).unwrap_or("")))
    }
}

/// Collects pod cgroups while the census walks the memory hierarchy. One per thread of a
/// parallel walk: [`merge`](Self::merge) them; what they hold does not depend on the order
/// of the visits.
#[derive(Debug, Default)]
pub struct KubepodsCollector {
    /// Pod cgroups as their parent's listing showed them, containers from their link count.
    pods: Vec<PodCgroup>,
    /// Pod cgroups that were listed themselves, with their containers counted exactly.
    listed: Vec<(PathBuf, u32)>,
    roots: Vec<(PathBuf, CgroupDriver)>,
}

impl KubepodsCollector {
    /// Call for every visited directory with its subdirectories.
    pub fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
        let role = Role::of(dir.components);
        match role {
            // Outside any kubepods tree, only a child named kubepods matters.
            Role::Outside => {
                for c in children {
                    if let Role::Root(driver) = role.child(c.name_str()) {
                        self.roots.push((dir.rel_path().join(c.name_str()), driver));
                    }
                }
            }
            Role::Pod(driver) => {
                let containers = children.iter().filter(|c| is_container(driver, c.name_str())).count() as u32;
                self.listed.push((dir.rel_path(), containers));
            }
            Role::Root(_) | Role::Qos(..) => {
                let qos = if let Role::Qos(_, q) = role { q } else { QosClass::Guaranteed };
                let mut rel = None;
                for c in children {
                    let name = c.name_str();
                    let Role::Pod(driver) = role.child(name) else { continue };
                    let Some(uid) = pod_uid(driver, name, qos) else { continue };
                    let path = rel.get_or_insert_with(|| dir.rel_path()).join(name);
                    // Until the pod directory itself is listed, its link count gives the number of containers.
                    self.pods.push(PodCgroup { uid, qos, driver, path, containers: c.subdirs.unwrap_or(0) });
                }
            }
        }
    }

    /// Take in what another collector of the same walk found.
    pub fn merge(&mut self, other: KubepodsCollector) {
        self.pods.extend(other.pods);
        self.listed.extend(other.listed);
        self.roots.extend(other.roots);
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The kubepods roots found (with their driver) and the pods, each sorted by path, so
    /// reports are stable; a pod that was listed has its containers counted exactly.
    pub fn into_roots_and_pods(self) -> (Vec<(PathBuf, CgroupDriver)>, Vec<PodCgroup>) {
        let mut roots = self.roots;
        roots.sort_by_cached_key(|r| path_key(&r.0));
        let mut pods: Vec<(Vec<u8>, PodCgroup)> = self.pods.into_iter().map(|p| (path_key(&p.path), p)).collect();
        pods.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut listed: Vec<(Vec<u8>, u32)> = self.listed.into_iter().map(|(p, n)| (path_key(&p), n)).collect();
        listed.sort_unstable();
        let mut listed = listed.into_iter().peekable();
        for (key, pod) in &mut pods {
            while listed.next_if(|l| l.0 < *key).is_some() {}
            if let Some((_, n)) = listed.next_if(|l| l.0 == *key) {
                pod.containers = n;
            }
        }
        let pods = pods.into_iter().map(|(_, p)| p).collect();
        (roots, pods)
    }
}

/// A key whose byte order is the order of [`Path`]'s `cmp` (component by component) for
/// the relative paths the walk makes, cheaper to compare: '/' made lower than any byte a
/// name can hold.
fn path_key(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().iter().map(|&c| if c == b'/' { 0 } else { c }).collect()
}

/// Whether `name` is a pod cgroup's (see [`pod_uid`]), without making the UID.
fn is_pod(driver: CgroupDriver, name: &str, qos: QosClass) -> bool {
    let rest = match driver {
        CgroupDriver::Cgroupfs => name.strip_prefix("pod"),
        CgroupDriver::Systemd => name.strip_suffix(".slice").and_then(|r| {
            r.strip_prefix(match qos {
                QosClass::Guaranteed => "kubepods-pod",
                QosClass::Burstable => "kubepods-burstable-pod",
                QosClass::Besteffort => "kubepods-besteffort-pod",
            })
        }),
    };
    rest.is_some_and(|u| !u.is_empty())
}

fn qos_dir(driver: CgroupDriver, name: &str) -> Option<QosClass> {
    match driver {
        CgroupDriver::Cgroupfs => QosClass::from_name(name),
        CgroupDriver::Systemd => QosClass::from_name(name.strip_prefix("kubepods-")?.strip_suffix(".slice")?),
    }
}

/// The pod UID in a pod cgroup's name; systemd slices write its dashes as `_`.
pub fn pod_uid(driver: CgroupDriver, name: &str, qos: QosClass) -> Option<String> {
    let uid = match driver {
        CgroupDriver::Cgroupfs => name.strip_prefix("pod")?.to_string(),
        CgroupDriver::Systemd => {
            let rest = name.strip_suffix(".slice")?;
            let prefix = match qos {
                QosClass::Guaranteed => "kubepods-pod".to_string(),
                q => format!("kubepods-{}-pod", q.as_str()),
            };
            rest.strip_prefix(prefix.as_str())?.replace('_', "-")
        }
    };
    (!uid.is_empty()).then_some(uid)
}

/// The pod (and container) a memcg path names, by the roles the census walk gives directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath {
    pub uid: String,
    pub qos: QosClass,
    pub driver: CgroupDriver,
    /// The container cgroup's id (systemd: the scope name without its runtime prefix and `.scope`).
    pub container_id: Option<String>,
}

/// Which pod and container `path` (relative to the memory hierarchy's root, e.g.
/// `/kubepods/burstable/pod<uid>/<id>`) belongs to, for both drivers; None outside a pod.
pub fn pod_of_path(path: &str) -> Option<PodPath> {
    let mut role = Role::Outside;
    let mut found: Option<PodPath> = None;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(p) = found.as_mut() {
            // Only the level right below the pod is a container; deeper levels belong to it.
            if p.container_id.is_none() && is_container(p.driver, name) {
                p.container_id = Some(container_id(p.driver, name));
            }
            return found;
        }
        let qos = match role {
            Role::Qos(_, q) => q,
            _ => QosClass::Guaranteed,
        };
        role = role.child(name);
        if let Role::Pod(driver) = role {
            found = Some(PodPath { uid: pod_uid(driver, name, qos)?, qos, driver, container_id: None });
        }
    }
    found
}

/// A container's id from its cgroup name: cgroupfs uses the id itself; systemd
/// `cri-containerd-<id>.scope`, `docker-<id>.scope`, `crio-<id>.scope`.
pub fn container_id(driver: CgroupDriver, name: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => name.to_string(),
        CgroupDriver::Systemd => {
            let stem = name.strip_suffix(".scope").unwrap_or(name);
            stem.rsplit_once('-').map(|(_, id)| id).unwrap_or(stem).to_string()
        }
    }
}

/// A container cgroup under a pod. CRI-O's conmon scope sits beside the container's.
fn is_container(driver: CgroupDriver, name: &str) -> bool {
    match driver {
        CgroupDriver::Cgroupfs => true,
        CgroupDriver::Systemd => name.ends_with(".scope") && !name.starts_with("crio-conmon-"),
    }
}

/// Counts by QoS class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QosCounts {
    pub pods: u64,
    pub containers: u64,
}

/// An orphaned pod cgroup: no task in its subtree, and the kubelet has no directory for its UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanPod {
    pub uid: String,
    pub qos: QosClass,
    /// Container cgroups still under it.
    pub containers: u32,
    /// Host path of the pod cgroup in the memory hierarchy.
    pub path: String,
    /// Memory cgroups in its subtree (the pod's own included): the IDs it holds.
    pub memcgs: u64,
    /// Kernel memory still charged to its subtree (v1 memory.kmem.usage_in_bytes; v2 memory.stat
    /// slab + kernel_stack); None where unreadable.
    pub kmem_bytes: Option<u64>,
    /// All memory still charged to its subtree (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage_bytes: Option<u64>,
    pub charge: OrphanCharge,
}

/// What still charges an orphan's memcgs. Where dying memcgs keep their IDs (3.10, el7,
/// 4.0-4.4.17/4.6), this decides what removing it gains: an uncharged memcg is freed at
/// rmdir and its ID returns; one pinned by page cache only after reclaim (drop_caches 1);
/// a kmem-charged one keeps its ID until its slab objects go, in practice until a reboot
/// (facts §1a, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanCharge {
    None,
    PageCache,
    Kmem,
    Unknown,
}

impl OrphanCharge {
    /// From the subtree's kmem and total charges.
    pub fn of(kmem_bytes: Option<u64>, usage_bytes: Option<u64>) -> OrphanCharge {
        match (kmem_bytes, usage_bytes) {
            (Some(k), _) if k > 0 => OrphanCharge::Kmem,
            (Some(_), Some(u)) if u > 0 => OrphanCharge::PageCache,
            (Some(_), Some(_)) => OrphanCharge::None,
            _ => OrphanCharge::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrphanCharge::None => "none",
            OrphanCharge::PageCache => "page_cache",
            OrphanCharge::Kmem => "kmem",
            OrphanCharge::Unknown => "unknown",
        }
    }
}

/// The `kubepods` object of `status --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct KubepodsSummary {
    pub driver: CgroupDriver,
    /// Host paths of the kubepods roots found.
    pub roots: Vec<String>,
    pub pods: u64,
    pub containers: u64,
    /// Null when the kubelet's pods directory is missing (nothing can be called an orphan then).
    pub orphans: Option<u64>,
    pub orphan_pods: Vec<OrphanPod>,
    pub by_qos: BTreeMap<&'static str, QosCounts>,
    /// The kubelet pods directory consulted for orphans.
    pub kubelet_pods_dir: String,
    pub kubelet_pods_dir_found: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_and_container_from_paths_of_both_drivers() {
        let uid = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";
        let p = pod_of_path(&format!("/kubepods/burstable/pod{uid}/abc123")).unwrap();
        assert_eq!((p.uid.as_str(), p.qos, p.driver, p.container_id.as_deref()), (uid, QosClass::Burstable, CgroupDriver::Cgroupfs, Some("abc123")));
        let g = pod_of_path(&format!("/kubepods/pod{uid}")).unwrap();
        assert_eq!((g.qos, g.container_id), (QosClass::Guaranteed, None));
        let sd = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-feed01.scope", uid.replace('-', "_"));
        let s = pod_of_path(&sd).unwrap();
        assert_eq!((s.uid.as_str(), s.qos, s.driver, s.container_id.as_deref()), (uid, QosClass::Besteffort, CgroupDriver::Systemd, Some("feed01")));
        let conmon = format!("/kubepods.slice/kubepods-pod{}.slice/crio-conmon-1.scope", uid.replace('-', "_"));
        assert_eq!(pod_of_path(&conmon).unwrap().container_id, None);
        assert_eq!(pod_of_path("/system.slice/kubelet.service"), None);
        assert_eq!(pod_of_path("/kubepods/burstable"), None);
        // A kubepods tree under a --cgroup-root is still one.
        assert_eq!(pod_of_path(&format!("/cgleak-test-1/kubepods/besteffort/pod{uid}/c")).unwrap().qos, QosClass::Besteffort);
    }

    #[test]
    fn uid_from_both_drivers() {
        let uid = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";
        assert_eq!(pod_uid(CgroupDriver::Cgroupfs, &format!("pod{uid}"), QosClass::Burstable).as_deref(), Some(uid));
        let sd = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
        assert_eq!(pod_uid(CgroupDriver::Systemd, &sd, QosClass::Burstable).as_deref(), Some(uid));
        let g = format!("kubepods-pod{}.slice", uid.replace('-', "_"));
        assert_eq!(pod_uid(CgroupDriver::Systemd, &g, QosClass::Guaranteed).as_deref(), Some(uid));
        assert_eq!(pod_uid(CgroupDriver::Systemd, "kubepods-besteffort.slice", QosClass::Guaranteed), None);
        assert_eq!(pod_uid(CgroupDriver::Cgroupfs, "burstable", QosClass::Guaranteed), None);
        assert_eq!(qos_dir(CgroupDriver::Systemd, "kubepods-besteffort.slice"), Some(QosClass::Besteffort));
        assert!(!is_container(CgroupDriver::Systemd, "crio-conmon-abc.scope"));
        assert!(is_container(CgroupDriver::Systemd, "crio-abc.scope"));
        assert!(is_container(CgroupDriver::Systemd, "docker-abc.scope"));
    }

    fn role(path: &str) -> Role {
        let c: Vec<CString> = path.split('/').map(|p| CString::new(p).unwrap()).collect();
        Role::of(&c)
    }

    #[test]
    fn a_role_follows_from_the_path_alone() {
        use CgroupDriver::*;
        assert_eq!(role("kubepods"), Role::Root(Cgroupfs));
        assert_eq!(role("custom-root/kubepods.slice"), Role::Root(Systemd));
        assert_eq!(role("kubepods/burstable"), Role::Qos(Cgroupfs, QosClass::Burstable));
        assert_eq!(role("kubepods/burstable/poda"), Role::Pod(Cgroupfs));
        assert_eq!(role("kubepods/poda"), Role::Pod(Cgroupfs));
        assert_eq!(role("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda_b.slice"), Role::Pod(Systemd));
        assert_eq!(role("kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-poda.slice"), Role::Outside);
        assert_eq!(role("kubepods/burstable/poda/c1"), Role::Outside);
        // A kubepods inside kubepods or a pod is not a root; inside anything else it is.
        assert_eq!(role("kubepods/kubepods"), Role::Outside);
        assert_eq!(role("kubepods/poda/kubepods"), Role::Outside);
        assert_eq!(role("kubepods/kubepods/kubepods"), Role::Root(Cgroupfs));
        assert_eq!(role("kubepods/burstable/poda/c1/kubepods"), Role::Root(Cgroupfs));
        assert_eq!(role("kubepods/pod"), Role::Outside, "a pod needs a UID");
    }

    /// Collectors of the threads of a parallel walk, merged in any order, give what one
    /// collector visiting every directory gives.
    #[test]
    fn merged_collectors_agree_with_one() {
        use cgleak_readers::cgroupfs::{walk, walk_parallel, CgroupVisitor};
        struct C(KubepodsCollector);
        impl CgroupVisitor for C {
            fn visit(&mut self, d: &WalkDir<'_>, c: &[ChildDir]) {
                self.0.visit(d, c)
            }
        }
        let t = tempfile::tempdir().unwrap();
        for p in ["kubepods/poda/c1", "kubepods/poda/c2", "kubepods/burstable/podb/c1", "kubepods/burstable/podb/c2/nested", "kubepods/besteffort/podc"] {
            std::fs::create_dir_all(t.path().join(p)).unwrap();
        }
        for i in 0..40 {
            std::fs::create_dir_all(t.path().join(format!("kubepods/burstable/pod{i}/c"))).unwrap();
        }
        std::fs::create_dir_all(t.path().join("other/kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope")).unwrap();
        let mut one = C(KubepodsCollector::default());
        walk(t.path(), &mut one).unwrap();
        let want = one.0.into_roots_and_pods();
        assert_eq!(want.0.len(), 2);
        assert_eq!(want.1.len(), 44);
        let b = want.1.iter().find(|p| p.uid == "b").unwrap();
        assert_eq!(b.containers, 2, "listed: c2 counts once with what is under it");
        for threads in [2, 4] {
            let (_, cs) = walk_parallel(t.path(), threads, &|| C(KubepodsCollector::default())).unwrap();
            let mut cs: Vec<KubepodsCollector> = cs.into_iter().map(|c| c.0).collect();
            cs.reverse();
            let mut all = KubepodsCollector::default();
            for c in cs {
                all.merge(c);
            }
            assert_eq!(all.into_roots_and_pods(), want, "{threads} threads");
        }
    }

    #[test]
    fn paths_sort_as_path_does() {
        let mut v: Vec<PathBuf> = ["a-c", "a/b", "a", "a.b/c", "a/b-c", "a/b/c", "ab"].iter().map(PathBuf::from).collect();
        let mut w = v.clone();
        v.sort();
        w.sort_by_cached_key(|p| path_key(p));
        assert_eq!(v, w);
    }
}

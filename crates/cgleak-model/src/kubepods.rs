//! The kubelet's cgroup tree: pods and containers by QoS class, for both drivers.
//!
//! cgroupfs driver: `kubepods/burstable/pod<uid>/<container>`, guaranteed pods
//! directly under `kubepods/pod<uid>`.
//! systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
//! cri-containerd-<id>.scope` (also `docker-<id>.scope`, `crio-<id>.scope`), guaranteed
//! pods as `kubepods.slice/kubepods-pod<uid>.slice`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

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

/// What role a directory plays in a kubepods tree, from its name and its parent's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Root(CgroupDriver),
    Qos(CgroupDriver, QosClass),
}

/// Collects pod cgroups while the census walks the memory hierarchy.
#[derive(Debug, Default)]
pub struct KubepodsCollector {
    /// Role of each kubepods/QoS directory seen so far, by relative path.
    roles: HashMap<PathBuf, Role>,
    pods: HashMap<PathBuf, PodCgroup>,
    pub roots: Vec<(PathBuf, CgroupDriver)>,
}

impl KubepodsCollector {
    /// Call for every visited directory with its subdirectories.
    pub fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
        // Outside any kubepods tree, only a child named kubepods matters: skip the path work.
        if self.roles.is_empty() && !children.iter().any(|c| matches!(c.name_str(), "kubepods" | "kubepods.slice")) {
            return;
        }
        let rel = dir.rel_path();
        // A pod directory listed: count its containers exactly.
        if let Some(pod) = self.pods.get_mut(&rel) {
            pod.containers = children.iter().filter(|c| is_container(pod.driver, c.name_str())).count() as u32;
            return;
        }
        let role = self.roles.get(&rel).copied();
        for c in children {
            let name = c.name_str();
            let child_rel = rel.join(name);
            match role {
                None => {
                    // kubepods can sit under a --cgroup-root; a kubepods inside kubepods is not a new root.
                    let driver = match name {
                        "kubepods" => CgroupDriver::Cgroupfs,
                        "kubepods.slice" => CgroupDriver::Systemd,
                        _ => continue,
                    };
                    self.roots.push((child_rel.clone(), driver));
                    self.roles.insert(child_rel, Role::Root(driver));
                }
                Some(Role::Root(driver)) => {
                    if let Some(q) = qos_dir(driver, name) {
                        self.roles.insert(child_rel, Role::Qos(driver, q));
                    } else if let Some(uid) = pod_uid(driver, name, QosClass::Guaranteed) {
                        self.add_pod(child_rel, uid, QosClass::Guaranteed, driver, c);
                    }
                }
                Some(Role::Qos(driver, qos)) => {
                    if let Some(uid) = pod_uid(driver, name, qos) {
                        self.add_pod(child_rel, uid, qos, driver, c);
                    }
                }
            }
        }
    }

    fn add_pod(&mut self, path: PathBuf, uid: String, qos: QosClass, driver: CgroupDriver, c: &ChildDir) {
        // Until the pod directory itself is listed, its link count gives the number of containers.
        let containers = c.subdirs.unwrap_or(0);
        self.pods.insert(path.clone(), PodCgroup { uid, qos, driver, path, containers });
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Pods sorted by path, so reports are stable.
    pub fn into_pods(self) -> Vec<PodCgroup> {
        let mut v: Vec<PodCgroup> = self.pods.into_values().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
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
}

//! The kubelet's cgroup layout for both drivers, and the pods of a fixture.
//!
//! cgroupfs: `kubepods/burstable/pod<uid>/<container id>`, guaranteed pods as
//! `kubepods/pod<uid>`. systemd: `kubepods.slice/kubepods-burstable.slice/
//! kubepods-burstable-pod<uid with _>.slice/<runtime>-<id>.scope`, guaranteed pods
//! as `kubepods.slice/kubepods-pod<uid>.slice`.

use crate::cgroup::{CgroupSpec, CgroupWriter, Kmem};
use crate::host::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// dockershim: `docker-<id>.scope` under systemd.
    Docker,
    /// containerd CRI: `cri-containerd-<id>.scope` under systemd.
    Containerd,
    /// CRI-O: `crio-<id>.scope` plus `crio-conmon-<id>.scope` (conmon_cgroup = "pod").
    Crio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    Besteffort,
}

impl Qos {
    fn name(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::Besteffort => "besteffort",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    /// Runtime the container was started by (a node moving from dockershim to containerd has both).
    pub runtime: Runtime,
    pub procs: Vec<u32>,
    /// conmon's PID (CRI-O only).
    pub conmon: Option<u32>,
    pub usage: u64,
}

#[derive(Debug, Clone)]
pub struct Pod {
    /// What the pod is, for FIXTURE.txt readers (`coredns-66bff467f8-x2x9c`).
    pub name: &'static str,
    pub uid: String,
    pub qos: Qos,
    pub containers: Vec<Container>,
    pub memory_limit: Option<u64>,
    /// The kubelet has `<root>/pods/<uid>`.
    pub kubelet_dir: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub driver: Driver,
}

impl Layout {
    pub fn root(&self) -> &'static str {
        match self.driver {
            Driver::Cgroupfs => "kubepods",
            Driver::Systemd => "kubepods.slice",
        }
    }

    pub fn qos_dir(&self, q: Qos) -> Option<String> {
        match (q, self.driver) {
            (Qos::Guaranteed, _) => None,
            (q, Driver::Cgroupfs) => Some(format!("kubepods/{}", q.name())),
            (q, Driver::Systemd) => Some(format!("kubepods.slice/kubepods-{}.slice", q.name())),
        }
    }

    pub fn pod_dir(&self, p: &Pod) -> String {
        let parent = self
            .qos_dir(p.qos)
            .unwrap_or_else(|| self.root().to_string());
        match self.driver {
            Driver::Cgroupfs => format!("{parent}/pod{}", p.uid),
            Driver::Systemd => {
                let uid = p.uid.replace('-', "_");
                match p.qos {
                    Qos::Guaranteed => format!("{parent}/kubepods-pod{uid}.slice"),
                    q => format!("{parent}/kubepods-{}-pod{uid}.slice", q.name()),
                }
            }
        }
    }

    /// The container's cgroup names under its pod, with the PIDs each holds.
    pub fn container_dirs(&self, c: &Container) -> Vec<(String, Vec<u32>)> {
        match self.driver {
            Driver::Cgroupfs => vec![(c.id.clone(), c.procs.clone())],
            Driver::Systemd => match c.runtime {
                Runtime::Docker => vec![(format!("docker-{}.scope", c.id), c.procs.clone())],
                Runtime::Containerd => {
                    vec![(format!("cri-containerd-{}.scope", c.id), c.procs.clone())]
                }
                Runtime::Crio => vec![
                    (
                        format!("crio-conmon-{}.scope", c.id),
                        c.conmon.into_iter().collect(),
                    ),
                    (format!("crio-{}.scope", c.id), c.procs.clone()),
                ],
            },
        }
    }
}

/// Settings applied to every kubepods cgroup of a fixture.
#[derive(Debug, Clone)]
pub struct KubeCgroups {
    pub layout: Layout,
    /// Node allocatable: kubepods' memory limit.
    pub allocatable: u64,
    /// kmem state of every cgroup in the kubepods tree (v1); per container, its slab rows
    /// are taken from `kmem_rows`.
    pub kmem: bool,
    /// v2: subtree_control of kubepods, QoS and pod cgroups.
    pub subtree: &'static str,
}

/// Write the kubepods tree of `pods` and the kubelet's pod directories.
pub fn write_kubepods(
    w: &mut dyn CgroupWriter,
    host: &Host,
    k: &KubeCgroups,
    pods: &[Pod],
    kmem_rows: &dyn Fn(&str) -> Vec<crate::cgroup::SlabRow>,
) {
    let l = k.layout;
    let total: u64 = pods
        .iter()
        .flat_map(|p| &p.containers)
        .map(|c| c.usage)
        .sum();
    let kmem = |usage: u64, name: &str| {
        if k.kmem {
            Kmem::Active {
                usage: (usage / 23).max(8192) / 4096 * 4096,
                slab: kmem_rows(name),
            }
        } else {
            Kmem::Off
        }
    };
    w.cgroup(
        l.root(),
        &CgroupSpec::empty()
            .limit(Some(k.allocatable))
            .usage(total)
            .kmem(kmem(total, ""))
            .subtree(k.subtree),
    );
    for q in [Qos::Burstable, Qos::Besteffort] {
        let u: u64 = pods
            .iter()
            .filter(|p| p.qos == q)
            .flat_map(|p| &p.containers)
            .map(|c| c.usage)
            .sum();
        let dir = l
            .qos_dir(q)
            .expect("burstable and besteffort have a directory");
        w.cgroup(
            &dir,
            &CgroupSpec::empty()
                .usage(u)
                .kmem(kmem(u, ""))
                .subtree(k.subtree),
        );
    }
    for p in pods {
        let u: u64 = p.containers.iter().map(|c| c.usage).sum();
        let pod_dir = l.pod_dir(p);
        w.cgroup(
            &pod_dir,
            &CgroupSpec::empty()
                .limit(p.memory_limit)
                .usage(u)
                .kmem(kmem(u, ""))
                .subtree(k.subtree),
        );
        for c in &p.containers {
            for (name, procs) in l.container_dirs(c) {
                let usage = if procs.is_empty() { 0 } else { c.usage };
                let spec = CgroupSpec::empty()
                    .procs(procs)
                    .limit(p.memory_limit)
                    .usage(usage)
                    .kmem(kmem(usage.max(1), &name));
                w.cgroup(&format!("{pod_dir}/{name}"), &spec);
            }
        }
        if p.kubelet_dir {
            host.kubelet_pod_dir(&p.uid);
        }
    }
}

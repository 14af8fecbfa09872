//! The fixtures. Each public function is one kernel and one situation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cgroup::{
    count_v2_memcgs, CgroupSpec, CgroupWriter, Kmem, SlabRow, V1Flavor, V1Tree, V2StatFormat,
    V2Totals, V2Tree, V1_3_10, V1_4_19, V1_4_4, V1_5_10,
};
use crate::host::{Host, Meminfo, Mountinfo, ProcCgroupsRow, RootFs};
use crate::ids::Ids;
use crate::k8s::Qos::{Besteffort, Burstable, Guaranteed};
use crate::k8s::{write_kubepods, Container, Driver, KubeCgroups, Layout, Pod, Qos, Runtime};
use crate::slab;
use crate::write::count_dirs;
use crate::{Fixture, Truth};

/// A fixture function: its doc comment is also the text of FIXTURE.txt.
macro_rules! fixture {
    ($(#[doc = $doc:literal])+ pub fn $f:ident() => $name:literal, $build:path) => {
        $(#[doc = $doc])+
        pub fn $f() -> Fixture {
            Fixture::build($name, concat!($($doc, "\n"),+), $build)
        }
    };
    ($(#[doc = $doc:literal])+ pub fn $f:ident() => $name:literal, |$h:ident| $build:expr) => {
        $(#[doc = $doc])+
        pub fn $f() -> Fixture {
            Fixture::build($name, concat!($($doc, "\n"),+), |$h: &Host| $build)
        }
    };
}

mod old_nodes;
pub use old_nodes::*;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

// ---------------------------------------------------------------------------------
// Shared pieces

/// `/proc/sys/kernel/osrelease`, `/proc/cmdline` and `/proc/meminfo` of a node; returns
/// the IDs of its pods and processes, seeded with `seed` (the fixture's name).
fn boot(h: &Host, seed: &str, release: &str, cmdline: &str, meminfo: Meminfo) -> Ids {
    h.osrelease(release);
    h.cmdline(cmdline);
    h.meminfo(meminfo);
    Ids::new(seed)
}

/// v1 controllers as mount options and /proc/cgroups spell them, in the kernel's
/// subsystem order (cgroup_subsys.h): /proc/cgroups of 4.4 .. 6.x lists them so, each
/// kernel up to the last one it has (rdma from 4.11, misc from 5.13).
const SUBSYS: [&str; 14] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Where a v1 node's memory hierarchy is mounted.
const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

struct Hierarchy {
    id: u32,
    local: PathBuf,
    controllers: Vec<&'static str>,
}

/// A v1 (or hybrid) host: its kernel, the memory tree and every hierarchy it is
/// mirrored into.
struct V1Host {
    kernel: &'static V1Kernel,
    tree: V1Tree,
    hierarchies: Vec<Hierarchy>,
}

/// Mount the `kernel`'s hierarchies, make the memory hierarchy (`root_procs` in its
/// root) and mirror it into all the others (and into cgroup2 at /sys/fs/cgroup/unified
/// on a hybrid host), and write /proc/self/mountinfo.
fn v1_host(h: &Host, kernel: &'static V1Kernel, root_procs: &[u32]) -> V1Host {
    let V1Kernel {
        rootfs,
        mounts,
        flavor,
        unified,
        ..
    } = *kernel;
    let mut mi = Mountinfo::new(rootfs);
    mi.cgroup_tmpfs();
    if unified {
        mi.cgroup2("/sys/fs/cgroup/unified", "nsdelegate");
    }
    let mut hierarchies = Vec::new();
    for (i, (dir, opts)) in mounts.iter().enumerate() {
        let mp = mi.cgroup_v1(dir, opts);
        let controllers = opts
            .split(',')
            .filter_map(|o| SUBSYS.iter().copied().find(|c| *c == o))
            .collect();
        hierarchies.push(Hierarchy {
            id: i as u32 + 1,
            local: h.path(&mp),
            controllers,
        });
    }
    h.mountinfo(&mi);
    let mem = hierarchies
        .iter()
        .find(|x| x.controllers.contains(&"memory"))
        .expect("a memory hierarchy");
    let mut tree = V1Tree::new(mem.local.clone(), flavor, root_procs);
    for x in &hierarchies {
        if !x.controllers.contains(&"memory") {
            tree.mirror_v1(x.local.clone(), root_procs);
        }
    }
    if unified {
        tree.mirror_unified(h.path("/sys/fs/cgroup/unified"), root_procs);
    }
    V1Host {
        kernel,
        tree,
        hierarchies,
    }
}

impl V1Host {
    /// `/proc/cgroups`: num_cgroups is the hierarchy's directory count, plus the dying
    /// memcgs on the memory row (4.x+: nr_cgrps drops only when a cgroup is freed;
    /// pass 0 for 3.10, which drops it at rmdir), in the kernel's subsystem order.
    fn proc_cgroups(&self, h: &Host, dying_memory: u64) {
        let rows: Vec<ProcCgroupsRow> = self
            .kernel
            .proc_cgroups
            .iter()
            .map(
                |s| match self.hierarchies.iter().find(|x| x.controllers.contains(s)) {
                    Some(x) => ProcCgroupsRow {
                        subsys: s,
                        hierarchy: x.id,
                        num_cgroups: count_dirs(&x.local)
                            + if *s == "memory" { dying_memory } else { 0 },
                        enabled: true,
                    },
                    None => ProcCgroupsRow {
                        subsys: s,
                        hierarchy: 0,
                        num_cgroups: 1,
                        enabled: true,
                    },
                },
            )
            .collect();
        h.proc_cgroups(&rows);
    }

    /// Finish a v1 node once every cgroup is written: `/proc/cgroups` with `dying` memcgs
    /// (None: a 3.10 kernel, which forgets them at rmdir, so they cannot be counted), and
    /// the truth: `pods` (from [`pod_truth`]) with the memcg figures of the tree, the
    /// kmem-active memcgs counted where kmem accounting is opt-in.
    fn truth(&self, h: &Host, dying: Option<u64>, pods: Truth) -> Truth {
        self.proc_cgroups(h, dying.unwrap_or(0));
        Truth {
            live_memcgs: count_dirs(&self.tree.memory),
            dying,
            kmem_active: (self.kernel.kmem_opt_in).then(|| count_kmem_active(&self.tree.memory)),
            ..pods
        }
    }
}

/// `/proc/cgroups` of a v2-only host: every controller on hierarchy 0 with the count
/// of every v2 cgroup, dying ones included.
fn v2_proc_cgroups(h: &Host, order: &[&'static str], cgroups_incl_dying: u64) {
    let rows: Vec<ProcCgroupsRow> = order
        .iter()
        .map(|s| ProcCgroupsRow {
            subsys: s,
            hierarchy: 0,
            num_cgroups: cgroups_incl_dying,
            enabled: true,
        })
        .collect();
    h.proc_cgroups(&rows);
}

const PROC_CGROUPS_RHEL7: [&str; 12] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "net_prio",
];

const PROC_CGROUPS_4_4: &[&str] = SUBSYS.split_at(12).0;
const PROC_CGROUPS_4_19: &[&str] = SUBSYS.split_at(13).0;
const PROC_CGROUPS_6_X: &[&str] = &SUBSYS;

/// CentOS/RHEL 7 hierarchies in the order systemd 219 mounts them.
const MOUNTS_RHEL7: [(&str, &str); 11] = [
    (
        "systemd",
        "xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd",
    ),
    ("net_cls,net_prio", "net_prio,net_cls"),
    ("cpuset", "cpuset"),
    ("blkio", "blkio"),
    ("hugetlb", "hugetlb"),
    ("pids", "pids"),
    ("freezer", "freezer"),
    ("perf_event", "perf_event"),
    ("memory", "memory"),
    ("devices", "devices"),
    ("cpu,cpuacct", "cpuacct,cpu"),
];

/// Debian v1 hierarchies (systemd's legacy layout); `rdma` (the last) from 4.11.
const MOUNTS_DEBIAN: [(&str, &str); 12] = [
    ("systemd", "xattr,name=systemd"),
    ("cpu,cpuacct", "cpu,cpuacct"),
    ("net_cls,net_prio", "net_cls,net_prio"),
    ("memory", "memory"),
    ("blkio", "blkio"),
    ("devices", "devices"),
    ("freezer", "freezer"),
    ("pids", "pids"),
    ("perf_event", "perf_event"),
    ("hugetlb", "hugetlb"),
    ("cpuset", "cpuset"),
    ("rdma", "rdma"),
];

/// A v1 kernel as its distribution boots it: how a v1 (or hybrid) node of it mounts and
/// shows its cgroups.
struct V1Kernel {
    rootfs: RootFs,
    /// The hierarchies (directory under /sys/fs/cgroup, super options), in mount order.
    mounts: &'static [(&'static str, &'static str)],
    flavor: V1Flavor,
    /// Hybrid: cgroup2 without controllers at /sys/fs/cgroup/unified.
    unified: bool,
    /// The kernel's /proc/cgroups order.
    proc_cgroups: &'static [&'static str],
    /// kmem accounting is opt-in (3.10, 4.0 .. 4.5), so the truth counts the kmem-active
    /// memcgs.
    kmem_opt_in: bool,
}

/// CentOS/RHEL 7, 3.10.0-*.el7, v1 only.
const EL7_3_10: V1Kernel = V1Kernel {
    rootfs: RootFs::CentosXfs,
    mounts: &MOUNTS_RHEL7,
    flavor: V1_3_10,
    unified: false,
    proc_cgroups: &PROC_CGROUPS_RHEL7,
    kmem_opt_in: true,
};
/// Upstream 4.4.y on a Debian-style root, v1 only (no rdma before 4.11).
const LINUX_4_4: V1Kernel = V1Kernel {
    rootfs: RootFs::DebianExt4,
    mounts: MOUNTS_DEBIAN.split_at(11).0,
    flavor: V1_4_4,
    unified: false,
    proc_cgroups: PROC_CGROUPS_4_4,
    kmem_opt_in: true,
};
/// Debian 10, 4.19, v1 only.
const DEBIAN_4_19: V1Kernel = V1Kernel {
    rootfs: RootFs::DebianExt4,
    mounts: &MOUNTS_DEBIAN,
    flavor: V1_4_19,
    unified: false,
    proc_cgroups: PROC_CGROUPS_4_19,
    kmem_opt_in: false,
};
/// Debian 11, 5.10, hybrid (5.10 lists /proc/cgroups as 4.19 does: misc is 5.13+).
const DEBIAN_5_10_HYBRID: V1Kernel = V1Kernel {
    rootfs: RootFs::DebianExt4,
    mounts: &MOUNTS_DEBIAN,
    flavor: V1_5_10,
    unified: true,
    proc_cgroups: PROC_CGROUPS_4_19,
    kmem_opt_in: false,
};

/// v1 memcgs whose memory.kmem.usage_in_bytes > 0, counted from the files written.
fn count_kmem_active(dir: &Path) -> u64 {
    let mut n = fs::read_to_string(dir.join("memory.kmem.usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |u| u64::from(u > 0));
    for ent in fs::read_dir(dir).expect("readdir").flatten() {
        if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            n += count_kmem_active(&ent.path());
        }
    }
    n
}

/// A system cgroup (a systemd unit or slice) with its processes.
fn unit(
    w: &mut dyn CgroupWriter,
    rel: &str,
    procs: Vec<u32>,
    usage: u64,
    kmem: Kmem,
    subtree: &str,
) {
    w.cgroup(
        rel,
        &CgroupSpec::empty()
            .procs(procs)
            .usage(usage)
            .kmem(kmem)
            .subtree(subtree),
    );
}

/// The kmem state of a system cgroup with this usage where kmem is not accounted.
fn no_kmem(_usage: u64) -> Kmem {
    Kmem::Off
}

/// System cgroups in order, each (path, processes, usage, cgroup.subtree_control), with
/// the kmem state `kmem` gives for its usage.
fn units(
    w: &mut dyn CgroupWriter,
    kmem: &dyn Fn(u64) -> Kmem,
    list: Vec<(&str, Vec<u32>, u64, &str)>,
) {
    for (rel, procs, usage, subtree) in list {
        unit(w, rel, procs, usage, kmem(usage), subtree);
    }
}

/// systemd services under system.slice, each with its processes. Their usage is drawn
/// from `ids` in `usage_mib` (MiB), one service after the other; `kmem` gives their
/// kmem state for it.
fn services(
    w: &mut dyn CgroupWriter,
    list: Vec<(&str, Vec<u32>)>,
    ids: &mut Ids,
    usage_mib: Range<u64>,
    kmem: &dyn Fn(u64) -> Kmem,
) {
    for (svc, procs) in list {
        let usage = ids.range(usage_mib.start, usage_mib.end) * MIB;
        unit(
            w,
            &format!("system.slice/{svc}"),
            procs,
            usage,
            kmem(usage),
            "",
        );
    }
}

/// The truth of a node's pods under the memory root `mount`: their count, their
/// containers, the orphans among them and an inventory line each (`runtime_note` adds
/// what else each pod holds). The caller adds the memcg figures.
fn pod_truth(
    release: &'static str,
    layout: Layout,
    pods: &[Pod],
    mount: &'static str,
    runtime_note: &str,
) -> Truth {
    let mut orphans = Vec::new();
    let mut inv = Vec::new();
    let mut containers = 0;
    for p in pods {
        containers += p.containers.len() as u64;
        let running = p.containers.iter().any(|c| !c.procs.is_empty());
        let orphan = !p.kubelet_dir && !running;
        if orphan {
            orphans.push(p.uid.clone());
        }
        inv.push(format!(
            "pod {} ({:?}, {} containers{}, {}{}) at {mount}/{}",
            p.name,
            p.qos,
            p.containers.len(),
            runtime_note,
            if p.kubelet_dir {
                "kubelet dir"
            } else {
                "NO kubelet dir"
            },
            if orphan {
                ", no tasks: ORPHAN"
            } else if !p.kubelet_dir {
                ", has tasks: not an orphan"
            } else {
                ""
            },
            layout.pod_dir(p)
        ));
    }
    orphans.sort();
    Truth {
        release,
        memory_root: mount,
        pods: pods.len() as u64,
        containers,
        orphan_uids: orphans,
        inventory: inv,
        ..Truth::default()
    }
}

/// A row of a fixture's pod table: the pod's name, QoS class and memory limit, how many
/// processes each of its containers runs (0: the container's cgroup is empty), and
/// whether the kubelet has the pod's directory.
type PodRow<'a> = (&'static str, Qos, Option<u64>, &'a [usize], bool);

/// The pods of `rows`, their containers started by `runtime`; IDs are drawn row by row.
fn pod_table(ids: &mut Ids, runtime: Runtime, rows: &[PodRow]) -> Vec<Pod> {
    rows.iter()
        .map(|&(name, qos, memory_limit, pids, kubelet_dir)| {
            let uid = ids.pod_uid();
            let containers = pids
                .iter()
                .map(|n| Container {
                    id: ids.container_id(),
                    runtime,
                    procs: ids.pids(*n),
                    conmon: (runtime == Runtime::Crio && *n > 0).then(|| ids.pid()),
                    usage: ids.range(8, 180) * MIB + ids.range(0, 256) * 4096,
                })
                .collect();
            Pod {
                name,
                uid,
                qos,
                containers,
                memory_limit,
                kubelet_dir,
            }
        })
        .collect()
}

/// Standard stand-in binaries.
fn binaries(h: &Host, list: &[(&str, &str)]) {
    for (path, out) in list {
        h.fake_binary(path, out);
    }
}

// ---------------------------------------------------------------------------------
// 3.10 per-memcg slab caches

/// kmemcg IDs handed out in creation order (3.10: one per kmem-active memcg,
/// memcg_init_kmem), and the per-memcg caches each memcg's tasks caused.
#[derive(Default)]
struct KmemcgHistory {
    next_id: u32,
    /// Live cgroup name -> its kmemcg_id and caches.
    live: BTreeMap<String, (u32, Vec<&'static str>)>,
    /// (cache, kmemcg_id, cgroup name), live and dead.
    caches: Vec<(&'static str, u32, String)>,
    dead_memcgs: u64,
}

impl KmemcgHistory {
    fn new(first: u32) -> Self {
        KmemcgHistory {
            next_id: first,
            ..Default::default()
        }
    }
    /// A kmem-active memcg was created: it takes the next id; `caches` are the
    /// per-memcg caches its tasks made. `alive`: it still exists as a directory.
    fn memcg(&mut self, name: &str, caches: &[&'static str], alive: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        for c in caches {
            self.caches.push((c, id, name.to_string()));
        }
        if alive {
            self.live.insert(name.to_string(), (id, caches.to_vec()));
        } else {
            self.dead_memcgs += 1;
        }
        id
    }
    /// memory.kmem.slabinfo rows of a live memcg (3.10 prints the memcg cache's own name).
    fn rows(&self, name: &str) -> Vec<SlabRow> {
        match self.live.get(name) {
            Some((id, caches)) => caches
                .iter()
                .map(|c| {
                    SlabRow::new(
                        &format!("{c}({id}:{name})"),
                        40 + (*id as u64 % 13) * 17,
                        slab::root_cache(c).size,
                    )
                })
                .collect(),
            None => Vec::new(),
        }
    }
    fn write_3_10(&self, h: &Host) {
        let d = h.path("/sys/kernel/slab");
        for (cache, id, name) in &self.caches {
            slab::memcg_cache_3_10(&d, cache, *id, name);
        }
    }
    fn write_4x(&self, h: &Host) {
        let d = h.path("/sys/kernel/slab");
        for (cache, id, name) in &self.caches {
            slab::memcg_cache_4x(&d, cache, *id as u64, name);
        }
    }
}

const PAUSE_CACHES: &[&str] = &["dentry", "kmalloc-64"];
const APP_CACHES: &[&str] = &[
    "dentry",
    "kmalloc-64",
    "kmalloc-256",
    "filp",
    "inode_cache",
    "radix_tree_node",
    "sock_inode_cache",
];

/// Give every container of `pods` a kmemcg id and caches, pod cgroups an id (they have
/// no tasks of their own, so no caches), in order.
fn kmem_history_for_pods(k: &mut KmemcgHistory, layout: Layout, pods: &[Pod], alive: bool) {
    for p in pods {
        let pod_name = layout
            .pod_dir(p)
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        k.memcg(&pod_name, &[], alive);
        for (i, c) in p.containers.iter().enumerate() {
            for (name, _) in layout.container_dirs(c) {
                k.memcg(&name, if i == 0 { PAUSE_CACHES } else { APP_CACHES }, alive);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// CentOS 7.6, 3.10.0-957

fixture! {
    /// CentOS 7.6, kernel `3.10.0-957.27.2.el7.x86_64`, cgroup v1 only (name=systemd,
    /// cpu,cpuacct co-mounted, memory, and the other CentOS 7 hierarchies; no cgroup2).
    /// Kubernetes 1.18 with docker 18.09 (runc 1.0.0-rc6+dev), cgroupfs driver.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 3.10 RHEL: a dying memcg keeps its ID until the struct is freed, so the leak
    ///   is of IDs and invisible; the ID space is 65535.
    /// - s2: /proc/cgroups num_cgroups on 3.10 is decremented at rmdir: here it equals the
    ///   number of live directories of the memory hierarchy, hiding every dying memcg.
    /// - s2: per-memcg slab caches at the top of /sys/kernel/slab named
    ///   `<cache>(<kmemcg_id>:<cgroup name>)`, alias symlinks for mergeable caches
    ///   (`:at-0000192-000000NN` directories) and directories for unmergeable ones.
    ///   Dead ones: caches of two deleted pods' containers (names no longer in the tree),
    ///   and two docker `--restart=always` containers (filebeat restarted twice,
    ///   node-exporter once) whose container-ID name appears with several kmemcg ids.
    /// - s3: kmem accounting opt-in on 3.10 and switched on by kubelet 1.8..1.21 and runc
    ///   >= rc3 (1 then -1 written to memory.kmem.limit_in_bytes, which then reads
    ///   unlimited): every cgroup of the kubepods tree and the docker containers show
    ///   memory.kmem.usage_in_bytes > 0 and memory.kmem.slabinfo with rows; system.slice
    ///   units show 0 and no rows. The `docker` parent is charged through the hierarchy.
    /// - s3: cgroup.memory=nokmem is NOT on the command line, and 3.10.0-957 predates the
    ///   RHEL7 backport (3.10.0-1062+) anyway.
    /// - memory.limit_in_bytes unlimited is LLONG_MAX on 3.10 (res_counter).
    /// Expected: dying not countable, IDs in use only a lower bound (no headroom),
    /// verdict leaking (exit 3), no nokmem remedy (957 lacks it).
    pub fn centos7_957_kmem() => "centos7-957-kmem", build_centos7_957_kmem
}

fn build_centos7_957_kmem(h: &Host) -> Truth {
    let release = "3.10.0-957.27.2.el7.x86_64";
    let mut ids = boot(
        h,
        "centos7-957-kmem",
        release,
        "BOOT_IMAGE=/vmlinuz-3.10.0-957.27.2.el7.x86_64 root=/dev/mapper/centos-root ro crashkernel=auto rd.lvm.lv=centos/root rd.lvm.lv=centos/swap rhgb quiet LANG=en_US.UTF-8",
        Meminfo {
            mem_total_kib: 16_266_712,
            mem_free_kib: 4_876_244,
            slab_kib: 2_318_440,
            ..Meminfo::default()
        },
    );
    let mut v = v1_host(h, &EL7_3_10, &[1, 2, 3, 5, 7, 8, 9, 10, 11]);

    let (dockerd, containerd, kubelet, sshd) = (ids.pid(), ids.pid(), ids.pid(), ids.pid());
    let t = &mut v.tree;
    units(t, &no_kmem, vec![("system.slice", vec![], 900 * MIB, "")]);
    services(
        t,
        vec![
            ("docker.service", vec![dockerd]),
            ("containerd.service", vec![containerd]),
            ("kubelet.service", vec![kubelet]),
            ("sshd.service", vec![sshd]),
            ("crond.service", vec![ids.pid()]),
            ("rsyslog.service", vec![ids.pid()]),
            ("tuned.service", vec![ids.pid()]),
            ("systemd-journald.service", vec![ids.pid()]),
        ],
        &mut ids,
        20..400,
        &no_kmem,
    );
    units(
        t,
        &no_kmem,
        vec![("user.slice", vec![ids.pid(), ids.pid()], 40 * MIB, "")],
    );

    // kmemcg ids in creation order; dead memcgs interleaved with live ones.
    let mut k = KmemcgHistory::new(1);
    let layout = Layout {
        driver: Driver::Cgroupfs,
    };
    k.memcg("kubepods", &[], true);
    k.memcg("burstable", &[], true);
    k.memcg("besteffort", &[], true);
    let filebeat = ids.container_id();
    let node_exporter = ids.container_id();
    k.memcg(&filebeat, &["dentry", "kmalloc-64", "filp"], false);
    k.memcg(&node_exporter, &["dentry", "kmalloc-64"], false);

    let d = Runtime::Docker;
    #[rustfmt::skip]
    let live_a = pod_table(&mut ids, d, &[
        ("coredns-66bff467f8-x2x9c", Burstable, Some(170 * MIB), &[1, 1], true),
        ("calico-node-7wq5d", Burstable, None, &[1, 3], true),
        ("kube-proxy-hz6lw", Besteffort, None, &[1, 1], true),
    ]);
    #[rustfmt::skip]
    let deleted_a = pod_table(&mut ids, d, &[
        ("batch-report-1566390600-2kf8d", Besteffort, None, &[1, 1, 1], true),
    ]);
    #[rustfmt::skip]
    let live_b = pod_table(&mut ids, d, &[
        ("batch-report-1566394200-9xq4p", Besteffort, None, &[1, 2, 1], true),
    ]);
    #[rustfmt::skip]
    let deleted_b = pod_table(&mut ids, d, &[
        ("payments-api-7d9f8c6b5-4rj9x", Guaranteed, Some(512 * MIB), &[1, 2], true),
    ]);
    #[rustfmt::skip]
    let live_c = pod_table(&mut ids, d, &[
        ("payments-api-7d9f8c6b5-mv2lq", Guaranteed, Some(512 * MIB), &[1, 2], true),
        ("nginx-ingress-controller-5c7d8-zt4rp", Burstable, Some(512 * MIB), &[1, 4], true),
    ]);
    kmem_history_for_pods(&mut k, layout, &live_a, true);
    kmem_history_for_pods(&mut k, layout, &deleted_a, false);
    kmem_history_for_pods(&mut k, layout, &live_b, true);
    kmem_history_for_pods(&mut k, layout, &deleted_b, false);
    k.memcg(
        &filebeat,
        &["dentry", "kmalloc-64", "filp", "radix_tree_node"],
        false,
    );
    kmem_history_for_pods(&mut k, layout, &live_c, true);
    k.memcg(
        &node_exporter,
        &["dentry", "kmalloc-64", "sock_inode_cache"],
        true,
    );
    k.memcg(
        &filebeat,
        &[
            "dentry",
            "kmalloc-64",
            "filp",
            "inode_cache",
            "radix_tree_node",
        ],
        true,
    );

    let pods: Vec<Pod> = live_a.into_iter().chain(live_b).chain(live_c).collect();
    let kc = KubeCgroups {
        layout,
        allocatable: 15 * GIB,
        kmem: true,
        subtree: "",
    };
    write_kubepods(t, h, &kc, &pods, &|name| k.rows(name));

    // docker run --restart=always containers outside Kubernetes: /docker/<id>.
    // The docker parent is not kmem-activated (no rows) but is charged through the hierarchy.
    unit(
        t,
        "docker",
        vec![],
        300 * MIB,
        Kmem::Active {
            usage: 11 * MIB,
            slab: vec![],
        },
        "",
    );
    for (id, n) in [(&filebeat, 2), (&node_exporter, 1)] {
        unit(
            t,
            &format!("docker/{id}"),
            ids.pids(n),
            150 * MIB,
            Kmem::Active {
                usage: 5 * MIB,
                slab: k.rows(id),
            },
            "",
        );
    }

    slab::write_root_caches(&h.path("/sys/kernel/slab"), false);
    k.write_3_10(h);
    h.process(
        kubelet,
        "kubelet",
        &[
            "/usr/bin/kubelet",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--cgroup-driver=cgroupfs",
            "--network-plugin=cni",
            "--pod-infra-container-image=k8s.gcr.io/pause:3.2",
        ],
    );
    h.process(
        dockerd,
        "dockerd",
        &[
            "/usr/bin/dockerd",
            "-H",
            "fd://",
            "--containerd=/run/containerd/containerd.sock",
        ],
    );
    h.kubelet_config(
        "/var/lib/kubelet/config.yaml",
        Some("cgroupfs"),
        "failSwapOn: true\n",
    );
    binaries(h, &[
        ("/usr/bin/kubelet", "Kubernetes v1.18.20"),
        ("/usr/bin/dockerd", "Docker version 18.09.1, build 4c52b90"),
        ("/usr/bin/containerd", "containerd containerd.io 1.2.2 9754871865f7fe2f4e74d43e2fc7ccd237edcbce"),
        ("/usr/bin/runc", "runc version 1.0.0-rc6+dev\ncommit: 09c8266bf2fcf9519a651b04ae54c967b9448ee8\nspec: 1.0.1-dev"),
    ]);

    // 3.10: num_cgroups forgets dying memcgs at rmdir.
    let pods = pod_truth(release, layout, &pods, V1_MEMORY_ROOT, "");
    let mut truth = v.truth(h, None, pods);
    for p in deleted_a.iter().chain(&deleted_b) {
        truth.inventory.push(format!("deleted pod {} ({:?}): no cgroup left, its containers' slab caches remain in /sys/kernel/slab", p.name, p.qos));
    }
    let kmemcg_ids = |name: &str| {
        k.caches
            .iter()
            .filter(|c| c.2 == name)
            .map(|c| c.1)
            .collect::<BTreeSet<_>>()
    };
    truth.inventory.push(format!(
        "docker container filebeat {filebeat}: restarted twice, kmemcg ids {:?}",
        kmemcg_ids(&filebeat)
    ));
    truth.inventory.push(format!(
        "docker container node-exporter {node_exporter}: restarted once, kmemcg ids {:?}",
        kmemcg_ids(&node_exporter)
    ));
    truth.inventory.push(format!(
        "{} per-memcg slab caches, {} kmem memcgs deleted since boot (dying, IDs held)",
        k.caches.len(),
        k.dead_memcgs
    ));
    truth
}

// ---------------------------------------------------------------------------------
// RHEL 7.9, 3.10.0-1160, nokmem

fixture! {
    /// RHEL 7.9, kernel `3.10.0-1160.el7.x86_64` booted with `cgroup.memory=nokmem`,
    /// cgroup v1 only. Kubernetes 1.20 (kubeadm, driver set in kubeadm-flags.env) with
    /// docker 19.03 and runc 1.0.0-rc10, systemd cgroup driver
    /// (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/docker-<id>.scope`).
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: RHEL7 3.10.0-1160: private mem_cgroup_idr, dying memcgs keep their IDs, mkdir
    ///   fails with ENOMEM when full.
    /// - s2: /proc/cgroups num_cgroups is decremented at rmdir on 3.10: equals the live
    ///   directory count.
    /// - s3: cgroup.memory=nokmem is backported to RHEL7 3.10.0-1062+: kmem limit writes by
    ///   kubelet 1.20 and runc rc10 are ignored, so every memcg shows
    ///   memory.kmem.usage_in_bytes 0 and memory.kmem.slabinfo without rows (the kernel
    ///   returns EIO there; a plain file cannot, the header alone stands in).
    /// - s2: no per-memcg slab caches in /sys/kernel/slab (root caches only).
    /// Expected: kmem-active 0, no dead slab caches; IDs in use only a lower bound;
    /// verdict healthy (exit 0); the kubelet and runc versions that would enable kmem are
    /// harmless here.
    pub fn rhel7_1160_nokmem() => "rhel7-1160-nokmem", build_rhel7_1160_nokmem
}

fn build_rhel7_1160_nokmem(h: &Host) -> Truth {
    let release = "3.10.0-1160.el7.x86_64";
    let mut ids = boot(
        h,
        "rhel7-1160-nokmem",
        release,
        "BOOT_IMAGE=/vmlinuz-3.10.0-1160.el7.x86_64 root=/dev/mapper/rhel-root ro crashkernel=auto rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet cgroup.memory=nokmem",
        Meminfo {
            mem_total_kib: 32_778_956,
            mem_free_kib: 17_223_004,
            slab_kib: 912_336,
            ..Meminfo::default()
        },
    );
    let mut v = v1_host(h, &EL7_3_10, &[1, 2, 3, 5, 7, 8, 9]);
    let (dockerd, kubelet) = (ids.pid(), ids.pid());
    let t = &mut v.tree;
    units(t, &no_kmem, vec![("system.slice", vec![], 1200 * MIB, "")]);
    services(
        t,
        vec![
            ("docker.service", vec![dockerd]),
            ("containerd.service", vec![ids.pid()]),
            ("kubelet.service", vec![kubelet]),
            ("sshd.service", vec![ids.pid()]),
            ("auditd.service", vec![ids.pid()]),
            ("chronyd.service", vec![ids.pid()]),
        ],
        &mut ids,
        20..400,
        &no_kmem,
    );
    #[rustfmt::skip]
    units(t, &no_kmem, vec![
        ("user.slice", vec![], 60 * MIB, ""),
        ("user.slice/user-0.slice", vec![], 60 * MIB, ""),
        ("user.slice/user-0.slice/session-12.scope", ids.pids(2), 60 * MIB, ""),
    ]);

    let layout = Layout {
        driver: Driver::Systemd,
    };
    #[rustfmt::skip]
    let pods = pod_table(&mut ids, Runtime::Docker, &[
        ("coredns-74ff55c5b-7hv2p", Burstable, Some(170 * MIB), &[1, 1], true),
        ("kube-proxy-rq8fz", Besteffort, None, &[1, 1], true),
        ("weave-net-5xk8d", Burstable, None, &[1, 1, 1], true),
        ("orders-6b7c9d8f5-w2xkq", Guaranteed, Some(1024 * MIB), &[1, 3], true),
        ("redis-0", Burstable, Some(2048 * MIB), &[1, 1], true),
    ]);
    let kc = KubeCgroups {
        layout,
        allocatable: 30 * GIB,
        kmem: false,
        subtree: "",
    };
    write_kubepods(t, h, &kc, &pods, &|_| Vec::new());

    slab::write_root_caches(&h.path("/sys/kernel/slab"), false);
    h.file(
        "/var/lib/kubelet/kubeadm-flags.env",
        "KUBELET_KUBEADM_ARGS=\"--cgroup-driver=systemd --network-plugin=cni --pod-infra-container-image=k8s.gcr.io/pause:3.2\"\n",
    );
    h.kubelet_config("/var/lib/kubelet/config.yaml", None, "");
    binaries(h, &[
        ("/usr/bin/kubelet", "Kubernetes v1.20.15"),
        ("/usr/bin/dockerd", "Docker version 19.03.15, build 99e3ed8919"),
        ("/usr/bin/containerd", "containerd containerd.io 1.3.9 ea765aba0d05254012b0b9e595e995c09186427f"),
        ("/usr/bin/runc", "runc version 1.0.0-rc10\ncommit: dc9208a3303feef5b3839f4323d9beb36df0a9dd\nspec: 1.0.1-dev"),
    ]);
    let pods = pod_truth(release, layout, &pods, V1_MEMORY_ROOT, "");
    v.truth(h, None, pods)
}

// ---------------------------------------------------------------------------------
// 4.4.131, v1, kmem opt-in, per-memcg caches under <cache>/cgroup/

fixture! {
    /// Upstream longterm kernel `4.4.131`, cgroup v1 only (no cgroup2: 4.5+), Kubernetes
    /// 1.11 with containerd 1.1 (CRI plugin) and runc 1.0.0-rc5, cgroupfs driver.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 4.4.y carries the memcg ID refcount backport (73f576c04b94): a dying memcg
    ///   releases its ID at css_offline; mkdir fails with ENOMEM when the space is full.
    /// - s2: /proc/cgroups num_cgroups (4.x) counts dying cgroups until freed: memory's
    ///   row is the directory count + 212 dying memcgs.
    /// - s2: per-memcg slab caches are directories in /sys/kernel/slab/<root cache>/cgroup/
    ///   named `<cache>(<css serial>:<cgroup name>)` (root caches that are aliases point at
    ///   the `:at-0000192` style directory that holds cgroup/). Caches of five deleted
    ///   containers remain (their cgroup names are gone): slab pins dying memcgs (<= 5.8).
    /// - s3: kmem accounting is opt-in before 4.6: kubelet 1.11 and runc rc5 switched it on
    ///   in the kubepods tree (usage > 0, slabinfo rows); system units show 0.
    /// - s3: cgroup.memory=nokmem does not exist in 4.4 (upstream 4.5+).
    /// - memory.limit_in_bytes unlimited is PAGE_COUNTER_MAX * 4096 (page_counter).
    /// Expected: dying 212 (IDs not held), kmem-active counted, dead slab caches: verdict
    /// leaking (exit 3); no nokmem remedy.
    pub fn linux_4_4_v1() => "linux-4.4-v1", build_linux_4_4_v1
}

fn build_linux_4_4_v1(h: &Host) -> Truth {
    let release = "4.4.131";
    let mut ids = boot(
        h,
        "linux-4.4-v1",
        release,
        "BOOT_IMAGE=/boot/vmlinuz-4.4.131 root=/dev/sda1 ro console=ttyS0,115200n8 net.ifnames=0",
        Meminfo {
            mem_total_kib: 8_167_148,
            mem_free_kib: 2_310_216,
            slab_kib: 1_004_512,
            ..Meminfo::default()
        },
    );
    let mut v = v1_host(h, &LINUX_4_4, &[1, 2, 3, 5, 7]);
    let (containerd, kubelet) = (ids.pid(), ids.pid());
    let t = &mut v.tree;
    units(t, &no_kmem, vec![("system.slice", vec![], 700 * MIB, "")]);
    services(
        t,
        vec![
            ("containerd.service", vec![containerd]),
            ("kubelet.service", vec![kubelet]),
            ("ssh.service", vec![ids.pid()]),
            ("cron.service", vec![ids.pid()]),
            ("systemd-journald.service", vec![ids.pid()]),
        ],
        &mut ids,
        20..300,
        &no_kmem,
    );
    units(t, &no_kmem, vec![("user.slice", ids.pids(2), 30 * MIB, "")]);

    let layout = Layout {
        driver: Driver::Cgroupfs,
    };
    let c = Runtime::Containerd;
    // css serial numbers only grow; the deleted containers came first.
    let mut k = KmemcgHistory::new(4107);
    #[rustfmt::skip]
    let deleted = pod_table(&mut ids, c, &[
        ("etl-run-1525910400-7vq2l", Besteffort, None, &[1, 1, 1], false),
        ("api-5f8d9c7b6-9ttx2", Burstable, Some(256 * MIB), &[1, 1], false),
    ]);
    kmem_history_for_pods(&mut k, layout, &deleted, false);
    #[rustfmt::skip]
    let pods = pod_table(&mut ids, c, &[
        ("kube-dns-86f4d74b45-2mx6q", Burstable, Some(170 * MIB), &[1, 1, 1, 1], true),
        ("kube-proxy-8c2vf", Besteffort, None, &[1, 1], true),
        ("api-5f8d9c7b6-kw7nm", Burstable, Some(256 * MIB), &[1, 2], true),
        ("postgres-0", Guaranteed, Some(2 * GIB), &[1, 5], true),
    ]);
    kmem_history_for_pods(&mut k, layout, &pods, true);
    let rows = |name: &str| match k.live.get(name) {
        Some((_, caches)) => caches
            .iter()
            .map(|c| SlabRow::new(c, 120, slab::root_cache(c).size))
            .collect(),
        None => Vec::new(),
    };
    let kc = KubeCgroups {
        layout,
        allocatable: 7 * GIB,
        kmem: true,
        subtree: "",
    };
    write_kubepods(t, h, &kc, &pods, &rows);

    slab::write_root_caches(&h.path("/sys/kernel/slab"), true);
    k.write_4x(h);
    h.process(
        kubelet,
        "kubelet",
        &[
            "/usr/local/bin/kubelet",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--container-runtime=remote",
            "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        ],
    );
    binaries(h, &[
        ("/usr/local/bin/kubelet", "Kubernetes v1.11.10"),
        ("/usr/local/bin/containerd", "containerd github.com/containerd/containerd v1.1.7 35f6d4ac9d4c0c6bd6e7b5a3d4a5bd4a1a0e47c3"),
        ("/usr/local/sbin/runc", "runc version 1.0.0-rc5\ncommit: 4fc53a81fb7c994640722ac585fa9ca548971871\nspec: 1.0.0"),
    ]);
    let pods = pod_truth(release, layout, &pods, V1_MEMORY_ROOT, "");
    let mut truth = v.truth(h, Some(212), pods);
    for p in &deleted {
        truth.inventory.push(format!(
            "deleted pod {} ({:?}): cgroups gone, per-memcg slab caches of its containers remain",
            p.name, p.qos
        ));
    }
    truth
}

// ---------------------------------------------------------------------------------
// Debian 10, 4.19, v1, 5000 dying memcgs, orphaned pods

fixture! {
    /// Debian 10, kernel `4.19.0-25-amd64`, cgroup v1 only (booted with
    /// systemd.legacy_systemd_cgroup_controller, so no cgroup2 mount). Kubernetes 1.19 with
    /// Debian's docker.io 18.09 (runc `1.0.0~rc6+dfsg1` at /usr/sbin/runc), cgroupfs driver.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 4.7 .. 4.19: a dying memcg releases its ID at css_offline (unless swap pins
    ///   it; no swap here); mkdir fails with ENOMEM when full.
    /// - s2: /proc/cgroups num_cgroups counts dying cgroups on 4.x: memory's row is the
    ///   number of directories of the memory hierarchy (root included) + 5000.
    /// - s2: v1 has no dying-count file: only /proc/cgroups minus the tree tells.
    /// - s2: 4.14+ lists per-memcg slab caches only with slub_memcg_sysfs=1 (off on Debian):
    ///   /sys/kernel/slab has root caches only.
    /// - s3: 4.6+: kmem is accounted in every v1 memcg (usage > 0 everywhere), not opt-in.
    /// - Kubepods: guaranteed pods directly under kubepods/pod<uid>; two orphaned pod
    ///   cgroups (a besteffort and a guaranteed one: no task in their subtree, no
    ///   /var/lib/kubelet/pods/<uid>), and one burstable pod without a kubelet directory
    ///   that still runs a task (not an orphan).
    /// Expected: dying 5000 (more than the live ones): verdict leaking (exit 3), orphans 2,
    /// IDs in use = live memcgs (exact), headroom 65535 - live.
    pub fn debian_4_19_v1_dying() => "debian-4.19-v1-dying", build_debian_4_19_v1_dying
}

fn build_debian_4_19_v1_dying(h: &Host) -> Truth {
    let release = "4.19.0-25-amd64";
    let mut ids = boot(
        h,
        "debian-4.19-v1-dying",
        release,
        "BOOT_IMAGE=/boot/vmlinuz-4.19.0-25-amd64 root=UUID=4b2d6c1e-8f3a-4d7b-9c2e-1a5f0e6d3b8c ro quiet systemd.legacy_systemd_cgroup_controller=yes",
        Meminfo {
            mem_total_kib: 16_393_244,
            mem_free_kib: 3_902_116,
            slab_kib: 3_611_948,
            ..Meminfo::default()
        },
    );
    let mut v = v1_host(h, &DEBIAN_4_19, &[1, 2, 3, 4, 6]);
    let on = |u: u64| Kmem::Active {
        usage: (u / 25).max(65536) / 4096 * 4096,
        slab: vec![
            SlabRow::new("dentry", 310, 192),
            SlabRow::new("kmalloc-64", 512, 64),
        ],
    };
    let (dockerd, kubelet) = (ids.pid(), ids.pid());
    let t = &mut v.tree;
    units(t, &on, vec![("system.slice", vec![], 800 * MIB, "")]);
    services(
        t,
        vec![
            ("docker.service", vec![dockerd]),
            ("containerd.service", vec![ids.pid()]),
            ("kubelet.service", vec![kubelet]),
            ("ssh.service", vec![ids.pid()]),
            ("cron.service", vec![ids.pid()]),
            ("systemd-journald.service", vec![ids.pid()]),
            ("systemd-logind.service", vec![ids.pid()]),
        ],
        &mut ids,
        10..300,
        &on,
    );
    units(t, &on, vec![("user.slice", vec![], 50 * MIB, "")]);

    let layout = Layout {
        driver: Driver::Cgroupfs,
    };
    #[rustfmt::skip]
    let pods = pod_table(&mut ids, Runtime::Docker, &[
        ("coredns-f9fd979d6-6l5jd", Burstable, Some(170 * MIB), &[1, 1], true),
        ("kube-flannel-ds-4vq8n", Burstable, Some(50 * MIB), &[1, 1], true),
        ("web-frontend-7bd8f5c9d4-h2v6r", Burstable, Some(512 * MIB), &[1, 2], true),
        // Deleted from the API while the kubelet was down; its directory is gone but a
        // process still runs in its cgroup: not an orphan.
        ("log-collector-2kmzq", Burstable, Some(200 * MIB), &[1, 1], false),
        ("kube-proxy-m7x2c", Besteffort, None, &[1, 1], true),
        // Orphans: cgroups left behind, no task, no kubelet directory.
        ("etl-1700000400-qq8wz", Besteffort, None, &[0, 0], false),
        ("cache-warmer-5d4f8b7c9-zr2nd", Guaranteed, Some(256 * MIB), &[0, 0], false),
        ("checkout-6c8d7f9b5-p4wlx", Guaranteed, Some(1024 * MIB), &[1, 2], true),
    ]);
    let kc = KubeCgroups {
        layout,
        allocatable: 15 * GIB,
        kmem: true,
        subtree: "",
    };
    write_kubepods(t, h, &kc, &pods, &|_| {
        vec![
            SlabRow::new("dentry", 96, 192),
            SlabRow::new("kmalloc-64", 128, 64),
        ]
    });

    slab::write_root_caches(&h.path("/sys/kernel/slab"), false);
    h.kubelet_config(
        "/var/lib/kubelet/config.yaml",
        Some("cgroupfs"),
        "failSwapOn: true\n",
    );
    binaries(
        h,
        &[
            ("/usr/bin/kubelet", "Kubernetes v1.19.16"),
            ("/usr/sbin/dockerd", "Docker version 18.09.1, build 4c52b90"),
            (
                "/usr/bin/containerd",
                "containerd github.com/containerd/containerd 1.2.6~ds1 1.2.6~ds1-1",
            ),
            (
                "/usr/sbin/runc",
                "runc version 1.0.0~rc6+dfsg1\ncommit: 1.0.0~rc6+dfsg1-3\nspec: 1.0.1",
            ),
        ],
    );
    let pods = pod_truth(release, layout, &pods, V1_MEMORY_ROOT, "");
    v.truth(h, Some(5000), pods)
}

// ---------------------------------------------------------------------------------
// Debian 11, 5.10, hybrid, systemd driver

fixture! {
    /// Debian 11, kernel `5.10.0-28-amd64`, hybrid: every controller on v1 (memory at
    /// /sys/fs/cgroup/memory) plus cgroup2 without controllers at /sys/fs/cgroup/unified.
    /// Kubernetes 1.23 moving from dockershim to containerd: kubelet config.yaml says
    /// `cgroupDriver: systemd`; pods under kubepods.slice as `cri-containerd-<id>.scope`,
    /// one pod started before the switch still runs as `docker-<id>.scope`. Swap is on
    /// (failSwapOn: false) and in use.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 5.4.41+ .. 6.11: dying memcgs release their IDs except where swap entries of
    ///   shmem pin them; mkdir fails with ENOSPC when full.
    /// - s2: memory's /proc/cgroups row (a v1 hierarchy) = directories + 143 dying.
    /// - s3: kmem always accounted in v1 (not opt-in); 5.9+ memory.kmem.slabinfo is
    ///   deprecated and reads empty; no per-memcg slab caches (5.9+).
    /// - The unified hierarchy mirrors the same cgroup paths (systemd units in every
    ///   hierarchy) but carries no memory controller.
    /// Expected: dying 143; IDs in use = live, an estimate because swap is in use
    /// (swapped shmem may pin some of the dying memcgs' IDs); verdict healthy (exit 0).
    pub fn debian_5_10_hybrid() => "debian-5.10-hybrid", build_debian_5_10_hybrid
}

fn build_debian_5_10_hybrid(h: &Host) -> Truth {
    let release = "5.10.0-28-amd64";
    let mut ids = boot(
        h,
        "debian-5.10-hybrid",
        release,
        "BOOT_IMAGE=/boot/vmlinuz-5.10.0-28-amd64 root=UUID=9d1e7c3a-2b4f-4e8a-b6d5-0c7f1a2e3d4b ro quiet",
        Meminfo {
            mem_total_kib: 8_148_420,
            mem_free_kib: 1_204_884,
            swap_total_kib: 4_194_300,
            swap_free_kib: 3_071_228,
            slab_kib: 611_920,
        },
    );
    let mut v = v1_host(h, &DEBIAN_5_10_HYBRID, &[2, 3, 4, 6]);
    let on = |u: u64| Kmem::Active {
        usage: (u / 25).max(65536) / 4096 * 4096,
        slab: vec![],
    };
    let (containerd, dockerd, kubelet) = (ids.pid(), ids.pid(), ids.pid());
    let t = &mut v.tree;
    #[rustfmt::skip]
    units(t, &on, vec![
        ("init.scope", vec![1], 12 * MIB, ""),
        ("system.slice", vec![], 600 * MIB, ""),
    ]);
    services(
        t,
        vec![
            ("containerd.service", vec![containerd]),
            ("docker.service", vec![dockerd]),
            ("kubelet.service", vec![kubelet]),
            ("ssh.service", vec![ids.pid()]),
            ("cron.service", vec![ids.pid()]),
            ("systemd-journald.service", vec![ids.pid()]),
            ("systemd-udevd.service", vec![ids.pid()]),
        ],
        &mut ids,
        10..300,
        &on,
    );
    #[rustfmt::skip]
    units(t, &on, vec![
        ("user.slice", vec![], 80 * MIB, ""),
        ("user.slice/user-1000.slice", vec![], 80 * MIB, ""),
        ("user.slice/user-1000.slice/session-4.scope", ids.pids(3), 60 * MIB, ""),
        ("user.slice/user-1000.slice/user@1000.service", ids.pids(1), 20 * MIB, ""),
    ]);

    let layout = Layout {
        driver: Driver::Systemd,
    };
    #[rustfmt::skip]
    let mut pods = pod_table(&mut ids, Runtime::Containerd, &[
        ("coredns-64897985d-b2v9k", Burstable, Some(170 * MIB), &[1, 1], true),
        ("kube-proxy-5wq7t", Besteffort, None, &[1, 1], true),
        ("calico-node-kx4g2", Burstable, None, &[1, 2], true),
        ("grafana-6d7c8b9f5-t8m2q", Guaranteed, Some(512 * MIB), &[1, 1], true),
    ]);
    #[rustfmt::skip]
    pods.extend(pod_table(&mut ids, Runtime::Docker, &[
        ("legacy-cron-runner-8f6d5c-x7kq2", Burstable, Some(256 * MIB), &[1, 1], true),
    ]));
    let kc = KubeCgroups {
        layout,
        allocatable: 7 * GIB,
        kmem: true,
        subtree: "",
    };
    write_kubepods(t, h, &kc, &pods, &|_| Vec::new());

    slab::write_root_caches(&h.path("/sys/kernel/slab"), false);
    h.kubelet_config(
        "/var/lib/kubelet/config.yaml",
        Some("systemd"),
        "failSwapOn: false\nmemorySwap:\n  swapBehavior: LimitedSwap\n",
    );
    binaries(h, &[
        ("/usr/bin/kubelet", "Kubernetes v1.23.17"),
        ("/usr/bin/containerd", "containerd github.com/containerd/containerd 1.4.13~ds1 1.4.13~ds1-1~deb11u4"),
        ("/usr/sbin/dockerd", "Docker version 20.10.5+dfsg1, build 55c4c88"),
        ("/usr/sbin/runc", "runc version 1.0.0~rc93+ds1\ncommit: 1.0.0~rc93+ds1-5+deb11u2\nspec: 1.0.2-dev\ngo: go1.15.15\nlibseccomp: 2.5.1"),
    ]);
    let pods = pod_truth(release, layout, &pods, V1_MEMORY_ROOT, "");
    v.truth(h, Some(143), pods)
}

// ---------------------------------------------------------------------------------
// Debian 12, cgroup v2

const V2_ROOT_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc";
/// What the kubelet enables down the kubepods tree.
const V2_KUBEPODS_SUBTREE: &str = "cpuset cpu io memory hugetlb pids rdma misc";

/// A Debian 12 v2-only host: mountinfo, the root, init.scope, system.slice and
/// user.slice. `runtime_unit` is the container runtime's service.
fn debian12_v2(h: &Host, ids: &mut Ids, runtime_unit: &str) -> (V2Tree, u32) {
    let mut mi = Mountinfo::new(RootFs::DebianExt4);
    mi.cgroup2("/sys/fs/cgroup", "nsdelegate,memory_recursiveprot");
    h.mountinfo(&mi);
    // Kernel threads stay in the root cgroup.
    let mut t = V2Tree::new(
        h.path("/sys/fs/cgroup"),
        V2_ROOT_CONTROLLERS,
        V2_ROOT_CONTROLLERS,
        &[2, 3, 4, 5, 6, 7, 9, 10],
        true,
    );
    let kubelet = ids.pid();
    #[rustfmt::skip]
    units(&mut t, &no_kmem, vec![
        ("init.scope", vec![1], 9 * MIB, ""),
        ("system.slice", vec![], 0, "memory pids"),
    ]);
    services(
        &mut t,
        vec![
            (runtime_unit, vec![ids.pid()]),
            ("kubelet.service", vec![kubelet]),
            ("ssh.service", vec![ids.pid()]),
            ("cron.service", vec![ids.pid()]),
            ("systemd-journald.service", vec![ids.pid()]),
            ("systemd-logind.service", vec![ids.pid()]),
            ("systemd-udevd.service", vec![ids.pid()]),
            ("unattended-upgrades.service", vec![ids.pid()]),
        ],
        ids,
        8..300,
        &no_kmem,
    );
    let getty = "system.slice/system-getty.slice";
    // systemd escapes '-' in unit names as \x2d, and the cgroup keeps the backslash.
    let serial_getty = "system.slice/system-serial\\x2dgetty.slice";
    let user = "user.slice/user-1000.slice";
    let manager = "user.slice/user-1000.slice/user@1000.service";
    #[rustfmt::skip]
    units(&mut t, &no_kmem, vec![
        (getty, vec![], 0, "memory pids"),
        (&format!("{getty}/getty@tty1.service"), ids.pids(1), MIB, ""),
        (serial_getty, vec![], 0, "memory pids"),
        (&format!("{serial_getty}/serial-getty@ttyS0.service"), ids.pids(1), MIB, ""),
        ("user.slice", vec![], 0, "memory pids"),
        (user, vec![], 0, "memory pids"),
        (&format!("{user}/session-3.scope"), ids.pids(3), 40 * MIB, ""),
        (manager, vec![], 0, "memory pids"),
        (&format!("{manager}/init.scope"), ids.pids(2), 6 * MIB, ""),
        (&format!("{manager}/app.slice"), vec![], 0, "memory pids"),
        (&format!("{manager}/app.slice/dbus.service"), ids.pids(1), 3 * MIB, ""),
    ]);
    (t, kubelet)
}

/// Finish a v2 node: every cgroup.stat, /proc/cgroups and the root slab caches; its
/// truth is `pods` (from [`pod_truth`]) with the memcg figures of the tree, returned
/// with the tree's totals.
fn finish_v2(h: &Host, t: &V2Tree, format: V2StatFormat, pods: Truth) -> (Truth, V2Totals) {
    let totals = t.finish(format);
    assert_eq!(
        totals.memcgs,
        count_v2_memcgs(&t.root),
        "the fixture's two memcg counts agree"
    );
    v2_proc_cgroups(h, PROC_CGROUPS_6_X, totals.cgroups + totals.dying);
    slab::write_root_caches(&h.path("/sys/kernel/slab"), false);
    let truth = Truth {
        live_memcgs: totals.memcgs,
        dying: Some(totals.dying),
        ..pods
    };
    (truth, totals)
}

fixture! {
    /// Debian 12, kernel `6.1.0-56-cloud-amd64`, cgroup v2 only at /sys/fs/cgroup
    /// (nsdelegate, memory_recursiveprot). Kubernetes 1.28 with CRI-O 1.28 and runc 1.1.5,
    /// systemd driver: `kubepods-<qos>-pod<uid>.slice/crio-<id>.scope` with conmon in
    /// `crio-conmon-<id>.scope` beside it; the kubelet runs with --config naming a file
    /// that says `cgroupDriver: systemd`.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 5.4.41+ .. 6.11: dying memcgs release their IDs (no swap here); ENOSPC when full.
    /// - s2: v2 root cgroup.stat has nr_descendants and nr_dying_descendants (dying
    ///   cgroups of any controller: 38), and no nr_subsys_* keys before 6.12.
    /// - s6: in v2 a child has a memcg only where its parent's cgroup.subtree_control has
    ///   memory: +memory down system.slice, user.slice and the kubepods tree; a CI runner
    ///   service with Delegate=yes made job cgroups without enabling any controller, so
    ///   those children are cgroups but not memcgs.
    /// - /proc/cgroups on v2: every controller on hierarchy 0 with the count of every v2
    ///   cgroup (dying included).
    /// - s4: memory.reclaim exists (5.19+).
    /// Expected: live = memcgs (not directories), dying 38 (nr_dying_descendants), IDs
    /// exact, verdict healthy (exit 0).
    pub fn debian_6_1_v2() => "debian-6.1-v2", build_debian_6_1_v2
}

fn build_debian_6_1_v2(h: &Host) -> Truth {
    let release = "6.1.0-56-cloud-amd64";
    let mut ids = boot(
        h,
        "debian-6.1-v2",
        release,
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-cloud-amd64 root=PARTUUID=6f1c0d2e-9a7b-4c3d-8e5f-2b1a0c9d8e7f ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0",
        Meminfo {
            mem_total_kib: 8_139_812,
            mem_free_kib: 2_944_316,
            slab_kib: 402_772,
            ..Meminfo::default()
        },
    );
    let (mut t, kubelet) = debian12_v2(h, &mut ids, "crio.service");
    // A delegated service that never enabled controllers for its children.
    let runner = "system.slice/gitlab-runner.service";
    #[rustfmt::skip]
    units(&mut t, &no_kmem, vec![
        (runner, ids.pids(1), 90 * MIB, ""),
        (&format!("{runner}/job-88213"), ids.pids(2), 0, ""),
        (&format!("{runner}/job-88214"), ids.pids(2), 0, ""),
        (&format!("{runner}/job-88215"), ids.pids(2), 0, ""),
    ]);

    let layout = Layout {
        driver: Driver::Systemd,
    };
    #[rustfmt::skip]
    let pods = pod_table(&mut ids, Runtime::Crio, &[
        ("coredns-5dd5756b68-8kq2w", Burstable, Some(170 * MIB), &[1], true),
        ("kube-proxy-2xkqp", Besteffort, None, &[1], true),
        ("calico-node-9w8fd", Burstable, None, &[3], true),
        ("web-7c5ddbdf54-4hgk9", Guaranteed, Some(256 * MIB), &[2, 1], true),
        ("prometheus-node-exporter-lx2vd", Burstable, Some(180 * MIB), &[1], true),
    ]);
    let kc = KubeCgroups {
        layout,
        allocatable: 7 * GIB,
        kmem: false,
        subtree: V2_KUBEPODS_SUBTREE,
    };
    write_kubepods(&mut t, h, &kc, &pods, &|_| Vec::new());
    t.dying_under("kubepods.slice/kubepods-burstable.slice", 30);
    t.dying_under("system.slice", 8);
    let note = ", each with its crio-conmon scope";
    let pods = pod_truth(release, layout, &pods, "/sys/fs/cgroup", note);
    let (mut truth, totals) = finish_v2(h, &t, V2StatFormat::Descendants, pods);

    h.process(
        kubelet,
        "kubelet",
        &[
            "/usr/bin/kubelet",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/etc/kubernetes/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///var/run/crio/crio.sock",
        ],
    );
    h.kubelet_config(
        "/etc/kubernetes/kubelet/config.yaml",
        Some("systemd"),
        "failSwapOn: true\n",
    );
    binaries(h, &[
        ("/usr/bin/kubelet", "Kubernetes v1.28.15"),
        ("/usr/bin/crio", "crio version 1.28.4\nVersion:        1.28.4\nGitCommit:      a1b2c3d4e5f60718293a4b5c6d7e8f9012345678\nGitCommitDate:  2024-02-22T17:52:02Z\nGitTreeState:   clean\nGoVersion:      go1.20.10\nCompiler:       gc\nPlatform:       linux/amd64"),
        ("/usr/sbin/runc", "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4"),
    ]);
    truth.inventory.push(format!(
        "{} cgroups, {} of them memcgs (root included); 38 dying",
        totals.cgroups, totals.memcgs
    ));
    truth
}

/// The pods of the 6.12 fixtures (containerd with a pause sandbox per pod).
#[rustfmt::skip]
fn pods_6_12(ids: &mut Ids) -> Vec<Pod> {
    pod_table(ids, Runtime::Containerd, &[
        ("coredns-7c65d6cfc9-qxw8z", Burstable, Some(170 * MIB), &[1, 1], true),
        ("kube-proxy-7x2mn", Besteffort, None, &[1, 1], true),
        ("cilium-4kq9x", Burstable, None, &[1, 2], true),
        ("api-gateway-6b9f7c5d8-j2lkp", Guaranteed, Some(1024 * MIB), &[1, 2], true),
        ("batch-worker-5f7b8d9c6-p9x2m", Burstable, Some(2048 * MIB), &[1, 4], true),
    ])
}

/// A Debian 12 host on a backports 6.12 kernel with the 6.12 pods; `leak_to`: grow a
/// CI runner's leaked job cgroups until the host has exactly that many memcgs.
fn build_6_12(h: &Host, seed: &str, dying: &[(&str, u64)], leak_to: Option<u64>) -> Truth {
    let release = "6.12.117+deb12-cloud-amd64";
    let mut ids = boot(
        h,
        seed,
        release,
        "BOOT_IMAGE=/boot/vmlinuz-6.12.117+deb12-cloud-amd64 root=PARTUUID=0e9d8c7b-6a5f-4e3d-2c1b-0a9f8e7d6c5b ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0",
        Meminfo {
            mem_total_kib: 32_866_104,
            mem_free_kib: 9_402_716,
            slab_kib: 2_884_120,
            ..Meminfo::default()
        },
    );
    let (mut t, kubelet) = debian12_v2(h, &mut ids, "containerd.service");
    let layout = Layout {
        driver: Driver::Systemd,
    };
    let pods = pods_6_12(&mut ids);
    let kc = KubeCgroups {
        layout,
        allocatable: 30 * GIB,
        kmem: false,
        subtree: V2_KUBEPODS_SUBTREE,
    };
    write_kubepods(&mut t, h, &kc, &pods, &|_| Vec::new());
    let mut inventory = Vec::new();
    if let Some(target) = leak_to {
        // A CI runner (Delegate=yes) that makes a memory-enabled cgroup per job and never
        // removes it: empty live cgroups, each holding a memcg ID.
        #[rustfmt::skip]
        units(&mut t, &no_kmem, vec![
            ("system.slice/ci-runner.service", vec![], 0, "memory pids"),
            ("system.slice/ci-runner.service/runner", ids.pids(1), 120 * MIB, ""),
            ("system.slice/ci-runner.service/jobs", vec![], 0, "memory pids"),
        ]);
        let base = count_v2_memcgs(&t.root);
        let need = target
            .checked_sub(base)
            .expect("target above the base tree");
        let shards = need.div_ceil(251);
        let mut leaves = need - shards;
        let mut job = 4_180_000u64;
        for s in 0..shards {
            let shard = format!("system.slice/ci-runner.service/jobs/shard-{s:03}");
            unit(&mut t, &shard, vec![], 0, Kmem::Off, "memory pids");
            let n = leaves.min(250);
            leaves -= n;
            let names = (0..n).map(|_| {
                job += 1;
                format!("job-{job}")
            });
            t.bulk_leaves(&shard, names);
        }
        assert_eq!(leaves, 0);
        inventory.push(format!(
            "system.slice/ci-runner.service/jobs: {need} leaked memory-enabled cgroups ({shards} shards and their empty job-N leaves; the leaves carry only cgroup.procs)"
        ));
    }
    for (parent, n) in dying {
        t.dying_under(parent, *n);
    }
    let pods = pod_truth(release, layout, &pods, "/sys/fs/cgroup", "");
    let (mut truth, totals) = finish_v2(h, &t, V2StatFormat::WithSubsys, pods);
    if let Some(target) = leak_to {
        assert_eq!(totals.memcgs, target);
    }
    h.kubelet_config(
        "/var/lib/kubelet/config.yaml",
        Some("systemd"),
        "failSwapOn: true\nmaxPods: 110\n",
    );
    h.process(
        kubelet,
        "kubelet",
        &[
            "/usr/bin/kubelet",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        ],
    );
    binaries(h, &[
        ("/usr/bin/kubelet", "Kubernetes v1.31.4"),
        ("/usr/bin/containerd", "containerd containerd.io 1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182"),
        ("/usr/bin/runc", "runc version 1.2.2\ncommit: v1.2.2-0-g7cb3632\nspec: 1.2.0\ngo: go1.22.9\nlibseccomp: 2.5.4"),
    ]);
    truth.inventory.append(&mut inventory);
    truth.inventory.push(format!("{} cgroups, {} of them memcgs (root included) = nr_subsys_memory; {} dying = nr_dying_subsys_memory", totals.cgroups, totals.memcgs, totals.dying));
    truth
}

fixture! {
    /// Debian 12 with the backports kernel `6.12.117+deb12-cloud-amd64`, cgroup v2 only
    /// (Debian's 6.12 has no CONFIG_MEMCG_V1). Kubernetes 1.31, containerd 1.7, runc 1.2,
    /// systemd driver (`cri-containerd-<id>.scope`). A batch workload churns pods and
    /// leaves dying memcgs pinned by page cache.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: 6.12+: dying memcgs release their IDs (swap pins only; no swap here); mkdir
    ///   fails with EBUSY when full.
    /// - s2: 6.12 root cgroup.stat adds nr_subsys_<ss> (css->nr_descendants + 1: the root
    ///   counts) and nr_dying_subsys_<ss>, in kernel order (cgroup_stat_show). Here
    ///   nr_subsys_memory = every memcg of the tree, root included, and
    ///   nr_dying_subsys_memory = 2417 exactly (2300 under kubepods-burstable.slice, 117
    ///   under system.slice); nr_dying_descendants is the same 2417.
    /// - s6: memcgs only below +memory in cgroup.subtree_control.
    /// - s4: memory.reclaim exists.
    /// Expected: dying 2417 from nr_dying_subsys_memory (more than live): verdict leaking
    /// (exit 3) with a memory.reclaim remedy; IDs exact, headroom 65535 - live.
    pub fn debian_6_12_v2_dying_subsys() => "debian-6.12-v2-dying-subsys", build_debian_6_12_v2_dying_subsys
}

fn build_debian_6_12_v2_dying_subsys(h: &Host) -> Truth {
    build_6_12(
        h,
        "debian-6.12-v2-dying-subsys",
        &[
            ("kubepods.slice/kubepods-burstable.slice", 2300),
            ("system.slice", 117),
        ],
        None,
    )
}

fixture! {
    /// Kernel `6.12.117+deb12-cloud-amd64`, cgroup v2, the 6.12 Kubernetes node of
    /// debian-6.12-v2-dying-subsys plus a CI runner service (Delegate=yes) that made a
    /// memory-enabled cgroup per job and never removed them: 62500 live memcgs.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: the ID limit is 65535 (MEM_CGROUP_ID_MAX), the root uses one; on 6.12+ only
    ///   live memcgs (and swap-pinned dying ones) hold IDs; EBUSY when full.
    /// - s2: root cgroup.stat nr_subsys_memory 62500 = the memcgs of the tree, root
    ///   included (the tree really has them: ext4 link counts are as kernfs's);
    ///   nr_dying_subsys_memory 12.
    /// Expected: 62500 IDs in use (95.4%), headroom 3035: verdict at_risk (exit 3).
    pub fn v6_12_v2_near_limit() => "6.12-v2-near-limit", build_v6_12_v2_near_limit
}

fn build_v6_12_v2_near_limit(h: &Host) -> Truth {
    build_6_12(
        h,
        "6.12-v2-near-limit",
        &[("system.slice", 12)],
        Some(62_500),
    )
}

fixture! {
    /// Kernel `6.12.117+deb12-cloud-amd64`, cgroup v2, as 6.12-v2-near-limit but the
    /// leaked job cgroups have filled the ID space: 65535 memcgs.
    ///
    /// Facts encoded (docs/kernel-facts.md):
    /// - s1: measured in a 6.12 guest: mkdir fails with EBUSY at 65535 memcgs (root and
    ///   every other memcg counted), and cgroup.stat then shows nr_subsys_memory 65535.
    /// - s2: nr_dying_subsys_memory 3: dying memcgs do not hold IDs on 6.12 (no swap).
    /// Expected: 65535 IDs in use, headroom 0: verdict exhausted (exit 4).
    pub fn v6_12_v2_exhausted() => "6.12-v2-exhausted", build_v6_12_v2_exhausted
}

fn build_v6_12_v2_exhausted(h: &Host) -> Truth {
    build_6_12(h, "6.12-v2-exhausted", &[("system.slice", 3)], Some(65_535))
}

//! Cgroup directory writers: a v1 memory hierarchy (with the same paths mirrored
//! into the other v1 hierarchies and, on hybrid hosts, the unified one) and a v2
//! hierarchy with the root `cgroup.stat` computed from the tree that was written.
//!
//! Directories are real: ext4 keeps st_nlink = 2 + subdirectories like kernfs does
//! (docs/kernel-facts.md section 2), so counting by link counts works on a fixture as on a host.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::write::{create_child, create_dir_all, create_file_with_content, set_mode, subdirs};

/// Kernel-memory accounting state of a v1 memcg (docs/kernel-facts.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub enum Kmem {
    /// Not accounted: usage 0; memory.kmem.slabinfo has no rows (a 3.10 kernel
    /// returns EIO there, which a plain file cannot: the header alone stands in).
    Off,
    /// Accounted: usage > 0 and, where the kernel lists them, per-memcg slab rows.
    Active { usage: u64, slab: Vec<SlabRow> },
}

/// A row of `memory.kmem.slabinfo` (slab_common.c cache_show).
#[derive(Debug, Clone, PartialEq)]
pub struct SlabRow {
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u32,
    pub objperslab: u32,
    pub pagesperslab: u32,
}

impl SlabRow {
    pub fn new(name: &str, objs: u64, objsize: u32) -> SlabRow {
        let per_slab = (4096 / objsize.max(8)).max(1);
        let num = objs.div_ceil(per_slab as u64) * per_slab as u64;
        SlabRow {
            name: name.to_string(),
            active_objs: objs,
            num_objs: num,
            objsize,
            objperslab: per_slab,
            pagesperslab: 1,
        }
    }

    fn line(&self) -> String {
        let slabs = self.num_objs / self.objperslab as u64;
        format!(
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
            self.name, self.active_objs, self.num_objs, self.objsize, self.objperslab, self.pagesperslab, 0, 0, 0, slabs, slabs, 0
        )
    }
}

pub const SLABINFO_HEADER: &str = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n";

/// What one cgroup holds.
#[derive(Debug, Clone)]
pub struct CgroupSpec {
    /// TGIDs in `cgroup.procs`.
    pub procs: Vec<u32>,
    /// None: unlimited (`max` on v2).
    pub memory_limit: Option<u64>,
    /// memory.usage_in_bytes / memory.current.
    pub memory_usage: u64,
    /// v1 only.
    pub kmem: Kmem,
    /// v2 only: controllers enabled for the children (`cgroup.subtree_control`).
    pub subtree_control: String,
}

impl CgroupSpec {
    pub fn empty() -> CgroupSpec {
        CgroupSpec {
            procs: Vec::new(),
            memory_limit: None,
            memory_usage: 0,
            kmem: Kmem::Off,
            subtree_control: String::new(),
        }
    }
    pub fn procs(mut self, p: Vec<u32>) -> Self {
        self.procs = p;
        self
    }
    pub fn limit(mut self, l: Option<u64>) -> Self {
        self.memory_limit = l;
        self
    }
    pub fn usage(mut self, u: u64) -> Self {
        self.memory_usage = u;
        self
    }
    pub fn kmem(mut self, k: Kmem) -> Self {
        self.kmem = k;
        self
    }
    pub fn subtree(mut self, s: &str) -> Self {
        self.subtree_control = s.to_string();
        self
    }
}

/// Anything that can make a cgroup at a path relative to the hierarchy root.
pub trait CgroupWriter {
    fn cgroup(&mut self, rel: &str, spec: &CgroupSpec);
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) {
    create_file_with_content(&dir.join(name), content);
}

fn lines(ids: &[u32]) -> String {
    ids.iter().map(|p| format!("{p}\n")).collect()
}

fn memory_stat_v1(usage: u64, limit: u64) -> String {
    let rss = usage / 5 * 3 / 4096 * 4096;
    let cache = (usage - rss.min(usage)) / 4096 * 4096;
    format!(
        "cache {cache}\nrss {rss}\nrss_huge 0\nmapped_file {}\nswap 0\npgpgin {}\npgpgout {}\npgfault {}\npgmajfault 0\ninactive_anon 0\nactive_anon {rss}\ninactive_file {}\nactive_file {}\nunevictable 0\nhierarchical_memory_limit {limit}\ntotal_cache {cache}\ntotal_rss {rss}\n",
        cache / 4,
        usage / 2048,
        usage / 4096,
        usage / 1024,
        cache / 2,
        cache - cache / 2
    )
}

/// How a kernel's v1 memory files read.
#[derive(Debug, Clone, Copy)]
pub struct V1Flavor {
    /// memory.limit_in_bytes when unlimited: LLONG_MAX with res_counter (3.10),
    /// PAGE_COUNTER_MAX * PAGE_SIZE with page_counter (3.19+).
    pub unlimited: u64,
    /// memory.kmem.slabinfo lists rows (3.10 .. 5.8) or is empty (5.9+: deprecated, reads nothing).
    pub slabinfo_rows: bool,
    /// memory.oom_control has an oom_kill line (4.13+).
    pub oom_kill_line: bool,
}

pub const V1_3_10: V1Flavor = V1Flavor {
    unlimited: 9223372036854775807,
    slabinfo_rows: true,
    oom_kill_line: false,
};
pub const V1_4_4: V1Flavor = V1Flavor {
    unlimited: 9223372036854771712,
    slabinfo_rows: true,
    oom_kill_line: false,
};
pub const V1_4_19: V1Flavor = V1Flavor {
    unlimited: 9223372036854771712,
    slabinfo_rows: true,
    oom_kill_line: true,
};
pub const V1_5_10: V1Flavor = V1Flavor {
    unlimited: 9223372036854771712,
    slabinfo_rows: false,
    oom_kill_line: true,
};

/// Another hierarchy where the container runtime makes the same paths.
#[derive(Debug, Clone)]
enum Mirror {
    V1(PathBuf),
    /// The unified hierarchy of a hybrid host (no controllers bound).
    Unified(PathBuf),
}

/// A v1 memory hierarchy, and the other hierarchies that get the same directories
/// (runc and the kubelet create a cgroup path in every mounted hierarchy).
#[derive(Debug, Clone)]
pub struct V1Tree {
    pub memory: PathBuf,
    mirrors: Vec<Mirror>,
    pub flavor: V1Flavor,
}

impl V1Tree {
    /// The memory hierarchy root at `memory` (a local path), with its root files.
    pub fn new(memory: PathBuf, flavor: V1Flavor, root_procs: &[u32]) -> V1Tree {
        create_dir_all(&memory);
        let t = V1Tree {
            memory,
            mirrors: Vec::new(),
            flavor,
        };
        let spec = CgroupSpec::empty()
            .procs(root_procs.to_vec())
            .usage(3_221_225_472);
        t.write_memory_files(&t.memory.clone(), &spec, true);
        t
    }

    /// Mirror every cgroup into another v1 hierarchy mounted at `root`.
    pub fn mirror_v1(&mut self, root: PathBuf, root_procs: &[u32]) {
        create_dir_all(&root);
        write_v1_base(&root, root_procs, true);
        self.mirrors.push(Mirror::V1(root));
    }

    /// Mirror every cgroup into the unified (cgroup2, no controllers) hierarchy of a hybrid host.
    pub fn mirror_unified(&mut self, root: PathBuf, root_procs: &[u32]) {
        create_dir_all(&root);
        write_v2_base(&root, root_procs, "", "", true);
        self.mirrors.push(Mirror::Unified(root));
    }

    fn write_memory_files(&self, dir: &Path, s: &CgroupSpec, is_root: bool) {
        let f = self.flavor;
        write_v1_base(dir, &s.procs, is_root);
        let limit = s.memory_limit.unwrap_or(f.unlimited);
        write(dir, "memory.limit_in_bytes", format!("{limit}\n"));
        write(
            dir,
            "memory.soft_limit_in_bytes",
            format!("{}\n", f.unlimited),
        );
        write(
            dir,
            "memory.usage_in_bytes",
            format!("{}\n", s.memory_usage),
        );
        write(
            dir,
            "memory.max_usage_in_bytes",
            format!("{}\n", s.memory_usage + s.memory_usage / 7),
        );
        write(dir, "memory.failcnt", "0\n");
        write(dir, "memory.use_hierarchy", "1\n");
        write(dir, "memory.swappiness", "60\n");
        write(dir, "memory.move_charge_at_immigrate", "0\n");
        write(dir, "memory.stat", memory_stat_v1(s.memory_usage, limit));
        write(
            dir,
            "memory.oom_control",
            if f.oom_kill_line {
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
            } else {
                "oom_kill_disable 0\nunder_oom 0\n"
            },
        );
        // write-only in the kernel (S_IWUSR)
        write(dir, "memory.force_empty", "");
        set_mode(&dir.join("memory.force_empty"), 0o200);
        // kmem: written 1 then -1 by kubelet/runc to switch accounting on, so an active
        // memcg reads unlimited too (docs/kernel-facts.md section 3).
        write(
            dir,
            "memory.kmem.limit_in_bytes",
            format!("{}\n", f.unlimited),
        );
        write(dir, "memory.kmem.failcnt", "0\n");
        let (kusage, rows) = match &s.kmem {
            Kmem::Off => (0, None),
            Kmem::Active { usage, slab } => (*usage, Some(slab)),
        };
        write(dir, "memory.kmem.usage_in_bytes", format!("{kusage}\n"));
        write(
            dir,
            "memory.kmem.max_usage_in_bytes",
            format!("{}\n", kusage + kusage / 9),
        );
        let slabinfo = if !f.slabinfo_rows {
            String::new()
        } else {
            let mut t = SLABINFO_HEADER.to_string();
            for r in rows.into_iter().flatten() {
                t.push_str(&r.line());
                t.push('\n');
            }
            t
        };
        write(dir, "memory.kmem.slabinfo", slabinfo);
    }
}

impl CgroupWriter for V1Tree {
    fn cgroup(&mut self, rel: &str, spec: &CgroupSpec) {
        let dir = self.memory.join(rel);
        create_child(
            dir.parent().expect("a cgroup has a parent"),
            dir.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name"),
        );
        self.write_memory_files(&dir, spec, false);
        for m in &self.mirrors {
            match m {
                Mirror::V1(root) => {
                    let d = root.join(rel);
                    create_dir_all(&d);
                    write_v1_base(&d, &spec.procs, false);
                }
                Mirror::Unified(root) => {
                    let d = root.join(rel);
                    create_dir_all(&d);
                    write_v2_base(&d, &spec.procs, "", "", false);
                }
            }
        }
    }
}

/// cgroup1_base_files (docs/kernel-facts.md section 2): no dying count among them.
fn write_v1_base(dir: &Path, procs: &[u32], is_root: bool) {
    write(dir, "cgroup.procs", lines(procs));
    write(dir, "tasks", lines(procs));
    write(dir, "cgroup.clone_children", "0\n");
    write(dir, "notify_on_release", "0\n");
    if is_root {
        write(dir, "cgroup.sane_behavior", "0\n");
        write(dir, "release_agent", "");
    }
}

fn write_v2_base(
    dir: &Path,
    procs: &[u32],
    controllers: &str,
    subtree_control: &str,
    is_root: bool,
) {
    write(dir, "cgroup.procs", lines(procs));
    write(dir, "cgroup.threads", lines(procs));
    write(dir, "cgroup.controllers", format!("{controllers}\n"));
    write(
        dir,
        "cgroup.subtree_control",
        format!("{subtree_control}\n"),
    );
    write(dir, "cgroup.max.descendants", "max\n");
    write(dir, "cgroup.max.depth", "max\n");
    write(
        dir,
        "cgroup.stat",
        "nr_descendants 0\nnr_dying_descendants 0\n",
    );
    if !is_root {
        write(dir, "cgroup.type", "domain\n");
        write(dir, "cgroup.freeze", "0\n");
        write(
            dir,
            "cgroup.events",
            format!("populated {}\nfrozen 0\n", u8::from(!procs.is_empty())),
        );
    }
}

/// What `cgroup.stat` of a v2 kernel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2StatFormat {
    /// 4.14 .. 6.11: nr_descendants, nr_dying_descendants.
    Descendants,
    /// 6.12+: also nr_subsys_<ss> (csses in the subtree, self included) and
    /// nr_dying_subsys_<ss> (kernel/cgroup/cgroup.c cgroup_stat_show).
    WithSubsys,
}

/// Controllers bound to v2 and not inhibited, in cgroup_subsys.h order, as
/// cgroup.stat lists them on 6.12. perf_event is implicit: every cgroup has its css.
pub const V2_STAT_SUBSYS: [&str; 9] = [
    "cpuset",
    "cpu",
    "io",
    "memory",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// What the tree adds up to, computed by the fixture itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2Totals {
    /// Directories, the root included.
    pub cgroups: u64,
    /// Cgroups with a memory css: the root plus every child of a cgroup whose
    /// subtree_control has memory.
    pub memcgs: u64,
    pub dying: u64,
}

/// A v2 hierarchy.
#[derive(Debug, Clone)]
pub struct V2Tree {
    pub root: PathBuf,
    /// memory.reclaim and memory.peak exist (5.19+).
    pub reclaim: bool,
    /// Dying cgroups (each with a dying memcg) below a parent, by the parent's relative path.
    dying: BTreeMap<String, u64>,
    /// Parents whose children are all bulk leaves (never listed again by `finish`).
    bulk_parents: BTreeMap<String, u64>,
}

impl V2Tree {
    pub fn new(
        root: PathBuf,
        controllers: &str,
        subtree_control: &str,
        root_procs: &[u32],
        reclaim: bool,
    ) -> V2Tree {
        create_dir_all(&root);
        write_v2_base(&root, root_procs, controllers, subtree_control, true);
        write(&root, "memory.stat", "anon 0\nfile 0\n");
        write(&root, "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        if reclaim {
            write(&root, "memory.reclaim", "");
            set_mode(&root.join("memory.reclaim"), 0o200);
        }
        V2Tree {
            root,
            reclaim,
            dying: BTreeMap::new(),
            bulk_parents: BTreeMap::new(),
        }
    }

    fn subtree_control_of(&self, rel: &Path) -> String {
        let p = self.root.join(rel).join("cgroup.subtree_control");
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// `n` dying cgroups (removed, memcg still pinned) that were children of `parent_rel`.
    pub fn dying_under(&mut self, parent_rel: &str, n: u64) {
        *self.dying.entry(parent_rel.to_string()).or_default() += n;
    }

    /// Many empty leaf cgroups under `parent_rel`, which must have no other children:
    /// only the directory and an empty cgroup.procs (cgleak never opens a leaf: its
    /// parent's link count says it is one). Tens of thousands of them stay affordable.
    pub fn bulk_leaves(
        &mut self,
        parent_rel: &str,
        names: impl IntoIterator<Item = String>,
    ) -> u64 {
        let parent = self.root.join(parent_rel);
        let mut n = 0;
        for name in names {
            let d = parent.join(&name);
            fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            fs::write(d.join("cgroup.procs"), "")
                .unwrap_or_else(|e| panic!("write {}/cgroup.procs: {e}", d.display()));
            n += 1;
        }
        *self.bulk_parents.entry(parent_rel.to_string()).or_default() += n;
        n
    }

    /// Write every cgroup.stat and cgroup.events from the tree as it now stands, and
    /// return the totals the root's cgroup.stat shows.
    pub fn finish(&self, format: V2StatFormat) -> V2Totals {
        let all: Vec<&str> = V2_STAT_SUBSYS.to_vec();
        let agg = self.finish_dir(Path::new(""), &all, format);
        V2Totals {
            cgroups: agg.cgroups,
            memcgs: agg.css["memory"],
            dying: agg.dying,
        }
    }

    fn finish_dir(&self, rel: &Path, own_css: &[&str], format: V2StatFormat) -> Agg {
        let dir = self.root.join(rel);
        let sc = if dir.join("cgroup.subtree_control").exists() {
            self.subtree_control_of(rel)
        } else {
            String::new()
        };
        let child_css: Vec<&str> = V2_STAT_SUBSYS
            .iter()
            .copied()
            .filter(|c| *c == "perf_event" || sc.split_whitespace().any(|s| s == *c))
            .collect();
        let mut agg = Agg {
            cgroups: 1,
            css: BTreeMap::new(),
            dying: 0,
            populated: false,
        };
        for c in V2_STAT_SUBSYS {
            agg.css.insert(c, u64::from(own_css.contains(&c)));
        }
        agg.populated = fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false);
        if let Some(n) = self.bulk_parents.get(rel.to_str().unwrap_or("")) {
            // Empty leaves with the csses this cgroup's subtree_control gives them.
            agg.cgroups += n;
            for c in &child_css {
                *agg.css.entry(c).or_default() += n;
            }
        } else {
            for name in subdirs(&dir) {
                let a = self.finish_dir(&rel.join(&name), &child_css, format);
                agg.cgroups += a.cgroups;
                for (k, v) in a.css {
                    *agg.css.entry(k).or_default() += v;
                }
                agg.dying += a.dying;
                agg.populated |= a.populated;
            }
        }
        agg.dying += self
            .dying
            .get(rel.to_str().unwrap_or(""))
            .copied()
            .unwrap_or(0);
        // Bulk leaves carry no cgroup.stat: they are never read.
        if dir.join("cgroup.controllers").exists() {
            let mut s = format!("nr_descendants {}\n", agg.cgroups - 1);
            if format == V2StatFormat::WithSubsys {
                for c in V2_STAT_SUBSYS {
                    s.push_str(&format!("nr_subsys_{c} {}\n", agg.css[c]));
                }
            }
            s.push_str(&format!("nr_dying_descendants {}\n", agg.dying));
            if format == V2StatFormat::WithSubsys {
                for c in V2_STAT_SUBSYS {
                    // Only the memory css outlives its cgroup here: cpu, io and pids are freed at rmdir.
                    s.push_str(&format!(
                        "nr_dying_subsys_{c} {}\n",
                        if c == "memory" { agg.dying } else { 0 }
                    ));
                }
            }
            write(&dir, "cgroup.stat", s);
            if !rel.as_os_str().is_empty() {
                write(
                    &dir,
                    "cgroup.events",
                    format!("populated {}\nfrozen 0\n", u8::from(agg.populated)),
                );
            }
        }
        agg
    }
}

struct Agg {
    cgroups: u64,
    css: BTreeMap<&'static str, u64>,
    dying: u64,
    populated: bool,
}

impl CgroupWriter for V2Tree {
    fn cgroup(&mut self, rel: &str, spec: &CgroupSpec) {
        let rel_path = Path::new(rel);
        let parent_rel = rel_path.parent().unwrap_or(Path::new(""));
        let parent_sc = self.subtree_control_of(parent_rel);
        for c in spec.subtree_control.split_whitespace() {
            assert!(
                parent_sc.split_whitespace().any(|p| p == c),
                "{rel}: subtree_control {c} not enabled in the parent ({parent_sc})"
            );
        }
        let dir = self.root.join(rel);
        create_child(
            &self.root.join(parent_rel),
            dir.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name"),
        );
        write_v2_base(&dir, &spec.procs, &parent_sc, &spec.subtree_control, false);
        let has = |c: &str| parent_sc.split_whitespace().any(|p| p == c);
        if has("memory") {
            let max = spec
                .memory_limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "max".into());
            write(&dir, "memory.current", format!("{}\n", spec.memory_usage));
            write(&dir, "memory.max", format!("{max}\n"));
            write(&dir, "memory.high", "max\n");
            write(&dir, "memory.low", "0\n");
            write(&dir, "memory.min", "0\n");
            write(&dir, "memory.swap.current", "0\n");
            write(&dir, "memory.swap.max", "max\n");
            write(&dir, "memory.oom.group", "0\n");
            write(
                &dir,
                "memory.events",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
            );
            write(
                &dir,
                "memory.stat",
                format!(
                    "anon {}\nfile {}\nkernel {}\nslab {}\nsock 0\nshmem 0\n",
                    spec.memory_usage / 2,
                    spec.memory_usage / 3,
                    spec.memory_usage / 10,
                    spec.memory_usage / 20
                ),
            );
            if self.reclaim {
                write(
                    &dir,
                    "memory.peak",
                    format!("{}\n", spec.memory_usage + spec.memory_usage / 5),
                );
                write(&dir, "memory.reclaim", "");
                set_mode(&dir.join("memory.reclaim"), 0o200);
            }
        }
        if has("pids") {
            write(&dir, "pids.current", format!("{}\n", spec.procs.len()));
            write(&dir, "pids.max", "max\n");
        }
        if has("cpu") {
            write(&dir, "cpu.weight", "100\n");
            write(&dir, "cpu.max", "max 100000\n");
        }
    }
}

/// Count the cgroups with a memory css in a v2 tree, from the subtree_control files
/// (independently of cgleak): for tests of the fixture itself.
pub fn count_v2_memcgs(root: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let sc = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let kids = subdirs(dir);
        let mut n = if sc.split_whitespace().any(|c| c == "memory") {
            kids.len() as u64
        } else {
            0
        };
        for k in kids {
            n += walk(&dir.join(k));
        }
        n
    }
    1 + walk(root)
}

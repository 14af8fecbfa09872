//! Fake host roots for kernels cgleak cannot boot here, built at test time in a
//! temporary directory: `/proc` files, mountinfo, cgroup v1/v2 trees, per-memcg slab
//! caches in `/sys/kernel/slab`, the kubelet's state and stand-in binaries.
//!
//! Each fixture is one function whose doc comment names the kernel and the facts of
//! docs/kernel-facts.md it encodes; the same text is written to `<root>/FIXTURE.txt`.
//! Nothing is committed as a tree: the Rust code is the fixture.

pub mod cgroup;
mod fixtures;
pub mod host;
pub mod ids;
pub mod k8s;
pub mod rng;
pub mod slab;
pub mod spawn;
pub mod write;

use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub use fixtures::*;
pub use host::{exec_lock, Host};

/// What a fixture encodes, computed by the fixture code from the tree it wrote
/// (never by cgleak), so tests can hold cgleak's figures against it.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub release: &'static str,
    /// Host path of the memory hierarchy (`/sys/fs/cgroup/memory`).
    pub memory_root: &'static str,
    /// Live memcgs, the root included. v1: every directory of the memory hierarchy;
    /// v2: the root and every child of a cgroup with `memory` in cgroup.subtree_control.
    pub live_memcgs: u64,
    /// Dying memcgs as this kernel exposes them; None where it cannot (3.10).
    pub dying: Option<u64>,
    /// v1 memcgs with memory.kmem.usage_in_bytes > 0, where kmem accounting is opt-in
    /// (3.10, 4.0 .. 4.5); None elsewhere.
    pub kmem_active: Option<u64>,
    pub pods: u64,
    /// Container cgroups (CRI-O conmon scopes excluded).
    pub containers: u64,
    /// Pod cgroups with no task in their subtree and no kubelet pod directory, sorted.
    pub orphan_uids: Vec<String>,
    /// Cgroup names of deleted kmem-active memcgs whose per-memcg slab caches remain
    /// (3.10 and 4.x with kmem accounting), sorted: what `cgleak dying` names by slab names.
    pub dead_slab_names: Vec<String>,
    /// One line per pod cgroup and per notable cgroup, for FIXTURE.txt.
    pub inventory: Vec<String>,
}

/// A built fixture. The tree is removed when this is dropped.
pub struct Fixture {
    pub name: &'static str,
    /// The doc comment of the fixture function, also in `<root>/FIXTURE.txt`.
    pub facts: String,
    pub truth: Truth,
    dir: TempDir,
}

impl Fixture {
    /// Build a fixture: `f` writes the tree through a [`Host`] and returns its truth.
    pub fn build(name: &'static str, facts: &str, f: impl FnOnce(&Host) -> Truth) -> Fixture {
        let base = fixture_base_dir();
        let dir = tempfile::Builder::new()
            .prefix(&format!("cgleak-fixture-{name}-"))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("create a temporary directory in {}: {e}", base.display()));
        // A host's / is 0755 (TempDir makes 0700): unprivileged test runs must get in.
        write::set_mode(dir.path(), 0o755);
        let host = Host::new(dir.path());
        let truth = f(&host);
        let facts = facts
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut text = format!("cgleak fixture {name}\n\n{facts}\n\nWritten by crates/cgleak-fixtures; what the tree adds up to:\n");
        text.push_str(&format!(
            "  release       {}\n  memory root   {}\n  live memcgs   {}\n  dying         {}\n  kmem-active   {}\n  pods          {}\n  containers    {}\n  orphan pods   {}\n",
            truth.release,
            truth.memory_root,
            truth.live_memcgs,
            truth.dying.map(|d| d.to_string()).unwrap_or_else(|| "not shown by this kernel".into()),
            truth.kmem_active.map(|d| d.to_string()).unwrap_or_else(|| "n/a (not opt-in)".into()),
            truth.pods,
            truth.containers,
            if truth.orphan_uids.is_empty() { "none".to_string() } else { truth.orphan_uids.join(", ") },
        ));
        if !truth.inventory.is_empty() {
            text.push_str("\nInventory:\n");
            for l in &truth.inventory {
                text.push_str(&format!("  {l}\n"));
            }
        }
        host.file("/FIXTURE.txt", text);
        Fixture {
            name,
            facts,
            truth,
            dir,
        }
    }

    /// The fake host's `/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A host path inside the fixture.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root().join(host_path.trim_start_matches('/'))
    }

    pub fn host(&self) -> Host {
        Host::new(self.root())
    }

    /// Keep the tree on disk after this value is gone (for looking at it by hand).
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// Where fixtures are built: `$CGLEAK_FIXTURE_DIR` if set, else /dev/shm when it is a
/// writable tmpfs that allows exec (the fake binaries run from it) and has room (a
/// container's default 64 MiB /dev/shm does not), else the system temporary directory.
/// tmpfs keeps st_nlink = 2 + subdirectories as kernfs and ext4 do, and makes the
/// 65535-memcg trees affordable (a busy ext4 took ~50x longer).
pub fn fixture_base_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CGLEAK_FIXTURE_DIR") {
        return PathBuf::from(d);
    }
    const MIN_FREE: u64 = 512 * 1024 * 1024;
    let shm = Path::new("/dev/shm");
    let usable = rustix::fs::statvfs(shm).is_ok_and(|s| {
        !s.f_flag.intersects(
            rustix::fs::StatVfsMountFlags::NOEXEC | rustix::fs::StatVfsMountFlags::RDONLY,
        ) && s.f_bavail.saturating_mul(s.f_frsize) >= MIN_FREE
    }) && rustix::fs::access(
        shm,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .is_ok();
    if usable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A function that builds one fixture.
pub type FixtureFn = fn() -> Fixture;

/// Every fixture, by name.
pub fn all() -> Vec<(&'static str, FixtureFn)> {
    vec![
        ("centos7-957-kmem", centos7_957_kmem as FixtureFn),
        ("rhel7-1160-nokmem", rhel7_1160_nokmem),
        ("linux-4.4-v1", linux_4_4_v1),
        ("debian-4.19-v1-dying", debian_4_19_v1_dying),
        ("debian-5.10-hybrid", debian_5_10_hybrid),
        ("debian-6.1-v2", debian_6_1_v2),
        ("debian-6.12-v2-dying-subsys", debian_6_12_v2_dying_subsys),
        ("6.12-v2-near-limit", v6_12_v2_near_limit),
        ("6.12-v2-exhausted", v6_12_v2_exhausted),
        ("el7-514-kmem-exhausted", el7_514_kmem_exhausted),
        ("el7-693-kmem-leaking", el7_693_kmem_leaking),
        ("el7-957-kmem-exhausted", el7_957_kmem_exhausted),
        ("el7-957-kmem-exhausted-1160-next", el7_957_kmem_exhausted_1160_next),
        ("el7-1062-kmem-at-risk", el7_1062_kmem_at_risk),
        ("el7-1160-kmem-exhausted", el7_1160_kmem_exhausted),
        ("el7-1160-nokmem-exhausted", el7_1160_nokmem_exhausted),
        ("ubuntu-4.4.0-21-kmem-exhausted", ubuntu_4_4_0_21_kmem_exhausted),
        ("linux-4.4.131-enospc", linux_4_4_131_enospc),
        ("debian-4.19-nokmem", debian_4_19_nokmem),
        ("rhel8-4.18-bls-dying", rhel8_4_18_bls_dying),
    ]
}

/// One fixture by name.
pub fn by_name(name: &str) -> Option<Fixture> {
    all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f())
}

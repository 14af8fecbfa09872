//! Every memory cgroup of a hierarchy, online and dying, as the running kernel holds
//! them, read by a BPF program (Linux 6.1+ with BTF).
//!
//! A deleted memcg that page cache still pins has no directory any more: `/sys/fs/cgroup`
//! cannot name it. The kernel keeps it on its parent's css children list until the last
//! charge goes (kernel/cgroup/cgroup.c css_release_work_fn), so a walk of that list from
//! inside the kernel finds it with its name, its parents and its counters.
//!
//! - `bpf/memcg_walk.bpf.c`: the program (CO-RE), built by `cargo xtask bpf` with Debian's
//!   clang and committed as `bpf/memcg_walk.bpf.o`, embedded here: nothing is compiled at
//!   build or run time, and nothing of libbpf, libelf or clang is needed on a node.
//! - [`loader`]: aya-obj relocates it against `/sys/kernel/btf/vmlinux` and it is loaded; it runs as
//!   a cgroup iterator on the hierarchy's root directory; records come back in a ring buffer.
//! - [`minbtf`]: the kernel BTF cut down to the types the relocations look at, so that aya
//!   parses a few hundred types instead of the whole kernel's.
//! - [`record`]: the binary records, parsed with every length checked.
//!
//! Under `--host-root` in a container: BPF always sees the running kernel, whatever the
//! mount namespace. The hierarchy is named by opening its root directory as the container
//! sees it (`<host root>/sys/fs/cgroup/memory`) and handing that descriptor to the iterator
//! (BPF_LINK_CREATE's `bpf_iter_link_info.cgroup.cgroup_fd`); the program climbs from that
//! cgroup to the hierarchy's root, so a cgroup-namespaced mount still yields the whole
//! hierarchy, and paths are relative to the hierarchy's real root.

pub mod error;
pub mod loader;
pub mod minbtf;
pub mod record;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::Unavailable;
pub use loader::{CgroupVersion, Walker};
pub use record::RecordError;

/// One memcg as the walk found it. Byte counts are pages times the page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcgRecord {
    /// Relative to the hierarchy's root: `/` for the root, `/kubepods/burstable/pod<uid>/<id>`.
    pub path: PathBuf,
    /// The cgroup's directory name (empty for the root).
    pub name: OsString,
    /// The kernfs node id of the memcg's cgroup: on 64-bit kernels the inode number of its
    /// directory while it has one (fs/kernfs: kernfs_ino), the id BPF tools call cgroup id.
    pub cgroup_id: u64,
    pub parent_cgroup_id: Option<u64>,
    /// 0 for the root.
    pub depth: u32,
    /// `CSS_ONLINE` is set: false for a dying memcg (removed, still in memory).
    pub online: bool,
    /// `css->flags` as the kernel had them.
    pub css_flags: u32,
    /// `memcg->id.id`, the memcg ID of the 65535 (none once released).
    pub memcg_id: Option<u32>,
    /// `memcg->id.ref`: an online memcg holds one; a dying one holds its ID only while
    /// swapped-out pages refer to it (mm/memcontrol.c mem_cgroup_id_put_many).
    pub id_refs: i32,
    /// The memcg still takes one of the 65535 IDs.
    pub holds_id: bool,
    /// `memcg->memory` page counter: everything charged to this memcg and its descendants.
    /// For a dying memcg it overstates: kernel memory charged through its obj_cgroups is
    /// uncharged from the parent once they are reparented at offline (5.9+,
    /// mm/memcontrol.c memcg_reparent_objcgs, obj_cgroup_uncharge_pages), so its own
    /// counter never comes down for it. What pins it is [`MemcgRecord::lru_bytes`].
    pub memory_bytes: u64,
    /// `memory_bytes` less the children's (0 when a dying child's counter exceeds it).
    pub local_memory_bytes: u64,
    /// v2: the `swap` counter; v1: `memsw` less `memory` (the memsw counter counts both).
    pub swap_bytes: Option<u64>,
    /// v1 only: the `kmem` counter (kernel memory), on kernels built with v1 support.
    pub kmem_bytes: Option<u64>,
    /// Pages on this memcg's own file LRU lists (inactive + active), every NUMA node: its
    /// page cache, except shmem (on the anon lists) and pages still in per-CPU batches.
    pub file_bytes: Option<u64>,
    /// Pages on its own anon LRU lists: anonymous memory and shmem/tmpfs.
    pub anon_bytes: Option<u64>,
    /// Pages on its own unevictable list (mlocked, ramfs, shmem locked with SHM_LOCK).
    pub unevictable_bytes: Option<u64>,
}

impl MemcgRecord {
    /// Every page on this memcg's own LRU lists: the user memory charged to it, each page
    /// holding a reference that keeps a dying memcg in memory until it is freed or
    /// reclaimed (mm/memcontrol.c commit_charge: css_get per folio).
    pub fn lru_bytes(&self) -> Option<u64> {
        Some(self.file_bytes?.saturating_add(self.anon_bytes?).saturating_add(self.unevictable_bytes?))
    }
}

/// What one walk found.
#[derive(Debug, Clone)]
pub struct MemcgWalk {
    pub version: CgroupVersion,
    /// Pre-order from the hierarchy's root: every memcg after its parent.
    pub memcgs: Vec<MemcgRecord>,
    /// The cgroup id of the directory the walk was given (the root's, unless the mount
    /// shows a cgroup namespace's part of the hierarchy).
    pub start_cgroup_id: u64,
    pub root_cgroup_id: u64,
    /// How long the kernel walked (the program runs with cgroup_mutex held: no cgroup can
    /// be created or removed meanwhile).
    pub kernel_time: Duration,
    /// Walks run: 2 when the first ring buffer was too small.
    pub attempts: u32,
    pub ring_bytes: u32,
    pub page_size: u64,
    /// Memory zones per node and NUMA nodes whose LRU sizes were summed.
    pub lru_zones: u32,
    pub numa_nodes: u32,
    /// The multi-gen LRU was on (`/sys/kernel/mm/lru_gen/enabled`): it counts its pages per
    /// generation and leaves the classic per-zone LRU sizes at 0 (include/linux/mm_inline.h,
    /// lru_gen_update_size; measured in the 6.12 guest), so no memcg has LRU figures.
    pub mglru: bool,
}

impl MemcgWalk {
    /// Memcgs removed but still in memory.
    pub fn dying(&self) -> impl Iterator<Item = &MemcgRecord> {
        self.memcgs.iter().filter(|m| !m.online)
    }

    /// The memcg at `path` (relative to the hierarchy's root), if the walk saw it.
    pub fn find(&self, path: &Path) -> Option<&MemcgRecord> {
        self.memcgs.iter().find(|m| m.path == path)
    }
}

/// Walk every memcg of the hierarchy mounted at `memory_root`, dying ones included.
/// Needs root (CAP_BPF and CAP_PERFMON) and a kernel with BTF and the cgroup iterator
/// (6.1+); otherwise the reason, never a panic.
pub fn walk_memcgs(memory_root: &Path) -> Result<MemcgWalk, Unavailable> {
    Walker::new(memory_root).walk()
}

impl Walker {
    pub fn walk(&self) -> Result<MemcgWalk, Unavailable> {
        let raw = self.run()?;
        let records = record::parse_stream(&raw.stream)?;
        if records.len() as u64 != raw.summary.emitted {
            return Err(Unavailable::Incomplete(format!(
                "the program wrote {} records, the ring buffer held {}",
                raw.summary.emitted,
                records.len()
            )));
        }
        if let Some(root) = records.first() {
            if root.cgroup_id != raw.summary.root_cgroup_id {
                return Err(RecordError::Tree { index: 0, detail: format!("root cgroup id {} but the summary says {}", root.cgroup_id, raw.summary.root_cgroup_id) }.into());
            }
        }
        let placed = record::place(records)?;
        let page_size = page_size();
        let mglru = self.mglru_enabled();
        let memcgs = placed.into_iter().map(|p| to_record(p, raw.version, page_size, !mglru)).collect();
        Ok(MemcgWalk {
            version: raw.version,
            memcgs,
            start_cgroup_id: raw.summary.start_cgroup_id,
            root_cgroup_id: raw.summary.root_cgroup_id,
            kernel_time: raw.kernel_time,
            attempts: raw.attempts,
            ring_bytes: raw.ring_bytes,
            page_size,
            lru_zones: raw.summary.lru_zones,
            numa_nodes: raw.summary.nodes,
            mglru,
        })
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// `lru_sizes`: the per-zone LRU sizes count the memcg's pages (no multi-gen LRU).
fn to_record(p: record::Placed, version: CgroupVersion, page_size: u64, lru_sizes: bool) -> MemcgRecord {
    use std::os::unix::ffi::OsStringExt;
    let r = p.raw;
    let bytes = |pages: u64| pages.saturating_mul(page_size);
    let lru = lru_sizes && r.have & record::HAVE_LRU != 0;
    MemcgRecord {
        path: p.path,
        name: OsString::from_vec(r.name),
        cgroup_id: r.cgroup_id,
        parent_cgroup_id: (r.parent_cgroup_id != 0).then_some(r.parent_cgroup_id),
        depth: r.depth,
        online: r.css_flags & record::CSS_ONLINE != 0,
        css_flags: r.css_flags,
        memcg_id: (r.memcg_id > 0).then_some(r.memcg_id as u32),
        id_refs: r.id_refs,
        holds_id: r.memcg_id > 0 && r.id_refs > 0,
        memory_bytes: bytes(r.memory_pages),
        local_memory_bytes: bytes(p.local_memory_pages),
        swap_bytes: Some(match version {
            CgroupVersion::V2 => bytes(r.swap_pages),
            // memsw = memory + swap (mm/memcontrol-v1.c: v1 charges memsw along with memory).
            CgroupVersion::V1 => bytes(r.swap_pages.saturating_sub(r.memory_pages)),
        }),
        // Only v1 charges memcg->kmem (memcg1_account_kmem / memcg_account_kmem on 6.1).
        kmem_bytes: (version == CgroupVersion::V1 && r.have & record::HAVE_KMEM != 0).then(|| bytes(r.kmem_pages)),
        file_bytes: lru.then(|| bytes(r.file_lru_pages)),
        anon_bytes: lru.then(|| bytes(r.anon_lru_pages)),
        unevictable_bytes: lru.then(|| bytes(r.unevictable_lru_pages)),
    }
}

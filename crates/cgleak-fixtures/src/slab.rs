//! `/sys/kernel/slab` as SLUB shows it (docs/kernel-facts.md section 2).
//!
//! - Root caches: mergeable ones are symlinks to a directory named by a unique id
//!   (`dentry -> :at-0000192`), unmergeable ones (with a constructor) are directories.
//! - 3.10: per-memcg caches at the top, `<cache>(<kmemcg_id>:<cgroup name>)`; a
//!   mergeable one is an alias symlink to `:<flags>-<size %07d>-<kmemcg_id %08d>`
//!   (slub.c create_unique_id), an unmergeable one a directory of that name.
//! - 4.4 .. 5.8: per-memcg caches are directories in `<root cache>/cgroup/`, named
//!   `<cache>(<css serial>:<cgroup name>)`; 4.14+ only with slub_memcg_sysfs=1.

use std::path::{Path, PathBuf};

use crate::write::{create_dir_all, create_file_with_content, create_symlink};

/// A root slab cache.
#[derive(Debug, Clone, Copy)]
pub struct RootCache {
    pub name: &'static str,
    pub size: u32,
    /// Flags letters of the unique id (`a` reclaim-accounted, `t` trackable): mergeable.
    /// None: unmergeable (a constructor), a directory under its own name.
    pub merge_flags: Option<&'static str>,
}

pub const ROOT_CACHES: [RootCache; 10] = [
    RootCache {
        name: "dentry",
        size: 192,
        merge_flags: Some("at"),
    },
    RootCache {
        name: "kmalloc-64",
        size: 64,
        merge_flags: Some("t"),
    },
    RootCache {
        name: "kmalloc-256",
        size: 256,
        merge_flags: Some("t"),
    },
    RootCache {
        name: "filp",
        size: 256,
        merge_flags: Some("at"),
    },
    RootCache {
        name: "cred_jar",
        size: 192,
        merge_flags: Some("t"),
    },
    RootCache {
        name: "inode_cache",
        size: 592,
        merge_flags: None,
    },
    RootCache {
        name: "radix_tree_node",
        size: 584,
        merge_flags: None,
    },
    RootCache {
        name: "sock_inode_cache",
        size: 640,
        merge_flags: None,
    },
    RootCache {
        name: "shmem_inode_cache",
        size: 680,
        merge_flags: None,
    },
    RootCache {
        name: "task_struct",
        size: 3904,
        merge_flags: None,
    },
];

pub fn root_cache(name: &str) -> RootCache {
    ROOT_CACHES
        .iter()
        .copied()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no root cache {name} in ROOT_CACHES"))
}

fn unique_id(flags: &str, size: u32) -> String {
    format!(":{flags}-{size:07}")
}

fn attrs(dir: &Path, size: u32, objects: u64) {
    create_file_with_content(&dir.join("object_size"), format!("{size}\n"));
    create_file_with_content(&dir.join("objects"), format!("{objects}\n"));
}

/// `/sys/kernel/slab` with the root caches. `with_cgroup_dirs`: each real root cache
/// directory has an (empty) `cgroup/` for per-memcg children (4.4 .. 4.13, or
/// slub_memcg_sysfs=1 up to 5.8).
pub fn write_root_caches(sys_kernel_slab: &Path, with_cgroup_dirs: bool) {
    create_dir_all(sys_kernel_slab);
    for c in ROOT_CACHES {
        let real = match c.merge_flags {
            Some(flags) => {
                let id = unique_id(flags, c.size);
                let d = sys_kernel_slab.join(&id);
                if !d.exists() {
                    create_dir_all(&d);
                    attrs(&d, c.size, 4096);
                }
                create_symlink(&id, &sys_kernel_slab.join(c.name));
                d
            }
            None => {
                let d = create_dir_all(&sys_kernel_slab.join(c.name));
                attrs(&d, c.size, 2048);
                d
            }
        };
        if with_cgroup_dirs {
            create_dir_all(&real.join("cgroup"));
        }
    }
}

/// A 3.10 per-memcg cache at the top of /sys/kernel/slab.
pub fn memcg_cache_3_10(
    sys_kernel_slab: &Path,
    cache: &str,
    kmemcg_id: u32,
    cgroup_name: &str,
) -> PathBuf {
    let c = root_cache(cache);
    let name = format!("{cache}({kmemcg_id}:{cgroup_name})");
    match c.merge_flags {
        Some(flags) => {
            let id = format!("{}-{kmemcg_id:08}", unique_id(flags, c.size));
            let d = sys_kernel_slab.join(&id);
            if !d.exists() {
                create_dir_all(&d);
                attrs(&d, c.size, 42);
            }
            let link = sys_kernel_slab.join(&name);
            create_symlink(&id, &link);
            link
        }
        None => {
            let d = create_dir_all(&sys_kernel_slab.join(&name));
            attrs(&d, c.size, 17);
            d
        }
    }
}

/// A 4.x per-memcg cache in `<root cache>/cgroup/` (the real directory, not the alias).
pub fn memcg_cache_4x(
    sys_kernel_slab: &Path,
    cache: &str,
    css_serial: u64,
    cgroup_name: &str,
) -> PathBuf {
    let c = root_cache(cache);
    let real = match c.merge_flags {
        Some(flags) => sys_kernel_slab.join(unique_id(flags, c.size)),
        None => sys_kernel_slab.join(c.name),
    };
    let d = create_dir_all(
        &real
            .join("cgroup")
            .join(format!("{cache}({css_serial}:{cgroup_name})")),
    );
    attrs(&d, c.size, 21);
    d
}

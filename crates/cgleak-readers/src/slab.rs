//! Per-memcg slab caches in `/sys/kernel/slab`: indirect evidence of memcgs the
//! kernel still holds (docs/kernel-facts.md section 2).
//!
//! - 3.10: top-level entries named `<cache>(<kmemcg_id>:<cgroup name>)`, mostly
//!   alias symlinks; mergeable caches also get a directory
//!   `:<flags>-<size>-<kmemcg_id %08d>` that carries no cgroup name.
//! - 4.4 .. 5.8: entries of `/sys/kernel/slab/<root cache>/cgroup/` named
//!   `<cache>(<css serial>:<cgroup name>)` (4.14+ only with slub_memcg_sysfs=1).
//! - 5.9+ and the SLAB allocator: no per-memcg caches in sysfs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::OFlags;

use serde::Serialize;

use crate::error::{is_gone_io, ReadError, Result};
use crate::host::HostPaths;

/// One per-memcg slab cache, from its sysfs name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemcgSlabCache {
    /// The root cache it was cloned from (`dentry`).
    pub cache: String,
    /// kmemcg_id on 3.10, css serial number on 4.x .. 5.8.
    pub id: u64,
    /// The memcg's cgroup name (last path component only).
    pub cgroup_name: String,
}

/// Where per-memcg cache names were found, which tells the kernel era apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlabNamingSeen {
    /// `cache(id:name)` entries at the top of /sys/kernel/slab (3.10).
    TopLevel,
    /// At least one `<cache>/cgroup/` directory exists (4.x .. 5.8), even if empty.
    CgroupSubdir,
    #[default]
    None,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SlabScan {
    /// /sys/kernel/slab exists and was listed.
    pub readable: bool,
    pub naming: SlabNamingSeen,
    /// Sorted by id, then cache, then cgroup name; no duplicates.
    pub caches: Vec<MemcgSlabCache>,
}

/// List the per-memcg slab caches. A missing /sys/kernel/slab (SLAB allocator,
/// sysfs not mounted) is `readable: false`; a permission error is an error.
pub fn scan_memcg_slab_caches(host: &HostPaths) -> Result<SlabScan> {
    let slab = host.sys().join("kernel/slab");
    let fd = match host.open("/sys/kernel/slab", OFlags::RDONLY | OFlags::DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if is_gone_io(&e) => return Ok(SlabScan::default()),
        Err(e) => return Err(ReadError::io(&slab, e)),
    };
    let rd = rustix::fs::Dir::read_from(&fd).map_err(|e| ReadError::io(&slab, e.into()))?;
    let mut top = Vec::new();
    let mut sub = Vec::new();
    let mut saw_cgroup_dir = false;
    for ent in rd {
        let ent = ent.map_err(|e| ReadError::io(&slab, e.into()))?;
        let raw = OsStr::from_bytes(ent.file_name().to_bytes());
        if raw == "." || raw == ".." {
            continue;
        }
        let name = raw.to_string_lossy();
        // 3.10 names are read straight from readdir: the entries are mostly symlinks, never followed.
        if let Some(c) = parse_memcg_cache_name(&name) {
            top.push(c);
            continue;
        }
        // d_type does not follow symlinks: aliases are skipped, one attempt per real cache.
        if ent.file_type() != rustix::fs::FileType::Directory {
            continue;
        }
        let cg = slab.join(raw).join("cgroup");
        match list_names(&fd, &Path::new(raw).join("cgroup")) {
            Ok(names) => {
                saw_cgroup_dir = true;
                sub.extend(names.iter().filter_map(|n| parse_memcg_cache_name(n)));
            }
            // No cgroup/ here (3.10, 5.9+, or slub_memcg_sysfs off), or the cache went away.
            Err(e) if is_gone_io(&e) || e.raw_os_error() == Some(ENOTDIR) => {}
            Err(e) => return Err(ReadError::io(&cg, e)),
        }
    }
    let naming = if saw_cgroup_dir {
        SlabNamingSeen::CgroupSubdir
    } else if !top.is_empty() {
        SlabNamingSeen::TopLevel
    } else {
        SlabNamingSeen::None
    };
    let mut caches = top;
    caches.append(&mut sub);
    caches.sort_by(|a, b| (a.id, &a.cache, &a.cgroup_name).cmp(&(b.id, &b.cache, &b.cgroup_name)));
    caches.dedup();
    Ok(SlabScan { readable: true, naming, caches })
}

const ENOTDIR: i32 = 20;

/// The names in `rel` below the slab directory, no symlink followed on the way.
fn list_names(slab: &OwnedFd, rel: &Path) -> io::Result<Vec<String>> {
    let fd = crate::beneath::open(slab.as_fd(), rel, OFlags::RDONLY | OFlags::DIRECTORY, rustix::fs::Mode::empty(), crate::beneath::Links::Refused)?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            out.push(n);
        }
    }
    Ok(out)
}

/// Parse `dentry(1234:pod123)`. The id part is found from the last `(` whose
/// inside is `<digits>:<rest>` up to a `)` that ends the name, since both the
/// cache and the cgroup name may contain `(` and `:`.
pub fn parse_memcg_cache_name(name: &str) -> Option<MemcgSlabCache> {
    let body = name.strip_suffix(')')?;
    for (open, _) in body.match_indices('(').rev() {
        let inside = &body[open + 1..];
        let Some((digits, cgroup_name)) = inside.split_once(':') else { continue };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || cgroup_name.is_empty() {
            continue;
        }
        let Ok(id) = digits.parse::<u64>() else { continue };
        let cache = &body[..open];
        if cache.is_empty() {
            return None;
        }
        return Some(MemcgSlabCache { cache: cache.to_string(), id, cgroup_name: cgroup_name.to_string() });
    }
    None
}

/// What the per-memcg caches say about dead memcgs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlabDeadSummary {
    pub per_memcg_caches: u64,
    /// Distinct ids: a lower bound on kmem-active memcgs the kernel still holds.
    pub distinct_ids: u64,
    pub dead_caches: u64,
    /// Distinct ids among dead caches.
    pub dead_ids: u64,
    /// Cgroup names seen with more than one id.
    pub names_with_several_ids: u64,
}

/// Count dead per-memcg caches: a cache is dead if no live cgroup has its name,
/// or if its name also appears with a higher id.
///
/// `live_names` is asked about last path components; two live cgroups with the
/// same leaf name in different parents would look like one name with several ids.
pub fn dead_cache_summary(caches: &[MemcgSlabCache], live_names: &dyn Fn(&str) -> bool) -> SlabDeadSummary {
    let mut ids_by_name: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for c in caches {
        ids_by_name.entry(&c.cgroup_name).or_default().insert(c.id);
    }
    // The newest id is the one a live cgroup can have: one cgroup holds one id, so
    // all but one are dead whichever it is; on 4.x css serials only grow, so the
    // highest is the newest (on 3.10 kmemcg_ids are reused, so which one is a guess, the count is not).
    let highest: BTreeMap<&str, u64> = ids_by_name.iter().map(|(n, ids)| (*n, *ids.iter().next_back().unwrap_or(&0))).collect();
    let mut live_by_name: BTreeMap<&str, bool> = BTreeMap::new();
    let mut dead_caches = 0;
    let mut dead_ids = BTreeSet::new();
    for c in caches {
        let live = *live_by_name.entry(&c.cgroup_name).or_insert_with(|| live_names(&c.cgroup_name));
        if !live || highest.get(c.cgroup_name.as_str()) != Some(&c.id) {
            dead_caches += 1;
            dead_ids.insert(c.id);
        }
    }
    SlabDeadSummary {
        per_memcg_caches: caches.len() as u64,
        distinct_ids: caches.iter().map(|c| c.id).collect::<BTreeSet<_>>().len() as u64,
        dead_caches,
        dead_ids: dead_ids.len() as u64,
        names_with_several_ids: ids_by_name.values().filter(|ids| ids.len() > 1).count() as u64,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn c(cache: &str, id: u64, name: &str) -> MemcgSlabCache {
        MemcgSlabCache { cache: cache.into(), id, cgroup_name: name.into() }
    }

    fn slab_dir(t: &tempfile::TempDir) -> PathBuf {
        let d = t.path().join("sys/kernel/slab");
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn parses_names_from_the_last_matching_paren() {
        assert_eq!(parse_memcg_cache_name("dentry(1234:pod123)"), Some(c("dentry", 1234, "pod123")));
        assert_eq!(parse_memcg_cache_name("kmalloc-64(5:abc)"), Some(c("kmalloc-64", 5, "abc")));
        // '(' and ':' inside the cgroup name
        assert_eq!(parse_memcg_cache_name("dentry(7:a:b(c)"), Some(c("dentry", 7, "a:b(c")));
        assert_eq!(parse_memcg_cache_name("dentry(7:docker-1:2.scope)"), Some(c("dentry", 7, "docker-1:2.scope")));
        // '(' inside the cache name
        assert_eq!(parse_memcg_cache_name("ext4(x)cache(9:n)"), Some(c("ext4(x)cache", 9, "n")));
        for bad in ["dentry", "dentry()", "dentry(12)", "dentry(:x)", "dentry(x1:y)", "(1:x)", "dentry(1:x", "dentry(1:)", ":a-0000192", ":t-0000048-00000012", "", ")", "(", "dentry(99999999999999999999999:x)"] {
            assert_eq!(parse_memcg_cache_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_slab_dir_is_not_readable() {
        let t = tempfile::tempdir().unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert!(!s.readable);
        assert_eq!(s.naming, SlabNamingSeen::None);
        assert!(s.caches.is_empty());
    }

    #[test]
    fn reads_3_10_top_level_names_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = slab_dir(&t);
        fs::create_dir(d.join("dentry")).unwrap();
        fs::create_dir(d.join(":t-0000192-00000004")).unwrap();
        // alias symlinks; one is dangling, which a stat would trip over
        symlink(":t-0000192-00000004", d.join("dentry(4:pod-a)")).unwrap();
        symlink("/nonexistent", d.join("kmalloc-64(9:pod-b)")).unwrap();
        fs::create_dir(d.join("inode_cache(4:pod-a)")).unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert!(s.readable);
        assert_eq!(s.naming, SlabNamingSeen::TopLevel);
        assert_eq!(s.caches, vec![c("dentry", 4, "pod-a"), c("inode_cache", 4, "pod-a"), c("kmalloc-64", 9, "pod-b")]);
    }

    #[test]
    fn reads_4_x_cgroup_subdirs_and_skips_aliases() {
        let t = tempfile::tempdir().unwrap();
        let d = slab_dir(&t);
        for (cache, entries) in [("dentry", &["dentry(120:pod1)", "dentry(133:pod2)"][..]), (":a-0000192", &["cred_jar(120:pod1)"][..]), ("radix_tree_node", &[][..])] {
            fs::create_dir_all(d.join(cache).join("cgroup")).unwrap();
            for e in entries {
                fs::create_dir(d.join(cache).join("cgroup").join(e)).unwrap();
            }
        }
        fs::create_dir(d.join("no_cgroup_dir")).unwrap();
        fs::write(d.join("file_not_dir"), "").unwrap();
        // an alias pointing at a real cache: listing through it would double-count
        symlink(":a-0000192", d.join("cred_jar")).unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert_eq!(s.naming, SlabNamingSeen::CgroupSubdir);
        assert_eq!(s.caches, vec![c("cred_jar", 120, "pod1"), c("dentry", 120, "pod1"), c("dentry", 133, "pod2")]);
    }

    #[test]
    fn empty_cgroup_subdirs_still_tell_the_naming() {
        let t = tempfile::tempdir().unwrap();
        let d = slab_dir(&t);
        fs::create_dir_all(d.join("dentry/cgroup")).unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert_eq!((s.readable, s.naming, s.caches.len()), (true, SlabNamingSeen::CgroupSubdir, 0));
        fs::remove_dir(d.join("dentry/cgroup")).unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert_eq!((s.readable, s.naming), (true, SlabNamingSeen::None));
    }

    #[test]
    fn non_utf8_names_do_not_panic() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let d = slab_dir(&t);
        fs::create_dir(d.join(OsStr::from_bytes(b"dentry(3:p\xffod)"))).unwrap();
        fs::create_dir_all(d.join(OsStr::from_bytes(b"\xfe\xfe/cgroup"))).unwrap();
        let s = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap();
        assert_eq!(s.caches, vec![c("dentry", 3, "p\u{fffd}od")]);
    }

    #[test]
    fn unreadable_slab_dir_is_an_error_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = slab_dir(&t);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o000)).unwrap();
        let r = scan_memcg_slab_caches(&HostPaths::new(t.path()));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        // root reads a 000 directory anyway (CAP_DAC_OVERRIDE): only an unprivileged run sees EACCES
        if !rustix::process::geteuid().is_root() {
            let e = r.unwrap_err();
            assert!(e.is_permission() && e.to_string().contains("kernel/slab"), "{e}");
        }
        // Any error other than "missing" is reported, not taken for "no slab".
        fs::remove_dir(&d).unwrap();
        fs::write(&d, "").unwrap();
        let e = scan_memcg_slab_caches(&HostPaths::new(t.path())).unwrap_err();
        assert!(!e.is_gone() && e.to_string().contains("sys/kernel/slab"), "{e}");
    }

    #[test]
    fn dead_caches_by_missing_name_and_superseded_id() {
        let caches = vec![
            c("dentry", 10, "pod-live"),
            c("inode_cache", 10, "pod-live"),
            c("dentry", 4, "pod-live"), // older id of a live name: dead
            c("dentry", 7, "pod-gone"),
            c("inode_cache", 7, "pod-gone"),
            c("dentry", 12, "pod-gone"), // gone name: every id dead, the highest too
            c("dentry", 20, "pod-other"),
        ];
        let live = |n: &str| n == "pod-live" || n == "pod-other";
        let s = dead_cache_summary(&caches, &live);
        assert_eq!(
            s,
            SlabDeadSummary { per_memcg_caches: 7, distinct_ids: 5, dead_caches: 4, dead_ids: 3, names_with_several_ids: 2 }
        );
        assert_eq!(dead_cache_summary(&[], &live), SlabDeadSummary::default());
    }
}

//! Cgroup operations the scenarios use for ground truth, independent of cgleak's readers.
//! Only the cleanup (rmdir, removing a scratch tree) and errno names are cgleak's own.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cgleak_actions::cgroup_tree::{remove_cgroup, remove_tree_deepest_first, WhenBusy};

/// errno name of an I/O error ("ENOSPC"), from cgleak's one errno table.
pub fn errno_name(e: &io::Error) -> String {
    cgleak_readers::errno::name_of(e)
}

/// Write `value` to a cgroup file in one write(2), as `echo` would.
pub fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

pub fn write_ctx(path: &Path, value: &str) -> Result<()> {
    write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

pub fn read_u64(path: &Path) -> Result<u64> {
    let s = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    s.trim().parse().with_context(|| format!("{}: not a number: {s:?}", path.display()))
}

/// `key value` lines of a flat keyed file (cgroup.stat).
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// Memory charged to a cgroup and its descendants, dying ones included.
pub fn usage(dir: &Path, version: u8) -> Result<u64> {
    read_u64(&dir.join(if version == 1 { "memory.usage_in_bytes" } else { "memory.current" }))
}

/// Let children of a v2 cgroup have memcgs.
pub fn enable_memory(dir: &Path, version: u8) -> Result<()> {
    if version == 2 {
        let ctl = dir.join("cgroup.subtree_control");
        let now = fs::read_to_string(&ctl).with_context(|| format!("read {}", ctl.display()))?;
        if !now.split_whitespace().any(|c| c == "memory") {
            write_ctx(&ctl, "+memory")?;
        }
    }
    Ok(())
}

/// rmdir, tried again while EBUSY (a task that just exited may still be accounted): cgleak's
/// own removal, which also checks that the directory is on cgroupfs.
pub fn rmdir(path: &Path) -> io::Result<()> {
    remove_cgroup(path)
}

/// Remove a cgroup tree, deepest first, with cgleak's own removal. Returns "path: error" of
/// each directory that could not be removed.
pub fn remove_tree(root: &Path) -> Vec<String> {
    remove_tree_deepest_first(root, WhenBusy::Wait).leftover_lines()
}

/// Subdirectories of `dir`, recursively, plus `dir` itself. Every directory is listed
/// except those whose link count says they have no subdirectory (kernfs: nlink = 2 +
/// subdirectories): opening 65,000 leaves would take seconds under TCG.
pub fn count_dirs(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 1;
    if let Ok(rd) = fs::read_dir(dir) {
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let leaf = ent.metadata().map(|m| m.nlink() == 2).unwrap_or(false);
                n += if leaf { 1 } else { count_dirs(&ent.path()) };
            }
        }
    }
    n
}

/// Every memcg of the hierarchy, root included: v1 every directory; v2 the kernel's own
/// nr_subsys_memory (6.12+) or the root plus each child of a cgroup with +memory.
pub fn count_memcgs(root: &Path, version: u8) -> u64 {
    if version == 1 {
        return count_dirs(root);
    }
    if let Some(n) = read_keyed(&root.join("cgroup.stat"), "nr_subsys_memory") {
        return n;
    }
    1 + v2_memcg_children(root)
}

fn v2_memcg_children(dir: &Path) -> u64 {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control"))
        .map(|s| s.split_whitespace().any(|c| c == "memory"))
        .unwrap_or(false);
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if enabled {
                    n += 1;
                }
                let leaf = ent.metadata().map(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 2).unwrap_or(false);
                if !leaf {
                    n += v2_memcg_children(&ent.path());
                }
            }
        }
    }
    n
}

/// Dying cgroups of the memory hierarchy, from the kernel's own counters: v1 /proc/cgroups
/// num_cgroups (dying included on 4.x+, facts §2) minus the `live` memcgs; v2 the root's
/// nr_dying_descendants (4.14+).
pub fn dying(root: &Path, version: u8, live: u64) -> Option<u64> {
    if version == 2 {
        return read_keyed(&root.join("cgroup.stat"), "nr_dying_descendants");
    }
    let text = fs::read_to_string("/proc/cgroups").ok()?;
    let num: u64 = text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"memory")).then(|| f.get(2)?.parse().ok()).flatten()
    })?;
    num.checked_sub(live)
}

/// A scratch parent of our own: `cgleak-test-<pid>-<what>` at the root of the memory
/// hierarchy. Dropping it removes the whole tree unless [`Scratch::keep`] was called.
pub struct Scratch {
    pub path: PathBuf,
    pub version: u8,
    keep: bool,
}

impl Scratch {
    pub fn create(mem_root: &Path, version: u8, what: &str) -> Result<Scratch> {
        let path = mem_root.join(format!("cgleak-test-{}-{what}", std::process::id()));
        if path.exists() {
            bail!("{} already exists", path.display());
        }
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let s = Scratch { path, version, keep: false };
        enable_memory(&s.path, version)?;
        Ok(s)
    }

    /// A child cgroup (with +memory enabled for its own children on v2 when `parent_of_memcgs`).
    pub fn child(&self, rel: &str, parent_of_memcgs: bool) -> Result<PathBuf> {
        let p = self.path.join(rel);
        fs::create_dir(&p).with_context(|| format!("mkdir {}", p.display()))?;
        if parent_of_memcgs {
            enable_memory(&p, self.version)?;
        }
        Ok(p)
    }

    /// Leave the tree in place (a guest about to power off need not spend minutes on rmdir).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn remove(&mut self) -> Vec<String> {
        self.keep = true;
        remove_tree(&self.path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let left = remove_tree(&self.path);
            if !left.is_empty() {
                eprintln!("cgleak-guest: could not remove {left:?}");
            }
        }
    }
}

/// Poll `f` every `step` until it says done or `timeout` passes: (done, last value, time taken).
pub fn poll<T>(timeout: Duration, step: Duration, mut f: impl FnMut() -> (bool, T)) -> (bool, T, Duration) {
    let start = Instant::now();
    loop {
        let (ok, v) = f();
        if ok || start.elapsed() >= timeout {
            return (ok, v, start.elapsed());
        }
        thread::sleep(step);
    }
}

/// The kernel log (SYSLOG_ACTION_READ_ALL), for warnings such as the move_charge deprecation.
pub fn kernel_log() -> String {
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: klogctl writes at most buf.len() bytes into buf.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n <= 0 {
        return String::new();
    }
    buf.truncate(n as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_directories_root_included() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a", "a/b", "a/b/c", "d"] {
            fs::create_dir(d.path().join(p)).unwrap();
        }
        fs::write(d.path().join("a/memory.stat"), "").unwrap();
        assert_eq!(count_dirs(d.path()), 5);
        assert_eq!(count_memcgs(d.path(), 1), 5);
    }

    #[test]
    fn v2_counts_children_of_memory_enabled_cgroups() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cgroup.stat"), "nr_descendants 3\n").unwrap();
        fs::write(d.path().join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        for p in ["a", "a/x", "b"] {
            fs::create_dir(d.path().join(p)).unwrap();
        }
        // a has no +memory: a/x is not a memcg.
        fs::write(d.path().join("a/cgroup.subtree_control"), "cpu\n").unwrap();
        assert_eq!(count_memcgs(d.path(), 2), 3);
        fs::write(d.path().join("cgroup.stat"), "nr_descendants 3\nnr_subsys_memory 7\n").unwrap();
        assert_eq!(count_memcgs(d.path(), 2), 7, "the kernel's own count wins");
        assert_eq!(read_keyed(&d.path().join("cgroup.stat"), "nr_descendants"), Some(3));
        assert_eq!(read_keyed(&d.path().join("cgroup.stat"), "nr_dying_descendants"), None);
    }
}

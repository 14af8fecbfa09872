//! Cgroup filesystem reading: the fast tree walker and the small files.
//!
//! The walker counts a hierarchy without listing leaves: a kernfs directory has
//! st_nlink = 2 + number of subdirectories (KERNEL-FACTS.md section 2, measured
//! on 6.18), so a child whose nlink is 2 is a leaf and is never opened. Only
//! directories with children are read, and a readdir stops as soon as it has seen
//! as many subdirectories as the link count announced.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, RawDir, CWD};

use crate::error::{is_gone_io, ReadError, Result};

/// A subdirectory as the walker saw it from its parent.
#[derive(Debug, Clone)]
pub struct ChildDir {
    pub name: CString,
    /// Its own number of subdirectories (nlink - 2), None where the filesystem
    /// does not keep that count (nlink < 2, e.g. btrfs, or ext4 past 65000).
    pub subdirs: Option<u32>,
}

impl ChildDir {
    pub fn name_str(&self) -> &str {
        std::str::from_utf8(self.name.as_bytes()).unwrap_or("")
    }
    pub fn is_leaf(&self) -> bool {
        self.subdirs == Some(0)
    }
}

/// A directory being walked: its place in the tree and a handle to read files in it.
pub struct WalkDir<'a> {
    fd: &'a OwnedFd,
    /// Path components from the walk's root; empty at the root.
    pub components: &'a [CString],
}

impl WalkDir<'_> {
    pub fn depth(&self) -> usize {
        self.components.len()
    }

    /// The path relative to the walk's root (`kubepods/burstable/pod1`).
    pub fn rel_path(&self) -> PathBuf {
        let mut p = PathBuf::new();
        for c in self.components {
            p.push(OsStr::from_bytes(c.as_bytes()));
        }
        p
    }

    pub fn name(&self) -> Option<&str> {
        self.components.last().and_then(|c| std::str::from_utf8(c.as_bytes()).ok())
    }

    /// Read a file of this directory, relative to its handle (no path lookup from /).
    pub fn read_file(&self, name: &str) -> io::Result<String> {
        read_at(self.fd, name)
    }
}

/// Told of every directory that has subdirectories, with the list of them.
/// Leaves are only seen in their parent's list.
pub trait CgroupVisitor {
    fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]);
}

impl CgroupVisitor for () {
    fn visit(&mut self, _: &WalkDir<'_>, _: &[ChildDir]) {}
}

/// What a walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Directories in the tree, the root included.
    pub dirs: u64,
    /// Directories that were opened and listed.
    pub listed: u64,
    /// Directories that vanished while walked (ENOENT / ENODEV).
    pub gone: u64,
}

/// Walk a cgroup tree from `root`. A missing or unreadable root is an error;
/// anything below that vanishes meanwhile is counted in `gone`.
pub fn walk(root: &Path, visitor: &mut dyn CgroupVisitor) -> Result<WalkStats> {
    let fd = openat(CWD, root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ReadError::io(root, e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| ReadError::io(root, e.into()))?;
    let mut w = Walker {
        stats: WalkStats { dirs: 1, ..Default::default() },
        buf: vec![MaybeUninit::uninit(); 16 * 1024],
        components: Vec::new(),
        error_at: None,
    };
    let subdirs = nlink_subdirs(st.st_nlink as u64);
    w.dir(fd, subdirs, visitor).map_err(|e| {
        // Name the directory that failed, not the root of the walk.
        let mut p = root.to_path_buf();
        for c in w.error_at.take().unwrap_or_default() {
            p.push(OsStr::from_bytes(c.as_bytes()));
        }
        ReadError::io(p, e)
    })?;
    Ok(w.stats)
}

fn nlink_subdirs(nlink: u64) -> Option<u32> {
    if nlink >= 2 { Some((nlink - 2).min(u32::MAX as u64) as u32) } else { None }
}

struct Walker {
    stats: WalkStats,
    buf: Vec<MaybeUninit<u8>>,
    components: Vec<CString>,
    /// Where the first real (not "gone") error happened, relative to the root.
    error_at: Option<Vec<CString>>,
}

impl Walker {
    fn dir(&mut self, fd: OwnedFd, subdirs: Option<u32>, visitor: &mut dyn CgroupVisitor) -> io::Result<()> {
        let children = match self.list(&fd, subdirs) {
            Ok(c) => c,
            Err(e) => {
                if !is_gone_io(&e) && self.error_at.is_none() {
                    self.error_at = Some(self.components.clone());
                }
                return Err(e);
            }
        };
        self.stats.listed += 1;
        self.stats.dirs += children.len() as u64;
        visitor.visit(&WalkDir { fd: &fd, components: &self.components }, &children);
        for c in children {
            if c.is_leaf() {
                continue;
            }
            match openat(&fd, c.name.as_c_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
                Ok(child_fd) => {
                    self.components.push(c.name);
                    let r = self.dir(child_fd, c.subdirs, visitor);
                    self.components.pop();
                    match r {
                        Ok(()) => {}
                        Err(e) if is_gone_io(&e) => self.stats.gone += 1,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if is_gone_io(&e.into()) => self.stats.gone += 1,
                Err(e) => {
                    if self.error_at.is_none() {
                        let mut at = self.components.clone();
                        at.push(c.name);
                        self.error_at = Some(at);
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn list(&mut self, fd: &OwnedFd, expected: Option<u32>) -> io::Result<Vec<ChildDir>> {
        let mut out = Vec::with_capacity(expected.unwrap_or(4) as usize);
        let mut raw = RawDir::new(fd.as_fd(), &mut self.buf);
        while let Some(ent) = raw.next() {
            let ent = ent?;
            let name = ent.file_name();
            if is_dot(name) {
                continue;
            }
            let is_dir = match ent.file_type() {
                FileType::Directory => true,
                FileType::Unknown => statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
                    .unwrap_or(false),
                _ => false,
            };
            if !is_dir {
                continue;
            }
            let sub = match statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => nlink_subdirs(s.st_nlink),
                Err(e) if is_gone_io(&e.into()) => {
                    self.stats.gone += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            out.push(ChildDir { name: name.to_owned(), subdirs: sub });
            if expected == Some(out.len() as u32) {
                break; // every subdirectory the link count announced has been seen
            }
        }
        Ok(out)
    }
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

fn read_at(fd: &OwnedFd, name: &str) -> io::Result<String> {
    use std::io::Read;
    let f = openat(fd, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut file = std::fs::File::from(f);
    let mut s = String::new();
    // Kernel files are read until read() returns 0.
    file.read_to_string(&mut s)?;
    Ok(s)
}

/// Read a whole cgroup file. Errors name the file.
pub fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ReadError::io(path, e))
}

/// A file holding one integer (`memory.kmem.usage_in_bytes`). `max` reads as u64::MAX.
pub fn read_u64(path: &Path) -> Result<u64> {
    let s = read_file(path)?;
    parse_u64(path, &s)
}

pub fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse::<u64>().map_err(|_| ReadError::unexpected(path, format!("expected an integer, got {:?}", truncate(t))))
}

/// A flat `key value` file (`cgroup.stat`, `memory.stat`). Unknown keys are kept;
/// lines that are not `key integer` are an error naming the file.
pub fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>> {
    let s = read_file(path)?;
    parse_flat_keyed(path, &s)
}

pub fn parse_flat_keyed(path: &Path, s: &str) -> Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for (no, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(ReadError::unexpected(path, format!("line {}: expected 'key value', got {:?}", no + 1, truncate(line))));
        };
        let v = v
            .parse::<u64>()
            .map_err(|_| ReadError::unexpected(path, format!("line {}: {k}: not an integer: {:?}", no + 1, truncate(v))))?;
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

/// Whether any process is in this cgroup (its own `cgroup.procs`, not the subtree).
pub fn has_procs(dir: &Path) -> Result<bool> {
    let p = dir.join("cgroup.procs");
    Ok(read_file(&p)?.split_whitespace().next().is_some())
}

/// Whether any process is anywhere in the subtree at `dir`. A subtree that vanished
/// reads as empty.
pub fn subtree_has_procs(dir: &Path) -> Result<bool> {
    match has_procs(dir) {
        Ok(true) => return Ok(true),
        Ok(false) => {}
        // gone: the directory listing below tells whether the whole cgroup went
        Err(e) if e.is_gone() => {}
        Err(e) => return Err(e),
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_gone_io(&e) => return Ok(false),
        Err(e) => return Err(ReadError::io(dir, e)),
    };
    for ent in rd.flatten() {
        if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) && subtree_has_procs(&ent.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mk(root: &Path, rel: &str) {
        let d = root.join(rel);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
    }

    struct Names(Vec<String>);
    impl CgroupVisitor for Names {
        fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
            for c in children {
                self.0.push(format!("{}/{}", dir.rel_path().display(), c.name_str()));
            }
        }
    }

    #[test]
    fn walk_counts_every_directory() {
        let t = tempfile::tempdir().unwrap();
        for p in ["a/b/c", "a/d", "e", "f/g/h/i"] {
            mk(t.path(), p);
        }
        let mut v = Names(Vec::new());
        let s = walk(t.path(), &mut v).unwrap();
        // root, a, a/b, a/b/c, a/d, e, f, f/g, f/g/h, f/g/h/i
        assert_eq!(s.dirs, 10);
        assert_eq!(v.0.len(), 9);
        assert!(v.0.contains(&"f/g/h/i".to_string()));
        // leaves (c, d, e, i) are never listed: 10 dirs - 4 leaves = 6 listed
        assert_eq!(s.listed, 6);
    }

    /// A cgroup removed between its parent's listing and its own open is "gone".
    #[test]
    fn walk_survives_removal_mid_walk() {
        let t = tempfile::tempdir().unwrap();
        for p in ["x/y/z", "x/w/v", "u"] {
            mk(t.path(), p);
        }
        struct Remover(PathBuf, bool);
        impl CgroupVisitor for Remover {
            fn visit(&mut self, dir: &WalkDir<'_>, _: &[ChildDir]) {
                if dir.depth() == 1 && !self.1 {
                    self.1 = true;
                    fs::remove_dir_all(self.0.join("x/y")).unwrap();
                    fs::remove_dir_all(self.0.join("x/w")).unwrap();
                }
            }
        }
        let mut r = Remover(t.path().to_path_buf(), false);
        let s = walk(t.path(), &mut r).unwrap();
        assert!(r.1);
        assert_eq!(s.gone, 2);
    }

    #[test]
    fn missing_root_is_an_error_naming_it() {
        let e = walk(Path::new("/nonexistent/cgleak-root"), &mut ()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cgleak-root"));
        assert!(e.is_gone());
    }

    #[test]
    fn flat_keyed_and_u64_parse_or_name_the_file() {
        let p = Path::new("/sys/fs/cgroup/cgroup.stat");
        let m = parse_flat_keyed(p, "nr_descendants 4\nnr_dying_descendants 7\n").unwrap();
        assert_eq!(m["nr_dying_descendants"], 7);
        let e = parse_flat_keyed(p, "nr_descendants four\n").unwrap_err();
        assert!(e.to_string().contains("cgroup.stat"));
        assert_eq!(parse_u64(p, "max\n").unwrap(), u64::MAX);
        assert!(parse_u64(p, "\u{fffd}garbage").is_err());
    }

    #[test]
    fn subtree_procs_found_deep() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "pod/c1");
        mk(t.path(), "pod/c2");
        assert!(!subtree_has_procs(&t.path().join("pod")).unwrap());
        fs::write(t.path().join("pod/c2/cgroup.procs"), "123\n").unwrap();
        assert!(subtree_has_procs(&t.path().join("pod")).unwrap());
        assert!(!subtree_has_procs(&t.path().join("nope")).unwrap());
    }
}

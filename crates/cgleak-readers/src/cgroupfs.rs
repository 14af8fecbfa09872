//! Cgroup filesystem reading: the fast tree walker and the small files.
//!
//! The walker counts a hierarchy without listing leaves: a kernfs directory has
//! st_nlink = 2 + number of subdirectories (KERNEL-FACTS.md section 2, measured
//! on 6.18), so a child whose nlink is 2 is a leaf and is never opened. Only
//! directories with children are read, and a readdir stops as soon as it has seen
//! as many subdirectories as the link count announced.
//!
//! A walk that is repeated (the agent's) can keep a [`WalkCache`] of the
//! subdirectory names each listed directory had. A directory whose link count still
//! announces that many subdirectories, and whose every remembered name still stats
//! as a directory, has exactly those subdirectories (k distinct directories of k), so
//! it is not listed again: listing a memcg directory reads its 30-odd control files
//! too, which is half of a census (kernfs_fop_readdir, measured on 6.18). Any
//! mismatch lists it as usual.

use std::collections::{BTreeMap, HashMap};
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
    handle: &'a DirHandle<'a>,
    /// Path components from the walk's root; empty at the root.
    pub components: &'a [CString],
}

/// A directory, opened, or reached through its parent's descriptor (a directory whose
/// remembered subdirectories were found again needs no descriptor of its own).
enum DirHandle<'p> {
    Open(OwnedFd),
    InParent { parent: &'p OwnedFd, name: &'p CStr },
}

impl DirHandle<'_> {
    /// `file` in this directory, as a path relative to a descriptor.
    fn at(&self, file: &CStr) -> (&OwnedFd, CString) {
        match self {
            DirHandle::Open(fd) => (fd, file.to_owned()),
            DirHandle::InParent { parent, name } => {
                let mut p = name.to_bytes().to_vec();
                p.push(b'/');
                p.extend_from_slice(file.to_bytes());
                (parent, CString::new(p).expect("names from the kernel hold no NUL"))
            }
        }
    }

    /// A descriptor of the directory itself, opening it when needed.
    fn open(self) -> io::Result<OwnedFd> {
        match self {
            DirHandle::Open(fd) => Ok(fd),
            DirHandle::InParent { parent, name } => {
                Ok(openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
            }
        }
    }
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

    /// Read a file of this directory, relative to a directory handle (no path lookup from /).
    pub fn read_file(&self, name: &str) -> io::Result<String> {
        let file = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (fd, rel) = self.handle.at(&file);
        read_at(fd, rel.as_c_str())
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
    /// Directories with subdirectories that were not listed: their names came from the
    /// [`WalkCache`] and were each found again.
    pub reused: u64,
    /// Directories that vanished while walked (ENOENT / ENODEV).
    pub gone: u64,
}

/// The subdirectory names of every directory the last walk looked into, for
/// [`walk_cached`]: by a 64-bit hash of its path from the root (a collision can only make
/// a remembered name not be found, and the directory listed), the names packed one
/// after the other, each ending in NUL. Holds only what the last walk saw.
#[derive(Debug, Default)]
pub struct WalkCache {
    dirs: HashMap<u64, Box<[u8]>>,
}

impl WalkCache {
    /// Directories remembered.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// Walk a cgroup tree from `root`. A missing or unreadable root is an error;
/// anything below that vanishes meanwhile is counted in `gone`.
pub fn walk(root: &Path, visitor: &mut dyn CgroupVisitor) -> Result<WalkStats> {
    walk_cached(root, visitor, None)
}

/// [`walk`], reusing and then replacing what `cache` remembers of the last walk.
pub fn walk_cached(root: &Path, visitor: &mut dyn CgroupVisitor, cache: Option<&mut WalkCache>) -> Result<WalkStats> {
    let fd = openat(CWD, root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ReadError::io(root, e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| ReadError::io(root, e.into()))?;
    let mut cache = cache;
    let mut w = Walker {
        stats: WalkStats { dirs: 1, ..Default::default() },
        buf: vec![MaybeUninit::uninit(); 16 * 1024],
        components: Vec::new(),
        error_at: None,
        previous: cache.as_deref_mut().map(|c| std::mem::take(&mut c.dirs)).unwrap_or_default(),
        next: cache.is_some().then(HashMap::new),
    };
    let subdirs = nlink_subdirs(st.st_nlink as u64);
    let result = w.dir(DirHandle::Open(fd), subdirs, visitor);
    // After a failed walk the cache stays empty: the next walk lists everything.
    if let (Some(c), Some(next), true) = (cache, w.next.take(), result.is_ok()) {
        c.dirs = next;
    }
    result.map_err(|e| {
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
    /// What the last walk saw (empty without a cache); entries are taken out as used.
    previous: HashMap<u64, Box<[u8]>>,
    /// What this walk saw: Some when walking with a cache.
    next: Option<HashMap<u64, Box<[u8]>>>,
}

impl Walker {
    /// The current directory's key in the cache: a hash of its path from the root.
    fn key(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        // DefaultHasher::new() has fixed keys: the same path hashes alike in every walk.
        let mut h = DefaultHasher::new();
        self.components.hash(&mut h);
        h.finish()
    }

    /// The subdirectories of a directory whose link count announced `subdirs`:
    /// remembered and found again, else listed (opening it if it was not yet open).
    fn children<'p>(&mut self, handle: DirHandle<'p>, subdirs: Option<u32>) -> io::Result<(DirHandle<'p>, Vec<ChildDir>)> {
        if self.next.is_none() {
            let fd = handle.open()?;
            let c = self.list(&fd, subdirs)?;
            self.stats.listed += 1;
            return Ok((DirHandle::Open(fd), c));
        }
        let key = self.key();
        let remembered = match (subdirs, self.previous.remove(&key)) {
            (Some(k), Some(names)) => found_again(&handle, &names, k)?.map(|c| (c, names)),
            _ => None,
        };
        let (handle, children, names) = match remembered {
            Some((c, names)) => {
                self.stats.reused += 1;
                (handle, c, names)
            }
            None => {
                let fd = handle.open()?;
                let c = self.list(&fd, subdirs)?;
                self.stats.listed += 1;
                let mut names = Vec::with_capacity(c.iter().map(|c| c.name.as_bytes_with_nul().len()).sum());
                for child in &c {
                    names.extend_from_slice(child.name.as_bytes_with_nul());
                }
                (DirHandle::Open(fd), c, names.into_boxed_slice())
            }
        };
        if let Some(next) = self.next.as_mut() {
            next.insert(key, names);
        }
        Ok((handle, children))
    }

    fn dir(&mut self, handle: DirHandle<'_>, subdirs: Option<u32>, visitor: &mut dyn CgroupVisitor) -> io::Result<()> {
        let (handle, children) = match self.children(handle, subdirs) {
            Ok(c) => c,
            Err(e) => {
                if !is_gone_io(&e) && self.error_at.is_none() {
                    self.error_at = Some(self.components.clone());
                }
                return Err(e);
            }
        };
        self.stats.dirs += children.len() as u64;
        visitor.visit(&WalkDir { handle: &handle, components: &self.components }, &children);
        if children.iter().all(ChildDir::is_leaf) {
            return Ok(());
        }
        let fd = match handle.open() {
            Ok(fd) => fd,
            Err(e) => {
                if !is_gone_io(&e) && self.error_at.is_none() {
                    self.error_at = Some(self.components.clone());
                }
                return Err(e);
            }
        };
        for c in children {
            if c.is_leaf() {
                continue;
            }
            self.components.push(c.name.clone());
            let r = self.dir(DirHandle::InParent { parent: &fd, name: c.name.as_c_str() }, c.subdirs, visitor);
            self.components.pop();
            match r {
                Ok(()) => {}
                Err(e) if is_gone_io(&e) => self.stats.gone += 1,
                Err(e) => return Err(e),
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

/// The `k` packed `names` as subdirectories of `dir`, or None as soon as one is not one
/// any more (or their number is not `k`).
fn found_again(dir: &DirHandle<'_>, names: &[u8], k: u32) -> io::Result<Option<Vec<ChildDir>>> {
    let mut out = Vec::with_capacity(k as usize);
    for name in names.split_inclusive(|b| *b == 0) {
        let name = CStr::from_bytes_with_nul(name).expect("packed names end in NUL");
        if out.len() == k as usize {
            return Ok(None);
        }
        let (fd, rel) = dir.at(name);
        match statat(fd, rel.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::Directory => {
                out.push(ChildDir { name: name.to_owned(), subdirs: nlink_subdirs(s.st_nlink) })
            }
            Ok(_) => return Ok(None),
            Err(e) if is_gone_io(&e.into()) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((out.len() == k as usize).then_some(out))
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

fn read_at(fd: &OwnedFd, name: &CStr) -> io::Result<String> {
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
    fn a_cached_walk_skips_unchanged_directories_and_sees_every_change() {
        let t = tempfile::tempdir().unwrap();
        for p in ["kubepods/pod1/c1", "kubepods/pod1/c2", "kubepods/pod2/c3", "other"] {
            mk(t.path(), p);
        }
        let mut cache = WalkCache::default();
        let names = |cache: &mut WalkCache| {
            let mut v = Names(Vec::new());
            let s = walk_cached(t.path(), &mut v, Some(cache)).unwrap();
            v.0.sort();
            (s, v.0)
        };
        let (first, seen) = names(&mut cache);
        assert_eq!((first.dirs, first.listed, first.reused), (8, 4, 0));
        // Nothing changed: the same answer, no directory listed.
        let (again, seen_again) = names(&mut cache);
        assert_eq!((again.dirs, again.listed, again.reused), (8, 0, 4));
        assert_eq!(seen_again, seen);
        // A container replaced (same count, another name): pod1 is listed again.
        fs::remove_dir_all(t.path().join("kubepods/pod1/c2")).unwrap();
        mk(t.path(), "kubepods/pod1/c9");
        let (s, seen) = names(&mut cache);
        assert_eq!((s.dirs, s.listed, s.reused), (8, 1, 3));
        assert!(seen.contains(&"kubepods/pod1/c9".to_string()) && !seen.contains(&"kubepods/pod1/c2".to_string()));
        // A cgroup nested in a leaf that was never listed: its new link count shows it.
        mk(t.path(), "kubepods/pod2/c3/nested");
        let (s, seen) = names(&mut cache);
        assert_eq!((s.dirs, s.listed, s.reused), (9, 1, 4));
        assert!(seen.contains(&"kubepods/pod2/c3/nested".to_string()));
        // A pod more: kubepods' link count changed, so it is listed.
        mk(t.path(), "kubepods/pod3");
        let (s, _) = names(&mut cache);
        assert_eq!((s.dirs, s.listed), (10, 1));
        // The plain walk agrees with the cached one.
        assert_eq!(walk(t.path(), &mut ()).unwrap().dirs, 10);
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

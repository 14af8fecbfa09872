//! Cgroup filesystem reading: the fast tree walker and the small files.
//!
//! The walker counts a hierarchy without listing leaves: a kernfs directory has
//! st_nlink = 2 + number of subdirectories (docs/kernel-facts.md section 2, measured
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, RawDir};

use crate::beneath::{self, Links};
use crate::bounded;
use crate::error::{is_gone_io, ReadError, Result};

/// A subdirectory as the walker saw it from its parent.
#[derive(Debug, Clone)]
pub struct ChildDir {
    pub name: CString,
    /// Its inode number, from the parent's listing (d_ino) or the stat that found it again:
    /// no syscall of its own. On cgroupfs it is the cgroup's id (kernfs_ino), what
    /// /proc/kpagecgroup reports for pages charged to it.
    pub ino: u64,
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
    /// Its inode (as its parent's listing gave it; the root's from fstat).
    pub ino: u64,
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
                open_child(parent, name)
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

    /// Read a file of this directory, relative to a directory handle (no path lookup from
    /// /, no symlink followed, a regular file, at most the cap of a cgroup file).
    pub fn read_file(&self, name: &str) -> io::Result<String> {
        let file = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (fd, rel) = self.handle.at(&file);
        read_at(fd, rel.as_c_str(), cap_for(Path::new(name)))
    }

    /// Read a file of one of this directory's subdirectories (`child/name`), likewise.
    pub fn read_child_file(&self, child: &CStr, name: &str) -> io::Result<String> {
        let mut rel = child.to_bytes().to_vec();
        rel.push(b'/');
        rel.extend_from_slice(name.as_bytes());
        let rel = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (fd, rel) = self.handle.at(&rel);
        read_at(fd, rel.as_c_str(), cap_for(Path::new(name)))
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

/// Directories a walk holds open at once. Deeper ones are opened again from the walk's
/// root when the walk comes back to them for a sibling, so a tree of any depth (a 30,000
/// deep chain) needs no more descriptors than this, and no stack: the walk is a loop.
pub const MAX_OPEN_DIRS: usize = 32;

/// Walk a cgroup tree from `root`. A missing or unreadable root is an error;
/// anything below that vanishes meanwhile is counted in `gone`.
pub fn walk(root: &Path, visitor: &mut dyn CgroupVisitor) -> Result<WalkStats> {
    walk_cached(root, visitor, None)
}

/// [`walk`], reusing and then replacing what `cache` remembers of the last walk.
/// `root` is a cgroup path: it is opened with no symlink on the way
/// ([`beneath::open_cgroup_path`]); below it every directory is opened by one name
/// relative to its parent's descriptor, never following a symlink.
pub fn walk_cached(root: &Path, visitor: &mut dyn CgroupVisitor, cache: Option<&mut WalkCache>) -> Result<WalkStats> {
    let (fd, subdirs, ino) = open_root(root)?;
    let mut cache = cache;
    let mut w = Walker::new(None);
    w.previous = cache.as_deref_mut().map(|c| std::mem::take(&mut c.dirs)).unwrap_or_default();
    w.next = cache.is_some().then(HashMap::new);
    let result = w.run(fd, subdirs, ino, visitor);
    // After a failed walk the cache stays empty: the next walk lists everything.
    if let (Some(c), Some(next), true) = (cache, w.next.take(), result.is_ok()) {
        c.dirs = next;
    }
    result.map_err(|e| error_naming(root, w.error_at.take(), e))?;
    Ok(w.stats)
}

/// Threads a walk of a whole hierarchy uses: one per CPU, at most [`MAX_WALK_THREADS`], and
/// no more than the descriptors they may hold ([`walk_parallel`]) fit in half the soft limit
/// of open files (a DaemonSet may run with a low one).
pub fn walk_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let by_files = (files / 2 / (MAX_OPEN_DIRS as u64 + 2)) as usize;
    cpus.min(MAX_WALK_THREADS).min(by_files).max(1)
}

/// More threads than this gain nothing: every lookup, stat and listing of a cgroup
/// hierarchy takes the read side of the same kernfs locks (fs/kernfs/dir.c, kernfs_rwsem).
pub const MAX_WALK_THREADS: usize = 8;

/// [`walk`] on `threads` threads, each with its own visitor made by `make`, which are
/// returned (merge them: which thread visits which directory varies from walk to walk,
/// so what a visitor gathers must not depend on the order of its visits). Subtrees are
/// shared out as threads run out of work: a thread that finds another waiting hands over
/// half of the subdirectories left in the shallowest directory it holds open. Each thread
/// holds at most [`MAX_OPEN_DIRS`] directories open, plus one shared with it, and at most
/// `threads - 1` subtrees wait with their parent's descriptor: at most
/// `threads * (MAX_OPEN_DIRS + 2)` descriptors in all. The first real error ends the walk.
pub fn walk_parallel<V: CgroupVisitor + Send>(root: &Path, threads: usize, make: &(dyn Fn() -> V + Sync)) -> Result<(WalkStats, Vec<V>)> {
    let (fd, subdirs, ino) = open_root(root)?;
    let threads = threads.clamp(1, MAX_WALK_THREADS);
    let shared = Shared::new(threads);
    let shared = &shared;
    let done = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut v = make();
                    let r = work(shared, None, &mut v);
                    (v, r)
                })
            })
            .collect();
        let mut v = make();
        let first = work(shared, Some((fd, subdirs, ino)), &mut v);
        let mut done = vec![(v, first)];
        // A walking thread that panicked has taken its visitor with it: pass the panic on.
        done.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
        done
    });
    let mut stats = WalkStats::default();
    let mut visitors = Vec::with_capacity(done.len());
    let mut failure = None;
    for (v, (st, err)) in done {
        stats.dirs += st.dirs;
        stats.listed += st.listed;
        stats.reused += st.reused;
        stats.gone += st.gone;
        visitors.push(v);
        failure = failure.or(err);
    }
    match failure {
        Some((at, e)) => Err(error_naming(root, Some(at), e)),
        None => Ok((stats, visitors)),
    }
}

/// The root of a walk, its number of subdirectories and its inode.
fn open_root(root: &Path) -> Result<(OwnedFd, Option<u32>, u64)> {
    let fd = beneath::open_cgroup_path(root, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| ReadError::io(root, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| ReadError::io(root, e.into()))?;
    Ok((fd, nlink_subdirs(st.st_nlink as u64), st.st_ino))
}

/// Name the directory that failed, not the root of the walk.
fn error_naming(root: &Path, at: Option<Vec<CString>>, e: io::Error) -> ReadError {
    let mut p = root.to_path_buf();
    for c in at.unwrap_or_default() {
        p.push(OsStr::from_bytes(c.as_bytes()));
    }
    ReadError::io(p, e)
}

fn nlink_subdirs(nlink: u64) -> Option<u32> {
    if nlink >= 2 { Some((nlink - 2).min(u32::MAX as u64) as u32) } else { None }
}

/// Subtrees handed between the threads of [`walk_parallel`].
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    threads: usize,
    /// Threads waiting for a subtree, and subtrees waiting for a thread (read without the
    /// lock, once a directory, to decide whether to hand some over).
    idle: AtomicUsize,
    queued: AtomicUsize,
    /// Set by the first real error: every thread stops.
    failed: AtomicBool,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    idle: usize,
    done: bool,
}

/// Subtrees to walk: subdirectories (with subdirectories of their own) of the directory
/// at `components`, which `fd` holds open.
struct Job {
    fd: Arc<OwnedFd>,
    components: Vec<CString>,
    deeper: Vec<ChildDir>,
}

impl Shared {
    fn new(threads: usize) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            threads,
            idle: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next subtree to walk; None once every thread is waiting (the walk is over) or
    /// the walk failed.
    fn take(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if q.done || self.failed.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(job) = q.jobs.pop() {
                self.queued.store(q.jobs.len(), Ordering::Relaxed);
                return Some(job);
            }
            q.idle += 1;
            self.idle.store(q.idle, Ordering::Relaxed);
            if q.idle == self.threads {
                q.done = true;
                self.wake.notify_all();
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
            self.idle.store(q.idle, Ordering::Relaxed);
        }
    }

    fn give(&self, job: Job) {
        let mut q = self.lock();
        q.jobs.push(job);
        self.queued.store(q.jobs.len(), Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether a thread waits and no subtree waits for it.
    fn hungry(&self) -> bool {
        self.idle.load(Ordering::Relaxed) > 0 && self.queued.load(Ordering::Relaxed) == 0
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.lock().done = true;
        self.wake.notify_all();
    }
}

/// One thread of [`walk_parallel`]: the root first when given it, then subtrees until the
/// walk is over. Its figures, and where a real error happened (relative to the root).
fn work(shared: &Shared, root: Option<(OwnedFd, Option<u32>, u64)>, visitor: &mut dyn CgroupVisitor) -> (WalkStats, Option<(Vec<CString>, io::Error)>) {
    let mut w = Walker::new(Some(shared));
    let mut result = match root {
        Some((fd, subdirs, ino)) => w.run(fd, subdirs, ino, visitor),
        None => {
            w.stats.dirs = 0;
            Ok(())
        }
    };
    while result.is_ok() {
        let Some(job) = shared.take() else { break };
        w.components = job.components;
        result = w.walk_from(Frame { fd: Some(job.fd), deeper: job.deeper, next: 0 }, visitor);
    }
    match result {
        Ok(()) => (w.stats, None),
        Err(e) => {
            shared.fail();
            (w.stats, Some((w.error_at.take().unwrap_or_default(), e)))
        }
    }
}

struct Walker<'s> {
    stats: WalkStats,
    buf: Vec<MaybeUninit<u8>>,
    components: Vec<CString>,
    /// Where the first real (not "gone") error happened, relative to the root.
    error_at: Option<Vec<CString>>,
    /// What the last walk saw (empty without a cache); entries are taken out as used.
    previous: HashMap<u64, Box<[u8]>>,
    /// What this walk saw: Some when walking with a cache.
    next: Option<HashMap<u64, Box<[u8]>>>,
    /// The other threads of a parallel walk.
    shared: Option<&'s Shared>,
}

/// A directory of the walk with subdirectories still to go into.
struct Frame {
    /// None once closed to keep within [`MAX_OPEN_DIRS`] (opened again when needed);
    /// shared with a subtree handed to another thread.
    fd: Option<Arc<OwnedFd>>,
    /// Its subdirectories that have subdirectories of their own (leaves need no visit).
    deeper: Vec<ChildDir>,
    next: usize,
}

/// One directory by name relative to `dir`, never through a symlink.
fn open_child(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?)
}

impl<'s> Walker<'s> {
    fn new(shared: Option<&'s Shared>) -> Self {
        Walker {
            stats: WalkStats { dirs: 1, ..Default::default() },
            buf: vec![MaybeUninit::uninit(); 16 * 1024],
            components: Vec::new(),
            error_at: None,
            previous: HashMap::new(),
            next: None,
            shared,
        }
    }

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

    /// Remember where a real error happened, and pass it on.
    fn failed(&mut self, e: io::Error) -> io::Error {
        if !is_gone_io(&e) && self.error_at.is_none() {
            self.error_at = Some(self.components.clone());
        }
        e
    }

    /// Visit the directory at `handle` (the current components); its frame when it has
    /// subdirectories to go into. A vanished directory is Ok(None) and counted as gone.
    fn enter(&mut self, handle: DirHandle<'_>, subdirs: Option<u32>, ino: u64, visitor: &mut dyn CgroupVisitor) -> io::Result<Option<Frame>> {
        let (handle, children) = self.children(handle, subdirs)?;
        self.stats.dirs += children.len() as u64;
        visitor.visit(&WalkDir { handle: &handle, components: &self.components, ino }, &children);
        let deeper: Vec<ChildDir> = children.into_iter().filter(|c| !c.is_leaf()).collect();
        if deeper.is_empty() {
            return Ok(None);
        }
        Ok(Some(Frame { fd: Some(Arc::new(handle.open()?)), deeper, next: 0 }))
    }

    fn run(&mut self, root: OwnedFd, subdirs: Option<u32>, ino: u64, visitor: &mut dyn CgroupVisitor) -> io::Result<()> {
        match self.enter(DirHandle::Open(root), subdirs, ino, visitor) {
            Ok(Some(f)) => self.walk_from(f, visitor),
            Ok(None) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Walk the subtrees of `base`, the directory at the current components, which is
    /// open and stays open (deeper ones are opened again from it when they were closed).
    fn walk_from(&mut self, base: Frame, visitor: &mut dyn CgroupVisitor) -> io::Result<()> {
        let base_len = self.components.len();
        let mut stack: Vec<Frame> = vec![base];
        // Frames 1..first_open are closed; `open` frames hold a descriptor.
        let (mut open, mut first_open) = (1usize, 1usize);
        while let Some(top) = stack.last_mut() {
            if top.next == top.deeper.len() {
                if stack.pop().is_some_and(|f| f.fd.is_some()) {
                    open -= 1;
                }
                if !stack.is_empty() {
                    self.components.pop();
                }
                first_open = first_open.min(stack.len().max(1));
                continue;
            }
            if let Some(shared) = self.shared {
                if shared.failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if shared.hungry() {
                    self.hand_over(&mut stack, base_len, shared);
                }
            }
            let top = stack.last_mut().expect("not empty");
            let child = top.deeper[top.next].clone();
            top.next += 1;
            let t = stack.len() - 1;
            if stack[t].fd.is_none() {
                // Closed, and so is every frame above the base: open it again from the base.
                let mut fd: Option<OwnedFd> = None;
                for name in &self.components[base_len..] {
                    let dir = fd.as_ref().or(stack[0].fd.as_deref()).expect("the base frame stays open");
                    match open_child(dir, name) {
                        Ok(f) => fd = Some(f),
                        Err(e) if is_gone_io(&e) => {
                            fd = None;
                            break;
                        }
                        Err(e) => return Err(self.failed(e)),
                    }
                }
                let Some(fd) = fd else {
                    // It went away meanwhile: nothing more to see below it.
                    self.stats.gone += 1;
                    stack[t].next = stack[t].deeper.len();
                    continue;
                };
                stack[t].fd = Some(Arc::new(fd));
                open += 1;
                first_open = first_open.min(t);
            }
            self.components.push(child.name.clone());
            let parent = stack[t].fd.as_ref().expect("opened above");
            let entered = self.enter(DirHandle::InParent { parent, name: child.name.as_c_str() }, child.subdirs, child.ino, visitor);
            match entered {
                Ok(Some(frame)) => {
                    stack.push(frame);
                    open += 1;
                    while open > MAX_OPEN_DIRS && first_open < stack.len() - 1 {
                        if stack[first_open].fd.take().is_some() {
                            open -= 1;
                        }
                        first_open += 1;
                    }
                }
                Ok(None) => {
                    self.components.pop();
                }
                Err(e) if is_gone_io(&e) => {
                    self.stats.gone += 1;
                    self.components.pop();
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(())
    }

    /// Give a waiting thread half of the subtrees left in the shallowest open directory
    /// that has two or more left (the biggest share of work at hand).
    fn hand_over(&self, stack: &mut [Frame], base_len: usize, shared: &Shared) {
        for (i, f) in stack.iter_mut().enumerate() {
            let left = f.deeper.len() - f.next;
            let Some(fd) = f.fd.as_ref().filter(|_| left >= 2) else { continue };
            let deeper = f.deeper.split_off(f.next + left / 2);
            shared.give(Job { fd: Arc::clone(fd), components: self.components[..base_len + i].to_vec(), deeper });
            return;
        }
    }

    fn list(&mut self, fd: &OwnedFd, expected: Option<u32>) -> io::Result<Vec<ChildDir>> {
        let mut out = Vec::with_capacity(expected.unwrap_or(4).min(4096) as usize);
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
            out.push(ChildDir { name: name.to_owned(), ino: ent.ino(), subdirs: sub });
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
                out.push(ChildDir { name: name.to_owned(), ino: s.st_ino, subdirs: nlink_subdirs(s.st_nlink) })
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

fn read_at(fd: &OwnedFd, name: &CStr, cap: u64) -> io::Result<String> {
    let f = beneath::open(fd.as_fd(), Path::new(OsStr::from_bytes(name.to_bytes())), OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty(), Links::Refused)?;
    bounded::read_fd_string(f, Path::new(OsStr::from_bytes(name.to_bytes())), cap).map_err(into_io)
}

/// A [`ReadError`] of a file read relative to a directory, back as the io::Error it
/// carries (or one saying what was unexpected).
fn into_io(e: ReadError) -> io::Error {
    match e {
        ReadError::Io { source, .. } => source,
        ReadError::Unexpected { detail, .. } => io::Error::new(io::ErrorKind::InvalidData, detail),
    }
}

/// The cap on a cgroup file: task lists are longer than control files.
fn cap_for(path: &Path) -> u64 {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("cgroup.procs" | "tasks" | "cgroup.threads") => bounded::TASK_LIST_CAP,
        _ => bounded::CGROUP_FILE_CAP,
    }
}

/// Read a whole cgroup file (no symlink on its path, a regular file, at most
/// [`bounded::CGROUP_FILE_CAP`], task lists [`bounded::TASK_LIST_CAP`]). Errors name the file.
pub fn read_file(path: &Path) -> Result<String> {
    let fd = beneath::open_cgroup_path(path, OFlags::RDONLY | OFlags::NONBLOCK).map_err(|e| ReadError::io(path, e))?;
    bounded::read_fd_string(fd, path, cap_for(path))
}

/// Write `value` to a cgroup file in one write(2), as the kernel takes it: no symlink on
/// its path, never created (no O_CREAT), and on a kernel host only a file on cgroupfs
/// ([`beneath::check_cgroupfs`]). The error names neither file nor value: callers do.
pub fn write_file(path: &Path, value: &[u8]) -> io::Result<()> {
    let fd = beneath::open_cgroup_path(path, OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK)?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other(format!("is {}, not a cgroup file: not written", bounded::file_type_name(st.st_mode))));
    }
    beneath::check_cgroupfs(fd.as_fd(), path)?;
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    let n = rustix::io::write(&fd, value)?;
    if n != value.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("wrote {n} of {} bytes", value.len())));
    }
    Ok(())
}

/// rmdir of a cgroup: the directory holding it is reached with no symlink on the way and,
/// on a kernel host, is on cgroupfs; the cgroup itself is never followed.
pub fn remove_dir(path: &Path) -> io::Result<()> {
    let (dir, name) = beneath::open_cgroup_parent(path)?;
    beneath::check_cgroupfs(dir.as_fd(), path)?;
    Ok(rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::REMOVEDIR)?)
}

/// mkdir of a cgroup (mode 0755), with the same checks as [`remove_dir`].
pub fn create_dir(path: &Path) -> io::Result<()> {
    let (dir, name) = beneath::open_cgroup_parent(path)?;
    beneath::check_cgroupfs(dir.as_fd(), path)?;
    Ok(rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o755))?)
}

/// rename of a cgroup within its hierarchy, with the same checks as [`remove_dir`].
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (fdir, fname) = beneath::open_cgroup_parent(from)?;
    let (tdir, tname) = beneath::open_cgroup_parent(to)?;
    beneath::check_cgroupfs(fdir.as_fd(), from)?;
    beneath::check_cgroupfs(tdir.as_fd(), to)?;
    Ok(rustix::fs::renameat(&fdir, fname.as_os_str(), &tdir, tname.as_os_str())?)
}

/// A cgroup path's metadata, no symlink on the way (None when it is not there).
pub fn metadata(path: &Path) -> io::Result<rustix::fs::Stat> {
    let fd = beneath::open_cgroup_path(path, OFlags::PATH)?;
    Ok(rustix::fs::fstat(&fd)?)
}

/// The subdirectories of a cgroup directory (reached with no symlink on the way), as paths.
pub fn child_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let fd = beneath::open_cgroup_path(dir, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let name = e.file_name();
        let is_dir = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
            _ => false,
        };
        if is_dir && !is_dot(name) {
            out.push(dir.join(OsStr::from_bytes(name.to_bytes())));
        }
    }
    Ok(out)
}

/// Whether a cgroup path is a directory reached with no symlink on the way.
pub fn is_dir(path: &Path) -> bool {
    metadata(path).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
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

/// `dir` and its subdirectories, parents before children; vanished ones are skipped, and
/// so is a `dir` that is not a directory reached without symlinks. Iterative, with at most
/// [`MAX_OPEN_DIRS`] directories open.
pub fn subtree_dirs(dir: &Path) -> Vec<PathBuf> {
    struct Dirs<'a>(&'a Path, Vec<PathBuf>);
    impl CgroupVisitor for Dirs<'_> {
        fn visit(&mut self, d: &WalkDir<'_>, children: &[ChildDir]) {
            let here = if d.depth() == 0 { self.0.to_path_buf() } else { self.0.join(d.rel_path()) };
            for c in children {
                self.1.push(here.join(OsStr::from_bytes(c.name.as_bytes())));
            }
        }
    }
    let mut v = Dirs(dir, Vec::new());
    if walk(dir, &mut v).is_err() {
        return Vec::new();
    }
    // The walk sees a directory's children before going deeper, but not in pre-order:
    // sort by depth so parents come before their children.
    let mut out = vec![dir.to_path_buf()];
    v.1.sort_by_key(|p| p.components().count());
    out.extend(v.1);
    out
}

/// Whether any process is in this cgroup (its own `cgroup.procs`, not the subtree).
pub fn has_procs(dir: &Path) -> Result<bool> {
    let p = dir.join("cgroup.procs");
    Ok(read_file(&p)?.split_whitespace().next().is_some())
}

/// Whether any process is anywhere in the subtree at `dir`. A subtree that vanished
/// reads as empty. Iterative, with at most [`MAX_OPEN_DIRS`] directories open.
pub fn subtree_has_procs(dir: &Path) -> Result<bool> {
    struct Procs {
        found: bool,
        error: Option<(PathBuf, io::Error)>,
    }
    impl Procs {
        fn check(&mut self, d: &WalkDir<'_>, child: Option<&CStr>) {
            if self.found || self.error.is_some() {
                return;
            }
            let read = match child {
                None => d.read_file("cgroup.procs"),
                Some(c) => d.read_child_file(c, "cgroup.procs"),
            };
            match read {
                Ok(t) => self.found = t.split_whitespace().next().is_some(),
                Err(e) if is_gone_io(&e) => {}
                Err(e) => {
                    let mut at = d.rel_path();
                    if let Some(c) = child {
                        at.push(OsStr::from_bytes(c.to_bytes()));
                    }
                    self.error = Some((at.join("cgroup.procs"), e));
                }
            }
        }
    }
    impl CgroupVisitor for Procs {
        fn visit(&mut self, d: &WalkDir<'_>, children: &[ChildDir]) {
            if d.depth() == 0 {
                self.check(d, None);
            }
            // Every child's own file is read here; one with subdirectories is visited too.
            for c in children {
                self.check(d, Some(c.name.as_c_str()));
            }
        }
    }
    let mut v = Procs { found: false, error: None };
    match walk(dir, &mut v) {
        Ok(_) => {}
        Err(e) if e.is_gone() => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some((rel, e)) = v.error {
        return Err(ReadError::io(dir.join(rel), e));
    }
    Ok(v.found)
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

    /// What a visitor saw, in an order that does not depend on the walk's.
    fn seen_by(visitors: Vec<Names>) -> Vec<String> {
        let mut v: Vec<String> = visitors.into_iter().flat_map(|n| n.0).collect();
        v.sort();
        v
    }

    /// Threads of a parallel walk see every directory once, as one thread does, whatever
    /// subtrees they hand each other (many pods to share out, a deep chain, nested leaves).
    #[test]
    fn a_parallel_walk_sees_what_a_walk_on_one_thread_sees() {
        let t = tempfile::tempdir().unwrap();
        for q in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
            mk(t.path(), q);
            for p in 0..60 {
                for c in 0..3 {
                    mk(t.path(), &format!("{q}/pod{p}/c{c}"));
                }
            }
        }
        mk(t.path(), "kubepods/pod7/c1/nested/deeper");
        mk(t.path(), "system.slice/a/b/c/d/e/f");
        mk(t.path(), "leaf");
        let mut one = Names(Vec::new());
        let want = walk(t.path(), &mut one).unwrap();
        let one = seen_by(vec![one]);
        assert_eq!(want.dirs as usize, one.len() + 1);
        for threads in [1, 2, 3, 8] {
            for _ in 0..5 {
                let (stats, visitors) = walk_parallel(t.path(), threads, &|| Names(Vec::new())).unwrap();
                assert_eq!(visitors.len(), threads);
                assert_eq!((stats.dirs, stats.listed, stats.gone), (want.dirs, want.listed, 0), "{threads} threads");
                assert_eq!(seen_by(visitors), one, "{threads} threads");
            }
        }
    }

    #[test]
    fn a_parallel_walk_of_a_missing_root_names_it() {
        let e = walk_parallel(Path::new("/nonexistent/cgleak-root"), 2, &|| ()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cgleak-root") && e.is_gone(), "{e}");
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

    /// Children carry their inode, listed or found again from the cache, with no stat of their own.
    #[test]
    fn children_carry_their_inode_listed_or_remembered() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        for p in ["kubepods/pod1/c1", "kubepods/pod1/c2", "other"] {
            mk(t.path(), p);
        }
        struct Inos(Vec<(PathBuf, u64)>);
        impl CgroupVisitor for Inos {
            fn visit(&mut self, dir: &WalkDir<'_>, children: &[ChildDir]) {
                self.0.push((dir.rel_path(), dir.ino));
                self.0.extend(children.iter().map(|c| (dir.rel_path().join(c.name_str()), c.ino)));
            }
        }
        let mut cache = WalkCache::default();
        for round in 0..2 {
            let mut v = Inos(Vec::new());
            let s = walk_cached(t.path(), &mut v, Some(&mut cache)).unwrap();
            assert_eq!(s.reused, if round == 0 { 0 } else { 3 });
            // 5 directories as children, and the 3 with subdirectories visited (the root, kubepods, pod1).
            assert_eq!(v.0.len(), 8);
            for (p, ino) in v.0 {
                assert_eq!(ino, fs::metadata(t.path().join(&p)).unwrap().ino(), "{}", p.display());
            }
        }
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

    /// `depth` nested directories `top/d/d/...`, each with an empty `cgroup.procs`, made
    /// one name at a time (the path is far past PATH_MAX); the deepest holds a pid.
    fn chain(top: &Path, depth: usize) {
        let mut fd = openat(rustix::fs::CWD, top, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        for i in 0..depth {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = open_child(&fd, c"d").unwrap();
            let procs = openat(&fd, "cgroup.procs", OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC, Mode::from_raw_mode(0o644)).unwrap();
            if i == depth - 1 {
                rustix::io::write(&procs, b"123\n").unwrap();
            }
        }
    }

    /// Remove a chain one level at a time from the top: its grandchild moved up, its
    /// child removed, the grandchild renamed into the child's place.
    fn remove_chain(top: &Path) {
        let fd = openat(rustix::fs::CWD, top, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        loop {
            let _ = rustix::fs::unlinkat(&fd, "d/cgroup.procs", AtFlags::empty());
            match rustix::fs::renameat(&fd, "d/d", &fd, "up") {
                Ok(()) => {
                    rustix::fs::unlinkat(&fd, "d", AtFlags::REMOVEDIR).unwrap();
                    rustix::fs::renameat(&fd, "up", &fd, "d").unwrap();
                }
                Err(_) => {
                    let _ = rustix::fs::unlinkat(&fd, "d", AtFlags::REMOVEDIR);
                    return;
                }
            }
        }
    }

    /// A 30,000-deep tree is walked (on one thread and on two), searched for tasks and listed
    /// with a soft limit of 64 open files and a 1 MiB stack: in a child process (the limit is per process), on a
    /// thread with that stack. Before the walk was a loop with few descriptors open, it
    /// failed with EMFILE, or overflowed the stack.
    #[test]
    fn a_deep_tree_needs_few_descriptors_and_little_stack() {
        const DEPTH: usize = 30_000;
        if let Some(top) = std::env::var_os("CGLEAK_DEEP_TREE_CHILD") {
            let top = PathBuf::from(top);
            let h = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    let s = walk(&top, &mut ()).unwrap();
                    assert_eq!(s.dirs, DEPTH as u64 + 1);
                    // Each thread of a parallel walk keeps to the same bound (a chain has nothing to share out).
                    let (s, _) = walk_parallel(&top, 2, &|| ()).unwrap();
                    assert_eq!(s.dirs, DEPTH as u64 + 1);
                    assert!(subtree_has_procs(&top).unwrap(), "the pid at the bottom is found");
                    // subtree_dirs returns whole paths: a shallower part keeps the test quick.
                    let mid: PathBuf = std::iter::once(top.clone()).chain(std::iter::repeat_n(PathBuf::from("d"), DEPTH - 2_000)).collect();
                    assert_eq!(subtree_dirs(&mid).len(), 2_001);
                })
                .unwrap();
            h.join().unwrap();
            return;
        }
        // Removed one level at a time, also when the test fails (remove_dir_all recurses).
        struct Chain(tempfile::TempDir);
        impl Drop for Chain {
            fn drop(&mut self) {
                remove_chain(self.0.path());
            }
        }
        let t = Chain(tempfile::tempdir().unwrap());
        let t = &t.0;
        chain(t.path(), DEPTH);
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "cgroupfs::tests::a_deep_tree_needs_few_descriptors_and_little_stack", "--nocapture", "--test-threads=1"]);
        cmd.env("CGLEAK_DEEP_TREE_CHILD", t.path());
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::setrlimit(rustix::process::Resource::Nofile, rustix::process::Rlimit { current: Some(64), maximum: hard })
                    .map_err(io::Error::from)
            });
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "child: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the test: {}", String::from_utf8_lossy(&out.stdout));
    }

    #[test]
    fn a_fifo_or_a_symlink_in_a_cgroup_is_refused_not_waited_on() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "pod/c1");
        let fifo = t.path().join("pod/c1/cgroup.procs");
        fs::remove_file(&fifo).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let e = subtree_has_procs(&t.path().join("pod")).unwrap_err().to_string();
        assert!(e.contains("pod/c1/cgroup.procs") && e.contains("FIFO"), "{e}");
        let e = has_procs(&t.path().join("pod/c1")).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        // A symlinked cgroup: not followed by any reader or remover.
        let outside = tempfile::tempdir().unwrap();
        mk(outside.path(), "victim");
        fs::write(outside.path().join("victim/cgroup.procs"), "1\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), t.path().join("pod/link")).unwrap();
        let e = has_procs(&t.path().join("pod/link")).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
        assert!(!is_dir(&t.path().join("pod/link")));
        assert!(remove_dir(&t.path().join("pod/link/x")).is_err());
        assert_eq!(subtree_dirs(&t.path().join("pod/link")), Vec::<PathBuf>::new());
        assert!(outside.path().join("victim").is_dir());
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

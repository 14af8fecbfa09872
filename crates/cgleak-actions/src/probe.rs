//! Probe: prove that N memcgs can still be created, by creating and removing them.
//!
//! The children live under a scratch parent of our own (`cgleak-probe-<pid>-<secs>`),
//! so nothing of the host's is touched. On cgroup v1 nothing is written at all: a
//! write to `memory.kmem.limit_in_bytes` on 3.10 switches kmem accounting on for good
//! and children inherit it (KERNEL-FACTS section 3), which is the very leak we look
//! for. Whatever was created is removed again, also when the caller cancels, the
//! progress callback panics, or a step fails half-way (see [`ScratchTree`]'s Drop).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::io::Errno;
use serde::Serialize;

/// What to probe and where.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// How many child memcgs to create.
    pub count: u32,
    /// Local path of the directory under which the scratch parent is made: the
    /// memory hierarchy root, or a cgroup in it.
    pub parent: PathBuf,
    /// The same directory as the host names it, for reports.
    pub host_name_of_parent: PathBuf,
    /// 1 or 2.
    pub memory_version: u8,
    /// Set to stop creating; what was created is still removed.
    pub cancel: Arc<AtomicBool>,
}

/// Progress events, in order: `Started`, then `Created` per child, then `Removed` per child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeProgress {
    /// The scratch parent exists (local path); children come next.
    Started { scratch_parent: PathBuf },
    /// `done` of `total` children have been created.
    Created { done: u32, total: u32 },
    /// `done` of `total` created children have been dealt with (removed, or left over).
    Removed { done: u32, total: u32 },
}

/// The outcome of a probe that got as far as creating its scratch parent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeReport {
    pub requested: u32,
    /// How many child mkdirs succeeded.
    pub created: u32,
    /// How many children were removed again.
    pub removed: u32,
    /// All `requested` created and everything removed.
    pub success: bool,
    /// Index of the child whose mkdir failed (children `p0..p{failed_at-1}` exist); 0 also
    /// when the scratch parent itself could not be created because the ID space is full.
    pub failed_at: Option<u32>,
    /// Name of the errno of the failed mkdir: "ENOSPC", "EBUSY", "EACCES", ...
    pub errno: Option<String>,
    /// The first error, with the path it concerns.
    pub error: Option<String>,
    /// The mkdir failed with an errno that means the memcg ID space is likely full.
    pub exhausted: bool,
    /// Stopped early through the cancel flag.
    pub interrupted: bool,
    /// Host path of the scratch parent.
    pub scratch_parent: String,
    pub memory_version: u8,
    pub elapsed_ms: u64,
    /// Host paths that could not be removed.
    pub leftover: Vec<String>,
}

impl ProbeReport {
    /// "no space left on device" for ENOSPC: the C library's text, lower-cased.
    pub fn errno_description(&self) -> Option<String> {
        self.errno.as_deref().and_then(errno_code).map(describe_errno)
    }
}

/// Failures before any child could be attempted. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("memory cgroup version {0}: expected 1 or 2")]
    UnsupportedVersion(u8),
    #[error("cannot read {}: {source}", .path.display())]
    ReadSubtreeControl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cgroup v2: \"memory\" is not in {}, so cgroups created below it get no memcg \
         (enable it with: echo +memory > {})",
        .path.display(),
        .path.display()
    )]
    MemoryNotDelegated { path: PathBuf },
    #[error("cannot create the scratch parent {}: {source}", .path.display())]
    CreateScratch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enable memory for the probe's children: writing +memory to {}: {source}", .path.display())]
    EnableMemory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ProbeError {
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            ProbeError::ReadSubtreeControl { source, .. }
            | ProbeError::CreateScratch { source, .. }
            | ProbeError::EnableMemory { source, .. } => Some(source),
            ProbeError::UnsupportedVersion(_) | ProbeError::MemoryNotDelegated { .. } => None,
        }
    }

    /// EACCES, EPERM or EROFS: not a fault of the host, a lack of rights (exit 77).
    pub fn is_permission(&self) -> bool {
        self.io_error()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|c| [Errno::ACCESS, Errno::PERM, Errno::ROFS].iter().any(|e| e.raw_os_error() == c))
    }
}

/// The errnos a memcg mkdir returns when the ID space is full, by kernel era
/// (KERNEL-FACTS section 1): ENOSPC (3.10, 5.4.41 .. 6.11), ENOMEM (RHEL7, 4.7 .. 4.19),
/// EBUSY (6.12+, xarray).
pub fn is_exhaustion_errno(code: i32) -> bool {
    [Errno::NOSPC, Errno::NOMEM, Errno::BUSY].iter().any(|e| e.raw_os_error() == code)
}

const ERRNO_NAMES: &[(Errno, &str)] = &[
    (Errno::PERM, "EPERM"),
    (Errno::NOENT, "ENOENT"),
    (Errno::INTR, "EINTR"),
    (Errno::IO, "EIO"),
    (Errno::NXIO, "ENXIO"),
    (Errno::AGAIN, "EAGAIN"),
    (Errno::NOMEM, "ENOMEM"),
    (Errno::ACCESS, "EACCES"),
    (Errno::FAULT, "EFAULT"),
    (Errno::BUSY, "EBUSY"),
    (Errno::EXIST, "EEXIST"),
    (Errno::NODEV, "ENODEV"),
    (Errno::NOTDIR, "ENOTDIR"),
    (Errno::INVAL, "EINVAL"),
    (Errno::NOSPC, "ENOSPC"),
    (Errno::ROFS, "EROFS"),
    (Errno::MLINK, "EMLINK"),
    (Errno::NAMETOOLONG, "ENAMETOOLONG"),
    (Errno::NOSYS, "ENOSYS"),
    (Errno::NOTEMPTY, "ENOTEMPTY"),
    (Errno::LOOP, "ELOOP"),
    (Errno::OPNOTSUPP, "EOPNOTSUPP"),
    (Errno::STALE, "ESTALE"),
    (Errno::DQUOT, "EDQUOT"),
];

/// The symbolic name of an errno ("ENOSPC"); "errno 123" for one not in the table.
pub fn errno_name(code: i32) -> String {
    ERRNO_NAMES
        .iter()
        .find(|(e, _)| e.raw_os_error() == code)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("errno {code}"))
}

/// The inverse of [`errno_name`].
pub fn errno_code(name: &str) -> Option<i32> {
    ERRNO_NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(e, _)| e.raw_os_error())
        .or_else(|| name.strip_prefix("errno ").and_then(|n| n.parse().ok()))
}

/// "no space left on device": strerror without the "(os error 28)" tail.
pub fn describe_errno(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn io_errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => errno_name(code),
        None => format!("{:?}", e.kind()),
    }
}

/// How often an rmdir that fails with EBUSY is tried again (a cgroup can stay busy
/// briefly after the last task or child left), and the first pause (doubled each time).
const RMDIR_EBUSY_RETRIES: u32 = 5;
const RMDIR_EBUSY_FIRST_PAUSE: Duration = Duration::from_millis(10);

/// Create the scratch parent and `count` children in it, then remove them all.
pub fn run_probe(opts: &ProbeOptions, progress: &mut dyn FnMut(ProbeProgress)) -> Result<ProbeReport, ProbeError> {
    let started = Instant::now();
    match opts.memory_version {
        1 => {}
        // KERNEL-FACTS section 7: in v2 a child gets a memcg only where its parent's
        // cgroup.subtree_control has +memory, and the scratch parent may enable memory
        // for its own children only if it has the controller itself.
        2 => check_memory_delegated(&opts.parent, &opts.host_name_of_parent)?,
        v => return Err(ProbeError::UnsupportedVersion(v)),
    }

    let name = scratch_name();
    let mut tree = match ScratchTree::create(opts.parent.join(&name), opts.host_name_of_parent.join(&name)) {
        Ok(tree) => tree,
        // The scratch parent is a memcg too: on a full ID space its own mkdir fails (measured in
        // the 6.1 and 6.12 guests of `cargo xtask vmtest`). That is the probe's answer, not an error.
        Err(ProbeError::CreateScratch { path, source }) if source.raw_os_error().is_some_and(is_exhaustion_errno) => {
            return Ok(ProbeReport {
                requested: opts.count,
                created: 0,
                removed: 0,
                success: false,
                failed_at: Some(0),
                errno: Some(io_errno_name(&source)),
                error: Some(format!("mkdir {}: {source}", path.display())),
                exhausted: true,
                interrupted: false,
                scratch_parent: path.display().to_string(),
                memory_version: opts.memory_version,
                elapsed_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
                leftover: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    if opts.memory_version == 2 {
        tree.enable_memory_for_children()?; // on error the tree's Drop removes the scratch parent
    }
    progress(ProbeProgress::Started { scratch_parent: tree.local.clone() });

    let mut failure: Option<(u32, io::Error)> = None;
    let mut interrupted = false;
    for i in 0..opts.count {
        if opts.cancel.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        match fs::create_dir(tree.child_local(i)) {
            Ok(()) => {
                tree.children = i + 1;
                progress(ProbeProgress::Created { done: i + 1, total: opts.count });
            }
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
    }

    let created = tree.children;
    let cleanup = tree.remove_all(progress);

    let (failed_at, errno, mut error, exhausted) = match &failure {
        Some((i, e)) => (
            Some(*i),
            Some(io_errno_name(e)),
            Some(format!("mkdir {}: {e}", tree.child_host(*i).display())),
            e.raw_os_error().is_some_and(is_exhaustion_errno),
        ),
        None => (None, None, None, false),
    };
    if error.is_none() {
        error = cleanup.first_error;
    }
    let success = failure.is_none() && !interrupted && created == opts.count && cleanup.leftover.is_empty();
    Ok(ProbeReport {
        requested: opts.count,
        created,
        removed: cleanup.removed,
        success,
        failed_at,
        errno,
        error,
        exhausted,
        interrupted,
        scratch_parent: tree.host.display().to_string(),
        memory_version: opts.memory_version,
        elapsed_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
        leftover: cleanup.leftover,
    })
}

fn scratch_name() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("cgleak-probe-{}-{secs}", std::process::id())
}

fn check_memory_delegated(parent: &Path, host_parent: &Path) -> Result<(), ProbeError> {
    let local = parent.join("cgroup.subtree_control");
    let text = fs::read_to_string(&local).map_err(|source| ProbeError::ReadSubtreeControl {
        path: host_parent.join("cgroup.subtree_control"),
        source,
    })?;
    if text.split_whitespace().any(|c| c == "memory") {
        Ok(())
    } else {
        Err(ProbeError::MemoryNotDelegated { path: host_parent.join("cgroup.subtree_control") })
    }
}

/// What removing the tree achieved.
struct Cleanup {
    removed: u32,
    leftover: Vec<String>,
    first_error: Option<String>,
}

/// The scratch parent and its children `p0..p{children-1}`. Dropping it removes
/// whatever still exists, so a panic or an early return cannot leave memcgs behind.
struct ScratchTree {
    local: PathBuf,
    host: PathBuf,
    /// Children `p0..p{children-1}` exist (as far as we know).
    children: u32,
    /// The tree has been removed (or tried to be): Drop has nothing left to do.
    done: bool,
}

impl ScratchTree {
    fn create(local: PathBuf, host: PathBuf) -> Result<ScratchTree, ProbeError> {
        fs::create_dir(&local).map_err(|source| ProbeError::CreateScratch { path: host.clone(), source })?;
        Ok(ScratchTree { local, host, children: 0, done: false })
    }

    fn enable_memory_for_children(&self) -> Result<(), ProbeError> {
        use std::io::Write;
        // No `create`: the file always exists in cgroupfs; anywhere else this is an error.
        let path = self.local.join("cgroup.subtree_control");
        let host_path = self.host.join("cgroup.subtree_control");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| ProbeError::EnableMemory { path: host_path.clone(), source })?;
        f.write_all(b"+memory").map_err(|source| ProbeError::EnableMemory { path: host_path, source })
    }

    fn child_name(i: u32) -> String {
        format!("p{i}")
    }

    fn child_local(&self, i: u32) -> PathBuf {
        self.local.join(Self::child_name(i))
    }

    fn child_host(&self, i: u32) -> PathBuf {
        self.host.join(Self::child_name(i))
    }

    /// Remove the children in reverse order, then the scratch parent. Never stops
    /// early: each path that cannot be removed goes to `leftover`.
    fn remove_all(&mut self, progress: &mut dyn FnMut(ProbeProgress)) -> Cleanup {
        let mut out = Cleanup { removed: 0, leftover: Vec::new(), first_error: None };
        if self.done {
            return out;
        }
        let total = self.children;
        let note = |out: &mut Cleanup, host: &Path, e: io::Error| {
            out.leftover.push(host.display().to_string());
            if out.first_error.is_none() {
                out.first_error = Some(format!("rmdir {}: {e}", host.display()));
            }
        };
        while self.children > 0 {
            let i = self.children - 1;
            // Decrement first: if `progress` panics, Drop goes on with the next one.
            self.children = i;
            match rmdir_retrying_busy(&self.child_local(i)) {
                Ok(()) => out.removed += 1,
                Err(e) => note(&mut out, &self.child_host(i), e),
            }
            progress(ProbeProgress::Removed { done: total - i, total });
        }
        self.done = true;
        if let Err(e) = rmdir_retrying_busy(&self.local) {
            note(&mut out, &self.host, e);
        }
        out
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        if !self.done {
            self.remove_all(&mut |_| {});
        }
    }
}

/// rmdir, tried again on EBUSY; a directory already gone counts as removed.
fn rmdir_retrying_busy(path: &Path) -> io::Result<()> {
    let mut pause = RMDIR_EBUSY_FIRST_PAUSE;
    let mut tries = 0;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) && tries < RMDIR_EBUSY_RETRIES => {
                tries += 1;
                thread::sleep(pause);
                pause *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn opts_in(dir: &Path, count: u32, version: u8) -> ProbeOptions {
        ProbeOptions {
            count,
            parent: dir.to_path_buf(),
            host_name_of_parent: dir.to_path_buf(),
            memory_version: version,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn errno_names_and_descriptions() {
        assert_eq!(errno_name(Errno::NOSPC.raw_os_error()), "ENOSPC");
        assert_eq!(errno_name(Errno::NOMEM.raw_os_error()), "ENOMEM");
        assert_eq!(errno_name(Errno::BUSY.raw_os_error()), "EBUSY");
        assert_eq!(errno_name(Errno::ACCESS.raw_os_error()), "EACCES");
        assert_eq!(errno_name(4095), "errno 4095");
        assert_eq!(errno_code("ENOSPC"), Some(Errno::NOSPC.raw_os_error()));
        assert_eq!(errno_code("errno 4095"), Some(4095));
        assert_eq!(errno_code("EWHATEVER"), None);
        assert_eq!(describe_errno(Errno::NOSPC.raw_os_error()), "no space left on device");
        assert_eq!(describe_errno(Errno::BUSY.raw_os_error()), "device or resource busy");
    }

    #[test]
    fn exhaustion_errnos_are_those_of_the_kernel_eras() {
        for e in [Errno::NOSPC, Errno::NOMEM, Errno::BUSY] {
            assert!(is_exhaustion_errno(e.raw_os_error()), "{e:?}");
        }
        for e in [Errno::ACCESS, Errno::EXIST, Errno::AGAIN, Errno::NOENT] {
            assert!(!is_exhaustion_errno(e.raw_os_error()), "{e:?}");
        }
    }

    #[test]
    fn permission_errors_are_recognised() {
        let mk = |e: Errno| ProbeError::CreateScratch {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(e.raw_os_error()),
        };
        assert!(mk(Errno::ACCESS).is_permission());
        assert!(mk(Errno::PERM).is_permission());
        assert!(mk(Errno::ROFS).is_permission());
        assert!(!mk(Errno::NOENT).is_permission());
        assert!(!ProbeError::MemoryNotDelegated { path: PathBuf::from("/x") }.is_permission());
    }

    #[test]
    fn probe_on_a_plain_directory_creates_and_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = Vec::new();
        let r = run_probe(&opts_in(dir.path(), 25, 1), &mut |p| events.push(p)).unwrap();
        assert!(r.success, "{r:?}");
        assert_eq!((r.requested, r.created, r.removed), (25, 25, 25));
        assert_eq!((r.failed_at, r.errno.as_deref(), r.error.as_deref()), (None, None, None));
        assert!(!r.exhausted && !r.interrupted && r.leftover.is_empty());
        assert!(r.scratch_parent.starts_with(&dir.path().join("cgleak-probe-").display().to_string()));
        assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
        assert!(matches!(events[0], ProbeProgress::Started { .. }));
        assert_eq!(events[25], ProbeProgress::Created { done: 25, total: 25 });
        assert_eq!(events.last(), Some(&ProbeProgress::Removed { done: 25, total: 25 }));
        assert_eq!(events.len(), 1 + 25 + 25);
    }

    #[test]
    fn mkdir_failure_half_way_is_reported_with_index_and_errno() {
        let dir = tempfile::tempdir().unwrap();
        // A file where p10 goes makes its mkdir fail with EEXIST.
        let mut scratch = PathBuf::new();
        let r = run_probe(&opts_in(dir.path(), 50, 1), &mut |p| match p {
            ProbeProgress::Started { scratch_parent } => scratch = scratch_parent,
            ProbeProgress::Created { done: 10, .. } => fs::write(scratch.join("p10"), "").unwrap(),
            _ => {}
        })
        .unwrap();
        assert!(!r.success);
        assert_eq!((r.created, r.removed, r.failed_at), (10, 10, Some(10)));
        assert_eq!(r.errno.as_deref(), Some("EEXIST"));
        assert!(!r.exhausted);
        let err = r.error.unwrap();
        assert!(err.starts_with(&format!("mkdir {}/p10: ", r.scratch_parent)), "{err}");
        // The scratch parent still holds the obstacle, so it is reported as left over.
        assert_eq!(r.leftover, vec![r.scratch_parent.clone()]);
        assert_eq!(entries(&scratch), vec!["p10"]);
    }

    #[test]
    fn cancel_stops_creating_and_still_removes() {
        let dir = tempfile::tempdir().unwrap();
        let opts = opts_in(dir.path(), 100, 1);
        let cancel = opts.cancel.clone();
        let r = run_probe(&opts, &mut |p| {
            if p == (ProbeProgress::Created { done: 7, total: 100 }) {
                cancel.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
        assert!(r.interrupted && !r.success, "{r:?}");
        assert_eq!((r.created, r.removed, r.failed_at), (7, 7, None));
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_panicking_callback_still_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let opts = opts_in(dir.path(), 30, 1);
        let res = catch_unwind(AssertUnwindSafe(|| {
            run_probe(&opts, &mut |p| {
                if p == (ProbeProgress::Created { done: 12, total: 30 }) {
                    panic!("callback failed");
                }
            })
        }));
        assert!(res.is_err());
        assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
    }

    #[test]
    fn a_panic_during_removal_is_finished_by_drop() {
        let dir = tempfile::tempdir().unwrap();
        let opts = opts_in(dir.path(), 30, 1);
        let res = catch_unwind(AssertUnwindSafe(|| {
            run_probe(&opts, &mut |p| {
                if p == (ProbeProgress::Removed { done: 3, total: 30 }) {
                    panic!("callback failed");
                }
            })
        }));
        assert!(res.is_err());
        assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
    }

    #[test]
    fn guard_removes_what_exists_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("scratch");
        let mut tree = ScratchTree::create(local.clone(), PathBuf::from("/host/scratch")).unwrap();
        for i in 0..5 {
            fs::create_dir(tree.child_local(i)).unwrap();
            tree.children = i + 1;
        }
        // p2 vanished behind our back: that counts as removed, not as a failure.
        fs::remove_dir(tree.child_local(2)).unwrap();
        drop(tree);
        assert!(!local.exists());
    }

    #[test]
    fn leftovers_are_named_by_host_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = ScratchTree::create(dir.path().join("s"), PathBuf::from("/sys/fs/cgroup/memory/s")).unwrap();
        fs::create_dir(tree.child_local(0)).unwrap();
        fs::write(tree.child_local(0).join("busy"), "").unwrap();
        tree.children = 1;
        let c = tree.remove_all(&mut |_| {});
        assert_eq!(c.removed, 0);
        assert_eq!(c.leftover, vec!["/sys/fs/cgroup/memory/s/p0", "/sys/fs/cgroup/memory/s"]);
        assert!(c.first_error.unwrap().starts_with("rmdir /sys/fs/cgroup/memory/s/p0: "));
        fs::remove_file(dir.path().join("s/p0/busy")).unwrap();
        drop(tree); // done: must not try again
        assert!(dir.path().join("s/p0").exists());
    }

    #[test]
    fn missing_or_file_parent_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, "").unwrap();
        for parent in [dir.path().join("nonexistent"), file.clone()] {
            let e = run_probe(&opts_in(&parent, 3, 1), &mut |_| {}).unwrap_err();
            assert!(matches!(e, ProbeError::CreateScratch { .. }), "{e:?}");
            assert!(e.to_string().contains(&parent.display().to_string()), "{e}");
            assert!(!e.is_permission());
        }
        assert_eq!(entries(dir.path()), vec!["a-file"]);
    }

    #[test]
    fn v2_needs_memory_in_the_parents_subtree_control() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.subtree_control"), "cpu io\n").unwrap();
        let e = run_probe(&opts_in(dir.path(), 3, 2), &mut |_| {}).unwrap_err();
        assert!(matches!(e, ProbeError::MemoryNotDelegated { .. }), "{e:?}");
        assert!(e.to_string().contains("cgroup.subtree_control"), "{e}");
        assert_eq!(entries(dir.path()), vec!["cgroup.subtree_control"]);

        let bare = tempfile::tempdir().unwrap();
        let e = run_probe(&opts_in(bare.path(), 3, 2), &mut |_| {}).unwrap_err();
        assert!(matches!(e, ProbeError::ReadSubtreeControl { .. }), "{e:?}");
    }

    #[test]
    fn v2_failure_to_enable_memory_removes_the_scratch_parent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        // A plain directory has no cgroup.subtree_control in the new scratch parent.
        let e = run_probe(&opts_in(dir.path(), 3, 2), &mut |_| {}).unwrap_err();
        assert!(matches!(e, ProbeError::EnableMemory { .. }), "{e:?}");
        assert!(e.to_string().contains("cgleak-probe-"), "{e}");
        assert_eq!(entries(dir.path()), vec!["cgroup.subtree_control"]);
    }

    #[test]
    fn unsupported_version_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = run_probe(&opts_in(dir.path(), 3, 3), &mut |_| {}).unwrap_err();
        assert!(matches!(e, ProbeError::UnsupportedVersion(3)));
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn report_describes_its_errno() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = run_probe(&opts_in(dir.path(), 1, 1), &mut |_| {}).unwrap();
        assert_eq!(r.errno_description(), None);
        r.errno = Some("ENOSPC".into());
        assert_eq!(r.errno_description().as_deref(), Some("no space left on device"));
    }
}

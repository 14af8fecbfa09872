//! Probe: prove that N memcgs can still be created, by creating and removing them; or,
//! with `to_limit`, create them until mkdir fails for lack of IDs, which measures the
//! headroom exactly where it cannot be counted (3.10 and el7 kernels: /proc/cgroups
//! forgets dying memcgs at rmdir while they keep their IDs, docs/kernel-facts.md section 2).
//!
//! The children live under a scratch parent of our own (`cgleak-probe-<pid>-<secs>`),
//! so nothing of the host's is touched. On cgroup v1 nothing is written at all: a
//! write to `memory.kmem.limit_in_bytes` on 3.10 switches kmem accounting on for good
//! and children inherit it (docs/kernel-facts.md section 3), which is the very leak we look
//! for. Whatever was created is removed again, also when the caller cancels, the
//! progress callback panics, or a step fails half-way (see [`ScratchTree`]'s Drop).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgleak_readers::cgroupfs;
use serde::Serialize;

use crate::cgroup_tree::remove_cgroup;

/// What to probe and where.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// How many child memcgs to create; with `to_limit`, the most it tries before concluding
    /// that there is no ID limit to meet (callers pass the ID space, 65535).
    pub count: u32,
    /// Create children until mkdir fails with an exhaustion errno, then remove them at once.
    pub to_limit: bool,
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
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeReport {
    /// `count`; with `to_limit`, the most children it would have tried.
    pub requested: u32,
    /// How many child mkdirs succeeded.
    pub created: u32,
    /// How many children were removed again.
    pub removed: u32,
    /// All `requested` created and everything removed; with `to_limit`, the limit met (headroom
    /// measured) and everything removed.
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
    /// Created children until the ID space was full (`--to-limit`).
    pub to_limit: bool,
    /// The free memcg IDs when the probe started, known exactly once a mkdir failed for lack of
    /// IDs: the children created plus the scratch parent, which took an ID too (0 when the
    /// scratch parent's own mkdir failed). None when no mkdir met the limit.
    pub headroom: Option<u32>,
    /// How long the node had no free memcg ID, in ms: from the return of the last mkdir that
    /// took an ID (the next one failed) until a mkdir succeeded again after the first removals.
    /// None when the probe did not fill the ID space itself (headroom 0, or no limit met), or no
    /// memcg could be created within [`FREE_WAIT`] of removing everything.
    pub no_free_id_ms: Option<f64>,
    /// Memcgs removed (children, then the scratch parent) before a mkdir succeeded again: 1 when
    /// the first removal gave its ID back at once.
    pub removals_until_free: Option<u32>,
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
        self.io_error().and_then(io::Error::raw_os_error).is_some_and(cgleak_readers::errno::is_not_permitted)
    }
}

/// The errnos a memcg mkdir returns when the ID space is full, by kernel era
/// (docs/kernel-facts.md section 1): ENOSPC (3.10, 5.4.41 .. 6.11), ENOMEM (RHEL7, 4.7 .. 4.19),
/// EBUSY (6.12+, xarray): the model's [`cgleak_model::era::Errno`].
pub fn is_exhaustion_errno(code: i32) -> bool {
    cgleak_model::era::Errno::from_raw(code).is_some()
}

// Names and words of errnos come from the one table; these are its names in the probe's terms.
pub use cgleak_readers::errno::{code as errno_code, message as describe_errno, name as errno_name};
use cgleak_readers::errno::name_of as io_errno_name;

/// How long, once everything is removed, a mkdir is retried for an ID to come back. 4.7+ release
/// the ID at css offline (mem_cgroup_css_offline -> mem_cgroup_id_put), which runs from a
/// workqueue after an RCU grace period, so the release lags the rmdir; 3.10 and el7 release it
/// when the memcg is freed (__mem_cgroup_free), later still.
pub const FREE_WAIT: Duration = Duration::from_secs(10);

/// Create the scratch parent and `count` children in it, then remove them all.
pub fn run_probe(opts: &ProbeOptions, progress: &mut dyn FnMut(ProbeProgress)) -> Result<ProbeReport, ProbeError> {
    let started = Instant::now();
    match opts.memory_version {
        1 => {}
        // docs/kernel-facts.md section 7: in v2 a child gets a memcg only where its parent's
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
                to_limit: opts.to_limit,
                // Full before the probe began: not a window of its making, so none is measured.
                headroom: Some(0),
                no_free_id_ms: None,
                removals_until_free: None,
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
    // When the ID space turns out full, it has been so since the last mkdir that took an ID.
    let mut last_id_taken = Instant::now();
    for i in 0..opts.count {
        if opts.cancel.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        match cgroupfs::create_dir(&tree.child_local(i)) {
            Ok(()) => {
                last_id_taken = Instant::now();
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
    let at_limit = failure.as_ref().is_some_and(|(_, e)| e.raw_os_error().is_some_and(is_exhaustion_errno));
    // The node cannot create a memcg until we give an ID back: removal starts right here, and
    // a mkdir after each removal tells when a memcg can be created again.
    let mut watch = at_limit.then(|| {
        let name = format!("{name}-free");
        FreeWatch::new(last_id_taken, opts.parent.join(&name), opts.host_name_of_parent.join(&name))
    });
    let cleanup = tree.remove_all_watching(progress, watch.as_mut());

    let (failed_at, errno, mut error, exhausted) = match &failure {
        Some((i, e)) => (
            Some(*i),
            Some(io_errno_name(e)),
            Some(format!("mkdir {}: {e}", tree.child_host(*i).display())),
            at_limit,
        ),
        None => (None, None, None, false),
    };
    let no_limit_met = opts.to_limit && failure.is_none() && !interrupted;
    if no_limit_met {
        error = Some(format!(
            "mkdir still succeeded after {created} memcgs under {}: no memcg ID limit was met (is it a memory cgroup hierarchy?)",
            tree.host.display()
        ));
    }
    if error.is_none() {
        error = cleanup.first_error;
    }
    let success = if opts.to_limit {
        at_limit && !interrupted && cleanup.leftover.is_empty()
    } else {
        failure.is_none() && !interrupted && created == opts.count && cleanup.leftover.is_empty()
    };
    let (no_free_id_ms, removals_until_free) = match watch.map(|w| w.state) {
        Some(FreeCheck::Free { after, removals }) => (Some((after.as_secs_f64() * 1e6).round() / 1e3), Some(removals)),
        _ => (None, None),
    };
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
        to_limit: opts.to_limit,
        headroom: at_limit.then_some(created + 1),
        no_free_id_ms,
        removals_until_free,
    })
}

fn scratch_name() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("cgleak-probe-{}-{secs}", std::process::id())
}

fn check_memory_delegated(parent: &Path, host_parent: &Path) -> Result<(), ProbeError> {
    let local = parent.join("cgroup.subtree_control");
    let text = cgroupfs::read_file(&local).map_err(|e| ProbeError::ReadSubtreeControl {
        path: host_parent.join("cgroup.subtree_control"),
        source: match e {
            cgleak_readers::ReadError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        },
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

impl Cleanup {
    fn left_over(&mut self, host: &Path, e: io::Error) {
        self.leftover.push(host.display().to_string());
        if self.first_error.is_none() {
            self.first_error = Some(format!("rmdir {}: {e}", host.display()));
        }
    }
}

/// Whether a memcg could be created again after the ID space was found full.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FreeCheck {
    Waiting,
    /// A mkdir succeeded `after` the space was full, once `removals` memcgs had been removed.
    Free { after: Duration, removals: u32 },
    /// No answer: no ID came back within [`FREE_WAIT`], or the mkdir failed for another reason.
    Unmeasured,
}

/// After a mkdir failed for lack of IDs: a mkdir of a sibling of the scratch parent after each
/// removal, until one succeeds (it is removed again at once; for that moment it holds the ID).
struct FreeWatch {
    full_since: Instant,
    local: PathBuf,
    host: PathBuf,
    removals: u32,
    state: FreeCheck,
}

impl FreeWatch {
    fn new(full_since: Instant, local: PathBuf, host: PathBuf) -> FreeWatch {
        FreeWatch { full_since, local, host, removals: 0, state: FreeCheck::Waiting }
    }

    fn removed_one(&mut self, out: &mut Cleanup) {
        self.removals += 1;
        self.try_once(out);
    }

    /// One mkdir; false while it still fails for lack of IDs.
    fn try_once(&mut self, out: &mut Cleanup) -> bool {
        if self.state != FreeCheck::Waiting {
            return true;
        }
        match cgroupfs::create_dir(&self.local) {
            Ok(()) => {
                self.state = FreeCheck::Free { after: self.full_since.elapsed(), removals: self.removals };
                if let Err(e) = remove_cgroup(&self.local) {
                    out.left_over(&self.host, e);
                }
                true
            }
            Err(e) if e.raw_os_error().is_some_and(is_exhaustion_errno) => false,
            Err(_) => {
                self.state = FreeCheck::Unmeasured;
                true
            }
        }
    }

    /// Everything is removed: retry, with short pauses, until an ID is back or `limit` passes.
    fn wait(&mut self, out: &mut Cleanup, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_micros(50);
        while !self.try_once(out) {
            if Instant::now() >= deadline {
                self.state = FreeCheck::Unmeasured;
                return;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// The scratch parent and its children `p0..p{children-1}`. Dropping it removes
/// whatever still exists, so a panic or an early return cannot leave memcgs behind. It
/// removes only the children it made (never one a test or another tool put there), each
/// with the one cgroup removal ([`remove_cgroup`]: EBUSY waited out, checked for cgroupfs).
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
        cgroupfs::create_dir(&local).map_err(|source| ProbeError::CreateScratch { path: host.clone(), source })?;
        Ok(ScratchTree { local, host, children: 0, done: false })
    }

    fn enable_memory_for_children(&self) -> Result<(), ProbeError> {
        // Never created: the file always exists in cgroupfs; anywhere else this is an error.
        let path = self.local.join("cgroup.subtree_control");
        let host_path = self.host.join("cgroup.subtree_control");
        cgroupfs::write_file(&path, b"+memory").map_err(|source| ProbeError::EnableMemory { path: host_path, source })
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
        self.remove_all_watching(progress, None)
    }

    /// [`Self::remove_all`], telling `watch` of each removal (before `progress`, so the check
    /// comes as soon as an ID may be back), and waiting for it at the end if need be.
    fn remove_all_watching(&mut self, progress: &mut dyn FnMut(ProbeProgress), mut watch: Option<&mut FreeWatch>) -> Cleanup {
        let mut out = Cleanup { removed: 0, leftover: Vec::new(), first_error: None };
        if self.done {
            return out;
        }
        let total = self.children;
        while self.children > 0 {
            let i = self.children - 1;
            // Decrement first: if `progress` panics, Drop goes on with the next one.
            self.children = i;
            match remove_cgroup(&self.child_local(i)) {
                Ok(()) => {
                    out.removed += 1;
                    if let Some(w) = watch.as_deref_mut() {
                        w.removed_one(&mut out);
                    }
                }
                Err(e) => out.left_over(&self.child_host(i), e),
            }
            progress(ProbeProgress::Removed { done: total - i, total });
        }
        self.done = true;
        match remove_cgroup(&self.local) {
            Ok(()) => {
                if let Some(w) = watch.as_deref_mut() {
                    w.removed_one(&mut out);
                }
            }
            Err(e) => out.left_over(&self.host, e),
        }
        if let Some(w) = watch {
            w.wait(&mut out, FREE_WAIT);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;
    use std::fs;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn opts_in(dir: &Path, count: u32, version: u8) -> ProbeOptions {
        // A plain directory stands in for a hierarchy: tmpfs, not cgroupfs.
        cgleak_readers::beneath::register_fixture_root(dir);
        ProbeOptions {
            count,
            parent: dir.to_path_buf(),
            host_name_of_parent: dir.to_path_buf(),
            memory_version: version,
            cancel: Arc::new(AtomicBool::new(false)),
            to_limit: false,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
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
        cgleak_readers::beneath::register_fixture_root(dir.path());
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
        cgleak_readers::beneath::register_fixture_root(dir.path());
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
    fn to_limit_without_a_limit_stops_at_its_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = opts_in(dir.path(), 20, 1);
        opts.to_limit = true;
        let r = run_probe(&opts, &mut |_| {}).unwrap();
        assert!(!r.success && r.to_limit, "{r:?}");
        assert_eq!((r.requested, r.created, r.removed, r.failed_at), (20, 20, 20, None));
        assert!(!r.exhausted);
        assert_eq!((r.headroom, r.no_free_id_ms, r.removals_until_free), (None, None, None));
        let e = r.error.unwrap();
        assert!(e.contains("mkdir still succeeded after 20 memcgs") && e.contains("no memcg ID limit"), "{e}");
        assert!(entries(dir.path()).is_empty(), "left behind: {:?}", entries(dir.path()));
    }

    #[test]
    fn to_limit_stops_at_other_errnos_like_a_count_probe() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = opts_in(dir.path(), 100, 1);
        opts.to_limit = true;
        let mut scratch = PathBuf::new();
        let r = run_probe(&opts, &mut |p| match p {
            ProbeProgress::Started { scratch_parent } => scratch = scratch_parent,
            ProbeProgress::Created { done: 5, .. } => fs::write(scratch.join("p5"), "").unwrap(),
            _ => {}
        })
        .unwrap();
        assert!(!r.success && !r.exhausted, "{r:?}");
        assert_eq!((r.created, r.failed_at, r.errno.as_deref()), (5, Some(5), Some("EEXIST")));
        assert_eq!((r.headroom, r.no_free_id_ms), (None, None), "EEXIST says nothing about IDs");
        fs::remove_file(scratch.join("p5")).unwrap();
        fs::remove_dir(&scratch).unwrap();
    }

    #[test]
    fn to_limit_cancel_stops_filling_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = opts_in(dir.path(), 1000, 1);
        opts.to_limit = true;
        let cancel = opts.cancel.clone();
        let r = run_probe(&opts, &mut |p| {
            if p == (ProbeProgress::Created { done: 9, total: 1000 }) {
                cancel.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
        assert!(r.interrupted && !r.success && r.error.is_none(), "{r:?}");
        assert_eq!((r.created, r.removed, r.headroom), (9, 9, None));
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn free_watch_removes_its_check_and_counts_removals() {
        let dir = tempfile::tempdir().unwrap();
        cgleak_readers::beneath::register_fixture_root(dir.path());
        let mut out = Cleanup { removed: 0, leftover: Vec::new(), first_error: None };
        let mut w = FreeWatch::new(Instant::now(), dir.path().join("free"), PathBuf::from("/h/free"));
        w.removed_one(&mut out);
        w.removed_one(&mut out); // answered already: no second mkdir
        let FreeCheck::Free { removals, .. } = w.state else { panic!("{:?}", w.state) };
        assert_eq!(removals, 1);
        assert!(entries(dir.path()).is_empty() && out.leftover.is_empty());

        // A mkdir failing for another reason than IDs (ENOENT) ends the watch unmeasured, at once.
        let mut w = FreeWatch::new(Instant::now(), dir.path().join("no/free"), PathBuf::from("/h/no/free"));
        let t = Instant::now();
        w.wait(&mut out, Duration::from_secs(5));
        assert_eq!(w.state, FreeCheck::Unmeasured);
        assert!(t.elapsed() < Duration::from_secs(1));
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

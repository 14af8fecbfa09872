//! Removing a cgroup subtree: rmdir deepest first, because cgroupfs refuses to remove a
//! cgroup that still has children (EBUSY), and rmdir takes a cgroup's control files with it.
//!
//! The one removal of cgleak: the probe's scratch tree, gc's orphaned pods, migrate's
//! cgroups, the lab's teardown, and the scratch parents of the tests, the benches and the
//! guest lab all go through it. Every rmdir goes through [`cgroupfs::remove_dir`]: the
//! path is resolved beneath `/` with no symlink on the way, and on a kernel host the
//! directory must be on cgroupfs (a fixture tree passes only beneath a registered root).

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::io::Errno;

use cgleak_readers::cgroupfs;

/// rmdir of a cgroup that is still busy (a task exiting, a runtime's removal racing
/// ours) is tried again this many times, [`RMDIR_PAUSE`] apart.
pub const RMDIR_TRIES: u32 = 100;
pub const RMDIR_PAUSE: Duration = Duration::from_millis(20);

/// What to do while rmdir of a cgroup fails with EBUSY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// Wait for its tasks to finish exiting.
    Wait,
    /// SIGKILL the tasks in it: only for trees whose every task the caller started.
    KillTasks,
    /// Leave it, and end the removal at the first directory that cannot be removed: a task
    /// or a child arrived since the caller checked, so the tree is in use again (gc).
    Stop,
}

/// What [`remove_tree_deepest_first`] did.
#[derive(Debug, Default)]
pub struct TreeRemoval {
    /// Directories removed.
    pub removed: u64,
    /// Tasks SIGKILLed ([`WhenBusy::KillTasks`]).
    pub killed: u32,
    /// Directories that stayed, deepest first, each with the error of its last rmdir.
    pub leftover: Vec<(PathBuf, io::Error)>,
}

pub use cgleak_readers::cgroupfs::subtree_dirs;

impl TreeRemoval {
    /// The leftovers as "path: error", one a line, for a cleanup message.
    pub fn leftover_lines(&self) -> Vec<String> {
        self.leftover.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect()
    }
}

/// Remove the cgroup `top` and everything below it, deepest first. A directory already
/// gone counts as neither removed nor left over. With [`WhenBusy::Stop`] the first
/// directory that cannot be removed is the only leftover and ends the removal.
pub fn remove_tree_deepest_first(top: &Path, when_busy: WhenBusy) -> TreeRemoval {
    let mut r = TreeRemoval::default();
    for d in subtree_dirs(top).into_iter().rev() {
        match rmdir_retrying(&d, when_busy, &mut r.killed) {
            Ok(true) => r.removed += 1,
            Ok(false) => {}
            Err(e) => {
                r.leftover.push((d, e));
                if when_busy == WhenBusy::Stop {
                    break;
                }
            }
        }
    }
    r
}

/// rmdir one cgroup, tried again while EBUSY; a directory already gone is not an error.
pub fn remove_cgroup(dir: &Path) -> io::Result<()> {
    rmdir_retrying(dir, WhenBusy::Wait, &mut 0).map(|_| ())
}

/// rmdir `dir`, tried again while EBUSY: true when it removed it, false when it was gone.
/// Tasks SIGKILLed on the way are added to `killed`.
fn rmdir_retrying(dir: &Path, when_busy: WhenBusy, killed: &mut u32) -> io::Result<bool> {
    let mut tries = 0;
    loop {
        // No symlink on the way, a directory on cgroupfs (beneath::check_cgroupfs).
        match cgroupfs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) && when_busy != WhenBusy::Stop && tries < RMDIR_TRIES => {
                tries += 1;
                if when_busy == WhenBusy::KillTasks {
                    *killed += kill_tasks_of(dir);
                }
                thread::sleep(RMDIR_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// SIGKILL the pids in `cgroup.procs` of one cgroup; how many signals were delivered.
fn kill_tasks_of(dir: &Path) -> u32 {
    let pids: Vec<i32> = cgroupfs::read_file(&dir.join("cgroup.procs"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    let mut killed = 0;
    for pid in pids {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn removal_is_deepest_first_and_reports_leftovers() {
        let t = tempfile::tempdir().unwrap();
        cgleak_readers::beneath::register_fixture_root(t.path());
        let top = t.path().join("s");
        fs::create_dir_all(top.join("kubepods/burstable/poda/c1")).unwrap();
        fs::create_dir_all(top.join("kubepods/podb")).unwrap();
        let r = remove_tree_deepest_first(&top, WhenBusy::KillTasks);
        assert_eq!((r.removed, r.killed), (6, 0));
        assert!(r.leftover.is_empty() && !top.exists());

        fs::create_dir_all(top.join("x")).unwrap();
        fs::write(top.join("x/not-a-cgroup-file"), "").unwrap();
        let r = remove_tree_deepest_first(&top, WhenBusy::Wait);
        assert_eq!(r.removed, 0);
        let left: Vec<&PathBuf> = r.leftover.iter().map(|(p, _)| p).collect();
        assert_eq!(left, vec![&top.join("x"), &top]);
    }

    #[test]
    fn stop_ends_the_removal_at_the_first_leftover() {
        let t = tempfile::tempdir().unwrap();
        cgleak_readers::beneath::register_fixture_root(t.path());
        let top = t.path().join("pod");
        for c in ["a", "b", "c"] {
            fs::create_dir_all(top.join(c)).unwrap();
        }
        // One container cannot go (a file stands for a task): the walk stops there.
        let busy = subtree_dirs(&top).into_iter().rev().nth(1).unwrap();
        fs::write(busy.join("task"), "").unwrap();
        let r = remove_tree_deepest_first(&top, WhenBusy::Stop);
        assert_eq!(r.removed, 1, "only the container removed before the busy one");
        assert_eq!(r.leftover.len(), 1);
        assert_eq!(r.leftover[0].0, busy);
        assert_eq!(r.leftover_lines(), vec![format!("{}: {}", busy.display(), r.leftover[0].1)]);
        let left = subtree_dirs(&top).len();
        assert_eq!(left, 3, "the pod, the busy container and the one not reached stay");
    }

    #[test]
    fn a_plain_directory_outside_a_fixture_root_is_refused() {
        // Not cgroupfs and not beneath a registered fixture root: never removed.
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("not-a-cgroup");
        fs::create_dir(&top).unwrap();
        let e = remove_cgroup(&top).unwrap_err();
        assert!(e.to_string().contains("not on a cgroup filesystem"), "{e}");
        let r = remove_tree_deepest_first(&top, WhenBusy::Wait);
        assert_eq!((r.removed, r.leftover.len()), (0, 1));
        assert!(top.is_dir());
    }

    #[test]
    fn a_cgroup_already_gone_is_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        cgleak_readers::beneath::register_fixture_root(t.path());
        let gone = t.path().join("gone");
        remove_cgroup(&gone).unwrap();
        let r = remove_tree_deepest_first(&gone, WhenBusy::Wait);
        assert_eq!(r.removed, 0);
        assert!(r.leftover.is_empty());
    }
}

//! Removing a cgroup subtree that cgleak (or a test) made: rmdir deepest first,
//! because cgroupfs refuses to remove a cgroup that still has children, and rmdir
//! takes a cgroup's control files with it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::io::Errno;

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

/// `dir` and its subdirectories, parents before children; vanished ones are skipped.
pub fn subtree_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Remove the cgroup `top` and everything below it, deepest first. A directory already
/// gone counts as neither removed nor left over.
pub fn remove_tree_deepest_first(top: &Path, when_busy: WhenBusy) -> TreeRemoval {
    let mut r = TreeRemoval::default();
    for d in subtree_dirs(top).into_iter().rev() {
        match rmdir_retrying(&d, when_busy, &mut r.killed) {
            Ok(true) => r.removed += 1,
            Ok(false) => {}
            Err(e) => r.leftover.push((d, e)),
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
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) && tries < RMDIR_TRIES => {
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
    let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
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

    #[test]
    fn removal_is_deepest_first_and_reports_leftovers() {
        let t = tempfile::tempdir().unwrap();
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
    fn a_cgroup_already_gone_is_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        let gone = t.path().join("gone");
        remove_cgroup(&gone).unwrap();
        let r = remove_tree_deepest_first(&gone, WhenBusy::Wait);
        assert_eq!(r.removed, 0);
        assert!(r.leftover.is_empty());
    }
}

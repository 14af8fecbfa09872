//! Moving every task of one v1 cgroup into another.
//!
//! Thread by thread, through `tasks` (a TID written there moves that thread alone,
//! docs/kernel-facts.md section 5): writing a TGID to `cgroup.procs` would also pull in the
//! process's threads that live in other cgroups, which are not ours to move. Tasks fork
//! while they are moved (a child starts in its parent's cgroup of the moment), so the
//! source is read again until it is empty. A task that exits meanwhile (ESRCH) is not
//! an error.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgleak_readers::cgroupfs;

/// Rounds of "read the source, move what is there" before giving up on a source that
/// never empties (a fork bomb would keep it busy forever).
pub const MAX_ROUNDS: u32 = 10_000;
/// And the time it may take in all.
pub const MAX_TIME: Duration = Duration::from_secs(30);

/// What one move did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Threads written to the destination.
    pub threads: u32,
    /// Rounds it took (1 when nothing forked meanwhile).
    pub rounds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("moving task {tid} into {}: {source}", .path.display())]
    Write {
        tid: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} still has tasks after {rounds} rounds in {secs:.1} s of moving them out (they fork faster than they can be moved)", .path.display())]
    NeverEmpty { path: PathBuf, rounds: u32, secs: f64 },
}

/// The TIDs in `<cgroup>/tasks`; a cgroup that is gone has none.
pub fn read_tasks(cgroup: &Path) -> Result<Vec<u32>, MoveError> {
    let path = cgroup.join("tasks");
    match cgroupfs::read_file(&path) {
        Ok(t) => Ok(t.split_whitespace().filter_map(|p| p.parse().ok()).collect()),
        Err(e) if e.is_gone() => Ok(Vec::new()),
        Err(cgleak_readers::ReadError::Io { source, .. }) => Err(MoveError::Read { path, source }),
        Err(e) => Err(MoveError::Read { path, source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()) }),
    }
}

/// Move every thread in `from` into `to`, until `from` is empty.
pub fn move_all(from: &Path, to: &Path) -> Result<Moved, MoveError> {
    let dest = to.join("tasks");
    let started = Instant::now();
    let mut moved = Moved::default();
    loop {
        let tids = read_tasks(from)?;
        if tids.is_empty() {
            return Ok(moved);
        }
        moved.rounds += 1;
        if moved.rounds > MAX_ROUNDS || started.elapsed() > MAX_TIME {
            return Err(MoveError::NeverEmpty { path: from.to_path_buf(), rounds: moved.rounds - 1, secs: started.elapsed().as_secs_f64() });
        }
        for tid in tids {
            // One write per TID: the kernel takes one per write(2).
            match cgroupfs::write_file(&dest, tid.to_string().as_bytes()) {
                Ok(()) => moved.threads += 1,
                // Exited since it was listed.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
                Err(e) => return Err(MoveError::Write { tid, path: dest.clone(), source: e }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;

    #[test]
    fn a_gone_cgroup_has_no_tasks_and_unreadable_tasks_are_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_tasks(&t.path().join("gone")).unwrap(), Vec::<u32>::new());
        fs::create_dir(t.path().join("tasks")).unwrap();
        let e = read_tasks(t.path()).unwrap_err().to_string();
        assert!(e.contains("/tasks"), "{e}");
    }
}

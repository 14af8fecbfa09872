//! One fixer per node: an exclusive flock(2) on `<state-dir>/fix.lock`. The kernel drops
//! the lock when its holder dies, however it dies, so a crashed fixer never blocks the
//! next one (which then finds the unfinished journal instead).
//!
//! The file is opened in the checked state directory with `O_NOFOLLOW` and must be a
//! regular file of one link ([`super::state`]): writing the holder's name truncates it,
//! which must never reach another file through a link.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use super::state::{Open, StateDir, StateError};

pub const LOCK_FILE: &str = "fix.lock";

/// Held while a fix runs; released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct FixLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another cgleak fix is running on this node ({holder}): {} is locked; wait for it, or run with --wait",
        .path.display()
    )]
    Held { path: PathBuf, holder: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl LockError {
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            LockError::Io { source, .. } => Some(source),
            LockError::State(s) => s.io_error(),
            LockError::Held { .. } => None,
        }
    }
}

impl FixLock {
    /// Take the lock in `state_dir` (created if missing). With `wait`, block until it is
    /// free; without, fail at once with [`LockError::Held`] naming the holder.
    pub fn acquire(state_dir: &Path, what: &str, wait: bool) -> Result<FixLock, LockError> {
        let io_err = |path: &Path, source: io::Error| LockError::Io { path: path.to_path_buf(), source };
        let dir = StateDir::create(state_dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file: File = dir.open_file(LOCK_FILE, Open::Lock)?.expect("the lock is made when missing");
        let op = if wait { FlockOperation::LockExclusive } else { FlockOperation::NonBlockingLockExclusive };
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    let holder = if holder.is_empty() { "holder unknown".to_string() } else { holder.to_string() };
                    return Err(LockError::Held { path, holder });
                }
                Err(e) => return Err(io_err(&path, e.into())),
            }
        }
        // Who holds it, for the message a second fixer prints.
        let me = format!("pid {}, {what}", std::process::id());
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(me.as_bytes())).map_err(|e| io_err(&path, e))?;
        Ok(FixLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name_until_it_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let first = FixLock::acquire(t.path(), "fix gc", false).unwrap();
        // flock locks belong to the open file description: a second open conflicts even in one process.
        let e = FixLock::acquire(t.path(), "fix reclaim", false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}, fix gc", std::process::id())) && msg.contains("--wait"), "{msg}");
        drop(first);
        FixLock::acquire(t.path(), "fix reclaim", false).unwrap();
    }

    #[test]
    fn a_linked_lock_is_refused_and_its_target_left_as_it_was() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("precious");
        std::fs::write(&target, "do not truncate").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join(LOCK_FILE)).unwrap();
        let e = FixLock::acquire(t.path(), "fix gc", false).unwrap_err().to_string();
        assert!(e.contains(&t.path().join(LOCK_FILE).display().to_string()) && e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not truncate");
        // Nor through a hard link.
        std::fs::remove_file(t.path().join(LOCK_FILE)).unwrap();
        let inside = t.path().join("inside");
        std::fs::write(&inside, "keep too").unwrap();
        std::fs::hard_link(&inside, t.path().join(LOCK_FILE)).unwrap();
        let e = FixLock::acquire(t.path(), "fix gc", false).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        assert_eq!(std::fs::read_to_string(&inside).unwrap(), "keep too");
    }
}

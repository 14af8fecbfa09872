//! Where the fixer and the agent keep their state, and how the fixer opens its own.
//!
//! The fixer's state (journal, lock, nokmem backups, archived journals, reclaim stamp) is
//! what `cgleak fix --resume` carries on from, so it lives apart from the agent's: in
//! [`FIX_STATE_DIR`] under the host root, a directory root alone may change (0700 when
//! cgleak makes it), never mounted into the agent's pod. The agent keeps its history and
//! its own reclaim's journal, lock and stamp in [`AGENT_STATE_DIR`]. Both were kept in
//! [`LEGACY_STATE_DIR`] directly before; what is there is read, never carried out.
//!
//! A [`StateDir`] is opened component by component from `/` with `O_NOFOLLOW`
//! (`openat`, which 3.10 has: `openat2`'s `RESOLVE_NO_SYMLINKS` came in 5.6), so no
//! symlink anywhere on its path is followed, and it is refused unless it is owned by root
//! (or by this process's user) and not writable by group or others. Files in it are opened
//! relative to it, again with `O_NOFOLLOW`, and checked the same way; a file written
//! in place (the lock, an appended journal) must also have one link only, so that a hard
//! link can never make a write land on another file.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use cgleak_readers::HostPaths;

/// The fixer's state directory, as the host names it (`fix --state-dir` by default,
/// under `--host-root`).
pub const FIX_STATE_DIR: &str = "/var/lib/cgleak/fix";
/// The agent's (`agent --state-dir`, and where `status` and `check` read its history).
pub const AGENT_STATE_DIR: &str = "/var/lib/cgleak/agent";
/// The old layout: the agent's history and the fixer's state side by side. Read only.
pub const LEGACY_STATE_DIR: &str = "/var/lib/cgleak";

/// The fixer's state directory of `host` (`<host-root>/var/lib/cgleak/fix`).
pub fn fix_state_dir(host: &HostPaths) -> PathBuf {
    host.host(FIX_STATE_DIR)
}

/// The agent's state directory of `host` (`<host-root>/var/lib/cgleak/agent`).
pub fn agent_state_dir(host: &HostPaths) -> PathBuf {
    host.host(AGENT_STATE_DIR)
}

/// The old layout's directory of `host` (`<host-root>/var/lib/cgleak`).
pub fn legacy_state_dir(host: &HostPaths) -> PathBuf {
    host.host(LEGACY_STATE_DIR)
}

/// Errors of the state directory; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not a place to keep what a later `--resume` carries out.
    #[error(
        "{}: {problem}: the fixer keeps its state only where root alone can change it, and follows no link to it; {remedy}",
        .path.display()
    )]
    Unsafe { path: PathBuf, problem: String, remedy: String },
}

impl StateError {
    fn io(path: &Path, e: impl Into<io::Error>) -> StateError {
        StateError::Io { path: path.to_path_buf(), source: e.into() }
    }

    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StateError::Io { source, .. } => Some(source),
            StateError::Unsafe { .. } => None,
        }
    }
}

/// The users whose files the fixer trusts: root, and the user it runs as (a plan shown
/// by an unprivileged user reads a state directory of its own).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Owner and mode of an opened file or directory, as the fixer needs them.
fn check_owner_and_mode(path: &Path, st: &Stat, what: &str) -> Result<(), StateError> {
    let unsafe_ = |problem: String, remedy: String| StateError::Unsafe { path: path.to_path_buf(), problem, remedy };
    if !trusted_owner(st.st_uid) {
        return Err(unsafe_(format!("the {what} is owned by uid {}, not root", st.st_uid), format!("chown root {}, or give another --state-dir", path.display())));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_(
            format!("the {what} is writable by {} (mode {mode:04o})", if mode & 0o020 != 0 && mode & 0o002 != 0 { "group and others" } else if mode & 0o020 != 0 { "its group" } else { "others" }),
            format!("chmod go-w {}, or give another --state-dir", path.display()),
        ));
    }
    Ok(())
}

/// How a file in a state directory is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read; None when it is not there.
    Read,
    /// Append to an existing one (one link only).
    Append,
    /// Read and write, created (0600) when missing; written in place, so one link only (the lock).
    Lock,
    /// A new file (0600), a leftover of that name removed first: written whole, then renamed.
    CreateNew,
}

/// An open state directory: every file in it is reached through this handle.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl StateDir {
    /// Open the directory at `path` if it exists (None when it does not).
    pub fn open(path: &Path) -> Result<Option<StateDir>, StateError> {
        walk(path, false)
    }

    /// Open the directory at `path`, made (0700; missing parents 0755) when it does not exist.
    pub fn create(path: &Path) -> Result<StateDir, StateError> {
        walk(path, true)?.ok_or_else(|| StateError::io(path, io::Error::from(io::ErrorKind::NotFound)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it (for messages and reports).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// What is at `name`, the link itself if it is one; None when nothing is.
    pub fn entry(&self, name: &str) -> Result<Option<Stat>, StateError> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(StateError::io(&self.join(name), e)),
        }
    }

    /// A directory in it (0700 when made here), checked like the state directory itself.
    pub fn subdir(&self, name: &str, create: bool) -> Result<Option<StateDir>, StateError> {
        let path = self.join(name);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rfs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(StateError::io(&path, e)),
                }
                rfs::openat(&self.fd, name, flags, Mode::empty()).map_err(|e| self.classify(name, e))?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.classify(name, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| StateError::io(&path, e))?;
        check_owner_and_mode(&path, &st, "directory")?;
        Ok(Some(StateDir { path, fd }))
    }

    /// Open `name` in it; None when it is not there (only [`Open::Read`] and [`Open::Append`]).
    pub fn open_file(&self, name: &str, how: Open) -> Result<Option<File>, StateError> {
        let path = self.join(name);
        let base = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (flags, mode) = match how {
            Open::Read => (base | OFlags::RDONLY, Mode::empty()),
            Open::Append => (base | OFlags::WRONLY | OFlags::APPEND, Mode::empty()),
            Open::Lock => (base | OFlags::RDWR | OFlags::CREATE, Mode::from_raw_mode(0o600)),
            Open::CreateNew => {
                self.unlink(name)?;
                (base | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, Mode::from_raw_mode(0o600))
            }
        };
        let fd = match rfs::openat(&self.fd, name, flags, mode) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if matches!(how, Open::Read | Open::Append) => return Ok(None),
            Err(e) => return Err(self.classify(name, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| StateError::io(&path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(StateError::Unsafe { path, problem: "not a regular file".into(), remedy: "remove it, or give another --state-dir".into() });
        }
        check_owner_and_mode(&path, &st, "file")?;
        // Written in place: a hard link would carry the write to the file it shares.
        if how != Open::Read && st.st_nlink != 1 {
            return Err(StateError::Unsafe {
                path,
                problem: format!("the file has {} hard links: a write to it would change another file too", st.st_nlink),
                remedy: "remove it (cgleak makes it again)".into(),
            });
        }
        Ok(Some(File::from(fd)))
    }

    /// Remove `name` (a file); nothing there is fine.
    pub fn unlink(&self, name: &str) -> Result<(), StateError> {
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(StateError::io(&self.join(name), e)),
        }
    }

    /// Rename `from` in it to `to_name` in `to` (the same directory or one of its subdirectories).
    pub fn rename_to(&self, from: &str, to: &StateDir, to_name: &str) -> Result<(), StateError> {
        rfs::renameat(&self.fd, from, &to.fd, to_name).map_err(|e| StateError::io(&self.join(from), e))
    }

    /// Make its entries (names made, renamed, removed) durable.
    pub fn sync(&self) -> Result<(), StateError> {
        rfs::fsync(&self.fd).map_err(|e| StateError::io(&self.path, e))
    }

    /// Why opening `name` failed: a symlink is named as one.
    fn classify(&self, name: &str, e: Errno) -> StateError {
        classify(&self.fd, OsStr::new(name), &self.join(name), e)
    }
}

/// ELOOP or ENOTDIR from an open with O_NOFOLLOW: a link, or not a directory.
fn classify(dirfd: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> StateError {
    if matches!(e, Errno::LOOP | Errno::NOTDIR)
        && rfs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    {
        return StateError::Unsafe {
            path: path.to_path_buf(),
            problem: "a symbolic link".into(),
            remedy: "give the real path (--state-dir), or remove the link".into(),
        };
    }
    StateError::io(path, e)
}

/// Open `path` from `/`, one component at a time, following no link.
fn walk(path: &Path, create: bool) -> Result<Option<StateDir>, StateError> {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().map_err(|e| StateError::io(path, e))?.join(path) };
    let mut names: Vec<&OsStr> = Vec::new();
    for c in abs.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(StateError::Unsafe { path: path.to_path_buf(), problem: "the path has a `..` in it".into(), remedy: "give the path without `..`".into() })
            }
        }
    }
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Components on the way are only passed through (O_PATH); the directory itself is read.
    let root_flags = if names.is_empty() { dir_flags | OFlags::RDONLY } else { dir_flags | OFlags::PATH };
    let mut fd = rfs::openat(CWD, "/", root_flags, Mode::empty()).map_err(|e| StateError::io(Path::new("/"), e))?;
    let mut so_far = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        so_far.push(name);
        let flags = if last { dir_flags | OFlags::RDONLY } else { dir_flags | OFlags::PATH };
        let next = match rfs::openat(&fd, *name, flags, Mode::empty()) {
            Ok(f) => f,
            Err(Errno::NOENT) if create => {
                match rfs::mkdirat(&fd, *name, Mode::from_raw_mode(if last { 0o700 } else { 0o755 })) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(StateError::io(&so_far, e)),
                }
                rfs::openat(&fd, *name, flags, Mode::empty()).map_err(|e| classify(&fd, name, &so_far, e))?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(classify(&fd, name, &so_far, e)),
        };
        fd = next;
    }
    let st = rfs::fstat(&fd).map_err(|e| StateError::io(path, e))?;
    check_owner_and_mode(path, &st, "directory")?;
    Ok(Some(StateDir { path: path.to_path_buf(), fd }))
}

/// Read at most `max` bytes of `path` without following a link at its last component
/// (a stamp another cgleak wrote): None when it is not there.
pub fn read_small_nofollow(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(OFlags::NOFOLLOW.bits() as i32).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn a_missing_directory_is_made_root_only_and_its_files_are_opened_without_links() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/fix");
        assert!(StateDir::open(&p).unwrap().is_none());
        let d = StateDir::create(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(t.path().join("a")).unwrap().permissions().mode() & 0o777, 0o755);
        let mut f = d.open_file("x", Open::CreateNew).unwrap().unwrap();
        f.write_all(b"hello").unwrap();
        assert!(d.open_file("missing", Open::Read).unwrap().is_none());
        assert!(d.open_file("x", Open::Read).unwrap().is_some());
        // A link in its place is refused, and names the link.
        let target = t.path().join("target");
        fs::write(&target, "keep").unwrap();
        symlink(&target, p.join("lnk")).unwrap();
        for how in [Open::Read, Open::Append, Open::Lock] {
            let e = d.open_file("lnk", how).unwrap_err().to_string();
            assert!(e.contains("lnk") && e.contains("symbolic link"), "{how:?}: {e}");
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        // A hard link is never written through.
        fs::hard_link(p.join("x"), p.join("hard")).unwrap();
        let e = d.open_file("hard", Open::Lock).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        assert!(d.open_file("hard", Open::Read).unwrap().is_some(), "reading is harmless");
    }

    #[test]
    fn a_symlinked_component_or_a_group_writable_directory_is_refused_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        symlink(&real, t.path().join("via")).unwrap();
        let e = StateDir::create(&t.path().join("via/fix")).unwrap_err().to_string();
        assert!(e.contains(&format!("{}: a symbolic link", t.path().join("via").display())), "{e}");
        assert!(!real.join("fix").exists(), "made through the link");
        let e = StateDir::open(&t.path().join("via")).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        fs::set_permissions(&real, fs::Permissions::from_mode(0o775)).unwrap();
        let e = StateDir::open(&real).unwrap_err().to_string();
        assert!(e.contains(&real.display().to_string()) && e.contains("writable by its group (mode 0775)") && e.contains("chmod go-w"), "{e}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&real).unwrap_err().to_string();
        assert!(e.contains("writable by group and others"), "{e}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(StateDir::open(&real).unwrap().is_some());
        let e = StateDir::open(&t.path().join("real/../real")).unwrap_err().to_string();
        assert!(e.contains(".."), "{e}");
    }

    #[test]
    fn stamps_are_read_bounded_and_not_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("stamp");
        assert_eq!(read_small_nofollow(&p, 8).unwrap(), None);
        fs::write(&p, "1234567890").unwrap();
        assert_eq!(read_small_nofollow(&p, 4).unwrap().unwrap(), b"1234");
        symlink(&p, t.path().join("lnk")).unwrap();
        assert!(read_small_nofollow(&t.path().join("lnk"), 8).is_err());
    }

    #[test]
    fn the_layout_is_under_the_host_root() {
        let h = HostPaths::new("/host");
        assert_eq!(fix_state_dir(&h), PathBuf::from("/host/var/lib/cgleak/fix"));
        assert_eq!(agent_state_dir(&h), PathBuf::from("/host/var/lib/cgleak/agent"));
        assert_eq!(legacy_state_dir(&HostPaths::new("/")), PathBuf::from("/var/lib/cgleak"));
    }
}

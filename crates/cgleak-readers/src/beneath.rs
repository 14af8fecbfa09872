//! Opening host files beneath a directory handle, never outside it.
//!
//! Every read, write, mkdir and rmdir under the host root goes through [`open`] (or
//! [`open_parent`] for the directory operations): a path is resolved from a handle on a
//! directory (the host root, or `/` for a cgroup path already checked to lie beneath the
//! host root) and can never leave it. With `openat2` (Linux 5.6+) the kernel does it
//! (`RESOLVE_IN_ROOT` or `RESOLVE_BENEATH`, with `RESOLVE_NO_MAGICLINKS`); without it
//! (3.10, 4.x: ENOSYS) the path is walked here one component at a time with
//! `O_PATH | O_NOFOLLOW`, symlinks read and resolved by hand beneath the base with a hop
//! limit, and `..` kept beneath it. `CGLEAK_NO_OPENAT2=1` (or [`force_fallback`] in a
//! thread) takes the walk on any kernel, so it is tested here too.
//!
//! Cgroup files are also checked where they are written: on a host whose mount table
//! comes from the kernel, a written file or a removed directory must be on cgroupfs
//! (`CGROUP_SUPER_MAGIC` / `CGROUP2_SUPER_MAGIC` by `fstatfs`, as runc's
//! libcontainer/cgroups/file.go checks). Fixture trees (tmpfs) pass only beneath a root
//! registered by [`register_fixture_root`], which [`crate::mountinfo::CgroupLayout::discover`]
//! does when the mountinfo it read is not served by procfs: a kernel host cannot be
//! talked out of the check by its own files.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{openat, openat2, readlinkat, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// How symlinks on the way are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// As the host itself would take them: followed, an absolute target read from the
    /// base (the host's `/`: `/var/run -> /run` means `<root>/run`), `..` stopping at the
    /// base (openat2 `RESOLVE_IN_ROOT`).
    InRoot,
    /// None at all, and no `..` above the base (openat2 `RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS`): cgroupfs has no symlinks, so one on a cgroup path is planted.
    Refused,
}

/// Symlinks followed on one path at most (Linux's MAXSYMLINKS).
pub const MAX_LINK_HOPS: u32 = 40;

const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);

thread_local! {
    static FORCED_FALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Take the component walk instead of openat2 in this thread (tests of the 3.10 path).
pub fn force_fallback(on: bool) {
    FORCED_FALLBACK.with(|f| f.set(on));
}

/// Whether openat2 is used: the kernel has it (ENOSYS before 5.6; EPERM from a seccomp
/// filter that does not know it) and neither `CGLEAK_NO_OPENAT2` nor the thread says no.
pub fn uses_openat2() -> bool {
    if FORCED_FALLBACK.with(Cell::get) {
        return false;
    }
    match OPENAT2.load(Ordering::Relaxed) {
        OPENAT2_YES => true,
        OPENAT2_NO => false,
        _ => {
            let forced_off = std::env::var_os("CGLEAK_NO_OPENAT2").is_some_and(|v| !v.is_empty() && v != "0");
            let yes = !forced_off
                && !matches!(
                    openat2(CWD, "/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::empty()),
                    Err(Errno::NOSYS) | Err(Errno::PERM)
                );
            OPENAT2.store(if yes { OPENAT2_YES } else { OPENAT2_NO }, Ordering::Relaxed);
            yes
        }
    }
}

/// Open `path` beneath the directory `base`. `path` is relative (an absolute one is read
/// from `base` with [`Links::InRoot`] and refused with [`Links::Refused`], as openat2 does).
/// `flags` are open(2)'s; O_CLOEXEC is added.
pub fn open(base: BorrowedFd<'_>, path: &Path, flags: OFlags, mode: Mode, links: Links) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    if uses_openat2() {
        let resolve = ResolveFlags::NO_MAGICLINKS
            | match links {
                Links::InRoot => ResolveFlags::IN_ROOT,
                Links::Refused => ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            };
        let rel: &Path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let mut tries = 0;
        loop {
            match openat2(base, rel, flags, mode, resolve) {
                // A rename raced a `..` lookup: the kernel asks to try again.
                Err(Errno::AGAIN) if tries < 8 => tries += 1,
                // Deeper than PATH_MAX in one string: the walk takes it a name at a time.
                Err(Errno::NAMETOOLONG) => return walk(base, path, flags, mode, links),
                r => return r.map_err(io::Error::from),
            }
        }
    }
    walk(base, path, flags, mode, links)
}

/// The directory that holds `path`'s last component, opened beneath `base` (readable, so
/// `fstatfs` works on it even on 3.10), and that component: for mkdir, rmdir, rename.
/// The last component is never followed (rmdir of a symlink is ENOTDIR).
pub fn open_parent(base: BorrowedFd<'_>, path: &Path, links: Links) -> io::Result<(OwnedFd, OsString)> {
    let Some(Component::Normal(name)) = path.components().next_back() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: no name to act on at its end", path.display())));
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    let fd = open(base, parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty(), links)?;
    Ok((fd, name.to_os_string()))
}

/// The directory `path` beneath `base`, made when missing, and every missing one above
/// it, one component at a time: each is opened through [`open`] (beneath `base`, links
/// taken as `links` says) and, when it is not there, made with `mkdirat` (`mode`) in the
/// directory opened before it. `path` has plain names only. A readable handle on it.
pub fn mkdirs(base: BorrowedFd<'_>, path: &Path, mode: Mode, links: Links) -> io::Result<OwnedFd> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut fd = open(base, Path::new(""), dir_flags, Mode::empty(), links)?;
    let mut so_far = PathBuf::new();
    for c in path.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a plain relative path", path.display())));
        };
        so_far.push(name);
        fd = match open(base, &so_far, dir_flags, Mode::empty(), links) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Made in the directory just opened through the resolver, then opened again
                // through it: a link put in its place meanwhile is taken as `links` says.
                match rustix::fs::mkdirat(&fd, name, mode) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open(base, &so_far, dir_flags, Mode::empty(), links)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(fd)
}

/// What is at `name` in `dir`, the link itself if it is one; None when nothing is.
pub fn entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Refuse `st` (what `name` is) unless it is a regular file: `doing` says what was not done.
fn require_regular_entry(st: &rustix::fs::Stat, doing: &str) -> io::Result<()> {
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
        return Ok(());
    }
    Err(io::Error::other(format!("is {}, not a regular file: not {doing}", crate::bounded::file_type_name(st.st_mode))))
}

/// Write `content` whole as `name` in the directory `dir` (opened beneath the host root):
/// a temporary `tmp` beside it (a leftover of that name removed first) made with
/// O_CREAT|O_EXCL|O_NOFOLLOW, written, given `mode`, synced, renamed over `name` within
/// `dir`, and `dir` synced; the temporary is removed on failure. Only a regular file (or
/// nothing) at `name` is replaced.
pub fn write_file_atomic(dir: BorrowedFd<'_>, name: &OsStr, tmp: &OsStr, content: &[u8], mode: Mode) -> io::Result<()> {
    use std::io::Write;
    if let Some(st) = entry(dir, name)? {
        require_regular_entry(&st, "replaced")?;
    }
    match rustix::fs::unlinkat(dir, tmp, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(dir, tmp, flags, Mode::from_raw_mode(0o600))?;
    let r = (|| -> io::Result<()> {
        let mut f = std::fs::File::from(fd);
        f.write_all(content)?;
        // The mode asked for exactly, whatever the umask.
        rustix::fs::fchmod(&f, mode)?;
        f.sync_all()?;
        rustix::fs::renameat(dir, tmp, dir, name)?;
        Ok(rustix::fs::fsync(dir)?)
    })();
    if r.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp, rustix::fs::AtFlags::empty());
    }
    r
}

/// Remove the regular file `name` from `dir` (opened beneath the host root) with
/// `unlinkat`, and sync `dir`; anything else there is refused. False when nothing was there.
pub fn unlink_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let Some(st) = entry(dir, name)? else { return Ok(false) };
    require_regular_entry(&st, "removed")?;
    match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fsync(dir)?;
    Ok(true)
}

/// An error of [`open`] with [`Links::Refused`] in words: ELOOP and EXDEV there mean a
/// link or a `..` on the way, not a loop or another device.
pub fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) if n == Errno::LOOP.raw_os_error() => "a symbolic link on the way: not followed".into(),
        Some(n) if n == Errno::XDEV.raw_os_error() => "the path leads out of the host root: refused".into(),
        _ => e.to_string(),
    }
}

/// The component walk: for kernels without openat2 (and paths past PATH_MAX).
fn walk(base: BorrowedFd<'_>, path: &Path, flags: OFlags, mode: Mode, links: Links) -> io::Result<OwnedFd> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    for c in path.components() {
        match c {
            Component::RootDir if links == Links::Refused => return Err(Errno::XDEV.into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => pending.push_back(OsString::from("..")),
            Component::Normal(n) => pending.push_back(n.to_os_string()),
        }
    }
    let caller_nofollow = flags.contains(OFlags::NOFOLLOW);
    // The directories walked so far, by name from `base`, and a handle on the last.
    let mut names: Vec<OsString> = Vec::new();
    let mut cur: Option<OwnedFd> = None;
    let mut hops = 0;
    loop {
        let dir = cur.as_ref().map(|f| f.as_fd()).unwrap_or(base);
        let Some(c) = pending.pop_front() else {
            return Ok(openat(dir, ".", flags, mode)?);
        };
        if c == ".." {
            if names.pop().is_none() && links == Links::Refused {
                return Err(Errno::XDEV.into());
            }
            cur = reopen(base, &names)?;
            continue;
        }
        let last = pending.is_empty();
        let opened = if last {
            openat(dir, c.as_os_str(), flags | OFlags::NOFOLLOW, mode)
        } else {
            openat(dir, c.as_os_str(), OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        };
        let err = match opened {
            // O_PATH | O_NOFOLLOW opens a symlink itself: see whether that is what came.
            Ok(fd) if last && flags.contains(OFlags::PATH) && is_symlink(&fd) && !caller_nofollow => Errno::LOOP,
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => {
                names.push(c);
                cur = Some(fd);
                continue;
            }
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => e,
            Err(e) => return Err(e.into()),
        };
        let target = match readlinkat(dir, c.as_os_str(), Vec::new()) {
            Ok(t) => t,
            // Not a symlink: the error was about what it is.
            Err(Errno::INVAL) | Err(Errno::NOENT) => return Err(err.into()),
            Err(e) => return Err(e.into()),
        };
        if links == Links::Refused || (last && caller_nofollow) {
            return Err(Errno::LOOP.into());
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Err(Errno::LOOP.into());
        }
        let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
        if target.is_absolute() {
            names.clear();
            cur = None;
        }
        let mut expanded: Vec<OsString> = Vec::new();
        for t in target.components() {
            match t {
                Component::ParentDir => expanded.push(OsString::from("..")),
                Component::Normal(n) => expanded.push(n.to_os_string()),
                _ => {}
            }
        }
        for t in expanded.into_iter().rev() {
            pending.push_front(t);
        }
    }
}

/// A handle on `base/names...` walked again without following anything (after a `..`).
fn reopen(base: BorrowedFd<'_>, names: &[OsString]) -> io::Result<Option<OwnedFd>> {
    let mut cur: Option<OwnedFd> = None;
    for n in names {
        let dir = cur.as_ref().map(|f| f.as_fd()).unwrap_or(base);
        cur = Some(openat(dir, n.as_os_str(), OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?);
    }
    Ok(cur)
}

fn is_symlink(fd: &OwnedFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
}

/// A handle on this process's `/`, for cgroup paths (absolute, checked beneath the host
/// root by the caller) resolved with [`Links::Refused`].
pub fn slash() -> io::Result<BorrowedFd<'static>> {
    static SLASH: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    match SLASH.get_or_init(|| openat(CWD, "/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| e.raw_os_error())) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

/// `path` as a plain absolute path without `..`: the form of every cgroup path cgleak
/// makes (a mount point from mountinfo, checked, joined with names from a directory).
pub fn plain_absolute(path: &Path) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    let mut comps = path.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not an absolute path", path.display())));
    }
    for c in comps {
        match c {
            Component::Normal(n) => rel.push(n),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: `..` in a cgroup path", path.display()))),
        }
    }
    Ok(rel)
}

/// Open a cgroup path (a directory or a file under a hierarchy, as this process reaches
/// it): no symlink anywhere on it and no `..`.
pub fn open_cgroup_path(path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = plain_absolute(path)?;
    open(slash()?, &rel, flags, Mode::empty(), Links::Refused)
}

/// The directory holding a cgroup path's last component, and that name.
pub fn open_cgroup_parent(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    let rel = plain_absolute(path)?;
    open_parent(slash()?, &rel, Links::Refused)
}

/// cgroup v1 and cgroup2 superblock magics (include/uapi/linux/magic.h).
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// The filesystem magic of an open file.
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstatfs(fd)?.f_type as u64)
}

fn fixture_roots() -> &'static Mutex<Vec<PathBuf>> {
    static ROOTS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    ROOTS.get_or_init(|| Mutex::new(Vec::new()))
}

/// A fake host root (a fixture tree whose mount table is a file, not the kernel's): cgroup
/// files beneath it may be on tmpfs. `/` is never taken.
pub fn register_fixture_root(root: &Path) {
    if root == Path::new("/") || plain_absolute(root).is_err() {
        return;
    }
    let mut roots = fixture_roots().lock().unwrap_or_else(|p| p.into_inner());
    if !roots.iter().any(|r| r == root) {
        roots.push(root.to_path_buf());
    }
}

fn under_fixture_root(path: &Path) -> bool {
    fixture_roots().lock().unwrap_or_else(|p| p.into_inner()).iter().any(|r| path.starts_with(r))
}

/// `fd` (opened at `path` to write a cgroup file, or to rmdir or mkdir in a cgroup
/// directory) must be on cgroupfs, unless `path` is in a fixture tree.
pub fn check_cgroupfs(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let magic = fs_magic(fd)?;
    if magic == CGROUP_SUPER_MAGIC || magic == CGROUP2_SUPER_MAGIC || under_fixture_root(path) {
        return Ok(());
    }
    Err(io::Error::other(format!("not on a cgroup filesystem (filesystem magic {magic:#x}): refused to change it")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn base(p: &Path) -> OwnedFd {
        openat(CWD, p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    fn read(base: &OwnedFd, p: &str, links: Links) -> io::Result<String> {
        let fd = open(base.as_fd(), Path::new(p), OFlags::RDONLY, Mode::empty(), links)?;
        io::read_to_string(fs::File::from(fd))
    }

    /// A root with an outside file reachable by every trick, in both resolvers.
    #[test]
    fn neither_resolver_leaves_the_base() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(t.path().join("outside"), "outside").unwrap();
        fs::write(root.join("run/reboot-required"), "inside").unwrap();
        fs::write(root.join("outside"), "root's own").unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../outside", root.join("etc/up")).unwrap();
        symlink(t.path().join("outside"), root.join("etc/abs")).unwrap();
        symlink("../../../../../../outside", root.join("etc/far")).unwrap();
        symlink("/proc/self/root/etc/hostname", root.join("etc/magic")).unwrap();
        symlink("loop", root.join("etc/loop")).unwrap();
        for fallback in [false, true] {
            force_fallback(fallback);
            let b = base(&root);
            assert_eq!(read(&b, "var/run/reboot-required", Links::InRoot).unwrap(), "inside", "fallback {fallback}");
            assert_eq!(read(&b, "/var/run/reboot-required", Links::InRoot).unwrap(), "inside");
            assert_eq!(read(&b, "etc/up", Links::InRoot).unwrap(), "root's own", "fallback {fallback}");
            assert_eq!(read(&b, "../../../outside", Links::InRoot).unwrap(), "root's own");
            assert_eq!(read(&b, "etc/far", Links::InRoot).unwrap(), "root's own");
            // An absolute target is the host's path: <root>/<tmp>/outside, which is not there.
            assert_eq!(read(&b, "etc/abs", Links::InRoot).unwrap_err().kind(), io::ErrorKind::NotFound);
            // Not the magic link of this process: <root>/proc/... does not exist.
            assert!(read(&b, "etc/magic", Links::InRoot).is_err());
            assert_eq!(read(&b, "etc/loop", Links::InRoot).unwrap_err().raw_os_error(), Some(Errno::LOOP.raw_os_error()));
            // Refused: any link, and `..` above the base.
            assert_eq!(read(&b, "var/run/reboot-required", Links::Refused).unwrap_err().raw_os_error(), Some(Errno::LOOP.raw_os_error()));
            assert_eq!(read(&b, "../outside", Links::Refused).unwrap_err().raw_os_error(), Some(Errno::XDEV.raw_os_error()));
            assert_eq!(read(&b, "run/reboot-required", Links::Refused).unwrap(), "inside");
            let (dir, name) = open_parent(b.as_fd(), Path::new("run/reboot-required"), Links::Refused).unwrap();
            assert_eq!(name, "reboot-required");
            assert!(rustix::fs::statat(&dir, name.as_os_str(), rustix::fs::AtFlags::empty()).is_ok());
        }
        force_fallback(false);
    }

    /// Directories made a component at a time, a file written whole and removed through its
    /// directory's handle: never through a link with [`Links::Refused`], never outside the
    /// base with [`Links::InRoot`], and only over (or of) a regular file, in both resolvers.
    #[test]
    fn writes_and_removals_stay_beneath_the_base_and_take_regular_files_only() {
        use rustix::fs::{mknodat, FileType};
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../outside", root.join("up")).unwrap();
        for fallback in [false, true] {
            force_fallback(fallback);
            let b = base(&root);
            let d = mkdirs(b.as_fd(), Path::new("run/kured/deep"), Mode::from_raw_mode(0o755), Links::Refused).unwrap();
            for text in ["one\n", "two\n"] {
                write_file_atomic(d.as_fd(), OsStr::new("sentinel"), OsStr::new(".sentinel.tmp"), text.as_bytes(), Mode::from_raw_mode(0o640)).unwrap();
                let p = root.join("run/kured/deep/sentinel");
                assert_eq!(fs::read_to_string(&p).unwrap(), text, "fallback {fallback}");
                assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640);
            }
            assert_eq!(fs::read_dir(root.join("run/kured/deep")).unwrap().count(), 1, "the temporary was left");
            // A link on the way: refused, nothing made where it leads.
            for p in ["abs/x", "up/x", "run/../up/x"] {
                let e = mkdirs(b.as_fd(), Path::new(p), Mode::from_raw_mode(0o755), Links::Refused).unwrap_err();
                assert!(e.raw_os_error().is_some() || e.kind() == io::ErrorKind::InvalidInput, "{p}: {e}");
            }
            let e = mkdirs(b.as_fd(), Path::new("abs/x"), Mode::from_raw_mode(0o755), Links::Refused).unwrap_err();
            assert_eq!(explain(&e), "a symbolic link on the way: not followed", "fallback {fallback}");
            // Followed in the root: `..` stops at it (`up` is <root>/outside), an absolute
            // target is the host's path (`abs` leads nowhere in the root).
            mkdirs(b.as_fd(), Path::new("up/made"), Mode::from_raw_mode(0o755), Links::InRoot).unwrap();
            assert!(root.join("outside/made").is_dir(), "fallback {fallback}");
            assert!(mkdirs(b.as_fd(), Path::new("abs/made"), Mode::from_raw_mode(0o755), Links::InRoot).is_err(), "a dangling link is not made a directory");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "fallback {fallback}: made outside the base");
            // Special files are neither replaced nor removed.
            let run = open(b.as_fd(), Path::new("run"), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty(), Links::Refused).unwrap();
            mknodat(&run, "fifo", FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
            let e = write_file_atomic(run.as_fd(), OsStr::new("fifo"), OsStr::new(".fifo.tmp"), b"x", Mode::from_raw_mode(0o644)).unwrap_err();
            assert!(e.to_string().contains("is a FIFO, not a regular file: not replaced"), "{e}");
            let e = unlink_file(run.as_fd(), OsStr::new("fifo")).unwrap_err();
            assert!(e.to_string().contains("is a FIFO, not a regular file: not removed"), "{e}");
            let e = unlink_file(run.as_fd(), OsStr::new("kured")).unwrap_err();
            assert!(e.to_string().contains("is a directory"), "{e}");
            assert!(unlink_file(d.as_fd(), OsStr::new("sentinel")).unwrap());
            assert!(!unlink_file(d.as_fd(), OsStr::new("sentinel")).unwrap());
            fs::remove_file(root.join("run/fifo")).unwrap();
            fs::remove_dir_all(root.join("run/kured")).unwrap();
            fs::remove_dir(root.join("outside/made")).unwrap();
        }
        force_fallback(false);
    }

    #[test]
    fn the_walk_takes_paths_longer_than_path_max() {
        let t = tempfile::tempdir().unwrap();
        let name = "d".repeat(200);
        let mut rel = PathBuf::new();
        let b = base(t.path());
        for _ in 0..30 {
            rel.push(&name);
            let (dir, n) = open_parent(b.as_fd(), &rel, Links::Refused).unwrap();
            rustix::fs::mkdirat(&dir, n.as_os_str(), Mode::from_raw_mode(0o755)).unwrap();
        }
        assert!(rel.as_os_str().len() > 4096);
        let fd = open(b.as_fd(), &rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty(), Links::Refused).unwrap();
        assert!(rustix::fs::fstat(&fd).is_ok());
    }

    #[test]
    fn cgroup_paths_are_plain_and_absolute() {
        assert_eq!(plain_absolute(Path::new("/sys/fs/cgroup/memory/a")).unwrap(), PathBuf::from("sys/fs/cgroup/memory/a"));
        for bad in ["relative/x", "/sys/../etc", "/tmp/root/../x"] {
            assert!(plain_absolute(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_need_cgroupfs_outside_fixture_roots() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("cgroup.procs");
        fs::write(&f, "").unwrap();
        let fd = open_cgroup_path(&f, OFlags::WRONLY).unwrap();
        let e = check_cgroupfs(fd.as_fd(), &f).unwrap_err();
        assert!(e.to_string().contains("not on a cgroup filesystem"), "{e}");
        register_fixture_root(t.path());
        check_cgroupfs(fd.as_fd(), &f).unwrap();
    }
}

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{Mode, OFlags, CWD};

use crate::beneath::{self, Links};
use crate::bounded;
use crate::error::{ReadError, Result};

/// Where the host's files are. Nothing else in cgleak hard-codes a path:
/// `/proc`, `/sys`, the kubelet's state and the cgroup mounts are all found
/// through this value, so `--host-root /host` and fixture trees work alike.
///
/// Files are opened beneath a handle on the root ([`HostPaths::open`]): a symlink or `..`
/// in the host's files never leads out of it (see [`crate::beneath`]).
#[derive(Debug, Clone)]
pub struct HostPaths {
    root: PathBuf,
    kubelet_root: PathBuf,
    /// The root, opened once (an errno when it could not be).
    handle: Arc<OnceLock<std::result::Result<OwnedFd, i32>>>,
    /// Whether `<root>/proc` is procfs: the host's files come from a kernel, not a fixture.
    kernel: Arc<OnceLock<bool>>,
}

impl HostPaths {
    /// `root` is the directory where the host's `/` is visible (`/` on the host). An
    /// existing root is taken by its canonical name: cgroup paths beneath it are then
    /// free of symlinks, as [`crate::beneath::open_cgroup_path`] wants them.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let kubelet_root = join_host(&root, Path::new("/var/lib/kubelet"));
        HostPaths { root, kubelet_root, handle: Arc::default(), kernel: Arc::default() }
    }

    /// Override the kubelet's `--root-dir` (a path as seen by this process).
    pub fn with_kubelet_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.kubelet_root = dir.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_host_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// A host path (`/proc/cgroups`) as this process reaches it (`<root>/proc/cgroups`).
    pub fn host(&self, host_path: impl AsRef<Path>) -> PathBuf {
        join_host(&self.root, host_path.as_ref())
    }

    pub fn proc(&self) -> PathBuf {
        self.host("/proc")
    }

    pub fn sys(&self) -> PathBuf {
        self.host("/sys")
    }

    pub fn kubelet_root(&self) -> &Path {
        &self.kubelet_root
    }

    /// The kubelet's per-pod state directories: `<kubelet root>/pods/<uid>`.
    pub fn kubelet_pods(&self) -> PathBuf {
        self.kubelet_root.join("pods")
    }

    /// A host path as this process reaches it, with symlinks followed inside the host
    /// root: an absolute link target (`/var/run -> /run`) means the host's `/`, not
    /// ours, and `..` never leaves the root. Components that do not exist (a file about
    /// to be written) are kept as they are. None on a symlink loop (40 links, as Linux).
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> Option<PathBuf> {
        let mut rel: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = parts(host_path.as_ref()).collect();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                rel.pop();
                continue;
            }
            rel.push(c);
            let local: PathBuf = std::iter::once(self.root.as_os_str()).chain(rel.iter().map(OsString::as_os_str)).collect();
            let Ok(meta) = std::fs::symlink_metadata(&local) else { continue };
            if !meta.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&local).ok()?;
            rel.pop();
            if target.is_absolute() {
                rel.clear();
            }
            for (i, t) in parts(&target).enumerate() {
                pending.insert(i, t);
            }
        }
        Some(std::iter::once(self.root.as_os_str()).chain(rel.iter().map(OsString::as_os_str)).collect())
    }

    /// A handle on the root, opened as the user named it.
    fn root_fd(&self) -> io::Result<BorrowedFd<'_>> {
        let h = self.handle.get_or_init(|| {
            rustix::fs::openat(CWD, &self.root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| e.raw_os_error())
        });
        match h {
            Ok(fd) => Ok(fd.as_fd()),
            Err(e) => Err(io::Error::from_raw_os_error(*e)),
        }
    }

    /// Open a host path (`/proc/cgroups`) beneath the root, symlinks taken as the host
    /// takes them ([`Links::InRoot`]). O_CLOEXEC is added.
    pub fn open(&self, host_path: impl AsRef<Path>, flags: OFlags) -> io::Result<OwnedFd> {
        beneath::open(self.root_fd()?, host_path.as_ref(), flags, Mode::empty(), Links::InRoot)
    }

    /// The part of a local path (`<root>/boot/grub2/grubenv`) below the root, or an error
    /// when it is not below it.
    pub fn below_root(&self, local: &Path) -> io::Result<PathBuf> {
        local.strip_prefix(&self.root).map(Path::to_path_buf).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not under the host root {}", local.display(), self.root.display()))
        })
    }

    /// [`HostPaths::open`] for a path as this process reaches it (under the root).
    pub fn open_local(&self, local: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        self.open(self.below_root(local)?, flags)
    }

    /// The directory holding a local path's last component, and that name, opened beneath
    /// the root following no link at all ([`Links::Refused`]): for writing or removing a
    /// path resolved before (its links followed then), where a link found now was put there
    /// since. `mkdir`: missing directories on the way are made with that mode, one
    /// component at a time ([`beneath::mkdirs`]).
    pub fn open_parent_nofollow(&self, local: &Path, mkdir: Option<Mode>) -> io::Result<(OwnedFd, OsString)> {
        let rel = self.below_root(local)?;
        let Some(Component::Normal(name)) = rel.components().next_back() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: no file name at its end", local.display())));
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fd = match mkdir {
            Some(mode) => beneath::mkdirs(self.root_fd()?, parent, mode, Links::Refused)?,
            None => beneath::open(self.root_fd()?, parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty(), Links::Refused)?,
        };
        Ok((fd, name.to_os_string()))
    }

    /// A local path read whole beneath the root following no link ([`Links::Refused`], as
    /// [`HostPaths::open_parent_nofollow`]), at most `cap` bytes, a regular file only.
    pub fn read_bytes_nofollow_local(&self, local: &Path, cap: u64) -> Result<Vec<u8>> {
        let fd = self
            .below_root(local)
            .and_then(|rel| beneath::open(self.root_fd()?, &rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty(), Links::Refused))
            .map_err(|e| ReadError::io(local, e))?;
        bounded::read_fd(fd, local, cap)
    }

    /// A host file read whole, at most `cap` bytes, refused unless it is a regular file.
    /// Errors name the file as this process reaches it.
    pub fn read_bytes(&self, host_path: impl AsRef<Path>, cap: u64) -> Result<Vec<u8>> {
        let local = self.host(host_path.as_ref());
        let fd = self.open(host_path.as_ref(), OFlags::RDONLY | OFlags::NONBLOCK).map_err(|e| ReadError::io(&local, e))?;
        bounded::read_fd(fd, &local, cap)
    }

    /// [`HostPaths::read_bytes`] as UTF-8 text.
    pub fn read(&self, host_path: impl AsRef<Path>, cap: u64) -> Result<String> {
        let local = self.host(host_path.as_ref());
        let fd = self.open(host_path.as_ref(), OFlags::RDONLY | OFlags::NONBLOCK).map_err(|e| ReadError::io(&local, e))?;
        bounded::read_fd_string(fd, &local, cap)
    }

    /// [`HostPaths::read`] for a path as this process reaches it; one outside the root
    /// (a `--kubelet-root-dir` elsewhere) is opened as the user named it.
    pub fn read_local(&self, local: &Path, cap: u64) -> Result<String> {
        let fd = match self.below_root(local) {
            Ok(rel) => self.open(rel, OFlags::RDONLY | OFlags::NONBLOCK),
            Err(_) => rustix::fs::openat(CWD, local, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()).map_err(io::Error::from),
        }
        .map_err(|e| ReadError::io(local, e))?;
        bounded::read_fd_string(fd, local, cap)
    }

    /// A directory as this process reaches it, opened for listing beneath the root; one
    /// outside the root (a `--kubelet-root-dir` elsewhere) is opened as the user named it.
    pub fn open_dir_local(&self, local: &Path) -> io::Result<OwnedFd> {
        match self.below_root(local) {
            Ok(rel) => self.open(rel, OFlags::RDONLY | OFlags::DIRECTORY),
            Err(_) => Ok(rustix::fs::openat(CWD, local, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?),
        }
    }

    /// A path's metadata as this process reaches it, resolved beneath the root (a final
    /// symlink followed there).
    pub fn stat_local(&self, local: &Path) -> io::Result<rustix::fs::Stat> {
        let fd = self.open_local(local, OFlags::PATH)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// Whether a local path is a regular file, resolved beneath the root.
    pub fn is_file_local(&self, local: &Path) -> bool {
        self.stat_local(local).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
    }

    /// Whether a local path is a directory, resolved beneath the root.
    pub fn is_dir_local(&self, local: &Path) -> bool {
        self.stat_local(local).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
    }

    /// The paths in a directory (as this process reaches it: `local` joined with each
    /// name), listed beneath the root; `.` and `..` left out.
    pub fn list_dir_local(&self, local: &Path) -> io::Result<Vec<PathBuf>> {
        use std::os::unix::ffi::OsStrExt;
        let fd = self.open_dir_local(local)?;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&fd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(local.join(std::ffi::OsStr::from_bytes(n)));
            }
        }
        Ok(out)
    }

    /// Whether this root's `/proc` is procfs: its files come from a running kernel (the
    /// host itself, or the host mounted at `/host`), not from a fixture tree.
    pub fn is_kernel_host(&self) -> bool {
        *self.kernel.get_or_init(|| {
            self.open("/proc", OFlags::RDONLY | OFlags::DIRECTORY)
                .ok()
                .and_then(|fd| beneath::fs_magic(fd.as_fd()).ok())
                .is_some_and(|m| m == beneath::PROC_SUPER_MAGIC)
        })
    }

    /// The inverse of [`HostPaths::host`]: the host's name for a local path,
    /// used in output so reports show `/sys/fs/cgroup/memory`, not `/host/sys/...`.
    pub fn to_host_path(&self, local: &Path) -> PathBuf {
        match local.strip_prefix(&self.root) {
            Ok(rest) if !self.is_host_root() => Path::new("/").join(rest),
            _ => local.to_path_buf(),
        }
    }
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths::new("/")
    }
}

/// `root` joined with `host_path`; `..` never climbs above `root`.
fn join_host(root: &Path, host_path: &Path) -> PathBuf {
    let mut rel: Vec<OsString> = Vec::new();
    for c in parts(host_path) {
        if c == ".." {
            rel.pop();
        } else {
            rel.push(c);
        }
    }
    std::iter::once(root.as_os_str()).chain(rel.iter().map(OsString::as_os_str)).collect()
}

/// The names and `..` of a path (root and `.` dropped).
fn parts(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_join_under_root() {
        let h = HostPaths::new("/host");
        assert_eq!(h.host("/proc/cgroups"), PathBuf::from("/host/proc/cgroups"));
        assert_eq!(h.sys(), PathBuf::from("/host/sys"));
        assert_eq!(h.kubelet_pods(), PathBuf::from("/host/var/lib/kubelet/pods"));
        assert_eq!(h.to_host_path(Path::new("/host/sys/fs/cgroup")), PathBuf::from("/sys/fs/cgroup"));
        let slash = HostPaths::default();
        assert_eq!(slash.host("/proc"), PathBuf::from("/proc"));
        assert_eq!(slash.to_host_path(Path::new("/sys/fs/cgroup")), PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn dot_dot_never_leaves_the_root() {
        let h = HostPaths::new("/host");
        assert_eq!(h.host("/../../etc/passwd"), PathBuf::from("/host/etc/passwd"));
        assert_eq!(h.host("/var/../etc"), PathBuf::from("/host/etc"));
    }

    #[test]
    fn symlinks_resolve_inside_the_host_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("run/kured")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(root.join("boot/efi/EFI/redhat")).unwrap();
        std::fs::create_dir_all(root.join("boot/grub2")).unwrap();
        // RHEL 8: /var/run -> ../run (relative), Debian: -> /run (absolute).
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../efi/EFI/redhat/grubenv", root.join("boot/grub2/grubenv")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../etc", root.join("run/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("run/loop")).unwrap();
        let h = HostPaths::new(root);
        assert_eq!(h.resolve("/var/run/reboot-required").unwrap(), root.join("run/reboot-required"), "absolute target re-rooted");
        assert_eq!(h.resolve("/var/run/kured/x").unwrap(), root.join("run/kured/x"));
        assert_eq!(h.resolve("/boot/grub2/grubenv").unwrap(), root.join("boot/efi/EFI/redhat/grubenv"), "relative target");
        assert_eq!(h.resolve("/run/up/shadow").unwrap(), root.join("etc/shadow"), "`..` in a target stops at the root");
        assert_eq!(h.resolve("/no/such/file").unwrap(), root.join("no/such/file"));
        assert_eq!(h.resolve("/run/loop"), None, "a loop");
    }

    #[test]
    fn reads_stay_beneath_the_root_and_are_bounded() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(t.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("proc/cgroups")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("proc/meminfo")).unwrap();
        let h = HostPaths::new(&root);
        for fallback in [false, true] {
            crate::beneath::force_fallback(fallback);
            let e = h.read("/proc/cgroups", 1024).unwrap_err();
            assert!(e.is_gone(), "an absolute link is the host's path, not ours: {e}");
            assert!(h.read("/proc/meminfo", 1024).is_err());
        }
        crate::beneath::force_fallback(false);
        std::fs::write(root.join("proc/stat"), "x".repeat(2000)).unwrap();
        let e = h.read("/proc/stat", 1024).unwrap_err();
        assert!(e.to_string().contains("proc/stat") && e.to_string().contains("1 KiB cap"), "{e}");
        assert!(!h.is_kernel_host());
        assert!(HostPaths::default().is_kernel_host());
    }

    /// Paths resolved before are written and read again following no link: one put on the
    /// way since (`/var/run -> /run` here) is refused, never followed out of the root.
    #[test]
    fn writes_and_their_reads_follow_no_link_beneath_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::fs::write(root.join("run/file"), "inside").unwrap();
        let h = HostPaths::new(&root);
        for fallback in [false, true] {
            crate::beneath::force_fallback(fallback);
            let (dir, name) = h.open_parent_nofollow(&root.join("run/kured/x"), Some(Mode::from_raw_mode(0o755))).unwrap();
            assert_eq!(name, "x");
            assert!(rustix::fs::fstat(&dir).is_ok() && root.join("run/kured").is_dir(), "fallback {fallback}");
            let e = h.open_parent_nofollow(&root.join("var/run/kured/x"), Some(Mode::from_raw_mode(0o755))).unwrap_err();
            assert_eq!(crate::beneath::explain(&e), "a symbolic link on the way: not followed", "fallback {fallback}");
            assert!(h.open_parent_nofollow(Path::new("/elsewhere/x"), None).is_err(), "not under the root");
            assert_eq!(h.read_bytes_nofollow_local(&root.join("run/file"), 64).unwrap(), b"inside");
            assert!(h.read_bytes_nofollow_local(&root.join("var/run/file"), 64).is_err(), "fallback {fallback}");
            assert_eq!(h.read_local(&root.join("var/run/file"), 64).unwrap(), "inside", "a read of the host's path follows it");
            std::fs::remove_dir(root.join("run/kured")).unwrap();
        }
        crate::beneath::force_fallback(false);
    }

    #[test]
    fn kubelet_root_can_be_overridden() {
        let h = HostPaths::new("/host").with_kubelet_root("/data/kubelet");
        assert_eq!(h.kubelet_pods(), PathBuf::from("/data/kubelet/pods"));
    }
}

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Where the host's files are. Nothing else in cgleak hard-codes a path:
/// `/proc`, `/sys`, the kubelet's state and the cgroup mounts are all found
/// through this value, so `--host-root /host` and fixture trees work alike.
#[derive(Debug, Clone)]
pub struct HostPaths {
    root: PathBuf,
    kubelet_root: PathBuf,
}

impl HostPaths {
    /// `root` is the directory where the host's `/` is visible (`/` on the host).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let kubelet_root = join_host(&root, Path::new("/var/lib/kubelet"));
        HostPaths { root, kubelet_root }
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
    fn kubelet_root_can_be_overridden() {
        let h = HostPaths::new("/host").with_kubelet_root("/data/kubelet");
        assert_eq!(h.kubelet_pods(), PathBuf::from("/data/kubelet/pods"));
    }
}

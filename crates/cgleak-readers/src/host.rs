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

fn join_host(root: &Path, host_path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in host_path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
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
    fn kubelet_root_can_be_overridden() {
        let h = HostPaths::new("/host").with_kubelet_root("/data/kubelet");
        assert_eq!(h.kubelet_pods(), PathBuf::from("/data/kubelet/pods"));
    }
}

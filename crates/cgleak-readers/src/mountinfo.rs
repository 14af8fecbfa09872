//! Cgroup mounts, discovered from `<root>/proc/self/mountinfo`, never assumed.
//!
//! Handles v1 hierarchies (co-mounted ones such as `cpu,cpuacct` included), v2,
//! and hybrid (v1 controllers plus cgroup2 at `.../unified`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bounded::MOUNTINFO_CAP;
use crate::error::{ReadError, Result};
use crate::host::HostPaths;

/// One line of mountinfo (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parse mountinfo text. Lines that do not have the ` - ` separator are reported.
pub fn parse_mountinfo(path: &Path, text: &str) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || ReadError::unexpected(path, format!("line {}: not a mountinfo line: {:?}", no + 1, truncate(line)));
        let (pre, post) = line.split_once(" - ").ok_or_else(bad)?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 3 {
            return Err(bad());
        }
        let mount_point = unescape(pre[4]);
        if let Some(why) = unclean(&mount_point) {
            return Err(ReadError::unexpected(
                path,
                format!("line {}: mount point {:?} {why}: refused (the kernel writes every mount point as a clean absolute path)", no + 1, truncate(&mount_point)),
            ));
        }
        out.push(MountEntry {
            root: PathBuf::from(unescape(pre[3])),
            mount_point: PathBuf::from(mount_point),
            fstype: post[0].to_string(),
            super_options: post[2].split(',').map(str::to_string).collect(),
        });
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Why a mount point is not a clean absolute path (`/`, or `/` and names), if it is not.
fn unclean(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        return Some("is not absolute");
    }
    if p.contains('\0') {
        return Some("holds a NUL byte");
    }
    if p == "/" {
        return None;
    }
    for c in p[1..].split('/') {
        match c {
            "" => return Some("has an empty component (`//` or a trailing `/`)"),
            "." => return Some("has a `.` component"),
            ".." => return Some("has a `..` component"),
            _ => {}
        }
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    V1,
    V2,
    Hybrid,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        }
    }
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupMount {
    /// 1 or 2.
    pub version: u8,
    /// The mount point as the host names it (`/sys/fs/cgroup/memory`).
    pub mount_point: PathBuf,
    /// The same directory as this process reaches it (under `--host-root`).
    #[serde(skip)]
    pub local: PathBuf,
    /// The cgroup this mount shows as its root (`/` unless a cgroup namespace or bind mount).
    pub root: PathBuf,
    /// v1: the controllers bound to the hierarchy (`cpu`, `cpuacct`); v2: empty here.
    pub controllers: Vec<String>,
    /// v1 named hierarchies (`name=systemd`).
    pub name: Option<String>,
}

/// Every cgroup mount of the host and the mode they add up to.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub v1: Vec<CgroupMount>,
    pub v2: Option<CgroupMount>,
}

/// Where the memory controller lives.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryHierarchy {
    pub version: u8,
    pub mount: CgroupMount,
}

const V1_CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls", "perf_event", "net_prio",
    "hugetlb", "pids", "rdma", "misc",
];

impl CgroupLayout {
    /// Read `<root>/proc/self/mountinfo`. When it is not the kernel's (not served by
    /// procfs: a fixture tree), the root is registered as a fixture root, where cgroup
    /// files may be on tmpfs ([`crate::beneath::register_fixture_root`]).
    pub fn discover(host: &HostPaths) -> Result<CgroupLayout> {
        use std::os::fd::AsFd;
        let path = host.host("/proc/self/mountinfo");
        let fd = host.open("/proc/self/mountinfo", rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK).map_err(|e| ReadError::io(&path, e))?;
        if crate::beneath::fs_magic(fd.as_fd()).ok() != Some(crate::beneath::PROC_SUPER_MAGIC) {
            crate::beneath::register_fixture_root(host.root());
        }
        let text = crate::bounded::read_fd_string(fd, &path, MOUNTINFO_CAP)?;
        let entries = parse_mountinfo(&path, &text)?;
        Ok(Self::from_entries(host, &entries))
    }

    pub fn from_entries(host: &HostPaths, entries: &[MountEntry]) -> CgroupLayout {
        // In a container with the host at /host, mountinfo lists both the container's
        // own cgroup mounts and the host's under /host: prefer the latter.
        let under_root: Vec<&MountEntry> = if host.is_host_root() {
            Vec::new()
        } else {
            entries
                .iter()
                .filter(|e| is_cgroup(e) && e.mount_point.starts_with(host.root()))
                .collect()
        };
        let chosen: Vec<&MountEntry> = if under_root.is_empty() {
            entries.iter().filter(|e| is_cgroup(e)).collect()
        } else {
            under_root
        };
        let mut v1: Vec<CgroupMount> = Vec::new();
        let mut v2: Option<CgroupMount> = None;
        for e in chosen {
            let (local, host_name) = if !host.is_host_root() && e.mount_point.starts_with(host.root()) {
                (e.mount_point.clone(), host.to_host_path(&e.mount_point))
            } else {
                (host.host(&e.mount_point), e.mount_point.clone())
            };
            // A fixture's symlinks on the way to a mount point resolve inside its root, so
            // the cgroup paths made from `local` hold no symlink (beneath::open_cgroup_path).
            let local = if host.is_host_root() { local } else { host.resolve(host.to_host_path(&local)).unwrap_or(local) };
            if e.fstype == "cgroup2" {
                // Several cgroup2 mounts show the same hierarchy: keep the one that shows its root.
                let replace = match &v2 {
                    None => true,
                    Some(old) => old.root != Path::new("/") && e.root == Path::new("/"),
                };
                if replace {
                    v2 = Some(CgroupMount {
                        version: 2,
                        mount_point: host_name,
                        local,
                        root: e.root.clone(),
                        controllers: Vec::new(),
                        name: None,
                    });
                }
                continue;
            }
            let controllers: Vec<String> = e
                .super_options
                .iter()
                .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
                .cloned()
                .collect();
            let name = e.super_options.iter().find_map(|o| o.strip_prefix("name=")).map(str::to_string);
            let m = CgroupMount { version: 1, mount_point: host_name, local, root: e.root.clone(), controllers, name };
            if let Some(old) = v1.iter_mut().find(|o| o.controllers == m.controllers && o.name == m.name) {
                if old.root != Path::new("/") && m.root == Path::new("/") {
                    *old = m;
                }
            } else {
                v1.push(m);
            }
        }
        let mode = match (v1.is_empty(), v2.is_some()) {
            (false, true) => CgroupMode::Hybrid,
            (true, true) => CgroupMode::V2,
            _ => CgroupMode::V1,
        };
        CgroupLayout { mode, v1, v2 }
    }

    /// The v1 hierarchy that carries `controller`.
    pub fn v1_with(&self, controller: &str) -> Option<&CgroupMount> {
        self.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller))
    }

    /// Where the memory controller is: a v1 hierarchy, or v2 if its root lists
    /// `memory` in `cgroup.controllers`. None: no memory controller on this host.
    /// Use [`CgroupLayout::memory_checked`] to tell "none" from "could not look".
    pub fn memory(&self) -> Option<MemoryHierarchy> {
        self.memory_checked().ok().flatten()
    }

    /// As [`CgroupLayout::memory`], but an unreadable v2 `cgroup.controllers`
    /// (EACCES as non-root, say) is an error naming the file, not "no controller".
    pub fn memory_checked(&self) -> Result<Option<MemoryHierarchy>> {
        if let Some(m) = self.v1_with("memory") {
            return Ok(Some(MemoryHierarchy { version: 1, mount: m.clone() }));
        }
        let Some(v2) = self.v2.as_ref() else { return Ok(None) };
        let path = v2.local.join("cgroup.controllers");
        let controllers = match crate::cgroupfs::read_file(&path) {
            Ok(c) => c,
            Err(e) if e.is_gone() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| MemoryHierarchy { version: 2, mount: v2.clone() }))
    }

    /// Every hierarchy a container runtime writes into (v1 ones and the v2 one).
    pub fn all(&self) -> impl Iterator<Item = &CgroupMount> {
        self.v1.iter().chain(self.v2.iter())
    }
}

fn is_cgroup(e: &MountEntry) -> bool {
    e.fstype == "cgroup" || e.fstype == "cgroup2"
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_with_comounted_controllers() {
        let entries = parse_mountinfo(Path::new("mi"), HYBRID).unwrap();
        let l = CgroupLayout::from_entries(&HostPaths::default(), &entries);
        assert_eq!(l.mode, CgroupMode::Hybrid);
        let cpu = l.v1_with("cpuacct").unwrap();
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(l.memory().unwrap().mount.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(l.v1.iter().find(|m| m.name.is_some()).unwrap().name.as_deref(), Some("systemd"));
    }

    #[test]
    fn v2_only_and_host_root_mapping() {
        let text = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let entries = parse_mountinfo(Path::new("mi"), text).unwrap();
        let l = CgroupLayout::from_entries(&HostPaths::new("/fixture"), &entries);
        assert_eq!(l.mode, CgroupMode::V2);
        let v2 = l.v2.unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(v2.local, PathBuf::from("/fixture/sys/fs/cgroup"));
    }

    #[test]
    fn container_prefers_host_mounts_under_root() {
        let text = "\
500 400 0:40 /kubepods/pod1/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
600 400 0:32 / /host/sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
";
        let entries = parse_mountinfo(Path::new("mi"), text).unwrap();
        let l = CgroupLayout::from_entries(&HostPaths::new("/host"), &entries);
        let m = l.memory().unwrap().mount;
        assert_eq!(m.local, PathBuf::from("/host/sys/fs/cgroup/memory"));
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m.root, PathBuf::from("/"));
    }

    #[test]
    fn escaped_mount_points_and_garbage() {
        let text = "1 0 0:1 / /mnt/a\\040b rw - cgroup cgroup rw,pids\n";
        let e = parse_mountinfo(Path::new("mi"), text).unwrap();
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt/a b"));
        let err = parse_mountinfo(Path::new("/proc/self/mountinfo"), "garbage line\n").unwrap_err();
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
    }

    #[test]
    fn unclean_mount_points_are_refused_naming_the_line() {
        for (mp, why) in [
            ("/host/../x", "`..`"),
            ("/sys/fs/./cgroup", "`.`"),
            ("/sys//fs", "empty"),
            ("/sys/fs/", "empty"),
            ("sys/fs/cgroup", "not absolute"),
            ("/sys/fs\\000x", "NUL"),
        ] {
            let text = format!("30 23 0:26 / /proc rw - proc proc rw\n31 23 0:27 / {mp} rw - cgroup cgroup rw,pids\n");
            let err = parse_mountinfo(Path::new("/proc/self/mountinfo"), &text).unwrap_err().to_string();
            assert!(err.contains("/proc/self/mountinfo") && err.contains("line 2") && err.contains(why), "{mp}: {err}");
        }
        assert!(parse_mountinfo(Path::new("mi"), "1 0 0:1 / / rw - ext4 /dev/sda rw\n").is_ok());
    }
}

//! Host-level files of a fake root: /proc, mountinfo, kubelet state, binaries.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::write::{create_dir_all, create_file_with_content, set_mode};

/// Held while fake binaries are written and while a test spawns a process.
///
/// A fork made while another thread holds a script open for writing inherits that
/// descriptor until its exec; running the script meanwhile fails with ETXTBSY. With
/// writers and spawners serialised, no fork can see such a descriptor.
static EXEC_LOCK: Mutex<()> = Mutex::new(());

pub fn exec_lock() -> MutexGuard<'static, ()> {
    EXEC_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake host root being written.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A host path (`/proc/cgroups`) inside the fake root.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    pub fn file(&self, host_path: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(host_path);
        create_file_with_content(&p, content);
        p
    }

    pub fn dir(&self, host_path: &str) -> PathBuf {
        create_dir_all(&self.path(host_path))
    }

    /// `/proc/sys/kernel/osrelease` (what `uname -r` prints).
    pub fn osrelease(&self, release: &str) {
        self.file("/proc/sys/kernel/osrelease", format!("{release}\n"));
    }

    pub fn cmdline(&self, cmdline: &str) {
        self.file("/proc/cmdline", format!("{cmdline}\n"));
    }

    pub fn meminfo(&self, m: Meminfo) {
        let used = m.mem_total_kib - m.mem_free_kib;
        self.file(
            "/proc/meminfo",
            format!(
                "MemTotal:       {:>8} kB\nMemFree:        {:>8} kB\nMemAvailable:   {:>8} kB\nBuffers:        {:>8} kB\nCached:         {:>8} kB\nSwapCached:     {:>8} kB\nSwapTotal:      {:>8} kB\nSwapFree:       {:>8} kB\nShmem:          {:>8} kB\nSlab:           {:>8} kB\nSReclaimable:   {:>8} kB\nSUnreclaim:     {:>8} kB\n",
                m.mem_total_kib,
                m.mem_free_kib,
                m.mem_free_kib + used / 3,
                used / 40,
                used / 3,
                if m.swap_total_kib > m.swap_free_kib { 2048 } else { 0 },
                m.swap_total_kib,
                m.swap_free_kib,
                used / 50,
                m.slab_kib,
                m.slab_kib / 2,
                m.slab_kib - m.slab_kib / 2,
            ),
        );
    }

    /// `/proc/self/mountinfo`.
    pub fn mountinfo(&self, m: &Mountinfo) {
        self.file("/proc/self/mountinfo", m.text());
    }

    /// `/proc/cgroups` in the kernel's format (cgroup-v1.c proc_cgroupstats_show).
    pub fn proc_cgroups(&self, rows: &[ProcCgroupsRow]) {
        let mut s = String::from("#subsys_name\thierarchy\tnum_cgroups\tenabled\n");
        for r in rows {
            s.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                r.subsys,
                r.hierarchy,
                r.num_cgroups,
                u8::from(r.enabled)
            ));
        }
        self.file("/proc/cgroups", s);
    }

    /// A process: `/proc/<pid>/comm` and the NUL-separated `/proc/<pid>/cmdline`.
    pub fn process(&self, pid: u32, comm: &str, argv: &[&str]) {
        self.file(&format!("/proc/{pid}/comm"), format!("{comm}\n"));
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        self.file(&format!("/proc/{pid}/cmdline"), cmdline);
    }

    /// A pod the kubelet knows: `<kubelet root>/pods/<uid>` with its usual contents.
    pub fn kubelet_pod_dir(&self, uid: &str) {
        let d = self.dir(&format!("/var/lib/kubelet/pods/{uid}"));
        create_dir_all(&d.join("volumes/kubernetes.io~projected"));
        create_dir_all(&d.join("plugins/kubernetes.io~empty-dir"));
        create_dir_all(&d.join("containers"));
        create_file_with_content(
            &d.join("etc-hosts"),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n",
        );
    }

    /// A KubeletConfiguration file at `host_path`.
    pub fn kubelet_config(&self, host_path: &str, cgroup_driver: Option<&str>, extra: &str) {
        let mut s = String::from(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\nauthorization:\n  mode: Webhook\n",
        );
        if let Some(d) = cgroup_driver {
            s.push_str(&format!("cgroupDriver: {d}\n"));
        }
        s.push_str("clusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\nstaticPodPath: /etc/kubernetes/manifests\n");
        s.push_str(extra);
        self.file(host_path, s);
    }

    /// A fake binary at `host_path`: a shell script that prints `version_output` for
    /// `--version` (and `-v`, `version`), mode 755.
    pub fn fake_binary(&self, host_path: &str, version_output: &str) {
        let name = host_path.rsplit('/').next().unwrap_or(host_path);
        let script = format!(
            "#!/bin/sh\n# cgleak fixture: a stand-in for {name}; it only knows its version.\ncase \"$1\" in\n--version|-v|version)\ncat <<'CGLEAK_EOF'\n{}\nCGLEAK_EOF\nexit 0;;\nesac\necho \"{name}: fixture stand-in, only --version is implemented\" >&2\nexit 2\n",
            version_output.trim_end()
        );
        let _guard = exec_lock();
        let p = self.file(host_path, script);
        set_mode(&p, 0o755);
    }
}

/// What `/proc/meminfo` is written from; the default has no memory and no swap, so a
/// host without swap gives its memory and slab and `..Meminfo::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meminfo {
    pub mem_total_kib: u64,
    pub mem_free_kib: u64,
    pub swap_total_kib: u64,
    pub swap_free_kib: u64,
    pub slab_kib: u64,
}

#[derive(Debug, Clone)]
pub struct ProcCgroupsRow {
    pub subsys: &'static str,
    pub hierarchy: u32,
    pub num_cgroups: u64,
    pub enabled: bool,
}

/// The root filesystem line of mountinfo, which differs by distribution.
#[derive(Debug, Clone, Copy)]
pub enum RootFs {
    /// CentOS/RHEL 7: XFS on LVM, SELinux labels.
    CentosXfs,
    /// Debian: ext4 on a partition.
    DebianExt4,
}

/// `/proc/self/mountinfo` (proc(5)): base mounts, then cgroup mounts as added.
#[derive(Debug, Clone)]
pub struct Mountinfo {
    lines: Vec<String>,
    next_id: u32,
    next_minor: u32,
    next_shared: u32,
    seclabel: bool,
    cgroup_parent: u32,
    root_id: u32,
    sys_id: u32,
}

impl Mountinfo {
    pub fn new(root: RootFs) -> Mountinfo {
        let (lines, seclabel) = match root {
            RootFs::CentosXfs => (
                vec![
                    "1 0 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,seclabel,attr2,inode64,noquota",
                    "18 1 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel",
                    "19 1 0:3 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw",
                    "20 1 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,seclabel,size=3989408k,nr_inodes=997352,mode=755",
                    "23 1 0:19 / /run rw,nosuid,nodev shared:23 - tmpfs tmpfs rw,seclabel,mode=755",
                    "24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,seclabel,mode=755",
                    "90 1 8:1 / /boot rw,relatime shared:26 - xfs /dev/sda1 rw,seclabel,attr2,inode64,noquota",
                ],
                true,
            ),
            RootFs::DebianExt4 => (
                vec![
                    "21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard,errors=remount-ro",
                    "22 21 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
                    "23 21 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
                    "24 21 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4019852k,nr_inodes=1004963,mode=755",
                    "25 21 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=806484k,mode=755",
                ],
                false,
            ),
        };
        let (root_id, sys_id, cgroup_parent, next_id) = match root {
            RootFs::CentosXfs => (1, 18, 24, 25),
            RootFs::DebianExt4 => (21, 22, 22, 26),
        };
        Mountinfo {
            lines: lines.into_iter().map(str::to_string).collect(),
            next_id,
            next_minor: 24,
            next_shared: 9,
            seclabel,
            cgroup_parent,
            root_id,
            sys_id,
        }
    }

    fn push(
        &mut self,
        parent: u32,
        mount_point: &str,
        mount_opts: &str,
        fstype: &str,
        source: &str,
        super_opts: &str,
    ) -> u32 {
        let id = self.next_id;
        self.lines.push(format!(
            "{id} {parent} 0:{} / {mount_point} {mount_opts} shared:{} - {fstype} {source} {super_opts}",
            self.next_minor, self.next_shared
        ));
        self.next_id += 1;
        self.next_minor += 1;
        self.next_shared += 1;
        id
    }

    /// The tmpfs at /sys/fs/cgroup that v1 and hybrid systems mount their hierarchies in
    /// (CentOS's base mounts already have it).
    pub fn cgroup_tmpfs(&mut self) -> &mut Self {
        if !self.seclabel {
            let id = self.push(
                self.sys_id,
                "/sys/fs/cgroup",
                "ro,nosuid,nodev,noexec",
                "tmpfs",
                "tmpfs",
                "ro,size=4096k,nr_inodes=1024,mode=755",
            );
            self.cgroup_parent = id;
        }
        self
    }

    /// A v1 hierarchy at /sys/fs/cgroup/<dir>; `options` are its super options after
    /// `rw` (`cpuacct,cpu`, `xattr,name=systemd`). Returns the mount point.
    pub fn cgroup_v1(&mut self, dir: &str, options: &str) -> String {
        let mp = format!("/sys/fs/cgroup/{dir}");
        let opts = if self.seclabel {
            format!("rw,seclabel,{options}")
        } else {
            format!("rw,{options}")
        };
        let parent = self.cgroup_parent;
        self.push(
            parent,
            &mp,
            "rw,nosuid,nodev,noexec,relatime",
            "cgroup",
            "cgroup",
            &opts,
        );
        mp
    }

    /// A cgroup2 mount.
    pub fn cgroup2(&mut self, mount_point: &str, options: &str) -> &mut Self {
        let parent = if mount_point == "/sys/fs/cgroup" {
            self.sys_id
        } else {
            self.cgroup_parent
        };
        self.push(
            parent,
            mount_point,
            "rw,nosuid,nodev,noexec,relatime",
            "cgroup2",
            "cgroup2",
            &format!("rw,{options}"),
        );
        self
    }

    /// Any other mount (a pod's secret volume, a tracefs).
    pub fn other(
        &mut self,
        mount_point: &str,
        fstype: &str,
        source: &str,
        super_opts: &str,
    ) -> &mut Self {
        self.push(
            self.root_id,
            mount_point,
            "rw,relatime",
            fstype,
            source,
            super_opts,
        );
        self
    }

    /// Remove the lines whose mount point is `mount_point` (for bad-input tests).
    pub fn without(&mut self, mount_point: &str) -> &mut Self {
        self.lines
            .retain(|l| l.split(' ').nth(4) != Some(mount_point));
        self
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

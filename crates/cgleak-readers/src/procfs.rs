//! Files under `<root>/proc`.

use std::path::Path;

use serde::Serialize;

use crate::bounded::{excerpt, PROC_CGROUPS_CAP, PROC_FILE_CAP};
use crate::error::{ReadError, Result};
use crate::host::HostPaths;

/// One row of `/proc/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcCgroupsRow {
    pub subsys: String,
    pub hierarchy: u32,
    pub num_cgroups: u64,
    pub enabled: bool,
}

/// `/proc/cgroups`: per controller, its hierarchy and `num_cgroups`.
pub fn read_proc_cgroups(host: &HostPaths) -> Result<Vec<ProcCgroupsRow>> {
    let path = host.host("/proc/cgroups");
    parse_proc_cgroups(&path, &host.read("/proc/cgroups", PROC_CGROUPS_CAP)?)
}

pub fn parse_proc_cgroups(path: &Path, text: &str) -> Result<Vec<ProcCgroupsRow>> {
    let mut rows = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || ReadError::unexpected(path, format!("line {}: expected 'name hierarchy num_cgroups enabled', got {}", no + 1, excerpt(line)));
        if f.len() != 4 {
            return Err(bad());
        }
        rows.push(ProcCgroupsRow {
            subsys: f[0].to_string(),
            hierarchy: f[1].parse().map_err(|_| bad())?,
            num_cgroups: f[2].parse().map_err(|_| bad())?,
            enabled: f[3] == "1",
        });
    }
    Ok(rows)
}

/// The running kernel's release (`uname -r`), from `/proc/sys/kernel/osrelease`.
pub fn read_osrelease(host: &HostPaths) -> Result<String> {
    let path = host.host("/proc/sys/kernel/osrelease");
    let s = host.read("/proc/sys/kernel/osrelease", PROC_FILE_CAP)?;
    let s = s.trim();
    if s.is_empty() {
        return Err(ReadError::unexpected(&path, "empty kernel release"));
    }
    Ok(s.to_string())
}

/// The kernel command line, `/proc/cmdline`.
pub fn read_cmdline(host: &HostPaths) -> Result<String> {
    Ok(host.read("/proc/cmdline", PROC_FILE_CAP)?.trim().to_string())
}

/// Write a sysctl file under `<root>/proc/sys` (`drop_caches`), given as this process
/// reaches it: no symlink on its path, never created, a regular file, and on a kernel
/// host one on procfs (a fixture's stand-in only beneath a fixture root).
pub fn write_sysctl(path: &Path, value: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let fd = crate::beneath::open_cgroup_path(path, rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::TRUNC | rustix::fs::OFlags::NONBLOCK)?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::other(format!("is {}, not a sysctl file: not written", crate::bounded::file_type_name(st.st_mode))));
    }
    let magic = crate::beneath::fs_magic(fd.as_fd())?;
    if magic != crate::beneath::PROC_SUPER_MAGIC && crate::beneath::check_cgroupfs(fd.as_fd(), path).is_err() {
        return Err(std::io::Error::other(format!("not on procfs (filesystem magic {magic:#x}): refused to change it")));
    }
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty())?;
    rustix::io::write(&fd, value)?;
    Ok(())
}

/// Whether a boot parameter `key=value` (or bare `key`) is on a command line.
pub fn cmdline_has(cmdline: &str, param: &str) -> bool {
    // Arguments after a lone "--" go to init, not the kernel.
    cmdline.split_whitespace().take_while(|a| *a != "--").any(|a| a == param)
}

/// Swap figures from `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwapInfo {
    pub total_kib: u64,
    pub free_kib: u64,
}

impl SwapInfo {
    pub fn used_kib(&self) -> u64 {
        self.total_kib.saturating_sub(self.free_kib)
    }
}

pub fn read_swap(host: &HostPaths) -> Result<SwapInfo> {
    let text = host.read("/proc/meminfo", PROC_FILE_CAP)?;
    let mut s = SwapInfo::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let key = it.next().unwrap_or("");
        let val = it.next().and_then(|v| v.parse::<u64>().ok());
        match (key, val) {
            ("SwapTotal:", Some(v)) => s.total_kib = v,
            ("SwapFree:", Some(v)) => s.free_kib = v,
            _ => {}
        }
    }
    Ok(s)
}

/// Processes whose command name (`/proc/<pid>/comm`) is `comm`, with their argv.
/// Used to find a running kubelet and its flags. Processes that exit meanwhile are skipped.
pub fn find_processes(host: &HostPaths, comm: &str) -> Vec<(u32, Vec<String>)> {
    let Ok(proc) = host.open("/proc", rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY) else { return Vec::new() };
    let Ok(rd) = rustix::fs::Dir::read_from(&proc) else { return Vec::new() };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().ok().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(c) = host.read(format!("/proc/{pid}/comm"), PROC_FILE_CAP) else { continue };
        if c.trim() != comm {
            continue;
        }
        let argv = host
            .read_bytes(format!("/proc/{pid}/cmdline"), PROC_FILE_CAP)
            .map(|b| b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            .unwrap_or_default();
        out.push((pid, argv));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroups_parses_and_rejects_garbage() {
        let t = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t4\t43\t1\n";
        let rows = parse_proc_cgroups(Path::new("/proc/cgroups"), t).unwrap();
        assert_eq!(rows[1], ProcCgroupsRow { subsys: "memory".into(), hierarchy: 4, num_cgroups: 43, enabled: true });
        let err = parse_proc_cgroups(Path::new("/proc/cgroups"), "memory\tfour\t43\t1\n").unwrap_err();
        assert!(err.to_string().contains("/proc/cgroups") && err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn a_huge_proc_cgroups_is_refused_and_errors_quote_little() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc")).unwrap();
        let f = std::fs::File::create(t.path().join("proc/cgroups")).unwrap();
        f.set_len(PROC_CGROUPS_CAP + 1).unwrap();
        let e = read_proc_cgroups(&HostPaths::new(t.path())).unwrap_err().to_string();
        assert!(e.contains("proc/cgroups") && e.contains("1 MiB cap"), "{e}");
        let long = format!("memory\t{}\n", "9".repeat(100_000));
        let e = parse_proc_cgroups(Path::new("/proc/cgroups"), &long).unwrap_err().to_string();
        assert!(e.len() < 300, "{} bytes", e.len());
    }

    #[test]
    fn cmdline_param_stops_at_init_args() {
        let c = "BOOT_IMAGE=/vmlinuz ro cgroup.memory=nokmem quiet -- cgroup.memory=other";
        assert!(cmdline_has(c, "cgroup.memory=nokmem"));
        assert!(!cmdline_has(c, "cgroup.memory=other"));
        assert!(!cmdline_has("ro quiet", "cgroup.memory=nokmem"));
    }
}

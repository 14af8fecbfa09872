//! Files under `<root>/proc`.

use std::path::Path;

use serde::Serialize;

use crate::error::{ReadError, Result};
use crate::host::HostPaths;

pub(crate) fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ReadError::io(path, e))
}

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
    parse_proc_cgroups(&path, &read_string(&path)?)
}

pub fn parse_proc_cgroups(path: &Path, text: &str) -> Result<Vec<ProcCgroupsRow>> {
    let mut rows = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || ReadError::unexpected(path, format!("line {}: expected 'name hierarchy num_cgroups enabled', got {:?}", no + 1, line));
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
    let s = read_string(&path)?;
    let s = s.trim();
    if s.is_empty() {
        return Err(ReadError::unexpected(&path, "empty kernel release"));
    }
    Ok(s.to_string())
}

/// The kernel command line, `/proc/cmdline`.
pub fn read_cmdline(host: &HostPaths) -> Result<String> {
    let path = host.host("/proc/cmdline");
    Ok(read_string(&path)?.trim().to_string())
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
    let path = host.host("/proc/meminfo");
    let text = read_string(&path)?;
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
    let proc = host.proc();
    let Ok(rd) = std::fs::read_dir(&proc) else { return Vec::new() };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(c) = std::fs::read_to_string(ent.path().join("comm")) else { continue };
        if c.trim() != comm {
            continue;
        }
        let argv = std::fs::read(ent.path().join("cmdline"))
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
    fn cmdline_param_stops_at_init_args() {
        let c = "BOOT_IMAGE=/vmlinuz ro cgroup.memory=nokmem quiet -- cgroup.memory=other";
        assert!(cmdline_has(c, "cgroup.memory=nokmem"));
        assert!(!cmdline_has(c, "cgroup.memory=other"));
        assert!(!cmdline_has("ro quiet", "cgroup.memory=nokmem"));
    }
}

//! The kubelet's state on the host: the pods it knows and its cgroup driver.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{is_gone_io, ReadError, Result};
use crate::host::HostPaths;
use crate::procfs::find_processes;

/// UIDs of pods the kubelet still knows: directory names under host.kubelet_pods().
/// None when that directory does not exist (then no orphan can be claimed).
pub fn read_pod_uids(host: &HostPaths) -> Result<Option<BTreeSet<String>>> {
    let pods = host.kubelet_pods();
    let fd = match host.open_dir_local(&pods) {
        Ok(fd) => fd,
        Err(e) if is_gone_io(&e) => return Ok(None),
        Err(e) => return Err(ReadError::io(&pods, e)),
    };
    let rd = rustix::fs::Dir::read_from(&fd).map_err(|e| ReadError::io(&pods, e.into()))?;
    let mut uids = BTreeSet::new();
    for ent in rd {
        let ent = ent.map_err(|e| ReadError::io(&pods, e.into()))?;
        let is_dir = match ent.file_type() {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => rustix::fs::statat(&fd, ent.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory),
            _ => false,
        };
        // A pod UID is ASCII; a name that is not UTF-8 cannot be one.
        match ent.file_name().to_str() {
            Ok(name) if is_dir && name != "." && name != ".." => {
                uids.insert(name.to_string());
            }
            _ => {}
        }
    }
    Ok(Some(uids))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupDriverSetting {
    /// "systemd" or "cgroupfs", as configured.
    pub driver: String,
    /// Host path of the file that says so, or "kubelet command line (pid N)".
    pub source: String,
}

/// A running kubelet process, if any: pid and argv.
pub fn running_kubelet(host: &HostPaths) -> Option<(u32, Vec<String>)> {
    // A zombie or exiting kubelet has an empty cmdline: prefer one whose argv was read.
    let procs = find_processes(host, "kubelet");
    let with_argv = procs.iter().find(|(_, argv)| !argv.is_empty()).cloned();
    with_argv.or_else(|| procs.into_iter().next())
}

/// The kubelet's configured cgroup driver: a running kubelet's --cgroup-driver flag
/// (flags override the config file), else its config file (--config, else
/// <kubelet root>/config.yaml), else <kubelet root>/kubeadm-flags.env. None if none says.
pub fn read_cgroup_driver(host: &HostPaths) -> Option<CgroupDriverSetting> {
    let kubelet = running_kubelet(host);
    if let Some((pid, argv)) = &kubelet {
        if let Some(driver) = flag_value(argv.iter().skip(1).map(String::as_str), "--cgroup-driver") {
            return Some(CgroupDriverSetting { driver, source: format!("kubelet command line (pid {pid})") });
        }
    }
    // --config in the kubelet's argv is a host path.
    let config: PathBuf = kubelet
        .as_ref()
        .and_then(|(_, argv)| flag_value(argv.iter().skip(1).map(String::as_str), "--config"))
        .map(|p| host.host(p))
        .unwrap_or_else(|| host.kubelet_root().join("config.yaml"));
    if let Some(driver) = read_opt(host, &config).and_then(|t| config_cgroup_driver(&t)) {
        return Some(CgroupDriverSetting { driver, source: host_display(host, &config) });
    }
    let env = host.kubelet_root().join("kubeadm-flags.env");
    if let Some(driver) = read_opt(host, &env).and_then(|t| env_cgroup_driver(&t)) {
        return Some(CgroupDriverSetting { driver, source: host_display(host, &env) });
    }
    None
}

fn read_opt(host: &HostPaths, path: &Path) -> Option<String> {
    host.read_local(path, crate::bounded::CONFIG_FILE_CAP).ok()
}

fn host_display(host: &HostPaths, local: &Path) -> String {
    host.to_host_path(local).display().to_string()
}

/// The value of a pflag-style flag (`--name=v` or `--name v`); the last one wins, as in pflag.
fn flag_value<'a>(args: impl IntoIterator<Item = &'a str>, name: &str) -> Option<String> {
    let mut args = args.into_iter();
    let mut found = None;
    while let Some(a) = args.next() {
        if a == "--" {
            break; // the rest are positional arguments
        }
        let Some(rest) = a.strip_prefix(name) else { continue };
        if let Some(v) = rest.strip_prefix('=') {
            found = Some(v);
        } else if rest.is_empty() {
            found = args.next();
        }
    }
    let v = found?.trim().trim_matches('"').trim_matches('\'');
    (!v.is_empty()).then(|| v.to_string())
}

/// `cgroupDriver: systemd` in a KubeletConfiguration (YAML, or JSON `"cgroupDriver": "systemd",`).
fn config_cgroup_driver(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let line = line.split(" #").next().unwrap_or("").trim();
        let (key, value) = line.split_once(':')?;
        if key.trim().trim_matches('"').trim_matches('\'') != "cgroupDriver" {
            return None;
        }
        let v = value.trim().trim_start_matches(['"', '\'']).split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}')).next().unwrap_or("");
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// `KUBELET_KUBEADM_ARGS="--cgroup-driver=systemd ..."` in kubeadm-flags.env.
fn env_cgroup_driver(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (_, value) = line.split_once('=')?;
        flag_value(value.trim().trim_matches('"').trim_matches('\'').split_whitespace(), "--cgroup-driver")
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// A fake `/proc/<pid>` with its comm and NUL-separated cmdline.
    fn process(root: &Path, pid: u32, comm: &str, argv: &[&str]) {
        write(root, &format!("proc/{pid}/comm"), format!("{comm}\n").as_bytes());
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        write(root, &format!("proc/{pid}/cmdline"), cmdline.as_bytes());
    }

    #[test]
    fn pod_uids_are_directory_names_or_none() {
        let t = tempfile::tempdir().unwrap();
        let host = HostPaths::new(t.path());
        assert_eq!(read_pod_uids(&host).unwrap(), None);
        let pods = host.kubelet_pods();
        for uid in ["0b6c6e6a-1111-4c3b-9f0e-aaaaaaaaaaaa", "d9f0c1e2-2222-4b7a-8c6d-bbbbbbbbbbbb"] {
            fs::create_dir_all(pods.join(uid).join("volumes")).unwrap();
        }
        fs::write(pods.join("stray-file"), "").unwrap();
        let uids = read_pod_uids(&host).unwrap().unwrap();
        assert_eq!(uids.into_iter().collect::<Vec<_>>(), ["0b6c6e6a-1111-4c3b-9f0e-aaaaaaaaaaaa", "d9f0c1e2-2222-4b7a-8c6d-bbbbbbbbbbbb"]);
    }

    #[test]
    fn pod_uids_follow_an_overridden_kubelet_root() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("data/kubelet/pods/uid-1")).unwrap();
        let host = HostPaths::new(t.path()).with_kubelet_root(t.path().join("data/kubelet"));
        assert_eq!(read_pod_uids(&host).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn running_kubelet_is_found_by_comm() {
        let t = tempfile::tempdir().unwrap();
        let host = HostPaths::new(t.path());
        assert_eq!(running_kubelet(&host), None);
        process(t.path(), 7, "containerd", &["/usr/bin/containerd"]);
        write(t.path(), "proc/9/comm", b"kubelet\n"); // a zombie: empty cmdline
        write(t.path(), "proc/9/cmdline", b"");
        process(t.path(), 42, "kubelet", &["/usr/bin/kubelet", "--v=2"]);
        assert_eq!(running_kubelet(&host), Some((42, vec!["/usr/bin/kubelet".to_string(), "--v=2".to_string()])));
    }

    #[test]
    fn driver_from_the_command_line_wins() {
        let t = tempfile::tempdir().unwrap();
        let host = HostPaths::new(t.path());
        write(t.path(), "var/lib/kubelet/config.yaml", b"cgroupDriver: cgroupfs\n");
        process(t.path(), 42, "kubelet", &["/usr/bin/kubelet", "--cgroup-driver", "systemd", "--v=2"]);
        let d = read_cgroup_driver(&host).unwrap();
        assert_eq!(d, CgroupDriverSetting { driver: "systemd".into(), source: "kubelet command line (pid 42)".into() });
        process(t.path(), 42, "kubelet", &["/usr/bin/kubelet", "--cgroup-driver=systemd", "--cgroup-driver=cgroupfs"]);
        assert_eq!(read_cgroup_driver(&host).unwrap().driver, "cgroupfs");
    }

    #[test]
    fn driver_from_the_running_kubelets_config_file_as_a_host_path() {
        let t = tempfile::tempdir().unwrap();
        let host = HostPaths::new(t.path());
        write(t.path(), "etc/kubernetes/kubelet.yaml", b"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd  # set by kubeadm\n");
        write(t.path(), "var/lib/kubelet/config.yaml", b"cgroupDriver: cgroupfs\n");
        process(t.path(), 42, "kubelet", &["/usr/bin/kubelet", "--config=/etc/kubernetes/kubelet.yaml"]);
        let d = read_cgroup_driver(&host).unwrap();
        assert_eq!(d, CgroupDriverSetting { driver: "systemd".into(), source: "/etc/kubernetes/kubelet.yaml".into() });
    }

    #[test]
    fn driver_from_default_config_then_kubeadm_flags() {
        let t = tempfile::tempdir().unwrap();
        let host = HostPaths::new(t.path());
        assert_eq!(read_cgroup_driver(&host), None);
        write(
            t.path(),
            "var/lib/kubelet/kubeadm-flags.env",
            b"# written by kubeadm\nKUBELET_KUBEADM_ARGS=\"--network-plugin=cni --cgroup-driver=systemd --pod-infra-container-image=k8s.gcr.io/pause:3.2\"\n",
        );
        let d = read_cgroup_driver(&host).unwrap();
        assert_eq!(d, CgroupDriverSetting { driver: "systemd".into(), source: "/var/lib/kubelet/kubeadm-flags.env".into() });
        // a config file that does not name a driver does not stop the search
        write(t.path(), "var/lib/kubelet/config.yaml", b"kind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\n");
        assert_eq!(read_cgroup_driver(&host).unwrap().driver, "systemd");
        write(t.path(), "var/lib/kubelet/config.yaml", b"kind: KubeletConfiguration\ncgroupDriver: \"cgroupfs\"\n");
        let d = read_cgroup_driver(&host).unwrap();
        assert_eq!(d, CgroupDriverSetting { driver: "cgroupfs".into(), source: "/var/lib/kubelet/config.yaml".into() });
    }

    #[test]
    fn config_and_flag_parsing_edge_cases() {
        assert_eq!(config_cgroup_driver("{\n  \"kind\": \"KubeletConfiguration\",\n  \"cgroupDriver\": \"systemd\",\n}"), Some("systemd".into()));
        assert_eq!(config_cgroup_driver("cgroupDriver:\n"), None);
        assert_eq!(config_cgroup_driver("# cgroupDriver: systemd\n"), None);
        assert_eq!(config_cgroup_driver("cgroupDriverX: systemd\n"), None);
        assert_eq!(flag_value(["--cgroup-driver"], "--cgroup-driver"), None);
        assert_eq!(flag_value(["--cgroup-drivers=x"], "--cgroup-driver"), None);
        assert_eq!(flag_value(["--", "--cgroup-driver=systemd"], "--cgroup-driver"), None);
    }
}

//! The files that may pin a pod's dying memcgs, and their cached pages by memcg: a pod's
//! volumes (`<kubelet root>/pods/<uid>/volumes`), its logs (`/var/log/pods/<ns>_<name>_<uid>/`)
//! and the overlay upper directories of its containers (from the host's mountinfo), handed to
//! [`cgleak_readers::pagecache::pinning_files`]. What that can see and cannot is documented
//! there: in short, a dying memcg's pages are reported under its nearest online ancestor's
//! inode (for a dead container of a live pod, the pod's memcg).

use std::path::PathBuf;

use cgleak_readers::bounded::MOUNTINFO_CAP;
use cgleak_readers::mountinfo::parse_mountinfo;
use cgleak_readers::pagecache::{pinning_files, FileLimits, FilesReport};
use cgleak_readers::{HostPaths, ReadError};

/// Host paths that may hold a pod's cached files: its volumes directory, its log
/// directories, and the overlay upper dirs of mounts whose mount point names one of
/// `container_ids` (containerd's `.../k8s.io/<id>/rootfs`, CRI-O's and Docker's `<id>/merged`).
/// Only paths that exist; none when nothing of the pod is left on the node.
pub fn pod_candidates(host: &HostPaths, pod_uid: &str, container_ids: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let volumes = host.kubelet_pods().join(pod_uid).join("volumes");
    if host.is_dir_local(&volumes) {
        out.push(host.to_host_path(&volumes));
    }
    let logs = host.host("/var/log/pods");
    let suffix = format!("_{pod_uid}");
    if let Ok(entries) = host.list_dir_local(&logs) {
        let mut dirs: Vec<PathBuf> = entries.into_iter().filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix))).collect();
        dirs.sort();
        out.extend(dirs.iter().map(|d| host.to_host_path(d)));
    }
    if !container_ids.is_empty() {
        out.extend(overlay_upper_dirs(host, container_ids).unwrap_or_default());
    }
    out
}

/// The `upperdir=` of overlay mounts in the host's mount namespace (`/proc/1/mountinfo`)
/// whose mount point has a component that is one of `container_ids`.
pub fn overlay_upper_dirs(host: &HostPaths, container_ids: &[String]) -> Result<Vec<PathBuf>, ReadError> {
    let path = host.host("/proc/1/mountinfo");
    let text = host.read("/proc/1/mountinfo", MOUNTINFO_CAP)?;
    let mut out = Vec::new();
    for m in parse_mountinfo(&path, &text)? {
        if m.fstype != "overlay" {
            continue;
        }
        let names_one = m.mount_point.components().any(|c| c.as_os_str().to_str().is_some_and(|n| container_ids.iter().any(|id| id == n)));
        if !names_one {
            continue;
        }
        if let Some(upper) = m.super_options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
            out.push(PathBuf::from(upper));
        }
    }
    Ok(out)
}

/// [`pinning_files`] of a pod's [`pod_candidates`].
pub fn pod_pinning_files(host: &HostPaths, pod_uid: &str, container_ids: &[String], limits: FileLimits) -> Result<FilesReport, ReadError> {
    pinning_files(host, &pod_candidates(host, pod_uid, container_ids), limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const UID: &str = "5d1c2b3a-4f5e-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn a_pods_volumes_logs_and_its_containers_upper_dirs_are_candidates() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let id = "abc123";
        let upper = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/42/fs".to_string();
        for d in [format!("var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/cache"), format!("var/log/pods/default_web-0_{UID}/app"), "var/log/pods/default_other_x".into(), upper[1..].to_string(), "proc/1".into()] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join(format!("var/log/pods/default_web-0_{UID}/app/0.log")), b"hello\n").unwrap();
        fs::write(
            r.join("proc/1/mountinfo"),
            format!(
                "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                 2 1 0:50 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/rootfs rw - overlay overlay rw,lowerdir=/l1:/l2,upperdir={upper},workdir=/w\n\
                 3 1 0:51 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/other/rootfs rw - overlay overlay rw,lowerdir=/l3,upperdir=/u/other,workdir=/w2\n"
            ),
        )
        .unwrap();
        let host = HostPaths::new(r);
        let c = pod_candidates(&host, UID, &[id.to_string()]);
        assert_eq!(
            c,
            vec![PathBuf::from(format!("/var/lib/kubelet/pods/{UID}/volumes")), PathBuf::from(format!("/var/log/pods/default_web-0_{UID}")), PathBuf::from(&upper)]
        );
        assert_eq!(pod_candidates(&host, "nope", &[]), Vec::<PathBuf>::new());
        // The files beneath them, read under the host root.
        let rep = pod_pinning_files(&host, UID, &[id.to_string()], FileLimits::default()).unwrap();
        assert_eq!(rep.files.len(), 1, "{rep:?}");
        assert_eq!(rep.files[0].path, PathBuf::from(format!("/var/log/pods/default_web-0_{UID}/app/0.log")));
        assert_eq!(rep.files[0].size_bytes, 6);
        // This root has no /proc/kpagecgroup: resident bytes only, and said why.
        assert_eq!(rep.method, cgleak_readers::pagecache::Method::MincoreOnly);
        assert!(rep.cannot_see.iter().any(|n| n.contains("/proc/kpagecgroup is absent") && n.contains("resident bytes only")), "{rep:?}");
        assert_eq!(rep.files[0].by_memcg_inode.len(), 0);
        assert_eq!(rep.files[0].unattributed_bytes, rep.files[0].resident_bytes);
    }
}

//! Arbitrary bytes as the kubelet's config file and kubeadm's flags file, in a host root of
//! the target's own (cgleak_readers::kubelet::read_cgroup_driver, the cgroup driver `check`
//! reports and judges by): never a panic; a driver it finds is a word of one of the files, no
//! blank or quotes around it, and named with the file that says so.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cgleak_readers::kubelet::read_cgroup_driver;
use cgleak_readers::HostPaths;
use libfuzzer_sys::fuzz_target;

/// A host root of this process's own (in /dev/shm where there is one), made once.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let r = base.join(format!("cgleak-fuzz-kubelet-{}", std::process::id()));
        std::fs::create_dir_all(r.join("var/lib/kubelet")).unwrap();
        r
    })
}

fuzz_target!(|data: &[u8]| {
    // config.yaml, then (after the first NUL) kubeadm-flags.env.
    let (config, env) = match data.iter().position(|c| *c == 0) {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (data, &[][..]),
    };
    let dir = root().join("var/lib/kubelet");
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("kubeadm-flags.env"), env).unwrap();
    let Some(d) = read_cgroup_driver(&HostPaths::new(root())) else { return };
    assert!(!d.driver.is_empty(), "{d:?}");
    assert_eq!(d.driver.trim(), d.driver, "{d:?}");
    assert!(!d.driver.starts_with(['"', '\'']) && !d.driver.ends_with(['"', '\'']), "{d:?}");
    let from = match d.source.as_str() {
        "/var/lib/kubelet/config.yaml" => config,
        "/var/lib/kubelet/kubeadm-flags.env" => env,
        other => panic!("driver from {other}"),
    };
    assert!(String::from_utf8_lossy(from).contains(&d.driver), "{d:?}");
});

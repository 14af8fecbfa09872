//! Arbitrary bytes as `/proc/self/mountinfo` (cgleak_readers::mountinfo): parsing never
//! panics, every mount point it returns is a clean absolute path (the kernel writes no other,
//! and one that is not would lead a reader out of its hierarchy), and the cgroup layout made
//! from the entries never panics and names only cgroup mounts that were in the text.
#![no_main]

use std::path::{Component, Path};

use cgleak_readers::mountinfo::{parse_mountinfo, CgroupLayout};
use cgleak_readers::HostPaths;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(entries) = parse_mountinfo(Path::new("/proc/self/mountinfo"), &text) else { return };
    assert!(entries.len() <= text.lines().count());
    for e in &entries {
        assert!(e.mount_point.is_absolute(), "{:?}", e.mount_point);
        assert!(e.mount_point.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))), "{:?}", e.mount_point);
    }
    for root in ["/", "/host"] {
        let host = HostPaths::new(root);
        let layout = CgroupLayout::from_entries(&host, &entries);
        for m in layout.all() {
            assert!(entries.iter().any(|e| e.mount_point == m.mount_point || host.to_host_path(&e.mount_point) == m.mount_point), "{m:?} not among the entries");
            assert!(m.mount_point.is_absolute(), "{m:?}");
        }
        let _ = layout.memory();
        let _ = layout.memory_checked();
        let _ = layout.mode.as_str();
    }
});

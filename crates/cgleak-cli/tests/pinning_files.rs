//! Files that pin memcgs (`cgleak_readers::pagecache::pinning_files`) on this kernel: a file
//! written from a scratch memcg is resident and attributed to that memcg; once the memcg is
//! removed (dying: its page cache still charged to it), kpagecgroup reports the nearest
//! online ancestor, the scratch parent (mm/memcontrol.c page_cgroup_ino).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use cgleak_readers::pagecache::{pinning_files, FileLimits, Method};
use cgleak_readers::HostPaths;
use common::kernel::{assert_not_tmpfs, assert_root, drop_page_cache_of, memory_mount, poll, serial, spawn_writer_in, ScratchCgroup};

const BYTES: u64 = 4 << 20;

#[test]
fn real_kernel_a_dying_memcgs_file_is_attributed_to_its_nearest_online_ancestor() {
    assert_root();
    assert_eq!(memory_mount().version, 1, "this host's memory hierarchy is cgroup v1 at /sys/fs/cgroup/memory");
    let _serial = serial();
    let scratch = ScratchCgroup::create_in_memory("pinning");
    let child = scratch.path().join("writer");
    fs::create_dir(&child).unwrap_or_else(|e| panic!("mkdir {}: {e}", child.display()));
    let (parent_ino, child_ino) = (fs::metadata(scratch.path()).unwrap().ino(), fs::metadata(&child).unwrap().ino());

    let files = tempfile::Builder::new().prefix("cgleak-test-pinning-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_not_tmpfs(files.path());
    let file = files.path().join("written-from-the-memcg");
    // Its page cache, released whatever happens below, so the dying memcg can go.
    struct DropCache(std::path::PathBuf);
    impl Drop for DropCache {
        fn drop(&mut self) {
            if self.0.exists() {
                drop_page_cache_of(&self.0);
            }
        }
    }
    let _release = DropCache(file.clone());
    let st = spawn_writer_in(&child, &file, BYTES).wait().unwrap();
    assert!(st.success(), "writer: {st}");

    let host = HostPaths::new("/");
    let limits = FileLimits { max_mapped_bytes: 1 << 20, ..FileLimits::default() };
    // Online: charged to the writer's memcg.
    let r = pinning_files(&host, std::slice::from_ref(&file), limits).unwrap();
    assert_eq!(r.method, Method::MincorePagemapKpagecgroup, "{r:?}");
    assert!(r.cannot_see.is_empty(), "{r:?}");
    let f = &r.files[0];
    assert_eq!((f.path.as_path(), f.size_bytes), (file.as_path(), BYTES));
    assert!(f.resident_bytes >= BYTES * 9 / 10, "{f:?}");
    let on_child = f.by_memcg_inode.get(&child_ino).copied().unwrap_or(0);
    assert!(on_child >= BYTES * 9 / 10, "online: charged to the writer's memcg {child_ino}: {f:?}");

    // Removed, its pages still charged: dying. kpagecgroup names the scratch parent now.
    fs::remove_dir(&child).unwrap_or_else(|e| panic!("rmdir {}: {e}", child.display()));
    // Offline comes after rmdir returns (kernel/cgroup/cgroup.c kill_css: offline_css runs
    // from css_killed_work_fn once the percpu ref is confirmed dead, after an RCU grace
    // period): until then the kernel still reports the memcg itself.
    let started = std::time::Instant::now();
    let r = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        let r = pinning_files(&host, std::slice::from_ref(&file), limits).unwrap();
        (!r.files[0].by_memcg_inode.contains_key(&child_ino)).then_some(r)
    })
    .unwrap_or_else(|| panic!("20 s after its rmdir, kpagecgroup still reports the removed memcg {child_ino}"));
    eprintln!("reported as its ancestor's {:?} after the rmdir", started.elapsed());
    let f = &r.files[0];
    assert!(f.resident_bytes >= BYTES * 9 / 10, "{f:?}");
    assert_eq!(f.by_memcg_inode.get(&child_ino), None, "a dying memcg is never reported itself: {f:?}");
    let on_parent = f.by_memcg_inode.get(&parent_ino).copied().unwrap_or(0);
    assert!(on_parent >= BYTES * 9 / 10, "dying: attributed to the nearest online ancestor {parent_ino}: {f:?}");
    assert_eq!(f.by_memcg_inode.values().sum::<u64>() + f.unattributed_bytes, f.resident_bytes);
    eprintln!("{r:?}");

    drop(_release);
    fs::remove_file(&file).unwrap();
    scratch.remove();
}

/// Unprivileged (uid and gid 65534, no capabilities), `/proc/kpagecgroup` (mode 0400) cannot
/// be opened: resident bytes only, and the report says why. Run in a child of this test
/// binary that drops to nobody before exec.
#[test]
fn real_kernel_unprivileged_it_says_it_cannot_attribute() {
    const CHILD: &str = "CGLEAK_PINNING_UNPRIVILEGED_FILE";
    if let Some(file) = std::env::var_os(CHILD) {
        let r = pinning_files(&HostPaths::new("/"), &[std::path::PathBuf::from(file)], FileLimits::default()).unwrap();
        println!("REPORT {}", serde_json::to_string(&r).unwrap());
        return;
    }
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("readable");
    fs::write(&file, vec![5u8; 8192]).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "real_kernel_unprivileged_it_says_it_cannot_attribute", "--nocapture", "--test-threads=1"]).env(CHILD, &file);
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups/setgid/setuid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // libtest prints `test <name> ... ` before it on the same line.
    let json = stdout.lines().find_map(|l| l.split_once("REPORT ").map(|(_, r)| r)).unwrap_or_else(|| panic!("no report: {stdout}"));
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(r["method"], "mincore_only", "{r}");
    let why = r["cannot_see"].to_string();
    assert!(why.contains("/proc/kpagecgroup") && why.contains("CAP_SYS_ADMIN") && why.contains("resident bytes only"), "{r}");
    assert_eq!(r["files"][0]["resident_bytes"], 8192, "{r}");
    assert_eq!(r["files"][0]["unattributed_bytes"], 8192, "{r}");
}

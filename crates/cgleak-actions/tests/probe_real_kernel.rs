//! The probe against the running kernel's memory cgroup hierarchy.
//!
//! Needs root and a mounted memory controller; the environment is asserted first so
//! these tests can never pass by testing nothing. Safety: every cgroup is created
//! under a test parent `cgleak-test-<pid>-probe-<test>` that a Drop guard removes
//! (deepest first), no process is ever moved, and no test creates more than a few
//! hundred memcgs.
//!
//! `to_limit` never meets the memcg ID limit here (that would fill the host's ID space; the
//! guest lab's `to-limit` scenario does it in qemu): on real memcgs it is run against its cap,
//! and its handling of a full space against a small tmpfs (`nr_inodes`), whose mkdir fails
//! with ENOSPC, one of the exhaustion errnos, when the inodes run out.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cgleak_actions::cgroup_tree::{remove_tree_deepest_first, WhenBusy};
use cgleak_actions::probe::{run_probe, ProbeError, ProbeOptions, ProbeProgress};
use cgleak_readers::mountinfo::{CgroupLayout, MemoryHierarchy};
use cgleak_readers::HostPaths;

fn memory_hierarchy() -> MemoryHierarchy {
    assert!(
        rustix::process::geteuid().is_root(),
        "real_kernel_ tests create memory cgroups and must run as root (euid is {})",
        rustix::process::geteuid().as_raw()
    );
    let layout = CgroupLayout::discover(&HostPaths::default()).expect("reading /proc/self/mountinfo");
    layout.memory().expect("real_kernel_ tests need a mounted memory cgroup controller: none in /proc/self/mountinfo")
}

/// `<memory root>/cgleak-test-<pid>-probe-<tag>`, removed with all its subdirectories on drop.
struct TestParent {
    local: PathBuf,
    host: PathBuf,
    version: u8,
}

impl TestParent {
    fn new(tag: &str) -> TestParent {
        let mem = memory_hierarchy();
        let name = format!("cgleak-test-{}-probe-{tag}", std::process::id());
        let local = mem.mount.local.join(&name);
        fs::create_dir(&local).unwrap_or_else(|e| panic!("mkdir {}: {e}", local.display()));
        TestParent { local, host: mem.mount.mount_point.join(&name), version: mem.version }
    }

    fn options(&self, count: u32) -> ProbeOptions {
        ProbeOptions {
            count,
            parent: self.local.clone(),
            host_name_of_parent: self.host.clone(),
            memory_version: self.version,
            cancel: Arc::new(AtomicBool::new(false)),
            to_limit: false,
        }
    }

    fn assert_empty(&self) {
        let left = subdirs(&self.local);
        assert!(left.is_empty(), "left behind under {}: {left:?}", self.local.display());
        // kernfs: st_nlink = 2 + subdirectories (docs/kernel-facts.md section 2).
        assert_eq!(fs::metadata(&self.local).unwrap().nlink(), 2);
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        remove_tree(&self.local);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect()
}

/// rmdir a cgroup and its descendants with the probe's own removal (deepest first).
fn remove_tree(dir: &Path) {
    for line in remove_tree_deepest_first(dir, WhenBusy::Wait).leftover_lines() {
        eprintln!("cleanup: rmdir {line}");
    }
}

#[test]
fn real_kernel_probe_creates_and_removes_200_memcgs() {
    let parent = TestParent::new("200");
    let mut scratch = PathBuf::new();
    let mut saw_memcg = false;
    let r = run_probe(&parent.options(200), &mut |p| match p {
        ProbeProgress::Started { scratch_parent } => scratch = scratch_parent,
        ProbeProgress::Created { done: 200, .. } => {
            // The children are real memcgs: they have the memory controller's files.
            saw_memcg =
                scratch.join("p199/memory.usage_in_bytes").exists() || scratch.join("p199/memory.current").exists();
            assert_eq!(fs::metadata(&scratch).unwrap().nlink(), 2 + 200);
        }
        _ => {}
    })
    .unwrap();
    assert!(r.success, "{r:#?}");
    assert_eq!((r.requested, r.created, r.removed), (200, 200, 200));
    assert_eq!((r.failed_at, r.errno.as_deref(), r.error.as_deref()), (None, None, None));
    assert!(!r.exhausted && !r.interrupted && r.leftover.is_empty());
    assert!(saw_memcg, "children of {} had no memory controller files", scratch.display());
    assert!(r.scratch_parent.starts_with(&format!("{}/cgleak-probe-{}-", parent.host.display(), std::process::id())));
    assert_eq!(r.memory_version, parent.version);
    assert!(!scratch.exists());
    parent.assert_empty();
}

#[test]
fn real_kernel_cancel_after_50_callbacks_removes_everything() {
    let parent = TestParent::new("cancel");
    let opts = parent.options(200);
    let cancel = opts.cancel.clone();
    let mut calls = 0;
    let r = run_probe(&opts, &mut |_| {
        calls += 1;
        if calls == 50 {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(r.interrupted && !r.success, "{r:#?}");
    // Started, then 49 Created: the 50th callback is the one that cancels.
    assert_eq!((r.created, r.removed, r.failed_at), (49, 49, None));
    assert!(r.leftover.is_empty(), "{r:#?}");
    parent.assert_empty();
}

#[test]
fn real_kernel_mkdir_failure_half_way_reports_index_and_errno() {
    let parent = TestParent::new("midway");
    let mut scratch = PathBuf::new();
    // Taking p10's name before the probe gets to it makes that mkdir fail (EEXIST).
    let r = run_probe(&parent.options(100), &mut |p| match p {
        ProbeProgress::Started { scratch_parent } => scratch = scratch_parent,
        ProbeProgress::Created { done: 10, .. } => fs::create_dir(scratch.join("p10")).unwrap(),
        _ => {}
    })
    .unwrap();
    assert!(!r.success, "{r:#?}");
    assert_eq!((r.created, r.removed, r.failed_at), (10, 10, Some(10)));
    assert_eq!(r.errno.as_deref(), Some("EEXIST"));
    assert!(!r.exhausted);
    assert!(r.error.as_deref().unwrap().contains(&format!("{}/p10", r.scratch_parent)), "{r:#?}");
    // The probe does not remove what it did not create: the scratch parent still
    // holds our p10, so its rmdir fails (EBUSY, retried) and it is reported.
    assert_eq!(r.leftover, vec![r.scratch_parent.clone()]);
    assert!(r.error.is_some());
    assert_eq!(subdirs(&scratch), vec![scratch.join("p10")]);
    remove_tree(&scratch);
    parent.assert_empty();
}

#[test]
fn real_kernel_panicking_callback_leaves_nothing_behind() {
    let parent = TestParent::new("panic");
    let opts = parent.options(60);
    let res = catch_unwind(AssertUnwindSafe(|| {
        run_probe(&opts, &mut |p| {
            if p == (ProbeProgress::Created { done: 30, total: 60 }) {
                panic!("progress callback failed on purpose");
            }
        })
    }));
    assert!(res.is_err());
    parent.assert_empty();
}

#[test]
fn real_kernel_bad_parent_is_an_error_naming_it() {
    let parent = TestParent::new("badparent");
    let missing = parent.local.join("missing");
    let regular_file = parent.local.join("cgroup.procs");
    assert!(regular_file.is_file());
    for bad in [missing, regular_file] {
        let mut opts = parent.options(5);
        opts.parent = bad.clone();
        opts.host_name_of_parent = bad.clone();
        let e = run_probe(&opts, &mut |_| panic!("no progress expected")).unwrap_err();
        assert!(matches!(e, ProbeError::CreateScratch { .. }), "{e:?}");
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
        assert!(!e.is_permission(), "{e}");
    }
    parent.assert_empty();
}

/// This host is hybrid: memory is a v1 controller, so the cgroup2 hierarchy has no
/// memory in its root's subtree_control, and a v2 probe there must refuse, creating nothing.
#[test]
fn real_kernel_v2_without_memory_refuses() {
    memory_hierarchy();
    let layout = CgroupLayout::discover(&HostPaths::default()).unwrap();
    let v2 = layout.v2.expect("this test needs a cgroup2 mount (the hybrid layout of the test host)");
    let control = fs::read_to_string(v2.local.join("cgroup.subtree_control")).unwrap();
    assert!(
        !control.split_whitespace().any(|c| c == "memory"),
        "this test needs a cgroup2 hierarchy without memory delegated; {} has: {control}",
        v2.local.display()
    );
    let opts = ProbeOptions {
        count: 3,
        parent: v2.local.clone(),
        host_name_of_parent: v2.mount_point.clone(),
        memory_version: 2,
        cancel: Arc::new(AtomicBool::new(false)),
        to_limit: false,
    };
    let e = run_probe(&opts, &mut |_| panic!("no progress expected")).unwrap_err();
    assert!(matches!(e, ProbeError::MemoryNotDelegated { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("{}/cgroup.subtree_control", v2.mount_point.display())), "{e}");
    let ours = format!("cgleak-probe-{}-", std::process::id());
    let made: Vec<PathBuf> = subdirs(&v2.local)
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(&ours))
        .collect();
    assert!(made.is_empty(), "created {made:?}");
}

#[test]
fn real_kernel_to_limit_on_memcgs_stops_at_its_cap_and_removes_everything() {
    let parent = TestParent::new("tolimit-cap");
    let mut opts = parent.options(300);
    opts.to_limit = true;
    let r = run_probe(&opts, &mut |_| {}).unwrap();
    assert!(r.to_limit && !r.success && !r.exhausted, "{r:#?}");
    assert_eq!((r.requested, r.created, r.removed, r.failed_at), (300, 300, 300, None));
    assert_eq!((r.headroom, r.no_free_id_ms, r.removals_until_free), (None, None, None));
    assert!(r.error.as_deref().unwrap().contains("no memcg ID limit was met"), "{r:#?}");
    assert!(r.leftover.is_empty(), "{r:#?}");
    parent.assert_empty();
}

/// A tmpfs with `nr_inodes` inodes (its root takes one), unmounted and removed on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn new(inodes: u32) -> SmallTmpfs {
        assert!(rustix::process::geteuid().is_root(), "mounting a tmpfs needs root");
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("nr_inodes={inodes},size=1m"), "cgleak-test-tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {}: {st}", dir.path().display());
        // It stands in for a memory hierarchy with a small ID space: the probe's mkdir and
        // rmdir, which change only cgroupfs, are let through beneath it as beneath a fixture.
        cgleak_readers::beneath::register_fixture_root(dir.path());
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

fn tmpfs_options(fs: &SmallTmpfs, cap: u32) -> ProbeOptions {
    ProbeOptions {
        count: cap,
        parent: fs.path().to_path_buf(),
        host_name_of_parent: fs.path().to_path_buf(),
        memory_version: 1,
        cancel: Arc::new(AtomicBool::new(false)),
        to_limit: true,
    }
}

#[test]
fn real_kernel_to_limit_counts_the_scratch_parent_and_measures_the_full_window() {
    // 50 inodes: the root takes one, so 49 mkdirs succeed (the scratch parent and 48 children).
    let fs = SmallTmpfs::new(50);
    let mut created = 0;
    let r = run_probe(&tmpfs_options(&fs, 1000), &mut |p| {
        if let ProbeProgress::Created { done, .. } = p {
            created = done;
        }
    })
    .unwrap();
    assert!(r.success && r.to_limit && r.exhausted, "{r:#?}");
    assert_eq!((r.created, created, r.removed, r.failed_at), (48, 48, 48, Some(48)));
    assert_eq!(r.errno.as_deref(), Some("ENOSPC"));
    assert_eq!(r.headroom, Some(49), "48 children + the scratch parent");
    // tmpfs frees the inode at rmdir: the first removal gives the space back.
    assert_eq!(r.removals_until_free, Some(1), "{r:#?}");
    let ms = r.no_free_id_ms.unwrap();
    assert!(ms > 0.0 && ms < 1000.0, "{ms}");
    assert!(r.leftover.is_empty());
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0, "left behind in {}", fs.path().display());
}

#[test]
fn real_kernel_to_limit_with_room_for_the_scratch_parent_only() {
    // Room for one mkdir: the scratch parent's. Headroom 1, freed by removing the parent.
    let fs = SmallTmpfs::new(2);
    let r = run_probe(&tmpfs_options(&fs, 1000), &mut |_| {}).unwrap();
    assert!(r.success, "{r:#?}");
    assert_eq!((r.created, r.failed_at, r.headroom, r.removals_until_free), (0, Some(0), Some(1), Some(1)));
    assert!(r.no_free_id_ms.is_some());
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

#[test]
fn real_kernel_to_limit_on_a_full_space_reports_headroom_0() {
    let fs = SmallTmpfs::new(3);
    std::fs::create_dir(fs.path().join("a")).unwrap();
    std::fs::create_dir(fs.path().join("b")).unwrap();
    let r = run_probe(&tmpfs_options(&fs, 1000), &mut |_| panic!("no progress expected")).unwrap();
    assert!(!r.success && r.exhausted && r.to_limit, "{r:#?}");
    assert_eq!((r.created, r.failed_at, r.headroom), (0, Some(0), Some(0)));
    assert_eq!((r.no_free_id_ms, r.removals_until_free), (None, None), "the space was full before the probe");
    assert_eq!(r.errno.as_deref(), Some("ENOSPC"));
}


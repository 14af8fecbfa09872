//! The lab's loop and teardown, with a stand-in runtime (a shell script) and fake
//! hierarchies in a temp dir: no root, no kernel cgroups. The real thing is tested by
//! crates/cgleak-cli/tests/lab_real_kernel.rs.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cgleak_readers::mountinfo::{CgroupMode, CgroupMount};

use super::*;

/// A temp dir with three fake hierarchies (memory, cpu, unified), a fake runtime and busybox.
struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    /// `fail_run_in`: `run` fails for containers whose cgroupsPath contains it.
    fn new(fail_run_in: Option<&str>) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        // Plain directories stand in for the hierarchies: tmpfs, not cgroupfs.
        cgleak_readers::beneath::register_fixture_root(dir.path());
        let b = Bench { dir };
        for m in ["memory", "cpu", "unified"] {
            fs::create_dir_all(b.mount(m)).unwrap();
        }
        fs::write(b.path().join("busybox"), "#!/bin/true\n").unwrap();
        let mounts: Vec<String> =
            ["memory", "cpu", "unified"].iter().map(|m| b.mount(m).display().to_string()).collect();
        let script = FAKE_RUNTIME
            .replace("@MOUNTS@", &mounts.join(" "))
            .replace("@FAIL_IN@", fail_run_in.unwrap_or("/no-such-cgroup/"));
        let rt = b.path().join("fake-runc");
        fs::write(&rt, script).unwrap();
        fs::set_permissions(&rt, fs::Permissions::from_mode(0o755)).unwrap();
        b
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mount(&self, name: &str) -> PathBuf {
        self.path().join("cg").join(name)
    }

    fn options(&self) -> LabOptions {
        let mount = |name: &str, version: u8, controllers: &[&str]| CgroupMount {
            version,
            mount_point: PathBuf::from("/sys/fs/cgroup").join(name),
            local: self.mount(name),
            root: PathBuf::from("/"),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            name: None,
        };
        let memory = mount("memory", 1, &["memory"]);
        let layout = CgroupLayout {
            mode: CgroupMode::Hybrid,
            v1: vec![mount("cpu", 1, &["cpu"]), memory.clone()],
            v2: Some(mount("unified", 2, &[])),
        };
        let mem_root = self.mount("memory");
        LabOptions {
            pods: 3,
            containers_per_pod: 2,
            pods_per_minute: 1200,
            duration: Some(Duration::from_millis(700)),
            page_cache_mib: 1,
            keep_data_mib: 1024,
            orphan_every: None,
            runtime: Runtime { kind: RuntimeKind::Runc, path: self.path().join("fake-runc") },
            busybox: self.path().join("busybox"),
            state_dir: self.path().join("state"),
            data_dir: self.path().join("state/data"),
            scratch: "cgleak-lab-test".into(),
            layout,
            memory: MemoryHierarchy { version: 1, mount: memory },
            host: HostPaths::new(self.path().join("host")),
            allow_kubelet: false,
            count_memcgs: Box::new(move || {
                let live = count_dirs(&mem_root);
                Ok(MemcgCount { live, dying: Some(7), dying_source: "proc_cgroups_minus_live" })
            }),
            census_every: Duration::from_millis(100),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Nothing of the lab's is left: fake hierarchies empty, state dir gone, runtime knows no container.
    fn assert_clean(&self) {
        for m in ["memory", "cpu", "unified"] {
            let left: Vec<_> = fs::read_dir(self.mount(m)).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "left in {m}: {left:?}");
        }
        assert!(!self.path().join("state").exists(), "the state dir is left");
    }
}

fn count_dirs(root: &Path) -> u64 {
    let mut n = 1;
    for e in fs::read_dir(root).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            n += count_dirs(&e.path());
        }
    }
    n
}

/// A stand-in for runc: containers are directories under --root; `run` makes the
/// container's cgroupsPath in each fake hierarchy (as runc does in every hierarchy),
/// `delete` removes it again. A run whose cgroupsPath contains @FAIL_IN@ fails.
const FAKE_RUNTIME: &str = r#"#!/bin/sh
[ "$1" = --root ] || { echo "fake runtime: no --root" >&2; exit 9; }
root=$2; cmd=$3; shift 3
for last; do :; done
case "$cmd" in
run)
    bundle=$3
    path=$(sed -n 's/^ *"cgroupsPath": "\(.*\)",*$/\1/p' "$bundle/config.json")
    [ -n "$path" ] || { echo "no cgroupsPath in $bundle/config.json" >&2; exit 1; }
    case "$path" in *@FAIL_IN@*) echo "fake runtime: cannot start container $last" >&2; exit 1 ;; esac
    mkdir -p "$root/$last" && echo "$path" > "$root/$last/path" || exit 1
    for m in @MOUNTS@; do mkdir -p "$m$path" || exit 1; done ;;
delete)
    [ -d "$root/$last" ] || exit 0
    path=$(cat "$root/$last/path")
    for m in @MOUNTS@; do rmdir "$m$path" || exit 1; done
    rm -r "$root/$last" ;;
kill)
    [ -d "$root/$2" ] || { echo "container $2 does not exist" >&2; exit 1; } ;;
list)
    ls "$root" 2>/dev/null ;;
*)
    exit 2 ;;
esac
"#;

fn pod_dirs(kubepods: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for parent in [kubepods.to_path_buf(), kubepods.join("burstable"), kubepods.join("besteffort")] {
        for e in fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(uid) = name.strip_prefix("pod") {
                out.insert(uid.to_string());
            }
        }
    }
    out
}

#[test]
fn churns_pods_in_the_kubelet_layout_and_removes_everything() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.orphan_every = Some(4);
    // Stopped after 8 churn steps, not by the clock: the test must not depend on the machine's speed.
    opts.duration = None;
    let cancel = opts.cancel.clone();
    let kubepods = b.mount("memory/cgleak-lab-test/kubepods");
    let kubelet_pods = b.path().join("state/kubelet/pods");
    let mut events = Vec::new();
    let mut checked = 0;
    let report = run_lab(opts, &mut |p| {
        if let LabProgress::Counters(c) = &p {
            if c.churning {
                // The kubelet dir lists exactly the live pods; the tree has them and the orphans.
                let known: BTreeSet<String> = fs::read_dir(&kubelet_pods)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                assert_eq!(known.len() as u32, c.pods_live, "{c:?}");
                let in_tree = pod_dirs(&kubepods);
                assert!(known.is_subset(&in_tree), "{known:?} not all in {in_tree:?}");
                assert_eq!(in_tree.len() as u32, c.pods_live + c.orphans_kept, "{c:?}");
                // Containers exist in every hierarchy, as the runtime made them.
                let cpu = b.mount("cpu/cgleak-lab-test/kubepods");
                assert_eq!(pod_dirs(&cpu), in_tree);
                checked += 1;
                if c.pods_deleted >= 8 {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        }
        events.push(p);
    })
    .unwrap();
    assert!(checked >= 9, "only {checked} checks while churning");
    assert!(
        matches!(&events[0], LabProgress::Ready(p) if p.scratch_parent == "/sys/fs/cgroup/memory/cgleak-lab-test"),
        "{:?}",
        events[0]
    );
    assert_eq!(events.last(), Some(&LabProgress::Settling));
    assert!(matches!(events[events.len() - 2], LabProgress::TearingDown { done: 6, total: 6 }), "{:?}", events);
    assert!(report.success, "{report:#?}");
    assert_eq!(report.error, None);
    assert!(report.interrupted);
    assert_eq!(report.pods_deleted, 8, "{report:#?}");
    assert_eq!(report.pods_created, 3 + 8);
    assert_eq!(report.containers_created, 2 * 11);
    assert_eq!(report.orphans_made, 2);
    assert_eq!(report.pods_live_at_end, 3);
    assert!(report.memcgs.censuses >= 3, "{:?}", report.memcgs);
    // The fake census counts directories: the tree (4) and 3 pods of 3 at least.
    assert!(report.memcgs.live_max >= 1 + 4 + 9, "{:?}", report.memcgs);
    assert_eq!(report.memcgs.live_after_teardown, Some(1));
    assert_eq!(report.memcgs.dying_max, Some(7));
    assert_eq!(report.teardown.containers_removed, 6);
    assert_eq!(report.teardown.hierarchies, 3);
    assert!(report.teardown.state_dir_removed && report.teardown.data_dir_removed);
    assert_eq!(report.teardown.processes_killed, 0);
    b.assert_clean();
}

#[test]
fn cancel_stops_the_lab_and_tears_it_down() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.duration = None;
    let cancel = opts.cancel.clone();
    let mut deleted_seen = 0;
    let report = run_lab(opts, &mut |p| {
        if let LabProgress::Counters(c) = p {
            deleted_seen = c.pods_deleted;
            if c.pods_deleted >= 3 {
                cancel.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    assert!(report.interrupted && report.success, "{report:#?}");
    assert!(report.pods_deleted >= 3 && report.pods_deleted <= deleted_seen, "{report:#?}");
    b.assert_clean();
}

#[test]
fn cancel_during_start_up_tears_down_the_partial_lab() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.pods = 10;
    let cancel = opts.cancel.clone();
    let report = run_lab(opts, &mut |p| {
        if matches!(p, LabProgress::Counters(LabCounters { pods_created: 2, .. })) {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(report.interrupted, "{report:#?}");
    assert_eq!((report.pods_created, report.pods_deleted), (2, 0));
    assert_eq!(report.teardown.containers_removed, 4);
    b.assert_clean();
}

#[test]
fn a_failed_run_ends_the_lab_with_the_runtimes_message() {
    // The 3rd pod is the first besteffort one (pods go round guaranteed, burstable, besteffort).
    let b = Bench::new(Some("/besteffort/"));
    let report = run_lab(b.options(), &mut |_| {}).unwrap();
    let e = report.error.clone().unwrap_or_default();
    assert!(e.contains("fake runtime: cannot start container"), "{report:#?}");
    assert!(e.starts_with("runc run "), "{e}");
    assert!(!report.success);
    assert_eq!(report.pods_created, 3);
    b.assert_clean();
}

#[test]
fn a_panic_in_the_progress_callback_still_removes_everything() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.duration = None;
    let res = catch_unwind(AssertUnwindSafe(|| {
        run_lab(opts, &mut |p| {
            if let LabProgress::Counters(c) = p {
                if c.pods_deleted == 2 {
                    panic!("callback failed");
                }
            }
        })
    }));
    assert!(res.is_err());
    b.assert_clean();
}

#[test]
fn a_panic_during_teardown_is_finished_by_drop() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.pods = 10;
    opts.duration = Some(Duration::from_millis(10));
    let res = catch_unwind(AssertUnwindSafe(|| {
        run_lab(opts, &mut |p| {
            if matches!(p, LabProgress::TearingDown { done: 8, .. }) {
                panic!("callback failed");
            }
        })
    }));
    assert!(res.is_err());
    b.assert_clean();
}

#[test]
fn refuses_beside_a_kubelet_unless_allowed() {
    let b = Bench::new(None);
    let host = b.path().join("host");
    fs::create_dir_all(host.join("proc/4242")).unwrap();
    fs::write(host.join("proc/4242/comm"), "kubelet\n").unwrap();
    fs::write(host.join("proc/4242/cmdline"), "/usr/bin/kubelet\0--v=2\0").unwrap();
    let e = run_lab(b.options(), &mut |_| panic!("nothing may start")).unwrap_err();
    assert!(matches!(&e, LabError::KubeletRunning { pid: 4242, .. }), "{e:?}");
    assert!(e.to_string().contains("/usr/bin/kubelet --v=2"), "{e}");
    b.assert_clean();

    let mut opts = b.options();
    opts.allow_kubelet = true;
    opts.duration = Some(Duration::from_millis(100));
    let r = run_lab(opts, &mut |_| {}).unwrap();
    assert!(r.success, "{r:#?}");
    b.assert_clean();
}

#[test]
fn refuses_to_take_the_host_past_5000_memcgs() {
    let b = Bench::new(None);
    let mut opts = b.options();
    // 3 pods x 3 + 4 = 13; 4980 + 7 dying + 13 = 5000 fits, one more does not.
    opts.count_memcgs =
        Box::new(|| Ok(MemcgCount { live: 4981, dying: Some(7), dying_source: "proc_cgroups_minus_live" }));
    let e = run_lab(opts, &mut |_| panic!("nothing may start")).unwrap_err();
    let LabError::OverCap(o) = &e else { panic!("{e:?}") };
    assert_eq!((o.lab_max, o.host_live, o.host_dying), (13, 4981, 7));
    b.assert_clean();
}

#[test]
fn throttles_churn_near_the_cap_and_releases_kept_data() {
    let b = Bench::new(None);
    let mut opts = b.options();
    // The census says the host sits right at the cap after start-up.
    let calls = std::cell::Cell::new(0u32);
    opts.count_memcgs = Box::new(move || {
        calls.set(calls.get() + 1);
        let live = if calls.get() == 1 { 100 } else { 4999 };
        Ok(MemcgCount { live, dying: Some(0), dying_source: "proc_cgroups_minus_live" })
    });
    opts.duration = None;
    let cancel = opts.cancel.clone();
    let report = run_lab(opts, &mut |p| {
        if matches!(p, LabProgress::Counters(LabCounters { throttled: 3, .. })) {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert_eq!(report.throttled, 3, "{report:#?}");
    assert_eq!(report.pods_deleted, 0, "{report:#?}");
    assert!(report.success);
    b.assert_clean();
}

#[test]
fn refuses_page_cache_on_tmpfs() {
    // The environment first: this test needs a tmpfs to put the data directory on.
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs) to try the lab's data directory on; it is missing here");
    assert_eq!(rootfs::memory_backed_fs(shm).unwrap(), Some("tmpfs"), "/dev/shm is not a tmpfs here");
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.data_dir = PathBuf::from(format!("/dev/shm/cgleak-lab-test-{}", std::process::id()));
    let e = run_lab(opts, &mut |_| panic!("nothing may start")).unwrap_err();
    assert!(matches!(e, LabError::DataOnMemoryFs { fs: "tmpfs", .. }), "{e:?}");
    b.assert_clean();
}

#[test]
fn refuses_a_state_dir_on_a_pseudo_filesystem() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.state_dir = PathBuf::from("/proc/cgleak-lab-test");
    let e = run_lab(opts, &mut |_| panic!("nothing may start")).unwrap_err();
    assert!(matches!(&e, LabError::Invalid(m) if m.contains("on proc")), "{e:?}");
    b.assert_clean();
}

#[test]
fn invalid_settings_make_nothing() {
    let b = Bench::new(None);
    let mut opts = b.options();
    opts.orphan_every = Some(0);
    assert!(matches!(run_lab(opts, &mut |_| {}), Err(LabError::Invalid(_))));
    let mut opts = b.options();
    opts.pods = 0;
    assert!(matches!(run_lab(opts, &mut |_| {}), Err(LabError::Invalid(_))));
    b.assert_clean();
}

#[test]
fn memcg_and_disk_arithmetic_of_the_options() {
    let b = Bench::new(None);
    let mut o = b.options();
    o.pods = 20;
    o.containers_per_pod = 2;
    o.pods_per_minute = 30;
    o.duration = None;
    assert_eq!(o.memcgs_max(), 64);
    o.orphan_every = Some(5);
    assert_eq!(o.memcgs_max(), 164);
    o.duration = Some(Duration::from_secs(60));
    // 31 deletions / 5 = 6 orphans
    assert_eq!(o.memcgs_max(), 70);
    o.page_cache_mib = 4;
    o.keep_data_mib = 1000;
    assert_eq!(o.data_mib_max(), 160 + 1000);
    o.pods_per_minute = 0;
    assert_eq!(o.data_mib_max(), 160);
}

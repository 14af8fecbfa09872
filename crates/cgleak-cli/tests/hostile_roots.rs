//! `cgleak` on hostile host roots: every path under the root contained, every read bounded.
//!
//! Each test takes a fixture root of crates/cgleak-fixtures (Debian 10, 4.19, cgroup v1)
//! and plants what a hostile or broken host could hold: a mountinfo mount point that
//! climbs out of the root, a pod cgroup that is a symlink to a tree outside the
//! hierarchies, a `/proc/cgroups` that links to a file outside the root or is a GiB long,
//! FIFOs where `cgroup.procs` and `/dev/kmsg` should be, a 30,000-deep cgroup tree, and
//! control characters in the names a table prints. Each checks that the harm is absent
//! and that the error (or the note) names what was refused.
//!
//! `fix gc --apply` needs root; these tests fail loudly without it.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use common::fixture::{cgleak_cmd, Run};

fn assert_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "hostile_roots runs `fix gc --apply`: it must run as root (euid is {euid})");
}

fn scratch(what: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("cgleak-test-hostile-roots-{what}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn on_root(root: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.env("TZ", "UTC").env_remove("CGLEAK_FAILPOINT");
    let mut all = vec!["--host-root", s(root)];
    all.extend_from_slice(args);
    cgleak_cmd(c, &all)
}

/// `cgleak` on `root`, killed if it has not ended after `limit` (a hang is a failure, not a stuck test).
fn on_root_within(root: &Path, args: &[&str], limit: Duration) -> (Run, Duration) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.arg("--host-root").arg(root).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = {
        let _lock = cgleak_fixtures::exec_lock();
        c.spawn().unwrap()
    };
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("cgleak {args:?} hung for {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let run = Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() };
    (run, started.elapsed())
}

/// Every directory under `dir`, itself included (not following symlinks).
fn dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = common::kernel::cgroup_dirs(dir);
    out.sort();
    out
}

/// The orphaned pods `status` finds on `root`: (host path of the pod cgroup, relative to the memory root).
fn orphans(root: &Path) -> Vec<String> {
    let run = on_root(root, &["status", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v: Value = run.json();
    let mem = v["cgroup"]["memory_root"].as_str().unwrap().to_string();
    let pods: Vec<String> = v["kubepods"]["orphan_pods"].as_array().expect("the fixture has orphans").iter().map(|p| p["path"].as_str().unwrap().to_string()).collect();
    pods.iter().map(|p| p.strip_prefix(&format!("{mem}/")).expect("under the memory root").to_string()).collect()
}

/// Make the orphan's memory cgroups removable on tmpfs: no control files left in them.
fn empty_of_files(dir: &Path) {
    for d in dirs_under(dir) {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if !e.file_type().unwrap().is_dir() {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

#[test]
fn a_mount_point_climbing_out_of_the_root_is_refused_and_nothing_outside_is_removed() {
    assert_root();
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_path_buf();
    let rel = orphans(&root).into_iter().next().expect("an orphan");
    // `<root>/../x` holds the same pod tree: a hierarchy "mounted" there would be gc'd.
    let outside = root.parent().unwrap().join(format!("{}-x", root.file_name().unwrap().to_string_lossy()));
    fs::create_dir_all(outside.join(&rel).join("c1/deeper")).unwrap();
    let before = dirs_under(&outside);
    let climbing = format!("{}/../{}", root.display(), outside.file_name().unwrap().to_string_lossy());
    let mi = root.join("proc/self/mountinfo");
    let mut text = fs::read_to_string(&mi).unwrap();
    let line = text.lines().count() + 1;
    text.push_str(&format!("99 25 0:99 / {climbing} rw,nosuid - cgroup cgroup rw,pids\n"));
    fs::write(&mi, text).unwrap();
    let state = scratch("state");
    let run = on_root(&root, &["fix", "gc", "--min-age", "0", "--apply", "--yes", "--state-dir", s(state.path())]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("proc/self/mountinfo") && run.stderr.contains(&format!("line {line}")) && run.stderr.contains("`..`"),
        "the error names the file, the line and why: {run:#?}"
    );
    assert_eq!(dirs_under(&outside), before, "directories outside the root were removed");
    fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn a_symlinked_pod_cgroup_is_left_with_a_reason_and_its_target_untouched() {
    assert_root();
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_path_buf();
    let all = orphans(&root);
    let rel = all[0].clone();
    let mem = root.join("sys/fs/cgroup/memory").join(&rel);
    let pids = root.join("sys/fs/cgroup/pids").join(&rel);
    assert!(mem.is_dir(), "{}", mem.display());
    // Every orphan removable on tmpfs: no control files left in their cgroups.
    for h in fs::read_dir(root.join("sys/fs/cgroup")).unwrap().flatten().filter(|e| e.file_type().unwrap().is_dir()) {
        for r in &all {
            if h.path().join(r).is_dir() {
                empty_of_files(&h.path().join(r));
            }
        }
    }
    // The pids hierarchy's copy of the pod is a symlink to a tree outside every hierarchy.
    let victim = scratch("victim");
    fs::create_dir_all(victim.path().join("c1/c2")).unwrap();
    let before = dirs_under(victim.path());
    if pids.exists() {
        fs::remove_dir_all(&pids).unwrap();
    }
    fs::create_dir_all(pids.parent().unwrap()).unwrap();
    symlink(victim.path(), &pids).unwrap();
    let state = scratch("state");
    let run = on_root(&root, &["fix", "gc", "--min-age", "0", "--apply", "--yes", "--state-dir", s(state.path()), "--output", "json"]);
    let host_pids = format!("/sys/fs/cgroup/pids/{rel}");
    let v: Value = run.json();
    let notes: Vec<&str> = v["plan"]["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(notes.iter().any(|n| n.contains(&host_pids) && n.contains("symbolic link")), "the plan says why the link is left: {notes:?}");
    assert!(!v["plan"]["steps"].to_string().contains(&host_pids), "the link is not in any step: {}", v["plan"]);
    assert_eq!(dirs_under(victim.path()), before, "gc removed directories inside the link's target");
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!mem.exists(), "the memory hierarchy's orphan was removed: {run:#?}");
    assert!(fs::symlink_metadata(&pids).unwrap().file_type().is_symlink());
}

#[test]
fn proc_cgroups_linked_outside_or_a_gib_long_is_not_read() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_path_buf();
    let outside = scratch("proc-cgroups");
    // A file outside the root that would parse, with a figure no census could miss.
    fs::write(outside.path().join("cgroups"), "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t77777\t1\n").unwrap();
    let pc = root.join("proc/cgroups");
    let original = fs::read(&pc).unwrap();
    fs::remove_file(&pc).unwrap();
    symlink(outside.path().join("cgroups"), &pc).unwrap();
    let run = on_root(&root, &["status", "--output", "json"]);
    assert!(!run.stdout.contains("77777") && !run.stderr.contains("77777"), "the file outside the root was read: {run:#?}");
    // Restored, then a sparse GiB: refused at the cap, quickly, with a short error.
    fs::remove_file(&pc).unwrap();
    fs::write(&pc, &original).unwrap();
    fs::File::options().write(true).open(&pc).unwrap().set_len(1 << 30).unwrap();
    let (run, took) = on_root_within(&root, &["status"], Duration::from_secs(60));
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("/proc/cgroups") && run.stderr.contains("1 MiB cap"), "{}", run.stderr);
    assert!(run.stderr.len() < 2000, "the error quotes {} bytes", run.stderr.len());
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn fifos_in_place_of_cgroup_procs_and_dev_kmsg_do_not_hang_status_or_check() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_path_buf();
    let rel = orphans(&root).into_iter().next().expect("an orphan");
    let procs = root.join("sys/fs/cgroup/memory").join(&rel).join("cgroup.procs");
    fs::remove_file(&procs).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    let mkfifo = |p: &Path| assert_eq!(unsafe { libc::mkfifo(cstr(p).as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
    mkfifo(&procs);
    let kmsg = root.join("dev/kmsg");
    let _ = fs::remove_file(&kmsg);
    fs::create_dir_all(kmsg.parent().unwrap()).unwrap();
    mkfifo(&kmsg);
    for cmd in ["status", "check"] {
        let (run, _) = on_root_within(&root, &[cmd], Duration::from_secs(60));
        run.assert_no_panic();
        assert!(run.stderr.contains("cgroup.procs") && run.stderr.contains("FIFO"), "{cmd} names the FIFO: {run:#?}");
    }
    let (run, _) = on_root_within(&root, &["logs", "--kmsg"], Duration::from_secs(60));
    assert!(run.stderr.contains("FIFO") || run.stdout.contains("FIFO"), "logs --kmsg names the FIFO: {run:#?}");
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// `depth` nested cgroups `top/d/d/...`, made one name at a time (the path is far past PATH_MAX).
fn chain(top: &Path, depth: usize) {
    // SAFETY: plain syscalls on descriptors this function owns and closes.
    unsafe {
        let mut fd = libc::open(cstr(top).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        assert!(fd >= 0);
        for _ in 0..depth {
            assert_eq!(libc::mkdirat(fd, c"d".as_ptr(), 0o755), 0);
            let next = libc::openat(fd, c"d".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
        }
        libc::close(fd);
    }
}

/// Removed one level at a time from the top (remove_dir_all would recurse 30,000 deep).
fn remove_chain(top: &Path) {
    // SAFETY: plain syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::open(cstr(top).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        while libc::renameat(fd, c"d/d".as_ptr(), fd, c"up".as_ptr()) == 0 {
            libc::unlinkat(fd, c"d".as_ptr(), libc::AT_REMOVEDIR);
            libc::renameat(fd, c"up".as_ptr(), fd, c"d".as_ptr());
        }
        libc::unlinkat(fd, c"d".as_ptr(), libc::AT_REMOVEDIR);
        libc::close(fd);
    }
}

#[test]
fn a_30000_deep_tree_is_counted_with_64_open_files() {
    const DEPTH: usize = 30_000;
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_path_buf();
    let before = on_root(&root, &["status", "--output", "json"]).json()["memcg"]["live"].as_u64().unwrap();
    let top = root.join("sys/fs/cgroup/memory/deep");
    fs::create_dir(&top).unwrap();
    struct Chain(PathBuf);
    impl Drop for Chain {
        fn drop(&mut self) {
            remove_chain(&self.0);
        }
    }
    let _guard = Chain(top.clone());
    chain(&top, DEPTH);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max;
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.arg("--host-root").arg(&root).args(["status", "--output", "json"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: hard };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let run = cgleak_cmd(c, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["memcg"]["live"].as_u64().unwrap(), before + 1 + DEPTH as u64);
}

#[test]
fn control_characters_in_names_are_escaped_in_tables() {
    let dir = scratch("logs");
    let pod = "0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c";
    let line = format!(
        "Dec 22 08:00:00 node-1 kubelet[1146]: E1222 08:00:00.498519    1146 pod_workers.go:1300] \"Error syncing pod\" err=\"runc create failed: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{pod}/ab\u{1b}[2Jcd\u{7}: no space left on device: unknown\" podUID=\"{pod}\"\n"
    );
    let file = dir.path().join("messages");
    fs::write(&file, line).unwrap();
    let run = common::fixture::cgleak(&["logs", s(&file)]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(!run.stdout.contains('\u{1b}') && !run.stdout.contains('\u{7}'), "raw control characters in the table: {:?}", run.stdout);
    assert!(run.stdout.contains("ab\\x1b[2Jcd\\x07"), "escaped visibly: {}", run.stdout);
    // JSON keeps the name as it is (serde escapes it).
    let json = common::fixture::cgleak(&["logs", s(&file), "--output", "json"]);
    assert!(json.json()["incidents"][0]["cgroup_path"].as_str().unwrap().contains("ab\u{1b}[2Jcd\u{7}"));
}

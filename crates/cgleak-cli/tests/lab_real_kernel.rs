//! `cgleak lab` against the running kernel: real runc containers on a busybox root in
//! a kubelet-style tree, churned, then torn down.
//!
//! Each `real_kernel_` test asserts its environment first (root, a memory cgroup mount,
//! runc, a static busybox) and panics when something is missing: none passes by testing
//! nothing. Safety: the lab makes its cgroups only under its scratch parent
//! `cgleak-lab-<pid of the lab>`, at most a few dozen memcgs here (its own cap is
//! 5,000); its state dir is a temp dir on disk. If a test fails while a lab runs, a
//! guard sends it SIGTERM (it tears down), then removes by hand whatever is left: its
//! containers (through runc with the lab's own --root), the processes in its cgroups
//! (only the lab's runc put them there), its cgroups in every hierarchy and its state dir.
//!
//! These tests make a kubepods tree of their own, and real_kernel.rs waits for foreign
//! ones to go: the two are separate test binaries, which cargo runs one after the other.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::kernel::*;

const MIB: u64 = 1 << 20;

/// runc's path, after asserting root, a memory controller, runc and a static busybox.
fn lab_env() -> (CgroupMount, PathBuf) {
    let mem = memory_mount();
    let runc = find_program("runc", &["/usr/sbin/runc"]).unwrap_or_else(|| {
        panic!("the lab runs containers: runc is neither on PATH nor at /usr/sbin/runc (apt-get install runc)")
    });
    assert_executable(&runc, "the lab (runc)");
    let busybox = find_program("busybox", &["/bin/busybox"]).unwrap_or_else(|| {
        panic!(
            "the lab's containers need busybox: neither on PATH nor at /bin/busybox (apt-get install busybox-static)"
        )
    });
    assert_executable(&busybox, "the lab's root filesystem (busybox-static)");
    (mem, runc)
}

fn tmp_dir(prefix: &str) -> tempfile::TempDir {
    // Under the cargo target dir: a disk filesystem (ext4 here), where page cache pins memcgs.
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("temp dir in {}: {e}", env!("CARGO_TARGET_TMPDIR")));
    assert_not_tmpfs(d.path());
    d
}

/// A running `cgleak lab --state-dir <state> --output json ...`. Dropped while it runs
/// (a failed assertion), it is stopped and everything it made is removed.
struct LabRun {
    child: Option<Child>,
    pid: u32,
    state: PathBuf,
    runc: PathBuf,
}

impl LabRun {
    fn start(args: &[&str], state: &Path, runc: &Path) -> LabRun {
        let child = cgleak()
            .arg("lab")
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .args(["--output", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running cgleak lab");
        let pid = child.id();
        LabRun { child: Some(child), pid, state: state.to_path_buf(), runc: runc.to_path_buf() }
    }

    /// `cgleak-lab-<pid>`: the lab's scratch parent in every hierarchy.
    fn scratch(&self) -> String {
        format!("cgleak-lab-{}", self.pid)
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait on cgleak lab").is_none())
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}): {}", self.pid, std::io::Error::last_os_error());
    }

    /// Wait for the lab to exit (at most `timeout`) and collect its output.
    fn wait(&mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        while self.running() {
            assert!(Instant::now() < deadline, "cgleak lab (pid {}) still runs after {timeout:?}", self.pid);
            sleep(Duration::from_millis(100));
        }
        self.child.take().expect("the lab was started").wait_with_output().expect("collecting cgleak lab's output")
    }

    /// The runc container ids in the lab's own runc root (not the host's /run/runc).
    fn runc_ids(&self) -> Vec<String> {
        let root = self.state.join("runc");
        // `runc list` creates a missing --root: look only where the lab made one.
        if !root.is_dir() {
            return Vec::new();
        }
        // runc 1.1 list fails ("stat <root>/<id>: no such file") when a container is deleted
        // while it lists: with churn twice a second, try again.
        let mut tries = 0;
        loop {
            let out = Command::new(&self.runc)
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
            }
            tries += 1;
            assert!(tries < 20, "runc --root {} list: {}", root.display(), describe(&out));
            sleep(Duration::from_millis(50));
        }
    }

    /// The lab's scratch parent wherever it still exists.
    fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_mounts().into_iter().map(|m| m.mount_point.join(self.scratch())).filter(|p| p.exists()).collect()
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(60);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            eprintln!("cgleak lab (pid {}) stopped by the test's guard; its stderr:\n{err}", self.pid);
        }
        // Whatever it left: its containers, then its cgroups in every hierarchy, then its state.
        for id in self.runc_ids() {
            let _ = Command::new(&self.runc)
                .arg("--root")
                .arg(self.state.join("runc"))
                .args(["delete", "-f", &id])
                .stdin(Stdio::null())
                .output();
        }
        for top in self.leftover_cgroups() {
            kill_and_remove_tree(&top);
        }
        let _ = fs::remove_dir_all(&self.state);
    }
}

/// `cgleak-lab-<pid>` directories at the top of any hierarchy whose lab process is gone:
/// leftovers (a lab that still runs, another user's, is not one).
fn stale_lab_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        for e in fs::read_dir(&m.mount_point).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("cgleak-lab-") else { continue };
            let alive = pid.parse::<u32>().is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists());
            if !alive {
                out.push(e.path());
            }
        }
    }
    out
}

/// Container cgroups of the lab in the memory hierarchy: `kubepods/[qos/]pod<uid>/<64 hex>`.
fn container_cgroups(kubepods: &Path) -> Vec<PathBuf> {
    cgroup_dirs(kubepods)
        .into_iter()
        .filter(|d| {
            let name = d.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let parent_is_pod =
                d.parent().and_then(Path::file_name).is_some_and(|p| p.to_string_lossy().starts_with("pod"));
            parent_is_pod && name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit())
        })
        .collect()
}

fn kubelet_args(kubelet: &Path) -> [&OsStr; 2] {
    [OsStr::new("--kubelet-root-dir"), kubelet.as_os_str()]
}

/// The status's kubepods object if our tree is among its roots.
fn our_kubepods(s: &Value, ours: &str) -> Option<Value> {
    let kp = &s["kubepods"];
    let roots = kp["roots"].as_array()?;
    roots.iter().any(|r| r == ours).then(|| kp.clone())
}

fn assert_gone_after(lab: &LabRun, v: &Value) {
    assert_eq!(v["teardown"]["leftover"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["teardown"]["state_dir_removed"], true, "{v:#}");
    let left = lab.leftover_cgroups();
    assert!(left.is_empty(), "the lab left its cgroups: {left:?}");
    let stale = stale_lab_cgroups();
    assert!(stale.is_empty(), "cgleak-lab-* cgroups of labs that no longer run: {stale:?}");
    assert!(!lab.state.exists(), "the lab left its state dir {}", lab.state.display());
    // runc's state lived in the state dir: with it gone, runc knows no container of the lab.
    assert!(lab.runc_ids().is_empty());
}

#[test]
fn real_kernel_lab_churns_pods_and_leaves_dying_memcgs() {
    let _serial = serial();
    let (mem, runc) = lab_env();
    let work = tmp_dir("cgleak-test-lab-");
    let state = work.path().join("state");
    let mut lab = LabRun::start(
        &[
            "--pods",
            "6",
            "--containers-per-pod",
            "2",
            "--pods-per-minute",
            "120",
            "--duration",
            "25s",
            "--page-cache-mib",
            "4",
        ],
        &state,
        &runc,
    );
    let kubepods = mem.mount_point.join(lab.scratch()).join("kubepods");
    let ours = kubepods.display().to_string();
    let kubelet = state.join("kubelet");

    // While it runs: status finds the tree, knows its pods through the fake kubelet
    // root dir (so none is an orphan), and page cache is charged to the containers.
    let (mut samples, mut max_pods, mut cache_seen, mut runc_seen) = (0, 0, 0u64, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && lab.running() {
        let s = status(&kubelet_args(&kubelet));
        if let Some(kp) = our_kubepods(&s, &ours) {
            assert_eq!(kp["driver"], "cgroupfs", "{kp:#}");
            assert_eq!(kp["kubelet_pods_dir_found"], true, "{kp:#}");
            assert_eq!(kp["kubelet_pods_dir"], kubelet.join("pods").display().to_string(), "{kp:#}");
            assert_eq!(kp["orphans"], 0, "a live lab pod was taken for an orphan:\n{kp:#}");
            if kp["roots"].as_array().map(Vec::len) == Some(1) {
                let pods = u64_at(&kp, "/pods");
                assert!(pods <= 6 && u64_at(&kp, "/containers") <= 12, "{kp:#}");
                max_pods = max_pods.max(pods);
                let qos_pods: u64 = ["guaranteed", "burstable", "besteffort"]
                    .iter()
                    .map(|q| u64_at(&kp, &format!("/by_qos/{q}/pods")))
                    .sum();
                assert_eq!(qos_pods, pods, "{kp:#}");
            }
            samples += 1;
        }
        for c in container_cgroups(&kubepods) {
            cache_seen =
                cache_seen.max(memory_stat(&c, "total_cache").or_else(|| memory_stat(&c, "file")).unwrap_or(0));
        }
        let ids = lab.runc_ids();
        if !ids.is_empty() {
            assert!(ids.len() <= 12, "runc lists more than the lab's 6 x 2 containers: {ids:?}");
            assert!(ids.iter().all(|i| i.len() == 64 && i.chars().all(|c| c.is_ascii_hexdigit())), "{ids:?}");
            runc_seen += 1;
        }
        sleep(Duration::from_millis(700));
    }
    assert!(samples >= 3, "status saw the lab's kubepods tree {ours} only {samples} times");
    assert_eq!(max_pods, 6, "status never showed all 6 pods of the lab (or other kubepods trees were around)");
    assert!(cache_seen >= 4 * MIB, "no container memcg was charged 4 MiB of page cache (max seen {cache_seen} bytes)");
    assert!(runc_seen >= 3, "runc --root {}/runc listed the containers only {runc_seen} times", state.display());

    let out = lab.wait(Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cgleak status --kubelet-root-dir {}", kubelet.display())), "{stderr}");

    // 25 s at 120 a minute: about 50 churns (the one due right at the deadline may not run).
    let deleted = u64_at(&v, "/pods_deleted");
    assert!((38..=51).contains(&deleted), "expected about 50 pods deleted by churn:\n{v:#}");
    assert_eq!(u64_at(&v, "/pods_created"), 6 + deleted, "{v:#}");
    assert_eq!(u64_at(&v, "/containers_created"), 2 * (6 + deleted), "{v:#}");
    assert_eq!(u64_at(&v, "/pods_live_at_end"), 6, "{v:#}");
    assert_eq!(v["settings"]["runtime"], "runc");
    assert_eq!(v["paths"]["kubepods"], ours.as_str());
    assert!(v["error"].is_null() && v["interrupted"] == false && v["success"] == true, "{v:#}");

    // Deleted pods' page cache keeps their memcgs dying: the censuses saw them pile up.
    let m = &v["memcgs"];
    assert_eq!(m["dying_source"], "proc_cgroups_minus_live", "{m:#}");
    let (start, max) = (u64_at(m, "/dying_at_start"), u64_at(m, "/dying_max"));
    assert!(
        max > 0 && max >= start + deleted / 2,
        "dying memcgs did not grow with the deleted pods (start {start}, max {max}, {deleted} pods deleted):\n{m:#}"
    );
    assert!(u64_at(m, "/censuses") >= 10, "{m:#}");
    assert!(u64_at(m, "/live_max") >= u64_at(m, "/live_at_start") + 4 + 6 * 3 - 3, "{m:#}");

    assert_eq!(u64_at(&v, "/teardown/containers_removed"), 12, "{v:#}");
    assert!(u64_at(&v, "/teardown/hierarchies") >= 1, "{v:#}");
    assert_gone_after(&lab, &v);
}

#[test]
fn real_kernel_lab_sigint_with_orphans_tears_down_and_exits_130() {
    let _serial = serial();
    let (mem, runc) = lab_env();
    let work = tmp_dir("cgleak-test-lab-int-");
    let state = work.path().join("state");
    let mut lab = LabRun::start(
        &[
            "--pods",
            "4",
            "--containers-per-pod",
            "2",
            "--pods-per-minute",
            "120",
            "--orphan-every",
            "2",
            "--page-cache-mib",
            "1",
        ],
        &state,
        &runc,
    );
    let kubepods = mem.mount_point.join(lab.scratch()).join("kubepods");
    let ours = kubepods.display().to_string();
    let kubelet = state.join("kubelet");

    // Every 2nd deleted pod leaves a taskless pod cgroup the fake kubelet no longer knows.
    let orphan = poll(Duration::from_secs(30), Duration::from_millis(500), || {
        assert!(lab.running(), "the lab exited before it was interrupted");
        let s = status(&kubelet_args(&kubelet));
        let kp = our_kubepods(&s, &ours)?;
        (kp["orphans"].as_u64()? >= 1).then_some(kp)
    })
    .unwrap_or_else(|| panic!("status never showed an orphan of the lab under {ours}"));
    let path = orphan["orphan_pods"][0]["path"].as_str().unwrap_or_default().to_string();
    assert!(path.starts_with(&format!("{ours}/")), "{orphan:#}");
    let orphan_dir = PathBuf::from(&path);
    assert!(
        orphan_dir.is_dir() && cgroup_dirs(&orphan_dir).len() == 1,
        "an orphan has no container cgroups left: {path}"
    );
    let uid = orphan["orphan_pods"][0]["uid"].as_str().unwrap_or_default();
    assert!(!kubelet.join("pods").join(uid).exists(), "the orphan's kubelet dir still exists");

    lab.signal(libc::SIGINT);
    let out = lab.wait(Duration::from_secs(60));
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert_eq!(v["interrupted"], true, "{v:#}");
    assert_eq!(v["success"], true, "{v:#}");
    assert!(v["error"].is_null(), "{v:#}");
    assert!(u64_at(&v, "/orphans_made") >= 1, "{v:#}");
    assert_eq!(u64_at(&v, "/orphans_made"), u64_at(&v, "/pods_deleted") / 2, "{v:#}");
    assert!(!orphan_dir.exists(), "the orphan {path} survived teardown");
    assert_gone_after(&lab, &v);
}

#[test]
fn real_kernel_lab_refuses_beside_a_kubelet_unless_forced() {
    let _serial = serial();
    let (_mem, runc) = lab_env();
    let work = tmp_dir("cgleak-test-lab-kubelet-");
    // A process named kubelet (a copy of sleep) is all the lab looks for.
    let sleep_bin =
        find_program("sleep", &["/bin/sleep", "/usr/bin/sleep"]).expect("this test needs sleep (coreutils)");
    let fake = work.path().join("kubelet");
    fs::copy(&sleep_bin, &fake).unwrap();
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kubelet = Killed(Command::new(&fake).arg("120").stdin(Stdio::null()).spawn().unwrap());
    let kubelet_running = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let s = fs::read_to_string(format!("/proc/{}/comm", _kubelet.0.id())).ok()?;
        (s.trim() == "kubelet").then_some(())
    });
    assert!(kubelet_running.is_some(), "the fake kubelet did not start");

    let state = work.path().join("state");
    let mut lab = LabRun::start(&["--pods", "1", "--duration", "1s"], &state, &runc);
    let out = lab.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr.contains("kubelet") && stderr.contains("--force"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(!state.exists(), "a refused lab made its state dir");
    assert!(lab.leftover_cgroups().is_empty());

    let mut lab =
        LabRun::start(&["--pods", "1", "--duration", "1s", "--force", "--pods-per-minute", "0"], &state, &runc);
    let out = lab.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    assert_eq!((u64_at(&v, "/pods_created"), u64_at(&v, "/pods_deleted")), (1, 0), "{v:#}");
    assert_gone_after(&lab, &v);
}

#[test]
fn real_kernel_lab_not_root_is_not_permitted() {
    let _serial = serial();
    let (_mem, _runc) = lab_env();
    let work = tmp_dir("cgleak-test-lab-nonroot-");
    let state = work.path().join("state");
    use std::os::unix::process::CommandExt;
    let out = cgleak()
        .args(["lab", "--duration", "1s", "--state-dir"])
        .arg(&state)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("running cgleak as uid 65534 (is the target directory readable by others?)");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root"), "{}", describe(&out));
    assert!(!state.exists());
}

/// Refused before anything is looked at on the host: these need no root.
#[test]
fn lab_usage_errors() {
    for (args, why) in [
        (&["--pods", "2000"][..], "5000"),
        (&["--pods", "1000", "--containers-per-pod", "4"][..], "--containers-per-pod"),
        (&["--duration", "10x"][..], "unknown unit"),
        (&["--duration", "0s"][..], "more than 0"),
        (&["--pods", "0"][..], "--pods"),
        (&["--orphan-every", "0"][..], "--orphan-every"),
        (&["--containers-per-pod", "17"][..], "--containers-per-pod"),
        (&["--runtime", "docker"][..], "--runtime"),
        (&["--host-root", "/tmp"][..], "--host-root"),
    ] {
        let out = cgleak().arg("lab").args(args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

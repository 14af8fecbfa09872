//! `cgleak status` and `cgleak check` against the running kernel.
//!
//! Each test asserts its environment first (root, a memory cgroup mount; runc and
//! busybox for the container test) and panics when it is missing: these tests never
//! pass by testing nothing. The census is host-wide, so the tests of this binary run
//! one at a time ([`serial`]). Every cgroup they make sits under a scratch parent
//! `cgleak-test-<pid>-<what>` that a guard removes from every hierarchy, also on
//! panic; at most a few hundred memcgs exist at any time.
//!
//! `cargo test -p cgleak --test real_kernel -- --skip real_kernel` runs none of them.

mod common;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use common::kernel::*;
use common::runc::{make_bundle, make_rootfs};

const MIB: u64 = 1 << 20;

/// How often a step is tried again when the host's own cgroups changed while it ran
/// (each retry first waits for the host to hold still, up to 5 s).
const ATTEMPTS: u32 = 30;

/// Before a step is tried again: let a burst of the host's own changes pass.
fn pause_before_retry(root: &Path) {
    settle(root, Duration::from_millis(300), Duration::from_secs(5));
}

/// cgleak's live and dying figures must be the kernel's own, read while they held still.
fn assert_agrees(s: &Value, k: &KernelCount) {
    assert_eq!(
        u64_at(s, "/memcg/live"),
        k.dirs,
        "memcg.live differs from the number of directories in the memory hierarchy ({k:?}):\n{:#}",
        s["memcg"]
    );
    assert_eq!(
        u64_at(s, "/memcg/dying"),
        k.dying(),
        "memcg.dying differs from /proc/cgroups num_cgroups minus those directories ({k:?}):\n{:#}",
        s["memcg"]
    );
}

/// What changed on the host besides the test's own `expected` change of (dirs, num_cgroups).
fn host_change(after: &KernelCount, before: &KernelCount, expected: (i64, i64)) -> (i64, i64) {
    let d = after.minus(before);
    (d.0 - expected.0, d.1 - expected.1)
}

fn tmp_dir(prefix: &str) -> tempfile::TempDir {
    // Under the cargo target dir: a real disk filesystem (ext4 here), not tmpfs.
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("temp dir in {}: {e}", env!("CARGO_TARGET_TMPDIR")))
}

// How these steps stay exact while the host churns: the host creates, removes and
// frees memcgs of its own at any time (its sessions' cgroups come and go, its dying
// memcgs are freed when their pages are). So each status is taken "quiet" (the
// kernel's directory count and /proc/cgroups num_cgroups are the same just before
// and just after cgleak ran) and must then equal the kernel's figures exactly; and
// a step's before/after pair is judged only when the kernel's figures moved by
// exactly the test's own change. If they moved by anything else, the step's cgroups
// are removed and the step is done again with fresh ones once the host holds still.
// A miscount by cgleak still fails: every quiet status is compared exactly, and the
// deltas are asserted exactly whenever the host held still.
#[test]
fn real_kernel_census_counts_live_and_dying() {
    let _serial = serial();
    let mem = memory_mount();
    assert_eq!(
        mem.version,
        1,
        "this test counts dying memcgs as /proc/cgroups num_cgroups minus directories, which needs the memory \
         controller on cgroup v1; it is on cgroup2 at {}",
        mem.mount_point.display()
    );
    let root = mem.mount_point.clone();
    let first = status(&[]);
    assert_eq!(first["cgroup"]["memory_version"], 1, "{first:#}");
    assert_eq!(first["cgroup"]["memory_root"], root.display().to_string(), "{first:#}");
    assert_eq!(first["memcg"]["dying_source"], "proc_cgroups_minus_live", "{first:#}");

    // Memcgs removed by the tests before this one are still being freed for a moment.
    if !settle(&root, Duration::from_millis(500), Duration::from_secs(15)) {
        eprintln!("the host's memory cgroups did not hold still for 0.5 s within 15 s: relying on retries");
    }
    let mut parents: Vec<ScratchCgroup> = Vec::new();

    // Step 1: a scratch parent with 20 children is 21 more live memcgs, no more dying.
    let mut done = false;
    for attempt in 1..=ATTEMPTS {
        let (s0, k0) = quiet_status(&root, &[]);
        assert_agrees(&s0, &k0);
        let parent = ScratchCgroup::create_in_memory(&format!("live{attempt}"));
        for i in 0..20 {
            let c = parent.path().join(format!("c{i}"));
            fs::create_dir(&c).unwrap_or_else(|e| panic!("mkdir {}: {e}", c.display()));
        }
        let (s1, k1) = quiet_status(&root, &[]);
        assert_agrees(&s1, &k1);
        let host = host_change(&k1, &k0, (21, 21));
        if host == (0, 0) {
            assert_eq!(u64_at(&s1, "/memcg/live"), u64_at(&s0, "/memcg/live") + 21, "live after 21 mkdirs\nbefore: {s0:#}\nafter: {s1:#}");
            assert_eq!(u64_at(&s1, "/memcg/dying"), u64_at(&s0, "/memcg/dying"), "dying after 21 mkdirs");
            parents.push(parent);
            done = true;
            break;
        }
        eprintln!("step 1, attempt {attempt}: the host changed meanwhile (directories {:+}, num_cgroups {:+} besides ours); again", host.0, host.1);
        parent.remove();
        pause_before_retry(&root);
    }
    assert!(done, "the host's memory cgroups changed during each of {ATTEMPTS} attempts of step 1");

    // Steps 2 and 3: ten memcgs that each hold 4 MiB of page cache of an ext4 file;
    // rmdir makes them dying (charges never block rmdir, docs/kernel-facts.md section 4);
    // dropping those files' page cache releases them. Retried as a unit.
    let files_dir = tmp_dir("cgleak-test-pagecache-");
    assert_not_tmpfs(files_dir.path());
    done = false;
    for attempt in 1..=ATTEMPTS {
        let parent = ScratchCgroup::create_in_memory(&format!("dying{attempt}"));
        let children: Vec<PathBuf> = (0..10).map(|i| parent.path().join(format!("d{i}"))).collect();
        let files: Vec<PathBuf> = (0..10).map(|i| files_dir.path().join(format!("a{attempt}-d{i}"))).collect();
        for c in &children {
            fs::create_dir(c).unwrap_or_else(|e| panic!("mkdir {}: {e}", c.display()));
        }
        let writers: Vec<_> = children.iter().zip(&files).map(|(c, f)| spawn_writer_in(c, f, 4 * MIB)).collect();
        for (mut w, c) in writers.into_iter().zip(&children) {
            let st = w.wait().expect("waiting for a writer");
            assert!(st.success(), "the writer in {} failed: {st}", c.display());
        }
        for c in &children {
            let cache = memory_stat(c, "cache").unwrap_or_else(|| panic!("{}/memory.stat has no `cache` line", c.display()));
            assert!(cache >= 4 * MIB, "{}: {cache} bytes of page cache charged after its task wrote 4 MiB", c.display());
        }

        let (s0, k0) = quiet_status(&root, &[]);
        assert_agrees(&s0, &k0);
        for c in &children {
            fs::remove_dir(c).unwrap_or_else(|e| panic!("rmdir {}: {e}", c.display()));
        }
        let (s1, k1) = quiet_status(&root, &[]);
        assert_agrees(&s1, &k1);
        let host = host_change(&k1, &k0, (-10, 0));
        if host != (0, 0) {
            eprintln!("step 2, attempt {attempt}: the host changed meanwhile (directories {:+}, num_cgroups {:+} besides ours); again", host.0, host.1);
            // Free these ten too before the next attempt, and let that pass.
            files.iter().for_each(|f| drop_page_cache_of(f));
            parent.remove();
            pause_before_retry(&root);
            continue;
        }
        assert_eq!(u64_at(&s1, "/memcg/live"), u64_at(&s0, "/memcg/live") - 10, "live after rmdir of 10\nbefore: {s0:#}\nafter: {s1:#}");
        assert_eq!(u64_at(&s1, "/memcg/dying"), u64_at(&s0, "/memcg/dying") + 10, "dying after rmdir of 10 with page cache\nbefore: {s0:#}\nafter: {s1:#}");

        // Step 3: drop these files' page cache (again on every poll: a page still under
        // writeback or in a per-CPU LRU batch is skipped by one fadvise) until the kernel
        // has freed our ten; dying must then be back at the baseline. The writers charged
        // only the files' pages (spawn_writer_in preallocates); should a page of anything
        // else still pin one after 10 s, reclaim on the live parent releases it too
        // (memory.force_empty walks dying children, docs/kernel-facts.md section 4).
        let baseline = u64_at(&s0, "/memcg/dying");
        let dropped_at = Instant::now();
        let mut last = None;
        let mut forced = false;
        let outcome = poll(Duration::from_secs(30), Duration::from_millis(100), || {
            files.iter().for_each(|f| drop_page_cache_of(f));
            if dropped_at.elapsed() > Duration::from_secs(10) {
                force_empty(parent.path());
                forced = true;
            }
            let (s, k) = quiet_status(&root, &[]);
            assert_agrees(&s, &k);
            let host = host_change(&k, &k0, (-10, -10));
            last = Some((s.clone(), k));
            match host {
                (0, 0) => Some(Ok(s)),
                // Fewer than all ten freed yet: num_cgroups still above the target.
                (0, n) if n > 0 => None,
                other => Some(Err(other)),
            }
        });
        match outcome {
            Some(Ok(s)) => {
                assert_eq!(u64_at(&s, "/memcg/dying"), baseline, "dying once the page cache was dropped\n{s:#}");
                assert_eq!(u64_at(&s, "/memcg/live"), u64_at(&s0, "/memcg/live") - 10);
                let how = if forced { "dropped, then memory.force_empty on their parent" } else { "dropped" };
                eprintln!("the 10 dying memcgs were freed {:?} after their page cache was {how}", dropped_at.elapsed());
                parents.push(parent);
                done = true;
                break;
            }
            Some(Err(host)) => {
                eprintln!("step 3, attempt {attempt}: the host changed meanwhile (directories {:+}, num_cgroups {:+} besides ours); again", host.0, host.1);
                parent.remove();
                pause_before_retry(&root);
            }
            None => {
                let (s, k) = last.expect("polled at least once");
                panic!(
                    "30 s after dropping their page cache (and 20 s of memory.force_empty on their parent), the 10 dying \
                     memcgs are not all freed: num_cgroups {} (expected {}), directories {} (expected {}); cgleak says \
                     dying {} (baseline {baseline}); the parent still has total_cache {:?}, total_rss {:?} bytes charged",
                    k.num_cgroups,
                    k0.num_cgroups - 10,
                    k.dirs,
                    k0.dirs - 10,
                    u64_at(&s, "/memcg/dying"),
                    memory_stat(parent.path(), "total_cache"),
                    memory_stat(parent.path(), "total_rss"),
                );
            }
        }
    }
    assert!(done, "the host's memory cgroups changed during each of {ATTEMPTS} attempts of steps 2 and 3");
    for p in parents {
        p.remove();
    }
}

/// `runc delete --force` on drop, whatever state the container is in.
struct RuncContainer {
    runc: PathBuf,
    id: String,
}

impl RuncContainer {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.stdin(Stdio::null());
        c
    }

    /// Run a runc subcommand on this container; it must succeed.
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).arg(&self.id).output().expect("running runc");
        assert!(out.status.success(), "runc {args:?} {}: {}", self.id, describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self) -> Option<String> {
        let out = self.cmd().args(["state", &self.id]).output().expect("running runc state");
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).ok()).flatten()?["status"].as_str().map(str::to_string)
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = self.cmd().args(["delete", "--force", &self.id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// A status whose kubepods roots are exactly `ours` (None: no kubepods tree at all).
/// Another test suite on this host may keep a kubepods tree of its own for a while:
/// the exact pod counts below are taken only once it is gone.
fn status_with_kubepods_roots(args: &[&OsStr], ours: Option<&str>) -> Value {
    let want = ours.map_or(Value::Null, |r| json!([r]));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut told = false;
    loop {
        let s = status(args);
        let roots = if s["kubepods"].is_null() { Value::Null } else { s["kubepods"]["roots"].clone() };
        if roots == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "for 3 minutes the memory hierarchy held kubepods trees other than this test's ({want}): {roots}"
        );
        if !told {
            eprintln!("kubepods roots {roots} besides this test's ({want}): waiting for them to go");
            told = true;
        }
        sleep(Duration::from_millis(500));
    }
}

fn kubepods_of(s: &Value) -> &Value {
    let kp = &s["kubepods"];
    assert!(kp.is_object(), "status found no kubepods tree:\n{s:#}");
    kp
}

#[test]
fn real_kernel_runc_pod_then_orphan() {
    let _serial = serial();
    let mem = memory_mount();
    let runc = find_program("runc", &["/usr/sbin/runc"])
        .unwrap_or_else(|| panic!("this test runs a container: runc is neither on PATH nor at /usr/sbin/runc"));
    assert_executable(&runc, "the container test (runc)");
    let busybox = Path::new("/bin/busybox");
    assert_executable(busybox, "the container's root filesystem (busybox-static)");
    // The pod counts below are exact: no other kubepods tree may be on the host.
    status_with_kubepods_roots(&[], None);

    let scratch = ScratchCgroup::claim("runc");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let pid = std::process::id() as u64;
    let uid = format!("{:08x}-c91e-4a4b-8d00-{:012x}", pid as u32, nanos & 0xffff_ffff_ffff);
    let container_cgroup = format!("{pid:016x}{nanos:016x}{:016x}{:016x}", !nanos, pid.rotate_left(32) ^ nanos);
    let pod_rel = format!("{}/kubepods/besteffort/pod{uid}", scratch.name);
    let cgroups_path = format!("/{pod_rel}/{container_cgroup}");

    let work = tmp_dir("cgleak-test-runc-");
    let bundle = work.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    make_rootfs(busybox, &rootfs);
    make_bundle(&runc, &rootfs, &bundle, &cgroups_path, &["/bin/sleep", "1000"], None);
    let kubelet_root = work.path().join("kubelet");
    let pod_dir = kubelet_root.join("pods").join(&uid);
    fs::create_dir_all(&pod_dir).unwrap();
    let kubelet_args: [&OsStr; 2] = [OsStr::new("--kubelet-root-dir"), kubelet_root.as_os_str()];

    // The id says whose it is in `runc list`; the cgroup leaf is a 64-hex id as containerd names it.
    let container = RuncContainer { runc: runc.clone(), id: scratch.name.clone() };
    let pid_file = work.path().join("container.pid");
    let stderr_file = work.path().join("runc.stderr");
    // stdio to /dev/null and a file: the detached container inherits them and must not hold a pipe of ours.
    let st = Command::new(&runc)
        .arg("--log")
        .arg(work.path().join("runc.log"))
        .args(["run", "-d", "--pid-file"])
        .arg(&pid_file)
        .arg("--bundle")
        .arg(&bundle)
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_file).unwrap())
        .status()
        .expect("running runc run");
    assert!(
        st.success(),
        "runc run -d: {st}\nstderr: {}\nlog: {}",
        fs::read_to_string(&stderr_file).unwrap_or_default(),
        fs::read_to_string(work.path().join("runc.log")).unwrap_or_default()
    );
    let init: u32 = fs::read_to_string(&pid_file).unwrap().trim().parse().expect("runc's pid file holds a pid");
    assert_eq!(container.state().as_deref(), Some("running"));
    let mem_container = mem.mount_point.join(cgroups_path.trim_start_matches('/'));
    let procs = fs::read_to_string(mem_container.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("runc made no memory cgroup at {}: {e}", mem_container.display()));
    assert!(procs.split_whitespace().any(|p| p == init.to_string()), "container init {init} is not in {}: {procs:?}", mem_container.display());

    // A running pod the kubelet knows.
    let root_host = mem.mount_point.join(&scratch.name).join("kubepods").display().to_string();
    let ours_only = |args: &[&OsStr]| status_with_kubepods_roots(args, Some(&root_host));
    let s = ours_only(&kubelet_args);
    let kp = kubepods_of(&s);
    assert_eq!(kp["driver"], "cgroupfs", "{kp:#}");
    assert_eq!((u64_at(kp, "/pods"), u64_at(kp, "/containers")), (1, 1), "{kp:#}");
    assert_eq!(kp["by_qos"]["besteffort"], json!({"pods": 1, "containers": 1}), "{kp:#}");
    assert_eq!(kp["by_qos"]["burstable"], json!({"pods": 0, "containers": 0}), "{kp:#}");
    assert_eq!(kp["by_qos"]["guaranteed"], json!({"pods": 0, "containers": 0}), "{kp:#}");
    assert_eq!(kp["orphans"], 0, "{kp:#}");
    assert_eq!(kp["orphan_pods"], json!([]), "{kp:#}");
    assert_eq!(kp["kubelet_pods_dir"], kubelet_root.join("pods").display().to_string(), "{kp:#}");
    assert_eq!(kp["kubelet_pods_dir_found"], true, "{kp:#}");

    // Unknown to the kubelet but a task still runs in it: not an orphan.
    fs::remove_dir(&pod_dir).unwrap();
    let s = ours_only(&kubelet_args);
    assert_eq!(kubepods_of(&s)["orphans"], 0, "a pod cgroup with a running task is no orphan:\n{:#}", s["kubepods"]);
    fs::create_dir(&pod_dir).unwrap();

    let out = container.cmd().args(["kill", &container.id, "KILL"]).output().unwrap();
    assert!(out.status.success(), "runc kill {} KILL: {}", container.id, describe(&out));
    let stopped = poll(Duration::from_secs(10), Duration::from_millis(50), || (container.state().as_deref() == Some("stopped")).then_some(()));
    assert!(stopped.is_some(), "container still {:?} 10 s after SIGKILL", container.state());
    container.run(&["delete"]);
    for m in cgroup_mounts() {
        let c = m.mount_point.join(cgroups_path.trim_start_matches('/'));
        assert!(!c.exists(), "runc delete left the container cgroup {}", c.display());
    }
    let mem_pod = mem.mount_point.join(&pod_rel);
    assert!(mem_pod.is_dir(), "runc delete removed the pod cgroup {} too: nothing is left to be orphaned", mem_pod.display());

    // Deleted container, pod still known to the kubelet: an empty pod, no orphan.
    let s = ours_only(&kubelet_args);
    let kp = kubepods_of(&s);
    assert_eq!((u64_at(kp, "/pods"), u64_at(kp, "/containers"), u64_at(kp, "/orphans")), (1, 0, 0), "{kp:#}");

    // The kubelet forgot the pod: its empty cgroup is an orphan.
    fs::remove_dir(&pod_dir).unwrap();
    let s = ours_only(&kubelet_args);
    let kp = kubepods_of(&s);
    assert_eq!(kp["orphans"], 1, "{kp:#}");
    assert_eq!(kp["orphan_pods"].as_array().map(Vec::len), Some(1), "{kp:#}");
    assert_eq!(kp["orphan_pods"][0]["uid"], uid.as_str(), "{kp:#}");
    assert_eq!(kp["orphan_pods"][0]["qos"], "besteffort", "{kp:#}");
    assert_eq!(kp["orphan_pods"][0]["path"], mem_pod.display().to_string(), "{kp:#}");
    assert_eq!(kp["by_qos"]["besteffort"], json!({"pods": 1, "containers": 0}), "{kp:#}");

    // check turns it into a finding naming the pod cgroup.
    let out = cgleak().args(["check", "--output", "json"]).args(kubelet_args).stdin(Stdio::null()).output().unwrap();
    let v = json_of(&out);
    let orphan = v["findings"].as_array().and_then(|f| f.iter().find(|f| f["id"] == "orphan_pod_cgroups"));
    let orphan = orphan.unwrap_or_else(|| panic!("check has no orphan_pod_cgroups finding:\n{:#}", v["findings"]));
    let named = orphan["evidence"].as_array().is_some_and(|e| e.iter().any(|e| e["file"] == mem_pod.display().to_string()));
    assert!(named, "the orphan finding does not name {}: {orphan:#}", mem_pod.display());
    assert_ne!(v["verdict"], "healthy", "{v:#}");
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let remedies = v["remedies"].as_array().cloned().unwrap_or_default();
    assert!(remedies.iter().any(|r| r["action"] == "gc"), "no gc remedy for an orphaned pod cgroup:\n{remedies:#?}");

    drop(container);
    scratch.remove();
    let out = Command::new(&runc).args(["list", "-q"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "runc list: {}", describe(&out));
    let ids = String::from_utf8_lossy(&out.stdout);
    assert!(!ids.lines().any(|l| l.trim() == ScratchCgroup::name_for("runc")), "runc still lists the test container: {ids}");
}

/// At most this many cgroups made by the churn in all: removed memcgs are freed
/// asynchronously, so this bounds the test's live and dying memcgs together,
/// whatever else the host does.
const CHURN_BUDGET: u64 = 4000;

/// mkdir and rmdir nested cgroups under `parent` until `stop` or the budget is spent:
/// chains 3 or 4 deep, at most 75 chains (about 260 cgroups) alive, the oldest removed
/// as each new one is made.
fn churn(parent: &Path, stop: &AtomicBool, made: &AtomicU64) -> Result<(), String> {
    let mut chains: VecDeque<PathBuf> = VecDeque::new();
    let remove = |top: &Path| -> Result<(), String> {
        let mut dirs = cgroup_dirs(top);
        dirs.reverse();
        dirs.iter().try_for_each(|d| fs::remove_dir(d).map_err(|e| format!("rmdir {}: {e}", d.display())))
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if made.load(Ordering::Relaxed) + 4 > CHURN_BUDGET {
            sleep(Duration::from_millis(5));
            continue;
        }
        let top = parent.join(format!("t{n}"));
        let mut d = top.clone();
        for level in 0..3 + n % 2 {
            if level > 0 {
                d.push(format!("l{level}"));
            }
            fs::create_dir(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
            made.fetch_add(1, Ordering::Relaxed);
        }
        chains.push_back(top);
        if chains.len() > 75 {
            remove(&chains.pop_front().unwrap())?;
        }
        n += 1;
        // Spread the budget over the status runs.
        sleep(Duration::from_micros(300));
    }
    chains.iter().try_for_each(|c| remove(c))
}

/// Stops and joins the churn thread on drop, so it never outlives the test's scratch parent.
struct Churn {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Churn {
    fn start(parent: PathBuf) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), made.clone());
        let thread = Some(thread::spawn(move || churn(&parent, &s, &m)));
        Churn { stop, made, thread }
    }
    fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }
    fn finish(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().map_err(|_| "the churn thread panicked".to_string())?
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn real_kernel_walk_survives_concurrent_removal() {
    let _serial = serial();
    memory_mount();
    let scratch = ScratchCgroup::create_in_memory("churn");
    let churn = Churn::start(scratch.path().to_path_buf());
    let warm = poll(Duration::from_secs(10), Duration::from_millis(5), || (churn.made() >= 100).then_some(()));
    assert!(warm.is_some(), "the churn thread made only {} cgroups in 10 s", churn.made());

    let made_before = churn.made();
    let mut gone = 0;
    for run in 1..=20 {
        if run == 20 {
            assert!(churn.made() < CHURN_BUDGET, "the churn spent its budget before the last status run: that run raced nothing");
        }
        let out = cgleak().args(["status", "--output", "json"]).stdin(Stdio::null()).output().expect("running cgleak");
        assert_eq!(out.status.code(), Some(0), "status run {run} during cgroup churn: {}", describe(&out));
        let v = json_of(&out);
        assert!(u64_at(&v, "/memcg/live") >= 1, "run {run}: {:#}", v["memcg"]);
        gone += u64_at(&v, "/walk_gone");
    }
    let made_during = churn.made() - made_before;
    churn.finish().unwrap_or_else(|e| panic!("the churn thread failed: {e}"));
    assert!(made_during > 0, "no cgroup was made while status ran: the walks raced nothing");
    eprintln!("20 status runs during churn ({made_during} cgroups made meanwhile): {gone} directories vanished mid-walk");
    scratch.remove();
}

#[test]
fn real_kernel_check_healthy_here() {
    let _serial = serial();
    memory_mount();
    let out = cgleak().args(["check", "--output", "json"]).stdin(Stdio::null()).output().expect("running cgleak");
    let v = json_of(&out);
    let verdict = v["verdict"].as_str().unwrap_or_else(|| panic!("verdict is not a string:\n{v:#}"));
    let code = out.status.code();
    assert!(matches!(code, Some(0) | Some(3)), "check exited {code:?} (0 healthy, 3 at_risk or leaking expected here): {}", describe(&out));
    assert_eq!(code == Some(0), verdict == "healthy", "exit {code:?} with verdict {verdict}");
    assert!(["healthy", "at_risk", "leaking"].contains(&verdict), "verdict {verdict}");

    let findings = v["findings"].as_array().unwrap_or_else(|| panic!("findings is not an array:\n{v:#}"));
    assert!(!findings.is_empty(), "no findings");
    for f in findings {
        assert!(f["id"].as_str().is_some_and(|s| !s.is_empty()), "finding without id: {f:#}");
        assert!(["info", "warning", "critical"].contains(&f["severity"].as_str().unwrap_or("")), "severity: {f:#}");
        assert!(f["summary"].as_str().is_some_and(|s| !s.is_empty()), "summary: {f:#}");
        let evidence = f["evidence"].as_array().unwrap_or_else(|| panic!("evidence is not an array: {f:#}"));
        for e in evidence {
            assert!(e["file"].is_string() && e["value"].is_string(), "evidence needs file and value strings: {e:#}");
        }
    }
    for id in ["memcg_id_headroom", "kernel_era"] {
        assert!(findings.iter().any(|f| f["id"] == id), "no {id} finding:\n{findings:#?}");
    }
    let remedies = v["remedies"].as_array().unwrap_or_else(|| panic!("remedies is not an array:\n{v:#}"));
    for r in remedies {
        assert!(r["action"].as_str().is_some_and(|s| !s.is_empty()), "remedy without action: {r:#}");
        assert!(r["summary"].is_string(), "remedy summary: {r:#}");
        assert!(r["needs_reboot"].is_boolean() && r["disturbs_pods"].is_boolean(), "remedy flags: {r:#}");
    }
    if verdict != "healthy" {
        assert!(!remedies.is_empty(), "verdict {verdict} without a remedy:\n{v:#}");
    }
    eprintln!("check here: {verdict} (exit {code:?}), {} findings, {} remedies", findings.len(), remedies.len());
}

/// `--host-root` as in a DaemonSet pod: in a private mount namespace the host's `/`
/// is bind-mounted at `<tmp>/host`, so `<root>/proc/self/mountinfo` lists the cgroup
/// mounts twice (at /sys/fs/cgroup/... and at <tmp>/host/sys/fs/cgroup/...). cgleak
/// must read the ones under the host root and report them by the host's names.
#[test]
fn real_kernel_host_root_in_a_mount_namespace() {
    let _serial = serial();
    assert_root();
    let mem = memory_mount();
    let unshare = find_program("unshare", &["/usr/bin/unshare"]).expect("unshare (util-linux) is needed for this test");
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    let script = format!(
        "mount --rbind / {h} && exec {bin} --host-root {h} status --output json",
        h = host.display(),
        bin = env!("CARGO_BIN_EXE_cgleak")
    );
    let (direct, _) = quiet_status(&mem.mount_point, &[]);
    let out = Command::new(unshare).args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "cgleak --host-root in a mount namespace failed: {}", describe(&out));
    let via = json_of(&out);
    // The private namespace dies with the process: nothing stays mounted on the host.
    assert!(fs::read_dir(&host).unwrap().next().is_none(), "the bind mount leaked out of its namespace");
    assert_eq!(via["cgroup"]["memory_root"], direct["cgroup"]["memory_root"], "{:#}", via["cgroup"]);
    assert_eq!(via["cgroup"]["mode"], direct["cgroup"]["mode"]);
    assert_eq!(via["kernel"]["release"], direct["kernel"]["release"]);
    let live_direct = u64_at(&direct, "/memcg/live") as i64;
    let live_via = u64_at(&via, "/memcg/live") as i64;
    // The host's own cgroups may come and go between the two runs: only a handful.
    assert!((live_direct - live_via).abs() <= 5, "live via --host-root {live_via}, direct {live_direct}");
    assert!(
        via["cgroup"]["mounts"].as_array().unwrap().iter().all(|m| !m["mount_point"].as_str().unwrap().contains(host.to_str().unwrap())),
        "mount points must be reported by the host's names: {:#}",
        via["cgroup"]["mounts"]
    );
}

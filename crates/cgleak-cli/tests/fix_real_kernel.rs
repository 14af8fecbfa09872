//! `cgleak fix migrate` on the running kernel (6.18, cgroup v1 memory, root).
//!
//! Every test asserts its environment first (root, a v1 memory hierarchy; runc and
//! busybox where containers run) and fails loudly when it is missing. Every cgroup sits
//! under a scratch parent `cgleak-test-<pid>-<what>` removed from every hierarchy on
//! drop, and every process moved is one the test started (plain processes, or runc
//! containers with a runc state directory of the test's own). The figures compared
//! come from the kernel's files, read here without cgleak's code.
//!
//! Crash safety: `real_kernel_fix_migrate_survives_a_kill_at_any_point` kills the fixer
//! (SIGKILL) at each of its failpoints and at random points, then runs `--resume`;
//! `CGLEAK_CRASH_RUNS=2000 cargo test -p cgleak --test fix_real_kernel survives_a_kill -- --nocapture`
//! runs it longer (default 200 runs in all).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::kernel::*;
use common::runc::PodFleet;

/// The memory settings a migration must carry over, as files read them.
const SETTINGS: [&str; 5] = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.swappiness", "memory.use_hierarchy"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupSnap {
    tids: BTreeSet<u32>,
    settings: Vec<(String, String)>,
    ino: u64,
}

/// Each cgroup of the subtree at `top`, by path relative to it.
fn snapshot(top: &Path) -> BTreeMap<PathBuf, CgroupSnap> {
    let mut out = BTreeMap::new();
    for dir in cgroup_dirs(top) {
        let rel = dir.strip_prefix(top).unwrap().to_path_buf();
        let read = |f: &str| fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
        let Ok(tasks) = read("tasks") else { continue };
        let mut settings: Vec<(String, String)> = SETTINGS.iter().filter_map(|f| read(f).ok().map(|v| (f.to_string(), v))).collect();
        let oom = read("memory.oom_control").unwrap_or_default();
        settings.push(("oom_kill_disable".into(), oom.lines().find_map(|l| l.strip_prefix("oom_kill_disable ")).unwrap_or("?").to_string()));
        let ino = fs::metadata(&dir).map(|m| m.ino()).unwrap_or(0);
        out.insert(rel, CgroupSnap { tids: tasks.split_whitespace().filter_map(|t| t.parse().ok()).collect(), settings, ino });
    }
    out
}

fn alive(tid: u32) -> bool {
    Path::new(&format!("/proc/{tid}")).exists()
}

/// After a migration (or its resume): the same cgroups at the same paths with the same
/// settings, every task that still lives at its cgroup's path, no mirror, no journal.
/// `fresh`: each cgroup must be a new one (another inode); else the same one (rollback).
fn assert_migrated(before: &BTreeMap<PathBuf, CgroupSnap>, top: &Path, state: &Path, fresh: bool, what: &str) -> BTreeMap<PathBuf, CgroupSnap> {
    let after = snapshot(top);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "{what}: the cgroups under {} differ", top.display());
    for (rel, b) in before {
        let a = &after[rel];
        assert_eq!(a.settings, b.settings, "{what}: settings of {}", rel.display());
        let lost: Vec<u32> = b.tids.iter().copied().filter(|t| alive(*t) && !a.tids.contains(t)).collect();
        assert!(lost.is_empty(), "{what}: tasks {lost:?} are no longer in {} (it has {:?})", rel.display(), a.tids);
        let foreign: Vec<u32> = a.tids.iter().copied().filter(|t| !b.tids.contains(t)).collect();
        assert!(foreign.is_empty(), "{what}: tasks {foreign:?} arrived in {} from elsewhere", rel.display());
        if fresh {
            assert_ne!(a.ino, b.ino, "{what}: {} is not a new cgroup", rel.display());
        } else {
            assert_eq!(a.ino, b.ino, "{what}: {} was replaced although rolled back", rel.display());
        }
    }
    let parent = top.parent().unwrap();
    let mirrors: Vec<String> = fs::read_dir(parent).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("cgleak-migrate.")).collect();
    assert!(mirrors.is_empty(), "{what}: mirrors left in {}: {mirrors:?}", parent.display());
    assert!(!state.join("fix-journal.jsonl").exists(), "{what}: the journal is unfinished");
    after
}

fn fix(args: &[&str], state: &Path, failpoint: Option<&str>) -> Command {
    let mut c = cgleak();
    c.arg("fix").args(args).arg("--state-dir").arg(state).stdin(Stdio::null());
    if let Some(f) = failpoint {
        c.env("CGLEAK_FAILPOINT", f);
    }
    c
}

fn run_ok(mut c: Command, what: &str) -> Value {
    let out = c.args(["--output", "json"]).output().expect("running cgleak fix");
    assert_eq!(out.status.code(), Some(0), "{what}: {}", describe(&out));
    json_of(&out)
}

fn resume(state: &Path, extra: &[&str], what: &str) -> Value {
    let mut c = fix(&["--resume"], state, None);
    c.args(extra);
    run_ok(c, what)
}

fn rel_of(scratch: &ScratchCgroup) -> String {
    format!("{}/kubepods", scratch.name)
}

/// Processes the test started, killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small kubelet-style tree of plain processes: burstable/poda/{c1,c2},
/// besteffort/podb/c1, guaranteed podc/c1, with pod and container limits and one
/// container with oom_kill_disable; a `sleep` in each container, two in one.
fn small_tree(what: &str) -> (ScratchCgroup, Procs) {
    memory_mount();
    let scratch = ScratchCgroup::create_in_memory(what);
    let k = scratch.path().join("kubepods");
    let mut procs = Procs(Vec::new());
    for (i, pod) in ["burstable/poda", "besteffort/podb", "podc"].iter().enumerate() {
        let p = k.join(pod);
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("memory.limit_in_bytes"), ((300 + i as u64) << 20).to_string()).unwrap();
        let containers: &[&str] = if i == 0 { &["c1", "c2"] } else { &["c1"] };
        for c in containers {
            let d = p.join(c);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("memory.limit_in_bytes"), ((100 + i as u64) << 20).to_string()).unwrap();
            fs::write(d.join("memory.soft_limit_in_bytes"), (50u64 << 20).to_string()).unwrap();
            procs.0.push(spawn_in(&d, "sleep", &["100000"]));
        }
    }
    fs::write(k.join("burstable/poda/c2/memory.oom_control"), "1").unwrap();
    procs.0.push(spawn_in(&k.join("podc/c1"), "sleep", &["100000"]));
    // Every task has joined before the test looks.
    let want = procs.0.len();
    let joined = poll(Duration::from_secs(10), Duration::from_millis(10), || (snapshot(&k).values().map(|s| s.tids.len()).sum::<usize>() == want).then_some(()));
    assert!(joined.is_some(), "the {want} test processes did not all join their cgroups");
    (scratch, procs)
}

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cgleak-test-fix-state-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// 20 pods of 3 real runc containers each, with pod and container memory limits:
/// migrated, every task is back at its path with the same settings, runc still execs in,
/// kills and deletes every container, and no scratch cgroup is left.
#[test]
fn real_kernel_fix_migrate_moves_runc_pods_and_runc_still_manages_them() {
    let _serial = serial();
    memory_mount();
    let mut fleet = PodFleet::start("migrate-runc", 20, 3, &["/bin/sleep", "100000"]);
    let top = fleet.scratch.path().join("kubepods");
    let before = snapshot(&top);
    assert_eq!(before.len(), 3 + 20 + 60, "kubepods, 2 QoS classes, 20 pods, 60 containers");
    for c in &fleet.containers {
        let rel = PathBuf::from(c.cgroups_path.trim_start_matches('/')).strip_prefix(format!("{}/kubepods", fleet.scratch.name)).unwrap().to_path_buf();
        assert!(before[&rel].tids.contains(&c.pid), "container {} init {} not in {}", c.id, c.pid, rel.display());
        assert_eq!(before[&rel].settings[0].1, c.limit.to_string(), "runc set the limit of {}", c.id);
    }
    let state = state_dir();
    let v = run_ok(fix(&["migrate", "--cgroup", &rel_of(&fleet.scratch), "--apply", "--yes"], state.path(), None), "migrate");
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    assert_eq!(v["result"]["details"]["cgroups"], 83, "{:#}", v["result"]["details"]);
    assert_eq!(v["result"]["details"]["threads_moved_out"], v["result"]["details"]["threads_moved_back"]);
    assert_migrated(&before, &top, state.path(), true, "after migrate");
    eprintln!("migrated 60 runc containers: {:#}", v["result"]["details"]);

    // The runtime still manages them: exec joins the cgroups at their paths, kill, delete.
    let first = fleet.containers[0].clone();
    let out = fleet.runc.cmd().args(["exec", &first.id, "/bin/true"]).output().unwrap();
    assert!(out.status.success(), "runc exec after the migration: {}", describe(&out));
    fleet.kill_and_delete_all();
    for m in cgroup_mounts() {
        let left: Vec<PathBuf> = cgroup_dirs(&m.mount_point.join(&fleet.scratch.name).join("kubepods"))
            .into_iter()
            .filter(|d| d.file_name().is_some_and(|n| n.len() == 64))
            .filter(|d| d.exists())
            .collect();
        assert!(left.is_empty(), "runc delete left container cgroups in {}: {left:?}", m.mount_point.display());
    }
}

/// Kill the fixer at every failpoint (before and after each journaled step), then at
/// random points of its run, and resume each time: nothing is lost. A rollback before
/// the old cgroups go leaves the very same cgroups; after, it finishes instead.
#[test]
fn real_kernel_fix_migrate_survives_a_kill_at_any_point() {
    let _serial = serial();
    let (scratch, _procs) = small_tree("crash");
    let top = scratch.path().join("kubepods");
    let rel = rel_of(&scratch);
    let mut before = snapshot(&top);
    let state = state_dir();
    let total: u32 = std::env::var("CGLEAK_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut runs = 0u32;

    // Every failpoint, each then resumed.
    for step in 1..=6 {
        for pos in ["before", "after"] {
            let fp = format!("{pos}:{step}");
            let out = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), Some(&fp)).output().unwrap();
            assert_eq!(out.status.signal(), Some(9), "failpoint {fp}: the fixer should have died of SIGKILL: {}", describe(&out));
            assert!(state.path().join("fix-journal.jsonl").exists(), "failpoint {fp}: no journal left");
            // Nothing new starts while it is unfinished.
            let refused = fix(&["gc"], state.path(), None).output().unwrap();
            assert_eq!(refused.status.code(), Some(5), "a new fix beside an unfinished one: {}", describe(&refused));
            assert!(String::from_utf8_lossy(&refused.stderr).contains("cgleak fix --resume"), "{}", describe(&refused));
            let v = resume(state.path(), &["--yes"], &format!("resume after {fp}"));
            assert_eq!(v["result"]["outcome"], "completed", "{fp}: {v:#}");
            before = assert_migrated(&before, &top, state.path(), true, &format!("after a kill at {fp} and --resume"));
            runs += 1;
        }
    }

    // Rollback before the old cgroups are removed: the same cgroups, the tasks in them.
    let out = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), Some("after:2")).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let v = resume(state.path(), &["--rollback"], "resume --rollback after move-out");
    assert_eq!(v["result"]["outcome"], "rolled_back", "{v:#}");
    before = assert_migrated(&before, &top, state.path(), false, "rolled back after move-out");
    // Rollback once they are being removed: finished instead, and said so.
    let out = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), Some("before:3")).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let v = resume(state.path(), &["--rollback"], "resume --rollback at remove-old");
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    assert!(v["result"]["notes"].to_string().contains("finished instead"), "{v:#}");
    before = assert_migrated(&before, &top, state.path(), true, "rollback asked too late");
    runs += 2;

    // Random points: the kill lands a random time after the journal appears.
    let seed = std::env::var("CGLEAK_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("random kills: CGLEAK_CRASH_SEED={seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t = Instant::now();
    let v = run_ok(fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), None), "a whole migration");
    let whole = t.elapsed();
    before = assert_migrated(&before, &top, state.path(), true, "an uninterrupted migration");
    runs += 1;
    let span_us = (v["result"]["details"]["total_ms"].as_f64().unwrap_or(20.0) * 1000.0 * 1.3) as u64 + 1;
    let (mut mid, mut after_end) = (0u32, 0u32);
    while runs < total {
        let mut child = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let journal = state.path().join("fix-journal.jsonl");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !journal.exists() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no journal within 30 s");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(next() % span_us));
        let _ = child.kill();
        let st = child.wait().unwrap();
        if journal.exists() {
            let v = resume(state.path(), &["--yes"], &format!("resume after random kill {runs}"));
            if v["resumed"] == false {
                // Killed between the journal's end record and its archiving: nothing to finish.
                assert!(v["message"].as_str().is_some_and(|m| m.contains("nothing to resume")), "{v:#}");
                assert!(!journal.exists(), "resume left an ended journal unarchived");
                after_end += 1;
            } else {
                assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
                mid += 1;
            }
        } else {
            assert!(st.success() || st.signal() == Some(9), "{st:?}");
            after_end += 1;
        }
        before = assert_migrated(&before, &top, state.path(), true, &format!("random kill {runs} (seed {seed})"));
        runs += 1;
    }
    eprintln!("{runs} runs in all; of the random kills {mid} landed mid-fix, {after_end} after it ended (a whole fixer run: {whole:?})");
    assert!(total < 40 || mid * 4 >= (mid + after_end), "too few random kills landed mid-fix ({mid} of {}): the test would test little", mid + after_end);
    drop(scratch);
}

fn stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('T')))
}

fn wait_stopped(child: &mut Child) {
    let ok = poll(Duration::from_secs(30), Duration::from_millis(10), || stopped(child.id()).then_some(()));
    assert!(ok.is_some(), "the fixer did not stop at its failpoint: {:?}", child.try_wait());
}

fn cont(child: &Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGCONT) }, 0);
}

fn output_of(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// One fixer at a time (75, or --wait); a pod created and one deleted while a migration
/// runs are handled: the new one is migrated too, the deleted one is not brought back.
#[test]
fn real_kernel_fix_two_fixers_and_pods_that_come_and_go_during_a_migration() {
    let _serial = serial();
    let (scratch, mut procs) = small_tree("concurrent");
    let top = scratch.path().join("kubepods");
    let rel = rel_of(&scratch);
    let state = state_dir();
    let mut first = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes", "--output", "json"], state.path(), Some("before:2:stop")).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_stopped(&mut first);

    let second = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), None).output().unwrap();
    assert_eq!(second.status.code(), Some(75), "a second fixer: {}", describe(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another cgleak fix is running"), "{}", describe(&second));
    let plan_only = fix(&["gc"], state.path(), None).output().unwrap();
    assert_eq!(plan_only.status.code(), Some(75), "a plan beside a running fix: {}", describe(&plan_only));

    // While it is paused with the mirror made: a new pod with a task and a limit, and a pod gone.
    let new_pod = top.join("burstable/podnew");
    fs::create_dir(&new_pod).unwrap();
    fs::create_dir(new_pod.join("c1")).unwrap();
    fs::write(new_pod.join("c1/memory.limit_in_bytes"), (77u64 << 20).to_string()).unwrap();
    procs.0.push(spawn_in(&new_pod.join("c1"), "sleep", &["100000"]));
    let gone = top.join("besteffort/podb");
    for t in snapshot(&gone).values().flat_map(|s| s.tids.clone()) {
        // SAFETY: a sleep this test started.
        unsafe { libc::kill(t as i32, libc::SIGKILL) };
    }
    remove_tree(&gone);
    assert!(!gone.exists());
    let joined = poll(Duration::from_secs(10), Duration::from_millis(10), || (!snapshot(&new_pod.join("c1")).values().next()?.tids.is_empty()).then_some(()));
    assert!(joined.is_some());
    let before = snapshot(&top);

    // A third fixer waits for the lock, then finds nothing unfinished and plans afresh.
    let mut waiting = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes", "--wait", "--output", "json"], state.path(), None).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(waiting.try_wait().unwrap().is_none(), "--wait did not wait for the lock");
    cont(&first);
    let out = output_of(first);
    assert_eq!(out.status.code(), Some(0), "the paused fixer: {}", describe(&out));
    let v = json_of(&out);
    assert_eq!(v["result"]["details"]["added_since_plan"], 2, "podnew and podnew/c1 adopted: {:#}", v["result"]["details"]);
    assert_eq!(v["result"]["details"]["dropped_since_plan"], 2, "podb and podb/c1 dropped: {:#}", v["result"]["details"]);
    // The waiting fixer starts as soon as the first lets go, so the tree is checked once
    // both are done: two migrations in a row keep every path, setting and task.
    let out = output_of(waiting);
    assert_eq!(out.status.code(), Some(0), "the waiting fixer: {}", describe(&out));
    let w = json_of(&out);
    assert_eq!(w["result"]["outcome"], "completed", "the waiting fixer planned afresh and finished: {w:#}");
    assert_eq!(w["result"]["details"]["added_since_plan"], 0, "{:#}", w["result"]["details"]);
    assert_migrated(&before, &top, state.path(), true, "after pods came and went and the waiting fixer");
    assert!(!gone.exists(), "the deleted pod was brought back");
    drop(scratch);
}

/// A task that forks all the time (a shell loop running `true`) is moved with every
/// child it makes meanwhile; the migration converges.
#[test]
fn real_kernel_fix_migrate_moves_a_task_that_forks_continuously() {
    let _serial = serial();
    let (scratch, mut procs) = small_tree("forking");
    let top = scratch.path().join("kubepods");
    let c = top.join("burstable/poda/c1");
    procs.0.push(spawn_in(&c, "sh", &["-c", "while :; do /bin/true; done"]));
    let forker = procs.0.last().unwrap().id();
    std::thread::sleep(Duration::from_millis(200));
    let before = snapshot(&top);
    let state = state_dir();
    let v = run_ok(fix(&["migrate", "--cgroup", &rel_of(&scratch), "--apply", "--yes"], state.path(), None), "migrate beside a fork loop");
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    let after = snapshot(&top);
    for (rel, b) in &before {
        let a = &after[rel];
        assert_eq!(a.settings, b.settings, "settings of {}", rel.display());
        let lost: Vec<u32> = b.tids.iter().copied().filter(|t| alive(*t) && !a.tids.contains(t)).collect();
        assert!(lost.is_empty(), "tasks {lost:?} lost from {}", rel.display());
        assert_ne!(a.ino, b.ino);
    }
    assert!(after[Path::new("burstable/poda/c1")].tids.contains(&forker), "the forking shell is not back in its cgroup");
    let mirror = scratch.path().join("cgleak-migrate.kubepods");
    assert!(!mirror.exists(), "mirror left: {}", mirror.display());
    drop(scratch);
}

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
    let mut c = fix(&["--resume", "--yes"], state, None);
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
    // How long a path was missing (remove-old to recreate), measured, and well short of the
    // kubelet's 1 min sync period.
    let missing = v["result"]["details"]["max_missing_ms"].as_f64().unwrap_or_else(|| panic!("no max_missing_ms: {:#}", v["result"]["details"]));
    assert!(missing > 0.0 && missing < 15_000.0, "{missing} ms");
    let which = v["result"]["details"]["max_missing_cgroup"].as_str().unwrap();
    assert!(which.starts_with(&top.display().to_string()), "{which}");
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
            let v = resume(state.path(), &[], &format!("resume after {fp}"));
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
        let mut child = fix(&["migrate", "--cgroup", &rel, "--apply", "--yes"], state.path(), None).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let journal = state.path().join("fix-journal.jsonl");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !journal.exists() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no journal within 30 s");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(next() % span_us));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let st = out.status;
        if journal.exists() {
            let v = resume(state.path(), &[], &format!("resume after random kill {runs}"));
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
            assert!(st.success() || st.signal() == Some(9), "{st:?}: {}", String::from_utf8_lossy(&out.stderr));
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

const MIB: u64 = 1 << 20;

/// Ten memcgs made dying by page cache of their files (as in the census test) are
/// released by `fix reclaim` (sync, drop_caches 1); a second reclaim within
/// --min-interval is refused with exit 5, and `--min-interval 0` lifts the limit.
#[test]
fn real_kernel_fix_reclaim_releases_dying_memcgs_and_keeps_its_rate_limit() {
    let _serial = serial();
    let mem = memory_mount();
    assert_eq!(mem.version, 1, "this test drops the page cache to release v1 dying memcgs; memory is on cgroup2 at {}", mem.mount_point.display());
    let root = mem.mount_point.clone();
    let files = tempfile::Builder::new().prefix("cgleak-test-reclaim-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_not_tmpfs(files.path());
    let scratch = ScratchCgroup::create_in_memory("reclaim");
    let children: Vec<PathBuf> = (0..10).map(|i| scratch.path().join(format!("d{i}"))).collect();
    for c in &children {
        fs::create_dir(c).unwrap();
    }
    let writers: Vec<Child> = children.iter().enumerate().map(|(i, c)| spawn_writer_in(c, &files.path().join(format!("f{i}")), 4 * MIB)).collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    for c in &children {
        assert!(memory_stat(c, "cache").unwrap_or(0) >= 4 * MIB, "{}: its page cache is not charged to it", c.display());
    }
    let k0 = KernelCount::read(&root);
    for c in &children {
        fs::remove_dir(c).unwrap_or_else(|e| panic!("rmdir {}: {e}", c.display()));
    }
    let k1 = KernelCount::read(&root);
    assert!(k1.dying() >= k0.dying() + 10, "ten removed memcgs with page cache should be dying: before {k0:?}, after {k1:?}");

    let state = state_dir();
    let plan = run_ok(fix(&["reclaim"], state.path(), None), "reclaim plan");
    assert!(plan["plan"]["steps"].as_array().is_some_and(|s| s.len() == 1), "one drop planned: {plan:#}");
    assert!(!state.path().join("reclaim-last-drop").exists(), "the plan wrote the rate-limit stamp");
    let v = run_ok(fix(&["reclaim", "--apply", "--yes"], state.path(), None), "reclaim");
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    let step = &v["result"]["details"]["steps"][0];
    let released = step["released"].as_i64().unwrap_or_else(|| panic!("released per step: {v:#}"));
    let k2 = KernelCount::read(&root);
    assert!(released >= 10, "the drop released {released} dying memcgs, ours were 10: {v:#}");
    assert!(k2.dying() + 10 <= k1.dying(), "the kernel still counts them: before the drop {k1:?}, after {k2:?}");
    assert_eq!(step["dying_after"].as_u64(), Some(u64_at(&v, "/after/dying")), "{v:#}");
    assert!(state.path().join("reclaim-last-drop").exists());

    // The rate limit holds: applying again within the hour is refused, and says how to lift it.
    let again = fix(&["reclaim", "--apply", "--yes"], state.path(), None).output().unwrap();
    assert_eq!(again.status.code(), Some(5), "a second drop within --min-interval: {}", describe(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("--min-interval") && err.contains("next drop is allowed"), "{}", describe(&again));
    let forced = fix(&["reclaim", "--apply", "--yes", "--min-interval", "0"], state.path(), None).output().unwrap();
    assert_eq!(forced.status.code(), Some(0), "--min-interval 0: {}", describe(&forced));
    let bad = fix(&["reclaim", "--min-interval", "soon"], state.path(), None).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--min-interval"), "{}", describe(&bad));
    scratch.remove();
}

/// Orphaned pod cgroups (no task, no kubelet pod directory) go from the memory and the
/// pids hierarchy, deepest first; a pod the kubelet knows, one with a task, and one
/// whose task appears while the fixer is paused before its step are all kept.
#[test]
fn real_kernel_fix_gc_removes_orphans_in_every_hierarchy_and_skips_a_pod_that_gains_a_task() {
    let _serial = serial();
    memory_mount();
    let mounts: Vec<CgroupMount> = cgroup_mounts().into_iter().filter(|m| m.version == 1 && (m.has("memory") || m.has("pids"))).collect();
    assert_eq!(mounts.len(), 2, "this test needs v1 memory and pids hierarchies: {:?}", cgroup_mounts());
    let scratch = ScratchCgroup::claim("gc");
    let kubelet = tempfile::Builder::new().prefix("cgleak-test-kubelet-").tempdir().unwrap();
    fs::create_dir_all(kubelet.path().join("pods")).unwrap();
    let uid = |n: u32| format!("{n:08x}-1111-2222-3333-444455556666");
    // (uid, QoS directory, containers): 1 and 2 orphans, 3 known to the kubelet,
    // 4 with a task in its memory cgroup, 5 gains one while the fixer waits.
    let pods = [(1, "burstable", 2), (2, "besteffort", 1), (3, "burstable", 1), (4, "besteffort", 1), (5, "burstable", 1)];
    let pod_rel = |n: u32, qos: &str| PathBuf::from(format!("{}/kubepods/{qos}/pod{}", scratch.name, uid(n)));
    for m in &mounts {
        for (n, qos, containers) in pods {
            for c in 0..containers {
                fs::create_dir_all(m.mount_point.join(pod_rel(n, qos)).join(format!("{:064x}", c + 1))).unwrap();
            }
        }
    }
    fs::create_dir(kubelet.path().join("pods").join(uid(3))).unwrap();
    let mem = memory_mount().mount_point;
    let mut procs = Procs(vec![spawn_in(&mem.join(pod_rel(4, "besteffort")).join(format!("{:064x}", 1)), "sleep", &["100000"])]);
    let k = kubelet.path().to_str().unwrap();

    let plan = run_ok(fix(&["gc", "--kubelet-root-dir", k, "--min-age", "0"], state_dir().path(), None), "gc plan");
    let steps = plan["plan"]["steps"].as_array().unwrap_or_else(|| panic!("{plan:#}")).clone();
    assert_eq!(steps.len(), 3, "orphans 1, 2 and 5: {plan:#}");
    for s in &steps {
        for c in s["cgroups"].as_array().unwrap() {
            assert!(c.as_str().unwrap().contains(&scratch.name), "the plan touches a cgroup outside the test's: {c}");
        }
    }
    let first = &steps.iter().find(|s| s["title"].as_str().unwrap().contains(&uid(1))).expect("pod 1 planned")["cgroups"];
    let p1 = format!("{}", mem.join(pod_rel(1, "burstable")).display());
    let i1 = first.as_array().unwrap().iter().position(|c| c == &Value::from(p1.clone()));
    let ic = first.as_array().unwrap().iter().position(|c| c.as_str().unwrap().starts_with(&format!("{p1}/")));
    assert!(i1.is_some() && ic.is_some() && ic < i1, "containers before their pod (deepest first): {first:#}");
    let step5 = steps.iter().position(|s| s["title"].as_str().unwrap().contains(&uid(5))).expect("pod 5 planned") + 1;

    let state = state_dir();
    let mut fixer = fix(&["gc", "--kubelet-root-dir", k, "--min-age", "0", "--apply", "--yes", "--output", "json"], state.path(), Some(&format!("before:{step5}:stop")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_stopped(&mut fixer);
    let c5 = mem.join(pod_rel(5, "burstable")).join(format!("{:064x}", 1));
    procs.0.push(spawn_in(&c5, "sleep", &["100000"]));
    assert!(poll(Duration::from_secs(10), Duration::from_millis(10), || (!fs::read_to_string(c5.join("tasks")).ok()?.trim().is_empty()).then_some(())).is_some());
    cont(&fixer);
    let out = output_of(fixer);
    assert_eq!(out.status.code(), Some(0), "gc: {}", describe(&out));
    let v = json_of(&out);
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    assert_eq!(v["result"]["details"]["pods_removed"], 2, "{v:#}");
    assert_eq!(v["result"]["details"]["pods_skipped"], 1, "{v:#}");
    let s5 = &v["result"]["steps"][step5 - 1];
    assert_eq!(s5["status"], "skipped", "{v:#}");
    assert!(s5["detail"].as_str().unwrap().contains("a task is in"), "{v:#}");
    for m in &mounts {
        for (n, qos, _) in pods {
            let d = m.mount_point.join(pod_rel(n, qos));
            assert_eq!(d.exists(), n >= 3, "pod {n} in {} after gc", m.mount_point.display());
        }
    }
    drop(procs);
    drop(scratch);
}

/// Orphaned pod cgroups made in the memory and pids hierarchies under a scratch parent,
/// `kubepods/burstable/pod<uid>/<container>`; a kubelet root of the test's own.
struct Orphans {
    scratch: ScratchCgroup,
    kubelet: tempfile::TempDir,
    mounts: Vec<CgroupMount>,
}

impl Orphans {
    fn new(what: &str) -> Orphans {
        memory_mount();
        let mounts: Vec<CgroupMount> = cgroup_mounts().into_iter().filter(|m| m.version == 1 && (m.has("memory") || m.has("pids"))).collect();
        assert_eq!(mounts.len(), 2, "this test needs v1 memory and pids hierarchies: {:?}", cgroup_mounts());
        let kubelet = tempfile::Builder::new().prefix("cgleak-test-kubelet-").tempdir().unwrap();
        fs::create_dir_all(kubelet.path().join("pods")).unwrap();
        Orphans { scratch: ScratchCgroup::claim(what), kubelet, mounts }
    }

    fn uid(n: u32) -> String {
        format!("{n:08x}-aaaa-bbbb-cccc-444455556666")
    }

    fn rel(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}/kubepods/burstable/pod{}", self.scratch.name, Orphans::uid(n)))
    }

    /// Pod `n`'s cgroup (one container) in both hierarchies.
    fn make(&self, n: u32) {
        for m in &self.mounts {
            fs::create_dir_all(m.mount_point.join(self.rel(n)).join(format!("{:064x}", n))).unwrap();
        }
    }

    fn exists(&self, n: u32) -> bool {
        self.mounts.iter().any(|m| m.mount_point.join(self.rel(n)).exists())
    }

    fn remove(&self, n: u32) {
        for m in &self.mounts {
            remove_tree(&m.mount_point.join(self.rel(n)));
        }
    }

    fn kubelet_root(&self) -> &str {
        self.kubelet.path().to_str().unwrap()
    }

    fn pod_dir(&self, n: u32) -> PathBuf {
        self.kubelet.path().join("pods").join(Orphans::uid(n))
    }
}

/// The step of pod `n` in a gc plan (1-based), from its title.
fn step_of(plan: &Value, n: u32) -> usize {
    plan["steps"].as_array().unwrap().iter().position(|s| s["title"].as_str().unwrap().contains(&Orphans::uid(n))).unwrap_or_else(|| panic!("pod {n} not planned: {plan:#}")) + 1
}

/// `--min-age`: a pod whose cgroup is younger is left (in the plan's notes), an older one
/// removed; one made again after the plan is skipped at its step (in its result).
#[test]
fn real_kernel_fix_gc_leaves_pods_younger_than_min_age() {
    let _serial = serial();
    let o = Orphans::new("gc-age");
    o.make(1);
    o.make(2);
    // Pod 3 stays younger than 4 s for the next 4 s, whatever the runs below take.
    std::thread::sleep(Duration::from_millis(4500));
    o.make(3);
    let k = o.kubelet_root();

    // The default, 10 minutes: every one of them is too young.
    let v = run_ok(fix(&["gc", "--kubelet-root-dir", k], state_dir().path(), None), "gc plan, default --min-age");
    assert_eq!(v["plan"]["nothing_to_do"], "no orphaned pod cgroup older than --min-age 10m", "{v:#}");
    let notes = v["plan"]["notes"].to_string();
    assert!(notes.contains("3 orphaned pods left, their cgroup younger than --min-age 10m") && notes.contains(&Orphans::uid(3)), "{notes}");

    // 4 s: pods 1 and 2 planned, 3 left and named.
    let v = run_ok(fix(&["gc", "--kubelet-root-dir", k, "--min-age", "4s"], state_dir().path(), None), "gc plan, --min-age 4s");
    let plan = &v["plan"];
    assert_eq!(plan["steps"].as_array().unwrap().len(), 2, "{plan:#}");
    assert!(plan["notes"].to_string().contains(&format!("{} (", Orphans::uid(3))), "{plan:#}");
    let step1 = step_of(plan, 1);

    // Paused before pod 1's step, pod 1 is made again: its cgroup is young now, and it stays.
    let state = state_dir();
    let mut fixer = fix(&["gc", "--kubelet-root-dir", k, "--min-age", "4s", "--apply", "--yes", "--output", "json"], state.path(), Some(&format!("before:{step1}:stop")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_stopped(&mut fixer);
    o.remove(1);
    o.make(1);
    cont(&fixer);
    let out = output_of(fixer);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    let s1 = &v["result"]["steps"][step1 - 1];
    assert_eq!(s1["status"], "skipped", "{v:#}");
    assert!(s1["detail"].as_str().unwrap().contains("younger than --min-age 4s"), "{v:#}");
    assert_eq!(v["result"]["details"]["pods_removed"], 1, "{v:#}");
    assert!(o.exists(1) && !o.exists(2) && o.exists(3), "pods 1 and 3 stay, 2 goes");
    drop(o);
}

/// A process named `kubelet` (a copy of sleep, started by the test, killed on drop), as
/// cgleak finds a running kubelet: by its comm in /proc.
fn fake_kubelet() -> (tempfile::TempDir, Procs) {
    let bin = tempfile::Builder::new().prefix("cgleak-test-fake-kubelet-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fake = bin.path().join("kubelet");
    {
        let _lock = cgleak_fixtures::exec_lock();
        fs::copy(find_program("sleep", &["/bin/sleep", "/usr/bin/sleep"]).expect("sleep"), &fake).unwrap();
    }
    let child = {
        let _lock = cgleak_fixtures::exec_lock();
        Command::new(&fake).arg("100000").stdin(Stdio::null()).spawn().unwrap()
    };
    let pid = child.id();
    let procs = Procs(vec![child]);
    let comm_ok = poll(Duration::from_secs(5), Duration::from_millis(10), || (fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim() == "kubelet").then_some(()));
    assert!(comm_ok.is_some(), "the fake kubelet does not show as `kubelet`");
    (bin, procs)
}

/// Beside a kubelet, migrate is refused unless --allow-kubelet; allowed, the plan says
/// what a kubelet sync may do while a path is missing, and the longest time a path was
/// missing is measured, short of the kubelet's sync period.
#[test]
fn real_kernel_fix_migrate_beside_a_kubelet_measures_how_long_paths_were_missing() {
    let _serial = serial();
    let (scratch, _procs) = small_tree("kubelet");
    let top = scratch.path().join("kubepods");
    let before = snapshot(&top);
    let (_bin, kubelet) = fake_kubelet();
    let pid = kubelet.0[0].id();
    let state = state_dir();
    let refused = fix(&["migrate", "--cgroup", &rel_of(&scratch)], state.path(), None).output().unwrap();
    assert_eq!(refused.status.code(), Some(5), "{}", describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stdout).contains(&format!("a kubelet is running (pid {pid}")), "{}", describe(&refused));
    let v = run_ok(fix(&["migrate", "--cgroup", &rel_of(&scratch), "--allow-kubelet", "--apply", "--yes"], state.path(), None), "migrate --allow-kubelet");
    let notes = v["plan"]["notes"].to_string();
    assert!(notes.contains("max_missing_ms") && notes.contains("1 min by default") && notes.contains("rolled back before any old cgroup is removed"), "{notes}");
    assert_eq!(v["result"]["outcome"], "completed", "{v:#}");
    let missing = v["result"]["details"]["max_missing_ms"].as_f64().unwrap_or_else(|| panic!("{v:#}"));
    assert!(missing > 0.0 && missing < 15_000.0, "{missing} ms");
    assert_migrated(&before, &top, state.path(), true, "migrated beside a kubelet");
    drop(scratch);
}

/// A process named kubelet (a copy of sleep) runs: each pod must be found unknown twice, at
/// least 3 s apart. A pod the kubelet knew at the first check is kept although it is
/// unknown at the second; one unknown both times goes, and its result says so.
#[test]
fn real_kernel_fix_gc_beside_a_kubelet_confirms_a_pod_unknown_twice() {
    let _serial = serial();
    let o = Orphans::new("gc-kubelet");
    o.make(1);
    o.make(2);
    let k = o.kubelet_root();
    let (_bin, kubelet) = fake_kubelet();
    let kubelet_pid = kubelet.0[0].id();

    let v = run_ok(fix(&["gc", "--kubelet-root-dir", k, "--min-age", "0"], state_dir().path(), None), "gc plan beside a kubelet");
    let plan = v["plan"].clone();
    assert!(plan["notes"].to_string().contains(&format!("a kubelet runs (pid {kubelet_pid})")), "{plan:#}");
    let (step1, step2) = (step_of(&plan, 1), step_of(&plan, 2));

    // Killed before its first step, then pod 1's directory appears: the kubelet knows it.
    let state = state_dir();
    let killed = fix(&["gc", "--kubelet-root-dir", k, "--min-age", "0", "--apply", "--yes"], state.path(), Some("before:1")).output().unwrap();
    assert_eq!(killed.status.signal(), Some(9), "{}", describe(&killed));
    fs::create_dir(o.pod_dir(1)).unwrap();
    // The resume checks both pods first, then stops before pod 1's step; its directory goes.
    let started = Instant::now();
    let mut resumed = fix(&["--resume", "--yes", "--kubelet-root-dir", k, "--output", "json"], state.path(), Some(&format!("before:{step1}:stop"))).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_stopped(&mut resumed);
    fs::remove_dir(o.pod_dir(1)).unwrap();
    cont(&resumed);
    let out = output_of(resumed);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    let s1 = &v["result"]["steps"][step1 - 1];
    assert_eq!(s1["status"], "skipped", "{v:#}");
    assert!(s1["detail"].as_str().unwrap().contains("the kubelet has a directory for it again (first check; a kubelet runs)"), "{v:#}");
    let s2 = &v["result"]["steps"][step2 - 1];
    assert_eq!(s2["status"], "done", "{v:#}");
    let detail = s2["detail"].as_str().unwrap();
    let gap: f64 = detail.split("found unknown twice, ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{detail}"));
    assert!(gap >= 3.0, "the two checks were {gap} s apart: {detail}");
    assert!(started.elapsed() >= Duration::from_secs(3), "no wait between the checks");
    assert!(v["result"]["notes"].to_string().contains("a kubelet runs"), "{v:#}");
    assert!(o.exists(1) && !o.exists(2), "pod 1 (known at the first check) stays, pod 2 goes");
    drop(o);
}

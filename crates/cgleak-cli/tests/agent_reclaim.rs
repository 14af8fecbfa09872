//! `cgleak agent --reclaim-every`: the journaled reclaim of `cgleak fix reclaim`, run by the
//! agent with its journal, lock and stamp in `<state-dir>/reclaim/`, and its
//! `cgleak_reclaim_*` metrics scraped over loopback.
//!
//! - On this host (real kernel, root, v1 memory hierarchy): memcgs made dying by page cache
//!   are released by the agent's first run, the journal is archived in the agent's
//!   directory, `cgleak fix reclaim` honours the agent's stamp (exit 5), and a restarted
//!   agent's run within the interval is refused by the same rate limit. And as in the
//!   DaemonSet pod: the host's /proc and /sys read-only under a host root, in a mount
//!   namespace of the test's own, no capability: refused at start (exit 77) until
//!   drop_caches alone is mounted writable, then the run releases memcgs.
//! - On the CentOS 7 fixture (3.10-el7, a kernel we cannot boot): slab is dropped too (kmem
//!   leak), released memcgs are not counted (dying memcgs are not countable there) but dead
//!   slab IDs are; the drop writes the fixture's own drop_caches file.
//! - Flag checks: a cadence shorter than the rate limit, --reclaim-slab alone, and a
//!   drop_caches the agent cannot write are refused at start.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::agent::{agent_args, free_port, scrape_until, stop, Agent};
use common::fixture::{cgleak, Fixture};
use common::kernel::{assert_not_tmpfs, memory_mount, memory_stat, serial, spawn_writer_in, KernelCount, ScratchCgroup};
use common::prom::{assert_promtool_accepts, has_series, sample};

const MIB: u64 = 1 << 20;

fn spawn_agent(host_root: &Path, state: &Path, extra: &[&str]) -> Agent {
    spawn_agent_with(Command::new(env!("CARGO_BIN_EXE_cgleak")), host_root, state, extra)
}

/// `cmd` runs the agent (the binary, or a wrapper that execs it) with the usual flags and `extra`.
fn spawn_agent_with(mut cmd: Command, host_root: &Path, state: &Path, extra: &[&str]) -> Agent {
    let port = free_port();
    Agent::spawn(agent_args(&mut cmd, host_root, state, "1s", &format!("127.0.0.1:{port}"), &[&["--no-logs"], extra].concat()), port)
}

fn runs(text: &str, outcome: &str) -> Option<f64> {
    sample(text, &format!("cgleak_reclaim_runs_total{{outcome=\"{outcome}\"}}"))
}

/// The archived journals of the agent's reclaim, and whether one is still open.
fn agent_journals(state: &Path) -> (Vec<PathBuf>, bool) {
    let dir = state.join("reclaim");
    let archived = fs::read_dir(dir.join("fix-journals"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    (archived, dir.join("fix-journal.jsonl").exists())
}

/// The journal's lines as JSON.
fn journal_records(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()))).collect()
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `n` memcgs under `parent`, each charged with 4 MiB of page cache of its own file in
/// drop_caches is host-wide: one test's drop releases another test's dying memcgs while
/// it counts them, so the tests that drop run one at a time.
fn host_wide_drops() -> std::sync::MutexGuard<'static, ()> {
    static DROPS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    DROPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `files`, then removed: dying, pinned by that page cache (as in the fix reclaim test).
fn make_dying(parent: &Path, files: &Path, prefix: &str, n: usize) {
    let children: Vec<PathBuf> = (0..n).map(|i| parent.join(format!("{prefix}{i}"))).collect();
    for c in &children {
        fs::create_dir(c).unwrap_or_else(|e| panic!("mkdir {}: {e}", c.display()));
    }
    let writers: Vec<Child> = children.iter().enumerate().map(|(i, c)| spawn_writer_in(c, &files.join(format!("{prefix}{i}")), 4 * MIB)).collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    for c in &children {
        assert!(memory_stat(c, "cache").unwrap_or(0) >= 4 * MIB, "{}: its page cache is not charged to it", c.display());
        fs::remove_dir(c).unwrap_or_else(|e| panic!("rmdir {}: {e}", c.display()));
    }
}

/// The agent's first run releases ten memcgs made dying by page cache (v1: sync and
/// drop_caches 1; no slab on 6.18, where slab does not pin memcgs), reports them in its
/// metrics, archives its journal in `<state-dir>/reclaim/`; `cgleak fix reclaim` sharing
/// the state dir honours the agent's stamp (exit 5), and a restarted agent's run within
/// the interval is refused by the same rate limit.
#[test]
fn real_kernel_agent_reclaim_releases_dying_memcgs_and_keeps_the_rate_limit() {
    let _one_at_a_time = host_wide_drops();
    let _serial = serial();
    let mem = memory_mount();
    assert_eq!(mem.version, 1, "this test drops the page cache to release v1 dying memcgs; memory is on cgroup2 at {}", mem.mount_point.display());
    let root = mem.mount_point.clone();
    let files = tempfile::Builder::new().prefix("cgleak-test-agent-reclaim-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_not_tmpfs(files.path());
    let scratch = ScratchCgroup::create_in_memory("agent-reclaim");
    let k0 = KernelCount::read(&root);
    make_dying(scratch.path(), files.path(), "d", 10);
    let k1 = KernelCount::read(&root);
    // Reclaim on a busy host (CI) may free one of ours, or one of the host's own dying memcgs,
    // between the two counts: most of ours must be dying, and the drop must release them all.
    let made = k1.dying().saturating_sub(k0.dying());
    assert!(made >= 7, "ten removed memcgs with page cache should be dying: before {k0:?}, after {k1:?}");

    let state = tempfile::tempdir().unwrap();
    let started = now_unix();
    let a = spawn_agent(Path::new("/"), state.path(), &["--reclaim-every", "1h"]);
    // Every outcome is exported from the first scrape on (at 0 until a run has that outcome).
    let first = scrape_until(&a, "the first /metrics", Duration::from_secs(60), |_| true);
    for outcome in ["completed", "nothing_to_do", "refused", "failed"] {
        assert!(runs(&first, outcome).is_some(), "cgleak_reclaim_runs_total{{outcome={outcome:?}}} missing:\n{first}");
    }
    assert!(sample(&first, "cgleak_reclaim_released_memcgs_total").is_some() && sample(&first, "cgleak_reclaim_last_run_timestamp_seconds").is_some(), "{first}");
    let text = scrape_until(&a, "a completed reclaim run", Duration::from_secs(120), |t| runs(t, "completed") == Some(1.0));
    let k2 = KernelCount::read(&root);
    let released = sample(&text, "cgleak_reclaim_released_memcgs_total").unwrap();
    assert!(released >= made as f64, "the run released {released} dying memcgs, ours were {made}:\n{text}");
    assert!(k2.dying() + made <= k1.dying(), "the kernel still counts them: before the drop {k1:?}, after {k2:?}");
    for outcome in ["nothing_to_do", "refused", "failed"] {
        assert_eq!(runs(&text, outcome), Some(0.0), "{outcome}:\n{text}");
    }
    let last = sample(&text, "cgleak_reclaim_last_run_timestamp_seconds").unwrap();
    assert!(last >= started.floor() && last <= now_unix(), "last run at {last}, the agent started at {started}");
    // 6.18: no per-memcg slab caches, so neither the dead slab IDs nor their release.
    assert!(!has_series(&text, "cgleak_memcg_dead_slab_ids") && !has_series(&text, "cgleak_reclaim_released_dead_slab_ids_total"), "{text}");
    assert_promtool_accepts(&text);

    // The journal: archived in the agent's own directory, ended completed, with the drop's result.
    let (archived, open) = agent_journals(state.path());
    assert!(!open, "the agent's journal was left unfinished in {}", state.path().join("reclaim").display());
    assert_eq!(archived.len(), 1, "{archived:?}");
    let records = journal_records(&archived[0]);
    let begin = records.iter().find(|r| r["type"] == "begin").expect("a begin record");
    assert_eq!(begin["action"], "reclaim");
    let steps = begin["plan"]["view"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "drop_caches 1 only on 6.18: {begin:#}");
    assert_eq!(steps[0]["writes"][0]["value"], "1", "{begin:#}");
    let done = records.iter().find(|r| r["type"] == "done").expect("a done record");
    assert!(done["result"]["released"].as_i64().is_some_and(|r| r >= made as i64), "{done:#}");
    assert!(records.last().is_some_and(|r| r["type"] == "end" && r["outcome"] == "completed"), "{records:#?}");
    let stamp = state.path().join("reclaim/reclaim-last-drop");
    let stamped: f64 = fs::read_to_string(&stamp).unwrap().trim().parse().unwrap();
    assert_eq!(stamped, last, "the metric is the stamp's time");
    // Nothing of the fixer's in the agent's state dir.
    for fixer in ["fix-journal.jsonl", "fix-journals", "fix.lock", "reclaim-last-drop"] {
        assert!(!state.path().join(fixer).exists(), "{fixer} in the agent's state dir");
    }

    // The fixer sharing the state dir (both default to /var/lib/cgleak) honours the agent's drop.
    make_dying(scratch.path(), files.path(), "e", 3);
    let fixer = cgleak(&["fix", "reclaim", "--apply", "--yes", "--state-dir", state.path().to_str().unwrap()]);
    assert_eq!(fixer.code, 5, "fix reclaim within an hour of the agent's drop: {fixer:#?}");
    assert!(fixer.stderr.contains(&stamp.display().to_string()) && fixer.stderr.contains("next drop is allowed"), "{fixer:#?}");
    assert!(!state.path().join("reclaim-last-drop").exists(), "the refused fixer wrote its stamp");
    let err = stop(a);
    assert!(err.contains("cgleak: reclaim: completed: ") && err.contains("dying memcgs released"), "{err}");

    // The fixer, told to ignore its limit, drops anyway: its stamp is the latest now.
    let forced = cgleak(&["fix", "reclaim", "--apply", "--yes", "--min-interval", "0", "--state-dir", state.path().to_str().unwrap()]);
    assert_eq!(forced.code, 0, "{forced:#?}");
    let fixer_stamp = state.path().join("reclaim-last-drop");
    assert!(fixer_stamp.exists());

    // A restarted agent runs at once, and its rate limit refuses the run, naming the latest
    // drop: the fixer's, which the agent honours too.
    make_dying(scratch.path(), files.path(), "f", 3);
    let a = spawn_agent(Path::new("/"), state.path(), &["--reclaim-every", "1h"]);
    let text = scrape_until(&a, "a refused run", Duration::from_secs(60), |t| runs(t, "refused") == Some(1.0));
    assert_eq!(runs(&text, "completed"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "cgleak_reclaim_last_run_timestamp_seconds"), Some(stamped), "the agent's last drop, from its stamp:\n{text}");
    let err = stop(a);
    assert!(err.contains("cgleak: reclaim: refused: ") && err.contains("next drop is allowed"), "{err}");
    assert!(err.contains(&format!("recorded in {}", fixer_stamp.display())), "{err}");
    assert_eq!(agent_journals(state.path()).0.len(), 1, "a refused run starts no journal");
    assert_eq!(fs::read_to_string(&stamp).unwrap().trim().parse::<f64>().unwrap(), stamped, "a refused run leaves the stamp alone");
    scratch.remove();
}

/// In a mount namespace of its own (private: nothing reaches the host's mounts), the host's
/// /proc and /sys bound read-only under `host_root` as the DaemonSet mounts them (and, with
/// `drop_caches_writable`, that one file bound writable on top, as the chart's reclaim.every
/// does), then the agent with every capability dropped, still uid 0 as in the pod.
fn pod_like(host_root: &Path, drop_caches_writable: bool) -> Command {
    const SCRIPT: &str = r#"set -e
h=$1; w=$2; shift 2
mount --make-rprivate /
mkdir -p "$h/proc" "$h/sys"
mount --rbind /proc "$h/proc"
mount -o remount,bind,ro "$h/proc"
mount --rbind /sys "$h/sys"
mount -o remount,bind,ro "$h/sys"
if [ "$w" = 1 ]; then mount --bind /proc/sys/vm/drop_caches "$h/proc/sys/vm/drop_caches"; fi
exec setpriv --inh-caps=-all --bounding-set=-all "$@"
"#;
    for (tool, pkg) in [("unshare", "util-linux"), ("setpriv", "util-linux"), ("mount", "mount")] {
        assert!(common::kernel::find_program(tool, &[]).is_some(), "this test needs {tool} ({pkg})");
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", SCRIPT, "sh"])
        .arg(host_root)
        .arg(if drop_caches_writable { "1" } else { "0" })
        .arg(env!("CARGO_BIN_EXE_cgleak"));
    cmd
}

#[test]
fn real_kernel_agent_reclaim_in_a_pod_like_setup_needs_only_drop_caches_writable() {
    let _one_at_a_time = host_wide_drops();
    let _serial = serial();
    let mem = memory_mount();
    assert_eq!(mem.version, 1, "memory is on cgroup2 at {}: this test drops the page cache of v1 dying memcgs", mem.mount_point.display());
    let files = tempfile::Builder::new().prefix("cgleak-test-agent-pod-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_not_tmpfs(files.path());
    let scratch = ScratchCgroup::create_in_memory("agent-pod");
    make_dying(scratch.path(), files.path(), "p", 3);
    let host = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();

    // /proc read-only: refused at start, naming the file and why.
    let mut cmd = pod_like(host.path(), false);
    cmd.arg("--host-root").arg(host.path()).args(["agent", "--no-logs", "--listen", "127.0.0.1:0", "--reclaim-every", "1h", "--state-dir"]).arg(state.path());
    let out = {
        let _lock = cgleak_fixtures::exec_lock();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("unshare")
    }
    .wait_with_output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("--reclaim-every: /proc/sys/vm/drop_caches is not writable here") && err.contains("Read-only file system"), "{err}");

    // drop_caches alone writable: the run completes and releases our memcgs, without a capability.
    let a = spawn_agent_with(pod_like(host.path(), true), host.path(), state.path(), &["--reclaim-every", "1h"]);
    let text = scrape_until(&a, "a completed reclaim run", Duration::from_secs(120), |t| runs(t, "completed") == Some(1.0));
    let released = sample(&text, "cgleak_reclaim_released_memcgs_total").unwrap();
    assert!(released >= 3.0, "released {released}, ours were 3:\n{text}");
    assert_eq!(runs(&text, "failed"), Some(0.0), "{text}");
    let err = stop(a);
    assert!(err.contains("cgleak: reclaim: completed: "), "{err}");
    assert_eq!(agent_journals(state.path()).0.len(), 1);
    // The namespace's mounts went with it: nothing is left under the host root.
    for d in ["proc", "sys"] {
        let p = host.path().join(d);
        assert_eq!(fs::read_dir(&p).map(|rd| rd.count()).unwrap_or(0), 0, "{} is still mounted here", p.display());
    }
    scratch.remove();
}

/// The fixture's drop_caches, as a writable file (the kernel's file is always there).
fn with_drop_caches(f: &Fixture) -> PathBuf {
    let file = f.root().join("proc/sys/vm/drop_caches");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "0\n").unwrap();
    file
}

/// On RHEL/CentOS 7 with a kmem leak the agent's run drops slab too (auto), counts no
/// released memcgs (dying ones cannot be counted on 3.10) but exports the dead slab IDs
/// before and after.
#[test]
fn agent_reclaim_on_el7_drops_slab_and_counts_dead_slab_ids() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let drop_caches = with_drop_caches(&f);
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent(f.root(), state.path(), &["--reclaim-every", "1h"]);
    let text = scrape_until(&a, "a completed reclaim run", Duration::from_secs(60), |t| runs(t, "completed") == Some(1.0));
    assert!(!has_series(&text, "cgleak_reclaim_released_memcgs_total"), "released memcgs cannot be counted on 3.10:\n{text}");
    let dead = sample(&text, "cgleak_memcg_dead_slab_ids").expect("dead slab IDs on 3.10-el7");
    assert!(dead > 0.0, "{text}");
    // The fixture's slab caches stay: nothing went.
    assert_eq!(sample(&text, "cgleak_reclaim_released_dead_slab_ids_total"), Some(0.0), "{text}");
    assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"lower_bound\"} 1\n"), "{text}");
    assert_promtool_accepts(&text);
    // drop_caches 1, then 2: the page cache, then slab.
    assert_eq!(fs::read_to_string(&drop_caches).unwrap(), "2");
    let (archived, open) = agent_journals(state.path());
    assert!(!open && archived.len() == 1, "{archived:?}");
    let begin = journal_records(&archived[0]).into_iter().find(|r| r["type"] == "begin").unwrap();
    let values: Vec<&str> = begin["plan"]["view"]["steps"].as_array().unwrap().iter().map(|s| s["writes"][0]["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["1", "2"], "{begin:#}");
    let err = stop(a);
    assert!(err.contains("dying memcgs cannot be counted on 3.10-el7: IDs in use at least ") && err.contains(&format!("dead slab IDs {dead} -> {dead}")), "{err}");

    // --reclaim-slab never: the page cache only.
    let f = cgleak_fixtures::centos7_957_kmem();
    let drop_caches = with_drop_caches(&f);
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent(f.root(), state.path(), &["--reclaim-every", "1h", "--reclaim-slab", "never"]);
    scrape_until(&a, "a completed reclaim run", Duration::from_secs(60), |t| runs(t, "completed") == Some(1.0));
    stop(a);
    assert_eq!(fs::read_to_string(&drop_caches).unwrap(), "1");
}

#[test]
fn reclaim_flags_are_checked_at_start() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let root = f.root().to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let agent = |extra: &[&str]| {
        let mut args = vec!["--host-root", &root, "agent", "--no-logs", "--listen", "127.0.0.1:0", "--state-dir", st];
        args.extend_from_slice(extra);
        cgleak(&args)
    };
    // Shorter than the reclaim's rate limit: a usage error naming the flag.
    let r = agent(&["--reclaim-every", "10m"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("--reclaim-every") && r.stderr.contains("shorter than 1h"), "{r:#?}");
    let r = agent(&["--reclaim-every", "soon"]);
    assert_eq!(r.code, 2, "{r:#?}");
    let r = agent(&["--reclaim-slab", "always"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("--reclaim-every"), "{r:#?}");
    // No drop_caches to write (this fixture has none): refused at start, naming the file.
    let r = agent(&["--reclaim-every", "1h"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("--reclaim-every: /proc/sys/vm/drop_caches is not writable"), "{r:#?}");
    assert!(!state.path().join("reclaim").exists(), "{:?}", fs::read_dir(state.path()).unwrap().collect::<Vec<_>>());
}

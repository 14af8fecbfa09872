//! Benchmark of issue "Foundation": `cgleak status --output json` against
//! `find <memory root> -type d | wc -l` on a host with 30,000 memcgs in kubelet layout.
//!
//! Builds `cgleak-bench-<pid>/kubepods/{pod<uid>,burstable/pod<uid>,besteffort/pod<uid>}/<64-hex id>`
//! under the v1 memory hierarchy (CGLEAK_BENCH_MEMCGS directories in all, the scratch
//! parent, kubepods and the QoS directories included), then times both commands
//! alternately and reports medians, the ratio (target at most 0.25) and cgleak's peak RSS (ru_maxrss from
//! wait4, taken by a small launcher: see `launch`). Every run is checked, else the
//! bench exits non-zero: find must list exactly the built directories under the
//! scratch parent, and cgleak's memcg.live must be what was built plus the host's own
//! cgroups (counted before and after each run, as they may come and go), its kubepods
//! pods, containers and QoS counts what was built plus what was there before. Missed
//! targets are reported (ok=false), not failed.
//!
//! Safety: cgroups are created only under the scratch parent made here, never more than
//! 30,000, and removed again on return, on panic (a panic hook, since the release
//! profile aborts) and on SIGINT/SIGTERM (a flag checked in every loop).
//!
//! Run as root: `cargo bench -p cgleak --bench status_vs_find` (without --bench, as
//! under `cargo test --all-targets`, it does nothing).
//! Environment: CGLEAK_BENCH_MEMCGS (default and maximum 30000), CGLEAK_BENCH_ROUNDS (default 11).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod common;

use common::memcg_tree::{check_room, install_cleanup_panic_hook, v1_memory_mount, KubeletTree, CONTAINERS_PER_POD, FIXED_DIRS, MAX_BENCH_MEMCGS};
use common::{bench_main, cancel_on_signals, check_cancel, env_u64, median, ms, run_child};

const DEFAULT_ROUNDS: usize = 11;
const MAX_ROUNDS: usize = 1000;
const WARMUP_ROUNDS: usize = 2;
/// cgleak in at most a quarter of find's time (issue 12; it was a third): the census walks
/// the hierarchy on every CPU and lists no leaf, find lists every directory on one.
const TARGET_RATIO: f64 = 0.25;
const TARGET_RSS_KB: u64 = 16 * 1024;

fn main() -> ExitCode {
    bench_main("status_vs_find", run)
}

fn run() -> Result<bool, String> {
    let memcgs = env_u64("CGLEAK_BENCH_MEMCGS", MAX_BENCH_MEMCGS)?;
    if memcgs > MAX_BENCH_MEMCGS {
        return Err(format!("CGLEAK_BENCH_MEMCGS={memcgs}: refusing to build more than {MAX_BENCH_MEMCGS} memcgs on this host"));
    }
    if memcgs < FIXED_DIRS + 1 + CONTAINERS_PER_POD {
        return Err(format!("CGLEAK_BENCH_MEMCGS={memcgs}: at least {} are needed for one pod", FIXED_DIRS + 1 + CONTAINERS_PER_POD));
    }
    let rounds = env_u64("CGLEAK_BENCH_ROUNDS", DEFAULT_ROUNDS as u64)? as usize;
    if rounds == 0 || rounds > MAX_ROUNDS {
        return Err(format!("CGLEAK_BENCH_ROUNDS={rounds}: must be 1..={MAX_ROUNDS}"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root: it creates memory cgroups".into());
    }
    let cgleak = PathBuf::from(env!("CARGO_BIN_EXE_cgleak"));

    let (mount_point, memory_root) = v1_memory_mount()?;

    // The host must keep room to create cgroups: the bench's memcgs plus what others may hold.
    check_room(memcgs)?;

    let cancel = cancel_on_signals()?;
    install_cleanup_panic_hook("status_vs_find");

    // Kubepods trees already there: the checks expect them plus what is built.
    let base = run_status(&cgleak)?;
    let base_census = parse_census(&base.stdout)?;

    let plan = TreePlan::new(memcgs);
    let scratch = memory_root.join(format!("cgleak-bench-{}", std::process::id()));
    println!(
        "status_vs_find: building {memcgs} memcgs ({} pods, {} containers) under {}",
        plan.pods,
        plan.containers,
        scratch.display()
    );
    let t = Instant::now();
    let tree = KubeletTree::build(&scratch, memcgs, &cancel, &|n| println!("status_vs_find:   {n} memcgs"))?;
    assert!(tree.created.len() as u64 == plan.memcgs && tree.pods == plan.pods && tree.containers == plan.containers && plan.memcgs <= MAX_BENCH_MEMCGS);
    println!("status_vs_find: built in {:.1} s", t.elapsed().as_secs_f64());

    let expected = Expected {
        built: tree.created.len() as u64,
        pods: base_census.pods + plan.pods,
        containers: base_census.containers + plan.containers,
        by_qos: {
            let mut m = base_census.by_qos.clone();
            for (q, (p, c)) in &plan.by_qos {
                let e = m.entry(q.to_string()).or_default();
                e.0 += p;
                e.1 += c;
            }
            m
        },
        kubepods_root: scratch.join("kubepods"),
    };

    let mut cg_ms = Vec::with_capacity(rounds);
    let mut find_ms = Vec::with_capacity(rounds);
    let mut cg_rss = Vec::with_capacity(rounds);
    let mut find_rss = Vec::with_capacity(rounds);
    let mut errors: Vec<String> = Vec::new();
    let mut last_total = 0;
    for round in 0..WARMUP_ROUNDS + rounds {
        check_cancel(&cancel)?;
        let warm = round < WARMUP_ROUNDS;
        let label = if warm { format!("warm-up {}", round + 1) } else { format!("round {}", round - WARMUP_ROUNDS + 1) };

        // The host's own cgroups may come and go: count them (not ours) around each run.
        let outside_before = count_dirs_outside(&memory_root, &scratch);
        let s = run_status(&cgleak)?;
        let outside = (outside_before, count_dirs_outside(&memory_root, &scratch));
        if let Err(e) = parse_census(&s.stdout).and_then(|c| expected.check(&c, outside, &mount_point, &memory_root)) {
            errors.push(format!("{label}: cgleak: {e}"));
        }
        check_cancel(&cancel)?;
        let outside_before = count_dirs_outside(&memory_root, &scratch);
        let f = run_find(&memory_root, &scratch)?;
        let outside = (outside_before, count_dirs_outside(&memory_root, &scratch));
        if f.ours != expected.built {
            errors.push(format!("{label}: find counted {} directories in {}, {} were built", f.ours, scratch.display(), expected.built));
        }
        if !within(f.count - f.ours, outside) {
            errors.push(format!("{label}: find counted {} directories outside {}, the host has {outside:?}", f.count - f.ours, scratch.display()));
        }
        last_total = f.count;
        println!(
            "status_vs_find: {label:<11} cgleak {:>8.2} ms {:>6} KB   find {:>8.2} ms {:>6} KB",
            ms(s.wall),
            s.maxrss_kb,
            ms(f.wall),
            f.maxrss_kb
        );
        if !warm {
            cg_ms.push(ms(s.wall));
            find_ms.push(ms(f.wall));
            cg_rss.push(s.maxrss_kb);
            find_rss.push(f.maxrss_kb);
        }
    }

    let t = Instant::now();
    let removed = tree.created.len();
    drop(tree);
    println!("status_vs_find: removed {removed} memcgs in {:.1} s", t.elapsed().as_secs_f64());

    let cg_med = median(&cg_ms);
    let find_med = median(&find_ms);
    let ratio = cg_med / find_med;
    let cg_peak = cg_rss.iter().copied().max().unwrap_or(0);
    let find_peak = find_rss.iter().copied().max().unwrap_or(0);
    let ratio_ok = ratio <= TARGET_RATIO;
    let rss_ok = cg_peak <= TARGET_RSS_KB;
    let correct = errors.is_empty();

    println!();
    println!(
        "status_vs_find: {memcgs} memcgs built ({} pods, {} containers), {} directories in {}, {rounds} rounds after {WARMUP_ROUNDS} warm-up",
        plan.pods,
        plan.containers,
        last_total,
        mount_point.display()
    );
    println!("  {:<22} {:>14} {:>14} {:>14} {:>14}", "command", "median ms", "min ms", "max ms", "peak RSS KB");
    for (name, v, rss) in [("cgleak status -o json", &cg_ms, cg_peak), ("find -type d | wc -l", &find_ms, find_peak)] {
        println!(
            "  {:<22} {:>14.2} {:>14.2} {:>14.2} {:>14}",
            name,
            median(v),
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
            rss
        );
    }
    println!("  ratio cgleak/find      {ratio:.3}   (target <= {TARGET_RATIO}: {})", if ratio_ok { "met" } else { "MISSED" });
    println!("  cgleak peak RSS        {cg_peak} KB   (target <= {TARGET_RSS_KB} KB: {})", if rss_ok { "met" } else { "MISSED" });
    println!("  correctness            {}", if correct { "every run matched the built tree".to_string() } else { format!("{} FAILED checks", errors.len()) });
    for e in &errors {
        println!("    {e}");
    }
    println!(
        "status_vs_find: memcgs={memcgs} cpus={} cgleak_median_ms={cg_med:.2} find_median_ms={find_med:.2} ratio={ratio:.3} cgleak_peak_rss_kb={cg_peak} target_ratio={TARGET_RATIO} target_rss_kb={TARGET_RSS_KB} ratio_ok={ratio_ok} rss_ok={rss_ok} correct={correct}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(correct)
}

// ---------------------------------------------------------------- the tree

/// How many pods and containers [`KubeletTree::build`] makes of the requested number of
/// directories, and in which QoS class (pod i goes to QOS[i % 3]).
struct TreePlan {
    memcgs: u64,
    pods: u64,
    containers: u64,
    /// QoS class -> (pods, containers).
    by_qos: BTreeMap<&'static str, (u64, u64)>,
}

const QOS: [&str; 3] = ["guaranteed", "burstable", "besteffort"];

impl TreePlan {
    fn new(memcgs: u64) -> TreePlan {
        let mut plan = TreePlan { memcgs, pods: 0, containers: 0, by_qos: BTreeMap::new() };
        for q in QOS {
            plan.by_qos.insert(q, (0, 0));
        }
        for i in 0.. {
            let Some(n) = plan.containers_of(i) else { break };
            plan.pods += 1;
            plan.containers += n;
            let e = plan.by_qos.get_mut(QOS[(i % 3) as usize]).unwrap();
            e.0 += 1;
            e.1 += n;
        }
        plan
    }

    /// Containers of pod `i`, None past the last pod. A last, partial pod takes the remainder.
    fn containers_of(&self, i: u64) -> Option<u64> {
        let left = self.memcgs - FIXED_DIRS;
        let used = i * (1 + CONTAINERS_PER_POD);
        (used < left).then(|| (left - used - 1).min(CONTAINERS_PER_POD))
    }
}

// ---------------------------------------------------------------- running the commands

struct Run {
    wall: Duration,
    maxrss_kb: u64,
    stdout: Vec<u8>,
}

struct FindRun {
    wall: Duration,
    maxrss_kb: u64,
    /// Lines printed (`| wc -l`).
    count: u64,
    /// Of those, lines in the scratch tree.
    ours: u64,
}

fn run_status(cgleak: &Path) -> Result<Run, String> {
    let mut stdout = Vec::new();
    let (wall, maxrss_kb) = run_child(cgleak, &["status", "--output", "json"], &mut |b| stdout.extend_from_slice(b))?;
    Ok(Run { wall, maxrss_kb, stdout })
}

/// `find <root> -type d | wc -l`, with the lines counted here as wc -l would, and
/// those in the scratch tree apart.
fn run_find(root: &Path, scratch: &Path) -> Result<FindRun, String> {
    let root = root.to_str().ok_or("the memory root is not UTF-8")?;
    let prefix = scratch.as_os_str().as_encoded_bytes();
    let (mut count, mut ours) = (0u64, 0u64);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let (wall, maxrss_kb) = run_child(Path::new("find"), &[root, "-type", "d"], &mut |b| {
        for &c in b {
            if c != b'\n' {
                line.push(c);
                continue;
            }
            count += 1;
            let rest = line.strip_prefix(prefix);
            if matches!(rest, Some(r) if r.is_empty() || r[0] == b'/') {
                ours += 1;
            }
            line.clear();
        }
    })?;
    Ok(FindRun { wall, maxrss_kb, count, ours })
}

/// Directories of the memory hierarchy outside the scratch tree, the root included.
fn count_dirs_outside(dir: &Path, scratch: &Path) -> u64 {
    if dir == scratch {
        return 0;
    }
    let mut n = 1;
    if let Ok(rd) = fs::read_dir(dir) {
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += count_dirs_outside(&ent.path(), scratch);
            }
        }
    }
    n
}

/// Whether `n` is one of the two counts taken before and after a run.
fn within(n: u64, (before, after): (u64, u64)) -> bool {
    n == before || n == after
}

// ---------------------------------------------------------------- checking cgleak's answer

struct CensusFigures {
    live: u64,
    pods: u64,
    containers: u64,
    by_qos: BTreeMap<String, (u64, u64)>,
    roots: Vec<String>,
}

fn parse_census(stdout: &[u8]) -> Result<CensusFigures, String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| format!("status --output json is not JSON: {e}"))?;
    let live = v["memcg"]["live"].as_u64().ok_or("no memcg.live in the JSON")?;
    let k = &v["kubepods"];
    if k.is_null() {
        return Ok(CensusFigures { live, pods: 0, containers: 0, by_qos: BTreeMap::new(), roots: Vec::new() });
    }
    let num = |x: &serde_json::Value, what: &str| x.as_u64().ok_or_else(|| format!("no {what} in the JSON"));
    let mut by_qos = BTreeMap::new();
    if let Some(m) = k["by_qos"].as_object() {
        for (q, c) in m {
            by_qos.insert(q.clone(), (num(&c["pods"], "by_qos pods")?, num(&c["containers"], "by_qos containers")?));
        }
    }
    let roots = k["roots"].as_array().map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect()).unwrap_or_default();
    Ok(CensusFigures { live, pods: num(&k["pods"], "kubepods.pods")?, containers: num(&k["containers"], "kubepods.containers")?, by_qos, roots })
}

struct Expected {
    /// Directories built (memcgs), the scratch parent included.
    built: u64,
    pods: u64,
    containers: u64,
    by_qos: BTreeMap<String, (u64, u64)>,
    /// Local path of the built kubepods directory.
    kubepods_root: PathBuf,
}

impl Expected {
    /// `outside`: the host's own directories counted before and after the run.
    fn check(&self, c: &CensusFigures, outside: (u64, u64), mount_point: &Path, local_root: &Path) -> Result<(), String> {
        let mut bad = Vec::new();
        if c.live < self.built || !within(c.live - self.built, outside) {
            bad.push(format!("memcg.live {} != {} built + {outside:?} of the host's own", c.live, self.built));
        }
        if c.pods != self.pods {
            bad.push(format!("kubepods.pods {} != {}", c.pods, self.pods));
        }
        if c.containers != self.containers {
            bad.push(format!("kubepods.containers {} != {}", c.containers, self.containers));
        }
        for (q, want) in &self.by_qos {
            let got = c.by_qos.get(q).copied().unwrap_or_default();
            if got != *want {
                bad.push(format!("kubepods.by_qos.{q} (pods, containers) {got:?} != {want:?}"));
            }
        }
        let rel = self.kubepods_root.strip_prefix(local_root).unwrap_or(&self.kubepods_root);
        let root = mount_point.join(rel).display().to_string();
        if !c.roots.contains(&root) {
            bad.push(format!("kubepods.roots {:?} lacks {root}", c.roots));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
}

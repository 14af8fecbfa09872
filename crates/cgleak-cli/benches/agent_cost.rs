//! Benchmark of `cgleak agent`: CPU per sample and peak RSS on a host with 30,000 memcgs.
//!
//! Builds `cgleak-bench-<pid>/kubepods/...` (CGLEAK_BENCH_MEMCGS directories in kubelet
//! layout, as status_vs_find does) under the v1 memory hierarchy, then runs
//! `cgleak agent --interval 2s --no-logs --listen 127.0.0.1:<port> --state-dir <tmp>`
//! through the wait4 launcher for CGLEAK_BENCH_SAMPLES samples, scraping /metrics once per
//! sample (as Prometheus would) and checking that every census counted what was built.
//! CPU is utime + stime (and its children's: the BPF walk) of /proc/<pid>/stat from the first answered scrape to the last,
//! so start-up is left out; CPU per sample = that / samples (wall time / interval), and the
//! share at the shipped 30 s interval = CPU per sample / 30 s. Peak RSS is the larger of
//! VmHWM (read at every scrape) and ru_maxrss from wait4. Missed targets are reported
//! (ok=false), not failed; a wrong census or a failed scrape fails the bench.
//!
//! Targets: at most 0.5% of one core at 30 s, at most 20 MiB RSS. For scale,
//! node-problem-detector's shipped DaemonSet requests 10m CPU (1% of a core) and is
//! limited to 80 MiB.
//!
//! Safety: as status_vs_find (common::memcg_tree): cgroups only under the scratch parent,
//! never more than 30,000, removed on return, on panic and on SIGINT/SIGTERM; the agent
//! listens on loopback only and is stopped on every path.
//!
//! Run as root: `cargo bench -p cgleak --bench agent_cost` (without --bench, as under
//! `cargo test --all-targets`, it does nothing).
//! Environment: CGLEAK_BENCH_MEMCGS (default and maximum 30000), CGLEAK_BENCH_SAMPLES (default 15).

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

mod common;

use common::memcg_tree::{check_room, install_cleanup_panic_hook, v1_memory_root, KubeletTree, MAX_BENCH_MEMCGS};
use common::{bench_main, cancel_on_signals, check_cancel, env_u64, free_loopback_addr, http_get, median, metric, proc_cpu_secs, proc_status_kb, LaunchedDaemon};

const INTERVAL_SECS: u64 = 2;
/// The interval the DaemonSet ships with: the CPU share is reported for it.
const SHIPPED_INTERVAL_SECS: f64 = 30.0;
const DEFAULT_SAMPLES: u64 = 15;
const MAX_SAMPLES: u64 = 1000;
const TARGET_CPU_PERCENT: f64 = 0.5;
const TARGET_RSS_KB: u64 = 20 * 1024;
/// node-problem-detector's shipped DaemonSet: requests cpu 10m, limits memory 80Mi.
const NPD_REQUEST_CPU_PERCENT: f64 = 1.0;
const NPD_LIMIT_RSS_KB: u64 = 80 * 1024;

fn main() -> ExitCode {
    bench_main("agent_cost", run)
}

fn run() -> Result<bool, String> {
    let memcgs = env_u64("CGLEAK_BENCH_MEMCGS", MAX_BENCH_MEMCGS)?;
    let samples = env_u64("CGLEAK_BENCH_SAMPLES", DEFAULT_SAMPLES)?;
    if samples == 0 || samples > MAX_SAMPLES {
        return Err(format!("CGLEAK_BENCH_SAMPLES={samples}: must be 1..={MAX_SAMPLES}"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root: it creates memory cgroups".into());
    }
    check_room(memcgs).map_err(|e| format!("CGLEAK_BENCH_MEMCGS: {e}"))?;
    let cgleak = PathBuf::from(env!("CARGO_BIN_EXE_cgleak"));
    let memory_root = v1_memory_root()?;

    let cancel = cancel_on_signals()?;
    install_cleanup_panic_hook("bench");

    let scratch = memory_root.join(format!("cgleak-bench-{}", std::process::id()));
    println!("agent_cost: building {memcgs} memcgs under {}", scratch.display());
    let t = Instant::now();
    let tree = KubeletTree::build(&scratch, memcgs, &cancel, &|n| println!("agent_cost:   {n} memcgs"))?;
    println!("agent_cost: built {} memcgs ({} pods, {} containers) in {:.1} s", tree.created.len(), tree.pods, tree.containers, t.elapsed().as_secs_f64());
    let built = tree.created.len() as u64;

    let state = tempfile::Builder::new().prefix("cgleak-bench-agent-state-").tempdir().map_err(|e| format!("state dir: {e}"))?;
    let stderr_path = state.path().join("agent.stderr");
    let stderr = fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let addr = free_loopback_addr()?;
    let listen = addr.to_string();
    let interval = format!("{INTERVAL_SECS}s");
    let state_arg = state.path().to_str().ok_or("the state dir is not UTF-8")?.to_string();
    let mut agent = LaunchedDaemon::spawn(
        &cgleak,
        &["agent", "--interval", &interval, "--no-logs", "--listen", &listen, "--state-dir", &state_arg],
        stderr,
    )?;
    let pid = agent.program_pid(Duration::from_secs(10))?;
    println!("agent_cost: {} (pid {pid})", agent.what);
    let stderr_tail = || {
        let t = fs::read_to_string(&stderr_path).unwrap_or_default();
        let l: Vec<&str> = t.lines().collect();
        l[l.len().saturating_sub(20)..].join("\n")
    };

    // The first census: the agent answers /metrics with the built tree in it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        check_cancel(&cancel)?;
        if !agent.running() {
            return Err(format!("the agent exited before its first census; stderr:\n{}", stderr_tail()));
        }
        if let Ok((200, body)) = http_get(addr, "/metrics") {
            if metric(&body, "cgleak_memcg_live").is_some_and(|l| l as u64 >= built) {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no census with the {built} memcgs on /metrics within 60 s; stderr:\n{}", stderr_tail()));
        }
        sleep(Duration::from_millis(100));
    }

    let t0 = Instant::now();
    let cpu0 = proc_cpu_secs(pid).ok_or("cannot read the agent's /proc/<pid>/stat")?;
    let mut hwm = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let mut errors = Vec::new();
    let mut census_secs = Vec::new();
    for k in 1..=samples {
        check_cancel(&cancel)?;
        // Half an interval after each sample is due, so each scrape sees a fresh census.
        let due = Duration::from_secs(k * INTERVAL_SECS) - Duration::from_millis(INTERVAL_SECS * 500);
        if let Some(w) = due.checked_sub(t0.elapsed()) {
            sleep(w);
        }
        match http_get(addr, "/metrics") {
            Ok((200, body)) => {
                let live = metric(&body, "cgleak_memcg_live").unwrap_or(0.0) as u64;
                if live < built {
                    errors.push(format!("scrape {k}: cgleak_memcg_live {live} < {built} built"));
                }
                if let Some(d) = metric(&body, "cgleak_sample_duration_seconds") {
                    census_secs.push(d);
                }
            }
            Ok((code, _)) => errors.push(format!("scrape {k}: HTTP {code}")),
            Err(e) => errors.push(format!("scrape {k}: {e}")),
        }
        hwm = hwm.max(proc_status_kb(pid, "VmHWM").unwrap_or(0));
    }
    // Up to the end of the last interval.
    if let Some(w) = Duration::from_secs(samples * INTERVAL_SECS).checked_sub(t0.elapsed()) {
        sleep(w);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_secs(pid).ok_or("cannot read the agent's /proc/<pid>/stat")? - cpu0;
    hwm = hwm.max(proc_status_kb(pid, "VmHWM").unwrap_or(0));
    let still_running = agent.running();
    let (_, maxrss, status) = agent.stop(pid, Duration::from_secs(10))?;
    if !still_running {
        errors.push(format!("the agent exited during the run (wait status {status:#x}); stderr:\n{}", stderr_tail()));
    }

    let t = Instant::now();
    drop(tree);
    println!("agent_cost: removed {built} memcgs in {:.1} s", t.elapsed().as_secs_f64());

    let sampled = wall / INTERVAL_SECS as f64;
    let cpu_per_sample = cpu / sampled;
    let share_2s = 100.0 * cpu / wall;
    let share_30s = 100.0 * cpu_per_sample / SHIPPED_INTERVAL_SECS;
    let peak = hwm.max(maxrss);
    let census_ms = median(&census_secs) * 1000.0;
    let cpu_ok = share_30s <= TARGET_CPU_PERCENT;
    let rss_ok = peak <= TARGET_RSS_KB;
    let correct = errors.is_empty();

    println!();
    println!("agent_cost: {memcgs} memcgs built, agent --interval {INTERVAL_SECS}s for {wall:.1} s ({sampled:.1} samples, {samples} scrapes)");
    println!("  census (cgleak_sample_duration_seconds)  median {census_ms:.1} ms");
    println!("  CPU                                      {cpu:.2} s = {:.1} ms per sample ({share_2s:.2}% of a core at {INTERVAL_SECS} s)", cpu_per_sample * 1000.0);
    println!(
        "  CPU at a {SHIPPED_INTERVAL_SECS:.0} s interval                  {share_30s:.3}% of one core   (target <= {TARGET_CPU_PERCENT}%: {}; NPD requests {NPD_REQUEST_CPU_PERCENT}%: {:.1}x less)",
        if cpu_ok { "met" } else { "MISSED" },
        NPD_REQUEST_CPU_PERCENT / share_30s.max(1e-9)
    );
    println!(
        "  peak RSS                                 {peak} KB (VmHWM {hwm} KB, ru_maxrss {maxrss} KB)   (target <= {TARGET_RSS_KB} KB: {}; NPD's limit {NPD_LIMIT_RSS_KB} KB: {:.0}%)",
        if rss_ok { "met" } else { "MISSED" },
        100.0 * peak as f64 / NPD_LIMIT_RSS_KB as f64
    );
    println!("  correctness                              {}", if correct { "every scrape answered with the built tree counted".to_string() } else { format!("{} FAILED checks", errors.len()) });
    for e in &errors {
        println!("    {e}");
    }
    println!(
        "agent_cost: memcgs={memcgs} interval_s={INTERVAL_SECS} samples={sampled:.1} census_median_ms={census_ms:.1} cpu_per_sample_ms={:.2} cpu_percent_at_30s={share_30s:.4} peak_rss_kb={peak} target_cpu_percent={TARGET_CPU_PERCENT} target_rss_kb={TARGET_RSS_KB} npd_request_cpu_percent={NPD_REQUEST_CPU_PERCENT} npd_limit_rss_kb={NPD_LIMIT_RSS_KB} cpu_ok={cpu_ok} rss_ok={rss_ok} correct={correct}",
        cpu_per_sample * 1000.0
    );
    Ok(correct)
}

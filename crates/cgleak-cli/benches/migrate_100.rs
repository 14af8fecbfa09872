//! Benchmark of `cgleak fix migrate`: 100 running runc containers (50 pods of 2, in the
//! kubelet's cgroupfs layout, each container with a memory limit) migrated
//! CGLEAK_BENCH_RUNS times (default 5). Per run: the fixer's wall time from start to exit
//! (`total`), and the longest time any task spent outside its original cgroup
//! (`max_away`, from the fixer's report: from the move out of a cgroup to the move back
//! into its recreated self). Each run is checked: every cgroup fresh at its path, every
//! container's task back in it.
//!
//! Target (issue 6): at most 2 s in total for 100 containers. Baseline, measured in the
//! same run: the kernel's floor for the same moves, every container task written into a
//! sibling cgroup's `tasks` and back by this process, without any of the fixer's
//! planning, journaling, settings or checks; the ratio says what the fixer's safety
//! costs on top of the moves themselves.
//!
//! Safety: cgroups only under `cgleak-test-<pid>-migrate-bench` (153 memcgs), processes
//! only the bench's containers, everything deleted on return and on panic.
//!
//! Run as root: `cargo bench -p cgleak --bench migrate_100`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

mod common;
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod tests_common;

use common::{bench_main, env_u64, median};
use tests_common::runc::PodFleet;

const PODS: usize = 50;
const PER_POD: usize = 2;
const TARGET_TOTAL_MS: f64 = 2000.0;

fn main() -> ExitCode {
    bench_main("migrate_100", run)
}

fn tasks_of(dir: &std::path::Path) -> Vec<u32> {
    fs::read_to_string(dir.join("tasks")).unwrap_or_default().split_whitespace().filter_map(|t| t.parse().ok()).collect()
}

fn run() -> Result<bool, String> {
    let runs = env_u64("CGLEAK_BENCH_RUNS", 5)?;
    if !(1..=50).contains(&runs) {
        return Err(format!("CGLEAK_BENCH_RUNS={runs}: must be 1..=50"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root: it runs containers and moves their cgroups".into());
    }
    let cgleak = PathBuf::from(env!("CARGO_BIN_EXE_cgleak"));
    let t = Instant::now();
    let fleet = PodFleet::start("migrate-bench", PODS, PER_POD, &["/bin/sleep", "100000"]);
    println!("migrate_100: started {} runc containers in {} pods in {:.1} s", fleet.containers.len(), PODS, t.elapsed().as_secs_f64());
    let rel = format!("{}/kubepods", fleet.scratch.name);
    let mem = fleet.scratch.path().to_path_buf();
    let cgroups: Vec<PathBuf> = fleet.containers.iter().map(|c| mem.parent().unwrap().join(c.cgroups_path.trim_start_matches('/'))).collect();
    let state = tempfile::Builder::new().prefix("cgleak-bench-migrate-state-").tempdir().map_err(|e| e.to_string())?;

    let (mut totals, mut aways, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=runs {
        let inodes: Vec<u64> = cgroups.iter().map(|c| std::os::unix::fs::MetadataExt::ino(&fs::metadata(c).unwrap())).collect();
        let t = Instant::now();
        let out = Command::new(&cgleak)
            .args(["fix", "migrate", "--cgroup", &rel, "--apply", "--yes", "--output", "json", "--state-dir"])
            .arg(state.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run cgleak: {e}"))?;
        let total_ms = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            return Err(format!("run {r}: cgleak fix migrate exited {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("run {r}: output is not JSON: {e}"))?;
        let away = v["result"]["details"]["max_away_ms"].as_f64().ok_or_else(|| format!("run {r}: no max_away_ms: {v}"))?;
        for ((c, ino), fc) in cgroups.iter().zip(&inodes).zip(&fleet.containers) {
            let now = fs::metadata(c).map_err(|e| format!("run {r}: {}: {e}", c.display()))?;
            if std::os::unix::fs::MetadataExt::ino(&now) == *ino {
                return Err(format!("run {r}: {} was not recreated", c.display()));
            }
            if !tasks_of(c).contains(&fc.pid) {
                return Err(format!("run {r}: container {} (pid {}) is not back in {}", fc.id, fc.pid, c.display()));
            }
        }
        // The floor: the same tasks out to a sibling and back, nothing else.
        let side = mem.join(format!("floor-{r}"));
        fs::create_dir(&side).map_err(|e| format!("mkdir {}: {e}", side.display()))?;
        let t = Instant::now();
        for (c, fc) in cgroups.iter().zip(&fleet.containers) {
            fs::write(side.join("tasks"), fc.pid.to_string()).map_err(|e| format!("move {} out: {e}", fc.pid))?;
            fs::write(c.join("tasks"), fc.pid.to_string()).map_err(|e| format!("move {} back: {e}", fc.pid))?;
        }
        let floor_ms = t.elapsed().as_secs_f64() * 1000.0;
        fs::remove_dir(&side).map_err(|e| format!("rmdir {}: {e}", side.display()))?;
        println!("migrate_100: run {r}: total {total_ms:.0} ms, max away {away:.1} ms; floor (moves only) {floor_ms:.1} ms");
        totals.push(total_ms);
        aways.push(away);
        floors.push(floor_ms);
    }
    let worst_total = totals.iter().copied().fold(0.0, f64::max);
    let worst_away = aways.iter().copied().fold(0.0, f64::max);
    let ratio = median(&totals) / median(&floors).max(0.001);
    let ok = worst_total <= TARGET_TOTAL_MS;
    println!(
        "migrate_100: containers=100 runs={runs} total_ms_median={:.0} total_ms_worst={worst_total:.0} max_away_ms_worst={worst_away:.1} \
         floor_ms_median={:.1} ratio_vs_floor={ratio:.1} target_total_ms={TARGET_TOTAL_MS:.0} ok={ok}",
        median(&totals),
        median(&floors)
    );
    drop(fleet);
    Ok(ok)
}

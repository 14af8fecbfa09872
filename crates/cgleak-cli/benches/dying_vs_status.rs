//! Benchmark of issue 13: `cgleak dying --output json` against `cgleak status --output json`
//! on a host with CGLEAK_BENCH_DYING (default 5,000) dying memcgs.
//!
//! Builds `cgleak-bench-<pid>/kubepods/besteffort/pod<uid>` under the v1 memory hierarchy;
//! in each pod cgroup a process writes a 4 KiB file (its page cache is charged there) and
//! exits, and the cgroup is removed: a dying memcg pinned by 4 KiB. Then both commands are
//! timed alternately (medians) with their peak RSS, and `status --dying` (the same BPF walk) beside them (the launcher's wait4, see
//! common::launch), and each dying run is checked: method bpf, at least that many named, and
//! every pod built present in `pods[]`. Targets: dying in at most twice status's time, peak
//! RSS at most 32 MB; missed targets are reported (ratio_ok, rss_ok), not failed.
//!
//! Cleanup, also on error, panic (a hook: the release profile aborts) and SIGINT/SIGTERM:
//! the files are removed first (which frees the dying memcgs), then the scratch tree.
//!
//! Run as root: `cargo bench -p cgleak --bench dying_vs_status`.
//! Environment: CGLEAK_BENCH_DYING (default 5000, at most 30000), CGLEAK_BENCH_ROUNDS (default 5).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::memcg_tree::{check_room, remove_tree, v1_memory_mount, MAX_BENCH_MEMCGS};
use common::{bench_main, cancel_on_signals, check_cancel, env_u64, median, ms, run_child};

const TARGET_RATIO: f64 = 2.0;
const TARGET_RSS_KB: u64 = 32 * 1024;
const FILE_BYTES: usize = 4096;

/// (files directory, scratch tree) to remove if the bench panics.
static CLEANUP: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

fn main() -> ExitCode {
    bench_main("dying_vs_status", run)
}

/// Files first (their pages pin the dying memcgs), then the scratch tree.
fn cleanup(files: &Path, scratch: &Path) {
    let _ = fs::remove_dir_all(files);
    if scratch.exists() {
        remove_tree(scratch);
    }
}

struct Guard {
    files: PathBuf,
    scratch: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup(&self.files, &self.scratch);
        *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn assert_not_tmpfs(dir: &Path) -> Result<(), String> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is NUL-terminated and st is large enough for statfs.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(format!("statfs {}: {}", dir.display(), io::Error::last_os_error()));
    }
    // SAFETY: statfs succeeded.
    #[allow(clippy::unnecessary_cast)]
    let t = unsafe { st.assume_init() }.f_type as i64;
    if t == 0x0102_1994 || t == 0x8584_58f6 {
        return Err(format!("{} is on tmpfs/ramfs: its pages are shmem, not page cache", dir.display()));
    }
    Ok(())
}

/// `head -c 4096 /dev/zero > file`, run in cgroup `cg` (it joins before exec).
fn write_in(cg: &Path, file: &Path) -> Result<(), String> {
    let out = fs::File::create(file).map_err(|e| format!("create {}: {e}", file.display()))?;
    let mut cmd = Command::new("head");
    cmd.args(["-c", &FILE_BYTES.to_string(), "/dev/zero"]).stdin(Stdio::null()).stdout(out);
    cgleak_fixtures::spawn::join_cgroup_before_exec(&mut cmd, cg);
    let st = cmd.status().map_err(|e| format!("head in {}: {e}", cg.display()))?;
    if !st.success() {
        return Err(format!("head in {}: {st}", cg.display()));
    }
    Ok(())
}

fn pod_uid(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), i)
}

struct DyingCheck {
    named: u64,
    method: String,
    ours: usize,
}

fn check_dying(out: &[u8], expected: &HashSet<String>) -> Result<DyingCheck, String> {
    let v: serde_json::Value = serde_json::from_slice(out).map_err(|e| format!("dying: not JSON: {e}"))?;
    let ours = v["pods"].as_array().ok_or("dying: no pods[]")?.iter().filter(|p| p["pod_uid"].as_str().is_some_and(|u| expected.contains(u))).count();
    Ok(DyingCheck { named: v["named"].as_u64().ok_or("dying: no named")?, method: v["method"].as_str().unwrap_or("").to_string(), ours })
}

fn run() -> Result<bool, String> {
    let n = env_u64("CGLEAK_BENCH_DYING", 5000)?;
    if n == 0 || n + 3 > MAX_BENCH_MEMCGS {
        return Err(format!("CGLEAK_BENCH_DYING={n}: must be 1..={}", MAX_BENCH_MEMCGS - 3));
    }
    let rounds = env_u64("CGLEAK_BENCH_ROUNDS", 5)? as usize;
    if rounds == 0 || rounds > 100 {
        return Err(format!("CGLEAK_BENCH_ROUNDS={rounds}: must be 1..=100"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root: it creates memory cgroups and loads BPF".into());
    }
    let cgleak = PathBuf::from(env!("CARGO_BIN_EXE_cgleak"));
    let (_, memory_root) = v1_memory_mount()?;
    check_room(n + 3)?;
    let cancel = cancel_on_signals()?;

    let files = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cgleak-bench-dying-{}", std::process::id()));
    let scratch = memory_root.join(format!("cgleak-bench-{}", std::process::id()));
    fs::create_dir_all(&files).map_err(|e| format!("mkdir {}: {e}", files.display()))?;
    assert_not_tmpfs(&files)?;
    fs::create_dir(&scratch).map_err(|e| format!("mkdir {}: {e}", scratch.display()))?;
    let _guard = Guard { files: files.clone(), scratch: scratch.clone() };
    *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()) = Some((files.clone(), scratch.clone()));
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if let Some((f, s)) = CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).take() {
            eprintln!("dying_vs_status: panic: removing {} and {}", f.display(), s.display());
            cleanup(&f, &s);
        }
    }));

    let qos = scratch.join("kubepods/besteffort");
    fs::create_dir_all(&qos).map_err(|e| format!("mkdir {}: {e}", qos.display()))?;
    println!("dying_vs_status: making {n} dying memcgs under {}, each pinned by a {FILE_BYTES}-byte file in {}", qos.display(), files.display());
    let t = Instant::now();
    let mut expected = HashSet::new();
    for i in 0..n {
        check_cancel(&cancel)?;
        let uid = pod_uid(i);
        let cg = qos.join(format!("pod{uid}"));
        fs::create_dir(&cg).map_err(|e| format!("mkdir {}: {e}", cg.display()))?;
        write_in(&cg, &files.join(format!("f{i}")))?;
        fs::remove_dir(&cg).map_err(|e| format!("rmdir {}: {e}", cg.display()))?;
        expected.insert(uid);
        if (i + 1) % 1000 == 0 {
            println!("dying_vs_status:   {} dying", i + 1);
        }
    }
    println!("dying_vs_status: made in {:.1} s", t.elapsed().as_secs_f64());

    let (mut d_ms, mut s_ms, mut d_rss, mut s_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sd_ms, mut sd_rss) = (Vec::new(), Vec::new());
    let mut errors = Vec::new();
    for round in 0..=rounds {
        check_cancel(&cancel)?;
        let mut out = Vec::new();
        let (dw, drss) = run_child(&cgleak, &["dying", "--output", "json"], &mut |b| out.extend_from_slice(b))?;
        match check_dying(&out, &expected) {
            Ok(c) if c.method == "bpf" && c.named >= n && c.ours == expected.len() => {}
            Ok(c) => errors.push(format!("round {round}: dying: method {}, named {}, {} of our {} pods", c.method, c.named, c.ours, expected.len())),
            Err(e) => errors.push(format!("round {round}: {e}")),
        }
        let mut sout = Vec::new();
        let (sw, srss) = run_child(&cgleak, &["status", "--output", "json"], &mut |b| sout.extend_from_slice(b))?;
        let counted = serde_json::from_slice::<serde_json::Value>(&sout).ok().and_then(|v| v["memcg"]["dying"].as_u64());
        if !matches!(counted, Some(d) if d >= n) {
            errors.push(format!("round {round}: status: memcg.dying below the {n} made"));
        }
        // For the breakdown: status with the same BPF walk (`--dying`).
        let mut dout = Vec::new();
        let (sdw, sdrss) = run_child(&cgleak, &["status", "--dying", "--output", "json"], &mut |b| dout.extend_from_slice(b))?;
        let named = serde_json::from_slice::<serde_json::Value>(&dout).ok().and_then(|v| v["dying_named"].as_u64());
        if !matches!(named, Some(x) if x >= n) {
            errors.push(format!("round {round}: status --dying: dying_named {named:?}, {n} made"));
        }
        let label = if round == 0 { "warm-up".to_string() } else { format!("round {round}") };
        println!(
            "dying_vs_status: {label:<8} dying {:>8.2} ms {:>6} KB   status {:>8.2} ms {:>6} KB   status --dying {:>8.2} ms {:>6} KB",
            ms(dw),
            drss,
            ms(sw),
            srss,
            ms(sdw),
            sdrss
        );
        if round > 0 {
            d_ms.push(ms(dw));
            s_ms.push(ms(sw));
            d_rss.push(drss);
            s_rss.push(srss);
            sd_ms.push(ms(sdw));
            sd_rss.push(sdrss);
        }
    }

    let (dm, sm) = (median(&d_ms), median(&s_ms));
    let ratio = dm / sm;
    let peak = d_rss.iter().copied().max().unwrap_or(0);
    println!(
        "dying_vs_status: dying={n} rounds={rounds} dying_ms={dm:.2} status_ms={sm:.2} ratio={ratio:.2} dying_peak_rss_kb={peak} status_peak_rss_kb={} \
         status_dying_ms={:.2} status_dying_peak_rss_kb={} ratio_ok={} rss_ok={}",
        s_rss.iter().copied().max().unwrap_or(0),
        median(&sd_ms),
        sd_rss.iter().copied().max().unwrap_or(0),
        ratio <= TARGET_RATIO,
        peak <= TARGET_RSS_KB
    );

    let t = Instant::now();
    drop(_guard);
    // The files are gone: their memcgs are freed (asynchronously); the scratch tree too.
    let left = scratch.exists() || files.exists();
    println!("dying_vs_status: cleaned up in {:.1} s{}", t.elapsed().as_secs_f64(), if left { " (something is left!)" } else { "" });
    std::thread::sleep(Duration::from_millis(10));
    for e in &errors {
        eprintln!("dying_vs_status: {e}");
    }
    Ok(errors.is_empty() && !left)
}

//! Soak of `cgleak agent`: two agents run side by side for CGLEAK_SOAK_SECS (default 600,
//! the CI's ten minutes).
//!
//! a) Real host: `agent --interval 5s --no-logs` on this kernel while memcgs are churned
//!    under a scratch parent (four created and four removed a second, every other one
//!    given page cache by a child process first, so removed ones linger as dying
//!    memcgs). /metrics is scraped every 5 s and must answer every time; the agent's peak
//!    RSS (VmHWM) must stay under 20 MiB; its CPU share is printed. Both agents run the
//!    node binary of `cargo xtask dist`, the one a node runs.
//! b) Simulated exhaustion: a fixture host (debian-6.12-v2-dying-subsys, where the root
//!    cgroup.stat `nr_subsys_memory` is the live memcg count) whose count the test raises
//!    every second on a noisy line that reaches 65535 at the end of the soak, and an agent
//!    at `--interval 2s` on it. Its exhaustion forecast must warn (under an hour, or no
//!    later than the time really left plus a tolerance) strictly before the count reaches
//!    the limit, and its headroom must read 0 at the end.
//!
//! The forecast fits only after 10 minutes of samples (ForecastConfig::min_span_secs),
//! so a soak shorter than 22 minutes starts agent b) on a state dir holding the earlier
//! part of the same line, as an agent restarted on its node would find it: the forecast
//! can then warn half way through the soak at the latest.
//!
//! Longer soak: `CGLEAK_SOAK_SECS=7200 cargo test -p cgleak --test agent_soak -- --nocapture`.
//!
//! Safety: cgroups only under `cgleak-test-<pid>-soak` in the memory hierarchy, at most
//! 12 live at a time, none created while /proc/cgroups counts 4,000 memory cgroups or
//! more (the host's cap is 5,000); the page-cache files are deleted as the churn goes
//! (which frees their dying memcgs) and everything is removed on exit or panic. The
//! agents listen on 127.0.0.1 only and are killed if the test fails.

mod common;

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kernel::*;
use common::procfs::{proc_cpu_secs, proc_status_kb};
use common::prom::sample;

const DEFAULT_SOAK_SECS: u64 = 600;
const HOST_INTERVAL_SECS: u64 = 5;
const FIXTURE_INTERVAL_SECS: u64 = 2;
const ID_LIMIT: u64 = 65_535;
/// Peak RSS allowed to the agent (its target, README: Performance).
const RSS_LIMIT_KB: u64 = 20 * 1024;
/// No memcg is created while /proc/cgroups counts this many (the host's cap is 5,000).
const HOST_MEMCG_GUARD: u64 = 4_000;
/// Live memcgs the churn keeps under its scratch parent.
const CHURN_LIVE_MAX: usize = 12;
/// Page-cache files kept; older ones are deleted, which releases their dying memcgs.
const CHURN_FILES_KEPT: usize = 300;
const CHURN_WRITE_BYTES: u64 = 256 * 1024;
/// ForecastConfig::default().min_span_secs: the forecast needs this much history.
const FORECAST_MIN_SPAN_SECS: f64 = 600.0;
/// A forecast warns when it is under an hour, or no later than the time left times this plus
/// FORECAST_SLACK_SECS (a longer soak has more than an hour left when the fit starts).
const FORECAST_WARN_SECS: f64 = 3600.0;
const FORECAST_TOLERANCE: f64 = 1.25;
const FORECAST_SLACK_SECS: f64 = 60.0;

fn soak_secs() -> u64 {
    match std::env::var("CGLEAK_SOAK_SECS") {
        Ok(v) => {
            let n: u64 = v.trim().parse().unwrap_or_else(|_| panic!("CGLEAK_SOAK_SECS={v:?}: not a whole number of seconds"));
            assert!(n >= 60, "CGLEAK_SOAK_SECS={n}: at least 60 s are needed");
            n
        }
        Err(_) => DEFAULT_SOAK_SECS,
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

fn tmp_dir(prefix: &str) -> tempfile::TempDir {
    // Under the cargo target dir: a disk file system, where page cache pins memcgs.
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("temp dir in {}: {e}", env!("CARGO_TARGET_TMPDIR")))
}

// ---------------------------------------------------------------- the agent

/// A running `cgleak agent`, killed when dropped.
struct Agent {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Agent {
    fn start(name: &'static str, extra: &[&str], state_dir: &Path, log_dir: &Path) -> Agent {
        let addr = free_loopback_port();
        let stderr = log_dir.join(format!("agent-{name}.stderr"));
        let err = fs::File::create(&stderr).unwrap_or_else(|e| panic!("create {}: {e}", stderr.display()));
        let listen = addr.to_string();
        // The node binary (cargo xtask dist), as a node runs it: the debug build's own code
        // and debug info already take about 17 MiB of resident pages (measured), which
        // would measure the build, not the agent.
        let mut cmd = Command::new(&common::dist::dist_binary().path);
        cmd.arg("agent")
            .args(extra)
            .args(["--listen", &listen, "--state-dir"])
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        println!("agent_soak: agent {name} (pid {}) on {addr}: {cmd:?}", child.id());
        Agent { name, child, addr, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().expect("try_wait on the agent") {
            panic!("agent {} exited ({st}); its stderr ends with:\n{}", self.name, self.stderr_tail());
        }
    }

    /// Wait until /healthz answers 200.
    fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if matches!(http_get(self.addr, "/healthz"), Ok((200, _))) {
                return;
            }
            assert!(Instant::now() < deadline, "agent {}: /healthz did not answer 200 within {timeout:?}; stderr:\n{}", self.name, self.stderr_tail());
            sleep(Duration::from_millis(200));
        }
    }

    /// GET /metrics: the body when it answered 200 with the census in it.
    fn metrics(&self) -> Result<String, String> {
        match http_get(self.addr, "/metrics") {
            Ok((200, body)) if body.contains("cgleak_memcg_live ") => Ok(body),
            Ok((200, body)) => Err(format!("200 without cgleak_memcg_live:\n{body}")),
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(e),
        }
    }

    /// utime + stime + cutime + cstime in seconds (/proc/<pid>/stat fields 14 to 17: its
    /// children's too, where the BPF walk of the dying memcgs runs).
    fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid()).unwrap_or_else(|| panic!("agent {}: cannot read /proc/{}/stat", self.name, self.pid()))
    }

    /// VmHWM (peak RSS) in KB.
    fn vm_hwm_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM").unwrap_or_else(|| panic!("agent {}: no VmHWM in /proc/{}/status", self.name, self.pid()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now (the agent binds it a moment later).
fn free_loopback_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    l.local_addr().expect("local address of a bound socket")
}

/// HTTP/1.0 GET on loopback: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).and_then(|_| s.set_write_timeout(Some(timeout))).map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("reading the answer to GET {path} on {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path}: no end of headers in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    Ok((code, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}


// ---------------------------------------------------------------- a) churn on the real host

#[derive(Debug, Default)]
struct ChurnStats {
    created: u64,
    removed: u64,
    with_page_cache: u64,
    /// mkdirs skipped because /proc/cgroups was at HOST_MEMCG_GUARD.
    held_back: u64,
    /// Highest /proc/cgroups memory num_cgroups seen (live and dying, the host's included).
    peak_num_cgroups: u64,
}

/// The churn thread, stopped and joined when dropped (before the scratch parent goes).
struct Churn {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ChurnStats>>,
}

impl Churn {
    fn start(scratch: PathBuf, files: PathBuf) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("memcg-churn".into())
            .spawn(move || churn(&scratch, &files, &s))
            .expect("starting the churn thread");
        Churn { stop, handle: Some(handle) }
    }

    fn finish(mut self) -> ChurnStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("joined once").join().expect("the churn thread panicked")
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Create and remove memcgs under `scratch` four times a second each; every other one first
/// runs a writer of CHURN_WRITE_BYTES to a file in `files`, so it dies pinned by page cache.
fn churn(scratch: &Path, files: &Path, stop: &AtomicBool) -> ChurnStats {
    let mut st = ChurnStats::default();
    let mut live: VecDeque<PathBuf> = VecDeque::new();
    let mut kept: VecDeque<PathBuf> = VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let num = proc_cgroups_memory();
        st.peak_num_cgroups = st.peak_num_cgroups.max(num);
        if live.len() < CHURN_LIVE_MAX && num < HOST_MEMCG_GUARD {
            n += 1;
            let cg = scratch.join(format!("c{n}"));
            fs::create_dir(&cg).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.display()));
            st.created += 1;
            if n.is_multiple_of(2) {
                let file = files.join(format!("f{n}"));
                let status = spawn_writer_in(&cg, &file, CHURN_WRITE_BYTES).wait().expect("waiting for a writer");
                assert!(status.success(), "writer in {} failed: {status}", cg.display());
                st.with_page_cache += 1;
                kept.push_back(file);
            }
            live.push_back(cg);
        } else if num >= HOST_MEMCG_GUARD {
            st.held_back += 1;
        }
        if live.len() >= CHURN_LIVE_MAX - 4 {
            let old = live.pop_front().expect("not empty");
            // An exited writer may still be leaving the cgroup: try again next round.
            match fs::remove_dir(&old) {
                Ok(()) => st.removed += 1,
                Err(_) => live.push_front(old),
            }
        }
        while kept.len() > CHURN_FILES_KEPT {
            // Deleting the file frees its pages, and with them its dying memcg.
            let _ = fs::remove_file(kept.pop_front().expect("not empty"));
        }
        sleep(Duration::from_millis(250));
    }
    for cg in live {
        if fs::remove_dir(&cg).is_ok() {
            st.removed += 1;
        }
    }
    st
}

// ---------------------------------------------------------------- b) the simulated ramp

/// IDs in use on a noisy line from `from` at `t0` (seconds from the soak's start, <= 0)
/// to the limit at `end`: below the limit until `end`, the limit from then on.
struct Ramp {
    from: f64,
    t0: f64,
    end: f64,
}

impl Ramp {
    fn at(&self, t: f64) -> u64 {
        if t >= self.end {
            return ID_LIMIT;
        }
        let base = self.from + (ID_LIMIT as f64 - self.from) * (t - self.t0) / (self.end - self.t0);
        let sec = (t - self.t0).floor() as u64;
        // Jitter of +-0.4%, and every 13th second a churn spike of +1.5%: Theil-Sen must see through both.
        let u = (mix(sec) >> 11) as f64 / (1u64 << 53) as f64;
        let mut v = base * (1.0 + 0.008 * (u - 0.5));
        if sec.is_multiple_of(13) {
            v += base * 0.015;
        }
        (v.round() as u64).clamp(self.from as u64, ID_LIMIT - 1)
    }
}

/// splitmix64: reproducible noise.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fixture's root cgroup.stat, rewritten atomically with a new `nr_subsys_memory`.
struct RootStat {
    path: PathBuf,
    original: String,
}

impl RootStat {
    fn new(path: PathBuf) -> RootStat {
        let original = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(original.lines().any(|l| l.starts_with("nr_subsys_memory ")), "{} has no nr_subsys_memory:\n{original}", path.display());
        RootStat { path, original }
    }

    fn write(&self, live: u64) {
        let text: String = self
            .original
            .lines()
            .map(|l| if l.starts_with("nr_subsys_memory ") { format!("nr_subsys_memory {live}\n") } else { format!("{l}\n") })
            .collect();
        // A file, not a directory: the census walk does not count it.
        let tmp = self.path.with_file_name(".cgroup.stat.soak-tmp");
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &self.path).unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), self.path.display()));
    }
}

/// The agent's history before its start, as an agent restarted on the node finds it in its
/// state dir: samples of `ramp` every FIXTURE_INTERVAL_SECS from `ramp.t0` to just before 0.
fn seed_history(state_dir: &Path, ramp: &Ramp, start_unix: f64) {
    let mut lines = String::new();
    let mut t = ramp.t0;
    while t < 0.0 {
        lines.push_str(&format!("{{\"at_unix_secs\":{:.3},\"ids_in_use\":{},\"id_limit\":{ID_LIMIT}}}\n", start_unix + t, ramp.at(t)));
        t += FIXTURE_INTERVAL_SECS as f64;
    }
    let path = state_dir.join(HISTORY_FILE);
    fs::write(&path, lines).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Where the agent keeps its history in --state-dir (cmd_agent.rs HISTORY_FILE: JSON lines of forecast::Sample).
const HISTORY_FILE: &str = "agent-history.jsonl";

#[derive(Debug, Clone, Copy)]
struct Warning {
    at: f64,
    forecast: f64,
    left: f64,
    ids: u64,
}

// ---------------------------------------------------------------- the soak

#[test]
fn real_kernel_agent_soak() {
    let _serial = serial();
    let mem = memory_mount();
    let soak = soak_secs();
    let end = soak as f64;
    println!("agent_soak: {soak} s (CGLEAK_SOAK_SECS), memory hierarchy v{} at {}", mem.version, mem.mount_point.display());

    // a) the real host.
    let scratch = ScratchCgroup::create_in_memory("soak");
    let files = tmp_dir("cgleak-soak-files-");
    assert_not_tmpfs(files.path());
    let state_host = tmp_dir("cgleak-soak-state-host-");
    let logs = tmp_dir("cgleak-soak-logs-");
    let base_live = cgroup_dirs(&mem.mount_point).len() as u64;

    // b) the fixture, its count on the ramp before the agent's first sample.
    let fixture = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let stat = RootStat::new(fixture.path(fixture.truth.memory_root).join("cgroup.stat"));
    let seed_span = (FORECAST_MIN_SPAN_SECS + 60.0 - end / 2.0).max(0.0);
    let ramp = Ramp { from: fixture.truth.live_memcgs as f64, t0: -seed_span, end };
    let state_fixture = tmp_dir("cgleak-soak-state-fixture-");
    let start_unix = unix_now();
    if seed_span > 0.0 {
        seed_history(state_fixture.path(), &ramp, start_unix);
        println!("agent_soak: fixture agent starts on {seed_span:.0} s of earlier history ({HISTORY_FILE})");
    }
    stat.write(ramp.at(0.0));

    let churn = Churn::start(scratch.path().to_path_buf(), files.path().to_path_buf());
    let mut host = Agent::start("host", &["--interval", &format!("{HOST_INTERVAL_SECS}s"), "--no-logs"], state_host.path(), logs.path());
    let root = fixture.root().to_str().expect("UTF-8 fixture path").to_string();
    let mut sim = Agent::start(
        "fixture",
        &["--host-root", &root, "--interval", &format!("{FIXTURE_INTERVAL_SECS}s"), "--no-logs"],
        state_fixture.path(),
        logs.path(),
    );
    host.wait_healthy(Duration::from_secs(60));
    sim.wait_healthy(Duration::from_secs(60));

    let t_start = Instant::now() - Duration::from_secs_f64((unix_now() - start_unix).max(0.0));
    let cpu_start = host.cpu_secs();
    let (mut scrapes, mut failures): (u64, Vec<String>) = (0, Vec::new());
    let (mut sim_scrapes, mut sim_failures): (u64, Vec<String>) = (0, Vec::new());
    let (mut peak_hwm, mut max_live, mut max_dying) = (0u64, 0u64, 0u64);
    let mut first_forecast: Option<Warning> = None;
    let mut first_warning: Option<Warning> = None;
    let mut written = 0;
    let mut tick = 0u64;
    loop {
        let t = t_start.elapsed().as_secs_f64();
        if t >= end {
            break;
        }
        written = ramp.at(t);
        stat.write(written);

        host.assert_running();
        sim.assert_running();
        sim_scrapes += 1;
        match sim.metrics() {
            Ok(body) => {
                // NaN (too little history) and +Inf (not heading to the limit) are no forecast of a time.
                if let Some(f) = sample(&body, "cgleak_memcg_exhaustion_forecast_seconds").filter(|f| f.is_finite()) {
                    let w = Warning { at: t, forecast: f, left: end - t, ids: sample(&body, "cgleak_memcg_ids_in_use").unwrap_or(f64::NAN) as u64 };
                    first_forecast.get_or_insert(w);
                    let warns = f < FORECAST_WARN_SECS || f <= w.left * FORECAST_TOLERANCE + FORECAST_SLACK_SECS;
                    if warns && first_warning.is_none() {
                        println!("agent_soak: t={t:.0} s forecast {f:.0} s to exhaustion, {:.0} s actually left, {} IDs in use", w.left, w.ids);
                        first_warning = Some(w);
                    }
                }
            }
            Err(e) => sim_failures.push(format!("t={t:.0} s: {e}")),
        }

        if tick.is_multiple_of(HOST_INTERVAL_SECS) {
            scrapes += 1;
            match host.metrics() {
                Ok(body) => {
                    max_live = max_live.max(sample(&body, "cgleak_memcg_live").unwrap_or(0.0) as u64);
                    max_dying = max_dying.max(sample(&body, "cgleak_memcg_dying").unwrap_or(0.0) as u64);
                }
                Err(e) => failures.push(format!("t={t:.0} s: {e}")),
            }
            peak_hwm = peak_hwm.max(host.vm_hwm_kb());
            if tick.is_multiple_of(60) {
                let cpu = host.cpu_secs() - cpu_start;
                println!(
                    "agent_soak: t={t:>5.0} s host agent cpu {:.3}% peak RSS {peak_hwm} KB, live<= {max_live} dying<= {max_dying}; fixture IDs {written}",
                    100.0 * cpu / t.max(1.0)
                );
            }
        }
        tick += 1;
        let next = Duration::from_secs(tick);
        if let Some(wait) = next.checked_sub(t_start.elapsed()) {
            sleep(wait);
        }
    }

    // The limit is reached: the fixture agent must see it at its next samples.
    stat.write(ID_LIMIT);
    let reached = t_start.elapsed().as_secs_f64();
    let headroom = poll(Duration::from_secs(6 * FIXTURE_INTERVAL_SECS + 5), Duration::from_millis(500), || {
        let body = sim.metrics().ok()?;
        (sample(&body, "cgleak_memcg_headroom") == Some(0.0)).then_some(body)
    });

    let sim_tail = sim.stderr_tail();
    let wall = t_start.elapsed().as_secs_f64();
    let cpu = host.cpu_secs() - cpu_start;
    peak_hwm = peak_hwm.max(host.vm_hwm_kb());
    host.assert_running();
    sim.assert_running();
    drop(host);
    drop(sim);
    let stats = churn.finish();
    scratch.remove();

    println!();
    println!("agent_soak: {soak} s soak");
    println!(
        "  host agent      --interval {HOST_INTERVAL_SECS}s: cpu {cpu:.2} s over {wall:.0} s = {:.3}% of one core, peak RSS (VmHWM) {peak_hwm} KB (limit {RSS_LIMIT_KB} KB)",
        100.0 * cpu / wall
    );
    println!("  /metrics        {} of {scrapes} scrapes answered (host), {} of {sim_scrapes} (fixture)", scrapes - failures.len() as u64, sim_scrapes - sim_failures.len() as u64);
    println!(
        "  churn           {} memcgs created, {} removed, {} with page cache, peak /proc/cgroups memory {} ({} mkdirs held back); agent saw live <= {max_live}, dying <= {max_dying}",
        stats.created, stats.removed, stats.with_page_cache, stats.peak_num_cgroups, stats.held_back
    );
    match first_forecast {
        Some(w) => println!("  forecast        first shown at t={:.0} s: {:.0} s ({:.0} s actually left)", w.at, w.forecast, w.left),
        None => println!("  forecast        never shown"),
    }
    match first_warning {
        Some(w) => println!(
            "  warning         at t={:.0} s: {:.0} s to exhaustion forecast, {:.0} s actually left ({} IDs in use); limit written at t={reached:.0} s",
            w.at, w.forecast, w.left, w.ids
        ),
        None => println!("  warning         NONE before the limit was written at t={reached:.0} s"),
    }
    println!(
        "agent_soak: soak_secs={soak} host_cpu_percent={:.4} host_peak_rss_kb={peak_hwm} scrapes={scrapes} scrape_failures={} first_warning_at={} actually_left={}",
        100.0 * cpu / wall,
        failures.len(),
        first_warning.map(|w| format!("{:.0}", w.at)).unwrap_or("none".into()),
        first_warning.map(|w| format!("{:.0}", w.left)).unwrap_or("none".into()),
    );

    // a)
    assert!(failures.is_empty(), "/metrics of the host agent failed {} of {scrapes} scrapes:\n{}", failures.len(), failures.join("\n"));
    assert!(peak_hwm < RSS_LIMIT_KB, "host agent peak RSS {peak_hwm} KB, limit {RSS_LIMIT_KB} KB");
    assert!(stats.created > 0 && stats.with_page_cache > 0, "the churn made nothing: {stats:?}");
    assert!(max_live >= base_live + 4, "the agent never saw the churn's memcgs: live <= {max_live}, {base_live} before the churn");
    // b)
    assert!(sim_failures.is_empty(), "/metrics of the fixture agent failed {} of {sim_scrapes} scrapes:\n{}", sim_failures.len(), sim_failures.join("\n"));
    let w = first_warning.unwrap_or_else(|| panic!("the exhaustion forecast never warned before the limit (first shown: {first_forecast:?})"));
    assert!(w.at < end && w.ids < ID_LIMIT, "warned only at the limit: {w:?}");
    assert!(written < ID_LIMIT, "the ramp reached the limit before its end");
    let body = headroom.unwrap_or_else(|| panic!("the fixture agent's headroom never read 0 after {ID_LIMIT} IDs were written; its stderr ends with:\n{sim_tail}"));
    println!("  at the limit    headroom 0, forecast {:?} s", sample(&body, "cgleak_memcg_exhaustion_forecast_seconds"));
}

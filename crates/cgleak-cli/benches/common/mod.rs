//! Helpers shared by the benches: a launcher that measures a child's peak RSS with
//! wait4, medians, and environment knobs. Each bench binary includes this with `mod common;`.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// argv[1] that makes this binary a launcher (see `launch`).
/// Exit codes of a measured program that are not failures: 0, and 3 (`cgleak logs`
/// found incidents, `rg` has no such code).
pub const OK_EXIT_CODES: [i32; 2] = [0, 3];

pub const LAUNCH_ARG: &str = "__cgleak_bench_launch";

/// The `main` of every bench binary named `name`: launcher mode (see [`launch`]), a skip
/// without `--bench` (`cargo test --all-targets` runs bench binaries too: never build
/// 30,000 memcgs then), else `run`, whose `Ok(false)` (a failed check) exits non-zero.
pub fn bench_main(name: &str, run: fn() -> Result<bool, String>) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(LAUNCH_ARG) {
        return launch(&args[2..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("{name}: skipped (run it with `cargo bench -p cgleak --bench {name}`)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag raised by SIGINT and SIGTERM, for the bench's loops to check ([`check_cancel`]).
pub fn cancel_on_signals() -> Result<Arc<AtomicBool>, String> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&cancel)).map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    Ok(cancel)
}

pub fn check_cancel(cancel: &AtomicBool) -> Result<(), String> {
    if cancel.load(Ordering::Relaxed) {
        Err("interrupted (SIGINT/SIGTERM): scratch cgroups removed".into())
    } else {
        Ok(())
    }
}

/// Launcher mode: `<bench> __cgleak_bench_launch <report file> <program> <args...>`.
///
/// The child's ru_maxrss cannot come from this bench directly: at exec the kernel
/// folds the hiwater RSS of the mm being replaced into the new program's maxrss
/// (fs/exec.c exec_mmap, setmax_mm_hiwater_rss), and a child spawned from the bench
/// starts from the bench's mm (vfork shares it, fork copies it), so every child would
/// report at least the bench's own peak (30,000 paths, JSON buffers). A freshly
/// exec'd launcher is small: it spawns the program, reaps it with wait4 and writes
/// `wall_ns maxrss_kb wait_status` to the report file. Wall time is taken around the
/// program only, so the launcher's own start-up is in neither figure.
pub fn launch(args: &[String]) -> ExitCode {
    let [report, program, rest @ ..] = args else {
        eprintln!("usage: {LAUNCH_ARG} <report file> <program> <args...>");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to a status int and an rusage for the duration of the call;
        // pid is our unreaped child (std's Child is never waited on).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            eprintln!("wait4 {pid}: {e}");
            return ExitCode::from(1);
        }
    }
    let wall = start.elapsed();
    // ru_maxrss is in kilobytes on Linux.
    match fs::write(report, format!("{} {} {}\n", wall.as_nanos(), ru.ru_maxrss, status)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{report}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Run `program args` through a launcher (see `launch`), feeding its stdout to `sink`.
/// Returns the program's wall time and peak RSS in KB.
pub fn run_child(program: &Path, args: &[&str], sink: &mut dyn FnMut(&[u8])) -> Result<(Duration, u64), String> {
    run_launched(program, args, Some(sink))
}

/// As [`run_child`], with the program's stdout sent to /dev/null (`> /dev/null`).
pub fn run_child_quiet(program: &Path, args: &[&str]) -> Result<(Duration, u64), String> {
    run_launched(program, args, None)
}

/// Where a launched program's stdout goes: a sink, or /dev/null when None.
type StdoutSink<'a> = Option<&'a mut dyn FnMut(&[u8])>;

fn run_launched(program: &Path, args: &[&str], sink: StdoutSink) -> Result<(Duration, u64), String> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let report = std::env::temp_dir().join(format!("cgleak-bench-{}.rusage", std::process::id()));
    let _ = fs::remove_file(&report);
    let me = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let mut launcher = Command::new(me)
        .arg(LAUNCH_ARG)
        .arg(&report)
        .arg(program)
        .args(args)
        .stdout(if sink.is_some() { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{what}: cannot start the launcher: {e}"))?;
    if let Some(sink) = sink {
        let mut out = launcher.stdout.take().expect("stdout is piped");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{what}: reading stdout: {e}")),
            }
        }
    }
    let st = launcher.wait().map_err(|e| format!("{what}: waiting for the launcher: {e}"))?;
    if !st.success() {
        return Err(format!("{what}: launcher failed ({st})"));
    }
    let text = fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let _ = fs::remove_file(&report);
    let f: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let [wall_ns, maxrss_kb, status] = f[..] else {
        return Err(format!("{}: unexpected report {text:?}", report.display()));
    };
    let status = status as i32;
    if !libc::WIFEXITED(status) || !OK_EXIT_CODES.contains(&libc::WEXITSTATUS(status)) {
        return Err(format!("{what}: exited with wait status {status:#x}"));
    }
    Ok((Duration::from_nanos(wall_ns), maxrss_kb))
}

pub fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?}: not a whole number")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

pub mod memcg_tree;

/// A long-running program (a daemon such as `cgleak agent`) started through a launcher
/// (see [`launch`]), so its peak RSS comes from wait4 when it is stopped.
pub struct LaunchedDaemon {
    launcher: std::process::Child,
    report: std::path::PathBuf,
    pub what: String,
}

impl LaunchedDaemon {
    /// Start `program args` with its stderr sent to `stderr` (stdout to /dev/null).
    pub fn spawn(program: &Path, args: &[&str], stderr: fs::File) -> Result<LaunchedDaemon, String> {
        let what = format!("{} {}", program.display(), args.join(" "));
        let report = std::env::temp_dir().join(format!("cgleak-bench-{}-daemon.rusage", std::process::id()));
        let _ = fs::remove_file(&report);
        let me = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
        let launcher = Command::new(me)
            .arg(LAUNCH_ARG)
            .arg(&report)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{what}: cannot start the launcher: {e}"))?;
        Ok(LaunchedDaemon { launcher, report, what })
    }

    /// The program's pid: the launcher's only child.
    pub fn program_pid(&mut self, timeout: Duration) -> Result<u32, String> {
        let lp = self.launcher.id();
        let deadline = Instant::now() + timeout;
        loop {
            let children = fs::read_to_string(format!("/proc/{lp}/task/{lp}/children")).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return Ok(pid);
            }
            if let Ok(Some(st)) = self.launcher.try_wait() {
                return Err(format!("{}: the launcher exited ({st}) before the program ran", self.what));
            }
            if Instant::now() >= deadline {
                return Err(format!("{}: no program under launcher {lp} after {timeout:?}", self.what));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the program (and so its launcher) still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.launcher.try_wait(), Ok(None))
    }

    /// SIGTERM the program, wait for it: (wall time, peak RSS in KB from wait4, wait status).
    pub fn stop(mut self, pid: u32, timeout: Duration) -> Result<(Duration, u64, i32), String> {
        // SAFETY: kill(2) on the launcher's child, which the launcher has not reaped (it still runs).
        if self.running() {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() >= deadline {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = self.launcher.wait();
                return Err(format!("{}: still running {timeout:?} after SIGTERM (killed)", self.what));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = fs::read_to_string(&self.report).map_err(|e| format!("{}: {e}", self.report.display()))?;
        let _ = fs::remove_file(&self.report);
        let f: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        let [wall_ns, maxrss_kb, status] = f[..] else {
            return Err(format!("{}: unexpected report {text:?}", self.report.display()));
        };
        Ok((Duration::from_nanos(wall_ns), maxrss_kb, status as i32))
    }
}

impl Drop for LaunchedDaemon {
    fn drop(&mut self) {
        if self.running() {
            let lp = self.launcher.id();
            let children = fs::read_to_string(format!("/proc/{lp}/task/{lp}/children")).unwrap_or_default();
            for pid in children.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
                // SAFETY: kill(2) on the launcher's own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.launcher.wait();
        }
    }
}

// The agent's CPU and memory, read as the soak test reads them: one copy.
#[path = "../../tests/common/procfs.rs"]
#[allow(clippy::duplicate_mod)] // migrate_100 also includes tests/common, which has it
mod procfs;
#[allow(unused_imports)] // agent_cost uses them; the other benches share this module
pub use procfs::{proc_cpu_secs, proc_status_kb};

/// HTTP/1.0 GET `path` on a loopback address: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    use std::io::Write;
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("reading the answer to GET {path} on {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path}: no end of headers"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("GET {path}: bad status line {head:?}"))?;
    Ok((code, body.to_string()))
}

/// The value of an unlabelled sample `name` in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// A loopback address whose port is free right now.
pub fn free_loopback_addr() -> Result<std::net::SocketAddr, String> {
    let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map_err(|e| format!("local address: {e}"))
}

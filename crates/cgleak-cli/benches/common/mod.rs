//! Helpers shared by the benches: a launcher that measures a child's peak RSS with
//! wait4, medians, and environment knobs. Each bench binary includes this with `mod common;`.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// argv[1] that makes this binary a launcher (see `launch`).
/// Exit codes of a measured program that are not failures: 0, and 3 (`cgleak logs`
/// found incidents, `rg` has no such code).
pub const OK_EXIT_CODES: [i32; 2] = [0, 3];

pub const LAUNCH_ARG: &str = "__cgleak_bench_launch";

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

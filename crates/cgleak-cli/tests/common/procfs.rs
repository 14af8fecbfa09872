//! A process's CPU time and memory from /proc (the agent's, in the soak and the agent_cost
//! bench, which includes this file).
#![allow(dead_code)]

use std::fs;

/// CPU seconds of `pid` and its waited-for children (the agent's BPF walk runs in one):
/// utime, stime, cutime and cstime, /proc/<pid>/stat fields 14 to 17.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses) come field 3 onwards.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = [11, 12, 13, 14].iter().map(|&i| f.get(i)?.parse::<u64>().ok()).sum::<Option<u64>>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// A `kB` line of /proc/<pid>/status (`VmHWM`, `VmRSS`).
pub fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

//! Prometheus' own `promtool check metrics` (Debian's `prometheus` package) on what cgleak
//! exposes, and reading sample lines of the exposition. The unit tests of src/metrics.rs
//! include this file too (src/testing.rs), so it uses std only.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool check metrics < text`: (exit code, stdout + stderr). Panics when promtool
/// cannot run: the tests that need it fail, never pass by testing nothing.
pub fn promtool_check_metrics(text: &[u8]) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): install Debian's `prometheus` package (scripts/test-all.sh does); this test must not be skipped"));
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// promtool accepts `text` with nothing to say (its lint included).
pub fn assert_promtool_accepts(text: &str) {
    let (code, said) = promtool_check_metrics(text.as_bytes());
    assert!(code == 0 && said.trim().is_empty(), "promtool check metrics: exit {code}\n{said}\n---\n{text}");
}

/// Whether a sample of the family `name` is exposed (no labels, or any).
pub fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|l| !l.starts_with('#') && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))))
}

/// The value of the sample line `series` (name and labels exactly as exposed), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

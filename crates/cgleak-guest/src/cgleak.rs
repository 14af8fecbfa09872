//! Running the cgleak binary under test and reading its JSON.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

/// One run of `cgleak <args> --output json`.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    /// Null when stdout was not JSON (an error before any output).
    pub json: Value,
    pub stderr: String,
}

pub fn run(cgleak: &Path, args: &[&str]) -> Result<Run> {
    let out = Command::new(cgleak)
        .args(args)
        .args(["--output", "json"])
        .output()
        .with_context(|| format!("run {} {}", cgleak.display(), args.join(" ")))?;
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok(Run { code: out.status.code().unwrap_or(-1), json, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
}

pub fn status(cgleak: &Path) -> Result<Run> {
    run(cgleak, &["status"])
}

pub fn u64_at(v: &Value, ptr: &str) -> Option<u64> {
    v.pointer(ptr).and_then(Value::as_u64)
}

pub fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

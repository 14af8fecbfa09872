//! `cgleak probe` as a user runs it, against the running kernel.
//!
//! Needs root and a mounted memory controller (asserted, never skipped). Each probe
//! makes its own scratch parent `cgleak-probe-<pid>-<secs>` under the memory root and
//! must remove it; at most a few thousand memcgs exist at any time.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cgleak_readers::mountinfo::CgroupLayout;
use cgleak_readers::HostPaths;

fn cgleak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgleak"))
}

/// The memory hierarchy root (local path), after asserting the environment.
fn memory_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "probe_cli tests create memory cgroups and must run as root");
    let layout = CgroupLayout::discover(&HostPaths::default()).expect("reading /proc/self/mountinfo");
    layout.memory().expect("probe_cli tests need a mounted memory cgroup controller").mount.local
}

fn scratch_parents_of(root: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("cgleak-probe-{pid}-");
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn count_above_5000_needs_force() {
    let out = cgleak().args(["probe", "--count", "5001"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--count") && stderr.contains("--force"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// `--to-limit` fills the node's ID space: never run here, so only its refusals are tested on
/// this host (the qemu guests run it: lab scenario `to-limit`). Each refusal must come before
/// anything is created, as any user (no root needed to be told no).
fn refused(args: &[&str]) -> (Output, Vec<PathBuf>) {
    let root = memory_root();
    let child = cgleak().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (out, scratch_parents_of(&root, pid))
}

#[test]
fn to_limit_without_force_is_a_usage_error_that_explains_the_risk() {
    let (out, made) = refused(&["probe", "--to-limit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--to-limit") && stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains("ID space") && stderr.contains("pods"), "the risk is not explained: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(made.is_empty(), "created {made:?}");
    // The JSON form refuses the same way, with nothing on stdout.
    let (out, made) = refused(&["probe", "--to-limit", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && made.is_empty());
}

#[test]
fn to_limit_conflicts_with_count() {
    for args in [
        &["probe", "--to-limit", "--force", "--count", "10"][..],
        &["probe", "--count", "10", "--to-limit", "--force", "--output", "json"][..],
    ] {
        let (out, made) = refused(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--to-limit") && stderr.contains("--count"), "{stderr}");
        assert!(out.stdout.is_empty() && made.is_empty(), "{args:?}");
    }
}

#[test]
fn help_shows_to_limit_with_its_exit_codes() {
    let out = cgleak().args(["probe", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(help.contains("cgleak probe --to-limit --force --output json"), "{help}");
    assert!(help.contains("--to-limit: the limit met, headroom measured"), "{help}");
}

#[test]
fn count_zero_is_a_usage_error() {
    let out = cgleak().args(["probe", "--count", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn probe_100_as_json() {
    let root = memory_root();
    let out = cgleak().args(["probe", "--count", "100", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["success"], true, "{v:#}");
    assert_eq!(v["requested"], 100);
    assert_eq!(v["created"], 100);
    assert_eq!(v["removed"], 100);
    assert_eq!(v["exhausted"], false);
    assert_eq!(v["interrupted"], false);
    assert!(v["failed_at"].is_null() && v["errno"].is_null());
    assert_eq!(v["leftover"], serde_json::json!([]));
    // The --to-limit keys are there for every probe: a count probe that succeeds proves a lower bound only.
    assert_eq!(v["to_limit"], false);
    assert!(v["headroom"].is_null() && v["no_free_id_ms"].is_null() && v["removals_until_free"].is_null(), "{v:#}");
    let scratch = v["scratch_parent"].as_str().unwrap();
    assert!(scratch.starts_with(&format!("{}/cgleak-probe-", root.display())), "{scratch}");
    assert!(!Path::new(scratch).exists(), "{scratch} was left behind");
    // Nothing but the JSON object on stdout (no progress bar there).
    assert!(String::from_utf8_lossy(&out.stdout).trim_start().starts_with('{'));
}

#[test]
fn probe_as_table() {
    let root = memory_root();
    let child =
        cgleak().args(["probe", "--count", "10"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("created 10/10 memcgs under ") && stdout.contains("removed 10"), "{stdout}");
    assert!(stdout.contains("headroom of at least 10 memcgs proven"), "{stdout}");
    assert!(scratch_parents_of(&root, pid).is_empty());
}

#[test]
fn missing_parent_is_a_runtime_error_naming_it() {
    let root = memory_root();
    let out = cgleak().args(["probe", "--count", "3", "--parent", "/cgleak-test-no-such-cgroup"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}/cgleak-test-no-such-cgroup", root.display())), "{stderr}");
    assert!(!root.join("cgleak-test-no-such-cgroup").exists());
}

#[test]
fn not_root_is_not_permitted() {
    let root = memory_root();
    let child = cgleak()
        .args(["probe", "--count", "3"])
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cgleak as uid 65534 (is the target directory readable by others?)");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("root"), "{stderr}");
    assert!(scratch_parents_of(&root, pid).is_empty());
}

/// Start a probe, wait until its scratch parent exists, send `signal`: the probe
/// must stop, remove everything, print its report and exit 130.
fn interrupted_by(signal: i32) {
    let root = memory_root();
    let child = cgleak()
        .args(["probe", "--count", "2000", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while scratch_parents_of(&root, pid).is_empty() {
        assert!(Instant::now() < deadline, "the probe's scratch parent never appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(130), "{v:#}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["interrupted"], true, "{v:#}");
    assert_eq!(v["success"], false);
    assert_eq!(v["created"], v["removed"], "{v:#}");
    assert!(v["created"].as_u64().unwrap() < 2000, "{v:#}");
    assert_eq!(v["leftover"], serde_json::json!([]));
    assert!(scratch_parents_of(&root, pid).is_empty(), "scratch parent left behind");
}

#[test]
fn sigint_stops_and_cleans_up() {
    interrupted_by(libc::SIGINT);
}

#[test]
fn sigterm_stops_and_cleans_up() {
    interrupted_by(libc::SIGTERM);
}

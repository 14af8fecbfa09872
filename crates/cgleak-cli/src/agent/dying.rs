//! The agent's named dying memcgs: `cgleak_memcg_dying_pinned_bytes` and
//! `cgleak_memcg_dying_by_parent`, from the BPF walk.
//!
//! The walk runs in a child process, the agent's own binary as `status --dying --output
//! json`: loading the program against the kernel's BTF costs about 9 MB for a moment
//! (README, Performance), which the agent, at 20 MB, does not keep; a child gives it all
//! back when it exits. Asked for with `agent --dying-bpf`: each walk costs a census and the
//! walk (README, Performance). It runs when the census's dying count changed, and at least every
//! `every` samples; a walk that cannot run (no BTF, no CAP_BPF and CAP_PERFMON: the
//! DaemonSet drops every capability) leaves the two families out, says why once, and is
//! tried again after `every` samples.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgleak_model::dying::DyingSummary;

/// The largest `status --dying --output json` read back (a census and 21 parents: a few KiB).
const MAX_OUTPUT: u64 = 4 << 20;
/// A walk that takes longer is killed (it holds the cgroup mutex for milliseconds only).
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct DyingNamer {
    exe: PathBuf,
    host_root: PathBuf,
    every: u32,
    /// Samples since the last walk (tried or not); None before the first.
    since: Option<u32>,
    last_dying: Option<Option<u64>>,
    /// The reason the last walk failed, said once until it changes.
    failing: Option<String>,
}

impl DyingNamer {
    /// Walks with `exe` (this binary) over `host_root`, at least every `every` samples.
    pub fn new(exe: PathBuf, host_root: PathBuf, every: u32) -> DyingNamer {
        DyingNamer { exe, host_root, every: every.max(1), since: None, last_dying: None, failing: None }
    }

    /// Whether this sample, whose census counted `dying`, should walk: the first sample, a
    /// changed count after a walk that worked, or `every` samples since the last.
    pub fn due(&mut self, dying: Option<u64>) -> bool {
        let due = match self.since {
            None => true,
            Some(n) if n + 1 >= self.every => true,
            Some(_) => self.failing.is_none() && self.last_dying != Some(dying),
        };
        self.since = Some(if due { 0 } else { self.since.unwrap_or(0) + 1 });
        if due {
            self.last_dying = Some(dying);
        }
        due
    }

    /// One walk. Err: why there are no names (said by the caller once per reason, see
    /// [`DyingNamer::tell`]).
    pub fn walk(&self) -> Result<DyingSummary, String> {
        let mut child = Command::new(&self.exe)
            .arg("--host-root")
            .arg(&self.host_root)
            .args(["status", "--dying", "--output", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} status --dying: {e}", self.exe.display()))?;
        let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut err).take(64 * 1024).read_to_end(&mut text);
            text
        });
        let mut stdout = Vec::new();
        let read = (&mut out).take(MAX_OUTPUT + 1).read_to_end(&mut stdout);
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if started.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("status --dying did not finish in {TIMEOUT:?}"));
                }
            }
        };
        let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).trim().to_string();
        read.map_err(|e| format!("reading status --dying: {e}"))?;
        if stdout.len() as u64 > MAX_OUTPUT {
            return Err(format!("status --dying wrote more than {MAX_OUTPUT} bytes"));
        }
        if !status.success() {
            return Err(format!("status --dying exited {status}: {}", last_line(&stderr)));
        }
        parse(&stdout).map_err(|e| if e.is_empty() { last_line(&stderr).to_string() } else { e })
    }

    /// Says why a walk failed, once per reason; Ok clears it.
    pub fn tell(&mut self, r: &Result<DyingSummary, String>) {
        match r {
            Ok(_) => self.failing = None,
            Err(e) if self.failing.as_deref() != Some(e.as_str()) => {
                crate::render::note(format!(
                    "dying memcgs not named ({e}): cgleak_memcg_dying_pinned_bytes and cgleak_memcg_dying_by_parent are left out; tried again in {} samples",
                    self.every
                ));
                self.failing = Some(e.clone());
            }
            Err(_) => {}
        }
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("no reason given")
}

/// The three keys of `status --dying --output json`; Err("") when the walk named nothing
/// (null: its reason is on stderr).
fn parse(json: &[u8]) -> Result<DyingSummary, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("status --dying wrote no JSON: {e}"))?;
    let (Some(named), Some(pinned)) = (v["dying_named"].as_u64(), v["dying_pinned_bytes"].as_u64()) else {
        return Err(String::new());
    };
    let by_parent = v["dying_by_parent"]
        .as_array()
        .ok_or("status --dying wrote no dying_by_parent")?
        .iter()
        .map(|p| match (p["parent"].as_str(), p["memcgs"].as_u64()) {
            (Some(parent), Some(n)) => Ok((parent.to_string(), n)),
            _ => Err(format!("status --dying: a dying_by_parent entry without parent and memcgs: {p}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DyingSummary { named, pinned_bytes: pinned, by_parent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_first_then_on_a_changed_count_and_every_n_samples() {
        let mut n = DyingNamer::new(PathBuf::from("/bin/false"), PathBuf::from("/"), 3);
        let seq: Vec<bool> = [Some(5), Some(5), Some(5), Some(5), Some(6), Some(6), Some(6), Some(6)].into_iter().map(|d| n.due(d)).collect();
        assert_eq!(seq, [true, false, false, true, true, false, false, true]);
    }

    #[test]
    fn a_failing_walk_waits_for_its_turn_whatever_the_count() {
        let mut n = DyingNamer::new(PathBuf::from("/bin/false"), PathBuf::from("/"), 3);
        assert!(n.due(Some(1)));
        n.tell(&Err("no BTF".into()));
        assert_eq!([Some(2), Some(3), Some(4)].map(|d| n.due(d)), [false, false, true]);
        n.tell(&Err("no BTF".into()));
        assert_eq!(n.failing.as_deref(), Some("no BTF"));
    }

    #[test]
    fn the_walk_of_a_child_that_fails_says_why() {
        let n = DyingNamer::new(PathBuf::from("/bin/false"), PathBuf::from("/"), 3);
        let e = n.walk().unwrap_err();
        assert!(e.contains("exited"), "{e}");
        let n = DyingNamer::new(PathBuf::from("/nonexistent/cgleak"), PathBuf::from("/"), 3);
        assert!(n.walk().unwrap_err().contains("cannot run /nonexistent/cgleak"));
    }

    #[test]
    fn parses_the_three_keys_and_null_means_not_named() {
        let ok = br#"{"dying_named": 3, "dying_pinned_bytes": 4096, "dying_by_parent": [{"parent": "kubepods/burstable", "memcgs": 2}, {"parent": "/", "memcgs": 1}]}"#;
        let s = parse(ok).unwrap();
        assert_eq!((s.named, s.pinned_bytes), (3, 4096));
        assert_eq!(s.by_parent, vec![("kubepods/burstable".to_string(), 2), ("/".to_string(), 1)]);
        assert_eq!(parse(br#"{"dying_named": null, "dying_pinned_bytes": null, "dying_by_parent": null}"#), Err(String::new()));
        assert!(parse(b"not json").unwrap_err().contains("no JSON"));
        assert!(parse(br#"{"dying_named": 1, "dying_pinned_bytes": 1, "dying_by_parent": [{"parent": 7}]}"#).unwrap_err().contains("without parent"));
    }
}

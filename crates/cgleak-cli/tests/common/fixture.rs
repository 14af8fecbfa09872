//! Helpers for tests that run `cgleak` on fixture host roots (crates/cgleak-fixtures):
//! run the binary, read its JSON, compare with committed snapshots.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub use cgleak_fixtures::Fixture;

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON; panics with the whole run when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// No panic, whatever the exit code.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked")
                && !self.stderr.contains("RUST_BACKTRACE")
                && self.code != 101,
            "cgleak panicked: {self:#?}"
        );
    }
}

/// Run `cgleak <args>`.
pub fn cgleak(args: &[&str]) -> Run {
    cgleak_cmd(Command::new(env!("CARGO_BIN_EXE_cgleak")), args)
}

/// Run a prepared command (the binary, or a wrapper such as setpriv around it) with `args`.
pub fn cgleak_cmd(mut cmd: Command, args: &[&str]) -> Run {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No fork while another thread writes a fixture's stand-in binaries (ETXTBSY).
    let child = {
        let _lock = cgleak_fixtures::exec_lock();
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    };
    let out = child.wait_with_output().expect("wait for cgleak");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.assert_no_panic();
    run
}

/// Run `cgleak --host-root <fixture> <args>`.
pub fn on_fixture(f: &Fixture, args: &[&str]) -> Run {
    let root = f.root().to_str().expect("utf-8 fixture path").to_string();
    let mut all = vec!["--host-root", root.as_str()];
    all.extend_from_slice(args);
    cgleak(&all)
}

/// Replace the fixture's temporary path with `<host-root>` everywhere in `v`, so a
/// snapshot does not depend on where the fixture was built.
pub fn normalize(v: &mut Value, root: &Path) {
    let root = root.to_str().expect("utf-8 fixture path");
    match v {
        Value::String(s) if s.contains(root) || has_rfc3339(s) => *s = without_times(&s.replace(root, "<host-root>")),
        Value::Array(a) => a.iter_mut().for_each(|x| normalize(x, root.as_ref())),
        Value::Object(o) => o.values_mut().for_each(|x| normalize(x, root.as_ref())),
        _ => {}
    }
}

/// Length of an RFC 3339 time at the start of `b` (`2026-12-02T17:43:05.381604+00:00`, `...Z`), if one is.
fn rfc3339_len(b: &[u8]) -> Option<usize> {
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10) && at(10, b'T') && digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19)) {
        return None;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if at(i, b'Z') {
        return Some(i + 1);
    }
    if (at(i, b'+') || at(i, b'-')) && digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6) {
        return Some(i + 6);
    }
    Some(i)
}

fn has_rfc3339(s: &str) -> bool {
    (0..s.len()).any(|i| s.is_char_boundary(i) && rfc3339_len(&s.as_bytes()[i..]).is_some())
}

/// `s` with every RFC 3339 time replaced by `<time>`: the fixtures' log lines are written
/// minutes before the run, so their times differ on every run.
pub fn without_times(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        match rfc3339_len(&b[i..]) {
            Some(n) => {
                out.push_str("<time>");
                i += n;
            }
            None => {
                let ch = s[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

pub fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name)
}

/// Compare `v` (pretty-printed) with the committed snapshot `name`; with
/// UPDATE_SNAPSHOTS=1, write it instead.
pub fn assert_snapshot(name: &str, v: &Value) {
    let path = snapshot_path(name);
    let mut text = serde_json::to_string_pretty(v).expect("serialize");
    text.push('\n');
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|s| s == "1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("snapshot {} missing ({e}); run UPDATE_SNAPSHOTS=1 cargo test -p cgleak --test fixture_snapshots, then read it against docs/kernel-facts.md", path.display())
    });
    if want != text {
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(20)
            .map(|(i, (a, b))| format!("line {}:\n  snapshot: {a}\n  now:      {b}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines):\n{}\nIf the change is intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff against docs/kernel-facts.md.",
            path.display(),
            want.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

/// `v[a][b]...` by a dotted path ("memcg.headroom"), Null when absent.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

/// The element of the array at `path` (dotted, as for [`at`]) whose `key` is `value`.
pub fn find_in<'a>(v: &'a Value, path: &str, key: &str, value: &str) -> Option<&'a Value> {
    at(v, path).as_array()?.iter().find(|x| x[key] == value)
}

/// The finding `id` of a `check --output json` report.
pub fn finding<'a>(c: &'a Value, id: &str) -> Option<&'a Value> {
    find_in(c, "findings", "id", id)
}

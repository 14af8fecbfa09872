//! The agent's history file (`<state-dir>/agent-history.jsonl`) against what can be found in
//! it: a byte that is not UTF-8 costs its line only (moved to `agent-history.jsonl.bad`, and
//! `status` says so), a 200 MB file is read from its end in little memory (peak RSS of the
//! child, from wait4), and the file stays bounded and is never written through a link.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fixture::{at, on_fixture};

const HISTORY: &str = "agent-history.jsonl";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `n` samples a minute apart ending now, IDs in use rising by `step` a minute from 60000.
fn rising(n: usize, step: usize) -> Vec<String> {
    let end = now() - 5.0;
    (0..n).map(|i| format!("{{\"at_unix_secs\":{},\"ids_in_use\":{},\"id_limit\":65535}}", end - 60.0 * (n - 1 - i) as f64, 60000 + step * i)).collect()
}

/// The line of finding 7 (issue 11): a sample with one byte that is not UTF-8 in it.
const BAD_LINE: &[u8] = b"{\"at_unix_secs\":1700000000.5,\"ids_in_use\":6\xff000,\"id_limit\":65535}";

fn write_history(dir: &Path, lines: &[String], bad_at: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if bad_at == Some(i) {
            out.extend_from_slice(BAD_LINE);
            out.push(b'\n');
        }
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    fs::write(dir.join(HISTORY), &out).unwrap();
    out
}

/// Exit code, stdout, stderr and peak RSS (KiB, the child's own: wait4) of a finished child.
fn wait_measured(mut child: Child) -> (i32, String, String, u64) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child by its pid (not waited for yet).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, o.join().unwrap(), e.join().unwrap(), ru.ru_maxrss as u64)
}

fn spawn_agent(f: &cgleak_fixtures::Fixture, state: &Path, extra: &[&str]) -> Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    cmd.arg("--host-root")
        .arg(f.root())
        .args(["agent", "--no-logs", "--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
        .arg(state)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _lock = cgleak_fixtures::exec_lock();
    cmd.spawn().expect("spawn cgleak agent")
}

/// SIGTERM, then wait (exit 0 expected): stderr and peak RSS in KiB.
fn stop(child: Child) -> (String, u64) {
    // SAFETY: kill(2) on our own child's pid, which it cannot outlive (not yet reaped).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let (code, _, err, rss) = wait_measured(child);
    assert_eq!(code, 0, "agent: {err}");
    assert!(!err.contains("panicked"), "{err}");
    (err, rss)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines_of(p: &Path) -> Vec<Vec<u8>> {
    let b = fs::read(p).unwrap_or_default();
    b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Finding 7: one byte that is not UTF-8 made the agent rewrite 77 lines to 3 and made
/// `status` and `check` drop the forecast without a word. Now the line alone is skipped,
/// said so, and moved to the side file; the other samples stay.
#[test]
fn a_bad_byte_costs_its_line_only() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let good = rising(76, 50);
    write_history(state.path(), &good, Some(40));
    let sd = state.path().to_str().unwrap();

    let r = on_fixture(&f, &["status", "--state-dir", sd, "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(at(&v, "forecast.outcome"), "approaching", "{v}");
    let notes = at(&v, "forecast.notes").to_string();
    assert!(notes.contains("has 1 lines that are not samples") && notes.contains("the forecast is from the 76 samples read"), "{notes}");
    assert!(r.stderr.contains("cgleak: note: the agent's history ") && r.stderr.contains("agent-history.jsonl.bad"), "{}", r.stderr);
    let r = on_fixture(&f, &["check", "--state-dir", sd, "--incidents-since", "0", "--output", "json"]);
    assert!(r.json()["node"]["forecast"]["notes"].to_string().contains("1 lines that are not samples"), "{}", r.stdout);

    let agent = spawn_agent(&f, state.path(), &["--interval", "1s"]);
    let file = state.path().join(HISTORY);
    wait_until("two new samples", Duration::from_secs(30), || lines_of(&file).len() >= 78);
    let (err, _) = stop(agent);
    let lines = lines_of(&file);
    assert!(lines.len() >= 78, "{} lines", lines.len());
    for (l, want) in lines.iter().zip(&good) {
        assert_eq!(l, want.as_bytes(), "the 76 good samples are kept as they were");
    }
    assert_eq!(lines_of(&state.path().join("agent-history.jsonl.bad")), vec![BAD_LINE.to_vec()], "the bad line, byte for byte");
    assert!(err.contains("1 lines are not samples (not UTF-8, not a sample's JSON, or cut short): moved to"), "{err}");
    // Started again: nothing more to move, the side file keeps its one line.
    let agent = spawn_agent(&f, state.path(), &["--interval", "1s"]);
    let n = lines.len();
    wait_until("a sample", Duration::from_secs(30), || lines_of(&file).len() > n);
    let (err, _) = stop(agent);
    assert!(!err.contains("not samples"), "{err}");
    assert_eq!(lines_of(&state.path().join("agent-history.jsonl.bad")).len(), 1);
}

/// Finding 7: a 200 MB history took the agent to 204 MB of RSS (its pod's limit is 64 MiB).
/// `status` and the agent read only its end: their peak RSS stays far below the limit, the
/// forecast is there, and the agent leaves a file of the ring's size.
#[test]
fn a_200_mb_history_is_read_from_its_end_in_little_memory() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join(HISTORY);
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&file).unwrap());
        // 200 MB of old samples (a block written again and again), then a day of recent ones.
        let old: String = (0..1000u64).map(|i| format!("{{\"at_unix_secs\":{},\"ids_in_use\":{},\"id_limit\":65535}}\n", 1.6e9 + i as f64, 1000 + i)).collect();
        let mut written = 0u64;
        while written < 200_000_000 {
            w.write_all(old.as_bytes()).unwrap();
            written += old.len() as u64;
        }
        for (i, l) in rising(1440, 2).iter().enumerate() {
            if i == 1000 {
                w.write_all(BAD_LINE).unwrap();
                w.write_all(b"\n").unwrap();
            }
            writeln!(w, "{l}").unwrap();
        }
    }
    assert!(fs::metadata(&file).unwrap().len() > 200_000_000);

    let child = Command::new(env!("CARGO_BIN_EXE_cgleak"))
        .arg("--host-root")
        .arg(f.root())
        .args(["status", "--output", "json", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, out, err, rss_kib) = wait_measured(child);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(at(&v, "forecast.outcome"), "approaching", "{v}");
    assert!(at(&v, "forecast.notes").to_string().contains("1 lines that are not samples"), "{v}");
    println!("status on a 200 MB history: peak RSS {} KiB", rss_kib);
    assert!(rss_kib < 32 * 1024, "status peak RSS {rss_kib} KiB on a 200 MB history");

    let agent = spawn_agent(&f, state.path(), &["--interval", "1s"]);
    wait_until("the rewrite to the ring", Duration::from_secs(60), || fs::metadata(&file).map(|m| m.len() < 1 << 20).unwrap_or(false));
    std::thread::sleep(Duration::from_secs(2));
    let (err, rss_kib) = stop(agent);
    println!("agent on a 200 MB history: peak RSS {} KiB", rss_kib);
    assert!(rss_kib < 48 * 1024, "agent peak RSS {rss_kib} KiB on a 200 MB history (its pod's limit is 64 MiB)");
    assert!(err.contains("bytes were not read") && err.contains("moved to"), "{err}");
    let lines = lines_of(&file);
    assert!((1440..=1445).contains(&lines.len()), "{} lines", lines.len());
    assert_eq!(lines_of(&state.path().join("agent-history.jsonl.bad")), vec![BAD_LINE.to_vec()]);
}

/// The file stays within its bound while the agent appends, what another writer adds is
/// counted toward the bound, and a link at the history's path (or at its side file) is
/// replaced or left alone, never written through.
#[test]
fn the_file_stays_bounded_and_links_are_never_followed() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"precious\n").unwrap();
    let file = state.path().join(HISTORY);
    // A symlink at the history's path and at its side file, with a bad line to move.
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    std::os::unix::fs::symlink(&victim, state.path().join("agent-history.jsonl.bad")).unwrap();

    let agent = spawn_agent(&f, state.path(), &["--interval", "500ms", "--history-capacity", "4"]);
    wait_until("the history replaced by a file", Duration::from_secs(30), || fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_file()));
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    // A hard link to the victim put in its place while the agent runs.
    fs::remove_file(&file).unwrap();
    fs::hard_link(&victim, &file).unwrap();
    wait_until("the hard link replaced", Duration::from_secs(30), || {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(&file).is_ok_and(|m| m.nlink() == 1)
    });
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    // Another writer appending 10 KB: the next sample finds the file past its bound
    // (4 samples x 2 x 128 bytes) and rewrites it, its garbage moved aside.
    fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(&[b'z'; 10_000]).unwrap();
    fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"\n").unwrap();
    let mut max_seen = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let len = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if start.elapsed() > Duration::from_secs(2) {
            max_seen = max_seen.max(len);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (err, _) = stop(agent);
    assert!(max_seen <= 4 * 2 * 128 + 128, "the file reached {max_seen} bytes");
    assert!(lines_of(&file).iter().all(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok()), "only samples are left");
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n", "{err}");
    assert!(err.contains("could not take them") && err.contains("left alone"), "the side file is a link: {err}");
}

/// `status --history` draws the stored history (IDs in use with the limit and the forecast,
/// dying memcgs) at the width asked, in ASCII when asked, with local date-times; with
/// `--output json` the samples are under `history`, raw.
#[test]
fn status_history_draws_the_stored_samples() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let t0 = now() - 20.0 * 3600.0;
    let lines: String = (0..120)
        .map(|i| format!("{{\"at_unix_secs\":{},\"ids_in_use\":{},\"id_limit\":65535,\"dying\":{}}}\n", t0 + 600.0 * i as f64, 20000 + 250 * i, 50 + 3 * i))
        .collect();
    fs::write(state.path().join("agent-history.jsonl"), lines).unwrap();
    let dir = state.path().to_str().unwrap();
    let run = on_fixture(&f, &["status", "--history", "--state-dir", dir, "--width", "60", "--ascii"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let out = &run.stdout;
    let charts = &out[out.find("IDs in use: ").expect("the charts")..];
    assert!(charts.is_ascii(), "{charts}");
    assert!(out.contains("IDs in use: 49750 now of 65535 (120 samples since "), "{out}");
    assert!(out.contains("Dying memcgs: 407 now"), "{out}");
    assert!(out.contains("forecast (shaded): the limit at "), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.get(8..9) == Some("|")).collect();
    assert_eq!(rows.len(), 16, "two charts of 8 rows: {out}");
    assert!(rows.iter().all(|r| r.trim_end_matches(" limit").len() == 60), "{out}");
    // Local date-times (this test runs in UTC unless TZ says otherwise), not epoch seconds.
    let first = jiff::Timestamp::from_second(t0 as i64).unwrap().to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M").to_string();
    assert!(out.contains(&first), "{first} in {out}");

    let run = on_fixture(&f, &["status", "--history", "--state-dir", dir, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 120);
    assert_eq!(h[119]["ids_in_use"], 49750);
    assert_eq!(h[119]["dying"], 407);
    // --ascii without --history is a usage error.
    assert_eq!(on_fixture(&f, &["status", "--ascii"]).code, 2);
}

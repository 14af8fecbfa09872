//! `cgleak check` with the node's recent logs as evidence: on a fixture host (Debian 12,
//! kernel 6.1, cgroup v2, healthy by its census) whose /var/log/syslog has a kubelet line
//! of a failed memcg mkdir a few minutes old, the verdict is `exhausted` (exit 4) with a
//! `memcg_create_failures` finding that quotes the line; older lines, or the logs left
//! out, change nothing.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cgleak_readers::logs::clock::civil_from_days;
use serde_json::Value;

use common::fixture::{cgleak_cmd, finding, Run};

const POD: &str = "5b2f0a4c-1d3e-4f6a-8b9c-0d1e2f3a4b5c";
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A syslog line (BSD time in UTC: the runs below set TZ=UTC) of kubelet failing to
/// create a pod's memory cgroup on a cgroup v2, systemd-driver node with CRI-O, `ago`
/// seconds ago.
fn kubelet_line(ago: u64) -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - ago;
    let (_, mo, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    let uid = POD.replace('-', "_");
    format!(
        "{} {d:2} {h:02}:{mi:02}:{se:02} node-1 kubelet[811]: E{mo:02}{d:02} {h:02}:{mi:02}:{se:02}.123456     811 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"CreatePodSandbox\\\" for \\\"web-7c5ddbdf54-4hgk9_default({POD})\\\" with CreatePodSandboxError: \\\"Failed to create sandbox for pod \\\\\\\"web-7c5ddbdf54-4hgk9_default({POD})\\\\\\\": rpc error: code = Unknown desc = container create failed: mkdir /sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice: no space left on device\\\"\" pod=\"default/web-7c5ddbdf54-4hgk9\" podUID=\"{POD}\"",
        MONTHS[mo as usize - 1]
    )
}

fn check(f: &cgleak_fixtures::Fixture, extra: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.env("TZ", "UTC");
    let root = f.root().to_str().unwrap().to_string();
    let mut args = vec!["--host-root", root.as_str(), "check", "--output", "json"];
    args.extend_from_slice(extra);
    cgleak_cmd(c, &args)
}

fn ids(c: &Value) -> Vec<&str> {
    c["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect()
}

#[test]
fn recent_failed_mkdir_in_syslog_means_exhausted() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let ordinary = "Nov  3 10:00:00 node-1 crio[790]: time=\"2023-11-03 10:00:00.000000000Z\" level=info msg=\"Checking image status: registry.k8s.io/pause:3.9\"";
    let old = kubelet_line(3 * 3600);
    let recent = kubelet_line(300);
    f.host().file("/var/log/syslog", format!("{ordinary}\n{old}\n{ordinary}\n{recent}\n"));

    let run = check(&f, &[]);
    assert_eq!(run.code, 4, "exhausted: {run:#?}");
    let c = run.json();
    assert_eq!(c["verdict"], "exhausted");
    let fi = finding(&c, "memcg_create_failures").unwrap_or_else(|| panic!("no memcg_create_failures finding: {:?}", ids(&c)));
    assert_eq!(fi["severity"], "critical");
    let summary = fi["summary"].as_str().unwrap();
    assert!(summary.starts_with("1 memcg creations failed in the logs since "), "only the recent line counts: {summary}");
    assert!(summary.contains("(ENOSPC; 1 pods)") && !summary.contains("another errno"), "6.1 returns ENOSPC when full: {summary}");
    let ev = fi["evidence"].as_array().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["file"], "/var/log/syslog:4", "host path and line");
    assert_eq!(ev[0]["value"], recent.as_str());
    // The incidents are in the report, with the window and the sources read.
    let logs = &c["node"]["logs"];
    assert_eq!(logs["sources"], serde_json::json!(["/var/log/syslog"]));
    assert_eq!(logs["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(logs["incidents"][0]["pod_uid"], POD);
    // 6.1 releases dying memcgs' IDs and the census counts plenty free now: no reboot, the
    // failure came from a passing burst or another limit with the same errno.
    assert!(!c["remedies"].as_array().unwrap().iter().any(|r| r["action"] == "reboot"), "{}", c["remedies"]);
    let other = c["remedies"].as_array().unwrap().iter().find(|r| r["action"] == "find-other-cause").expect("find-other-cause");
    assert!(other["summary"].as_str().unwrap().contains("a burst of live memcgs that has passed"), "{other}");

    // Table output names the finding and the line.
    let mut t = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    t.env("TZ", "UTC");
    let root = f.root().to_str().unwrap().to_string();
    let run = cgleak_cmd(t, &["--host-root", &root, "check"]);
    assert_eq!(run.code, 4);
    assert!(run.stdout.contains("memcg_create_failures") && run.stdout.contains("/var/log/syslog:4"), "{}", run.stdout);

    // A window that ends before the recent line, or no logs at all: healthy as the census says.
    for extra in [&["--incidents-since", "2m"][..], &["--incidents-since", "0"]] {
        let run = check(&f, extra);
        assert_eq!(run.code, 0, "{extra:?}: {run:#?}");
        let c = run.json();
        assert_eq!(c["verdict"], "healthy");
        assert!(finding(&c, "memcg_create_failures").is_none());
        assert!(c["node"].get("logs").is_none(), "nothing to say, nothing in the JSON: {}", c["node"]);
    }
}

#[test]
fn a_syslog_not_written_within_the_window_is_not_read() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let p = f.host().file("/var/log/syslog", format!("{}\n", kubelet_line(60)));
    // The line says a minute ago, but the file was last written two hours ago: it cannot
    // hold anything from the last hour (the line's clock is off), so it is skipped.
    std::fs::File::options().write(true).open(&p).unwrap().set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
    let run = check(&f, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.json()["node"].get("logs").is_none());
}

#[test]
fn inotify_exhaustion_is_noted_but_not_exhaustion() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 120;
    let (y, mo, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    let line = format!(
        "{y}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.000000+00:00 node-1 kubelet[811]: W1103 10:00:00.000000     811 watcher.go:93] Error while processing event (\"/sys/fs/cgroup/kubepods.slice/kubepods-pod{}.slice\": 0x40000100 == IN_CREATE|IN_ISDIR): inotify_add_watch /sys/fs/cgroup/kubepods.slice/kubepods-pod{}.slice: no space left on device",
        s / 3600,
        s / 60 % 60,
        s % 60,
        POD.replace('-', "_"),
        POD.replace('-', "_")
    );
    f.host().file("/var/log/messages", format!("{line}\n"));
    let run = check(&f, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let c = run.json();
    let fi = finding(&c, "log_incidents").unwrap_or_else(|| panic!("no log_incidents finding: {:?}", ids(&c)));
    assert_eq!(fi["severity"], "warning");
    assert!(fi["summary"].as_str().unwrap().contains("inotify"), "{fi}");
    assert_eq!(fi["evidence"][0]["file"], "/var/log/messages:1");
}

/// `Mon DD HH:MM:SS` of `ago` seconds back (UTC: the runs set TZ=UTC), as syslog writes it.
fn syslog_time(ago: u64) -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - ago;
    let (_, mo, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    format!("{} {d:2} {:02}:{:02}:{:02}", MONTHS[mo as usize - 1], s / 3600, s / 60 % 60, s % 60)
}

/// The mkdir error of finding 5 (issue 11), as a syslog line with `tag` two minutes ago.
fn tagged_mkdir(tag: &str) -> String {
    format!("{} node {tag}: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{POD}: no space left on device", syslog_time(120))
}

/// A tenant's program writing the kubelet's words to syslog cannot taint the node: `check`
/// stays healthy and names the line as untrusted; the same words from the kubelet are exhaustion.
#[test]
fn a_tenants_syslog_line_is_untrusted_and_the_kubelets_is_exhaustion() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let tenant = tagged_mkdir("myapp[99]");
    f.host().file("/var/log/messages", format!("{tenant}\n"));
    let run = check(&f, &[]);
    assert_eq!(run.code, 0, "healthy: {run:#?}");
    let c = run.json();
    assert_eq!(c["verdict"], "healthy");
    assert!(finding(&c, "memcg_create_failures").is_none(), "{:?}", ids(&c));
    let fi = finding(&c, "untrusted_log_lines").unwrap_or_else(|| panic!("no untrusted_log_lines finding: {:?}", ids(&c)));
    assert_eq!(fi["severity"], "info");
    let summary = fi["summary"].as_str().unwrap();
    assert!(summary.starts_with("1 log lines since ") && summary.contains("(1 failed memcg creations)"), "{summary}");
    assert!(summary.contains("syslog tag myapp: not kubelet, a container runtime, systemd or the kernel"), "{summary}");
    assert_eq!(fi["evidence"][0]["file"], "/var/log/messages:1");
    assert_eq!(fi["evidence"][0]["value"], tenant.as_str());
    let inc = &c["node"]["logs"]["incidents"][0];
    assert_eq!((&inc["trusted"], &inc["component"]), (&serde_json::json!(false), &serde_json::json!("myapp")), "{inc}");
    assert!(!c["remedies"].as_array().unwrap().iter().any(|r| r["action"] == "find-other-cause"), "{}", c["remedies"]);
    // node-problem-detector's plugin: OK.
    let mut npd = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    npd.env("TZ", "UTC");
    let root = f.root().to_str().unwrap().to_string();
    assert_eq!(cgleak_cmd(npd, &["--host-root", &root, "check", "--npd"]).code, 0);
    // The table says so too.
    let mut t = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    t.env("TZ", "UTC");
    let run = cgleak_cmd(t, &["--host-root", &root, "check"]);
    assert!(run.stdout.contains("[info] untrusted_log_lines: 1 log lines"), "{}", run.stdout);

    // The same words under the kubelet's tag: exhausted.
    let kubelet = tagged_mkdir("kubelet[811]");
    f.host().file("/var/log/messages", format!("{tenant}\n{kubelet}\n"));
    let run = check(&f, &[]);
    assert_eq!(run.code, 4, "exhausted: {run:#?}");
    let c = run.json();
    let fi = finding(&c, "memcg_create_failures").unwrap_or_else(|| panic!("{:?}", ids(&c)));
    assert!(fi["summary"].as_str().unwrap().starts_with("1 memcg creations failed"), "only the kubelet's line counts: {fi}");
    assert_eq!(fi["evidence"][0]["file"], "/var/log/messages:2");
    assert!(finding(&c, "untrusted_log_lines").is_some(), "{:?}", ids(&c));
}

/// Lines whose writer a syslog file cannot tell (no tag) and RFC 5424 lines of another
/// program are untrusted; an RFC 5424 line of the kubelet counts.
#[test]
fn untagged_and_rfc5424_lines() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 90;
    let (y, mo, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    // A klog line with no syslog envelope: its time is known, its writer is not.
    let bare = format!("E{mo:02}{d:02} {h:02}:{mi:02}:{se:02}.000000     811 pod_workers.go:1300] mkdir /sys/fs/cgroup/memory/kubepods/pod{POD}: no space left on device");
    let iso = format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z");
    let rfc5424 = |app: &str| format!("<27>1 {iso} node-1 {app} 811 - - mkdir /sys/fs/cgroup/memory/kubepods/pod{POD}: no space left on device");
    f.host().file("/var/log/syslog", format!("{bare}\n{}\n", rfc5424("myapp")));
    let run = check(&f, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let c = run.json();
    let incidents = c["node"]["logs"]["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    assert_eq!(incidents[0]["origin"], "no syslog tag: the program that wrote the line cannot be told");
    assert_eq!(incidents[1]["origin"], "syslog tag myapp: not kubelet, a container runtime, systemd or the kernel");
    assert!(incidents.iter().all(|i| i["trusted"] == false));
    // The same klog line in the kubelet's own file (a kubelet run without systemd) is the kubelet's.
    f.host().file("/var/log/kubelet.log", format!("{bare}\n"));
    let run = check(&f, &[]);
    assert_eq!(run.code, 4, "{run:#?}");
    let c = run.json();
    let own = c["node"]["logs"]["incidents"].as_array().unwrap().iter().find(|i| i["source"] == "/var/log/kubelet.log").cloned().unwrap();
    assert_eq!((&own["trusted"], &own["origin"]), (&serde_json::json!(true), &serde_json::json!("kubelet's own log file")));
    std::fs::remove_file(f.root().join("var/log/kubelet.log")).unwrap();
    f.host().file("/var/log/syslog", format!("{}\n", rfc5424("kubelet")));
    let run = check(&f, &[]);
    assert_eq!(run.code, 4, "{run:#?}");
    assert_eq!(run.json()["node"]["logs"]["incidents"][0]["origin"], "syslog tag kubelet");
}

/// journald: who sent an entry is what journald recorded (_SYSTEMD_UNIT, _COMM), never the
/// entry's own SYSLOG_IDENTIFIER; a stand-in journalctl plays the entries.
#[test]
fn journald_entries_are_judged_by_their_sender() {
    let f = cgleak_fixtures::debian_6_1_v2();
    std::fs::create_dir_all(f.root().join("var/log/journal")).unwrap();
    let bin = tempfile::tempdir().unwrap();
    let usec = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 120) * 1_000_000;
    let msg = format!("mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{POD}: no space left on device");
    let entry = |fields: &str| format!("{{\"__REALTIME_TIMESTAMP\":\"{usec}\",\"_HOSTNAME\":\"node-1\",\"_TRANSPORT\":\"stdout\",{fields},\"MESSAGE\":\"{msg}\"}}\n");
    let journalctl = |entries: &str| {
        let out = bin.path().join("entries.json");
        std::fs::write(&out, entries).unwrap();
        let p = bin.path().join("journalctl");
        std::fs::write(&p, format!("#!/bin/sh\ncat '{}'\n", out.display())).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    let run_check = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
        c.env("TZ", "UTC").env("PATH", format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default()));
        let root = f.root().to_str().unwrap().to_string();
        cgleak_cmd(c, &["--host-root", &root, "check", "--output", "json"])
    };
    // A program of its own unit that calls itself kubelet.
    journalctl(&entry(r#""_COMM":"myapp","SYSLOG_IDENTIFIER":"kubelet","_SYSTEMD_UNIT":"myapp.service","_SYSTEMD_CGROUP":"/system.slice/myapp.service""#));
    let run = run_check();
    assert_eq!(run.code, 0, "{run:#?}");
    let c = run.json();
    assert_eq!(c["node"]["logs"]["sources"], serde_json::json!(["journald"]), "{}", c["node"]);
    let inc = &c["node"]["logs"]["incidents"][0];
    assert_eq!(inc["trusted"], false, "{inc}");
    assert_eq!(inc["origin"], "journald: unit myapp.service (_COMM=myapp): not kubelet, a container runtime, systemd or the kernel");
    assert!(finding(&c, "untrusted_log_lines").is_some());
    // The kubelet's unit: exhaustion.
    journalctl(&entry(r#""_COMM":"kubelet","SYSLOG_IDENTIFIER":"kubelet","_SYSTEMD_UNIT":"kubelet.service","_SYSTEMD_CGROUP":"/system.slice/kubelet.service""#));
    let run = run_check();
    assert_eq!(run.code, 4, "{run:#?}");
    assert_eq!(run.json()["node"]["logs"]["incidents"][0]["origin"], "journald: _SYSTEMD_UNIT=kubelet.service");
    // A container's output relayed by dockerd's journald log driver, in docker.service.
    journalctl(&entry(r#""_COMM":"dockerd","_SYSTEMD_UNIT":"docker.service","CONTAINER_NAME":"web","CONTAINER_ID":"3f1e9a7c5b2d","SYSLOG_IDENTIFIER":"3f1e9a7c5b2d""#));
    let run = run_check();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.json()["node"]["logs"]["incidents"][0]["origin"].as_str().unwrap().starts_with("journald: output of container web"));
}

/// A tenant flooding syslog with the kubelet's words costs `check` no more than 100 kept
/// incidents: the rest are counted in a note, and the verdict stays the census's.
#[test]
fn a_flood_of_untrusted_lines_is_counted_not_kept() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let line = tagged_mkdir("myapp[99]");
    f.host().file("/var/log/messages", format!("{line}\n").repeat(150));
    let run = check(&f, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let c = run.json();
    assert_eq!(c["node"]["logs"]["incidents"].as_array().unwrap().len(), 100);
    assert_eq!(c["node"]["logs"]["notes"][0], "50 more untrusted incidents in the window were counted, not kept: at most 100 are, as they are never evidence");
    assert!(finding(&c, "untrusted_log_lines").unwrap()["summary"].as_str().unwrap().starts_with("100 log lines"));
}

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
    assert!(c["remedies"].as_array().unwrap().iter().any(|r| r["action"] == "reboot"), "{}", c["remedies"]);

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

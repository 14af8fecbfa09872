//! `cgleak agent` on fixture host roots: /metrics and /healthz over loopback, `promtool check
//! metrics`, the history file, SIGTERM, a real Prometheus server scraping it with the shipped
//! alert rules, and an API server that is down. promtool and prometheus come from Debian's
//! `prometheus` package; without them these tests fail, never pass by testing nothing.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent::{agent_command, free_port, get, scrape, stop, wait_for, Agent, Prometheus};
use common::fixture::Fixture;
use common::prom::{assert_promtool_accepts, has_series, sample};

fn spawn_agent(f: &Fixture, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    spawn_agent_every(f, state, "1s", extra, env)
}

fn spawn_agent_every(f: &Fixture, state: &Path, interval: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let port = free_port();
    let mut cmd = agent_command(f.root(), state, interval, &format!("127.0.0.1:{port}"), extra);
    Agent::spawn(cmd.envs(env.iter().copied()), port)
}

fn metrics_of(a: &Agent) -> String {
    wait_for("/metrics", Duration::from_secs(30), || scrape(a.port))
}

fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn history_lines(state: &Path) -> usize {
    fs::read_to_string(state.join("agent-history.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn agent_serves_metrics_on_6_12_v2() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent(&f, state.path(), &["--no-logs", "--history-capacity", "3"], &[]);
    let text = metrics_of(&a);
    assert_eq!(value(&text, "cgleak_memcg_live"), f.truth.live_memcgs as f64);
    assert_eq!(value(&text, "cgleak_memcg_dying"), f.truth.dying.unwrap() as f64);
    assert!(has_series(&text, "cgleak_memcg_headroom") && has_series(&text, "cgleak_sample_duration_seconds"), "{text}");
    for absent in ["cgleak_memcg_kmem_active", "cgleak_log_incidents_total"] {
        assert!(!has_series(&text, absent), "{absent} should be absent:\n{text}");
    }
    // From the first scrape, NaN until the history tells.
    assert!(text.contains("cgleak_memcg_exhaustion_forecast_seconds NaN\n"), "{text}");
    assert_promtool_accepts(&text);
    assert_eq!(get(a.port, "/healthz").map(|(c, b)| (c, b.trim().to_string())), Some((200, "ok".into())));
    assert_eq!(get(a.port, "/nope").map(|(c, _)| c), Some(404));

    // The history grows, and stays within twice its capacity on disk.
    wait_for("history", Duration::from_secs(20), || (history_lines(state.path()) >= 3).then(String::new));
    std::thread::sleep(Duration::from_secs(5));
    let n = history_lines(state.path());
    assert!((1..=6).contains(&n), "{n} lines for a capacity of 3");
    stop(a);
}

#[test]
fn agent_on_el7_leaves_unknowable_values_out() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent(&f, state.path(), &["--no-logs"], &[]);
    let text = metrics_of(&a);
    assert!(!has_series(&text, "cgleak_memcg_dying") && !has_series(&text, "cgleak_memcg_headroom"), "{text}");
    assert_eq!(value(&text, "cgleak_memcg_kmem_active"), f.truth.kmem_active.unwrap() as f64);
    // The lower bound (live memcgs plus the deleted ones their slab caches show) and its evidence.
    assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"lower_bound\"} 1\n"), "{text}");
    let dead = value(&text, "cgleak_memcg_dead_slab_ids");
    assert!(dead > 0.0, "{text}");
    assert_eq!(value(&text, "cgleak_memcg_ids_in_use"), f.truth.live_memcgs as f64 + dead, "{text}");
    // No --reclaim-every: no reclaim metrics.
    assert!(!text.contains("cgleak_reclaim_"), "{text}");
    assert_promtool_accepts(&text);
    stop(a);
}

#[test]
fn agent_tolerates_a_missing_unwritable_state_dir() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, "").unwrap();
    // A directory under a regular file can never be created.
    let a = spawn_agent(&f, &file.join("state"), &["--no-logs"], &[]);
    metrics_of(&a);
    let err = stop(a);
    assert!(err.contains("history kept in memory only"), "{err}");
}

#[test]
fn agent_keeps_serving_when_the_api_server_is_down() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let closed = free_port();
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{closed}\n    insecure-skip-tls-verify: true\n\
contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let a = spawn_agent(
        &f,
        &dir.path().join("state"),
        &["--no-logs", "--kubernetes", "--node-name", "node-1", "--taint", "--taint-headroom-below", "100"],
        &[("KUBECONFIG", kc)],
    );
    let first = metrics_of(&a);
    assert!(has_series(&first, "cgleak_memcg_live"), "{first}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, _) = get(a.port, "/metrics").expect("still serving");
    assert_eq!(code, 200);
    assert_eq!(get(a.port, "/healthz").map(|(c, _)| c), Some(200));
    let err = stop(a);
    // The reporter did try, and said why it failed.
    assert!(err.contains("cgleak: kubernetes: "), "{err}");
}

fn deploy_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/cgleak-alerts.yml")
}

#[test]
fn agent_is_scraped_by_a_real_prometheus() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let a = spawn_agent(&f, &dir.path().join("state"), &["--no-logs"], &[]);
    metrics_of(&a);
    let rules = deploy_rules();
    assert!(rules.is_file(), "{}", rules.display());
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: cgleak\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        rules.display(),
        a.port
    ));
    let result = std::panic::catch_unwind(|| {
        let want = format!("\"{}\"]", f.truth.live_memcgs);
        wait_for("prometheus to scrape cgleak_memcg_live", Duration::from_secs(60), || prom.query("cgleak_memcg_live").filter(|b| b.contains(&want)));
        let rules_body = get(prom.port, "/api/v1/rules").map(|(_, b)| b).unwrap_or_default();
        assert!(rules_body.contains("cgleak-alerts.yml") && rules_body.contains("\"type\":\"alerting\""), "{rules_body}");
    });
    drop(prom);
    stop(a);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn shipped_alert_rules_pass_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    let tests: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("test"))
        .collect();
    assert!(!tests.is_empty(), "no rule tests in {}", dir.display());
    for t in tests {
        let out = Command::new("promtool").arg("test").arg("rules").arg(&t).current_dir(&dir).output().expect("promtool");
        assert!(out.status.success(), "promtool test rules {}: {}{}", t.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

/// A syslog line (BSD time, read as UTC: the agent runs with TZ=UTC) of kubelet failing to
/// create a pod's memory cgroup with ENOSPC, `ago` seconds ago.
fn kubelet_line(ago: u64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const POD: &str = "5b2f0a4c-1d3e-4f6a-8b9c-0d1e2f3a4b5c";
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - ago;
    let (_, mo, d) = cgleak_readers::logs::clock::civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    let uid = POD.replace('-', "_");
    format!(
        "{} {d:2} {h:02}:{mi:02}:{se:02} node-1 kubelet[811]: E{mo:02}{d:02} {h:02}:{mi:02}:{se:02}.123456     811 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"CreatePodSandbox\\\" for \\\"web_default({POD})\\\" with CreatePodSandboxError: \\\"rpc error: code = Unknown desc = container create failed: mkdir /sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice: no space left on device\\\"\" podUID=\"{POD}\"",
        MONTHS[mo as usize - 1]
    )
}

/// The agent follows its logs: with a census once an hour, a line appended to the syslog
/// and one in the file that replaced it at rotation can only be seen by following it.
/// Lines older than the agent's hour are left out, and each incident is counted once.
#[test]
fn agent_follows_logs_across_rotation_and_counts_each_incident_once() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let syslog = f.root().join("var/log/syslog");
    fs::create_dir_all(syslog.parent().unwrap()).unwrap();
    fs::write(&syslog, format!("{}\n{}\n", kubelet_line(7200), kubelet_line(120))).unwrap();
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent_every(&f, state.path(), "1h", &[], &[("TZ", "UTC")]);
    let series = "cgleak_log_incidents_total{kind=\"memcg_create_failed\",component=\"kubelet\",errno=\"ENOSPC\"}";
    let count_is = |n: u32| {
        let want = format!("{series} {n}\n");
        move || get(a.port, "/metrics").map(|(_, b)| b).filter(|b| b.contains(&want))
    };
    // Two hours ago is outside the window: only the line of two minutes ago counts.
    let text = wait_for("the incident of two minutes ago", Duration::from_secs(30), count_is(1));
    assert_promtool_accepts(&text);
    fs::OpenOptions::new().append(true).open(&syslog).unwrap().write_all(format!("{}\n", kubelet_line(0)).as_bytes()).unwrap();
    wait_for("the appended incident", Duration::from_secs(30), count_is(2));
    // Rotation: the file moves away and a new one takes its name.
    fs::rename(&syslog, syslog.with_file_name("syslog.1")).unwrap();
    fs::write(&syslog, format!("{}\n", kubelet_line(0).replace("kubelet[811]", "kubelet[812]"))).unwrap();
    wait_for("the incident in the rotated-in file", Duration::from_secs(30), count_is(3));
    std::thread::sleep(Duration::from_secs(2));
    let text = get(a.port, "/metrics").unwrap().1;
    assert!(text.contains(&format!("{series} 3\n")), "counted once each:\n{text}");
    let err = stop(a);
    assert!(err.contains("following logs:") && err.contains("/var/log/syslog"), "{err}");
}

/// Sources that end or are not there yet: a stand-in journalctl that prints one recent
/// entry and exits is started again (after the 5 s backoff) and its entry still counted
/// once; a syslog file that appears while the agent runs is followed from then on.
#[test]
fn agent_restarts_ended_sources_and_picks_up_new_files() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::create_dir_all(f.root().join("var/log/journal")).unwrap();
    let tools = tempfile::tempdir().unwrap();
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    let line = kubelet_line(30);
    let message = line.split_once("kubelet[811]: ").unwrap().1;
    let entry = serde_json::json!({
        "__REALTIME_TIMESTAMP": now_us.to_string(), "_HOSTNAME": "node-1", "SYSLOG_IDENTIFIER": "kubelet",
        "_COMM": "kubelet", "_PID": "811", "_SYSTEMD_UNIT": "kubelet.service", "MESSAGE": message,
    });
    let (entry_file, runs) = (tools.path().join("entry.json"), tools.path().join("runs"));
    fs::write(&entry_file, format!("{entry}\n")).unwrap();
    let journalctl = tools.path().join("journalctl");
    fs::write(&journalctl, format!("#!/bin/sh\necho \"$*\" >> '{}'\ncat '{}'\n", runs.display(), entry_file.display())).unwrap();
    fs::set_permissions(&journalctl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default());
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent_every(&f, state.path(), "1h", &[], &[("TZ", "UTC"), ("PATH", &path)]);
    let series = "cgleak_log_incidents_total{kind=\"memcg_create_failed\",component=\"kubelet\",errno=\"ENOSPC\"}";
    let count_is = |n: u32| {
        let want = format!("{series} {n}\n");
        move || get(a.port, "/metrics").map(|(_, b)| b).filter(|b| b.contains(&want))
    };
    wait_for("the journald incident", Duration::from_secs(30), count_is(1));
    let started = |n: usize| move || fs::read_to_string(&runs).ok().filter(|t| t.lines().count() >= n);
    let args = wait_for("journalctl started again after it ended", Duration::from_secs(30), started(2));
    assert!(args.lines().all(|l| l.contains("--follow") && l.contains("--since=@")), "{args}");
    std::thread::sleep(Duration::from_secs(1));
    let text = get(a.port, "/metrics").unwrap().1;
    assert!(text.contains(&format!("{series} 1\n")), "the repeated entry is counted once:\n{text}");
    // A log file that was not there at start.
    fs::write(f.root().join("var/log/syslog"), format!("{}\n", kubelet_line(0))).unwrap();
    wait_for("the incident in the new syslog file", Duration::from_secs(30), count_is(2));
    let err = stop(a);
    assert!(err.contains("journald: ended; trying again in 5s"), "{err}");
}

// Slow and hostile clients, the connection limit, TLS and the token: tests/agent_http.rs.

/// A tenant's program writing the kubelet's words to syslog: the agent counts the line in
/// `cgleak_log_untrusted_incidents_total{kind,errno}` (no component label: the tag is the
/// tenant's choice), never in `cgleak_log_incidents_total`, which the alert reads.
#[test]
fn agent_counts_untrusted_lines_apart() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let syslog = f.root().join("var/log/syslog");
    fs::create_dir_all(syslog.parent().unwrap()).unwrap();
    let kubelet = kubelet_line(120);
    let tenant = kubelet_line(60).replace("node-1 kubelet[811]:", "node-1 myapp[99]:");
    fs::write(&syslog, format!("{kubelet}\n{tenant}\n{}\n", tenant.replace("myapp[99]", "kubelet-impostor[98]"))).unwrap();
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent_every(&f, state.path(), "1h", &[], &[("TZ", "UTC")]);
    let untrusted = "cgleak_log_untrusted_incidents_total{kind=\"memcg_create_failed\",errno=\"ENOSPC\"} 2\n";
    let text = wait_for("the untrusted lines counted", Duration::from_secs(30), || get(a.port, "/metrics").map(|(_, b)| b).filter(|b| b.contains(untrusted)));
    assert!(text.contains("cgleak_log_incidents_total{kind=\"memcg_create_failed\",component=\"kubelet\",errno=\"ENOSPC\"} 1\n"), "{text}");
    assert!(!text.contains("myapp") && !text.contains("impostor"), "{text}");
    // One series of a writer; besides it, the series at 0 of every kind (from the first scrape).
    let trusted_series = text.lines().filter(|l| l.starts_with("cgleak_log_incidents_total{") && !l.contains("component=\"none\"")).count();
    assert_eq!(trusted_series, 1, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("cgleak_log_incidents_total{") && l.contains("component=\"none\",errno=\"none\"} 0")).count(), 3, "{text}");
    assert_promtool_accepts(&text);
    stop(a);
}

//! `cgleak agent` on fixture host roots: /metrics and /healthz over loopback, `promtool check
//! metrics`, the history file, SIGTERM, a real Prometheus server scraping it with the shipped
//! alert rules, and an API server that is down. promtool and prometheus come from Debian's
//! `prometheus` package; without them these tests fail, never pass by testing nothing.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::Fixture;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The agent, killed (SIGKILL) on drop if a test failed before stopping it.
struct Agent {
    child: Option<Child>,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_agent(f: &Fixture, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    spawn_agent_every(f, state, "1s", extra, env)
}

fn spawn_agent_every(f: &Fixture, state: &Path, interval: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    cmd.arg("--host-root")
        .arg(f.root())
        .args(["agent", "--interval", interval, "--listen", &listen, "--state-dir"])
        .arg(state)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = {
        let _lock = cgleak_fixtures::exec_lock();
        cmd.spawn().expect("spawn cgleak agent")
    };
    Agent { child: Some(child), port }
}

/// (status code, body) of GET `path` on 127.0.0.1:`port`.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics_of(a: &Agent) -> String {
    wait_for("/metrics", Duration::from_secs(30), || get(a.port, "/metrics").filter(|(c, _)| *c == 200).map(|(_, b)| b))
}

fn has(text: &str, name: &str) -> bool {
    text.lines().any(|l| !l.starts_with('#') && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))))
}

fn value(text: &str, name: &str) -> f64 {
    let l = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    l.rsplit(' ').next().unwrap().parse().unwrap()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n---\n{text}");
}

/// SIGTERM, then the agent must exit 0 within 10 s.
fn stop(mut a: Agent) -> String {
    let mut child = a.child.take().unwrap();
    // SAFETY: kill(2) on our own child's pid, which it cannot outlive (not yet reaped).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(st.success(), "agent exit {st:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            return err;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("agent did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    assert!(has(&text, "cgleak_memcg_headroom") && has(&text, "cgleak_sample_duration_seconds"), "{text}");
    for absent in ["cgleak_memcg_kmem_active", "cgleak_log_incidents_total", "cgleak_memcg_exhaustion_forecast_seconds"] {
        assert!(!has(&text, absent), "{absent} should be absent:\n{text}");
    }
    promtool_check(&text);
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
    assert!(!has(&text, "cgleak_memcg_dying") && !has(&text, "cgleak_memcg_headroom"), "{text}");
    assert_eq!(value(&text, "cgleak_memcg_kmem_active"), f.truth.kmem_active.unwrap() as f64);
    promtool_check(&text);
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
    assert!(has(&first, "cgleak_memcg_live"), "{first}");
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
    let cfg = dir.path().join("prometheus.yml");
    fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: cgleak\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            rules.display(),
            a.port
        ),
    )
    .unwrap();
    let pport = free_port();
    let mut prom = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/prometheus (Debian package prometheus)");
    let result = std::panic::catch_unwind(|| {
        let want = format!("\"{}\"]", f.truth.live_memcgs);
        wait_for("prometheus to scrape cgleak_memcg_live", Duration::from_secs(60), || {
            get(pport, "/api/v1/query?query=cgleak_memcg_live").map(|(_, b)| b).filter(|b| b.contains(&want))
        });
        let rules_body = get(pport, "/api/v1/rules").map(|(_, b)| b).unwrap_or_default();
        assert!(rules_body.contains("cgleak-alerts.yml") && rules_body.contains("\"type\":\"alerting\""), "{rules_body}");
    });
    let _ = prom.kill();
    let _ = prom.wait();
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
    promtool_check(&text);
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

#[test]
fn slow_clients_are_bounded_and_timed_out() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let a = spawn_agent(&f, state.path(), &["--no-logs"], &[]);
    metrics_of(&a);
    // Clients that connect and never send a request.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(("127.0.0.1", a.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // Refused quickly (503) while they hold every slot, served again once they time out.
    wait_for("/metrics after idle clients", Duration::from_secs(15), || get(a.port, "/metrics").filter(|(c, _)| *c == 200).map(|(_, b)| b));
    assert!(start.elapsed() < Duration::from_secs(12), "{:?}", start.elapsed());
    drop(idle);
    stop(a);
}

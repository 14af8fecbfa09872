//! `cgleak agent` as the agent tests run it: on a loopback port with a state dir, scraped
//! over plain HTTP, stopped with SIGTERM (it must exit 0 within 10 s), killed on drop when a
//! test fails before stopping it.
//!
//! ```ignore
//! let port = free_port();
//! let a = Agent::spawn(&mut agent_command(f.root(), state, "1s", &format!("127.0.0.1:{port}"), &["--no-logs"]), port);
//! let text = scrape_until(&a, "a census", Duration::from_secs(30), |t| t.contains("cgleak_memcg_live "));
//! let stderr = stop(a);
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 now, for the agent to bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running agent, killed (SIGKILL) on drop if a test failed before stopping it.
pub struct Agent {
    child: Option<Child>,
    pub port: u16,
    /// A state dir of the agent's own, removed once the agent is gone.
    state: Option<tempfile::TempDir>,
}

impl Agent {
    /// Spawns `cmd` (see [`agent_command`]), listening on `port`.
    pub fn spawn(cmd: &mut Command, port: u16) -> Agent {
        let child = {
            let _lock = cgleak_fixtures::exec_lock();
            cmd.spawn().expect("spawn cgleak agent")
        };
        Agent { child: Some(child), port, state: None }
    }

    /// Keeps `state` until the agent is stopped or dropped.
    pub fn keeping(mut self, state: tempfile::TempDir) -> Agent {
        self.state = Some(state);
        self
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `cgleak --host-root HOST_ROOT agent --interval INTERVAL --listen LISTEN --state-dir STATE EXTRA`.
pub fn agent_command(host_root: &Path, state: &Path, interval: &str, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    agent_args(&mut cmd, host_root, state, interval, listen, extra);
    cmd
}

/// The flags of [`agent_command`] on `cmd` (the binary, or a wrapper that execs it), with
/// stdin and stdout null and stderr piped for [`stop`].
pub fn agent_args<'c>(cmd: &'c mut Command, host_root: &Path, state: &Path, interval: &str, listen: &str, extra: &[&str]) -> &'c mut Command {
    cmd.arg("--host-root")
        .arg(host_root)
        .args(["agent", "--interval", interval, "--listen", listen, "--state-dir"])
        .arg(state)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
}

/// SIGTERM, then the agent must exit 0 within 10 s, without a panic. Returns its stderr.
pub fn stop(mut a: Agent) -> String {
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
            let _ = child.wait();
            panic!("agent did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Calls `f` every 100 ms until it gives a value; fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (head, body) of GET `path` on 127.0.0.1:`port`; None when there is no answer.
pub fn get_with_head(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// (status code, body) of GET `path` on 127.0.0.1:`port`; None when there is no answer.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let (head, body) = get_with_head(port, path)?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

/// A real Prometheus (Debian's `prometheus` package) on a free loopback port, with the
/// `global`, `rule_files` and `scrape_configs` YAML given; killed on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(config_yaml: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let port = free_port();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/bin/prometheus (Debian package prometheus)");
        Prometheus { child, port, _dir: dir }
    }

    /// The body of the instant query `q` (`/api/v1/query`), None when it does not answer.
    pub fn query(&self, q: &str) -> Option<String> {
        let enc: String = q.bytes().map(|b| if b.is_ascii_alphanumeric() || b"_.-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        get(self.port, &format!("/api/v1/query?query={enc}")).map(|(_, b)| b)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of GET /metrics when it answers 200.
pub fn scrape(port: u16) -> Option<String> {
    get(port, "/metrics").filter(|(c, _)| *c == 200).map(|(_, b)| b)
}

/// Scrapes every 200 ms until `f` accepts the exposition; fails after `timeout`, showing the last scrape.
pub fn scrape_until(a: &Agent, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(text) = scrape(a.port) {
            if f(&text) {
                return text;
            }
            last = text;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}; last scrape:\n{last}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

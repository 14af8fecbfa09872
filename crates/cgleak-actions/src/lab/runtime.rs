//! The OCI runtime (runc or crun) as the lab drives it.
//!
//! Every call names the lab's own state directory (`--root`), so the lab never sees
//! or touches the host's other containers; runs in a process group of its own, so a
//! Ctrl-C at the terminal reaches cgleak (which then tears down) and not a runtime
//! half-way through creating a container; and is killed after [`CALL_TIMEOUT`].

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// How long one runtime call may take before the lab kills it (it started it).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed `list` is tried again this many times.
const LIST_RETRIES: u32 = 3;

/// Which OCI runtime runs the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Runc,
    Crun,
}

impl RuntimeKind {
    pub fn program(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }
}

/// A runtime binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub path: PathBuf,
}

/// Where Debian and others install runtimes when PATH (root's sbin, say) misses them.
const RUNTIME_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

impl Runtime {
    /// The runtime's program on PATH, else in the usual bin and sbin directories.
    pub fn find(kind: RuntimeKind) -> Option<Runtime> {
        find_program(kind.program(), RUNTIME_DIRS).map(|path| Runtime { kind, path })
    }
}

/// The first executable `name` on PATH, else in `dirs`.
pub fn find_program(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The runtime with the lab's state directory.
pub(crate) struct RuntimeCalls<'a> {
    pub runtime: &'a Runtime,
    /// `--root`: the runtime's state, inside the lab's state dir.
    pub root: &'a Path,
}

impl RuntimeCalls<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.runtime.path);
        c.arg("--root").arg(self.root).stdin(Stdio::null()).process_group(0);
        c
    }

    fn name(&self) -> &'static str {
        self.runtime.kind.program()
    }

    /// Start a runtime call.
    fn spawn(&self, command: &mut Command) -> Result<Child, String> {
        command.spawn().map_err(|e| format!("cannot start {}: {e}", self.runtime.path.display()))
    }

    /// `<runtime> <what>: <exit status>: <the end of its stderr>`.
    fn failure(&self, what: &str, status: ExitStatus, stderr: &str) -> String {
        format!("{} {what}: {status}: {}", self.name(), last_lines(stderr))
    }

    /// One call per item, all started at once, then waited for under one deadline;
    /// `failed` describes a call that exited unsuccessfully.
    fn all_at_once<T>(
        &self,
        items: &[T],
        start: impl Fn(&T) -> Result<Child, String>,
        failed: impl Fn(&T, Output) -> String,
    ) -> Vec<Result<(), String>> {
        let started: Vec<Result<Child, String>> = items.iter().map(start).collect();
        let deadline = Instant::now() + CALL_TIMEOUT;
        started
            .into_iter()
            .zip(items)
            .map(|(child, item)| {
                let out = wait_output(child?, deadline)?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(failed(item, out))
                }
            })
            .collect()
    }

    /// `run -d` each `(bundle, id)`, all at once, and wait for all. The container inherits
    /// the runtime's stdio, so stdout goes to /dev/null and stderr to `<bundle>/runtime.stderr`
    /// (a pipe would stay open as long as the container runs).
    pub fn run_detached(&self, containers: &[(PathBuf, String)]) -> Vec<Result<(), String>> {
        self.all_at_once(
            containers,
            |(bundle, id)| {
                let stderr = fs::File::create(bundle.join("runtime.stderr"))
                    .map_err(|e| format!("create {}: {e}", bundle.join("runtime.stderr").display()))?;
                self.spawn(
                    self.command()
                        .args(["run", "-d", "--bundle"])
                        .arg(bundle)
                        .arg(id)
                        .stdout(Stdio::null())
                        .stderr(stderr),
                )
            },
            |(bundle, id), out| {
                let stderr = fs::read_to_string(bundle.join("runtime.stderr")).unwrap_or_default();
                self.failure(&format!("run {id}"), out.status, &stderr)
            },
        )
    }

    /// `<runtime> <args...> <id> <tail...>` for each id, all at once; waits for all.
    fn each(&self, args: &[&str], ids: &[String], tail: &[&str]) -> Vec<Result<(), String>> {
        self.all_at_once(
            ids,
            |id| {
                self.spawn(
                    self.command().args(args).arg(id).args(tail).stdout(Stdio::null()).stderr(Stdio::piped()),
                )
            },
            |id, out| {
                let what = args.join(" ");
                self.failure(&format!("{what} {id}"), out.status, &String::from_utf8_lossy(&out.stderr))
            },
        )
    }

    /// `delete -f`: SIGKILL the container if it runs, then remove it and its cgroups.
    pub fn delete_force(&self, ids: &[String]) -> Vec<Result<(), String>> {
        self.each(&["delete", "-f"], ids, &[])
    }

    /// `kill -a <id> KILL`: every process of the container.
    pub fn kill_all(&self, ids: &[String]) -> Vec<Result<(), String>> {
        self.each(&["kill", "-a"], ids, &["KILL"])
    }

    /// The ids the runtime knows in the lab's state dir (`list -q`); none before its first
    /// container. Never called on a missing --root: `runc list` would create it.
    pub fn list(&self) -> Result<Vec<String>, String> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        // runc 1.1 fails the whole list when a container is deleted while it lists (measured).
        let mut result = self.list_once();
        for _ in 0..LIST_RETRIES {
            if result.is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
            result = self.list_once();
        }
        result
    }

    fn list_once(&self) -> Result<Vec<String>, String> {
        let child = self.spawn(self.command().args(["list", "-q"]).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
        let out = wait_output(child, Instant::now() + CALL_TIMEOUT)?;
        if !out.status.success() {
            return Err(self.failure("list", out.status, &String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// Wait for `child` and collect its output until `deadline`; past it, SIGKILL it (a
/// process the lab started: not yet reaped, so its pid is still its own).
fn wait_output(child: Child, deadline: Instant) -> Result<Output, String> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let timeout = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("waiting for pid {pid}: {e}")),
        Err(_) => {
            if let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            // Reaped by the waiting thread once it is dead.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(format!("pid {pid} did not finish in time and was killed"))
        }
    }
}

/// The last few lines of a runtime's stderr: its error is at the end.
fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no output".to_string()
    } else {
        tail.join(" / ")
    }
}

/// What one container runs and where.
pub(crate) struct ContainerSpec<'a> {
    /// The shared read-only busybox root (an absolute path: bundles hold no rootfs of their own).
    pub rootfs: &'a Path,
    /// Bind-mounted read-write at /data: a directory on a disk filesystem.
    pub data: &'a Path,
    /// `linux.cgroupsPath`: `/<scratch>/kubepods/<qos>/pod<uid>/<id>`.
    pub cgroups_path: &'a str,
    pub hostname: &'a str,
    pub page_cache_mib: u32,
}

/// The workload: write `mib` MiB through the page cache (charged to the container's
/// memcg, and still charged after the container's cgroup is deleted: that is what
/// makes it dying, docs/kernel-facts.md section 4), then sleep until killed.
pub(crate) fn workload_script(mib: u32) -> String {
    let sleep = "exec sleep 2147483647";
    if mib == 0 {
        sleep.to_string()
    } else {
        format!("dd if=/dev/zero of=/data/page-cache bs=1048576 count={mib} 2>/dev/null; {sleep}")
    }
}

/// An OCI runtime config (runtime-spec 1.0) for one container, as `runc spec` writes
/// it less the terminal, /sys and devpts: a busybox root, no network use.
pub(crate) fn oci_config(spec: &ContainerSpec<'_>) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/sh", "-c", workload_script(spec.page_cache_mib)],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
            "noNewPrivileges": true
        },
        "root": { "path": spec.rootfs.display().to_string(), "readonly": true },
        "hostname": spec.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/data", "type": "bind", "source": spec.data.display().to_string(), "options": ["rbind", "rw"] }
        ],
        "linux": {
            "cgroupsPath": spec.cgroups_path,
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            // Host network namespace: the workload opens no socket, and a netns per
            // container would only add the kernel's slow netns teardown to every churn.
            "namespaces": [ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" } ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Write `<bundle>/config.json`.
pub(crate) fn write_bundle(bundle: &Path, spec: &ContainerSpec<'_>) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(&oci_config(spec)).map_err(io::Error::other)?;
    fs::write(bundle.join("config.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_puts_the_container_in_the_kubelet_layout_with_a_data_mount() {
        let spec = ContainerSpec {
            rootfs: Path::new("/run/cgleak-lab-1/rootfs"),
            data: Path::new("/run/cgleak-lab-1/data/uid/cid"),
            cgroups_path: "/cgleak-lab-1/kubepods/burstable/poduid/cid",
            hostname: "lab-uid",
            page_cache_mib: 4,
        };
        let c = oci_config(&spec);
        assert_eq!(c["linux"]["cgroupsPath"], "/cgleak-lab-1/kubepods/burstable/poduid/cid");
        assert_eq!(c["root"], json!({"path": "/run/cgleak-lab-1/rootfs", "readonly": true}));
        let data = c["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["source"], "/run/cgleak-lab-1/data/uid/cid");
        assert_eq!(data["options"], json!(["rbind", "rw"]));
        assert_eq!(
            c["process"]["args"][2],
            "dd if=/dev/zero of=/data/page-cache bs=1048576 count=4 2>/dev/null; exec sleep 2147483647"
        );
        assert_eq!(c["process"]["terminal"], false);
        let ns: Vec<&str> =
            c["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(!ns.contains(&"network") && ns.contains(&"pid") && ns.contains(&"mount"), "{ns:?}");
        // One line per key: the test runtime reads cgroupsPath with sed.
        let text = String::from_utf8(serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == "\"cgroupsPath\": \"/cgleak-lab-1/kubepods/burstable/poduid/cid\","),
            "{text}"
        );
    }

    #[test]
    fn no_page_cache_means_just_sleep() {
        assert_eq!(workload_script(0), "exec sleep 2147483647");
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\n\nb\nc\nd\n"), "b / c / d");
        assert_eq!(last_lines("  \n"), "no output");
    }

    #[test]
    fn calls_time_out_and_kill_what_they_started() {
        let child = Command::new("sleep").arg("30").stdout(Stdio::null()).spawn().unwrap();
        let t = Instant::now();
        let e = wait_output(child, Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("was killed"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

//! Real runc containers on a busybox root for the real-kernel tests, in the kubelet's
//! cgroupfs layout under a test's scratch parent. runc runs with a state directory of
//! the test's own (`--root`), so only the test's containers are ever listed, killed or
//! deleted. [`PodFleet`] deletes its containers on drop, before its scratch parent is
//! removed from every hierarchy.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::kernel::{assert_executable, describe, find_program, ScratchCgroup};

/// runc and busybox, asserted present (the tests never pass by skipping).
pub fn tools() -> (PathBuf, PathBuf) {
    let runc = find_program("runc", &["/usr/sbin/runc"]).unwrap_or_else(|| panic!("this test runs containers: runc is neither on PATH nor at /usr/sbin/runc"));
    assert_executable(&runc, "the container test (runc)");
    let busybox = PathBuf::from("/bin/busybox");
    assert_executable(&busybox, "the containers' root filesystem (busybox-static)");
    (runc, busybox)
}

/// A read-only busybox root with `sh`, `sleep` and `true`.
pub fn make_rootfs(busybox: &Path, rootfs: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
    for applet in ["sh", "sleep", "true"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// A bundle whose container runs `args` in cgroup `cgroups_path` (optionally with a memory limit).
pub fn make_bundle(runc: &Path, rootfs: &Path, bundle: &Path, cgroups_path: &str, args: &[&str], memory_limit: Option<u64>) {
    fs::create_dir_all(bundle).unwrap();
    let out = Command::new(runc).arg("spec").current_dir(bundle).stdin(Stdio::null()).output().expect("running runc spec");
    assert!(out.status.success(), "runc spec: {}", describe(&out));
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).expect("runc spec wrote JSON");
    config["root"] = json!({ "path": rootfs.display().to_string(), "readonly": true });
    config["process"]["args"] = json!(args);
    config["process"]["terminal"] = json!(false);
    config["linux"]["cgroupsPath"] = json!(cgroups_path);
    // The host's network namespace: no socket is opened, and netns teardown is slow.
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    if let Some(limit) = memory_limit {
        config["linux"]["resources"]["memory"] = json!({ "limit": limit });
    }
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// A runc with a state directory of the test's own.
#[derive(Clone)]
pub struct Runc {
    pub program: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--root").arg(&self.root).stdin(Stdio::null());
        c
    }

    /// `runc <args> <id>`; must succeed.
    pub fn run(&self, args: &[&str], id: &str) -> Output {
        let out = self.cmd().args(args).arg(id).output().expect("running runc");
        assert!(out.status.success(), "runc {args:?} {id}: {}", describe(&out));
        out
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.cmd().args(["state", id]).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.state(id)?["status"].as_str().map(str::to_string)
    }

    /// Start every `(bundle, id)` detached, all at once; each must come up running.
    pub fn start_all(&self, containers: &[(PathBuf, String)]) {
        let children: Vec<(Child, &String, PathBuf)> = containers
            .iter()
            .map(|(bundle, id)| {
                let err = bundle.join("runc.stderr");
                let child = self
                    .cmd()
                    .args(["run", "-d", "--bundle"])
                    .arg(bundle)
                    .arg(id)
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(&err).unwrap())
                    .spawn()
                    .expect("spawn runc run");
                (child, id, err)
            })
            .collect();
        for (mut c, id, err) in children {
            let st = c.wait().unwrap();
            assert!(st.success(), "runc run -d {id}: {st}: {}", fs::read_to_string(&err).unwrap_or_default());
        }
        for (_, id) in containers {
            assert_eq!(self.status(id).as_deref(), Some("running"), "container {id}");
        }
    }

    /// `runc kill <id> KILL`; must succeed.
    pub fn kill(&self, id: &str) {
        let out = self.cmd().args(["kill", id, "KILL"]).output().expect("running runc kill");
        assert!(out.status.success(), "runc kill {id} KILL: {}", describe(&out));
    }
}

/// One container of a [`PodFleet`].
#[derive(Debug, Clone)]
pub struct FleetContainer {
    pub id: String,
    /// The container cgroup relative to the hierarchy root, leading `/`.
    pub cgroups_path: String,
    pub pid: u32,
    pub limit: u64,
}

/// Pods of real containers: `<scratch>/kubepods/<qos>/pod<uid>/<cid>` (guaranteed pods
/// directly under kubepods), each pod cgroup with a memory limit of its own, each
/// container with `container_limit`. Containers are deleted on drop, then the scratch
/// parent goes.
pub struct PodFleet {
    pub runc: Runc,
    pub containers: Vec<FleetContainer>,
    pub pod_dirs: Vec<PathBuf>,
    pub work: tempfile::TempDir,
    // Dropped last: after the containers.
    pub scratch: ScratchCgroup,
}

impl PodFleet {
    /// `pods` pods of `per_pod` containers running `args` (sleep by default).
    pub fn start(what: &str, pods: usize, per_pod: usize, args: &[&str]) -> PodFleet {
        let (runc_program, busybox) = tools();
        let scratch = ScratchCgroup::create_in_memory(what);
        let work = tempfile::Builder::new().prefix("cgleak-test-fleet-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let runc = Runc { program: runc_program, root: work.path().join("runc-state") };
        let rootfs = work.path().join("rootfs");
        make_rootfs(&busybox, &rootfs);
        let mem = scratch.path().to_path_buf();
        for qos in ["burstable", "besteffort"] {
            fs::create_dir_all(mem.join("kubepods").join(qos)).unwrap();
        }
        let mut specs = Vec::new();
        let mut containers = Vec::new();
        let mut pod_dirs = Vec::new();
        for p in 0..pods {
            let qos = ["burstable", "besteffort", ""][p % 3];
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), p);
            let pod_rel = if qos.is_empty() { format!("kubepods/pod{uid}") } else { format!("kubepods/{qos}/pod{uid}") };
            let pod_dir = mem.join(&pod_rel);
            fs::create_dir(&pod_dir).unwrap();
            let pod_limit = (256u64 + p as u64) << 20;
            fs::write(pod_dir.join("memory.limit_in_bytes"), pod_limit.to_string()).unwrap();
            pod_dirs.push(pod_dir);
            for c in 0..per_pod {
                let id = format!("{}-{p}-{c}", scratch.name);
                let cid = format!("{:064x}", (p * 1000 + c) as u128 + ((std::process::id() as u128) << 64));
                let cgroups_path = format!("/{}/{pod_rel}/{cid}", scratch.name);
                let limit = (64u64 + c as u64) << 20;
                let bundle = work.path().join("bundles").join(&id);
                make_bundle(&runc.program, &rootfs, &bundle, &cgroups_path, args, Some(limit));
                specs.push((bundle, id.clone()));
                containers.push(FleetContainer { id, cgroups_path, pid: 0, limit });
            }
        }
        let fleet = PodFleet { runc, containers, pod_dirs, work, scratch };
        // Started in batches: a burst of 100 runc processes on 2 cores takes minutes.
        for batch in specs.chunks(10) {
            fleet.runc.start_all(batch);
        }
        let mut fleet = fleet;
        for c in &mut fleet.containers {
            c.pid = fleet.runc.state(&c.id).and_then(|s| s["pid"].as_u64()).expect("runc state has the pid") as u32;
        }
        fleet
    }

    /// SIGKILL each container, wait until runc sees it stopped, delete it: all must work.
    pub fn kill_and_delete_all(&mut self) {
        for c in &self.containers {
            self.runc.kill(&c.id);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &self.containers {
            while self.runc.status(&c.id).as_deref() != Some("stopped") {
                assert!(Instant::now() < deadline, "container {} still {:?} after SIGKILL", c.id, self.runc.status(&c.id));
                std::thread::sleep(Duration::from_millis(20));
            }
            self.runc.run(&["delete"], &c.id);
        }
        self.containers.clear();
    }
}

impl Drop for PodFleet {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.runc.cmd().args(["delete", "--force", &c.id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

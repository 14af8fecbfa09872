//! runc: real runc containers in the kubelet's cgroupfs layout
//! (`linux.cgroupsPath` = `/<scratch>/kubepods/<qos>/pod<uid>/<container>`, facts §7),
//! counted by `cgleak status` and judged by `cgleak check`.
//!
//! Four pods: besteffort with two containers, burstable with one, guaranteed (directly
//! under kubepods) with one, and a besteffort pod whose only container was deleted and
//! whose UID the (fake) kubelet pods directory does not list: an orphan. The guaranteed
//! pod is missing from the kubelet directory too, but its container runs: not an orphan.
//!
//! runc creates the path in every mounted hierarchy; the scenario removes it from all of
//! them. Only the scratch name is ever created or removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use cgleak_readers::mountinfo::CgroupLayout;
use cgleak_readers::HostPaths;

use crate::cg;
use crate::cgleak::{self, u64_at};
use crate::report::Outcome;
use crate::{Ctx, Env};

struct Pod {
    uid: &'static str,
    /// "" for guaranteed (directly under kubepods).
    qos: &'static str,
    containers: u32,
    /// The kubelet pods directory lists it.
    known: bool,
    /// Its containers are deleted again after start.
    deleted: bool,
}

const PODS: [Pod; 4] = [
    Pod { uid: "0a1b2c3d-0000-4000-8000-000000000001", qos: "besteffort", containers: 2, known: true, deleted: false },
    Pod { uid: "0a1b2c3d-0000-4000-8000-000000000002", qos: "burstable", containers: 1, known: true, deleted: false },
    Pod { uid: "0a1b2c3d-0000-4000-8000-000000000003", qos: "", containers: 1, known: false, deleted: false },
    Pod { uid: "0a1b2c3d-0000-4000-8000-000000000004", qos: "besteffort", containers: 1, known: false, deleted: true },
];

/// Kills and deletes the containers, then removes the scratch tree from every hierarchy.
pub(super) struct Cleanup {
    runc: PathBuf,
    pub state: PathBuf,
    pub containers: Vec<String>,
    scratch: String,
    hierarchies: Vec<PathBuf>,
    done: bool,
}

impl Cleanup {
    /// Containers with runc state in `state`, cgroups under `/<scratch>` in every hierarchy.
    pub fn new(ctx: &Ctx, state: &Path, scratch: &str) -> Result<Cleanup> {
        fs::create_dir_all(state)?;
        let hierarchies: Vec<PathBuf> = CgroupLayout::discover(&HostPaths::new("/"))?.all().map(|m| m.local.clone()).collect();
        Ok(Cleanup { runc: ctx.runc.clone(), state: state.to_path_buf(), containers: Vec::new(), scratch: scratch.to_string(), hierarchies, done: false })
    }

    pub fn runc(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.runc).arg("--root").arg(&self.state).args(args).stdin(Stdio::null()).output()
    }

    /// `runc run -d` container `id` in `cgroups_path` (with a memory limit if given),
    /// its bundle under `work/bundles`; recorded for cleanup before it is known to run.
    pub fn start(&mut self, ctx: &Ctx, work: &Path, rootfs: &Path, id: &str, cgroups_path: &str, limit: Option<u64>) -> Result<()> {
        let bundle = work.join("bundles").join(id);
        fs::create_dir_all(&bundle)?;
        fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&oci_config(rootfs, cgroups_path, limit))?)?;
        let mut args = vec!["run", "-d"];
        // The guest's root is the initramfs, which pivot_root(2) cannot leave.
        if ctx.env == Env::Guest {
            args.push("--no-pivot");
        }
        // A file, not a pipe: the detached container inherits runc's stdio and keeps it open.
        let log = bundle.join("runc.log");
        let st = Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state)
            .args(&args)
            .arg("--bundle")
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(bundle.join("runc.err"))?)
            .status()
            .context("run runc")?;
        self.containers.push(id.to_string());
        if !st.success() {
            let err = fs::read_to_string(bundle.join("runc.err")).unwrap_or_default();
            bail!("runc run {id} (cgroupsPath {cgroups_path}): {}", err.trim());
        }
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        let _ = self.runc(&["kill", id, "KILL"]);
        // delete -f kills what is left and waits for it.
        let out = self.runc(&["delete", "-f", id])?;
        if !out.status.success() {
            bail!("runc delete -f {id}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Delete every container and remove the scratch tree; what could not be is returned.
    pub fn run(&mut self) -> Vec<String> {
        self.done = true;
        let mut left = Vec::new();
        for id in self.containers.clone() {
            if let Err(e) = self.delete(&id) {
                left.push(format!("{e:#}"));
            }
        }
        for h in &self.hierarchies {
            let p = h.join(&self.scratch);
            if p.exists() {
                left.extend(cg::remove_tree(&p));
            }
        }
        left
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.done {
            let left = self.run();
            if !left.is_empty() {
                eprintln!("cgleak-guest: runc cleanup left {left:?}");
            }
        }
    }
}

/// runc's version line, or a failed check in `o` when it does not run here.
pub(super) fn runc_version(ctx: &Ctx, o: &mut Outcome) -> Option<String> {
    match Command::new(&ctx.runc).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let v = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
            o.measure("runc", v.clone());
            Some(v)
        }
        _ => {
            o.that(&format!("runc ({}) runs here", ctx.runc.display()), false, "not found or not runnable");
            None
        }
    }
}

/// A read-only busybox root filesystem under `work`.
pub(super) fn make_rootfs(ctx: &Ctx, work: &Path) -> Result<PathBuf> {
    let busybox = ctx.busybox.clone().context("--busybox (a static busybox for the container root) is needed")?;
    let rootfs = work.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy(&busybox, rootfs.join("bin/busybox")).with_context(|| format!("copy {}", busybox.display()))?;
    Ok(rootfs)
}

/// Run a runc scenario `f(ctx, o, work dir, pid)` in `<data dir>/cgleak-<what>-<pid>`,
/// removed afterwards; a failed check instead when runc does not run here.
pub(super) fn with_runc(ctx: &Ctx, o: &mut Outcome, what: &str, f: fn(&Ctx, &mut Outcome, &Path, u32) -> Result<()>) -> Result<()> {
    if runc_version(ctx, o).is_none() {
        return Ok(());
    }
    let pid = std::process::id();
    let work = ctx.data_dir.join(format!("cgleak-{what}-{pid}"));
    let r = f(ctx, o, &work, pid);
    let _ = fs::remove_dir_all(&work);
    r
}

pub fn run(ctx: &Ctx, o: &mut Outcome) -> Result<()> {
    with_runc(ctx, o, "runc", containers)
}

fn containers(ctx: &Ctx, o: &mut Outcome, work: &Path, pid: u32) -> Result<()> {
    let guest = ctx.env == Env::Guest;
    let rootfs = make_rootfs(ctx, work)?;
    let kubelet = work.join("kubelet");
    for p in PODS.iter().filter(|p| p.known) {
        fs::create_dir_all(kubelet.join("pods").join(p.uid))?;
    }
    let scratch = format!("cgleak-test-{pid}-runc");
    let mut cleanup = Cleanup::new(ctx, &work.join("state"), &scratch)?;

    let kubelet_arg = kubelet.display().to_string();
    let status = |o: &mut Outcome| -> Result<Value> {
        let r = cgleak::run(&ctx.cgleak, &["--kubelet-root-dir", &kubelet_arg, "status"])?;
        o.that("status exit code 0", r.code == 0, r.stderr.clone());
        Ok(r.json)
    };
    let base = status(o)?;
    let base_live = u64_at(&base, "/memcg/live").unwrap_or(0);

    let mut expected_dirs = 2u64; // scratch, kubepods
    let mut qos_dirs = std::collections::BTreeSet::new();
    for (pi, pod) in PODS.iter().enumerate() {
        if !pod.qos.is_empty() {
            qos_dirs.insert(pod.qos);
        }
        expected_dirs += 1;
        for c in 0..pod.containers {
            let id = format!("cgleak-{pid}-p{pi}c{c}");
            let mut path = format!("/{scratch}/kubepods");
            if !pod.qos.is_empty() {
                path.push_str(&format!("/{}", pod.qos));
            }
            path.push_str(&format!("/pod{}/{id}", pod.uid));
            cleanup.start(ctx, work, &rootfs, &id, &path, None)?;
            if !pod.deleted {
                expected_dirs += 1;
            }
        }
        if pod.deleted {
            for c in 0..pod.containers {
                let id = format!("cgleak-{pid}-p{pi}c{c}");
                cleanup.delete(&id)?;
                cleanup.containers.retain(|x| *x != id);
            }
        }
    }
    expected_dirs += qos_dirs.len() as u64;

    let st = status(o)?;
    let kp = st.pointer("/kubepods").cloned().unwrap_or(Value::Null);
    o.measure("kubepods", kp.clone());
    let roots: Vec<String> = kp["roots"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    let ours = roots.iter().any(|r| r.ends_with(&format!("/{scratch}/kubepods")));
    o.that("our kubepods root is found", ours, json!(roots));
    let alone = roots.len() == 1;
    if !alone {
        o.measure("note", "other kubepods roots exist on this host: only lower bounds are checked");
    }
    let cmp = |o: &mut Outcome, what: &str, want: u64, got: Option<u64>| {
        if alone {
            o.eq(what, Some(want), got);
        } else {
            o.that(&format!("{what} >= {want}"), got.is_some_and(|g| g >= want), got);
        }
    };
    cmp(o, "pods", 4, kp["pods"].as_u64());
    cmp(o, "containers (running ones; the orphan's was deleted)", 4, kp["containers"].as_u64());
    cmp(o, "besteffort pods", 2, kp.pointer("/by_qos/besteffort/pods").and_then(Value::as_u64));
    cmp(o, "besteffort containers", 2, kp.pointer("/by_qos/besteffort/containers").and_then(Value::as_u64));
    cmp(o, "burstable pods", 1, kp.pointer("/by_qos/burstable/pods").and_then(Value::as_u64));
    cmp(o, "guaranteed pods", 1, kp.pointer("/by_qos/guaranteed/pods").and_then(Value::as_u64));
    cmp(o, "orphans", 1, kp["orphans"].as_u64());
    o.eq("driver", "cgroupfs".to_string(), kp["driver"].as_str().unwrap_or("").to_string());
    let orphan_uids: Vec<&str> = kp["orphan_pods"].as_array().map(|a| a.iter().filter_map(|p| p["uid"].as_str()).collect()).unwrap_or_default();
    o.that("the deleted pod is the orphan", orphan_uids.contains(&PODS[3].uid), json!(orphan_uids));
    o.that("the guaranteed pod with a running container is not", !orphan_uids.contains(&PODS[2].uid), json!(orphan_uids));
    let live = u64_at(&st, "/memcg/live").unwrap_or(0);
    o.measure("memcgs_made_by_runc", expected_dirs);
    if guest {
        o.eq("live rose by the cgroups runc made", base_live + expected_dirs, live);
    }

    let check = cgleak::run(&ctx.cgleak, &["--kubelet-root-dir", &kubelet_arg, "check"])?;
    let orphan_finding = check.json["findings"].as_array().and_then(|f| f.iter().find(|f| f["id"] == "orphan_pod_cgroups")).cloned();
    o.measure("orphan_finding", orphan_finding.as_ref().map(|f| f["summary"].clone()).unwrap_or(Value::Null));
    o.that("check has the orphan_pod_cgroups finding", orphan_finding.is_some(), check.json["verdict"].clone());
    o.eq("check exit code (leaking)", 3, check.code);
    if guest {
        o.eq("check verdict", "leaking".to_string(), check.json["verdict"].as_str().unwrap_or("").to_string());
    }

    let left = cleanup.run();
    o.that("containers deleted and cgroups removed from every hierarchy", left.is_empty(), json!(left));
    Ok(())
}

fn oci_config(rootfs: &Path, cgroups_path: &str, limit: Option<u64>) -> Value {
    let resources = match limit {
        Some(l) => json!({ "memory": { "limit": l } }),
        None => json!({}),
    };
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/busybox", "sleep", "3600"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": rootfs.display().to_string(), "readonly": true },
        "hostname": "cgleak",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" } ]
        }
    })
}

//! migrate: `cgleak fix migrate` on a kubepods tree of real runc containers (cgroup v1).
//!
//! 20 burstable pods of 3 containers each, every container with a memory limit from its
//! OCI config (runc writes it) and a soft limit, every pod with a limit of its own. After
//! the migration every cgroup is a new one (another inode) at its old path with the same
//! settings, every container's tasks are back in it, no `cgleak-migrate.*` mirror is
//! left, and runc still manages the containers: `exec` into one, then `kill` and
//! `delete` of all of them. The reboot-free fix (facts §3 and §5).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};

use super::runc::{make_rootfs, with_runc, Cleanup};
use crate::cgleak;
use crate::report::Outcome;
use crate::Ctx;

const PODS: u32 = 20;
const CONTAINERS: u32 = 3;
const SETTINGS: [&str; 5] = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.swappiness", "memory.use_hierarchy"];

#[derive(Debug, PartialEq)]
struct Snap {
    ino: u64,
    tasks: Vec<u32>,
    settings: Vec<(String, String)>,
}

/// Every cgroup of the subtree `top`, by path relative to it.
fn snapshot(top: &Path) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        let read = |f: &str| fs::read_to_string(d.join(f)).map(|s| s.trim().to_string());
        let mut settings: Vec<(String, String)> = SETTINGS.iter().filter_map(|f| read(f).ok().map(|v| (f.to_string(), v))).collect();
        let oom = read("memory.oom_control").unwrap_or_default();
        settings.push(("oom_kill_disable".into(), oom.lines().find_map(|l| l.strip_prefix("oom_kill_disable ")).unwrap_or("?").to_string()));
        let mut tasks: Vec<u32> = read("tasks").unwrap_or_default().split_whitespace().filter_map(|t| t.parse().ok()).collect();
        tasks.sort_unstable();
        let ino = fs::metadata(&d).map(|m| m.ino()).unwrap_or(0);
        out.insert(d.strip_prefix(top).unwrap_or(&d).to_path_buf(), Snap { ino, tasks, settings });
    }
    out
}

pub fn run(ctx: &Ctx, o: &mut Outcome) -> Result<()> {
    with_runc(ctx, o, "migrate", migrate)
}

fn migrate(ctx: &Ctx, o: &mut Outcome, work: &Path, pid: u32) -> Result<()> {
    let rootfs = make_rootfs(ctx, work)?;
    let scratch = format!("cgleak-test-{pid}-migrate");
    let mut cleanup = Cleanup::new(ctx, &work.join("state"), &scratch)?;
    let top = ctx.mem_root.join(&scratch).join("kubepods");
    let started = std::time::Instant::now();
    for p in 0..PODS {
        let pod = format!("burstable/pod0a1b2c3d-0000-4000-8000-{p:012}");
        for c in 0..CONTAINERS {
            let id = format!("cgleak-{pid}-p{p}c{c}");
            let limit = (64 + 16 * u64::from(c)) << 20;
            cleanup.start(ctx, work, &rootfs, &id, &format!("/{scratch}/kubepods/{pod}/{id}"), Some(limit))?;
            fs::write(top.join(&pod).join(&id).join("memory.soft_limit_in_bytes"), (32u64 << 20).to_string())?;
        }
        fs::write(top.join(&pod).join("memory.limit_in_bytes"), ((256 + u64::from(p)) << 20).to_string())?;
    }
    o.measure("containers_started", cleanup.containers.len());
    o.measure("start_seconds", (started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    let before = snapshot(&top);
    o.eq("cgroups in the tree (kubepods, burstable, 20 pods, 60 containers)", 2 + PODS as usize * (1 + CONTAINERS as usize), before.len());

    let state = work.join("fix-state");
    let rel = format!("{scratch}/kubepods");
    let r = cgleak::run(&ctx.cgleak, &["fix", "migrate", "--cgroup", &rel, "--apply", "--yes", "--state-dir", &state.display().to_string()])?;
    o.eq("fix migrate exit code", 0, r.code);
    if r.code != 0 {
        o.measure("stderr", r.stderr.clone());
    }
    let details = r.json.pointer("/result/details").cloned().unwrap_or(Value::Null);
    o.measure("migrate", json!({
        "total_ms": details["total_ms"], "max_away_ms": details["max_away_ms"],
        "threads_moved_out": details["threads_moved_out"], "threads_moved_back": details["threads_moved_back"],
    }));
    o.eq("outcome", "completed".to_string(), r.json.pointer("/result/outcome").and_then(Value::as_str).unwrap_or("").to_string());

    let after = snapshot(&top);
    let paths = |m: &BTreeMap<PathBuf, Snap>| m.keys().map(|k| k.display().to_string()).collect::<Vec<_>>();
    o.eq("the same cgroup paths", paths(&before), paths(&after));
    let mut same_inode = Vec::new();
    let mut settings_differ = Vec::new();
    let mut tasks_lost = Vec::new();
    for (rel, b) in &before {
        let Some(a) = after.get(rel) else { continue };
        if a.ino == b.ino {
            same_inode.push(rel.display().to_string());
        }
        if a.settings != b.settings {
            settings_differ.push(json!({ "cgroup": rel.display().to_string(), "before": format!("{:?}", b.settings), "after": format!("{:?}", a.settings) }));
        }
        if a.tasks != b.tasks {
            tasks_lost.push(json!({ "cgroup": rel.display().to_string(), "before": b.tasks, "after": a.tasks }));
        }
    }
    o.that("every cgroup is a fresh one", same_inode.is_empty(), json!(same_inode));
    o.that("every cgroup has its settings back", settings_differ.is_empty(), json!(settings_differ));
    o.that("every task is back in its cgroup", tasks_lost.is_empty(), json!(tasks_lost));
    let mirrors: Vec<String> = fs::read_dir(ctx.mem_root.join(&scratch))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cgleak-migrate."))
        .collect();
    o.that("no mirror left", mirrors.is_empty(), json!(mirrors));
    o.that("no journal left", !state.join("fix-journal.jsonl").exists(), state.display().to_string());

    // runc still manages them: exec, then kill and delete of every container.
    let first = cleanup.containers[0].clone();
    let exec = cleanup.runc(&["exec", &first, "/bin/busybox", "true"])?;
    o.that("runc exec into a migrated container", exec.status.success(), String::from_utf8_lossy(&exec.stderr).trim().to_string());
    let left = cleanup.run();
    o.that("runc killed and deleted every container; cgroups removed", left.is_empty(), json!(left));
    Ok(())
}

//! bpf-walk: the BPF memcg walk (crates/cgleak-bpf) names dying memcgs the scenario made
//! itself, with the page cache it gave each, and loses them once that page cache is gone
//! (facts §4, §6).
//!
//! Children of a scratch parent each get a file of a known size written from inside them
//! (on the disk-backed data directory: tmpfs pages would be shmem, on the anon lists) and
//! are removed. The walk must report each one offline at its path, with its own file LRU
//! pages within 25% of what was written; the live parent online with its directory's inode
//! number as cgroup id. Then the files are unlinked and the rest reclaimed through the live
//! parent (v1 memory.force_empty, v2 memory.reclaim: host-safe, unlike drop_caches), and
//! the dying children must leave the walk. In a guest, nothing else runs: the walk's
//! dying count must equal the kernel's own (v1 /proc/cgroups less the directories; 6.12+
//! v2 nr_dying_subsys_memory).
//!
//! `cgleak dying --output json`, the node binary as a user runs it, must name each dying
//! child with its pod's UID and pinned bytes within 25% of what was written (method `bpf`),
//! and list none of them after the release.
//!
//! A kernel without BTF passes only if the walk says exactly that (the fallback's reason).

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use cgleak_bpf::{MemcgWalk, Walker};

use crate::cg::{self, Scratch};
use crate::cgleak;
use crate::report::Outcome;
use crate::{read_line, Ctx, Env};

/// Dying memcgs made, and the MiB of page cache the i-th one gets: 2, 3, .. 7.
const CHILDREN: u64 = 6;
const MIB: u64 = 1 << 20;

fn written(i: u64) -> u64 {
    (i + 2) * MIB
}

/// Where the children live below the scratch parent: a cgroupfs-driver kubelet's layout, so
/// `cgleak dying` names each child's pod.
const QOS: &str = "kubepods/burstable";

/// Kubelet-style names, so the paths look like what the walk meets on a node.
fn child_name(i: u64) -> String {
    format!("pod0b5e{:04x}-7c1d-4e2a-9f00-{:012x}", std::process::id() & 0xffff, i)
}

pub fn run(ctx: &Ctx, o: &mut Outcome) -> Result<()> {
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    o.measure("kernel_btf", btf.exists());
    if !btf.exists() {
        let r = Walker::new(&ctx.mem_root).walk();
        let code = r.as_ref().err().map(|e| e.code());
        o.measure("fallback", r.as_ref().err().map(|e| e.to_string()).unwrap_or_default());
        o.eq("no BTF: the walk says so", Some("no_btf"), code);
        return Ok(());
    }
    let files = ctx.data_dir.join(format!("cgleak-bpfwalk-{}", std::process::id()));
    fs::create_dir_all(&files).with_context(|| format!("mkdir {}", files.display()))?;
    let r = pin_walk_release(ctx, &files, o);
    let _ = fs::remove_dir_all(&files);
    r
}

fn walk(ctx: &Ctx) -> Result<MemcgWalk> {
    Walker::new(&ctx.mem_root).walk().map_err(|e| anyhow::anyhow!("BPF walk unavailable ({}): {e}", e.code()))
}

fn pin_walk_release(ctx: &Ctx, files: &Path, o: &mut Outcome) -> Result<()> {
    let v = ctx.version;
    let mut s = Scratch::create(&ctx.mem_root, v, "bpfwalk")?;
    let parent_rel = PathBuf::from("/").join(s.path.file_name().context("scratch name")?);

    s.child("kubepods", true)?;
    s.child(QOS, true)?;
    for i in 0..CHILDREN {
        let dir = s.child(&format!("{QOS}/{}", child_name(i)), false)?;
        hold_and_leave(ctx, &dir, &files.join(child_name(i)), written(i))?;
        cg::rmdir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
    }
    sync();

    // rmdir returns before the css goes offline (its reference is killed, then after an RCU
    // grace period css_killed_work_fn offlines it): on a busy host the last child can still
    // be online right after. Walk again until every child is offline, for up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let w = loop {
        let w = walk(ctx)?;
        let all_offline = (0..CHILDREN).all(|i| w.find(&parent_rel.join(QOS).join(child_name(i))).is_some_and(|m| !m.online));
        if all_offline || std::time::Instant::now() >= deadline {
            break w;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    o.measure("memcgs", w.memcgs.len());
    o.measure("dying", w.dying().count());
    o.measure("kernel_walk_us", w.kernel_time.as_micros() as u64);
    o.measure("lru_zones", w.lru_zones);
    o.measure("numa_nodes", w.numa_nodes);
    o.measure("mglru", w.mglru);
    o.eq("walk: cgroup version", if v == 1 { "V1" } else { "V2" }.to_string(), format!("{:?}", w.version));
    o.eq("walk: the root first", Some("/".to_string()), w.memcgs.first().map(|m| m.path.display().to_string()));

    let parent = w.find(&parent_rel);
    o.that("walk: the scratch parent, online", parent.is_some_and(|m| m.online), json!(parent.map(|m| m.css_flags)));
    let ino = fs::metadata(&s.path)?.ino();
    o.eq("walk: the parent's cgroup id is its directory's inode number", Some(ino), parent.map(|m| m.cgroup_id));

    let mut seen = Vec::new();
    for i in 0..CHILDREN {
        let path = parent_rel.join(QOS).join(child_name(i));
        let m = w.find(&path);
        let want = written(i);
        // With the multi-gen LRU the per-zone LRU sizes stay 0: the walk gives no LRU
        // figures, and its own share of the page counter stands for them.
        let (what, file) = if w.mglru {
            ("own charge (MGLRU on)", m.map(|m| m.local_memory_bytes).unwrap_or(0))
        } else {
            ("file bytes", m.and_then(|m| m.file_bytes).unwrap_or(0))
        };
        seen.push(json!({
            "name": child_name(i), "written": want, "found": m.is_some(),
            "online": m.map(|m| m.online), "file_bytes": m.and_then(|m| m.file_bytes),
            "lru_bytes": m.and_then(|m| m.lru_bytes()), "memory_bytes": m.map(|m| m.memory_bytes),
            "kmem_bytes": m.and_then(|m| m.kmem_bytes), "memcg_id": m.and_then(|m| m.memcg_id), "id_refs": m.map(|m| m.id_refs),
        }));
        o.that(&format!("{}: found dying at its path", child_name(i)), m.is_some_and(|m| !m.online), json!(m.map(|m| m.online)));
        o.that(&format!("{}: {what} within 25% of {want}", child_name(i)), within(file, want, 0.25), file);
        if w.mglru {
            o.that(&format!("{}: MGLRU on: no LRU figures (null, not 0)", child_name(i)), m.is_some_and(|m| m.file_bytes.is_none()), json!(m.map(|m| m.file_bytes)));
        }
        // No swap in the lab: a dying memcg gives its ID back at offline (facts §1).
        o.that(&format!("{}: holds no memcg ID", child_name(i)), m.is_some_and(|m| !m.holds_id), json!(m.map(|m| m.id_refs)));
    }
    o.measure("children", json!(seen));
    dying_names_each(ctx, &parent_rel, o)?;

    if ctx.env == Env::Guest {
        // Nothing else runs here: the walk's counts are the kernel's own (facts §2).
        let live = w.memcgs.iter().filter(|m| m.online).count() as u64;
        let dying = w.dying().count() as u64;
        o.eq("walk's live memcgs == memcgs counted by the scenario", cg::count_memcgs(&ctx.mem_root, v), live);
        match kernel_dying(ctx) {
            Some((source, n)) => o.eq(&format!("walk's dying memcgs == {source}"), n, dying),
            None => o.that("the kernel has a dying count to compare with", false, json!(null)),
        };
    }

    // Release: unlink the files (their page cache goes with them), reclaim what the
    // writers charged besides (filesystem metadata) through the live parent.
    for i in 0..CHILDREN {
        let f = files.join(child_name(i));
        fs::remove_file(&f).with_context(|| format!("unlink {}", f.display()))?;
    }
    sync();
    let (file, value) = if v == 1 { ("memory.force_empty", "0") } else { ("memory.reclaim", "64M") };
    let mut reclaimed = false;
    let (gone, left, waited) = cg::poll(Duration::from_secs(20), Duration::from_millis(250), || {
        let left = walk(ctx).map(|w| w.memcgs.iter().filter(|m| !m.online && m.path.starts_with(&parent_rel)).count()).unwrap_or(usize::MAX);
        if left != 0 && !reclaimed {
            // memory.reclaim answers EAGAIN when it reclaims less than asked: expected here.
            let _ = cg::write(&s.path.join(file), value);
            reclaimed = true;
        }
        (left == 0, left)
    });
    o.measure("released_after_s", (waited.as_secs_f64() * 10.0).round() / 10.0);
    o.measure("reclaim_on_parent_needed", reclaimed);
    o.that("after unlink and reclaim: the dying children leave the walk", gone, left);
    let after = cgleak::run(&ctx.cgleak, &["dying", "--top", "1000000"])?;
    let ours = rows_under(&after.json, &parent_rel).len();
    o.eq("after unlink and reclaim: `cgleak dying` lists none of them", 0, ours);

    let left = s.remove();
    o.that("scratch tree removed", left.is_empty(), json!(left));
    Ok(())
}

/// `cgleak dying --output json` (the node binary, as a user runs it) names each dying child
/// with its pod's UID (from its kubelet-style name) and pinned bytes within 25% of what was
/// written, by the BPF walk.
fn dying_names_each(ctx: &Ctx, parent_rel: &Path, o: &mut Outcome) -> Result<()> {
    let r = cgleak::run(&ctx.cgleak, &["dying", "--top", "1000000"])?;
    o.eq("cgleak dying: exit 0", 0, r.code);
    o.eq("cgleak dying: method", Some("bpf"), cgleak::str_at(&r.json, "/method"));
    let rows = rows_under(&r.json, parent_rel);
    for i in 0..CHILDREN {
        let path = parent_rel.join(QOS).join(child_name(i)).display().to_string();
        let row = rows.iter().find(|row| row.get("path").and_then(serde_json::Value::as_str) == Some(path.as_str()));
        let uid = child_name(i)[3..].to_string();
        o.eq(&format!("cgleak dying: {} pod_uid", child_name(i)), Some(uid.as_str()), row.and_then(|r| r.get("pod_uid")).and_then(serde_json::Value::as_str));
        let pinned = row.and_then(|r| r.get("pinned_bytes")).and_then(serde_json::Value::as_u64).unwrap_or(0);
        o.that(&format!("cgleak dying: {} pinned_bytes within 25% of {}", child_name(i), written(i)), within(pinned, written(i), 0.25), pinned);
    }
    Ok(())
}

/// The rows of a `cgleak dying` JSON report below `parent` (relative to the hierarchy's root).
fn rows_under<'a>(report: &'a serde_json::Value, parent: &Path) -> Vec<&'a serde_json::Value> {
    let prefix = format!("{}/", parent.display());
    report
        .get("dying")
        .and_then(serde_json::Value::as_array)
        .map(|rows| rows.iter().filter(|r| r.get("path").and_then(serde_json::Value::as_str).is_some_and(|p| p.starts_with(&prefix))).collect())
        .unwrap_or_default()
}

/// A process in `dir` writes `bytes` to `file` (and fsyncs it), then exits.
fn hold_and_leave(ctx: &Ctx, dir: &Path, file: &Path, bytes: u64) -> Result<()> {
    let mut child = Command::new(&ctx.self_exe)
        .args(["hold", "--procs"])
        .arg(dir.join("cgroup.procs"))
        .args(["--anon-bytes", "0", "--file"])
        .arg(file)
        .args(["--file-bytes", &bytes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn cgleak-guest hold")?;
    let mut out = BufReader::new(child.stdout.take().context("hold's stdout")?);
    let ready = read_line(&mut out)?;
    if ready != "ready" {
        let _ = child.kill();
        bail!("cgleak-guest hold in {} said {ready:?}", dir.display());
    }
    let mut stdin = child.stdin.take().context("hold's stdin")?;
    let _ = stdin.flush();
    drop(stdin);
    let st = child.wait()?;
    if !st.success() {
        bail!("cgleak-guest hold in {} exited {st}", dir.display());
    }
    Ok(())
}

fn within(got: u64, want: u64, frac: f64) -> bool {
    (got as f64 - want as f64).abs() <= want as f64 * frac
}

/// The kernel's own count of dying memcgs: v1 /proc/cgroups num_cgroups less the
/// directories (facts §2); v2 the root's nr_dying_subsys_memory (6.12+) or
/// nr_dying_descendants (dying cgroups of every controller: memory's alone in the lab).
fn kernel_dying(ctx: &Ctx) -> Option<(&'static str, u64)> {
    if ctx.version == 1 {
        let dirs = cg::count_dirs(&ctx.mem_root);
        return cg::dying(&ctx.mem_root, 1, dirs).map(|n| ("/proc/cgroups num_cgroups - directories", n));
    }
    let stat = ctx.mem_root.join("cgroup.stat");
    cg::read_keyed(&stat, "nr_dying_subsys_memory")
        .map(|n| ("cgroup.stat nr_dying_subsys_memory", n))
        .or_else(|| cg::read_keyed(&stat, "nr_dying_descendants").map(|n| ("cgroup.stat nr_dying_descendants", n)))
}

fn sync() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

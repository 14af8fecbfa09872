//! `cgleak dying` on this host (real kernel 6.18, root, cgroup v1 memory hierarchy): memcgs
//! named like a kubelet's (cgroupfs driver, under a scratch `--cgroup-root`) are made dying
//! by page cache their process wrote, and the BPF walk names each with its pod and what
//! pins it; once their files are deleted they are freed and leave the report.
//!
//! Ground truth is what the test did: the names it gave and the bytes each process wrote.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::agent::{agent_command, free_port, scrape, scrape_until, stop, Agent};
use common::prom::{assert_promtool_accepts, has_series, sample};
use common::kernel::{assert_not_tmpfs, assert_root, cgleak, describe, json_of, memory_mount, poll, serial, spawn_writer_in, ScratchCgroup};

const MIB: u64 = 1 << 20;

/// The files the writers filled; removed on drop (before the scratch cgroups, declared after).
struct Files(PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn assert_environment() -> PathBuf {
    assert_root();
    let m = memory_mount();
    assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/memory"), "real_kernel_ tests need the v1 memory hierarchy at /sys/fs/cgroup/memory");
    assert!(Path::new("/sys/kernel/btf/vmlinux").exists(), "this host's kernel (6.18) has BTF: /sys/kernel/btf/vmlinux is missing");
    m.mount_point
}

fn dying_json() -> Value {
    let out = cgleak().args(["dying", "--output", "json", "--top", "100000"]).output().expect("running cgleak dying");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    json_of(&out)
}

/// Rows of `v` under the scratch parent `name`.
fn rows_under<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    let prefix = format!("/{name}/");
    v["dying"].as_array().expect("dying[]").iter().filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(&prefix))).collect()
}

#[test]
fn real_kernel_dying_names_pods_and_pinned_bytes_and_forgets_freed_ones() {
    let _serial = serial();
    assert_environment();
    let scratch = ScratchCgroup::create_in_memory("dying");
    let files = Files(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cgleak-dying-{}", std::process::id())));
    fs::create_dir_all(&files.0).unwrap();
    assert_not_tmpfs(&files.0);
    let qos = scratch.path().join("kubepods/burstable");
    fs::create_dir_all(&qos).unwrap();

    // (pod uid, container id, MiB written): different sizes, so a swapped figure shows.
    let children: Vec<(String, String, u64)> = [6u64, 12, 20]
        .iter()
        .enumerate()
        .map(|(i, mib)| (format!("0b1f2c3d-4e5f-6789-abcd-ef012345678{i}"), format!("{:064x}", 0xc0ffee00 + i as u64), *mib))
        .collect();
    for (uid, cid, mib) in &children {
        let pod = qos.join(format!("pod{uid}"));
        let ctr = pod.join(cid);
        fs::create_dir_all(&ctr).unwrap();
        let st = spawn_writer_in(&ctr, &files.0.join(cid), mib * MIB).wait().unwrap();
        assert!(st.success(), "writer in {}: {st}", ctr.display());
        fs::remove_dir(&ctr).unwrap_or_else(|e| panic!("rmdir {}: {e}", ctr.display()));
        fs::remove_dir(&pod).unwrap_or_else(|e| panic!("rmdir {}: {e}", pod.display()));
    }

    let v = dying_json();
    assert_eq!(v["method"], "bpf", "{v:#}");
    assert_eq!(v["schema_version"], 1);
    assert!(v["bpf_unavailable"].is_null(), "{v:#}");
    assert!(v["total"].as_u64().is_some(), "the census counts dying memcgs on 6.18: {v:#}");
    let rows = rows_under(&v, &scratch.name);
    for (uid, cid, mib) in &children {
        let path = format!("/{}/kubepods/burstable/pod{uid}/{cid}", scratch.name);
        let row = rows.iter().find(|r| r["path"] == path.as_str()).unwrap_or_else(|| panic!("{path} not named:\n{v:#}"));
        assert_eq!(row["pod_uid"], uid.as_str(), "{row:#}");
        assert_eq!(row["container_id"], cid.as_str(), "{row:#}");
        assert_eq!(row["qos"], "burstable", "{row:#}");
        assert_eq!(row["source"], "bpf", "{row:#}");
        let pinned = row["pinned_bytes"].as_u64().unwrap() as f64;
        let want = (mib * MIB) as f64;
        assert!((pinned - want).abs() <= 0.25 * want, "{path}: pinned {pinned} bytes, wrote {want}: {row:#}");
        let file = row["file_bytes"].as_u64().unwrap() as f64;
        assert!((file - want).abs() <= 0.25 * want, "{path}: page cache {file}, wrote {want}");
        // The pod's own memcg is dying too: its dying child holds it (css_release of the parent waits for children).
        let pod_path = format!("/{}/kubepods/burstable/pod{uid}", scratch.name);
        assert!(rows.iter().any(|r| r["path"] == pod_path.as_str() && r["pod_uid"] == uid.as_str()), "{pod_path} not named");
    }
    // The largest pod comes first in the grouping.
    let pods = v["pods"].as_array().unwrap();
    let ours: Vec<&Value> = pods.iter().filter(|p| children.iter().any(|c| p["pod_uid"] == c.0.as_str())).collect();
    assert_eq!(ours.len(), 3, "{pods:#?}");
    assert_eq!(ours[0]["pod_uid"], children[2].0.as_str(), "largest first: {ours:#?}");

    // The table says the same, grouped by pod, and ends with what reclaim would free.
    let out = cgleak().args(["dying", "--top", "100000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("pod {} (burstable): 2 memcgs", children[2].0)), "{table}");
    assert!(table.contains("reclaim would free"), "{table}");

    // status --dying names them too (one BPF walk), with what pins them.
    let plain = json_of(&cgleak().args(["status", "--output", "json"]).output().unwrap());
    assert!(plain["dying_named"].is_null() && plain["dying_pinned_bytes"].is_null(), "only with --dying");
    let st = cgleak().args(["status", "--dying", "--output", "json"]).output().unwrap();
    assert_eq!(st.status.code(), Some(0), "{}", describe(&st));
    let st = json_of(&st);
    let ours_pinned: u64 = rows.iter().map(|r| r["pinned_bytes"].as_u64().unwrap()).sum();
    assert!(st["dying_named"].as_u64().is_some_and(|n| n >= rows.len() as u64), "{:#}", st["dying_named"]);
    assert!(st["dying_pinned_bytes"].as_u64().is_some_and(|b| b >= ours_pinned * 9 / 10), "{:#} < {ours_pinned}", st["dying_pinned_bytes"]);
    // Ours by their parent cut to two components: 3 pods (parent <scratch>/kubepods/burstable)
    // and their 3 containers (parent .../pod<uid>) all count under "<scratch>/kubepods".
    let parent = format!("{}/kubepods", scratch.name);
    let by_parent = st["dying_by_parent"].as_array().unwrap_or_else(|| panic!("dying_by_parent: {st:#}"));
    let ours_n = by_parent.iter().find(|p| p["parent"] == parent.as_str()).and_then(|p| p["memcgs"].as_u64());
    assert_eq!(ours_n, Some(6), "{by_parent:#?}");

    // With --dying-bpf the agent exports the same from its own walk (a child `status
    // --dying`), from its first sample; without it the two families are left out.
    let series = format!("cgleak_memcg_dying_by_parent{{parent=\"{parent}\"}}");
    for no_bpf in [false, true] {
        // no_bpf: the agent's default, without --dying-bpf.
        let state = tempfile::tempdir().unwrap();
        let port = free_port();
        let extra: &[&str] = if no_bpf { &["--no-logs", "--no-memcg-memory"] } else { &["--no-logs", "--no-memcg-memory", "--dying-bpf"] };
        let a = Agent::spawn(&mut agent_command(Path::new("/"), state.path(), "1s", &format!("127.0.0.1:{port}"), extra), port).keeping(state);
        if no_bpf {
            let text = scrape_until(&a, "two censuses", Duration::from_secs(30), |t| sample(t, "cgleak_memcg_live").is_some());
            std::thread::sleep(Duration::from_millis(2500));
            let text = scrape(a.port).unwrap_or(text);
            assert!(!has_series(&text, "cgleak_memcg_dying_pinned_bytes") && !text.contains("cgleak_memcg_dying_by_parent"), "without --dying-bpf:\n{text}");
        } else {
            let text = scrape_until(&a, &series, Duration::from_secs(30), |t| sample(t, &series) == Some(6.0));
            assert_promtool_accepts(&text);
            let pinned = sample(&text, "cgleak_memcg_dying_pinned_bytes").expect("cgleak_memcg_dying_pinned_bytes");
            assert!(pinned >= (ours_pinned * 9 / 10) as f64, "{pinned} < {ours_pinned}");
            let parents = text.lines().filter(|l| l.starts_with("cgleak_memcg_dying_by_parent{")).count();
            assert!((1..=21).contains(&parents), "bounded: {parents} series\n{text}");
        }
        let err = stop(a);
        assert!(!err.contains("not named"), "the walk ran in the agent: {err}");
    }

    // Deleting the files frees their pages, and with them the memcgs.
    drop(files);
    let gone = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let v = dying_json();
        rows_under(&v, &scratch.name).is_empty().then_some(())
    });
    assert!(gone.is_some(), "the memcgs are still named 10 s after their files were deleted:\n{:#}", dying_json());
    scratch.remove();
}

#[test]
fn real_kernel_dying_without_bpf_says_why_and_names_none_here() {
    let _serial = serial();
    assert_environment();
    // --no-bpf on 6.18 with no agent memory: slab caches are not per-memcg (5.9+), so nothing names them.
    let state = tempfile::tempdir().unwrap();
    let out = cgleak().args(["dying", "--no-bpf", "--output", "json", "--state-dir"]).arg(state.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    assert_eq!(v["method"], "none", "{v:#}");
    assert_eq!(v["named"], 0);
    assert!(v["bpf_unavailable"].is_null(), "not asked, so no reason: {v:#}");
    assert!(v["pinned_bytes_total"].is_null());
}

fn named_paths(name: &str) -> Vec<String> {
    rows_under(&dying_json(), name).iter().map(|r| r["path"].as_str().unwrap().to_string()).collect()
}

#[test]
fn real_kernel_fix_reclaim_target_releases_one_pod_and_refuses_beside_live_tasks() {
    let _serial = serial();
    assert_environment();
    let scratch = ScratchCgroup::create_in_memory("reclaim-target");
    let files = Files(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cgleak-reclaim-target-{}", std::process::id())));
    fs::create_dir_all(&files.0).unwrap();
    assert_not_tmpfs(&files.0);
    let state = tempfile::tempdir().unwrap();
    let burstable = scratch.path().join("kubepods/burstable");
    fs::create_dir_all(&burstable).unwrap();
    let dying_pod = |qos: &Path, uid: &str, mib: u64| {
        let pod = qos.join(format!("pod{uid}"));
        let ctr = pod.join("c0");
        fs::create_dir_all(&ctr).unwrap();
        assert!(spawn_writer_in(&ctr, &files.0.join(uid), mib * MIB).wait().unwrap().success());
        fs::remove_dir(&ctr).unwrap();
        fs::remove_dir(&pod).unwrap();
    };
    let a = "aaaaaaaa-4e5f-6789-abcd-ef0123456789";
    dying_pod(&burstable, a, 8);
    assert!(named_paths(&scratch.name).iter().any(|p| p.ends_with(&format!("pod{a}/c0"))), "precondition: the pod is dying");

    // v1: memory.force_empty of the QoS directory (no task below it), the file kept.
    let out = cgleak().args(["fix", "reclaim", "--target", a, "--apply", "--yes", "--output", "json", "--state-dir"]).arg(state.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    assert_eq!(v["plan"]["steps"][0]["writes"][0]["file"], format!("{}/memory.force_empty", burstable.display()), "{v:#}");
    let gone = poll(Duration::from_secs(10), Duration::from_millis(200), || named_paths(&scratch.name).is_empty().then_some(()));
    assert!(gone.is_some(), "still dying after the targeted reclaim: {:?}", named_paths(&scratch.name));
    assert!(files.0.join(a).exists(), "the file is still there: reclaim released its pages, not the file");

    // A live task beside it: force_empty would take its memory too, so the plan is refused (exit 5).
    let live = burstable.join("podlive");
    fs::create_dir(&live).unwrap();
    let mut sleeper = common::kernel::spawn_in(&live, "sleep", &["60"]);
    let b = "bbbbbbbb-4e5f-6789-abcd-ef0123456789";
    dying_pod(&burstable, b, 4);
    let out = cgleak().args(["fix", "reclaim", "--target", b, "--apply", "--yes", "--state-dir"]).arg(state.path()).output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has live tasks in its subtree") && err.contains("without --target"), "{err}");
    assert!(named_paths(&scratch.name).iter().any(|p| p.ends_with(&format!("pod{b}/c0"))), "refused: nothing was reclaimed");

    // A UID no cgroup has: a usage error naming the flag.
    let out = cgleak().args(["fix", "reclaim", "--target", "ffffffff-0000-0000-0000-000000000000", "--state-dir"]).arg(state.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target ffffffff"), "{}", describe(&out));
    drop(files);
    scratch.remove();
}

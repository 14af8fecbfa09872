//! The agent's memory of memcgs (`<state-dir>/memcg-memory.jsonl`): a memcg whose directory
//! is removed while the agent runs is remembered gone, with its pod and when
//! (`cgleak_model::memcg_memory::load_dead`, what `cgleak dying` reads, and with `--no-bpf`
//! names it by: `source: agent_memory`); `--no-memcg-memory` keeps no memory.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use cgleak_model::memcg_memory::{load_dead, MEMORY_FILE};
use common::agent::{agent_command, free_port, stop, wait_for, Agent};
use common::kernel::{assert_root, cgleak, describe, json_of, memory_mount, serial, ScratchCgroup};

const UID: &str = "5d1c2b3a-4f5e-4a6b-8c7d-9e0f1a2b3c4d";
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn real_kernel_a_memcg_removed_while_the_agent_runs_is_remembered_gone_with_its_pod() {
    assert_root();
    let mount = memory_mount();
    assert_eq!(mount.version, 1, "this host's memory hierarchy is cgroup v1 at /sys/fs/cgroup/memory");
    let _serial = serial();
    let scratch = ScratchCgroup::create_in_memory("memory");
    let pod = scratch.path().join(format!("kubepods/burstable/pod{UID}"));
    let container = pod.join(CONTAINER);
    fs::create_dir_all(&container).unwrap_or_else(|e| panic!("mkdir {}: {e}", container.display()));
    let inode = fs::metadata(&container).unwrap().ino();
    let rel = format!("{}/kubepods/burstable/pod{UID}/{CONTAINER}", scratch.name);

    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let agent = Agent::spawn(&mut agent_command(std::path::Path::new("/"), state.path(), "1s", &format!("127.0.0.1:{port}"), &["--no-logs"]), port);
    let file = state.path().join(MEMORY_FILE);
    // Seen live first: its line, with no gone_at.
    wait_for("the container's memcg in the memory", Duration::from_secs(60), || {
        let text = fs::read_to_string(&file).ok()?;
        text.lines().any(|l| l.contains(&format!("\"inode\":{inode},")) && l.contains(&rel) && l.ends_with("\"gone_at\":null}")).then_some(())
    });
    assert!(load_dead(state.path()).unwrap().iter().all(|d| d.inode != inode));

    let removed = jiff::Timestamp::now();
    let started = Instant::now();
    fs::remove_dir(&container).unwrap_or_else(|e| panic!("rmdir {}: {e}", container.display()));
    let dead = wait_for("the removed memcg remembered gone", Duration::from_secs(60), || {
        load_dead(state.path()).unwrap().into_iter().find(|d| d.inode == inode)
    });
    eprintln!("remembered gone {:?} after the rmdir: {dead:?}", started.elapsed());
    assert_eq!(dead.path, rel);
    assert_eq!(dead.pod_uid.as_deref(), Some(UID));
    assert_eq!(dead.container_id.as_deref(), Some(CONTAINER));
    let gone_at = dead.gone_at.expect("gone");
    // Times are whole seconds: gone at or after the rmdir's second, seen before it.
    assert!(gone_at.as_second() >= removed.as_second(), "{gone_at} before the rmdir at {removed}");
    assert!(dead.last_seen <= gone_at && dead.first_seen <= dead.last_seen, "{dead:?}");
    assert!(gone_at.as_second() <= jiff::Timestamp::now().as_second());
    // The pod's own memcg is still there: not gone.
    let pod_inode = fs::metadata(&pod).unwrap().ino();
    assert!(load_dead(state.path()).unwrap().iter().all(|d| d.inode != pod_inode));

    // `cgleak dying --no-bpf` names it from that memory: its path from the hierarchy's root,
    // its pod and container, and how long ago it went.
    let out = cgleak()
        .args(["dying", "--no-bpf", "--top", "100000", "--output", "json", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("running cgleak dying");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_of(&out);
    assert_eq!(v["method"], "agent_memory", "{v:#}");
    let path = format!("/{rel}");
    let row = v["dying"].as_array().unwrap().iter().find(|r| r["path"] == path.as_str()).unwrap_or_else(|| panic!("{path} not named: {v:#}"));
    assert_eq!((row["source"].as_str(), row["pod_uid"].as_str(), row["container_id"].as_str()), (Some("agent_memory"), Some(UID), Some(CONTAINER)), "{row:#}");
    assert!(row["offline_seconds"].as_u64().is_some() && row["pinned_bytes"].is_null(), "{row:#}");

    let err = stop(agent);
    assert!(!err.contains("memory of memcgs kept in memory only"), "{err}");
    scratch.remove();
}

#[test]
fn no_memcg_memory_keeps_none_and_the_default_remembers_the_fixture_memcgs() {
    let f = cgleak_fixtures::debian_6_1_v2();
    for (extra, kept) in [(&["--no-logs", "--no-memcg-memory"][..], false), (&["--no-logs"][..], true)] {
        let state = tempfile::tempdir().unwrap();
        let port = free_port();
        let a = Agent::spawn(&mut agent_command(f.root(), state.path(), "1s", &format!("127.0.0.1:{port}"), extra), port);
        common::agent::scrape_until(&a, "a census", Duration::from_secs(30), |t| t.contains("cgleak_memcg_live "));
        let file = state.path().join(MEMORY_FILE);
        if kept {
            let lines = wait_for("the memory written", Duration::from_secs(30), || fs::read_to_string(&file).ok().filter(|t| t.lines().count() > 1));
            assert!(lines.starts_with("{\"cgleak_memcg_memory\":1,"), "{lines}");
        } else {
            std::thread::sleep(Duration::from_millis(1500));
            assert!(!file.exists(), "--no-memcg-memory wrote {}", file.display());
        }
        stop(a);
    }
}

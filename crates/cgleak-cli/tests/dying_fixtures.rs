//! `cgleak dying` on fixture roots of kernels we cannot boot: 3.10 (el7) and 4.4 name their
//! per-memcg slab caches `<cache>(<id>:<cgroup name>)` (docs/kernel-facts.md section 2), so a
//! cache whose cgroup is gone names a dead memcg, by its last path component only. The
//! fixtures record which names they deleted (`Truth::dead_slab_names`); BPF is refused
//! there (the fixture has no kernel BTF), and that reason is reported.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

use common::fixture::{on_fixture, Fixture};

fn dying(f: &Fixture, extra: &[&str]) -> Value {
    let args = [&["dying", "--output", "json", "--state-dir", "/nonexistent-agent-state"], extra].concat();
    let r = on_fixture(f, &args);
    r.assert_no_panic();
    assert_eq!(r.code, 0, "{r:#?}");
    r.json()
}

fn named(v: &Value) -> BTreeSet<String> {
    v["dying"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap().to_string()).collect()
}

fn check_slab_names(f: Fixture, holds_ids: bool) {
    let want: BTreeSet<String> = f.truth.dead_slab_names.iter().cloned().collect();
    assert!(!want.is_empty(), "{}: the fixture deletes kmem-active memcgs", f.name);
    let v = dying(&f, &["--top", "1000"]);
    assert_eq!(v["method"], "slab_names", "{}: {v:#}", f.name);
    assert!(v["bpf_unavailable"].as_str().is_some_and(|s| s.contains("BTF")), "{}: why BPF did not name them: {v:#}", f.name);
    assert_eq!(named(&v), want, "{}", f.name);
    assert_eq!(v["named"].as_u64(), Some(want.len() as u64));
    assert_eq!(v["total"], serde_json::to_value(f.truth.dying).unwrap(), "total is the census's dying count");
    for r in v["dying"].as_array().unwrap() {
        assert_eq!(r["source"], "slab_names");
        assert!(r["pinned_bytes"].is_null() && r["offline_seconds"].is_null(), "{r:#}");
        assert_eq!(r["holds_id"], if holds_ids { Value::Bool(true) } else { Value::Null }, "{r:#}");
    }
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("last component")), "{v:#}");
    assert_eq!(v["reclaim"]["kmem_pins"], true, "{}: kmem accounting before 5.9 pins them: {v:#}", f.name);
    // --no-bpf: the same answer, and no reason asked for.
    let nb = dying(&f, &["--no-bpf", "--top", "1000"]);
    assert_eq!((nb["method"].clone(), nb["bpf_unavailable"].clone()), (Value::from("slab_names"), Value::Null));
    assert_eq!(named(&nb), want);
    // status --dying names them only with the BPF walk: null here (no BTF in the fixture).
    let st = common::fixture::on_fixture(&f, &["status", "--dying", "--output", "json"]).json();
    assert!(st["dying_named"].is_null() && st["dying_pinned_bytes"].is_null(), "{}", f.name);
    // --top bounds the rows, not the count.
    let top = dying(&f, &["--top", "3"]);
    assert_eq!((top["shown"].as_u64(), top["named"].as_u64()), (Some(3), Some(want.len() as u64)));
}

#[test]
fn el7_693_slab_names_name_the_dead_memcgs() {
    // el7 693: css_id kept by dying memcgs (facts §1a), 3.10 top-level cache names.
    check_slab_names(cgleak_fixtures::el7_693_kmem_leaking(), true);
}

#[test]
fn ubuntu_4_4_0_21_slab_names_under_cgroup_dirs() {
    // 4.4.0 before the 73f576c04b94 backport: dying memcgs keep css->id; names under <cache>/cgroup/.
    check_slab_names(cgleak_fixtures::ubuntu_4_4_0_21_kmem_exhausted(), true);
}

#[test]
fn a_6_1_v2_fixture_has_no_naming_method() {
    // 5.9+: no per-memcg caches; no BTF in the fixture; no agent memory.
    let v = dying(&cgleak_fixtures::debian_6_1_v2(), &[]);
    assert_eq!(v["method"], "none", "{v:#}");
    assert_eq!(v["named"], 0);
    assert!(v["pinned_bytes_total"].is_null());
}

#[test]
fn agent_memory_names_them_where_nothing_else_can() {
    // 5.10 v1: no per-memcg slab caches in sysfs (5.9+), no BTF in the fixture: only the
    // agent's memory of memcgs that went (memcg_memory.rs's file) can name them.
    let f = cgleak_fixtures::debian_5_10_hybrid();
    let state = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let uid = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";
    let lines = [
        r#"{"cgleak_memcg_memory":1,"boot_id":null}"#.to_string(),
        format!(r#"{{"inode":101,"path":"/kubepods/besteffort/pod{uid}/c1","first_seen":{},"last_seen":{},"gone_at":{}}}"#, now - 900, now - 600, now - 600),
        format!(r#"{{"inode":102,"path":"/system.slice/cron.service","first_seen":{},"last_seen":{},"gone_at":{}}}"#, now - 900, now - 60, now - 60),
        format!(r#"{{"inode":103,"path":"/kubepods/pod{uid}","first_seen":{},"last_seen":{},"gone_at":null}}"#, now - 900, now),
    ];
    std::fs::write(state.path().join("memcg-memory.jsonl"), lines.join("\n") + "\n").unwrap();
    let dir = state.path().to_str().unwrap();
    let r = common::fixture::on_fixture(&f, &["dying", "--output", "json", "--sort", "age", "--state-dir", dir]);
    r.assert_no_panic();
    assert_eq!(r.code, 0, "{r:#?}");
    let v = r.json();
    assert_eq!(v["method"], "agent_memory", "{v:#}");
    let rows = v["dying"].as_array().unwrap();
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [format!("/kubepods/besteffort/pod{uid}/c1").as_str(), "/system.slice/cron.service"], "gone ones only, oldest first: {v:#}");
    assert_eq!((rows[0]["pod_uid"].as_str(), rows[0]["qos"].as_str(), rows[0]["container_id"].as_str()), (Some(uid), Some("besteffort"), Some("c1")));
    let age = rows[0]["offline_seconds"].as_u64().unwrap();
    assert!((600..700).contains(&age), "{age}");
    assert!(rows.iter().all(|r| r["source"] == "agent_memory" && r["pinned_bytes"].is_null()));
}

//! `cgleak status --output json` and `cgleak check --output json` on the fixture host
//! roots of crates/cgleak-fixtures (kernels this machine cannot boot), compared with
//! the committed snapshots in tests/snapshots/<fixture>.{status,check}.json.
//!
//! A snapshot alone would let a wrong figure pass once recorded, so each test also
//! asserts the contract values directly: the era, the cgroup mode, dying memcgs, the
//! confidence of the IDs in use, headroom, orphans, the verdict and the exit code,
//! against figures the fixture computed from its own tree and against KERNEL-FACTS.md.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p cgleak --test fixture_snapshots` rewrites the
//! snapshots; read the diff against KERNEL-FACTS.md before committing it.

mod common;

use serde_json::Value;

use common::fixture::{assert_snapshot, at, normalize, on_fixture, Fixture};

const ID_LIMIT: u64 = 65535;

/// The contract of one fixture, from KERNEL-FACTS.md.
struct Expect {
    era: &'static str,
    mode: &'static str,
    /// "exact", "estimate", "lower_bound".
    confidence: &'static str,
    /// None: headroom must be null (it cannot be counted on this kernel);
    /// Some(None): 65535 - live; Some(Some(n)): exactly n.
    headroom: Option<Option<u64>>,
    /// `dying_source` in the census.
    dying_source: &'static str,
    orphans: u64,
    verdict: &'static str,
    exit: i32,
}

fn check_fixture(f: Fixture, e: Expect) {
    let t = f.truth.clone();
    let name = f.name;

    // status
    let run = on_fixture(&f, &["status", "--output", "json"]);
    assert_eq!(run.code, 0, "{name}: status exit code: {run:#?}");
    let mut s = run.json();
    normalize(&mut s, f.root());
    let ctx = |what: &str| {
        format!(
            "{name}: {what}\n{}",
            serde_json::to_string_pretty(&s).unwrap()
        )
    };
    assert_eq!(
        at(&s, "kernel.release"),
        t.release,
        "{}",
        ctx("kernel.release")
    );
    assert_eq!(at(&s, "kernel.era"), e.era, "{}", ctx("kernel.era"));
    assert_eq!(
        at(&s, "kernel.era_exact"),
        true,
        "{}",
        ctx("kernel.era_exact")
    );
    assert_eq!(at(&s, "cgroup.mode"), e.mode, "{}", ctx("cgroup.mode"));
    assert_eq!(
        at(&s, "cgroup.memory_root"),
        t.memory_root,
        "{}",
        ctx("cgroup.memory_root")
    );
    assert_eq!(
        at(&s, "memcg.live").as_u64(),
        Some(t.live_memcgs),
        "{}",
        ctx("memcg.live")
    );
    // dying: the exact figure the fixture wrote, or null where the kernel hides it (3.10).
    match t.dying {
        Some(d) => assert_eq!(
            at(&s, "memcg.dying").as_u64(),
            Some(d),
            "{}",
            ctx("memcg.dying")
        ),
        None => assert!(
            at(&s, "memcg.dying").is_null(),
            "{}",
            ctx("memcg.dying must be null")
        ),
    }
    assert_eq!(
        at(&s, "memcg.dying_source"),
        e.dying_source,
        "{}",
        ctx("memcg.dying_source")
    );
    assert_eq!(
        at(&s, "memcg.id_limit").as_u64(),
        Some(ID_LIMIT),
        "{}",
        ctx("memcg.id_limit")
    );
    assert_eq!(
        at(&s, "memcg.ids_in_use_confidence"),
        e.confidence,
        "{}",
        ctx("memcg.ids_in_use_confidence")
    );
    let ids = at(&s, "memcg.ids_in_use")
        .as_u64()
        .expect("ids_in_use is a number on every fixture");
    assert!(
        ids >= t.live_memcgs,
        "{}",
        ctx("ids_in_use below the live memcgs")
    );
    match e.headroom {
        None => assert!(
            at(&s, "memcg.headroom").is_null(),
            "{}",
            ctx("memcg.headroom must be null")
        ),
        Some(h) => {
            let want = h.unwrap_or(ID_LIMIT - t.live_memcgs);
            assert_eq!(
                at(&s, "memcg.headroom").as_u64(),
                Some(want),
                "{}",
                ctx("memcg.headroom")
            );
            assert_eq!(ids + want, ID_LIMIT, "{}", ctx("ids_in_use + headroom"));
        }
    }
    match t.kmem_active {
        Some(k) => assert_eq!(
            at(&s, "memcg.kmem_active").as_u64(),
            Some(k),
            "{}",
            ctx("memcg.kmem_active")
        ),
        None => assert!(
            at(&s, "memcg.kmem_active").is_null(),
            "{}",
            ctx("memcg.kmem_active must be null")
        ),
    }
    assert_eq!(
        at(&s, "kubepods.pods").as_u64(),
        Some(t.pods),
        "{}",
        ctx("kubepods.pods")
    );
    assert_eq!(
        at(&s, "kubepods.containers").as_u64(),
        Some(t.containers),
        "{}",
        ctx("kubepods.containers")
    );
    assert_eq!(
        at(&s, "kubepods.orphans").as_u64(),
        Some(e.orphans),
        "{}",
        ctx("kubepods.orphans")
    );
    assert_eq!(
        e.orphans,
        t.orphan_uids.len() as u64,
        "{name}: the expectation and the fixture agree on orphans"
    );
    let mut uids: Vec<&str> = at(&s, "kubepods.orphan_pods")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uid"].as_str().unwrap())
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        t.orphan_uids.iter().map(String::as_str).collect::<Vec<_>>(),
        "{}",
        ctx("kubepods.orphan_pods")
    );
    assert_eq!(
        at(&s, "walk_gone").as_u64(),
        Some(0),
        "{}",
        ctx("walk_gone")
    );
    assert_snapshot(&format!("{name}.status.json"), &s);

    // check
    let run = on_fixture(&f, &["check", "--output", "json"]);
    assert_eq!(
        run.code, e.exit,
        "{name}: check exit code: stdout {}\nstderr {}",
        run.stdout, run.stderr
    );
    let mut c = run.json();
    normalize(&mut c, f.root());
    assert_eq!(
        at(&c, "verdict"),
        e.verdict,
        "{name}: verdict\n{}",
        serde_json::to_string_pretty(&c).unwrap()
    );
    // The census inside the report is the one status printed.
    assert_eq!(at(&c, "census"), &s, "{name}: check's census equals status");
    assert_snapshot(&format!("{name}.check.json"), &c);
    fixture_specific(name, &s, &c);
}

fn finding<'a>(c: &'a Value, id: &str) -> Option<&'a Value> {
    c["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

fn remedies(c: &Value) -> Vec<&str> {
    c["remedies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect()
}

/// Checks that only make sense for one fixture.
fn fixture_specific(name: &str, s: &Value, c: &Value) {
    let rem = remedies(c);
    match name {
        "centos7-957-kmem" => {
            // 3.10: per-memcg caches at the top of /sys/kernel/slab; filebeat and node-exporter names carry several ids.
            assert_eq!(at(s, "slab.naming"), "top_level");
            assert_eq!(at(s, "slab.names_with_several_ids").as_u64(), Some(2));
            assert!(at(s, "slab.dead_caches").as_u64().unwrap() > 0);
            assert_eq!(
                finding(c, "slab_dead_caches").unwrap()["severity"],
                "warning"
            );
            assert_eq!(
                finding(c, "kmem_accounting_active").unwrap()["severity"],
                "warning"
            );
            // 957 predates the RHEL7 nokmem backport (1062+): no nokmem remedy.
            assert_eq!(at(s, "kernel.nokmem_supported"), false);
            assert!(!rem.contains(&"nokmem"), "{rem:?}");
            assert!(
                rem.contains(&"upgrade-runc") && rem.contains(&"upgrade-kubelet"),
                "{rem:?}"
            );
        }
        "rhel7-1160-nokmem" => {
            assert_eq!(at(s, "kernel.nokmem_supported"), true);
            assert_eq!(at(s, "kernel.mkdir_errno_when_full"), "ENOMEM");
            assert_eq!(at(c, "node.nokmem"), true);
            assert_eq!(at(s, "slab.per_memcg_caches").as_u64(), Some(0));
            assert!(rem.is_empty(), "{rem:?}");
        }
        "linux-4.4-v1" => {
            assert_eq!(
                at(s, "kernel.dying_hold_ids"),
                false,
                "4.4.20+ carry the ID refcount backport"
            );
            assert_eq!(at(s, "slab.naming"), "cgroup_subdir");
            assert!(at(s, "slab.dead_caches").as_u64().unwrap() > 0);
            // cgroup.memory=nokmem does not exist in 4.4.
            assert_eq!(at(s, "kernel.nokmem_supported"), false);
            assert!(!rem.contains(&"nokmem"), "{rem:?}");
        }
        "debian-4.19-v1-dying" => {
            assert_eq!(finding(c, "dying_memcgs").unwrap()["severity"], "warning");
            assert_eq!(
                finding(c, "orphan_pod_cgroups").unwrap()["severity"],
                "warning"
            );
            assert!(rem.contains(&"gc") && rem.contains(&"reclaim"), "{rem:?}");
            assert_eq!(at(s, "kubepods.by_qos.guaranteed.pods").as_u64(), Some(2));
        }
        "debian-5.10-hybrid" => {
            assert_eq!(at(s, "cgroup.memory_version").as_u64(), Some(1));
            assert!(at(s, "cgroup.mounts")
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["version"] == 2 && m["mount_point"] == "/sys/fs/cgroup/unified"));
            assert_eq!(at(s, "kubepods.driver"), "systemd");
            assert_eq!(at(c, "node.cgroup_driver.driver"), "systemd");
            assert_eq!(
                at(c, "node.cgroup_driver.source"),
                "/var/lib/kubelet/config.yaml"
            );
            assert!(
                at(s, "swap.total_kib").as_u64().unwrap()
                    > at(s, "swap.free_kib").as_u64().unwrap()
            );
        }
        "debian-6.1-v2" => {
            assert_eq!(at(s, "kubepods.driver"), "systemd");
            // crio-conmon scopes are not containers
            assert_eq!(at(s, "kubepods.containers").as_u64(), Some(6));
        }
        "debian-6.12-v2-dying-subsys" => {
            assert_eq!(finding(c, "dying_memcgs").unwrap()["severity"], "warning");
            let reclaim = c["remedies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["action"] == "reclaim")
                .expect("a reclaim remedy");
            assert!(
                reclaim["summary"]
                    .as_str()
                    .unwrap()
                    .contains("memory.reclaim"),
                "{reclaim}"
            );
        }
        "6.12-v2-near-limit" => {
            let f = finding(c, "memcg_id_headroom").unwrap();
            assert_eq!(f["severity"], "warning");
            assert!(
                f["summary"].as_str().unwrap().contains("headroom 3035"),
                "{f}"
            );
            assert!(
                f["evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["file"] == "/sys/fs/cgroup/cgroup.stat"),
                "{f}"
            );
        }
        "6.12-v2-exhausted" => {
            let f = finding(c, "memcg_id_headroom").unwrap();
            assert_eq!(f["severity"], "critical");
            assert!(f["summary"].as_str().unwrap().contains("headroom 0"), "{f}");
            assert!(rem.contains(&"reboot"), "{rem:?}");
        }
        other => panic!("no fixture-specific checks for {other}"),
    }
}

/// Every fixture has a test here.
#[test]
fn every_fixture_is_covered() {
    let covered = [
        "centos7-957-kmem",
        "rhel7-1160-nokmem",
        "linux-4.4-v1",
        "debian-4.19-v1-dying",
        "debian-5.10-hybrid",
        "debian-6.1-v2",
        "debian-6.12-v2-dying-subsys",
        "6.12-v2-near-limit",
        "6.12-v2-exhausted",
    ];
    let all: Vec<&str> = cgleak_fixtures::all().into_iter().map(|(n, _)| n).collect();
    assert_eq!(all, covered);
    for n in covered {
        assert!(
            common::fixture::snapshot_path(&format!("{n}.status.json")).exists()
                || std::env::var_os("UPDATE_SNAPSHOTS").is_some(),
            "{n}: status snapshot"
        );
    }
}

#[test]
fn centos7_957_kmem() {
    check_fixture(
        cgleak_fixtures::centos7_957_kmem(),
        Expect {
            era: "3.10-el7",
            mode: "v1",
            // facts §1, §2: dying memcgs keep IDs and /proc/cgroups forgets them: only a lower bound.
            confidence: "lower_bound",
            headroom: None,
            dying_source: "not_countable",
            orphans: 0,
            // kmem active in the kubepods tree and dead per-memcg caches.
            verdict: "leaking",
            exit: 3,
        },
    );
}

#[test]
fn rhel7_1160_nokmem() {
    check_fixture(
        cgleak_fixtures::rhel7_1160_nokmem(),
        Expect {
            era: "3.10-el7",
            mode: "v1",
            confidence: "lower_bound",
            headroom: None,
            dying_source: "not_countable",
            orphans: 0,
            // nokmem: no kmem-active memcg, no per-memcg caches.
            verdict: "healthy",
            exit: 0,
        },
    );
}

#[test]
fn linux_4_4_v1() {
    check_fixture(
        cgleak_fixtures::linux_4_4_v1(),
        Expect {
            // 4.4.131 carries the 73f576c04b94 backport: IDs released at offline (facts §1).
            era: "4.7-5.4.40",
            mode: "v1",
            confidence: "exact",
            headroom: Some(None),
            dying_source: "proc_cgroups_minus_live",
            orphans: 0,
            // kmem opt-in switched on by kubelet 1.11/runc rc5; dead caches pin dying memcgs (<= 5.8).
            verdict: "leaking",
            exit: 3,
        },
    );
}

#[test]
fn debian_4_19_v1_dying() {
    check_fixture(
        cgleak_fixtures::debian_4_19_v1_dying(),
        Expect {
            era: "4.7-5.4.40",
            mode: "v1",
            confidence: "exact",
            headroom: Some(None),
            dying_source: "proc_cgroups_minus_live",
            orphans: 2,
            // 5000 dying > live, and two orphaned pod cgroups.
            verdict: "leaking",
            exit: 3,
        },
    );
}

#[test]
fn debian_5_10_hybrid() {
    check_fixture(
        cgleak_fixtures::debian_5_10_hybrid(),
        Expect {
            era: "5.4.41-6.11",
            mode: "hybrid",
            // swap in use: swapped shmem may pin dying memcgs' IDs (facts §1).
            confidence: "estimate",
            headroom: Some(None),
            dying_source: "proc_cgroups_minus_live",
            orphans: 0,
            verdict: "healthy",
            exit: 0,
        },
    );
}

#[test]
fn debian_6_1_v2() {
    check_fixture(
        cgleak_fixtures::debian_6_1_v2(),
        Expect {
            era: "5.4.41-6.11",
            mode: "v2",
            confidence: "exact",
            headroom: Some(None),
            dying_source: "nr_dying_descendants",
            orphans: 0,
            verdict: "healthy",
            exit: 0,
        },
    );
}

#[test]
fn debian_6_12_v2_dying_subsys() {
    check_fixture(
        cgleak_fixtures::debian_6_12_v2_dying_subsys(),
        Expect {
            era: "6.12+",
            mode: "v2",
            confidence: "exact",
            headroom: Some(None),
            dying_source: "nr_dying_subsys_memory",
            orphans: 0,
            // 2417 dying > live.
            verdict: "leaking",
            exit: 3,
        },
    );
}

#[test]
fn v6_12_v2_near_limit() {
    check_fixture(
        cgleak_fixtures::v6_12_v2_near_limit(),
        Expect {
            era: "6.12+",
            mode: "v2",
            confidence: "exact",
            // 65535 - 62500
            headroom: Some(Some(3035)),
            dying_source: "nr_dying_subsys_memory",
            orphans: 0,
            verdict: "at_risk",
            exit: 3,
        },
    );
}

#[test]
fn v6_12_v2_exhausted() {
    check_fixture(
        cgleak_fixtures::v6_12_v2_exhausted(),
        Expect {
            era: "6.12+",
            mode: "v2",
            confidence: "exact",
            headroom: Some(Some(0)),
            dying_source: "nr_dying_subsys_memory",
            orphans: 0,
            verdict: "exhausted",
            exit: 4,
        },
    );
}

/// Regression: Debian and Ubuntu
/// package runc as "1.0.0~rc6+dfsg1" / "1.0.0~rc93+ds1" ('~' marks a pre-release in
/// Debian versions). cgleak-readers versions.rs reads them as 1.0.0, so runc rc6 is
/// reported as "1.0.0-rc94+ ignores kernel memory" and the upgrade-runc remedy is lost
/// on kmem opt-in kernels (Ubuntu 16.04's 4.4 kernels ship runc 1.0.0~rc7+git...).
#[test]
fn debian_runc_tilde_rc_is_a_pre_release() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let c = on_fixture(&f, &["check", "--output", "json"]).json();
    let runc = c["node"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["component"] == "runc")
        .expect("runc found");
    assert_eq!(runc["version"], "1.0.0~rc6", "{runc}");
    let fnd = finding(&c, "runc_version").unwrap();
    assert!(
        fnd["summary"]
            .as_str()
            .unwrap()
            .contains("before 1.0.0-rc94 enables kmem"),
        "{fnd}"
    );
}

/// Regression: the
/// memcg_id_headroom evidence says "N live memcgs (directories, root included)" and
/// names the mount point on v2 too, where live memcgs are not the directories (root +
/// children of +memory parents) and on 6.12+ come from cgroup.stat nr_subsys_memory.
#[test]
fn v2_live_evidence_names_its_source() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let c = on_fixture(&f, &["check", "--output", "json"]).json();
    let fnd = finding(&c, "memcg_id_headroom").unwrap();
    let live_ev = &fnd["evidence"][0];
    assert!(
        !live_ev["value"].as_str().unwrap().contains("directories"),
        "{fnd}"
    );
    assert!(
        fnd["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"].as_str().unwrap().contains("nr_subsys_memory")),
        "{fnd}"
    );
}

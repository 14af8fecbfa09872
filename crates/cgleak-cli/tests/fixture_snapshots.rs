//! `cgleak status --output json` and `cgleak check --output json` on the fixture host
//! roots of crates/cgleak-fixtures (kernels this machine cannot boot), compared with
//! the committed snapshots in tests/snapshots/<fixture>.{status,check}.json.
//!
//! A snapshot alone would let a wrong figure pass once recorded, so each test also
//! asserts the contract values directly: the era, the cgroup mode, dying memcgs, the
//! confidence of the IDs in use, headroom, orphans, the verdict and the exit code,
//! against figures the fixture computed from its own tree and against docs/kernel-facts.md.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p cgleak --test fixture_snapshots` rewrites the
//! snapshots; read the diff against docs/kernel-facts.md before committing it.

mod common;

use serde_json::{json, Value};

use common::fixture::{assert_snapshot, at, find_in, finding, normalize, on_fixture, Fixture};

const ID_LIMIT: u64 = 65535;

/// The contract of one fixture, from docs/kernel-facts.md.
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

/// The contract of a CentOS/RHEL 7 3.10 node, healthy (facts §1, §2): dying memcgs keep
/// their IDs and /proc/cgroups forgets them, so the IDs in use are only a lower bound.
const EL7_3_10: Expect = Expect {
    era: "3.10-el7",
    mode: "v1",
    confidence: "lower_bound",
    headroom: None,
    dying_source: "not_countable",
    orphans: 0,
    verdict: "healthy",
    exit: 0,
};

/// The contract of a healthy v1 node of 4.7 .. 5.4.40 (facts §1, §2): IDs released at
/// offline, dying memcgs are /proc/cgroups minus the live ones.
const V1_4_7: Expect = Expect {
    era: "4.7-5.4.40",
    mode: "v1",
    confidence: "exact",
    headroom: Some(None),
    dying_source: "proc_cgroups_minus_live",
    orphans: 0,
    verdict: "healthy",
    exit: 0,
};

/// The contract of a healthy 6.12+ v2 node (facts §1, §2): cgroup.stat counts memcgs and
/// dying ones exactly.
const V2_6_12: Expect = Expect {
    era: "6.12+",
    mode: "v2",
    confidence: "exact",
    headroom: Some(None),
    dying_source: "nr_dying_subsys_memory",
    orphans: 0,
    verdict: "healthy",
    exit: 0,
};

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
    let headroom = e.headroom.map(|h| h.unwrap_or(ID_LIMIT - t.live_memcgs));
    // Each census field and what it must be. Null where this kernel cannot tell: dying
    // (3.10 hides dying memcgs), headroom, kmem_active (where kmem is not opt-in).
    for (path, want) in [
        ("kernel.release", json!(t.release)),
        ("kernel.era", json!(e.era)),
        ("kernel.era_exact", json!(true)),
        ("cgroup.mode", json!(e.mode)),
        ("cgroup.memory_root", json!(t.memory_root)),
        ("memcg.live", json!(t.live_memcgs)),
        ("memcg.dying", json!(t.dying)),
        ("memcg.dying_source", json!(e.dying_source)),
        ("memcg.id_limit", json!(ID_LIMIT)),
        ("memcg.ids_in_use_confidence", json!(e.confidence)),
        ("memcg.headroom", json!(headroom)),
        ("memcg.kmem_active", json!(t.kmem_active)),
        ("kubepods.pods", json!(t.pods)),
        ("kubepods.containers", json!(t.containers)),
        ("kubepods.orphans", json!(e.orphans)),
        ("walk_gone", json!(0)),
    ] {
        assert_eq!(at(&s, path), &want, "{}", ctx(path));
    }
    let ids = at(&s, "memcg.ids_in_use")
        .as_u64()
        .expect("ids_in_use is a number on every fixture");
    assert!(
        ids >= t.live_memcgs,
        "{}",
        ctx("ids_in_use below the live memcgs")
    );
    if let Some(h) = headroom {
        assert_eq!(ids + h, ID_LIMIT, "{}", ctx("ids_in_use + headroom"));
    }
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
    // status adds the named dying memcgs beside the census (dying_named, dying_pinned_bytes,
    // dying_by_parent), and both documents start with their schema_version.
    assert_eq!(s["schema_version"], 1, "{name}: status's schema_version");
    assert_eq!(c["schema_version"], 1, "{name}: check's schema_version");
    let mut census_part = s.clone();
    for k in ["dying_named", "dying_pinned_bytes", "dying_by_parent", "schema_version"] {
        census_part.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(at(&c, "census"), &census_part, "{name}: check's census equals status");
    assert_snapshot(&format!("{name}.check.json"), &c);
    fixture_specific(name, &s, &c);
}

/// The severity of the finding `id`, which the report must have.
fn severity<'a>(c: &'a Value, id: &str) -> &'a Value {
    &finding(c, id).unwrap_or_else(|| panic!("no {id} finding"))["severity"]
}

fn remedies(c: &Value) -> Vec<&str> {
    c["remedies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect()
}

/// A kmem opt-in kernel without cgroup.memory=nokmem (3.10.0-957, 4.4) whose per-memcg
/// slab caches, dead ones among them, are named as `naming` says: no nokmem remedy.
fn dead_caches_and_no_nokmem(s: &Value, rem: &[&str], naming: &str) {
    assert_eq!(at(s, "slab.naming"), naming);
    assert!(at(s, "slab.dead_caches").as_u64().unwrap() > 0);
    assert_eq!(at(s, "kernel.nokmem_supported"), false);
    assert!(!rem.contains(&"nokmem"), "{rem:?}");
}

/// The memcg_id_headroom finding, of `severity`, its summary saying `headroom`.
fn headroom_finding<'a>(c: &'a Value, severity: &str, headroom: &str) -> &'a Value {
    let f = finding(c, "memcg_id_headroom").expect("a memcg_id_headroom finding");
    assert_eq!(f["severity"], severity, "{f}");
    assert!(f["summary"].as_str().unwrap().contains(headroom), "{f}");
    f
}

/// Checks that only make sense for one fixture.
fn fixture_specific(name: &str, s: &Value, c: &Value) {
    let rem = remedies(c);
    match name {
        "centos7-957-kmem" => {
            // 3.10: per-memcg caches at the top of /sys/kernel/slab; filebeat and node-exporter names carry several ids.
            // 957 predates the RHEL7 nokmem backport (1062+): no nokmem remedy.
            dead_caches_and_no_nokmem(s, &rem, "top_level");
            assert_eq!(at(s, "slab.names_with_several_ids").as_u64(), Some(2));
            assert_eq!(severity(c, "slab_dead_caches"), "warning");
            assert_eq!(severity(c, "kmem_accounting_active"), "warning");
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
            // cgroup.memory=nokmem does not exist in 4.4.
            dead_caches_and_no_nokmem(s, &rem, "cgroup_subdir");
        }
        "debian-4.19-v1-dying" => {
            assert_eq!(severity(c, "dying_memcgs"), "warning");
            assert_eq!(severity(c, "orphan_pod_cgroups"), "warning");
            assert!(rem.contains(&"gc") && rem.contains(&"reclaim"), "{rem:?}");
            assert_eq!(at(s, "kubepods.by_qos.guaranteed.pods").as_u64(), Some(2));
        }
        "debian-5.10-hybrid" => {
            assert_eq!(at(s, "cgroup.memory_version").as_u64(), Some(1));
            let unified = find_in(s, "cgroup.mounts", "mount_point", "/sys/fs/cgroup/unified");
            assert_eq!(unified.expect("the unified mount")["version"], 2);
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
            assert_eq!(severity(c, "dying_memcgs"), "warning");
            let reclaim = find_in(c, "remedies", "action", "reclaim").expect("a reclaim remedy");
            assert!(
                reclaim["summary"]
                    .as_str()
                    .unwrap()
                    .contains("memory.reclaim"),
                "{reclaim}"
            );
        }
        "6.12-v2-near-limit" => {
            let f = headroom_finding(c, "warning", "headroom 3035");
            assert!(
                find_in(f, "evidence", "file", "/sys/fs/cgroup/cgroup.stat").is_some(),
                "{f}"
            );
        }
        "6.12-v2-exhausted" => {
            headroom_finding(c, "critical", "headroom 0");
            // 6.12+ releases dying memcgs' IDs: live memcgs fill the space and come back after a reboot.
            assert!(!rem.contains(&"reboot") && rem.contains(&"reduce-cgroups"), "{rem:?}");
            assert_eq!(find_in(c, "not_offered", "action", "reboot").expect("reboot left out")["kind"], "no_gain");
        }
        n if n.starts_with("el7-") || n.starts_with("ubuntu-4.4.0-21") || n == "linux-4.4.131-enospc" || n == "debian-4.19-nokmem" || n == "rhel8-4.18-bls-dying" => {
            old_node_specific(n, s, c, &rem)
        }
        other => panic!("no fixture-specific checks for {other}"),
    }
}

/// The old nodes of the decision table (crates/cgleak-fixtures old_nodes.rs): their
/// census says what the table's rows rest on.
fn old_node_specific(name: &str, s: &Value, c: &Value, rem: &[&str]) {
    let mut charges: Vec<&str> = at(s, "kubepods.orphan_pods").as_array().unwrap().iter().map(|p| p["charge"].as_str().unwrap()).collect();
    charges.sort_unstable();
    let era = at(s, "kernel.era").as_str().unwrap();
    let kmem = at(s, "kernel.kmem_accounting").as_str().unwrap();
    let errno = at(s, "kernel.mkdir_errno_when_full").as_str().unwrap();
    let logged = finding(c, "memcg_create_failures");
    match name {
        "el7-514-kmem-exhausted" => {
            // el7 514/693: css_id, ENOSPC (facts §1a); the kubelet logged ENOSPC.
            assert_eq!((era, errno, kmem), ("3.10-el7", "ENOSPC", "opt_in"));
            assert_eq!(charges, ["kmem", "none"]);
            assert!(logged.unwrap()["summary"].as_str().unwrap().contains("(ENOSPC; 1 pods)"), "{logged:?}");
        }
        "el7-693-kmem-leaking" => {
            assert_eq!((era, errno, kmem), ("3.10-el7", "ENOSPC", "opt_in"));
            assert_eq!(charges, ["kmem"]);
            assert!(logged.is_none());
        }
        "el7-957-kmem-exhausted" | "el7-957-kmem-exhausted-1160-next" => {
            assert_eq!((era, errno, kmem), ("3.10-el7", "ENOMEM", "opt_in"));
            assert!(charges.iter().all(|c| *c == "kmem"), "{charges:?}");
            assert!(logged.is_some());
            assert_eq!(rem[0], "reboot");
            let next = if name.ends_with("1160-next") { "3.10.0-1160.119.1.el7.x86_64" } else { "3.10.0-957.27.2.el7.x86_64" };
            assert_eq!(at(c, "node.next_boot.release"), next);
            assert_eq!(at(c, "node.next_boot.how"), "saved_entry");
        }
        "el7-1062-kmem-at-risk" => {
            assert_eq!((era, errno, kmem), ("3.10-el7", "ENOMEM", "opt_in"));
            assert!(at(s, "memcg.ids_in_use").as_u64().unwrap() as f64 >= 0.9 * ID_LIMIT as f64);
            assert_eq!(at(s, "memcg.dying_at_least").as_u64(), Some(59_000));
            assert_eq!(at(s, "kernel.nokmem_supported"), true);
        }
        "el7-1160-kmem-exhausted" => {
            assert_eq!((era, errno, kmem), ("3.10-el7", "ENOMEM", "opt_in"));
            assert_eq!(charges, ["kmem", "none"]);
            assert!(rem.contains(&"nokmem"), "{rem:?}");
        }
        "el7-1160-nokmem-exhausted" => {
            // nokmem honoured: kmem off everywhere, no per-memcg caches, status says so.
            assert_eq!((era, kmem, at(s, "kernel.nokmem_set")), ("3.10-el7", "off_nokmem", &Value::Bool(true)));
            assert_eq!(at(s, "memcg.kmem_active").as_u64(), Some(0));
            assert!(finding(c, "kernel_era").unwrap()["summary"].as_str().unwrap().contains("kmem accounting is off for every memcg (cgroup.memory=nokmem)"));
            assert_eq!(charges, ["none", "page_cache"]);
            assert_eq!(rem[0], "reclaim");
        }
        "ubuntu-4.4.0-21-kmem-exhausted" => {
            // 4.4.0-21 is upstream 4.4.6: before the 4.4.18 backport, IDs kept, ENOSPC (facts §1a).
            assert_eq!((era, errno, kmem), ("4.0-4.6", "ENOSPC", "opt_in"));
            assert_eq!(rem[0], "reboot");
        }
        "linux-4.4.131-enospc" => {
            // ENOSPC on a kernel that returns ENOMEM: another cause, said in the finding.
            assert_eq!((era, errno), ("4.7-5.4.40", "ENOMEM"));
            assert!(logged.unwrap()["summary"].as_str().unwrap().contains("another errno may be another cause"), "{logged:?}");
            assert!(rem.contains(&"find-other-cause"), "{rem:?}");
        }
        "debian-4.19-nokmem" => {
            assert_eq!((era, kmem), ("4.7-5.4.40", "off_nokmem"));
            assert!(finding(c, "kernel_era").unwrap()["summary"].as_str().unwrap().contains("kmem accounting is off for every memcg (cgroup.memory=nokmem)"));
            assert_eq!(charges, ["page_cache"]);
        }
        "rhel8-4.18-bls-dying" => {
            assert_eq!((era, errno, kmem), ("4.7-5.4.40", "ENOMEM", "on_for_every"));
            // BLS: grubenv's saved_entry names the entry of the newer kernel.
            assert_eq!(at(c, "node.next_boot.release"), "4.18.0-513.5.1.el8_9.x86_64");
            assert_eq!(at(c, "node.next_boot.how"), "saved_entry");
            assert_eq!(rem, ["reclaim"]);
        }
        other => panic!("no old-node checks for {other}"),
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
        "el7-514-kmem-exhausted",
        "el7-693-kmem-leaking",
        "el7-957-kmem-exhausted",
        "el7-957-kmem-exhausted-1160-next",
        "el7-1062-kmem-at-risk",
        "el7-1160-kmem-exhausted",
        "el7-1160-nokmem-exhausted",
        "ubuntu-4.4.0-21-kmem-exhausted",
        "linux-4.4.131-enospc",
        "debian-4.19-nokmem",
        "rhel8-4.18-bls-dying",
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
            // kmem active in the kubepods tree and dead per-memcg caches.
            verdict: "leaking",
            exit: 3,
            ..EL7_3_10
        },
    );
}

#[test]
fn rhel7_1160_nokmem() {
    // nokmem: no kmem-active memcg, no per-memcg caches.
    check_fixture(cgleak_fixtures::rhel7_1160_nokmem(), EL7_3_10);
}

#[test]
fn linux_4_4_v1() {
    check_fixture(
        cgleak_fixtures::linux_4_4_v1(),
        Expect {
            // kmem opt-in switched on by kubelet 1.11/runc rc5; dead caches pin dying memcgs (<= 5.8).
            verdict: "leaking",
            exit: 3,
            // 4.4.131 carries the 73f576c04b94 backport: IDs released at offline (facts §1).
            ..V1_4_7
        },
    );
}

#[test]
fn debian_4_19_v1_dying() {
    check_fixture(
        cgleak_fixtures::debian_4_19_v1_dying(),
        Expect {
            // 5000 dying > live, and two orphaned pod cgroups.
            orphans: 2,
            verdict: "leaking",
            exit: 3,
            ..V1_4_7
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
            // 2417 dying > live.
            verdict: "leaking",
            exit: 3,
            ..V2_6_12
        },
    );
}

#[test]
fn v6_12_v2_near_limit() {
    check_fixture(
        cgleak_fixtures::v6_12_v2_near_limit(),
        Expect {
            // 65535 - 62500
            headroom: Some(Some(3035)),
            verdict: "at_risk",
            exit: 3,
            ..V2_6_12
        },
    );
}

#[test]
fn v6_12_v2_exhausted() {
    check_fixture(
        cgleak_fixtures::v6_12_v2_exhausted(),
        Expect {
            headroom: Some(Some(0)),
            verdict: "exhausted",
            exit: 4,
            ..V2_6_12
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
    let runc = find_in(&c, "node.versions", "component", "runc").expect("runc found");
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

/// An exhausted el7 (or 4.0-4.6) node: the kubelet's failed mkdir in the logs (headroom
/// cannot be counted there), or the exact count at 65535.
const OLD_EXHAUSTED: Expect = Expect { verdict: "exhausted", exit: 4, ..EL7_3_10 };

#[test]
fn el7_514_kmem_exhausted() {
    check_fixture(cgleak_fixtures::el7_514_kmem_exhausted(), Expect { orphans: 2, ..OLD_EXHAUSTED });
}

#[test]
fn el7_693_kmem_leaking() {
    check_fixture(cgleak_fixtures::el7_693_kmem_leaking(), Expect { orphans: 1, verdict: "leaking", exit: 3, ..EL7_3_10 });
}

#[test]
fn el7_957_kmem_exhausted() {
    check_fixture(cgleak_fixtures::el7_957_kmem_exhausted(), Expect { orphans: 2, ..OLD_EXHAUSTED });
}

#[test]
fn el7_957_kmem_exhausted_1160_next() {
    check_fixture(cgleak_fixtures::el7_957_kmem_exhausted_1160_next(), Expect { orphans: 1, ..OLD_EXHAUSTED });
}

#[test]
fn el7_1062_kmem_at_risk() {
    check_fixture(cgleak_fixtures::el7_1062_kmem_at_risk(), Expect { orphans: 2, verdict: "at_risk", exit: 3, ..EL7_3_10 });
}

#[test]
fn el7_1160_kmem_exhausted() {
    check_fixture(cgleak_fixtures::el7_1160_kmem_exhausted(), Expect { orphans: 2, ..OLD_EXHAUSTED });
}

#[test]
fn el7_1160_nokmem_exhausted() {
    check_fixture(cgleak_fixtures::el7_1160_nokmem_exhausted(), Expect { orphans: 2, ..OLD_EXHAUSTED });
}

#[test]
fn ubuntu_4_4_0_21_kmem_exhausted() {
    check_fixture(
        cgleak_fixtures::ubuntu_4_4_0_21_kmem_exhausted(),
        Expect {
            era: "4.0-4.6",
            mode: "v1",
            // 4.x /proc/cgroups counts dying memcgs, which keep their IDs here: exact.
            confidence: "exact",
            headroom: Some(Some(0)),
            dying_source: "proc_cgroups_minus_live",
            orphans: 1,
            verdict: "exhausted",
            exit: 4,
        },
    );
}

#[test]
fn linux_4_4_131_enospc() {
    check_fixture(cgleak_fixtures::linux_4_4_131_enospc(), Expect { orphans: 1, verdict: "exhausted", exit: 4, ..V1_4_7 });
}

#[test]
fn debian_4_19_nokmem() {
    check_fixture(cgleak_fixtures::debian_4_19_nokmem(), Expect { orphans: 1, verdict: "leaking", exit: 3, ..V1_4_7 });
}

#[test]
fn rhel8_4_18_bls_dying() {
    check_fixture(cgleak_fixtures::rhel8_4_18_bls_dying(), Expect { verdict: "leaking", exit: 3, ..V1_4_7 });
}

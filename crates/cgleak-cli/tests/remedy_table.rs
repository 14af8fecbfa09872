//! The decision table "Remedies by era" of the README, row by row: each row is a fixture
//! host root (crates/cgleak-fixtures: a kernel build in one situation, with its node
//! facts), judged by the real `cgleak check` and `check --reboot-required`. The README's
//! table is rendered from these runs and must equal it (`UPDATE_README=1` rewrites it),
//! so the table cannot say what the binary does not do. On top of the rendering, each
//! rule the table stands for is asserted on every row it applies to, and the fix plans
//! are held to the same judge (`fix nokmem`, `fix migrate`, `fix reboot`, `fix gc`).

mod common;

use std::fs;
use std::path::Path;

use serde_json::Value;

use common::fixture::{on_fixture, Fixture, Run};

/// A row: the fixture and what it shows, in the table's words.
struct Row {
    fixture: fn() -> Fixture,
    node: &'static str,
}

fn rows() -> Vec<Row> {
    use cgleak_fixtures as f;
    vec![
        Row { fixture: f::el7_514_kmem_exhausted, node: "CentOS 7.3 (el7 514)" },
        Row { fixture: f::el7_693_kmem_leaking, node: "CentOS 7.4 (el7 693)" },
        Row { fixture: f::centos7_957_kmem, node: "CentOS 7.6 (el7 957)" },
        Row { fixture: f::el7_957_kmem_exhausted, node: "CentOS 7.6 (el7 957)" },
        Row { fixture: f::el7_957_kmem_exhausted_1160_next, node: "CentOS 7.6 (el7 957), 1160 installed" },
        Row { fixture: f::el7_1062_kmem_at_risk, node: "CentOS 7.7 (el7 1062)" },
        Row { fixture: f::el7_1160_kmem_exhausted, node: "RHEL 7.9 (el7 1160)" },
        Row { fixture: f::el7_1160_nokmem_exhausted, node: "RHEL 7.9 (el7 1160)" },
        Row { fixture: f::rhel7_1160_nokmem, node: "RHEL 7.9 (el7 1160)" },
        Row { fixture: f::ubuntu_4_4_0_21_kmem_exhausted, node: "Ubuntu 16.04 GA (4.4.0-21)" },
        Row { fixture: f::linux_4_4_v1, node: "4.4.131 (backport)" },
        Row { fixture: f::linux_4_4_131_enospc, node: "4.4.131 (backport)" },
        Row { fixture: f::debian_4_19_v1_dying, node: "Debian 10 (4.19)" },
        Row { fixture: f::debian_4_19_nokmem, node: "Debian 10 (4.19)" },
        Row { fixture: f::rhel8_4_18_bls_dying, node: "RHEL 8.5 (4.18), BLS" },
        Row { fixture: f::v6_12_v2_near_limit, node: "6.12, v2" },
        Row { fixture: f::v6_12_v2_exhausted, node: "6.12, v2" },
    ]
}

/// One row judged: the fixture's name, `check --output json`, and the exit codes.
struct Judged {
    name: &'static str,
    node: &'static str,
    report: Value,
    check_exit: i32,
    reboot_exit: i32,
    reboot_line: String,
}

fn judge(row: &Row) -> Judged {
    let f = (row.fixture)();
    let state = f.root().join("var/lib/cgleak");
    let state = state.to_str().unwrap();
    let run = on_fixture(&f, &["check", "--output", "json", "--state-dir", state]);
    let report = run.json();
    let rr: Run = on_fixture(&f, &["check", "--reboot-required", "--state-dir", state]);
    Judged { name: f.name, node: row.node, report, check_exit: run.code, reboot_exit: rr.code, reboot_line: rr.stdout.trim().to_string() }
}

fn all_judged() -> &'static [Judged] {
    static JUDGED: std::sync::OnceLock<Vec<Judged>> = std::sync::OnceLock::new();
    JUDGED.get_or_init(|| rows().iter().map(judge).collect())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn remedies(j: &Judged) -> &Vec<Value> {
    j.report["remedies"].as_array().expect("remedies")
}

fn remedy<'a>(j: &'a Judged, action: &str) -> Option<&'a Value> {
    remedies(j).iter().find(|r| r["action"] == action)
}

fn not_offered<'a>(j: &'a Judged, action: &str) -> Option<&'a Value> {
    j.report["not_offered"].as_array().expect("not_offered").iter().find(|r| r["action"] == action)
}

fn gain(r: &Value) -> String {
    let g = &r["id_gain"];
    match (g["ids"].as_u64(), s(g, "bound")) {
        (Some(n), "exact") => n.to_string(),
        (Some(n), "at_least") => format!(">={n}"),
        (Some(n), "at_most") => format!("<={n}"),
        _ => "?".into(),
    }
}

/// The facts column: what of the node decided the remedies.
fn facts(j: &Judged) -> String {
    let st = &j.report["situation"];
    let mut out = Vec::new();
    out.push(match s(st, "kmem") {
        "opt_in" if st["kmem_leak"] == true => "kmem on in pods".to_string(),
        "opt_in" => "kmem opt-in, off".to_string(),
        "off_nokmem" => "nokmem on".to_string(),
        _ if st["kmem_leak"] == true => "kmem always on, slab pins".to_string(),
        _ => "kmem always on".to_string(),
    });
    let n = &st["nokmem"];
    if s(st, "kmem") != "off_nokmem" {
        let next = &n["next_boot"];
        out.push(if n["running_supports"] == true {
            "nokmem supported".to_string()
        } else if next["supports_nokmem"] == true && next["differs"] == true {
            format!("nokmem: next boot {} has it", s(next, "release").split(".el7").next().unwrap_or(""))
        } else {
            format!("no nokmem (from {})", s(n, "first_with_it"))
        });
    }
    if st["kubelet_enables_kmem"] == true || st["runc_enables_kmem"] == true {
        out.push("old kubelet/runc".into());
    }
    let o = &st["orphans"];
    if o["pods"].as_u64().unwrap_or(0) > 0 {
        let mut kinds = Vec::new();
        for (k, w) in [("kmem", "kmem"), ("uncharged", "uncharged"), ("page_cache", "page cache")] {
            if let Some(n) = o[k].as_u64().filter(|n| *n > 0) {
                kinds.push(format!("{n} {w}"));
            }
        }
        out.push(format!("orphan memcgs: {}", kinds.join(", ")));
    }
    if st["creation_failures_logged"] == true {
        out.push("failed mkdir logged".into());
    }
    out.join("; ")
}

/// `1. reboot (R, P; >=40)`: needs a reboot, disturbs pods, the expected ID gain.
fn remedy_cell(j: &Judged) -> String {
    let list: Vec<String> = remedies(j)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut flags = Vec::new();
            if r["needs_reboot"] == true {
                flags.push("R");
            }
            if r["disturbs_pods"] == true {
                flags.push("P");
            }
            let flags = if flags.is_empty() { "-".to_string() } else { flags.join(", ") };
            format!("{}. `{}` ({flags}; {})", i + 1, s(r, "action"), gain(r))
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join("<br>")
    }
}

fn not_offered_cell(j: &Judged) -> String {
    let list: Vec<String> = j.report["not_offered"].as_array().unwrap().iter().map(|n| format!("`{}` ({})", s(n, "action"), s(n, "kind"))).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn render(all: &[Judged]) -> String {
    let mut t = String::from(
        "| node | fixture | era | verdict | node facts | remedies, best first (R needs a reboot, P disturbs pods; expected ID gain) | not offered | `--reboot-required` |\n|---|---|---|---|---|---|---|---|\n",
    );
    for j in all {
        t.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |\n",
            j.node,
            j.name,
            s(&j.report["census"]["kernel"], "era"),
            s(&j.report, "verdict"),
            facts(j),
            remedy_cell(j),
            not_offered_cell(j),
            j.reboot_exit
        ));
    }
    t
}

const BEGIN: &str = "<!-- remedy-table:begin (rendered by crates/cgleak-cli/tests/remedy_table.rs; UPDATE_README=1 rewrites it) -->\n";
const END: &str = "<!-- remedy-table:end -->";

#[test]
fn the_readme_table_is_what_check_says_on_every_row() {
    let table = render(all_judged());
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = fs::read_to_string(&readme).unwrap();
    let (a, b) = (text.find(BEGIN).expect("README has the remedy table's begin marker"), text.find(END).expect("README has the end marker"));
    let current = &text[a + BEGIN.len()..b];
    if std::env::var_os("UPDATE_README").is_some_and(|v| v == "1") {
        fs::write(&readme, format!("{}{table}{}", &text[..a + BEGIN.len()], &text[b..])).unwrap();
        return;
    }
    assert_eq!(current, table, "README's remedy table differs from what cgleak says; rerun with UPDATE_README=1 and review the diff");
}

#[test]
fn check_exits_by_verdict() {
    for j in all_judged() {
        let want = match s(&j.report, "verdict") {
            "healthy" => 0,
            "exhausted" => 4,
            _ => 3,
        };
        assert_eq!(j.check_exit, want, "{}", j.name);
    }
}

/// Where dying memcgs keep their IDs and kernel memory pins them, a node short of IDs
/// gets the reboot first (kured drains it), orphans or not, and kured's sentinel command
/// says so; nowhere else is the reboot first.
#[test]
fn ids_kept_and_kmem_pinned_and_short_means_reboot_first() {
    for j in all_judged() {
        let st = &j.report["situation"];
        let short = matches!(s(&j.report, "verdict"), "at_risk" | "exhausted");
        let pinned = st["dying_hold_ids"] == true && st["kmem_leak"] == true && s(st, "kmem") != "off_nokmem";
        let first = remedies(j).first().map(|r| s(r, "action")).unwrap_or("");
        if short && pinned {
            assert_eq!(first, "reboot", "{}", j.name);
            assert_eq!(j.reboot_exit, 0, "{}: {}", j.name, j.reboot_line);
            let r = remedy(j, "reboot").unwrap();
            assert!(s(r, "summary").contains("kured drains the node"), "{}: {r}", j.name);
        } else {
            assert_ne!(first, "reboot", "{}", j.name);
            assert_eq!(j.reboot_exit, 1, "{}: {}", j.name, j.reboot_line);
        }
        // A kernel that releases IDs never gets a reboot for them.
        if st["dying_hold_ids"] == false {
            assert!(remedy(j, "reboot").is_none(), "{}", j.name);
        }
    }
}

/// gc is offered for the IDs it really frees: on kernels that keep dying memcgs' IDs, only
/// orphans with no charge (freed at rmdir) or page cache only (freed after reclaim).
#[test]
fn gc_is_offered_for_its_real_gain_only() {
    for j in all_judged() {
        let st = &j.report["situation"];
        let o = &st["orphans"];
        let n = |k: &str| o[k].as_u64().unwrap_or(0);
        if n("pods") == 0 {
            assert!(remedy(j, "gc").is_none() && not_offered(j, "gc").is_none(), "{}", j.name);
            continue;
        }
        if st["dying_hold_ids"] == true {
            let freed = n("uncharged") + n("page_cache");
            match remedy(j, "gc") {
                Some(r) => {
                    assert!(freed > 0, "{}", j.name);
                    assert_eq!(r["id_gain"]["ids"], n("uncharged"), "{}", j.name);
                    let sum = s(r, "summary");
                    assert!(sum.contains(&format!("{} with no charge left are freed at rmdir", n("uncharged"))), "{}: {sum}", j.name);
                    if n("kmem") > 0 {
                        assert!(sum.contains(&format!("{} kmem-charged keep their IDs until a reboot", n("kmem"))), "{}: {sum}", j.name);
                    }
                }
                None => {
                    assert_eq!(freed, 0, "{}", j.name);
                    assert!(s(not_offered(j, "gc").unwrap(), "reason").contains("frees no ID"), "{}", j.name);
                }
            }
        } else {
            assert_eq!(remedy(j, "gc").expect("gc")["id_gain"]["ids"], n("memcgs"), "{}", j.name);
        }
    }
}

/// nokmem only where the running kernel or the next one to boot honours it; el7 862/957
/// get "update within CentOS 7 to >= 3.10.0-1062, then nokmem, then reboot".
#[test]
fn nokmem_only_where_a_kernel_honours_it() {
    for j in all_judged() {
        let st = &j.report["situation"];
        let n = &st["nokmem"];
        let available = n["running_supports"] == true || n["next_boot"]["supports_nokmem"] == true;
        if let Some(r) = remedy(j, "nokmem") {
            assert!(available, "{}: nokmem offered on a kernel without it: {r}", j.name);
        }
        if !available && s(st, "kmem") != "off_nokmem" && remedy(j, "reboot").is_some() {
            let why = not_offered(j, "nokmem").unwrap_or_else(|| panic!("{}: nokmem neither offered nor left out", j.name));
            assert_eq!(why["kind"], "unsupported", "{}", j.name);
            if s(st, "era") == "3.10-el7" {
                assert!(s(why, "reason").contains("3.10.0-1062"), "{}: {why}", j.name);
                let u = remedy(j, "update-kernel").unwrap_or_else(|| panic!("{}: no update-kernel", j.name));
                assert!(s(u, "summary").starts_with("update within CentOS 7 to 3.10.0-1062 or later"), "{}: {u}", j.name);
                assert!(s(u, "summary").contains("then add cgroup.memory=nokmem") && s(u, "summary").contains("then reboot"), "{}", j.name);
            }
        }
    }
    let next = all_judged().iter().find(|j| j.name == "el7-957-kmem-exhausted-1160-next").unwrap();
    assert!(s(remedy(next, "nokmem").unwrap(), "summary").contains("3.10.0-1160.119.1.el7.x86_64, the next kernel to boot"));
}

/// kubelet and runc upgrades say that kubepods and its QoS classes stay kmem-active.
#[test]
fn userspace_upgrades_say_kubepods_stays_kmem_active() {
    let mut seen = 0;
    for j in all_judged() {
        for a in ["upgrade-kubelet", "upgrade-runc"] {
            if let Some(r) = remedy(j, a) {
                seen += 1;
                assert!(s(r, "summary").contains("kubepods and its QoS classes stay kmem-active and new pods inherit it"), "{}: {r}", j.name);
                assert_eq!(s(&j.report["situation"], "kmem"), "opt_in", "{}", j.name);
            }
        }
    }
    assert!(seen >= 10, "{seen}");
}

/// migrate is never offered without the free IDs its mirror needs, and says how many.
#[test]
fn migrate_needs_free_ids() {
    for j in all_judged() {
        let st = &j.report["situation"];
        let unknown_with_failures = st["headroom"].is_null() && st["creation_failures_logged"] == true;
        if (s(&j.report, "verdict") == "exhausted" && st["headroom"].as_u64().unwrap_or(0) == 0) || unknown_with_failures {
            assert!(remedy(j, "migrate").is_none(), "{}", j.name);
            if s(st, "kmem") == "opt_in" && st["kmem_leak"] == true {
                let why = s(not_offered(j, "migrate").unwrap_or_else(|| panic!("{}", j.name)), "reason").to_string();
                assert!(why.contains(&format!("the mirror needs {} free", st["kubepods_memcgs"])), "{}: {why}", j.name);
            }
        }
    }
}

/// On el7 and 3.10 with leaked kmem memcgs, drop_caches with slab is a mitigation, its cadence stated.
#[test]
fn slab_reclaim_is_a_stated_mitigation_on_kmem_leaks() {
    for j in all_judged().iter().filter(|j| j.report["situation"]["dying_hold_ids"] == true && j.report["situation"]["kmem_leak"] == true) {
        let r = remedy(j, "reclaim").unwrap_or_else(|| panic!("{}: no reclaim", j.name));
        assert_eq!(s(r, "command"), "cgleak fix reclaim --slab --apply", "{}", j.name);
        assert!(s(r, "summary").starts_with("a mitigation") && s(r, "summary").contains("at most once an hour"), "{}: {r}", j.name);
        assert!(s(r, "summary").contains("--reclaim-every"), "{}", j.name);
    }
}

fn fix_plan(f: &Fixture, args: &[&str]) -> Run {
    let state = tempfile::tempdir().unwrap();
    let mut all = vec!["fix"];
    all.extend_from_slice(args);
    all.extend(["--state-dir", state.path().to_str().unwrap(), "--output", "json"]);
    on_fixture(f, &all)
}

#[test]
fn fix_plans_follow_the_judge() {
    // nokmem on a kernel without it: refused (5), naming the first build that has it.
    let f = cgleak_fixtures::el7_957_kmem_exhausted();
    let run = fix_plan(&f, &["nokmem"]);
    assert_eq!(run.code, 5, "{run:#?}");
    let refused = run.json()["plan"]["refused"].as_str().unwrap().to_string();
    assert!(refused.contains("does not know cgroup.memory=nokmem") && refused.contains("3.10.0-1062"), "{refused}");
    // ... but planned where the next kernel to boot honours it.
    let f = cgleak_fixtures::el7_957_kmem_exhausted_1160_next();
    let run = fix_plan(&f, &["nokmem"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let plan = &run.json()["plan"];
    assert!(plan["refused"].is_null(), "{plan}");
    assert!(plan["notes"].to_string().contains("3.10.0-1160.119.1.el7.x86_64, which does"), "{plan}");

    // migrate on an exhausted el7 node whose headroom cannot be counted: refused with the mirror's size.
    let f = cgleak_fixtures::el7_957_kmem_exhausted();
    let run = fix_plan(&f, &["migrate", "--cgroup", "kubepods", "--allow-kubelet"]);
    assert_eq!(run.code, 5, "{run:#?}");
    let refused = run.json()["plan"]["refused"].as_str().unwrap().to_string();
    assert!(refused.contains("the logs show failed memcg creations: the mirror needs") && refused.contains("free memcg IDs"), "{refused}");

    // reboot: planned (the sentinel) exactly where the judge ranks it first.
    let run = fix_plan(&f, &["reboot", "--sentinel", "/var/run/reboot-required"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let plan = &run.json()["plan"];
    assert!(plan["nothing_to_do"].is_null() && plan["steps"].as_array().unwrap().len() == 1, "{plan}");
    let f = cgleak_fixtures::el7_1160_nokmem_exhausted();
    let run = fix_plan(&f, &["reboot"]);
    assert!(run.json()["plan"]["nothing_to_do"].as_str().unwrap().contains("remedy reclaim comes first"), "{run:#?}");

    // gc's expected gain is the judge's: nothing on el7 for kmem-charged orphans.
    let f = cgleak_fixtures::el7_957_kmem_exhausted();
    // --min-age 0: the fixture's orphans were made a moment ago.
    let run = fix_plan(&f, &["gc", "--min-age", "0"]);
    let gain = run.json()["plan"]["expected_gain"].as_str().unwrap().to_string();
    assert!(gain.contains("frees no ID on el7") && gain.contains("6 kmem-charged keep their IDs until a reboot"), "{gain}");
}

//! `cgleak check --npd` (node-problem-detector custom plugin: one line of at most 80
//! characters, exit 0 OK, 1 NonOK, 2 Unknown) and `cgleak check --reboot-required`
//! (kured's sentinel command: exit 0 only when a reboot is the one fix) on fixture
//! hosts, and the shipped NPD config in deploy/node-problem-detector.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use cgleak_readers::logs::clock::civil_from_days;
use serde_json::Value;

use common::fixture::{cgleak_cmd, Fixture, Run};

const POD: &str = "8c0d2e4f-6a1b-4c3d-9e5f-7a8b9c0d1e2f";
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const NPD_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/node-problem-detector/cgleak-plugin-monitor.json");

/// `cgleak --host-root <root> <args>` with TZ=UTC (the syslog lines below are in UTC).
fn on_root(root: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.env("TZ", "UTC");
    let root = root.to_str().expect("utf-8 path").to_string();
    let mut all = vec!["--host-root", root.as_str()];
    all.extend_from_slice(args);
    cgleak_cmd(c, &all)
}

fn on(f: &Fixture, args: &[&str]) -> Run {
    on_root(f.root(), args)
}

/// The verdict of `check --output json`, for comparison with the one-line modes.
fn verdict(f: &Fixture) -> String {
    let run = on(f, &["check", "--output", "json"]);
    run.json()["verdict"].as_str().unwrap_or_else(|| panic!("no verdict: {run:#?}")).to_string()
}

/// stdout is exactly one line of at most 80 bytes.
fn one_short_line(run: &Run) -> &str {
    let line = run.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("stdout does not end in a newline: {run:#?}"));
    assert!(!line.contains('\n') && !line.is_empty(), "not one line: {run:#?}");
    assert!(line.len() <= 80, "{} bytes: {line:?}", line.len());
    line
}

/// A syslog line (BSD time, UTC) of kubelet failing to create a pod's memory cgroup on a
/// cgroup v1, cgroupfs-driver node with docker, a few minutes ago: ENOMEM, as 3.10-el7
/// returns when the ID space is full.
fn el7_kubelet_enomem_line() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 240;
    let (_, mo, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    format!(
        "{} {d:2} {h:02}:{mi:02}:{se:02} node-7 kubelet: E{mo:02}{d:02} {h:02}:{mi:02}:{se:02}.482113    1962 pod_workers.go:190] Error syncing pod {POD} (\"batch-report-1566398800-7kq2m_default({POD})\"), skipping: failed to ensure that the pod: {POD} cgroups exist and are correctly applied: failed to create container for [kubepods besteffort pod{POD}] : mkdir /sys/fs/cgroup/memory/kubepods/besteffort/pod{POD}: cannot allocate memory",
        MONTHS[mo as usize - 1]
    )
}

/// centos7-957-kmem (3.10-el7, kubelet 1.x and runc enabling kmem, dead slab caches)
/// with a failed pod cgroup mkdir in /var/log/messages: exhausted by the logs, IDs held
/// by kmem-pinned dying memcgs that 3.10 frees only with the memcg struct.
fn centos7_exhausted() -> Fixture {
    let f = cgleak_fixtures::centos7_957_kmem();
    f.host().file("/var/log/messages", format!("{}\n", el7_kubelet_enomem_line()));
    assert_eq!(verdict(&f), "exhausted", "the log line must make the el7 fixture exhausted");
    f
}

#[test]
fn npd_exit_code_follows_the_verdict_with_one_short_line() {
    let cases: [(&str, Fixture, i32); 6] = [
        ("6.12 exhausted", cgleak_fixtures::v6_12_v2_exhausted(), 1),
        ("6.12 near limit", cgleak_fixtures::v6_12_v2_near_limit(), 1),
        ("centos7 kmem", cgleak_fixtures::centos7_957_kmem(), 1),
        ("debian 4.19 dying", cgleak_fixtures::debian_4_19_v1_dying(), 1),
        ("debian 6.1 v2", cgleak_fixtures::debian_6_1_v2(), 0),
        ("rhel7 nokmem", cgleak_fixtures::rhel7_1160_nokmem(), 0),
    ];
    for (what, f, code) in cases {
        let v = verdict(&f);
        let run = on(&f, &["check", "--npd"]);
        assert_eq!(run.code, code, "{what} ({v}): {run:#?}");
        let line = one_short_line(&run);
        assert!(line.starts_with(&format!("{v}: ")), "{what}: {line:?}");
    }
}

#[test]
fn npd_lines_say_what_the_ids_are() {
    let run = on(&cgleak_fixtures::v6_12_v2_exhausted(), &["check", "--npd"]);
    assert_eq!(one_short_line(&run), "exhausted: 65535/65535 memcg IDs in use, headroom 0, 3 dying");
    let run = on(&cgleak_fixtures::centos7_957_kmem(), &["check", "--npd"]);
    // 3.10 cannot count dying memcgs: a lower bound, no headroom, and the leak's findings.
    let line = one_short_line(&run);
    assert!(line.starts_with("leaking: >=44/65535 memcg IDs in use; kmem_accounting_active"), "{line:?}");
}

#[test]
fn npd_problem_selects_what_each_rule_reports() {
    let near = cgleak_fixtures::v6_12_v2_near_limit();
    let full = cgleak_fixtures::v6_12_v2_exhausted();
    let dying = cgleak_fixtures::debian_4_19_v1_dying();
    for (what, f, problem, code) in [
        ("near limit", &near, "at_risk", 1),
        ("near limit", &near, "exhausted", 0),
        ("near limit", &near, "leaking", 0),
        ("exhausted", &full, "exhausted", 1),
        ("exhausted", &full, "at_risk", 0),
        ("dying", &dying, "leaking", 1),
        ("dying", &dying, "exhausted,at_risk", 0),
        ("dying", &dying, "exhausted,leaking", 1),
    ] {
        let run = on(f, &["check", "--npd", "--npd-problem", problem]);
        assert_eq!(run.code, code, "{what} --npd-problem {problem}: {run:#?}");
        one_short_line(&run);
    }
}

#[test]
fn npd_errors_are_unknown_never_a_problem() {
    // A host root without /proc: a runtime error, exit 1 without --npd.
    let empty = tempfile::tempdir().unwrap();
    let plain = on_root(empty.path(), &["check"]);
    assert_eq!(plain.code, 1, "{plain:#?}");
    let run = on_root(empty.path(), &["check", "--npd"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let line = one_short_line(&run);
    assert!(line.starts_with("unknown: ") && line.contains("mountinfo"), "{line:?}");

    // Usage errors: 2 as well, with the line on stdout for NPD.
    let f = cgleak_fixtures::debian_6_1_v2();
    let run = on(&f, &["check", "--npd", "--output", "json"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(one_short_line(&run).contains("--output"), "{run:#?}");
    let run = on(&f, &["check", "--npd", "--incidents-since", "soon"]);
    assert_eq!(run.code, 2, "{run:#?}");
    one_short_line(&run);
    let run = on_root(&empty.path().join("missing"), &["check", "--npd"]);
    assert_eq!(run.code, 2, "{run:#?}");
    one_short_line(&run);
}

#[test]
fn npd_and_reboot_required_exclude_each_other_and_npd_problem_needs_npd() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let run = on(&f, &["check", "--npd", "--reboot-required"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("cannot be used with"), "{run:#?}");
    let run = on(&f, &["check", "--npd-problem", "leaking"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let run = on(&f, &["check", "--npd", "--npd-problem", "healthy"]);
    assert_eq!(run.code, 2, "healthy is never a problem: {run:#?}");
    let run = on(&f, &["check", "--reboot-required", "--output", "json"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.starts_with("no reboot"), "{run:#?}");
}

#[test]
fn reboot_required_only_where_a_reboot_is_the_one_fix() {
    let f = centos7_exhausted();
    let run = on(&f, &["check", "--reboot-required"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.starts_with("reboot required: node is exhausted, at least"), "{run:#?}");
    assert!(run.stdout.contains("era 3.10-el7"), "{run:#?}");
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    // The same host with the logs left out is only leaking: pods still start.
    let run = on(&f, &["check", "--reboot-required", "--incidents-since", "0"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("no reboot needed: the node is leaking"), "{run:#?}");
}

#[test]
fn no_reboot_where_something_else_helps_or_nothing_is_wrong() {
    let debian_full = cgleak_fixtures::debian_6_1_v2();
    debian_full.host().file("/var/log/syslog", format!("{}\n", el7_kubelet_enomem_line()));
    assert_eq!(verdict(&debian_full), "exhausted");
    let cases: [(&str, Fixture, &str); 5] = [
        // 6.12: every ID is held by a live memcg, which a reboot brings back.
        ("6.12 exhausted", cgleak_fixtures::v6_12_v2_exhausted(), "release their IDs"),
        ("6.12 near limit", cgleak_fixtures::v6_12_v2_near_limit(), "release their IDs"),
        ("6.1 exhausted by its logs", debian_full, "release their IDs"),
        ("centos7 leaking", cgleak_fixtures::centos7_957_kmem(), "not short"),
        ("rhel7 nokmem", cgleak_fixtures::rhel7_1160_nokmem(), "not short"),
    ];
    for (what, f, why) in cases {
        let run = on(&f, &["check", "--reboot-required"]);
        assert_eq!(run.code, 1, "{what}: {run:#?}");
        assert!(run.stdout.starts_with("no reboot needed: ") && run.stdout.contains(why), "{what}: {run:#?}");
    }
}

#[test]
fn reboot_required_errors_never_exit_0_or_1() {
    let empty = tempfile::tempdir().unwrap();
    let run = on_root(empty.path(), &["check", "--reboot-required"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.starts_with("no reboot: the node could not be judged"), "{run:#?}");
    assert!(run.stderr.contains("mountinfo"), "{run:#?}");
}

/// Seconds of an NPD duration ("30s", "5m", "1h").
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    n.parse::<u64>().unwrap_or_else(|e| panic!("{d:?}: {e}"))
        * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("{d:?}: unit not s, m or h"),
        }
}

fn is_camel_case(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[test]
fn npd_config_is_a_valid_custom_plugin_monitor() {
    let text = std::fs::read_to_string(NPD_CONFIG).unwrap_or_else(|e| panic!("{NPD_CONFIG}: {e}"));
    let c: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{NPD_CONFIG}: {e}"));
    assert_eq!(c["plugin"], "custom");
    let pc = &c["pluginConfig"];
    assert_eq!(pc["max_output_length"], 80, "the --npd line is built for 80");
    assert_eq!(pc["enable_message_change_based_condition_update"], false, "counts change every run");
    assert!(pc["concurrency"].as_u64().is_some_and(|n| n >= 1));
    let global_timeout = seconds(pc["timeout"].as_str().unwrap());
    assert!(global_timeout < seconds(pc["invoke_interval"].as_str().unwrap()));
    assert!(c["source"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(c["metricsReporting"], true);

    let conditions = c["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1);
    // One writer per condition: NPD's type is its own, never the agent's (whose True means
    // leaking, near the limit or exhausted; this one, exhausted only).
    assert_eq!(conditions[0]["type"], "MemcgIdsExhausted");
    assert_ne!(conditions[0]["type"], cgleak_kube::objects::CONDITION_TYPE, "the agent writes that one");
    assert_eq!(conditions[0]["reason"], "MemcgIdsAvailable");
    assert!(conditions[0]["message"].as_str().is_some_and(|m| !m.is_empty()));

    let rules = c["rules"].as_array().unwrap();
    let mut reasons = Vec::new();
    let mut permanent = 0;
    for r in rules {
        let reason = r["reason"].as_str().unwrap();
        assert!(is_camel_case(reason) && reason.starts_with("Memcg"), "{reason}");
        reasons.push(reason);
        match r["type"].as_str().unwrap() {
            "permanent" => {
                permanent += 1;
                // One permanent rule per condition: two would flip it back and forth.
                assert_eq!(r["condition"], "MemcgIdsExhausted", "{r}");
            }
            "temporary" => assert!(r.get("condition").is_none(), "{r}"),
            t => panic!("rule type {t}"),
        }
        let path = r["path"].as_str().unwrap();
        assert!(path.starts_with('/') && path.ends_with("/cgleak"), "{path}");
        // NPD refuses a rule timeout above the global one.
        assert!(seconds(r["timeout"].as_str().unwrap()) <= global_timeout, "{r}");
        let args: Vec<&str> = r["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(&args[..2], ["check", "--npd"], "{r}");
    }
    assert_eq!(permanent, 1);
    let mut sorted = reasons.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), reasons.len(), "distinct reasons: {reasons:?}");
    for want in ["MemcgExhausted", "MemcgNearLimit", "MemcgLeaking"] {
        assert!(reasons.contains(&want), "{want} in {reasons:?}");
    }
}

/// Each rule's args, as NPD runs them (with /host pointing at a fixture), answer for
/// their own reason only.
#[test]
fn npd_config_rules_run_and_answer_for_their_reason() {
    let c: Value = serde_json::from_str(&std::fs::read_to_string(NPD_CONFIG).unwrap()).unwrap();
    let near = cgleak_fixtures::v6_12_v2_near_limit();
    let full = cgleak_fixtures::v6_12_v2_exhausted();
    let healthy = cgleak_fixtures::debian_6_1_v2();
    for r in c["rules"].as_array().unwrap() {
        let reason = r["reason"].as_str().unwrap();
        for (what, f, hit) in [
            ("near limit", &near, reason == "MemcgNearLimit"),
            ("exhausted", &full, reason == "MemcgExhausted"),
            ("healthy", &healthy, false),
        ] {
            let root = f.root().to_str().unwrap();
            let args: Vec<&str> = r["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| if a == "/host" { root } else { a.as_str().unwrap() })
                .collect();
            assert!(args.contains(&root), "the rule reads the host at /host: {args:?}");
            let run = cgleak_cmd(Command::new(env!("CARGO_BIN_EXE_cgleak")), &args);
            assert_eq!(run.code, i32::from(hit), "{reason} on {what}: {run:#?}");
            one_short_line(&run);
        }
    }
}

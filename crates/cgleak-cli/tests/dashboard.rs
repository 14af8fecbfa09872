//! The Grafana dashboard `deploy/grafana/cgleak-dashboard.json`: well-formed (every panel on
//! the `${datasource}` variable, a `$node` variable over the agents' nodes, unique panel
//! IDs), and every query of every panel run by `promtool query instant` against a real
//! Prometheus scraping two real agents (a 6.12 v2 node and a CentOS 7 node, fixture roots),
//! with `$node` at both nodes: each must parse and return a non-empty result, so no panel of
//! the fleet view or the node view is empty on a fresh install.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::agent::{agent_command, free_port, scrape, wait_for, Agent, Prometheus};

fn dashboard() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/cgleak-dashboard.json");
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Every (panel title, expr) of the dashboard.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap().to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "cgleak-memcg");
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "node"]);
    assert_eq!(vars[1]["definition"], "label_values(cgleak_memcg_live, node)");
    let mut ids = BTreeSet::new();
    let mut node_view = 0;
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{}: says what it shows", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            node_view += usize::from(t["expr"].as_str().unwrap().contains("$node"));
        }
    }
    assert!(node_view >= 8, "the node view filters by $node");
    // The fleet view covers what the issue named.
    let all: String = queries(&d).into_iter().map(|(_, e)| e).collect::<Vec<_>>().join("\n");
    for m in ["cgleak_memcg_headroom", "cgleak_memcg_ids_in_use_confidence", "cgleak_memcg_dying", "cgleak_memcg_exhaustion_forecast_seconds", "cgleak_log_incidents_total", "up{"] {
        assert!(all.contains(m), "no panel reads {m}");
    }
}

fn promtool() -> PathBuf {
    let p = PathBuf::from("/usr/bin/promtool");
    assert!(p.is_file(), "promtool (Debian package prometheus) is needed");
    p
}

#[test]
fn every_query_returns_data_from_a_real_prometheus_scraping_real_agents() {
    let nodes = [("n1", cgleak_fixtures::debian_6_12_v2_dying_subsys()), ("e1", cgleak_fixtures::by_name("centos7-957-kmem").expect("fixture"))];
    let dir = tempfile::tempdir().unwrap();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, (_, f)) in nodes.iter().enumerate() {
        let port = free_port();
        // Logs read (the fixtures' /var/log): the incident counters are there from the first scrape.
        let state = dir.path().join(format!("state{i}"));
        let mut cmd = agent_command(f.root(), &state, "1s", &format!("127.0.0.1:{port}"), &[]);
        agents.push(Agent::spawn(&mut cmd, port));
    }
    for a in &agents {
        wait_for("the agent's /metrics", Duration::from_secs(30), || scrape(a.port).filter(|t| t.contains("cgleak_log_incidents_total")));
    }
    let targets: String = nodes
        .iter()
        .zip(&agents)
        .map(|((node, _), a)| format!("      - targets: ['127.0.0.1:{}']\n        labels: {{node: {node}}}\n", a.port))
        .collect();
    let prom = Prometheus::start(&format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cgleak\n    static_configs:\n{targets}"));
    // Both agents scraped, a few times (increase() needs two samples of a series).
    wait_for("prometheus to scrape both agents 3 times", Duration::from_secs(90), || {
        prom.query("count_over_time(up[1m])").filter(|b| b.matches("\"value\"").count() == 2 && !b.contains("\"1\"]") && !b.contains("\"2\"]"))
    });
    let server = format!("http://127.0.0.1:{}", prom.port);
    let mut failures = Vec::new();
    for (title, expr) in queries(&dashboard()) {
        let q = expr.replace("$node", "n1|e1");
        let out = Command::new(promtool()).args(["query", "instant", &server, &q]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text.trim().is_empty() {
            failures.push(format!("{title}: `{q}`: exit {}, {:?} {}", out.status, text, String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "queries without data:\n{}", failures.join("\n"));
}

//! The agent's history read back by `status` and `check` (`--state-dir`): the forecast in
//! the table and the JSON, and the `exhaustion_forecast` finding. Without a history nothing
//! changes (the fixture snapshots cover that).

mod common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::fixture::{at, find_in, on_fixture};

/// A history rising by 50 IDs a minute for an hour, from 60000, ending now.
fn rising_history(dir: &std::path::Path) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let mut text = String::new();
    for i in 0..60u64 {
        let t = now - 60.0 * (59 - i) as f64 - 5.0;
        text.push_str(&format!("{{\"at_unix_secs\":{t},\"ids_in_use\":{},\"id_limit\":65535}}\n", 60000 + 50 * i));
    }
    fs::write(dir.join("agent-history.jsonl"), text).unwrap();
}

#[test]
fn status_and_check_show_the_forecast_from_the_history() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    rising_history(state.path());
    let sd = state.path().to_str().unwrap();

    let r = on_fixture(&f, &["status", "--state-dir", sd, "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(at(&v, "forecast.outcome"), "approaching", "{v}");
    let secs = at(&v, "forecast.seconds_to_exhaustion").as_f64().unwrap();
    assert!(secs > 0.0 && secs < 24.0 * 3600.0, "{secs}");

    let r = on_fixture(&f, &["status", "--state-dir", sd]);
    assert!(r.stdout.contains("\nforecast    at +3000.0 IDs per hour"), "{}", r.stdout);

    let r = on_fixture(&f, &["check", "--state-dir", sd, "--incidents-since", "0", "--output", "json"]);
    let v = r.json();
    let finding = find_in(&v, "findings", "id", "exhaustion_forecast").unwrap_or_else(|| panic!("no exhaustion_forecast in {v}"));
    assert_eq!(finding["severity"], "critical", "{finding}");
    assert_eq!(at(&v, "verdict"), "at_risk", "{v}");
    assert_eq!(r.code, 3, "{}", r.stderr);
}

#[test]
fn no_history_no_forecast() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let state = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap();
    let v = on_fixture(&f, &["status", "--state-dir", sd, "--output", "json"]).json();
    assert!(v.get("forecast").is_none(), "{v}");
    let v = on_fixture(&f, &["check", "--state-dir", sd, "--incidents-since", "0", "--output", "json"]).json();
    assert!(find_in(&v, "findings", "id", "exhaustion_forecast").is_none(), "{v}");
    assert!(v["node"].get("forecast").is_none(), "{v}");
}

//! One scenario's outcome: the checks it made (ground truth against cgleak) and what it measured.

use serde_json::{json, Map, Value};

/// The line a scenario prints, after [`RESULT_MARKER`]: `{"kernel", "mode", "scenario", "passed", "details"}`.
pub const RESULT_MARKER: &str = "CGLEAK-LAB-RESULT ";
/// Printed once every scenario has reported.
pub const DONE_MARKER: &str = "CGLEAK-LAB-DONE";

#[derive(Debug, Default)]
pub struct Outcome {
    /// Measurements, in the order they were taken.
    pub details: Map<String, Value>,
    passed: Vec<String>,
    failed: Vec<Value>,
    /// The scenario could not run here (e.g. a v1 file on a v2-only kernel): says why.
    pub skipped: Option<String>,
}

impl Outcome {
    pub fn measure(&mut self, key: &str, v: impl Into<Value>) {
        self.details.insert(key.to_string(), v.into());
    }

    /// `actual == expected`, remembered under `what`.
    pub fn eq<T: PartialEq + Into<Value> + Clone>(&mut self, what: &str, expected: T, actual: T) -> bool {
        let ok = expected == actual;
        self.record(what, ok, expected.into(), actual.into());
        ok
    }

    /// A condition with the value that decided it.
    pub fn that(&mut self, what: &str, ok: bool, actual: impl Into<Value>) -> bool {
        self.record(what, ok, Value::Bool(true), actual.into());
        ok
    }

    fn record(&mut self, what: &str, ok: bool, expected: Value, actual: Value) {
        if ok {
            self.passed.push(what.to_string());
        } else {
            self.failed.push(json!({ "check": what, "expected": expected, "actual": actual }));
        }
    }

    /// An error that stopped the scenario.
    pub fn error(&mut self, e: &anyhow::Error) {
        self.failed.push(json!({ "check": "ran to the end", "error": format!("{e:#}") }));
    }

    pub fn skip(&mut self, why: impl Into<String>) {
        self.skipped = Some(why.into());
    }

    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn into_line(mut self, kernel: &str, mode: &str, scenario: &str) -> Value {
        let passed = self.passed();
        if let Some(s) = self.skipped.take() {
            self.details.insert("skipped".into(), s.into());
        }
        self.details.insert("checks_passed".into(), self.passed.len().into());
        if !self.failed.is_empty() {
            self.details.insert("failed".into(), Value::Array(self.failed));
        }
        json!({ "kernel": kernel, "mode": mode, "scenario": scenario, "passed": passed, "details": self.details })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_line_and_says_what() {
        let mut o = Outcome::default();
        o.measure("memcgs", 65535);
        assert!(o.eq("errno", "ENOSPC".to_string(), "ENOSPC".to_string()));
        assert!(!o.eq("exit code", 4, 1));
        let line = o.into_line("6.1", "v1", "exhaustion");
        assert_eq!(line["passed"], false);
        assert_eq!(line["kernel"], "6.1");
        assert_eq!(line["details"]["memcgs"], 65535);
        assert_eq!(line["details"]["checks_passed"], 1);
        assert_eq!(line["details"]["failed"][0], json!({ "check": "exit code", "expected": 4, "actual": 1 }));
    }

    #[test]
    fn a_skipped_scenario_passes_and_says_why() {
        let mut o = Outcome::default();
        o.skip("v1 file on a v2-only kernel");
        let line = o.into_line("6.12", "v2", "move-charge");
        assert_eq!(line["passed"], true);
        assert_eq!(line["details"]["skipped"], "v1 file on a v2-only kernel");
        assert!(line["details"].get("failed").is_none());
    }
}

//! Handing a verdict to node tools: node-problem-detector's custom plugin protocol
//! (one line on stdout, exit 0 OK, 1 NonOK, 2 Unknown; NPD cuts the line at
//! `max_output_length`, 80 by default) and kured's `--reboot-sentinel-command`
//! (exit 0 means "reboot this node"; kured reads any other code as "no reboot").
//!
//! Pure functions of [`HandoffFacts`], a small value taken from a [`CheckReport`], so
//! every decision is tested without a host.

use crate::census::{Confidence, MEMCG_ID_LIMIT};
use crate::verdict::{CheckReport, Severity, Verdict};

/// NPD cuts plugin output at `max_output_length` (80 in its configs and by default):
/// the line is built to fit, so the cut never falls mid-word.
pub const NPD_MAX_LINE: usize = 80;

/// Exit status of an NPD custom plugin (pkg/custompluginmonitor/types: OK 0, NonOK 1, Unknown 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpdStatus {
    /// Condition False: no problem this rule watches for.
    Ok,
    /// Condition True (permanent rule) or an Event (temporary rule).
    NonOk,
    /// Condition Unknown: cgleak could not judge the node.
    Unknown,
}

impl NpdStatus {
    pub fn exit_code(self) -> u8 {
        match self {
            NpdStatus::Ok => 0,
            NpdStatus::NonOk => 1,
            NpdStatus::Unknown => 2,
        }
    }
}

/// What an NPD plugin run prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpdResult {
    pub status: NpdStatus,
    /// One line, at most [`NPD_MAX_LINE`] bytes, no newline.
    pub line: String,
}

/// The facts of a report that the handoffs rest on.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffFacts {
    pub verdict: Verdict,
    /// Every verdict some finding implies (the report's verdict is the highest).
    pub implied: Vec<Verdict>,
    /// Ids of the findings of warning or critical severity, in report order, with what each implies.
    pub problems: Vec<(&'static str, Verdict)>,
    pub era: &'static str,
    pub live: u64,
    pub dying: Option<u64>,
    pub ids_in_use: Option<u64>,
    pub confidence: Confidence,
    pub headroom: Option<u64>,
    /// The judge's first remedy: (action, summary).
    pub first_remedy: Option<(&'static str, String)>,
    /// Why the judge left the reboot out, when it did.
    pub reboot_left_out: Option<String>,
}

impl HandoffFacts {
    pub fn from_report(r: &CheckReport) -> HandoffFacts {
        let mut implied: Vec<Verdict> = r.findings.iter().map(|f| f.implies).collect();
        implied.push(r.verdict);
        implied.sort();
        implied.dedup();
        let m = &r.census.memcg;
        HandoffFacts {
            verdict: r.verdict,
            implied,
            problems: r.findings.iter().filter(|f| f.severity >= Severity::Warning).map(|f| (f.id, f.implies)).collect(),
            era: r.census.era.id.as_str(),
            live: m.live,
            dying: m.dying,
            ids_in_use: m.ids_in_use,
            confidence: m.ids_in_use_confidence,
            headroom: m.headroom,
            first_remedy: r.remedies.first().map(|x| (x.action, x.summary.clone())),
            reboot_left_out: r.not_offered("reboot").map(|n| n.reason.clone()),
        }
    }
}

/// The NPD plugin answer. `problems` are the verdicts this rule reports (NonOK when some
/// finding implies one of them): NPD gives each rule one fixed reason, and two permanent
/// rules on one condition would flip it back and forth, so each rule asks for its own.
pub fn npd_result(f: &HandoffFacts, problems: &[Verdict]) -> NpdResult {
    let hit = problems.iter().any(|p| *p != Verdict::Healthy && f.implied.contains(p));
    NpdResult { status: if hit { NpdStatus::NonOk } else { NpdStatus::Ok }, line: npd_line(f) }
}

/// The answer when the node could not be judged: Unknown, never NonOK (an error is not
/// a memcg problem), with the error as the message.
pub fn npd_unknown(error: &str) -> NpdResult {
    let one_line = error.split_whitespace().collect::<Vec<_>>().join(" ");
    NpdResult { status: NpdStatus::Unknown, line: fit(format!("unknown: {one_line}")) }
}

/// `exhausted: 65535/65535 memcg IDs in use, headroom 0, 3 dying`, then the ids of the
/// findings behind the verdict while they fit.
pub fn npd_line(f: &HandoffFacts) -> String {
    let ids = match (f.ids_in_use, f.confidence) {
        (Some(n), Confidence::Exact) => format!("{n}/{MEMCG_ID_LIMIT} memcg IDs in use"),
        (Some(n), Confidence::Estimate) => format!("~{n}/{MEMCG_ID_LIMIT} memcg IDs in use"),
        (Some(n), _) => format!(">={n}/{MEMCG_ID_LIMIT} memcg IDs in use"),
        (None, _) => "memcg IDs in use unknown".to_string(),
    };
    let mut line = format!("{}: {ids}", f.verdict.as_str());
    if let Some(h) = f.headroom {
        line.push_str(&format!(", headroom {h}"));
    }
    if let Some(d) = f.dying {
        line.push_str(&format!(", {d} dying"));
    }
    // The findings that raise the verdict beyond what the ID count says.
    let mut sep = "; ";
    for (id, implies) in &f.problems {
        if *id == "memcg_id_headroom" || *implies != f.verdict || f.verdict == Verdict::Healthy {
            continue;
        }
        if line.len() + sep.len() + id.len() <= NPD_MAX_LINE {
            line.push_str(sep);
            line.push_str(id);
            sep = ",";
        }
    }
    fit(line)
}

/// At most [`NPD_MAX_LINE`] bytes, cut on a character boundary.
fn fit(mut s: String) -> String {
    if s.len() > NPD_MAX_LINE {
        let mut end = NPD_MAX_LINE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Whether only a reboot can fix this node, and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootDecision {
    pub required: bool,
    pub reason: String,
}

/// A reboot is required exactly when the ID space is short (at_risk or exhausted) and the
/// judge ranks the reboot first: where dying memcgs keep their IDs and kernel memory pins
/// them, only a reboot frees those IDs (facts §1a, §4; the decision table in
/// [`crate::verdict::remedies`]).
pub fn reboot_decision(f: &HandoffFacts) -> RebootDecision {
    let no = |reason: String| RebootDecision { required: false, reason: format!("no reboot needed: {reason}") };
    if f.verdict < Verdict::AtRisk {
        return no(format!("the node is {}, the memcg ID space is not short", f.verdict.as_str()));
    }
    match &f.first_remedy {
        Some(("reboot", summary)) => {
            let ids = match f.ids_in_use {
                Some(n) if f.confidence == Confidence::LowerBound => format!("at least {n}"),
                Some(n) => n.to_string(),
                None => "an unknown number of".into(),
            };
            RebootDecision {
                required: true,
                reason: format!("reboot required: node is {}, {ids} memcg IDs in use ({} live) on era {}: {summary}", f.verdict.as_str(), f.live, f.era),
            }
        }
        _ if f.reboot_left_out.is_some() => no(f.reboot_left_out.clone().unwrap_or_default()),
        Some((action, summary)) => no(format!("remedy {action} comes first ({summary})")),
        None => no("no remedy of this node needs a reboot".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy 6.1 node; each test changes what it is about.
    fn facts() -> HandoffFacts {
        HandoffFacts {
            verdict: Verdict::Healthy,
            implied: vec![Verdict::Healthy],
            problems: vec![],
            era: "5.4.41-6.11",
            live: 43,
            dying: Some(38),
            ids_in_use: Some(43),
            confidence: Confidence::Exact,
            headroom: Some(65492),
            first_remedy: None,
            reboot_left_out: None,
        }
    }

    const ALL: [Verdict; 3] = [Verdict::Leaking, Verdict::AtRisk, Verdict::Exhausted];

    /// An el7 node whose dying memcgs hold every ID, pinned by kmem-charged slab.
    fn el7_exhausted() -> HandoffFacts {
        HandoffFacts {
            verdict: Verdict::Exhausted,
            implied: vec![Verdict::Healthy, Verdict::Leaking, Verdict::Exhausted],
            problems: vec![("kmem_accounting_active", Verdict::Leaking), ("memcg_create_failures", Verdict::Exhausted)],
            era: "3.10-el7",
            live: 36,
            dying: None,
            ids_in_use: Some(44),
            confidence: Confidence::LowerBound,
            headroom: None,
            first_remedy: Some(("reboot", "hand the node to kured: only a reboot frees them".into())),
            reboot_left_out: None,
        }
    }

    #[test]
    fn healthy_is_ok_with_a_short_line() {
        let r = npd_result(&facts(), &ALL);
        assert_eq!(r.status, NpdStatus::Ok);
        assert_eq!(r.status.exit_code(), 0);
        assert_eq!(r.line, "healthy: 43/65535 memcg IDs in use, headroom 65492, 38 dying");
    }

    #[test]
    fn exhausted_is_nonok_and_names_the_headroom() {
        let f = HandoffFacts {
            verdict: Verdict::Exhausted,
            implied: vec![Verdict::Healthy, Verdict::Exhausted],
            problems: vec![("memcg_id_headroom", Verdict::Exhausted)],
            era: "6.12+",
            live: 65535,
            dying: Some(3),
            ids_in_use: Some(65535),
            headroom: Some(0),
            ..facts()
        };
        let r = npd_result(&f, &ALL);
        assert_eq!(r.status, NpdStatus::NonOk);
        assert_eq!(r.status.exit_code(), 1);
        assert_eq!(r.line, "exhausted: 65535/65535 memcg IDs in use, headroom 0, 3 dying");
    }

    #[test]
    fn each_rule_reports_only_its_own_problem() {
        let f = el7_exhausted();
        assert_eq!(npd_result(&f, &[Verdict::Exhausted]).status, NpdStatus::NonOk);
        // The node also leaks: the leaking rule's event fires beside the exhausted condition.
        assert_eq!(npd_result(&f, &[Verdict::Leaking]).status, NpdStatus::NonOk);
        assert_eq!(npd_result(&f, &[Verdict::AtRisk]).status, NpdStatus::Ok);
        let healthy = facts();
        for v in ALL {
            assert_eq!(npd_result(&healthy, &[v]).status, NpdStatus::Ok, "{v:?}");
        }
        // Healthy is never a problem, even when asked for.
        assert_eq!(npd_result(&healthy, &[Verdict::Healthy]).status, NpdStatus::Ok);
    }

    #[test]
    fn line_names_the_findings_behind_the_verdict_and_fits() {
        let f = el7_exhausted();
        let line = npd_line(&f);
        assert_eq!(line, "exhausted: >=44/65535 memcg IDs in use; memcg_create_failures");
        let many = HandoffFacts {
            verdict: Verdict::Leaking,
            implied: vec![Verdict::Healthy, Verdict::Leaking],
            problems: vec![
                ("dying_memcgs", Verdict::Leaking),
                ("orphan_pod_cgroups", Verdict::Leaking),
                ("kmem_accounting_active", Verdict::Leaking),
                ("slab_dead_caches", Verdict::Leaking),
            ],
            live: 65000,
            dying: Some(4_294_967_295),
            ids_in_use: Some(65000),
            confidence: Confidence::Estimate,
            headroom: Some(535),
            ..facts()
        };
        // Finding ids are added whole while they fit, never cut.
        let line = npd_line(&many);
        assert_eq!(line, "leaking: ~65000/65535 memcg IDs in use, headroom 535, 4294967295 dying");
        let line = npd_line(&HandoffFacts { dying: Some(5000), ..many });
        assert_eq!(line, "leaking: ~65000/65535 memcg IDs in use, headroom 535, 5000 dying; dying_memcgs");
        assert!(line.len() <= NPD_MAX_LINE, "{} bytes: {line}", line.len());
    }

    #[test]
    fn unknown_is_one_line_that_fits() {
        let long = format!("cannot read /host/proc/self/mountinfo:\n  No such file or directory {}", "x".repeat(200));
        let r = npd_unknown(&long);
        assert_eq!(r.status, NpdStatus::Unknown);
        assert_eq!(r.status.exit_code(), 2);
        assert!(r.line.starts_with("unknown: cannot read /host/proc/self/mountinfo: No such"), "{}", r.line);
        assert_eq!(r.line.len(), NPD_MAX_LINE);
        assert!(!r.line.contains('\n'));
        // A cut never splits a character.
        let r = npd_unknown(&"é".repeat(100));
        assert!(r.line.len() <= NPD_MAX_LINE && r.line.chars().all(|c| c == 'é' || "unknow: ".contains(c)));
    }

    #[test]
    fn reboot_when_the_judge_ranks_it_first_on_a_short_node() {
        let d = reboot_decision(&el7_exhausted());
        assert!(d.required, "{d:?}");
        assert!(
            d.reason.starts_with("reboot required: node is exhausted, at least 44 memcg IDs in use (36 live) on era 3.10-el7: hand the node to kured"),
            "{}",
            d.reason
        );
        let at_risk = HandoffFacts { verdict: Verdict::AtRisk, ..el7_exhausted() };
        assert!(reboot_decision(&at_risk).required);
    }

    #[test]
    fn no_reboot_when_the_node_is_not_short_or_another_remedy_comes_first() {
        let base = el7_exhausted();
        let cases = [
            ("leaking only", HandoffFacts { verdict: Verdict::Leaking, ..base.clone() }, "not short"),
            ("healthy", facts(), "not short"),
            (
                "left out",
                HandoffFacts { first_remedy: Some(("gc", "remove".into())), reboot_left_out: Some("on 6.12+ dying memcgs release their IDs".into()), ..base.clone() },
                "release their IDs",
            ),
            ("gc first", HandoffFacts { first_remedy: Some(("reclaim", "drop caches".into())), ..base.clone() }, "remedy reclaim comes first"),
            ("nothing", HandoffFacts { first_remedy: None, ..base.clone() }, "no remedy"),
        ];
        for (what, f, why) in cases {
            let d = reboot_decision(&f);
            assert!(!d.required, "{what}: {d:?}");
            assert!(d.reason.starts_with("no reboot needed: ") && d.reason.contains(why), "{what}: {}", d.reason);
        }
    }
}

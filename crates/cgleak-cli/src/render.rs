//! What the commands print for people: the tables of status and check here, those of
//! logs, fix and lab in their modules, and notes on stderr; text from the host escaped.

pub mod dying;
pub mod fix;
pub mod history;
pub mod lab;
pub mod logs;

use std::fmt::Write;

use serde::Serialize;

use cgleak_model::census::Census;
use cgleak_model::verdict::{CheckReport, Severity};

use crate::args::OutputFormat;
use crate::exit::Failure;

/// A note (of a reader, the model, the agent) on stderr, beside the output.
pub fn note(n: String) {
    eprintln!("cgleak: note: {n}");
}

/// A JSON document as cgleak prints it: `schema_version` first, then the body's keys in
/// their order (a public contract: README, JSON).
#[derive(Serialize)]
pub struct Versioned<'a, T: Serialize + ?Sized> {
    schema_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

impl<'a, T: Serialize + ?Sized> Versioned<'a, T> {
    pub fn new(body: &'a T) -> Self {
        Versioned { schema_version: cgleak_model::SCHEMA_VERSION, body }
    }
}

/// `body` as a pretty JSON document with its `schema_version`.
pub fn json_document<T: Serialize + ?Sized>(body: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(&Versioned::new(body)).map_err(|e| Failure::runtime(format!("cannot encode the report as JSON: {e}")))
}

/// Prints the report on stdout: pretty JSON (with its `schema_version`), or the table
/// `render` makes.
pub fn print_report<R: Serialize>(output: OutputFormat, report: &R, render: impl FnOnce(&R) -> String) -> Result<(), Failure> {
    match output {
        OutputFormat::Json => println!("{}", json_document(report)?),
        OutputFormat::Table => print!("{}", render(report)),
    }
    Ok(())
}

/// `label: text` lines with every text in one column; an empty label continues the line above.
pub fn aligned_lines(lines: &[(&str, String)]) -> String {
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, text) in lines {
        let label = if label.is_empty() { String::new() } else { format!("{label}:") };
        // Paths and errors from the host: escaped, one line each (probe and lab reports).
        out.push_str(&format!("{label:<width$}  {}\n", esc(text)));
    }
    out
}

/// Text from the host (cgroup names, pod UIDs, paths, file content, log lines) as a table
/// shows it: control characters (C0, DEL, C1) escaped visibly (`\n`, `\x1b`), so a
/// name cannot break a line, forge one, or move the terminal's cursor. JSON needs none
/// of this: serde escapes.
pub fn esc(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    if !s.chars().any(is_control) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && is_control(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c.is_control()
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
}

/// A count that may be unknown, as the reports of fix, lab and the agent's reclaim say it.
pub fn or_na(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

pub fn status_table(c: &Census) -> String {
    let m = &c.memcg;
    let mut s = String::new();
    let _ = writeln!(s, "kernel      {} (era {}{})", esc(&c.kernel.release), c.kernel.era, if c.kernel.era_exact { "" } else { ", guessed" });
    let _ = writeln!(s, "kmem        {}", c.kernel.kmem_accounting.describe(&c.era, c.cgroup.memory_version));
    let _ = writeln!(s, "cgroup      {} — memory on v{} at {}", c.cgroup.mode.as_str(), c.cgroup.memory_version, esc(&c.cgroup.memory_root));
    let _ = writeln!(s);
    let _ = writeln!(s, "memcg IDs");
    let _ = writeln!(s, "  live          {}", m.live);
    let _ = writeln!(s, "  dying         {}  ({})", opt(m.dying), m.dying_source);
    let _ = writeln!(s, "  ids in use    {}  ({})", opt(m.ids_in_use), m.ids_in_use_confidence.as_str());
    let _ = writeln!(s, "  limit         {}", m.id_limit);
    let pct = match (m.ids_in_use, m.headroom) {
        (Some(i), Some(_)) => format!("  ({:.1}% used)", i as f64 * 100.0 / m.id_limit as f64),
        _ => String::new(),
    };
    let _ = writeln!(s, "  headroom      {}{}", opt(m.headroom), pct);
    let _ = writeln!(s, "  why           {}", esc(&m.ids_in_use_reason));
    match (m.kmem_active, &m.kmem_active_note) {
        (Some(k), note) => {
            let _ = writeln!(s, "  kmem-active   {k}{}", note.as_ref().map(|n| format!("  ({})", esc(n))).unwrap_or_default());
        }
        (None, Some(n)) => {
            let _ = writeln!(s, "  kmem-active   n/a  ({})", esc(n));
        }
        (None, None) => {}
    }
    let sl = &c.slab;
    if sl.summary.per_memcg_caches > 0 {
        let _ = writeln!(
            s,
            "  slab          {} per-memcg caches, {} kmemcg IDs; {} caches of deleted cgroups",
            sl.summary.per_memcg_caches, sl.summary.distinct_ids, sl.summary.dead_caches
        );
    }
    let _ = writeln!(s);
    match &c.kubepods {
        None => {
            let _ = writeln!(s, "kubepods    none found");
        }
        Some(k) => {
            let _ = writeln!(s, "kubepods    {} driver at {}", k.driver.as_str(), esc(k.roots.join(", ")));
            let _ = writeln!(s, "  {:<12} {:>6} {:>11}", "qos", "pods", "containers");
            for (q, n) in &k.by_qos {
                let _ = writeln!(s, "  {:<12} {:>6} {:>11}", q, n.pods, n.containers);
            }
            let _ = writeln!(s, "  {:<12} {:>6} {:>11}", "total", k.pods, k.containers);
            match k.orphans {
                Some(o) => {
                    let _ = writeln!(s, "  orphans       {o}");
                    for p in k.orphan_pods.iter().take(10) {
                        let _ = writeln!(s, "    {} ({}, {} memcgs, charge {})", esc(&p.path), p.qos.as_str(), p.memcgs, p.charge.as_str());
                    }
                    if k.orphan_pods.len() > 10 {
                        let _ = writeln!(s, "    ... and {} more (--output json lists all)", k.orphan_pods.len() - 10);
                    }
                }
                None => {
                    let _ = writeln!(s, "  orphans       unknown ({} not found; see --kubelet-root-dir)", esc(&k.kubelet_pods_dir));
                }
            }
        }
    }
    if !c.kernel.notes.is_empty() {
        let _ = writeln!(s);
        for n in &c.kernel.notes {
            let _ = writeln!(s, "note: {}", esc(n));
        }
    }
    s
}

pub fn check_table(r: &CheckReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "verdict: {}", r.verdict.as_str().to_uppercase());
    let _ = writeln!(s);
    let _ = writeln!(s, "findings");
    let mut fs: Vec<_> = r.findings.iter().collect();
    fs.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in fs {
        let tag = match f.severity {
            Severity::Critical => "CRIT",
            Severity::Warning => "WARN",
            Severity::Info => "info",
        };
        let _ = writeln!(s, "  [{tag}] {}: {}", f.id, esc(&f.summary));
        for e in &f.evidence {
            let _ = writeln!(s, "         {} = {}", esc(&e.file), esc(local_times(&e.value)));
        }
    }
    if !r.remedies.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "remedies (best first)");
        for (i, m) in r.remedies.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}. {}: {} [{}; {}]",
                i + 1,
                m.action,
                esc(&m.summary),
                if m.needs_reboot { "needs reboot" } else { "no reboot" },
                if m.disturbs_pods { "disturbs pods" } else { "pods undisturbed" }
            );
            let _ = writeln!(s, "     IDs gained: {}{}", esc(&m.id_gain.summary), if m.id_gain.stops_leak { " (stops the leak)" } else { "" });
            if let Some(c) = &m.command {
                let _ = writeln!(s, "     run: {}", esc(c));
            }
        }
    }
    if !r.not_offered.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "not offered");
        for n in &r.not_offered {
            let _ = writeln!(s, "  {}: {}", n.action, esc(&n.reason));
        }
    }
    s
}

/// Unix times in the model's words (`1796214828 (unix)`, `from A to B (unix)`) as local
/// date-times for people (`2026-12-02 12:33`, in the node's zone); JSON keeps the numbers.
pub fn local_times(text: &str) -> String {
    const TAG: &str = " (unix)";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(TAG) {
        let head = &rest[..i];
        // The number right before the tag, and `from <number> to ` before that.
        let num_start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |p| p + 1);
        let (before, b) = head.split_at(num_start);
        match b.parse::<f64>() {
            Ok(bv) if !b.is_empty() => {
                let mut before = before.to_string();
                if let Some(pre) = before.strip_suffix(" to ") {
                    let a_start = pre.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |p| p + 1);
                    if let Ok(av) = pre[a_start..].parse::<f64>() {
                        before = format!("{}{} to ", &pre[..a_start], history::local_time(av));
                    }
                }
                out.push_str(&before);
                out.push_str(&history::local_time(bv));
            }
            _ => {
                out.push_str(head);
                out.push_str(TAG);
            }
        }
        rest = &rest[i + TAG.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn unix_times_read_as_local_date_times() {
        let a = super::history::local_time(1796214828.0);
        let b = super::history::local_time(1796286228.0);
        assert_eq!(super::local_times("120 samples from 1796214828 to 1796286228 (unix), slope +1500"), format!("120 samples from {a} to {b}, slope +1500"));
        assert_eq!(super::local_times("fit starts at 1796214828 (unix): gap"), format!("fit starts at {a}: gap"));
        assert_eq!(super::local_times("no time here (unix)"), "no time here (unix)");
        assert_eq!(super::local_times("plain"), "plain");
    }

    #[test]
    fn control_characters_are_escaped_visibly() {
        assert_eq!(esc("kubepods/pod1"), "kubepods/pod1");
        assert_eq!(esc("a\nverdict: HEALTHY"), "a\\nverdict: HEALTHY");
        assert_eq!(esc("x\u{1b}[2Jy\t\r\u{7f}\u{85}\u{9b}"), "x\\x1b[2Jy\\t\\r\\x7f\\x85\\x9b");
        assert_eq!(esc("pod-ü-\\x2d"), "pod-ü-\\x2d", "non-control text and backslashes as they are");
    }
}

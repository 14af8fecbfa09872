//! Human-readable tables for status and check.

use std::fmt::Write;

use cgleak_model::census::Census;
use cgleak_model::verdict::{CheckReport, Severity};

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
}

pub fn status_table(c: &Census) -> String {
    let m = &c.memcg;
    let mut s = String::new();
    let _ = writeln!(s, "kernel      {} (era {}{})", c.kernel.release, c.kernel.era, if c.kernel.era_exact { "" } else { ", guessed" });
    let _ = writeln!(s, "cgroup      {} — memory on v{} at {}", c.cgroup.mode.as_str(), c.cgroup.memory_version, c.cgroup.memory_root);
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
    let _ = writeln!(s, "  why           {}", m.ids_in_use_reason);
    match (m.kmem_active, &m.kmem_active_note) {
        (Some(k), note) => {
            let _ = writeln!(s, "  kmem-active   {k}{}", note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default());
        }
        (None, Some(n)) => {
            let _ = writeln!(s, "  kmem-active   n/a  ({n})");
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
            let _ = writeln!(s, "kubepods    {} driver at {}", k.driver.as_str(), k.roots.join(", "));
            let _ = writeln!(s, "  {:<12} {:>6} {:>11}", "qos", "pods", "containers");
            for (q, n) in &k.by_qos {
                let _ = writeln!(s, "  {:<12} {:>6} {:>11}", q, n.pods, n.containers);
            }
            let _ = writeln!(s, "  {:<12} {:>6} {:>11}", "total", k.pods, k.containers);
            match k.orphans {
                Some(o) => {
                    let _ = writeln!(s, "  orphans       {o}");
                    for p in k.orphan_pods.iter().take(10) {
                        let _ = writeln!(s, "    {} ({})", p.path, p.qos.as_str());
                    }
                    if k.orphan_pods.len() > 10 {
                        let _ = writeln!(s, "    ... and {} more (--output json lists all)", k.orphan_pods.len() - 10);
                    }
                }
                None => {
                    let _ = writeln!(s, "  orphans       unknown ({} not found; see --kubelet-root-dir)", k.kubelet_pods_dir);
                }
            }
        }
    }
    if !c.kernel.notes.is_empty() {
        let _ = writeln!(s);
        for n in &c.kernel.notes {
            let _ = writeln!(s, "note: {n}");
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
        let _ = writeln!(s, "  [{tag}] {}: {}", f.id, f.summary);
        for e in &f.evidence {
            let _ = writeln!(s, "         {} = {}", e.file, e.value);
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
                m.summary,
                if m.needs_reboot { "needs reboot" } else { "no reboot" },
                if m.disturbs_pods { "disturbs pods" } else { "pods undisturbed" }
            );
        }
    }
    s
}

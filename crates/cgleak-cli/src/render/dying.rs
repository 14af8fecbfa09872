//! The table of `cgleak dying`: by pod, largest first, each pod's memcgs under it, then
//! what reclaim would free.

use std::fmt::Write;

use cgleak_model::dying::{DyingReport, DyingRow, Method};

use super::esc;

fn mib(b: Option<u64>) -> String {
    match b {
        Some(b) => format!("{:.1} MiB", b as f64 / 1048576.0),
        None => "-".into(),
    }
}

fn age(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86_400),
    }
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn row_line(out: &mut String, r: &DyingRow) {
    let _ = writeln!(
        out,
        "    {:>10}  {:>10}  {:>10}  {:>6}  {:<3}  {}",
        mib(r.pinned_bytes),
        mib(r.file_bytes),
        mib(r.kmem_bytes),
        age(r.offline_seconds),
        yes_no(r.holds_id),
        esc(&r.path)
    );
}

pub fn table(r: &DyingReport) -> String {
    let mut out = String::new();
    let total = r.total.map(|t| t.to_string()).unwrap_or_else(|| "not countable on this kernel".into());
    let _ = writeln!(out, "dying memcgs  {total}");
    let _ = writeln!(out, "named         {} (method {}), {} shown, sorted by {}", r.named, r.method.as_str(), r.shown, match r.sort {
        cgleak_model::dying::SortKey::Pinned => "pinned bytes",
        cgleak_model::dying::SortKey::Age => "age",
    });
    if let Some(why) = &r.bpf_unavailable {
        let _ = writeln!(out, "bpf           unavailable: {}", esc(why));
    }
    let _ = writeln!(out, "pinned        {}", mib(r.pinned_bytes_total));
    if r.method == Method::None {
        for n in &r.notes {
            let _ = writeln!(out, "note          {}", esc(n));
        }
        return out;
    }
    let _ = writeln!(out, "\nby pod (largest first)");
    let _ = writeln!(out, "    {:>10}  {:>10}  {:>10}  {:>6}  {:<3}  PATH", "PINNED", "FILE", "KMEM", "AGE", "ID");
    let mut hidden = 0u64;
    for g in &r.pods {
        // Only pods with a row shown: --top bounds the table, the JSON's pods[] has them all.
        if !r.dying.iter().any(|d| d.pod_uid == g.pod_uid) {
            hidden += 1;
            continue;
        }
        let who = match &g.pod_uid {
            Some(u) => format!("pod {}{}", esc(u), g.qos.map(|q| format!(" ({})", q.as_str())).unwrap_or_default()),
            None => "outside any pod".into(),
        };
        let _ = writeln!(out, "  {who}: {} memcgs, {} pinned", g.memcgs, mib(g.pinned_bytes));
        for row in r.dying.iter().filter(|d| d.pod_uid == g.pod_uid) {
            row_line(&mut out, row);
        }
    }
    if r.named > r.shown {
        let _ = writeln!(out, "  ({} more memcgs not shown, {hidden} more pods: --top)", r.named - r.shown);
    }
    let _ = writeln!(out, "\nreclaim would free");
    let _ = writeln!(out, "  {}", esc(&r.reclaim.summary));
    for n in &r.notes {
        let _ = writeln!(out, "note  {}", esc(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_model::dying::{build_report, ReportParts, SortKey};

    #[test]
    fn table_groups_by_pod_and_ends_with_reclaim() {
        let uid = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";
        let mut a = DyingRow::at_path(format!("/kubepods/burstable/pod{uid}/c1"), Method::Bpf);
        a.pinned_bytes = Some(8 << 20);
        a.file_bytes = Some(8 << 20);
        let mut b = DyingRow::at_path("/system.slice/x\nforged".into(), Method::Bpf);
        b.pinned_bytes = Some(1 << 20);
        let r = build_report(vec![b, a], ReportParts { method: Method::Bpf, bpf_unavailable: None, total: Some(2), sort: SortKey::Pinned, top: 20, kmem_pins: false, notes: vec![] });
        let t = table(&r);
        let pod = t.find(&format!("pod {uid} (burstable): 1 memcgs, 8.0 MiB")).expect(&t);
        let other = t.find("outside any pod").expect(&t);
        assert!(pod < other, "{t}");
        assert!(t.contains("x\\nforged"), "host text escaped: {t}");
        assert!(t.trim_end().lines().rev().any(|l| l.contains("8.0 MiB of page cache is reclaimable")), "{t}");
        let r1 = build_report(r.dying.clone(), ReportParts { method: Method::Bpf, bpf_unavailable: None, total: Some(2), sort: SortKey::Pinned, top: 1, kmem_pins: false, notes: vec![] });
        let t = table(&r1);
        assert!(!t.contains("outside any pod") && t.contains("(1 more memcgs not shown, 1 more pods: --top)"), "{t}");
    }
}

//! Runs the incident parser over the corpus in `tests/corpus/` (format in its README) and
//! checks every field of every incident, and that near misses give none.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use cgleak_model::incidents::{Incident, IncidentParser, IncidentSummary};
use cgleak_readers::logline::{JournalOrigin, LineMeta, LogLine, Origin};

#[derive(Debug, Default)]
struct Entry {
    file: String,
    id: String,
    source: String,
    origin: String,
    year: Option<i32>,
    meta: LineMeta,
    lines: Vec<String>,
    expects: Vec<BTreeMap<String, Option<String>>>,
    negative: bool,
}

const FIELDS: [&str; 9] = ["kind", "errno", "component", "time", "host", "cgroup_path", "pod_uid", "container_id", "trusted"];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `k=v k="v w" k=-` -> map (None for `-`).
fn parse_kv(s: &str) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=');
        let sp = rest.find(' ');
        // A bare flag ("kernel").
        if eq.is_none() || sp.is_some_and(|sp| sp < eq.unwrap()) {
            let end = sp.unwrap_or(rest.len());
            out.insert(rest[..end].to_string(), Some(String::new()));
            rest = rest[end..].trim_start();
            continue;
        }
        let eq = eq.unwrap();
        let key = rest[..eq].to_string();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key, if val == "-" { None } else { Some(val) });
        rest = next.trim_start();
    }
    out
}

fn load() -> Vec<Entry> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut entries = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let fname = f.file_name().unwrap().to_string_lossy().into_owned();
        let mut cur: Option<Entry> = None;
        for (n, line) in text.split('\n').enumerate() {
            if let Some(id) = line.strip_prefix("=== ") {
                entries.extend(cur.take());
                cur = Some(Entry { file: fname.clone(), id: id.trim().to_string(), ..Entry::default() });
                continue;
            }
            let Some(e) = cur.as_mut() else {
                assert!(line.is_empty() || line.starts_with('#'), "{fname}:{}: text outside an entry", n + 1);
                continue;
            };
            if let Some(l) = line.strip_prefix("line: ") {
                e.lines.push(l.to_string());
            } else if let Some(v) = line.strip_prefix("source: ") {
                e.source = v.to_string();
            } else if let Some(v) = line.strip_prefix("origin: ") {
                e.origin = v.to_string();
            } else if let Some(v) = line.strip_prefix("year: ") {
                e.year = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("meta: ") {
                let kv = parse_kv(v);
                e.meta = LineMeta {
                    time: kv.get("time").cloned().flatten(),
                    host: kv.get("host").cloned().flatten(),
                    unit: kv.get("unit").cloned().flatten(),
                    kernel: kv.contains_key("kernel"),
                    continuation: kv.contains_key("continuation"),
                    origin: origin_of(&kv),
                };
            } else if let Some(v) = line.strip_prefix("expect: ") {
                if v.trim() == "none" {
                    e.negative = true;
                } else {
                    let kv = parse_kv(v);
                    for f in FIELDS {
                        assert!(kv.contains_key(f), "{}: expect lacks {f}", e.id);
                    }
                    e.expects.push(kv);
                }
            } else if line.starts_with("note: ") || line.is_empty() || line.starts_with('#') {
            } else {
                panic!("{fname}:{}: unknown line {line:?}", n + 1);
            }
        }
        entries.extend(cur.take());
    }
    entries
}

/// The source's word on who wrote the lines: `kmsg` (facility 0, the kernel's), `file=kubelet`
/// (the kubelet's own log file), `journal` with the unit= and comm= of journald's fields;
/// else plain text, where only a syslog tag tells.
fn origin_of(kv: &BTreeMap<String, Option<String>>) -> Origin {
    if kv.contains_key("kmsg") {
        return Origin::Kmsg { facility: 0 };
    }
    if let Some(Some(p)) = kv.get("file") {
        assert_eq!(p, "kubelet", "file= names the kubelet's own log only");
        return Origin::FileOf("kubelet");
    }
    if kv.contains_key("journal") {
        return Origin::Journal(JournalOrigin {
            transport: Some(if kv.contains_key("kernel") { "kernel" } else { "stdout" }.into()),
            unit: kv.get("unit").cloned().flatten(),
            comm: kv.get("comm").cloned().flatten(),
            ..JournalOrigin::default()
        });
    }
    Origin::Text
}

fn run(e: &Entry) -> Vec<Incident> {
    let mut p = IncidentParser::new(e.year.unwrap_or(2024));
    let mut out = Vec::new();
    for (i, l) in e.lines.iter().enumerate() {
        let ll = LogLine { source: &e.id, line: i as u64 + 1, text: l.as_bytes(), meta: &e.meta };
        let before = out.len();
        if !p.may_match(l.as_bytes()) {
            // The prefilter's promise: a line it rejects never starts or ends anything.
            p.feed(&ll, &mut out);
            assert_eq!(out.len(), before, "{}: may_match was false for a line that completed an incident", e.id);
            continue;
        }
        p.feed(&ll, &mut out);
    }
    p.finish(&mut out);
    out
}

fn field(i: &Incident, f: &str) -> Option<String> {
    match f {
        "kind" => Some(i.kind.as_str().to_string()),
        "errno" => i.errno.map(|e| e.as_str().to_string()),
        "component" => Some(i.component.clone()),
        "time" => i.time.clone(),
        "host" => i.host.clone(),
        "cgroup_path" => i.cgroup_path.clone(),
        "pod_uid" => i.pod_uid.clone(),
        "container_id" => i.container_id.clone(),
        "trusted" => Some(if i.trusted { "yes" } else { "no" }.to_string()),
        _ => unreachable!(),
    }
}

#[test]
fn corpus_every_entry_and_field() {
    let entries = load();
    let mut failures = Vec::new();
    for e in &entries {
        assert!(!e.lines.is_empty(), "{}: no lines", e.id);
        assert!(matches!(e.origin.as_str(), "verbatim" | "constructed"), "{}: origin {:?}", e.id, e.origin);
        assert!(!e.source.is_empty(), "{}: no source", e.id);
        if e.origin == "verbatim" {
            assert!(e.source.starts_with("https://"), "{}: a verbatim line needs its address", e.id);
        }
        assert!(e.negative == e.expects.is_empty(), "{}: either expect: none or expectations", e.id);
        let got = run(e);
        if got.len() != e.expects.len() {
            failures.push(format!(
                "{} ({}): {} incidents, expected {}: {:#?}",
                e.id,
                e.file,
                got.len(),
                e.expects.len(),
                got
            ));
            continue;
        }
        for (inc, exp) in got.iter().zip(&e.expects) {
            for f in FIELDS {
                let want = exp[f].clone();
                let have = field(inc, f);
                if want != have {
                    failures.push(format!("{}: {f}: got {have:?}, expected {want:?}", e.id));
                }
            }
            let line: u64 = exp.get("line").cloned().flatten().map_or(1, |v| v.parse().unwrap());
            if inc.line != line || inc.source != e.id {
                failures.push(format!("{}: source/line {}:{}, expected {}:{line}", e.id, inc.source, inc.line, e.id));
            }
            let first = &e.lines[line as usize - 1];
            let raw_ok = if inc.kind.as_str() == "slab_alloc_failed" {
                inc.raw.starts_with(first.as_str())
            } else {
                &inc.raw == first
            };
            if !raw_ok {
                failures.push(format!("{}: raw {:?} is not line {line}", e.id, inc.raw));
            }
        }
    }
    assert!(failures.is_empty(), "{} corpus failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_covers_every_kind_component_and_errno() {
    let entries = load();
    let positives: Vec<&Entry> = entries.iter().filter(|e| !e.negative).collect();
    let negatives: Vec<&Entry> = entries.iter().filter(|e| e.negative).collect();
    let count = |v: &[&Entry], origin: &str| v.iter().filter(|e| e.origin == origin).count();
    let mut kinds = BTreeSet::new();
    let mut components = BTreeMap::<String, usize>::new();
    let mut errnos = BTreeSet::new();
    for e in &positives {
        for x in &e.expects {
            kinds.insert(x["kind"].clone().unwrap());
            *components.entry(x["component"].clone().unwrap()).or_default() += 1;
            if x["kind"].as_deref() == Some("memcg_create_failed") {
                errnos.insert(x["errno"].clone().unwrap());
            }
        }
    }
    println!(
        "corpus: {} positives ({} verbatim, {} constructed), {} negatives ({} verbatim, {} constructed); components {components:?}",
        positives.len(),
        count(&positives, "verbatim"),
        count(&positives, "constructed"),
        negatives.len(),
        count(&negatives, "verbatim"),
        count(&negatives, "constructed"),
    );
    assert!(positives.len() >= 25 && negatives.len() >= 20);
    assert_eq!(kinds, ["inotify_exhausted", "memcg_create_failed", "slab_alloc_failed"].map(String::from).into());
    assert_eq!(errnos, ["EBUSY", "ENOMEM", "ENOSPC"].map(String::from).into());
    for c in [
        "kubelet",
        "dockerd",
        "containerd",
        "crio",
        "runc",
        "crun",
        "kernel",
        "mkdir",
        "nomad",
        "systemd",
        "lxc",
        "garden",
        "cadvisor",
        "tail",
    ] {
        assert!(components.contains_key(c), "no positive from {c}");
    }
}

/// Trust goes with the writer, not the words: every trusted incident's component is one
/// of the believed programs, and both kinds of line are in the corpus.
#[test]
fn corpus_trust_follows_the_writer() {
    let entries = load();
    let (mut yes, mut no) = (0, 0);
    for e in entries.iter().filter(|e| !e.negative) {
        for x in &e.expects {
            match x["trusted"].as_deref() {
                Some("yes") => {
                    yes += 1;
                    let c = x["component"].clone().unwrap();
                    assert!(["kubelet", "dockerd", "containerd", "crio", "runc", "crun", "kernel", "systemd"].contains(&c.as_str()), "{}: trusted line from {c}", e.id);
                }
                Some("no") => no += 1,
                other => panic!("{}: trusted={other:?}", e.id),
            }
        }
    }
    assert!(yes >= 20 && no >= 20, "{yes} trusted, {no} untrusted");
}

#[test]
fn corpus_summary() {
    let mut s = IncidentSummary::default();
    for e in load() {
        for i in run(&e) {
            s.add(&i);
        }
    }
    assert!(s.total >= 40);
    assert_eq!(s.first_seen.as_deref(), Some("2016-06-02T08:38:33.650"));
    assert!(s.era_hints.iter().any(|h| h.starts_with("EBUSY: only 6.12+ kernels")), "{:?}", s.era_hints);
    // Per build (facts §1a): el7 514/693 with ENOSPC, el7 862+ with ENOMEM.
    assert!(
        s.era_hints.iter().any(|h| h.starts_with("ENOMEM: ") && h.contains("el7 3.10.0-862 and later") && h.contains("4.4.18+")),
        "{:?}",
        s.era_hints
    );
    assert!(
        s.era_hints.iter().any(|h| h.starts_with("ENOSPC: ") && h.contains("el7 3.10.0-514 and -693 (css_id)") && h.contains("not explained by the memcg ID leak")),
        "{:?}",
        s.era_hints
    );
    assert!(s.affected_pods.contains("568af631-f663-4475-86f2-fa6bf1612659"));
}

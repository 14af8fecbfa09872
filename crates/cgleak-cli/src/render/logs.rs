//! `cgleak logs` as people and programs read it: the table (a row per incident as it is
//! found, then the sources and the summary), `--output json` (one document at the end) and
//! `--output jsonl` (one incident a line, exactly the keys the README promises).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use cgleak_model::incidents::{Incident, IncidentSummary};
use cgleak_readers::logs::sources::SourceReport;

use super::esc;
use crate::args::OutputArg;

/// An incident as a jsonl line: exactly the keys the README promises (`trusted` and
/// `origin` are in `--output json` and the table, not here).
#[derive(Serialize)]
struct JsonlIncident<'a> {
    kind: cgleak_model::incidents::IncidentKind,
    errno: Option<cgleak_model::era::Errno>,
    component: &'a str,
    time: &'a Option<String>,
    host: &'a Option<String>,
    cgroup_path: &'a Option<String>,
    pod_uid: &'a Option<String>,
    container_id: &'a Option<String>,
    source: &'a str,
    line: u64,
    raw: &'a str,
}

impl<'a> JsonlIncident<'a> {
    fn of(i: &'a Incident) -> Self {
        JsonlIncident {
            kind: i.kind,
            errno: i.errno,
            component: &i.component,
            time: &i.time,
            host: &i.host,
            cgroup_path: &i.cgroup_path,
            pod_uid: &i.pod_uid,
            container_id: &i.container_id,
            source: &i.source,
            line: i.line,
            raw: &i.raw,
        }
    }
}

/// Where incidents are printed as they come, and the report after them.
pub struct Printer<'a> {
    out: io::BufWriter<io::StdoutLock<'a>>,
    format: OutputArg,
    pub summary: IncidentSummary,
    /// Kept for --output json only.
    kept: Vec<Incident>,
    rows: u64,
    flush_each: bool,
    /// Set when stdout is gone (`| head`): the readers stop.
    stop: &'a AtomicBool,
}

impl<'a> Printer<'a> {
    /// A printer on stdout; `flush_each` for `--follow`, where each incident is shown at once.
    pub fn new(format: OutputArg, summary: IncidentSummary, flush_each: bool, stop: &'a AtomicBool) -> Printer<'a> {
        Printer { out: io::BufWriter::with_capacity(64 * 1024, io::stdout().lock()), format, summary, kept: Vec::new(), rows: 0, flush_each, stop }
    }

    /// The table's header at once (`--follow`: before any incident comes).
    pub fn header(&mut self) {
        if self.format == OutputArg::Table {
            let _ = writeln!(self.out, "{}", table_header()).and_then(|_| self.out.flush());
            self.rows = 1;
        }
    }

    /// After the incidents: the JSON document, or the tables of sources and summary.
    pub fn finish(&mut self, sources: &[SourceReport]) -> io::Result<()> {
        match self.format {
            OutputArg::Json => {
                let doc = LogsReport { incidents: &self.kept, summary: &self.summary, sources };
                serde_json::to_writer_pretty(&mut self.out, &super::Versioned::new(&doc))?;
                self.out.write_all(b"\n")?;
            }
            OutputArg::Jsonl => {}
            OutputArg::Table => {
                if self.rows > 0 {
                    writeln!(self.out)?;
                }
                write!(self.out, "{}\n{}", sources_table(sources), summary_table(&self.summary, sources))?;
            }
        }
        self.out.flush()
    }

    pub fn incident(&mut self, i: Incident) {
        self.summary.add(&i);
        let r = match self.format {
            OutputArg::Json => {
                self.kept.push(i);
                Ok(())
            }
            OutputArg::Jsonl => serde_json::to_writer(&mut self.out, &super::Versioned::new(&JsonlIncident::of(&i))).map_err(io::Error::from).and_then(|_| self.out.write_all(b"\n")),
            OutputArg::Table => {
                let head = if self.rows == 0 { writeln!(self.out, "{}", table_header()) } else { Ok(()) };
                head.and_then(|_| writeln!(self.out, "{}", table_row(&i)))
            }
        };
        self.rows += 1;
        let r = r.and_then(|_| if self.flush_each { self.out.flush() } else { Ok(()) });
        if r.is_err() {
            // stdout is gone (`| head`): stop reading.
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

const W_TIME: usize = 30;
const W_COMP: usize = 10;
const W_TRUST: usize = 7;
const W_KIND: usize = 19;
const W_ERRNO: usize = 6;
const W_POD: usize = 36;
const W_AT: usize = 22;

fn table_header() -> String {
    format!("{:<W_TIME$}  {:<W_COMP$}  {:<W_TRUST$}  {:<W_KIND$}  {:<W_ERRNO$}  {:<W_POD$}  {:<W_AT$}  CGROUP", "TIME", "COMPONENT", "TRUSTED", "KIND", "ERRNO", "POD", "AT")
}

fn table_row(i: &Incident) -> String {
    let base = Path::new(&i.source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| i.source.clone());
    format!(
        "{:<W_TIME$}  {:<W_COMP$}  {:<W_TRUST$}  {:<W_KIND$}  {:<W_ERRNO$}  {:<W_POD$}  {:<W_AT$}  {}",
        esc(i.time.as_deref().unwrap_or("-")),
        esc(&i.component),
        if i.trusted { "yes" } else { "no" },
        i.kind.as_str(),
        i.errno.map(|e| e.as_str()).unwrap_or("-"),
        esc(i.pod_uid.as_deref().unwrap_or("-")),
        esc(format!("{base}:{}", i.line)),
        esc(i.cgroup_path.as_deref().unwrap_or("-"))
    )
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(k, n)| format!("{} {n}", esc(k))).collect::<Vec<_>>().join(", ")
}

fn sources_table(sources: &[SourceReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("sources\n");
    for r in sources {
        let what = match r.kind {
            "journald" => "entries",
            "kmsg" => "records",
            _ => "lines",
        };
        let _ = write!(s, "  {:<40} {:<8}", esc(&r.source), r.kind);
        if r.kind == "skipped" {
            let _ = writeln!(s, " {}", esc(r.notes.join("; ")));
            continue;
        }
        match &r.error {
            Some(e) => {
                let _ = write!(s, " not read: {}", esc(e));
            }
            None => {
                let _ = write!(s, " {} {what}, {} incidents", r.lines, r.incidents);
            }
        }
        if !r.notes.is_empty() {
            let _ = write!(s, " ({})", esc(r.notes.join("; ")));
        }
        s.push('\n');
    }
    s
}

fn summary_table(sm: &IncidentSummary, sources: &[SourceReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if sm.total == 0 {
        let lines: u64 = sources.iter().map(|r| r.lines).sum();
        let read = sources.iter().filter(|r| r.error.is_none()).count();
        let _ = writeln!(s, "no incidents: no failed memcg creation, per-memcg slab failure or inotify exhaustion in {lines} lines of {read} sources");
        return s;
    }
    let _ = writeln!(s, "summary");
    let _ = writeln!(s, "  incidents     {}: {}", sm.total, counts(&sm.by_kind));
    let _ = writeln!(s, "  first seen    {}", esc(sm.first_seen.as_deref().unwrap_or("unknown")));
    let _ = writeln!(s, "  last seen     {}", esc(sm.last_seen.as_deref().unwrap_or("unknown")));
    let _ = writeln!(s, "  components    {}", counts(&sm.by_component));
    if !sm.by_errno.is_empty() {
        let _ = writeln!(s, "  errnos        {}", counts(&sm.by_errno));
    }
    let pods: Vec<&String> = sm.affected_pods.iter().collect();
    if !pods.is_empty() {
        let shown: Vec<&str> = pods.iter().take(10).map(|p| p.as_str()).collect();
        let more = if pods.len() > 10 { format!(" and {} more", pods.len() - 10) } else { String::new() };
        let _ = writeln!(s, "  pods          {}: {}{more}", pods.len(), esc(shown.join(", ")));
    }
    if sm.untrusted > 0 {
        let _ = writeln!(s, "  untrusted     {} of {}: not evidence (check leaves them out): only the kubelet, the container runtimes, systemd and the kernel are believed", sm.untrusted, sm.total);
        for (why, n) in &sm.untrusted_reasons {
            let _ = writeln!(s, "                {n}: {}", esc(why));
        }
    }
    for (n, h) in sm.era_hints.iter().enumerate() {
        let _ = writeln!(s, "  {:<13} {}", if n == 0 { "what it says" } else { "" }, esc(h));
    }
    s
}

/// The JSON document of `--output json`.
#[derive(Serialize)]
struct LogsReport<'a> {
    incidents: &'a [Incident],
    summary: &'a IncidentSummary,
    sources: &'a [SourceReport],
}


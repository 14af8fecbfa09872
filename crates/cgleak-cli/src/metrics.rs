//! The census as Prometheus metrics (text exposition), for `status --textfile` (node_exporter's
//! textfile collector) and the agent's endpoint.
//!
//! A value this kernel cannot give is absent, never a fake zero: no `cgleak_memcg_dying` on
//! 3.10 (docs/kernel-facts.md section 2), no `cgleak_memcg_kmem_active` where kmem accounting is
//! not opt-in (4.6+, v2), no `cgleak_memcg_dead_slab_ids` where per-memcg slab caches are not
//! in sysfs (5.9+), no `cgleak_kubepods_orphans` without the kubelet's pods directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use cgleak_model::census::Census;
use cgleak_model::dying::DyingSummary;
use cgleak_model::era::SlabNaming;
use cgleak_readers::slab::SlabNamingSeen;
use cgleak_model::forecast::Forecast;
use cgleak_model::incidents::{Incident, IncidentKind};

/// Distinct (kind, component, errno) series of `cgleak_log_incidents_total` kept; later ones
/// are not counted. Trusted components are a short fixed list, so this is never met in practice.
pub const MAX_INCIDENT_SERIES: usize = 256;

/// Incidents seen in the logs. Trusted ones (the kubelet, a container runtime, systemd, the
/// kernel) by kind, component and errno ("none" for lines that print none): what the alert
/// `MemcgCreateFailures` reads. Untrusted ones apart, by kind and errno only: their
/// component is whatever a tenant's line calls itself, never a label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentCounts {
    pub trusted: BTreeMap<(IncidentKind, String, Option<&'static str>), u64>,
    pub untrusted: BTreeMap<(IncidentKind, Option<&'static str>), u64>,
}

impl IncidentCounts {
    pub fn new() -> Self {
        IncidentCounts::default()
    }

    /// Count one incident in its family.
    pub fn add(&mut self, i: &Incident) {
        let errno = i.errno.map(|e| e.as_str());
        if !i.trusted {
            *self.untrusted.entry((i.kind, errno)).or_default() += 1;
            return;
        }
        let key = (i.kind, i.component.clone(), errno);
        if self.trusted.len() < MAX_INCIDENT_SERIES || self.trusted.contains_key(&key) {
            *self.trusted.entry(key).or_default() += 1;
        }
    }
}

/// Count incidents for `cgleak_log_incidents_total` and `cgleak_log_untrusted_incidents_total`.
#[cfg(test)]
pub fn incident_counts(incidents: &[Incident]) -> IncidentCounts {
    let mut out = IncidentCounts::new();
    for i in incidents {
        out.add(i);
    }
    out
}

/// What one exposition is made of.
pub struct MetricsInput<'a> {
    pub census: &'a Census,
    /// From the agent's history; None without one.
    pub forecast: Option<&'a Forecast>,
    /// None: the logs were not read (as in `status`), so the family is left out.
    pub incidents: Option<&'a IncidentCounts>,
    /// How long the census took.
    pub sample_duration: Option<Duration>,
}

/// What the agent's `--reclaim-every` did since it started (`cgleak_reclaim_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReclaimTotals {
    /// Runs by outcome; every one of [`RECLAIM_OUTCOMES`] is exported, from 0.
    pub runs: BTreeMap<&'static str, u64>,
    /// Dying memcgs the runs released, where the kernel counts dying memcgs.
    pub released_memcgs: u64,
    /// Dead slab IDs gone after the runs (before minus after, never below 0).
    pub released_dead_slab_ids: u64,
    /// When the last drop began (the reclaim's stamp), if one ever ran.
    pub last_run_unix: Option<f64>,
}

/// `outcome` of `cgleak_reclaim_runs_total`: every step done; no dying memcg to release;
/// refused by the rate limit (or another holder of the reclaim's lock); a step failed.
pub const RECLAIM_OUTCOMES: [&str; 4] = ["completed", "nothing_to_do", "refused", "failed"];

impl ReclaimTotals {
    pub fn new() -> ReclaimTotals {
        ReclaimTotals { runs: RECLAIM_OUTCOMES.iter().map(|o| (*o, 0)).collect(), ..ReclaimTotals::default() }
    }
}

/// Distinct IDs of per-memcg slab caches whose cgroup is gone, where such caches are in sysfs:
/// 3.10 at the top of /sys/kernel/slab, 4.x .. 5.8 under `<cache>/cgroup/` (4.14+ only with
/// slub_memcg_sysfs, so only when such a directory was seen). None on 5.9+ (slab is charged
/// through obj_cgroup: no per-memcg caches) and when /sys/kernel/slab is unreadable.
pub fn dead_slab_ids(c: &Census) -> Option<u64> {
    let visible = match c.era.slab_naming {
        SlabNaming::TopLevel310 => true,
        SlabNaming::CgroupSubdir => c.slab.naming == SlabNamingSeen::CgroupSubdir,
        SlabNaming::None => false,
    };
    (c.slab.readable && visible).then_some(c.slab.summary.dead_ids)
}

type Labels = Vec<(&'static str, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, value: Option<u64>) {
    if let Some(v) = value {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        reg.register(name, help, g);
    }
}

fn gauge_f64(reg: &mut Registry, name: &str, help: &str, value: Option<f64>) {
    if let Some(v) = value {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    }
}

/// One series of value 1 whose labels carry the information (`*_info` style).
fn info_gauge(reg: &mut Registry, name: &str, help: &str, labels: Labels) {
    let f: Family<Labels, Gauge> = Family::default();
    f.get_or_create(&labels).set(1);
    reg.register(name, help, f);
}

/// The registry of one sample, with the agent's reclaim counters when given (`--reclaim-every`).
/// Help texts end without a period: the encoder adds one.
pub fn registry_with(input: &MetricsInput<'_>, reclaim: Option<&ReclaimTotals>) -> Registry {
    let mut reg = Registry::default();
    let c = input.census;
    let m = &c.memcg;
    info_gauge(
        &mut reg,
        "cgleak_build_info",
        "The cgleak build, always 1",
        vec![("version", env!("CARGO_PKG_VERSION").to_string())],
    );
    gauge(&mut reg, "cgleak_memcg_live", "Live memory cgroups, the root included", Some(m.live));
    gauge(
        &mut reg,
        "cgleak_memcg_dying",
        "Dying memory cgroups: removed but still pinned by page cache or kernel memory (absent where the kernel cannot count them)",
        m.dying,
    );
    gauge(
        &mut reg,
        "cgleak_memcg_ids_in_use",
        "Memory cgroup IDs in use (a lower bound when cgleak_memcg_ids_in_use_confidence says so)",
        m.ids_in_use,
    );
    if m.ids_in_use.is_some() {
        info_gauge(
            &mut reg,
            "cgleak_memcg_ids_in_use_confidence",
            "How sure cgleak_memcg_ids_in_use is: exact, estimate or lower_bound, always 1",
            vec![("confidence", m.ids_in_use_confidence.as_str().to_string())],
        );
    }
    gauge(&mut reg, "cgleak_memcg_id_limit", "Memory cgroup IDs the kernel can hand out (MEM_CGROUP_ID_MAX)", Some(m.id_limit));
    gauge(
        &mut reg,
        "cgleak_memcg_headroom",
        "Memory cgroups that can still be created before mkdir fails (absent where IDs in use are only a lower bound)",
        m.headroom,
    );
    gauge(
        &mut reg,
        "cgleak_memcg_kmem_active",
        "Memory cgroups with kernel-memory accounting switched on, where it is opt-in (cgroup v1 before 4.6)",
        m.kmem_active,
    );
    gauge(
        &mut reg,
        "cgleak_memcg_dead_slab_ids",
        "Distinct memcg IDs of per-memcg slab caches whose cgroup no longer exists: deleted memcgs pinned by kernel memory (absent where the kernel has no per-memcg slab caches in sysfs: 5.9+)",
        dead_slab_ids(c),
    );
    gauge(
        &mut reg,
        "cgleak_kubepods_orphans",
        "Pod cgroups with no task and no pod directory in the kubelet's state (absent without a kubepods tree or the kubelet's pods directory)",
        c.kubepods.as_ref().and_then(|k| k.orphans),
    );
    gauge_f64(
        &mut reg,
        "cgleak_memcg_exhaustion_forecast_seconds",
        "Seconds until the memory cgroup ID space runs out at the current trend: 0 when it has, +Inf when IDs in use are flat or falling, NaN while the history is too short to tell",
        Some(forecast_seconds(input.forecast)),
    );
    if let Some(counts) = input.incidents {
        let f: Family<Labels, Counter> = Family::default();
        // From the first scrape: a series at 0 for every kind (component and errno "none"),
        // so that sums by kind exist before any incident; each writer's own series appears
        // at its first incident, already at 1 (the MemcgCreateFailures rule counts those).
        for kind in IncidentKind::ALL {
            let _ = f.get_or_create(&zero_series(kind, true));
        }
        for ((kind, component, errno), n) in &counts.trusted {
            let labels = vec![("kind", kind.as_str().to_string()), ("component", component.clone()), ("errno", errno.unwrap_or("none").to_string())];
            f.get_or_create(&labels).inc_by(*n);
        }
        // Registered without the suffix: the encoder writes the samples as cgleak_log_incidents_total.
        reg.register(
            "cgleak_log_incidents",
            "Log lines showing failed memory cgroup creations, slab or inotify failures, from the kubelet, a container runtime, systemd or the kernel",
            f,
        );
        let u: Family<Labels, Counter> = Family::default();
        for kind in IncidentKind::ALL {
            let _ = u.get_or_create(&zero_series(kind, false));
        }
        for ((kind, errno), n) in &counts.untrusted {
            u.get_or_create(&vec![("kind", kind.as_str().to_string()), ("errno", errno.unwrap_or("none").to_string())]).inc_by(*n);
        }
        reg.register(
            "cgleak_log_untrusted_incidents",
            "Log lines that read like those of cgleak_log_incidents_total but come from another program, or from a writer that cannot be told (a tenant's output): never evidence, no alert reads them",
            u,
        );
    }
    gauge_f64(
        &mut reg,
        "cgleak_sample_duration_seconds",
        "Time taken to take this census",
        input.sample_duration.map(|d| d.as_secs_f64()),
    );
    if let Some(r) = reclaim {
        let runs: Family<Labels, Counter> = Family::default();
        for (outcome, n) in &r.runs {
            runs.get_or_create(&vec![("outcome", outcome.to_string())]).inc_by(*n);
        }
        reg.register("cgleak_reclaim_runs", "Reclaim runs of the agent (--reclaim-every) by outcome", runs);
        // Released memcgs are counted only where dying memcgs are (not on 3.10: compare
        // cgleak_memcg_ids_in_use, a lower bound, and the dead slab IDs there).
        if m.dying.is_some() {
            let c: Counter = Counter::default();
            c.inc_by(r.released_memcgs);
            reg.register("cgleak_reclaim_released_memcgs", "Dying memory cgroups the agent's reclaim runs released (absent where dying memcgs cannot be counted)", c);
        }
        if dead_slab_ids(input.census).is_some() {
            let c: Counter = Counter::default();
            c.inc_by(r.released_dead_slab_ids);
            reg.register(
                "cgleak_reclaim_released_dead_slab_ids",
                "Dead slab IDs gone after the agent's reclaim runs: deleted memcgs freed (absent where cgleak_memcg_dead_slab_ids is)",
                c,
            );
        }
        gauge_f64(
            &mut reg,
            "cgleak_reclaim_last_run_timestamp_seconds",
            "When the agent's last reclaim drop began, in seconds since 1970 (0 before the first)",
            Some(r.last_run_unix.unwrap_or(0.0)),
        );
    }
    reg
}

/// The labels of a kind's series at 0 (trusted: with a component).
fn zero_series(kind: IncidentKind, trusted: bool) -> Labels {
    let mut l = vec![("kind", kind.as_str().to_string())];
    if trusted {
        l.push(("component", "none".to_string()));
    }
    l.push(("errno", "none".to_string()));
    l
}

/// `cgleak_memcg_exhaustion_forecast_seconds`: 0 exhausted, the seconds left while IDs in use
/// rise toward the limit, +Inf while they do not, NaN without a forecast yet (too few samples,
/// or none kept): present from the first scrape, and never below an alert's threshold
/// unless the trend says so (a comparison with NaN is false).
pub fn forecast_seconds(f: Option<&Forecast>) -> f64 {
    use cgleak_model::forecast::ForecastOutcome;
    match f {
        Some(f) => match f.outcome {
            ForecastOutcome::Exhausted => 0.0,
            ForecastOutcome::Approaching => f.seconds_to_exhaustion.unwrap_or(f64::NAN),
            ForecastOutcome::NotApproaching => f64::INFINITY,
            ForecastOutcome::TooFewSamples => f64::NAN,
        },
        None => f64::NAN,
    }
}

/// `cgleak_memcg_dying_pinned_bytes` and `cgleak_memcg_dying_by_parent`, from a method that
/// names dying memcgs (the BPF walk); left out without one, never a fake zero.
pub fn register_dying(reg: &mut Registry, d: &DyingSummary) {
    gauge(
        reg,
        "cgleak_memcg_dying_pinned_bytes",
        "Bytes pinning the named dying memory cgroups: the pages on their own LRU lists (page cache, anon, shmem), and slab where it pins them (before 5.9)",
        Some(d.pinned_bytes),
    );
    let f: Family<Labels, Gauge> = Family::default();
    // At most 20 parents (two path components each) and "other": bounded whatever the tree.
    for (parent, n) in &d.by_parent {
        f.get_or_create(&vec![("parent", parent.clone())]).set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register(
        "cgleak_memcg_dying_by_parent",
        "Named dying memory cgroups by their parent's path cut to two components (the 20 largest, the rest as other)",
        f,
    );
}

/// [`exposition`] with the named dying memcgs' metrics, when a method named them.
pub fn exposition_dying(input: &MetricsInput<'_>, dying: Option<&DyingSummary>) -> String {
    exposition_all(input, None, dying)
}

/// The agent's exposition: the census's, the reclaim's counters, and the named dying memcgs.
pub fn exposition_all(input: &MetricsInput<'_>, reclaim: Option<&ReclaimTotals>, dying: Option<&DyingSummary>) -> String {
    let mut reg = registry_with(input, reclaim);
    if let Some(d) = dying {
        register_dying(&mut reg, d);
    }
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    to_prometheus_text(&special_floats(out))
}

/// OpenMetrics text, as prometheus-client writes it (for a scraper that asks for
/// `application/openmetrics-text`).
#[allow(dead_code)] // for the agent's endpoint
pub fn openmetrics_exposition(input: &MetricsInput<'_>) -> String {
    openmetrics_exposition_with(input, None)
}

fn openmetrics_exposition_with(input: &MetricsInput<'_>, reclaim: Option<&ReclaimTotals>) -> String {
    let mut out = String::new();
    encode(&mut out, &registry_with(input, reclaim)).expect("writing to a String cannot fail");
    special_floats(out)
}

/// The encoder writes an infinite value as Rust prints it (`inf`, `-inf`); both formats spell
/// it `+Inf` and `-Inf` (NaN is already `NaN`).
fn special_floats(text: String) -> String {
    if !text.contains("inf\n") {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        match (line.starts_with('#'), line.strip_suffix(" -inf"), line.strip_suffix(" inf")) {
            (false, Some(head), _) => out.push_str(&format!("{head} -Inf")),
            (false, None, Some(head)) => out.push_str(&format!("{head} +Inf")),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Prometheus text format 0.0.4, which node_exporter's textfile collector and `promtool check
/// metrics` parse: OpenMetrics names a counter family without `_total` in HELP and TYPE,
/// which that parser takes for a second, untyped metric; and it has no `# EOF`.
#[allow(dead_code)] // the census alone (tests); status adds the named dying memcgs (exposition_dying)
pub fn exposition(input: &MetricsInput<'_>) -> String {
    exposition_with(input, None)
}

/// [`exposition`] with the agent's reclaim counters.
#[allow(dead_code)] // tests; the agent adds the named dying memcgs (exposition_all)
pub fn exposition_with(input: &MetricsInput<'_>, reclaim: Option<&ReclaimTotals>) -> String {
    exposition_all(input, reclaim, None)
}

fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(meta.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Replace `path` with `text` atomically: a reader (the textfile collector) sees the old file
/// or the new one, never half of one. The error says which file failed.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| format!("--textfile {}: not a file name", path.display()))?;
    // In the same directory (rename is atomic only within a file system); the collector reads
    // *.prom only, so it never sees the temporary file.
    let tmp = dir.join(format!("{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let write = || -> io::Result<()> {
        let mut f: File = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(format!("write {}: {e}", tmp.display()));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(format!("rename {} to {}: {e}", tmp.display(), path.display()));
    }
    // The rename itself is durable only once the directory is synced.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| format!("sync directory {} of {}: {e}", dir.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::census_of;
    use cgleak_model::era::Errno;
    use cgleak_model::forecast::{forecast, History, Sample};

    // One copy of these for the unit and the integration tests: tests/common/prom.rs.
    use crate::testing::prom::{assert_promtool_accepts as promtool_accepts, has_series as has, sample};

    fn value(text: &str, name: &str) -> f64 {
        sample(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn full_set_on_6_12_v2() {
        let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
        let c = census_of(&f);
        let t = f.truth.clone();
        let text = exposition(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: Some(Duration::from_millis(1500)) });
        assert_eq!(value(&text, "cgleak_memcg_live"), t.live_memcgs as f64);
        assert_eq!(value(&text, "cgleak_memcg_dying"), t.dying.expect("6.12 counts dying memcgs") as f64);
        assert_eq!(value(&text, "cgleak_memcg_ids_in_use"), c.memcg.ids_in_use.unwrap() as f64);
        assert_eq!(value(&text, "cgleak_memcg_id_limit"), 65535.0);
        assert_eq!(value(&text, "cgleak_memcg_headroom"), c.memcg.headroom.unwrap() as f64);
        assert_eq!(value(&text, "cgleak_sample_duration_seconds"), 1.5);
        assert!(text.contains(&format!("cgleak_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"exact\"} 1\n"), "{text}");
        assert!(text.contains("# HELP cgleak_memcg_live "), "{text}");
        // No history yet: the forecast is there from the first scrape, NaN (unknown).
        assert!(value(&text, "cgleak_memcg_exhaustion_forecast_seconds").is_nan(), "{text}");
        assert!(text.contains("cgleak_memcg_exhaustion_forecast_seconds NaN\n"), "{text}");
        // kmem is not opt-in on v2; no logs read.
        for absent in ["cgleak_memcg_kmem_active", "cgleak_log_incidents_total"] {
            assert!(!has(&text, absent), "{absent} should be absent:\n{text}");
            assert!(!text.contains(absent.trim_end_matches("_total")), "no HELP/TYPE either for {absent}:\n{text}");
        }
        assert_eq!(has(&text, "cgleak_kubepods_orphans"), c.kubepods.as_ref().and_then(|k| k.orphans).is_some());
    }

    #[test]
    fn dying_metrics_only_with_a_naming_method_and_bounded() {
        use cgleak_model::dying::{by_parent, DyingRow, DyingSummary, Method};
        let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
        let c = census_of(&f);
        let input = MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None };
        let none = exposition_dying(&input, None);
        assert!(!has(&none, "cgleak_memcg_dying_pinned_bytes") && !none.contains("cgleak_memcg_dying_by_parent"), "{none}");
        let mut rows: Vec<DyingRow> = Vec::new();
        for i in 0..40 {
            for _ in 0..=i {
                rows.push(DyingRow::at_path(format!("/p{i}/sub/c"), Method::Bpf));
            }
        }
        rows.push(DyingRow::at_path("/kubepods/burstable/poda/c".into(), Method::Bpf));
        let d = DyingSummary { named: rows.len() as u64, pinned_bytes: 123_456_789, by_parent: by_parent(&rows) };
        let text = exposition_dying(&input, Some(&d));
        assert_eq!(value(&text, "cgleak_memcg_dying_pinned_bytes"), 123_456_789.0);
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("cgleak_memcg_dying_by_parent{")).collect();
        assert_eq!(series.len(), 21, "20 parents and other: {series:?}");
        assert_eq!(value(&text, "cgleak_memcg_dying_by_parent{parent=\"p39/sub\"}"), 40.0);
        let sum: f64 = series.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum();
        assert_eq!(sum, rows.len() as f64, "every dying memcg in one series");
        assert!(text.contains("parent=\"other\""), "{text}");
        promtool_accepts(&text);
    }

    #[test]
    fn el7_has_no_dying_nor_headroom_but_kmem() {
        let f = cgleak_fixtures::centos7_957_kmem();
        let c = census_of(&f);
        let text = exposition(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None });
        assert!(!has(&text, "cgleak_memcg_dying"), "3.10 cannot count dying memcgs:\n{text}");
        assert!(!has(&text, "cgleak_memcg_headroom"), "headroom is unknown on 3.10:\n{text}");
        assert!(!has(&text, "cgleak_sample_duration_seconds"));
        assert_eq!(value(&text, "cgleak_memcg_kmem_active"), f.truth.kmem_active.expect("opt-in kmem on 3.10") as f64);
        assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"lower_bound\"} 1\n"), "{text}");
        // Deleted pods' and restarted containers' caches: IDs of memcgs that no longer exist.
        let dead = value(&text, "cgleak_memcg_dead_slab_ids");
        assert!(dead > 0.0 && dead == c.slab.summary.dead_ids as f64, "{text}");
        // The lower bound: the live memcgs plus the deleted ones their slab caches still show.
        assert_eq!(value(&text, "cgleak_memcg_ids_in_use"), f.truth.live_memcgs as f64 + dead, "{text}");
        promtool_accepts(&text);
    }

    #[test]
    fn dead_slab_ids_only_where_per_memcg_caches_are_in_sysfs() {
        // 4.4: per-memcg caches under <cache>/cgroup/ (before slub_memcg_sysfs became opt-in).
        let f = cgleak_fixtures::linux_4_4_v1();
        let c = census_of(&f);
        assert_eq!(dead_slab_ids(&c), Some(c.slab.summary.dead_ids));
        assert!(c.slab.summary.dead_ids > 0, "{:?}", c.slab);
        // el7 with nokmem: the kernel has per-memcg caches, none exist: a true 0.
        assert_eq!(dead_slab_ids(&census_of(&cgleak_fixtures::rhel7_1160_nokmem())), Some(0));
        // 4.19: per-memcg caches stay out of sysfs without slub_memcg_sysfs=1; 5.9+ has none.
        for f in [cgleak_fixtures::debian_4_19_v1_dying(), cgleak_fixtures::debian_5_10_hybrid(), cgleak_fixtures::debian_6_12_v2_dying_subsys()] {
            let c = census_of(&f);
            assert_eq!(dead_slab_ids(&c), None, "{}", f.name);
            let text = exposition(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None });
            assert!(!text.contains("cgleak_memcg_dead_slab_ids"), "{}:\n{text}", f.name);
        }
    }

    #[test]
    fn reclaim_counters_from_zero_and_only_what_the_kernel_can_count() {
        let r = ReclaimTotals::new();
        // 6.12: dying memcgs are counted, no per-memcg slab caches.
        let c = census_of(&cgleak_fixtures::debian_6_12_v2_dying_subsys());
        let text = exposition_with(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None }, Some(&r));
        for o in RECLAIM_OUTCOMES {
            assert!(text.contains(&format!("cgleak_reclaim_runs_total{{outcome=\"{o}\"}} 0\n")), "{o}:\n{text}");
        }
        assert!(text.contains("# TYPE cgleak_reclaim_runs_total counter\n"), "{text}");
        assert_eq!(value(&text, "cgleak_reclaim_released_memcgs_total"), 0.0);
        assert_eq!(value(&text, "cgleak_reclaim_last_run_timestamp_seconds"), 0.0);
        assert!(!has(&text, "cgleak_reclaim_released_dead_slab_ids_total"), "{text}");
        promtool_accepts(&text);
        // Without the flag: none of them.
        let text = exposition(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None });
        assert!(!text.contains("cgleak_reclaim_"), "{text}");

        // el7: released memcgs cannot be counted, dead slab IDs can.
        let mut r = ReclaimTotals::new();
        *r.runs.get_mut("completed").unwrap() += 2;
        r.released_dead_slab_ids = 5;
        r.last_run_unix = Some(1.7e9);
        let c = census_of(&cgleak_fixtures::centos7_957_kmem());
        let text = exposition_with(&MetricsInput { census: &c, forecast: None, incidents: None, sample_duration: None }, Some(&r));
        assert!(text.contains("cgleak_reclaim_runs_total{outcome=\"completed\"} 2\n"), "{text}");
        assert!(!has(&text, "cgleak_reclaim_released_memcgs_total"), "{text}");
        assert_eq!(value(&text, "cgleak_reclaim_released_dead_slab_ids_total"), 5.0);
        assert_eq!(value(&text, "cgleak_reclaim_last_run_timestamp_seconds"), 1.7e9);
        promtool_accepts(&text);
    }

    #[test]
    fn forecast_and_incidents_when_given() {
        let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
        let c = census_of(&f);
        let mut h = History::new(100);
        for i in 0..60u64 {
            h.push(Sample { at_unix_secs: 1e9 + 60.0 * i as f64, ids_in_use: 60000 + i, id_limit: 65535, dying: None });
        }
        let fc = forecast(&h, 1e9 + 59.0 * 60.0);
        let inc = |errno: Option<Errno>, component: &str| Incident {
            kind: IncidentKind::MemcgCreateFailed,
            errno,
            component: component.into(),
            time: None,
            host: None,
            cgroup_path: None,
            pod_uid: None,
            container_id: None,
            source: "/var/log/syslog".into(),
            line: 1,
            raw: String::new(),
            trusted: true,
            origin: "syslog tag kubelet".into(),
        };
        let mut slab = inc(None, "kernel");
        slab.kind = IncidentKind::SlabAllocFailed;
        // A tenant's line with the same words: its own family, no component label.
        let mut tenant = inc(Some(Errno::ENOSPC), "myapp");
        (tenant.trusted, tenant.origin) = (false, "syslog tag myapp: not kubelet, a container runtime, systemd or the kernel".into());
        let counts = incident_counts(&[inc(Some(Errno::ENOSPC), "kubelet"), inc(Some(Errno::ENOSPC), "kubelet"), slab, tenant.clone(), tenant]);
        let text = exposition(&MetricsInput { census: &c, forecast: Some(&fc), incidents: Some(&counts), sample_duration: None });
        let secs = value(&text, "cgleak_memcg_exhaustion_forecast_seconds");
        assert!((secs - fc.seconds_to_exhaustion.unwrap()).abs() < 1e-6, "{text}");
        assert!(text.contains("# TYPE cgleak_log_incidents_total counter\n"), "{text}");
        assert!(text.contains("# HELP cgleak_log_incidents_total Log lines"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("cgleak_log_incidents_total{kind=\"memcg_create_failed\",component=\"kubelet\",errno=\"ENOSPC\"} 2\n"), "{text}");
        assert!(text.contains("cgleak_log_incidents_total{kind=\"slab_alloc_failed\",component=\"kernel\",errno=\"none\"} 1\n"), "{text}");
        assert!(!text.contains("myapp"), "{text}");
        assert!(text.contains("cgleak_log_untrusted_incidents_total{kind=\"memcg_create_failed\",errno=\"ENOSPC\"} 2\n"), "{text}");
        promtool_accepts(&text);
        // The OpenMetrics form keeps the family name without the suffix, and its EOF.
        let om = openmetrics_exposition(&MetricsInput { census: &c, forecast: Some(&fc), incidents: Some(&counts), sample_duration: None });
        assert!(om.contains("# TYPE cgleak_log_incidents counter\n") && om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn every_family_from_the_first_scrape_counters_at_zero_and_a_flat_trend_at_inf() {
        let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
        let c = census_of(&f);
        // The agent reads logs but nothing matched yet: every kind at 0, trusted and not.
        let counts = IncidentCounts::new();
        let mut h = History::new(100);
        for i in 0..60u64 {
            h.push(Sample { at_unix_secs: 1e9 + 60.0 * i as f64, ids_in_use: 60000, id_limit: 65535, dying: None });
        }
        let flat = forecast(&h, 1e9 + 59.0 * 60.0);
        let text = exposition(&MetricsInput { census: &c, forecast: Some(&flat), incidents: Some(&counts), sample_duration: None });
        for kind in ["memcg_create_failed", "slab_alloc_failed", "inotify_exhausted"] {
            assert!(text.contains(&format!("cgleak_log_incidents_total{{kind=\"{kind}\",component=\"none\",errno=\"none\"}} 0\n")), "{kind}: {text}");
            assert!(text.contains(&format!("cgleak_log_untrusted_incidents_total{{kind=\"{kind}\",errno=\"none\"}} 0\n")), "{kind}: {text}");
        }
        assert!(text.contains("cgleak_memcg_exhaustion_forecast_seconds +Inf\n"), "{text}");
        promtool_accepts(&text);
        // Exhausted: 0.
        let mut h = History::new(100);
        for i in 0..60u64 {
            h.push(Sample { at_unix_secs: 1e9 + 60.0 * i as f64, ids_in_use: 65535, id_limit: 65535, dying: None });
        }
        assert_eq!(forecast_seconds(Some(&forecast(&h, 1e9 + 59.0 * 60.0))), 0.0);
        // Too few samples: NaN.
        let mut h = History::new(100);
        h.push(Sample { at_unix_secs: 1e9, ids_in_use: 100, id_limit: 65535, dying: None });
        assert!(forecast_seconds(Some(&forecast(&h, 1e9))).is_nan());

    }

    #[test]
    fn textfile_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cgleak.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cgleak.prom")]);

        let missing = dir.path().join("no/such/dir/cgleak.prom");
        let e = write_textfile(&missing, "a 1\n").unwrap_err();
        assert!(e.contains("no/such/dir/cgleak.prom.tmp."), "{e}");
    }
}

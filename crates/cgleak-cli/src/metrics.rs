//! The census as Prometheus metrics (text exposition), for `status --textfile` (node_exporter's
//! textfile collector) and the agent's endpoint.
//!
//! A value this kernel cannot give is absent, never a fake zero: no `cgleak_memcg_dying` on
//! 3.10 (KERNEL-FACTS.md section 2), no `cgleak_memcg_kmem_active` where kmem accounting is
//! not opt-in (4.6+, v2), no `cgleak_kubepods_orphans` without the kubelet's pods directory.

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
use cgleak_model::forecast::Forecast;
use cgleak_model::incidents::{Incident, IncidentKind};

/// Incidents seen in the logs, by kind, component and errno ("none" for lines that print none).
pub type IncidentCounts = BTreeMap<(IncidentKind, String, Option<&'static str>), u64>;

/// Count incidents for `cgleak_log_incidents_total`.
pub fn incident_counts(incidents: &[Incident]) -> IncidentCounts {
    let mut out = IncidentCounts::new();
    for i in incidents {
        *out.entry((i.kind, i.component.clone(), i.errno.map(|e| e.as_str()))).or_default() += 1;
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

/// The registry of one sample. Help texts end without a period: the encoder adds one.
pub fn registry(input: &MetricsInput<'_>) -> Registry {
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
        "cgleak_kubepods_orphans",
        "Pod cgroups with no task and no pod directory in the kubelet's state (absent without a kubepods tree or the kubelet's pods directory)",
        c.kubepods.as_ref().and_then(|k| k.orphans),
    );
    gauge_f64(
        &mut reg,
        "cgleak_memcg_exhaustion_forecast_seconds",
        "Seconds until the memory cgroup ID space runs out at the current trend (absent when not approaching or without history)",
        input.forecast.and_then(|f| f.seconds_to_exhaustion),
    );
    if let Some(counts) = input.incidents {
        let f: Family<Labels, Counter> = Family::default();
        for ((kind, component, errno), n) in counts {
            let labels = vec![("kind", kind.as_str().to_string()), ("component", component.clone()), ("errno", errno.unwrap_or("none").to_string())];
            f.get_or_create(&labels).inc_by(*n);
        }
        // Registered without the suffix: the encoder writes the samples as cgleak_log_incidents_total.
        reg.register("cgleak_log_incidents", "Log lines showing failed memory cgroup creations, slab or inotify failures", f);
    }
    gauge_f64(
        &mut reg,
        "cgleak_sample_duration_seconds",
        "Time taken to take this census",
        input.sample_duration.map(|d| d.as_secs_f64()),
    );
    reg
}

/// OpenMetrics text, as prometheus-client writes it (for a scraper that asks for
/// `application/openmetrics-text`).
#[allow(dead_code)] // for the agent's endpoint
pub fn openmetrics_exposition(input: &MetricsInput<'_>) -> String {
    let mut out = String::new();
    encode(&mut out, &registry(input)).expect("writing to a String cannot fail");
    out
}

/// Prometheus text format 0.0.4, which node_exporter's textfile collector and `promtool check
/// metrics` parse: OpenMetrics names a counter family without `_total` in HELP and TYPE,
/// which that parser takes for a second, untyped metric; and it has no `# EOF`.
pub fn exposition(input: &MetricsInput<'_>) -> String {
    to_prometheus_text(&openmetrics_exposition(input))
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

    use cgleak_model::census::take_census;
    use cgleak_model::era::Errno;
    use cgleak_model::forecast::{forecast, History, Sample};
    use cgleak_readers::HostPaths;

    fn census_of(f: &cgleak_fixtures::Fixture) -> Census {
        take_census(&HostPaths::new(f.root())).unwrap_or_else(|e| panic!("census of {}: {e}", f.name))
    }

    /// Sample lines (not comments) of the exposition, by metric name.
    fn series(text: &str) -> Vec<String> {
        text.lines().filter(|l| !l.starts_with('#')).map(|l| l.to_string()).collect()
    }

    fn has(text: &str, name: &str) -> bool {
        series(text).iter().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
    }

    fn value(text: &str, name: &str) -> f64 {
        let line = series(text).into_iter().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// `promtool check metrics` (Debian's `prometheus` package) must accept `text`, lint included.
    /// Fails when promtool is missing: never skipped.
    fn promtool_accepts(text: &str) {
        use std::process::{Command, Stdio};
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run promtool ({e}): install Debian's `prometheus` package (scripts/test-all.sh does)"));
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {:?}\n{said}\n---\n{text}", out.status);
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
        // kmem is not opt-in on v2; no history, no logs read.
        for absent in ["cgleak_memcg_kmem_active", "cgleak_memcg_exhaustion_forecast_seconds", "cgleak_log_incidents_total"] {
            assert!(!has(&text, absent), "{absent} should be absent:\n{text}");
            assert!(!text.contains(absent.trim_end_matches("_total")), "no HELP/TYPE either for {absent}:\n{text}");
        }
        assert_eq!(has(&text, "cgleak_kubepods_orphans"), c.kubepods.as_ref().and_then(|k| k.orphans).is_some());
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
        assert!(has(&text, "cgleak_memcg_ids_in_use"));
        assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"lower_bound\"} 1\n"), "{text}");
    }

    #[test]
    fn forecast_and_incidents_when_given() {
        let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
        let c = census_of(&f);
        let mut h = History::new(100);
        for i in 0..60u64 {
            h.push(Sample { at_unix_secs: 1e9 + 60.0 * i as f64, ids_in_use: 60000 + i, id_limit: 65535 });
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
        };
        let mut slab = inc(None, "kernel");
        slab.kind = IncidentKind::SlabAllocFailed;
        let counts = incident_counts(&[inc(Some(Errno::ENOSPC), "kubelet"), inc(Some(Errno::ENOSPC), "kubelet"), slab]);
        let text = exposition(&MetricsInput { census: &c, forecast: Some(&fc), incidents: Some(&counts), sample_duration: None });
        let secs = value(&text, "cgleak_memcg_exhaustion_forecast_seconds");
        assert!((secs - fc.seconds_to_exhaustion.unwrap()).abs() < 1e-6, "{text}");
        assert!(text.contains("# TYPE cgleak_log_incidents_total counter\n"), "{text}");
        assert!(text.contains("# HELP cgleak_log_incidents_total Log lines"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("cgleak_log_incidents_total{kind=\"memcg_create_failed\",component=\"kubelet\",errno=\"ENOSPC\"} 2\n"), "{text}");
        assert!(text.contains("cgleak_log_incidents_total{kind=\"slab_alloc_failed\",component=\"kernel\",errno=\"none\"} 1\n"), "{text}");
        promtool_accepts(&text);

        // The OpenMetrics form keeps the family name without the suffix, and its EOF.
        let om = openmetrics_exposition(&MetricsInput { census: &c, forecast: Some(&fc), incidents: Some(&counts), sample_duration: None });
        assert!(om.contains("# TYPE cgleak_log_incidents counter\n") && om.ends_with("# EOF\n"), "{om}");
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

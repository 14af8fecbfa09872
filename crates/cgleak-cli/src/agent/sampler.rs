//! One sample of the agent, every `--interval`: a census (the inputs that cannot change
//! kept from the last), its IDs in use added to the history, the forecast from it, and
//! with `--kubernetes` the reporter's summary: the verdict, judged with that forecast, and
//! the incidents logged since the last sample. What it leaves is in [`Shared`], for the
//! endpoint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cgleak_kube::{ReportSummary, ReporterHandle};
use cgleak_model::census::{census_observed, Census, CensusError, CensusInputs, MemcgObserver};
use cgleak_model::forecast::{forecast, Sample};
use cgleak_model::history::HistoryStore;
use cgleak_model::memcg_memory::MemcgMemory;
use cgleak_model::verdict::{check, NodeFacts};
use cgleak_readers::cgroupfs::WalkCache;
use cgleak_readers::HostPaths;

use super::dying::DyingNamer;
use super::shared::{lock, now_unix, Shared};
use crate::render::note;

/// What one census leaves for the next: the inputs that cannot change while the host runs
/// (mounts, kernel era), read once, and the walk's memory of each directory's
/// subdirectories, so unchanged directories are not listed again. A failed census drops
/// both, so the next sample reads everything again.
#[derive(Default)]
struct SteadyInputs {
    inputs: Option<CensusInputs>,
    walk: WalkCache,
}

impl SteadyInputs {
    fn census(&mut self, host: &HostPaths, observer: Option<&mut (dyn MemcgObserver + Send)>) -> Result<Census, CensusError> {
        let inputs = match self.inputs.take() {
            Some(i) => i,
            None => CensusInputs::read(host)?,
        };
        let census = census_observed(host, inputs.clone(), Some(&mut self.walk), observer)?;
        self.inputs = Some(inputs);
        Ok(census)
    }
}

/// The agent's sampling: the census's steady inputs, the history, and the node's facts the
/// reporter's verdict is judged with.
pub struct Sampler {
    inputs: SteadyInputs,
    history: HistoryStore,
    /// Versions, boot parameters and the kubelet's driver, read once (they change only with
    /// a restart of theirs); None without `--kubernetes`.
    node: Option<NodeFacts>,
    /// The memory of memcgs (inodes, paths, when each was last seen and gone), told of every
    /// memcg by the census walk; None with --no-memcg-memory.
    memory: Option<MemcgMemory>,
    /// The BPF walk of the dying memcgs, in a child; None without --dying-bpf.
    namer: Option<DyingNamer>,
}

impl Sampler {
    pub fn new(history: HistoryStore, node: Option<NodeFacts>) -> Sampler {
        Sampler { inputs: SteadyInputs::default(), history, node, memory: None, namer: None }
    }

    /// Name the dying memcgs with `namer` (the BPF walk in a child) when it is due.
    pub fn with_namer(mut self, namer: DyingNamer) -> Sampler {
        self.namer = Some(namer);
        self
    }

    /// Remember every memcg each census sees in `memory`, saved after each sample that
    /// changed it (and every few minutes without changes).
    pub fn with_memory(mut self, memory: MemcgMemory) -> Sampler {
        self.memory = Some(memory);
        self
    }

    /// One tick: a census of `host`, recorded, and its summary submitted to the reporter. A
    /// census that fails leaves the last one in place, and its error for /healthz.
    pub fn sample(&mut self, host: &HostPaths, shared: &Mutex<Shared>, kube: Option<&ReporterHandle>) {
        let started = Instant::now();
        if let Some(m) = &mut self.memory {
            m.begin(jiff::Timestamp::now());
        }
        let observer = self.memory.as_mut().map(|m| m as &mut (dyn MemcgObserver + Send));
        let census = match self.inputs.census(host, observer) {
            Ok(c) => {
                // Only a census that walked the whole hierarchy tells which memcgs are gone.
                if let Some(m) = &mut self.memory {
                    m.end();
                    m.save(&mut note);
                }
                c
            }
            Err(e) => {
                eprintln!("cgleak: census failed: {e}");
                lock(shared).last_error = Some(e.to_string());
                return;
            }
        };
        let dying = census.memcg.dying;
        let summary = self.record(census, started.elapsed(), now_unix(), shared);
        // After the census is served: the walk (tens of ms) delays nothing on /metrics.
        if let Some(n) = &mut self.namer {
            if n.due(dying) {
                let r = n.walk();
                n.tell(&r);
                lock(shared).dying = r.ok();
            }
        }
        if let (Some(k), Some(s)) = (kube, summary) {
            k.submit(s);
        }
    }

    /// What one census, taken in `took` at `now_unix`, leaves: its sample in the history
    /// (where IDs in use are known), the forecast, both in `shared` for the endpoint; and,
    /// with the node's facts, the reporter's summary, with the incidents queued since the
    /// last sample (taken from `shared` either way: they are new only once).
    pub fn record(&mut self, census: Census, took: Duration, now_unix: f64, shared: &Mutex<Shared>) -> Option<ReportSummary> {
        if let Some(ids) = census.memcg.ids_in_use {
            self.history.push(Sample { at_unix_secs: now_unix, ids_in_use: ids, id_limit: census.memcg.id_limit, dying: census.memcg.dying }, &mut note);
        }
        let fc = forecast(self.history.history(), now_unix);
        let new_incidents = std::mem::take(&mut lock(shared).pending_incidents);
        let summary = self.node.as_ref().map(|n| {
            let mut facts = n.clone();
            facts.forecast = Some(fc.clone());
            ReportSummary::from_report(&check(census.clone(), facts), new_incidents)
        });
        let samples: Vec<Sample> = self.history.history().samples().copied().collect();
        let mut s = lock(shared);
        s.history = samples;
        s.census = Some(census);
        s.sample_duration = Some(took);
        s.last_sample = Some(Instant::now());
        s.last_error = None;
        s.forecast = Some(fc);
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::census_of;
    use cgleak_model::forecast::ForecastOutcome;
    use cgleak_model::incidents::{Incident, IncidentParser};
    use cgleak_model::verdict::Verdict;
    use cgleak_readers::logline::{LineMeta, LogLine};

    fn kubelet_mkdir_failed() -> Incident {
        let meta = LineMeta::default();
        let text = b"Dec 22 08:00:00 node-1 kubelet[1146]: E1222 08:00:00.498519    1146 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to create containerd task: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c/3f1e9a7c: no space left on device: unknown\"";
        let (mut out, mut p) = (Vec::new(), IncidentParser::new(2023));
        p.feed(&LogLine { source: "syslog", line: 1, text, meta: &meta }, &mut out);
        p.finish(&mut out);
        out.pop().expect("a kubelet mkdir ENOSPC line is an incident")
    }

    const T0: f64 = 1_700_000_000.0;

    #[test]
    fn a_sample_goes_to_the_history_the_forecast_and_the_endpoint() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let census = census_of(&f);
        let ids = census.memcg.ids_in_use.expect("v2 counts IDs in use");
        let shared = Mutex::new(Shared::default());
        let mut sampler = Sampler::new(HistoryStore::in_memory(10), None);
        for n in 0..3 {
            assert!(sampler.record(census.clone(), Duration::from_millis(7), T0 + 60.0 * n as f64, &shared).is_none(), "no reporter, no summary");
        }
        let h = sampler.history.history();
        assert_eq!(h.samples().map(|s| (s.at_unix_secs, s.ids_in_use)).collect::<Vec<_>>(), vec![(T0, ids), (T0 + 60.0, ids), (T0 + 120.0, ids)]);
        let s = lock(&shared);
        assert_eq!(s.census.as_ref().map(|c| c.memcg.ids_in_use), Some(Some(ids)));
        assert_eq!(s.sample_duration, Some(Duration::from_millis(7)));
        assert!(s.last_sample.is_some() && s.last_error.is_none());
        let fc = s.forecast.as_ref().expect("a forecast each sample");
        assert_eq!(fc.outcome, ForecastOutcome::TooFewSamples, "{fc:?}");
    }

    #[test]
    fn a_node_whose_ids_cannot_be_counted_adds_no_sample() {
        let mut census = census_of(&cgleak_fixtures::debian_6_1_v2());
        census.memcg.ids_in_use = None;
        let shared = Mutex::new(Shared::default());
        let mut sampler = Sampler::new(HistoryStore::in_memory(10), None);
        sampler.record(census, Duration::ZERO, T0, &shared);
        assert!(sampler.history.history().is_empty());
        assert!(lock(&shared).census.is_some() && lock(&shared).forecast.is_some());
    }

    #[test]
    fn the_reporter_gets_the_verdict_with_this_forecast_and_the_new_incidents_once() {
        let f = cgleak_fixtures::debian_6_1_v2();
        let host = HostPaths::new(f.root());
        let base = census_of(&f);
        let shared = Mutex::new(Shared::default());
        let mut sampler = Sampler::new(HistoryStore::in_memory(1000), Some(NodeFacts::read(&host)));
        // Far from the limit, and rising by 10 IDs a minute: out of IDs in about 4.5 days.
        let at = |n: u64| {
            let mut c = base.clone();
            c.memcg.ids_in_use = Some(1000 + 10 * n);
            c
        };
        lock(&shared).pending_incidents.push(kubelet_mkdir_failed());
        let first = sampler.record(at(0), Duration::ZERO, T0, &shared).expect("a summary with the node's facts");
        assert_eq!(first.new_incidents.len(), 1, "the incidents queued since the last sample");
        assert!(lock(&shared).pending_incidents.is_empty());
        assert_eq!((first.ids_in_use, first.headroom), (Some(1000), base.memcg.headroom));
        let mut last = first;
        for n in 1..60 {
            last = sampler.record(at(n), Duration::ZERO, T0 + 60.0 * n as f64, &shared).unwrap();
        }
        assert!(last.new_incidents.is_empty(), "an incident is new once");
        let fc = lock(&shared).forecast.clone().unwrap();
        assert_eq!(fc.outcome, ForecastOutcome::Approaching, "{fc:?}");
        // The verdict the reporter gets is check's with that forecast: at risk (out of IDs
        // within a week), where the census alone is healthy.
        let mut facts = NodeFacts::read(&host);
        assert_eq!(check(at(59), facts.clone()).verdict, Verdict::Healthy);
        facts.forecast = Some(fc);
        assert_eq!(last.verdict, check(at(59), facts).verdict);
        assert_eq!(last.verdict, Verdict::AtRisk);
    }

    #[test]
    fn a_census_that_fails_keeps_the_last_and_says_why() {
        let shared = Mutex::new(Shared::default());
        let mut sampler = Sampler::new(HistoryStore::in_memory(10), None);
        sampler.record(census_of(&cgleak_fixtures::debian_6_1_v2()), Duration::ZERO, T0, &shared);
        // A root with no /proc: no census can be taken there.
        let empty = tempfile::tempdir().unwrap();
        sampler.sample(&HostPaths::new(empty.path()), &shared, None);
        let s = lock(&shared);
        assert!(s.census.is_some(), "the last census stays for the metrics");
        assert!(s.last_error.as_deref().is_some_and(|e| e.contains("mountinfo")), "{:?}", s.last_error);
        assert_eq!(sampler.history.history().len(), 1);
    }
}

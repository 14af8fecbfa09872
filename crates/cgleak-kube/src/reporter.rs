//! Sends what [`crate::objects`] builds. Every request has a timeout; after a failure the
//! reporter backs off (exponential, capped) and calls return at once until the retry time,
//! so the agent's sampling and metrics never wait on a sick API server.

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, NodeCondition};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

use cgleak_model::verdict::Verdict;

use crate::objects::{
    condition_for, event_for, event_repeat_patch, reset_condition, status_patch, taint_patch, EventAction, EventCause,
    EventDedup, ReportSummary, TaintPolicy, REPORTING_COMPONENT,
};

/// Events waiting for the API server at most; older ones are dropped first.
const PENDING_EVENTS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    // With the causes: kube's "client error (Connect)" alone does not say that the name
    // of the API server was not found, or that the connection was refused.
    #[error("Kubernetes API: {}", with_causes(.0))]
    Api(#[source] kube::Error),
    #[error("Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Kubernetes API unavailable after {failures} failures; next try in {retry_in:?} (last error: {last_error})")]
    BackingOff { retry_in: Duration, failures: u32, last_error: String },
    #[error("taint on node {node}: still conflicting (409) after {attempts} attempts")]
    Conflict { node: String, attempts: u32 },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

/// `e: cause: cause...`, each message once (kube's ServiceError repeats its source's).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cause = c.source();
    }
    s
}

impl KubeError {
    /// The HTTP status of an answer from the API server.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeError::Api(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    fn is_conflict(&self) -> bool {
        self.status_code() == Some(409)
    }

    fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// A refusal that asking again will not change (forbidden, invalid): the object is
    /// dropped rather than retried, so it cannot hold back the condition or the taint.
    fn is_permanent(&self) -> bool {
        matches!(self.status_code(), Some(400 | 403 | 422))
    }
}

/// Exponential backoff with a cap; reset by a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    delay: Option<Duration>,
    retry_at: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, delay: None, retry_at: None, failures: 0, last_error: None }
    }

    /// Err(time left) while backing off.
    pub fn ready(&self, now: Instant) -> Result<(), Duration> {
        match self.retry_at {
            Some(at) if at > now => Err(at - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, now: Instant, error: String) {
        let d = self.delay.map_or(self.initial, |d| (d * 2).min(self.max));
        self.delay = Some(d);
        self.retry_at = Some(now + d);
        self.failures += 1;
        self.last_error = Some(error);
    }

    /// Keep an error that caused no backoff (a refused Event), for the status page.
    pub fn note(&mut self, error: String) {
        self.last_error = Some(error);
    }

    pub fn succeeded(&mut self) {
        self.delay = None;
        self.retry_at = None;
        self.failures = 0;
    }

    /// The current delay (None when the last call succeeded).
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last error, kept after a success for the agent's status page.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

#[derive(Debug, Clone)]
pub struct ReporterConfig {
    pub node_name: String,
    /// Namespace of the Events (Node events live in `default`).
    pub event_namespace: String,
    /// None: never taint.
    pub taint: Option<TaintPolicy>,
    /// An unchanged condition is written again when its heartbeat is this old.
    pub heartbeat_interval: Duration,
    pub request_timeout: Duration,
    /// All the calls of one report together: past it the report gives up (and backs off),
    /// so a slow API server holds the agent's loop this long at most.
    pub report_budget: Duration,
    /// Re-reads of the node after a 409 on the taint patch.
    pub conflict_retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ReporterConfig {
    pub fn new(node_name: impl Into<String>) -> ReporterConfig {
        ReporterConfig {
            node_name: node_name.into(),
            event_namespace: "default".to_string(),
            taint: None,
            heartbeat_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            report_budget: Duration::from_secs(15),
            conflict_retries: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// What one [`KubeReporter::report`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    pub condition_written: bool,
    pub events_created: u32,
    pub events_repeated: u32,
    /// Events the API server refused for good (400, 403, 422): dropped, not retried.
    pub events_dropped: u32,
    /// Some(true) when the taint was added, Some(false) when removed.
    pub taint_changed: Option<bool>,
}

pub struct KubeReporter {
    cfg: ReporterConfig,
    nodes: Api<Node>,
    events: Api<Event>,
    /// The condition last written, for lastTransitionTime and heartbeat decisions.
    written: Option<NodeCondition>,
    written_at: Option<Instant>,
    last_verdict: Option<Verdict>,
    pending: VecDeque<(EventCause, ReportSummary, Timestamp)>,
    dedup: EventDedup,
    /// Whether our taint is on the node, as last seen; None until checked.
    tainted: Option<bool>,
    /// PATCH of events was forbidden (RBAC grants `create` only): repeats are then counted
    /// here and not sent.
    repeats_forbidden: bool,
    backoff: Backoff,
}

impl KubeReporter {
    /// The kubeconfig (`KUBECONFIG`, `~/.kube/config`) if there is one, else the in-cluster
    /// service account (`kube::Config::infer`); its connect, read and write timeouts are the
    /// request timeout.
    pub async fn connect(cfg: ReporterConfig) -> Result<KubeReporter, KubeError> {
        let mut kc = kube::Config::infer().await.map_err(|e| KubeError::Config(e.to_string()))?;
        kc.connect_timeout = Some(cfg.request_timeout);
        kc.read_timeout = Some(cfg.request_timeout);
        kc.write_timeout = Some(cfg.request_timeout);
        let client = Client::try_from(kc).map_err(KubeError::Api)?;
        Ok(KubeReporter::new(client, cfg))
    }

    pub fn new(client: Client, cfg: ReporterConfig) -> KubeReporter {
        KubeReporter {
            nodes: Api::all(client.clone()),
            events: Api::namespaced(client, &cfg.event_namespace),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            written: None,
            written_at: None,
            last_verdict: None,
            pending: VecDeque::new(),
            dedup: EventDedup::default(),
            tainted: None,
            repeats_forbidden: false,
        }
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub fn config(&self) -> &ReporterConfig {
        &self.cfg
    }

    fn patch_params() -> PatchParams {
        PatchParams { field_manager: Some(REPORTING_COMPONENT.to_string()), ..PatchParams::default() }
    }

    async fn call<T>(&self, fut: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, KubeError> {
        match tokio::time::timeout(self.cfg.request_timeout, fut).await {
            Ok(r) => r.map_err(KubeError::Api),
            Err(_) => Err(KubeError::Timeout(self.cfg.request_timeout)),
        }
    }

    /// Err(BackingOff) until the retry time.
    fn guard(&self) -> Result<(), KubeError> {
        self.backoff.ready(Instant::now()).map_err(|retry_in| KubeError::BackingOff {
            retry_in,
            failures: self.backoff.failures(),
            last_error: self.backoff.last_error().unwrap_or_default().to_string(),
        })
    }

    fn record<T>(&mut self, r: Result<T, KubeError>) -> Result<T, KubeError> {
        match &r {
            Ok(_) => self.backoff.succeeded(),
            Err(e) => self.backoff.failed(Instant::now(), e.to_string()),
        }
        r
    }

    /// At start: write the condition as not yet known, so a True left by an earlier run
    /// does not stand until the first sample.
    pub async fn reset_owned_conditions(&mut self) -> Result<(), KubeError> {
        self.reset_owned_conditions_at(Timestamp::now()).await
    }

    pub async fn reset_owned_conditions_at(&mut self, now: Timestamp) -> Result<(), KubeError> {
        self.guard()?;
        let cond = reset_condition(now);
        let r = self.patch_condition(&cond).await;
        if r.is_ok() {
            self.written = Some(cond);
            self.written_at = Some(Instant::now());
        }
        self.record(r)
    }

    async fn patch_condition(&self, cond: &NodeCondition) -> Result<(), KubeError> {
        let body = status_patch(std::slice::from_ref(cond));
        self.call(self.nodes.patch_status(&self.cfg.node_name, &Self::patch_params(), &Patch::Strategic(body))).await?;
        Ok(())
    }

    /// Report one sample: condition (when changed or its heartbeat is due), Events, taint.
    /// While backing off this returns `BackingOff` at once; Events are kept (bounded) for
    /// the next successful call.
    pub async fn report(&mut self, s: &ReportSummary) -> Result<ReportOutcome, KubeError> {
        self.report_at(s, Timestamp::now()).await
    }

    pub async fn report_at(&mut self, s: &ReportSummary, now: Timestamp) -> Result<ReportOutcome, KubeError> {
        self.queue_events(s, now);
        self.guard()?;
        // Dropping `sync` midway is safe: state is recorded only after each call succeeded.
        let budget = self.cfg.report_budget;
        let r = match tokio::time::timeout(budget, self.sync(s, now)).await {
            Ok(r) => r,
            Err(_) => Err(KubeError::Timeout(budget)),
        };
        self.record(r)
    }

    fn queue_events(&mut self, s: &ReportSummary, now: Timestamp) {
        let from = self.last_verdict.unwrap_or(Verdict::Healthy);
        self.last_verdict = Some(s.verdict);
        let mut causes: Vec<EventCause> = s.new_incidents.iter().map(|i| EventCause::NewIncident(Box::new(i.clone()))).collect();
        if s.verdict != from {
            causes.push(EventCause::VerdictChanged { from, to: s.verdict });
        }
        for c in causes {
            if self.pending.len() >= PENDING_EVENTS_MAX {
                self.pending.pop_front();
            }
            self.pending.push_back((c, s.clone(), now));
        }
    }

    async fn sync(&mut self, s: &ReportSummary, now: Timestamp) -> Result<ReportOutcome, KubeError> {
        let mut out = ReportOutcome::default();
        let cond = condition_for(s, self.written.as_ref(), now);
        let changed = self.written.as_ref().is_none_or(|w| (&w.status, &w.reason, &w.message) != (&cond.status, &cond.reason, &cond.message));
        let due = self.written_at.is_none_or(|at| at.elapsed() >= self.cfg.heartbeat_interval);
        if due {
            // Look at the taint again too: someone may have removed or added it by hand.
            self.tainted = None;
        }
        if changed || due {
            self.patch_condition(&cond).await?;
            self.written = Some(cond);
            self.written_at = Some(Instant::now());
            out.condition_written = true;
        }
        while let Some((cause, summary, at)) = self.pending.front().cloned() {
            match self.send_event(&cause, &summary, at).await {
                Ok(true) => out.events_repeated += 1,
                Ok(false) => out.events_created += 1,
                Err(e) if e.is_permanent() => {
                    out.events_dropped += 1;
                    self.backoff.note(e.to_string());
                }
                Err(e) => return Err(e),
            }
            self.pending.pop_front();
        }
        if let Some(policy) = self.cfg.taint.clone() {
            let want = policy.wants(s);
            if self.tainted != Some(want) {
                let changed = self.set_taint(policy.key(), want).await?;
                out.taint_changed = changed.then_some(want);
            }
        }
        Ok(out)
    }

    /// POST a new Event or PATCH the count of a repeated one; Ok(true) for a repeat.
    async fn send_event(&mut self, cause: &EventCause, s: &ReportSummary, now: Timestamp) -> Result<bool, KubeError> {
        let node = self.cfg.node_name.clone();
        if let EventAction::Repeat { name, count } = self.dedup.action(cause) {
            if self.repeats_forbidden {
                self.dedup.sent(&node, cause, count);
                return Ok(true);
            }
            let body = event_repeat_patch(count, &cause.message(s), now);
            match self.call(self.events.patch(&name, &Self::patch_params(), &Patch::Merge(body))).await {
                Ok(_) => {
                    self.dedup.sent(&node, cause, count);
                    return Ok(true);
                }
                // Events expire (1 h by default): create it again.
                Err(e) if e.is_not_found() => self.dedup.forget(cause),
                Err(e) if e.status_code() == Some(403) => {
                    self.repeats_forbidden = true;
                    self.backoff.note(format!("{e}: repeated Events are no longer counted (grant `patch` on events)"));
                    self.dedup.sent(&node, cause, count);
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        let ev = event_for(&node, &self.cfg.event_namespace, cause, s, now);
        match self.call(self.events.create(&PostParams::default(), &ev)).await {
            Ok(_) => {
                self.dedup.sent(&node, cause, 1);
                Ok(false)
            }
            // Same name from an earlier run of the agent: that Event stands, count from 1.
            Err(e) if e.is_conflict() => {
                self.dedup.sent(&node, cause, 1);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Add (`want`) or remove our taint: GET the node, PATCH guarded by its resourceVersion,
    /// and on 409 read it again, up to `conflict_retries` more times. Ok(false) when the node
    /// already was as wanted.
    pub async fn set_taint(&mut self, key: &str, want: bool) -> Result<bool, KubeError> {
        let name = self.cfg.node_name.clone();
        let attempts = self.cfg.conflict_retries + 1;
        for _ in 0..attempts {
            let node = self.call(self.nodes.get(&name)).await?;
            let Some(body) = taint_patch(&node, key, want) else {
                self.tainted = Some(want);
                return Ok(false);
            };
            match self.call(self.nodes.patch(&name, &Self::patch_params(), &Patch::Merge(body))).await {
                Ok(_) => {
                    self.tainted = Some(want);
                    return Ok(true);
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KubeError::Conflict { node: name, attempts })
    }
}

/// What the background reporter last did, for the agent's metrics and status page.
#[derive(Debug, Clone, Default)]
pub struct ReporterStatus {
    /// Reports that reached the API server / that failed or were skipped while backing off.
    pub reports_ok: u64,
    pub reports_failed: u64,
    /// Samples replaced by a newer one before they were sent (their incidents are kept).
    pub samples_superseded: u64,
    pub last_outcome: Option<ReportOutcome>,
    pub last_error: Option<String>,
    /// The last error the API server or the connection gave (not "backing off").
    pub last_api_error: Option<String>,
}

struct Mailbox {
    pending: std::sync::Mutex<Option<ReportSummary>>,
    wake: tokio::sync::Notify,
    status: std::sync::Mutex<ReporterStatus>,
}

/// The reporter on a task of its own: [`ReporterHandle::submit`] never waits, so a slow or
/// absent API server cannot delay sampling or the metrics. The latest sample wins; the
/// incidents of samples it replaces are carried over.
pub struct ReporterHandle {
    mailbox: std::sync::Arc<Mailbox>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeReporter {
    /// Reset the owned conditions, then report each submitted sample (needs a Tokio runtime).
    pub fn spawn(mut self) -> ReporterHandle {
        let mailbox = std::sync::Arc::new(Mailbox {
            pending: std::sync::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            status: std::sync::Mutex::new(ReporterStatus::default()),
        });
        let mb = mailbox.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = self.reset_owned_conditions().await {
                let mut st = mb.status.lock().unwrap_or_else(|p| p.into_inner());
                st.last_api_error = Some(e.to_string());
                st.last_error = Some(e.to_string());
            }
            loop {
                mb.wake.notified().await;
                let Some(s) = mb.pending.lock().unwrap_or_else(|p| p.into_inner()).take() else { continue };
                let r = self.report(&s).await;
                let mut st = mb.status.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(o) => {
                        st.reports_ok += 1;
                        st.last_outcome = Some(o);
                    }
                    Err(e) => {
                        st.reports_failed += 1;
                        // Waiting out a backoff is not a new API error: its retry time changes
                        // every sample, so the agent tells the API errors apart for stderr.
                        if !matches!(e, KubeError::BackingOff { .. }) {
                            st.last_api_error = Some(e.to_string());
                        }
                        st.last_error = Some(e.to_string());
                    }
                }
            }
        });
        ReporterHandle { mailbox, task }
    }
}

impl ReporterHandle {
    /// Hand over a sample; returns at once.
    pub fn submit(&self, mut s: ReportSummary) {
        let mut pending = self.mailbox.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = pending.take() {
            let mut incidents = old.new_incidents;
            incidents.append(&mut s.new_incidents);
            s.new_incidents = incidents;
            self.mailbox.status.lock().unwrap_or_else(|p| p.into_inner()).samples_superseded += 1;
        }
        *pending = Some(s);
        drop(pending);
        self.mailbox.wake.notify_one();
    }

    pub fn status(&self) -> ReporterStatus {
        self.mailbox.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ReporterHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! What cgleak writes to the API server, as plain values: no I/O here.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::api::core::v1::{Event, EventSource, Node, NodeCondition, ObjectReference, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use cgleak_model::census::MEMCG_ID_LIMIT;
use cgleak_model::incidents::{Incident, IncidentKind};
use cgleak_model::verdict::{CheckReport, Verdict};

/// The node condition cgleak owns. True means a problem (node-problem-detector convention).
pub const CONDITION_TYPE: &str = "MemcgExhaustion";
/// `source.component` and `reportingComponent` of our Events.
pub const REPORTING_COMPONENT: &str = "cgleak";
/// Taint key used when none is configured (the Helm chart's default too).
pub const DEFAULT_TAINT_KEY: &str = "cgleak.io/memcg-exhaustion";
const TAINT_EFFECT: &str = "NoSchedule";

/// What one sample says, as far as Kubernetes is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    pub verdict: Verdict,
    pub ids_in_use: Option<u64>,
    pub id_limit: u64,
    pub headroom: Option<u64>,
    pub dying: Option<u64>,
    /// Incidents first seen since the previous sample.
    pub new_incidents: Vec<Incident>,
}

impl ReportSummary {
    pub fn from_report(r: &CheckReport, new_incidents: Vec<Incident>) -> ReportSummary {
        let m = &r.census.memcg;
        ReportSummary {
            verdict: r.verdict,
            ids_in_use: m.ids_in_use,
            id_limit: m.id_limit,
            headroom: m.headroom,
            dying: m.dying,
            new_incidents,
        }
    }

    /// A summary without incidents (tests, and samples where the logs said nothing new).
    pub fn of(verdict: Verdict, ids_in_use: Option<u64>, headroom: Option<u64>, dying: Option<u64>) -> ReportSummary {
        ReportSummary { verdict, ids_in_use, id_limit: MEMCG_ID_LIMIT, headroom, dying, new_incidents: Vec::new() }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

/// CamelCase reason of a verdict, used by the condition and by verdict-change Events.
pub fn verdict_reason(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "MemcgHealthy",
        Verdict::Leaking => "MemcgLeaking",
        Verdict::AtRisk => "MemcgNearLimit",
        Verdict::Exhausted => "MemcgExhausted",
    }
}

fn figures(s: &ReportSummary) -> String {
    format!(
        "memcg IDs in use {} of limit {}, headroom {}, dying memcgs {}",
        opt(s.ids_in_use),
        s.id_limit,
        opt(s.headroom),
        opt(s.dying)
    )
}

/// The `MemcgExhaustion` condition for this sample. `previous` is the condition last written:
/// its lastTransitionTime is kept unless the status flips.
pub fn condition_for(s: &ReportSummary, previous: Option<&NodeCondition>, now: Timestamp) -> NodeCondition {
    let status = if s.verdict == Verdict::Healthy { "False" } else { "True" };
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone().unwrap_or(Time(now)),
        _ => Time(now),
    };
    NodeCondition {
        type_: CONDITION_TYPE.to_string(),
        status: status.to_string(),
        reason: Some(verdict_reason(s.verdict).to_string()),
        message: Some(format!("cgleak verdict {}: {}", s.verdict.as_str(), figures(s))),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

/// The condition written at start, before the first sample: a condition left True by an
/// earlier run (before a reboot, say) must not outlive it (node-problem-detector resets its
/// conditions the same way).
pub fn reset_condition(now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: CONDITION_TYPE.to_string(),
        status: "Unknown".to_string(),
        reason: Some("MemcgNotYetChecked".to_string()),
        message: Some("cgleak started and has not sampled the memcg ID space yet".to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Strategic-merge patch of `nodes/<name>/status`: conditions merge by `type`, so the
/// kubelet's own conditions are left alone (as node-problem-detector's problemclient does).
pub fn status_patch(conditions: &[NodeCondition]) -> Value {
    json!({ "status": { "conditions": conditions } })
}

/// Why an Event is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum EventCause {
    NewIncident(Box<Incident>),
    VerdictChanged { from: Verdict, to: Verdict },
}

fn incident_reason(k: IncidentKind) -> &'static str {
    match k {
        IncidentKind::MemcgCreateFailed => "MemcgCreateFailed",
        IncidentKind::SlabAllocFailed => "SlabAllocFailed",
        IncidentKind::InotifyExhausted => "InotifyExhausted",
    }
}

impl EventCause {
    pub fn reason(&self) -> &'static str {
        match self {
            EventCause::NewIncident(i) => incident_reason(i.kind),
            EventCause::VerdictChanged { to, .. } => verdict_reason(*to),
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            EventCause::VerdictChanged { to: Verdict::Healthy, .. } => "Normal",
            _ => "Warning",
        }
    }

    /// Causes with the same key are one Event whose count grows: incidents of one kind,
    /// errno and component, or changes to one verdict.
    pub fn dedup_key(&self) -> String {
        match self {
            EventCause::NewIncident(i) => {
                format!("incident/{}/{}/{}", i.kind.as_str(), i.errno.map_or("-", |e| e.as_str()), i.component)
            }
            EventCause::VerdictChanged { to, .. } => format!("verdict/{}", to.as_str()),
        }
    }

    pub fn message(&self, s: &ReportSummary) -> String {
        match self {
            EventCause::NewIncident(i) => {
                let what = match i.kind {
                    IncidentKind::MemcgCreateFailed => "failed to create a memory cgroup",
                    IncidentKind::SlabAllocFailed => "kernel could not allocate from a per-memcg slab cache",
                    IncidentKind::InotifyExhausted => "ran out of inotify watches on cgroup directories",
                };
                let errno = i.errno.map(|e| format!(" ({})", e.as_str())).unwrap_or_default();
                let cg = i.cgroup_path.as_deref().map(|c| format!(" for {c}")).unwrap_or_default();
                let mut m = format!("{} {what}{errno}{cg}; {} (log {}:{})", i.component, figures(s), i.source, i.line);
                truncate(&mut m, 1024);
                m
            }
            EventCause::VerdictChanged { from, to } => {
                format!("cgleak verdict changed from {} to {}: {}", from.as_str(), to.as_str(), figures(s))
            }
        }
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// FNV-1a: stable across Rust releases, unlike `DefaultHasher`, so names survive restarts.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The Event's name: the node's name and a hash of the dedup key, so a repeat (even from a
/// restarted agent) names the same Event.
pub fn event_name(node: &str, cause: &EventCause) -> String {
    // Object names are at most 253 characters; node names are ASCII (DNS subdomains).
    let node = &node[..node.len().min(253 - ".cgleak-".len() - 16)];
    format!("{node}.cgleak-{:016x}", fnv1a(&cause.dedup_key()))
}

/// A core/v1 Event about the Node, first seen `now`.
pub fn event_for(node: &str, namespace: &str, cause: &EventCause, s: &ReportSummary, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(node, cause)),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            // The kubelet refers to its Node with the name as UID too.
            uid: Some(node.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(cause.reason().to_string()),
        message: Some(cause.message(s)),
        type_: Some(cause.event_type().to_string()),
        source: Some(EventSource { component: Some(REPORTING_COMPONENT.to_string()), host: Some(node.to_string()) }),
        reporting_component: Some(REPORTING_COMPONENT.to_string()),
        reporting_instance: Some(node.to_string()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        ..Event::default()
    }
}

/// Merge patch of an Event seen again: the count and the last time (as client-go's
/// EventCorrelator does).
pub fn event_repeat_patch(count: i32, message: &str, now: Timestamp) -> Value {
    json!({ "count": count, "lastTimestamp": Time(now), "message": message })
}

/// What the dedup cache says to do with a cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Not seen: POST the Event.
    Create,
    /// Seen: PATCH the Event of that name with this count.
    Repeat { name: String, count: i32 },
}

/// Events sent so far, by dedup key, bounded (the oldest are forgotten first).
#[derive(Debug, Clone)]
pub struct EventDedup {
    cap: usize,
    counts: HashMap<String, (String, i32)>,
    order: VecDeque<String>,
}

impl Default for EventDedup {
    fn default() -> Self {
        EventDedup::new(256)
    }
}

impl EventDedup {
    pub fn new(cap: usize) -> EventDedup {
        EventDedup { cap: cap.max(1), counts: HashMap::new(), order: VecDeque::new() }
    }

    /// What to send for `cause`; nothing is recorded until [`EventDedup::sent`].
    pub fn action(&self, cause: &EventCause) -> EventAction {
        match self.counts.get(&cause.dedup_key()) {
            Some((name, count)) => EventAction::Repeat { name: name.clone(), count: count + 1 },
            None => EventAction::Create,
        }
    }

    /// Record that the Event for `cause` now has `count`.
    pub fn sent(&mut self, node: &str, cause: &EventCause, count: i32) {
        let key = cause.dedup_key();
        if !self.counts.contains_key(&key) {
            if self.order.len() >= self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.counts.remove(&old);
                }
            }
            self.order.push_back(key.clone());
        }
        self.counts.insert(key, (event_name(node, cause), count));
    }

    /// Forget `cause` (its Event expired on the server: the next one is created anew).
    pub fn forget(&mut self, cause: &EventCause) {
        let key = cause.dedup_key();
        self.counts.remove(&key);
        self.order.retain(|k| *k != key);
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// When to taint the node, and with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintPolicy {
    key: String,
    /// Taint also while the headroom is below this many IDs.
    pub headroom_below: Option<u64>,
}

impl TaintPolicy {
    /// `key` must be domain-prefixed (`example.com/name`) so it cannot collide with the
    /// taints of Kubernetes itself or of other tools.
    pub fn new(key: &str, headroom_below: Option<u64>) -> Result<TaintPolicy, String> {
        let (domain, name) = key.split_once('/').ok_or_else(|| format!("taint key {key:?} needs a domain prefix, as in {DEFAULT_TAINT_KEY}"))?;
        let label_ok = |s: &str, max: usize, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        };
        let domain_ok = label_ok(domain, 253, b".-") && domain.contains('.') && domain == domain.to_ascii_lowercase();
        if !domain_ok {
            return Err(format!("taint key {key:?}: {domain:?} is not a DNS domain"));
        }
        if !label_ok(name, 63, b"._-") {
            return Err(format!("taint key {key:?}: {name:?} is not a valid name (at most 63 of [A-Za-z0-9._-])"));
        }
        Ok(TaintPolicy { key: key.to_string(), headroom_below })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Taint while exhausted or below the headroom threshold.
    pub fn wants(&self, s: &ReportSummary) -> bool {
        s.verdict == Verdict::Exhausted || matches!((s.headroom, self.headroom_below), (Some(h), Some(min)) if h < min)
    }
}

impl Default for TaintPolicy {
    fn default() -> Self {
        TaintPolicy { key: DEFAULT_TAINT_KEY.to_string(), headroom_below: None }
    }
}

/// JSON merge patch of `spec.taints` that adds (`want`) or removes our `NoSchedule` taint,
/// keeping every other taint, guarded by the node's resourceVersion: if the node changed
/// since it was read, the API server answers 409 and nothing is lost. None when the node
/// already is as wanted.
pub fn taint_patch(node: &Node, key: &str, want: bool) -> Option<Value> {
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let ours = |t: &Taint| t.key == key && t.effect == TAINT_EFFECT;
    if taints.iter().any(ours) == want {
        return None;
    }
    let new: Vec<Taint> = if want {
        let mut v = taints;
        v.push(Taint { key: key.to_string(), effect: TAINT_EFFECT.to_string(), value: None, time_added: None });
        v
    } else {
        taints.into_iter().filter(|t| !ours(t)).collect()
    };
    let mut patch = json!({ "spec": { "taints": new } });
    if let Some(rv) = &node.metadata.resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    Some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_model::era::Errno;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn incident() -> Incident {
        Incident {
            kind: IncidentKind::MemcgCreateFailed,
            errno: Some(Errno::ENOMEM),
            component: "kubelet".into(),
            time: None,
            host: None,
            cgroup_path: Some("/sys/fs/cgroup/memory/kubepods/podx".into()),
            pod_uid: None,
            container_id: None,
            source: "/var/log/messages".into(),
            line: 7,
            raw: String::new(),
            trusted: true,
            origin: "syslog tag kubelet".into(),
        }
    }

    #[test]
    fn condition_json_and_transition_rules() {
        let now = t("2026-01-02T03:04:05Z");
        let s = ReportSummary::of(Verdict::AtRisk, Some(60000), Some(5535), Some(1200));
        let c = condition_for(&s, None, now);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "type": "MemcgExhaustion",
                "status": "True",
                "reason": "MemcgNearLimit",
                "message": "cgleak verdict at_risk: memcg IDs in use 60000 of limit 65535, headroom 5535, dying memcgs 1200",
                "lastHeartbeatTime": "2026-01-02T03:04:05Z",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            })
        );
        // Same status later: heartbeat moves, transition stays; reason may change.
        let later = t("2026-01-02T03:05:05Z");
        let ex = ReportSummary::of(Verdict::Exhausted, Some(65535), Some(0), None);
        let c2 = condition_for(&ex, Some(&c), later);
        assert_eq!(c2.last_transition_time, Some(Time(now)));
        assert_eq!(c2.last_heartbeat_time, Some(Time(later)));
        assert_eq!(c2.reason.as_deref(), Some("MemcgExhausted"));
        assert!(c2.message.as_deref().unwrap().ends_with("headroom 0, dying memcgs unknown"));
        // A flip moves the transition time.
        let h = ReportSummary::of(Verdict::Healthy, Some(6), Some(65529), Some(28));
        let c3 = condition_for(&h, Some(&c2), later);
        assert_eq!((c3.status.as_str(), c3.reason.as_deref()), ("False", Some("MemcgHealthy")));
        assert_eq!(c3.last_transition_time, Some(Time(later)));
        let l = ReportSummary::of(Verdict::Leaking, Some(3000), Some(62535), Some(2000));
        assert_eq!(condition_for(&l, None, now).reason.as_deref(), Some("MemcgLeaking"));
        assert_eq!(
            status_patch(&[c3]),
            json!({"status": {"conditions": [{
                "type": "MemcgExhaustion", "status": "False", "reason": "MemcgHealthy",
                "message": "cgleak verdict healthy: memcg IDs in use 6 of limit 65535, headroom 65529, dying memcgs 28",
                "lastHeartbeatTime": "2026-01-02T03:05:05Z", "lastTransitionTime": "2026-01-02T03:05:05Z"}]}})
        );
    }

    #[test]
    fn event_json_and_dedup() {
        let now = t("2026-01-02T03:04:05Z");
        let s = ReportSummary::of(Verdict::Exhausted, Some(65535), Some(0), Some(10));
        let cause = EventCause::NewIncident(Box::new(incident()));
        let e = event_for("node-a", "default", &cause, &s, now);
        let name = event_name("node-a", &cause);
        assert!(name.starts_with("node-a.cgleak-") && name.len() == "node-a.cgleak-".len() + 16);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "node-a.cgleak-7e7fb153cacd578d", "namespace": "default"},
                "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-a"},
                "reason": "MemcgCreateFailed",
                "message": "kubelet failed to create a memory cgroup (ENOMEM) for /sys/fs/cgroup/memory/kubepods/podx; memcg IDs in use 65535 of limit 65535, headroom 0, dying memcgs 10 (log /var/log/messages:7)",
                "type": "Warning",
                "source": {"component": "cgleak", "host": "node-a"},
                "reportingComponent": "cgleak",
                "reportingInstance": "node-a",
                "count": 1,
                "firstTimestamp": "2026-01-02T03:04:05Z",
                "lastTimestamp": "2026-01-02T03:04:05Z",
            })
        );
        let back = EventCause::VerdictChanged { from: Verdict::Exhausted, to: Verdict::Healthy };
        assert_eq!((back.reason(), back.event_type()), ("MemcgHealthy", "Normal"));
        let mut d = EventDedup::new(2);
        assert_eq!(d.action(&cause), EventAction::Create);
        d.sent("node-a", &cause, 1);
        // Another pod's mkdir failing the same way is a repeat, not a new Event.
        let mut other = incident();
        other.cgroup_path = Some("/other".into());
        assert_eq!(d.action(&EventCause::NewIncident(Box::new(other))), EventAction::Repeat { name, count: 2 });
        d.sent("node-a", &back, 1);
        d.sent("node-a", &EventCause::VerdictChanged { from: Verdict::Healthy, to: Verdict::Leaking }, 1);
        assert_eq!(d.len(), 2);
        assert_eq!(event_name(&"n".repeat(300), &back).len(), 253);
        assert_eq!(d.action(&cause), EventAction::Create, "the oldest is forgotten first");
    }

    fn node(rv: Option<&str>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some("node-a".into()), resource_version: rv.map(String::from), ..ObjectMeta::default() },
            spec: Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() }),
            status: None,
        }
    }

    #[test]
    fn taint_patch_keeps_other_taints_and_is_guarded() {
        let other = Taint { key: "dedicated".into(), effect: "NoExecute".into(), value: Some("gpu".into()), time_added: None };
        let n = node(Some("42"), vec![other.clone()]);
        let p = taint_patch(&n, DEFAULT_TAINT_KEY, true).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"taints": [
                {"key": "dedicated", "effect": "NoExecute", "value": "gpu"},
                {"key": "cgleak.io/memcg-exhaustion", "effect": "NoSchedule"}]}})
        );
        assert_eq!(taint_patch(&n, DEFAULT_TAINT_KEY, false), None);
        let ours = Taint { key: DEFAULT_TAINT_KEY.into(), effect: "NoSchedule".into(), value: None, time_added: None };
        let tainted = node(Some("43"), vec![ours, other]);
        assert_eq!(taint_patch(&tainted, DEFAULT_TAINT_KEY, true), None);
        assert_eq!(
            taint_patch(&tainted, DEFAULT_TAINT_KEY, false).unwrap(),
            json!({"metadata": {"resourceVersion": "43"}, "spec": {"taints": [{"key": "dedicated", "effect": "NoExecute", "value": "gpu"}]}})
        );
    }

    #[test]
    fn taint_policy() {
        assert!(TaintPolicy::new("memcg-exhausted", None).is_err());
        assert!(TaintPolicy::new("Example.com/x", None).is_err());
        assert!(TaintPolicy::new("example.com/", None).is_err());
        assert!(TaintPolicy::new("example/x", None).is_err());
        let p = TaintPolicy::new("example.com/memcg-low", Some(1000)).unwrap();
        assert!(p.wants(&ReportSummary::of(Verdict::Exhausted, None, None, None)));
        assert!(p.wants(&ReportSummary::of(Verdict::AtRisk, Some(64600), Some(935), None)));
        assert!(!p.wants(&ReportSummary::of(Verdict::AtRisk, Some(64000), Some(1535), None)));
        assert!(!TaintPolicy::default().wants(&ReportSummary::of(Verdict::AtRisk, Some(64600), Some(935), None)));
    }
}

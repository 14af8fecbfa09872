//! The conversation with the API server, checked call by call against a script (as in
//! kube-rs/controller-rs src/fixtures.rs): method, path and query, content type and exact
//! JSON body of each request, in order, with canned answers. Time is paused, so heartbeat
//! and backoff intervals are stepped exactly.

use std::time::Duration;

use cgleak_kube::k8s_openapi::jiff::Timestamp;
use cgleak_kube::kube::client::Body;
use cgleak_kube::kube::Client;
use cgleak_kube::objects::{event_name, EventCause};
use cgleak_kube::{KubeError, KubeReporter, ReportSummary, ReporterConfig, TaintPolicy};
use cgleak_model::era::Errno;
use cgleak_model::incidents::{Incident, IncidentKind};
use cgleak_model::verdict::Verdict;
use http::{Request, Response};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tower_test::mock::Handle;

const NODE: &str = "node-a";
const STATUS_URI: &str = "/api/v1/nodes/node-a/status?&fieldManager=cgleak";
const NODE_URI: &str = "/api/v1/nodes/node-a";
const NODE_PATCH_URI: &str = "/api/v1/nodes/node-a?&fieldManager=cgleak";
const EVENTS_URI: &str = "/api/v1/namespaces/default/events?";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";

enum Reply {
    /// Status code and JSON body.
    Json(u16, Value),
    /// The request body sent back with 201 (what a create returns).
    Echo,
    /// The connection fails (API server down).
    ConnectionRefused,
    /// No answer at all: the client's timeout must fire.
    Hang,
}

struct Exchange {
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    body: Option<Value>,
    reply: Reply,
}

fn call(method: &'static str, uri: &str, content_type: Option<&'static str>, body: Option<Value>, reply: Reply) -> Exchange {
    Exchange { method, uri: uri.to_string(), content_type, body, reply }
}

fn status(code: u16, reason: &str) -> Reply {
    Reply::Json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code}),
    )
}

fn node_json(rv: &str, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "resourceVersion": rv}, "spec": {"taints": taints}})
}

fn ok_node() -> Reply {
    Reply::Json(200, node_json("1", json!([])))
}

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// Answers the script in order, asserting each request; then checks that nothing more came.
fn verifier(mut handle: ApiHandle, script: Vec<Exchange>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let n = script.len();
        let mut unanswered = Vec::new();
        for (i, ex) in script.into_iter().enumerate() {
            let (req, send) = handle.next_request().await.unwrap_or_else(|| panic!("call {i}/{n}: client gone, expected {} {}", ex.method, ex.uri));
            let what = format!("call {i}/{n} ({} {})", ex.method, ex.uri);
            assert_eq!(req.method().as_str(), ex.method, "{what}");
            assert_eq!(req.uri().to_string(), ex.uri, "{what}");
            let ct = req.headers().get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
            assert_eq!(ct.as_deref(), ex.content_type, "{what}: content type");
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Option<Value> = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
            assert_eq!(body, ex.body, "{what}: body");
            match ex.reply {
                Reply::Json(code, v) => send.send_response(
                    Response::builder().status(code).body(Body::from(serde_json::to_vec(&v).unwrap())).unwrap(),
                ),
                Reply::Echo => send.send_response(Response::builder().status(201).body(Body::from(bytes.to_vec())).unwrap()),
                Reply::ConnectionRefused => {
                    send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"))
                }
                // Held unanswered (not dropped, which would fail the call) to the end.
                Reply::Hang => unanswered.push(send),
            }
        }
        // Nothing beyond the script (time is paused: this wait costs nothing).
        if let Ok(Some((req, _))) = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await {
            panic!("unexpected call after the script: {} {}", req.method(), req.uri());
        }
        drop(unanswered);
    })
}

fn reporter(script: Vec<Exchange>, cfg: impl FnOnce(&mut ReporterConfig)) -> (KubeReporter, JoinHandle<()>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut c = ReporterConfig::new(NODE);
    cfg(&mut c);
    (KubeReporter::new(Client::new(service, "default"), c), verifier(handle, script))
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn condition(status: &str, reason: &str, message: &str, heartbeat: &str, transition: &str) -> Value {
    json!({"status": {"conditions": [{
        "type": "MemcgExhaustion", "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition}]}})
}

const HEALTHY_MSG: &str = "cgleak verdict healthy: memcg IDs in use 6 of limit 65535, headroom 65529, dying memcgs 28";
const AT_RISK_MSG: &str = "cgleak verdict at_risk: memcg IDs in use 60000 of limit 65535, headroom 5535, dying memcgs 1200";
const EXHAUSTED_MSG: &str = "cgleak verdict exhausted: memcg IDs in use 65535 of limit 65535, headroom 0, dying memcgs 300";

fn healthy() -> ReportSummary {
    ReportSummary::of(Verdict::Healthy, Some(6), Some(65529), Some(28))
}
fn at_risk() -> ReportSummary {
    ReportSummary::of(Verdict::AtRisk, Some(60000), Some(5535), Some(1200))
}
fn exhausted() -> ReportSummary {
    ReportSummary::of(Verdict::Exhausted, Some(65535), Some(0), Some(300))
}

fn incident(cgroup: &str) -> Incident {
    Incident {
        kind: IncidentKind::MemcgCreateFailed,
        errno: Some(Errno::ENOSPC),
        component: "kubelet".into(),
        time: None,
        host: None,
        cgroup_path: Some(cgroup.into()),
        pod_uid: None,
        container_id: None,
        source: "/var/log/syslog".into(),
        line: 4,
        raw: String::new(),
        trusted: true,
        origin: "syslog tag kubelet".into(),
    }
}

fn event(name: &str, reason: &str, type_: &str, message: &str, at: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": "cgleak", "host": NODE},
        "reportingComponent": "cgleak", "reportingInstance": NODE,
        "count": 1, "firstTimestamp": at, "lastTimestamp": at,
    })
}

fn verdict_event_name(from: Verdict, to: Verdict) -> String {
    event_name(NODE, &EventCause::VerdictChanged { from, to })
}

#[tokio::test(start_paused = true)]
async fn startup_reset_then_condition_heartbeat_and_flip() {
    let (t0, t1, t3, t4) = ("2026-01-02T03:00:00Z", "2026-01-02T03:00:10Z", "2026-01-02T03:01:20Z", "2026-01-02T03:01:30Z");
    let script = vec![
        // (a) Owned condition reset at start, then the first sample.
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("Unknown", "MemcgNotYetChecked",
            "cgleak started and has not sampled the memcg ID space yet", t0, t0)), ok_node()),
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("False", "MemcgHealthy", HEALTHY_MSG, t1, t1)), ok_node()),
        // (b) Heartbeat after 60 s: transition time kept.
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("False", "MemcgHealthy", HEALTHY_MSG, t3, t1)), ok_node()),
        // Flip to True: transition time moves, and the verdict change is an Event.
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("True", "MemcgNearLimit", AT_RISK_MSG, t4, t4)), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Healthy, Verdict::AtRisk), "MemcgNearLimit", "Warning",
            &format!("cgleak verdict changed from healthy to at_risk: {}", &AT_RISK_MSG["cgleak verdict at_risk: ".len()..]), t4)), Reply::Echo),
    ];
    let (mut r, v) = reporter(script, |_| {});
    r.reset_owned_conditions_at(t(t0)).await.unwrap();
    let o = r.report_at(&healthy(), t(t1)).await.unwrap();
    assert!(o.condition_written);
    // Unchanged and heartbeat not due: no call.
    tokio::time::advance(Duration::from_secs(30)).await;
    let o = r.report_at(&healthy(), t("2026-01-02T03:00:40Z")).await.unwrap();
    assert!(!o.condition_written);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(r.report_at(&healthy(), t(t3)).await.unwrap().condition_written);
    let o = r.report_at(&at_risk(), t(t4)).await.unwrap();
    assert_eq!((o.condition_written, o.events_created), (true, 1));
    drop(r);
    v.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn events_for_incidents_and_verdicts_are_deduplicated() {
    let (t1, t2) = ("2026-01-02T03:00:00Z", "2026-01-02T03:00:10Z");
    let first = incident("/sys/fs/cgroup/memory/kubepods/burstable/pod1");
    let incident_name = event_name(NODE, &EventCause::NewIncident(Box::new(first.clone())));
    let figures = &EXHAUSTED_MSG["cgleak verdict exhausted: ".len()..];
    let msg1 = format!("kubelet failed to create a memory cgroup (ENOSPC) for /sys/fs/cgroup/memory/kubepods/burstable/pod1; {figures} (log /var/log/syslog:4)");
    let msg2 = msg1.replace("pod1", "pod2");
    let posted = event(&incident_name, "MemcgCreateFailed", "Warning", &msg1, t1);
    let mut repeated = posted.clone();
    repeated["count"] = json!(2);
    let script = vec![
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("True", "MemcgExhausted", EXHAUSTED_MSG, t1, t1)), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(posted), Reply::Echo),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Healthy, Verdict::Exhausted), "MemcgExhausted", "Warning",
            &format!("cgleak verdict changed from healthy to exhausted: {figures}"), t1)), Reply::Echo),
        // (c) The same failure for another pod: the Event's count grows, no new Event.
        call("PATCH", &format!("/api/v1/namespaces/default/events/{incident_name}?&fieldManager=cgleak"), Some(MERGE),
            Some(json!({"count": 2, "lastTimestamp": t2, "message": msg2})), Reply::Json(200, repeated)),
    ];
    let (mut r, v) = reporter(script, |_| {});
    let mut s = exhausted();
    s.new_incidents = vec![first];
    let o = r.report_at(&s, t(t1)).await.unwrap();
    assert_eq!((o.events_created, o.events_repeated), (2, 0));
    s.new_incidents = vec![incident("/sys/fs/cgroup/memory/kubepods/burstable/pod2")];
    let o = r.report_at(&s, t(t2)).await.unwrap();
    assert_eq!((o.condition_written, o.events_created, o.events_repeated), (false, 0, 1));
    drop(r);
    v.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn taint_guarded_by_resource_version_retries_on_conflict_and_is_removed() {
    let (t1, t2) = ("2026-01-02T03:00:00Z", "2026-01-02T03:01:10Z");
    let key = "example.com/memcg-exhausted";
    let other = json!({"key": "dedicated", "effect": "NoExecute", "value": "gpu"});
    let ours = json!({"key": key, "effect": "NoSchedule"});
    let figures = &EXHAUSTED_MSG["cgleak verdict exhausted: ".len()..];
    let script = vec![
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("True", "MemcgExhausted", EXHAUSTED_MSG, t1, t1)), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Healthy, Verdict::Exhausted), "MemcgExhausted", "Warning",
            &format!("cgleak verdict changed from healthy to exhausted: {figures}"), t1)), Reply::Echo),
        // (d) GET, PATCH guarded by resourceVersion 100, someone else changed the node: 409.
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("100", json!([other])))),
        call("PATCH", NODE_PATCH_URI, Some(MERGE),
            Some(json!({"metadata": {"resourceVersion": "100"}, "spec": {"taints": [other, ours]}})), status(409, "Conflict")),
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("101", json!([other])))),
        call("PATCH", NODE_PATCH_URI, Some(MERGE),
            Some(json!({"metadata": {"resourceVersion": "101"}, "spec": {"taints": [other, ours]}})),
            Reply::Json(200, node_json("102", json!([other, ours])))),
        // Heartbeat due: the condition is refreshed and the taint looked at again (still there).
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("True", "MemcgExhausted", EXHAUSTED_MSG, "2026-01-02T03:01:05Z", t1)), ok_node()),
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("102", json!([other, ours])))),
        // Recovered: condition False, a Normal Event, the taint removed, other taints kept.
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("False", "MemcgHealthy", HEALTHY_MSG, t2, t2)), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Exhausted, Verdict::Healthy), "MemcgHealthy", "Normal",
            &format!("cgleak verdict changed from exhausted to healthy: {}", &HEALTHY_MSG["cgleak verdict healthy: ".len()..]), t2)), Reply::Echo),
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("102", json!([other, ours])))),
        call("PATCH", NODE_PATCH_URI, Some(MERGE),
            Some(json!({"metadata": {"resourceVersion": "102"}, "spec": {"taints": [other]}})),
            Reply::Json(200, node_json("103", json!([other])))),
    ];
    let (mut r, v) = reporter(script, |c| c.taint = Some(TaintPolicy::new(key, Some(1000)).unwrap()));
    let o = r.report_at(&exhausted(), t(t1)).await.unwrap();
    assert_eq!(o.taint_changed, Some(true));
    // Still exhausted: the taint is known to be there, nothing is sent.
    let o = r.report_at(&exhausted(), t(t1)).await.unwrap();
    assert_eq!(o, Default::default());
    tokio::time::advance(Duration::from_secs(61)).await;
    let o = r.report_at(&exhausted(), t("2026-01-02T03:01:05Z")).await.unwrap();
    assert_eq!((o.condition_written, o.taint_changed), (true, None));
    let o = r.report_at(&healthy(), t(t2)).await.unwrap();
    assert_eq!(o.taint_changed, Some(false));
    drop(r);
    v.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn taint_gives_up_after_repeated_conflicts() {
    let key = "example.com/memcg-exhausted";
    let patch = |rv: &str| {
        call("PATCH", NODE_PATCH_URI, Some(MERGE),
            Some(json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": [{"key": key, "effect": "NoSchedule"}]}})),
            status(409, "Conflict"))
    };
    let script = vec![
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("1", json!([])))),
        patch("1"),
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("2", json!([])))),
        patch("2"),
    ];
    let (mut r, v) = reporter(script, |c| c.conflict_retries = 1);
    match r.set_taint(key, true).await {
        Err(KubeError::Conflict { attempts: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    drop(r);
    v.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn api_server_down_backs_off_and_recovers() {
    let t1 = "2026-01-02T03:00:00Z";
    let figures = &AT_RISK_MSG["cgleak verdict at_risk: ".len()..];
    let at_risk_patch = |at: &str| Some(condition("True", "MemcgNearLimit", AT_RISK_MSG, at, at));
    let script = vec![
        // (e) 500, then connection refused, then no answer at all.
        call("PATCH", STATUS_URI, Some(STRATEGIC), at_risk_patch(t1), status(500, "InternalError")),
        call("PATCH", STATUS_URI, Some(STRATEGIC), at_risk_patch(t1), Reply::ConnectionRefused),
        call("PATCH", STATUS_URI, Some(STRATEGIC), at_risk_patch(t1), Reply::Hang),
        // Back: the condition, then the Event kept while the server was down.
        call("PATCH", STATUS_URI, Some(STRATEGIC), at_risk_patch(t1), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Healthy, Verdict::AtRisk), "MemcgNearLimit", "Warning",
            &format!("cgleak verdict changed from healthy to at_risk: {figures}"), t1)), Reply::Echo),
    ];
    let (mut r, v) = reporter(script, |_| {});
    let s = at_risk();
    let now = t(t1);
    assert!(matches!(r.report_at(&s, now).await, Err(KubeError::Api(_))));
    assert_eq!((r.backoff().failures(), r.backoff().delay()), (1, Some(Duration::from_secs(1))));
    // Backing off: answered at once, no call made.
    let start = tokio::time::Instant::now();
    match r.report_at(&s, now).await {
        Err(KubeError::BackingOff { retry_in, failures: 1, .. }) => assert_eq!(retry_in, Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(1)).await;
    let e = r.report_at(&s, now).await.unwrap_err();
    assert!(matches!(e, KubeError::Api(_)), "{e:?}");
    assert_eq!(r.backoff().delay(), Some(Duration::from_secs(2)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(r.report_at(&s, now).await, Err(KubeError::BackingOff { .. })));
    tokio::time::advance(Duration::from_secs(1)).await;
    // No answer: the request timeout (5 s) ends the call.
    let start = tokio::time::Instant::now();
    assert!(matches!(r.report_at(&s, now).await, Err(KubeError::Timeout(_))));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!((r.backoff().failures(), r.backoff().delay()), (3, Some(Duration::from_secs(4))));
    tokio::time::advance(Duration::from_secs(4)).await;
    let o = r.report_at(&s, now).await.unwrap();
    assert_eq!((o.condition_written, o.events_created), (true, 1));
    assert_eq!((r.backoff().failures(), r.backoff().delay()), (0, None));
    assert!(r.backoff().last_error().unwrap().contains("did not answer"));
    drop(r);
    v.await.unwrap();
}

#[test]
fn backoff_is_capped() {
    use cgleak_kube::Backoff;
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    let now = std::time::Instant::now().into();
    for _ in 0..10 {
        b.failed(now, "x".into());
    }
    assert_eq!(b.delay(), Some(Duration::from_secs(10)));
    assert_eq!(b.ready(now), Err(Duration::from_secs(10)));
    b.succeeded();
    assert_eq!(b.ready(now), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn refused_events_never_hold_back_the_condition_or_the_taint() {
    let (t1, t2, t3) = ("2026-01-02T03:00:00Z", "2026-01-02T03:00:10Z", "2026-01-02T03:00:20Z");
    let key = "example.com/memcg-exhausted";
    let first = incident("/sys/fs/cgroup/memory/kubepods/burstable/pod1");
    let incident_name = event_name(NODE, &EventCause::NewIncident(Box::new(first.clone())));
    let figures = &EXHAUSTED_MSG["cgleak verdict exhausted: ".len()..];
    let msg = |pod: &str| format!("kubelet failed to create a memory cgroup (ENOSPC) for /sys/fs/cgroup/memory/kubepods/burstable/{pod}; {figures} (log /var/log/syslog:4)");
    let script = vec![
        call("PATCH", STATUS_URI, Some(STRATEGIC), Some(condition("True", "MemcgExhausted", EXHAUSTED_MSG, t1, t1)), ok_node()),
        call("POST", EVENTS_URI, Some("application/json"), Some(event(&incident_name, "MemcgCreateFailed", "Warning", &msg("pod1"), t1)), Reply::Echo),
        // A webhook or quota refuses this one: dropped, the report goes on to the taint.
        call("POST", EVENTS_URI, Some("application/json"), Some(event(
            &verdict_event_name(Verdict::Healthy, Verdict::Exhausted), "MemcgExhausted", "Warning",
            &format!("cgleak verdict changed from healthy to exhausted: {figures}"), t1)), status(403, "Forbidden")),
        call("GET", NODE_URI, None, None, Reply::Json(200, node_json("7", json!([])))),
        call("PATCH", NODE_PATCH_URI, Some(MERGE),
            Some(json!({"metadata": {"resourceVersion": "7"}, "spec": {"taints": [{"key": key, "effect": "NoSchedule"}]}})), ok_node()),
        // RBAC grants `create` on events only: the repeat's PATCH is forbidden once...
        call("PATCH", &format!("/api/v1/namespaces/default/events/{incident_name}?&fieldManager=cgleak"), Some(MERGE),
            Some(json!({"count": 2, "lastTimestamp": t2, "message": msg("pod2")})), status(403, "Forbidden")),
    ];
    let (mut r, v) = reporter(script, |c| c.taint = Some(TaintPolicy::new(key, None).unwrap()));
    let mut s = exhausted();
    s.new_incidents = vec![first];
    let o = r.report_at(&s, t(t1)).await.unwrap();
    assert_eq!((o.events_created, o.events_dropped, o.taint_changed), (1, 1, Some(true)));
    assert_eq!(r.backoff().failures(), 0);
    s.new_incidents = vec![incident("/sys/fs/cgroup/memory/kubepods/burstable/pod2")];
    assert_eq!(r.report_at(&s, t(t2)).await.unwrap().events_repeated, 1);
    // ...and later repeats are counted without a call.
    s.new_incidents = vec![incident("/sys/fs/cgroup/memory/kubepods/burstable/pod3")];
    assert_eq!(r.report_at(&s, t(t3)).await.unwrap().events_repeated, 1);
    assert!(r.backoff().last_error().unwrap().contains("grant `patch` on events"));
    drop(r);
    v.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn background_reporter_never_blocks_submit_and_keeps_incidents() {
    let pod = |n: u32| incident(&format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{n}"));
    let incident_name = event_name(NODE, &EventCause::NewIncident(Box::new(pod(1))));
    // Times come from the wall clock here: bodies are checked by shape, not by time.
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let r = KubeReporter::new(Client::new(service, "default"), ReporterConfig::new(NODE));
    let bg = r.spawn();
    let start = tokio::time::Instant::now();
    let mut s = exhausted();
    s.new_incidents = vec![pod(1)];
    bg.submit(s.clone());
    s.new_incidents = vec![pod(2)];
    bg.submit(s.clone());
    assert_eq!(start.elapsed(), Duration::ZERO);

    // The startup reset meets a server that is down.
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!((req.method().as_str(), req.uri().to_string()), ("PATCH", STATUS_URI.to_string()));
    send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
    // The merged sample is skipped while backing off, without a call.
    while bg.status().reports_failed == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(bg.status().last_error.unwrap().contains("next try in"));
    // The error that started the backoff stays the last API error (the agent prints each new one once).
    let api = bg.status().last_api_error.unwrap();
    assert!(api.contains("connection refused") && !api.contains("next try in"), "{api}");
    assert_eq!(bg.status().samples_superseded, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    s.new_incidents = vec![];
    bg.submit(s);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (req, send) = handle.next_request().await.unwrap();
        let (m, uri) = (req.method().to_string(), req.uri().to_string());
        let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        let reply = if m == "POST" {
            body.clone()
        } else if uri.contains("/events/") {
            // A whole Event, as the server returns it.
            let mut e = event(&incident_name, "MemcgCreateFailed", "Warning", "m", "2026-01-02T03:00:00Z");
            e["count"] = body["count"].clone();
            e
        } else {
            node_json("1", json!([]))
        };
        send.send_response(Response::builder().status(200).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
        seen.push((m, uri, body));
    }
    assert_eq!(seen[0].1, STATUS_URI);
    assert_eq!(seen[0].2["status"]["conditions"][0]["reason"], "MemcgExhausted");
    // Both incidents of the two merged samples: one Event, then its count.
    assert_eq!((seen[1].0.as_str(), seen[1].2["reason"].as_str()), ("POST", Some("MemcgCreateFailed")));
    assert!(seen[1].2["message"].as_str().unwrap().contains("pod1"));
    assert_eq!(seen[2].1, format!("/api/v1/namespaces/default/events/{incident_name}?&fieldManager=cgleak"));
    assert_eq!(seen[2].2["count"], 2);
    assert_eq!((seen[3].0.as_str(), seen[3].2["reason"].as_str()), ("POST", Some("MemcgExhausted")));
    while bg.status().reports_ok == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bg.status().last_outcome.unwrap().events_created, 2);
}

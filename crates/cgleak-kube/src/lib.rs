//! Kubernetes front end of cgleak (`--kubernetes`): the `MemcgExhaustion` node condition,
//! Events for new incidents and verdict changes, and an optional `NoSchedule` taint.
//!
//! As in kube-rs/controller-rs, what is sent is built apart from the I/O: [`objects`] holds
//! plain functions from a [`ReportSummary`] to the condition, the status patch, the Events and
//! the taint patch; [`reporter::KubeReporter`] only sends them, with timeouts, retries on
//! conflict and a backoff that never blocks the caller for long.
//! Conventions follow kubernetes/node-problem-detector: a PascalCase condition type where True
//! means a problem, CamelCase reasons, owned conditions reset at start, lastTransitionTime
//! changed only on a flip.

pub mod objects;
pub mod reporter;

pub use objects::{
    condition_for, event_for, status_patch, taint_patch, EventCause, EventDedup, ReportSummary, TaintPolicy,
    CONDITION_TYPE, DEFAULT_TAINT_KEY, REPORTING_COMPONENT,
};
pub use reporter::{Backoff, KubeError, KubeReporter, ReportOutcome, ReporterConfig, ReporterHandle, ReporterStatus};

/// Re-exported so the agent and tests build times and objects with the same versions.
pub use k8s_openapi;
pub use kube;

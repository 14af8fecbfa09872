//! The judge: one function, [`check`], takes the census and the node's facts (boot
//! parameters, versions, the kernel the boot loader starts next, recent log incidents,
//! the agent's forecast) and gives the verdict, the findings behind it and the remedies
//! ranked for this node. `cgleak check`, `check --npd`, `check --reboot-required`,
//! `fix reboot`, the fix plans and the agent's node condition all read their answer here.
//!
//! - [`findings`]: what the census and the node say, each with the file and value behind it;
//! - [`situation`]: those facts reduced to one row of the decision table;
//! - [`remedies`]: the decision table itself (era x situation x node facts -> ranked
//!   remedies, each with `needs_reboot`, `disturbs_pods` and the expected ID gain).
//!
//! Pure functions: no I/O here except in [`NodeFacts::read`], so every verdict is tested
//! on plain values.

mod findings;
pub use findings::exhaustion_forecast;
pub mod remedies;
pub mod situation;

use serde::Serialize;

use cgleak_readers::bootloader::{self, NextBoot};
use cgleak_readers::kubelet::{self, CgroupDriverSetting};
use cgleak_readers::procfs;
use cgleak_readers::versions::{self, Component, DetectedVersion, Version};
use cgleak_readers::HostPaths;

use crate::census::Census;
use crate::forecast::Forecast;
use crate::incidents::Incident;

pub use remedies::{GainBound, IdGain, NotOffered, NotOfferedKind, Remedy};
pub use situation::Situation;

/// Share of the ID space in use above which a node is `at_risk`.
pub const AT_RISK_FRACTION: f64 = 0.90;
/// Dying memcgs at or above this many, and at least as many as live ones, mean `leaking`.
pub const LEAKING_DYING_MIN: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Leaking,
    AtRisk,
    Exhausted,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Healthy, Verdict::Leaking, Verdict::AtRisk, Verdict::Exhausted];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Leaking => "leaking",
            Verdict::AtRisk => "at_risk",
            Verdict::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A file and the value read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub file: String,
    pub value: String,
}

pub(crate) fn ev(file: impl Into<String>, value: impl ToString) -> Evidence {
    Evidence { file: file.into(), value: value.to_string() }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// The verdict this finding alone implies.
    #[serde(skip)]
    pub implies: Verdict,
}

/// Facts about the node beyond the cgroup tree: boot parameters, versions, driver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFacts {
    pub cmdline: Option<String>,
    pub nokmem: bool,
    pub versions: Vec<DetectedVersion>,
    pub cgroup_driver: Option<CgroupDriverSetting>,
    pub kubelet_pid: Option<u32>,
    /// The kernel the boot loader starts next (what a reboot gives), when its files tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_boot: Option<NextBoot>,
    /// Incidents in the node's recent logs, filled by the front end (not by [`NodeFacts::read`]).
    /// Left out of the JSON when there is nothing to say, as on hosts without logs.
    #[serde(skip_serializing_if = "LogEvidence::is_empty")]
    pub logs: LogEvidence,
    /// Exhaustion forecast from the agent's history, filled by the front end; None without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

/// What the node's recent logs show (the incidents of `cgleak logs` in a time window).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogEvidence {
    /// Start of the window (RFC 3339): older incidents, and those without a time, are left out.
    pub since: Option<String>,
    /// The sources read (`/var/log/syslog`, `journald`, `/dev/kmsg`).
    pub sources: Vec<String>,
    pub incidents: Vec<Incident>,
    /// Sources that could not be read, and why: the check goes on without them.
    pub notes: Vec<String>,
}

impl LogEvidence {
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.notes.is_empty()
    }
}

impl NodeFacts {
    pub fn read(host: &HostPaths) -> NodeFacts {
        let cmdline = procfs::read_cmdline(host).ok();
        NodeFacts {
            nokmem: cmdline.as_deref().is_some_and(|c| procfs::cmdline_has(c, "cgroup.memory=nokmem")),
            cmdline,
            versions: versions::detect_versions(host),
            cgroup_driver: kubelet::read_cgroup_driver(host),
            kubelet_pid: kubelet::running_kubelet(host).map(|(pid, _)| pid),
            next_boot: bootloader::next_boot_kernel(host),
            logs: LogEvidence::default(),
            forecast: None,
        }
    }

    pub(crate) fn version(&self, c: Component) -> Option<(&DetectedVersion, Version)> {
        self.versions.iter().find(|v| v.component == c).and_then(|d| Version::parse(&d.version).map(|v| (d, v)))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    /// Best first.
    pub remedies: Vec<Remedy>,
    /// Remedies the table considered for this node and left out, each with why (a boot
    /// parameter the kernel lacks, a migration without free IDs, a gc that frees none).
    pub not_offered: Vec<NotOffered>,
    /// The decision table's row: the facts the remedies were chosen from.
    pub situation: Situation,
    pub node: NodeFacts,
    pub census: Census,
}

impl CheckReport {
    /// The remedy `action` as offered here, if it is.
    pub fn remedy(&self, action: &str) -> Option<&Remedy> {
        self.remedies.iter().find(|r| r.action == action)
    }

    /// Why `action` is not offered here, if the table says.
    pub fn not_offered(&self, action: &str) -> Option<&NotOffered> {
        self.not_offered.iter().find(|n| n.action == action)
    }
}

/// Judge a node: the one function every front end takes its verdict and remedies from.
pub fn check(census: Census, node: NodeFacts) -> CheckReport {
    let findings = findings::findings(&census, &node);
    let verdict = findings.iter().map(|f| f.implies).max().unwrap_or(Verdict::Healthy);
    let situation = Situation::of(verdict, &census, &node, &findings);
    let (remedies, not_offered) = remedies::remedies(&situation);
    CheckReport { verdict, findings, remedies, not_offered, situation, node, census }
}

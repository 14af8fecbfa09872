//! What the commands' arguments share: the global flags, the output format, the state
//! directories' defaults and the parsers of durations (one grammar for every flag,
//! `cgleak_readers::duration`, documented in the README's Commands section).
//!
//! The state directories: `fix --state-dir` defaults to the fixer's directory and
//! `agent --state-dir` (and the `--state-dir` where `status` and `check` read the agent's
//! history) to the agent's, both under `--host-root` (cgleak_actions::fix::state has the
//! layout). The agent's history of the old layout (`/var/lib/cgleak/agent-history.jsonl`)
//! is read beside the default directory, never written, so an upgrade keeps the forecast.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use cgleak_actions::fix::state::{agent_state_dir, fix_state_dir, legacy_state_dir};
use cgleak_model::history::{HistoryFiles, HISTORY_FILE};
use cgleak_readers::duration::{parse_duration, Accept};
use cgleak_readers::HostPaths;

use crate::exit::Failure;

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Where the host's / is visible: /proc, /sys, the cgroup mounts and
    /// /var/lib/kubelet are read under it (e.g. /host in a DaemonSet pod).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// The kubelet's --root-dir, as seen by cgleak [default: <host-root>/var/lib/kubelet].
    #[arg(long, global = true, value_name = "DIR")]
    pub kubelet_root_dir: Option<PathBuf>,
    /// Output format (jsonl, one JSON object per line, is for `logs` only).
    #[arg(long = "output", short = 'o', global = true, value_enum, value_name = "FORMAT", default_value_t = OutputArg::Table)]
    pub output_arg: OutputArg,
    /// The time zone of log times written without one (syslog, klog): an IANA name
    /// (America/Chicago), UTC or an offset (-06:00) [default: the host's /etc/localtime under
    /// --host-root, else this machine's zone].
    #[arg(long, global = true, value_name = "ZONE", allow_hyphen_values = true)]
    pub log_timezone: Option<String>,
    /// The format of commands that have no jsonl: `output_arg`, checked in `main`.
    #[arg(skip = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `--output` as given.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputArg {
    Table,
    Json,
    /// One JSON object per line, as found (logs).
    Jsonl,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

impl GlobalArgs {
    pub fn host(&self) -> Result<HostPaths, Failure> {
        if !self.host_root.is_dir() {
            return Err(Failure::usage(format!("--host-root {}: not a directory", self.host_root.display())));
        }
        let mut h = HostPaths::new(&self.host_root);
        if let Some(k) = &self.kubelet_root_dir {
            h = h.with_kubelet_root(k);
        }
        Ok(h)
    }

    /// `--output` for the commands that have no jsonl (`main` refuses it for them).
    pub fn resolve_output(&mut self) {
        self.output = match self.output_arg {
            OutputArg::Table => OutputFormat::Table,
            OutputArg::Json | OutputArg::Jsonl => OutputFormat::Json,
        };
    }
}

/// `fix --state-dir DIR`, else `<host-root>/var/lib/cgleak/fix`.
pub fn fix_state(host: &HostPaths, given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| fix_state_dir(host))
}

/// Where a fixer of the old layout left its journal: `<host-root>/var/lib/cgleak/fix-journal.jsonl`.
pub fn legacy_fix_journal(host: &HostPaths) -> PathBuf {
    legacy_state_dir(host).join(cgleak_actions::fix::journal::JOURNAL_FILE)
}

/// The agent's history: `--state-dir DIR` alone, else `<host-root>/var/lib/cgleak/agent`
/// with the old layout's file beside it.
pub fn agent_history(host: &HostPaths, given: Option<&Path>) -> HistoryFiles {
    match given {
        Some(d) => HistoryFiles { dir: d.to_path_buf(), legacy: None },
        None => HistoryFiles { dir: agent_state_dir(host), legacy: Some(legacy_state_dir(host).join(HISTORY_FILE)) },
    }
}

/// A duration flag that is more than zero; a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s, Accept::POSITIVE)
}

/// A duration flag where 0 turns something off; a bare number is seconds.
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    parse_duration(s, Accept::OR_ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_under_the_host_root_and_a_given_dir_wins() {
        let h = HostPaths::new("/host");
        assert_eq!(fix_state(&h, None), PathBuf::from("/host/var/lib/cgleak/fix"));
        assert_eq!(fix_state(&h, Some(Path::new("/tmp/s"))), PathBuf::from("/tmp/s"));
        assert_eq!(legacy_fix_journal(&h), PathBuf::from("/host/var/lib/cgleak/fix-journal.jsonl"));
        let a = agent_history(&h, None);
        assert_eq!(a.dir, PathBuf::from("/host/var/lib/cgleak/agent"));
        assert_eq!(a.legacy, Some(PathBuf::from("/host/var/lib/cgleak/agent-history.jsonl")));
        assert_eq!(agent_history(&h, Some(Path::new("/x"))).legacy, None);
    }

    #[test]
    fn duration_flags_take_the_one_grammar() {
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("25"), Ok(Duration::from_secs(25)));
        assert!(duration("0").unwrap_err().contains("more than 0"));
        assert_eq!(duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(duration_or_zero("1h"), Ok(Duration::from_secs(3600)));
    }
}

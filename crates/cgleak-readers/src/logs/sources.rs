//! The node's log sources: which there are (the host's usual files, journald, /dev/kmsg),
//! what each is called in a report, and the report of what was read from one.
//! [`super::read`] reads them; `cgleak logs`, `check` and the agent choose among them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::files;
use super::journal::{Journalctl, DEFAULT_UNITS};
use crate::HostPaths;

/// A log source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file (plain, rotated, gzip), `name` as the report shows it.
    File { path: PathBuf, name: String },
    Stdin,
    /// journald (`journalctl -o json`), these units ([`super::journal::KERNEL_UNIT`] for the kernel).
    Journal { units: Vec<String> },
    /// `<host-root>/dev/kmsg`.
    Kmsg,
}

impl Source {
    /// A file of `host`, named as the host names it (without the host root in front).
    pub fn host_file(host: &HostPaths, path: PathBuf) -> Source {
        let name = host.to_host_path(&path).display().to_string();
        Source::File { path, name }
    }

    /// journald with the units read by default: the kubelet, the container runtimes and the kernel.
    pub fn default_journal() -> Source {
        Source::Journal { units: DEFAULT_UNITS.iter().map(|s| s.to_string()).collect() }
    }

    /// The source's name in reports: the file's, `stdin`, `journald`, or the kmsg device's path.
    pub fn name(&self, host: &HostPaths) -> String {
        match self {
            Source::File { name, .. } => name.clone(),
            Source::Stdin => "stdin".into(),
            Source::Journal { .. } => "journald".into(),
            Source::Kmsg => kmsg_name(host),
        }
    }

    /// Whether the source is there to be read now (a file that exists, a journal with a
    /// journalctl to read it, the kmsg device); `journal` says whether journalctl is there.
    pub fn present(&self, host: &HostPaths, journal: bool) -> bool {
        match self {
            Source::File { path, .. } => path.is_file(),
            Source::Stdin => false,
            Source::Journal { .. } => journal,
            Source::Kmsg => has_kmsg(host),
        }
    }
}

/// `/dev/kmsg` as the host names it.
pub fn kmsg_name(host: &HostPaths) -> String {
    host.to_host_path(&host.host("/dev/kmsg")).display().to_string()
}

/// Whether `<host-root>/dev/kmsg` exists.
pub fn has_kmsg(host: &HostPaths) -> bool {
    host.host("/dev/kmsg").exists()
}

/// The host's usual logs: the syslog-style files of [`files::DEFAULT_LOG_GLOBS`] (rotated
/// generations included, oldest first), journald where journalctl and a journal are there,
/// and /dev/kmsg where it exists.
pub fn default_sources(host: &HostPaths) -> Vec<Source> {
    let mut out: Vec<Source> = files::default_log_files(host).into_iter().map(|p| Source::host_file(host, p)).collect();
    if Journalctl::for_host(host).is_some() {
        out.push(Source::default_journal());
    }
    if has_kmsg(host) {
        out.push(Source::Kmsg);
    }
    out
}

/// What a follower of the host's logs reads: the live files of [`files::LIVE_LOG_NAMES`]
/// (whether they exist yet or not), journald and /dev/kmsg.
pub fn live_sources(host: &HostPaths) -> Vec<Source> {
    let mut out: Vec<Source> = files::LIVE_LOG_NAMES.iter().map(|n| Source::host_file(host, host.host(Path::new("/var/log").join(n)))).collect();
    out.push(Source::default_journal());
    out.push(Source::Kmsg);
    out
}

/// What was read from one source, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `/var/log/syslog`, `stdin`, `journald`, `/dev/kmsg`.
    pub source: String,
    /// `file`, `gzip`, `stdin`, `journald`, `kmsg`; `skipped` for a container's log named
    /// by an argument (never read).
    pub kind: &'static str,
    /// Lines read (journald: entries; kmsg: records).
    pub lines: u64,
    pub incidents: u64,
    /// Why the source could not be read (or not to its end).
    pub error: Option<String>,
    pub notes: Vec<String>,
}

impl SourceReport {
    pub fn new(source: &str, kind: &'static str) -> SourceReport {
        SourceReport { source: source.to_string(), kind, lines: 0, incidents: 0, error: None, notes: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_hosts_own() {
        let h = HostPaths::new("/host");
        let f = Source::host_file(&h, PathBuf::from("/host/var/log/syslog"));
        assert_eq!(f.name(&h), "/var/log/syslog");
        assert_eq!(Source::Kmsg.name(&h), "/dev/kmsg");
        assert_eq!(Source::default_journal().name(&h), "journald");
        let live: Vec<String> = live_sources(&h).iter().map(|s| s.name(&h)).collect();
        assert_eq!(live, ["/var/log/messages", "/var/log/syslog", "/var/log/kern.log", "/var/log/daemon.log", "/var/log/kubelet.log", "journald", "/dev/kmsg"]);
    }
}

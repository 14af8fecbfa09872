//! One line of a log source, as the log readers hand it to the incident parser.
//!
//! Shared between the log sources (files, journald, /dev/kmsg) and the model's
//! incident parser: bytes, not `str`, because logs carry non-UTF-8 bytes and lines
//! of any length.

/// One line (or kmsg record) from a log source, as bytes (may be non-UTF-8, any length).
pub struct LogLine<'a> {
    pub source: &'a str,
    /// 1-based within source.
    pub line: u64,
    pub text: &'a [u8],
    pub meta: &'a LineMeta,
}

/// What the source knows about a line besides its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMeta {
    /// RFC 3339 when the source knows it (journald __REALTIME_TIMESTAMP, kmsg converted
    /// with boot time); else None and the parser reads the time from the text.
    pub time: Option<String>,
    /// journald _HOSTNAME.
    pub host: Option<String>,
    /// journald _SYSTEMD_UNIT or SYSLOG_IDENTIFIER, e.g. "kubelet.service".
    pub unit: Option<String>,
    /// The line is a kernel message (kmsg, journald _TRANSPORT=kernel).
    pub kernel: bool,
    /// kmsg continuation/dictionary line or journald follow-up belonging to the
    /// previous record.
    pub continuation: bool,
    /// What the source itself vouches for about who wrote the line (the model decides
    /// from it whether the line may count as evidence).
    pub origin: Origin,
}

/// Who wrote a line, as far as its source can tell without believing the line's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// A log file or standard input: only the line's own syslog tag (RFC 3164 `tag[pid]:`,
    /// RFC 5424 APP-NAME) names its writer; a line without one has no known writer.
    #[default]
    Text,
    /// A file that one program alone writes (`kubelet.log` of a kubelet run without
    /// systemd): a line without a tag is that program's.
    FileOf(&'static str),
    /// A journald entry: the fields journald itself records about the sender.
    Journal(JournalOrigin),
    /// A `/dev/kmsg` record and its syslog facility: 0 only for the kernel's own messages
    /// (user space writing to /dev/kmsg gets LOG_USER or its own facility, never 0:
    /// kernel/printk/printk.c devkmsg_write).
    Kmsg { facility: u8 },
}

/// journald's fields about the sender of an entry. The `_`-prefixed ones are set by
/// journald from the sender's credentials and cgroup (systemd.journal-fields(7)), so the
/// sender cannot choose them; SYSLOG_IDENTIFIER and CONTAINER_* are the sender's own words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalOrigin {
    /// `_TRANSPORT`: kernel, syslog, journal, stdout, audit, driver.
    pub transport: Option<String>,
    /// `SYSLOG_FACILITY` (journald sets it for kernel-transport entries from the record).
    pub facility: Option<u8>,
    /// `_COMM`: the sender's process name.
    pub comm: Option<String>,
    /// `_SYSTEMD_UNIT`: the unit whose cgroup the sender is in.
    pub unit: Option<String>,
    /// `_SYSTEMD_CGROUP`: the sender's cgroup path.
    pub cgroup: Option<String>,
    /// `SYSLOG_IDENTIFIER`: the name the sender gave itself.
    pub identifier: Option<String>,
    /// `CONTAINER_NAME` or `CONTAINER_ID`: a container's output relayed by a runtime's
    /// journald log driver (docker, podman).
    pub container: Option<String>,
}

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
}

//! journald, read through `journalctl -o json` (one JSON object per entry and line).
//!
//! `journalctl` runs as a subprocess behind [`JournalSource`], so tests feed recorded
//! output through [`RecordedJournal`] instead. An entry becomes one [`LogLine`] per
//! line of its MESSAGE, with the entry's time (`__REALTIME_TIMESTAMP`), host
//! (`_HOSTNAME`), unit (`_SYSTEMD_UNIT`, else `SYSLOG_IDENTIFIER`) and transport
//! (`_TRANSPORT=kernel`) as [`LineMeta`].

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde_json::Value;

use crate::logline::{JournalOrigin, LineMeta, LogLine, Origin};
use crate::HostPaths;

use super::clock::rfc3339_usec;
use super::split::{LineSink, MAX_LINE};

/// The pseudo-unit that stands for the kernel's messages (`_TRANSPORT=kernel`).
pub const KERNEL_UNIT: &str = "kernel";

/// Units read by default: the kubelet and the container runtimes, and the kernel.
pub const DEFAULT_UNITS: [&str; 5] = ["kubelet", "containerd", "docker", "crio", KERNEL_UNIT];

/// Where journald entries come from.
pub trait JournalSource: Send + Sync {
    /// Entries as `journalctl -o json` prints them, since `since` (a journalctl time,
    /// e.g. `@1703232000`), of `units` (unit names; [`KERNEL_UNIT`] for the kernel;
    /// all entries when empty), and with `follow`, new entries as they come.
    fn open(&self, since: Option<&str>, follow: bool, units: &[String]) -> io::Result<Box<dyn BufRead + Send>>;
}

/// The real journal: runs `journalctl`.
#[derive(Debug, Clone)]
pub struct Journalctl {
    pub program: PathBuf,
    /// `--root`: the host's journal files under a host root other than `/`.
    pub root: Option<PathBuf>,
}

impl Journalctl {
    /// journalctl for `host`: found in PATH, and only where the host has a journal
    /// (`/var/log/journal` or `/run/log/journal`), read with `--root` under a host root
    /// other than `/`.
    pub fn for_host(host: &HostPaths) -> Option<Journalctl> {
        let has_journal = ["/var/log/journal", "/run/log/journal"].iter().any(|d| host.is_dir_local(&host.host(d)));
        if !has_journal {
            return None;
        }
        let program = find_in_path("journalctl")?;
        Some(Journalctl { program, root: (!host.is_host_root()).then(|| host.root().to_path_buf()) })
    }

    /// The command line (without the program).
    pub fn args(&self, since: Option<&str>, follow: bool, units: &[String]) -> Vec<OsString> {
        let mut a: Vec<OsString> = ["-o", "json", "--no-pager", "--all"].iter().map(OsString::from).collect();
        if let Some(r) = &self.root {
            a.push("--root".into());
            a.push(r.into());
        }
        if let Some(s) = since {
            a.push(format!("--since={s}").into());
        }
        if follow {
            a.push("--follow".into());
        }
        // -u and -k would be ANDed by journalctl (different fields): explicit matches
        // joined by "+" are ORed.
        for (i, u) in units.iter().enumerate() {
            if i > 0 {
                a.push("+".into());
            }
            if u == KERNEL_UNIT {
                a.push("_TRANSPORT=kernel".into());
            } else {
                let unit = if u.contains('.') { u.clone() } else { format!("{u}.service") };
                a.push(format!("_SYSTEMD_UNIT={unit}").into());
            }
        }
        a
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl JournalSource for Journalctl {
    fn open(&self, since: Option<&str>, follow: bool, units: &[String]) -> io::Result<Box<dyn BufRead + Send>> {
        let mut child = Command::new(&self.program)
            .args(self.args(since, follow, units))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // stderr is drained aside so a chatty journalctl can never block on it.
        let err = std::thread::spawn(move || drain_stderr(stderr));
        Ok(Box::new(BufReader::with_capacity(256 * 1024, ChildOutput { child, stdout, stderr: Some(err) })))
    }
}

fn drain_stderr(mut e: ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match e.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if kept.len() < 4096 => kept.extend_from_slice(&buf[..n]),
            Ok(_) => {}
        }
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

/// journalctl's stdout; at its end, a failed exit becomes an error with its stderr.
struct ChildOutput {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
}

impl Read for ChildOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 {
            if let Some(h) = self.stderr.take() {
                let msg = h.join().unwrap_or_default();
                let st = self.child.wait()?;
                if !st.success() {
                    let why = if msg.is_empty() { st.to_string() } else { msg };
                    return Err(io::Error::other(format!("journalctl: {why}")));
                }
            }
        }
        Ok(n)
    }
}

impl Drop for ChildOutput {
    fn drop(&mut self) {
        // A followed journal is ended here (our child, by its pid).
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a journal was opened: since, follow, units.
pub type JournalOpen = (Option<String>, bool, Vec<String>);

/// Recorded `journalctl -o json` output, for tests. Remembers how it was opened.
#[derive(Debug, Default)]
pub struct RecordedJournal {
    pub output: Vec<u8>,
    /// (since, follow, units) of each open.
    pub opened: Mutex<Vec<JournalOpen>>,
}

impl RecordedJournal {
    pub fn new(output: impl Into<Vec<u8>>) -> Self {
        RecordedJournal { output: output.into(), opened: Mutex::new(Vec::new()) }
    }
}

impl JournalSource for RecordedJournal {
    fn open(&self, since: Option<&str>, follow: bool, units: &[String]) -> io::Result<Box<dyn BufRead + Send>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).push((since.map(str::to_string), follow, units.to_vec()));
        Ok(Box::new(io::Cursor::new(self.output.clone())))
    }
}

/// Counters of one journal read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    pub entries: u64,
    pub bytes: u64,
    /// Lines of output that were not a JSON object (reported, skipped).
    pub malformed: u64,
}

/// A field's value as bytes: journalctl prints text as a JSON string and anything
/// else (non-UTF-8, control bytes) as an array of byte values; a field given several
/// times is an array of such values (the first is taken).
fn field_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(a) if a.iter().all(Value::is_u64) => Some(a.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()),
        Value::Array(a) => a.first().and_then(field_bytes),
        _ => None,
    }
}

fn field_string(v: Option<&Value>) -> Option<String> {
    v.and_then(field_bytes).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The LineMeta of one entry.
pub fn entry_meta(e: &serde_json::Map<String, Value>) -> LineMeta {
    let f = |k: &str| field_string(e.get(k));
    let origin = JournalOrigin {
        transport: f("_TRANSPORT"),
        facility: f("SYSLOG_FACILITY").and_then(|v| v.trim().parse().ok()),
        comm: f("_COMM"),
        unit: f("_SYSTEMD_UNIT"),
        cgroup: f("_SYSTEMD_CGROUP"),
        identifier: f("SYSLOG_IDENTIFIER"),
        container: ["CONTAINER_NAME", "CONTAINER_ID", "CONTAINER_ID_FULL"].iter().find_map(|k| f(k)),
    };
    // The kernel's own messages only: a record user space wrote to /dev/kmsg keeps its
    // facility (never 0), and journald files it under _TRANSPORT=kernel too.
    let kernel = origin.transport.as_deref() == Some("kernel") && origin.facility.unwrap_or(0) == 0;
    // A container's output relayed by dockerd (its log driver) runs in docker.service: the
    // unit would name the runtime, not the container.
    let unit = if origin.container.is_some() { origin.identifier.clone().or_else(|| origin.container.clone()) } else { origin.unit.clone().or_else(|| origin.identifier.clone()) };
    LineMeta {
        time: f("__REALTIME_TIMESTAMP").and_then(|t| t.parse::<u64>().ok()).map(rfc3339_usec),
        host: f("_HOSTNAME"),
        unit,
        kernel,
        continuation: false,
        origin: Origin::Journal(origin),
    }
}

/// Read `journalctl -o json` output to its end: each entry's MESSAGE lines go to
/// `sink`, numbered by entry (1-based); later lines of a multi-line MESSAGE are
/// continuations with the same number.
pub fn read_journal(r: &mut dyn BufRead, source: &str, sink: &mut dyn LineSink) -> io::Result<JournalStats> {
    let mut st = JournalStats::default();
    let mut raw = Vec::with_capacity(64 * 1024);
    loop {
        raw.clear();
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(st);
        }
        st.bytes += n as u64;
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        st.entries += 1;
        // Text in JSON keeps its letters, so the prefilter can judge the raw entry;
        // a MESSAGE given as bytes (an array) must be decoded first.
        if !sink.pending() && !sink.may_match(line) && memchr::memmem::find(line, b"\"MESSAGE\":[").is_none() {
            continue;
        }
        let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(line) else {
            st.malformed += 1;
            continue;
        };
        let Some(msg) = e.get("MESSAGE").and_then(field_bytes) else { continue };
        let mut meta = entry_meta(&e);
        for (i, text) in msg.split(|&c| c == b'\n').enumerate() {
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let text = &text[..text.len().min(MAX_LINE)];
            if i > 0 {
                if text.is_empty() {
                    continue;
                }
                meta.continuation = true;
            }
            if sink.pending() || sink.may_match(text) {
                sink.line(&LogLine { source, line: st.entries, text, meta: &meta });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::split::tests::Collect;
    use super::*;

    /// Entries as journalctl 252 prints them with `-o json --all` (trimmed of fields
    /// cgleak does not read: cursors, boot and machine ids, capabilities).
    pub const RECORDED: &str = include_str!("testdata/journal-kubelet-enospc.json");

    #[test]
    fn recorded_entries_become_lines() {
        let j = RecordedJournal::new(RECORDED);
        let units: Vec<String> = DEFAULT_UNITS.iter().map(|s| s.to_string()).collect();
        let mut r = j.open(Some("@1703231000"), false, &units).unwrap();
        let mut sink = Collect::new("");
        let st = read_journal(&mut r, "journald", &mut sink).unwrap();
        assert_eq!(j.opened.lock().unwrap()[0], (Some("@1703231000".to_string()), false, units));
        assert_eq!(st.malformed, 1, "the recording has one truncated line");
        let texts: Vec<String> = sink.got.iter().map(|(_, t)| String::from_utf8_lossy(t).into_owned()).collect();
        // Entry 1: kubelet, text.
        assert!(texts[0].starts_with("E1222 08:00:00.498519    1146 pod_workers.go:1300]"), "{}", texts[0]);
        assert!(texts[0].contains("mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod"));
        let m = &sink.metas[0];
        assert_eq!(m.time.as_deref(), Some("2023-12-22T08:00:00.498519Z"));
        assert_eq!(m.host.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
        assert_eq!(m.unit.as_deref(), Some("kubelet.service"));
        assert!(!m.kernel && !m.continuation);
        // The kernel entry: no unit field but SYSLOG_IDENTIFIER, transport kernel.
        let k = sink.metas.iter().position(|m| m.kernel).expect("a kernel entry");
        assert_eq!(sink.metas[k].unit.as_deref(), Some("kernel"));
        assert!(texts[k].starts_with("SLUB: Unable to allocate memory on node -1"));
        // A MESSAGE given as an array of bytes (not UTF-8) is decoded, bytes kept.
        let b = sink.got.iter().position(|(_, t)| t.contains(&0xff)).expect("the binary entry");
        assert!(sink.got[b].1.starts_with(b"time=\"2023-12-22T08:00:01.123456789Z\" level=error"));
        assert!(String::from_utf8_lossy(&sink.got[b].1).contains("no space left on device"));
        // Multi-line MESSAGE: same entry number, later lines continuations.
        let c = sink.metas.iter().position(|m| m.continuation).expect("a continuation");
        assert_eq!(sink.got[c].0, sink.got[c - 1].0);
        assert_eq!(st.entries, sink.got.iter().map(|g| g.0).max().unwrap());
    }

    #[test]
    fn entries_carry_journald_fields_about_their_sender() {
        let meta = |json: &str| match serde_json::from_str::<Value>(json).unwrap() {
            Value::Object(e) => entry_meta(&e),
            _ => unreachable!(),
        };
        let m = meta(RECORDED.lines().next().unwrap());
        let Origin::Journal(j) = &m.origin else { panic!("{m:?}") };
        assert_eq!((j.unit.as_deref(), j.comm.as_deref(), j.transport.as_deref()), (Some("kubelet.service"), Some("kubelet"), Some("stdout")));
        assert_eq!(j.cgroup.as_deref(), Some("/system.slice/kubelet.service"));
        // docker's journald log driver: the runtime's unit, a container's words.
        let m = meta(r#"{"_TRANSPORT":"journal","_COMM":"dockerd","_SYSTEMD_UNIT":"docker.service","CONTAINER_NAME":"web","CONTAINER_ID":"3f1e9a7c5b2d","SYSLOG_IDENTIFIER":"3f1e9a7c5b2d","MESSAGE":"x"}"#);
        let Origin::Journal(j) = &m.origin else { panic!("{m:?}") };
        assert_eq!(j.container.as_deref(), Some("web"));
        assert_eq!(m.unit.as_deref(), Some("3f1e9a7c5b2d"), "not docker.service");
        // A record user space wrote to /dev/kmsg is not the kernel's.
        let m = meta(r#"{"_TRANSPORT":"kernel","SYSLOG_FACILITY":"1","SYSLOG_IDENTIFIER":"myapp","MESSAGE":"x"}"#);
        assert!(!m.kernel);
        let m = meta(r#"{"_TRANSPORT":"kernel","SYSLOG_FACILITY":"0","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"x"}"#);
        assert!(m.kernel);
    }

    #[test]
    fn prefilter_skips_entries_without_parsing() {
        let mut sink = Collect::new("no space left on device");
        let mut r = io::Cursor::new(RECORDED.as_bytes());
        read_journal(&mut r, "journald", &mut sink).unwrap();
        assert!(!sink.got.is_empty());
        assert!(sink.got.iter().all(|(_, t)| memchr::memmem::find(t, b"no space left on device").is_some()));
    }

    #[test]
    fn journalctl_command_line() {
        let j = Journalctl { program: "journalctl".into(), root: None };
        let units: Vec<String> = ["kubelet", "crio.service", KERNEL_UNIT].iter().map(|s| s.to_string()).collect();
        let a: Vec<String> = j.args(Some("@1703232000"), true, &units).iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            a,
            ["-o", "json", "--no-pager", "--all", "--since=@1703232000", "--follow", "_SYSTEMD_UNIT=kubelet.service", "+", "_SYSTEMD_UNIT=crio.service", "+", "_TRANSPORT=kernel"]
        );
        let j = Journalctl { program: "journalctl".into(), root: Some("/host".into()) };
        let a: Vec<String> = j.args(None, false, &[]).iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(a, ["-o", "json", "--no-pager", "--all", "--root", "/host"]);
    }

    #[test]
    fn a_failing_journalctl_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("journalctl");
        std::fs::write(&fake, "#!/bin/sh\necho 'No journal files were found.' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let j = Journalctl { program: fake, root: None };
        let mut r = j.open(None, false, &[]).unwrap();
        let e = read_journal(&mut r, "journald", &mut Collect::new("")).unwrap_err();
        assert!(e.to_string().contains("No journal files were found"), "{e}");
    }

    #[test]
    fn odd_values_never_panic() {
        let input = b"{\"MESSAGE\":null}\n{\"MESSAGE\":[1,2,300]}\n{\"MESSAGE\":[[104,105],\"x\"]}\n[1,2]\n{\"MESSAGE\":\"a\",\"__REALTIME_TIMESTAMP\":\"x\"}\n\xff\xfe\n";
        let mut sink = Collect::new("");
        let st = read_journal(&mut io::Cursor::new(&input[..]), "j", &mut sink).unwrap();
        assert_eq!(st.entries, 6);
        assert_eq!(st.malformed, 2);
        let texts: Vec<Vec<u8>> = sink.got.iter().map(|g| g.1.clone()).collect();
        assert_eq!(texts, vec![vec![1u8, 2, 44], b"hi".to_vec(), b"a".to_vec()]);
    }
}

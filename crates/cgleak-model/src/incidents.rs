//! Incidents: log lines that show a node running out of memory cgroups.
//!
//! When the memcg ID space is full, the first sign is in the logs: kubelet, the runtimes
//! (dockerd, containerd, cri-o passing on runc or crun), other agents (nomad, garden,
//! lxc), plain mkdir and systemd all print the failed `mkdir` of a memory cgroup with the
//! errno of the kernel's era (facts §1). The kernel's own `SLUB: Unable to allocate
//! memory` lines (kmem accounting of per-memcg caches) and inotify watch exhaustion on
//! cgroup directories come from the same leaking cgroups.
//!
//! [`IncidentParser`] turns lines ([`LogLine`]) into [`Incident`]s; [`IncidentSummary`]
//! groups them. What matches and what does not is in [`catalog`], one rule per reason.
//!
//! Speed: the log sources call [`IncidentParser::may_match`] (or
//! [`IncidentParser::find_candidate`] on a whole buffer) before [`IncidentParser::feed`].
//! Both are one SIMD multi-literal search (aho-corasick's Teddy) and never allocate; `feed`
//! allocates only when a line is an incident.

pub mod catalog;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use cgleak_readers::logline::LogLine;
use serde::Serialize;

use crate::era::{EraId, Errno};
use catalog::Signature;
pub use text::time_sort_key;

/// `raw` keeps at most this many bytes of text (8 KiB), marker included.
pub const RAW_MAX: usize = 8 * 1024;

/// Bytes of a line searched for time, host, component and IDs (see `build`).
const META_SCAN: usize = 64 * 1024;

/// Errno occurrences classified per line at most: bounds the work on hostile lines.
const MAX_ERRNO_HITS_PER_LINE: usize = 16;

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// mkdir of a memory cgroup failed with ENOSPC, ENOMEM or EBUSY.
    MemcgCreateFailed,
    /// The kernel could not allocate from a per-memcg slab cache (kmem accounting).
    SlabAllocFailed,
    /// inotify_add_watch on a cgroup directory hit fs.inotify.max_user_watches.
    InotifyExhausted,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::MemcgCreateFailed => "memcg_create_failed",
            IncidentKind::SlabAllocFailed => "slab_alloc_failed",
            IncidentKind::InotifyExhausted => "inotify_exhausted",
        }
    }
}

/// One matched line (or SLUB record with its continuation lines).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub kind: IncidentKind,
    /// The errno the line printed; None for the kernel's SLUB lines, which print none.
    pub errno: Option<Errno>,
    /// Who printed it: "kubelet", "dockerd", "containerd", "crio", "runc", "crun", "kernel",
    /// "mkdir", "nomad", "garden", "lxc", "systemd", "cadvisor", or the syslog tag / unit;
    /// "unknown" when nothing tells.
    pub component: String,
    /// RFC 3339 when the line says (or the source knows) the zone; syslog and klog times
    /// (no year, no zone) get the parser's reference year and no zone; kernel `[seconds]`
    /// stays as `"+<seconds>s since boot"` unless the source gave a time.
    pub time: Option<String>,
    pub host: Option<String>,
    /// The cgroup as printed: the path of the failed mkdir or watch, or for slab incidents
    /// the cgroup name in the cache name `kmalloc-1024(1793:<name>)`.
    pub cgroup_path: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub source: String,
    /// 1-based line number in the source (of the SLUB header for slab incidents).
    pub line: u64,
    /// The line as lossy UTF-8, at most [`RAW_MAX`] bytes with a marker; SLUB continuation
    /// lines joined with '\n'.
    pub raw: String,
}

/// A SLUB header waiting for its `cache:` / `node N: slabs:` continuation lines.
struct PendingSlab {
    incident: Incident,
    cache_seen: bool,
    memcg_cache: bool,
}

/// Streaming line parser. One per stream of lines (a SLUB record's continuation lines
/// must follow its header in the same parser).
pub struct IncidentParser {
    reference_year: i32,
    prefilter: AhoCorasick,
    pending: Option<PendingSlab>,
}

impl IncidentParser {
    /// `reference_year`: the year given to syslog and klog times, which print none.
    pub fn new(reference_year: i32) -> Self {
        // Built once per process (about 60 µs); clones share it.
        static PREFILTER: OnceLock<AhoCorasick> = OnceLock::new();
        let prefilter = PREFILTER
            .get_or_init(|| {
                AhoCorasick::builder()
                    .kind(Some(AhoCorasickKind::DFA))
                    // Leftmost-first: the only semantics with the packed (Teddy) SIMD prefilter.
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(catalog::PREFILTER)
                    .expect("four short literals always build")
            })
            .clone();
        IncidentParser { reference_year, prefilter, pending: None }
    }

    /// Cheap test to call on every line before [`feed`](Self::feed): false means the line
    /// can never start or continue an incident. One SIMD literal search, no allocation.
    /// While a SLUB record is pending it is true for every line, so that the line that ends
    /// the record reaches `feed`.
    pub fn may_match(&self, text: &[u8]) -> bool {
        self.pending.is_some() || self.prefilter.is_match(text)
    }

    /// True while a SLUB record waits for continuation lines: the caller must then feed
    /// the next line whatever [`find_candidate`](Self::find_candidate) says.
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The byte offset of the first signature literal in `haystack` (any number of lines):
    /// lines before the line holding it can be skipped (unless [`pending`](Self::pending)).
    /// Lets a reader scan a whole buffer at once, like grep does, instead of line by line.
    pub fn find_candidate(&self, haystack: &[u8]) -> Option<usize> {
        self.prefilter.find(haystack).map(|m| m.start())
    }

    /// Feed one line; pushes the incidents completed by it. A SLUB incident is held until
    /// a line that is not its continuation, or [`finish`](Self::finish).
    pub fn feed(&mut self, l: &LogLine<'_>, out: &mut Vec<Incident>) {
        let mut t = l.text;
        while let Some((&c, rest)) = t.split_last() {
            if c == b'\n' || c == b'\r' {
                t = rest;
            } else {
                break;
            }
        }
        if self.pending.is_some() {
            if self.absorb_continuation(l, t) {
                return;
            }
            self.flush_pending(out);
        }
        // Continuation records of something that is not a pending SLUB are ignored only when
        // they cannot match on their own, which the prefilter below decides.
        let mut hits = self.prefilter.find_iter(t).peekable();
        if hits.peek().is_none() {
            return;
        }
        let env = text::envelope(t);
        for m in hits.take(MAX_ERRNO_HITS_PER_LINE) {
            let p = m.pattern().as_usize();
            if p == catalog::SLUB_PATTERN {
                if !t[m.end()..].starts_with(catalog::SLUB_REST) {
                    continue;
                }
                let inc = self.build(l, t, &env, IncidentKind::SlabAllocFailed, None, None);
                self.pending = Some(PendingSlab { incident: inc, cache_seen: false, memcg_cache: false });
                return;
            }
            let Some((errno, head)) = catalog::errno_of_pattern(p) else { continue };
            let Some(s) = m.start().checked_sub(head.len()) else { continue };
            if !t[s..m.start()].eq_ignore_ascii_case(head) {
                continue;
            }
            let (kind, path) = match catalog::classify(t, s, m.end(), errno) {
                Signature::MemcgCreate(path) => (IncidentKind::MemcgCreateFailed, path),
                Signature::InotifyCgroup(path) => (IncidentKind::InotifyExhausted, Some(path)),
                Signature::NotMemcg => continue,
            };
            out.push(self.build(l, t, &env, kind, Some(errno), path));
            return;
        }
    }

    /// End of input: pushes a held SLUB incident.
    pub fn finish(&mut self, out: &mut Vec<Incident>) {
        self.flush_pending(out);
    }

    fn flush_pending(&mut self, out: &mut Vec<Incident>) {
        if let Some(p) = self.pending.take() {
            // A root cache (no "(id:cgroup)") is global slab pressure, not a memcg's.
            if !p.cache_seen || p.memcg_cache {
                out.push(p.incident);
            }
        }
    }

    /// Take `t` into the pending SLUB record when it continues it.
    fn absorb_continuation(&mut self, l: &LogLine<'_>, t: &[u8]) -> bool {
        let env = text::envelope(t);
        let mut msg = env.msg;
        if let Some((_, n)) = text::kernel_secs(msg) {
            msg = &msg[n..];
        }
        // `journalctl -k -o short-monotonic`: "[21161.093513] kernel:   cache: ...".
        let trimmed = msg.trim_ascii_start();
        let msg = trimmed.strip_prefix(b"kernel:").unwrap_or(trimmed);
        let body = msg.trim_ascii_start();
        let Some(p) = self.pending.as_mut() else { return false };
        if let Some(after) = body.strip_prefix(b"cache: ") {
            if p.cache_seen {
                return false; // a second cache line is a new record that lost its header
            }
            p.cache_seen = true;
            let (memcg, cg) = catalog::slab_cache_cgroup(after);
            p.memcg_cache = memcg;
            if let Some(cg) = cg {
                let inc = &mut p.incident;
                inc.cgroup_path = Some(String::from_utf8_lossy(cg).into_owned());
                inc.pod_uid = catalog::pod_uid(Some(cg), &[]);
                inc.container_id = catalog::container_id(Some(cg), &[]).or_else(|| {
                    // The kernel prints only the cgroup's own name: a bare 64-hex name is the container.
                    let s = String::from_utf8_lossy(cg);
                    (s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())).then(|| s.into_owned())
                });
            }
            append_raw(&mut p.incident.raw, t);
            return true;
        }
        let is_node_line = body.starts_with(b"node ") && memchr::memmem::find(body, b"slabs:").is_some();
        if is_node_line {
            append_raw(&mut p.incident.raw, t);
            return true;
        }
        // kmsg dictionary lines (" SUBSYSTEM=...") and journald follow-ups belong to the
        // record, unless they carry a signature of their own.
        l.meta.continuation && !self.prefilter.is_match(t)
    }

    fn build(
        &self,
        l: &LogLine<'_>,
        full: &[u8],
        env: &text::Envelope<'_>,
        kind: IncidentKind,
        errno: Option<Errno>,
        path: Option<&[u8]>,
    ) -> Incident {
        let year = self.reference_year;
        // Fields other than the path are looked for in the first 64 KiB only: real log lines
        // are far shorter, and the bound keeps a hostile 10 MB line from costing 10 MB per scan.
        let t = &full[..full.len().min(META_SCAN)];
        let msg = &env.msg[..env.msg.len().min(META_SCAN)];
        let klog = text::klog_pos(msg).is_some();
        let kernel = kind == IncidentKind::SlabAllocFailed;
        let time = l.meta.time.clone().or_else(|| {
            let lead_rfc = match env.prefix_time {
                Some(pt @ text::PrefixTime::Rfc3339(_)) => pt.format(year),
                _ => None,
            };
            lead_rfc
                .or_else(|| text::message_time(msg, year))
                .or_else(|| env.prefix_time.and_then(|pt| pt.format(year)))
                .or_else(|| text::kernel_secs(msg).map(|(s, _)| format!("+{}s since boot", String::from_utf8_lossy(s))))
        });
        let host = l.meta.host.clone().or_else(|| env.host.map(lossy)).or_else(|| describe_host(t));
        let component = if kernel || l.meta.kernel {
            "kernel".to_string()
        } else {
            env.tag
                .and_then(catalog::component_of_name)
                .or_else(|| l.meta.unit.as_deref().and_then(|u| catalog::component_of_name(u.as_bytes())))
                .or_else(|| catalog::component_of_text(t, msg, klog))
                .map(str::to_string)
                .or_else(|| env.tag.map(lossy))
                .or_else(|| l.meta.unit.clone())
                .unwrap_or_else(|| "unknown".to_string())
        };
        let (pod_uid, container_id) =
            if kernel { (None, None) } else { (catalog::pod_uid(path, t), catalog::container_id(path, t)) };
        let mut raw = String::new();
        append_raw(&mut raw, full);
        Incident {
            kind,
            errno,
            component,
            time,
            host,
            cgroup_path: path.map(lossy),
            pod_uid,
            container_id,
            source: l.source.to_string(),
            line: l.line,
            raw,
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kubectl describe` (kubectl < 1.20) event: the From column "kubelet, <node>".
fn describe_host(t: &[u8]) -> Option<String> {
    let i = memchr::memmem::find(t, b"  kubelet, ")?;
    let rest = &t[i + 11..];
    let tok = &rest[..rest.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(rest.len())];
    (!tok.is_empty() && tok.len() <= 255).then(|| lossy(tok))
}

/// Append `t` (lossy UTF-8) to `raw`, joined by '\n', keeping `raw` within [`RAW_MAX`] bytes:
/// what does not fit is cut at a character boundary and marked.
fn append_raw(raw: &mut String, t: &[u8]) {
    const MARKER: &str = " …[truncated]";
    if raw.ends_with(MARKER) {
        return;
    }
    if !raw.is_empty() {
        raw.push('\n');
    }
    // Lossy conversion never shrinks (each invalid run of 1..=3 bytes becomes 3 bytes), so
    // converting RAW_MAX bytes is always enough to fill the budget.
    let s = String::from_utf8_lossy(&t[..t.len().min(RAW_MAX)]);
    let fits = t.len() <= RAW_MAX && raw.len() + s.len() <= RAW_MAX;
    raw.push_str(&s);
    if !fits {
        let mut cut = RAW_MAX - MARKER.len();
        while !raw.is_char_boundary(cut) {
            cut -= 1;
        }
        raw.truncate(cut);
        raw.push_str(MARKER);
    }
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

/// Incidents grouped: when, who, which errno, which pods, and what the errno says about
/// the kernel.
#[derive(Serialize, Default, Clone, Debug)]
pub struct IncidentSummary {
    pub total: u64,
    /// Earliest and latest absolute time (relative kernel times are not compared).
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub by_kind: BTreeMap<String, u64>,
    pub by_component: BTreeMap<String, u64>,
    /// Errnos of all incidents that printed one.
    pub by_errno: BTreeMap<String, u64>,
    pub affected_pods: BTreeSet<String>,
    /// What the incidents say about the kernel (from the errnos of failed memcg mkdirs, facts §1).
    pub era_hints: Vec<String>,
    #[serde(skip)]
    first_key: Option<(i64, u32)>,
    #[serde(skip)]
    last_key: Option<(i64, u32)>,
    #[serde(skip)]
    mkdir_errnos: BTreeSet<&'static str>,
    #[serde(skip)]
    hinted_slab: bool,
    #[serde(skip)]
    hinted_inotify: bool,
}

/// The eras whose mkdir returns `e` when the memcg ID space is full (facts §1; checked
/// against [`crate::era::KernelEra`] in the tests).
pub fn eras_returning(e: Errno) -> &'static [EraId] {
    match e {
        Errno::ENOSPC => &[EraId::Linux310, EraId::Linux40To46, EraId::Linux5441To611],
        Errno::ENOMEM => &[EraId::El7, EraId::Linux47To5440],
        Errno::EBUSY => &[EraId::Linux612Plus],
    }
}

/// An era's name in a sentence ("3.10" alone reads like any 3.10, el7 included).
fn era_label(id: EraId) -> &'static str {
    match id {
        EraId::Linux310 => "3.10 vanilla",
        other => other.as_str(),
    }
}

fn era_hint(e: Errno) -> String {
    let eras: Vec<&str> = eras_returning(e).iter().map(|x| era_label(*x)).collect();
    let list = match eras.as_slice() {
        [one] => one.to_string(),
        [a, b] => format!("{a} or {b}"),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
        [] => String::new(),
    };
    match e {
        Errno::EBUSY => format!("EBUSY: only {list} kernels return EBUSY when the memcg ID space is full"),
        _ => format!("{}: {list} kernels return {} when the memcg ID space is full", e.as_str(), e.as_str()),
    }
}

impl IncidentSummary {
    pub fn add(&mut self, i: &Incident) {
        self.total += 1;
        *self.by_kind.entry(i.kind.as_str().to_string()).or_default() += 1;
        *self.by_component.entry(i.component.clone()).or_default() += 1;
        if let Some(e) = i.errno {
            *self.by_errno.entry(e.as_str().to_string()).or_default() += 1;
        }
        if let Some(p) = &i.pod_uid {
            if !self.affected_pods.contains(p) {
                self.affected_pods.insert(p.clone());
            }
        }
        if let Some(t) = &i.time {
            if let Some(k) = time_sort_key(t) {
                if self.first_key.is_none_or(|f| k < f) {
                    self.first_key = Some(k);
                    self.first_seen = Some(t.clone());
                }
                if self.last_key.is_none_or(|f| k > f) {
                    self.last_key = Some(k);
                    self.last_seen = Some(t.clone());
                }
            }
        }
        let new_hint = match (i.kind, i.errno) {
            (IncidentKind::MemcgCreateFailed, Some(e)) if self.mkdir_errnos.insert(e.as_str()) => {
                let mut h = vec![era_hint(e)];
                if self.mkdir_errnos.len() == 2 {
                    h.push(
                        "several errnos from failed memcg mkdirs: the logs span more than one kernel (an upgrade or a mix of nodes), or some failures are not ID exhaustion (ENOMEM can be real memory pressure)"
                            .to_string(),
                    );
                }
                h
            }
            (IncidentKind::SlabAllocFailed, _) if !self.hinted_slab => {
                self.hinted_slab = true;
                vec!["slab_alloc_failed: per-memcg slab caches exist only on 3.10 .. 5.8 kernels, with kmem accounting on for these memcgs (facts §2, §3)".to_string()]
            }
            (IncidentKind::InotifyExhausted, _) if !self.hinted_inotify => {
                self.hinted_inotify = true;
                vec!["inotify_exhausted: cAdvisor watches every cgroup directory; many (leaked) cgroups use up fs.inotify.max_user_watches".to_string()]
            }
            _ => vec![],
        };
        self.era_hints.extend(new_hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::era::KernelEra;

    #[test]
    fn era_table_agrees_with_the_era_model() {
        // One release per era, each placed exactly by crate::era.
        let samples = [
            ("3.10.108", EraId::Linux310),
            ("3.10.0-1160.el7.x86_64", EraId::El7),
            ("4.2.8", EraId::Linux40To46),
            ("4.19.300", EraId::Linux47To5440),
            ("5.10.200", EraId::Linux5441To611),
            ("6.12.10", EraId::Linux612Plus),
        ];
        for (rel, id) in samples {
            let era = KernelEra::from_release_str(rel);
            assert_eq!(era.id, id, "{rel}");
            assert!(eras_returning(era.mkdir_errno_when_full).contains(&id), "{rel}");
            for e in Errno::ALL {
                assert_eq!(eras_returning(e).contains(&id), e == era.mkdir_errno_when_full, "{rel} {e:?}");
            }
        }
        assert_eq!(
            era_hint(Errno::ENOMEM),
            "ENOMEM: 3.10-el7 or 4.7-5.4.40 kernels return ENOMEM when the memcg ID space is full"
        );
        assert_eq!(
            era_hint(Errno::ENOSPC),
            "ENOSPC: 3.10 vanilla, 4.0-4.6, or 5.4.41-6.11 kernels return ENOSPC when the memcg ID space is full"
        );
        assert_eq!(era_hint(Errno::EBUSY), "EBUSY: only 6.12+ kernels return EBUSY when the memcg ID space is full");
    }

    fn inc(kind: IncidentKind, errno: Option<Errno>, time: Option<&str>, pod: Option<&str>) -> Incident {
        Incident {
            kind,
            errno,
            component: "kubelet".into(),
            time: time.map(String::from),
            host: None,
            cgroup_path: None,
            pod_uid: pod.map(String::from),
            container_id: None,
            source: "s".into(),
            line: 1,
            raw: String::new(),
        }
    }

    #[test]
    fn raw_never_exceeds_its_budget() {
        let mut raw = "a".repeat(RAW_MAX - 5);
        append_raw(&mut raw, b"continuation line");
        assert!(raw.len() <= RAW_MAX && raw.ends_with("…[truncated]"));
        append_raw(&mut raw, b"more");
        assert!(raw.len() <= RAW_MAX);
        let mut raw = String::new();
        append_raw(&mut raw, &[0xff; RAW_MAX]);
        assert!(raw.len() <= RAW_MAX && raw.ends_with("…[truncated]"));
        let mut raw = String::new();
        append_raw(&mut raw, "é".repeat(RAW_MAX / 2).as_bytes());
        assert_eq!(raw.len(), RAW_MAX);
    }

    #[test]
    fn summary_groups_and_orders_by_real_time() {
        let mut s = IncidentSummary::default();
        s.add(&inc(
            IncidentKind::MemcgCreateFailed,
            Some(Errno::ENOMEM),
            Some("2020-12-22T08:00:01.5+08:00"),
            Some("a"),
        ));
        s.add(&inc(IncidentKind::MemcgCreateFailed, Some(Errno::ENOMEM), Some("2020-12-22T01:00:00Z"), Some("a")));
        s.add(&inc(IncidentKind::SlabAllocFailed, None, Some("+12.5s since boot"), None));
        s.add(&inc(IncidentKind::MemcgCreateFailed, Some(Errno::ENOSPC), None, Some("b")));
        assert_eq!(s.total, 4);
        // 08:00:01+08:00 is 00:00:01Z: earlier than 01:00:00Z.
        assert_eq!(s.first_seen.as_deref(), Some("2020-12-22T08:00:01.5+08:00"));
        assert_eq!(s.last_seen.as_deref(), Some("2020-12-22T01:00:00Z"));
        assert_eq!(s.by_errno["ENOMEM"], 2);
        assert_eq!(s.by_kind["memcg_create_failed"], 3);
        assert_eq!(s.by_kind["slab_alloc_failed"], 1);
        assert_eq!(s.affected_pods.len(), 2);
        // ENOMEM, then the slab hint, then ENOSPC and the mixed-errno warning.
        assert_eq!(s.era_hints.len(), 4, "{:?}", s.era_hints);
        assert!(s.era_hints[3].starts_with("several errnos"));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("first_key").is_none() && json.get("hinted_slab").is_none());
    }
}

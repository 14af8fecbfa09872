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
mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use cgleak_readers::logline::{LogLine, Origin};
use serde::Serialize;

use crate::era::{Errno, KernelEra};
use catalog::{Signature, SlubLine};
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
    /// Every kind, in the order reports list them.
    pub const ALL: [IncidentKind; 3] = [IncidentKind::MemcgCreateFailed, IncidentKind::SlabAllocFailed, IncidentKind::InotifyExhausted];

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
    /// The errno the line printed; None for the kernel's SLUB lines and for inotify limits
    /// that print none or another (`tail: inotify resources exhausted`, `inotify_init: too
    /// many open files`).
    pub errno: Option<Errno>,
    /// Who printed it: "kubelet", "dockerd", "containerd", "crio", "runc", "crun", "kernel",
    /// "mkdir", "nomad", "garden", "lxc", "systemd", "cadvisor", "tail", or the syslog tag / unit;
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
    /// 1-based line number in the source (of the SLUB header for slab incidents, or of the
    /// record's first line read when the header was not).
    pub line: u64,
    /// The line as lossy UTF-8, at most [`RAW_MAX`] bytes with a marker; SLUB continuation
    /// lines joined with '\n'.
    pub raw: String,
    /// Whether the line may count as evidence: written by the kubelet, a container runtime,
    /// systemd or the kernel, as its source vouches (see `trust`). Untrusted incidents are
    /// reported, and never count toward a verdict, a node condition or an alert.
    pub trusted: bool,
    /// How the writer is known ("syslog tag kubelet", "journald: _SYSTEMD_UNIT=kubelet.service"),
    /// or why the line is not trusted ("syslog tag myapp: not kubelet, ...").
    pub origin: String,
}

/// A SLUB record waiting for its continuation lines (catalog: slab_alloc_failed).
struct PendingSlab {
    /// The rate-limit line printed right before the record, if it started with one.
    suppressed: Option<Incident>,
    /// The record: from its header, or from its first line read when the header was not.
    record: Option<Incident>,
    /// The kind of the record's last line: what may follow (`catalog::continues`).
    last: SlubLine,
    cache_seen: bool,
    memcg_cache: bool,
    /// The record began before the lines this parser reads and is reported by the parser
    /// that read its start (`resume_after`): its lines are taken and nothing is reported.
    silent: bool,
}

impl PendingSlab {
    fn new(last: SlubLine) -> Self {
        PendingSlab { suppressed: None, record: None, last, cache_seen: false, memcg_cache: false, silent: false }
    }

    /// Take the cgroup of a `cache:` line into the record.
    fn take_cache(&mut self, body: &[u8]) {
        self.cache_seen = true;
        let Some(after) = body.strip_prefix(b"cache").and_then(catalog::strip_colon) else { return };
        let (memcg, cg) = catalog::slab_cache_cgroup(after);
        self.memcg_cache = memcg;
        if let (Some(cg), Some(inc)) = (cg, self.record.as_mut()) {
            inc.cgroup_path = Some(String::from_utf8_lossy(cg).into_owned());
            inc.pod_uid = catalog::pod_uid(Some(cg), &[]);
            inc.container_id = catalog::container_id(Some(cg), &[]).or_else(|| {
                // The kernel prints only the cgroup's own name: a bare 64-hex name is the container.
                let s = String::from_utf8_lossy(cg);
                (s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())).then(|| s.into_owned())
            });
        }
    }
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
        let t = trim_newlines(l.text);
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
        // The SLUB literals' first hit decides for the whole line (slub_line parses it all):
        // later ones (`sla` in a path) take none of the hits counted per line.
        let mut slub_seen = false;
        let hits = hits.filter(|m| !catalog::SLUB_PATTERNS.contains(&m.pattern().as_usize()) || !std::mem::replace(&mut slub_seen, true));
        for m in hits.take(MAX_ERRNO_HITS_PER_LINE) {
            let p = m.pattern().as_usize();
            if catalog::SLUB_PATTERNS.contains(&p) {
                let body = text::kernel_body(env.msg);
                match catalog::slub_line(t, body) {
                    // Only the kernel's order makes a min-order line part of a record.
                    None | Some(SlubLine::MinOrder) => continue,
                    Some(kind) => {
                        let inc = self.build(l, t, &env, IncidentKind::SlabAllocFailed, None, None);
                        let mut rec = PendingSlab::new(kind);
                        if kind == SlubLine::Suppressed {
                            rec.suppressed = Some(inc);
                        } else {
                            rec.record = Some(inc);
                        }
                        if kind == SlubLine::Cache {
                            rec.take_cache(body);
                        }
                        self.pending = Some(rec);
                        return;
                    }
                }
            }
            if p == catalog::INOTIFY_PATTERN {
                if catalog::inotify_limit(t, m.start()) {
                    out.push(self.build(l, t, &env, IncidentKind::InotifyExhausted, None, None));
                    return;
                }
                continue;
            }
            let Some((errno, head, last)) = catalog::errno_of_pattern(p) else { continue };
            let Some(s) = m.start().checked_sub(head.len()) else { continue };
            if !t[s..m.start()].eq_ignore_ascii_case(head) {
                continue;
            }
            let Some(e_end) = catalog::errno_text_end(t, m.end(), last) else { continue };
            let (kind, path) = match catalog::classify(t, s, e_end, errno) {
                Signature::MemcgCreate(path) => (IncidentKind::MemcgCreateFailed, path),
                Signature::InotifyCgroup(path) => (IncidentKind::InotifyExhausted, Some(path)),
                Signature::NotMemcg => continue,
            };
            out.push(self.build(l, t, &env, kind, Some(errno), path));
            return;
        }
    }

    /// A line read past the end of this parser's part of a source (see
    /// [`resume_after`](Self::resume_after)), offered while [`pending`](Self::pending): it is
    /// taken (true) when it continues the pending SLUB record; otherwise the record is
    /// complete (pushed to `out`) and the line is left alone (false), for the parser of the
    /// next part.
    pub fn feed_continuation(&mut self, l: &LogLine<'_>, out: &mut Vec<Incident>) -> bool {
        if self.pending.is_none() {
            return false;
        }
        if self.absorb_continuation(l, trim_newlines(l.text)) {
            return true;
        }
        self.flush_pending(out);
        false
    }

    /// This parser reads a source from the middle: `before` is the text right before its
    /// first line (the end of the part before, whose last lines are whole). The parser of
    /// that part completes a SLUB record that its last lines belong to (with
    /// [`feed_continuation`](Self::feed_continuation)): the record's next lines are taken
    /// here without an incident, so that a part boundary reports nothing twice.
    pub fn resume_after(&mut self, before: &[u8]) {
        let before = trim_newlines(before);
        self.pending = None;
        // The last line that decides: min-order lines leave a record as it was.
        for line in before.rsplit(|c| *c == b'\n').take(8) {
            let t = trim_newlines(line);
            match catalog::slub_line(t, text::kernel_body(text::envelope(t).msg)) {
                Some(SlubLine::MinOrder) => continue,
                Some(last) => self.pending = Some(PendingSlab { silent: true, ..PendingSlab::new(last) }),
                None => {}
            }
            return;
        }
    }

    /// End of input: pushes a held SLUB incident.
    pub fn finish(&mut self, out: &mut Vec<Incident>) {
        self.flush_pending(out);
    }

    fn flush_pending(&mut self, out: &mut Vec<Incident>) {
        let Some(p) = self.pending.take() else { return };
        // A root cache (no "(id:cgroup)") is global slab pressure, not a memcg's: its record
        // and the rate-limit line of the same call stay out.
        if p.silent || (p.cache_seen && !p.memcg_cache) {
            return;
        }
        out.extend(p.suppressed);
        out.extend(p.record);
    }

    /// Take `t` into the pending SLUB record when it continues it.
    fn absorb_continuation(&mut self, l: &LogLine<'_>, t: &[u8]) -> bool {
        let Some(last) = self.pending.as_ref().map(|p| p.last) else { return false };
        let env = text::envelope(t);
        let body = text::kernel_body(env.msg);
        let Some(kind) = catalog::slub_line(t, body) else {
            // kmsg dictionary lines (" SUBSYSTEM=...") and journald follow-ups belong to the
            // record, unless they carry a signature of their own.
            return l.meta.continuation && !self.prefilter.is_match(t);
        };
        if kind == SlubLine::MinOrder {
            // Taken into any record, which it leaves as it was (it carries no literal of its
            // own, so it is never seen outside one).
            if let Some(rec) = self.pending.as_mut().filter(|p| !p.silent).and_then(|p| p.record.as_mut()) {
                append_raw(&mut rec.raw, t);
            }
            return true;
        }
        if !catalog::continues(last, kind) {
            return false;
        }
        let silent = self.pending.as_ref().is_some_and(|p| p.silent);
        let first = (!silent && self.pending.as_ref().is_some_and(|p| p.record.is_none()))
            .then(|| self.build(l, t, &env, IncidentKind::SlabAllocFailed, None, None));
        let Some(p) = self.pending.as_mut() else { return false };
        p.last = kind;
        if !silent {
            match (first, p.record.as_mut()) {
                (Some(inc), _) => p.record = Some(inc),
                (None, Some(rec)) => append_raw(&mut rec.raw, t),
                (None, None) => {}
            }
        }
        if kind == SlubLine::Cache {
            p.take_cache(body);
        }
        true
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
        // User space writing to /dev/kmsg puts its tag first ("systemd[1]: ...").
        let tag = env.tag.or_else(|| matches!(l.meta.origin, Origin::Kmsg { facility } if facility != 0).then(|| text::leading_tag(env.msg)).flatten());
        let (trusted, origin) = match trust::judge(l.meta, env, t) {
            Ok(o) => (true, o),
            Err(why) => (false, why),
        };
        let component = if kernel || l.meta.kernel {
            "kernel".to_string()
        } else {
            tag
                .and_then(catalog::component_of_name)
                .or_else(|| l.meta.unit.as_deref().and_then(|u| catalog::component_of_name(u.as_bytes())))
                .or_else(|| catalog::component_of_text(t, msg, klog))
                .map(str::to_string)
                .or_else(|| tag.map(lossy))
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
            trusted,
            origin,
        }
    }
}

/// `t` without the line ends a reader may leave on it.
fn trim_newlines(mut t: &[u8]) -> &[u8] {
    while let Some((&c, rest)) = t.split_last() {
        if c == b'\n' || c == b'\r' {
            t = rest;
        } else {
            break;
        }
    }
    t
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

/// Distinct reasons of untrusted incidents kept in a summary (their text may come from the
/// lines, so they are bounded).
pub const MAX_UNTRUSTED_REASONS: usize = 16;

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
    /// Incidents of untrusted lines (counted above too): never evidence for `check`.
    pub untrusted: u64,
    /// Why they are not trusted, with how many (at most [`MAX_UNTRUSTED_REASONS`] reasons;
    /// the rest under "other").
    pub untrusted_reasons: BTreeMap<String, u64>,
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
    /// The kernel of the node the logs come from, when known.
    #[serde(skip)]
    node: Option<KernelEra>,
}

/// Kernel builds that answer alike what mkdir of a memory cgroup returns when the memcg ID
/// space is full (facts §1, §1a). The answer is not written here: [`BuildFamily::era`] asks
/// the era model ([`KernelEra`]) about the family's sample releases.
#[derive(Debug)]
pub struct BuildFamily {
    /// Its name in a list: "el7 3.10.0-514 and -693".
    pub name: &'static str,
    /// How it keeps IDs, after the name in parentheses: "css_id".
    pub scheme: &'static str,
    /// After a node's release: "el7, css_id".
    pub node_label: &'static str,
    /// Releases of the family; the era model must answer all of them alike (tested), and
    /// the first is the one asked.
    pub samples: &'static [&'static str],
    /// The (major, minor) versions of its releases, both ends included.
    pub versions: ((u32, u32), (u32, u32)),
    /// When the era model gives the family an alternative errno: when it is returned.
    pub alternative_when: Option<&'static str>,
}

/// Every build family, oldest first.
pub const BUILD_FAMILIES: [BuildFamily; 9] = [
    BuildFamily { name: "3.10 vanilla", scheme: "css_id", node_label: "3.10 vanilla, css_id", samples: &["3.10.108", "3.10.50"], versions: ((3, 10), (3, 10)), alternative_when: None },
    BuildFamily {
        name: "el7 3.10.0-514 and -693",
        scheme: "css_id",
        node_label: "el7, css_id",
        samples: &["3.10.0-693.el7.x86_64", "3.10.0-514.26.2.el7.x86_64", "3.10.0-693.21.1.el7.x86_64"],
        versions: ((3, 10), (3, 10)),
        alternative_when: None,
    },
    BuildFamily {
        name: "el7 3.10.0-862 and later",
        scheme: "862, 957, 1062, 1127, 1160: private mem_cgroup_idr",
        node_label: "el7 862+, private mem_cgroup_idr",
        samples: &["3.10.0-1160.el7.x86_64", "3.10.0-862.el7.x86_64", "3.10.0-957.27.2.el7.x86_64", "3.10.0-1062.18.1.el7.x86_64", "3.10.0-1127.el7.x86_64"],
        versions: ((3, 10), (3, 10)),
        alternative_when: Some("when the separate kmem ID space (kmem_limited_groups, 65535 kmem-active memcgs) runs out first"),
    },
    BuildFamily {
        name: "4.0-4.4.17, 4.5 and 4.6",
        scheme: "css->id",
        node_label: "4.0-4.6 without the 73f576c04b94 backport, css->id",
        samples: &["4.4.17", "4.0.9", "4.4.0-31-generic", "4.5.7", "4.6.7"],
        versions: ((4, 0), (4, 6)),
        alternative_when: None,
    },
    BuildFamily {
        name: "4.4.18+",
        scheme: "stable backport of 73f576c04b94; Ubuntu xenial 4.4.0-37+",
        node_label: "4.4.18+, IDs released at offline",
        samples: &["4.4.131", "4.4.18", "4.4.0-37-generic", "4.4.0-210-generic"],
        versions: ((4, 4), (4, 4)),
        alternative_when: None,
    },
    BuildFamily {
        name: "4.7-5.4.40",
        scheme: "",
        node_label: "4.7-5.4.40, IDs released at offline",
        samples: &["4.9.337", "4.7.10", "4.14.336", "4.20.17", "5.4.40", "5.5.19", "5.6.12"],
        versions: ((4, 7), (5, 6)),
        alternative_when: None,
    },
    BuildFamily {
        name: "4.19",
        scheme: "",
        node_label: "4.19, IDs released at offline",
        samples: &["4.19.300", "4.19.123"],
        versions: ((4, 19), (4, 19)),
        alternative_when: Some("if it carries a backport of 11d6761218d1 (4.19.123 does not)"),
    },
    BuildFamily { name: "5.4.41-6.11", scheme: "", node_label: "5.4.41-6.11", samples: &["5.10.200", "5.4.41", "6.1.100", "6.11.11"], versions: ((5, 4), (6, 11)), alternative_when: None },
    BuildFamily { name: "6.12+", scheme: "", node_label: "6.12+", samples: &["6.12.10", "6.18.2"], versions: ((6, 12), (u32::MAX, u32::MAX)), alternative_when: None },
];

impl BuildFamily {
    /// The era model's answer for this family.
    pub fn era(&self) -> KernelEra {
        KernelEra::from_release_str(self.samples[0])
    }

    /// "name (scheme)".
    pub fn label(&self) -> String {
        if self.scheme.is_empty() { self.name.to_string() } else { format!("{} ({})", self.name, self.scheme) }
    }

    /// The family of a node's kernel: the one whose versions hold the release and whose
    /// era answer is the node's (None for builds outside the facts, e.g. el7 older than 514).
    pub fn of(era: &KernelEra) -> Option<&'static BuildFamily> {
        let v = (era.release.major, era.release.minor);
        BUILD_FAMILIES.iter().find(|f| {
            let fe = f.era();
            f.versions.0 <= v
                && v <= f.versions.1
                && fe.id == era.id
                && fe.mkdir_errno_when_full == era.mkdir_errno_when_full
                && fe.mkdir_errno_alternatives == era.mkdir_errno_alternatives
        })
    }
}

/// The build families whose mkdir returns `e` when the memcg ID space is full, and those
/// that return it only as their alternative (facts §1, §1a; from the era model).
pub fn families_returning(e: Errno) -> (Vec<&'static BuildFamily>, Vec<&'static BuildFamily>) {
    let mut main = Vec::new();
    let mut alt = Vec::new();
    for f in &BUILD_FAMILIES {
        let era = f.era();
        if era.mkdir_errno_when_full == e {
            main.push(f);
        } else if era.mkdir_errno_alternatives.contains(&e) {
            alt.push(f);
        }
    }
    (main, alt)
}

/// Families that release memcg IDs at offline and return ENOMEM when they run out: there
/// ENOSPC is not the memcg ID leak (facts §1a, the 4.4.131 field reports).
fn families_where_enospc_is_unexplained() -> Vec<&'static BuildFamily> {
    BUILD_FAMILIES
        .iter()
        .filter(|f| {
            let era = f.era();
            !era.dying_hold_ids && era.mkdir_errno_when_full == Errno::ENOMEM && !era.mkdir_errno_possible(Errno::ENOSPC)
        })
        .collect()
}

/// Likely causes of ENOSPC from mkdir where IDs are released at offline (facts §1a).
const ENOSPC_OTHER_CAUSES: &str = "inotify watches on cgroup directories, live memcgs, or the kmem ID space with ~65k live kmem-active memcgs";

/// "a", "a and b", "a, b, and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

/// What an errno of a failed memcg mkdir says about the kernel, per build (no node known).
pub fn era_hint(e: Errno) -> String {
    let (main, alt) = families_returning(e);
    let names: Vec<String> = main.iter().map(|f| f.label()).collect();
    if e == Errno::EBUSY && alt.is_empty() {
        return format!("EBUSY: only {} kernels return EBUSY when the memcg ID space is full", join_and(&names));
    }
    let mut h = format!("{}: mkdir returns it when the memcg ID space is full on {}", e.as_str(), join_and(&names));
    for f in alt {
        h.push_str(&format!("; {} also {}", f.label(), f.alternative_when.unwrap_or("in some builds")));
    }
    if e == Errno::ENOSPC {
        let un: Vec<String> = families_where_enospc_is_unexplained().iter().map(|f| f.name.to_string()).collect();
        if !un.is_empty() {
            h.push_str(&format!(
                "; on {} (e.g. 4.4.131), which release IDs at offline and return ENOMEM when they run out, ENOSPC is not explained by the memcg ID leak: likely {ENOSPC_OTHER_CAUSES}",
                join_and(&un)
            ));
        }
    }
    h
}

/// What an errno of a failed memcg mkdir means on the node whose kernel is `era`.
pub fn node_hint(era: &KernelEra, e: Errno) -> String {
    let family = BuildFamily::of(era);
    let label = family.map_or_else(|| format!("era {}", era.id.as_str()), |f| f.node_label.to_string());
    let head = format!("this node runs {} ({label})", era.release.raw);
    let full = era.mkdir_errno_when_full.as_str();
    if era.mkdir_errno_when_full == e {
        return format!("{head}: {} is its memcg-ID-exhaustion errno", e.as_str());
    }
    if era.mkdir_errno_alternatives.contains(&e) {
        return match family.and_then(|f| f.alternative_when) {
            Some(when) => format!("{head}: it returns {full} when the memcg IDs run out, and {} {when}", e.as_str()),
            None => format!("{head}: it returns {full} or {} when the memcg ID space is full (the build is not pinned down)", e.as_str()),
        };
    }
    if e == Errno::ENOSPC && !era.dying_hold_ids && era.mkdir_errno_when_full == Errno::ENOMEM {
        return format!(
            "{head}: it releases memcg IDs at offline and returns ENOMEM when they run out, so ENOSPC is not explained by the memcg ID leak: likely {ENOSPC_OTHER_CAUSES}"
        );
    }
    format!(
        "{head}: it returns {full} when the memcg ID space is full, not {}: these lines come from another kernel (before an upgrade, or another node) or have another cause{}",
        e.as_str(),
        if e == Errno::ENOMEM { " (ENOMEM: kernel memory pressure)" } else { "" }
    )
}

impl IncidentSummary {
    /// A summary of the logs of the node whose kernel is `era`: besides what each errno
    /// means per build, the hints say what it means on this kernel.
    pub fn for_node(era: KernelEra) -> Self {
        IncidentSummary { node: Some(era), ..IncidentSummary::default() }
    }

    pub fn add(&mut self, i: &Incident) {
        self.total += 1;
        if !i.trusted {
            self.untrusted += 1;
            let key = if self.untrusted_reasons.len() < MAX_UNTRUSTED_REASONS || self.untrusted_reasons.contains_key(&i.origin) { i.origin.clone() } else { "other".to_string() };
            *self.untrusted_reasons.entry(key).or_default() += 1;
        }
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
                if let Some(era) = &self.node {
                    h.push(node_hint(era, e));
                }
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
                vec!["inotify_exhausted: cAdvisor (and systemd) watch every cgroup directory; many (leaked) cgroups use up fs.inotify.max_user_watches (inotify_init: too many open files is fs.inotify.max_user_instances)".to_string()]
            }
            _ => vec![],
        };
        self.era_hints.extend(new_hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_families_agree_with_the_era_model() {
        let mut eras_covered = Vec::new();
        for f in &BUILD_FAMILIES {
            let first = f.era();
            assert!(first.exact, "{}: {:?}", f.name, first.notes);
            eras_covered.push(first.id);
            assert_eq!(f.alternative_when.is_some(), !first.mkdir_errno_alternatives.is_empty(), "{}", f.name);
            for rel in f.samples {
                let era = KernelEra::from_release_str(rel);
                assert_eq!(
                    (era.id, era.mkdir_errno_when_full, &era.mkdir_errno_alternatives, era.dying_hold_ids, era.exact),
                    (first.id, first.mkdir_errno_when_full, &first.mkdir_errno_alternatives, first.dying_hold_ids, true),
                    "{rel} answers unlike the rest of {}",
                    f.name
                );
                assert_eq!(BuildFamily::of(&era).map(|x| x.name), Some(f.name), "{rel}");
            }
        }
        for id in crate::era::EraId::ALL {
            assert!(eras_covered.contains(&id), "no build family of era {}", id.as_str());
        }
    }

    /// Facts §1 and §1a, written out per build: what mkdir returns when the IDs run out.
    #[test]
    fn errno_per_build_as_the_facts_state() {
        use Errno::*;
        let cases: [(&str, Errno, &[Errno], &str); 20] = [
            ("3.10.108", ENOSPC, &[], "3.10 vanilla"),
            ("3.10.0-514.el7.x86_64", ENOSPC, &[], "el7 3.10.0-514 and -693"),
            ("3.10.0-693.el7.x86_64", ENOSPC, &[], "el7 3.10.0-514 and -693"),
            ("3.10.0-862.14.4.el7.x86_64", ENOMEM, &[ENOSPC], "el7 3.10.0-862 and later"),
            ("3.10.0-957.el7.x86_64", ENOMEM, &[ENOSPC], "el7 3.10.0-862 and later"),
            ("3.10.0-1062.el7.x86_64", ENOMEM, &[ENOSPC], "el7 3.10.0-862 and later"),
            ("3.10.0-1127.19.1.el7.x86_64", ENOMEM, &[ENOSPC], "el7 3.10.0-862 and later"),
            ("3.10.0-1160.118.1.el7.x86_64", ENOMEM, &[ENOSPC], "el7 3.10.0-862 and later"),
            ("4.2.8", ENOSPC, &[], "4.0-4.4.17, 4.5 and 4.6"),
            ("4.4.17", ENOSPC, &[], "4.0-4.4.17, 4.5 and 4.6"),
            ("4.6.7", ENOSPC, &[], "4.0-4.4.17, 4.5 and 4.6"),
            ("4.4.18", ENOMEM, &[], "4.4.18+"),
            ("4.4.131", ENOMEM, &[], "4.4.18+"),
            ("4.4.0-37-generic", ENOMEM, &[], "4.4.18+"),
            ("4.9.337", ENOMEM, &[], "4.7-5.4.40"),
            ("5.4.40", ENOMEM, &[], "4.7-5.4.40"),
            ("4.19.90", ENOMEM, &[ENOSPC], "4.19"),
            ("5.4.41", ENOSPC, &[], "5.4.41-6.11"),
            ("6.11.11", ENOSPC, &[], "5.4.41-6.11"),
            ("6.12.10", EBUSY, &[], "6.12+"),
        ];
        for (rel, errno, alts, family) in cases {
            let era = KernelEra::from_release_str(rel);
            assert_eq!((era.mkdir_errno_when_full, era.mkdir_errno_alternatives.as_slice()), (errno, alts), "{rel}");
            let f = BuildFamily::of(&era).unwrap_or_else(|| panic!("{rel}: no family"));
            assert_eq!(f.name, family, "{rel}");
            let (main, alt) = families_returning(errno);
            assert!(main.iter().any(|x| x.name == family), "{rel}");
            for a in alts {
                assert!(families_returning(*a).1.iter().any(|x| x.name == family), "{rel} {a:?}");
            }
            assert!(!alt.iter().any(|x| x.name == family));
        }
    }

    #[test]
    fn hints_per_build() {
        assert_eq!(
            era_hint(Errno::ENOSPC),
            "ENOSPC: mkdir returns it when the memcg ID space is full on 3.10 vanilla (css_id), el7 3.10.0-514 and -693 (css_id), \
             4.0-4.4.17, 4.5 and 4.6 (css->id), and 5.4.41-6.11; el7 3.10.0-862 and later (862, 957, 1062, 1127, 1160: private \
             mem_cgroup_idr) also when the separate kmem ID space (kmem_limited_groups, 65535 kmem-active memcgs) runs out first; \
             4.19 also if it carries a backport of 11d6761218d1 (4.19.123 does not); on 4.4.18+ and 4.7-5.4.40 (e.g. 4.4.131), which release IDs at offline and return ENOMEM when they run out, ENOSPC is \
             not explained by the memcg ID leak: likely inotify watches on cgroup directories, live memcgs, or the kmem ID space \
             with ~65k live kmem-active memcgs"
        );
        assert_eq!(
            era_hint(Errno::ENOMEM),
            "ENOMEM: mkdir returns it when the memcg ID space is full on el7 3.10.0-862 and later (862, 957, 1062, 1127, 1160: \
             private mem_cgroup_idr), 4.4.18+ (stable backport of 73f576c04b94; Ubuntu xenial 4.4.0-37+), 4.7-5.4.40, and 4.19"
        );
        assert_eq!(era_hint(Errno::EBUSY), "EBUSY: only 6.12+ kernels return EBUSY when the memcg ID space is full");
        // Not the 3.10 vanilla wording on el7 514/693 any more, nor "3.10-el7" for ENOMEM alone.
        assert!(!era_hint(Errno::ENOMEM).contains("el7 3.10.0-514"));
    }

    #[test]
    fn node_hints_say_what_this_kernel_returns() {
        let node = |rel: &str, e: Errno| node_hint(&KernelEra::from_release_str(rel), e);
        assert_eq!(
            node("3.10.0-693.el7.x86_64", Errno::ENOSPC),
            "this node runs 3.10.0-693.el7.x86_64 (el7, css_id): ENOSPC is its memcg-ID-exhaustion errno"
        );
        assert_eq!(
            node("3.10.0-1160.el7.x86_64", Errno::ENOMEM),
            "this node runs 3.10.0-1160.el7.x86_64 (el7 862+, private mem_cgroup_idr): ENOMEM is its memcg-ID-exhaustion errno"
        );
        assert_eq!(
            node("3.10.0-1160.el7.x86_64", Errno::ENOSPC),
            "this node runs 3.10.0-1160.el7.x86_64 (el7 862+, private mem_cgroup_idr): it returns ENOMEM when the memcg IDs run \
             out, and ENOSPC when the separate kmem ID space (kmem_limited_groups, 65535 kmem-active memcgs) runs out first"
        );
        assert_eq!(
            node("4.4.131", Errno::ENOSPC),
            "this node runs 4.4.131 (4.4.18+, IDs released at offline): it releases memcg IDs at offline and returns ENOMEM when \
             they run out, so ENOSPC is not explained by the memcg ID leak: likely inotify watches on cgroup directories, live \
             memcgs, or the kmem ID space with ~65k live kmem-active memcgs"
        );
        assert!(node("3.10.0-693.el7.x86_64", Errno::ENOMEM).contains("returns ENOSPC when the memcg ID space is full, not ENOMEM"));
        assert!(node("6.18.44-fc-v669", Errno::ENOSPC).starts_with("this node runs 6.18.44-fc-v669 (6.12+): it returns EBUSY"));
        // A build outside the families: the era's name, and the era model's doubt.
        let old = node("3.10.0-327.el7.x86_64", Errno::ENOMEM);
        assert!(old.starts_with("this node runs 3.10.0-327.el7.x86_64 (era 3.10-el7): it returns ENOSPC or ENOMEM"), "{old}");
    }

    #[test]
    fn a_summary_for_a_node_adds_its_hint() {
        let mut s = IncidentSummary::for_node(KernelEra::from_release_str("3.10.0-693.el7.x86_64"));
        s.add(&inc(IncidentKind::MemcgCreateFailed, Some(Errno::ENOSPC), None, None));
        s.add(&inc(IncidentKind::MemcgCreateFailed, Some(Errno::ENOSPC), None, None));
        assert_eq!(s.era_hints.len(), 2, "{:?}", s.era_hints);
        assert!(s.era_hints[0].starts_with("ENOSPC: mkdir returns it"));
        assert!(s.era_hints[1].starts_with("this node runs 3.10.0-693.el7.x86_64 (el7, css_id): ENOSPC is its"));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("node").is_none());
        assert!(json["era_hints"].is_array());
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
            trusted: true,
            origin: "syslog tag kubelet".into(),
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

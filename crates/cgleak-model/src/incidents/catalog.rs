//! The signature catalog: which log lines say that a memory cgroup could not be created
//! (or that the slab or inotify side effects of too many memcgs were hit), and which
//! look alike but are not.
//!
//! # The literals (prefilter)
//! Every signature contains one of these, searched with one SIMD (Teddy) automaton:
//! - `eft on devic` / `llocate memor` / `resource bus`: the tails of the strerror text
//!   of ENOSPC ("no space left on device"), ENOMEM ("cannot allocate memory") and EBUSY
//!   ("device or resource busy") but their last letter. Tails, because their first bytes
//!   are rare in ordinary logs (Teddy matches on the first three bytes: "no space" would
//!   stop at every "namespace"), and because the head's case differs: Go prints "no space
//!   left on device", libc (mkdir(1), lxc, systemd, crun) "No space left on device". The
//!   head is then checked, ignoring ASCII case. Without the last letter, because log
//!   shippers and line limits cut messages: `... no space left on devic` at the end of a
//!   line (or before `...` / `…`) is the same errno.
//! - `SLUB`, `, object size`, `slab`: the kernel's slab failure record (mm/slub.c
//!   slab_out_of_memory): its header `SLUB: Unable to allocate memory on node`, its
//!   continuation lines `  cache: <name>, object size: ...` and `  node <n>: slabs: ...`,
//!   and the rate limiter's `slab_out_of_memory: N callbacks suppressed`. Each of them is
//!   looked for on its own, because the header can be outside the lines read (a window, a
//!   rotated file) or dropped by a rate limit.
//! - `inotify`: inotify limits that name no cgroup path (`inotify_init: too many open
//!   files`, `tail: inotify resources exhausted`).
//!
//! Colons: some pipelines (localized or CJK-normalized) write the full-width colon U+FF1A
//! `：` for `:`. Wherever a colon separates a function, a path or a field from what follows
//! (`<path>：no space left on device`, `SLUB：Unable`, `cache：`, `inotify_init：`), either
//! colon is accepted, with or without a space after it.
//!
//! # memcg_create_failed: errno text after the creation of a memory cgroup
//! The errno must end a clause `<verb> <path>: <errno>` (Go `os.PathError`, mkdir(1),
//! lxc, systemd, crun all print this shape) or lxc's `<Errno> - failed to create directory '<path>'`.
//! - verb `mkdir`, `mkdirat`: Go's PathError from runc/libcontainer, kubelet, dockerd,
//!   containerd, cri-o, garden, nomad (they all wrap runc's or their own mkdir).
//! - verb `cannot create directory` (mkdir(1)), `failed to create directory` / `Failed to
//!   create <path>` (lxc), `Failed to create cgroup <path>` (systemd), `creating cgroup
//!   directory` (crun): the same mkdir in other tools' words.
//! - the path must be in a hierarchy that has the memory controller, because only the
//!   memory controller allocates an ID that runs out (facts §1):
//!   - `/sys/fs/cgroup/<controllers>/...` (v1): only when `<controllers>` includes
//!     `memory` (`memory`, `cpu,memory`, ...). cpuset, devices, blkio, pids, ... are other
//!     controllers' failures and are not counted.
//!   - `/sys/fs/cgroup/unified/...`: the v2 tree of a hybrid setup has no controllers: no.
//!   - `/sys/fs/cgroup/<not a controller>/...` (v2, e.g. `kubepods.slice`): every cgroup
//!     gets a memcg when memory is enabled (the kubelet's tree always has it): yes.
//!   - a path outside any cgroup mount counts only when it is a cgroup path relative to
//!     the hierarchy (systemd's `/kubepods.slice/...`): it mentions `kubepods`,
//!     `/memory/`, or a `.slice` / `.scope` segment. `/var/lib/docker/...` is a full disk.
//! - any errno of the three: ENOSPC, ENOMEM and EBUSY are each what some era's mkdir
//!   returns when the ID space is full (facts §1); ENOMEM can also be real kernel memory
//!   pressure, but mkdir of a memcg failing is the incident either way.
//! - with no path at all, kubelet's `failed to create container for [kubepods ...] : <errno>`
//!   or `... cgroups exist and are correctly applied ... : <errno>` still counts: kubelet
//!   only says this when creating the pod's cgroup failed.
//!
//! # Not memcg exhaustion (near misses), each rejected by the verb or the path
//! - `rmdir ...: device or resource busy`: rmdir fails with EBUSY while tasks or children
//!   remain (facts §5); lxc's `Device or resource busy - cgroup_rmdir: failed to delete`.
//! - `write .../memory.limit_in_bytes: device or resource busy` (and `memory.max`,
//!   `failed to write ...`): a limit below current usage, not creation.
//! - `write .../cpuset/.../cgroup.procs: no space left on device`, systemd `Failed to set
//!   'cpuset.cpus' ...: No space left on device`: a cpuset with no cpus/mems. Writes to
//!   cgroup.procs never fail for want of a memcg ID (the ID is taken at mkdir).
//! - `write /var/lib/docker/...`, `mkdir /var/lib/...`, `mounting ... caused "no space
//!   left on device"`: a full disk or tmpfs.
//! - `fork/exec ...: cannot allocate memory`, `fork: Cannot allocate memory`, `open ...:
//!   cannot allocate memory`: process or memory pressure, not a cgroup mkdir.
//! - OOM-killer lines (`Memory cgroup out of memory`, `oom-kill:`) carry no errno text.
//! - systemd `Failed to start ...` unit errors carry no `<verb> <path>: <errno>` clause.
//!
//! # inotify_exhausted
//! - `inotify_add_watch <path>: no space left on device` where `<path>` is under a cgroup
//!   mount (any controller): cAdvisor (kubelet) watches every cgroup directory, so leaking
//!   cgroups use up `fs.inotify.max_user_watches`. Only ENOSPC (the watch limit); inotify on
//!   other paths (`/var/log/...`, fluent-bit, pyinotify) is not about cgroups.
//! - systemd (src/core/cgroup.c): `Failed to add [control |memory ]inotify watch descriptor
//!   for control group <path>: No space left on device`, `<path>` relative to the hierarchy
//!   (`/kubepods.slice/...`): the same watch limit, hit on a cgroup directory.
//! - `inotify_init: too many open files` (Go's syscall error from cAdvisor, in the kubelet
//!   or standalone): the kubelet cannot watch the cgroup tree at all
//!   (`fs.inotify.max_user_instances`). Its errno is EMFILE, which is none of the three: the
//!   incident's errno is null. fsnotify's bare `too many open files`, tail's `inotify cannot
//!   be used, reverting to polling` and any other `too many open files` are not counted.
//! - coreutils `tail: inotify resources exhausted` (tail's words for inotify_add_watch
//!   ENOSPC): the node's watch limit is used up; it names no path, and on a Kubernetes
//!   node the watches are mostly cAdvisor's on cgroup directories (kubernetes#10421). No
//!   errno is printed: null.
//!
//! # slab_alloc_failed
//! `SLUB: Unable to allocate memory on node <n>` (either the 3.10 `(gfp=0x20)` or the newer
//! `, gfp=0x...(...)` wording), joined with the kernel's continuation lines
//! `  cache: <name>(<id>:<cgroup>), object size: ...`, `  <name> debugging increased min
//! order ...` and `  node <n>: slabs: ...`, in that order (a line out of that order starts
//! a new record). A per-memcg cache name (`kmalloc-1024(1793:<cgroup>)`) means kmem
//! accounting of that memcg failed (per-memcg caches exist on 3.10 .. 5.8, facts §2); a root
//! cache name (`cache: xfrm_dst_cache, object size`) is global slab pressure and the record
//! is dropped. With no cache line at all (the source lost it), what is there is kept.
//! - A record whose header was not read (the lines before a `--since` window or a rotated
//!   file, or a header dropped by journald's or rsyslog's rate limit) starts at its first
//!   line read: a lone `cache:` line (kept only for a per-memcg cache) or a lone `node <n>:
//!   slabs:` line (cache unknown: kept, like a header whose cache line was lost).
//! - The rate limiter's line before a record, `slab_out_of_memory: N callbacks suppressed`
//!   (4.x+ slub_oom_rs), `___slab_alloc: N callbacks suppressed` / `__slab_alloc: ...`
//!   (printk_ratelimit in the caller, 3.10 .. 4.x), says N more records were not printed.
//!   It is an incident of its own, judged by the record printed right after it (the same
//!   call): kept with a per-memcg record, dropped with a root cache's (the same limiter
//!   also hides global pressure: GFP_ATOMIC skbuff or iommu caches), kept when no record
//!   follows in the lines read. Other functions' `callbacks suppressed` are not counted.

use memchr::memmem;

use crate::era::Errno;

/// Literals of the prefilter, in automaton pattern order (measured with the first four:
/// 2.2 GB/s line by line and 13 GB/s over a buffer of kubelet and containerd lines; the
/// whole strerror texts as literals gave 0.55 and 0.7 GB/s). Seven cost what four did
/// (10.7 GB/s either way on one core of the 2-CPU 6.18 host, measured for issue 12): Teddy
/// gives each literal a bucket of its own (8) and fingerprints the first bytes of each, as
/// many as the shortest literal has, at most 4. The SLUB literals are 3 bytes (`SLU` of
/// `SLUB`, `sla` of `slab`): with 3-byte fingerprints the search runs 27% fewer
/// instructions than with 4 (callgrind, 64 MiB of the logs_vs_rg file, 3 December), and a
/// line they match is only a candidate: [`slub_line`] parses it whole.
/// Public for the logs_vs_rg benchmark, which gives ripgrep these same literals.
pub const PREFILTER: [&str; 7] = ["eft on devic", "llocate memor", "resource bus", "SLU", ", object size", "sla", "inotify"];

/// Pattern indexes of the SLUB record's literals in [`PREFILTER`]: header, `cache:` line,
/// `node N: slabs:` and rate-limit lines.
pub(crate) const SLUB_PATTERNS: [usize; 3] = [3, 4, 5];

/// Pattern index of `inotify` in [`PREFILTER`].
pub(crate) const INOTIFY_PATTERN: usize = 6;

/// The errno of a prefilter pattern, the head of its strerror text that must stand right
/// before the literal (compared ignoring ASCII case), and the last letter after it.
pub(crate) fn errno_of_pattern(p: usize) -> Option<(Errno, &'static [u8], u8)> {
    match p {
        0 => Some((Errno::ENOSPC, b"no space l", b'e')),
        1 => Some((Errno::ENOMEM, b"cannot a", b'y')),
        2 => Some((Errno::EBUSY, b"device or ", b'y')),
        _ => None,
    }
}

/// Where the errno text whose literal ends at `lit_end` ends: after its last letter, or at
/// `lit_end` when the line was cut there (nothing but blanks, quotes or a `...` / `…` marker
/// after it). None: another word ("devices", "memorial").
pub(crate) fn errno_text_end(t: &[u8], lit_end: usize, last: u8) -> Option<usize> {
    let rest = &t[lit_end..];
    match rest.first() {
        Some(c) if c.eq_ignore_ascii_case(&last) => Some(lit_end + 1),
        _ => {
            let r = rest.trim_ascii_start();
            let r = r.strip_prefix(b"...").or_else(|| r.strip_prefix("…".as_bytes())).unwrap_or(r);
            r.iter().all(|c| c.is_ascii_whitespace() || matches!(c, b'"' | b'\\' | b'\'' | b'`')).then_some(lit_end)
        }
    }
}

/// Bytes of the colon that ends `t` with the blanks after it: `": "`, `":"`, `"："`, `"： "`.
fn colon_before(t: &[u8]) -> Option<usize> {
    let blanks = t.len() - t.trim_ascii_end().len();
    let head = &t[..t.len() - blanks];
    if head.ends_with(b":") {
        Some(1 + blanks)
    } else if head.ends_with(FULLWIDTH_COLON) {
        Some(FULLWIDTH_COLON.len() + blanks)
    } else {
        None
    }
}

/// U+FF1A FULLWIDTH COLON in UTF-8.
const FULLWIDTH_COLON: &[u8] = "：".as_bytes();

/// `t` after a leading colon (ASCII or full-width) and the blanks after it.
pub(crate) fn strip_colon(t: &[u8]) -> Option<&[u8]> {
    let r = t.strip_prefix(b":").or_else(|| t.strip_prefix(FULLWIDTH_COLON))?;
    Some(r.trim_ascii_start())
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// What one errno occurrence in a line means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Signature<'a> {
    /// mkdir (or its like) of a memory cgroup failed; the path when printed.
    MemcgCreate(Option<&'a [u8]>),
    /// inotify_add_watch on a cgroup directory hit the watch limit.
    InotifyCgroup(&'a [u8]),
    NotMemcg,
}

/// Upper bound on a path we take as a path: PATH_MAX. Longer tokens are not paths, and the
/// bound keeps the work per errno occurrence constant on lines of any length.
const MAX_PATH: usize = 4096;

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Strip the quotes, backslashes and backticks around a path as printed (`\"/sys/...\"`,
/// `‘/sys/...’`, `'/sys/...'`, `` `/sys/...` ``).
fn unquote(mut p: &[u8]) -> &[u8] {
    loop {
        let before = p.len();
        for q in [&b"\xe2\x80\x98"[..], b"\xe2\x80\x99", b"\"", b"'", b"`", b"\\"] {
            if let Some(r) = p.strip_prefix(q) {
                p = r;
            }
            if let Some(r) = p.strip_suffix(q) {
                p = r;
            }
        }
        if p.len() == before {
            return p;
        }
    }
}

fn ends_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle)
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verb {
    Create,
    Watch,
    WatchCgroup,
    Other,
}

/// The verb before a path: the text before it, quotes and spaces trimmed, compared by suffix.
fn verb_before(text: &[u8], subj_start: usize) -> Verb {
    let from = subj_start.saturating_sub(64);
    let mut pre = &text[from..subj_start];
    while let Some((&c, rest)) = pre.split_last() {
        if is_space(c) || matches!(c, b'"' | b'\\' | b'\'' | b'`') {
            pre = rest;
        } else {
            break;
        }
    }
    // Go os.PathError / syscall ops of a directory creation.
    const CREATE: [&[u8]; 7] = [
        b"mkdir",
        b"mkdirat",
        b"cannot create directory",    // mkdir(1)
        b"failed to create directory", // lxc utils mkdir_p
        b"failed to create",           // lxc cgfsng "Failed to create /sys/fs/cgroup/..."
        b"failed to create cgroup",    // systemd
        b"creating cgroup directory",  // crun
    ];
    if CREATE.iter().any(|v| ends_with_ci(pre, v)) {
        return Verb::Create;
    }
    if ends_with_ci(pre, b"inotify_add_watch") {
        return Verb::Watch;
    }
    // systemd src/core/cgroup.c: "Failed to add [control |memory ]inotify watch descriptor for control group %s: %m".
    if ends_with_ci(pre, b"inotify watch descriptor for control group") {
        return Verb::WatchCgroup;
    }
    Verb::Other
}

const V1_CONTROLLERS: [&[u8]; 16] = [
    b"cpu",
    b"cpuacct",
    b"cpuset",
    b"memory",
    b"blkio",
    b"io",
    b"devices",
    b"freezer",
    b"net_cls",
    b"net_prio",
    b"perf_event",
    b"hugetlb",
    b"pids",
    b"rdma",
    b"misc",
    b"systemd",
];

/// Where a cgroup mount starts in `path`: the index just past `/sys/fs/cgroup/` or `/cgroup/`.
fn cgroup_mount_rest(path: &[u8]) -> Option<usize> {
    if let Some(i) = memmem::find(path, b"/sys/fs/cgroup/") {
        return Some(i + 15);
    }
    if let Some(i) = memmem::find(path, b"/cgroup/") {
        return Some(i + 8);
    }
    None
}

pub(crate) fn is_cgroupfs_path(path: &[u8]) -> bool {
    cgroup_mount_rest(path).is_some() || path.ends_with(b"/sys/fs/cgroup")
}

/// Does creating `path` create a memory cgroup? (rules in the module doc)
pub(crate) fn in_memory_hierarchy(path: &[u8]) -> bool {
    if let Some(rest) = cgroup_mount_rest(path) {
        let tail = &path[rest..];
        let first = &tail[..memchr::memchr(b'/', tail).unwrap_or(tail.len())];
        if first == b"unified" {
            return false;
        }
        let is_controller_list = !first.is_empty()
            && first.split(|c| *c == b',').all(|c| V1_CONTROLLERS.contains(&c) || c.starts_with(b"name="));
        if is_controller_list {
            return first.split(|c| *c == b',').any(|c| c == b"memory");
        }
        // v2: a child of the unified root.
        return !first.is_empty();
    }
    if path.ends_with(b"/sys/fs/cgroup") {
        return false;
    }
    memmem::find(path, b"kubepods").is_some()
        || memmem::find(path, b"/memory/").is_some()
        || path.split(|c| *c == b'/').any(|seg| seg.ends_with(b".slice") || seg.ends_with(b".scope"))
}

/// kubelet's wording for a failed pod cgroup creation, which names no path when the
/// runtime returned only an errno.
fn kubelet_pod_cgroup_context(text: &[u8]) -> bool {
    memmem::find(text, b"failed to create container for [kubepods").is_some()
        || memmem::find(text, b"cgroups exist and are correctly applied").is_some()
}

/// Classify the errno text at `text[e..e_end]`.
pub(crate) fn classify<'a>(text: &'a [u8], e: usize, e_end: usize, errno: Errno) -> Signature<'a> {
    // lxc: "No space left on device - failed to create directory '/sys/fs/cgroup/memory//lxc/x'".
    if let Some(after) = text.get(e_end..).and_then(|t| t.strip_prefix(b" - ")) {
        let window = &after[..after.len().min(256)];
        for verb in [&b"failed to create directory "[..], b"Failed to create "] {
            if let Some(v) = memmem::find(window, verb) {
                let p = &after[v + verb.len()..];
                let tok = &p[..p.iter().position(|c| is_space(*c)).unwrap_or(p.len()).min(MAX_PATH)];
                let path = unquote(tok.strip_suffix(b":").unwrap_or(tok));
                return if memchr::memchr(b'/', path).is_some() && in_memory_hierarchy(path) {
                    Signature::MemcgCreate(Some(path))
                } else {
                    Signature::NotMemcg
                };
            }
        }
        // Anything else after " - " ("Device or resource busy - cgroup_rmdir: failed to
        // delete ...") is judged by the "<verb> <path>: <errno>" form below, like any line.
    }
    // "<verb> <path>: <errno>" (or a full-width colon)
    let Some(sep) = colon_before(&text[e.saturating_sub(8)..e]) else {
        return Signature::NotMemcg;
    };
    let end = e - sep;
    let floor = end.saturating_sub(MAX_PATH);
    let start = text[floor..end].iter().rposition(|c| is_space(*c)).map_or(floor, |i| floor + i + 1);
    if start == floor && floor > 0 {
        // No whitespace within PATH_MAX: not a path.
        return Signature::NotMemcg;
    }
    let subject = unquote(&text[start..end]);
    let has_slash = memchr::memchr(b'/', subject).is_some();
    match verb_before(text, start) {
        Verb::Create if has_slash && in_memory_hierarchy(subject) => Signature::MemcgCreate(Some(subject)),
        Verb::Watch if has_slash && errno == Errno::ENOSPC && is_cgroupfs_path(subject) => {
            Signature::InotifyCgroup(subject)
        }
        // systemd names the cgroup relative to the hierarchy ("/" for the root).
        Verb::WatchCgroup if subject.starts_with(b"/") && errno == Errno::ENOSPC => Signature::InotifyCgroup(subject),
        Verb::Other if subject.is_empty() && kubelet_pod_cgroup_context(text) => Signature::MemcgCreate(None),
        _ => Signature::NotMemcg,
    }
}

// ---------------------------------------------------------------------------------------
// Pod UIDs and container IDs
// ---------------------------------------------------------------------------------------

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// A pod UID at `t[at..]`: 8-4-4-4-12 hex with `-` (cgroupfs) or `_` (systemd slice names)
/// or systemd's escape of `-` in a unit name, `\x2d` (also doubled, `\\x2d`, inside quoted
/// strings), or 32 hex (static pods' config hash). Returned with dashes, and its length in
/// the text.
fn uid_at(t: &[u8], at: usize) -> Option<(String, usize)> {
    let s = t.get(at..)?;
    let boundary = |n: usize| s.get(n).is_none_or(|c| !c.is_ascii_alphanumeric());
    let hex_run = |from: usize, n: usize| s.get(from..from + n).is_some_and(|g| g.iter().all(|c| is_hex(*c)));
    if hex_run(0, 8) {
        let rest = &s[8..];
        let sep: &[u8] = match rest.first() {
            Some(b'-') => b"-",
            Some(b'_') => b"_",
            _ if rest.starts_with(br"\x2d") => br"\x2d",
            _ if rest.starts_with(br"\\x2d") => br"\\x2d",
            _ => b"",
        };
        if !sep.is_empty() {
            let mut uid = String::with_capacity(36);
            let mut pos = 0;
            let mut ok = true;
            for (k, n) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
                if k > 0 {
                    ok &= s.get(pos..).is_some_and(|r| r.starts_with(sep));
                    pos += sep.len();
                    uid.push('-');
                }
                ok &= hex_run(pos, n);
                if !ok {
                    break;
                }
                uid.extend(s[pos..pos + n].iter().map(|c| c.to_ascii_lowercase() as char));
                pos += n;
            }
            if ok && boundary(pos) {
                return Some((uid, pos));
            }
        }
    }
    if s.len() >= 32 && boundary(32) && s[..32].iter().all(|c| is_hex(*c)) {
        return Some((s[..32].iter().map(|c| c.to_ascii_lowercase() as char).collect(), 32));
    }
    None
}

/// `pod<uid>` anywhere in `t` (cgroup paths, kubelet's `[kubepods besteffort pod<uid>]`).
fn pod_prefixed_uid(t: &[u8]) -> Option<String> {
    memmem::find_iter(t, b"pod").take(64).find_map(|i| uid_at(t, i + 3).map(|(u, _)| u))
}

/// The pod UID of a line: from its cgroup path, else from `pod<uid>` anywhere, else from
/// klog / kubelet fields (`podUID=`, `pod_uid=`, `Error syncing pod <uid>`, `name_ns(<uid>)`).
pub(crate) fn pod_uid(path: Option<&[u8]>, text: &[u8]) -> Option<String> {
    if let Some(u) = path.and_then(pod_prefixed_uid) {
        return Some(u);
    }
    if let Some(u) = pod_prefixed_uid(text) {
        return Some(u);
    }
    for key in [
        &b"podUID=\""[..],
        b"podUID=",
        // The pod's directory, as a path or as a systemd mount unit name.
        b"/kubelet/pods/",
        b"-kubelet-pods-",
        b"pod_uid=\"",
        b"pod_uid=",
        b"\"podUID\":\"",
        b"Error syncing pod ",
        b"the pod: ",
    ] {
        if let Some(i) = memmem::find(text, key) {
            if let Some((u, _)) = uid_at(text, i + key.len()) {
                return Some(u);
            }
        }
    }
    // kubelet's pod name form "name_namespace(uid)".
    memmem::find_iter(text, b"(").take(64).find_map(|i| match uid_at(text, i + 1) {
        Some((u, n)) if text.get(i + 1 + n) == Some(&b')') => Some(u),
        _ => None,
    })
}

fn is_container_id(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A 64-hex container ID in one cgroup path segment: `<id>`, `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `crio-conmon-<id>.scope`, `libpod-<id>.scope`,
/// or the systemd-driver-on-cgroupfs form `...slice:cri-containerd:<id>`.
fn container_id_in_segment(seg: &[u8]) -> Option<&[u8]> {
    let seg = seg.rsplit(|c| *c == b':').next().unwrap_or(seg);
    let seg = seg.strip_suffix(b".scope").unwrap_or(seg);
    let id = match seg.len() {
        64 => seg,
        n if n > 64 && seg[n - 65] == b'-' => &seg[n - 64..],
        _ => return None,
    };
    is_container_id(id).then_some(id)
}

/// The container ID of a line: the last ID-shaped segment of its cgroup path, else a
/// `container_id=` field or a Docker API path `/containers/<id>/`.
pub(crate) fn container_id(path: Option<&[u8]>, text: &[u8]) -> Option<String> {
    if let Some(p) = path {
        if let Some(id) = p.split(|c| *c == b'/').filter_map(container_id_in_segment).next_back() {
            return Some(String::from_utf8_lossy(id).into_owned());
        }
    }
    for key in [&b"container_id="[..], b"containerID=", b"/containers/", b"Failed to start container "] {
        if let Some(i) = memmem::find(text, key) {
            let s = &text[i + key.len()..];
            let s = s.strip_prefix(b"\"").unwrap_or(s);
            if s.len() >= 64 && is_container_id(&s[..64]) && s.get(64).is_none_or(|c| !c.is_ascii_alphanumeric()) {
                return Some(String::from_utf8_lossy(&s[..64]).into_owned());
            }
        }
    }
    None
}

/// `cache: kmalloc-1024(1793:<cgroup>), object size: ...` -> (is it a per-memcg cache, cgroup name).
pub(crate) fn slab_cache_cgroup(after_cache: &[u8]) -> (bool, Option<&[u8]>) {
    let name = &after_cache[..memchr::memchr(b',', after_cache).unwrap_or(after_cache.len())];
    let name = name.strip_suffix(b")").filter(|_| name.ends_with(b")"));
    let Some(name) = name else { return (false, None) };
    // The memcg part is the last "(<digits>:" group.
    let Some(open) = memmem::rfind(name, b"(") else { return (false, None) };
    let inner = &name[open + 1..];
    let digits = inner.iter().take_while(|c| c.is_ascii_digit()).count();
    let Some(cg) = (digits > 0).then(|| strip_colon(&inner[digits..])).flatten() else { return (false, None) };
    (true, (!cg.is_empty()).then_some(cg))
}

/// One line of the kernel's slab failure record (mm/slub.c slab_out_of_memory), in the
/// order the kernel prints them: a line continues a record only after a line of an
/// earlier kind (`node` lines also after each other); a min-order line is taken into any
/// record and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlubLine {
    /// `slab_out_of_memory: N callbacks suppressed` (slub_oom_rs, 4.x+), `___slab_alloc:` /
    /// `__slab_alloc:` (printk_ratelimit() in the caller, 3.10 .. 4.x): printed by the call
    /// whose record follows.
    Suppressed,
    /// `SLUB: Unable to allocate memory on node <n> ...`
    Header,
    /// `  cache: <name>, object size: ...`
    Cache,
    /// `  <name> debugging increased min order, use slub_debug=O to disable.`
    MinOrder,
    /// `  node <n>: slabs: ..., objs: ..., free: ...`
    Node,
}

/// Does a line of kind `next` continue a record whose last line (min-order lines aside)
/// was of kind `last`?
pub(crate) fn continues(last: SlubLine, next: SlubLine) -> bool {
    next > last || (next == SlubLine::Node && last == SlubLine::Node)
}

/// The SLUB record line `t` is, if any; `body` is its kernel text (`text::kernel_body`).
pub(crate) fn slub_line(t: &[u8], body: &[u8]) -> Option<SlubLine> {
    // The header anywhere in the line (grep output, wrappers), as before the body was read.
    for i in memmem::find_iter(t, b"SLUB").take(4) {
        if strip_colon(&t[i + 4..]).is_some_and(|r| r.starts_with(b"Unable to allocate memory on node")) {
            return Some(SlubLine::Header);
        }
    }
    if let Some(after) = body.strip_prefix(b"cache").and_then(strip_colon) {
        return memmem::find(after, b", object size").is_some().then_some(SlubLine::Cache);
    }
    if let Some(after) = body.strip_prefix(b"node ") {
        let n = after.iter().take_while(|c| c.is_ascii_digit()).count();
        let slabs = strip_colon(&after[n..]).and_then(|r| r.strip_prefix(b"slabs")).and_then(strip_colon);
        return (n > 0 && slabs.is_some()).then_some(SlubLine::Node);
    }
    for func in [&b"slab_out_of_memory"[..], b"___slab_alloc", b"__slab_alloc"] {
        if let Some(r) = body.strip_prefix(func).and_then(strip_colon) {
            let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
            return (n > 0 && r[n..].starts_with(b" callbacks suppressed")).then_some(SlubLine::Suppressed);
        }
    }
    (memmem::find(body, b" debugging increased min order").is_some()).then_some(SlubLine::MinOrder)
}

/// Is the `inotify` at `t[at..]` an inotify limit that names no path: `inotify_init: too
/// many open files` (cAdvisor) or `tail: inotify resources exhausted`? (module doc)
pub(crate) fn inotify_limit(t: &[u8], at: usize) -> bool {
    let rest = &t[at + b"inotify".len()..];
    if let Some(r) = rest.strip_prefix(b"_init") {
        let r = r.strip_prefix(b"1").unwrap_or(r);
        return strip_colon(r).is_some_and(|r| starts_with_ci(r, b"too many open files"));
    }
    let before = |n: usize| &t[..at - n];
    rest.starts_with(b" resources exhausted")
        && colon_before(&t[at.saturating_sub(8)..at]).is_some_and(|n| {
            let b = before(n);
            b.ends_with(b"tail") && b.len().checked_sub(5).is_none_or(|i| !b[i].is_ascii_alphanumeric())
        })
}

// ---------------------------------------------------------------------------------------
// Components
// ---------------------------------------------------------------------------------------

/// A program name (syslog tag, systemd unit) as a component, when it is one we know.
pub(crate) fn component_of_name(name: &[u8]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let n = lower.strip_suffix(b".service").unwrap_or(&lower);
    Some(match n {
        b"kubelet" | b"hyperkube" | b"kubelet-wrapper" => "kubelet",
        b"dockerd" | b"docker" => "dockerd",
        b"containerd" => "containerd",
        b"crio" | b"cri-o" => "crio",
        b"runc" => "runc",
        b"crun" => "crun",
        b"kernel" => "kernel",
        b"nomad" => "nomad",
        b"systemd" => "systemd",
        b"lxc" | b"lxd" => "lxc",
        b"mkdir" => "mkdir",
        b"tail" => "tail",
        _ => return None,
    })
}

/// The component from the text itself, for lines whose source does not name the program.
/// Rules in order; the first that matches wins (a wrapper's words before the runtime's).
pub(crate) fn component_of_text(text: &[u8], msg: &[u8], klog: bool) -> Option<&'static str> {
    let has = |s: &[u8]| memmem::find(text, s).is_some();
    if has(b"FailedCreatePodContainer") || has(b"  kubelet, ") || has(b"  kubelet  ") {
        return Some("kubelet"); // `kubectl describe` event, From column
    }
    if klog {
        // klog header: kubelet (its cAdvisor included), unless standalone cAdvisor.
        return Some(if has(b" cadvisor.go:") { "cadvisor" } else { "kubelet" });
    }
    if has(b"failed to create container for [kubepods") || has(b"cgroups exist and are correctly applied") {
        return Some("kubelet");
    }
    if has(b"client.driver_mgr") || has(b" [ERROR] client.") || has(b"nomad[") {
        return Some("nomad");
    }
    if has(b"\"source\":\"guardian\"") {
        return Some("garden"); // Cloud Foundry garden-runc
    }
    if msg.starts_with(b"lxc ") || has(b" lxc_") || has(b"\tlxc_") {
        return Some("lxc");
    }
    if has(b"Handler for POST")
        || has(b"Error response from daemon")
        || has(b"API error (")
        || has(b"oci runtime error")
    {
        return Some("dockerd");
    }
    if has(b"Container creation error") {
        return Some("crio");
    }
    if has(b"containerd task") || has(b"RunPodSandbox for") || has(b"io.containerd") {
        return Some("containerd");
    }
    if has(b"crun:") || has("crun：".as_bytes()) || has(b"creating cgroup directory `") {
        return Some("crun");
    }
    if has(b"runc create failed") || has(b"container_linux.go") || has(b"process_linux.go") || has(b"runc") {
        return Some("runc");
    }
    if has(b"Failed to create cgroup ") {
        return Some("systemd");
    }
    if has(b"mkdir: cannot create directory") || has("mkdir：cannot create directory".as_bytes()) {
        return Some("mkdir");
    }
    if msg.starts_with(b"tail: ") || msg.starts_with("tail：".as_bytes()) {
        return Some("tail"); // coreutils tail -f on a log
    }
    if has(b"inotify watch descriptor for control group") {
        return Some("systemd");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(line: &str) -> Signature<'_> {
        let t = line.as_bytes();
        for (p, lit) in PREFILTER.iter().enumerate().take(3) {
            if let Some(i) = memmem::find(t, lit.as_bytes()) {
                let (errno, head, last) = errno_of_pattern(p).unwrap();
                let Some(end) = errno_text_end(t, i + lit.len(), last) else { return Signature::NotMemcg };
                return classify(t, i - head.len(), end, errno);
            }
        }
        Signature::NotMemcg
    }

    #[test]
    fn cut_and_full_width_errno_texts() {
        assert_eq!(
            sig("mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on devic"),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/kubepods/x"[..]))
        );
        assert_eq!(
            sig("mkdir /sys/fs/cgroup/memory/kubepods/x: cannot allocate memor..."),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/kubepods/x"[..]))
        );
        assert_eq!(sig("mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on devicx"), Signature::NotMemcg);
        assert_eq!(sig("mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on devic, retrying"), Signature::NotMemcg);
        assert_eq!(
            sig("mkdir /sys/fs/cgroup/memory/kubepods/x：no space left on device"),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/kubepods/x"[..]))
        );
        assert_eq!(
            sig("mkdir /sys/fs/cgroup/memory/kubepods/x： no space left on device"),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/kubepods/x"[..]))
        );
        assert_eq!(
            sig("x: Failed to add control inotify watch descriptor for control group /kubepods.slice/a.slice: No space left on device"),
            Signature::InotifyCgroup(&b"/kubepods.slice/a.slice"[..])
        );
        assert_eq!(
            sig("x: Failed to add memory inotify watch descriptor for control group /kubepods.slice/a.slice: Cannot allocate memory"),
            Signature::NotMemcg
        );
    }

    #[test]
    fn slub_lines_and_their_order() {
        let kind = |t: &str| slub_line(t.as_bytes(), crate::incidents::text::kernel_body(crate::incidents::text::envelope(t.as_bytes()).msg));
        assert_eq!(kind("[1.0] SLUB: Unable to allocate memory on node -1 (gfp=0x20)"), Some(SlubLine::Header));
        assert_eq!(kind("SLUB：Unable to allocate memory on node -1, gfp=0x820(GFP_ATOMIC)"), Some(SlubLine::Header));
        assert_eq!(kind("[Thu May 14 10:00:00 2020]   cache: kmalloc-64(12:x), object size: 64, buffer size: 64"), Some(SlubLine::Cache));
        assert_eq!(kind("May 14 10:00:00 h kernel: cache：kmalloc-64(12：x), object size：64"), Some(SlubLine::Cache));
        assert_eq!(kind("[1.0]   node 1: slabs: 2, objs: 3, free: 0"), Some(SlubLine::Node));
        assert_eq!(kind("[1.0] slab_out_of_memory: 53 callbacks suppressed"), Some(SlubLine::Suppressed));
        assert_eq!(kind("[1.0] ___slab_alloc: 7 callbacks suppressed"), Some(SlubLine::Suppressed));
        assert_eq!(kind("[1.0] net_ratelimit: 650 callbacks suppressed"), None);
        assert_eq!(kind("[1.0]   kmalloc-64 debugging increased min order, use slub_debug=O to disable."), Some(SlubLine::MinOrder));
        assert_eq!(kind("[1.0] Mem-Info: slab_reclaimable:1234 slab_unreclaimable:5678"), None);
        assert_eq!(kind("[1.0]   cache: kmalloc-64(12:x)"), None, "a cache line names its object size");
        use SlubLine::*;
        assert!(continues(Suppressed, Header) && continues(Header, Cache) && continues(Cache, Node) && continues(Node, Node));
        assert!(continues(Suppressed, Cache) && continues(Header, Node));
        assert!(!continues(Cache, Cache) && !continues(Node, Cache) && !continues(Header, Header) && !continues(Node, Suppressed));
    }

    #[test]
    fn inotify_limits_without_a_path() {
        let at = |t: &str| inotify_limit(t.as_bytes(), t.find("inotify").unwrap());
        assert!(at("F0110 21:30:25.764493   42304 kubelet.go:1230] Failed to start cAdvisor inotify_init: too many open files"));
        assert!(at("inotify_init：too many open files"));
        assert!(at("tail: inotify resources exhausted"));
        assert!(at("tail：inotify resources exhausted"));
        assert!(!at("tail: inotify cannot be used, reverting to polling"));
        assert!(!at("cocktail: inotify resources exhausted"));
        assert!(!at("inotify_add_watch /var/log/x: too many open files"));
        assert!(!at("failed to create inotify watcher: too many open files"));
    }

    #[test]
    fn memory_hierarchy_rules() {
        assert!(in_memory_hierarchy(b"/sys/fs/cgroup/memory/kubepods/besteffort/podx"));
        assert!(in_memory_hierarchy(b"/sys/fs/cgroup/cpu,memory/x"));
        assert!(in_memory_hierarchy(b"/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice"));
        assert!(in_memory_hierarchy(b"/kubepods.slice/kubepods-besteffort.slice"));
        assert!(!in_memory_hierarchy(b"/sys/fs/cgroup/cpuset/kubepods/x"));
        assert!(!in_memory_hierarchy(b"/sys/fs/cgroup/cpu,cpuacct/kubepods/x"));
        assert!(!in_memory_hierarchy(b"/sys/fs/cgroup/unified/kubepods/x"));
        assert!(!in_memory_hierarchy(b"/sys/fs/cgroup/systemd/kubepods/x"));
        assert!(!in_memory_hierarchy(b"/var/lib/docker/overlay2/abc"));
    }

    #[test]
    fn verbs() {
        assert_eq!(
            sig("caused \"mkdir /sys/fs/cgroup/memory/docker/x: no space left on device\""),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/docker/x"[..]))
        );
        assert_eq!(sig("rmdir /sys/fs/cgroup/memory/x: device or resource busy"), Signature::NotMemcg);
        assert_eq!(
            sig("write /sys/fs/cgroup/memory/x/memory.limit_in_bytes: device or resource busy"),
            Signature::NotMemcg
        );
        assert_eq!(
            sig("mkdir: cannot create directory ‘/sys/fs/cgroup/memory/test’: No space left on device"),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/test"[..]))
        );
        assert_eq!(
            sig("inotify_add_watch /sys/fs/cgroup/cpu,cpuacct: no space left on device"),
            Signature::InotifyCgroup(&b"/sys/fs/cgroup/cpu,cpuacct"[..])
        );
        assert_eq!(sig("inotify_add_watch /var/log/x.log: no space left on device"), Signature::NotMemcg);
        assert_eq!(sig("inotify_add_watch /sys/fs/cgroup/memory/x: cannot allocate memory"), Signature::NotMemcg);
        assert_eq!(
            sig("Device or resource busy - cgroup_rmdir: failed to delete /sys/fs/cgroup/memory//x"),
            Signature::NotMemcg
        );
        assert_eq!(
            sig("failed to create container for [kubepods burstable pod1] : cannot allocate memory"),
            Signature::MemcgCreate(None)
        );
        assert_eq!(sig(": no space left on device"), Signature::NotMemcg);
        assert_eq!(
            sig("mkdir /sys/fs/cgroup/memory/x: no space left on device - retrying"),
            Signature::MemcgCreate(Some(&b"/sys/fs/cgroup/memory/x"[..]))
        );
        assert_eq!(sig("no space left on device"), Signature::NotMemcg);
    }

    #[test]
    fn ids() {
        let p = b"/sys/fs/cgroup/memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podd1c5d1fd_35ee_11e9_928f_fa163ee640f0.slice/docker-d3c72950f35c9f94b00612c8ec05be90d3c72950f35c9f94b00612c8ec05be9a.scope";
        assert_eq!(pod_uid(Some(p), b"").unwrap(), "d1c5d1fd-35ee-11e9-928f-fa163ee640f0");
        assert_eq!(
            container_id(Some(p), b"").unwrap(),
            "d3c72950f35c9f94b00612c8ec05be90d3c72950f35c9f94b00612c8ec05be9a"
        );
        assert_eq!(
            pod_uid(None, b"x podUID=1a2a90df-7717-4f54-b428-f9d3fbff1fc2 y").unwrap(),
            "1a2a90df-7717-4f54-b428-f9d3fbff1fc2"
        );
        assert_eq!(
            pod_uid(None, b"crawler_brown(568af631-f663-4475-86f2-fa6bf1612659)").unwrap(),
            "568af631-f663-4475-86f2-fa6bf1612659"
        );
        assert_eq!(
            pod_uid(None, b"kubepods/pod7f8667b0aa2fc59394329cc63d147fc3/x").unwrap(),
            "7f8667b0aa2fc59394329cc63d147fc3"
        );
        assert_eq!(pod_uid(None, b"request id=035832fc-ced3-4ad5-93b4-0cd6f67c68c5"), None);
        // systemd's escape of '-' in unit names, plain and inside a quoted string.
        assert_eq!(
            pod_uid(Some(br"/kubepods.slice/kubepods-burstable-pod0f6b3c2e\x2d8a1d\x2d4f5e\x2d9c7b\x2d2d4e6f8a0b1c.slice"), b"").unwrap(),
            "0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c"
        );
        assert_eq!(
            pod_uid(None, br#"msg="kubepods-pod0F6B3C2E\\x2d8a1d\\x2d4f5e\\x2d9c7b\\x2d2d4e6f8a0b1c.slice""#).unwrap(),
            "0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c"
        );
        assert_eq!(pod_uid(None, br"pod0f6b3c2e\x2d8a1d\x2d4f5e\x2d9c7b-2d4e6f8a0b1c.slice"), None, "one separator throughout");
        assert_eq!(
            pod_uid(None, br"system.slice/var-lib-kubelet-pods-0d8917fd\x2dda6a\x2d11e7\x2da35d\x2d525400f0cb63-volumes-x.mount").unwrap(),
            "0d8917fd-da6a-11e7-a35d-525400f0cb63"
        );
    }

    #[test]
    fn slab_cache_names() {
        assert_eq!(slab_cache_cgroup(b"kmalloc-1024(1793:c8ed), object size: 1024"), (true, Some(&b"c8ed"[..])));
        assert_eq!(slab_cache_cgroup(b"xfrm_dst_cache, object size: 448"), (false, None));
        assert_eq!(slab_cache_cgroup(b"page->ptl, object size: 72"), (false, None));
        assert_eq!(slab_cache_cgroup("kmalloc-64(12：pod1), object size：64".as_bytes()), (true, Some(&b"pod1"[..])));
        assert_eq!(slab_cache_cgroup(b"kmalloc-64(:x), object size: 64"), (false, None));
    }
}

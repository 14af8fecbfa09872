//! The signature catalog: which log lines say that a memory cgroup could not be created
//! (or that the slab or inotify side effects of too many memcgs were hit), and which
//! look alike but are not.
//!
//! # The literals (prefilter)
//! Every signature contains one of these, searched with one SIMD (Teddy) automaton:
//! - `eft on device` / `llocate memory` / `resource busy`: the tails of the strerror text
//!   of ENOSPC ("no space left on device"), ENOMEM ("cannot allocate memory") and EBUSY
//!   ("device or resource busy"). Tails, because their first bytes are rare in ordinary
//!   logs (Teddy matches on the first three bytes: "no space" would stop at every
//!   "namespace"), and because the head's case differs: Go prints "no space left on
//!   device", libc (mkdir(1), lxc, systemd, crun) "No space left on device". The head is
//!   then checked, ignoring ASCII case.
//! - `SLUB: Unable`: the kernel's slab failure header `SLUB: Unable to allocate memory on node`.
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
//! `inotify_add_watch <path>: no space left on device` where `<path>` is under a cgroup
//! mount (any controller): cAdvisor (kubelet) watches every cgroup directory, so leaking
//! cgroups use up `fs.inotify.max_user_watches`. Only ENOSPC (the watch limit); inotify on
//! other paths (`/var/log/...`, fluent-bit, pyinotify) is not about cgroups.
//!
//! # slab_alloc_failed
//! `SLUB: Unable to allocate memory on node <n>` (either the 3.10 `(gfp=0x20)` or the newer
//! `, gfp=0x...(...)` wording), joined with the kernel's continuation lines
//! `  cache: <name>(<id>:<cgroup>), object size: ...` and `  node <n>: slabs: ...`. A per-memcg
//! cache name (`kmalloc-1024(1793:<cgroup>)`) means kmem accounting of that memcg failed
//! (per-memcg caches exist on 3.10 .. 5.8, facts §2); a root cache name
//! (`cache: xfrm_dst_cache, object size`) is global slab pressure and is dropped. With no
//! cache line at all (source lost it), the header alone is kept.

use memchr::memmem;

use crate::era::Errno;

/// Literals of the prefilter, in automaton pattern order (measured: 2.2 GB/s line by
/// line and 13 GB/s over a buffer of kubelet and containerd lines; the whole strerror
/// texts as literals gave 0.55 and 0.7 GB/s).
pub(crate) const PREFILTER: [&str; 4] = ["eft on device", "llocate memory", "resource busy", "SLUB: Unable"];

/// Pattern index of the SLUB header in [`PREFILTER`].
pub(crate) const SLUB_PATTERN: usize = 3;

/// The rest of the SLUB header, checked after the literal.
pub(crate) const SLUB_REST: &[u8] = b" to allocate memory on node";

/// The errno of a prefilter pattern, and the head of its strerror text that must stand
/// right before the literal (compared ignoring ASCII case).
pub(crate) fn errno_of_pattern(p: usize) -> Option<(Errno, &'static [u8])> {
    match p {
        0 => Some((Errno::ENOSPC, b"no space l")),
        1 => Some((Errno::ENOMEM, b"cannot a")),
        2 => Some((Errno::EBUSY, b"device or ")),
        _ => None,
    }
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
    // "<verb> <path>: <errno>"
    if e < 2 || &text[e - 2..e] != b": " {
        return Signature::NotMemcg;
    }
    let end = e - 2;
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

/// A pod UID at `t[at..]`: 8-4-4-4-12 hex with `-` (cgroupfs) or `_` (systemd slice names),
/// or 32 hex (static pods' config hash). Returned with dashes, and its length in the text.
fn uid_at(t: &[u8], at: usize) -> Option<(String, usize)> {
    let s = t.get(at..)?;
    let boundary = |n: usize| s.get(n).is_none_or(|c| !c.is_ascii_alphanumeric());
    if s.len() >= 36 && boundary(36) {
        let sep = s[8];
        let ok = (sep == b'-' || sep == b'_')
            && s[..36]
                .iter()
                .enumerate()
                .all(|(i, &c)| if matches!(i, 8 | 13 | 18 | 23) { c == sep } else { is_hex(c) });
        if ok {
            let uid: String =
                s[..36].iter().map(|&c| if c == b'_' { '-' } else { c.to_ascii_lowercase() as char }).collect();
            return Some((uid, 36));
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
    let Some(colon) = memchr::memchr(b':', inner) else { return (false, None) };
    if colon == 0 || !inner[..colon].iter().all(|c| c.is_ascii_digit()) {
        return (false, None);
    }
    let cg = &inner[colon + 1..];
    (true, (!cg.is_empty()).then_some(cg))
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
    if has(b"crun:") || has(b"creating cgroup directory `") {
        return Some("crun");
    }
    if has(b"runc create failed") || has(b"container_linux.go") || has(b"process_linux.go") || has(b"runc") {
        return Some("runc");
    }
    if has(b"Failed to create cgroup ") {
        return Some("systemd");
    }
    if has(b"mkdir: cannot create directory") {
        return Some("mkdir");
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
                let (errno, head) = errno_of_pattern(p).unwrap();
                return classify(t, i - head.len(), i + lit.len(), errno);
            }
        }
        Signature::NotMemcg
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
    }

    #[test]
    fn slab_cache_names() {
        assert_eq!(slab_cache_cgroup(b"kmalloc-1024(1793:c8ed), object size: 1024"), (true, Some(&b"c8ed"[..])));
        assert_eq!(slab_cache_cgroup(b"xfrm_dst_cache, object size: 448"), (false, None));
        assert_eq!(slab_cache_cgroup(b"page->ptl, object size: 72"), (false, None));
    }
}

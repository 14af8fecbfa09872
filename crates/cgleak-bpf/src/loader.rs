//! Loading and running the walk: the committed CO-RE object is relocated against the
//! running kernel's BTF, cut down to the types its relocations look at ([`crate::minbtf`]),
//! by aya-obj, its maps made by aya and the program loaded by our own BPF_PROG_LOAD (all
//! pure Rust; see [`load`] for why not aya's `EbpfLoader`), attached as a cgroup iterator to
//! the hierarchy's root directory (our own BPF_LINK_CREATE: aya's `Iter::attach` passes no
//! `bpf_iter_link_info`, and a cgroup iterator without one walks the v2 root), and run by
//! reading the iterator once. Records come back through the ring buffer.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData, RingBuf};
use aya::{Btf, Endianness};
use aya_obj::btf::BtfKind;
use aya_obj::{EbpfSectionKind, Object};

use crate::error::Unavailable;
use crate::minbtf;
use crate::record::{self, Summary, WalkStatus, RING_BYTES_PER_RECORD_MAX, SUMMARY_BYTES};

/// The program, built by `cargo xtask bpf` from `bpf/memcg_walk.bpf.c` (8-byte aligned:
/// the ELF reader needs its headers aligned).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/memcg_walk.bpf.o");

/// statfs magics of include/uapi/linux/magic.h.
const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

// include/uapi/linux/bpf.h
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;
const BPF_BTF_LOAD: u32 = 18;
const BPF_MAP_FREEZE: u32 = 22;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_LINK_CREATE: u32 = 28;
const BPF_ITER_CREATE: u32 = 33;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_TRACE_ITER: u32 = 28;
const BPF_CGROUP_ITER_SELF_ONLY: u32 = 1;

/// The first ring buffer: 4 MiB holds about 20,000 records of pod-sized names. A walk
/// that finds more runs again with a ring sized from its own count.
const FIRST_RING_BYTES: u32 = 4 << 20;
/// The largest ring asked for (about 2.9 million records at the longest name).
const MAX_RING_BYTES: u64 = 1 << 30;

/// Which cgroup version the hierarchy is, from its statfs magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the walk looks.
#[derive(Debug, Clone)]
pub struct Walker {
    memory_root: PathBuf,
    btf: PathBuf,
    sys: PathBuf,
    ring_bytes: u32,
}

/// What one walk read, before the records are turned into [`crate::MemcgRecord`]s.
pub(crate) struct RawWalk {
    pub version: CgroupVersion,
    pub summary: Summary,
    pub stream: Vec<u8>,
    pub kernel_time: Duration,
    pub attempts: u32,
    pub ring_bytes: u32,
}

impl Walker {
    /// A walk of the hierarchy whose directory is `memory_root` (a mount of the memory
    /// controller's hierarchy: v1 `/sys/fs/cgroup/memory`, v2 `/sys/fs/cgroup`), with the
    /// kernel's files under `/sys`.
    pub fn new(memory_root: impl Into<PathBuf>) -> Walker {
        Walker { memory_root: memory_root.into(), btf: PathBuf::from("/sys/kernel/btf/vmlinux"), sys: PathBuf::from("/sys"), ring_bytes: FIRST_RING_BYTES }
    }

    /// The running kernel's sysfs (`<host root>/sys` when the host is mounted elsewhere):
    /// its BTF, NUMA nodes and lockdown state are read there.
    pub fn sys_dir(mut self, sys: impl Into<PathBuf>) -> Walker {
        self.sys = sys.into();
        self.btf = self.sys.join("kernel/btf/vmlinux");
        self
    }

    /// Another BTF file (tests: a missing or foreign one).
    pub fn btf_path(mut self, btf: impl Into<PathBuf>) -> Walker {
        self.btf = btf.into();
        self
    }

    /// The first ring buffer's size (rounded up to a power of two, at least a page).
    pub fn ring_bytes(mut self, bytes: u32) -> Walker {
        self.ring_bytes = bytes.max(4096).checked_next_power_of_two().unwrap_or(1 << 31);
        self
    }

    pub fn memory_root(&self) -> &Path {
        &self.memory_root
    }

    pub(crate) fn run(&self) -> Result<RawWalk, Unavailable> {
        // BTF first: without it nothing else matters.
        let (btf, attach_btf_id) = self.kernel_btf()?;
        let (dir, version) = open_hierarchy(&self.memory_root)?;
        preflight(&self.sys)?;
        let nodes = possible_nodes(&self.sys);
        let mut ring = self.ring_bytes;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (summary, stream, kernel_time) = self.walk_once(&btf, attach_btf_id, dir.as_fd(), nodes, ring)?;
            match summary.status {
                WalkStatus::Done => {}
                WalkStatus::NoMemoryCss => {
                    return Err(Unavailable::NoHierarchy {
                        path: self.memory_root.clone(),
                        reason: "this cgroup hierarchy has no memory controller".into(),
                    })
                }
                other => return Err(Unavailable::Incomplete(format!("walk status {other:?} after {} memcgs", summary.visited))),
            }
            if summary.dropped == 0 {
                return Ok(RawWalk { version, summary, stream, kernel_time, attempts, ring_bytes: ring });
            }
            // The ring was too small: once more, sized from the count the walk found.
            let need = (summary.visited.saturating_mul(RING_BYTES_PER_RECORD_MAX as u64) / 4 * 5).next_power_of_two();
            if attempts >= 2 || need > MAX_RING_BYTES || need <= ring as u64 {
                return Err(Unavailable::Incomplete(format!(
                    "{} of {} memcgs did not fit a ring buffer of {ring} bytes",
                    summary.dropped, summary.visited
                )));
            }
            ring = need as u32;
        }
    }

    /// The kernel's BTF as far as the relocations look at it, and the ID of `bpf_iter_cgroup`
    /// there (the program's attach point).
    fn kernel_btf(&self) -> Result<(Btf, u32), Unavailable> {
        match std::fs::metadata(&self.btf) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Unavailable::NoBtf {
                    path: self.btf.clone(),
                    reason: "missing: the kernel was built without CONFIG_DEBUG_INFO_BTF (or is older than 5.4)".into(),
                })
            }
            Err(e) => return Err(Unavailable::NoBtf { path: self.btf.clone(), reason: e.to_string() }),
            Ok(_) => {}
        }
        let unreadable = |reason: String| Unavailable::NoBtf { path: self.btf.clone(), reason: format!("unreadable: {reason}") };
        let too_old_iter = || Unavailable::KernelTooOld { missing: "bpf_iter_cgroup".into(), since: "the cgroup iterator, Linux 6.1" };
        let too_old_loop = || Unavailable::KernelTooOld { missing: "bpf_loop".into(), since: "the bpf_loop helper, Linux 5.17" };
        let data = BtfBytes::open(&self.btf).map_err(|e| unreadable(e.to_string()))?;
        // Only the types the relocations look at (src/minbtf.rs): aya's parse of the whole
        // kernel BTF was most of a walk's memory and time. An object the cut cannot serve
        // exactly falls back to the full BTF.
        if let Some(needs) = object_needs() {
            match minbtf::minimize(&data, needs, "bpf_iter_cgroup", &["bpf_loop"]) {
                Ok(min) => {
                    drop(data);
                    // The cgroup iterator (kernel/bpf/cgroup_iter.c) came in 6.1; bpf_loop in 5.17.
                    let attach = min.attach_id.ok_or_else(too_old_iter)?;
                    if !min.found[0] {
                        return Err(too_old_loop());
                    }
                    let btf = Btf::parse(&min.blob, Endianness::default()).map_err(|e| Unavailable::Relocation { detail: format!("minimal BTF: {}", chain(&e)) })?;
                    return Ok((btf, attach));
                }
                Err(e @ minbtf::MinError::Malformed { .. }) => return Err(unreadable(e.to_string())),
                Err(minbtf::MinError::Unsupported(_)) => {}
            }
        }
        let btf = Btf::parse(&data, Endianness::default()).map_err(|e| unreadable(chain(&e)))?;
        drop(data);
        let attach = btf.id_by_type_name_kind("bpf_iter_cgroup", BtfKind::Func).map_err(|_| too_old_iter())?;
        btf.id_by_type_name_kind("bpf_loop", BtfKind::Func).map_err(|_| too_old_loop())?;
        Ok((btf, attach))
    }

    fn walk_once(&self, btf: &Btf, attach_btf_id: u32, dir: std::os::fd::BorrowedFd<'_>, nodes: u32, ring: u32) -> Result<(Summary, Vec<u8>, Duration), Unavailable> {
        let mut loaded = load(btf, attach_btf_id, nodes, ring, &self.sys)?;
        let prog_fd = loaded.prog.as_raw_fd();
        let link = link_create_cgroup_iter(prog_fd, dir.as_raw_fd()).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => not_permitted("BPF_LINK_CREATE", e, &self.sys),
            _ => Unavailable::Syscall { op: format!("BPF_LINK_CREATE (cgroup iterator on {})", self.memory_root.display()), source: e },
        })?;
        let iter = iter_create(&link).map_err(|e| Unavailable::Syscall { op: "BPF_ITER_CREATE".into(), source: e })?;
        let mut iter = File::from(iter);
        // Reading runs the program: the whole walk happens in this read, under cgroup_mutex.
        let started = Instant::now();
        let mut sink = Vec::new();
        iter.read_to_end(&mut sink).map_err(|e| Unavailable::Syscall { op: "read of the cgroup iterator".into(), source: e })?;
        let kernel_time = started.elapsed();
        let summary = {
            let map = loaded.maps.remove("summary").ok_or_else(|| Unavailable::Relocation { detail: "no summary map".into() })?;
            let arr: Array<_, [u8; SUMMARY_BYTES]> = Array::try_from(Map::Array(map)).map_err(|e| Unavailable::Relocation { detail: chain(&e) })?;
            let bytes = arr.get(&0, 0).map_err(|e| Unavailable::Syscall { op: format!("read the walk's summary: {}", chain(&e)), source: io::Error::other("map lookup") })?;
            record::parse_summary(&bytes)?
        };
        let map = loaded.maps.remove("records").ok_or_else(|| Unavailable::Relocation { detail: "no records map".into() })?;
        let mut rb = RingBuf::try_from(Map::RingBuf(map)).map_err(|e| Unavailable::Relocation { detail: chain(&e) })?;
        let mut stream = Vec::new();
        while let Some(item) = rb.next() {
            stream.extend_from_slice(&item);
        }
        Ok((summary, stream, kernel_time))
    }
}

/// The kernel's BTF bytes: mapped where sysfs allows it (6.16+, kernel/bpf/sysfs_btf.c
/// btf_sysfs_vmlinux_mmap maps the kernel's own read-only copy: no 5.5 MB copy, a walk
/// 7 ms faster here), read otherwise.
enum BtfBytes {
    Mapped { ptr: *mut libc::c_void, len: usize },
    Read(Vec<u8>),
}

const SYSFS_MAGIC: i64 = 0x62656572;

impl BtfBytes {
    fn open(path: &Path) -> io::Result<BtfBytes> {
        let file = File::open(path)?;
        let len = file.metadata()?.len() as usize;
        // SAFETY: statfs is plain data, filled by the kernel.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a valid out pointer.
        let sysfs = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0 && st.f_type as i64 == SYSFS_MAGIC;
        // Only sysfs: its BTF never changes under the mapping (a regular file could be
        // truncated meanwhile, and a read past its end would be SIGBUS).
        if sysfs && len > 0 {
            // SAFETY: a read-only private mapping of an open file; checked for failure below.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
            if ptr != libc::MAP_FAILED {
                return Ok(BtfBytes::Mapped { ptr, len });
            }
        }
        let mut data = Vec::with_capacity(len);
        (&file).read_to_end(&mut data)?;
        Ok(BtfBytes::Read(data))
    }
}

impl std::ops::Deref for BtfBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: `len` readable bytes mapped by open(), unmapped only by drop.
            BtfBytes::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr as *const u8, *len) },
            BtfBytes::Read(v) => v,
        }
    }
}

impl Drop for BtfBytes {
    fn drop(&mut self) {
        if let BtfBytes::Mapped { ptr, len } = *self {
            // SAFETY: the mapping made by open(), not used after this.
            unsafe { libc::munmap(ptr, len) };
        }
    }
}

/// The kernel types [`OBJECT`]'s relocations need, read once; None: the object needs the full BTF.
fn object_needs() -> Option<&'static minbtf::Needs> {
    static NEEDS: std::sync::OnceLock<Option<minbtf::Needs>> = std::sync::OnceLock::new();
    NEEDS.get_or_init(|| minbtf::object_needs(OBJECT).ok()).as_ref()
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn open_hierarchy(path: &Path) -> Result<(OwnedFd, CgroupVersion), Unavailable> {
    let no = |reason: String| Unavailable::NoHierarchy { path: path.to_path_buf(), reason };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| no("path holds a NUL byte".into()))?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(no(io::Error::last_os_error().to_string()));
    }
    // SAFETY: open returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: statfs is plain data, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(no(format!("fstatfs: {}", io::Error::last_os_error())));
    }
    let version = match st.f_type as i64 {
        CGROUP_SUPER_MAGIC => CgroupVersion::V1,
        CGROUP2_SUPER_MAGIC => CgroupVersion::V2,
        m => return Err(no(format!("not a cgroup file system (statfs magic {m:#x})"))),
    };
    Ok((fd, version))
}

/// `nr_node_ids`: one more than the highest possible NUMA node (`/sys/devices/system/node/possible`,
/// e.g. `0` or `0-3`); 1 without NUMA.
impl Walker {
    /// Whether the multi-gen LRU runs: `<sys>/kernel/mm/lru_gen/enabled` is a hex mask whose
    /// bit 0 switches it on (Documentation/admin-guide/mm/multigen_lru.rst). Absent: no MGLRU.
    pub(crate) fn mglru_enabled(&self) -> bool {
        let mut text = String::new();
        let read = File::open(self.sys.join("kernel/mm/lru_gen/enabled")).and_then(|f| f.take(64).read_to_string(&mut text));
        read.is_ok() && u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).is_ok_and(|m| m & 1 != 0)
    }
}

fn possible_nodes(sys: &Path) -> u32 {
    let text = std::fs::read_to_string(sys.join("devices/system/node/possible")).unwrap_or_default();
    parse_possible_nodes(&text)
}

pub(crate) fn parse_possible_nodes(text: &str) -> u32 {
    let highest = text
        .trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    // The program reads at most 64 nodes (MAX_NODES).
    (highest + 1).min(64)
}

fn bpf(cmd: u32, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: attr is a bpf_attr-shaped buffer of attr.len() bytes, zero beyond the fields set.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr.as_mut_ptr(), attr.len() as libc::c_uint) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: bpf() returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Can we use bpf(2) at all? A one-entry array map: EPERM here is the clearest answer
/// (aya's feature probes would fail first and hide it).
fn preflight(sys: &Path) -> Result<(), Unavailable> {
    let mut attr = [0u8; 64];
    put_u32(&mut attr, 0, BPF_MAP_TYPE_ARRAY);
    put_u32(&mut attr, 4, 4);
    put_u32(&mut attr, 8, 4);
    put_u32(&mut attr, 12, 1);
    match bpf(BPF_MAP_CREATE, &mut attr) {
        Ok(fd) => {
            drop(owned(fd));
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(Unavailable::NoBpfSyscall),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => Err(not_permitted("BPF_MAP_CREATE", e, sys)),
        Err(e) => Err(Unavailable::Syscall { op: "BPF_MAP_CREATE (a one-entry array, to test bpf(2))".into(), source: e }),
    }
}

/// BPF_LINK_CREATE of an iter program with `bpf_iter_link_info.cgroup` = {SELF_ONLY, fd}.
fn link_create_cgroup_iter(prog_fd: i32, cgroup_fd: i32) -> io::Result<OwnedFd> {
    // union bpf_iter_link_info: cgroup.order (u32), cgroup.cgroup_fd (u32), cgroup.cgroup_id (u64).
    let mut info = [0u8; 16];
    put_u32(&mut info, 0, BPF_CGROUP_ITER_SELF_ONLY);
    put_u32(&mut info, 4, cgroup_fd as u32);
    // link_create: prog_fd, target_fd, attach_type, flags, iter_info (u64), iter_info_len (u32).
    let mut attr = [0u8; 32];
    put_u32(&mut attr, 0, prog_fd as u32);
    put_u32(&mut attr, 8, BPF_TRACE_ITER);
    attr[16..24].copy_from_slice(&(info.as_ptr() as u64).to_ne_bytes());
    put_u32(&mut attr, 24, info.len() as u32);
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 8];
    put_u32(&mut attr, 0, link.as_raw_fd() as u32);
    bpf(BPF_ITER_CREATE, &mut attr).map(owned)
}

/// Why bpf(2) said no, as far as we can tell from here.
fn not_permitted(op: &'static str, source: io::Error, sys: &Path) -> Unavailable {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let lockdown = lockdown_mode(sys);
    let hint = if euid != 0 {
        format!("not root (euid {euid}): the walk needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN")
    } else if let Some(mode) = lockdown.filter(|m| m != "none") {
        format!("kernel lockdown is {mode}: it forbids reading kernel memory from BPF")
    } else {
        "root, yet refused: a container without CAP_BPF/CAP_SYS_ADMIN, a seccomp filter or an LSM denies bpf(2)".into()
    };
    Unavailable::NotPermitted { op, hint, source }
}

/// The bracketed word of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
fn lockdown_mode(sys: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sys.join("kernel/security/lockdown")).ok()?;
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

/// The object loaded as aya's `EbpfLoader::load` and `Iter::load` do it (aya-obj parses the
/// ELF, sanitizes the object's BTF and applies the CO-RE, map and call relocations; aya
/// creates the maps), minus two costs of aya 0.14: `EbpfLoader::new()` parses all of
/// /sys/kernel/btf/vmlinux whatever BTF is set afterwards (aya bpf.rs), and `Iter::load`
/// takes the attach BTF ID as the position of `bpf_iter_cgroup` in the Btf it is given,
/// which the minimal BTF does not keep.
struct Loaded {
    prog: OwnedFd,
    maps: HashMap<String, MapData>,
    /// The object's own BTF, loaded: the program's func_info refers to it.
    _btf: Option<OwnedFd>,
}

fn load(btf: &Btf, attach_btf_id: u32, nodes: u32, ring: u32, sys: &Path) -> Result<Loaded, Unavailable> {
    let relocation = |e: &dyn std::error::Error| Unavailable::Relocation { detail: chain(e) };
    let mut obj = Object::parse(OBJECT).map_err(|e| relocation(&e))?;
    let nodes = nodes.to_ne_bytes();
    obj.patch_map_data(HashMap::from([("nr_node_ids", (nodes.as_slice(), true))])).map_err(|e| relocation(&e))?;
    let features = aya::features();
    let obj_btf = match features.btf() {
        Some(f) => match obj.fixup_and_sanitize_btf(f).map_err(|e| relocation(&e))? {
            Some(b) => Some(btf_load(&b.to_bytes()).map_err(|e| Unavailable::Relocation { detail: format!("BPF_BTF_LOAD of the object's BTF: {e}") })?),
            None => None,
        },
        None => None,
    };
    obj.relocate_btf(btf).map_err(|e| relocation(&e))?;
    let defs: Vec<(String, aya_obj::Map)> = obj.maps.iter().map(|(n, m)| (n.clone(), m.clone())).collect();
    let mut maps = HashMap::new();
    for (name, def) in &defs {
        let mut def = def.clone();
        if name == "records" {
            def.set_max_entries(ring);
        }
        let map = MapData::create(def.clone(), name, obj_btf.as_ref().map(|f| f.as_fd())).map_err(|e| map_error(e, sys))?;
        // As aya's MapData::finalize: global data in, .rodata frozen.
        let fd = map.fd().as_fd().as_raw_fd();
        if !def.data().is_empty() {
            map_update(fd, def.data()).map_err(|e| Unavailable::Syscall { op: format!("BPF_MAP_UPDATE_ELEM of map {name}"), source: e })?;
        }
        if def.section_kind() == EbpfSectionKind::Rodata {
            map_freeze(fd).map_err(|e| Unavailable::Syscall { op: format!("BPF_MAP_FREEZE of map {name}"), source: e })?;
        }
        maps.insert(name.clone(), map);
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(defs.iter().map(|(n, d)| (n.as_str(), maps[n].fd().as_fd().as_raw_fd(), d)), &text_sections).map_err(|e| relocation(&e))?;
    obj.relocate_calls(&text_sections).map_err(|e| relocation(&e))?;
    obj.sanitize_functions(features);
    let program = obj.programs.get("memcg_walk").ok_or_else(|| Unavailable::Relocation { detail: "the object has no program memcg_walk".into() })?;
    let function = obj.functions.get(&program.function_key()).ok_or_else(|| Unavailable::Relocation { detail: "the object has no function memcg_walk".into() })?;
    let prog = prog_load(program, function, obj_btf.as_ref(), attach_btf_id, sys)?;
    Ok(Loaded { prog, maps, _btf: obj_btf })
}

/// BPF_PROG_LOAD of the iter program, as aya's bpf_load_program; the verifier's log is
/// asked for only when the load fails.
fn prog_load(program: &aya_obj::Program, function: &aya_obj::Function, btf: Option<&OwnedFd>, attach_btf_id: u32, sys: &Path) -> Result<OwnedFd, Unavailable> {
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let name = b"memcg_walk";
    let attempt = |log: &mut [u8]| -> io::Result<i64> {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
        put_u32(&mut attr, 4, function.instructions.len() as u32);
        put_u64(&mut attr, 8, function.instructions.as_ptr() as u64);
        put_u64(&mut attr, 16, program.license.as_ptr() as u64);
        if !log.is_empty() {
            put_u32(&mut attr, 24, 1 | 4); // aya's default: BPF_LOG_LEVEL1 | BPF_LOG_STATS
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put_u32(&mut attr, 40, program.kernel_version.unwrap_or(0));
        attr[48..48 + name.len()].copy_from_slice(name);
        put_u32(&mut attr, 68, BPF_TRACE_ITER);
        if let Some(btf) = btf {
            put_u32(&mut attr, 72, btf.as_raw_fd() as u32);
            if function.func_info_rec_size > 0 {
                put_u32(&mut attr, 76, function.func_info_rec_size as u32);
                put_u64(&mut attr, 80, func_info.as_ptr() as u64);
                put_u32(&mut attr, 88, function.func_info.len() as u32);
            }
            if function.line_info_rec_size > 0 {
                put_u32(&mut attr, 92, function.line_info_rec_size as u32);
                put_u64(&mut attr, 96, line_info.as_ptr() as u64);
                put_u32(&mut attr, 104, function.line_info.len() as u32);
            }
        }
        put_u32(&mut attr, 108, attach_btf_id);
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let first = match attempt(&mut []) {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) => e,
    };
    if matches!(first.raw_os_error(), Some(libc::EPERM)) {
        return Err(not_permitted("BPF_PROG_LOAD", first, sys));
    }
    // Again with the verifier's log (growing it while the kernel says ENOSPC).
    let mut log = vec![0u8; 1 << 20];
    let error = loop {
        match attempt(&mut log) {
            Ok(fd) => return Ok(owned(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && log.len() < 16 << 20 => log = vec![0u8; log.len() * 4],
            Err(e) => break e,
        }
    };
    let end = log.iter().position(|c| *c == 0).unwrap_or(log.len());
    Err(program_error(error, &String::from_utf8_lossy(&log[..end]), sys))
}

fn btf_load(bytes: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 32];
    put_u64(&mut attr, 0, bytes.as_ptr() as u64);
    put_u32(&mut attr, 16, bytes.len() as u32);
    bpf(BPF_BTF_LOAD, &mut attr).map(owned)
}

fn map_update(fd: i32, value: &[u8]) -> io::Result<()> {
    let key = 0u32;
    let mut attr = [0u8; 32];
    put_u32(&mut attr, 0, fd as u32);
    put_u64(&mut attr, 8, &key as *const u32 as u64);
    put_u64(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn map_freeze(fd: i32) -> io::Result<()> {
    let mut attr = [0u8; 8];
    put_u32(&mut attr, 0, fd as u32);
    bpf(BPF_MAP_FREEZE, &mut attr).map(drop)
}

fn map_error(e: aya::maps::MapError, sys: &Path) -> Unavailable {
    match e {
        aya::maps::MapError::CreateError { name, io_error } => match io_error.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => not_permitted("BPF_MAP_CREATE", io_error, sys),
            _ => Unavailable::Syscall { op: format!("BPF_MAP_CREATE of map {name}"), source: io_error },
        },
        other => Unavailable::Syscall { op: format!("load the memcg walk: {}", chain(&other)), source: io::Error::other("aya") },
    }
}

fn program_error(io_error: io::Error, log: &str, sys: &Path) -> Unavailable {
    if matches!(io_error.raw_os_error(), Some(libc::EPERM)) {
        return not_permitted("BPF_PROG_LOAD", io_error, sys);
    }
    // Lockdown (integrity or confidentiality) takes bpf_probe_read_kernel away.
    if log.contains("unknown func bpf_probe_read_kernel") {
        let mode = lockdown_mode(sys).unwrap_or_else(|| "on".into());
        return Unavailable::NotPermitted { op: "BPF_PROG_LOAD", hint: format!("the kernel does not offer bpf_probe_read_kernel (lockdown {mode})"), source: io_error };
    }
    Unavailable::Rejected { log_head: verifier_log_head(log), source: io_error }
}

/// The verifier's first lines and its last (where it says why), at most 12 in all.
pub(crate) fn verifier_log_head(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "(no verifier log)".into();
    }
    if lines.len() <= 12 {
        return lines.join(" | ");
    }
    let mut out: Vec<&str> = lines[..8].to_vec();
    out.push("...");
    out.extend_from_slice(&lines[lines.len() - 3..]);
    out.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mglru_is_on_where_bit_0_of_its_mask_is_set() {
        let sys = tempfile::tempdir().unwrap();
        let w = Walker::new("/sys/fs/cgroup/memory").sys_dir(sys.path());
        assert!(!w.mglru_enabled(), "no lru_gen directory: no MGLRU");
        std::fs::create_dir_all(sys.path().join("kernel/mm/lru_gen")).unwrap();
        for (mask, on) in [("0x0007\n", true), ("0x0001\n", true), ("0x0000\n", false), ("0x0006\n", false), ("y\n", false)] {
            std::fs::write(sys.path().join("kernel/mm/lru_gen/enabled"), mask).unwrap();
            assert_eq!(w.mglru_enabled(), on, "{mask:?}");
        }
    }

    #[test]
    fn possible_nodes_is_one_more_than_the_highest() {
        assert_eq!(parse_possible_nodes("0\n"), 1);
        assert_eq!(parse_possible_nodes("0-3\n"), 4);
        assert_eq!(parse_possible_nodes("0,2-5,7\n"), 8);
        assert_eq!(parse_possible_nodes(""), 1);
        assert_eq!(parse_possible_nodes("0-1023"), 64, "capped at the program's MAX_NODES");
    }

    #[test]
    fn verifier_log_keeps_its_head_and_its_verdict() {
        let log: String = (0..40).map(|i| format!("{i}: insn\n")).collect::<String>() + "R1 invalid mem access 'scalar'\nprocessed 99 insns\n";
        let head = verifier_log_head(&log);
        assert!(head.starts_with("0: insn | 1: insn"), "{head}");
        assert!(head.contains("R1 invalid mem access"), "{head}");
        assert!(!head.contains("20: insn"), "{head}");
        assert_eq!(verifier_log_head(""), "(no verifier log)");
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("kernel/security")).unwrap();
        std::fs::write(d.path().join("kernel/security/lockdown"), "none [integrity] confidentiality\n").unwrap();
        assert_eq!(lockdown_mode(d.path()).as_deref(), Some("integrity"));
        assert_eq!(lockdown_mode(Path::new("/nonexistent")), None);
    }

    #[test]
    fn real_kernel_a_refused_load_gives_the_verifiers_reason() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "loads a BPF program: run as root");
        let (btf, attach) = Walker::new("/sys/fs/cgroup/memory").kernel_btf().expect("this host's kernel (6.18) has BTF with the cgroup iterator");
        let loaded = load(&btf, attach, 1, 4096, Path::new("/sys")).expect("the program loads at its own attach point");
        assert!(loaded.maps.contains_key("records") && loaded.maps.contains_key("summary"));
        // The type after bpf_iter_cgroup is not an iterator's function: the kernel refuses,
        // and says why in the verifier's log.
        let e = load(&btf, attach + 1, 1, 4096, Path::new("/sys")).err().expect("a wrong attach point is refused");
        assert_eq!(e.code(), "verifier_rejected", "{e}");
        assert!(e.to_string().contains(&format!("attach_btf_id {}", attach + 1)), "the kernel's own words (kernel/bpf/verifier.c bpf_check_attach_target): {e}");
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_is_no_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let e = open_hierarchy(d.path()).unwrap_err();
        assert_eq!(e.code(), "no_memory_hierarchy");
        assert!(e.to_string().contains("not a cgroup file system"), "{e}");
        let e = open_hierarchy(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }
}

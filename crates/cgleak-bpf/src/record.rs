//! The walk's binary output: one record per memcg (`struct memcg_rec` of
//! `bpf/memcg_walk.bpf.c`) and the walk's summary (`struct walk_summary`), little-endian.
//!
//! Everything the kernel side wrote is checked before it is believed: lengths against the
//! bytes there are, the version and kind, names (no NUL, no `/`), and the tree (pre-order:
//! every memcg's parent came before it, one level up; no id twice). A test reads the
//! object's own BTF and checks these offsets against it (`tests/object.rs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// `RECORD_VERSION` of the C source.
pub const RECORD_VERSION: u8 = 1;
/// `REC_MEMCG`.
pub const KIND_MEMCG: u8 = 1;
/// Bytes before the name (`sizeof(struct memcg_rec) - NAME_MAX_BYTES`).
pub const HEADER_BYTES: usize = 96;
/// The longest name a record holds (kernfs names are at most NAME_MAX = 255 bytes).
pub const NAME_MAX: usize = 255;
/// The longest record, and what the ring buffer needs per memcg at most (with its 8-byte
/// header and 8-byte alignment).
pub const RECORD_MAX: usize = HEADER_BYTES + NAME_MAX;
pub const RING_BYTES_PER_RECORD_MAX: usize = 8 + RECORD_MAX.div_ceil(8) * 8;
/// `sizeof(struct walk_summary)`.
pub const SUMMARY_BYTES: usize = 64;

/// `HAVE_KMEM`: the kernel has `memcg->kmem` (v1 builds).
pub const HAVE_KMEM: u32 = 1;
/// `HAVE_LRU`: the per-node LRU sizes were read.
pub const HAVE_LRU: u32 = 2;
/// `CSS_ONLINE` of include/linux/cgroup-defs.h.
pub const CSS_ONLINE: u32 = 1 << 1;

/// Byte offsets of `struct memcg_rec`'s fields.
pub mod offsets {
    pub const LEN: usize = 0;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const CSS_FLAGS: usize = 4;
    pub const CGROUP_ID: usize = 8;
    pub const PARENT_CGROUP_ID: usize = 16;
    pub const DEPTH: usize = 24;
    pub const MEMCG_ID: usize = 28;
    pub const ID_REFS: usize = 32;
    pub const HAVE: usize = 36;
    pub const MEMORY_PAGES: usize = 40;
    pub const SWAP_PAGES: usize = 48;
    pub const KMEM_PAGES: usize = 56;
    pub const FILE_LRU_PAGES: usize = 64;
    pub const ANON_LRU_PAGES: usize = 72;
    pub const UNEVICTABLE_LRU_PAGES: usize = 80;
    pub const NAME_LEN: usize = 88;
    pub const NAME: usize = 96;
}

/// Byte offsets of `struct walk_summary`'s fields.
pub mod summary_offsets {
    pub const VERSION: usize = 0;
    pub const STATUS: usize = 4;
    pub const VISITED: usize = 8;
    pub const EMITTED: usize = 16;
    pub const DROPPED: usize = 24;
    pub const START_CGROUP_ID: usize = 32;
    pub const ROOT_CGROUP_ID: usize = 40;
    pub const STEPS: usize = 48;
    pub const LRU_ZONES: usize = 56;
    pub const NODES: usize = 60;
}

/// One record as the kernel side wrote it: counters in pages, ids as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMemcg {
    pub css_flags: u32,
    pub cgroup_id: u64,
    /// 0 for the hierarchy's root.
    pub parent_cgroup_id: u64,
    pub depth: u32,
    pub memcg_id: i32,
    pub id_refs: i32,
    pub have: u32,
    pub memory_pages: u64,
    pub swap_pages: u64,
    pub kmem_pages: u64,
    pub file_lru_pages: u64,
    pub anon_lru_pages: u64,
    pub unevictable_lru_pages: u64,
    pub name: Vec<u8>,
}

/// Output the parser does not accept, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record (or the summary) whose bytes are wrong, at this byte of the stream.
    #[error("record at byte {offset}: {detail}")]
    Malformed { offset: usize, detail: String },
    /// Well-formed records that do not make the pre-order tree the walk promises.
    #[error("record #{index}: {detail}")]
    Tree { index: usize, detail: String },
}

impl RecordError {
    pub fn detail(&self) -> &str {
        match self {
            RecordError::Malformed { detail, .. } | RecordError::Tree { detail, .. } => detail,
        }
    }
}

fn err(offset: usize, detail: impl Into<String>) -> RecordError {
    RecordError::Malformed { offset, detail: detail.into() }
}

fn tree(index: usize, detail: impl Into<String>) -> RecordError {
    RecordError::Tree { index, detail: detail.into() }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One record from the start of `b` (`offset`: where `b` starts in the stream, for errors).
/// Returns the record and its length.
pub fn parse_record(b: &[u8], offset: usize) -> Result<(RawMemcg, usize), RecordError> {
    if b.len() < HEADER_BYTES {
        return Err(err(offset, format!("{} bytes left, a record header needs {HEADER_BYTES}", b.len())));
    }
    let len = u16_at(b, offsets::LEN) as usize;
    if !(HEADER_BYTES..=RECORD_MAX).contains(&len) {
        return Err(err(offset, format!("length {len} outside {HEADER_BYTES}..={RECORD_MAX}")));
    }
    if len > b.len() {
        return Err(err(offset, format!("length {len} but only {} bytes left", b.len())));
    }
    if b[offsets::VERSION] != RECORD_VERSION {
        return Err(err(offset, format!("version {} (this cgleak reads {RECORD_VERSION})", b[offsets::VERSION])));
    }
    if b[offsets::KIND] != KIND_MEMCG {
        return Err(err(offset, format!("kind {} (expected {KIND_MEMCG}, a memcg)", b[offsets::KIND])));
    }
    let name_len = u16_at(b, offsets::NAME_LEN) as usize;
    if HEADER_BYTES + name_len != len {
        return Err(err(offset, format!("name of {name_len} bytes does not fill a record of {len}")));
    }
    let name = b[offsets::NAME..len].to_vec();
    if let Some(bad) = name.iter().find(|c| **c == 0 || **c == b'/') {
        return Err(err(offset, format!("name holds byte {bad:#04x}, which no cgroup name can")));
    }
    let raw = RawMemcg {
        css_flags: u32_at(b, offsets::CSS_FLAGS),
        cgroup_id: u64_at(b, offsets::CGROUP_ID),
        parent_cgroup_id: u64_at(b, offsets::PARENT_CGROUP_ID),
        depth: u32_at(b, offsets::DEPTH),
        memcg_id: u32_at(b, offsets::MEMCG_ID) as i32,
        id_refs: u32_at(b, offsets::ID_REFS) as i32,
        have: u32_at(b, offsets::HAVE),
        memory_pages: u64_at(b, offsets::MEMORY_PAGES),
        swap_pages: u64_at(b, offsets::SWAP_PAGES),
        kmem_pages: u64_at(b, offsets::KMEM_PAGES),
        file_lru_pages: u64_at(b, offsets::FILE_LRU_PAGES),
        anon_lru_pages: u64_at(b, offsets::ANON_LRU_PAGES),
        unevictable_lru_pages: u64_at(b, offsets::UNEVICTABLE_LRU_PAGES),
        name,
    };
    Ok((raw, len))
}

/// Records written one after the other (the ring buffer's items, in order).
pub fn parse_stream(mut b: &[u8]) -> Result<Vec<RawMemcg>, RecordError> {
    let mut out = Vec::with_capacity(b.len() / (HEADER_BYTES + 16));
    let mut offset = 0;
    while !b.is_empty() {
        let (r, len) = parse_record(b, offset)?;
        out.push(r);
        b = &b[len..];
        offset += len;
    }
    Ok(out)
}

/// The record the kernel side would write for `r` (tests and the fuzz target).
pub fn encode(r: &RawMemcg) -> Vec<u8> {
    let name = &r.name[..r.name.len().min(NAME_MAX)];
    let len = HEADER_BYTES + name.len();
    let mut b = vec![0u8; len];
    b[offsets::LEN..offsets::LEN + 2].copy_from_slice(&(len as u16).to_le_bytes());
    b[offsets::VERSION] = RECORD_VERSION;
    b[offsets::KIND] = KIND_MEMCG;
    b[offsets::CSS_FLAGS..][..4].copy_from_slice(&r.css_flags.to_le_bytes());
    b[offsets::CGROUP_ID..][..8].copy_from_slice(&r.cgroup_id.to_le_bytes());
    b[offsets::PARENT_CGROUP_ID..][..8].copy_from_slice(&r.parent_cgroup_id.to_le_bytes());
    b[offsets::DEPTH..][..4].copy_from_slice(&r.depth.to_le_bytes());
    b[offsets::MEMCG_ID..][..4].copy_from_slice(&r.memcg_id.to_le_bytes());
    b[offsets::ID_REFS..][..4].copy_from_slice(&r.id_refs.to_le_bytes());
    b[offsets::HAVE..][..4].copy_from_slice(&r.have.to_le_bytes());
    b[offsets::MEMORY_PAGES..][..8].copy_from_slice(&r.memory_pages.to_le_bytes());
    b[offsets::SWAP_PAGES..][..8].copy_from_slice(&r.swap_pages.to_le_bytes());
    b[offsets::KMEM_PAGES..][..8].copy_from_slice(&r.kmem_pages.to_le_bytes());
    b[offsets::FILE_LRU_PAGES..][..8].copy_from_slice(&r.file_lru_pages.to_le_bytes());
    b[offsets::ANON_LRU_PAGES..][..8].copy_from_slice(&r.anon_lru_pages.to_le_bytes());
    b[offsets::UNEVICTABLE_LRU_PAGES..][..8].copy_from_slice(&r.unevictable_lru_pages.to_le_bytes());
    b[offsets::NAME_LEN..][..2].copy_from_slice(&(name.len() as u16).to_le_bytes());
    b[offsets::NAME..].copy_from_slice(name);
    b
}

/// How the walk ended (`enum walk_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkStatus {
    /// The program never ran (the iterator was not read).
    NotRun,
    Done,
    /// The directory's hierarchy has no memory controller.
    NoMemoryCss,
    /// A kernel read failed mid-walk.
    ReadFailed,
    /// More levels above the start than the program climbs.
    TooDeep,
    /// The step ceiling (2^23) was reached.
    TooLong,
    Unknown(u32),
}

/// `struct walk_summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub status: WalkStatus,
    /// Memcgs reached (records written plus records the full ring refused).
    pub visited: u64,
    pub emitted: u64,
    pub dropped: u64,
    pub start_cgroup_id: u64,
    pub root_cgroup_id: u64,
    pub steps: u64,
    pub lru_zones: u32,
    pub nodes: u32,
}

pub fn parse_summary(b: &[u8]) -> Result<Summary, RecordError> {
    use summary_offsets as o;
    if b.len() < SUMMARY_BYTES {
        return Err(err(0, format!("summary of {} bytes, expected {SUMMARY_BYTES}", b.len())));
    }
    let version = u32_at(b, o::VERSION);
    let status = match u32_at(b, o::STATUS) {
        0 => WalkStatus::NotRun,
        1 => WalkStatus::Done,
        2 => WalkStatus::NoMemoryCss,
        3 => WalkStatus::ReadFailed,
        4 => WalkStatus::TooDeep,
        5 => WalkStatus::TooLong,
        n => WalkStatus::Unknown(n),
    };
    // A program that never ran leaves the map zeroed, version included.
    if status != WalkStatus::NotRun && version != RECORD_VERSION as u32 {
        return Err(err(0, format!("summary version {version} (this cgleak reads {RECORD_VERSION})")));
    }
    Ok(Summary {
        status,
        visited: u64_at(b, o::VISITED),
        emitted: u64_at(b, o::EMITTED),
        dropped: u64_at(b, o::DROPPED),
        start_cgroup_id: u64_at(b, o::START_CGROUP_ID),
        root_cgroup_id: u64_at(b, o::ROOT_CGROUP_ID),
        steps: u64_at(b, o::STEPS),
        lru_zones: u32_at(b, o::LRU_ZONES),
        nodes: u32_at(b, o::NODES),
    })
}

/// A record placed in its hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub raw: RawMemcg,
    /// `/` for the root, else `/<name>/.../<name>` from the root down.
    pub path: PathBuf,
    /// Pages charged to this memcg itself: its counter less its children's (page counters
    /// charge every ancestor, mm/page_counter.c page_counter_charge).
    pub local_memory_pages: u64,
}

/// Paths from parent ids, checking the pre-order tree the walk promises: one root first,
/// then every memcg after its parent, exactly one level below it, no cgroup id twice.
pub fn place(records: Vec<RawMemcg>) -> Result<Vec<Placed>, RecordError> {
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(records.len());
    let mut out: Vec<Placed> = Vec::with_capacity(records.len());
    for (i, raw) in records.into_iter().enumerate() {
        let path = if i == 0 {
            if raw.depth != 0 || raw.parent_cgroup_id != 0 {
                return Err(tree(0, format!("first record is not the root (depth {}, parent {})", raw.depth, raw.parent_cgroup_id)));
            }
            PathBuf::from("/")
        } else {
            if raw.depth == 0 || raw.parent_cgroup_id == 0 {
                return Err(tree(i, format!("memcg #{i} ({}) claims to be a second root", String::from_utf8_lossy(&raw.name))));
            }
            if raw.name.is_empty() {
                return Err(tree(i, format!("memcg #{i} below the root has no name")));
            }
            let Some(&p) = index.get(&raw.parent_cgroup_id) else {
                return Err(tree(i, format!("memcg #{i}: parent cgroup id {} not seen before it", raw.parent_cgroup_id)));
            };
            if out[p].raw.depth.checked_add(1) != Some(raw.depth) {
                return Err(tree(i, format!("memcg #{i} at depth {} below a parent at depth {}", raw.depth, out[p].raw.depth)));
            }
            out[p].path.join(OsString::from_vec(raw.name.clone()))
        };
        if index.insert(raw.cgroup_id, i).is_some() {
            return Err(tree(i, format!("cgroup id {} twice", raw.cgroup_id)));
        }
        let local = raw.memory_pages;
        out.push(Placed { raw, path, local_memory_pages: local });
    }
    // Subtract each memcg's counter from its parent's.
    for i in 1..out.len() {
        let p = index[&out[i].raw.parent_cgroup_id];
        let child = out[i].raw.memory_pages;
        out[p].local_memory_pages = out[p].local_memory_pages.saturating_sub(child);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, parent: u64, depth: u32, name: &str, pages: u64) -> RawMemcg {
        RawMemcg {
            css_flags: CSS_ONLINE,
            cgroup_id: id,
            parent_cgroup_id: parent,
            depth,
            memcg_id: id as i32,
            id_refs: 1,
            have: HAVE_LRU,
            memory_pages: pages,
            swap_pages: 0,
            kmem_pages: 0,
            file_lru_pages: pages / 2,
            anon_lru_pages: 0,
            unevictable_lru_pages: 0,
            name: name.as_bytes().to_vec(),
        }
    }

    fn stream(rs: &[RawMemcg]) -> Vec<u8> {
        rs.iter().flat_map(encode).collect()
    }

    #[test]
    fn records_round_trip_and_place_in_pre_order() {
        let rs = vec![rec(1, 0, 0, "", 100), rec(7, 1, 1, "kubepods", 60), rec(9, 7, 2, "pod1", 50), rec(8, 1, 1, "system.slice", 10)];
        let parsed = parse_stream(&stream(&rs)).unwrap();
        assert_eq!(parsed, rs);
        let placed = place(parsed).unwrap();
        let paths: Vec<_> = placed.iter().map(|p| p.path.to_str().unwrap().to_string()).collect();
        assert_eq!(paths, ["/", "/kubepods", "/kubepods/pod1", "/system.slice"]);
        let local: Vec<u64> = placed.iter().map(|p| p.local_memory_pages).collect();
        assert_eq!(local, [30, 10, 50, 10], "each counter less its children's");
    }

    #[test]
    fn malformed_records_are_refused_with_their_offset() {
        let good = encode(&rec(1, 0, 0, "", 1));
        assert!(parse_stream(&good[..HEADER_BYTES - 1]).unwrap_err().detail().contains("header needs"));
        let mut long = good.clone();
        long[0] = 200;
        assert!(parse_stream(&long).unwrap_err().detail().contains("only"));
        let mut v = good.clone();
        v[offsets::VERSION] = 2;
        assert!(parse_stream(&v).unwrap_err().detail().contains("version 2"));
        let mut k = good.clone();
        k[offsets::KIND] = 9;
        assert!(parse_stream(&k).unwrap_err().detail().contains("kind 9"));
        let slash = encode(&rec(2, 1, 1, "a/b", 1));
        let mut two = good.clone();
        two.extend_from_slice(&slash);
        let e = parse_stream(&two).unwrap_err();
        assert!(matches!(e, RecordError::Malformed { offset, .. } if offset == good.len()), "{e}");
        assert!(e.detail().contains("0x2f"), "{e}");
        let mut nl = encode(&rec(2, 1, 1, "ab", 1));
        nl[offsets::NAME_LEN] = 1;
        assert!(parse_stream(&nl).unwrap_err().detail().contains("does not fill"));
    }

    #[test]
    fn trees_that_are_not_pre_order_are_refused() {
        assert!(place(vec![rec(2, 1, 1, "a", 0)]).is_err(), "no root first");
        assert!(place(vec![rec(1, 0, 0, "", 0), rec(3, 2, 2, "b", 0)]).is_err(), "parent unseen");
        assert!(place(vec![rec(1, 0, 0, "", 0), rec(2, 1, 2, "a", 0)]).is_err(), "depth skips a level");
        assert!(place(vec![rec(1, 0, 0, "", 0), rec(2, 1, 1, "a", 0), rec(2, 1, 1, "b", 0)]).is_err(), "id twice");
        assert!(place(vec![rec(1, 0, 0, "", 0), rec(2, 1, 1, "", 0)]).is_err(), "no name");
        assert!(place(vec![rec(1, 0, 0, "", 0), rec(2, 0, 0, "x", 0)]).is_err(), "second root");
        assert_eq!(place(Vec::new()).unwrap(), Vec::new());
    }

    #[test]
    fn summary_parses_and_checks_its_version() {
        let mut b = [0u8; SUMMARY_BYTES];
        assert_eq!(parse_summary(&b).unwrap().status, WalkStatus::NotRun);
        b[0] = 1;
        b[4] = 1;
        b[8] = 3;
        let s = parse_summary(&b).unwrap();
        assert_eq!((s.status, s.visited), (WalkStatus::Done, 3));
        b[0] = 7;
        assert!(parse_summary(&b).is_err());
        assert!(parse_summary(&b[..10]).is_err());
    }
}

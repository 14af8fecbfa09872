//! The agent's memory of memcgs: every memcg it has seen (inode, path from the memory
//! hierarchy's root, first and last seen) and when its directory vanished, kept in
//! `<state-dir>/memcg-memory.jsonl`, so that on any kernel the memcgs that died while the
//! agent ran can be named, with their pod, after the fact ([`load_dead`]).
//!
//! A vanished directory is not proof of a dying memcg: the kernel does not tell which
//! removed memcg is still held (before 6.7's BPF css iterator, kernel/bpf/cgroup_iter.c
//! bpf_iter_css_new, no interface walks dying memcgs by name). The memory records `gone_at`, the first sample that no longer
//! saw the directory, and the consumer decides: the `dying` command shows the gone ones as
//! candidates while the census counts dying memcgs, newest gone first.
//!
//! The file: a header line (`{"cgleak_memcg_memory":1,"boot_id":..}`), then one memcg a
//! line (`{"inode":..,"path":"..","first_seen":<unix s>,"last_seen":..,"gone_at":..|null}`;
//! pod and container are derived from the path when read). Bounds: [`MAX_LIVE`] live
//! entries (more are not remembered, and counted), [`MAX_GONE`] gone ones (the oldest gone
//! dropped first), paths of at most [`MAX_PATH_BYTES`], lines of at most [`MAX_LINE_BYTES`],
//! at most [`MAX_FILE_BYTES`] read. The file is replaced atomically (a new file beside it,
//! fsync'd, renamed over it, the directory fsync'd), never written through a link; lines
//! that are not entries are moved to `memcg-memory.jsonl.bad` (1 MiB at most) when the agent
//! opens it, with a note. Inode numbers of cgroup directories are unique within a boot
//! (kernfs ids carry a generation in their high 32 bits on 64-bit, fs/kernfs/dir.c
//! __kernfs_new_node, 5.5+; older kernels allocate them cyclically), so the
//! memory is per boot: the agent drops a previous boot's entries at start, with a note
//! (dying memcgs do not survive a reboot).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::census::MemcgObserver;
use crate::history::{append_bad_lines, nofollow, replace_streamed, side_file};
use crate::kubepods::pod_of_path;

/// The memory's file in the agent's state directory.
pub const MEMORY_FILE: &str = "memcg-memory.jsonl";
/// Live memcgs remembered at most (the kernel allows 65535 memcg IDs; more are counted only).
pub const MAX_LIVE: usize = 100_000;
/// Gone memcgs remembered at most; past it the one gone longest ago is dropped.
pub const MAX_GONE: usize = 20_000;
/// A path longer than this is not remembered (a pod's container path is ~150 bytes).
pub const MAX_PATH_BYTES: usize = 1024;
/// A line longer than this is not an entry.
pub const MAX_LINE_BYTES: usize = 2048;
/// What one read of the file takes at most: every entry of the bounds at its longest line.
pub const MAX_FILE_BYTES: u64 = ((MAX_LIVE + MAX_GONE) * MAX_LINE_BYTES) as u64;
/// Without changes, the file is rewritten this often, to refresh `last_seen` on disk.
pub const REFRESH_SECS: i64 = 600;

/// A memcg the agent remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RememberedMemcg {
    /// Its directory's inode (what /proc/kpagecgroup reports for its pages while it is online).
    pub inode: u64,
    /// Relative to the memory hierarchy's root, without a leading `/` (`kubepods/burstable/pod<uid>/<id>`).
    pub path: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// When the agent first saw it.
    pub first_seen: jiff::Timestamp,
    /// The last sample that saw it (on disk: refreshed at each save, at least every [`REFRESH_SECS`]).
    pub last_seen: jiff::Timestamp,
    /// The first sample that no longer saw its directory: it was removed between `last_seen` and this.
    pub gone_at: Option<jiff::Timestamp>,
}

/// Why the memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{}: {source}", .file.display())]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{}: line {line}: {why} (the agent moves such lines aside when it starts)", .file.display())]
    Corrupt { file: PathBuf, line: usize, why: String },
    #[error("{}: larger than the {} MiB a memory can hold: not read", .file.display(), MAX_FILE_BYTES >> 20)]
    TooLarge { file: PathBuf },
}

/// One line of the file, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    inode: u64,
    path: String,
    first_seen: i64,
    last_seen: i64,
    gone_at: Option<i64>,
}

/// [`Line`] as written, borrowing the path.
#[derive(Serialize)]
struct LineRef<'a> {
    inode: u64,
    path: &'a str,
    first_seen: i64,
    last_seen: i64,
    gone_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    cgleak_memcg_memory: u32,
    boot_id: Option<String>,
}

/// What a read of the file found.
#[derive(Debug, Default)]
pub struct MemoryFile {
    pub boot_id: Option<String>,
    pub live: Vec<RememberedMemcg>,
    /// Newest gone first.
    pub gone: Vec<RememberedMemcg>,
    /// Lines that are not entries (not UTF-8, not an entry's JSON, too long, a path too long), kept byte for byte.
    pub bad: Vec<(usize, Vec<u8>)>,
    /// Bad lines past the first 1 MiB of them: counted only.
    pub bad_not_kept: usize,
    /// Entries past the bounds: counted, not kept.
    pub over_bounds: usize,
}

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn remembered(l: Line) -> RememberedMemcg {
    let pod = pod_of_path(&l.path);
    RememberedMemcg {
        inode: l.inode,
        pod_uid: pod.as_ref().map(|p| p.uid.clone()),
        container_id: pod.and_then(|p| p.container_id),
        path: l.path,
        first_seen: ts(l.first_seen),
        last_seen: ts(l.last_seen),
        gone_at: l.gone_at.map(ts),
    }
}

/// Read the memory at `file`: Ok(None) when it is not there. Bad lines are returned, not
/// fatal; a file that is not a regular file, or is a link, is an error.
pub fn read_file(file: &Path) -> Result<Option<MemoryFile>, MemoryError> {
    let io = |source| MemoryError::Io { file: file.to_path_buf(), source };
    let f = match nofollow(OpenOptions::new().read(true)).open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(io(std::io::Error::other("a symbolic link: not followed"))),
        Err(e) => return Err(io(e)),
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(MemoryError::TooLarge { file: file.to_path_buf() });
    }
    // The size checked above may grow meanwhile: the read itself is bounded too.
    let mut r = BufReader::new(f.take(MAX_FILE_BYTES));
    let mut out = MemoryFile::default();
    let (mut bad_bytes, mut buf, mut no) = (0usize, Vec::new(), 0usize);
    let mut live: Vec<RememberedMemcg> = Vec::new();
    let mut gone: Vec<RememberedMemcg> = Vec::new();
    loop {
        buf.clear();
        // At most one line past the bound is held: a longer one is read in pieces and dropped.
        let n = read_line_bounded(&mut r, &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        no += 1;
        let whole = buf.last() == Some(&b'\n');
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let parsed = if n > MAX_LINE_BYTES {
            Err("longer than a line may be".to_string())
        } else if !whole {
            Err("cut short (no newline)".to_string())
        } else {
            parse_line(no, text, &mut out.boot_id)
        };
        match parsed {
            Ok(Some(l)) if l.gone_at.is_some() => gone.push(remembered(l)),
            Ok(Some(l)) => live.push(remembered(l)),
            Ok(None) => {}
            Err(_) => {
                let kept = text.len().min(MAX_LINE_BYTES);
                if bad_bytes + kept <= crate::forecast::BAD_LINES_KEPT_BYTES {
                    bad_bytes += kept;
                    out.bad.push((no, text[..kept].to_vec()));
                } else {
                    out.bad_not_kept += 1;
                }
            }
        }
    }
    gone.sort_by(|a, b| b.gone_at.cmp(&a.gone_at).then(b.inode.cmp(&a.inode)));
    if gone.len() > MAX_GONE {
        out.over_bounds += gone.len() - MAX_GONE;
        gone.truncate(MAX_GONE);
    }
    if live.len() > MAX_LIVE {
        out.over_bounds += live.len() - MAX_LIVE;
        live.truncate(MAX_LIVE);
    }
    out.live = live;
    out.gone = gone;
    Ok(Some(out))
}

/// A line into `buf` (with its newline), keeping at most [`MAX_LINE_BYTES`] + 1 bytes of it:
/// the number of bytes the line had.
fn read_line_bounded(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        total += take;
        r.consume(take);
        if done {
            return Ok(total);
        }
    }
}

/// One line: an entry, the header (Ok(None), its boot id taken), or why it is neither.
fn parse_line(no: usize, text: &[u8], boot_id: &mut Option<String>) -> Result<Option<Line>, String> {
    let s = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    if no == 1 {
        if let Ok(h) = serde_json::from_str::<Header>(s) {
            if h.cgleak_memcg_memory != 1 {
                return Err(format!("a memory of version {}, not 1", h.cgleak_memcg_memory));
            }
            *boot_id = h.boot_id;
            return Ok(None);
        }
    }
    let l: Line = serde_json::from_str(s).map_err(|e| format!("not an entry: {e}"))?;
    if l.path.len() > MAX_PATH_BYTES {
        return Err("a path longer than a memory keeps".into());
    }
    Ok(Some(l))
}

/// The memcgs whose directory vanished while the agent ran, newest gone first; empty when
/// no agent kept a memory in `state_dir`. Which of them are still dying the kernel does not
/// say: a consumer that knows the census's count of dying memcgs (`memcg.dying`) can show at
/// most that many, newest gone first (memcgs removed long ago are the likeliest released),
/// and say that they are candidates. A corrupt file is refused (the error names it and
/// the first bad line); the agent repairs it when it next starts. The file holds one boot's
/// memcgs: after a reboot, until the agent starts again, they are the previous boot's (see
/// [`load_dead_for_boot`]).
pub fn load_dead(state_dir: &Path) -> Result<Vec<RememberedMemcg>, MemoryError> {
    let file = state_dir.join(MEMORY_FILE);
    let Some(m) = read_file(&file)? else { return Ok(Vec::new()) };
    if let Some((line, text)) = m.bad.first() {
        let why = parse_line(*line, text, &mut None).err().unwrap_or_else(|| "longer than a line may be, or cut short".into());
        return Err(MemoryError::Corrupt { file, line: *line, why });
    }
    Ok(m.gone)
}

/// [`load_dead`], empty when the memory is of another boot than `boot_id`
/// (/proc/sys/kernel/random/boot_id) or says none.
pub fn load_dead_for_boot(state_dir: &Path, boot_id: &str) -> Result<Vec<RememberedMemcg>, MemoryError> {
    let file = state_dir.join(MEMORY_FILE);
    let boot = read_file(&file)?.and_then(|m| m.boot_id);
    if boot.as_deref() != Some(boot_id) {
        return Ok(Vec::new());
    }
    load_dead(state_dir)
}

/// One remembered memcg in memory. A live memcg whose parent is remembered too keeps only
/// its name (its path is its parent's and its name: a container's 64-hex name, not the
/// 130-byte path, for 30,000 memcgs 2 MB less); others, and every gone one, keep the whole
/// path. Pod and container are derived from the path when asked.
#[derive(Debug, Clone)]
struct Entry {
    /// The parent's inode, a remembered live memcg; 0: `name` is the whole path.
    parent: u64,
    name: Box<str>,
    first_seen: i64,
    last_seen: i64,
    /// The sample that last saw it.
    seen_in: u32,
}

/// What one sample changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SampleChanges {
    pub new: usize,
    pub gone: usize,
    /// Memcgs seen but not remembered: past [`MAX_LIVE`], or a path past [`MAX_PATH_BYTES`].
    pub not_remembered: usize,
}

/// The agent's memory of memcgs, mirrored to `<state-dir>/memcg-memory.jsonl` when writable.
/// A sample is [`begin`](Self::begin), then every memcg of the census walk
/// ([`MemcgObserver`]), then [`end`](Self::end); [`save`](Self::save) writes the file when
/// something changed, or every [`REFRESH_SECS`].
pub struct MemcgMemory {
    file: Option<PathBuf>,
    boot_id: Option<String>,
    /// The live memcgs, by inode (sorted: a third of a hash table's memory, measured in the
    /// agent's peak RSS with 30,000 memcgs).
    live: Vec<(u64, Entry)>,
    /// Memcgs first seen in this sample, merged into `live` at its end, and where each is.
    fresh: Vec<(u64, Entry)>,
    fresh_index: HashMap<u64, usize>,
    /// Ordered by gone_at, oldest first (samples only add newer ones).
    gone: std::collections::VecDeque<(u64, Entry, i64)>,
    sample: u32,
    now: i64,
    changes: SampleChanges,
    dirty: bool,
    last_save: Option<i64>,
}

impl MemcgMemory {
    /// A memory kept in memory only.
    pub fn in_memory(boot_id: Option<String>) -> MemcgMemory {
        MemcgMemory {
            file: None,
            boot_id,
            live: Vec::new(),
            fresh: Vec::new(),
            fresh_index: HashMap::new(),
            gone: Default::default(),
            sample: 0,
            now: 0,
            changes: SampleChanges::default(),
            dirty: false,
            last_save: None,
        }
    }

    /// The memory in `state_dir` (made when missing), mirrored to its file from now on; in
    /// memory only when the directory or file cannot be used. A previous boot's entries are
    /// dropped, lines that are not entries moved to the `.bad` file beside it: each said to
    /// `note`, as is what cannot be done.
    pub fn open(state_dir: &Path, boot_id: Option<String>, note: &mut dyn FnMut(String)) -> MemcgMemory {
        let path = state_dir.join(MEMORY_FILE);
        let mut m = MemcgMemory::in_memory(boot_id);
        m.file = Some(path.clone());
        match read_file(&path) {
            Ok(None) => {}
            Ok(Some(f)) => {
                if !f.bad.is_empty() || f.bad_not_kept > 0 {
                    let bad = side_file(&path);
                    let lines: Vec<Vec<u8>> = f.bad.iter().map(|(_, l)| l.clone()).collect();
                    let n = f.bad.len() + f.bad_not_kept;
                    match append_bad_lines(&bad, &lines) {
                        Ok(kept) => note(format!(
                            "{}: {n} lines are not memcg entries (not UTF-8, not an entry's JSON, too long, or cut short): {kept} moved to {}{}",
                            path.display(),
                            bad.display(),
                            if (kept as usize) < n { ", the rest only counted (past the side file's 1 MiB)" } else { "" }
                        )),
                        Err(e) => note(format!("{}: {n} lines are not memcg entries; {} could not take them: {e}", path.display(), bad.display())),
                    }
                }
                if f.over_bounds > 0 {
                    note(format!("{}: {} entries past the memory's bounds ({MAX_LIVE} live, {MAX_GONE} gone) are dropped, the oldest gone first", path.display(), f.over_bounds));
                }
                if f.boot_id.is_some() && f.boot_id == m.boot_id {
                    for r in f.live {
                        m.live.push((r.inode, Entry { parent: 0, name: r.path.into(), first_seen: r.first_seen.as_second(), last_seen: r.last_seen.as_second(), seen_in: 0 }));
                    }
                    m.live.sort_unstable_by_key(|(i, _)| *i);
                    m.live.dedup_by_key(|(i, _)| *i);
                    for r in f.gone.into_iter().rev() {
                        let at = r.gone_at.map_or(0, |t| t.as_second());
                        m.gone.push_back((r.inode, Entry { parent: 0, name: r.path.into(), first_seen: r.first_seen.as_second(), last_seen: r.last_seen.as_second(), seen_in: 0 }, at));
                    }
                } else if !f.live.is_empty() || !f.gone.is_empty() {
                    note(format!(
                        "{}: {} live and {} gone memcgs of another boot ({}) are dropped: dying memcgs do not outlive a reboot",
                        path.display(),
                        f.live.len(),
                        f.gone.len(),
                        f.boot_id.as_deref().unwrap_or("unknown")
                    ));
                }
            }
            Err(e) => note(format!("{e}: replaced by the agent's memory from now")),
        }
        let r = std::fs::create_dir_all(state_dir).map_err(|e| e.to_string()).and_then(|_| m.write());
        if let Err(e) = r {
            note(format!("memory of memcgs kept in memory only ({}: {e})", path.display()));
            m.file = None;
        }
        m
    }

    /// Start a sample taken at `now`.
    pub fn begin(&mut self, now: jiff::Timestamp) {
        self.sample = self.sample.wrapping_add(1);
        self.now = now.as_second();
        self.changes = SampleChanges::default();
    }

    /// One memcg of this sample, its path relative to the hierarchy's root.
    pub fn seen(&mut self, inode: u64, path: impl FnOnce() -> Option<String>) {
        self.seen_under(inode, 0, "", path)
    }

    /// One memcg of this sample: its parent's inode and its name, and its whole path (made
    /// only when needed: new, and its parent not remembered).
    pub fn seen_under(&mut self, inode: u64, parent: u64, name: &str, path: impl FnOnce() -> Option<String>) {
        let under = parent != 0 && parent != inode && !name.is_empty() && self.get(parent).is_some();
        let (sample, now) = (self.sample, self.now);
        if let Some(e) = self.get_mut(inode) {
            e.seen_in = sample;
            e.last_seen = now;
            // Read back from the file with its whole path: its name will do from now.
            if e.parent == 0 && under {
                e.parent = parent;
                e.name = name.into();
            }
            return;
        }
        if self.live_len() >= MAX_LIVE {
            self.changes.not_remembered += 1;
            return;
        }
        let entry = if under && name.len() <= MAX_PATH_BYTES && self.depth_ok(parent, name.len()) {
            Entry { parent, name: name.into(), first_seen: self.now, last_seen: self.now, seen_in: self.sample }
        } else {
            let Some(path) = path().filter(|p| p.len() <= MAX_PATH_BYTES) else {
                self.changes.not_remembered += 1;
                return;
            };
            Entry { parent: 0, name: path.into(), first_seen: self.now, last_seen: self.now, seen_in: self.sample }
        };
        self.fresh_index.insert(inode, self.fresh.len());
        self.fresh.push((inode, entry));
        self.changes.new += 1;
        self.dirty = true;
    }

    /// A remembered live memcg.
    fn get(&self, inode: u64) -> Option<&Entry> {
        match self.live.binary_search_by_key(&inode, |(i, _)| *i) {
            Ok(k) => Some(&self.live[k].1),
            Err(_) => self.fresh_index.get(&inode).map(|k| &self.fresh[*k].1),
        }
    }

    fn get_mut(&mut self, inode: u64) -> Option<&mut Entry> {
        match self.live.binary_search_by_key(&inode, |(i, _)| *i) {
            Ok(k) => Some(&mut self.live[k].1),
            Err(_) => self.fresh_index.get(&inode).map(|k| &mut self.fresh[*k].1),
        }
    }

    /// Whether a child of `parent` named with `len` bytes has a path within [`MAX_PATH_BYTES`].
    fn depth_ok(&self, parent: u64, len: usize) -> bool {
        let mut total = len;
        let mut p = parent;
        while p != 0 {
            let Some(e) = self.get(p) else { return false };
            total += e.name.len() + 1;
            if total > MAX_PATH_BYTES {
                return false;
            }
            p = e.parent;
        }
        true
    }

    /// The whole path of a live entry, from its remembered ancestors.
    fn path_of(&self, e: &Entry) -> String {
        let mut parts = vec![&*e.name];
        let mut p = e.parent;
        // Paths are at most MAX_PATH_BYTES: no chain is longer than that.
        while p != 0 && parts.len() <= MAX_PATH_BYTES {
            match self.get(p) {
                Some(pe) => {
                    parts.push(&pe.name);
                    p = pe.parent;
                }
                None => break,
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// End the sample: every remembered live memcg it did not see is gone now. Call only
    /// after a census that walked the whole hierarchy.
    pub fn end(&mut self) -> SampleChanges {
        let sample = self.sample;
        let mut gone: Vec<(u64, Entry)> = self
            .live
            .iter()
            .filter(|(_, e)| e.seen_in != sample)
            // Whole paths first, while every ancestor is still remembered.
            .map(|(i, e)| (*i, Entry { parent: 0, name: self.path_of(e).into(), first_seen: e.first_seen, last_seen: e.last_seen, seen_in: e.seen_in }))
            .collect();
        // Ties of gone_at go by inode, as the file is read back (newest first, higher inode first).
        gone.sort_unstable_by_key(|(i, _)| *i);
        if !gone.is_empty() {
            self.live.retain(|(_, e)| e.seen_in == sample);
        }
        for (inode, e) in gone {
            self.gone.push_back((inode, e, self.now));
            self.changes.gone += 1;
        }
        // The new ones join the sorted live memcgs; the index goes (its memory too).
        if !self.fresh.is_empty() {
            self.fresh_index = HashMap::new();
            let mut fresh = std::mem::take(&mut self.fresh);
            self.live.reserve_exact(fresh.len());
            self.live.append(&mut fresh);
            self.live.sort_unstable_by_key(|(i, _)| *i);
        }
        while self.gone.len() > MAX_GONE {
            self.gone.pop_front();
        }
        if self.changes.gone > 0 {
            self.dirty = true;
        }
        self.changes
    }

    /// A whole sample from a list (tests, and callers without a census walk).
    pub fn observe(&mut self, now: jiff::Timestamp, memcgs: impl IntoIterator<Item = (u64, String)>) -> SampleChanges {
        self.begin(now);
        for (inode, path) in memcgs {
            self.seen(inode, || Some(path));
        }
        self.end()
    }

    /// Write the file when something changed since the last write, or [`REFRESH_SECS`] after
    /// it; a file that cannot be written is given up, with a note. Whether it wrote.
    pub fn save(&mut self, note: &mut dyn FnMut(String)) -> bool {
        let due = self.dirty || self.last_save.is_none_or(|t| self.now - t >= REFRESH_SECS);
        if self.file.is_none() || !due {
            return false;
        }
        match self.write() {
            Ok(()) => true,
            Err(e) => {
                note(format!("memory of memcgs kept in memory only from now ({}: {e})", self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()));
                self.file = None;
                false
            }
        }
    }

    fn write(&mut self) -> Result<(), String> {
        let Some(path) = self.file.clone() else { return Ok(()) };
        replace_streamed(&path, |w| self.write_text(w))?;
        self.dirty = false;
        self.last_save = Some(self.now);
        Ok(())
    }

    /// The file's text: the header, the live memcgs by inode, the gone ones oldest first;
    /// streamed, so that a save holds no copy of the file in memory.
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let header = Header { cgleak_memcg_memory: 1, boot_id: self.boot_id.clone() };
        serde_json::to_writer(&mut *out, &header)?;
        out.write_all(b"\n")?;

        let line = |out: &mut dyn Write, inode: u64, e: &Entry, gone_at: Option<i64>| -> std::io::Result<()> {
            let path = if e.parent == 0 { std::borrow::Cow::Borrowed(&*e.name) } else { std::borrow::Cow::Owned(self.path_of(e)) };
            let l = LineRef { inode, path: &path, first_seen: e.first_seen, last_seen: e.last_seen, gone_at };
            serde_json::to_writer(&mut *out, &l)?;
            out.write_all(b"\n")
        };
        // Sorted by inode (a save comes after a sample's end, when none is fresh).
        for (i, e) in self.live.iter().chain(&self.fresh) {
            line(out, *i, e, None)?;
        }
        for (i, e, at) in &self.gone {
            line(out, *i, e, Some(*at))?;
        }
        Ok(())
    }

    pub fn live_len(&self) -> usize {
        self.live.len() + self.fresh.len()
    }

    /// The gone memcgs, newest gone first.
    pub fn dead(&self) -> Vec<RememberedMemcg> {
        self.gone
            .iter()
            .rev()
            .map(|(i, e, at)| remembered(Line { inode: *i, path: e.name.to_string(), first_seen: e.first_seen, last_seen: e.last_seen, gone_at: Some(*at) }))
            .collect()
    }

    /// Whether the file is still written.
    pub fn is_persistent(&self) -> bool {
        self.file.is_some()
    }
}

impl MemcgObserver for MemcgMemory {
    fn memcg(&mut self, inode: u64, parent_inode: u64, parent: &[CString], name: &CStr) {
        let Ok(short) = name.to_str() else {
            self.changes.not_remembered += 1;
            return;
        };
        self.seen_under(inode, parent_inode, short, || {
            let len = parent.iter().map(|c| c.as_bytes().len() + 1).sum::<usize>() + name.to_bytes().len();
            if len > MAX_PATH_BYTES {
                return None;
            }
            let mut p = String::with_capacity(len);
            for c in parent.iter().map(|c| c.as_c_str()).chain(std::iter::once(name)) {
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(c.to_str().ok()?);
            }
            Some(p)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const UID: &str = "0b1f2c3d-4e5f-6789-abcd-ef0123456789";

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn boot() -> Option<String> {
        Some("b0".into())
    }

    fn cgroupfs_path(c: &str) -> String {
        format!("kubepods/burstable/pod{UID}/{c}")
    }

    fn systemd_path(c: &str) -> String {
        format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{c}.scope", UID.replace('-', "_"))
    }

    #[test]
    fn a_vanished_directory_is_remembered_gone_with_its_pod_from_both_drivers_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let mut notes = Vec::new();
        let mut m = MemcgMemory::open(t.path(), boot(), &mut |n| notes.push(n));
        assert!(notes.is_empty(), "{notes:?}");
        let all = vec![(10, "kubepods".to_string()), (11, cgroupfs_path("aaa")), (12, systemd_path("bbb")), (13, "system.slice".into())];
        assert_eq!(m.observe(at(0), all.clone()), SampleChanges { new: 4, gone: 0, not_remembered: 0 });
        assert!(m.save(&mut |n| notes.push(n)));
        assert!(load_dead(t.path()).unwrap().is_empty());
        // 11 goes at 30 s, 12 at 60 s.
        assert_eq!(m.observe(at(30), vec![all[0].clone(), all[2].clone(), all[3].clone()]).gone, 1);
        m.save(&mut |n| notes.push(n));
        assert_eq!(m.observe(at(60), vec![all[0].clone(), all[3].clone()]).gone, 1);
        // Nothing changed: not written again before REFRESH_SECS.
        m.save(&mut |n| notes.push(n));
        assert_eq!(m.observe(at(90), vec![all[0].clone(), all[3].clone()]), SampleChanges::default());
        assert!(!m.save(&mut |n| notes.push(n)));
        let dead = load_dead(t.path()).unwrap();
        assert_eq!(dead, m.dead());
        assert_eq!(dead.iter().map(|d| d.inode).collect::<Vec<_>>(), vec![12, 11], "newest gone first");
        assert_eq!((dead[0].pod_uid.as_deref(), dead[0].container_id.as_deref()), (Some(UID), Some("bbb")));
        assert_eq!((dead[1].pod_uid.as_deref(), dead[1].container_id.as_deref()), (Some(UID), Some("aaa")));
        assert_eq!((dead[1].first_seen, dead[1].last_seen, dead[1].gone_at), (at(0), at(0), Some(at(30))));
        assert_eq!(dead[0].gone_at, Some(at(60)));
        assert_eq!(load_dead_for_boot(t.path(), "b0").unwrap().len(), 2);
        assert!(load_dead_for_boot(t.path(), "b1").unwrap().is_empty());
        // Opened again in the same boot: everything back; a memcg still there stays live.
        let mut again = MemcgMemory::open(t.path(), boot(), &mut |n| notes.push(n));
        assert_eq!(again.dead(), dead);
        assert_eq!(again.live_len(), 2);
        assert_eq!(again.observe(at(120), vec![all[0].clone(), all[3].clone()]), SampleChanges::default());
        // Another boot: dropped, with a note.
        notes.clear();
        let other = MemcgMemory::open(t.path(), Some("b1".into()), &mut |n| notes.push(n));
        assert!(other.dead().is_empty() && other.live_len() == 0);
        assert!(notes.iter().any(|n| n.contains("2 live and 2 gone memcgs of another boot (b0)")), "{notes:?}");
        assert!(load_dead(t.path()).unwrap().is_empty());
    }

    #[test]
    fn no_state_dir_means_no_dead_and_a_missing_file_is_empty() {
        let t = tempfile::tempdir().unwrap();
        assert!(load_dead(&t.path().join("nope")).unwrap().is_empty());
        assert!(load_dead(t.path()).unwrap().is_empty());
    }

    #[test]
    fn bounds_keep_the_newest_gone_and_count_what_is_not_remembered() {
        let mut m = MemcgMemory::in_memory(boot());
        // MAX_GONE + 5 memcgs gone over time, 100 a sample.
        let total = MAX_GONE as u64 + 500;
        let mut next = 0u64;
        let mut s = 0;
        while next < total {
            let batch: Vec<(u64, String)> = (next..(next + 100).min(total)).map(|i| (i, format!("a/{i}"))).collect();
            m.observe(at(s), batch);
            s += 1;
            next += 100;
        }
        m.observe(at(s), Vec::new());
        let dead = m.dead();
        assert_eq!(dead.len(), MAX_GONE);
        assert_eq!(dead[0].inode, total - 1, "the newest gone first");
        assert_eq!(dead.last().unwrap().inode, 500, "the 500 gone longest ago were dropped");
        // A path past the bound is not remembered, and said.
        let long = "x/".repeat(MAX_PATH_BYTES);
        let c = m.observe(at(s + 1), vec![(1 << 40, long)]);
        assert_eq!((c.new, c.not_remembered), (0, 1));
        // Past MAX_LIVE, new memcgs are counted only.
        let mut big = MemcgMemory::in_memory(boot());
        let c = big.observe(at(0), (0..MAX_LIVE as u64 + 3).map(|i| (i, format!("p/{i}"))));
        assert_eq!((c.new, c.not_remembered, big.live_len()), (MAX_LIVE, 3, MAX_LIVE));
    }

    #[test]
    fn corrupt_lines_are_refused_by_readers_and_moved_aside_by_the_agent() {
        let t = tempfile::tempdir().unwrap();
        let mut m = MemcgMemory::open(t.path(), boot(), &mut |_| {});
        m.observe(at(0), vec![(1, cgroupfs_path("a")), (2, cgroupfs_path("b"))]);
        m.observe(at(30), vec![(2, cgroupfs_path("b"))]);
        m.save(&mut |_| {});
        let file = t.path().join(MEMORY_FILE);
        let good = fs::read(&file).unwrap();
        let mut text = good.clone();
        text.extend_from_slice(b"{\"inode\":3,\"path\":\"torn\xff\n");
        text.extend_from_slice(&vec![b'z'; 5000]);
        text.push(b'\n');
        text.extend_from_slice(b"{\"inode\":4,\"pa");
        fs::write(&file, &text).unwrap();
        let e = load_dead(t.path()).unwrap_err();
        assert!(matches!(e, MemoryError::Corrupt { line: 4, .. }), "{e}");
        assert!(e.to_string().contains("memcg-memory.jsonl: line 4: not UTF-8"), "{e}");
        let mut notes = Vec::new();
        let again = MemcgMemory::open(t.path(), boot(), &mut |n| notes.push(n));
        assert!(notes.iter().any(|n| n.contains("3 lines are not memcg entries") && n.contains("3 moved to")), "{notes:?}");
        assert_eq!(again.dead().len(), 1, "the good entries are kept");
        assert_eq!(fs::read(&file).unwrap(), good, "the file is rewritten from the good entries");
        let bad = fs::read(t.path().join("memcg-memory.jsonl.bad")).unwrap();
        assert!(bad.starts_with(b"{\"inode\":3,\"path\":\"torn\xff\n") && bad.ends_with(b"{\"inode\":4,\"pa\n"));
        assert_eq!(bad.len(), 24 + 1 + MAX_LINE_BYTES + 1 + 14 + 1, "a long line is kept up to the line bound");
        assert_eq!(load_dead(t.path()).unwrap().len(), 1);
    }

    #[test]
    fn links_and_odd_files_are_not_followed_nor_read() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        fs::write(&target, "precious\n").unwrap();
        let dir = t.path().join("state");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&target, dir.join(MEMORY_FILE)).unwrap();
        assert!(load_dead(&dir).unwrap_err().to_string().contains("symbolic link"));
        let mut notes = Vec::new();
        let mut m = MemcgMemory::open(&dir, boot(), &mut |n| notes.push(n));
        assert!(notes.iter().any(|n| n.contains("replaced")), "{notes:?}");
        m.observe(at(0), vec![(1, "a".into())]);
        m.save(&mut |_| {});
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n", "the link's target is untouched");
        assert!(fs::symlink_metadata(dir.join(MEMORY_FILE)).unwrap().file_type().is_file());
        // A file past the read bound is refused without being read (sparse: no disk used).
        let f = fs::File::create(dir.join(MEMORY_FILE)).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(matches!(load_dead(&dir).unwrap_err(), MemoryError::TooLarge { .. }));
    }

    #[test]
    fn the_observer_builds_paths_from_the_walk() {
        let mut m = MemcgMemory::in_memory(boot());
        m.begin(at(0));
        let parent = [CString::new("kubepods").unwrap(), CString::new("burstable").unwrap(), CString::new(format!("pod{UID}")).unwrap()];
        // Parents before children, as the walk visits them; 1 is the hierarchy's root.
        m.memcg(8, 1, &[], c"kubepods");
        m.memcg(9, 8, &parent[..1], c"burstable");
        m.memcg(10, 9, &parent[..2], parent[2].as_c_str());
        m.memcg(7, 10, &parent, c"abc");
        // A child of a memcg not remembered: its whole path is kept.
        m.memcg(11, 99, &parent, c"def");
        assert_eq!(m.end().new, 5);
        assert_eq!(m.get(7).map(|e| (e.parent, &*e.name)), Some((10, "abc")), "a name under its remembered parent");
        assert_eq!(m.get(11).map(|e| e.parent), Some(0));
        let t = tempfile::tempdir().unwrap();
        m.file = Some(t.path().join(MEMORY_FILE));
        m.write().unwrap();
        let text = fs::read_to_string(t.path().join(MEMORY_FILE)).unwrap();
        assert!(text.contains(&format!("{{\"inode\":7,\"path\":\"{}\",", cgroupfs_path("abc"))), "{text}");
        assert!(text.contains(&format!("{{\"inode\":11,\"path\":\"{}\",", cgroupfs_path("def"))), "{text}");
        // The pod goes, and its container with it: both with their whole paths.
        m.observe(at(30), vec![(8, "kubepods".into()), (9, "kubepods/burstable".into())]);
        let d = m.dead();
        assert_eq!(d.len(), 3);
        let c = d.iter().find(|d| d.inode == 7).unwrap();
        assert_eq!((c.path.as_str(), c.pod_uid.as_deref(), c.container_id.as_deref()), (cgroupfs_path("abc").as_str(), Some(UID), Some("abc")));
        let p = d.iter().find(|d| d.inode == 10).unwrap();
        assert_eq!((p.path.as_str(), p.pod_uid.as_deref(), p.container_id.as_deref()), (format!("kubepods/burstable/pod{UID}").as_str(), Some(UID), None));
        // Read back, an entry with its whole path takes its name under its parent when seen again.
        let mut again = MemcgMemory::open(t.path(), boot(), &mut |_| {});
        again.begin(at(60));
        again.memcg(8, 1, &[], c"kubepods");
        again.memcg(9, 8, &parent[..1], c"burstable");
        again.end();
        assert_eq!(again.get(9).map(|e| (e.parent, &*e.name)), Some((8, "burstable")));
    }

    /// What a save of a 30,000-memcg memory costs (the agent's cost target is 0.5% of a core
    /// at 30 s): printed, and bounded loosely so that a pathological slowdown fails.
    #[test]
    fn a_sample_and_a_save_of_30000_memcgs_are_cheap() {
        let t = tempfile::tempdir().unwrap();
        let mut m = MemcgMemory::open(t.path(), boot(), &mut |_| {});
        // As the walk tells them: kubepods, burstable, 7,500 pods of 3 containers (and one container fewer the second time).
        let sample = |m: &mut MemcgMemory, s: i64, skip: bool| {
            m.begin(at(s));
            m.seen_under(2, 1, "kubepods", || unreachable!("under the root: a name"));
            m.seen_under(3, 2, "burstable", || unreachable!());
            for p in 0..7_500u64 {
                let pod = 1_000_000 + 4 * p;
                m.seen_under(pod, 3, &format!("pod{p:08x}-0000-0000-0000-000000000000"), || unreachable!());
                for c in 1..4 {
                    if !(skip && p == 0 && c == 1) {
                        m.seen_under(pod + c, pod, &format!("{:064x}", pod + c), || unreachable!());
                    }
                }
            }
            m.end()
        };
        // Top-level memcgs (parent: the root, not remembered) keep their whole path.
        m.begin(at(0));
        m.seen(2, || Some("kubepods".into()));
        m.end();
        sample(&mut m, 0, false);
        let started = std::time::Instant::now();
        let c = sample(&mut m, 30, true);
        let observed = started.elapsed();
        assert_eq!((c.gone, m.live_len()), (1, 30_001));
        assert_eq!(m.dead()[0].path, format!("kubepods/burstable/pod00000000-0000-0000-0000-000000000000/{:064x}", 1_000_001));
        // CPU time of this thread (the save's fsync waits without it).
        let cpu = || {
            // SAFETY: getrusage fills the struct it is given.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
            std::time::Duration::new(ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64, 0)
                + std::time::Duration::from_micros(ru.ru_utime.tv_usec as u64 + ru.ru_stime.tv_usec as u64)
        };
        let (started, cpu0) = (std::time::Instant::now(), cpu());
        assert!(m.save(&mut |_| {}));
        let (saved, saved_cpu) = (started.elapsed(), cpu() - cpu0);
        let size = fs::metadata(t.path().join(MEMORY_FILE)).unwrap().len();
        let text = fs::read_to_string(t.path().join(MEMORY_FILE)).unwrap();
        assert!(text.contains(&format!("\"path\":\"kubepods/burstable/pod00001d4b-0000-0000-0000-000000000000/{:064x}\"", 1_000_000 + 4 * 0x1d4b + 3)));
        eprintln!("30,000 memcgs: a sample {observed:?} (with the test's own formatting), save {saved:?}, of which CPU {saved_cpu:?} ({size} bytes)");
        assert!(saved < std::time::Duration::from_secs(2), "{saved:?}");
    }
}

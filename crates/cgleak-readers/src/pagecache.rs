//! Which memcgs a file's cached pages are charged to: page cache is what pins most dying
//! memcgs (a charged page holds a reference on its memcg until it is freed,
//! mm/memcontrol.c commit_charge / uncharge_folio), and a file that a dead container wrote keeps its pages,
//! and their charge, after the container is gone.
//!
//! For each candidate file: `mincore(2)` on a read-only shared map tells which pages are in
//! the page cache (no page is read for that). To learn a page's memcg its frame number is
//! needed, which `/proc/self/pagemap` gives only for pages mapped in this process: runs of
//! pages that mincore found resident are mapped with `MADV_POPULATE_READ` (5.14+; an error,
//! not a SIGBUS, if the file shrank meanwhile), on a map marked `MADV_RANDOM` so that no
//! readahead brings in neighbours. Then `/proc/self/pagemap` gives the PFN (zeroed without
//! CAP_SYS_ADMIN, Documentation/admin-guide/mm/pagemap.rst) and `/proc/kpagecgroup` the
//! inode of the memcg charged (CONFIG_MEMCG and CONFIG_PROC_PAGE_MONITOR).
//!
//! What kpagecgroup reports for a page charged to a memcg that is no longer online is the
//! inode of its nearest online ancestor: mm/memcontrol.c page_cgroup_ino() walks up
//! `while (memcg && !(memcg->css.flags & CSS_ONLINE))` (so since v4.3, commit 2fc045247089
//! "memcg: add page_cgroup_ino helper", and still in 6.18). A dying memcg's pages are
//! therefore seen under its parent's (or a further ancestor's) inode, never its own: the
//! bytes show which files pin something below that ancestor, not which dying child.
//!
//! Limits: at most `max_files` files, at most `max_mapped_bytes` mapped at a time. A page
//! evicted between mincore and the populate is read back in (one page: no readahead),
//! charged to this process's memcg, and reported under that memcg's inode.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{openat, FileType, Mode, OFlags};
use serde::Serialize;

use crate::beneath;
use crate::error::Result;
use crate::host::HostPaths;

/// Bounds of one [`pinning_files`].
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// Regular files examined at most (directories given are walked until then).
    pub max_files: usize,
    /// Bytes of a file mapped at a time (rounded down to pages, one page at least).
    pub max_mapped_bytes: u64,
    /// Directories entered at most while looking for files.
    pub max_dirs: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits { max_files: 200, max_mapped_bytes: 64 << 20, max_dirs: 10_000 }
    }
}

/// How the pages were attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// mincore, then pagemap's PFNs and kpagecgroup's memcg inode of each resident page.
    MincorePagemapKpagecgroup,
    /// mincore only: resident bytes, no memcg (see the report's `cannot_see`).
    MincoreOnly,
}

/// One file's cached pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileResidency {
    /// As the host names it (`/var/lib/kubelet/pods/<uid>/volumes/...`).
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Bytes of it in the page cache (whole pages, as mincore counts them).
    pub resident_bytes: u64,
    /// Resident bytes by the inode kpagecgroup gives (the nearest online memcg; 0: charged
    /// to none); empty with [`Method::MincoreOnly`].
    pub by_memcg_inode: BTreeMap<u64, u64>,
    /// Resident bytes whose memcg could not be read (PFN absent or zeroed, or gone meanwhile).
    pub unattributed_bytes: u64,
}

/// What [`pinning_files`] found, and what it could not see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesReport {
    pub method: Method,
    /// Files with resident pages first, most resident bytes first.
    pub files: Vec<FileResidency>,
    /// Why attribution is partial or missing (kpagecgroup absent, PFNs zeroed, ...).
    pub cannot_see: Vec<String>,
    /// Candidates or files not examined, and why (not found, not a regular file, a link, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
    /// Files (or directories) left out past the limits.
    pub over_limits: u64,
}

/// Page size of this machine.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// The cached pages of `candidates` (host paths: files, or directories walked for files,
/// no symbolic link followed) and, where the kernel tells, the memcg each is charged to.
/// For the `dying` command: call it for the files of the pods whose memcgs are dying
/// (a pod's volumes, its logs, its containers' overlay upper dirs) and read
/// `by_memcg_inode` knowing that a dying memcg shows as its nearest online ancestor.
/// Errors only when nothing can be examined at all (no host root); a candidate that
/// cannot be read is in `skipped`.
pub fn pinning_files(host: &HostPaths, candidates: &[PathBuf], limits: FileLimits) -> Result<FilesReport> {
    let files = collect_files(host, candidates, &limits);
    let mut report = FilesReport { method: Method::MincoreOnly, files: Vec::new(), cannot_see: Vec::new(), skipped: files.skipped, over_limits: files.over_limits };
    let mut attr = Attributor::open(host, &mut report.cannot_see);
    let window = (limits.max_mapped_bytes / page_size()).max(1) * page_size();
    for (path, fd) in files.files {
        match residency(&fd, window, attr.as_mut(), &mut report.cannot_see) {
            Ok((size, resident, by, unattributed)) => report.files.push(FileResidency {
                path,
                size_bytes: size,
                resident_bytes: resident,
                by_memcg_inode: by,
                unattributed_bytes: unattributed,
            }),
            Err(e) => report.skipped.push((path, e.to_string())),
        }
    }
    if let Some(a) = &attr {
        if a.zero_pfns > 0 && a.pfns == 0 {
            report.cannot_see.push("/proc/self/pagemap gave no page frame numbers (zeroed without CAP_SYS_ADMIN): no page attributed".into());
        } else if !a.populate_unsupported {
            report.method = Method::MincorePagemapKpagecgroup;
        }
        if a.unpopulated > 0 {
            report.cannot_see.push(format!("{} resident pages could not be mapped (MADV_POPULATE_READ failed): not attributed", a.unpopulated));
        }
    }
    report.files.sort_by(|a, b| b.resident_bytes.cmp(&a.resident_bytes).then_with(|| a.path.cmp(&b.path)));
    Ok(report)
}

struct Collected {
    files: Vec<(PathBuf, OwnedFd)>,
    skipped: Vec<(PathBuf, String)>,
    over_limits: u64,
}

/// Regular files of the candidates, opened (O_NOFOLLOW at every step below a candidate),
/// within the limits.
fn collect_files(host: &HostPaths, candidates: &[PathBuf], limits: &FileLimits) -> Collected {
    let mut c = Collected { files: Vec::new(), skipped: Vec::new(), over_limits: 0 };
    let mut dirs_seen = 0usize;
    for cand in candidates {
        let fd = match host.open(cand, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK) {
            Ok(fd) => fd,
            Err(e) => {
                c.skipped.push((cand.clone(), beneath::explain(&e)));
                continue;
            }
        };
        // Directories to walk: the open one and its host path.
        let mut stack: Vec<(OwnedFd, PathBuf)> = Vec::new();
        match kind(&fd) {
            Ok(FileType::RegularFile) => take_file(&mut c, limits, cand.clone(), fd),
            Ok(FileType::Directory) => stack.push((fd, cand.clone())),
            Ok(t) => c.skipped.push((cand.clone(), format!("a {t:?}, not a file or directory"))),
            Err(e) => c.skipped.push((cand.clone(), e.to_string())),
        }
        while let Some((dir, at)) = stack.pop() {
            if dirs_seen >= limits.max_dirs || c.files.len() >= limits.max_files {
                c.over_limits += 1;
                continue;
            }
            dirs_seen += 1;
            let names = match list(&dir) {
                Ok(n) => n,
                Err(e) => {
                    c.skipped.push((at, e.to_string()));
                    continue;
                }
            };
            for name in names {
                let path = at.join(OsStr::from_bytes(name.to_bytes()));
                // Only files and directories are opened: opening a device or a FIFO a tenant
                // put in its volume could have effects of its own (checked again once open).
                match rustix::fs::statat(&dir, name.as_c_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if matches!(FileType::from_raw_mode(st.st_mode), FileType::RegularFile | FileType::Directory) => {}
                    _ => continue,
                }
                // Never through a link: a tenant's volume may hold links to anywhere.
                let child = match openat(&dir, name.as_c_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::LOOP) => continue,
                    Err(e) => {
                        c.skipped.push((path, io::Error::from(e).to_string()));
                        continue;
                    }
                };
                match kind(&child) {
                    Ok(FileType::RegularFile) => take_file(&mut c, limits, path, child),
                    Ok(FileType::Directory) => stack.push((child, path)),
                    _ => {}
                }
            }
        }
    }
    c
}

fn take_file(c: &mut Collected, limits: &FileLimits, path: PathBuf, fd: OwnedFd) {
    if c.files.len() >= limits.max_files {
        c.over_limits += 1;
    } else {
        c.files.push((path, fd));
    }
}

fn kind(fd: &OwnedFd) -> io::Result<FileType> {
    Ok(FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode))
}

/// The names in a directory, `.` and `..` left out.
fn list(dir: &OwnedFd) -> io::Result<Vec<std::ffi::CString>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n: &CStr = e.file_name();
        if !matches!(n.to_bytes(), b"." | b"..") {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// The PFN → memcg inode readers: this process's pagemap and the kernel's kpagecgroup.
struct Attributor {
    pagemap: std::fs::File,
    kpagecgroup: std::fs::File,
    pfns: u64,
    zero_pfns: u64,
    unpopulated: u64,
    populate_unsupported: bool,
}

impl Attributor {
    /// None, with what cannot be seen, when either file cannot be opened.
    fn open(host: &HostPaths, cannot_see: &mut Vec<String>) -> Option<Attributor> {
        // This process's own page tables: its /proc, whatever the host root.
        let pagemap = match std::fs::File::open("/proc/self/pagemap") {
            Ok(f) => f,
            Err(e) => {
                cannot_see.push(format!("/proc/self/pagemap: {e}: resident bytes only, no memcg"));
                return None;
            }
        };
        let kpc = host.host("/proc/kpagecgroup");
        let kpagecgroup = match host.open("/proc/kpagecgroup", OFlags::RDONLY) {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                cannot_see.push(format!("{} is absent (a kernel without CONFIG_MEMCG or CONFIG_PROC_PAGE_MONITOR): resident bytes only, no memcg", kpc.display()));
                return None;
            }
            Err(e) => {
                cannot_see.push(format!("{}: {e} (it needs CAP_SYS_ADMIN): resident bytes only, no memcg", kpc.display()));
                return None;
            }
        };
        Some(Attributor { pagemap, kpagecgroup, pfns: 0, zero_pfns: 0, unpopulated: 0, populate_unsupported: false })
    }

    /// The memcg inode of each page of `pages` at `addr` (one per page: None when unknown).
    fn inodes(&mut self, addr: usize, pages: usize) -> io::Result<Vec<Option<u64>>> {
        use std::os::unix::fs::FileExt;
        let ps = page_size() as usize;
        let mut raw = vec![0u8; pages * 8];
        self.pagemap.read_exact_at(&mut raw, (addr / ps * 8) as u64)?;
        let entries: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect();
        let pfns: Vec<Option<u64>> = entries.iter().map(|&e| parse_pagemap_entry(e)).collect();
        let mut out = vec![None; pages];
        let mut i = 0;
        while i < pages {
            let Some(Some(first)) = pfns.get(i).copied() else {
                if entries[i] >> 63 == 1 {
                    self.zero_pfns += 1;
                }
                i += 1;
                continue;
            };
            // A run of consecutive frames is one read of kpagecgroup.
            let mut n = 1;
            while i + n < pages && pfns[i + n] == Some(first + n as u64) {
                n += 1;
            }
            let mut buf = vec![0u8; n * 8];
            match self.kpagecgroup.read_exact_at(&mut buf, first * 8) {
                Ok(()) => {
                    for (k, c) in buf.chunks_exact(8).enumerate() {
                        out[i + k] = Some(u64::from_ne_bytes(c.try_into().expect("8 bytes")));
                    }
                    self.pfns += n as u64;
                }
                // A frame past the end of memory (hot-unplugged meanwhile): unknown.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
            i += n;
        }
        Ok(out)
    }
}

/// The PFN of a present page in a `/proc/<pid>/pagemap` entry: bit 63 present, bits 0-54
/// the PFN (Documentation/admin-guide/mm/pagemap.rst); None when absent, swapped, or zeroed
/// (the PFN of an unprivileged reader since 4.2).
pub fn parse_pagemap_entry(e: u64) -> Option<u64> {
    let present = e >> 63 == 1;
    let swapped = (e >> 62) & 1 == 1;
    let pfn = e & ((1u64 << 55) - 1);
    (present && !swapped && pfn != 0).then_some(pfn)
}

/// Resident pages from a mincore vector: bit 0 of each byte (mincore(2)).
pub fn resident_pages(vec: &[u8]) -> impl Iterator<Item = usize> + '_ {
    vec.iter().enumerate().filter(|(_, b)| *b & 1 == 1).map(|(i, _)| i)
}

/// Runs of consecutive indices: (start, length).
pub fn runs(mut idx: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    if let Some(first) = idx.next() {
        let mut cur = (first, 1);
        for i in idx {
            if i == cur.0 + cur.1 {
                cur.1 += 1;
            } else {
                out.push(cur);
                cur = (i, 1);
            }
        }
        out.push(cur);
    }
    out
}

/// A read-only shared map of part of a file, unmapped on drop.
struct Map {
    addr: *mut libc::c_void,
    len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: addr/len are what mmap returned; nothing borrows the map past here.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// MADV_POPULATE_READ (include/uapi/asm-generic/mman-common.h, 5.14+).
const MADV_POPULATE_READ: libc::c_int = 22;

/// Size, resident bytes, resident bytes by memcg inode, and unattributed resident bytes of
/// one open file, mapped `window` bytes at a time.
fn residency(fd: &OwnedFd, window: u64, mut attr: Option<&mut Attributor>, cannot_see: &mut Vec<String>) -> io::Result<(u64, u64, BTreeMap<u64, u64>, u64)> {
    let size = rustix::fs::fstat(fd)?.st_size as u64;
    let ps = page_size();
    let (mut resident, mut unattributed) = (0u64, 0u64);
    let mut by = BTreeMap::new();
    let mut off = 0u64;
    while off < size {
        let len = window.min(size - off) as usize;
        // SAFETY: a fresh mapping of our own (addr NULL), read-only; never dereferenced here:
        // mincore and madvise take its address, pagemap is read by offset.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_fd().as_raw_fd(), off as libc::off_t) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = Map { addr, len };
        let pages = len.div_ceil(ps as usize);
        let mut vec = vec![0u8; pages];
        // SAFETY: vec holds one byte per page of the mapping.
        if unsafe { libc::mincore(map.addr, map.len, vec.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let res: Vec<usize> = resident_pages(&vec).collect();
        resident += res.len() as u64 * ps;
        if let Some(a) = attr.as_deref_mut() {
            // No readahead: a page evicted since mincore is read back alone, if at all.
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(map.addr, map.len, libc::MADV_RANDOM) };
            let mut known = vec![None; pages];
            for (start, n) in runs(res.iter().copied()) {
                let at = map.addr as usize + start * ps as usize;
                // SAFETY: a range inside our mapping; POPULATE_READ maps the pages without
                // touching them, and fails (no SIGBUS) past the end of a file that shrank.
                let rc = unsafe { libc::madvise(at as *mut libc::c_void, n * ps as usize, MADV_POPULATE_READ) };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EINVAL) && !a.populate_unsupported {
                        a.populate_unsupported = true;
                        cannot_see.push("MADV_POPULATE_READ is not supported (a kernel before 5.14): resident pages are not attributed".into());
                    }
                    a.unpopulated += n as u64;
                    continue;
                }
                for (k, ino) in a.inodes(at, n)?.into_iter().enumerate() {
                    known[start + k] = ino;
                }
            }
            for i in &res {
                match known[*i] {
                    Some(ino) => *by.entry(ino).or_insert(0) += ps,
                    None => unattributed += ps,
                }
            }
        } else {
            unattributed += res.len() as u64 * ps;
        }
        drop(map);
        off += len as u64;
    }
    Ok((size, resident, by, unattributed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn pagemap_entries_give_a_pfn_only_when_present_and_not_zeroed() {
        assert_eq!(parse_pagemap_entry((1 << 63) | 0x1234), Some(0x1234));
        // Soft-dirty (55), exclusive (56) and file-page (61) bits are not part of the PFN.
        assert_eq!(parse_pagemap_entry((1 << 63) | (1 << 61) | (1 << 56) | (1 << 55) | 7), Some(7));
        assert_eq!(parse_pagemap_entry(0x1234), None, "not present");
        assert_eq!(parse_pagemap_entry((1 << 63) | (1 << 62) | 5), None, "swapped: bits 0-4 are the swap type");
        assert_eq!(parse_pagemap_entry(1 << 63), None, "present, PFN zeroed: an unprivileged reader");
    }

    #[test]
    fn mincore_bits_and_runs() {
        let v = [1u8, 1, 0, 3, 0, 0, 1, 1, 1, 2];
        let r: Vec<usize> = resident_pages(&v).collect();
        assert_eq!(r, vec![0, 1, 3, 6, 7, 8]);
        assert_eq!(runs(r.into_iter()), vec![(0, 2), (3, 1), (6, 3)]);
        assert_eq!(runs(std::iter::empty()), vec![]);
    }

    /// A file this test wrote is resident in full; on this host (root, 6.18) its pages are
    /// attributed to the test's own memcg, and links in a candidate directory are not followed.
    #[test]
    fn a_written_file_is_resident_and_links_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("data"), vec![7u8; 3 * 4096 + 10]).unwrap();
        fs::write(t.path().join("outside"), vec![1u8; 8192]).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), dir.join("link")).unwrap();
        fs::write(dir.join("empty"), b"").unwrap();
        let host = HostPaths::new("/");
        let small = FileLimits { max_mapped_bytes: 4096, ..FileLimits::default() };
        let r = pinning_files(&host, &[dir.clone(), t.path().join("missing")], small).unwrap();
        let names: Vec<_> = r.files.iter().map(|f| f.path.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names, vec!["data", "empty"], "{r:?}");
        let data = &r.files[0];
        assert_eq!((data.size_bytes, data.resident_bytes), (3 * 4096 + 10, 4 * 4096), "{r:?}");
        assert_eq!(data.by_memcg_inode.values().sum::<u64>() + data.unattributed_bytes, data.resident_bytes);
        assert_eq!(r.skipped.len(), 1, "{r:?}");
        assert!(r.skipped[0].0.ends_with("missing"));
        // Bounds: one file at most.
        let r = pinning_files(&host, &[dir], FileLimits { max_files: 1, ..FileLimits::default() }).unwrap();
        assert_eq!((r.files.len(), r.over_limits), (1, 1));
    }
}

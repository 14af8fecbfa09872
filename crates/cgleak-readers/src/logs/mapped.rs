//! A regular log file read through memory maps, in parts that threads can scan at once.
//!
//! read() copies every byte from the page cache, and that copy alone costs more than
//! the search for candidate lines. A map costs no copy; it is made [`WINDOW`] bytes at
//! a time and unmapped before the next, so mapped pages (which count as resident)
//! stay bounded. [`split_points`] cuts a file at line starts into parts; each part is
//! scanned by [`scan_range`] with its own sink, its lines numbered from 1, and the
//! caller adds the line counts of the parts before it.
//!
//! A file truncated while it is mapped (copytruncate rotation) makes the kernel send
//! SIGBUS on access to the vanished pages: the front end handles that signal.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::mm::{Advice, MapFlags, ProtFlags};

use crate::logline::{LineMeta, LogLine};

use super::split::{scan_lines, LineSink, ScanStats, MAX_LINE};

/// Bytes mapped at once: 4 MiB per scanning thread.
pub const WINDOW: usize = 4 << 20;
/// Map offsets are multiples of this (a multiple of every page size: 4 KiB .. 64 KiB).
const ALIGN: u64 = 64 << 10;
/// Lines read past the end of a part to complete a record pending there (a SLUB
/// header's `cache:` and per-node lines).
const MAX_PENDING_LINES: u32 = 64;

/// A read-only private mapping, unmapped on drop.
struct Window {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Window {
    fn map(file: &File, offset: u64, len: usize) -> io::Result<Window> {
        // SAFETY: a new private read-only mapping of `len` bytes of `file` at a
        // page-aligned `offset`; the kernel picks the address. It aliases no Rust object.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::PRIVATE, file, offset)? };
        // Read once, front to back: a hint for read-ahead (failure is harmless).
        // SAFETY: the range is exactly the mapping just made.
        let _ = unsafe { rustix::mm::madvise(ptr, len, Advice::Sequential) };
        Ok(Window { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`;
        // nothing writes it (private, read-only). Pages past a concurrent truncation
        // raise SIGBUS instead of returning bytes (see the module doc).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no slice of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// The offset after the first '\n' at or after `from`, or `len` when none.
fn next_line_start(file: &File, from: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if let Some(p) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(at + p as u64 + 1);
        }
        at += n as u64;
    }
    Ok(len)
}

/// Ranges `[start, end)` covering a file of `len` bytes in at most `parts` parts of
/// about equal size, each starting at a line start (fewer when lines are long).
pub fn split_points(file: &File, len: u64, parts: usize) -> io::Result<Vec<(u64, u64)>> {
    let parts = parts.max(1) as u64;
    let mut cuts = vec![0u64];
    for k in 1..parts {
        let c = next_line_start(file, len * k / parts, len)?;
        if c > *cuts.last().unwrap_or(&0) && c < len {
            cuts.push(c);
        }
    }
    cuts.push(len);
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).filter(|(a, b)| a < b).collect())
}

/// Bytes read back from a part's start for [`LineSink::resume_after`]: the last lines
/// before it, the last one whole up to [`MAX_LINE`].
const BEFORE_BYTES: u64 = 2 * MAX_LINE as u64;

/// The text right before `start`: at most [`BEFORE_BYTES`], from a line start when there is
/// one in them.
fn text_before(file: &File, start: u64) -> io::Result<Vec<u8>> {
    let from = start.saturating_sub(BEFORE_BYTES);
    let mut buf = vec![0u8; (start - from) as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], from + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    if from > 0 {
        // Drop the line that began before what was read.
        let head = memchr::memchr(b'\n', &buf[..buf.len().saturating_sub(1)]).map_or(0, |i| i + 1);
        buf.drain(..head);
    }
    Ok(buf)
}

/// Hand the lines of bytes `[start, end)` of `file` (`len` bytes long; `start` at a line
/// start, `end` after a '\n' or at `len`) to `sink`, numbered from 1. A record still
/// pending at `end` gets its continuation lines from after `end` (numbered on), but
/// `lines` in the result counts only the lines in the range; a part that starts within a
/// record (`start` > 0) leaves that record's lines to the part before
/// ([`LineSink::resume_after`]).
#[allow(clippy::too_many_arguments)]
pub fn scan_range(file: &File, len: u64, start: u64, end: u64, source: &str, meta: &LineMeta, sink: &mut dyn LineSink, stop: &AtomicBool) -> io::Result<ScanStats> {
    let end = end.min(len);
    if start > 0 {
        sink.resume_after(&text_before(file, start)?);
    }
    let mut pos = start;
    let (mut lines, mut long) = (0u64, 0u64);
    while pos < end && !stop.load(Ordering::Relaxed) {
        let map_off = pos / ALIGN * ALIGN;
        let map_len = (WINDOW as u64).min(len - map_off) as usize;
        let w = Window::map(file, map_off, map_len)?;
        let b = w.bytes();
        let from = (pos - map_off) as usize;
        let limit = (end.min(map_off + map_len as u64) - map_off) as usize;
        match memchr::memrchr(b'\n', &b[from..limit]) {
            Some(p) => {
                scan_lines(&b[from..=from + p], MAX_LINE, &mut lines, &mut long, source, meta, sink);
                pos = map_off + (from + p + 1) as u64;
            }
            None if map_off + map_len as u64 >= end => {
                // The file's last line, without a newline.
                let mut text = &b[from..limit];
                if text.last() == Some(&b'\r') {
                    text = &text[..text.len() - 1];
                }
                if text.len() > MAX_LINE {
                    long += 1;
                    text = &text[..MAX_LINE];
                }
                lines += 1;
                if sink.pending() || sink.may_match(text) {
                    sink.line(&LogLine { source, line: lines, text, meta });
                }
                pos = end;
            }
            None => {
                // A line longer than the window: its head is the line, the rest is skipped.
                let head = b[from..limit.min(from + MAX_LINE)].to_vec();
                let after = map_off + map_len as u64;
                drop(w);
                lines += 1;
                long += 1;
                if sink.pending() || sink.may_match(&head) {
                    sink.line(&LogLine { source, line: lines, text: &head, meta });
                }
                pos = next_line_start(file, after, len)?;
            }
        }
    }
    let in_range = lines;
    // Continuation lines of a record pending at the end of the range.
    let mut extra = 0;
    let mut buf = vec![0u8; MAX_LINE];
    while sink.pending() && pos < len && extra < MAX_PENDING_LINES && !stop.load(Ordering::Relaxed) {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        let (text, next) = match memchr::memchr(b'\n', &buf[..n]) {
            Some(p) => (&buf[..p], pos + p as u64 + 1),
            None => (&buf[..n], next_line_start(file, pos + n as u64, len)?),
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !sink.continuation(&LogLine { source, line: lines + 1, text, meta }) {
            break;
        }
        lines += 1;
        pos = next;
        extra += 1;
    }
    Ok(ScanStats { lines: in_range, bytes: end - start, long_lines: long })
}

#[cfg(test)]
mod tests {
    use super::super::split::scan_reader;
    use super::super::split::tests::Collect;
    use super::*;

    /// Scan `data` in `parts` parts, adding up line numbers as a caller does.
    fn scan_parts(data: &[u8], parts: usize, needle: &str) -> (Vec<(u64, Vec<u8>)>, u64) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, data).unwrap();
        let f = File::open(&p).unwrap();
        let len = data.len() as u64;
        let stop = AtomicBool::new(false);
        let (mut got, mut base) = (Vec::new(), 0);
        for (a, b) in split_points(&f, len, parts).unwrap() {
            assert!(a == 0 || data[a as usize - 1] == b'\n', "parts start at line starts");
            let mut sink = Collect::new(needle);
            let st = scan_range(&f, len, a, b, "log", &LineMeta::default(), &mut sink, &stop).unwrap();
            got.extend(sink.got.into_iter().map(|(n, t)| (n + base, t)));
            base += st.lines;
        }
        (got, base)
    }

    fn sequential(data: &[u8], needle: &str) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut sink = Collect::new(needle);
        let st = scan_reader(data, "log", &LineMeta::default(), &mut sink).unwrap();
        (sink.got, st.lines)
    }

    #[test]
    fn parts_agree_with_the_sequential_reader() {
        let mut data = Vec::new();
        let mut x = 7u64;
        // About 13 MB: several windows, lines of 1 .. 3000 bytes, a hit now and then.
        while data.len() < 13 << 20 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = (x >> 33) % 3000;
            data.extend((0..n).map(|i| b'a' + (i % 26) as u8));
            if x % 17 == 3 {
                data.extend_from_slice(b" hit");
            }
            data.push(b'\n');
        }
        for parts in [1, 2, 3, 7] {
            assert_eq!(scan_parts(&data, parts, "hit"), sequential(&data, "hit"), "{parts} parts");
        }
        // No newline at the end.
        data.extend_from_slice(b"last hit");
        assert_eq!(scan_parts(&data, 2, "hit"), sequential(&data, "hit"));
    }

    #[test]
    fn a_line_longer_than_the_window_is_one_line() {
        let mut data = b"first hit\n".to_vec();
        data.extend(vec![b'x'; WINDOW * 2 + 100]);
        data.extend_from_slice(b" hit\nafter hit\n");
        let (got, lines) = scan_parts(&data, 1, "hit");
        assert_eq!(lines, 3);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 3], "the giant line's head has no hit");
        assert_eq!(got[1].1, b"after hit");
        let (got, lines) = scan_parts(&data, 1, "");
        assert_eq!((lines, got[1].1.len()), (3, MAX_LINE));
    }

    /// A sink for which a line with `HEAD` opens a record that takes every next line
    /// until a line without a leading space.
    struct Records {
        pending: bool,
        got: Vec<(u64, Vec<u8>)>,
    }

    /// [`Records`] that also knows part boundaries: a line after its part is taken only when
    /// it continues the record, and a part that starts within a record leaves it alone.
    struct PartRecords {
        inner: Records,
        /// Within a record that the part before reports.
        silent: bool,
        offered: Vec<Vec<u8>>,
    }

    impl PartRecords {
        fn got_lines(&self) -> Vec<u64> {
            self.inner.got.iter().map(|g| g.0).collect()
        }
    }

    impl LineSink for PartRecords {
        fn find_candidate(&self, lines: &[u8]) -> Option<usize> {
            let lone = if lines.first() == Some(&b' ') { Some(0) } else { memchr::memmem::find(lines, b"\n ").map(|i| i + 1) };
            [self.inner.find_candidate(lines), lone].into_iter().flatten().min()
        }
        fn may_match(&self, line: &[u8]) -> bool {
            self.silent || self.inner.may_match(line) || line.first() == Some(&b' ')
        }
        fn pending(&self) -> bool {
            self.silent || self.inner.pending
        }
        fn line(&mut self, l: &LogLine<'_>) {
            let cont = l.text.first() == Some(&b' ');
            if self.silent && cont {
                return;
            }
            self.silent = false;
            if cont && !self.inner.pending {
                // A record whose head was not read starts at its first line read.
                self.inner.pending = true;
                self.inner.got.push((l.line, l.text.to_vec()));
                return;
            }
            self.inner.line(l);
        }
        fn continuation(&mut self, l: &LogLine<'_>) -> bool {
            self.offered.push(l.text.to_vec());
            if self.inner.pending && l.text.first() == Some(&b' ') {
                self.inner.got.push((l.line, l.text.to_vec()));
                return true;
            }
            self.inner.pending = false;
            false
        }
        fn resume_after(&mut self, before: &[u8]) {
            let before = before.strip_suffix(b"\n").unwrap_or(before);
            let prev = before.rsplit(|c| *c == b'\n').next().unwrap_or(before);
            let prev = prev.strip_suffix(b"\r").unwrap_or(prev);
            self.offered.push(prev.to_vec());
            self.silent = prev.starts_with(b"HEAD") || prev.first() == Some(&b' ');
        }
    }

    #[test]
    fn parts_cut_within_a_record_report_it_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        let data = b"plain\nHEAD one\n  cache: one\n  node 0: one\nHEAD two\n  cache: two\nplain\r\n  lone one\n  lone two\nHEAD three\n".to_vec();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let len = data.len() as u64;
        let stop = AtomicBool::new(false);
        let starts: Vec<u64> = std::iter::once(0).chain(data.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i as u64 + 1)).filter(|&c| c < len).collect();
        for &cut in &starts[1..] {
            let mut all = Vec::new();
            let mut base = 0;
            let mut offered = Vec::new();
            for (a, b) in [(0, cut), (cut, len)] {
                let mut sink = PartRecords { inner: Records { pending: false, got: Vec::new() }, silent: false, offered: Vec::new() };
                let st = scan_range(&f, len, a, b, "k", &LineMeta::default(), &mut sink, &stop).unwrap();
                all.extend(sink.inner.got.into_iter().map(|(n, t)| (n + base, t)));
                offered.extend(sink.offered);
                base += st.lines;
            }
            let mut whole = PartRecords { inner: Records { pending: false, got: Vec::new() }, silent: false, offered: Vec::new() };
            scan_range(&f, len, 0, len, "k", &LineMeta::default(), &mut whole, &stop).unwrap();
            assert_eq!(whole.got_lines(), [2, 3, 4, 5, 6, 8, 9, 10]);
            assert_eq!(all, whole.inner.got, "cut at byte {cut}");
            // The line before the cut, without its line end, is what the second part resumes after.
            let before = &data[..cut as usize - 1];
            let prev = &before[before.iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1)..];
            assert!(offered.iter().any(|o| o.as_slice() == prev.strip_suffix(b"\r").unwrap_or(prev)), "cut at byte {cut}: {offered:?}");
        }
    }

    impl LineSink for Records {
        fn find_candidate(&self, lines: &[u8]) -> Option<usize> {
            memchr::memmem::find(lines, b"HEAD")
        }
        fn may_match(&self, line: &[u8]) -> bool {
            self.pending || memchr::memmem::find(line, b"HEAD").is_some()
        }
        fn pending(&self) -> bool {
            self.pending
        }
        fn line(&mut self, l: &LogLine<'_>) {
            let cont = l.text.first() == Some(&b' ');
            if self.pending && cont {
                self.got.push((l.line, l.text.to_vec()));
                return;
            }
            self.pending = memchr::memmem::find(l.text, b"HEAD").is_some();
            if self.pending {
                self.got.push((l.line, l.text.to_vec()));
            }
        }
    }

    #[test]
    fn a_record_pending_at_a_part_end_is_completed_there() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kern.log");
        let mut data = vec![b'.'; 1000];
        data.push(b'\n');
        data.extend_from_slice(b"HEAD of a record\n  cache: one\n  node 0: two\nplain\n");
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let len = data.len() as u64;
        // Cut right after the header.
        let cut = (1001 + b"HEAD of a record\n".len()) as u64;
        let stop = AtomicBool::new(false);
        let mut first = Records { pending: false, got: Vec::new() };
        let st = scan_range(&f, len, 0, cut, "k", &LineMeta::default(), &mut first, &stop).unwrap();
        assert_eq!(st.lines, 2, "only the range's lines are counted");
        let texts: Vec<&[u8]> = first.got.iter().map(|g| g.1.as_slice()).collect();
        assert_eq!(texts, [&b"HEAD of a record"[..], b"  cache: one", b"  node 0: two"]);
        assert_eq!(first.got.iter().map(|g| g.0).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn split_points_cover_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"one line without a newline").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(split_points(&f, 26, 4).unwrap(), vec![(0, 26)]);
        std::fs::write(&p, b"a\nb\nc\nd\n").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(split_points(&f, 8, 2).unwrap(), vec![(0, 6), (6, 8)]);
        assert_eq!(split_points(&f, 0, 2).unwrap(), vec![]);
    }
}

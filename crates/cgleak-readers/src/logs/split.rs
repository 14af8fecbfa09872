//! Streaming a byte source as lines in bounded memory.
//!
//! One buffer of [`CHUNK`] bytes is filled by `read()` and reused: complete lines are
//! handed on in place, an unfinished last line moves to the front before the next
//! read. A line longer than the buffer keeps its first [`MAX_LINE`] bytes and its
//! rest is skipped, yet it counts as one line, so a 2 GB file of one line or of
//! random bytes streams in a few MB. Lines are bytes: non-UTF-8 is passed through.
//!
//! Speed: most log lines never match, so the sink is asked for the first candidate
//! in a whole buffer of lines at once (one SIMD multi-literal search, as grep does);
//! lines before the candidate's line only have their newlines counted, for the line
//! numbers, and only candidate lines are looked at one by one.

use std::io::{self, Read};

use crate::logline::{LineMeta, LogLine};

/// Bytes per read(): large enough that syscalls cost nothing, small enough for the cache.
pub const CHUNK: usize = 256 * 1024;
/// What is kept of a longer line (the parser sees this much; the rest is skipped).
pub const MAX_LINE: usize = 64 * 1024;
/// Where the lines of a source go (the incident parser, in the front end).
pub trait LineSink {
    /// The offset in `lines` (whole lines joined by '\n') of the first byte that may
    /// make its line matter; every line before that line can be skipped. None: no line
    /// of `lines` matters.
    fn find_candidate(&self, lines: &[u8]) -> Option<usize>;
    /// Whether one line (without its newline) may matter.
    fn may_match(&self, line: &[u8]) -> bool;
    /// While true, every next line must reach [`LineSink::line`] (a record waiting for
    /// its continuation lines), whatever [`LineSink::find_candidate`] says.
    fn pending(&self) -> bool {
        false
    }
    /// A line that passed [`LineSink::may_match`].
    fn line(&mut self, line: &LogLine<'_>);
    /// A line past the end of the part of a source this sink reads, offered while
    /// [`LineSink::pending`]: take it (true) when it continues the pending record; else
    /// complete the record and leave the line (false) to the sink of the next part.
    fn continuation(&mut self, line: &LogLine<'_>) -> bool {
        self.line(line);
        true
    }
    /// This sink reads a source from the middle: `before` is the text right before its first
    /// line (the end of the part before, whose last lines are whole), which the sink of that
    /// part has seen (and completes the record they belong to, through
    /// [`LineSink::continuation`]).
    fn resume_after(&mut self, _before: &[u8]) {}
}

/// Counters of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub lines: u64,
    pub bytes: u64,
    /// Lines longer than [`MAX_LINE`], of which only the start was looked at.
    pub long_lines: u64,
}

/// What one [`LineSplitter::read_from`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Data,
    Eof,
}

/// Splits what a reader gives into lines, across reads (see the module doc).
pub struct LineSplitter {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The head of a line longer than the buffer, while the rest of it is skipped.
    giant: Option<Vec<u8>>,
    max_line: usize,
    stats: ScanStats,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::with_sizes(CHUNK, MAX_LINE)
    }
}

impl LineSplitter {
    /// `chunk` bytes per read (at least 2), lines cut at `max_line` bytes (at most `chunk`).
    pub fn with_sizes(chunk: usize, max_line: usize) -> Self {
        let chunk = chunk.max(2);
        LineSplitter { buf: vec![0; chunk], start: 0, end: 0, giant: None, max_line: max_line.clamp(1, chunk), stats: ScanStats::default() }
    }

    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Lines completed so far (the number of the last line handed on).
    pub fn lines(&self) -> u64 {
        self.stats.lines
    }

    /// Start numbering from `n + 1` (a source read from the middle).
    pub fn set_lines(&mut self, n: u64) {
        self.stats.lines = n;
    }

    /// One read() from `r`; the lines it completes go to `sink`. `Eof` when read()
    /// gave 0 (a file being followed may grow later: call again).
    pub fn read_from(&mut self, r: &mut dyn Read, source: &str, meta: &LineMeta, sink: &mut dyn LineSink) -> io::Result<Fill> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // The whole buffer is one unfinished line: keep its head, skip the rest.
            if self.giant.is_none() {
                self.giant = Some(self.buf[..self.max_line.min(self.end)].to_vec());
            }
            self.end = 0;
        }
        let old_end = self.end;
        let n = loop {
            match r.read(&mut self.buf[old_end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(Fill::Eof);
        }
        self.end += n;
        self.stats.bytes += n as u64;
        if self.giant.is_some() {
            match memchr::memchr(b'\n', &self.buf[old_end..self.end]) {
                None => {
                    // Still inside the giant line: drop what was read.
                    self.end = old_end;
                    return Ok(Fill::Data);
                }
                Some(p) => {
                    let head = self.giant.take().unwrap_or_default();
                    self.stats.long_lines += 1;
                    self.emit_line(&head, source, meta, sink);
                    self.start = old_end + p + 1;
                }
            }
        }
        let from = self.start.max(old_end);
        if let Some(p) = memchr::memrchr(b'\n', &self.buf[from..self.end]) {
            let last = from + p;
            let start = self.start;
            let mut lines = self.stats.lines;
            let mut long = 0;
            scan_lines(&self.buf[start..=last], self.max_line, &mut lines, &mut long, source, meta, sink);
            self.stats.lines = lines;
            self.stats.long_lines += long;
            self.start = last + 1;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Fill::Data)
    }

    /// End of input: a last line without a newline is handed on too.
    pub fn finish(&mut self, source: &str, meta: &LineMeta, sink: &mut dyn LineSink) {
        if let Some(head) = self.giant.take() {
            self.stats.long_lines += 1;
            self.emit_line(&head, source, meta, sink);
        } else if self.start < self.end {
            let mut line = &self.buf[self.start..self.end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.len() > self.max_line {
                self.stats.long_lines += 1;
                line = &line[..self.max_line];
            }
            self.stats.lines += 1;
            if sink.pending() || sink.may_match(line) {
                sink.line(&LogLine { source, line: self.stats.lines, text: line, meta });
            }
        }
        self.start = 0;
        self.end = 0;
    }

    fn emit_line(&mut self, text: &[u8], source: &str, meta: &LineMeta, sink: &mut dyn LineSink) {
        self.stats.lines += 1;
        if sink.pending() || sink.may_match(text) {
            sink.line(&LogLine { source, line: self.stats.lines, text, meta });
        }
    }
}

/// Hand the lines of `region` (whole lines, ending in '\n') that may matter to `sink`,
/// numbering them after `*lines`.
pub(crate) fn scan_lines(region: &[u8], max_line: usize, lines: &mut u64, long: &mut u64, source: &str, meta: &LineMeta, sink: &mut dyn LineSink) {
    let mut at = 0;
    while at < region.len() {
        let line_start = if sink.pending() {
            at
        } else {
            // The candidate is searched in the lines without the last newline, so the
            // sink sees lines joined by '\n'.
            match sink.find_candidate(&region[at..region.len() - 1]) {
                None => {
                    *lines += count_newlines(&region[at..]);
                    return;
                }
                Some(off) => {
                    let pos = (at + off).min(region.len() - 1);
                    let ls = memchr::memrchr(b'\n', &region[at..pos]).map_or(at, |p| at + p + 1);
                    *lines += count_newlines(&region[at..ls]);
                    ls
                }
            }
        };
        // The region ends in '\n', so every line in it has one.
        let end = line_start + memchr::memchr(b'\n', &region[line_start..]).unwrap_or(region.len() - 1 - line_start);
        *lines += 1;
        let mut text = &region[line_start..end];
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        if text.len() > max_line {
            *long += 1;
            text = &text[..max_line];
        }
        if sink.pending() || sink.may_match(text) {
            sink.line(&LogLine { source, line: *lines, text, meta });
        }
        at = end + 1;
    }
}

/// Number of '\n' in `b`: with AVX2 where the CPU has it (about twice the speed of
/// the SSE2 baseline the compiler targets), else a loop the compiler vectorises.
pub fn count_newlines(b: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if b.len() >= 256 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { count_newlines_avx2(b) };
        }
    }
    count_newlines_portable(b)
}

/// Byte compares summed in u8 lanes, flushed before they can overflow.
fn count_newlines_portable(b: &[u8]) -> u64 {
    const LANES: usize = 32;
    let mut total = 0u64;
    let mut chunks = b.chunks_exact(LANES * 255);
    for big in &mut chunks {
        let mut acc = [0u8; LANES];
        for c in big.chunks_exact(LANES) {
            for i in 0..LANES {
                acc[i] += (c[i] == b'\n') as u8;
            }
        }
        total += acc.iter().map(|&x| x as u64).sum::<u64>();
    }
    let rest = chunks.remainder();
    let mut acc = [0u8; LANES];
    let mut small = rest.chunks_exact(LANES);
    for c in &mut small {
        for i in 0..LANES {
            acc[i] += (c[i] == b'\n') as u8;
        }
    }
    total += acc.iter().map(|&x| x as u64).sum::<u64>();
    total + small.remainder().iter().filter(|&&c| c == b'\n').count() as u64
}

/// cmpeq / sub into four byte accumulators (128 bytes a step), summed with sad every
/// 255 steps, before a lane can overflow.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_newlines_avx2(b: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let nl = _mm256_set1_epi8(b'\n' as i8);
    let zero = _mm256_setzero_si256();
    let p = b.as_ptr();
    let n = b.len();
    let mut i = 0usize;
    let mut total = 0u64;
    while n - i >= 128 {
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        let mut steps = 0;
        while steps < 255 && n - i >= 128 {
            // SAFETY: i + 128 <= n, so the four unaligned 32-byte loads are inside `b`.
            let (v0, v1, v2, v3) = unsafe {
                (
                    _mm256_loadu_si256(p.add(i) as *const __m256i),
                    _mm256_loadu_si256(p.add(i + 32) as *const __m256i),
                    _mm256_loadu_si256(p.add(i + 64) as *const __m256i),
                    _mm256_loadu_si256(p.add(i + 96) as *const __m256i),
                )
            };
            a0 = _mm256_sub_epi8(a0, _mm256_cmpeq_epi8(v0, nl));
            a1 = _mm256_sub_epi8(a1, _mm256_cmpeq_epi8(v1, nl));
            a2 = _mm256_sub_epi8(a2, _mm256_cmpeq_epi8(v2, nl));
            a3 = _mm256_sub_epi8(a3, _mm256_cmpeq_epi8(v3, nl));
            i += 128;
            steps += 1;
        }
        let s01 = _mm256_add_epi64(_mm256_sad_epu8(a0, zero), _mm256_sad_epu8(a1, zero));
        let s23 = _mm256_add_epi64(_mm256_sad_epu8(a2, zero), _mm256_sad_epu8(a3, zero));
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 bytes, the size of one unaligned store.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, _mm256_add_epi64(s01, s23)) };
        total += lanes.iter().sum::<u64>();
    }
    total + count_newlines_portable(&b[i..])
}

/// Stream all of `r` (to its end) as lines into `sink`.
pub fn scan_reader(mut r: impl Read, source: &str, meta: &LineMeta, sink: &mut dyn LineSink) -> io::Result<ScanStats> {
    let mut s = LineSplitter::default();
    while s.read_from(&mut r, source, meta, sink)? == Fill::Data {}
    s.finish(source, meta, sink);
    Ok(s.stats())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keeps every line whose text contains `needle` (all lines when empty), and
    /// counts the prefilter's calls.
    pub struct Collect {
        pub needle: Vec<u8>,
        pub got: Vec<(u64, Vec<u8>)>,
        pub metas: Vec<LineMeta>,
    }

    impl Collect {
        pub fn new(needle: &str) -> Self {
            Collect { needle: needle.as_bytes().to_vec(), got: Vec::new(), metas: Vec::new() }
        }
    }

    impl LineSink for Collect {
        fn find_candidate(&self, lines: &[u8]) -> Option<usize> {
            if self.needle.is_empty() {
                return Some(0);
            }
            memchr::memmem::find(lines, &self.needle)
        }
        fn may_match(&self, line: &[u8]) -> bool {
            self.needle.is_empty() || memchr::memmem::find(line, &self.needle).is_some()
        }
        fn line(&mut self, l: &LogLine<'_>) {
            self.got.push((l.line, l.text.to_vec()));
            self.metas.push(l.meta.clone());
        }
    }

    /// A reader that returns at most `step` bytes per read, to cut lines anywhere.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn split(data: &[u8], chunk: usize, max_line: usize, step: usize, needle: &str) -> (Vec<(u64, Vec<u8>)>, ScanStats) {
        let mut s = LineSplitter::with_sizes(chunk, max_line);
        let mut sink = Collect::new(needle);
        let mut r = Trickle { data, step };
        let meta = LineMeta::default();
        while s.read_from(&mut r, "t", &meta, &mut sink).unwrap() == Fill::Data {}
        s.finish("t", &meta, &mut sink);
        (sink.got, s.stats())
    }

    /// Reference: the lines of `data`, numbered, cut at `max_line`.
    fn reference(data: &[u8], max_line: usize, needle: &str) -> Vec<(u64, Vec<u8>)> {
        let mut v: Vec<&[u8]> = data.split(|&c| c == b'\n').collect();
        if data.last() == Some(&b'\n') || data.is_empty() {
            v.pop();
        }
        v.iter()
            .enumerate()
            .map(|(i, l)| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                (i as u64 + 1, l[..l.len().min(max_line)].to_vec())
            })
            .filter(|(_, l)| needle.is_empty() || memchr::memmem::find(l, needle.as_bytes()).is_some())
            .collect()
    }

    #[test]
    fn lines_numbered_across_reads() {
        let mut data = Vec::new();
        for i in 0..2000 {
            data.extend_from_slice(format!("line {i} {}\n", if i % 7 == 0 { "hit" } else { "quiet" }).as_bytes());
        }
        for (chunk, step) in [(64, 1), (64, 7), (100, 64), (4096, 1000), (1 << 20, 1 << 20)] {
            let (got, st) = split(&data, chunk, 1000, step, "hit");
            assert_eq!(got, reference(&data, 1000.min(chunk), "hit"), "chunk {chunk} step {step}");
            assert_eq!(st.lines, 2000);
            assert_eq!(st.bytes, data.len() as u64);
        }
    }

    #[test]
    fn last_line_without_newline_and_crlf() {
        let data = b"a hit\r\nb\nc hit";
        let (got, st) = split(data, 8, 100, 3, "hit");
        assert_eq!(got, vec![(1, b"a hit".to_vec()), (3, b"c hit".to_vec())]);
        assert_eq!(st.lines, 3);
        let (got, st) = split(b"", 8, 100, 3, "");
        assert!(got.is_empty());
        assert_eq!(st.lines, 0);
        let (got, _) = split(b"\n\n", 8, 100, 3, "");
        assert_eq!(got, vec![(1, vec![]), (2, vec![])]);
    }

    #[test]
    fn giant_lines_keep_their_head_and_count_once() {
        let mut data = b"first hit\n".to_vec();
        data.extend(vec![b'x'; 10_000]);
        data.extend_from_slice(b"hit at the end of a giant line\nafter hit\n");
        data.extend(vec![b'y'; 5_000]);
        for (chunk, step) in [(64, 64), (256, 13), (300, 1000)] {
            let (got, st) = split(&data, chunk, 20, step, "");
            assert_eq!(st.lines, 4, "chunk {chunk} step {step}");
            assert_eq!(st.long_lines, 2);
            assert_eq!(got[0], (1, b"first hit".to_vec()));
            assert_eq!(got[1], (2, vec![b'x'; 20]));
            assert_eq!(got[2], (3, b"after hit".to_vec()));
            assert_eq!(got[3], (4, vec![b'y'; 20]));
        }
    }

    #[test]
    fn non_utf8_and_nul_bytes_pass_through() {
        let data = b"\xff\xfe hit \x00\x80\n\xc3\x28 quiet\n";
        let (got, _) = split(data, 16, 100, 5, "hit");
        assert_eq!(got, vec![(1, b"\xff\xfe hit \x00\x80".to_vec())]);
    }

    #[test]
    fn pseudo_random_inputs_agree_with_the_reference() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let len = (round * 37) % 3000;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 10 {
                        0 => b'\n',
                        1 => b'h',
                        2 => b'i',
                        3 => b't',
                        _ => (x >> 8) as u8,
                    }
                })
                .collect();
            let chunk = 8 + (round % 50) * 7;
            let max_line = 1 + round % 40;
            let (got, st) = split(&data, chunk, max_line, 1 + round % 90, "hi");
            // What is kept of a line is never more than the buffer.
            let want: Vec<_> = reference(&data, max_line.min(chunk), "");
            assert_eq!(st.lines, want.len() as u64, "round {round}");
            for (n, l) in &got {
                assert!(l.len() <= max_line);
                assert_eq!(&want[*n as usize - 1].1, l, "round {round} line {n}");
            }
        }
    }

    #[test]
    fn newline_count() {
        for n in [0usize, 1, 31, 32, 33, 127, 128, 129, 255, 256, 8160, 8161, 32_640, 32_641, 100_000] {
            for every in [1usize, 3, 200] {
                let data: Vec<u8> = (0..n).map(|i| if i % every == 0 { b'\n' } else { b'a' }).collect();
                let want = data.iter().filter(|&&c| c == b'\n').count() as u64;
                assert_eq!(count_newlines(&data), want, "n {n} every {every}");
                assert_eq!(count_newlines_portable(&data), want);
                // Unaligned starts.
                if n > 3 {
                    assert_eq!(count_newlines(&data[3..]), data[3..].iter().filter(|&&c| c == b'\n').count() as u64);
                }
            }
        }
        // Every byte a newline: lanes must be flushed before 255 steps overflow them.
        assert_eq!(count_newlines(&vec![b'\n'; 200_000]), 200_000);
    }
}

//! The last lines of a file, newest first, in bounded memory: for state files that only
//! grow at their end (the agent's history), where the newest lines are the ones wanted and
//! the file may be any size or hold any bytes.
//!
//! The file is read backwards in blocks of [`BLOCK`] bytes; a line longer than the caller's
//! `max_line` is handed on cut (its first `max_line` bytes) and marked so.
//! Memory: one block, plus at most two lines of `max_line` bytes, whatever the file holds.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read per step back.
pub const BLOCK: usize = 64 * 1024;

/// One line, newest first: its bytes (without the newline) and whether it was cut.
pub struct TailLine<'a> {
    pub text: &'a [u8],
    /// Longer than `max_line`: `text` is only part of it.
    pub cut: bool,
    /// The last line of the file had no newline after it (a write cut short).
    pub unterminated: bool,
}

/// What a backward read covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    pub file_bytes: u64,
    /// Lines handed on.
    pub lines: u64,
    /// Bytes at the start of the file that were not handed on (older than what was read,
    /// beyond `max_back`, or after the caller stopped).
    pub unread_bytes: u64,
}

/// Open `path` for reading without following a link at its last component and without
/// blocking (a FIFO put in its place), and only if it is a regular file.
pub fn open_regular_nofollow(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            io::Error::new(io::ErrorKind::InvalidInput, "a symbolic link (not followed)")
        } else {
            io::Error::from(e)
        }
    })?;
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(f)
}

/// Hand the lines of `f` (a file, or anything that seeks like one) to `each`, newest first,
/// until `each` returns false, the start of the file, or `max_back` bytes back from its end
/// (a line reaching past that is not handed on). An empty last line (the file ends with a
/// newline) is not a line.
pub fn lines_backwards<F: Read + Seek>(f: &mut F, max_back: u64, max_line: usize, each: &mut dyn FnMut(&TailLine<'_>) -> bool) -> io::Result<TailStats> {
    let len = f.seek(SeekFrom::End(0))?;
    let max_line = max_line.max(1);
    let stop_at = len.saturating_sub(max_back);
    let mut st = TailStats { file_bytes: len, lines: 0, unread_bytes: len };
    let mut pos = len;
    let mut buf = vec![0u8; BLOCK];
    // The newest unfinished line (its end, forward order) and whether bytes of it were dropped.
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_cut = false;
    let mut joined: Vec<u8> = Vec::new();
    // The file's last byte: a newline ends the last line; none means it was cut short.
    let mut unterminated = false;
    // Where the oldest line handed on starts.
    let mut oldest_start: Option<u64> = None;
    if len > 0 {
        f.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] == b'\n' {
            pos = len - 1;
            st.unread_bytes = pos;
        } else {
            unterminated = true;
        }
    }
    while pos > stop_at {
        let start = pos.saturating_sub(BLOCK as u64).max(stop_at);
        let n = (pos - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        let mut hi = n;
        while let Some(nl) = memchr::memrchr(b'\n', &buf[..hi]) {
            let seg = &buf[nl + 1..hi];
            let (text, cut): (&[u8], bool) = if pending.is_empty() && !pending_cut {
                (&seg[..seg.len().min(max_line)], seg.len() > max_line)
            } else {
                joined.clear();
                joined.extend_from_slice(&seg[..seg.len().min(max_line)]);
                let room = max_line.saturating_sub(joined.len());
                joined.extend_from_slice(&pending[..pending.len().min(room)]);
                (&joined[..], pending_cut || seg.len() + pending.len() > max_line)
            };
            let go_on = each(&TailLine { text, cut, unterminated });
            unterminated = false;
            pending.clear();
            pending_cut = false;
            st.lines += 1;
            st.unread_bytes = start + nl as u64 + 1;
            oldest_start = Some(st.unread_bytes);
            hi = nl;
            if !go_on {
                return Ok(st);
            }
        }
        // buf[..hi] is more of a line that starts before `start`: keep what is nearest its
        // start, so that a cut line is handed on as its first `max_line` bytes.
        let head = &buf[..hi];
        let keep_head = head.len().min(max_line);
        let room = max_line - keep_head;
        pending_cut |= head.len() + pending.len() > max_line;
        let mut joined_head = Vec::with_capacity(max_line.min(head.len() + pending.len()));
        joined_head.extend_from_slice(&head[..keep_head]);
        joined_head.extend_from_slice(&pending[..pending.len().min(room)]);
        pending = joined_head;
        pos = start;
    }
    // The first line of the file (when the read reached it, and it is not the one handed on last).
    if pos == 0 && len > 0 && oldest_start != Some(0) {
        each(&TailLine { text: &pending, cut: pending_cut, unterminated });
        st.lines += 1;
        st.unread_bytes = 0;
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(content: &[u8], max_back: u64, max_line: usize, stop_after: usize) -> (Vec<(Vec<u8>, bool, bool)>, TailStats) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, content).unwrap();
        let mut f = open_regular_nofollow(&p).unwrap();
        let mut got = Vec::new();
        let st = lines_backwards(&mut f, max_back, max_line, &mut |l| {
            got.push((l.text.to_vec(), l.cut, l.unterminated));
            got.len() < stop_after
        })
        .unwrap();
        (got, st)
    }

    fn texts(v: &[(Vec<u8>, bool, bool)]) -> Vec<String> {
        v.iter().map(|(t, _, _)| String::from_utf8_lossy(t).into_owned()).collect()
    }

    #[test]
    fn newest_first_and_edges() {
        let (got, st) = lines_of(b"a\nbb\n\nccc\n", u64::MAX, 100, usize::MAX);
        assert_eq!(texts(&got), ["ccc", "", "bb", "a"]);
        assert_eq!((st.lines, st.unread_bytes, st.file_bytes), (4, 0, 10));
        let (got, _) = lines_of(b"a\ntorn", u64::MAX, 100, usize::MAX);
        assert_eq!(texts(&got), ["torn", "a"]);
        assert!(got[0].2 && !got[1].2, "only the last line is unterminated");
        let (got, st) = lines_of(b"", u64::MAX, 100, usize::MAX);
        assert!(got.is_empty() && st.lines == 0);
        let (got, _) = lines_of(b"\n", u64::MAX, 100, usize::MAX);
        assert_eq!(texts(&got), [""]);
        // Stopped by the caller: the rest is unread.
        let (got, st) = lines_of(b"a\nbb\nccc\n", u64::MAX, 100, 2);
        assert_eq!(texts(&got), ["ccc", "bb"]);
        assert_eq!(st.unread_bytes, 2);
    }

    #[test]
    fn agrees_with_a_forward_split() {
        let (got, _) = lines_of(b"\n\n", u64::MAX, 100, usize::MAX);
        assert_eq!(texts(&got), ["", ""]);
        let (got, _) = lines_of(b"\nx\n", u64::MAX, 100, usize::MAX);
        assert_eq!(texts(&got), ["x", ""]);
        // Random bytes, newlines frequent or rare, lines longer than blocks among them.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let len = (next() % (3 * BLOCK as u64)) as usize;
            let nl_every = 1 + next() % [4, 80, 5000, 200_000][round % 4];
            let content: Vec<u8> = (0..len).map(|_| if next() % nl_every == 0 { b'\n' } else { (next() % 256) as u8 }).collect();
            let mut want: Vec<&[u8]> = content.split(|c| *c == b'\n').collect();
            if content.last() == Some(&b'\n') || content.is_empty() {
                want.pop();
            }
            want.reverse();
            let (got, st) = lines_of(&content, u64::MAX, usize::MAX, usize::MAX);
            assert_eq!(got.len(), want.len(), "round {round}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(&g.0[..], *w, "round {round}");
                assert!(!g.1);
            }
            assert_eq!(st.unread_bytes, 0);
        }
    }

    #[test]
    fn lines_across_blocks_and_long_lines_cut() {
        let mut content = Vec::new();
        let long = vec![b'x'; BLOCK * 3 + 17];
        content.extend_from_slice(b"first\n");
        content.extend_from_slice(&long);
        content.extend_from_slice(b"\n");
        for i in 0..20_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let (got, st) = lines_of(&content, u64::MAX, 4096, usize::MAX);
        assert_eq!(got.len(), 20_002);
        assert_eq!(texts(&got[..2]), ["line 19999", "line 19998"]);
        assert_eq!(String::from_utf8_lossy(&got[19_999].0), "line 0");
        let (text, cut, _) = &got[20_000];
        assert!(*cut && text.len() == 4096 && text.iter().all(|c| *c == b'x'));
        // A cut line is its first bytes, whichever blocks it spans.
        let long: Vec<u8> = (0..BLOCK * 2 + 100).map(|i| b'a' + (i % 26) as u8).collect();
        for before in [0, 10, BLOCK - 3] {
            let content = [&vec![b'-'; before][..], b"\n", &long, b"\nend\n"].concat();
            let (got, _) = lines_of(&content, u64::MAX, 5000, usize::MAX);
            assert_eq!(got[1].0, long[..5000].to_vec(), "{before}");
            assert!(got[1].1);
        }
        assert_eq!(texts(&got[20_001..]), ["first"]);
        assert_eq!(st.unread_bytes, 0);
        // Within max_back only: the line reaching past it is not handed on.
        let (got, st) = lines_of(b"aaaa\nbbbb\ncccc\n", 7, 100, usize::MAX);
        assert_eq!(texts(&got), ["cccc"]);
        assert_eq!(st.unread_bytes, 10);
    }

    #[test]
    fn never_a_link_or_a_fifo() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("real"), b"x\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        assert!(open_regular_nofollow(&d.path().join("link")).unwrap_err().to_string().contains("symbolic link"));
        rustix::fs::mknodat(rustix::fs::CWD, d.path().join("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        assert!(open_regular_nofollow(&d.path().join("fifo")).unwrap_err().to_string().contains("not a regular file"));
        assert!(open_regular_nofollow(d.path()).unwrap_err().to_string().contains("not a regular file"));
    }
}

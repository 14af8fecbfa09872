//! Arbitrary bytes as the agent's history file (cgleak_model::forecast::load_history_from):
//! never a panic; the samples loaded are the newest `capacity` samples of the lines, as a
//! forward reading of the whole file finds them, whatever bytes are around them; what is
//! written back from them loads again the same with no bad line (round trip); and however
//! large the file (the same bytes repeated into a virtual file of up to 1 TiB), the load reads
//! no more than its bound from the end.
#![no_main]

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use cgleak_model::forecast::{history_read_bound, load_history_from, History, Sample, HISTORY_LINE_MAX};
use libfuzzer_sys::fuzz_target;

/// `data` repeated to `len` bytes, counting what is read.
struct Repeated<'a> {
    data: &'a [u8],
    len: u64,
    pos: u64,
    read: u64,
}

impl Read for Repeated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.pos < self.len {
            let at = (self.pos % self.data.len() as u64) as usize;
            let take = (self.data.len() - at).min(buf.len() - n).min((self.len - self.pos) as usize);
            buf[n..n + take].copy_from_slice(&self.data[at..at + take]);
            n += take;
            self.pos += take as u64;
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl Seek for Repeated<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).ok_or(io::ErrorKind::InvalidInput)?,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or(io::ErrorKind::InvalidInput)?,
        };
        Ok(self.pos)
    }
}

fuzz_target!(|data: &[u8]| {
    let (cap_byte, body) = match data.split_first() {
        Some((c, b)) => (*c, b),
        None => return,
    };
    let capacity = 1 + usize::from(cap_byte % 16);
    let load = load_history_from(&mut Cursor::new(body), capacity).expect("an in-memory file reads");
    assert!(load.history.len() <= capacity);

    // The oracle: every line from the start, forward.
    if body.len() as u64 <= history_read_bound(capacity) {
        let mut lines: Vec<&[u8]> = body.split(|c| *c == b'\n').collect();
        if body.last() == Some(&b'\n') || body.is_empty() {
            lines.pop();
        }
        let samples: Vec<Sample> = lines.iter().filter(|l| l.len() <= HISTORY_LINE_MAX).filter_map(|l| Sample::from_json_line(l)).collect();
        let mut want = History::new(capacity);
        for s in &samples[samples.len().saturating_sub(capacity)..] {
            want.push(*s);
        }
        assert_eq!(load.history, want);
        let bad_total = lines.iter().filter(|l| l.len() > HISTORY_LINE_MAX || (!l.trim_ascii().is_empty() && Sample::from_json_line(l).is_none())).count() as u64;
        assert!(load.bad_lines <= bad_total);
        if samples.len() < capacity {
            assert_eq!(load.bad_lines, bad_total, "fewer samples than the ring: every line was read");
        }
    }

    // Written back, it loads the same, and clean.
    let text = load.history.to_json_lines();
    let again = load_history_from(&mut Cursor::new(text.as_bytes()), capacity).unwrap();
    assert_eq!(again.history, load.history);
    assert_eq!(again.bad_lines, 0);

    // A huge file of these bytes: the read stays within its bound.
    if !body.is_empty() {
        let len = (body.len() as u64) << (u32::from(cap_byte) % 40);
        let mut big = Repeated { data: body, len, pos: 0, read: 0 };
        let load = load_history_from(&mut big, capacity).expect("a virtual file reads");
        assert!(load.history.len() <= capacity);
        assert!(big.read <= history_read_bound(capacity) + 2 * 64 * 1024 + 1, "read {} bytes of {len}", big.read);
    }
});

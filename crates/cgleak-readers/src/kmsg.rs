//! `/dev/kmsg`: the kernel's log buffer, one record per read() (Documentation/ABI/testing/dev-kmsg).
//!
//! A record is `prefix,seq,usec,flags[,more...];message\n` followed by dictionary lines
//! ` KEY=value\n` (SUBSYSTEM, DEVICE). Bytes that are not printable are escaped as `\xNN`
//! in the message and the values. Opened O_NONBLOCK, a read() past the last record
//! fails with EAGAIN: the end, unless following. When the ring buffer overwrote records
//! this reader had not read yet, read() fails once with EPIPE and then goes on with the
//! oldest record left: a gap, counted and reported, never an error.
//!
//! [`KmsgReader`] works over any [`Read`] that gives one record per read(), so tests
//! feed recorded records and errors; [`LineRecords`] makes a regular file (a dump of
//! /dev/kmsg, a fixture's `<root>/dev/kmsg`) read like the device.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use crate::logline::{LineMeta, LogLine, Origin};
use crate::logs::clock::rfc3339_usec;
use crate::logs::split::{LineSink, MAX_LINE};
use crate::HostPaths;

/// One record of /dev/kmsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Log level, 0 (emerg) .. 7 (debug): the prefix's low 3 bits.
    pub priority: u8,
    /// Syslog facility: the rest of the prefix (0 = kernel).
    pub facility: u8,
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC, suspend excluded).
    pub ts_usec: u64,
    /// '-' a whole record, 'c' the start of a continued line, '+' a continuation.
    pub flags: char,
    /// The text, `\xNN` escapes decoded (may hold any bytes).
    pub message: Vec<u8>,
    /// Dictionary lines ` KEY=value`, values decoded (lossily to UTF-8).
    pub dict: Vec<(String, String)>,
}

/// Decode the kernel's `\xNN` escapes; anything else is kept as it is.
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let (Some(h), Some(l)) = (b.get(i + 2).copied().and_then(hex), b.get(i + 3).copied().and_then(hex)) {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parse one record as read() returned it (trailing newline optional). None when
/// its header is not `prefix,seq,usec,flags...;`. Never panics, whatever the bytes.
pub fn parse_record(raw: &[u8]) -> Option<KmsgRecord> {
    let semi = memchr::memchr(b';', raw)?;
    let mut fields = raw[..semi].split(|&c| c == b',');
    let prefix: u32 = num(fields.next()?)?;
    let seq: u64 = num(fields.next()?)?;
    let ts_usec: u64 = num(fields.next()?)?;
    let flags = match fields.next() {
        Some([c, ..]) if c.is_ascii_graphic() => *c as char,
        _ => '-',
    };
    let rest = &raw[semi + 1..];
    let (msg, mut dict_part) = match memchr::memchr(b'\n', rest) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let mut dict = Vec::new();
    while !dict_part.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', dict_part) {
            Some(p) => (&dict_part[..p], &dict_part[p + 1..]),
            None => (dict_part, &dict_part[dict_part.len()..]),
        };
        dict_part = next;
        let Some(kv) = line.strip_prefix(b" ") else { continue };
        if let Some(eq) = memchr::memchr(b'=', kv) {
            dict.push((String::from_utf8_lossy(&kv[..eq]).into_owned(), String::from_utf8_lossy(&unescape(&kv[eq + 1..])).into_owned()));
        }
    }
    Some(KmsgRecord { priority: (prefix & 7) as u8, facility: (prefix >> 3).min(255) as u8, seq, ts_usec, flags, message: unescape(msg), dict })
}

/// What a [`KmsgReader`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsgEvent {
    Record(KmsgRecord),
    /// Records were lost before the next one: overwritten in the ring buffer (EPIPE),
    /// or a jump in sequence numbers. `lost` when the numbers tell how many.
    Gap { lost: Option<u64>, epipe: bool },
    /// A read that was not a record (kept for the report; skipped).
    Malformed(Vec<u8>),
}

/// Largest record: CONSOLE_EXT_LOG_MAX is 8192 (kernel/printk); a larger read buffer
/// never gets EINVAL.
const RECORD_BUF: usize = 16 * 1024;

/// Reads records from a device-like [`Read`] (one record per read()).
pub struct KmsgReader<R> {
    dev: R,
    buf: Vec<u8>,
    follow: bool,
    poll: Duration,
    last_seq: Option<u64>,
    epipe: bool,
    pending: Option<KmsgRecord>,
    /// EINVALs in a row (bounded, so a device that only fails cannot loop forever).
    einval_run: u32,
    /// Gaps met so far.
    pub gaps: u64,
    /// Records known lost in gaps.
    pub lost: u64,
}

impl<R: Read> KmsgReader<R> {
    /// With `follow`, EAGAIN and end of file wait for more (polling every `poll`).
    pub fn new(dev: R, follow: bool) -> Self {
        KmsgReader { dev, buf: vec![0; RECORD_BUF], follow, poll: Duration::from_millis(250), last_seq: None, epipe: false, pending: None, einval_run: 0, gaps: 0, lost: 0 }
    }

    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The next record or gap; None at the end (EAGAIN or end of file, not following).
    pub fn next_event(&mut self) -> io::Result<Option<KmsgEvent>> {
        if let Some(r) = self.pending.take() {
            return Ok(Some(KmsgEvent::Record(r)));
        }
        loop {
            let n = match self.dev.read(&mut self.buf) {
                Ok(0) if self.follow => {
                    std::thread::sleep(self.poll);
                    continue;
                }
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.follow {
                        std::thread::sleep(self.poll);
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    // Overwritten before we read them: the next read gives the oldest left.
                    self.epipe = true;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(crate::errno::EINVAL) && self.einval_run < 16 => {
                    // A record larger than the buffer; the kernel has moved past it.
                    self.einval_run += 1;
                    self.gaps += 1;
                    self.lost += 1;
                    return Ok(Some(KmsgEvent::Gap { lost: Some(1), epipe: false }));
                }
                Err(e) => return Err(e),
            };
            self.einval_run = 0;
            let raw = &self.buf[..n];
            let Some(rec) = parse_record(raw) else {
                return Ok(Some(KmsgEvent::Malformed(raw.to_vec())));
            };
            let jump = self.last_seq.filter(|&l| rec.seq > l + 1).map(|l| rec.seq - l - 1);
            self.last_seq = Some(rec.seq);
            if self.epipe || jump.is_some() {
                let epipe = std::mem::take(&mut self.epipe);
                self.gaps += 1;
                self.lost += jump.unwrap_or(0);
                self.pending = Some(rec);
                return Ok(Some(KmsgEvent::Gap { lost: jump, epipe }));
            }
            return Ok(Some(KmsgEvent::Record(rec)));
        }
    }
}

/// A regular file read like /dev/kmsg: each read() returns one record, that is one
/// line plus the dictionary lines (starting with a space) after it.
pub struct LineRecords<R> {
    inner: R,
    next: Vec<u8>,
}

impl<R: BufRead> LineRecords<R> {
    pub fn new(inner: R) -> Self {
        LineRecords { inner, next: Vec::new() }
    }
}

impl<R: BufRead> Read for LineRecords<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.next.is_empty() && self.inner.read_until(b'\n', &mut self.next)? == 0 {
            return Ok(0);
        }
        let mut rec = std::mem::take(&mut self.next);
        loop {
            let mut line = Vec::new();
            if self.inner.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.first() == Some(&b' ') {
                rec.extend_from_slice(&line);
            } else {
                self.next = line;
                break;
            }
        }
        let n = rec.len().min(buf.len());
        buf[..n].copy_from_slice(&rec[..n]);
        Ok(n)
    }
}

/// Boot time in seconds since the epoch: `btime` of `<root>/proc/stat`.
pub fn boot_time(host: &HostPaths) -> Option<u64> {
    let text = host.read("/proc/stat", crate::bounded::PROC_FILE_CAP).ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// `<root>/dev/kmsg`, opened for reading beneath the root: the character device
/// O_NONBLOCK (blocking when following). A regular file stands in for it only in a
/// fixture tree (a root whose /proc is not procfs); anything else (a FIFO, a socket, a
/// directory) is refused before a byte is read, so nothing waits on it.
pub fn open(host: &HostPaths, follow: bool) -> io::Result<(PathBuf, KmsgReader<Box<dyn Read + Send>>)> {
    let path = host.host("/dev/kmsg");
    let dev = open_device(host, follow)?;
    Ok((path, KmsgReader::new(dev, follow)))
}

fn open_device(host: &HostPaths, follow: bool) -> io::Result<Box<dyn Read + Send>> {
    use rustix::fs::{FileType, OFlags};
    let fd = host.open("/dev/kmsg", OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rustix::fs::fstat(&fd)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice => {
            if follow {
                rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
            }
            Ok(Box::new(File::from(fd)))
        }
        FileType::RegularFile if !host.is_kernel_host() => Ok(Box::new(LineRecords::new(BufReader::new(File::from(fd))))),
        _ => Err(io::Error::other(format!("is {}, not the kernel's log device: not read", crate::bounded::file_type_name(st.st_mode)))),
    }
}

/// Counters of one kmsg read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KmsgStats {
    pub records: u64,
    pub gaps: u64,
    /// Records known lost in gaps (from sequence numbers).
    pub lost: u64,
    pub malformed: u64,
}

/// Read records until the end (or forever when following): each message line goes to
/// `sink`, numbered by record (1-based), with its wall time when `boot_secs` is known.
pub fn read_kmsg<R: Read>(r: &mut KmsgReader<R>, boot_secs: Option<u64>, source: &str, sink: &mut dyn LineSink) -> io::Result<KmsgStats> {
    let mut st = KmsgStats::default();
    while let Some(ev) = r.next_event()? {
        let rec = match ev {
            KmsgEvent::Record(rec) => rec,
            KmsgEvent::Gap { .. } => continue,
            KmsgEvent::Malformed(_) => {
                st.malformed += 1;
                continue;
            }
        };
        st.records += 1;
        // Facility 0 is the kernel's alone: user space writing to /dev/kmsg never gets it
        // (kernel/printk/printk.c devkmsg_write), and its records name their writer in the text.
        let kernel = rec.facility == 0;
        let mut meta = LineMeta {
            time: boot_secs.map(|b| rfc3339_usec(b.saturating_mul(1_000_000).saturating_add(rec.ts_usec))),
            host: None,
            unit: kernel.then(|| "kernel".into()),
            kernel,
            continuation: rec.flags == '+',
            origin: Origin::Kmsg { facility: rec.facility },
        };
        // A message may hold escaped newlines: each line is a line, later ones continuations.
        for (i, text) in rec.message.split(|&c| c == b'\n').enumerate() {
            if i > 0 {
                if text.is_empty() {
                    continue;
                }
                meta.continuation = true;
            }
            let text = &text[..text.len().min(MAX_LINE)];
            if sink.pending() || sink.may_match(text) {
                sink.line(&LogLine { source, line: st.records, text, meta: &meta });
            }
        }
    }
    st.gaps = r.gaps;
    st.lost = r.lost;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::split::tests::Collect;
    use std::collections::VecDeque;

    /// Records of a 6.1 kernel with memcg v1, as `dd if=/dev/kmsg bs=16k` shows them.
    const RECORDED: &[&[u8]] = &[
        b"6,1203,2210345123,-;IPv6: ADDRCONF(NETDEV_CHANGE): cali5c1e8f6a2b3: link becomes ready\n",
        b"4,1204,2210411987,-,caller=T4182;SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)\n",
        b"4,1205,2210411990,+;  cache: kmalloc-64(1673:3f1e9a7c5b2d), object size: 64, buffer size: 64, default order: 0, min order: 0\n",
        b"3,1206,2210500000,-;usb 1-1: device descriptor read/64, error -71\n SUBSYSTEM=usb\n DEVICE=c189:0\n",
        b"12,1207,2210600000,-;systemd[1]: kubepods-burstable-pod0f6b3c2e.slice: Failed to create cgroup: No space left on device\\x0asecond line \\x5c done\n",
    ];

    /// Plays recorded read() results: a record or an errno.
    struct Scripted(VecDeque<Result<Vec<u8>, i32>>);

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Err(io::Error::from_raw_os_error(11)), // EAGAIN: no more records
                Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
                Some(Ok(r)) => {
                    buf[..r.len()].copy_from_slice(&r);
                    Ok(r.len())
                }
            }
        }
    }

    #[test]
    fn records_parse() {
        let r = parse_record(RECORDED[1]).unwrap();
        assert_eq!((r.priority, r.facility, r.seq, r.ts_usec, r.flags), (4, 0, 1204, 2_210_411_987, '-'));
        assert_eq!(r.message, b"SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)");
        let r = parse_record(RECORDED[2]).unwrap();
        assert_eq!(r.flags, '+');
        let r = parse_record(RECORDED[3]).unwrap();
        assert_eq!(r.dict, vec![("SUBSYSTEM".into(), "usb".into()), ("DEVICE".into(), "c189:0".into())]);
        assert_eq!(r.message, b"usb 1-1: device descriptor read/64, error -71");
        let r = parse_record(RECORDED[4]).unwrap();
        assert_eq!((r.priority, r.facility), (4, 1), "prefix 12 = facility user (1), level warning (4)");
        assert!(r.message.ends_with(b"No space left on device\nsecond line \\ done"));
        // Without a trailing newline (a regular file's last line) and with no flags.
        let r = parse_record(b"6,7,8;hello").unwrap();
        assert_eq!((r.seq, r.ts_usec, r.flags, r.message.as_slice()), (7, 8, '-', &b"hello"[..]));
        for bad in [&b""[..], b"no header", b"x,1,2,-;m", b"6,1;m", b"6,1,99999999999999999999999,-;m", b";", b"\xff,\xfe;"] {
            assert!(parse_record(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let alphabet = b"0123456789,;-+c\\x\n =AZaz\xff\x00";
        let mut x = 0x853c_49e6_748f_ea9bu64;
        for len in 0..3000 {
            let rec: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(x >> 59) as usize % alphabet.len()]
                })
                .collect();
            if let Some(r) = parse_record(&rec) {
                assert!(r.priority <= 7);
            }
            let _ = unescape(&rec);
        }
    }

    #[test]
    fn unescape_keeps_malformed_escapes() {
        assert_eq!(unescape(b"a\\x41\\x0a\\xff\\xzz\\x4"), b"aA\n\xff\\xzz\\x4");
    }

    #[test]
    fn epipe_and_seq_jumps_are_gaps() {
        let mut script: VecDeque<Result<Vec<u8>, i32>> = VecDeque::new();
        script.push_back(Ok(RECORDED[0].to_vec()));
        script.push_back(Err(32)); // EPIPE: 1204..1206 overwritten
        script.push_back(Ok(RECORDED[4].to_vec()));
        script.push_back(Err(4)); // EINTR
        script.push_back(Ok(b"6,1210,2211000000,-;after a silent jump\n".to_vec()));
        script.push_back(Ok(b"garbage without header".to_vec()));
        let mut r = KmsgReader::new(Scripted(script), false);
        let mut evs = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            evs.push(e);
        }
        let kinds: Vec<String> = evs
            .iter()
            .map(|e| match e {
                KmsgEvent::Record(r) => format!("rec {}", r.seq),
                KmsgEvent::Gap { lost, epipe } => format!("gap {lost:?} {epipe}"),
                KmsgEvent::Malformed(_) => "malformed".into(),
            })
            .collect();
        assert_eq!(kinds, ["rec 1203", "gap Some(3) true", "rec 1207", "gap Some(2) false", "rec 1210", "malformed"]);
        assert_eq!((r.gaps, r.lost), (2, 5));
    }

    #[test]
    fn other_errors_are_errors() {
        let mut r = KmsgReader::new(Scripted(VecDeque::from([Err(13)])), false);
        assert_eq!(r.next_event().unwrap_err().raw_os_error(), Some(13));
    }

    #[test]
    fn lines_with_wall_time() {
        let script = RECORDED.iter().map(|r| Ok(r.to_vec())).collect();
        let mut r = KmsgReader::new(Scripted(script), false);
        let mut sink = Collect::new("");
        let st = read_kmsg(&mut r, Some(1_703_229_790), "/dev/kmsg", &mut sink).unwrap();
        assert_eq!(st.records, 5);
        assert_eq!(sink.got[1], (2, b"SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)".to_vec()));
        // 1703229790 s + 2210.411987 s = 2023-12-22T08:00:00.411987Z
        assert_eq!(sink.metas[1].time.as_deref(), Some("2023-12-22T08:00:00.411987Z"));
        assert!(sink.metas[1].kernel && !sink.metas[1].continuation);
        assert!(sink.metas[2].continuation, "flag + is a continuation");
        // The escaped newline of record 5 makes two lines of record 5.
        let last: Vec<_> = sink.got.iter().filter(|g| g.0 == 5).collect();
        assert_eq!(last.len(), 2);
        assert!(sink.metas.last().unwrap().continuation);
        // Facility 0 is the kernel's; record 5 (prefix 12: facility 1) was written by user space.
        assert_eq!(sink.metas[1].origin, Origin::Kmsg { facility: 0 });
        let user = sink.metas.last().unwrap();
        assert_eq!((user.kernel, &user.origin, user.unit.as_deref()), (false, &Origin::Kmsg { facility: 1 }, None));
        let mut r = KmsgReader::new(Scripted(VecDeque::new()), false);
        let st = read_kmsg(&mut r, None, "/dev/kmsg", &mut Collect::new("")).unwrap();
        assert_eq!(st.records, 0);
    }

    #[test]
    fn a_regular_file_stands_in_for_the_device() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("dev/kmsg"), RECORDED.concat()).unwrap();
        std::fs::write(d.path().join("proc/stat"), "cpu  1 2 3\nbtime 1703229790\nprocesses 5\n").unwrap();
        let host = HostPaths::new(d.path());
        assert_eq!(boot_time(&host), Some(1_703_229_790));
        let (path, mut r) = open(&host, false).unwrap();
        assert!(path.ends_with("dev/kmsg"));
        let mut seqs = Vec::new();
        while let Some(KmsgEvent::Record(rec)) = r.next_event().unwrap() {
            seqs.push((rec.seq, rec.dict.len()));
        }
        assert_eq!(seqs, [(1203, 0), (1204, 0), (1205, 0), (1206, 2), (1207, 0)]);
        assert!(open(&HostPaths::new(d.path().join("nothing")), false).is_err());
    }

    /// A FIFO in place of /dev/kmsg is refused at once (it used to wait for a writer).
    #[test]
    fn a_fifo_in_place_of_the_device_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, d.path().join("dev/kmsg"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        for follow in [false, true] {
            let e = open(&HostPaths::new(d.path()), follow).err().expect("refused");
            assert!(e.to_string().contains("is a FIFO, not the kernel's log device"), "{e}");
        }
    }

    #[test]
    fn real_kernel_device_reads_without_blocking() {
        // The environment first: root (dmesg_restrict lets only CAP_SYSLOG read it) and the device.
        assert!(rustix::process::geteuid().is_root(), "real_kernel_ tests read /dev/kmsg and must run as root");
        assert!(std::path::Path::new("/dev/kmsg").exists(), "real_kernel_ tests need /dev/kmsg");
        let host = HostPaths::default();
        let (_, mut r) = open(&host, false).unwrap_or_else(|e| panic!("open /dev/kmsg: {e}"));
        let mut n = 0;
        while let Some(ev) = r.next_event().unwrap() {
            if let KmsgEvent::Record(_) = ev {
                n += 1;
            }
        }
        // The buffer read to its end (EAGAIN), without hanging.
        assert!(n > 0, "a booted kernel has records in its buffer");
    }
}

//! Log files: glob patterns, rotated sets (`kubelet.log.1`, `messages-20231222`,
//! `syslog.2.gz`), gzip by content, following a growing file, and where to start
//! reading the tail of a big file.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;

use crate::logline::{LineMeta, Origin};
use crate::HostPaths;

use super::split::{Fill, LineSink, LineSplitter, ScanStats};

/// The host's usual log files (globs, as host paths): syslog on RHEL-like and
/// Debian-like systems, the kernel's and daemons' files, and kubelet.log where the
/// kubelet is not under systemd. Rotated and gzipped generations included.
pub const DEFAULT_LOG_GLOBS: [&str; 5] = ["/var/log/messages*", "/var/log/syslog*", "/var/log/kern.log*", "/var/log/daemon.log*", "/var/log/kubelet.log*"];

/// Where the kubelet and the container runtimes keep what containers print (CRI logs, and
/// the kubelet's links to them): what a tenant prints is never evidence, so these are never
/// read as a source, whatever a pattern names.
pub const CONTAINER_LOG_DIRS: [&str; 2] = ["/var/log/pods", "/var/log/containers"];

/// The container log directory `path` is in (links resolved), of `host` or of this machine.
pub fn container_log_dir(path: &Path, host: &HostPaths) -> Option<&'static str> {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    CONTAINER_LOG_DIRS.into_iter().find(|d| {
        let under = |base: PathBuf| {
            let base = fs::canonicalize(&base).unwrap_or(base);
            real.starts_with(&base) || path.starts_with(&base)
        };
        under(host.host(d)) || under(PathBuf::from(d))
    })
}

/// What a file's name says about who writes it: `kubelet.log*` is the kubelet's own file (a
/// kubelet run without systemd, its output redirected there), so its lines without a
/// syslog tag are the kubelet's; any other file is syslog text, whose lines name their writer.
pub fn file_meta(path: &Path) -> LineMeta {
    let own = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kubelet.log"));
    LineMeta { origin: if own { Origin::FileOf("kubelet") } else { Origin::Text }, ..LineMeta::default() }
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files a FILE argument names: itself when it has no `*`, `?` or `[`, else the
/// regular files matching it, oldest first (modification time, then name), so a
/// rotated set reads in order: `kubelet.log.2.gz`, `kubelet.log.1`, `kubelet.log`.
/// Err when a pattern matches nothing.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !has_glob_chars(pattern) || Path::new(pattern).exists() {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let paths = glob::glob(pattern).map_err(|e| format!("{pattern}: bad pattern: {e}"))?;
    let files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
    if files.is_empty() {
        return Err(format!("{pattern}: no file matches"));
    }
    Ok(oldest_first(files))
}

/// Sort paths by modification time, then name (rotation order: oldest generation first).
pub fn oldest_first(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut keyed: Vec<(SystemTime, PathBuf)> = files.drain(..).map(|p| (mtime(&p), p)).collect();
    keyed.sort();
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// The host's usual log files under `host`, in rotation order per pattern (local paths).
pub fn default_log_files(host: &HostPaths) -> Vec<PathBuf> {
    let root = glob::Pattern::escape(&host.root().to_string_lossy());
    let mut out = Vec::new();
    for g in DEFAULT_LOG_GLOBS {
        let pattern = format!("{}{}", root.trim_end_matches('/'), g);
        if let Ok(paths) = glob::glob(&pattern) {
            // Regular files as the host sees them: a symlink resolves inside the root (a
            // link to /etc/shadow means the host's, not this container's), by that name.
            let files: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| host.is_file_local(p))
                .map(|p| host.resolve(host.to_host_path(&p)).unwrap_or(p))
                .collect();
            out.extend(oldest_first(files));
        }
    }
    out
}

/// A log file opened for reading: a regular file, or a pipe the user named (`<(zcat ...)`);
/// a directory, device or socket is refused before a byte is read. O_NONBLOCK on the open
/// only: a FIFO is not waited on to open.
pub fn open_readable(path: &Path) -> io::Result<File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::openat(rustix::fs::CWD, path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Fifo => {
            rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
            Ok(File::from(fd))
        }
        _ => Err(io::Error::other(format!("is {}, not a log file: not read", crate::bounded::file_type_name(st.st_mode)))),
    }
}

/// Whether the stream starts with the gzip magic bytes (RFC 1952).
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Open a log file for streaming: gzip (any name) is decompressed, multi-member
/// archives included; a plain file is read as it is.
pub fn open_log(path: &Path) -> io::Result<(Box<dyn Read + Send>, bool)> {
    let mut f = open_readable(path)?;
    // Read-ahead for one pass from start to end (a hint: failure is harmless).
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    f.seek(SeekFrom::Start(0))?;
    if is_gzip(&head[..got]) {
        Ok((Box::new(MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, f))), true))
    } else {
        Ok((Box::new(f), false))
    }
}

/// The year a file's lines without a year most likely belong to: the year of its
/// last modification (a rotated file of last December read in January), else now.
pub fn reference_year(path: &Path) -> i32 {
    let secs = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(super::clock::now_epoch);
    super::clock::year_of(secs)
}

/// The names of the live (not yet rotated) files among [`DEFAULT_LOG_GLOBS`]: the ones
/// a follower keeps open.
pub const LIVE_LOG_NAMES: [&str; 5] = ["messages", "syslog", "kern.log", "daemon.log", "kubelet.log"];

/// Whether `path` is a live log file (not a rotated generation) of [`LIVE_LOG_NAMES`].
pub fn is_live_log(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| LIVE_LOG_NAMES.contains(&n))
}

/// Read `path` from byte `start` (the start of a line) to its end, then keep reading
/// what is appended, until `stop()`. A file replaced by rotation (another inode at the
/// path) or truncated is read again from its start, its lines numbered from 1; lines
/// read from `start` are numbered from 1 at `start`.
pub fn follow_file(path: &Path, start: u64, source: &str, meta: &LineMeta, sink: &mut dyn LineSink, poll: Duration, stop: &dyn Fn() -> bool) -> io::Result<ScanStats> {
    use std::os::unix::fs::MetadataExt;
    let mut f = open_readable(path)?;
    let mut ino = f.metadata()?.ino();
    let mut pos: u64 = f.seek(SeekFrom::Start(start))?;
    let mut s = LineSplitter::default();
    let mut total = ScanStats::default();
    loop {
        match s.read_from(&mut f, source, meta, sink)? {
            Fill::Data => {
                pos = f.stream_position().unwrap_or(pos);
                continue;
            }
            Fill::Eof => {}
        }
        if stop() {
            s.finish(source, meta, sink);
            let st = s.stats();
            total.lines += st.lines;
            total.bytes += st.bytes;
            total.long_lines += st.long_lines;
            return Ok(total);
        }
        std::thread::sleep(poll);
        let rotated = fs::metadata(path).map(|m| m.ino() != ino).unwrap_or(false);
        let truncated = f.metadata().map(|m| m.len() < pos).unwrap_or(false);
        if rotated || truncated {
            // Drain what the old file still had, then start over.
            while s.read_from(&mut f, source, meta, sink)? == Fill::Data {}
            s.finish(source, meta, sink);
            let st = s.stats();
            total.lines += st.lines;
            total.bytes += st.bytes;
            total.long_lines += st.long_lines;
            s = LineSplitter::default();
            if let Ok(nf) = open_readable(path) {
                ino = nf.metadata()?.ino();
                f = nf;
            } else {
                f.seek(SeekFrom::Start(0))?;
            }
            pos = 0;
        }
    }
}

/// Where to start reading the end of a plain file of `len` bytes so that every line
/// of the last stretch `recent` says is recent is read: steps back from the end in
/// doubling strides and looks at the first line with a time (`recent(line)` is
/// Some(true) when recent, Some(false) when older, None when it has no time) after
/// each step. Returns the offset of the start of a line, at most `max_back` bytes
/// before the end (0 when the whole file is recent or it is short).
pub fn tail_offset(f: &mut File, len: u64, recent: &dyn Fn(&[u8]) -> Option<bool>, max_back: u64) -> io::Result<u64> {
    const PROBE: usize = 64 * 1024;
    let mut step: u64 = 1 << 20;
    let mut buf = vec![0u8; PROBE];
    loop {
        if step >= len {
            return Ok(0);
        }
        let capped = step >= max_back;
        let off = len - step.min(max_back);
        f.seek(SeekFrom::Start(off))?;
        let n = read_full(f, &mut buf)?;
        let window = &buf[..n];
        // Skip the partial line the offset fell into.
        let Some(first_nl) = memchr::memchr(b'\n', window) else {
            if capped {
                return Ok(off);
            }
            step *= 2;
            continue;
        };
        let mut at = first_nl + 1;
        let mut verdict = None;
        let mut line_start = at;
        while at < window.len() {
            let end = memchr::memchr(b'\n', &window[at..]).map(|p| at + p);
            let Some(end) = end else { break };
            if let Some(r) = recent(&window[at..end]) {
                verdict = Some(r);
                line_start = at;
                break;
            }
            at = end + 1;
        }
        match verdict {
            // An older line: everything recent is after it.
            Some(false) => return Ok(off + line_start as u64),
            _ if capped => return Ok(off + (first_nl + 1) as u64),
            _ => step *= 2,
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The last complete line of a plain file (for its newest time), at most 64 KiB back.
pub fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = open_readable(path)?;
    let len = f.metadata()?.len();
    let back = len.min(64 * 1024);
    f.seek(SeekFrom::Start(len - back))?;
    let mut buf = vec![0u8; back as usize];
    let n = read_full(&mut f, &mut buf)?;
    let mut b = &buf[..n];
    while b.last() == Some(&b'\n') {
        b = &b[..b.len() - 1];
    }
    Ok(match memchr::memrchr(b'\n', b) {
        Some(p) => Some(b[p + 1..].to_vec()),
        None if back == len && !b.is_empty() => Some(b.to_vec()),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::split::scan_reader;
    use super::super::split::tests::Collect;
    use super::*;
    use std::io::Write;

    fn touch(path: &Path, content: &[u8], age_secs: u64) {
        fs::write(path, content).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_secs);
        File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn rotated_set_expands_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("kubelet.log"), b"new\n", 0);
        touch(&d.path().join("kubelet.log.1"), b"older\n", 3600);
        touch(&d.path().join("kubelet.log.2.gz"), &gz(b"oldest\n"), 7200);
        touch(&d.path().join("other.log"), b"x\n", 0);
        let pat = format!("{}/kubelet.log*", d.path().display());
        let got: Vec<String> = expand(&pat).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(got, ["kubelet.log.2.gz", "kubelet.log.1", "kubelet.log"]);
        assert!(expand(&format!("{}/nothing*", d.path().display())).unwrap_err().contains("no file matches"));
        // A plain path is taken as it is, even when missing (the open reports it).
        assert_eq!(expand("/no/such/file").unwrap(), vec![PathBuf::from("/no/such/file")]);
    }

    #[test]
    fn default_files_under_a_host_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("var/log")).unwrap();
        touch(&d.path().join("var/log/messages"), b"a\n", 0);
        touch(&d.path().join("var/log/messages-20231222"), b"b\n", 86_400);
        touch(&d.path().join("var/log/kern.log"), b"c\n", 0);
        touch(&d.path().join("var/log/dpkg.log"), b"d\n", 0);
        let got: Vec<String> = default_log_files(&HostPaths::new(d.path())).iter().map(|p| p.strip_prefix(d.path()).unwrap().display().to_string()).collect();
        assert_eq!(got, ["var/log/messages-20231222", "var/log/messages", "var/log/kern.log"]);
    }

    #[test]
    fn the_kubelets_own_file_and_container_logs() {
        assert_eq!(file_meta(Path::new("/var/log/kubelet.log.1")).origin, Origin::FileOf("kubelet"));
        assert_eq!(file_meta(Path::new("/host/var/log/messages")).origin, Origin::Text);
        let d = tempfile::tempdir().unwrap();
        let host = HostPaths::new(d.path());
        let pod = d.path().join("var/log/pods/default_web_5b2f0a4c/app");
        fs::create_dir_all(&pod).unwrap();
        fs::write(pod.join("0.log"), b"x\n").unwrap();
        fs::create_dir_all(d.path().join("var/log/containers")).unwrap();
        let link = d.path().join("var/log/containers/web_default_app-3f1e.log");
        std::os::unix::fs::symlink(pod.join("0.log"), &link).unwrap();
        // Reached through another name too.
        let elsewhere = d.path().join("copy-link");
        std::os::unix::fs::symlink(pod.join("0.log"), &elsewhere).unwrap();
        assert_eq!(container_log_dir(&pod.join("0.log"), &host), Some("/var/log/pods"));
        assert_eq!(container_log_dir(&link, &host), Some("/var/log/pods"));
        assert_eq!(container_log_dir(&elsewhere, &host), Some("/var/log/pods"));
        assert_eq!(container_log_dir(Path::new("/var/log/containers/x.log"), &host), Some("/var/log/containers"));
        fs::write(d.path().join("var/log/syslog"), b"x\n").unwrap();
        assert_eq!(container_log_dir(&d.path().join("var/log/syslog"), &host), None);
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("syslog.2");
        let mut data = gz(b"one hit\ntwo\n");
        data.extend(gz(b"three hit\n"));
        fs::write(&p, data).unwrap();
        let (r, gzip) = open_log(&p).unwrap();
        assert!(gzip);
        let mut sink = Collect::new("hit");
        let st = scan_reader(r, "syslog.2", &LineMeta::default(), &mut sink).unwrap();
        assert_eq!(st.lines, 3);
        assert_eq!(sink.got, vec![(1, b"one hit".to_vec()), (3, b"three hit".to_vec())]);
        let e = d.path().join("empty");
        fs::write(&e, b"").unwrap();
        assert!(!open_log(&e).unwrap().1);
    }

    #[test]
    fn tail_offset_finds_the_recent_stretch() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("syslog");
        let mut data = Vec::new();
        // 40,000 lines of about 100 bytes, numbered: "recent" from line 35,000.
        for i in 0..40_000u32 {
            data.extend_from_slice(format!("{i:08} {}\n", "x".repeat(90)).as_bytes());
        }
        fs::write(&p, &data).unwrap();
        let mut f = File::open(&p).unwrap();
        let recent = |l: &[u8]| std::str::from_utf8(&l[..8]).ok()?.parse::<u32>().ok().map(|n| n >= 35_000);
        let off = tail_offset(&mut f, data.len() as u64, &recent, 1 << 30).unwrap() as usize;
        assert!(off == 0 || data[off - 1] == b'\n');
        let first: u32 = std::str::from_utf8(&data[off..off + 8]).unwrap().parse().unwrap();
        assert!(first < 35_000, "starts at line {first}");
        assert!(off > 0, "a 4 MB file with the last 500 KB recent is not read whole");
        // Capped: never more than max_back bytes.
        let off = tail_offset(&mut f, data.len() as u64, &|_| Some(true), 1 << 20).unwrap();
        assert!(data.len() as u64 - off <= 1 << 20 && data[off as usize - 1] == b'\n');
        // No times at all: the cap.
        let off = tail_offset(&mut f, data.len() as u64, &|_| None, 2 << 20).unwrap();
        assert!(data.len() as u64 - off <= 2 << 20);
    }

    #[test]
    fn last_line_of_a_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"a\nb\nlast one\n\n").unwrap();
        assert_eq!(last_line(&p).unwrap(), Some(b"last one".to_vec()));
        fs::write(&p, b"only").unwrap();
        assert_eq!(last_line(&p).unwrap(), Some(b"only".to_vec()));
        fs::write(&p, b"").unwrap();
        assert_eq!(last_line(&p).unwrap(), None);
    }

    #[test]
    fn follow_reads_appends_and_rotation() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kubelet.log");
        fs::write(&p, b"1 hit\n2\n").unwrap();
        let polls = AtomicUsize::new(0);
        let path = p.clone();
        let stop = || {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            match n {
                0 => {
                    let mut f = File::options().append(true).open(&path).unwrap();
                    f.write_all(b"3 hit\n4 hit (no newline yet)").unwrap();
                }
                1 => {
                    let mut f = File::options().append(true).open(&path).unwrap();
                    f.write_all(b"\n").unwrap();
                    // Rotation: the old file moves away, a new one takes its name.
                    fs::rename(&path, path.with_extension("log.1")).unwrap();
                    fs::write(&path, b"new 1 hit\n").unwrap();
                }
                _ => {}
            }
            n >= 4
        };
        let mut sink = Collect::new("hit");
        follow_file(&p, 0, "kubelet.log", &LineMeta::default(), &mut sink, Duration::from_millis(1), &stop).unwrap();
        let got: Vec<(u64, String)> = sink.got.iter().map(|(n, t)| (*n, String::from_utf8_lossy(t).into_owned())).collect();
        assert_eq!(got, vec![(1, "1 hit".into()), (3, "3 hit".into()), (4, "4 hit (no newline yet)".into()), (1, "new 1 hit".into())]);
    }

    #[test]
    fn follow_can_start_mid_file_and_live_names_are_known() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("syslog");
        fs::write(&p, b"old hit\nnew hit\n").unwrap();
        let mut sink = Collect::new("hit");
        follow_file(&p, 8, "syslog", &LineMeta::default(), &mut sink, Duration::from_millis(1), &|| true).unwrap();
        let got: Vec<(u64, String)> = sink.got.iter().map(|(n, t)| (*n, String::from_utf8_lossy(t).into_owned())).collect();
        assert_eq!(got, vec![(1, "new hit".into())]);
        assert!(is_live_log(Path::new("/var/log/syslog")) && is_live_log(Path::new("/host/var/log/kubelet.log")));
        assert!(!is_live_log(Path::new("/var/log/syslog.1")) && !is_live_log(Path::new("/var/log/messages-20231222.gz")));
    }
}

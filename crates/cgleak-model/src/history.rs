//! The agent's history of IDs in use, as it keeps it: `<state-dir>/agent-history.jsonl`, one
//! [`Sample`] a line, mirrored from the ring in memory ([`HistoryStore`]), bounded and never
//! written through a link; and read back for the exhaustion forecast of `status`, `check`
//! and a fix's judge ([`HistoryFiles::stored_forecast`]). The history of the old layout
//! (`/var/lib/cgleak/agent-history.jsonl`, beside the fixer's state) is read too, never
//! written, so an upgrade keeps the forecast. What a reader or the store finds and cannot do
//! is told to a `note` callback (the front end prints it): never a silent loss.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::forecast::{forecast, load_history, Forecast, History, HistoryLoad, Sample, BAD_LINES_KEPT_BYTES, DEFAULT_HISTORY_CAPACITY, HISTORY_LINE_BUDGET};

/// The history file in the agent's state directory.
pub const HISTORY_FILE: &str = "agent-history.jsonl";

/// Where the agent's history is: its state directory, and the old layout's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFiles {
    pub dir: PathBuf,
    /// `<host-root>/var/lib/cgleak/agent-history.jsonl`: read only, and only beside the
    /// default `dir` (a directory given explicitly stands alone).
    pub legacy: Option<PathBuf>,
}

impl HistoryFiles {
    pub fn history_file(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// The agent's history: its own file, after the old layout's samples from before its
    /// first (read only); and the lines that could not be read. None when neither file is
    /// there. `note` hears a file that cannot be read, and that the old file was used.
    pub fn read(&self, capacity: usize, note: &mut dyn FnMut(String)) -> Option<(History, usize)> {
        // Each file from its end, in bounded memory, whatever its size or bytes.
        let own = read_history_file(&self.history_file(), capacity, note);
        let old = self.legacy.as_ref().and_then(|p| read_history_file(p, capacity, note).map(|l| (p, l)));
        if own.is_none() && old.is_none() {
            return None;
        }
        let (own, own_skipped) = own.map(|l| (l.history, l.bad_lines as usize)).unwrap_or_else(|| (History::new(capacity), 0));
        let Some((old_path, old)) = old else { return Some((own, own_skipped)) };
        let (old, old_skipped) = (old.history, old.bad_lines as usize);
        let first_own = own.samples().next().map(|s| s.at_unix_secs).unwrap_or(f64::INFINITY);
        let mut merged = History::new(capacity);
        let mut carried = 0;
        for s in old.samples().filter(|s| s.at_unix_secs < first_own) {
            merged.push(*s);
            carried += 1;
        }
        for s in own.samples() {
            merged.push(*s);
        }
        if carried > 0 {
            note(format!(
                "the agent's history of the old layout is read too: {} ({carried} samples, read only; the agent keeps its history in {} now, \
                 and the old file can go once that one covers the forecast's window)",
                old_path.display(),
                self.dir.display()
            ));
        }
        Some((merged, own_skipped + old_skipped))
    }

    /// The forecast from the agent's history, for `status`, `check` and a fix's judge; None
    /// when there is no history (no agent ran there). Lines skipped are noted, and said in
    /// the forecast's notes too.
    pub fn stored_forecast(&self, note: &mut dyn FnMut(String)) -> Option<Forecast> {
        let (history, skipped) = self.read(DEFAULT_HISTORY_CAPACITY, note)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let mut fc = forecast(&history, now);
        if skipped > 0 {
            let n = format!(
                "the agent's history {} has {skipped} lines that are not samples (not UTF-8, not a sample's JSON, or cut short): skipped, the forecast is from the {} samples read; the agent moves such lines to {}.bad",
                self.history_file().display(),
                history.len(),
                HISTORY_FILE
            );
            note(n.clone());
            fc.notes.push(n);
        }
        Some(fc)
    }
}

/// One history file read from its end ([`load_history`]): None when it is not there, and,
/// with a note, when it cannot be read (not a regular file, a link, no permission).
fn read_history_file(path: &Path, capacity: usize, note: &mut dyn FnMut(String)) -> Option<HistoryLoad> {
    match load_history(path, capacity) {
        Ok(l) => l,
        Err(e) => {
            note(format!("the agent's history {} is not read: {e}", path.display()));
            None
        }
    }
}

/// The side file that keeps the history's lines that were not samples, and its bound.
const BAD_FILE_SUFFIX: &str = ".bad";
const BAD_FILE_MAX: u64 = 1 << 20;

/// The history in memory, mirrored to `<state-dir>/agent-history.jsonl` when writable.
///
/// The file only grows by appends of whole lines and is rewritten from the ring, atomically
/// (a new file, fsync'd, renamed over it, the directory fsync'd), when it holds twice the
/// ring's samples or passes twice the ring's budget in bytes (`capacity` ×
/// [`HISTORY_LINE_BUDGET`]), so it stays bounded whatever else writes to it. No link is
/// followed: the file is opened with O_NOFOLLOW, written in place only when it is a regular
/// file of one link, and replaced otherwise. A rewrite does not drop a line it could not read
/// as a sample: those go to `<file>.bad` first ([`BAD_FILE_MAX`] at most).
pub struct HistoryStore {
    history: History,
    file: Option<PathBuf>,
    /// Lines the agent wrote to the file since its last rewrite.
    lines_in_file: usize,
}

impl HistoryStore {
    /// The history in `files` (the old layout's samples too, read only: the first rewrite
    /// keeps them in the new file), mirrored to its file from now on; in memory only when
    /// the directory is not usable. `note` hears what was found and what could not be done.
    pub fn open(files: &HistoryFiles, capacity: usize, note: &mut dyn FnMut(String)) -> HistoryStore {
        let (dir, path) = (files.dir.as_path(), files.history_file());
        let history = files.read(capacity, note).map_or_else(|| History::new(capacity), |(h, _)| h);
        let mut store = HistoryStore { history, file: Some(path.clone()), lines_in_file: 0 };
        // Start from a trimmed file; a failure here means the directory is not usable.
        if let Err(e) = fs::create_dir_all(dir).map_err(|e| e.to_string()).and_then(|_| store.rewrite(true, note)) {
            note(format!("history kept in memory only ({}: {e})", path.display()));
            store.file = None;
        }
        store
    }

    /// A history kept in memory only.
    pub fn in_memory(capacity: usize) -> HistoryStore {
        HistoryStore { history: History::new(capacity), file: None, lines_in_file: 0 }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// The file is rewritten from the ring past this size.
    fn max_file_bytes(&self) -> u64 {
        (self.history.capacity() as u64).saturating_mul(2 * HISTORY_LINE_BUDGET)
    }

    /// Replace the file with the ring, after moving the lines of the file that are not
    /// samples to the side file. `inherited`: the file is the one found at start, whose
    /// start older than the ring is worth a note (later, it is the agent's own samples).
    fn rewrite(&mut self, inherited: bool, note: &mut dyn FnMut(String)) -> Result<(), String> {
        let Some(path) = self.file.clone() else { return Ok(()) };
        let capacity = self.history.capacity();
        let loaded = load_history(&path, capacity).unwrap_or_else(|e| {
            // A link or a FIFO in its place: the rename below replaces it, never following it.
            note(format!("{} is replaced: {e}", path.display()));
            None
        });
        if let Some(old) = loaded {
            if old.bad_lines > 0 {
                let bad = side_file(&path);
                match append_bad_lines(&bad, &old.bad) {
                    Ok(kept) => {
                        let lost = old.bad_lines - kept;
                        let why = if lost > 0 {
                            format!(" ({lost} only counted: past the {} KiB of bad lines one read keeps, or the side file's {} KiB)", BAD_LINES_KEPT_BYTES >> 10, BAD_FILE_MAX >> 10)
                        } else {
                            String::new()
                        };
                        note(format!("{}: {} lines are not samples (not UTF-8, not a sample's JSON, or cut short): moved to {}{why}", path.display(), old.bad_lines, bad.display()));
                    }
                    Err(e) => note(format!("{}: {} lines are not samples; {} could not take them: {e}", path.display(), old.bad_lines, bad.display())),
                }
            }
            if inherited && old.unread_bytes > 0 {
                note(format!(
                    "{}: its first {} bytes were not read (older than the {capacity} samples kept, or past what a history of that size can hold) and are dropped",
                    path.display(),
                    old.unread_bytes
                ));
            }
        }
        replace_streamed(&path, |w| w.write_all(self.history.to_json_lines().as_bytes()))?;
        self.lines_in_file = self.history.len();
        Ok(())
    }

    /// Add a sample, and append it to the file (or rewrite the file from the ring when it
    /// has grown past its bound); a file that cannot be written is given up, with a note.
    pub fn push(&mut self, s: Sample, note: &mut dyn FnMut(String)) {
        self.history.push(s);
        let Some(path) = self.file.clone() else { return };
        let line = s.to_json_line() + "\n";
        // Appending is cheap; the file is rewritten from the ring when it has grown past its
        // bound, or when what is at its path cannot be written in place.
        let r = if self.lines_in_file + 1 > 2 * self.history.capacity() {
            self.rewrite(false, note)
        } else {
            match append_in_place(&path, line.as_bytes()) {
                Ok(Some(size)) if size <= self.max_file_bytes() => {
                    self.lines_in_file += 1;
                    Ok(())
                }
                Ok(_) => self.rewrite(false, note),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = r {
            note(format!("history kept in memory only from now ({}: {e})", path.display()));
            self.file = None;
        }
    }
}

pub(crate) fn side_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(BAD_FILE_SUFFIX);
    path.with_file_name(name)
}

/// Flags for every open of the history's files: no link followed, no FIFO waited on.
pub(crate) fn nofollow(o: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
}

/// Whether an opened file may be written in place: a regular file of one link (a hard link
/// would carry the write to the file it shares).
fn writable_in_place(f: &fs::File) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.is_file() && m.nlink() == 1).then_some(m.len()))
}

/// Append `line` to the file at `path` when it is a regular file of one link: its size
/// after. None (nothing written) when it is missing, a link, or anything else: the caller
/// then replaces it.
fn append_in_place(path: &Path, line: &[u8]) -> Result<Option<u64>, String> {
    let f = match nofollow(OpenOptions::new().append(true)).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) => return Err(format!("open: {e}")),
    };
    if writable_in_place(&f).map_err(|e| format!("stat: {e}"))?.is_none() {
        return Ok(None);
    }
    let mut f = f;
    f.write_all(line).map_err(|e| format!("append: {e}"))?;
    // The size now: another writer's lines count toward the bound too.
    writable_in_place(&f).map_err(|e| format!("stat: {e}"))
}

/// Put what `write` writes at `path` atomically (the history, the memory of memcgs): a new
/// file beside it (created, never opened through a link), written through a buffer,
/// fsync'd, renamed over what was there (a file, a link: replaced, not written through), and
/// the directory fsync'd.
pub(crate) fn replace_streamed(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let create = || nofollow(OpenOptions::new().write(true).create_new(true).mode(0o644)).open(&tmp);
    let f = match create() {
        // A leftover of a killed agent with our pid (or anything put there): removed, never opened.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::remove_file(&tmp).and_then(|_| create()),
        r => r,
    };
    let written = f.and_then(|f| {
        let mut w = BufWriter::with_capacity(64 << 10, f);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("write {}: {e}", tmp.display()));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("rename {} to {}: {e}", tmp.display(), path.display()));
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("sync directory {}: {e}", dir.display()))
}

/// Append the bad lines to the side file (made when missing), whole lines only and while it
/// stays within [`BAD_FILE_MAX`]: how many were kept. A side file that is not a regular file
/// of one link is left alone.
pub(crate) fn append_bad_lines(bad: &Path, lines: &[Vec<u8>]) -> Result<u64, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = nofollow(OpenOptions::new().append(true).create(true).mode(0o644)).open(bad).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => "a symbolic link: left alone".to_string(),
        _ => format!("open: {e}"),
    })?;
    let Some(mut size) = writable_in_place(&f).map_err(|e| format!("stat: {e}"))? else {
        return Err("not a regular file of one link: left alone".into());
    };
    let mut f = f;
    let mut kept = 0;
    for l in lines {
        if size + l.len() as u64 + 1 > BAD_FILE_MAX {
            break;
        }
        f.write_all(&[&l[..], b"\n"].concat()).map_err(|e| format!("append: {e}"))?;
        size += l.len() as u64 + 1;
        kept += 1;
    }
    f.sync_all().map_err(|e| format!("sync: {e}"))?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(samples: &[(f64, u64)]) -> String {
        samples.iter().map(|(t, ids)| Sample { at_unix_secs: *t, ids_in_use: *ids, id_limit: 65535, dying: None }.to_json_line() + "\n").collect()
    }

    fn ids(h: &History) -> Vec<u64> {
        h.samples().map(|s| s.ids_in_use).collect()
    }

    #[test]
    fn the_old_history_comes_before_the_new_one_and_only_what_it_has_from_before() {
        let t = tempfile::tempdir().unwrap();
        let files = HistoryFiles { dir: t.path().join("agent"), legacy: Some(t.path().join(HISTORY_FILE)) };
        let mut notes = Vec::new();
        assert!(files.read(100, &mut |n| notes.push(n)).is_none());
        fs::write(files.legacy.as_ref().unwrap(), lines(&[(100.0, 10), (200.0, 20), (300.0, 30)])).unwrap();
        let (hist, _) = files.read(100, &mut |n| notes.push(n)).unwrap();
        assert_eq!(ids(&hist), vec![10, 20, 30]);
        assert!(notes.pop().unwrap().contains("agent-history.jsonl (3 samples, read only"));
        fs::create_dir_all(&files.dir).unwrap();
        fs::write(files.history_file(), lines(&[(250.0, 25), (400.0, 40)])).unwrap();
        let (hist, _) = files.read(100, &mut |n| notes.push(n)).unwrap();
        assert_eq!(ids(&hist), vec![10, 20, 25, 40]);
        assert_eq!(notes.len(), 1);
        // Given explicitly, the directory stands alone.
        notes.clear();
        let (hist, _) = HistoryFiles { dir: files.dir.clone(), legacy: None }.read(100, &mut |n| notes.push(n)).unwrap();
        assert_eq!((hist.len(), notes.len()), (2, 0));
    }

    #[test]
    fn the_store_appends_rewrites_past_its_bound_and_keeps_bad_lines_aside() {
        let t = tempfile::tempdir().unwrap();
        let files = HistoryFiles { dir: t.path().to_path_buf(), legacy: None };
        fs::write(files.history_file(), format!("{}not a sample\n", lines(&[(100.0, 10)]))).unwrap();
        let mut notes = Vec::new();
        let mut store = HistoryStore::open(&files, 2, &mut |n| notes.push(n));
        assert_eq!(ids(store.history()), vec![10]);
        assert!(notes.iter().any(|n| n.contains("1 lines are not samples") && n.contains(".bad")), "{notes:?}");
        assert_eq!(fs::read_to_string(t.path().join("agent-history.jsonl.bad")).unwrap(), "not a sample\n");
        assert_eq!(fs::read_to_string(files.history_file()).unwrap(), lines(&[(100.0, 10)]));
        let push = |store: &mut HistoryStore, (t, ids): (f64, u64), notes: &mut Vec<String>| {
            store.push(Sample { at_unix_secs: t, ids_in_use: ids, id_limit: 65535, dying: None }, &mut |n| notes.push(n))
        };
        for s in [(200.0, 20), (300.0, 30), (400.0, 40)] {
            push(&mut store, s, &mut notes);
        }
        assert_eq!(ids(store.history()), vec![30, 40]);
        // Appended while the file holds at most twice the ring, then rewritten from the ring.
        assert_eq!(fs::read_to_string(files.history_file()).unwrap(), lines(&[(100.0, 10), (200.0, 20), (300.0, 30), (400.0, 40)]));
        push(&mut store, (500.0, 50), &mut notes);
        assert_eq!(fs::read_to_string(files.history_file()).unwrap(), lines(&[(400.0, 40), (500.0, 50)]));
        // A file that cannot be written (its directory gone): in memory from now, said once.
        fs::remove_dir_all(t.path()).unwrap();
        notes.clear();
        push(&mut store, (600.0, 60), &mut notes);
        push(&mut store, (700.0, 70), &mut notes);
        assert_eq!(ids(store.history()), vec![60, 70]);
        assert!(notes.len() == 1 && notes[0].contains("in memory only from now"), "{notes:?}");
    }
}

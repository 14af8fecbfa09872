//! The fix journal: an append-only file of JSON lines under the state directory,
//! fsync'd after every record, so that a fixer killed at any instant leaves a record
//! of what it meant to do and what it finished.
//!
//! A fix writes `begin` (the whole plan, with every setting it will restore), then for
//! each step `intent` before touching the host and `done` after, `amend` when the live
//! tree changed under it, and `end` last. A journal without `end` is unfinished:
//! `cgleak fix --resume` reads it back ([`JournalState`]) and finishes or rolls back,
//! appending to the same file; no new fix starts while it exists. A finished journal
//! is moved into `fix-journals/` for the record.
//!
//! A line cut short by a crash mid-write is the last one and is ignored: its record
//! never became durable, and every step is safe to run again.
//!
//! The journal is read and written only through its [`StateDir`]: no link is followed to
//! it, and it is refused unless root alone can change it. What it says is data: the
//! resume checks it against the host before anything is done ([`super::resume`]). One
//! that cannot be read is set aside with [`discard`] (`cgleak fix --discard-journal`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::failpoint::{Failpoints, Position};
use super::state::{Open, StateDir, StateError};

/// The journal of the fix in progress, in the state directory.
pub const JOURNAL_FILE: &str = "fix-journal.jsonl";
/// Where finished journals are kept.
pub const ARCHIVE_DIR: &str = "fix-journals";
/// A journal is a plan and a line per step: one bigger than this is not one of cgleak's.
const MAX_JOURNAL_BYTES: u64 = 256 << 20;

/// How a fix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step done.
    Completed,
    /// Undone: the host is as it was before the fix (as far as the action can undo).
    RolledBack,
    /// Stopped with the host consistent but the fix not applied in full (reported).
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
        }
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Begin {
        /// `<action>-<unix secs>-<pid>`.
        id: String,
        action: String,
        at_unix: f64,
        pid: u32,
        /// The action's own plan, with everything needed to finish or undo it.
        plan: Value,
    },
    /// About to perform step `step` (1-based).
    Intent { step: u32, at_unix: f64 },
    /// Step `step` is done; `result` says what it did.
    Done {
        step: u32,
        at_unix: f64,
        #[serde(default)]
        result: Value,
    },
    /// The live tree changed since planning: the action's change to its plan.
    Amend { step: u32, change: Value },
    /// From here on the fix is being undone.
    Rollback { at_unix: f64, reason: String },
    End { outcome: Outcome, at_unix: f64 },
}

/// What a journal says, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalState {
    pub id: String,
    pub action: String,
    pub started_unix: f64,
    pub pid: u32,
    pub plan: Value,
    /// Steps whose `done` is durable.
    pub done: BTreeSet<u32>,
    /// Results of the done steps, in order.
    pub results: Vec<(u32, Value)>,
    /// The step with an `intent` but no `done`: it may or may not have happened.
    pub in_flight: Option<u32>,
    /// Amendments, in order.
    pub amendments: Vec<(u32, Value)>,
    /// The reason, when a rollback had begun.
    pub rolling_back: Option<String>,
    pub ended: Option<Outcome>,
    /// Lines that could not be read (at most the torn last one, after a crash).
    pub unreadable_lines: usize,
    /// Bytes up to the end of the last whole record.
    pub readable_bytes: u64,
    /// The line (1-based) of the begin record, which holds the plan.
    pub begin_line: usize,
    /// The line of each amendment, in the order of `amendments`.
    pub amendment_lines: Vec<usize>,
}

impl JournalState {
    /// The state right after the begin record: nothing done yet.
    fn begun(id: String, action: String, started_unix: f64, pid: u32, plan: Value) -> JournalState {
        JournalState {
            id,
            action,
            started_unix,
            pid,
            plan,
            done: BTreeSet::new(),
            results: Vec::new(),
            in_flight: None,
            amendments: Vec::new(),
            rolling_back: None,
            ended: None,
            unreadable_lines: 0,
            readable_bytes: 0,
            begin_line: 1,
            amendment_lines: Vec::new(),
        }
    }
}

/// Errors of the journal; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `detail` names the line.
    #[error("{}: not a fix journal: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "an unfinished fix ({action}, started by pid {pid} at {started}) is recorded in {}: run `cgleak fix --resume` \
         to finish it (or `cgleak fix --resume --rollback` to undo it) before starting another",
        .path.display()
    )]
    Unfinished { path: PathBuf, action: String, pid: u32, started: String },
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> Self {
        JournalError::Io { path: path.to_path_buf(), source }
    }

    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            JournalError::State(s) => s.io_error(),
            _ => None,
        }
    }
}

pub fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// An open journal, appended to with a durable write per record.
#[derive(Debug)]
pub struct FixJournal {
    path: PathBuf,
    dir: StateDir,
    file: File,
    failpoints: Failpoints,
    pub state: JournalState,
}

/// Read the journal in `dir`, if there is one.
fn read_in(dir: &StateDir) -> Result<Option<JournalState>, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let Some(file) = dir.open_file(JOURNAL_FILE, Open::Read)? else { return Ok(None) };
    let mut text = Vec::new();
    file.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut text).map_err(|e| JournalError::io(&path, e))?;
    if text.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(JournalError::Corrupt { path, detail: format!("line 1: bigger than {} MiB, which no fix journal is", MAX_JOURNAL_BYTES >> 20) });
    }
    parse(&path, &text).map(Some)
}

/// Refuse when an unfinished journal is in `dir`; archive one that ended.
fn ensure_none_unfinished_in(dir: &StateDir) -> Result<(), JournalError> {
    match read_in(dir)? {
        Some(s) if s.ended.is_none() => Err(JournalError::Unfinished { path: dir.join(JOURNAL_FILE), action: s.action, pid: s.pid, started: format_unix(s.started_unix) }),
        // A journal that ended but was not archived (a crash between the two): archive it now.
        Some(s) => archive(dir, &s.id, "").map(|_| ()),
        None => Ok(()),
    }
}

impl FixJournal {
    /// The journal path in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(JOURNAL_FILE)
    }

    /// Read the journal in `state_dir`, if there is one.
    pub fn read(state_dir: &Path) -> Result<Option<JournalState>, JournalError> {
        match StateDir::open(state_dir)? {
            Some(dir) => read_in(&dir),
            None => Ok(None),
        }
    }

    /// Refuse when an unfinished journal exists in `state_dir`.
    pub fn ensure_none_unfinished(state_dir: &Path) -> Result<(), JournalError> {
        match StateDir::open(state_dir)? {
            Some(dir) => ensure_none_unfinished_in(&dir),
            None => Ok(()),
        }
    }

    /// Start a new journal with its `begin` record (durable before this returns).
    pub fn begin(state_dir: &Path, action: &str, plan: Value, failpoints: Failpoints) -> Result<FixJournal, JournalError> {
        let dir = StateDir::create(state_dir)?;
        ensure_none_unfinished_in(&dir)?;
        let path = dir.join(JOURNAL_FILE);
        // The journal appears under its name only with its begin record in it: the record
        // goes to a temporary file first, which is renamed once it is on disk. A crash
        // before the rename leaves only the temporary file, which means nothing happened.
        let tmp_name = format!("{JOURNAL_FILE}.new");
        let tmp = dir.join(&tmp_name);
        let file = dir.open_file(&tmp_name, Open::CreateNew)?.expect("a new file is always opened");
        let at = now_unix();
        let pid = std::process::id();
        let id = format!("{action}-{}-{pid}", at as u64);
        let mut j = FixJournal {
            path: tmp.clone(),
            dir,
            file,
            failpoints,
            state: JournalState::begun(id.clone(), action.to_string(), at, pid, plan.clone()),
        };
        j.append(&Record::Begin { id, action: action.to_string(), at_unix: at, pid, plan })?;
        if j.dir.entry(JOURNAL_FILE)?.is_some() {
            return Err(JournalError::io(&path, io::Error::new(io::ErrorKind::AlreadyExists, "another fix journal appeared")));
        }
        j.dir.rename_to(&tmp_name, &j.dir, JOURNAL_FILE)?;
        j.path = path;
        // The new file's name is durable only once its directory is.
        j.dir.sync()?;
        Ok(j)
    }

    /// Open the unfinished journal in `state_dir` to go on with it.
    pub fn resume(state_dir: &Path, failpoints: Failpoints) -> Result<Option<FixJournal>, JournalError> {
        let Some(dir) = StateDir::open(state_dir)? else { return Ok(None) };
        let Some(state) = read_in(&dir)? else { return Ok(None) };
        let path = dir.join(JOURNAL_FILE);
        if state.ended.is_some() {
            archive(&dir, &state.id, "")?;
            return Ok(None);
        }
        let file = dir.open_file(JOURNAL_FILE, Open::Append)?.ok_or_else(|| JournalError::io(&path, io::Error::from(io::ErrorKind::NotFound)))?;
        let mut j = FixJournal { path, dir, file, failpoints, state };
        // A torn last line never became a record: cut it off, so the next record
        // starts a line of its own and the file stays readable.
        if j.state.unreadable_lines > 0 {
            let len = j.state.readable_bytes;
            j.file.set_len(len).and_then(|_| j.file.sync_data()).map_err(|e| JournalError::io(&j.path, e))?;
            j.state.unreadable_lines = 0;
        }
        Ok(Some(j))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory the journal is in.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_done(&self, step: u32) -> bool {
        self.state.done.contains(&step)
    }

    /// Journal the intent to perform `step`; the failpoint `before:<step>` fires after it.
    pub fn intent(&mut self, step: u32) -> Result<(), JournalError> {
        self.append(&Record::Intent { step, at_unix: now_unix() })?;
        self.state.in_flight = Some(step);
        self.failpoints.reached(Position::Before, step);
        Ok(())
    }

    /// Journal that `step` is done; the failpoint `after:<step>` fires before it.
    pub fn done(&mut self, step: u32, result: Value) -> Result<(), JournalError> {
        self.failpoints.reached(Position::After, step);
        self.append(&Record::Done { step, at_unix: now_unix(), result: result.clone() })?;
        self.state.done.insert(step);
        self.state.results.push((step, result));
        self.state.in_flight = None;
        Ok(())
    }

    pub fn amend(&mut self, step: u32, change: Value) -> Result<(), JournalError> {
        self.append(&Record::Amend { step, change: change.clone() })?;
        self.state.amendments.push((step, change));
        self.state.amendment_lines.push(0);
        Ok(())
    }

    pub fn rollback(&mut self, reason: &str) -> Result<(), JournalError> {
        if self.state.rolling_back.is_none() {
            self.append(&Record::Rollback { at_unix: now_unix(), reason: reason.to_string() })?;
            self.state.rolling_back = Some(reason.to_string());
        }
        Ok(())
    }

    /// Journal the end and archive the file: `fix-journals/<id>.jsonl`.
    pub fn end(mut self, outcome: Outcome) -> Result<PathBuf, JournalError> {
        self.append(&Record::End { outcome, at_unix: now_unix() })?;
        archive(&self.dir, &self.state.id, "")
    }

    fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(r).expect("journal records always serialize");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| JournalError::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| JournalError::io(&self.path, e))
    }
}

/// A journal id as a file name: the ids cgleak writes (`<action>-<secs>-<pid>`) are; any
/// other (a damaged or forged journal's) is not used, so an archive name never leads
/// out of `fix-journals/`.
fn archive_name(id: &str) -> Option<&str> {
    let ok = !id.is_empty() && id.len() <= 128 && !id.starts_with('.') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(id)
}

/// Move the journal into the archive directory as `<prefix><id>.jsonl` (a name of its own
/// if that one is taken); the rename is durable in both directories before this returns.
fn archive(dir: &StateDir, id: &str, prefix: &str) -> Result<PathBuf, JournalError> {
    let archive = dir.subdir(ARCHIVE_DIR, true)?.expect("made when missing");
    let base = format!("{prefix}{}", archive_name(id).map_or_else(|| format!("unnamed-{}", now_unix() as u64), str::to_string));
    let mut name = format!("{base}.jsonl");
    for n in 2.. {
        if archive.entry(&name)?.is_none() {
            break;
        }
        name = format!("{base}-{n}.jsonl");
    }
    dir.rename_to(JOURNAL_FILE, &archive, &name)?;
    // The new name and the old one's removal: each in its own directory.
    archive.sync()?;
    dir.sync()?;
    Ok(archive.join(&name))
}

/// What [`discard`] did.
#[derive(Debug)]
pub struct Discarded {
    /// Where the journal went.
    pub archived: PathBuf,
    /// What it said, when it could be read.
    pub state: Option<JournalState>,
    /// Why it could not be read.
    pub unreadable: Option<String>,
}

/// Set the journal in `state_dir` aside (`cgleak fix --discard-journal`): archived as
/// `fix-journals/discarded-<time>-<id>.jsonl`, readable or not; nothing on the host is
/// changed. None when there is no journal. The caller holds the lock.
pub fn discard(state_dir: &Path) -> Result<Option<Discarded>, JournalError> {
    let Some(dir) = StateDir::open(state_dir)? else { return Ok(None) };
    if dir.entry(JOURNAL_FILE)?.is_none() {
        return Ok(None);
    }
    let (state, unreadable) = match read_in(&dir) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let id = state.as_ref().map_or("unreadable", |s| s.id.as_str());
    let archived = archive(&dir, id, &format!("discarded-{}-", now_unix() as u64))?;
    Ok(Some(Discarded { archived, state, unreadable }))
}

/// Read a journal's lines back into its state.
pub fn parse(path: &Path, text: &[u8]) -> Result<JournalState, JournalError> {
    let corrupt = |detail: String| JournalError::Corrupt { path: path.to_path_buf(), detail };
    // (line, offset just past it including its newline)
    let mut lines: Vec<(&[u8], usize)> = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = text[start..].iter().position(|b| *b == b'\n').map_or(text.len(), |p| start + p + 1);
        lines.push((&text[start..end], end));
        start = end;
    }
    let mut state: Option<JournalState> = None;
    let mut unreadable = 0;
    let mut readable_bytes = 0;
    let count = lines.len();
    for (i, (line, end)) in lines.into_iter().enumerate() {
        let torn = !line.ends_with(b"\n");
        if !torn && line.iter().all(u8::is_ascii_whitespace) {
            readable_bytes = end;
            continue;
        }
        let record: Record = match serde_json::from_slice(line) {
            // Only a line with its newline was written whole.
            Ok(r) if !torn => r,
            // A torn write can only be the last line; anywhere else the file is damaged.
            _ if torn && i + 1 == count => {
                unreadable += 1;
                continue;
            }
            Ok(_) => unreachable!("a line without its newline is the last one"),
            Err(e) => return Err(corrupt(format!("line {}: {e}", i + 1))),
        };
        readable_bytes = end;
        match (record, state.as_mut()) {
            (Record::Begin { id, action, at_unix, pid, plan }, None) => {
                let mut s = JournalState::begun(id, action, at_unix, pid, plan);
                s.begin_line = i + 1;
                state = Some(s);
            }
            (Record::Begin { .. }, Some(_)) => return Err(corrupt(format!("line {}: a second begin record", i + 1))),
            (_, None) => return Err(corrupt(format!("line {}: the first record is not `begin`", i + 1))),
            (Record::Intent { step, .. }, Some(s)) => s.in_flight = Some(step),
            (Record::Done { step, result, .. }, Some(s)) => {
                s.done.insert(step);
                s.results.push((step, result));
                if s.in_flight == Some(step) {
                    s.in_flight = None;
                }
            }
            (Record::Amend { step, change }, Some(s)) => {
                s.amendments.push((step, change));
                s.amendment_lines.push(i + 1);
            }
            (Record::Rollback { reason, .. }, Some(s)) => s.rolling_back = Some(reason),
            (Record::End { outcome, .. }, Some(s)) => s.ended = Some(outcome),
        }
    }
    let mut state = state.ok_or_else(|| corrupt("line 1: no record in it (empty)".into()))?;
    state.unreadable_lines = unreadable;
    state.readable_bytes = readable_bytes as u64;
    Ok(state)
}

/// `2026-12-02T05:21:36Z` for a unix time.
pub fn format_unix(t: f64) -> String {
    cgleak_readers::logs::clock::rfc3339_secs(t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn none() -> Failpoints {
        Failpoints::none()
    }

    #[test]
    fn a_fix_is_recorded_step_by_step_and_archived_at_its_end() {
        let t = tempfile::tempdir().unwrap();
        let mut j = FixJournal::begin(t.path(), "gc", json!({"pods": ["a"]}), none()).unwrap();
        j.intent(1).unwrap();
        j.done(1, json!({"removed": 3})).unwrap();
        j.intent(2).unwrap();
        let s = FixJournal::read(t.path()).unwrap().unwrap();
        assert_eq!(s.action, "gc");
        assert_eq!(s.plan, json!({"pods": ["a"]}));
        assert_eq!(s.done, BTreeSet::from([1]));
        assert_eq!(s.in_flight, Some(2));
        assert!(s.ended.is_none());
        let err = FixJournal::begin(t.path(), "reclaim", json!({}), none()).unwrap_err();
        assert!(err.to_string().contains("cgleak fix --resume"), "{err}");

        let mut j = FixJournal::resume(t.path(), none()).unwrap().unwrap();
        assert_eq!(j.state.in_flight, Some(2));
        j.done(2, Value::Null).unwrap();
        let archived = j.end(Outcome::Completed).unwrap();
        assert!(!FixJournal::path_in(t.path()).exists());
        let s = parse(&archived, &fs::read(&archived).unwrap()).unwrap();
        assert_eq!(s.ended, Some(Outcome::Completed));
        assert_eq!(s.done, BTreeSet::from([1, 2]));
        FixJournal::ensure_none_unfinished(t.path()).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_ignored_but_damage_elsewhere_is_not() {
        let p = Path::new("/state/fix-journal.jsonl");
        let begin = r#"{"type":"begin","id":"x","action":"gc","at_unix":1.0,"pid":7,"plan":{}}"#;
        let torn = format!("{begin}\n{{\"type\":\"intent\",\"step\":1,\"at_unix\":2.0}}\n{{\"type\":\"do");
        let s = parse(p, torn.as_bytes()).unwrap();
        assert_eq!((s.in_flight, s.unreadable_lines), (Some(1), 1));
        let damaged = format!("{begin}\nnot json\n{{\"type\":\"intent\",\"step\":1,\"at_unix\":2.0}}\n");
        let e = parse(p, damaged.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("/state/fix-journal.jsonl") && e.contains("line 2"), "{e}");
        let e = parse(p, b"{\"type\":\"intent\",\"step\":1,\"at_unix\":2.0}\n").unwrap_err().to_string();
        assert!(e.contains("not `begin`"), "{e}");
    }

    #[test]
    fn resume_after_a_torn_write_cuts_the_fragment_off() {
        let t = tempfile::tempdir().unwrap();
        let mut j = FixJournal::begin(t.path(), "gc", json!({}), none()).unwrap();
        j.intent(1).unwrap();
        drop(j);
        let path = FixJournal::path_in(t.path());
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"done\",\"step\":1,\"at").unwrap();
        drop(f);
        let mut j = FixJournal::resume(t.path(), none()).unwrap().unwrap();
        // The torn `done` never counted: step 1 is still in flight.
        assert_eq!((j.state.in_flight, j.state.done.len()), (Some(1), 0));
        j.done(1, json!("again")).unwrap();
        let s = FixJournal::read(t.path()).unwrap().unwrap();
        assert_eq!((s.done, s.unreadable_lines), (BTreeSet::from([1]), 0));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn a_forged_id_never_names_the_archive_and_archives_do_not_overwrite_each_other() {
        let t = tempfile::tempdir().unwrap();
        let begin = |id: &str| format!("{{\"type\":\"begin\",\"id\":{id:?},\"action\":\"gc\",\"at_unix\":1.0,\"pid\":7,\"plan\":{{}}}}\n{{\"type\":\"end\",\"outcome\":\"completed\",\"at_unix\":2.0}}\n");
        fs::write(FixJournal::path_in(t.path()), begin("../../escaped")).unwrap();
        FixJournal::ensure_none_unfinished(t.path()).unwrap();
        let names: Vec<String> = fs::read_dir(t.path().join(ARCHIVE_DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.len() == 1 && names[0].starts_with("unnamed-"), "{names:?}");
        assert!(!t.path().parent().unwrap().join("escaped.jsonl").exists());
        for _ in 0..2 {
            fs::write(FixJournal::path_in(t.path()), begin("gc-1-7")).unwrap();
            FixJournal::ensure_none_unfinished(t.path()).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(t.path().join(ARCHIVE_DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(&names[..2], ["gc-1-7-2.jsonl", "gc-1-7.jsonl"], "{names:?}");
    }

    #[test]
    fn a_garbage_journal_names_its_line_and_is_discarded_into_the_archive() {
        let t = tempfile::tempdir().unwrap();
        let p = FixJournal::path_in(t.path());
        fs::write(&p, "\n\u{1}garbage\n").unwrap();
        let e = FixJournal::ensure_none_unfinished(t.path()).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()) && e.contains("line 2"), "{e}");
        let d = discard(t.path()).unwrap().unwrap();
        assert!(d.state.is_none() && d.unreadable.as_deref().is_some_and(|u| u.contains("line 2")), "{d:?}");
        let name = d.archived.file_name().unwrap().to_str().unwrap().to_string();
        assert!(d.archived.starts_with(t.path().join(ARCHIVE_DIR)) && name.starts_with("discarded-") && name.ends_with("-unreadable.jsonl"), "{name}");
        assert_eq!(fs::read_to_string(&d.archived).unwrap(), "\n\u{1}garbage\n");
        assert!(!p.exists());
        FixJournal::ensure_none_unfinished(t.path()).unwrap();
        assert!(discard(t.path()).unwrap().is_none());
        // A readable unfinished one keeps its id in the name.
        let mut j = FixJournal::begin(t.path(), "gc", json!({}), none()).unwrap();
        j.intent(1).unwrap();
        let d = discard(t.path()).unwrap().unwrap();
        assert!(d.archived.to_str().unwrap().ends_with(&format!("-{}.jsonl", j.state.id)), "{d:?}");
        assert_eq!(d.state.unwrap().in_flight, Some(1));
    }

    #[test]
    fn a_linked_or_group_writable_journal_is_refused_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("journal");
        fs::write(&target, "{\"type\":\"begin\",\"id\":\"x\",\"action\":\"gc\",\"at_unix\":1.0,\"pid\":7,\"plan\":{}}\n").unwrap();
        let p = FixJournal::path_in(t.path());
        symlink(&target, &p).unwrap();
        let e = FixJournal::read(t.path()).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()) && e.contains("symbolic link"), "{e}");
        fs::remove_file(&p).unwrap();
        fs::copy(&target, &p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o620)).unwrap();
        let e = FixJournal::resume(t.path(), none()).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()) && e.contains("writable by its group"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(FixJournal::read(t.path()).unwrap().unwrap().begin_line, 1);
    }

    #[test]
    fn unix_times_print_as_utc() {
        assert_eq!(format_unix(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_796_188_896.0), "2026-12-02T05:21:36Z");
        assert_eq!(format_unix(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}

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

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::failpoint::{Failpoints, Position};

/// The journal of the fix in progress, in the state directory.
pub const JOURNAL_FILE: &str = "fix-journal.jsonl";
/// Where finished journals are kept.
pub const ARCHIVE_DIR: &str = "fix-journals";

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
    #[error("{}: not a fix journal: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
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
    state_dir: PathBuf,
    file: File,
    failpoints: Failpoints,
    pub state: JournalState,
}

impl FixJournal {
    /// The journal path in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(JOURNAL_FILE)
    }

    /// Read the journal in `state_dir`, if there is one.
    pub fn read(state_dir: &Path) -> Result<Option<JournalState>, JournalError> {
        let path = Self::path_in(state_dir);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::io(&path, e)),
        };
        parse(&path, &text).map(Some)
    }

    /// Refuse when an unfinished journal exists in `state_dir`.
    pub fn ensure_none_unfinished(state_dir: &Path) -> Result<(), JournalError> {
        match Self::read(state_dir)? {
            Some(s) if s.ended.is_none() => Err(JournalError::Unfinished {
                path: Self::path_in(state_dir),
                action: s.action,
                pid: s.pid,
                started: format_unix(s.started_unix),
            }),
            // A journal that ended but was not archived (a crash between the two): archive it now.
            Some(s) => archive(state_dir, &s.id).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Start a new journal with its `begin` record (durable before this returns).
    pub fn begin(state_dir: &Path, action: &str, plan: Value, failpoints: Failpoints) -> Result<FixJournal, JournalError> {
        Self::ensure_none_unfinished(state_dir)?;
        fs::create_dir_all(state_dir).map_err(|e| JournalError::io(state_dir, e))?;
        let path = Self::path_in(state_dir);
        // The journal appears under its name only with its begin record in it: the record
        // goes to a temporary file first, which is renamed once it is on disk. A crash
        // before the rename leaves only the temporary file, which means nothing happened.
        let tmp = state_dir.join(format!("{JOURNAL_FILE}.new"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| JournalError::io(&tmp, e))?;
        let at = now_unix();
        let pid = std::process::id();
        let id = format!("{action}-{}-{pid}", at as u64);
        let mut j = FixJournal {
            path: path.clone(),
            state_dir: state_dir.to_path_buf(),
            file,
            failpoints,
            state: JournalState::begun(id.clone(), action.to_string(), at, pid, plan.clone()),
        };
        j.path = tmp.clone();
        j.append(&Record::Begin { id, action: action.to_string(), at_unix: at, pid, plan })?;
        if path.exists() {
            return Err(JournalError::io(&path, io::Error::new(io::ErrorKind::AlreadyExists, "another fix journal appeared")));
        }
        fs::rename(&tmp, &path).map_err(|e| JournalError::io(&tmp, e))?;
        j.path = path;
        // The new file's name is durable only once its directory is.
        sync_dir(state_dir)?;
        Ok(j)
    }

    /// Open the unfinished journal in `state_dir` to go on with it.
    pub fn resume(state_dir: &Path, failpoints: Failpoints) -> Result<Option<FixJournal>, JournalError> {
        let Some(state) = Self::read(state_dir)? else { return Ok(None) };
        let path = Self::path_in(state_dir);
        if state.ended.is_some() {
            archive(state_dir, &state.id)?;
            return Ok(None);
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| JournalError::io(&path, e))?;
        let mut j = FixJournal { path, state_dir: state_dir.to_path_buf(), file, failpoints, state };
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
        archive(&self.state_dir, &self.state.id)
    }

    fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(r).expect("journal records always serialize");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| JournalError::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| JournalError::io(&self.path, e))
    }
}

/// Move the journal into the archive directory.
fn archive(state_dir: &Path, id: &str) -> Result<PathBuf, JournalError> {
    let dir = state_dir.join(ARCHIVE_DIR);
    fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
    let to = dir.join(format!("{id}.jsonl"));
    let from = FixJournal::path_in(state_dir);
    fs::rename(&from, &to).map_err(|e| JournalError::io(&from, e))?;
    sync_dir(state_dir)?;
    Ok(to)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::io(dir, e))
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
                state = Some(JournalState::begun(id, action, at_unix, pid, plan))
            }
            (Record::Begin { .. }, Some(_)) => return Err(corrupt(format!("line {}: a second begin record", i + 1))),
            (_, None) => return Err(corrupt("the first record is not `begin`".into())),
            (Record::Intent { step, .. }, Some(s)) => s.in_flight = Some(step),
            (Record::Done { step, result, .. }, Some(s)) => {
                s.done.insert(step);
                s.results.push((step, result));
                if s.in_flight == Some(step) {
                    s.in_flight = None;
                }
            }
            (Record::Amend { step, change }, Some(s)) => s.amendments.push((step, change)),
            (Record::Rollback { reason, .. }, Some(s)) => s.rolling_back = Some(reason),
            (Record::End { outcome, .. }, Some(s)) => s.ended = Some(outcome),
        }
    }
    let mut state = state.ok_or_else(|| corrupt("empty".into()))?;
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
    fn unix_times_print_as_utc() {
        assert_eq!(format_unix(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_796_188_896.0), "2026-12-02T05:21:36Z");
        assert_eq!(format_unix(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}

//! Fix: the remedies `cgleak check` ranks, applied with care.
//!
//! Every action first makes a plan ([`PlanView`]: every cgroup it will touch, every file
//! it will write, what it expects to gain) and changes nothing; applying it runs the
//! plan's steps under a [`journal::FixJournal`] (intent before each step, completion
//! after), so that a fixer killed at any point is finished or undone by
//! `cgleak fix --resume`. One fixer per node ([`lock::FixLock`]). Each action checks the
//! live tree again just before each step: what was created or removed since planning is
//! handled, never written over blindly. The journal, the lock and the backups live in the
//! fixer's own state directory ([`state`]), and a resume carries out only what the
//! action's own planner would do on this host ([`resume`]).
//!
//! The actions: [`reclaim`] (release dying memcgs), [`gc`] (remove orphaned pod
//! cgroups), [`migrate`] (move running pods into fresh cgroups without kmem accounting,
//! at the same paths), [`nokmem`] (`cgroup.memory=nokmem` on the kernel command line)
//! and [`reboot`] (kured's sentinel file).

pub mod failpoint;
pub mod gc;
pub mod journal;
pub mod lock;
pub mod migrate;
pub mod nokmem;
pub mod reboot;
pub mod reclaim;
pub mod resume;
pub mod settings;
pub mod state;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cgleak_model::era::KernelEra;
use cgleak_readers::mountinfo::{CgroupLayout, MemoryHierarchy};
use cgleak_readers::{HostPaths, ReadError};

use journal::{FixJournal, JournalError, Outcome};
use lock::LockError;

/// The host a fix works on.
#[derive(Debug, Clone)]
pub struct FixHost {
    pub host: HostPaths,
    pub layout: CgroupLayout,
    pub memory: MemoryHierarchy,
    pub era: KernelEra,
    /// What the census says right now, for the plans' checks.
    pub headroom: Option<u64>,
    pub dying: Option<u64>,
    /// A running kubelet: pid and argv.
    pub kubelet: Option<(u32, Vec<String>)>,
    /// The judge's report on this host (`cgleak check`'s): the plans take their refusals
    /// and expected gains from it. None where a fix runs without one (the agent's reclaim).
    pub judgement: Option<cgleak_model::verdict::CheckReport>,
}

/// A file the plan writes, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub file: String,
    pub value: String,
}

/// One journaled step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// 1-based: the number in the journal and in `CGLEAK_FAILPOINT`.
    pub step: u32,
    pub title: String,
    /// Host paths of the cgroups it touches.
    pub cgroups: Vec<String>,
    pub writes: Vec<FileWrite>,
}

/// What an action will do, shown before anything is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub action: String,
    pub summary: String,
    pub steps: Vec<PlanStep>,
    pub expected_gain: String,
    /// Costs and caveats.
    pub notes: Vec<String>,
    /// Set when there is nothing to do (the plan has no steps).
    pub nothing_to_do: Option<String>,
    /// Set when the plan must not be applied, and why (a kubelet runs, the rate limit, ...).
    pub refused: Option<String>,
}

impl PlanView {
    pub fn new(action: &str, summary: impl Into<String>) -> PlanView {
        PlanView {
            action: action.to_string(),
            summary: summary.into(),
            steps: Vec::new(),
            expected_gain: String::new(),
            notes: Vec::new(),
            nothing_to_do: None,
            refused: None,
        }
    }

    pub fn step(&mut self, title: impl Into<String>, cgroups: Vec<String>, writes: Vec<FileWrite>) {
        let step = self.steps.len() as u32 + 1;
        self.steps.push(PlanStep { step, title: title.into(), cgroups, writes });
    }

    pub fn title_of(&self, step: u32) -> String {
        self.steps.iter().find(|s| s.step == step).map(|s| s.title.clone()).unwrap_or_else(|| format!("step {step}"))
    }
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    /// Done by an earlier run (a resumed fix).
    DoneBefore,
    Skipped,
    Failed,
    /// Undone by a rollback.
    RolledBack,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u32,
    pub title: String,
    pub status: StepStatus,
    pub detail: String,
}

/// What applying (or resuming) a fix did; the front end adds the census before and after.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub action: String,
    /// None: the fix stopped unfinished (its journal stays for `--resume`).
    pub outcome: Option<Outcome>,
    pub steps: Vec<StepReport>,
    pub notes: Vec<String>,
    pub error: Option<String>,
    /// The journal: archived when the fix ended, else the unfinished one.
    pub journal: String,
    /// Stopped by the cancel flag (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// Per action: migrate's timings, reclaim's releases, ...
    pub details: Value,
}

/// Progress of an applied fix, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixProgress {
    Step { step: u32, of: u32, title: String },
    Item { done: u64, total: u64 },
}

/// Errors that stop a fix before or between its steps. Each names the flag, file or
/// journal it concerns and keeps the error beneath it; [`FixError::is_usage`] tells a bad
/// argument (exit 2) from a failure (exit 1) for the front end.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// A flag whose value cannot be used here: the flag, the value as given, and why.
    #[error("{flag} {value}: {why}")]
    BadArgument { flag: &'static str, value: String, why: String },
    /// The action does not apply to this host as it is set up (memory on cgroup v2 for
    /// migrate, no memory.reclaim before 5.19, ...): why.
    #[error("{0}")]
    NotOnThisHost(String),
    /// `nokmem --restore DIR`: the manifest in DIR is not one cgleak wrote.
    #[error("--restore: {}: not a cgleak backup manifest: {source}", .path.display())]
    NotAManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A host file or cgroup file that could not be read (the error names it).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A cgroup's memory settings that could not be read or written (file and value named).
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    /// A cgroup's tasks that could not be read or moved (the cgroup named).
    #[error(transparent)]
    Tasks(#[from] tasks::MoveError),
    /// A cgroup of the census that is not beneath the memory hierarchy the action works in.
    #[error("{what} {path} is outside the memory hierarchy {}", .hierarchy.display())]
    OutsideHierarchy { what: &'static str, path: String, hierarchy: PathBuf },
    /// A journal whose plan, or a change recorded to it, cannot be read back.
    #[error("{}: {what} cannot be read: {source}", .journal.display())]
    JournalData {
        journal: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The agent's reclaim found an unfinished fix of another action in its state directory.
    #[error(
        "{}: an unfinished `{action}` fix, not a reclaim: the agent finishes only its own reclaims; look at it, and set it aside with \
         `cgleak fix --discard-journal --state-dir {}`",
        .journal.display(),
        .state_dir.display()
    )]
    NotOurJournal { journal: PathBuf, action: String, state_dir: PathBuf },
    /// An unfinished journal the agent's reclaim will not carry out.
    #[error("{refusal}; nothing was changed: set the journal aside with `cgleak fix --discard-journal --state-dir {}`", .state_dir.display())]
    ResumeRefused {
        #[source]
        refusal: resume::Refusal,
        state_dir: PathBuf,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl FixError {
    /// A bad flag or value, or an action this host cannot take: the user's to change (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, FixError::BadArgument { .. } | FixError::NotOnThisHost(_) | FixError::NotAManifest { .. })
    }

    /// The I/O error beneath, if any (a permission denied is told apart by the front end).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            FixError::Read(ReadError::Io { source, .. }) | FixError::Settings(settings::SettingsError::Read(ReadError::Io { source, .. })) => Some(source),
            FixError::Settings(settings::SettingsError::Write(w)) => Some(&w.source),
            FixError::Tasks(tasks::MoveError::Read { source, .. } | tasks::MoveError::Write { source, .. }) => Some(source),
            FixError::Journal(e) => e.io_error(),
            FixError::Lock(e) => e.io_error(),
            _ => None,
        }
    }
}

/// The journal's `plan` value: the view shown, and the action's own detail.
pub fn journal_plan<D: Serialize>(view: &PlanView, detail: &D) -> Value {
    json!({ "view": view, "detail": detail })
}

/// The view and detail of a journal's plan.
pub fn plan_from_journal<D: for<'de> Deserialize<'de>>(journal: &FixJournal) -> Result<(PlanView, D), FixError> {
    let bad = |source| FixError::JournalData { journal: journal.path().to_path_buf(), what: "the plan it holds", source };
    let view = serde_json::from_value(journal.state.plan["view"].clone()).map_err(bad)?;
    let detail = serde_json::from_value(journal.state.plan["detail"].clone()).map_err(bad)?;
    Ok((view, detail))
}

/// Runs the journaled steps of a plan in order, skipping those a previous run finished.
/// Shared by the actions whose steps are independent (gc, reclaim, nokmem, reboot);
/// migrate drives its journal itself.
pub struct StepRunner<'a> {
    pub journal: FixJournal,
    pub view: PlanView,
    pub steps: Vec<StepReport>,
    pub notes: Vec<String>,
    pub cancel: &'a AtomicBool,
    pub progress: &'a mut dyn FnMut(FixProgress),
    pub interrupted: bool,
}

impl<'a> StepRunner<'a> {
    pub fn new(journal: FixJournal, view: PlanView, cancel: &'a AtomicBool, progress: &'a mut dyn FnMut(FixProgress)) -> Self {
        StepRunner { journal, view, steps: Vec::new(), notes: Vec::new(), cancel, progress, interrupted: false }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Run step `step` unless it is done: `f` returns what it did (a line) and a result for the journal.
    pub fn run(&mut self, step: u32, f: impl FnOnce(&mut dyn FnMut(FixProgress)) -> Result<(String, Value), String>) -> Result<(), String> {
        let title = self.view.title_of(step);
        if self.journal.is_done(step) {
            self.steps.push(StepReport { step, title, status: StepStatus::DoneBefore, detail: "done by an earlier run".into() });
            return Ok(());
        }
        (self.progress)(FixProgress::Step { step, of: self.view.steps.len() as u32, title: title.clone() });
        self.journal.intent(step).map_err(|e| e.to_string())?;
        match f(&mut *self.progress) {
            Ok((detail, result)) => {
                // A step that found on the live tree that it must not act reports a skip.
                let status = if result.get("skipped").is_some() { StepStatus::Skipped } else { StepStatus::Done };
                self.journal.done(step, result).map_err(|e| e.to_string())?;
                self.steps.push(StepReport { step, title, status, detail });
                Ok(())
            }
            Err(e) => {
                self.steps.push(StepReport { step, title, status: StepStatus::Failed, detail: e.clone() });
                Err(e)
            }
        }
    }

    /// Record a step that was not needed.
    pub fn skip(&mut self, step: u32, why: impl Into<String>) -> Result<(), JournalError> {
        if self.journal.is_done(step) {
            return Ok(());
        }
        let title = self.view.title_of(step);
        let why = why.into();
        self.journal.intent(step)?;
        self.journal.done(step, json!({ "skipped": why }))?;
        self.steps.push(StepReport { step, title, status: StepStatus::Skipped, detail: why });
        Ok(())
    }

    /// End the journal with `outcome` and make the report.
    pub fn finish(self, outcome: Outcome, error: Option<String>, details: Value) -> ApplyReport {
        let action = self.view.action.clone();
        let path = self.journal.path().display().to_string();
        let (journal, mut notes, error) = match self.journal.end(outcome) {
            Ok(p) => (p.display().to_string(), self.notes, error),
            Err(e) => (path, self.notes, Some(error.map_or_else(|| e.to_string(), |x| format!("{x}; {e}")))),
        };
        if self.interrupted {
            notes.push("interrupted: stopped after the step in progress".into());
        }
        ApplyReport { action, outcome: Some(outcome), steps: self.steps, notes, error, journal, interrupted: self.interrupted, details }
    }

    /// Stop with the journal left unfinished (for `--resume`).
    pub fn stop_unfinished(self, error: String, details: Value) -> ApplyReport {
        let action = self.view.action.clone();
        let journal = self.journal.path().display().to_string();
        let mut notes = self.notes;
        notes.push(format!("the fix is unfinished: run `cgleak fix --resume` once the cause is fixed (journal {journal})"));
        ApplyReport { action, outcome: None, steps: self.steps, notes, error: Some(error), journal, interrupted: self.interrupted, details }
    }
}

//! `cgleak fix` as it prints: the plan, the result with the census before and after (the
//! table, and `--output json`'s document), what `--resume` has left to do, and the steps'
//! progress on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use cgleak_actions::fix::journal::{format_unix, FixJournal, Outcome};
use cgleak_actions::fix::{migrate, nokmem, reboot, ApplyReport, FixProgress, PlanStep, PlanView, StepStatus};
use cgleak_model::census::Census;

use super::{esc, or_na};

/// The census figures a fix is judged by.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub live: u64,
    pub dying: Option<u64>,
    pub ids_in_use: Option<u64>,
    pub headroom: Option<u64>,
}

impl Figures {
    pub fn of(c: &Census) -> Figures {
        Figures { live: c.memcg.live, dying: c.memcg.dying, ids_in_use: c.memcg.ids_in_use, headroom: c.memcg.headroom }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub live: i64,
    pub dying: Option<i64>,
    pub headroom: Option<i64>,
}

/// From `a` (before) to `b` (after).
pub fn change(a: &Figures, b: &Figures) -> Change {
    let d = |x: Option<u64>, y: Option<u64>| x.zip(y).map(|(x, y)| y as i64 - x as i64);
    Change { live: b.live as i64 - a.live as i64, dying: d(a.dying, b.dying), headroom: d(a.headroom, b.headroom) }
}

/// `fix --output json`.
#[derive(Debug, Serialize)]
pub struct FixOutput {
    pub plan: Option<PlanView>,
    pub applied: bool,
    pub result: Option<ApplyReport>,
    pub before: Figures,
    pub after: Option<Figures>,
    pub change: Option<Change>,
}

/// What `--rollback` does for the journal's action.
fn rollback_means(journal: &FixJournal) -> String {
    let s = &journal.state;
    match s.action.as_str() {
        migrate::ACTION if s.done.iter().chain(s.in_flight.iter()).any(|st| *st >= migrate::STEP_REMOVE_OLD) => {
            "the old cgroups were being removed already: they cannot come back, so the migration is finished instead".into()
        }
        migrate::ACTION => "every task moved back into its old cgroup, the mirror removed".into(),
        nokmem::ACTION => "the backed-up boot files put back byte for byte".into(),
        reboot::ACTION => "the sentinel removed, if this fix wrote it".into(),
        _ => format!("a {} cannot be undone: it is finished instead", s.action),
    }
}

/// The steps of the checked plan that the journal does not record done.
pub fn render_remaining(view: &PlanView, journal: &FixJournal, rollback: bool) -> String {
    let s = &journal.state;
    let mut out = format!(
        "fix --resume: an unfinished `{}` fix in {}\n  started by pid {} at {}; {} of {} steps done\n",
        s.action,
        journal.path().display(),
        s.pid,
        format_unix(s.started_unix),
        s.done.len(),
        view.steps.len()
    );
    if rollback || s.rolling_back.is_some() {
        out.push_str(&format!("\nrollback   {}\n", rollback_means(journal)));
        return out;
    }
    let left: Vec<_> = view.steps.iter().filter(|st| !s.done.contains(&st.step)).cloned().collect();
    if !left.is_empty() {
        out.push_str("\nremaining (checked against this host)\n");
    }
    for st in &left {
        let again = if s.in_flight == Some(st.step) { "  (interrupted: run again)" } else { "" };
        out.push_str(&format!("  {}. {}{again}\n", st.step, st.title));
        render_items(&mut out, st);
    }
    out
}

fn signed(v: Option<i64>) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:+}"))
}

/// At most this many cgroups and files listed per step in the table (JSON has all).
const TABLE_ITEMS: usize = 12;

/// A step's cgroups and writes, at most [`TABLE_ITEMS`] of each.
fn render_items(s: &mut String, st: &PlanStep) {
    for c in st.cgroups.iter().take(TABLE_ITEMS) {
        s.push_str(&format!("       cgroup {}\n", esc(c)));
    }
    if st.cgroups.len() > TABLE_ITEMS {
        s.push_str(&format!("       ... and {} more cgroups (--output json lists all)\n", st.cgroups.len() - TABLE_ITEMS));
    }
    for w in st.writes.iter().take(TABLE_ITEMS) {
        let value = w.value.replace('\n', "\n         ");
        s.push_str(&format!("       write {} <- {value}\n", esc(&w.file)));
    }
    if st.writes.len() > TABLE_ITEMS {
        s.push_str(&format!("       ... and {} more writes (--output json lists all)\n", st.writes.len() - TABLE_ITEMS));
    }
}

/// The plan, or the result with its before and after, as the table shows them.
pub fn render(out: &FixOutput) -> String {
    let mut s = String::new();
    if let (Some(p), None) = (&out.plan, &out.result) {
        s.push_str(&format!("fix {}: {}\n", p.action, p.summary));
        if let Some(n) = &p.nothing_to_do {
            s.push_str(&format!("nothing to do: {}\n", esc(n)));
            return s;
        }
        if !p.steps.is_empty() {
            s.push_str("\nplan\n");
        }
        for st in &p.steps {
            s.push_str(&format!("  {}. {}\n", st.step, esc(&st.title)));
            render_items(&mut s, st);
        }
        s.push('\n');
        if !p.expected_gain.is_empty() {
            s.push_str(&format!("expected gain  {}\n", esc(&p.expected_gain)));
        }
        for n in &p.notes {
            s.push_str(&format!("note           {}\n", esc(n)));
        }
        if let Some(r) = &p.refused {
            s.push_str(&format!("refused        {}\n", esc(r)));
        }
        s.push_str(&format!("\nnow            {} live, {} dying memcgs, headroom {}\n", out.before.live, or_na(out.before.dying), or_na(out.before.headroom)));
        return s;
    }
    let Some(r) = &out.result else { return s };
    let outcome = match r.outcome {
        Some(Outcome::Completed) => "completed",
        Some(Outcome::RolledBack) => "rolled back",
        Some(Outcome::Aborted) => "stopped",
        None => "UNFINISHED",
    };
    s.push_str(&format!("\nfix {}: {outcome}\n", r.action));
    for st in &r.steps {
        let mark = match st.status {
            StepStatus::Done => "done",
            StepStatus::DoneBefore => "done before",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "FAILED",
            StepStatus::RolledBack => "rolled back",
        };
        let n = if st.step == 0 { "-".to_string() } else { st.step.to_string() };
        s.push_str(&format!("  {n}. [{mark}] {}: {}\n", esc(&st.title), esc(&st.detail)));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("error          {}\n", esc(e)));
    }
    for n in &r.notes {
        s.push_str(&format!("note           {}\n", esc(n)));
    }
    if r.action == migrate::ACTION {
        if let Some(ms) = r.details.get("max_away_ms").and_then(Value::as_f64) {
            s.push_str(&format!("tasks away     at most {ms:.0} ms from their cgroup's path ({:.0} ms in all)\n", r.details["total_ms"].as_f64().unwrap_or(0.0)));
        }
        if let Some(ms) = r.details.get("max_missing_ms").and_then(Value::as_f64) {
            let which = r.details["max_missing_cgroup"].as_str().unwrap_or("?");
            s.push_str(&format!("paths missing  at most {ms:.0} ms between remove-old and recreate ({which})\n"));
        }
    }
    s.push_str(&format!("journal        {}\n", r.journal));
    if let (Some(after), Some(c)) = (&out.after, &out.change) {
        s.push_str(&format!(
            "before         {} live, {} dying, headroom {}\nafter          {} live, {} dying, headroom {}\nchange         live {:+}, dying {}, headroom {}\n",
            out.before.live,
            or_na(out.before.dying),
            or_na(out.before.headroom),
            after.live,
            or_na(after.dying),
            or_na(after.headroom),
            c.live,
            signed(c.dying),
            signed(c.headroom)
        ));
    }
    s
}

/// Steps and items on stderr while a fix runs, on a terminal only.
pub struct FixBar {
    bar: ProgressBar,
}

impl FixBar {
    pub fn new() -> FixBar {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        FixBar { bar }
    }

    pub fn update(&mut self, p: FixProgress) {
        match p {
            FixProgress::Step { step, of, title } => {
                self.bar.set_prefix(format!("step {step}/{of}"));
                self.bar.set_message(title.split(':').next().unwrap_or("").to_string());
                self.bar.set_position(0);
            }
            FixProgress::Item { done, total } => {
                self.bar.set_length(total);
                self.bar.set_position(done);
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}


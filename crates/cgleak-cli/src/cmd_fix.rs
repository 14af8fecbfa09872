//! `cgleak fix`: plan a remedy, and with --apply carry it out under the journal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use cgleak_actions::fix::failpoint::Failpoints;
use cgleak_actions::fix::journal::{FixJournal, JournalError, Outcome};
use cgleak_actions::fix::lock::{FixLock, LockError};
use cgleak_actions::fix::{gc, journal_plan, migrate, nokmem, reboot, reclaim, ApplyReport, FixError, FixHost, FixProgress, PlanView, StepStatus};
use cgleak_model::census::{take_census, Census, CensusInputs};
use cgleak_model::handoff::{reboot_decision, HandoffFacts};
use cgleak_model::verdict::{check, NodeFacts};
use cgleak_readers::kubelet::running_kubelet;
use cgleak_readers::logs::journal::{JournalSource, Journalctl};
use cgleak_readers::HostPaths;

use crate::cmd_agent::stored_forecast;
use crate::cmd_lab::parse_duration;
use crate::cmd_logs::recent_incidents;
use crate::cmd_status::census_failure;
use crate::exit::{self, Failure};
use crate::host_change::{cancel_on, require_root};
use crate::{GlobalArgs, OutputFormat};

/// Another fixer holds the lock (sysexits' EX_TEMPFAIL: try again later).
pub const LOCKED: u8 = 75;
/// The plan may not be applied: a precondition failed (a kubelet runs, the rate limit,
/// an unfinished fix, too few IDs). Nothing was changed.
pub const REFUSED: u8 = 5;

#[derive(Args, Debug)]
pub struct FixArgs {
    #[command(subcommand)]
    pub action: Option<FixAction>,
    /// Carry the plan out (without it the plan is printed and nothing changes).
    #[arg(long, global = true)]
    pub apply: bool,
    /// Do not ask before applying.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Wait for another fixer to finish instead of exiting 75.
    #[arg(long, global = true)]
    pub wait: bool,
    /// Where the journal, the lock and backups are kept.
    #[arg(long, global = true, value_name = "DIR", default_value = "/var/lib/cgleak")]
    pub state_dir: PathBuf,
    /// Finish (or, with --rollback, undo) the fix a crash or kill interrupted.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: undo the interrupted fix where it can be undone.
    #[arg(long, requires = "resume")]
    pub rollback: bool,
}

#[derive(Subcommand, Debug)]
pub enum FixAction {
    /// Release dying memcgs: v2 memory.reclaim on their parents in bounded rounds; v1 sync and drop_caches (rate-limited).
    #[command(after_help = "Examples:\n  cgleak fix reclaim\n  cgleak fix reclaim --apply --yes\n  cgleak fix reclaim --slab --min-interval 6h --apply")]
    Reclaim(ReclaimArgs),
    /// Remove orphaned pod cgroups (no task, no kubelet pod directory) in every hierarchy, deepest first.
    #[command(after_help = "Examples:\n  cgleak fix gc\n  cgleak fix gc --apply --yes --kubelet-root-dir /data/kubelet")]
    Gc,
    /// Move running pods' tasks into fresh memory cgroups without kmem accounting, at the same paths, without a reboot.
    #[command(after_help = "Examples:\n  cgleak fix migrate --cgroup kubepods\n  cgleak fix migrate --cgroup kubepods --apply --yes\n  \
cgleak fix migrate --cgroup kubepods/burstable/pod<uid> --apply --allow-kubelet")]
    Migrate(MigrateArgs),
    /// Add cgroup.memory=nokmem to the kernel command line (grubby, BLS or /etc/default/grub); effective after a reboot.
    #[command(after_help = "Examples:\n  cgleak fix nokmem\n  cgleak fix nokmem --apply --yes\n  cgleak --host-root /host fix nokmem --bootloader grub\n  \
cgleak fix nokmem --restore /var/lib/cgleak/nokmem-backup-1703232000 --apply")]
    Nokmem(NokmemArgs),
    /// When only a reboot helps, write kured's sentinel file with the reason (cgleak never reboots a node).
    #[command(after_help = "Examples:\n  cgleak fix reboot\n  cgleak fix reboot --apply --yes --sentinel /var/run/reboot-required")]
    Reboot(RebootArgs),
}

impl FixAction {
    pub fn name(&self) -> &'static str {
        match self {
            FixAction::Reclaim(_) => reclaim::ACTION,
            FixAction::Gc => gc::ACTION,
            FixAction::Migrate(_) => migrate::ACTION,
            FixAction::Nokmem(_) => nokmem::ACTION,
            FixAction::Reboot(_) => reboot::ACTION,
        }
    }
}

#[derive(Args, Debug)]
pub struct ReclaimArgs {
    /// v1: also drop reclaimable slab (drop_caches 2), not only the page cache.
    #[arg(long)]
    pub slab: bool,
    /// v1: at most one drop_caches per this long (30m, 1h, 6h).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_or_zero)]
    pub min_interval: Duration,
    /// v2: bytes written to memory.reclaim of each cgroup per round (K, M and G suffixes).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub step: u64,
    /// v2: rounds at most (they stop earlier at the first that releases nothing).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_rounds: u32,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The subtree to migrate, relative to the memory hierarchy's root (e.g. kubepods).
    #[arg(long, value_name = "PATH")]
    pub cgroup: PathBuf,
    /// Run although a kubelet is running (it may create or remove cgroups during the move).
    #[arg(long)]
    pub allow_kubelet: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootloaderArg {
    Auto,
    Bls,
    Grubby,
    Grub,
}

#[derive(Args, Debug)]
pub struct NokmemArgs {
    /// The boot loader setup to change.
    #[arg(long, value_enum, default_value_t = BootloaderArg::Auto)]
    pub bootloader: BootloaderArg,
    /// Put back the files a nokmem fix backed up in DIR (its report names it).
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RebootArgs {
    /// kured's sentinel file, as the host names it.
    #[arg(long, value_name = "PATH", default_value = reboot::DEFAULT_SENTINEL)]
    pub sentinel: PathBuf,
    /// Write the sentinel although the check does not call for a reboot.
    #[arg(long)]
    pub force: bool,
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// `64M`, `1G`, `4096`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected bytes, e.g. 64M, 1G or 4096"))?;
    n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(|| format!("{s:?}: must be between 1 byte and 16 EiB"))
}

/// How far back `fix reboot` looks for failed memcg creations in the logs: the default
/// of `check --incidents-since`, so both come to the same reboot decision.
const REBOOT_INCIDENTS_SECS: i64 = 3600;

/// The census figures a fix is judged by.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub live: u64,
    pub dying: Option<u64>,
    pub ids_in_use: Option<u64>,
    pub headroom: Option<u64>,
}

impl Figures {
    fn of(c: &Census) -> Figures {
        Figures { live: c.memcg.live, dying: c.memcg.dying, ids_in_use: c.memcg.ids_in_use, headroom: c.memcg.headroom }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub live: i64,
    pub dying: Option<i64>,
    pub headroom: Option<i64>,
}

fn change(a: &Figures, b: &Figures) -> Change {
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

/// A relative path inside the hierarchy: leading `/` dropped, `..` refused.
fn cgroup_path(flag: &str, p: &Path) -> Result<PathBuf, Failure> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(Failure::usage(format!("{flag} {}: must be a cgroup inside the memory hierarchy (no '..')", p.display()))),
        }
    }
    Ok(out)
}

fn fix_failure(e: FixError) -> Failure {
    match e {
        FixError::Usage(m) => Failure::usage(m),
        FixError::Runtime(m) => Failure::runtime(m),
        FixError::Journal(j) => journal_failure(j),
    }
}

fn journal_failure(e: JournalError) -> Failure {
    match &e {
        JournalError::Unfinished { .. } => Failure { code: REFUSED, message: e.to_string() },
        _ if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) => Failure::not_permitted(format!("{e} (run as root, or give a writable --state-dir)")),
        _ => Failure::runtime(e.to_string()),
    }
}

fn lock_failure(e: LockError) -> Failure {
    match &e {
        LockError::Held { .. } => Failure { code: LOCKED, message: e.to_string() },
        LockError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Failure::not_permitted(format!("{e} (run as root, or give a writable --state-dir)"))
        }
        LockError::Io { .. } => Failure::runtime(e.to_string()),
    }
}

pub fn run(g: &GlobalArgs, a: &FixArgs) -> Result<u8, Failure> {
    if a.resume && a.action.is_some() {
        return Err(Failure::usage("--resume takes no action: it finishes the fix recorded in the journal"));
    }
    if !a.resume && a.action.is_none() {
        return Err(Failure::usage("name an action (reclaim, gc, migrate, nokmem, reboot), or --resume; see cgleak fix --help"));
    }
    let failpoints = Failpoints::from_env().map_err(|e| Failure::usage(e.to_string()))?;
    let host = g.host()?;
    let inputs = CensusInputs::read(&host).map_err(census_failure)?;
    let census = take_census(&host).map_err(census_failure)?;
    let before = Figures::of(&census);

    if a.resume {
        return resume(g, a, &host, failpoints, before);
    }
    let action = a.action.as_ref().expect("checked above");
    // Applying: one fixer at a time, so the lock comes first; a second one is told
    // another fix runs (75), not that one was left unfinished.
    let lock = if a.apply {
        require_root(|| format!("fix {} --apply changes the host and must run as root", action.name()))?;
        Some(FixLock::acquire(&a.state_dir, &format!("fix {}", action.name()), a.wait).map_err(lock_failure)?)
    } else {
        None
    };
    if let Err(e) = FixJournal::ensure_none_unfinished(&a.state_dir) {
        // Unfinished while its fixer still runs: that is "another fixer", not a crash.
        if lock.is_none() {
            if let Err(held @ LockError::Held { .. }) = FixLock::acquire(&a.state_dir, "fix (plan only)", false) {
                return Err(lock_failure(held));
            }
        }
        return Err(journal_failure(e));
    }
    let fh = FixHost {
        host: host.clone(),
        layout: inputs.layout.clone(),
        memory: inputs.memory.clone(),
        era: inputs.era.clone(),
        headroom: census.memcg.headroom,
        dying: census.memcg.dying,
        kubelet: running_kubelet(&host),
    };
    let (view, detail) = plan_action(&fh, action, a, &census)?;
    let output = FixOutput { plan: Some(view.clone()), applied: false, result: None, before: before.clone(), after: None, change: None };
    if view.nothing_to_do.is_some() || (!a.apply && view.refused.is_none()) {
        print_output(g, &output)?;
        if !a.apply && view.nothing_to_do.is_none() && g.output == OutputFormat::Table {
            eprintln!("cgleak: nothing was changed; run again with --apply to carry this plan out");
        }
        return Ok(exit::OK);
    }
    // Refused: the same exit with or without --apply, so scripts can tell before applying.
    if let Some(why) = &view.refused {
        print_output(g, &output)?;
        return Err(Failure { code: REFUSED, message: format!("fix {}: refused: {why}", view.action) });
    }
    if g.output == OutputFormat::Table {
        print_output(g, &output)?;
    }
    confirm(a, &view)?;
    let journal = FixJournal::begin(&a.state_dir, &view.action, journal_plan(&view, &detail), failpoints).map_err(journal_failure)?;
    let report = execute(&host, journal, false)?;
    drop(lock);
    finish(g, &host, Some(view), report, before)
}

fn plan_action(fh: &FixHost, action: &FixAction, a: &FixArgs, census: &Census) -> Result<(PlanView, Value), Failure> {
    let to_value = |v: Result<(PlanView, Value), FixError>| v.map_err(fix_failure);
    match action {
        FixAction::Reclaim(r) => {
            let o = reclaim::ReclaimOptions { slab: r.slab, min_interval: r.min_interval, step_bytes: r.step, max_rounds: r.max_rounds, state_dir: a.state_dir.clone() };
            to_value(reclaim::plan(fh, &o).map(|(v, d)| (v, enc(&d))))
        }
        FixAction::Gc => to_value(gc::plan(fh, census.kubepods.as_ref()).map(|(v, d)| (v, enc(&d)))),
        FixAction::Migrate(m) => {
            let cgroup = cgroup_path("--cgroup", &m.cgroup)?;
            let o = migrate::MigrateOptions { cgroup, allow_kubelet: m.allow_kubelet };
            to_value(migrate::plan(fh, &o).map(|(v, d)| (v, enc(&d))))
        }
        FixAction::Nokmem(n) => {
            let bootloader = match n.bootloader {
                BootloaderArg::Auto => None,
                BootloaderArg::Bls => Some(nokmem::Bootloader::Bls),
                BootloaderArg::Grubby => Some(nokmem::Bootloader::Grubby),
                BootloaderArg::Grub => Some(nokmem::Bootloader::Grub),
            };
            let o = nokmem::NokmemOptions { bootloader, state_dir: a.state_dir.clone(), restore: n.restore.clone() };
            to_value(nokmem::plan(fh, &o).map(|(v, d)| (v, enc(&d))))
        }
        FixAction::Reboot(r) => {
            // Judged as `check --reboot-required` judges (with its defaults): with the
            // stored forecast and the last hour of log incidents, without which a 3.10
            // node, whose IDs in use cannot be counted, is never seen to be exhausted.
            let mut node = NodeFacts::read(&fh.host);
            node.forecast = stored_forecast(&a.state_dir);
            let journal = Journalctl::for_host(&fh.host);
            node.logs = recent_incidents(&fh.host, REBOOT_INCIDENTS_SECS, journal.as_ref().map(|j| j as &dyn JournalSource));
            let report = check(census.clone(), node);
            let d = reboot_decision(&HandoffFacts::from_report(&report));
            let o = reboot::RebootOptions { sentinel: r.sentinel.clone(), force: r.force };
            let (v, p) = reboot::plan(fh, &o, d.required, &d.reason);
            Ok((v, enc(&p)))
        }
    }
}

/// The action's detail as the journal keeps it.
fn enc<T: Serialize>(detail: &T) -> Value {
    serde_json::to_value(detail).expect("plans serialize")
}

/// Ask on the terminal unless --yes.
fn confirm(a: &FixArgs, view: &PlanView) -> Result<(), Failure> {
    if a.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("fix {} --apply asks for confirmation on a terminal; add --yes to apply without asking", view.action)));
    }
    eprint!("Apply this plan ({} steps) to this node? [y/N] ", view.steps.len());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Failure::runtime(format!("reading the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure { code: REFUSED, message: "not applied: not confirmed".into() })
    }
}

fn resume(g: &GlobalArgs, a: &FixArgs, host: &HostPaths, failpoints: Failpoints, before: Figures) -> Result<u8, Failure> {
    require_root(|| "fix --resume changes the host and must run as root".to_string())?;
    let _lock = FixLock::acquire(&a.state_dir, "fix --resume", a.wait).map_err(lock_failure)?;
    let Some(journal) = FixJournal::resume(&a.state_dir, failpoints).map_err(journal_failure)? else {
        let msg = format!("no unfinished fix in {}: nothing to resume", a.state_dir.display());
        match g.output {
            OutputFormat::Json => println!("{}", serde_json::json!({ "resumed": false, "message": msg })),
            OutputFormat::Table => println!("{msg}"),
        }
        return Ok(exit::OK);
    };
    let view: Option<PlanView> = serde_json::from_value(journal.state.plan["view"].clone()).ok();
    let report = execute(host, journal, a.rollback)?;
    finish(g, host, view, report, before)
}

/// Run the journaled fix (new or resumed) with a progress display and the cancel flag.
fn execute(host: &HostPaths, journal: FixJournal, rollback: bool) -> Result<ApplyReport, Failure> {
    let cancel = cancel_on(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let action = journal.state.action.clone();
    let mut bar = FixBar::new();
    let mut progress = |p: FixProgress| bar.update(p);
    let r = match action.as_str() {
        migrate::ACTION => migrate::run(journal, rollback, &cancel, &mut progress),
        gc::ACTION => {
            if rollback {
                eprintln!("cgleak: note: gc removes empty cgroups and cannot be undone: finishing it instead");
            }
            gc::run(journal, &cancel, &mut progress)
        }
        reclaim::ACTION => {
            if rollback {
                eprintln!("cgleak: note: reclaimed memory cannot be put back: finishing the reclaim instead");
            }
            let h = host.clone();
            let mut count = move || take_census(&h).ok().and_then(|c| c.memcg.dying);
            reclaim::run(journal, &cancel, &mut progress, &mut count)
        }
        nokmem::ACTION => nokmem::run(journal, rollback, &cancel, &mut progress),
        reboot::ACTION => reboot::run(journal, rollback, &cancel, &mut progress),
        other => return Err(Failure::runtime(format!("{}: unknown fix action {other:?} in the journal", journal.path().display()))),
    };
    bar.finish();
    r.map_err(fix_failure)
}

fn finish(g: &GlobalArgs, host: &HostPaths, view: Option<PlanView>, report: ApplyReport, before: Figures) -> Result<u8, Failure> {
    let after = take_census(host).ok().map(|c| Figures::of(&c));
    let code = if report.interrupted {
        exit::INTERRUPTED
    } else if report.error.is_some() || report.outcome.is_none() {
        exit::RUNTIME
    } else {
        exit::OK
    };
    let change = after.as_ref().map(|b| change(&before, b));
    let out = FixOutput { plan: if g.output == OutputFormat::Json { view } else { None }, applied: true, result: Some(report), before, after, change };
    print_output(g, &out)?;
    Ok(code)
}

fn print_output(g: &GlobalArgs, out: &FixOutput) -> Result<(), Failure> {
    match g.output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(out).map_err(|e| Failure::runtime(format!("encoding the report: {e}")))?;
            println!("{text}");
        }
        OutputFormat::Table => print!("{}", render(out)),
    }
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or("n/a".to_string(), |x| x.to_string())
}

fn signed(v: Option<i64>) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:+}"))
}

/// At most this many cgroups and files listed per step in the table (JSON has all).
const TABLE_ITEMS: usize = 12;

fn render(out: &FixOutput) -> String {
    let mut s = String::new();
    if let (Some(p), None) = (&out.plan, &out.result) {
        s.push_str(&format!("fix {}: {}\n", p.action, p.summary));
        if let Some(n) = &p.nothing_to_do {
            s.push_str(&format!("nothing to do: {n}\n"));
            return s;
        }
        if !p.steps.is_empty() {
            s.push_str("\nplan\n");
        }
        for st in &p.steps {
            s.push_str(&format!("  {}. {}\n", st.step, st.title));
            for c in st.cgroups.iter().take(TABLE_ITEMS) {
                s.push_str(&format!("       cgroup {c}\n"));
            }
            if st.cgroups.len() > TABLE_ITEMS {
                s.push_str(&format!("       ... and {} more cgroups (--output json lists all)\n", st.cgroups.len() - TABLE_ITEMS));
            }
            for w in st.writes.iter().take(TABLE_ITEMS) {
                let value = w.value.replace('\n', "\n         ");
                s.push_str(&format!("       write {} <- {value}\n", w.file));
            }
            if st.writes.len() > TABLE_ITEMS {
                s.push_str(&format!("       ... and {} more writes (--output json lists all)\n", st.writes.len() - TABLE_ITEMS));
            }
        }
        s.push('\n');
        if !p.expected_gain.is_empty() {
            s.push_str(&format!("expected gain  {}\n", p.expected_gain));
        }
        for n in &p.notes {
            s.push_str(&format!("note           {n}\n"));
        }
        if let Some(r) = &p.refused {
            s.push_str(&format!("refused        {r}\n"));
        }
        s.push_str(&format!("\nnow            {} live, {} dying memcgs, headroom {}\n", out.before.live, opt(out.before.dying), opt(out.before.headroom)));
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
        s.push_str(&format!("  {n}. [{mark}] {}: {}\n", st.title, st.detail));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("error          {e}\n"));
    }
    for n in &r.notes {
        s.push_str(&format!("note           {n}\n"));
    }
    if r.action == migrate::ACTION {
        if let Some(ms) = r.details.get("max_away_ms").and_then(Value::as_f64) {
            s.push_str(&format!("tasks away     at most {ms:.0} ms from their cgroup's path ({:.0} ms in all)\n", r.details["total_ms"].as_f64().unwrap_or(0.0)));
        }
    }
    s.push_str(&format!("journal        {}\n", r.journal));
    if let (Some(after), Some(c)) = (&out.after, &out.change) {
        s.push_str(&format!(
            "before         {} live, {} dying, headroom {}\nafter          {} live, {} dying, headroom {}\nchange         live {:+}, dying {}, headroom {}\n",
            out.before.live,
            opt(out.before.dying),
            opt(out.before.headroom),
            after.live,
            opt(after.dying),
            opt(after.headroom),
            c.live,
            signed(c.dying),
            signed(c.headroom)
        ));
    }
    s
}

/// Steps and items on stderr while a fix runs, on a terminal only.
struct FixBar {
    bar: ProgressBar,
}

impl FixBar {
    fn new() -> FixBar {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        FixBar { bar }
    }

    fn update(&mut self, p: FixProgress) {
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

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_paths_as_users_write_them() {
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err() && parse_bytes("lots").unwrap_err().contains("64M"));
        assert_eq!(cgroup_path("--cgroup", Path::new("/kubepods/burstable")).unwrap(), PathBuf::from("kubepods/burstable"));
        let e = cgroup_path("--cgroup", Path::new("../etc")).unwrap_err();
        assert!(e.message.contains("--cgroup ../etc") && e.code == exit::USAGE, "{}", e.message);
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("1h"), Ok(Duration::from_secs(3600)));
    }
}

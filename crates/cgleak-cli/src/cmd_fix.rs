//! `cgleak fix`: plan a remedy, and with --apply carry it out under the journal.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use cgleak_actions::fix::failpoint::Failpoints;
use cgleak_actions::fix::journal::{self, format_unix, FixJournal, JournalError};
use cgleak_actions::fix::lock::{FixLock, LockError};
use cgleak_actions::fix::resume::{self as resume_check, ResumeHost};
use cgleak_actions::fix::state::StateError;
use cgleak_actions::fix::{gc, journal_plan, migrate, nokmem, reboot, reclaim, ApplyReport, FixError, FixHost, FixProgress, PlanView};
use cgleak_model::census::{census_with, take_census, Census, CensusInputs};
use cgleak_model::handoff::{reboot_decision, HandoffFacts};
use cgleak_model::kubepods::KubepodsSummary;
use cgleak_model::verdict::{check, CheckReport};
use cgleak_readers::kubelet::running_kubelet;
use cgleak_readers::HostPaths;

use crate::args::{self, GlobalArgs, OutputFormat};
use crate::evidence::{node_facts, DEFAULT_LOG_WINDOW};
use crate::exit::{self, census_failure, Failure, LOCKED};
use crate::host_change::{cancel_on, require_root};
use crate::render::fix::{change, render, render_remaining, Figures, FixBar, FixOutput};
use crate::render::print_report;

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
    /// Where the journal, the lock, the backups and the archived journals are kept: a
    /// directory root alone may change, reached without symlinks [default:
    /// <host-root>/var/lib/cgleak/fix].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Finish (or, with --rollback, undo) the fix a crash or kill interrupted: its plan is
    /// checked against this host first, and shown, and applied after a yes (or --yes).
    #[arg(long, conflicts_with = "discard_journal")]
    pub resume: bool,
    /// With --resume: undo the interrupted fix where it can be undone.
    #[arg(long, requires = "resume")]
    pub rollback: bool,
    /// Set an unfinished or unreadable journal aside, into fix-journals/ as
    /// discarded-<time>-<id>.jsonl; changes nothing on the host.
    #[arg(long)]
    pub discard_journal: bool,
}

#[derive(Subcommand, Debug)]
pub enum FixAction {
    /// Release dying memcgs: v2 memory.reclaim on their parents in bounded rounds; v1 sync and drop_caches (rate-limited).
    #[command(after_help = "Examples:\n  cgleak fix reclaim\n  cgleak fix reclaim --apply --yes\n  cgleak fix reclaim --slab --min-interval 6h --apply\n  \
cgleak fix reclaim --target 0b1f2c3d-4e5f-6789-abcd-ef0123456789      (one pod's dying memcgs, found by `cgleak dying`)\n  \
cgleak fix reclaim --target kubepods/besteffort --apply\n\n\
--target: v2 writes memory.reclaim of the target's nearest online ancestor (5.19+); v1 writes memory.force_empty \
of that ancestor only when no task is in its subtree (it would reclaim their memory too), else refuses (exit 5).")]
    Reclaim(ReclaimArgs),
    /// Remove orphaned pod cgroups (no task, no kubelet pod directory, older than --min-age) in every hierarchy, deepest first.
    #[command(after_help = "A pod being started has its cgroup before its pod directory: pods whose cgroup is younger than \
--min-age are left. While a kubelet runs, a pod is removed only once found unknown (no pod directory, no task) twice, \
3 s apart.\n\nExamples:\n  cgleak fix gc\n  cgleak fix gc --apply --yes --kubelet-root-dir /data/kubelet\n  cgleak fix gc --min-age 1h")]
    Gc(GcArgs),
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
            FixAction::Gc(_) => gc::ACTION,
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
    /// v1: at most one drop_caches per this long (30m, 1h, 6h; 0: no limit; see Durations in
    /// the README).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = args::duration_or_zero)]
    pub min_interval: Duration,
    /// v2: bytes written to memory.reclaim of each cgroup per round (K, M and G suffixes).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub step: u64,
    /// v2: rounds at most (they stop earlier at the first that releases nothing).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_rounds: u32,
    /// Reclaim only where these dying memcgs are pinned: a pod UID, or a cgroup path relative to
    /// the memory hierarchy (kubepods/burstable). v2: memory.reclaim of its nearest online ancestor
    /// (5.19+); v1: memory.force_empty of that ancestor, only when no task is in its subtree.
    #[arg(long, value_name = "POD|PARENT")]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Leave orphaned pods whose cgroup is younger than this (its directory's ctime): the
    /// kubelet makes a pod's cgroup before its pod directory (a duration; see Durations in
    /// the README).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = args::duration_or_zero)]
    pub min_age: Duration,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The subtree to migrate, relative to the memory hierarchy's root (e.g. kubepods).
    #[arg(long, value_name = "PATH")]
    pub cgroup: PathBuf,
    /// Run although a kubelet is running. It may create or remove cgroups during the move,
    /// and between remove-old and recreate each cgroup's path is missing (the longest time
    /// is reported as max_missing_ms): a kubelet that syncs a pod then (every
    /// --sync-frequency, 1 min by default, and on container events) kills it for its missing
    /// cgroup and starts it again. The migration is rolled back before remove-old when the
    /// paths would be missing for more than 15 s.
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
    /// kured's sentinel file, as the host names it: a file in /run or /var/run.
    #[arg(long, value_name = "PATH", default_value = reboot::DEFAULT_SENTINEL)]
    pub sentinel: PathBuf,
    /// Write the sentinel although the check does not call for a reboot.
    #[arg(long)]
    pub force: bool,
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

/// `--target`: a path (with a `/`) inside the memory hierarchy, or a pod UID found there, live or dying.
fn reclaim_target(fh: &FixHost, t: &str) -> Result<reclaim::ReclaimTarget, Failure> {
    if t.contains('/') {
        let path = cgroup_path("--target", Path::new(t))?;
        if path.as_os_str().is_empty() {
            return Err(Failure::usage("--target /: name a pod or a cgroup below the root (the whole host is `cgleak fix reclaim` without --target)"));
        }
        return Ok(reclaim::ReclaimTarget { named: format!("/{}", path.display()), path });
    }
    let found = cgleak_model::dying::pod_cgroup(&fh.host, &fh.memory.mount.local, t)
        .ok_or_else(|| Failure::usage(format!("--target {t}: no pod cgroup with this UID, live or dying (a cgroup path needs a '/', e.g. kubepods/burstable)")))?;
    let path = cgroup_path("--target", Path::new(&found))?;
    Ok(reclaim::ReclaimTarget { named: format!("pod {t}"), path })
}

fn fix_failure(e: FixError, a: &FixArgs) -> Failure {
    match e {
        FixError::Journal(j) => journal_failure(j, a),
        FixError::Lock(l) => lock_failure(l),
        e if e.is_usage() => Failure::usage(e.to_string()),
        e => Failure::runtime(e.to_string()),
    }
}

/// ` --state-dir DIR` when one was given, for the commands a message suggests.
fn state_dir_flag(a: &FixArgs) -> String {
    a.state_dir.as_ref().map(|d| format!(" --state-dir {}", d.display())).unwrap_or_default()
}

fn journal_failure(e: JournalError, a: &FixArgs) -> Failure {
    let discard = format!("cgleak fix --discard-journal{}", state_dir_flag(a));
    match &e {
        JournalError::Unfinished { .. } => Failure::refused(format!("{e} (or set it aside, changing nothing on the host: `{discard}`)")),
        JournalError::Corrupt { .. } => Failure::refused(format!(
            "{e}; nothing was changed, and no fix starts or resumes while it is there: look at it, then set it aside (archived in \
             fix-journals/, the host left as it is) with `{discard}`"
        )),
        JournalError::State(s @ StateError::Unsafe { path, .. }) => {
            let way_out = if path.ends_with(journal::JOURNAL_FILE) { format!("; or set it aside with `{discard}`") } else { String::new() };
            Failure::refused(format!("{s}{way_out}"))
        }
        _ if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) => Failure::not_permitted(format!("{e} (run as root, or give a writable --state-dir)")),
        _ => Failure::runtime(e.to_string()),
    }
}

fn lock_failure(e: LockError) -> Failure {
    match &e {
        LockError::Held { .. } => Failure { code: LOCKED, message: e.to_string() },
        LockError::State(StateError::Unsafe { .. }) => Failure::refused(e.to_string()),
        _ if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) => {
            Failure::not_permitted(format!("{e} (run as root, or give a writable --state-dir)"))
        }
        _ => Failure::runtime(e.to_string()),
    }
}

pub fn run(g: &GlobalArgs, a: &FixArgs) -> Result<u8, Failure> {
    if (a.resume || a.discard_journal) && a.action.is_some() {
        let flag = if a.resume { "--resume" } else { "--discard-journal" };
        return Err(Failure::usage(format!("{flag} takes no action: it works on the fix recorded in the journal")));
    }
    if !a.resume && !a.discard_journal && a.action.is_none() {
        return Err(Failure::usage("name an action (reclaim, gc, migrate, nokmem, reboot), or --resume, or --discard-journal; see cgleak fix --help"));
    }
    let failpoints = Failpoints::from_env().map_err(|e| Failure::usage(e.to_string()))?;
    let host = g.host()?;
    let state_dir = args::fix_state(&host, a.state_dir.as_deref());
    if a.discard_journal {
        return discard(g, a, &state_dir);
    }
    let inputs = CensusInputs::read(&host).map_err(census_failure)?;
    let census = census_with(&host, inputs.clone()).map_err(census_failure)?;
    let before = Figures::of(&census);

    if a.resume {
        return resume(g, a, &host, &inputs, &state_dir, failpoints, before);
    }
    let action = a.action.as_ref().expect("checked above");
    // Applying: one fixer at a time, so the lock comes first; a second one is told
    // another fix runs (75), not that one was left unfinished.
    let lock = if a.apply {
        require_root(|| format!("fix {} --apply changes the host and must run as root", action.name()))?;
        Some(FixLock::acquire(&state_dir, &format!("fix {}", action.name()), a.wait).map_err(lock_failure)?)
    } else {
        None
    };
    // A journal left by a fixer of the old layout (state in /var/lib/cgleak itself) is
    // unfinished business the default state dir no longer shows.
    if a.state_dir.is_none() {
        let legacy = args::legacy_fix_journal(&host);
        if fs::symlink_metadata(&legacy).is_ok() {
            let dir = legacy.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default();
            return Err(Failure::refused(format!(
                "{}: a fix journal of the old layout (the fixer keeps its state in {} now): finish it with `cgleak fix --resume \
                 --state-dir {dir}` (checked against this host like any journal), or set it aside with `cgleak fix --discard-journal \
                 --state-dir {dir}`",
                legacy.display(),
                state_dir.display()
            )));
        }
    }
    if let Err(e) = FixJournal::ensure_none_unfinished(&state_dir) {
        // Unfinished while its fixer still runs: that is "another fixer", not a crash.
        if lock.is_none() && matches!(e, JournalError::Unfinished { .. }) {
            if let Err(held @ LockError::Held { .. }) = FixLock::acquire(&state_dir, "fix (plan only)", false) {
                return Err(lock_failure(held));
            }
        }
        return Err(journal_failure(e, a));
    }
    let kubepods = census.kubepods.clone();
    let fh = FixHost {
        host: host.clone(),
        layout: inputs.layout.clone(),
        memory: inputs.memory.clone(),
        era: inputs.era.clone(),
        headroom: census.memcg.headroom,
        dying: census.memcg.dying,
        kubelet: running_kubelet(&host),
        judgement: Some(judge(&host, census)),
    };
    let (view, detail) = plan_action(&fh, action, a, kubepods.as_ref(), &state_dir)?;
    let output = FixOutput { plan: Some(view.clone()), applied: false, result: None, before: before.clone(), after: None, change: None };
    if view.nothing_to_do.is_some() || (!a.apply && view.refused.is_none()) {
        print_report(g.output, &output, render)?;
        if !a.apply && view.nothing_to_do.is_none() && g.output == OutputFormat::Table {
            eprintln!("cgleak: nothing was changed; run again with --apply to carry this plan out");
        }
        return Ok(exit::OK);
    }
    // Refused: the same exit with or without --apply, so scripts can tell before applying.
    if let Some(why) = &view.refused {
        print_report(g.output, &output, render)?;
        return Err(Failure::refused(format!("fix {}: refused: {why}", view.action)));
    }
    if g.output == OutputFormat::Table {
        print_report(g.output, &output, render)?;
    }
    confirm(a.yes, &format!("fix {} --apply", view.action), &format!("Apply this plan ({} steps) to this node?", view.steps.len()))?;
    let journal = FixJournal::begin(&state_dir, &view.action, journal_plan(&view, &detail), failpoints).map_err(|e| journal_failure(e, a))?;
    let report = execute(&host, journal, false, a)?;
    drop(lock);
    finish(g, &host, Some(view), report, before)
}

/// The judge's report, as `check` makes it with its defaults (the agent's stored forecast
/// and the last hour of log incidents, without which a 3.10 node, whose IDs in use cannot
/// be counted, is never seen to be exhausted): the plans take refusals and gains from it.
fn judge(host: &HostPaths, census: Census) -> CheckReport {
    check(census, node_facts(host, &args::agent_history(host, None), DEFAULT_LOG_WINDOW))
}

fn plan_action(fh: &FixHost, action: &FixAction, a: &FixArgs, kubepods: Option<&KubepodsSummary>, state_dir: &Path) -> Result<(PlanView, Value), Failure> {
    let to_value = |v: Result<(PlanView, Value), FixError>| v.map_err(|e| fix_failure(e, a));
    match action {
        FixAction::Reclaim(r) => {
            // The agent's reclaim (--reclaim-every) keeps its own stamp: a drop it made counts too.
            let peer_stamps = reclaim::agent_stamps(&fh.host, state_dir);
            let o = reclaim::ReclaimOptions { slab: r.slab, min_interval: r.min_interval, step_bytes: r.step, max_rounds: r.max_rounds, state_dir: state_dir.to_path_buf(), peer_stamps };
            match &r.target {
                None => to_value(reclaim::plan(fh, &o).map(|(v, d)| (v, enc(&d)))),
                Some(t) => {
                    let target = reclaim_target(fh, t)?;
                    to_value(reclaim::plan_target(fh, &o, &target).map(|(v, d)| (v, enc(&d))))
                }
            }
        }
        FixAction::Gc(o) => to_value(gc::plan(fh, kubepods, &gc::GcOptions { min_age: o.min_age }).map(|(v, d)| (v, enc(&d)))),
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
            let o = nokmem::NokmemOptions { bootloader, state_dir: state_dir.to_path_buf(), restore: n.restore.clone() };
            to_value(nokmem::plan(fh, &o).map(|(v, d)| (v, enc(&d))))
        }
        FixAction::Reboot(r) => {
            // Judged as `check --reboot-required` judges.
            let report = fh.judgement.as_ref().expect("fix plans are judged");
            let d = reboot_decision(&HandoffFacts::from_report(report));
            let o = reboot::RebootOptions { sentinel: r.sentinel.clone(), force: r.force };
            to_value(reboot::plan(fh, &o, d.required, &d.reason).map(|(v, p)| (v, enc(&p))))
        }
    }
}

/// The action's detail as the journal keeps it.
fn enc<T: Serialize>(detail: &T) -> Value {
    serde_json::to_value(detail).expect("plans serialize")
}

/// Ask `question` on the terminal unless `yes`; without a terminal, say to add --yes.
fn confirm(yes: bool, what: &str, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("{what} asks for confirmation on a terminal; add --yes to go on without asking")));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Failure::runtime(format!("reading the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure::refused("not applied: not confirmed"))
    }
}

/// `--discard-journal`: the journal set aside under the lock; the host left as it is.
fn discard(g: &GlobalArgs, a: &FixArgs, state_dir: &Path) -> Result<u8, Failure> {
    require_root(|| "fix --discard-journal moves the fixer's journal and must run as root".to_string())?;
    let _lock = FixLock::acquire(state_dir, "fix --discard-journal", a.wait).map_err(lock_failure)?;
    let Some(d) = journal::discard(state_dir).map_err(|e| journal_failure(e, a))? else {
        let msg = format!("no journal in {}: nothing to discard", state_dir.display());
        match g.output {
            OutputFormat::Json => println!("{}", serde_json::json!({ "discarded": false, "message": msg })),
            OutputFormat::Table => println!("{msg}"),
        }
        return Ok(exit::OK);
    };
    let from = state_dir.join(journal::JOURNAL_FILE);
    let what = match (&d.state, &d.unreadable) {
        (Some(s), _) => format!(
            "it recorded a `{}` fix started by pid {} at {} ({} of its steps done{}); nothing on the host was changed or undone: \
             what that fix did stays as it is",
            s.action,
            s.pid,
            format_unix(s.started_unix),
            s.done.len(),
            s.in_flight.map(|st| format!(", step {st} interrupted")).unwrap_or_default()
        ),
        (None, Some(why)) => format!("it could not be read ({why}); nothing on the host was changed"),
        (None, None) => "nothing on the host was changed".into(),
    };
    match g.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "discarded": true, "journal": from, "archived": d.archived, "action": d.state.as_ref().map(|s| s.action.clone()), "unreadable": d.unreadable, "message": what })
        ),
        OutputFormat::Table => println!("set aside: {} -> {}\n{what}", from.display(), d.archived.display()),
    }
    Ok(exit::OK)
}

/// `--resume`: the journal checked against this host, its remaining plan shown, and run
/// after a yes (or --yes).
fn resume(g: &GlobalArgs, a: &FixArgs, host: &HostPaths, inputs: &CensusInputs, state_dir: &Path, failpoints: Failpoints, before: Figures) -> Result<u8, Failure> {
    require_root(|| "fix --resume changes the host and must run as root".to_string())?;
    let lock = FixLock::acquire(state_dir, "fix --resume", a.wait).map_err(lock_failure)?;
    let Some(mut journal) = FixJournal::resume(state_dir, failpoints).map_err(|e| journal_failure(e, a))? else {
        let msg = format!("no unfinished fix in {}: nothing to resume", state_dir.display());
        match g.output {
            OutputFormat::Json => println!("{}", serde_json::json!({ "resumed": false, "message": msg })),
            OutputFormat::Table => println!("{msg}"),
        }
        return Ok(exit::OK);
    };
    let h = ResumeHost { host, layout: &inputs.layout, memory: &inputs.memory, state_dir };
    let view = resume_check::check(&journal, &h).map_err(|r| {
        Failure::refused(format!(
            "fix --resume: refused: {r}. Nothing was changed: a journal is data, and --resume carries out only what cgleak's own \
             planner would do on this host (--host-root {}). If no cgleak fix left it, find out how it got there, and set it aside \
             with `cgleak fix --discard-journal{}`",
            host.root().display(),
            state_dir_flag(a)
        ))
    })?;
    // The steps run under the titles made from the checked plan, never the journal's own.
    journal.state.plan["view"] = enc(&view);
    if g.output == OutputFormat::Table {
        print!("{}", render_remaining(&view, &journal, a.rollback));
    }
    let left = view.steps.iter().filter(|st| !journal.state.done.contains(&st.step)).count();
    let question = if a.rollback { "Roll this fix back on this node?".to_string() } else { format!("Resume this fix ({left} steps left) on this node?") };
    confirm(a.yes, "fix --resume", &question)?;
    let report = execute(host, journal, a.rollback, a)?;
    drop(lock);
    finish(g, host, Some(view), report, before)
}

/// Run the journaled fix (new or resumed) with a progress display and the cancel flag.
fn execute(host: &HostPaths, journal: FixJournal, rollback: bool, a: &FixArgs) -> Result<ApplyReport, Failure> {
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
    r.map_err(|e| fix_failure(e, a))
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
    print_report(g.output, &out, render)?;
    Ok(code)
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
    }
}

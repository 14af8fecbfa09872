//! Exit codes: a public contract (README, --help). Every code the binary exits with is
//! here, and so is how the readers' and the model's errors map to them.

use cgleak_actions::lab::LabReport;
use cgleak_model::census::CensusError;
use cgleak_model::handoff::NpdStatus;
use cgleak_model::verdict::Verdict;

pub const OK: u8 = 0;
pub const RUNTIME: u8 = 1;
pub const USAGE: u8 = 2;
pub const AT_RISK_OR_LEAKING: u8 = 3;
pub const EXHAUSTED: u8 = 4;
/// `fix`: the plan may not be applied, or the journal not carried out: a precondition
/// failed (a kubelet runs, the rate limit, an unfinished fix, too few IDs, a journal or
/// state directory that cannot be trusted). Nothing was changed.
pub const REFUSED: u8 = 5;
/// `fix`: another fixer holds the lock (sysexits' EX_TEMPFAIL: try again later).
pub const LOCKED: u8 = 75;
pub const NOT_PERMITTED: u8 = 77;
/// Stopped by SIGINT or SIGTERM after cleaning up (the shell's 128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Standard output was closed by its reader (`cgleak status | head -1`): the shell's
/// 128 + SIGPIPE, what a tool killed by that signal reports. Nothing is printed.
pub const BROKEN_PIPE: u8 = 141;

/// `check --reboot-required` when no reboot is needed (kured: "no reboot", quietly).
pub const REBOOT_NOT_NEEDED: u8 = 1;
/// `check --npd` when the node has a problem of `--npd-problem` (NPD's NonOK).
pub const NPD_PROBLEM: u8 = 1;
/// `check --npd` and `--reboot-required` on any error: NPD's Unknown, and for kured a code
/// other than 1, which it logs as unexpected (and never takes as "reboot").
pub const HANDOFF_ERROR: u8 = 2;

/// `check`'s exit code for its verdict.
pub fn verdict(v: Verdict) -> u8 {
    match v {
        Verdict::Healthy => OK,
        Verdict::AtRisk | Verdict::Leaking => AT_RISK_OR_LEAKING,
        Verdict::Exhausted => EXHAUSTED,
    }
}

/// `lab`'s exit code: anything left over is an error, whatever else happened.
pub fn lab(r: &LabReport) -> u8 {
    if !r.teardown.leftover.is_empty() {
        RUNTIME
    } else if r.interrupted {
        INTERRUPTED
    } else if r.error.is_some() {
        RUNTIME
    } else {
        OK
    }
}

/// `check --npd`'s exit code: node-problem-detector's plugin protocol.
pub fn npd(status: NpdStatus) -> u8 {
    match status {
        NpdStatus::Ok => OK,
        NpdStatus::NonOk => NPD_PROBLEM,
        NpdStatus::Unknown => HANDOFF_ERROR,
    }
}

/// An error that ends the command with a message and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: USAGE, message: message.into() }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure { code: RUNTIME, message: message.into() }
    }
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Failure { code: NOT_PERMITTED, message: message.into() }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Failure { code: REFUSED, message: message.into() }
    }
}

impl From<cgleak_readers::ReadError> for Failure {
    fn from(e: cgleak_readers::ReadError) -> Self {
        if e.is_permission() {
            Failure::not_permitted(format!("{e} (run as root, or give the host's files with --host-root)"))
        } else {
            Failure::runtime(e.to_string())
        }
    }
}

impl From<CensusError> for Failure {
    fn from(e: CensusError) -> Self {
        match e {
            CensusError::Read(r) => r.into(),
            other => Failure::runtime(other.to_string()),
        }
    }
}

/// A census that failed, as the commands report it (`.map_err(census_failure)`).
pub fn census_failure(e: CensusError) -> Failure {
    e.into()
}

/// Turn a failed write to standard output (std's `println!` panics on it) into a clean
/// exit: quietly with [`BROKEN_PIPE`] when the reader went away, else `cgleak: stdout:
/// <error>` and [`RUNTIME`]. Every other panic keeps the default report.
pub fn on_stdout_failure() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        if let Some(err) = msg.and_then(|m| m.strip_prefix("failed printing to stdout: ")) {
            if err.starts_with("Broken pipe") {
                std::process::exit(BROKEN_PIPE.into());
            }
            eprintln!("cgleak: stdout: {err}");
            std::process::exit(RUNTIME.into());
        }
        default(info);
    }));
}

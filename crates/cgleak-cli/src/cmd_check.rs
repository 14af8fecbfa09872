use clap::{Args, ValueEnum};

use cgleak_model::census::take_census;
use cgleak_model::handoff::{npd_result, npd_unknown, reboot_decision, HandoffFacts};
use cgleak_model::verdict::{check, CheckReport, NodeFacts, Verdict};
use cgleak_readers::logs::clock::parse_duration;
use cgleak_readers::logs::journal::{JournalSource, Journalctl};

use crate::cmd_agent::stored_forecast;
use crate::cmd_logs::recent_incidents;
use crate::cmd_status::census_failure;
use crate::exit::{self, Failure};
use crate::{render, GlobalArgs, OutputArg, OutputFormat};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// How far back to look in the node's logs (syslog files, journald, /dev/kmsg) for
    /// failed memcg creations, which make the verdict `exhausted`: a duration (30m, 1h,
    /// 2d), or 0 to leave the logs out. Logs that cannot be read are noted, never fatal.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub incidents_since: String,
    /// node-problem-detector custom plugin: print one line of at most 80 characters and
    /// exit 0 (OK), 1 (a problem of --npd-problem) or 2 (Unknown: any error).
    #[arg(long, conflicts_with = "reboot_required")]
    pub npd: bool,
    /// With --npd: the verdicts this plugin rule reports as a problem (exit 1); each NPD
    /// rule has one reason, so give each rule its own. Any finding implying one counts.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "VERDICT", requires = "npd",
          default_values_t = [ProblemArg::AtRisk, ProblemArg::Leaking, ProblemArg::Exhausted])]
    pub npd_problem: Vec<ProblemArg>,
    /// For kured's --reboot-sentinel-command: exit 0 exactly when only a reboot can fix
    /// this node (memcg IDs held by kmem-pinned dying memcgs), 1 when no reboot is
    /// needed, 2 on any error (never 0: an error must not reboot a node). One line on stdout.
    #[arg(long)]
    pub reboot_required: bool,
    /// Where `cgleak agent` keeps its history (agent-history.jsonl): when there is one, the
    /// exhaustion forecast is a finding (`exhaustion_forecast`).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cgleak")]
    pub state_dir: std::path::PathBuf,
}

/// A verdict `--npd-problem` can ask for (healthy is never a problem).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemArg {
    #[value(name = "at_risk", alias = "at-risk")]
    AtRisk,
    Leaking,
    Exhausted,
}

impl ProblemArg {
    fn verdict(self) -> Verdict {
        match self {
            ProblemArg::AtRisk => Verdict::AtRisk,
            ProblemArg::Leaking => Verdict::Leaking,
            ProblemArg::Exhausted => Verdict::Exhausted,
        }
    }
}

/// Exit code of `--reboot-required` when no reboot is needed (kured: "no reboot", quietly).
const REBOOT_NOT_NEEDED: u8 = 1;
/// Exit code of `--npd` and `--reboot-required` on any error: NPD's Unknown, and for kured
/// a code other than 1, which it logs as unexpected (and never takes as "reboot").
const HANDOFF_ERROR: u8 = 2;

pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Healthy => exit::OK,
        Verdict::AtRisk | Verdict::Leaking => exit::AT_RISK_OR_LEAKING,
        Verdict::Exhausted => exit::EXHAUSTED,
    }
}

pub fn run(g: &GlobalArgs, a: &CheckArgs) -> Result<u8, Failure> {
    if a.npd || a.reboot_required {
        return Ok(run_handoff(g, a));
    }
    let report = judge(g, a)?;
    match g.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::runtime(e.to_string()))?),
        OutputFormat::Table => print!("{}", render::check_table(&report)),
    }
    Ok(exit_code(report.verdict))
}

/// `--npd` and `--reboot-required`: one line on stdout, and no error code but 2, so an
/// error is never read as "problem" by NPD (1) or as "reboot" by kured (0).
fn run_handoff(g: &GlobalArgs, a: &CheckArgs) -> u8 {
    let mode = if a.npd { "--npd" } else { "--reboot-required" };
    let judged = if g.output_arg != OutputArg::Table {
        Err(Failure::usage(format!("{mode} prints one line of its own: leave out --output")))
    } else {
        judge(g, a)
    };
    let report = match judged {
        Ok(r) => r,
        Err(f) => {
            eprintln!("cgleak: {}", f.message);
            if a.npd {
                println!("{}", npd_unknown(&f.message).line);
            } else {
                println!("no reboot: the node could not be judged ({})", f.message);
            }
            return HANDOFF_ERROR;
        }
    };
    let facts = HandoffFacts::from_report(&report);
    if a.npd {
        let problems: Vec<Verdict> = a.npd_problem.iter().map(|p| p.verdict()).collect();
        let r = npd_result(&facts, &problems);
        println!("{}", r.line);
        r.status.exit_code()
    } else {
        let d = reboot_decision(&facts);
        println!("{}", d.reason);
        if d.required { exit::OK } else { REBOOT_NOT_NEEDED }
    }
}

/// Census, node facts and recent log incidents, judged.
fn judge(g: &GlobalArgs, a: &CheckArgs) -> Result<CheckReport, Failure> {
    let window = parse_duration(&a.incidents_since)
        .filter(|w| *w >= 0)
        .ok_or_else(|| Failure::usage(format!("--incidents-since {:?}: not a duration (30m, 1h, 2d, or 0)", a.incidents_since)))?;
    let host = g.host()?;
    let census = take_census(&host).map_err(census_failure)?;
    let mut node = NodeFacts::read(&host);
    node.forecast = stored_forecast(&a.state_dir);
    if window > 0 {
        let journal = Journalctl::for_host(&host);
        node.logs = recent_incidents(&host, window, journal.as_ref().map(|j| j as &dyn JournalSource));
        // The handoff modes print one line: notes would be noise in NPD's and kured's logs.
        if g.output == OutputFormat::Table && !a.npd && !a.reboot_required {
            for n in &node.logs.notes {
                eprintln!("cgleak: note: logs not read: {n}");
            }
        }
    }
    Ok(check(census, node))
}

//! `cgleak check`: the census, the node's facts, the agent's forecast and the logs' window,
//! judged; and the one-line hand-offs to node-problem-detector and kured.

use clap::{Args, ValueEnum};

use cgleak_model::census::take_census;
use cgleak_model::handoff::{npd_result, npd_unknown, reboot_decision, HandoffFacts};
use cgleak_model::verdict::{check, CheckReport, Verdict};
use cgleak_readers::duration::{parse_duration, Accept};

use crate::args::{agent_history, GlobalArgs, OutputArg, OutputFormat};
use crate::evidence::node_facts;
use crate::exit::{self, census_failure, Failure};
use crate::render;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// How far back to look in the node's logs (syslog files, journald, /dev/kmsg) for
    /// failed memcg creations, which make the verdict `exhausted`: a duration (30m, 1h,
    /// 2d; see Durations in the README), or 0 to leave the logs out. Logs that cannot be
    /// read are noted, never fatal.
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
    /// exhaustion forecast is a finding (`exhaustion_forecast`) [default: <host-root>/var/lib/cgleak/agent,
    /// and the old layout's /var/lib/cgleak/agent-history.jsonl, read too].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
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

pub fn run(g: &GlobalArgs, a: &CheckArgs) -> Result<u8, Failure> {
    if a.npd || a.reboot_required {
        return Ok(run_handoff(g, a));
    }
    let report = judge(g, a)?;
    match g.output {
        OutputFormat::Json => println!("{}", render::json_document(&report)?),
        OutputFormat::Table => print!("{}", render::check_table(&report)),
    }
    Ok(exit::verdict(report.verdict))
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
            return exit::HANDOFF_ERROR;
        }
    };
    let facts = HandoffFacts::from_report(&report);
    if a.npd {
        let problems: Vec<Verdict> = a.npd_problem.iter().map(|p| p.verdict()).collect();
        let r = npd_result(&facts, &problems);
        println!("{}", r.line);
        exit::npd(r.status)
    } else {
        let d = reboot_decision(&facts);
        println!("{}", d.reason);
        if d.required { exit::OK } else { exit::REBOOT_NOT_NEEDED }
    }
}

/// Census, node facts and recent log incidents, judged.
fn judge(g: &GlobalArgs, a: &CheckArgs) -> Result<CheckReport, Failure> {
    let window = parse_duration(&a.incidents_since, Accept::WITH_UNIT).map_err(|e| Failure::usage(format!("--incidents-since {e}")))?;
    let host = g.host()?;
    let census = take_census(&host).map_err(census_failure)?;
    let node = node_facts(&host, &agent_history(&host, a.state_dir.as_deref()), window);
    // The handoff modes print one line: notes would be noise in NPD's and kured's logs.
    if g.output == OutputFormat::Table && !a.npd && !a.reboot_required {
        for n in &node.logs.notes {
            eprintln!("cgleak: note: logs not read: {n}");
        }
    }
    Ok(check(census, node))
}

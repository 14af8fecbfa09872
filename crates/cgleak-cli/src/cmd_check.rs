use clap::Args;

use cgleak_model::census::take_census;
use cgleak_model::verdict::{check, NodeFacts, Verdict};
use cgleak_readers::logs::clock::parse_duration;
use cgleak_readers::logs::journal::{JournalSource, Journalctl};

use crate::cmd_logs::recent_incidents;
use crate::cmd_status::census_failure;
use crate::exit::{self, Failure};
use crate::{render, GlobalArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// How far back to look in the node's logs (syslog files, journald, /dev/kmsg) for
    /// failed memcg creations, which make the verdict `exhausted`: a duration (30m, 1h,
    /// 2d), or 0 to leave the logs out. Logs that cannot be read are noted, never fatal.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub incidents_since: String,
}

pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Healthy => exit::OK,
        Verdict::AtRisk | Verdict::Leaking => exit::AT_RISK_OR_LEAKING,
        Verdict::Exhausted => exit::EXHAUSTED,
    }
}

pub fn run(g: &GlobalArgs, a: &CheckArgs) -> Result<u8, Failure> {
    let window = parse_duration(&a.incidents_since)
        .filter(|w| *w >= 0)
        .ok_or_else(|| Failure::usage(format!("--incidents-since {:?}: not a duration (30m, 1h, 2d, or 0)", a.incidents_since)))?;
    let host = g.host()?;
    let census = take_census(&host).map_err(census_failure)?;
    let mut node = NodeFacts::read(&host);
    if window > 0 {
        let journal = Journalctl::for_host(&host);
        node.logs = recent_incidents(&host, window, journal.as_ref().map(|j| j as &dyn JournalSource));
        if g.output == OutputFormat::Table {
            for n in &node.logs.notes {
                eprintln!("cgleak: note: logs not read: {n}");
            }
        }
    }
    let report = check(census, node);
    match g.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::runtime(e.to_string()))?),
        OutputFormat::Table => print!("{}", render::check_table(&report)),
    }
    Ok(exit_code(report.verdict))
}

use clap::Args;

use cgleak_model::census::take_census;
use cgleak_model::verdict::{check, NodeFacts, Verdict};

use crate::cmd_status::census_failure;
use crate::exit::{self, Failure};
use crate::{render, GlobalArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct CheckArgs {}

pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Healthy => exit::OK,
        Verdict::AtRisk | Verdict::Leaking => exit::AT_RISK_OR_LEAKING,
        Verdict::Exhausted => exit::EXHAUSTED,
    }
}

pub fn run(g: &GlobalArgs, _a: &CheckArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let census = take_census(&host).map_err(census_failure)?;
    let report = check(census, NodeFacts::read(&host));
    match g.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::runtime(e.to_string()))?),
        OutputFormat::Table => print!("{}", render::check_table(&report)),
    }
    Ok(exit_code(report.verdict))
}

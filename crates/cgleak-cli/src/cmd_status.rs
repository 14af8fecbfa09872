use clap::Args;

use cgleak_model::census::{take_census, CensusError};

use crate::exit::{Failure, OK};
use crate::{render, GlobalArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct StatusArgs {}

pub fn census_failure(e: CensusError) -> Failure {
    match e {
        CensusError::Read(r) => r.into(),
        other => Failure::runtime(other.to_string()),
    }
}

pub fn run(g: &GlobalArgs, _a: &StatusArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let census = take_census(&host).map_err(census_failure)?;
    match g.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&census).map_err(|e| Failure::runtime(e.to_string()))?),
        OutputFormat::Table => print!("{}", render::status_table(&census)),
    }
    Ok(OK)
}

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use cgleak_model::census::{take_census, CensusError};

use crate::exit::{Failure, OK};
use crate::metrics::{self, MetricsInput};
use crate::{render, GlobalArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Also write the census as Prometheus metrics to FILE, atomically (for node_exporter's
    /// textfile collector: name it *.prom in its --collector.textfile.directory).
    #[arg(long, value_name = "FILE")]
    pub textfile: Option<PathBuf>,
}

pub fn census_failure(e: CensusError) -> Failure {
    match e {
        CensusError::Read(r) => r.into(),
        other => Failure::runtime(other.to_string()),
    }
}

pub fn run(g: &GlobalArgs, a: &StatusArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let started = Instant::now();
    let census = take_census(&host).map_err(census_failure)?;
    let took = started.elapsed();
    match g.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&census).map_err(|e| Failure::runtime(e.to_string()))?),
        OutputFormat::Table => print!("{}", render::status_table(&census)),
    }
    if let Some(path) = &a.textfile {
        // No forecast (it needs the agent's history) and no incidents (status reads no logs): left out.
        let text = metrics::exposition(&MetricsInput { census: &census, forecast: None, incidents: None, sample_duration: Some(took) });
        metrics::write_textfile(path, &text).map_err(|e| Failure::runtime(format!("--textfile: {e}")))?;
    }
    Ok(OK)
}

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use cgleak_model::census::{take_census, CensusError};
use cgleak_model::forecast::exhaustion_finding;

use crate::cmd_agent::stored_forecast;
use crate::exit::{Failure, OK};
use crate::metrics::{self, MetricsInput};
use crate::{render, GlobalArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Also write the census as Prometheus metrics to FILE, atomically (for node_exporter's
    /// textfile collector: name it *.prom in its --collector.textfile.directory).
    #[arg(long, value_name = "FILE")]
    pub textfile: Option<PathBuf>,
    /// Where `cgleak agent` keeps its history (agent-history.jsonl): when there is one, the
    /// exhaustion forecast is shown (JSON key `forecast`).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cgleak")]
    pub state_dir: PathBuf,
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
    let fc = stored_forecast(&a.state_dir);
    let json_err = |e: serde_json::Error| Failure::runtime(e.to_string());
    match g.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&census).map_err(json_err)?;
            if let (Some(f), Some(obj)) = (&fc, v.as_object_mut()) {
                obj.insert("forecast".into(), serde_json::to_value(f).map_err(json_err)?);
            }
            println!("{}", serde_json::to_string_pretty(&v).map_err(json_err)?)
        }
        OutputFormat::Table => {
            print!("{}", render::status_table(&census));
            if let Some(f) = exhaustion_finding(fc.as_ref()) {
                println!("\nforecast    {}", f.summary);
            }
        }
    }
    if let Some(path) = &a.textfile {
        // No incidents (status reads no logs): left out; the forecast only with the agent's history.
        let text = metrics::exposition(&MetricsInput { census: &census, forecast: fc.as_ref(), incidents: None, sample_duration: Some(took) });
        metrics::write_textfile(path, &text).map_err(|e| Failure::runtime(format!("--textfile: {e}")))?;
    }
    Ok(OK)
}

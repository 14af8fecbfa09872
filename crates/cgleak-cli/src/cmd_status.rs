use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use cgleak_model::census::take_census;
use cgleak_model::dying;
use cgleak_model::forecast::{Sample, DEFAULT_HISTORY_CAPACITY};
use cgleak_model::verdict::exhaustion_forecast;

use crate::args::{agent_history, GlobalArgs, OutputFormat};
use crate::exit::{census_failure, Failure, OK};
use crate::metrics::{self, MetricsInput};
use crate::render::{self, history, note};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Also write the census as Prometheus metrics to FILE, atomically (for node_exporter's
    /// textfile collector: name it *.prom in its --collector.textfile.directory).
    #[arg(long, value_name = "FILE")]
    pub textfile: Option<PathBuf>,
    /// Where `cgleak agent` keeps its history (agent-history.jsonl): when there is one, the
    /// exhaustion forecast is shown (JSON key `forecast`) [default: <host-root>/var/lib/cgleak/agent,
    /// and the old layout's /var/lib/cgleak/agent-history.jsonl, read too].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Also name the dying memcgs with the BPF walk (6.1+ with BTF, root): JSON keys
    /// `dying_named`, `dying_pinned_bytes` and `dying_by_parent` (null without it, or where
    /// the walk cannot run), and the dying metrics in --textfile. It loads a BPF program
    /// against the kernel's BTF: about 9 MB more memory and 50 ms (measured on 6.18), so it
    /// is asked for, not the default.
    #[arg(long)]
    pub dying: bool,
    /// Also draw the agent's stored history: IDs in use (with the limit and the forecast
    /// line) and dying memcgs over time, as charts as wide as the terminal; with --output
    /// json, the samples under `history`.
    #[arg(long)]
    pub history: bool,
    /// Draw the --history charts with ASCII characters only.
    #[arg(long, requires = "history")]
    pub ascii: bool,
    /// Width of the --history charts in columns [default: the terminal's, else $COLUMNS, else 80].
    #[arg(long, value_name = "COLUMNS", requires = "history", value_parser = clap::value_parser!(u16).range(30..=1000))]
    pub width: Option<u16>,
}

pub fn run(g: &GlobalArgs, a: &StatusArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let started = Instant::now();
    let census = take_census(&host).map_err(census_failure)?;
    let took = started.elapsed();
    // Named dying memcgs only when asked: one BPF walk (6.1+ with BTF, root), whose BTF parsing
    // would take status past its memory budget (README, Performance).
    let named = if a.dying {
        dying::bpf_summary(&host, &census).map_err(|e| note(format!("--dying: the BPF walk is unavailable: {e}"))).ok()
    } else {
        None
    };
    let files = agent_history(&host, a.state_dir.as_deref());
    let fc = files.stored_forecast(&mut note);
    // The samples behind the forecast, for --history.
    let samples: Vec<Sample> = if a.history {
        files.read(DEFAULT_HISTORY_CAPACITY, &mut |_| {}).map(|(h, _)| h.samples().copied().collect()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let json_err = |e: serde_json::Error| Failure::runtime(e.to_string());
    match g.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&census).map_err(json_err)?;
            if let (Some(f), Some(obj)) = (&fc, v.as_object_mut()) {
                obj.insert("forecast".into(), serde_json::to_value(f).map_err(json_err)?);
            }
            if let Some(obj) = v.as_object_mut() {
                obj.insert("dying_named".into(), named.as_ref().map(|d| d.named).into());
                obj.insert("dying_pinned_bytes".into(), named.as_ref().map(|d| d.pinned_bytes).into());
                obj.insert("dying_by_parent".into(), named.as_ref().map(|d| by_parent_json(&d.by_parent)).into());
                if a.history {
                    obj.insert("history".into(), serde_json::to_value(&samples).map_err(json_err)?);
                }
            }
            println!("{}", render::json_document(&v)?)
        }
        OutputFormat::Table => {
            print!("{}", render::status_table(&census));
            if let Some(d) = &named {
                println!("\ndying named {} (BPF walk), {:.1} MiB pinned: `cgleak dying` lists them", d.named, d.pinned_bytes as f64 / 1048576.0);
            }
            if let Some(f) = exhaustion_forecast(fc.as_ref()) {
                println!("\nforecast    {}", f.summary);
            }
            if a.history {
                let width = a.width.map(usize::from).unwrap_or_else(history::terminal_width);
                print!("\n{}", history::history_charts(&samples, fc.as_ref(), history::ChartStyle { width, height: 8, ascii: a.ascii }));
            }
        }
    }
    if let Some(path) = &a.textfile {
        // No incidents (status reads no logs): left out; the forecast only with the agent's history.
        let text = metrics::exposition_dying(&MetricsInput { census: &census, forecast: fc.as_ref(), incidents: None, sample_duration: Some(took) }, named.as_ref());
        metrics::write_textfile(path, &text).map_err(|e| Failure::runtime(format!("--textfile: {e}")))?;
    }
    Ok(OK)
}

/// `dying_by_parent`: `[{"parent": "kubepods/burstable", "memcgs": 12}, ...]`, largest first
/// (at most 20 parents and `other`), as `cgleak_memcg_dying_by_parent` exports them.
fn by_parent_json(by_parent: &[(String, u64)]) -> serde_json::Value {
    by_parent.iter().map(|(parent, n)| serde_json::json!({ "parent": parent, "memcgs": n })).collect()
}

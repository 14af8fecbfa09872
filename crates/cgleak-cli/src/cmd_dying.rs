//! `cgleak dying`: every dying memcg by name, its pod, and what pins it.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use cgleak_model::dying::{self, CollectOptions, SortKey};
use cgleak_model::memcg_memory;

use crate::args::{GlobalArgs, OutputFormat};
use crate::exit::{census_failure, Failure, OK};
use crate::render;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortArg {
    /// Most pinned bytes first.
    Pinned,
    /// Longest offline first (known where the agent saw them go).
    Age,
}

#[derive(Args, Debug)]
pub struct DyingArgs {
    /// Rows shown (every named memcg is still counted, summed and grouped by pod).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Order of the rows.
    #[arg(long, value_enum, default_value_t = SortArg::Pinned)]
    pub sort: SortArg,
    /// Do not load the BPF walk: name them from the agent's memory or slab cache names.
    #[arg(long)]
    pub no_bpf: bool,
    /// Where `cgleak agent` keeps its state (its memory of memcgs that went)
    /// [default: <host-root>/var/lib/cgleak/agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &DyingArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let sort = match a.sort {
        SortArg::Pinned => SortKey::Pinned,
        SortArg::Age => SortKey::Age,
    };
    let state_dir = a.state_dir.clone().unwrap_or_else(|| cgleak_actions::fix::state::agent_state_dir(&host));
    let remembered = remembered(&host, &state_dir);
    let c = dying::collect(&host, CollectOptions { bpf: !a.no_bpf, sort, top: a.top, remembered }).map_err(census_failure)?;
    let r = &c.report;
    if let Some(why) = &r.bpf_unavailable {
        render::note(format!("BPF walk unavailable: {why}"));
    }
    match g.output {
        OutputFormat::Json => render::print_report(g.output, r, |_| String::new())?,
        OutputFormat::Table => print!("{}", render::dying::table(r)),
    }
    Ok(OK)
}

/// The agent's memory of memcgs that went, of this boot, if its state dir has one. A memory
/// that cannot be read is a note (the agent repairs it when it starts), not the end of the report.
fn remembered(host: &cgleak_readers::HostPaths, state_dir: &Path) -> Option<Vec<dying::Remembered>> {
    let boot = host.read("/proc/sys/kernel/random/boot_id", 4096).ok().map(|b| b.trim().to_string());
    let got = match &boot {
        Some(b) => memcg_memory::load_dead_for_boot(state_dir, b),
        None => memcg_memory::load_dead(state_dir),
    };
    match got {
        Ok(list) if list.is_empty() => None,
        Ok(list) => Some(dying::remembered_from(&list, jiff::Timestamp::now())),
        Err(e) => {
            render::note(format!("the agent's memory is not used: {e}"));
            None
        }
    }
}

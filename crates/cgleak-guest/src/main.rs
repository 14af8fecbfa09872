//! `cgleak-guest`: the scenarios of the real-kernel lab. Each one does something to
//! the kernel whose outcome it knows (mkdir until the ID space is full, pin dying
//! memcgs with page cache, move a task with move_charge_at_immigrate, ...), runs
//! `cgleak` and compares, then prints one JSON line after [`report::RESULT_MARKER`].
//!
//! `cargo xtask vmtest` runs it as part of a qemu guest's init, and on the host for the
//! scenarios that are safe there. On the host it only creates cgroups under scratch
//! parents of its own (`cgleak-test-<pid>-*`), at most [`HOST_MAX_MEMCGS`] of them, only
//! moves processes it started, and never fills the ID space.

mod cg;
mod cgleak;
mod report;
mod scenarios;

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use cgleak_model::era::KernelEra;
use cgleak_readers::mountinfo::CgroupLayout;
use cgleak_readers::HostPaths;

use report::{Outcome, DONE_MARKER, RESULT_MARKER};

/// Memcgs a host run may create in all (facts §7: 5,000 test memcgs on the host).
pub const HOST_MAX_MEMCGS: u64 = 5000;

#[derive(Parser, Debug)]
#[command(name = "cgleak-guest", about = "Real-kernel scenarios for cgleak (run by `cargo xtask vmtest`)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run scenarios and print one result line each.
    Run(RunArgs),
    /// Walk through cgroups `<parent>/<prefix><i>`, and in each one read (or write and
    /// fsync) the file `<dir>/<prefix><i>`: its page cache is charged to that memcg.
    Pin {
        #[arg(long)]
        parent: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        bytes: usize,
        /// Write the files instead of reading them.
        #[arg(long)]
        write: bool,
    },
    /// Join a cgroup, touch anonymous memory and write a file, say "ready", wait for stdin to close.
    Hold {
        #[arg(long)]
        procs: PathBuf,
        #[arg(long)]
        anon_bytes: usize,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        file_bytes: usize,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// A throw-away qemu guest: anything goes, nothing needs cleaning up at the end.
    Guest,
    /// The developer's or CI's machine: scratch parents only, at most 5,000 memcgs.
    Host,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Census,
    BpfWalk,
    MoveCharge,
    Runc,
    Migrate,
    ToLimit,
    NearLimit,
    Exhaustion,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Census => "census",
            Scenario::BpfWalk => "bpf-walk",
            Scenario::MoveCharge => "move-charge",
            Scenario::Runc => "runc",
            Scenario::Migrate => "migrate",
            Scenario::ToLimit => "to-limit",
            Scenario::NearLimit => "near-limit",
            Scenario::Exhaustion => "exhaustion",
        }
    }
    /// Scenarios that fill the memcg ID space: never on the host.
    pub fn guest_only(self) -> bool {
        matches!(self, Scenario::ToLimit | Scenario::NearLimit | Scenario::Exhaustion)
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long, value_enum)]
    env: Env,
    /// Label of the kernel in the result lines ("6.1", "6.12"; the host's major.minor by default).
    #[arg(long)]
    kernel: Option<String>,
    /// Expected cgroup version of the memory controller ("v1" or "v2").
    #[arg(long)]
    mode: Option<String>,
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    scenarios: Vec<Scenario>,
    /// The cgleak binary to test.
    #[arg(long)]
    cgleak: PathBuf,
    /// A directory on a disk-backed filesystem (not tmpfs) for files whose page cache pins memcgs.
    #[arg(long)]
    data_dir: PathBuf,
    /// errno that mkdir must return when the ID space is full, per docs/kernel-facts.md section 1.
    #[arg(long)]
    expect_errno: Option<String>,
    /// Where result lines go (the guest's second serial port); stdout by default.
    #[arg(long)]
    results: Option<PathBuf>,
    /// runc binary and a busybox root filesystem for the runc scenario.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    #[arg(long)]
    busybox: Option<PathBuf>,
}

/// What every scenario needs to know about where it runs.
pub struct Ctx {
    pub env: Env,
    pub kernel: String,
    pub mode: String,
    pub release: String,
    pub era: KernelEra,
    /// Local path of the memory hierarchy's root.
    pub mem_root: PathBuf,
    pub version: u8,
    pub cgleak: PathBuf,
    pub data_dir: PathBuf,
    pub expect_errno: Option<String>,
    pub self_exe: PathBuf,
    pub runc: PathBuf,
    pub busybox: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Pin { parent, prefix, count, dir, bytes, write } => pin(&parent, &prefix, count, &dir, bytes, write),
        Cmd::Hold { procs, anon_bytes, file, file_bytes } => hold(&procs, anon_bytes, &file, file_bytes),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgleak-guest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: RunArgs) -> Result<()> {
    if a.env == Env::Host {
        if let Some(s) = a.scenarios.iter().find(|s| s.guest_only()) {
            bail!("scenario {} fills the memcg ID space: guest only, never on the host", s.name());
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string();
    let era = KernelEra::from_release_str(&release);
    let kernel = a.kernel.clone().unwrap_or_else(|| format!("{}.{}", era.release.major, era.release.minor));
    let memory = CgroupLayout::discover(&HostPaths::new("/"))
        .context("read /proc/self/mountinfo")?
        .memory()
        .context("no memory cgroup controller mounted")?;
    let mode = format!("v{}", memory.version);
    if let Some(want) = &a.mode {
        if *want != mode {
            bail!("memory controller is on {mode}, expected {want}");
        }
    }
    let ctx = Ctx {
        env: a.env,
        kernel,
        mode,
        release,
        era,
        mem_root: memory.mount.local.clone(),
        version: memory.version,
        cgleak: a.cgleak,
        data_dir: std::fs::canonicalize(&a.data_dir).with_context(|| format!("--data-dir {}", a.data_dir.display()))?,
        expect_errno: a.expect_errno,
        self_exe: std::env::current_exe()?,
        runc: a.runc,
        busybox: a.busybox,
    };
    let mut out: Box<dyn Write> = match &a.results {
        Some(p) => Box::new(std::fs::OpenOptions::new().write(true).open(p).with_context(|| format!("open {}", p.display()))?),
        None => Box::new(std::io::stdout()),
    };
    let mut state = scenarios::State::default();
    for s in &a.scenarios {
        eprintln!("cgleak-guest: scenario {} ...", s.name());
        let started = std::time::Instant::now();
        let mut o = Outcome::default();
        o.measure("release", ctx.release.clone());
        o.measure("env", if ctx.env == Env::Guest { "guest" } else { "host" });
        if let Err(e) = scenarios::run(*s, &ctx, &mut state, &mut o) {
            o.error(&e);
        }
        o.measure("seconds", (started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        let line = o.into_line(&ctx.kernel, &ctx.mode, s.name());
        eprintln!("cgleak-guest: scenario {} done in {:.1} s", s.name(), started.elapsed().as_secs_f64());
        writeln!(out, "{RESULT_MARKER}{line}")?;
        out.flush()?;
    }
    writeln!(out, "{DONE_MARKER}")?;
    out.flush()?;
    Ok(())
}

fn pin(parent: &std::path::Path, prefix: &str, count: u64, dir: &std::path::Path, bytes: usize, write: bool) -> Result<()> {
    let data = vec![0x5a; bytes];
    for i in 0..count {
        // "0" is the writer itself: one process visits every cgroup, no fork per memcg.
        cg::write_ctx(&parent.join(format!("{prefix}{i}")).join("cgroup.procs"), "0")?;
        let file = dir.join(format!("{prefix}{i}"));
        if write {
            let mut f = std::fs::File::create(&file).with_context(|| format!("create {}", file.display()))?;
            f.write_all(&data)?;
            f.sync_all()?;
        } else {
            let mut buf = Vec::with_capacity(bytes);
            std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut buf)).with_context(|| format!("read {}", file.display()))?;
        }
    }
    Ok(())
}

fn hold(procs: &std::path::Path, anon_bytes: usize, file: &std::path::Path, file_bytes: usize) -> Result<()> {
    cg::write_ctx(procs, "0")?;
    let mut anon = vec![0u8; anon_bytes];
    for i in (0..anon.len()).step_by(4096) {
        anon[i] = 1;
    }
    let mut f = std::fs::File::create(file)?;
    f.write_all(&vec![0x5a; file_bytes])?;
    f.sync_all()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut rest = Vec::new();
    std::io::stdin().lock().read_to_end(&mut rest)?;
    std::hint::black_box(&anon);
    Ok(())
}

/// Read one line from a child's stdout.
pub fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut s = String::new();
    r.read_line(&mut s)?;
    Ok(s.trim().to_string())
}

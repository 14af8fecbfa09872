//! `cargo xtask vmtest`: cgleak against real kernels.
//!
//! For each Debian kernel and cgroup mode of the matrix it fetches the cloud kernel
//! package (cached outside git), builds an initramfs holding busybox, the node binary
//! of `cargo xtask dist` as `cgleak` (static: no libraries), `cgleak-guest` (the
//! scenarios) and its shared libraries, boots it with
//! `qemu-system-x86_64 -accel tcg -cpu max`, and prints the guest's result lines: one
//! JSON object per scenario, `{"kernel", "mode", "scenario", "passed", "details"}`.
//! The host (`--kernel host`) runs the scenarios that are safe there. Guests boot two at
//! a time (`--jobs`) with one vCPU each: their work is one mkdir loop, so this halves
//! the wall time on a 2-core machine (the whole matrix: about 3 minutes).
//!
//! Why a loop device: page cache that pins dying memcgs must live on a disk-backed
//! filesystem (tmpfs pages are shmem, which drop_caches does not free). ext4/ext2 is
//! built into Debian's cloud kernels but every block driver is a module; loop.ko has no
//! dependencies, so the guest insmods it from the same package and formats a sparse
//! file on tmpfs with busybox mke2fs.

mod bpf;
mod cpio;
mod dist;
mod image;
mod kernels;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

const RESULT_MARKER: &str = "CGLEAK-LAB-RESULT ";
const DONE_MARKER: &str = "CGLEAK-LAB-DONE";

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run cgleak's real-kernel scenarios in qemu guests (Debian 6.1 and 6.12) and on the host.
    #[command(after_help = "\
Without --kernel: the whole matrix, 6.1 v1, 6.1 v2, 6.12 v2 and the host.
Kernel packages are cached in $CGLEAK_KERNEL_CACHE (default ~/.cache/cgleak/kernels).

Examples:
  cargo xtask vmtest
  cargo xtask vmtest --kernel 6.1 --mode v1 --scenario census
  cargo xtask vmtest --kernel 6.12 --mode v2 --scenario to-limit
  cargo xtask vmtest --kernel host")]
    Vmtest(VmtestArgs),
    /// Build the `cgleak` binary for nodes: static glibc, stripped, one file that needs nothing
    /// from the host (CentOS 7's glibc 2.17 included), at target/dist/cgleak-x86_64-linux.
    #[command(after_help = "\
Writes target/dist/cgleak-x86_64-linux and target/dist/cgleak-x86_64-linux.sha256
(sha256sum format: `sha256sum -c cgleak-x86_64-linux.sha256` on the node), and prints
the path, the size and the checksum.

Example:
  cargo xtask dist")]
    Dist,
    /// Build the agent's OCI image (FROM scratch: the dist binary at /usr/local/bin/cgleak)
    /// as an image layout and an archive, with no registry and no container daemon.
    #[command(after_help = "\
Builds target/dist/cgleak-x86_64-linux first (cargo xtask dist), then writes the OCI image
layout target/image/oci (tag = the crate version) and the same as one archive,
target/image/cgleak-<version>-oci.tar. Entrypoint /usr/local/bin/cgleak, command
`agent --host-root /host` (the DaemonSet passes its own args).

Push it (README, Image):
  skopeo copy oci-archive:target/image/cgleak-0.1.0-oci.tar docker://REGISTRY/cgleak:0.1.0
  podman load -i target/image/cgleak-0.1.0-oci.tar && podman push ...

Example:
  cargo xtask image")]
    Image,
    /// Build the BPF memcg walk (crates/cgleak-bpf/bpf/memcg_walk.bpf.c) with Debian's clang into
    /// the committed object and its stamp; --check proves the committed object is that build.
    #[command(after_help = "\
Installs clang from Debian when it is missing (as root). The object is committed and
embedded in cgleak: building cgleak never needs clang.

Examples:
  cargo xtask bpf
  cargo xtask bpf --check")]
    Bpf {
        /// Check the committed object against its source and stamp; change nothing.
        #[arg(long)]
        check: bool,
    },
}

#[derive(clap::Args)]
struct VmtestArgs {
    /// 6.1, 6.12 or host [default: all of them].
    #[arg(long, value_delimiter = ',')]
    kernel: Vec<String>,
    /// v1 or v2 [default: every mode the kernel has: 6.1 v1 and v2, 6.12 v2, host as it is].
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Scenarios to run [default: all that apply]: census, bpf-walk, move-charge, runc, migrate, to-limit, near-limit, exhaustion.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Build cgleak-guest with this cargo profile (release is several times faster under TCG);
    /// cgleak is always the release build of `cargo xtask dist`.
    #[arg(long, default_value = "release")]
    profile: String,
    /// Seconds a guest may run before qemu is killed.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Guest memory in MiB (65,535 memcgs need about 2 GiB of kernel memory).
    #[arg(long, default_value_t = 4096)]
    memory: u32,
    /// Guest CPUs. The guests' work is one mkdir loop, so one CPU each is as fast as two
    /// (measured: 118 s vs 122 s for 62,259 memcgs on 6.12) and leaves a host core to a second guest.
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// Guests booted at the same time.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Look for newer kernel packages even when the cache holds one.
    #[arg(long)]
    refresh_kernels: bool,
    /// Print the guest console as it comes.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    V1,
    V2,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::V1 => "v1",
            Mode::V2 => "v2",
        }
    }
}

/// In run order: to-limit fills to 5,000 IDs short of the limit, near-limit goes on to 95%, exhaustion to 100%.
const ALL_SCENARIOS: [&str; 8] = ["census", "bpf-walk", "move-charge", "runc", "migrate", "to-limit", "near-limit", "exhaustion"];
/// Fill the memcg ID space: guests only (facts §7).
const GUEST_ONLY: [&str; 3] = ["to-limit", "near-limit", "exhaustion"];
/// `probe --to-limit` once per cgroup version by default (6.1 v1, 6.12 v2): it adds ~10,000
/// mkdirs and rmdirs to a boot; 6.1 v2 runs it when asked (`--scenario to-limit`).
fn default_to_limit(kernel: &str, mode: Option<Mode>) -> bool {
    !(kernel == "6.1" && mode == Some(Mode::V2))
}
/// Scenarios about v1-only files (memory.move_charge_at_immigrate, facts §5) and the
/// v1-only fix (migrate: kmem accounting in pod cgroups is a v1 problem, facts §3).
const V1_ONLY: [&str; 2] = ["move-charge", "migrate"];
/// Scenarios that run real runc containers (runc and busybox go into the initramfs).
const RUNC_SCENARIOS: [&str; 2] = ["runc", "migrate"];

/// One boot (or the host run) of the matrix.
#[derive(Debug, Clone)]
struct Target {
    /// "6.1", "6.12" or "host".
    kernel: String,
    mode: Option<Mode>,
    scenarios: Vec<String>,
}

impl Target {
    fn name(&self) -> String {
        match self.mode {
            Some(m) => format!("{} {}", self.kernel, m.as_str()),
            None => self.kernel.clone(),
        }
    }
}

/// errno of mkdir on a full ID space, facts §1 (measured: 6.1 ENOSPC, 6.12 EBUSY).
fn expected_errno(kernel: &str) -> &'static str {
    if kernel == "6.1" { "ENOSPC" } else { "EBUSY" }
}

/// The matrix: which scenarios each kernel runs by default. Every guest fills the ID space
/// (6.1 v2 too: it is the one place cgleak counts v2 memcgs by walking, without
/// nr_subsys_memory, at 65,535); the host never does.
/// move_charge_at_immigrate is a v1 file: a v2 boot does not run it (rather than pass by skipping).
fn default_scenarios(kernel: &str, mode: Option<Mode>) -> Vec<&'static str> {
    ALL_SCENARIOS
        .iter()
        .copied()
        .filter(|s| kernel != "host" || !GUEST_ONLY.contains(s))
        .filter(|s| mode != Some(Mode::V2) || !V1_ONLY.contains(s))
        .filter(|s| *s != "to-limit" || default_to_limit(kernel, mode))
        .collect()
}

fn plan(a: &VmtestArgs) -> Result<Vec<Target>> {
    let kernels: Vec<String> = if a.kernel.is_empty() { vec!["6.1".into(), "6.12".into(), "host".into()] } else { a.kernel.clone() };
    let mut out = Vec::new();
    for k in kernels {
        let modes: Vec<Option<Mode>> = match (k.as_str(), a.mode) {
            ("host", _) => vec![None],
            ("6.1", None) => vec![Some(Mode::V1), Some(Mode::V2)],
            ("6.12", Some(Mode::V1)) => bail!("Debian's 6.12 is built without CONFIG_MEMCG_V1: no v1 memory controller (facts §7)"),
            ("6.12", None) => vec![Some(Mode::V2)],
            ("6.1" | "6.12", m) => vec![m],
            (other, _) => bail!("--kernel {other}: expected 6.1, 6.12 or host"),
        };
        for mode in modes {
            let scenarios: Vec<String> = if a.scenario.is_empty() {
                default_scenarios(&k, mode).into_iter().map(str::to_string).collect()
            } else {
                for s in &a.scenario {
                    if !ALL_SCENARIOS.contains(&s.as_str()) {
                        bail!("--scenario {s}: expected one of {}", ALL_SCENARIOS.join(", "));
                    }
                }
                let want: BTreeSet<&str> = a.scenario.iter().map(String::as_str).collect();
                // Run order matters: exhaustion continues near-limit's fill.
                ALL_SCENARIOS.iter().filter(|s| want.contains(*s)).map(|s| s.to_string()).collect()
            };
            if mode == Some(Mode::V2) {
                if let Some(s) = scenarios.iter().find(|s| V1_ONLY.contains(&s.as_str())) {
                    bail!("scenario {s} needs a cgroup v1 memory hierarchy: run it with --mode v1");
                }
            }
            if k == "host" {
                if let Some(s) = scenarios.iter().find(|s| GUEST_ONLY.contains(&s.as_str())) {
                    bail!("scenario {s} fills the memcg ID space: guests only, never on the host");
                }
            }
            out.push(Target { kernel: k.clone(), mode, scenarios });
        }
    }
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Vmtest(a) => vmtest(&a),
        Cmd::Dist => dist::build(&workspace_root(), &target_dir()).map(|d| {
            println!("path    {}", d.path.display());
            println!("size    {} bytes ({:.1} MiB)", d.size, d.size as f64 / (1024.0 * 1024.0));
            println!("sha256  {}", d.sha256);
            true
        }),
        Cmd::Image => image::build(&workspace_root(), &target_dir()).map(|i| {
            println!("layout   {}", i.layout.display());
            println!("archive  {}", i.archive.display());
            println!("tag      {}", i.tag);
            println!("digest   {}", i.manifest_digest);
            true
        }),
        Cmd::Bpf { check: false } => bpf::build(&workspace_root()).map(|()| true),
        Cmd::Bpf { check: true } => bpf::check(&workspace_root()),
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

fn vmtest(a: &VmtestArgs) -> Result<bool> {
    let started = Instant::now();
    let targets = plan(a)?;
    let guests = targets.iter().any(|t| t.kernel != "host");
    ensure_host_tools(guests, targets.iter().any(|t| t.scenarios.iter().any(|s| RUNC_SCENARIOS.contains(&s.as_str()))))?;
    let bins = build(&a.profile)?;
    let work = bins.target_dir.join("vmtest");
    fs::create_dir_all(&work)?;

    // Kernels first, one after the other: two guests of one series must not unpack it twice at once.
    let mut kernels = std::collections::BTreeMap::new();
    for t in targets.iter().filter(|t| t.kernel != "host") {
        if !kernels.contains_key(&t.kernel) {
            let k = kernels::fetch(kernels::series(&t.kernel)?, a.refresh_kernels)?;
            eprintln!("xtask: kernel {} ({})", k.release, k.package);
            kernels.insert(t.kernel.clone(), k);
        }
    }
    // Guests in parallel, longest first (the order of the plan puts 6.12's slow fill after 6.1's).
    let mut order: Vec<usize> = (0..targets.len()).filter(|i| targets[*i].kernel != "host").collect();
    order.sort_by_key(|i| std::cmp::Reverse(targets[*i].kernel == "6.12"));
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(order));
    let results: std::sync::Mutex<Vec<Option<TargetResult>>> = std::sync::Mutex::new(vec![None; targets.len()]);
    std::thread::scope(|scope| {
        for _ in 0..a.jobs.max(1) {
            scope.spawn(|| loop {
                let Some(i) = queue.lock().expect("queue").pop_front() else { break };
                let t = &targets[i];
                let t0 = Instant::now();
                eprintln!("xtask: == {}: {}", t.name(), t.scenarios.join(", "));
                let lines = run_guest(t, a, &bins, &work, &kernels[&t.kernel]).unwrap_or_else(|e| failed_lines(t, &e));
                results.lock().expect("results")[i] = Some((lines, t0.elapsed().as_secs_f64()));
            });
        }
    });
    let mut results = results.into_inner().expect("results");

    let mut all_passed = true;
    let (mut n_passed, mut n_failed) = (0u32, 0u32);
    let mut summary = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (lines, secs) = match results[i].take() {
            Some(r) => r,
            None => {
                let t0 = Instant::now();
                eprintln!("xtask: == {}: {}", t.name(), t.scenarios.join(", "));
                let lines = run_host(t, &bins, &work).unwrap_or_else(|e| failed_lines(t, &e));
                (lines, t0.elapsed().as_secs_f64())
            }
        };
        let mut out = std::io::stdout().lock();
        for l in &lines {
            writeln!(out, "{}", ordered_line(l))?;
            if l["passed"] != true {
                all_passed = false;
                n_failed += 1;
            } else {
                n_passed += 1;
            }
        }
        out.flush()?;
        let failed: Vec<&str> = lines.iter().filter(|l| l["passed"] != true).filter_map(|l| l["scenario"].as_str()).collect();
        summary.push(format!("{:<8} {:>6.1} s  {}", t.name(), secs, if failed.is_empty() { "passed".to_string() } else { format!("FAILED: {}", failed.join(", ")) }));
    }
    eprintln!("xtask: summary");
    for s in &summary {
        eprintln!("  {s}");
    }
    eprintln!("xtask: vmtest took {:.0} s; {}", started.elapsed().as_secs_f64(), if all_passed { "all passed" } else { "some FAILED" });
    // The plain closing line CI reads, alone on its line.
    println!("vmtest: {n_passed} passed, {n_failed} failed");
    Ok(all_passed)
}

/// A result line with its keys in the documented order: kernel, mode, scenario, passed, details.
fn ordered_line(l: &Value) -> String {
    let field = |k: &str| serde_json::to_string(&l[k]).unwrap_or_else(|_| "null".into());
    format!(
        "{{\"kernel\":{},\"mode\":{},\"scenario\":{},\"passed\":{},\"details\":{}}}",
        field("kernel"),
        field("mode"),
        field("scenario"),
        field("passed"),
        field("details")
    )
}

/// A target's result lines and its wall time in seconds.
type TargetResult = (Vec<Value>, f64);

fn failed_lines(t: &Target, e: &anyhow::Error) -> Vec<Value> {
    t.scenarios.iter().map(|s| result_line(t, s, false, json!({ "error": format!("{e:#}") }))).collect()
}

fn result_line(t: &Target, scenario: &str, passed: bool, details: Value) -> Value {
    let mode = t.mode.map(|m| m.as_str().to_string()).unwrap_or_else(|| "host".into());
    json!({ "kernel": t.kernel, "mode": mode, "scenario": scenario, "passed": passed, "details": details })
}

// ---------------------------------------------------------------------------------------
// Host tools and the build
// ---------------------------------------------------------------------------------------

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd} >/dev/null")]).status().is_ok_and(|s| s.success())
}

/// Install what the lab needs from Debian when it is missing (as root), so a fresh machine works.
fn ensure_host_tools(guests: bool, runc: bool) -> Result<()> {
    let mut pkgs = Vec::new();
    if guests && !have("qemu-system-x86_64") {
        pkgs.push("qemu-system-x86");
    }
    if guests && !is_static_busybox() {
        pkgs.push("busybox-static");
    }
    if runc && !have("runc") {
        pkgs.push("runc");
    }
    if pkgs.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing {}: install them (apt-get install {}) or run as root", pkgs.join(", "), pkgs.join(" "));
    }
    apt_install(&pkgs)
}

/// `apt-get install` of Debian's `pkgs` (the caller checked it runs as root), after an
/// `apt-get update` when the package lists are too old to have them.
fn apt_install(pkgs: &[&str]) -> Result<()> {
    eprintln!("xtask: apt-get install {}", pkgs.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        Command::new("apt-get").args(["update", "-qq"]).status()?;
        if !install()?.success() {
            bail!("apt-get install {} failed", pkgs.join(" "));
        }
    }
    Ok(())
}

fn busybox_path() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn is_static_busybox() -> bool {
    busybox_path().is_some_and(|p| {
        Command::new("ldd").arg(&p).output().map(|o| !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")).unwrap_or(false)
    })
}

struct Bins {
    target_dir: PathBuf,
    cgleak: PathBuf,
    guest: PathBuf,
}

fn build(profile: &str) -> Result<Bins> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo build --profile {profile} -p cgleak-guest");
    let st = Command::new(&cargo)
        .args(["build", "--locked", "--profile", profile, "-p", "cgleak-guest"])
        .current_dir(workspace_root())
        .status()
        .context("run cargo build")?;
    if !st.success() {
        bail!("cargo build failed ({st})");
    }
    let target_dir = target_dir();
    let out = target_dir.join(if profile == "dev" { "debug" } else { profile });
    // cgleak as nodes get it: the lab runs the binary the README tells users to install.
    let cgleak = dist::build(&workspace_root(), &target_dir)?.path;
    Ok(Bins { cgleak, guest: out.join("cgleak-guest"), target_dir })
}

// ---------------------------------------------------------------------------------------
// The host
// ---------------------------------------------------------------------------------------

fn run_host(t: &Target, bins: &Bins, work: &Path) -> Result<Vec<Value>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("host scenarios create cgroups: run as root");
    }
    // A directory on the repository's disk: page cache there pins memcgs (tmpfs would be shmem).
    let data = work.join("host-data");
    fs::create_dir_all(&data)?;
    let mut cmd = Command::new(&bins.guest);
    cmd.args(["run", "--env", "host", "--scenarios", &t.scenarios.join(",")])
        .arg("--cgleak")
        .arg(&bins.cgleak)
        .arg("--data-dir")
        .arg(&data);
    if let Some(bb) = busybox_path() {
        cmd.arg("--busybox").arg(bb);
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("run cgleak-guest on the host")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = parse_results(&text);
    Ok(complete(t, lines, !text.contains(DONE_MARKER), &format!("cgleak-guest exited {}", out.status)))
}

fn parse_results(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(RESULT_MARKER).map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect()
}

/// A failed line for every scenario that did not report.
fn complete(t: &Target, mut lines: Vec<Value>, incomplete: bool, why: &str) -> Vec<Value> {
    for s in &t.scenarios {
        if !lines.iter().any(|l| l["scenario"] == s.as_str()) {
            lines.push(result_line(t, s, false, json!({ "error": format!("no result: {why}") })));
        }
    }
    if incomplete && lines.iter().all(|l| l["passed"] == true) {
        lines.push(result_line(t, "runner", false, json!({ "error": why })));
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Guests
// ---------------------------------------------------------------------------------------

fn run_guest(t: &Target, a: &VmtestArgs, bins: &Bins, work: &Path, kernel: &kernels::Kernel) -> Result<Vec<Value>> {
    let mode = t.mode.context("a guest needs a mode")?;
    let dir = work.join(format!("{}-{}", t.kernel, mode.as_str()));
    fs::create_dir_all(&dir)?;
    let initrd = dir.join("initramfs.cpio");
    let want_runc = t.scenarios.iter().any(|s| RUNC_SCENARIOS.contains(&s.as_str()));
    fs::write(&initrd, initramfs(t, mode, bins, kernel, want_runc)?)?;
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let _ = fs::remove_file(&console);
    fs::write(&results, "")?;

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-m", &a.memory.to_string(), "-smp", &a.smp.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init"])
        .arg("-serial")
        .arg(if a.verbose { "stdio".to_string() } else { format!("file:{}", console.display()) })
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null());
    if a.verbose {
        qemu.stdout(Stdio::inherit());
    } else {
        qemu.stdout(Stdio::null());
    }
    let t0 = Instant::now();
    let mut child = qemu.spawn().context("start qemu-system-x86_64")?;
    let deadline = Duration::from_secs(a.timeout);
    let why = loop {
        if let Some(st) = child.try_wait()? {
            break if st.success() { "guest powered off".to_string() } else { format!("qemu exited {st}") };
        }
        if t0.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break format!("guest killed after the {} s timeout", a.timeout);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("xtask: {} guest ran {:.1} s ({why})", t.name(), t0.elapsed().as_secs_f64());
    let text = fs::read_to_string(&results).unwrap_or_default();
    let done = text.contains(DONE_MARKER);
    let lines = complete(t, parse_results(&text), !done, &why);
    if !done || lines.iter().any(|l| l["passed"] != true) {
        if let Ok(c) = fs::read_to_string(&console) {
            let tail: Vec<&str> = c.lines().rev().take(40).collect();
            eprintln!("xtask: last lines of {}:", console.display());
            for l in tail.iter().rev() {
                eprintln!("  | {l}");
            }
        }
    }
    Ok(lines)
}

/// Shared libraries of a dynamically linked binary, as ldd resolves them (the loader included).
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => l.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn add_binary(c: &mut cpio::Cpio, seen: &mut BTreeSet<PathBuf>, src: &Path, dest: &str) -> Result<()> {
    c.file(dest, 0o755, &fs::read(src).with_context(|| format!("read {}", src.display()))?);
    for lib in shared_libs(src)? {
        if seen.insert(lib.clone()) {
            // fs::read follows symlinks: the library lands under the name the loader asks for.
            let data = fs::read(&lib).with_context(|| format!("read {}", lib.display()))?;
            c.file(&lib.to_string_lossy(), 0o755, &data);
        }
    }
    Ok(())
}

fn initramfs(t: &Target, mode: Mode, bins: &Bins, kernel: &kernels::Kernel, want_runc: bool) -> Result<Vec<u8>> {
    let mut c = cpio::Cpio::default();
    let mut seen = BTreeSet::new();
    for d in ["dev", "proc", "sys", "tmp", "run", "mnt/data", "etc", "root", "var/lib/kubelet"] {
        c.dir(d);
    }
    c.char_dev("/dev/console", 5, 1);
    let busybox = busybox_path().context("busybox-static is not installed")?;
    c.file("/bin/busybox", 0o755, &fs::read(&busybox)?);
    c.symlink("/bin/sh", "busybox");
    add_binary(&mut c, &mut seen, &bins.cgleak, "/bin/cgleak")?;
    add_binary(&mut c, &mut seen, &bins.guest, "/bin/cgleak-guest")?;
    c.file("/lib/cgleak-lab/loop.ko", 0o644, &fs::read(&kernel.loop_ko)?);
    let mut runc_args = String::new();
    if want_runc {
        if let Some(runc) = which("runc") {
            add_binary(&mut c, &mut seen, &runc, "/bin/runc")?;
            runc_args = " --runc /bin/runc --busybox /bin/busybox".into();
        }
    }
    let cgroup_setup = match mode {
        // As a v1 node mounts them: runc needs at least devices besides memory.
        Mode::V1 => "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && for c in memory devices pids freezer blkio cpu,cpuacct; do mkdir /sys/fs/cgroup/$c && mount -t cgroup -o $c $c /sys/fs/cgroup/$c; done",
        Mode::V2 => "mount -t cgroup2 cgroup2 /sys/fs/cgroup && echo +memory > /sys/fs/cgroup/cgroup.subtree_control",
    };
    let expect = expected_errno(&t.kernel);
    let init = format!(
        r#"#!/bin/sh
# cgleak lab guest init ({kernel} {mode}), written by `cargo xtask vmtest`.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "cgleak-lab: kernel $(uname -r), {mode}, $(nproc) CPUs, $(free -m | awk '/Mem:/{{print $2}}') MiB"
# A disk-backed filesystem whose page cache drop_caches can free: ext2 on a loop device.
insmod /lib/cgleak-lab/loop.ko
truncate -s 256M /tmp/data.img
losetup /dev/loop0 /tmp/data.img && mke2fs -q /dev/loop0 >/dev/null 2>&1 || mke2fs /dev/loop0 >/dev/null
mount -t ext2 -o noatime /dev/loop0 /mnt/data || echo "cgleak-lab: no ext2 data disk"
{cgroup_setup} || echo "cgleak-lab: cgroup setup failed"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
/bin/cgleak-guest run --env guest --kernel {kernel} --mode {mode} --scenarios {scenarios} --cgleak /bin/cgleak --data-dir /mnt/data --expect-errno {expect} --results /dev/ttyS1{runc_args}
echo "cgleak-lab: runner exited $?"
sync
reboot -f
"#,
        kernel = t.kernel,
        mode = mode.as_str(),
        scenarios = t.scenarios.join(","),
    );
    c.file("/init", 0o755, init.as_bytes());
    Ok(c.finish())
}

fn which(cmd: &str) -> Option<PathBuf> {
    let out = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

#[cfg(test)]
mod tests {

    #[test]
    fn result_lines_print_keys_in_documented_order() {
        let l = serde_json::json!({"details": {"errno": "EBUSY"}, "passed": true, "scenario": "exhaustion", "mode": "v2", "kernel": "6.12"});
        assert_eq!(
            super::ordered_line(&l),
            r#"{"kernel":"6.12","mode":"v2","scenario":"exhaustion","passed":true,"details":{"errno":"EBUSY"}}"#
        );
    }
    use super::*;

    fn args(kernel: &[&str], mode: Option<Mode>, scenario: &[&str]) -> VmtestArgs {
        VmtestArgs {
            kernel: kernel.iter().map(|s| s.to_string()).collect(),
            mode,
            scenario: scenario.iter().map(|s| s.to_string()).collect(),
            profile: "release".into(),
            timeout: 1,
            memory: 4096,
            smp: 1,
            jobs: 2,
            refresh_kernels: false,
            verbose: false,
        }
    }

    #[test]
    fn the_default_matrix() {
        let p = plan(&args(&[], None, &[])).unwrap();
        let names: Vec<String> = p.iter().map(Target::name).collect();
        assert_eq!(names, ["6.1 v1", "6.1 v2", "6.12 v2", "host"]);
        assert_eq!(p[0].scenarios, ALL_SCENARIOS);
        assert_eq!(p[1].scenarios, ["census", "bpf-walk", "runc", "near-limit", "exhaustion"], "no v1-only scenario on v2");
        assert_eq!(p[2].scenarios, ["census", "bpf-walk", "runc", "to-limit", "near-limit", "exhaustion"]);
        assert_eq!(p[3].scenarios, ["census", "bpf-walk", "move-charge", "runc", "migrate"]);
        assert!(plan(&args(&["6.12"], None, &["migrate"])).is_err(), "migrate needs v1");
        assert!(plan(&args(&["6.12"], None, &["move-charge"])).is_err(), "move-charge needs v1");
    }

    #[test]
    fn scenarios_keep_their_order_and_guest_only_ones_stay_off_the_host() {
        let p = plan(&args(&["6.12"], None, &["exhaustion", "near-limit"])).unwrap();
        assert_eq!(p[0].scenarios, ["near-limit", "exhaustion"]);
        let p = plan(&args(&["6.1"], Some(Mode::V2), &["exhaustion", "to-limit"])).unwrap();
        assert_eq!(p[0].scenarios, ["to-limit", "exhaustion"], "to-limit on 6.1 v2 when asked, before the fill goes on");
        assert!(plan(&args(&["host"], None, &["exhaustion"])).is_err());
        assert!(plan(&args(&["host"], None, &["to-limit"])).is_err());
        assert!(plan(&args(&["6.12"], Some(Mode::V1), &[])).is_err(), "Debian's 6.12 has no v1 memory");
        assert!(plan(&args(&["5.10"], None, &[])).is_err());
        assert!(plan(&args(&["6.1"], None, &["nonsense"])).is_err());
        assert_eq!(expected_errno("6.1"), "ENOSPC");
        assert_eq!(expected_errno("6.12"), "EBUSY");
    }

    #[test]
    fn result_lines_are_parsed_from_noisy_output() {
        let text = "boot noise\r\nCGLEAK-LAB-RESULT {\"scenario\":\"census\",\"passed\":true}\r\n[ 1.0] kernel line\nCGLEAK-LAB-DONE\n";
        let lines = parse_results(text);
        assert_eq!(lines.len(), 1);
        let t = Target { kernel: "6.1".into(), mode: Some(Mode::V1), scenarios: vec!["census".into(), "runc".into()] };
        let all = complete(&t, lines, false, "guest powered off");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["scenario"], "runc");
        assert_eq!(all[1]["passed"], false);
    }
}

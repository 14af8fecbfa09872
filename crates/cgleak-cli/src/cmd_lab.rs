//! `cgleak lab`: a simulated node that churns real runc pods and leaves dying memcgs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use cgleak_actions::lab::budget::{self, HOST_MEMCG_CAP};
use cgleak_actions::lab::rootfs::{is_static_elf, memory_backed_fs};
use cgleak_actions::lab::runtime::find_program;
use cgleak_actions::lab::{census_counter, default_state_dir, fallback_data_dir, run_lab, scratch_name, LabError, LabOptions, Runtime, RuntimeKind};
use cgleak_readers::mountinfo::CgroupLayout;

use crate::args::{self, GlobalArgs};
use crate::exit::{self, Failure};
use crate::host_change::{cancel_on, memory_hierarchy, require_root};
use crate::render::lab::{render_table, LabUi};
use crate::render::print_report;

/// How often the lab counts the host's memcgs.
const CENSUS_EVERY: Duration = Duration::from_secs(2);

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeArg {
    Runc,
    Crun,
}

impl From<RuntimeArg> for RuntimeKind {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Runc => RuntimeKind::Runc,
            RuntimeArg::Crun => RuntimeKind::Crun,
        }
    }
}

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Pods kept running (the steady state).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub pods: u32,
    /// Containers in each pod.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub containers_per_pod: u32,
    /// Churn: this many times a minute, delete the oldest pod and create a new one (0: no churn).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=6000))]
    pub pods_per_minute: u32,
    /// How long to run once the pods are up: 90s, 10m, 1h30m (see Durations in the README)
    /// [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    pub duration: Option<Duration>,
    /// MiB of page cache each container writes before it sleeps; the page cache of a
    /// deleted pod keeps its memcgs dying (0: no page cache).
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub page_cache_mib: u32,
    /// Keep the data of deleted pods (and so their dying memcgs) up to this many MiB; the oldest goes first.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub keep_data_mib: u64,
    /// Every Nth deleted pod leaves its pod cgroup behind, without tasks and unknown to the
    /// kubelet: an orphan (at most 100 kept at once; all removed at exit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub orphan_every: Option<u32>,
    /// The OCI runtime that runs the containers (found on PATH, else in /usr/sbin or /usr/bin).
    #[arg(long, value_enum, default_value_t = RuntimeArg::Runc)]
    pub runtime: RuntimeArg,
    /// Run even though a kubelet is running on this host.
    #[arg(long)]
    pub force: bool,
    /// The lab's state: busybox rootfs, bundles, runtime state, fake kubelet root and, on a
    /// disk filesystem, the page cache data. Must not exist, or be empty; removed at exit
    /// [default: /run/cgleak-lab-<pid>].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &LabArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    if !host.is_host_root() {
        return Err(Failure::usage(format!(
            "--host-root {}: the lab runs containers on this machine, so it works only on / (drop --host-root)",
            g.host_root.display()
        )));
    }
    let deletions = budget::churn_deletions(a.pods_per_minute, a.duration.map(|d| d.as_secs_f64()));
    let lab_max = budget::lab_memcgs_max(a.pods, a.containers_per_pod, budget::max_orphans(a.orphan_every, deletions));
    if lab_max > HOST_MEMCG_CAP {
        return Err(Failure::usage(format!(
            "--pods {} --containers-per-pod {} would make up to {lab_max} memcgs, above the {HOST_MEMCG_CAP} the lab ever \
             takes a host to: lower --pods or --containers-per-pod",
            a.pods, a.containers_per_pod
        )));
    }

    let layout = CgroupLayout::discover(&host)?;
    let memory = memory_hierarchy(&host, &layout)?;
    require_root(|| {
        format!(
            "lab creates cgroups under {} and runs containers: it must run as root",
            memory.mount.mount_point.display()
        )
    })?;

    let kind = RuntimeKind::from(a.runtime);
    let runtime = Runtime::find(kind).ok_or_else(|| {
        Failure::runtime(format!(
            "{0} is neither on PATH nor in /usr/sbin or /usr/bin: install it (Debian: apt-get install {0})",
            kind.program()
        ))
    })?;
    let busybox = find_program("busybox", &["/bin", "/usr/bin"]).ok_or_else(|| {
        Failure::runtime(
            "busybox is neither on PATH nor in /bin: install a static one (Debian: apt-get install busybox-static)",
        )
    })?;
    match is_static_elf(&busybox) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::runtime(format!(
                "{} is not a statically linked executable, and the containers' root holds nothing else: install busybox-static",
                busybox.display()
            )))
        }
        Err(e) => return Err(Failure::runtime(format!("cannot read {}: {e}", busybox.display()))),
    }

    let state_dir = absolute(a.state_dir.clone().unwrap_or_else(|| default_state_dir(&host)))?;
    let data_dir = choose_data_dir(&state_dir, &fallback_data_dir(&host), a.state_dir.is_some())?;

    // SIGHUP too: a closed terminal must not leave containers running.
    let cancel = cancel_on(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP])?;
    let opts = LabOptions {
        pods: a.pods,
        containers_per_pod: a.containers_per_pod,
        pods_per_minute: a.pods_per_minute,
        duration: a.duration,
        page_cache_mib: a.page_cache_mib,
        keep_data_mib: a.keep_data_mib,
        orphan_every: a.orphan_every,
        runtime,
        busybox,
        state_dir,
        data_dir,
        scratch: scratch_name(),
        layout,
        memory,
        host: host.clone(),
        allow_kubelet: a.force,
        count_memcgs: census_counter(host),
        census_every: CENSUS_EVERY,
        cancel: Arc::clone(&cancel),
    };

    let mut ui = LabUi::new(&opts, &cancel);
    let result = run_lab(opts, &mut |p| ui.update(p));
    ui.finish();
    let report = result.map_err(lab_failure)?;

    print_report(g.output, &report, render_table)?;
    Ok(exit::lab(&report))
}

fn absolute(p: PathBuf) -> Result<PathBuf, Failure> {
    if p.is_absolute() {
        return Ok(p);
    }
    // Bundles name the rootfs and data by absolute path: the runtime runs them from elsewhere.
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| Failure::runtime(format!("cannot resolve the state dir: current directory: {e}")))
}

/// Page cache goes to `<state>/data` on a disk filesystem. /run is tmpfs on most hosts,
/// so the default state dir falls back to `fallback` for it; a --state-dir on tmpfs is refused.
fn choose_data_dir(state: &Path, fallback: &Path, state_given: bool) -> Result<PathBuf, Failure> {
    let statfs_failure = |p: &Path, e: std::io::Error| Failure::runtime(format!("statfs {}: {e}", p.display()));
    match memory_backed_fs(state).map_err(|e| statfs_failure(state, e))? {
        None => Ok(state.join("data")),
        Some(fs) if state_given => Err(Failure::usage(format!(
            "--state-dir {} is on {fs}: the containers' page cache must go to a disk filesystem \
             (tmpfs pages are shmem, which does not model a node's page cache); give a directory on disk",
            state.display()
        ))),
        Some(fs) => match memory_backed_fs(fallback).map_err(|e| statfs_failure(fallback, e))? {
            None => Ok(fallback.to_path_buf()),
            Some(fs2) => Err(Failure::runtime(format!(
                "{} is on {fs} and {} on {fs2}: give --state-dir on a disk filesystem",
                state.display(),
                fallback.display()
            ))),
        },
    }
}

fn lab_failure(e: LabError) -> Failure {
    match &e {
        LabError::KubeletRunning { .. } => Failure::runtime(format!("lab: {e}; add --force to run anyway")),
        LabError::OverCap(_) => Failure::runtime(format!("lab: {e}; lower --pods or --containers-per-pod")),
        LabError::NoSpace { .. } => Failure::runtime(format!(
            "lab: {e}; lower --keep-data-mib or --page-cache-mib, or give --state-dir elsewhere"
        )),
        LabError::AlreadyExists { .. } => Failure::runtime(format!("lab: {e}; give another --state-dir, or remove it")),
        LabError::DataOnMemoryFs { .. } => Failure::runtime(format!("lab: {e}; give --state-dir on a disk filesystem")),
        LabError::Invalid(_) => Failure::usage(format!("lab: {e}")),
        _ if e.is_permission() => Failure::not_permitted(format!("lab: {e} (run as root, on a writable cgroup mount)")),
        _ => Failure::runtime(format!("lab: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_actions::lab::budget::MemcgCount;

    #[test]
    fn the_5000_guard_on_flags_alone() {
        // The default lab: 4 + 20 x 3.
        assert_eq!(budget::lab_memcgs_max(20, 2, 0), 64);
        // 1665 pods of 3 memcgs + 4 = 4999 fits; 1666 does not.
        assert!(budget::lab_memcgs_max(1665, 2, 0) <= HOST_MEMCG_CAP);
        assert!(budget::lab_memcgs_max(1666, 2, 0) > HOST_MEMCG_CAP);
        // Orphans count: at most 100 kept when the lab runs until stopped.
        assert_eq!(budget::max_orphans(Some(1), budget::churn_deletions(30, None)), 100);
        assert_eq!(budget::lab_memcgs_max(1632, 2, 100), HOST_MEMCG_CAP);
        assert!(budget::lab_memcgs_max(1633, 2, 100) > HOST_MEMCG_CAP);
        assert_eq!(budget::check_cap(&MemcgCount { live: 30, dying: Some(34), dying_source: "x" }, 64), Ok(()));
    }

    #[test]
    fn data_goes_to_disk() {
        let disk = tempfile::tempdir().unwrap();
        if memory_backed_fs(disk.path()).unwrap().is_some() {
            return; // the temp dir itself is on tmpfs: nothing to tell apart here
        }
        let state = disk.path().join("state");
        assert_eq!(choose_data_dir(&state, Path::new("/nonexistent"), true).unwrap(), state.join("data"));
        if Path::new("/dev/shm").is_dir() {
            let shm = Path::new("/dev/shm/cgleak-lab-none");
            assert_eq!(choose_data_dir(shm, disk.path(), false).unwrap(), disk.path());
            assert_eq!(choose_data_dir(shm, disk.path(), true).unwrap_err().code, exit::USAGE);
            assert_eq!(choose_data_dir(shm, shm, false).unwrap_err().code, exit::RUNTIME);
        }
    }
}

//! The agent's periodic reclaim (`--reclaim-every`): `cgleak fix reclaim`'s plan and
//! journaled run, on a thread of its own, rate-limited with the fixer's drops in view, its
//! outcomes counted in the cgleak_reclaim_* metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use cgleak_actions::fix::failpoint::Failpoints;
use cgleak_actions::fix::reclaim::{self, ReclaimOptions, UnattendedReclaim};
use cgleak_actions::fix::FixHost;
use cgleak_model::census::{census_with, Census, CensusInputs};
use cgleak_model::era::SlabNaming;
use cgleak_readers::duration::human_duration;
use cgleak_readers::HostPaths;

use super::shared::{lock, now_unix, Shared};
use crate::exit::{census_failure, Failure};
use crate::metrics::{self, ReclaimTotals};
use crate::render::or_na;

/// How long the agent waits at exit for a reclaim run to stop.
const RECLAIM_STOP_WAIT: Duration = Duration::from_secs(5);

/// `--reclaim-slab`: whether v1 runs drop reclaimable slab too.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimSlab {
    Auto,
    Always,
    Never,
}

/// At the agent's exit: wait a little for the reclaim thread. A run stops between its steps;
/// one still busy (sync, or counting after a drop) is left: its journal is finished at the
/// next start.
pub fn wait_for(t: JoinHandle<()>) {
    let until = Instant::now() + RECLAIM_STOP_WAIT;
    while !t.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !t.is_finished() {
        eprintln!("cgleak: note: a reclaim was still running; its journal is finished at the next start");
    }
}

/// The agent's periodic reclaim (`--reclaim-every`): `cgleak fix reclaim`'s plan and journaled
/// run ([`reclaim::apply_unattended`]), with its journal, lock and stamp in
/// `<state-dir>/reclaim/`, apart from the fixer's state.
pub struct AgentReclaim {
    pub every: Duration,
    slab: ReclaimSlab,
    /// `<state-dir>/reclaim`.
    dir: PathBuf,
    /// Stamps of the fixer's drops the agent can see, honoured by its rate limit.
    peer_stamps: Vec<PathBuf>,
    failpoints: Failpoints,
}

/// Whether a v1 reclaim should drop slab too (`--reclaim-slab auto`): where slab objects pin
/// dying memcgs. Kernels before 5.9 charge slab to per-memcg caches that pin a deleted memcg
/// (5.9+ reparents it at offline through obj_cgroup: dropping it frees no memcg, facts §3);
/// where kmem accounting is opt-in (3.10, el7, 4.0-4.5) only once some memcg has it on.
fn slab_pins_dying(c: &Census) -> bool {
    if c.cgroup.memory_version != 1 || c.era.slab_naming == SlabNaming::None {
        return false;
    }
    !c.era.kmem_opt_in || c.memcg.kmem_active.is_some_and(|k| k > 0) || c.slab.summary.per_memcg_caches > 0
}

impl AgentReclaim {
    /// Check at start what a run needs (a writable drop_caches or memory.reclaim), not an hour
    /// later; its journal, lock and stamp go to `<state_dir>/reclaim/`.
    pub fn prepare(host: &HostPaths, state_dir: &Path, slab: ReclaimSlab, every: Duration) -> Result<AgentReclaim, Failure> {
        let failpoints = Failpoints::from_env().map_err(|e| Failure::usage(e.to_string()))?;
        let inputs = CensusInputs::read(host).map_err(census_failure)?;
        if inputs.memory.version == 2 && !inputs.era.has_memory_reclaim {
            return Err(Failure::usage(format!("--reclaim-every: cgroup v2 needs memory.reclaim (5.19+); {} has none", inputs.era.release.raw)));
        }
        let fh = Self::fix_host(host, &inputs, None);
        if let Err((file, e)) = reclaim::check_writable(&fh) {
            let denied = matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem);
            let msg = format!(
                "--reclaim-every: {} is not writable here ({e}): run as root; in a pod it needs a writable mount of it (the chart's reclaim.every)",
                file.display()
            );
            return Err(if denied { Failure::not_permitted(msg) } else { Failure::runtime(msg) });
        }
        // The fixer's stamps where this agent can see them (read only).
        let peer_stamps = reclaim::fixer_stamps(host, state_dir);
        Ok(AgentReclaim { every, slab, dir: state_dir.join(reclaim::AGENT_RECLAIM_DIR), peer_stamps, failpoints })
    }

    fn fix_host(host: &HostPaths, inputs: &CensusInputs, census: Option<&Census>) -> FixHost {
        FixHost {
            host: host.clone(),
            layout: inputs.layout.clone(),
            memory: inputs.memory.clone(),
            era: inputs.era.clone(),
            headroom: census.and_then(|c| c.memcg.headroom),
            dying: census.and_then(|c| c.memcg.dying),
            // A reclaim asks neither about the kubelet nor for the judge's report.
            kubelet: None,
            judgement: None,
        }
    }

    fn options(&self, c: &Census) -> ReclaimOptions {
        let slab = match self.slab {
            ReclaimSlab::Auto => slab_pins_dying(c),
            ReclaimSlab::Always => true,
            ReclaimSlab::Never => false,
        };
        ReclaimOptions {
            slab,
            min_interval: self.every,
            step_bytes: reclaim::DEFAULT_STEP_BYTES,
            max_rounds: reclaim::DEFAULT_MAX_ROUNDS,
            state_dir: self.dir.clone(),
            peer_stamps: self.peer_stamps.clone(),
        }
    }

    /// The reclaim's totals at start: when its last drop was.
    pub fn totals(&self) -> ReclaimTotals {
        ReclaimTotals { last_run_unix: reclaim::last_drop(&self.dir), ..ReclaimTotals::new() }
    }

    /// Run on a thread of its own (said on stderr) until `stop`.
    pub fn start(self, host: &HostPaths, shared: &Arc<Mutex<Shared>>, stop: &Arc<AtomicBool>) -> Result<JoinHandle<()>, Failure> {
        eprintln!(
            "cgleak: reclaim every {} (journal, lock and stamp in {}; --reclaim-slab {})",
            human_duration(self.every),
            self.dir.display(),
            self.slab.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
        );
        let (h, sh, st) = (host.clone(), Arc::clone(shared), Arc::clone(stop));
        let spawned = std::thread::Builder::new().name("cgleak-reclaim".into()).spawn(move || self.run(&h, &sh, &st));
        spawned.map_err(|e| Failure::runtime(format!("--reclaim-every: starting its thread: {e}")))
    }

    /// The first run at start (the rate limit refuses it when the last drop is recent), then
    /// one whenever the rate limit allows the next, at most every `--reclaim-every`.
    fn run(&self, host: &HostPaths, shared: &Mutex<Shared>, stop: &AtomicBool) {
        let mut next_at = now_unix();
        while !stop.load(Ordering::Relaxed) {
            if now_unix() >= next_at {
                next_at = self.once(host, shared, stop);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One run; returns when the next is due.
    fn once(&self, host: &HostPaths, shared: &Mutex<Shared>, stop: &AtomicBool) -> f64 {
        let every = self.every.as_secs_f64();
        let record = |outcome: &'static str, memcgs: u64, slab_ids: u64| {
            let mut s = lock(shared);
            let t = s.reclaim.get_or_insert_with(ReclaimTotals::new);
            *t.runs.entry(outcome).or_default() += 1;
            t.released_memcgs += memcgs;
            t.released_dead_slab_ids += slab_ids;
            t.last_run_unix = reclaim::last_drop(&self.dir).or(t.last_run_unix);
        };
        let census = CensusInputs::read(host).and_then(|i| census_with(host, i.clone()).map(|c| (i, c)));
        let (inputs, before) = match census {
            Ok(x) => x,
            Err(e) => {
                eprintln!("cgleak: reclaim: failed: census: {e}");
                record("failed", 0, 0);
                return now_unix() + every;
            }
        };
        let o = self.options(&before);
        let fh = Self::fix_host(host, &inputs, Some(&before));
        let mut count_dying = || census_with(host, inputs.clone()).ok().and_then(|c| c.memcg.dying);
        let result = reclaim::apply_unattended(&fh, &o, self.failpoints, stop, &mut count_dying);
        let outcome = match result {
            Err(e) => {
                eprintln!("cgleak: reclaim: failed: {e}");
                record("failed", 0, 0);
                "failed"
            }
            Ok(UnattendedReclaim::NothingToDo(why)) => {
                record("nothing_to_do", 0, 0);
                eprintln!("cgleak: reclaim: nothing to do: {why}");
                "nothing_to_do"
            }
            Ok(UnattendedReclaim::Refused(why)) => {
                record("refused", 0, 0);
                eprintln!("cgleak: reclaim: refused: {why}");
                "refused"
            }
            Ok(UnattendedReclaim::Applied { report, resumed }) => {
                let outcome = match (report.outcome, &report.error) {
                    (Some(cgleak_actions::fix::journal::Outcome::Completed), None) => "completed",
                    // Stopped between steps because the agent is stopping: not a run that failed.
                    _ if report.interrupted => "",
                    _ => "failed",
                };
                let released: u64 =
                    report.details["steps"].as_array().map(|st| st.iter().filter_map(|s| s["released"].as_i64()).map(|r| r.max(0) as u64).sum()).unwrap_or(0);
                let (slab_line, slab_released) = self.slab_after(host, &inputs, &before);
                if !outcome.is_empty() {
                    record(outcome, released, slab_released);
                }
                let what = if before.memcg.dying.is_some() {
                    format!("{released} dying memcgs released")
                } else {
                    format!("dying memcgs cannot be counted on {}: {slab_line}", before.kernel.era)
                };
                let resumed = if resumed { " (an unfinished run, resumed)" } else { "" };
                let error = report.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                eprintln!("cgleak: reclaim: {}{resumed}: {what}; journal {}{error}", if outcome.is_empty() { "stopped" } else { outcome }, report.journal);
                outcome
            }
        };
        let now = now_unix();
        // Next: when the rate limit (own and peer stamps) allows it; at least an interval on.
        let allowed = reclaim::rate_limit(&o).next_allowed;
        match outcome {
            "refused" => allowed.filter(|t| *t > now).unwrap_or(now + every),
            _ => allowed.unwrap_or(0.0).max(now + every),
        }
    }

    /// What can be compared where dying memcgs cannot be counted (3.10): IDs in use (a lower
    /// bound) and the dead slab IDs before and after, once they hold still (caches of freed
    /// memcgs go asynchronously). Returns the line and the dead slab IDs that went.
    fn slab_after(&self, host: &HostPaths, inputs: &CensusInputs, before: &Census) -> (String, u64) {
        let Some(slab_before) = metrics::dead_slab_ids(before) else {
            let after = census_with(host, inputs.clone()).ok().and_then(|c| c.memcg.ids_in_use);
            return (format!("IDs in use at least {} -> {}", or_na(before.memcg.ids_in_use), or_na(after)), 0);
        };
        let mut ids_after = None;
        let slab_after = reclaim::settled(&mut || {
            let c = census_with(host, inputs.clone()).ok()?;
            ids_after = c.memcg.ids_in_use;
            metrics::dead_slab_ids(&c)
        });
        let line = format!("IDs in use at least {} -> {}, dead slab IDs {slab_before} -> {}", or_na(before.memcg.ids_in_use), or_na(ids_after), or_na(slab_after));
        (line, slab_after.map_or(0, |a| slab_before.saturating_sub(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::census_of;

    #[test]
    fn slab_is_dropped_where_it_pins_dying_memcgs() {
        // 3.10-el7 with kmem accounting on in the pods: slab pins the leaked memcgs.
        assert!(slab_pins_dying(&census_of(&cgleak_fixtures::centos7_957_kmem())));
        // 4.4 (per-memcg caches, kmem on): yes.
        assert!(slab_pins_dying(&census_of(&cgleak_fixtures::linux_4_4_v1())));
        // el7 with nokmem: no memcg has kmem on, no per-memcg cache.
        assert!(!slab_pins_dying(&census_of(&cgleak_fixtures::rhel7_1160_nokmem())));
        // 5.9+ reparents slab at offline: dropping it frees no memcg.
        assert!(!slab_pins_dying(&census_of(&cgleak_fixtures::debian_6_12_v2_dying_subsys())));
        assert!(!slab_pins_dying(&census_of(&cgleak_fixtures::debian_5_10_hybrid())));
    }
}

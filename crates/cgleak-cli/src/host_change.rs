//! What the commands that change the host (probe, lab, fix) share: their preconditions (a
//! memory controller, root) and the cancel flag set by signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cgleak_readers::mountinfo::{CgroupLayout, MemoryHierarchy};
use cgleak_readers::HostPaths;

use crate::exit::Failure;

/// The memory hierarchy of `layout`, or a failure saying none was found.
pub fn memory_hierarchy(host: &HostPaths, layout: &CgroupLayout) -> Result<MemoryHierarchy, Failure> {
    layout.memory_checked()?.ok_or_else(|| {
        Failure::runtime(format!(
            "no memory cgroup controller found in {} (neither a v1 memory hierarchy nor memory in the cgroup2 root's cgroup.controllers)",
            host.host("/proc/self/mountinfo").display()
        ))
    })
}

/// Refuses to go on unless running as root; `why` says what needs it ("... must run as root").
pub fn require_root(why: impl FnOnce() -> String) -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Failure::not_permitted(format!("{} (euid is {euid})", why())));
    }
    Ok(())
}

/// A flag that each of `signals` sets, so the command can clean up before it stops.
pub fn cancel_on(signals: &[i32]) -> Result<Arc<AtomicBool>, Failure> {
    let cancel = Arc::new(AtomicBool::new(false));
    for &signal in signals {
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .map_err(|e| Failure::runtime(format!("cannot install a handler for signal {signal}: {e}")))?;
    }
    Ok(cancel)
}

/// Watches the cancel flag for a progress display, which says "stopping" once.
pub struct CancelWatch<'a> {
    cancel: &'a AtomicBool,
    told: bool,
}

impl<'a> CancelWatch<'a> {
    pub fn new(cancel: &'a AtomicBool) -> Self {
        CancelWatch { cancel, told: false }
    }

    /// True the first time it is called after the flag was set, false ever after.
    pub fn newly_cancelled(&mut self) -> bool {
        if !self.told && self.cancel.load(Ordering::Relaxed) {
            self.told = true;
            return true;
        }
        false
    }
}

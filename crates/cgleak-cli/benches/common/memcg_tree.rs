//! A scratch kubelet-style memcg tree for benches (`cgleak-bench-<pid>/kubepods/...` under
//! the v1 memory hierarchy), removed on drop, on panic (a panic hook: the release profile
//! aborts) and never larger than [`MAX_BENCH_MEMCGS`] (docs/kernel-facts.md section 7).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use cgleak_actions::cgroup_tree::{remove_tree_deepest_first, WhenBusy};
use cgleak_readers::mountinfo::CgroupLayout;
use cgleak_readers::{procfs, HostPaths};

use super::check_cancel;

/// Memcgs a benchmark may build on this host: never more.
pub const MAX_BENCH_MEMCGS: u64 = 30_000;
/// Memcgs other work on this host may hold besides the benchmark's.
pub const OTHER_MEMCGS_ALLOWANCE: u64 = 5_000;
/// Scratch parent, kubepods and the burstable and besteffort QoS directories.
pub const FIXED_DIRS: u64 = 4;
pub const CONTAINERS_PER_POD: u64 = 3;

/// The tree to remove if the bench panics (the panic hook reads it).
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);
/// What cleanup messages start with (see [`install_cleanup_panic_hook`]).
static LABEL: OnceLock<&'static str> = OnceLock::new();

fn label() -> &'static str {
    LABEL.get().copied().unwrap_or("bench")
}

/// The v1 memory hierarchy of `/`: (mount point, local path).
pub fn v1_memory_mount() -> Result<(PathBuf, PathBuf), String> {
    let host = HostPaths::new("/");
    let memory = CgroupLayout::discover(&host).map_err(|e| e.to_string())?.memory().ok_or("no memory cgroup controller is mounted")?;
    if memory.version != 1 {
        return Err(format!("the memory controller is on cgroup v{}: this bench builds a v1 kubelet tree", memory.version));
    }
    Ok((memory.mount.mount_point.clone(), memory.mount.local.clone()))
}

/// The local path of the v1 memory hierarchy of `/`.
pub fn v1_memory_root() -> Result<PathBuf, String> {
    v1_memory_mount().map(|(_, local)| local)
}

/// /proc/cgroups num_cgroups of the v1 memory row (live and dying).
pub fn memory_num_cgroups() -> Result<u64, String> {
    let rows = procfs::read_proc_cgroups(&HostPaths::new("/")).map_err(|e| e.to_string())?;
    rows.iter()
        .find(|r| r.subsys == "memory" && r.hierarchy != 0)
        .map(|r| r.num_cgroups)
        .ok_or_else(|| "/proc/cgroups has no v1 memory row".to_string())
}

/// Refuse `memcgs` when it passes the cap, or when the host would then pass the cap plus
/// what others may hold.
pub fn check_room(memcgs: u64) -> Result<(), String> {
    if memcgs > MAX_BENCH_MEMCGS {
        return Err(format!("refusing to build {memcgs} memcgs: at most {MAX_BENCH_MEMCGS} on this host"));
    }
    if memcgs < FIXED_DIRS + 1 + CONTAINERS_PER_POD {
        return Err(format!("{memcgs} memcgs: at least {} are needed for one pod", FIXED_DIRS + 1 + CONTAINERS_PER_POD));
    }
    let before = memory_num_cgroups()?;
    if before + memcgs > MAX_BENCH_MEMCGS + OTHER_MEMCGS_ALLOWANCE {
        return Err(format!(
            "/proc/cgroups already counts {before} memory cgroups (dying included): with {memcgs} more the host would pass {}",
            MAX_BENCH_MEMCGS + OTHER_MEMCGS_ALLOWANCE
        ));
    }
    Ok(())
}

/// `root/kubepods/{pod<uid>,burstable/pod<uid>,besteffort/pod<uid>}/<64-hex id>`, exactly
/// `memcgs` directories with `root` and the QoS directories; removed when dropped.
pub struct KubeletTree {
    pub root: PathBuf,
    /// In creation order, parents before children.
    pub created: Vec<PathBuf>,
    pub pods: u64,
    pub containers: u64,
}

impl KubeletTree {
    pub fn build(root: &Path, memcgs: u64, cancel: &AtomicBool, progress: &dyn Fn(usize)) -> Result<KubeletTree, String> {
        if !(FIXED_DIRS + 1..=MAX_BENCH_MEMCGS).contains(&memcgs) {
            return Err(format!("{memcgs} memcgs: must be {}..={MAX_BENCH_MEMCGS}", FIXED_DIRS + 1));
        }
        // create_dir (not _all): an existing directory is not ours and is never touched.
        fs::create_dir(root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        *SCRATCH.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.to_path_buf());
        let mut tree = KubeletTree { root: root.to_path_buf(), created: vec![root.to_path_buf()], pods: 0, containers: 0 };
        let kubepods = root.join("kubepods");
        let qos = [kubepods.clone(), kubepods.join("burstable"), kubepods.join("besteffort")];
        for d in &qos {
            tree.mkdir(d)?;
        }
        let seed = mix(std::process::id() as u64);
        let mut pod = 0u64;
        while (tree.created.len() as u64) < memcgs {
            check_cancel(cancel)?;
            let p = qos[(pod % 3) as usize].join(format!("pod{}", pod_uid(seed, pod)));
            tree.mkdir(&p)?;
            tree.pods += 1;
            for c in 0..CONTAINERS_PER_POD {
                if tree.created.len() as u64 >= memcgs {
                    break;
                }
                let id: String = (0..4).map(|k| format!("{:016x}", mix(seed ^ (pod << 8) ^ (c << 2) ^ k))).collect();
                tree.mkdir(&p.join(id))?;
                tree.containers += 1;
            }
            pod += 1;
            if pod.is_multiple_of(2000) {
                progress(tree.created.len());
            }
        }
        Ok(tree)
    }

    fn mkdir(&mut self, p: &Path) -> Result<(), String> {
        if self.created.len() as u64 >= MAX_BENCH_MEMCGS {
            return Err(format!("refusing to create {}: {MAX_BENCH_MEMCGS} memcgs already built", p.display()));
        }
        fs::create_dir(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        self.created.push(p.to_path_buf());
        Ok(())
    }
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        remove_tree(&self.root);
        *SCRATCH.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Remove a cgroup subtree with cgleak's own removal (deepest first, EBUSY waited out,
/// rmdir only on cgroupfs). Errors are reported.
pub fn remove_tree(root: &Path) {
    for line in remove_tree_deepest_first(root, WhenBusy::Wait).leftover_lines() {
        eprintln!("{}: could not remove {line}", label());
    }
}

/// The release profile aborts on panic, so Drop would not run: the hook removes the tree.
/// `name` starts the cleanup messages (the bench's name).
pub fn install_cleanup_panic_hook(name: &'static str) {
    let _ = LABEL.set(name);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let scratch = SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(root) = scratch {
            eprintln!("{}: panic: removing {}", label(), root.display());
            remove_tree(&root);
        }
    }));
}

/// A UUID-shaped pod UID, as the kubelet names pod cgroups.
fn pod_uid(seed: u64, pod: u64) -> String {
    let a = mix(seed ^ (pod << 8) ^ 1);
    let b = mix(a);
    format!("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, 0x8000 | ((b >> 48) & 0x3fff), b & 0xffff_ffff_ffff)
}

/// splitmix64: deterministic ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! The simulated node: its cgroup tree, its state directory, its pods and their
//! containers, and the teardown that removes all of it.
//!
//! Everything the lab makes is registered before it is made (a container id before
//! its `run`, a pod before its first container), so a teardown after a failure or a
//! panic half-way finds it. Teardown removes only what the lab claimed: the scratch
//! parent, which did not exist in any hierarchy when the lab started, and directories
//! it created (or was handed empty).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use cgleak_model::kubepods::QosClass;

use crate::cgroup_tree::{remove_cgroup, remove_tree_deepest_first, WhenBusy};
use cgleak_readers::cgroupfs;
use super::budget::MAX_ORPHANS_KEPT;
use super::rootfs::build_busybox_rootfs;
use super::runtime::{write_bundle, ContainerSpec, Runtime, RuntimeCalls};
use super::{setup, LabError, LabProgress};

const MIB: u64 = 1 << 20;

/// Containers deleted at once during teardown.
const TEARDOWN_BATCH: usize = 8;

/// Where the lab keeps its things, as the host names them (the lab runs on `/`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabPaths {
    /// The scratch parent in the memory hierarchy: the simulated kubelet's --cgroup-root.
    pub scratch_parent: String,
    /// `<scratch parent>/kubepods`.
    pub kubepods: String,
    pub state_dir: String,
    /// The simulated kubelet's --root-dir: `pods/<uid>` exists for each live pod.
    pub kubelet_root_dir: String,
    /// Per-container directories bind-mounted at /data (on a disk filesystem).
    pub data_dir: String,
    /// The runtime's --root.
    pub runtime_root: String,
}

/// What teardown achieved.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TeardownReport {
    /// Containers deleted (running or not).
    pub containers_removed: u32,
    /// Cgroup directories removed, over all hierarchies.
    pub cgroups_removed: u64,
    /// Hierarchies in which the scratch parent existed.
    pub hierarchies: u32,
    /// Processes SIGKILLed because they were still in the lab's cgroups after their
    /// containers were deleted (all started by the lab's runtime).
    pub processes_killed: u32,
    pub state_dir_removed: bool,
    pub data_dir_removed: bool,
    /// What could not be removed: cgroup paths, directories, `container <id>`.
    pub leftover: Vec<String>,
}

/// A pod of the lab.
#[derive(Debug, Clone)]
pub(crate) struct LabPod {
    pub uid: String,
    /// `<scratch>/kubepods[/<qos>]/pod<uid>`, the same below every hierarchy's root.
    pub cgroup: PathBuf,
    /// Container ids (also their cgroup names and runtime ids).
    pub containers: Vec<String>,
}

/// Fixed settings of the node.
pub(crate) struct NodeSettings {
    pub runtime: Runtime,
    pub scratch: String,
    /// Local path of every hierarchy's root; the memory one first.
    pub hierarchies: Vec<PathBuf>,
    pub memory_host: PathBuf,
    pub memory_version: u8,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    pub containers_per_pod: u32,
    pub page_cache_mib: u32,
    pub keep_data_mib: u64,
}

pub(crate) struct Node {
    s: NodeSettings,
    pods: VecDeque<LabPod>,
    orphans: VecDeque<LabPod>,
    /// Data of deleted pods, oldest first, with its size: its page cache is what keeps
    /// their memcgs dying. Removing it lets them go.
    retained: VecDeque<(PathBuf, u64)>,
    retained_bytes: u64,
    /// Containers whose delete failed during churn: teardown tries again.
    stray: Vec<String>,
    seq: u64,
    rng: u64,
    /// The scratch parent existed in no hierarchy when the lab started: it is ours.
    claimed_scratch: bool,
    /// We may remove the state dir's contents (we made it, or it was empty) ...
    state_dir_ours: bool,
    /// ... and the state dir itself (we made it).
    made_state_dir: bool,
    made_data_dir: bool,
    torn_down: bool,
    pub warnings: Vec<String>,
}

impl Node {
    pub fn new(s: NodeSettings, seed: u64) -> Node {
        Node {
            s,
            pods: VecDeque::new(),
            orphans: VecDeque::new(),
            retained: VecDeque::new(),
            retained_bytes: 0,
            stray: Vec::new(),
            seq: 0,
            rng: seed,
            claimed_scratch: false,
            state_dir_ours: false,
            made_state_dir: false,
            made_data_dir: false,
            torn_down: false,
            warnings: Vec::new(),
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.s.state_dir.join("rootfs")
    }
    fn bundles(&self) -> PathBuf {
        self.s.state_dir.join("bundles")
    }
    fn kubelet_root(&self) -> PathBuf {
        self.s.state_dir.join("kubelet")
    }
    fn kubelet_pod_dir(&self, uid: &str) -> PathBuf {
        self.kubelet_root().join("pods").join(uid)
    }
    /// `<state>/runc` (or `crun`): the runtime's --root, where it lists only the lab's containers.
    fn runtime_root(&self) -> PathBuf {
        self.s.state_dir.join(self.s.runtime.kind.program())
    }
    fn data_inside_state(&self) -> bool {
        self.s.data_dir.starts_with(&self.s.state_dir)
    }
    fn memory_root(&self) -> &Path {
        &self.s.hierarchies[0]
    }
    fn calls(&self) -> (Runtime, PathBuf) {
        (self.s.runtime.clone(), self.runtime_root())
    }

    pub fn paths(&self) -> LabPaths {
        let scratch = self.s.memory_host.join(&self.s.scratch);
        LabPaths {
            scratch_parent: scratch.display().to_string(),
            kubepods: scratch.join("kubepods").display().to_string(),
            state_dir: self.s.state_dir.display().to_string(),
            kubelet_root_dir: self.kubelet_root().display().to_string(),
            data_dir: self.s.data_dir.display().to_string(),
            runtime_root: self.runtime_root().display().to_string(),
        }
    }

    pub fn pods_live(&self) -> u32 {
        self.pods.len() as u32
    }
    pub fn containers_live(&self) -> u32 {
        self.pods.iter().map(|p| p.containers.len() as u32).sum()
    }
    pub fn orphans_kept(&self) -> u32 {
        self.orphans.len() as u32
    }
    /// Deleted pods whose data (and so, likely, dying memcgs) is kept.
    pub fn retained_pods(&self) -> u64 {
        self.retained.len() as u64
    }

    /// Check that nothing of ours exists yet and take the names: the scratch parent in
    /// every hierarchy, the state dir (absent or empty), the data dir (absent).
    pub fn claim(&mut self) -> Result<(), LabError> {
        for h in &self.s.hierarchies {
            let p = h.join(&self.s.scratch);
            if p.exists() {
                return Err(LabError::AlreadyExists { path: p, what: "the lab's scratch cgroup" });
            }
        }
        self.claimed_scratch = true;
        match fs::read_dir(&self.s.state_dir) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(LabError::AlreadyExists {
                        path: self.s.state_dir.clone(),
                        what: "a non-empty state directory",
                    });
                }
                self.state_dir_ours = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&self.s.state_dir)
                    .map_err(|e| setup(format!("mkdir {}", self.s.state_dir.display()), e))?;
                self.made_state_dir = true;
                self.state_dir_ours = true;
            }
            Err(e) => return Err(setup(format!("read {}", self.s.state_dir.display()), e)),
        }
        if !self.data_inside_state() {
            if self.s.data_dir.exists() {
                return Err(LabError::AlreadyExists {
                    path: self.s.data_dir.clone(),
                    what: "the lab's data directory",
                });
            }
            fs::create_dir(&self.s.data_dir).map_err(|e| setup(format!("mkdir {}", self.s.data_dir.display()), e))?;
            self.made_data_dir = true;
        }
        Ok(())
    }

    /// The state dir's contents, the rootfs, and the tree down to the QoS cgroups in the
    /// memory hierarchy (the runtime makes the rest, in every hierarchy it uses).
    pub fn set_up(&mut self, busybox: &Path) -> Result<(), LabError> {
        let dirs = [self.bundles(), self.kubelet_root().join("pods"), self.runtime_root()];
        for d in dirs.iter().chain(self.data_inside_state().then_some(&self.s.data_dir)) {
            fs::create_dir_all(d).map_err(|e| setup(format!("mkdir {}", d.display()), e))?;
        }
        let rootfs = self.rootfs();
        build_busybox_rootfs(&rootfs, busybox)
            .map_err(|e| setup(format!("busybox root filesystem in {}", rootfs.display()), e))?;
        let top = self.memory_root().join(&self.s.scratch);
        for d in [top.clone(), top.join("kubepods"), top.join("kubepods/burstable"), top.join("kubepods/besteffort")] {
            cgroupfs::create_dir(&d).map_err(|e| setup(format!("mkdir {}", d.display()), e))?;
            // cgroup v2: a child gets a memcg only where its parent enables memory
            // (docs/kernel-facts.md section 7). The QoS cgroups' pods are made by the runtime,
            // which enables the controllers along the path it creates.
            if self.s.memory_version == 2 {
                let f = d.join("cgroup.subtree_control");
                write_existing(&f, "+memory").map_err(|e| setup(format!("write +memory to {}", f.display()), e))?;
            }
        }
        Ok(())
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64: ids need only be distinct, not secret.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A version-4 UUID, as the API server gives pods.
    fn new_uid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// 64 hex digits, as containerd and CRI-O name containers.
    fn new_container_id(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next_u64())).collect()
    }

    /// Pods go round the QoS classes: guaranteed (`kubepods/pod<uid>`), burstable, besteffort.
    fn next_qos(&mut self) -> QosClass {
        let q = [QosClass::Guaranteed, QosClass::Burstable, QosClass::Besteffort][(self.seq % 3) as usize];
        self.seq += 1;
        q
    }

    /// A new pod: its kubelet dir, then its containers, started all at once.
    pub fn create_pod(&mut self) -> Result<(), String> {
        let qos = self.next_qos();
        let uid = self.new_uid();
        let mut cgroup = Path::new(&self.s.scratch).join("kubepods");
        if qos != QosClass::Guaranteed {
            cgroup.push(qos.as_str());
        }
        cgroup.push(format!("pod{uid}"));
        let kubelet_dir = self.kubelet_pod_dir(&uid);
        fs::create_dir(&kubelet_dir).map_err(|e| format!("mkdir {}: {e}", kubelet_dir.display()))?;
        self.pods.push_back(LabPod { uid: uid.clone(), cgroup: cgroup.clone(), containers: Vec::new() });

        let mut batch = Vec::new();
        for _ in 0..self.s.containers_per_pod {
            let id = self.new_container_id();
            let bundle = self.bundles().join(&id);
            let data = self.s.data_dir.join(&uid).join(&id);
            let cgroups_path = format!("/{}/{id}", cgroup.display());
            let hostname = format!("lab-{}", &uid[..8]);
            let spec = ContainerSpec {
                rootfs: &self.rootfs(),
                data: &data,
                cgroups_path: &cgroups_path,
                hostname: &hostname,
                page_cache_mib: self.s.page_cache_mib,
            };
            fs::create_dir(&bundle).map_err(|e| format!("mkdir {}: {e}", bundle.display()))?;
            fs::create_dir_all(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
            write_bundle(&bundle, &spec).map_err(|e| format!("write {}/config.json: {e}", bundle.display()))?;
            if let Some(p) = self.pods.back_mut() {
                p.containers.push(id.clone());
            }
            batch.push((bundle, id));
        }
        let (runtime, root) = self.calls();
        let calls = RuntimeCalls { runtime: &runtime, root: &root };
        let results = calls.run_detached(&batch);
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Delete the oldest pod as a kubelet would: its containers, then its cgroup in
    /// every hierarchy (unless `orphan`: then the cgroup stays, taskless), then its
    /// kubelet dir. Its data stays (up to the data budget) and keeps its memcgs dying.
    /// Failures become warnings: teardown tries again.
    pub fn delete_oldest_pod(&mut self, orphan: bool) -> bool {
        let Some(pod) = self.pods.pop_front() else { return false };
        let (runtime, root) = self.calls();
        let calls = RuntimeCalls { runtime: &runtime, root: &root };
        for (id, r) in pod.containers.iter().zip(calls.delete_force(&pod.containers)) {
            match r {
                Ok(()) => {
                    let _ = fs::remove_dir_all(self.bundles().join(id));
                }
                Err(e) => {
                    self.warnings.push(e);
                    self.stray.push(id.clone());
                }
            }
        }
        if orphan {
            self.orphans.push_back(LabPod { containers: Vec::new(), ..pod.clone() });
            while self.orphans.len() > MAX_ORPHANS_KEPT as usize {
                if let Some(old) = self.orphans.pop_front() {
                    self.remove_pod_cgroup(&old.cgroup);
                }
            }
        } else {
            // Before the kubelet dir goes: `cgleak status` never sees a live pod as an orphan.
            self.remove_pod_cgroup(&pod.cgroup);
        }
        let kubelet_dir = self.kubelet_pod_dir(&pod.uid);
        if let Err(e) = fs::remove_dir_all(&kubelet_dir) {
            self.warnings.push(format!("rm -r {}: {e}", kubelet_dir.display()));
        }
        if self.s.page_cache_mib > 0 {
            let bytes = u64::from(self.s.page_cache_mib) * MIB * pod.containers.len() as u64;
            self.retained.push_back((self.s.data_dir.join(&pod.uid), bytes));
            self.retained_bytes += bytes;
            while self.retained_bytes > self.s.keep_data_mib * MIB && self.release_oldest_data() {}
        } else {
            let _ = fs::remove_dir_all(self.s.data_dir.join(&pod.uid));
        }
        true
    }

    /// Remove the data of the oldest deleted pod: its page cache goes, and its memcgs
    /// can be freed. False when no data is kept.
    pub fn release_oldest_data(&mut self) -> bool {
        let Some((dir, bytes)) = self.retained.pop_front() else { return false };
        self.retained_bytes = self.retained_bytes.saturating_sub(bytes);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != io::ErrorKind::NotFound {
                self.warnings.push(format!("rm -r {}: {e}", dir.display()));
            }
        }
        true
    }

    fn remove_pod_cgroup(&mut self, rel: &Path) {
        for h in self.s.hierarchies.clone() {
            let p = h.join(rel);
            if let Err(e) = remove_cgroup(&p) {
                self.warnings.push(format!("rmdir {}: {e}", p.display()));
            }
        }
    }

    /// Delete every container, remove the scratch parent from every hierarchy (deepest
    /// first), then the data and state directories. Safe to call after a partial set-up;
    /// once it has run to its end, later calls do nothing. Each step can be done again, so
    /// if `progress` panics half-way, Drop finishes the job (the runtime still lists the
    /// containers not yet deleted).
    pub fn tear_down(&mut self, progress: &mut dyn FnMut(LabProgress)) -> TeardownReport {
        let mut r = TeardownReport::default();
        if self.torn_down {
            return r;
        }

        let (runtime, root) = self.calls();
        let calls = RuntimeCalls { runtime: &runtime, root: &root };
        let mut ids: Vec<String> = self.pods.iter().flat_map(|p| p.containers.iter().cloned()).collect();
        ids.append(&mut self.stray);
        // Whatever the runtime knows in our state dir is ours too (a run cut short, say).
        match calls.list() {
            Ok(listed) => ids.extend(listed),
            Err(e) => self.warnings.push(e),
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        self.pods.clear();
        let total = ids.len() as u32;
        progress(LabProgress::TearingDown { done: 0, total });
        for (n, chunk) in ids.chunks(TEARDOWN_BATCH).enumerate() {
            // Errors of kill are expected for stopped or half-created containers.
            let _ = calls.kill_all(chunk);
            for (id, res) in chunk.iter().zip(calls.delete_force(chunk)) {
                match res {
                    Ok(()) => r.containers_removed += 1,
                    Err(e) => {
                        self.warnings.push(e);
                        r.leftover.push(format!("container {id}"));
                    }
                }
            }
            progress(LabProgress::TearingDown { done: ((n + 1) * TEARDOWN_BATCH).min(ids.len()) as u32, total });
        }
        // Containers that failed to delete but are gone all the same (a concurrent exit).
        if !r.leftover.is_empty() {
            if let Ok(listed) = calls.list() {
                r.leftover.retain(|l| listed.iter().any(|id| l.ends_with(id.as_str())));
            }
        }
        self.orphans.clear();

        if self.claimed_scratch {
            for h in &self.s.hierarchies {
                let top = h.join(&self.s.scratch);
                if !top.exists() {
                    continue;
                }
                r.hierarchies += 1;
                // Only the lab's runtime put tasks below the lab's scratch parent: a cgroup
                // that stays busy (a container whose delete failed) has them killed.
                let removal = remove_tree_deepest_first(&top, WhenBusy::KillTasks);
                r.cgroups_removed += removal.removed;
                r.processes_killed += removal.killed;
                r.leftover.extend(removal.leftover.into_iter().map(|(p, _)| p.display().to_string()));
            }
        }

        self.retained.clear();
        if self.made_data_dir {
            match fs::remove_dir_all(&self.s.data_dir) {
                Ok(()) => r.data_dir_removed = true,
                Err(e) => {
                    self.warnings.push(format!("rm -r {}: {e}", self.s.data_dir.display()));
                    r.leftover.push(self.s.data_dir.display().to_string());
                }
            }
        }
        if self.state_dir_ours {
            let res =
                if self.made_state_dir { fs::remove_dir_all(&self.s.state_dir) } else { empty_dir(&self.s.state_dir) };
            match res {
                Ok(()) => r.state_dir_removed = true,
                Err(e) => {
                    self.warnings.push(format!("rm -r {}: {e}", self.s.state_dir.display()));
                    r.leftover.push(self.s.state_dir.display().to_string());
                }
            }
            if self.data_inside_state() {
                r.data_dir_removed = r.state_dir_removed;
            }
        }
        self.torn_down = true;
        r
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A panic or an early return: take everything down, quietly.
        self.tear_down(&mut |_| {});
    }
}

/// Write to a file that must exist (a cgroup control file); never create one.
fn write_existing(path: &Path, value: &str) -> io::Result<()> {
    cgroupfs::write_file(path, value.as_bytes())
}

/// Remove what is in `dir`, not `dir` itself.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_in(dir: &Path) -> Node {
        cgleak_readers::beneath::register_fixture_root(dir);
        let h = dir.join("memory");
        fs::create_dir_all(&h).unwrap();
        Node::new(
            NodeSettings {
                runtime: Runtime {
                    kind: super::super::runtime::RuntimeKind::Runc,
                    path: PathBuf::from("/nonexistent/runc"),
                },
                scratch: "cgleak-lab-1".into(),
                hierarchies: vec![h],
                memory_host: PathBuf::from("/sys/fs/cgroup/memory"),
                memory_version: 1,
                state_dir: dir.join("state"),
                data_dir: dir.join("state/data"),
                containers_per_pod: 2,
                page_cache_mib: 4,
                keep_data_mib: 8,
            },
            42,
        )
    }

    #[test]
    fn ids_look_like_the_kubelets() {
        let t = tempfile::tempdir().unwrap();
        let mut n = node_in(t.path());
        let uid = n.new_uid();
        let parts: Vec<&str> = uid.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{uid}");
        assert!(parts[2].starts_with('4'), "{uid}");
        assert!(matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b')), "{uid}");
        let id = n.new_container_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        assert_ne!(n.new_container_id(), id);
        let q: Vec<QosClass> = (0..4).map(|_| n.next_qos()).collect();
        assert_eq!(q, [QosClass::Guaranteed, QosClass::Burstable, QosClass::Besteffort, QosClass::Guaranteed]);
        n.torn_down = true;
    }

    #[test]
    fn claim_refuses_what_exists_and_teardown_leaves_it() {
        let t = tempfile::tempdir().unwrap();
        let mut n = node_in(t.path());
        fs::create_dir(t.path().join("memory/cgleak-lab-1")).unwrap();
        assert!(matches!(n.claim(), Err(LabError::AlreadyExists { .. })));
        drop(n);
        assert!(t.path().join("memory/cgleak-lab-1").is_dir(), "teardown removed a scratch parent it did not claim");

        fs::remove_dir(t.path().join("memory/cgleak-lab-1")).unwrap();
        fs::create_dir(t.path().join("state")).unwrap();
        fs::write(t.path().join("state/precious"), "").unwrap();
        let mut n = node_in(t.path());
        assert!(matches!(n.claim(), Err(LabError::AlreadyExists { .. })));
        drop(n);
        assert!(t.path().join("state/precious").exists(), "teardown touched a state dir it did not claim");
    }

    #[test]
    fn an_empty_state_dir_is_used_and_emptied_not_removed() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("state")).unwrap();
        let busybox = t.path().join("busybox");
        fs::write(&busybox, "").unwrap();
        let mut n = node_in(t.path());
        n.claim().unwrap();
        n.set_up(&busybox).unwrap();
        assert!(t.path().join("memory/cgleak-lab-1/kubepods/besteffort").is_dir());
        assert!(t.path().join("state/rootfs/bin/busybox").exists());
        let r = n.tear_down(&mut |_| {});
        assert!(r.state_dir_removed && r.data_dir_removed, "{r:?}");
        assert_eq!(r.cgroups_removed, 4);
        assert!(r.leftover.is_empty(), "{r:?}");
        assert_eq!(fs::read_dir(t.path().join("state")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(t.path().join("memory")).unwrap().count(), 0);
    }

    #[test]
    fn retained_data_is_bounded_oldest_first() {
        let t = tempfile::tempdir().unwrap();
        let mut n = node_in(t.path());
        n.claim().unwrap();
        fs::create_dir_all(&n.s.data_dir).unwrap();
        // keep_data_mib 8 = one pod of 2 x 4 MiB.
        for uid in ["a", "b", "c"] {
            fs::create_dir_all(n.s.data_dir.join(uid)).unwrap();
            n.retained.push_back((n.s.data_dir.join(uid), 8 * MIB));
            n.retained_bytes += 8 * MIB;
            while n.retained_bytes > n.s.keep_data_mib * MIB && n.release_oldest_data() {}
        }
        assert_eq!(n.retained_pods(), 1);
        assert!(!n.s.data_dir.join("a").exists() && !n.s.data_dir.join("b").exists());
        assert!(n.s.data_dir.join("c").exists());
        assert!(n.release_oldest_data());
        assert!(!n.release_oldest_data());
    }
}

//! Helpers for tests that run `cgleak` against the running kernel.
//!
//! Safety rules these helpers enforce: every cgroup a test makes sits under a scratch
//! parent named `cgleak-test-<pid>-<what>`; [`ScratchCgroup`] removes that name from
//! every mounted hierarchy (runc creates its cgroup path in all of them), after
//! killing the processes the test put there, deepest directory first, also when the
//! test panics (the removal is cgleak-actions' own, as the lab's teardown uses it).
//! Nothing here reads the code under test: the figures the tests compare `cgleak`
//! with come from the kernel's files, read independently (hence a directory walk of
//! its own, [`cgroup_dirs`]).
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use cgleak_actions::cgroup_tree::{remove_tree_deepest_first, TreeRemoval, WhenBusy};

/// The census is host-wide: tests of one binary that change or count memcgs run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Take the serialisation lock; a test that panicked while holding it does not poison the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Panics unless this process runs with euid 0.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "real_kernel_ tests create cgroups and run containers: they must run as root (euid is {euid})");
}

/// One cgroup hierarchy as /proc/self/mountinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: u8,
    pub mount_point: PathBuf,
    /// v1: the super options (`rw,memory`, `rw,name=systemd`); v2: the root's cgroup.controllers.
    pub controllers: Vec<String>,
}

impl CgroupMount {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Every cgroup (v1) and cgroup2 mount of a whole hierarchy (mount root `/`), one per hierarchy.
pub fn cgroup_mounts() -> Vec<CgroupMount> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    let mut seen_devices = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (device, root, mount_point) = (l[2], l[3], unescape_mountinfo(l[4]));
        let version = match r[0] {
            "cgroup" => 1,
            "cgroup2" => 2,
            _ => continue,
        };
        // A bind mount of a sub-cgroup, or a second mount of a hierarchy seen already.
        if root != "/" || seen_devices.contains(&device) {
            continue;
        }
        seen_devices.push(device);
        let controllers = if version == 1 {
            r[2].split(',').map(str::to_string).collect()
        } else {
            fs::read_to_string(mount_point.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        out.push(CgroupMount {
            version,
            mount_point,
            controllers,
        });
    }
    out
}

/// The hierarchy that carries the memory controller, after asserting root and its presence.
pub fn memory_mount() -> CgroupMount {
    assert_root();
    let mounts = cgroup_mounts();
    mounts
        .iter()
        .find(|m| m.version == 1 && m.has("memory"))
        .or_else(|| mounts.iter().find(|m| m.version == 2 && m.has("memory")))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "real_kernel_ tests need a memory cgroup controller: /proc/self/mountinfo has no cgroup v1 mount with \
                 `memory` nor a cgroup2 mount whose cgroup.controllers lists memory (cgroup mounts: {mounts:?})"
            )
        })
}

/// An executable at `path`, or a panic naming what the test needs it for.
pub fn assert_executable(path: &Path, why: &str) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{why} needs {}: {e}", path.display()));
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{why} needs {} to be an executable file",
        path.display()
    );
}

/// The first `name` on PATH, else the first of `fallbacks` that exists.
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A scratch parent `cgleak-test-<pid>-<what>` in the hierarchies. On drop, in every
/// mounted hierarchy its directories are removed, deepest first, the processes of a busy
/// one killed (only a test puts them there).
pub struct ScratchCgroup {
    pub name: String,
    /// Where the test made it (the memory hierarchy), if it made it.
    memory: PathBuf,
    hierarchies: Vec<PathBuf>,
}

impl ScratchCgroup {
    pub fn name_for(what: &str) -> String {
        format!("cgleak-test-{}-{what}", std::process::id())
    }

    /// Create `<memory root>/cgleak-test-<pid>-<what>`.
    pub fn create_in_memory(what: &str) -> ScratchCgroup {
        let s = ScratchCgroup::claim(what);
        fs::create_dir(&s.memory).unwrap_or_else(|e| panic!("mkdir {}: {e}", s.memory.display()));
        s
    }

    /// Create nothing; someone else (runc) will, possibly in every hierarchy. Cleans all of them.
    pub fn claim(what: &str) -> ScratchCgroup {
        let name = ScratchCgroup::name_for(what);
        let memory = memory_mount().mount_point.join(&name);
        let hierarchies: Vec<PathBuf> = cgroup_mounts()
            .into_iter()
            .map(|m| m.mount_point.join(&name))
            .collect();
        let s = ScratchCgroup {
            name,
            memory,
            hierarchies,
        };
        assert!(
            s.leftovers().is_empty(),
            "{} already exists (a previous run of this process id?): {:?}",
            s.name,
            s.leftovers()
        );
        s
    }

    /// The scratch parent in the memory hierarchy.
    pub fn path(&self) -> &Path {
        &self.memory
    }

    /// The scratch parent's path in every hierarchy where it still exists.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect()
    }

    /// Clean up now and fail the test if anything is left.
    pub fn remove(self) {
        let all = self.hierarchies.clone();
        drop(self);
        let left: Vec<_> = all.iter().filter(|p| p.exists()).collect();
        assert!(left.is_empty(), "cleanup left cgroups behind: {left:?}");
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for top in &self.hierarchies {
            if top.exists() {
                kill_and_remove_tree(top);
            }
        }
    }
}

/// Directories below `dir`, deepest last (pre-order), `dir` first. Vanished ones are skipped.
pub fn cgroup_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// rmdir a cgroup subtree deepest first, waiting while an exiting task keeps one busy.
pub fn remove_tree(dir: &Path) {
    report_leftovers(&remove_tree_deepest_first(dir, WhenBusy::Wait));
}

/// rmdir a cgroup subtree deepest first, SIGKILLing the processes of a cgroup that is busy
/// (only a test puts processes under its scratch parent).
pub fn kill_and_remove_tree(dir: &Path) {
    report_leftovers(&remove_tree_deepest_first(dir, WhenBusy::KillTasks));
}

fn report_leftovers(r: &TreeRemoval) {
    for line in r.leftover_lines() {
        eprintln!("cleanup: rmdir {line}");
    }
}

/// The kernel's own figures for the v1 memory hierarchy, read without cgleak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCount {
    /// Directories in the memory hierarchy, the root included: the live memcgs.
    pub dirs: u64,
    /// /proc/cgroups num_cgroups of the memory row: live and dying (4.x+, cgroup-v1.c proc_cgroupstats_show).
    pub num_cgroups: u64,
}

impl KernelCount {
    pub fn read(memory_root: &Path) -> KernelCount {
        KernelCount {
            dirs: cgroup_dirs(memory_root).len() as u64,
            num_cgroups: proc_cgroups_memory(),
        }
    }
    pub fn dying(&self) -> u64 {
        self.num_cgroups.saturating_sub(self.dirs)
    }
    /// (dirs, num_cgroups) of `self` minus those of `before`.
    pub fn minus(&self, before: &KernelCount) -> (i64, i64) {
        (
            self.dirs as i64 - before.dirs as i64,
            self.num_cgroups as i64 - before.num_cgroups as i64,
        )
    }
}

/// num_cgroups of the v1 memory row of /proc/cgroups.
pub fn proc_cgroups_memory() -> u64 {
    let text = fs::read_to_string("/proc/cgroups").expect("reading /proc/cgroups");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == "memory" && f[1] != "0")
        .map(|f| f[2].parse().expect("num_cgroups is an integer"))
        .unwrap_or_else(|| panic!("/proc/cgroups has no v1 memory row:\n{text}"))
}

pub fn cgleak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgleak"))
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cgleak's stdout is not JSON ({e}):\n{}", describe(out)))
}

/// `cgleak status --output json <extra>`: must exit 0 with a JSON object.
pub fn status(extra: &[&OsStr]) -> Value {
    let out = cgleak()
        .args(["status", "--output", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running cgleak");
    assert_eq!(
        out.status.code(),
        Some(0),
        "cgleak status failed:\n{}",
        describe(&out)
    );
    let v = json_of(&out);
    assert!(v.is_object(), "{v}");
    v
}

/// A u64 at a JSON pointer, or a panic showing the document.
pub fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not an unsigned integer in:\n{v:#}"))
}

/// A status taken while the kernel's counts did not move: the same [`KernelCount`]
/// read just before and just after cgleak ran. The host creates and frees cgroups
/// of its own at any time; only such a quiet status can be compared exactly.
pub fn quiet_status(memory_root: &Path, extra: &[&OsStr]) -> (Value, KernelCount) {
    // Long enough to outlast another test suite's burst of mkdir/rmdir on this host.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = 0;
    while Instant::now() < deadline {
        runs += 1;
        let before = KernelCount::read(memory_root);
        let s = status(extra);
        let after = KernelCount::read(memory_root);
        if before == after {
            return (s, after);
        }
        sleep(Duration::from_millis(20));
    }
    panic!("the host's memory cgroups changed during each of {runs} status runs in 60 s: cannot take a quiet census");
}

/// A process started in cgroup `cg` (it moves itself, before exec, by writing 0 to
/// cgroup.procs) that writes `bytes` zero bytes to `file`: page cache charged to `cg`.
///
/// The file is created, preallocated (fallocate) and fsynced by the test process first,
/// and `head` is run once outside `cg`: so the writer only fills blocks that already
/// exist and charges `cg` with the file's data pages alone. Otherwise the filesystem
/// metadata it pulls into the cache (ext4 extent and bitmap blocks, measured: 132 KiB
/// of 4 MiB on 6.18) is charged to `cg` too, and no fadvise of the file releases it:
/// the memcg then stays dying for as long as the host keeps those blocks cached.
pub fn spawn_writer_in(cg: &Path, file: &Path, bytes: u64) -> Child {
    let head = find_program("head", &["/usr/bin/head", "/bin/head"])
        .expect("this test needs `head` (coreutils) to write files");
    warm_once(&head);
    let out = preallocated(file, bytes);
    let mut cmd = Command::new(head);
    cmd.args(["-c", &bytes.to_string(), "/dev/zero"]).stdin(Stdio::null()).stdout(out).stderr(Stdio::inherit());
    join_before_exec(&mut cmd, cg);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting a writer in {}: {e}", cg.display()))
}

/// `program args...` started in cgroup `cg` (it joins before exec), stdio to /dev/null.
pub fn spawn_in(cg: &Path, program: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    join_before_exec(&mut cmd, cg);
    cmd.spawn().unwrap_or_else(|e| panic!("starting {program} in {}: {e}", cg.display()))
}

/// Make the child move itself into `cg` (writing 0 to its cgroup.procs) before it execs.
fn join_before_exec(cmd: &mut Command, cg: &Path) {
    cgleak_fixtures::spawn::join_cgroup_before_exec(cmd, cg);
}

/// Run `head` once from the test's own cgroup, so its pages are cached (and charged)
/// before any writer in a scratch memcg execs it.
fn warm_once(head: &Path) {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let st = Command::new(head)
            .args(["-c", "1", "/dev/zero"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", head.display()));
        assert!(st.success(), "{} -c 1 /dev/zero: {st}", head.display());
    });
}

/// `file` created (truncated), with `bytes` allocated on disk and synced.
fn preallocated(file: &Path, bytes: u64) -> fs::File {
    use std::os::fd::AsRawFd;
    let f = fs::File::create(file).unwrap_or_else(|e| panic!("create {}: {e}", file.display()));
    // SAFETY: a valid open fd.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, bytes as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate {} bytes on {}: {}", bytes, file.display(), io::Error::from_raw_os_error(rc));
    f.sync_all().unwrap_or_else(|e| panic!("fsync {}: {e}", file.display()));
    f
}

/// Reclaim every page charged to `cg`'s subtree, dying children included: v1
/// `memory.force_empty` on a live cgroup without tasks (docs/kernel-facts.md section 4).
pub fn force_empty(cg: &Path) {
    let f = cg.join("memory.force_empty");
    fs::write(&f, "0").unwrap_or_else(|e| panic!("write 0 to {}: {e}", f.display()));
}

/// fsync `file`, then drop its page cache (POSIX_FADV_DONTNEED): this file only, not
/// the host-wide drop_caches.
pub fn drop_page_cache_of(file: &Path) {
    let f = fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", file.display()));
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; offset 0 and len 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(
        rc,
        0,
        "posix_fadvise(DONTNEED) on {}: {}",
        file.display(),
        io::Error::from_raw_os_error(rc)
    );
}

/// Panics if `dir` is on tmpfs or ramfs, where pages are shmem and fadvise cannot drop them.
pub fn assert_not_tmpfs(dir: &Path) {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a NUL-terminated path and st is large enough for statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "statfs {}: {}",
        dir.display(),
        io::Error::last_os_error()
    );
    // f_type is i64 on x86_64 but narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    // SAFETY: statfs succeeded, so it filled st.
    let f_type = unsafe { st.assume_init() }.f_type as i64;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    assert!(
        f_type != TMPFS_MAGIC && f_type != RAMFS_MAGIC,
        "{} is on tmpfs/ramfs (f_type {f_type:#x}): its pages are shmem and would not be dropped per file",
        dir.display()
    );
}

/// One value of this cgroup's memory.stat (`cache`, `total_cache`, ...).
pub fn memory_stat(cg: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(cg.join("memory.stat")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Poll `f` every `every` until it returns Some or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(every);
    }
}

/// Wait (up to `timeout`) until the kernel's counts have held still for `quiet`: cgroups
/// removed just before (by an earlier test, say) are freed asynchronously.
/// Returns whether they settled; callers that compare counts retry anyway.
pub fn settle(memory_root: &Path, quiet: Duration, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = KernelCount::read(memory_root);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(50));
        let now = KernelCount::read(memory_root);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return true;
        }
    }
    false
}

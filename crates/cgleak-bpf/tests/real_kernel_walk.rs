//! The BPF walk against the running kernel (root, a cgroup v1 memory hierarchy).
//!
//! Every cgroup these tests make sits under a scratch parent `cgleak-test-<pid>-<what>` at
//! the memory hierarchy's root, removed on drop (also after a failed assertion). Ground
//! truth is what the test did: the bytes each child's process wrote, the names it gave.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cgleak_bpf::{CgroupVersion, MemcgWalk, Walker};

const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
const MIB: u64 = 1 << 20;

fn assert_environment() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "real_kernel_ tests load BPF and create cgroups: run them as root (euid {euid})");
    let root = PathBuf::from(MEMORY_ROOT);
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(4) == Some(MEMORY_ROOT) && l.contains(" - cgroup ") && l.split(',').any(|o| o.trim() == "memory")),
        "real_kernel_ tests need the cgroup v1 memory hierarchy mounted at {MEMORY_ROOT}"
    );
    assert!(Path::new("/sys/kernel/btf/vmlinux").exists(), "this host's kernel (6.18) has BTF: /sys/kernel/btf/vmlinux is missing");
    root
}

/// `cgleak-test-<pid>-<what>`; removed deepest first on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(root: &Path, what: &str) -> Scratch {
        let path = root.join(format!("cgleak-test-{}-{what}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Scratch { path }
    }

    fn rel(&self) -> PathBuf {
        PathBuf::from("/").join(self.path.file_name().unwrap())
    }
}

fn rmdir_retry(p: &Path) -> io::Result<()> {
    let start = Instant::now();
    loop {
        match fs::remove_dir(p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    }
}

fn remove_tree(p: &Path) {
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = rmdir_retry(p);
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// dd, run inside `cgroup`, writes `bytes` to `file` and fsyncs it: its page cache is
/// charged to that memcg. The cgroup is left empty when dd exits.
fn write_from(cgroup: &Path, file: &Path, bytes: u64) {
    let mut cmd = Command::new("dd");
    cmd.arg("if=/dev/zero").arg(format!("of={}", file.display())).arg("bs=1M").arg(format!("count={}", bytes / MIB)).arg("conv=fsync").arg("status=none");
    cgleak_fixtures::spawn::join_cgroup_before_exec(&mut cmd, cgroup);
    let st = cmd.status().expect("run dd");
    assert!(st.success(), "dd in {} writing {}: {st}", cgroup.display(), file.display());
}

/// A directory on a disk-backed file system (tmpfs pages are shmem, on the anon LRU).
fn disk_dir(what: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cgleak-bpf-{what}-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    let c = CString::new(d.to_str().unwrap()).unwrap();
    // SAFETY: a valid path and out pointer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    assert_ne!(st.f_type as i64, 0x0102_1994, "{} is on tmpfs: its pages would be shmem", d.display());
    d
}

fn walk(root: &Path) -> MemcgWalk {
    Walker::new(root).walk().unwrap_or_else(|e| panic!("BPF walk unavailable ({}): {e}", e.code()))
}

fn within(got: u64, want: u64) -> bool {
    (got as f64 - want as f64).abs() <= want as f64 * 0.25
}

#[test]
fn real_kernel_walk_names_dying_memcgs_with_their_page_cache() {
    let root = assert_environment();
    let files = disk_dir("walk");
    let scratch = Scratch::new(&root, "bpfwalk");
    let parent = scratch.rel();
    // Kubelet-style names and distinct sizes: 3, 4, .. 8 MiB.
    let children: Vec<(String, u64)> = (0..6u64).map(|i| (format!("pod5d6a{:04x}-1b2c-4d3e-8f40-{:012x}", std::process::id() & 0xffff, i), (i + 3) * MIB)).collect();
    for (name, bytes) in &children {
        let cg = scratch.path.join(name);
        fs::create_dir(&cg).unwrap();
        write_from(&cg, &files.join(name), *bytes);
        rmdir_retry(&cg).unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.display()));
    }

    let w = walk(&root);
    assert_eq!(w.version, CgroupVersion::V1);
    let first = &w.memcgs[0];
    assert_eq!((first.path.to_str(), first.depth, first.online, first.parent_cgroup_id), (Some("/"), 0, true, None), "the root first");
    assert_eq!(w.root_cgroup_id, first.cgroup_id);
    assert_eq!(w.start_cgroup_id, w.root_cgroup_id, "{MEMORY_ROOT} is the hierarchy's root");
    let p = w.find(&parent).unwrap_or_else(|| panic!("walk lacks the live scratch parent {}", parent.display()));
    assert!(p.online && p.depth == 1 && p.holds_id && p.memcg_id.is_some(), "{p:?}");
    assert_eq!(p.cgroup_id, fs::metadata(&scratch.path).unwrap().ino(), "cgroup id = the directory's inode number");
    for (name, bytes) in &children {
        let m = w.find(&parent.join(name)).unwrap_or_else(|| panic!("the walk does not name the dying memcg {name}"));
        assert!(!m.online, "{name} was removed: {m:?}");
        assert_eq!(m.parent_cgroup_id, Some(p.cgroup_id));
        assert_eq!((m.depth, m.name.to_str()), (2, Some(name.as_str())));
        let file = m.file_bytes.expect("LRU sizes read");
        assert!(within(file, *bytes), "{name}: file bytes {file}, written {bytes}");
        let lru = m.lru_bytes().unwrap();
        assert!(within(lru, *bytes), "{name}: LRU bytes {lru}, written {bytes}");
        assert!(m.memory_bytes >= file, "{name}: the page counter {} holds at least its page cache {file}", m.memory_bytes);
        assert!(m.kmem_bytes.is_some(), "v1 on 6.18 has memcg->kmem");
        // 6.18 releases a dying memcg's ID at offline unless swap pins it; this host has no swap.
        assert!(!m.holds_id && m.memcg_id.is_none(), "{name}: {m:?}");
    }
    let ours: Vec<_> = w.memcgs.iter().filter(|m| m.path.starts_with(&parent)).collect();
    assert_eq!(ours.len(), children.len() + 1, "the scratch parent and its dying children: {ours:?}");

    // The files go, and their page cache with them: the dying memcgs are freed.
    for (name, _) in &children {
        fs::remove_file(files.join(name)).unwrap();
    }
    let start = Instant::now();
    let mut force_emptied = false;
    let left = loop {
        let left: Vec<String> = walk(&root).memcgs.iter().filter(|m| m.path.starts_with(&parent) && m.path != parent).map(|m| m.path.display().to_string()).collect();
        if left.is_empty() || start.elapsed() > Duration::from_secs(20) {
            break left;
        }
        if start.elapsed() > Duration::from_secs(3) && !force_emptied {
            // What the writers charged besides their files (ext4 metadata): reclaim through the
            // live parent walks its dying children (facts §4).
            fs::write(scratch.path.join("memory.force_empty"), "0").unwrap();
            force_emptied = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(left.is_empty(), "dying memcgs still in the walk {:?} after unlink (force_empty on the parent: {force_emptied}): {left:?}", start.elapsed());
    let _ = fs::remove_dir_all(&files);
}

#[test]
fn real_kernel_walk_sizes_its_ring_from_a_walk_that_overflowed() {
    let root = assert_environment();
    let scratch = Scratch::new(&root, "bpfring");
    // 60 live memcgs with 60-byte names: about 12 KiB of records, three times the first ring.
    for i in 0..60 {
        fs::create_dir(scratch.path.join(format!("{i:060}"))).unwrap();
    }
    let w = Walker::new(&root).ring_bytes(4096).walk().unwrap_or_else(|e| panic!("{} {e}", e.code()));
    assert_eq!(w.attempts, 2, "a 4 KiB ring cannot hold 60 records: the walk must run again");
    assert!(w.ring_bytes > 4096);
    let ours = w.memcgs.iter().filter(|m| m.path.starts_with(scratch.rel()) && m.path != scratch.rel()).count();
    assert_eq!(ours, 60);
}

#[test]
fn real_kernel_walk_of_a_hierarchy_without_memory_says_so() {
    assert_environment();
    // Any v1 hierarchy of another controller: its cgroups have no memory css.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let other = mounts
        .lines()
        .filter(|l| l.contains(" - cgroup ") && !l.split(',').any(|o| o.trim() == "memory"))
        .filter_map(|l| l.split(' ').nth(4))
        .next()
        .expect("this host mounts other v1 controllers (cpu, devices, ...)");
    let e = Walker::new(other).walk().expect_err("a hierarchy without memory");
    assert_eq!(e.code(), "no_memory_hierarchy", "{e}");
    assert!(e.to_string().contains("no memory controller"), "{e}");
}

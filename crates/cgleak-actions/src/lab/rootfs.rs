//! The containers' root filesystem (a static busybox) and the filesystems the lab writes to.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// busybox applets the workload and a curious `runc exec` use.
const APPLETS: &[&str] = &["sh", "sleep", "dd", "cat", "ls", "ps", "du", "df"];

/// Directories the runtime mounts over, or the workload writes to: they must exist in a read-only root.
const ROOT_DIRS: &[&str] = &["bin", "proc", "dev", "sys", "tmp", "data"];

/// Make `<rootfs>/bin/busybox` (a copy) with its applets as symlinks. `rootfs` must not exist.
pub(crate) fn build_busybox_rootfs(rootfs: &Path, busybox: &Path) -> io::Result<()> {
    fs::create_dir(rootfs)?;
    for d in ROOT_DIRS {
        fs::create_dir(rootfs.join(d))?;
    }
    let bin = rootfs.join("bin");
    fs::copy(busybox, bin.join("busybox"))
        .map_err(|e| io::Error::new(e.kind(), format!("copy {} to {}: {e}", busybox.display(), bin.display())))?;
    for applet in APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    Ok(())
}

/// ELF64 little-endian program header type of the dynamic loader's path.
const PT_INTERP: u32 = 3;

/// Whether `path` is an ELF executable without a dynamic loader (PT_INTERP): a
/// dynamically linked busybox would not start in a root that holds nothing else.
pub fn is_static_elf(path: &Path) -> io::Result<bool> {
    let mut f = fs::File::open(path)?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head)?;
    // "\x7fELF", ELFCLASS64, little-endian: every target busybox-static ships for x86_64/arm64.
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Ok(false);
    }
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().expect("8 bytes"));
    let phentsize = u64::from(u16::from_le_bytes([head[0x36], head[0x37]]));
    let phnum = u64::from(u16::from_le_bytes([head[0x38], head[0x39]]));
    if phentsize < 4 {
        return Ok(false);
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut table)?;
    let has_interp =
        table.chunks_exact(phentsize as usize).any(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP);
    Ok(!has_interp)
}

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const SYSFS_MAGIC: u64 = 0x6265_6572;
const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// The statfs magic of the filesystem `path` (or its nearest existing ancestor) is on.
fn fs_magic(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statfs(nearest_existing(path))?;
    // f_type is i64 on x86_64 and narrower elsewhere; the magic numbers fit in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as i64 as u64) & 0xffff_ffff;
    Ok(magic)
}

/// The deepest existing directory on the way to `path` (itself if it exists).
pub fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// "tmpfs" or "ramfs" when `path` (or, while it does not exist yet, its nearest
/// existing ancestor) is on a memory-backed filesystem, else None. Page cache there is
/// shmem, not the page cache of a disk filesystem that pins a deleted pod's memcg
/// until reclaim (docs/kernel-facts.md section 4); the lab wants the latter.
pub fn memory_backed_fs(path: &Path) -> io::Result<Option<&'static str>> {
    Ok(match fs_magic(path)? {
        TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        _ => None,
    })
}

/// "cgroup", "cgroup2", "sysfs" or "proc" when `path` (or its nearest existing ancestor)
/// is on a kernel pseudo filesystem: no place for a state dir (a mkdir in cgroupfs makes
/// a cgroup).
pub fn pseudo_fs(path: &Path) -> io::Result<Option<&'static str>> {
    Ok(match fs_magic(path)? {
        CGROUP_SUPER_MAGIC => Some("cgroup"),
        CGROUP2_SUPER_MAGIC => Some("cgroup2"),
        SYSFS_MAGIC => Some("sysfs"),
        PROC_SUPER_MAGIC => Some("proc"),
        _ => None,
    })
}

/// Bytes available to root on the filesystem of `path` (or its nearest existing ancestor).
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(nearest_existing(path))?;
    // f_bfree, not f_bavail: the lab runs as root, which may use the reserved blocks too.
    Ok(st.f_bfree.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_has_busybox_and_its_applets() {
        let t = tempfile::tempdir().unwrap();
        let fake = t.path().join("busybox");
        fs::write(&fake, b"not really busybox").unwrap();
        let root = t.path().join("rootfs");
        build_busybox_rootfs(&root, &fake).unwrap();
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"not really busybox");
        assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), PathBuf::from("busybox"));
        for d in ["proc", "dev", "sys", "tmp", "data"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        // An existing rootfs is not reused or overwritten.
        assert!(build_busybox_rootfs(&root, &fake).is_err());
    }

    fn elf(interp: bool) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        b[64..68].copy_from_slice(&6u32.to_le_bytes()); // PT_PHDR
        b[120..124].copy_from_slice(&(if interp { PT_INTERP } else { 1 }).to_le_bytes());
        b
    }

    #[test]
    fn static_elf_is_told_from_dynamic_and_from_scripts() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        fs::write(&p, elf(false)).unwrap();
        assert!(is_static_elf(&p).unwrap());
        fs::write(&p, elf(true)).unwrap();
        assert!(!is_static_elf(&p).unwrap());
        fs::write(&p, format!("#!/bin/sh\n{}", "#".repeat(100))).unwrap();
        assert!(!is_static_elf(&p).unwrap());
        fs::write(&p, b"short").unwrap();
        assert!(is_static_elf(&p).is_err());
    }

    #[test]
    fn nearest_existing_walks_up() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(nearest_existing(&t.path().join("a/b/c")), t.path());
        assert_eq!(nearest_existing(t.path()), t.path());
    }

    fn t_path() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn filesystems_are_recognised() {
        // /dev/shm is tmpfs wherever it exists; /proc is procfs.
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(memory_backed_fs(Path::new("/dev/shm/cgleak-lab-none/x")).unwrap(), Some("tmpfs"));
        }
        assert_eq!(memory_backed_fs(Path::new("/proc")).unwrap(), None);
        assert_eq!(pseudo_fs(Path::new("/proc/no-such-dir")).unwrap(), Some("proc"));
        assert_eq!(pseudo_fs(Path::new("/sys/kernel")).unwrap(), Some("sysfs"));
        assert_eq!(pseudo_fs(t_path()).unwrap(), None);
        assert!(available_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap() > 0);
    }
}

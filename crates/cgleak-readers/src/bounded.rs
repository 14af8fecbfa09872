//! Bounded reads: every host file is read up to a cap, and only when it is a regular file.
//!
//! A host root is input like any other: a `/proc/cgroups` of a GiB, a FIFO where
//! `cgroup.procs` should be, or a device in place of a boot file must end in an error
//! naming the file, not in a hang or an out-of-memory kill. Files are opened with
//! O_NONBLOCK (a FIFO opens without waiting for a writer) and checked with fstat before
//! a byte is read; the read stops one byte past the cap.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::FileType;

use crate::error::{ReadError, Result};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// `/proc/cgroups`: a line per controller (about 15 lines, 300 bytes on 6.18).
pub const PROC_CGROUPS_CAP: u64 = MIB;
/// mountinfo: some 150 bytes a mount; a node with thousands of pod volumes stays far below.
pub const MOUNTINFO_CAP: u64 = 8 * MIB;
/// Other /proc files (osrelease, cmdline, meminfo, stat, a process's comm and cmdline).
pub const PROC_FILE_CAP: u64 = MIB;
/// A cgroup control file (memory.stat, cgroup.stat, memory.kmem.slabinfo, a limit).
pub const CGROUP_FILE_CAP: u64 = MIB;
/// `cgroup.procs` and `tasks`: up to 8 bytes a thread, two million threads.
pub const TASK_LIST_CAP: u64 = 16 * MIB;
/// Boot-loader files (grub.cfg, /etc/default/grub, BLS entries, grubenv) and configs.
pub const CONFIG_FILE_CAP: u64 = 4 * MIB;

/// What a file is, in words, for an error.
pub fn file_type_name(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// Refuse `fd` unless it is a regular file.
pub fn require_regular(fd: &OwnedFd, path: &Path) -> Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| ReadError::io(path, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(ReadError::unexpected(path, format!("is {}, not a regular file: not read", file_type_name(st.st_mode))));
    }
    Ok(())
}

/// Read an opened regular file to its end, at most `cap` bytes.
pub fn read_fd(fd: OwnedFd, path: &Path, cap: u64) -> Result<Vec<u8>> {
    require_regular(&fd, path)?;
    let mut out = Vec::new();
    // Kernel files are read until read() returns 0; one byte more than the cap tells "too big".
    std::fs::File::from(fd).take(cap + 1).read_to_end(&mut out).map_err(|e| ReadError::io(path, e))?;
    if out.len() as u64 > cap {
        return Err(ReadError::unexpected(path, format!("larger than the {} cap on this file: not read", human_bytes(cap))));
    }
    Ok(out)
}

/// [`read_fd`] as text (UTF-8, as `read_to_string` wants it).
pub fn read_fd_string(fd: OwnedFd, path: &Path, cap: u64) -> Result<String> {
    String::from_utf8(read_fd(fd, path, cap)?)
        .map_err(|_| ReadError::io(path, io::Error::new(io::ErrorKind::InvalidData, "stream did not contain valid UTF-8")))
}

/// `1 MiB`, `64 KiB`, `512 bytes`.
pub fn human_bytes(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// File content quoted in an error: at most 80 characters, control characters escaped.
pub fn excerpt(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags, CWD};

    fn open(p: &Path) -> OwnedFd {
        rustix::fs::openat(CWD, p, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn caps_and_types_are_enforced() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'x'; 1025]).unwrap();
        let e = read_fd(open(&big), &big, 1024).unwrap_err();
        assert!(e.to_string().contains("big") && e.to_string().contains("1 KiB cap"), "{e}");
        assert_eq!(read_fd(open(&big), &big, 1025).unwrap().len(), 1025);
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let e = read_fd(open(&fifo), &fifo, 1024).unwrap_err();
        assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        let long = "a".repeat(10_000);
        assert_eq!(excerpt(&long).chars().count(), 83);
        assert_eq!(excerpt("x\n\u{1b}[31m"), "\"x\\n\\u{1b}[31m\"");
    }
}

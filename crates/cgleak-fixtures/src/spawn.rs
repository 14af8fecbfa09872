//! Processes a real-kernel test starts inside a cgroup it made.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Make the child of `cmd` move itself into the cgroup at `cgroup` (writing "0", the writer
/// itself, to its `cgroup.procs`: cgroup_procs_write_start) before it execs, so everything
/// the program charges is charged there from its first page.
pub fn join_cgroup_before_exec(cmd: &mut Command, cgroup: &Path) {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).expect("cgroup path without NUL");
    // SAFETY: the closure only calls open/write/close (async-signal-safe) on memory
    // prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_cannot_be_joined_fails_the_spawn_with_its_error() {
        // A plain directory: its cgroup.procs does not exist, so open fails in the child.
        let d = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("true");
        join_cgroup_before_exec(&mut cmd, d.path());
        let e = cmd.status().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}

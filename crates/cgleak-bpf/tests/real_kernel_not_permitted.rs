//! Without the privilege, the walk says so: a forked child that became `nobody`, and one
//! that stayed uid 0 with every capability dropped, get `not_permitted` with the reason.
//!
//! Its own test binary: fork() here copies one thread only, so no other test may run
//! beside it (the child takes no lock another thread could hold).

use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::Path;

const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// How the child gives up its privilege.
#[derive(Clone, Copy)]
enum Privilege {
    BecomeNobody,
    KeepUidZeroDropCapabilities,
}

/// The walk's result in a forked child: (error code, message), or "ok".
fn walk_in_child(how: Privilege) -> String {
    let mut fds = [0i32; 2];
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls the walk (no lock shared with another thread: this
    // binary runs this one test at a time) and _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain system calls in the child.
        unsafe {
            libc::close(fds[0]);
            let ok = match how {
                Privilege::BecomeNobody => libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(65534) == 0 && libc::setuid(65534) == 0,
                Privilege::KeepUidZeroDropCapabilities => {
                    // capset(2) with empty sets (_LINUX_CAPABILITY_VERSION_3: two u32 words each).
                    let header = [0x2008_0522u32, 0];
                    let data = [0u32; 6];
                    libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) == 0
                }
            };
            let msg = if !ok {
                format!("setup failed: {}", std::io::Error::last_os_error())
            } else {
                match cgleak_bpf::walk_memcgs(Path::new(MEMORY_ROOT)) {
                    Ok(w) => format!("ok {} memcgs", w.memcgs.len()),
                    Err(e) => format!("{} {e}", e.code()),
                }
            };
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: the read end is ours.
    unsafe { libc::close(fds[1]) };
    let mut out = String::new();
    // SAFETY: fds[0] is an open pipe end nobody else owns.
    unsafe { std::fs::File::from_raw_fd(fds[0]) }.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    out
}

#[test]
fn real_kernel_unprivileged_walk_is_not_permitted() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test drops privileges: run it as root");
    assert!(Path::new(MEMORY_ROOT).is_dir(), "needs the v1 memory hierarchy at {MEMORY_ROOT}");
    // The privileged walk works here: the refusals below are the missing privilege's.
    let ok = cgleak_bpf::walk_memcgs(Path::new(MEMORY_ROOT)).map(|w| w.memcgs.len());
    assert!(ok.is_ok(), "as root the walk must work: {:?}", ok.err());

    let nobody = walk_in_child(Privilege::BecomeNobody);
    assert!(nobody.starts_with("not_permitted "), "as nobody: {nobody}");
    assert!(nobody.contains("not root (euid 65534)") && nobody.contains("CAP_BPF"), "as nobody: {nobody}");

    let capless = walk_in_child(Privilege::KeepUidZeroDropCapabilities);
    assert!(capless.starts_with("not_permitted "), "uid 0 without capabilities: {capless}");
    assert!(capless.contains("root, yet refused"), "uid 0 without capabilities: {capless}");
}

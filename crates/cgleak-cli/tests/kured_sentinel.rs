//! kured's `--reboot-sentinel-command`, run the way kured runs it: in the host's mount
//! namespace (here: chrooted into a fixture host root, with no /host), with the binary at
//! the README's install path, `/usr/local/bin/cgleak check --reboot-required`. kured
//! reboots on exit 0 only.
//!
//! The binary is the one `cargo xtask dist` makes for old nodes (static glibc): a CentOS 7
//! userland (glibc 2.17) is what these roots stand for. Needs root (chroot).

mod common;

use common::dist::{assert_root, run_in_root, INSTALL_PATH};

/// `check --reboot-required` on a fixture root, with the state dir under that root
/// (`/var/lib/cgleak`, the default, is then the host's own).
fn sentinel(f: &cgleak_fixtures::Fixture) -> common::fixture::Run {
    assert_root();
    let r = run_in_root(f.root(), &["check", "--reboot-required"]);
    assert!(!r.stdout.contains('\n') || r.stdout.trim_end().lines().count() == 1, "one line: {r:#?}");
    r
}

#[test]
fn exhausted_el7_node_asks_kured_for_a_reboot() {
    for f in [cgleak_fixtures::el7_957_kmem_exhausted(), cgleak_fixtures::el7_514_kmem_exhausted(), cgleak_fixtures::el7_1160_kmem_exhausted()] {
        let r = sentinel(&f);
        assert_eq!(r.code, 0, "{}: kured reboots on 0 only: {r:#?}", f.name);
        assert!(r.stdout.starts_with("reboot required: node is exhausted"), "{}: {}", f.name, r.stdout);
        assert!(r.stderr.is_empty(), "{}: nothing on stderr for kured's log: {}", f.name, r.stderr);
    }
}

#[test]
fn no_reboot_where_something_else_comes_first() {
    // Leaking but not short; exhausted with nokmem on (reclaim first); 4.4.131 (IDs released).
    for f in [cgleak_fixtures::el7_693_kmem_leaking(), cgleak_fixtures::el7_1160_nokmem_exhausted(), cgleak_fixtures::linux_4_4_131_enospc()] {
        let r = sentinel(&f);
        assert_eq!(r.code, 1, "{}: {r:#?}", f.name);
        assert!(r.stdout.starts_with("no reboot needed: "), "{}: {}", f.name, r.stdout);
    }
}

#[test]
fn a_root_it_cannot_judge_is_never_a_reboot() {
    let f = cgleak_fixtures::el7_957_kmem_exhausted();
    std::fs::remove_file(f.path("/proc/self/mountinfo")).unwrap();
    let r = sentinel(&f);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stdout.starts_with("no reboot: the node could not be judged"), "{}", r.stdout);
    assert!(f.path(INSTALL_PATH).is_file());
}

//! Broken or unusual host files: each gives a clear message naming the file or flag
//! and the documented exit code (1 runtime, 2 usage, 77 not permitted), never a panic
//! (every run is checked for one in common::fixture).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::fixture::{at, cgleak, cgleak_cmd, on_fixture, Run};

fn fail_with(run: &Run, code: i32, needles: &[&str]) {
    assert_eq!(run.code, code, "exit code: {run:#?}");
    assert!(
        run.stderr.starts_with("cgleak: "),
        "an error message on stderr: {run:#?}"
    );
    for n in needles {
        assert!(run.stderr.contains(n), "stderr should name {n:?}: {run:#?}");
    }
    assert!(
        run.stdout.is_empty(),
        "no partial output on stdout: {run:#?}"
    );
}

#[test]
fn missing_proc_cgroups_on_v1_4_19() {
    // 4.x v1 counts dying memcgs from /proc/cgroups: without it there is no census.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    fs::remove_file(f.path("/proc/cgroups")).unwrap();
    for cmd in ["status", "check"] {
        let run = on_fixture(&f, &[cmd, "--output", "json"]);
        fail_with(&run, 1, &["/proc/cgroups", "No such file"]);
    }
}

#[test]
fn garbage_in_proc_cgroups() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    fs::write(
        f.path("/proc/cgroups"),
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t11\t37\t1\nmemory\tfour\t5037\t1\n",
    )
    .unwrap();
    let run = on_fixture(&f, &["status"]);
    fail_with(&run, 1, &["/proc/cgroups", "line 3"]);
    fs::write(f.path("/proc/cgroups"), "\u{0}\u{1}binary junk\n").unwrap();
    let run = on_fixture(&f, &["check"]);
    fail_with(&run, 1, &["/proc/cgroups"]);
}

#[test]
fn garbage_in_v2_root_cgroup_stat() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::write(
        f.path("/sys/fs/cgroup/cgroup.stat"),
        "nr_descendants 45\nnr_dying_descendants lots\n",
    )
    .unwrap();
    let run = on_fixture(&f, &["status", "--output", "json"]);
    fail_with(
        &run,
        1,
        &["/sys/fs/cgroup/cgroup.stat", "nr_dying_descendants"],
    );
    fs::write(
        f.path("/sys/fs/cgroup/cgroup.stat"),
        "just one token per line\n",
    )
    .unwrap();
    let run = on_fixture(&f, &["check"]);
    fail_with(&run, 1, &["cgroup.stat"]);
}

#[test]
fn mountinfo_without_a_memory_controller() {
    // v1: the memory hierarchy is not mounted.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let mi = f.path("/proc/self/mountinfo");
    let text = fs::read_to_string(&mi).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains(" /sys/fs/cgroup/memory "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without, "the fixture mounted memory");
    fs::write(&mi, without).unwrap();
    let run = on_fixture(&f, &["status"]);
    fail_with(
        &run,
        1,
        &["no memory cgroup controller", "/proc/self/mountinfo"],
    );

    // v2: cgroup2 is mounted but its root does not offer memory.
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::write(
        f.path("/sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io pids\n",
    )
    .unwrap();
    let run = on_fixture(&f, &["check", "--output", "json"]);
    fail_with(&run, 1, &["no memory cgroup controller"]);
}

#[test]
fn missing_mountinfo() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::remove_file(f.path("/proc/self/mountinfo")).unwrap();
    let run = on_fixture(&f, &["status"]);
    fail_with(&run, 1, &["/proc/self/mountinfo"]);
}

#[test]
fn garbage_mountinfo() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::write(
        f.path("/proc/self/mountinfo"),
        "this is not a mount table\n",
    )
    .unwrap();
    let run = on_fixture(&f, &["status"]);
    fail_with(&run, 1, &["/proc/self/mountinfo", "line 1"]);
}

#[test]
fn host_root_that_does_not_exist() {
    let run = cgleak(&["--host-root", "/nonexistent/cgleak-host-root", "status"]);
    fail_with(&run, 2, &["--host-root", "/nonexistent/cgleak-host-root"]);
    let run = cgleak(&[
        "check",
        "--output",
        "json",
        "--host-root",
        "/nonexistent/cgleak-host-root",
    ]);
    fail_with(&run, 2, &["--host-root"]);
}

#[test]
fn host_root_that_is_a_file() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let file = f.path("/FIXTURE.txt");
    let run = cgleak(&["--host-root", file.to_str().unwrap(), "status"]);
    fail_with(&run, 2, &["--host-root", "not a directory"]);
}

#[test]
fn empty_osrelease() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::write(f.path("/proc/sys/kernel/osrelease"), "\n").unwrap();
    let run = on_fixture(&f, &["status"]);
    fail_with(&run, 1, &["/proc/sys/kernel/osrelease"]);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs the binary as nobody, or None when this test cannot switch users.
fn as_nobody() -> Option<Command> {
    if !is_root() {
        return None;
    }
    let bin = env!("CARGO_BIN_EXE_cgleak");
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        if Path::new(dir).join("setpriv").exists() {
            let mut c = Command::new(Path::new(dir).join("setpriv"));
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                bin,
            ]);
            return Some(c);
        }
    }
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        if Path::new(dir).join("runuser").exists() {
            let mut c = Command::new(Path::new(dir).join("runuser"));
            c.args(["-u", "nobody", "--", bin]);
            return Some(c);
        }
    }
    None
}

#[test]
fn not_permitted_as_nobody() {
    // Unprivileged: the memory hierarchy is root's and mode 700, as cgroupfs directories
    // can be. As root, run the binary as nobody; as a user, make the directory 000.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let mem = f.path("/sys/fs/cgroup/memory");
    let run = match as_nobody() {
        Some(cmd) => {
            fs::set_permissions(&mem, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            let root = f.root().to_str().unwrap().to_string();
            cgleak_cmd(cmd, &["--host-root", &root, "status", "--output", "json"])
        }
        None if !is_root() => {
            fs::set_permissions(&mem, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
            on_fixture(&f, &["status", "--output", "json"])
        }
        None => panic!("running as root but neither setpriv nor runuser is installed: cannot test the unprivileged path"),
    };
    fs::set_permissions(&mem, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fail_with(
        &run,
        77,
        &["/sys/fs/cgroup/memory", "Permission denied", "run as root"],
    );
}

#[test]
fn unknown_release_string_still_works_and_says_the_era_is_guessed() {
    let f = cgleak_fixtures::debian_6_1_v2();
    fs::write(f.path("/proc/sys/kernel/osrelease"), "garbage\n").unwrap();
    let run = on_fixture(&f, &["status", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let s = run.json();
    assert_eq!(at(&s, "kernel.release"), "garbage");
    assert_eq!(at(&s, "kernel.era_exact"), false, "{s:#}");
    let notes = at(&s, "kernel.notes").as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains("garbage")
            && n.as_str().unwrap().contains("era unknown")),
        "{notes:?}"
    );
    // Not knowing the era, nothing is claimed exact.
    assert_ne!(at(&s, "memcg.ids_in_use_confidence"), "exact", "{s:#}");
    // The figures read from files are still there.
    assert_eq!(at(&s, "memcg.live").as_u64(), Some(f.truth.live_memcgs));

    let table = on_fixture(&f, &["status"]);
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(
        table.stdout.contains("guessed"),
        "the table says the era is guessed: {}",
        table.stdout
    );

    let check = on_fixture(&f, &["check", "--output", "json"]);
    assert!([0, 3].contains(&check.code), "{check:#?}");
    let c = check.json();
    let era = c["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "kernel_era")
        .unwrap();
    assert!(
        era["summary"].as_str().unwrap().contains("not recognised"),
        "{era}"
    );
}

#[test]
fn kubelet_root_that_does_not_exist_claims_no_orphans() {
    // With no kubelet state to compare with, no pod cgroup can be called an orphan.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let run = on_fixture(
        &f,
        &[
            "--kubelet-root-dir",
            "/nonexistent/kubelet",
            "status",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let s = run.json();
    assert!(at(&s, "kubepods.orphans").is_null(), "{s:#}");
    assert_eq!(at(&s, "kubepods.kubelet_pods_dir_found"), false);
    assert_eq!(
        at(&s, "kubepods.kubelet_pods_dir"),
        "/nonexistent/kubelet/pods"
    );
}

/// Regression: on a v2 host whose
/// cgroup root the caller cannot read, CgroupLayout::memory() (cgleak-readers
/// mountinfo.rs) swallows the EACCES on cgroup.controllers and cgleak says "no memory
/// cgroup controller is mounted" with exit 1, instead of exit 77 and "run as root".
#[test]
fn not_permitted_on_a_v2_root() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let root_dir = f.path("/sys/fs/cgroup");
    let run = match as_nobody() {
        Some(cmd) => {
            fs::set_permissions(
                &root_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
            let root = f.root().to_str().unwrap().to_string();
            cgleak_cmd(cmd, &["--host-root", &root, "status"])
        }
        None => {
            fs::set_permissions(
                &root_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o000),
            )
            .unwrap();
            on_fixture(&f, &["status"])
        }
    };
    fs::set_permissions(
        &root_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fail_with(&run, 77, &["/sys/fs/cgroup", "run as root"]);
}

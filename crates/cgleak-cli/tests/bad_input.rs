//! Broken or unusual host files: each gives a clear message naming the file or flag
//! and the documented exit code (1 runtime, 2 usage, 77 not permitted), never a panic
//! (every run is checked for one in common::fixture).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::fixture::{at, cgleak, cgleak_cmd, finding, on_fixture, Fixture, Run};

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

/// With `content` in the fixture's `host_path`, `cgleak <args>` fails with exit 1 and a
/// message naming `needles`.
fn fails_on(f: &Fixture, host_path: &str, content: &str, args: &[&str], needles: &[&str]) {
    fs::write(f.path(host_path), content).unwrap();
    fail_with(&on_fixture(f, args), 1, needles);
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
    fails_on(
        &f,
        "/proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t11\t37\t1\nmemory\tfour\t5037\t1\n",
        &["status"],
        &["/proc/cgroups", "line 3"],
    );
    fails_on(
        &f,
        "/proc/cgroups",
        "\u{0}\u{1}binary junk\n",
        &["check"],
        &["/proc/cgroups"],
    );
}

#[test]
fn garbage_in_v2_root_cgroup_stat() {
    let f = cgleak_fixtures::debian_6_1_v2();
    let stat = "/sys/fs/cgroup/cgroup.stat";
    fails_on(
        &f,
        stat,
        "nr_descendants 45\nnr_dying_descendants lots\n",
        &["status", "--output", "json"],
        &[stat, "nr_dying_descendants"],
    );
    fails_on(
        &f,
        stat,
        "just one token per line\n",
        &["check"],
        &["cgroup.stat"],
    );
}

#[test]
fn mountinfo_without_a_memory_controller() {
    // v1: the memory hierarchy is not mounted.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let mi = "/proc/self/mountinfo";
    let text = fs::read_to_string(f.path(mi)).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains(" /sys/fs/cgroup/memory "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without, "the fixture mounted memory");
    fails_on(
        &f,
        mi,
        &without,
        &["status"],
        &["no memory cgroup controller", mi],
    );

    // v2: cgroup2 is mounted but its root does not offer memory.
    let f = cgleak_fixtures::debian_6_1_v2();
    fails_on(
        &f,
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io pids\n",
        &["check", "--output", "json"],
        &["no memory cgroup controller"],
    );
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
    fails_on(
        &f,
        "/proc/self/mountinfo",
        "this is not a mount table\n",
        &["status"],
        &["/proc/self/mountinfo", "line 1"],
    );
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
    let osrelease = "/proc/sys/kernel/osrelease";
    fails_on(&f, osrelease, "\n", &["status"], &[osrelease]);
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

/// `cgleak <args>` on `f` without the right to read the directory `host_dir`: as root,
/// run as nobody with the directory 0700; as a user, with the directory 0000. Its mode
/// is 0755 again afterwards.
fn run_without_access(f: &Fixture, host_dir: &str, args: &[&str]) -> Run {
    let dir = f.path(host_dir);
    let chmod = |mode| fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    let run = match as_nobody() {
        Some(cmd) => {
            chmod(0o700);
            let root = f.root().to_str().unwrap().to_string();
            let mut all = vec!["--host-root", root.as_str()];
            all.extend_from_slice(args);
            cgleak_cmd(cmd, &all)
        }
        None if !is_root() => {
            chmod(0o000);
            on_fixture(f, args)
        }
        None => panic!("running as root but neither setpriv nor runuser is installed: cannot test the unprivileged path"),
    };
    chmod(0o755);
    run
}

#[test]
fn not_permitted_as_nobody() {
    // Unprivileged: the memory hierarchy is root's and mode 700, as cgroupfs directories
    // can be.
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let mem = "/sys/fs/cgroup/memory";
    let run = run_without_access(&f, mem, &["status", "--output", "json"]);
    fail_with(&run, 77, &[mem, "Permission denied", "run as root"]);
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
    let era = finding(&c, "kernel_era").unwrap();
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
    let run = run_without_access(&f, "/sys/fs/cgroup", &["status"]);
    fail_with(&run, 77, &["/sys/fs/cgroup", "run as root"]);
}

/// A standard output that cannot be written: a full device gives `cgleak: stdout: ...` and
/// exit 1; a reader that went away (`cgleak status | head -0`) exit 141 without a word of
/// it. Never
/// std's "failed printing to stdout" panic.
#[test]
fn stdout_full_or_closed() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_str().unwrap().to_string();
    for cmd in ["status", "check", "dying"] {
        for output in ["table", "json"] {
            let args = ["--host-root", root.as_str(), cmd, "--output", output];
            let full = fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
            let out = Command::new(env!("CARGO_BIN_EXE_cgleak")).args(args).stdout(full).stderr(std::process::Stdio::piped()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} {output} > /dev/full: {stderr}");
            assert!(stderr.lines().any(|l| l.starts_with("cgleak: stdout: No space left on device")), "{cmd} {output}: {stderr}");
            assert!(!stderr.contains("panicked"), "{cmd} {output}: {stderr}");

            // A pipe whose read end is closed before cgleak writes.
            let (r, w) = std::io::pipe().unwrap();
            drop(r);
            let out = Command::new(env!("CARGO_BIN_EXE_cgleak")).args(args).stdout(w).stderr(std::process::Stdio::piped()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(141), "{cmd} {output} into a closed pipe: {stderr}");
            assert!(!stderr.contains("stdout") && !stderr.contains("panicked"), "{cmd} {output} into a closed pipe: {stderr}");
        }
    }
}

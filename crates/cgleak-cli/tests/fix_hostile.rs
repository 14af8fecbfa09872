//! The fixer against hostile state: forged and damaged journals, linked and loose state
//! directories, a lock that is a symlink, and the release binary's failpoints.
//!
//! A journal is data, not a program: `cgleak fix --resume` carries out only what the
//! action's own planner would do on this host, and refuses anything else (exit 5) naming
//! the journal's line and field, changing nothing. Every test runs on a host root of
//! crates/cgleak-fixtures in a temporary directory (the boot-loader generators of the
//! nokmem tests are real executables there: Debian's busybox-static), with a temporary
//! state directory; each forged journal is one that would do harm if it were carried out
//! (a file written outside the root, `touch /PWNED` run in the root, an empty directory
//! tree outside the cgroup hierarchies removed), and each test checks that harm is absent.
//!
//! These tests run `fix --apply` and `--resume`, which need root; they fail loudly otherwise.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;

use common::fixture::{cgleak_cmd, Run};
use common::kernel::cgroup_dirs as dirs_under;

fn assert_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "fix_hostile tests run `fix --apply` and `--resume`: they must run as root (euid is {euid})");
}

fn state_dir() -> TempDir {
    tempfile::Builder::new().prefix("cgleak-test-hostile-state-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn scratch(what: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("cgleak-test-hostile-{what}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `cgleak --host-root <root> <args>` (the test build), with `env` and no CGLEAK_FAILPOINT of the caller's.
fn on_root(root: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.env("TZ", "UTC").env_remove("CGLEAK_FAILPOINT").envs(env.iter().copied());
    let root = root.to_str().expect("utf-8 path").to_string();
    let mut all = vec!["--host-root", root.as_str()];
    all.extend_from_slice(args);
    cgleak_cmd(c, &all)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `fix --resume --yes --state-dir <state>` on `root`.
fn resume(root: &Path, state: &Path) -> Run {
    on_root(root, &[], &["fix", "--resume", "--yes", "--state-dir", s(state)])
}

fn journal_path(state: &Path) -> PathBuf {
    state.join("fix-journal.jsonl")
}

fn read_journal(state: &Path) -> Vec<Value> {
    let text = fs::read_to_string(journal_path(state)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write_journal(state: &Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    fs::write(journal_path(state), text).unwrap();
    fs::set_permissions(journal_path(state), fs::Permissions::from_mode(0o600)).unwrap();
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A begin record of `action` with `detail`, and a view that claims nothing.
fn begin(action: &str, detail: Value) -> Value {
    let view = json!({ "action": action, "summary": "", "steps": [], "expected_gain": "", "notes": [], "nothing_to_do": null, "refused": null });
    json!({ "type": "begin", "id": format!("{action}-1-4242"), "action": action, "at_unix": now(), "pid": 4242, "plan": { "view": view, "detail": detail } })
}

fn intent(step: u32) -> Value {
    json!({ "type": "intent", "step": step, "at_unix": now() })
}

/// A refused resume: exit 5, the journal's line and field named, the way out named, and
/// the journal still there (nothing was done).
#[track_caller]
fn assert_refused(run: &Run, state: &Path, line: usize, field: &str) {
    assert_eq!(run.code, 5, "{run:#?}");
    let want = format!("{} line {line}, {field}:", journal_path(state).display());
    assert!(run.stderr.contains(&want), "the refusal should name `{want}`: {run:#?}");
    assert!(run.stderr.contains("cgleak fix --discard-journal"), "{run:#?}");
    assert!(journal_path(state).exists(), "the refused journal was moved");
}

/// busybox-static as /bin/busybox of `root`, with `sh` and `touch`: a command the root's
/// shell is asked to run would run.
fn install_busybox(root: &Path) {
    let bb = Path::new("/bin/busybox");
    assert!(bb.is_file(), "these tests run shell commands in the host root on Debian's busybox-static: /bin/busybox is missing (apt-get install busybox-static)");
    fs::create_dir_all(root.join("bin")).unwrap();
    {
        let _lock = cgleak_fixtures::exec_lock();
        fs::copy(bb, root.join("bin/busybox")).unwrap();
    }
    for a in ["sh", "touch"] {
        let _ = fs::remove_file(root.join("bin").join(a));
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    // The control: a command run in this root does run.
    let out = {
        let _lock = cgleak_fixtures::exec_lock();
        Command::new("chroot").arg(root).args(["/bin/sh", "-c", "touch /CONTROL"]).stdin(Stdio::null()).output().unwrap()
    };
    assert!(out.status.success() && root.join("CONTROL").exists(), "sh does not run in {}: {out:?}", root.display());
    fs::remove_file(root.join("CONTROL")).unwrap();
}

/// A Debian 10 root (the debian-4.19-v1-dying fixture) with /etc/default/grub and busybox.
fn debian_root() -> cgleak_fixtures::Fixture {
    assert_root();
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    f.host().file("/etc/default/grub", "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet\"\n");
    install_busybox(f.root());
    f
}

/// A nokmem plan as the planner writes one (/etc/default/grub backed up), with `edits`,
/// `command` and `steps` given.
fn nokmem_detail(root: &Path, state: &Path, edits: Value, command: Value, steps: Value) -> Value {
    let backup_dir = state.join("nokmem-backup-1700000000");
    json!({
        "bootloader": "grub",
        "host_root": root,
        "backup_dir": backup_dir,
        "backups": [{ "file": root.join("etc/default/grub"), "host_file": "/etc/default/grub", "copy": backup_dir.join("etc/default/grub"), "mode": 0o644 }],
        "edits": edits,
        "command": command,
        "verify": [],
        "verify_kernel_lines": [],
        "steps": steps,
    })
}

#[test]
fn a_forged_nokmem_journal_planting_a_file_outside_the_root_is_refused_naming_line_and_field() {
    let f = debian_root();
    let state = state_dir();
    let outside = scratch("outside");
    let planted = outside.path().join("planted");
    // The edit names /etc/default/grub but writes elsewhere.
    let edits = json!([{ "file": planted, "host_file": "/etc/default/grub", "content": "GRUB_CMDLINE_LINUX=\"init=/bin/sh\"\n" }]);
    let detail = nokmem_detail(f.root(), state.path(), edits, Value::Null, json!(["backup", "edit", "verify"]));
    write_journal(state.path(), &[begin("nokmem", detail.clone()), intent(1)]);
    let run = resume(f.root(), state.path());
    assert_refused(&run, state.path(), 1, "plan.detail.edits[0].file");
    assert!(!planted.exists(), "the forged journal planted {}", planted.display());

    // At the right path, but not what nokmem writes there: the content is refused too.
    let mut d = detail.clone();
    d["edits"][0]["file"] = json!(f.path("/etc/default/grub"));
    write_journal(state.path(), &[begin("nokmem", d), intent(1)]);
    let run = resume(f.root(), state.path());
    assert_refused(&run, state.path(), 1, "plan.detail.edits[0].content");
    assert_eq!(fs::read_to_string(f.path("/etc/default/grub")).unwrap(), "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet\"\n");

    // A file outside the boot loader's, named by its host path.
    let mut d = detail;
    d["edits"][0] = json!({ "file": f.path("/etc/shadow"), "host_file": "/etc/shadow", "content": "root::0:0:99999:7:::\n" });
    write_journal(state.path(), &[begin("nokmem", d), intent(1)]);
    let run = resume(f.root(), state.path());
    assert_refused(&run, state.path(), 1, "plan.detail.edits[0].host_file");
    assert!(!f.path("/etc/shadow").exists());
}

#[test]
fn a_forged_nokmem_journal_running_touch_pwned_is_refused() {
    let f = debian_root();
    let state = state_dir();
    let detail = nokmem_detail(f.root(), state.path(), json!([]), json!(["/bin/sh", "-c", "touch /PWNED"]), json!(["backup", "command", "verify"]));
    // Step 1 done, the command's step in flight: a resume would run it next.
    write_journal(state.path(), &[begin("nokmem", detail.clone()), intent(1), json!({ "type": "done", "step": 1, "at_unix": now(), "result": {} }), intent(2)]);
    let run = resume(f.root(), state.path());
    assert_refused(&run, state.path(), 1, "plan.detail.command");
    assert!(run.stderr.contains("not a boot loader generator nokmem runs"), "{run:#?}");
    assert!(!f.path("/PWNED").exists(), "the forged journal's command ran in the host root");
    // A rollback is refused alike: the plan is checked before anything is done either way.
    let run = on_root(f.root(), &[], &["fix", "--resume", "--rollback", "--yes", "--state-dir", s(state.path())]);
    assert_refused(&run, state.path(), 1, "plan.detail.command");

    // A generator's name at a path of the journal's choosing, or with arguments nokmem never gives.
    f.host().file("/usr/sbin/update-grub", "#!/bin/sh\ntouch /PWNED\n");
    fs::set_permissions(f.path("/usr/sbin/update-grub"), fs::Permissions::from_mode(0o755)).unwrap();
    for (argv, why) in [
        (json!(["/tmp/update-grub"]), "is not the update-grub found at its standard place"),
        (json!(["/usr/sbin/update-grub", "--output=/etc/passwd"]), "not the arguments nokmem gives update-grub"),
        (json!(["/usr/sbin/grubby", "--update-kernel=ALL", "--args=cgroup.memory=nokmem init=/bin/sh"]), "is not the grubby found"),
    ] {
        let mut d = detail.clone();
        d["command"] = argv.clone();
        write_journal(state.path(), &[begin("nokmem", d), intent(1)]);
        let run = resume(f.root(), state.path());
        assert_refused(&run, state.path(), 1, "plan.detail.command");
        assert!(run.stderr.contains(why), "{argv}: {run:#?}");
        assert!(!f.path("/PWNED").exists(), "{argv} ran");
    }
}

#[test]
fn a_forged_gc_journal_naming_a_cgroup_outside_the_hierarchies_is_refused() {
    assert_root();
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let state = state_dir();
    // A real journal first: gc planned on this root and killed at its first step.
    let killed = on_root(f.root(), &[("CGLEAK_FAILPOINT", "before:1")], &["fix", "gc", "--min-age", "0", "--apply", "--yes", "--state-dir", s(state.path())]);
    assert_eq!(killed.code, -1, "{killed:#?}");
    let good = read_journal(state.path());
    let pod = good[0]["plan"]["detail"]["pods"][0].clone();
    assert!(pod["tops"].as_array().is_some_and(|t| !t.is_empty()), "{pod}");

    // An empty tree outside every hierarchy: gc's rmdir, deepest first, would remove it all.
    let outside = scratch("gc-outside");
    let victim = outside.path().join("victim");
    fs::create_dir_all(victim.join("a/b")).unwrap();
    let before = dirs_under(&victim);
    let forge = |edit: &dyn Fn(&mut Value)| {
        let mut records = good.clone();
        edit(&mut records[0]["plan"]["detail"]["pods"][0]);
        write_journal(state.path(), &records);
        resume(f.root(), state.path())
    };
    let run = forge(&|p| p["tops"][0][0] = json!(victim));
    assert_refused(&run, state.path(), 1, "plan.detail.pods[0].tops[0]");
    assert!(run.stderr.contains("is not") && run.stderr.contains("under a cgroup hierarchy mounted on this host"), "{run:#?}");
    for (rel, field) in [(json!("../../../../victim"), "plan.detail.pods[0].rel"), (json!(""), "plan.detail.pods[0].rel"), (json!("kubepods/burstable/notapod"), "plan.detail.pods[0].rel")] {
        let run = forge(&|p| p["rel"] = rel.clone());
        assert_refused(&run, state.path(), 1, field);
    }
    let run = forge(&|p| p["uid"] = json!("x/../y"));
    assert_refused(&run, state.path(), 1, "plan.detail.pods[0].uid");
    // Made under another --host-root.
    let mut records = good.clone();
    records[0]["plan"]["detail"]["host_root"] = json!(outside.path());
    write_journal(state.path(), &records);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.host_root");
    assert_eq!(dirs_under(&victim), before, "the forged journals removed directories outside the hierarchies");

    // The journal as the fixer wrote it passes the check (its rmdir then fails on the
    // fixture's plain directories, which hold files: exit 1, not a refusal).
    write_journal(state.path(), &good);
    let run = resume(f.root(), state.path());
    assert_ne!(run.code, 5, "the fixer's own journal was refused: {run:#?}");
}

#[test]
fn forged_reboot_reclaim_and_migrate_journals_are_refused() {
    assert_root();
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let state = state_dir();
    // reboot: a cron file with a command in it, or a sentinel of our look outside /run.
    let cron = f.path("/etc/cron.d/cgleak");
    write_journal(state.path(), &[begin("reboot", json!({ "sentinel": cron, "content": "* * * * * root touch /PWNED\n", "existed": false })), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.sentinel");
    write_journal(state.path(), &[begin("reboot", json!({ "sentinel": f.path("/run/reboot-required"), "content": "* * * * * root touch /PWNED\n", "existed": false })), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.content");
    assert!(!cron.exists() && !f.path("/run/reboot-required").exists());
    // Nor does a plan write one there: --sentinel names a file in /run or /var/run.
    let run = on_root(f.root(), &[], &["fix", "reboot", "--force", "--sentinel", "/etc/cron.d/cgleak", "--state-dir", s(state_dir().path())]);
    assert!(run.code == 2 && run.stderr.contains("--sentinel /etc/cron.d/cgleak: kured's sentinel is a file in /run or /var/run"), "{run:#?}");

    // reclaim: a file that is not /proc/sys/vm/drop_caches, or a stamp elsewhere.
    let outside = scratch("reclaim-outside");
    let target = outside.path().join("target");
    fs::write(&target, "keep").unwrap();
    let drop = |file: &Path, stamp: &Path| json!({ "method": { "DropCaches": { "file": file, "values": [1], "stamp": stamp } } });
    write_journal(state.path(), &[begin("reclaim", drop(&target, &state.path().join("reclaim-last-drop"))), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.method.DropCaches.file");
    write_journal(state.path(), &[begin("reclaim", drop(&f.path("/proc/sys/vm/drop_caches"), &target)), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.method.DropCaches.stamp");
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep");

    // migrate: a "memory hierarchy" that is not this host's.
    let migrate = |root: &Path, host: &str, top: &str| {
        json!({ "memory_root": root, "memory_root_host": host, "parent": "", "top": top, "mirror": format!("cgleak-migrate.{top}"), "move_charge": "works", "cgroups": [] })
    };
    write_journal(state.path(), &[begin("migrate", migrate(Path::new("/etc"), "/etc", "kubepods")), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.memory_root");
    let mem = f.path("/sys/fs/cgroup/memory");
    write_journal(state.path(), &[begin("migrate", migrate(&mem, "/sys/fs/cgroup/memory", "..")), intent(1)]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 1, "plan.detail.top");
    // An amendment dropping a cgroup above the subtree names its own line.
    let amend = json!({ "type": "amend", "step": 1, "change": { "drop": ["../../../../etc"] } });
    write_journal(state.path(), &[begin("migrate", migrate(&mem, "/sys/fs/cgroup/memory", "kubepods")), intent(1), amend]);
    assert_refused(&resume(f.root(), state.path()), state.path(), 3, "change.drop[0]");
}

/// A reboot fix killed after writing its intent, on a healthy fixture (`--force`).
fn killed_reboot(root: &Path, state: &Path) {
    let killed = on_root(root, &[("CGLEAK_FAILPOINT", "before:1")], &["fix", "reboot", "--force", "--apply", "--yes", "--state-dir", s(state)]);
    assert!(killed.code == -1 && killed.stderr.contains("failpoint"), "{killed:#?}");
    assert!(journal_path(state).exists());
}

/// `script` of util-linux: `cmd` on a terminal of its own, fed `input`.
fn on_a_terminal(cmd: &[&str], input: &str) -> (i32, String) {
    let line = cmd.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]).env("TZ", "UTC").env_remove("CGLEAK_FAILPOINT").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = {
        let _lock = cgleak_fixtures::exec_lock();
        c.spawn().expect("script (util-linux) runs a command on a terminal")
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn resume_shows_the_checked_plan_not_the_journals_view_and_asks_first() {
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let state = state_dir();
    killed_reboot(f.root(), state.path());
    // The journal's view lies about what the step does: it is never shown.
    let mut records = read_journal(state.path());
    records[0]["plan"]["view"]["steps"][0]["title"] = json!("nothing at all, trust me");
    write_journal(state.path(), &records);
    let sentinel = f.path("/var/run/reboot-required");

    // No terminal, no --yes: a usage error naming --yes, after the remaining plan.
    let run = on_root(f.root(), &[], &["fix", "--resume", "--state-dir", s(state.path())]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("add --yes"), "{run:#?}");
    assert!(run.stdout.contains("remaining (checked against this host)") && run.stdout.contains("1. write /var/run/reboot-required  (interrupted: run again)"), "{run:#?}");
    assert!(!run.stdout.contains("trust me"), "the journal's own view was shown: {run:#?}");
    assert!(!sentinel.exists());

    // On a terminal: asked; no means nothing done (5), yes resumes.
    let bin = env!("CARGO_BIN_EXE_cgleak");
    let args = ["--host-root", s(f.root()), "fix", "--resume", "--state-dir", s(state.path())];
    let cmd: Vec<&str> = std::iter::once(bin).chain(args).collect();
    let (code, out) = on_a_terminal(&cmd, "n\n");
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("Resume this fix (1 steps left) on this node? [y/N]") && out.contains("not confirmed"), "{out}");
    assert!(!sentinel.exists() && journal_path(state.path()).exists());
    let (code, out) = on_a_terminal(&cmd, "y\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[done] write /var/run/reboot-required"), "{out}");
    assert!(fs::read_to_string(&sentinel).unwrap().starts_with("cgleak: "));
    assert!(!journal_path(state.path()).exists());
}

#[test]
fn a_rollback_never_removes_a_file_cgleak_did_not_write() {
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let state = state_dir();
    // A journal that says it created the host's /run/reboot-required, which holds something else.
    let theirs = f.path("/run/reboot-required");
    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    fs::write(&theirs, "*** System restart required ***\n").unwrap();
    write_journal(state.path(), &[begin("reboot", json!({ "sentinel": theirs, "content": "cgleak: forged\n", "existed": false })), intent(1)]);
    let run = on_root(f.root(), &[], &["fix", "--resume", "--rollback", "--yes", "--state-dir", s(state.path()), "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.json()["result"]["notes"].to_string().contains("not a sentinel cgleak wrote"), "{run:#?}");
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "*** System restart required ***\n");
    // Forward, it is not written over either.
    write_journal(state.path(), &[begin("reboot", json!({ "sentinel": theirs, "content": "cgleak: forged\n", "existed": false })), intent(1)]);
    let run = resume(f.root(), state.path());
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "*** System restart required ***\n");
}

#[test]
fn a_symlinked_state_dir_or_lock_and_a_group_writable_state_dir_are_refused() {
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let apply = |state: &Path| on_root(f.root(), &[], &["fix", "reboot", "--force", "--apply", "--yes", "--state-dir", s(state)]);
    let sentinel = f.path("/var/run/reboot-required");

    // The state dir is a link: refused, naming it; nothing made through it.
    let real = state_dir();
    let links = scratch("links");
    let link = links.path().join("state");
    symlink(real.path(), &link).unwrap();
    let run = apply(&link);
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(run.stderr.contains(&format!("{}: a symbolic link", link.display())), "{run:#?}");
    assert!(fs::read_dir(real.path()).unwrap().next().is_none(), "something was made through the link");
    // A component on the way is a link.
    let run = apply(&link.join("fix"));
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(run.stderr.contains("a symbolic link"), "{run:#?}");

    // The lock is a link to a file elsewhere: refused, and that file is left as it was.
    let state = state_dir();
    let precious = links.path().join("precious");
    fs::write(&precious, "must not be truncated").unwrap();
    symlink(&precious, state.path().join("fix.lock")).unwrap();
    let run = apply(state.path());
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(run.stderr.contains("fix.lock: a symbolic link"), "{run:#?}");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "must not be truncated");
    assert!(!sentinel.exists());

    // Group-writable, or another user's: refused by plan, apply and resume alike.
    let state = state_dir();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o770)).unwrap();
    for args in [vec!["fix", "reboot", "--force", "--apply", "--yes"], vec!["fix", "reboot", "--force"], vec!["fix", "--resume", "--yes"]] {
        let mut all = args.clone();
        all.extend(["--state-dir", s(state.path())]);
        let run = on_root(f.root(), &[], &all);
        assert_eq!(run.code, 5, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(&format!("{}: the directory is writable by its group (mode 0770)", state.path().display())), "{args:?}: {run:#?}");
    }
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(state.path(), Some(65534), None).unwrap();
    let run = apply(state.path());
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(run.stderr.contains("owned by uid 65534, not root"), "{run:#?}");
    assert!(!sentinel.exists());
}

#[test]
fn a_garbage_journal_names_its_line_and_discard_journal_sets_it_aside() {
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let state = state_dir();
    fs::write(journal_path(state.path()), "{\"type\":\"begin\",\"id\":\"gc-1-2\",\"action\":\"gc\",\"at_unix\":1.0,\"pid\":2,\"plan\":{}}\n\u{0}\u{1}garbage\n{}\n").unwrap();
    let way_out = format!("cgleak fix --discard-journal --state-dir {}", state.path().display());
    for args in [vec!["fix", "reboot", "--force", "--apply", "--yes"], vec!["fix", "--resume", "--yes"], vec!["fix", "gc"]] {
        let mut all = args.clone();
        all.extend(["--state-dir", s(state.path())]);
        let run = on_root(f.root(), &[], &all);
        assert_eq!(run.code, 5, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(&format!("{}: not a fix journal: line 2", journal_path(state.path()).display())), "{args:?}: {run:#?}");
        assert!(run.stderr.contains(&way_out), "{args:?}: {run:#?}");
    }
    assert!(!f.path("/var/run/reboot-required").exists());

    let run = on_root(f.root(), &[], &["fix", "--discard-journal", "--state-dir", s(state.path()), "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v = run.json();
    assert_eq!(v["discarded"], true, "{v:#}");
    let archived = PathBuf::from(v["archived"].as_str().unwrap());
    assert!(archived.starts_with(state.path().join("fix-journals")), "{v:#}");
    let name = archived.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("discarded-") && name.ends_with("-unreadable.jsonl"), "{name}");
    assert!(v["unreadable"].as_str().is_some_and(|u| u.contains("line 2")), "{v:#}");
    assert!(!journal_path(state.path()).exists());
    // Nothing else is in the way now.
    let run = on_root(f.root(), &[], &["fix", "reboot", "--force", "--apply", "--yes", "--state-dir", s(state.path())]);
    assert_eq!(run.code, 0, "{run:#?}");
    let run = on_root(f.root(), &[], &["fix", "--discard-journal", "--state-dir", s(state.path())]);
    assert!(run.code == 0 && run.stdout.contains("nothing to discard"), "{run:#?}");

    // A readable unfinished journal is set aside with its id, and the run says what it left undone.
    fs::remove_file(f.path("/var/run/reboot-required")).unwrap();
    let state = state_dir();
    killed_reboot(f.root(), state.path());
    let run = on_root(f.root(), &[], &["fix", "--discard-journal", "--state-dir", s(state.path())]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("set aside: ") && run.stdout.contains("`reboot` fix") && run.stdout.contains("step 1 interrupted"), "{run:#?}");
    assert!(run.stdout.contains("nothing on the host was changed or undone"), "{run:#?}");
}

#[test]
fn the_fixers_state_is_under_the_host_root_and_root_only_by_default() {
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let run = on_root(f.root(), &[], &["fix", "reboot", "--force", "--apply", "--yes", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let dir = f.path("/var/lib/cgleak/fix");
    let journal = PathBuf::from(run.json()["result"]["journal"].as_str().unwrap());
    assert!(journal.starts_with(dir.join("fix-journals")), "{}", journal.display());
    for d in [&dir, &dir.join("fix-journals")] {
        let mode = fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
    assert!(dir.join("fix.lock").is_file());
    // The agent's directory is another one, and the fixer writes nothing there.
    assert!(!f.path("/var/lib/cgleak/agent").exists());

    // An unfinished journal of the old layout (in /var/lib/cgleak itself) is not overlooked.
    fs::remove_file(f.path("/var/run/reboot-required")).unwrap();
    let old = f.path("/var/lib/cgleak/fix-journal.jsonl");
    fs::write(&old, format!("{}\n", begin("reboot", json!({})))).unwrap();
    let run = on_root(f.root(), &[], &["fix", "reboot", "--force", "--apply", "--yes"]);
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(run.stderr.contains(&format!("{}: a fix journal of the old layout", old.display())), "{run:#?}");
    assert!(run.stderr.contains(&format!("cgleak fix --discard-journal --state-dir {}", f.path("/var/lib/cgleak").display())), "{run:#?}");
    let run = on_root(f.root(), &[], &["fix", "--discard-journal", "--state-dir", s(&f.path("/var/lib/cgleak"))]);
    assert_eq!(run.code, 0, "{run:#?}");
    let run = on_root(f.root(), &[], &["fix", "reboot", "--force", "--apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn status_and_check_read_the_old_layouts_history_too() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let t = now();
    let text: String = (0..60u64).map(|i| format!("{{\"at_unix_secs\":{},\"ids_in_use\":{},\"id_limit\":65535}}\n", t - 60.0 * (59 - i) as f64 - 5.0, 60000 + 50 * i)).collect();
    f.host().file("/var/lib/cgleak/agent-history.jsonl", text);
    let run = on_root(f.root(), &[], &["status", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["forecast"]["outcome"], "approaching", "{run:#?}");
    assert!(run.stderr.contains("the agent's history of the old layout is read too") && run.stderr.contains("read only"), "{run:#?}");
    let run = on_root(f.root(), &[], &["check", "--incidents-since", "0", "--output", "json"]);
    assert!(run.json()["findings"].to_string().contains("exhaustion_forecast"), "{run:#?}");
    // Read, never written: the agent's new directory is not made by a reader.
    assert!(!f.path("/var/lib/cgleak/agent").exists());
}

#[test]
fn the_release_binary_ignores_cgleak_failpoint_and_the_test_binary_honours_it() {
    assert_root();
    // The test build: killed at the failpoint, and a bad spec is a usage error.
    let f = cgleak_fixtures::debian_6_1_v2();
    let state = state_dir();
    let run = on_root(f.root(), &[("CGLEAK_FAILPOINT", "before:1")], &["fix", "reboot", "--force", "--apply", "--yes", "--state-dir", s(state.path())]);
    assert!(run.code == -1 && run.stderr.contains("failpoint"), "the test build must honour CGLEAK_FAILPOINT (--features failpoints): {run:#?}");
    let run = on_root(f.root(), &[("CGLEAK_FAILPOINT", "sometime")], &["fix", "reboot", "--force", "--state-dir", s(state.path())]);
    assert_eq!(run.code, 2, "{run:#?}");

    // The node binary of `cargo xtask dist` (release, no failpoints), run as a node runs it.
    let f = cgleak_fixtures::debian_6_1_v2();
    for fp in ["before:1", "after:1:stop", "sometime"] {
        let run = common::dist::run_in_root_with_env(f.root(), &["fix", "reboot", "--force", "--apply", "--yes"], &[("CGLEAK_FAILPOINT", fp)]);
        assert_eq!(run.code, 0, "CGLEAK_FAILPOINT={fp}: {run:#?}");
        assert!(!run.stderr.to_lowercase().contains("failpoint"), "the release binary spoke of the failpoint: {run:#?}");
        let sentinel = f.path("/var/run/reboot-required");
        assert!(fs::read_to_string(&sentinel).is_ok_and(|t| t.starts_with("cgleak: ")), "{fp}: {run:#?}");
        fs::remove_file(&sentinel).unwrap();
    }
}

#[test]
fn a_killed_fixer_is_killed_by_its_failpoint_signal() {
    // The crash tests' premise on this build: SIGKILL at the failpoint, nothing after.
    assert_root();
    let f = cgleak_fixtures::debian_6_1_v2();
    let state = state_dir();
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.args(["--host-root", s(f.root()), "fix", "reboot", "--force", "--apply", "--yes", "--state-dir", s(state.path())]).env("CGLEAK_FAILPOINT", "after:1");
    let out = c.output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert!(f.path("/var/run/reboot-required").exists() && journal_path(state.path()).exists());
}

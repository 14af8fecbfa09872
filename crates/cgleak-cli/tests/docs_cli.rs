//! `cgleak completions` and `cgleak man`: generated from the clap definition, accepted by
//! the shells and by groff, naming every command; `--version` names the commit and target.

mod common;

use std::process::{Command, Stdio};

use common::fixture::cgleak;

const COMMANDS: [&str; 10] = ["status", "check", "dying", "probe", "lab", "logs", "agent", "fix", "completions", "man"];

#[test]
fn bash_completion_passes_bash_n_and_completes_commands_and_flags() {
    let r = cgleak(&["completions", "bash"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cgleak.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let n = Command::new("bash").arg("-n").arg(&script).output().expect("bash");
    assert!(n.status.success(), "bash -n: {}", String::from_utf8_lossy(&n.stderr));
    // Sourced, it completes the commands after `cgleak ` and status's flags (bash calls the
    // function with the command, the word and the word before it).
    let probe = format!(
        "source {}; COMP_WORDS=(cgleak ''); COMP_CWORD=1; _cgleak cgleak '' cgleak; echo \"${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(cgleak status --o); COMP_CWORD=2; _cgleak cgleak --o status; echo \"${{COMPREPLY[*]}}\"",
        script.display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    for c in COMMANDS {
        assert!(first.split_whitespace().any(|w| w == c), "`cgleak <TAB>` lacks {c}: {first}");
    }
    assert!(lines.next().unwrap_or_default().split_whitespace().any(|w| w == "--output"), "{text}");
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for shell in ["zsh", "fish"] {
        let r = cgleak(&["completions", shell]);
        assert_eq!(r.code, 0, "{r:#?}");
        for c in COMMANDS {
            assert!(r.stdout.contains(c), "{shell} completion lacks {c}");
        }
    }
    assert!(cgleak(&["completions", "zsh"]).stdout.starts_with("#compdef cgleak"));
    let bad = cgleak(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("tcsh"), "{}", bad.stderr);
}

fn groff_warnings(page: &[u8]) -> String {
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (Debian groff-base)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn man_page_renders_without_warnings_and_dir_writes_one_page_per_command() {
    let r = cgleak(&["man"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stdout.starts_with(".ie \\n(.g .ds Aq") || r.stdout.contains(".TH cgleak 1"), "{}", &r.stdout[..200.min(r.stdout.len())]);
    assert_eq!(groff_warnings(r.stdout.as_bytes()), "", "groff warnings");
    for c in COMMANDS {
        assert!(r.stdout.contains(&format!("cgleak\\-{c}")), "man page lacks {c}");
    }
    assert!(r.stdout.contains("\\-\\-host\\-root"), "global flags documented");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let r = cgleak(&["man", "--dir", d]);
    assert_eq!(r.code, 0, "{r:#?}");
    for c in ["cgleak.1", "cgleak-status.1", "cgleak-check.1", "cgleak-fix-gc.1", "cgleak-agent.1"] {
        let page = std::fs::read(dir.path().join(c)).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(groff_warnings(&page), "", "{c}");
    }
    let missing = cgleak(&["man", "--dir", "/nonexistent/cgleak-man"]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains("/nonexistent/cgleak-man"), "{}", missing.stderr);
}

#[test]
fn version_names_the_commit_and_the_target() {
    let r = cgleak(&["--version"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("git");
    let head = String::from_utf8(head.stdout).unwrap();
    let want = format!("cgleak {} (commit {}, x86_64-unknown-linux-gnu)\n", env!("CARGO_PKG_VERSION"), head.trim());
    assert_eq!(r.stdout, want);
}

/// Every JSON document starts with `"schema_version": 1`: status, check, dying, probe,
/// logs (the document and each JSON line), fix and its plan.
#[test]
fn every_json_document_starts_with_its_schema_version() {
    let f = cgleak_fixtures::debian_4_19_v1_dying();
    let root = f.root().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kubelet.log");
    std::fs::write(
        &log,
        "Dec 22 00:00:00 node kubelet[1146]: E1222 00:00:00.000000 1146 pod_workers.go:951] \"Error syncing pod\" err=\"mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod1: no space left on device\"\n",
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let state = dir.path().join("fix-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let state = state.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["--host-root", &root, "status", "--output", "json"],
        vec!["--host-root", &root, "check", "--output", "json"],
        vec!["--host-root", &root, "dying", "--output", "json"],
        vec!["--host-root", &root, "fix", "gc", "--state-dir", state, "--output", "json"],
        vec!["logs", log, "--output", "json"],
    ];
    for args in &runs {
        let r = cgleak(args);
        assert!(r.stdout.starts_with("{\n  \"schema_version\": 1,\n"), "{args:?}: {r:#?}");
    }
    let r = cgleak(&["logs", log, "--output", "jsonl"]);
    assert_eq!(r.stdout.lines().count(), 1, "{r:#?}");
    for line in r.stdout.lines() {
        assert!(line.starts_with("{\"schema_version\":1,"), "{line}");
    }
}

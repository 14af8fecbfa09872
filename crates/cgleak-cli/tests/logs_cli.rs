//! `cgleak logs` end to end: files, globs, rotated and gzip generations, stdin, journald
//! (a stand-in journalctl playing a recorded `journalctl -o json`), /dev/kmsg under
//! --host-root, the output formats and exit codes, --since, --follow, and input that
//! must never make it panic or lose count of lines.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use common::fixture::{cgleak, cgleak_cmd, Run};

const POD: &str = "0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c";
const CID: &str = "3f1e9a7c5b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

/// A kubelet line (syslog form) of a failed memcg mkdir with `errno_text`.
fn kubelet_mkdir(time: &str, errno_text: &str) -> String {
    format!(
        "{time} node-1 kubelet[1146]: E1222 08:00:00.498519    1146 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"CreatePodSandbox\\\" for \\\"web-7c5ddbdf54-4hgk9_default({POD})\\\" with CreatePodSandboxError: \\\"Failed to create sandbox for pod: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{POD}/{CID}: {errno_text}: unknown\\\"\" pod=\"default/web-7c5ddbdf54-4hgk9\" podUID=\"{POD}\""
    )
}

fn ordinary(i: usize) -> String {
    format!("Dec 22 08:00:{:02} node-1 kubelet[1146]: I1222 08:00:00.000000    1146 kubelet.go:2457] \"SyncLoop (PLEG): event for pod\" pod=\"default/web-{i}\"", i % 60)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn write_aged(path: &Path, content: &[u8], age_secs: u64) {
    fs::write(path, content).unwrap();
    File::options().write(true).open(path).unwrap().set_modified(SystemTime::now() - Duration::from_secs(age_secs)).unwrap();
}

fn jsonl(run: &Run) -> Vec<Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{run:#?}"))).collect()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

const KEYS: [&str; 11] = ["kind", "errno", "component", "time", "host", "cgroup_path", "pod_uid", "container_id", "source", "line", "raw"];

#[test]
fn rotated_generations_and_gzip_in_order_with_line_numbers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut old = (0..5).map(ordinary).collect::<Vec<_>>();
    old.insert(3, kubelet_mkdir("Dec 22 08:00:00", "no space left on device"));
    write_aged(&dir.join("kubelet.log.2.gz"), &gz((old.join("\n") + "\n").as_bytes()), 7200);
    write_aged(&dir.join("kubelet.log.1"), (kubelet_mkdir("Dec 22 09:00:00", "device or resource busy") + "\n").as_bytes(), 3600);
    let cur = format!("{}\n{}\n{}\n", ordinary(1), ordinary(2), kubelet_mkdir("Dec 22 10:00:00", "cannot allocate memory"));
    write_aged(&dir.join("kubelet.log"), cur.as_bytes(), 0);
    fs::write(dir.join("unrelated.log"), kubelet_mkdir("Dec 22 10:00:00", "no space left on device")).unwrap();

    let run = cgleak(&["logs", &format!("{}/kubelet.log*", dir.display()), "--output", "jsonl"]);
    assert_eq!(run.code, 3, "incidents found: {run:#?}");
    let v = jsonl(&run);
    let got: Vec<(String, u64, &str)> = v.iter().map(|i| (i["source"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), i["line"].as_u64().unwrap(), i["errno"].as_str().unwrap())).collect();
    assert_eq!(got, [("kubelet.log.2.gz".to_string(), 4, "ENOSPC"), ("kubelet.log.1".into(), 1, "EBUSY"), ("kubelet.log".into(), 3, "ENOMEM")]);
    for i in &v {
        let keys: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        let mut k = keys.clone();
        k.sort_unstable();
        assert_eq!(k, want, "exactly the jsonl keys: {i}");
        assert_eq!(i["kind"], "memcg_create_failed");
        assert_eq!(i["pod_uid"], POD);
        assert_eq!(i["container_id"], CID);
        assert_eq!(i["component"], "kubelet");
        assert!(i["raw"].as_str().unwrap().contains("mkdir /sys/fs/cgroup/memory/kubepods"));
    }

    // The same as one JSON document, with the sources read and a summary.
    let run = cgleak(&["logs", &format!("{}/kubelet.log*", dir.display()), "--output", "json"]);
    assert_eq!(run.code, 3);
    let doc = run.json();
    assert_eq!(doc["incidents"].as_array().unwrap().len(), 3);
    assert_eq!(doc["summary"]["total"], 3);
    assert_eq!(doc["summary"]["by_errno"]["ENOSPC"], 1);
    let kinds: Vec<&str> = doc["sources"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["gzip", "file", "file"]);
    assert_eq!(doc["sources"][0]["lines"], 6);

    // Table: a row per incident, the sources and the summary.
    let run = cgleak(&["logs", &s(&dir.join("kubelet.log")), &s(&dir.join("kubelet.log.1"))]);
    assert_eq!(run.code, 3);
    assert!(run.stdout.starts_with("TIME "), "{}", run.stdout);
    assert!(run.stdout.contains("memcg_create_failed  ENOMEM") && run.stdout.contains("kubelet.log:3"), "{}", run.stdout);
    assert!(run.stdout.contains("summary\n  incidents     2: memcg_create_failed 2"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("pods          1: {POD}")), "{}", run.stdout);
}

#[test]
fn exit_codes_and_usage() {
    let d = tempfile::tempdir().unwrap();
    let quiet = d.path().join("quiet.log");
    fs::write(&quiet, (0..100).map(ordinary).collect::<Vec<_>>().join("\n")).unwrap();
    let run = cgleak(&["logs", &s(&quiet)]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("no incidents: no failed memcg creation, per-memcg slab failure or inotify exhaustion in 100 lines of 1 sources"), "{}", run.stdout);
    let run = cgleak(&["logs", &s(&quiet), "-o", "jsonl"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));

    // A named file that cannot be read: error 1, naming it, after the others were read.
    let run = cgleak(&["logs", &s(&quiet), "/no/such/kubelet.log"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("/no/such/kubelet.log"), "{}", run.stderr);
    let run = cgleak(&["logs", &format!("{}/nothing*", d.path().display())]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no file matches"), "{}", run.stderr);

    for (args, what) in [
        (vec!["logs", "--since", "yesterday"], "--since"),
        (vec!["logs", "-", "-"], "given twice"),
        (vec!["logs", "--follow", "-o", "json"], "--follow"),
        (vec!["status", "-o", "jsonl"], "jsonl is for `cgleak logs` only"),
        (vec!["check", "--output", "jsonl"], "jsonl is for `cgleak logs` only"),
        (vec!["check", "--incidents-since", "soon"], "--incidents-since"),
    ] {
        let run = cgleak(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(what), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn stdin() {
    let text = format!("{}\n{}\n", ordinary(0), kubelet_mkdir("Dec 22 08:00:00", "no space left on device"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.args(["logs", "-", "-o", "jsonl"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["source"].as_str(), v["line"].as_u64()), (Some("stdin"), Some(2)));
}

/// A stand-in `journalctl` that records its arguments and prints a recorded `-o json`.
fn fake_journalctl(dir: &Path, recorded: &Path, args_file: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let _lock = cgleak_fixtures::exec_lock();
    fs::write(bin.join("journalctl"), format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ncat '{}'\n", args_file.display(), recorded.display())).unwrap();
    fs::set_permissions(bin.join("journalctl"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

fn with_path(bin: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
    c
}

#[test]
fn journald_through_journalctl() {
    let d = tempfile::tempdir().unwrap();
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cgleak-readers/src/logs/testdata/journal-kubelet-enospc.json");
    let args_file = d.path().join("args");
    let bin = fake_journalctl(d.path(), &recorded, &args_file);
    // A host root with a journal: journalctl reads it with --root.
    let root = d.path().join("host");
    fs::create_dir_all(root.join("var/log/journal")).unwrap();
    let run = cgleak_cmd(with_path(&bin), &["--host-root", &s(&root), "logs", "--journal", "--since", "2023-12-22T07:00:00Z", "-o", "jsonl"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let args = fs::read_to_string(&args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "-o", "json", "--no-pager", "--all", "--root", &s(&root), "--since=@1703228400", "_SYSTEMD_UNIT=kubelet.service", "+", "_SYSTEMD_UNIT=containerd.service", "+",
            "_SYSTEMD_UNIT=docker.service", "+", "_SYSTEMD_UNIT=crio.service", "+", "_TRANSPORT=kernel"
        ]
    );
    let v = jsonl(&run);
    let first = &v[0];
    assert_eq!(first["kind"], "memcg_create_failed");
    assert_eq!(first["time"], "2023-12-22T08:00:00.498519Z");
    assert_eq!(first["host"], "ip-10-0-1-23.ec2.internal");
    assert_eq!((first["source"].as_str(), first["line"].as_u64()), (Some("journald"), Some(1)));
    // The containerd entry whose MESSAGE is an array of bytes (a stray 0xff) is found too.
    assert!(v.iter().any(|i| i["component"] == "containerd" && i["line"] == 4), "{v:#?}");
    assert!(v.iter().any(|i| i["kind"] == "slab_alloc_failed"), "{v:#?}");

    // --unit replaces the defaults; 'kernel' is the kernel's messages.
    let run = cgleak_cmd(with_path(&bin), &["--host-root", &s(&root), "logs", "--unit", "kubelet", "--unit", "kernel", "-o", "json"]);
    assert_eq!(run.code, 3);
    let args = fs::read_to_string(&args_file).unwrap();
    assert!(args.ends_with("_SYSTEMD_UNIT=kubelet.service\n+\n_TRANSPORT=kernel\n"), "{args}");
    assert_eq!(run.json()["sources"][0]["notes"].as_array().unwrap().last().unwrap(), "units: kubelet, kernel");
}

#[test]
fn kmsg_under_host_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::create_dir_all(root.join("proc")).unwrap();
    fs::write(root.join("proc/stat"), "cpu  1 2 3 4\nbtime 1703229790\n").unwrap();
    fs::write(
        root.join("dev/kmsg"),
        "6,1203,2210345123,-;IPv6: ADDRCONF(NETDEV_CHANGE): cali5c1e8f6a2b3: link becomes ready\n\
         4,1204,2210411987,-,caller=T4182;SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)\n\
         4,1205,2210411990,+;  cache: kmalloc-64(1673:3f1e9a7c5b2d), object size: 64, buffer size: 64, default order: 0, min order: 0\n\
         3,1206,2210500000,-;usb 1-1: device descriptor read/64, error -71\n SUBSYSTEM=usb\n DEVICE=c189:0\n",
    )
    .unwrap();
    let run = cgleak(&["--host-root", &s(root), "logs", "--kmsg", "-o", "jsonl"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let v = jsonl(&run);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0]["kind"], "slab_alloc_failed");
    assert_eq!(v[0]["source"], "/dev/kmsg");
    assert_eq!(v[0]["line"], 2, "the second record");
    // btime 1703229790 + 2210.411987 s since boot.
    assert_eq!(v[0]["time"], "2023-12-22T08:00:00.411987Z");
    // Not there at all: an error naming it.
    let run = cgleak(&["--host-root", &s(&root.join("proc")), "logs", "--kmsg"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("/dev/kmsg"), "{}", run.stderr);
}

#[test]
fn default_sources_under_host_root_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("var/log")).unwrap();
    write_aged(&root.join("var/log/syslog.2.gz"), &gz(format!("{}\n", kubelet_mkdir("Dec 21 08:00:00", "no space left on device")).as_bytes()), 86_400);
    write_aged(&root.join("var/log/syslog"), format!("{}\n", ordinary(0)).as_bytes(), 0);
    write_aged(&root.join("var/log/kern.log"), b"Dec 22 08:00:01 node-1 kernel: [ 2210.411987] IPv6: ADDRCONF(NETDEV_CHANGE): cali0: link becomes ready\n", 0);
    let run = cgleak(&["--host-root", &s(root), "logs", "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    let names: Vec<&str> = doc["sources"].as_array().unwrap().iter().map(|s| s["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["/var/log/syslog.2.gz", "/var/log/syslog", "/var/log/kern.log"], "host paths, oldest generation first");
    assert_eq!(doc["incidents"][0]["source"], "/var/log/syslog.2.gz");
    // Nothing at all under the root: say what was looked for.
    let empty = tempfile::tempdir().unwrap();
    let run = cgleak(&["--host-root", &s(empty.path()), "logs"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no log source found"), "{}", run.stderr);
}

#[test]
fn since_leaves_out_older_incidents() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("containerd.log");
    let line = |t: &str| format!("time=\"{t}\" level=error msg=\"RunPodSandbox for &PodSandboxMetadata{{Name:web,Uid:{POD},Namespace:default,Attempt:0,}} failed, error\" error=\"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/besteffort/pod{POD}/{CID}: no space left on device: unknown\"");
    fs::write(&p, format!("{}\n{}\n", line("2023-12-22T07:00:00.000000000Z"), line("2023-12-22T09:00:00.000000000Z"))).unwrap();
    let run = cgleak(&["logs", &s(&p), "--since", "2023-12-22T08:00:00Z", "-o", "jsonl"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let v = jsonl(&run);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["line"], 2);
    // A file last modified before --since is not read at all.
    write_aged(&p, fs::read(&p).unwrap().as_slice(), 3 * 86_400);
    let run = cgleak(&["logs", &s(&p), "--since", "1d", "-o", "json"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.json()["sources"][0]["notes"][0], "skipped: not modified since --since");
}

#[test]
fn hostile_input_never_panics_and_keeps_count() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("hostile.log");
    let mut data = Vec::new();
    // A 3 MB line with no newline until its end, with an errno text far past what is kept.
    data.extend(vec![b'x'; 3 << 20]);
    data.extend_from_slice(b" mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on device\n");
    // Bytes that are not UTF-8, NULs, a lone CR.
    data.extend_from_slice(b"\xff\xfe\x00\x80 \xc3\x28 mkdir \r\n");
    let mut x = 0x9e37_79b9u32;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(if x % 97 == 5 { b'\n' } else { x as u8 });
    }
    data.push(b'\n');
    let lines_before = data.iter().filter(|&&c| c == b'\n').count();
    data.extend_from_slice(kubelet_mkdir("Dec 22 08:00:00", "no space left on device").as_bytes());
    data.extend_from_slice(b"\n\xff\xff");
    fs::write(&p, &data).unwrap();
    let run = cgleak(&["logs", &s(&p), "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    let incidents = doc["incidents"].as_array().unwrap();
    let ours: Vec<&Value> = incidents.iter().filter(|i| i["pod_uid"] == POD).collect();
    assert_eq!(ours.len(), 1, "{incidents:#?}");
    assert_eq!(ours[0]["line"].as_u64(), Some(lines_before as u64 + 1));
    assert_eq!(doc["sources"][0]["lines"].as_u64(), Some(lines_before as u64 + 2));
    // The same bytes through stdin (the streaming reader, not the mapped one).
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.args(["logs", "-", "-o", "json"]).stdin(File::open(&p).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sources"][0]["lines"], doc["sources"][0]["lines"]);
}

/// A file of `mib` MiB with incidents every so often, a SLUB record among them.
fn big_log(path: &Path, mib: usize) -> usize {
    let mut w = std::io::BufWriter::new(File::create(path).unwrap());
    let (mut n, mut bytes, mut planted) = (0usize, 0usize, 0usize);
    while bytes < mib << 20 {
        let line = match n % 5003 {
            17 => kubelet_mkdir("Dec 22 08:00:00", "no space left on device"),
            2000 => "Dec 22 08:00:01 node-1 kernel: [ 2210.411987] SLUB: Unable to allocate memory on node -1 (gfp=0x20)".to_string(),
            2001 => "Dec 22 08:00:01 node-1 kernel: [ 2210.411990]   cache: kmalloc-256(1793:3f1e9a7c5b2d), object size: 256, buffer size: 256, default order: 1, min order: 0".to_string(),
            _ => ordinary(n),
        };
        if n % 5003 == 17 || n % 5003 == 2000 {
            planted += 1;
        }
        writeln!(w, "{line}").unwrap();
        bytes += line.len() + 1;
        n += 1;
    }
    w.flush().unwrap();
    planted
}

#[test]
fn a_big_file_read_in_parallel_parts_agrees_with_the_streaming_reader() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("syslog");
    let planted = big_log(&p, 40);
    let run = cgleak(&["logs", &s(&p), "-o", "jsonl"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let mapped = jsonl(&run);
    assert_eq!(mapped.len(), planted);
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.args(["logs", "-", "-o", "jsonl"]).stdin(File::open(&p).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = c.output().unwrap();
    let streamed: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let key = |v: &Value| (v["line"].as_u64(), v["kind"].as_str().map(str::to_string), v["raw"].as_str().map(str::to_string));
    assert_eq!(mapped.iter().map(key).collect::<Vec<_>>(), streamed.iter().map(key).collect::<Vec<_>>());
    let lines: Vec<u64> = mapped.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "in file order");
}

#[test]
fn follow_streams_new_incidents() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("kubelet.log");
    fs::write(&p, format!("{}\n", ordinary(0))).unwrap();
    let mut child = {
        let _lock = cgleak_fixtures::exec_lock();
        Command::new(env!("CARGO_BIN_EXE_cgleak"))
            .args(["logs", &s(&p), "--follow", "-o", "jsonl"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut f = File::options().append(true).open(&p).unwrap();
    writeln!(f, "{}", kubelet_mkdir("Dec 22 08:00:00", "no space left on device")).unwrap();
    drop(f);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let got = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let line = got.expect("an incident within 10 s of being appended");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["kind"].as_str(), v["line"].as_u64()), (Some("memcg_create_failed"), Some(2)));
}

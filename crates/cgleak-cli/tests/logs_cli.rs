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

const KEYS: [&str; 12] = ["schema_version", "kind", "errno", "component", "time", "host", "cgroup_path", "pod_uid", "container_id", "source", "line", "raw"];

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

/// A kubelet line (RFC 3339 syslog form, as rsyslog writes /var/log/messages on el7) of a
/// failed pod cgroup mkdir with `errno_text`.
fn el7_kubelet_mkdir(errno_text: &str) -> String {
    format!("2024-12-02T17:41:02.231466+00:00 node-7 kubelet[2817]: E1202 17:41:02.231466    2817 pod_workers.go:191] Error syncing pod {POD}, skipping: failed to ensure that the pod: {POD} cgroups exist and are correctly applied: failed to create container for [kubepods besteffort pod{POD}] : mkdir /sys/fs/cgroup/memory/kubepods/besteffort/pod{POD}: {errno_text}")
}

/// The logs of the host (`--host-root`) are explained by the host's own kernel build: el7
/// 693 (css_id) returns ENOSPC when its memcg IDs run out (facts §1a).
#[test]
fn hints_name_the_host_kernel_build() {
    let f = cgleak_fixtures::by_name("el7-693-kmem-leaking").expect("fixture");
    let root = f.root();
    assert_eq!(fs::read_to_string(root.join("proc/sys/kernel/osrelease")).unwrap().trim(), "3.10.0-693.21.1.el7.x86_64");
    fs::create_dir_all(root.join("var/log")).unwrap();
    fs::write(root.join("var/log/messages"), format!("{}\n", el7_kubelet_mkdir("no space left on device"))).unwrap();
    let run = cgleak(&["--host-root", &s(root), "logs", "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    let hints: Vec<&str> = doc["summary"]["era_hints"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(hints.len(), 2, "{hints:?}");
    assert!(hints[0].starts_with("ENOSPC: mkdir returns it when the memcg ID space is full on 3.10 vanilla (css_id), el7 3.10.0-514 and -693 (css_id)"), "{hints:?}");
    assert_eq!(hints[1], "this node runs 3.10.0-693.21.1.el7.x86_64 (el7, css_id): ENOSPC is its memcg-ID-exhaustion errno");
    // The table says the same under "what it says".
    let run = cgleak(&["--host-root", &s(root), "logs"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("                this node runs 3.10.0-693.21.1.el7.x86_64 (el7, css_id): ENOSPC is its memcg-ID-exhaustion errno\n"), "{}", run.stdout);
    // A named file under the host's /var/log is the host's too.
    let run = cgleak(&["--host-root", &s(root), "logs", &s(&root.join("var/log/messages")), "-o", "json"]);
    assert_eq!(run.json()["summary"]["era_hints"].as_array().unwrap().len(), 2);
    // A file from elsewhere may be another node's: no word about this kernel.
    let d = tempfile::tempdir().unwrap();
    let other = d.path().join("messages-from-node-9");
    fs::write(&other, format!("{}\n", el7_kubelet_mkdir("no space left on device"))).unwrap();
    let run = cgleak(&["--host-root", &s(root), "logs", &s(&other), "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let hints = run.json()["summary"]["era_hints"].clone();
    assert_eq!(hints.as_array().unwrap().len(), 1, "{hints}");
}

/// ENOSPC from mkdir on 4.4.131 (the 73f576c04b94 backport releases IDs at offline, ENOMEM
/// when they run out) is not the memcg ID leak: the hint says so and names what else it is.
#[test]
fn enospc_on_4_4_131_is_not_the_id_leak() {
    let f = cgleak_fixtures::by_name("linux-4.4-v1").expect("fixture");
    let root = f.root();
    assert_eq!(fs::read_to_string(root.join("proc/sys/kernel/osrelease")).unwrap().trim(), "4.4.131");
    fs::create_dir_all(root.join("var/log")).unwrap();
    fs::write(root.join("var/log/syslog"), format!("{}\n{}\n", el7_kubelet_mkdir("no space left on device"), el7_kubelet_mkdir("cannot allocate memory"))).unwrap();
    let run = cgleak(&["--host-root", &s(root), "logs", &s(&root.join("var/log/syslog")), "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let hints: Vec<String> = run.json()["summary"]["era_hints"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
    assert!(
        hints.contains(&"this node runs 4.4.131 (4.4.18+, IDs released at offline): it releases memcg IDs at offline and returns ENOMEM when they run out, so ENOSPC is not explained by the memcg ID leak: likely inotify watches on cgroup directories, live memcgs, or the kmem ID space with ~65k live kmem-active memcgs".to_string()),
        "{hints:#?}"
    );
    assert!(hints.contains(&"this node runs 4.4.131 (4.4.18+, IDs released at offline): ENOMEM is its memcg-ID-exhaustion errno".to_string()), "{hints:#?}");
}

/// `mapped` and `streamed` (jsonl incidents) agree on line, cgroup and raw text.
fn same_incidents(mapped: &[Value], streamed: &[Value]) {
    let key = |v: &Value| (v["line"].as_u64(), v["cgroup_path"].as_str().map(str::to_string), v["raw"].as_str().map(str::to_string));
    assert_eq!(mapped.iter().map(key).collect::<Vec<_>>(), streamed.iter().map(key).collect::<Vec<_>>());
}

/// `cgleak logs FILE` (mapped, in parts) and `cgleak logs - < FILE` (streamed), as jsonl.
fn mapped_and_streamed(p: &Path) -> (Vec<Value>, Vec<Value>) {
    let run = cgleak(&["logs", &s(p), "-o", "jsonl"]);
    assert!(run.code == 3 || run.code == 0, "{run:#?}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgleak"));
    c.args(["logs", "-", "-o", "jsonl"]).stdin(File::open(p).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = c.output().unwrap();
    let streamed = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (jsonl(&run), streamed)
}

/// The lines of a SLUB record of a pod's memcg, its rate-limit line first.
fn slub_record(ts: &str, nodes: usize) -> Vec<String> {
    let mut r = vec![
        format!("Dec 22 08:00:01 node-1 kernel: {ts} slab_out_of_memory: 4225 callbacks suppressed"),
        format!("Dec 22 08:00:01 node-1 kernel: {ts} SLUB: Unable to allocate memory on node -1 (gfp=0x20)"),
        format!("Dec 22 08:00:01 node-1 kernel: {ts}   cache: kmalloc-64(1701:pod{POD}), object size: 64, buffer size: 64, default order: 0, min order: 0"),
    ];
    r.extend((0..nodes).map(|n| format!("Dec 22 08:00:01 node-1 kernel: {ts}   node {n}: slabs: 12, objs: 768, free: 0")));
    r
}

/// A file written line by line, counting its bytes.
struct Counted {
    w: std::io::BufWriter<File>,
    bytes: usize,
}

impl Counted {
    fn put(&mut self, l: &str) -> usize {
        writeln!(self.w, "{l}").unwrap();
        self.bytes += l.len() + 1;
        self.bytes
    }
}

/// A file of exactly `total` bytes (above the parallel reader's 32 MiB) cut in `parts` by
/// the reader: the first cut falls right after line `after` of a SLUB record. Each part
/// must leave the other's record alone: the record is reported once, as streamed.
#[test]
fn slub_records_across_part_boundaries() {
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    assert!(parts >= 2, "this test needs 2 CPUs, so that cgleak cuts a big file in parts");
    let total: usize = 40 << 20;
    let first_cut = total / parts;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("kern.log");
    // After the rate-limit line, the header, the cache line, and between node lines.
    for after in 0..4 {
        let mut w = Counted { w: std::io::BufWriter::new(File::create(&p).unwrap()), bytes: 0 };
        let rec = slub_record("[ 2210.411987]", 2);
        let before: usize = rec[..after].iter().map(|l| l.len() + 1).sum();
        let mut n = 0;
        // Ordinary lines, then a filler so that line `after` of the record holds the cut's byte.
        while w.put(&ordinary(n)) + 4096 < first_cut - before {
            n += 1;
        }
        let filler = first_cut - before - 10 - w.bytes;
        w.put(&format!("Dec 22 08:00:00 node-1 kernel: {}", "x".repeat(filler - 32)));
        assert_eq!(w.bytes + before + 10, first_cut);
        for l in &rec {
            w.put(l);
        }
        // The line after the record belongs to the second part only, whatever it is.
        w.put(&kubelet_mkdir("Dec 22 08:00:02", "no space left on device"));
        // A lone node line and a lone cache line elsewhere are records too; a global record is not.
        w.put(&ordinary(1));
        w.put("Dec 22 08:00:02 node-1 kernel: [ 2211.000000]   node 0: slabs: 1, objs: 2, free: 0");
        w.put(&ordinary(2));
        w.put(&format!("Dec 22 08:00:02 node-1 kernel: [ 2211.100000]   cache: kmalloc-128(77:pod{POD}), object size: 128, buffer size: 128, default order: 0, min order: 0"));
        w.put("Dec 22 08:00:02 node-1 kernel: [ 2211.200000] SLUB: Unable to allocate memory on node -1 (gfp=0x20)");
        w.put("Dec 22 08:00:02 node-1 kernel: [ 2211.200000]   cache: kmalloc-64, object size: 64, buffer size: 64, default order: 0, min order: 0");
        let mut i = 3;
        while w.bytes + 300 < total {
            w.put(&ordinary(i));
            i += 1;
        }
        let last = total - w.bytes - 1;
        w.put(&format!("Dec 22 08:00:03 node-1 kernel: {}", "y".repeat(last - 31)));
        w.w.flush().unwrap();
        drop(w);
        assert_eq!(fs::metadata(&p).unwrap().len() as usize, total);
        let (mapped, streamed) = mapped_and_streamed(&p);
        same_incidents(&mapped, &streamed);
        let raws: Vec<&str> = mapped.iter().map(|v| v["raw"].as_str().unwrap()).collect();
        assert_eq!(mapped.len(), 5, "cut after line {after} of the record: {raws:#?}");
        assert!(raws[0].ends_with("callbacks suppressed") && raws[1].contains("SLUB: Unable") && raws[1].lines().count() == 4, "{raws:#?}");
        assert!(raws[2].contains("mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod"), "{raws:#?}");
        assert!(raws[3].contains("node 0: slabs: 1,") && raws[4].contains("kmalloc-128(77:"), "{raws:#?}");
    }
}

/// Who wrote a line shows in every output without changing jsonl's keys: `--output json`
/// gives each incident `trusted` and `origin`, the table a TRUSTED column and a summary
/// line, jsonl a note on stderr. Containers' logs are never read, even when named.
#[test]
fn trust_in_each_output_and_container_logs_are_never_read() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("messages");
    let tenant = format!("Dec 22 08:00:00 node-1 myapp[99]: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{POD}: no space left on device");
    fs::write(&log, format!("{tenant}\n{}\n", kubelet_mkdir("Dec 22 08:00:01", "no space left on device"))).unwrap();

    let run = cgleak(&["logs", &s(&log), "--output", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    let inc = doc["incidents"].as_array().unwrap();
    assert_eq!((inc[0]["trusted"].as_bool(), inc[0]["origin"].as_str()), (Some(false), Some("syslog tag myapp: not kubelet, a container runtime, systemd or the kernel")));
    assert_eq!((inc[1]["trusted"].as_bool(), inc[1]["origin"].as_str()), (Some(true), Some("syslog tag kubelet")));
    assert_eq!(doc["summary"]["untrusted"], 1);

    let run = cgleak(&["logs", &s(&log), "--output", "jsonl"]);
    assert_eq!(run.code, 3);
    for i in jsonl(&run) {
        let mut k: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(k, want, "exactly the jsonl keys: {i}");
    }
    assert!(run.stderr.contains("note: 1 of 2 incidents are from untrusted lines"), "{}", run.stderr);

    let run = cgleak(&["logs", &s(&log)]);
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(rows[0].contains(" COMPONENT   TRUSTED  KIND "), "{}", rows[0]);
    assert!(rows[1].contains(" myapp       no       memcg_create_failed"), "{}", rows[1]);
    assert!(rows[2].contains(" kubelet     yes      memcg_create_failed"), "{}", rows[2]);
    assert!(run.stdout.contains("  untrusted     1 of 2: not evidence (check leaves them out)"), "{}", run.stdout);
    assert!(run.stdout.contains("                1: syslog tag myapp: not kubelet"), "{}", run.stdout);

    // A container's log, named directly, through /var/log/containers' link, or by a glob: never read.
    let host = d.path().join("host");
    let pod_dir = host.join("var/log/pods/default_web_5b2f0a4c/app");
    fs::create_dir_all(&pod_dir).unwrap();
    fs::create_dir_all(host.join("var/log/containers")).unwrap();
    let cri = format!("2023-12-22T08:00:00.000000000Z stderr F {}", kubelet_mkdir("Dec 22 08:00:00", "no space left on device"));
    fs::write(pod_dir.join("0.log"), format!("{cri}\n")).unwrap();
    std::os::unix::fs::symlink(pod_dir.join("0.log"), host.join("var/log/containers/web_default_app-3f1e.log")).unwrap();
    let h = s(&host);
    for named in [s(&pod_dir.join("0.log")), format!("{h}/var/log/containers/web_default_app-3f1e.log"), format!("{h}/var/log/pods/*/*/*.log")] {
        let run = cgleak(&["--host-root", &h, "logs", &named]);
        assert_eq!(run.code, 2, "{named}: {run:#?}");
        assert!(run.stderr.contains("containers' logs (/var/log/pods, /var/log/containers) are never a source"), "{}", run.stderr);
    }
    // Beside a node's log: skipped with a note, the other read.
    let run = cgleak(&["--host-root", &h, "logs", &s(&pod_dir.join("0.log")), &s(&log), "-o", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    assert_eq!(doc["incidents"].as_array().unwrap().len(), 2);
    assert_eq!(doc["sources"][0]["kind"], "skipped");
    assert!(doc["sources"][0]["notes"][0].as_str().unwrap().starts_with("skipped: a container's log (/var/log/pods)"), "{}", doc["sources"]);
    assert!(run.stderr.contains("0.log skipped: a container's log"), "{}", run.stderr);
    // The same CRI line copied elsewhere is read, and untrusted: a container's output.
    let copy = d.path().join("copied.log");
    fs::write(&copy, format!("{cri}\n")).unwrap();
    let doc = cgleak(&["logs", &s(&copy), "-o", "json"]).json();
    assert!(doc["incidents"][0]["origin"].as_str().unwrap().starts_with("a container's output (CRI log format"), "{doc}");
}

/// A kubelet line written 20 minutes ago on a Chicago node, in syslog's zone-less form.
fn chicago_line(dir: &Path) -> PathBuf {
    let tz = cgleak_readers::logs::clock::zone_named(&cgleak_readers::HostPaths::new("/"), "America/Chicago").expect("tzdata's America/Chicago");
    let t = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(20)).unwrap().to_zoned(tz);
    let line = format!(
        "{} node-1 kubelet[1146]: {} 1146 pod_workers.go:951] \"Error syncing pod\" err=\"mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c: no space left on device\"\n",
        t.strftime("%b %e %H:%M:%S"),
        t.strftime("E%m%d %H:%M:%S.000000")
    );
    let p = dir.join("syslog");
    fs::write(&p, line).unwrap();
    p
}

/// Zone-less log times are read in the node's zone: `--log-timezone`, else the host's
/// /etc/localtime under --host-root (a DaemonSet pod runs in UTC), else this process's. An
/// incident 20 minutes ago on a Chicago node is within `--since 1h` only when read so.
#[test]
fn zone_less_times_in_the_nodes_zone() {
    let dir = tempfile::tempdir().unwrap();
    let log = chicago_line(dir.path());
    let log = s(&log);
    let found = |args: &[&str]| -> usize {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cgleak"));
        cmd.env("TZ", "UTC");
        let run = cgleak_cmd(cmd, args);
        assert!(run.code == 0 || run.code == 3, "{args:?}: {run:#?}");
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["incidents"].as_array().unwrap().len()
    };
    let logs = ["logs", log.as_str(), "--since", "1h", "--output", "json"];
    assert_eq!(found(&logs), 0, "read in UTC, the line is 6 hours old (or in the future)");
    assert_eq!(found(&[&["--log-timezone", "America/Chicago"][..], &logs[..]].concat()), 1);
    // A fixed offset: CST or CDT, whichever the date has, finds it (the other is an hour off
    // and may not).
    let fixed: usize = ["-06:00", "-05:00"].iter().map(|z| found(&[&["--log-timezone", z][..], &logs[..]].concat())).sum();
    assert!(fixed >= 1);
    assert_eq!(found(&[&["--log-timezone", "UTC"][..], &logs[..]].concat()), 0);
    // The host's /etc/localtime under --host-root.
    let root = dir.path().join("host");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy("/usr/share/zoneinfo/America/Chicago", root.join("etc/localtime")).expect("tzdata");
    assert_eq!(found(&[&["--host-root", s(&root).as_str()][..], &logs[..]].concat()), 1, "the host's zone");
    // A zone that does not exist, or a path, is a usage error naming the flag.
    for bad in ["Mars/Olympus", "../../etc/passwd", "+99:00"] {
        let run = cgleak(&["--log-timezone", bad, "logs", log.as_str()]);
        assert_eq!(run.code, 2, "{bad}: {run:#?}");
        assert!(run.stderr.contains("--log-timezone"), "{bad}: {}", run.stderr);
    }
}

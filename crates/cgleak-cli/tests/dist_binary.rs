//! The node binary of `cargo xtask dist` runs where the release build cannot: on a glibc
//! 2.17 userland (CentOS/RHEL 7), in a root that holds nothing but itself, and as kured's
//! sentinel command in the host's mount namespace.
//!
//! - Its ELF asks for no interpreter, no shared library and no GLIBC_ symbol version
//!   newer than 2.17, and its ABI note allows kernel 3.10 (read with binutils' readelf,
//!   which must also find the release build's GLIBC_2.34 need: the check can fail).
//! - It runs `--version` and `status` chrooted into the CentOS 7 fixture root at
//!   /usr/local/bin/cgleak, with no --host-root, and counts that root as the
//!   `--host-root` run of the development build does.
//! - Host names (the API server of a kubeconfig) resolve through the root's /etc/hosts
//!   and the DNS server of its /etc/resolv.conf (a responder of this test on
//!   127.53.0.1:53), the home directory through /etc/passwd; NSS modules the root's
//!   nsswitch.conf names (`myhostname`, `sss`) are never loaded.
//!
//! Root is needed (chroot); these tests fail loudly without it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dist::{self, dist_binary};
use common::fixture::{at, on_fixture};

// ---------------------------------------------------------------------------------
// The ELF

/// `readelf` of binutils on `path` with `args`: its stdout.
fn readelf(path: &Path, args: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(["-W"])
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run readelf (binutils; scripts/test-all.sh installs it): {e}"));
    assert!(out.status.success(), "readelf {args:?} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `GLIBC_x.y[.z]` version the binary's dynamic symbols and version needs name.
fn glibc_versions(path: &Path) -> Vec<Vec<u32>> {
    let text = readelf(path, &["--version-info", "--dyn-syms"]);
    let mut out: Vec<Vec<u32>> = Vec::new();
    for (i, _) in text.match_indices("GLIBC_") {
        let rest = &text[i + "GLIBC_".len()..];
        let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let parts: Vec<u32> = v.split('.').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
        // GLIBC_PRIVATE and the like are not versions; they would only come with a libc.so need.
        if parts.is_empty() {
            panic!("{} needs a glibc-private interface: {}", path.display(), &text[i..(i + 40).min(text.len())]);
        }
        if !out.contains(&parts) {
            out.push(parts);
        }
    }
    out.sort();
    out
}

#[test]
fn dist_binary_needs_no_library_and_no_glibc_newer_than_2_17() {
    let d = dist_binary();
    let versions = glibc_versions(&d.path);
    let newer: Vec<&Vec<u32>> = versions.iter().filter(|v| v.as_slice() > [2, 17].as_slice()).collect();
    assert!(newer.is_empty(), "{} needs GLIBC_{newer:?}: CentOS 7 has 2.17", d.path.display());

    let dynamic = readelf(&d.path, &["--dynamic"]);
    assert!(!dynamic.contains("(NEEDED)"), "{} needs a shared library:\n{dynamic}", d.path.display());
    let headers = readelf(&d.path, &["--program-headers"]);
    assert!(!headers.contains("INTERP"), "{} has a program interpreter (it is dynamically linked):\n{headers}", d.path.display());

    // The kernel the linked-in glibc was built for: it refuses to start on an older one.
    let notes = readelf(&d.path, &["--notes"]);
    let abi = notes
        .split_once("OS: Linux, ABI: ")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no GNU ABI tag note in {}:\n{notes}", d.path.display()));
    let abi: Vec<u32> = abi.split('.').map(|s| s.parse().unwrap()).collect();
    assert!(abi.as_slice() <= [3, 10, 0].as_slice(), "{} needs Linux {abi:?}: CentOS 7 runs 3.10", d.path.display());

    // Stripped: no symbol table.
    let symbols = readelf(&d.path, &["--section-headers"]);
    assert!(!symbols.contains(".symtab"), "{} is not stripped", d.path.display());
    assert_eq!(fs::metadata(&d.path).unwrap().len(), d.size, "the size xtask printed");

    // The same reading finds the development build's needs (GLIBC_2.34 on this Debian 12):
    // the check above can fail.
    let dev = Path::new(env!("CARGO_BIN_EXE_cgleak"));
    let dev_versions = glibc_versions(dev);
    assert!(
        dev_versions.iter().any(|v| v.as_slice() > [2, 17].as_slice()),
        "readelf found no GLIBC_ version newer than 2.17 in the dynamic build {} ({dev_versions:?}): the check proves nothing",
        dev.display()
    );
}

#[test]
fn dist_checksum_file_is_in_sha256sum_format() {
    let d = dist_binary();
    let dir = d.path.parent().unwrap();
    let name = d.path.file_name().unwrap().to_str().unwrap();
    assert_eq!(name, "cgleak-x86_64-linux");
    let sum = fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    assert_eq!(sum, format!("{}  {name}\n", d.sha256));
    // As on the node: sha256sum -c in the directory of both files.
    let out = Command::new("sha256sum").args(["-c", &format!("{name}.sha256")]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "sha256sum -c: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}: OK\n"));
}

// ---------------------------------------------------------------------------------
// In a chroot of a CentOS 7 root

#[test]
fn dist_binary_runs_alone_in_a_chroot_of_a_centos7_root() {
    dist::assert_root();
    let f = cgleak_fixtures::by_name("centos7-957-kmem").expect("fixture centos7-957-kmem");
    let root = f.root();
    // Nothing to load from: no loader, no libc, no libraries anywhere in the root.
    for p in ["lib", "lib64", "usr/lib", "usr/lib64", "etc/ld.so.cache"] {
        assert!(!root.join(p).exists(), "the fixture root has /{p}: the chroot would not be empty");
    }

    let v = dist::run_in_root(root, &["--version"]);
    assert_eq!(v.code, 0, "{v:#?}");
    let commit = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("git");
    let commit = String::from_utf8(commit.stdout).unwrap();
    let want = format!("cgleak {} (commit {}, x86_64-unknown-linux-gnu, dist: static glibc ", env!("CARGO_PKG_VERSION"), commit.trim());
    assert!(v.stdout.starts_with(&want), "--version: {:?}, expected it to start with {want:?}", v.stdout);

    // As kured and NPD run it: the root is the host, no --host-root.
    let table = dist::run_in_root(root, &["status"]);
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.contains("3.10.0-957.27.2.el7.x86_64"), "{}", table.stdout);
    assert!(table.stdout.contains("(era 3.10-el7)"), "{}", table.stdout);

    let inside = dist::run_in_root(root, &["status", "--host-root", "/", "--output", "json"]);
    assert_eq!(inside.code, 0, "{inside:#?}");
    let inside = inside.json();
    let t = &f.truth;
    assert_eq!(at(&inside, "kernel.release"), t.release);
    assert_eq!(at(&inside, "kernel.era"), "3.10-el7");
    assert_eq!(at(&inside, "cgroup.memory_root"), t.memory_root);
    assert_eq!(at(&inside, "memcg.live"), t.live_memcgs);
    assert_eq!(at(&inside, "memcg.kmem_active"), t.kmem_active.expect("3.10 counts kmem-active memcgs"));
    assert_eq!(at(&inside, "kubepods.pods"), t.pods);

    // The development build from outside (--host-root) reads the same census.
    let outside = on_fixture(&f, &["status", "--output", "json"]);
    assert_eq!(outside.code, 0, "{outside:#?}");
    let outside = outside.json();
    for key in ["kernel", "cgroup", "memcg", "kubepods"] {
        assert_eq!(inside[key], outside[key], "{key} differs between the chrooted dist binary and --host-root");
    }
}

// ---------------------------------------------------------------------------------
// Name lookups: the API server of a kubeconfig

/// A DNS responder on 127.53.0.1:53 (loopback): A records of `names`, NXDOMAIN for every
/// other name, no AAAA record. It records every question it is asked.
struct Dns {
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 53, 0, 1);

impl Dns {
    fn start(names: BTreeMap<String, Ipv4Addr>) -> Dns {
        let sock = UdpSocket::bind((DNS_ADDR, 53)).unwrap_or_else(|e| panic!("bind {DNS_ADDR}:53 for the test's DNS responder: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if let Some((name, reply)) = dns_reply(&buf[..n], &names) {
                    a.lock().unwrap().push(name);
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Dns { asked, stop, thread: Some(thread) }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The question's name and the answer to a DNS query (RFC 1035 §4.1).
fn dns_reply(q: &[u8], names: &BTreeMap<String, Ipv4Addr>) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let name = labels.join(".");
    let ip = names.get(&name);
    let answer = if qtype == 1 { ip } else { None };
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]);
    // QR, the query's RD, RA; NXDOMAIN for a name it does not know.
    r.push(0x80 | (q[2] & 0x01));
    r.push(0x80 | if ip.is_some() { 0 } else { 3 });
    r.extend_from_slice(&[0, 1, 0, answer.is_some() as u8, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some((format!("{name} {}", if qtype == 1 { "A" } else if qtype == 28 { "AAAA" } else { "other" }), r))
}

/// A self-signed CA for the kubeconfigs (`openssl req -x509 -newkey ec -pkeyopt
/// ec_paramgen_curve:P-256 -nodes -keyout /dev/null -days 36500 -subj /CN=cgleak-test-ca`,
/// base64 of the PEM): with a CA of its own a kubeconfig needs none from the root, which
/// has none. The test's listener only takes the connection, so no key is needed.
const TEST_CA_DATA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJpRENDQVMrZ0F3SUJBZ0lVQXpUZElvQ2tuU1M4TnV2enE4dURvcFlMaDQ0d0NnWUlLb1pJemowRUF3SXcKR1RFWE1CVUdBMVVFQXd3T1kyZHNaV0ZyTFhSbGMzUXRZMkV3SUJjTk1qWXhNakF5TVRneU9USTJXaGdQTWpFeQpOakV4TURneE9ESTVNalphTUJreEZ6QVZCZ05WQkFNTURtTm5iR1ZoYXkxMFpYTjBMV05oTUZrd0V3WUhLb1pJCnpqMENBUVlJS29aSXpqMERBUWNEUWdBRVM1K1pVQ3hlY1dBNGJmaUVLVWQ5aXRwQ0Vrd3g5YndkUDU1ZnEvS24KR3grbFVMQ2srWTBDanlBQjhtV2hZb2FLeWNDV3NaN0pGVFBLaG9XT2VyYzVnYU5UTUZFd0hRWURWUjBPQkJZRQpGSCtrL3ZiSlRhWFdpMzNWNEkzem5jbkord0ZGTUI4R0ExVWRJd1FZTUJhQUZIK2svdmJKVGFYV2kzM1Y0STN6Cm5jbkord0ZGTUE4R0ExVWRFd0VCL3dRRk1BTUJBZjh3Q2dZSUtvWkl6ajBFQXdJRFJ3QXdSQUlnUXhiN21VcEgKZkRPZjJKTk50ajhoRGwySU80MThPUnhHa0FvTmFPNVUzWGtDSUJCeGFJdXExV3gyZzBTZ3BGVHUvbXRWbEFiTwpNci9vTCtXMXZxYmZoRTVKCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";

/// A kubeconfig for `server`, with the test CA and a token.
fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {TEST_CA_DATA}\n\
contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
    )
}

/// A shared library that writes `<root>/nss-module-loaded` when it is loaded, needing
/// nothing itself (raw syscalls): planted as an NSS module the static binary must not load.
fn plant_nss_modules(root: &Path, names: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("planted.c");
    fs::write(
        &src,
        r#"static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
__attribute__((constructor)) static void loaded(void) {
    long fd = sys3(2, (long)"/nss-module-loaded", 01 | 0100, 0644); /* open(O_WRONLY|O_CREAT) */
    if (fd >= 0) sys3(3, fd, 0, 0);
}
"#,
    )
    .unwrap();
    let so = dir.path().join("planted.so");
    let out = Command::new("cc").args(["-shared", "-fPIC", "-nostdlib", "-O2", "-o"]).arg(&so).arg(&src).output().expect("run cc");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    // Where glibc's static dlopen looks on this build (Debian multiarch) and where CentOS 7 keeps them.
    for d in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64"] {
        fs::create_dir_all(root.join(d)).unwrap();
        for n in names {
            fs::copy(&so, root.join(d).join(format!("libnss_{n}.so.2"))).unwrap();
        }
    }
}

/// What one agent run in the root did.
struct ApiAttempt {
    /// The first bytes the agent sent to the test's API server listener, if it connected.
    hello: Option<Vec<u8>>,
    stderr: String,
}

/// `cgleak agent --kubernetes` chrooted in `root` with `env`, the kubeconfig's API server
/// being `listener`: waits until the agent connects (or `wait` passes), then stops it.
fn agent_attempt(root: &Path, listener: &TcpListener, env: &[(&str, &str)], wait: Duration) -> ApiAttempt {
    listener.set_nonblocking(true).unwrap();
    let mut child = dist::spawn_in_root(
        root,
        &["agent", "--no-logs", "--kubernetes", "--node-name", "node-1", "--interval", "1s", "--listen", "127.0.0.1:0"],
        env,
    );
    let start = Instant::now();
    let mut hello = None;
    while start.elapsed() < wait {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = vec![0u8; 2048];
                let n = s.read(&mut buf).unwrap_or(0);
                buf.truncate(n);
                hello = Some(buf);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let etc: Vec<_> = walk(&root.join("etc"));
            panic!("the agent exited early ({st}): {err}\nfiles under {}/etc: {etc:?}", root.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "agent exit {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    ApiAttempt { hello, stderr }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path().display().to_string());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn dist_binary_resolves_the_api_server_through_hosts_and_dns_only() {
    dist::assert_root();
    let f = cgleak_fixtures::by_name("centos7-957-kmem").expect("fixture centos7-957-kmem");
    let root = f.root();
    let put = |p: &str, text: &str| {
        let path = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let wait = Duration::from_secs(30);

    // 1. An IP literal: no lookup at all, so no /etc is needed (in-cluster config is one too:
    //    KUBERNETES_SERVICE_HOST).
    assert!(!root.join("etc/hosts").exists() && !root.join("etc/resolv.conf").exists());
    put("/etc/cgleak/kubeconfig", &kubeconfig(&format!("https://127.0.0.1:{port}")));
    let ip = agent_attempt(root, &listener, &[("KUBECONFIG", "/etc/cgleak/kubeconfig")], wait);
    let hello = ip.hello.unwrap_or_else(|| panic!("the agent never connected to 127.0.0.1:{port}: {}", ip.stderr));
    assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record, got {hello:?}");

    // The root's name service files as on CentOS 7, with modules planted where the static
    // binary could find them.
    put("/etc/nsswitch.conf", "passwd:     files sss\ngroup:      files sss\nhosts:      files dns myhostname\n");
    put("/etc/hosts", "127.0.0.1   localhost localhost.localdomain\n127.0.0.1   api-by-hosts.cgleak.test\n");
    put("/etc/resolv.conf", &format!("nameserver {DNS_ADDR}\noptions timeout:2 attempts:2\n"));
    put("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    put("/etc/group", "root:x:0:\n");
    plant_nss_modules(root, &["myhostname", "sss"]);
    let dns = Dns::start(BTreeMap::from([("api-by-dns.cgleak.test".to_string(), Ipv4Addr::LOCALHOST)]));

    // 2. A name in /etc/hosts; the kubeconfig found through /etc/passwd's home (no $HOME).
    put("/root/.kube/config", &kubeconfig(&format!("https://api-by-hosts.cgleak.test:{port}")));
    let hosts = agent_attempt(root, &listener, &[], wait);
    let hello = hosts.hello.unwrap_or_else(|| panic!("the agent never connected to api-by-hosts.cgleak.test (/etc/hosts): {}", hosts.stderr));
    assert!(contains(&hello, "api-by-hosts.cgleak.test"), "the TLS server name is the kubeconfig's host: {hello:?}");
    assert!(!dns.asked().iter().any(|q| q.starts_with("api-by-hosts")), "/etc/hosts answers first: {:?}", dns.asked());

    // 3. A name only DNS knows.
    put("/root/.kube/config", &kubeconfig(&format!("https://api-by-dns.cgleak.test:{port}")));
    let by_dns = agent_attempt(root, &listener, &[], wait);
    let hello = by_dns.hello.unwrap_or_else(|| panic!("the agent never connected to api-by-dns.cgleak.test (DNS): {}; asked {:?}", by_dns.stderr, dns.asked()));
    assert!(contains(&hello, "api-by-dns.cgleak.test"), "{hello:?}");
    assert!(dns.asked().contains(&"api-by-dns.cgleak.test A".to_string()), "{:?}", dns.asked());

    // 4. A name nobody knows: after files and dns, nsswitch.conf names myhostname, which a
    //    static glibc would dlopen from the root. The agent says the name is not known, and
    //    keeps serving; no module was loaded.
    put("/root/.kube/config", &kubeconfig(&format!("https://api-unknown.cgleak.test:{port}")));
    let unknown = agent_attempt(root, &listener, &[], Duration::from_secs(5));
    assert!(unknown.hello.is_none(), "connected to an unknown name?");
    assert!(dns.asked().iter().any(|q| q.starts_with("api-unknown.cgleak.test")), "{:?}", dns.asked());
    assert!(
        unknown.stderr.contains("cgleak: kubernetes: Kubernetes API: ")
            && unknown.stderr.contains("dns error: failed to lookup address information: Name or service not known"),
        "expected the agent to report the name as not known: {}",
        unknown.stderr
    );
    assert!(!root.join("nss-module-loaded").exists(), "the static binary loaded an NSS module planted in the root");
    drop(dns);
}

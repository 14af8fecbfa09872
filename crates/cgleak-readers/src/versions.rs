//! Versions of the container stack (kubelet, runc, crun, containerd, dockerd, cri-o),
//! found by running the host's binaries with `--version`.
//!
//! Whether the userspace enables kmem accounting depends on these (docs/kernel-facts.md
//! section 3: runc < 1.0.0-rc94, kubelet < 1.22).

use std::cmp::Ordering;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::HostPaths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Kubelet,
    Runc,
    Crun,
    Containerd,
    Docker,
    Crio,
}

impl Component {
    pub const ALL: [Component; 6] = [Component::Kubelet, Component::Runc, Component::Crun, Component::Containerd, Component::Docker, Component::Crio];

    /// Binary names to look for, best first (the daemon's version matters, not the client's).
    pub fn binary_names(self) -> &'static [&'static str] {
        match self {
            Component::Kubelet => &["kubelet"],
            Component::Runc => &["runc"],
            Component::Crun => &["crun"],
            Component::Containerd => &["containerd"],
            // Only the daemon: a docker client alone says nothing about the node's runtime.
            Component::Docker => &["dockerd"],
            Component::Crio => &["crio"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Kubelet => "kubelet",
            Component::Runc => "runc",
            Component::Crun => "crun",
            Component::Containerd => "containerd",
            Component::Docker => "docker",
            Component::Crio => "crio",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectedVersion {
    pub component: Component,
    /// As printed, without a leading "v" or a distro suffix: "1.0.0-rc93", "1.1.5".
    pub version: String,
    /// Host path of the binary that was run (`/usr/bin/runc`).
    pub binary: String,
    /// First line of the output.
    pub raw: String,
}

/// Host directories searched, in order.
const BIN_DIRS: [&str; 7] = ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin", "/bin", "/sbin", "/opt/bin"];

/// A `--version` that takes longer than this is killed and skipped.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);

/// Output beyond this is not read: a version is on the first lines.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Run each component's binary with `--version`. Components not installed, or whose
/// binary fails, hangs or prints no version, are left out.
pub fn detect_versions(host: &HostPaths) -> Vec<DetectedVersion> {
    Component::ALL.iter().filter_map(|&c| detect_one(host, c)).collect()
}

fn detect_one(host: &HostPaths, c: Component) -> Option<DetectedVersion> {
    // A candidate that fails (other arch, crash, timeout) gives way to the next one.
    candidates(host, c).into_iter().find_map(|(local, host_path)| {
        let text = run_version(&local)?;
        let version = parse_version_output(c, &text)?;
        let raw = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
        Some(DetectedVersion { component: c, version, binary: host_path, raw })
    })
}

/// Executables for a component: (path to run, host path for the report).
fn candidates(host: &HostPaths, c: Component) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for name in c.binary_names() {
        for dir in BIN_DIRS {
            let host_path = format!("{dir}/{name}");
            if let Some(local) = host.resolve(&host_path) {
                if is_executable(host, &local) && !out.iter().any(|(l, _)| *l == local) {
                    out.push((local, host_path));
                }
            }
        }
    }
    out
}

fn is_executable(host: &HostPaths, local: &Path) -> bool {
    host.stat_local(local).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile && st.st_mode & 0o111 != 0)
}

/// Run `<binary> --version` with a timeout; stdout then stderr, or None on any failure.
fn run_version(binary: &Path) -> Option<String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills a shell wrapper's children too.
        .process_group(0)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    // Pipes are drained by threads: a chatty child must not block on a full pipe.
    let (tx, rx) = mpsc::channel();
    for (idx, pipe) in [child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)].into_iter().enumerate() {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut buf);
            let _ = tx.send((idx, buf));
        });
    }
    drop(tx);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                kill_group(&mut child);
                return None;
            }
        }
    }
    // The exit status is not checked: some tools print their version and exit non-zero.
    let mut out = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((idx, buf)) => out[idx] = buf,
            // A leftover grandchild holds the pipe open: use what arrived.
            Err(_) => break,
        }
    }
    let [stdout, stderr] = out;
    let mut text = String::from_utf8_lossy(&stdout).into_owned();
    if !stderr.is_empty() {
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&stderr));
    }
    Some(text)
}

/// SIGKILL the child's process group (while the child is unreaped, so its pgid is
/// still ours to signal), then reap it.
fn kill_group(child: &mut Child) {
    if let Some(pgid) = i32::try_from(child.id()).ok().filter(|p| *p > 1).and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The version in a component's `--version` output, e.g. "1.0.0-rc93".
pub fn parse_version_output(c: Component, text: &str) -> Option<String> {
    let lines = || text.lines().map(str::trim);
    let after = |prefix: &str| lines().find_map(|l| l.strip_prefix(prefix).and_then(|r| r.split_whitespace().next()).and_then(clean_version));
    match c {
        // "Kubernetes v1.21.3"
        Component::Kubelet => after("Kubernetes "),
        // "runc version 1.0.0-rc93" (later lines hold the spec and go versions)
        Component::Runc => after("runc version "),
        Component::Crun => after("crun version "),
        // "containerd github.com/containerd/containerd v1.6.20 <commit>" or "containerd containerd.io 1.6.21 <commit>"
        Component::Containerd => {
            lines().filter(|l| l.starts_with("containerd ")).find_map(|l| l.split_whitespace().skip(1).find_map(clean_version))
        }
        // "Docker version 20.10.21, build 3056208"
        Component::Docker => after("Docker version "),
        // "crio version 1.26.1", or a "Version:  1.26.1" line
        Component::Crio => after("crio version ").or_else(|| {
            lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.trim() == "Version" { v.split_whitespace().next().and_then(clean_version) } else { None }
            })
        }),
    }
}

/// A version token as printed, minus "v", a trailing comma and any distro or build suffix.
fn clean_version(token: &str) -> Option<String> {
    let t = token.trim_end_matches(',');
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    let (_, len) = Version::parse_prefix(t)?;
    Some(t[..len].to_string())
}

/// A release version. Ordering: any pre-release < the release without one
/// (1.0.0-rc93 < 1.0.0-rc94 < 1.0.0 < 1.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// "-rc93" -> ("rc", 93); "-dev" -> ("dev", 0).
    pub pre: Option<(String, u64)>,
}

/// Pre-release labels; any other "-suffix" is a distro or vendor one ("-0ubuntu1", "-eks-1").
const PRE_LABELS: [&str; 5] = ["alpha", "beta", "rc", "dev", "pre"];

impl Version {
    /// Parse "1.0.0-rc93", "v1.21.3", "1.1.5+ds1", "1.8" (patch 0); None if it does not start with major.minor.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        Version::parse_prefix(s).map(|(v, _)| v)
    }

    /// The version at the start of `s`, and how many bytes of `s` it spans
    /// (the numbers and a recognised pre-release; not the distro suffix).
    fn parse_prefix(s: &str) -> Option<(Version, usize)> {
        let mut pos = 0;
        let mut nums = [0u64; 3];
        for (i, n) in nums.iter_mut().enumerate() {
            if i > 0 {
                if s[pos..].starts_with('.') && s[pos + 1..].starts_with(|c: char| c.is_ascii_digit()) {
                    pos += 1;
                } else if i == 2 {
                    break; // "1.8": patch 0
                } else {
                    return None;
                }
            }
            let digits = s[pos..].bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            *n = s[pos..pos + digits].parse().ok()?;
            pos += digits;
        }
        // "1.2.3abc" or "1.2.3.4" is not a version we know how to read.
        if s[pos..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '.') {
            return None;
        }
        let mut pre = None;
        // Debian writes pre-releases with "~" ("1.0.0~rc6+dfsg1"), which sorts before the release.
        if let Some(rest) = s[pos..].strip_prefix('-').or_else(|| s[pos..].strip_prefix('~')) {
            let label_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let label = rest[..label_len].to_ascii_lowercase();
            if PRE_LABELS.contains(&label.as_str()) {
                let after = &rest[label_len..];
                let dot = usize::from(after.starts_with('.'));
                let digits = after[dot..].bytes().take_while(u8::is_ascii_digit).count();
                let (num, used) = if digits > 0 { (after[dot..dot + digits].parse().ok()?, dot + digits) } else { (0, 0) };
                pre = Some((label, num));
                pos += 1 + label_len + used;
            }
        }
        let [major, minor, patch] = nums;
        Some((Version { major, minor, patch, pre }, pos))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            // A release comes after all of its pre-releases.
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        match &self.pre {
            Some((label, n)) => write!(f, "-{label}{n}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn parses_every_known_output() {
        let cases: &[(Component, &str, &str)] = &[
            (Component::Kubelet, "Kubernetes v1.21.3\n", "1.21.3"),
            (Component::Kubelet, "Kubernetes v1.27.4+k3s1\n", "1.27.4"),
            (Component::Runc, "runc version 1.0.0-rc93\ncommit: 12644e614e25b05da6fd08a38ffa0cfe1903fdec\nspec: 1.0.2-dev\ngo: go1.13.15\nlibseccomp: 2.5.1\n", "1.0.0-rc93"),
            (Component::Runc, "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n", "1.1.5"),
            (Component::Runc, "runc version 1.0.0-rc92+dev\n", "1.0.0-rc92"),
            (Component::Crun, "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\nrundir: /run/user/0/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n", "1.8.1"),
            (Component::Containerd, "containerd github.com/containerd/containerd v1.6.20 2806fc1057397dbaeefbea0e4e17bddfbd388f38\n", "1.6.20"),
            (Component::Containerd, "containerd containerd.io 1.6.21 3dce8eb055cbb6872793272b4f20ed16117344f8\n", "1.6.21"),
            (Component::Containerd, "containerd github.com/containerd/containerd 1.6.12-0ubuntu1~22.04.3\n", "1.6.12"),
            (Component::Docker, "Docker version 20.10.21, build 3056208\n", "20.10.21"),
            (Component::Docker, "Docker version 1.13.1, build 7d71120/1.13.1\n", "1.13.1"),
            (Component::Crio, "crio version 1.26.1\n", "1.26.1"),
            (Component::Crio, "Version:          1.26.1\nGitCommit:        unknown\nGitTreeState:     clean\nGoVersion:        go1.19.6\n", "1.26.1"),
            (Component::Crio, "GoVersion:        go1.19.6\nVersion:          1.26.1\n", "1.26.1"),
        ];
        for (c, text, want) in cases {
            assert_eq!(parse_version_output(*c, text).as_deref(), Some(*want), "{c:?} {text:?}");
        }
    }

    #[test]
    fn rejects_outputs_without_a_version() {
        assert_eq!(parse_version_output(Component::Runc, "runc: unknown flag --version\nspec: 1.0.2-dev\n"), None);
        assert_eq!(parse_version_output(Component::Kubelet, ""), None);
        assert_eq!(parse_version_output(Component::Containerd, "containerd github.com/containerd/containerd 2806fc1057397\n"), None);
        assert_eq!(parse_version_output(Component::Docker, "Docker version , build\n"), None);
        assert_eq!(parse_version_output(Component::Crio, "GoVersion: go1.19.6\n"), None);
    }

    #[test]
    fn version_parse_tolerates_prefixes_and_suffixes() {
        assert_eq!(v("v1.21.3"), Version { major: 1, minor: 21, patch: 3, pre: None });
        assert_eq!(v("1.0.0-rc93").pre, Some(("rc".into(), 93)));
        assert_eq!(v("1.0.0-rc.1").pre, Some(("rc".into(), 1)));
        assert_eq!(v("1.0.2-dev").pre, Some(("dev".into(), 0)));
        assert_eq!(v("1.1.5+ds1"), v("1.1.5"));
        assert_eq!(v("1.6.12-0ubuntu1~22.04.3"), v("1.6.12"));
        assert_eq!(v("1.25.9-eks-0a21954"), v("1.25.9"));
        assert_eq!(v("0.17"), Version { major: 0, minor: 17, patch: 0, pre: None });
        assert_eq!(v("1.0.0-rc93").to_string(), "1.0.0-rc93");
        for bad in ["", "v", "1", "1.", ".1.2", "abc", "1.x.3", "1.2.3abc", "1.2.3.4", "99999999999999999999999.1.1"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pre_releases_sort_before_the_release() {
        let order = ["1.0.0-rc92", "1.0.0-rc93", "1.0.0-rc94", "1.0.0", "1.1.5", "1.21.3", "20.10.21"];
        let parsed: Vec<Version> = order.iter().map(|s| v(s)).collect();
        for w in parsed.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
        assert!(v("1.0.0-rc93") < v("1.0.0-rc94"));
        assert!(v("1.0.0-rc94") < v("1.0.0"));
        assert!(v("1.0.0-rc100") > v("1.0.0-rc99"));
        assert_eq!(v("v1.1.5+ds1").cmp(&v("1.1.5")), Ordering::Equal);
    }

    fn script(root: &Path, host_path: &str, body: &str, mode: u32) {
        let p = root.join(host_path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// One test spawns everything: scripts are all written before the first spawn, so
    /// no fork in another test thread can hold a write fd on them (ETXTBSY).
    #[test]
    fn detects_versions_in_a_fake_host_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        script(r, "/usr/bin/runc", "#!/bin/sh\necho 'runc version 1.0.0-rc93'\necho 'commit: 12644e614e25b05da6fd08a38ffa0cfe1903fdec'\necho 'spec: 1.0.2-dev'\n", 0o755);
        // dockerd here prints to stderr; the docker client in /usr/bin must not be preferred
        script(r, "/usr/bin/docker", "#!/bin/sh\necho 'Docker version 24.0.5, build ced0996'\n", 0o755);
        script(r, "/usr/local/bin/dockerd", "#!/bin/sh\necho 'Docker version 20.10.21, build 3056208' >&2\nexit 1\n", 0o755);
        // the kubelet hangs: killed at the timeout, with the sleep its shell started
        script(r, "/usr/bin/kubelet", "#!/bin/sh\nsleep 10\necho 'Kubernetes v1.21.3'\n", 0o755);
        // not executable: skipped, the executable one later in the search order is used
        script(r, "/usr/bin/containerd", "#!/bin/sh\necho 'containerd containerd.io 9.9.9 abc'\n", 0o644);
        script(r, "/opt/bin/containerd", "#!/bin/sh\necho 'containerd github.com/containerd/containerd v1.6.20 2806fc1057397dbaeefbea0e4e17bddfbd388f38'\n", 0o755);
        // a binary for another architecture: exec fails, skipped
        script(r, "/usr/bin/crun", "\x7fELF garbage that no kernel will run", 0o755);
        // crio through an absolute symlink, which must resolve inside the host root
        script(r, "/usr/libexec/crio/crio", "#!/bin/sh\nprintf 'crio version 1.26.1\\nVersion: 1.26.1\\n'\n", 0o755);
        fs::create_dir_all(r.join("usr/local/sbin")).unwrap();
        std::os::unix::fs::symlink("/usr/libexec/crio/crio", r.join("usr/local/sbin/crio")).unwrap();

        let found = detect_versions(&HostPaths::new(r));
        let got: Vec<(Component, &str, &str, &str)> = found.iter().map(|d| (d.component, d.version.as_str(), d.binary.as_str(), d.raw.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Component::Runc, "1.0.0-rc93", "/usr/bin/runc", "runc version 1.0.0-rc93"),
                (Component::Containerd, "1.6.20", "/opt/bin/containerd", "containerd github.com/containerd/containerd v1.6.20 2806fc1057397dbaeefbea0e4e17bddfbd388f38"),
                (Component::Docker, "20.10.21", "/usr/local/bin/dockerd", "Docker version 20.10.21, build 3056208"),
                (Component::Crio, "1.26.1", "/usr/local/sbin/crio", "crio version 1.26.1"),
            ]
        );
        assert!(detect_versions(&HostPaths::new(r.join("empty"))).is_empty());
    }
}

//! The node binary of `cargo xtask dist` (static glibc, one file), run as a node runs it:
//! chrooted into a fixture host root at `/usr/local/bin/cgleak`, the way kured runs its
//! sentinel command in the host's mount namespace and NPD runs its plugin.
//!
//! ```ignore
//! let f = cgleak_fixtures::by_name("centos7-957-kmem").unwrap();
//! let r = common::dist::run_in_root(f.root(), &["check", "--reboot-required"]);
//! assert_eq!(r.code, 1, "{r:#?}");
//! ```
//!
//! The binary is built once per test binary by `cargo xtask dist` (a no-op when it is
//! fresh). Chroot needs root: the helpers fail loudly without it.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::fixture::{cgleak_cmd, Run};

/// Where the binary goes in a root: the path of the README's kured and NPD sections.
pub const INSTALL_PATH: &str = "/usr/local/bin/cgleak";
/// PATH inside the root, as a root shell on CentOS 7 has it.
pub const ROOT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `cargo xtask dist` made and printed.
#[derive(Debug)]
pub struct DistBinary {
    pub path: PathBuf,
    /// Size in bytes, as xtask printed it.
    pub size: u64,
    /// The sha256 xtask printed (also in `<path>.sha256`).
    pub sha256: String,
    /// xtask's whole stdout.
    pub stdout: String,
}

/// The dist binary, built by `cargo xtask dist` on first use in this test binary.
pub fn dist_binary() -> &'static DistBinary {
    static DIST: OnceLock<DistBinary> = OnceLock::new();
    DIST.get_or_init(build_dist)
}

fn build_dist() -> DistBinary {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(&cargo);
    // The cargo alias `xtask` lives in the workspace's .cargo/config.toml.
    cmd.args(["xtask", "dist"]).current_dir(&workspace).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = {
        let _lock = cgleak_fixtures::exec_lock();
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    };
    let out = child.wait_with_output().expect("wait for cargo xtask dist");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo xtask dist failed ({}):\n{stdout}\n{stderr}", out.status);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(char::is_whitespace)).map(str::trim))
            .unwrap_or_else(|| panic!("cargo xtask dist printed no `{name}` line:\n{stdout}"))
            .to_string()
    };
    let path = PathBuf::from(field("path"));
    let size = field("size").split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("size line: {stdout}"));
    let sha256 = field("sha256");
    assert!(path.is_file(), "{} (printed by cargo xtask dist) is not a file", path.display());
    DistBinary { path, size, sha256, stdout }
}

pub fn assert_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the dist binary tests chroot into fixture roots: they must run as root (euid is {euid})");
}

/// Copy the dist binary to `<root>/usr/local/bin/cgleak` (mode 755) and return that path.
pub fn install(root: &Path) -> PathBuf {
    let src = &dist_binary().path;
    let dest = root.join(INSTALL_PATH.trim_start_matches('/'));
    let dir = dest.parent().expect("install path has a parent");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let tmp = dir.join(".cgleak.installing");
    // No fork while the executable is open for writing (ETXTBSY in a sibling test's child).
    let _lock = cgleak_fixtures::exec_lock();
    fs::copy(src, &tmp).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), tmp.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
    dest
}

/// `chroot <root> /usr/local/bin/cgleak` with the dist binary installed, an environment
/// of PATH only, stdin from /dev/null, stdout and stderr piped; add args, env, and run or spawn it.
pub fn command_in_root(root: &Path) -> Command {
    assert_root();
    assert_ne!(root, Path::new("/"), "never chroot into /: give a fixture root");
    install(root);
    let mut c = Command::new("chroot");
    c.arg(root)
        .arg(INSTALL_PATH)
        .env_clear()
        .env("PATH", ROOT_PATH_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Run `cgleak <args>` chrooted in `root` (no --host-root: the root is the host) and wait:
/// exit code, stdout, stderr (a panic fails the test).
pub fn run_in_root(root: &Path, args: &[&str]) -> Run {
    cgleak_cmd(command_in_root(root), args)
}

/// As [`run_in_root`], with extra environment variables.
pub fn run_in_root_with_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = command_in_root(root);
    c.envs(env.iter().copied());
    cgleak_cmd(c, args)
}

/// Start `cgleak <args>` chrooted in `root` (the agent): the caller stops and reaps it.
pub fn spawn_in_root(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = command_in_root(root);
    c.args(args).envs(env.iter().copied());
    let _lock = cgleak_fixtures::exec_lock();
    c.spawn().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"))
}

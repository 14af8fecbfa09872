//! Records what `cgleak --version` says about the build: the git commit of the checkout
//! (`unknown` outside one, as in a source tarball) and the target triple.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit = git(&dir, &["rev-parse", "--short=12", "HEAD"]).filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit()));
    println!("cargo:rustc-env=CGLEAK_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    println!("cargo:rustc-env=CGLEAK_TARGET={}", std::env::var("TARGET").unwrap_or_else(|_| "unknown".into()));
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs.
    if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", git_dir.join("packed-refs").display());
        if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(r).display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

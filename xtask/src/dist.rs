//! `cargo xtask dist`: the `cgleak` binary for nodes, one file that needs nothing from the host.
//!
//! It links glibc statically (`-C target-feature=+crt-static`), so it runs on any x86_64
//! userland whatever its glibc (CentOS 7 has 2.17; the release build of this machine
//! needs GLIBC_2.34), inside an empty chroot, and as kured's sentinel command in the
//! host's mount namespace. `--target` keeps the flags off build scripts and proc macros
//! (which cannot be static) and puts the build in target/x86_64-unknown-linux-gnu, so
//! target/release stays as it is. Symbols are stripped.
//!
//! Why static glibc and not cargo-zigbuild against glibc 2.17: a zigbuild binary is
//! still dynamic (the node's libc.so.6, libgcc_s, ld-linux), so it does not run in a
//! root without them. What static glibc costs is NSS: cgleak confines its lookups to
//! glibc's built-in `files` and `dns` (crates/cgleak-cli/src/static_nss.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The artifact's file name in `<target dir>/dist`.
pub const ARTIFACT: &str = "cgleak-x86_64-linux";

pub struct Dist {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Build the dist binary and write it, with its `.sha256`, to `<target dir>/dist`.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<Dist> {
    let libc = glibc_version()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo build --release --target {TARGET} -p cgleak (static glibc {libc}, stripped)");
    let st = Command::new(&cargo)
        .args(["build", "--locked", "--release", "--target", TARGET, "-p", "cgleak", "--bin", "cgleak"])
        .current_dir(workspace)
        // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS and the config's rustflags: these flags, exactly.
        .env("CARGO_ENCODED_RUSTFLAGS", ["-Ctarget-feature=+crt-static", "-Cstrip=symbols"].join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", target_dir)
        // What `cgleak --version` says (crates/cgleak-cli/src/build_info.rs).
        .env("CGLEAK_DIST_TARGET", TARGET)
        .env("CGLEAK_DIST_LIBC", format!("glibc {libc}"))
        .status()
        .context("run cargo build")?;
    if !st.success() {
        bail!("cargo build --target {TARGET} failed ({st})");
    }
    let built = target_dir.join(TARGET).join("release").join("cgleak");
    let data = fs::read(&built).with_context(|| format!("read {}", built.display()))?;
    check_static(&data).with_context(|| format!("{} is not a self-contained binary", built.display()))?;

    let dir = target_dir.join("dist");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(ARTIFACT);
    // Written aside and renamed: a copy of the binary that is running (a test's chroot) stays whole.
    let tmp = dir.join(format!(".{ARTIFACT}.{}", std::process::id()));
    fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;

    // sha256sum's own format, so `sha256sum -c cgleak-x86_64-linux.sha256` checks it on the node.
    let out = Command::new("sha256sum").arg(ARTIFACT).current_dir(&dir).output().context("run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8(out.stdout).context("sha256sum output")?;
    let sha256 = line.split_whitespace().next().filter(|h| h.len() == 64).context("sha256sum printed no hash")?.to_string();
    let sum = dir.join(format!("{ARTIFACT}.sha256"));
    fs::write(&sum, &line).with_context(|| format!("write {}", sum.display()))?;
    Ok(Dist { size: data.len() as u64, path, sha256 })
}

/// The glibc whose libc.a is linked in, as `getconf GNU_LIBC_VERSION` says ("glibc 2.36").
fn glibc_version() -> Result<String> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().context("run getconf GNU_LIBC_VERSION")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("glibc ") {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => bail!("getconf GNU_LIBC_VERSION: expected `glibc X.Y`, got {:?}: the dist build needs a glibc toolchain", text.trim()),
    }
}

/// The ELF asks for no program interpreter and no shared library: nothing is loaded from
/// the root it runs in. (tests/dist_binary.rs checks the symbol versions with readelf.)
pub fn check_static(elf: &[u8]) -> Result<()> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a little-endian ELF64 file");
    }
    let truncated = || anyhow::anyhow!("truncated ELF header");
    let phoff = u64_at(0x20).ok_or_else(truncated)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(truncated)? as usize;
    let phnum = u16_at(0x38).ok_or_else(truncated)? as usize;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: u64 = 1;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = u32_at(ph).ok_or_else(truncated)?;
        if kind == PT_INTERP {
            bail!("it has a program interpreter (PT_INTERP): it is dynamically linked");
        }
        if kind == PT_DYNAMIC {
            // static-pie has a dynamic section for its own relocations; a DT_NEEDED would load a library.
            let (off, size) = (u64_at(ph + 8).ok_or_else(truncated)? as usize, u64_at(ph + 32).ok_or_else(truncated)? as usize);
            let mut d = off;
            while d + 16 <= off + size {
                let tag = u64_at(d).ok_or_else(truncated)?;
                if tag == 0 {
                    break;
                }
                if tag == DT_NEEDED {
                    bail!("it needs a shared library (DT_NEEDED)");
                }
                d += 16;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_static;

    #[test]
    fn a_dynamic_binary_is_refused_and_garbage_is_not_elf() {
        // The test runner itself is dynamically linked (the host target, no crt-static).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = check_static(&me).unwrap_err().to_string();
        assert!(err.contains("PT_INTERP"), "{err}");
        assert!(check_static(b"#!/bin/sh\n").is_err());
        assert!(check_static(&me[..0x30]).is_err(), "truncated header");
    }
}

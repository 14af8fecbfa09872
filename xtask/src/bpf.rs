//! `cargo xtask bpf`: build the BPF program of crates/cgleak-bpf with Debian's clang and
//! record what it was built from; `--check`: prove the committed object is that build.
//!
//! The object is committed (crates/cgleak-bpf/bpf/memcg_walk.bpf.o) and embedded with
//! `include_bytes!`, so building cgleak needs no clang. Its stamp file says which source
//! (sha256), which clang and which flags made which object (sha256). The check:
//! 1. the source's hash is the stamp's: the object was built from this source;
//! 2. the object's hash is the stamp's: nobody replaced it since;
//! 3. a rebuild with the local clang: with the stamp's clang version the bytes must be
//!    identical (the build is reproducible: relative paths, `-fdebug-compilation-dir=.`);
//!    with another clang the rebuild must compile, and the bytes are not compared (clang
//!    versions emit different code), which the check says.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const SOURCE: &str = "memcg_walk.bpf.c";
const OBJECT: &str = "memcg_walk.bpf.o";
const STAMP: &str = "memcg_walk.bpf.o.stamp";
/// Run in the source's directory with relative paths: nothing of the checkout's location
/// reaches the object.
const FLAGS: [&str; 10] = ["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-fdebug-compilation-dir=.", "-c"];

fn dir(root: &Path) -> PathBuf {
    root.join("crates/cgleak-bpf/bpf")
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout).context("sha256sum output")?;
    text.split_whitespace().next().filter(|h| h.len() == 64).map(str::to_string).context("sha256sum printed no hash")
}

/// `clang --version`'s first line, installing Debian's clang first when it is missing (as root).
fn clang_version() -> Result<String> {
    let probe = || Command::new("clang").arg("--version").stderr(Stdio::null()).output();
    let out = match probe() {
        Ok(o) if o.status.success() => o,
        _ => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("clang is missing: apt-get install clang (Debian's clang builds the BPF object)");
            }
            crate::apt_install(&["clang"])?;
            probe().context("run clang --version")?
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn compile(src_dir: &Path, out: &Path) -> Result<()> {
    let st = Command::new("clang").args(FLAGS).arg(SOURCE).arg("-o").arg(out).current_dir(src_dir).status().context("run clang")?;
    if !st.success() {
        bail!("clang {} {SOURCE} failed ({st})", FLAGS.join(" "));
    }
    Ok(())
}

struct Stamp {
    source_sha256: String,
    object_sha256: String,
    clang: String,
    flags: String,
}

impl Stamp {
    fn render(&self) -> String {
        format!(
            "# Written by `cargo xtask bpf`; checked by `cargo xtask bpf --check` (scripts/test-all.sh).\n\
             source_sha256 {}\nobject_sha256 {}\nclang {}\nflags {}\n",
            self.source_sha256, self.object_sha256, self.clang, self.flags
        )
    }

    fn parse(text: &str) -> Result<Stamp> {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("{STAMP}: no `{k}` line"))
        };
        Ok(Stamp { source_sha256: field("source_sha256")?, object_sha256: field("object_sha256")?, clang: field("clang")?, flags: field("flags")? })
    }
}

/// Build the object and write its stamp.
pub fn build(root: &Path) -> Result<()> {
    let d = dir(root);
    let clang = clang_version()?;
    compile(&d, &d.join(OBJECT))?;
    let stamp = Stamp { source_sha256: sha256(&d.join(SOURCE))?, object_sha256: sha256(&d.join(OBJECT))?, clang, flags: FLAGS.join(" ") };
    fs::write(d.join(STAMP), stamp.render())?;
    println!("object  {}", d.join(OBJECT).display());
    println!("size    {} bytes", fs::metadata(d.join(OBJECT))?.len());
    println!("sha256  {}", stamp.object_sha256);
    println!("clang   {}", stamp.clang);
    Ok(())
}

/// Is the committed object the build of the committed source? Prints why not.
pub fn check(root: &Path) -> Result<bool> {
    let d = dir(root);
    let stamp = Stamp::parse(&fs::read_to_string(d.join(STAMP)).with_context(|| format!("read {}", d.join(STAMP).display()))?)?;
    let mut ok = true;
    let source = sha256(&d.join(SOURCE))?;
    if source != stamp.source_sha256 {
        eprintln!("xtask bpf: {SOURCE} changed since {OBJECT} was built (sha256 {source}, stamp {}): run `cargo xtask bpf`", stamp.source_sha256);
        ok = false;
    }
    let object = sha256(&d.join(OBJECT))?;
    if object != stamp.object_sha256 {
        eprintln!("xtask bpf: {OBJECT} is not the object its stamp records (sha256 {object}, stamp {}): run `cargo xtask bpf`", stamp.object_sha256);
        ok = false;
    }
    if stamp.flags != FLAGS.join(" ") {
        eprintln!("xtask bpf: {OBJECT} was built with other flags ({}): run `cargo xtask bpf`", stamp.flags);
        ok = false;
    }
    let clang = clang_version()?;
    let tmp = std::env::temp_dir().join(format!("cgleak-bpf-check-{}.o", std::process::id()));
    let rebuilt = compile(&d, &tmp).and_then(|()| sha256(&tmp));
    let _ = fs::remove_file(&tmp);
    let rebuilt = rebuilt?;
    if clang == stamp.clang {
        if rebuilt != object {
            eprintln!("xtask bpf: the same clang ({clang}) builds {SOURCE} into another object (sha256 {rebuilt}): run `cargo xtask bpf`");
            ok = false;
        } else {
            println!("bpf: {OBJECT} is the build of {SOURCE} (rebuilt byte for byte with {clang})");
        }
    } else {
        println!("bpf: {SOURCE} compiles with the local {clang}; the object was built by {} (source and object hashes match the stamp; bytes not compared across clang versions)", stamp.clang);
    }
    Ok(ok)
}

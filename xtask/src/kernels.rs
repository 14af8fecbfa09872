//! Debian cloud kernels: found with apt-cache, fetched with `apt-get download` into a
//! cache outside git, and unpacked to the two files a guest needs (vmlinuz, loop.ko).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A Debian kernel series and how its package names read.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// "6.1" or "6.12".
    pub label: &'static str,
    /// Package name up to the number that grows: "linux-image-6.1.0-" (ABI), "linux-image-6.12." (patch level).
    prefix: &'static str,
    /// ERE for apt-cache search.
    search: &'static str,
}

pub const SERIES: [Series; 2] = [
    Series { label: "6.1", prefix: "linux-image-6.1.0-", search: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$" },
    Series { label: "6.12", prefix: "linux-image-6.12.", search: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$" },
];

pub fn series(label: &str) -> Result<Series> {
    SERIES.iter().copied().find(|s| s.label == label).with_context(|| format!("unknown kernel {label:?}: 6.1 or 6.12"))
}

impl Series {
    /// The growing number of a package name of this series, None for other packages
    /// (-dbg, -unsigned, other flavours).
    fn number(&self, pkg: &str) -> Option<u32> {
        let rest = pkg.strip_prefix(self.prefix)?;
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        let n = rest[..end].parse().ok()?;
        let tail = rest[end..].strip_suffix("-cloud-amd64")?;
        // 6.1: "-56-cloud-amd64"; 6.12: "117+deb12-cloud-amd64".
        let ok = tail.is_empty() || tail.strip_prefix("+deb").is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        ok.then_some(n)
    }
}

/// Files of one unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    pub loop_ko: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CGLEAK_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/cgleak/kernels")
}

/// The newest kernel of `s`: from the cache when it holds one (no network), else from apt.
pub fn fetch(s: Series, refresh: bool) -> Result<Kernel> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("mkdir {}", cache.display()))?;
    let cached = newest_cached_deb(s, &cache)?;
    let deb = match (cached, refresh) {
        (Some(deb), false) => deb,
        (cached, _) => {
            let pkg = newest_available(s)?;
            match cached.filter(|d| package_of(d).as_deref() == Some(pkg.as_str())) {
                Some(d) => d,
                None => download(&pkg, &cache)?,
            }
        }
    };
    unpack(&deb, &cache)
}

fn package_of(deb: &Path) -> Option<String> {
    deb.file_name()?.to_str()?.split('_').next().map(str::to_string)
}

fn newest_cached_deb(s: Series, cache: &Path) -> Result<Option<PathBuf>> {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in fs::read_dir(cache)? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("deb") {
            continue;
        }
        if let Some(n) = package_of(&p).and_then(|pkg| s.number(&pkg)) {
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

fn apt_search(s: Series) -> Result<Vec<String>> {
    let out = Command::new("apt-cache").args(["search", "--names-only", s.search]).output().context("run apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| s.number(p).is_some())
        .map(str::to_string)
        .collect())
}

fn newest_available(s: Series) -> Result<String> {
    let mut found = apt_search(s)?;
    if found.is_empty() {
        eprintln!("xtask: no {} cloud kernel in the apt lists: apt-get update", s.label);
        let st = Command::new("apt-get").args(["update", "-qq"]).status().context("run apt-get update")?;
        if !st.success() {
            bail!("apt-get update failed ({st})");
        }
        found = apt_search(s)?;
    }
    found.into_iter().max_by_key(|p| s.number(p)).with_context(|| format!("apt knows no package matching {}", s.search))
}

fn download(pkg: &str, cache: &Path) -> Result<PathBuf> {
    eprintln!("xtask: apt-get download {pkg} into {}", cache.display());
    let st = Command::new("apt-get").args(["download", "-q", pkg]).current_dir(cache).status().context("run apt-get download")?;
    if !st.success() {
        bail!("apt-get download {pkg} failed ({st})");
    }
    for e in fs::read_dir(cache)? {
        let p = e?.path();
        if package_of(&p).as_deref() == Some(pkg) && p.extension().and_then(|x| x.to_str()) == Some("deb") {
            return Ok(p);
        }
    }
    bail!("apt-get download {pkg} left no .deb in {}", cache.display())
}

/// `<cache>/<package>/{vmlinuz,loop.ko,release}`, unpacked once from the .deb.
fn unpack(deb: &Path, cache: &Path) -> Result<Kernel> {
    let pkg = package_of(deb).context("package name of the .deb")?;
    let dir = cache.join(&pkg);
    let kernel = |release: String| Kernel {
        package: pkg.clone(),
        release,
        vmlinuz: dir.join("vmlinuz"),
        loop_ko: dir.join("loop.ko"),
    };
    if let Ok(release) = fs::read_to_string(dir.join("release")) {
        return Ok(kernel(release.trim().to_string()));
    }
    let tmp = cache.join(format!(".unpack-{pkg}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let st = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp).status().context("run dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed ({st})", deb.display());
    }
    let result = (|| -> Result<Kernel> {
        let modules = tmp.join("lib/modules");
        let release = fs::read_dir(&modules)
            .with_context(|| format!("{} has no lib/modules", deb.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .context("no kernel release under lib/modules")?;
        let staging = cache.join(format!(".staging-{pkg}-{}", std::process::id()));
        fs::create_dir_all(&staging)?;
        fs::copy(tmp.join(format!("boot/vmlinuz-{release}")), staging.join("vmlinuz")).context("copy vmlinuz")?;
        let block = modules.join(&release).join("kernel/drivers/block");
        if block.join("loop.ko").exists() {
            fs::copy(block.join("loop.ko"), staging.join("loop.ko"))?;
        } else {
            // 6.12 ships modules xz-compressed; busybox's insmod wants them plain.
            let out = Command::new("busybox").args(["xz", "-dc"]).arg(block.join("loop.ko.xz")).output().context("busybox xz -dc")?;
            if !out.status.success() || out.stdout.is_empty() {
                bail!("cannot decompress {}", block.join("loop.ko.xz").display());
            }
            fs::write(staging.join("loop.ko"), out.stdout)?;
        }
        fs::write(staging.join("release"), &release)?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir)?;
        Ok(kernel(release))
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_numbers() {
        let s61 = series("6.1").unwrap();
        assert_eq!(s61.number("linux-image-6.1.0-56-cloud-amd64"), Some(56));
        assert_eq!(s61.number("linux-image-6.1.0-56-cloud-amd64-unsigned"), None);
        assert_eq!(s61.number("linux-image-6.1.0-56-cloud-amd64-dbg"), None);
        assert_eq!(s61.number("linux-image-6.1.0-56-amd64"), None);
        let s612 = series("6.12").unwrap();
        assert_eq!(s612.number("linux-image-6.12.117+deb12-cloud-amd64"), Some(117));
        assert_eq!(s612.number("linux-image-6.12.117+deb12-cloud-amd64-dbg"), None);
        assert_eq!(s612.number("linux-image-6.12-cloud-amd64"), None);
        assert_eq!(package_of(Path::new("/c/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb")).as_deref(), Some("linux-image-6.1.0-56-cloud-amd64"));
    }
}

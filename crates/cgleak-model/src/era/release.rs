//! Kernel release strings (`uname -r`): the version numbers, the distro that built the
//! kernel with its el7 build or ABI number, and the upstream version a distro kernel names
//! in its version string. What a release means for memcgs is the era rules' ([`super`]).

use serde::Serialize;

/// Who built the kernel, as far as the release string tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// RHEL/CentOS 7 (".el7" in the release).
    El7,
    /// Debian: "4.19.0-25-amd64", "6.12.117+deb12-cloud-amd64", backports "+bpo".
    Debian,
    /// Ubuntu: "5.4.0-150-generic", "-aws", "-azure", ...
    Ubuntu,
    /// An upstream release with no vendor suffix ("6.6.30", "6.10.0-rc3").
    Vanilla,
    /// Anything else ("6.18.44-fc-v669", "4.18.0-348.el8.x86_64", "6.5.6-300.fc39.x86_64").
    Other,
}

impl Distro {
    pub fn as_str(&self) -> &'static str {
        match self {
            Distro::El7 => "el7",
            Distro::Debian => "debian",
            Distro::Ubuntu => "ubuntu",
            Distro::Vanilla => "vanilla",
            Distro::Other => "other",
        }
    }
}

/// A parsed kernel release string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelRelease {
    /// As read, surrounding whitespace removed: "3.10.0-957.27.2.el7.x86_64".
    pub raw: String,
    pub major: u32,
    pub minor: u32,
    /// The third number of the string. Debian ("4.19.0-25-amd64"), Ubuntu ("5.4.0-150-generic")
    /// and RHEL put 0 here whatever the upstream patch level: see [`super::KernelEra::from_release_with_hint`].
    pub patch: u32,
    /// RHEL/CentOS 7 build: "3.10.0-957.27.2.el7" -> [957, 27, 2]; "3.10.0-1160.el7" -> [1160].
    pub el7_build: Option<Vec<u32>>,
    pub distro: Distro,
}

/// A release string that is not `MAJOR.MINOR[.PATCH][suffix]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel release {input:?}: {reason}")]
pub struct ReleaseError {
    /// The string as given.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

const EXPECTED_FORMAT: &str = "expected MAJOR.MINOR[.PATCH] and an optional suffix, such as \"6.1.0-13-amd64\"";

/// The numeric head of a release string and what follows it.
struct Split<'a> {
    major: u32,
    minor: u32,
    patch: Option<u32>,
    suffix: &'a str,
}

/// Leading decimal digits of `s`: (value, rest). None when `s` does not start with a digit.
fn leading_number(s: &str) -> Option<Result<(u32, &str), ()>> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some(s[..end].parse::<u32>().map(|n| (n, &s[end..])).map_err(|_| ()))
}

fn split_release(s: &str) -> Result<Split<'_>, &'static str> {
    if s.is_empty() {
        return Err("empty string; expected MAJOR.MINOR[.PATCH]");
    }
    let (major, rest) = match leading_number(s) {
        Some(Ok(v)) => v,
        Some(Err(())) => return Err("version number too large"),
        None => return Err(EXPECTED_FORMAT),
    };
    let rest = rest.strip_prefix('.').ok_or(EXPECTED_FORMAT)?;
    let (minor, rest) = match leading_number(rest) {
        Some(Ok(v)) => v,
        Some(Err(())) => return Err("version number too large"),
        None => return Err(EXPECTED_FORMAT),
    };
    if let Some(after_dot) = rest.strip_prefix('.') {
        match leading_number(after_dot) {
            Some(Ok((patch, suffix))) => return Ok(Split { major, minor, patch: Some(patch), suffix }),
            Some(Err(())) => return Err("version number too large"),
            // "5.4.foo": no patch level, the rest is a suffix.
            None => {}
        }
    }
    Ok(Split { major, minor, patch: None, suffix: rest })
}

/// True when `raw` carries RHEL 7's ".el7" tag (not Oracle's ".el7uek").
fn has_el7_tag(raw: &str) -> bool {
    raw.match_indices(".el7").any(|(i, m)| matches!(raw[i + m.len()..].chars().next(), None | Some('.') | Some('_')))
}

/// The distro ABI or build number right after "X.Y.Z-": "4.19.0-25-amd64" -> 25,
/// "5.4.0-150-generic" -> 150, "4.18.0-348.el8" -> 348.
fn abi_number(suffix: &str) -> Option<u32> {
    let rest = suffix.strip_prefix('-')?;
    let (n, after) = leading_number(rest)?.ok()?;
    matches!(after.chars().next(), None | Some('-') | Some('.')).then_some(n)
}

/// The flavour after "-ABI-": "-25-cloud-amd64" -> "cloud-amd64".
fn flavour(suffix: &str) -> Option<&str> {
    let rest = suffix.strip_prefix('-')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    rest[digits..].strip_prefix('-')
}

/// Debian kernel flavours end with an architecture ("amd64", "cloud-amd64", "rt-arm64", "686-pae").
const DEBIAN_ARCHES: [&str; 16] = [
    "amd64", "arm64", "armmp", "armmp-lpae", "686", "686-pae", "ppc64el", "ppc64", "s390x", "marvell", "rpi", "octeon",
    "riscv64", "powerpc64le", "mips64r2el", "loongson-3",
];

/// Ubuntu kernel flavours start with one of these ("generic", "generic-lpae", "aws", "azure-fde").
const UBUNTU_FLAVOURS: [&str; 22] = [
    "generic", "lowlatency", "aws", "azure", "gcp", "gke", "gkeop", "oracle", "kvm", "raspi", "raspi2", "ibm", "oem",
    "nvidia", "realtime", "intel", "xilinx", "fips", "bluefield", "virtual", "server", "snapdragon",
];

fn detect_distro(raw: &str, suffix: &str) -> Distro {
    if has_el7_tag(raw) {
        return Distro::El7;
    }
    let lower = suffix.to_ascii_lowercase();
    if lower.contains("+deb") || lower.contains("bpo") || lower.contains(".deb1") {
        return Distro::Debian;
    }
    if let Some(fl) = flavour(suffix) {
        if DEBIAN_ARCHES.iter().any(|a| fl == *a || fl.ends_with(&format!("-{a}"))) {
            return Distro::Debian;
        }
        let first = fl.split('-').next().unwrap_or("");
        if UBUNTU_FLAVOURS.contains(&first) {
            return Distro::Ubuntu;
        }
    }
    let rc = suffix.trim_end_matches('+');
    let is_rc = rc.strip_prefix("-rc").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if rc.is_empty() || is_rc {
        return Distro::Vanilla;
    }
    Distro::Other
}

/// "957.27.2.el7.x86_64" -> [957, 27, 2]. None when a part is not a number.
fn parse_el7_build(suffix: &str) -> Option<Vec<u32>> {
    let rest = suffix.strip_prefix('-')?;
    let end = rest.find(".el7")?;
    let parts: Option<Vec<u32>> = rest[..end].split('.').map(|p| p.parse::<u32>().ok()).collect();
    parts.filter(|v| !v.is_empty())
}

impl KernelRelease {
    /// Parse `uname -r` / /proc/sys/kernel/osrelease. Surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<KernelRelease, ReleaseError> {
        let raw = s.trim();
        let split = split_release(raw).map_err(|reason| ReleaseError { input: s.to_string(), reason })?;
        let distro = detect_distro(raw, split.suffix);
        let patch = split.patch.unwrap_or(0);
        let el7_build = if distro == Distro::El7 && (split.major, split.minor, patch) == (3, 10, 0) {
            parse_el7_build(split.suffix)
        } else {
            None
        };
        Ok(KernelRelease { raw: raw.to_string(), major: split.major, minor: split.minor, patch, el7_build, distro })
    }

    /// `major.minor.patch >= (major, minor, patch)` on the numbers of the string (a distro's
    /// placeholder patch 0 included).
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// True when the string wrote a patch level ("5.4.0"), false for "5.4".
    pub(super) fn patch_written(&self) -> bool {
        split_release(&self.raw).map(|s| s.patch.is_some()).unwrap_or(true)
    }

    /// Distro ABI/build number after "X.Y.Z-", if any.
    pub(super) fn abi(&self) -> Option<u32> {
        split_release(&self.raw).ok().and_then(|s| abi_number(s.suffix))
    }
}

/// The upstream version a distro kernel is built from, read from a hint the kernel
/// exposes next to its release:
/// - Ubuntu /proc/version_signature: "Ubuntu 5.4.0-150.167-generic 5.4.233" -> (5, 4, 233);
/// - Debian /proc/version or `uname -v`: "... #1 SMP Debian 4.19.289-2 (2023-08-08)" -> (4, 19, 289).
pub fn upstream_version_from_hint(hint: &str) -> Option<(u32, u32, u32)> {
    fn full_version(tok: &str) -> Option<(u32, u32, u32)> {
        let s = split_release(tok).ok()?;
        Some((s.major, s.minor, s.patch?))
    }
    let hint = hint.trim();
    if hint.starts_with("Ubuntu ") {
        return hint.split_whitespace().last().and_then(full_version);
    }
    // The last "Debian " is the package version; an earlier one may be the compiler's.
    let (i, m) = hint.rmatch_indices("Debian ").next()?;
    hint[i + m.len()..].split_whitespace().next().and_then(full_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(s: &str) -> KernelRelease {
        KernelRelease::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_el7_957() {
        let r = release("3.10.0-957.27.2.el7.x86_64");
        assert_eq!((r.major, r.minor, r.patch), (3, 10, 0));
        assert_eq!(r.el7_build, Some(vec![957, 27, 2]));
        assert_eq!(r.distro, Distro::El7);
        assert_eq!(r.raw, "3.10.0-957.27.2.el7.x86_64");
    }

    #[test]
    fn parses_el7_1160_and_1062() {
        assert_eq!(release("3.10.0-1160.el7.x86_64").el7_build, Some(vec![1160]));
        assert_eq!(release("3.10.0-1062.el7.x86_64").el7_build, Some(vec![1062]));
        assert_eq!(release("3.10.0-1160.119.1.el7.x86_64").el7_build, Some(vec![1160, 119, 1]));
        assert_eq!(release("3.10.0-1160.el7.centos.plus.x86_64").distro, Distro::El7);
    }

    #[test]
    fn parses_vanilla_and_stable() {
        let r = release("3.10.108");
        assert_eq!((r.major, r.minor, r.patch, r.distro.clone()), (3, 10, 108, Distro::Vanilla));
        assert_eq!(r.el7_build, None);
        let r = release("4.4.131");
        assert_eq!((r.major, r.minor, r.patch, r.distro), (4, 4, 131, Distro::Vanilla));
        assert_eq!(release("7.2.0").distro, Distro::Vanilla);
        assert_eq!(release("6.10.0-rc3").distro, Distro::Vanilla);
        assert_eq!(release("6.10.0-rc3+").distro, Distro::Vanilla);
    }

    #[test]
    fn parses_ubuntu() {
        let r = release("4.4.0-21-generic");
        assert_eq!((r.major, r.minor, r.patch, r.distro.clone()), (4, 4, 0, Distro::Ubuntu));
        assert_eq!(r.abi(), Some(21));
        let r = release("5.4.0-150-generic");
        assert_eq!((r.major, r.minor, r.patch, r.distro.clone()), (5, 4, 0, Distro::Ubuntu));
        assert_eq!(r.abi(), Some(150));
        assert_eq!(release("5.15.0-1051-aws").distro, Distro::Ubuntu);
        assert_eq!(release("6.8.0-45-generic-64k").distro, Distro::Ubuntu);
        assert_eq!(release("5.4.0-1109-azure").distro, Distro::Ubuntu);
    }

    #[test]
    fn parses_debian() {
        for (s, want) in [
            ("4.9.0-8-amd64", (4, 9, 0)),
            ("4.19.0-25-amd64", (4, 19, 0)),
            ("5.10.0-28-amd64", (5, 10, 0)),
            ("6.1.0-56-cloud-amd64", (6, 1, 0)),
            ("6.12.117+deb12-cloud-amd64", (6, 12, 117)),
            ("4.19.0-0.bpo.9-amd64", (4, 19, 0)),
            ("6.1.0-13-rt-arm64", (6, 1, 0)),
            ("5.10.0-28-686-pae", (5, 10, 0)),
        ] {
            let r = release(s);
            assert_eq!((r.major, r.minor, r.patch), want, "{s}");
            assert_eq!(r.distro, Distro::Debian, "{s}");
            assert_eq!(r.el7_build, None, "{s}");
        }
    }

    #[test]
    fn parses_other() {
        let r = release("6.18.44-fc-v669");
        assert_eq!((r.major, r.minor, r.patch, r.distro), (6, 18, 44, Distro::Other));
        assert_eq!(release("4.18.0-348.el8.x86_64").distro, Distro::Other);
        // Oracle UEK is not the RHEL7 3.10 kernel.
        let uek = release("4.14.35-2047.el7uek.x86_64");
        assert_eq!(uek.distro, Distro::Other);
        assert_eq!(uek.el7_build, None);
        assert_eq!(release("5.15.153.1-microsoft-standard-WSL2").distro, Distro::Other);
    }

    #[test]
    fn parses_without_patch_and_trims() {
        let r = release("5.4");
        assert_eq!((r.major, r.minor, r.patch), (5, 4, 0));
        assert!(!r.patch_written());
        let r = release("  6.1.0-13-amd64\n");
        assert_eq!(r.raw, "6.1.0-13-amd64");
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for s in ["garbage", "", "6", "6.", ".5", "x.y.z", "99999999999.1"] {
            let e = KernelRelease::parse(s).expect_err(s);
            assert_eq!(e.input, s);
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("kernel release {s:?}: ")), "{shown}");
        }
        let e = KernelRelease::parse("garbage").unwrap_err();
        assert!(e.to_string().starts_with("kernel release \"garbage\": expected MAJOR.MINOR[.PATCH]"), "{e}");
    }

    #[test]
    fn at_least_compares_all_three_numbers() {
        let r = release("4.4.131");
        assert!(r.at_least(4, 4, 131));
        assert!(r.at_least(4, 4, 20));
        assert!(r.at_least(3, 99, 99));
        assert!(!r.at_least(4, 4, 132));
        assert!(!r.at_least(4, 5, 0));
    }

    #[test]
    fn upstream_hints() {
        assert_eq!(upstream_version_from_hint("Ubuntu 5.4.0-150.167-generic 5.4.233\n"), Some((5, 4, 233)));
        assert_eq!(
            upstream_version_from_hint(
                "Linux version 4.19.0-25-amd64 (debian-kernel@lists.debian.org) (gcc version 8.3.0 (Debian 8.3.0-6)) #1 SMP Debian 4.19.289-2 (2023-08-08)"
            ),
            Some((4, 19, 289))
        );
        assert_eq!(upstream_version_from_hint("#1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1 (2025-09-20)"), Some((6, 1, 153)));
        assert_eq!(upstream_version_from_hint("Linux version 6.18.44 (root@host) #1 SMP"), None);
        assert_eq!(upstream_version_from_hint(""), None);
    }
}

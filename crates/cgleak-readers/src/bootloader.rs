//! The host's boot loader setup, as far as the kernel command line goes: which files
//! hold it and which tools regenerate it, all under the host root.
//!
//! - BLS (RHEL 8+, Fedora): `/boot/loader/entries/*.conf`, each with an `options` line
//!   (or `$kernelopts`, expanded from `kernelopts=` in `/boot/grub2/grubenv`).
//! - grubby (RHEL/CentOS 7): `grubby --update-kernel=ALL --args=...` rewrites the
//!   `linux16`/`linuxefi` lines of `/boot/grub2/grub.cfg` (or the EFI one).
//! - GRUB defaults (Debian, Ubuntu and others): `GRUB_CMDLINE_LINUX` in
//!   `/etc/default/grub`, then `update-grub`, or `grub2-mkconfig -o <cfg>` /
//!   `grub-mkconfig -o <cfg>`, writes `grub.cfg`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::HostPaths;

/// What was found (local paths, under the host root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootSetup {
    pub bls_entries: Vec<PathBuf>,
    /// `/boot/grub2/grubenv` when a BLS entry refers to `$kernelopts`.
    pub grubenv: Option<PathBuf>,
    pub grub_default: Option<PathBuf>,
    pub grubby: Option<PathBuf>,
    pub update_grub: Option<PathBuf>,
    /// `grub2-mkconfig` or `grub-mkconfig`.
    pub grub_mkconfig: Option<PathBuf>,
    /// The generated grub.cfg files that exist (BIOS and EFI).
    pub grub_cfgs: Vec<PathBuf>,
}

const BIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

fn program(host: &HostPaths, name: &str) -> Option<PathBuf> {
    BIN_DIRS.iter().map(|d| host.host(Path::new(d).join(name))).find(|p| p.is_file())
}

impl BootSetup {
    pub fn discover(host: &HostPaths) -> BootSetup {
        let entries_dir = host.host("/boot/loader/entries");
        let mut bls_entries: Vec<PathBuf> = fs::read_dir(&entries_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file()).collect())
            .unwrap_or_default();
        bls_entries.sort();
        let uses_kernelopts = bls_entries.iter().any(|e| fs::read_to_string(e).is_ok_and(|t| bls_options(&t).is_some_and(|o| o.contains("$kernelopts"))));
        let grubenv = Some(host.host("/boot/grub2/grubenv")).filter(|p| uses_kernelopts && p.is_file());
        let grub_default = Some(host.host("/etc/default/grub")).filter(|p| p.is_file());
        let mut grub_cfgs: Vec<PathBuf> = ["/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"].iter().map(|p| host.host(p)).filter(|p| p.is_file()).collect();
        if let Ok(rd) = fs::read_dir(host.host("/boot/efi/EFI")) {
            let mut efi: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("grub.cfg")).filter(|p| p.is_file()).collect();
            efi.sort();
            grub_cfgs.extend(efi);
        }
        BootSetup {
            bls_entries,
            grubenv,
            grub_default,
            grubby: program(host, "grubby"),
            update_grub: program(host, "update-grub"),
            grub_mkconfig: program(host, "grub2-mkconfig").or_else(|| program(host, "grub-mkconfig")),
            grub_cfgs,
        }
    }
}

/// The value of the last `options` line of a BLS entry.
pub fn bls_options(entry: &str) -> Option<&str> {
    entry.lines().filter_map(|l| l.trim_start().strip_prefix("options")).rfind(|r| r.is_empty() || r.starts_with([' ', '\t'])).map(str::trim)
}

/// The value of the last `GRUB_CMDLINE_LINUX=` of /etc/default/grub, quotes removed
/// (the shell's last assignment wins). It is the shell's word: up to the closing quote
/// when quoted, else up to the first blank; a comment after it is not part of it.
pub fn grub_cmdline_linux(text: &str) -> Option<String> {
    let rest = text.lines().filter_map(|l| l.trim_start().strip_prefix("GRUB_CMDLINE_LINUX=")).next_back()?;
    let value = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default(),
        _ => rest.split_whitespace().next().unwrap_or_default(),
    };
    Some(value.to_string())
}

/// The `linux`, `linux16` and `linuxefi` lines of a grub.cfg (the command followed by a
/// space or a tab): the kernels' command lines. memtest86+'s entries load their image
/// with the same commands but boot no kernel (and get no GRUB_CMDLINE_LINUX): left out.
pub fn grub_cfg_kernel_lines(cfg: &str) -> Vec<&str> {
    cfg.lines()
        .map(str::trim_start)
        .filter(|l| {
            let mut words = l.split_whitespace();
            matches!(words.next(), Some("linux" | "linux16" | "linuxefi"))
                && !words.next().and_then(|image| image.rsplit('/').next()).is_some_and(|name| name.starts_with("memtest"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_cmdline_are_read_as_the_loader_reads_them() {
        let e = "title CentOS\nversion 4.18.0\nlinux /vmlinuz\noptions root=/dev/sda1 ro crashkernel=auto\noptionsx no\n";
        assert_eq!(bls_options(e), Some("root=/dev/sda1 ro crashkernel=auto"));
        assert_eq!(bls_options("title x\n"), None);
        let g = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"quiet\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\nGRUB_CMDLINE_LINUX=\"ro rhgb\"\n";
        assert_eq!(grub_cmdline_linux(g).as_deref(), Some("ro rhgb"));
        assert_eq!(grub_cmdline_linux("GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nokmem\" # keep\n").as_deref(), Some("ro cgroup.memory=nokmem"));
        assert_eq!(grub_cmdline_linux("GRUB_CMDLINE_LINUX='ro quiet'\n").as_deref(), Some("ro quiet"));
        assert_eq!(grub_cmdline_linux("GRUB_CMDLINE_LINUX=ro # a note\n").as_deref(), Some("ro"));
        assert_eq!(grub_cmdline_linux("GRUB_CMDLINE_LINUX=\"\"\n").as_deref(), Some(""));
        let cfg = "menuentry 'x' {\n\tlinux16 /vmlinuz-3.10.0 root=/dev/sda1 ro\n\tinitrd16 /initramfs\n}\n\tlinux /vmlinuz-5 ro\n";
        assert_eq!(grub_cfg_kernel_lines(cfg), vec!["linux16 /vmlinuz-3.10.0 root=/dev/sda1 ro", "linux /vmlinuz-5 ro"]);
        let cfg = "\tlinux16\t/vmlinuz-3.10.0 ro\n\tlinuxefi\t/vmlinuz-4.18 ro\n\tlinux16\t/boot/memtest86+.bin\n\tlinux /boot/memtest86+x64.efi\n\tlinuxx /no\n";
        assert_eq!(grub_cfg_kernel_lines(cfg), vec!["linux16\t/vmlinuz-3.10.0 ro", "linuxefi\t/vmlinuz-4.18 ro"]);
    }

    #[test]
    fn discovery_under_a_host_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("boot/loader/entries")).unwrap();
        fs::write(r.join("boot/loader/entries/a.conf"), "options $kernelopts\n").unwrap();
        fs::create_dir_all(r.join("boot/grub2")).unwrap();
        fs::write(r.join("boot/grub2/grubenv"), "# GRUB Environment Block\nkernelopts=ro\n").unwrap();
        fs::write(r.join("boot/grub2/grub.cfg"), "").unwrap();
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        fs::write(r.join("usr/sbin/grub2-mkconfig"), "").unwrap();
        let s = BootSetup::discover(&HostPaths::new(r));
        assert_eq!(s.bls_entries, vec![r.join("boot/loader/entries/a.conf")]);
        assert_eq!(s.grubenv, Some(r.join("boot/grub2/grubenv")));
        assert_eq!(s.grub_mkconfig, Some(r.join("usr/sbin/grub2-mkconfig")));
        assert_eq!(s.grub_cfgs, vec![r.join("boot/grub2/grub.cfg")]);
        assert!(s.grub_default.is_none() && s.grubby.is_none());
    }
}

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

use std::path::{Path, PathBuf};

use crate::HostPaths;

mod cmdline;

pub use cmdline::{apply_insertions, bls_cmdline, grub_cmdline_linux, grub_words, grubenv_cmdline, CmdlineWord, FileCmdline, GrubWord, NotLiteral, BLS_KNOWN_VARS};

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
    BIN_DIRS.iter().map(|d| host.host(Path::new(d).join(name))).find(|p| host.is_file_local(p))
}

impl BootSetup {
    pub fn discover(host: &HostPaths) -> BootSetup {
        let entries_dir = host.host("/boot/loader/entries");
        let mut bls_entries: Vec<PathBuf> = host
            .list_dir_local(&entries_dir)
            .map(|rd| rd.into_iter().filter(|p| p.extension().is_some_and(|x| x == "conf") && host.is_file_local(p)).collect())
            .unwrap_or_default();
        bls_entries.sort();
        let uses_kernelopts = bls_entries.iter().any(|e| read_small(host, e).is_some_and(|t| bls_options(&t).is_some_and(|o| o.contains("$kernelopts"))));
        let grubenv = Some(host.host("/boot/grub2/grubenv")).filter(|p| uses_kernelopts && host.is_file_local(p));
        let grub_default = Some(host.host("/etc/default/grub")).filter(|p| host.is_file_local(p));
        let mut grub_cfgs: Vec<PathBuf> = ["/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"].iter().map(|p| host.host(p)).filter(|p| host.is_file_local(p)).collect();
        if let Ok(rd) = host.list_dir_local(&host.host("/boot/efi/EFI")) {
            let mut efi: Vec<PathBuf> = rd.into_iter().map(|e| e.join("grub.cfg")).filter(|p| host.is_file_local(p)).collect();
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

/// The kernel the boot loader starts next, as far as its files tell: what a reboot gives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextBoot {
    /// Its release (`uname -r` once booted), from the entry's `/vmlinuz-<release>`.
    pub release: String,
    /// How it was found: `saved_entry` (grubenv), `GRUB_DEFAULT`, `first entry`, `newest BLS entry`
    /// or `newest installed kernel` (no boot loader default could be read: a guess).
    pub how: String,
    /// The host file that says so.
    pub source: String,
    /// The entry's command line has `cgroup.memory=nokmem` (None: not read).
    pub cmdline_has_nokmem: Option<bool>,
}

/// A boot menu entry: title, id and kernel release, from a grub.cfg or a BLS entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootEntry {
    title: String,
    id: Option<String>,
    release: String,
    cmdline: Option<String>,
}

/// Boot loader files are small; anything bigger is not one.
const MAX_BOOT_FILE: u64 = 4 << 20;

/// A boot file, opened beneath the host root, refused unless regular and small.
fn read_small(host: &HostPaths, p: &Path) -> Option<String> {
    host.read_local(p, MAX_BOOT_FILE).ok()
}

/// The release in a kernel image path: `/vmlinuz-3.10.0-1160.el7.x86_64` -> `3.10.0-1160.el7.x86_64`.
fn release_of_image(image: &str) -> Option<String> {
    let name = image.rsplit('/').next()?;
    let rel = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-"))?;
    (!rel.is_empty()).then(|| rel.to_string())
}

/// `saved_entry=...` of a grub environment block.
fn grubenv_saved_entry(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("saved_entry=")).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A single- or double-quoted word at the start of `s`, and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(q)? + 1;
    Some((s[1..end].to_string(), &s[end + 1..]))
}

/// Menu entries of a grub.cfg, in order (those of submenus included, after the top level
/// ones that precede them), each with the release its `linux` line boots.
fn grub_cfg_entries(cfg: &str) -> Vec<BootEntry> {
    let mut out = Vec::new();
    let mut current: Option<(String, Option<String>)> = None;
    for line in cfg.lines().map(str::trim_start) {
        if let Some(rest) = line.strip_prefix("menuentry ") {
            if let Some((title, tail)) = quoted(rest) {
                // `$menuentry_id_option 'gnulinux-...'` or `--id ...`: the entry's id.
                let id = tail
                    .split_once("menuentry_id_option")
                    .or_else(|| tail.split_once("--id"))
                    .and_then(|(_, t)| quoted(t).map(|(id, _)| id).or_else(|| t.split_whitespace().next().map(str::to_string)));
                current = Some((title, id));
            }
            continue;
        }
        let mut words = line.split_whitespace();
        if matches!(words.next(), Some("linux" | "linux16" | "linuxefi")) {
            if let (Some((title, id)), Some(image)) = (current.take(), words.next()) {
                if let Some(release) = release_of_image(image) {
                    let cmdline = words.collect::<Vec<_>>().join(" ");
                    out.push(BootEntry { title, id, release, cmdline: Some(cmdline) });
                }
            }
        }
    }
    out
}

/// A BLS entry: `title`, `version`, `linux` and `options` lines.
fn bls_entry(id: &str, text: &str) -> Option<BootEntry> {
    let field = |k: &str| {
        text.lines()
            .filter_map(|l| l.trim_start().strip_prefix(k))
            .find(|r| r.starts_with([' ', '\t']))
            .map(|r| r.trim().to_string())
    };
    let release = field("linux").and_then(|l| release_of_image(&l)).or_else(|| field("version"))?;
    Some(BootEntry { title: field("title").unwrap_or_else(|| id.to_string()), id: Some(id.to_string()), release, cmdline: bls_options(text).map(str::to_string) })
}

/// Which entry a `saved_entry` or `GRUB_DEFAULT` value names: an index, a title or an id
/// (a `>` path into a submenu is matched by its last part).
fn pick<'a>(entries: &'a [BootEntry], value: &str) -> Option<&'a BootEntry> {
    let last = value.rsplit('>').next().unwrap_or(value).trim();
    if let Ok(i) = last.parse::<usize>() {
        return if value.contains('>') { None } else { entries.get(i) };
    }
    entries.iter().find(|e| e.title == last || e.id.as_deref() == Some(last))
}

/// Order of kernel releases for "newest": numbers compared as numbers, part by part.
pub fn release_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, &str>> {
        s.split(['.', '-', '_', '+']).map(|p| p.parse::<u64>().map_err(|_| p)).collect()
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x, y) {
            (Ok(x), Ok(y)) => x.cmp(y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Err(x), Err(y)) => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn with_nokmem(e: &BootEntry) -> Option<bool> {
    e.cmdline.as_deref().map(|c| {
        let c = c.replace("$kernelopts", "");
        c.split_whitespace().any(|w| w.strip_prefix("cgroup.memory=").is_some_and(|v| v.split(',').any(|o| o == "nokmem")))
    })
}

fn next_boot(e: &BootEntry, how: &str, source: String) -> NextBoot {
    NextBoot { release: e.release.clone(), how: how.to_string(), source, cmdline_has_nokmem: with_nokmem(e) }
}

/// The kernel the boot loader starts next: the grub environment's `saved_entry`, else
/// `GRUB_DEFAULT`, else the first entry (grub's default 0); BLS entries (RHEL 8+) by id,
/// else the newest; with no boot loader files, the newest `/boot/vmlinuz-*` (a guess,
/// said so in `how`). None when /boot holds no kernel at all.
pub fn next_boot_kernel(host: &HostPaths) -> Option<NextBoot> {
    let name = |p: &Path| host.to_host_path(p).display().to_string();
    let env_path = ["/boot/grub2/grubenv", "/boot/grub/grubenv"].iter().map(|p| host.host(p)).find(|p| host.is_file_local(p));
    let saved = env_path.as_ref().and_then(|p| read_small(host, p)).and_then(|t| grubenv_saved_entry(&t));

    let setup = BootSetup::discover(host);
    if !setup.bls_entries.is_empty() {
        let mut entries: Vec<(PathBuf, BootEntry)> = setup
            .bls_entries
            .iter()
            .filter_map(|p| {
                let id = p.file_stem()?.to_str()?.to_string();
                Some((p.clone(), bls_entry(&id, &read_small(host, p)?)?))
            })
            .collect();
        entries.sort_by(|a, b| release_order(&b.1.release, &a.1.release));
        if let (Some(v), Some(env)) = (&saved, &env_path) {
            if let Some((_, e)) = entries.iter().find(|(_, e)| e.id.as_deref() == Some(v.as_str()) || e.title == *v) {
                return Some(next_boot(e, "saved_entry", name(env)));
            }
        }
        if let Some((p, e)) = entries.first() {
            return Some(next_boot(e, "newest BLS entry", name(p)));
        }
    }
    for cfg in &setup.grub_cfgs {
        let Some(text) = read_small(host, cfg) else { continue };
        let entries = grub_cfg_entries(&text);
        if entries.is_empty() {
            continue;
        }
        let grub_default = setup
            .grub_default
            .as_ref()
            .and_then(|p| read_small(host, p))
            .and_then(|t| t.lines().filter_map(|l| l.trim_start().strip_prefix("GRUB_DEFAULT=")).next_back().map(|v| v.trim().trim_matches(['"', '\'']).to_string()));
        if grub_default.as_deref().is_none_or(|d| d == "saved") {
            if let (Some(v), Some(env)) = (&saved, &env_path) {
                if let Some(e) = pick(&entries, v) {
                    return Some(next_boot(e, "saved_entry", name(env)));
                }
            }
        } else if let Some(e) = grub_default.as_deref().and_then(|d| pick(&entries, d)) {
            return Some(next_boot(e, "GRUB_DEFAULT", name(setup.grub_default.as_deref().unwrap_or(cfg))));
        }
        return Some(next_boot(&entries[0], "first entry", name(cfg)));
    }
    let mut installed: Vec<String> = host
        .list_dir_local(&host.host("/boot"))
        .ok()?
        .into_iter()
        .filter_map(|e| e.file_name().and_then(|n| n.to_str()).and_then(release_of_image))
        .collect();
    installed.sort_by(|a, b| release_order(b, a));
    let newest = installed.into_iter().next()?;
    Some(NextBoot { release: newest, how: "newest installed kernel".into(), source: name(&host.host("/boot")), cmdline_has_nokmem: None })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;

    #[test]
    fn options_and_cmdline_are_read_as_the_loader_reads_them() {
        let e = "title CentOS\nversion 4.18.0\nlinux /vmlinuz\noptions root=/dev/sda1 ro crashkernel=auto\noptionsx no\n";
        assert_eq!(bls_options(e), Some("root=/dev/sda1 ro crashkernel=auto"));
        assert_eq!(bls_options("title x\n"), None);
        let value = |t: &str| grub_cmdline_linux(t).unwrap().value;
        let g = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"quiet\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\nGRUB_CMDLINE_LINUX=\"ro rhgb\"\n";
        assert_eq!(value(g), "ro rhgb");
        assert_eq!(value("GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nokmem\" # keep\n"), "ro cgroup.memory=nokmem");
        assert_eq!(value("GRUB_CMDLINE_LINUX='ro quiet'\n"), "ro quiet");
        assert_eq!(value("GRUB_CMDLINE_LINUX=ro # a note\n"), "ro");
        assert_eq!(value("GRUB_CMDLINE_LINUX=\"\"\n"), "");
        let cfg = "menuentry 'x' {\n\tlinux16 /vmlinuz-3.10.0 root=/dev/sda1 ro\n\tinitrd16 /initramfs\n}\n\tlinux /vmlinuz-5 ro\n";
        assert_eq!(grub_cfg_kernel_lines(cfg), vec!["linux16 /vmlinuz-3.10.0 root=/dev/sda1 ro", "linux /vmlinuz-5 ro"]);
        let cfg = "\tlinux16\t/vmlinuz-3.10.0 ro\n\tlinuxefi\t/vmlinuz-4.18 ro\n\tlinux16\t/boot/memtest86+.bin\n\tlinux /boot/memtest86+x64.efi\n\tlinuxx /no\n";
        assert_eq!(grub_cfg_kernel_lines(cfg), vec!["linux16\t/vmlinuz-3.10.0 ro", "linuxefi\t/vmlinuz-4.18 ro"]);
    }

    const EL7_CFG: &str = "### BEGIN /etc/grub.d/10_linux ###\n\
menuentry 'CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)' --class centos --class gnu-linux $menuentry_id_option 'gnulinux-3.10.0-1160.el7.x86_64-advanced-uuid' {\n\
\tlinux16 /vmlinuz-3.10.0-1160.el7.x86_64 root=/dev/mapper/centos-root ro crashkernel=auto rhgb quiet\n\
\tinitrd16 /initramfs-3.10.0-1160.el7.x86_64.img\n}\n\
menuentry 'CentOS Linux (3.10.0-957.27.2.el7.x86_64) 7 (Core)' --class centos $menuentry_id_option 'gnulinux-3.10.0-957.27.2.el7.x86_64-advanced-uuid' {\n\
\tlinux16 /vmlinuz-3.10.0-957.27.2.el7.x86_64 root=/dev/mapper/centos-root ro cgroup.memory=nokmem\n}\n\
menuentry 'CentOS Linux (0-rescue-abc) 7 (Core)' {\n\tlinux16 /vmlinuz-0-rescue-abc root=/dev/mapper/centos-root ro\n}\n";

    fn boot_root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let f = t.path().join(p.trim_start_matches('/'));
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, text).unwrap();
        }
        t
    }

    #[test]
    fn next_boot_follows_the_saved_entry_then_the_first_entry() {
        let t = boot_root(&[
            ("/boot/grub2/grub.cfg", EL7_CFG),
            ("/boot/grub2/grubenv", "# GRUB Environment Block\nsaved_entry=CentOS Linux (3.10.0-957.27.2.el7.x86_64) 7 (Core)\n####"),
            ("/etc/default/grub", "GRUB_DEFAULT=saved\n"),
        ]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.how.as_str(), n.source.as_str()), ("3.10.0-957.27.2.el7.x86_64", "saved_entry", "/boot/grub2/grubenv"));
        assert_eq!(n.cmdline_has_nokmem, Some(true));
        let t = boot_root(&[("/boot/grub2/grub.cfg", EL7_CFG), ("/boot/grub2/grubenv", "saved_entry=gnulinux-3.10.0-1160.el7.x86_64-advanced-uuid\n")]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.cmdline_has_nokmem), ("3.10.0-1160.el7.x86_64", Some(false)));
        // No saved entry: grub's default 0.
        let t = boot_root(&[("/boot/grub2/grub.cfg", EL7_CFG)]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.how.as_str()), ("3.10.0-1160.el7.x86_64", "first entry"));
        // GRUB_DEFAULT=1 overrides the saved entry.
        let t = boot_root(&[("/boot/grub2/grub.cfg", EL7_CFG), ("/etc/default/grub", "GRUB_DEFAULT=1\n"), ("/boot/grub2/grubenv", "saved_entry=0\n")]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.how.as_str()), ("3.10.0-957.27.2.el7.x86_64", "GRUB_DEFAULT"));
    }

    #[test]
    fn next_boot_of_bls_and_of_bare_boot_dirs() {
        let t = boot_root(&[
            ("/boot/loader/entries/abc-4.18.0-348.el8.x86_64.conf", "title Red Hat\nversion 4.18.0-348.el8.x86_64\nlinux /vmlinuz-4.18.0-348.el8.x86_64\noptions $kernelopts\n"),
            ("/boot/loader/entries/abc-4.18.0-513.el8.x86_64.conf", "title Red Hat\nversion 4.18.0-513.el8.x86_64\nlinux /vmlinuz-4.18.0-513.el8.x86_64\noptions root=/dev/sda ro cgroup.memory=nosocket,nokmem\n"),
        ]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.how.as_str(), n.cmdline_has_nokmem), ("4.18.0-513.el8.x86_64", "newest BLS entry", Some(true)));
        let t = boot_root(&[("/boot/vmlinuz-4.19.0-9-amd64", ""), ("/boot/vmlinuz-4.19.0-25-amd64", ""), ("/boot/config-4.19.0-25-amd64", "")]);
        let n = next_boot_kernel(&HostPaths::new(t.path())).unwrap();
        assert_eq!((n.release.as_str(), n.how.as_str(), n.cmdline_has_nokmem), ("4.19.0-25-amd64", "newest installed kernel", None));
        assert!(next_boot_kernel(&HostPaths::new(tempfile::tempdir().unwrap().path())).is_none());
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

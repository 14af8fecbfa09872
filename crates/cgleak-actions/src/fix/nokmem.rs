//! nokmem: add `cgroup.memory=nokmem` to the kernel command line, so that no memcg gets
//! kmem accounting after the next boot (upstream 4.5+, RHEL 7 3.10.0-1062+; KERNEL-FACTS
//! section 3). Everything under the host root: the boot loader setup is found
//! ([`BootSetup`]), the files it changes are backed up in the state directory, edited
//! (or rewritten by the distribution's tool, run in the host root), and read again to
//! verify. A rollback, or `cgleak fix nokmem --restore DIR` later, puts the backed-up
//! files back byte for byte.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_readers::bootloader::{bls_options, grub_cfg_kernel_lines, grub_cmdline_linux, BootSetup};
use cgleak_readers::procfs::{cmdline_has, read_cmdline};
use cgleak_readers::HostPaths;

use super::journal::{now_unix, FixJournal, Outcome};
use super::{plan_from_journal, ApplyReport, FileWrite, FixError, FixHost, FixProgress, PlanView, StepRunner};

pub const ACTION: &str = "nokmem";
pub const PARAM: &str = "cgroup.memory=nokmem";
/// The list of backed-up files in a backup directory.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootloader {
    /// Boot Loader Specification entries (RHEL 8+, Fedora).
    Bls,
    /// grubby on grub.cfg (RHEL/CentOS 7).
    Grubby,
    /// /etc/default/grub and update-grub or grub(2)-mkconfig (Debian, Ubuntu, ...).
    Grub,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::Bls => "bls",
            Bootloader::Grubby => "grubby",
            Bootloader::Grub => "grub",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NokmemOptions {
    /// None: detect.
    pub bootloader: Option<Bootloader>,
    pub state_dir: PathBuf,
    /// Put back the files backed up in this directory instead.
    pub restore: Option<PathBuf>,
}

/// A file as it was before the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub file: PathBuf,
    pub host_file: String,
    /// The copy (None when the file did not exist: restoring removes it).
    pub copy: Option<PathBuf>,
    pub mode: u32,
}

/// A file the fix writes whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    pub file: PathBuf,
    pub host_file: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Backup,
    Edit,
    Command,
    Verify,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NokmemPlan {
    pub bootloader: Option<Bootloader>,
    pub host_root: PathBuf,
    pub backup_dir: PathBuf,
    pub backups: Vec<Backup>,
    pub edits: Vec<FileEdit>,
    /// The tool to run, as the host names it (run through chroot under another root).
    pub command: Option<Vec<String>>,
    /// Files that must hold the parameter afterwards (edited and generated).
    pub verify: Vec<PathBuf>,
    /// Generated grub.cfg files whose every kernel line must hold it.
    pub verify_kernel_lines: Vec<PathBuf>,
    pub steps: Vec<StepKind>,
}

/// `cmdline` with [`PARAM`] added, or None when it has it already. An existing
/// `cgroup.memory=` list (`nosocket`) gets `nokmem` added to it.
pub fn add_to_cmdline(cmdline: &str) -> Option<String> {
    let tokens: Vec<&str> = cmdline.split_whitespace().collect();
    if tokens.iter().any(|t| t.strip_prefix("cgroup.memory=").is_some_and(|v| v.split(',').any(|x| x == "nokmem"))) {
        return None;
    }
    if let Some(pos) = tokens.iter().position(|t| t.starts_with("cgroup.memory=")) {
        let mut out: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        out[pos] = format!("{},nokmem", out[pos]);
        return Some(out.join(" "));
    }
    let base = cmdline.trim();
    Some(if base.is_empty() { PARAM.to_string() } else { format!("{base} {PARAM}") })
}

/// /etc/default/grub with the parameter in its (last) GRUB_CMDLINE_LINUX, or a new one.
pub fn edit_grub_default(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let idx = lines.iter().rposition(|l| l.trim_start().starts_with("GRUB_CMDLINE_LINUX="));
    let Some(i) = idx else {
        let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
        return Some(format!("{text}{sep}GRUB_CMDLINE_LINUX=\"{PARAM}\"\n"));
    };
    let line = lines[i];
    let (body, nl) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
    let eq = body.find("GRUB_CMDLINE_LINUX=").expect("found above") + "GRUB_CMDLINE_LINUX=".len();
    let (prefix, rest) = body.split_at(eq);
    let (value, quote, suffix) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => match rest[1..].find(q) {
            Some(end) => (&rest[1..1 + end], q.to_string(), &rest[2 + end..]),
            None => (&rest[1..], q.to_string(), ""),
        },
        _ => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], String::new(), &rest[end..])
        }
    };
    let new = add_to_cmdline(value)?;
    let quote = if quote.is_empty() { "\"".to_string() } else { quote };
    let mut out: String = lines[..i].concat();
    out.push_str(&format!("{prefix}{quote}{new}{quote}{suffix}{nl}"));
    out.push_str(&lines[i + 1..].concat());
    Some(out)
}

/// A BLS entry with the parameter in its `options` line (added when it has none); None
/// when it has it, or when its options are `$kernelopts` (the grubenv holds them).
pub fn edit_bls_entry(text: &str) -> Option<String> {
    if let Some(opts) = bls_options(text) {
        if opts.contains("$kernelopts") {
            return None;
        }
        let new = add_to_cmdline(opts)?;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let i = lines
            .iter()
            .rposition(|l| l.trim_start().strip_prefix("options").is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\n'])))
            .expect("bls_options found it");
        let indent: String = lines[i].chars().take_while(|c| c.is_whitespace()).collect();
        let nl = if lines[i].ends_with('\n') { "\n" } else { "" };
        return Some(format!("{}{indent}options {new}{nl}{}", lines[..i].concat(), lines[i + 1..].concat()));
    }
    let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
    Some(format!("{text}{sep}options {PARAM}\n"))
}

/// The GRUB environment block with the parameter in `kernelopts=`; the block keeps its
/// size (1024 bytes, padded with `#`, which grub reads as a whole).
pub fn edit_grubenv(text: &str) -> Result<Option<String>, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(i) = lines.iter().position(|l| l.starts_with("kernelopts=")) else {
        return Err("no kernelopts= line".into());
    };
    let old = lines[i].trim_end_matches('\n').trim_start_matches("kernelopts=");
    let Some(new) = add_to_cmdline(old) else { return Ok(None) };
    let mut out = format!("{}kernelopts={new}\n{}", lines[..i].concat(), lines[i + 1..].concat());
    let grow = out.len() as i64 - text.len() as i64;
    if grow > 0 {
        let padding = out.len() - out.trim_end_matches('#').len();
        if padding < grow as usize {
            return Err(format!("no room left in the environment block for {PARAM}"));
        }
        out.truncate(out.len() - grow as usize);
    }
    Ok(Some(out))
}

fn detect(s: &BootSetup) -> Option<Bootloader> {
    if !s.bls_entries.is_empty() {
        Some(Bootloader::Bls)
    } else if s.grubby.is_some() && !s.grub_cfgs.is_empty() {
        Some(Bootloader::Grubby)
    } else if s.grub_default.is_some() && (s.update_grub.is_some() || s.grub_mkconfig.is_some()) {
        Some(Bootloader::Grub)
    } else {
        None
    }
}

fn read(p: &Path) -> Result<String, FixError> {
    fs::read_to_string(p).map_err(|e| FixError::Runtime(format!("{}: {e}", p.display())))
}

/// The lines that differ, `-old` / `+new`: the diff a plan shows.
pub fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                if let Some(x) = x {
                    out.push(format!("-{x}"));
                }
                if let Some(y) = y {
                    out.push(format!("+{y}"));
                }
            }
        }
    }
    out.join("\n")
}

fn host_name(host: &HostPaths, p: &Path) -> String {
    host.to_host_path(p).display().to_string()
}

/// The file a write to `p` must go to: symlinks followed inside the host root, so that
/// a linked file (RHEL's `/boot/grub2/grubenv` on EFI) is written, not replaced by a copy.
fn write_target(host: &HostPaths, p: &Path) -> PathBuf {
    host.resolve(host.to_host_path(p)).unwrap_or_else(|| p.to_path_buf())
}

pub fn plan(fh: &FixHost, o: &NokmemOptions) -> Result<(PlanView, NokmemPlan), FixError> {
    if let Some(dir) = &o.restore {
        return plan_restore(fh, dir);
    }
    let host = &fh.host;
    let setup = BootSetup::discover(host);
    // A directory of its own: a fix that finds copies in its backup directory takes them
    // for its originals (a resumed fix), so it must never reuse an earlier fix's.
    let stamp = format!("nokmem-backup-{}", now_unix() as u64);
    let mut backup_dir = o.state_dir.join(&stamp);
    for n in 2.. {
        if !backup_dir.exists() {
            break;
        }
        backup_dir = o.state_dir.join(format!("{stamp}-{n}"));
    }
    let mut view = PlanView::new(ACTION, format!("add {PARAM} to the kernel command line (effective at the next boot)"));
    let mut plan = NokmemPlan {
        bootloader: None,
        host_root: host.root().to_path_buf(),
        backup_dir: backup_dir.clone(),
        backups: Vec::new(),
        edits: Vec::new(),
        command: None,
        verify: Vec::new(),
        verify_kernel_lines: Vec::new(),
        steps: Vec::new(),
    };
    let Some(kind) = o.bootloader.or_else(|| detect(&setup)) else {
        view.refused = Some(format!(
            "no boot loader setup found under {} (no BLS entries in /boot/loader/entries, no grubby with a grub.cfg, no \
             /etc/default/grub with update-grub, grub2-mkconfig or grub-mkconfig): add {PARAM} to the kernel command line by hand",
            host.root().display()
        ));
        return Ok((view, plan));
    };
    plan.bootloader = Some(kind);
    let mut touched: Vec<PathBuf> = Vec::new();
    let add_edit = |plan: &mut NokmemPlan, file: &Path, new: String| {
        plan.edits.push(FileEdit { file: write_target(host, file), host_file: host_name(host, file), content: new });
        plan.verify.push(file.to_path_buf());
    };
    match kind {
        Bootloader::Bls => {
            if setup.bls_entries.is_empty() {
                return Err(FixError::Usage(format!("--bootloader bls: no entries in {}", host_name(host, &host.host("/boot/loader/entries")))));
            }
            for e in &setup.bls_entries {
                let text = read(e)?;
                match edit_bls_entry(&text) {
                    Some(new) => add_edit(&mut plan, e, new),
                    None if bls_options(&text).is_some_and(|o| o.contains("$kernelopts")) => {}
                    None => plan.verify.push(e.clone()),
                }
                touched.push(e.clone());
            }
            if let Some(env) = &setup.grubenv {
                let text = read(env)?;
                match edit_grubenv(&text).map_err(|e| FixError::Runtime(format!("{}: {e}", env.display())))? {
                    Some(new) => add_edit(&mut plan, env, new),
                    None => plan.verify.push(env.clone()),
                }
                touched.push(env.clone());
            }
        }
        Bootloader::Grubby => {
            let grubby = setup.grubby.clone().ok_or_else(|| FixError::Usage(format!("--bootloader grubby: no grubby under {}", host.root().display())))?;
            let cfgs = setup.grub_cfgs.clone();
            if cfgs.is_empty() {
                return Err(FixError::Usage("--bootloader grubby: no grub.cfg in /boot/grub2, /boot/grub or /boot/efi/EFI/*".into()));
            }
            let all_have = cfgs.iter().all(|c| fs::read_to_string(c).is_ok_and(|t| kernel_lines_have(&t)));
            if !all_have {
                // grubby replaces an argument of the same name: an existing
                // cgroup.memory=nosocket must become nosocket,nokmem, not nokmem.
                let arg = cfgs
                    .iter()
                    .filter_map(|c| fs::read_to_string(c).ok())
                    .flat_map(|t| grub_cfg_kernel_lines(&t).into_iter().map(str::to_string).collect::<Vec<_>>())
                    .filter(|l| add_to_cmdline(l).is_some())
                    .find_map(|l| l.split_whitespace().find(|t| t.starts_with("cgroup.memory=")).map(|t| format!("{t},nokmem")))
                    .unwrap_or_else(|| PARAM.to_string());
                plan.command = Some(vec![host_name(host, &grubby), "--update-kernel=ALL".into(), format!("--args={arg}")]);
            }
            plan.verify_kernel_lines = cfgs.clone();
            touched.extend(cfgs);
        }
        Bootloader::Grub => {
            let default = setup.grub_default.clone().ok_or_else(|| FixError::Usage(format!("--bootloader grub: no {}", host_name(host, &host.host("/etc/default/grub")))))?;
            let (command, cfg) = match (&setup.update_grub, &setup.grub_mkconfig) {
                (Some(u), _) => (vec![host_name(host, u)], setup.grub_cfgs.first().cloned().unwrap_or_else(|| host.host("/boot/grub/grub.cfg"))),
                (None, Some(m)) => {
                    let dflt = if m.ends_with("grub2-mkconfig") { "/boot/grub2/grub.cfg" } else { "/boot/grub/grub.cfg" };
                    let cfg = setup.grub_cfgs.first().cloned().unwrap_or_else(|| host.host(dflt));
                    (vec![host_name(host, m), "-o".into(), host_name(host, &cfg)], cfg)
                }
                (None, None) => return Err(FixError::Usage("--bootloader grub: neither update-grub nor grub2-mkconfig/grub-mkconfig found".into())),
            };
            let cfg_ok = fs::read_to_string(&cfg).is_ok_and(|t| kernel_lines_have(&t));
            let changed = edit_grub_default(&read(&default)?);
            if let Some(new) = changed.clone() {
                add_edit(&mut plan, &default, new);
            } else {
                plan.verify.push(default.clone());
            }
            if changed.is_some() || !cfg_ok {
                plan.command = Some(command);
            }
            plan.verify_kernel_lines.push(cfg.clone());
            touched.push(default);
            touched.push(cfg);
        }
    }
    // Grub defaults beside BLS or grubby: new kernels' entries are made from them.
    if kind != Bootloader::Grub {
        if let Some(d) = &setup.grub_default {
            if let Some(new) = edit_grub_default(&read(d)?) {
                add_edit(&mut plan, d, new);
            }
            touched.push(d.clone());
        }
    }
    touched.sort();
    touched.dedup();
    for f in &touched {
        let mode = fs::metadata(f).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
        // `<backup dir>/<host path>`: the host's name of the file, made relative.
        let rel: PathBuf = host.to_host_path(f).components().filter(|c| matches!(c, Component::Normal(_))).collect();
        let copy = f.exists().then(|| backup_dir.join(rel));
        plan.backups.push(Backup { file: write_target(host, f), host_file: host_name(host, f), copy, mode });
    }
    if plan.edits.is_empty() && plan.command.is_none() {
        view.nothing_to_do = Some(format!("{PARAM} is in the boot configuration already ({})", kind.as_str()));
        return Ok((view, plan));
    }
    let bdir = backup_dir.display().to_string();
    view.step(format!("back up {} files to {bdir}", plan.backups.len()), Vec::new(), plan.backups.iter().map(|b| FileWrite { file: format!("{bdir}/{}", b.host_file.trim_start_matches('/')), value: format!("copy of {}", b.host_file) }).collect());
    plan.steps.push(StepKind::Backup);
    if !plan.edits.is_empty() {
        let writes = plan
            .edits
            .iter()
            .map(|e| FileWrite { file: e.host_file.clone(), value: line_diff(&fs::read_to_string(&e.file).unwrap_or_default(), &e.content) })
            .collect();
        view.step(format!("write {PARAM} into {} files", plan.edits.len()), Vec::new(), writes);
        plan.steps.push(StepKind::Edit);
    }
    if let Some(c) = &plan.command {
        let how = if host.is_host_root() { String::new() } else { format!(" (chroot {})", host.root().display()) };
        view.step(format!("run {}{how}", c.join(" ")), Vec::new(), plan.verify_kernel_lines.iter().map(|f| FileWrite { file: host_name(host, f), value: "regenerated".into() }).collect());
        plan.steps.push(StepKind::Command);
    }
    view.step(format!("verify: read the files again; each must hold {PARAM}"), Vec::new(), Vec::new());
    plan.steps.push(StepKind::Verify);
    view.expected_gain = format!("after the next reboot no memcg gets kmem accounting, so deleted pods' memcgs release their IDs ({} boot setup)", kind.as_str());
    view.notes.push(format!("takes effect only after a reboot; kernels that honour {PARAM}: upstream 4.5+ and RHEL 7 3.10.0-1062+"));
    if !fh.era.nokmem_supported {
        view.notes.push(format!("the running kernel {} does not know {PARAM}: it takes effect once the node boots a kernel that does", fh.era.release.raw));
    }
    if read_cmdline(host).is_ok_and(|c| cmdline_has(&c, PARAM)) {
        view.notes.push(format!("the running kernel was booted with {PARAM} already: this makes it stay so"));
    }
    view.notes.push(format!("undo later with: cgleak fix nokmem --restore {bdir} --apply"));
    Ok((view, plan))
}

fn kernel_lines_have(cfg: &str) -> bool {
    let lines = grub_cfg_kernel_lines(cfg);
    !lines.is_empty() && lines.iter().all(|l| add_to_cmdline(l).is_none())
}

fn plan_restore(fh: &FixHost, dir: &Path) -> Result<(PlanView, NokmemPlan), FixError> {
    let manifest = dir.join(MANIFEST);
    let text = fs::read_to_string(&manifest).map_err(|e| FixError::Usage(format!("--restore {}: {}: {e}", dir.display(), manifest.display())))?;
    let mut backups: Vec<Backup> = serde_json::from_str(&text).map_err(|e| FixError::Usage(format!("--restore: {}: not a cgleak backup manifest: {e}", manifest.display())))?;
    // The copies are taken from DIR (`DIR/<host path>`) and put back where this host root
    // has each file, not at the paths the backup was made from: DIR may have been moved,
    // or the fix applied under another --host-root. Every copy is checked first, so that
    // a restore does not stop half done.
    for b in &mut backups {
        let rel: PathBuf = Path::new(&b.host_file).components().filter(|c| matches!(c, Component::Normal(_))).collect();
        b.file = fh.host.resolve(&rel).unwrap_or_else(|| fh.host.host(&rel));
        if let Some(copy) = &mut b.copy {
            *copy = dir.join(&rel);
            if !copy.is_file() {
                return Err(FixError::Usage(format!("--restore {}: {} (the copy of {}) is missing", dir.display(), copy.display(), b.host_file)));
            }
        }
    }
    let mut view = PlanView::new(ACTION, format!("put back the boot configuration files backed up in {}", dir.display()));
    view.step(
        format!("restore {} files byte for byte", backups.len()),
        Vec::new(),
        backups.iter().map(|b| FileWrite { file: b.host_file.clone(), value: b.copy.as_ref().map_or("removed (it did not exist)".into(), |c| format!("copy of {}", c.display())) }).collect(),
    );
    view.expected_gain = format!("the boot configuration as it was; {PARAM} is gone from it after the next boot");
    view.notes.push("a generated grub.cfg is restored as it was; nothing is regenerated".into());
    let plan = NokmemPlan {
        bootloader: None,
        host_root: fh.host.root().to_path_buf(),
        backup_dir: dir.to_path_buf(),
        backups,
        edits: Vec::new(),
        command: None,
        verify: Vec::new(),
        verify_kernel_lines: Vec::new(),
        steps: vec![StepKind::Restore],
    };
    Ok((view, plan))
}

/// Write `content` to `file` whole (a synced temporary renamed over it), with `mode`.
fn write_whole(file: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    let dir = file.parent().ok_or_else(|| format!("{}: no parent directory", file.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{}.cgleak-{}", file.file_name().and_then(|n| n.to_str()).unwrap_or("file"), std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, file)?;
        fs::File::open(dir)?.sync_all()
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", file.display())
    })
}

fn back_up(plan: &NokmemPlan) -> Result<String, String> {
    fs::create_dir_all(&plan.backup_dir).map_err(|e| format!("{}: {e}", plan.backup_dir.display()))?;
    for b in &plan.backups {
        if let Some(copy) = &b.copy {
            // Already copied by an earlier run: the copy is of the original, keep it.
            if copy.exists() {
                continue;
            }
            let bytes = fs::read(&b.file).map_err(|e| format!("{}: {e}", b.file.display()))?;
            write_whole(copy, &bytes, 0o600)?;
        }
    }
    let manifest = serde_json::to_vec_pretty(&plan.backups).expect("backups serialize");
    write_whole(&plan.backup_dir.join(MANIFEST), &manifest, 0o600)?;
    Ok(format!("{} files backed up in {}", plan.backups.iter().filter(|b| b.copy.is_some()).count(), plan.backup_dir.display()))
}

fn restore(backups: &[Backup]) -> Result<String, String> {
    for b in backups {
        match &b.copy {
            Some(copy) => {
                let bytes = fs::read(copy).map_err(|e| format!("{}: {e}", copy.display()))?;
                write_whole(&b.file, &bytes, b.mode)?;
            }
            None => match fs::remove_file(&b.file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("remove {}: {e}", b.file.display())),
            },
        }
    }
    Ok(format!("{} files restored", backups.len()))
}

fn run_command(plan: &NokmemPlan, argv: &[String]) -> Result<String, String> {
    let root = &plan.host_root;
    let mut cmd = if root == Path::new("/") {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).args(argv);
        c
    };
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {}: {e}", argv.join(" ")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!("{} failed ({}): {}", argv.join(" "), out.status, tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
    }
    Ok(format!("{} ran", argv.join(" ")))
}

fn verify(plan: &NokmemPlan) -> Result<String, String> {
    let mut missing = Vec::new();
    for f in &plan.verify {
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let has = if f.ends_with("grubenv") {
            text.lines().find_map(|l| l.strip_prefix("kernelopts=")).is_some_and(|v| add_to_cmdline(v).is_none())
        } else if f.ends_with("grub") {
            grub_cmdline_linux(&text).is_some_and(|v| add_to_cmdline(&v).is_none())
        } else {
            bls_options(&text).is_some_and(|o| o.contains("$kernelopts") || add_to_cmdline(o).is_none())
        };
        if !has {
            missing.push(f.display().to_string());
        }
    }
    for f in &plan.verify_kernel_lines {
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if !kernel_lines_have(&text) {
            missing.push(format!("{} (a kernel line without it)", f.display()));
        }
    }
    if missing.is_empty() {
        Ok(format!("{PARAM} found in {} files", plan.verify.len() + plan.verify_kernel_lines.len()))
    } else {
        Err(format!("{PARAM} is missing from {}", missing.join(", ")))
    }
}

pub fn run(journal: FixJournal, rollback: bool, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, NokmemPlan) = plan_from_journal(&journal)?;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    let details = json!({ "backup_dir": plan.backup_dir, "bootloader": plan.bootloader });
    let undo = |r: &mut StepRunner, reason: &str| -> Result<String, String> {
        r.journal.rollback(reason).map_err(|e| e.to_string())?;
        // Only what was backed up can be put back; before the backup nothing was changed.
        if plan.backups.iter().all(|b| b.copy.as_ref().is_none_or(|c| c.exists())) {
            restore(&plan.backups)
        } else {
            Ok("nothing changed yet".into())
        }
    };
    if rollback || r.journal.state.rolling_back.is_some() {
        return Ok(match undo(&mut r, "rollback asked") {
            Ok(d) => {
                r.notes.push(d);
                r.finish(Outcome::RolledBack, None, details)
            }
            Err(e) => r.stop_unfinished(e, details),
        });
    }
    for (i, kind) in plan.steps.iter().enumerate() {
        let step = i as u32 + 1;
        let res = r.run(step, |_| {
            let d = match kind {
                StepKind::Backup => back_up(&plan)?,
                StepKind::Edit => {
                    for e in &plan.edits {
                        let mode = fs::metadata(&e.file).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
                        write_whole(&e.file, e.content.as_bytes(), mode)?;
                    }
                    format!("{} files written", plan.edits.len())
                }
                StepKind::Command => run_command(&plan, plan.command.as_deref().unwrap_or_default())?,
                StepKind::Verify => verify(&plan)?,
                StepKind::Restore => restore(&plan.backups)?,
            };
            Ok((d, json!({})))
        });
        if let Err(e) = res {
            // A failed edit, tool or verification: put the files back as they were.
            return Ok(match undo(&mut r, &format!("step {step} failed: {e}")) {
                Ok(d) => {
                    r.notes.push(format!("rolled back: {d}"));
                    r.finish(Outcome::RolledBack, Some(e), details)
                }
                Err(u) => r.stop_unfinished(format!("{e}; restoring the backup failed too: {u}"), details),
            });
        }
    }
    if plan.steps.first() != Some(&StepKind::Restore) {
        r.notes.push(format!("effective after the next reboot; the originals are in {}", plan.backup_dir.display()));
    }
    Ok(r.finish(Outcome::Completed, None, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_is_added_once_and_joins_an_existing_cgroup_memory_list() {
        assert_eq!(add_to_cmdline("ro quiet").as_deref(), Some("ro quiet cgroup.memory=nokmem"));
        assert_eq!(add_to_cmdline("").as_deref(), Some("cgroup.memory=nokmem"));
        assert_eq!(add_to_cmdline("ro cgroup.memory=nosocket").as_deref(), Some("ro cgroup.memory=nosocket,nokmem"));
        assert_eq!(add_to_cmdline("ro cgroup.memory=nosocket,nokmem"), None);
        assert_eq!(add_to_cmdline("cgroup.memory=nokmem ro"), None);
    }

    #[test]
    fn grub_defaults_keep_their_quotes_comments_and_other_lines() {
        let t = "# comment\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet\" # keep\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\n";
        let e = edit_grub_default(t).unwrap();
        assert_eq!(e, "# comment\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet cgroup.memory=nokmem\" # keep\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\n");
        assert_eq!(edit_grub_default(&e), None);
        assert_eq!(edit_grub_default("GRUB_CMDLINE_LINUX=''\n").unwrap(), "GRUB_CMDLINE_LINUX='cgroup.memory=nokmem'\n");
        assert_eq!(edit_grub_default("GRUB_CMDLINE_LINUX=ro\n").unwrap(), "GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nokmem\"\n");
        assert_eq!(edit_grub_default("GRUB_TIMEOUT=5").unwrap(), "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n");
    }

    #[test]
    fn bls_entries_get_the_parameter_on_their_options_line() {
        let e = "title CentOS Linux\nversion 4.18.0-305.el8.x86_64\nlinux /vmlinuz-4.18.0-305.el8.x86_64\noptions root=/dev/mapper/cl-root ro crashkernel=auto\nid centos\n";
        let n = edit_bls_entry(e).unwrap();
        assert!(n.contains("\noptions root=/dev/mapper/cl-root ro crashkernel=auto cgroup.memory=nokmem\nid centos\n"), "{n}");
        assert_eq!(edit_bls_entry(&n), None);
        assert_eq!(edit_bls_entry("options $kernelopts $tuned_params\n"), None);
        assert_eq!(edit_bls_entry("title x\n").unwrap(), "title x\noptions cgroup.memory=nokmem\n");
    }

    #[test]
    fn the_grub_environment_block_keeps_its_size() {
        let head = "# GRUB Environment Block\nkernelopts=root=/dev/sda1 ro\nsaved_entry=abc\n";
        let block = format!("{head}{}", "#".repeat(1024 - head.len()));
        let e = edit_grubenv(&block).unwrap().unwrap();
        assert_eq!(e.len(), 1024);
        assert!(e.contains("\nkernelopts=root=/dev/sda1 ro cgroup.memory=nokmem\nsaved_entry=abc\n"), "{e}");
        assert_eq!(edit_grubenv(&e).unwrap(), None);
        let full = format!("{head}{}", "#".repeat(3));
        assert!(edit_grubenv(&full).unwrap_err().contains("no room"));
    }

    #[test]
    fn diffs_show_the_changed_lines() {
        assert_eq!(line_diff("a\nb\n", "a\nb2\n"), "-b\n+b2");
        assert_eq!(line_diff("a\n", "a\nc\n"), "+c");
    }
}

//! nokmem: add `cgroup.memory=nokmem` to the kernel command line, so that no memcg gets
//! kmem accounting after the next boot (upstream 4.5+, RHEL 7 3.10.0-1062+; docs/kernel-facts.md
//! section 3). Everything under the host root: the boot loader setup is found
//! ([`BootSetup`]), the files it changes are backed up in the state directory, edited
//! (or rewritten by the distribution's tool, run in the host root), and read again to
//! verify. A rollback, or `cgleak fix nokmem --restore DIR` later, puts the backed-up
//! files back byte for byte.
//!
//! Host files are read, written and removed beneath the host root only: a boot file as
//! discovered (or to verify) is read with its links taken as the host takes them
//! ([`HostPaths::read_local`]); a file the fix writes, at the path the plan resolved, is
//! reached through its directory opened beneath the root following no link (a link there
//! now was put in since the plan, and may lead out of the root), then written as a
//! temporary made there with `openat` (O_EXCL, O_NOFOLLOW), synced and `renameat` over
//! it, or removed with `unlinkat`. Only regular files are read, replaced or removed, each
//! up to a cap, never waiting on a FIFO. The copies and the manifest are kept through the
//! fixer's [`StateDir`]: no link followed to them, directories root alone may change.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use rustix::fs::{FileType, Mode};

use serde::{Deserialize, Serialize};
use serde_json::json;

use cgleak_model::verdict::NotOfferedKind;
use cgleak_readers::bootloader::{
    apply_insertions, bls_cmdline, grub_cfg_kernel_lines, grub_cmdline_linux, grubenv_cmdline, grub_words, BootSetup, FileCmdline, NotLiteral,
};
use cgleak_readers::procfs::{cmdline_has, read_cmdline};
use cgleak_readers::{beneath, bounded, HostPaths, ReadError};

use super::journal::{now_unix, FixJournal, Outcome};
use super::state::{Open, StateDir};
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

fn has_nokmem(word: &str) -> bool {
    word.strip_prefix("cgroup.memory=").is_some_and(|v| v.split(',').any(|x| x == "nokmem"))
}

/// The kernel's words with [`PARAM`] added, or None when one has it already: an existing
/// `cgroup.memory=` list (`nosocket`) gets `nokmem` added to it (mm/memcontrol.c
/// cgroup_memory() takes a comma list), else the parameter comes last. What every edit
/// must give, read back.
pub fn with_nokmem(words: &[String]) -> Option<Vec<String>> {
    if words.iter().any(|w| has_nokmem(w)) {
        return None;
    }
    let mut out = words.to_vec();
    match out.iter_mut().find(|w| w.starts_with("cgroup.memory=")) {
        Some(w) if w == "cgroup.memory=" => w.push_str("nokmem"),
        Some(w) => w.push_str(",nokmem"),
        None => out.push(PARAM.to_string()),
    }
    Some(out)
}

/// The insertions that add [`PARAM`] to a file's command line (None: it has it), the
/// way [`with_nokmem`] adds it to the words.
fn nokmem_insertions(c: &FileCmdline) -> Option<Vec<(usize, String)>> {
    let texts = c.texts();
    if texts.iter().any(|w| has_nokmem(w)) {
        return None;
    }
    Some(match texts.iter().position(|w| w.starts_with("cgroup.memory=")) {
        Some(i) => vec![c.extend_word(i, if texts[i] == "cgroup.memory=" { "nokmem" } else { ",nokmem" })],
        None => c.add_word(PARAM),
    })
}

/// The boot files nokmem edits, each read as the program that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    /// /etc/default/grub: sourced by /bin/sh, its `GRUB_CMDLINE_LINUX` split by grub.
    GrubDefault,
    /// A BLS entry's `options` line.
    BlsEntry,
    /// The grub environment block's `kernelopts=`.
    Grubenv,
}

impl BootFile {
    /// Which one a path is (as verify tells them: grubenv, /etc/default/grub, else BLS).
    pub fn of(path: &Path) -> BootFile {
        if path.ends_with("grubenv") {
            BootFile::Grubenv
        } else if path.ends_with("grub") {
            BootFile::GrubDefault
        } else {
            BootFile::BlsEntry
        }
    }

    pub fn read(self, text: &str) -> Result<FileCmdline, NotLiteral> {
        match self {
            BootFile::GrubDefault => grub_cmdline_linux(text),
            BootFile::BlsEntry => bls_cmdline(text),
            BootFile::Grubenv => grubenv_cmdline(text),
        }
    }

    /// `text` with [`PARAM`] added; None when it has it (or, for a BLS entry, when its
    /// options come from `$kernelopts`: the grubenv edit adds it there). The result is
    /// read back before it is returned: it must give exactly the old words plus the
    /// parameter, once, or the edit is refused. Err: the line cgleak does not edit.
    pub fn edit(self, text: &str) -> Result<Option<String>, NotLiteral> {
        let old = self.read(text)?;
        if self == BootFile::BlsEntry && old.words.iter().any(|w| w.var.as_deref() == Some("kernelopts")) {
            return Ok(None);
        }
        let Some(insertions) = nokmem_insertions(&old) else { return Ok(None) };
        let mut new = apply_insertions(text, &insertions);
        if self == BootFile::Grubenv {
            new = keep_block_size(text, new, &old)?;
        }
        let want = with_nokmem(&old.texts()).expect("nokmem_insertions found it missing");
        let line = old.line.unwrap_or_else(|| new.lines().count());
        let refuse = |why: String| NotLiteral { line, text: new.lines().nth(line.saturating_sub(1)).unwrap_or_default().to_string(), why };
        match self.read(&new) {
            Ok(back) if back.texts() == want => Ok(Some(new)),
            Ok(back) => Err(refuse(format!("adding {PARAM} here would read back as {:?}, not {want:?}: cgleak does not edit this line", back.texts()))),
            Err(e) => Err(refuse(format!("adding {PARAM} here would not read back ({})", e.why))),
        }
    }
}

/// The environment block keeps its size (grub reads it whole; 1024 bytes as
/// grub2-editenv makes it): the `#` padding after the last line gives up what the edit adds.
fn keep_block_size(old: &str, mut new: String, c: &FileCmdline) -> Result<String, NotLiteral> {
    let grow = new.len().saturating_sub(old.len());
    let tail = &new[new.rfind('\n').map_or(0, |i| i + 1)..];
    let padding = if tail.bytes().all(|b| b == b'#') { tail.len() } else { 0 };
    if padding < grow {
        return Err(NotLiteral {
            line: c.line.unwrap_or(0),
            text: c.value.clone(),
            why: format!("no room left in the environment block for {PARAM} ({padding} bytes of # padding, {grow} needed); the block keeps its size"),
        });
    }
    new.truncate(new.len() - grow);
    Ok(new)
}

/// /etc/default/grub with the parameter in the `GRUB_CMDLINE_LINUX` the shell ends
/// with (a new assignment when it has none); None when it has it.
pub fn edit_grub_default(text: &str) -> Result<Option<String>, NotLiteral> {
    BootFile::GrubDefault.edit(text)
}

/// A BLS entry with the parameter in its `options` line (added when it has none); None
/// when it has it, or when its options are `$kernelopts` (the grubenv holds them).
pub fn edit_bls_entry(text: &str) -> Result<Option<String>, NotLiteral> {
    BootFile::BlsEntry.edit(text)
}

/// The GRUB environment block with the parameter in `kernelopts=`; the block keeps its
/// size (padded with `#`, which grub reads as a whole).
pub fn edit_grubenv(text: &str) -> Result<Option<String>, NotLiteral> {
    BootFile::Grubenv.edit(text)
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

/// Boot files (grub.cfg with every kernel's entry included) stay far below it.
const CAP: u64 = bounded::CONFIG_FILE_CAP;

/// `--bootloader KIND` (given, or the one found) that this host's boot files do not support.
fn bootloader(kind: &str, why: String) -> FixError {
    FixError::BadArgument { flag: "--bootloader", value: kind.to_string(), why }
}

/// A boot file as discovered, read beneath the host root.
fn read(host: &HostPaths, p: &Path) -> Result<String, FixError> {
    Ok(host.read_local(p, CAP)?)
}

/// A read error of [`read_target`] in words, a link refused on the way named as one.
fn read_error(e: ReadError) -> String {
    match e {
        ReadError::Io { path, source } => format!("{}: {}", path.display(), beneath::explain(&source)),
        e => e.to_string(),
    }
}

/// Bytes of `path` as text (UTF-8, as `read_to_string` wanted them).
fn text(path: &Path, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{}: stream did not contain valid UTF-8", path.display()))
}

/// A file the fix writes (a path the plan resolved), read beneath the root following no link.
fn read_target(host: &HostPaths, file: &Path) -> Result<Vec<u8>, String> {
    host.read_bytes_nofollow_local(file, CAP).map_err(read_error)
}

/// Write `content` to `file` (a path the plan resolved) whole: its directory opened beneath
/// the host root following no link (made when missing, a component at a time), a
/// temporary beside it synced and renamed over it. `mode` None: the file's own (0644 when
/// it is not there).
fn write_whole(host: &HostPaths, file: &Path, content: &[u8], mode: Option<u32>) -> Result<(), String> {
    let fail = |e: io::Error| format!("write {}: {}", file.display(), beneath::explain(&e));
    let (dir, name) = host.open_parent_nofollow(file, Some(Mode::from_raw_mode(0o755))).map_err(fail)?;
    let mode = match mode {
        Some(m) => m,
        None => beneath::entry(dir.as_fd(), &name).map_err(fail)?.map_or(0o644, |st| st.st_mode & 0o7777),
    };
    let mut tmp = OsString::from(".");
    tmp.push(&name);
    tmp.push(format!(".cgleak-{}", std::process::id()));
    beneath::write_file_atomic(dir.as_fd(), &name, &tmp, content, Mode::from_raw_mode(mode)).map_err(fail)
}

/// Remove `file` (a path the plan resolved, a regular file) beneath the root; nothing there is fine.
fn remove(host: &HostPaths, file: &Path) -> Result<(), String> {
    let fail = |e: io::Error| format!("remove {}: {}", file.display(), beneath::explain(&e));
    match host.open_parent_nofollow(file, None) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail(e)),
        Ok((dir, name)) => beneath::unlink_file(dir.as_fd(), &name).map(|_| ()).map_err(fail),
    }
}

/// "No such file or directory", as a read of a missing file said it.
fn not_there(path: &Path) -> String {
    format!("{}: {}", path.display(), io::Error::from_raw_os_error(cgleak_readers::errno::ENOENT))
}

/// Where `copy` is kept below the backup directory `dir`: the directory holding it (each
/// one on the way opened, and made when `create`, by [`StateDir::subdir`]: no link, root's
/// alone) and its name. None when a directory on the way is not there.
fn copy_place(mut dir: StateDir, copy: &Path, create: bool) -> Result<Option<(StateDir, String)>, String> {
    let rel = copy.strip_prefix(dir.path()).map_err(|_| format!("{}: not in the backup directory {}", copy.display(), dir.path().display()))?;
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n.to_str().ok_or_else(|| format!("{}: not a UTF-8 path", copy.display()))?),
            _ => return Err(format!("{}: not a plain path below {}", copy.display(), dir.path().display())),
        }
    }
    let Some((name, dirs)) = names.split_last() else { return Err(format!("{}: no file name", copy.display())) };
    for d in dirs {
        match dir.subdir(d, create).map_err(|e| e.to_string())? {
            Some(sub) => dir = sub,
            None => return Ok(None),
        }
    }
    Ok(Some((dir, name.to_string())))
}

/// Whether `name` is in `dir`: a regular file only (a copy, the manifest), else an error.
fn state_file_there(dir: &StateDir, name: &str) -> Result<bool, String> {
    match dir.entry(name).map_err(|e| e.to_string())? {
        None => Ok(false),
        Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(true),
        Some(st) => Err(format!("{}: is {}, not a regular file: not read", dir.join(name).display(), bounded::file_type_name(st.st_mode))),
    }
}

/// `name` in `dir` read whole, up to the cap; None when it is not there. What it is is
/// checked before it is opened: a FIFO is never opened (that would wait for a writer).
fn read_state_file(dir: &StateDir, name: &str) -> Result<Option<Vec<u8>>, String> {
    if !state_file_there(dir, name)? {
        return Ok(None);
    }
    let Some(f) = dir.open_file(name, Open::Read).map_err(|e| e.to_string())? else { return Ok(None) };
    bounded::read_fd(OwnedFd::from(f), &dir.join(name), CAP).map(Some).map_err(|e| e.to_string())
}

/// The copy `copy` in the backup directory `backup_dir`, read; None when it is not there.
fn read_copy(backup_dir: &Path, copy: &Path) -> Result<Option<Vec<u8>>, String> {
    let Some(dir) = StateDir::open(backup_dir).map_err(|e| e.to_string())? else { return Ok(None) };
    match copy_place(dir, copy, false)? {
        Some((dir, name)) => read_state_file(&dir, &name),
        None => Ok(None),
    }
}

/// Whether the copy `copy` is in the backup directory `backup_dir` (a regular file).
fn copy_there(backup_dir: &Path, copy: &Path) -> Result<bool, String> {
    let Some(dir) = StateDir::open(backup_dir).map_err(|e| e.to_string())? else { return Ok(false) };
    match copy_place(dir, copy, false)? {
        Some((dir, name)) => state_file_there(&dir, &name),
        None => Ok(false),
    }
}

/// Write `content` as `name` in `dir` whole: a new file (0600) beside it, synced, renamed over it.
fn write_state_file(dir: &StateDir, name: &str, content: &[u8]) -> Result<(), String> {
    let tmp = format!(".{name}.cgleak-{}", std::process::id());
    let r = (|| -> Result<(), String> {
        let mut f = dir.open_file(&tmp, Open::CreateNew).map_err(|e| e.to_string())?.expect("a new file is always opened");
        f.write_all(content).and_then(|_| f.sync_all()).map_err(|e| format!("write {}: {e}", dir.join(&tmp).display()))?;
        dir.rename_to(&tmp, dir, name).and_then(|_| dir.sync()).map_err(|e| e.to_string())
    })();
    if r.is_err() {
        let _ = dir.unlink(&tmp);
    }
    r
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
        // Taken by any entry, a link too (the backup would refuse to go through it).
        if std::fs::symlink_metadata(&backup_dir).is_err() {
            break;
        }
        backup_dir = o.state_dir.join(format!("{stamp}-{n}"));
    }
    let mut view = PlanView::new(ACTION, format!("add {PARAM} to the kernel command line (effective at the next boot)"));
    // Only where the running kernel, or the one the boot loader starts next, honours it
    // (upstream 4.5+, el7 3.10.0-1062+): the judge's decision table says which.
    let unsupported = match &fh.judgement {
        Some(j) => j.not_offered(ACTION).filter(|n| n.kind == NotOfferedKind::Unsupported).map(|n| n.reason.clone()),
        None if !fh.era.nokmem_supported => Some(format!("{} does not know {PARAM} (upstream 4.5+, RHEL 7 3.10.0-1062+)", fh.era.release.raw)),
        None => None,
    };
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
    if let Some(why) = unsupported {
        let remedy = fh.judgement.as_ref().and_then(|j| j.remedy("update-kernel")).map(|r| format!(": {}", r.summary)).unwrap_or_default();
        view.refused = Some(format!("{why}; the parameter would do nothing until the node boots a kernel that has it{remedy}"));
        return Ok((view, plan));
    }
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
    // Lines cgleak does not edit (no plain literal, or uncertain): the plan is refused.
    let mut refusals: Vec<String> = Vec::new();
    let mut refuse = |file: &Path, e: NotLiteral| refusals.push(format!("{}: {e}", host_name(host, file)));
    match kind {
        Bootloader::Bls => {
            if setup.bls_entries.is_empty() {
                return Err(bootloader("bls", format!("no entries in {}", host_name(host, &host.host("/boot/loader/entries")))));
            }
            for e in &setup.bls_entries {
                let text = read(host, e)?;
                match edit_bls_entry(&text) {
                    Ok(Some(new)) => add_edit(&mut plan, e, new),
                    Ok(None) if uses_kernelopts(&text) => {}
                    Ok(None) => plan.verify.push(e.clone()),
                    Err(n) => refuse(e, n),
                }
                touched.push(e.clone());
            }
            if let Some(env) = &setup.grubenv {
                let text = read(host, env)?;
                match edit_grubenv(&text) {
                    Ok(Some(new)) => add_edit(&mut plan, env, new),
                    Ok(None) => plan.verify.push(env.clone()),
                    Err(n) => refuse(env, n),
                }
                touched.push(env.clone());
            }
        }
        Bootloader::Grubby => {
            let grubby = setup.grubby.clone().ok_or_else(|| bootloader("grubby", format!("no grubby under {}", host.root().display())))?;
            let cfgs = setup.grub_cfgs.clone();
            if cfgs.is_empty() {
                return Err(bootloader("grubby", "no grub.cfg in /boot/grub2, /boot/grub or /boot/efi/EFI/*".into()));
            }
            let all_have = cfgs.iter().all(|c| host.read_local(c, CAP).is_ok_and(|t| kernel_lines_have(&t)));
            if !all_have {
                // grubby replaces an argument of the same name: an existing
                // cgroup.memory=nosocket must become nosocket,nokmem, not nokmem.
                let arg = cfgs
                    .iter()
                    .filter_map(|c| host.read_local(c, CAP).ok())
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
            let default = setup.grub_default.clone().ok_or_else(|| bootloader("grub", format!("no {}", host_name(host, &host.host("/etc/default/grub")))))?;
            let (command, cfg) = match (&setup.update_grub, &setup.grub_mkconfig) {
                (Some(u), _) => (vec![host_name(host, u)], setup.grub_cfgs.first().cloned().unwrap_or_else(|| host.host("/boot/grub/grub.cfg"))),
                (None, Some(m)) => {
                    let dflt = if m.ends_with("grub2-mkconfig") { "/boot/grub2/grub.cfg" } else { "/boot/grub/grub.cfg" };
                    let cfg = setup.grub_cfgs.first().cloned().unwrap_or_else(|| host.host(dflt));
                    (vec![host_name(host, m), "-o".into(), host_name(host, &cfg)], cfg)
                }
                (None, None) => return Err(bootloader("grub", "neither update-grub nor grub2-mkconfig/grub-mkconfig found".into())),
            };
            let cfg_ok = host.read_local(&cfg, CAP).is_ok_and(|t| kernel_lines_have(&t));
            let changed = edit_grub_default(&read(host, &default)?).unwrap_or_else(|n| {
                refuse(&default, n);
                None
            });
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
            match edit_grub_default(&read(host, d)?) {
                Ok(Some(new)) => add_edit(&mut plan, d, new),
                Ok(None) => {}
                Err(n) => refuse(d, n),
            }
            touched.push(d.clone());
        }
    }
    if !refusals.is_empty() {
        view.refused = Some(format!("{}; cgleak edits only values it reads exactly as the shell and the boot loader do: add {PARAM} there by hand", refusals.join("; ")));
        return Ok((view, plan));
    }
    touched.sort();
    touched.dedup();
    for f in &touched {
        let stat = host.stat_local(f);
        let mode = stat.as_ref().map(|st| st.st_mode & 0o7777).unwrap_or(0o644);
        // `<backup dir>/<host path>`: the host's name of the file, made relative.
        let rel: PathBuf = host.to_host_path(f).components().filter(|c| matches!(c, Component::Normal(_))).collect();
        let copy = stat.is_ok().then(|| backup_dir.join(rel));
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
            .map(|e| FileWrite { file: e.host_file.clone(), value: line_diff(&host.read_local(&e.file, CAP).unwrap_or_default(), &e.content) })
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
    let gain = fh.judgement.as_ref().and_then(|j| j.remedy(ACTION)).map(|r| r.id_gain.summary.clone()).unwrap_or_else(|| {
        "after the next reboot no memcg gets kmem accounting: nothing can switch it on again".to_string()
    });
    view.expected_gain = format!("{gain} ({} boot setup)", kind.as_str());
    view.notes.push(format!("takes effect only after a reboot; kernels that honour {PARAM}: upstream 4.5+ and RHEL 7 3.10.0-1062+"));
    if !fh.era.nokmem_supported {
        let next = fh.judgement.as_ref().and_then(|j| j.situation.nokmem.next_boot.as_ref()).map(|n| n.release.clone()).unwrap_or_default();
        view.notes.push(format!("the running kernel {} does not know {PARAM}: it takes effect when the node boots {next}, which does", fh.era.release.raw));
    }
    if read_cmdline(host).is_ok_and(|c| cmdline_has(&c, PARAM)) {
        view.notes.push(format!("the running kernel was booted with {PARAM} already: this makes it stay so"));
    }
    view.notes.push(format!("undo later with: cgleak fix nokmem --restore {bdir} --apply"));
    Ok((view, plan))
}

/// Every kernel line of a grub.cfg has the parameter, its words split as grub splits them.
fn kernel_lines_have(cfg: &str) -> bool {
    let lines = grub_cfg_kernel_lines(cfg);
    !lines.is_empty() && lines.iter().all(|l| grub_words(l).is_ok_and(|w| w.iter().any(|w| has_nokmem(&w.text))))
}

/// A BLS entry whose options come from the environment block's `kernelopts`.
fn uses_kernelopts(entry: &str) -> bool {
    bls_cmdline(entry).is_ok_and(|c| c.words.iter().any(|w| w.var.as_deref() == Some("kernelopts")))
}

fn plan_restore(fh: &FixHost, dir: &Path) -> Result<(PlanView, NokmemPlan), FixError> {
    let manifest = dir.join(MANIFEST);
    let usage = |why: String| FixError::BadArgument { flag: "--restore", value: dir.display().to_string(), why };
    // Through the fixer's StateDir: the copies are written into boot files, so they come
    // only from a directory root alone may change, reached without a link.
    let backup = StateDir::open(dir).map_err(|e| usage(e.to_string()))?;
    let bytes = match &backup {
        Some(d) => read_state_file(d, MANIFEST).map_err(usage)?,
        None => None,
    };
    let text = bytes.ok_or_else(|| not_there(&manifest)).and_then(|b| text(&manifest, b)).map_err(usage)?;
    let mut backups: Vec<Backup> = serde_json::from_str(&text).map_err(|source| FixError::NotAManifest { path: manifest.clone(), source })?;
    // The copies are taken from DIR (`DIR/<host path>`) and put back where this host root
    // has each file, not at the paths the backup was made from: DIR may have been moved,
    // or the fix applied under another --host-root. Every copy is checked first, so that
    // a restore does not stop half done.
    for b in &mut backups {
        let rel: PathBuf = Path::new(&b.host_file).components().filter(|c| matches!(c, Component::Normal(_))).collect();
        b.file = fh.host.resolve(&rel).unwrap_or_else(|| fh.host.host(&rel));
        if let Some(copy) = &mut b.copy {
            *copy = dir.join(&rel);
            if !copy_there(dir, copy).map_err(usage)? {
                return Err(usage(format!("{} (the copy of {}) is missing", copy.display(), b.host_file)));
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

fn back_up(plan: &NokmemPlan, host: &HostPaths) -> Result<String, String> {
    let backup_dir = || StateDir::create(&plan.backup_dir).map_err(|e| e.to_string());
    let dir = backup_dir()?;
    for b in &plan.backups {
        if let Some(copy) = &b.copy {
            let (cdir, name) = copy_place(backup_dir()?, copy, true)?.ok_or_else(|| not_there(copy))?;
            // Already copied by an earlier run: the copy is of the original, keep it.
            if state_file_there(&cdir, &name)? {
                continue;
            }
            let bytes = read_target(host, &b.file)?;
            write_state_file(&cdir, &name, &bytes)?;
        }
    }
    let manifest = serde_json::to_vec_pretty(&plan.backups).expect("backups serialize");
    write_state_file(&dir, MANIFEST, &manifest)?;
    Ok(format!("{} files backed up in {}", plan.backups.iter().filter(|b| b.copy.is_some()).count(), plan.backup_dir.display()))
}

fn restore(plan: &NokmemPlan, host: &HostPaths) -> Result<String, String> {
    for b in &plan.backups {
        match &b.copy {
            Some(copy) => {
                let bytes = read_copy(&plan.backup_dir, copy)?.ok_or_else(|| not_there(copy))?;
                write_whole(host, &b.file, &bytes, Some(b.mode))?;
            }
            None => remove(host, &b.file)?,
        }
    }
    Ok(format!("{} files restored", plan.backups.len()))
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

fn verify(plan: &NokmemPlan, host: &HostPaths) -> Result<String, String> {
    let mut missing = Vec::new();
    for f in &plan.verify {
        let text = host.read_local(f, CAP).map_err(|e| e.to_string())?;
        let kind = BootFile::of(f);
        match kind.read(&text) {
            Ok(_) if kind == BootFile::BlsEntry && uses_kernelopts(&text) => {}
            Ok(c) if c.words.iter().any(|w| has_nokmem(&w.text)) => {}
            Ok(_) => missing.push(f.display().to_string()),
            Err(e) => missing.push(format!("{} ({e})", f.display())),
        }
    }
    for f in &plan.verify_kernel_lines {
        let text = host.read_local(f, CAP).map_err(|e| e.to_string())?;
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

/// The edit step's check, before the edit counts as done: each edited file, read as its
/// program reads it, gives exactly the options of its backed-up original plus [`PARAM`]
/// (once), a grubenv block keeps its size, and /etc/default/grub passes `sh -n`.
fn check_edits(plan: &NokmemPlan) -> Result<String, String> {
    let host = HostPaths::new(&plan.host_root);
    let mut shells = Vec::new();
    for e in &plan.edits {
        let new = text(&e.file, read_target(&host, &e.file)?)?;
        let copy = plan.backups.iter().find(|b| b.host_file == e.host_file).and_then(|b| b.copy.as_ref());
        let copy = copy.ok_or_else(|| format!("{}: no backup copy to check the edit against", e.host_file))?;
        let old = text(copy, read_copy(&plan.backup_dir, copy)?.ok_or_else(|| not_there(copy))?)?;
        let kind = BootFile::of(Path::new(&e.host_file));
        let before = kind.read(&old).map_err(|n| format!("{} before the edit: {n}", e.host_file))?.texts();
        let after = kind.read(&new).map_err(|n| format!("{} after the edit: {n}", e.host_file))?.texts();
        let want = with_nokmem(&before).unwrap_or(before);
        if after != want {
            return Err(format!("{} reads back as {after:?}, not its old options plus {PARAM}: {want:?}", e.host_file));
        }
        if kind == BootFile::Grubenv && new.len() != old.len() {
            return Err(format!("{}: the environment block is {} bytes, not {} as before", e.host_file, new.len(), old.len()));
        }
        if kind == BootFile::GrubDefault {
            shells.push(shell_syntax_check(plan, e)?);
        }
    }
    let mut out = format!("{} files written, each reads back as before plus {PARAM}", plan.edits.len());
    for s in shells {
        out.push_str("; ");
        out.push_str(&s);
    }
    Ok(out)
}

/// `sh -n` on an edited shell file: the host root's /bin/sh (through chroot, the shell
/// grub-mkconfig runs there), this machine's when the root has none. The shell reads the
/// file as read back beneath the root, on its standard input: it opens no path itself.
fn shell_syntax_check(plan: &NokmemPlan, e: &FileEdit) -> Result<String, String> {
    let host = cgleak_readers::HostPaths::new(&plan.host_root);
    let script = read_target(&host, &e.file)?;
    let (mut cmd, which) = if host.is_host_root() {
        let mut c = Command::new("/bin/sh");
        c.arg("-n");
        (c, "/bin/sh".to_string())
    } else if host.is_file_local(&host.host("/bin/sh")) {
        let mut c = Command::new("chroot");
        c.arg(&plan.host_root).args(["/bin/sh", "-n"]);
        (c, format!("/bin/sh of {} (chroot)", plan.host_root.display()))
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg("-n");
        (c, format!("this machine's /bin/sh ({} has none)", plan.host_root.display()))
    };
    let cannot = |err: io::Error| format!("cannot run sh -n ({which}) on {}: {err}", e.host_file);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(cannot)?;
    // A shell that stops reading early (it failed to start) closes the pipe: its status says why.
    let _ = child.stdin.take().expect("stdin is piped").write_all(&script);
    let out = child.wait_with_output().map_err(cannot)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("sh -n ({which}) rejects the edited {} ({}): {}", e.host_file, out.status, err.trim()));
    }
    Ok(format!("sh -n ({which}) accepts {}", e.host_file))
}

pub fn run(journal: FixJournal, rollback: bool, cancel: &AtomicBool, progress: &mut dyn FnMut(FixProgress)) -> Result<ApplyReport, FixError> {
    let (view, plan): (PlanView, NokmemPlan) = plan_from_journal(&journal)?;
    let mut r = StepRunner::new(journal, view, cancel, progress);
    let details = json!({ "backup_dir": plan.backup_dir, "bootloader": plan.bootloader });
    let host = HostPaths::new(&plan.host_root);
    let undo = |r: &mut StepRunner, reason: &str| -> Result<String, String> {
        // Boot files change from the first step after the backup on (a restore's own step):
        // before one of those was started, nothing was changed, and nothing is put back.
        let started = |step: u32| r.journal.is_done(step) || r.journal.state.in_flight == Some(step);
        let changed = plan.steps.iter().enumerate().any(|(i, k)| *k != StepKind::Backup && started(i as u32 + 1));
        r.journal.rollback(reason).map_err(|e| e.to_string())?;
        if changed {
            restore(&plan, &host)
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
                StepKind::Backup => back_up(&plan, &host)?,
                StepKind::Edit => {
                    for e in &plan.edits {
                        write_whole(&host, &e.file, e.content.as_bytes(), None)?;
                    }
                    check_edits(&plan)?
                }
                StepKind::Command => run_command(&plan, plan.command.as_deref().unwrap_or_default())?,
                StepKind::Verify => verify(&plan, &host)?,
                StepKind::Restore => restore(&plan, &host)?,
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

// ---------------------------------------------------------------------------------
// `--resume`: the journal's plan checked against what nokmem's planner does on this host.

/// The boot file nokmem's editor writes at `host_file`, if it writes that file at all.
fn resume_edit_kind(host_file: &str) -> Option<BootFile> {
    let p = Path::new(host_file);
    if host_file == "/etc/default/grub" {
        Some(BootFile::GrubDefault)
    } else if p.file_name().is_some_and(|n| n == "grubenv") && p.starts_with("/boot") {
        Some(BootFile::Grubenv)
    } else if p.parent() == Some(Path::new("/boot/loader/entries")) && p.extension().is_some_and(|x| x == "conf") {
        Some(BootFile::BlsEntry)
    } else {
        None
    }
}

/// `cgroup.memory=<words>,nokmem`: the only argument nokmem hands grubby.
fn is_grubby_memory_arg(arg: &str) -> bool {
    arg.strip_prefix("cgroup.memory=").is_some_and(|v| v.split(',').all(|w| w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')) && v.split(',').next_back() == Some("nokmem"))
}

/// The command, if it is one nokmem plans on this host: a generator its discovery finds (at
/// its standard location under the host root) with the arguments nokmem gives it.
fn resume_command(argv: &[String], setup: &BootSetup, host: &HostPaths, files: &std::collections::BTreeSet<String>) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else { return Err("an empty command".into()) };
    let found = |p: &Option<PathBuf>| p.as_ref().map(|p| host_name(host, p));
    let name = Path::new(prog).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (discovered, args_ok) = match name {
        "grubby" => (found(&setup.grubby), args.len() == 2 && args[0] == "--update-kernel=ALL" && args[1].strip_prefix("--args=").is_some_and(is_grubby_memory_arg)),
        "update-grub" => (found(&setup.update_grub), args.is_empty()),
        "grub2-mkconfig" | "grub-mkconfig" => {
            (found(&setup.grub_mkconfig), args.len() == 2 && args[0] == "-o" && args[1].ends_with("/grub.cfg") && files.contains(&args[1]))
        }
        _ => return Err(format!("{prog:?} is not a boot loader generator nokmem runs (grubby, update-grub, grub2-mkconfig, grub-mkconfig)")),
    };
    if discovered.as_deref() != Some(prog.as_str()) {
        return Err(format!(
            "{prog} is not the {name} found at its standard place under {} ({})",
            host.root().display(),
            discovered.unwrap_or_else(|| "none there".into())
        ));
    }
    if !args_ok {
        return Err(format!("{argv:?}: not the arguments nokmem gives {name}"));
    }
    Ok(())
}

/// `--resume`: the plan may touch only the boot files nokmem's discovery finds on this host
/// (by their host names, written where this host root has them), write into them only what
/// its editor makes of the originals, back up only into `<state dir>/nokmem-backup-<time>`,
/// and run only a generator it finds. The view is made again from it.
pub fn check_resume(plan: &NokmemPlan, h: &super::resume::ResumeHost) -> Result<PlanView, super::resume::Bad> {
    use super::resume::bad;
    let host = h.host;
    if plan.host_root != host.root() {
        return Err(bad("host_root", format!("{} is not this run's --host-root {}: resume with the fix's --host-root", plan.host_root.display(), host.root().display())));
    }
    let setup = BootSetup::discover(host);
    let mut files: std::collections::BTreeSet<String> =
        setup.bls_entries.iter().chain(&setup.grubenv).chain(&setup.grub_default).chain(&setup.grub_cfgs).map(|p| host_name(host, p)).collect();
    // Where grub(2)-mkconfig writes a grub.cfg that is not there yet.
    files.extend(["/boot/grub2/grub.cfg".to_string(), "/boot/grub/grub.cfg".to_string()]);
    let boot_file = |field: String, host_file: &str| -> Result<(), super::resume::Bad> {
        if files.contains(host_file) {
            Ok(())
        } else {
            Err(bad(field, format!("{host_file} is not a boot loader file nokmem finds on this host ({})", files.iter().cloned().collect::<Vec<_>>().join(", "))))
        }
    };
    let local_of = |host_file: &str| host.resolve(host_file).unwrap_or_else(|| host.host(host_file));
    let restoring = plan.steps == [StepKind::Restore];
    if restoring {
        if !plan.edits.is_empty() || plan.command.is_some() {
            return Err(bad("steps", "a restore edits no file and runs no command"));
        }
        // The copies are read from it: a directory only root may change, reached without links.
        match super::state::StateDir::open(&plan.backup_dir) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(bad("backup_dir", format!("{} is not there", plan.backup_dir.display()))),
            Err(e) => return Err(bad("backup_dir", e.to_string())),
        }
    } else {
        let mut want = vec![StepKind::Backup];
        if !plan.edits.is_empty() {
            want.push(StepKind::Edit);
        }
        if plan.command.is_some() {
            want.push(StepKind::Command);
        }
        want.push(StepKind::Verify);
        if plan.steps != want {
            return Err(bad("steps", format!("{:?} are not the steps nokmem plans for these edits and command ({want:?})", plan.steps)));
        }
        let name = plan.backup_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stamp = name.strip_prefix("nokmem-backup-").unwrap_or_default();
        let stamp_ok = !stamp.is_empty() && stamp.split('-').count() <= 2 && stamp.split('-').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if plan.backup_dir.parent() != Some(h.state_dir) || !stamp_ok {
            return Err(bad("backup_dir", format!("{} is not <state dir>/nokmem-backup-<time> in {}, where nokmem backs up", plan.backup_dir.display(), h.state_dir.display())));
        }
    }
    for (i, b) in plan.backups.iter().enumerate() {
        boot_file(format!("backups[{i}].host_file"), &b.host_file)?;
        if b.file != local_of(&b.host_file) {
            return Err(bad(format!("backups[{i}].file"), format!("{} is not where this host root has {} ({})", b.file.display(), b.host_file, local_of(&b.host_file).display())));
        }
        let rel: PathBuf = Path::new(&b.host_file).components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if b.copy.as_ref().is_some_and(|c| *c != plan.backup_dir.join(&rel)) {
            return Err(bad(format!("backups[{i}].copy"), format!("not {}, where the copy of {} is kept", plan.backup_dir.join(&rel).display(), b.host_file)));
        }
        if b.mode & !0o777 != 0 {
            return Err(bad(format!("backups[{i}].mode"), format!("{:o} has setuid, setgid or sticky bits, which no boot file has", b.mode)));
        }
    }
    for (i, e) in plan.edits.iter().enumerate() {
        boot_file(format!("edits[{i}].host_file"), &e.host_file)?;
        if e.file != local_of(&e.host_file) {
            return Err(bad(format!("edits[{i}].file"), format!("{} is not where this host root has {}", e.file.display(), e.host_file)));
        }
        let Some(kind) = resume_edit_kind(&e.host_file) else {
            return Err(bad(format!("edits[{i}].host_file"), format!("nokmem never writes {} itself (its generator does)", e.host_file)));
        };
        let Some(b) = plan.backups.iter().find(|b| b.host_file == e.host_file) else {
            return Err(bad(format!("edits[{i}].host_file"), format!("{} would be written without a backup", e.host_file)));
        };
        // What it held before the fix: the backup copy once made, else the file as it is.
        let copied = match &b.copy {
            Some(c) => read_copy(&plan.backup_dir, c).map(|bytes| bytes.map(|b| (c.as_path(), b))),
            None => Ok(None),
        };
        let original = copied
            .and_then(|copied| match copied {
                Some((c, bytes)) => text(c, bytes),
                None => read_target(host, &e.file).and_then(|bytes| text(&e.file, bytes)),
            })
            .map_err(|err| bad(format!("edits[{i}].content"), format!("the original of {} cannot be read to check it: {err}", e.host_file)))?;
        if kind.edit(&original).ok().flatten().as_deref() != Some(e.content.as_str()) {
            return Err(bad(format!("edits[{i}].content"), format!("not what nokmem writes into {}: the file as it was, with {PARAM} added", e.host_file)));
        }
    }
    for (what, list) in [("verify", &plan.verify), ("verify_kernel_lines", &plan.verify_kernel_lines)] {
        for (i, f) in list.iter().enumerate() {
            let name = host_name(host, f);
            if !f.starts_with(host.root()) || !files.contains(&name) {
                return Err(bad(format!("{what}[{i}]"), format!("{} is not a boot loader file nokmem finds on this host", f.display())));
            }
        }
    }
    if let Some(argv) = &plan.command {
        resume_command(argv, &setup, host, &files).map_err(|why| bad("command", why))?;
    }
    // The view, made again from the checked plan.
    let mut view = PlanView::new(ACTION, format!("add {PARAM} to the kernel command line (effective at the next boot)"));
    let bdir = plan.backup_dir.display().to_string();
    for kind in &plan.steps {
        match kind {
            StepKind::Restore => view.step(
                format!("restore {} files byte for byte", plan.backups.len()),
                Vec::new(),
                plan.backups.iter().map(|b| FileWrite { file: b.host_file.clone(), value: b.copy.as_ref().map_or("removed (it did not exist)".into(), |c| format!("copy of {}", c.display())) }).collect(),
            ),
            StepKind::Backup => view.step(
                format!("back up {} files to {bdir}", plan.backups.len()),
                Vec::new(),
                plan.backups.iter().map(|b| FileWrite { file: format!("{bdir}/{}", b.host_file.trim_start_matches('/')), value: format!("copy of {}", b.host_file) }).collect(),
            ),
            StepKind::Edit => view.step(
                format!("write {PARAM} into {} files", plan.edits.len()),
                Vec::new(),
                plan.edits.iter().map(|e| FileWrite { file: e.host_file.clone(), value: line_diff(&host.read_local(&e.file, CAP).unwrap_or_default(), &e.content) }).collect(),
            ),
            StepKind::Command => {
                let how = if host.is_host_root() { String::new() } else { format!(" (chroot {})", host.root().display()) };
                let argv = plan.command.as_deref().unwrap_or_default();
                view.step(format!("run {}{how}", argv.join(" ")), Vec::new(), plan.verify_kernel_lines.iter().map(|f| FileWrite { file: host_name(host, f), value: "regenerated".into() }).collect())
            }
            StepKind::Verify => view.step(format!("verify: read the files again; each must hold {PARAM}"), Vec::new(), Vec::new()),
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        let ok = |t: &str| edit_grub_default(t).unwrap_or_else(|e| panic!("{t:?}: {e}")).unwrap_or_else(|| panic!("{t:?}: no edit"));
        let t = "# comment\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet\" # keep\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\n";
        let e = ok(t);
        assert_eq!(e, "# comment\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet cgroup.memory=nokmem\" # keep\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\n");
        assert_eq!(edit_grub_default(&e), Ok(None));
        assert_eq!(ok("GRUB_CMDLINE_LINUX=''\n"), "GRUB_CMDLINE_LINUX='cgroup.memory=nokmem'\n");
        assert_eq!(ok("GRUB_CMDLINE_LINUX=ro\n"), "GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nokmem\"\n");
        assert_eq!(ok("GRUB_CMDLINE_LINUX=\n"), "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n");
        assert_eq!(ok("GRUB_TIMEOUT=5"), "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n");
        // The finding: escaped quotes inside the value stay where they were.
        let f = "GRUB_CMDLINE_LINUX=\"crashkernel=auto rd.lvm.lv=\\\"cl/root\\\" rhgb\"\n";
        assert_eq!(ok(f), "GRUB_CMDLINE_LINUX=\"crashkernel=auto rd.lvm.lv=\\\"cl/root\\\" rhgb cgroup.memory=nokmem\"\n");
        assert_eq!(ok("export GRUB_CMDLINE_LINUX='a \"b c\"'\n"), "export GRUB_CMDLINE_LINUX='a \"b c\" cgroup.memory=nokmem'\n");
        assert_eq!(ok("GRUB_CMDLINE_LINUX=a\\ b\n"), "GRUB_CMDLINE_LINUX=a\\ b\" cgroup.memory=nokmem\"\n");
        assert_eq!(ok("GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nosocket\"\n"), "GRUB_CMDLINE_LINUX=\"ro cgroup.memory=nosocket,nokmem\"\n");
        assert_eq!(ok("GRUB_CMDLINE_LINUX='cgroup.memory=\"nosocket\" ro'\n"), "GRUB_CMDLINE_LINUX='cgroup.memory=\"nosocket,nokmem\" ro'\n");
        // Non-literal values are refused, naming the line.
        for (t, line) in [("A=1\nGRUB_CMDLINE_LINUX=\"$(cat /x) ro\"\n", 2), ("GRUB_CMDLINE_LINUX=\"a \\\n b\"\n", 1), ("GRUB_CMDLINE_LINUX=\"$X\"\n", 1)] {
            let e = edit_grub_default(t).unwrap_err();
            assert_eq!(e.line, line, "{t:?}: {e}");
        }
    }

    #[test]
    fn bls_entries_get_the_parameter_on_their_options_line() {
        let e = "title CentOS Linux\nversion 4.18.0-305.el8.x86_64\nlinux /vmlinuz-4.18.0-305.el8.x86_64\noptions root=/dev/mapper/cl-root ro crashkernel=auto\nid centos\n";
        let n = edit_bls_entry(e).unwrap().unwrap();
        assert!(n.contains("\noptions root=/dev/mapper/cl-root ro crashkernel=auto cgroup.memory=nokmem\nid centos\n"), "{n}");
        assert_eq!(edit_bls_entry(&n), Ok(None));
        assert_eq!(edit_bls_entry("options $kernelopts $tuned_params\n"), Ok(None));
        assert_eq!(edit_bls_entry("options root=/dev/sda ro $tuned_params\n").unwrap().unwrap(), "options root=/dev/sda ro $tuned_params cgroup.memory=nokmem\n");
        assert_eq!(edit_bls_entry("title x\n").unwrap().unwrap(), "title x\noptions cgroup.memory=nokmem\n");
        assert!(edit_bls_entry("options ro $unknown\n").unwrap_err().why.contains("does not know"));
    }

    #[test]
    fn the_grub_environment_block_keeps_its_size() {
        let head = "# GRUB Environment Block\nkernelopts=root=/dev/sda1 ro \nsaved_entry=abc\n";
        let block = format!("{head}{}", "#".repeat(1024 - head.len()));
        let e = edit_grubenv(&block).unwrap().unwrap();
        assert_eq!(e.len(), 1024);
        assert!(e.contains("\nkernelopts=root=/dev/sda1 ro cgroup.memory=nokmem \nsaved_entry=abc\n"), "{e}");
        assert_eq!(edit_grubenv(&e), Ok(None));
        let full = format!("{head}{}", "#".repeat(3));
        assert!(edit_grubenv(&full).unwrap_err().why.contains("no room"));
        assert!(edit_grubenv("# GRUB Environment Block\nsaved_entry=x\n####").unwrap_err().why.contains("no kernelopts"));
    }

    /// A plan that edited /etc/default/grub under `root`, its original backed up.
    fn edited_grub_default(root: &Path, original: &str, edited: &str) -> NokmemPlan {
        let file = root.join("etc/default/grub");
        let copy = root.join("state/nokmem-backup-1/etc/default/grub");
        for (p, t) in [(&file, edited), (&copy, original)] {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, t).unwrap();
        }
        NokmemPlan {
            bootloader: Some(Bootloader::Grub),
            host_root: root.to_path_buf(),
            backup_dir: root.join("state/nokmem-backup-1"),
            backups: vec![Backup { file: file.clone(), host_file: "/etc/default/grub".into(), copy: Some(copy), mode: 0o644 }],
            edits: vec![FileEdit { file, host_file: "/etc/default/grub".into(), content: edited.into() }],
            command: None,
            verify: Vec::new(),
            verify_kernel_lines: Vec::new(),
            steps: vec![StepKind::Backup, StepKind::Edit, StepKind::Verify],
        }
    }

    #[test]
    fn the_edit_check_reads_the_file_back_and_runs_sh_n() {
        let t = tempfile::tempdir().unwrap();
        let old = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"ro quiet\"\n";
        let new = edit_grub_default(old).unwrap().unwrap();
        // A host root without /bin/sh: this machine's checks the file.
        let plan = edited_grub_default(t.path(), old, &new);
        let d = check_edits(&plan).unwrap();
        assert!(d.contains("reads back as before plus cgroup.memory=nokmem") && d.contains("sh -n (this machine's /bin/sh"), "{d}");
        // An option lost on the way: the step fails.
        let plan = edited_grub_default(t.path(), old, "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"ro cgroup.memory=nokmem\"\n");
        let e = check_edits(&plan).unwrap_err();
        assert!(e.contains("/etc/default/grub reads back as [\"ro\", \"cgroup.memory=nokmem\"]") && e.contains("\"quiet\""), "{e}");
        // nokmem twice is not "once".
        let plan = edited_grub_default(t.path(), old, "GRUB_CMDLINE_LINUX=\"ro quiet cgroup.memory=nokmem cgroup.memory=nokmem\"\n");
        assert!(check_edits(&plan).is_err());
        // A file the shell cannot parse.
        let plan = edited_grub_default(t.path(), old, "GRUB_CMDLINE_LINUX=\"ro quiet cgroup.memory=nokmem\"\nif true; then\n");
        let e = shell_syntax_check(&plan, &plan.edits[0]).unwrap_err();
        assert!(e.contains("sh -n (this machine's /bin/sh") && e.contains("rejects the edited /etc/default/grub"), "{e}");
    }

    #[test]
    fn diffs_show_the_changed_lines() {
        assert_eq!(line_diff("a\nb\n", "a\nb2\n"), "-b\n+b2");
        assert_eq!(line_diff("a\n", "a\nc\n"), "+c");
    }
}

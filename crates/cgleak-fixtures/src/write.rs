//! The smallest helpers: write a file, make a directory, link, count.
//!
//! Fixtures are test scaffolding: a failure to write one is a broken test
//! environment, so these panic with the path instead of returning errors.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// Write `content` to `path`, creating its parent directories.
pub fn create_file_with_content(path: &Path, content: impl AsRef<[u8]>) {
    let content = content.as_ref();
    // Try first, make the parents only when missing: fixtures write many files per directory.
    match fs::write(path, content) {
        Ok(()) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("write {}: {e}", path.display()),
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Make the directory `parent/name` (the parent must exist) and return its path.
pub fn create_child(parent: &Path, name: &str) -> PathBuf {
    let p = parent.join(name);
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    p
}

/// `mkdir -p`.
pub fn create_dir_all(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", path.display()));
    path.to_path_buf()
}

/// `ln -s target link`.
pub fn create_symlink(target: impl AsRef<Path>, link: &Path) {
    symlink(target.as_ref(), link).unwrap_or_else(|e| {
        panic!(
            "ln -s {} {}: {e}",
            target.as_ref().display(),
            link.display()
        )
    });
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Directories in the tree at `root`, the root included; symlinks are not followed.
/// Computed independently of cgleak's walker, so a fixture's `/proc/cgroups` does
/// not depend on the code under test.
pub fn count_dirs(root: &Path) -> u64 {
    let mut n = 1;
    for ent in fs::read_dir(root).unwrap_or_else(|e| panic!("readdir {}: {e}", root.display())) {
        let ent = ent.unwrap_or_else(|e| panic!("readdir {}: {e}", root.display()));
        if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            n += count_dirs(&ent.path());
        }
    }
    n
}

/// Subdirectory names of `dir`, sorted.
pub fn subdirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

//! The memory settings of a v1 cgroup that `migrate` carries over: read from the old
//! cgroup, written to its mirror and to its recreation in the order the kernel accepts.
//!
//! Never a kmem file: on 3.10 and 4.0 .. 4.5 the first limited write to
//! `memory.kmem.limit_in_bytes` switches kmem accounting on for good (docs/kernel-facts.md
//! section 3), which is what a migration exists to undo.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cgleak_model::era::MoveCharge;
use cgleak_readers::cgroupfs;

/// One cgroup's settings; None where the file is missing (no swap accounting: no memsw).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySettings {
    pub limit_in_bytes: Option<u64>,
    pub memsw_limit_in_bytes: Option<u64>,
    pub soft_limit_in_bytes: Option<u64>,
    pub swappiness: Option<u64>,
    /// `oom_kill_disable` of memory.oom_control.
    pub oom_kill_disable: Option<u64>,
    pub use_hierarchy: Option<u64>,
    pub move_charge_at_immigrate: Option<u64>,
}

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW: &str = "memory.memsw.limit_in_bytes";
const SOFT: &str = "memory.soft_limit_in_bytes";
const SWAPPINESS: &str = "memory.swappiness";
const OOM_CONTROL: &str = "memory.oom_control";
const USE_HIERARCHY: &str = "memory.use_hierarchy";
const MOVE_CHARGE: &str = "memory.move_charge_at_immigrate";

/// A write that failed, naming the file and the value.
#[derive(Debug, thiserror::Error)]
#[error("write {value} to {}: {source}{context}", .file.display())]
pub struct WriteError {
    pub file: PathBuf,
    pub value: String,
    /// For a limit refused with EBUSY: the cgroup's usage and peak (youki's practice).
    pub context: String,
    #[source]
    pub source: io::Error,
}

/// What a read found wrong.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Read(#[from] cgleak_readers::ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl SettingsError {
    pub fn is_gone(&self) -> bool {
        match self {
            SettingsError::Read(e) => e.is_gone(),
            SettingsError::Write(e) => cgleak_readers::error::is_gone_io(&e.source),
        }
    }
}

fn optional(dir: &Path, file: &str) -> Result<Option<u64>, cgleak_readers::ReadError> {
    let path = dir.join(file);
    match cgroupfs::read_u64(&path) {
        Ok(v) => Ok(Some(v)),
        // A missing file (no swap accounting, a kernel without it) is "not set"; a gone
        // cgroup is told apart by the caller checking the directory.
        Err(e) if e.is_gone() && dir.is_dir() => Ok(None),
        Err(e) => Err(e),
    }
}

impl MemorySettings {
    /// Read the settings of the cgroup at `dir`.
    pub fn read(dir: &Path) -> Result<MemorySettings, SettingsError> {
        let oom = match cgroupfs::read_flat_keyed(&dir.join(OOM_CONTROL)) {
            Ok(m) => m.get("oom_kill_disable").copied(),
            Err(e) if e.is_gone() && dir.is_dir() => None,
            Err(e) => return Err(e.into()),
        };
        Ok(MemorySettings {
            limit_in_bytes: optional(dir, LIMIT)?,
            memsw_limit_in_bytes: optional(dir, MEMSW)?,
            soft_limit_in_bytes: optional(dir, SOFT)?,
            swappiness: optional(dir, SWAPPINESS)?,
            oom_kill_disable: oom,
            use_hierarchy: optional(dir, USE_HIERARCHY)?,
            move_charge_at_immigrate: optional(dir, MOVE_CHARGE)?,
        })
    }

    /// The writes that make the cgroup at `dir`, whose settings are now `current`, have
    /// these: in the order the kernel accepts, and only those that change something.
    /// `move_charge_at_immigrate` only where the kernel takes a non-zero value (6.13+:
    /// EINVAL, docs/kernel-facts.md section 5).
    pub fn writes_from(&self, current: &MemorySettings, move_charge: MoveCharge) -> Vec<(&'static str, String)> {
        let mut w: Vec<(&'static str, String)> = Vec::new();
        let mut set = |file: &'static str, want: Option<u64>, now: Option<u64>| {
            if let (Some(v), false) = (want, want == now) {
                w.push((file, v.to_string()));
            }
        };
        // use_hierarchy can change only while the cgroup has no children: first.
        set(USE_HIERARCHY, self.use_hierarchy, current.use_hierarchy);
        // The kernel keeps memsw.limit >= limit at every step (mem_cgroup_resize_max):
        // raise memsw first when the new limit is above the current memsw limit.
        let limit_first = match (self.limit_in_bytes, current.memsw_limit_in_bytes) {
            (Some(l), Some(m)) => l <= m,
            _ => true,
        };
        if limit_first {
            set(LIMIT, self.limit_in_bytes, current.limit_in_bytes);
            set(MEMSW, self.memsw_limit_in_bytes, current.memsw_limit_in_bytes);
        } else {
            set(MEMSW, self.memsw_limit_in_bytes, current.memsw_limit_in_bytes);
            set(LIMIT, self.limit_in_bytes, current.limit_in_bytes);
        }
        set(SOFT, self.soft_limit_in_bytes, current.soft_limit_in_bytes);
        set(SWAPPINESS, self.swappiness, current.swappiness);
        set(OOM_CONTROL, self.oom_kill_disable, current.oom_kill_disable);
        let move_charge_takes_it = move_charge != MoveCharge::Einval || self.move_charge_at_immigrate == Some(0);
        if move_charge_takes_it {
            set(MOVE_CHARGE, self.move_charge_at_immigrate, current.move_charge_at_immigrate);
        }
        w
    }

    /// Give the cgroup at `dir` these settings; returns the files written.
    pub fn apply(&self, dir: &Path, move_charge: MoveCharge) -> Result<Vec<(&'static str, String)>, SettingsError> {
        let current = MemorySettings::read(dir)?;
        let writes = self.writes_from(&current, move_charge);
        for (file, value) in &writes {
            write_setting(dir, file, value)?;
        }
        Ok(writes)
    }

    /// The non-default settings, for a plan: `memory.limit_in_bytes=536870912`, ...
    pub fn describe(&self, defaults: &MemorySettings) -> Vec<(&'static str, String)> {
        self.writes_from(defaults, MoveCharge::Works)
    }
}

/// Write one setting; an EBUSY on a limit says what the cgroup uses.
pub fn write_setting(dir: &Path, file: &str, value: &str) -> Result<(), WriteError> {
    let path = dir.join(file);
    cgroupfs::write_file(&path, value.as_bytes()).map_err(|source| {
        let context = if source.raw_os_error() == Some(libc_ebusy()) && file.contains("limit_in_bytes") {
            let read = |f: &str| cgroupfs::read_u64(&dir.join(f)).map(|v| v.to_string()).unwrap_or_else(|_| "?".into());
            let prefix = if file.contains("memsw") { "memory.memsw." } else { "memory." };
            format!(
                " (usage {} bytes, peak {} bytes: the kernel could not reclaim below the new limit)",
                read(&format!("{prefix}usage_in_bytes")),
                read(&format!("{prefix}max_usage_in_bytes"))
            )
        } else {
            String::new()
        };
        WriteError { file: path.clone(), value: value.to_string(), context, source }
    })
}

fn libc_ebusy() -> i32 {
    cgleak_readers::errno::EBUSY
}

#[cfg(test)]
mod tests {
    use std::fs;
    use super::*;

    fn unlimited() -> MemorySettings {
        MemorySettings {
            limit_in_bytes: Some(9_223_372_036_854_771_712),
            memsw_limit_in_bytes: Some(9_223_372_036_854_771_712),
            soft_limit_in_bytes: Some(9_223_372_036_854_771_712),
            swappiness: Some(60),
            oom_kill_disable: Some(0),
            use_hierarchy: Some(1),
            move_charge_at_immigrate: Some(0),
        }
    }

    #[test]
    fn a_fresh_cgroup_gets_its_limit_before_memsw_and_only_what_differs() {
        let mut want = unlimited();
        want.limit_in_bytes = Some(512 << 20);
        want.memsw_limit_in_bytes = Some(1 << 30);
        want.oom_kill_disable = Some(1);
        let w = want.writes_from(&unlimited(), MoveCharge::Works);
        assert_eq!(
            w,
            vec![
                (LIMIT, (512u64 << 20).to_string()),
                (MEMSW, (1u64 << 30).to_string()),
                (OOM_CONTROL, "1".to_string()),
            ]
        );
        assert!(unlimited().writes_from(&unlimited(), MoveCharge::Works).is_empty());
    }

    #[test]
    fn raising_a_limit_above_memsw_writes_memsw_first() {
        let mut now = unlimited();
        now.limit_in_bytes = Some(100 << 20);
        now.memsw_limit_in_bytes = Some(200 << 20);
        let mut want = now.clone();
        want.limit_in_bytes = Some(300 << 20);
        want.memsw_limit_in_bytes = Some(400 << 20);
        let files: Vec<&str> = want.writes_from(&now, MoveCharge::Works).into_iter().map(|(f, _)| f).collect();
        assert_eq!(files, vec![MEMSW, LIMIT]);
    }

    #[test]
    fn use_hierarchy_goes_first_and_move_charge_only_where_the_kernel_takes_it() {
        let mut want = unlimited();
        want.use_hierarchy = Some(0);
        want.move_charge_at_immigrate = Some(3);
        want.limit_in_bytes = Some(1 << 30);
        let w = want.writes_from(&unlimited(), MoveCharge::Deprecated);
        assert_eq!(w.first().map(|(f, _)| *f), Some(USE_HIERARCHY));
        assert!(w.iter().any(|(f, v)| *f == MOVE_CHARGE && v == "3"));
        let w = want.writes_from(&unlimited(), MoveCharge::Einval);
        assert!(!w.iter().any(|(f, _)| *f == MOVE_CHARGE), "6.13+ refuses non-zero move_charge_at_immigrate: {w:?}");
    }

    #[test]
    fn settings_are_read_from_files_and_missing_ones_are_none() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::write(d.join(LIMIT), "536870912\n").unwrap();
        fs::write(d.join(SOFT), "9223372036854771712\n").unwrap();
        fs::write(d.join(SWAPPINESS), "60\n").unwrap();
        fs::write(d.join(OOM_CONTROL), "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n").unwrap();
        fs::write(d.join(USE_HIERARCHY), "1\n").unwrap();
        let s = MemorySettings::read(d).unwrap();
        assert_eq!(s.limit_in_bytes, Some(536_870_912));
        assert_eq!(s.memsw_limit_in_bytes, None);
        assert_eq!(s.oom_kill_disable, Some(1));
        assert_eq!(s.move_charge_at_immigrate, None);
        fs::write(d.join(SWAPPINESS), "sixty\n").unwrap();
        let e = MemorySettings::read(d).unwrap_err().to_string();
        assert!(e.contains("memory.swappiness"), "{e}");
        let gone = MemorySettings::read(&d.join("gone")).unwrap_err();
        assert!(gone.is_gone());
    }

    #[test]
    fn a_failed_write_names_file_and_value() {
        let t = tempfile::tempdir().unwrap();
        let e = write_setting(&t.path().join("missing"), LIMIT, "42").unwrap_err().to_string();
        assert!(e.contains("write 42 to") && e.contains("missing/memory.limit_in_bytes"), "{e}");
    }
}

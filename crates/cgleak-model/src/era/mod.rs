//! Kernel eras: what a kernel release (`uname -r`) means for memcg IDs, for counting
//! dying memcgs and for kmem accounting.
//!
//! Every answer comes from the kernel facts cgleak relies on (docs/kernel-facts.md, cited as
//! "facts §N") or from the kernel commit named next to it. A release that cannot be placed in one era with
//! confidence still gets an answer, the nearest *safe* one, with `exact == false` and a
//! note saying why: this module never fails and never panics.
//!
//! Boundaries (facts §1):
//! - 3.10: css_id, dying memcgs keep their IDs, ENOSPC.
//! - RHEL/CentOS 7 (3.10.0-*.el7): dying memcgs keep their IDs in every build; css_id and
//!   ENOSPC up to 693, a private mem_cgroup_idr and ENOMEM from 862; nokmem from 1062.
//! - 4.0 .. 4.6: css->id, dying memcgs keep their IDs, ENOSPC; 4.4.18+ (the stable
//!   backport of 73f576c04b94; Ubuntu xenial 4.4.0-37+) behaves like 4.7.
//! - 4.7 .. 5.4.40: memcg->id with a refcount (73f576c04b94), released at offline, ENOMEM.
//! - 5.4.41 .. 6.11: same IDs, ENOSPC (11d6761218d1).
//! - 6.12+: xarray IDs, EBUSY.
//!
//! Release strings are parsed in `era/release.rs`; the rules that place a release in an era,
//! and every answer of the era, are here.

mod release;

use cgleak_readers::errno;
use serde::Serialize;

pub use release::{upstream_version_from_hint, Distro, KernelRelease, ReleaseError};

/// The newest kernel the facts were checked on (6.18 host, facts §1 "measured").
const NEWEST_KNOWN: (u32, u32) = (6, 18);

/// 4.4.y: Michal Hocko's stable-4.4 backport of 73f576c04b94 (posted 2016-08-12/15) was
/// in linux-4.4.y stable-rc on 2016-08-15, so 4.4.17 (2016-08-10) and older lack it ...
const BACKPORT_44_ABSENT_MAX: u32 = 17;
/// ... and 4.4.18 (2016-08-20), the next stable release, carries it (facts §1a).
const BACKPORT_44_PRESENT_MIN: u32 = 18;

/// 5.4.y: 11d6761218d1 ("mm, memcg: fix error return value of mem_cgroup_css_alloc()")
/// was in the 5.4.41 stable release (2020-05-14): ENOSPC from 5.4.41, ENOMEM before.
const ERRNO_FIX_54_MIN: u32 = 41;
/// 5.6.y: the same commit went into 5.6.13 (review 2020-05-13, "[PATCH 5.6 113/118]").
const ERRNO_FIX_56_MIN: u32 = 13;

/// Ubuntu xenial "4.4.0-N": N <= 31 was built before 4.4.y got the 73f576c04b94 backport
/// (4.4.0-21 is the 16.04 GA kernel, upstream 4.4.6; -31 shipped in July 2016) ...
const UBUNTU_44_ABSENT_MAX_ABI: u32 = 31;
/// ... and N >= 37 (xenial 4.4.0-37, Sept 2016) carries the backport (facts §1a). Between
/// the two: not pinned down.
const UBUNTU_44_PRESENT_MIN_ABI: u32 = 37;
/// Ubuntu focal "5.4.0-N": N <= 31 shipped in May 2020, before Ubuntu could pick up 5.4.41 ...
const UBUNTU_54_ABSENT_MAX_ABI: u32 = 31;
/// ... and N >= 60 (2021) carries 5.4.7x or later. Between the two: not pinned down.
const UBUNTU_54_PRESENT_MIN_ABI: u32 = 60;


/// The memcg-ID era of a kernel (facts §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EraId {
    /// 3.x vanilla: css_id (kernel/cgroup.c get_new_cssid); dying memcgs keep IDs; ENOSPC.
    #[serde(rename = "3.10")]
    Linux310,
    /// RHEL/CentOS 7: private mem_cgroup_idr, freed only in __mem_cgroup_free; ENOMEM.
    #[serde(rename = "3.10-el7")]
    El7,
    /// 4.0 .. 4.6 (4.4.y without the backport): css->id; dying memcgs keep IDs; ENOSPC.
    #[serde(rename = "4.0-4.6")]
    Linux40To46,
    /// 4.7 .. 5.4.40 (and 4.4.y with the backport): memcg->id refcount (73f576c04b94); ENOMEM.
    #[serde(rename = "4.7-5.4.40")]
    Linux47To5440,
    /// 5.4.41 .. 6.11: same IDs, ENOSPC (11d6761218d1).
    #[serde(rename = "5.4.41-6.11")]
    Linux5441To611,
    /// 6.12+: xarray IDs; EBUSY (measured on 6.12 and 6.18).
    #[serde(rename = "6.12+")]
    Linux612Plus,
}

impl EraId {
    pub const ALL: [EraId; 6] =
        [EraId::Linux310, EraId::El7, EraId::Linux40To46, EraId::Linux47To5440, EraId::Linux5441To611, EraId::Linux612Plus];

    pub fn as_str(self) -> &'static str {
        match self {
            EraId::Linux310 => "3.10",
            EraId::El7 => "3.10-el7",
            EraId::Linux40To46 => "4.0-4.6",
            EraId::Linux47To5440 => "4.7-5.4.40",
            EraId::Linux5441To611 => "5.4.41-6.11",
            EraId::Linux612Plus => "6.12+",
        }
    }
}

/// What `mkdir` of a memory cgroup returns when the memcg ID space is full. Names, numbers
/// and words come from the one errno table ([`cgleak_readers::errno`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum Errno {
    ENOSPC,
    ENOMEM,
    EBUSY,
}

impl Errno {
    pub const ALL: [Errno; 3] = [Errno::ENOSPC, Errno::ENOMEM, Errno::EBUSY];

    pub fn as_str(self) -> &'static str {
        errno::static_name(self.raw()).expect("the errno table names the exhaustion errnos")
    }

    /// strerror(3) text, as `mkdir` prints it (lower case).
    pub fn message(self) -> &'static str {
        errno::static_message(self.raw()).expect("the errno table has words for the exhaustion errnos")
    }

    /// Linux errno number.
    pub fn raw(self) -> i32 {
        match self {
            Errno::ENOSPC => errno::ENOSPC,
            Errno::ENOMEM => errno::ENOMEM,
            Errno::EBUSY => errno::EBUSY,
        }
    }

    pub fn from_raw(code: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.raw() == code)
    }

    /// By name ("ENOSPC", as [`Errno::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Errno> {
        errno::code(name).and_then(Errno::from_raw)
    }
}

/// How the number of dying memcgs can be read on this kernel and hierarchy (facts §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DyingCountMethod {
    /// No file counts them (v1 on 3.10; v2 before 4.14).
    NotCountable,
    /// v1: /proc/cgroups num_cgroups(memory) minus the directories of the hierarchy.
    ProcCgroupsMinusLive,
    /// v2 6.12+: root cgroup.stat nr_dying_subsys_memory, the exact count.
    NrDyingSubsysMemory,
    /// v2 4.14+: root cgroup.stat nr_dying_descendants (dying cgroups of any controller).
    NrDyingDescendants,
}

impl DyingCountMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DyingCountMethod::NotCountable => "not_countable",
            DyingCountMethod::ProcCgroupsMinusLive => "proc_cgroups_minus_live",
            DyingCountMethod::NrDyingSubsysMemory => "nr_dying_subsys_memory",
            DyingCountMethod::NrDyingDescendants => "nr_dying_descendants",
        }
    }
}

/// What v1 memory.move_charge_at_immigrate does (facts §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveCharge {
    /// Before 6.3: charges move with the mm owner.
    Works,
    /// 6.3 .. 6.12: still works, logs a deprecation warning.
    Deprecated,
    /// 6.13+: reads 0, any non-zero write fails with EINVAL (measured on 6.18).
    Einval,
}

impl MoveCharge {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveCharge::Works => "works",
            MoveCharge::Deprecated => "deprecated",
            MoveCharge::Einval => "einval",
        }
    }
}

/// Where per-memcg slab caches show up in sysfs (facts §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlabNaming {
    /// 3.10: top-level /sys/kernel/slab entries "<cache>(<kmemcg_id>:<cgroup name>)".
    TopLevel310,
    /// 4.0 .. 5.8: /sys/kernel/slab/<root cache>/cgroup/<cache>(<css serial>:<name>).
    CgroupSubdir,
    /// 5.9+: slab is charged through obj_cgroup; there are no per-memcg caches.
    None,
}

impl SlabNaming {
    pub fn as_str(self) -> &'static str {
        match self {
            SlabNaming::TopLevel310 => "top_level310",
            SlabNaming::CgroupSubdir => "cgroup_subdir",
            SlabNaming::None => "none",
        }
    }
}

/// What a write to v1 memory.kmem.limit_in_bytes does (facts §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KmemLimitWrite {
    /// 3.10, 4.0 .. 4.5: the first write of a limited value switches kmem accounting on for
    /// good (only while the cgroup has no tasks and no children, else EBUSY); children inherit it.
    Enables,
    /// 4.6 .. 5.15: accounting is already on; the write only sets a limit (5.4+ also warns).
    SetsLimit,
    /// 5.16 .. 6.0: setting a limit is rejected.
    Rejected,
    /// 6.1+: the file is a no-op that logs "kmem.limit_in_bytes is deprecated" (measured on 6.18).
    NoOpWarns,
}

impl KmemLimitWrite {
    pub fn as_str(self) -> &'static str {
        match self {
            KmemLimitWrite::Enables => "enables",
            KmemLimitWrite::SetsLimit => "sets_limit",
            KmemLimitWrite::Rejected => "rejected",
            KmemLimitWrite::NoOpWarns => "no_op_warns",
        }
    }
}

/// Everything cgleak assumes about a kernel, with the reasons where it is not sure.
#[derive(Debug, Clone, Serialize)]
pub struct KernelEra {
    pub release: KernelRelease,
    pub id: EraId,
    /// Dying memcgs keep their memcg ID until freed (3.10, el7, 4.0 .. 4.6).
    pub dying_hold_ids: bool,
    /// Swap entries (swapped-out shmem) can pin a dying memcg's ID: kernels with the
    /// id refcount of 73f576c04b94. Before it, dying memcgs keep their IDs anyway.
    pub swap_pins_ids: bool,
    /// Most likely errno of mkdir when the ID space is full.
    pub mkdir_errno_when_full: Errno,
    /// Other errnos this kernel may return instead, when the facts do not pin it down
    /// (vendor or stable backports). Empty when the answer is certain.
    pub mkdir_errno_alternatives: Vec<Errno>,
    /// v1 kmem accounting starts only after a write to memory.kmem.limit_in_bytes
    /// (3.10, 4.0 .. 4.5); 4.6+ accounts kmem in every v1 memcg.
    pub kmem_opt_in: bool,
    /// The cgroup.memory=nokmem boot parameter exists: upstream 4.5+, RHEL7 3.10.0-1062+.
    pub nokmem_supported: bool,
    pub move_charge: MoveCharge,
    /// /proc/cgroups num_cgroups still counts dying cgroups (4.x+); 3.10 drops them at rmdir.
    pub proc_cgroups_counts_dying: bool,
    /// v2 cgroup.stat has nr_dying_descendants (4.14+).
    pub has_nr_dying_descendants: bool,
    /// v2 cgroup.stat has nr_subsys_<ss> and nr_dying_subsys_<ss> (6.12+).
    pub has_nr_dying_subsys: bool,
    /// v2 memory.reclaim exists (5.19+).
    pub has_memory_reclaim: bool,
    pub kmem_limit_write: KmemLimitWrite,
    /// A write to memory.kmem.limit_in_bytes logs a deprecation warning (5.4 .. 5.15, 6.1+).
    pub kmem_limit_write_warns: bool,
    pub slab_naming: SlabNaming,
    /// Per-memcg slab caches appear in sysfs only with slub_memcg_sysfs=1 or
    /// CONFIG_SLUB_MEMCG_SYSFS_ON (4.14 .. 5.8).
    pub slab_memcg_sysfs_opt_in: bool,
    /// False when the release could not be placed in one era with confidence (unparseable,
    /// newer than the facts, or a distro ABI number hiding the patch level across an era
    /// boundary): the answers are then the nearest safe ones. Doubt about a single errno
    /// within a known era is carried by `mkdir_errno_alternatives` instead.
    pub exact: bool,
    /// Plain-English caveats, each citing the fact or commit behind it.
    pub notes: Vec<String>,
}

/// Yes / no / not pinned down: the state of a backport on a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backport {
    Present,
    Absent,
    Unsure,
}

/// What is known of the upstream patch level behind a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchLevel {
    Known(u32),
    /// Ubuntu "X.Y.0-N-flavour": only the ABI number N is known.
    UbuntuAbi(u32),
    /// A placeholder 0 (Debian, RHEL, other vendors) or no patch written ("5.4").
    Unknown,
}

impl PatchLevel {
    fn backport(self, min_patch: u32, absent_max_patch: u32, ubuntu_absent_max: Option<u32>, ubuntu_present_min: Option<u32>) -> Backport {
        match self {
            PatchLevel::Known(p) if p >= min_patch => Backport::Present,
            PatchLevel::Known(p) if p <= absent_max_patch => Backport::Absent,
            PatchLevel::UbuntuAbi(n) if ubuntu_absent_max.is_some_and(|m| n <= m) => Backport::Absent,
            PatchLevel::UbuntuAbi(n) if ubuntu_present_min.is_some_and(|m| n >= m) => Backport::Present,
            _ => Backport::Unsure,
        }
    }
}

fn ver_ge(r: &KernelRelease, major: u32, minor: u32) -> bool {
    (r.major, r.minor) >= (major, minor)
}

fn ver_le(r: &KernelRelease, major: u32, minor: u32) -> bool {
    (r.major, r.minor) <= (major, minor)
}

impl KernelEra {
    /// The era of a parsed release.
    pub fn from_release(r: KernelRelease) -> KernelEra {
        KernelEra::from_release_with_hint(r, None)
    }

    /// The era of a release string. Never fails: an unparseable string gets the nearest
    /// safe answer (dying memcgs may keep IDs, nothing countable) with `exact == false`.
    pub fn from_release_str(s: &str) -> KernelEra {
        match KernelRelease::parse(s) {
            Ok(r) => KernelEra::from_release(r),
            Err(e) => KernelEra::unknown_release(s.trim(), &e),
        }
    }

    /// Like [`KernelEra::from_release`], with the upstream version read from
    /// /proc/version_signature (Ubuntu) or /proc/version (Debian) when given: distro
    /// releases write 0 as the patch level, which hides the 4.4.y and 5.4.y boundaries.
    pub fn from_release_with_hint(r: KernelRelease, upstream_hint: Option<&str>) -> KernelEra {
        let mut notes: Vec<String> = Vec::new();
        let patch = patch_level(&r, upstream_hint, &mut notes);
        let (id, exact, alternatives) = classify(&r, patch, &mut notes);
        KernelEra::with_answers(r, id, exact, alternatives, notes)
    }

    /// True when mkdir may fail with `e` on this kernel when the ID space is full.
    pub fn mkdir_errno_possible(&self, e: Errno) -> bool {
        self.mkdir_errno_when_full == e || self.mkdir_errno_alternatives.contains(&e)
    }

    /// How dying memcgs can be counted here (facts §2).
    pub fn dying_count_method(&self, memory_on_v2: bool, has_nr_dying_subsys_file: bool) -> DyingCountMethod {
        if !memory_on_v2 {
            // v1 has no dying-count file (cgroup1_base_files); 3.10 /proc/cgroups forgets dying cgroups at rmdir.
            return if self.proc_cgroups_counts_dying {
                DyingCountMethod::ProcCgroupsMinusLive
            } else {
                DyingCountMethod::NotCountable
            };
        }
        if has_nr_dying_subsys_file {
            // 6.12+ cgroup.stat nr_dying_subsys_memory: trust the file over the release string.
            DyingCountMethod::NrDyingSubsysMemory
        } else if self.has_nr_dying_descendants {
            // 4.14+ cgroup.stat nr_dying_descendants counts dying cgroups of every controller.
            DyingCountMethod::NrDyingDescendants
        } else {
            DyingCountMethod::NotCountable
        }
    }

    /// Fill in every answer that follows from the version and the era.
    fn with_answers(r: KernelRelease, id: EraId, exact: bool, alternatives: Vec<Errno>, notes: Vec<String>) -> KernelEra {
        let v3 = r.major < 4;
        // 3.10 and 4.0 .. 4.5: accounting on the first write to memory.kmem.limit_in_bytes (facts §3);
        // 4.6 turned it on for every v1 memcg.
        let kmem_opt_in = v3 || ver_le(&r, 4, 5);
        let nokmem_supported = if id == EraId::El7 {
            // RHEL7 backported cgroup.memory=nokmem in 3.10.0-1062 (facts §3).
            r.el7_build.as_ref().and_then(|b| b.first()).is_some_and(|b| *b >= 1062)
        } else {
            // Upstream 4.5+; absent in 4.4.178 (facts §3).
            ver_ge(&r, 4, 5)
        };
        let move_charge = if !ver_ge(&r, 6, 3) {
            if move_charge_warning_backported(&r) {
                MoveCharge::Deprecated
            } else {
                MoveCharge::Works
            }
        } else if ver_le(&r, 6, 12) {
            // Deprecated in 6.3 with a warning, still works up to 6.12 (facts §5).
            MoveCharge::Deprecated
        } else {
            // 6.13+: non-zero writes fail with EINVAL (measured on 6.18, facts §5).
            MoveCharge::Einval
        };
        let kmem_limit_write = if kmem_opt_in {
            KmemLimitWrite::Enables
        } else if ver_le(&r, 5, 15) {
            KmemLimitWrite::SetsLimit
        } else if ver_le(&r, 6, 0) {
            // 5.16 rejects kmem limits (facts §3).
            KmemLimitWrite::Rejected
        } else {
            // 6.1, 6.6+: no-op with a warning (facts §3).
            KmemLimitWrite::NoOpWarns
        };
        // Warning on write in 5.4/5.10, and the 6.1+ no-op warns (facts §3).
        let kmem_limit_write_warns = (ver_ge(&r, 5, 4) && ver_le(&r, 5, 15)) || ver_ge(&r, 6, 1);
        let slab_naming = if v3 {
            SlabNaming::TopLevel310
        } else if ver_le(&r, 5, 8) {
            SlabNaming::CgroupSubdir
        } else {
            // 5.9+: obj_cgroup, no per-memcg caches (facts §2, §3).
            SlabNaming::None
        };
        let dying_hold_ids = matches!(id, EraId::Linux310 | EraId::El7 | EraId::Linux40To46);
        KernelEra {
            id,
            dying_hold_ids,
            swap_pins_ids: !dying_hold_ids,
            mkdir_errno_when_full: if id == EraId::El7 { el7_errno(&r) } else { era_errno(id) },
            mkdir_errno_alternatives: alternatives,
            kmem_opt_in,
            nokmem_supported,
            move_charge,
            // 4.x+: num_cgroups is decremented only when the cgroup is freed (cgroup-v1.c proc_cgroupstats_show).
            proc_cgroups_counts_dying: !v3,
            // cgroup.stat nr_dying_descendants: 4.14+ (facts §2).
            has_nr_dying_descendants: ver_ge(&r, 4, 14),
            // cgroup.stat nr_dying_subsys_<ss>: 6.12+ (facts §2).
            has_nr_dying_subsys: ver_ge(&r, 6, 12),
            // memory.reclaim: 5.19+ (facts §4).
            has_memory_reclaim: ver_ge(&r, 5, 19),
            kmem_limit_write,
            kmem_limit_write_warns,
            slab_naming,
            // slub_memcg_sysfs=1 needed from 4.14 until per-memcg caches went away in 5.9 (facts §2).
            slab_memcg_sysfs_opt_in: ver_ge(&r, 4, 14) && ver_le(&r, 5, 8),
            exact,
            notes,
            release: r,
        }
    }

    /// The nearest safe answer for a string that is not a release at all.
    fn unknown_release(raw: &str, err: &ReleaseError) -> KernelEra {
        let release = KernelRelease {
            raw: raw.to_string(),
            major: 0,
            minor: 0,
            patch: 0,
            el7_build: None,
            distro: Distro::Other,
        };
        KernelEra {
            release,
            // The errno and file layout of the newest era: an unreadable release is most likely a new kernel.
            id: EraId::Linux612Plus,
            // Safe side: dying memcgs may hold IDs, swap may pin them, and nothing counts them.
            dying_hold_ids: true,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::EBUSY,
            mkdir_errno_alternatives: vec![Errno::ENOSPC, Errno::ENOMEM],
            kmem_opt_in: false,
            nokmem_supported: false,
            move_charge: MoveCharge::Einval,
            proc_cgroups_counts_dying: false,
            has_nr_dying_descendants: false,
            has_nr_dying_subsys: false,
            has_memory_reclaim: false,
            kmem_limit_write: KmemLimitWrite::NoOpWarns,
            kmem_limit_write_warns: true,
            slab_naming: SlabNaming::None,
            slab_memcg_sysfs_opt_in: false,
            exact: false,
            notes: vec![
                format!("{err}: era unknown, so cgleak assumes dying memcgs may keep their IDs and cannot be counted"),
                "mkdir on a full memcg ID space may fail with ENOSPC (3.10, 4.0-4.6, 5.4.41-6.11), ENOMEM (el7, 4.7-5.4.40) or EBUSY (6.12+) (facts §1)".to_string(),
            ],
        }
    }
}

/// The 6.3 deprecation warning of move_charge_at_immigrate (da34a8484d16, "mm: memcontrol:
/// deprecate charge moving") went to stable in March 2023: 5.10.173 and 5.15.99 (stable
/// review postings), and 6.1.y (measured: Debian 6.1.0-56, upstream 6.1.192, logs the warning
/// and still moves charges). The first 6.1.y with it is not pinned down: 6.1.16, from the same
/// stable batch, is assumed; Debian's 6.1.0-N from N = 7 (6.1.20, bookworm's first release
/// kernels) are past it. Charges move either way.
fn move_charge_warning_backported(r: &KernelRelease) -> bool {
    match (r.major, r.minor) {
        (5, 10) => r.patch >= 173,
        (5, 15) => r.patch >= 99,
        (6, 1) if r.patch == 0 && r.distro == Distro::Debian => r.abi().is_some_and(|n| n >= 7),
        (6, 1) => r.patch >= 16,
        _ => false,
    }
}

/// errno of mkdir when the ID space is full, by era (facts §1).
fn era_errno(id: EraId) -> Errno {
    match id {
        // 3.10 get_new_cssid: -ENOSPC past CSS_ID_MAX.
        EraId::Linux310 => Errno::ENOSPC,
        // RHEL 3.10.0-862+: mem_cgroup_idr full -> ENOMEM (older builds: el7_errno).
        EraId::El7 => Errno::ENOMEM,
        // 4.0-4.6 mem_cgroup_css_online: css->id > MEM_CGROUP_ID_MAX -> -ENOSPC (73f576c04b94 log).
        EraId::Linux40To46 => Errno::ENOSPC,
        // 73f576c04b94 mem_cgroup_alloc: idr_alloc failure became -ENOMEM.
        EraId::Linux47To5440 => Errno::ENOMEM,
        // 11d6761218d1 passes idr_alloc's -ENOSPC through.
        EraId::Linux5441To611 => Errno::ENOSPC,
        // 6.12 xarray IDs: EBUSY (measured on 6.12 v2 and 6.18 v1).
        EraId::Linux612Plus => Errno::EBUSY,
    }
}

/// How a RHEL/CentOS 7 build hands out memcg IDs (facts §1a, read in the el7 source snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El7IdScheme {
    /// 3.10.0-514 and -693: 3.10's css_id, freed only when the memcg is freed; ENOSPC.
    CssId,
    /// 3.10.0-862 and later (957, 1062, 1127, 1160): a private mem_cgroup_idr, released only in
    /// __mem_cgroup_free; idr_alloc failure is ENOMEM.
    PrivateIdr,
    /// Older than 514: not checked; assumed css_id.
    OlderThanChecked(u32),
    /// No build number.
    Unknown,
}

/// The first el7 build with the private mem_cgroup_idr (RHEL 7.5).
const EL7_PRIVATE_IDR_MIN: u32 = 862;
/// The oldest el7 build the facts were checked on (RHEL 7.3).
const EL7_OLDEST_CHECKED: u32 = 514;

fn el7_id_scheme(r: &KernelRelease) -> El7IdScheme {
    match r.el7_build.as_ref().and_then(|b| b.first()).copied() {
        Some(b) if b >= EL7_PRIVATE_IDR_MIN => El7IdScheme::PrivateIdr,
        Some(b) if b >= EL7_OLDEST_CHECKED => El7IdScheme::CssId,
        Some(b) => El7IdScheme::OlderThanChecked(b),
        None => El7IdScheme::Unknown,
    }
}

/// errno of mkdir on a full ID space by el7 build: ENOSPC up to 693 (css_id), ENOMEM from
/// 862 (mem_cgroup_idr; ENOSPC too when the kmem ID space runs out first, an alternative).
fn el7_errno(r: &KernelRelease) -> Errno {
    match el7_id_scheme(r) {
        El7IdScheme::CssId | El7IdScheme::OlderThanChecked(_) => Errno::ENOSPC,
        El7IdScheme::PrivateIdr | El7IdScheme::Unknown => Errno::ENOMEM,
    }
}

/// What is known of the upstream patch level behind `r`.
fn patch_level(r: &KernelRelease, upstream_hint: Option<&str>, notes: &mut Vec<String>) -> PatchLevel {
    if let Some(hint) = upstream_hint {
        match upstream_version_from_hint(hint) {
            Some((ma, mi, p)) if (ma, mi) == (r.major, r.minor) => {
                if p != r.patch {
                    notes.push(format!("upstream version {ma}.{mi}.{p} taken from the kernel's version string, not the release's {}", r.patch));
                }
                return PatchLevel::Known(p);
            }
            Some((ma, mi, p)) => notes.push(format!(
                "upstream version hint {ma}.{mi}.{p} does not match release {}.{}: ignored",
                r.major, r.minor
            )),
            None => {}
        }
    }
    if !r.patch_written() {
        return PatchLevel::Unknown;
    }
    // Distros write "X.Y.0-ABI-flavour" whatever stable release they are built from.
    if r.patch == 0 && r.distro != Distro::Vanilla {
        if let Some(abi) = r.abi() {
            return if r.distro == Distro::Ubuntu { PatchLevel::UbuntuAbi(abi) } else { PatchLevel::Unknown };
        }
    }
    PatchLevel::Known(r.patch)
}

/// Era, exactness and errno alternatives of a parsed release.
fn classify(r: &KernelRelease, patch: PatchLevel, notes: &mut Vec<String>) -> (EraId, bool, Vec<Errno>) {
    let mut exact = true;
    let mut alternatives: Vec<Errno> = Vec::new();
    let id = match (r.major, r.minor) {
        // RHEL/CentOS 7 keeps 3.10 with a private mem_cgroup_idr (facts §1).
        // RHEL/CentOS 7 keeps 3.10 with IDs that dying memcgs never give back (facts §1a);
        // the errno depends on the build: see [`el7_errno`].
        (3, 10) if r.distro == Distro::El7 => {
            match el7_id_scheme(r) {
                El7IdScheme::CssId => {}
                El7IdScheme::PrivateIdr => {
                    alternatives.push(Errno::ENOSPC);
                    notes.push(
                        "RHEL7 862+ builds allocate memcg IDs from a private mem_cgroup_idr (ENOMEM when it is full); \
                         a kmem-active memcg also takes an ID from the separate kmem ID space (kmem_limited_groups, \
                         65535), whose exhaustion fails mkdir with ENOSPC (facts §1a)"
                            .into(),
                    );
                }
                El7IdScheme::OlderThanChecked(b) => {
                    alternatives.push(Errno::ENOMEM);
                    notes.push(format!(
                        "RHEL7 build {b} is older than 3.10.0-514, the oldest build checked: assumed to use 3.10's css_id like 514 \
                         (ENOSPC when the ID space is full) (facts §1a)"
                    ));
                }
                El7IdScheme::Unknown => {
                    alternatives.push(Errno::ENOSPC);
                    notes.push("RHEL7 build number not readable: mkdir on a full ID space fails with ENOMEM (862+) or ENOSPC (514, 693); nokmem support unknown (facts §1a)".into());
                }
            }
            EraId::El7
        }
        // 3.10 vanilla: css_id, ENOSPC, /proc/cgroups drops dying cgroups at rmdir (facts §1, §2).
        (3, 10) => EraId::Linux310,
        (0..=3, _) => {
            exact = false;
            notes.push(format!(
                "{}.{} is not 3.10, the only 3.x the facts cover: treated as 3.10 (dying memcgs keep their IDs, not countable)",
                r.major, r.minor
            ));
            EraId::Linux310
        }
        // 4.4.y: the stable backport of 73f576c04b94 gives it 4.7's ID refcount.
        (4, 4) => StableFix {
            min_patch: BACKPORT_44_PRESENT_MIN,
            absent_max_patch: BACKPORT_44_ABSENT_MAX,
            ubuntu_absent_max: Some(UBUNTU_44_ABSENT_MAX_ABI),
            ubuntu_present_min: Some(UBUNTU_44_PRESENT_MIN_ABI),
            first: "4.4.18",
            with: EraId::Linux47To5440,
            without: EraId::Linux40To46,
            with_note: "4.4.18 and later carry the stable backport of 73f576c04b94 (in linux-4.4.y since Aug 2016): dying memcgs release their IDs as on 4.7+",
            without_note: "",
            unsure_alternative: Errno::ENOMEM,
            unsure_why: "cannot tell whether this 4.4 kernel has the backport of 73f576c04b94 (4.4.y got it in 4.4.18, Ubuntu xenial in 4.4.0-37): assuming it does not, so dying memcgs may keep their IDs and mkdir fails with ENOSPC; with the backport IDs are released and mkdir fails with ENOMEM",
        }
        .place(r, patch, &mut exact, &mut alternatives, notes),
        // 4.0 .. 4.6: dying memcgs pin css->id; no id refcount before 73f576c04b94 (4.7).
        (4, 0..=6) => EraId::Linux40To46,
        // 4.19.123 (2020-05-14) did not take 11d6761218d1; no later 4.19.y backport was found.
        (4, 19) => {
            alternatives.push(Errno::ENOSPC);
            notes.push("4.19: mkdir on a full ID space fails with ENOMEM (facts §1); ENOSPC if the kernel carries a backport of 11d6761218d1 (not in 4.19.123, later 4.19.y not checked)".into());
            EraId::Linux47To5440
        }
        // 4.7 .. 5.3: ID refcount (73f576c04b94) and ENOMEM.
        (4, _) | (5, 0..=3) => EraId::Linux47To5440,
        // 5.4.y: 11d6761218d1 arrived in 5.4.41.
        (5, 4) => StableFix {
            min_patch: ERRNO_FIX_54_MIN,
            absent_max_patch: ERRNO_FIX_54_MIN - 1,
            ubuntu_absent_max: Some(UBUNTU_54_ABSENT_MAX_ABI),
            ubuntu_present_min: Some(UBUNTU_54_PRESENT_MIN_ABI),
            first: "5.4.41",
            with: EraId::Linux5441To611,
            without: EraId::Linux47To5440,
            with_note: "",
            without_note: "",
            unsure_alternative: Errno::ENOSPC,
            unsure_why: "cannot tell whether this 5.4 kernel is 5.4.41 or later (11d6761218d1): mkdir on a full ID space fails with ENOMEM before it and ENOSPC after; dying memcgs release their IDs either way",
        }
        .place(r, patch, &mut exact, &mut alternatives, notes),
        // 5.5.y ended with 5.5.19 (2020-04-21), before 11d6761218d1 reached 5.7-rc5 (2020-05-10): ENOMEM.
        (5, 5) => {
            notes.push("5.5.y never received 11d6761218d1: mkdir on a full ID space fails with ENOMEM, as on 4.7-5.4.40".into());
            EraId::Linux47To5440
        }
        // 5.6.y: 11d6761218d1 arrived in 5.6.13 (no Ubuntu ABI windows: an Ubuntu 5.6 is unsure).
        (5, 6) => StableFix {
            min_patch: ERRNO_FIX_56_MIN,
            absent_max_patch: ERRNO_FIX_56_MIN - 1,
            ubuntu_absent_max: None,
            ubuntu_present_min: None,
            first: "5.6.13",
            with: EraId::Linux5441To611,
            without: EraId::Linux47To5440,
            with_note: "",
            without_note: "5.6 before 5.6.13 lacks 11d6761218d1: mkdir on a full ID space fails with ENOMEM, as on 4.7-5.4.40",
            unsure_alternative: Errno::ENOSPC,
            unsure_why: "cannot tell whether this 5.6 kernel is 5.6.13 or later (11d6761218d1): mkdir on a full ID space fails with ENOMEM before it and ENOSPC after",
        }
        .place(r, patch, &mut exact, &mut alternatives, notes),
        // 5.7 .. 6.11: 11d6761218d1 is upstream from 5.7-rc5: ENOSPC.
        (5, _) | (6, 0..=11) => EraId::Linux5441To611,
        // 6.12+: xarray IDs, EBUSY (measured on 6.12 and 6.18).
        _ => EraId::Linux612Plus,
    };
    if (r.major, r.minor) > NEWEST_KNOWN {
        exact = false;
        notes.push(format!(
            "{}.{} is newer than {}.{}, the newest kernel the facts were checked on: answers are those of 6.12+",
            r.major, r.minor, NEWEST_KNOWN.0, NEWEST_KNOWN.1
        ));
    }
    if (4, 0) <= (r.major, r.minor) && (r.major, r.minor) <= (4, 3) {
        notes.push("per-memcg slab caches under /sys/kernel/slab/<cache>/cgroup/ are checked from 4.4 on; 4.0-4.3 assumed the same (facts §2)".into());
    }
    notes.retain(|n| !n.is_empty());
    (id, exact, alternatives)
}

/// A fix that reached a stable series at some patch level, and what [`classify`] says of a
/// release of that series: placed after it, before it, or unsure (then the era without it).
struct StableFix {
    /// [`PatchLevel::backport`]'s bounds.
    min_patch: u32,
    absent_max_patch: u32,
    ubuntu_absent_max: Option<u32>,
    ubuntu_present_min: Option<u32>,
    /// The upstream version that first carries it, named when an Ubuntu ABI number placed the release.
    first: &'static str,
    with: EraId,
    without: EraId,
    /// Said of a release placed after, or before, the fix ("": nothing).
    with_note: &'static str,
    without_note: &'static str,
    /// When unsure: the errno of the other side, and why (after "<release>: ").
    unsure_alternative: Errno,
    unsure_why: &'static str,
}

impl StableFix {
    fn place(&self, r: &KernelRelease, patch: PatchLevel, exact: &mut bool, alternatives: &mut Vec<Errno>, notes: &mut Vec<String>) -> EraId {
        let (id, note) = match patch.backport(self.min_patch, self.absent_max_patch, self.ubuntu_absent_max, self.ubuntu_present_min) {
            Backport::Present => (self.with, self.with_note),
            Backport::Absent => (self.without, self.without_note),
            Backport::Unsure => {
                *exact = false;
                alternatives.push(self.unsure_alternative);
                notes.push(format!("{}: {}{}", r.raw, self.unsure_why, hint_advice(r)));
                return self.without;
            }
        };
        // Empty when the patch level itself placed it (classify drops empty notes).
        notes.push(ubuntu_inference_note(r, patch, self.first));
        notes.push(note.to_string());
        id
    }
}

/// A note when an Ubuntu ABI number, not a patch level, placed the release.
fn ubuntu_inference_note(r: &KernelRelease, patch: PatchLevel, boundary: &str) -> String {
    match patch {
        PatchLevel::UbuntuAbi(n) => format!(
            "Ubuntu {}.{}.0-{n} placed relative to upstream {boundary} by its ABI number (Ubuntu writes .0 and carries stable updates); /proc/version_signature gives the real upstream version",
            r.major, r.minor
        ),
        _ => String::new(),
    }
}

/// Where the upstream version can be read for this distro.
fn hint_advice(r: &KernelRelease) -> &'static str {
    match r.distro {
        Distro::Ubuntu => "; /proc/version_signature gives the upstream version",
        Distro::Debian => "; /proc/version gives the upstream version (\"Debian X.Y.Z-N\")",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn era(s: &str) -> KernelEra {
        KernelEra::from_release_str(s)
    }

    fn release(s: &str) -> KernelRelease {
        KernelRelease::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    // ---- the answers for one release ----

    /// What a test expects of the era of one release; a field left `None` is not checked.
    #[derive(Default)]
    struct Expect {
        distro: Option<Distro>,
        id: Option<EraId>,
        exact: Option<bool>,
        dying_hold_ids: Option<bool>,
        swap_pins_ids: Option<bool>,
        mkdir_errno_when_full: Option<Errno>,
        mkdir_errno_alternatives: Option<Vec<Errno>>,
        /// Each of these must satisfy `mkdir_errno_possible`.
        errno_possible: Option<Vec<Errno>>,
        /// None of these may satisfy `mkdir_errno_possible`.
        errno_impossible: Option<Vec<Errno>>,
        kmem_opt_in: Option<bool>,
        nokmem_supported: Option<bool>,
        move_charge: Option<MoveCharge>,
        proc_cgroups_counts_dying: Option<bool>,
        has_nr_dying_descendants: Option<bool>,
        has_nr_dying_subsys: Option<bool>,
        has_memory_reclaim: Option<bool>,
        kmem_limit_write: Option<KmemLimitWrite>,
        kmem_limit_write_warns: Option<bool>,
        slab_naming: Option<SlabNaming>,
        slab_memcg_sysfs_opt_in: Option<bool>,
        /// `dying_count_method(false, false)`: memory on v1.
        count_v1: Option<DyingCountMethod>,
        /// `dying_count_method(true, false)`: memory on v2, no nr_dying_subsys_memory key.
        count_v2: Option<DyingCountMethod>,
        /// `dying_count_method(true, true)`: memory on v2 with the nr_dying_subsys_memory key.
        count_v2_subsys: Option<DyingCountMethod>,
    }

    /// `expect! { id: EraId::El7, exact: true }`: an [`Expect`] checking just the fields named.
    macro_rules! expect {
        ($($field:ident: $value:expr),* $(,)?) => {
            Expect { $($field: Some($value),)* ..Expect::default() }
        };
    }

    /// Checks every field `want` names on the era of `release`, and returns the era for
    /// the checks of notes that differ per test.
    fn assert_era(release: &str, want: Expect) -> KernelEra {
        let e = era(release);
        check_era(release, &e, &want);
        e
    }

    fn check_era(label: &str, e: &KernelEra, want: &Expect) {
        let at = |what: &str| format!("{label:?}: {what} (notes: {:?})", e.notes);
        macro_rules! check_fields {
            ($($field:ident),* $(,)?) => {$(
                if let Some(w) = &want.$field {
                    assert_eq!(&e.$field, w, "{}", at(stringify!($field)));
                }
            )*};
        }
        if let Some(d) = &want.distro {
            assert_eq!(&e.release.distro, d, "{}", at("distro"));
        }
        check_fields!(
            id,
            exact,
            dying_hold_ids,
            swap_pins_ids,
            mkdir_errno_when_full,
            mkdir_errno_alternatives,
            kmem_opt_in,
            nokmem_supported,
            move_charge,
            proc_cgroups_counts_dying,
            has_nr_dying_descendants,
            has_nr_dying_subsys,
            has_memory_reclaim,
            kmem_limit_write,
            kmem_limit_write_warns,
            slab_naming,
            slab_memcg_sysfs_opt_in,
        );
        for errno in want.errno_possible.iter().flatten() {
            assert!(e.mkdir_errno_possible(*errno), "{}", at(&format!("{errno:?} possible")));
        }
        for errno in want.errno_impossible.iter().flatten() {
            assert!(!e.mkdir_errno_possible(*errno), "{}", at(&format!("{errno:?} impossible")));
        }
        for (memory_on_v2, has_subsys_file, w) in
            [(false, false, want.count_v1), (true, false, want.count_v2), (true, true, want.count_v2_subsys)]
        {
            if let Some(w) = w {
                let what = format!("dying_count_method({memory_on_v2}, {has_subsys_file})");
                assert_eq!(e.dying_count_method(memory_on_v2, has_subsys_file), w, "{}", at(&what));
            }
        }
    }

    // ---- el7 ----

    #[test]
    fn el7_957_every_field() {
        let e = assert_era("3.10.0-957.27.2.el7.x86_64", expect! {
            id: EraId::El7,
            exact: true,
            dying_hold_ids: true,
            swap_pins_ids: false,
            mkdir_errno_when_full: Errno::ENOMEM,
            mkdir_errno_alternatives: vec![Errno::ENOSPC],
            errno_possible: vec![Errno::ENOSPC, Errno::ENOMEM],
            errno_impossible: vec![Errno::EBUSY],
            kmem_opt_in: true,
            nokmem_supported: false,
            move_charge: MoveCharge::Works,
            proc_cgroups_counts_dying: false,
            has_nr_dying_descendants: false,
            has_nr_dying_subsys: false,
            has_memory_reclaim: false,
            kmem_limit_write: KmemLimitWrite::Enables,
            kmem_limit_write_warns: false,
            slab_naming: SlabNaming::TopLevel310,
            slab_memcg_sysfs_opt_in: false,
            count_v1: DyingCountMethod::NotCountable,
            count_v2: DyingCountMethod::NotCountable,
        });
        let joined = e.notes.join(" ");
        assert!(joined.contains("ENOMEM") && joined.contains("ENOSPC"), "{joined}");
    }

    #[test]
    fn el7_1160_is_enomem_or_the_kmem_id_space() {
        let e = assert_era("3.10.0-1160.el7.x86_64", expect! {
            id: EraId::El7,
            exact: true,
            mkdir_errno_when_full: Errno::ENOMEM,
            mkdir_errno_alternatives: vec![Errno::ENOSPC],
            nokmem_supported: true,
            dying_hold_ids: true,
            count_v1: DyingCountMethod::NotCountable,
        });
        assert!(e.notes.iter().any(|n| n.contains("kmem_limited_groups")), "{:?}", e.notes);
    }

    #[test]
    fn el7_errno_by_build() {
        for (release, errno, alternatives) in [
            ("3.10.0-514.el7.x86_64", Errno::ENOSPC, vec![]),
            ("3.10.0-514.26.2.el7.x86_64", Errno::ENOSPC, vec![]),
            ("3.10.0-693.21.1.el7.x86_64", Errno::ENOSPC, vec![]),
            ("3.10.0-862.el7.x86_64", Errno::ENOMEM, vec![Errno::ENOSPC]),
            ("3.10.0-957.27.2.el7.x86_64", Errno::ENOMEM, vec![Errno::ENOSPC]),
            ("3.10.0-1062.18.1.el7.x86_64", Errno::ENOMEM, vec![Errno::ENOSPC]),
            ("3.10.0-1127.el7.x86_64", Errno::ENOMEM, vec![Errno::ENOSPC]),
            ("3.10.0-327.el7.x86_64", Errno::ENOSPC, vec![Errno::ENOMEM]),
        ] {
            assert_era(release, expect! {
                id: EraId::El7,
                exact: true,
                dying_hold_ids: true,
                mkdir_errno_when_full: errno,
                mkdir_errno_alternatives: alternatives,
                kmem_opt_in: true,
                nokmem_supported: release.contains("-1062") || release.contains("-1127"),
            });
        }
    }

    #[test]
    fn el7_nokmem_from_1062() {
        for (release, nokmem) in [
            ("3.10.0-1062.el7.x86_64", true),
            ("3.10.0-1062.1.2.el7.x86_64", true),
            ("3.10.0-1061.el7.x86_64", false),
            ("3.10.0-957.27.2.el7.x86_64", false),
            ("3.10.0-957.el7.x86_64", false),
        ] {
            assert_era(release, expect! { nokmem_supported: nokmem });
        }
    }

    // ---- 3.x ----

    #[test]
    fn vanilla_3_10_every_field() {
        assert_era("3.10.108", expect! {
            id: EraId::Linux310,
            exact: true,
            dying_hold_ids: true,
            swap_pins_ids: false,
            mkdir_errno_when_full: Errno::ENOSPC,
            mkdir_errno_alternatives: vec![],
            kmem_opt_in: true,
            nokmem_supported: false,
            move_charge: MoveCharge::Works,
            proc_cgroups_counts_dying: false,
            kmem_limit_write: KmemLimitWrite::Enables,
            slab_naming: SlabNaming::TopLevel310,
            count_v1: DyingCountMethod::NotCountable,
            count_v2: DyingCountMethod::NotCountable,
        });
    }

    #[test]
    fn other_3x_is_3_10_but_not_exact() {
        assert_era("3.16.0-6-amd64", expect! { id: EraId::Linux310, exact: false, dying_hold_ids: true });
        assert_era("2.6.32", expect! { id: EraId::Linux310, exact: false });
    }

    // ---- 4.x ----

    #[test]
    fn linux_4_4_131_has_the_backport() {
        assert_era("4.4.131", expect! {
            id: EraId::Linux47To5440,
            exact: true,
            dying_hold_ids: false,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::ENOMEM,
            mkdir_errno_alternatives: vec![],
            // kmem opt-in is a 4.0-4.5 property regardless of the ID backport; nokmem came in 4.5.
            kmem_opt_in: true,
            nokmem_supported: false,
            kmem_limit_write: KmemLimitWrite::Enables,
            proc_cgroups_counts_dying: true,
            has_nr_dying_descendants: false,
            slab_naming: SlabNaming::CgroupSubdir,
            slab_memcg_sysfs_opt_in: false,
            move_charge: MoveCharge::Works,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2: DyingCountMethod::NotCountable,
        });
    }

    #[test]
    fn linux_4_4_boundaries() {
        assert_era(
            "4.4.17",
            expect! { id: EraId::Linux40To46, exact: true, dying_hold_ids: true, mkdir_errno_when_full: Errno::ENOSPC },
        );
        // 4.4.18 is the first stable release with the backport of 73f576c04b94 (facts §1a).
        for s in ["4.4.18", "4.4.19", "4.4.20", "4.4.302"] {
            assert_era(s, expect! {
                id: EraId::Linux47To5440,
                exact: true,
                dying_hold_ids: false,
                mkdir_errno_when_full: Errno::ENOMEM,
                nokmem_supported: false,
            });
        }
    }

    #[test]
    fn ubuntu_4_4_0_21_is_before_the_backport() {
        let e = assert_era("4.4.0-21-generic", expect! {
            distro: Distro::Ubuntu,
            id: EraId::Linux40To46,
            exact: true,
            dying_hold_ids: true,
            swap_pins_ids: false,
            mkdir_errno_when_full: Errno::ENOSPC,
            kmem_opt_in: true,
            nokmem_supported: false,
            proc_cgroups_counts_dying: true,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
        });
        assert!(e.notes.iter().any(|n| n.contains("version_signature")), "{:?}", e.notes);
    }

    #[test]
    fn ubuntu_4_4_abi_windows() {
        assert_era("4.4.0-210-generic", expect! { id: EraId::Linux47To5440, exact: true, dying_hold_ids: false });
        // xenial 4.4.0-37 and later carry the backport (facts §1a).
        assert_era("4.4.0-37-generic", expect! { id: EraId::Linux47To5440, exact: true, dying_hold_ids: false });
        assert_era("4.4.0-31-generic", expect! { id: EraId::Linux40To46, exact: true, dying_hold_ids: true });
        assert_era("4.4.0-34-generic", expect! {
            id: EraId::Linux40To46,
            exact: false,
            dying_hold_ids: true,
            mkdir_errno_alternatives: vec![Errno::ENOMEM],
        });
        // The upstream version settles it.
        let hint = "Ubuntu 4.4.0-34.53-generic 4.4.15";
        let e = KernelEra::from_release_with_hint(release("4.4.0-34-generic"), Some(hint));
        check_era(hint, &e, &expect! { id: EraId::Linux40To46, exact: true });
        let hint = "Ubuntu 4.4.0-36.55-generic 4.4.19";
        let e = KernelEra::from_release_with_hint(release("4.4.0-36-generic"), Some(hint));
        check_era(hint, &e, &expect! { id: EraId::Linux47To5440, exact: true });
    }

    #[test]
    fn linux_4_0_to_4_6() {
        for s in ["4.0.9", "4.3.6", "4.5.7", "4.6.7"] {
            assert_era(s, expect! {
                id: EraId::Linux40To46,
                dying_hold_ids: true,
                mkdir_errno_when_full: Errno::ENOSPC,
                proc_cgroups_counts_dying: true,
            });
        }
        assert_era("4.5.7", expect! { kmem_opt_in: true, nokmem_supported: true });
        assert_era("4.4.131", expect! { nokmem_supported: false });
        assert_era("4.6.7", expect! { kmem_opt_in: false, kmem_limit_write: KmemLimitWrite::SetsLimit });
        assert!(era("4.3.6").notes.iter().any(|n| n.contains("4.0-4.3")));
    }

    #[test]
    fn debian_4_9_every_field() {
        assert_era("4.9.0-8-amd64", expect! {
            distro: Distro::Debian,
            id: EraId::Linux47To5440,
            exact: true,
            dying_hold_ids: false,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::ENOMEM,
            mkdir_errno_alternatives: vec![],
            kmem_opt_in: false,
            nokmem_supported: true,
            move_charge: MoveCharge::Works,
            proc_cgroups_counts_dying: true,
            has_nr_dying_descendants: false,
            has_nr_dying_subsys: false,
            has_memory_reclaim: false,
            kmem_limit_write: KmemLimitWrite::SetsLimit,
            kmem_limit_write_warns: false,
            slab_naming: SlabNaming::CgroupSubdir,
            slab_memcg_sysfs_opt_in: false,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2: DyingCountMethod::NotCountable,
        });
    }

    #[test]
    fn debian_4_19_every_field() {
        let e = assert_era("4.19.0-25-amd64", expect! {
            id: EraId::Linux47To5440,
            exact: true,
            dying_hold_ids: false,
            mkdir_errno_when_full: Errno::ENOMEM,
            mkdir_errno_alternatives: vec![Errno::ENOSPC],
            kmem_opt_in: false,
            nokmem_supported: true,
            has_nr_dying_descendants: true,
            slab_memcg_sysfs_opt_in: true,
            slab_naming: SlabNaming::CgroupSubdir,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2: DyingCountMethod::NrDyingDescendants,
            count_v2_subsys: DyingCountMethod::NrDyingSubsysMemory,
        });
        assert!(e.notes.iter().any(|n| n.contains("ENOMEM") && n.contains("ENOSPC")));
    }

    // ---- 5.x ----

    #[test]
    fn ubuntu_5_4_0_150_is_past_5_4_41() {
        let e = assert_era("5.4.0-150-generic", expect! {
            id: EraId::Linux5441To611,
            exact: true,
            dying_hold_ids: false,
            mkdir_errno_when_full: Errno::ENOSPC,
            mkdir_errno_alternatives: vec![],
            kmem_opt_in: false,
            nokmem_supported: true,
            kmem_limit_write: KmemLimitWrite::SetsLimit,
            kmem_limit_write_warns: true,
            has_memory_reclaim: false,
            slab_naming: SlabNaming::CgroupSubdir,
            move_charge: MoveCharge::Works,
            count_v2: DyingCountMethod::NrDyingDescendants,
        });
        assert!(e.notes.iter().any(|n| n.contains("ABI number")), "{:?}", e.notes);
    }

    #[test]
    fn linux_5_4_boundary() {
        assert_era("5.4.40", expect! { id: EraId::Linux47To5440, mkdir_errno_when_full: Errno::ENOMEM, exact: true });
        assert_era("5.4.41", expect! { id: EraId::Linux5441To611, mkdir_errno_when_full: Errno::ENOSPC });
        assert_era("5.4.0", expect! { id: EraId::Linux47To5440, exact: true });
        assert_era("5.4.0-26-generic", expect! { id: EraId::Linux47To5440, exact: true });
        assert_era("5.4.0-42-generic", expect! { exact: false, errno_possible: vec![Errno::ENOMEM, Errno::ENOSPC] });
    }

    #[test]
    fn bare_5_4_is_not_exact() {
        let e = assert_era("5.4", expect! {
            id: EraId::Linux47To5440,
            exact: false,
            // Both sides of 5.4.41 release IDs.
            dying_hold_ids: false,
            errno_possible: vec![Errno::ENOMEM, Errno::ENOSPC],
        });
        assert!(e.notes.iter().any(|n| n.contains("5.4.41")));
    }

    #[test]
    fn linux_5_5_and_5_6() {
        assert_era("5.5.19", expect! { id: EraId::Linux47To5440, mkdir_errno_when_full: Errno::ENOMEM, exact: true });
        assert_era("5.6.12", expect! { mkdir_errno_when_full: Errno::ENOMEM });
        assert_era("5.6.13", expect! { id: EraId::Linux5441To611, mkdir_errno_when_full: Errno::ENOSPC });
        assert_era("5.6.0-0.bpo.2-amd64", expect! { exact: false, errno_possible: vec![Errno::ENOSPC, Errno::ENOMEM] });
        assert_era("5.7.1", expect! { id: EraId::Linux5441To611 });
    }

    #[test]
    fn debian_5_10_every_field() {
        assert_era("5.10.0-28-amd64", expect! {
            id: EraId::Linux5441To611,
            exact: true,
            dying_hold_ids: false,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::ENOSPC,
            mkdir_errno_alternatives: vec![],
            kmem_opt_in: false,
            nokmem_supported: true,
            move_charge: MoveCharge::Works,
            proc_cgroups_counts_dying: true,
            has_nr_dying_descendants: true,
            has_nr_dying_subsys: false,
            has_memory_reclaim: false,
            kmem_limit_write: KmemLimitWrite::SetsLimit,
            kmem_limit_write_warns: true,
            slab_naming: SlabNaming::None,
            slab_memcg_sysfs_opt_in: false,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2: DyingCountMethod::NrDyingDescendants,
        });
    }

    #[test]
    fn kmem_limit_write_by_version() {
        assert_era("5.15.100", expect! { kmem_limit_write: KmemLimitWrite::SetsLimit });
        assert_era("5.16.1", expect! { kmem_limit_write: KmemLimitWrite::Rejected, kmem_limit_write_warns: false });
        assert_era("6.0.19", expect! { kmem_limit_write: KmemLimitWrite::Rejected });
        assert_era("6.1.0-56-cloud-amd64", expect! { kmem_limit_write: KmemLimitWrite::NoOpWarns, kmem_limit_write_warns: true });
        assert_era("5.3.18", expect! { kmem_limit_write_warns: false });
        assert_era("5.4.41", expect! { kmem_limit_write_warns: true });
    }

    #[test]
    fn memory_reclaim_from_5_19() {
        assert_era("5.18.19", expect! { has_memory_reclaim: false });
        assert_era("5.19.0", expect! { has_memory_reclaim: true });
    }

    // ---- 6.x and later ----

    #[test]
    fn debian_6_1_every_field() {
        assert_era("6.1.0-56-cloud-amd64", expect! {
            distro: Distro::Debian,
            id: EraId::Linux5441To611,
            exact: true,
            dying_hold_ids: false,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::ENOSPC,
            kmem_opt_in: false,
            nokmem_supported: true,
            // The stable backport of the 6.3 warning (measured).
            move_charge: MoveCharge::Deprecated,
            proc_cgroups_counts_dying: true,
            has_nr_dying_descendants: true,
            has_nr_dying_subsys: false,
            has_memory_reclaim: true,
            slab_naming: SlabNaming::None,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2: DyingCountMethod::NrDyingDescendants,
            // A backported key is trusted over the release string.
            count_v2_subsys: DyingCountMethod::NrDyingSubsysMemory,
        });
    }

    #[test]
    fn move_charge_by_version() {
        for (release, move_charge) in [
            // Measured in a Debian 6.1.0-56 guest: the stable backport of the warning (cargo xtask vmtest).
            ("6.1.0-56-cloud-amd64", MoveCharge::Deprecated),
            ("6.1.15", MoveCharge::Works),
            ("6.1.16", MoveCharge::Deprecated),
            ("6.1.0-6-cloud-amd64", MoveCharge::Works),
            ("5.15.98", MoveCharge::Works),
            ("5.15.99", MoveCharge::Deprecated),
            ("5.10.173", MoveCharge::Deprecated),
            ("6.2.16", MoveCharge::Works),
            ("6.3.0", MoveCharge::Deprecated),
            ("6.6.30", MoveCharge::Deprecated),
            ("6.12.117+deb12-cloud-amd64", MoveCharge::Deprecated),
            ("6.13.1", MoveCharge::Einval),
            ("6.18.44-fc-v669", MoveCharge::Einval),
        ] {
            assert_era(release, expect! { move_charge: move_charge });
        }
    }

    #[test]
    fn debian_6_12_every_field() {
        assert_era("6.12.117+deb12-cloud-amd64", expect! {
            distro: Distro::Debian,
            id: EraId::Linux612Plus,
            exact: true,
            dying_hold_ids: false,
            swap_pins_ids: true,
            mkdir_errno_when_full: Errno::EBUSY,
            mkdir_errno_alternatives: vec![],
            kmem_opt_in: false,
            nokmem_supported: true,
            move_charge: MoveCharge::Deprecated,
            proc_cgroups_counts_dying: true,
            has_nr_dying_descendants: true,
            has_nr_dying_subsys: true,
            has_memory_reclaim: true,
            kmem_limit_write: KmemLimitWrite::NoOpWarns,
            slab_naming: SlabNaming::None,
            count_v2_subsys: DyingCountMethod::NrDyingSubsysMemory,
            // Key absent (file unreadable, kernel without it): fall back.
            count_v2: DyingCountMethod::NrDyingDescendants,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
        });
    }

    #[test]
    fn host_6_18_every_field() {
        assert_era("6.18.44-fc-v669", expect! {
            distro: Distro::Other,
            id: EraId::Linux612Plus,
            exact: true,
            dying_hold_ids: false,
            mkdir_errno_when_full: Errno::EBUSY,
            kmem_opt_in: false,
            nokmem_supported: true,
            move_charge: MoveCharge::Einval,
            proc_cgroups_counts_dying: true,
            has_nr_dying_subsys: true,
            has_memory_reclaim: true,
            kmem_limit_write: KmemLimitWrite::NoOpWarns,
            kmem_limit_write_warns: true,
            slab_naming: SlabNaming::None,
            count_v1: DyingCountMethod::ProcCgroupsMinusLive,
            count_v2_subsys: DyingCountMethod::NrDyingSubsysMemory,
        });
    }

    #[test]
    fn future_7_2_is_6_12_plus_not_exact() {
        let e = assert_era("7.2.0", expect! {
            id: EraId::Linux612Plus,
            exact: false,
            dying_hold_ids: false,
            mkdir_errno_when_full: Errno::EBUSY,
            move_charge: MoveCharge::Einval,
        });
        assert!(e.notes.iter().any(|n| n.contains("newer than 6.18")), "{:?}", e.notes);
        assert_era("6.19.1", expect! { exact: false });
    }

    // ---- garbage ----

    #[test]
    fn garbage_gets_the_safe_answer() {
        for s in ["garbage", "", "6", "   "] {
            let e = assert_era(s, expect! {
                exact: false,
                dying_hold_ids: true,
                swap_pins_ids: true,
                id: EraId::Linux612Plus,
                mkdir_errno_when_full: Errno::EBUSY,
                errno_possible: Errno::ALL.to_vec(),
                proc_cgroups_counts_dying: false,
                nokmem_supported: false,
                move_charge: MoveCharge::Einval,
                count_v1: DyingCountMethod::NotCountable,
                count_v2: DyingCountMethod::NotCountable,
                // The file itself is still trusted when it is there.
                count_v2_subsys: DyingCountMethod::NrDyingSubsysMemory,
            });
            let joined = e.notes.join(" ");
            for name in ["ENOSPC", "ENOMEM", "EBUSY"] {
                assert!(joined.contains(name), "{s:?}: {joined}");
            }
            assert!(joined.contains("kernel release"), "{joined}");
        }
        assert_eq!(era("garbage").release.raw, "garbage");
    }

    // ---- names and JSON ----

    #[test]
    fn errno_names_messages_numbers() {
        assert_eq!(Errno::ENOSPC.as_str(), "ENOSPC");
        assert_eq!(Errno::ENOMEM.message(), "cannot allocate memory");
        assert_eq!(Errno::ENOSPC.message(), "no space left on device");
        assert_eq!(Errno::EBUSY.message(), "device or resource busy");
        assert_eq!(Errno::from_raw(28), Some(Errno::ENOSPC));
        assert_eq!(Errno::from_raw(12), Some(Errno::ENOMEM));
        assert_eq!(Errno::from_raw(16), Some(Errno::EBUSY));
        assert_eq!(Errno::from_raw(22), None);
        for e in Errno::ALL {
            assert_eq!(Errno::from_raw(e.raw()), Some(e));
            assert_eq!(Errno::from_name(e.as_str()), Some(e));
        }
        assert_eq!(Errno::from_name("EINVAL"), None);
    }

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn serde_names_match_as_str() {
        for id in EraId::ALL {
            assert_eq!(json(&id), format!("\"{}\"", id.as_str()));
        }
        for e in Errno::ALL {
            assert_eq!(json(&e), format!("\"{}\"", e.as_str()));
        }
        for m in [
            DyingCountMethod::NotCountable,
            DyingCountMethod::ProcCgroupsMinusLive,
            DyingCountMethod::NrDyingSubsysMemory,
            DyingCountMethod::NrDyingDescendants,
        ] {
            assert_eq!(json(&m), format!("\"{}\"", m.as_str()));
        }
        for m in [MoveCharge::Works, MoveCharge::Deprecated, MoveCharge::Einval] {
            assert_eq!(json(&m), format!("\"{}\"", m.as_str()));
        }
        for s in [SlabNaming::TopLevel310, SlabNaming::CgroupSubdir, SlabNaming::None] {
            assert_eq!(json(&s), format!("\"{}\"", s.as_str()));
        }
        for k in [KmemLimitWrite::Enables, KmemLimitWrite::SetsLimit, KmemLimitWrite::Rejected, KmemLimitWrite::NoOpWarns] {
            assert_eq!(json(&k), format!("\"{}\"", k.as_str()));
        }
        for d in [Distro::El7, Distro::Debian, Distro::Ubuntu, Distro::Vanilla, Distro::Other] {
            assert_eq!(json(&d), format!("\"{}\"", d.as_str()));
        }
        assert_eq!(EraId::Linux5441To611.as_str(), "5.4.41-6.11");
        assert_eq!(DyingCountMethod::ProcCgroupsMinusLive.as_str(), "proc_cgroups_minus_live");
    }

    #[test]
    fn era_serializes_to_plain_json() {
        let v: serde_json::Value = serde_json::to_value(era("3.10.0-957.27.2.el7.x86_64")).unwrap();
        assert_eq!(v["id"], "3.10-el7");
        assert_eq!(v["mkdir_errno_when_full"], "ENOMEM");
        assert_eq!(v["mkdir_errno_alternatives"][0], "ENOSPC");
        assert_eq!(v["release"]["distro"], "el7");
        assert_eq!(v["release"]["el7_build"], serde_json::json!([957, 27, 2]));
        assert_eq!(v["move_charge"], "works");
        assert_eq!(v["slab_naming"], "top_level310");
        assert_eq!(v["kmem_limit_write"], "enables");
        assert_eq!(v["exact"], true);
        let v: serde_json::Value = serde_json::to_value(era("garbage")).unwrap();
        assert_eq!(v["exact"], false);
        assert_eq!(v["id"], "6.12+");
    }

    #[test]
    fn era_is_a_pure_function_of_the_release() {
        // Every test release through both entry points gives the same answers.
        for s in ["3.10.0-957.27.2.el7.x86_64", "4.4.0-21-generic", "5.4.0-150-generic", "6.18.44-fc-v669", "5.4"] {
            let a = era(s);
            let b = KernelEra::from_release(release(s));
            assert_eq!(json(&a), json(&b), "{s}");
        }
    }

    #[test]
    fn hint_for_the_wrong_kernel_is_ignored() {
        let e = KernelEra::from_release_with_hint(release("5.4.0-42-generic"), Some("Ubuntu 4.4.0-21.37-generic 4.4.6"));
        assert!(!e.exact);
        assert!(e.notes.iter().any(|n| n.contains("does not match")));
        let e = KernelEra::from_release_with_hint(release("5.4.0-42-generic"), Some("Ubuntu 5.4.0-42.46-generic 5.4.44"));
        assert!(e.exact);
        assert_eq!(e.id, EraId::Linux5441To611);
        let e = KernelEra::from_release_with_hint(
            release("4.19.0-25-amd64"),
            Some("Linux version 4.19.0-25-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 4.19.289-2 (2023-08-08)"),
        );
        assert_eq!(e.id, EraId::Linux47To5440);
        assert!(e.notes.iter().any(|n| n.contains("4.19.289")));
    }
}

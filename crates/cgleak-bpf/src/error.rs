use std::io;
use std::path::PathBuf;

use crate::record::RecordError;

/// Why the BPF walk could not answer on this host. Every variant says what to do or
/// what the kernel lacks; callers fall back to another method and print this.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No kernel BTF: the program's types cannot be matched to this kernel (CO-RE).
    #[error("no kernel BTF at {}: {reason}", .path.display())]
    NoBtf { path: PathBuf, reason: String },
    /// The kernel predates what the walk needs.
    #[error("kernel too old for the BPF memcg walk: its BTF has no {missing} ({since})")]
    KernelTooOld { missing: String, since: &'static str },
    /// bpf(2) refused us.
    #[error("BPF not permitted ({op}: {source}): {hint}")]
    NotPermitted {
        op: &'static str,
        hint: String,
        #[source]
        source: io::Error,
    },
    /// The kernel has no bpf(2) (built without CONFIG_BPF_SYSCALL).
    #[error("the kernel has no bpf(2) system call (ENOSYS: built without CONFIG_BPF_SYSCALL)")]
    NoBpfSyscall,
    /// The verifier refused the program: the first lines of its log.
    #[error("the kernel's verifier rejected the memcg walk ({source}): {log_head}")]
    Rejected {
        log_head: String,
        #[source]
        source: io::Error,
    },
    /// The program's types do not fit this kernel's BTF (a field it cannot do without is gone).
    #[error("the memcg walk does not fit this kernel's types: {detail}")]
    Relocation { detail: String },
    /// The memory hierarchy is not where we were told, or is not a memory hierarchy.
    #[error("memory cgroup hierarchy not found at {}: {reason}", .path.display())]
    NoHierarchy { path: PathBuf, reason: String },
    /// Another system call failed.
    #[error("{op}: {source}")]
    Syscall {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The walk's output is not what the program writes.
    #[error("the memcg walk's output is malformed: {0}")]
    BadOutput(#[from] RecordError),
    /// The walk stopped early.
    #[error("the memcg walk did not finish: {0}")]
    Incomplete(String),
}

impl Unavailable {
    /// A short stable name of the reason, for JSON and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Unavailable::NoBtf { .. } => "no_btf",
            Unavailable::KernelTooOld { .. } => "kernel_too_old",
            Unavailable::NotPermitted { .. } => "not_permitted",
            Unavailable::NoBpfSyscall => "no_bpf_syscall",
            Unavailable::Rejected { .. } => "verifier_rejected",
            Unavailable::Relocation { .. } => "btf_mismatch",
            Unavailable::NoHierarchy { .. } => "no_memory_hierarchy",
            Unavailable::Syscall { .. } => "syscall_failed",
            Unavailable::BadOutput(_) => "bad_output",
            Unavailable::Incomplete(_) => "incomplete",
        }
    }
}

use std::io;
use std::path::{Path, PathBuf};

/// An error from reading a host file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: unexpected content: {detail}", .path.display())]
    Unexpected { path: PathBuf, detail: String },
}

impl ReadError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ReadError::Io { path: path.into(), source }
    }

    pub fn unexpected(path: impl AsRef<Path>, detail: impl Into<String>) -> Self {
        ReadError::Unexpected { path: path.as_ref().to_path_buf(), detail: detail.into() }
    }

    /// The file or cgroup went away while it was read: ENOENT, or ENODEV which
    /// kernfs returns for a cgroup removed after it was opened.
    pub fn is_gone(&self) -> bool {
        match self {
            ReadError::Io { source, .. } => is_gone_io(source),
            ReadError::Unexpected { .. } => false,
        }
    }

    pub fn is_permission(&self) -> bool {
        match self {
            ReadError::Io { source, .. } => matches!(source.raw_os_error(), Some(libc_errno::EACCES) | Some(libc_errno::EPERM)),
            ReadError::Unexpected { .. } => false,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. } | ReadError::Unexpected { path, .. } => path,
        }
    }
}

/// ENOENT or ENODEV: the object is gone, not broken.
pub fn is_gone_io(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_errno::ENOENT) | Some(libc_errno::ENODEV))
        || e.kind() == io::ErrorKind::NotFound
}

/// The few errno values the readers reason about (kept local: no libc dependency here).
pub mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ENOMEM: i32 = 12;
}

pub type Result<T> = std::result::Result<T, ReadError>;

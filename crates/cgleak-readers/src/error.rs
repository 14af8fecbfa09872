use std::io;
use std::path::{Path, PathBuf};

use crate::errno;

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
            ReadError::Io { source, .. } => matches!(source.raw_os_error(), Some(errno::EACCES) | Some(errno::EPERM)),
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
    matches!(e.raw_os_error(), Some(errno::ENOENT) | Some(errno::ENODEV))
        || e.kind() == io::ErrorKind::NotFound
}

pub type Result<T> = std::result::Result<T, ReadError>;

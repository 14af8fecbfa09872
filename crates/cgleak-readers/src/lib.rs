//! Reader layer of cgleak: knows files, not verdicts.
//!
//! Every reader takes a [`HostPaths`] and reads relative to it, so the same code
//! reads this host (`/`), a host mounted into a container (`/host`), or a fixture
//! tree in a test. Errors carry the path they concern; a cgroup that vanished
//! while it was read is not an error but [`ReadError::is_gone`]. Every file is opened
//! beneath the host root ([`beneath`]) and read up to a cap ([`bounded`]).

pub mod beneath;
pub mod bootloader;
pub mod bounded;
pub mod cgroupfs;
pub mod duration;
pub mod errno;
pub mod error;
pub mod host;
pub mod kmsg;
pub mod kubelet;
pub mod logline;
pub mod logs;
pub mod mountinfo;
pub mod pagecache;
pub mod procfs;
pub mod slab;
pub mod versions;

pub use error::ReadError;
pub use host::HostPaths;

//! Action layer of cgleak: things that change the host. Each action takes its
//! paths as parameters (so a test points it at a temp tree), prints nothing and
//! leaves the host as it found it on every path out, panics included.

pub mod cgroup_tree;
pub mod fix;
pub mod lab;
pub mod probe;

/// A duration as users write it (`1h`, `30m`, `90s`, `1h30m`): the grammar's own.
pub use cgleak_readers::duration::human_duration;

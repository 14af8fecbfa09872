//! Action layer of cgleak: things that change the host. Each action takes its
//! paths as parameters (so a test points it at a temp tree), prints nothing and
//! leaves the host as it found it on every path out, panics included.

pub mod cgroup_tree;
pub mod lab;
pub mod probe;

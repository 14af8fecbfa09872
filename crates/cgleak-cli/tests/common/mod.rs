//! Helpers shared by the integration tests of the `cgleak` binary. One module per
//! concern, so engineers can add theirs without touching each other's files.

pub mod agent;
pub mod dist;
pub mod fixture;
pub mod kernel;
pub mod procfs;
pub mod prom;
pub mod runc;

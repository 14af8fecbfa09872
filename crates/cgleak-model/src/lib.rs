//! Model layer of cgleak: knows memcgs. Kernel eras, the census, the kubepods tree,
//! and the verdict of `check`. Reads through cgleak-readers; changes nothing.

pub mod census;
pub mod era;
pub mod forecast;
pub mod handoff;
pub mod incidents;
pub mod kubepods;
pub mod verdict;

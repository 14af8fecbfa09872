//! Model layer of cgleak: knows memcgs. Kernel eras, the census, the kubepods tree, the
//! incidents in the node's logs, the forecast and the verdict of `check`. Reads through
//! cgleak-readers; changes nothing on the host (the agent's history file is its own state).

pub mod census;
pub mod dying;
pub mod era;
pub mod forecast;
pub mod handoff;
pub mod history;
pub mod incidents;
pub mod kubepods;
pub mod memcg_memory;
pub mod node_logs;
pub mod pinning;
pub mod verdict;

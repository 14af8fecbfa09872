//! Model layer of cgleak: knows memcgs. Kernel eras, the census, the kubepods tree, the
//! incidents in the node's logs, the forecast and the verdict of `check`. Reads through
//! cgleak-readers; changes nothing on the host (the agent's history file is its own state).

/// Version of the layout of every JSON document cgleak prints (`schema_version`, the first
/// key of each: status, check, dying, probe, logs and each of its JSON lines, fix, lab).
/// Raised when a key is removed or changes meaning; new keys keep it.
pub const SCHEMA_VERSION: u32 = 1;

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

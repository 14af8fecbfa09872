//! The agent's parts that are not flag handling (`cmd_agent.rs` is its front end): the
//! sampling, the state its threads share and the endpoint serves, the named dying memcgs, the log followers, the
//! periodic reclaim and the Kubernetes reporter.

pub mod dying;
pub mod http;
pub mod logs;
pub mod reclaim;
pub mod reporter;
pub mod sampler;
pub mod shared;

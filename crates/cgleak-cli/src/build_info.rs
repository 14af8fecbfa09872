//! What `cgleak --version` says about this build.
//!
//! `cargo xtask dist` (xtask/src/dist.rs) sets CGLEAK_DIST_TARGET and CGLEAK_DIST_LIBC
//! while it builds the single-file node binary; rustc records both in the dep-info, so
//! cargo rebuilds this crate when they change. Other builds print the crate version alone.

use std::sync::OnceLock;

/// `0.1.0`, or for the dist build `0.1.0 (dist x86_64-unknown-linux-gnu, static glibc 2.36)`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut v = env!("CARGO_PKG_VERSION").to_string();
        if let Some(target) = option_env!("CGLEAK_DIST_TARGET") {
            // From the target feature, not the environment: the linkage cannot be misreported.
            let linkage = if cfg!(target_feature = "crt-static") { "static" } else { "dynamic" };
            let libc = option_env!("CGLEAK_DIST_LIBC").unwrap_or("glibc");
            v.push_str(&format!(" (dist {target}, {linkage} {libc})"));
        }
        v
    })
}

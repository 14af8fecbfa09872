//! What `cgleak --version` says about this build.
//!
//! `cargo xtask dist` (xtask/src/dist.rs) sets CGLEAK_DIST_TARGET and CGLEAK_DIST_LIBC
//! while it builds the single-file node binary; rustc records both in the dep-info, so
//! cargo rebuilds this crate when they change. build.rs records the commit and target.

use std::sync::OnceLock;

/// The git commit the binary was built from (12 hex digits), `unknown` outside a checkout.
pub const COMMIT: &str = env!("CGLEAK_GIT_COMMIT");
/// The target triple it was built for.
pub const TARGET: &str = env!("CGLEAK_TARGET");

/// `0.1.0 (commit 0123456789ab, x86_64-unknown-linux-gnu)`, and for the dist build
/// `0.1.0 (commit 0123456789ab, x86_64-unknown-linux-gnu, dist: static glibc 2.36)`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut v = format!("{} (commit {COMMIT}, {TARGET}", env!("CARGO_PKG_VERSION"));
        if option_env!("CGLEAK_DIST_TARGET").is_some() {
            // From the target feature, not the environment: the linkage cannot be misreported.
            let linkage = if cfg!(target_feature = "crt-static") { "static" } else { "dynamic" };
            let libc = option_env!("CGLEAK_DIST_LIBC").unwrap_or("glibc");
            v.push_str(&format!(", dist: {linkage} {libc}"));
        }
        v.push(')');
        v
    })
}

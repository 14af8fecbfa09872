//! Exit codes: a public contract (README, --help).

pub const OK: u8 = 0;
pub const RUNTIME: u8 = 1;
pub const USAGE: u8 = 2;
pub const AT_RISK_OR_LEAKING: u8 = 3;
pub const EXHAUSTED: u8 = 4;
pub const NOT_PERMITTED: u8 = 77;
/// Stopped by SIGINT or SIGTERM after cleaning up (the shell's 128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// An error that ends the command with a message and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: USAGE, message: message.into() }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure { code: RUNTIME, message: message.into() }
    }
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Failure { code: NOT_PERMITTED, message: message.into() }
    }
}

impl From<cgleak_readers::ReadError> for Failure {
    fn from(e: cgleak_readers::ReadError) -> Self {
        if e.is_permission() {
            Failure::not_permitted(format!("{e} (run as root, or give the host's files with --host-root)"))
        } else {
            Failure::runtime(e.to_string())
        }
    }
}

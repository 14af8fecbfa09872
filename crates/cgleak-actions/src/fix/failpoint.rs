//! Failpoints: places where a fixer can be made to die, for the crash-safety tests.
//!
//! `CGLEAK_FAILPOINT=before:N` fires once the journal holds the intent of step N but
//! before the step touches the host; `after:N` fires once the step is done on the host
//! but before the journal says so. `:kill` (the default) sends the process SIGKILL, so
//! nothing of it runs on (no Drop, no handler): a crash. `:stop` sends SIGSTOP, so a
//! test can change the host under a paused fixer and let it go on with SIGCONT.
//! Unset, nothing fires.
//!
//! Only builds with the `failpoints` feature read the variable (the tests' builds:
//! `cargo test` turns it on through the cgleak crate's dev-dependency, and
//! scripts/test-all.sh asks for it); a release build ignores it, and says nothing.


/// The environment variable read by [`Failpoints::from_env`].
pub const FAILPOINT_ENV: &str = "CGLEAK_FAILPOINT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Kill,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failpoints {
    at: Option<(Position, u32, Effect)>,
}

/// `CGLEAK_FAILPOINT` as given, when it is not a failpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{FAILPOINT_ENV}={0:?}: expected before:N or after:N, optionally with :kill or :stop (N a step number from 1)")]
pub struct BadFailpoint(pub String);

impl Failpoints {
    pub fn none() -> Failpoints {
        Failpoints::default()
    }

    /// From `$CGLEAK_FAILPOINT`; unset or empty: none.
    #[cfg(feature = "failpoints")]
    pub fn from_env() -> Result<Failpoints, BadFailpoint> {
        match std::env::var(FAILPOINT_ENV) {
            Ok(v) if !v.trim().is_empty() => Failpoints::parse(&v),
            _ => Ok(Failpoints::none()),
        }
    }

    /// Without the `failpoints` feature (a release build): none, whatever the environment says.
    #[cfg(not(feature = "failpoints"))]
    pub fn from_env() -> Result<Failpoints, BadFailpoint> {
        Ok(Failpoints::none())
    }

    pub fn parse(spec: &str) -> Result<Failpoints, BadFailpoint> {
        let bad = || BadFailpoint(spec.to_string());
        let mut parts = spec.trim().split(':');
        let position = match parts.next() {
            Some("before") => Position::Before,
            Some("after") => Position::After,
            _ => return Err(bad()),
        };
        let step: u32 = parts.next().and_then(|n| n.parse().ok()).filter(|n| *n >= 1).ok_or_else(bad)?;
        let effect = match parts.next() {
            None | Some("kill") => Effect::Kill,
            Some("stop") => Effect::Stop,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Failpoints { at: Some((position, step, effect)) })
    }

    /// Called at each failpoint: fires when it is the configured one.
    pub fn reached(&self, position: Position, step: u32) {
        let Some((p, s, effect)) = self.at else { return };
        if p != position || s != step {
            return;
        }
        let signal = match effect {
            Effect::Kill => rustix::process::Signal::KILL,
            Effect::Stop => rustix::process::Signal::STOP,
        };
        eprintln!("cgleak: failpoint {FAILPOINT_ENV}={} reached: {signal:?}", self.describe());
        let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
    }

    fn describe(&self) -> String {
        match self.at {
            Some((p, s, e)) => format!(
                "{}:{s}:{}",
                if p == Position::Before { "before" } else { "after" },
                if e == Effect::Kill { "kill" } else { "stop" }
            ),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(Failpoints::parse("before:3").unwrap().at, Some((Position::Before, 3, Effect::Kill)));
        assert_eq!(Failpoints::parse("after:12:stop").unwrap().at, Some((Position::After, 12, Effect::Stop)));
        for bad in ["", "during:1", "before:0", "before:x", "after:2:explode", "before:1:kill:again"] {
            let e = Failpoints::parse(bad).unwrap_err().to_string();
            assert!(e.contains("before:N or after:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn other_points_do_not_fire() {
        // A configured point elsewhere: reaching these must return (this test process lives on).
        let f = Failpoints::parse("after:9").unwrap();
        f.reached(Position::Before, 9);
        f.reached(Position::After, 8);
        Failpoints::none().reached(Position::After, 9);
    }
}

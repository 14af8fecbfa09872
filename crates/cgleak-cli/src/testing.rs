//! What the unit tests of the front end share: a fixture host's census, and promtool.

use cgleak_model::census::{take_census, Census};
use cgleak_readers::HostPaths;

/// The census of a fixture host, as `status` would take it there.
pub fn census_of(f: &cgleak_fixtures::Fixture) -> Census {
    take_census(&HostPaths::new(f.root())).unwrap_or_else(|e| panic!("census of {}: {e}", f.name))
}

/// `promtool check metrics` and reading samples, shared with the integration tests (one copy).
#[path = "../tests/common/prom.rs"]
pub mod prom;

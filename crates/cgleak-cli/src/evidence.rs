//! What `check` judges a node by beside its census, and a fix's judge too: the node's
//! facts, the forecast from the agent's history and the incidents of the logs' window.

use std::time::Duration;

use cgleak_model::history::HistoryFiles;
use cgleak_model::node_logs::recent_incidents;
use cgleak_model::verdict::NodeFacts;
use cgleak_readers::logs::journal::{JournalSource, Journalctl};
use cgleak_readers::HostPaths;

use crate::render::note;

/// The logs' window of `check --incidents-since` by default, which a fix's judge uses too,
/// so that `fix` and `check` come to the same decisions.
pub const DEFAULT_LOG_WINDOW: Duration = Duration::from_secs(3600);

/// The node's facts, its forecast (notes on stderr) and, unless `log_window` is under a
/// second, the incidents logged within it (sources that cannot be read are its notes).
pub fn node_facts(host: &HostPaths, history: &HistoryFiles, log_window: Duration) -> NodeFacts {
    let mut node = NodeFacts::read(host);
    node.forecast = history.stored_forecast(&mut note);
    if log_window.as_secs() > 0 {
        let journal = Journalctl::for_host(host);
        node.logs = recent_incidents(host, log_window.as_secs() as i64, journal.as_ref().map(|j| j as &dyn JournalSource));
    }
    node
}

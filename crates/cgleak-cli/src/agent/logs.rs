//! The agent's log followers: the node's logs from an hour back, then each incident as it is
//! logged (`cgleak_model::node_logs::follow_incidents`), each counted once in the metrics
//! and, when trusted, queued for the Kubernetes reporter.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use cgleak_model::incidents::Incident;
use cgleak_model::node_logs::{follow_incidents, SeenIncidents};
use cgleak_readers::HostPaths;

use super::shared::{lock, Shared};
use crate::metrics::IncidentCounts;
use crate::render::note;

/// How far back the logs are read when the agent starts.
const LOG_WINDOW_SECS: i64 = 3600;
/// New incidents waiting for the Kubernetes reporter.
const MAX_PENDING_INCIDENTS: usize = 100;

/// Start following (one detached thread per source), and say on stderr which sources are
/// there and which are watched for.
pub fn follow(host: &HostPaths, shared: &Arc<Mutex<Shared>>, stop: &Arc<AtomicBool>) {
    let seen = Mutex::new(SeenIncidents::default());
    let sh = Arc::clone(shared);
    let emit = Arc::new(move |i: Incident| {
        if !seen.lock().unwrap_or_else(|p| p.into_inner()).first_time(&i) {
            return;
        }
        let mut s = lock(&sh);
        s.incidents.get_or_insert_with(IncidentCounts::new).add(&i);
        // An untrusted line is counted apart and goes no further: no Event for a tenant's words.
        if i.trusted && s.pending_incidents.len() < MAX_PENDING_INCIDENTS {
            s.pending_incidents.push(i);
        }
    });
    let sources = follow_incidents(host, LOG_WINDOW_SECS, Arc::clone(stop), emit, Arc::new(note));
    let names = |present: bool| sources.iter().filter(|(_, p)| *p == present).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let (here, later) = (names(true), names(false));
    let here = if here.is_empty() { "none yet".to_string() } else { here };
    let later = if later.is_empty() { String::new() } else { format!(" (and {later} once they appear)") };
    eprintln!("cgleak: following logs: {here}{later}");
}

//! What the agent's threads share (the last census and its forecast, the incidents counted
//! and those waiting for the Kubernetes reporter, the reclaim's totals), and what its HTTP
//! endpoint serves from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgleak_model::census::Census;
use cgleak_model::dying::DyingSummary;
use cgleak_model::forecast::{Forecast, Sample};
use cgleak_model::incidents::Incident;

use super::http;
use crate::metrics::{self, IncidentCounts, MetricsInput, ReclaimTotals};

/// What the threads share; each holds the lock only to copy in or out.
#[derive(Default)]
pub struct Shared {
    pub census: Option<Census>,
    pub sample_duration: Option<Duration>,
    pub last_sample: Option<Instant>,
    pub last_error: Option<String>,
    pub forecast: Option<Forecast>,
    /// None with --no-logs: the family is left out.
    pub incidents: Option<IncidentCounts>,
    pub pending_incidents: Vec<Incident>,
    /// None without --reclaim-every: the cgleak_reclaim_* metrics are left out.
    pub reclaim: Option<ReclaimTotals>,
    /// The dying memcgs the last BPF walk named; None (the two families left out) without
    /// --dying-bpf or where it cannot run.
    pub dying: Option<DyingSummary>,
    /// The history's samples after the last census, for the `/` page.
    pub history: Vec<Sample>,
}

pub fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the epoch, now.
pub fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}


/// Sets the flag when dropped, on unwinding too.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the HTTP endpoint serves: the last census's metrics, and its freshness for /healthz.
pub struct AgentEndpoints {
    pub shared: Arc<Mutex<Shared>>,
    pub interval: Duration,
}

impl http::Endpoints for AgentEndpoints {
    fn metrics(&self) -> Option<String> {
        render_metrics(&self.shared)
    }

    fn page(&self) -> Option<String> {
        let s = lock(&self.shared);
        let census = s.census.as_ref()?;
        let m = &census.memcg;
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "not countable here".into());
        let figures = [
            ("kernel", census.kernel.release.clone()),
            ("live memcgs", m.live.to_string()),
            ("dying memcgs", opt(m.dying)),
            ("IDs in use", format!("{} ({})", opt(m.ids_in_use), m.ids_in_use_confidence.as_str())),
            ("headroom", opt(m.headroom)),
        ];
        Some(crate::render::history::agent_page(&figures, &s.history, s.forecast.as_ref()))
    }

    fn health(&self) -> Result<(), String> {
        let s = lock(&self.shared);
        // Healthy while the last census is no older than three intervals (and 10 s).
        let fresh = s.last_sample.is_some_and(|t| t.elapsed() <= (self.interval * 3).max(Duration::from_secs(10)));
        if fresh {
            Ok(())
        } else {
            Err(s.last_error.clone().unwrap_or_else(|| "no recent census".into()))
        }
    }
}

fn render_metrics(shared: &Mutex<Shared>) -> Option<String> {
    let s = lock(shared);
    let census = s.census.as_ref()?;
    Some(metrics::exposition_all(
        &MetricsInput { census, forecast: s.forecast.as_ref(), incidents: s.incidents.as_ref(), sample_duration: s.sample_duration },
        s.reclaim.as_ref(),
        s.dying.as_ref(),
    ))
}

//! `agent --kubernetes`: the reporter of the node condition, Events and taint
//! (`cgleak_kube`), on a Tokio runtime of its own, and its API errors on stderr.

use std::time::Duration;

use cgleak_kube::{KubeReporter, ReporterConfig, ReporterHandle};

use crate::exit::Failure;

/// The running reporter.
pub struct Kubernetes {
    handle: ReporterHandle,
    /// Runs the reporter's task: kept as long as the agent runs.
    _runtime: tokio::runtime::Runtime,
    last_error: Option<String>,
}

impl Kubernetes {
    /// Connect (a client configuration within 10 s) and start reporting.
    pub fn start(cfg: ReporterConfig) -> Result<Kubernetes, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cgleak-kube")
            .enable_all()
            .build()
            .map_err(|e| Failure::runtime(format!("kubernetes runtime: {e}")))?;
        let reporter = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), KubeReporter::connect(cfg)).await })
            .map_err(|_| Failure::runtime("--kubernetes: no client configuration within 10s".to_string()))?
            .map_err(|e| Failure::runtime(format!("--kubernetes: {e}")))?;
        let handle = {
            let _in = rt.enter();
            reporter.spawn()
        };
        Ok(Kubernetes { handle, _runtime: rt, last_error: None })
    }

    pub fn handle(&self) -> &ReporterHandle {
        &self.handle
    }

    /// Each new API error on stderr once, not every interval.
    pub fn tell_new_error(&mut self) {
        let err = self.handle.status().last_api_error;
        if err.is_some() && err != self.last_error {
            eprintln!("cgleak: kubernetes: {}", err.as_deref().unwrap_or_default());
        }
        self.last_error = err;
    }
}

//! Following the host's logs for as long as a daemon runs: each live source on a thread of
//! its own, read from the start of a window and then as lines are logged, started again
//! with a backoff when it ends or fails (journalctl exiting, a file not there yet, an
//! unreadable device), never holding up the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock;
use super::journal::{JournalSource, Journalctl};
use super::read::{read_source, ReadCtx, SinkMaker};
use super::sources::{live_sources, Source};
use crate::HostPaths;

/// Pause before a follower whose source ended or failed starts it again; doubled each
/// time up to [`FOLLOW_RETRY_MAX`], and back to this once the source ran a minute.
const FOLLOW_RETRY_MIN: Duration = Duration::from_secs(5);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(300);

/// Follow the host's live logs ([`live_sources`]), each on a detached thread, handing
/// every finding to `emit` as it is logged: from where the last `window_secs` start, then
/// what is appended (files across rotation, journald with `--follow`). Each restart's
/// first read may repeat findings seen before: the caller counts them once. `note` hears
/// each source's first error and when a source comes back. A source blocked in a read
/// never holds up the caller's exit. Returns each source's name and whether it is there
/// now (the others are watched for).
pub fn spawn_followers<M>(
    host: &HostPaths,
    window_secs: i64,
    stop: Arc<AtomicBool>,
    maker: Arc<M>,
    emit: Arc<dyn Fn(M::Found) + Send + Sync>,
    note: Arc<dyn Fn(String) + Send + Sync>,
) -> Vec<(String, bool)>
where
    M: SinkMaker + Send + 'static,
    M::Found: 'static,
{
    let journal = Journalctl::for_host(host).is_some();
    let mut names = Vec::new();
    for src in live_sources(host) {
        let name = src.name(host);
        names.push((name.clone(), src.present(host, journal)));
        let (host, stop, maker, emit, note) = (host.clone(), Arc::clone(&stop), Arc::clone(&maker), Arc::clone(&emit), Arc::clone(&note));
        std::thread::Builder::new()
            .name(format!("cgleak-log {name}"))
            .spawn(move || follow_source(&host, &src, &name, window_secs, &stop, &*maker, &*emit, &*note))
            .expect("spawning a log follower thread");
    }
    names
}

/// One follower: read `src` (following) until stopped; when it ends or fails, wait and
/// start again from the window (files: once they exist).
#[allow(clippy::too_many_arguments)]
fn follow_source<M: SinkMaker>(
    host: &HostPaths,
    src: &Source,
    name: &str,
    window_secs: i64,
    stop: &AtomicBool,
    maker: &M,
    emit: &dyn Fn(M::Found),
    note: &dyn Fn(String),
) {
    let journal = Journalctl::for_host(host);
    let mut backoff = FOLLOW_RETRY_MIN;
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let available = src.present(host, journal.is_some());
        let started = Instant::now();
        let error = if available {
            let since = Some(clock::now_epoch() - window_secs);
            let journal = journal.as_ref().map(|j| j as &dyn JournalSource);
            let ctx = ReadCtx { host, journal, since, follow: true, local_offset: clock::local_offset(), stop };
            let rep = read_source(src, &ctx, maker, &mut |f| emit(f));
            Some(rep.error.unwrap_or_else(|| format!("{name}: ended")))
        } else {
            None
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            backoff = FOLLOW_RETRY_MIN;
        }
        if let Some(e) = &error {
            if last_error.as_ref() != Some(e) {
                note(format!("log source {e}; trying again in {}s", backoff.as_secs()));
            }
        }
        last_error = error;
        let until = Instant::now() + backoff;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if available {
            backoff = (backoff * 2).min(FOLLOW_RETRY_MAX);
        }
    }
}

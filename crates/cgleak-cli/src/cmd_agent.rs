//! `cgleak agent`: the census every `--interval`, a bounded history for the forecast, log
//! incidents, a Prometheus endpoint, and (with `--kubernetes`) the node condition, Events and
//! taint. Each source runs on its own thread: a slow log or API server never delays sampling
//! or the metrics.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use cgleak_kube::{KubeReporter, ReportSummary, ReporterConfig, ReporterHandle, TaintPolicy, DEFAULT_TAINT_KEY};
use cgleak_model::census::{census_with_cache, Census, CensusInputs};
use cgleak_readers::cgroupfs::WalkCache;
use cgleak_model::forecast::{forecast, Forecast, History, Sample, DEFAULT_HISTORY_CAPACITY};
use cgleak_model::incidents::Incident;
use cgleak_model::verdict::{check, NodeFacts};
use cgleak_readers::HostPaths;

use crate::cmd_lab::parse_duration;
use crate::cmd_logs::spawn_log_followers;
use crate::exit::{Failure, OK};
use crate::metrics::{self, IncidentCounts, MetricsInput};
use crate::GlobalArgs;

/// The history file in `--state-dir`, one JSON sample a line.
pub const HISTORY_FILE: &str = "agent-history.jsonl";
/// Distinct (kind, component, errno) series kept; later ones are not counted.
const MAX_INCIDENT_SERIES: usize = 256;
/// Incidents remembered to count each once across restarts of a log source.
const MAX_SEEN_INCIDENTS: usize = 8192;
/// How far back the logs are read when the agent starts.
const LOG_WINDOW_SECS: i64 = 3600;
/// New incidents waiting for the Kubernetes reporter.
const MAX_PENDING_INCIDENTS: usize = 100;
/// HTTP connections served at once; more are refused with 503.
const MAX_CONNECTIONS: usize = 8;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_BYTES: usize = 8192;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Time between two censuses (90s, 10m, 500ms, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Address of the HTTP endpoint (/metrics, /healthz).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9977")]
    pub listen: SocketAddr,
    /// Where the history of IDs in use is kept (agent-history.jsonl), for the forecast and
    /// for `status`/`check`. Missing or read-only: the history is kept in memory only.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cgleak")]
    pub state_dir: PathBuf,
    /// Samples kept in the history (oldest dropped first).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY_CAPACITY, hide = true)]
    pub history_capacity: usize,
    /// Do not read the node's logs (no cgleak_log_incidents_total).
    #[arg(long)]
    pub no_logs: bool,
    /// Report to the Kubernetes API: the MemcgExhaustion node condition and Events.
    #[arg(long)]
    pub kubernetes: bool,
    /// This node's name [default: $NODE_NAME].
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    pub node_name: Option<String>,
    /// With --kubernetes: taint the node NoSchedule when it runs out of memcg IDs.
    #[arg(long, requires = "kubernetes")]
    pub taint: bool,
    /// The taint's key.
    #[arg(long, value_name = "KEY", default_value = DEFAULT_TAINT_KEY, requires = "taint")]
    pub taint_key: String,
    /// Taint as soon as the headroom falls below N memcgs (not only when exhausted).
    #[arg(long, value_name = "N", requires = "taint")]
    pub taint_headroom_below: Option<u64>,
}

/// What the threads share; each holds the lock only to copy in or out.
#[derive(Default)]
struct Shared {
    census: Option<Census>,
    sample_duration: Option<Duration>,
    last_sample: Option<Instant>,
    last_error: Option<String>,
    forecast: Option<Forecast>,
    /// None with --no-logs: the family is left out.
    incidents: Option<IncidentCounts>,
    pending_incidents: Vec<Incident>,
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The forecast from the agent's history in `state_dir`, for `status` and `check`; None when
/// there is no history file (no agent ran there) or it cannot be read.
pub fn stored_forecast(state_dir: &Path) -> Option<Forecast> {
    let text = fs::read_to_string(state_dir.join(HISTORY_FILE)).ok()?;
    let (history, _) = History::from_json_lines(&text, DEFAULT_HISTORY_CAPACITY.max(text.lines().count()));
    Some(forecast(&history, now_unix()))
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn run(g: &GlobalArgs, a: &AgentArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| Failure::runtime(format!("signal handler: {e}")))?;
    }
    let listener = TcpListener::bind(a.listen).map_err(|e| Failure::runtime(format!("--listen {}: {e}", a.listen)))?;
    listener.set_nonblocking(true).map_err(|e| Failure::runtime(format!("--listen {}: {e}", a.listen)))?;

    let kube = if a.kubernetes { Some(start_kubernetes(a)?) } else { None };

    let mut history = HistoryStore::open(&a.state_dir, a.history_capacity);
    let shared = Arc::new(Mutex::new(Shared { incidents: (!a.no_logs).then(IncidentCounts::new), ..Shared::default() }));
    eprintln!("cgleak: agent on http://{}/metrics, a census every {:?}", a.listen, a.interval);

    if !a.no_logs {
        start_log_followers(&host, &shared, &stop);
    }
    std::thread::scope(|s| {
        let sh = &shared;
        let st = &stop;
        let interval = a.interval;
        s.spawn(move || serve(&listener, sh, st, interval));
        // Versions, boot parameters and the kubelet's driver change only with a restart of theirs:
        // read once.
        let node = kube.is_some().then(|| NodeFacts::read(&host));
        let mut next = Instant::now();
        let mut inputs = SteadyInputs::default();
        let mut kube_error: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                // A census slower than the interval skips the ticks it missed: no burst after.
                next = (next + interval).max(now + interval / 2);
                sample(&host, &mut inputs, &mut history, sh, kube.as_ref().map(|(h, _)| h), node.as_ref());
                if let Some((k, _)) = &kube {
                    // Each new API error once, not every interval.
                    let err = k.status().last_error;
                    if err.is_some() && err != kube_error {
                        eprintln!("cgleak: kubernetes: {}", err.as_deref().unwrap_or_default());
                    }
                    kube_error = err;
                }
            }
            std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        }
    });
    eprintln!("cgleak: agent stopped");
    Ok(OK)
}

/// What one census leaves for the next: the inputs that cannot change while the host runs
/// (mounts, kernel era), read once, and the walk's memory of each directory's
/// subdirectories, so unchanged directories are not listed again. A failed census drops
/// both, so the next sample reads everything again.
#[derive(Default)]
struct SteadyInputs {
    inputs: Option<CensusInputs>,
    walk: WalkCache,
}

impl SteadyInputs {
    fn census(&mut self, host: &HostPaths) -> Result<Census, cgleak_model::census::CensusError> {
        let inputs = match self.inputs.take() {
            Some(i) => i,
            None => CensusInputs::read(host)?,
        };
        let census = census_with_cache(host, inputs.clone(), Some(&mut self.walk))?;
        self.inputs = Some(inputs);
        Ok(census)
    }
}

fn sample(
    host: &HostPaths,
    inputs: &mut SteadyInputs,
    history: &mut HistoryStore,
    shared: &Mutex<Shared>,
    kube: Option<&ReporterHandle>,
    node: Option<&NodeFacts>,
) {
    let started = Instant::now();
    let census = match inputs.census(host) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cgleak: census failed: {e}");
            lock(shared).last_error = Some(e.to_string());
            return;
        }
    };
    let took = started.elapsed();
    let now = now_unix();
    if let Some(ids) = census.memcg.ids_in_use {
        history.push(Sample { at_unix_secs: now, ids_in_use: ids, id_limit: census.memcg.id_limit });
    }
    let fc = forecast(&history.history, now);
    let new_incidents = std::mem::take(&mut lock(shared).pending_incidents);
    if let (Some(k), Some(n)) = (kube, node) {
        let mut facts = n.clone();
        facts.forecast = Some(fc.clone());
        let report = check(census.clone(), facts);
        k.submit(ReportSummary::from_report(&report, new_incidents));
    }
    let mut s = lock(shared);
    s.census = Some(census);
    s.sample_duration = Some(took);
    s.last_sample = Some(Instant::now());
    s.last_error = None;
    s.forecast = Some(fc);
}

/// The history in memory, mirrored to `<state-dir>/agent-history.jsonl` when writable.
struct HistoryStore {
    history: History,
    file: Option<PathBuf>,
    lines_in_file: usize,
}

impl HistoryStore {
    fn open(dir: &Path, capacity: usize) -> HistoryStore {
        let path = dir.join(HISTORY_FILE);
        let (history, lines) = match fs::read_to_string(&path) {
            Ok(text) => {
                let (h, skipped) = History::from_json_lines(&text, capacity);
                if skipped > 0 {
                    eprintln!("cgleak: note: {}: {skipped} unreadable lines skipped", path.display());
                }
                (h, text.lines().count())
            }
            Err(_) => (History::new(capacity), 0),
        };
        let mut store = HistoryStore { history, file: Some(path.clone()), lines_in_file: lines };
        // Start from a trimmed file; a failure here means the directory is not usable.
        if let Err(e) = fs::create_dir_all(dir).map_err(|e| e.to_string()).and_then(|_| store.rewrite()) {
            eprintln!("cgleak: note: history kept in memory only ({}: {e})", path.display());
            store.file = None;
        }
        store
    }

    fn rewrite(&mut self) -> Result<(), String> {
        let Some(path) = &self.file else { return Ok(()) };
        metrics::write_textfile(path, &self.history.to_json_lines())?;
        self.lines_in_file = self.history.len();
        Ok(())
    }

    fn push(&mut self, s: Sample) {
        self.history.push(s);
        let Some(path) = self.file.clone() else { return };
        // Appending is cheap; the file is rewritten to the history's size when it has doubled.
        let r = if self.lines_in_file + 1 > 2 * self.history.capacity() {
            self.rewrite()
        } else {
            let line = serde_json::to_string(&s).expect("a sample always serializes") + "\n";
            OpenOptions::new().append(true).create(true).open(&path).and_then(|mut f| f.write_all(line.as_bytes())).map_err(|e| e.to_string()).map(|_| {
                self.lines_in_file += 1;
            })
        };
        if let Err(e) = r {
            eprintln!("cgleak: note: history kept in memory only from now ({}: {e})", path.display());
            self.file = None;
        }
    }
}

/// Incidents seen, remembered so that each is counted once when a restarted source
/// repeats what it read before; bounded (oldest forgotten first).
#[derive(Default)]
struct SeenIncidents {
    keys: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl SeenIncidents {
    /// True the first time `i` is offered.
    fn first_time(&mut self, i: &Incident) -> bool {
        let key = (i.source.clone(), i.raw.clone());
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > MAX_SEEN_INCIDENTS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

/// Follow the node's logs (the last hour at start, then each incident as it is logged):
/// one detached thread per source (`cmd_logs::spawn_log_followers`), each new incident
/// counted in the metrics and queued for the Kubernetes reporter.
fn start_log_followers(host: &HostPaths, shared: &Arc<Mutex<Shared>>, stop: &Arc<AtomicBool>) {
    let seen = Mutex::new(SeenIncidents::default());
    let sh = Arc::clone(shared);
    let emit = Arc::new(move |i: Incident| {
        if !seen.lock().unwrap_or_else(|p| p.into_inner()).first_time(&i) {
            return;
        }
        let mut s = lock(&sh);
        let counts = s.incidents.get_or_insert_with(IncidentCounts::new);
        for (k, n) in metrics::incident_counts(std::slice::from_ref(&i)) {
            if counts.len() < MAX_INCIDENT_SERIES || counts.contains_key(&k) {
                *counts.entry(k).or_default() += n;
            }
        }
        if s.pending_incidents.len() < MAX_PENDING_INCIDENTS {
            s.pending_incidents.push(i);
        }
    });
    let note = Arc::new(|n: String| eprintln!("cgleak: note: {n}"));
    let sources = spawn_log_followers(host, LOG_WINDOW_SECS, Arc::clone(stop), emit, note);
    let names = |present: bool| sources.iter().filter(|(_, p)| *p == present).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let (here, later) = (names(true), names(false));
    let here = if here.is_empty() { "none yet".to_string() } else { here };
    let later = if later.is_empty() { String::new() } else { format!(" (and {later} once they appear)") };
    eprintln!("cgleak: following logs: {here}{later}");
}

fn start_kubernetes(a: &AgentArgs) -> Result<(ReporterHandle, tokio::runtime::Runtime), Failure> {
    let node = a
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .ok_or_else(|| Failure::usage("--kubernetes needs the node's name: --node-name or $NODE_NAME"))?;
    let mut cfg = ReporterConfig::new(node);
    if a.taint {
        cfg.taint = Some(TaintPolicy::new(&a.taint_key, a.taint_headroom_below).map_err(|e| Failure::usage(format!("--taint-key: {e}")))?);
    }
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
    Ok((handle, rt))
}

/// Accept connections until `stop`; each is served on a thread of its own, at most
/// MAX_CONNECTIONS at once.
fn serve(listener: &TcpListener, shared: &Mutex<Shared>, stop: &AtomicBool, interval: Duration) {
    let busy = AtomicUsize::new(0);
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(HTTP_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(HTTP_TIMEOUT));
                    if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        busy.fetch_sub(1, Ordering::SeqCst);
                        let _ = respond(&mut conn, "503 Service Unavailable", "text/plain", "busy\n");
                        continue;
                    }
                    let busy = &busy;
                    s.spawn(move || {
                        handle(conn, shared, interval);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(25)),
                Err(e) => {
                    eprintln!("cgleak: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
}

fn respond(conn: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// One request per connection: GET /metrics, GET /healthz, else 404.
fn handle(mut conn: TcpStream, shared: &Mutex<Shared>, interval: Duration) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_BYTES {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let _ = match (method, path) {
        ("GET", "/metrics") => match render_metrics(shared) {
            Some(body) => respond(&mut conn, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body),
            None => respond(&mut conn, "503 Service Unavailable", "text/plain", "no census yet\n"),
        },
        ("GET", "/healthz") => {
            let s = lock(shared);
            // Healthy while the last census is no older than three intervals (and 10 s).
            let fresh = s.last_sample.is_some_and(|t| t.elapsed() <= (interval * 3).max(Duration::from_secs(10)));
            let why = s.last_error.clone().unwrap_or_else(|| "no recent census".into());
            drop(s);
            if fresh {
                respond(&mut conn, "200 OK", "text/plain", "ok\n")
            } else {
                respond(&mut conn, "503 Service Unavailable", "text/plain", &format!("{why}\n"))
            }
        }
        ("GET", _) => respond(&mut conn, "404 Not Found", "text/plain", "not found: try /metrics or /healthz\n"),
        _ => respond(&mut conn, "405 Method Not Allowed", "text/plain", "GET only\n"),
    };
}

fn render_metrics(shared: &Mutex<Shared>) -> Option<String> {
    let s = lock(shared);
    let census = s.census.as_ref()?;
    Some(metrics::exposition(&MetricsInput {
        census,
        forecast: s.forecast.as_ref(),
        incidents: s.incidents.as_ref(),
        sample_duration: s.sample_duration,
    }))
}

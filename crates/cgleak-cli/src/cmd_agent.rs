//! `cgleak agent`: the census every `--interval`, a bounded history for the forecast, log
//! incidents, a Prometheus endpoint, (with `--kubernetes`) the node condition, Events and
//! taint, and (with `--reclaim-every`) the journaled reclaim of `cgleak fix reclaim`. Each
//! source runs on its own thread: a slow log, API server or reclaim never delays sampling or
//! the metrics. This file is its front end (flags, wiring); the parts are in `agent/`.

use std::fs;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use cgleak_actions::fix::reclaim as fix_reclaim;
use cgleak_kube::{ReporterConfig, TaintPolicy, DEFAULT_TAINT_KEY};
use cgleak_model::forecast::DEFAULT_HISTORY_CAPACITY;
use cgleak_model::history::HistoryStore;
use cgleak_model::memcg_memory::MemcgMemory;
use cgleak_model::verdict::NodeFacts;
use cgleak_readers::duration::human_duration;

use crate::agent::dying::DyingNamer;
use crate::agent::reclaim::{self, AgentReclaim, ReclaimSlab};
use crate::agent::reporter::Kubernetes;
use crate::agent::sampler::Sampler;
use crate::agent::shared::{AgentEndpoints, Shared, StopOnDrop};
use crate::agent::{http, logs};
use crate::args::{self, agent_history, GlobalArgs};
use crate::exit::{Failure, OK};
use crate::metrics::IncidentCounts;
use crate::render::note;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Time between two censuses: a duration (90s, 10m, 500ms, 1d, or seconds; see
    /// Durations in the README).
    #[arg(long, value_name = "DURATION", value_parser = args::duration, default_value = "30s")]
    pub interval: Duration,
    /// Address of the HTTP endpoint (/metrics, /healthz, /livez): IP:PORT; an IPv6 address
    /// with or without brackets (`$(POD_IP):9977` in a pod spec).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9977", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask `Authorization: Bearer <token>` of every request but /healthz and /livez (the
    /// kubelet's probes); the file holds the token on one line.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// HTTP connections open at once; at the limit the least recently active is closed.
    #[arg(long, value_name = "N", default_value_t = http::Limits::default().max_connections as u16, value_parser = clap::value_parser!(u16).range(1..), hide = true)]
    pub max_connections: u16,
    /// Where the history of IDs in use is kept (agent-history.jsonl), for the forecast and
    /// for `status`/`check`, and the reclaim's journal, lock and stamp (reclaim/); missing or
    /// read-only: the history is kept in memory only [default: <host-root>/var/lib/cgleak/agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Samples kept in the history (oldest dropped first).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY_CAPACITY, hide = true)]
    pub history_capacity: usize,
    /// Do not read the node's logs (no cgleak_log_incidents_total).
    #[arg(long)]
    pub no_logs: bool,
    /// Do not remember memcgs (<state-dir>/memcg-memory.jsonl: each memcg's inode, path and
    /// pod, when first and last seen and when its directory vanished, for `cgleak dying`).
    #[arg(long)]
    pub no_memcg_memory: bool,
    /// Name the dying memcgs with the BPF walk and export cgleak_memcg_dying_pinned_bytes and
    /// cgleak_memcg_dying_by_parent. The walk runs as a child (`cgleak status --dying`) when
    /// the dying count changed and at least every --dying-every samples; it needs BTF (6.1+)
    /// and CAP_BPF with CAP_PERFMON, and costs a census and the walk each time (on 30,000
    /// memcgs a child of about 47 MB peak RSS: README, Performance), so it is asked for.
    #[arg(long)]
    pub dying_bpf: bool,
    /// With --dying-bpf: samples between two BPF walks at most, when the dying count does
    /// not change.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), requires = "dying_bpf")]
    pub dying_every: u32,
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
    /// Every DURATION (1h at least; see Durations in the README) release dying memcgs as
    /// `cgleak fix reclaim --apply` does (v1: sync and drop_caches, host-wide; v2:
    /// memory.reclaim), rate-limited and journaled in <state-dir>/reclaim/. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_reclaim_every)]
    pub reclaim_every: Option<Duration>,
    /// v1: whether those runs also drop reclaimable slab (drop_caches 2); auto: where slab
    /// pins dying memcgs (kernels before 5.9 with kmem accounting on, as 3.10 and RHEL 7 kmem leaks).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ReclaimSlab::Auto, requires = "reclaim_every")]
    pub reclaim_slab: ReclaimSlab,
}

/// `--reclaim-every`: a duration no shorter than the reclaim's rate limit by default: the
/// agent must not drop the host's caches more often than `cgleak fix reclaim` would.
fn parse_reclaim_every(s: &str) -> Result<Duration, String> {
    let d = args::duration(s)?;
    let min = fix_reclaim::DEFAULT_MIN_INTERVAL;
    if d < min {
        let m = human_duration(min);
        return Err(format!(
            "{s:?} is shorter than {m}: drop_caches is host-wide, and the reclaim's rate limit (`cgleak fix reclaim --min-interval`) allows one drop per {m}"
        ));
    }
    Ok(d)
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT`, or an IPv6 address without brackets followed by
/// `:PORT`, which is what `$(POD_IP):9977` becomes on an IPv6 cluster.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare_v6 = s.rsplit_once(':').and_then(|(ip, port)| Some(SocketAddr::new(IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?), port.parse().ok()?)));
    if let Some(a) = bare_v6 {
        return Ok(a);
    }
    if s.contains("$(") {
        return Err(format!(
            "{s:?} is not an address: Kubernetes expands $(VAR) in args only when the container's env defines VAR (the DaemonSet sets POD_IP from status.podIP)"
        ));
    }
    Err(format!("{s:?} is not IP:PORT (e.g. 127.0.0.1:9977, 10.0.0.7:9977, [fd00::7]:9977)"))
}

/// The endpoint's TLS setup and token from `--tls-cert`, `--tls-key` and
/// `--auth-token-file`: a file that cannot be read or parsed is a runtime error (exit 1)
/// naming the flag and the file.
fn endpoint_access(a: &AgentArgs) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<http::BearerToken>), Failure> {
    let read = |flag: &str, path: &Path| fs::read(path).map_err(|e| Failure::runtime(format!("{flag} {}: {e}", path.display())));
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let config = http::tls_config(&read("--tls-cert", cert)?, &read("--tls-key", key)?).map_err(|(file, why)| {
                Failure::runtime(match file {
                    http::TlsFile::Cert => format!("--tls-cert {}: {why}", cert.display()),
                    http::TlsFile::Key => format!("--tls-key {}: {why}", key.display()),
                    http::TlsFile::Pair => format!("--tls-key {} and --tls-cert {}: {why}", key.display(), cert.display()),
                })
            })?;
            Some(config)
        }
        // clap's `requires` keeps one without the other out.
        _ => None,
    };
    let token = match &a.auth_token_file {
        Some(path) => Some(
            http::BearerToken::from_file_contents(&read("--auth-token-file", path)?)
                .map_err(|why| Failure::runtime(format!("--auth-token-file {}: {why}", path.display())))?,
        ),
        None => None,
    };
    Ok((tls, token))
}

pub fn run(g: &GlobalArgs, a: &AgentArgs) -> Result<u8, Failure> {
    let host = g.host()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| Failure::runtime(format!("signal handler: {e}")))?;
    }
    let (tls, token) = endpoint_access(a)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind(a.listen).map_err(|e| Failure::runtime(format!("--listen {}: {e}", a.listen)))?;

    let history = agent_history(&host, a.state_dir.as_deref());
    let reclaimer = a.reclaim_every.map(|every| AgentReclaim::prepare(&host, &history.dir, a.reclaim_slab, every)).transpose()?;
    let mut kube = if a.kubernetes { Some(Kubernetes::start(reporter_config(a)?)?) } else { None };

    let store = HistoryStore::open(&history, a.history_capacity, &mut note);
    let memory = (!a.no_memcg_memory).then(|| MemcgMemory::open(&history.dir, boot_id(&host), &mut note));
    let reclaim_totals = reclaimer.as_ref().map(AgentReclaim::totals);
    // This binary, as the kernel knows it (a path that still works after an upgrade replaced
    // the file on disk is /proc/self/exe).
    let namer = a.dying_bpf.then(|| DyingNamer::new(PathBuf::from("/proc/self/exe"), g.host_root.clone(), a.dying_every));
    let shared = Arc::new(Mutex::new(Shared { incidents: (!a.no_logs).then(IncidentCounts::new), reclaim: reclaim_totals, ..Shared::default() }));
    let limits = http::Limits { max_connections: a.max_connections.into(), ..http::Limits::default() };
    let endpoint = http::Endpoint::new(Arc::new(AgentEndpoints { shared: Arc::clone(&shared), interval: a.interval }), token, limits);
    let server = http::Server::new(listener, endpoint, tls).map_err(|e| Failure::runtime(format!("--listen {}: {e}", a.listen)))?;
    let auth = if a.auth_token_file.is_some() { " (bearer token required)" } else { "" };
    eprintln!("cgleak: agent on {scheme}://{}/metrics{auth}, a census every {:?}", a.listen, a.interval);

    if !a.no_logs {
        logs::follow(&host, &shared, &stop);
    }
    let reclaim_thread = reclaimer.map(|r| r.start(&host, &shared, &stop)).transpose()?;
    std::thread::scope(|s| {
        let sh = &shared;
        let st = &stop;
        let interval = a.interval;
        s.spawn(move || server.run(st));
        // A panic in the sampling below must end the process (the scope waits for the server
        // until `stop`): else /livez would keep a dead agent alive.
        let _stop_server = StopOnDrop(st);
        // Versions, boot parameters and the kubelet's driver change only with a restart of theirs:
        // read once.
        let mut sampler = Sampler::new(store, kube.is_some().then(|| NodeFacts::read(&host)));
        if let Some(m) = memory {
            sampler = sampler.with_memory(m);
        }
        if let Some(n) = namer {
            sampler = sampler.with_namer(n);
        }
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                // A census slower than the interval skips the ticks it missed: no burst after.
                next = (next + interval).max(now + interval / 2);
                sampler.sample(&host, sh, kube.as_ref().map(Kubernetes::handle));
                if let Some(k) = &mut kube {
                    k.tell_new_error();
                }
            }
            std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        }
    });
    if let Some(t) = reclaim_thread {
        reclaim::wait_for(t);
    }
    eprintln!("cgleak: agent stopped");
    Ok(OK)
}

/// This boot's id (/proc/sys/kernel/random/boot_id, the same in every namespace): the memory
/// of memcgs holds one boot's. None, with a note, when unreadable: the memory then starts afresh.
fn boot_id(host: &cgleak_readers::HostPaths) -> Option<String> {
    match host.read("/proc/sys/kernel/random/boot_id", 4096) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            note(format!("the boot id is not known ({e}): the memory of memcgs starts afresh"));
            None
        }
    }
}

/// The reporter's configuration from `--node-name` (else `$NODE_NAME`) and the taint's flags.
fn reporter_config(a: &AgentArgs) -> Result<ReporterConfig, Failure> {
    let node = a
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .ok_or_else(|| Failure::usage("--kubernetes needs the node's name: --node-name or $NODE_NAME"))?;
    let mut cfg = ReporterConfig::new(node);
    if a.taint {
        cfg.taint = Some(TaintPolicy::new(&a.taint_key, a.taint_headroom_below).map_err(|e| Failure::usage(format!("--taint-key: {e}")))?);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_every_is_no_shorter_than_the_reclaim_rate_limit() {
        assert_eq!(parse_reclaim_every("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_reclaim_every("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_reclaim_every("3600"), Ok(Duration::from_secs(3600)));
        let e = parse_reclaim_every("59m59s").unwrap_err();
        assert!(e.contains("shorter than 1h") && e.contains("--min-interval"), "{e}");
        assert!(parse_reclaim_every("10m").is_err() && parse_reclaim_every("0").is_err());
        // The grammar is --interval's.
        assert_eq!(parse_reclaim_every("soon").unwrap_err(), args::duration("soon").unwrap_err());
        assert_eq!(parse_reclaim_every("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn listen_takes_ip_port_and_bare_ipv6() {
        let ok = |s: &str| parse_listen(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string();
        assert_eq!(ok("127.0.0.1:9977"), "127.0.0.1:9977");
        assert_eq!(ok("[fd00::7]:9977"), "[fd00::7]:9977");
        // `$(POD_IP):9977` on an IPv6 cluster; the last group is the port.
        assert_eq!(ok("fd00::7:9977"), "[fd00::7]:9977");
        assert_eq!(ok("2001:db8::1:0:9977"), "[2001:db8::1:0]:9977");
        assert_eq!(ok(":::9977"), "[::]:9977");
        for bad in ["localhost:9977", "9977", "10.0.0.1", "10.0.0.1:99999", "fd00::7", "[fd00::7]", ""] {
            assert!(parse_listen(bad).unwrap_err().contains("is not IP:PORT"), "{bad}");
        }
        assert!(parse_listen("$(POD_IP):9977").unwrap_err().contains("POD_IP from status.podIP"));
    }

    /// The agent's flags as clap parses them (`t` standing for the program).
    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct T {
            #[command(flatten)]
            a: AgentArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.a)
    }

    #[test]
    fn interval_takes_every_duration_of_the_grammar() {
        for (text, d) in [("30s", 30), ("1m", 60), ("90", 90), ("1d", 86_400), ("1h30m", 5400)] {
            assert_eq!(parse(&["--interval", text]).unwrap().interval, Duration::from_secs(d), "{text}");
        }
        assert_eq!(parse(&[]).unwrap().interval, Duration::from_secs(30));
        assert!(parse(&["--interval", "0"]).unwrap_err().to_string().contains("more than 0"));
    }

    #[test]
    fn reclaim_slab_flag_needs_reclaim_every() {
        let a = parse(&["--reclaim-every", "2h", "--reclaim-slab", "never"]).unwrap();
        assert_eq!((a.reclaim_every, a.reclaim_slab), (Some(Duration::from_secs(7200)), ReclaimSlab::Never));
        let a = parse(&[]).unwrap();
        assert_eq!((a.reclaim_every, a.reclaim_slab), (None, ReclaimSlab::Auto));
        let e = parse(&["--reclaim-slab", "always"]).unwrap_err();
        assert!(e.to_string().contains("--reclaim-every"), "{e}");
        let e = parse(&["--reclaim-every", "30m"]).unwrap_err();
        assert!(e.to_string().contains("--reclaim-every") && e.to_string().contains("shorter than 1h"), "{e}");
    }
}

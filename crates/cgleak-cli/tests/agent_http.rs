//! The agent's HTTP endpoint under slow and hostile clients, over loopback: 64 slow sockets
//! (silent, or a byte a second) while /metrics and /healthz keep answering within a second;
//! the connection limit displacing the least recently active; a head that never ends cut at
//! its deadline; oversized heads refused; keep-alive limits; GET/HEAD only; the bearer token;
//! TLS with a self-signed certificate made here (rcgen), read by a rustls client; bad files
//! and addresses named with their flag; /healthz following the census while /livez follows
//! the process. promtool checks what is served (Debian's `prometheus` package).

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::agent::{free_port, stop, wait_for, Agent};
use common::fixture::Fixture;
use common::prom::assert_promtool_accepts;

/// The agent's deadline for a request head (and a TLS handshake), `Limits::head_timeout`.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// What "answers quickly" means here, with 64 slow clients and two cores.
const QUICK: Duration = Duration::from_secs(1);

fn agent_command(f: &Fixture, state: &Path, listen: &str, extra: &[&str]) -> Command {
    common::agent::agent_command(f.root(), state, "1s", listen, &[&["--no-logs"], extra].concat())
}

/// An agent on 127.0.0.1, serving a census (waited for: /livez, then /healthz 200).
fn start_agent(f: &Fixture, extra: &[&str]) -> Agent {
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let a = Agent::spawn(&mut agent_command(f, state.path(), &format!("127.0.0.1:{port}"), extra), port).keeping(state);
    wait_for("/healthz 200", Duration::from_secs(30), || request(a.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").filter(|r| r.code == 200));
    a
}

#[derive(Debug)]
struct Reply {
    code: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one answer from the front of `buf`; None until it is complete. The body is read by
/// Content-Length (none after a HEAD).
fn parse_reply(buf: &[u8], head_request: bool) -> Option<(Reply, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let len: usize = if head_request { 0 } else { headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap()) };
    (buf.len() >= end + len).then(|| (Reply { code, headers, body: buf[end..end + len].to_vec() }, end + len))
}

/// Everything the server sends until it closes (or 10 s pass).
fn read_all(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // rustls: the peer closed without close_notify; everything before it counts.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof || e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Sends `raw` on a new connection and reads the answer until the server closes.
fn request(port: u16, raw: &str) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let buf = read_all(&mut s);
    parse_reply(&buf, raw.starts_with("HEAD ")).map(|(r, _)| r)
}

fn get(port: u16, path: &str, extra_headers: &str) -> Reply {
    request(port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Connection: close\r\n\r\n"))
        .unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// Waits until the server closes `s`, returning when (None: still open after `limit`).
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let until = Instant::now() + limit;
    let mut chunk = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
}

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A connection to 127.0.0.1:`port` from the address `from` (any of 127.0.0.0/8 is this host).
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the TcpStream at once; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let (src, dst) = (sockaddr(from, 0), sockaddr(Ipv4Addr::LOCALHOST, port));
        if libc::bind(fd, &src as *const _ as *const libc::sockaddr, len) != 0 || libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// Slow clients from the address `from`, each on a thread of its own until `done`: a silent
/// one connects and sends nothing; a dribbling one sends a request line and then a header one
/// byte a second, so that a timeout per read would never fire. When the agent closes one, it
/// connects again at once and the time the connection lasted is recorded.
fn slow_clients(port: u16, from: Ipv4Addr, n: usize, done: &Arc<AtomicBool>, lifetimes: &Arc<Mutex<Vec<(bool, Duration)>>>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let (done, lifetimes) = (Arc::clone(done), Arc::clone(lifetimes));
            std::thread::spawn(move || {
                let dribble = i % 2 == 1;
                while !done.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect_from(from, port) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let t0 = Instant::now();
                    s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
                    if dribble {
                        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
                    }
                    let mut last_byte = Instant::now();
                    let mut buf = [0u8; 256];
                    let closed = loop {
                        if done.load(Ordering::Relaxed) {
                            break false;
                        }
                        if dribble && last_byte.elapsed() >= Duration::from_secs(1) {
                            if s.write_all(b"a").is_err() {
                                break true;
                            }
                            last_byte = Instant::now();
                        }
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                            Err(_) => break true,
                        }
                    };
                    if closed {
                        lifetimes.lock().unwrap().push((dribble, t0.elapsed()));
                    }
                }
            })
        })
        .collect()
}

/// GETs /metrics and /healthz on fresh connections every 100 ms for `for_how_long`; each must
/// be 200 (metrics in the Prometheus format) and come within QUICK. Returns the slowest.
fn probe_quickly(port: u16, for_how_long: Duration) -> (Duration, usize) {
    let start = Instant::now();
    let (mut slowest, mut n) = (Duration::ZERO, 0);
    while start.elapsed() < for_how_long {
        for path in ["/metrics", "/healthz"] {
            let t = Instant::now();
            let r = get(port, path, "");
            let took = t.elapsed();
            assert_eq!(r.code, 200, "{path} after {:?}: {}", start.elapsed(), r.text());
            if path == "/metrics" {
                assert_eq!(r.header("content-type"), Some(METRICS_TYPE));
                assert!(r.text().contains("cgleak_memcg_live "), "{}", r.text());
            }
            assert!(took < QUICK, "{path} took {took:?} with slow clients connected");
            slowest = slowest.max(took);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (slowest, n)
}

#[test]
fn slow_clients_do_not_starve_metrics_or_healthz() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    let done = Arc::new(AtomicBool::new(false));
    let lifetimes = Arc::new(Mutex::new(Vec::new()));
    // From the scraper's own address: 64 stay below the limit (128), nothing is displaced.
    let threads = slow_clients(a.port, Ipv4Addr::LOCALHOST, 64, &done, &lifetimes);
    std::thread::sleep(Duration::from_millis(500));
    // Long enough for every slow client to be cut twice.
    let (slowest, n) = probe_quickly(a.port, Duration::from_secs(12));
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("{n} requests, slowest {slowest:?}");
    // Every slow connection, silent or dribbling, was cut at the head deadline: not before
    // (nothing else closed them), and not after (a byte a second did not keep one open).
    let lifetimes = lifetimes.lock().unwrap();
    for dribble in [false, true] {
        let cut: Vec<Duration> = lifetimes.iter().filter(|(d, _)| *d == dribble).map(|(_, t)| *t).collect();
        assert!(cut.len() >= 32, "dribbling {dribble}: only {} connections cut in 12 s", cut.len());
        for t in cut {
            assert!(t >= HEAD_DEADLINE - Duration::from_millis(300) && t <= HEAD_DEADLINE + Duration::from_millis(1500), "dribbling {dribble}: cut after {t:?}");
        }
    }
    stop(a);
}

#[test]
fn the_connection_limit_displaces_the_least_recently_active() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &["--max-connections", "16"]);
    // 64 silent connections against a limit of 16: each new one displaces the oldest.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle: Vec<TcpStream> = (0..64).map(|_| connect_from(attacker, a.port).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let open: Vec<usize> = (0..64).filter(|i| closed_within(&mut idle[*i], Duration::from_millis(20)).is_none()).collect();
    assert_eq!(open, (48..64).collect::<Vec<_>>(), "with a limit of 16 the 16 newest stay");
    drop(idle);
    // 64 slow clients from another address than the scraper's, reconnecting as soon as they
    // are displaced: they displace each other, and the scraper is served at once.
    let done = Arc::new(AtomicBool::new(false));
    let lifetimes = Arc::new(Mutex::new(Vec::new()));
    let threads = slow_clients(a.port, attacker, 64, &done, &lifetimes);
    std::thread::sleep(Duration::from_millis(500));
    let (slowest, n) = probe_quickly(a.port, Duration::from_secs(6));
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("{n} requests, slowest {slowest:?}");
    // Displaced before the deadline: the slow clients churned among themselves.
    let early = lifetimes.lock().unwrap().iter().filter(|(_, t)| *t < HEAD_DEADLINE - Duration::from_secs(1)).count();
    assert!(early > 64, "only {early} slow connections displaced");
    let err = stop(a);
    assert!(err.contains("note: HTTP: 16 connections open (the limit)"), "{err}");
}

#[test]
fn at_most_128_connections_by_default() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    let mut conns: Vec<TcpStream> = (0..160).map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 3), a.port).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let open: Vec<usize> = (0..160).filter(|i| closed_within(&mut conns[*i], Duration::from_millis(10)).is_none()).collect();
    assert_eq!(open, (32..160).collect::<Vec<_>>(), "the 128 newest stay open");
    assert_eq!(get(a.port, "/metrics", "").code, 200);
    drop(conns);
    stop(a);
}

#[test]
fn a_head_that_never_ends_is_cut_at_the_deadline() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Never-Ends: ").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut answered = Vec::new();
    let cut = loop {
        assert!(t0.elapsed() < Duration::from_secs(15), "a head dribbled for 15 s is still open");
        if s.write_all(b"z").is_err() {
            break t0.elapsed();
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break t0.elapsed(),
            Ok(n) => answered.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break t0.elapsed(),
        }
    };
    assert!(cut >= HEAD_DEADLINE - Duration::from_millis(300) && cut <= HEAD_DEADLINE + Duration::from_millis(1500), "cut after {cut:?}");
    // Cut, not answered: nothing of /metrics was sent.
    assert!(!String::from_utf8_lossy(&answered).contains("cgleak_"), "{}", String::from_utf8_lossy(&answered));
    stop(a);
}

#[test]
fn oversized_heads_are_refused() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    // Within 8 KiB, and 60 headers: served.
    let r = get(a.port, "/metrics", &format!("X-Pad: {}\r\n", "p".repeat(7000)));
    assert_eq!(r.code, 200);
    assert_eq!(get(a.port, "/metrics", &(0..58).map(|i| format!("X-{i}: v\r\n")).collect::<String>()).code, 200);
    // A header past 8 KiB, a request line past it, and more than 64 headers (hyper's own
    // limit is 100): 431, and closed.
    for (what, raw) in [
        ("a 10 KiB header", format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "p".repeat(10 * 1024))),
        ("a 10 KiB target", format!("GET /metrics?{} HTTP/1.1\r\nHost: x\r\n\r\n", "q".repeat(10 * 1024))),
        ("70 headers", format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..69).map(|i| format!("X-{i}: v\r\n")).collect::<String>())),
    ] {
        let t = Instant::now();
        let r = request(a.port, &raw).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.code, 431, "{what}: {}", r.text());
        assert!(t.elapsed() < QUICK, "{what}: {:?}", t.elapsed());
    }
    // 1 MiB that is no head at all: cut without reading it all.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let junk = vec![b'x'; 1 << 20];
    let wrote = s.write_all(&junk);
    let mut s2 = s.try_clone().unwrap();
    assert!(wrote.is_err() || closed_within(&mut s2, Duration::from_secs(3)).is_some(), "1 MiB of junk kept the connection open");
    stop(a);
}

#[test]
fn keep_alive_is_bounded() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    // At most 100 requests on one connection: the 100th answer says close, and it closes.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    for i in 1..=100 {
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let reply = loop {
            if let Some((r, used)) = parse_reply(&buf, false) {
                buf.drain(..used);
                break r;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert!(n > 0, "closed before answer {i}");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(reply.code, 200, "request {i}");
        let close = reply.header("connection") == Some("close");
        assert_eq!(close, i == 100, "request {i}: {:?}", reply.headers);
    }
    assert!(closed_within(&mut s, Duration::from_secs(2)).is_some(), "open after 100 requests");

    // Idle between requests counts toward the next head's deadline: closed after it.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while parse_reply(&got, false).is_none() {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    let answered = Instant::now();
    let closed = closed_within(&mut s, Duration::from_secs(10)).expect("an idle kept-alive connection stays open");
    let idle = closed - answered;
    assert!(idle >= HEAD_DEADLINE - Duration::from_millis(300) && idle <= HEAD_DEADLINE + Duration::from_millis(1500), "closed after {idle:?} idle");
    stop(a);
}

#[test]
fn only_get_and_head_on_metrics_healthz_livez() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    let full = get(a.port, "/metrics", "");
    assert_eq!((full.code, full.header("content-type")), (200, Some(METRICS_TYPE)));
    assert_promtool_accepts(&full.text());
    // HEAD: the same head, no body (the server closes right after the head).
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let raw = read_all(&mut s);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    assert_eq!(raw.len(), head_end, "HEAD got a body: {}", String::from_utf8_lossy(&raw));
    let (head, _) = parse_reply(&raw, true).unwrap();
    assert_eq!((head.code, head.header("content-type")), (200, Some(METRICS_TYPE)));
    assert!(head.header("content-length").is_some_and(|l| l.parse::<usize>().unwrap() > 100), "{:?}", head.headers);
    for path in ["/healthz", "/livez"] {
        let r = get(a.port, path, "");
        assert_eq!((r.code, r.text().as_str()), (200, "ok\n"), "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        for path in ["/metrics", "/healthz"] {
            let r = request(a.port, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).unwrap();
            assert_eq!((r.code, r.header("allow")), (405, Some("GET, HEAD")), "{method} {path}");
        }
    }
    // `/` is the page (tests/agent_page.rs); anything else is 404.
    assert_eq!(get(a.port, "/", "").code, 200);
    for path in ["/index.html", "/metrics/", "/healthz/x", "/debug/pprof"] {
        assert_eq!(get(a.port, path, "").code, 404, "{path}");
    }
    // A query string does not change the path; a GET with a body is refused, and closed.
    assert_eq!(get(a.port, "/metrics?x=1", "").code, 200);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    let raw = read_all(&mut s);
    let (r, _) = parse_reply(&raw, false).expect("an answer");
    assert_eq!((r.code, r.header("connection")), (413, Some("close")));
    stop(a);
}

const TOKEN: &str = "cgleak-test-token_0123456789.abcdef~";

#[test]
fn bearer_token_guards_metrics_not_the_probes() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let a = start_agent(&f, &["--auth-token-file", token_file.to_str().unwrap()]);
    for (what, header) in [
        ("no token", String::new()),
        ("a wrong token", "Authorization: Bearer cgleak-test-token_0123456789.abcdef\r\n".to_string()),
        ("another scheme", format!("Authorization: Basic {TOKEN}\r\n")),
        ("two headers", format!("Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer x\r\n")),
    ] {
        for path in ["/metrics", "/", "/nope"] {
            let r = get(a.port, path, &header);
            assert_eq!(r.code, 401, "{what} on {path}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"cgleak\""), "{what}");
            assert!(!r.text().contains("cgleak_"), "{what}: {}", r.text());
        }
    }
    let r = get(a.port, "/metrics", &format!("Authorization: Bearer {TOKEN}\r\n"));
    assert_eq!((r.code, r.header("content-type")), (200, Some(METRICS_TYPE)));
    assert_promtool_accepts(&r.text());
    assert_eq!(get(a.port, "/nope", &format!("authorization: bearer {TOKEN}\r\n")).code, 404);
    // The kubelet's probes carry no token.
    assert_eq!(get(a.port, "/healthz", "").code, 200);
    assert_eq!(get(a.port, "/livez", "").code, 200);
    let err = stop(a);
    assert!(err.contains("(bearer token required)"), "{err}");
    assert!(!err.contains(TOKEN), "the token is never printed: {err}");
}

/// A self-signed certificate for localhost and 127.0.0.1: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn tls_client(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    tls_client_of(cert_pem, rustls::DEFAULT_VERSIONS)
}

fn tls_client_of(cert_pem: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// GET over TLS, verifying the server against `config`'s roots as `name`.
fn tls_get(config: &Arc<rustls::ClientConfig>, port: u16, name: &str, path: &str, extra_headers: &str) -> Result<Reply, String> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), server_name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n{extra_headers}Connection: close\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && !out.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    parse_reply(&out, false).map(|(r, _)| r).ok_or_else(|| format!("no answer in {:?}", String::from_utf8_lossy(&out)))
}

#[test]
fn tls_with_a_self_signed_certificate_and_a_token() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let (cert_file, key_file, token_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("token"));
    fs::write(&cert_file, &cert).unwrap();
    fs::write(&key_file, &key).unwrap();
    fs::write(&token_file, TOKEN).unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = ["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap(), "--auth-token-file", token_file.to_str().unwrap()];
    let a = Agent::spawn(&mut agent_command(&f, state.path(), &format!("127.0.0.1:{port}"), &extra), port).keeping(state);
    let client = tls_client(&cert);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let r = wait_for("/metrics over TLS", Duration::from_secs(30), || tls_get(&client, port, "localhost", "/metrics", &auth).ok().filter(|r| r.code == 200));
    assert_eq!(r.header("content-type"), Some(METRICS_TYPE));
    assert_promtool_accepts(&r.text());
    // Verified as the IP address too (the certificate names it); TLS 1.2 and 1.3 alike.
    assert_eq!(tls_get(&client, port, "127.0.0.1", "/healthz", "").unwrap().code, 200);
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        assert_eq!(tls_get(&tls_client_of(&cert, &[v]), port, "localhost", "/metrics", &auth).unwrap().code, 200, "{v:?}");
    }
    assert_eq!(tls_get(&client, port, "localhost", "/metrics", "").unwrap().code, 401);
    // A client that trusts another certificate refuses the agent's.
    let other = tls_client(&self_signed().0);
    let e = tls_get(&other, port, "localhost", "/livez", "").unwrap_err();
    assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    // Plain HTTP on the TLS port gets no answer of ours.
    let plain = request(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(plain.is_none(), "{plain:?}");
    // A TLS handshake that never starts is cut at the deadline.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t0 = Instant::now();
    let closed = closed_within(&mut s, Duration::from_secs(10)).expect("a silent connection stays open on the TLS port");
    let took = closed - t0;
    assert!(took >= HEAD_DEADLINE - Duration::from_millis(300) && took <= HEAD_DEADLINE + Duration::from_millis(1500), "cut after {took:?}");
    let _ = s.shutdown(Shutdown::Both);
    let err = stop(a);
    assert!(err.contains(&format!("agent on https://127.0.0.1:{port}/metrics (bearer token required)")), "{err}");
}

/// Runs the agent expecting it to refuse to start: (exit code, stderr).
fn refused(f: &Fixture, listen: &str, extra: &[&str]) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = agent_command(f, state.path(), listen, extra);
    let out = {
        let _lock = cgleak_fixtures::exec_lock();
        cmd.stdout(Stdio::piped()).spawn().unwrap()
    };
    let out = out.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_tls_and_token_files_and_addresses_are_named() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    fs::write(p("tls.crt"), &cert).unwrap();
    fs::write(p("tls.key"), &key).unwrap();
    fs::write(p("other.key"), &other_key).unwrap();
    fs::write(p("garbage"), "this is not PEM\n").unwrap();
    fs::write(p("empty"), "\n").unwrap();
    fs::write(p("bad.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(Vec<String>, i32, Vec<String>)> = vec![
        (vec!["--tls-cert".into(), p("missing.crt"), "--tls-key".into(), p("tls.key")], 1, vec![format!("--tls-cert {}", p("missing.crt")), "No such file".into()]),
        (vec!["--tls-cert".into(), p("tls.crt"), "--tls-key".into(), p("missing.key")], 1, vec![format!("--tls-key {}", p("missing.key"))]),
        (vec!["--tls-cert".into(), p("garbage"), "--tls-key".into(), p("tls.key")], 1, vec![format!("--tls-cert {}: no CERTIFICATE", p("garbage"))]),
        (vec!["--tls-cert".into(), p("bad.crt"), "--tls-key".into(), p("tls.key")], 1, vec![format!("--tls-cert {}:", p("bad.crt"))]),
        (vec!["--tls-cert".into(), p("tls.crt"), "--tls-key".into(), p("garbage")], 1, vec![format!("--tls-key {}: no PRIVATE KEY", p("garbage"))]),
        (vec!["--tls-cert".into(), p("tls.crt"), "--tls-key".into(), p("tls.crt")], 1, vec![format!("--tls-key {}: no PRIVATE KEY", p("tls.crt"))]),
        (
            vec!["--tls-cert".into(), p("tls.crt"), "--tls-key".into(), p("other.key")],
            1,
            vec![format!("--tls-key {} and --tls-cert {}: the private key is not the certificate's", p("other.key"), p("tls.crt"))],
        ),
        (vec!["--tls-cert".into(), p("tls.crt")], 2, vec!["--tls-key".into()]),
        (vec!["--tls-key".into(), p("tls.key")], 2, vec!["--tls-cert".into()]),
        (vec!["--auth-token-file".into(), p("missing")], 1, vec![format!("--auth-token-file {}", p("missing"))]),
        (vec!["--auth-token-file".into(), p("empty")], 1, vec![format!("--auth-token-file {}: it is empty", p("empty"))]),
        (vec!["--auth-token-file".into(), p("tls.key")], 1, vec![format!("--auth-token-file {}: byte 0x20", p("tls.key"))]),
        (vec!["--max-connections".into(), "0".into()], 2, vec!["--max-connections".into()]),
    ];
    for (args, code, said) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, err) = refused(&f, &listen, &args);
        assert_eq!(got, *code, "{args:?}: {err}");
        for s in said {
            assert!(err.contains(s.as_str()), "{args:?}: {s:?} not in {err}");
        }
        assert!(!err.contains("BEGIN") && !err.contains(TOKEN), "{args:?}: file contents printed: {err}");
    }
    for (listen, said) in [("$(POD_IP):9977", "the DaemonSet sets POD_IP from status.podIP"), ("localhost", "is not IP:PORT"), ("10.0.0.1", "is not IP:PORT")] {
        let (got, err) = refused(&f, listen, &[]);
        assert_eq!(got, 2, "--listen {listen}: {err}");
        assert!(err.contains("--listen") && err.contains(said), "--listen {listen}: {err}");
    }
}

#[test]
fn listen_takes_an_ipv6_address_without_brackets() {
    // What `$(POD_IP):9977` becomes on an IPv6 cluster.
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let port = TcpListener::bind("[::1]:0").expect("IPv6 loopback").local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let a = Agent::spawn(&mut agent_command(&f, state.path(), &format!("::1:{port}"), &[]), port).keeping(state);
    let r = wait_for("/livez on [::1]", Duration::from_secs(30), || {
        let mut s = TcpStream::connect(("::1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        parse_reply(&read_all(&mut s), false).map(|(r, _)| r)
    });
    assert_eq!(r.code, 200);
    let err = stop(a);
    assert!(err.contains(&format!("agent on http://[::1]:{port}/metrics")), "{err}");
}

/// /healthz is readiness: 503 once the census fails for three intervals (10 s at least),
/// 200 again when it works. /livez is liveness: 200 all along, so a kubelet never restarts
/// an agent whose census is slow or failing.
#[test]
fn healthz_follows_the_census_and_livez_the_process() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let a = start_agent(&f, &[]);
    let cgroup = f.root().join("sys/fs/cgroup");
    let moved = f.root().join("sys/fs/cgroup.away");
    fs::rename(&cgroup, &moved).unwrap();
    let t0 = Instant::now();
    let why = wait_for("/healthz 503", Duration::from_secs(25), || {
        assert_eq!(get(a.port, "/livez", "").code, 200, "/livez after {:?}", t0.elapsed());
        let r = get(a.port, "/healthz", "");
        (r.code == 503).then(|| r.text())
    });
    assert!(t0.elapsed() >= Duration::from_secs(9), "stale after {:?}: three intervals, 10 s at least", t0.elapsed());
    assert!(!why.trim().is_empty() && why != "ok\n", "{why}");
    fs::rename(&moved, &cgroup).unwrap();
    wait_for("/healthz 200 again", Duration::from_secs(15), || (get(a.port, "/healthz", "").code == 200).then_some(()));
    assert_eq!(get(a.port, "/livez", "").code, 200);
    let err = stop(a);
    assert!(err.contains("census failed"), "{err}");
}

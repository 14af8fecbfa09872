//! The agent's HTTP endpoint: `/metrics` (the Prometheus text format), `/healthz` (the census
//! is fresh: readiness) and `/livez` (the process serves: liveness), GET and HEAD only, over
//! HTTP/1.1 on hyper, with optional TLS (rustls on ring) and a bearer token on `/metrics`.
//!
//! Slow or hostile clients must not starve the scraper or the kubelet's probes, so:
//! - one deadline for the whole request head, and for the wait for it on a kept-alive
//!   connection (hyper's header timer starts when it begins to wait and is not reset by a
//!   read): a client that sends a byte now and then is cut at the deadline; the TLS
//!   handshake has a deadline of the same length;
//! - at most `max_connections` at once: at the limit a new connection displaces the least
//!   recently active one (no complete request head since it connected, or the oldest last
//!   request) of the client address that holds the most, so a flood from one address
//!   displaces its own connections, never the scraper's or the kubelet's;
//! - heads of at most `max_head_bytes` (hyper answers 431 beyond), no request body;
//! - a connection serves at most `max_requests_per_connection` requests (the last answer
//!   says `Connection: close`) and lives at most `max_connection_age`;
//! - connections are tasks on one thread, not a thread each; the census is read on a small
//!   blocking pool, so `/livez` answers even while `/metrics` waits for the agent's lock.
//!
//! Self-contained (std, tokio, hyper, rustls, subtle): `fuzz/fuzz_targets/agent_http.rs`
//! builds this file as it is.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// The Prometheus text format 0.0.4, as promtool and every scraper read it.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often at most the agent notes that the connection limit displaced clients.
const EVICTION_NOTE_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once. Each costs a task and at most a 16 KiB read buffer: 2 MiB
    /// at 128, well inside the pod's 64 MiB; a node has a scraper or two and the probes.
    pub max_connections: usize,
    /// From the moment a connection waits for a request head (accept, or the end of the
    /// previous answer) to its last byte; also the TLS handshake's. Prometheus and the
    /// kubelet send a head of a few hundred bytes in one write.
    pub head_timeout: Duration,
    /// The request line and headers (hyper needs 8 KiB at least).
    pub max_head_bytes: usize,
    pub max_requests_per_connection: u32,
    /// After this the connection is closed once its current answer is written (or
    /// `head_timeout` later): a client that never reads its answer is not kept forever.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            head_timeout: Duration::from_secs(5),
            max_head_bytes: 8192,
            max_requests_per_connection: 100,
            max_connection_age: Duration::from_secs(60),
        }
    }
}

/// What the endpoint serves; the agent answers from its last census.
pub trait Endpoints: Send + Sync + 'static {
    /// The exposition, or None before the first census (503).
    fn metrics(&self) -> Option<String>;
    /// Ok while the last census is fresh, else why not (503 on /healthz).
    fn health(&self) -> Result<(), String>;
    /// The `/` page (HTML), or None before the first census (503).
    fn page(&self) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Bearer token

/// The token of `--auth-token-file`, asked of every request but the probes' (`/healthz`,
/// `/livez`: the kubelet's probes cannot read a Secret) as `Authorization: Bearer <token>`.
pub struct BearerToken(Vec<u8>);

/// Never the token itself, not even in a panic message.
impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerToken({} bytes)", self.0.len())
    }
}

impl BearerToken {
    pub const MAX_LEN: usize = 4096;

    /// The token file's contents: one line of printable ASCII (a JWT, a random string), with
    /// surrounding whitespace (the final newline) left out.
    pub fn from_file_contents(contents: &[u8]) -> Result<BearerToken, String> {
        let t = contents.trim_ascii();
        if t.is_empty() {
            return Err("it is empty: write the token in it".into());
        }
        if t.len() > Self::MAX_LEN {
            return Err(format!("{} bytes: a token is at most {} bytes", t.len(), Self::MAX_LEN));
        }
        if let Some(b) = t.iter().find(|b| !b.is_ascii_graphic()) {
            return Err(format!("byte 0x{b:02x} in it: a token is one line of printable ASCII, no spaces"));
        }
        Ok(BearerToken(t.to_vec()))
    }

    /// Whether the one `Authorization` header carries this token. The comparison takes the
    /// same time whatever was presented (the token is compared with itself when the lengths
    /// differ), so timing tells nothing of the token's bytes.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (Some(v), None) => bearer_credentials(v.as_bytes()).unwrap_or_default(),
            _ => b"",
        };
        let same_len = presented.len() == self.0.len();
        let other = if same_len { presented } else { &self.0[..] };
        (self.0.ct_eq(other) & subtle::Choice::from(u8::from(same_len))).into()
    }
}

/// The credentials of `Bearer <token>`: the scheme is case-insensitive (RFC 9110 §11.1), one
/// or more spaces follow it, and the credentials are one word.
pub fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let creds = rest.trim_ascii();
    (!creds.is_empty() && !creds.iter().any(u8::is_ascii_whitespace)).then_some(creds)
}

// ---------------------------------------------------------------------------------------
// TLS

/// Which file of `--tls-cert` and `--tls-key` a TLS setup error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    /// Both read, but the key is not the certificate's.
    Pair,
}

/// The server's TLS setup from PEM: a certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1); TLS 1.2 and 1.3 (rustls' safe defaults), HTTP/1.1 only.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, (TlsFile, String)> {
    let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| (TlsFile::Cert, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err((TlsFile::Cert, "no CERTIFICATE block in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => (TlsFile::Key, "no PRIVATE KEY block (PKCS#8, RSA or EC) in it".into()),
        e => (TlsFile::Key, format!("not a PEM private key: {e}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider.key_provider.load_private_key(key).map_err(|e| (TlsFile::Key, format!("not a usable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err((TlsFile::Pair, "the private key is not the certificate's".into())),
        Err(e) => return Err((TlsFile::Cert, format!("not a usable certificate: {e}"))),
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Pair, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Requests

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

/// The paths served; everything else is 404.
const PATHS: [&str; 4] = ["/", "/metrics", "/healthz", "/livez"];

/// The endpoint: what it serves, to whom, within which limits; shared by every connection.
pub struct Endpoint {
    endpoints: Arc<dyn Endpoints>,
    token: Option<BearerToken>,
    limits: Limits,
    epoch: Instant,
    conns: Mutex<Registry>,
}

/// The connections open, for the limit.
#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<ConnSlot>>,
    displaced: u64,
    noted_at: Option<Instant>,
}

struct ConnSlot {
    /// The client's address, its port left out.
    peer: IpAddr,
    /// Milliseconds after `Endpoint::epoch` of the accept or of the last complete request head.
    last_active_ms: AtomicU64,
    displaced: Notify,
}

impl ConnSlot {
    fn new(peer: IpAddr, now_ms: u64) -> Arc<ConnSlot> {
        Arc::new(ConnSlot { peer, last_active_ms: AtomicU64::new(now_ms), displaced: Notify::new() })
    }
}

impl Endpoint {
    pub fn new(endpoints: Arc<dyn Endpoints>, token: Option<BearerToken>, limits: Limits) -> Arc<Endpoint> {
        Arc::new(Endpoint { endpoints, token, limits, epoch: Instant::now(), conns: Mutex::new(Registry::default()) })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The answer to one request whose head is complete.
    async fn respond(&self, req: &Request<Incoming>) -> Answer {
        let path = req.uri().path();
        let probe = matches!(path, "/healthz" | "/livez");
        let authorized = self.token.as_ref().is_none_or(|t| t.admits(req.headers()));
        if !probe && !authorized {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized: send Authorization: Bearer <the token of --auth-token-file>\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cgleak\""));
            return r;
        }
        if !PATHS.contains(&path) {
            return text(StatusCode::NOT_FOUND, "not found: try /, /metrics, /healthz or /livez\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if !req.body().is_end_stream() {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "a GET has no body\n");
        }
        let endpoints = Arc::clone(&self.endpoints);
        match path {
            "/livez" => text(StatusCode::OK, "ok\n"),
            "/healthz" => match tokio::task::spawn_blocking(move || endpoints.health()).await {
                Ok(Ok(())) => text(StatusCode::OK, "ok\n"),
                // Why the census is stale may name host paths: told to authorized clients only.
                Ok(Err(why)) if authorized => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                Ok(Err(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "no recent census\n"),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
            },
            "/" => match tokio::task::spawn_blocking(move || endpoints.page()).await {
                Ok(Some(body)) => {
                    let mut r = answer(StatusCode::OK, "text/html; charset=utf-8", body);
                    // Markup and inline styles only: no script, no fetch, no frame.
                    r.headers_mut().insert(
                        hyper::header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"),
                    );
                    r.headers_mut().insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                    r
                }
                Ok(None) => text(StatusCode::SERVICE_UNAVAILABLE, "no census yet\n"),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
            },
            _ => match tokio::task::spawn_blocking(move || endpoints.metrics()).await {
                Ok(Some(body)) => answer(StatusCode::OK, METRICS_CONTENT_TYPE, body),
                Ok(None) => text(StatusCode::SERVICE_UNAVAILABLE, "no census yet\n"),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
            },
        }
    }

    /// Takes a place for a new connection. At the limit one is displaced (closed at once): of
    /// the client address holding the most connections (the new one counted), the least
    /// recently active. A slow client is displaced within `head_timeout` anyway; this only
    /// decides whose connection goes first when too many arrive within it.
    fn register(&self, slot: &Arc<ConnSlot>) -> u64 {
        let mut r = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        while r.open.len() >= self.limits.max_connections.max(1) {
            let mut held: HashMap<IpAddr, usize> = HashMap::from([(slot.peer, 1)]);
            for s in r.open.values() {
                *held.entry(s.peer).or_default() += 1;
            }
            // The newcomer counted: where its address holds the most, its own oldest goes.
            let most = held.values().copied().max().unwrap_or(0);
            let victim = r
                .open
                .iter()
                .filter(|(_, s)| held[&s.peer] == most)
                .min_by_key(|(id, s)| (s.last_active_ms.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id);
            if let Some(victim) = victim.and_then(|id| r.open.remove(&id)) {
                victim.displaced.notify_one();
                r.displaced += 1;
            }
        }
        if r.displaced > 0 && r.noted_at.is_none_or(|t| t.elapsed() >= EVICTION_NOTE_EVERY) {
            eprintln!(
                "cgleak: note: HTTP: {} connections open (the limit): {} idle or slow ones closed to admit new ones",
                self.limits.max_connections, r.displaced
            );
            r.displaced = 0;
            r.noted_at = Some(Instant::now());
        }
        let id = r.next_id;
        r.next_id += 1;
        r.open.insert(id, Arc::clone(slot));
        id
    }

    fn unregister(&self, id: u64) {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).open.remove(&id);
    }

    /// Serves a connection just accepted, within the limits, until it ends or is displaced.
    fn admit(self: &Arc<Self>, tcp: tokio::net::TcpStream, peer: IpAddr, tls: Option<TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let slot = ConnSlot::new(peer, self.now_ms());
        let id = self.register(&slot);
        let endpoint = Arc::clone(self);
        tokio::spawn(async move {
            let accepted = tokio::time::Instant::now();
            tokio::select! {
                biased;
                _ = slot.displaced.notified() => {}
                _ = endpoint.serve_tcp(tcp, tls, Arc::clone(&slot), accepted) => {}
            }
            endpoint.unregister(id);
        });
    }

    async fn serve_tcp(self: &Arc<Self>, tcp: tokio::net::TcpStream, tls: Option<TlsAcceptor>, slot: Arc<ConnSlot>, accepted: tokio::time::Instant) {
        match tls {
            None => self.serve_http(TokioIo::new(tcp), slot, accepted).await,
            Some(acceptor) => {
                if let Ok(Ok(stream)) = tokio::time::timeout_at(accepted + self.limits.head_timeout, acceptor.accept(tcp)).await {
                    self.serve_http(TokioIo::new(stream), slot, accepted).await
                }
            }
        }
    }

    /// Serves one connection on any byte stream, outside the connection limit (the fuzz
    /// target and the unit tests feed it from memory).
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn serve_stream<I>(self: &Arc<Self>, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let slot = ConnSlot::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.now_ms());
        self.serve_http(TokioIo::new(io), slot, tokio::time::Instant::now()).await
    }

    async fn serve_http<I>(self: &Arc<Self>, io: I, slot: Arc<ConnSlot>, accepted: tokio::time::Instant)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let requests = Arc::new(AtomicU32::new(0));
        let endpoint = Arc::clone(self);
        let service = service_fn(move |req: Request<Incoming>| {
            let (endpoint, slot, requests) = (Arc::clone(&endpoint), Arc::clone(&slot), Arc::clone(&requests));
            async move {
                slot.last_active_ms.store(endpoint.now_ms(), Ordering::Relaxed);
                let nth = requests.fetch_add(1, Ordering::Relaxed) + 1;
                let mut r = endpoint.respond(&req).await;
                // The last request this connection may carry, or a body left unread: hyper
                // closes the connection after this answer.
                if nth >= endpoint.limits.max_requests_per_connection || !req.body().is_end_stream() {
                    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(r)
            }
        });
        let limits = &self.limits;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.head_timeout)
            .max_header_size(limits.max_head_bytes)
            .max_buf_size(limits.max_head_bytes.max(8192) * 2)
            .max_headers(64)
            .keep_alive(true)
            .half_close(false);
        let mut conn = pin!(builder.serve_connection(io, service));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(accepted + limits.max_connection_age) => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(limits.head_timeout, conn).await;
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// The endpoint on a listening socket, on a Tokio runtime of its own (one thread, and at
/// most two for reading the census): the Kubernetes reporter's runtime, busy or stuck on the
/// API server, never holds it up.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    endpoint: Arc<Endpoint>,
}

impl Server {
    pub fn new(listener: std::net::TcpListener, endpoint: Arc<Endpoint>, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(2).thread_name("cgleak-http").build()?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        Ok(Server { runtime, listener, tls: tls.map(TlsAcceptor::from), endpoint })
    }

    /// Serves until `stop` is set, then closes every connection.
    pub fn run(self, stop: &AtomicBool) {
        let Server { runtime, listener, tls, endpoint } = self;
        runtime.block_on(async {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut accept_error: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((tcp, peer)) => {
                            accept_error = None;
                            // An IPv4 client on a dual-stack socket counts as its IPv4 address.
                            endpoint.admit(tcp, peer.ip().to_canonical(), tls.clone());
                            // Let the new connection read its head before the next accept.
                            tokio::task::yield_now().await;
                        }
                        Err(e) => {
                            // Out of descriptors and the like: said once, retried, never a busy loop.
                            let e = e.to_string();
                            if accept_error.as_ref() != Some(&e) {
                                eprintln!("cgleak: HTTP: accept: {e}");
                            }
                            accept_error = Some(e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    _ = tick.tick() => {}
                }
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_token_admits_exactly_its_token() {
        let t = BearerToken::from_file_contents(b"  s3cr3t-token.x_y~\n").unwrap();
        for ok in ["Bearer s3cr3t-token.x_y~", "bearer s3cr3t-token.x_y~", "BEARER   s3cr3t-token.x_y~  "] {
            assert!(t.admits(&headers(&[ok])), "{ok}");
        }
        for bad in [
            "Bearer s3cr3t-token.x_y",
            "Bearer s3cr3t-token.x_y~~",
            "Bearer S3CR3T-TOKEN.X_Y~",
            "Bearers3cr3t-token.x_y~",
            "Basic s3cr3t-token.x_y~",
            "s3cr3t-token.x_y~",
            "Bearer",
            "Bearer ",
            "Bearer s3cr3t-token.x_y~ more",
            "",
        ] {
            assert!(!t.admits(&headers(&[bad])), "{bad:?}");
        }
        assert!(!t.admits(&HeaderMap::new()));
        // Two Authorization headers: refused, even if one is right.
        assert!(!t.admits(&headers(&["Bearer s3cr3t-token.x_y~", "Bearer other"])));
    }

    #[test]
    fn token_files_are_checked() {
        assert!(BearerToken::from_file_contents(b"\n \n").unwrap_err().contains("empty"));
        assert!(BearerToken::from_file_contents(b"two words\n").unwrap_err().contains("0x20"));
        assert!(BearerToken::from_file_contents(b"caf\xc3\xa9").unwrap_err().contains("0xc3"));
        assert!(BearerToken::from_file_contents(&vec![b'a'; 5000]).unwrap_err().contains("at most 4096"));
        assert_eq!(BearerToken::from_file_contents(b"abc\r\n").unwrap().0, b"abc");
    }

    struct Fixed;

    impl Endpoints for Fixed {
        fn metrics(&self) -> Option<String> {
            Some("m 1\n".into())
        }
        fn health(&self) -> Result<(), String> {
            Err("census failed: /x".into())
        }
    }

    /// What the endpoint answers to `sent` on one connection (read until it closes).
    fn exchange(sent: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let endpoint = Endpoint::new(Arc::new(Fixed), Some(BearerToken::from_file_contents(b"t0k").unwrap()), Limits::default());
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let serving = tokio::spawn(async move { endpoint.serve_stream(server).await });
            client.write_all(sent.as_bytes()).await.unwrap();
            let mut out = String::new();
            client.read_to_string(&mut out).await.unwrap();
            serving.await.unwrap();
            out
        })
    }

    #[test]
    fn pipelined_requests_on_one_connection() {
        let out = exchange(concat!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n",
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n",
            "DELETE /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ));
        let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        assert_eq!(
            statuses,
            ["HTTP/1.1 401 Unauthorized", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 405 Method Not Allowed"],
            "{out}"
        );
        // The body once (GET, not HEAD); why the census is stale only with the token.
        assert_eq!(out.matches("m 1\n").count(), 1, "{out}");
        assert_eq!(out.matches("census failed: /x").count(), 1, "{out}");
        assert_eq!(out.matches("no recent census").count(), 1, "{out}");
    }

    #[test]
    fn tls_setup_names_the_file_at_fault() {
        assert_eq!(tls_config(b"", b"").unwrap_err().0, TlsFile::Cert);
        assert_eq!(tls_config(b"not pem at all", b"").unwrap_err().0, TlsFile::Cert);
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = tls_config(garbage, b"nothing").unwrap_err();
        assert_eq!(e.0, TlsFile::Key, "{e:?}");
    }
}

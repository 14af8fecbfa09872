//! A real client against a closed port on 127.0.0.1 (nothing else is contacted): reports fail
//! fast, then return at once while backing off, and a metrics endpoint served by the same
//! runtime keeps answering all along.

use std::time::{Duration, Instant};

use cgleak_kube::kube::{Client, Config};
use cgleak_kube::{KubeError, KubeReporter, ReportSummary, ReporterConfig};
use cgleak_model::verdict::Verdict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn api_server_down_never_stops_sampling_or_metrics() {
    // A port that was just free: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::try_from(Config::new(format!("http://127.0.0.1:{port}").parse().unwrap())).unwrap();
    let mut cfg = ReporterConfig::new("node-a");
    cfg.request_timeout = Duration::from_secs(2);
    cfg.backoff_initial = Duration::from_millis(200);
    let mut reporter = KubeReporter::new(client, cfg);

    // Stand-in for the agent's metrics endpoint, on the same runtime.
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = metrics.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut c, _) = metrics.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = c.read(&mut buf).await;
            c.write_all(b"HTTP/1.0 200 OK\r\n\r\ncgleak_memcg_ids_in_use 60000\n").await.unwrap();
        }
    });

    let s = ReportSummary::of(Verdict::AtRisk, Some(60000), Some(5535), Some(1200));
    let mut failures = 0;
    let mut skipped = 0;
    // Bounded: 10 samples, 100 ms apart.
    for _ in 0..10 {
        let start = Instant::now();
        match reporter.report(&s).await {
            Err(KubeError::Api(_)) => failures += 1,
            Err(KubeError::BackingOff { .. }) => {
                skipped += 1;
                assert!(start.elapsed() < Duration::from_millis(50), "a backed-off report must not wait");
            }
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2), "refused connections fail fast");
        assert!(scrape(addr).await.contains("cgleak_memcg_ids_in_use 60000"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures >= 2 && skipped >= 2, "failures {failures}, skipped {skipped}");
    assert!(reporter.backoff().delay().unwrap() >= Duration::from_millis(400), "backoff grows");
    server.abort();
}

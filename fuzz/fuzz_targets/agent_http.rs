//! Arbitrary bytes as everything one client sends on a connection to the agent's HTTP
//! endpoint (crates/cgleak-cli/src/agent/http.rs, built here as it is, on hyper), with a
//! bearer token required: it never panics or hangs (time is Tokio's paused clock, so the
//! head deadline and the keep-alive limits run too), everything it sends is HTTP/1.x
//! answers, and neither the metrics nor why the census is stale go to a client that did not
//! present the token.
#![no_main]

#[path = "../../crates/cgleak-cli/src/agent/http.rs"]
#[allow(dead_code)]
mod http;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &[u8] = b"fuzz-token-0123";
const METRICS: &str = "cgleak_fuzz_sentinel 1\n";
const STALE: &str = "census failed at /fuzz/secret/path";

struct Fixed;

impl http::Endpoints for Fixed {
    fn metrics(&self) -> Option<String> {
        Some(METRICS.to_string())
    }
    fn health(&self) -> Result<(), String> {
        Err(STALE.to_string())
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a Tokio runtime");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let token = http::BearerToken::from_file_contents(TOKEN).expect("a valid token");
    let endpoint = http::Endpoint::new(Arc::new(Fixed), Some(token), http::Limits::default());
    let out = RT.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(16 * 1024);
            let serving = tokio::spawn(async move { endpoint.serve_stream(server).await });
            let (mut rx, mut tx) = tokio::io::split(&mut client);
            let send = async {
                let _ = tx.write_all(data).await;
                let _ = tx.shutdown().await;
            };
            let mut out = Vec::new();
            let receive = rx.read_to_end(&mut out);
            let (_, received) = tokio::join!(send, receive);
            let _ = received;
            serving.await.expect("the connection task never panics");
            out
        })
    });
    if !out.is_empty() {
        // HTTP/1.0 to a 1.0 request, else 1.1.
        assert!(out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "), "{:?}", String::from_utf8_lossy(&out));
    }
    if !contains(data, TOKEN) {
        assert!(!contains(&out, METRICS.as_bytes()), "metrics without the token: {:?}", String::from_utf8_lossy(data));
        assert!(!contains(&out, STALE.as_bytes()), "the census error without the token: {:?}", String::from_utf8_lossy(data));
    }
});

//! The agent's `/` page: HTML with SVG charts of its history (no script: a Content Security
//! Policy that allows none), rendered by a real browser: Debian's Chromium, headless, takes a
//! screenshot, and the charts' colours must be on it (the IDs-in-use line, the limit, the
//! dying memcgs), so the SVG really draws, not merely parses.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::agent::{agent_command, free_port, get_with_head, scrape, wait_for, Agent};

fn chromium() -> PathBuf {
    let p = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.is_file());
    p.unwrap_or_else(|| panic!("this test needs Debian's chromium (apt-get install chromium): not found"))
}

/// Pixels of `png` within 40 (per channel) of `rgb`.
fn pixels_near(png: &Path, rgb: (u8, u8, u8)) -> usize {
    let decoder = png::Decoder::new(fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        c => panic!("screenshot colour type {c:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(ch)
        .filter(|p| (p[0] as i32 - rgb.0 as i32).abs() < 40 && (p[1] as i32 - rgb.1 as i32).abs() < 40 && (p[2] as i32 - rgb.2 as i32).abs() < 40)
        .count()
}

#[test]
fn agent_page_renders_its_charts_in_chromium() {
    let browser = chromium();
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    // A day of history the agent finds at start: IDs in use rising, dying memcgs too.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let t0 = now - 24.0 * 3600.0;
    let lines: String = (0..144)
        .map(|i| format!("{{\"at_unix_secs\":{},\"ids_in_use\":{},\"id_limit\":65535,\"dying\":{}}}\n", t0 + 600.0 * i as f64, 20000 + 200 * i, 40 + 4 * i))
        .collect();
    fs::write(state.join("agent-history.jsonl"), lines).unwrap();
    let port = free_port();
    let mut cmd = agent_command(f.root(), &state, "1s", &format!("127.0.0.1:{port}"), &["--no-logs"]);
    let a = Agent::spawn(&mut cmd, port);
    wait_for("/metrics", Duration::from_secs(30), || scrape(a.port));

    let (head, body) = wait_for("/", Duration::from_secs(30), || get_with_head(port, "/").filter(|(h, _)| h.starts_with("HTTP/1.1 200")));
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(lower.contains("content-security-policy: default-src 'none'"), "{head}");
    assert_eq!(body.matches("<svg").count(), 2, "{body}");
    assert!(!body.to_ascii_lowercase().contains("<script"));
    assert!(body.contains("IDs in use: ") && body.contains("Dying memcgs: "), "{body}");

    let shot = dir.path().join("page.png");
    let profile = dir.path().join("chromium-profile");
    let mut child = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--window-size=1000,1000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let done = wait_for("chromium's screenshot", Duration::from_secs(120), || child.try_wait().ok().flatten());
    assert!(done.success() && shot.is_file(), "chromium: {done}");
    // Kept for a look: target/tmp/agent-page.png.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-page.png");
    let _ = fs::copy(&shot, &keep);
    let ids = pixels_near(&shot, (0x1f, 0x77, 0xb4));
    let limit = pixels_near(&shot, (0xd6, 0x27, 0x28));
    let dying = pixels_near(&shot, (0x94, 0x67, 0xbd));
    assert!(ids > 800 && limit > 100 && dying > 800, "chart colours on the screenshot ({}): ids {ids}, limit {limit}, dying {dying}", keep.display());
    drop(a);
}

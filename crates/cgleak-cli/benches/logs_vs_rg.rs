//! Benchmark of issue "cgleak logs": `cgleak logs FILE --output jsonl > /dev/null`
//! against ripgrep searching the same literals, on 1 GiB of realistic node logs.
//!
//! The file is generated (deterministically, in a few seconds) in syslog form as
//! /var/log/syslog holds it on a Kubernetes node: mostly ordinary kubelet klog lines and
//! containerd logfmt lines of many kinds (pods, UIDs, container ids, IPs, times vary),
//! some kernel and systemd lines, near misses that carry an errno text but are not memcg
//! exhaustion (a full disk, rmdir EBUSY, fork ENOMEM, inotify on /var/log), and a few
//! thousand planted incidents of each kind: failed memcg mkdirs (kubelet, containerd,
//! dockerd, runc; ENOSPC, ENOMEM, EBUSY; v1 and v2 paths), SLUB failures with their
//! `cache:` continuation line, and inotify exhaustion on cgroup directories.
//!
//! The yardstick does what cgleak must do, with nothing of the parsing: `rg -n -F` with
//! the literals of cgleak's own prefilter (`cgleak_model::incidents::catalog::PREFILTER`,
//! seven of them) finds the same candidate lines and numbers them (cgleak reports each
//! incident's line number, so it counts every line too), printing them to /dev/null.
//! `rg -c` with the same literals (no line numbers) is timed as well and reported beside it.
//! rg searches one file on one thread; cgleak cuts a big file into one part per CPU.
//!
//! Before timing, every answer is checked: cgleak must report exactly the planted
//! incidents (kind, line number, errno, pod), `rg -n` must print exactly the lines that hold
//! a literal (each planted incident's first line, each SLUB record's `cache:` line, the near
//! misses) with their numbers, and `rg -c` must count them. Then the three run in turn, 1
//! warm-up and CGLEAK_BENCH_ROUNDS (default 5) rounds, through the wait4 launcher of
//! benches/common for peak RSS. Missed targets are reported (ok=false), wrong answers fail
//! the bench.
//!
//! Run: `cargo bench -p cgleak --bench logs_vs_rg` (needs rg, /usr/bin/rg or CGLEAK_BENCH_RG).
//! Environment: CGLEAK_BENCH_LOG_BYTES (default 1 GiB), CGLEAK_BENCH_ROUNDS,
//! CGLEAK_BENCH_DIR (where the file goes; default the temp dir), CGLEAK_BENCH_KEEP=1
//! (leave the file there, for profiling).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod common;

use common::{bench_main, env_u64, max, median, min, ms, run_child, run_child_quiet};

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_ROUNDS: u64 = 5;
const WARMUP_ROUNDS: usize = 1;
/// cgleak within 0.9 of `rg -n`'s time (issue 12; it was 1.0).
const TARGET_RATIO: f64 = 0.9;
const TARGET_RSS_KB: u64 = 32 * 1024;

/// What rg searches: the literals of cgleak's prefilter (crates/cgleak-model/src/incidents/catalog.rs).
const RG_LITERALS: [&str; 7] = cgleak_model::incidents::catalog::PREFILTER;

fn main() -> ExitCode {
    bench_main("logs_vs_rg", run)
}

fn run() -> Result<bool, String> {
    let bytes = env_u64("CGLEAK_BENCH_LOG_BYTES", DEFAULT_BYTES)?;
    let rounds = env_u64("CGLEAK_BENCH_ROUNDS", DEFAULT_ROUNDS)? as usize;
    if rounds == 0 || rounds > 100 {
        return Err(format!("CGLEAK_BENCH_ROUNDS={rounds}: must be 1..=100"));
    }
    let rg = PathBuf::from(std::env::var("CGLEAK_BENCH_RG").unwrap_or_else(|_| "/usr/bin/rg".into()));
    if !rg.is_file() {
        return Err(format!("{}: ripgrep not found (apt-get install ripgrep, or set CGLEAK_BENCH_RG)", rg.display()));
    }
    let cgleak = PathBuf::from(env!("CARGO_BIN_EXE_cgleak"));
    let dir = tempfile::Builder::new()
        .prefix("cgleak-bench-logs-")
        .tempdir_in(std::env::var_os("CGLEAK_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir))
        .map_err(|e| format!("temporary directory: {e}"))?;
    let file = dir.path().join("syslog");

    let t = Instant::now();
    let plan = generate(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let size = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
    println!(
        "logs_vs_rg: generated {} ({size} bytes, {} lines) in {:.1} s: {} memcg_create_failed, {} slab_alloc_failed, {} inotify_exhausted, {} near misses",
        file.display(),
        plan.lines,
        t.elapsed().as_secs_f64(),
        plan.count("memcg_create_failed"),
        plan.count("slab_alloc_failed"),
        plan.count("inotify_exhausted"),
        plan.near_misses.len()
    );

    let file_s = file.to_str().ok_or("temporary path is not UTF-8")?;
    let cg_args = ["logs", file_s, "--output", "jsonl"];
    let rg_args = |mode: &'static str| {
        let mut a: Vec<&str> = vec![mode, "-F"];
        for l in RG_LITERALS {
            a.extend(["-e", l]);
        }
        a.push(file_s);
        a
    };
    let (rg_n_args, rg_c_args) = (rg_args("-n"), rg_args("-c"));

    // Correctness first: cgleak's incidents and rg's count.
    let mut out = Vec::new();
    let (wall, rss) = run_child(&cgleak, &cg_args, &mut |b| out.extend_from_slice(b))?;
    let mut errors = plan.check_cgleak(&out);
    println!("logs_vs_rg: check run  cgleak {:.0} ms {rss} KB, {} bytes of jsonl", ms(wall), out.len());
    let want_rg = plan.literal_lines();
    // rg -n: the numbers of the lines it printed.
    let mut rg_lines = Vec::new();
    let mut partial = Vec::new();
    run_child(&rg, &rg_n_args, &mut |b| {
        for &c in b {
            if c != b'\n' {
                partial.push(c);
                continue;
            }
            let n = partial.iter().position(|&c| c == b':').and_then(|i| std::str::from_utf8(&partial[..i]).ok()?.parse::<u64>().ok());
            rg_lines.push(n.unwrap_or(0));
            partial.clear();
        }
    })?;
    if rg_lines != want_rg {
        let missing = want_rg.iter().filter(|n| rg_lines.binary_search(n).is_err()).count();
        errors.push(format!("rg -n printed {} lines, {} hold a literal ({missing} of them not printed)", rg_lines.len(), want_rg.len()));
    }
    let mut rg_out = Vec::new();
    run_child(&rg, &rg_c_args, &mut |b| rg_out.extend_from_slice(b))?;
    let rg_count: u64 = String::from_utf8_lossy(&rg_out).trim().parse().map_err(|_| format!("rg -c printed {:?}", String::from_utf8_lossy(&rg_out)))?;
    if rg_count != want_rg.len() as u64 {
        errors.push(format!("rg -c counted {rg_count} lines, {} hold a literal", want_rg.len()));
    }

    let (mut cg_ms, mut rg_ms, mut rgc_ms, mut cg_rss, mut rg_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARMUP_ROUNDS + rounds {
        let warm = round < WARMUP_ROUNDS;
        let label = if warm { format!("warm-up {}", round + 1) } else { format!("round {}", round - WARMUP_ROUNDS + 1) };
        let (c, crss) = run_child_quiet(&cgleak, &cg_args)?;
        let (r, rrss) = run_child_quiet(&rg, &rg_n_args)?;
        let (rc, _) = run_child_quiet(&rg, &rg_c_args)?;
        println!(
            "logs_vs_rg: {label:<10} cgleak {:>8.1} ms {crss:>7} KB   rg -n {:>8.1} ms {rrss:>7} KB   rg -c {:>8.1} ms",
            ms(c),
            ms(r),
            ms(rc)
        );
        if !warm {
            cg_ms.push(ms(c));
            rg_ms.push(ms(r));
            rgc_ms.push(ms(rc));
            cg_rss.push(crss);
            rg_rss.push(rrss);
        }
    }
    let (cg_med, rg_med, rgc_med) = (median(&cg_ms), median(&rg_ms), median(&rgc_ms));
    let ratio = cg_med / rg_med;
    let ratio_count = cg_med / rgc_med;
    let cg_peak = cg_rss.iter().copied().max().unwrap_or(0);
    let rg_peak = rg_rss.iter().copied().max().unwrap_or(0);
    let (ratio_ok, rss_ok, correct) = (ratio <= TARGET_RATIO, cg_peak <= TARGET_RSS_KB, errors.is_empty());
    let mib = size as f64 / (1 << 20) as f64;

    println!();
    println!("logs_vs_rg: {mib:.0} MiB, {} lines, {} incidents planted, {rounds} rounds after {WARMUP_ROUNDS} warm-up", plan.lines, plan.incidents.len());
    println!("  {:<40} {:>10} {:>10} {:>10} {:>10} {:>12}", "command", "median ms", "min ms", "max ms", "MiB/s", "peak RSS KB");
    let rg_n_name = format!("rg -n -F -e <{} literals> FILE", RG_LITERALS.len());
    let rg_c_name = format!("rg -c -F -e <{} literals> FILE", RG_LITERALS.len());
    for (name, v, rss) in [("cgleak logs FILE --output jsonl", &cg_ms, cg_peak.to_string()), (rg_n_name.as_str(), &rg_ms, rg_peak.to_string()), (rg_c_name.as_str(), &rgc_ms, "-".into())] {
        println!("  {:<40} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>12}", name, median(v), min(v), max(v), mib / (median(v) / 1000.0), rss);
    }
    println!("  ratio cgleak/(rg -n)     {ratio:.3}   (target <= {TARGET_RATIO}: {})", if ratio_ok { "met" } else { "MISSED" });
    println!("  ratio cgleak/(rg -c)     {ratio_count:.3}   (for reference: rg -c numbers no line)");
    println!("  cgleak peak RSS          {cg_peak} KB   (target <= {TARGET_RSS_KB} KB: {})", if rss_ok { "met" } else { "MISSED" });
    println!("  correctness              {}", if correct { "cgleak found exactly the planted incidents; rg printed and counted the literal lines".to_string() } else { format!("{} FAILED checks", errors.len()) });
    for e in errors.iter().take(20) {
        println!("    {e}");
    }
    println!(
        "logs_vs_rg: bytes={size} lines={} incidents={} literals={} cpus={} cgleak_median_ms={cg_med:.1} rg_median_ms={rg_med:.1} ratio={ratio:.3} rg_count_median_ms={rgc_med:.1} ratio_vs_count={ratio_count:.3} cgleak_peak_rss_kb={cg_peak} target_ratio={TARGET_RATIO} target_rss_kb={TARGET_RSS_KB} ratio_ok={ratio_ok} rss_ok={rss_ok} correct={correct}",
        plan.lines,
        plan.incidents.len(),
        RG_LITERALS.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if std::env::var_os("CGLEAK_BENCH_KEEP").is_some_and(|v| v == "1") {
        println!("logs_vs_rg: kept {}", dir.keep().join("syslog").display());
    }
    Ok(correct)
}

// ---------------------------------------------------------------- the generated logs

/// One planted incident: its line (the SLUB header's for slab), kind, errno, pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Planted {
    line: u64,
    kind: &'static str,
    errno: Option<&'static str>,
    pod: Option<String>,
}

struct Plan {
    lines: u64,
    incidents: Vec<Planted>,
    /// Line numbers of the near misses.
    near_misses: Vec<u64>,
}

impl Plan {
    fn count(&self, kind: &str) -> usize {
        self.incidents.iter().filter(|p| p.kind == kind).count()
    }

    /// The numbers of the lines holding one of the literals, in order: every incident's first
    /// line, a SLUB record's `cache:` line after it, and the near misses (the ordinary lines
    /// hold none).
    fn literal_lines(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.near_misses.clone();
        for p in &self.incidents {
            v.push(p.line);
            if p.kind == "slab_alloc_failed" {
                v.push(p.line + 1);
            }
        }
        v.sort_unstable();
        v
    }

    fn check_cgleak(&self, jsonl: &[u8]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut got = Vec::new();
        for (n, l) in jsonl.split(|&c| c == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let v: serde_json::Value = match serde_json::from_slice(l) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("jsonl line {}: {e}", n + 1));
                    continue;
                }
            };
            let keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            let want = ["cgroup_path", "component", "container_id", "errno", "host", "kind", "line", "pod_uid", "raw", "source", "time"];
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            if sorted != want {
                errors.push(format!("jsonl line {}: keys {keys:?}", n + 1));
            }
            let kind = match v["kind"].as_str() {
                Some("memcg_create_failed") => "memcg_create_failed",
                Some("slab_alloc_failed") => "slab_alloc_failed",
                Some("inotify_exhausted") => "inotify_exhausted",
                other => {
                    errors.push(format!("jsonl line {}: kind {other:?}", n + 1));
                    continue;
                }
            };
            let errno = match v["errno"].as_str() {
                Some("ENOSPC") => Some("ENOSPC"),
                Some("ENOMEM") => Some("ENOMEM"),
                Some("EBUSY") => Some("EBUSY"),
                _ => None,
            };
            got.push(Planted { line: v["line"].as_u64().unwrap_or(0), kind, errno, pod: v["pod_uid"].as_str().map(str::to_string) });
        }
        let mut want = self.incidents.clone();
        want.sort();
        got.sort();
        if got.len() != want.len() {
            errors.push(format!("cgleak reported {} incidents, {} were planted", got.len(), want.len()));
        }
        let mut shown = 0;
        let (mut i, mut j) = (0, 0);
        while (i < want.len() || j < got.len()) && shown < 10 {
            match (want.get(i), got.get(j)) {
                (Some(w), Some(g)) if w == g => {
                    i += 1;
                    j += 1;
                }
                (Some(w), Some(g)) if w.line == g.line => {
                    errors.push(format!("line {}: planted {w:?}, cgleak said {g:?}", w.line));
                    shown += 1;
                    i += 1;
                    j += 1;
                }
                (Some(w), None) => {
                    errors.push(format!("line {}: planted {w:?}, not reported", w.line));
                    shown += 1;
                    i += 1;
                }
                (Some(w), Some(g)) if w.line < g.line => {
                    errors.push(format!("line {}: planted {w:?}, not reported", w.line));
                    shown += 1;
                    i += 1;
                }
                (_, Some(g)) => {
                    errors.push(format!("line {}: reported {g:?}, not planted", g.line));
                    shown += 1;
                    j += 1;
                }
                _ => break,
            }
        }
        errors
    }
}

/// splitmix64: the one source of variety, so the file is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The node's workload: pods with their namespace, UID and containers.
struct Pod {
    ns: &'static str,
    name: String,
    uid: String,
    qos: &'static str,
    containers: Vec<(&'static str, String)>,
    ip: String,
}

fn hex(r: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n);
    while s.len() < n {
        s.push_str(&format!("{:016x}", r.next()));
    }
    s.truncate(n);
    s
}

fn uid(r: &mut Rng) -> String {
    let h = hex(r, 32);
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn pods(r: &mut Rng) -> Vec<Pod> {
    let apps = ["web", "api", "worker", "cache", "frontend", "billing", "search", "ingest", "notifier", "auth"];
    let nss = ["default", "prod", "staging", "kube-system", "monitoring", "payments"];
    let cnames = ["app", "sidecar", "istio-proxy", "log-shipper", "init-config"];
    (0..120)
        .map(|i| {
            let app = apps[i % apps.len()];
            let n = 1 + (i % 3);
            Pod {
                ns: nss[(i / 3) % nss.len()],
                name: format!("{app}-{}-{}", hex(r, 10), hex(r, 5)),
                uid: uid(r),
                qos: ["burstable", "besteffort", "guaranteed"][i % 3],
                containers: (0..n).map(|c| (cnames[c], hex(r, 64))).collect(),
                ip: format!("10.244.{}.{}", r.below(8), 2 + r.below(250)),
            }
        })
        .collect()
}

const MONTH: &str = "Dec";
const HOST: &str = "ip-10-0-1-23";
/// Share of lines (per million) of each planted kind and of near misses: about 2,500
/// incidents of each kind and 1,000 near misses in 1 GiB (5.6 million lines).
const PPM_MEMCG: u64 = 450;
const PPM_SLAB: u64 = 450;
const PPM_INOTIFY: u64 = 450;
const PPM_NEAR: u64 = 180;

struct Gen<'a> {
    w: BufWriter<File>,
    r: Rng,
    pods: &'a [Pod],
    line: u64,
    bytes: u64,
    /// Milliseconds since midnight of Dec 22.
    t_ms: u64,
    buf: String,
}

impl<'a> Gen<'a> {
    fn stamp(&self) -> (String, String, String) {
        let s = self.t_ms / 1000;
        let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
        let us = (self.t_ms % 1000) * 1000 + (self.line % 997);
        let syslog = format!("{MONTH} 22 {h:02}:{m:02}:{sec:02} {HOST}");
        let klog = format!("1222 {h:02}:{m:02}:{sec:02}.{us:06}");
        let rfc = format!("2023-12-22T{h:02}:{m:02}:{sec:02}.{us:06}{:03}Z", self.line % 1000);
        (syslog, klog, rfc)
    }

    fn emit(&mut self) -> std::io::Result<()> {
        self.buf.push('\n');
        self.w.write_all(self.buf.as_bytes())?;
        self.bytes += self.buf.len() as u64;
        self.line += 1;
        self.buf.clear();
        self.t_ms += self.r.below(3);
        Ok(())
    }

    fn pod(&mut self) -> &'a Pod {
        let pods: &'a [Pod] = self.pods;
        &pods[self.r.below(pods.len() as u64) as usize]
    }

    /// An ordinary line: kubelet (55%), containerd (35%), kernel and systemd (10%).
    fn ordinary(&mut self) {
        let (sys, kl, rfc) = self.stamp();
        let p = self.pod();
        let (ns, name, uid, ip) = (p.ns, p.name.clone(), p.uid.clone(), p.ip.clone());
        let (cname, cid) = p.containers[self.r.below(p.containers.len() as u64) as usize].clone();
        let sid = hex(&mut self.r, 64);
        let pid = 1146;
        let k = self.r.below(100);
        use std::fmt::Write as _;
        let b = &mut self.buf;
        let _ = match k {
            0..=9 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} kubelet.go:2457] \"SyncLoop (PLEG): event for pod\" pod=\"{ns}/{name}\" event={{\"ID\":\"{uid}\",\"Type\":\"ContainerStarted\",\"Data\":\"{cid}\"}}"),
            10..=16 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} prober.go:107] \"Probe failed\" probeType=\"Readiness\" pod=\"{ns}/{name}\" podUID=\"{uid}\" containerName=\"{cname}\" probeResult=\"failure\" output=\"Get \\\"http://{ip}:8080/healthz\\\": dial tcp {ip}:8080: connect: connection refused\""),
            17..=22 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} reconciler_common.go:258] \"operationExecutor.MountVolume started for volume \\\"kube-api-access-{}\\\" (UniqueName: \\\"kubernetes.io/projected/{uid}-kube-api-access-{}\\\") pod \\\"{name}\\\" (UID: \\\"{uid}\\\") \" pod=\"{ns}/{name}\"", &cid[..5], &cid[5..10]),
            23..=27 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} operation_generator.go:721] \"MountVolume.SetUp succeeded for volume \\\"config\\\" (UniqueName: \\\"kubernetes.io/configmap/{uid}-config\\\") pod \\\"{name}\\\" (UID: \\\"{uid}\\\") \" pod=\"{ns}/{name}\""),
            28..=31 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} scope.go:117] \"RemoveContainer\" containerID=\"{cid}\""),
            32..=35 => write!(b, "{sys} kubelet[{pid}]: E{kl}    {pid} pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"StartContainer\\\" for \\\"{cname}\\\" with CrashLoopBackOff: \\\"back-off 5m0s restarting failed container={cname} pod={name}_{ns}({uid})\\\"\" pod=\"{ns}/{name}\" podUID=\"{uid}\""),
            36..=38 => write!(b, "{sys} kubelet[{pid}]: E{kl}    {pid} pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"StartContainer\\\" for \\\"{cname}\\\" with ImagePullBackOff: \\\"Back-off pulling image \\\\\\\"registry.example.com/{cname}:v1.{}.{}\\\\\\\"\\\"\" pod=\"{ns}/{name}\" podUID=\"{uid}\"", k % 9, k % 4),
            39..=42 => write!(b, "{sys} kubelet[{pid}]: W{kl}    {pid} manager.go:1174] Failed to process watch event {{EventType:0 Name:/kubepods/{}/pod{uid}/{cid} WatchSource:0}}: task {cid} not found: not found", ["burstable", "besteffort"][k as usize % 2]),
            43..=46 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} kuberuntime_container.go:745] \"Killing container with a grace period\" pod=\"{ns}/{name}\" podUID=\"{uid}\" containerName=\"{cname}\" containerID=\"containerd://{cid}\" gracePeriod=30"),
            47..=49 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} reconciler_common.go:300] \"Volume detached for volume \\\"kube-api-access-{}\\\" (UniqueName: \\\"kubernetes.io/projected/{uid}-kube-api-access-{}\\\") on node \\\"{HOST}\\\" DevicePath \\\"\\\"\"", &cid[..5], &cid[5..10]),
            50..=52 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} kubelet_node_status.go:526] \"Updating node status\" node=\"{HOST}\""),
            53..=54 => write!(b, "{sys} kubelet[{pid}]: I{kl}    {pid} kuberuntime_manager.go:1166] \"Creating PodSandbox for pod\" pod=\"{ns}/{name}\""),
            55..=61 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"StartContainer for \\\"{cid}\\\" returns successfully\""),
            62..=66 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"CreateContainer within sandbox \\\"{sid}\\\" for container &ContainerMetadata{{Name:{cname},Attempt:{},}}\"", k % 5),
            67..=70 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"RunPodSandbox for &PodSandboxMetadata{{Name:{name},Uid:{uid},Namespace:{ns},Attempt:0,}} returns sandbox id \\\"{sid}\\\"\""),
            71..=74 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"StopPodSandbox for \\\"{sid}\\\" returns successfully\""),
            75..=77 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"TearDown network for sandbox \\\"{sid}\\\" successfully\""),
            78..=80 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=info msg=\"ImageCreate event name:\\\"registry.example.com/{cname}:v1.{}.0\\\" labels:{{key:\\\"io.cri-containerd.image\\\" value:\\\"managed\\\"}}\"", k % 7),
            81..=84 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=warning msg=\"cleaning up after shim disconnected\" id={cid} namespace=k8s.io"),
            85..=89 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=error msg=\"ContainerStatus for \\\"{cid}\\\" failed\" error=\"rpc error: code = NotFound desc = an error occurred when try to find container \\\"{cid}\\\": not found\""),
            90..=93 => write!(b, "{sys} kernel: [{}.{:06}] IPv6: ADDRCONF(NETDEV_CHANGE): cali{}: link becomes ready", 86_400 + self.t_ms / 1000, self.t_ms % 1000 * 1000, &sid[..11]),
            94..=96 => write!(b, "{sys} systemd[1]: Started cri-containerd-{cid}.scope - libcontainer container {cid}."),
            _ => write!(b, "{sys} systemd[1]: run-containerd-runc-k8s.io-{cid}-runc.{}.mount: Deactivated successfully.", &sid[..6]),
        };
    }

    /// A line with an errno text that is not memcg exhaustion.
    fn near_miss(&mut self) {
        let (sys, kl, rfc) = self.stamp();
        let p = self.pod();
        let (name, uid, qos) = (p.name.clone(), p.uid.clone(), p.qos);
        let cid = p.containers[0].1.clone();
        use std::fmt::Write as _;
        let b = &mut self.buf;
        let _ = match self.r.below(4) {
            0 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=error msg=\"PullImage \\\"registry.example.com/{name}:v2\\\" failed\" error=\"failed to pull and unpack image: failed to extract layer sha256:{}: write /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/4711/fs/usr/lib/libx.so: no space left on device: unknown\"", &cid),
            1 => write!(b, "{sys} kubelet[1146]: W{kl}    1146 pod_container_manager_linux.go:210] \"Failed to delete cgroup paths\" cgroupName=[kubepods {qos} pod{uid}] err=\"unable to destroy cgroup paths for cgroup [kubepods {qos} pod{uid}] : rmdir /sys/fs/cgroup/memory/kubepods/{qos}/pod{uid}: device or resource busy\""),
            2 => write!(b, "{sys} kubelet[1146]: E{kl}    1146 exec.go:87] \"Exec probe failed\" err=\"fork/exec /usr/bin/nsenter: cannot allocate memory\" pod=\"default/{name}\""),
            _ => write!(b, "{sys} fluent-bit[2201]: [2023/12/22 08:00:00] [error] [input:tail:tail.0] inotify_add_watch(/var/log/containers/{name}_default_app-{cid}.log): No space left on device"),
        };
    }

    /// A planted incident; returns what cgleak must report.
    fn incident(&mut self, kind: &'static str) -> std::io::Result<Planted> {
        let (sys, kl, rfc) = self.stamp();
        let p = self.pod();
        let (ns, name, uid, qos) = (p.ns, p.name.clone(), p.uid.clone(), p.qos);
        let cid = p.containers[0].1.clone();
        let line = self.line + 1;
        use std::fmt::Write as _;
        let b = &mut self.buf;
        let planted = match kind {
            "memcg_create_failed" => {
                let (errno, text) = [("ENOSPC", "no space left on device"), ("ENOMEM", "cannot allocate memory"), ("EBUSY", "device or resource busy")][self.r.below(3) as usize];
                let v1 = format!("/sys/fs/cgroup/memory/kubepods/{qos}/pod{uid}/{cid}");
                let _ = match self.r.below(4) {
                    0 => write!(b, "{sys} kubelet[1146]: E{kl}    1146 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"CreatePodSandbox\\\" for \\\"{name}_{ns}({uid})\\\" with CreatePodSandboxError: \\\"Failed to create sandbox for pod \\\\\\\"{name}_{ns}({uid})\\\\\\\": rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir {v1}: {text}: unknown\\\"\" pod=\"{ns}/{name}\" podUID=\"{uid}\""),
                    1 => write!(b, "{sys} containerd[873]: time=\"{rfc}\" level=error msg=\"RunPodSandbox for &PodSandboxMetadata{{Name:{name},Uid:{uid},Namespace:{ns},Attempt:0,}} failed, error\" error=\"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir {v1}: {text}: unknown\""),
                    2 => write!(b, "{sys} dockerd[901]: time=\"{rfc}\" level=error msg=\"Handler for POST /v1.41/containers/{cid}/start returned error: OCI runtime create failed: container_linux.go:367: starting container process caused: process_linux.go:340: applying cgroup configuration for process caused: mkdir {v1}: {text}: unknown\""),
                    _ => write!(b, "{sys} runc[4242]: time=\"{rfc}\" level=error msg=\"runc create failed: unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{cid}.scope: {text}\"", uid.replace('-', "_")),
                };
                Planted { line, kind, errno: Some(errno), pod: Some(uid) }
            }
            "inotify_exhausted" => {
                let _ = write!(b, "{sys} kubelet[1146]: W{kl}    1146 watcher.go:93] Error while processing event (\"/sys/fs/cgroup/memory/kubepods/{qos}/pod{uid}/{cid}\": 0x40000100 == IN_CREATE|IN_ISDIR): inotify_add_watch /sys/fs/cgroup/memory/kubepods/{qos}/pod{uid}/{cid}: no space left on device");
                Planted { line, kind, errno: Some("ENOSPC"), pod: Some(uid) }
            }
            _ => {
                let ts = format!("[{}.{:06}]", 86_400 + self.t_ms / 1000, self.t_ms % 1000 * 1000);
                let _ = write!(b, "{sys} kernel: {ts} SLUB: Unable to allocate memory on node -1 (gfp=0x20)");
                self.emit()?;
                let (sys, _, _) = self.stamp();
                let _ = write!(self.buf, "{sys} kernel: {ts}   cache: kmalloc-256(1793:{cid}), object size: 256, buffer size: 256, default order: 1, min order: 0");
                Planted { line, kind: "slab_alloc_failed", errno: None, pod: None }
            }
        };
        self.emit()?;
        Ok(planted)
    }
}

/// Write about `bytes` of logs to `path`; returns what was planted.
fn generate(path: &Path, bytes: u64) -> std::io::Result<Plan> {
    let mut r = Rng(0x00c9_1eac_2023_1222);
    let pods = pods(&mut r);
    let mut g = Gen { w: BufWriter::with_capacity(1 << 20, File::create(path)?), r, pods: &pods, line: 0, bytes: 0, t_ms: 0, buf: String::with_capacity(1024) };
    let mut incidents = Vec::new();
    let mut near_misses = Vec::new();
    while g.bytes < bytes {
        let x = g.r.below(1_000_000);
        if x < PPM_MEMCG {
            incidents.push(g.incident("memcg_create_failed")?);
        } else if x < PPM_MEMCG + PPM_SLAB {
            incidents.push(g.incident("slab_alloc_failed")?);
        } else if x < PPM_MEMCG + PPM_SLAB + PPM_INOTIFY {
            incidents.push(g.incident("inotify_exhausted")?);
        } else if x < PPM_MEMCG + PPM_SLAB + PPM_INOTIFY + PPM_NEAR {
            g.near_miss();
            near_misses.push(g.line + 1);
            g.emit()?;
        } else {
            g.ordinary();
            g.emit()?;
        }
    }
    g.w.flush()?;
    Ok(Plan { lines: g.line, incidents, near_misses })
}

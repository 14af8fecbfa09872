//! The incident parser on hostile input: random bytes (also spliced with signature
//! fragments, to reach the field extraction), non-UTF-8, and very long lines. It must
//! never panic, keep `raw` within 8 KiB, and stay linear on long lines.

use std::time::{Duration, Instant};

use cgleak_model::incidents::{IncidentKind, IncidentParser, RAW_MAX};
use cgleak_readers::logline::{LineMeta, LogLine};

/// xorshift64*: a fixed, dependency-free random stream.
use cgleak_fixtures::rng::Rng;

const FRAGMENTS: &[&[u8]] = &[
    b"mkdir ",
    b"/sys/fs/cgroup/memory/",
    b"/sys/fs/cgroup/",
    b"kubepods",
    b".slice",
    b"/pod",
    b": no space left on device",
    b": cannot allocate memory",
    b": Device or resource busy",
    b"No space left on device - failed to create directory '",
    b"SLUB: Unable to allocate memory on node -1 (gfp=0x20)",
    b"  cache: kmalloc-64(12:",
    b")",
    b"(",
    b"  node 0: slabs: 1",
    b"inotify_add_watch ",
    b"Dec 22 08:00:00 ",
    b"host ",
    b"kubelet[1]: ",
    b"kernel: ",
    b"E1222 08:00:00.123456 ",
    b"[12.5] ",
    b"time=\"2020-12-22T08:00:01.2+08:00\" ",
    b"\"timestamp\":\"1472766268.5\"",
    b"podUID=",
    b"3f1c2a9e-8b7d-4e6f-9a10-2b3c4d5e6f70",
    b"3f1c2a9e_8b7d_4e6f_9a10_2b3c4d5e6f70",
    b"docker-",
    b".scope",
    b"0b1e6f3c5a7d9e2f4b6c8a0d1e3f5a7b9c2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f",
    b"\\\"",
    b"\xe2\x80\x98",
    b"\xe2\x80\x99",
    b"\xff\xfe",
    b"\xe2\x80",
    b" ",
    b":",
    b"-",
    b"lxc 20160602083833.650 ",
    b"[Thu Dec 12 10:00:00 2019] ",
    b"  kubelet, ",
    b"2023-12-22T08:00:00.1+0100 ",
    b"stderr F ",
    b"\t",
    b"\r",
    b"no space left on devic",
    b"cannot allocate memor...",
    "：".as_bytes(),
    "SLUB：Unable to allocate memory on node -1".as_bytes(),
    b"cache: kmalloc-64, object size: 64",
    b", object size: ",
    b"node 1: slabs: 2, objs: 3, free: 0",
    b"slab_out_of_memory: 53 callbacks suppressed",
    b"___slab_alloc: 7 callbacks suppressed",
    b"  kmalloc-64 debugging increased min order",
    b"[Thu May 14 10:00:00 2020] ",
    b"inotify_init: too many open files",
    b"tail: inotify resources exhausted",
    b"Failed to add control inotify watch descriptor for control group /kubepods.slice",
    b"\\x2d",
    b"pod0f6b3c2e\\x2d8a1d\\x2d4f5e\\x2d9c7b\\x2d2d4e6f8a0b1c",
];

fn feed_all(p: &mut IncidentParser, data: &[u8], meta: &LineMeta) -> usize {
    let mut out = Vec::new();
    for (n, line) in data.split(|c| *c == b'\n').enumerate() {
        let l = LogLine { source: "fuzz", line: n as u64 + 1, text: line, meta };
        let may = p.may_match(line);
        let before = out.len();
        p.feed(&l, &mut out);
        if !may {
            assert_eq!(out.len(), before, "may_match false but feed completed an incident");
        }
    }
    p.finish(&mut out);
    for i in &out {
        assert!(i.raw.len() <= RAW_MAX, "raw of {} bytes", i.raw.len());
    }
    out.len()
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let metas = [
        LineMeta::default(),
        LineMeta { kernel: true, continuation: true, ..LineMeta::default() },
        LineMeta {
            time: Some("2024-01-01T00:00:00Z".into()),
            host: Some("h".into()),
            unit: Some("kubelet.service".into()),
            ..LineMeta::default()
        },
    ];
    let mut found = 0;
    for round in 0..3000 {
        let mut data = Vec::new();
        let pieces = 1 + rng.below(40);
        for _ in 0..pieces {
            if rng.below(3) == 0 {
                let n = rng.below(24);
                data.extend((0..n).map(|_| rng.next() as u8));
            } else {
                data.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
            if rng.below(8) == 0 {
                data.push(b'\n');
            }
        }
        let mut p = IncidentParser::new(1970 + (round % 200) as i32);
        found += feed_all(&mut p, &data, &metas[round % metas.len()]);
    }
    // The fragments must have reached the extraction code, not only the prefilter.
    assert!(found > 100, "only {found} incidents from spliced input");
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

#[test]
fn ten_megabyte_lines() {
    const MB10: usize = 10 * 1024 * 1024;
    let meta = LineMeta::default();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // No match at all.
    cases.push(vec![b'a'; MB10]);
    // A match at the very end of 10 MB without whitespace (the path scan is bounded).
    let mut v = vec![b'/'; MB10];
    v.extend_from_slice(b"mkdir /sys/fs/cgroup/memory/x: no space left on device");
    cases.push(v);
    // Errno text repeated across the whole line: only the first hits are classified.
    cases.push(b": no space left on device ".repeat(MB10 / 26));
    // Many "pod" and "(" candidates for the ID scans, with one incident in front.
    let mut v = b"mkdir /sys/fs/cgroup/memory/kubepods/x: cannot allocate memory ".to_vec();
    v.extend(b"pod(".repeat(MB10 / 4));
    cases.push(v);
    // Invalid UTF-8 everywhere.
    let mut v: Vec<u8> = (0..MB10).map(|i| 0x80 | (i as u8 & 0x3f)).collect();
    v.extend_from_slice(b" mkdir /sys/fs/cgroup/memory/\xff\xfe: device or resource busy");
    cases.push(v);
    // A SLUB header followed by a giant continuation line.
    let mut v = b"SLUB: Unable to allocate memory on node -1 (gfp=0x20)\n  cache: kmalloc-64(1:".to_vec();
    v.extend(vec![b'x'; MB10]);
    v.extend_from_slice(b"), object size: 64");
    cases.push(v);

    let expect = [0usize, 1, 0, 1, 1, 1];
    for (n, (data, want)) in cases.iter().zip(expect).enumerate() {
        let mut p = IncidentParser::new(2024);
        let mut got = 0;
        let d = timed(|| got = feed_all(&mut p, data, &meta));
        eprintln!("case {n}: {d:?}");
        assert_eq!(got, want, "case {n}");
        // Linear: a few passes over 10 MB, even unoptimized.
        assert!(d < Duration::from_secs(20), "case {n} took {d:?}");
    }
}

#[test]
fn raw_is_truncated_with_a_marker() {
    let mut line = b"mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on device ".to_vec();
    line.extend(vec![b'\xff'; 20_000]);
    let mut p = IncidentParser::new(2024);
    let mut out = Vec::new();
    p.feed(&LogLine { source: "s", line: 7, text: &line, meta: &LineMeta::default() }, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].raw.len() <= RAW_MAX);
    assert!(out[0].raw.ends_with("…[truncated]"), "{}", &out[0].raw[out[0].raw.len() - 40..]);
    assert_eq!(out[0].line, 7);
}

#[test]
fn slub_record_is_held_until_a_non_continuation_line() {
    let meta = LineMeta::default();
    let mut p = IncidentParser::new(2024);
    let mut out = Vec::new();
    let lines: [&[u8]; 4] = [
        b"[10.0] SLUB: Unable to allocate memory on node -1 (gfp=0x20)",
        b"[10.1]   cache: dentry(4051:3f1c2a9e), object size: 192, buffer size: 192, default order: 0, min order: 0",
        b"[10.2]   node 0: slabs: 1, objs: 21, free: 0",
        b"[11.0] eth0: link up",
    ];
    for (i, t) in lines.iter().enumerate() {
        assert!(p.may_match(t), "line {i} must reach feed while the record is pending");
        p.feed(&LogLine { source: "k", line: i as u64 + 1, text: t, meta: &meta }, &mut out);
        assert_eq!(out.len(), usize::from(i == 3), "after line {i}");
    }
    assert!(!p.pending());
    assert_eq!(out[0].kind, IncidentKind::SlabAllocFailed);
    assert_eq!(out[0].cgroup_path.as_deref(), Some("3f1c2a9e"));
    assert_eq!(out[0].raw.lines().count(), 3);
    assert!(!p.may_match(b"[11.1] eth0: link up"));
    // finish() flushes a record still pending at the end of input.
    p.feed(&LogLine { source: "k", line: 5, text: lines[0], meta: &meta }, &mut out);
    assert!(p.pending());
    p.finish(&mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn find_candidate_skips_to_the_signature_line() {
    let p = IncidentParser::new(2024);
    let buf = b"I0101 00:00:00.1 1 a.go:1] fine\nI0101 00:00:00.2 1 a.go:1] fine\nE0101 x mkdir /sys/fs/cgroup/memory/a: cannot allocate memory\n";
    let at = p.find_candidate(buf).unwrap();
    let line_start = buf[..at].iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
    assert!(buf[line_start..].starts_with(b"E0101"));
    assert_eq!(p.find_candidate(b"nothing here\nat all\n"), None);
}

/// Lines of SLUB records (whole, without a header, rate-limited, global, with a min-order
/// line) among other lines, as a part boundary may cut them.
const SLUB_MIX: &[&str] = &[
    "[1.0] slab_out_of_memory: 53 callbacks suppressed",
    "[1.0] SLUB: Unable to allocate memory on node -1 (gfp=0x20)",
    "[1.0]   cache: kmalloc-64(12:pod0f6b3c2e-8a1d-4f5e-9c7b-2d4e6f8a0b1c), object size: 64, buffer size: 64",
    "[1.0]   node 0: slabs: 1, objs: 2, free: 0",
    "[1.0]   node 1: slabs: 1, objs: 2, free: 0",
    "[2.0] ___slab_alloc: 7 callbacks suppressed",
    "[2.0] SLUB: Unable to allocate memory on node -1, gfp=0x820(GFP_ATOMIC)",
    "[2.0]   cache: skbuff_small_head, object size: 480, buffer size: 544, default order: 1, min order: 0",
    "[2.0]   skbuff_small_head debugging increased min order, use slub_debug=O to disable.",
    "[2.0]   node 0: slabs: 18, objs: 270, free: 0",
    "[3.0]   cache: kmalloc-128(77:abc), object size: 128, buffer size: 128",
    "[3.0]   node 0: slabs: 3, objs: 4, free: 0",
    "[4.0] eth0: link up",
    "[5.0]   node 0: slabs: 5, objs: 6, free: 0",
    "[6.0] mkdir /sys/fs/cgroup/memory/kubepods/x: no space left on device",
    "[7.0] SLUB: Unable to allocate memory on node -1 (gfp=0x20)",
];

fn run_lines(p: &mut IncidentParser, lines: &[Vec<u8>], first: u64, meta: &LineMeta, out: &mut Vec<(u64, String)>) {
    let mut got = Vec::new();
    for (i, t) in lines.iter().enumerate() {
        if p.may_match(t) {
            p.feed(&LogLine { source: "k", line: first + i as u64, text: t, meta }, &mut got);
        }
    }
    p.finish(&mut got);
    out.extend(got.into_iter().map(|i| (i.line, i.raw)));
}

/// A source read in two parts (the second from a line start within any record) gives the
/// incidents of one sequential read: the first part completes the record the cut falls
/// in (`feed_continuation`), the second leaves it alone (`resume_after`).
#[test]
fn parts_cut_anywhere_agree_with_one_pass() {
    let meta = LineMeta::default();
    let mut rng = Rng(0x51AB_5EED);
    for round in 0..120 {
        let lines: Vec<Vec<u8>> = (0..30).map(|_| SLUB_MIX[rng.below(SLUB_MIX.len())].as_bytes().to_vec()).collect();
        let mut whole = Vec::new();
        run_lines(&mut IncidentParser::new(2024), &lines, 1, &meta, &mut whole);
        for cut in 1..lines.len() {
            let mut got = Vec::new();
            let mut a = IncidentParser::new(2024);
            let mut a_out = Vec::new();
            for (i, t) in lines[..cut].iter().enumerate() {
                if a.may_match(t) {
                    a.feed(&LogLine { source: "k", line: i as u64 + 1, text: t, meta: &meta }, &mut a_out);
                }
            }
            let mut n = cut;
            while a.pending() && n < lines.len() {
                if !a.feed_continuation(&LogLine { source: "k", line: n as u64 + 1, text: &lines[n], meta: &meta }, &mut a_out) {
                    break;
                }
                n += 1;
            }
            a.finish(&mut a_out);
            got.extend(a_out.into_iter().map(|i| (i.line, i.raw)));
            let mut b = IncidentParser::new(2024);
            b.resume_after(&lines[..cut].join(&b'\n'));
            run_lines(&mut b, &lines[cut..], cut as u64 + 1, &meta, &mut got);
            assert_eq!(got, whole, "round {round}, cut before line {}", cut + 1);
        }
    }
}

/// The SLUB literals are 3 bytes (`SLU`, `sla`): a line with many of them before its errno
/// text (a path through `translate`, `islands`, ...) is still read to the errno, and a
/// SLUB literal in an ordinary line completes nothing.
#[test]
fn many_slub_literal_hits_before_the_errno() {
    let meta = LineMeta::default();
    let mut p = IncidentParser::new(2024);
    let mut out = Vec::new();
    let dirs = "translate-slab-islands-".repeat(20);
    let line = format!("E1222 00:00:00.000000 1146 pod_workers.go:951] \"Error syncing pod\" err=\"mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod{dirs}: no space left on device\"");
    assert!(line.matches("sla").count() >= 40);
    assert!(p.may_match(line.as_bytes()));
    p.feed(&LogLine { source: "kubelet", line: 1, text: line.as_bytes(), meta: &meta }, &mut out);
    p.finish(&mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, IncidentKind::MemcgCreateFailed);

    let mut out = Vec::new();
    for (i, t) in [&b"I1222 00:00:01.000000 1146 translate.go:10] \"SLURM job islands\""[..], b"[12.0] slab reclaim done"].iter().enumerate() {
        p.feed(&LogLine { source: "k", line: i as u64 + 2, text: t, meta: &meta }, &mut out);
    }
    p.finish(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

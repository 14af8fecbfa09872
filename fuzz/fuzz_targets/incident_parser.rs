//! Arbitrary bytes, split into lines, through the incident parser: feed/finish must never
//! panic, may_match must never reject a line that completes an incident, and raw stays
//! within 8 KiB; the same lines cut in two parts (resume_after / feed_continuation) never
//! panic either. The first byte picks the line metadata, the reference year and the cut;
//! the second the source's word on the writer (trust): plain text, the kubelet's own file,
//! a kmsg facility. Trust goes with the writer: a trusted incident from plain text names a
//! believed program in its syslog tag, and user space can never be trusted as the kernel.
#![no_main]

use cgleak_model::incidents::{IncidentParser, RAW_MAX};
use cgleak_readers::logline::{LineMeta, LogLine, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, body) = match data.split_first() {
        Some((f, b)) => (*f, b),
        None => (0, data),
    };
    let (origin_byte, body) = match body.split_first() {
        Some((o, b)) if flags & 128 != 0 => (*o, b),
        _ => (0, body),
    };
    let origin = match origin_byte % 4 {
        0 => Origin::Text,
        1 => Origin::FileOf("kubelet"),
        2 => Origin::Kmsg { facility: 0 },
        _ => Origin::Kmsg { facility: 1 + origin_byte / 4 % 23 },
    };
    let meta = LineMeta {
        time: (flags & 1 != 0).then(|| "2024-01-01T00:00:00Z".to_string()),
        host: (flags & 2 != 0).then(|| "fuzz-host".to_string()),
        unit: (flags & 4 != 0).then(|| "kubelet.service".to_string()),
        kernel: flags & 8 != 0,
        continuation: flags & 16 != 0,
        origin: origin.clone(),
    };
    let mut p = IncidentParser::new(1900 + i32::from(flags));
    let _ = p.find_candidate(body);
    let mut out = Vec::new();
    for (n, line) in body.split(|c| *c == b'\n').enumerate() {
        let before = out.len();
        let may = p.may_match(line);
        p.feed(&LogLine { source: "fuzz", line: n as u64 + 1, text: line, meta: &meta }, &mut out);
        assert!(may || out.len() == before, "may_match rejected a line that completed an incident");
    }
    p.finish(&mut out);
    for i in &out {
        assert!(i.raw.len() <= RAW_MAX);
        assert_eq!(i.source, "fuzz");
        assert!(!i.origin.is_empty());
        if i.trusted {
            match origin {
                Origin::Text => assert!(i.origin.starts_with("syslog tag "), "{}", i.origin),
                Origin::FileOf(_) => assert!(i.origin.starts_with("syslog tag ") || i.origin == "kubelet's own log file", "{}", i.origin),
                Origin::Kmsg { facility: 0 } => assert_eq!(i.origin, "the kernel (/dev/kmsg)"),
                Origin::Kmsg { .. } => assert!(i.origin.contains("wrote it to /dev/kmsg"), "{}", i.origin),
                Origin::Journal(_) => unreachable!(),
            }
        }
    }

    // The same lines read in two parts, cut at a line start, as the parallel file reader
    // does: the first part completes a pending record past its end, the second resumes
    // after the text before it. Neither may panic.
    let lines: Vec<&[u8]> = body.split(|c| *c == b'\n').collect();
    let cut = usize::from(flags >> 5) % lines.len().max(1);
    if cut > 0 {
        let mut a = IncidentParser::new(1900 + i32::from(flags));
        let mut parts = Vec::new();
        for (n, line) in lines[..cut].iter().enumerate() {
            if a.may_match(line) {
                a.feed(&LogLine { source: "fuzz", line: n as u64 + 1, text: line, meta: &meta }, &mut parts);
            }
        }
        let mut n = cut;
        while a.pending() && n < lines.len() && a.feed_continuation(&LogLine { source: "fuzz", line: n as u64 + 1, text: lines[n], meta: &meta }, &mut parts) {
            n += 1;
        }
        a.finish(&mut parts);
        let mut b = IncidentParser::new(1900 + i32::from(flags));
        b.resume_after(&lines[..cut].join(&b'\n'));
        for (n, line) in lines[cut..].iter().enumerate() {
            if b.may_match(line) {
                b.feed(&LogLine { source: "fuzz", line: (cut + n) as u64 + 1, text: line, meta: &meta }, &mut parts);
            }
        }
        b.finish(&mut parts);
        for i in &parts {
            assert!(i.raw.len() <= RAW_MAX);
        }
    }
});

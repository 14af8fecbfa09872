//! Arbitrary bytes, split into lines, through the incident parser: feed/finish must never
//! panic, may_match must never reject a line that completes an incident, and raw stays
//! within 8 KiB. The first byte picks the line metadata and the reference year.
#![no_main]

use cgleak_model::incidents::{IncidentParser, RAW_MAX};
use cgleak_readers::logline::{LineMeta, LogLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, body) = match data.split_first() {
        Some((f, b)) => (*f, b),
        None => (0, data),
    };
    let meta = LineMeta {
        time: (flags & 1 != 0).then(|| "2024-01-01T00:00:00Z".to_string()),
        host: (flags & 2 != 0).then(|| "fuzz-host".to_string()),
        unit: (flags & 4 != 0).then(|| "kubelet.service".to_string()),
        kernel: flags & 8 != 0,
        continuation: flags & 16 != 0,
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
    }
});

//! Arbitrary bytes as one /dev/kmsg record: `parse_record` must never panic, and what it
//! returns goes on through the incident parser as the kmsg source hands it over.
#![no_main]

use cgleak_model::incidents::IncidentParser;
use cgleak_readers::kmsg::parse_record;
use cgleak_readers::logline::{LineMeta, LogLine, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(rec) = parse_record(data) else { return };
    assert!(rec.priority <= 7);
    let kernel = rec.facility == 0;
    let origin = Origin::Kmsg { facility: rec.facility };
    let meta = LineMeta { kernel, continuation: rec.flags == '+', origin: origin.clone(), ..LineMeta::default() };
    let mut p = IncidentParser::new(2024);
    let mut out = Vec::new();
    p.feed(&LogLine { source: "kmsg", line: rec.seq, text: &rec.message, meta: &meta }, &mut out);
    let dict_meta = LineMeta { kernel, continuation: true, origin, ..LineMeta::default() };
    for (k, v) in &rec.dict {
        let line = format!(" {k}={v}");
        p.feed(&LogLine { source: "kmsg", line: rec.seq, text: line.as_bytes(), meta: &dict_meta }, &mut out);
    }
    p.finish(&mut out);
    // User space writing to /dev/kmsg is never taken for the kernel.
    for i in &out {
        assert!(!(rec.facility != 0 && i.trusted && i.origin.contains("the kernel")), "{}", i.origin);
    }
});

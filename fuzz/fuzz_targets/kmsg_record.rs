//! Arbitrary bytes as one /dev/kmsg record: `parse_record` must never panic, and what it
//! returns goes on through the incident parser as the kmsg source hands it over.
#![no_main]

use cgleak_model::incidents::IncidentParser;
use cgleak_readers::kmsg::parse_record;
use cgleak_readers::logline::{LineMeta, LogLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(rec) = parse_record(data) else { return };
    assert!(rec.priority <= 7);
    let meta = LineMeta { kernel: true, continuation: rec.flags == '+', ..LineMeta::default() };
    let mut p = IncidentParser::new(2024);
    let mut out = Vec::new();
    p.feed(&LogLine { source: "kmsg", line: rec.seq, text: &rec.message, meta: &meta }, &mut out);
    let dict_meta = LineMeta { kernel: true, continuation: true, ..LineMeta::default() };
    for (k, v) in &rec.dict {
        let line = format!(" {k}={v}");
        p.feed(&LogLine { source: "kmsg", line: rec.seq, text: line.as_bytes(), meta: &dict_meta }, &mut out);
    }
    p.finish(&mut out);
});

//! Arbitrary bytes as `journalctl -o json` output (cgleak_readers::logs::journal::read_journal)
//! through the incident parser, as `cgleak logs --journal` reads it: never a panic, every
//! incident's entry number is one that was read, and an incident is trusted only by what
//! journald itself records about the sender: never for an entry that is a container's output
//! (CONTAINER_NAME/CONTAINER_ID), never for one that names its sender only by its own
//! SYSLOG_IDENTIFIER.
#![no_main]

use std::io::Cursor;

use cgleak_model::incidents::Incident;
use cgleak_model::node_logs::IncidentParsers;
use cgleak_readers::logs::journal::read_journal;
use cgleak_readers::logs::read::{FindingSink, SinkMaker};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The sink `cgleak logs --journal` reads through (cgleak_model::node_logs).
    let mut found: Vec<Incident> = Vec::new();
    let mut emit = |i| found.push(i);
    let mut sink = IncidentParsers.sink(2024, &mut emit);
    let Ok(st) = read_journal(&mut Cursor::new(data), "journald", &mut sink) else { return };
    sink.finish();
    // Entries as read_journal numbers them: lines that are not blank.
    let entries: Vec<&[u8]> = data.split(|c| *c == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()).collect();
    assert_eq!(st.entries, entries.len() as u64);
    for i in &found {
        assert!(i.line >= 1 && i.line <= st.entries, "entry {} of {}", i.line, st.entries);
        if !i.trusted {
            continue;
        }
        assert!(i.origin.starts_with("journald: "), "{}", i.origin);
        let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(entries[i.line as usize - 1]) else {
            panic!("a trusted incident from an entry that is not a JSON object: {}", i.origin)
        };
        for k in ["CONTAINER_NAME", "CONTAINER_ID", "CONTAINER_ID_FULL"] {
            assert!(!e.contains_key(k) || e[k].is_null(), "trusted container output: {}", i.origin);
        }
        assert!(["_TRANSPORT", "_SYSTEMD_UNIT", "_COMM"].iter().any(|k| e.contains_key(*k)), "trusted on SYSLOG_IDENTIFIER alone: {}", i.origin);
    }
});

//! Arbitrary bytes as the fixer's journal (`<state-dir>/fix-journal.jsonl`), through its
//! public parser (cgleak_actions::fix::journal::parse), as `cgleak fix --resume` reads it:
//! never a panic, and the same bytes always read the same.
#![no_main]

use std::path::Path;

use cgleak_actions::fix::journal::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/var/lib/cgleak/fix/fix-journal.jsonl");
    let a = parse(path, data);
    let b = parse(path, data);
    assert_eq!(a.is_ok(), b.is_ok());
    if let (Err(x), Err(y)) = (&a, &b) {
        assert_eq!(x.to_string(), y.to_string());
    }
});

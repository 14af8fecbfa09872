//! Arbitrary bytes as a flat-keyed cgroup file (`memory.stat`, `cgroup.stat`;
//! cgleak_readers::cgroupfs::parse_flat_keyed): never a panic; keys hold no whitespace, and
//! the map written out as `key value` lines reads back the same.
#![no_main]

use std::path::Path;

use cgleak_readers::cgroupfs::parse_flat_keyed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/sys/fs/cgroup/memory.stat");
    let Ok(map) = parse_flat_keyed(path, &text) else { return };
    assert!(map.len() <= text.lines().count());
    for k in map.keys() {
        assert!(!k.is_empty() && !k.chars().any(char::is_whitespace), "{k:?}");
    }
    let again: String = map.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    assert_eq!(parse_flat_keyed(path, &again).expect("its own lines parse"), map);
});

//! Arbitrary bytes as names of per-memcg slab caches (`/sys/kernel/slab/<cache>/cgroup/<name>`,
//! `dentry(1234:pod123)`; cgleak_readers::slab): parsing never panics, a name it takes is
//! written back the same way and parses to the same cache, and the count of dead caches over
//! the names never panics and stays consistent.
#![no_main]

use cgleak_readers::slab::{dead_cache_summary, parse_memcg_cache_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut caches = Vec::new();
    for name in text.split('\n') {
        let Some(c) = parse_memcg_cache_name(name) else { continue };
        assert!(!c.cache.is_empty() && !c.cgroup_name.is_empty(), "{name:?}");
        assert!(name.starts_with(&c.cache) && name.ends_with(&format!(":{})", c.cgroup_name)), "{name:?} -> {c:?}");
        let again = format!("{}({}:{})", c.cache, c.id, c.cgroup_name);
        assert_eq!(parse_memcg_cache_name(&again).as_ref(), Some(&c), "{again:?}");
        caches.push(c);
    }
    // Half the names live, by their first byte.
    let s = dead_cache_summary(&caches, &|n: &str| n.bytes().next().is_some_and(|b| b % 2 == 0));
    assert_eq!(s.per_memcg_caches, caches.len() as u64);
    assert!(s.dead_caches <= s.per_memcg_caches && s.dead_ids <= s.distinct_ids && s.distinct_ids <= s.per_memcg_caches);
});

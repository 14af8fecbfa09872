//! kmem-active memcgs are read from a sample when there are many, and the census says so.
//!
//! Fixture: CentOS 7 3.10.0-957 (kmem accounting opt-in, docs/kernel-facts.md section 3)
//! with 1,500 extra memcgs, every second one kmem-active.

mod common;

use std::fs;

use common::fixture::{at, on_fixture};

#[test]
fn kmem_active_is_sampled_above_the_sample_size_and_says_so() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let before = on_fixture(&f, &["status", "--output", "json"]).json();
    let base_active = at(&before, "memcg.kmem_active").as_u64().expect("3.10 counts kmem-active memcgs");
    assert!(at(&before, "memcg.kmem_active_sample").is_null(), "a small tree is read whole");
    let base_live = at(&before, "memcg.live").as_u64().unwrap();

    let bulk = f.path("/sys/fs/cgroup/memory/bulk");
    for i in 0..1500u32 {
        let d = bulk.join(format!("c{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
        fs::write(d.join("memory.kmem.usage_in_bytes"), if i % 2 == 0 { "65536\n" } else { "0\n" }).unwrap();
        fs::write(d.join("memory.kmem.slabinfo"), "slabinfo - version: 2.1\n# name <active_objs> <num_objs>\n").unwrap();
    }
    fs::write(bulk.join("cgroup.procs"), "").unwrap();
    let after = on_fixture(&f, &["status", "--output", "json"]).json();
    let total = base_live - 1 + 1501; // every memcg but the root: the old ones, bulk, and its 1,500 children
    let sample = at(&after, "memcg.kmem_active_sample");
    assert_eq!(sample["of"].as_u64(), Some(total), "{sample}");
    assert_eq!(sample["sampled"].as_u64(), Some(1000), "{sample}");
    let est = at(&after, "memcg.kmem_active").as_u64().unwrap();
    let truth = base_active + 750;
    // A sample of 1,000 out of ~1,535 with p ~ 0.5: well within 10% of the truth.
    assert!(est.abs_diff(truth) <= truth / 10, "estimate {est}, truth {truth}");
    let note = at(&after, "memcg.kmem_active_note").as_str().unwrap();
    assert!(note.contains("sample of 1000"), "{note}");
}

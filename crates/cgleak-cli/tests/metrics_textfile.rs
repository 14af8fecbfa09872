//! `cgleak status --textfile FILE` on fixture host roots: the file is written whole, the
//! normal output is still printed, and Prometheus' own `promtool check metrics` accepts it
//! (lint included). promtool comes from Debian's `prometheus` package (scripts/test-all.sh
//! installs it); without it these tests fail, they never pass by testing nothing.

mod common;

use std::fs;
use std::path::Path;

use common::fixture::{on_fixture, Fixture};
use common::prom::{has_series, promtool_check_metrics};

fn textfile_of(f: &Fixture, dir: &Path) -> String {
    let path = dir.join(format!("{}.prom", f.name));
    let run = on_fixture(f, &["status", "--textfile", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("65535"), "the table is still printed: {run:#?}");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (code, said) = promtool_check_metrics(text.as_bytes());
    assert_eq!(code, 0, "promtool check metrics rejected {}:\n{said}\n---\n{text}", path.display());
    assert!(said.trim().is_empty(), "promtool had something to say:\n{said}\n---\n{text}");
    text
}

#[test]
fn textfile_passes_promtool_on_6_12_v2() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let text = textfile_of(&f, dir.path());
    for name in [
        "cgleak_build_info",
        "cgleak_memcg_live",
        "cgleak_memcg_dying",
        "cgleak_memcg_ids_in_use",
        "cgleak_memcg_id_limit",
        "cgleak_memcg_headroom",
        "cgleak_sample_duration_seconds",
    ] {
        assert!(has_series(&text, name), "{name} missing:\n{text}");
    }
    assert!(!has_series(&text, "cgleak_memcg_kmem_active"), "{text}");
    // 6.12: no per-memcg slab caches (5.9+).
    assert!(!has_series(&text, "cgleak_memcg_dead_slab_ids"), "{text}");
    // Only the .prom file is left: the temporary was renamed over it.
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec![format!("{}.prom", f.name)]);
}

#[test]
fn textfile_passes_promtool_on_el7_without_dying() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let dir = tempfile::tempdir().unwrap();
    let text = textfile_of(&f, dir.path());
    assert!(!has_series(&text, "cgleak_memcg_dying"), "{text}");
    assert!(!has_series(&text, "cgleak_memcg_headroom"), "{text}");
    assert!(has_series(&text, "cgleak_memcg_kmem_active"), "{text}");
    // What warns early there: the lower bound, said to be one, and the dead slab IDs.
    assert!(text.contains("cgleak_memcg_ids_in_use_confidence{confidence=\"lower_bound\"} 1\n"), "{text}");
    assert!(has_series(&text, "cgleak_memcg_ids_in_use") && has_series(&text, "cgleak_memcg_dead_slab_ids"), "{text}");
}

#[test]
fn textfile_passes_promtool_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    for (name, build) in cgleak_fixtures::all() {
        let f = build();
        let text = textfile_of(&f, dir.path());
        assert!(has_series(&text, "cgleak_memcg_live"), "{name}:\n{text}");
    }
}

#[test]
fn unwritable_textfile_names_the_file() {
    let f = cgleak_fixtures::debian_6_12_v2_dying_subsys();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir/cgleak.prom");
    let run = on_fixture(&f, &["status", "--textfile", path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains(&format!("{}.tmp.", path.display())), "{run:#?}");
}

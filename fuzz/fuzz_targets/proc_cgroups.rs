//! Arbitrary bytes as `/proc/cgroups` (cgleak_readers::procfs::parse_proc_cgroups): never a
//! panic, one row per line that is not a comment or blank, and what it read reads back the
//! same when written out again.
#![no_main]

use std::path::Path;

use cgleak_readers::procfs::parse_proc_cgroups;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/proc/cgroups");
    let Ok(rows) = parse_proc_cgroups(path, &text) else { return };
    assert_eq!(rows.len(), text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).count());
    let again: String = rows.iter().map(|r| format!("{}\t{}\t{}\t{}\n", r.subsys, r.hierarchy, r.num_cgroups, u8::from(r.enabled))).collect();
    let back = parse_proc_cgroups(path, &format!("#subsys_name\thierarchy\tnum_cgroups\tenabled\n{again}")).expect("its own rows parse");
    assert_eq!(back.len(), rows.len());
    for (a, b) in rows.iter().zip(&back) {
        assert_eq!((&a.subsys, a.hierarchy, a.num_cgroups, a.enabled), (&b.subsys, b.hierarchy, b.num_cgroups, b.enabled));
    }
});

//! Every fixture builds, writes FIXTURE.txt, and adds up to what its truth says
//! (checked here with plain file reads, independently of cgleak).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cgleak_fixtures::write::count_dirs;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn proc_cgroups_memory(root: &Path) -> (u32, u64) {
    let text = read(&root.join("proc/cgroups"));
    let f: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("memory\t"))
        .expect("memory row")
        .split('\t')
        .collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

fn root_stat(root: &Path) -> Vec<(String, u64)> {
    read(&root.join("sys/fs/cgroup/cgroup.stat"))
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn every_fixture_is_consistent() {
    for (name, build) in cgleak_fixtures::all() {
        let f = build();
        assert_eq!(f.name, name);
        let root = f.root();
        let t = &f.truth;
        let text = read(&root.join("FIXTURE.txt"));
        assert!(
            text.contains(t.release) && text.contains("docs/kernel-facts.md"),
            "{name}: FIXTURE.txt names the kernel and the facts"
        );
        assert_eq!(
            read(&root.join("proc/sys/kernel/osrelease")).trim(),
            t.release
        );
        let mem = root.join(t.memory_root.trim_start_matches('/'));
        // ext4 keeps nlink = 2 + subdirectories, which cgleak counts by.
        let subdirs = fs::read_dir(&mem)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .count() as u64;
        assert_eq!(
            fs::metadata(&mem).unwrap().nlink(),
            2 + subdirs,
            "{name}: link count of {}",
            mem.display()
        );
        let (hier, num) = proc_cgroups_memory(root);
        let dirs = count_dirs(&mem);
        if t.memory_root == "/sys/fs/cgroup/memory" {
            assert!(hier > 0, "{name}: v1 memory row has a hierarchy");
            assert_eq!(
                t.live_memcgs, dirs,
                "{name}: v1 live memcgs are the directories"
            );
            assert_eq!(
                num,
                dirs + t.dying.unwrap_or(0),
                "{name}: /proc/cgroups memory num_cgroups"
            );
        } else {
            assert_eq!(hier, 0, "{name}: v2 rows are on hierarchy 0");
            let stat = root_stat(root);
            let get = |k: &str| stat.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            assert_eq!(get("nr_descendants"), Some(dirs - 1), "{name}");
            assert_eq!(get("nr_dying_descendants"), t.dying, "{name}");
            assert_eq!(
                num,
                dirs + t.dying.unwrap(),
                "{name}: /proc/cgroups counts every v2 cgroup, dying included"
            );
            if t.release.starts_with("6.12") {
                assert_eq!(get("nr_subsys_memory"), Some(t.live_memcgs), "{name}");
                assert_eq!(get("nr_dying_subsys_memory"), t.dying, "{name}");
                assert_eq!(
                    get("nr_subsys_perf_event"),
                    Some(dirs),
                    "{name}: perf_event is implicit everywhere"
                );
                let keys: Vec<&str> = stat.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(keys[0], "nr_descendants");
                assert_eq!(
                    keys[10], "nr_dying_descendants",
                    "{name}: subsys keys between the two, kernel order"
                );
            } else {
                assert!(
                    get("nr_subsys_memory").is_none(),
                    "{name}: no nr_subsys keys before 6.12"
                );
                assert!(t.live_memcgs < dirs, "{name}: some cgroups are not memcgs");
            }
        }
        let kubelet = ["usr/bin/kubelet", "usr/local/bin/kubelet"]
            .iter()
            .map(|b| root.join(b))
            .find(|p| p.exists())
            .expect("a kubelet");
        assert_eq!(
            fs::metadata(&kubelet).unwrap().mode() & 0o777,
            0o755,
            "{name}: {}",
            kubelet.display()
        );
        for uid in &t.orphan_uids {
            assert!(
                !root.join("var/lib/kubelet/pods").join(uid).exists(),
                "{name}: orphan {uid} has no kubelet dir"
            );
        }
        assert!(
            root.join("proc/self/mountinfo").is_file()
                && root.join("proc/cmdline").is_file()
                && root.join("proc/meminfo").is_file()
        );
        eprintln!("{name}: {t:?}");
    }
}

#[test]
fn three_ten_slab_names_carry_ids_and_several_ids_per_name() {
    let f = cgleak_fixtures::centos7_957_kmem();
    let slab = f.path("/sys/kernel/slab");
    let names: Vec<String> = fs::read_dir(&slab)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let memcg: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(')') && n.contains('('))
        .collect();
    assert!(memcg.len() > 20, "{memcg:?}");
    // symlinks and directories both
    assert!(memcg.iter().any(|n| fs::symlink_metadata(slab.join(n))
        .unwrap()
        .file_type()
        .is_symlink()));
    assert!(memcg.iter().any(|n| fs::symlink_metadata(slab.join(n))
        .unwrap()
        .file_type()
        .is_dir()));
    assert!(f.truth.kmem_active.unwrap() > 20);
    assert!(!read(&f.path("/proc/cmdline")).contains("nokmem"));
}

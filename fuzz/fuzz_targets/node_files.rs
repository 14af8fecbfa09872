//! Arbitrary bytes as the small host texts `check` reads its node facts from: the components'
//! `--version` output (cgleak_readers::versions), the kernel command line (procfs::cmdline_has),
//! BLS entries and grub.cfg (bootloader::bls_options, grub_cfg_kernel_lines) and kernel
//! releases (bootloader::release_order). Never a panic; a version found is read again the
//! same from its own text and orders consistently; what is found is in the text.
#![no_main]

use std::cmp::Ordering;

use cgleak_readers::bootloader::{bls_options, grub_cfg_kernel_lines, release_order};
use cgleak_readers::procfs::cmdline_has;
use cgleak_readers::versions::{parse_version_output, Component, Version};
use libfuzzer_sys::fuzz_target;

const COMPONENTS: [Component; 6] = [Component::Kubelet, Component::Runc, Component::Crun, Component::Containerd, Component::Docker, Component::Crio];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for c in COMPONENTS {
        if let Some(v) = parse_version_output(c, &text) {
            assert!(text.contains(&v), "{c:?}: {v:?}");
            assert!(Version::parse(&v).is_some(), "{c:?}: {v:?} is not a version");
        }
    }
    let lines: Vec<&str> = text.lines().take(64).collect();
    let versions: Vec<Version> = lines.iter().filter_map(|l| Version::parse(l)).collect();
    for v in &versions {
        assert_eq!(Version::parse(&v.to_string()).as_ref(), Some(v), "{v}");
    }
    for a in versions.iter().take(8) {
        for b in versions.iter().take(8) {
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
        }
    }
    for a in lines.iter().take(8) {
        assert_eq!(release_order(a, a), Ordering::Equal);
        for b in lines.iter().take(8) {
            assert_eq!(release_order(a, b), release_order(b, a).reverse(), "{a:?} {b:?}");
        }
    }
    for w in text.split_whitespace().take(16) {
        if cmdline_has(&text, w) {
            assert!(text.contains(w));
        }
    }
    if let Some(o) = bls_options(&text) {
        assert!(text.contains(o));
    }
    for l in grub_cfg_kernel_lines(&text) {
        assert!(text.contains(l));
    }
});

//! Arbitrary bytes as the kernel's BTF (`/sys/kernel/btf/vmlinux`), cut down to what the BPF
//! memcg walk's relocations look at (cgleak_bpf::minbtf::minimize, with the embedded
//! object's own roots, once through pointers and once not): never a panic; an answer keeps
//! no more types than the input had; the minimal BTF it writes parses again (ours and aya's
//! parser) and minimizes to itself.
#![no_main]

use std::sync::OnceLock;

use cgleak_bpf::loader::OBJECT;
use cgleak_bpf::minbtf::{self, Needs};
use libfuzzer_sys::fuzz_target;

fn needs() -> &'static [Needs; 2] {
    static NEEDS: OnceLock<[Needs; 2]> = OnceLock::new();
    NEEDS.get_or_init(|| {
        let plain = minbtf::object_needs(OBJECT).expect("the embedded object's relocations read");
        let mut through = plain.clone();
        through.roots.iter_mut().for_each(|r| r.through_pointers = true);
        [plain, through]
    })
}

fuzz_target!(|data: &[u8]| {
    for needs in needs() {
        let Ok(min) = minbtf::minimize(data, needs, "bpf_iter_cgroup", &["bpf_loop"]) else { continue };
        assert!(min.kept_types <= min.total_types);
        assert!(min.attach_id.is_none_or(|id| id >= 1 && id <= min.total_types));
        let again = minbtf::minimize(&min.blob, needs, "bpf_iter_cgroup", &[]).expect("the minimal BTF is well-formed");
        assert_eq!(again.blob, min.blob, "minimizing twice changes nothing");
        aya::Btf::parse(&min.blob, aya::Endianness::default()).expect("aya reads the minimal BTF");
    }
});
